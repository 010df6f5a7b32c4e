// Status decisions as pure functions: (what happened, previous status) → next status, reason,
// message and when to look again. The reconciler reads the cluster and calls these; it never
// decides by itself what a failure means.
import type { OAuthConnectionStatus } from '../api/v1alpha1.ts';
import { setCondition } from '../kube/conditions.ts';
import type { TokenErrorCode, TokenFailure } from '../oauth/index.ts';
import { backoffDelay, delayUntil } from './schedule.ts';

export const CONDITION_READY = 'Ready';
export const CONDITION_REFRESHING = 'Refreshing';
export const CONDITION_DEGRADED = 'Degraded';
export const CONDITION_CHAIN_BROKEN = 'ChainBroken';
export const CONDITION_RECOVERING = 'Recovering';

/** How often a connection that needs a person is looked at again (a re-seed, a fixed Secret). */
export const TERMINAL_RECHECK_MS = 5 * 60_000;

/** What the controller does about a failure: the OAuth layer's classes, plus a lost fencing race. */
export type FailureKind = Exclude<TokenErrorCode, 'insecure_endpoint'> | 'conflict';

/** A failure as status records it: the OAuth layer's TokenFailure shape with the controller's kind. */
export type Failure = Pick<TokenFailure, 'reason' | 'message' | 'retryAfterMs' | 'notBeforeMs'> & {
  kind: FailureKind;
  /** Look again at this time instead of the class's default (a login budget that frees up). */
  recheckAtMs?: number;
};

export interface Decision {
  status: OAuthConnectionStatus;
  requeueAfterMs: number;
  /** An Event to record, when the outcome is worth a person's attention. */
  event?: { type: 'Normal' | 'Warning'; reason: string; message: string };
}

const iso = (ms: number): string => new Date(ms).toISOString();

function conditionsFor(
  status: OAuthConnectionStatus,
  generation: number | undefined,
  nowMs: number,
  entries: { type: string; status: 'True' | 'False' | 'Unknown'; reason: string; message: string }[],
): OAuthConnectionStatus['conditions'] {
  let conditions = status.conditions;
  for (const entry of entries) conditions = setCondition(conditions, entry, generation, iso(nowMs));
  return conditions;
}

export interface SuccessInput {
  previous: OAuthConnectionStatus;
  generation: number | undefined;
  nowMs: number;
  accessTokenExpiresAtMs: number;
  refreshTokenExpiresAtMs?: number;
  nextRefreshAtMs: number;
  /** A token request was made in this reconcile (not just a check that nothing is due). */
  refreshed: boolean;
  rotations: number;
  chainGeneration: number;
  tokenEndpoint?: string;
  /** Identity of the chain, so a state Secret that vanished or went back in time is recognised. */
  refreshTokenFingerprint?: string;
  seedFingerprint?: string;
  inputsVersion: string;
  /** A recovery login started this chain in this reconcile. */
  recovered?: boolean;
}

