// Which token, discovery, revocation and login URLs the operator may call. An OAuthConnection is
// written by namespace users, so its URLs are untrusted input: without these checks the operator
// would fetch cloud metadata credentials or cluster-internal services on their behalf (SSRF).
//
// Rules, in order:
// - https only, unless the operator runs with allowInsecureHttp; no credentials in the URL.
// - The host must match the operator's allow-list when one is configured ("host" or "*.suffix").
// - Never: link-local (169.254.0.0/16, fe80::/10), cloud metadata (169.254.169.254, fd00:ec2::254,
//   100.100.100.200, metadata.google.internal …), unspecified, multicast and reserved addresses.
// - Loopback only with allowInsecureHttp (tests run providers on 127.0.0.1).
// - Private networks (RFC 1918, CGNAT, benchmarking, IPv6 ULA and site-local) and cluster-internal
//   names (*.svc, *.cluster.local, single-label names that resolve through the pod's search path)
//   only with allowPrivateNetworks.
// - Every address a name resolves to is checked, so a public name cannot point inward. The name is
//   resolved inside the connection's own look-up (transport.ts), so what was checked is what is
//   connected to: a DNS server that answers a second question differently is never asked one.
// - An IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::a.b.c.d) address counts as the IPv4 address
//   it carries. Addresses are matched with node's net.BlockList against the table SPECIAL_RANGES.
//
import { BlockList, isIP } from 'node:net';
import { TokenError } from './errors.ts';

export interface EndpointPolicy {
  /** Allow http:// URLs and loopback hosts (development and tests only). */
  allowInsecureHttp: boolean;
  /** Exact host names or '*.suffix' patterns ('*.example.com' matches a.example.com, not example.com). An empty list means no allow-list. */
  allowedHosts?: readonly string[];
  /** Allow RFC 1918 / CGNAT / ULA addresses and cluster-internal names (on-premises providers). */
  allowPrivateNetworks?: boolean;
}

export type AddressClass =
  'public' | 'loopback' | 'private' | 'link-local' | 'metadata' | 'unspecified' | 'multicast' | 'reserved';

export interface CheckedURL {
  url: URL;
  /** Lower-case host name without brackets or trailing dot. */
  hostname: string;
  /** The host is an address literal (already checked); no look-up will be made. */
  isAddress: boolean;
}

const METADATA_NAMES = new Set([
  'metadata.google.internal',
  'metadata.goog',
  'metadata',
  'instance-data',
  'instance-data.ec2.internal',
  'metadata.internal',
]);

const INTERNAL_SUFFIXES = ['.svc', '.cluster.local', '.internal', '.local'];

/** A name only the cluster's DNS (with the pod's search domains) can answer: no dot, or an internal suffix. */
export function isClusterInternalName(hostname: string): boolean {
  return !hostname.includes('.') || INTERNAL_SUFFIXES.some((s) => hostname.endsWith(s));
}

function refuse(message: string): TokenError {
  return new TokenError({ code: 'insecure_endpoint', reason: 'InsecureEndpoint', message });
}

/** True when host matches an allow-list entry: exact, or '*.suffix' for any subdomain of suffix. */
export function hostMatches(host: string, pattern: string): boolean {
  const p = pattern.trim().toLowerCase().replace(/\.$/, '');
  if (p.startsWith('*.')) {
    const suffix = p.slice(1);
    return host.endsWith(suffix) && host.length > suffix.length;
  }
  return host === p.replace(/^\[|\]$/g, '');
}

/**
 * The special ranges in CIDR notation, first match wins (metadata before link-local, ::/128 and
 * ::1/128 before ::/96); an address in none of them is public. They follow the IANA special-purpose
 * registries (https://www.iana.org/assignments/iana-ipv4-special-registry/,
 * https://www.iana.org/assignments/iana-ipv6-special-registry/) where this policy has no reason of
 * its own to differ:
 * - metadata: the instance metadata services (169.254.169.254 on most clouds, AWS's IPv6
 *   fd00:ec2::254, Alibaba Cloud's 100.100.100.200, Azure's WireServer 168.63.129.16, a public address
 *   that hands a VM its extension settings and certificates), refused whatever the flags.
 * - private: besides RFC 1918 and IPv6 unique-local, CGNAT (100.64.0.0/10), RFC 2544 benchmarking
 *   (198.18.0.0/15) and the deprecated site-local fec0::/10, all of which are networks inside an
 *   organisation or provider rather than the internet.
 * - reserved: IETF protocol assignments (192.0.0.0/24), the former class E including the limited
 *   broadcast address (240.0.0.0/4) and the deprecated IPv4-compatible IPv6 addresses (::/96).
 * The documentation nets (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) stay public:
 * they are routed nowhere, and tests use them as stand-ins for public addresses.
 */
const SPECIAL_RANGES: readonly (readonly [Exclude<AddressClass, 'public'>, readonly string[]])[] = [
  ['metadata', ['169.254.169.254/32', '100.100.100.200/32', '168.63.129.16/32', 'fd00:ec2::254/128']],
  ['unspecified', ['0.0.0.0/8', '::/128']],
  ['loopback', ['127.0.0.0/8', '::1/128']],
  ['link-local', ['169.254.0.0/16', 'fe80::/10']],
  [
    'private',
    [
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '100.64.0.0/10',
      '198.18.0.0/15',
      'fc00::/7',
      'fec0::/10',
    ],
  ],
  ['reserved', ['192.0.0.0/24', '240.0.0.0/4', '::/96']],
  ['multicast', ['224.0.0.0/4', 'ff00::/8']],
];

