// Wires informers to the work queue and runs N workers. Event handlers only enqueue keys; all
// decisions happen in the reconciler. Only the operator's own Secrets are watched, and only their
// metadata: the user's Secrets are read by GET when a reconcile needs them, so memory does not grow
// with the number or the size of the Secrets in the cluster.
//
// Labels select what is watched, but they are not trusted: any tenant can put them on a Secret. An
// output Secret's event reaches a connection only through its controller owner reference, which
// names a connection in the Secret's own namespace, and only while that connection has the UID the
// reference names.
import * as k8s from '@kubernetes/client-node';
import type { OAuthConnection } from '../api/v1alpha1.ts';
import { GROUP, KIND, PLURAL, VERSION } from '../api/v1alpha1.ts';
import { withDeadline, type Clock, type Deadline } from '../kube/clock.ts';
import { WorkQueue } from '../kube/workqueue.ts';
import { errorFields, type Logger } from '../observability/log.ts';
import { CONTROLLER_NAME, type OperatorMetrics } from '../observability/metrics.ts';
import { controllingConnection, outputSecretOwnerKey } from './output-secret.ts';
import type { Reconciler } from './reconciler.ts';
import {
  CONNECTION_NAME_ANNOTATION,
  CONNECTION_NAMESPACE_ANNOTATION,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  ROLE_LABEL,
} from './state-store.ts';

const INFORMER_RESTART_MS = 5_000;
/** A reconcile's provider requests and logins are aborted after this long (--reconcile-deadline). */
const DEFAULT_RECONCILE_DEADLINE_MS = 180_000;
// Kubernetes' metadata-only representation (what client-go's metadata informers ask for): the API
// server sends a PartialObjectMetadata per object, so a Secret's data never reaches this process.
const PARTIAL_METADATA_LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';
const PARTIAL_METADATA = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1';
/** Objects per list page: what one response holds in memory before it is trimmed. */
const LIST_PAGE_SIZE = 200;

export interface ControllerOptions {
  kubeConfig: k8s.KubeConfig;
  clock: Clock;
  log: Logger;
  metrics: OperatorMetrics;
  operatorNamespace: string;
  /**
   * Watch connections (and their output Secrets) in these namespaces only, with one informer each,
   * so that RBAC can be Roles in these namespaces; all namespaces when empty or unset.
   */
  watchNamespaces?: readonly string[];
  workers: number;
  /** Reconciles of one namespace at once (--max-in-flight-per-namespace); default workers - 1. */
  maxInFlightPerNamespace?: number;
  /** Aborts a reconcile's outbound work after this long (--reconcile-deadline). Default 3 min. */
  reconcileDeadlineMs?: number;
}

type Watched = k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>;
type ConnectionInformer = k8s.Informer<OAuthConnection> & k8s.ObjectCache<OAuthConnection>;

export class Controller {
  readonly queue: WorkQueue;
  private readonly options: ControllerOptions;
  /** One connection informer per watched namespace, or one under '' for all namespaces. */
  private readonly connections: ReadonlyMap<string, ConnectionInformer>;
  private readonly stateSecrets: Watched;
  /** One output-Secret informer per watched namespace, or one under '' for all namespaces. */
  private readonly outputSecrets: ReadonlyMap<string, Watched>;
  private readonly seen = new Map<string, string>();
  private synced = false;
  private stopped = false;

  constructor(options: ControllerOptions) {
    this.options = options;
    this.queue = new WorkQueue({
      clock: options.clock,
      name: CONTROLLER_NAME,
      metrics: options.metrics.workQueue,
      // Keys are namespace/name: namespaces are served in turn, and one namespace's slow
      // connections (a tarpit provider) cannot hold every worker.
      fairness: {
        maxInFlightPerGroup: options.maxInFlightPerNamespace ?? Math.max(1, options.workers - 1),
      },
    });
    const kc = options.kubeConfig;
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    // undefined: one informer over all namespaces.
    const scopes: (string | undefined)[] = options.watchNamespaces?.length
      ? [...new Set(options.watchNamespaces)]
      : [undefined];
    this.connections = new Map(scopes.map((ns) => [ns ?? '', connectionInformer(kc, custom, ns)]));
    // State Secrets live in the operator's namespace only, where tenants cannot write.
    this.stateSecrets = secretMetadataInformer(
      kc,
      core,
      options.operatorNamespace,
      `${MANAGED_BY_LABEL}=${MANAGED_BY},${ROLE_LABEL}=state`,
      (meta) => ({
        annotations: {
          [CONNECTION_NAMESPACE_ANNOTATION]: meta.annotations?.[CONNECTION_NAMESPACE_ANNOTATION] ?? '',
          [CONNECTION_NAME_ANNOTATION]: meta.annotations?.[CONNECTION_NAME_ANNOTATION] ?? '',
        },
      }),
    );
    const outputSelector = `${MANAGED_BY_LABEL}=${MANAGED_BY},${ROLE_LABEL}=output`;
    const ownerOnly: Trim = (meta) => {
      const owner = controllingConnection(meta);
      return owner ? { ownerReferences: [{ kind: KIND, controller: true, ...owner }] } : {};
    };
    this.outputSecrets = new Map(
      scopes.map((ns) => [ns ?? '', secretMetadataInformer(kc, core, ns, outputSelector, ownerOnly)]),
    );
    this.wire();
  }

