// Host name resolution that one tenant's slow DNS cannot turn into everyone's. dns.lookup
// (getaddrinfo) runs on libuv's thread pool, four threads by default, shared with file and crypto
// work; a look-up of a name whose DNS server never answers holds its thread for the resolver's own
// timeouts and retries (tens of seconds with Kubernetes' search domains), whatever timeout the
// caller puts on the promise. Four such names would queue every other look-up behind them.
//
// So names are asked of DNS through c-ares (dns.Resolver), which runs on the event loop with a
// timeout of its own and holds no thread. Only a name DNS says does not exist goes to getaddrinfo,
// which also reads /etc/hosts and applies the search domains (localhost, a cluster Service's short
// name): a quick negative answer, so the fallback is short, and at most two such look-ups hold a
// pool thread at a time.
import { lookup, Resolver } from 'node:dns/promises';
import pLimit from 'p-limit';

/** Resolves a host name to its addresses. */
export type HostResolver = (host: string) => Promise<string[]>;

/**
 * c-ares: a query waits this long for its first answer and is sent this many times (the second wait
 * is twice as long): 4.5 s in all, inside the transport's 5 s look-up timeout.
 */
const QUERY_TIMEOUT_MS = 1_500;
const QUERY_TRIES = 2;
/** getaddrinfo look-ups at a time: the rest of the thread pool stays free for file and crypto work. */
const SYSTEM_LOOKUPS_AT_ONCE = 2;

/**
 * c-ares answers that come quickly and leave the system a chance: the name has no address in DNS, or
 * no DNS server can be asked at all (names in /etc/hosts still resolve). Not a timeout or SERVFAIL:
 * getaddrinfo would wait for the same silent server again, on a pool thread.
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

/**
 * A resolver built from a DNS query function and a system look-up, both injectable for tests.
 * Addresses come from DNS when it knows the name (A and AAAA records); a name DNS does not know is
 * looked up by the system (getaddrinfo); a DNS that does not answer fails the look-up without
 * touching the thread pool.
 */
export function dnsFirstResolver(
  query: (host: string, type: 'A' | 'AAAA') => Promise<string[]>,
  systemLookup: (host: string) => Promise<string[]>,
  systemLookupsAtOnce = SYSTEM_LOOKUPS_AT_ONCE,
): HostResolver {
  const limit = pLimit(systemLookupsAtOnce);
  return async (host) => {
    const answers = await Promise.allSettled([query(host, 'A'), query(host, 'AAAA')]);
    const addresses = answers.flatMap((answer) => (answer.status === 'fulfilled' ? answer.value : []));
    if (addresses.length > 0) return addresses;
    const unknownToDns = answers.every(
      (answer) => answer.status === 'fulfilled' || WORTH_A_SYSTEM_LOOKUP.has(errorCode(answer.reason) ?? ''),
    );
    if (!unknownToDns) {
      const failed = answers.find((answer) => answer.status === 'rejected');
      throw new Error(`DNS did not answer for ${host} (${errorCode(failed?.reason) ?? 'error'})`);
    }
    return limit(() => systemLookup(host));
  };
}

const resolver = new Resolver({ timeout: QUERY_TIMEOUT_MS, tries: QUERY_TRIES });

/** The operator's resolver: c-ares first, getaddrinfo for names DNS does not know. */
export const systemResolve: HostResolver = dnsFirstResolver(
  (host, type) => (type === 'A' ? resolver.resolve4(host) : resolver.resolve6(host)),
  async (host) => (await lookup(host, { all: true, order: 'verbatim' })).map((entry) => entry.address),
);
