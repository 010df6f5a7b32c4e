// One reconcile of one OAuthConnection, level-triggered and safe to run again at any point. This
// file only dispatches: the lifecycle of the resource (finalizer, deletion, suspension) here, the
// chain itself to the chain engine (chain/engine.ts executes, chain/decide.ts holds every rule).
//
// The connection is read live at the start, never taken from the informer cache for a decision:
// its resourceVersion fences every status write of this reconcile (status-writer.ts), and the
// state Secret's resourceVersion fences every state write (chain/handle.ts). The cache only says
// that something changed.
import * as k8s from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type OAuthConnection } from '../api/v1alpha1.ts';
import type { Clock } from '../kube/clock.ts';
import { isTokenError, type OAuthClient } from '../oauth/index.ts';
import type { EventRecorder } from '../observability/events.ts';
import { errorFields, type Logger } from '../observability/log.ts';
import type { OperatorMetrics } from '../observability/metrics.ts';
import { ProbeSchedule } from './chain/probe-schedule.ts';
import { ChainEngine } from './chain/engine.ts';
import { ChainHandle } from './chain/handle.ts';
import { failureOf } from './failures.ts';
import type { HostLimiter } from './host-limiter.ts';
import { ConfigurationError, resolveInputs, type ResolvedInputs } from './inputs.ts';
import { OutputError, type OutputSecretWriter } from './output-secret.ts';
import type { RecoveryLogin } from './recovery.ts';
import { StateConflictError, type StateStore } from './state-store.ts';
import { onFailure, type Failure } from './status.ts';
import { StatusConflictError, StatusWriter } from './status-writer.ts';

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
  /**
   * How long another replica's claim counts as in flight: request timeout + persist budget + lease
   * duration. Default 30 s + 60 s + 15 s.
   */
  claimTimeoutMs?: number;
  /** The longest a token request may take (--request-timeout). Default 30 s. */
  requestTimeoutMs?: number;
  /** How long a replica that lost leadership keeps trying to store tokens it received. Default 60 s. */
  persistBudgetMs?: number;
  /** The absolute floor between two token requests of one connection. Default 10 s. */
  minRequestGapMs?: number;
  /** A label (set to "true") every referenced Secret must carry; unset: no opt-in required. */
  requireSecretLabel?: string;
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
  /** The connection from the informer cache (only to learn whether it still exists). */
  getConnection(namespace: string, name: string): OAuthConnection | undefined;
  /** Whether this replica holds leadership now. Default: always (single-replica tools and tests). */
  isLeader?: () => boolean;
}

const DEFAULT_PERSIST_BUDGET_MS = 60_000;
const DEFAULT_MIN_REQUEST_GAP_MS = 10_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
const DEFAULT_CLAIM_TIMEOUT_MS = DEFAULT_REQUEST_TIMEOUT_MS + DEFAULT_PERSIST_BUDGET_MS + 15_000;
/** After a fenced write lost to a newer writer, look again soon: the informer will have caught up. */
const CONFLICT_REQUEUE_MS = 1_000;

export class Reconciler {
  private readonly deps: ReconcilerDeps;
  private readonly options: ReconcilerOptions;
  private readonly probes = new ProbeSchedule();

  constructor(deps: ReconcilerDeps, options: ReconcilerOptions) {
    this.deps = deps;
    this.options = options;
  }

  async reconcile(key: string, signal: AbortSignal = new AbortController().signal): Promise<ReconcileResult> {
    const [namespace = '', name = ''] = key.split('/');
    const cached = this.deps.getConnection(namespace, name);
    if (!cached) {
      // Deleted without our finalizer (or the finalizer already ran): drop what is left.
      await this.deps.state.delete(namespace, name);
      await this.deps.metrics.forgetConnection(namespace, name);
      return {};
    }
    const connection = await this.readLive(namespace, name);
    if (connection === undefined) return {};
    if (connection.metadata.deletionTimestamp) return this.finalize(connection, signal);
    if (!connection.metadata.finalizers?.includes(FINALIZER)) {
      await this.patchFinalizers(connection, [...(connection.metadata.finalizers ?? []), FINALIZER]);
      // The update event brings the connection back with the finalizer in place.
      return {};
    }
    const status = new StatusWriter(this.deps.custom, this.deps.events, connection);
    try {
      if (connection.spec.suspend) return await this.suspended(connection, status);
      return await this.reconcileChain(connection, status, signal);
    } catch (err) {
      if (err instanceof StatusConflictError) {
        this.deps.log.info({ namespace, name }, 'the connection changed while reconciling; looking again');
        return { requeueAfterMs: CONFLICT_REQUEUE_MS };
      }
      throw err;
    }
  }

