// Executes the chain engine's decisions for one reconcile of one connection: asks decide() what to
// do, does it (the I/O: state Secret through the fenced ChainHandle, the provider through the OAuth
// layer, the output Secret, status through the fenced StatusWriter), and asks again after the
// steps that change what is known. Every rule lives in decide.ts; this file only acts.
import type * as k8s from '@kubernetes/client-node';
import type { OAuthConnection } from '../../api/v1alpha1.ts';
import type { Clock } from '../../kube/clock.ts';
import { isTokenError, type OAuthClient, type TokenGrant, type TokenSet } from '../../oauth/index.ts';
import type { Logger } from '../../observability/log.ts';
import type { OperatorMetrics } from '../../observability/metrics.ts';
import { failureOf } from '../failures.ts';
import type { HostLimiter } from '../host-limiter.ts';
import type { ResolvedInputs } from '../inputs.ts';
import type { OutputSecretWriter } from '../output-secret.ts';
import type { RecoveryLogin } from '../recovery.ts';
import { delayUntil } from '../schedule.ts';
import { fingerprint, type ChainState } from '../state-store.ts';
import { onFailure, onRecovering, onSuccess, type Decision, type Failure } from '../status.ts';
import type { StatusWriter } from '../status-writer.ts';
import {
  brokenMessage,
  decide,
  dueAt,
  type Action,
  type ChainInput,
  type ChainTiming,
  type RefreshRetry,
} from './decide.ts';
import { TokensNotPersistedError, type ChainHandle } from './handle.ts';
import { markSeedConsumed, seedView, withConsumedMark } from './seed.ts';
import {
  afterFailedLogin,
  afterFailure,
  afterLogin,
  afterSeedImport,
  afterTokens,
  markBroken,
} from './transitions.ts';

export interface EngineDeps {
  core: k8s.CoreV1Api;
  oauth: OAuthClient;
  output: OutputSecretWriter;
  hostLimiter: HostLimiter;
  recovery: RecoveryLogin;
  metrics: OperatorMetrics;
  clock: Clock;
}

export interface EngineContext {
  connection: OAuthConnection;
  inputs: ResolvedInputs;
  handle: ChainHandle;
  status: StatusWriter;
  identity: string;
  claimTimeoutMs: number;
  requestTimeoutMs: number;
  minRequestGapMs: number;
  log: Logger;
  signal: AbortSignal;
  /** Test fault: die right after the provider answered, before the answer is stored. */
  crashAfterTokenResponse?: boolean;
}

export interface EngineResult {
  requeueAfterMs?: number;
}

/** Steps that change what is known and are followed by another decision; a bound, not a budget. */
const MAX_STEPS = 8;

export class ChainEngine {
  private readonly deps: EngineDeps;
  private readonly ctx: EngineContext;
  private introspection: ChainInput['introspection'];

  constructor(deps: EngineDeps, ctx: EngineContext) {
    this.deps = deps;
    this.ctx = ctx;
  }

  private get labels(): { namespace: string; name: string } {
    const { namespace, name } = this.ctx.connection.metadata;
    return { namespace, name };
  }

  private timing(): ChainTiming {
    const { inputs } = this.ctx;
    return {
      ...inputs.timing,
      graceWindowMs: inputs.graceWindowMs,
      reusableUntilSuccessorUsed: inputs.preset.reusableUntilSuccessorUsed === true,
      requestTimeoutMs: this.ctx.requestTimeoutMs,
      claimTimeoutMs: this.ctx.claimTimeoutMs,
      minRequestGapMs: this.ctx.minRequestGapMs,
    };
  }

