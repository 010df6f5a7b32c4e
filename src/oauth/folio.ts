// FOLIO's login, refresh and logout, which are not OAuth 2.0: a password login and a refresh whose
// tokens travel only in cookies. From the source of mod-login (LoginAPI.java, TokenCookieParser.java,
// https://github.com/folio-org/mod-login) and mod-authtoken (RefreshTokenStore.java,
// https://github.com/folio-org/mod-authtoken):
// - POST <gateway>/authn/login-with-expiry, JSON {"username","password"}, X-Okapi-Tenant → 201 with
//   Set-Cookie folioAccessToken (Path=<okapi path>/) and folioRefreshToken (Path=<okapi path>/authn),
//   each with Max-Age, and a body {"accessTokenExpiration","refreshTokenExpiration"} (instants).
//   Any refusal of the credentials (wrong password, unknown, inactive or blocked user) is the same
//   422 wrong.username.or.wrong.password.or.account.blocked.
// - POST <gateway>/authn/refresh with Cookie: folioRefreshToken=…, X-Okapi-Tenant → 201, same shape.
//   mod-login turns every 4xx of mod-authtoken (token used before, expired, unknown) into one 422
//   token.refresh.unprocessable; a missing or duplicated cookie is 400 token.parse.failure.
// - A refresh token presented a second time revokes every refresh token of that user.
// - POST <gateway>/authn/logout with the same cookie (mod-login 7.10.0 and later) → 204: mod-authtoken
//   marks that one refresh token revoked (RefreshTokenStore.revokeToken, an unconditional update by
//   the token's id), so a token already used, revoked or expired is answered 204 as well, and no other
//   session of the user is touched. A token mod-authtoken cannot read, or a failure of mod-authtoken,
//   is 422 token.logout.unprocessable. Without a Cookie header the same endpoint logs out EVERY
//   session of the user whose access token came with the request (as /authn/logout-all does): the
//   logout therefore always carries the refresh cookie and never an access token.
//
// The refresh endpoint is the chain's token endpoint; the login and the logout are its siblings under
// /authn/. All three go through the one Transport. Failures leave as the TokenError classes the OAuth
// grants use, so the controller handles a FOLIO chain exactly like any other: a refused refresh token
// is 'chain_broken', a refused password 'configuration' InvalidCredentials, outages 'transient', and
// a refresh whose answer was lost 'in_doubt'.
import { Cookie } from 'tough-cookie';
import { classifyTokenFailure, type NetworkFailure } from './classify.ts';
import { sanitizeDescription, sanitizeErrorCode, TokenError, type TokenFailure } from './errors.ts';
import { configurationError, headersToRecord } from './exchange.ts';
import { checkTokenSizes, secretsOf } from './grants.ts';
import type { ClientConfig, ResolvedEndpoints, TokenGrant, TokenSet } from './model.ts';
import {
  TransportFailure,
  type Transport,
  type TransportRequest,
  type TransportResponse,
} from './transport.ts';

export const FOLIO_ACCESS_COOKIE = 'folioAccessToken';
export const FOLIO_REFRESH_COOKIE = 'folioRefreshToken';
export const FOLIO_TENANT_HEADER = 'x-okapi-tenant';

/** The login endpoint: the refresh endpoint's sibling (both under the gateway's /authn/). */
export function folioLoginURL(refreshEndpoint: string): string {
  return new URL('login-with-expiry', refreshEndpoint).href;
}

/**
 * The logout endpoint, the refresh endpoint's other sibling. Never a revocation URL from the spec:
 * FOLIO's refresh token goes only to mod-login's own paths.
 */
export function folioLogoutURL(refreshEndpoint: string): string {
  return new URL('logout', refreshEndpoint).href;
}

/** The instants the body states, in epoch milliseconds, where they parse. */
function statedExpirations(body: string): { access?: number; refresh?: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return {};
  }
  if (typeof parsed !== 'object' || parsed === null) return {};
  const record = parsed as Record<string, unknown>;
  const at = (value: unknown): number | undefined => {
    const ms = typeof value === 'string' ? Date.parse(value) : NaN;
    return Number.isFinite(ms) ? ms : undefined;
  };
  const out: { access?: number; refresh?: number } = {};
  const access = at(record.accessTokenExpiration);
  if (access !== undefined) out.access = access;
  const refresh = at(record.refreshTokenExpiration);
  if (refresh !== undefined) out.refresh = refresh;
  return out;
}

