// The chain engine's rules, as one pure function: given everything a reconcile gathered about a
// connection's refresh-token chain, what to do next. No I/O, no clock (the caller passes nowMs).
// The reconciler executes the action and, for the steps that change what is known (a seed
// imported, an in-doubt request settled, a chain marked broken), asks again.
//
// The safety argument of the operator lives here (docs/architecture.md, "The safety argument"):
// - A refresh token is presented only by the writer that holds a fresh claim on it, never while
//   another replica's claim may still be in flight, and never again once it may have been consumed,
//   unless the provider's grace window or its own introspection says it is still good.
// - A seed is presented only by the connection it was handed to (the consumed-by mark on the seed
//   Secret), and a state Secret that vanished or went back in time is recognised from status and
//   never presented.
// - A failing connection is not retried before its backoff is over, whatever event woke it; only a
//   spec change or a changed input Secret lifts the backoff.
// - No spec or provider answer can make token requests come faster than minRequestGap allows.
import type { LoginFlow, OAuthConnectionStatus } from '../../api/v1alpha1.ts';
import type { IntrospectionVerdict, ProbeVerdict, TokenError } from '../../oauth/index.ts';
import { DEFAULT_MAX_ATTEMPTS_PER_HOUR, loginGate } from '../recovery.ts';
import { nextRefreshAt, type RefreshTiming } from '../schedule.ts';
import type { ChainState } from '../state-store.ts';
import { fingerprint } from '../state-store.ts';
import type { Failure } from '../status.ts';

/** Timer tolerance: a backoff that ends within this is treated as over. */
const BACKOFF_TOLERANCE_MS = 1_000;

export interface SeedView {
  /** Fingerprint of the seed Secret's current refresh token. */
  fingerprint: string;
  /** The consumed-by mark on the seed Secret: which connection imported which value. */
  consumedBy?: { uid: string; fingerprint: string };
}

export interface ChainTiming extends RefreshTiming {
  /** The absolute floor between two token requests of one connection (operator flag, default 10 s). */
  minRequestGapMs: number;
  /** How long the provider still accepts a token presented again after a lost answer. */
  graceWindowMs: number;
  /**
   * How long another replica's claim is treated as in flight: request timeout + persist budget +
   * lease duration. A younger claim held by someone else is waited for, not judged.
   */
  claimTimeoutMs: number;
  /** The longest a token request may take before it is abandoned (--request-timeout). */
  requestTimeoutMs: number;
  /**
   * The provider keeps a presented refresh token usable until its successor is first used (Exact
   * Online): a lost answer is settled by presenting the same token again after minIntervalMs.
   */
  reusableUntilSuccessorUsed: boolean;
}

export interface ChainInput {
  connectionUID: string;
  /** metadata.generation of the connection. */
  generation: number | undefined;
  /** This replica's identity (the Lease holder name). */
  identity: string;
  grant: 'refreshToken' | 'clientCredentials' | 'password';
  /** The password grant's credentials version, when the grant is password. */
  passwordVersion?: string;
  /**
   * The password grant's answer starts a refresh-token chain (FOLIO): the chain is rotated with its
   * refresh token like any other, and started (again) by one login with the grant's password.
   */
  passwordStartsChain?: boolean;
  /** spec.recovery.login, with the version of its credentials. */
  login?: { flow: LoginFlow; maxAttemptsPerHour?: number; credentialsVersion: string };
  seed?: SeedView;
  /** The state Secret's content; undefined when there is none (or it belongs to a deleted namesake). */
  state: ChainState | undefined;
  /** The status as read live at the start of the reconcile (plus what this reconcile wrote). */
  status: OAuthConnectionStatus;
  /** Identifies the referenced Secrets' versions; a change lifts a backoff. */
  inputsVersion: string;
  timing: ChainTiming;
  /** The provider's verdict on the presented token of an in-doubt claim, once asked. */
  introspection?: IntrospectionVerdict;
  /** The token liveness probe (spec.probe): when it is next due, and its verdict in this reconcile. */
  probe?: { nextAtMs: number; verdict?: ProbeVerdict };
}