  private input(): ChainInput {
    const { connection, inputs } = this.ctx;
    const login = connection.spec.recovery?.login;
    const timing = this.timing();
    return {
      connectionUID: connection.metadata.uid ?? '',
      generation: connection.metadata.generation,
      identity: this.ctx.identity,
      grant: connection.spec.grant?.type ?? 'refreshToken',
      ...(login !== undefined && inputs.login !== undefined
        ? {
            login: {
              flow: login.flow,
              credentialsVersion: inputs.login.version,
              ...(login.maxAttemptsPerHour !== undefined
                ? { maxAttemptsPerHour: login.maxAttemptsPerHour }
                : {}),
            },
          }
        : {}),
      ...(inputs.seed !== undefined ? { seed: seedView(inputs.seed) } : {}),
      ...(inputs.passwordVersion !== undefined ? { passwordVersion: inputs.passwordVersion } : {}),
      state: this.ctx.handle.state,
      status: this.ctx.status.current,
      inputsVersion: inputs.version,
      timing,
      ...(this.introspection !== undefined ? { introspection: this.introspection } : {}),
    };
  }

  async run(): Promise<EngineResult> {
    for (let step = 0; step < MAX_STEPS; step++) {
      // Aborted (drain deadline, lost leadership): start nothing new; the next writer takes over.
      if (this.ctx.signal.aborted) return {};
      const input = this.input();
      const action = decide(input, this.deps.clock.now());
      this.ctx.log.debug({ action: action.kind }, 'chain decision');
      const result = await this.act(action, input);
      if (result !== 'again') return result;
    }
    throw new Error('the chain engine did not settle within its step bound');
  }

  private async act(action: Action, input: ChainInput): Promise<EngineResult | 'again'> {
    const { clock, metrics } = this.deps;
    const { handle, log } = this.ctx;
    switch (action.kind) {
      case 'import-seed': {
        const seed = this.ctx.inputs.seed;
        if (seed === undefined) throw new Error('import-seed without a seed');
        const next = afterSeedImport(
          handle.state,
          input.connectionUID,
          seed.value,
          input.status.chainGeneration,
        );
        await handle.write(next);
        this.ctx.status.record({
          type: 'Normal',
          reason: 'SeedImported',
          message: `imported the refresh token from spec.grant.seedSecretRef as chain ${next.chainGeneration}`,
        });
        log.info({ chainGeneration: next.chainGeneration }, 'seed imported');
        return 'again';
      }
      case 'mark-seed-consumed':
        return this.markSeed();
      case 'publish':
        return this.publish(false);
      case 'refresh':
        return this.refresh(action.retry);
      case 'settle': {
        const state = handle.state;
        const endpoints = await this.deps.oauth.resolveEndpoints(
          this.ctx.inputs.endpoints(state?.geolocation),
        );
        this.introspection =
          state?.refreshToken !== undefined
            ? await this.deps.oauth.introspect(this.ctx.inputs.client, endpoints, state.refreshToken)
            : 'unknown';
        return 'again';
      }
      case 'wait-for-claim':
        log.info({ holder: action.holder }, 'another replica may still have a request in flight; waiting');
        return { requeueAfterMs: delayUntil(action.untilMs, clock.now()) };
      case 'mark-broken': {
        const state = handle.state;
        if (state === undefined) throw new Error('mark-broken without a state');
        await handle.write(markBroken(state, action.reason, clock.now(), action.detail));
        metrics.chainBroken.inc(this.labels);
        log.warn({ reason: action.reason }, 'chain marked broken');
        return 'again';
      }
      case 'recover':
        return this.recover(action.attempts, action.why);
      case 'fail':
        return this.fail(action.failure);
      case 'back-off':
        return { requeueAfterMs: delayUntil(action.untilMs, clock.now()) };
    }
  }

  private async markSeed(): Promise<EngineResult | 'again'> {
    const seed = this.ctx.inputs.seed;
    const uid = this.ctx.connection.metadata.uid ?? '';
    if (seed === undefined) throw new Error('mark-seed-consumed without a seed');
    const outcome = await markSeedConsumed(this.deps.core, this.ctx.connection.metadata.namespace, seed, uid);
    switch (outcome) {
      case 'marked':
        // Decide again with the mark in place (the patch succeeded, so this is what the Secret says).
        seed.annotations = withConsumedMark(seed, uid);
        return 'again';
      case 'changed':
        // The seed Secret changed since it was read: the next reconcile reads it again.
        return { requeueAfterMs: 1_000 };
      case 'forbidden':
        return this.fail({
          kind: 'configuration',
          reason: 'SeedNotMarkable',
          message:
            'spec.grant.seedSecretRef: the operator may not annotate the seed Secret as consumed (it needs patch on Secrets in this namespace), so it does not present the seed',
        });
    }
  }

