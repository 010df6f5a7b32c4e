// Wiring only: flags → clients → controller, leader election, metrics and health endpoints.
import * as k8s from '@kubernetes/client-node';
import { createServer, type Server } from 'node:http';
import { ConfigError, helpText, parseConfig, type OperatorConfig } from './config.ts';
import { Controller } from './controller/controller.ts';
import { HostLimiter } from './controller/host-limiter.ts';
import { OutputSecretWriter } from './controller/output-secret.ts';
import { Reconciler } from './controller/reconciler.ts';
import { RecoveryLogin } from './controller/recovery.ts';
import { StateStore } from './controller/state-store.ts';
import { systemClock } from './kube/clock.ts';
import {
  LeaderElector,
  LeaderHealthzAdaptor,
  LeadershipLostError,
  LeaseLock,
} from './kube/leader-election.ts';
import { KubeEventRecorder } from './observability/events.ts';
import { createLogger, errorFields, type Logger } from './observability/log.ts';
import { OperatorMetrics } from './observability/metrics.ts';
import { OAuthClient } from './oauth/index.ts';
import { PRESET_TABLES } from './providers/presets.ts';

/**
 * How long past leaseDuration a leader's lease may go unrenewed before /healthz fails. A working
 * leader is never that late (it gives up after renewDeadline < leaseDuration), so only a stuck one
 * is restarted; the margin absorbs event-loop stalls short of that.
 */
const HEALTHZ_LEASE_TOLERANCE_MS = 10_000;

function loadKubeConfig(config: OperatorConfig): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

function serveHealth(
  config: OperatorConfig,
  metrics: OperatorMetrics,
  ready: () => boolean,
  leaderHealth: LeaderHealthzAdaptor,
  log: Logger,
): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      metrics.registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        })
        .catch(() => {
          res.writeHead(500);
          res.end();
        });
      return;
    }
    if (path === '/healthz') {
      const problem = leaderHealth.check();
      res.writeHead(problem ? 500 : 200, { 'content-type': 'text/plain' });
      res.end(problem ? `leaderElection: ${problem.message}` : 'ok');
      return;
    }
    if (path === '/readyz') {
      const ok = ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok' : 'informers not synced');
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const [host, portText] = splitAddress(config.metricsAddress);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portText), host, () => {
      const address = server.address();
      log.info(
        { address: typeof address === 'object' && address ? `${address.address}:${address.port}` : address },
        'serving metrics and health',
      );
      resolve(server);
    });
  });
}

/**
 * Hosts the operator's own configuration names (every preset's endpoints, the exact entries of
 * --allowed-hosts): the only values the metrics' `host` label may take, so a tenant cannot create
 * series by naming hosts of its own.
 */
function configuredHosts(config: OperatorConfig): string[] {
  const urls = Object.values(PRESET_TABLES).flatMap((table) =>
    Object.values(table.regions ?? {}).flatMap((r) => [r.tokenURL, r.authorizationURL, r.revocationURL]),
  );
  const hosts = urls.flatMap((url) => (url === undefined ? [] : [new URL(url).host]));
  return [...hosts, ...config.allowedHosts.filter((pattern) => !pattern.startsWith('*'))];
}

