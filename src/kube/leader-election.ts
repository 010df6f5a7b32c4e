// Lease-based leader election, ported from client-go's tools/leaderelection (leaderelection.go) and
// its Lease lock (resourcelock/leaselock.go).
//
// A candidate judges expiry only by time it measured itself: it remembers the moment (on its own
// monotonic clock) at which it last saw the lease record change, and treats the lease as expired once
// the holder's advertised lease duration has passed since then without another change. The
// timestamps in the record are written for humans and never compared with the local clock, so wall
// clocks skewed by any amount between replicas, or stepped while running, change nothing. (Only a
// difference in clock RATE matters, which leaseDuration/renewDeadline bounds, as in client-go.)
//
// Writes use the Lease's resourceVersion, so of several candidates racing for an expired lease only
// one update succeeds; the others get a 409 and have simply lost that round.
//
// Like client-go this does not fence: a leader that stalls (a long GC pause, a frozen VM) may act
// after its lease expired. Keeping renewDeadline well below leaseDuration limits that window.
//
// Cancelling run() hands over gracefully, which is client-go's ReleaseOnCancel contract ("all code
// guarded by this lease has successfully completed prior to cancelling") built in: the leading work
// is told to start nothing new, the lease is KEPT renewed while the work in flight settles, and only
// once the work has returned is renewing stopped and the lease released. The work is aborted at a
// drain deadline, or at once when leadership is really lost (renewal failed past renewDeadline), in
// which case nothing is released and the successor waits the lease out.
import * as k8s from '@kubernetes/client-node';
import { sleep, type Clock, type TimerHandle } from './clock.ts';

/** client-go's JitterFactor: acquire retries wait retryPeriod plus up to 1.2 × retryPeriod. */
export const JITTER_FACTOR = 1.2;

/** The election state stored in a Lease spec; times are wall-clock epoch milliseconds. */
export interface LeaderRecord {
  /** The current holder; empty when the lease was released. */
  holderIdentity: string;
  /** How long candidates must watch the record unchanged before taking the lease over. */
  leaseDurationSeconds: number;
  acquireTime?: number;
  renewTime?: number;
  /** Number of times the lease changed holder. */
  leaseTransitions: number;
}

export interface ObservedLeaderRecord extends LeaderRecord {
  /** The Lease's metadata.resourceVersion, which every update must present. */
  resourceVersion: string;
}

/**
 * Storage for the leader record with optimistic concurrency. Failures are thrown; a lost race is
 * reported as LeaderLockConflictError. The signal, when given, aborts the request.
 */
export interface LeaderLock {
  /** The current record, or undefined when there is none yet. */
  get(signal?: AbortSignal): Promise<ObservedLeaderRecord | undefined>;
  /** Creates the record; returns the new resourceVersion. */
  create(record: LeaderRecord, signal?: AbortSignal): Promise<string>;
  /** Replaces the record if it is still at resourceVersion; returns the new resourceVersion. */
  update(record: LeaderRecord, resourceVersion: string, signal?: AbortSignal): Promise<string>;
  /** Names the lock in log lines, e.g. "namespace/name". */
  describe(): string;
}

/** Someone else wrote the lock first (HTTP 409): this round was lost, not an error to retry at once. */
export class LeaderLockConflictError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'LeaderLockConflictError';
  }
}

/** The abort reason of the leading work when renewing failed past renewDeadline. */
export class LeadershipLostError extends Error {
  constructor(message = 'leader election lost') {
    super(message);
    this.name = 'LeadershipLostError';
  }
}

/** The abort reason of the leading work when it outlived the drain deadline after a cancel. */
export class DrainTimeoutError extends Error {
  constructor(drainTimeoutMs: number) {
    super(`leading work did not finish within the drain timeout of ${String(drainTimeoutMs)} ms`);
    this.name = 'DrainTimeoutError';
  }
}

type LogMethod = (fields: Record<string, unknown>, message: string) => void;

/** The subset of a pino logger used here. */
export interface LeaderElectionLogger {
  debug: LogMethod;
  info: LogMethod;
  warn: LogMethod;
  error: LogMethod;
}

const silentLogger: LeaderElectionLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

