// The concur preset end to end: the operator as a separate process against the real API server and
// the SAP Concur simulator (test/simulators/concur.ts), with Concur's durations compressed by the
// simulator's timeScale. Each test has a simulator of its own (its own geolocations, stats and
// request log) and a connection of its own; one operator watches the namespace of every connection,
// and the tests run side by side, each waiting on what it can observe.
//
// Time compression: the simulator scales every provider duration and the operator does not know it.
// At SCALE an hour-long access token lives 6 s (expires_in "6"): the default refresh margin (a third,
// with --secret-propagation 1s) refreshes 2 s before expiry, and the floor between two requests of a
// connection is the harness's 1 s gap (a tenth of the lifetime, 0.6 s, is less): about the share of
// the lifetime it is in production, where a tenth of an hour (6 minutes) decides.
//
// Errors: which HTTP status each Concur code comes with is not documented; the simulator's defaults
// (400, 401 for client authentication, 403 for a company not enabled) are used. Code 106
// (refresh_token missing) cannot be provoked: the operator refuses an empty refresh token before it
// sends anything.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stateSecretName } from '../../src/controller/state-store.ts';
import {
  condition,
  connection,
  type ConnectionOverrides,
  type ConnectionStatus,
  createConnection,
  createSecret,
  eventReasons,
  healthOf,
  OutputTokenWatcher,
  readSecretData,
  ready,
  waitFor,
} from '../harness/builders.ts';
import { connectionsOf } from '../harness/connections.ts';

