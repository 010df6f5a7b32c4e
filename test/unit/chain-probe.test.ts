// The probe step of the chain engine (src/controller/chain/probe.ts) on a small fake engine: the
// probe's host counts against the per-host limit like a token request, a probe turned away stays due,
// and a slot is released however the probe ends.
import { describe, expect, it } from 'vitest';
import { probeToken } from '../../src/controller/chain/probe.ts';
import type { EngineSteps } from '../../src/controller/chain/engine.ts';
import { ProbeSchedule } from '../../src/controller/chain/probe-schedule.ts';
import type { Failure } from '../../src/controller/status.ts';
import { HostLimiter } from '../../src/controller/host-limiter.ts';
import { TokenError, type ProbeResult } from '../../src/oauth/index.ts';
import { fingerprint } from '../../src/controller/state-store.ts';
import { FakeClock } from '../harness/fake-clock.ts';

const NOW = Date.parse('2030-01-01T00:00:00Z');
const UID = 'uid-1';
const PROBE_URL = 'https://api.example.com/me';
const INTERVAL_MS = 60_000;

interface Built {
  engine: EngineSteps;
  limiter: HostLimiter;
  probes: ProbeSchedule;
  probed: string[];
  failures: Failure[];
}

/**
 * A fake engine whose probe answers with `answer`. `busy` token requests to the API host have asked
 * for its one slot first: the first holds it, the others wait in line.
 */
function build(answer: () => Promise<ProbeResult>, busy = 0): Built {
  const clock = new FakeClock(NOW);
  const limiter = new HostLimiter(1, { clock });
  for (let i = 0; i < busy; i++) limiter.tryAcquire('api.example.com', `other/${String(i)}`);
  const probes = new ProbeSchedule();
  const probed: string[] = [];
  const failures: Failure[] = [];
  const engine = {
    deps: {
      clock,
      hostLimiter: limiter,
      oauth: {
        resolveEndpoints: () => Promise.resolve({ tokenEndpoint: 'https://login.example.com/token' }),
        probe: (url: string) => {
          probed.push(url);
          return answer();
        },
      },
      metrics: { probes: { inc: () => undefined } },
    },
    ctx: {
      handle: { state: { accessToken: 'at-1' } },
      inputs: { probe: { intervalMs: INTERVAL_MS, urlFor: () => PROBE_URL }, endpoints: () => ({}) },
      connection: { metadata: { uid: UID } },
      log: { info: () => undefined, debug: () => undefined },
      probes,
      status: { record: () => undefined },
      signal: new AbortController().signal,
    },
    labels: { namespace: 'ns', name: 'conn' },
    fail: (failure: Failure) => {
      failures.push(failure);
      return Promise.resolve({ requeueAfterMs: 1_000 });
    },
  } as unknown as EngineSteps;
  return { engine, limiter, probes, probed, failures };
}

const accepted = (): Promise<ProbeResult> => Promise.resolve({ verdict: 'accepted', status: 200 });

describe('the probe step', () => {
  it('is put off while the API host is at its limit: no request, no verdict, due again when a slot should be free', async () => {
    const { engine, limiter, probes, probed } = build(accepted, 1);
    const result = await probeToken(engine);
    // 'inconclusive': the decision goes on to publish, and the next look is at the earlier of the
    // refresh and this new probe time.
    expect(result).toBe('inconclusive');
    expect(probed).toEqual([]);
    const nextAt = probes.nextAt(UID, INTERVAL_MS, NOW);
    expect(nextAt).toBeGreaterThan(NOW);
    expect(nextAt).toBeLessThan(NOW + INTERVAL_MS);
    expect(limiter.inFlight('api.example.com'), 'only the slot taken before').toBe(1);
    // It took no place in line: a token request turned away later is still first to be woken.
    expect(limiter.waiting('api.example.com')).toBe(0);
  });

  it('never takes the slot kept for a token request waiting in line', async () => {
    const { engine, limiter, probed } = build(accepted);
    const holder = limiter.tryAcquire('api.example.com', 'other/0');
    expect('slot' in limiter.tryAcquire('api.example.com', 'other/1'), 'other/1 waits in line').toBe(false);
    // The holder finishes: the slot is kept for the request that waited, not taken by the probe.
    if ('slot' in holder) holder.slot.release();
    expect(await probeToken(engine)).toBe('inconclusive');
    expect(probed).toEqual([]);
    expect('slot' in limiter.tryAcquire('api.example.com', 'other/1'), 'other/1 takes its kept slot').toBe(
      true,
    );
  });

  it.each<[string, () => Promise<ProbeResult>, unknown]>([
    ['an accepted token', accepted, 'accepted'],
    ['a rejected token', () => Promise.resolve({ verdict: 'rejected', status: 401 }), 'rejected'],
    [
      'a URL the policy refuses',
      () => Promise.reject(new TokenError({ code: 'insecure_endpoint', reason: 'Refused', message: 'no' })),
      { requeueAfterMs: 1_000 },
    ],
  ])(
    'takes a slot for %s, releases it after, and is not due again for an interval',
    async (_n, answer, out) => {
      const { engine, limiter, probes, probed, failures } = build(answer);
      expect(await probeToken(engine)).toEqual(out);
      expect(probed).toEqual([PROBE_URL]);
      expect(limiter.inFlight('api.example.com')).toBe(0);
      expect(probes.nextAt(UID, INTERVAL_MS, NOW)).toBe(NOW + INTERVAL_MS);
      if (typeof out !== 'string') expect(failures.map((f) => f.reason)).toEqual(['ProbeRefused']);
    },
  );

  it('reports a 403 (a token without the endpoint scope) as ProbeForbidden once, again only after another answer', async () => {
    const statuses = [403, 403, undefined, 403, 200, 403, 403];
    const answers = statuses.map((status): ProbeResult =>
      status !== undefined
        ? { verdict: status === 200 ? 'accepted' : 'inconclusive', status }
        : { verdict: 'inconclusive' },
    );
    const { engine } = build(() => Promise.resolve(answers.shift() ?? { verdict: 'inconclusive' }));
    const reported: number[] = [];
    const record = (event: { reason: string }): void => {
      if (event.reason === 'ProbeForbidden') reported.push(statuses.length - answers.length - 1);
    };
    (engine.ctx.status as unknown as { record: typeof record }).record = record;
    const verdicts = [];
    for (let i = 0; i < statuses.length; i++) verdicts.push(await probeToken(engine));
    // The first 403, and the first after the 200; a failure below HTTP (no status) is no answer.
    expect(reported).toEqual([0, 5]);
    expect(verdicts).toEqual(statuses.map((s) => (s === 200 ? 'accepted' : 'inconclusive')));
  });
});

