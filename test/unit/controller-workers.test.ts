// The controller's worker loop without a cluster: the reconcile deadline (--reconcile-deadline) and
// the per-namespace cap (--max-in-flight-per-namespace) wired into the work queue. The informers
// are built but never started; keys are put on the queue by hand.
import * as k8s from '@kubernetes/client-node';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Controller } from '../../src/controller/controller.ts';
import type { ReconcileResult, Reconciler } from '../../src/controller/reconciler.ts';
import { createLogger } from '../../src/observability/log.ts';
import { OperatorMetrics } from '../../src/observability/metrics.ts';
import { FakeClock, flushMicrotasks } from '../harness/fake-clock.ts';

interface Call {
  key: string;
  signal: AbortSignal;
  finish(result?: ReconcileResult): void;
}

/** A reconciler whose reconciles stay in flight until the test finishes them (or they are aborted). */
class HeldReconciler {
  readonly calls: Call[] = [];

  reconcile(key: string, signal: AbortSignal): Promise<ReconcileResult> {
    return new Promise((resolve) => {
      const finish = (result: ReconcileResult = {}): void => {
        resolve(result);
      };
      this.calls.push({ key, signal, finish });
    });
  }

  inFlight(): string[] {
    return this.calls.filter((c) => !c.signal.aborted).map((c) => c.key);
  }
}

const stops: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

function start(options: { workers: number; reconcileDeadlineMs?: number; maxInFlightPerNamespace?: number }) {
  const clock = new FakeClock();
  const kubeConfig = new k8s.KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: 'none', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
    users: [{ name: 'none' }],
    contexts: [{ name: 'none', cluster: 'none', user: 'none' }],
    currentContext: 'none',
  });
  const lines: string[] = [];
  const log = createLogger(
    'debug',
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    }),
  );
  const controller = new Controller({
    kubeConfig,
    clock,
    log,
    metrics: new OperatorMetrics({ defaultMetrics: false }),
    operatorNamespace: 'ops',
    ...options,
  });
  const reconciler = new HeldReconciler();
  const leading = new AbortController();
  const running = controller.runWorkers(reconciler as unknown as Reconciler, leading.signal);
  stops.push(async () => {
    leading.abort();
    for (const call of reconciler.calls) call.finish();
    await running;
  });
  return { clock, controller, reconciler, lines };
}

describe('controller workers: the reconcile deadline', () => {
  it('aborts a reconcile at the deadline and looks at the key again with backoff', async () => {
    const { clock, controller, reconciler, lines } = start({ workers: 2, reconcileDeadlineMs: 10_000 });
    controller.queue.add('tenant/tarpit');
    await flushMicrotasks();
    const [first] = reconciler.calls;
    await clock.advance(9_999);
    expect(first?.signal.aborted).toBe(false);
    await clock.advance(1);
    expect(first?.signal.aborted).toBe(true);
    expect((first?.signal.reason as Error).name).toBe('TimeoutError');
    // The engine stopped between steps without saying when to look again.
    first?.finish({});
    await clock.advance(1_000);
    expect(reconciler.calls.map((c) => c.key)).toEqual(['tenant/tarpit', 'tenant/tarpit']);
    expect(lines.join('')).toContain('reconcile deadline reached');
  });

  it('keeps the requeue a reconcile cut off by its deadline asked for', async () => {
    const { clock, controller, reconciler } = start({ workers: 1, reconcileDeadlineMs: 1_000 });
    controller.queue.add('tenant/slow');
    await flushMicrotasks();
    await clock.advance(1_000);
    reconciler.calls[0]?.finish({ requeueAfterMs: 60_000 });
    await clock.advance(59_000);
    expect(reconciler.calls).toHaveLength(1);
    await clock.advance(1_000);
    expect(reconciler.calls).toHaveLength(2);
  });

  it('leaves a reconcile that returns in time alone, and no timer behind', async () => {
    const { clock, controller, reconciler, lines } = start({ workers: 1, reconcileDeadlineMs: 1_000 });
    controller.queue.add('tenant/quick');
    await flushMicrotasks();
    reconciler.calls[0]?.finish({});
    await flushMicrotasks();
    expect(clock.pendingTimers()).toBe(0);
    await clock.advance(5_000);
    expect(reconciler.calls).toHaveLength(1);
    expect(reconciler.calls[0]?.signal.aborted).toBe(false);
    expect(lines.join('')).not.toContain('reconcile deadline reached');
  });
});

describe('controller workers: one namespace never holds every worker', () => {
  it.each([
    { name: 'by default (workers - 1)', workers: 4, cap: undefined, attackerInFlight: 3 },
    { name: 'with --max-in-flight-per-namespace 2', workers: 4, cap: 2, attackerInFlight: 2 },
  ])('$name', async ({ workers, cap, attackerInFlight }) => {
    const { controller, reconciler } = start({
      workers,
      ...(cap !== undefined ? { maxInFlightPerNamespace: cap } : {}),
    });
    for (let i = 1; i <= 6; i++) controller.queue.add(`attacker/tarpit-${String(i)}`);
    await flushMicrotasks();
    expect(reconciler.inFlight()).toHaveLength(attackerInFlight);
    controller.queue.add('victim/connection');
    await flushMicrotasks();
    expect(reconciler.inFlight()).toContain('victim/connection');
  });
});
