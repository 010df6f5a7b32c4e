// The exact-online preset end to end: the operator as a separate process against the real API server
// and the Exact Online simulator (test/simulators/exact-online.ts), with Exact's durations compressed
// by the simulator's timeScale. Each test has a simulator of its own (its own floor clock, error
// counters, TOTP replay memory and stats); one operator watches the namespace of every connection.
//
// Time compression: see test/harness/exact-online.ts.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stateSecretName } from '../../src/controller/state-store.ts';
import {
  condition,
  type ConnectionStatus,
  createSecret,
  eventReasons,
  healthOf,
  OutputTokenWatcher,
  ready,
  waitFor,
} from '../harness/builders.ts';
import { EXACT_FLOOR_MS, ExactOnlineFixture } from '../harness/exact-online.ts';
import { GROUP, PLURAL, VERSION, createNamespace } from '../harness/kube.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';
import { postForm } from '../simulators/sim-fixture.ts';

describe('exact-online preset against the Exact Online simulator', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let env: OperatorEnvironment;
  let namespace: string;
  let operator: OperatorProcess;
  let exact: ExactOnlineFixture;

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    core = admin.makeApiClient(k8s.CoreV1Api);
    env = await scenario.operatorEnvironment();
    namespace = await createNamespace(admin, 'exact');
    exact = new ExactOnlineFixture(admin, namespace);
    await exact.createSecrets();
    operator = scenario.startOperator({ env, identity: 'exact', watchNamespace: namespace });
  });

  afterAll(async () => {
    await scenario.close();
    await exact.close();
  });

  async function patchSpec(name: string, spec: Record<string, unknown>): Promise<void> {
    await admin
      .makeApiClient(k8s.CustomObjectsApi)
      .patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace, plural: PLURAL, name, body: { spec } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
  }

  /** Operator log lines about this connection that report a failed token request. */
  const failedRequests = (name: string): string[] =>
    operator.lines.filter((l) => l.includes(`"${name}"`) && l.includes('token request failed'));

  async function stateRefreshToken(name: string): Promise<string> {
    const state = await core.readNamespacedSecret({
      name: stateSecretName(namespace, name),
      namespace: env.namespace,
    });
    const json = JSON.parse(Buffer.from(state.data?.['state.json'] ?? '', 'base64').toString('utf8')) as {
      refreshToken?: string;
    };
    return json.refreshToken ?? '';
  }

  // timeScale 0.015: floor 8.55 s, tokens live 9 s (expires_in "9"), 30 s of window become 0.45 s.
  // 20 rotations at one per ~8.8 s take about three minutes. minInterval 8.7s is 0.15 s above the
  // floor (never too early, see the header) and leaves 0.3 s before expiry for claim, request,
  // persist and publish, which take tens of milliseconds on loopback; `before` 0.3s says the same
  // from the expiry's side, so the floor decides and the jitter (a tenth of `before`) cannot pull
  // the refresh under it. A larger scale widens the window but 0.05 (1.5 s) would take 10 minutes.
  it('rotates 20 times under time compression: never too early, never a reuse, Ready throughout', async () => {
    const scale = 0.015;
    const sim = await exact.simulator(scale);
    const watcher = new OutputTokenWatcher(admin, namespace, 'rotating-token');
    const startedAt = Date.now();
    await exact.seededConnection(sim, 'rotating', scale, {
      refresh: { minInterval: '8.7s', before: '0.3s' },
    });
    const polled: ConnectionStatus[] = [];
    const done = await waitFor(
      'rotating: 20 rotations',
      async () => {
        await watcher.poll();
        const s = await exact.status('rotating');
        polled.push(s);
        return (s.rotations ?? 0) >= 20 ? s : undefined;
      },
      280_000,
      100,
    );
    const elapsed = Date.now() - startedAt;
    const stats = sim.stats();
    console.log(
      `exact-online rotation: ${String(done.rotations)} rotations in ${String(elapsed)} ms at timeScale ${String(scale)}; ` +
        `tokens seen in the output Secret ${String(watcher.seen.length)}, late ${JSON.stringify(watcher.lateRotations())}; ` +
        `stats ${JSON.stringify(stats)}`,
    );
    expect(stats.tooEarly, 'TooEarlyToRefreshTokens answers').toBe(0);
    expect(stats.reuses, '"Old refresh token used." answers').toBe(0);
    expect(stats.brokenChain).toBe(0);
    expect(stats.errors).toBe(0);
    expect(stats.tokensIssued, 'the seed and one issue per rotation').toBe((done.rotations ?? 0) + 1);
    expect(done.chainGeneration).toBe(1);
    expect(failedRequests('rotating')).toEqual([]);
    // Every status after the first Ready, polled every ~100 ms: a Ready=False could only follow a
    // failed request, and a failure is retried 0.5 s later at the soonest, so none escapes the polls.
    const health = healthOf(polled);
    expect(health.firstReady).toBeGreaterThanOrEqual(0);
    expect(health.notReadyAfter).toEqual([]);
    expect(health.degraded).toEqual([]);
    expect(health.chainBroken).toEqual([]);
    console.log(`exact-online rotation: ${String(polled.length)} statuses polled`);
    await exact.closeSimulator(sim);
  }, 300_000);

  it('classifies a revoked chain as broken (chainId) and recovers by a TOTP login through the code flow', async () => {
    const scale = 0.01; // floor 5.7 s, tokens live 6 s
    const sim = await exact.simulator(scale);
    await exact.seededConnection(sim, 'recover', scale, {
      refresh: { minInterval: '5.8s' },
      extra: {
        recovery: exact.recoveryLogin(sim),
      },
    });
    await exact.until('recover', 'Ready after a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
    const statuses = await StatusRecorder.start(admin, namespace, 'recover');
    const startedAt = Date.now();
    expect(sim.revoke(), 'chains revoked').toBe(1);
    const recovered = await exact.until(
      'recover',
      'a new chain that rotated',
      (s) => (s.chainGeneration ?? 0) >= 2 && (s.rotations ?? 0) >= 2 && ready(s),
      90_000,
    );
    statuses.stop();
    const stats = sim.stats();
    console.log(
      `exact-online recovery: new chain ${String(recovered.chainGeneration)} with ${String(recovered.rotations)} rotations ` +
        `${String(Date.now() - startedAt)} ms after the revoke; stats ${JSON.stringify(stats)}`,
    );
    const broken = statuses.with('ChainBroken', 'True').map((o) => condition(o.status, 'ChainBroken'));
    expect(broken.length, 'a status with ChainBroken=True').toBeGreaterThan(0);
    // The provider's description ("invalid or empty chainId") reaches the operator's log as reason
    // ChainInvalid; the status written before the login names the reason only.
    expect(broken.map((c) => c?.reason)).toEqual(broken.map(() => 'ChainInvalid'));
    expect(
      operator.lines.some(
        (l) =>
          l.includes('"recover"') && l.includes('"reason":"ChainInvalid"') && l.includes('"httpStatus":400'),
      ),
    ).toBe(true);
    expect(condition(recovered, 'ChainBroken')?.status).toBe('False');
    expect(condition(recovered, 'Recovering')?.reason).toBe('NotNeeded');
    expect(stats).toMatchObject({ brokenChain: 1, logins: 1, failedPasswords: 0, failedTotpCodes: 0 });
    expect(stats.tooEarly).toBe(0);
    expect(stats.reuses).toBe(0);
    const reasons = await eventReasons(admin, namespace, 'recover');
    expect(reasons).toContain('RecoveryLoginSucceeded');
    expect(reasons).toContain('ChainBroken');
    await exact.closeSimulator(sim);
  }, 150_000);

  it('too early: a spec minInterval below the floor meets TooEarly, reported as Degraded TooEarly, chain intact', async () => {
    const scale = 0.01; // floor 5.7 s, tokens live 6 s
    const sim = await exact.simulator(scale);
    const statuses = await StatusRecorder.start(admin, namespace, 'early');
    await exact.seededConnection(sim, 'early', scale, { refresh: { minInterval: '3s' } });
    const after = await exact.until(
      'early',
      'two rotations',
      (s) => (s.rotations ?? 0) >= 2 && ready(s),
      60_000,
    );
    statuses.stop();
    const stats = sim.stats();
    const failed = failedRequests('early');
    console.log(
      `exact-online too early: rotations ${String(after.rotations)}, stats ${JSON.stringify(stats)}, ` +
        `failed requests logged ${String(failed.length)}, blocked until ${String(sim.blockedUntil('token'))}`,
    );
    const degraded = statuses.with('Degraded', 'True').map((o) => condition(o.status, 'Degraded'));
    expect(degraded.map((c) => c?.reason)).toContain('TooEarly');
    expect(degraded.find((c) => c?.reason === 'TooEarly')?.message).toContain('HTTP 400');
    // The access token was still valid: Ready stays True through the too-early answers.
    const firstReady = statuses.observed.findIndex((o) => ready(o.status));
    expect(statuses.observed.slice(firstReady).filter((o) => !ready(o.status))).toEqual([]);
    expect(stats.tooEarly).toBeGreaterThan(0);
    expect(stats.reuses).toBe(0);
    expect(stats.brokenChain).toBe(0);
    expect(after.chainGeneration).toBe(1);
    expect(statuses.with('ChainBroken', 'True')).toEqual([]);
    expect(failed.every((l) => l.includes('"reason":"TooEarly"'))).toBe(true);
    // Once the spec's (too low) floor has passed, a too-early answer is retried with a growing
    // backoff (2 s, 4 s …), never at once: each one counts towards Exact's errors an hour.
    const times = failed.map((l) => Date.parse(/"time":"([^"]+)"/.exec(l)?.[1] ?? ''));
    const gaps = times.slice(1).map((t, i) => t - (times[i] ?? t));
    console.log(`exact-online too early: gaps between failed requests (ms) ${JSON.stringify(gaps)}`);
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(1_000);
    expect(stats.blockedAnswers).toBe(0);
    await exact.closeSimulator(sim);
  }, 120_000);

  it('a reused refresh token ("Old refresh token used.") breaks the chain; the token is not presented again', async () => {
    const scale = 0.01; // floor 5.7 s, tokens live 6 s
    const sim = await exact.simulator(scale);
    // minInterval 8 s: between the floor (5.7 s) and the operator's next refresh there is time for
    // another client to move the chain on.
    await exact.seededConnection(sim, 'reused', scale, { refresh: { minInterval: '8s' } });
    const before = await exact.until(
      'reused',
      'Ready after a rotation',
      (s) => ready(s) && (s.rotations ?? 0) >= 1,
    );
    const held = await stateRefreshToken('reused');
    const lastIssue = Date.parse(before.lastRefreshTime ?? '');
    await waitFor('the floor to pass', () => Date.now() >= lastIssue + EXACT_FLOOR_MS * scale + 200, 10_000);
    // Someone else refreshes with the operator's token and uses the successor at the API.
    const answer = await postForm(sim.tokenEndpoint, {
      grant_type: 'refresh_token',
      refresh_token: held,
      client_id: sim.clientId,
      client_secret: exact.clientSecret,
    });
    expect(answer.status).toBe(200);
    const me = await fetch(sim.meEndpoint, {
      headers: { authorization: `Bearer ${String(answer.json.access_token)}` },
    });
    await me.arrayBuffer();
    expect(me.status).toBe(200);
    expect((await exact.status('reused')).rotations, 'the operator had not refreshed in between').toBe(
      before.rotations,
    );

    const broken = await exact.until(
      'reused',
      'ChainBroken',
      (s) => condition(s, 'ChainBroken')?.status === 'True',
      30_000,
    );
    expect(condition(broken, 'ChainBroken')?.reason).toBe('RefreshTokenReused');
    const requestsAtBreak = sim.stats().tokenRequests;
    const notReady = await exact.until('reused', 'Ready=False', (s) => !ready(s), 30_000);
    const stats = sim.stats();
    console.log(
      `exact-online reuse: ChainBroken ${JSON.stringify(condition(broken, 'ChainBroken'))}; ` +
        `Ready ${JSON.stringify(condition(notReady, 'Ready'))}; stats ${JSON.stringify(stats)}`,
    );
    expect(condition(notReady, 'Ready')?.reason).toBe('RefreshTokenReused');
    expect(stats.reuses).toBe(1);
    expect(stats.tokenRequests, 'no token request after the break').toBe(requestsAtBreak);
  }, 120_000);

  it('an expired refresh token breaks the chain: RefreshTokenExpired', async () => {
    const scale = 0.01; // floor 5.7 s, tokens live 6 s; a provider day is 864 s
    const sim = await exact.simulator(scale);
    await exact.seededConnection(sim, 'expired', scale, { refresh: { minInterval: '5.8s' } });
    await exact.until('expired', 'Ready after a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
    // From now on refresh tokens expire after 4.3 s: before the operator's next refresh.
    sim.configure({ refreshTokenLifetimeDays: 0.005 });
    const broken = await exact.until(
      'expired',
      'ChainBroken',
      (s) => condition(s, 'ChainBroken')?.status === 'True',
      30_000,
    );
    const requestsAtBreak = sim.stats().tokenRequests;
    const notReady = await exact.until('expired', 'Ready=False', (s) => !ready(s), 30_000);
    const stats = sim.stats();
    console.log(
      `exact-online expired: ChainBroken ${JSON.stringify(condition(broken, 'ChainBroken'))}; stats ${JSON.stringify(stats)}`,
    );
    expect(condition(broken, 'ChainBroken')?.reason).toBe('RefreshTokenExpired');
    expect(condition(notReady, 'Ready')?.reason).toBe('RefreshTokenExpired');
    expect(stats.expired).toBe(1);
    expect(stats.tokenRequests).toBe(requestsAtBreak);
  }, 120_000);

  it('a blocked app key (429 after the error allowance) is RateLimited, retried with backoff, chain intact', async () => {
    const scale = 0.01; // floor 5.7 s, tokens live 6 s; a provider hour is 36 s
    const sim = await exact.simulator(scale);
    await createSecret(admin, namespace, 'client-wrong', { client_secret: 'not-the-client-secret' });
    await exact.seededConnection(sim, 'blocked', scale, { refresh: { minInterval: '5.8s' } });
    const good = await exact.until(
      'blocked',
      'Ready after a rotation',
      (s) => ready(s) && (s.rotations ?? 0) >= 1,
    );
    // The allowance is 10 error answers an hour; one here, so that a single configuration error
    // (a wrong client secret) blocks the key for a provider hour: 36 s.
    sim.configure({ limits: { errorsPerHour: 1 } });
    const statuses = await StatusRecorder.start(admin, namespace, 'blocked');
    await patchSpec('blocked', { clientSecretRef: { name: 'client-wrong' } });
    await exact.until(
      'blocked',
      'InvalidClient',
      (s) => condition(s, 'Degraded')?.reason === 'InvalidClient',
      30_000,
    );
    const blockedUntil = sim.blockedUntil('token');
    expect(blockedUntil).toBeDefined();
    // The fix is a spec change: it lifts the configuration backoff at once, into the blocked key.
    await patchSpec('blocked', { clientSecretRef: { name: 'client' } });
    const limited = await exact.until(
      'blocked',
      'RateLimited',
      (s) => condition(s, 'Degraded')?.reason === 'RateLimited',
      30_000,
    );
    expect(condition(limited, 'ChainBroken')?.status).toBe('False');
    const resumed = await exact.until(
      'blocked',
      'rotations again after the block',
      (s) => ready(s) && (s.rotations ?? 0) > (good.rotations ?? 0),
      90_000,
    );
    statuses.stop();
    const stats = sim.stats();
    const failed = failedRequests('blocked');
    console.log(
      `exact-online blocked key: blocked for ${String((blockedUntil ?? 0) - Date.parse(condition(limited, 'Degraded')?.lastTransitionTime ?? ''))} ms ` +
        `after the RateLimited status; rotations ${String(resumed.rotations)}; failed requests ${JSON.stringify(failed.map((l) => /"time":"([^"]+)".*"reason":"(\w+)"/.exec(l)?.slice(1, 3)))}; stats ${JSON.stringify(stats)}`,
    );
    expect(stats.blockedAnswers).toBeGreaterThan(0);
    expect(failed.filter((l) => l.includes('"reason":"RateLimited"')).length).toBe(stats.blockedAnswers);
    expect(Date.now()).toBeGreaterThanOrEqual(blockedUntil ?? 0);
    expect(resumed.chainGeneration).toBe(1);
    expect(statuses.with('ChainBroken', 'True')).toEqual([]);
    expect(stats.reuses).toBe(0);
    expect(stats.tooEarly).toBe(0);
  }, 150_000);
});
