// Token requests: refresh token, client credentials, password (with an optional one-time code) and
// authorization code (with PKCE). Provider quirks in a successful answer are normalised before
// openid-client validates it, because a 2xx rejected after a rotation would cost the chain.
import {
  clientCredentialsGrant,
  genericGrantRequest,
  refreshTokenGrant,
  type TokenEndpointResponse,
} from 'openid-client';
import { normaliseGeolocation } from './classify.ts';
import { TokenError } from './errors.ts';
import { configurationError, endpointCall, failureFrom } from './exchange.ts';
import {
  canonicalTokenType,
  type ClientConfig,
  type ResolvedEndpoints,
  type TokenGrant,
  type TokenSet,
} from './model.ts';
import type { Transport } from './transport.ts';

/** Form parameters the operator sets itself; extra parameters cannot override them. */
const RESERVED_PARAMETERS = new Set([
  'grant_type',
  'refresh_token',
  'client_id',
  'client_secret',
  'client_assertion',
  'client_assertion_type',
  'code',
  'code_verifier',
  'redirect_uri',
  'username',
  'password',
  'otp',
  'totp',
  'scope',
  'token',
  'token_type_hint',
]);

/**
 * The largest access or refresh token kept, in bytes. Real tokens are far smaller (opaque tokens
 * are tens of bytes, Keycloak's JWTs one or two KiB), and an access token is sent in an
 * Authorization header, which servers cap at 8 to 16 KiB for all headers together (Node's
 * --max-http-header-size, https://nodejs.org/api/cli.html#--max-http-header-sizesize; nginx's
 * large_client_header_buffers, https://nginx.org/en/docs/http/ngx_http_core_module.html). A token
 * above it is a provider (or a tenant's own server) bent on filling the operator's memory, the
 * state Secret and every output rendered from it.
 */
export const MAX_TOKEN_BYTES = 16 * 1024;

/**
 * Refuses tokens above MAX_TOKEN_BYTES, after the provider answered. `consumed` says whether the
 * answer used up the refresh token presented (the provider rotated it): the successor is refused,
 * so the chain is broken (chain_broken: never presented again; a recovery login or a new seed starts
 * a new one) and must not be lost silently. When nothing was consumed it is a configuration problem
 * of the provider. `issuer` starts the message ("the provider", "FOLIO").
 */
export function checkTokenSizes(
  tokens: { accessToken: string; refreshToken?: string | undefined },
  consumed: boolean,
  issuer: string,
): void {
  const oversized = [
    Buffer.byteLength(tokens.accessToken) > MAX_TOKEN_BYTES ? 'an access token' : undefined,
    tokens.refreshToken !== undefined && Buffer.byteLength(tokens.refreshToken) > MAX_TOKEN_BYTES
      ? 'a refresh token'
      : undefined,
  ].filter((what) => what !== undefined);
  if (oversized.length === 0) return;
  throw new TokenError({
    code: consumed ? 'chain_broken' : 'configuration',
    reason: 'TokenTooLarge',
    message: `${issuer} issued ${oversized.join(' and ')} over ${String(MAX_TOKEN_BYTES)} bytes, which the operator does not keep${consumed ? '; the refresh token presented is used up, so the chain is broken' : ''}`,
  });
}

/** Values above this are epoch seconds rather than a lifetime (about 10 years). */
const EPOCH_SECONDS_THRESHOLD = 315_360_000;

function toSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(value)) return Number(value);
  return undefined;
}

/** What a token response carries beside what openid-client validates. */
export interface NormalisedExtras {
  idToken?: string;
  geolocation?: string;
  refreshExpiresInSec?: number;
}

/**
 * Makes a 2xx token response acceptable to openid-client's strict validation without losing the
 * tokens it carries:
 * - expires_in as a numeric string (Exact: "600") becomes a number; an unusable value is dropped,
 *   so the caller applies its assumed lifetime;
 * - refresh_expires_in is taken out: epoch seconds (Concur) become seconds from nowMs, 0 (Keycloak
 *   offline tokens: no limit) is omitted;
 * - id_token is taken out and passed through unvalidated (providers' id_token claims would
 *   otherwise be checked against an issuer the operator may not know);
 * - a null or empty refresh_token is dropped (no new refresh token); an array scope is joined.
 */
export function normaliseTokenResponse(
  body: Record<string, unknown>,
  nowMs: number,
): { body: Record<string, unknown>; extras: NormalisedExtras } {
  const out: Record<string, unknown> = { ...body };
  const extras: NormalisedExtras = {};
  if (typeof out.id_token === 'string' && out.id_token !== '') extras.idToken = out.id_token;
  delete out.id_token;
  const geolocation = normaliseGeolocation(out.geolocation);
  if (geolocation !== undefined) extras.geolocation = geolocation;

  const expiresIn = toSeconds(out.expires_in);
  if (expiresIn === undefined) delete out.expires_in;
  else out.expires_in = expiresIn;

  const refreshExpiresIn = toSeconds(out.refresh_expires_in);
  delete out.refresh_expires_in;
  if (refreshExpiresIn !== undefined && refreshExpiresIn > 0) {
    extras.refreshExpiresInSec =
      refreshExpiresIn >= EPOCH_SECONDS_THRESHOLD
        ? Math.max(0, Math.floor(refreshExpiresIn - nowMs / 1000))
        : refreshExpiresIn;
  }

  if (typeof out.refresh_token !== 'string' || out.refresh_token === '') delete out.refresh_token;
  if (Array.isArray(out.scope)) {
    out.scope = out.scope.filter((s): s is string => typeof s === 'string').join(' ');
  } else if (out.scope !== undefined && typeof out.scope !== 'string') {
    delete out.scope;
  }
  return { body: out, extras };
}

