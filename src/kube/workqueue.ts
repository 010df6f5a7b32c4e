// A port of client-go's workqueue (k8s.io/client-go/util/workqueue: queue.go, delaying_queue.go,
// rate_limiting_queue.go, default_rate_limiters.go) to a single-threaded event loop.
//
// The guarantees controllers rely on are kept exactly:
//   - a key that is queued and not yet handed out is queued once, however often it is added;
//   - a key is never handed to two workers at once: adding a key while a worker holds it marks it
//     dirty, and it is queued again only when that worker calls done();
//   - addAfter keeps only the earliest requested time per waiting key, so retries do not multiply.
//
// One addition client-go does not have (FairnessOptions): keys can be handed out round-robin across
// groups (the controller groups them by namespace) with a cap on the keys of one group in flight,
// so that one tenant's many slow connections cannot hold every worker while another tenant's key
// waits. Without the option there is one group and no cap: plain FIFO, as in client-go.
//
// Where Go needs a goroutine, a channel and a heartbeat ticker for the delayed entries, this port keeps
// one min-heap and one clock timer armed for the earliest entry; readiness is judged on the monotonic
// clock so that wall-clock steps neither release delayed keys early nor strand them.
import { MAX_TIMER_DELAY_MS, type Clock, type TimerHandle } from './clock.ts';

/** Decides how long a key waits before it is retried, and remembers failures per key. */
export interface RateLimiter {
  /** Delay in ms before the key may be processed again; counts as one more requeue of the key. */
  when(key: string): number;
  /** Stops tracking the key (call after a success or when giving up on it). */
  forget(key: string): void;
  numRequeues(key: string): number;
}

/**
 * Metrics hooks, named after client-go's queue metrics. Every method receives the queue name so one
 * implementation can serve several queues.
 */
export interface WorkQueueMetrics {
  /** A key became dirty (was added while not already waiting to be processed). */
  add(name: string): void;
  /** A worker took a key. */
  get(name: string): void;
  /** A worker finished a key. */
  done(name: string): void;
  /** Keys that are waiting to be processed, counting those that will be re-queued on done(). */
  depth(name: string, depth: number): void;
  /** A delayed or rate-limited add was requested. */
  retry(name: string): void;
  /** How long a key waited between becoming dirty and being handed to a worker. */
  queueDurationMs?(name: string, ms: number): void;
  /** How long a worker held a key. */
  workDurationMs?(name: string, ms: number): void;
}

export type GetResult = { key: string; shutdown: false } | { shutdown: true };

export interface ShutDownOptions {
  /**
   * Also drop the keys that are queued and not yet handed out, and the re-adds of keys in flight, so
   * that get() reports shutdown at once. Without it, as in client-go, get() still hands queued keys
   * out after shutdown; a leader handing over its lease wants no key to start any more.
   */
  dropQueued?: boolean;
}

/** Fair hand-out across groups of keys; see the file header. */
export interface FairnessOptions {
  /** The group of a key. Default: the text before the first '/' (the namespace of a namespace/name key). */
  groupOf?: (key: string) => string;
  /**
   * At most this many keys of one group are handed out and not yet done; a further key of that
   * group waits (other groups' keys go first) until one is done. Default: no limit.
   */
  maxInFlightPerGroup?: number;
}

export interface WorkQueueOptions {
  clock: Clock;
  /** Round-robin across groups and a per-group in-flight cap; without it, one FIFO as in client-go. */
  fairness?: FairnessOptions;
  /** Defaults to defaultControllerRateLimiter(clock). */
  rateLimiter?: RateLimiter;
  /** Passed to every metrics call. */
  name?: string;
  metrics?: WorkQueueMetrics;
}

interface WaitingEntry {
  key: string;
  /** Monotonic ms at which the key is added to the queue. */
  readyAt: number;
  /** Breaks ties between equal readyAt values, so keys due together are queued in request order. */
  seq: number;
  /** Position in the heap array, kept current so an entry can be moved in O(log n). */
  index: number;
}