/**
 * Why a token whose answer may have been lost is presented again: inside the provider's grace
 * window, the provider's introspection says it is active, or the provider keeps it usable until
 * its (never seen, so never used) successor is used.
 */
export type RefreshRetry = 'grace' | 'introspection' | 'successor-unused';

export type Action =
  /** Start a new chain from the seed Secret (a first import, or the user re-seeded). */
  | { kind: 'import-seed' }
  /** Mark the seed Secret consumed by this connection before its token is ever presented. */
  | { kind: 'mark-seed-consumed' }
  /** The access token is good: make the output Secret match the state; look again at dueAtMs. */
  | { kind: 'publish'; dueAtMs: number }
  /** Claim, request, persist, publish. `retry` when a previous claim is presented again. */
  | { kind: 'refresh'; retry?: RefreshRetry }
  /** Call the probe endpoint with the access token, then decide again with its verdict. */
  | { kind: 'probe' }
  /** Ask the provider (RFC 7662) whether the in-doubt token is still active, then decide again. */
  | { kind: 'settle' }
  /** Another replica's claim may still be in flight: do nothing until untilMs. */
  | { kind: 'wait-for-claim'; untilMs: number; holder: string }
  /** The chain is dead: record it so its token is never presented again, then decide again. */
  | { kind: 'mark-broken'; reason: string; detail: string }
  /** Start a new chain (or, in implicit mode, get the next access token) by logging in. */
  | { kind: 'recover'; attempts: string[]; why: Failure }
  /** Start a new chain by logging in with the password grant's credentials (passwordStartsChain). */
  | { kind: 'start-chain'; why: Failure }
  /** Nothing can be done now: record the failure in status. */
  | { kind: 'fail'; failure: Failure }
  /** A failing connection's backoff is not over: no request, no status change, look again later. */
  | { kind: 'back-off'; untilMs: number };

/** The caps on the loop guard stop here: the CRD's smallest keepAlive. */
const LOOP_GUARD_FLOOR_MS = 60_000;

/**
 * The smallest gap between two token requests of one connection, whatever the spec or the provider
 * says. A tenth of the access token's lifetime keeps a provider that answers ever shorter tokens from
 * driving a refresh loop; keepAlive and a refresh token that expires sooner (Keycloak's session idle)
 * cap that share, or a chain with long access tokens would die of idleness.
 */
export function minRequestGap(
  timing: Pick<ChainTiming, 'minIntervalMs' | 'minRequestGapMs' | 'keepAliveMs'>,
  lifetimeMs: number,
  refreshLifeMs?: number,
): number {
  let cap = Infinity;
  if (timing.keepAliveMs !== undefined) cap = timing.keepAliveMs;
  if (refreshLifeMs !== undefined) cap = Math.min(cap, refreshLifeMs / 3);
  const loopGuard = Math.min(lifetimeMs / 10, Math.max(cap, LOOP_GUARD_FLOOR_MS));
  return Math.max(timing.minIntervalMs, timing.minRequestGapMs, loopGuard);
}

/** How long the refresh token lives from its issue, when the provider said (refresh_expires_in). */
function refreshLife(state: ChainState, issuedAtMs: number): number | undefined {
  const expiresAt = state.refreshTokenExpiresAtMs;
  return expiresAt === undefined ? undefined : Math.max(0, expiresAt - issuedAtMs);
}

/** Spreads connections' refreshes deterministically, so a restart does not reshuffle them. */
export function stableJitter(seed: string, rotations: number): number {
  let hash = 2166136261;
  for (const ch of `${seed}/${rotations}`) hash = Math.imul(hash ^ ch.charCodeAt(0), 16777619);
  return ((hash >>> 0) % 10_000) / 10_000;
}

/**
 * The earliest time another token request may be sent. The spacing rules (the provider's floor,
 * spec.refresh.minInterval, the loop guard) count from the last token issued: they are about how
 * often a chain may be moved on. From the last failure only the operator's absolute gap counts;
 * the failure's own backoff (status.nextRefreshTime, gated) spaces the retries. Measured from a
 * failure, the provider's floor would push a retry past the token's expiry: a 503 at Exact's 570 s
 * retried at 1140 s, a too-early answer at 389 s retried at 689 s instead of 585 s. An access token
 * the probe saw rejected is replaced at once, below the provider's floor (a chain revoked from
 * outside answers that it is broken; a live one at worst answers too early, once per rejected
 * token): only the absolute gap holds then.
 */
