// The chain state after each thing that can happen to it, as pure functions: a seed imported, a
// claim written, tokens received, a request failed, the chain given up, a login done. The
// reconciler persists what these return; it never edits a state by hand.
import type { TokenError, TokenSet } from '../../oauth/index.ts';
import { fingerprint, type ChainState } from '../state-store.ts';

/**
 * An access-token lifetime a provider states is believed only inside these bounds (expires_in 0,
 * say, is treated as missing). A short one that is believed still cannot make requests come faster
 * than the minimum request gap (decide.ts).
 */
export const MIN_BELIEVED_LIFETIME_MS = 1_000;
export const MAX_BELIEVED_LIFETIME_MS = 10 * 366 * 86_400_000;

/** A new chain's generation: above both what the state and what status have seen (the state may be lost). */
function nextGeneration(state: ChainState | undefined, statusGeneration: number | undefined): number {
  return Math.max(state?.chainGeneration ?? 0, statusGeneration ?? 0) + 1;
}

/**
 * What a new chain keeps from the old state: the TOTP memory, the provider's geolocation, the seed
 * it consumed and the access token it still has.
 */
function carried(state: ChainState | undefined): Partial<ChainState> {
  if (state === undefined) return {};
  const {
    totpLastStep,
    geolocation,
    seedFingerprint,
    accessToken,
    tokenType,
    accessTokenExpiresAtMs,
    issuedAtMs,
  } = state;
  return {
    ...(seedFingerprint !== undefined ? { seedFingerprint } : {}),
    ...(totpLastStep !== undefined ? { totpLastStep } : {}),
    ...(geolocation !== undefined ? { geolocation } : {}),
    ...(accessToken !== undefined ? { accessToken } : {}),
    ...(tokenType !== undefined ? { tokenType } : {}),
    ...(accessTokenExpiresAtMs !== undefined ? { accessTokenExpiresAtMs } : {}),
    ...(issuedAtMs !== undefined ? { issuedAtMs } : {}),
  };
}

/** A new chain from the seed Secret's token. */
export function afterSeedImport(
  state: ChainState | undefined,
  connectionUID: string,
  seed: string,
  statusGeneration: number | undefined,
): ChainState {
  return {
    ...carried(state),
    connectionUID,
    refreshToken: seed,
    seedFingerprint: fingerprint(seed),
    chainGeneration: nextGeneration(state, statusGeneration),
    rotations: 0,
  };
}

/**
 * The access-token lifetime to plan with: what the provider said, unless it is missing, tiny or
 * absurd (then the assumed lifetime, and `ignored` says so, so the caller can report it).
 */
export function plannedLifetime(
  expiresInSec: number | undefined,
  assumedLifetimeMs: number,
): { lifetimeMs: number; ignored: boolean } {
  if (expiresInSec === undefined) return { lifetimeMs: assumedLifetimeMs, ignored: false };
  const stated = expiresInSec * 1000;
  if (!Number.isFinite(stated) || stated < MIN_BELIEVED_LIFETIME_MS || stated > MAX_BELIEVED_LIFETIME_MS) {
    return { lifetimeMs: assumedLifetimeMs, ignored: true };
  }
  return { lifetimeMs: stated, ignored: false };
}

/**
 * After a successful token request (refresh, client credentials, password grant). The provider
 * counts expires_in from when it issued the token, which is somewhere between `sentAtMs` (the request
 * left) and `nowMs` (the answer arrived): the expiry is counted from the earlier, so a slow answer
 * never makes the output Secret claim a token valid that the provider already expired; the floor for
 * the next request is counted from the later, so a slow answer never makes it come too early.
 */