describe('the probe step and the API rate limit', () => {
  it.each([
    { name: 'no pause asked: due again one interval on', standBackMs: undefined, dueInMs: INTERVAL_MS },
    { name: 'a pause shorter than the interval changes nothing', standBackMs: 10_000, dueInMs: INTERVAL_MS },
    {
      name: 'a pause until the daily reset holds the next probe until then',
      standBackMs: 3_600_000,
      dueInMs: 3_600_000,
    },
  ])('$name', async ({ standBackMs, dueInMs }) => {
    const { engine, probes } = build(() =>
      Promise.resolve({
        verdict: 'accepted',
        status: 200,
        ...(standBackMs !== undefined ? { standBackMs } : {}),
      }),
    );
    expect(await probeToken(engine)).toBe('accepted');
    expect(probes.nextAt(UID, INTERVAL_MS, NOW)).toBe(NOW + dueInMs);
  });
});

describe('the probe step: what outlives the reconcile', () => {
  it('remembers a rejected token until it is replaced, so a refresh that must wait out the request gap still comes', async () => {
    const { engine, probes } = build(() => Promise.resolve({ verdict: 'rejected', status: 401 }));
    expect(await probeToken(engine)).toBe('rejected');
    expect(probes.wasRejected(UID, fingerprint('at-1'))).toBe(true);
    expect(probes.wasRejected(UID, fingerprint('at-2')), 'a new token starts clean').toBe(false);
  });

  it('forgets the rejection once a refresh answers it, also when the provider hands back the same token', () => {
    const probes = new ProbeSchedule();
    probes.rejected(UID, fingerprint('at-1'));
    probes.refreshedAfterRejection(UID, fingerprint('at-1'));
    // No refresh every gap for a token the provider keeps handing back: the next 401 blames the URL.
    expect(probes.wasRejected(UID, fingerprint('at-1'))).toBe(false);
    expect(probes.isFreshFromRejection(UID, fingerprint('at-1'))).toBe(true);
  });

  it('does not remember an accepted token, nor a fresh token the probe URL rejects (the URL is blamed)', async () => {
    const accepting = build(accepted);
    await probeToken(accepting.engine);
    expect(accepting.probes.wasRejected(UID, fingerprint('at-1'))).toBe(false);
    const blamed = build(() => Promise.resolve({ verdict: 'rejected', status: 401 }));
    blamed.probes.refreshedAfterRejection(UID, fingerprint('at-1'));
    expect(await probeToken(blamed.engine)).toBe('inconclusive');
    expect(blamed.probes.wasRejected(UID, fingerprint('at-1'))).toBe(false);
  });

  it('reports a probe URL the preset cannot name as ProbeURLUnknown, its field named once', async () => {
    const { engine, failures } = build(accepted);
    (engine.ctx.inputs.probe as unknown as { urlFor: () => string }).urlFor = () => {
      throw new TokenError({
        code: 'configuration',
        reason: 'ProbeURLUnknown',
        message: 'spec.probe.url: preset folio has no well-known endpoint to probe; set spec.probe.url',
      });
    };
    await probeToken(engine);
    expect(failures).toMatchObject([
      {
        kind: 'configuration',
        reason: 'ProbeURLUnknown',
        message: 'spec.probe.url: preset folio has no well-known endpoint to probe; set spec.probe.url',
      },
    ]);
  });
});