/** A FIFO of keys, consumed from `head` and compacted once the consumed prefix dominates. */
class Fifo {
  private items: string[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(key: string): void {
    this.items.push(key);
  }

  shift(): string | undefined {
    const key = this.items[this.head];
    if (key === undefined) return undefined;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return key;
  }
}

/**
 * The keys ready to be handed out, one FIFO per group, the groups taken in turn: the group a key is
 * taken from goes to the back of the turn order (a Map keeps insertion order), so a group with one
 * ready key waits behind at most one key of each other group, not behind all of them.
 */
class ReadyKeys {
  private readonly groups = new Map<string, Fifo>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  push(group: string, key: string): void {
    let fifo = this.groups.get(group);
    if (fifo === undefined) {
      fifo = new Fifo();
      this.groups.set(group, fifo);
    }
    fifo.push(key);
    this.count++;
  }

  /** The next key of the first group, in turn order, that `eligible` accepts; undefined when none. */
  take(eligible: (group: string) => boolean): string | undefined {
    for (const [group, fifo] of this.groups) {
      if (!eligible(group)) continue;
      const key = fifo.shift();
      this.groups.delete(group);
      if (fifo.size > 0) this.groups.set(group, fifo);
      if (key === undefined) continue;
      this.count--;
      return key;
    }
    return undefined;
  }

  clear(): void {
    this.groups.clear();
    this.count = 0;
  }
}

const namespaceOf = (key: string): string => {
  const slash = key.indexOf('/');
  return slash < 0 ? '' : key.slice(0, slash);
};

export class WorkQueue {
  private readonly clock: Clock;
  private readonly rateLimiter: RateLimiter;
  private readonly name: string;
  private readonly metrics: WorkQueueMetrics | undefined;
  private readonly groupOf: (key: string) => string;
  private readonly maxInFlightPerGroup: number;

  /** Keys ready to be handed out. Every key in it is dirty and not processing. */
  private readonly ready = new ReadyKeys();
  /** Keys that need processing: those ready plus those re-added while being processed. */
  private readonly dirty = new Set<string>();
  /** Keys handed to a worker and not yet done. */
  private readonly processing = new Set<string>();
  /** Keys in `processing`, counted per group (groups with none are absent). */
  private readonly inFlightByGroup = new Map<string, number>();
  /** Workers blocked in get(), served in the order they asked. */
  private readonly getters: ((result: GetResult) => void)[] = [];

  private shuttingDownFlag = false;
  private drain = false;
  private readonly drainWaiters: (() => void)[] = [];

  private readonly waitingHeap: WaitingEntry[] = [];
  private readonly waitingByKey = new Map<string, WaitingEntry>();
  private nextSeq = 0;
  private timer: TimerHandle | undefined;
  /** readyAt of the heap head the timer was armed for; re-arming is skipped while it is unchanged. */
  private timerArmedFor: number | undefined;

  // Timestamps (monotonic ms) for the optional duration metrics.
  private readonly addedAt = new Map<string, number>();
  private readonly startedAt = new Map<string, number>();

  constructor(options: WorkQueueOptions) {
    this.clock = options.clock;
    this.rateLimiter = options.rateLimiter ?? defaultControllerRateLimiter(options.clock);
    this.name = options.name ?? '';
    this.metrics = options.metrics;
    // Without fairness every key is in one group, which makes ReadyKeys one FIFO.
    this.groupOf = options.fairness ? (options.fairness.groupOf ?? namespaceOf) : () => '';
    const cap = options.fairness?.maxInFlightPerGroup;
    if (cap !== undefined && !(cap >= 1)) throw new Error('maxInFlightPerGroup must be at least 1');
    this.maxInFlightPerGroup = cap ?? Infinity;
  }

  /** Marks key as needing processing. Ignored once the queue is shutting down. */
  add(key: string): void {
    if (this.shuttingDownFlag || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.metrics) {
      this.metrics.add(this.name);
      this.metrics.depth(this.name, this.dirty.size);
      if (!this.addedAt.has(key)) this.addedAt.set(key, this.clock.monotonic());
    }
    // A key being processed is re-queued by done(), so that no two workers ever hold it.
    if (this.processing.has(key)) return;
    this.enqueue(key);
  }