function splitAddress(address: string): [string | undefined, string] {
  const index = address.lastIndexOf(':');
  const host = address.slice(0, index);
  return [host === '' ? undefined : host, address.slice(index + 1)];
}

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  let config: OperatorConfig;
  try {
    const parsed = parseConfig(argv, env);
    if (parsed === 'help') {
      process.stdout.write(`${helpText()}\n`);
      return 0;
    }
    config = parsed;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`oauth-token-operator: ${err.message}\n\n${helpText()}\n`);
      return 2;
    }
    throw err;
  }

  const log = createLogger(config.logLevel);
  const clock = systemClock;
  const kc = loadKubeConfig(config);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const metrics = new OperatorMetrics({ knownHosts: configuredHosts(config) });
  const controller = new Controller({
    kubeConfig: kc,
    clock,
    log,
    metrics,
    operatorNamespace: config.namespace,
    watchNamespaces: config.watchNamespaces,
    workers: config.workers,
    maxInFlightPerNamespace: config.maxInFlightPerNamespace,
    reconcileDeadlineMs: config.reconcileDeadlineMs,
  });
  const policy = {
    allowInsecureHttp: config.allowInsecureHttp,
    allowPrivateNetworks: config.allowPrivateNetworks,
    allowedHosts: config.allowedHosts,
  };
  const oauth = new OAuthClient({
    clock,
    transport: {
      policy,
      timeoutMs: config.requestTimeoutMs,
      maxResponseBytes: config.maxResponseBytes,
      onRequest: (host, status, _durationMs, purpose) => {
        // Login pages are not token endpoint calls; the login's own outcome has its metric.
        if (purpose !== 'login') metrics.countTokenEndpointRequest(host, status);
      },
    },
  });
  const recovery = new RecoveryLogin({ oauth, clock, loginDeadlineMs: config.loginDeadlineMs });
  // Assigned below; the reconciler asks it whether this replica still leads.
  // eslint-disable-next-line prefer-const
  let elector: LeaderElector | undefined;
  const reconciler = new Reconciler(
    {
      core,
      custom,
      state: new StateStore(core, config.namespace),
      output: new OutputSecretWriter(core),
      oauth,
      // A key turned away by a busy host is woken (queued) when a slot is kept for it.
      hostLimiter: new HostLimiter(config.maxConcurrentPerHost, {
        clock,
        wake: (key) => {
          controller.queue.add(key);
        },
      }),
      recovery,
      events: new KubeEventRecorder(core, 'oauth-token-operator', clock, log),
      metrics,
      log,
      clock,
      getConnection: (namespace, name) => controller.getConnection(namespace, name),
      isLeader: () => elector?.isLeader() ?? false,
    },
    {
      identity: config.identity,
      propagationMs: config.secretPropagationMs,
      persistBudgetMs: config.persistBudgetMs,
      minRequestGapMs: config.minRequestGapMs,
      ...(config.requireSecretLabel !== undefined ? { requireSecretLabel: config.requireSecretLabel } : {}),
      // A claim younger than this may belong to a request still in flight or being stored.
      claimTimeoutMs: config.requestTimeoutMs + config.persistBudgetMs + config.leaseDurationMs,
      requestTimeoutMs: config.requestTimeoutMs,
      faults: { crashAfterTokenResponse: config.testFaults.includes('crash-after-token-response') },
    },
  );
  if (config.testFaults.length > 0) log.warn({ faults: config.testFaults }, 'TEST FAULT HOOKS ARE ENABLED');

  const leaderHealth = new LeaderHealthzAdaptor(HEALTHZ_LEASE_TOLERANCE_MS);
  const health = await serveHealth(config, metrics, () => controller.hasSynced(), leaderHealth, log);
  await controller.start();
  log.info(
    { identity: config.identity, namespace: config.namespace },
    'informers synced; campaigning for leadership',
  );

  const shutdown = new AbortController();
  let lostLeadership = false;
  /** The leading work's abort signal; its reason tells a lost lease from a hand-over. */
  let leadingSignal: AbortSignal | undefined;
  elector = new LeaderElector({
    lock: new LeaseLock(kc, config.namespace, config.leaseName),
    identity: config.identity,
    leaseDurationMs: config.leaseDurationMs,
    renewDeadlineMs: config.renewDeadlineMs,
    retryPeriodMs: config.retryPeriodMs,
    clock,
    // The lease is released only after the reconciles in flight returned (or were aborted at the
    // drain deadline and returned), so the successor never acts on a chain whose answer is pending.
    releaseOnCancel: true,
    drainTimeoutMs: config.drainTimeoutMs,
    log,
    onStartedLeading: async (signal, drain) => {
      leadingSignal = signal;
      metrics.leaderStatus.set({ name: config.leaseName }, 1);
      log.info({ identity: config.identity }, 'became leader; starting workers');
      await controller.runWorkers(reconciler, signal, drain);
    },
    onStoppedLeading: () => {
      metrics.leaderStatus.set({ name: config.leaseName }, 0);
      if (leadingSignal?.reason instanceof LeadershipLostError) {
        lostLeadership = true;
        log.error({ identity: config.identity }, 'lost leadership; stopping');
      }
    },
    onNewLeader: (identity) => {
      log.info({ leader: identity }, 'leader observed');
    },
  });
  leaderHealth.setLeaderElection(elector);
  metrics.leaderStatus.set({ name: config.leaseName }, 0);

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log.info(
        { signal, drainTimeoutMs: config.drainTimeoutMs },
        elector.isLeader() ? 'shutting down: handing leadership over' : 'shutting down',
      );
      shutdown.abort();
    });
  }
  try {
    await elector.run(shutdown.signal);
  } catch (err) {
    log.error(errorFields(err), 'leader election failed');
    lostLeadership = true;
  }
  await controller.stop();
  await new Promise<void>((resolve) =>
    health.close(() => {
      resolve();
    }),
  );
  log.info('stopped');
  // A replica that lost leadership exits non-zero so that it restarts clean and campaigns again.
  return lostLeadership ? 1 : 0;
}

/** How long an exit waits for the log lines still queued for stdout and stderr. */
const EXIT_FLUSH_TIMEOUT_MS = 5_000;

/**
 * Exits once what was written to stdout and stderr has left the process. Writes to a pipe (a
 * container runtime's log pipe) are queued, and process.exit drops the queue: a stopping replica
 * would lose its last lines, the ones that say why it stopped. A reader that never drains the pipe
 * cannot hold the exit past the timeout.
 */
function exitAfterFlush(code: number): void {
  setTimeout(() => process.exit(code), EXIT_FLUSH_TIMEOUT_MS).unref();
  let pending = 2;
  const flushed = (): void => {
    pending -= 1;
    if (pending === 0) process.exit(code);
  };
  process.stdout.write('', flushed);
  process.stderr.write('', flushed);
}

if (import.meta.main) {
  main(process.argv.slice(2), process.env).then(exitAfterFlush, (err: unknown) => {
    process.stderr.write(
      `oauth-token-operator: fatal: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    exitAfterFlush(1);
  });
}