function requestFloor(input: ChainInput, state: ChainState, tokenRejected: boolean): number | undefined {
  const floors: number[] = [];
  const issued = state.issuedAtMs;
  if (issued !== undefined) {
    const lifetime = Math.max(0, (state.accessTokenExpiresAtMs ?? issued) - issued);
    const gap = tokenRejected
      ? input.timing.minRequestGapMs
      : minRequestGap(input.timing, lifetime, refreshLife(state, issued));
    floors.push(issued + gap);
  }
  const lastFailure = Date.parse(input.status.lastFailureTime ?? '');
  if (Number.isFinite(lastFailure)) floors.push(lastFailure + input.timing.minRequestGapMs);
  return floors.length > 0 ? Math.max(...floors) : undefined;
}

/** When the chain's access token is due for refresh. */
export function dueAt(
  input: Pick<ChainInput, 'connectionUID' | 'timing'>,
  state: ChainState,
  nowMs: number,
): number {
  const issuedAtMs = state.issuedAtMs ?? nowMs;
  const expiresAtMs = state.accessTokenExpiresAtMs ?? nowMs;
  const lifetime = Math.max(0, expiresAtMs - issuedAtMs);
  return nextRefreshAt({
    ...input.timing,
    minIntervalMs: minRequestGap(input.timing, lifetime, refreshLife(state, issuedAtMs)),
    nowMs,
    issuedAtMs,
    expiresAtMs,
    ...(state.refreshTokenExpiresAtMs !== undefined
      ? { refreshExpiresAtMs: state.refreshTokenExpiresAtMs }
      : {}),
    jitter: stableJitter(input.connectionUID, state.rotations),
  });
}

function failure(
  kind: Failure['kind'],
  reason: string,
  message: string,
  extra: Partial<Failure> = {},
): Action {
  return { kind: 'fail', failure: { kind, reason, message, ...extra } };
}

/** What is known of a broken chain: its generation, the reason and the detail. */
export function brokenCause(state: ChainState | undefined, reason: string, detail?: string): string {
  return `refresh-token chain ${state?.chainGeneration ?? 0} is broken (${reason})${detail ? `: ${detail}` : ''}`;
}

export function brokenMessage(state: ChainState | undefined, reason: string, detail?: string): string {
  return `${brokenCause(state, reason, detail)}; re-seed it by changing the seed Secret, or configure spec.recovery.login`;
}

/** The state Secret is behind what status says the chain had reached: deleted, or restored from an old copy. */
export function stateLost(state: ChainState | undefined, status: OAuthConnectionStatus): boolean {
  const generation = status.chainGeneration ?? 0;
  const known = status.refreshTokenFingerprint;
  if (generation < 1 || known === undefined || known === '') return false;
  if (state === undefined) return true;
  if (state.chainGeneration !== generation) return state.chainGeneration < generation;
  const rotations = status.rotations ?? 0;
  if (state.rotations !== rotations) return state.rotations < rotations;
  return state.refreshToken === undefined || fingerprint(state.refreshToken) !== known;
}

/** Until when a failing connection must not send another request; undefined when it may. */
function backoffUntil(input: ChainInput, nowMs: number): number | undefined {
  const { status } = input;
  if ((status.failedAttempts ?? 0) === 0 || status.nextRefreshTime === undefined) return undefined;
  // A new spec or changed input Secrets are a person's answer to the failure: try at once.
  if (status.observedGeneration !== input.generation) return undefined;
  if (status.inputsVersion !== undefined && status.inputsVersion !== input.inputsVersion) return undefined;
  const until = Date.parse(status.nextRefreshTime);
  return Number.isFinite(until) && nowMs + BACKOFF_TOLERANCE_MS < until ? until : undefined;
}

/** A request-making action, unless a backoff holds it back. */
function gated(input: ChainInput, nowMs: number, action: Action): Action {
  const until = backoffUntil(input, nowMs);
  return until === undefined ? action : { kind: 'back-off', untilMs: until };
}

