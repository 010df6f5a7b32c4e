// Prometheus metrics. One prefix, base units, _total counters; per-connection series carry only
// namespace and name, and are removed when the connection is deleted. Also the names that existing
// controller dashboards expect (workqueue_*, controller_runtime_reconcile_total,
// leader_election_master_status).
//
// Label values tenants choose would let a tenant create series at will (a connection per made-up
// host name), and every series costs memory here and in Prometheus. So the only labels whose values
// come from a connection are `namespace` and `name` (one series set per connection, removed with
// it); the token endpoint `host` is a label value only when the operator's own configuration names
// it (a preset's hosts, --allowed-hosts), and every other host counts as "other".
import { STATUS_CODES } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkQueueMetrics } from '../kube/workqueue.ts';

const PREFIX = 'oauth_token_operator_';
export const CONTROLLER_NAME = 'oauthconnection';
/** The `host` label of requests to a host the operator's configuration does not name. */
export const OTHER_HOST_LABEL = 'other';

export interface MetricsOptions {
  /** Default true: the process metrics of prom-client. */
  defaultMetrics?: boolean;
  /**
   * Hosts (host[:port], as a URL's host) that may appear as the `host` label: those the operator's
   * configuration names, never a connection. Others are counted as OTHER_HOST_LABEL.
   */
  knownHosts?: Iterable<string>;
}

/** An HTTP status as a label: the registered codes, 'error' for no answer, 'other' for anything else. */
export function statusLabel(status: number | 'error'): string {
  if (status === 'error') return 'error';
  return STATUS_CODES[status] !== undefined ? String(status) : 'other';
}

export class OperatorMetrics {
  readonly registry = new Registry();

