// Failures of the headless recovery login (login.ts). Each is a TokenError with a stable reason and
// a safe message: the host may be named, never a path, a query, a page's text, the username, the
// password, a TOTP code or an authorization code.
import { TokenError, type TokenErrorCode } from './errors.ts';

export type LoginFailureReason =
  /** The password (or username) was rejected. The driver never submits it twice: no lockout. */
  | 'WrongCredentials'
  /** The TOTP code was rejected (wrong secret, or clock drift beyond the provider's window). */
  | 'WrongTotp'
  /** The pages did not look as the form profile says: no matching form, too many pages, not HTML. */
  | 'LoginFormUnexpected'
  /** The provider answered with an error: an error redirect, a 4xx/5xx page, no answer at all. */
  | 'ProviderError';

export const LOGIN_FAILURE_REASONS: readonly LoginFailureReason[] = [
  'WrongCredentials',
  'WrongTotp',
  'LoginFormUnexpected',
  'ProviderError',
];

export interface LoginErrorExtra {
  httpStatus?: number;
  oauthError?: string;
  description?: string;
  retryAfterMs?: number;
}

/** code defaults to 'configuration' (a person has to look); pass 'transient' for provider outages. */
export function loginError(
  reason: LoginFailureReason,
  message: string,
  code: TokenErrorCode = 'configuration',
  extra: LoginErrorExtra = {},
): TokenError {
  return new TokenError({ code, reason, message: `recovery login: ${message}`, ...extra });
}

/** True when a TokenError comes from the login driver with the given reason. */
export function isLoginFailure(err: unknown, reason?: LoginFailureReason): err is TokenError {
  return (
    err instanceof TokenError &&
    (LOGIN_FAILURE_REASONS as readonly string[]).includes(err.reason) &&
    (reason === undefined || err.reason === reason)
  );
}
