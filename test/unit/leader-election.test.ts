import { describe, expect, it } from 'vitest';
import type { TimerHandle } from '../../src/kube/clock.ts';
import {
  DrainTimeoutError,
  JITTER_FACTOR,
  LeaderElector,
  LeaderHealthzAdaptor,
  LeaderLockConflictError,
  LeadershipLostError,
  type LeaderElectionConfig,
  type LeaderElectionLogger,
  type LeaderLock,
  type LeaderRecord,
  type ObservedLeaderRecord,
} from '../../src/kube/leader-election.ts';
import { FakeClock } from '../harness/fake-clock.ts';

const LEASE_DURATION = 15_000;
const RENEW_DEADLINE = 10_000;
const RETRY_PERIOD = 2_000;
const HOUR = 3_600_000;

/** The Lease as the API server would keep it: one record and a resourceVersion bumped on each write. */
class MemoryLeaseStore {
  record: ObservedLeaderRecord | undefined;
  readonly writes: LeaderRecord[] = [];
  private version = 0;

  write(record: LeaderRecord): string {
    this.writes.push({ ...record });
    this.record = { ...record, resourceVersion: this.nextVersion() };
    return this.record.resourceVersion;
  }

  /** A write by someone else that leaves the spec alone (a label edit, say). */
  touch(): void {
    if (this.record) this.record = { ...this.record, resourceVersion: this.nextVersion() };
  }

  private nextVersion(): string {
    this.version++;
    return String(this.version);
  }
}

/** One candidate's client for the store, whose requests can be made to fail or to lose a race. */
class MemoryLock implements LeaderLock {
  /** While true every request fails, as when the API server is unreachable. */
  failing = false;
  /** Number of coming updates that find the record changed under them (409). */
  conflictsToInject = 0;
  /** Every update this client attempted, including failed ones. */
  readonly attemptedUpdates: LeaderRecord[] = [];
  private readonly store: MemoryLeaseStore;

  constructor(store: MemoryLeaseStore) {
    this.store = store;
  }

  describe(): string {
    return 'test/lease';
  }

  async get(): Promise<ObservedLeaderRecord | undefined> {
    await this.roundTrip();
    return this.store.record ? { ...this.store.record } : undefined;
  }

  async create(record: LeaderRecord): Promise<string> {
    await this.roundTrip();
    if (this.store.record) throw new LeaderLockConflictError('lease already exists');
    return this.store.write(record);
  }

  async update(record: LeaderRecord, resourceVersion: string): Promise<string> {
    this.attemptedUpdates.push({ ...record });
    await this.roundTrip();
    if (this.conflictsToInject > 0) {
      this.conflictsToInject--;
      this.store.touch();
    }
    if (this.store.record?.resourceVersion !== resourceVersion) {
      throw new LeaderLockConflictError('the object has been modified');
    }
    return this.store.write(record);
  }

  private async roundTrip(): Promise<void> {
    await Promise.resolve();
    if (this.failing) throw new Error('connection refused');
  }
}

interface Candidate {
  identity: string;
  elector: LeaderElector;
  lock: MemoryLock;
  controller: AbortController;
  run: Promise<void>;
  /** Monotonic times (on the candidate's clock) at which leading started. */
  startedAt: number[];
  /** Monotonic time at which the leading signal aborted, if it has. */
  leadingAbortedAt?: number;
  stoppedCount: number;
  newLeaders: string[];
  /** Lifecycle events in order, for checking what happens before what. */
  events: string[];
  errors: string[];
  finished: () => boolean;
}

function startCandidate(
  identity: string,
  store: MemoryLeaseStore,
  clock: FakeClock,
  overrides: Partial<LeaderElectionConfig> = {},
): Candidate {
  const lock = new MemoryLock(store);
  const controller = new AbortController();
  const errors: string[] = [];
  const log: LeaderElectionLogger = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: (_fields, message) => errors.push(message),
  };
  const candidate: Candidate = {
    identity,
    lock,
    controller,
    startedAt: [],
    stoppedCount: 0,
    newLeaders: [],
    events: [],
    errors,
    finished: () => finished,
    // Assigned right below; the elector needs the candidate's callbacks first.
    elector: undefined as unknown as LeaderElector,
    run: Promise.resolve(),
  };
  candidate.elector = new LeaderElector({
    lock,
    identity,
    clock,
    leaseDurationMs: LEASE_DURATION,
    renewDeadlineMs: RENEW_DEADLINE,
    retryPeriodMs: RETRY_PERIOD,
    // No jitter unless a test asks for it, so that retry times are exact.
    random: () => 0,
    log,
    onStartedLeading: (signal) => {
      candidate.startedAt.push(clock.monotonic());
      candidate.events.push('started');
      signal.addEventListener('abort', () => {
        candidate.leadingAbortedAt = clock.monotonic();
        candidate.events.push('leading aborted');
      });
    },
    onStoppedLeading: () => {
      candidate.stoppedCount++;
      candidate.events.push(`stopped (lease holder "${store.record?.holderIdentity ?? ''}")`);
    },
    onNewLeader: (leader) => candidate.newLeaders.push(leader),
    ...overrides,
  });
  let finished = false;
  candidate.run = candidate.elector.run(controller.signal).finally(() => {
    finished = true;
  });
  return candidate;
}

