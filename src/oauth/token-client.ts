// The single place that talks to token endpoints. Built on openid-client v6 (request building,
// client authentication, discovery, response validation) with a guarded fetch underneath that
// enforces what the operator needs on every request:
// - the endpoint policy first: no outbound request to a refused URL;
// - no redirects (redirect: 'manual'; a 3xx is a configuration error);
// - a total time cap covering connect, headers and body;
// - a size cap on the response body (abandoned past the cap);
// - provider quirks normalised before openid-client validates: Exact's string "expires_in":"600",
//   Concur's refresh_expires_in in epoch seconds, empty/null refresh_token, array scope;
// - the raw exchange (status, headers, body, or how the network failed) recorded so that every
//   failure is classified from what actually happened, not from a library's error message.
//
// Secrets (client secret, tokens, passwords, codes) never reach a thrown message: errors are built
// by classifyTokenFailure from the OAuth error code and a sanitised description only, and library
// errors (whose cause chains hold response bodies) are never attached.
import {
  allowInsecureRequests,
  ClientSecretBasic,
  ClientSecretPost,
  clientCredentialsGrant,
  Configuration,
  customFetch,
  discovery,
  genericGrantRequest,
  None,
  refreshTokenGrant,
  tokenIntrospection,
  tokenRevocation,
  type ClientAuth,
  type CustomFetch,
  type ServerMetadata,
  type TokenEndpointResponse,
} from 'openid-client';
import type { ClientAuthMethod, Preset, Provider } from '../api/v1alpha1.ts';
import { concurTokenURL, presetDefaults, type PresetDefaults } from '../providers/presets.ts';
import {
  classifyTokenFailure,
  normaliseGeolocation,
  tokenErrorFor,
  type NetworkFailure,
  type TokenGrantType,
} from './classify.ts';
import { checkEndpoint, type EndpointPolicy, type HostResolver } from './endpoint-policy.ts';
import { TokenError } from './errors.ts';

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;
export const DEFAULT_DISCOVERY_TTL_MS = 60 * 60 * 1000;
const DISCOVERY_CACHE_MAX_ENTRIES = 1000;

/** The subset of fetch the client uses; injectable for tests. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Called once per HTTP request, for metrics: host (with port), status or 'error', duration. */
export type RequestObserver = (host: string, status: number | 'error', durationMs: number) => void;

export interface HttpOptions {
  fetch?: FetchLike;
  /** DNS resolution for the endpoint policy. */
  resolve?: HostResolver;
  /** Total time cap per request. Default 30000. */
  timeoutMs?: number;
  /** Response body cap. Default 1 MiB. */
  maxResponseBytes?: number;
  onRequest?: RequestObserver;
}

export interface ResolvedEndpoints {
  tokenEndpoint: string;
  authorizationEndpoint?: string;
  revocationEndpoint?: string;
  /** RFC 7662; used to settle whether an in-doubt refresh token was consumed. */
  introspectionEndpoint?: string;
  issuer?: string;
}

export type TokenGrant =
  | { type: 'refresh_token'; refreshToken: string }
  | { type: 'client_credentials' }
  | { type: 'password'; username: string; password: string; otp?: string }
  | { type: 'authorization_code'; code: string; codeVerifier: string; redirectURI: string };

export interface TokenRequest extends HttpOptions {
  endpoints: ResolvedEndpoints;
  clientID: string;
  clientSecret?: string;
  authMethod: ClientAuthMethod;
  grant: TokenGrant;
  scopes?: readonly string[];
  /** Extra form parameters; ones the operator sets itself (grant_type, client_id, scope …) are dropped. */
  extraParameters?: Readonly<Record<string, string>>;
  preset: Preset;
  policy: EndpointPolicy;
  nowMs: number;
}