  readonly accessTokenExpiry = new Gauge({
    name: `${PREFIX}access_token_expiration_timestamp_seconds`,
    help: 'When the access token in the output Secret expires.',
    labelNames: ['namespace', 'name'],
    registers: [this.registry],
  });
  readonly refreshTokenExpiry = new Gauge({
    name: `${PREFIX}refresh_token_expiration_timestamp_seconds`,
    help: 'When the current refresh token expires, where the provider says.',
    labelNames: ['namespace', 'name'],
    registers: [this.registry],
  });
  readonly nextRefresh = new Gauge({
    name: `${PREFIX}next_refresh_timestamp_seconds`,
    help: 'When the next token request is scheduled.',
    labelNames: ['namespace', 'name'],
    registers: [this.registry],
  });
  readonly lastSuccess = new Gauge({
    name: `${PREFIX}last_success_timestamp_seconds`,
    help: 'Last successful token request.',
    labelNames: ['namespace', 'name'],
    registers: [this.registry],
  });
  readonly ready = new Gauge({
    name: `${PREFIX}connection_condition`,
    help: 'Condition status of a connection (1 for the current status value).',
    labelNames: ['namespace', 'name', 'condition', 'status'],
    registers: [this.registry],
  });
  readonly refreshes = new Counter({
    name: `${PREFIX}refreshes_total`,
    help: 'Token requests by result (success or failure class).',
    labelNames: ['namespace', 'name', 'result'],
    registers: [this.registry],
  });
  readonly refreshDuration = new Histogram({
    name: `${PREFIX}refresh_duration_seconds`,
    help: 'Duration of a refresh: claim, token request, persistence and output.',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly probes = new Counter({
    name: `${PREFIX}probes_total`,
    help: 'Token liveness probes (spec.probe) by verdict: accepted, rejected (401) or inconclusive.',
    labelNames: ['namespace', 'name', 'verdict'],
    registers: [this.registry],
  });
  readonly recoveryLogins = new Counter({
    name: `${PREFIX}recovery_logins_total`,
    help: 'Recovery logins by result.',
    labelNames: ['namespace', 'name', 'result'],
    registers: [this.registry],
  });
  readonly chainBroken = new Counter({
    name: `${PREFIX}chain_broken_total`,
    help: 'Refresh-token chains found broken.',
    labelNames: ['namespace', 'name'],
    registers: [this.registry],
  });
  readonly tokensLost = new Counter({
    name: `${PREFIX}tokens_lost_total`,
    help: 'Token answers the provider gave that could not be stored before this replica stopped being the writer.',
    labelNames: ['namespace', 'name'],
    registers: [this.registry],
  });
  readonly tokenEndpointRequests = new Counter({
    name: `${PREFIX}token_endpoint_requests_total`,
    help: 'Requests to token endpoints by HTTP status (or error), and by host where the operator configuration names the host ("other" otherwise).',
    labelNames: ['host', 'status'],
    registers: [this.registry],
  });
  readonly lastReconcileSuccess = new Gauge({
    name: `${PREFIX}last_reconcile_success_timestamp_seconds`,
    help: 'Last reconcile that ended without error, across all connections (a frozen loop stops moving it).',
    registers: [this.registry],
  });
  readonly leaderStatus = new Gauge({
    name: 'leader_election_master_status',
    help: 'Whether this replica is the leader (1) or not (0).',
    labelNames: ['name'],
    registers: [this.registry],
  });
  readonly reconcileTotal = new Counter({
    name: 'controller_runtime_reconcile_total',
    help: 'Reconciles by result.',
    labelNames: ['controller', 'result'],
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: 'controller_runtime_reconcile_errors_total',
    help: 'Reconciles that ended in an error.',
    labelNames: ['controller'],
    registers: [this.registry],
  });
  readonly reconcileTime = new Histogram({
    name: 'controller_runtime_reconcile_time_seconds',
    help: 'Time per reconcile.',
    labelNames: ['controller'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly queueDepth = new Gauge({
    name: 'workqueue_depth',
    help: 'Current depth of the work queue.',
    labelNames: ['name'],
    registers: [this.registry],
  });
  private readonly queueAdds = new Counter({
    name: 'workqueue_adds_total',
    help: 'Adds handled by the work queue.',
    labelNames: ['name'],
    registers: [this.registry],
  });
  private readonly queueRetries = new Counter({
    name: 'workqueue_retries_total',
    help: 'Retries handled by the work queue.',
    labelNames: ['name'],
    registers: [this.registry],
  });
  private readonly queueLatency = new Histogram({
    name: 'workqueue_queue_duration_seconds',
    help: 'How long an item stays in the work queue before being handed out.',
    labelNames: ['name'],
    buckets: [0.001, 0.01, 0.1, 1, 10, 60],
    registers: [this.registry],
  });
  private readonly queueWork = new Histogram({
    name: 'workqueue_work_duration_seconds',
    help: 'How long processing an item takes.',
    labelNames: ['name'],
    buckets: [0.001, 0.01, 0.1, 1, 10, 60],
    registers: [this.registry],
  });

  private readonly knownHosts: ReadonlySet<string>;

  constructor(options: MetricsOptions = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    this.knownHosts = new Set([...(options.knownHosts ?? [])].map((h) => h.toLowerCase()));
  }

  /** The `host` label for a request to `host`: itself when configured, else OTHER_HOST_LABEL. */
  hostLabel(host: string): string {
    const lower = host.toLowerCase();
    return this.knownHosts.has(lower) ? lower : OTHER_HOST_LABEL;
  }

  /** Counts one request to a token endpoint (discovery, token, revocation, introspection). */
  countTokenEndpointRequest(host: string, status: number | 'error'): void {
    this.tokenEndpointRequests.inc({ host: this.hostLabel(host), status: statusLabel(status) });
  }

  readonly workQueue: WorkQueueMetrics = {
    add: (name) => {
      this.queueAdds.inc({ name });
    },
    get: () => undefined,
    done: () => undefined,
    depth: (name, n) => {
      this.queueDepth.set({ name }, n);
    },
    retry: (name) => {
      this.queueRetries.inc({ name });
    },
    queueDurationMs: (name, ms) => {
      this.queueLatency.observe({ name }, ms / 1000);
    },
    workDurationMs: (name, ms) => {
      this.queueWork.observe({ name }, ms / 1000);
    },
  };

  setConditions(
    namespace: string,
    name: string,
    conditions: readonly { type: string; status: string }[],
  ): void {
    for (const condition of conditions) {
      for (const status of ['True', 'False', 'Unknown']) {
        this.ready.set(
          { namespace, name, condition: condition.type, status },
          condition.status === status ? 1 : 0,
        );
      }
    }
  }

  /** Drops every series of a deleted connection, whatever its other labels. */
  async forgetConnection(namespace: string, name: string): Promise<void> {
    const perConnection = [
      this.accessTokenExpiry,
      this.refreshTokenExpiry,
      this.nextRefresh,
      this.lastSuccess,
      this.ready,
      this.refreshes,
      this.probes,
      this.recoveryLogins,
      this.chainBroken,
      this.tokensLost,
    ];
    for (const metric of perConnection) {
      const { values } = await metric.get();
      for (const { labels } of values) {
        if (labels.namespace === namespace && labels.name === name) {
          (metric as Gauge).remove(labels as Record<string, string>);
        }
      }
    }
  }
}
