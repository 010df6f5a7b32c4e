// The keycloak preset end to end: the operator as a separate process against the real API server and a
// real Keycloak (test/harness/keycloak.ts), started once for the file. Every case gets a realm of its own
// (created through the Admin REST API) with the lifetimes and session limits it needs, so the cases
// run side by side: most of their time is spent waiting for Keycloak's clocks.
//
// Time compression: Keycloak cannot be told to run fast, so its durations are made short instead:
// access tokens of 12 to 20 s, and in the keep-alive case SSO Session Idle and Offline Session Idle
// of 70 s (a keepAlive cannot be shorter than 1m). What Keycloak saw is read back from its event
// store (REFRESH_TOKEN, REFRESH_TOKEN_ERROR with Keycloak's own description, LOGIN, CODE_TO_TOKEN):
// that is how the tests count requests and prove that no token was presented twice.
//
// How each of Keycloak's answers is provoked (TokenManager.validateToken and validateTokenReuse in
// https://github.com/keycloak/keycloak, checked against this server; Revoke Refresh Token on, Refresh
// Token Max Reuse 0):
// - "Maximum allowed refresh token reuse exceeded": the chain's newest token was used once already
//   (here by the test, as a second client would).
// - "Stale token": the token is older than the one used last (the test moved the chain on twice).
// - "Session doesn't have required client": either answer above detaches the client session, so a
//   replay by someone else kills the chain's newest token too.
// - "Token is not active": the refresh token's exp (SSO Session Idle after its issue) has passed.
// - "Session not active": the user session ended (an administrator logged the user out).
// - "Offline session not active": an administrator shortened Offline Session Idle below the session's
//   idle time; "Offline user session not found": the offline session expired and is gone.
// - "Invalid refresh token": not a Keycloak token at all.
import * as k8s from '@kubernetes/client-node';
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, inject, it, type ExpectStatic } from 'vitest';
import { stateSecretName } from '../../src/controller/state-store.ts';
import {
  condition,
  connection,
  type ConnectionStatus,
  createConnection,
  createSecret,
  eventReasons,
  readSecretData,
  ready,
  waitFor,
} from '../harness/builders.ts';
import { connectionsOf } from '../harness/connections.ts';
import { ensureKeycloakDistribution, startKeycloak, type KeycloakServer } from '../harness/keycloak.ts';
import {
  TOKEN_EVENTS,
  adminRequest,
  base32Encode,
  buildRealm,
  createRealm,
  realmEvents,
  realmUser,
  updateRealm,
  userId,
  type KeycloakEvent,
} from '../harness/keycloak-realm.ts';
import { GROUP, PLURAL, VERSION } from '../harness/kube.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';

interface TestRealm {
  name: string;
  issuer: string;
  username: string;
  password: string;
  /** Base32, as an authenticator app is given it; undefined: the password alone logs in. */
  totpSecret?: string;
  /** The Secret with username, password and totp for spec.recovery.login. */
  credentials: string;
}

interface Seed {
  refreshToken: string;
  /** Keycloak's session id (session_state): its events carry it. */
  session: string;
}

/** SSO Session Idle and Offline Session Idle of the keep-alive case: above the CRD's 1m keepAlive floor. */
const IDLE_S = 70;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomText(length: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(length)), (b) => ALPHANUMERIC[b % 62]).join('');
}

/** The claims of a JWT (Keycloak's refresh tokens are JWTs); the test reads typ and iat. */
function claims(jwt: string): { typ?: string; iat?: number } {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
    typ?: string;
    iat?: number;
  };
}

const broken = (s: ConnectionStatus): boolean => condition(s, 'ChainBroken')?.status === 'True';

