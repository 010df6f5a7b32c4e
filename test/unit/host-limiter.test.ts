import { describe, expect, it } from 'vitest';
import {
  HostLimiter,
  MAX_RETRY_MS,
  MIN_RETRY_MS,
  type Admission,
  type HostSlot,
} from '../../src/controller/host-limiter.ts';
import { FakeClock } from '../harness/fake-clock.ts';

function limiter(perHost: number, reservationMs = 5_000) {
  const clock = new FakeClock();
  const woken: string[] = [];
  const hosts = new HostLimiter(perHost, { clock, reservationMs, wake: (key) => woken.push(key) });
  return { clock, woken, hosts };
}

function slotOf(admission: Admission): HostSlot {
  if (!('slot' in admission)) throw new Error(`turned away for ${String(admission.retryAfterMs)} ms`);
  return admission.slot;
}

function turnedAway(admission: Admission): number {
  if ('slot' in admission) throw new Error('got a slot');
  return admission.retryAfterMs;
}

describe('HostLimiter', () => {
  it('gives at most N slots per host at once and answers at once; other hosts are not affected', () => {
    const { hosts } = limiter(2);
    slotOf(hosts.tryAcquire('slow.example.com', 'a/1'));
    slotOf(hosts.tryAcquire('slow.example.com', 'a/2'));
    const delay = turnedAway(hosts.tryAcquire('slow.example.com', 'b/1'));
    expect(delay).toBeGreaterThanOrEqual(MIN_RETRY_MS);
    expect(delay).toBeLessThanOrEqual(MAX_RETRY_MS);
    slotOf(hosts.tryAcquire('other.example.com', 'b/2'));
    expect(hosts.inFlight('slow.example.com')).toBe(2);
    expect(hosts.waiting('slow.example.com')).toBe(1);
  });

  it('wakes the first key in line when a slot frees, and keeps the slot for it', () => {
    const { hosts, woken } = limiter(1);
    const first = slotOf(hosts.tryAcquire('h', 'ns/holder'));
    turnedAway(hosts.tryAcquire('h', 'ns/second'));
    turnedAway(hosts.tryAcquire('h', 'ns/third'));
    // Asking again does not lose the place in line.
    turnedAway(hosts.tryAcquire('h', 'ns/second'));
    first.release();
    expect(woken).toEqual(['ns/second']);
    // A newcomer, and the third in line, cannot take the slot kept for the second.
    turnedAway(hosts.tryAcquire('h', 'ns/newcomer'));
    turnedAway(hosts.tryAcquire('h', 'ns/third'));
    slotOf(hosts.tryAcquire('h', 'ns/second')).release();
    expect(woken).toEqual(['ns/second', 'ns/third']);
    slotOf(hosts.tryAcquire('h', 'ns/third')).release();
    expect(woken).toEqual(['ns/second', 'ns/third', 'ns/newcomer']);
  });

  it('passes an offer not taken in time to the next key in line', async () => {
    const { clock, hosts, woken } = limiter(1, 2_000);
    const holder = slotOf(hosts.tryAcquire('h', 'ns/holder'));
    turnedAway(hosts.tryAcquire('h', 'ns/deleted'));
    turnedAway(hosts.tryAcquire('h', 'ns/next'));
    holder.release();
    expect(woken).toEqual(['ns/deleted']);
    await clock.advance(1_999);
    expect(woken).toEqual(['ns/deleted']);
    await clock.advance(1);
    expect(woken).toEqual(['ns/deleted', 'ns/next']);
    // Coming back late, the first key has lost its offer and stands in line again.
    turnedAway(hosts.tryAcquire('h', 'ns/deleted'));
    slotOf(hosts.tryAcquire('h', 'ns/next'));
  });

  it.each([
    { name: 'run after success', use: (slot: HostSlot) => slot.run(() => Promise.resolve('ok')) },
    { name: 'run after failure', use: (slot: HostSlot) => slot.run(() => Promise.reject(new Error('x'))) },
    {
      name: 'releaseOnError after failure',
      use: (slot: HostSlot) => slot.releaseOnError(Promise.reject(new Error('409'))),
    },
  ])('frees the slot: $name', async ({ use }) => {
    const { hosts } = limiter(1);
    const slot = slotOf(hosts.tryAcquire('h', 'ns/a'));
    await use(slot).catch(() => undefined);
    expect(hosts.inFlight('h')).toBe(0);
    slotOf(hosts.tryAcquire('h', 'ns/b'));
  });

  it('keeps the slot after releaseOnError succeeds, and frees it once however often it is released', async () => {
    const { hosts } = limiter(2);
    const slot = slotOf(hosts.tryAcquire('h', 'ns/a'));
    await expect(slot.releaseOnError(Promise.resolve('claimed'))).resolves.toBe('claimed');
    expect(hosts.inFlight('h')).toBe(1);
    slotOf(hosts.tryAcquire('h', 'ns/b'));
    slot.release();
    slot.release();
    expect(hosts.inFlight('h')).toBe(1);
  });

  it('tells keys further back in line to wait longer, within bounds', () => {
    const { hosts } = limiter(2);
    slotOf(hosts.tryAcquire('h', 'ns/1'));
    slotOf(hosts.tryAcquire('h', 'ns/2'));
    const delays = Array.from({ length: 200 }, (_, i) => turnedAway(hosts.tryAcquire('h', `ns/w${i}`)));
    expect(delays[0]).toBeLessThan(delays[20] ?? 0);
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(MIN_RETRY_MS);
    expect(Math.max(...delays)).toBe(MAX_RETRY_MS);
  });

  it('tryAcquireIfFree takes only a free slot: never a kept one, never a place in line', () => {
    const { hosts, woken } = limiter(1);
    const probe = slotOf(hosts.tryAcquireIfFree('h'));
    const delay = turnedAway(hosts.tryAcquireIfFree('h'));
    expect(delay).toBeGreaterThanOrEqual(MIN_RETRY_MS);
    expect(hosts.waiting('h'), 'no place in line').toBe(0);
    turnedAway(hosts.tryAcquire('h', 'ns/refresh'));
    probe.release();
    // The freed slot is kept for the token request in line; a probe cannot take it.
    expect(woken).toEqual(['ns/refresh']);
    turnedAway(hosts.tryAcquireIfFree('h'));
    slotOf(hosts.tryAcquire('h', 'ns/refresh')).release();
    slotOf(hosts.tryAcquireIfFree('h')).release();
    expect(hosts.inFlight('h')).toBe(0);
  });

  it('refuses a limit below 1', () => {
    expect(() => new HostLimiter(0, { clock: new FakeClock() })).toThrow(/at least 1/);
  });
});
