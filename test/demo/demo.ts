// `npm run demo`: the operator's main job, live, on a machine without a cluster.
//
// Starts a real kube-apiserver + etcd (test/harness/controlplane.ts), a real OpenID provider that
// rotates refresh tokens and revokes the whole family when a rotated token is presented again
// (test/harness/oidc/server.ts), one OAuthConnection, and two operator replicas as child processes
// that campaign for one Lease, set up as the integration tests are (test/harness/scenario.ts). It
// then prints one row per rotation until Ctrl-C.
//
// Environment:
//   DEMO_DURATION_SECONDS=N   once set up, run for N seconds, then clean up and exit 0
//   DEMO_KILL_LEADER_EVERY=N  SIGKILL the leading replica every N seconds (it is restarted once the
//                             other replica has taken over), to show failover
//
// Secrets never reach the terminal: access tokens appear only as the first 8 hex digits of their
// SHA-256.
import * as k8s from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  condition,
  getConnectionStatus,
  readSecretData,
  type ConnectionStatus,
} from '../harness/builders.ts';
import { startControlPlane, type ControlPlane } from '../harness/controlplane.ts';
import { isApiError } from '../harness/kube.ts';
import type { TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

const CONNECTION = 'books';
const OUTPUT_SECRET = `${CONNECTION}-token`;
const LEASE_NAME = 'oauth-token-operator';
const IDENTITIES = ['replica-1', 'replica-2'];
const OPERATOR_ARGS = [
  '--secret-propagation',
  '5s',
  '--log-level',
  'info',
  '--lease-duration',
  '6s',
  '--renew-deadline',
  '4s',
  '--retry-period',
  '1s',
];
const ACCESS_TOKEN_TTL_SEC = 20;
const POLL_MS = 500;
/** A replica that died is restarted once another one holds the Lease, or after this long anyway. */
const RESTART_AFTER_MS = 15_000;
/** How long stopping replicas may take before they are killed. */
const STOP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------------
// Output that survives a closed stdout (`npm run demo | head`).

let stdoutOpen = true;

function say(line = ''): void {
  if (!stdoutOpen) return;
  try {
    process.stdout.write(`${line}\n`);
  } catch {
    stdoutOpen = false;
  }
}

function event(text: string): void {
  say(`${clock(Date.now())}  » ${text}`);
}

function clock(ms: number): string {
  return new Date(ms).toTimeString().slice(0, 8);
}

function fingerprint(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 8);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function positiveSeconds(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`demo: ${name} must be a positive number of seconds, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------
// What is running, so that cleanup can stop whatever has started so far.

interface Replica {
  identity: string;
  process: OperatorProcess;
  /** Date.now() when the current process was seen to exit unexpectedly; undefined while it runs. */
  downSince?: number;
}

const running: {
  controlPlane?: ControlPlane;
  scenario?: Scenario;
  oidc?: TestOidcServer;
  /** Where the connection and its Secrets are. */
  namespace?: string;
  env?: OperatorEnvironment;
  replicas: Replica[];
  log?: WriteStream;
  logPath?: string;
} = { replicas: [] };

let stopping = false;
let stoppingSince = 0;
/** Rows printed, for the summary at the end. */
let rotationsSeen = 0;

/** Read through a call: a signal can set the flag during any await, which narrowing cannot see. */
function isStopping(): boolean {
  return stopping;
}

function alive(replica: Replica): boolean {
  const { child } = replica.process;
  return child.exitCode === null && child.signalCode === null;
}

function pid(replica: Replica): string {
  return String(replica.process.child.pid ?? '?');
}

function writeLogLine(line: string, identity: string): void {
  // Keep every line JSON: tag it with the replica it came from.
  const tagged = line.startsWith('{')
    ? `{"replica":${JSON.stringify(identity)},${line.slice(1)}`
    : JSON.stringify({ replica: identity, line });
  running.log?.write(`${tagged}\n`);
}

function launch(identity: string): Replica {
  const { scenario, env } = running;
  if (!scenario || !env) throw new Error('operator environment not set up');
  const replica: Replica = {
    identity,
    process: scenario.startOperator({ env, identity, args: OPERATOR_ARGS, onLine: writeLogLine }),
  };
  const proc = replica.process;
  void proc.exited.then(() => {
    if (stopping || replica.process !== proc) return;
    const how = proc.child.signalCode ?? `exit code ${String(proc.child.exitCode)}`;
    replica.downSince = Date.now();
    event(`${identity} (pid ${pid(replica)}) died (${how}); restarting it once it no longer holds the Lease`);
  });
  return replica;
}

/** Restarts dead replicas the way a Deployment would, but only after the Lease moved on. */
function superviseReplicas(holder: string | undefined): void {
  for (const replica of running.replicas) {
    if (replica.downSince === undefined || stopping) continue;
    const waited = Date.now() - replica.downSince;
    // Same identity, same holder: restarted too early it would simply pick its old Lease back up.
    if (holder === replica.identity && waited < RESTART_AFTER_MS) continue;
    const next = launch(replica.identity);
    replica.process = next.process;
    delete replica.downSince;
    event(`restarted ${replica.identity} as pid ${pid(replica)}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Cleanup.

let cleanup: Promise<void> | undefined;

async function stopReplica(replica: Replica): Promise<void> {
  if (!alive(replica)) return;
  const timer = setTimeout(() => {
    replica.process.child.kill('SIGKILL');
  }, STOP_TIMEOUT_MS);
  await replica.process.kill('SIGTERM');
  clearTimeout(timer);
}

function shutdown(reason: string, code = 0): Promise<void> {
  cleanup ??= (async () => {
    stopping = true;
    stoppingSince = Date.now();
    say();
    event(`${reason}: cleaning up`);
    if (running.oidc) {
      event(
        `summary: ${rotationsSeen} new access token(s) seen, provider reuse count ${running.oidc.reuseCount()}`,
      );
    }
    try {
      await Promise.all(running.replicas.map(stopReplica));
      if (running.replicas.length > 0) event('operators stopped');
      await running.scenario?.close();
      if (running.controlPlane) {
        event('stopping the control plane ...');
        await running.controlPlane.stop();
        event('control plane stopped');
      }
      if (running.env) rmSync(dirname(running.env.kubeconfigPath), { recursive: true, force: true });
      const log = running.log;
      if (log) await new Promise<void>((resolve) => log.end(resolve));
      say('cleaned up' + (running.logPath ? ` (operator logs kept in ${running.logPath})` : ''));
    } catch (err) {
      process.stderr.write(`demo: cleanup failed: ${errorText(err)}\n`);
      code = code || 1;
    }
    process.exit(code);
  })();
  return cleanup;
}

function forceExit(): never {
  for (const replica of running.replicas) {
    if (alive(replica)) replica.process.child.kill('SIGKILL');
  }
  // The control-plane helper exits by itself when its stdin (held by this process) closes.
  process.exit(130);
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    // npm forwards the terminal's Ctrl-C as well, so a second signal right away is the same request;
    // one that comes later means "stop now".
    if (stopping && Date.now() - stoppingSince > 2000) forceExit();
    void shutdown(`received ${signal}`);
  });
}
// `kill <npm's pid>`: npm passes the signal to the `sh -c` it runs scripts in, which dies without
// passing it on. Being reparented is how this process learns that, like the control-plane helper.
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) void shutdown('parent process exited');
}, 1000).unref();
process.stdout.on('error', () => {
  stdoutOpen = false;
  void shutdown('stdout closed');
});
process.stderr.on('error', () => {
  // Nothing left to tell anyone.
});
// Fatal while setting up. Once everything runs, an error thrown from some event handler (say, the
// harness failing to mirror a log line) must not take the demo down: report it once and go on.
let setUp = false;
const reported = new Set<string>();
function unexpected(err: unknown): void {
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  if (!setUp) {
    process.stderr.write(`demo: ${text}\n`);
    void shutdown('unexpected error', 1);
    return;
  }
  const key = errorText(err);
  if (reported.has(key)) return;
  reported.add(key);
  process.stderr.write(`demo: ignoring an unexpected error (reported once): ${text}\n`);
}
process.on('uncaughtException', unexpected);
process.on('unhandledRejection', unexpected);