import { canary, findLeaks } from '../harness/leaks.ts';
import type { OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';
import {
  startConcurSimulator,
  type ConcurPrincipal,
  type ConcurSimulator,
  type ConcurSimulatorOptions,
  type ConcurTokenRequest,
} from '../simulators/concur.ts';

const HOUR_MS = 3_600_000;
const SIX_MONTHS_MS = 180 * 24 * HOUR_MS;
/** An hour is 6 s; six months 7.2 h. */
const SCALE = 6_000 / HOUR_MS;
/** An hour is 4 s: twenty refreshes in about a minute. */
const FAST_SCALE = 4_000 / HOUR_MS;
const USERNAME = 'alice@example.test';

/** What the tests read of status beyond builders.ts's ConnectionStatus. */
/** An output key for API clients: the base URI of the user's data center. */
const API_BASE = { key: 'api-base-url', template: '{{geolocation}}' };

/** spec.recovery of a direct (password grant) recovery login with the credentials Secret `secret`. */
function directRecovery(secret: string, maxAttemptsPerHour: number): Record<string, unknown> {
  return {
    recovery: {
      login: {
        flow: 'direct',
        usernameRef: { name: secret },
        passwordRef: { name: secret },
        maxAttemptsPerHour,
      },
    },
  };
}

interface StoredChain {
  refreshToken?: string;
  geolocation?: string;
  chainGeneration?: number;
}

describe('concur preset against the SAP Concur simulator', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let operatorNamespace: string;
  let namespace: string;
  let operator: OperatorProcess;
  const simulators: ConcurSimulator[] = [];
  const clientSecret = canary('concur-client-secret');
  const password = canary('concur-password');
  /** Values that must never leave the operator: the leak scan at the end looks for each. */
  const secrets = [clientSecret, password];

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    core = admin.makeApiClient(k8s.CoreV1Api);
    const env = await scenario.operatorEnvironment();
    operatorNamespace = env.namespace;
    namespace = await scenario.clientNamespace('concur', clientSecret);
    await createSecret(admin, namespace, 'concur-user', { username: USERNAME, password });
    await createSecret(admin, namespace, 'concur-user-wrong', {
      username: USERNAME,
      password: 'not-the-password',
    });
    await createSecret(admin, namespace, 'client-wrong', { client_secret: 'not-the-client-secret' });
    operator = scenario.startOperator({
      env,
      identity: 'concur',
      watchNamespace: namespace,
      args: ['--secret-propagation', '1s'],
    });
  });

  afterAll(async () => {
    await scenario.close();
    await Promise.all(simulators.map((s) => s.close()));
  });

  async function simulator(
    timeScale: number,
    options: ConcurSimulatorOptions = {},
  ): Promise<ConcurSimulator> {
    const sim = await startConcurSimulator({
      timeScale,
      clientId: 'operator',
      clientSecret,
      username: USERNAME,
      password,
      ...options,
    });
    simulators.push(sim);
    return sim;
  }

  /**
   * A concur connection whose token endpoint is the simulator's 'us' geolocation (the preset's
   * default region, on loopback), seeded with a chain of `principal` unless the grant is password.
   */
  async function concurConnection(
    sim: ConcurSimulator,
    name: string,
    overrides: ConnectionOverrides & { principal?: ConcurPrincipal } = {},
  ): Promise<void> {
    const { principal = 'user', ...rest } = overrides;
    if (rest.grant?.type !== 'password') {
      const seed = sim.seedChain(principal);
      secrets.push(seed);
      await createSecret(admin, namespace, `${name}-seed`, { refresh_token: seed });
    }
    await createConnection(
      admin,
      connection(namespace, name, '', {
        ...rest,
        provider: { issuerURL: undefined, preset: 'concur', tokenURL: sim.tokenEndpoint('us') },
      }),
    );
  }

  const { status, until, failedRequests, poke } = connectionsOf(() => ({
    admin,
    namespace,
    lines: operator.lines,
  }));

  async function storedChain(name: string): Promise<StoredChain> {
    const secret = await core.readNamespacedSecret({
      name: stateSecretName(namespace, name),
      namespace: operatorNamespace,
    });
    return JSON.parse(
      Buffer.from(secret.data?.['state.json'] ?? '', 'base64').toString('utf8'),
    ) as StoredChain;
  }

  const refreshes = (sim: ConcurSimulator): ConcurTokenRequest[] =>
    sim.tokenRequests().filter((r) => r.grantType === 'refresh_token');

  /** The api-base-url values of a connection's output Secret, each recorded once when it changes. */
  const apiBases = (name: string): { values: string[]; poll: () => Promise<void> } => {
    const values: string[] = [];
    return {
      values,
      poll: async () => {
        const value = (await readSecretData(admin, namespace, `${name}-token`))?.[API_BASE.key];
        if (value !== undefined && value !== values.at(-1)) values.push(value);
      },
    };
  };

  describe.concurrent('chains', () => {
    // Keep-alive: access tokens that outlive the refresh token (a test device: Concur's live an
    // hour), so that the only refresh due before the six-month expiry is the keep-alive one. Six
    // months are 75 s here, access tokens 120 s (due 80 s after issue), keepAlive 60s. A company
    // principal's answers carry refresh_expires_in (epoch seconds).
    // Six months become 120 s and access tokens live 150 s (due at 100 s), so the keep-alive of 60 s
    // is the first reason to refresh: before the access token is due and before two thirds of the
    // refresh token's stated life (80 s), at which the schedule would refresh too.
    it('honours refresh_expires_in and keeps a six-month refresh token alive by keep-alive alone', async ({
      expect,
    }) => {
      const scale = 120_000 / SIX_MONTHS_MS;
      const accessMs = 150_000;
      const sim = await simulator(scale, { accessTokenLifetimeHours: accessMs / scale / HOUR_MS });
      await concurConnection(sim, 'keepalive', { principal: 'company', refresh: { keepAlive: '60s' } });
      const first = await until('keepalive', 'the first refresh', (s) => ready(s) && !!s.lastRefreshTime);
      const seed = sim.currentRefreshToken('company') ?? '';
      const [firstRequest] = refreshes(sim);
      const firstExpiry = sim.refreshTokenExpiresAt(seed) ?? 0;
      expect(firstRequest).toMatchObject({ status: 200, rotated: false });
      // The provider's epoch seconds, as status reports them (whole seconds: at most a second apart).
      const reported = Date.parse(first.refreshTokenExpiresAt ?? '');
      expect(Math.abs(reported - firstExpiry), 'status.refreshTokenExpiresAt vs the provider').toBeLessThan(
        1_500,
      );

      const second = await until(
        'keepalive',
        'a keep-alive refresh',
        (s) => s.lastRefreshTime !== first.lastRefreshTime,
        100_000,
      );
      const [, keepAlive, ...more] = refreshes(sim);
      const firstAt = firstRequest?.at ?? 0;
      const keepAliveAt = keepAlive?.at ?? 0;
      console.log(
        `concur keep-alive: refresh token expiry ${String(firstExpiry - firstAt)} ms after the first refresh, ` +
          `keep-alive refresh after ${String(keepAliveAt - firstAt)} ms, access token due after ` +
          `${String((2 / 3) * accessMs)} ms; requests ${JSON.stringify(sim.tokenRequests())}`,
      );
      expect(more, 'no refresh between the first and the keep-alive').toEqual([]);
      expect(keepAlive).toMatchObject({ status: 200, rotated: false });
      expect(keepAliveAt - firstAt, 'not before keepAlive').toBeGreaterThanOrEqual(59_000);
      expect(keepAliveAt, 'before the refresh token expired').toBeLessThan(firstExpiry);
      expect(keepAliveAt - firstAt, 'before the access token was due').toBeLessThan((2 / 3) * accessMs);
      expect(keepAliveAt - firstAt, 'before two thirds of the refresh token life').toBeLessThan(
        (2 / 3) * 120_000,
      );
      const extended = sim.refreshTokenExpiresAt(seed) ?? 0;
      expect(extended - keepAliveAt).toBe(120_000);
      expect(
        Math.abs(Date.parse(second.refreshTokenExpiresAt ?? '') - extended),
        'status follows the new refresh_expires_in',
      ).toBeLessThan(1_500);
      // The six months of the first answer pass; the chain lives on.
      await waitFor('the first refresh_expires_in to pass', () => Date.now() > firstExpiry + 500, 70_000);
      expect(sim.refreshTokenState(seed)).toBe('valid');
      expect(sim.stats().errorsByCode).toEqual({});
      expect(ready(await status('keepalive'))).toBe(true);
    }, 200_000);

    // Concur usually returns the refresh token unchanged, and may return a new one: both answers in
    // one chain, twelve of each.
    it('refreshes 32 times under time compression, 12 unchanged then 20 rotations, without an error', async ({
      expect,
    }) => {
      const sim = await simulator(FAST_SCALE);
      const watcher = new OutputTokenWatcher(admin, namespace, 'rotating-token', (token) => {
        secrets.push(token);
      });
      const startedAt = Date.now();
      await concurConnection(sim, 'rotating');
      const polled: ConnectionStatus[] = [];
      const poll = async (): Promise<number> => {
        await watcher.poll();
        polled.push(await status('rotating'));
        return refreshes(sim).length;
      };
      await waitFor('rotating: 12 refreshes', async () => (await poll()) >= 12, 90_000, 100);
      sim.configure({ rotateRefreshToken: true });
      const unchanged = refreshes(sim).length;
      // Twenty rotations, each a new refresh token (the bar for a provider row).
      await waitFor(
        'rotating: 20 more refreshes',
        async () => (await poll()) >= unchanged + 20,
        120_000,
        100,
      );
      const elapsed = Date.now() - startedAt;
      const requests = refreshes(sim);
      const changed = requests.filter((r) => r.rotated === true).length;
      // The last answer reaches the status a moment after the simulator counted it.
      const done = await waitFor(
        'rotating: the status counts every changed refresh token',
        async () => {
          const s = await status('rotating');
          return (s.rotations ?? 0) >= changed ? s : undefined;
        },
        10_000,
        100,
      );
      console.log(
        `concur rotation: ${String(requests.length)} refreshes (${String(changed)} with a new refresh token) in ` +
          `${String(elapsed)} ms at an hour = ${String(HOUR_MS * FAST_SCALE)} ms; status rotations ` +
          `${String(done.rotations)}; tokens seen in the output Secret ${String(watcher.seen.length)}, late ` +
          `${JSON.stringify(watcher.lateRotations())}; stats ${JSON.stringify(sim.stats())}`,
      );
      expect(sim.stats().errorsByCode, 'no error answer (a presented old token would be 108)').toEqual({});
      expect(requests.every((r) => r.status === 200 && r.geolocation === 'us')).toBe(true);
      expect(requests.filter((r) => r.rotated === false).length).toBeGreaterThanOrEqual(12);
      expect(changed).toBeGreaterThanOrEqual(20);
      // status.rotations counts new refresh tokens, not refreshes: only the changed answers.
      expect(done.rotations).toBeGreaterThanOrEqual(20);
      expect(done.rotations, 'unchanged answers are not rotations').toBeLessThan(requests.length);
      expect(done.rotations).toBeLessThanOrEqual(changed);
      expect(done.chainGeneration).toBe(1);
      const stored = await storedChain('rotating');
      secrets.push(stored.refreshToken ?? '');
      expect(stored.refreshToken === sim.currentRefreshToken(), 'the state holds the last token').toBe(true);
      expect(stored.geolocation).toBe(sim.geolocations.us);
      expect(failedRequests('rotating')).toEqual([]);
      expect(watcher.lateRotations()).toEqual([]);
      const health = healthOf(polled);
      expect(health.firstReady).toBeGreaterThanOrEqual(0);
      expect(health.notReadyAfter).toEqual([]);
      expect(health.degraded).toEqual([]);
    }, 240_000);

    it('follows the user to another geolocation mid-chain: code 16 retried there, stored, used next time', async ({
      expect,
    }) => {
      const sim = await simulator(SCALE);
      const watcher = new OutputTokenWatcher(admin, namespace, 'moving-token', (token) => {
        secrets.push(token);
      });
      await concurConnection(sim, 'moving', { output: { templates: [API_BASE] } });
      const statuses = await StatusRecorder.start(admin, namespace, 'moving');
      const bases = apiBases('moving');
      await waitFor(
        'moving: 3 refreshes at us',
        async () => {
          await watcher.poll();
          await bases.poll();
          return refreshes(sim).length >= 3;
        },
        60_000,
        100,
      );
      const basesBeforeMove = [...bases.values];
      sim.moveUser('emea');
      const movedAt = Date.now();
      await waitFor(
        'moving: 3 refreshes at emea',
        async () => {
          await watcher.poll();
          await bases.poll();
          return refreshes(sim).filter((r) => r.geolocation === 'emea').length >= 3;
        },
        60_000,
        100,
      );
      statuses.stop();
      await bases.poll();
      const requests = refreshes(sim);
      const afterMove = requests.filter((r) => r.at >= movedAt);
      const done = await status('moving');
      const degraded = statuses.with('Degraded', 'True').map((o) => condition(o.status, 'Degraded')?.reason);
      console.log(
        `concur geolocation: requests after the move ${JSON.stringify(afterMove.map((r) => ({ ...r, at: r.at - movedAt })))}; ` +
          `Degraded while moving ${JSON.stringify(degraded)}; api-base-url values ${JSON.stringify(bases.values)}; ` +
          `stats ${JSON.stringify(sim.stats())}`,
      );
      // Consumers follow the data center through {{geolocation}}: the old one until the move, then
      // the new one, and nothing else in between.
      expect(basesBeforeMove).toEqual([sim.geolocations.us]);
      expect(bases.values).toEqual([sim.geolocations.us, sim.geolocations.emea]);
      // One answer 16 from the old geolocation, then every request at the new one.
      expect(afterMove[0]).toMatchObject({ geolocation: 'us', status: 400, code: 16 });
      expect(afterMove.slice(1).every((r) => r.geolocation === 'emea' && r.status === 200)).toBe(true);
      expect(sim.stats().errorsByCode).toEqual({ 16: 1 });
      // Stored with the chain: the spec still names 'us', yet every later request went to 'emea'.
      expect((await storedChain('moving')).geolocation).toBe(sim.geolocations.emea);
      expect(done.tokenEndpoint).toBe(sim.tokenEndpoint('emea'));
      expect(done.chainGeneration).toBe(1);
      expect(sim.stats().passwordGrants).toBe(0);
      expect(statuses.with('ChainBroken', 'True')).toEqual([]);
      const health = healthOf(statuses.observed.map((o) => o.status));
      expect(health.firstReady).toBeGreaterThanOrEqual(0);
      expect(health.notReadyAfter).toEqual([]);
      // A code 16 consumed nothing: it is retried at the returned geolocation at once
      // (docs/architecture.md), so it is no failed refresh, neither in status nor as a Warning
      // Event, and the retry comes sooner than any request floor (1 s here; for Concur's hour-long
      // tokens in production a tenth of the lifetime, 6 minutes).
      const warnings = (await core.listNamespacedEvent({ namespace })).items.filter(
        (e) => e.involvedObject.name === 'moving' && e.type === 'Warning',
      );
      expect(degraded, 'Degraded while moving').toEqual([]);
      expect(warnings.map((e) => e.reason)).toEqual([]);
      expect((afterMove[1]?.at ?? 0) - (afterMove[0]?.at ?? 0), 'retried at once').toBeLessThan(1_000);
      // Consumers never held an expired token.
      expect(watcher.lateRotations()).toEqual([]);
    }, 120_000);

    it('108 (bad or expired refresh token) without recovery: ChainBroken, Ready=False, no further request', async ({
      expect,
    }) => {
      const sim = await simulator(SCALE);
      await concurConnection(sim, 'revoked');
      await until('revoked', 'Ready after a refresh', (s) => ready(s) && !!s.lastRefreshTime);
      expect(sim.revoke(), 'chains revoked').toBe(1);
      const broken = await until(
        'revoked',
        'ChainBroken',
        (s) => condition(s, 'ChainBroken')?.status === 'True',
        30_000,
      );
      const notReady = await until('revoked', 'Ready=False', (s) => !ready(s), 30_000);
      const requestsAtBreak = sim.tokenRequests().length;
      const after = await poke('revoked');
      console.log(
        `concur 108: ChainBroken ${JSON.stringify(condition(broken, 'ChainBroken'))}; Ready ` +
          `${JSON.stringify(condition(notReady, 'Ready'))}; decisions after a poke ${JSON.stringify(after)}`,
      );
      expect(condition(broken, 'ChainBroken')?.reason).toBe('RefreshTokenInvalid');
      expect(condition(notReady, 'Ready')?.reason).toBe('RefreshTokenInvalid');
      expect(condition(notReady, 'Ready')?.message).toContain('code 108');
      expect(sim.stats().errorsByCode).toEqual({ 108: 1 });
      expect(after).not.toContain('refresh');
      expect(sim.tokenRequests().length, 'no request after the break').toBe(requestsAtBreak);
    }, 90_000);

    it('108 with a direct recovery login: a new chain from the password grant, then refreshes again', async ({
      expect,
    }) => {
      const sim = await simulator(SCALE);
      await concurConnection(sim, 'recovered', {
        spec: directRecovery('concur-user', 3),
      });
      await until('recovered', 'Ready after a refresh', (s) => ready(s) && !!s.lastRefreshTime);
      const statuses = await StatusRecorder.start(admin, namespace, 'recovered');
      expect(sim.revoke()).toBe(1);
      await waitFor(
        'recovered: a refresh of the new chain',
        () => {
          const requests = sim.tokenRequests();
          return (
            requests.some((r) => r.grantType === 'password') && requests.at(-1)?.grantType === 'refresh_token'
          );
        },
        30_000,
      );
      const done = await until('recovered', 'Ready in chain 2', (s) => ready(s) && s.chainGeneration === 2);
      statuses.stop();
      const broken = statuses
        .with('ChainBroken', 'True')
        .map((o) => condition(o.status, 'ChainBroken')?.reason);
      console.log(
        `concur 108 recovery: ChainBroken reasons ${JSON.stringify(broken)}; requests ${JSON.stringify(sim.tokenRequests().map((r) => [r.grantType, r.status, r.code]))}`,
      );
      expect(broken.length).toBeGreaterThan(0);
      expect(new Set(broken)).toEqual(new Set(['RefreshTokenInvalid']));
      expect(sim.stats()).toMatchObject({ passwordGrants: 1, errorsByCode: { 108: 1 } });
      expect(condition(done, 'ChainBroken')?.status).toBe('False');
      const stored = await storedChain('recovered');
      secrets.push(stored.refreshToken ?? '');
      expect(stored.refreshToken === sim.currentRefreshToken(), 'the state holds the new chain').toBe(true);
      const reasons = await eventReasons(admin, namespace, 'recovered');
      expect(reasons).toContain('ChainBroken');
      expect(reasons).toContain('RecoveryLoginSucceeded');
    }, 90_000);

    // The recovery login meets the move: the refresh at the old data center answers 108 (a revoked
    // chain is refused before the user's data center is looked at), and the password grant there
    // code 16. The same login sends the password grant again at the geolocation named, at once.
    it('code 16 on the recovery login: the password grant retried at the geolocation named, stored with the new chain', async ({
      expect,
    }) => {
      const sim = await simulator(SCALE);
      await concurConnection(sim, 'relogin', {
        output: { templates: [API_BASE] },
        spec: directRecovery('concur-user', 1),
      });
      const bases = apiBases('relogin');
      await until('relogin', 'Ready after a refresh', (s) => ready(s) && !!s.lastRefreshTime);
      await bases.poll();
      const statuses = await StatusRecorder.start(admin, namespace, 'relogin');
      const before = sim.tokenRequests().length;
      sim.moveUser('emea');
      expect(sim.revoke()).toBe(1);
      await waitFor(
        'relogin: a refresh of the new chain at emea',
        async () => {
          await bases.poll();
          const after = sim.tokenRequests().slice(before);
          return after.some((r) => r.grantType === 'refresh_token' && r.geolocation === 'emea');
        },
        30_000,
        100,
      );
      const done = await until('relogin', 'Ready in chain 2', (s) => ready(s) && s.chainGeneration === 2);
      statuses.stop();
      await bases.poll();
      const after = sim.tokenRequests().slice(before);
      console.log(
        `concur 16 in the recovery login: requests ${JSON.stringify(after.map((r) => [r.grantType, r.geolocation, r.status, r.code]))}; ` +
          `login attempts ${JSON.stringify(done.loginAttempts)}; api-base-url values ${JSON.stringify(bases.values)}`,
      );
      // 108 at us breaks the chain, the password grant at us answers 16, the same login at emea
      // succeeds, and the new chain is refreshed at emea.
      expect(after.slice(0, 3).map((r) => [r.grantType, r.geolocation, r.status, r.code])).toEqual([
        ['refresh_token', 'us', 400, 108],
        ['password', 'us', 400, 16],
        ['password', 'emea', 200, undefined],
      ]);
      expect(after.slice(3).every((r) => r.geolocation === 'emea' && r.status === 200)).toBe(true);
      expect((after[2]?.at ?? 0) - (after[1]?.at ?? 0), 'retried at once').toBeLessThan(1_000);
      expect(sim.stats()).toMatchObject({ passwordGrants: 1, errorsByCode: { 108: 1, 16: 1 } });
      // One login, within a budget of one an hour: the move cost no second attempt.
      expect(done.loginAttempts?.length).toBe(1);
      const stored = await storedChain('relogin');
      secrets.push(stored.refreshToken ?? '');
      expect(stored.geolocation).toBe(sim.geolocations.emea);
      expect(stored.refreshToken === sim.currentRefreshToken(), 'the state holds the new chain').toBe(true);
      expect(done.tokenEndpoint).toBe(sim.tokenEndpoint('emea'));
      expect(bases.values).toEqual([sim.geolocations.us, sim.geolocations.emea]);
      const reasons = statuses.observed.flatMap((o) => (o.status.conditions ?? []).map((c) => c.reason));
      expect(reasons, 'the move is no login failure').not.toContain('LoginProviderError');
      expect(await eventReasons(admin, namespace, 'relogin')).toContain('RecoveryLoginSucceeded');
    }, 90_000);

    it('5 in the recovery login (wrong password): one attempt, LoginFailed, no lock-out', async ({
      expect,
    }) => {
      const sim = await simulator(SCALE);
      await concurConnection(sim, 'wrongpw', {
        spec: directRecovery('concur-user-wrong', 5),
      });
      await until('wrongpw', 'Ready after a refresh', (s) => ready(s) && !!s.lastRefreshTime);
      sim.revoke();
      const failed = await until(
        'wrongpw',
        'Ready=False LoginFailed',
        (s) => condition(s, 'Ready')?.reason === 'LoginFailed',
        30_000,
      );
      const requests = sim.tokenRequests().length;
      const after = await poke('wrongpw');
      console.log(
        `concur 5 in recovery: ${JSON.stringify(condition(failed, 'ChainBroken'))}; poke ${JSON.stringify(after)}`,
      );
      expect(condition(failed, 'ChainBroken')?.status).toBe('True');
      expect(sim.stats()).toMatchObject({ passwordGrants: 0, errorsByCode: { 5: 1, 108: 1 } });
      expect(after).not.toContain('recover');
      expect(sim.tokenRequests().length, 'no second login').toBe(requests);
    }, 90_000);

    // Configuration errors need a person: Ready=False with the reason at once, the next attempt a
    // minute away (the operator's configuration backoff, doubling to an hour), and nothing sent when
    // the operator looks at the connection again in between. 5, 10, 14 and 54 come from the password
    // grant (Concur's refresh sends no credentials and, by RFC 6749 §6, no scope).
    const configurationCases: {
      code: number;
      reason: string;
      name: string;
      behaviour?: ConcurSimulatorOptions;
      overrides?: ConnectionOverrides;
    }[] = [
      {
        code: 5,
        reason: 'InvalidCredentials',
        name: 'pw-wrong',
        overrides: {
          grant: {
            type: 'password',
            seedSecretRef: undefined,
            usernameRef: { name: 'concur-user-wrong' },
            passwordRef: { name: 'concur-user-wrong' },
          },
        },
      },
      {
        code: 10,
        reason: 'AccountDisabled',
        name: 'pw-disabled',
        behaviour: { accountState: 'disabled' },
        overrides: { grant: passwordGrant() },
      },
      {
        code: 14,
        reason: 'AccountLocked',
        name: 'pw-locked',
        behaviour: { accountState: 'locked' },
        overrides: { grant: passwordGrant() },
      },
      {
        code: 54,
        reason: 'InvalidScope',
        name: 'pw-scope',
        overrides: { grant: passwordGrant(), spec: { scopes: ['company.write'] } },
      },
      { code: 107, reason: 'RefreshNotAllowed', name: 'no-refresh', behaviour: { refreshAllowed: false } },
      // Not a Concur-only code: 64 is invalid_client (HTTP 401), read by the RFC 6749 rules.
      {
        code: 64,
        reason: 'InvalidClient',
        name: 'bad-client',
        overrides: { spec: { clientSecretRef: { name: 'client-wrong' } } },
      },
      // Code 16 names where the user lives; without it there is nowhere to go.
      {
        code: 16,
        reason: 'RelocatedWithoutGeolocation',
        name: 'nowhere',
        behaviour: { userGeolocation: 'emea', errorGeolocation: false },
      },
    ];

    it.for(configurationCases)(
      'code $code: Ready=False $reason, retried no sooner than a minute',
      { timeout: 60_000 },
      async ({ code, reason, name, behaviour, overrides }, { expect }) => {
        const sim = await simulator(SCALE, behaviour);
        await concurConnection(sim, name, overrides);
        const failed = await until(
          name,
          `Ready=False ${reason}`,
          (s) => condition(s, 'Ready')?.status === 'False' && !!s.lastFailureTime,
          30_000,
        );
        // The operator's floor between two requests of a connection (the harness's 1 s gap) passes
        // first: what holds the retry back from then on is the configuration backoff alone.
        const failedAt = Date.parse(failed.lastFailureTime ?? '');
        await waitFor('the request floor to pass', () => Date.now() > failedAt + 2_000, 10_000, 100);
        const after = await poke(name);
        const requests = sim.tokenRequests();
        console.log(
          `concur ${String(code)}: Ready ${JSON.stringify(condition(failed, 'Ready'))}; next attempt ` +
            `${String(Date.parse(failed.nextRefreshTime ?? '') - Date.parse(failed.lastFailureTime ?? ''))} ms after the failure; ` +
            `decisions after a poke ${JSON.stringify(after)}; requests ${JSON.stringify(requests.map((r) => [r.grantType, r.status, r.code]))}`,
        );
        expect(condition(failed, 'Ready')?.reason).toBe(reason);
        expect(condition(failed, 'Degraded')?.reason).toBe(reason);
        expect(requests.map((r) => r.code)).toEqual([code]);
        expect(
          Date.parse(failed.nextRefreshTime ?? '') - Date.parse(failed.lastFailureTime ?? ''),
        ).toBeGreaterThanOrEqual(59_000);
        expect(after).not.toContain('refresh');
        expect(sim.tokenRequests().length, 'nothing sent when the operator looked again').toBe(1);
      },
    );
  });

  it('leaks no secret value into logs, Events or status', async () => {
    const hits = await findLeaks(secrets, {
      lines: operator.lines,
      kubeConfig: admin,
      namespaces: [namespace],
    });
    expect(hits).toEqual([]);
    expect(operator.lines.length).toBeGreaterThan(100);
  });
});

function passwordGrant(): Record<string, unknown> {
  return {
    type: 'password',
    seedSecretRef: undefined,
    usernameRef: { name: 'concur-user' },
    passwordRef: { name: 'concur-user' },
  };
}