/** A recovery login, unless the backoff or the login budget holds it back. */
function recover(input: ChainInput, nowMs: number, why: Failure): Action {
  // A password chain logs in with its own credentials, never with ones the provider rejected.
  if (input.passwordStartsChain === true) {
    return (
      passwordBlocked(input, nowMs) ??
      restartsExhausted(input, nowMs) ??
      gated(input, nowMs, { kind: 'start-chain', why })
    );
  }
  const login = input.login;
  if (login === undefined) return { kind: 'fail', failure: why };
  const gate = loginGate(input.status, login.maxAttemptsPerHour, login.credentialsVersion, nowMs);
  if (!gate.allowed) {
    return failure(
      'chain_broken',
      gate.reason ?? 'LoginNotAllowed',
      gate.message ?? 'no recovery login allowed now',
      {
        ...(gate.retryAtMs !== undefined ? { recheckAtMs: gate.retryAtMs } : {}),
      },
    );
  }
  return gated(input, nowMs, { kind: 'recover', attempts: gate.attempts, why });
}

function tokenGood(input: ChainInput, state: ChainState, nowMs: number): number | undefined {
  if (state.accessToken === undefined || state.accessTokenExpiresAtMs === undefined) return undefined;
  if (state.issuedAtMs === undefined || nowMs >= state.accessTokenExpiresAtMs) return undefined;
  const due = dueAt(input, state, nowMs);
  return nowMs < due ? due : undefined;
}

/**
 * The seed rules: import a new one, mark it consumed before its token is presented, refuse one that
 * another connection consumed. A seed is known (not new) when this chain's state or status recorded
 * importing it, or its consumed-by mark names this connection: status and the mark survive a lost
 * state Secret, so a lost state never turns an old seed into a new one.
 */
function seedAction(input: ChainInput, state: ChainState | undefined): Action | undefined {
  const seed = input.seed;
  if (input.grant !== 'refreshToken' || seed === undefined) return undefined;
  const mark = seed.consumedBy?.fingerprint === seed.fingerprint ? seed.consumedBy : undefined;
  const holdsSeed = state?.refreshToken !== undefined && fingerprint(state.refreshToken) === seed.fingerprint;
  if (mark !== undefined && mark.uid !== input.connectionUID) {
    // Another connection imported this very token. Presenting it too would be a reuse that kills
    // both chains. A chain of ours that has moved on from it (rotated, or started by a login) simply
    // ignores the stale seed; one that still holds the seed lost the race and stops.
    if (state?.refreshToken !== undefined && !holdsSeed) return undefined;
    return failure(
      'configuration',
      'SeedConsumed',
      'spec.grant.seedSecretRef: this refresh token was already imported by another OAuthConnection; give each connection its own seed',
    );
  }
  const known =
    mark !== undefined ||
    state?.seedFingerprint === seed.fingerprint ||
    input.status.seedFingerprint === seed.fingerprint;
  if (!known) return { kind: 'import-seed' };
  if (holdsSeed && mark === undefined) return { kind: 'mark-seed-consumed' };
  return undefined;
}

/** Settles a claim left by an earlier attempt: present the same token again, wait, or give the chain up. */
function claimAction(input: ChainInput, state: ChainState, nowMs: number): Action | undefined {
  const claim = state.claim;
  if (claim === undefined) return undefined;
  const age = nowMs - claim.startedAtMs;
  const presentsToken = chained(input) && claim.presented !== undefined;
  // Inside the provider's grace window the token may be presented again whoever holds the claim:
  // the provider accepts it, and a holder still in flight loses its persist to our newer claim.
  if (presentsToken && age <= input.timing.graceWindowMs) {
    return gated(input, nowMs, { kind: 'refresh', retry: 'grace' });
  }
  if (claim.holder !== input.identity && age < input.timing.claimTimeoutMs) {
    return {
      kind: 'wait-for-claim',
      untilMs: claim.startedAtMs + input.timing.claimTimeoutMs,
      holder: claim.holder,
    };
  }
  // Nothing was presented (a grant that consumes nothing, or a login): the claim is simply void.
  if (!presentsToken) return undefined;
  if (input.timing.reusableUntilSuccessorUsed) return successorUnusedRetry(input, state, claim, nowMs);
  if (input.introspection === undefined) return gated(input, nowMs, { kind: 'settle' });
  if (input.introspection === 'active')
    return gated(input, nowMs, { kind: 'refresh', retry: 'introspection' });
  return {
    kind: 'mark-broken',
    reason: 'RefreshResponseLost',
    detail:
      input.introspection === 'inactive'
        ? 'the answer to a refresh was lost and the provider reports the presented token as used'
        : 'the answer to a refresh was lost outside the provider grace window, and the provider cannot say whether the token was used',
  };
}