export interface LeaderElectionConfig {
  lock: LeaderLock;
  /** This candidate's identity, unique among candidates (typically the pod name). */
  identity: string;
  /**
   * How long candidates wait, measured from the last change of the record they observed, before
   * taking the lease over. Advertised to others in the record (rounded up to whole seconds).
   */
  leaseDurationMs?: number;
  /** How long the leader keeps retrying a failed renewal before it gives leadership up. */
  renewDeadlineMs?: number;
  /** Interval between acquire attempts (plus jitter) and between renewals. */
  retryPeriodMs?: number;
  clock: Clock;
  /**
   * Release the lease when run()'s signal is aborted, so that a successor need not wait for it to
   * expire. The release waits until a promise returned by onStartedLeading has settled, so the
   * guarded work has stopped before another replica may start it.
   */
  releaseOnCancel?: boolean;
  /**
   * How long, after run()'s signal aborted, the leading work may go on finishing what it started
   * before its signal aborts it. The lease is renewed all the while. 0 (the default) aborts the work
   * at once. Keep it below the time the process is given to stop (terminationGracePeriodSeconds).
   */
  drainTimeoutMs?: number;
  /**
   * Called once leadership is acquired. May return a promise that settles when the work has stopped;
   * renewing continues until then, and a release on cancel waits for it.
   *
   * - `drain` aborts when run()'s signal does (and whenever `signal` does): start no new work, let
   *   the work in flight finish, then settle.
   * - `signal` aborts when the work must stop NOW: leadership was lost (reason LeadershipLostError),
   *   the drain deadline passed (DrainTimeoutError), or at once on cancel with drainTimeoutMs 0.
   */
  onStartedLeading(signal: AbortSignal, drain: AbortSignal): void | Promise<void>;
  /**
   * Called exactly once when run() finishes, whether leadership was lost, given up on cancel, or
   * never acquired (as client-go does). After a loss the process is expected to exit.
   */
  onStoppedLeading(): void;
  /** Called when a different leader is observed, including the first one and this candidate. */
  onNewLeader?(identity: string): void;
  log?: LeaderElectionLogger;
  /** Source of jitter in [0, 1); replaceable for deterministic tests. */
  random?: () => number;
}

export class LeaderElector {
  private readonly lock: LeaderLock;
  private readonly identity: string;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly clock: Clock;
  private readonly releaseOnCancel: boolean;
  private readonly drainTimeoutMs: number;
  /** Kept whole so callbacks are called as methods of the object that was passed in. */
  private readonly callbacks: LeaderElectionConfig;
  private readonly log: LeaderElectionLogger;
  private readonly random: () => number;

  /** The record as last read or written by us. */
  private observedRecord: ObservedLeaderRecord | undefined;
  /** Monotonic ms at which observedRecord last changed: the only basis for judging expiry. */
  private observedTime = 0;
  /** The holder last passed to onNewLeader (lags observedRecord until reported). */
  private reportedLeader = '';
  private leading = false;
  private running = false;
  /** The renewal attempt in flight, awaited before a release so that the two writes cannot cross. */
  private renewalAttempt: Promise<boolean> | undefined;

  constructor(config: LeaderElectionConfig) {
    const leaseDurationMs = config.leaseDurationMs ?? 15_000;
    const renewDeadlineMs = config.renewDeadlineMs ?? 10_000;
    const retryPeriodMs = config.retryPeriodMs ?? 2_000;
    // The same checks as client-go's NewLeaderElector.
    if (!(leaseDurationMs > renewDeadlineMs))
      throw new Error('leaseDuration must be greater than renewDeadline');
    if (!(renewDeadlineMs > JITTER_FACTOR * retryPeriodMs)) {
      throw new Error('renewDeadline must be greater than retryPeriod*JitterFactor');
    }
    if (!(leaseDurationMs > 0)) throw new Error('leaseDuration must be greater than zero');
    if (!(renewDeadlineMs > 0)) throw new Error('renewDeadline must be greater than zero');
    if (!(retryPeriodMs > 0)) throw new Error('retryPeriod must be greater than zero');
    if (config.identity === '') throw new Error('identity must not be empty');
    const drainTimeoutMs = config.drainTimeoutMs ?? 0;
    if (!(drainTimeoutMs >= 0)) throw new Error('drainTimeout must not be negative');

    this.lock = config.lock;
    this.identity = config.identity;
    this.leaseDurationMs = leaseDurationMs;
    this.renewDeadlineMs = renewDeadlineMs;
    this.retryPeriodMs = retryPeriodMs;
    this.clock = config.clock;
    this.releaseOnCancel = config.releaseOnCancel ?? true;
    this.drainTimeoutMs = drainTimeoutMs;
    this.callbacks = config;
    this.log = config.log ?? silentLogger;
    this.random = config.random ?? Math.random;
  }