/** Advances several candidates' clocks together, in small steps, as time passes for all of them. */
async function advanceTogether(clocks: FakeClock[], totalMs: number, stepMs = 100): Promise<void> {
  for (let elapsed = 0; elapsed < totalMs; elapsed += stepMs) {
    const step = Math.min(stepMs, totalMs - elapsed);
    for (const clock of clocks) await clock.advance(step);
  }
}

/** Runs the candidates while checking, every step, that at most one of them leads. */
async function advanceCheckingExclusivity(
  clock: FakeClock,
  candidates: Candidate[],
  totalMs: number,
): Promise<void> {
  for (let elapsed = 0; elapsed < totalMs; elapsed += 100) {
    await clock.advance(100);
    expect(candidates.filter((c) => c.elector.isLeader()).length).toBeLessThanOrEqual(1);
  }
}

describe('LeaderElector configuration', () => {
  const valid = {
    lock: new MemoryLock(new MemoryLeaseStore()),
    identity: 'a',
    clock: new FakeClock(),
    onStartedLeading: () => undefined,
    onStoppedLeading: () => undefined,
  };

  it.each([
    {
      leaseDurationMs: 10_000,
      renewDeadlineMs: 10_000,
      error: 'leaseDuration must be greater than renewDeadline',
    },
    {
      renewDeadlineMs: 2_400,
      retryPeriodMs: 2_000,
      error: 'renewDeadline must be greater than retryPeriod*JitterFactor',
    },
    { retryPeriodMs: 0, error: 'retryPeriod must be greater than zero' },
    {
      leaseDurationMs: -1,
      renewDeadlineMs: -2,
      retryPeriodMs: -3,
      error: 'leaseDuration must be greater than zero',
    },
    { identity: '', error: 'identity must not be empty' },
    { drainTimeoutMs: -1, error: 'drainTimeout must not be negative' },
  ])('rejects $error', ({ error, ...overrides }) => {
    expect(() => new LeaderElector({ ...valid, ...overrides })).toThrow(error);
  });

  it('accepts the client-go defaults', () => {
    expect(() => new LeaderElector(valid)).not.toThrow();
  });
});

