// Generic RFC 6749 servers with a rotation grace window (Okta 30 s, Cognito RetryGracePeriodSeconds,
// Auth0 leeway, Ory Hydra): the generic preset against oidc-provider (test/harness/oidc/), whose
// adapter accepts a consumed refresh token again inside its window and revokes the family outside
// it (RFC 9700 §4.14.2). Each test has a provider of its own (the window is per provider) and a
// connection of its own; one operator watches the namespace, and the tests run side by side.
//
// failover.test.ts (c) already proves, and this file does not repeat: a replica SIGKILLed after the
// provider answered, before the new token was stored, is followed by a successor that presents the
// same token again inside a 30 s window and keeps the chain; with no window the chain is declared
// broken (RefreshResponseLost, Ready=False without recovery) and the token is not presented again.
// This file proves the other halves: 20 rotations with a window open (never an in-grace or reused
// presentation in normal operation), an answer lost in flight inside one process (the connection
// dropped after the provider rotated) retried inside the window with no login and no reuse, and an
// answer lost past the window: the provider's introspection says the token was used, the chain is
// broken without presenting it again and a TOTP login starts a new one; where the provider has no
// introspection (Auth0, Cognito), the same loss is a broken chain and Ready=False without a login.
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  condition,
  type ConnectionOverrides,
  type ConnectionStatus,
  createSecret,
  eventReasons,
  healthOf,
  OutputTokenWatcher,
  ready,
  waitFor,
} from '../harness/builders.ts';
import { connectionsOf } from '../harness/connections.ts';

import { createNamespace } from '../harness/kube.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import { DEFAULT_REDIRECT_URI, type TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario, type ScenarioProviderOptions } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const TOTP_PERIOD_SEC = 5;
/** The operator's --request-timeout: an answer held back longer is lost to it. */
const REQUEST_TIMEOUT_MS = 3_000;
const FORM = {
  loginFormSelector: '#login-form',
  usernameField: 'username',
  passwordField: 'password',
  otpFormSelector: '#otp-form',
  otpField: 'otp',
};