// ---------------------------------------------------------------------------------------------------
// Setup.

async function setup(): Promise<{ admin: k8s.KubeConfig; oidc: TestOidcServer }> {
  say('oauth-token-operator demo: one writer per rotating refresh-token chain');
  say();
  say('starting a local control plane (kube-apiserver + etcd) ...');
  const controlPlane = await startControlPlane({ useExisting: false });
  running.controlPlane = controlPlane;
  say(`  kube-apiserver ${controlPlane.gitVersion} at ${controlPlane.server}`);

  const scenario = await Scenario.open(controlPlane.kubeconfig);
  running.scenario = scenario;
  const admin = scenario.admin;
  const oidc = await scenario.startProvider({ accessTokenTtlSec: ACCESS_TOKEN_TTL_SEC, graceWindowSec: 0 });
  running.oidc = oidc;
  say(`  OpenID provider at ${oidc.issuer} (access tokens live ${ACCESS_TOKEN_TTL_SEC}s;`);
  say('  refresh tokens rotate on every use, and presenting a used one revokes the whole family)');
  if (isStopping()) return { admin, oidc };

  const namespace = await scenario.clientNamespace('demo', clientSecretOf(oidc));
  running.namespace = namespace;
  await scenario.seededConnection(oidc, namespace, CONNECTION);
  say(`  OAuthConnection ${namespace}/${CONNECTION} -> Secret ${namespace}/${OUTPUT_SECRET}`);

  const env = await scenario.operatorEnvironment();
  running.env = env;
  const logDir = mkdtempSync(join(tmpdir(), 'oto-demo-'));
  running.logPath = join(logDir, 'operators.log');
  running.log = createWriteStream(running.logPath, { flags: 'a' });
  if (isStopping()) return { admin, oidc };
  for (const identity of IDENTITIES) running.replicas.push(launch(identity));
  say(
    `  operator replicas (namespace ${env.namespace}): ` +
      running.replicas.map((r) => `${r.identity} pid ${pid(r)}`).join(', '),
  );
  say(`  operator logs (JSON lines): ${running.logPath}`);
  say();
  say(`Both replicas campaign for the Lease ${env.namespace}/${LEASE_NAME}; only the leader`);
  say('refreshes. Each refresh presents the current refresh token exactly once, keeps its successor');
  say(`and writes the new access token to Secret ${namespace}/${OUTPUT_SECRET} well before the old one`);
  say('expires. One row per rotation:');
  say('  LEADER      holder of the Lease when the new token appeared');
  say('  GEN / ROT   chain generation and rotation count from the OAuthConnection status');
  say('  EXPIRES     expiry of the new access token;  SHA256  fingerprint of it (never the token)');
  say('  PROVIDER    whether the OpenID provider accepts it (introspection)');
  say('  REUSES      presentations of an already-rotated refresh token (must stay 0)');
  say();
  const pids = running.replicas.map(pid).join(' or ');
  say(`try: kill one replica's PID (${pids}) and watch the other take over`);
  say(
    `     inspect: ${controlPlane.binary} kubectl --kubeconfig ${controlPlane.kubeconfig} -n ${namespace} get oauthconnections,secrets`,
  );
  say('     Ctrl-C stops everything');
  return { admin, oidc };
}

