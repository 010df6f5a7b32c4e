// Wires informers to the work queue and runs N workers. Event handlers only enqueue keys; all
// decisions happen in the reconciler. Only the operator's own labelled Secrets are watched: the
// user's Secrets are read by GET when a reconcile needs them, so memory does not grow with the
// number of unrelated Secrets in the cluster.
import * as k8s from '@kubernetes/client-node';
import type { OAuthConnection } from '../api/v1alpha1.ts';
import { GROUP, PLURAL, VERSION } from '../api/v1alpha1.ts';
import type { Clock } from '../kube/clock.ts';
import { WorkQueue } from '../kube/workqueue.ts';
import { errorFields, type Logger } from '../observability/log.ts';
import { CONTROLLER_NAME, type OperatorMetrics } from '../observability/metrics.ts';
import type { Reconciler } from './reconciler.ts';
import {
  CONNECTION_NAME_ANNOTATION,
  CONNECTION_NAMESPACE_ANNOTATION,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  ROLE_LABEL,
} from './state-store.ts';

const INFORMER_RESTART_MS = 5_000;

export interface ControllerOptions {
  kubeConfig: k8s.KubeConfig;
  clock: Clock;
  log: Logger;
  metrics: OperatorMetrics;
  operatorNamespace: string;
  /** Watch connections in one namespace only; all namespaces when unset. */
  watchNamespace?: string;
  workers: number;
}

type Watched = k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>;

export class Controller {
  readonly queue: WorkQueue;
  private readonly options: ControllerOptions;
  private readonly connections: k8s.Informer<OAuthConnection> & k8s.ObjectCache<OAuthConnection>;
  private readonly secrets: Watched[];
  private readonly seen = new Map<string, string>();
  private synced = false;
  private stopped = false;

