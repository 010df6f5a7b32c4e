// The API server out of reach for 45 s between the provider's answer and the persist. The shared test
// API server cannot be stopped (other files use it), so the operators are cut off from it instead:
// they reach it through a TCP proxy in this process (TLS passes through untouched), which for 45 s
// resets every connection it holds and every new one, the moment the provider has received a refresh
// (answered 3 s later). The leader cannot store the answer, nor renew its Lease: it loses leadership,
// keeps trying within its persist budget (60 s by default), stores the new refresh token once the
// API is back, and exits 1; the other replica takes over and the chain keeps rotating.
import * as k8s from '@kubernetes/client-node';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { OAuthConnection } from '../../src/api/v1alpha1.ts';
import { StateStore, type ChainState } from '../../src/controller/state-store.ts';
import { condition, getConnectionStatus, waitFor } from '../harness/builders.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

const OUTAGE_MS = 45_000;
const ANSWER_DELAY_MS = 3_000;
// The leader must still hold its Lease when the delayed answer arrives (renew deadline 8 s > 3 s), so
// that the answer is in hand and only its persist meets the outage.
const LEASE = ['--lease-duration', '10s', '--renew-deadline', '8s', '--retry-period', '1s'];
const CONNECTION = 'books';

interface Address {
  host: string;
  port: number;
}

/** A TCP proxy to the API server that can be cut: then it resets every connection, old and new. */
class ApiProxy {
  /** Connections reset because they arrived while cut. */
  refused = 0;
  private readonly server: Server;
  private readonly target: Address;
  private readonly sockets = new Set<Socket>();
  private cut = false;

  private constructor(server: Server, target: Address) {
    this.server = server;
    this.target = target;
    server.on('connection', (client) => {
      this.accept(client);
    });
  }