export interface TokenSet {
  accessToken: string;
  /** 'Bearer' or 'DPoP' in canonical case, else as sent. */
  tokenType: string;
  /** Undefined when the provider omitted expires_in: the caller applies refresh.assumedLifetime. */
  expiresInSec?: number;
  /** Undefined when the response carried no (new) refresh token: keep the current one. */
  refreshToken?: string;
  /** Seconds from nowMs; Concur's epoch-seconds value is converted, Keycloak's 0 (no limit) omitted. */
  refreshExpiresInSec?: number;
  /** Passed through UNVALIDATED: the operator does not consume identity claims. */
  idToken?: string;
  scope?: string;
  /** Concur: the origin of the user's data center; later calls go there. */
  geolocation?: string;
}

/** Form parameters the operator sets itself; spec.extraParameters cannot override them. */
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

/** Values above this are epoch seconds rather than a lifetime (about 10 years). */
const EPOCH_SECONDS_THRESHOLD = 315_360_000;

// ---------------------------------------------------------------------------------------------
// Guarded fetch

/** What actually happened on the wire, recorded by the guarded fetch. */
interface Exchange {
  status?: number;
  headers?: Record<string, string>;
  /** Parsed JSON when the body was JSON, else the raw text. In memory only; never in an error. */
  body?: unknown;
  network?: NetworkFailure;
  tooLarge?: boolean;
  refused?: TokenError;
  idToken?: string;
  geolocation?: string;
  refreshExpiresInSec?: number;
}

interface GuardOptions {
  /** URL.host every request must go to. */
  host: string;
  fetch: FetchLike;
  timeoutMs: number;
  maxBytes: number;
  onRequest: RequestObserver | undefined;
  /** Normalise 2xx JSON bodies as token responses. */
  tokenResponse: boolean;
  nowMs: number;
}

class BodyTooLargeError extends Error {}

const CONNECT_PHASE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_FAIL',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

function errorCodeOf(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const record = current as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof record.code === 'string') return record.code;
    if (Array.isArray(record.errors) && record.errors.length > 0) {
      current = record.errors[0] as unknown;
      continue;
    }
    current = record.cause;
  }
  return undefined;
}

/** Whether the request may have left: only failures of the connect phase prove it did not. */
function networkFailureOf(err: unknown, timedOut: boolean): NetworkFailure {
  const code = errorCodeOf(err);
  if (code !== undefined) {
    if (CONNECT_PHASE_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_')) {
      return 'connection';
    }
  }
  // Our cap fires after undici's own 10 s connect timeout would have, so a timeout here almost
  // always means the request was sent and the answer is late: in doubt, not merely transient.
  if (timedOut) return 'timeout';
  return 'reset';
}

function headersToRecord(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name.toLowerCase()] = value;
  });
  return out;
}

async function readCapped(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = response.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new BodyTooLargeError();
  }
  if (response.body === null) return new Uint8Array();
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLargeError();
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function toSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(value)) return Number(value);
  return undefined;
}

export interface NormalisedExtras {
  idToken?: string;
  geolocation?: string;
  refreshExpiresInSec?: number;
}