/** Clock difference between replicas and the provider that the retry after a lost answer allows for. */
const LOST_ANSWER_MARGIN_MS = 5_000;

/**
 * A lost answer at a provider that keeps the presented token usable until its successor is used
 * (Exact Online). The successor went down with the answer and was never used, so the presented token
 * still works, but not before the provider's floor since the lost request could have been answered
 * (earlier is TooEarlyToRefreshTokens, which counts towards the provider's error limit). Meanwhile
 * the access token expires: a configured recovery login, when its budget allows, gets consumers a
 * token sooner; otherwise consumers wait for the retry. The chain is never declared broken here.
 */
function successorUnusedRetry(
  input: ChainInput,
  state: ChainState,
  claim: NonNullable<ChainState['claim']>,
  nowMs: number,
): Action {
  const { timing } = input;
  const retryAtMs =
    claim.startedAtMs + timing.requestTimeoutMs + timing.minIntervalMs + LOST_ANSWER_MARGIN_MS;
  if (nowMs >= retryAtMs) return gated(input, nowMs, { kind: 'refresh', retry: 'successor-unused' });
  const expiresAtMs = state.accessTokenExpiresAtMs ?? nowMs;
  const why: Failure = {
    kind: 'in_doubt',
    reason: 'RefreshResponseLost',
    message: `the answer to a refresh was lost; the provider keeps the presented refresh token usable until its successor is used, so it is presented again at ${new Date(retryAtMs).toISOString()}, after the provider's minimum interval`,
  };
  if (input.login !== undefined && expiresAtMs < retryAtMs) {
    const login = recover(input, nowMs, why);
    if (login.kind === 'recover') return login;
  }
  // Looked at again when the access token expires (Ready turns False on time), then at the retry.
  const recheckAtMs = expiresAtMs > nowMs ? Math.min(expiresAtMs, retryAtMs) : retryAtMs;
  return gated(input, nowMs, { kind: 'fail', failure: { ...why, recheckAtMs } });
}

/** The connection rotates a refresh-token chain: the refreshToken grant, or a password that starts one. */
function chained(input: ChainInput): boolean {
  return input.grant === 'refreshToken' || input.passwordStartsChain === true;
}

export function decide(input: ChainInput, nowMs: number): Action {
  const state = input.state?.connectionUID === input.connectionUID ? input.state : undefined;
  const loginFlow = input.login?.flow;

  const seed = seedAction(input, state);
  if (seed !== undefined) return seed;

  if (chained(input) && loginFlow !== 'implicit' && stateLost(state, input.status)) {
    return recover(input, nowMs, {
      kind: 'chain_broken',
      reason: 'StateLost',
      message:
        'the state Secret holding the refresh token is missing or older than the chain status records (deleted, or restored from a backup); its token is not presented: re-seed by changing the seed Secret, or configure spec.recovery.login',
    });
  }

  if (state !== undefined) {
    const claimed = claimAction(input, state, nowMs);
    if (claimed !== undefined) return claimed;
    if (state.broken !== undefined) {
      return recover(input, nowMs, {
        kind: 'chain_broken',
        reason: state.broken.reason,
        message: brokenMessage(state, state.broken.reason, state.broken.detail),
      });
    }
  }

  if (input.grant === 'refreshToken' && loginFlow === 'implicit') {
    const due = state !== undefined ? tokenGood(input, state, nowMs) : undefined;
    if (due !== undefined) return { kind: 'publish', dueAtMs: due };
    return recover(input, nowMs, {
      kind: 'chain_broken',
      reason: 'LoginRequired',
      message: 'implicit mode: the access token is due and only a login gets the next one',
    });
  }

  if (chained(input) && state?.refreshToken === undefined) {
    return recover(input, nowMs, {
      kind: 'chain_broken',
      reason: 'NoRefreshToken',
      message:
        'there is no refresh token to start from: set spec.grant.seedSecretRef or configure spec.recovery.login',
    });
  }

  const rejected = input.probe?.verdict === 'rejected';
  const due = state !== undefined && !rejected ? tokenGood(input, state, nowMs) : undefined;
  if (due !== undefined) return probeOrPublish(input, nowMs, due);
  // Never two requests closer than the gap, even when the last token is already expired (a provider
  // answering tokens that live less than the gap, or an answer stored long after it came).
  const floor = state !== undefined ? requestFloor(input, state, rejected) : undefined;
  if (floor !== undefined && nowMs < floor) return { kind: 'back-off', untilMs: floor };
  const blocked = passwordBlocked(input, nowMs);
  if (blocked !== undefined) return blocked;
  return gated(input, nowMs, { kind: 'refresh' });
}