  constructor(options: ControllerOptions) {
    this.options = options;
    this.queue = new WorkQueue({
      clock: options.clock,
      name: CONTROLLER_NAME,
      metrics: options.metrics.workQueue,
    });
    const kc = options.kubeConfig;
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const ns = options.watchNamespace;
    const connectionsPath = ns
      ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`
      : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    this.connections = k8s.makeInformer<OAuthConnection>(kc, connectionsPath, async () => {
      const list: unknown = ns
        ? await custom.listNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            namespace: ns,
            plural: PLURAL,
          })
        : await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL });
      return list as k8s.KubernetesListObject<OAuthConnection>;
    });
    const stateSelector = `${MANAGED_BY_LABEL}=${MANAGED_BY},${ROLE_LABEL}=state`;
    const outputSelector = `${MANAGED_BY_LABEL}=${MANAGED_BY},${ROLE_LABEL}=output`;
    const stateSecrets = k8s.makeInformer<k8s.V1Secret>(
      kc,
      `/api/v1/namespaces/${options.operatorNamespace}/secrets`,
      () => core.listNamespacedSecret({ namespace: options.operatorNamespace, labelSelector: stateSelector }),
      stateSelector,
    );
    const outputSecrets = k8s.makeInformer<k8s.V1Secret>(
      kc,
      ns ? `/api/v1/namespaces/${ns}/secrets` : '/api/v1/secrets',
      () =>
        ns
          ? core.listNamespacedSecret({ namespace: ns, labelSelector: outputSelector })
          : core.listSecretForAllNamespaces({ labelSelector: outputSelector }),
      outputSelector,
    );
    this.secrets = [stateSecrets, outputSecrets];
    this.wire();
  }

  getConnection(namespace: string, name: string): OAuthConnection | undefined {
    return this.connections.get(name, namespace);
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Starts the informers and resolves once each has listed once. */
  async start(): Promise<void> {
    const all: Watched[] = [this.connections, ...this.secrets];
    await Promise.all(all.map((informer) => informer.start()));
    this.synced = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const all: Watched[] = [this.connections, ...this.secrets];
    await Promise.all(all.map((informer) => informer.stop()));
  }

  /**
   * Runs workers until `drain` aborts; then no key is handed out any more (queued keys are dropped:
   * the next leader starts from the cluster anyway) and the returned promise resolves once every
   * reconcile in flight has returned. `signal` is passed to each reconcile and aborts it: the work
   * must stop now (leadership lost, or the drain deadline passed). An abort of `signal` is a drain
   * too.
   */
  async runWorkers(reconciler: Reconciler, signal: AbortSignal, drain: AbortSignal = signal): Promise<void> {
    const { log } = this.options;
    // Every known connection is looked at once when work starts (a new leader starts from the cluster).
    for (const connection of this.connections.list()) this.queue.add(keyOf(connection));
    const onDrain = (): void => {
      if (this.queue.shuttingDown()) return;
      const dropped = this.queue.len();
      const inFlight = this.queue.inFlight();
      log.info({ inFlight, dropped }, 'draining: no new reconciles start; waiting for those in flight');
      // The workers' own loops end when get() reports the shutdown; this promise is not needed.
      void this.queue.shutDownWithDrain({ dropQueued: true });
    };
    const onAbort = (): void => {
      onDrain();
      const inFlight = this.queue.inFlight();
      if (inFlight > 0) log.warn({ inFlight }, 'aborting the reconciles in flight');
    };
    drain.addEventListener('abort', onDrain, { once: true });
    signal.addEventListener('abort', onAbort, { once: true });
    // Listeners added to an aborted signal never run.
    if (signal.aborted || drain.aborted) onDrain();
    try {
      const workers = Array.from({ length: this.options.workers }, () => this.worker(reconciler, signal));
      await Promise.all(workers);
    } finally {
      drain.removeEventListener('abort', onDrain);
      signal.removeEventListener('abort', onAbort);
    }
    log.info('all reconciles returned; workers stopped');
  }

  private async worker(reconciler: Reconciler, signal: AbortSignal): Promise<void> {
    const { metrics, log, clock } = this.options;
    for (;;) {
      const next = await this.queue.get();
      if (next.shutdown) return;
      const { key } = next;
      const started = clock.monotonic();
      try {
        const result = await reconciler.reconcile(key, signal);
        this.queue.forget(key);
        if (result.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
        metrics.reconcileTotal.inc({
          controller: CONTROLLER_NAME,
          result: result.requeueAfterMs ? 'requeue_after' : 'success',
        });
        metrics.lastReconcileSuccess.set(clock.now() / 1000);
      } catch (err) {
        // While draining the retry is not queued (the queue is shut down): the next leader retries.
        log.warn(
          { key, ...errorFields(err) },
          this.queue.shuttingDown()
            ? 'reconcile failed while draining'
            : 'reconcile failed; retrying with backoff',
        );
        metrics.reconcileTotal.inc({ controller: CONTROLLER_NAME, result: 'error' });
        metrics.reconcileErrors.inc({ controller: CONTROLLER_NAME });
        this.queue.addRateLimited(key);
      } finally {
        metrics.reconcileTime.observe({ controller: CONTROLLER_NAME }, (clock.monotonic() - started) / 1000);
        this.queue.done(key);
        if (this.queue.shuttingDown()) {
          log.info({ key, inFlight: this.queue.inFlight() }, 'reconcile in flight returned while draining');
        }
      }
    }
  }

  private wire(): void {
    const onConnection = (connection: OAuthConnection): void => {
      const key = keyOf(connection);
      // Status writes come back as update events; only changes a reconcile must act on enqueue.
      const fingerprint = JSON.stringify([
        connection.metadata.generation,
        connection.metadata.deletionTimestamp,
        connection.metadata.finalizers,
        connection.metadata.uid,
      ]);
      if (this.seen.get(key) === fingerprint) return;
      this.seen.set(key, fingerprint);
      this.queue.add(key);
    };
    this.connections.on('add', onConnection);
    this.connections.on('update', onConnection);
    this.connections.on('delete', (connection) => {
      const key = keyOf(connection);
      this.seen.delete(key);
      this.queue.add(key);
    });
    this.restartOnError(this.connections, 'oauthconnections');

    const onSecret = (secret: k8s.KubernetesObject): void => {
      const annotations = secret.metadata?.annotations ?? {};
      const namespace = annotations[CONNECTION_NAMESPACE_ANNOTATION] ?? secret.metadata?.namespace;
      const name = annotations[CONNECTION_NAME_ANNOTATION];
      if (namespace && name) this.queue.add(`${namespace}/${name}`);
    };
    const [stateSecrets, outputSecrets] = this.secrets;
    // State Secrets are written by the reconciler itself; only their loss needs attention.
    stateSecrets?.on('delete', onSecret);
    if (stateSecrets) this.restartOnError(stateSecrets, 'state secrets');
    outputSecrets?.on('delete', onSecret);
    outputSecrets?.on('update', onSecret);
    if (outputSecrets) this.restartOnError(outputSecrets, 'output secrets');
  }

  /** client-node informers stop on a watch error; they are restarted after a pause, forever. */
  private restartOnError(informer: Watched, what: string): void {
    informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.options.log.warn({ informer: what, ...errorFields(err) }, 'watch failed; restarting');
      setTimeout(() => {
        if (this.stopped) return;
        informer.start().catch((startErr: unknown) => {
          this.options.log.warn({ informer: what, ...errorFields(startErr) }, 'informer restart failed');
          informer.stop().catch(() => undefined);
          setTimeout(() => void informer.start().catch(() => undefined), INFORMER_RESTART_MS);
        });
      }, INFORMER_RESTART_MS);
    });
  }
}

export function keyOf(object: { metadata?: { namespace?: string; name?: string } }): string {
  return `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;
}
