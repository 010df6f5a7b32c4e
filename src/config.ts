// Operator flags. Each has an environment variable (OTO_ + the flag in upper snake case) so the
// Helm chart and the demo can set them either way; a flag wins over its variable.
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { parseDuration } from './kube/duration.ts';

export interface OperatorConfig {
  namespace: string;
  /** Namespaces whose connections are reconciled; empty: every namespace. */
  watchNamespaces: string[];
  leaseName: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  drainTimeoutMs: number;
  metricsAddress: string;
  logLevel: string;
  allowInsecureHttp: boolean;
  allowPrivateNetworks: boolean;
  allowedHosts: string[];
  workers: number;
  /** Keys of one namespace in flight at once: one namespace never holds every worker. */
  maxInFlightPerNamespace: number;
  maxConcurrentPerHost: number;
  secretPropagationMs: number;
  requestTimeoutMs: number;
  reconcileDeadlineMs: number;
  loginDeadlineMs: number;
  persistBudgetMs: number;
  minRequestGapMs: number;
  requireSecretLabel?: string;
  maxResponseBytes: number;
  kubeconfig?: string;
  testFaults: string[];
}

interface FlagSpec {
  type: 'string' | 'boolean';
  default?: string;
  help: string;
}

export const FLAGS: Record<string, FlagSpec> = {
  namespace: {
    type: 'string',
    help: 'Namespace of the operator: state Secrets and the leader Lease live here. Defaults to POD_NAMESPACE, else oauth-token-operator.',
  },
  'watch-namespaces': {
    type: 'string',
    help: 'Comma-separated namespaces whose connections are reconciled, one informer each, so RBAC can be Roles there (default: all namespaces).',
  },
  'lease-name': {
    type: 'string',
    default: 'oauth-token-operator',
    help: 'Name of the leader-election Lease.',
  },
  identity: { type: 'string', help: 'Leader-election identity. Defaults to POD_NAME, else hostname_pid.' },
  'lease-duration': {
    type: 'string',
    default: '15s',
    help: 'How long followers wait before taking over a silent leader.',
  },
  'renew-deadline': {
    type: 'string',
    default: '10s',
    help: 'How long the leader retries renewing before it gives up.',
  },
  'retry-period': { type: 'string', default: '2s', help: 'Interval between leader-election attempts.' },
  'drain-timeout': {
    type: 'string',
    default: '20s',
    help: 'On SIGTERM the leader starts no new reconcile and keeps its Lease while those in flight finish; after this long they are aborted. Must be shorter than the pod terminationGracePeriodSeconds.',
  },
  'metrics-address': {
    type: 'string',
    default: ':8080',
    help: 'Listen address for /metrics, /healthz and /readyz.',
  },
  'log-level': { type: 'string', default: 'info', help: 'trace, debug, info, warn or error.' },
  'allow-insecure-http': {
    type: 'boolean',
    help: 'Allow http:// and loopback token endpoints. For development and tests only.',
  },
  'allow-private-networks': {
    type: 'boolean',
    help: 'Allow token endpoints on private addresses and cluster-internal names (on-premises providers).',
  },
  'allowed-hosts': {
    type: 'string',
    default: '',
    help: 'Comma-separated token/login hosts the operator may call (exact names or *.suffix). Empty: any public host.',
  },
  workers: { type: 'string', default: '4', help: 'Concurrent reconciles.' },
  'max-in-flight-per-namespace': {
    type: 'string',
    help: 'Reconciles of one namespace running at once; the other workers stay free for other namespaces, whose keys are also taken in turn. Default: workers - 1 (at least 1), so that one namespace with slow providers cannot hold every worker.',
  },
  'max-concurrent-per-host': {
    type: 'string',
    default: '4',
    help: 'Concurrent token requests (and token liveness probes) per host.',
  },
  'min-request-gap': {
    type: 'string',
    default: '10s',
    help: 'The shortest time between two token requests of one connection, whatever its spec or the provider says (the larger of this, the minInterval and a tenth of the token lifetime applies).',
  },
  'require-secret-label': {
    type: 'string',
    help: 'A label key every Secret a connection references must carry with the value "true" (for clusters where those who write connections may not read every Secret of their namespace). Unset: no opt-in required.',
  },
  'secret-propagation': {
    type: 'string',
    default: '90s',
    help: 'How long a changed Secret takes to reach mounted volumes; the default refresh margin covers it.',
  },
  'request-timeout': { type: 'string', default: '30s', help: 'Total time cap of one token request.' },
  'login-deadline': {
    type: 'string',
    default: '2m',
    help: 'Total time one recovery login walk may take: every page, redirect and wait for a TOTP step together. Past it the login ends with LoginDeadlineExceeded. Must be shorter than --reconcile-deadline.',
  },
  'reconcile-deadline': {
    type: 'string',
    default: '3m',
    help: 'Total time one reconcile may spend on provider requests and logins; past it they are aborted and the connection is looked at again with backoff, so that no provider can hold a worker longer. Must exceed --request-timeout and --login-deadline.',
  },
  'persist-budget': {
    type: 'string',
    default: '60s',
    help: 'How long a replica that lost leadership keeps trying to store tokens a provider already issued (the API server may be unreachable for every replica). Another replica waits request-timeout + persist-budget + lease-duration before it judges a claim left behind.',
  },
  'max-response-bytes': { type: 'string', default: '1048576', help: 'Size cap of a token response body.' },
  kubeconfig: { type: 'string', help: 'Kubeconfig file (default: KUBECONFIG, else in-cluster).' },
  help: { type: 'boolean', help: 'Print this help.' },
};