describe('generic preset against a server with a rotation grace window', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let namespace: string;
  let operator: OperatorProcess;
  const password = canary('grace-password');
  const totpSecret = Array.from(randomBytes(32), (b) => BASE32[b % 32] ?? 'A').join('');
  const secrets = [password, totpSecret];

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    const env = await scenario.operatorEnvironment();
    namespace = await createNamespace(admin, 'grace');
    await createSecret(admin, namespace, 'alice', {
      username: 'alice',
      password,
      totp: `otpauth://totp/test:alice?secret=${totpSecret}&period=${String(TOTP_PERIOD_SEC)}&issuer=test`,
    });
    operator = scenario.startOperator({
      env,
      identity: 'grace',
      watchNamespace: namespace,
      args: ['--secret-propagation', '1s', '--request-timeout', `${String(REQUEST_TIMEOUT_MS / 1000)}s`],
    });
  });

  afterAll(async () => {
    await scenario.close();
  });

  /** A provider whose client 'operator' may also log in (code flow) as alice. */
  async function provider(options: ScenarioProviderOptions): Promise<TestOidcServer> {
    const server = await scenario.startProvider({
      grantTypes: ['refresh_token', 'authorization_code'],
      login: {
        users: [
          { accountId: 'alice', username: 'alice', password, totpSecret, totpPeriodSec: TOTP_PERIOD_SEC },
        ],
      },
      ...options,
    });
    secrets.push(clientSecretOf(server));
    return server;
  }

  const recovery = {
    login: {
      flow: 'code',
      redirectURI: DEFAULT_REDIRECT_URI,
      usernameRef: { name: 'alice' },
      passwordRef: { name: 'alice' },
      totpSecretRef: { name: 'alice' },
      form: FORM,
      maxAttemptsPerHour: 3,
    },
  };

  /** A generic-preset connection seeded for alice, with its own client Secret (one per provider). */
  async function graceConnection(
    server: TestOidcServer,
    name: string,
    graceWindow: string,
    overrides: ConnectionOverrides = {},
  ): Promise<void> {
    await createSecret(admin, namespace, `${name}-client`, { client_secret: clientSecretOf(server) });
    const seed = await scenario.seededConnection(
      server,
      namespace,
      name,
      {
        ...overrides,
        provider: { preset: 'generic', ...overrides.provider },
        refresh: { graceWindow, ...overrides.refresh },
        spec: {
          clientSecretRef: { name: `${name}-client` },
          scopes: ['openid', 'offline_access'],
          ...overrides.spec,
        },
      },
      'alice',
    );
    secrets.push(seed);
  }

  const { status, until, records } = connectionsOf(() => ({ admin, namespace, lines: operator.lines }));

  describe.concurrent('chains', () => {
    // Access tokens live 3 s: a refresh every 2 s (the 1 s margin of a third, the harness's 1 s gap).
    it('rotates 20 times with a 10 s window open: every presentation is of the current token', async ({
      expect,
    }) => {
      const server = await provider({ accessTokenTtlSec: 3, graceWindowSec: 10 });
      const watcher = new OutputTokenWatcher(admin, namespace, 'rotating-token', (token) => {
        secrets.push(token);
      });
      const startedAt = Date.now();
      await graceConnection(server, 'rotating', '10s');
      const polled: ConnectionStatus[] = [];
      const done = await waitFor(
        'rotating: 20 rotations',
        async () => {
          await watcher.poll();
          const s = await status('rotating');
          polled.push(s);
          return (s.rotations ?? 0) >= 20 ? s : undefined;
        },
        120_000,
        100,
      );
      const log = server.refreshLog();
      console.log(
        `grace window rotation: ${String(done.rotations)} rotations in ${String(Date.now() - startedAt)} ms; ` +
          `refresh log ${JSON.stringify(log.map((e) => `${e.presented}:${String(e.status)}`))}`,
      );
      expect(log.every((e) => e.presented === 'current' && e.status === 200)).toBe(true);
      expect(server.reuseCount()).toBe(0);
      expect(done.chainGeneration).toBe(1);
      expect(watcher.lateRotations()).toEqual([]);
      // The last poll read the Secret just before the status: the 20th token may have been written
      // between the two, leaving the 19th (a second from its expiry) as the last one seen.
      await watcher.poll();
      const token = watcher.seen.at(-1)?.token ?? '';
      expect(await server.isAccessTokenActive(token), 'the provider accepts the last access token').toBe(
        true,
      );
      const health = healthOf(polled);
      expect(health.notReadyAfter).toEqual([]);
      expect(health.degraded).toEqual([]);
      expect(server.loginAttempts()).toEqual([]);
    }, 150_000);

    it('a response lost after the provider rotated is retried inside the window: same chain, no login, no reuse', async ({
      expect,
    }) => {
      const server = await provider({ accessTokenTtlSec: 6, graceWindowSec: 10 });
      await graceConnection(server, 'lost', '10s', { spec: { recovery } });
      const before = await until('lost', 'two rotations', (s) => ready(s) && (s.rotations ?? 0) >= 2);
      const statuses = await StatusRecorder.start(admin, namespace, 'lost');
      server.faults.next({ kind: 'lostResponse' });
      const after = await until(
        'lost',
        'two more rotations',
        (s) => (s.rotations ?? 0) >= (before.rotations ?? 0) + 2,
        30_000,
      );
      statuses.stop();
      const log = server.refreshLog();
      const lost = server.faults.log();
      const retries = records('lost').filter((r) => r.retry !== undefined);
      console.log(
        `grace window, lost response: faults ${JSON.stringify(lost.map((f) => [f.fault.kind, f.processed]))}; ` +
          `retries ${JSON.stringify(retries.map((r) => r.retry))}; refresh log ` +
          `${JSON.stringify(log.map((e) => `${e.presented}:${String(e.status)}`))}; Degraded ` +
          JSON.stringify(
            statuses.with('Degraded', 'True').map((o) => condition(o.status, 'Degraded')?.reason),
          ),
      );
      expect(lost).toHaveLength(1);
      expect(lost[0]?.processed, 'the provider rotated before the answer was lost').toBe(true);
      expect(retries.map((r) => r.retry)).toEqual(['grace']);
      // The one presentation of a consumed token came inside the window and was answered normally.
      expect(
        log.filter((e) => e.presented !== 'current').map((e) => `${e.presented}:${String(e.status)}`),
      ).toEqual(['in-grace:200']);
      expect(server.reuseCount()).toBe(0);
      expect(after.chainGeneration).toBe(1);
      expect(server.loginAttempts(), 'no recovery login').toEqual([]);
      expect(statuses.with('ChainBroken', 'True')).toEqual([]);
      // The access token was valid all along: consumers saw no failure.
      expect(statuses.observed.filter((o) => !ready(o.status))).toEqual([]);
    }, 90_000);

    // The answer is held back past the operator's request timeout (3 s), longer than the 2 s window.
    it('an answer lost past the window: the provider says the token was used, chain broken, TOTP login, new chain', async ({
      expect,
    }) => {
      const server = await provider({ accessTokenTtlSec: 6, graceWindowSec: 2 });
      await graceConnection(server, 'late', '2s', { spec: { recovery } });
      await until('late', 'a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
      const statuses = await StatusRecorder.start(admin, namespace, 'late');
      server.faults.next({ kind: 'delay', ms: REQUEST_TIMEOUT_MS + 3_000 });
      const recovered = await until(
        'late',
        'a new chain that rotates',
        (s) => ready(s) && (s.chainGeneration ?? 0) >= 2 && (s.rotations ?? 0) >= 1,
        60_000,
      );
      statuses.stop();
      const log = server.refreshLog();
      const broken = statuses.with('ChainBroken', 'True').map((o) => condition(o.status, 'ChainBroken'));
      console.log(
        `grace window, answer lost past it: ChainBroken ${JSON.stringify(broken[0])}; refresh log ` +
          `${JSON.stringify(log.map((e) => `${e.presented}:${String(e.status)}`))}; logins ${String(server.loginAttempts().length)}`,
      );
      expect(broken.length).toBeGreaterThan(0);
      expect(broken.map((c) => c?.reason)).toEqual(broken.map(() => 'RefreshResponseLost'));
      // Never presented again: no presentation of a consumed token at all, so none revoked the family.
      expect(log.every((e) => e.presented === 'current')).toBe(true);
      expect(server.reuseCount()).toBe(0);
      expect(server.loginAttempts().map((a) => a.passwordOk)).toEqual([true]);
      expect(condition(recovered, 'ChainBroken')?.status).toBe('False');
      const reasons = await eventReasons(admin, namespace, 'late');
      expect(reasons).toContain('ChainBroken');
      expect(reasons).toContain('RecoveryLoginSucceeded');
    }, 90_000);

    // Auth0 and Cognito offer no RFC 7662 introspection: with the endpoints named instead of
    // discovered, the operator cannot ask, so a loss past the window breaks the chain all the same.
    it('an answer lost past the window at a server without introspection, no recovery: ChainBroken, Ready=False', async ({
      expect,
    }) => {
      const server = await provider({ accessTokenTtlSec: 6, graceWindowSec: 2 });
      await graceConnection(server, 'opaque', '2s', {
        provider: { issuerURL: undefined, tokenURL: server.tokenEndpoint },
      });
      await until('opaque', 'a rotation', (s) => ready(s) && (s.rotations ?? 0) >= 1);
      server.faults.next({ kind: 'delay', ms: REQUEST_TIMEOUT_MS + 3_000 });
      const broken = await until(
        'opaque',
        'ChainBroken and Ready=False',
        (s) => condition(s, 'ChainBroken')?.status === 'True' && !ready(s),
        30_000,
      );
      console.log(`grace window, no introspection: ${JSON.stringify(condition(broken, 'ChainBroken'))}`);
      expect(condition(broken, 'ChainBroken')?.reason).toBe('RefreshResponseLost');
      expect(condition(broken, 'ChainBroken')?.message).toContain('cannot say');
      expect(condition(broken, 'Ready')?.reason).toBe('RefreshResponseLost');
      expect(server.refreshLog().every((e) => e.presented === 'current')).toBe(true);
      expect(server.reuseCount()).toBe(0);
    }, 60_000);
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