function requireValue(value: string, what: string): void {
  if (value === '') throw configurationError('MissingCredential', `${what} is empty`);
}

function checkGrant(grant: TokenGrant): void {
  switch (grant.type) {
    case 'refresh_token':
      requireValue(grant.refreshToken, 'refresh token');
      break;
    case 'password':
      requireValue(grant.username, 'username');
      requireValue(grant.password, 'password');
      break;
    case 'authorization_code':
      requireValue(grant.code, 'authorization code');
      requireValue(grant.codeVerifier, 'PKCE code verifier');
      requireValue(grant.redirectURI, 'redirect URI');
      break;
    case 'client_credentials':
      break;
  }
}

/** Every value of a request that must never reach a message, even when a provider echoes it. */
export function secretsOf(client: ClientConfig, grant?: TokenGrant, token?: string): string[] {
  const values: (string | undefined)[] = [client.clientSecret, token];
  if (grant?.type === 'refresh_token') values.push(grant.refreshToken);
  if (grant?.type === 'password') values.push(grant.username, grant.password, grant.otp);
  if (grant?.type === 'authorization_code') values.push(grant.code, grant.codeVerifier);
  return values.filter((v): v is string => typeof v === 'string' && v !== '');
}

function buildParameters(client: ClientConfig, grant: TokenGrant): URLSearchParams {
  const parameters = new URLSearchParams();
  if (grant.type === 'password') {
    for (const [name, value] of Object.entries(client.passwordGrantParameters ?? {})) {
      parameters.set(name, value);
    }
  }
  for (const [name, value] of Object.entries(client.extraParameters ?? {})) {
    if (!RESERVED_PARAMETERS.has(name.toLowerCase())) parameters.set(name, value);
  }
  // RFC 6749 §6: a refresh without scope keeps the scope originally granted. Sending it again is at
  // best redundant, and providers that narrowed the grant (offline_access not consented, say)
  // answer invalid_scope, which would stop a healthy chain.
  if (client.scopes !== undefined && client.scopes.length > 0 && grant.type !== 'refresh_token')
    parameters.set('scope', client.scopes.join(' '));
  switch (grant.type) {
    case 'password':
      parameters.set('username', grant.username);
      parameters.set('password', grant.password);
      if (grant.otp !== undefined && grant.otp !== '')
        parameters.set(client.otpParameter ?? 'otp', grant.otp);
      break;
    case 'authorization_code':
      parameters.set('code', grant.code);
      parameters.set('code_verifier', grant.codeVerifier);
      parameters.set('redirect_uri', grant.redirectURI);
      break;
    default:
      break;
  }
  return parameters;
}

function toTokenSet(result: TokenEndpointResponse, extras: NormalisedExtras): TokenSet {
  const tokens: TokenSet = {
    accessToken: result.access_token,
    tokenType: canonicalTokenType(result.token_type),
  };
  if (typeof result.expires_in === 'number') tokens.expiresInSec = result.expires_in;
  if (typeof result.refresh_token === 'string' && result.refresh_token !== '') {
    tokens.refreshToken = result.refresh_token;
  }
  if (extras.refreshExpiresInSec !== undefined) tokens.refreshExpiresInSec = extras.refreshExpiresInSec;
  if (extras.idToken !== undefined) tokens.idToken = extras.idToken;
  if (typeof result.scope === 'string' && result.scope !== '') tokens.scope = result.scope;
  if (extras.geolocation !== undefined) tokens.geolocation = extras.geolocation;
  return tokens;
}

/**
 * Performs one token request. Resolves to the token set; every failure is a TokenError classified
 * by classifyTokenFailure (an answer lost after a refresh_token or authorization_code request was
 * sent is 'in_doubt'; a failure before sending is 'transient').
 */
export async function requestTokens(
  transport: Transport,
  client: ClientConfig,
  endpoints: ResolvedEndpoints,
  grant: TokenGrant,
  nowMs: number,
  signal?: AbortSignal,
): Promise<TokenSet> {
  checkGrant(grant);
  let extras: NormalisedExtras = {};
  const { config, exchange } = endpointCall(transport, client, endpoints, 'token_endpoint', {
    rewriteSuccess: (body) => {
      const normalised = normaliseTokenResponse(body, nowMs);
      extras = normalised.extras;
      return normalised.body;
    },
    ...(signal !== undefined ? { signal } : {}),
  });
  const parameters = buildParameters(client, grant);
  let result: TokenEndpointResponse;
  try {
    switch (grant.type) {
      case 'refresh_token':
        result = await refreshTokenGrant(config, grant.refreshToken, parameters);
        break;
      case 'client_credentials':
        result = await clientCredentialsGrant(config, parameters);
        break;
      case 'password':
        result = await genericGrantRequest(config, 'password', parameters);
        break;
      case 'authorization_code':
        result = await genericGrantRequest(config, 'authorization_code', parameters);
        break;
    }
  } catch (err) {
    throw failureFrom(err, exchange, {
      grant: grant.type,
      errorDialect: client.errorDialect,
      redact: secretsOf(client, grant),
      nowMs,
    });
  }
  const tokens = toTokenSet(result, extras);
  const rotated =
    grant.type === 'refresh_token' &&
    tokens.refreshToken !== undefined &&
    tokens.refreshToken !== grant.refreshToken;
  checkTokenSizes(tokens, rotated, 'the provider');
  return tokens;
}
