// The chain engine's rules, proven without a cluster: decide() and the next-state builders, one
// table row per situation, on plain numbers.
import { describe, expect, it } from 'vitest';
import type { OAuthConnectionStatus } from '../../src/api/v1alpha1.ts';
import {
  decide,
  dueAt,
  minRequestGap,
  relocationTarget,
  stateLost,
  type Action,
  type ChainInput,
  type ChainTiming,
} from '../../src/controller/chain/decide.ts';
import {
  afterFailure,
  afterLogin,
  afterSeedImport,
  afterTokens,
  markBroken,
  plannedLifetime,
} from '../../src/controller/chain/transitions.ts';
import { fingerprint, type ChainState } from '../../src/controller/state-store.ts';
import { TokenError } from '../../src/oauth/index.ts';

const NOW = Date.parse('2030-01-01T12:00:00Z');
const UID = 'uid-1';
const ME = 'replica-a';
const SEED = 'seed-token-0001';
const RT = 'refresh-token-0002';
const MIN = 60_000;
const iso = (ms: number): string => new Date(ms).toISOString();
const US = 'https://us.api.concursolutions.com';
const EU = 'https://eu.api.concursolutions.com';

/** A healthy chain: token issued 2 minutes ago, valid for 10 more, refresh token RT, generation 1. */
function chain(overrides: Partial<ChainState> = {}): ChainState {
  return {
    connectionUID: UID,
    chainGeneration: 1,
    rotations: 3,
    refreshToken: RT,
    seedFingerprint: fingerprint(SEED),
    accessToken: 'at',
    tokenType: 'Bearer',
    issuedAtMs: NOW - 2 * MIN,
    accessTokenExpiresAtMs: NOW + 10 * MIN,
    ...overrides,
  };
}

/** The status a writer left after that chain's last success. */
function recorded(state: ChainState, overrides: OAuthConnectionStatus = {}): OAuthConnectionStatus {
  return {
    observedGeneration: 1,
    chainGeneration: state.chainGeneration,
    rotations: state.rotations,
    ...(state.refreshToken !== undefined ? { refreshTokenFingerprint: fingerprint(state.refreshToken) } : {}),
    seedFingerprint: fingerprint(SEED),
    inputsVersion: 'inputs-1',
    failedAttempts: 0,
    ...overrides,
  };
}

/** The timing of a generic connection; tests change what they are about. */
function timing(overrides: Partial<ChainTiming> = {}): ChainTiming {
  return {
    minIntervalMs: 0,
    propagationMs: 90_000,
    graceWindowMs: 0,
    claimTimeoutMs: 105_000,
    requestTimeoutMs: 30_000,
    reusableUntilSuccessorUsed: false,
    minRequestGapMs: 10_000,
    ...overrides,
  };
}

function input(overrides: Partial<ChainInput> = {}): ChainInput {
  const state = 'state' in overrides ? overrides.state : chain();
  return {
    connectionUID: UID,
    generation: 1,
    identity: ME,
    grant: 'refreshToken',
    seed: { fingerprint: fingerprint(SEED), consumedBy: { uid: UID, fingerprint: fingerprint(SEED) } },
    status: state !== undefined ? recorded(state) : {},
    inputsVersion: 'inputs-1',
    timing: timing(),
    ...overrides,
    state,
  };
}

const failing = (untilMs: number, overrides: OAuthConnectionStatus = {}): OAuthConnectionStatus => ({
  ...recorded(chain()),
  failedAttempts: 2,
  nextRefreshTime: iso(untilMs),
  ...overrides,
});

const claim = (holder: string, ageMs: number) => ({
  id: 'c1',
  holder,
  startedAtMs: NOW - ageMs,
  presented: fingerprint(RT),
});

const login = { flow: 'code' as const, credentialsVersion: 'creds-1' };
const anyText = expect.any(String) as string;
/** A connection of a preset whose password starts a chain (FOLIO). */
const passwordChain = {
  grant: 'password',
  seed: undefined,
  passwordVersion: 'pw-1',
  passwordStartsChain: true,
} as const;
const due = chain({ issuedAtMs: NOW - 9 * MIN, accessTokenExpiresAtMs: NOW + MIN });

interface Row {
  name: string;
  input: ChainInput;
  expect: Partial<Action> & { kind: Action['kind'] };
  reason?: string;
  /** When a 'fail' asks to be looked at again. */
  recheckAtMs?: number;
}

