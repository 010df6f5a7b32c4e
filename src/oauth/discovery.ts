// OpenID Connect discovery (https://openid.net/specs/openid-connect-discovery-1_0.html) with a
// per-issuer cache that belongs to one OAuthClient: concurrent callers share one request, answers
// are kept for a TTL on the injected clock, failures are not cached.
import { allowInsecureRequests, customFetch, discovery } from 'openid-client';
import type { Clock } from '../kube/clock.ts';
import { classifyTokenFailure } from './classify.ts';
import { libraryTimeoutSec, recordingFetch, safeLibraryCode, type Exchange } from './exchange.ts';
import { TokenError } from './errors.ts';
import type { Transport } from './transport.ts';

export const DEFAULT_DISCOVERY_TTL_MS = 60 * 60 * 1000;
const MAX_ENTRIES = 1000;

export interface DiscoveredMetadata {
  issuer: string;
  tokenEndpoint?: string;
  authorizationEndpoint?: string;
  revocationEndpoint?: string;
  introspectionEndpoint?: string;
  userinfoEndpoint?: string;
}

function discoveryFailure(err: unknown, exchange: Exchange, host: string, nowMs: number): TokenError {
  if (exchange.refused !== undefined) return exchange.refused;
  if (err instanceof TokenError) return err;
  const where = `OIDC discovery at host ${host}`;
  if (exchange.tooLarge === true) {
    return new TokenError({
      code: 'transient',
      reason: 'ResponseTooLarge',
      message: `${where}: response exceeded the size limit`,
    });
  }
  if (
    exchange.network !== undefined ||
    (exchange.status !== undefined && (exchange.status >= 500 || exchange.status === 429))
  ) {
    const failure = classifyTokenFailure({
      grant: 'client_credentials',
      nowMs,
      ...(exchange.network !== undefined ? { networkError: exchange.network } : {}),
      ...(exchange.status !== undefined ? { httpStatus: exchange.status } : {}),
      headers: exchange.headers ?? {},
    });
    return new TokenError({ ...failure, message: `${where}: ${failure.message}` });
  }
  const code = safeLibraryCode(err);
  const detail = code.startsWith('OAUTH_JSON_ATTRIBUTE_COMPARISON')
    ? 'the discovered issuer does not match provider.issuerURL exactly (check a trailing slash)'
    : exchange.status !== undefined && exchange.status >= 300 && exchange.status < 400
      ? `redirected (HTTP ${exchange.status}); redirects are not followed`
      : exchange.status !== undefined
        ? `unusable answer (HTTP ${exchange.status}, ${code})`
        : `failed (${code})`;
  return new TokenError({
    code: 'configuration',
    reason: 'DiscoveryFailed',
    message: `${where}: ${detail}`,
    ...(exchange.status !== undefined ? { httpStatus: exchange.status } : {}),
  });
}

async function discover(transport: Transport, issuerURL: string, nowMs: number): Promise<DiscoveredMetadata> {
  const issuer = transport.check(issuerURL);
  const exchange: Exchange = {};
  try {
    const config = await discovery(issuer, 'oauth-token-operator', undefined, undefined, {
      [customFetch]: recordingFetch(transport, 'discovery', exchange),
      timeout: libraryTimeoutSec(transport),
      // The Transport judges the scheme (see allowTransportToJudgeScheme in exchange.ts); openid-client
      // recognises this option by the function's identity, so it is passed as it is.
      // eslint-disable-next-line @typescript-eslint/no-deprecated
      execute: [allowInsecureRequests],
    });
    const metadata = config.serverMetadata();
    const found: DiscoveredMetadata = { issuer: metadata.issuer };
    if (typeof metadata.token_endpoint === 'string') found.tokenEndpoint = metadata.token_endpoint;
    if (typeof metadata.authorization_endpoint === 'string')
      found.authorizationEndpoint = metadata.authorization_endpoint;
    if (typeof metadata.revocation_endpoint === 'string')
      found.revocationEndpoint = metadata.revocation_endpoint;
    if (typeof metadata.introspection_endpoint === 'string')
      found.introspectionEndpoint = metadata.introspection_endpoint;
    if (typeof metadata.userinfo_endpoint === 'string') found.userinfoEndpoint = metadata.userinfo_endpoint;
    return found;
  } catch (err) {
    throw discoveryFailure(err, exchange, issuer.hostname, nowMs);
  }
}

export class DiscoveryCache {
  private readonly entries = new Map<string, { expiresAtMs: number; result: Promise<DiscoveredMetadata> }>();
  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly ttlMs: number;

  constructor(transport: Transport, clock: Clock, ttlMs = DEFAULT_DISCOVERY_TTL_MS) {
    this.transport = transport;
    this.clock = clock;
    this.ttlMs = ttlMs;
  }

  /** The issuer's metadata, from the cache while fresh. Throws TokenError. */
  get(issuerURL: string): Promise<DiscoveredMetadata> {
    const nowMs = this.clock.now();
    const hit = this.entries.get(issuerURL);
    if (hit !== undefined && hit.expiresAtMs > nowMs) return hit.result;
    // Entries are in insertion order: drop expired ones from the front, and the oldest when full.
    for (const [key, entry] of this.entries) {
      if (entry.expiresAtMs <= nowMs || this.entries.size >= MAX_ENTRIES) this.entries.delete(key);
      else break;
    }
    const result = discover(this.transport, issuerURL, nowMs);
    this.entries.set(issuerURL, { expiresAtMs: nowMs + this.ttlMs, result });
    result.catch(() => {
      if (this.entries.get(issuerURL)?.result === result) this.entries.delete(issuerURL);
    });
    return result;
  }

  clear(): void {
    this.entries.clear();
  }
}
