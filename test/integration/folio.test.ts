// The folio preset end to end: the operator as a separate process against the real API server and
// the FOLIO simulator (test/simulators/folio.ts), FOLIO's lifetimes compressed by the simulator's
// timeScale. Each test has a simulator of its own (its own users, tokens, faults and counters) and a
// connection of its own; one operator watches this file's namespace, and the tests run side by side,
// each waiting on what it can observe.
//
// Time compression: at SCALE the 600 s access token lives 6 s. With --secret-propagation 1s the
// default margin (a third of the lifetime) refreshes 2 s before expiry, about every 4 s; the test
// harness's 1 s minimum request gap keeps about the production proportion.
//
// The counters that matter are the simulator's: logins (successful), failedLogins, refreshes,
// refusedRefreshes (422), reuses (a refresh token presented after it was used or revoked), logouts
// (one refresh token logged out), logoutsAll (every session of the user) and unrouted (Okapi's 404
// for a path no module serves).
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stateSecretName } from '../../src/controller/state-store.ts';
import {
  condition,
  type ConnectionStatus,
  createSecret,
  deleteConnection,
  eventReasons,
  healthOf,
  readSecretData,
  ready,
  waitFor,
} from '../harness/builders.ts';
import { connectionsOf } from '../harness/connections.ts';

import { createNamespace, GROUP, isApiError, PLURAL, VERSION } from '../harness/kube.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import type { OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';
import { startFolioSimulator, type FolioSimulator, type FolioSimulatorOptions } from '../simulators/folio.ts';

/** 600 s access tokens live 6 s; 7-day refresh tokens 100 minutes. */
const SCALE = 0.01;
const TENANT = 'diku';
const USERNAME = 'circ-sync';

