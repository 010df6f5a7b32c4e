// Which URL serves each endpoint of a client: explicit settings first, then what OIDC discovery at
// the issuer announces, then the defaults (a provider preset's regional URLs).
import type { DiscoveredMetadata, DiscoveryCache } from './discovery.ts';
import { configurationError } from './exchange.ts';
import { TokenError } from './errors.ts';
import type { EndpointSettings, ResolvedEndpoints } from './model.ts';
import type { Transport } from './transport.ts';

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

/**
 * The endpoints of a client, each checked against the URL rules of the endpoint policy, so that a
 * refused URL fails before any state is written or request sent. When the token endpoint does not
 * depend on discovery, a failed discovery only leaves the other endpoints to the explicit or
 * default values; a refused issuer is always reported.
 */
export async function resolveEndpoints(
  transport: Transport,
  discovery: DiscoveryCache,
  settings: EndpointSettings,
  signal?: AbortSignal,
): Promise<ResolvedEndpoints> {
  const explicitToken = nonEmpty(settings.tokenURL);
  const issuerURL = nonEmpty(settings.issuerURL);
  let discovered: DiscoveredMetadata | undefined;
  if (issuerURL !== undefined) {
    signal?.throwIfAborted();
    try {
      discovered = await untilAborted(discovery.get(issuerURL), signal);
    } catch (err) {
      if (signal?.aborted === true) throw err;
      if (explicitToken === undefined || (err instanceof TokenError && err.code === 'insecure_endpoint'))
        throw err;
    }
  }
  const tokenEndpoint = explicitToken ?? discovered?.tokenEndpoint ?? settings.defaults?.tokenURL;
  if (tokenEndpoint === undefined) {
    throw configurationError(
      'MissingTokenEndpoint',
      issuerURL !== undefined
        ? 'the discovery document names no token_endpoint; set provider.tokenURL'
        : 'no token endpoint is known; set provider.issuerURL or provider.tokenURL',
    );
  }
  transport.check(tokenEndpoint);
  const endpoints: ResolvedEndpoints = { tokenEndpoint };
  const authorizationEndpoint =
    nonEmpty(settings.authorizationURL) ??
    discovered?.authorizationEndpoint ??
    settings.defaults?.authorizationURL;
  if (authorizationEndpoint !== undefined) endpoints.authorizationEndpoint = authorizationEndpoint;
  const revocationEndpoint =
    nonEmpty(settings.revocationURL) ?? discovered?.revocationEndpoint ?? settings.defaults?.revocationURL;
  if (revocationEndpoint !== undefined) endpoints.revocationEndpoint = revocationEndpoint;
  if (discovered?.introspectionEndpoint !== undefined) {
    endpoints.introspectionEndpoint = discovered.introspectionEndpoint;
  }
  // OIDC userinfo: the Keycloak preset's default for the token liveness probe.
  if (discovered?.userinfoEndpoint !== undefined) endpoints.userinfoEndpoint = discovered.userinfoEndpoint;
  if (discovered !== undefined) endpoints.issuer = discovered.issuer;
  return endpoints;
}

/**
 * `promise`, or the signal's reason once it aborts first. A discovery request is shared by every
 * connection of the issuer, so one caller's deadline ends its own wait, not the request.
 */
async function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  const aborted = Promise.withResolvers<never>();
  const onAbort = (): void => {
    aborted.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await Promise.race([promise, aborted.promise]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