describe('LeaderElector', () => {
  it('acquires a free lease by creating it, then keeps renewing it', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);

    expect(a.elector.isLeader()).toBe(true);
    expect(a.elector.getLeader()).toBe('a');
    expect(a.startedAt).toEqual([0]);
    expect(a.newLeaders).toEqual(['a']);
    const acquiredAt = clock.now();
    expect(store.record).toMatchObject({
      holderIdentity: 'a',
      leaseDurationSeconds: 15,
      leaseTransitions: 0,
      acquireTime: acquiredAt,
      renewTime: acquiredAt,
    });

    await clock.advance(10 * RETRY_PERIOD);
    expect(a.elector.isLeader()).toBe(true);
    expect(store.record).toMatchObject({
      holderIdentity: 'a',
      acquireTime: acquiredAt,
      renewTime: clock.now(),
      leaseTransitions: 0,
    });
    expect(a.stoppedCount).toBe(0);
    expect(a.errors).toEqual([]);

    a.controller.abort();
    await a.run;
  });

  it('does not take a lease that another holder keeps renewing', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);
    const b = startCandidate('b', store, clock);

    await advanceCheckingExclusivity(clock, [a, b], 10 * LEASE_DURATION);
    expect(a.elector.isLeader()).toBe(true);
    expect(b.startedAt).toEqual([]);
    expect(b.elector.getLeader()).toBe('a');
    expect(b.newLeaders).toEqual(['a']);
    expect(store.record?.leaseTransitions).toBe(0);

    a.controller.abort();
    b.controller.abort();
    await Promise.all([a.run, b.run]);
  });

  it.each([
    { name: 'a candidate watching when the holder stops', joinsAfterMs: 0 },
    // One that starts later never saw the record change, so it too waits a full lease duration.
    { name: 'a candidate that starts after the holder stopped', joinsAfterMs: 10_000 },
  ])('lets $name take over only after a lease duration of its own observation', async ({ joinsAfterMs }) => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    // A crash: renewals stop and the lease is not released.
    const a = startCandidate('a', store, clock, { releaseOnCancel: false });
    await clock.advance(0);
    a.controller.abort();
    await a.run;
    expect(store.record?.holderIdentity).toBe('a');

    await clock.advance(joinsAfterMs);
    const joinedAt = clock.monotonic();
    const b = startCandidate('b', store, clock);
    await clock.advance(LEASE_DURATION - 1);
    expect(b.elector.isLeader()).toBe(false);
    await clock.advance(RETRY_PERIOD * (1 + JITTER_FACTOR));
    expect(b.elector.isLeader()).toBe(true);

    const startedAt = b.startedAt[0] ?? Number.NaN;
    expect(startedAt).toBeGreaterThanOrEqual(joinedAt + LEASE_DURATION);
    expect(startedAt).toBeLessThanOrEqual(joinedAt + LEASE_DURATION + RETRY_PERIOD * (1 + JITTER_FACTOR));
    expect(store.record).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    expect(b.newLeaders).toEqual(['a', 'b']);

    b.controller.abort();
    await b.run;
  });

  it('spaces acquire attempts by retryPeriod plus up to 1.2 × retryPeriod of jitter', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);
    let attempts = 0;
    const lock = new MemoryLock(store);
    const countingLock: LeaderLock = {
      describe: () => lock.describe(),
      get: () => {
        attempts++;
        return lock.get();
      },
      create: (record) => lock.create(record),
      update: (record, resourceVersion) => lock.update(record, resourceVersion),
    };
    const elector = new LeaderElector({
      lock: countingLock,
      identity: 'b',
      clock,
      leaseDurationMs: LEASE_DURATION,
      renewDeadlineMs: RENEW_DEADLINE,
      retryPeriodMs: RETRY_PERIOD,
      random: () => 0.999,
      onStartedLeading: () => undefined,
      onStoppedLeading: () => undefined,
    });
    const controller = new AbortController();
    const run = elector.run(controller.signal);
    await clock.advance(0);
    expect(attempts).toBe(1);
    await clock.advance(RETRY_PERIOD * (1 + 0.999 * JITTER_FACTOR) - 1);
    expect(attempts).toBe(1);
    await clock.advance(1);
    expect(attempts).toBe(2);

    controller.abort();
    a.controller.abort();
    await Promise.all([run, a.run]);
  });

  describe('with wall clocks skewed between replicas', () => {
    const start = Date.parse('2026-01-01T00:00:00Z');
    it.each([
      {
        name: "the holder's wall clock is hours behind",
        holderOffset: -5 * HOUR,
        holderStep: 0,
        candidateStep: 0,
      },
      {
        name: "the holder's wall clock is hours ahead",
        holderOffset: 5 * HOUR,
        holderStep: 0,
        candidateStep: 0,
      },
      {
        name: "the holder's wall clock is corrected by hours mid-term",
        holderOffset: -5 * HOUR,
        holderStep: 5 * HOUR,
        candidateStep: 0,
      },
      {
        name: "the candidate's wall clock is stepped hours ahead",
        holderOffset: 0,
        holderStep: 0,
        candidateStep: 7 * HOUR,
      },
      {
        name: "the candidate's wall clock is stepped hours back",
        holderOffset: 0,
        holderStep: 0,
        candidateStep: -7 * HOUR,
      },
    ])('neither steals early nor is stolen from early when $name', async (skew) => {
      const { holderOffset, holderStep, candidateStep } = skew;
      const store = new MemoryLeaseStore();
      const holderClock = new FakeClock(start + holderOffset);
      const candidateClock = new FakeClock(start);
      const clocks = [holderClock, candidateClock];
      const a = startCandidate('a', store, holderClock, { releaseOnCancel: false });
      await advanceTogether(clocks, 100);
      const b = startCandidate('b', store, candidateClock);

      await advanceTogether(clocks, 2 * LEASE_DURATION);
      candidateClock.stepWall(candidateStep);
      holderClock.stepWall(holderStep);
      await advanceTogether(clocks, 2 * LEASE_DURATION);
      expect(a.elector.isLeader()).toBe(true);
      expect(a.stoppedCount).toBe(0);
      expect(b.startedAt).toEqual([]);
      expect(b.elector.getLeader()).toBe('a');

      // The holder crashes; the candidate takes over one lease duration after it last saw a renewal,
      // not hours early or late.
      a.controller.abort();
      await a.run;
      const crashedAt = candidateClock.monotonic();
      await advanceTogether(clocks, LEASE_DURATION + 2 * RETRY_PERIOD * (1 + JITTER_FACTOR));
      expect(b.elector.isLeader()).toBe(true);
      const takeover = (b.startedAt[0] ?? Number.NaN) - crashedAt;
      expect(takeover).toBeGreaterThanOrEqual(LEASE_DURATION - RETRY_PERIOD);
      expect(takeover).toBeLessThanOrEqual(LEASE_DURATION + 2 * RETRY_PERIOD * (1 + JITTER_FACTOR));

      b.controller.abort();
      await b.run;
    });
  });

  it('gives leadership up when it cannot renew within renewDeadline, without releasing the lease', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);
    const b = startCandidate('b', store, clock);
    await clock.advance(1_000);
    const lastRenewal = store.record?.renewTime ?? Number.NaN;
    const failuresFrom = clock.monotonic();
    a.lock.failing = true;

    await clock.advance(RENEW_DEADLINE - 1_000 - 1);
    expect(a.leadingAbortedAt).toBeUndefined();
    expect(a.elector.isLeader()).toBe(true);

    await clock.advance(RETRY_PERIOD + 1);
    expect(a.leadingAbortedAt).toBeDefined();
    const lostAfter = (a.leadingAbortedAt ?? Number.NaN) - failuresFrom;
    // client-go's bound: the cycle that fails starts at most one retryPeriod after the last success.
    expect(lostAfter).toBeGreaterThanOrEqual(RENEW_DEADLINE - 1_000);
    expect(lostAfter).toBeLessThanOrEqual(RETRY_PERIOD + RENEW_DEADLINE);
    expect(a.finished()).toBe(true);
    await a.run;
    expect(a.elector.isLeader()).toBe(false);
    expect(a.stoppedCount).toBe(1);
    expect(a.events).toEqual(['started', 'leading aborted', 'stopped (lease holder "a")']);
    // Not released (not even tried): the successor waits out the lease, which gives the aborted
    // work time to stop.
    expect(store.record).toMatchObject({ holderIdentity: 'a', renewTime: lastRenewal });
    expect(a.lock.attemptedUpdates.filter((record) => record.holderIdentity !== 'a')).toEqual([]);

    // The lease expires for b one lease duration after b last saw it change, and never sooner than
    // a gave up, so the two never lead at once.
    await clock.advance(LEASE_DURATION + RETRY_PERIOD * (1 + JITTER_FACTOR));
    expect(b.elector.isLeader()).toBe(true);
    expect(b.startedAt[0]).toBeGreaterThan(a.leadingAbortedAt ?? Infinity);

    b.controller.abort();
    await b.run;
  });

  it('keeps leading through renewal failures shorter than renewDeadline', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);
    a.lock.failing = true;
    await clock.advance(RENEW_DEADLINE - RETRY_PERIOD);
    a.lock.failing = false;
    await clock.advance(5 * RETRY_PERIOD);
    expect(a.elector.isLeader()).toBe(true);
    expect(a.leadingAbortedAt).toBeUndefined();
    expect(store.record?.renewTime).toBeGreaterThanOrEqual(clock.now() - RETRY_PERIOD);

    a.controller.abort();
    await a.run;
  });

  it('treats a 409 on a renewal as a lost round: it re-reads the lease and renews', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);
    a.lock.conflictsToInject = 3;
    await clock.advance(4 * RETRY_PERIOD);
    expect(a.lock.conflictsToInject).toBe(0);
    expect(a.elector.isLeader()).toBe(true);
    expect(a.leadingAbortedAt).toBeUndefined();
    expect(store.record).toMatchObject({ holderIdentity: 'a', renewTime: clock.now() });
    expect(a.errors).toEqual([]);

    a.controller.abort();
    await a.run;
  });

  it('treats a 409 while acquiring as a lost round, not a crash, and tries again', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    store.write({ holderIdentity: '', leaseDurationSeconds: 1, leaseTransitions: 4 });
    const b = startCandidate('b', store, clock);
    b.lock.conflictsToInject = 1;
    await clock.advance(0);
    expect(b.lock.conflictsToInject).toBe(0);
    expect(b.elector.isLeader()).toBe(false);
    expect(b.finished()).toBe(false);

    await clock.advance(RETRY_PERIOD);
    expect(b.elector.isLeader()).toBe(true);
    expect(store.record).toMatchObject({ holderIdentity: 'b', leaseTransitions: 5 });
    expect(b.errors).toEqual([]);

    b.controller.abort();
    await b.run;
  });

  it('lets only one of two candidates that both create the lease win', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const candidates = [startCandidate('a', store, clock), startCandidate('b', store, clock)];
    await advanceCheckingExclusivity(clock, candidates, 3 * LEASE_DURATION);
    expect(candidates.filter((c) => c.elector.isLeader())).toHaveLength(1);
    expect(store.writes.filter((w) => w.holderIdentity !== candidates[0]?.identity)).toHaveLength(0);

    for (const c of candidates) c.controller.abort();
    await Promise.all(candidates.map((c) => c.run));
  });

  it('releases the lease on cancel after the leading work stopped, so a successor takes over quickly', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock, {
      onStartedLeading: (signal) =>
        new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => {
            a.events.push('leading aborted');
            // The work takes a moment to wind down after it is told to stop.
            clock.setTimeout(() => {
              a.events.push(`work stopped (lease holder "${store.record?.holderIdentity ?? ''}")`);
              resolve();
            }, 500);
          });
        }),
    });
    await clock.advance(0);
    const b = startCandidate('b', store, clock);
    await clock.advance(5_000);
    const transitions = store.record?.leaseTransitions;

    a.controller.abort();
    const cancelledAt = clock.monotonic();
    await clock.advance(600);
    await a.run;
    expect(a.events).toEqual([
      'leading aborted',
      'work stopped (lease holder "a")',
      'stopped (lease holder "")',
    ]);
    expect(store.record).toMatchObject({
      holderIdentity: '',
      leaseDurationSeconds: 1,
      leaseTransitions: transitions,
      renewTime: clock.now() - 100,
    });
    expect(a.elector.isLeader()).toBe(false);
    expect(a.elector.getLeader()).toBeUndefined();

    await clock.advance(RETRY_PERIOD * (1 + JITTER_FACTOR));
    expect(b.elector.isLeader()).toBe(true);
    expect((b.startedAt[0] ?? Infinity) - cancelledAt).toBeLessThan(LEASE_DURATION / 3);
    expect(store.record).toMatchObject({ holderIdentity: 'b', leaseTransitions: (transitions ?? 0) + 1 });

    b.controller.abort();
    await b.run;
  });

  it('still releases when the resourceVersion moved on since its last renewal (409 on release)', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(RETRY_PERIOD);
    a.lock.conflictsToInject = 1;
    a.controller.abort();
    await clock.advance(0);
    await a.run;
    expect(a.lock.conflictsToInject).toBe(0);
    expect(store.record?.holderIdentity).toBe('');
    expect(a.errors).toEqual([]);
  });

  it('does not release on cancel when releaseOnCancel is false', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock, { releaseOnCancel: false });
    await clock.advance(RETRY_PERIOD);
    a.controller.abort();
    await a.run;
    expect(a.events).toEqual(['started', 'leading aborted', 'stopped (lease holder "a")']);
    expect(store.record?.holderIdentity).toBe('a');
  });

  it('counts leaseTransitions on every change of holder, not on renewals', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(3 * RETRY_PERIOD);
    const b = startCandidate('b', store, clock, { releaseOnCancel: false });
    const c = startCandidate('c', store, clock);
    await clock.advance(3 * RETRY_PERIOD);
    a.controller.abort(); // released: b or c takes over at its next attempt
    await advanceCheckingExclusivity(clock, [a, b, c], 2 * RETRY_PERIOD * (1 + JITTER_FACTOR));
    const second = [b, c].find((x) => x.elector.isLeader());
    expect(second).toBeDefined();
    second?.controller.abort(); // b crashes (no release) or c releases: either way the other follows
    await advanceCheckingExclusivity(
      clock,
      [a, b, c],
      LEASE_DURATION + 2 * RETRY_PERIOD * (1 + JITTER_FACTOR),
    );
    const third = [b, c].find((x) => x !== second);
    expect(third?.elector.isLeader()).toBe(true);

    const holders = store.writes.map((w) => `${w.holderIdentity || '(released)'}:${w.leaseTransitions}`);
    const distinct = holders.filter((h, i) => h !== holders[i - 1]);
    expect(distinct[0]).toBe('a:0');
    expect(distinct[1]).toBe('(released):0');
    expect(distinct[2]).toBe(`${second?.identity ?? ''}:1`);
    expect(distinct.at(-1)).toBe(`${third?.identity ?? ''}:2`);

    for (const x of [b, c]) x.controller.abort();
    await Promise.all([a.run, b.run, c.run]);
  });

  it('calls onStoppedLeading once, and never onStartedLeading, when cancelled before acquiring', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    await clock.advance(0);
    const b = startCandidate('b', store, clock);
    await clock.advance(RETRY_PERIOD);
    b.controller.abort();
    await b.run;
    expect(b.events).toEqual(['stopped (lease holder "a")']);
    expect(store.record?.holderIdentity).toBe('a');
    a.controller.abort();
    await a.run;
  });

  it('does not start leading when cancelled while its acquiring request was in flight', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    a.controller.abort();
    await clock.advance(0);
    await a.run;
    expect(a.startedAt).toEqual([]);
    expect(a.stoppedCount).toBe(1);
    expect(store.record?.holderIdentity ?? '').toBe('');
  });

  it('refuses to run twice at once', async () => {
    const clock = new FakeClock();
    const a = startCandidate('a', new MemoryLeaseStore(), clock);
    await expect(a.elector.run(new AbortController().signal)).rejects.toThrow('already running');
    a.controller.abort();
    await clock.advance(0);
    await a.run;
  });

  it('survives callbacks that throw', async () => {
    const clock = new FakeClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock, {
      onStartedLeading: () => {
        throw new Error('boom');
      },
      onNewLeader: () => {
        throw new Error('boom');
      },
    });
    await clock.advance(5 * RETRY_PERIOD);
    expect(a.elector.isLeader()).toBe(true);
    expect(a.errors).toContain('leader election callback threw');
    a.controller.abort();
    await a.run;
    expect(a.stoppedCount).toBe(1);
  });
});

