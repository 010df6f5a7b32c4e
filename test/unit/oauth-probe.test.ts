import { describe, expect, it } from 'vitest';
import { PROBE_BUDGET_RESERVE, probeStandBack } from '../../src/oauth/probe.ts';

const NOW = Date.parse('2026-11-29T12:00:00Z');

describe('probeStandBack: the probe leaves the API budget to the consumers', () => {
  const cases: { name: string; status: number; headers: Record<string, string>; standBackMs?: number }[] = [
    { name: 'an answer without rate-limit headers: no pause', status: 200, headers: {} },
    {
      name: 'a 429 with Retry-After: that long',
      status: 429,
      headers: { 'Retry-After': '120' },
      standBackMs: 120_000,
    },
    {
      name: "a 429 from Exact with the minute's calls spent: until the minutely reset (epoch ms)",
      status: 429,
      headers: { 'X-RateLimit-Minutely-Remaining': '0', 'X-RateLimit-Minutely-Reset': String(NOW + 30_000) },
      standBackMs: 30_000,
    },
    {
      name: "a 200 that spent the minute's last call: until the minutely reset",
      status: 200,
      headers: {
        'X-RateLimit-Minutely-Remaining': '0',
        'X-RateLimit-Minutely-Reset': String(NOW + 45_000),
        'X-RateLimit-Remaining': '4000',
        'X-RateLimit-Limit': '5000',
      },
      standBackMs: 45_000,
    },
    {
      name: "the day's calls down to a tenth of the limit: until the daily reset",
      status: 200,
      headers: {
        'X-RateLimit-Remaining': String(5000 * PROBE_BUDGET_RESERVE),
        'X-RateLimit-Limit': '5000',
        'X-RateLimit-Reset': String(NOW + 3_600_000),
      },
      standBackMs: 3_600_000,
    },
    {
      name: 'one call above the reserve: no pause',
      status: 200,
      headers: {
        'X-RateLimit-Remaining': String(5000 * PROBE_BUDGET_RESERVE + 1),
        'X-RateLimit-Limit': '5000',
        'X-RateLimit-Reset': String(NOW + 3_600_000),
      },
    },
    {
      name: 'a 401 with the budget low: the verdict stands, and the pause too',
      status: 401,
      headers: { 'X-RateLimit-Remaining': '3', 'X-RateLimit-Limit': '5000', 'X-RateLimit-Reset': '60' },
      standBackMs: 60_000,
    },
    {
      name: 'a pause of years (Retry-After: 99999999) is held to a day',
      status: 429,
      headers: { 'Retry-After': '99999999' },
      standBackMs: 86_400_000,
    },
    {
      name: 'a remaining count that is not a number: no pause',
      status: 200,
      headers: { 'X-RateLimit-Remaining': 'lots', 'X-RateLimit-Limit': '5000', 'X-RateLimit-Reset': '60' },
    },
  ];
  it.each(cases)('$name', ({ status, headers, standBackMs }) => {
    expect(probeStandBack(status, new Headers(headers), NOW)).toBe(standBackMs);
  });
});
