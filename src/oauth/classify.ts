// Classifies a failed token-endpoint exchange into what the controller must do about it. Pure: no
// I/O, no clock (the caller passes nowMs). The provider behaviours behind each rule are described,
// with their public sources, in docs/providers.md. Provider strings that cannot be mistaken for
// anything else (Exact's "Old refresh token used", the `Reason: TooEarlyToRefreshTokens` header,
// Keycloak's invalid_grant descriptions) are recognised whatever the provider, while Concur's
// numeric codes are read only in the 'concur' error dialect, because a numeric `code` field means
// nothing in general.
import { sanitizeDescription, sanitizeErrorCode, TokenError, type TokenFailure } from './errors.ts';
import type { ErrorDialect, TokenGrantType } from './model.ts';

/**
 * How a request failed below HTTP.
 * - connection: nothing was sent (refused, DNS, TLS handshake, connect timeout).
 * - timeout: the total time cap expired once the request may have been sent.
 * - reset: the connection broke after it was established; the request may have been sent.
 * - lost-response: the response started but could not be read to the end.
 */
export type NetworkFailure = 'timeout' | 'connection' | 'reset' | 'lost-response';

export interface TokenFailureInput {
  /** Default 'rfc6749'. */
  errorDialect?: ErrorDialect;
  httpStatus?: number;
  /** Response headers; names are matched case-insensitively. */
  headers?: Record<string, string>;
  /** The parsed JSON body, or the raw text. */
  body?: unknown;
  networkError?: NetworkFailure;
  /** The endpoint's host: a network failure's message names it (the status then says which one). */
  host?: string;
  /** The response exceeded the size cap and was abandoned unread. */
  bodyTooLarge?: boolean;
  /**
   * The grant that was attempted. refresh_token and authorization_code consume a credential, so an
   * answer lost after sending leaves them in doubt; for the others a lost answer is only transient.
   * Default refresh_token (the conservative choice).
   */
  grant?: TokenGrantType;
  /** Values that must never reach a message even if the provider echoes them (secrets, tokens). */
  redact?: readonly string[];
  nowMs: number;
}

/** Refresh-token and authorization-code grants consume what they send. */
export function consumesCredential(grant: TokenGrantType): boolean {
  return grant === 'refresh_token' || grant === 'authorization_code';
}

/** Stable summary per reason; the public message starts with it. */
const SUMMARY: Record<string, string> = {
  ConnectionFailed: 'could not connect to the token endpoint',
  Timeout: 'token endpoint did not answer in time',
  ConnectionReset: 'connection to the token endpoint broke before an answer arrived',
  ResponseLost: 'token request was sent but its answer was lost; the provider may have rotated the token',
  ResponseTooLarge: 'token endpoint response exceeded the size limit',
  MalformedResponse: 'token endpoint answered success with a body that is not a usable token response',
  ProviderUnavailable: 'token endpoint unavailable',
  RateLimited: 'token endpoint rate limit reached',
  TooEarly: 'provider refuses a new token this soon after the previous refresh',
  Relocated: 'user belongs to another data center; retry at the returned geolocation',
  RelocatedWithoutGeolocation: 'provider says the user belongs to another data center but named none',
  RefreshTokenReused: 'refresh token was rejected as already used (chain broken)',
  RefreshTokenExpired: 'refresh token has expired (chain broken)',
  RefreshTokenRevoked: 'refresh token has been revoked (chain broken)',
  RefreshTokenInvalid: 'refresh token was rejected as invalid or expired (chain broken)',
  RefreshTokenRejected: 'refresh token was rejected (chain broken)',
  ChainInvalid: 'refresh token chain is no longer valid (chain broken)',
  SessionExpired: 'the session behind the refresh token has ended (chain broken)',
  AuthorizationCodeRejected: 'authorization code was rejected',
  InvalidCredentials: 'provider rejected the username or password',
  AccountDisabled: 'user account is disabled',
  AccountLocked: 'user account is locked',
  InvalidClient: 'provider rejected the client credentials',
  UnauthorizedClient: 'client is not authorised for this grant',
  NotAllowed: 'provider does not allow this for the user or client (for example offline tokens)',
  InvalidScope: 'provider rejected the requested scope',
  UnsupportedGrantType: 'provider does not support this grant type',
  RefreshTokenMissing: 'provider says the refresh token is missing from the request',
  RefreshNotAllowed: 'refresh is not allowed for this application',
  InvalidRequest: 'provider rejected the token request as invalid',
  InvalidGrant: 'provider rejected the grant',
  AccessDenied: 'provider denied access',
  Forbidden: 'provider refused access (HTTP 403)',
  EndpointNotFound: 'token endpoint not found',
  UnexpectedRedirect: 'token endpoint answered with a redirect; redirects are not followed on token calls',
  UnexpectedResponse: 'token endpoint answered with an unexpected status',
};