/**
 * One node BlockList per class. BlockList reads addresses as the socket that later connects does
 * (inet_pton), and matches an IPv4-mapped address (::ffff:a.b.c.d) against IPv4 rules by itself
 * (https://nodejs.org/api/net.html#blocklistcheckaddress-type). A NAT64 address (64:ff9b::/96,
 * RFC 6052) reaches the IPv4 address in its last 32 bits, so every IPv4 range is added again under
 * that prefix.
 */
const CLASS_LISTS: readonly (readonly [AddressClass, BlockList])[] = SPECIAL_RANGES.map(([kind, ranges]) => {
  const list = new BlockList();
  for (const range of ranges) {
    const [network = '', prefix = ''] = range.split('/');
    if (isIP(network) === 4) {
      list.addSubnet(network, Number(prefix), 'ipv4');
      list.addSubnet(`64:ff9b::${network}`, 96 + Number(prefix), 'ipv6');
    } else {
      list.addSubnet(network, Number(prefix), 'ipv6');
    }
  }
  return [kind, list] as const;
});

/** Classifies an IP address literal (brackets and a zone id allowed); undefined when it is not one. */
export function classifyAddress(address: string): AddressClass | undefined {
  // The zone id (fe80::1%eth0) names an interface, not part of the address.
  const text = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(text);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  return CLASS_LISTS.find(([, list]) => list.check(text, type))?.[0] ?? 'public';
}

function checkAddress(address: string, host: string, policy: EndpointPolicy): void {
  const kind = classifyAddress(address);
  const where = address === host ? `host ${host}` : `host ${host} (resolves to ${address})`;
  switch (kind) {
    case 'public':
      return;
    case 'loopback':
      if (policy.allowInsecureHttp) return;
      throw refuse(`${where} is a loopback address; allowed only with --allow-insecure-http`);
    case 'private':
      if (policy.allowPrivateNetworks === true) return;
      throw refuse(`${where} is a private-network address; allowed only with --allow-private-networks`);
    case 'metadata':
      throw refuse(`${where} is a cloud metadata address`);
    case 'link-local':
      throw refuse(`${where} is a link-local address`);
    case 'unspecified':
      throw refuse(`${where} is an unspecified address`);
    case 'multicast':
    case 'reserved':
      throw refuse(`${where} is a ${kind} address`);
    case undefined:
      throw refuse(`${where} is not a valid address`);
  }
}

/**
 * The URL rules of the policy, without DNS: scheme, credentials, allow-list, an address literal's
 * class, and names that are internal, loopback or metadata by themselves. Returns the URL parsed.
 * Throws TokenError 'insecure_endpoint' naming the problem (the host may be named, never a path or
 * query). A host name still has to pass checkAddresses with what it resolves to: the Transport does
 * that inside each connection's own look-up, so the addresses checked are the ones connected to.
 */
export function checkURL(url: string, policy: EndpointPolicy): CheckedURL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw refuse('endpoint is not a valid absolute URL');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw refuse(`endpoint scheme ${parsed.protocol.replace(/:$/, '')} is not allowed; use https`);
  }
  // WHATWG URL parsing already normalised odd IPv4 spellings (0x7f.1, 2130706433) to dotted quads.
  const hostname = parsed.hostname
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');
  if (hostname === '') throw refuse('endpoint has no host');
  if (parsed.protocol === 'http:' && !policy.allowInsecureHttp) {
    throw refuse(`endpoint host ${hostname} uses http; only https is allowed without --allow-insecure-http`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw refuse(`endpoint for host ${hostname} carries credentials in the URL`);
  }
  const allowList = policy.allowedHosts ?? [];
  if (allowList.length > 0 && !allowList.some((pattern) => hostMatches(hostname, pattern))) {
    throw refuse(`host ${hostname} is not in the operator's allowed hosts`);
  }

  if (classifyAddress(hostname) !== undefined) {
    checkAddress(hostname, hostname, policy);
    return { url: parsed, hostname, isAddress: true };
  }

  if (METADATA_NAMES.has(hostname)) throw refuse(`host ${hostname} is a cloud metadata service`);
  const loopbackName = hostname === 'localhost' || hostname.endsWith('.localhost');
  if (loopbackName && !policy.allowInsecureHttp) {
    throw refuse(`host ${hostname} is a loopback name; allowed only with --allow-insecure-http`);
  }
  const internalName = !loopbackName && isClusterInternalName(hostname);
  if (internalName && policy.allowPrivateNetworks !== true) {
    throw refuse(`host ${hostname} is a cluster-internal name; allowed only with --allow-private-networks`);
  }
  return { url: parsed, hostname, isAddress: false };
}

/** Checks every address a host name resolved to; one refused address refuses the name. */
export function checkAddresses(hostname: string, addresses: readonly string[], policy: EndpointPolicy): void {
  for (const address of addresses) checkAddress(address, hostname, policy);
}