/**
 * Leading work shaped like the controller's workers: items start until the drain signal aborts, and
 * the work returns once it is draining and no item is in flight. Items may be made to return when
 * the work's signal aborts, after a moment of winding down.
 */
class FakeWork {
  readonly events: string[] = [];
  signal: AbortSignal | undefined;
  drain: AbortSignal | undefined;
  private readonly inFlight = new Set<string>();
  private returned: (() => void) | undefined;
  private readonly clock: FakeClock;
  private readonly store: MemoryLeaseStore;

  constructor(clock: FakeClock, store: MemoryLeaseStore) {
    this.clock = clock;
    this.store = store;
  }

  readonly onStartedLeading = (signal: AbortSignal, drain: AbortSignal): Promise<void> => {
    this.signal = signal;
    this.drain = drain;
    signal.addEventListener('abort', () => {
      this.events.push(`aborted (${reasonName(signal.reason)})`);
    });
    drain.addEventListener('abort', () => {
      this.events.push('draining');
      this.returnIfIdle();
    });
    return new Promise((resolve) => {
      this.returned = resolve;
    });
  };

  /** Starts an item unless the work is draining; false when it was refused. */
  start(item: string, options: { returnsAfterAbortMs?: number } = {}): boolean {
    if (!this.drain || this.drain.aborted) {
      this.events.push(`${item} refused`);
      return false;
    }
    this.inFlight.add(item);
    this.events.push(`${item} started`);
    const { returnsAfterAbortMs } = options;
    if (returnsAfterAbortMs !== undefined) {
      this.signal?.addEventListener('abort', () => {
        this.clock.setTimeout(() => {
          this.finish(item);
        }, returnsAfterAbortMs);
      });
    }
    return true;
  }

