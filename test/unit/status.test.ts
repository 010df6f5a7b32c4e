import { describe, expect, it } from 'vitest';
import type { OAuthConnectionStatus } from '../../src/api/v1alpha1.ts';
import {
  onFailure,
  onSuccess,
  sameStatus,
  TERMINAL_RECHECK_MS,
  type Failure,
} from '../../src/controller/status.ts';
import { setCondition } from '../../src/kube/conditions.ts';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const ready = (status: OAuthConnectionStatus) => status.conditions?.find((c) => c.type === 'Ready');

function success(previous: OAuthConnectionStatus, nowMs = T0) {
  return onSuccess({
    previous,
    generation: 3,
    nowMs,
    accessTokenExpiresAtMs: nowMs + 600_000,
    nextRefreshAtMs: nowMs + 400_000,
    refreshed: true,
    rotations: 5,
    chainGeneration: 1,
    inputsVersion: 'v1',
  });
}

describe('onSuccess', () => {
  it('does not call a token Ready that expired before it could be published', () => {
    const decision = onSuccess({
      previous: {},
      generation: 1,
      nowMs: T0,
      accessTokenExpiresAtMs: T0 - 1,
      nextRefreshAtMs: T0 + 10_000,
      refreshed: true,
      rotations: 1,
      chainGeneration: 1,
      inputsVersion: 'v1',
    });
    expect(ready(decision.status)).toMatchObject({ status: 'False', reason: 'TokenExpired' });
    expect(decision.event).toBeUndefined();
  });
});

describe('setCondition', () => {
  it('keeps lastTransitionTime when the status did not change', () => {
    const first = setCondition(
      undefined,
      { type: 'Ready', status: 'True', reason: 'A', message: 'a' },
      1,
      iso(T0),
    );
    const second = setCondition(
      first,
      { type: 'Ready', status: 'True', reason: 'B', message: 'b' },
      2,
      iso(T0 + 5000),
    );
    expect(second[0]?.lastTransitionTime).toBe(iso(T0));
    expect(second[0]?.reason).toBe('B');
    expect(second[0]?.observedGeneration).toBe(2);
    const third = setCondition(
      second,
      { type: 'Ready', status: 'False', reason: 'C', message: 'c' },
      2,
      iso(T0 + 9000),
    );
    expect(third[0]?.lastTransitionTime).toBe(iso(T0 + 9000));
  });
});

describe('onSuccess', () => {
  it('sets Ready, clears failures, schedules the next refresh and announces the first readiness only', () => {
    const first = success({ failedAttempts: 3 });
    expect(ready(first.status)?.status).toBe('True');
    expect(first.status.failedAttempts).toBe(0);
    expect(first.status.lastRefreshTime).toBe(iso(T0));
    expect(first.requeueAfterMs).toBe(400_000);
    expect(first.event?.reason).toBe('TokenReady');
    const again = success(first.status, T0 + 400_000);
    expect(again.event).toBeUndefined();
  });

  it('writes nothing when nothing changed', () => {
    const first = success({});
    expect(sameStatus(first.status, success(first.status).status)).toBe(true);
  });
});