/**
 * Makes a 2xx token response acceptable to openid-client's strict validation without losing the
 * tokens it carries (a rejected 2xx after a rotation would cost the chain):
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

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

function guardedFetch(options: GuardOptions, exchange: Exchange): CustomFetch {
  return async (url, init) => {
    const target = new URL(url);
    if (target.host.toLowerCase() !== options.host.toLowerCase()) {
      // openid-client only ever calls the endpoint we checked; anything else is refused unsent.
      exchange.refused = new TokenError({
        code: 'insecure_endpoint',
        reason: 'InsecureEndpoint',
        message: `request to unchecked host ${target.hostname} refused`,
      });
      throw exchange.refused;
    }
    const controller = new AbortController();
    const cap = { fired: false };
    const timer = setTimeout(() => {
      cap.fired = true;
      controller.abort(new DOMException('token endpoint time cap reached', 'TimeoutError'));
    }, options.timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, controller.signal]) : controller.signal;
    const started = performance.now();
    const observe = (status: number | 'error'): void => {
      try {
        options.onRequest?.(target.host, status, performance.now() - started);
      } catch {
        // A metrics callback must not change the outcome of a token request.
      }
    };
    try {
      let response: Response;
      try {
        response = await options.fetch(url, {
          method: init.method,
          headers: init.headers,
          body: init.body as RequestInit['body'],
          redirect: 'manual',
          signal,
        });
      } catch (err) {
        exchange.network = networkFailureOf(err, cap.fired || signal.aborted);
        observe('error');
        throw new Error('token endpoint request failed');
      }
      exchange.status = response.status;
      exchange.headers = headersToRecord(response.headers);
      let bytes: Uint8Array;
      try {
        bytes = await readCapped(response, options.maxBytes);
      } catch (err) {
        if (err instanceof BodyTooLargeError) {
          exchange.tooLarge = true;
          observe(response.status);
          throw new Error('token endpoint response too large');
        }
        exchange.network = cap.fired || signal.aborted ? 'timeout' : 'lost-response';
        observe('error');
        throw new Error('token endpoint response could not be read');
      }
      observe(response.status);
      const text = new TextDecoder().decode(bytes);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text) as unknown;
      } catch {
        parsed = undefined;
      }
      exchange.body = parsed !== undefined ? parsed : text;
      const success = response.status >= 200 && response.status < 300;
      if (options.tokenResponse && success && isObject(parsed)) {
        const { body, extras } = normaliseTokenResponse(parsed, options.nowMs);
        Object.assign(exchange, extras);
        return new Response(JSON.stringify(body), {
          status: response.status,
          headers: { 'content-type': 'application/json' },
        });
      }
      const headers = new Headers(response.headers);
      for (const name of ['content-length', 'content-encoding', 'transfer-encoding']) headers.delete(name);
      return new Response(NULL_BODY_STATUSES.has(response.status) ? null : text, {
        status: response.status,
        statusText: response.statusText,
        headers,
      });
    } finally {
      clearTimeout(timer);
    }
  };
}

function findTokenError(err: unknown): TokenError | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (current instanceof TokenError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** A library error's code (ERR_INVALID_ARG_VALUE, OAUTH_…), never its message. */
function safeLibraryCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code) ? code : 'unknown';
}

interface FailureContext {
  preset: Preset | undefined;
  grant: TokenGrantType;
  redact: readonly string[];
  nowMs: number;
}

function failureFrom(err: unknown, exchange: Exchange, context: FailureContext): TokenError {
  const refused = exchange.refused ?? findTokenError(err);
  if (refused !== undefined) return refused;
  const base = { ...context, ...(exchange.status !== undefined ? { httpStatus: exchange.status } : {}) };
  if (exchange.tooLarge === true) return tokenErrorFor({ ...base, bodyTooLarge: true });
  if (exchange.network !== undefined) {
    return tokenErrorFor({ ...base, networkError: exchange.network, headers: exchange.headers ?? {} });
  }
  if (exchange.status !== undefined) {
    return tokenErrorFor({ ...base, headers: exchange.headers ?? {}, body: exchange.body });
  }
  return new TokenError({
    code: 'configuration',
    reason: 'InvalidRequest',
    message: `token request could not be built (${safeLibraryCode(err)})`,
  });
}

// ---------------------------------------------------------------------------------------------
// Configuration

function configurationError(reason: string, message: string): TokenError {
  return new TokenError({ code: 'configuration', reason, message });
}

function clientAuth(method: ClientAuthMethod, clientSecret: string | undefined): ClientAuth {
  if (method === 'none') return None();
  if (clientSecret === undefined || clientSecret === '') {
    throw configurationError('MissingClientSecret', `client authentication ${method} needs a client secret`);
  }
  return method === 'client_secret_basic' ? ClientSecretBasic(clientSecret) : ClientSecretPost(clientSecret);
}