/**
 * Seconds a cookie's token lives: its Max-Age, which mod-login computes from its own clock and which
 * is therefore immune to clock skew between FOLIO and the operator; else the instant the body states
 * or the cookie's Expires, counted from nowMs.
 */
function lifetimeOf(cookie: Cookie, statedAtMs: number | undefined, nowMs: number): number | undefined {
  if (typeof cookie.maxAge === 'number' && Number.isFinite(cookie.maxAge) && cookie.maxAge > 0) {
    return cookie.maxAge;
  }
  const at = statedAtMs ?? (cookie.expires instanceof Date ? cookie.expires.getTime() : undefined);
  if (at === undefined || !Number.isFinite(at)) return undefined;
  const seconds = Math.floor((at - nowMs) / 1000);
  return seconds > 0 ? seconds : undefined;
}

/**
 * The tokens of a successful login or refresh, or undefined when the answer lacks either cookie
 * (then nothing usable came back). A later cookie of the same name wins, as in a browser. The token
 * type is Bearer: Okapi accepts the access token as `Authorization: Bearer`, as X-Okapi-Token or as
 * the folioAccessToken cookie (okapi-core TokenHeader.java, https://github.com/folio-org/okapi).
 */
export function folioTokensFrom(
  setCookies: readonly string[],
  body: string,
  nowMs: number,
): TokenSet | undefined {
  const cookies = new Map<string, Cookie>();
  for (const header of setCookies) {
    const cookie = Cookie.parse(header);
    if (cookie !== undefined) cookies.set(cookie.key, cookie);
  }
  const access = cookies.get(FOLIO_ACCESS_COOKIE);
  const refresh = cookies.get(FOLIO_REFRESH_COOKIE);
  if (access === undefined || refresh === undefined || access.value === '' || refresh.value === '') {
    return undefined;
  }
  const stated = statedExpirations(body);
  const tokens: TokenSet = { accessToken: access.value, tokenType: 'Bearer', refreshToken: refresh.value };
  const accessIn = lifetimeOf(access, stated.access, nowMs);
  if (accessIn !== undefined) tokens.expiresInSec = accessIn;
  const refreshIn = lifetimeOf(refresh, stated.refresh, nowMs);
  if (refreshIn !== undefined) tokens.refreshExpiresInSec = refreshIn;
  return tokens;
}

/** What was asked of FOLIO: a login, a refresh, or the logout of a refresh token. */
export type FolioCall = 'password' | 'refresh_token' | 'logout';

export interface FolioFailureInput {
  grant: FolioCall;
  httpStatus?: number;
  headers?: Record<string, string>;
  /** The body as text. */
  body?: string;
  networkError?: NetworkFailure;
  bodyTooLarge?: boolean;
  /** Values that must never reach a message even if FOLIO echoes them. */
  redact?: readonly string[];
  nowMs: number;
}

/** Stable summary per reason; the public message starts with it. */
const SUMMARY: Readonly<Record<string, string>> = {
  InvalidCredentials:
    'FOLIO rejected the login: a wrong username or password, or an inactive or blocked user (mod-login does not say which)',
  RefreshTokenRejected:
    'FOLIO refused the refresh token: used before, expired or revoked (chain broken; a second use of a refresh token revokes every refresh token of the user)',
  LogoutUnprocessable:
    'FOLIO could not log the refresh token out: mod-authtoken cannot read it (then it cannot be refreshed either) or failed (then it stays valid until it expires)',
  UnknownTenant: 'the FOLIO gateway does not know the tenant sent in X-Okapi-Tenant',
  InvalidRequest: 'FOLIO rejected the request as malformed',
  Unauthorized: 'the FOLIO gateway refused the request as unauthenticated',
  Forbidden: 'the FOLIO gateway refused access',
  EndpointNotFound:
    'the FOLIO gateway has no module for this path (check the base URL, and that mod-login is enabled for the tenant)',
  UnexpectedResponse: 'FOLIO answered with an unexpected status',
};

/** FOLIO's error body: RMB's {"errors":[{"message","code"}]} or a line of text (Okapi, mod-login's 400s). */
function folioError(body: string | undefined): { code?: string; message?: string } {
  if (body === undefined) return {};
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] } | null;
    const first = Array.isArray(parsed?.errors) ? parsed.errors[0] : undefined;
    return {
      ...(typeof first?.code === 'string' ? { code: first.code } : {}),
      ...(typeof first?.message === 'string' ? { message: first.message } : {}),
    };
  } catch {
    const text = body.trim().split('\n')[0]?.trim() ?? '';
    return text === '' ? {} : { message: text };
  }
}