export function helpText(): string {
  const lines = [
    'Usage: oauth-token-operator [flags]',
    '',
    'Flags (each also settable as OTO_<FLAG> in the environment):',
  ];
  for (const [name, spec] of Object.entries(FLAGS)) {
    const env = `OTO_${name.toUpperCase().replaceAll('-', '_')}`;
    const def = spec.default !== undefined && spec.default !== '' ? ` (default ${spec.default})` : '';
    lines.push(`  --${name}${spec.type === 'string' ? ' VALUE' : ''}`, `      ${spec.help}${def} [${env}]`);
  }
  return lines.join('\n');
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): OperatorConfig | 'help' {
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([name, spec]) => [name, { type: spec.type }]),
  ) as Record<string, { type: 'string' | 'boolean' }>;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options, allowPositionals: false, strict: true }).values;
  } catch (err) {
    throw new ConfigError(err instanceof Error ? err.message : String(err));
  }
  if (values.help) return 'help';
  const get = (name: string): string | undefined => {
    const flag = values[name];
    if (typeof flag === 'string') return flag;
    return env[`OTO_${name.toUpperCase().replaceAll('-', '_')}`] ?? FLAGS[name]?.default;
  };
  const bool = (name: string): boolean => {
    if (values[name] === true) return true;
    const fromEnv = env[`OTO_${name.toUpperCase().replaceAll('-', '_')}`];
    return fromEnv === 'true' || fromEnv === '1';
  };
  const duration = (name: string): number => {
    try {
      return parseDuration(get(name) ?? '');
    } catch (err) {
      throw new ConfigError(`--${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const positiveInt = (name: string): number => {
    const value = Number(get(name));
    if (!Number.isInteger(value) || value < 1)
      throw new ConfigError(`--${name}: expected a positive whole number`);
    return value;
  };
  const leaseDurationMs = duration('lease-duration');
  const renewDeadlineMs = duration('renew-deadline');
  const retryPeriodMs = duration('retry-period');
  if (!(leaseDurationMs > renewDeadlineMs && renewDeadlineMs > retryPeriodMs * 1.2)) {
    throw new ConfigError(
      '--lease-duration must exceed --renew-deadline, which must exceed 1.2 × --retry-period',
    );
  }
  const drainTimeoutMs = duration('drain-timeout');
  if (!(drainTimeoutMs > 0)) throw new ConfigError('--drain-timeout must be greater than zero');
  const requestTimeoutMs = duration('request-timeout');
  const loginDeadlineMs = duration('login-deadline');
  const reconcileDeadlineMs = duration('reconcile-deadline');
  // A reconcile must have time for at least one whole request or login before its own deadline.
  if (!(reconcileDeadlineMs > requestTimeoutMs && reconcileDeadlineMs > loginDeadlineMs)) {
    throw new ConfigError('--reconcile-deadline must exceed --request-timeout and --login-deadline');
  }
  if (!(loginDeadlineMs > 0)) throw new ConfigError('--login-deadline must be greater than zero');
  const workers = positiveInt('workers');
  const maxInFlightPerNamespace =
    get('max-in-flight-per-namespace') === undefined
      ? Math.max(1, workers - 1)
      : positiveInt('max-in-flight-per-namespace');
  // The old single-namespace variable would otherwise be ignored without a word, and the operator
  // would reconcile every namespace (a second writer to chains another installation owns).
  if (env.OTO_WATCH_NAMESPACE !== undefined) {
    throw new ConfigError(
      'OTO_WATCH_NAMESPACE was renamed: set OTO_WATCH_NAMESPACES (a comma-separated list)',
    );
  }
  const watchNamespaces = namespaceList(get('watch-namespaces') ?? '');
  const kubeconfig = get('kubeconfig') ?? env.KUBECONFIG;
  return {
    namespace: get('namespace') ?? env.POD_NAMESPACE ?? 'oauth-token-operator',
    watchNamespaces,
    leaseName: get('lease-name') ?? 'oauth-token-operator',
    identity: get('identity') ?? env.POD_NAME ?? `${hostname()}_${process.pid}`,
    leaseDurationMs,
    renewDeadlineMs,
    retryPeriodMs,
    drainTimeoutMs,
    metricsAddress: get('metrics-address') ?? ':8080',
    logLevel: get('log-level') ?? 'info',
    allowInsecureHttp: bool('allow-insecure-http'),
    allowPrivateNetworks: bool('allow-private-networks'),
    allowedHosts: (get('allowed-hosts') ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
    workers,
    maxInFlightPerNamespace,
    maxConcurrentPerHost: positiveInt('max-concurrent-per-host'),
    secretPropagationMs: duration('secret-propagation'),
    requestTimeoutMs,
    reconcileDeadlineMs,
    loginDeadlineMs,
    persistBudgetMs: duration('persist-budget'),
    minRequestGapMs: duration('min-request-gap'),
    ...(get('require-secret-label') ? { requireSecretLabel: get('require-secret-label') } : {}),
    maxResponseBytes: positiveInt('max-response-bytes'),
    ...(kubeconfig ? { kubeconfig } : {}),
    // Test-only fault hooks; nothing in the chart sets this.
    testFaults: (env.OTO_TEST_FAULTS ?? '')
      .split(',')
      .map((f) => f.trim())
      .filter(Boolean),
  };
}

/** Kubernetes' rule for a namespace name (an RFC 1123 label). */
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** `--watch-namespaces a,b`: the names, each checked, without repeats; empty for every namespace. */
export function namespaceList(value: string): string[] {
  const names = value
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!NAMESPACE_NAME.test(name)) {
      throw new ConfigError(
        `--watch-namespaces: ${JSON.stringify(name)} is not a namespace name (lower-case letters, digits and '-', at most 63)`,
      );
    }
  }
  return [...new Set(names)];
}
