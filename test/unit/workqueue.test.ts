import { describe, expect, it } from 'vitest';
import { MAX_TIMER_DELAY_MS, type TimerHandle } from '../../src/kube/clock.ts';
import {
  BucketRateLimiter,
  ItemExponentialFailureRateLimiter,
  MaxOfRateLimiter,
  WorkQueue,
  defaultControllerRateLimiter,
  type GetResult,
  type WorkQueueMetrics,
} from '../../src/kube/workqueue.ts';
import { FakeClock, flushMicrotasks } from '../harness/fake-clock.ts';

/** Records the delays timers are asked for, since Node would fire an over-long one at once. */
class DelayRecordingClock extends FakeClock {
  readonly requestedDelays: number[] = [];

  override setTimeout(callback: () => void, delayMs: number): TimerHandle {
    this.requestedDelays.push(delayMs);
    return super.setTimeout(callback, delayMs);
  }
}

function newQueue(clock = new FakeClock()): { clock: FakeClock; queue: WorkQueue } {
  return { clock, queue: new WorkQueue({ clock, name: 'test' }) };
}

async function getKey(queue: WorkQueue): Promise<string> {
  const result = await queue.get();
  if (result.shutdown) throw new Error('queue unexpectedly shut down');
  return result.key;
}

/** Starts a get() and reports whether it has resolved, without awaiting it. */
function pendingGet(queue: WorkQueue): { settled: () => GetResult | undefined; promise: Promise<GetResult> } {
  let value: GetResult | undefined;
  const promise = queue.get().then((result) => (value = result));
  return { settled: () => value, promise };
}