  private grant(state: ChainState | undefined): TokenGrant {
    const { inputs, connection } = this.ctx;
    switch (connection.spec.grant?.type ?? 'refreshToken') {
      case 'refreshToken':
        return { type: 'refresh_token', refreshToken: state?.refreshToken ?? '' };
      case 'clientCredentials':
        return { type: 'client_credentials' };
      case 'password':
        return { type: 'password', username: inputs.username ?? '', password: inputs.password ?? '' };
    }
  }

  private async refresh(retry: RefreshRetry | undefined): Promise<EngineResult | 'again'> {
    const { clock, metrics } = this.deps;
    const { handle, inputs, log } = this.ctx;
    const base: ChainState = handle.state ?? {
      connectionUID: this.ctx.connection.metadata.uid ?? '',
      chainGeneration: 0,
      rotations: 0,
    };
    const endpoints = await this.deps.oauth.resolveEndpoints(inputs.endpoints(base.geolocation));
    const grant = this.grant(base);
    const presented = grant.type === 'refresh_token' ? grant.refreshToken : undefined;
    if (retry !== undefined)
      log.warn({ retry }, 'a previous token request was cut off; presenting the same token again');
    const started = clock.monotonic();
    const claim = await handle.claim(base, this.ctx.identity, presented);
    const claimed: ChainState = { ...base, claim };

    let tokens: TokenSet;
    try {
      tokens = await this.deps.hostLimiter.run(new URL(endpoints.tokenEndpoint).host, () =>
        this.deps.oauth.requestTokens(inputs.client, endpoints, grant, this.ctx.signal),
      );
    } catch (err) {
      if (!isTokenError(err)) throw err; // unclassified: the claim stays and the next reconcile settles it
      metrics.refreshes.inc({ ...this.labels, result: err.code });
      log.warn({ code: err.code, reason: err.reason, httpStatus: err.httpStatus }, 'token request failed');
      const next = afterFailure(claimed, err, clock.now());
      if (next !== claimed) {
        const persisted = await this.persistOrConflict(next, claim.id, claim.startedAtMs);
        if (persisted !== undefined) return persisted;
      }
      if (err.code === 'chain_broken') {
        metrics.chainBroken.inc(this.labels);
        return 'again';
      }
      // A rejected password is not tried again with the same credentials (decide.ts, passwordBlocked).
      const rejectedPassword = grant.type === 'password' && err.reason === 'InvalidCredentials';
      return this.fail(failureOf(err), rejectedPassword ? inputs.passwordVersion : undefined);
    }

    if (this.ctx.crashAfterTokenResponse === true) {
      log.warn('test fault: crashing after the token response, before persisting it');
      process.kill(process.pid, 'SIGKILL');
    }
    const { state: next, lifetimeIgnored } = afterTokens(claimed, tokens, {
      nowMs: clock.now(),
      sentAtMs: claim.startedAtMs,
      assumedLifetimeMs: inputs.assumedLifetimeMs,
      keepsRefreshToken: grant.type === 'refresh_token',
      ...(presented !== undefined ? { presented } : {}),
    });
    const persisted = await this.persistOrConflict(next, claim.id, claim.startedAtMs);
    if (persisted !== undefined) return persisted;
    metrics.refreshes.inc({ ...this.labels, result: 'success' });
    metrics.refreshDuration.observe((clock.monotonic() - started) / 1000);
    if (lifetimeIgnored) {
      this.ctx.status.record({
        type: 'Warning',
        reason: 'ExpiresInIgnored',
        message: `the provider stated an access-token lifetime outside 10s..10y; planning with ${Math.round(inputs.assumedLifetimeMs / 1000)}s (spec.refresh.assumedLifetime)`,
      });
    }
    log.info(
      {
        rotations: next.rotations,
        chainGeneration: next.chainGeneration,
        expiresAt: new Date(next.accessTokenExpiresAtMs ?? 0).toISOString(),
      },
      'tokens refreshed',
    );
    return this.publish(true, endpoints.tokenEndpoint);
  }