  getConnection(namespace: string, name: string): OAuthConnection | undefined {
    // A namespace that is not watched has no informer: its connections are not ours.
    return (this.connections.get(namespace) ?? this.connections.get(''))?.get(name, namespace);
  }

  private informers(): Watched[] {
    return [...this.connections.values(), this.stateSecrets, ...this.outputSecrets.values()] as Watched[];
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Starts the informers and resolves once each has listed once. */
  async start(): Promise<void> {
    await Promise.all(this.informers().map((informer) => informer.start()));
    this.synced = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.informers().map((informer) => informer.stop()));
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
    for (const informer of this.connections.values()) {
      for (const connection of informer.list()) this.queue.add(keyOf(connection));
    }
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
      const deadline = this.deadline(signal);
      try {
        const result = await reconciler.reconcile(key, deadline.signal);
        // A reconcile cut off by its deadline may have stopped between steps without deciding when
        // to look again: it is retried with backoff rather than forgotten.
        if (!deadline.expired()) this.queue.forget(key);
        if (result.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
        else if (deadline.expired()) this.queue.addRateLimited(key);
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
        deadline.clear();
        if (deadline.expired()) {
          log.warn(
            { key, deadlineMs: this.deadlineMs() },
            'reconcile deadline reached: its provider requests were aborted; looking again with backoff',
          );
        }
        metrics.reconcileTime.observe({ controller: CONTROLLER_NAME }, (clock.monotonic() - started) / 1000);
        this.queue.done(key);
        if (this.queue.shuttingDown()) {
          log.info({ key, inFlight: this.queue.inFlight() }, 'reconcile in flight returned while draining');
        }
      }
    }
  }

  private deadlineMs(): number {
    return this.options.reconcileDeadlineMs ?? DEFAULT_RECONCILE_DEADLINE_MS;
  }

  /**
   * The signal one reconcile gets: aborted when `leading` aborts (drain deadline, lost leadership) or
   * when the reconcile deadline passes.
   */
  private deadline(leading: AbortSignal): Deadline {
    const ms = this.deadlineMs();
    const reason = new DOMException(`reconcile deadline of ${String(ms)} ms reached`, 'TimeoutError');
    return withDeadline(leading, ms, reason, this.options.clock);
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
    for (const [namespace, informer] of this.connections) {
      informer.on('add', onConnection);
      informer.on('update', onConnection);
      informer.on('delete', (connection) => {
        const key = keyOf(connection);
        this.seen.delete(key);
        this.queue.add(key);
      });
      this.restartOnError(informer, scoped('oauthconnections', namespace));
    }

    // Only the operator writes in its own namespace, so a state Secret's annotations can be trusted.
    const onStateSecret = (secret: k8s.KubernetesObject): void => {
      const annotations = secret.metadata?.annotations ?? {};
      const namespace = annotations[CONNECTION_NAMESPACE_ANNOTATION];
      const name = annotations[CONNECTION_NAME_ANNOTATION];
      if (namespace && name) this.queue.add(`${namespace}/${name}`);
    };
    // An output Secret is deleted or edited: its connection writes it again.
    const onOutputSecret = (secret: k8s.KubernetesObject): void => {
      const key = outputSecretOwnerKey(secret, (namespace, name) => this.getConnection(namespace, name));
      if (key !== undefined) this.queue.add(key);
    };
    // State Secrets are written by the reconciler itself; only their loss needs attention.
    this.stateSecrets.on('delete', onStateSecret);
    this.restartOnError(this.stateSecrets, 'state secrets');
    for (const [namespace, informer] of this.outputSecrets) {
      informer.on('delete', onOutputSecret);
      informer.on('update', onOutputSecret);
      this.restartOnError(informer, scoped('output secrets', namespace));
    }
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

/** An informer's name in logs: what it watches, and where when not everywhere. */
function scoped(what: string, namespace: string): string {
  return namespace === '' ? what : `${what} in ${namespace}`;
}

/** The OAuthConnections of one namespace, or of all when `namespace` is undefined. */
function connectionInformer(
  kc: k8s.KubeConfig,
  custom: k8s.CustomObjectsApi,
  namespace: string | undefined,
): ConnectionInformer {
  const path = namespace
    ? `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`
    : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
  return k8s.makeInformer<OAuthConnection>(kc, path, async () => {
    const list: unknown = namespace
      ? await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL })
      : await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL });
    return list as k8s.KubernetesListObject<OAuthConnection>;
  });
}

