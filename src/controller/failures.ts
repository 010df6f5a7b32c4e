// The one mapping from what the OAuth layer reports (a TokenError with a stable code) to what the
// controller does about it (a Failure kind that status.ts turns into conditions and a backoff).
import type { TokenError } from '../oauth/index.ts';
import type { Failure } from './status.ts';

/** Where in a reconcile the error arose: a token request (or endpoint resolution), or a recovery login. */
export type FailureStage = 'request' | 'login';

/** Maps a login driver failure to the condition reason the docs promise. */
export function loginFailureReason(err: TokenError): string {
  switch (err.reason) {
    case 'WrongCredentials':
    case 'InvalidCredentials':
      return 'LoginFailed';
    case 'WrongTotp':
      return 'TotpRejected';
    case 'LoginFormUnexpected':
    case 'MissingLoginForm':
      return 'LoginFormUnexpected';
    default:
      return err.code === 'configuration' || err.code === 'insecure_endpoint'
        ? err.reason
        : 'LoginProviderError';
  }
}

/**
 * The controller's failure for a TokenError. A URL the endpoint policy refuses is a configuration
 * problem of spec.provider. A recovery login that fails for any reason but a passing outage leaves
 * the chain broken.
 */
export function failureOf(err: TokenError, stage: FailureStage = 'request'): Failure {
  const insecure = err.code === 'insecure_endpoint';
  const failure: Failure =
    stage === 'login'
      ? {
          kind: err.code === 'transient' ? 'transient' : 'chain_broken',
          reason: loginFailureReason(err),
          message: err.message,
        }
      : { kind: insecure ? 'configuration' : err.code, reason: err.reason, message: err.message };
  if (insecure && stage === 'request') failure.message = `spec.provider: ${err.message}`;
  // A login page may send the walk on to another host (a redirect, a form action): the provider's
  // doing, so the field is spec.provider's, though the address was never written in the spec.
  if (insecure && stage === 'login')
    failure.message = `spec.provider: the recovery login was sent to a refused address: ${err.message}`;
  if (err.retryAfterMs !== undefined) failure.retryAfterMs = err.retryAfterMs;
  if (err.notBeforeMs !== undefined) failure.notBeforeMs = err.notBeforeMs;
  return failure;
}