export function onSuccess(input: SuccessInput): Decision {
  const { previous, nowMs } = input;
  const status: OAuthConnectionStatus = {
    ...previous,
    observedGeneration: input.generation,
    accessTokenExpiresAt: iso(input.accessTokenExpiresAtMs),
    nextRefreshTime: iso(input.nextRefreshAtMs),
    rotations: input.rotations,
    chainGeneration: input.chainGeneration,
    failedAttempts: 0,
    inputsVersion: input.inputsVersion,
  };
  delete status.refreshTokenFingerprint;
  if (input.refreshTokenFingerprint !== undefined)
    status.refreshTokenFingerprint = input.refreshTokenFingerprint;
  if (input.seedFingerprint !== undefined) status.seedFingerprint = input.seedFingerprint;
  if (input.recovered === true) {
    status.lastRecoveryTime = iso(nowMs);
    delete status.loginBlockedCredentials;
  }
  if (input.refreshTokenExpiresAtMs !== undefined)
    status.refreshTokenExpiresAt = iso(input.refreshTokenExpiresAtMs);
  if (input.refreshed) status.lastRefreshTime = iso(nowMs);
  if (input.tokenEndpoint !== undefined) status.tokenEndpoint = input.tokenEndpoint;
  // Ready says whether the output Secret holds a valid token now: a token stored too late to be
  // valid (after a long API outage, say) is published, but not called Ready.
  const valid = input.accessTokenExpiresAtMs > nowMs;
  status.conditions = conditionsFor(status, input.generation, nowMs, [
    !valid
      ? {
          type: CONDITION_READY,
          status: 'False',
          reason: 'TokenExpired',
          message: `the access token expired at ${iso(input.accessTokenExpiresAtMs)}; the next refresh is at ${iso(input.nextRefreshAtMs)}`,
        }
      : {
          type: CONDITION_READY,
          status: 'True',
          reason: 'TokenValid',
          message: `access token valid until ${iso(input.accessTokenExpiresAtMs)}`,
        },
    {
      type: CONDITION_REFRESHING,
      status: 'False',
      reason: 'Idle',
      message: `next refresh at ${iso(input.nextRefreshAtMs)}`,
    },
    {
      type: CONDITION_DEGRADED,
      status: 'False',
      reason: 'AsExpected',
      message: 'the last token request succeeded',
    },
    {
      type: CONDITION_CHAIN_BROKEN,
      status: 'False',
      reason: 'ChainIntact',
      message: 'the refresh-token chain is intact',
    },
    {
      type: CONDITION_RECOVERING,
      status: 'False',
      reason: input.recovered === true ? 'Recovered' : 'NotNeeded',
      message:
        input.recovered === true ? 'a recovery login started a new chain' : 'no recovery login in progress',
    },
  ]);
  const wasReady = previous.conditions?.find((c) => c.type === CONDITION_READY)?.status === 'True';
  return {
    status,
    requeueAfterMs: delayUntil(input.nextRefreshAtMs, nowMs),
    ...(!wasReady && valid
      ? {
          event: {
            type: 'Normal' as const,
            reason: 'TokenReady',
            message: 'the output Secret holds a valid access token',
          },
        }
      : {}),
  };
}

export interface FailureInput {
  previous: OAuthConnectionStatus;
  generation: number | undefined;
  nowMs: number;
  failure: Failure;
  /** Expiry of the access token the output Secret still holds, if any. */
  accessTokenExpiresAtMs?: number;
  /** The provider's floor: when a too-early refresh may be tried again. */
  minIntervalRetryAtMs?: number;
  /** When the access token the output Secret holds was issued (with accessTokenExpiresAtMs, its lifetime). */
  issuedAtMs?: number;
  /** The floor between two token requests we plan with (spec.refresh.minInterval or the preset's). */
  minIntervalMs?: number;
  inputsVersion: string;
}

/** How far before the access token's expiry, as a share of its lifetime, a too-early refresh is retried. */
export const TOO_EARLY_RETRY_BEFORE_EXPIRY = 0.025;

/**
 * When to ask again after a too-early answer. While the floor we planned with is ahead, at that floor.
 * Once it has passed, the provider's floor is higher than ours (a spec minInterval too low) and lies
 * somewhere before the token's expiry. Each refusal counts towards the provider's errors an hour
 * (Exact blocks a client key after 10), so the next try is not a short backoff but the latest moment
 * that still spares consumers: just before the access token expires. Exact's 570 s floor is then
 * met at the first retry (585 s of a 600 s token), one refusal a cycle at most.
 *
 * With no such moment ahead (that retry was refused too, the token has expired, or its issue is
 * unknown, as for a seed imported right after the login that made it), the provider's floor runs
 * from a request we did not see (that login, another client, an answer that never arrived), so the
 * next try waits at least a whole minInterval: a short backoff would spend the hour's errors.
 */
function tooEarlyRetryDelay(input: FailureInput, failedAttempts: number): number {
  const { failure, nowMs, issuedAtMs, accessTokenExpiresAtMs } = input;
  const allowedAtMs = tooEarlyAllowedAt(input);
  if (allowedAtMs !== undefined && allowedAtMs > nowMs) return delayUntil(allowedAtMs, nowMs);
  const backoffMs = backoffDelay('transient', failedAttempts, failure.retryAfterMs);
  if (issuedAtMs !== undefined && accessTokenExpiresAtMs !== undefined) {
    const lifetimeMs = accessTokenExpiresAtMs - issuedAtMs;
    const lastMomentMs = accessTokenExpiresAtMs - lifetimeMs * TOO_EARLY_RETRY_BEFORE_EXPIRY;
    if (lastMomentMs > nowMs) return Math.max(backoffMs, lastMomentMs - nowMs);
  }
  return Math.max(backoffMs, input.minIntervalMs ?? 0);
}

