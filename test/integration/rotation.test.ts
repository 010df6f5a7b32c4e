import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  condition,
  connection,
  createConnection,
  deleteConnection,
  getConnectionStatus,
  OutputTokenWatcher,
  readSecretData,
  untilStatus,
  waitFor,
} from '../harness/builders.ts';
import { GROUP, isApiError, PLURAL, VERSION } from '../harness/kube.ts';
import { findLeaks } from '../harness/leaks.ts';
import type { TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

describe('single-writer rotation against oidc-provider', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let env: OperatorEnvironment;
  let oidc: TestOidcServer;
  let namespace: string;
  let operator: OperatorProcess;
  const observedTokens: string[] = [];

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    env = await scenario.operatorEnvironment();
    // Reuse of a rotated refresh token revokes the whole family; access tokens live 6 s.
    oidc = await scenario.startProvider({
      accessTokenTtlSec: 6,
      graceWindowSec: 0,
      grantTypes: ['refresh_token', 'client_credentials'],
    });
    namespace = await scenario.clientNamespace('rotation', clientSecretOf(oidc));
    operator = scenario.startOperator({
      env,
      identity: 'operator-a',
      watchNamespace: namespace,
      args: ['--secret-propagation', '2s'],
    });
  });

  afterAll(async () => {
    await scenario.close();
  });

  it('reaches Ready and replaces the access token before every expiry, 10 rotations in a row', async () => {
    await scenario.seededConnection(oidc, namespace, 'books');

    const watcher = new OutputTokenWatcher(admin, namespace, 'books-token', async (token) => {
      expect(await oidc.isAccessTokenActive(token), 'the provider accepts the access token').toBe(true);
      observedTokens.push(token);
    });
    await watcher.waitForTokens(11, 120_000);
    expect(
      watcher.lateRotations(),
      'every rotation reached the Secret before the previous token expired',
    ).toEqual([]);
    const status = await getConnectionStatus(admin, namespace, 'books');
    expect(condition(status, 'Ready')?.status).toBe('True');
    expect(status.rotations).toBeGreaterThanOrEqual(10);
    expect(oidc.reuseCount()).toBe(0);
    const data = await readSecretData(admin, namespace, 'books-token');
    expect(Object.keys(data ?? {}).sort()).toEqual(['access_token', 'expires_at', 'token_type']);
    expect(data?.token_type).toBe('Bearer');
  });

  it('serves a client-credentials connection: no chain, just fresh access tokens', async () => {
    await createConnection(
      admin,
      connection(namespace, 'machine', oidc.issuer, {
        grant: { type: 'clientCredentials', seedSecretRef: undefined },
        output: { keys: { authorizationHeader: 'authorization' } },
      }),
    );
    const data = await waitFor('the machine token', async () => {
      const d = await readSecretData(admin, namespace, 'machine-token');
      return d?.access_token ? d : undefined;
    });
    expect(await oidc.isAccessTokenActive(data.access_token ?? '')).toBe(true);
    expect(data.authorization).toBe(`Bearer ${data.access_token ?? ''}`);
    const status = await getConnectionStatus(admin, namespace, 'machine');
    expect(condition(status, 'Ready')?.status).toBe('True');
  });

  it("waits for an earlier same-name connection's output Secret to be collected, then writes its own", async () => {
    const core = admin.makeApiClient(k8s.CoreV1Api);
    // What a connection deleted and created again under its name finds when the garbage collector
    // has not yet removed its predecessor's Secret. The owner is gone, so the collector deletes the
    // Secret at once, but a finalizer of this test holds it (deleting, not yet deleted) until the
    // test lets go: the window a busy collector leaves, made as long as the test needs.
    const hold = 'test.oauth-token-operator.dev/hold';
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: {
          name: 'again-token',
          finalizers: [hold],
          ownerReferences: [
            {
              apiVersion: `${GROUP}/${VERSION}`,
              kind: 'OAuthConnection',
              name: 'again',
              uid: '00000000-0000-0000-0000-000000000001',
              controller: true,
            },
          ],
        },
        type: 'Opaque',
        data: { access_token: Buffer.from('old').toString('base64') },
      },
    });
    await createConnection(
      admin,
      connection(namespace, 'again', oidc.issuer, {
        grant: { type: 'clientCredentials', seedSecretRef: undefined },
      }),
    );
    const waiting = await untilStatus(
      admin,
      namespace,
      'again',
      'Ready=False OutputSecretPendingDeletion',
      (s) => condition(s, 'Ready')?.reason === 'OutputSecretPendingDeletion',
    );
    expect(condition(waiting, 'Refreshing')?.reason, 'retried, not stopped for a person').toBe('Retrying');
    expect((await readSecretData(admin, namespace, 'again-token'))?.access_token).toBe('old');
    // The collector's deletion is under way; letting go of the hold completes it.
    await waitFor('the collector to delete the Secret', async () => {
      const held = await core.readNamespacedSecret({ name: 'again-token', namespace });
      return held.metadata?.deletionTimestamp !== undefined;
    });
    await core.patchNamespacedSecret(
      { name: 'again-token', namespace, body: { metadata: { finalizers: null } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    // Retried with the transient backoff (seconds), not the configuration backoff (a minute).
    await untilStatus(
      admin,
      namespace,
      'again',
      'Ready',
      (s) => condition(s, 'Ready')?.status === 'True',
      30_000,
    );
    const secret = await core.readNamespacedSecret({ name: 'again-token', namespace });
    const status = await getConnectionStatus(admin, namespace, 'again');
    expect(secret.metadata?.ownerReferences?.[0]?.name).toBe('again');
    expect(secret.metadata?.ownerReferences?.[0]?.uid).not.toBe('00000000-0000-0000-0000-000000000001');
    expect(condition(status, 'Ready')?.status).toBe('True');
  });

  it('on delete revokes the refresh token, removes its state, and the output Secret goes with its owner', async () => {
    const stateName = `oac-${namespace}.books`;
    const core = admin.makeApiClient(k8s.CoreV1Api);
    const custom = admin.makeApiClient(k8s.CustomObjectsApi);
    await custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
        name: 'books',
        body: { spec: { revokeOnDelete: true } },
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    const state = await core.readNamespacedSecret({ name: stateName, namespace: env.namespace });
    const chain = JSON.parse(Buffer.from(state.data?.['state.json'] ?? '', 'base64').toString('utf8')) as {
      refreshToken: string;
    };
    await deleteConnection(admin, namespace, 'books');
    await waitFor('the state Secret to be gone', async () => {
      try {
        await core.readNamespacedSecret({ name: stateName, namespace: env.namespace });
        return false;
      } catch (err) {
        return isApiError(err, 404);
      }
    });
    // Within the chain's last moments a rotation may have replaced the token we read: accept either
    // that one or its successor being revoked, but never an active chain left behind.
    await waitFor(
      'the refresh token revoked',
      () => oidc.refreshTokenState(chain.refreshToken) !== 'current',
      10_000,
    );
    await waitFor(
      'the output Secret collected by the garbage collector',
      async () => (await readSecretData(admin, namespace, 'books-token')) === undefined,
      30_000,
    );
  });

  it('leaks no secret into logs, Events, status or metrics', async () => {
    const address = operator.lines
      .map((l) => /"address":"([^"]+)"/.exec(l)?.[1])
      .find((a): a is string => a !== undefined);
    const metricsText = address ? await (await fetch(`http://${address}/metrics`)).text() : '';
    expect(metricsText).toContain('oauth_token_operator_refreshes_total');
    expect(metricsText).toContain('leader_election_master_status');
    expect(metricsText).toContain('workqueue_depth');
    const secrets = [oidc.clients[0]?.clientSecret ?? '', ...observedTokens];
    const hits = await findLeaks(secrets, {
      lines: operator.lines,
      kubeConfig: admin,
      namespaces: [namespace],
      metricsText,
    });
    expect(hits).toEqual([]);
  });
});
