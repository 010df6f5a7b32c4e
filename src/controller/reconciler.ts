// One reconcile of one OAuthConnection: level-triggered, safe to run again at any point. The order
// of writes is the safety argument of the operator (docs/architecture.md):
//   1. read the state Secret live and write a claim with its resourceVersion (409 = another writer);
//   2. send the token request;
//   3. persist the new refresh token the moment it arrives, retrying, still fenced by resourceVersion;
//   4. only then write the output Secret and the status.
// A claim found on entry means a previous attempt died between 1 and 3: the chain is in doubt.
import * as k8s from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import type { OAuthConnection, OAuthConnectionStatus } from '../api/v1alpha1.ts';
import { GROUP, PLURAL, VERSION } from '../api/v1alpha1.ts';
import type { Clock } from '../kube/clock.ts';
import {
  isTokenError,
  type OAuthClient,
  type TokenError,
  type TokenGrant,
  type TokenSet,
} from '../oauth/index.ts';
import type { EventRecorder } from '../observability/events.ts';
import { errorFields, type Logger } from '../observability/log.ts';
import type { OperatorMetrics } from '../observability/metrics.ts';
import { ConfigurationError, resolveInputs, type ResolvedInputs } from './inputs.ts';
import { OutputSecretNotOwnedError, type OutputSecretWriter } from './output-secret.ts';
import { nextRefreshAt } from './schedule.ts';
import {
  StateConflictError,
  fingerprint,
  type ChainState,
  type StateStore,
  type StoredState,
} from './state-store.ts';
import { onFailure, onSuccess, sameStatus, statusPatch, type Decision, type Failure } from './status.ts';
import type { HostLimiter } from './host-limiter.ts';
import { failureOf, loginFailureReason } from './failures.ts';
import { loginGate, type RecoveryLogin } from './recovery.ts';

export const FINALIZER = 'oauth.token-operator.dev/finalizer';

export interface ReconcileResult {
  requeueAfterMs?: number;
}

/** Hooks that only tests enable, to reproduce crash windows deterministically. */
export interface TestFaults {
  /** Die (SIGKILL) after the provider answered a refresh and before the new token was persisted. */
  crashAfterTokenResponse?: boolean;
}

export interface ReconcilerOptions {
  identity: string;
  propagationMs: number;
  faults?: TestFaults;
}

export interface ReconcilerDeps {
  core: k8s.CoreV1Api;
  custom: k8s.CustomObjectsApi;
  state: StateStore;
  output: OutputSecretWriter;
  oauth: OAuthClient;
  hostLimiter: HostLimiter;
  /** The recovery login; connections with spec.recovery.login need it. */
  recovery: RecoveryLogin;
  events: EventRecorder;
  metrics: OperatorMetrics;
  log: Logger;
  clock: Clock;
  /** The connection from the informer cache. */
  getConnection(namespace: string, name: string): OAuthConnection | undefined;
}

const PERSIST_ATTEMPTS = 8;

export class Reconciler {
  private readonly deps: ReconcilerDeps;
  private readonly options: ReconcilerOptions;

  constructor(deps: ReconcilerDeps, options: ReconcilerOptions) {
    this.deps = deps;
    this.options = options;
  }

