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
// - Private networks (RFC 1918, CGNAT, IPv6 ULA) and cluster-internal names (*.svc, *.cluster.local,
//   single-label names that resolve through the pod's search path) only with allowPrivateNetworks.
// - The host is resolved and every address checked, so a public name cannot point inward.
//
// Known gap: the check resolves the name and fetch() resolves it again when it connects; a DNS
// server that answers differently within that window (rebinding) is caught only if it answers the
// check inward. Closing it needs a connection-level lookup hook (an undici dispatcher with a
// checked `lookup`), which global fetch does not expose.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { TokenError } from './errors.ts';

export interface EndpointPolicy {
  /** Allow http:// URLs and loopback hosts (development and tests only). */
  allowInsecureHttp: boolean;
  /** Exact host names or '*.suffix' patterns ('*.example.com' matches a.example.com, not example.com). An empty list means no allow-list. */
  allowedHosts?: readonly string[];
  /** Allow RFC 1918 / CGNAT / ULA addresses and cluster-internal names (on-premises providers). */
  allowPrivateNetworks?: boolean;
}

export type HostResolver = (host: string) => Promise<string[]>;

export const systemResolve: HostResolver = async (host) =>
  (await lookup(host, { all: true, order: 'verbatim' })).map((entry) => entry.address);

export type AddressClass =
  'public' | 'loopback' | 'private' | 'link-local' | 'metadata' | 'unspecified' | 'multicast' | 'reserved';

export interface CheckedEndpoint {
  url: URL;
  /** Lower-case host name without brackets or trailing dot. */
  hostname: string;
  /** The addresses that were checked. */
  addresses: string[];
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

function parseIPv4(address: string): number[] | undefined {
  const parts = address.split('.');
  if (parts.length !== 4) return undefined;
  const bytes = parts.map((part) => (/^\d{1,3}$/.test(part) ? Number(part) : NaN));
  return bytes.every((b) => b >= 0 && b <= 255) ? bytes : undefined;
}

/** 16 bytes of an IPv6 address (zone id dropped), or undefined. */
function parseIPv6(address: string): number[] | undefined {
  let text = address.replace(/%.*$/, '');
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = v4;
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const toWords = (s: string): number[] => (s === '' ? [] : s.split(':').map((w) => parseInt(w, 16)));
  const head = toWords(halves[0] ?? '');
  const rest = halves.length === 2 ? toWords(halves[1] ?? '') : [];
  const fill = 8 - head.length - rest.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return undefined;
  const words = [...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...rest];
  if (words.some((w) => Number.isNaN(w) || w < 0 || w > 0xffff)) return undefined;
  const bytes = words.flatMap((w) => [w >> 8, w & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

function inPrefix(bytes: readonly number[], prefix: readonly number[], bits: number): boolean {
  for (let i = 0; i < bits; i += 8) {
    const remaining = Math.min(8, bits - i);
    const mask = (0xff << (8 - remaining)) & 0xff;
    if (((bytes[i / 8] ?? 0) & mask) !== ((prefix[i / 8] ?? 0) & mask)) return false;
  }
  return true;
}

function classifyIPv4(b: readonly number[]): AddressClass {
  const is = (prefix: number[], bits: number): boolean => inPrefix(b, prefix, bits);
  if (is([169, 254, 169, 254], 32) || is([100, 100, 100, 200], 32)) return 'metadata';
  if (is([0], 8)) return 'unspecified';
  if (is([127], 8)) return 'loopback';
  if (is([169, 254], 16)) return 'link-local';
  if (is([10], 8) || is([172, 16], 12) || is([192, 168], 16) || is([100, 64], 10)) return 'private';
  if (is([198, 18], 15)) return 'private';
  if (is([192, 0, 0], 24)) return 'reserved';
  if (is([224], 4)) return 'multicast';
  if (is([240], 4)) return 'reserved';
  return 'public';
}

function classifyIPv6(b: readonly number[]): AddressClass {
  const is = (prefix: number[], bits: number): boolean => inPrefix(b, prefix, bits);
  const zero = new Array<number>(16).fill(0);
  // IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96) carry an IPv4 address that is what counts.
  if (is([...zero.slice(0, 10), 0xff, 0xff], 96) || is([0x00, 0x64, 0xff, 0x9b, ...zero.slice(0, 8)], 96)) {
    return classifyIPv4(b.slice(12));
  }
  if (is([0xfd, 0x00, 0x0e, 0xc2, ...zero.slice(0, 10), 0x02, 0x54], 128)) return 'metadata';
  if (is(zero, 128)) return 'unspecified';
  if (is([...zero.slice(0, 15), 1], 128)) return 'loopback';
  if (is(zero, 96)) return 'reserved'; // deprecated IPv4-compatible addresses
  if (is([0xfe, 0x80], 10)) return 'link-local';
  if (is([0xfe, 0xc0], 10) || is([0xfc], 7)) return 'private';
  if (is([0xff], 8)) return 'multicast';
  return 'public';
}

/** Classifies an IP address literal; undefined when it is not one. */
export function classifyAddress(address: string): AddressClass | undefined {
  const text = address.replace(/^\[|\]$/g, '');
  const family = isIP(text.replace(/%.*$/, ''));
  if (family === 4) {
    const bytes = parseIPv4(text);
    return bytes && classifyIPv4(bytes);
  }
  if (family === 6) {
    const bytes = parseIPv6(text);
    return bytes && classifyIPv6(bytes);
  }
  return undefined;
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
 * Checks a URL against the endpoint policy and returns it parsed with the addresses checked.
 * Throws TokenError 'insecure_endpoint' naming the problem (the host may be named, never a path or
 * query); a name that does not resolve is 'transient' (DNS may recover).
 */
export async function checkEndpoint(
  url: string,
  policy: EndpointPolicy,
  resolve: HostResolver = systemResolve,
): Promise<CheckedEndpoint> {
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
    return { url: parsed, hostname, addresses: [hostname] };
  }

  if (METADATA_NAMES.has(hostname)) throw refuse(`host ${hostname} is a cloud metadata service`);
  const loopbackName = hostname === 'localhost' || hostname.endsWith('.localhost');
  if (loopbackName && !policy.allowInsecureHttp) {
    throw refuse(`host ${hostname} is a loopback name; allowed only with --allow-insecure-http`);
  }
  const internalName =
    !loopbackName && (!hostname.includes('.') || INTERNAL_SUFFIXES.some((s) => hostname.endsWith(s)));
  if (internalName && policy.allowPrivateNetworks !== true) {
    throw refuse(`host ${hostname} is a cluster-internal name; allowed only with --allow-private-networks`);
  }

  let addresses: string[];
  try {
    addresses = await resolve(hostname);
  } catch {
    throw new TokenError({
      code: 'transient',
      reason: 'DNSFailure',
      message: `could not resolve host ${hostname}`,
    });
  }
  if (addresses.length === 0) {
    throw new TokenError({
      code: 'transient',
      reason: 'DNSFailure',
      message: `host ${hostname} has no addresses`,
    });
  }
  for (const address of addresses) checkAddress(address, hostname, policy);
  return { url: parsed, hostname, addresses };
}
