// The chain engine against the real API server and oidc-provider: a state Secret deleted or
// restored from an older copy is recognised and its token never presented; a seed two connections
// name is imported by one only; a failing connection poked by events sends nothing before its
// backoff is over; a spec that would make the scheduler spin is held to the minimum request gap.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stateSecretName } from '../../src/controller/state-store.ts';
import {
  condition,
  connection,
  createConnection,
  createSecret,
  deleteConnection,
  getConnectionStatus,
  waitFor,
  type ConnectionStatus,
} from '../harness/builders.ts';
import type { TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorEnvironment } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

const TOKEN_TTL_SEC = 6;

describe('chain engine: lost state, shared seeds, backoff, hot loops', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let oidc: TestOidcServer;
  let env: OperatorEnvironment;
  let namespace: string;

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    core = admin.makeApiClient(k8s.CoreV1Api);
    oidc = await scenario.startProvider({ accessTokenTtlSec: TOKEN_TTL_SEC, graceWindowSec: 0 });
    namespace = await scenario.clientNamespace('chain', clientSecretOf(oidc));
    env = await scenario.operatorEnvironment();
    scenario.startOperator({
      env,
      identity: 'chain',
      watchNamespace: namespace,
      args: ['--secret-propagation', '2s'],
    });
  });

  afterAll(async () => {
    await scenario.close();
  });

  const status = (name: string): Promise<ConnectionStatus> => getConnectionStatus(admin, namespace, name);

  async function rotated(name: string, atLeast: number): Promise<ConnectionStatus> {
    return waitFor(
      `${name}: ${atLeast} rotations`,
      async () => {
        const s = await status(name);
        return (s.rotations ?? 0) >= atLeast && condition(s, 'Ready')?.status === 'True' ? s : undefined;
      },
      60_000,
    );
  }

  async function broken(name: string, reason: string): Promise<ConnectionStatus> {
    return waitFor(
      `${name}: ChainBroken ${reason}`,
      async () => {
        const s = await status(name);
        const c = condition(s, 'ChainBroken');
        return c?.status === 'True' && c.reason === reason ? s : undefined;
      },
      60_000,
    );
  }

  /** Waits until Ready turns False: the last token expired and the engine looked again, still refusing. */
  async function notReady(name: string): Promise<ConnectionStatus> {
    return waitFor(
      `${name}: Ready=False`,
      async () => {
        const s = await status(name);
        return condition(s, 'Ready')?.status === 'False' ? s : undefined;
      },
      60_000,
    );
  }

  const stateRef = (name: string) => ({ name: stateSecretName(namespace, name), namespace: env.namespace });

  it('a deleted state Secret ends in StateLost; its token is never presented', async () => {
    await scenario.seededConnection(oidc, namespace, 'deleted');
    await rotated('deleted', 2);
    await core.deleteNamespacedSecret(stateRef('deleted'));
    const presentedBefore = oidc.refreshLog().length;
    const lost = await broken('deleted', 'StateLost');
    expect(condition(lost, 'ChainBroken')?.message).toContain('state Secret');
    await notReady('deleted');
    // Nothing was presented after the loss, and nothing of this chain was reused.
    expect(oidc.refreshLog().length).toBe(presentedBefore);
    expect(oidc.reuseCount()).toBe(0);
  });

  it('a state Secret restored from an older copy ends in StateLost; the stale token is never presented', async () => {
    await scenario.seededConnection(oidc, namespace, 'restored');
    await rotated('restored', 1);
    const old = await core.readNamespacedSecret(stateRef('restored'));
    const later = await rotated('restored', ((await status('restored')).rotations ?? 0) + 2);
    expect(later.rotations).toBeGreaterThan(1);
    const current = await core.readNamespacedSecret(stateRef('restored'));
    await core.replaceNamespacedSecret({
      ...stateRef('restored'),
      body: { metadata: current.metadata, type: current.type, data: old.data ?? {} },
    });
    const presentedBefore = oidc.refreshLog().length;
    await broken('restored', 'StateLost');
    await notReady('restored');
    expect(oidc.refreshLog().length).toBe(presentedBefore);
    expect(oidc.reuseCount()).toBe(0);
  });

  it('a seed two connections name is imported by the first only; both stay intact', async () => {
    const seed = await oidc.seedRefreshToken({ clientId: 'operator' });
    await createSecret(admin, namespace, 'shared-seed', { refresh_token: seed });
    const shared = { grant: { seedSecretRef: { name: 'shared-seed' } } };
    await createConnection(admin, connection(namespace, 'shared-a', oidc.issuer, shared));
    const first = await rotated('shared-a', 1);
    const marked = await core.readNamespacedSecret({ name: 'shared-seed', namespace });
    expect(marked.metadata?.annotations?.['oauth.token-operator.dev/consumed-by']).toMatch(
      /^[^:]+:[0-9a-f]{32}$/,
    );

    await createConnection(admin, connection(namespace, 'shared-b', oidc.issuer, shared));
    const refused = await waitFor(
      'shared-b: Ready=False SeedConsumed',
      async () => {
        const s = await status('shared-b');
        return condition(s, 'Ready')?.reason === 'SeedConsumed' ? s : undefined;
      },
      30_000,
    );
    expect(condition(refused, 'Ready')?.message).toContain('spec.grant.seedSecretRef');
    // The first chain keeps rotating; the provider saw no reuse of the shared token.
    await rotated('shared-a', (first.rotations ?? 0) + 2);
    expect(oidc.reuseCount()).toBe(0);
    expect((await status('shared-b')).chainGeneration ?? 0).toBe(0);
    // The next test counts every token request this provider receives, and makes it reject them all:
    // shared-a, still rotating, would add a rejected request of its own before or after that test
    // takes its count, as the two chains' schedules (and their jitter) fall. It goes now.
    await deleteConnection(admin, namespace, 'shared-a');
  });

  it('a failing connection poked by 20 output-Secret events sends no extra token request', async () => {
    await scenario.seededConnection(oidc, namespace, 'poked');
    await rotated('poked', 1);
    // From now on the provider rejects the client: a configuration failure with a 1-minute backoff.
    oidc.faults.next({ kind: 'oauthError', status: 401, body: { error: 'invalid_client' } }, 100);
    const failed = await waitFor(
      'poked: the first rejected request',
      async () => {
        const s = await status('poked');
        return condition(s, 'Degraded')?.reason === 'InvalidClient' ? s : undefined;
      },
      30_000,
    );
    const requestsAtFailure = oidc.faults.log().length;
    expect(requestsAtFailure).toBeGreaterThanOrEqual(1);
    const backoffEnds = Date.parse(failed.nextRefreshTime ?? '');
    // 20 events while the access token expires and the backoff runs, each a reason to look again.
    const output = { name: 'poked-token', namespace };
    for (let poke = 0; poke < 20 && Date.now() < backoffEnds - 2_000; poke++) {
      await core.patchNamespacedSecret(
        { ...output, body: { metadata: { annotations: { 'test.example.com/poke': String(poke) } } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      await new Promise((r) => setTimeout(r, 1_000));
    }
    expect(Date.now()).toBeLessThan(backoffEnds);
    expect(oidc.faults.log().length, 'token requests during the backoff').toBe(requestsAtFailure);
    oidc.faults.clear();
  });

  it('before ≥ the token lifetime does not make the scheduler spin: one request per minimum gap', async () => {
    const hot = await scenario.clientNamespace('hot', clientSecretOf(oidc));
    const hotEnv = await scenario.operatorEnvironment();
    // A floor of 5 s; the provider's tokens live 6 s and the spec asks to refresh an hour early.
    scenario.startOperator({
      env: hotEnv,
      identity: 'hot',
      watchNamespace: hot,
      args: ['--min-request-gap', '5s'],
    });
    await scenario.seededConnection(oidc, hot, 'spin', { refresh: { before: '1h' } });
    await waitFor(
      'spin: Ready',
      async () => condition(await getConnectionStatus(admin, hot, 'spin'), 'Ready')?.status === 'True',
      30_000,
    );
    // Every request rotates the token: four more rotations take at least four gaps.
    const start = (await getConnectionStatus(admin, hot, 'spin')).rotations ?? 0;
    const startedAt = Date.now();
    await waitFor(
      'spin: four more rotations',
      async () => ((await getConnectionStatus(admin, hot, 'spin')).rotations ?? 0) >= start + 4,
      60_000,
    );
    const elapsed = Date.now() - startedAt;
    console.log(`hot-loop spec: 4 token requests took ${elapsed} ms with a 5 s minimum gap`);
    expect(elapsed).toBeGreaterThanOrEqual(3 * 5_000);
  });

  it('a provider answering expires_in 0 does not make the scheduler spin: the lifetime is ignored and reported', async () => {
    // Its own provider, so that the answers it fakes reach this connection only.
    const zero = await scenario.startProvider({ accessTokenTtlSec: TOKEN_TTL_SEC });
    const ns = await scenario.clientNamespace('zero', clientSecretOf(zero));
    scenario.startOperator({
      env: await scenario.operatorEnvironment(),
      identity: 'zero',
      watchNamespace: ns,
    });
    // The provider "answers" every refresh with a token that expires at once (and no new refresh token).
    zero.faults.next(
      {
        kind: 'oauthError',
        status: 200,
        body: { access_token: 'at-zero', token_type: 'Bearer', expires_in: 0 },
      },
      50,
    );
    await scenario.seededConnection(zero, ns, 'zero', { refresh: { assumedLifetime: '1h' } });
    const ready = await waitFor(
      'zero: Ready',
      async () => {
        const s = await getConnectionStatus(admin, ns, 'zero');
        return condition(s, 'Ready')?.status === 'True' ? s : undefined;
      },
      30_000,
    );
    // Planned with the assumed lifetime: the next refresh is most of an hour away, not at once.
    expect(Date.parse(ready.nextRefreshTime ?? '') - Date.now()).toBeGreaterThan(30 * 60_000);
    await waitFor(
      'a Warning Event ExpiresInIgnored',
      async () =>
        (await core.listNamespacedEvent({ namespace: ns })).items.some(
          (e) => e.reason === 'ExpiresInIgnored',
        ),
      15_000,
    );
    expect(zero.faults.log().length, 'token requests').toBe(1);
  });
});