export function afterTokens(
  state: ChainState,
  tokens: TokenSet,
  options: {
    nowMs: number;
    sentAtMs?: number;
    assumedLifetimeMs: number;
    keepsRefreshToken: boolean;
    presented?: string;
  },
): { state: ChainState; lifetimeIgnored: boolean } {
  const { nowMs } = options;
  const sentAtMs = Math.min(options.sentAtMs ?? nowMs, nowMs);
  const { lifetimeMs, ignored } = plannedLifetime(tokens.expiresInSec, options.assumedLifetimeMs);
  const rotated = tokens.refreshToken !== undefined && tokens.refreshToken !== options.presented;
  const next: ChainState = {
    ...state,
    accessToken: tokens.accessToken,
    tokenType: tokens.tokenType,
    issuedAtMs: nowMs,
    accessTokenExpiresAtMs: sentAtMs + lifetimeMs,
    rotations: state.rotations + (rotated && options.keepsRefreshToken ? 1 : 0),
  };
  delete next.claim;
  if (options.keepsRefreshToken) {
    if (rotated) next.refreshToken = tokens.refreshToken;
    if (tokens.refreshExpiresInSec !== undefined) {
      next.refreshTokenExpiresAtMs =
        nowMs + Math.min(tokens.refreshExpiresInSec * 1000, MAX_BELIEVED_LIFETIME_MS);
    }
  }
  if (tokens.geolocation !== undefined) next.geolocation = tokens.geolocation;
  return { state: next, lifetimeIgnored: ignored };
}

/**
 * After a token request that failed. An answer lost in flight keeps the claim: the next reconcile
 * settles it. Anything else clears the claim; a rejected chain is marked broken so its token is
 * never presented again; a relocation stores the geolocation to go to.
 */
export function afterFailure(state: ChainState, err: TokenError, nowMs: number): ChainState {
  if (err.code === 'in_doubt') return state;
  const next: ChainState = { ...state };
  delete next.claim;
  if (err.code === 'chain_broken') next.broken = { reason: err.reason, atMs: nowMs, detail: err.message };
  if (err.code === 'relocate' && err.geolocation !== undefined) next.geolocation = err.geolocation;
  return next;
}

export function markBroken(state: ChainState, reason: string, nowMs: number, detail?: string): ChainState {
  const next: ChainState = {
    ...state,
    broken: { reason, atMs: nowMs, ...(detail !== undefined ? { detail } : {}) },
  };
  delete next.claim;
  return next;
}

export interface LoginTokens extends TokenSet {
  flow: 'code' | 'implicit' | 'direct';
}

/**
 * After a successful recovery login: a new chain (code, direct), or the next access token of
 * implicit mode, which continues one "chain" of logins.
 */
export function afterLogin(
  state: ChainState | undefined,
  connectionUID: string,
  tokens: LoginTokens,
  options: {
    nowMs: number;
    assumedLifetimeMs: number;
    statusGeneration: number | undefined;
    totpStep?: number;
  },
): ChainState {
  const { nowMs } = options;
  const continuing = tokens.flow === 'implicit' && state?.implicit === true ? state : undefined;
  const { lifetimeMs } = plannedLifetime(tokens.expiresInSec, options.assumedLifetimeMs);
  const next: ChainState = {
    ...carried(state),
    connectionUID,
    accessToken: tokens.accessToken,
    tokenType: tokens.tokenType,
    issuedAtMs: nowMs,
    accessTokenExpiresAtMs: nowMs + lifetimeMs,
    chainGeneration: continuing
      ? continuing.chainGeneration
      : nextGeneration(state, options.statusGeneration),
    rotations: continuing ? continuing.rotations + 1 : 0,
  };
  if (options.totpStep !== undefined) next.totpLastStep = options.totpStep;
  // A login's answer names the data center too (Concur): later requests go there, as after a refresh.
  if (tokens.geolocation !== undefined) next.geolocation = tokens.geolocation;
  if (tokens.flow === 'implicit') {
    next.implicit = true;
    return next;
  }
  if (tokens.refreshToken !== undefined) next.refreshToken = tokens.refreshToken;
  if (tokens.refreshExpiresInSec !== undefined) {
    next.refreshTokenExpiresAtMs =
      nowMs + Math.min(tokens.refreshExpiresInSec * 1000, MAX_BELIEVED_LIFETIME_MS);
  }
  return next;
}

/** A login that failed still spent the TOTP step it sent. */
export function afterFailedLogin(state: ChainState, totpStep: number | undefined): ChainState {
  return totpStep === undefined || totpStep === state.totpLastStep
    ? state
    : { ...state, totpLastStep: totpStep };
}