  async reconcile(key: string, _signal?: AbortSignal): Promise<ReconcileResult> {
    const [namespace = '', name = ''] = key.split('/');
    const connection = this.deps.getConnection(namespace, name);
    if (!connection) {
      // Deleted without our finalizer (or the finalizer already ran): drop what is left.
      await this.deps.state.delete(namespace, name);
      await this.deps.metrics.forgetConnection(namespace, name);
      return {};
    }
    if (connection.metadata.deletionTimestamp) return this.finalize(connection);
    if (!connection.metadata.finalizers?.includes(FINALIZER)) {
      await this.patchFinalizers(connection, [...(connection.metadata.finalizers ?? []), FINALIZER]);
      // The update event brings the connection back with the finalizer in place.
      return {};
    }
    if (connection.spec.suspend) return this.suspended(connection);

    const log = this.deps.log.child({ namespace, name });
    let inputs: ResolvedInputs;
    try {
      inputs = await resolveInputs(this.deps.core, connection, this.options.propagationMs);
    } catch (err) {
      if (err instanceof ConfigurationError) {
        return this.fail(connection, undefined, {
          kind: 'configuration',
          reason: err.reason,
          message: err.message,
        });
      }
      throw err;
    }
    try {
      return await this.reconcileChain(connection, inputs, log);
    } catch (err) {
      if (err instanceof StateConflictError) {
        log.info('state Secret changed under us: another writer is active; backing off');
        return this.fail(
          connection,
          undefined,
          { kind: 'conflict', reason: 'StateConflict', message: err.message },
          inputs.timing.minIntervalMs,
        );
      }
      if (err instanceof OutputSecretNotOwnedError) {
        return this.fail(
          connection,
          undefined,
          { kind: 'configuration', reason: 'OutputSecretNotOwned', message: err.message },
          inputs.timing.minIntervalMs,
        );
      }
      if (isTokenError(err)) {
        // Endpoint resolution (discovery, the endpoint policy) failed before any request was sent.
        return this.fail(connection, undefined, failureOf(err), inputs.timing.minIntervalMs);
      }
      throw err;
    }
  }

  private async reconcileChain(
    connection: OAuthConnection,
    inputs: ResolvedInputs,
    log: Logger,
  ): Promise<ReconcileResult> {
    const { clock } = this.deps;
    const grantType = connection.spec.grant?.type ?? 'refreshToken';
    let stored = await this.deps.state.read(connection);
    let state: ChainState =
      stored && stored.state.connectionUID === connection.metadata.uid
        ? stored.state
        : { connectionUID: connection.metadata.uid ?? '', chainGeneration: 0, rotations: 0 };
    let resourceVersion = stored?.resourceVersion;

    // A seed the user changed is the manual re-seed path: a new chain.
    if (grantType === 'refreshToken' && inputs.seed !== undefined) {
      const seedFingerprint = fingerprint(inputs.seed);
      if (seedFingerprint !== state.seedFingerprint) {
        state = {
          ...state,
          refreshToken: inputs.seed,
          seedFingerprint,
          chainGeneration: state.chainGeneration + 1,
          rotations: 0,
        };
        delete state.previousRefreshToken;
        delete state.claim;
        delete state.broken;
        resourceVersion = await this.deps.state.write(connection, state, resourceVersion);
        this.event(
          connection,
          'Normal',
          'SeedImported',
          `imported the refresh token from spec.grant.seedSecretRef as chain ${state.chainGeneration}`,
        );
        log.info({ chainGeneration: state.chainGeneration }, 'seed imported');
      }
    }
    stored = { state, resourceVersion: resourceVersion ?? '' };

    const login = connection.spec.recovery?.login;
    if (login && grantType === 'refreshToken' && !state.claim) {
      if (login.flow === 'implicit') {
        // Access-token-only mode: every "refresh" is a login, no earlier than minInterval allows.
        return this.accessTokenStillGood(connection, state, inputs)
          ? this.publish(connection, stored, inputs, false)
          : this.recover(connection, inputs, stored, log);
      }
      // A broken chain, or none yet (no seed): start a new one by logging in.
      if (state.broken || !state.refreshToken) return this.recover(connection, inputs, stored, log);
    }

    if (state.broken) {
      return this.fail(
        connection,
        state,
        { kind: 'chain_broken', reason: state.broken.reason, message: brokenMessage(state) },
        inputs.timing.minIntervalMs,
      );
    }

    const presented = state.refreshToken;
    if (state.claim) {
      // A previous attempt was cut off after claiming: its request may have reached the provider
      // and rotated the token. Presenting a rotated token again is a reuse that revokes the whole
      // family, so it is presented again only inside the provider's grace window, or when the
      // provider itself (RFC 7662 introspection) says the token is still active.
      const age = clock.now() - state.claim.startedAtMs;
      let verdict: 'grace' | 'active' | 'inactive' | 'unknown' = 'grace';
      if (grantType === 'refreshToken' && age > inputs.graceWindowMs) {
        const endpoints = await this.deps.oauth.resolveEndpoints(inputs.endpoints(state.geolocation));
        verdict = presented
          ? await this.deps.oauth.introspect(inputs.client, endpoints, presented)
          : 'unknown';
      }
      if (grantType !== 'refreshToken' || verdict === 'grace' || verdict === 'active') {
        log.warn(
          { claimAgeMs: age, verdict },
          'a previous token request was cut off; presenting the same token again',
        );
      } else {
        state = { ...state, broken: { reason: 'RefreshResponseLost', atMs: clock.now() } };
        delete state.claim;
        const brokenVersion = await this.deps.state.write(connection, state, resourceVersion);
        this.deps.metrics.chainBroken.inc({
          namespace: connection.metadata.namespace,
          name: connection.metadata.name,
        });
        const detail =
          verdict === 'inactive'
            ? 'the answer to a refresh was lost and the provider reports the presented token as used'
            : 'the answer to a refresh was lost outside the provider grace window, and the provider cannot say whether the token was used';
        if (connection.spec.recovery?.login) {
          return this.recover(connection, inputs, { state, resourceVersion: brokenVersion }, log);
        }
        return this.fail(
          connection,
          state,
          { kind: 'chain_broken', reason: 'RefreshResponseLost', message: brokenMessage(state, detail) },
          inputs.timing.minIntervalMs,
        );
      }
    } else if (this.accessTokenStillGood(connection, state, inputs)) {
      return this.publish(connection, stored, inputs, false);
    }

    if (grantType === 'refreshToken' && !presented) {
      return this.fail(
        connection,
        state,
        {
          kind: 'chain_broken',
          reason: 'NoRefreshToken',
          message:
            'there is no refresh token to start from: set spec.grant.seedSecretRef or configure spec.recovery.login',
        },
        inputs.timing.minIntervalMs,
      );
    }
    return this.refresh(connection, stored, inputs, presented, log);
  }

