// Command controlplane runs a real Kubernetes control plane for the operator's tests and demo:
// an embedded etcd, kube-apiserver (RBAC on, client-certificate authentication) and a
// kube-controller-manager restricted to the controllers a namespaced operator relies on
// (garbage collection of owned objects, namespace deletion, ServiceAccounts).
//
// It is one multi-call binary so that the first run pays for a single build:
//
//	controlplane serve --dir DIR      start everything, write DIR/state.json, run until signalled
//	controlplane kubectl ARGS...      kubectl, built from the same release
//	controlplane controller-manager   used internally by serve
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanagerapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: controlplane serve|kubectl|controller-manager ...")
		os.Exit(2)
	}
	sub := os.Args[1]
	switch sub {
	case "serve":
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "controlplane:", err)
			os.Exit(1)
		}
	case "kubectl":
		os.Args = append([]string{"kubectl"}, os.Args[2:]...)
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
		command := kubectlcmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
	case "controller-manager":
		// Dies with its parent, so a killed serve never leaves it behind.
		_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0)
		command := controllermanagerapp.NewControllerManagerCommand()
		command.SetArgs(os.Args[2:])
		os.Exit(cli.Run(command))
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown subcommand %q\n", sub)
		os.Exit(2)
	}
}

type state struct {
	Server        string `json:"server"`
	Kubeconfig    string `json:"kubeconfig"`
	CAFile        string `json:"caFile"`
	ClientCert    string `json:"clientCertFile"`
	ClientKey     string `json:"clientKeyFile"`
	GitVersion    string `json:"gitVersion"`
	PID           int    `json:"pid"`
	ReadySeconds  string `json:"readySeconds"`
	EtcdEndpoints string `json:"etcdEndpoint"`
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for certificates, etcd data, kubeconfig and state.json (required)")
	withControllers := fs.Bool("controllers", true, "also run kube-controller-manager (garbage collector, namespace, serviceaccount controllers)")
	exitOnStdinEOF := fs.Bool("exit-on-stdin-eof", false, "shut down when standard input closes (the parent died or let go)")
	// Extra kube-apiserver flags (the tests' audit log), so that such options need no rebuild.
	var apiserverArgs []string
	fs.Func("apiserver-arg", "an extra kube-apiserver flag, e.g. --apiserver-arg=--audit-log-path=FILE (repeatable)", func(arg string) error {
		apiserverArgs = append(apiserverArgs, arg)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	started := time.Now()
	// A harness killed with SIGKILL cannot clean up; the kernel tells us instead.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0)

	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	pki, err := writePKI(*dir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcdClientPort, err := freePort()
	if err != nil {
		return err
	}
	etcdPeerPort, err := freePort()
	if err != nil {
		return err
	}
	etcd, err := startEtcd(filepath.Join(*dir, "etcd"), etcdClientPort, etcdPeerPort)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort)

	apiPort, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	apiserver := apiserverapp.NewAPIServerCommand() // owns SIGTERM/SIGINT from here on
	apiserver.SetArgs(append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--endpoint-reconciler-type=none",
		"--v=0",
	}, apiserverArgs...))
	apiserverDone := make(chan error, 1)
	go func() { apiserverDone <- apiserver.Execute() }()

	kubeconfig := filepath.Join(*dir, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, pki); err != nil {
		return err
	}
	version, err := waitReady(server, pki, apiserverDone)
	if err != nil {
		return err
	}

	var controllerManager *exec.Cmd
	if *withControllers {
		controllerManager, err = startControllerManager(*dir, kubeconfig, pki)
		if err != nil {
			return fmt.Errorf("controller-manager: %w", err)
		}
	}

	// The API server's graceful shutdown waits for open requests, and the controller-manager holds
	// watches open until it is told to stop: stop it as soon as a shutdown signal arrives.
	if controllerManager != nil {
		stopSignals := make(chan os.Signal, 1)
		signal.Notify(stopSignals, syscall.SIGTERM, syscall.SIGINT)
		go func() {
			<-stopSignals
			_ = controllerManager.Process.Signal(syscall.SIGTERM)
		}()
	}

	st := state{
		Server: server, Kubeconfig: kubeconfig, CAFile: pki.caCert, ClientCert: pki.adminCert, ClientKey: pki.adminKey,
		GitVersion: version, PID: os.Getpid(), ReadySeconds: fmt.Sprintf("%.1f", time.Since(started).Seconds()), EtcdEndpoints: etcdURL,
	}
	if err := writeJSONAtomically(filepath.Join(*dir, "state.json"), st); err != nil {
		return err
	}
	fmt.Printf("controlplane ready: kube-apiserver %s at %s in %ss\n", version, server, st.ReadySeconds)

	if *exitOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}()
	}

	err = <-apiserverDone
	if controllerManager != nil && controllerManager.Process != nil {
		_ = controllerManager.Process.Signal(syscall.SIGTERM)
		waited := make(chan struct{})
		go func() { _ = controllerManager.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			_ = controllerManager.Process.Kill()
		}
	}
	return err
}

