// Caps concurrent token requests (and token liveness probes) per host, so a cold start of thousands
// of connections does not stampede one provider (and trip its per-app rate limits).
//
// The limit never makes a worker wait. A reconcile asks for a slot before it writes its claim
// (chain/engine.ts): it gets one, or it is turned away and its key is requeued. Waiting inside the
// worker would let one slow host (a tarpit) hold every worker of the operator, with the connections
// of every other host queued behind it.
//
// Turned-away keys are not left to poll. They stand in a line per host, in the order they were
// turned away; when a slot frees it is reserved for the first key in the line and that key is woken
// (the controller adds it to the work queue), so the host is served in order and an idle slot is
// taken at once, without thousands of keys asking again every few hundred milliseconds. A reservation
// not taken within `reservationMs` (the connection was deleted, or no longer needs the host) passes
// to the next key in line. The delay a turned-away key is given is only a fallback for a lost wake-up.
import type { Clock } from '../kube/clock.ts';

/** A slot for one token request to one host; released exactly once, however the request ends. */
export interface HostSlot {
  /** Runs the task and releases the slot when it settles. */
  run<T>(task: () => Promise<T>): Promise<T>;
  /** Releases the slot if the promise rejects (the work the slot was for will not happen). */
  releaseOnError<T>(work: Promise<T>): Promise<T>;
  release(): void;
}

export type Admission = { slot: HostSlot } | { retryAfterMs: number };

export interface HostLimiterOptions {
  clock: Clock;
  /** Requeues a key whose turn has come (the controller adds it to the work queue). */
  wake?: (key: string) => void;
  /** How long a freed slot is kept for the key it was offered to. Default 5 s. */
  reservationMs?: number;
}

/** Fallback delays for a key turned away (lost wake-ups only): never sooner, never later than these. */
export const MIN_RETRY_MS = 500;
export const MAX_RETRY_MS = 30_000;
/** What a request is assumed to take before the first one on a host finished. */
const INITIAL_REQUEST_MS = 1_000;

interface HostState {
  active: number;
  /** Keys turned away, in order (a Map keeps insertion order). */
  line: Map<string, true>;
  /** Slots offered to woken keys: key → monotonic time the offer lapses. */
  reserved: Map<string, number>;
  /** A moving average of how long a slot is held, for the fallback delay. */
  averageMs: number;
}

export class HostLimiter {
  private readonly perHost: number;
  private readonly clock: Clock;
  private readonly wake: (key: string) => void;
  private readonly reservationMs: number;
  private readonly hosts = new Map<string, HostState>();

  constructor(perHost: number, options: HostLimiterOptions) {
    if (!(perHost >= 1)) throw new Error('the per-host concurrency limit must be at least 1');
    this.perHost = perHost;
    this.clock = options.clock;
    this.wake = options.wake ?? (() => undefined);
    this.reservationMs = options.reservationMs ?? 5_000;
  }

  /**
   * A slot for `key` on `host` now, or how long to wait before asking again. The answer is immediate;
   * a key turned away joins the host's line and is woken when a slot is kept for it.
   */
  tryAcquire(host: string, key: string): Admission {
    const state = this.currentState(host);
    if (state.reserved.delete(key) || state.active + state.reserved.size < this.perHost) {
      // A reserved slot is counted in `reserved` until it is taken; now it is active.
      state.line.delete(key);
      state.active++;
      return { slot: this.slot(host, state) };
    }
    state.line.set(key, true);
    const position = [...state.line.keys()].indexOf(key);
    return this.turnedAway(state, Math.floor(position / this.perHost) + 1);
  }

  /**
   * A slot on `host` only if one is free now, without joining the line: for work that can simply
   * be put off (the token liveness probe), which must never take a place, or a kept slot, that a
   * token request is waiting for. Turned away, the answer is the usual estimate of a free slot.
   */
  tryAcquireIfFree(host: string): Admission {
    const state = this.currentState(host);
    if (state.active + state.reserved.size + state.line.size < this.perHost) {
      state.active++;
      return { slot: this.slot(host, state) };
    }
    return this.turnedAway(state, 1);
  }

  /** Slots taken on the host (reserved ones not yet taken are not counted). */
  inFlight(host: string): number {
    return this.hosts.get(host)?.active ?? 0;
  }

  /** Keys waiting in the host's line. */
  waiting(host: string): number {
    return this.hosts.get(host)?.line.size ?? 0;
  }

  /** The host's state with lapsed reservations gone; looked up again, as lapsing may forget an empty host. */
  private currentState(host: string): HostState {
    this.lapseReservations(host, this.stateOf(host));
    return this.stateOf(host);
  }

  /**
   * The answer to a key turned away: `rounds` average slot-holding times, with a little spread so
   * keys turned away together do not come back together.
   */
  private turnedAway(state: HostState, rounds: number): Admission {
    const jittered = rounds * state.averageMs * (1 + Math.random() * 0.2);
    return { retryAfterMs: Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, Math.round(jittered))) };
  }

  private stateOf(host: string): HostState {
    let state = this.hosts.get(host);
    if (state === undefined) {
      state = { active: 0, line: new Map(), reserved: new Map(), averageMs: INITIAL_REQUEST_MS };
      this.hosts.set(host, state);
    }
    return state;
  }

  private slot(host: string, state: HostState): HostSlot {
    const started = this.clock.monotonic();
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      const heldMs = this.clock.monotonic() - started;
      state.averageMs = state.averageMs * 0.8 + heldMs * 0.2;
      state.active--;
      this.offerFreeSlots(host, state);
    };
    return {
      release,
      run: async (task) => {
        try {
          return await task();
        } finally {
          release();
        }
      },
      releaseOnError: async (work) => {
        try {
          return await work;
        } catch (err) {
          release();
          throw err;
        }
      },
    };
  }

  /** Offers every free slot to the next key in line; forgets the host once nothing is left of it. */
  private offerFreeSlots(host: string, state: HostState): void {
    while (state.active + state.reserved.size < this.perHost) {
      const next = state.line.keys().next();
      if (next.done === true) break;
      state.line.delete(next.value);
      state.reserved.set(next.value, this.clock.monotonic() + this.reservationMs);
      // An offer nobody takes lapses on its own, not only when another key of the host asks.
      this.clock.setTimeout(() => {
        const current = this.hosts.get(host);
        if (current !== undefined) this.lapseReservations(host, current);
      }, this.reservationMs);
      this.wake(next.value);
    }
    if (state.active === 0 && state.reserved.size === 0 && state.line.size === 0) this.hosts.delete(host);
  }

  /** Offers that were not taken in time go to the next keys in line. */
  private lapseReservations(host: string, state: HostState): void {
    const now = this.clock.monotonic();
    let lapsed = false;
    for (const [key, until] of state.reserved) {
      if (until > now) continue;
      state.reserved.delete(key);
      lapsed = true;
    }
    if (lapsed) this.offerFreeSlots(host, state);
  }
}