function buildConfiguration(
  server: ServerMetadata,
  clientID: string,
  auth: ClientAuth,
  policy: EndpointPolicy,
  fetchFn: CustomFetch,
  timeoutMs: number,
): Configuration {
  if (clientID === '') throw configurationError('MissingClientID', 'clientID is empty');
  const config = new Configuration(server, clientID, undefined, auth);
  config[customFetch] = fetchFn;
  // Backstop only: the guarded fetch enforces timeoutMs itself and knows that it fired.
  config.timeout = Math.ceil(timeoutMs / 1000) + 1;
  if (policy.allowInsecureHttp) {
    // Deprecated only to stand out; used solely when the operator runs with --allow-insecure-http.
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    allowInsecureRequests(config);
  }
  return config;
}

function grantTypeOf(grant: TokenGrant): TokenGrantType {
  return grant.type;
}

function secretsOf(params: { clientSecret?: string; grant?: TokenGrant; token?: string }): string[] {
  const values: (string | undefined)[] = [params.clientSecret, params.token];
  const grant = params.grant;
  if (grant?.type === 'refresh_token') values.push(grant.refreshToken);
  if (grant?.type === 'password') values.push(grant.username, grant.password, grant.otp);
  if (grant?.type === 'authorization_code') values.push(grant.code, grant.codeVerifier);
  return values.filter((v): v is string => typeof v === 'string' && v !== '');
}

function requireValue(value: string, what: string): void {
  if (value === '') throw configurationError('MissingCredential', `${what} is empty`);
}

function buildParameters(params: TokenRequest): URLSearchParams {
  const parameters = new URLSearchParams();
  if (params.grant.type === 'password') {
    for (const [name, value] of Object.entries(presetDefaults(params.preset).passwordGrantParameters ?? {})) {
      parameters.set(name, value);
    }
  }
  for (const [name, value] of Object.entries(params.extraParameters ?? {})) {
    if (!RESERVED_PARAMETERS.has(name.toLowerCase())) parameters.set(name, value);
  }
  const grant = params.grant;
  // RFC 6749 §6: a refresh without scope keeps the scope originally granted. Sending it again is at
  // best redundant, and providers that narrowed the grant (offline_access not consented, say)
  // answer invalid_scope, which would stop a healthy chain.
  if (params.scopes !== undefined && params.scopes.length > 0 && grant.type !== 'refresh_token')
    parameters.set('scope', params.scopes.join(' '));
  switch (grant.type) {
    case 'password':
      parameters.set('username', grant.username);
      parameters.set('password', grant.password);
      if (grant.otp !== undefined && grant.otp !== '') parameters.set('otp', grant.otp);
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

function canonicalTokenType(value: string): string {
  const lower = value.toLowerCase();
  if (lower === 'bearer') return 'Bearer';
  if (lower === 'dpop') return 'DPoP';
  return value;
}

function toTokenSet(result: TokenEndpointResponse, exchange: Exchange): TokenSet {
  const tokens: TokenSet = {
    accessToken: result.access_token,
    tokenType: canonicalTokenType(result.token_type),
  };
  if (typeof result.expires_in === 'number') tokens.expiresInSec = result.expires_in;
  if (typeof result.refresh_token === 'string' && result.refresh_token !== '') {
    tokens.refreshToken = result.refresh_token;
  }
  if (exchange.refreshExpiresInSec !== undefined) tokens.refreshExpiresInSec = exchange.refreshExpiresInSec;
  if (exchange.idToken !== undefined) tokens.idToken = exchange.idToken;
  if (typeof result.scope === 'string' && result.scope !== '') tokens.scope = result.scope;
  if (exchange.geolocation !== undefined) tokens.geolocation = exchange.geolocation;
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Token requests

/**
 * Performs one token request. Resolves to the token set; every failure is a TokenError classified
 * by classifyTokenFailure (an answer lost after a refresh_token or authorization_code request was
 * sent is 'in_doubt'; a failure before sending is 'transient').
 */
export async function requestTokens(params: TokenRequest): Promise<TokenSet> {
  const grant = params.grant;
  if (params.preset === 'folio') {
    throw configurationError('UnsupportedProtocol', 'preset folio is not OAuth2; it needs the FOLIO adapter');
  }
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
  const exchange: Exchange = {};
  const config = await endpointConfiguration(
    params,
    params.endpoints.tokenEndpoint,
    'token_endpoint',
    exchange,
  );
  const parameters = buildParameters(params);

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
      preset: params.preset,
      grant: grantTypeOf(grant),
      redact: secretsOf(params),
      nowMs: params.nowMs,
    });
  }
  return toTokenSet(result, exchange);
}