  /**
   * Waits until a key is available and hands it to the caller, who must call done(key) when finished.
   * After shutdown, keys still queued are handed out (unless shutdown dropped them); once none are
   * left it resolves {shutdown: true}. A key whose group is at its in-flight cap is not available.
   */
  get(): Promise<GetResult> {
    const key = this.takeNext();
    if (key !== undefined) return Promise.resolve({ key, shutdown: false });
    if (this.shuttingDownFlag && this.ready.size === 0) return Promise.resolve({ shutdown: true });
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** Marks key as processed; if it was added again meanwhile, it goes back to the end of the queue. */
  done(key: string): void {
    if (this.metrics) {
      this.metrics.done(this.name);
      const started = this.startedAt.get(key);
      if (started !== undefined) {
        this.startedAt.delete(key);
        this.metrics.workDurationMs?.(this.name, this.clock.monotonic() - started);
      }
    }
    if (this.processing.delete(key)) {
      const group = this.groupOf(key);
      const inFlight = (this.inFlightByGroup.get(group) ?? 1) - 1;
      if (inFlight > 0) this.inFlightByGroup.set(group, inFlight);
      else this.inFlightByGroup.delete(group);
    }
    if (this.dirty.has(key)) {
      this.enqueue(key);
    } else {
      // The group may have been at its cap with keys waiting: one of them may go now.
      this.dispatch();
      if (this.processing.size === 0) this.resolveDrainWaiters();
    }
  }

  /** Keys ready to be handed out (not counting delayed or in-flight keys). */
  len(): number {
    return this.ready.size;
  }

  /** Keys handed to workers and not yet done. */
  inFlight(): number {
    return this.processing.size;
  }

  /** Stops accepting keys and makes waiting workers return; in-flight work is not waited for. */
  shutDown(options: ShutDownOptions = {}): void {
    // Like client-go, this also ends a pending shutDownWithDrain(), forcing a prompt shutdown.
    this.drain = false;
    this.shutdown(options);
    this.resolveDrainWaiters();
  }

  /**
   * Stops accepting keys and resolves once no key is being processed. Workers must keep calling
   * done() for the keys they hold, or this never resolves; shutDown() may be called to stop waiting.
   */
  shutDownWithDrain(options: ShutDownOptions = {}): Promise<void> {
    this.drain = true;
    this.shutdown(options);
    if (this.processing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  shuttingDown(): boolean {
    return this.shuttingDownFlag;
  }

  /**
   * Adds key once delayMs has passed (at once when delayMs <= 0). While the key waits, another
   * addAfter moves it earlier if it asks for an earlier time and is ignored otherwise.
   */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDownFlag) return;
    this.metrics?.retry(this.name);
    // Written so that NaN, like zero or a negative delay, means "now".
    if (!(delayMs > 0)) {
      this.add(key);
      return;
    }
    const readyAt = this.clock.monotonic() + delayMs;
    const existing = this.waitingByKey.get(key);
    if (existing) {
      if (readyAt < existing.readyAt) {
        existing.readyAt = readyAt;
        this.siftUp(existing.index);
        this.armTimer();
      }
      return;
    }
    const entry: WaitingEntry = { key, readyAt, seq: this.nextSeq++, index: this.waitingHeap.length };
    this.waitingHeap.push(entry);
    this.waitingByKey.set(key, entry);
    this.siftUp(entry.index);
    this.armTimer();
  }

  /** Adds key after the delay the rate limiter assigns to it. */
  addRateLimited(key: string): void {
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /**
   * Stops the rate limiter from tracking key, whether it succeeded or failed for good. It does not
   * replace done(), which must still be called.
   */
  forget(key: string): void {
    this.rateLimiter.forget(key);
  }

  numRequeues(key: string): number {
    return this.rateLimiter.numRequeues(key);
  }

  private enqueue(key: string): void {
    this.ready.push(this.groupOf(key), key);
    this.dispatch();
  }

  /**
   * Hands available keys to waiting getters, now: handing a key over (rather than waking a getter to
   * look for one) keeps a key that is added once from being claimed by two getters. After shutdown,
   * getters left waiting when nothing is queued any more are told to stop.
   */
  private dispatch(): void {
    while (this.getters.length > 0) {
      const key = this.takeNext();
      if (key === undefined) break;
      this.getters.shift()?.({ key, shutdown: false });
    }
    if (this.shuttingDownFlag && this.ready.size === 0) {
      for (const getter of this.getters.splice(0)) getter({ shutdown: true });
    }
  }

  /** The next key whose group is below its in-flight cap, marked as processing; undefined when none. */
  private takeNext(): string | undefined {
    const key = this.ready.take((group) => (this.inFlightByGroup.get(group) ?? 0) < this.maxInFlightPerGroup);
    if (key === undefined) return undefined;
    this.processing.add(key);
    const group = this.groupOf(key);
    this.inFlightByGroup.set(group, (this.inFlightByGroup.get(group) ?? 0) + 1);
    this.dirty.delete(key);
    if (this.metrics) {
      this.metrics.get(this.name);
      this.metrics.depth(this.name, this.dirty.size);
      const now = this.clock.monotonic();
      const added = this.addedAt.get(key);
      if (added !== undefined) {
        this.addedAt.delete(key);
        this.metrics.queueDurationMs?.(this.name, now - added);
      }
      this.startedAt.set(key, now);
    }
    return key;
  }

  private shutdown(options: ShutDownOptions): void {
    this.shuttingDownFlag = true;
    if (options.dropQueued) {
      // With the dirty marks gone, done() re-queues nothing either; add() is ignored from now on.
      this.ready.clear();
      this.dirty.clear();
      this.addedAt.clear();
      this.metrics?.depth(this.name, 0);
    }
    // Getters wait while nothing they may take is queued. With nothing queued they are told to stop
    // now; keys held back by a group's cap are still handed out as their groups' keys are done.
    this.dispatch();
    // Delayed keys would be ignored by add() anyway; dropping them releases the timer at once.
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerArmedFor = undefined;
    this.waitingHeap.length = 0;
    this.waitingByKey.clear();
  }

  private resolveDrainWaiters(): void {
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }

  /** Keeps exactly one timer, armed for the heap head; a clamped timer that fires early re-arms. */
  private armTimer(): void {
    const head = this.waitingHeap[0];
    if (!head) {
      if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
      this.timer = undefined;
      this.timerArmedFor = undefined;
      return;
    }
    if (this.timer !== undefined && this.timerArmedFor === head.readyAt) return;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    const delay = Math.min(Math.max(0, head.readyAt - this.clock.monotonic()), MAX_TIMER_DELAY_MS);
    this.timerArmedFor = head.readyAt;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.timerArmedFor = undefined;
      this.releaseReadyEntries();
    }, delay);
  }