  static async start(target: Address): Promise<ApiProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new ApiProxy(server, target);
  }

  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('the proxy is not listening');
    return address.port;
  }

  cutOff(): void {
    this.cut = true;
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.sockets.clear();
  }

  restore(): void {
    this.cut = false;
  }

  async close(): Promise<void> {
    this.cutOff();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined);
    if (this.cut) {
      this.refused += 1;
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    for (const [socket, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(socket);
      socket.on('error', () => other.destroy());
      socket.on('close', () => {
        this.sockets.delete(socket);
        other.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

/** Where the kubeconfig's current cluster lives. */
function apiServerOf(kubeconfigPath: string): Address {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const url = new URL(kc.getCurrentCluster()?.server ?? '');
  return { host: url.hostname, port: Number(url.port || 443) };
}

/** A copy of the kubeconfig whose current cluster is reached through 127.0.0.1:port. */
function kubeconfigThrough(kubeconfigPath: string, port: number): string {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const current = kc.getCurrentCluster();
  if (!current) throw new Error(`${kubeconfigPath} has no current cluster`);
  const { host } = apiServerOf(kubeconfigPath);
  const proxied = new k8s.KubeConfig();
  proxied.loadFromOptions({
    clusters: kc.clusters.map((cluster) =>
      cluster.name === current.name
        ? {
            ...cluster,
            server: `https://127.0.0.1:${String(port)}`,
            // The certificate names the API server's own host; 127.0.0.1 needs no override.
            ...(host !== '127.0.0.1' ? { tlsServerName: host } : {}),
          }
        : cluster,
    ),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  const path = join(mkdtempSync(join(tmpdir(), 'oto-outage-')), 'kubeconfig');
  writeFileSync(path, proxied.exportConfig(), { mode: 0o600 });
  return path;
}

function logged(operator: OperatorProcess, message: string): Record<string, unknown>[] {
  return operator.lines.flatMap((line) => {
    try {
      const record = JSON.parse(line) as Record<string, unknown>;
      return record.msg === message ? [record] : [];
    } catch {
      return [];
    }
  });
}

describe('API server unreachable between the provider’s answer and the persist', () => {
  let scenario: Scenario;
  let apiProxy: ApiProxy | undefined;

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
  });

  afterAll(async () => {
    await scenario.close('SIGKILL');
    await apiProxy?.close();
  });

  it('stores the new refresh token once the API is back, and the chain keeps rotating', async () => {
    const admin = scenario.admin;
    const oidc = await scenario.startProvider({ accessTokenTtlSec: 20, graceWindowSec: 0 });
    const namespace = await scenario.clientNamespace('outage', clientSecretOf(oidc));
    const direct = await scenario.operatorEnvironment();
    const proxy = await ApiProxy.start(apiServerOf(direct.kubeconfigPath));
    apiProxy = proxy;
    const env: OperatorEnvironment = {
      namespace: direct.namespace,
      kubeconfigPath: kubeconfigThrough(direct.kubeconfigPath, proxy.port),
    };
    const start = (identity: string): OperatorProcess =>
      scenario.startOperator({
        env,
        identity,
        watchNamespace: namespace,
        args: [...LEASE, '--secret-propagation', '2s'],
      });
    const states = new StateStore(admin.makeApiClient(k8s.CoreV1Api), env.namespace);
    const chainState = async (): Promise<ChainState | undefined> =>
      (await states.read({ metadata: { namespace, name: CONNECTION } } as OAuthConnection))?.state;

    // outage-a leads; outage-b stands by.
    const leader = start('outage-a');
    await waitFor(
      'outage-a to lead',
      () => logged(leader, 'became leader; starting workers').length > 0,
      60_000,
    );
    const follower = start('outage-b');
    await waitFor(
      'outage-b to campaign',
      () => logged(follower, 'informers synced; campaigning for leadership').length > 0,
      60_000,
    );
    await scenario.seededConnection(oidc, namespace, CONNECTION);
    const before = await waitFor(
      'the chain to rotate once',
      async () => {
        const state = await chainState();
        return state !== undefined && state.rotations >= 1 && state.claim === undefined ? state : undefined;
      },
      60_000,
    );

    // The next refresh is processed at once and answered 3 s later; the API goes away as it arrives.
    oidc.faults.next({ kind: 'delay', ms: ANSWER_DELAY_MS });
    const arrivedBefore = oidc.faults.log().length;
    await waitFor(
      'the next refresh to reach the provider',
      () => oidc.faults.log().length > arrivedBefore,
      60_000,
      10,
    );
    proxy.cutOff();
    const cutAt = Date.now();
    await waitFor(
      'outage-a to hold the answer and fail to store it',
      () => logged(leader, 'persisting the new tokens failed; retrying').length > 0,
      OUTAGE_MS,
    );
    const answeredAt = Date.now();
    // The outage itself: nothing to observe but the operators' retries.
    await new Promise((r) => setTimeout(r, cutAt + OUTAGE_MS - Date.now()));
    proxy.restore();
    const backAt = Date.now();

    const persisted = await waitFor(
      'the new refresh token in the state Secret',
      async () => {
        const state = await chainState();
        return state !== undefined && state.rotations > before.rotations && state.claim === undefined
          ? state
          : undefined;
      },
      30_000,
      100,
    );
    const persistedAt = Date.now();
    expect(
      oidc.refreshTokenState(persisted.refreshToken ?? ''),
      'the stored token is the provider’s latest',
    ).toBe('current');
    // It was outage-a that stored its own answer. It logs that once the API server has answered its
    // write, which can come after this process has already read the stored state: wait for the line.
    const storedBy = await waitFor(
      'the replica that stored the answer to log it',
      () =>
        [leader, follower].find((operator) =>
          logged(operator, 'tokens refreshed').some((record) => record.rotations === before.rotations + 1),
        ),
      30_000,
      50,
    );
    expect(storedBy === leader ? 'outage-a' : 'outage-b', 'the replica that stored the answer').toBe(
      'outage-a',
    );

    // outage-a lost its Lease during the outage: once its persist is done it exits 1; outage-b leads.
    const exitCode = await leader.exited;
    const exitedAt = Date.now();
    expect(exitCode).toBe(1);
    expect(logged(leader, 'lost leadership; stopping')).toHaveLength(1);
    await waitFor(
      'outage-b to lead',
      () => logged(follower, 'became leader; starting workers').length > 0,
      30_000,
    );

    // The chain keeps rotating under the new leader.
    const after = await waitFor(
      'two more rotations',
      async () => {
        const status = await getConnectionStatus(admin, namespace, CONNECTION);
        return (status.rotations ?? 0) >= before.rotations + 3 &&
          condition(status, 'Ready')?.status === 'True'
          ? status
          : undefined;
      },
      60_000,
    );
    const final = await chainState();
    expect(oidc.refreshTokenState(final?.refreshToken ?? '')).toBe('current');
    expect(oidc.reuseCount(), 'refresh-token reuses recorded by the provider').toBe(0);
    expect(condition(after, 'ChainBroken')?.status).not.toBe('True');
    expect(final?.chainGeneration).toBe(1);
    const lines = [leader, follower].flatMap((operator) => operator.lines);
    expect(
      lines.filter((line) =>
        /chain marked broken|"code":"chain_broken"|could not store the new tokens/.test(line),
      ),
    ).toEqual([]);

    console.log(
      `outage: API cut ${String(backAt - cutAt)} ms (${String(proxy.refused)} connections reset); the answer was in hand ` +
        `${String(answeredAt - cutAt)} ms into it; the token was stored ${String(persistedAt - backAt)} ms after the API came back ` +
        `(rotation ${String(persisted.rotations)}); outage-a exited (1) ${String(exitedAt - backAt)} ms after the API came back; ` +
        `rotations ${String(before.rotations)} → ${String(after.rotations ?? 0)}`,
    );
  }, 180_000);
});