interface ParsedBody {
  object: Record<string, unknown> | undefined;
  oauthError: string | undefined;
  rawError: string | undefined;
  rawDescription: string | undefined;
  concurCode: number | undefined;
  geolocation: string | undefined;
}

function parseBody(body: unknown): ParsedBody {
  let value = body;
  if (typeof value === 'string') {
    const trimmed = value.trim();
    if (trimmed.startsWith('{')) {
      try {
        value = JSON.parse(trimmed) as unknown;
      } catch {
        value = undefined;
      }
    } else {
      value = undefined;
    }
  }
  const object =
    typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  const rawError = typeof object?.error === 'string' ? object.error : undefined;
  const rawDescription = typeof object?.error_description === 'string' ? object.error_description : undefined;
  const code = object?.code;
  const concurCode =
    typeof code === 'number' && Number.isInteger(code)
      ? code
      : typeof code === 'string' && /^\d{1,4}$/.test(code.trim())
        ? Number(code.trim())
        : undefined;
  return {
    object,
    oauthError: sanitizeErrorCode(rawError),
    rawError,
    rawDescription,
    concurCode,
    geolocation: normaliseGeolocation(object?.geolocation),
  };
}

/** A Concur geolocation as an origin (https://us.api.concursolutions.com), or undefined. */
export function normaliseGeolocation(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  try {
    const url = new URL(value.trim());
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
    if (url.username !== '' || url.password !== '') return undefined;
    return url.origin;
  } catch {
    return undefined;
  }
}

function lowerCaseHeaders(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) out[name.toLowerCase()] = value;
  return out;
}

/** Retry-After as delta-seconds or an HTTP-date; undefined when absent, unparseable or past. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) {
    const ms = Number(trimmed) * 1000;
    return ms > 0 ? ms : undefined;
  }
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return at > nowMs ? at - nowMs : undefined;
}

/**
 * A rate-limit reset header. Exact Online sends epoch milliseconds; other APIs send epoch seconds
 * (GitHub) or delta seconds, told apart by magnitude.
 */
export function parseRateLimitReset(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined || !/^\d+(\.\d+)?$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  let at: number;
  if (n >= 1e12) at = n;
  else if (n >= 1e9) at = n * 1000;
  else at = nowMs + n * 1000;
  return at > nowMs ? at - nowMs : undefined;
}

/** How long a rate limit asks to wait: Retry-After, else the reset of the exhausted window. Lower-case names. */
export function retryAfterFrom(headers: Record<string, string>, nowMs: number): number | undefined {
  const retryAfter = parseRetryAfter(headers['retry-after'], nowMs);
  if (retryAfter !== undefined) return retryAfter;
  // Exact: the minutely window resets first; the daily one only when it is the exhausted one.
  if (headers['x-ratelimit-minutely-remaining']?.trim() === '0') {
    const minutely = parseRateLimitReset(headers['x-ratelimit-minutely-reset'], nowMs);
    if (minutely !== undefined) return minutely;
  }
  return parseRateLimitReset(headers['x-ratelimit-reset'], nowMs);
}

type Verdict = Pick<TokenFailure, 'code' | 'reason' | 'retryAfterMs' | 'notBeforeMs' | 'geolocation'>;

