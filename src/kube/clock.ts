// Time is injected everywhere the operator schedules or judges expiry, so tests can use short
// lifetimes and fake clocks, and so that leader election measures time on the local monotonic clock.

export type TimerHandle = ReturnType<typeof setTimeout>;

export interface Clock {
  /** Wall-clock milliseconds since the epoch (for timestamps written to the API). */
  now(): number;
  /** Monotonic milliseconds, immune to wall-clock steps (for measuring durations such as lease expiry). */
  monotonic(): number;
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** Node caps timer delays at 2^31-1 ms; longer delays fire immediately, so callers must clamp. */
export const MAX_TIMER_DELAY_MS = 2_147_483_647;

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (callback, delayMs) => setTimeout(callback, Math.min(Math.max(0, delayMs), MAX_TIMER_DELAY_MS)),
  clearTimeout: (handle) => {
    clearTimeout(handle);
  },
};

/** Resolves after delayMs on the given clock, or rejects when the signal aborts. */
export function sleep(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clock.clearTimeout(handle);
      reject(signal?.reason as Error);
    };
    const handle = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A signal that aborts with its parent or when its time is up; see withDeadline. */
export interface Deadline {
  signal: AbortSignal;
  /** Whether the time ran out before clear(), even if the parent had aborted first. */
  expired(): boolean;
  /** Stops the timer and detaches from the parent; call it once the guarded work is over. */
  clear(): void;
}

/**
 * A child signal of `parent` that also aborts, with `reason`, after `ms` on the clock. Built by hand,
 * not with AbortSignal.any/timeout, so that the timer is on the injected clock and nothing stays
 * attached to a long-lived parent once clear() is called.
 */
export function withDeadline(
  parent: AbortSignal | undefined,
  ms: number,
  reason: unknown,
  clock: Pick<Clock, 'setTimeout' | 'clearTimeout'> = systemClock,
): Deadline {
  const controller = new AbortController();
  let expired = false;
  const onParentAbort = (): void => {
    controller.abort(parent?.reason);
  };
  if (parent?.aborted === true) onParentAbort();
  else parent?.addEventListener('abort', onParentAbort, { once: true });
  const timer = clock.setTimeout(() => {
    expired = true;
    controller.abort(reason);
  }, ms);
  return {
    signal: controller.signal,
    expired: () => expired,
    clear: () => {
      clock.clearTimeout(timer);
      parent?.removeEventListener('abort', onParentAbort);
    },
  };
}