  /** True while this candidate leads: it holds the lease and has not yet given up renewing it. */
  isLeader(): boolean {
    return this.leading && this.observedHolderIsMe();
  }

  /** The holder last observed, or undefined if none has been observed or the lease was released. */
  getLeader(): string | undefined {
    return this.observedRecord?.holderIdentity || undefined;
  }

  /**
   * client-go's LeaderElector.Check, for a liveness probe: an error when this candidate believes it
   * leads but has not renewed the lease for longer than leaseDuration + maxTolerableExpiredLeaseMs.
   * A working elector gives leadership up after renewDeadline (< leaseDuration), so this catches
   * only a leader that is stuck and should be restarted. Followers are always healthy.
   */
  check(maxTolerableExpiredLeaseMs: number): Error | undefined {
    if (!this.isLeader()) return undefined;
    const sinceRenewal = this.clock.monotonic() - this.observedTime;
    if (sinceRenewal > this.leaseDurationMs + maxTolerableExpiredLeaseMs) {
      return new Error(
        `failed to renew leadership on lease ${this.lock.describe()} for ${String(Math.round(sinceRenewal))} ms`,
      );
    }
    return undefined;
  }

  /**
   * Campaigns until the lease is acquired, leads until the lease is lost or signal aborts, then calls
   * onStoppedLeading and resolves. When signal aborts while leading, the lease stays renewed until
   * the leading work has returned (see drainTimeoutMs) and is then released. It rejects only when
   * the elector is already running.
   */
  async run(signal: AbortSignal): Promise<void> {
    if (this.running) throw new Error('LeaderElector.run is already running');
    this.running = true;
    try {
      if (!(await this.acquire(signal))) return;
      await this.lead(signal);
    } finally {
      this.running = false;
      this.notify('onStoppedLeading', () => {
        this.callbacks.onStoppedLeading();
      });
    }
  }

  private async lead(signal: AbortSignal): Promise<void> {
    const lease = this.lock.describe();
    // Three stages, each implied by the next: drain (start nothing new), abort (stop now), and
    // stopRenewing, which on a cancel follows the work's return rather than the cancel itself.
    const drain = new AbortController();
    const abort = new AbortController();
    const stopRenewing = new AbortController();
    abort.signal.addEventListener(
      'abort',
      () => {
        drain.abort(abort.signal.reason);
      },
      { once: true },
    );
    let work: Promise<void> | undefined;
    let deadline: TimerHandle | undefined;
    const onCancel = (): void => {
      drain.abort(signal.reason);
      if (!work) {
        abort.abort(signal.reason);
        stopRenewing.abort(signal.reason);
        return;
      }
      this.log.info(
        { lease, identity: this.identity, drainTimeoutMs: this.drainTimeoutMs },
        'draining: starting no new work; renewing the lease until the work in flight returns',
      );
      if (this.drainTimeoutMs > 0) {
        deadline = this.clock.setTimeout(() => {
          this.log.warn(
            { lease, identity: this.identity, drainTimeoutMs: this.drainTimeoutMs },
            'drain timeout passed: aborting the work in flight',
          );
          abort.abort(new DrainTimeoutError(this.drainTimeoutMs));
        }, this.drainTimeoutMs);
      } else {
        abort.abort(signal.reason);
      }
      // startLeading's promise never rejects.
      void work.then(() => {
        this.log.info({ lease, identity: this.identity }, 'the work in flight returned; releasing the lease');
        stopRenewing.abort(signal.reason);
      });
    };
    this.leading = true;
    let outcome: 'stopped' | 'lost' = 'stopped';
    try {
      // An abort while the last acquire attempt was in flight means no work is started at all.
      if (!signal.aborted) work = this.startLeading(abort.signal, drain.signal);
      signal.addEventListener('abort', onCancel, { once: true });
      if (signal.aborted) onCancel();
      outcome = await this.renew(stopRenewing.signal);
    } finally {
      this.leading = false;
      signal.removeEventListener('abort', onCancel);
      if (deadline !== undefined) this.clock.clearTimeout(deadline);
      abort.abort(outcome === 'lost' ? new LeadershipLostError() : signal.reason);
    }
    // Unlike client-go, a lease is released only when the caller cancels, never after a failed
    // renewal: a successor then waits out the lease, giving our aborted work time to stop. The
    // aborted work is still awaited: it may be storing what a provider already answered (the chain
    // handle keeps trying within its persist budget), and returning now would let the process exit
    // under it.
    if (outcome === 'lost') await work;
    if (outcome === 'stopped' && this.releaseOnCancel) {
      // Already settled on this path; awaited again so that no future caller can release early.
      await work;
      await this.renewalAttempt;
      await this.release();
    }
  }