/** Concur's numeric error codes (code 16 is handled apart: it needs the returned geolocation). */
const CONCUR_CODES: Readonly<Record<number, Verdict>> = {
  5: { code: 'configuration', reason: 'InvalidCredentials' },
  10: { code: 'configuration', reason: 'AccountDisabled' },
  14: { code: 'configuration', reason: 'AccountLocked' },
  54: { code: 'configuration', reason: 'InvalidScope' },
  106: { code: 'configuration', reason: 'RefreshTokenMissing' },
  107: { code: 'configuration', reason: 'RefreshNotAllowed' },
  108: { code: 'chain_broken', reason: 'RefreshTokenInvalid' },
};

function concurVerdict(code: number, parsed: ParsedBody): Verdict | undefined {
  if (code === 16) {
    return parsed.geolocation !== undefined
      ? { code: 'relocate', reason: 'Relocated', geolocation: parsed.geolocation }
      : { code: 'configuration', reason: 'RelocatedWithoutGeolocation' };
  }
  const verdict = Object.hasOwn(CONCUR_CODES, code) ? CONCUR_CODES[code] : undefined;
  return verdict !== undefined ? { ...verdict } : undefined;
}

/** invalid_grant on a refresh: which way the chain broke, from the provider's description. */
function refreshRejectionReason(description: string): string {
  if (
    /old refresh token used|stale token|refresh token reuse|reuse exceeded|\breused?\b/i.test(description)
  ) {
    return 'RefreshTokenReused';
  }
  if (/chain\s*id/i.test(description)) return 'ChainInvalid';
  if (
    /session not active|session not found|session (has )?expired|session (is )?invalid/i.test(description)
  ) {
    return 'SessionExpired';
  }
  if (/revoked/i.test(description)) return 'RefreshTokenRevoked';
  if (/expired|not active/i.test(description)) return 'RefreshTokenExpired';
  if (/invalid|unknown|not found|bad/i.test(description)) return 'RefreshTokenInvalid';
  return 'RefreshTokenRejected';
}

const CREDENTIALS_REJECTED =
  /invalid user credentials|invalid username or password|wrong (username|password)|incorrect (username|password|credentials)/i;
const ACCOUNT_DISABLED = /account (is )?disabled|user (is )?disabled|account is not fully set up/i;
const ACCOUNT_LOCKED = /account (is )?(temporarily )?locked|user (is )?(temporarily )?locked/i;

/** RFC 6749 §5.2 error codes whose meaning depends on nothing else. */
const PLAIN_OAUTH_ERRORS: Readonly<Record<string, Verdict>> = {
  invalid_client: { code: 'configuration', reason: 'InvalidClient' },
  invalid_scope: { code: 'configuration', reason: 'InvalidScope' },
  unsupported_grant_type: { code: 'configuration', reason: 'UnsupportedGrantType' },
  server_error: { code: 'transient', reason: 'ProviderUnavailable' },
  temporarily_unavailable: { code: 'transient', reason: 'ProviderUnavailable' },
  slow_down: { code: 'transient', reason: 'RateLimited' },
};

function oauthVerdict(
  error: string,
  description: string,
  status: number,
  grant: TokenGrantType,
): Verdict | undefined {
  switch (error) {
    case 'unauthorized_client':
      // Exact Online answers a reused refresh token with 401 (or 400) unauthorized_client.
      if (/old refresh token used/i.test(description))
        return { code: 'chain_broken', reason: 'RefreshTokenReused' };
      // Keycloak answers a wrong client secret with 401 unauthorized_client "Invalid client or
      // Invalid client credentials": the credentials are wrong, not the client's permissions.
      if (/invalid client/i.test(description)) return { code: 'configuration', reason: 'InvalidClient' };
      return { code: 'configuration', reason: 'UnauthorizedClient' };
    case 'not_allowed':
      // Keycloak: "Offline tokens not allowed for the user or client" (a realm or client setting).
      return { code: 'configuration', reason: 'NotAllowed' };
    case 'invalid_request':
      // Exact Online: "The refresh token expired at <date> and it is now <date>."
      if (/refresh token expired/i.test(description) && grant === 'refresh_token') {
        return { code: 'chain_broken', reason: 'RefreshTokenExpired' };
      }
      return { code: 'configuration', reason: 'InvalidRequest' };
    case 'invalid_grant':
      if (CREDENTIALS_REJECTED.test(description))
        return { code: 'configuration', reason: 'InvalidCredentials' };
      if (ACCOUNT_DISABLED.test(description)) return { code: 'configuration', reason: 'AccountDisabled' };
      if (ACCOUNT_LOCKED.test(description)) return { code: 'configuration', reason: 'AccountLocked' };
      switch (grant) {
        case 'refresh_token':
          // Any status: Keycloak 400, Auth0 403 "Unknown or invalid refresh token.", Exact 400 chainId.
          return { code: 'chain_broken', reason: refreshRejectionReason(description) };
        case 'authorization_code':
          return { code: 'chain_broken', reason: 'AuthorizationCodeRejected' };
        case 'password':
          // Stop after a wrong-password answer instead of locking the account.
          return { code: 'configuration', reason: 'InvalidCredentials' };
        case 'client_credentials':
          return { code: 'configuration', reason: 'InvalidGrant' };
      }
      return undefined;
    case 'access_denied':
      return { code: 'configuration', reason: status === 403 ? 'Forbidden' : 'AccessDenied' };
    default: {
      const verdict = Object.hasOwn(PLAIN_OAUTH_ERRORS, error) ? PLAIN_OAUTH_ERRORS[error] : undefined;
      return verdict !== undefined ? { ...verdict } : undefined;
    }
  }
}

