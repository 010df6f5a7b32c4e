// The keycloak preset's default token liveness probe (spec.probe without a url: the realm's userinfo
// endpoint from discovery) against a real Keycloak, with the operator as a separate process.
//
// Keycloak's userinfo looks the access token's session up (UserInfoEndpoint and UserSessionUtil in
// https://github.com/keycloak/keycloak): once an administrator has logged the user out, it answers
// 401 invalid_token although the token's signature and expiry are still good, which is what the
// probe turns into an immediate refresh, a broken chain and a recovery login. A token without the
// openid scope gets 403 insufficient_scope whatever its session, so such a probe can never notice
// anything; the operator says so once with a Warning Event.
//
// Time: Keycloak's clocks cannot be compressed, so the access tokens live 30 s (refreshed about 20 s
// after they are issued) and the probe runs every 2 s. What Keycloak saw is read back from its event
// store (USER_INFO_REQUEST and its _ERROR, REFRESH_TOKEN_ERROR, LOGIN, with the session each belongs to).
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  condition,
  connection,
  createConnection,
  createSecret,
  eventReasons,
  readSecretData,
  ready,
  waitFor,
  type ConnectionStatus,
} from '../harness/builders.ts';
import { connectionsOf } from '../harness/connections.ts';
import { ensureKeycloakDistribution, startKeycloak, type KeycloakServer } from '../harness/keycloak.ts';
import {
  TEST_PASSWORD,
  TEST_TOTP_RAW_SECRET,
  TEST_USERNAME,
  realmEvents,
  realmUser,
  userId,
  adminRequest,
  type KeycloakEvent,
} from '../harness/keycloak-realm.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import type { OperatorProcess } from '../harness/operator.ts';
import { Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';

const PROBE_INTERVAL_MS = 2_000;
/** What a reconcile may add to the probe's schedule on two shared cores (a timer, a status read). */
const LATENCY_MS = 1_000;
/** The operator's --min-request-gap in tests (test/harness/operator.ts). */
const MIN_REQUEST_GAP_MS = 1_000;
const BOB = 'bob';
const BOB_PASSWORD = canary('bob-password');
const CAROL = 'carol';
const CAROL_PASSWORD = canary('carol-password');

/** The claims of a JWT: Keycloak's access tokens name their session in `sid`. */
function sessionOf(jwt: string): string {
  const claims = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
    sid?: string;
  };
  if (claims.sid === undefined) throw new Error('the access token names no session');
  return claims.sid;
}

const gapsOf = (times: readonly number[]): number[] => times.slice(1).map((t, i) => t - (times[i] ?? t));