  /** wait.JitterUntil(tryAcquireOrRenew, retryPeriod, JitterFactor, sliding) until it succeeds. */
  private async acquire(signal: AbortSignal): Promise<boolean> {
    const lease = this.lock.describe();
    this.log.info({ lease, identity: this.identity }, 'attempting to acquire leader lease');
    for (;;) {
      if (signal.aborted) return false;
      const succeeded = await this.tryAcquireOrRenew(signal);
      this.maybeReportTransition();
      if (succeeded) {
        this.log.info({ lease, identity: this.identity }, 'successfully acquired lease');
        return true;
      }
      this.log.debug({ lease, leader: this.getLeader() }, 'failed to acquire lease');
      const jittered = this.retryPeriodMs * (1 + this.random() * JITTER_FACTOR);
      if (!(await this.pause(jittered, signal))) return false;
    }
  }

  /**
   * wait.Until(renewal cycle, retryPeriod): each cycle retries every retryPeriod until a renewal
   * succeeds or renewDeadline has passed since the cycle began, which ends leadership.
   */
  private async renew(stop: AbortSignal): Promise<'stopped' | 'lost'> {
    const lease = this.lock.describe();
    for (;;) {
      if (stop.aborted) return 'stopped';
      const outcome = await this.renewWithinDeadline(stop);
      this.maybeReportTransition();
      if (outcome === 'stopped') return 'stopped';
      if (outcome === 'deadline') {
        this.log.warn(
          { lease, identity: this.identity },
          'failed to renew lease within renewDeadline, stopping',
        );
        return 'lost';
      }
      this.log.debug({ lease }, 'successfully renewed lease');
      if (!(await this.pause(this.retryPeriodMs, stop))) return 'stopped';
    }
  }

  private async renewWithinDeadline(stop: AbortSignal): Promise<'renewed' | 'deadline' | 'stopped'> {
    const deadline = new AbortController();
    const timer = this.clock.setTimeout(() => {
      deadline.abort(new Error(`lease not renewed within ${this.renewDeadlineMs} ms`));
    }, this.renewDeadlineMs);
    const onStop = (): void => {
      deadline.abort(stop.reason);
    };
    stop.addEventListener('abort', onStop, { once: true });
    const gaveUp = (): 'deadline' | 'stopped' => (stop.aborted ? 'stopped' : 'deadline');
    try {
      for (;;) {
        if (deadline.signal.aborted) return gaveUp();
        // The deadline wins over a request that hangs; the signal also aborts that request.
        this.renewalAttempt = this.tryAcquireOrRenew(deadline.signal);
        if (await untilAborted(this.renewalAttempt, deadline.signal, false)) return 'renewed';
        if (!(await this.pause(this.retryPeriodMs, deadline.signal))) return gaveUp();
      }
    } finally {
      this.clock.clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
    }
  }

  /** One round: renew if we lead, otherwise take the lease if it is free or expired. Never throws. */
  private async tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const now = Math.floor(this.clock.now());
    const desired: LeaderRecord = {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      acquireTime: now,
      renewTime: now,
      leaseTransitions: 0,
    };
    const lease = this.lock.describe();

