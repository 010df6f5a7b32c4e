import type * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  condition,
  connection,
  createConnection,
  createSecret,
  getConnectionStatus,
  readSecretData,
  waitFor,
} from '../harness/builders.ts';
import { applyCRDs, createNamespace, loadKubeConfig } from '../harness/kube.ts';
import {
  setupOperatorEnvironment,
  startOperator,
  type OperatorEnvironment,
  type OperatorProcess,
} from '../harness/operator.ts';
import { startTestOidcServer, type TestOidcServer } from '../harness/oidc-server.ts';

describe('single-writer rotation against oidc-provider', () => {
  let admin: k8s.KubeConfig;
  let env: OperatorEnvironment;
  let oidc: TestOidcServer;
  let namespace: string;
  let operator: OperatorProcess;

  beforeAll(async () => {
    admin = loadKubeConfig(inject('kubeconfig'));
    await applyCRDs(admin);
    env = await setupOperatorEnvironment(admin);
    // Reuse of a rotated refresh token revokes the whole family; access tokens live 6 s.
    oidc = await startTestOidcServer({ accessTokenTtlSec: 6, graceWindowSec: 0 });
    namespace = await createNamespace(admin, 'rotation');
    await createSecret(admin, namespace, 'client', { client_secret: oidc.clients[0]?.clientSecret ?? '' });
    operator = startOperator({
      env,
      identity: 'operator-a',
      args: ['--secret-propagation', '2s', '--watch-namespace', namespace],
    });
  });

  afterAll(async () => {
    await operator.kill();
    await oidc.close();
  });

  it('reaches Ready and replaces the access token before every expiry, 10 rotations in a row', async () => {
    await createSecret(admin, namespace, 'books-seed', {
      refresh_token: await oidc.seedRefreshToken({ clientId: 'operator' }),
    });
    await createConnection(admin, connection(namespace, 'books', oidc.issuer));

    const seen: { token: string; expiresAt: number; seenAt: number }[] = [];
    await waitFor(
      '11 distinct access tokens in the output Secret',
      async () => {
        const data = await readSecretData(admin, namespace, 'books-token');
        const token = data?.access_token;
        if (token && token !== seen.at(-1)?.token) {
          const seenAt = Date.now();
          expect(await oidc.isAccessTokenActive(token), 'the provider accepts the access token').toBe(true);
          seen.push({ token, expiresAt: Date.parse(data.expires_at ?? ''), seenAt });
        }
        return seen.length >= 11;
      },
      120_000,
      100,
    );
    for (let i = 1; i < seen.length; i++) {
      const previous = seen[i - 1];
      const current = seen[i];
      if (!previous || !current) continue;
      expect(
        current.seenAt,
        `rotation ${i} reached the Secret before the previous token expired`,
      ).toBeLessThan(previous.expiresAt);
    }
    const status = await getConnectionStatus(admin, namespace, 'books');
    expect(condition(status, 'Ready')?.status).toBe('True');
    expect(status.rotations).toBeGreaterThanOrEqual(10);
    expect(oidc.reuseCount()).toBe(0);
    const data = await readSecretData(admin, namespace, 'books-token');
    expect(Object.keys(data ?? {}).sort()).toEqual(['access_token', 'expires_at', 'token_type']);
    expect(data?.token_type).toBe('Bearer');
  });
});