describe('keycloak preset: the default userinfo probe against a real Keycloak', () => {
  let kc: KeycloakServer | undefined;
  let scenario: Scenario | undefined;
  let admin: k8s.KubeConfig;
  let namespace: string;
  let operator: OperatorProcess | undefined;

  beforeAll(async () => {
    await ensureKeycloakDistribution();
  }, 900_000);

  beforeAll(async () => {
    kc = await startKeycloak({
      accessTokenLifespan: 30,
      realmOverrides: {
        eventsEnabled: true,
        enabledEventTypes: [
          'LOGIN',
          'LOGIN_ERROR',
          'REFRESH_TOKEN',
          'REFRESH_TOKEN_ERROR',
          'USER_INFO_REQUEST',
          'USER_INFO_REQUEST_ERROR',
        ],
        // alice as buildRealm has her (password and TOTP); bob, password only, whose sessions the
        // logout of alice leaves alone.
        users: [
          realmUser({
            username: TEST_USERNAME,
            password: TEST_PASSWORD,
            totpRawSecret: TEST_TOTP_RAW_SECRET,
          }),
          realmUser({ username: BOB, password: BOB_PASSWORD }),
          realmUser({ username: CAROL, password: CAROL_PASSWORD, realmRoles: ['offline_access'] }),
        ],
      },
    });
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    namespace = await scenario.clientNamespace('kc-probe', kc.clientSecret);
    await createSecret(admin, namespace, 'alice', {
      username: kc.username,
      password: kc.password,
      totp: kc.totpSecret,
    });
    await createSecret(admin, namespace, 'bob', { username: BOB, password: BOB_PASSWORD });
    await createSecret(admin, namespace, 'carol', { username: CAROL, password: CAROL_PASSWORD });
    operator = scenario.startOperator({
      env: await scenario.operatorEnvironment(),
      identity: 'kc-probe',
      watchNamespace: namespace,
      // 30 s tokens: the default refresh margin (a third) applies, not the 90 s propagation floor.
      args: ['--secret-propagation', '1s'],
    });
  }, 300_000);

  afterAll(async () => {
    await scenario?.close();
    await kc?.close();
  });

  const { status, until, records } = connectionsOf(() => ({
    admin,
    namespace,
    ...(operator !== undefined ? { lines: operator.lines } : {}),
  }));

  /** Waits for `name` to be Ready on a chain newer than `before`'s, and for the status watch to have it too. */
  async function untilNewChain(
    name: string,
    what: string,
    before: ConnectionStatus,
    statuses: StatusRecorder,
  ): Promise<ConnectionStatus> {
    const newer = (s: ConnectionStatus): boolean =>
      ready(s) && (s.chainGeneration ?? 0) > (before.chainGeneration ?? 0);
    const recovered = await until(name, what, newer, 90_000);
    await statuses.delivered('the new chain', newer);
    return recovered;
  }

  /** A keycloak-preset connection started by a direct-grant login (no seed), probed every 2 s at the default URL. */
  async function probedConnection(name: string, user: string, scopes: string[], totp: boolean) {
    await createConnection(
      admin,
      connection(namespace, name, kc?.issuer ?? '', {
        provider: { preset: 'keycloak' },
        grant: { seedSecretRef: undefined },
        spec: {
          scopes,
          probe: { interval: `${String(PROBE_INTERVAL_MS / 1000)}s` },
          recovery: {
            login: {
              flow: 'direct',
              usernameRef: { name: user },
              passwordRef: { name: user },
              ...(totp ? { totpSecretRef: { name: user } } : {}),
              maxAttemptsPerHour: 10,
            },
          },
        },
      }),
    );
  }

  async function events(type: string, session?: string): Promise<KeycloakEvent[]> {
    if (!kc) throw new Error('Keycloak did not start');
    return (await realmEvents(kc, kc.realm)).filter(
      (e) => e.type === type && (session === undefined || e.sessionId === session),
    );
  }

  async function outputSession(name: string): Promise<string> {
    const data = await readSecretData(admin, namespace, `${name}-token`);
    return sessionOf(data?.access_token ?? '');
  }

  /**
   * Waits for `count` probes of the session that Keycloak accepted, the newest more than the
   * operator's --min-request-gap after the chain's last token request. A logout after that is
   * noticed by the next probe and answered by a refresh at once (a 401 inside the gap would be
   * answered only once the gap has passed, which would blur the measured detection time).
   */
  async function acceptedProbes(session: string, lastRefreshTime: string | undefined, count: number) {
    const after = Date.parse(lastRefreshTime ?? '') + MIN_REQUEST_GAP_MS;
    await waitFor(
      `${String(count)} accepted probes, the last one after the gap`,
      async () => {
        const accepted = await events('USER_INFO_REQUEST', session);
        return accepted.length >= count && (accepted.at(-1)?.time ?? 0) > after;
      },
      20_000,
      100,
    );
  }

  /** Ends every online session of the user and sets the user's not-before time (Admin REST API). */
  /**
   * Logs the user out as an administrator: `at` just before the request (the admin token fetched
   * already, so nothing else comes in between), `done` once Keycloak has answered. A probe may still
   * be accepted between the two; none after `done`.
   */
  async function logOut(username: string): Promise<{ at: number; done: number }> {
    if (!kc) throw new Error('Keycloak did not start');
    const user = await userId(kc, kc.realm, username);
    await kc.adminToken();
    const at = Date.now();
    await adminRequest(kc, 'POST', `/${kc.realm}/users/${user}/logout`);
    return { at, done: Date.now() };
  }

  describe.concurrent('cases, side by side', () => {
    it('notices a session an administrator ended between two refreshes within one probe interval, and recovers by a direct login with TOTP', async ({
      expect,
    }) => {
      if (!kc) throw new Error('Keycloak did not start');
      const server = kc;
      await probedConnection('probed', 'alice', ['openid'], true);
      // The chain starts with a login, and is refreshed once: it is between two refreshes now.
      const before = await until(
        'probed',
        'Ready after a refresh',
        (s) => ready(s) && (s.rotations ?? 0) >= 1,
        90_000,
      );
      const session = await outputSession('probed');
      const nextRefreshAt = Date.parse(before.nextRefreshTime ?? '');
      expect(nextRefreshAt, 'the next scheduled refresh').toBeGreaterThan(Date.now());
      // At least three accepted probes, to measure their spacing.
      await acceptedProbes(session, before.lastRefreshTime, 3);

      const statuses = await StatusRecorder.start(admin, namespace, 'probed');
      const { at: loggedOutAt, done: logoutDone } = await logOut(server.username);
      const recovered = await untilNewChain('probed', 'a new chain after the logout', before, statuses);
      const recoveredAt = Date.now();
      statuses.stop();

      const accepted = (await events('USER_INFO_REQUEST', session)).map((e) => e.time);
      const rejected = (await events('USER_INFO_REQUEST_ERROR', session)).map((e) => e.time);
      const refreshErrors = (await events('REFRESH_TOKEN_ERROR', session)).map((e) => e.time);
      const refreshes = (await events('REFRESH_TOKEN', session)).map((e) => e.time);
      const newSession = await outputSession('probed');
      const logins = (await events('LOGIN', newSession)).map((e) => e.time);
      const rejectedAt = rejected[0] ?? Number.NaN;
      const lastAccepted = accepted.at(-1) ?? Number.NaN;
      const broken = statuses.with('ChainBroken', 'True');
      const brokenAt = broken[0]?.at ?? Number.NaN;
      const probeGaps = gapsOf(accepted);
      console.log(
        `keycloak probe (interval ${String(PROBE_INTERVAL_MS)} ms): the ended session was rejected by userinfo ` +
          `${String(rejectedAt - loggedOutAt)} ms after the logout (the probe before it ${String(rejectedAt - lastAccepted)} ms earlier), ` +
          `the refresh it triggered ${String((refreshErrors[0] ?? Number.NaN) - loggedOutAt)} ms after, ChainBroken seen ${String(brokenAt - loggedOutAt)} ms after, ` +
          `a new chain Ready ${String(recoveredAt - loggedOutAt)} ms after (the TOTP login may wait for a code not sent before); ` +
          `the next scheduled refresh was ${String(nextRefreshAt - loggedOutAt)} ms after the logout; ` +
          `gaps between accepted probes (ms) ${JSON.stringify(probeGaps)}`,
      );

      // The probe kept its interval: every gap between two probes Keycloak accepted is about one
      // interval (a refresh in between does not move the probe's schedule).
      expect(probeGaps.length).toBeGreaterThanOrEqual(2);
      for (const gap of probeGaps) {
        // Never much sooner: two arrivals differ by the interval plus the difference of two
        // request latencies, which a loaded machine can make hundreds of milliseconds.
        expect(gap).toBeGreaterThanOrEqual(PROBE_INTERVAL_MS / 2);
        expect(gap).toBeLessThanOrEqual(PROBE_INTERVAL_MS + LATENCY_MS);
      }
      // The first probe after the logout is the one Keycloak rejected: no probe went through after
      // the logout, exactly one was refused, and it came one interval after the probe before it.
      expect(accepted.filter((t) => t > logoutDone)).toEqual([]);
      expect(rejected, 'one probe with the ended session, refused').toHaveLength(1);
      expect(rejectedAt - lastAccepted).toBeLessThanOrEqual(PROBE_INTERVAL_MS + LATENCY_MS);
      expect(rejectedAt - loggedOutAt, 'noticed within one probe interval').toBeLessThanOrEqual(
        PROBE_INTERVAL_MS + LATENCY_MS,
      );
      // The rejection, not the schedule, led to the refresh: one refresh with the ended session,
      // after the refused probe and long before the refresh was due; none went through.
      expect(refreshErrors).toHaveLength(1);
      expect(refreshErrors[0]).toBeGreaterThanOrEqual(rejectedAt);
      expect(refreshErrors[0]).toBeLessThan(nextRefreshAt);
      expect(refreshes.filter((t) => t > logoutDone)).toEqual([]);
      const probeRecords = records('probed').filter((r) => r.msg === 'token probe');
      expect(probeRecords.filter((r) => r.verdict === 'rejected').map((r) => r.httpStatus)).toEqual([401]);
      expect(await eventReasons(admin, namespace, 'probed')).toContain('ProbeRejected');
      // Keycloak's answer to that refresh, and the recovery: one direct-grant login, a new session.
      expect(broken.map((o) => condition(o.status, 'ChainBroken')?.reason)).toEqual(
        broken.map(() => 'SessionExpired'),
      );
      expect(condition(broken[0]?.status ?? {}, 'ChainBroken')?.message).toContain('Session not active');
      expect(newSession).not.toBe(session);
      expect(logins).toHaveLength(1);
      expect(condition(recovered, 'ChainBroken')?.status).toBe('False');
      const data = await readSecretData(admin, namespace, 'probed-token');
      const userinfo = await fetch(`${server.issuer}/protocol/openid-connect/userinfo`, {
        headers: { authorization: `Bearer ${data?.access_token ?? ''}` },
      });
      await userinfo.arrayBuffer();
      expect(userinfo.status, 'Keycloak accepts the new chain on userinfo').toBe(200);
    }, 150_000);

    it('a token without the openid scope: userinfo answers 403, the chain is left alone and one ProbeForbidden Event says why', async ({
      expect,
    }) => {
      await probedConnection('no-openid', BOB, ['profile'], false);
      await until('no-openid', 'Ready', ready, 60_000);
      // bob's chain is the only one whose tokens lack openid: Keycloak's access_denied errors are its probes.
      const forbidden = async (): Promise<KeycloakEvent[]> =>
        (await events('USER_INFO_REQUEST_ERROR')).filter((e) => e.error === 'access_denied');
      await waitFor('three probes answered 403', async () => (await forbidden()).length >= 3, 30_000, 250);
      const s = await status('no-openid');
      const core = admin.makeApiClient(k8s.CoreV1Api);
      const reported = (await core.listNamespacedEvent({ namespace })).items.filter(
        (e) => e.involvedObject.name === 'no-openid' && e.reason === 'ProbeForbidden',
      );
      const probeRecords = records('no-openid').filter((r) => r.msg === 'token probe');
      console.log(
        `keycloak probe without openid: ${String((await forbidden()).length)} probes answered 403, ` +
          `ProbeForbidden Events ${JSON.stringify(reported.map((e) => ({ type: e.type, count: e.count ?? 1 })))}`,
      );
      expect(ready(s)).toBe(true);
      expect(condition(s, 'ChainBroken')?.status).not.toBe('True');
      expect(probeRecords.length).toBeGreaterThanOrEqual(3);
      expect(new Set(probeRecords.map((r) => `${String(r.verdict)} ${String(r.httpStatus)}`))).toEqual(
        new Set(['inconclusive 403']),
      );
      // Reported once, not at every probe: one Event, never bumped.
      expect(reported).toHaveLength(1);
      expect(reported[0]?.type).toBe('Warning');
      expect(reported[0]?.count ?? 1).toBe(1);
      expect(reported[0]?.message).toContain('openid');
      expect(await eventReasons(admin, namespace, 'no-openid')).not.toContain('ProbeRejected');
    }, 120_000);

    // An administrator's logout removes only the user's online sessions (UserResource.logout) and
    // sets a not-before time on the user; the offline session stays. Userinfo refuses the offline
    // chain's access token all the same, so the probe notices this chain too, and the refresh it
    // triggers answers "Stale token" (the not-before time). docs/providers/keycloak.md says so.
    it('an offline chain after the user was logged out: userinfo refuses it within one interval, the refresh answers "Stale token"', async ({
      expect,
    }) => {
      await probedConnection('offline', 'carol', ['openid', 'offline_access'], false);
      const before = await until(
        'offline',
        'Ready after a refresh',
        (s) => ready(s) && (s.rotations ?? 0) >= 1,
        90_000,
      );
      const session = await outputSession('offline');
      const nextRefreshAt = Date.parse(before.nextRefreshTime ?? '');
      await acceptedProbes(session, before.lastRefreshTime, 1);
      const statuses = await StatusRecorder.start(admin, namespace, 'offline');
      const { at: loggedOutAt, done: logoutDone } = await logOut(CAROL);
      await untilNewChain('offline', 'a new chain after the stale one', before, statuses);
      statuses.stop();
      const acceptedAfter = (await events('USER_INFO_REQUEST', session)).filter((e) => e.time > logoutDone);
      const rejected = await events('USER_INFO_REQUEST_ERROR', session);
      const rejectedAt = rejected[0]?.time ?? Number.NaN;
      const refreshErrors = (await events('REFRESH_TOKEN_ERROR', session)).map((e) => e.time);
      const broken = statuses.with('ChainBroken', 'True').map((o) => condition(o.status, 'ChainBroken'));
      console.log(
        `keycloak probe, offline chain: userinfo refused its token ${String(rejectedAt - loggedOutAt)} ms after the logout ` +
          `(Keycloak's event error ${JSON.stringify(rejected[0]?.error)}), the refresh that failed came ` +
          `${String((refreshErrors[0] ?? Number.NaN) - loggedOutAt)} ms after (the scheduled one was ` +
          `${String(nextRefreshAt - loggedOutAt)} ms after); ChainBroken ${JSON.stringify(broken[0]?.reason)}`,
      );
      expect(acceptedAfter, 'no probe accepted after the logout').toEqual([]);
      expect(rejected).toHaveLength(1);
      expect(rejectedAt - loggedOutAt).toBeLessThanOrEqual(PROBE_INTERVAL_MS + LATENCY_MS);
      expect(await eventReasons(admin, namespace, 'offline')).toContain('ProbeRejected');
      expect(refreshErrors).toHaveLength(1);
      expect(refreshErrors[0]).toBeGreaterThanOrEqual(rejectedAt);
      expect(refreshErrors[0]).toBeLessThan(nextRefreshAt);
      expect(broken[0]?.reason).toBe('RefreshTokenReused');
      expect(broken[0]?.message).toContain('Stale token');
    }, 150_000);
  });

  it('leaks no password, TOTP secret or client secret into logs, Events or status', async () => {
    if (!kc || !operator) throw new Error('Keycloak did not start');
    const hits = await findLeaks(
      [kc.password, kc.totpSecret, kc.clientSecret, BOB_PASSWORD, CAROL_PASSWORD],
      {
        lines: operator.lines,
        kubeConfig: admin,
        namespaces: [namespace],
      },
    );
    expect(hits).toEqual([]);
  });
});
