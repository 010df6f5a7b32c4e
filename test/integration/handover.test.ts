// Graceful hand-over on SIGTERM (a rolling update): the leader is stopped while a token request is in
// flight, and must keep its Lease renewed until the request's answer is persisted, release it only
// then, and exit 0; a follower takes over afterwards. The provider is a local HTTP token endpoint
// that holds the answer until the test has seen the Lease renewed past the point at which it would
// have expired, which is exactly when a successor could otherwise act on the same chain.
import * as k8s from '@kubernetes/client-node';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  condition,
  createSecret,
  getConnectionStatus,
  readSecretData,
  waitFor,
} from '../harness/builders.ts';
import { GROUP, PLURAL, VERSION, applyCRDs, createNamespace, loadKubeConfig } from '../harness/kube.ts';
import { canary, findLeaks } from '../harness/leaks.ts';
import {
  setupOperatorEnvironment,
  startOperator,
  type OperatorEnvironment,
  type OperatorProcess,
} from '../harness/operator.ts';

const LEASE_DURATION_MS = 4_000;
const LEASE = ['--lease-duration', '4s', '--renew-deadline', '3s', '--retry-period', '500ms'];
const LEASE_NAME = 'oauth-token-operator';

interface TokenRequest {
  grantType: string;
  refreshToken: string | undefined;
}

/**
 * A token endpoint whose answers wait until release() is called. Each answer rotates the refresh
 * token and carries an access token valid for an hour, so that no further refresh is due.
 */
class HeldTokenEndpoint {
  readonly requests: TokenRequest[] = [];
  /** The tokens of every answer sent, in order. */
  readonly answers: { accessToken: string; refreshToken: string }[] = [];
  private readonly server: Server;
  private readonly waiting: (() => void)[] = [];
  private held = true;

  private constructor(server: Server) {
    this.server = server;
  }

  static async start(): Promise<HeldTokenEndpoint> {
    const server = createServer();
    const endpoint = new HeldTokenEndpoint(server);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      endpoint.handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return endpoint;
  }

  get url(): string {
    return `http://127.0.0.1:${String((this.server.address() as AddressInfo).port)}/token`;
  }

  /** Requests received and not yet answered. */
  pending(): number {
    return this.waiting.length;
  }

  /** Answers the requests held so far and every later one at once. */
  release(): void {
    this.held = false;
    for (const answer of this.waiting.splice(0)) answer();
  }

  async close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      this.requests.push({
        grantType: form.get('grant_type') ?? '',
        refreshToken: form.get('refresh_token') ?? undefined,
      });
      const answer = (): void => {
        const tokens = { accessToken: canary('access'), refreshToken: canary('refresh') };
        this.answers.push(tokens);
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(
          JSON.stringify({
            access_token: tokens.accessToken,
            token_type: 'Bearer',
            expires_in: 3600,
            refresh_token: tokens.refreshToken,
          }),
        );
      };
      if (this.held) this.waiting.push(answer);
      else answer();
    });
  }
}

interface LeaseObservation {
  holder: string;
  renewTime: number;
}