  finish(item: string): void {
    if (!this.inFlight.delete(item)) return;
    this.events.push(`${item} returned (lease holder "${this.holder()}")`);
    this.returnIfIdle();
  }

  private holder(): string {
    return this.store.record?.holderIdentity ?? '';
  }

  private returnIfIdle(): void {
    if (this.drain?.aborted && this.inFlight.size === 0) this.returned?.();
  }
}

function reasonName(reason: unknown): string {
  return reason instanceof Error ? reason.name : String(reason);
}

/** Renewals by `identity` written after the wall-clock time `sinceWallMs`. */
function renewalsSince(store: MemoryLeaseStore, identity: string, sinceWallMs: number): number[] {
  return store.writes
    .filter((w) => w.holderIdentity === identity && (w.renewTime ?? 0) > sinceWallMs)
    .map((w) => w.renewTime ?? 0);
}

/** Candidate 'a' leading a FakeWork on a fresh clock and store. */
function startWorkingCandidate(drainTimeoutMs: number): {
  clock: FakeClock;
  store: MemoryLeaseStore;
  work: FakeWork;
  a: Candidate;
} {
  const clock = new FakeClock();
  const store = new MemoryLeaseStore();
  const work = new FakeWork(clock, store);
  const a = startCandidate('a', store, clock, { drainTimeoutMs, onStartedLeading: work.onStartedLeading });
  return { clock, store, work, a };
}