/**
 * Classifies a failed FOLIO login, refresh or logout. Pure. What is not FOLIO's own dialect (no
 * answer, a lost answer, a 2xx without the cookies, a redirect, 408, 425, 429, 5xx) is judged as for
 * any token endpoint by classifyTokenFailure, from the status and headers only.
 */
export function classifyFolioFailure(input: FolioFailureInput): TokenFailure {
  const status = input.httpStatus;
  const generic =
    status === undefined ||
    input.networkError !== undefined ||
    input.bodyTooLarge === true ||
    status < 400 ||
    status >= 500 ||
    status === 408 ||
    status === 425 ||
    status === 429;
  if (generic) {
    // The body is left out: FOLIO's error bodies are not OAuth's, and a gateway's page means nothing.
    return classifyTokenFailure({
      // A logout consumes nothing the operator still needs: a lost answer is only transient.
      grant: input.grant === 'logout' ? 'client_credentials' : input.grant,
      nowMs: input.nowMs,
      headers: input.headers ?? {},
      ...(status !== undefined ? { httpStatus: status } : {}),
      ...(input.networkError !== undefined ? { networkError: input.networkError } : {}),
      ...(input.bodyTooLarge === true ? { bodyTooLarge: true } : {}),
      ...(input.redact !== undefined ? { redact: input.redact } : {}),
    });
  }
  const error = folioError(input.body);
  let verdict: Pick<TokenFailure, 'code' | 'reason'>;
  if (status === 422 && input.grant === 'logout') {
    // Not counted as revoked: the same 422 stands for a token mod-authtoken cannot read and for
    // mod-authtoken failing to record the revocation, and the operator cannot tell them apart.
    verdict = { code: 'transient', reason: 'LogoutUnprocessable' };
  } else if (status === 422) {
    verdict =
      input.grant === 'password'
        ? { code: 'configuration', reason: 'InvalidCredentials' }
        : { code: 'chain_broken', reason: 'RefreshTokenRejected' };
  } else if (status === 400 && /^No such Tenant\b/i.test(error.message ?? '')) {
    // Okapi's answer to an unknown X-Okapi-Tenant (ProxyService.java, message 10106).
    verdict = { code: 'configuration', reason: 'UnknownTenant' };
  } else if (status === 400) {
    verdict = { code: 'configuration', reason: 'InvalidRequest' };
  } else if (status === 401) {
    verdict = { code: 'configuration', reason: 'Unauthorized' };
  } else if (status === 403) {
    verdict = { code: 'configuration', reason: 'Forbidden' };
  } else if (status === 404 || status === 405 || status === 410) {
    verdict = { code: 'configuration', reason: 'EndpointNotFound' };
  } else {
    verdict = { code: 'configuration', reason: 'UnexpectedResponse' };
  }
  const failure: TokenFailure = { ...verdict, httpStatus: status, message: '' };
  const code = sanitizeErrorCode(error.code);
  if (code !== undefined) failure.oauthError = code;
  const description = sanitizeDescription(error.message, input.redact);
  if (description !== undefined) failure.description = description;
  const details = [`HTTP ${String(status)}`];
  if (code !== undefined)
    details.push(description !== undefined ? `error=${code}: ${description}` : `error=${code}`);
  else if (description !== undefined) details.push(description);
  failure.message = `${SUMMARY[verdict.reason] ?? 'FOLIO request failed'} (${details.join(', ')})`;
  return failure;
}

/** What a Transport failure tells the classifier. An abort may come after the request left. */
function transportInput(
  err: TransportFailure,
): Pick<FolioFailureInput, 'httpStatus' | 'headers' | 'networkError' | 'bodyTooLarge'> {
  return {
    ...(err.status !== undefined ? { httpStatus: err.status } : {}),
    ...(err.headers !== undefined ? { headers: headersToRecord(err.headers) } : {}),
    ...(err.kind === 'too-large'
      ? { bodyTooLarge: true }
      : { networkError: err.kind === 'aborted' ? 'reset' : err.kind }),
  };
}

function required(value: string, what: string): void {
  if (value === '') throw configurationError('MissingCredential', `${what} is empty`);
}

/** The headers every FOLIO request carries: the tenant routes it at the gateway. */
function baseHeaders(client: ClientConfig): Record<string, string> {
  const tenant = client.protocol?.kind === 'folio' ? client.protocol.tenant : '';
  if (tenant === '') throw configurationError('MissingTenant', 'the FOLIO tenant is not set');
  return { accept: 'application/json', 'user-agent': 'oauth-token-operator', [FOLIO_TENANT_HEADER]: tenant };
}

