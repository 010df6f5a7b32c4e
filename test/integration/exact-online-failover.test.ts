// The exact-online preset through leader changes: two replicas against the real API server and the
// Exact Online simulator, the leader SIGKILLed between refreshes and with a refresh in flight.
//
// Exact keeps a presented refresh token usable until its successor is first used. A leader killed
// while its refresh is in flight loses the answer and the successor in it; that successor is never
// used, so the new leader presents the same token again once Exact's floor since the lost request
// has passed (src/controller/chain/decide.ts, successorUnusedRetry). The chain is never declared
// broken and no login is needed. The connection here has no recovery login on purpose: with one,
// the operator would log in rather than let consumers wait for the floor (their access token expires
// first), and this test is about the chain surviving.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { condition, ready, waitFor } from '../harness/builders.ts';
import {
  EXACT_FLOOR_MS,
  ExactOnlineFixture,
  offChain,
  refreshRequests,
  scaledMinInterval,
} from '../harness/exact-online.ts';
import { createNamespace } from '../harness/kube.ts';
import { leaseHolder, type OperatorEnvironment, type OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';
import { EXACT_TOKEN_PATH } from '../simulators/exact-online.ts';

// A 4 s Lease, and a claim judged after request timeout + persist budget + lease = 2 + 2 + 4 s.
const REPLICA_ARGS = [
  '--lease-duration',
  '4s',
  '--renew-deadline',
  '3s',
  '--retry-period',
  '500ms',
  '--request-timeout',
  '2s',
  '--persist-budget',
  '2s',
];

describe('exact-online through leader kills', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let env: OperatorEnvironment;
  let namespace: string;
  let exact: ExactOnlineFixture;
  const replicas = new Map<string, OperatorProcess>();
  let started = 0;

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    env = await scenario.operatorEnvironment();
    namespace = await createNamespace(admin, 'exact-kill');
    exact = new ExactOnlineFixture(admin, namespace);
    await exact.createSecrets();
  });

  afterAll(async () => {
    await scenario.close();
    await exact.close();
  });

  function startReplica(): OperatorProcess {
    started++;
    const identity = `exact-replica-${String(started)}`;
    const replica = scenario.startOperator({ env, identity, watchNamespace: namespace, args: REPLICA_ARGS });
    replicas.set(identity, replica);
    return replica;
  }

  /** SIGKILLs the current leader and starts a replacement, so that two replicas stay. */
  async function killLeader(): Promise<string> {
    const holder = await waitFor('a leader', () => leaseHolder(admin, env.namespace), 20_000, 100);
    const leader = replicas.get(holder);
    if (leader === undefined) throw new Error(`the Lease names ${holder}, which this test did not start`);
    await leader.kill('SIGKILL');
    replicas.delete(holder);
    startReplica();
    return holder;
  }

  it('keeps the chain through a leader killed between refreshes and one killed with its refresh in flight', async () => {
    const scale = 0.01; // floor 5.7 s, tokens live 6 s
    const sim = await exact.simulator(scale);
    startReplica();
    startReplica();
    await exact.seededConnection(sim, 'kept', scale, { refresh: { minInterval: scaledMinInterval(scale) } });
    const first = await exact.until('kept', 'two rotations', (s) => ready(s) && (s.rotations ?? 0) >= 2);

    // A leader killed between two refreshes: the next one takes the Lease and carries on.
    const idleKilled = await killLeader();
    const afterIdleKill = await exact.until(
      'kept',
      'two more rotations after an idle leader was killed',
      (s) => (s.rotations ?? 0) >= (first.rotations ?? 0) + 2,
    );
    // So far no token was presented twice: each refresh presented, once, the token the one before got.
    const beforeInFlight = refreshRequests(sim);
    expect(beforeInFlight.length).toBeGreaterThanOrEqual(afterIdleKill.rotations ?? 0);
    expect(sim.stats().repeatedPresentations, 'refresh tokens presented a second time').toBe(0);
    expect(offChain(beforeInFlight)).toEqual([]);

    // A leader killed with its refresh in flight: Exact processes the request (the refresh token is
    // rotated) and holds the answer 30 s, past the Lease and the claim timeout.
    const statuses = await StatusRecorder.start(admin, namespace, 'kept');
    const issuedBefore = sim.stats().tokensIssued;
    sim.faults.delayNext(1, 30_000, EXACT_TOKEN_PATH);
    await waitFor(
      'the held refresh to be processed at the simulator',
      () => sim.stats().tokensIssued > issuedBefore,
      20_000,
      20,
    );
    const killedAt = Date.now();
    const inFlightKilled = await killLeader();
    const resumed = await exact.until(
      'kept',
      'two rotations after the in-flight kill',
      (s) => ready(s) && (s.rotations ?? 0) >= (afterIdleKill.rotations ?? 0) + 2,
      60_000,
    );
    statuses.stop();
    const firstReadyAgain = statuses.observed.find(
      (o) => o.at > killedAt && ready(o.status) && (o.status.rotations ?? 0) > (afterIdleKill.rotations ?? 0),
    );
    const stats = sim.stats();
    console.log(
      `exact-online leader kills: idle kill of ${idleKilled}, in-flight kill of ${inFlightKilled}; ` +
        `Ready with a new token ${String((firstReadyAgain?.at ?? NaN) - killedAt)} ms after the in-flight kill; ` +
        `rotations ${String(resumed.rotations)}; stats ${JSON.stringify(stats)}`,
    );
    expect(stats.reuses, '"Old refresh token used." answers').toBe(0);
    expect(stats.tooEarly, 'TooEarlyToRefreshTokens answers').toBe(0);
    expect(stats.brokenChain).toBe(0);
    expect(stats.errors).toBe(0);
    expect(stats.logins, 'no recovery login').toBe(0);
    expect(resumed.chainGeneration, 'the same chain throughout').toBe(1);
    expect(statuses.with('ChainBroken', 'True')).toEqual([]);
    // While waiting for Exact's floor the status says why; then the same token was presented again.
    const degraded = statuses.with('Degraded', 'True').map((o) => condition(o.status, 'Degraded')?.reason);
    expect(degraded).toContain('RefreshResponseLost');
    const retried = [...replicas.values()].some((r) =>
      r.lines.some((l) => l.includes('"kept"') && l.includes('"retry":"successor-unused"')),
    );
    expect(retried, 'a replica presented the in-doubt token again').toBe(true);
    // One issue per rotation, the seed, and the successor lost with the held answer.
    expect(stats.tokensIssued).toBe((resumed.rotations ?? 0) + 2);
    // Exactly the one repeat Exact's rule allows: the token of the held request presented again after
    // the floor since its first presentation, and the successor issued then (lost with the answer)
    // never presented nor used at the API.
    const log = sim.requests();
    const refreshes = refreshRequests(sim);
    const repeats = refreshes.filter((r) => (r.presentation ?? 1) > 1);
    const repeat = repeats[0];
    const held = refreshes.find((r) => r.generation === repeat?.generation && r.presentation === 1);
    console.log(
      `exact-online leader kills: the held token presented again ${String((repeat?.at ?? NaN) - (held?.at ?? NaN))} ms ` +
        `after its first presentation (floor ${String(EXACT_FLOOR_MS * scale)} ms); refresh requests ${String(refreshes.length)}`,
    );
    expect(stats.repeatedPresentations, 'refresh tokens presented a second time').toBe(1);
    expect(repeats).toMatchObject([{ presentation: 2, outcome: 'issued' }]);
    expect(held?.outcome).toBe('issued');
    expect((repeat?.at ?? 0) - (held?.at ?? Infinity)).toBeGreaterThanOrEqual(EXACT_FLOOR_MS * scale);
    const lost = held?.issued;
    expect(lost).toBeDefined();
    expect(log.filter((r) => r.generation === lost)).toEqual([]);
    // Leaving out the held request, each refresh presented the token the one before got.
    const kept = refreshes.filter((r) => r !== held);
    expect(kept.filter((r, i) => i > 0 && r.generation !== kept[i - 1]?.issued)).toEqual([]);
    await exact.closeSimulator(sim);
  }, 150_000);
});