    // 1. Fast path: a leader renews on the strength of the record it wrote last, saving a read.
    const observed = this.observedRecord;
    if (observed && this.observedHolderIsMe() && this.isLeaseValid()) {
      desired.acquireTime = observed.acquireTime;
      desired.leaseTransitions = observed.leaseTransitions;
      try {
        const resourceVersion = await this.lock.update(desired, observed.resourceVersion, signal);
        this.setObservedRecord({ ...desired, resourceVersion });
        return true;
      } catch (err) {
        this.log.debug({ lease, err }, 'optimistic renewal failed, reading the lease');
      }
    }

    // 2. Read the record, creating it if there is none.
    let current: ObservedLeaderRecord | undefined;
    try {
      current = await this.lock.get(signal);
    } catch (err) {
      this.log.error({ lease, err }, 'error retrieving leader lease');
      return false;
    }
    if (!current) {
      try {
        const resourceVersion = await this.lock.create(desired, signal);
        this.setObservedRecord({ ...desired, resourceVersion });
        return true;
      } catch (err) {
        this.logWriteFailure(err, 'error initially creating leader lease');
        return false;
      }
    }

    // 3. Any change of the record restarts our observation of it; only its change matters, never
    // the times written in it.
    if (!this.observedRecord || !sameRecord(this.observedRecord, current)) {
      this.setObservedRecord(current);
    } else {
      // Unchanged content under a new resourceVersion (e.g. a label edit) does not restart the
      // clock, but the next update must present the current version.
      this.observedRecord = current;
    }
    if (current.holderIdentity !== '' && this.isLeaseValid() && !this.observedHolderIsMe()) {
      this.log.debug(
        { lease, holder: current.holderIdentity },
        'lease is held by another and has not yet expired',
      );
      return false;
    }

