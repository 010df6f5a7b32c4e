// Executes the chain engine's decisions for one reconcile of one connection: asks decide() what to
// do, does it (the I/O: state Secret through the fenced ChainHandle, the provider through the OAuth
// layer, the output Secret, status through the fenced StatusWriter), and asks again after the
// steps that change what is known. Every rule lives in decide.ts; this file only acts (its login
// steps are in logins.ts, the token probe in probe.ts).
import type * as k8s from '@kubernetes/client-node';
import type { OAuthConnection } from '../../api/v1alpha1.ts';
import type { Clock } from '../../kube/clock.ts';
import {
  isTokenError,
  type OAuthClient,
  type ProbeVerdict,
  type TokenError,
  type TokenGrant,
  type TokenSet,
} from '../../oauth/index.ts';
import type { Logger } from '../../observability/log.ts';
import type { OperatorMetrics } from '../../observability/metrics.ts';
import { failureOf } from '../failures.ts';
import type { Admission, HostLimiter } from '../host-limiter.ts';
import type { ResolvedInputs } from '../inputs.ts';
import { outputGeolocation, templatesUse, type OutputSecretWriter } from '../output-secret.ts';
import type { RecoveryLogin } from '../recovery.ts';
import { delayUntil } from '../schedule.ts';
import { fingerprint, type ChainState } from '../state-store.ts';
import { onFailure, onSuccess, type Decision, type Failure } from '../status.ts';
import type { StatusWriter } from '../status-writer.ts';
import {
  brokenMessage,
  decide,
  dueAt,
  relocationTarget,
  type Action,
  type ChainInput,
  type ChainTiming,
  type RefreshRetry,
} from './decide.ts';
import { TokensNotPersistedError, type ChainHandle } from './handle.ts';
import { passwordGrant, recoveryLogin, startChain } from './logins.ts';
import { probeToken } from './probe.ts';
import type { ProbeSchedule } from './probe-schedule.ts';
import { markSeedConsumed, seedView, withConsumedMark } from './seed.ts';
import { afterFailure, afterSeedImport, afterTokens, markBroken } from './transitions.ts';

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
  /** When each connection was last probed (spec.probe); shared by every reconcile of this replica. */
  probes: ProbeSchedule;
  /** Test fault: die right after the provider answered, before the answer is stored. */
  crashAfterTokenResponse?: boolean;
}

export interface EngineResult {
  requeueAfterMs?: number;
}

export interface FailOptions {
  /** The credentials version that failed: no further login with it until its Secret changes. */
  blockCredentials?: string | undefined;
  /**
   * False when the output Secret could not be written: the token the state holds is then not what
   * pods read, so it cannot keep Ready.
   */
  outputWritten?: boolean;
}

/** What the steps in other files (logins.ts, probe.ts) use of the engine that runs them. */
export type EngineSteps = Pick<
  ChainEngine,
  | 'deps'
  | 'ctx'
  | 'labels'
  | 'chainState'
  | 'hostAdmission'
  | 'followRelocation'
  | 'persistOrConflict'
  | 'publish'
  | 'fail'
>;

/** Steps that change what is known and are followed by another decision; a bound, not a budget. */
const MAX_STEPS = 8;

export class ChainEngine {
  readonly deps: EngineDeps;
  readonly ctx: EngineContext;
  private introspection: ChainInput['introspection'];
  private probeVerdict: ProbeVerdict | undefined;
  /** Whether this reconcile already followed a geolocation the provider returned (Concur code 16). */
  private relocated = false;

  constructor(deps: EngineDeps, ctx: EngineContext) {
    this.deps = deps;
    this.ctx = ctx;
  }

  get labels(): { namespace: string; name: string } {
    const { namespace, name } = this.ctx.connection.metadata;
    return { namespace, name };
  }