describe('keycloak preset against a real Keycloak', () => {
  let kc: KeycloakServer;
  let scenario: Scenario | undefined;
  let running: KeycloakServer | undefined;
  let admin: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let env: OperatorEnvironment;
  let namespace: string;
  let operator: OperatorProcess;
  /** Canary values for the leak scan: passwords, TOTP secrets, the client secret, refresh tokens. */
  const secrets: string[] = [];
  /** Chains that ended without recovery: the number of Keycloak events each had when it ended. */
  const ended: { label: string; events: () => Promise<number>; count: number }[] = [];

  beforeAll(async () => {
    await ensureKeycloakDistribution();
  }, 900_000);

  beforeAll(async () => {
    kc = await startKeycloak();
    running = kc;
    secrets.push(kc.clientSecret);
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    core = admin.makeApiClient(k8s.CoreV1Api);
    env = await scenario.operatorEnvironment();
    namespace = await scenario.clientNamespace('kc-chain', kc.clientSecret);
    operator = scenario.startOperator({
      env,
      identity: 'kc-chain',
      watchNamespace: namespace,
      // Tokens here live seconds: the default refresh margin (a third) applies, not the 90 s floor.
      args: ['--secret-propagation', '1s'],
    });
  }, 300_000);

  afterAll(async () => {
    await scenario?.close();
    await running?.close();
  });

  /**
   * A realm of its own: one user (password a canary; a TOTP credential if `otp`), the client
   * 'operator', Revoke Refresh Token on with max reuse 0 (buildRealm), token events stored.
   */
  async function realm(name: string, settings: Record<string, unknown>, otp = false): Promise<TestRealm> {
    const username = `user-${name}`;
    const password = canary(`${name}-password`);
    const totpRaw = otp ? randomText(20) : undefined;
    const issuer = await createRealm(
      kc,
      buildRealm({
        realm: name,
        overrides: {
          ...TOKEN_EVENTS,
          ...settings,
          users: [
            realmUser({
              username,
              password,
              realmRoles: ['offline_access'],
              ...(totpRaw !== undefined ? { totpRawSecret: totpRaw } : {}),
            }),
          ],
        },
      }),
    );
    const totpSecret = totpRaw !== undefined ? base32Encode(new TextEncoder().encode(totpRaw)) : undefined;
    secrets.push(password, ...(totpSecret !== undefined ? [totpSecret] : []));
    const credentials = `${name}-user`;
    await createSecret(admin, namespace, credentials, {
      username,
      password,
      ...(totpSecret !== undefined ? { totp: totpSecret } : {}),
    });
    return {
      name,
      issuer,
      username,
      password,
      credentials,
      ...(totpSecret !== undefined ? { totpSecret } : {}),
    };
  }

  async function token(
    r: TestRealm,
    params: Record<string, string>,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${r.issuer}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({ client_id: kc.clientId, client_secret: kc.clientSecret, ...params }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  /**
   * A TOTP code the operator never sends: the previous step's, which Keycloak's look-around window
   * (1 step) still accepts. The operator's generator only hands out current and later steps, so the
   * test's login cannot spend a code the operator's recovery login will need.
   */
  async function previousStepCode(secret: string): Promise<string> {
    // With under 3 s left in the step, the previous step would be two behind when Keycloak checks.
    await waitFor('3 s left in the TOTP step', () => 30_000 - (Date.now() % 30_000) >= 3_000, 5_000, 100);
    return generate({ secret, epoch: Math.floor(Date.now() / 1000) - 30 });
  }

  /** A refresh token from a password login (with the previous step's code where the user has TOTP). */
  async function seed(r: TestRealm, scope: string): Promise<Seed> {
    const otp: Record<string, string> =
      r.totpSecret !== undefined ? { otp: await previousStepCode(r.totpSecret) } : {};
    const answer = await token(r, {
      grant_type: 'password',
      username: r.username,
      password: r.password,
      scope,
      ...otp,
    });
    if (answer.status !== 200) throw new Error(`seed login failed: ${JSON.stringify(answer.body)}`);
    const refreshToken = String(answer.body.refresh_token);
    secrets.push(refreshToken);
    return { refreshToken, session: String(answer.body.session_state) };
  }

  /** A keycloak-preset connection `name` on the realm, seeded unless `seedToken` is undefined. */
  async function keycloakConnection(
    name: string,
    r: TestRealm,
    seedToken: string | undefined,
    spec: { scopes: string[]; refresh?: Record<string, unknown>; flow?: 'code' | 'direct' },
  ): Promise<void> {
    if (seedToken !== undefined)
      await createSecret(admin, namespace, `${name}-seed`, { refresh_token: seedToken });
    const recovery =
      spec.flow === undefined
        ? {}
        : {
            recovery: {
              login: {
                flow: spec.flow,
                redirectURI: kc.redirectURI,
                usernameRef: { name: r.credentials },
                passwordRef: { name: r.credentials },
                totpSecretRef: { name: r.credentials },
                maxAttemptsPerHour: 3,
              },
            },
          };
    await createConnection(
      admin,
      connection(namespace, name, r.issuer, {
        provider: { preset: 'keycloak' },
        ...(seedToken === undefined ? { grant: { seedSecretRef: undefined } } : {}),
        ...(spec.refresh !== undefined ? { refresh: spec.refresh } : {}),
        spec: { scopes: spec.scopes, ...recovery },
      }),
    );
  }

  const { status, until } = connectionsOf(() => ({ admin, namespace }), 200);

  /** The operator's state Secret for the connection: the chain's newest refresh token and its counts. */
  async function chainState(
    name: string,
  ): Promise<{ refreshToken: string; rotations: number; chainGeneration: number }> {
    const state = await core.readNamespacedSecret({
      name: stateSecretName(namespace, name),
      namespace: env.namespace,
    });
    const json = JSON.parse(Buffer.from(state.data?.['state.json'] ?? '', 'base64').toString('utf8')) as {
      refreshToken?: string;
      rotations?: number;
      chainGeneration?: number;
    };
    return {
      refreshToken: json.refreshToken ?? '',
      rotations: json.rotations ?? 0,
      chainGeneration: json.chainGeneration ?? 0,
    };
  }

  /** Whether Keycloak accepts the access token in the connection's output Secret (userinfo checks the session). */
  async function userinfoStatus(r: TestRealm, name: string): Promise<number> {
    const data = await readSecretData(admin, namespace, `${name}-token`);
    const response = await fetch(`${r.issuer}/protocol/openid-connect/userinfo`, {
      headers: { authorization: `Bearer ${data?.access_token ?? ''}` },
    });
    await response.arrayBuffer();
    return response.status;
  }

  async function events(r: TestRealm, type: string, session?: string): Promise<KeycloakEvent[]> {
    return (await realmEvents(kc, r.name)).filter(
      (e) => e.type === type && (session === undefined || e.sessionId === session),
    );
  }

  /** Operator log lines about this connection that report a failed token request. */
  const failedRequests = (name: string): string[] =>
    operator.lines.filter((l) => l.includes(`"${name}"`) && l.includes('token request failed'));

  async function suspend(name: string): Promise<ConnectionStatus> {
    const custom = admin.makeApiClient(k8s.CustomObjectsApi);
    const patched = (await custom.patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace, plural: PLURAL, name, body: { spec: { suspend: true } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    )) as { metadata: { generation: number } };
    return until(
      name,
      'suspended',
      (s) =>
        condition(s, 'Degraded')?.reason === 'Suspended' &&
        s.observedGeneration === patched.metadata.generation,
    );
  }

  /**
   * A chain that broke without recovery configured: ChainBroken=True at once, Ready=False once the
   * last access token expired. Records `count` (Keycloak's events for the chain) when given, which the
   * last test reads again: nothing more may be sent for a chain that ended.
   */
  async function endsWithoutRecovery(
    name: string,
    count?: () => Promise<number>,
    timeoutMs = 90_000,
  ): Promise<{ broken: ConnectionStatus; notReady: ConnectionStatus }> {
    const brokenStatus = await until(name, 'ChainBroken', broken, timeoutMs);
    const notReady = await until(name, 'Ready=False', (s) => !ready(s), timeoutMs);
    if (count !== undefined) ended.push({ label: name, events: count, count: await count() });
    return { broken: brokenStatus, notReady };
  }

  /** An ended chain's ChainBroken and Ready name `reason`, and ChainBroken quotes Keycloak's `description`. */
  function expectEnded(
    check: ExpectStatic,
    end: { broken: ConnectionStatus; notReady: ConnectionStatus },
    reason: string,
    description: string,
  ): void {
    check(condition(end.broken, 'ChainBroken')?.reason).toBe(reason);
    check(condition(end.notReady, 'Ready')?.reason).toBe(reason);
    check(condition(end.broken, 'ChainBroken')?.message).toContain(description);
  }

  /**
   * The ChainBroken=True conditions a recorder saw: at least one, every one with `reason`, the first
   * quoting Keycloak's `description`.
   */
  function expectBrokenWith(
    check: ExpectStatic,
    statuses: StatusRecorder,
    reason: string,
    description: string,
  ): ReturnType<typeof condition>[] {
    const brokenConditions = statuses
      .with('ChainBroken', 'True')
      .map((o) => condition(o.status, 'ChainBroken'));
    check(brokenConditions.length).toBeGreaterThan(0);
    check(brokenConditions.map((c) => c?.reason)).toEqual(brokenConditions.map(() => reason));
    check(brokenConditions[0]?.message).toContain(description);
    return brokenConditions;
  }

  /** A counter of the realm's events of `types`. */
  const counter =
    (r: TestRealm, ...types: string[]) =>
    async (): Promise<number> =>
      (await realmEvents(kc, r.name)).filter((e) => types.includes(e.type)).length;

  describe.concurrent('cases, side by side', () => {
    // The Domino case: access tokens that live 140 s while the sessions die after 70 s idle. Planned
    // by the access token alone, the refresh would come a third of its lifetime before expiry, about
    // 90 s in: after Keycloak let the refresh token expire (online) or dropped the offline session. A
    // keepAlive of 1m (the CRD's minimum) refreshes every 60 s, inside the idle limit. Without one (the
    // preset's 10 min is longer than this realm's idle limit), the online chain still lives because
    // Keycloak states its refresh token's expiry (refresh_expires_in, the idle time) and the schedule
    // refreshes at two thirds of it; an offline token states none (refresh_expires_in 0), so only
    // keep-alive saves it. The longest case of the file: it starts first.
    it('keep-alive outruns SSO Session Idle and Offline Session Idle where access tokens outlive them; refresh_expires_in alone keeps the online chain; the offline chain without keep-alive dies', async ({
      expect,
    }) => {
      const r = await realm('idle', {
        accessTokenLifespan: 2 * IDLE_S,
        ssoSessionIdleTimeout: IDLE_S,
        offlineSessionIdleTimeout: IDLE_S,
      });
      const cases = [
        { name: 'idle-online', scopes: ['openid'], keepAlive: true, kept: true },
        { name: 'idle-offline', scopes: ['openid', 'offline_access'], keepAlive: true, kept: true },
        { name: 'expiry-online', scopes: ['openid'], keepAlive: false, kept: true },
        { name: 'lapsed-offline', scopes: ['openid', 'offline_access'], keepAlive: false, kept: false },
      ];
      const seeds = new Map<string, Seed>();
      for (const c of cases) seeds.set(c.name, await seed(r, c.scopes.join(' ')));
      const seededAt = Date.now();
      const recorders = await Promise.all(
        cases.filter((c) => c.kept).map((c) => StatusRecorder.start(admin, namespace, c.name)),
      );
      for (const c of cases) {
        await keycloakConnection(c.name, r, seeds.get(c.name)?.refreshToken, {
          scopes: c.scopes,
          ...(c.keepAlive ? { refresh: { keepAlive: '1m' } } : {}),
        });
      }
      // Keycloak's answer to the late refresh: the offline session is gone ("Offline user session
      // not found").
      const offlineLapsed = (await endsWithoutRecovery('lapsed-offline', undefined, 240_000)).notReady;
      // The kept chains send no REFRESH_TOKEN_ERROR, so the realm's count is the lapsed chain's.
      const errors = counter(r, 'REFRESH_TOKEN_ERROR');
      ended.push({ label: 'lapsed-offline', events: errors, count: await errors() });
      expect(condition(offlineLapsed, 'ChainBroken')?.reason).toBe('SessionExpired');
      expect(condition(offlineLapsed, 'Ready')?.reason).toBe('SessionExpired');
      expect(condition(offlineLapsed, 'ChainBroken')?.message).toContain('Offline user session not found');
      await waitFor(
        'two idle periods since the seeds',
        () => Date.now() >= seededAt + 2 * IDLE_S * 1000,
        2 * IDLE_S * 1000,
      );
      for (const recorder of recorders) recorder.stop();

      const gaps: Record<string, number> = {};
      for (const c of cases.filter((x) => x.kept)) {
        const session = seeds.get(c.name)?.session ?? '';
        const times = [...(await events(r, 'LOGIN', session)), ...(await events(r, 'REFRESH_TOKEN', session))]
          .map((e) => e.time)
          .sort((a, b) => a - b);
        const largest = Math.max(
          ...times.slice(1).map((t, i) => t - (times[i] ?? t)),
          Date.now() - (times.at(-1) ?? 0),
        );
        gaps[c.name] = largest;
        expect(largest, `${c.name}: the longest time Keycloak's session went without a request`).toBeLessThan(
          IDLE_S * 1000,
        );
        expect(await events(r, 'REFRESH_TOKEN_ERROR', session)).toEqual([]);
        expect(await userinfoStatus(r, c.name), `${c.name}: Keycloak accepts its newest access token`).toBe(
          200,
        );
        const s = await status(c.name);
        expect(ready(s)).toBe(true);
        // The refresh at the import, then one keep-alive refresh a minute.
        expect(s.rotations).toBeGreaterThanOrEqual(3);
      }
      for (const recorder of recorders) expect(recorder.with('ChainBroken', 'True')).toEqual([]);
      // Keycloak's own view: the kept sessions exist, the lapsed ones are gone.
      const user = await userId(kc, r.name, r.username);
      const client = (
        await adminRequest<{ id: string }[]>(kc, 'GET', `/${r.name}/clients?clientId=operator`)
      )[0]?.id;
      const online = await adminRequest<{ id: string }[]>(kc, 'GET', `/${r.name}/users/${user}/sessions`);
      const offline = await adminRequest<{ id: string }[]>(
        kc,
        'GET',
        `/${r.name}/users/${user}/offline-sessions/${client ?? ''}`,
      );
      expect(online.map((x) => x.id).sort()).toEqual(
        [seeds.get('idle-online')?.session, seeds.get('expiry-online')?.session].sort(),
      );
      expect(offline.map((x) => x.id)).toEqual([seeds.get('idle-offline')?.session]);
      console.log(
        `keycloak idle ${String(IDLE_S)} s: longest gaps between requests ${JSON.stringify(gaps)} ms after ` +
          `${String(Date.now() - seededAt)} ms; offline without keep-alive: ${JSON.stringify(condition(offlineLapsed, 'ChainBroken'))}`,
      );
    }, 330_000);

    // 12 s access tokens refreshed 10 s before expiry: a rotation every 1.2 to 2 s (the floor between
    // two requests is a tenth of the lifetime). Suspending the connections afterwards freezes the
    // chains, so Keycloak's refresh events can be compared one to one with the rotations stored.
    it('rotates an online and an offline chain 20 times each: no error, no reuse, Ready throughout', async ({
      expect,
    }) => {
      const r = await realm('chain', { accessTokenLifespan: 12 });
      const online = await seed(r, 'openid');
      const offline = await seed(r, 'openid offline_access');
      expect(claims(online.refreshToken).typ).toBe('Refresh');
      expect(claims(offline.refreshToken).typ).toBe('Offline');
      const recorders = await Promise.all(
        ['chain-online', 'chain-offline'].map((n) => StatusRecorder.start(admin, namespace, n)),
      );
      const startedAt = Date.now();
      await keycloakConnection('chain-online', r, online.refreshToken, {
        scopes: ['openid'],
        refresh: { before: '10s' },
      });
      await keycloakConnection('chain-offline', r, offline.refreshToken, {
        scopes: ['openid', 'offline_access'],
        refresh: { before: '10s' },
      });
      for (const name of ['chain-online', 'chain-offline'])
        await until(name, '20 rotations', (s) => (s.rotations ?? 0) >= 20, 150_000);
      const elapsed = Date.now() - startedAt;
      for (const recorder of recorders) recorder.stop();
      expect(await userinfoStatus(r, 'chain-online')).toBe(200);
      expect(await userinfoStatus(r, 'chain-offline')).toBe(200);

      // Suspended, the chains are at rest. Their state Secrets count every refresh whose answer was
      // stored; status may lag by one (a refresh in flight when the suspension came stores its token,
      // but its status write loses to the spec change).
      const final = { online: await suspend('chain-online'), offline: await suspend('chain-offline') };
      const stored: Record<string, number> = {};
      for (const [chain, name, session, s] of [
        ['online', 'chain-online', online.session, final.online],
        ['offline', 'chain-offline', offline.session, final.offline],
      ] as const) {
        const state = await chainState(name);
        stored[chain] = state.rotations;
        expect(state.rotations - (s.rotations ?? 0)).toBeGreaterThanOrEqual(0);
        expect(state.rotations - (s.rotations ?? 0)).toBeLessThanOrEqual(1);
        expect(state.chainGeneration).toBe(1);
        // Keycloak may store an event just after answering: wait for the count, then compare exactly.
        const refreshes = await waitFor(
          `${chain}: Keycloak's refresh events to match the rotations`,
          async () => {
            const list = await events(r, 'REFRESH_TOKEN', session);
            return list.length >= state.rotations ? list : undefined;
          },
          10_000,
        );
        expect(refreshes.length, `${chain}: token requests Keycloak answered`).toBe(state.rotations);
      }
      // A reuse or any other refusal would be a REFRESH_TOKEN_ERROR in this realm.
      expect(await events(r, 'REFRESH_TOKEN_ERROR')).toEqual([]);
      expect(failedRequests('chain-online')).toEqual([]);
      expect(failedRequests('chain-offline')).toEqual([]);
      for (const recorder of recorders) {
        const firstReady = recorder.observed.findIndex((o) => ready(o.status));
        expect(firstReady).toBeGreaterThanOrEqual(0);
        const after = recorder.observed.slice(firstReady);
        expect(after.filter((o) => !ready(o.status)).map((o) => condition(o.status, 'Ready'))).toEqual([]);
        expect(after.filter((o) => condition(o.status, 'Degraded')?.status === 'True')).toEqual([]);
        expect(recorder.with('ChainBroken', 'True')).toEqual([]);
      }
      // Keycloak states when an online refresh token expires (SSO Session Idle); an offline token
      // carries no expiry (refresh_expires_in 0), so status has none.
      expect(final.online.refreshTokenExpiresAt).toBeDefined();
      expect(final.offline.refreshTokenExpiresAt).toBeUndefined();
      console.log(
        `keycloak chains: 20 rotations each in ${String(elapsed)} ms; at rest after ${JSON.stringify(stored)} rotations; statuses seen ${String(recorders[0]?.observed.length)} and ${String(recorders[1]?.observed.length)}`,
      );
    }, 200_000);

    it('"Maximum allowed refresh token reuse exceeded" breaks the chain (RefreshTokenReused); a browser login with TOTP starts a new one', async ({
      expect,
    }) => {
      const r = await realm('reuse', { accessTokenLifespan: 20 }, true);
      const first = await seed(r, 'openid');
      await keycloakConnection('reused-code', r, first.refreshToken, { scopes: ['openid'], flow: 'code' });
      const before = await until(
        'reused-code',
        'a rotation with the next one 5 s away',
        (s) => (s.rotations ?? 0) >= 1 && Date.parse(s.nextRefreshTime ?? '') - Date.now() >= 5_000,
      );
      const statuses = await StatusRecorder.start(admin, namespace, 'reused-code');
      // A second client uses the chain's newest token: Keycloak answers it, and the operator's turn
      // comes second.
      const taken = await token(r, {
        grant_type: 'refresh_token',
        refresh_token: (await chainState('reused-code')).refreshToken,
      });
      expect(taken.status).toBe(200);
      expect((await status('reused-code')).rotations, 'the operator had not refreshed in between').toBe(
        before.rotations,
      );
      const recovered = await until(
        'reused-code',
        'a new chain that rotated',
        (s) => (s.chainGeneration ?? 0) >= 2 && (s.rotations ?? 0) >= 1 && ready(s),
        90_000,
      );
      statuses.stop();
      const brokenConditions = expectBrokenWith(
        expect,
        statuses,
        'RefreshTokenReused',
        'Maximum allowed refresh token reuse exceeded',
      );
      const refused = await events(r, 'REFRESH_TOKEN_ERROR');
      expect(refused.map((e) => e.details?.reason)).toEqual(['Maximum allowed refresh token reuse exceeded']);
      expect(refused[0]?.sessionId).toBe(first.session);
      // The seed's password login, then the operator's one browser login and its code exchange.
      expect((await events(r, 'LOGIN')).length).toBe(2);
      expect((await events(r, 'CODE_TO_TOKEN')).length).toBe(1);
      expect(await events(r, 'LOGIN_ERROR')).toEqual([]);
      expect(recovered.loginAttempts?.length).toBe(1);
      expect(await eventReasons(admin, namespace, 'reused-code')).toEqual(
        expect.arrayContaining(['ChainBroken', 'RecoveryLoginSucceeded']),
      );
      expect(await userinfoStatus(r, 'reused-code')).toBe(200);
      console.log(
        `keycloak reuse: ${JSON.stringify(brokenConditions[0])}; recovered ${JSON.stringify(condition(recovered, 'Ready'))}`,
      );
    }, 200_000);

    it('"Stale token" breaks the chain (RefreshTokenReused); the direct grant with password and TOTP starts a new one', async ({
      expect,
    }) => {
      const r = await realm('stale', { accessTokenLifespan: 20 }, true);
      const first = await seed(r, 'openid');
      await keycloakConnection('stale-direct', r, first.refreshToken, { scopes: ['openid'], flow: 'direct' });
      const before = await until(
        'stale-direct',
        'a rotation with the next one 5 s away',
        (s) => (s.rotations ?? 0) >= 1 && Date.parse(s.nextRefreshTime ?? '') - Date.now() >= 5_000,
      );
      const statuses = await StatusRecorder.start(admin, namespace, 'stale-direct');
      // A second client moves the chain on twice. The operator's token is then older than the one
      // Keycloak saw last: "Stale token" (Keycloak compares issue times in whole seconds, hence the wait).
      const held = (await chainState('stale-direct')).refreshToken;
      const second = await token(r, { grant_type: 'refresh_token', refresh_token: held });
      expect(second.status).toBe(200);
      const issuedAt = claims(held).iat ?? 0;
      await waitFor(
        'a second after the operator token was issued',
        () => Date.now() >= (issuedAt + 1) * 1000 + 100,
        5_000,
        50,
      );
      const third = await token(r, {
        grant_type: 'refresh_token',
        refresh_token: String(second.body.refresh_token),
      });
      expect(third.status).toBe(200);
      expect((await status('stale-direct')).rotations, 'the operator had not refreshed in between').toBe(
        before.rotations,
      );
      const recovered = await until(
        'stale-direct',
        'a new chain that rotated',
        (s) => (s.chainGeneration ?? 0) >= 2 && (s.rotations ?? 0) >= 1 && ready(s),
        90_000,
      );
      statuses.stop();
      const brokenConditions = expectBrokenWith(expect, statuses, 'RefreshTokenReused', 'Stale token');
      expect((await events(r, 'REFRESH_TOKEN_ERROR')).map((e) => e.details?.reason)).toEqual(['Stale token']);
      // The seed's login and the operator's one direct grant, both password + TOTP.
      const logins = await events(r, 'LOGIN');
      expect(logins.map((e) => e.details?.grant_type)).toEqual(['password', 'password']);
      expect(await events(r, 'LOGIN_ERROR')).toEqual([]);
      expect(recovered.loginAttempts?.length).toBe(1);
      expect(await eventReasons(admin, namespace, 'stale-direct')).toEqual(
        expect.arrayContaining(['ChainBroken', 'RecoveryLoginSucceeded']),
      );
      expect(await userinfoStatus(r, 'stale-direct')).toBe(200);
      console.log(`keycloak stale: ${JSON.stringify(brokenConditions[0])}`);
    }, 200_000);

    it('an old refresh token replayed by someone else ends the chain ("Session doesn\'t have required client"): without recovery, RefreshTokenRejected and Ready=False', async ({
      expect,
    }) => {
      const r = await realm('replay', { accessTokenLifespan: 12 });
      const first = await seed(r, 'openid');
      await keycloakConnection('replayed', r, first.refreshToken, { scopes: ['openid'] });
      await until('replayed', 'two rotations', (s) => (s.rotations ?? 0) >= 2);
      const replay = await token(r, { grant_type: 'refresh_token', refresh_token: first.refreshToken });
      expect(replay.body).toMatchObject({ error: 'invalid_grant', error_description: 'Stale token' });
      const end = await endsWithoutRecovery('replayed', counter(r, 'REFRESH_TOKEN', 'REFRESH_TOKEN_ERROR'));
      expectEnded(expect, end, 'RefreshTokenRejected', "Session doesn't have required client");
      expect((await events(r, 'REFRESH_TOKEN_ERROR')).map((e) => e.details?.reason)).toEqual([
        'Stale token',
        "Session doesn't have required client",
      ]);
      expect(await eventReasons(admin, namespace, 'replayed')).toContain('RefreshTokenRejected');
    }, 200_000);

    it('"Session not active" after an administrator logged the user out: SessionExpired, Ready=False', async ({
      expect,
    }) => {
      const r = await realm('logout', { accessTokenLifespan: 12 });
      const first = await seed(r, 'openid');
      await keycloakConnection('logged-out', r, first.refreshToken, { scopes: ['openid'] });
      await until('logged-out', 'a rotation', (s) => (s.rotations ?? 0) >= 1);
      await adminRequest(kc, 'POST', `/${r.name}/users/${await userId(kc, r.name, r.username)}/logout`);
      const end = await endsWithoutRecovery('logged-out', counter(r, 'REFRESH_TOKEN', 'REFRESH_TOKEN_ERROR'));
      expectEnded(expect, end, 'SessionExpired', 'Session not active');
      expect((await events(r, 'REFRESH_TOKEN_ERROR')).map((e) => e.details?.reason)).toEqual([
        'Session not active',
      ]);
    }, 200_000);

    it('"Offline session not active" after Offline Session Idle was shortened: SessionExpired, Ready=False', async ({
      expect,
    }) => {
      const r = await realm('shrink', { accessTokenLifespan: 12, offlineSessionIdleTimeout: 60 });
      const first = await seed(r, 'openid offline_access');
      await keycloakConnection('offline-shrunk', r, first.refreshToken, {
        scopes: ['openid', 'offline_access'],
      });
      await until('offline-shrunk', 'a rotation', (s) => (s.rotations ?? 0) >= 1);
      await updateRealm(kc, r.name, { offlineSessionIdleTimeout: 2 });
      const end = await endsWithoutRecovery(
        'offline-shrunk',
        counter(r, 'REFRESH_TOKEN', 'REFRESH_TOKEN_ERROR'),
      );
      expectEnded(expect, end, 'SessionExpired', 'Offline session not active');
      expect((await events(r, 'REFRESH_TOKEN_ERROR')).map((e) => e.details?.reason)).toEqual([
        'Offline session not active',
      ]);
    }, 200_000);

    it('"Invalid refresh token" for a seed that is no Keycloak token: RefreshTokenInvalid after one request', async ({
      expect,
    }) => {
      const r = await realm('garbage', { accessTokenLifespan: 12 });
      const garbage = canary('not-a-refresh-token');
      secrets.push(garbage);
      await keycloakConnection('garbage-seed', r, garbage, { scopes: ['openid'] });
      const end = await endsWithoutRecovery(
        'garbage-seed',
        counter(r, 'REFRESH_TOKEN', 'REFRESH_TOKEN_ERROR'),
      );
      expectEnded(expect, end, 'RefreshTokenInvalid', 'Invalid refresh token');
      expect((await events(r, 'REFRESH_TOKEN_ERROR')).map((e) => e.details?.reason)).toEqual([
        'Invalid refresh token',
      ]);
    }, 200_000);

    it('"Invalid user credentials" on the direct grant: LoginFailed after one attempt, no retry', async ({
      expect,
    }) => {
      const r = await realm('wrongpass', { accessTokenLifespan: 12 }, true);
      await createSecret(admin, namespace, 'wrongpass-user-bad', {
        username: r.username,
        password: canary('wrong-password'),
        totp: r.totpSecret ?? '',
      });
      await createConnection(
        admin,
        connection(namespace, 'wrong-password', r.issuer, {
          provider: { preset: 'keycloak' },
          grant: { seedSecretRef: undefined },
          spec: {
            scopes: ['openid'],
            recovery: {
              login: {
                flow: 'direct',
                usernameRef: { name: 'wrongpass-user-bad' },
                passwordRef: { name: 'wrongpass-user-bad' },
                totpSecretRef: { name: 'wrongpass-user-bad' },
                maxAttemptsPerHour: 3,
              },
            },
          },
        }),
      );
      const end = await until(
        'wrong-password',
        'Ready=False LoginFailed',
        (s) => condition(s, 'Ready')?.reason === 'LoginFailed',
      );
      expect(end.loginAttempts?.length).toBe(1);
      expect(condition(end, 'Ready')?.message).toContain('Invalid user credentials');
      const failed = await events(r, 'LOGIN_ERROR');
      expect(failed.map((e) => e.error)).toEqual(['invalid_user_credentials']);
      const logins = counter(r, 'LOGIN', 'LOGIN_ERROR');
      ended.push({ label: 'wrong-password', events: logins, count: await logins() });
    }, 200_000);

    it('"Client not allowed for direct access grants": UnauthorizedClient after one attempt', async ({
      expect,
    }) => {
      const r = await realm('nodirect', { accessTokenLifespan: 12 }, true);
      const client = (
        await adminRequest<Record<string, unknown>[]>(kc, 'GET', `/${r.name}/clients?clientId=operator`)
      )[0];
      await adminRequest(kc, 'PUT', `/${r.name}/clients/${String(client?.id)}`, {
        ...client,
        directAccessGrantsEnabled: false,
      });
      await keycloakConnection('no-direct', r, undefined, { scopes: ['openid'], flow: 'direct' });
      const end = await until(
        'no-direct',
        'Ready=False',
        (s) => condition(s, 'Ready')?.status === 'False' && s.loginAttempts !== undefined,
      );
      expect(condition(end, 'Ready')?.reason).toBe('UnauthorizedClient');
      expect(condition(end, 'Ready')?.message).toContain('Client not allowed for direct access grants');
      expect(end.loginAttempts?.length).toBe(1);
      const failed = await events(r, 'LOGIN_ERROR');
      expect(failed.map((e) => e.details?.reason)).toEqual(['Client not allowed for direct access grants']);
      const logins = counter(r, 'LOGIN', 'LOGIN_ERROR');
      ended.push({ label: 'no-direct', events: logins, count: await logins() });
    }, 200_000);

    // Keycloak answers a wrong secret of a known client with unauthorized_client (an unknown client ID
    // gets invalid_client): a configuration error either way, retried slowly, the chain left intact.
    it('a wrong client secret (401 unauthorized_client "Invalid client or Invalid client credentials"): InvalidClient, Ready=False, chain intact', async ({
      expect,
    }) => {
      const r = await realm('badclient', { accessTokenLifespan: 12 });
      const first = await seed(r, 'openid');
      await createSecret(admin, namespace, 'client-wrong', { client_secret: canary('wrong-client-secret') });
      await createSecret(admin, namespace, 'bad-client-seed', { refresh_token: first.refreshToken });
      await createConnection(
        admin,
        connection(namespace, 'bad-client', r.issuer, {
          provider: { preset: 'keycloak' },
          spec: { scopes: ['openid'], clientSecretRef: { name: 'client-wrong' } },
        }),
      );
      const end = await until('bad-client', 'Ready=False', (s) => condition(s, 'Ready')?.status === 'False');
      expect(condition(end, 'Ready')?.reason).toBe('InvalidClient');
      expect(condition(end, 'Ready')?.message).toContain('Invalid client or Invalid client credentials');
      expect(condition(end, 'Degraded')?.reason).toBe('InvalidClient');
      expect(broken(end)).toBe(false);
      // Retried after a minute at the soonest (configuration errors back off from 1 min).
      expect(Date.parse(end.nextRefreshTime ?? '') - Date.now()).toBeGreaterThan(50_000);
      // The seed was not consumed: Keycloak never got as far as the token.
      expect(await events(r, 'REFRESH_TOKEN')).toEqual([]);
    }, 200_000);
  });

  it('sends nothing more for a chain that ended, and leaks no secret into logs, Events or status', async () => {
    const after = await Promise.all(ended.map(async (e) => ({ label: e.label, count: await e.events() })));
    console.log(
      `keycloak ended chains, Keycloak events then and now: ${JSON.stringify(ended.map((e, i) => [e.label, e.count, after[i]?.count]))}`,
    );
    expect(after).toEqual(ended.map((e) => ({ label: e.label, count: e.count })));
    const hits = await findLeaks(secrets, {
      lines: operator.lines,
      kubeConfig: admin,
      namespaces: [namespace],
    });
    expect(hits).toEqual([]);
  });
});
