// Starts the real control plane (etcd + kube-apiserver + a slim kube-controller-manager) built from
// the Kubernetes Go modules in test/controlplane, or points at an existing cluster when the
// environment names one. The build is cached outside git, keyed by its inputs, so only the first run
// pays for it.
import { spawn, execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  rmdirSync,
  closeSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const execFileAsync = promisify(execFile);

export const controlPlaneSourceDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'controlplane');

export interface ControlPlane {
  /** Path of an admin kubeconfig. */
  kubeconfig: string;
  /** API server URL. */
  server: string;
  /** Version reported by the server's /version endpoint. */
  gitVersion: string;
  /** The multi-call helper binary: `${binary} kubectl ...` runs kubectl from the same release. */
  binary: string;
  /** True when the harness started the control plane itself (false for an existing cluster). */
  local: boolean;
  /** Directory holding certificates, logs and etcd data of a local control plane. */
  dir?: string;
  stop(): Promise<void>;
}

function cacheRoot(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'oauth-token-operator', 'controlplane');
}

/** The Kubernetes release pinned in test/controlplane/go.mod. */
export function kubernetesRelease(): string {
  const goMod = readFileSync(join(controlPlaneSourceDir, 'go.mod'), 'utf8');
  const match = /^\s*k8s\.io\/kubernetes (v\d+\.\d+\.\d+)\s*$/m.exec(goMod);
  if (!match?.[1]) throw new Error('test/controlplane/go.mod does not pin k8s.io/kubernetes');
  return match[1];
}

/** Stamps the release into the binaries as the Kubernetes build does, so /version tells the truth. */
function versionLdflags(): string {
  const release = kubernetesRelease();
  const [major, minor] = release.slice(1).split('.');
  const stamp = (pkg: string): string[] => [
    `-X ${pkg}.gitVersion=${release}`,
    `-X ${pkg}.gitMajor=${major ?? ''}`,
    `-X ${pkg}.gitMinor=${minor ?? ''}`,
    `-X ${pkg}.gitTreeState=clean`,
  ];
  return [
    '-s',
    '-w',
    ...stamp('k8s.io/component-base/version'),
    ...stamp('k8s.io/client-go/pkg/version'),
  ].join(' ');
}

async function buildKey(): Promise<string> {
  const hash = createHash('sha256');
  hash.update(versionLdflags());
  for (const file of ['go.mod', 'go.sum', 'main.go']) {
    hash.update(file).update(readFileSync(join(controlPlaneSourceDir, file)));
  }
  const { stdout } = await execFileAsync('go', ['version'], { cwd: controlPlaneSourceDir });
  hash.update(stdout);
  return hash.digest('hex').slice(0, 16);
}

function log(line: string): void {
  process.stderr.write(`[controlplane] ${line}\n`);
}

