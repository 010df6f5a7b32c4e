import { describe, expect, it } from 'vitest';
import { failureOf, loginFailureReason } from '../../src/controller/failures.ts';
import { loginGate } from '../../src/controller/recovery.ts';
import { TokenError } from '../../src/oauth/errors.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');
const ago = (minutes: number): string => new Date(NOW - minutes * 60_000).toISOString();

describe('loginGate', () => {
  it.each([
    { name: 'first attempt', status: {}, max: 4, version: 'v1', allowed: true },
    {
      name: 'attempts older than an hour do not count',
      status: { loginAttempts: [ago(61), ago(62), ago(63), ago(64)] },
      max: 4,
      version: 'v1',
      allowed: true,
      kept: 0,
    },
    {
      name: 'the hourly budget is spent',
      status: { loginAttempts: [ago(50), ago(40), ago(30), ago(20)] },
      max: 4,
      version: 'v1',
      allowed: false,
      reason: 'LoginAttemptsExhausted',
      retryAt: NOW + 10 * 60_000,
    },
    {
      name: 'the same credentials were rejected: blocked until the hour since passes',
      status: { loginAttempts: [ago(5)], loginBlockedCredentials: 'v1' },
      max: 4,
      version: 'v1',
      allowed: false,
      reason: 'LoginFailed',
      retryAt: NOW + 55 * 60_000,
    },
    {
      name: 'changed credentials lift the block at once',
      status: { loginAttempts: [ago(5)], loginBlockedCredentials: 'v1' },
      max: 4,
      version: 'v2',
      allowed: true,
      kept: 1,
    },
    {
      name: 'an old block expires with its hour',
      status: { loginAttempts: [ago(70)], loginBlockedCredentials: 'v1' },
      max: 4,
      version: 'v1',
      allowed: true,
      kept: 0,
    },
  ])('$name', ({ status, max, version, allowed, reason, retryAt, kept }) => {
    const gate = loginGate(status, max, version, NOW);
    expect(gate.allowed).toBe(allowed);
    if (reason) expect(gate.reason).toBe(reason);
    if (retryAt) expect(gate.retryAtMs).toBe(retryAt);
    if (kept !== undefined) expect(gate.attempts).toHaveLength(kept);
  });
});

describe('loginFailureReason', () => {
  const error = (
    reason: string,
    code: 'configuration' | 'transient' | 'insecure_endpoint' = 'configuration',
  ) => new TokenError({ code, reason, message: 'm' });
  it.each([
    ['WrongCredentials', 'configuration', 'LoginFailed'],
    ['InvalidCredentials', 'configuration', 'LoginFailed'],
    ['WrongTotp', 'configuration', 'TotpRejected'],
    ['LoginFormUnexpected', 'configuration', 'LoginFormUnexpected'],
    ['ProviderError', 'transient', 'LoginProviderError'],
    ['MissingRedirectURI', 'configuration', 'MissingRedirectURI'],
    ['InsecureEndpoint', 'insecure_endpoint', 'InsecureEndpoint'],
  ] as const)('%s (%s) → %s', (reason, code, expected) => {
    expect(loginFailureReason(error(reason, code))).toBe(expected);
  });

  it('names spec.provider for a login sent to a refused address, in either stage', () => {
    const refused = new TokenError({
      code: 'insecure_endpoint',
      reason: 'InsecureEndpoint',
      message: 'host 169.254.7.7 is a link-local address',
    });
    expect(failureOf(refused, 'login')).toMatchObject({
      kind: 'chain_broken',
      reason: 'InsecureEndpoint',
      message:
        'spec.provider: the recovery login was sent to a refused address: host 169.254.7.7 is a link-local address',
    });
    expect(failureOf(refused)).toMatchObject({
      kind: 'configuration',
      message: 'spec.provider: host 169.254.7.7 is a link-local address',
    });
  });
});