/**
 * The Cookie header of a refresh and of a logout: the refresh cookie alone. mod-login refuses a
 * request with two of either cookie, and an access token beside it would only widen what a logout
 * can do (see the file comment).
 */
function refreshCookie(refreshToken: string): string {
  required(refreshToken, 'refresh token');
  return `${FOLIO_REFRESH_COOKIE}=${refreshToken}`;
}

interface FolioExchange {
  grant: FolioCall;
  redact: readonly string[];
  nowMs: number;
}

/** One POST through the Transport; a failure below HTTP leaves as a classified TokenError. */
async function post(
  transport: Transport,
  request: Omit<TransportRequest, 'method'>,
  exchange: FolioExchange,
): Promise<{ answer: TransportResponse; text: string }> {
  let answer: TransportResponse;
  try {
    answer = await transport.request({ ...request, method: 'POST' });
  } catch (err) {
    if (err instanceof TransportFailure) {
      throw new TokenError(classifyFolioFailure({ ...exchange, ...transportInput(err) }));
    }
    throw err;
  }
  return { answer, text: new TextDecoder().decode(answer.body) };
}

/** The TokenError of an HTTP answer that is not the success asked for. */
function answerFailure(answer: TransportResponse, text: string, exchange: FolioExchange): TokenError {
  return new TokenError(
    classifyFolioFailure({
      ...exchange,
      httpStatus: answer.status,
      headers: headersToRecord(answer.headers),
      body: text,
    }),
  );
}

/**
 * One FOLIO login (grant 'password') or refresh (grant 'refresh_token') through the Transport.
 * Resolves to the token set; every failure is a TokenError.
 */
export async function requestFolioTokens(
  transport: Transport,
  client: ClientConfig,
  endpoints: ResolvedEndpoints,
  grant: TokenGrant,
  nowMs: number,
  signal?: AbortSignal,
): Promise<TokenSet> {
  const headers = baseHeaders(client);
  let url: string;
  let body: string | undefined;
  switch (grant.type) {
    case 'password':
      required(grant.username, 'username');
      required(grant.password, 'password');
      url = folioLoginURL(endpoints.tokenEndpoint);
      headers['content-type'] = 'application/json';
      body = JSON.stringify({ username: grant.username, password: grant.password });
      break;
    case 'refresh_token':
      url = endpoints.tokenEndpoint;
      headers.cookie = refreshCookie(grant.refreshToken);
      break;
    default:
      throw configurationError(
        'UnsupportedGrantType',
        `FOLIO has no ${grant.type} grant: it logs in with a password and rotates a refresh token`,
      );
  }
  const exchange = { grant: grant.type, redact: secretsOf(client, grant), nowMs };
  const { answer, text } = await post(
    transport,
    {
      purpose: 'token',
      url,
      headers,
      ...(body !== undefined ? { body } : {}),
      ...(signal !== undefined ? { signal } : {}),
    },
    exchange,
  );
  if (answer.status >= 200 && answer.status < 300) {
    const tokens = folioTokensFrom(answer.headers.getSetCookie(), text, nowMs);
    if (tokens !== undefined) {
      // After a refresh the presented token is used up (FOLIO rotates on every success); after a
      // login nothing was.
      checkTokenSizes(tokens, grant.type === 'refresh_token', 'FOLIO');
      return tokens;
    }
  }
  throw answerFailure(answer, text, exchange);
}

/**
 * Logs one refresh token out at FOLIO (POST /authn/logout with its cookie): that token is revoked,
 * every other session of the user is left alone. Resolves when FOLIO answered 2xx (204), which it
 * does also for a token already used, revoked or expired; every failure is a TokenError, and a lost
 * answer is only transient (a logout consumes nothing the operator still needs).
 */
export async function logoutFolioRefreshToken(
  transport: Transport,
  client: ClientConfig,
  endpoints: ResolvedEndpoints,
  refreshToken: string,
  nowMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const headers = baseHeaders(client);
  headers.cookie = refreshCookie(refreshToken);
  const exchange = { grant: 'logout' as const, redact: secretsOf(client, undefined, refreshToken), nowMs };
  const { answer, text } = await post(
    transport,
    {
      purpose: 'revocation',
      url: folioLogoutURL(endpoints.tokenEndpoint),
      headers,
      ...(signal !== undefined ? { signal } : {}),
    },
    exchange,
  );
  if (answer.status >= 200 && answer.status < 300) return;
  throw answerFailure(answer, text, exchange);
}