  private async reconcileChain(
    connection: OAuthConnection,
    status: StatusWriter,
    signal: AbortSignal,
  ): Promise<ReconcileResult> {
    const { namespace, name } = connection.metadata;
    const log = this.deps.log.child({ namespace, name });
    let inputs: ResolvedInputs;
    try {
      inputs = await resolveInputs(
        this.deps.core,
        connection,
        this.options.propagationMs,
        this.inputOptions(),
      );
    } catch (err) {
      if (!(err instanceof ConfigurationError)) throw err;
      const failure: Failure = { kind: 'configuration', reason: err.reason, message: err.message };
      return this.recordOnly(connection, status, failure);
    }
    const persistBudgetMs = this.options.persistBudgetMs ?? DEFAULT_PERSIST_BUDGET_MS;
    const handle = await ChainHandle.open(
      {
        store: this.deps.state,
        clock: this.deps.clock,
        log,
        isLeader: this.deps.isLeader ?? (() => true),
        persistBudgetMs,
      },
      connection,
    );
    const engine = new ChainEngine(this.deps, {
      connection,
      inputs,
      handle,
      status,
      identity: this.options.identity,
      claimTimeoutMs: this.options.claimTimeoutMs ?? DEFAULT_CLAIM_TIMEOUT_MS,
      requestTimeoutMs: this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      minRequestGapMs: this.options.minRequestGapMs ?? DEFAULT_MIN_REQUEST_GAP_MS,
      log,
      signal,
      probes: this.probes,
      ...(this.options.faults?.crashAfterTokenResponse === true ? { crashAfterTokenResponse: true } : {}),
    });
    try {
      return await engine.run();
    } catch (err) {
      if (err instanceof StateConflictError) {
        log.info('state Secret changed under us: another writer is active; backing off');
        return engine.fail({ kind: 'conflict', reason: 'StateConflict', message: err.message });
      }
      // The output Secret is someone else's (or, transient, a deleted predecessor's), or spec.output
      // asks for keys or sizes it may not have.
      if (err instanceof OutputError) {
        return engine.fail(
          { kind: err.kind, reason: err.reason, message: err.message },
          { outputWritten: false },
        );
      }
      // Endpoint resolution (discovery, the endpoint policy) failed before any request was sent.
      if (isTokenError(err)) return engine.fail(failureOf(err));
      throw err;
    }
  }

  private inputOptions(): { requireSecretLabel?: string } {
    return this.options.requireSecretLabel !== undefined
      ? { requireSecretLabel: this.options.requireSecretLabel }
      : {};
  }

  /** A failure found before the chain could be looked at (inputs): status only. */
  private async recordOnly(
    connection: OAuthConnection,
    status: StatusWriter,
    failure: Failure,
  ): Promise<ReconcileResult> {
    const previous = status.current;
    const decision = onFailure({
      previous,
      generation: connection.metadata.generation,
      nowMs: this.deps.clock.now(),
      failure,
      inputsVersion: previous.inputsVersion ?? '',
    });
    await status.write(decision.status, decision.event);
    this.deps.metrics.setConditions(
      connection.metadata.namespace,
      connection.metadata.name,
      decision.status.conditions ?? [],
    );
    return { requeueAfterMs: decision.requeueAfterMs };
  }

  private async suspended(connection: OAuthConnection, status: StatusWriter): Promise<ReconcileResult> {
    const previous = status.current;
    const decision = onFailure({
      previous: { ...previous, failedAttempts: 0 },
      generation: connection.metadata.generation,
      nowMs: this.deps.clock.now(),
      failure: {
        kind: 'configuration',
        reason: 'Suspended',
        message: 'spec.suspend is true: refreshing is paused',
      },
      inputsVersion: previous.inputsVersion ?? '',
    });
    decision.status.failedAttempts = previous.failedAttempts ?? 0;
    await status.write(decision.status);
    return {};
  }

  /** The connection as the API server has it now; undefined when it is gone. */
  private async readLive(namespace: string, name: string): Promise<OAuthConnection | undefined> {
    try {
      return (await this.deps.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
        name,
      })) as OAuthConnection;
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw err;
    }
  }

  private async finalize(connection: OAuthConnection, signal: AbortSignal): Promise<ReconcileResult> {
    const { namespace, name } = connection.metadata;
    if (!connection.metadata.finalizers?.includes(FINALIZER)) return {};
    if (connection.spec.revokeOnDelete) await this.revoke(connection, signal);
    await this.deps.state.delete(namespace, name);
    await this.patchFinalizers(
      connection,
      (connection.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
    );
    await this.deps.metrics.forgetConnection(namespace, name);
    this.probes.forget(connection.metadata.uid ?? '');
    return {};
  }

  /**
   * Best effort: deletion must not hang on a provider that is down or a Secret already gone; the
   * reconcile's deadline bounds discovery and the revocation request.
   */
  private async revoke(connection: OAuthConnection, signal: AbortSignal): Promise<void> {
    const { namespace, name, uid } = connection.metadata;
    try {
      const stored = await this.deps.state.read(connection);
      if (!stored?.state.refreshToken || stored.state.connectionUID !== uid) return;
      const inputs = await resolveInputs(this.deps.core, connection, this.options.propagationMs, {
        ...this.inputOptions(),
        clientOnly: true,
      });
      const endpoints = await this.deps.oauth.resolveEndpoints(
        inputs.endpoints(stored.state.geolocation),
        signal,
      );
      await this.deps.oauth.revoke(
        inputs.client,
        endpoints,
        stored.state.refreshToken,
        'refresh_token',
        signal,
      );
      this.deps.events.record(
        { namespace, name, ...(uid ? { uid } : {}) },
        'Normal',
        'Revoked',
        'the refresh token was revoked at the provider',
      );
    } catch (err) {
      this.deps.log.warn(
        { namespace, name, ...errorFields(err) },
        'revocation on delete failed; deleting anyway',
      );
    }
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
      if (err instanceof k8s.ApiException && (err.code === 404 || err.code === 409)) return;
      throw err;
    }
  }
}
