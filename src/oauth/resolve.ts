// Host name resolution that one tenant's slow DNS cannot turn into everyone's. dns.lookup
// (getaddrinfo) runs on libuv's thread pool, four threads by default, shared with file and crypto
// work; a look-up of a name whose DNS server never answers holds its thread for the resolver's own
// timeouts and retries (tens of seconds with Kubernetes' search domains), whatever timeout the
// caller puts on the promise. Four such names would queue every other look-up behind them.
//
// So a name is looked up in this order, as getaddrinfo itself would, but without a thread for DNS:
// 1. /etc/hosts (a pod's hostAliases, localhost), read by this process, so that a pinned address
//    still wins over DNS;
// 2. DNS through c-ares (dns.Resolver), which runs on the event loop with a timeout of its own;
// 3. getaddrinfo, for what c-ares cannot do: a name DNS says does not exist, or a cluster-internal
//    name (a Service's short name needs the search domains, which c-ares queries do not apply). At
//    most two such look-ups hold a pool thread at a time, a few more wait, and the rest fail at once.
import { readFile, stat } from 'node:fs/promises';
import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import pLimit from 'p-limit';
import { isClusterInternalName } from './endpoint-policy.ts';

/** Resolves a host name to its addresses. */
export type HostResolver = (host: string) => Promise<string[]>;

/**
 * c-ares: a query waits this long for its first answer and is sent this many times (the second wait
 * is twice as long): 4.5 s in all per name server, the transport's 5 s look-up limit ending it first.
 */
const QUERY_TIMEOUT_MS = 1_500;
const QUERY_TRIES = 2;
/** getaddrinfo look-ups at a time: the rest of the thread pool stays free for file and crypto work. */
const SYSTEM_LOOKUPS_AT_ONCE = 2;
/** getaddrinfo look-ups that may wait for a thread; more fail at once rather than queue without end. */
const SYSTEM_LOOKUPS_WAITING = 8;
/** A waiting look-up whose caller has given up (the transport's 5 s limit) is not started. */
const SYSTEM_LOOKUP_STALE_MS = 5_000;

/**
 * c-ares answers that come quickly and leave the system a chance: the name has no address in DNS, or
 * no DNS server can be asked at all. Not a timeout or SERVFAIL: getaddrinfo would wait for the same
 * silent server again, on a pool thread (except for a cluster-internal name, see below).
 */
const WORTH_A_SYSTEM_LOOKUP = new Set([
  'ENOTFOUND',
  'ENODATA',
  'ENONAME',
  'EBADNAME',
  'ENOTIMP',
  'EREFUSED',
  'ECONNREFUSED',
]);

function errorCode(reason: unknown): string | undefined {
  const code = (reason as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Addresses by lower-case name, from hosts-file text (`address name alias…`, `#` comments). */
export function parseHostsFile(text: string): Map<string, string[]> {
  const table = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const [address, ...names] = (raw.split('#')[0] ?? '').trim().split(/\s+/);
    if (address === undefined || isIP(address) === 0) continue;
    for (const name of names) {
      const key = name.toLowerCase().replace(/\.$/, '');
      table.set(key, [...(table.get(key) ?? []), address]);
    }
  }
  return table;
}

export interface DnsFirstOptions {
  /** The pinned addresses of a name (/etc/hosts), or undefined. */
  pinned: (host: string) => Promise<string[] | undefined>;
  /** One DNS query (c-ares). */
  query: (host: string, type: 'A' | 'AAAA') => Promise<string[]>;
  /** The system's look-up (getaddrinfo). */
  systemLookup: (host: string) => Promise<string[]>;
  systemLookupsAtOnce?: number;
  systemLookupsWaiting?: number;
  now?: () => number;
}

/** A resolver from its three sources (see the top of this file); all injectable for tests. */
export function dnsFirstResolver(options: DnsFirstOptions): HostResolver {
  const limit = pLimit(options.systemLookupsAtOnce ?? SYSTEM_LOOKUPS_AT_ONCE);
  const waiting = options.systemLookupsWaiting ?? SYSTEM_LOOKUPS_WAITING;
  const now = options.now ?? Date.now;
  const systemLookup = (host: string): Promise<string[]> => {
    if (limit.pendingCount >= waiting) {
      return Promise.reject(new Error(`too many system look-ups waiting; ${host} not looked up`));
    }
    const queuedAt = now();
    return limit(() =>
      now() - queuedAt > SYSTEM_LOOKUP_STALE_MS
        ? Promise.reject(new Error(`the look-up of ${host} waited too long`))
        : options.systemLookup(host),
    );
  };
  return async (host) => {
    const pinned = await options.pinned(host);
    if (pinned !== undefined && pinned.length > 0) return pinned;
    const answers = await Promise.allSettled([options.query(host, 'A'), options.query(host, 'AAAA')]);
    const addresses = answers.flatMap((answer) => (answer.status === 'fulfilled' ? answer.value : []));
    if (addresses.length > 0) return addresses;
    const unknownToDns = answers.every(
      (answer) => answer.status === 'fulfilled' || WORTH_A_SYSTEM_LOOKUP.has(errorCode(answer.reason) ?? ''),
    );
    if (unknownToDns || isClusterInternalName(host)) return systemLookup(host);
    const failed = answers.find((answer) => answer.status === 'rejected');
    throw new Error(`DNS did not answer for ${host} (${errorCode(failed?.reason) ?? 'error'})`);
  };
}

/** How often /etc/hosts is checked for a change. */
const HOSTS_FILE_CHECK_MS = 10_000;

/** /etc/hosts, read again when it changed (kubelet writes it once, at the pod's start). */
function hostsFile(path = '/etc/hosts'): (host: string) => Promise<string[] | undefined> {
  let cached: { mtimeMs: number; table: Map<string, string[]> } | undefined;
  let checkedAtMs = -Infinity;
  return async (host) => {
    if (Date.now() - checkedAtMs >= HOSTS_FILE_CHECK_MS) {
      checkedAtMs = Date.now();
      try {
        const { mtimeMs } = await stat(path);
        if (cached?.mtimeMs !== mtimeMs) {
          cached = { mtimeMs, table: parseHostsFile(await readFile(path, 'utf8')) };
        }
      } catch {
        cached = undefined; // no hosts file: DNS alone
      }
    }
    return cached?.table.get(host.toLowerCase().replace(/\.$/, ''));
  };
}

const resolver = new Resolver({ timeout: QUERY_TIMEOUT_MS, tries: QUERY_TRIES });

/** The operator's resolver: /etc/hosts, then c-ares, then getaddrinfo for what only it can answer. */
export const systemResolve: HostResolver = dnsFirstResolver({
  pinned: hostsFile(),
  query: (host, type) => (type === 'A' ? resolver.resolve4(host) : resolver.resolve6(host)),
  systemLookup: async (host) =>
    (await lookup(host, { all: true, order: 'verbatim' })).map((entry) => entry.address),
});