/** When a too-early refresh may go again: the provider's Retry-After, else the floor we planned with. */
function tooEarlyAllowedAt(input: FailureInput): number | undefined {
  return input.failure.notBeforeMs ?? input.minIntervalRetryAtMs;
}

/** A too-early answer after the floor we planned with: that floor (spec.refresh.minInterval) is too low. */
function floorTooLow(input: FailureInput): boolean {
  const allowedAtMs = tooEarlyAllowedAt(input);
  return input.failure.kind === 'too_early' && allowedAtMs !== undefined && allowedAtMs <= input.nowMs;
}

export function onFailure(input: FailureInput): Decision {
  const { previous, nowMs } = input;
  const failure = floorTooLow(input)
    ? {
        ...input.failure,
        message: `${input.failure.message}; spec.refresh.minInterval is probably below the provider's floor (unless another client refreshed this chain): raise it`,
      }
    : input.failure;
  // A conflict is another writer's doing, not a failure of the chain: it is not counted.
  const failedAttempts =
    failure.kind === 'conflict' ? (previous.failedAttempts ?? 0) : (previous.failedAttempts ?? 0) + 1;
  const tokenValid = input.accessTokenExpiresAtMs !== undefined && input.accessTokenExpiresAtMs > nowMs;
  const status: OAuthConnectionStatus = {
    ...previous,
    observedGeneration: input.generation,
    failedAttempts,
    inputsVersion: input.inputsVersion,
    ...(failure.kind === 'conflict' ? {} : { lastFailureTime: iso(nowMs) }),
  };

  let requeueAfterMs: number;
  switch (failure.kind) {
    case 'transient':
      requeueAfterMs = backoffDelay('transient', failedAttempts, failure.retryAfterMs);
      break;
    case 'in_doubt':
    case 'conflict':
      requeueAfterMs = backoffDelay('in_doubt', failedAttempts, failure.retryAfterMs);
      break;
    case 'too_early':
      requeueAfterMs = tooEarlyRetryDelay(input, failedAttempts);
      break;
    case 'relocate':
      // The same request went to the named geolocation at once (in the reconcile); a provider that
      // keeps naming another one is asked again on the growing backoff, not every few seconds.
      requeueAfterMs = backoffDelay('transient', failedAttempts, failure.retryAfterMs);
      break;
    case 'configuration':
      requeueAfterMs = backoffDelay('configuration', failedAttempts, failure.retryAfterMs);
      break;
    case 'chain_broken':
      requeueAfterMs = TERMINAL_RECHECK_MS;
      break;
  }
  if (failure.recheckAtMs !== undefined) requeueAfterMs = delayUntil(failure.recheckAtMs, nowMs);
  status.nextRefreshTime = iso(nowMs + requeueAfterMs);

  const chainBroken = failure.kind === 'chain_broken';
  // Ready says whether the output Secret holds a valid token now: a broken chain whose last access
  // token is still valid is Ready until that token expires, and is looked at again right then so
  // that Ready turns False on time. A configuration error needs a person at once: not Ready.
  const ready = tokenValid && failure.kind !== 'configuration';
  if (chainBroken && tokenValid && input.accessTokenExpiresAtMs !== undefined) {
    requeueAfterMs = Math.min(requeueAfterMs, delayUntil(input.accessTokenExpiresAtMs, nowMs));
  }
  status.conditions = conditionsFor(status, input.generation, nowMs, [
    ready
      ? {
          type: CONDITION_READY,
          status: 'True',
          reason: 'TokenValid',
          message: `access token valid until ${iso(input.accessTokenExpiresAtMs ?? nowMs)}; ${chainBroken ? 'the chain is broken' : 'the last refresh failed'}: ${failure.message}`,
        }
      : { type: CONDITION_READY, status: 'False', reason: failure.reason, message: failure.message },
    {
      type: CONDITION_REFRESHING,
      status: chainBroken || failure.kind === 'configuration' ? 'False' : 'True',
      reason: chainBroken || failure.kind === 'configuration' ? 'Stopped' : 'Retrying',
      message: `next attempt at ${iso(nowMs + requeueAfterMs)}`,
    },
    { type: CONDITION_DEGRADED, status: 'True', reason: failure.reason, message: failure.message },
    ...(chainBroken
      ? [
          {
            type: CONDITION_CHAIN_BROKEN,
            status: 'True' as const,
            reason: failure.reason,
            message: failure.message,
          },
        ]
      : []),
    ...(previous.conditions?.some((c) => c.type === CONDITION_RECOVERING && c.status === 'True')
      ? [
          {
            type: CONDITION_RECOVERING,
            status: 'False' as const,
            reason: failure.reason,
            message: `the recovery login did not succeed: ${failure.message}`,
          },
        ]
      : []),
  ]);

  const previousReason = previous.conditions?.find((c) => c.type === CONDITION_DEGRADED)?.reason;
  const newTrouble =
    previousReason !== failure.reason ||
    previous.failedAttempts === 0 ||
    previous.failedAttempts === undefined;
  return {
    status,
    requeueAfterMs,
    ...(newTrouble && failure.kind !== 'conflict'
      ? { event: { type: 'Warning' as const, reason: failure.reason, message: failure.message } }
      : {}),
  };
}