function statusVerdict(status: number): Verdict {
  if (status === 401) return { code: 'configuration', reason: 'InvalidClient' };
  if (status === 403) return { code: 'configuration', reason: 'Forbidden' };
  if (status === 404 || status === 405 || status === 410)
    return { code: 'configuration', reason: 'EndpointNotFound' };
  if (status >= 400 && status < 500) return { code: 'configuration', reason: 'UnexpectedResponse' };
  return { code: 'transient', reason: 'UnexpectedResponse' };
}

function networkVerdict(failure: NetworkFailure, grant: TokenGrantType): Verdict {
  if (failure === 'connection') return { code: 'transient', reason: 'ConnectionFailed' };
  // The request may have reached the provider: a consumed refresh token or code may have been
  // exchanged for a successor we never saw.
  if (consumesCredential(grant)) return { code: 'in_doubt', reason: 'ResponseLost' };
  return { code: 'transient', reason: failure === 'timeout' ? 'Timeout' : 'ConnectionReset' };
}

function hasString(object: Record<string, unknown> | undefined, key: string): boolean {
  const value = object?.[key];
  return typeof value === 'string' && value !== '';
}

export function classifyTokenFailure(input: TokenFailureInput): TokenFailure {
  const grant = input.grant ?? 'refresh_token';
  const headers = lowerCaseHeaders(input.headers);
  const parsed = parseBody(input.body);
  const description = sanitizeDescription(parsed.rawDescription, input.redact);
  const rawDescription = parsed.rawDescription ?? '';
  let status = input.httpStatus;

  const finish = (verdict: Verdict): TokenFailure => {
    const failure: TokenFailure = { ...verdict, message: '' };
    if (input.httpStatus !== undefined) failure.httpStatus = input.httpStatus;
    if (parsed.oauthError !== undefined) failure.oauthError = parsed.oauthError;
    if (description !== undefined) failure.description = description;
    // Concur documents its errors by number: the message names it, so a reader can look it up.
    const concurCode = input.errorDialect === 'concur' ? parsed.concurCode : undefined;
    failure.message = buildMessage(failure, concurCode);
    return failure;
  };

  if (input.bodyTooLarge === true) {
    // A success status may have rotated the token even though we could not read the new one.
    const success = status !== undefined && status >= 200 && status < 300;
    return finish({
      code: success && consumesCredential(grant) ? 'in_doubt' : 'transient',
      reason: 'ResponseTooLarge',
    });
  }
  // A body lost after a non-2xx status line: the provider already said no, so judge the status.
  const failedStatus = status !== undefined && (status < 200 || status >= 300);
  if (input.networkError !== undefined && !failedStatus) {
    const failure = finish(networkVerdict(input.networkError, grant));
    if (input.host !== undefined) failure.message = `${failure.message} (host ${input.host})`;
    return failure;
  }
  if (status === undefined) return finish({ code: 'transient', reason: 'ProviderUnavailable' });

  if (status >= 200 && status < 300) {
    if (parsed.rawError !== undefined && !hasString(parsed.object, 'access_token')) {
      // A provider that wraps its error in a success status issued nothing: judge the error.
      status = 400;
    } else {
      // Decided deliberately: a 2xx whose body is unparseable, lacks access_token or fails
      // validation was still processed by the provider, which may have rotated the refresh token
      // (or consumed the code) and put the successor in the body we cannot use. Retrying with the
      // old token would then be a reuse, so this is 'in_doubt', not plain transient. Grants that
      // consume nothing simply retry.
      return finish({
        code: consumesCredential(grant) ? 'in_doubt' : 'transient',
        reason: 'MalformedResponse',
      });
    }
  }

  if (status >= 300 && status < 400) return finish({ code: 'configuration', reason: 'UnexpectedRedirect' });

  // Exact Online's floor: 400 access_denied "Rate limit exceeded: access_token not expired" with
  // `Reason: TooEarlyToRefreshTokens`. The remaining part of the 570 s is not stated, so notBeforeMs
  // stays undefined (the caller waits for its minimum interval) unless Retry-After says more.
  const tooEarlyHeader = /TooEarlyToRefreshTokens/i.test(headers.reason ?? '');
  const tooEarlyBody =
    parsed.rawError === 'access_denied' && /access_token not expired/i.test(rawDescription);
  if (tooEarlyHeader || tooEarlyBody) {
    const wait = parseRetryAfter(headers['retry-after'], input.nowMs);
    return finish({
      code: 'too_early',
      reason: 'TooEarly',
      ...(wait !== undefined ? { notBeforeMs: input.nowMs + wait, retryAfterMs: wait } : {}),
    });
  }

  if (input.errorDialect === 'concur' && parsed.concurCode !== undefined) {
    const verdict = concurVerdict(parsed.concurCode, parsed);
    if (verdict !== undefined) return finish(verdict);
  }

  if (status === 429) {
    const wait = retryAfterFrom(headers, input.nowMs);
    return finish({
      code: 'transient',
      reason: 'RateLimited',
      ...(wait !== undefined ? { retryAfterMs: wait } : {}),
    });
  }
  if (status >= 500) {
    const wait = retryAfterFrom(headers, input.nowMs);
    return finish({
      code: 'transient',
      reason: 'ProviderUnavailable',
      ...(wait !== undefined ? { retryAfterMs: wait } : {}),
    });
  }
  if (status === 408 || status === 425) return finish({ code: 'transient', reason: 'Timeout' });

  if (parsed.rawError !== undefined) {
    const verdict = oauthVerdict(parsed.rawError, rawDescription, status, grant);
    if (verdict !== undefined) {
      if (verdict.code === 'transient') {
        const wait = retryAfterFrom(headers, input.nowMs);
        if (wait !== undefined) verdict.retryAfterMs = wait;
      }
      return finish(verdict);
    }
  }
  return finish(statusVerdict(status));
}

function buildMessage(failure: TokenFailure, concurCode?: number): string {
  const summary = SUMMARY[failure.reason] ?? 'token request failed';
  const details: string[] = [];
  if (failure.httpStatus !== undefined) details.push(`HTTP ${failure.httpStatus}`);
  if (concurCode !== undefined) details.push(`code ${concurCode}`);
  if (failure.oauthError !== undefined) {
    details.push(
      failure.description !== undefined
        ? `error=${failure.oauthError}: ${failure.description}`
        : `error=${failure.oauthError}`,
    );
  } else if (failure.description !== undefined) {
    details.push(failure.description);
  }
  if (failure.retryAfterMs !== undefined)
    details.push(`retry after ${Math.ceil(failure.retryAfterMs / 1000)}s`);
  if (failure.geolocation !== undefined) details.push(`geolocation ${failure.geolocation}`);
  return details.length > 0 ? `${summary} (${details.join(', ')})` : summary;
}

/** Classify and build the TokenError in one step. */
export function tokenErrorFor(input: TokenFailureInput): TokenError {
  return new TokenError(classifyTokenFailure(input));
}
