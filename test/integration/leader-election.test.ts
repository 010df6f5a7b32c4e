// Leader election against the real API server: three replicas campaign for one Lease with short
// timings, and the test watches, every few milliseconds, that no two of them lead at once.
import * as k8s from '@kubernetes/client-node';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { systemClock } from '../../src/kube/clock.ts';
import { LeaderElector, LeaseLock } from '../../src/kube/leader-election.ts';
import { createNamespace, loadKubeConfig } from '../harness/kube.ts';

const LEASE_DURATION = 3_000;
const RENEW_DEADLINE = 2_000;
const RETRY_PERIOD = 500;

interface Replica {
  identity: string;
  elector: LeaderElector;
  controller: AbortController;
  run: Promise<void>;
  /** performance.now() at which this replica started leading, if it has. */
  startedAt?: number;
}

/** Watches the replicas' callbacks and remembers any moment at which two of them led at once. */
class LeadershipMonitor {
  readonly leading = new Set<string>();
  readonly overlaps: string[] = [];

  started(identity: string): void {
    if (this.leading.size > 0)
      this.overlaps.push(`${identity} started while ${[...this.leading].join(',')} led`);
    this.leading.add(identity);
  }

  stopped(identity: string): void {
    this.leading.delete(identity);
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('leader election on a real Lease', () => {
  let kubeconfigPath: string;
  let admin: k8s.KubeConfig;
  let namespace: string;
  const replicas: Replica[] = [];

  beforeAll(async () => {
    kubeconfigPath = inject('kubeconfig');
    admin = loadKubeConfig(kubeconfigPath);
    namespace = await createNamespace(admin, 'leader-election');
  });

  afterEach(async () => {
    for (const replica of replicas) replica.controller.abort();
    await Promise.all(replicas.map((replica) => replica.run));
    replicas.length = 0;
  });

  function startReplicas(leaseName: string, releaseOnCancel: boolean, monitor: LeadershipMonitor): Replica[] {
    const started = ['replica-0', 'replica-1', 'replica-2'].map((identity) => {
      const controller = new AbortController();
      const replica: Replica = {
        identity,
        controller,
        run: Promise.resolve(),
        elector: new LeaderElector({
          // Each replica has its own client, as separate pods would.
          lock: new LeaseLock(loadKubeConfig(kubeconfigPath), namespace, leaseName),
          identity,
          clock: systemClock,
          leaseDurationMs: LEASE_DURATION,
          renewDeadlineMs: RENEW_DEADLINE,
          retryPeriodMs: RETRY_PERIOD,
          releaseOnCancel,
          onStartedLeading: (signal) => {
            replica.startedAt = performance.now();
            monitor.started(identity);
            signal.addEventListener('abort', () => {
              monitor.stopped(identity);
            });
          },
          onStoppedLeading: () => {
            monitor.stopped(identity);
          },
        }),
      };
      replica.run = replica.elector.run(controller.signal);
      return replica;
    });
    replicas.push(...started);
    return started;
  }

  async function readLease(name: string): Promise<k8s.V1Lease> {
    return admin.makeApiClient(k8s.CoordinationV1Api).readNamespacedLease({ name, namespace });
  }

  async function watchExclusivity(monitor: LeadershipMonitor, durationMs: number): Promise<void> {
    const until = performance.now() + durationMs;
    while (performance.now() < until) {
      expect(monitor.leading.size).toBeLessThanOrEqual(1);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it('has exactly one leader, and replaces a crashed one within leaseDuration + 2 s', async () => {
    const monitor = new LeadershipMonitor();
    const group = startReplicas('crash', false, monitor);
    await waitFor(() => monitor.leading.size === 1, 10_000, 'a first leader');
    const first = group.find((r) => monitor.leading.has(r.identity));
    if (!first) throw new Error('no leader');

    // Several lease durations of steady state: the same single leader, renewing.
    const before = await readLease('crash');
    await watchExclusivity(monitor, 3 * LEASE_DURATION);
    expect([...monitor.leading]).toEqual([first.identity]);
    expect(group.filter((r) => r.elector.isLeader()).map((r) => r.identity)).toEqual([first.identity]);
    const steady = await readLease('crash');
    expect(steady.spec?.holderIdentity).toBe(first.identity);
    expect(steady.spec?.leaseDurationSeconds).toBe(LEASE_DURATION / 1000);
    expect(steady.spec?.leaseTransitions).toBe(0);
    expect(steady.metadata?.resourceVersion).not.toBe(before.metadata?.resourceVersion);
    // The server stored MicroTime values that read back as this moment (within the renew period).
    const renewTime = Date.parse(String(steady.spec?.renewTime));
    expect(Math.abs(Date.now() - renewTime)).toBeLessThan(5_000);

    // A crash: renewals stop and nothing is released, so the others must wait the lease out.
    first.controller.abort();
    const crashedAt = performance.now();
    await first.run;
    await waitFor(() => monitor.leading.size === 1, LEASE_DURATION + 2_000, 'a successor');
    const second = group.find((r) => monitor.leading.has(r.identity));
    if (!second) throw new Error('no successor');
    expect(second).not.toBe(first);
    const takeoverMs = (second.startedAt ?? Number.NaN) - crashedAt;
    console.log(
      `crashed leader ${first.identity} replaced by ${second.identity} after ${Math.round(takeoverMs)} ms`,
    );
    // Not before the lease could have expired: the last renewal was at most a retry period before
    // the crash.
    expect(takeoverMs).toBeGreaterThan(LEASE_DURATION - RETRY_PERIOD * 2);
    expect(takeoverMs).toBeLessThanOrEqual(LEASE_DURATION + 2_000);

    await watchExclusivity(monitor, LEASE_DURATION);
    const after = await readLease('crash');
    expect(after.spec?.holderIdentity).toBe(second.identity);
    expect(after.spec?.leaseTransitions).toBe(1);
    expect(monitor.overlaps).toEqual([]);
  });

  it('hands over quickly when the leader releases the lease on cancel', async () => {
    const monitor = new LeadershipMonitor();
    const group = startReplicas('release', true, monitor);
    await waitFor(() => monitor.leading.size === 1, 10_000, 'a first leader');
    await watchExclusivity(monitor, LEASE_DURATION);
    const first = group.find((r) => monitor.leading.has(r.identity));
    if (!first) throw new Error('no leader');

    first.controller.abort();
    const cancelledAt = performance.now();
    await first.run;
    await waitFor(() => monitor.leading.size === 1, LEASE_DURATION + 2_000, 'a successor');
    const second = group.find((r) => monitor.leading.has(r.identity));
    if (!second) throw new Error('no successor');
    const takeoverMs = (second.startedAt ?? Number.NaN) - cancelledAt;
    console.log(
      `released by ${first.identity}, taken by ${second.identity} after ${Math.round(takeoverMs)} ms`,
    );
    // A released lease is free at the next attempt: at most one jittered retry period, not a lease
    // duration.
    expect(takeoverMs).toBeLessThan(LEASE_DURATION - RETRY_PERIOD);

    await watchExclusivity(monitor, LEASE_DURATION);
    const after = await readLease('release');
    expect(after.spec?.holderIdentity).toBe(second.identity);
    expect(after.spec?.leaseTransitions).toBe(1);
    expect(monitor.overlaps).toEqual([]);
  });

  it('releases the lease for good when the last replica is cancelled', async () => {
    const monitor = new LeadershipMonitor();
    startReplicas('shutdown', true, monitor);
    await waitFor(() => monitor.leading.size === 1, 10_000, 'a leader');
    for (const replica of replicas) replica.controller.abort();
    await Promise.all(replicas.map((replica) => replica.run));
    const lease = await readLease('shutdown');
    expect(lease.spec?.holderIdentity ?? '').toBe('');
    expect(lease.spec?.leaseDurationSeconds).toBe(1);
  });
});
