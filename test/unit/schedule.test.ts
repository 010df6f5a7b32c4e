import { describe, expect, it } from 'vitest';
import {
  backoffDelay,
  delayUntil,
  MIN_DELAY_MS,
  nextRefreshAt,
  refreshMargin,
} from '../../src/controller/schedule.ts';

const S = 1000;
const MIN = 60 * S;

describe('refreshMargin', () => {
  it.each([
    { name: '1 h token: a third of the lifetime', lifetime: 60 * MIN, before: undefined, expected: 20 * MIN },
    {
      name: '10 min token: still a third (200 s > 90 s)',
      lifetime: 10 * MIN,
      before: undefined,
      expected: 200 * S,
    },
    {
      name: '3 min token: the propagation delay wins',
      lifetime: 3 * MIN,
      before: undefined,
      expected: 90 * S,
    },
    {
      name: '20 s token: capped at half the lifetime',
      lifetime: 20 * S,
      before: undefined,
      expected: 10 * S,
    },
    { name: 'explicit before', lifetime: 60 * MIN, before: 5 * MIN, expected: 5 * MIN },
    {
      name: 'explicit before longer than the lifetime',
      lifetime: 10 * MIN,
      before: 20 * MIN,
      expected: 10 * MIN,
    },
  ])('$name', ({ lifetime, before, expected }) => {
    expect(
      refreshMargin(lifetime, {
        ...(before !== undefined ? { beforeMs: before } : {}),
        propagationMs: 90 * S,
      }),
    ).toBe(expected);
  });
});

describe('nextRefreshAt', () => {
  const base = { nowMs: 0, issuedAtMs: 0, propagationMs: 90 * S, jitter: 0, minIntervalMs: 0 };
  it.each([
    {
      name: 'Exact Online: 600 s token, 570 s floor → 30 s before expiry',
      input: { expiresAtMs: 600 * S, minIntervalMs: 570 * S },
      expected: 570 * S,
    },
    { name: 'one hour token refreshes 20 min early', input: { expiresAtMs: 60 * MIN }, expected: 40 * MIN },
    {
      name: 'keepAlive pulls an idle long token earlier',
      input: { expiresAtMs: 30 * 24 * 60 * MIN, keepAliveMs: 24 * 60 * MIN },
      expected: 24 * 60 * MIN,
    },
    {
      name: 'keepAlive never beats the provider floor',
      input: { expiresAtMs: 60 * MIN, keepAliveMs: 1 * MIN, minIntervalMs: 5 * MIN },
      expected: 5 * MIN,
    },
    {
      name: 'a refresh token expiring first (Keycloak session idle) pulls the refresh to 2/3 of its life',
      input: { expiresAtMs: 60 * MIN, refreshExpiresAtMs: 30 * MIN },
      expected: 20 * MIN,
    },
    {
      name: 'a refresh token outliving the access token changes nothing',
      input: { expiresAtMs: 60 * MIN, refreshExpiresAtMs: 600 * MIN },
      expected: 40 * MIN,
    },
    {
      name: 'jitter only ever moves earlier, by at most 10% of the margin',
      input: { expiresAtMs: 60 * MIN, jitter: 0.999 },
      expected: 40 * MIN - 0.999 * 30 * S,
    },
  ])('$name', ({ input, expected }) => {
    expect(nextRefreshAt({ ...base, ...input })).toBeCloseTo(expected, 0);
  });
});

describe('delayUntil', () => {
  it('never hands a timer a delay of zero or less', () => {
    expect(delayUntil(0, 10_000)).toBe(MIN_DELAY_MS);
    expect(delayUntil(10_000, 10_000)).toBe(MIN_DELAY_MS);
    expect(delayUntil(20_000, 10_000)).toBe(10_000);
  });
});

describe('backoffDelay', () => {
  it.each([
    { kind: 'transient' as const, attempts: 1, retryAfter: undefined, expected: 2 * S },
    { kind: 'transient' as const, attempts: 4, retryAfter: undefined, expected: 16 * S },
    { kind: 'transient' as const, attempts: 40, retryAfter: undefined, expected: 5 * MIN },
    { kind: 'transient' as const, attempts: 1, retryAfter: 30 * S, expected: 30 * S },
    { kind: 'configuration' as const, attempts: 1, retryAfter: undefined, expected: 1 * MIN },
    { kind: 'configuration' as const, attempts: 10, retryAfter: undefined, expected: 60 * MIN },
    { kind: 'in_doubt' as const, attempts: 1, retryAfter: undefined, expected: 1 * S },
  ])(
    '$kind after $attempts failures (Retry-After $retryAfter) → $expected ms',
    ({ kind, attempts, retryAfter, expected }) => {
      expect(backoffDelay(kind, attempts, retryAfter)).toBe(expected);
    },
  );
});