/** What the tests read of status beyond builders.ts's ConnectionStatus. */
describe('folio preset against the FOLIO simulator', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let custom: k8s.CustomObjectsApi;
  let operatorNamespace: string;
  let namespace: string;
  let operator: OperatorProcess;
  const simulators: FolioSimulator[] = [];
  const password = canary('folio-password');
  const wrongPassword = canary('folio-wrong-password');
  /** Values that must never leave the operator: the leak scan at the end looks for each. */
  const secrets = [password, wrongPassword];

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    core = admin.makeApiClient(k8s.CoreV1Api);
    custom = admin.makeApiClient(k8s.CustomObjectsApi);
    const env = await scenario.operatorEnvironment();
    operatorNamespace = env.namespace;
    namespace = await createNamespace(admin, 'folio');
    await createSecret(admin, namespace, 'folio-login', { username: USERNAME, password });
    operator = scenario.startOperator({
      env,
      identity: 'folio',
      watchNamespace: namespace,
      args: ['--secret-propagation', '1s'],
    });
  });

  afterAll(async () => {
    await scenario.close();
    await Promise.all(simulators.map((s) => s.close()));
  });

  async function simulator(options: FolioSimulatorOptions = {}): Promise<FolioSimulator> {
    const sim = await startFolioSimulator({
      timeScale: SCALE,
      users: [{ username: USERNAME, password }],
      ...options,
    });
    simulators.push(sim);
    return sim;
  }

  /**
   * A folio connection as docs/providers/folio.md shows it: the password grant, and an output
   * Secret with what FOLIO clients send (x-okapi-token, the Cookie header form, the tenant).
   */
  async function folioConnection(
    sim: FolioSimulator,
    name: string,
    overrides: { tenant?: string; loginSecret?: string; revokeOnDelete?: boolean; baseURL?: string } = {},
  ): Promise<void> {
    const login = { name: overrides.loginSecret ?? 'folio-login' };
    await custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
      body: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'OAuthConnection',
        metadata: { name, namespace },
        spec: {
          provider: {
            preset: 'folio',
            baseURL: overrides.baseURL ?? sim.okapiUrl,
            tenant: overrides.tenant ?? TENANT,
          },
          clientID: 'folio-circulation-sync',
          grant: { type: 'password', usernameRef: login, passwordRef: login },
          ...(overrides.revokeOnDelete === true ? { revokeOnDelete: true } : {}),
          output: {
            secretName: `${name}-token`,
            keys: { accessToken: 'x-okapi-token', tokenType: '' },
            templates: [
              { key: 'cookie', template: 'folioAccessToken={{accessToken}}' },
              { key: 'x-okapi-tenant', template: TENANT },
            ],
          },
        },
      },
    });
  }

  const { status, until, records, failedRequests, poke, patchSpec } = connectionsOf(() => ({
    admin,
    namespace,
    lines: operator.lines,
  }));

  const failedLogins = (name: string): Record<string, unknown>[] =>
    records(name).filter((r) => r.msg === 'login failed');

  /** The refresh token the operator holds for a connection (for the leak scan); none once it is deleted. */
  async function storedRefreshToken(name: string): Promise<string | undefined> {
    const secret = await core
      .readNamespacedSecret({ name: stateSecretName(namespace, name), namespace: operatorNamespace })
      .catch((err: unknown) => {
        if (isApiError(err, 404)) return undefined;
        throw err;
      });
    if (secret === undefined) return undefined;
    const state = JSON.parse(Buffer.from(secret.data?.['state.json'] ?? '', 'base64').toString('utf8')) as {
      refreshToken?: string;
    };
    return state.refreshToken;
  }

  /** What an API call at the simulator answers with the output Secret's values, sent as header and as cookie. */
  async function apiStatuses(sim: FolioSimulator, data: Record<string, string>): Promise<number[]> {
    const forms = [
      { 'x-okapi-tenant': data['x-okapi-tenant'] ?? '', 'x-okapi-token': data['x-okapi-token'] ?? '' },
      { 'x-okapi-tenant': data['x-okapi-tenant'] ?? '', cookie: data.cookie ?? '' },
    ];
    return Promise.all(
      forms.map(async (headers) => {
        const res = await fetch(`${sim.usersEndpoint}?limit=1`, { headers });
        await res.arrayBuffer();
        return res.status;
      }),
    );
  }

  describe.concurrent('chains', () => {
    it('logs in once, then rotates 20 times: no error, no reuse, Ready throughout, every published token accepted', async ({
      expect,
    }) => {
      // An Okapi URL with a path: the login, the refresh and the cookie paths move under it.
      const sim = await simulator({ pathPrefix: '/okapi' });
      const startedAt = Date.now();
      await folioConnection(sim, 'rotating');
      const polled: ConnectionStatus[] = [];
      const published = new Map<string, number[]>();
      let lastData: Record<string, string> | undefined;
      const done = await waitFor(
        'rotating: 20 rotations',
        async () => {
          const s = await status('rotating');
          polled.push(s);
          const data = await readSecretData(admin, namespace, 'rotating-token');
          const token = data?.['x-okapi-token'];
          if (data !== undefined && token !== undefined && !published.has(token)) {
            secrets.push(token);
            lastData = data;
            published.set(token, await apiStatuses(sim, data));
          }
          return (s.rotations ?? 0) >= 20 ? s : undefined;
        },
        150_000,
        100,
      );
      const stats = sim.stats();
      console.log(
        `folio rotation: ${String(done.rotations)} rotations in ${String(Date.now() - startedAt)} ms at timeScale ${String(SCALE)}; ` +
          `${String(published.size)} tokens seen in the output Secret; stats ${JSON.stringify(stats)}`,
      );
      expect(stats).toMatchObject({
        logins: 1,
        failedLogins: 0,
        reuses: 0,
        refusedRefreshes: 0,
        parseFailures: 0,
      });
      expect(stats.refreshes).toBeGreaterThanOrEqual(20);
      expect(stats.refreshes, 'every refresh answer was stored').toBeLessThanOrEqual(
        (done.rotations ?? 0) + 1,
      );
      expect(done.chainGeneration).toBe(1);
      expect(failedRequests('rotating')).toEqual([]);
      const health = healthOf(polled);
      expect(health.firstReady).toBeGreaterThanOrEqual(0);
      expect(health.notReadyAfter).toEqual([]);
      expect(health.degraded).toEqual([]);
      expect(health.chainBroken).toEqual([]);
      // What FOLIO clients send: every published token was accepted as x-okapi-token and as cookie.
      expect(published.size).toBeGreaterThanOrEqual(10);
      expect([...published.values()].filter((codes) => codes.some((c) => c !== 200))).toEqual([]);
      const token = lastData?.['x-okapi-token'] ?? '';
      expect(lastData).toEqual({
        'x-okapi-token': token,
        cookie: `folioAccessToken=${token}`,
        'x-okapi-tenant': TENANT,
        expires_at: expect.any(String) as string,
      });
    }, 180_000);

    it("a reuse injected by the test: the operator's next refresh presents a used token, FOLIO revokes every token of the user, exactly one password login recovers", async ({
      expect,
    }) => {
      const sim = await simulator();
      await folioConnection(sim, 'reused');
      // Started first, so that the 2 s margin below covers only the Secret read and the test's refresh.
      const statuses = await StatusRecorder.start(admin, namespace, 'reused');
      // Just after a rotation, while the operator's next refresh is over 2 s away (a refresh comes
      // about every 4 s): the token read from its state Secret is one it has not presented yet.
      const before = await until(
        'reused',
        'Ready just after a rotation',
        (s) =>
          ready(s) && (s.rotations ?? 0) >= 1 && Date.parse(s.nextRefreshTime ?? '') - Date.now() > 2_000,
      );
      const held = await storedRefreshToken('reused');
      if (held === undefined) throw new Error('no refresh token in the state Secret');
      expect(sim.refreshTokenState(held), 'the operator holds a token not used yet').toBe('valid');
      const startedAt = Date.now();
      // Someone else presents the operator's refresh cookie first: to FOLIO a first use, answered 201.
      const stolen = await fetch(sim.refreshEndpoint, {
        method: 'POST',
        headers: { 'x-okapi-tenant': TENANT, cookie: `folioRefreshToken=${held}` },
      });
      await stolen.arrayBuffer();
      expect(stolen.status, 'the first use of the held token was the test').toBe(201);
      const stolenRefresh = /^folioRefreshToken=([^;]+)/.exec(
        stolen.headers.getSetCookie().find((c) => c.startsWith('folioRefreshToken=')) ?? '',
      )?.[1];
      if (stolenRefresh === undefined) throw new Error('no refresh cookie in the answer');
      secrets.push(stolenRefresh);
      expect((await status('reused')).rotations, 'the operator had not refreshed in between').toBe(
        before.rotations,
      );
      expect(sim.stats().reuses).toBe(0);

      const recovered = await until(
        'reused',
        'a new chain that rotated',
        (s) => (s.chainGeneration ?? 0) >= 2 && (s.rotations ?? 0) > (before.rotations ?? 0) && ready(s),
      );
      statuses.stop();
      const stats = sim.stats();
      console.log(
        `folio reuse: chain ${String(recovered.chainGeneration)} with ${String(recovered.rotations)} rotations ` +
          `${String(Date.now() - startedAt)} ms after the test's refresh; stats ${JSON.stringify(stats)}`,
      );
      // The operator's next refresh was the second use: FOLIO refused it and revoked every refresh
      // token of the user, the one it had just given the test included.
      expect(stats).toMatchObject({ reuses: 1, refusedRefreshes: 1, revocations: 1 });
      expect(sim.refreshTokenState(held)).toBe('used');
      expect(sim.refreshTokenState(stolenRefresh), 'the reuse revoked the successor issued to the test').toBe(
        'revoked',
      );
      expect(stats.logins, 'the first login and exactly one recovery login').toBe(2);
      expect(stats.failedLogins).toBe(0);
      const failed = failedRequests('reused');
      expect(failed.map((r) => [r.code, r.reason, r.httpStatus])).toEqual([
        ['chain_broken', 'RefreshTokenRejected', 422],
      ]);
      const broken = statuses.with('ChainBroken', 'True').map((o) => condition(o.status, 'ChainBroken'));
      expect(broken.length, 'a status with ChainBroken=True').toBeGreaterThan(0);
      expect(new Set(broken.map((c) => c?.reason))).toEqual(new Set(['RefreshTokenRejected']));
      expect(statuses.with('Recovering', 'True').length).toBeGreaterThan(0);
      // FOLIO's access tokens outlive a revocation: the output Secret held a valid token throughout
      // (from the first Ready on: the recorder started with the connection).
      const health = healthOf(statuses.observed.map((o) => o.status));
      expect(health.firstReady).toBeGreaterThanOrEqual(0);
      expect(health.notReadyAfter).toEqual([]);
      expect(condition(recovered, 'ChainBroken')?.status).toBe('False');
      expect(recovered.chainGeneration).toBe(2);
      expect(recovered.loginAttempts?.length).toBe(1);
      expect(recovered.lastRecoveryTime).toBeDefined();
      // The new chain is the only one the user has left, and it is the operator's.
      expect(sim.validRefreshTokens(USERNAME)).toEqual([await storedRefreshToken('reused')]);
      const reasons = await eventReasons(admin, namespace, 'reused');
      expect(reasons).toEqual(expect.arrayContaining(['LoggedIn', 'ChainBroken', 'RecoveryLoginSucceeded']));
    }, 120_000);

    it('a chain that keeps breaking: 4 restarts in an hour, then LoginAttemptsExhausted and no fifth login', async ({
      expect,
    }) => {
      const sim = await simulator();
      await folioConnection(sim, 'breaking');
      await until('breaking', 'Ready after a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
      // Each revocation is noticed at the next refresh (a 422) and answered by one restart login.
      for (let generation = 2; generation <= 5; generation++) {
        expect(sim.revokeAll(USERNAME), 'live refresh tokens revoked').toBe(1);
        await until('breaking', `chain ${String(generation)}`, (s) => (s.chainGeneration ?? 0) >= generation);
      }
      expect(sim.revokeAll(USERNAME), 'live refresh tokens revoked').toBe(1);
      const exhausted = await until(
        'breaking',
        'ChainBroken LoginAttemptsExhausted',
        (s) => condition(s, 'ChainBroken')?.reason === 'LoginAttemptsExhausted',
      );
      // Looking again (an event) does not log in either.
      await poke('breaking');
      const stats = sim.stats();
      console.log(
        `folio breaking: ${JSON.stringify(condition(exhausted, 'ChainBroken'))}; stats ${JSON.stringify(stats)}`,
      );
      expect(stats.logins, 'the first login and 4 restarts').toBe(5);
      expect(exhausted.loginAttempts?.length).toBe(4);
      expect(exhausted.chainGeneration).toBe(5);
      expect(Date.parse(exhausted.nextRefreshTime ?? '') - Date.now()).toBeGreaterThan(30 * 60_000);
    }, 120_000);

    it('a refresh answer lost after FOLIO rotated: never presented again, the chain restarted by one login', async ({
      expect,
    }) => {
      const sim = await simulator();
      await folioConnection(sim, 'lost');
      await until('lost', 'Ready after a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
      const statuses = await StatusRecorder.start(admin, namespace, 'lost');
      sim.faults.dropNext(1, '/authn/refresh');
      const recovered = await until(
        'lost',
        'a new chain that rotated',
        (s) => (s.chainGeneration ?? 0) >= 2 && (s.rotations ?? 0) >= 1 && ready(s),
      );
      statuses.stop();
      const stats = sim.stats();
      console.log(`folio lost answer: stats ${JSON.stringify(stats)}`);
      // A second use of the consumed token would have revoked every refresh token of the user.
      expect(stats).toMatchObject({ reuses: 0, refusedRefreshes: 0, revocations: 0, logins: 2 });
      expect(failedRequests('lost').map((r) => [r.code, r.reason])).toEqual([['in_doubt', 'ResponseLost']]);
      const broken = statuses.with('ChainBroken', 'True').map((o) => condition(o.status, 'ChainBroken'));
      expect(broken.map((c) => c?.reason)).toContain('RefreshResponseLost');
      expect(recovered.chainGeneration).toBe(2);
      expect(recovered.loginAttempts?.length).toBe(1);
      // The access token was valid throughout: Ready stayed True.
      expect(statuses.observed.filter((o) => !ready(o.status))).toEqual([]);
    }, 120_000);

    it('a gateway outage (503) is transient: Degraded ProviderUnavailable, Ready kept, the chain intact', async ({
      expect,
    }) => {
      // 30-minute access tokens (18 s): the retry 2 s after the failure is well before expiry.
      const sim = await simulator({ tenants: { [TENANT]: { accessTokenSeconds: 1800 } } });
      await folioConnection(sim, 'outage');
      await until('outage', 'Ready', ready);
      const statuses = await StatusRecorder.start(admin, namespace, 'outage');
      sim.faults.failNext(1, 503, '/authn/refresh');
      const after = await until(
        'outage',
        'a rotation after the outage',
        (s) => (s.rotations ?? 0) >= 1 && ready(s),
      );
      statuses.stop();
      const stats = sim.stats();
      console.log(`folio outage: stats ${JSON.stringify(stats)}`);
      const degraded = statuses.with('Degraded', 'True').map((o) => condition(o.status, 'Degraded'));
      expect(degraded.map((c) => c?.reason)).toContain('ProviderUnavailable');
      expect(failedRequests('outage').map((r) => [r.code, r.reason, r.httpStatus])).toEqual([
        ['transient', 'ProviderUnavailable', 503],
      ]);
      expect(statuses.observed.filter((o) => !ready(o.status))).toEqual([]);
      expect(statuses.with('ChainBroken', 'True')).toEqual([]);
      expect(after.chainGeneration).toBe(1);
      expect(stats).toMatchObject({ logins: 1, reuses: 0, refusedRefreshes: 0 });
      expect(stats.refreshes).toBeGreaterThanOrEqual(1);
    }, 120_000);

    it('a wrong password: one attempt, Ready=False LoginFailed, nothing more until the password Secret changes', async ({
      expect,
    }) => {
      const sim = await simulator();
      await createSecret(admin, namespace, 'wrongpw-login', { username: USERNAME, password: wrongPassword });
      await folioConnection(sim, 'wrongpw', { loginSecret: 'wrongpw-login' });
      const failed = await until('wrongpw', 'Ready=False', (s) => condition(s, 'Ready')?.status === 'False');
      expect(condition(failed, 'Ready')?.reason).toBe('LoginFailed');
      expect(condition(failed, 'Ready')?.message).toContain('HTTP 422');
      expect(sim.stats()).toMatchObject({ logins: 0, failedLogins: 1 });
      expect(failedLogins('wrongpw').map((r) => [r.code, r.reason, r.httpStatus])).toEqual([
        ['configuration', 'InvalidCredentials', 422],
      ]);
      // The operator looks again (its requeue, forced by a poke) and stays inside its backoff.
      const poked = await poke('wrongpw');
      expect(new Set(poked)).toEqual(new Set(['back-off']));
      // A spec change lifts the backoff, not the block: the operator decides again and sends nothing.
      await patchSpec('wrongpw', { refresh: { keepAlive: '1h' } });
      const decided = await until(
        'wrongpw',
        'a status for the new generation',
        (s) => s.observedGeneration === 2 && (s.failedAttempts ?? 0) >= 2,
      );
      expect(condition(decided, 'Ready')?.reason).toBe('LoginFailed');
      expect(sim.stats()).toMatchObject({ logins: 0, failedLogins: 1 });
      expect(sim.isActive(USERNAME), 'the account is not locked').toBe(true);
      // The right password in the Secret: one login at the next look.
      await core.replaceNamespacedSecret({
        name: 'wrongpw-login',
        namespace,
        body: {
          metadata: { name: 'wrongpw-login', namespace },
          type: 'Opaque',
          stringData: { username: USERNAME, password },
        },
      });
      const afterFix = await poke('wrongpw');
      const fixed = await until('wrongpw', 'Ready', ready);
      console.log(
        `folio wrong password: ${JSON.stringify(condition(failed, 'Ready'))}; decisions after a poke ${JSON.stringify(poked)}, ` +
          `after the fix ${JSON.stringify(afterFix)}; stats ${JSON.stringify(sim.stats())}`,
      );
      expect(afterFix).toContain('start-chain');
      expect(fixed.chainGeneration).toBe(1);
      expect(sim.stats()).toMatchObject({ logins: 1, failedLogins: 1 });
    }, 120_000);

    it("revokeOnDelete: the finalizer logs the chain's refresh token out at FOLIO, once, and no other session of the user, even after its login Secret was deleted", async ({
      expect,
    }) => {
      const sim = await simulator();
      await createSecret(admin, namespace, 'logout-login', { username: USERNAME, password });
      await folioConnection(sim, 'logout', { revokeOnDelete: true, loginSecret: 'logout-login' });
      await until('logout', 'Ready after a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
      // A person in FOLIO's web client with the same account: the logout must leave their session.
      const person = await fetch(sim.loginEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-okapi-tenant': TENANT },
        body: JSON.stringify({ username: USERNAME, password }),
      });
      await person.arrayBuffer();
      const personToken = /^folioRefreshToken=([^;]+)/.exec(
        person.headers.getSetCookie().find((c) => c.startsWith('folioRefreshToken=')) ?? '',
      )?.[1];
      expect(personToken).toBeDefined();
      // As `kubectl delete -f` of the guide's manifest, or a namespace deletion, may do: the Secret first.
      await core.deleteNamespacedSecret({ name: 'logout-login', namespace });
      const deletedAt = Date.now();
      await deleteConnection(admin, namespace, 'logout');
      const goneAfterMs = Date.now() - deletedAt;
      const stats = sim.stats();
      const loggedOut = sim.refreshTokensIn(USERNAME, 'logged-out');
      secrets.push(...loggedOut);
      console.log(
        `folio logout: connection gone ${String(goneAfterMs)} ms after the delete; stats ${JSON.stringify(stats)}`,
      );
      expect(stats).toMatchObject({
        logouts: 1,
        logoutsAll: 0,
        refusedLogouts: 0,
        revocations: 0,
        reuses: 0,
      });
      // The chain's last refresh token, and only it: the person's session is still usable.
      expect(loggedOut).toHaveLength(1);
      expect(sim.validRefreshTokens(USERNAME)).toEqual([personToken]);
      const events = await waitFor('the Revoked Event', async () => {
        const reasons = await eventReasons(admin, namespace, 'logout');
        return reasons.includes('Revoked') ? reasons : undefined;
      });
      expect(events).toContain('LoggedIn');
      expect(
        records('logout').filter((r) => r.msg === 'revocation on delete failed; deleting anyway'),
      ).toEqual([]);
      // Presented directly, the logged-out token refreshes no more (and FOLIO counts the try as a reuse).
      const direct = await fetch(sim.refreshEndpoint, {
        method: 'POST',
        headers: { 'x-okapi-tenant': TENANT, cookie: `folioRefreshToken=${loggedOut[0] ?? ''}` },
      });
      expect(direct.status).toBe(422);
      expect(await direct.text()).toContain('token.refresh.unprocessable');
    }, 120_000);

    it('a tenant the gateway does not know: Ready=False UnknownTenant, no login attempt', async ({
      expect,
    }) => {
      const sim = await simulator();
      await folioConnection(sim, 'tenant', { tenant: 'nosuch' });
      const failed = await until('tenant', 'Ready=False', (s) => condition(s, 'Ready')?.status === 'False');
      expect(condition(failed, 'Ready')?.reason).toBe('UnknownTenant');
      expect(condition(failed, 'Degraded')?.reason).toBe('UnknownTenant');
      expect(failedLogins('tenant').map((r) => [r.code, r.reason, r.httpStatus])).toEqual([
        ['configuration', 'UnknownTenant', 400],
      ]);
      expect(sim.stats()).toMatchObject({ logins: 0, failedLogins: 0 });
    });

    it('a base URL without the Okapi path: Ready=False EndpointNotFound, one request, no retry within a minute; the fixed URL logs in', async ({
      expect,
    }) => {
      // Okapi serves at /okapi; the connection names only the host, so the login meets Okapi's 404.
      const sim = await simulator({ pathPrefix: '/okapi' });
      await folioConnection(sim, 'nopath', { baseURL: sim.origin });
      const failed = await until('nopath', 'Ready=False', (s) => condition(s, 'Ready')?.status === 'False');
      expect(condition(failed, 'Ready')?.reason).toBe('EndpointNotFound');
      expect(condition(failed, 'Ready')?.message).toContain('HTTP 404');
      expect(condition(failed, 'Degraded')?.reason).toBe('EndpointNotFound');
      expect(failedLogins('nopath').map((r) => [r.code, r.reason, r.httpStatus])).toEqual([
        ['configuration', 'EndpointNotFound', 404],
      ]);
      // A configuration error waits for a person: the next try a minute away (1 min doubling to 1 h).
      const retryInMs = Date.parse(failed.nextRefreshTime ?? '') - Date.now();
      expect(retryInMs).toBeGreaterThan(50_000);
      const events = await waitFor('the EndpointNotFound Event', async () => {
        const reasons = await eventReasons(admin, namespace, 'nopath');
        return reasons.includes('EndpointNotFound') ? reasons : undefined;
      });
      // Looking again (an event) sends nothing more.
      const poked = await poke('nopath');
      expect(sim.stats()).toMatchObject({ unrouted: 1, logins: 0, failedLogins: 0 });
      // The fix the status asks for: the Okapi URL with its path. A spec change is looked at at once.
      await patchSpec('nopath', { provider: { preset: 'folio', baseURL: sim.okapiUrl, tenant: TENANT } });
      const fixed = await until('nopath', 'Ready', ready);
      console.log(
        `folio endpoint not found: ${JSON.stringify(condition(failed, 'Ready'))}; next try in ${String(retryInMs)} ms; ` +
          `events ${JSON.stringify(events)}; decisions after a poke ${JSON.stringify(poked)}; stats ${JSON.stringify(sim.stats())}`,
      );
      expect(new Set(poked)).toEqual(new Set(['back-off']));
      expect(fixed.chainGeneration).toBe(1);
      expect(sim.stats()).toMatchObject({ unrouted: 1, logins: 1, failedLogins: 0 });
    });
  });

  it('leaks no secret value into logs, Events or status', async () => {
    for (const name of [
      'rotating',
      'reused',
      'breaking',
      'lost',
      'outage',
      'wrongpw',
      'tenant',
      'nopath',
      'logout',
    ]) {
      const token = await storedRefreshToken(name);
      if (token !== undefined) secrets.push(token);
    }
    for (const sim of simulators) secrets.push(...sim.validRefreshTokens(USERNAME));
    const hits = await findLeaks(secrets, {
      lines: operator.lines,
      kubeConfig: admin,
      namespaces: [namespace],
    });
    expect(hits).toEqual([]);
    expect(operator.lines.length).toBeGreaterThan(100);
    console.log(
      `folio leak scan: ${String(secrets.length)} secret values, ${String(operator.lines.length)} log lines`,
    );
  });
});