/** A small deterministic PRNG (mulberry32) so the large test is reproducible. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('WorkQueue basics', () => {
  it('queues a key that is added repeatedly before being processed only once', async () => {
    const { queue } = newQueue();
    queue.add('ns/a');
    queue.add('ns/b');
    queue.add('ns/a');
    queue.add('ns/a');
    expect(queue.len()).toBe(2);
    expect(await getKey(queue)).toBe('ns/a');
    expect(await getKey(queue)).toBe('ns/b');
    expect(queue.len()).toBe(0);
  });

  it('hands keys out in the order they were added', async () => {
    const { queue } = newQueue();
    const keys = ['ns/c', 'ns/a', 'ns/b', 'other/a'];
    for (const key of keys) queue.add(key);
    const got: string[] = [];
    for (let i = 0; i < keys.length; i++) got.push(await getKey(queue));
    expect(got).toEqual(keys);
  });

  it('never hands a key being processed to a second worker; it is re-queued on done()', async () => {
    const { queue } = newQueue();
    queue.add('ns/a');
    expect(await getKey(queue)).toBe('ns/a');

    // Re-added while processing: marked dirty, not queued.
    queue.add('ns/a');
    queue.add('ns/a');
    expect(queue.len()).toBe(0);
    const secondWorker = pendingGet(queue);
    await flushMicrotasks();
    expect(secondWorker.settled()).toBeUndefined();

    queue.done('ns/a');
    await flushMicrotasks();
    expect(secondWorker.settled()).toEqual({ key: 'ns/a', shutdown: false });
    queue.done('ns/a');
    expect(queue.len()).toBe(0);
  });

  it('does not re-queue a processed key that was not added again', async () => {
    const { queue } = newQueue();
    queue.add('ns/a');
    await getKey(queue);
    queue.done('ns/a');
    expect(queue.len()).toBe(0);
  });

  it('wakes a waiting worker when a key is added, serving workers in the order they waited', async () => {
    const { queue } = newQueue();
    const first = pendingGet(queue);
    const second = pendingGet(queue);
    queue.add('ns/a');
    await flushMicrotasks();
    expect(first.settled()).toEqual({ key: 'ns/a', shutdown: false });
    expect(second.settled()).toBeUndefined();
    queue.add('ns/a'); // still processing by the first worker: must not reach the second
    await flushMicrotasks();
    expect(second.settled()).toBeUndefined();
    queue.add('ns/b');
    await flushMicrotasks();
    expect(second.settled()).toEqual({ key: 'ns/b', shutdown: false });
  });
});

describe('WorkQueue shutdown', () => {
  it('wakes every waiting worker with shutdown', async () => {
    const { queue } = newQueue();
    const workers = [pendingGet(queue), pendingGet(queue), pendingGet(queue)];
    queue.shutDown();
    expect(queue.shuttingDown()).toBe(true);
    const results = await Promise.all(workers.map((w) => w.promise));
    expect(results).toEqual([{ shutdown: true }, { shutdown: true }, { shutdown: true }]);
  });

  it('still hands out keys queued before shutdown, then reports shutdown, and ignores new adds', async () => {
    const { clock, queue } = newQueue();
    queue.add('ns/a');
    queue.addAfter('ns/later', 1000);
    queue.shutDown();
    queue.add('ns/b');
    queue.addAfter('ns/c', 10);
    expect(clock.pendingTimers()).toBe(0);
    expect(await queue.get()).toEqual({ key: 'ns/a', shutdown: false });
    expect(await queue.get()).toEqual({ shutdown: true });
    await clock.advance(2000);
    expect(queue.len()).toBe(0);
  });

  it('shutDownWithDrain resolves only once in-flight keys are done', async () => {
    const { queue } = newQueue();
    queue.add('ns/a');
    queue.add('ns/b');
    await getKey(queue);
    await getKey(queue);
    let drained = false;
    const drain = queue.shutDownWithDrain().then(() => (drained = true));
    const waitingWorker = pendingGet(queue);
    await flushMicrotasks();
    expect(drained).toBe(false);
    expect(waitingWorker.settled()).toEqual({ shutdown: true });

    queue.done('ns/a');
    await flushMicrotasks();
    expect(drained).toBe(false);
    queue.done('ns/b');
    await drain;
    expect(drained).toBe(true);
  });

  it('shutDownWithDrain resolves at once when nothing is in flight', async () => {
    const { queue } = newQueue();
    await expect(queue.shutDownWithDrain()).resolves.toBeUndefined();
  });

  it.each([
    { method: 'shutDown', drain: false },
    { method: 'shutDownWithDrain', drain: true },
  ])(
    '$method with dropQueued hands out no queued key and does not re-queue keys re-added in flight',
    async ({ drain }) => {
      const { clock, queue } = newQueue();
      queue.add('ns/in-flight');
      queue.add('ns/queued');
      queue.addAfter('ns/delayed', 100);
      expect(await getKey(queue)).toBe('ns/in-flight');
      // Re-added while in flight: without dropQueued done() would queue it again.
      queue.add('ns/in-flight');
      expect(queue.inFlight()).toBe(1);

      let drained = false;
      if (drain) {
        void queue.shutDownWithDrain({ dropQueued: true }).then(() => (drained = true));
      } else {
        queue.shutDown({ dropQueued: true });
      }
      expect(queue.len()).toBe(0);
      expect(await queue.get()).toEqual({ shutdown: true });
      queue.add('ns/new');
      queue.done('ns/in-flight');
      await clock.advance(200);
      expect(queue.len()).toBe(0);
      expect(queue.inFlight()).toBe(0);
      expect(await queue.get()).toEqual({ shutdown: true });
      expect(drained).toBe(drain);
    },
  );

  it('reports a depth of 0 to the metrics when queued keys are dropped', () => {
    const depths: number[] = [];
    const metrics: WorkQueueMetrics = {
      add: () => undefined,
      get: () => undefined,
      done: () => undefined,
      depth: (_name, depth) => depths.push(depth),
      retry: () => undefined,
    };
    const queue = new WorkQueue({ clock: new FakeClock(), name: 'q', metrics });
    queue.add('ns/a');
    queue.add('ns/b');
    queue.shutDown({ dropQueued: true });
    expect(depths).toEqual([1, 2, 0]);
  });

  it('shutDown ends a pending shutDownWithDrain without waiting for in-flight keys', async () => {
    const { queue } = newQueue();
    queue.add('ns/a');
    await getKey(queue);
    const drain = queue.shutDownWithDrain();
    queue.shutDown();
    await expect(drain).resolves.toBeUndefined();
  });
});

describe('WorkQueue.addAfter', () => {
  it.each([
    { name: 'an earlier request moves a waiting key earlier', delays: [1000, 400], readyAt: 400 },
    { name: 'a later request for a waiting key is ignored', delays: [400, 1000], readyAt: 400 },
    { name: 'an equal request changes nothing', delays: [400, 400], readyAt: 400 },
    { name: 'the earliest of several requests wins', delays: [900, 300, 700, 500], readyAt: 300 },
  ])('$name', async ({ delays, readyAt }) => {
    const { clock, queue } = newQueue();
    for (const delay of delays) queue.addAfter('ns/a', delay);
    await clock.advance(readyAt - 1);
    expect(queue.len()).toBe(0);
    await clock.advance(1);
    expect(queue.len()).toBe(1);
    // The key was waiting once, so it is not added a second time at any of the other times.
    expect(await getKey(queue)).toBe('ns/a');
    queue.done('ns/a');
    await clock.advance(Math.max(...delays) * 2);
    expect(queue.len()).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
  });

  it.each([0, -5, Number.NaN])('adds at once for a delay of %s', (delay) => {
    const { clock, queue } = newQueue();
    queue.addAfter('ns/a', delay);
    expect(queue.len()).toBe(1);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('keeps a single timer armed, for the earliest waiting key', async () => {
    const { clock, queue } = newQueue();
    const delays = [5000, 3000, 8000, 1000, 1000, 7000, 2000, 6000, 4000];
    delays.forEach((delay, i) => {
      queue.addAfter(`ns/k${i}`, delay);
      expect(clock.pendingTimers()).toBe(1);
    });
    for (let t = 500; t <= 9000; t += 500) {
      await clock.advance(500);
      expect(clock.pendingTimers()).toBeLessThanOrEqual(1);
      expect(queue.len()).toBe(delays.filter((delay) => delay <= t).length);
    }
    expect(clock.pendingTimers()).toBe(0);
  });

  it('queues keys due at the same time in the order they were requested', async () => {
    const { clock, queue } = newQueue();
    for (const key of ['ns/c', 'ns/a', 'ns/b']) queue.addAfter(key, 100);
    await clock.advance(100);
    expect([await getKey(queue), await getKey(queue), await getKey(queue)]).toEqual(['ns/c', 'ns/a', 'ns/b']);
  });

  it('clamps delays beyond the timer maximum and re-arms when the clamped timer fires', async () => {
    const clock = new DelayRecordingClock();
    const { queue } = newQueue(clock);
    const delay = MAX_TIMER_DELAY_MS * 2 + 10;
    queue.addAfter('ns/far', delay);
    await clock.advance(MAX_TIMER_DELAY_MS);
    expect(queue.len()).toBe(0);
    expect(clock.pendingTimers()).toBe(1);
    await clock.advance(MAX_TIMER_DELAY_MS);
    expect(queue.len()).toBe(0);
    await clock.advance(9);
    expect(queue.len()).toBe(0);
    await clock.advance(1);
    expect(queue.len()).toBe(1);
    expect(clock.pendingTimers()).toBe(0);
    expect(clock.requestedDelays).toEqual([MAX_TIMER_DELAY_MS, MAX_TIMER_DELAY_MS, 10]);
  });

  it('is not released early by a wall-clock step', async () => {
    const { clock, queue } = newQueue();
    queue.addAfter('ns/a', 1000);
    clock.stepWall(3_600_000);
    await clock.advance(999);
    expect(queue.len()).toBe(0);
    await clock.advance(1);
    expect(queue.len()).toBe(1);
  });

  it('drains 10,000 keys with random delays in order of their due time', async () => {
    const { clock, queue } = newQueue();
    const random = seededRandom(42);
    const dueAt = new Map<string, number>();
    const started = performance.now();
    for (let i = 0; i < 10_000; i++) {
      const key = `ns/key-${i}`;
      const delay = 1 + Math.floor(random() * 600_000);
      queue.addAfter(key, delay);
      dueAt.set(key, delay);
      // Ask again for some keys, later and earlier, to exercise the move-earlier path at scale.
      if (i % 7 === 0) queue.addAfter(key, delay + 1000);
      if (i % 11 === 0) {
        const earlier = Math.max(1, delay - 500);
        queue.addAfter(key, earlier);
        dueAt.set(key, earlier);
      }
    }
    const insertMs = performance.now() - started;
    expect(clock.pendingTimers()).toBe(1);

    const drained: string[] = [];
    for (let t = 0; t <= 600_000; t += 60_000) {
      await clock.advance(60_000);
      expect(clock.pendingTimers()).toBeLessThanOrEqual(1);
      while (queue.len() > 0) {
        const key = await getKey(queue);
        expect(dueAt.get(key)).toBeLessThanOrEqual(clock.monotonic());
        drained.push(key);
        queue.done(key);
      }
    }
    expect(drained).toHaveLength(10_000);
    const dueTimes = drained.map((key) => dueAt.get(key) ?? Number.NaN);
    for (let i = 1; i < dueTimes.length; i++) {
      expect(dueTimes[i]).toBeGreaterThanOrEqual(dueTimes[i - 1] ?? Infinity);
    }
    // O(log n) per insert: 10,000 inserts take milliseconds, not the seconds a sorted array would.
    expect(insertMs).toBeLessThan(1000);
  });
});

describe('WorkQueue fairness across namespaces', () => {
  function fairQueue(maxInFlightPerGroup?: number): WorkQueue {
    return new WorkQueue({
      clock: new FakeClock(),
      name: 'fair',
      fairness: maxInFlightPerGroup === undefined ? {} : { maxInFlightPerGroup },
    });
  }

  it('takes namespaces in turn: one key of a quiet namespace waits behind one key of a busy one, not all', async () => {
    const queue = fairQueue();
    for (let i = 1; i <= 5; i++) queue.add(`busy/c${i}`);
    queue.add('quiet/victim');
    queue.add('busy/c6');
    queue.add('other/x');
    const order: string[] = [];
    for (let i = 0; i < 8; i++) order.push(await getKey(queue));
    expect(order).toEqual([
      'busy/c1',
      'quiet/victim',
      'other/x',
      'busy/c2',
      'busy/c3',
      'busy/c4',
      'busy/c5',
      'busy/c6',
    ]);
  });

  it('holds back keys of a namespace at its in-flight cap, and lets another namespace use the free workers', async () => {
    const queue = fairQueue(2);
    for (let i = 1; i <= 4; i++) queue.add(`attacker/c${i}`);
    const workers = [pendingGet(queue), pendingGet(queue), pendingGet(queue), pendingGet(queue)];
    await flushMicrotasks();
    expect(workers.map((w) => w.settled())).toEqual([
      { key: 'attacker/c1', shutdown: false },
      { key: 'attacker/c2', shutdown: false },
      undefined,
      undefined,
    ]);
    expect(queue.len()).toBe(2);
    queue.add('victim/v');
    await flushMicrotasks();
    expect(workers[2]?.settled()).toEqual({ key: 'victim/v', shutdown: false });
    expect(workers[3]?.settled()).toBeUndefined();

    // A worker is free, and the attacker's next key still waits for one of its own to finish.
    queue.done('victim/v');
    await flushMicrotasks();
    expect(workers[3]?.settled()).toBeUndefined();
    queue.done('attacker/c1');
    await flushMicrotasks();
    expect(workers[3]?.settled()).toEqual({ key: 'attacker/c3', shutdown: false });
  });

  it('keeps the dirty/processing rules: a key re-added in flight waits for done(), even with free workers', async () => {
    const queue = fairQueue(3);
    queue.add('ns/a');
    expect(await getKey(queue)).toBe('ns/a');
    queue.add('ns/a');
    const second = pendingGet(queue);
    await flushMicrotasks();
    expect(second.settled()).toBeUndefined();
    queue.done('ns/a');
    await flushMicrotasks();
    expect(second.settled()).toEqual({ key: 'ns/a', shutdown: false });
  });

  it('hands out keys held back by the cap after shutdown as slots free, then reports shutdown', async () => {
    const queue = fairQueue(1);
    queue.add('ns/a');
    queue.add('ns/b');
    expect(await getKey(queue)).toBe('ns/a');
    const waiting = pendingGet(queue);
    queue.shutDown();
    await flushMicrotasks();
    expect(waiting.settled()).toBeUndefined();
    queue.done('ns/a');
    await flushMicrotasks();
    expect(waiting.settled()).toEqual({ key: 'ns/b', shutdown: false });
    const last = pendingGet(queue);
    await flushMicrotasks();
    expect(last.settled()).toEqual({ shutdown: true });
  });

  it('drops held-back keys with dropQueued and tells every waiting worker to stop', async () => {
    const queue = fairQueue(1);
    queue.add('ns/a');
    queue.add('ns/b');
    expect(await getKey(queue)).toBe('ns/a');
    const waiting = pendingGet(queue);
    queue.shutDown({ dropQueued: true });
    await flushMicrotasks();
    expect(waiting.settled()).toEqual({ shutdown: true });
    expect(queue.len()).toBe(0);
  });

  it('rejects a cap below 1', () => {
    expect(() => fairQueue(0)).toThrow(/maxInFlightPerGroup/);
  });

  // Random adds and dones over several namespaces and workers: the rules hold at every step, and no
  // worker waits while a key it may take is queued.
  it.each([1, 2, 3])('holds its rules under random load (cap %i, 4 workers)', async (cap) => {
    const queue = fairQueue(cap);
    const random = seededRandom(cap * 7919);
    const namespaces = ['a', 'b', 'c'];
    const keys = namespaces.flatMap((ns) => [1, 2, 3, 4].map((i) => `${ns}/k${i}`));
    const held = new Map<number, string>();
    const idle = new Map<number, ReturnType<typeof pendingGet>>();
    const processed = new Set<string>();
    // A model of client-go's rule: a key added is dirty until a worker takes it.
    const dirty = new Set<string>();
    const groupOf = (key: string): string => key.split('/')[0] ?? '';
    for (let w = 0; w < 4; w++) idle.set(w, pendingGet(queue));
    for (let step = 0; step < 2000; step++) {
      if (random() < 0.55) {
        const key = keys[Math.floor(random() * keys.length)] ?? 'a/k1';
        queue.add(key);
        dirty.add(key);
      } else {
        const busy = [...held.keys()];
        const w = busy[Math.floor(random() * busy.length)];
        if (w !== undefined) {
          queue.done(held.get(w) ?? '');
          held.delete(w);
          idle.set(w, pendingGet(queue));
        }
      }
      await flushMicrotasks();
      for (const [w, get] of idle) {
        const result = get.settled();
        if (result === undefined) continue;
        if (result.shutdown) throw new Error('unexpected shutdown');
        idle.delete(w);
        held.set(w, result.key);
        dirty.delete(result.key);
        processed.add(result.key);
      }
      const inFlight = [...held.values()];
      const inFlightOf = (ns: string): number => inFlight.filter((k) => groupOf(k) === ns).length;
      expect(new Set(inFlight).size).toBe(inFlight.length);
      for (const ns of namespaces) expect(inFlightOf(ns)).toBeLessThanOrEqual(cap);
      // Work-conserving: a worker waits only while every queued key is in flight already or belongs
      // to a namespace at its cap.
      const queued = [...dirty].filter((k) => !inFlight.includes(k));
      expect(queue.len()).toBe(queued.length);
      if (idle.size > 0) {
        expect(queued.filter((k) => inFlightOf(groupOf(k)) < cap)).toEqual([]);
      }
    }
    expect(processed.size).toBe(keys.length);
  });
});

describe('rate limiters', () => {
  it('backs off exponentially per key and caps the delay', () => {
    const limiter = new ItemExponentialFailureRateLimiter(5, 1000);
    const delays = Array.from({ length: 10 }, () => limiter.when('ns/a'));
    expect(delays).toEqual([5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    expect(limiter.numRequeues('ns/a')).toBe(10);
    // Failures are counted per key.
    expect(limiter.when('ns/b')).toBe(5);
    expect(limiter.numRequeues('ns/b')).toBe(1);
  });

  it('starts over after forget', () => {
    const limiter = new ItemExponentialFailureRateLimiter(5, 1000);
    limiter.when('ns/a');
    limiter.when('ns/a');
    limiter.forget('ns/a');
    expect(limiter.numRequeues('ns/a')).toBe(0);
    expect(limiter.when('ns/a')).toBe(5);
  });

  it('caps without overflowing after very many failures', () => {
    const limiter = new ItemExponentialFailureRateLimiter(5, 1_000_000);
    let last = 0;
    for (let i = 0; i < 2000; i++) last = limiter.when('ns/a');
    expect(last).toBe(1_000_000);
  });

  it('lets a burst through, then spaces requests 1/qps apart, and refills with time', async () => {
    const clock = new FakeClock();
    const limiter = new BucketRateLimiter(10, 3, clock);
    const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
    expect(keys.map((key) => limiter.when(key))).toEqual([0, 0, 0, 100, 200, 300]);
    // The reservations above hold tokens until 300 ms from now; a full second refills what is left.
    await clock.advance(1300);
    expect(['g', 'h', 'i', 'j'].map((key) => limiter.when(key))).toEqual([0, 0, 0, 100]);
    limiter.forget('a');
    expect(limiter.numRequeues('a')).toBe(0);
  });

  it('takes the longest delay of its limiters and forgets in all of them', () => {
    const clock = new FakeClock();
    const exponential = new ItemExponentialFailureRateLimiter(5, 1000);
    const limiter = new MaxOfRateLimiter(exponential, new BucketRateLimiter(10, 2, clock));
    expect(['ns/a', 'ns/a', 'ns/b', 'ns/a'].map((key) => limiter.when(key))).toEqual([5, 10, 100, 200]);
    expect(limiter.numRequeues('ns/a')).toBe(3);
    limiter.forget('ns/a');
    expect(limiter.numRequeues('ns/a')).toBe(0);
  });

  it("matches client-go's default controller rate limiter", () => {
    const limiter = defaultControllerRateLimiter(new FakeClock());
    // One key failing repeatedly: 5 ms doubling (the bucket's 100-token burst is not exhausted).
    expect(Array.from({ length: 5 }, () => limiter.when('ns/hot'))).toEqual([5, 10, 20, 40, 80]);
    // Many keys failing at once: after the burst of 100 tokens, 10 per second.
    const delays = Array.from({ length: 100 }, (_, i) => limiter.when(`ns/k${i}`));
    expect(delays.slice(0, 95).every((d) => d === 5)).toBe(true);
    expect(delays.slice(95)).toEqual([100, 200, 300, 400, 500]);
  });
});

describe('WorkQueue rate limiting', () => {
  it('adds after the rate limiter delay and counts requeues until forgotten', async () => {
    const clock = new FakeClock();
    const queue = new WorkQueue({ clock, rateLimiter: new ItemExponentialFailureRateLimiter(5, 1000) });
    queue.addRateLimited('ns/a');
    expect(queue.numRequeues('ns/a')).toBe(1);
    await clock.advance(4);
    expect(queue.len()).toBe(0);
    await clock.advance(1);
    expect(queue.len()).toBe(1);
    await getKey(queue);

    // A failing worker requeues the key it holds; it comes back 10 ms later, after done().
    queue.addRateLimited('ns/a');
    queue.done('ns/a');
    expect(queue.numRequeues('ns/a')).toBe(2);
    await clock.advance(9);
    expect(queue.len()).toBe(0);
    await clock.advance(1);
    expect(await getKey(queue)).toBe('ns/a');

    queue.forget('ns/a');
    queue.done('ns/a');
    expect(queue.numRequeues('ns/a')).toBe(0);
  });

  it('uses the default controller rate limiter when none is given', async () => {
    const clock = new FakeClock();
    const queue = new WorkQueue({ clock });
    queue.addRateLimited('ns/a');
    await clock.advance(5);
    expect(queue.len()).toBe(1);
  });
});

describe('WorkQueue metrics', () => {
  it('reports adds, gets, done, depth, retries and durations', async () => {
    const clock = new FakeClock();
    const events: string[] = [];
    const metrics: WorkQueueMetrics = {
      add: (name) => events.push(`add ${name}`),
      get: (name) => events.push(`get ${name}`),
      done: (name) => events.push(`done ${name}`),
      depth: (name, depth) => events.push(`depth ${name} ${depth}`),
      retry: (name) => events.push(`retry ${name}`),
      queueDurationMs: (name, ms) => events.push(`queued ${name} ${ms}`),
      workDurationMs: (name, ms) => events.push(`worked ${name} ${ms}`),
    };
    const queue = new WorkQueue({ clock, name: 'q', metrics });
    queue.add('ns/a');
    queue.add('ns/a');
    queue.addAfter('ns/b', 50);
    await clock.advance(100);
    await getKey(queue);
    await clock.advance(30);
    queue.done('ns/a');
    expect(events).toEqual([
      'add q',
      'depth q 1',
      'retry q',
      'add q',
      'depth q 2',
      'get q',
      'depth q 1',
      'queued q 100',
      'done q',
      'worked q 30',
    ]);
  });
});
