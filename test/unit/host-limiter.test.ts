import { describe, expect, it } from 'vitest';
import { HostLimiter } from '../../src/controller/host-limiter.ts';

describe('HostLimiter', () => {
  it('runs at most N tasks per host at once, other hosts unaffected, and drains in order', async () => {
    const limiter = new HostLimiter(2);
    const releases: (() => void)[] = [];
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    const task = (i: number) => () =>
      new Promise<number>((resolve) => {
        running++;
        peak = Math.max(peak, running);
        releases.push(() => {
          running--;
          order.push(i);
          resolve(i);
        });
      });
    const results = Array.from({ length: 6 }, (_, i) => limiter.run('slow.example.com', task(i)));
    const other = limiter.run('other.example.com', () => Promise.resolve('independent'));
    await expect(other).resolves.toBe('independent');
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setImmediate(r));
      expect(limiter.inFlight('slow.example.com')).toBeLessThanOrEqual(2);
      releases.shift()?.();
    }
    expect(await Promise.all(results)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(peak).toBe(2);
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    expect(limiter.inFlight('slow.example.com')).toBe(0);
  });

  it('releases the slot when a task fails', async () => {
    const limiter = new HostLimiter(1);
    await expect(limiter.run('h', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(limiter.run('h', () => Promise.resolve(1))).resolves.toBe(1);
  });
});