/** Each JSON log line the process wrote, in order. */
function logRecords(operator: OperatorProcess): Record<string, unknown>[] {
  return operator.lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** The message of each JSON log line the process wrote, in order. */
function messages(operator: OperatorProcess): string[] {
  return logRecords(operator).flatMap((record) => (typeof record.msg === 'string' ? [record.msg] : []));
}

/** The status and body of the process's /healthz (its address is logged at start). */
async function healthz(operator: OperatorProcess): Promise<{ status: number; body: string }> {
  const serving = logRecords(operator).find((record) => record.msg === 'serving metrics and health');
  const response = await fetch(`http://${String(serving?.address)}/healthz`);
  return { status: response.status, body: await response.text() };
}

describe('graceful hand-over on SIGTERM', () => {
  let admin: k8s.KubeConfig;
  let env: OperatorEnvironment;
  let endpoint: HeldTokenEndpoint;
  const operators: OperatorProcess[] = [];

  beforeAll(async () => {
    admin = loadKubeConfig(inject('kubeconfig'));
    await applyCRDs(admin);
    env = await setupOperatorEnvironment(admin);
    endpoint = await HeldTokenEndpoint.start();
  });

  afterAll(async () => {
    await Promise.all(operators.map((operator) => operator.kill('SIGKILL')));
    await endpoint.close();
  });

  async function readLease(): Promise<LeaseObservation | undefined> {
    try {
      const lease = await admin
        .makeApiClient(k8s.CoordinationV1Api)
        .readNamespacedLease({ name: LEASE_NAME, namespace: env.namespace });
      return {
        holder: lease.spec?.holderIdentity ?? '',
        renewTime: Date.parse(String(lease.spec?.renewTime)),
      };
    } catch {
      return undefined;
    }
  }

  /** Every value of every Secret the operator keeps in its namespace, decoded. */
  async function operatorSecretValues(): Promise<string> {
    const secrets = await admin
      .makeApiClient(k8s.CoreV1Api)
      .listNamespacedSecret({ namespace: env.namespace });
    return secrets.items
      .flatMap((secret) => Object.values(secret.data ?? {}))
      .map((value) => Buffer.from(value, 'base64').toString('utf8'))
      .join('\n');
  }

  function start(identity: string, namespace: string): OperatorProcess {
    const operator = startOperator({
      env,
      identity,
      // The default --drain-timeout (20 s) is well beyond how long the answer is held here.
      args: [...LEASE, '--watch-namespaces', namespace],
    });
    operators.push(operator);
    return operator;
  }

  it('keeps the Lease while a refresh is in flight, persists its answer, then releases and exits 0', async () => {
    const namespace = await createNamespace(admin, 'handover');
    const clientSecret = canary('client-secret');
    const seed = canary('seed');
    await createSecret(admin, namespace, 'client', { client_secret: clientSecret });
    await createSecret(admin, namespace, 'books-seed', { refresh_token: seed });

    const leader = start('handover-a', namespace);
    await waitFor('handover-a to lead', async () => (await readLease())?.holder === 'handover-a', 60_000);
    const follower = start('handover-b', namespace);
    await waitFor(
      'handover-b to campaign',
      () => messages(follower).includes('informers synced; campaigning for leadership'),
      60_000,
    );

    await admin.makeApiClient(k8s.CustomObjectsApi).createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
      body: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'OAuthConnection',
        metadata: { name: 'books', namespace },
        spec: {
          provider: { tokenURL: endpoint.url },
          clientID: 'operator',
          clientSecretRef: { name: 'client' },
          grant: { type: 'refreshToken', seedSecretRef: { name: 'books-seed' } },
          output: { secretName: 'books-token' },
        },
      },
    });
    await waitFor('the refresh to reach the token endpoint', () => endpoint.pending() === 1, 60_000);

    const sigtermAt = Date.now();
    leader.child.kill('SIGTERM');

    // Renewals go on after the SIGTERM, past the moment the lease would have expired without them;
    // nobody else holds the Lease meanwhile.
    const whileInFlight: LeaseObservation[] = [];
    await waitFor(
      'the Lease renewed one lease duration after the SIGTERM',
      async () => {
        const lease = await readLease();
        if (lease) whileInFlight.push(lease);
        return lease !== undefined && lease.renewTime > sigtermAt + LEASE_DURATION_MS;
      },
      30_000,
      100,
    );
    expect(new Set(whileInFlight.map((lease) => lease.holder))).toEqual(new Set(['handover-a']));
    expect(endpoint.pending()).toBe(1);
    expect(messages(leader)).toContain(
      'draining: starting no new work; renewing the lease until the work in flight returns',
    );
    expect(leader.child.exitCode).toBeNull();
    // Renewing while it drains, the leader stays healthy (a leader that stopped renewing would not).
    expect(await healthz(leader)).toEqual({ status: 200, body: 'ok' });
    expect(await healthz(follower)).toEqual({ status: 200, body: 'ok' });

    endpoint.release();
    const answer = endpoint.answers[0];
    if (!answer) throw new Error('the held request was not answered');

    // The first moment the Lease is not the old leader's, the answer must already be persisted.
    const handedOver = await waitFor(
      'the Lease to leave handover-a',
      async () => {
        const lease = await readLease();
        return lease && lease.holder !== 'handover-a' ? lease : undefined;
      },
      30_000,
      50,
    );
    expect(['', 'handover-b']).toContain(handedOver.holder);
    expect(await operatorSecretValues()).toContain(answer.refreshToken);
    expect((await readSecretData(admin, namespace, 'books-token'))?.access_token).toBe(answer.accessToken);

    expect(await leader.exited).toBe(0);
    await waitFor(
      'handover-b to take over',
      async () => (await readLease())?.holder === 'handover-b',
      30_000,
    );
    await waitFor(
      'the connection to be Ready',
      async () => condition(await getConnectionStatus(admin, namespace, 'books'), 'Ready')?.status === 'True',
      30_000,
    );

    // One request presented the seed; the chain never saw a refresh token twice.
    expect(endpoint.requests[0]).toEqual({ grantType: 'refresh_token', refreshToken: seed });
    const presented = endpoint.requests.map((request) => request.refreshToken);
    expect(new Set(presented).size).toBe(presented.length);

    // The hand-over is logged step by step, in order.
    const log = messages(leader);
    const steps = [
      'shutting down: handing leadership over',
      'draining: no new reconciles start; waiting for those in flight',
      'reconcile in flight returned while draining',
      'released leader lease',
      'stopped',
    ].map((step) => log.indexOf(step));
    expect(
      steps.every((index) => index >= 0),
      JSON.stringify(steps),
    ).toBe(true);
    expect([...steps].sort((x, y) => x - y)).toEqual(steps);

    const secrets = [clientSecret, seed, ...endpoint.answers.flatMap((a) => [a.accessToken, a.refreshToken])];
    const leaks = await findLeaks(secrets, {
      lines: operators.flatMap((operator) => operator.lines),
      kubeConfig: admin,
      namespaces: [namespace],
    });
    expect(leaks).toEqual([]);
  });
});
