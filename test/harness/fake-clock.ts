// A manual clock for unit tests: time moves only when the test advances it.
import type { Clock, TimerHandle } from '../../src/kube/clock.ts';

interface PendingTimer {
  id: number;
  due: number;
  callback: () => void;
}

export class FakeClock implements Clock {
  private wall: number;
  private mono = 0;
  private nextId = 1;
  private timers: PendingTimer[] = [];

  constructor(startWallMs = Date.parse('2026-01-01T00:00:00Z')) {
    this.wall = startWallMs;
  }

  now(): number {
    return this.wall;
  }

  monotonic(): number {
    return this.mono;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const id = this.nextId++;
    this.timers.push({ id, due: this.mono + Math.max(0, delayMs), callback });
    return id as unknown as TimerHandle;
  }

  clearTimeout(handle: TimerHandle): void {
    const id = handle as unknown as number;
    this.timers = this.timers.filter((t) => t.id !== id);
  }

  /** Steps the wall clock alone, as NTP or an operator would; monotonic time and timers are unaffected. */
  stepWall(deltaMs: number): void {
    this.wall += deltaMs;
  }

  pendingTimers(): number {
    return this.timers.length;
  }

  /** Advances both clocks, firing due timers in order and letting promise callbacks run between them. */
  async advance(deltaMs: number): Promise<void> {
    const target = this.mono + deltaMs;
    for (;;) {
      await flushMicrotasks();
      const next = this.timers.filter((t) => t.due <= target).sort((a, b) => a.due - b.due || a.id - b.id)[0];
      if (!next) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.wall += next.due - this.mono;
      this.mono = next.due;
      next.callback();
    }
    this.wall += target - this.mono;
    this.mono = target;
    await flushMicrotasks();
  }
}

export async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise<void>((resolve) => setImmediate(resolve));
}