// ---------------------------------------------------------------------------------------------------
// The live table.

const COLUMNS = [
  ['TIME', 8],
  ['LEADER', 20],
  ['GEN', 3],
  ['ROT', 4],
  ['EXPIRES', 18],
  ['SHA256', 8],
  ['PROVIDER', 8],
  ['REUSES', 6],
] as const;

function row(cells: readonly string[]): string {
  return COLUMNS.map(([, width], i) => (cells[i] ?? '').padEnd(width))
    .join('  ')
    .trimEnd();
}

interface LeaseView {
  holder: string | undefined;
  label: string;
}

async function readLease(coordination: k8s.CoordinationV1Api, namespace: string): Promise<LeaseView> {
  try {
    const lease = await coordination.readNamespacedLease({ name: LEASE_NAME, namespace });
    const holder = lease.spec?.holderIdentity ?? '';
    if (holder === '') return { holder: undefined, label: '(none)' };
    // Typed as a Date, but arrives as the wire's RFC 3339 string.
    const renewTime: unknown = lease.spec?.renewTime;
    const renewed =
      renewTime instanceof Date
        ? renewTime.getTime()
        : typeof renewTime === 'string'
          ? Date.parse(renewTime)
          : undefined;
    const duration = (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
    const expired = renewed !== undefined && renewed + duration < Date.now();
    return { holder, label: expired ? `${holder} (expired)` : holder };
  } catch (err) {
    if (isApiError(err, 404)) return { holder: undefined, label: '(none yet)' };
    throw err;
  }
}

/** Whether the status already reports the access token whose Secret says it expires at `expiresAt`. */
function describes(status: ConnectionStatus, expiresAt: string | undefined): boolean {
  const inSecret = Date.parse(expiresAt ?? '');
  if (Number.isNaN(inSecret)) return true;
  const inStatus = Date.parse(status.accessTokenExpiresAt ?? '');
  return !Number.isNaN(inStatus) && Math.abs(inStatus - inSecret) < 1000;
}

function expiresCell(status: ConnectionStatus, secretExpiresAt: string | undefined): string {
  const at = Date.parse(status.accessTokenExpiresAt ?? secretExpiresAt ?? '');
  if (Number.isNaN(at)) return '?';
  return `${clock(at)} (in ${Math.round((at - Date.now()) / 1000)}s)`;
}

async function watch(admin: k8s.KubeConfig, oidc: TestOidcServer, killLeaderEveryMs?: number): Promise<void> {
  const { env, namespace } = running;
  if (!env || namespace === undefined) return;
  const coordination = admin.makeApiClient(k8s.CoordinationV1Api);
  let lastToken: string | undefined;
  let lastLeader: string | undefined;
  let lastReady: string | undefined;
  let lastReuses = 0;
  let lastError: string | undefined;
  let nextKillAt = killLeaderEveryMs === undefined ? Infinity : Date.now() + killLeaderEveryMs;

  say();
  say(row(COLUMNS.map(([title]) => title)));
  while (!isStopping()) {
    try {
      const [lease, data, status] = await Promise.all([
        readLease(coordination, env.namespace),
        readSecretData(admin, namespace, OUTPUT_SECRET),
        getConnectionStatus(admin, namespace, CONNECTION),
      ]);
      lastError = undefined;
      if (isStopping()) break;

      if (lease.holder !== undefined && lease.holder !== lastLeader) {
        event(`${lease.holder} leads${lastLeader ? ` (took over from ${lastLeader})` : ''}`);
        lastLeader = lease.holder;
      }
      const ready = condition(status, 'Ready');
      const readyText = ready ? `Ready=${ready.status} ${ready.reason}` : undefined;
      if (readyText !== undefined && readyText !== lastReady) {
        if (ready?.status !== 'True' || lastReady !== undefined)
          event(`${readyText}: ${ready?.message ?? ''}`);
        lastReady = readyText;
      }

      const token = data?.access_token;
      if (token && token !== lastToken) {
        lastToken = token;
        // The Secret is written before the status: give the status a moment to describe this token.
        let rowStatus = status;
        for (let i = 0; i < 8 && !describes(rowStatus, data.expires_at) && !isStopping(); i++) {
          await sleep(250);
          rowStatus = await getConnectionStatus(admin, namespace, CONNECTION);
        }
        const accepted = await oidc.isAccessTokenActive(token).catch(() => false);
        if (isStopping()) break;
        say(
          row([
            clock(Date.now()),
            lease.label,
            String(rowStatus.chainGeneration ?? '-'),
            String(rowStatus.rotations ?? '-'),
            expiresCell(rowStatus, data.expires_at),
            fingerprint(token),
            accepted ? 'active' : 'REJECTED',
            String(oidc.reuseCount()),
          ]),
        );
        rotationsSeen++;
      }
      const reuses = oidc.reuseCount();
      if (reuses !== lastReuses) {
        event(`REUSE DETECTED: the provider saw ${reuses} presentation(s) of a rotated refresh token`);
        lastReuses = reuses;
      }

      if (Date.now() >= nextKillAt && killLeaderEveryMs !== undefined) {
        nextKillAt = Date.now() + killLeaderEveryMs;
        const leader = running.replicas.find((r) => r.identity === lease.holder && alive(r));
        if (leader) {
          event(
            `DEMO_KILL_LEADER_EVERY: SIGKILL ${leader.identity} (pid ${pid(leader)}), no chance to hand over`,
          );
          leader.process.child.kill('SIGKILL');
        }
      }
      superviseReplicas(lease.holder);
      // The harness keeps every line in memory for tests; the demo has them in the log file.
      for (const replica of running.replicas) replica.process.lines.length = 0;
    } catch (err) {
      const text = errorText(err);
      if (!isStopping() && text !== lastError) event(`could not read the cluster: ${text}`);
      lastError = text;
    }
    await sleep(POLL_MS);
  }
}

// ---------------------------------------------------------------------------------------------------

async function run(): Promise<void> {
  const durationSec = positiveSeconds('DEMO_DURATION_SECONDS');
  const killLeaderEverySec = positiveSeconds('DEMO_KILL_LEADER_EVERY');
  const { admin, oidc } = await setup();
  if (isStopping()) return;
  setUp = true;
  if (durationSec !== undefined) {
    say(`     (DEMO_DURATION_SECONDS=${durationSec}: stopping by itself after ${durationSec}s)`);
    setTimeout(() => {
      void shutdown(`${durationSec}s elapsed`);
    }, durationSec * 1000);
  }
  if (killLeaderEverySec !== undefined) {
    say(
      `     (DEMO_KILL_LEADER_EVERY=${killLeaderEverySec}: killing the leader every ${killLeaderEverySec}s)`,
    );
  }
  await watch(admin, oidc, killLeaderEverySec === undefined ? undefined : killLeaderEverySec * 1000);
}

run().catch((err: unknown) => {
  if (stopping) return;
  process.stderr.write(`demo: ${errorText(err)}\n`);
  void shutdown('setup failed', 1);
});