  /** The current access token is valid and not yet due for refresh. */
  private accessTokenStillGood(
    connection: OAuthConnection,
    state: ChainState,
    inputs: ResolvedInputs,
  ): boolean {
    if (!state.accessToken || state.accessTokenExpiresAtMs === undefined || state.issuedAtMs === undefined)
      return false;
    const now = this.deps.clock.now();
    const due = this.dueAt(connection, state, inputs);
    return now < due && now < state.accessTokenExpiresAtMs;
  }

  private dueAt(connection: OAuthConnection, state: ChainState, inputs: ResolvedInputs): number {
    return nextRefreshAt({
      ...inputs.timing,
      nowMs: this.deps.clock.now(),
      issuedAtMs: state.issuedAtMs ?? this.deps.clock.now(),
      expiresAtMs: state.accessTokenExpiresAtMs ?? this.deps.clock.now(),
      jitter: stableJitter(connection.metadata.uid ?? connection.metadata.name, state.rotations),
    });
  }

  private async refresh(
    connection: OAuthConnection,
    stored: StoredState,
    inputs: ResolvedInputs,
    presented: string | undefined,
    log: Logger,
  ): Promise<ReconcileResult> {
    const { clock, metrics } = this.deps;
    const { namespace, name } = connection.metadata;
    const grantType = connection.spec.grant?.type ?? 'refreshToken';
    const started = clock.monotonic();
    const endpoints = await this.deps.oauth.resolveEndpoints(inputs.endpoints(stored.state.geolocation));

    // Step 1: the claim, fenced by the resourceVersion read live above.
    const claim = {
      id: randomUUID(),
      holder: this.options.identity,
      startedAtMs: clock.now(),
      ...(presented ? { presented: fingerprint(presented) } : {}),
    };
    let state: ChainState = { ...stored.state, claim };
    let resourceVersion = await this.deps.state.write(connection, state, stored.resourceVersion || undefined);

    // Step 2: the request, within the per-host concurrency limit.
    let tokens: TokenSet;
    try {
      const grant: TokenGrant =
        grantType === 'refreshToken'
          ? { type: 'refresh_token', refreshToken: presented ?? '' }
          : grantType === 'clientCredentials'
            ? { type: 'client_credentials' }
            : { type: 'password', username: inputs.username ?? '', password: inputs.password ?? '' };
      tokens = await this.deps.hostLimiter.run(new URL(endpoints.tokenEndpoint).host, () =>
        this.deps.oauth.requestTokens(inputs.client, endpoints, grant),
      );
    } catch (err) {
      if (!isTokenError(err)) {
        // Not even classified: treat like a lost answer, the claim stays and decides next time.
        throw err;
      }
      metrics.refreshes.inc({ namespace, name, result: err.code });
      return this.afterFailedRequest(connection, { state, resourceVersion }, inputs, err, log);
    }

    if (this.options.faults?.crashAfterTokenResponse) {
      log.warn('test fault: crashing after the token response, before persisting it');
      process.kill(process.pid, 'SIGKILL');
    }

    // Step 3: persist at once. The claim is ours, so a conflict means someone wrote in between; re-read
    // and keep going only while the claim is still ours.
    const now = clock.now();
    const lifetimeMs =
      tokens.expiresInSec !== undefined ? tokens.expiresInSec * 1000 : inputs.assumedLifetimeMs;
    const rotated = tokens.refreshToken !== undefined && tokens.refreshToken !== presented;
    const next: ChainState = {
      ...state,
      accessToken: tokens.accessToken,
      tokenType: tokens.tokenType,
      issuedAtMs: now,
      accessTokenExpiresAtMs: now + lifetimeMs,
      rotations: state.rotations + (rotated ? 1 : 0),
    };
    delete next.claim;
    if (grantType === 'refreshToken') {
      if (rotated) {
        next.previousRefreshToken = presented;
        next.rotatedAtMs = now;
        next.refreshToken = tokens.refreshToken;
      }
      if (tokens.refreshExpiresInSec !== undefined)
        next.refreshTokenExpiresAtMs = now + tokens.refreshExpiresInSec * 1000;
    }
    if (tokens.geolocation) next.geolocation = tokens.geolocation;
    resourceVersion = await this.persist(connection, next, resourceVersion, claim.id, log);
    state = next;
    metrics.refreshes.inc({ namespace, name, result: 'success' });
    metrics.refreshDuration.observe((clock.monotonic() - started) / 1000);
    log.info(
      {
        rotations: state.rotations,
        chainGeneration: state.chainGeneration,
        expiresAt: new Date(next.accessTokenExpiresAtMs ?? 0).toISOString(),
      },
      'tokens refreshed',
    );
    return this.publish(connection, { state, resourceVersion }, inputs, true, endpoints.tokenEndpoint);
  }