export interface RevokeRequest extends HttpOptions {
  endpoints: ResolvedEndpoints;
  clientID: string;
  clientSecret?: string;
  authMethod: ClientAuthMethod;
  token: string;
  tokenTypeHint?: 'refresh_token' | 'access_token';
  preset: Preset;
  policy: EndpointPolicy;
  nowMs: number;
}

export interface RevokeResult {
  revoked: boolean;
  /** Why not, when revoked is false. */
  error?: TokenError;
}

/** RFC 7009 revocation, best effort: never throws; reports what happened. */
export async function revokeToken(params: RevokeRequest): Promise<RevokeResult> {
  const endpoint = params.endpoints.revocationEndpoint;
  if (endpoint === undefined || endpoint === '') {
    return {
      revoked: false,
      error: configurationError('NoRevocationEndpoint', 'provider has no revocation endpoint configured'),
    };
  }
  const exchange: Exchange = {};
  try {
    if (params.token === '') throw configurationError('MissingCredential', 'token to revoke is empty');
    const config = await endpointConfiguration(params, endpoint, 'revocation_endpoint', exchange);
    const parameters: Record<string, string> = {};
    if (params.tokenTypeHint !== undefined) parameters.token_type_hint = params.tokenTypeHint;
    await tokenRevocation(config, params.token, parameters);
    return { revoked: true };
  } catch (err) {
    // Revocation consumes nothing the operator still needs: a lost answer is only transient.
    return {
      revoked: false,
      error: failureFrom(err, exchange, {
        preset: params.preset,
        grant: 'client_credentials',
        redact: secretsOf(params),
        nowMs: params.nowMs,
      }),
    };
  }
}

/**
 * An openid-client Configuration for one call to one of the provider's endpoints: checked against
 * the policy, time- and size-capped, with the client's authentication. Only a token-endpoint answer
 * is read as a token response.
 */
async function endpointConfiguration(
  params: Pick<
    TokenRequest,
    | 'endpoints'
    | 'clientID'
    | 'clientSecret'
    | 'authMethod'
    | 'policy'
    | 'nowMs'
    | 'fetch'
    | 'resolve'
    | 'timeoutMs'
    | 'maxResponseBytes'
    | 'onRequest'
  >,
  endpoint: string,
  metadataKey: 'token_endpoint' | 'revocation_endpoint' | 'introspection_endpoint',
  exchange: Exchange,
): Promise<Configuration> {
  const auth = clientAuth(params.authMethod, params.clientSecret);
  const checked = await checkEndpoint(endpoint, params.policy, params.resolve);
  const timeoutMs = params.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const fetchFn = guardedFetch(
    {
      host: checked.url.host,
      fetch: params.fetch ?? fetch,
      timeoutMs,
      maxBytes: params.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      onRequest: params.onRequest,
      tokenResponse: metadataKey === 'token_endpoint',
      nowMs: params.nowMs,
    },
    exchange,
  );
  const server: ServerMetadata = {
    issuer: params.endpoints.issuer ?? checked.url.origin,
    // openid-client needs a token endpoint in the metadata even when another endpoint is called.
    token_endpoint: params.endpoints.tokenEndpoint,
    [metadataKey]: checked.url.href,
  };
  return buildConfiguration(server, params.clientID, auth, params.policy, fetchFn, timeoutMs);
}

