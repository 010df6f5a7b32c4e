// Test-side helpers for driving the simulators with plain fetch: a fake clock per test with the
// simulators started on it closed after the test, and JSON answers read whole.
import { afterEach, beforeEach } from 'vitest';
import { FakeClock } from '../harness/fake-clock.ts';
import type { SimTimeOptions } from './sim-server.ts';

export interface JsonAnswer {
  status: number;
  headers: Headers;
  /** The body parsed, or {} when it is not a JSON object. */
  json: Record<string, unknown>;
}

export async function jsonAnswer(res: Response): Promise<JsonAnswer> {
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = {};
  }
  const object = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
  return { status: res.status, headers: res.headers, json: object };
}

/** POSTs a form (application/x-www-form-urlencoded). */
export async function postForm(url: string, form: Record<string, string>): Promise<JsonAnswer> {
  return jsonAnswer(await fetch(url, { method: 'POST', body: new URLSearchParams(form) }));
}

export interface SimulatorFixture<O, S> {
  /** This test's clock. */
  readonly clock: FakeClock;
  /** Starts a simulator on this test's clock and time scale; it is closed after the test. */
  start(options?: O): Promise<S>;
}

/** Registers the hooks of a test file: a new FakeClock at `startWallMs` before each test, closing after. */
export function simulatorFixture<O extends SimTimeOptions, S extends { close(): Promise<void> }>(
  startSimulator: (options: O) => Promise<S>,
  startWallMs: number,
  timeScale: number,
): SimulatorFixture<O, S> {
  let clock = new FakeClock(startWallMs);
  const open: S[] = [];
  beforeEach(() => {
    clock = new FakeClock(startWallMs);
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });
  return {
    get clock() {
      return clock;
    },
    async start(options) {
      const sim = await startSimulator({ clock, timeScale, ...options } as O);
      open.push(sim);
      return sim;
    },
  };
}