  private releaseReadyEntries(): void {
    const now = this.clock.monotonic();
    for (let head = this.waitingHeap[0]; head && head.readyAt <= now; head = this.waitingHeap[0]) {
      this.popHead();
      this.waitingByKey.delete(head.key);
      this.add(head.key);
    }
    this.armTimer();
  }

  private popHead(): void {
    const last = this.waitingHeap.pop();
    if (last && this.waitingHeap.length > 0) {
      this.waitingHeap[0] = last;
      last.index = 0;
      this.siftDown(0);
    }
  }

  private static before(a: WaitingEntry, b: WaitingEntry): boolean {
    return a.readyAt < b.readyAt || (a.readyAt === b.readyAt && a.seq < b.seq);
  }

  private swap(i: number, j: number): void {
    const heap = this.waitingHeap;
    const a = heap[i] as WaitingEntry;
    const b = heap[j] as WaitingEntry;
    heap[i] = b;
    heap[j] = a;
    b.index = i;
    a.index = j;
  }

  private siftUp(index: number): void {
    const heap = this.waitingHeap;
    let i = index;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!WorkQueue.before(heap[i] as WaitingEntry, heap[parent] as WaitingEntry)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private siftDown(index: number): void {
    const heap = this.waitingHeap;
    let i = index;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (
        left < heap.length &&
        WorkQueue.before(heap[left] as WaitingEntry, heap[smallest] as WaitingEntry)
      ) {
        smallest = left;
      }
      if (
        right < heap.length &&
        WorkQueue.before(heap[right] as WaitingEntry, heap[smallest] as WaitingEntry)
      ) {
        smallest = right;
      }
      if (smallest === i) return;
      this.swap(i, smallest);
      i = smallest;
    }
  }
}

/**
 * Per-key exponential backoff: baseDelayMs * 2^failures, capped at maxDelayMs, where failures counts
 * the when() calls since the key was last forgotten.
 */
export class ItemExponentialFailureRateLimiter implements RateLimiter {
  private readonly failures = new Map<string, number>();
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(baseDelayMs: number, maxDelayMs: number) {
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
  }

