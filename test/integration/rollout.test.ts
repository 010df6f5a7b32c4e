// Ten rolling restarts under a slow provider, as a Deployment rollout does them: three replicas, every
// refresh answered 12 s after the provider processed it, and each time the Lease holder gets SIGTERM
// while its refresh is in flight and a replica with a new identity is started. The chain must come
// through whole: no reuse at the provider, no broken chain, no token lost, the output Secret never
// holding an expired token, and the status never showing a stale or failed condition.
//
// Status and the output Secret are recorded through watches (resumed from the last resourceVersion
// they saw, so no update is missed; a gap would be reported), not by polling.
//
// "Every login attempt still recorded" is not exercised here: this connection has no recovery login.
// status.loginAttempts goes through the same fenced status writer (status-writer.ts) as every status
// patch checked below; the attempt budget itself is covered by test/unit/recovery-gate.test.ts,
// test/unit/chain-decide.test.ts and test/integration/recovery.test.ts.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { OAuthConnection } from '../../src/api/v1alpha1.ts';
import { fingerprint, StateStore, type ChainState } from '../../src/controller/state-store.ts';
import { condition, waitFor, type ConnectionStatus } from '../harness/builders.ts';
import { GROUP, PLURAL, VERSION } from '../harness/kube.ts';
import type { TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

const LEASE = ['--lease-duration', '4s', '--renew-deadline', '3s', '--retry-period', '500ms'];
const CYCLES = 10;
const ANSWER_DELAY_MS = 12_000;
// The operator dates a token's expiry from when the answer arrived, while the provider counts
// expires_in from when it issued the token: with every answer 12 s late, expires_at in the output
// Secret lies 12 s past the provider's own expiry. Refreshing 30 s before expiry keeps the next token
// ahead of both: it is requested 22 s after the previous answer and lands 34 s after the provider
// issued the previous one, which lives 40 s (before > 2 × delay + 0 jitter, the worst case).
const TOKEN_TTL_SEC = 40;
const REFRESH_BEFORE = '30s';
const DRAIN_TIMEOUT = '25s';
const CONNECTION = 'books';
const OUTPUT_SECRET = `${CONNECTION}-token`;
const TOKENS_LOST_METRIC = 'oauth_token_operator_tokens_lost_total';

interface StatusView extends ConnectionStatus {
  refreshTokenFingerprint?: string;
}

interface Recorded<T> {
  /** Date.now() when the watch delivered it. */
  at: number;
  type: string;
  object: T;
}

/** Records every version of one object through a watch that resumes where it left off. */
class WatchRecorder<T extends k8s.KubernetesObject> {
  readonly events: Recorded<T>[] = [];
  /** Anything that means versions may have been missed. */
  readonly problems: string[] = [];
  private readonly kc: k8s.KubeConfig;
  private readonly path: string;
  private readonly name: string;
  private readonly onEvent: (event: Recorded<T>) => void;
  private resourceVersion: string | undefined;
  private request: AbortController | undefined;
  private stopped = false;
  private restarting: Promise<void> = Promise.resolve();

  constructor(kc: k8s.KubeConfig, path: string, name: string, onEvent: (event: Recorded<T>) => void) {
    this.kc = kc;
    this.path = path;
    this.name = name;
    this.onEvent = onEvent;
  }

  async start(): Promise<void> {
    const query: Record<string, string | boolean> = {
      fieldSelector: `metadata.name=${this.name}`,
      allowWatchBookmarks: true,
      ...(this.resourceVersion !== undefined ? { resourceVersion: this.resourceVersion } : {}),
    };
    this.request = await new k8s.Watch(this.kc).watch(
      this.path,
      query,
      (type: string, object: T & { code?: number; message?: string }) => {
        if (type === 'ERROR') {
          this.problems.push(
            `watch of ${this.name} reported ${String(object.code)}: ${String(object.message)}`,
          );
          return;
        }
        const version = object.metadata?.resourceVersion;
        if (version !== undefined) this.resourceVersion = version;
        if (type === 'BOOKMARK') return;
        const event = { at: Date.now(), type, object };
        this.events.push(event);
        this.onEvent(event);
      },
      (err: unknown) => {
        if (this.stopped) return;
        this.restarting = (async () => {
          if (err) await new Promise((r) => setTimeout(r, 500));
          if (!this.stopped) await this.start();
        })().catch((restartErr: unknown) => {
          this.problems.push(`watch of ${this.name} not resumed: ${String(restartErr)}`);
        });
      },
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.request?.abort();
    await this.restarting;
  }
}

interface OutputToken {
  token: string;
  expiresAt: number;
  seenAt: number;
}

interface Cycle {
  leader: string;
  sigtermAt: number;
  exitedAt: number;
  successor: string;
  /** Rotation count the leader's in-flight refresh reached. */
  rotation: number;
  /** SIGTERM → the Lease held by another replica. */
  handOverMs: number;
  /** SIGTERM → the old process exited. */
  drainMs: number;
  /** The provider's delayed answer → the Lease held by another replica. */
  answerToHandOverMs: number;
}

/** The JSON log records of one message (pino writes `"msg":"…"` without spaces). */
function records(operator: OperatorProcess, message: string): Record<string, unknown>[] {
  const found: Record<string, unknown>[] = [];
  for (const line of operator.lines) {
    if (line.includes(`"msg":"${message}"`)) found.push(JSON.parse(line) as Record<string, unknown>);
  }
  return found;
}

/** The total of oauth_token_operator_tokens_lost_total on a replica's /metrics, if it still serves. */
async function tokensLost(operator: OperatorProcess): Promise<number | undefined> {
  const serving = records(operator, 'serving metrics and health')[0];
  if (typeof serving?.address !== 'string') return undefined;
  try {
    const response = await fetch(`http://${serving.address}/metrics`, { signal: AbortSignal.timeout(2_000) });
    const text = await response.text();
    return text
      .split('\n')
      .filter((line) => line.startsWith(TOKENS_LOST_METRIC))
      .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
  } catch {
    return undefined;
  }
}

describe('rolling restarts while refreshes are in flight', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let oidc: TestOidcServer;
  let env: OperatorEnvironment;
  let namespace: string;
  let states: StateStore;
  const replicas = new Map<string, OperatorProcess>();
  const everyReplica: OperatorProcess[] = [];
  let replicaCount = 0;

  function startReplica(): OperatorProcess {
    replicaCount += 1;
    const identity = `rollout-${String(replicaCount)}`;
    const operator = scenario.startOperator({
      env,
      identity,
      watchNamespace: namespace,
      args: [...LEASE, '--drain-timeout', DRAIN_TIMEOUT],
    });
    replicas.set(identity, operator);
    everyReplica.push(operator);
    return operator;
  }

  async function leaseHolder(): Promise<string> {
    const lease = await admin
      .makeApiClient(k8s.CoordinationV1Api)
      .readNamespacedLease({ name: 'oauth-token-operator', namespace: env.namespace });
    return lease.spec?.holderIdentity ?? '';
  }

  async function chainState(): Promise<ChainState | undefined> {
    const stored = await states.read({ metadata: { namespace, name: CONNECTION } } as OAuthConnection);
    return stored?.state;
  }

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    oidc = await scenario.startProvider({ accessTokenTtlSec: TOKEN_TTL_SEC, graceWindowSec: 0 });
    // Every token request is processed at once and answered 12 s later.
    oidc.faults.next({ kind: 'delay', ms: ANSWER_DELAY_MS }, 1_000);
    namespace = await scenario.clientNamespace('rollout', clientSecretOf(oidc));
    env = await scenario.operatorEnvironment();
    states = new StateStore(admin.makeApiClient(k8s.CoreV1Api), env.namespace);
    for (let i = 0; i < 3; i++) startReplica();
  });

  afterAll(async () => {
    await scenario.close('SIGKILL');
  });

  it(`${String(CYCLES)} rolling restarts with 12 s refreshes in flight: no reuse, no broken chain, no lost or expired token`, async () => {
    const statusWatch = new WatchRecorder<k8s.KubernetesObject & { status?: StatusView }>(
      admin,
      `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`,
      CONNECTION,
      () => undefined,
    );
    const statuses = statusWatch.events;
    const outputs: OutputToken[] = [];
    // For each token replaced in the output Secret: was it still active at the provider afterwards?
    const replacedWhileActive: Promise<string | undefined>[] = [];
    const outputWatch = new WatchRecorder<k8s.V1Secret>(
      admin,
      `/api/v1/namespaces/${namespace}/secrets`,
      OUTPUT_SECRET,
      ({ at, object }) => {
        const data = object.data ?? {};
        const token = Buffer.from(data.access_token ?? '', 'base64').toString('utf8');
        const previous = outputs.at(-1);
        if (token === '' || token === previous?.token) return;
        const expiresAt = Date.parse(Buffer.from(data.expires_at ?? '', 'base64').toString('utf8'));
        outputs.push({ token, expiresAt, seenAt: at });
        if (previous) {
          const index = outputs.length - 2;
          replacedWhileActive.push(
            oidc.isAccessTokenActive(previous.token).then(
              (active) =>
                active
                  ? undefined
                  : `output token ${String(index)} was expired at the provider when replaced`,
              (err: unknown) => `introspecting output token ${String(index)} failed: ${String(err)}`,
            ),
          );
        }
      },
    );
    await statusWatch.start();
    await outputWatch.start();

    // Every replica's tokens-lost counter, scraped for as long as the test runs.
    // A replica draining after SIGTERM is scraped too, until it exits.
    const scraping = new AbortController();
    const lostSeen: string[] = [];
    const scrapes: { identity: string; at: number }[] = [];
    const scraper = (async () => {
      while (!scraping.signal.aborted) {
        for (const operator of everyReplica.filter((o) => o.child.exitCode === null)) {
          const lost = await tokensLost(operator);
          if (lost === undefined) continue;
          scrapes.push({ identity: operator.identity, at: Date.now() });
          if (lost > 0) lostSeen.push(`${operator.identity}: ${String(lost)}`);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();

    await scenario.seededConnection(oidc, namespace, CONNECTION, {
      refresh: { before: REFRESH_BEFORE },
    });
    await waitFor(
      'the first refresh to be stored',
      async () => {
        const state = await chainState();
        return (state?.rotations ?? 0) >= 1 && state?.claim === undefined;
      },
      60_000,
    );

    const cycles: Cycle[] = [];
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      // The next refresh reaches the provider: from now on its answer is 12 s away.
      const arrivedBefore = oidc.faults.log().length;
      const arrival = await waitFor(
        `refresh ${String(cycle)} to reach the provider`,
        () => oidc.faults.log()[arrivedBefore],
        60_000,
        25,
      );
      const leader = await leaseHolder();
      const old = replicas.get(leader);
      if (!old) throw new Error(`the Lease holder '${leader}' is not a running replica of this test`);
      expect((await chainState())?.claim?.holder, 'the refresh in flight is the Lease holder’s').toBe(leader);

      const sigtermAt = Date.now();
      old.child.kill('SIGTERM');
      replicas.delete(leader);
      startReplica();
      const exited = old.exited.then((code) => ({ code, at: Date.now() }));

      const successor = await waitFor(
        `a replica other than ${leader} to hold the Lease`,
        async () => {
          const holder = await leaseHolder();
          return holder !== '' && holder !== leader ? holder : undefined;
        },
        40_000,
        50,
      );
      const handedOverAt = Date.now();
      // The Lease was let go only after the answer was stored: the successor finds the chain at rest.
      expect(handedOverAt).toBeGreaterThan(arrival.at + ANSWER_DELAY_MS);
      expect((await chainState())?.claim, 'a claim left at the hand-over').toBeUndefined();
      const exit = await exited;
      expect(exit.code, `${leader} exit code after SIGTERM`).toBe(0);

      // The old leader stored its answer before it let go: the state carries no claim, and the
      // status it wrote last matches the state.
      const settled = await waitFor(
        `cycle ${String(cycle)}: status and state to agree`,
        async () => {
          const state = await chainState();
          const status = statuses.at(-1)?.object.status;
          return state?.claim === undefined &&
            state?.refreshToken !== undefined &&
            status?.rotations === state.rotations &&
            status.refreshTokenFingerprint === fingerprint(state.refreshToken)
            ? state
            : undefined;
        },
        10_000,
      );
      const entry: Cycle = {
        leader,
        sigtermAt,
        exitedAt: exit.at,
        successor,
        rotation: settled.rotations,
        handOverMs: handedOverAt - sigtermAt,
        drainMs: exit.at - sigtermAt,
        answerToHandOverMs: handedOverAt - (arrival.at + ANSWER_DELAY_MS),
      };
      cycles.push(entry);
      console.log(
        `rollout cycle ${String(cycle)}: ${leader} → ${successor}, rotation ${String(entry.rotation)}, ` +
          `hand-over ${String(entry.handOverMs)} ms after SIGTERM (${String(entry.answerToHandOverMs)} ms after the provider's answer), ` +
          `drain ${String(entry.drainMs)} ms`,
      );
    }

    // Quiet moment: no claim, and every refresh the provider answered is the state's rotation count.
    const final = await waitFor(
      'every answered refresh to be stored',
      async () => {
        const state = await chainState();
        const answered = oidc.refreshLog().filter((e) => e.status === 200).length;
        return state?.claim === undefined && state?.rotations === answered ? state : undefined;
      },
      30_000,
    );
    // Read at once: the next refresh, seconds after this quiet moment, consumes the stored token, and
    // stopping the scraper and the watches below can take seconds too.
    const finalTokenState = oidc.refreshTokenState(final.refreshToken ?? '');
    scraping.abort();
    await scraper;
    await statusWatch.stop();
    await outputWatch.stop();
    const endedAt = Date.now();

    // The chain: never reused, never broken, the stored token the provider's current one.
    expect(oidc.reuseCount(), 'refresh-token reuses recorded by the provider').toBe(0);
    expect(final.chainGeneration).toBe(1);
    expect(final.broken).toBeUndefined();
    expect(finalTokenState, 'the stored refresh token, when the state was read').toBe('current');
    expect(final.rotations).toBeGreaterThanOrEqual(CYCLES + 1);

    // No token lost: no replica counted one, or said it could not store one.
    expect(lostSeen, `${TOKENS_LOST_METRIC} above 0`).toEqual([]);
    const drainsScraped = cycles.filter(({ leader, sigtermAt, exitedAt }) =>
      scrapes.some((scrape) => scrape.identity === leader && scrape.at > sigtermAt && scrape.at < exitedAt),
    );
    expect(drainsScraped, 'every draining leader had its metrics scraped').toHaveLength(CYCLES);
    const lines = everyReplica.flatMap((operator) =>
      operator.lines.map((line) => `${operator.identity} ${line}`),
    );
    expect(lines.filter((line) => line.includes('could not store the new tokens'))).toEqual([]);
    expect(lines.filter((line) => line.includes('drain timeout passed'))).toEqual([]);

    // Each in-flight refresh was finished and logged by the leader that got the SIGTERM.
    const refreshedBy = new Map<number, string[]>();
    for (const operator of everyReplica) {
      for (const record of records(operator, 'tokens refreshed')) {
        if (typeof record.rotations !== 'number') continue;
        refreshedBy.set(record.rotations, [...(refreshedBy.get(record.rotations) ?? []), operator.identity]);
      }
    }
    for (const { leader, rotation } of cycles) expect(refreshedBy.get(rotation)).toEqual([leader]);
    // Leadership changed only at the SIGTERMs: each successor led until the next one.
    expect(cycles.slice(1).map((c) => c.leader)).toEqual(cycles.slice(0, -1).map((c) => c.successor));
    for (const [rotation, writers] of refreshedBy)
      expect(writers, `rotation ${String(rotation)}`).toHaveLength(1);

    // The output Secret: always replaced before its token's expires_at, and while the provider still
    // accepted the token it replaced; the last one still valid at the end.
    expect(outputWatch.problems).toEqual([]);
    const heldPastExpiry = outputs.flatMap((output, i) => {
      const until = outputs[i + 1]?.seenAt ?? endedAt;
      return until >= output.expiresAt
        ? [`output token ${String(i)} held ${String(until - output.expiresAt)} ms past its expires_at`]
        : [];
    });
    expect(heldPastExpiry).toEqual([]);
    expect((await Promise.all(replacedWhileActive)).filter((problem) => problem !== undefined)).toEqual([]);
    expect(outputs.length).toBeGreaterThanOrEqual(CYCLES + 1);

    // Status, every version of it: no broken chain, no conflict or lost answer, no failure, Ready
    // never False once True, rotations never going back (no stale write from an old leader).
    expect(statusWatch.problems).toEqual([]);
    const seen = statuses.map(({ object }) => object.status ?? {});
    const reasons = new Set(
      seen.flatMap((s) => (s.conditions ?? []).map((c) => `${c.type}=${c.status}/${c.reason}`)),
    );
    expect(seen.filter((s) => condition(s, 'ChainBroken')?.status === 'True')).toEqual([]);
    expect([...reasons].filter((r) => /StateConflict|RefreshResponseLost/.test(r))).toEqual([]);
    expect(seen.filter((s) => condition(s, 'Degraded')?.status === 'True')).toEqual([]);
    expect(seen.filter((s) => (s.failedAttempts ?? 0) > 0)).toEqual([]);
    const firstReady = seen.findIndex((s) => condition(s, 'Ready')?.status === 'True');
    expect(firstReady).toBeGreaterThanOrEqual(0);
    expect(seen.slice(firstReady).filter((s) => condition(s, 'Ready')?.status !== 'True')).toEqual([]);
    const rotations = seen.map((s) => s.rotations ?? 0);
    expect(rotations.filter((r, i) => i > 0 && r < (rotations[i - 1] ?? 0))).toEqual([]);

    // How far ahead of expiry each token was replaced, by the Secret's expires_at and by the provider
    // (which issued token i when refresh i arrived, 12 s before the operator saw it).
    const issued = oidc.refreshLog().filter((e) => e.status === 200);
    const slack = outputs.slice(0, -1).map((output, i) => (outputs[i + 1]?.seenAt ?? 0) - output.expiresAt);
    const providerSlack = outputs
      .slice(0, -1)
      .map((_, i) => (issued[i]?.at ?? 0) + TOKEN_TTL_SEC * 1_000 - (outputs[i + 1]?.seenAt ?? 0));
    const figures = (values: number[]): string =>
      `min ${String(Math.min(...values))} ms, max ${String(Math.max(...values))} ms`;
    console.log(
      `rollout: ${String(CYCLES)} hand-overs: ${figures(cycles.map((c) => c.handOverMs))} after SIGTERM; ` +
        `drain ${figures(cycles.map((c) => c.drainMs))}; ${String(final.rotations)} rotations, ` +
        `${String(outputs.length)} output tokens, ${String(statuses.length)} status versions; ` +
        `a token was replaced ${figures(slack.map((s) => -s))} before its expires_at ` +
        `and ${figures(providerSlack)} before the provider's expiry; conditions seen: ${[...reasons].join(', ')}`,
    );
  }, 480_000);
});