const rows: Row[] = [
  // Seeds.
  {
    name: 'a first seed with no state is imported',
    input: input({ state: undefined, seed: { fingerprint: fingerprint(SEED) } }),
    expect: { kind: 'import-seed' },
  },
  {
    name: 'a changed seed is a re-seed: imported',
    input: input({ seed: { fingerprint: fingerprint('new-seed') } }),
    expect: { kind: 'import-seed' },
  },
  {
    name: 'a re-seed is imported even while the chain is broken',
    input: input({
      state: chain({ broken: { reason: 'RefreshTokenReused', atMs: NOW } }),
      seed: { fingerprint: fingerprint('new-seed') },
    }),
    expect: { kind: 'import-seed' },
  },
  {
    name: 'an imported seed is marked consumed before it is presented',
    input: input({
      state: chain({ refreshToken: SEED, rotations: 0 }),
      seed: { fingerprint: fingerprint(SEED) },
    }),
    expect: { kind: 'mark-seed-consumed' },
  },
  {
    name: 'a seed marked for this connection and still held is presented when due',
    input: input({
      state: chain({ refreshToken: SEED, rotations: 0, issuedAtMs: undefined, accessToken: undefined }),
    }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'a seed another connection consumed is refused when there is no chain',
    input: input({
      state: undefined,
      status: {},
      seed: { fingerprint: fingerprint(SEED), consumedBy: { uid: 'other', fingerprint: fingerprint(SEED) } },
    }),
    expect: { kind: 'fail' },
    reason: 'SeedConsumed',
  },
  {
    name: 'a seed another connection consumed is refused when this chain still holds it (lost race)',
    input: input({
      state: chain({ refreshToken: SEED, rotations: 0 }),
      seed: { fingerprint: fingerprint(SEED), consumedBy: { uid: 'other', fingerprint: fingerprint(SEED) } },
    }),
    expect: { kind: 'fail' },
    reason: 'SeedConsumed',
  },
  {
    name: 'a stale seed another connection consumed is ignored by a chain that moved on',
    input: input({
      seed: { fingerprint: fingerprint(SEED), consumedBy: { uid: 'other', fingerprint: fingerprint(SEED) } },
    }),
    expect: { kind: 'publish' },
  },
  {
    name: 'a seed recorded in status is not new even without a mark',
    input: input({ seed: { fingerprint: fingerprint(SEED) } }),
    expect: { kind: 'publish' },
  },
  {
    name: 'a mark for an older value of the seed does not make the new value known',
    input: input({
      seed: { fingerprint: fingerprint('newer'), consumedBy: { uid: UID, fingerprint: fingerprint(SEED) } },
    }),
    expect: { kind: 'import-seed' },
  },
  // State lost.
  {
    name: 'a deleted state Secret is StateLost, no token presented',
    input: input({ state: undefined, status: recorded(chain()) }),
    expect: { kind: 'fail' },
    reason: 'StateLost',
  },
  {
    name: 'a state restored from an older rotation is StateLost',
    input: input({ state: chain({ rotations: 1, refreshToken: 'older' }), status: recorded(chain()) }),
    expect: { kind: 'fail' },
    reason: 'StateLost',
  },
  {
    name: 'a state restored from an older chain generation is StateLost',
    input: input({ state: chain({ chainGeneration: 1 }), status: recorded(chain({ chainGeneration: 2 })) }),
    expect: { kind: 'fail' },
    reason: 'StateLost',
  },
  {
    name: 'a state with the same counts but another token is StateLost',
    input: input({ state: chain({ refreshToken: 'swapped' }), status: recorded(chain()) }),
    expect: { kind: 'fail' },
    reason: 'StateLost',
  },
  {
    name: 'a state ahead of status (status not yet written) is fine',
    input: input({ state: chain({ rotations: 4, refreshToken: 'next' }), status: recorded(chain()) }),
    expect: { kind: 'publish' },
  },
  {
    name: 'StateLost with a recovery login configured logs in',
    input: input({ state: undefined, status: recorded(chain()), login }),
    expect: { kind: 'recover' },
  },
  {
    name: 'StateLost is lifted by a re-seed',
    input: input({
      state: undefined,
      status: recorded(chain()),
      seed: { fingerprint: fingerprint('re-seed') },
    }),
    expect: { kind: 'import-seed' },
  },
  {
    name: 'a status from before fingerprints existed does not claim a loss',
    input: input({ state: undefined, status: { chainGeneration: 3, rotations: 9 }, seed: undefined }),
    expect: { kind: 'fail' },
    reason: 'NoRefreshToken',
  },
  {
    name: 'a state of a deleted namesake is ignored',
    input: input({
      state: chain({ connectionUID: 'old-uid' }),
      status: {},
      seed: { fingerprint: fingerprint(SEED) },
    }),
    expect: { kind: 'import-seed' },
  },
  // Claims.
  {
    name: 'a young claim of another live replica is waited for, not judged',
    input: input({ state: chain({ claim: claim('replica-b', 20_000) }) }),
    expect: { kind: 'wait-for-claim', untilMs: NOW - 20_000 + 105_000 },
  },
  {
    name: 'an old claim of another replica is settled by introspection',
    input: input({ state: chain({ claim: claim('replica-b', 200_000) }) }),
    expect: { kind: 'settle' },
  },
  {
    name: 'our own claim is never waited for',
    input: input({ state: chain({ claim: claim(ME, 5_000) }) }),
    expect: { kind: 'settle' },
  },
  {
    name: 'a claim inside the grace window presents the same token again',
    input: input({
      state: chain({ claim: claim(ME, 5_000) }),
      timing: timing({ graceWindowMs: 30_000 }),
    }),
    expect: { kind: 'refresh', retry: 'grace' },
  },
  {
    name: 'a claim outside the grace window is settled, not retried',
    input: input({
      state: chain({ claim: claim(ME, 40_000) }),
      timing: timing({ graceWindowMs: 30_000 }),
    }),
    expect: { kind: 'settle' },
  },
  {
    name: 'introspection says active: the same token is presented again',
    input: input({ state: chain({ claim: claim(ME, 40_000) }), introspection: 'active' }),
    expect: { kind: 'refresh', retry: 'introspection' },
  },
  {
    name: 'introspection says inactive: the chain is given up',
    input: input({ state: chain({ claim: claim(ME, 40_000) }), introspection: 'inactive' }),
    expect: { kind: 'mark-broken', reason: 'RefreshResponseLost' },
  },
  {
    name: 'introspection cannot say: the chain is given up',
    input: input({ state: chain({ claim: claim(ME, 40_000) }), introspection: 'unknown' }),
    expect: { kind: 'mark-broken', reason: 'RefreshResponseLost' },
  },
  // The refresh token's own expiry and keepAlive cap the lifetime/10 loop guard.
  {
    name: 'a day-long access token with a 30 min refresh-token life is refreshed before the refresh token dies',
    input: input({
      state: chain({
        issuedAtMs: NOW - 25 * MIN,
        accessTokenExpiresAtMs: NOW + 24 * 60 * MIN,
        refreshTokenExpiresAtMs: NOW + 5 * MIN,
      }),
    }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'keepAlive below a tenth of the access-token lifetime still decides',
    input: input({
      state: chain({ issuedAtMs: NOW - 11 * MIN, accessTokenExpiresAtMs: NOW + 24 * 60 * MIN }),
      timing: timing({ keepAliveMs: 10 * MIN }),
    }),
    expect: { kind: 'refresh' },
  },
  // The token liveness probe (spec.probe).
  {
    name: 'probe: a good token whose probe is due is probed first',
    input: input({ probe: { nextAtMs: NOW - 1 } }),
    expect: { kind: 'probe' },
  },
  {
    name: 'probe: a good token whose probe is not due is published, looked at again at the probe',
    input: input({ probe: { nextAtMs: NOW + 30_000 } }),
    expect: { kind: 'publish', dueAtMs: NOW + 30_000 },
  },
  {
    name: 'probe: accepted: published, looked at again at the next probe or the refresh, whichever is first',
    input: input({ probe: { nextAtMs: NOW + 2_000, verdict: 'accepted' } }),
    expect: { kind: 'publish', dueAtMs: NOW + 2_000 },
  },
  {
    name: 'probe: rejected (401): the token is refreshed at once, below the provider floor',
    input: input({
      state: chain({ issuedAtMs: NOW - 20_000 }),
      timing: timing({ minIntervalMs: 570_000 }),
      probe: { nextAtMs: NOW + MIN, verdict: 'rejected' },
    }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'probe: rejected, but the absolute gap since the last request still holds',
    input: input({
      state: chain({ issuedAtMs: NOW - 2_000 }),
      probe: { nextAtMs: NOW + MIN, verdict: 'rejected' },
    }),
    expect: { kind: 'back-off', untilMs: NOW - 2_000 + 10_000 },
  },
  {
    name: 'probe: rejected while failing: the backoff still holds',
    input: input({ status: failing(NOW + MIN), probe: { nextAtMs: NOW + MIN, verdict: 'rejected' } }),
    expect: { kind: 'back-off', untilMs: NOW + MIN },
  },
  {
    name: 'probe: inconclusive: published as if accepted',
    input: input({ probe: { nextAtMs: NOW + MIN, verdict: 'inconclusive' } }),
    expect: { kind: 'publish' },
  },
  // Exact Online: a lost answer's token stays usable until its never-seen successor is used.
  ...(() => {
    const exact = timing({ reusableUntilSuccessorUsed: true, minIntervalMs: 570_000 });
    // The retry waits for request timeout + floor + margin since the lost request's claim.
    const retryAt = (ageMs: number): number => NOW - ageMs + 30_000 + 570_000 + 5_000;
    const lost = (holder: string, ageMs: number, expiresInMs: number): ChainState =>
      chain({ claim: claim(holder, ageMs), accessTokenExpiresAtMs: NOW + expiresInMs });
    return [
      {
        name: "Exact: a dead replica's lost answer waits for the floor, then presents the same token, never settles or breaks",
        input: input({ state: lost('replica-b', 200_000, -MIN), timing: exact }),
        expect: { kind: 'fail' },
        recheckAtMs: retryAt(200_000),
        reason: 'RefreshResponseLost',
      },
      {
        name: 'Exact: while the old access token is still valid, look again when it expires (Ready turns False on time)',
        input: input({ state: lost(ME, 40_000, 20_000), timing: exact }),
        expect: { kind: 'fail' },
        recheckAtMs: NOW + 20_000,
        reason: 'RefreshResponseLost',
      },
      {
        name: 'Exact: once the floor since the lost request has passed, the same token is presented again',
        input: input({ state: lost('replica-b', 610_000, -MIN), timing: exact }),
        expect: { kind: 'refresh', retry: 'successor-unused' },
      },
      {
        name: 'Exact: with recovery configured and the access token expiring before the retry, log in instead',
        input: input({ state: lost('replica-b', 200_000, -MIN), timing: exact, login }),
        expect: { kind: 'recover' },
      },
      {
        name: 'Exact: a login budget spent falls back to waiting for the retry, not to a broken chain',
        input: input({
          state: lost('replica-b', 200_000, -MIN),
          timing: exact,
          login: { ...login, maxAttemptsPerHour: 1 },
          status: { ...recorded(chain()), loginAttempts: [iso(NOW - MIN)] },
        }),
        expect: { kind: 'fail' },
        recheckAtMs: retryAt(200_000),
        reason: 'RefreshResponseLost',
      },
      {
        name: 'Exact: a young claim of another live replica is still waited for first',
        input: input({ state: lost('replica-b', 20_000, MIN), timing: exact }),
        expect: { kind: 'wait-for-claim' },
      },
      {
        name: 'Exact: the retry still respects a running backoff',
        input: input({
          state: lost('replica-b', 610_000, -MIN),
          timing: exact,
          status: failing(NOW + MIN),
        }),
        expect: { kind: 'back-off', untilMs: NOW + MIN },
      },
    ] satisfies Row[];
  })(),
  {
    name: 'a claim on a grant that consumes nothing is void: the expired token is simply requested',
    input: input({
      grant: 'clientCredentials',
      seed: undefined,
      state: chain({
        claim: { ...claim(ME, 40_000), presented: undefined },
        accessTokenExpiresAtMs: NOW - 1,
      }),
    }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'a login claim left by a dead replica is void once old: the broken chain logs in again',
    input: input({
      state: chain({
        claim: { ...claim('replica-b', 200_000), presented: undefined },
        broken: { reason: 'X', atMs: NOW },
      }),
      login,
    }),
    expect: { kind: 'recover' },
  },
  {
    name: 'a claim of another replica inside the grace window presents the same token again at once',
    input: input({
      state: chain({ claim: claim('replica-b', 5_000) }),
      timing: timing({ graceWindowMs: 30_000 }),
    }),
    expect: { kind: 'refresh', retry: 'grace' },
  },
  {
    name: 'a retry after a lost answer waits out the backoff',
    input: input({ state: chain({ claim: claim(ME, 2_000) }), status: failing(NOW + 30_000) }),
    expect: { kind: 'back-off', untilMs: NOW + 30_000 },
  },
  // Broken chains.
  {
    name: 'a broken chain without recovery stays broken',
    input: input({ state: chain({ broken: { reason: 'RefreshTokenReused', atMs: NOW } }) }),
    expect: { kind: 'fail' },
    reason: 'RefreshTokenReused',
  },
  {
    name: 'a broken chain with recovery logs in',
    input: input({ state: chain({ broken: { reason: 'RefreshTokenReused', atMs: NOW } }), login }),
    expect: { kind: 'recover' },
  },
  {
    name: 'a broken chain whose login budget is spent waits for it',
    input: input({
      state: chain({ broken: { reason: 'RefreshTokenReused', atMs: NOW } }),
      login: { ...login, maxAttemptsPerHour: 2 },
      status: { ...recorded(chain()), loginAttempts: [iso(NOW - 10 * MIN), iso(NOW - 5 * MIN)] },
    }),
    expect: { kind: 'fail' },
    reason: 'LoginAttemptsExhausted',
  },
  {
    name: 'a rejected password blocks the next login until the credentials change',
    input: input({
      state: chain({ broken: { reason: 'RefreshTokenReused', atMs: NOW } }),
      login,
      status: {
        ...recorded(chain()),
        loginAttempts: [iso(NOW - 5 * MIN)],
        loginBlockedCredentials: 'creds-1',
      },
    }),
    expect: { kind: 'fail' },
    reason: 'LoginFailed',
  },
  {
    name: 'a broken chain with recovery waits out a login backoff',
    input: input({
      state: chain({ broken: { reason: 'RefreshTokenReused', atMs: NOW } }),
      login,
      status: failing(NOW + 5 * MIN),
    }),
    expect: { kind: 'back-off' },
  },
  {
    name: 'no refresh token and a login configured: bootstrap by logging in',
    input: input({ state: undefined, status: {}, seed: undefined, login }),
    expect: { kind: 'recover' },
  },
  {
    name: 'no refresh token and no login: NoRefreshToken',
    input: input({ state: undefined, status: {}, seed: undefined }),
    expect: { kind: 'fail' },
    reason: 'NoRefreshToken',
  },
  {
    name: 'implicit mode with a good token publishes',
    input: input({
      seed: undefined,
      login: { ...login, flow: 'implicit' },
      state: chain({ refreshToken: undefined, implicit: true }),
      status: {},
    }),
    expect: { kind: 'publish' },
  },
  {
    name: 'implicit mode with a due token logs in',
    input: input({
      seed: undefined,
      login: { ...login, flow: 'implicit' },
      state: { ...due, refreshToken: undefined, implicit: true },
      status: {},
    }),
    expect: { kind: 'recover' },
  },
  // The password grant never tries a rejected password again.
  {
    name: 'a password grant whose password was rejected makes no further attempt',
    input: input({
      grant: 'password',
      seed: undefined,
      passwordVersion: 'pw-1',
      state: due,
      status: { ...recorded(due), loginBlockedCredentials: 'pw-1' },
    }),
    expect: { kind: 'fail' },
    reason: 'LoginFailed',
  },
  {
    name: 'a rejected password inside its backoff: nothing, not even a status write',
    input: input({
      grant: 'password',
      seed: undefined,
      passwordVersion: 'pw-1',
      state: due,
      status: failing(NOW + 10 * MIN, { loginBlockedCredentials: 'pw-1' }),
    }),
    expect: { kind: 'back-off' },
  },
  {
    name: 'changed credentials Secrets lift the block at once',
    input: input({
      grant: 'password',
      seed: undefined,
      passwordVersion: 'pw-2',
      inputsVersion: 'inputs-2',
      state: due,
      status: failing(NOW + 10 * MIN, { loginBlockedCredentials: 'pw-1' }),
    }),
    expect: { kind: 'refresh' },
  },
  // A password that starts a chain (FOLIO): one login starts it, refreshes rotate it, and a broken or
  // lost chain is started again by one login, never with a rejected password.
  {
    name: 'a password chain without a refresh token starts one by logging in',
    input: input({ ...passwordChain, state: undefined, status: {} }),
    expect: {
      kind: 'start-chain',
      why: { kind: 'chain_broken', reason: 'NoRefreshToken', message: anyText },
    },
  },
  {
    name: 'a password chain with a good token publishes',
    input: input({ ...passwordChain }),
    expect: { kind: 'publish' },
  },
  {
    name: 'a password chain with a due token refreshes (its refresh token, not the password)',
    input: input({ ...passwordChain, state: due, status: recorded(due) }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'a broken password chain logs in to start a new one',
    input: input({
      ...passwordChain,
      state: chain({ broken: { reason: 'RefreshTokenRejected', atMs: NOW } }),
    }),
    expect: {
      kind: 'start-chain',
      why: { kind: 'chain_broken', reason: 'RefreshTokenRejected', message: anyText },
    },
  },
  {
    name: 'a broken password chain whose password was rejected makes no attempt',
    input: input({
      ...passwordChain,
      state: chain({ broken: { reason: 'RefreshTokenRejected', atMs: NOW } }),
      status: { ...recorded(chain()), loginBlockedCredentials: 'pw-1' },
    }),
    expect: { kind: 'fail' },
    reason: 'LoginFailed',
  },
  {
    name: 'a broken password chain inside a backoff waits for it',
    input: input({
      ...passwordChain,
      state: chain({ broken: { reason: 'RefreshTokenRejected', atMs: NOW } }),
      status: failing(NOW + 5 * MIN),
    }),
    expect: { kind: 'back-off' },
  },
  {
    name: 'a broken password chain restarted 4 times in the last hour waits until the oldest is an hour old',
    input: input({
      ...passwordChain,
      state: chain({ broken: { reason: 'RefreshTokenRejected', atMs: NOW } }),
      status: {
        ...recorded(chain()),
        loginAttempts: [iso(NOW - 50 * MIN), iso(NOW - 30 * MIN), iso(NOW - 20 * MIN), iso(NOW - MIN)],
      },
    }),
    expect: { kind: 'fail' },
    reason: 'LoginAttemptsExhausted',
    recheckAtMs: NOW + 10 * MIN,
  },
  {
    name: 'a broken password chain restarted 3 times in the last hour (and more before) logs in again',
    input: input({
      ...passwordChain,
      state: chain({ broken: { reason: 'RefreshTokenRejected', atMs: NOW } }),
      status: {
        ...recorded(chain()),
        loginAttempts: [
          iso(NOW - 90 * MIN),
          iso(NOW - 61 * MIN),
          iso(NOW - 30 * MIN),
          iso(NOW - 20 * MIN),
          iso(NOW - MIN),
        ],
      },
    }),
    expect: { kind: 'start-chain' },
  },
  {
    name: 'a password chain whose state went back in time logs in, never presenting the old token',
    input: input({
      ...passwordChain,
      state: chain({ rotations: 0, refreshToken: 'restored' }),
      status: recorded(chain()),
    }),
    expect: { kind: 'start-chain', why: { kind: 'chain_broken', reason: 'StateLost', message: anyText } },
  },
  {
    name: 'a password chain refresh whose answer was lost is settled, not presented again',
    input: input({ ...passwordChain, state: chain({ claim: claim(ME, 2 * MIN) }) }),
    expect: { kind: 'settle' },
  },
  {
    name: 'a password chain refresh lost beyond settling breaks the chain',
    input: input({ ...passwordChain, state: chain({ claim: claim(ME, 2 * MIN) }), introspection: 'unknown' }),
    expect: { kind: 'mark-broken' },
    reason: 'RefreshResponseLost',
  },
  {
    name: 'a password chain login cut off by a crash is void: log in again',
    input: input({
      ...passwordChain,
      state: {
        connectionUID: UID,
        chainGeneration: 0,
        rotations: 0,
        claim: { ...claim(ME, 2 * MIN), presented: undefined },
      },
      status: {},
    }),
    expect: { kind: 'start-chain' },
  },
  // Schedule, backoff, hot loops.
  {
    name: 'a good token not yet due is published, nothing requested',
    input: input(),
    expect: { kind: 'publish' },
  },
  {
    name: 'a due token is refreshed',
    input: input({ state: due, status: recorded(due) }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'an expired token is refreshed',
    input: input({ state: chain({ accessTokenExpiresAtMs: NOW - 1 }), status: recorded(chain()) }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'an event on a failing connection inside its backoff sends nothing',
    input: input({ state: due, status: failing(NOW + 4 * MIN) }),
    expect: { kind: 'back-off', untilMs: NOW + 4 * MIN },
  },
  {
    name: 'a backoff that is over lets the refresh go',
    input: input({ state: due, status: failing(NOW - 1) }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'a spec change lifts the backoff',
    input: input({ state: due, generation: 2, status: failing(NOW + 4 * MIN) }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'a spec change lifts the backoff, but not the absolute gap after the failure',
    input: input({
      state: due,
      generation: 2,
      status: failing(NOW + 4 * MIN, { lastFailureTime: iso(NOW - 3_000) }),
    }),
    expect: { kind: 'back-off', untilMs: NOW - 3_000 + 10_000 },
  },
  {
    name: 'a changed input Secret lifts the backoff',
    input: input({ state: due, inputsVersion: 'inputs-2', status: failing(NOW + 4 * MIN) }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'the provider floor holds a refresh back (too early)',
    input: input({
      state: chain({ issuedAtMs: NOW - 100_000, accessTokenExpiresAtMs: NOW + 10_000 }),
      timing: timing({ minIntervalMs: 570_000 }),
    }),
    expect: { kind: 'publish', dueAtMs: NOW - 100_000 + 570_000 },
  },
  {
    name: 'hot loop: a token already expired when stored waits out the gap before the next request',
    input: input({
      state: chain({ issuedAtMs: NOW - 2_000, accessTokenExpiresAtMs: NOW - 1_000 }),
      status: recorded(chain()),
    }),
    expect: { kind: 'back-off', untilMs: NOW - 2_000 + 10_000 },
  },
  {
    name: 'hot loop: a failure answered at once is followed by nothing before the absolute gap',
    input: input({ state: due, status: failing(NOW - 1, { lastFailureTime: iso(NOW - 2_000) }) }),
    expect: { kind: 'back-off', untilMs: NOW - 2_000 + 10_000 },
  },
  {
    // Exact's shape: a 600 s token, spec minInterval 300 s (below the provider's 570 s), refused as
    // too early at 389 s; the retry planned just before expiry (585 s) goes then, not at 389 + 300 s.
    name: 'the floor counts from the token issued, not from a failure: a too-early retry goes at 585 s',
    input: input({
      state: chain({ issuedAtMs: NOW - 585_000, accessTokenExpiresAtMs: NOW + 15_000 }),
      status: failing(NOW, { lastFailureTime: iso(NOW - 196_000) }),
      timing: timing({ minIntervalMs: 300_000 }),
    }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'the floor counts from the token issued: a 503 at the 570 s floor is retried 2 s later, not at 1140 s',
    input: input({
      state: chain({ issuedAtMs: NOW - 572_000, accessTokenExpiresAtMs: NOW + 28_000 }),
      status: failing(NOW, { lastFailureTime: iso(NOW - 2_000), failedAttempts: 1 }),
      timing: timing({ minIntervalMs: 570_000, minRequestGapMs: 2_000 }),
    }),
    expect: { kind: 'refresh' },
  },
  {
    name: 'hot loop: before ≥ lifetime still waits the minimum gap',
    input: input({
      state: chain({ issuedAtMs: NOW - 5_000, accessTokenExpiresAtMs: NOW + 55_000 }),
      timing: timing({ beforeMs: 3_600_000 }),
    }),
    expect: { kind: 'publish', dueAtMs: NOW - 5_000 + 10_000 },
  },
  {
    name: 'hot loop: keepAlive 0 still waits a minute (the smallest keepAlive the CRD allows)',
    input: input({
      state: chain({ issuedAtMs: NOW - 5_000, accessTokenExpiresAtMs: NOW + 3_595_000 }),
      timing: timing({ keepAliveMs: 0 }),
    }),
    expect: { kind: 'publish', dueAtMs: NOW - 5_000 + 60_000 },
  },
];

describe('decide', () => {
  it('has a row for every rule family (at least 40)', () => {
    expect(rows.length).toBeGreaterThanOrEqual(40);
  });

  it.each(rows)('$name', ({ input: given, expect: expected, reason, recheckAtMs }) => {
    const action = decide(given, NOW);
    expect(action).toMatchObject(expected);
    if (recheckAtMs !== undefined) {
      expect(action.kind === 'fail' ? action.failure.recheckAtMs : undefined).toBe(recheckAtMs);
    }
    if (reason !== undefined) {
      const got =
        action.kind === 'fail' ? action.failure.reason : action.kind === 'mark-broken' ? action.reason : '';
      expect(got).toBe(reason);
    }
  });

  it('never presents a token on a state it judged lost, whatever else holds', () => {
    for (const status of [recorded(chain()), failing(NOW - 1)]) {
      const action = decide(input({ state: chain({ rotations: 0, refreshToken: 'restored' }), status }), NOW);
      expect(action.kind).not.toBe('refresh');
      expect(action.kind).not.toBe('settle');
    }
  });
});

describe('stateLost', () => {
  it.each([
    ['no status record', undefined, {}, false],
    ['a current state', chain(), recorded(chain()), false],
    ['a missing state', undefined, recorded(chain()), true],
    ['fewer rotations', chain({ rotations: 2 }), recorded(chain()), true],
    ['more rotations', chain({ rotations: 4 }), recorded(chain()), false],
  ] as const)('%s', (_name, state, status, lost) => {
    expect(stateLost(state, status)).toBe(lost);
  });
});

describe('next-state builders', () => {
  const tokens = { accessToken: 'at-2', tokenType: 'Bearer', expiresInSec: 600, refreshToken: 'rt-3' };

  it('a seed import starts a generation above both the lost state and status', () => {
    expect(afterSeedImport(undefined, UID, SEED, 4)).toMatchObject({
      chainGeneration: 5,
      rotations: 0,
      refreshToken: SEED,
    });
    expect(afterSeedImport(chain({ chainGeneration: 7, totpLastStep: 9 }), UID, SEED, 4)).toMatchObject({
      chainGeneration: 8,
      totpLastStep: 9,
    });
  });

  it('tokens clear the claim, rotate the refresh token and count the rotation', () => {
    const { state } = afterTokens(chain({ claim: claim(ME, 1) }), tokens, {
      nowMs: NOW,
      assumedLifetimeMs: 3_600_000,
      keepsRefreshToken: true,
      presented: RT,
    });
    expect(state).toMatchObject({
      refreshToken: 'rt-3',
      rotations: 4,
      accessTokenExpiresAtMs: NOW + 600_000,
    });
    expect(state.claim).toBeUndefined();
    expect('previousRefreshToken' in state).toBe(false);
  });

  it('a slow answer: expiry counted from when the request left, the floor from when the answer came', () => {
    const { state } = afterTokens(chain(), tokens, {
      nowMs: NOW,
      sentAtMs: NOW - 12_000,
      assumedLifetimeMs: 3_600_000,
      keepsRefreshToken: true,
      presented: RT,
    });
    expect(state).toMatchObject({ issuedAtMs: NOW, accessTokenExpiresAtMs: NOW - 12_000 + 600_000 });
  });

  it('an unchanged refresh token is kept and not counted as a rotation', () => {
    const { state } = afterTokens(
      chain(),
      { ...tokens, refreshToken: RT },
      {
        nowMs: NOW,
        assumedLifetimeMs: 3_600_000,
        keepsRefreshToken: true,
        presented: RT,
      },
    );
    expect(state).toMatchObject({ refreshToken: RT, rotations: 3 });
  });

  it.each([
    [0, true],
    [0.5, true],
    [1e13, true],
    [5, false],
    [600, false],
  ])('expires_in %s is %s ignored', (expiresIn, ignored) => {
    const planned = plannedLifetime(expiresIn, 3_600_000);
    expect(planned.ignored).toBe(ignored);
    expect(planned.lifetimeMs).toBe(ignored ? 3_600_000 : expiresIn * 1000);
    // No date arithmetic can throw with what comes out.
    expect(() => new Date(NOW + planned.lifetimeMs).toISOString()).not.toThrow();
  });

  it('failures: in doubt keeps the claim, a rejected chain is marked broken, relocate stores the geolocation, too early clears the claim', () => {
    const claimed = chain({ claim: claim(ME, 1) });
    const error = (code: TokenError['code'], extra: { geolocation?: string } = {}) =>
      new TokenError({ code, reason: 'R', message: 'm', ...extra });
    expect(afterFailure(claimed, error('in_doubt'), NOW).claim).toBeDefined();
    expect(afterFailure(claimed, error('chain_broken'), NOW)).toMatchObject({
      broken: { reason: 'R', atMs: NOW },
    });
    expect(
      afterFailure(claimed, error('relocate', { geolocation: 'https://eu.example.com' }), NOW),
    ).toMatchObject({
      geolocation: 'https://eu.example.com',
    });
    expect(afterFailure(claimed, error('too_early'), NOW).claim).toBeUndefined();
    expect(markBroken(claimed, 'RefreshResponseLost', NOW).claim).toBeUndefined();
  });

  it('a login starts a new chain above status, drops the old token, and keeps the TOTP step', () => {
    const next = afterLogin(
      chain({ broken: { reason: 'X', atMs: NOW } }),
      UID,
      { ...tokens, flow: 'code' },
      {
        nowMs: NOW,
        assumedLifetimeMs: 3_600_000,
        statusGeneration: 3,
        totpStep: 42,
      },
    );
    expect(next).toMatchObject({ chainGeneration: 4, rotations: 0, refreshToken: 'rt-3', totpLastStep: 42 });
    expect(next.broken).toBeUndefined();
    const implicit = afterLogin(
      chain({ implicit: true, refreshToken: undefined }),
      UID,
      { ...tokens, flow: 'implicit' },
      {
        nowMs: NOW,
        assumedLifetimeMs: 3_600_000,
        statusGeneration: 1,
      },
    );
    expect(implicit).toMatchObject({ chainGeneration: 1, rotations: 4, implicit: true });
    expect(implicit.refreshToken).toBeUndefined();
  });

  it.each([
    { name: 'the answer names one', stored: US, answered: EU, expected: EU },
    { name: 'the answer names none', stored: US, answered: undefined, expected: US },
    { name: 'a first login names one', stored: undefined, answered: EU, expected: EU },
  ])('a login keeps the geolocation with the new chain: $name', ({ stored, answered, expected }) => {
    const next = afterLogin(
      chain(stored !== undefined ? { geolocation: stored } : {}),
      UID,
      { ...tokens, flow: 'direct', ...(answered !== undefined ? { geolocation: answered } : {}) },
      { nowMs: NOW, assumedLifetimeMs: 3_600_000, statusGeneration: 1 },
    );
    expect(next.geolocation).toBe(expected);
  });
});

describe('relocationTarget: a token request sent again at the geolocation named (Concur code 16)', () => {
  const error = (code: TokenError['code'], geolocation?: string): TokenError =>
    new TokenError({
      code,
      reason: 'R',
      message: 'm',
      ...(geolocation !== undefined ? { geolocation } : {}),
    });
  it.each([
    { name: 'the first move of a reconcile: there', err: error('relocate', EU), already: false, to: EU },
    { name: 'a second move in a row: a failure', err: error('relocate', EU), already: true, to: undefined },
    { name: 'a move naming no geolocation', err: error('relocate'), already: false, to: undefined },
    // Concur names a geolocation in every error body: only code 16 is a move.
    {
      name: 'a broken chain with a geolocation',
      err: error('chain_broken', EU),
      already: false,
      to: undefined,
    },
    { name: 'a configuration error', err: error('configuration', US), already: false, to: undefined },
    { name: 'an outage', err: error('transient'), already: false, to: undefined },
  ])('$name', ({ err, already, to }) => {
    expect(relocationTarget(err, already)).toBe(to);
  });
});

describe('minRequestGap and dueAt', () => {
  it.each([
    [0, 0, 10_000],
    [570_000, 600_000, 570_000],
    [0, 3_600_000, 360_000],
  ])('minInterval %s, lifetime %s → %s', (minInterval, lifetime, gap) => {
    expect(minRequestGap({ minIntervalMs: minInterval, minRequestGapMs: 10_000 }, lifetime)).toBe(gap);
  });

  it('is never earlier than the gap after issue, whatever before and keepAlive say', () => {
    const state = chain({ issuedAtMs: NOW, accessTokenExpiresAtMs: NOW });
    const spinning = timing({ beforeMs: 1e9, keepAliveMs: 0, propagationMs: 0 });
    expect(dueAt({ connectionUID: UID, timing: spinning }, state, NOW)).toBe(NOW + 10_000);
  });
});