  /**
   * Starts a new chain (or, in implicit mode, gets the next access token) by logging in. The attempt
   * is recorded in status before it is made, and the login is claimed and persisted like a refresh.
   */
  private async recover(attempts: string[], why: Failure): Promise<EngineResult | 'again'> {
    const { clock, metrics } = this.deps;
    const { handle, inputs, connection, log } = this.ctx;
    const login = connection.spec.recovery?.login;
    if (login === undefined || inputs.login === undefined)
      throw new Error('recover without spec.recovery.login');
    const chainBroken = why.reason !== 'NoRefreshToken' && why.reason !== 'LoginRequired';
    const recovering = onRecovering({
      previous: this.ctx.status.current,
      generation: connection.metadata.generation,
      nowMs: clock.now(),
      why,
      attempts,
      chainBroken,
    });
    await this.ctx.status.write(recovering.status, recovering.event);
    log.info({ flow: login.flow, reason: why.reason }, 'recovery login');

    const base: ChainState = handle.state ?? {
      connectionUID: connection.metadata.uid ?? '',
      chainGeneration: 0,
      rotations: 0,
    };
    const claim = await handle.claim(base, this.ctx.identity, undefined);
    const claimed: ChainState = { ...base, claim };
    let result: Awaited<ReturnType<RecoveryLogin['login']>>;
    try {
      const endpoints = await this.deps.oauth.resolveEndpoints(inputs.endpoints(base.geolocation));
      result = await this.deps.recovery.login(connection, inputs, endpoints, base.totpLastStep);
    } catch (err) {
      if (!isTokenError(err)) throw err;
      const failure = failureOf(err, 'login');
      metrics.recoveryLogins.inc({ ...this.labels, result: failure.reason });
      log.warn(
        { reason: failure.reason, loginReason: err.reason, httpStatus: err.httpStatus },
        'recovery login failed',
      );
      // The code sent (if any) is spent even though the login failed; the claim is released.
      const secret = this.deps.recovery.parseSecret(inputs);
      const step = secret ? this.deps.recovery.totp.lastUsedStep(secret) : undefined;
      const released = { ...afterFailedLogin(claimed, step) };
      delete released.claim;
      const persisted = await this.persistOrConflict(released, claim.id, claim.startedAtMs);
      if (persisted !== undefined) return persisted;
      return this.fail(failure, failure.reason === 'LoginFailed' ? inputs.login.version : undefined);
    }

    const next = afterLogin(handle.state, connection.metadata.uid ?? '', result.tokens, {
      nowMs: clock.now(),
      assumedLifetimeMs: inputs.assumedLifetimeMs,
      statusGeneration: this.ctx.status.current.chainGeneration,
      ...(result.totpStep !== undefined ? { totpStep: result.totpStep } : {}),
    });
    const persisted = await this.persistOrConflict(next, claim.id, claim.startedAtMs);
    if (persisted !== undefined) return persisted;
    metrics.recoveryLogins.inc({ ...this.labels, result: 'success' });
    const implicitContinuing = result.tokens.flow === 'implicit' && base.implicit === true;
    if (!implicitContinuing) {
      this.ctx.status.record({
        type: 'Normal',
        reason: 'RecoveryLoginSucceeded',
        message:
          result.tokens.flow === 'implicit'
            ? 'logged in (implicit flow): access tokens are fetched by logging in again before each expiry'
            : `logged in (${result.tokens.flow} flow) and started refresh-token chain ${next.chainGeneration}`,
      });
    }
    log.info({ flow: result.tokens.flow, chainGeneration: next.chainGeneration }, 'recovery login succeeded');
    return this.publish(true, undefined, true);
  }

  /**
   * Persists what followed a claimed request. Another writer having taken the chain over is a
   * conflict (recorded, not counted as a failure); tokens that could not be stored at all are lost
   * loudly: the error propagates after the metric, and the claim left behind is settled later.
   */
  private async persistOrConflict(
    next: ChainState,
    claimId: string,
    sinceMs: number,
  ): Promise<EngineResult | undefined> {
    try {
      await this.ctx.handle.persist(next, claimId, sinceMs);
      return undefined;
    } catch (err) {
      if (!(err instanceof TokensNotPersistedError)) throw err;
      if (err.takenOver)
        return this.fail({ kind: 'conflict', reason: 'StateConflict', message: err.message });
      this.deps.metrics.tokensLost.inc(this.labels);
      throw err;
    }
  }