func startControllerManager(dir, kubeconfig string, pki *pkiFiles) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "controller-manager.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "controller-manager",
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+pki.saKey,
		"--root-ca-file="+pki.caCert,
		"--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller",
		"--v=0",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = dataDir
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	// Test data is thrown away after each run; durability buys nothing here.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("etcd did not become ready within 60s")
	}
}

func waitReady(server string, pki *pkiFiles, apiserverDone <-chan error) (string, error) {
	client, err := adminHTTPClient(pki)
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-apiserverDone:
			return "", fmt.Errorf("kube-apiserver exited before it was ready: %v", err)
		default:
		}
		resp, err := client.Get(server + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return serverVersion(client, server)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", errors.New("kube-apiserver not ready within 120s")
}

func serverVersion(client *http.Client, server string) (string, error) {
	resp, err := client.Get(server + "/version")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.GitVersion, nil
}

func adminHTTPClient(pki *pkiFiles) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(pki.adminCert, pki.adminKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(pki.caCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

var pickedPorts = map[int]bool{}

// freePort picks a free port below Linux's ephemeral range (32768-60999). etcd and the API server bind
// it a moment later, and a port the kernel hands out for ":0" could meanwhile go to an outgoing
// connection of a test running beside us; nothing takes a port below the range unless asked for it.
func freePort() (int, error) {
	const low, high = 20000, 32000
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(high-low))
		if err != nil {
			return 0, err
		}
		port := low + int(n.Int64())
		// etcd's two ports and the API server's are picked before any is bound: never one twice.
		if pickedPorts[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		pickedPorts[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port between %d and %d after 100 tries", low, high)
}

type pkiFiles struct {
	caCert, servingCert, servingKey, adminCert, adminKey, saKey string
}

func writePKI(dir string) (*pkiFiles, error) {
	p := &pkiFiles{
		caCert:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		adminCert:   filepath.Join(dir, "admin.crt"),
		adminKey:    filepath.Join(dir, "admin.key"),
		saKey:       filepath.Join(dir, "sa.key"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "oauth-token-operator-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.caCert, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	issue := func(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, certPath, keyPath string, ips []net.IP, dns []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      subject,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(7 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyPath, "EC PRIVATE KEY", keyDER)
	}
	if err := issue(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth, p.servingCert, p.servingKey,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}, []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}); err != nil {
		return nil, err
	}
	// system:masters is bound to cluster-admin by the bootstrap RBAC policy.
	if err := issue(3, pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, x509.ExtKeyUsageClientAuth, p.adminCert, p.adminKey, nil, nil); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.saKey, "EC PRIVATE KEY", saDER); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, blockType string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600)
}

func writeKubeconfig(path, server string, pki *pkiFiles) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		return encodeBase64(b), nil
	}
	ca, err := read(pki.caCert)
	if err != nil {
		return err
	}
	cert, err := read(pki.adminCert)
	if err != nil {
		return err
	}
	key, err := read(pki.adminKey)
	if err != nil {
		return err
	}
	kubeconfig := strings.Join([]string{
		"apiVersion: v1",
		"kind: Config",
		"clusters:",
		"- name: controlplane",
		"  cluster:",
		"    server: " + server,
		"    certificate-authority-data: " + ca,
		"users:",
		"- name: admin",
		"  user:",
		"    client-certificate-data: " + cert,
		"    client-key-data: " + key,
		"contexts:",
		"- name: admin@controlplane",
		"  context:",
		"    cluster: controlplane",
		"    user: admin",
		"current-context: admin@controlplane",
		"",
	}, "\n")
	return os.WriteFile(path, []byte(kubeconfig), 0o600)
}

func writeJSONAtomically(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func encodeBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