export type IntrospectRequest = Omit<RevokeRequest, 'tokenTypeHint'> & {
  tokenTypeHint?: 'refresh_token' | 'access_token';
};

/**
 * RFC 7662 introspection, to settle whether a refresh token whose refresh answer was lost is still
 * usable. Never throws: 'unknown' when the provider has no introspection endpoint or does not
 * answer clearly, so the caller falls back to assuming the worst.
 */
export async function introspectToken(params: IntrospectRequest): Promise<'active' | 'inactive' | 'unknown'> {
  const endpoint = params.endpoints.introspectionEndpoint;
  if (endpoint === undefined || endpoint === '' || params.token === '') return 'unknown';
  const exchange: Exchange = {};
  try {
    const config = await endpointConfiguration(params, endpoint, 'introspection_endpoint', exchange);
    const result = await tokenIntrospection(config, params.token, {
      token_type_hint: params.tokenTypeHint ?? 'refresh_token',
    });
    return result.active ? 'active' : 'inactive';
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------
// Endpoint resolution and discovery

export interface EndpointOptions extends HttpOptions {
  /** Concur: the geolocation returned by the provider; takes precedence over region and tokenURL. */
  geolocation?: string;
  /** How long a discovery document is reused. Default 1 h. */
  discoveryTtlMs?: number;
  /** For the discovery cache. Default Date.now(). */
  nowMs?: number;
}

interface DiscoveredMetadata {
  issuer: string;
  tokenEndpoint?: string;
  authorizationEndpoint?: string;
  revocationEndpoint?: string;
  introspectionEndpoint?: string;
}

const discoveryCache = new Map<string, { expiresAtMs: number; result: Promise<DiscoveredMetadata> }>();

/** Forget cached discovery documents (tests; configuration changes). */
export function clearDiscoveryCache(): void {
  discoveryCache.clear();
}

function discoveryFailure(err: unknown, exchange: Exchange, host: string, nowMs: number): TokenError {
  const refused = exchange.refused ?? findTokenError(err);
  if (refused !== undefined) return refused;
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
      preset: undefined,
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

async function discover(
  issuerURL: string,
  policy: EndpointPolicy,
  options: EndpointOptions,
  nowMs: number,
): Promise<DiscoveredMetadata> {
  const checked = await checkEndpoint(issuerURL, policy, options.resolve);
  const exchange: Exchange = {};
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const fetchFn = guardedFetch(
    {
      host: checked.url.host,
      fetch: options.fetch ?? fetch,
      timeoutMs,
      maxBytes: options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      onRequest: options.onRequest,
      tokenResponse: false,
      nowMs,
    },
    exchange,
  );
  try {
    const config = await discovery(checked.url, 'oauth-token-operator', undefined, undefined, {
      [customFetch]: fetchFn,
      timeout: Math.ceil(timeoutMs / 1000) + 1,
      // eslint-disable-next-line @typescript-eslint/no-deprecated
      ...(policy.allowInsecureHttp ? { execute: [allowInsecureRequests] } : {}),
    });
    const metadata = config.serverMetadata();
    const found: DiscoveredMetadata = { issuer: metadata.issuer };
    if (typeof metadata.token_endpoint === 'string') found.tokenEndpoint = metadata.token_endpoint;
    if (typeof metadata.authorization_endpoint === 'string') {
      found.authorizationEndpoint = metadata.authorization_endpoint;
    }
    if (typeof metadata.revocation_endpoint === 'string')
      found.revocationEndpoint = metadata.revocation_endpoint;
    if (typeof metadata.introspection_endpoint === 'string')
      found.introspectionEndpoint = metadata.introspection_endpoint;
    return found;
  } catch (err) {
    throw discoveryFailure(err, exchange, checked.hostname, nowMs);
  }
}

/** Discovery with a per-issuer cache (concurrent callers share one request; failures are not cached). */
function cachedDiscovery(
  issuerURL: string,
  policy: EndpointPolicy,
  options: EndpointOptions,
): Promise<DiscoveredMetadata> {
  const nowMs = options.nowMs ?? Date.now();
  const key = JSON.stringify([
    issuerURL,
    policy.allowInsecureHttp,
    policy.allowPrivateNetworks,
    policy.allowedHosts,
  ]);
  const hit = discoveryCache.get(key);
  if (hit !== undefined && hit.expiresAtMs > nowMs) return hit.result;
  for (const [k, entry] of discoveryCache) {
    if (entry.expiresAtMs <= nowMs || discoveryCache.size >= DISCOVERY_CACHE_MAX_ENTRIES)
      discoveryCache.delete(k);
    else break;
  }
  const result = discover(issuerURL, policy, options, nowMs);
  discoveryCache.set(key, {
    expiresAtMs: nowMs + (options.discoveryTtlMs ?? DEFAULT_DISCOVERY_TTL_MS),
    result,
  });
  result.catch(() => {
    if (discoveryCache.get(key)?.result === result) discoveryCache.delete(key);
  });
  return result;
}

/**
 * The endpoints of a connection. Token endpoint precedence: a Concur geolocation returned by the
 * provider, then provider.tokenURL, then the discovered one (provider.issuerURL), then the preset's
 * regional URL. When the token endpoint does not depend on discovery, a failed discovery only
 * leaves the authorization and revocation endpoints to the explicit or preset values.
 */
export async function resolveEndpoints(
  provider: Provider,
  preset: PresetDefaults,
  policy: EndpointPolicy,
  options: EndpointOptions = {},
): Promise<ResolvedEndpoints> {
  if (preset.protocol !== 'oauth2') {
    throw configurationError(
      'UnsupportedProtocol',
      `preset ${preset.preset} is not OAuth2; it needs its own adapter`,
    );
  }
  let geolocationURL: string | undefined;
  if (preset.preset === 'concur' && options.geolocation !== undefined) {
    const origin = normaliseGeolocation(options.geolocation);
    if (origin === undefined)
      throw configurationError('InvalidGeolocation', 'stored Concur geolocation is not a URL');
    geolocationURL = concurTokenURL(origin);
  }
  const explicitToken = geolocationURL ?? nonEmpty(provider.tokenURL);
  const issuerURL = nonEmpty(provider.issuerURL);
  let discovered: DiscoveredMetadata | undefined;
  if (issuerURL !== undefined) {
    try {
      discovered = await cachedDiscovery(issuerURL, policy, options);
    } catch (err) {
      // A refused issuer is always reported; other discovery failures only when the token endpoint needs it.
      if (explicitToken === undefined || (err instanceof TokenError && err.code === 'insecure_endpoint'))
        throw err;
    }
  }
  const tokenEndpoint = explicitToken ?? discovered?.tokenEndpoint ?? preset.tokenURL;
  if (tokenEndpoint === undefined) {
    throw configurationError(
      'MissingTokenEndpoint',
      issuerURL !== undefined
        ? 'the discovery document names no token_endpoint; set provider.tokenURL'
        : `preset ${preset.preset} has no token endpoint; set provider.issuerURL or provider.tokenURL`,
    );
  }
  const endpoints: ResolvedEndpoints = { tokenEndpoint };
  const authorizationEndpoint =
    nonEmpty(provider.authorizationURL) ?? discovered?.authorizationEndpoint ?? preset.authorizationURL;
  if (authorizationEndpoint !== undefined) endpoints.authorizationEndpoint = authorizationEndpoint;
  const revocationEndpoint =
    nonEmpty(provider.revocationURL) ?? discovered?.revocationEndpoint ?? preset.revocationURL;
  if (revocationEndpoint !== undefined) endpoints.revocationEndpoint = revocationEndpoint;
  if (discovered?.introspectionEndpoint !== undefined) {
    endpoints.introspectionEndpoint = discovered.introspectionEndpoint;
  }
  if (discovered !== undefined) endpoints.issuer = discovered.issuer;
  return endpoints;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