describe('LeaderElector hand-over on cancel', () => {
  const DRAIN_TIMEOUT = 20_000;

  it('keeps renewing while work is in flight, starts nothing new, and releases only after the work returned', async () => {
    // A drain timeout longer than the test, so that only the work's return ends the drain.
    const { clock, store, work, a } = startWorkingCandidate(10 * LEASE_DURATION);
    await clock.advance(0);
    const b = startCandidate('b', store, clock);
    await clock.advance(RETRY_PERIOD);
    expect(work.start('refresh')).toBe(true);

    a.controller.abort();
    const cancelledAt = clock.now();
    expect(work.drain?.aborted).toBe(true);
    expect(work.signal?.aborted).toBe(false);
    expect(work.start('late')).toBe(false);

    // Several lease durations: the lease would long have expired without renewals.
    await advanceCheckingExclusivity(clock, [a, b], 3 * LEASE_DURATION);
    expect(a.elector.isLeader()).toBe(true);
    expect(b.startedAt).toEqual([]);
    expect(store.record?.holderIdentity).toBe('a');
    expect(store.record?.renewTime).toBeGreaterThanOrEqual(clock.now() - RETRY_PERIOD);
    expect(renewalsSince(store, 'a', cancelledAt).length).toBeGreaterThanOrEqual(
      (3 * LEASE_DURATION) / RETRY_PERIOD - 1,
    );
    expect(work.signal?.aborted).toBe(false);
    expect(a.finished()).toBe(false);

    work.finish('refresh');
    await clock.advance(0);
    await a.run;
    expect(work.events).toEqual([
      'refresh started',
      'draining',
      'late refused',
      'refresh returned (lease holder "a")',
      'aborted (AbortError)',
    ]);
    expect(a.events).toEqual(['stopped (lease holder "")']);
    expect(store.record).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1 });
    expect(a.stoppedCount).toBe(1);

    // Released: the follower takes over at its next attempt.
    await advanceCheckingExclusivity(clock, [a, b], RETRY_PERIOD * (1 + JITTER_FACTOR));
    expect(b.elector.isLeader()).toBe(true);

    b.controller.abort();
    await b.run;
  });

  it.each([
    { name: 'at once with drainTimeoutMs 0', drainTimeoutMs: 0 },
    { name: 'at the drain deadline', drainTimeoutMs: DRAIN_TIMEOUT },
  ])(
    "aborts the work's signal $name and releases once the aborted work returned",
    async ({ drainTimeoutMs }) => {
      const { clock, store, work, a } = startWorkingCandidate(drainTimeoutMs);
      await clock.advance(RETRY_PERIOD);
      // An item that ignores the drain and winds down only when aborted.
      work.start('slow', { returnsAfterAbortMs: 500 });

      a.controller.abort();
      const cancelledAt = clock.monotonic();
      if (drainTimeoutMs > 0) {
        await clock.advance(drainTimeoutMs - 1);
        expect(work.signal?.aborted).toBe(false);
        expect(store.record?.holderIdentity).toBe('a');
        expect(store.record?.renewTime).toBeGreaterThanOrEqual(clock.now() - RETRY_PERIOD);
      }
      await clock.advance(drainTimeoutMs - (clock.monotonic() - cancelledAt));
      expect(work.signal?.aborted).toBe(true);
      expect(work.signal?.reason).toBeInstanceOf(drainTimeoutMs > 0 ? DrainTimeoutError : Error);
      // Still held while the aborted item winds down.
      expect(store.record?.holderIdentity).toBe('a');
      expect(a.finished()).toBe(false);

      await clock.advance(500);
      await a.run;
      expect(work.events.slice(-2)).toEqual([
        `aborted (${drainTimeoutMs > 0 ? 'DrainTimeoutError' : 'AbortError'})`,
        'slow returned (lease holder "a")',
      ]);
      expect(a.events).toEqual(['stopped (lease holder "")']);
      expect(store.record?.holderIdentity).toBe('');
    },
  );

  it.each([
    { name: 'while leading', cancelFirst: false },
    { name: 'while draining after a cancel', cancelFirst: true },
  ])(
    'aborts the work at once and releases nothing when leadership is lost $name',
    async ({ cancelFirst }) => {
      const { clock, store, work, a } = startWorkingCandidate(10 * LEASE_DURATION);
      await clock.advance(RETRY_PERIOD);
      work.start('refresh');
      if (cancelFirst) a.controller.abort();
      const lastRenewal = store.record?.renewTime;
      a.lock.failing = true;

      await clock.advance(RETRY_PERIOD + RENEW_DEADLINE);
      expect(work.signal?.aborted).toBe(true);
      expect(work.signal?.reason).toBeInstanceOf(LeadershipLostError);
      expect(work.drain?.aborted).toBe(true);
      // The run waits for the aborted work to return (it may still be storing a provider's answer),
      // then ends without a release.
      expect(a.finished()).toBe(false);
      work.finish('refresh');
      await a.run;
      expect(a.elector.isLeader()).toBe(false);
      expect(a.events).toEqual(['stopped (lease holder "a")']);
      expect(store.record).toMatchObject({ holderIdentity: 'a', renewTime: lastRenewal });
      expect(a.lock.attemptedUpdates.filter((record) => record.holderIdentity !== 'a')).toEqual([]);
    },
  );

  it('releases at once on cancel when the work returns as soon as it drains', async () => {
    const { clock, store, work, a } = startWorkingCandidate(DRAIN_TIMEOUT);
    await clock.advance(RETRY_PERIOD);
    a.controller.abort();
    await clock.advance(0);
    await a.run;
    expect(work.events).toEqual(['draining', 'aborted (AbortError)']);
    expect(store.record?.holderIdentity).toBe('');
    // The drain deadline went with the run.
    expect(clock.pendingTimers()).toBe(0);
  });
});