    // 4. Take or renew the lease, keeping the term's start and counting a change of holder.
    if (this.observedHolderIsMe()) {
      desired.acquireTime = current.acquireTime;
      desired.leaseTransitions = current.leaseTransitions;
    } else {
      desired.leaseTransitions = current.leaseTransitions + 1;
    }
    try {
      const resourceVersion = await this.lock.update(desired, current.resourceVersion, signal);
      this.setObservedRecord({ ...desired, resourceVersion });
      return true;
    } catch (err) {
      this.logWriteFailure(err, 'failed to update leader lease');
      return false;
    }
  }

  /** Gives the lease up so that a successor need not wait for it to expire. */
  private async release(): Promise<boolean> {
    const observed = this.observedRecord;
    if (!observed || !this.observedHolderIsMe()) return true;
    const lease = this.lock.describe();
    const timeout = new AbortController();
    const timer = this.clock.setTimeout(() => {
      timeout.abort(new Error(`lease not released within ${this.renewDeadlineMs} ms`));
    }, this.renewDeadlineMs);
    const withinTimeout = async <T>(request: Promise<T>): Promise<T> => {
      const result = await untilAborted(request, timeout.signal, TIMED_OUT);
      if (result === TIMED_OUT) throw timeout.signal.reason;
      return result;
    };
    try {
      let current: ObservedLeaderRecord = observed;
      for (let attempt = 1; ; attempt++) {
        const now = Math.floor(this.clock.now());
        // client-go's release record: no holder, a one-second duration, and the transitions kept.
        const released: LeaderRecord = {
          holderIdentity: '',
          leaseDurationSeconds: 1,
          acquireTime: now,
          renewTime: now,
          leaseTransitions: current.leaseTransitions,
        };
        try {
          const resourceVersion = await withinTimeout(
            this.lock.update(released, current.resourceVersion, timeout.signal),
          );
          this.setObservedRecord({ ...released, resourceVersion });
          this.maybeReportTransition();
          this.log.info({ lease, identity: this.identity }, 'released leader lease');
          return true;
        } catch (err) {
          // A renewal that the cancel aborted in flight may still have reached the server and moved
          // the resourceVersion on; if the lease still names us, release it at its current version.
          if (!(err instanceof LeaderLockConflictError) || attempt > 1) throw err;
          const fresh = await withinTimeout(this.lock.get(timeout.signal));
          if (!fresh || fresh.holderIdentity !== this.identity) {
            if (fresh) this.setObservedRecord(fresh);
            return true;
          }
          current = fresh;
        }
      }
    } catch (err) {
      this.log.error({ lease, err }, 'failed to release leader lease');
      return false;
    } finally {
      this.clock.clearTimeout(timer);
    }
  }

  private isLeaseValid(): boolean {
    const advertised = (this.observedRecord?.leaseDurationSeconds ?? 0) * 1000;
    // A record without a usable duration is judged by our own setting rather than as expired.
    const leaseDurationMs = advertised > 0 ? advertised : this.leaseDurationMs;
    return this.observedTime + leaseDurationMs > this.clock.monotonic();
  }

  private observedHolderIsMe(): boolean {
    return this.observedRecord?.holderIdentity === this.identity;
  }

  private setObservedRecord(record: ObservedLeaderRecord): void {
    this.observedRecord = record;
    this.observedTime = this.clock.monotonic();
  }

  private maybeReportTransition(): void {
    const holder = this.observedRecord?.holderIdentity ?? '';
    if (holder === this.reportedLeader) return;
    this.reportedLeader = holder;
    // A released lease has no leader to report.
    if (holder === '') return;
    this.notify('onNewLeader', () => {
      this.callbacks.onNewLeader?.(holder);
    });
  }

  /** Starts the leading work; returns a promise that settles when that work has stopped, if it says. */
  private startLeading(signal: AbortSignal, drain: AbortSignal): Promise<void> | undefined {
    let work: unknown;
    this.notify('onStartedLeading', () => {
      work = this.callbacks.onStartedLeading(signal, drain);
    });
    if (!(work instanceof Promise)) return undefined;
    return work.then(
      () => undefined,
      (err: unknown) => {
        this.log.error({ err }, 'leading work failed');
      },
    );
  }

  /** Keeps a throwing callback from breaking the election loop. */
  private notify(callback: string, call: () => void): void {
    try {
      call();
    } catch (err) {
      this.log.error({ err, callback }, 'leader election callback threw');
    }
  }

  private logWriteFailure(err: unknown, message: string): void {
    const lease = this.lock.describe();
    if (err instanceof LeaderLockConflictError) {
      this.log.debug({ lease, err }, `${message}: lost the race to another writer`);
    } else {
      this.log.error({ lease, err }, message);
    }
  }

  /** Sleeps on the injected clock; false when the signal aborted first. */
  private async pause(delayMs: number, signal: AbortSignal): Promise<boolean> {
    try {
      await sleep(this.clock, delayMs, signal);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * client-go's HealthzAdaptor: a liveness check that can be created (and served) before the elector
 * exists. It reports healthy until setLeaderElection() is called, and then whatever the elector's
 * check(timeoutMs) says: unhealthy only for a leader whose lease went unrenewed for longer than
 * leaseDuration + timeoutMs, so that the kubelet restarts a leader that is stuck.
 */
export class LeaderHealthzAdaptor {
  private readonly timeoutMs: number;
  private elector: LeaderElector | undefined;

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
  }

  setLeaderElection(elector: LeaderElector): void {
    this.elector = elector;
  }

  /** undefined when healthy, else why not. */
  check(): Error | undefined {
    return this.elector?.check(this.timeoutMs);
  }
}

const TIMED_OUT = Symbol('timed out');

function sameRecord(a: LeaderRecord, b: LeaderRecord): boolean {
  return (
    a.holderIdentity === b.holderIdentity &&
    a.leaseDurationSeconds === b.leaseDurationSeconds &&
    a.acquireTime === b.acquireTime &&
    a.renewTime === b.renewTime &&
    a.leaseTransitions === b.leaseTransitions
  );
}

/** Resolves with the promise's value, or with whenAborted as soon as the signal aborts. */
function untilAborted<T, U>(promise: Promise<T>, signal: AbortSignal, whenAborted: U): Promise<T | U> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.resolve(whenAborted);
  }
  return new Promise<T | U>((resolve, reject) => {
    const onAbort = (): void => {
      resolve(whenAborted);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** A LeaderLock on a coordination.k8s.io/v1 Lease, as client-go's LeaseLock. */
export class LeaseLock implements LeaderLock {
  private readonly api: k8s.CoordinationV1Api;
  private readonly namespace: string;
  private readonly name: string;
  /** The Lease as last read or written, so that a replace keeps labels and annotations others set. */
  private lastLease: k8s.V1Lease | undefined;

  constructor(kubeConfig: k8s.KubeConfig, namespace: string, name: string) {
    this.api = kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.namespace = namespace;
    this.name = name;
  }

  describe(): string {
    return `${this.namespace}/${this.name}`;
  }

  async get(signal?: AbortSignal): Promise<ObservedLeaderRecord | undefined> {
    let lease: k8s.V1Lease;
    try {
      lease = await this.api.readNamespacedLease(
        { name: this.name, namespace: this.namespace },
        abortableRequest(signal),
      );
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw err;
    }
    this.lastLease = lease;
    return { ...leaseSpecToRecord(lease.spec), resourceVersion: lease.metadata?.resourceVersion ?? '' };
  }

  async create(record: LeaderRecord, signal?: AbortSignal): Promise<string> {
    const body: k8s.V1Lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.name, namespace: this.namespace },
      spec: recordToLeaseSpec(record),
    };
    const lease = await this.write(() =>
      this.api.createNamespacedLease({ namespace: this.namespace, body }, abortableRequest(signal)),
    );
    return lease.metadata?.resourceVersion ?? '';
  }

  async update(record: LeaderRecord, resourceVersion: string, signal?: AbortSignal): Promise<string> {
    const body: k8s.V1Lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      // The resourceVersion makes the replace conditional: a concurrent writer turns it into a 409.
      metadata: {
        name: this.name,
        namespace: this.namespace,
        resourceVersion,
        labels: this.lastLease?.metadata?.labels,
        annotations: this.lastLease?.metadata?.annotations,
        finalizers: this.lastLease?.metadata?.finalizers,
        ownerReferences: this.lastLease?.metadata?.ownerReferences,
      },
      spec: recordToLeaseSpec(record),
    };
    const lease = await this.write(() =>
      this.api.replaceNamespacedLease(
        { name: this.name, namespace: this.namespace, body },
        abortableRequest(signal),
      ),
    );
    return lease.metadata?.resourceVersion ?? '';
  }

  private async write(request: () => Promise<k8s.V1Lease>): Promise<k8s.V1Lease> {
    try {
      const lease = await request();
      this.lastLease = lease;
      return lease;
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 409) {
        throw new LeaderLockConflictError(`lease ${this.describe()} was written concurrently`, {
          cause: err,
        });
      }
      throw err;
    }
  }
}