export interface RecoveringInput {
  previous: OAuthConnectionStatus;
  generation: number | undefined;
  nowMs: number;
  /** Why a login is needed; a chain that broke (rather than one that never existed) is reported. */
  why: Failure;
  /** Login attempts of the last hour, before this one. */
  attempts: readonly string[];
  chainBroken: boolean;
}

/**
 * The status written before a recovery login: the attempt is recorded before it is made (the
 * hourly budget holds across crashes and leaders), and a broken chain shows as ChainBroken=True with
 * Recovering=True, with a Warning Event, even when the login then succeeds in the same reconcile.
 */
export function onRecovering(input: RecoveringInput): {
  status: OAuthConnectionStatus;
  event?: Decision['event'];
} {
  const { previous, nowMs, why } = input;
  const status: OAuthConnectionStatus = {
    ...previous,
    loginAttempts: [...input.attempts, iso(nowMs)],
  };
  status.conditions = conditionsFor(status, input.generation, nowMs, [
    ...(input.chainBroken
      ? [{ type: CONDITION_CHAIN_BROKEN, status: 'True' as const, reason: why.reason, message: why.message }]
      : []),
    {
      type: CONDITION_RECOVERING,
      status: 'True',
      reason: 'LoginInProgress',
      message: input.chainBroken
        ? `logging in to start a new chain (${why.reason})`
        : 'logging in to get a token',
    },
  ]);
  const wasBroken = previous.conditions?.some(
    (c) => c.type === CONDITION_CHAIN_BROKEN && c.status === 'True',
  );
  return {
    status,
    ...(input.chainBroken && wasBroken !== true
      ? { event: { type: 'Warning' as const, reason: 'ChainBroken', message: why.message } }
      : {}),
  };
}

/**
 * A JSON merge patch from one status to the next: fields that disappeared are sent as null, so the
 * server removes them (a merge patch leaves absent fields as they are).
 */
export function statusPatch(
  previous: OAuthConnectionStatus | undefined,
  next: OAuthConnectionStatus,
): Record<string, unknown> {
  const patch: Record<string, unknown> = { ...next };
  for (const key of Object.keys(previous ?? {})) {
    if (!(key in next) || (next as Record<string, unknown>)[key] === undefined) patch[key] = null;
  }
  return patch;
}

/** Status equality that ignores key order: status is written only when it changed. */
export function sameStatus(a: OAuthConnectionStatus | undefined, b: OAuthConnectionStatus): boolean {
  return canonical(a ?? {}) === canonical(b);
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .filter(([, x]) => x !== undefined)
            .sort(([x], [y]) => x.localeCompare(y)),
        )
      : v,
  );
}