describe('onFailure', () => {
  const cases: {
    name: string;
    failure: Failure;
    tokenValid: boolean;
    ready: 'True' | 'False';
    chainBroken?: 'True';
    /** The planned provider floor has already passed. */
    pastFloor?: boolean;
    requeue: (ms: number) => boolean;
  }[] = [
    {
      name: 'transient while the token is valid: still Ready, Degraded, quick retry',
      failure: { kind: 'transient', reason: 'ProviderUnavailable', message: 'm' },
      tokenValid: true,
      ready: 'True',
      requeue: (ms) => ms === 2_000,
    },
    {
      name: 'transient after the token expired: not Ready',
      failure: { kind: 'transient', reason: 'ProviderUnavailable', message: 'm' },
      tokenValid: false,
      ready: 'False',
      requeue: (ms) => ms === 2_000,
    },
    {
      name: 'Retry-After is honoured',
      failure: { kind: 'transient', reason: 'RateLimited', message: 'm', retryAfterMs: 45_000 },
      tokenValid: true,
      ready: 'True',
      requeue: (ms) => ms === 45_000,
    },
    {
      name: 'configuration: not Ready even with a valid token, slow retry',
      failure: { kind: 'configuration', reason: 'InvalidClient', message: 'm' },
      tokenValid: true,
      ready: 'False',
      requeue: (ms) => ms >= 60_000,
    },
    {
      name: 'chain broken while the token is valid: Ready until it expires, looked at again right then',
      failure: { kind: 'chain_broken', reason: 'RefreshTokenReused', message: 'm' },
      tokenValid: true,
      ready: 'True',
      chainBroken: 'True',
      requeue: (ms) => ms === 60_000,
    },
    {
      name: 'chain broken with an expired token: not Ready, a terminal recheck',
      failure: { kind: 'chain_broken', reason: 'RefreshTokenReused', message: 'm' },
      tokenValid: false,
      ready: 'False',
      chainBroken: 'True',
      requeue: (ms) => ms === TERMINAL_RECHECK_MS,
    },
    {
      name: 'too early after the planned floor passed (a spec minInterval below the provider floor): backs off',
      failure: { kind: 'too_early', reason: 'TooEarly', message: 'm' },
      tokenValid: true,
      ready: 'True',
      pastFloor: true,
      requeue: (ms) => ms === 2_000,
    },
    {
      name: 'too early: waits for the provider floor',
      failure: { kind: 'too_early', reason: 'TooEarly', message: 'm' },
      tokenValid: true,
      ready: 'True',
      requeue: (ms) => ms === 570_000,
    },
  ];
  it.each(cases)(
    '$name',
    ({ failure, tokenValid, ready: expectedReady, chainBroken, requeue, pastFloor }) => {
      const decision = onFailure({
        previous: { failedAttempts: 0 },
        generation: 1,
        nowMs: T0,
        failure,
        accessTokenExpiresAtMs: tokenValid ? T0 + 60_000 : T0 - 1,
        minIntervalRetryAtMs: pastFloor === true ? T0 - 1 : T0 + 570_000,
        inputsVersion: 'v1',
      });
      expect(ready(decision.status)?.status).toBe(expectedReady);
      if (chainBroken)
        expect(decision.status.conditions?.find((c) => c.type === 'ChainBroken')?.status).toBe(chainBroken);
      expect(requeue(decision.requeueAfterMs), `requeue ${decision.requeueAfterMs}`).toBe(true);
      expect(decision.status.failedAttempts).toBe(1);
      expect(decision.event?.type).toBe('Warning');
    },
  );

  describe('too early after the floor we planned with (spec.refresh.minInterval below the provider floor)', () => {
    // Exact's shape: a 600 s access token issued at ISSUED, our floor 300 s, the provider's 570 s.
    const ISSUED = T0 - 300_000;
    const EXPIRES = ISSUED + 600_000;
    const tooEarly: Failure = { kind: 'too_early', reason: 'TooEarly', message: 'too early (HTTP 400)' };
    const cases: {
      name: string;
      nowMs: number;
      failedBefore: number;
      issuedAtMs?: number;
      expiresAtMs: number;
      requeueMs: number;
    }[] = [
      {
        name: 'the first refusal: once more just before the token expires (585 s of 600 s), not on a short backoff',
        nowMs: T0,
        failedBefore: 0,
        issuedAtMs: ISSUED,
        expiresAtMs: EXPIRES,
        requeueMs: EXPIRES - 15_000 - T0,
      },
      {
        name: 'refused again at that moment (the floor runs from a request we did not see): a whole minInterval',
        nowMs: EXPIRES - 15_000,
        failedBefore: 1,
        issuedAtMs: ISSUED,
        expiresAtMs: EXPIRES,
        requeueMs: 300_000,
      },
      {
        name: 'the token has expired: a whole minInterval, not 2 s, 4 s, 8 s that would spend the hour',
        nowMs: EXPIRES + 1_000,
        failedBefore: 2,
        issuedAtMs: ISSUED,
        expiresAtMs: EXPIRES,
        requeueMs: 300_000,
      },
      {
        name: 'issuance unknown (a seed imported right after the login that made it): a whole minInterval',
        nowMs: T0,
        failedBefore: 0,
        expiresAtMs: EXPIRES,
        requeueMs: 300_000,
      },
    ];
    it.each(cases)('$name', ({ nowMs, failedBefore, issuedAtMs, expiresAtMs, requeueMs }) => {
      const decision = onFailure({
        previous: { failedAttempts: failedBefore },
        generation: 1,
        nowMs,
        failure: tooEarly,
        accessTokenExpiresAtMs: expiresAtMs,
        minIntervalRetryAtMs: ISSUED + 300_000,
        minIntervalMs: 300_000,
        ...(issuedAtMs !== undefined ? { issuedAtMs } : {}),
        inputsVersion: 'v1',
      });
      expect(decision.requeueAfterMs).toBe(requeueMs);
    });

    it('names the field to raise in Degraded; a refusal before our floor does not', () => {
      const degraded = (minIntervalRetryAtMs: number): string | undefined =>
        onFailure({
          previous: {},
          generation: 1,
          nowMs: T0,
          failure: tooEarly,
          accessTokenExpiresAtMs: EXPIRES,
          minIntervalRetryAtMs,
          issuedAtMs: ISSUED,
          inputsVersion: 'v1',
        }).status.conditions?.find((c) => c.type === 'Degraded')?.message;
      expect(degraded(T0 - 1)).toBe(
        "too early (HTTP 400); spec.refresh.minInterval is probably below the provider's floor (unless another client refreshed this chain): raise it",
      );
      expect(degraded(T0 + 270_000)).toBe('too early (HTTP 400)');
    });
  });

  it('a provider that keeps naming another data center (relocate) is asked again on the growing backoff', () => {
    const failure: Failure = { kind: 'relocate', reason: 'Relocated', message: 'm' };
    const delays = [0, 1, 2, 3].map(
      (failedBefore) =>
        onFailure({
          previous: { failedAttempts: failedBefore },
          generation: 1,
          nowMs: T0,
          failure,
          inputsVersion: 'v1',
        }).requeueAfterMs,
    );
    expect(delays).toEqual([2_000, 4_000, 8_000, 16_000]);
  });

  it('counts consecutive failures for the backoff and emits one Event per new reason', () => {
    const failure: Failure = { kind: 'transient', reason: 'ProviderUnavailable', message: 'm' };
    const first = onFailure({ previous: {}, generation: 1, nowMs: T0, failure, inputsVersion: 'v1' });
    const second = onFailure({
      previous: first.status,
      generation: 1,
      nowMs: T0 + 2000,
      failure,
      inputsVersion: 'v1',
    });
    expect(second.status.failedAttempts).toBe(2);
    expect(second.requeueAfterMs).toBe(4_000);
    expect(second.event).toBeUndefined();
  });

  it('does not count a conflict with another writer as a failure', () => {
    const decision = onFailure({
      previous: { failedAttempts: 2 },
      generation: 1,
      nowMs: T0,
      failure: { kind: 'conflict', reason: 'StateConflict', message: 'm' },
      inputsVersion: 'v1',
    });
    expect(decision.status.failedAttempts).toBe(2);
    expect(decision.event).toBeUndefined();
  });
});

