// When to refresh, as pure functions of what is known. Kept apart from the code that reads the
// cluster so that every rule can be tested with plain numbers.

export interface RefreshTiming {
  /** Explicit spec.refresh.before. */
  beforeMs?: number;
  /** Provider floor between two successful token requests (Exact Online: 570 s). */
  minIntervalMs: number;
  /** Refresh at least this often so an unused refresh token never expires. */
  keepAliveMs?: number;
  /** How long a changed Secret takes to reach a pod's mounted volume (kubelet sync + cache). */
  propagationMs: number;
}

export interface ScheduleInput extends RefreshTiming {
  nowMs: number;
  /** When the current access token was issued (the last successful token request). */
  issuedAtMs: number;
  /** When the current access token expires. */
  expiresAtMs: number;
  /** When the refresh token expires, when the provider said (refresh_expires_in: Keycloak, Concur). */
  refreshExpiresAtMs?: number;
  /** A number in [0, 1) that spreads refreshes out; tests pass a fixed one. */
  jitter: number;
}

/** Smallest delay the scheduler hands to a timer: a past due time never becomes a tight loop. */
export const MIN_DELAY_MS = 500;
/** Jitter spreads refreshes over at most this share of the refresh margin (and at most 30 s). */
const JITTER_SHARE = 0.1;
const JITTER_CAP_MS = 30_000;

/**
 * How long before expiry to refresh. The default is a third of the token's lifetime but no less
 * than the propagation delay, so a mounted Secret has the new token before the old one expires;
 * for tokens too short for that, half the lifetime (the consumer then has to read the Secret
 * through the API or re-read on 401; docs/providers.md says so for each provider).
 */
export function refreshMargin(
  lifetimeMs: number,
  timing: Pick<RefreshTiming, 'beforeMs' | 'propagationMs'>,
): number {
  if (timing.beforeMs !== undefined) return Math.min(timing.beforeMs, lifetimeMs);
  const third = lifetimeMs / 3;
  return Math.min(Math.max(third, timing.propagationMs), lifetimeMs / 2);
}

/**
 * due = max(issuedAt + minInterval, expiresAt − margin − jitter), pulled earlier by keepAlive and by
 * the refresh token's own expiry (at two thirds of its life: Keycloak's session idle ends a chain
 * whose access tokens outlive it), and never before the provider floor allows.
 */
export function nextRefreshAt(input: ScheduleInput): number {
  const lifetime = Math.max(0, input.expiresAtMs - input.issuedAtMs);
  const margin = refreshMargin(lifetime, input);
  const jitter = Math.min(margin * JITTER_SHARE, JITTER_CAP_MS) * input.jitter;
  const floor = input.issuedAtMs + input.minIntervalMs;
  let due = input.expiresAtMs - margin - jitter;
  if (input.keepAliveMs !== undefined) due = Math.min(due, input.issuedAtMs + input.keepAliveMs);
  if (input.refreshExpiresAtMs !== undefined) {
    due = Math.min(due, input.issuedAtMs + ((input.refreshExpiresAtMs - input.issuedAtMs) * 2) / 3);
  }
  return Math.max(due, floor);
}

/** A delay for a timer: at least MIN_DELAY_MS, even when the due time has passed. */
export function delayUntil(dueMs: number, nowMs: number): number {
  return Math.max(MIN_DELAY_MS, dueMs - nowMs);
}

export type BackoffClass = 'transient' | 'configuration' | 'in_doubt';

const BACKOFF: Record<BackoffClass, { baseMs: number; maxMs: number }> = {
  // Transient faults are retried quickly while the access token is still valid.
  transient: { baseMs: 2_000, maxMs: 5 * 60_000 },
  // A lost response is resolved by the next reconcile; only a conflict storm needs the backoff.
  in_doubt: { baseMs: 1_000, maxMs: 30_000 },
  // Configuration errors need a person; retrying fast only adds to the provider's error counters
  // (Exact Online blocks a key after 10 errors an hour).
  configuration: { baseMs: 60_000, maxMs: 60 * 60_000 },
};

/**
 * Exponential backoff from the number of consecutive failures (stored in status so it survives
 * restarts and leader changes), honouring a provider's Retry-After.
 */
export function backoffDelay(kind: BackoffClass, failedAttempts: number, retryAfterMs?: number): number {
  const { baseMs, maxMs } = BACKOFF[kind];
  const exponent = Math.max(0, Math.min(failedAttempts - 1, 30));
  const delay = Math.min(baseMs * 2 ** exponent, maxMs);
  return Math.max(delay, retryAfterMs ?? 0, MIN_DELAY_MS);
}