  /** Writes the output Secret from the state and records success. */
  private async publish(
    refreshed: boolean,
    tokenEndpoint?: string,
    recovered = false,
  ): Promise<EngineResult> {
    const { clock, metrics } = this.deps;
    const { connection, handle, inputs } = this.ctx;
    const state = handle.state;
    if (state?.accessToken === undefined) throw new Error('publish without an access token');
    const expiresAtMs = state.accessTokenExpiresAtMs ?? 0;
    await this.deps.output.write(connection, {
      accessToken: state.accessToken,
      tokenType: state.tokenType ?? 'Bearer',
      expiresAtMs,
    });
    const nowMs = clock.now();
    const nextRefreshAtMs = dueAt(
      { connectionUID: connection.metadata.uid ?? '', timing: this.timing() },
      state,
      nowMs,
    );
    const decision = onSuccess({
      previous: this.ctx.status.current,
      generation: connection.metadata.generation,
      nowMs,
      accessTokenExpiresAtMs: expiresAtMs,
      ...(state.refreshTokenExpiresAtMs !== undefined
        ? { refreshTokenExpiresAtMs: state.refreshTokenExpiresAtMs }
        : {}),
      nextRefreshAtMs,
      refreshed,
      rotations: state.rotations,
      chainGeneration: state.chainGeneration,
      ...(tokenEndpoint !== undefined ? { tokenEndpoint } : {}),
      ...(state.refreshToken !== undefined
        ? { refreshTokenFingerprint: fingerprint(state.refreshToken) }
        : {}),
      ...(state.seedFingerprint !== undefined ? { seedFingerprint: state.seedFingerprint } : {}),
      inputsVersion: inputs.version,
      recovered,
    });
    metrics.accessTokenExpiry.set(this.labels, expiresAtMs / 1000);
    if (state.refreshTokenExpiresAtMs !== undefined)
      metrics.refreshTokenExpiry.set(this.labels, state.refreshTokenExpiresAtMs / 1000);
    if (refreshed) metrics.lastSuccess.set(this.labels, nowMs / 1000);
    return this.apply(decision);
  }

  /** Records a failure in status; `blockCredentials` stops further logins with these credentials. */
  async fail(failure: Failure, blockCredentials?: string): Promise<EngineResult> {
    const state = this.ctx.handle.state;
    const nowMs = this.deps.clock.now();
    const minIntervalMs = this.ctx.inputs.timing.minIntervalMs;
    const previous = this.ctx.status.current;
    if (blockCredentials !== undefined) previous.loginBlockedCredentials = blockCredentials;
    const message =
      failure.kind === 'chain_broken' && state?.broken !== undefined && failure.reason === state.broken.reason
        ? brokenMessage(state, state.broken.reason, state.broken.detail)
        : failure.message;
    const decision = onFailure({
      previous,
      generation: this.ctx.connection.metadata.generation,
      nowMs,
      failure: { ...failure, message },
      ...(state?.accessTokenExpiresAtMs !== undefined
        ? { accessTokenExpiresAtMs: state.accessTokenExpiresAtMs }
        : {}),
      ...(state?.issuedAtMs !== undefined ? { minIntervalRetryAtMs: state.issuedAtMs + minIntervalMs } : {}),
      inputsVersion: this.ctx.inputs.version,
    });
    return this.apply(decision);
  }

  private async apply(decision: Decision): Promise<EngineResult> {
    const { namespace, name } = this.labels;
    await this.ctx.status.write(decision.status, decision.event);
    this.deps.metrics.setConditions(namespace, name, decision.status.conditions ?? []);
    if (decision.status.nextRefreshTime !== undefined) {
      this.deps.metrics.nextRefresh.set(this.labels, Date.parse(decision.status.nextRefreshTime) / 1000);
    }
    return { requeueAfterMs: decision.requeueAfterMs };
  }
}