/** A clock whose timers never fire while frozen: a leader stuck so that its renew loop never runs. */
class FreezableClock extends FakeClock {
  frozen = false;

  override setTimeout(callback: () => void, delayMs: number): TimerHandle {
    return super.setTimeout(() => {
      if (!this.frozen) callback();
    }, delayMs);
  }
}

describe('LeaderHealthzAdaptor', () => {
  const TOLERANCE = 5_000;

  it.each([
    {
      name: 'no elector is set yet',
      subject: 'none',
      frozen: false,
      failing: false,
      afterMs: 0,
      healthy: true,
    },
    {
      name: 'a follower watching a frozen leader',
      subject: 'b',
      frozen: true,
      failing: false,
      afterMs: 10 * LEASE_DURATION,
      healthy: true,
    },
    {
      name: 'a leader that keeps renewing',
      subject: 'a',
      frozen: false,
      failing: false,
      afterMs: 10 * LEASE_DURATION,
      healthy: true,
    },
    {
      name: 'a frozen leader up to leaseDuration + timeout',
      subject: 'a',
      frozen: true,
      failing: false,
      afterMs: LEASE_DURATION + TOLERANCE,
      healthy: true,
    },
    {
      name: 'a frozen leader past leaseDuration + timeout',
      subject: 'a',
      frozen: true,
      failing: false,
      afterMs: LEASE_DURATION + TOLERANCE + 1,
      healthy: false,
    },
    {
      name: 'a leader that gave up after failed renewals (it exits instead)',
      subject: 'a',
      frozen: false,
      failing: true,
      afterMs: 10 * LEASE_DURATION,
      healthy: true,
    },
  ])('reports $name as healthy: $healthy', async ({ subject, frozen, failing, afterMs, healthy }) => {
    const clock = new FreezableClock();
    const store = new MemoryLeaseStore();
    const a = startCandidate('a', store, clock);
    const b = startCandidate('b', store, clock);
    // a acquires and renews once at time 0 without a timer; freezing now stops every later renewal.
    await clock.advance(0);
    expect(a.elector.isLeader()).toBe(true);
    clock.frozen = frozen;
    a.lock.failing = failing;
    await clock.advance(afterMs);

    const adaptor = new LeaderHealthzAdaptor(TOLERANCE);
    if (subject !== 'none') adaptor.setLeaderElection((subject === 'a' ? a : b).elector);
    const problem = adaptor.check();
    if (healthy) expect(problem).toBeUndefined();
    else expect(problem?.message).toMatch(/failed to renew leadership on lease test\/lease/);

    clock.frozen = false;
    a.lock.failing = false;
    a.controller.abort();
    b.controller.abort();
    await clock.advance(RETRY_PERIOD * (1 + JITTER_FACTOR));
    await Promise.all([a.run, b.run]);
  });
});