export function keyOf(object: { metadata?: { namespace?: string; name?: string } }): string {
  return `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;
}

/** Keeps of an object's metadata only what an event handler reads; the rest is dropped on arrival. */
type Trim = (metadata: k8s.V1ObjectMeta) => Partial<k8s.V1ObjectMeta>;

function trimmed(object: k8s.KubernetesObject, trim: Trim): k8s.KubernetesObject {
  const { name, namespace, resourceVersion } = object.metadata ?? {};
  // ListWatch keys its cache by namespace/name and detects changes by resourceVersion.
  return { metadata: { name, namespace, resourceVersion, ...trim(object.metadata ?? {}) } };
}

/**
 * A Watch that asks for PartialObjectMetadata and hands on trimmed objects. client-node's Watch takes
 * its request options from the KubeConfig; a config derived from the real one adds the Accept header.
 */
class MetadataWatch extends k8s.Watch {
  private readonly trim: Trim;

  constructor(kc: k8s.KubeConfig, trim: Trim) {
    const config = Object.create(kc) as k8s.KubeConfig;
    // Watch asks for its options with no headers of its own.
    config.applyToFetchOptions = (opts) =>
      kc.applyToFetchOptions({ ...opts, headers: { Accept: PARTIAL_METADATA } });
    super(config);
    this.trim = trim;
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: k8s.KubernetesObject) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return super.watch(
      path,
      queryParams,
      // ERROR carries a Status (a 410 for an expired resourceVersion), which ListWatch reads as is.
      (phase: string, object: k8s.KubernetesObject) => {
        callback(phase, phase === 'ERROR' ? object : trimmed(object, this.trim));
      },
      done,
    );
  }
}

/**
 * An informer over the Secrets a label selector picks (in one namespace, or all), holding their
 * trimmed metadata only. client-node has no metadata informer; its ListWatch takes any list
 * function and watcher, so both ask for PartialObjectMetadata here, and the list is read in pages.
 */
function secretMetadataInformer(
  kc: k8s.KubeConfig,
  core: k8s.CoreV1Api,
  namespace: string | undefined,
  labelSelector: string,
  trim: Trim,
): Watched {
  const list = async (): Promise<k8s.KubernetesListObject<k8s.KubernetesObject>> => {
    const items: k8s.KubernetesObject[] = [];
    let resourceVersion: string | undefined;
    let next: string | undefined;
    do {
      const page = { labelSelector, limit: LIST_PAGE_SIZE, ...(next ? { _continue: next } : {}) };
      const options = k8s.setHeaderOptions('Accept', PARTIAL_METADATA_LIST);
      const result = namespace
        ? await core.listNamespacedSecret({ namespace, ...page }, options)
        : await core.listSecretForAllNamespaces(page, options);
      // An empty PartialObjectMetadataList comes with items: null, whatever the type says.
      for (const item of (result.items as k8s.V1Secret[] | null) ?? []) items.push(trimmed(item, trim));
      resourceVersion = result.metadata?.resourceVersion;
      next = result.metadata?._continue;
    } while (next);
    return { metadata: { resourceVersion }, items };
  };
  const path = namespace ? `/api/v1/namespaces/${namespace}/secrets` : '/api/v1/secrets';
  return new k8s.ListWatch(path, new MetadataWatch(kc, trim), list, false, labelSelector);
}