  /** The chain's state, or the empty state of a connection that has none yet. */
  chainState(): ChainState {
    return (
      this.ctx.handle.state ?? {
        connectionUID: this.ctx.connection.metadata.uid ?? '',
        chainGeneration: 0,
        rotations: 0,
      }
    );
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
      ...(inputs.preset.passwordStartsChain === true ? { passwordStartsChain: true } : {}),
      state: this.ctx.handle.state,
      status: this.ctx.status.current,
      inputsVersion: inputs.version,
      timing,
      ...(this.introspection !== undefined ? { introspection: this.introspection } : {}),
      ...(inputs.probe !== undefined ? { probe: this.probeInput(inputs.probe.intervalMs) } : {}),
    };
  }

  private probeInput(intervalMs: number): NonNullable<ChainInput['probe']> {
    // Never more often than the absolute gap between two requests of a connection.
    const interval = Math.max(intervalMs, this.ctx.minRequestGapMs);
    const uid = this.ctx.connection.metadata.uid ?? '';
    const nextAtMs = this.ctx.probes.nextAt(uid, interval, this.deps.clock.now());
    const verdict = this.probeVerdict ?? (this.rejectionRemembered() ? 'rejected' : undefined);
    return verdict !== undefined ? { nextAtMs, verdict } : { nextAtMs };
  }

  /** An earlier reconcile's probe rejected the current access token, and no refresh has answered it. */
  private rejectionRemembered(): boolean {
    const accessToken = this.ctx.handle.state?.accessToken;
    const uid = this.ctx.connection.metadata.uid ?? '';
    return accessToken !== undefined && this.ctx.probes.wasRejected(uid, fingerprint(accessToken));
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
      case 'probe': {
        const probed = await probeToken(this);
        if (typeof probed !== 'string') return probed;
        this.probeVerdict = probed;
        return 'again';
      }
      case 'settle': {
        const state = handle.state;
        const endpoints = await this.deps.oauth.resolveEndpoints(
          this.ctx.inputs.endpoints(state?.geolocation),
          this.ctx.signal,
        );
        this.introspection =
          state?.refreshToken !== undefined
            ? await this.deps.oauth.introspect(
                this.ctx.inputs.client,
                endpoints,
                state.refreshToken,
                this.ctx.signal,
              )
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
        return recoveryLogin(this, action.attempts, action.why);
      case 'start-chain':
        return startChain(this, action.why);
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
        // A password that starts a chain (FOLIO) is sent only by startChain(): refreshes rotate.
        if (inputs.preset.passwordStartsChain === true)
          return { type: 'refresh_token', refreshToken: state?.refreshToken ?? '' };
        return passwordGrant(inputs);
    }
  }

  private async refresh(retry: RefreshRetry | undefined): Promise<EngineResult | 'again'> {
    const { clock, metrics } = this.deps;
    const { handle, inputs, log } = this.ctx;
    const base = this.chainState();
    const endpoints = await this.deps.oauth.resolveEndpoints(
      inputs.endpoints(base.geolocation),
      this.ctx.signal,
    );
    const grant = this.grant(base);
    const presented = grant.type === 'refresh_token' ? grant.refreshToken : undefined;
    const uid = this.ctx.connection.metadata.uid ?? '';
    // A refresh the probe called for, in this reconcile or (after the request gap, a backoff) a later one.
    const probeCalledForIt = this.probeVerdict === 'rejected' || this.rejectionRemembered();
    if (retry !== undefined)
      log.warn({ retry }, 'a previous token request was cut off; presenting the same token again');
    const started = clock.monotonic();
    const host = this.hostAdmission(endpoints.tokenEndpoint);
    if (!('slot' in host)) return { requeueAfterMs: host.retryAfterMs };
    const claim = await host.slot.releaseOnError(handle.claim(base, this.ctx.identity, presented));
    const claimed: ChainState = { ...base, claim };

    let tokens: TokenSet;
    try {
      tokens = await host.slot.run(() =>
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
      // Concur's code 16: the same token is presented at the returned geolocation, now stored with
      // the chain (afterFailure), when the next decision refreshes again in this reconcile.
      if (this.followRelocation(err) !== undefined) return 'again';
      // A rejected password is not tried again with the same credentials (decide.ts, passwordBlocked).
      const rejectedPassword = grant.type === 'password' && err.reason === 'InvalidCredentials';
      const failure = failureOf(err);
      if (rejectedPassword) failure.message = `spec.grant.passwordRef: ${failure.message}`;
      return this.fail(failure, {
        blockCredentials: rejectedPassword ? inputs.passwordVersion : undefined,
      });
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
    // The rejection is answered: it is forgotten, and the token it brought is watched (a probe URL
    // that rejects it too is wrong, not the chain), also when the provider handed back the same one.
    if (probeCalledForIt && next.accessToken !== undefined) {
      this.ctx.probes.refreshedAfterRejection(uid, fingerprint(next.accessToken));
    }
    if (lifetimeIgnored) {
      this.ctx.status.record({
        type: 'Warning',
        reason: 'ExpiresInIgnored',
        message: `the provider stated an access-token lifetime outside 1s..10y; planning with ${Math.round(inputs.assumedLifetimeMs / 1000)}s (spec.refresh.assumedLifetime)`,
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
   * What {{geolocation}} renders: the stored geolocation, else the origin of the endpoint that just
   * answered or that status recorded; resolved from the spec only when neither is known (a status
   * from an older version, an implicit login). Best effort: the tokens are stored already, so a
   * failed look-up leaves the placeholder empty rather than keeping them from the output Secret.
   */
  private async geolocationForOutput(
    state: ChainState,
    tokenEndpoint: string | undefined,
  ): Promise<string | undefined> {
    const followsGeolocation = this.ctx.inputs.preset.geolocationTokenPath !== undefined;
    const known = outputGeolocation({
      followsGeolocation,
      geolocation: state.geolocation,
      tokenEndpoint: tokenEndpoint ?? this.ctx.status.current.tokenEndpoint,
    });
    if (known !== undefined) return known;
    try {
      const endpoints = await this.deps.oauth.resolveEndpoints(this.ctx.inputs.endpoints(state.geolocation));
      return outputGeolocation({ followsGeolocation, tokenEndpoint: endpoints.tokenEndpoint });
    } catch {
      return undefined;
    }
  }

  /**
   * The geolocation to send a failed token request to again (Concur's code 16), or undefined. One
   * move per reconcile, whichever request met it (a refresh or a login's token request), so that a
   * provider naming data center after data center is a failure, not a loop (decide.ts,
   * relocationTarget).
   */
  followRelocation(err: TokenError): string | undefined {
    const target = relocationTarget(err, this.relocated);
    if (target !== undefined) {
      this.relocated = true;
      this.ctx.log.info('the provider moved the user to another data center; asking there');
    }
    return target;
  }

  /**
   * A slot for one token request to the URL's host (host-limiter.ts). It is asked for before
   * anything is claimed or recorded, so a host at its limit costs nothing but a requeue: the worker
   * is free at once, the limiter wakes the key when its turn comes, and no claim is left behind for
   * a request that was never sent (a claim would have to be settled as in doubt). Whoever gets a
   * slot must release it on every path: releaseOnError around what precedes the request, run()
   * around the request.
   */
  hostAdmission(url: string): Admission {
    const { namespace, name } = this.labels;
    const host = new URL(url).host;
    const admission = this.deps.hostLimiter.tryAcquire(host, `${namespace}/${name}`);
    if (!('slot' in admission))
      this.ctx.log.debug({ host }, 'the host is at its concurrency limit; requeued');
    return admission;
  }

  /**
   * Persists what followed a claimed request. Another writer having taken the chain over is a
   * conflict (recorded, not counted as a failure); tokens that could not be stored at all are lost
   * loudly: the error propagates after the metric, and the claim left behind is settled later.
   */
  async persistOrConflict(
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
  async publish(refreshed: boolean, tokenEndpoint?: string, recovered = false): Promise<EngineResult> {
    const { clock, metrics } = this.deps;
    const { connection, handle, inputs } = this.ctx;
    const state = handle.state;
    if (state?.accessToken === undefined) throw new Error('publish without an access token');
    const expiresAtMs = state.accessTokenExpiresAtMs ?? 0;
    const geolocation = templatesUse(connection, 'geolocation')
      ? await this.geolocationForOutput(state, tokenEndpoint)
      : undefined;
    await this.deps.output.write(connection, {
      accessToken: state.accessToken,
      tokenType: state.tokenType ?? 'Bearer',
      expiresAtMs,
      ...(geolocation !== undefined ? { geolocation } : {}),
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
    const result = await this.apply(decision);
    // One timer per connection: it fires at the refresh or at the next probe, whichever is first.
    if (inputs.probe === undefined) return result;
    const probeAtMs = this.probeInput(inputs.probe.intervalMs).nextAtMs;
    const probeInMs = delayUntil(probeAtMs, nowMs);
    return { requeueAfterMs: Math.min(result.requeueAfterMs ?? probeInMs, probeInMs) };
  }

  /** Records a failure in status and plans the retry (see FailOptions). */
  async fail(failure: Failure, options: FailOptions = {}): Promise<EngineResult> {
    const { blockCredentials, outputWritten = true } = options;
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
      ...(outputWritten && state?.accessTokenExpiresAtMs !== undefined
        ? { accessTokenExpiresAtMs: state.accessTokenExpiresAtMs }
        : {}),
      ...(state?.issuedAtMs !== undefined
        ? { minIntervalRetryAtMs: state.issuedAtMs + minIntervalMs, issuedAtMs: state.issuedAtMs }
        : {}),
      minIntervalMs,
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