  when(key: string): number {
    const exponent = this.failures.get(key) ?? 0;
    this.failures.set(key, exponent + 1);
    // 2^exponent grows to Infinity rather than wrapping, so the cap alone bounds the result.
    return Math.min(this.baseDelayMs * 2 ** exponent, this.maxDelayMs);
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }
}

/**
 * An overall token bucket shared by all keys (golang.org/x/time/rate semantics): burst tokens at
 * first, refilled at qps per second. Each when() reserves a token and returns how long to wait until
 * that token exists, so callers beyond the burst are spaced 1/qps apart. It tracks no keys.
 */
export class BucketRateLimiter implements RateLimiter {
  private readonly qps: number;
  private readonly burst: number;
  private readonly clock: Clock;
  /** Tokens available at lastMs; negative when reservations are queued for future tokens. */
  private tokens: number;
  private lastMs: number;

  constructor(qps: number, burst: number, clock: Clock) {
    if (!(qps > 0) || !(burst > 0)) throw new Error('BucketRateLimiter needs qps > 0 and burst > 0');
    this.qps = qps;
    this.burst = burst;
    this.clock = clock;
    this.tokens = burst;
    this.lastMs = clock.monotonic();
  }

  when(_key: string): number {
    const now = this.clock.monotonic();
    const elapsedMs = Math.max(0, now - this.lastMs);
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.qps) / 1000);
    this.lastMs = Math.max(now, this.lastMs);
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.qps;
  }

  forget(_key: string): void {
    // The bucket is shared by all keys, so there is nothing per key to forget.
  }

  numRequeues(_key: string): number {
    return 0;
  }
}

/** Asks every limiter and waits for the longest delay, so each limiter's bound holds. */
export class MaxOfRateLimiter implements RateLimiter {
  private readonly limiters: readonly RateLimiter[];

  constructor(...limiters: RateLimiter[]) {
    this.limiters = limiters;
  }

  when(key: string): number {
    // Every limiter is asked (none short-circuited), so each one counts the requeue.
    return this.limiters.reduce((longest, limiter) => Math.max(longest, limiter.when(key)), 0);
  }

  forget(key: string): void {
    for (const limiter of this.limiters) limiter.forget(key);
  }

  numRequeues(key: string): number {
    return this.limiters.reduce((most, limiter) => Math.max(most, limiter.numRequeues(key)), 0);
  }
}

/**
 * client-go's DefaultControllerRateLimiter: per-key exponential backoff from 5 ms to 1000 s, and an
 * overall 10 qps / burst 100 bucket that only matters when many keys fail at once.
 */
export function defaultControllerRateLimiter(clock: Clock): RateLimiter {
  return new MaxOfRateLimiter(
    new ItemExponentialFailureRateLimiter(5, 1_000_000),
    new BucketRateLimiter(10, 100, clock),
  );
}