/** Returns the helper binary, building it only when no cached build matches the sources. */
export async function ensureControlPlaneBinary(): Promise<string> {
  const key = await buildKey();
  const dir = join(cacheRoot(), key);
  const binary = join(dir, 'controlplane');
  if (existsSync(binary)) {
    log(`reusing cached control-plane build ${key} (${binary})`);
    return binary;
  }
  mkdirSync(cacheRoot(), { recursive: true });
  // mkdir is atomic: it is the lock that keeps a demo and a test run from building at once.
  const lock = join(cacheRoot(), `${key}.lock`);
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (existsSync(binary)) return binary;
      if (Date.now() > deadline) throw new Error(`timed out waiting for the build lock ${lock}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    if (existsSync(binary)) return binary;
    log(
      `no cached build for ${key}: building kube-apiserver, etcd, kube-controller-manager and kubectl from the Go modules (several minutes, once)`,
    );
    const started = Date.now();
    mkdirSync(dir, { recursive: true });
    const partial = `${binary}.partial`;
    await new Promise<void>((resolvePromise, reject) => {
      const child = spawn('go', ['build', '-trimpath', `-ldflags=${versionLdflags()}`, '-o', partial, '.'], {
        cwd: controlPlaneSourceDir,
        stdio: ['ignore', 'inherit', 'inherit'],
        env: { ...process.env, GOFLAGS: '-mod=mod' },
      });
      child.on('error', reject);
      child.on('exit', (code) => {
        if (code === 0) resolvePromise();
        else reject(new Error(`go build of the control plane failed with exit code ${String(code)}`));
      });
    });
    renameSync(partial, binary);
    log(`built ${key} in ${((Date.now() - started) / 1000).toFixed(0)}s`);
    return binary;
  } finally {
    rmdirSync(lock);
  }
}

// The local API server writes an audit log of what ServiceAccounts do (the operators the tests run
// authenticate as one), so that test/integration/rbac-audit.test.ts can compare the operator's
// requests with the RBAC the chart grants. Metadata level: verb, resource, namespace, user and
// response code, never a request or response body, so no Secret value reaches the log. Other users
// (the tests' admin, the controller-manager) are not logged. Blocking mode (the default of the log
// backend) writes an event before the request's response is complete.
const AUDIT_POLICY = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: [system:serviceaccounts]
  - level: None
`;
const AUDIT_DIR = 'audit';
const AUDIT_LOG = 'audit.log';

function auditArgs(dir: string): string[] {
  const auditDir = join(dir, AUDIT_DIR);
  mkdirSync(auditDir, { recursive: true });
  const policy = join(dir, 'audit-policy.yaml');
  writeFileSync(policy, AUDIT_POLICY);
  // Rotated files (audit-<time>.log) stay in the same folder and are read too; the bound keeps a
  // long benchmark from filling the disk.
  return [
    `--audit-policy-file=${policy}`,
    `--audit-log-path=${join(auditDir, AUDIT_LOG)}`,
    '--audit-log-maxsize=100',
    '--audit-log-maxbackup=4',
  ].map((arg) => `--apiserver-arg=${arg}`);
}

/**
 * The audit log files of the local control plane whose admin kubeconfig is `kubeconfig` (the log
 * lives beside it), oldest first; undefined for an existing cluster, whose audit log the tests
 * cannot read.
 */
export function localAuditLogFiles(kubeconfig: string): string[] | undefined {
  const auditDir = join(dirname(kubeconfig), AUDIT_DIR);
  if (!existsSync(auditDir)) return undefined;
  // Rotated files are named audit-<UTC time>.log, which sorts by age; the live file comes last.
  const rotated = readdirSync(auditDir)
    .filter((f) => f !== AUDIT_LOG && f.endsWith('.log'))
    .sort();
  return [...rotated, AUDIT_LOG].map((f) => join(auditDir, f)).filter((f) => existsSync(f));
}

/** A kubeconfig naming an existing cluster, when the environment asks for one. */
export function existingClusterKubeconfig(): string | undefined {
  if (process.env.OTO_LOCAL_CONTROLPLANE === '1') return undefined;
  return process.env.OTO_TEST_KUBECONFIG ?? process.env.KUBECONFIG;
}

async function serverVersion(
  binary: string,
  kubeconfig: string,
): Promise<{ server: string; gitVersion: string }> {
  const { stdout } = await execFileAsync(binary, [
    'kubectl',
    '--kubeconfig',
    kubeconfig,
    'version',
    '-o',
    'json',
  ]);
  const parsed = JSON.parse(stdout) as { serverVersion?: { gitVersion?: string } };
  const { stdout: server } = await execFileAsync(binary, [
    'kubectl',
    '--kubeconfig',
    kubeconfig,
    'config',
    'view',
    '--minify',
    '-o',
    'jsonpath={.clusters[0].cluster.server}',
  ]);
  return { server, gitVersion: parsed.serverVersion?.gitVersion ?? 'unknown' };
}

export async function startControlPlane(options: { useExisting?: boolean } = {}): Promise<ControlPlane> {
  const binary = await ensureControlPlaneBinary();
  const existing = options.useExisting === false ? undefined : existingClusterKubeconfig();
  if (existing) {
    const { server, gitVersion } = await serverVersion(binary, existing);
    log(`using the existing cluster at ${server} (${gitVersion}) named by KUBECONFIG`);
    return { kubeconfig: existing, server, gitVersion, binary, local: false, stop: () => Promise.resolve() };
  }

  const dir = mkdtempSync(join(tmpdir(), 'oto-controlplane-'));
  const logPath = join(dir, 'controlplane.log');
  const logFd = openSync(logPath, 'a');
  const started = Date.now();
  // stdin stays a pipe that only this process holds: if we die, the helper sees EOF and shuts down.
  const child = spawn(binary, ['serve', '--dir', dir, '--exit-on-stdin-eof', ...auditArgs(dir)], {
    stdio: ['pipe', logFd, logFd],
    detached: false,
  });
  closeSync(logFd);
  const exited = new Promise<number | null>((resolveExit) => {
    child.on('exit', resolveExit);
  });
  const statePath = join(dir, 'state.json');
  let exitCode: number | null | undefined;
  void exited.then((code) => {
    exitCode = code;
  });
  const deadline = Date.now() + 180_000;
  while (!existsSync(statePath)) {
    if (exitCode !== undefined) {
      throw new Error(
        `control plane exited with ${String(exitCode)} before it was ready; see ${logPath}:\n${tail(logPath)}`,
      );
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`control plane not ready within 180s; see ${logPath}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as {
    server: string;
    kubeconfig: string;
    gitVersion: string;
  };
  log(
    `kube-apiserver ${state.gitVersion} with etcd ready at ${state.server} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (exitCode === undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
      if (process.env.OTO_KEEP_CONTROLPLANE_DIR !== '1') rmSync(dir, { recursive: true, force: true });
    })();
    return stopped;
  };
  return {
    kubeconfig: state.kubeconfig,
    server: state.server,
    gitVersion: state.gitVersion,
    binary,
    local: true,
    dir,
    stop,
  };
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '';
  }
}
