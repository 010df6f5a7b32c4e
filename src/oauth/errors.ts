// The one error type that leaves the OAuth layer. Like openid-client / oidc-provider it separates a
// SAFE public message (fit for status conditions, Events and logs) from internal detail kept in
// typed fields. Upstream text reaches the message only as the OAuth `error` code plus a truncated,
// sanitised `error_description`; never a token, a secret, a password or a whole response body.
// A TokenError never carries a `cause`: library errors hold the parsed response body (tokens
// included) in their cause chain, and loggers serialise causes.

/** What the controller should do about a failure. */
export type TokenErrorCode =
  /** Network, 5xx, timeout, 429: back off and retry while the access token is still valid. */
  | 'transient'
  /** The provider refuses a refresh this soon (Exact's 570 s floor): reschedule to the allowed time. */
  | 'too_early'
  /** The user lives in another data center (Concur code 16): retry at `geolocation`. */
  | 'relocate'
  /** The refresh token was rejected as reused, stale, expired or revoked: recovery login or alert. */
  | 'chain_broken'
  /** Client or request misconfigured (invalid_client, 403, redirects, bad references): slow retry. */
  | 'configuration'
  /** The request was sent but its answer was lost: the provider may already have rotated the token. */
  | 'in_doubt'
  /** The endpoint URL is refused by the operator's endpoint policy; no request was made. */
  | 'insecure_endpoint';

export const TOKEN_ERROR_CODES: readonly TokenErrorCode[] = [
  'transient',
  'too_early',
  'relocate',
  'chain_broken',
  'configuration',
  'in_doubt',
  'insecure_endpoint',
];

/** A classified failure: what TokenError carries, and what the controller's failure kinds are built from. */
export interface TokenFailure {
  code: TokenErrorCode;
  /** CamelCase reason for the Kubernetes condition, for example 'RefreshTokenReused'. */
  reason: string;
  /** Public message; must already be safe (see sanitizeDescription). */
  message: string;
  httpStatus?: number;
  /** The OAuth `error` code, sanitised. */
  oauthError?: string;
  /** The sanitised, truncated `error_description`. */
  description?: string;
  retryAfterMs?: number;
  notBeforeMs?: number;
  /** Concur: the origin of the data center to retry at. */
  geolocation?: string;
}

export class TokenError extends Error {
  override readonly name = 'TokenError';
  readonly code: TokenErrorCode;
  readonly reason: string;
  readonly httpStatus: number | undefined;
  readonly oauthError: string | undefined;
  readonly description: string | undefined;
  readonly retryAfterMs: number | undefined;
  readonly notBeforeMs: number | undefined;
  readonly geolocation: string | undefined;

  constructor(init: TokenFailure) {
    super(init.message);
    this.code = init.code;
    this.reason = init.reason;
    this.httpStatus = init.httpStatus;
    this.oauthError = init.oauthError;
    this.description = init.description;
    this.retryAfterMs = init.retryAfterMs;
    this.notBeforeMs = init.notBeforeMs;
    this.geolocation = init.geolocation;
  }

  /** Only safe fields: what a structured logger gets when it serialises the error. */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      reason: this.reason,
      message: this.message,
      httpStatus: this.httpStatus,
      oauthError: this.oauthError,
      retryAfterMs: this.retryAfterMs,
      notBeforeMs: this.notBeforeMs,
      geolocation: this.geolocation,
    };
  }
}

export function isTokenError(value: unknown): value is TokenError {
  return value instanceof TokenError;
}

/** Longest description that reaches a message. */
export const MAX_DESCRIPTION_LENGTH = 200;

const REDACTED = '[redacted]';

/**
 * An OAuth `error` code as it may appear in a message: RFC 6749 codes are short ASCII words
 * (`invalid_grant`); anything else is replaced so that upstream text cannot smuggle data in.
 */
export function sanitizeErrorCode(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  return /^[A-Za-z0-9_.:-]{1,64}$/.test(trimmed) ? trimmed : 'unrecognised_error';
}

/**
 * Makes an upstream `error_description` fit for a public message: known secrets and anything
 * token-like (JWTs, long opaque strings, `key=value` credentials, Authorization values, URL query
 * strings, e-mail addresses) are removed, control characters flattened, and the result truncated
 * to 200 characters. Returns undefined when nothing useful is left.
 */
export function sanitizeDescription(value: unknown, secrets: readonly string[] = []): string | undefined {
  if (typeof value !== 'string') return undefined;
  // Known secrets are redacted before anything is cut: a cut through a secret would leave a prefix
  // that no longer matches it, and that prefix is part of the secret. The window is wide enough to
  // hold whole any secret that starts inside the bound.
  const forms = secrets
    .filter((secret) => secret.length >= 4)
    .flatMap((secret) => [...new Set([secret, encodeURIComponent(secret)])]);
  const bound = 4 * MAX_DESCRIPTION_LENGTH;
  // One character more than the bound, so that a cut shows as text longer than the bound.
  let text = value.slice(0, bound + 1 + Math.max(0, ...forms.map((form) => form.length)));
  for (const form of forms) text = text.split(form).join(REDACTED);
  // Bound the work before running regular expressions over hostile input. A run the cut goes
  // through is dropped whole: its tail is gone, so the patterns below could no longer recognise a
  // token in what is left of it.
  if (text.length > bound) text = text.slice(0, bound).replace(/\S+$/, '');
  text = text
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ')
    // URLs keep only their origin: paths and query strings may carry codes and tokens.
    .replace(/\bhttps?:\/\/[^\s"'<>]+/gi, (match) => {
      try {
        return new URL(match).origin;
      } catch {
        return REDACTED;
      }
    })
    .replace(/\beyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){1,4}/g, REDACTED)
    .replace(/\b(Bearer|Basic|DPoP|Negotiate)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`)
    .replace(
      /\b(access_token|refresh_token|id_token|token|client_secret|secret|password|passwd|pwd|otp|totp|assertion|code_verifier|api_key|apikey)(\s*[=:]\s*)("?)[^\s"&,;]+\3/gi,
      `$1$2${REDACTED}`,
    )
    .replace(/[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/g, REDACTED)
    .replace(/[A-Za-z0-9_~+/=.-]{16,}/g, (run) => (looksLikeToken(run) ? REDACTED : run))
    .replace(/\s+/g, ' ')
    .trim();
  if (text === '') return undefined;
  if (text.length > MAX_DESCRIPTION_LENGTH) text = `${text.slice(0, MAX_DESCRIPTION_LENGTH - 1)}…`;
  return text;
}

/** A long opaque run: 32+ characters, or 16+ mixing letters and digits; host names excepted. */
function looksLikeToken(run: string): boolean {
  if (/^(?:\/\/)?(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}$/.test(run) && run.length <= 253) return false;
  return run.length >= 32 || (/[0-9]/.test(run) && /[A-Za-z]/.test(run));
}
