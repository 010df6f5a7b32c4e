// Scenarios (b) and (c): several operator processes, leaders killed with SIGKILL, and a crash in the
// window between the provider's answer and the write of the new refresh token.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  OutputTokenWatcher,
  condition,
  getConnectionStatus,
  waitFor,
  type ConnectionOverrides,
} from '../harness/builders.ts';
import { findLeaks } from '../harness/leaks.ts';
import type { TestOidcServer } from '../harness/oidc/server.ts';
import { leaseHolder, type OperatorEnvironment, type OperatorProcess } from '../harness/operator.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

// A follower takes over at most leaseDuration + 2 × retryPeriod × 1.2 after the last renewal (it
// sees the renewal up to one jittered retry period late, and polls again up to one period after the
// lease ran out): with a 500 ms retry period that stays inside leaseDuration + 2 s.
const LEASE = ['--lease-duration', '4s', '--renew-deadline', '3s', '--retry-period', '500ms'];
const LEASE_DURATION_MS = 4_000;

describe('failover and crash windows', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  const secrets: string[] = [];
  const allLines: string[] = [];
  const namespaces: string[] = [];

  async function provider(graceWindowSec: number, accessTokenTtlSec: number): Promise<TestOidcServer> {
    const server = await scenario.startProvider({ accessTokenTtlSec, graceWindowSec });
    secrets.push(clientSecretOf(server));
    return server;
  }

  async function connectionNamespace(server: TestOidcServer, prefix: string): Promise<string> {
    const namespace = await scenario.clientNamespace(prefix, clientSecretOf(server));
    namespaces.push(namespace);
    return namespace;
  }

  async function seededConnection(
    server: TestOidcServer,
    namespace: string,
    name: string,
    overrides?: ConnectionOverrides,
  ): Promise<void> {
    secrets.push(await scenario.seededConnection(server, namespace, name, overrides));
  }

  function run(
    env: OperatorEnvironment,
    identity: string,
    namespace: string,
    args: string[],
    extraEnv: Record<string, string> = {},
  ) {
    return scenario.startOperator({
      env,
      identity,
      // Each scenario's operators own one namespace, as separate installations must.
      watchNamespace: namespace,
      args: [...LEASE, ...args],
      extraEnv,
      onLine: (line) => allLines.push(line),
    });
  }

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
  });

  afterAll(async () => {
    await scenario.close('SIGKILL');
  });

  it('(b) three replicas, leader SIGKILLed three times: no reuse, no expired token, takeover within lease + 2 s', async () => {
    const server = await provider(0, 20);
    const namespace = await connectionNamespace(server, 'failover');
    const env = await scenario.operatorEnvironment();
    const replicas = new Map<string, OperatorProcess>();
    for (const identity of ['replica-1', 'replica-2', 'replica-3']) {
      replicas.set(identity, run(env, identity, namespace, ['--secret-propagation', '8s']));
    }
    await seededConnection(server, namespace, 'books');

    const watcher = new OutputTokenWatcher(admin, namespace, 'books-token', (token) => {
      secrets.push(token);
    });
    const takeovers: number[] = [];
    for (let kill = 0; kill < 3; kill++) {
      await watcher.waitForTokens(watcher.seen.length + 1, 60_000);
      await new Promise((r) => setTimeout(r, 1_000 + kill * 1_500));
      const leader = await waitFor('a leader', () => leaseHolder(admin, env.namespace), 20_000);
      const victim = replicas.get(leader);
      expect(victim, `leader ${leader} is one of ours`).toBeDefined();
      const killedAt = Date.now();
      await victim?.kill('SIGKILL');
      const successor = await waitFor(
        'a new leader',
        async () => {
          await watcher.poll();
          const holder = await leaseHolder(admin, env.namespace);
          return holder && holder !== leader ? holder : undefined;
        },
        30_000,
        100,
      );
      takeovers.push(Date.now() - killedAt);
      expect(successor).not.toBe(leader);
      // The killed pod comes back, as its Deployment would bring it back.
      replicas.set(leader, run(env, leader, namespace, ['--secret-propagation', '8s']));
    }
    await watcher.waitForTokens(watcher.seen.length + 2, 60_000);

    console.log(
      `takeover after SIGKILL: ${takeovers.map((t) => `${t} ms`).join(', ')}; rotations seen: ${watcher.seen.length}`,
    );
    for (const t of takeovers) expect(t).toBeLessThanOrEqual(LEASE_DURATION_MS + 2_000);
    expect(watcher.lateRotations()).toEqual([]);
    expect(server.reuseCount(), 'refresh-token reuses recorded by the provider').toBe(0);
    const status = await getConnectionStatus(admin, namespace, 'books');
    expect(condition(status, 'Ready')?.status).toBe('True');
    expect(condition(status, 'ChainBroken')?.status).toBe('False');
  });

  for (const graceWindowSec of [30, 0]) {
    it(`(c) crash after the provider answered, before the token was written, grace window ${graceWindowSec}s`, async () => {
      const server = await provider(graceWindowSec, 20);
      const namespace = await connectionNamespace(server, 'crash');
      const env = await scenario.operatorEnvironment();
      // The faulty replica leads alone first, so it is the one that refreshes and dies.
      const faulty = run(env, 'faulty', namespace, ['--secret-propagation', '8s'], {
        OTO_TEST_FAULTS: 'crash-after-token-response',
      });
      await waitFor(
        'the faulty replica to lead',
        async () => (await leaseHolder(admin, env.namespace)) === 'faulty',
        30_000,
      );
      // The successor waits out the dead replica's claim (request timeout + persist budget + lease
      // duration: 4 + 4 + 4 s here) before it judges it; inside a grace window it need not wait.
      const healthy = run(env, 'healthy', namespace, [
        '--secret-propagation',
        '8s',
        '--request-timeout',
        '4s',
        '--persist-budget',
        '4s',
      ]);
      await seededConnection(
        server,
        namespace,
        'books',
        graceWindowSec > 0 ? { refresh: { graceWindow: `${graceWindowSec}s` } } : {},
      );
      const exitCode = await faulty.exited;
      expect(exitCode, 'the faulty replica killed itself after the token response').not.toBe(0);
      await waitFor(
        'the healthy replica to lead',
        async () => (await leaseHolder(admin, env.namespace)) === 'healthy',
        30_000,
      );

      if (graceWindowSec > 0) {
        await waitFor(
          'the chain to survive: Ready with a rotated token',
          async () => {
            const status = await getConnectionStatus(admin, namespace, 'books');
            return condition(status, 'Ready')?.status === 'True' && (status.rotations ?? 0) >= 1;
          },
          30_000,
        );
        expect(server.reuseCount()).toBe(0);
        expect(
          server.refreshLog().some((entry) => entry.presented === 'in-grace' && entry.status === 200),
        ).toBe(true);
      } else {
        const status = await waitFor(
          'ChainBroken once the claim of the dead replica has timed out',
          async () => {
            const s = await getConnectionStatus(admin, namespace, 'books');
            return condition(s, 'ChainBroken')?.status === 'True' ? s : undefined;
          },
          30_000,
        );
        expect(condition(status, 'ChainBroken')?.reason).toBe('RefreshResponseLost');
        expect(condition(status, 'Ready')?.status).toBe('False');
        // The consumed token was never presented again: the provider saw no reuse.
        expect(server.reuseCount()).toBe(0);
      }
      if (graceWindowSec > 0) {
        expect(healthy.lines.some((l) => l.includes('presenting the same token again'))).toBe(true);
      }
    });
  }

  it('leaks no secret value into logs, Events or status', async () => {
    const hits = await findLeaks(secrets, { lines: allLines, kubeConfig: admin, namespaces });
    expect(hits).toEqual([]);
    expect(allLines.length).toBeGreaterThan(50);
  });
});
