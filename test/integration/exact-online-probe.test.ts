// The token liveness probe (spec.probe) against the Exact Online simulator: a chain revoked at the
// provider between two refreshes is noticed by the probe (GET /api/v1/current/Me answers 401) and
// recovered by a TOTP login at once, instead of at the next scheduled refresh, which on Exact is up
// to 570 s of 401s for every consumer.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { condition, eventReasons, ready, waitFor } from '../harness/builders.ts';
import { ExactOnlineFixture, scaledMinInterval, scaledMinIntervalMs } from '../harness/exact-online.ts';
import { createNamespace } from '../harness/kube.ts';
import type { OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';

const PROBE_INTERVAL_MS = 1_000;
/** How late a probe may come on a loaded machine (timers, the reconcile queue), on top of the interval. */
const PROBE_LATENESS_MS = 400;

describe('exact-online token liveness probe', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let namespace: string;
  let exact: ExactOnlineFixture;
  let operator: OperatorProcess;

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    const env = await scenario.operatorEnvironment();
    namespace = await createNamespace(admin, 'exact-probe');
    exact = new ExactOnlineFixture(admin, namespace);
    await exact.createSecrets();
    operator = scenario.startOperator({ env, identity: 'exact-probe', watchNamespace: namespace });
  });

  afterAll(async () => {
    await scenario.close();
    await exact.close();
  });

  it('recovers a chain revoked between two refreshes within one probe interval plus the login', async () => {
    // timeScale 0.03: floor 17.1 s, tokens live 18 s. The next scheduled refresh is 17.2 s after
    // the last (the preset's floor scaled, plus 0.1 s); the probe runs every second.
    const scale = 0.03;
    const minIntervalMs = scaledMinIntervalMs(scale);
    const sim = await exact.simulator(scale);
    await exact.seededConnection(sim, 'probed', scale, {
      refresh: { minInterval: scaledMinInterval(scale) },
      extra: { recovery: exact.recoveryLogin(sim), probe: { interval: '1s' } },
    });
    const refreshed = await exact.until(
      'probed',
      'Ready after a refresh',
      (s) => ready(s) && (s.rotations ?? 0) >= 1,
    );
    const refreshedAt = Date.parse(refreshed.lastRefreshTime ?? '');
    // The probe has accepted the new token a few times (each probe is an API call at Exact): the
    // schedule to measure below.
    const callsBefore = sim.stats().apiCalls;
    await waitFor('four probes of the new token', () => sim.stats().apiCalls >= callsBefore + 4, 10_000, 20);

    const statuses = await StatusRecorder.start(admin, namespace, 'probed');
    const revokedAt = Date.now();
    expect(sim.revoke(), 'chains revoked').toBe(1);
    const recovered = await exact.until(
      'probed',
      'a new chain after the revoke',
      (s) => ready(s) && (s.chainGeneration ?? 0) >= 2,
      30_000,
    );
    const recoveredAt = Date.now();
    // Once the watch has delivered the new chain too, the Recovering=True status written a login
    // earlier is in `statuses`.
    await statuses.delivered('the new chain', (s) => ready(s) && (s.chainGeneration ?? 0) >= 2);
    statuses.stop();
    // The login time: from the status written before the login (Recovering=True) to the new chain.
    const recovering = statuses.with('Recovering', 'True')[0];
    const loginMs = recoveredAt - (recovering?.at ?? revokedAt);
    const elapsed = recoveredAt - revokedAt;
    const stats = sim.stats();
    // The schedule as the simulator saw it: the probes (the only API calls) before the revoke, and
    // what followed it at the API and the token endpoint.
    const log = sim.requests();
    const probes = log.filter((r) => r.endpoint === 'api');
    const probesBefore = probes.filter((r) => r.at < revokedAt);
    const gaps = probesBefore.slice(1).map((r, i) => r.at - (probesBefore[i]?.at ?? r.at));
    const lastBefore = probesBefore.at(-1);
    const firstAfter = probes.find((r) => r.at >= revokedAt);
    const tokenAfter = log.filter((r) => r.endpoint === 'token' && r.at >= revokedAt);
    const refresh = tokenAfter[0];
    console.log(
      `exact-online probe: revoked chain recovered ${String(elapsed)} ms after the revoke ` +
        `(probe interval ${String(PROBE_INTERVAL_MS)} ms, login ${String(loginMs)} ms, ` +
        `so ${String(elapsed - loginMs)} ms from the revoke to Recovering=True); gaps between probes before the revoke ${JSON.stringify(gaps)} ms; ` +
        `the first probe after it ${String((firstAfter?.at ?? NaN) - revokedAt)} ms after the revoke and ` +
        `${String((firstAfter?.at ?? NaN) - (lastBefore?.at ?? NaN))} ms after the probe before, ` +
        `the refresh ${String((refresh?.at ?? NaN) - (firstAfter?.at ?? NaN))} ms after that probe; ` +
        `the next scheduled refresh was ${String(refreshedAt + minIntervalMs - revokedAt)} ms away; stats ${JSON.stringify(stats)}`,
    );
    expect(recovering, 'a Recovering=True status before the login').toBeDefined();
    // Probes every interval: never much sooner (two arrivals differ by the interval plus the
    // difference of two request latencies), and no later than the interval plus timer lateness (a
    // schedule of twice the interval fails here however fast the machine).
    expect(gaps.length).toBeGreaterThanOrEqual(3);
    expect(
      gaps.filter((g) => g < PROBE_INTERVAL_MS / 2 || g > PROBE_INTERVAL_MS + PROBE_LATENESS_MS),
    ).toEqual([]);
    // The first probe after the revoke, one interval after the one before it, was refused (401); the
    // next request anywhere was the refresh it triggered, answered "invalid chainId", then the code
    // exchange of the recovery login.
    expect(firstAfter).toMatchObject({ status: 401, outcome: 'unauthorized' });
    expect((firstAfter?.at ?? Infinity) - (lastBefore?.at ?? 0)).toBeLessThanOrEqual(
      PROBE_INTERVAL_MS + PROBE_LATENESS_MS,
    );
    expect(tokenAfter.map((r) => [r.grantType, r.outcome])).toEqual([
      ['refresh_token', 'broken-chain'],
      ['authorization_code', 'issued'],
    ]);
    expect(log.filter((r) => r.at >= (firstAfter?.at ?? 0) && r.at < (refresh?.at ?? 0))).toEqual([
      firstAfter,
    ]);
    // Wall clock: noticed within one probe interval plus the reconcile's own latency, then the login.
    expect(elapsed).toBeLessThanOrEqual(PROBE_INTERVAL_MS + loginMs + 1_500);
    expect(recoveredAt, 'recovered before the next scheduled refresh').toBeLessThan(
      refreshedAt + minIntervalMs,
    );
    expect(condition(recovered, 'ChainBroken')?.status).toBe('False');
    expect(stats.logins).toBe(1);
    expect(stats.brokenChain, 'one refresh on the revoked chain, answered "invalid chainId"').toBe(1);
    expect(stats.tooEarly).toBe(0);
    expect(stats.reuses).toBe(0);
    expect(
      operator.lines.some((l) => l.includes('"probed"') && l.includes('"verdict":"rejected"')),
      'the probe reported the rejection',
    ).toBe(true);
    expect(await eventReasons(admin, namespace, 'probed')).toContain('ProbeRejected');
    await exact.closeSimulator(sim);
  }, 120_000);
});
