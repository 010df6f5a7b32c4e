// Scenarios (d) and (e): provider faults are retried with backoff and the chain survives;
// configuration errors and hostile input stop with a reason that names the field, an Event, and no
// outbound request.
import * as k8s from '@kubernetes/client-node';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  condition,
  connection,
  type ConnectionStatus,
  createConnection,
  createSecret,
  eventReasons,
  getConnectionStatus,
  readSecretData,
  waitFor,
} from '../harness/builders.ts';
import { createNamespace } from '../harness/kube.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import type { TestOidcServer } from '../harness/oidc/server.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

async function waitForReady(
  kc: k8s.KubeConfig,
  namespace: string,
  name: string,
  status: 'True' | 'False',
  reason?: string,
): Promise<ConnectionStatus> {
  return waitFor(
    `${name} Ready=${status}${reason ? ` (${reason})` : ''}`,
    async () => {
      const s = await getConnectionStatus(kc, namespace, name);
      const ready = condition(s, 'Ready');
      return ready?.status === status && (reason === undefined || ready.reason === reason) ? s : undefined;
    },
    30_000,
  );
}

describe('provider faults and hostile input', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let oidc: TestOidcServer;
  const namespaces: string[] = [];
  const secrets: string[] = [];
  const lines: string[] = [];

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    oidc = await scenario.startProvider({ accessTokenTtlSec: 6, graceWindowSec: 0 });
    secrets.push(clientSecretOf(oidc));
  });

  afterAll(async () => {
    await scenario.close();
  });

  describe('(d) provider faults', () => {
    let namespace: string;

    beforeAll(async () => {
      namespace = await scenario.clientNamespace('faults', clientSecretOf(oidc));
      namespaces.push(namespace);
      scenario.startOperator({
        env: await scenario.operatorEnvironment(),
        identity: 'faults',
        watchNamespace: namespace,
        args: ['--secret-propagation', '2s', '--request-timeout', '2s'],
        onLine: (line) => lines.push(line),
      });
      secrets.push(await scenario.seededConnection(oidc, namespace, 'books'));
      await waitForReady(admin, namespace, 'books', 'True');
    });

    const faults = [
      { name: '503 twice', fault: { kind: 'status' as const, status: 503 as const }, count: 2 },
      { name: '500', fault: { kind: 'status' as const, status: 500 as const }, count: 1 },
      { name: '429 with Retry-After', fault: { kind: 'rateLimit' as const, retryAfterSec: 2 }, count: 1 },
      {
        name: 'a timeout',
        fault: { kind: 'delay' as const, ms: 3_000, phase: 'beforeProcessing' as const },
        count: 1,
      },
      { name: 'malformed JSON', fault: { kind: 'malformed' as const }, count: 1 },
    ];

    it.each(faults)('retries $name with backoff and the chain survives', async ({ fault, count }) => {
      const rotationsBefore = (await getConnectionStatus(admin, namespace, 'books')).rotations ?? 0;
      const faultsBefore = oidc.faults.log().length;
      oidc.faults.next(fault, count);
      const status = await waitFor(
        'two rotations after the fault',
        async () => {
          const s = await getConnectionStatus(admin, namespace, 'books');
          return oidc.faults.pending() === 0 && (s.rotations ?? 0) >= rotationsBefore + 2 ? s : undefined;
        },
        60_000,
      );
      expect(oidc.faults.log().length - faultsBefore).toBe(count);
      expect(condition(status, 'ChainBroken')?.status).toBe('False');
      expect(condition(status, 'Ready')?.status).toBe('True');
      expect(oidc.reuseCount()).toBe(0);
      if (fault.kind === 'rateLimit') {
        const injected = oidc.faults.log().at(-1);
        const retry = oidc.refreshLog().find((entry) => injected && entry.at > injected.at);
        expect(retry && injected ? retry.at - injected.at : 0).toBeGreaterThanOrEqual(2_000);
      }
    });

    it('records the failures it retried as Warning events', async () => {
      const reasons = await eventReasons(admin, namespace, 'books');
      expect(reasons).toContain('ProviderUnavailable');
      expect(reasons).toContain('RateLimited');
    });

    it('stops on invalid_client with Ready=False and retries slowly', async () => {
      await admin.makeApiClient(k8s.CoreV1Api).replaceNamespacedSecret({
        name: 'client',
        namespace,
        body: {
          metadata: { name: 'client', namespace },
          type: 'Opaque',
          stringData: { client_secret: 'wrong-secret-value' },
        },
      });
      const status = await waitForReady(admin, namespace, 'books', 'False', 'InvalidClient');
      expect(condition(status, 'Ready')?.message).toMatch(/invalid_client/);
      const requestsAtFailure = oidc.refreshLog().length;
      await new Promise((r) => setTimeout(r, 8_000));
      expect(oidc.refreshLog().length - requestsAtFailure, 'no fast retry loop').toBeLessThanOrEqual(1);
      const after = await getConnectionStatus(admin, namespace, 'books');
      expect(Date.parse(after.nextRefreshTime ?? '') - Date.now()).toBeGreaterThan(30_000);
      expect(await eventReasons(admin, namespace, 'books')).toContain('InvalidClient');
      expect(oidc.reuseCount()).toBe(0);
      // Fixing the Secret is picked up at the next (slow) retry; the chain itself was never touched.
      await admin.makeApiClient(k8s.CoreV1Api).replaceNamespacedSecret({
        name: 'client',
        namespace,
        body: {
          metadata: { name: 'client', namespace },
          type: 'Opaque',
          stringData: { client_secret: oidc.clients[0]?.clientSecret ?? '' },
        },
      });
    });

    it('never adopts an output Secret it does not own', async () => {
      await createSecret(admin, namespace, 'taken', { mine: 'do-not-touch' });
      await scenario.seededConnection(oidc, namespace, 'other', { output: { secretName: 'taken' } });
      const status = await waitForReady(admin, namespace, 'other', 'False', 'OutputSecretNotOwned');
      expect(condition(status, 'Ready')?.message).toContain('spec.output.secretName');
      expect(await readSecretData(admin, namespace, 'taken')).toEqual({ mine: 'do-not-touch' });
      // The operator records the Event only once the status write it belongs to has succeeded.
      await waitFor(
        'the OutputSecretNotOwned Event',
        async () => (await eventReasons(admin, namespace, 'other')).includes('OutputSecretNotOwned'),
        10_000,
      );
    });
  });

  describe('(e) hostile or broken input, operator without --allow-insecure-http', () => {
    let namespace: string;
    let otherNamespace: string;
    let trap: Server;
    let trapRequests = 0;

    beforeAll(async () => {
      namespace = await scenario.clientNamespace('hostile', canary('hostile-client'));
      otherNamespace = await createNamespace(admin, 'elsewhere');
      namespaces.push(namespace, otherNamespace);
      trap = createServer((_req, res) => {
        trapRequests++;
        res.writeHead(500);
        res.end();
      });
      await new Promise<void>((resolve) => {
        trap.listen(0, '127.0.0.1', resolve);
      });
      scenario.startOperator({
        env: await scenario.operatorEnvironment(),
        identity: 'strict',
        insecure: false,
        watchNamespace: namespace,
        onLine: (line) => lines.push(line),
      });
      await createSecret(admin, otherNamespace, 'foreign', { client_secret: canary('foreign') });
      for (const name of ['cross', 'nokey', 'plainhttp', 'metadata', 'discovery']) {
        const seed = canary(`seed-${name}`);
        secrets.push(seed);
        await createSecret(
          admin,
          namespace,
          `${name}-seed`,
          name === 'nokey' ? { wrong_key: seed } : { refresh_token: seed },
        );
      }
    });

    afterAll(async () => {
      await new Promise<void>((resolve) => {
        trap.close(() => {
          resolve();
        });
      });
    });

    const trapURL = (): string => `http://127.0.0.1:${(trap.address() as AddressInfo).port}`;
    const cases = [
      {
        name: 'cross',
        what: 'a reference to a Secret in another namespace',
        build: (ns: string) =>
          connection(ns, 'cross', 'https://sso.example.com/realms/x', {
            spec: { clientSecretRef: { name: 'foreign', namespace: 'elsewhere-does-not-matter' } },
            provider: { issuerURL: undefined, tokenURL: 'https://sso.example.com/token' },
          }),
        reason: 'SecretNotFound',
        field: 'spec.clientSecretRef',
      },
      {
        name: 'nokey',
        what: 'a seed Secret without the key',
        build: (ns: string) =>
          connection(ns, 'nokey', 'https://sso.example.com/', {
            provider: { issuerURL: undefined, tokenURL: 'https://sso.example.com/token' },
          }),
        reason: 'SecretKeyMissing',
        field: 'spec.grant.seedSecretRef',
      },
      {
        name: 'plainhttp',
        what: 'a plain http token URL',
        build: (ns: string) =>
          connection(ns, 'plainhttp', '', {
            provider: { issuerURL: undefined, tokenURL: `${trapURL()}/token` },
          }),
        reason: 'InsecureEndpoint',
        field: 'spec.provider',
      },
      {
        name: 'metadata',
        what: 'a cloud metadata address',
        build: (ns: string) =>
          connection(ns, 'metadata', '', {
            provider: { issuerURL: undefined, tokenURL: 'https://169.254.169.254/latest/api/token' },
          }),
        reason: 'InsecureEndpoint',
        field: 'spec.provider',
      },
      {
        name: 'discovery',
        what: 'a plain http issuer',
        build: () => connection(namespace, 'discovery', trapURL()),
        reason: 'InsecureEndpoint',
        field: 'spec.provider',
      },
    ];

    it.each(cases)(
      'refuses $what: Ready=False $reason naming $field, an Event, no request',
      async ({ build, name, reason, field }) => {
        const body = build(namespace);
        body.metadata.namespace = namespace;
        // Non-strict, as an older kubectl would send it: the server prunes the unknown namespace field.
        await createConnection(admin, body);
        const status = await waitForReady(admin, namespace, name, 'False', reason);
        const ready = condition(status, 'Ready');
        expect(ready?.message).toContain(field);
        if (name === 'cross') {
          expect(ready?.message).toContain(`${namespace}/foreign`);
        }
        await waitFor(
          'the Event',
          async () => (await eventReasons(admin, namespace, name)).includes(reason),
          10_000,
        );
        expect(trapRequests, 'no outbound request reached the refused endpoint').toBe(0);
        expect(await readSecretData(admin, namespace, `${name}-token`)).toBeUndefined();
      },
    );
  });

  it('leaks no secret value into logs, Events or status', async () => {
    const hits = await findLeaks(secrets, { lines, kubeConfig: admin, namespaces });
    expect(hits).toEqual([]);
    expect(lines.some((l) => l.includes('"level":"debug"'))).toBe(true);
  });
});