function recordToLeaseSpec(record: LeaderRecord): k8s.V1LeaseSpec {
  return {
    holderIdentity: record.holderIdentity,
    leaseDurationSeconds: record.leaseDurationSeconds,
    leaseTransitions: record.leaseTransitions,
    acquireTime: record.acquireTime === undefined ? undefined : new k8s.V1MicroTime(record.acquireTime),
    renewTime: record.renewTime === undefined ? undefined : new k8s.V1MicroTime(record.renewTime),
  };
}

function leaseSpecToRecord(spec: k8s.V1LeaseSpec | undefined): LeaderRecord {
  return {
    holderIdentity: spec?.holderIdentity ?? '',
    leaseDurationSeconds: spec?.leaseDurationSeconds ?? 0,
    acquireTime: microTimeToMs(spec?.acquireTime),
    renewTime: microTimeToMs(spec?.renewTime),
    leaseTransitions: spec?.leaseTransitions ?? 0,
  };
}

/**
 * client-node 1.4.0 types MicroTime fields as V1MicroTime (a Date that serializes with six fractional
 * digits, the only form the API server accepts) but does not convert them when reading, so a read
 * Lease holds the server's string. Both forms are accepted here.
 */
function microTimeToMs(value: unknown): number | undefined {
  if (value instanceof Date) return value.getTime();
  if (typeof value === 'string') {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? undefined : ms;
  }
  return undefined;
}

/** Request options that make client-node abort the HTTP request when the signal aborts. */
function abortableRequest(signal: AbortSignal | undefined): k8s.ConfigurationOptions | undefined {
  if (!signal) return undefined;
  const middleware: k8s.ObservableMiddleware = {
    pre: (context) => {
      context.setSignal(signal);
      return new k8s.Observable(Promise.resolve(context));
    },
    post: (context) => new k8s.Observable(Promise.resolve(context)),
  };
  // Appended, so that the middleware of the client's own configuration is kept.
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}