/** A good access token: probe it when the probe is due, else publish and look again at the earlier of both. */
function probeOrPublish(input: ChainInput, nowMs: number, dueAtMs: number): Action {
  const probe = input.probe;
  if (probe === undefined) return { kind: 'publish', dueAtMs };
  if (probe.verdict === undefined && nowMs >= probe.nextAtMs) return { kind: 'probe' };
  return { kind: 'publish', dueAtMs: Math.min(dueAtMs, probe.nextAtMs) };
}

/**
 * A password chain (FOLIO) restarted as often in the last hour as a recovery login may be tried: each
 * restart is a password login, so a chain that keeps breaking (another client presenting the same
 * refresh token, which on FOLIO revokes every token of the user) must not turn into a login every
 * few minutes that the provider's or a directory's lock-out would count. The restarts are the login
 * attempts status records (startChain reports each before it is made).
 */
function restartsExhausted(input: ChainInput, nowMs: number): Action | undefined {
  // FOLIO offers no spec.recovery.login (the password is the recovery), so the limit is the default.
  const max = DEFAULT_MAX_ATTEMPTS_PER_HOUR;
  // The rejected-password case is passwordBlocked's; only the count is asked here.
  const gate = loginGate(input.status, max, input.passwordVersion ?? '', nowMs);
  if (gate.allowed) return undefined;
  return failure(
    'chain_broken',
    'LoginAttemptsExhausted',
    `${String(gate.attempts.length)} logins in the last hour to start a new chain reached the limit of ${String(max)}; the next is allowed an hour after the oldest`,
    gate.retryAtMs !== undefined ? { recheckAtMs: gate.retryAtMs } : {},
  );
}

/**
 * The password grant after the provider rejected the password: no further attempt with the same
 * credentials until their Secrets change (a new version lifts it), so the operator never locks the
 * account. Only the backoff's end rewrites the status; events in between send nothing.
 */
function passwordBlocked(input: ChainInput, nowMs: number): Action | undefined {
  if (input.grant !== 'password' || input.passwordVersion === undefined) return undefined;
  if (input.status.loginBlockedCredentials !== input.passwordVersion) return undefined;
  return gated(
    input,
    nowMs,
    failure(
      'configuration',
      'LoginFailed',
      'spec.grant.passwordRef: the provider rejected the username or password; no further attempt until the credentials Secret changes',
    ),
  );
}

/**
 * Where to send a failed token request again, or undefined. Concur's code 16 ("the user lives in
 * another data center") consumed nothing, so the same request (a refresh, a password grant, a
 * login's code exchange) goes to the geolocation it names, in the same reconcile; but only once: a
 * second move in a row is a failure like any other, retried on the growing backoff.
 */
export function relocationTarget(
  err: Pick<TokenError, 'code' | 'geolocation'>,
  alreadyRelocated: boolean,
): string | undefined {
  return err.code === 'relocate' && !alreadyRelocated ? err.geolocation : undefined;
}
