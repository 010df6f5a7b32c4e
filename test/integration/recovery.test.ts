// Recovery login against oidc-provider with a TOTP step in its login interaction: implicit mode,
// bootstrap without a seed, recovery of a broken chain through the code flow, and the failures that
// must stop (wrong password), be told apart (wrong TOTP secret, unexpected form) and never reuse a code.
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  OutputTokenWatcher,
  condition,
  connection,
  createConnection,
  createSecret,
  getConnectionStatus,
  readSecretData,
  waitFor,
} from '../harness/builders.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import { DEFAULT_REDIRECT_URI, type TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';
import { StatusRecorder } from '../harness/status-watch.ts';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
function base32(bytes: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31] ?? '';
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31] ?? '';
  return out;
}

// Short TOTP periods let the test log in every few seconds without ever sending a code twice.
const TOTP_PERIOD_SEC = 5;
const FORM = {
  loginFormSelector: '#login-form',
  usernameField: 'username',
  passwordField: 'password',
  otpFormSelector: '#otp-form',
  otpField: 'otp',
};

describe('recovery login with TOTP against oidc-provider', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let oidc: TestOidcServer;
  let namespace: string;
  let operator: OperatorProcess;
  const password = canary('password');
  const totpSecret = base32(randomBytes(20));
  const secrets = [password, totpSecret];

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    oidc = await scenario.startProvider({
      accessTokenTtlSec: 15,
      grantTypes: ['refresh_token', 'authorization_code', 'implicit'],
      login: {
        users: [
          { accountId: 'alice', username: 'alice', password, totpSecret, totpPeriodSec: TOTP_PERIOD_SEC },
        ],
      },
    });
    const clientSecret = clientSecretOf(oidc);
    secrets.push(clientSecret);
    namespace = await scenario.clientNamespace('recovery', clientSecret);
    await createSecret(admin, namespace, 'alice', {
      username: 'alice',
      password,
      totp: `otpauth://totp/test:alice?secret=${totpSecret}&period=${TOTP_PERIOD_SEC}&issuer=test`,
    });
    await createSecret(admin, namespace, 'alice-wrong-password', {
      username: 'alice',
      password: 'not-the-password',
      totp: `otpauth://totp/test:alice?secret=${totpSecret}&period=${TOTP_PERIOD_SEC}`,
    });
    await createSecret(admin, namespace, 'alice-wrong-totp', {
      username: 'alice',
      password,
      totp: `otpauth://totp/test:alice?secret=${base32(randomBytes(20))}&period=${TOTP_PERIOD_SEC}`,
    });
    operator = scenario.startOperator({
      env: await scenario.operatorEnvironment(),
      identity: 'recovery',
      watchNamespace: namespace,
      args: ['--secret-propagation', '6s'],
    });
  });

  afterAll(async () => {
    await scenario.close();
  });

  function loginSpec(flow: 'code' | 'implicit', credentials = 'alice', form: Record<string, string> = FORM) {
    return {
      flow,
      redirectURI: DEFAULT_REDIRECT_URI,
      usernameRef: { name: credentials },
      passwordRef: { name: credentials },
      totpSecretRef: { name: credentials },
      form,
      maxAttemptsPerHour: 30,
    };
  }

  // Eleven 15 s tokens take about 100 s (CI runs took up to 103 s): the default test timeout of 120 s
  // would end the test long before the 240 s its wait allows.
  it('implicit mode keeps the output Secret valid through 10 consecutive expiries with no refresh token', async () => {
    await createConnection(
      admin,
      connection(namespace, 'implicit', oidc.issuer, {
        grant: { seedSecretRef: undefined },
        spec: { scopes: ['openid'], recovery: { login: loginSpec('implicit') } },
      }),
    );
    const watcher = new OutputTokenWatcher(admin, namespace, 'implicit-token', async (token) => {
      expect(await oidc.isAccessTokenActive(token)).toBe(true);
      secrets.push(token);
    });
    await watcher.waitForTokens(11, 240_000);
    expect(watcher.lateRotations(), 'each login came before the previous token expired').toEqual([]);
    expect(oidc.refreshLog().length, 'no refresh token was ever used').toBe(0);
    const status = await getConnectionStatus(admin, namespace, 'implicit');
    expect(condition(status, 'Ready')?.status).toBe('True');
  }, 270_000);

  it('bootstraps a connection with no seed through the code flow, then rotates normally', async () => {
    await createConnection(
      admin,
      connection(namespace, 'bootstrap', oidc.issuer, {
        grant: { seedSecretRef: undefined },
        spec: { scopes: ['openid', 'offline_access'], recovery: { login: loginSpec('code') } },
      }),
    );
    const status = await waitFor(
      'a rotation after the bootstrap login',
      async () => {
        const s = await getConnectionStatus(admin, namespace, 'bootstrap');
        return condition(s, 'Ready')?.status === 'True' && (s.rotations ?? 0) >= 1 ? s : undefined;
      },
      60_000,
    );
    expect(status.chainGeneration).toBe(1);
    const data = await readSecretData(admin, namespace, 'bootstrap-token');
    expect(await oidc.isAccessTokenActive(data?.access_token ?? '')).toBe(true);
  });

  it('recovers a chain broken on purpose through the code flow, and the new chain keeps rotating', async () => {
    await scenario.seededConnection(
      oidc,
      namespace,
      'broken',
      { spec: { scopes: ['openid', 'offline_access'], recovery: { login: loginSpec('code') } } },
      'alice',
    );
    await waitFor(
      'Ready on the seeded chain',
      async () =>
        condition(await getConnectionStatus(admin, namespace, 'broken'), 'Ready')?.status === 'True',
      30_000,
    );
    const statuses = await StatusRecorder.start(admin, namespace, 'broken');
    await oidc.revokeAllGrants();
    const recovered = await waitFor(
      'a new chain that rotates',
      async () => {
        const s = await getConnectionStatus(admin, namespace, 'broken');
        return (s.chainGeneration ?? 0) >= 2 &&
          (s.rotations ?? 0) >= 1 &&
          condition(s, 'Ready')?.status === 'True'
          ? s
          : undefined;
      },
      90_000,
    );
    expect(condition(recovered, 'ChainBroken')?.status).toBe('False');
    const events = await admin.makeApiClient(k8s.CoreV1Api).listNamespacedEvent({ namespace });
    const reasons = events.items.filter((e) => e.involvedObject.name === 'broken');
    expect(reasons.map((e) => e.reason)).toContain('RecoveryLoginSucceeded');
    // The break was visible while it lasted, with a Warning, even though a login mended it.
    expect(reasons.filter((e) => e.type === 'Warning').map((e) => e.reason)).toContain('ChainBroken');
    statuses.stop();
    const brokenAt = statuses.with('ChainBroken', 'True');
    expect(brokenAt.length, 'a status with ChainBroken=True was written').toBeGreaterThan(0);
    expect(brokenAt.some((o) => condition(o.status, 'Recovering')?.status === 'True')).toBe(true);
    const mendedAt = statuses.with('ChainBroken', 'False').filter((o) => o.at > (brokenAt[0]?.at ?? 0));
    expect(mendedAt.length, 'ChainBroken=False after the break').toBeGreaterThan(0);
    // Ready says whether the output Secret holds a token that has not expired, in every status
    // written: True only before the expiry it names, False only once that expiry has passed. The
    // tolerance covers a login in flight when the old token expires (status is written around it).
    const TOLERANCE_MS = 2 * TOTP_PERIOD_SEC * 1000;
    for (const o of statuses.observed) {
      const ready = condition(o.status, 'Ready')?.status;
      const expiresAt = Date.parse(o.status.accessTokenExpiresAt ?? '');
      if (ready === 'True')
        expect(expiresAt, `Ready=True at ${o.at} with a token that expired`).toBeGreaterThan(
          o.at - TOLERANCE_MS,
        );
      if (ready === 'False')
        expect(expiresAt, `Ready=False at ${o.at} with a valid token`).toBeLessThan(o.at + TOLERANCE_MS);
    }
  });

  it('stops after exactly one attempt with a wrong password: Ready=False LoginFailed', async () => {
    const attemptsBefore = oidc.loginAttempts().length;
    await createConnection(
      admin,
      connection(namespace, 'wrongpw', oidc.issuer, {
        grant: { seedSecretRef: undefined },
        spec: { recovery: { login: loginSpec('code', 'alice-wrong-password') } },
      }),
    );
    const status = await waitFor(
      'LoginFailed',
      async () => {
        const s = await getConnectionStatus(admin, namespace, 'wrongpw');
        return condition(s, 'Ready')?.reason === 'LoginFailed' ? s : undefined;
      },
      30_000,
    );
    expect(condition(status, 'Ready')?.status).toBe('False');
    // The operator re-checks a blocked connection every few minutes at most; none must log in again.
    await new Promise((r) => setTimeout(r, 8_000));
    const attempts = oidc
      .loginAttempts()
      .slice(attemptsBefore)
      .filter((a) => !a.passwordOk);
    expect(attempts).toHaveLength(1);
  });

  it.each([
    {
      name: 'wrongtotp',
      what: 'a wrong TOTP secret',
      credentials: 'alice-wrong-totp',
      form: FORM,
      reason: 'TotpRejected',
    },
    {
      name: 'wrongform',
      what: 'a login form not as expected',
      credentials: 'alice',
      form: { ...FORM, loginFormSelector: '#no-such-form' },
      reason: 'LoginFormUnexpected',
    },
  ])('tells $what apart: $reason', async ({ name, credentials, form, reason }) => {
    await createConnection(
      admin,
      connection(namespace, name, oidc.issuer, {
        grant: { seedSecretRef: undefined },
        spec: { recovery: { login: { ...loginSpec('code', credentials, form), maxAttemptsPerHour: 1 } } },
      }),
    );
    const status = await waitFor(
      reason,
      async () => {
        const s = await getConnectionStatus(admin, namespace, name);
        return condition(s, 'Ready')?.reason === reason ? s : undefined;
      },
      60_000,
    );
    expect(condition(status, 'Ready')?.status).toBe('False');
  });

  it('never sent the provider the same TOTP code twice', () => {
    const received = oidc.totpCodesReceived();
    expect(received.length).toBeGreaterThan(10);
    // The same digits may recur by chance many steps apart; within the verifier's window they would
    // be a resend.
    for (const [i, a] of received.entries()) {
      for (const b of received.slice(i + 1)) {
        if (a.code === b.code) expect(Math.abs(a.at - b.at)).toBeGreaterThan(3 * TOTP_PERIOD_SEC * 1000);
      }
    }
  });

  it('leaks no password, TOTP secret, code or token into logs, Events or status', async () => {
    const codes = oidc.totpCodesReceived().map((c) => c.code);
    const address = operator.lines
      .map((l) => /"address":"([^"]+)"/.exec(l)?.[1])
      .find((a): a is string => a !== undefined);
    const metricsText = address ? await (await fetch(`http://${address}/metrics`)).text() : '';
    expect(metricsText).toContain('oauth_token_operator_recovery_logins_total');
    const hits = await findLeaks([...secrets], {
      lines: operator.lines,
      kubeConfig: admin,
      namespaces: [namespace],
      metricsText,
    });
    expect(hits).toEqual([]);
    // Six-digit codes are too short to scan for safely in free text; look for them as log values.
    for (const code of codes) {
      expect(operator.lines.some((l) => l.includes(`"${code}"`))).toBe(false);
      expect(metricsText.includes(`"${code}"`)).toBe(false);
    }
  });
});