describe('onFailure: an output the operator will not or cannot write', () => {
  // What the output writer throws (src/controller/output-secret.ts), as the reconciler records it.
  it.each([
    {
      reason: 'OutputRejected',
      message:
        'the API server refused the output Secret s: spec.output.labels: Invalid value: "a b": name part must consist of … (metadata.labels)',
      field: 'spec.output.labels',
    },
    {
      reason: 'InvalidOutputMetadata',
      message:
        'spec.output.annotations["oauth.token-operator.dev/connection-namespace"]: the key is reserved for the operator',
      field: 'spec.output.annotations',
    },
    {
      reason: 'InvalidOutputKey',
      message: 'spec.output.keys.accessToken: the Secret data key "__proto__" is reserved',
      field: 'spec.output.keys.accessToken',
    },
    {
      reason: 'OutputTooLarge',
      message: 'spec.output.templates[2]: the template renders 1024001 bytes',
      field: 'spec.output.templates[2]',
    },
    {
      reason: 'OutputSecretNotOwned',
      message:
        'Secret s exists and is not owned by this connection; it is left untouched (spec.output.secretName)',
      field: 'spec.output.secretName',
    },
  ])('$reason replaces a stale Ready=True, names $field, and tells once', ({ reason, message, field }) => {
    const readyBefore = success({}).status;
    expect(ready(readyBefore)?.status).toBe('True');
    const failure: Failure = { kind: 'configuration', reason, message };
    const first = onFailure({
      previous: readyBefore,
      generation: 3,
      nowMs: T0 + 1000,
      failure,
      // The token itself is still valid: it is the output that is wrong.
      accessTokenExpiresAtMs: T0 + 600_000,
      inputsVersion: 'v1',
    });
    expect(ready(first.status)).toMatchObject({
      status: 'False',
      reason,
      message,
      observedGeneration: 3,
      lastTransitionTime: iso(T0 + 1000),
    });
    expect(ready(first.status)?.message).toContain(field);
    expect(first.status.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({
      status: 'True',
      reason,
    });
    expect(first.status.conditions?.find((c) => c.type === 'Refreshing')).toMatchObject({
      status: 'False',
      reason: 'Stopped',
    });
    expect(first.event).toEqual({ type: 'Warning', reason, message });
    expect(first.requeueAfterMs).toBeGreaterThanOrEqual(60_000);

    // The same refusal again: status stays, the backoff grows, no second Event.
    const second = onFailure({
      previous: first.status,
      generation: 3,
      nowMs: T0 + 1000 + first.requeueAfterMs,
      failure,
      accessTokenExpiresAtMs: T0 + 600_000,
      inputsVersion: 'v1',
    });
    expect(ready(second.status)?.lastTransitionTime).toBe(iso(T0 + 1000));
    expect(second.requeueAfterMs).toBeGreaterThan(first.requeueAfterMs);
    expect(second.event).toBeUndefined();

    // Fixed (a new generation publishes): Ready again, announced.
    const fixed = success(second.status, T0 + 2000 + first.requeueAfterMs);
    expect(ready(fixed.status)).toMatchObject({ status: 'True', reason: 'TokenValid' });
    expect(fixed.event?.reason).toBe('TokenReady');
  });
});