  /** Writes the state until it sticks; the new refresh token must not exist only in memory. */
  private async persist(
    connection: OAuthConnection,
    state: ChainState,
    resourceVersion: string,
    claimId: string,
    log: Logger,
  ): Promise<string> {
    let rv = resourceVersion;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.deps.state.write(connection, state, rv);
      } catch (err) {
        if (attempt >= PERSIST_ATTEMPTS) throw err;
        if (err instanceof StateConflictError) {
          const current = await this.deps.state.read(connection);
          if (current?.state.claim?.id !== claimId) {
            // Someone else decided about this chain after our claim (it looked abandoned): their
            // word stands. The token we hold is reported, not written over theirs.
            log.error(
              'the claim was taken over while our request was in flight; not overwriting the newer state',
            );
            throw err;
          }
          rv = current.resourceVersion;
        } else {
          log.warn({ ...errorFields(err), attempt }, 'persisting the new refresh token failed; retrying');
          await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** attempt, 5_000)));
        }
      }
    }
  }

  private async afterFailedRequest(
    connection: OAuthConnection,
    stored: StoredState,
    inputs: ResolvedInputs,
    err: TokenError,
    log: Logger,
  ): Promise<ReconcileResult> {
    const { namespace, name } = connection.metadata;
    let state = stored.state;
    log.warn({ code: err.code, reason: err.reason, httpStatus: err.httpStatus }, 'token request failed');
    if (err.code === 'in_doubt') {
      // The claim stays: the next reconcile retries inside the grace window or declares the chain broken.
      return this.fail(
        connection,
        state,
        { kind: 'in_doubt', reason: err.reason, message: err.message },
        inputs.timing.minIntervalMs,
      );
    }
    const next: ChainState = { ...state };
    delete next.claim;
    if (err.code === 'chain_broken') {
      next.broken = { reason: err.reason, atMs: this.deps.clock.now() };
      this.deps.metrics.chainBroken.inc({ namespace, name });
    }
    if (err.code === 'relocate' && err.geolocation) next.geolocation = err.geolocation;
    const rv = await this.persist(connection, next, stored.resourceVersion, state.claim?.id ?? '', log);
    state = next;
    if (err.code === 'chain_broken' && connection.spec.recovery?.login) {
      return this.recover(connection, inputs, { state, resourceVersion: rv }, log);
    }
    const failure = failureOf(err);
    if (err.code === 'chain_broken') failure.message = brokenMessage(state, err.message);
    return this.fail(connection, state, failure, inputs.timing.minIntervalMs);
  }

  /**
   * Starts a new chain (or, in implicit mode, gets the next access token) by logging in. The attempt
   * is recorded in status before it is made, so the hourly budget holds across crashes and leaders.
   */
  private async recover(
    connection: OAuthConnection,
    inputs: ResolvedInputs,
    stored: StoredState,
    log: Logger,
  ): Promise<ReconcileResult> {
    const { clock, metrics } = this.deps;
    const { namespace, name } = connection.metadata;
    const login = connection.spec.recovery?.login;
    const credentials = inputs.login;
    if (!login || !credentials) throw new Error('recover() called without spec.recovery.login');
    let state = stored.state;
    const now = clock.now();
    const gate = loginGate(connection.status, login.maxAttemptsPerHour, credentials.version, now);
    if (!gate.allowed) {
      return this.fail(
        connection,
        state,
        {
          kind: 'chain_broken',
          reason: gate.reason ?? 'LoginNotAllowed',
          message: gate.message ?? 'no recovery login allowed now',
          ...(gate.retryAtMs !== undefined ? { recheckAtMs: gate.retryAtMs } : {}),
        },
        inputs.timing.minIntervalMs,
      );
    }
    await this.writeStatus(connection, {
      ...(connection.status ?? {}),
      loginAttempts: [...gate.attempts, new Date(now).toISOString()],
    });
    log.info({ flow: login.flow, chainGeneration: state.chainGeneration }, 'recovery login');

    let result: Awaited<ReturnType<RecoveryLogin['login']>>;
    try {
      const endpoints = await this.deps.oauth.resolveEndpoints(inputs.endpoints(state.geolocation));
      result = await this.deps.recovery.login(connection, inputs, endpoints, state.totpLastStep);
    } catch (err) {
      if (!isTokenError(err)) throw err;
      const reason = loginFailureReason(err);
      metrics.recoveryLogins.inc({ namespace, name, result: reason });
      log.warn({ reason, loginReason: err.reason, httpStatus: err.httpStatus }, 'recovery login failed');
      // The code sent (if any) is spent even though the login failed.
      const secret = this.deps.recovery.parseSecret(inputs);
      const step = secret ? this.deps.recovery.totp.lastUsedStep(secret) : undefined;
      if (step !== undefined && step !== state.totpLastStep) {
        state = { ...state, totpLastStep: step };
        await this.deps.state.write(connection, state, stored.resourceVersion || undefined);
      }
      if (reason === 'LoginFailed' && connection.status) {
        connection.status = { ...connection.status, loginBlockedCredentials: credentials.version };
      }
      return this.fail(connection, state, failureOf(err, 'login'), inputs.timing.minIntervalMs);
    }

    const { tokens } = result;
    const issuedAt = clock.now();
    const implicit = tokens.flow === 'implicit';
    const next: ChainState = {
      ...state,
      accessToken: tokens.accessToken,
      tokenType: tokens.tokenType,
      issuedAtMs: issuedAt,
      accessTokenExpiresAtMs:
        issuedAt +
        (tokens.expiresInSec !== undefined ? tokens.expiresInSec * 1000 : inputs.assumedLifetimeMs),
      // Implicit logins continue one "chain" of logins; code and direct logins start a new chain.
      chainGeneration: implicit && state.implicit ? state.chainGeneration : state.chainGeneration + 1,
      rotations: implicit && state.implicit ? state.rotations + 1 : 0,
    };
    delete next.claim;
    delete next.broken;
    delete next.previousRefreshToken;
    if (result.totpStep !== undefined) next.totpLastStep = result.totpStep;
    if (implicit) {
      next.implicit = true;
      delete next.refreshToken;
    } else {
      delete next.implicit;
      if (tokens.refreshToken !== undefined) next.refreshToken = tokens.refreshToken;
      else delete next.refreshToken;
      if (tokens.refreshExpiresInSec !== undefined)
        next.refreshTokenExpiresAtMs = issuedAt + tokens.refreshExpiresInSec * 1000;
    }
    const resourceVersion = await this.deps.state.write(
      connection,
      next,
      stored.resourceVersion || undefined,
    );
    metrics.recoveryLogins.inc({ namespace, name, result: 'success' });
    if (!implicit || !state.implicit) {
      this.event(
        connection,
        'Normal',
        'RecoveryLoginSucceeded',
        implicit
          ? 'logged in (implicit flow): access tokens are fetched by logging in again before each expiry'
          : `logged in (${tokens.flow} flow) and started refresh-token chain ${next.chainGeneration}`,
      );
    }
    connection.status = { ...(connection.status ?? {}), lastRecoveryTime: new Date(issuedAt).toISOString() };
    delete connection.status.loginBlockedCredentials;
    log.info({ flow: tokens.flow, chainGeneration: next.chainGeneration }, 'recovery login succeeded');
    return this.publish(connection, { state: next, resourceVersion }, inputs, true);
  }

  /** Writes the output Secret from the state and records success. */
  private async publish(
    connection: OAuthConnection,
    stored: StoredState,
    inputs: ResolvedInputs,
    refreshed: boolean,
    tokenEndpoint?: string,
  ): Promise<ReconcileResult> {
    const { state } = stored;
    const { namespace, name } = connection.metadata;
    const expiresAtMs = state.accessTokenExpiresAtMs ?? 0;
    await this.deps.output.write(connection, {
      accessToken: state.accessToken ?? '',
      tokenType: state.tokenType ?? 'Bearer',
      expiresAtMs,
    });
    const nextRefreshAtMs = this.dueAt(connection, state, inputs);
    const decision = onSuccess({
      previous: connection.status ?? {},
      generation: connection.metadata.generation,
      nowMs: this.deps.clock.now(),
      accessTokenExpiresAtMs: expiresAtMs,
      ...(state.refreshTokenExpiresAtMs !== undefined
        ? { refreshTokenExpiresAtMs: state.refreshTokenExpiresAtMs }
        : {}),
      nextRefreshAtMs,
      refreshed,
      rotations: state.rotations,
      chainGeneration: state.chainGeneration,
      ...(tokenEndpoint !== undefined ? { tokenEndpoint } : {}),
    });
    const { metrics } = this.deps;
    metrics.accessTokenExpiry.set({ namespace, name }, expiresAtMs / 1000);
    metrics.nextRefresh.set({ namespace, name }, nextRefreshAtMs / 1000);
    if (state.refreshTokenExpiresAtMs !== undefined)
      metrics.refreshTokenExpiry.set({ namespace, name }, state.refreshTokenExpiresAtMs / 1000);
    if (refreshed) metrics.lastSuccess.set({ namespace, name }, this.deps.clock.now() / 1000);
    return this.apply(connection, decision);
  }

  private async fail(
    connection: OAuthConnection,
    state: ChainState | undefined,
    failure: Failure,
    minIntervalMs = 0,
  ): Promise<ReconcileResult> {
    const minIntervalRetryAtMs =
      state?.issuedAtMs !== undefined ? state.issuedAtMs + minIntervalMs : undefined;
    const decision = onFailure({
      previous: connection.status ?? {},
      generation: connection.metadata.generation,
      nowMs: this.deps.clock.now(),
      failure,
      ...(state?.accessTokenExpiresAtMs !== undefined
        ? { accessTokenExpiresAtMs: state.accessTokenExpiresAtMs }
        : {}),
      ...(minIntervalRetryAtMs !== undefined ? { minIntervalRetryAtMs } : {}),
    });
    return this.apply(connection, decision);
  }

  private async apply(connection: OAuthConnection, decision: Decision): Promise<ReconcileResult> {
    const { namespace, name } = connection.metadata;
    if (decision.event)
      this.event(connection, decision.event.type, decision.event.reason, decision.event.message);
    this.deps.metrics.setConditions(namespace, name, decision.status.conditions ?? []);
    if (decision.status.nextRefreshTime) {
      this.deps.metrics.nextRefresh.set(
        { namespace, name },
        Date.parse(decision.status.nextRefreshTime) / 1000,
      );
    }
    await this.writeStatus(connection, decision.status);
    return { requeueAfterMs: decision.requeueAfterMs };
  }

  private async writeStatus(connection: OAuthConnection, status: OAuthConnectionStatus): Promise<void> {
    if (sameStatus(connection.status, status)) return;
    const { namespace, name } = connection.metadata;
    try {
      await this.deps.custom.patchNamespacedCustomObjectStatus(
        {
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
          name,
          body: { status: statusPatch(connection.status, status) },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return;
      throw err;
    }
    // The informer will bring the new status; until then the cache must not make us write it again.
    connection.status = status;
  }

  private async suspended(connection: OAuthConnection): Promise<ReconcileResult> {
    const failure: Failure = {
      kind: 'configuration',
      reason: 'Suspended',
      message: 'spec.suspend is true: refreshing is paused',
    };
    const decision = onFailure({
      previous: { ...(connection.status ?? {}), failedAttempts: 0 },
      generation: connection.metadata.generation,
      nowMs: this.deps.clock.now(),
      failure,
    });
    decision.status.failedAttempts = connection.status?.failedAttempts ?? 0;
    delete decision.event;
    await this.apply(connection, decision);
    return {};
  }

  private async finalize(connection: OAuthConnection): Promise<ReconcileResult> {
    const { namespace, name } = connection.metadata;
    if (!connection.metadata.finalizers?.includes(FINALIZER)) return {};
    if (connection.spec.revokeOnDelete) {
      try {
        const stored = await this.deps.state.read(connection);
        if (stored?.state.refreshToken && stored.state.connectionUID === connection.metadata.uid) {
          const inputs = await resolveInputs(this.deps.core, connection, this.options.propagationMs);
          const endpoints = await this.deps.oauth.resolveEndpoints(
            inputs.endpoints(stored.state.geolocation),
          );
          await this.deps.oauth.revoke(inputs.client, endpoints, stored.state.refreshToken);
          this.event(connection, 'Normal', 'Revoked', 'the refresh token was revoked at the provider');
        }
      } catch (err) {
        // Deletion must not hang on a provider that is down or a Secret already gone.
        this.deps.log.warn(
          { namespace, name, ...errorFields(err) },
          'revocation on delete failed; deleting anyway',
        );
      }
    }
    await this.deps.state.delete(namespace, name);
    await this.patchFinalizers(
      connection,
      (connection.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
    );
    await this.deps.metrics.forgetConnection(namespace, name);
    return {};
  }

  private async patchFinalizers(connection: OAuthConnection, finalizers: string[]): Promise<void> {
    const { namespace, name, resourceVersion } = connection.metadata;
    try {
      await this.deps.custom.patchNamespacedCustomObject(
        {
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
          name,
          // The resourceVersion makes the merge patch conditional: another finalizer added meanwhile is not lost.
          body: { metadata: { finalizers, resourceVersion } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return;
      throw err;
    }
  }

  private event(
    connection: OAuthConnection,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): void {
    const { namespace, name, uid } = connection.metadata;
    this.deps.events.record({ namespace, name, ...(uid ? { uid } : {}) }, type, reason, message);
  }
}

function brokenMessage(state: ChainState, detail?: string): string {
  const base = `refresh-token chain ${state.chainGeneration} is broken (${state.broken?.reason ?? 'unknown'})`;
  return `${base}${detail ? `: ${detail}` : ''}; re-seed it by changing the seed Secret, or configure spec.recovery.login`;
}

/** Spreads connections' refreshes deterministically, so a restart does not reshuffle them. */
function stableJitter(seed: string, rotations: number): number {
  let hash = 2166136261;
  for (const ch of `${seed}/${rotations}`) hash = Math.imul(hash ^ ch.charCodeAt(0), 16777619);
  return ((hash >>> 0) % 10_000) / 10_000;
}
