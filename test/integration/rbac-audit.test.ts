// Least privilege, verified: two operator replicas run the operator's scenarios (a rotating chain
// and its output Secret, the seed hand-off, a revoked chain recovered by a TOTP login, a repeated
// Event, an owned output Secret of the wrong type, a Lease hand-over, deletion through the
// finalizer) as their own ServiceAccount, bound exactly as the chart binds it when
// operator.watchNamespaces confines the operator to two namespaces: a Role in each, a Role in the
// operator's namespace, nothing cluster-wide; a third namespace, not watched, is left alone. The API server's audit log (written by the local
// control plane, test/harness/controlplane.ts) then says what that ServiceAccount did; the test
// holds it against charts/oauth-token-operator/files/rbac-rules.yaml: no request refused, no request
// outside the granted namespaces, and every granted verb used (or excused below with the reason).
//
// Other files may use the same API server at the same time: only this file's ServiceAccount, whose
// name includes a namespace created here, is read from the log. The ClusterRole the chart renders
// without watchNamespaces holds the same connection rules, so the comparison covers it too.
import * as k8s from '@kubernetes/client-node';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  MANAGED_BY,
  MANAGED_BY_LABEL,
  ROLE_LABEL,
  stateSecretName,
} from '../../src/controller/state-store.ts';
import {
  condition,
  connection,
  type ConnectionOverrides,
  createConnection,
  createSecret,
  deleteConnection,
  ready,
  untilStatus,
  waitFor,
} from '../harness/builders.ts';
import { connectionsOf } from '../harness/connections.ts';
import { localAuditLogFiles } from '../harness/controlplane.ts';
import { GROUP, isApiError, PLURAL, repoRoot, VERSION } from '../harness/kube.ts';
import { canary } from '../harness/leaks.ts';
import { DEFAULT_REDIRECT_URI, type TestOidcServer } from '../harness/oidc/server.ts';
import type { OperatorEnvironment, OperatorProcess } from '../harness/operator.ts';
import {
  SERVICE_ACCOUNT,
  auditEventsOf,
  compareWithGrants,
  grantedAccesses,
  rbacRulesFile,
  setupConfinedOperatorEnvironment,
  type AuditComparison,
} from '../harness/rbac.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';
import { findTool } from '../harness/tools.ts';

const auditLogFiles = localAuditLogFiles(inject('kubeconfig'));
if (!auditLogFiles) {
  console.warn(
    'rbac-audit.test.ts: the API server is not the local control plane; its audit log cannot be read',
  );
}

/** Granted permissions a short test cannot exercise, each with the reason (none at present). */
const EXCUSED: Record<string, string> = {};

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
// A short period: the recovery login waits for a fresh TOTP step at most this long.
const TOTP_PERIOD_SEC = 5;
const LEASE = 'oauth-token-operator';

describe.skipIf(!auditLogFiles)('RBAC against the API server audit log', () => {
  let scenario: Scenario;
  let admin: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let custom: k8s.CustomObjectsApi;
  let oidc: TestOidcServer;
  let namespace: string;
  // A second watched namespace, and one the operator must leave alone.
  let second: string;
  let outside: string;
  let env: OperatorEnvironment;
  const replicas = new Map<string, OperatorProcess>();
  const password = canary('audit-password');
  // 32 base32 characters: 160 bits, a whole number of bytes, as a TOTP secret must be.
  const totpSecret = Array.from(randomBytes(32), (b) => BASE32[b % 32] ?? 'A').join('');

  beforeAll(async () => {
    scenario = await Scenario.open(inject('kubeconfig'));
    admin = scenario.admin;
    core = admin.makeApiClient(k8s.CoreV1Api);
    custom = admin.makeApiClient(k8s.CustomObjectsApi);
    oidc = await scenario.startProvider({
      accessTokenTtlSec: 6,
      grantTypes: ['refresh_token', 'authorization_code', 'client_credentials'],
      login: {
        users: [
          { accountId: 'alice', username: 'alice', password, totpSecret, totpPeriodSec: TOTP_PERIOD_SEC },
        ],
      },
    });
    namespace = await scenario.clientNamespace('audit', clientSecretOf(oidc));
    await createSecret(admin, namespace, 'alice', {
      username: 'alice',
      password,
      totp: `otpauth://totp/test:alice?secret=${totpSecret}&period=${String(TOTP_PERIOD_SEC)}&issuer=test`,
    });
    second = await scenario.clientNamespace('audit-second', clientSecretOf(oidc));
    outside = await scenario.clientNamespace('audit-outside', clientSecretOf(oidc));
    env = await setupConfinedOperatorEnvironment(admin, [namespace, second]);
    for (const identity of ['audit-a', 'audit-b']) {
      replicas.set(
        identity,
        scenario.startOperator({
          env,
          identity,
          watchNamespace: [namespace, second],
          // Tokens live 6 s: the default 90 s margin for mounted Secrets would exceed their life.
          args: ['--secret-propagation', '2s'],
        }),
      );
    }
  });

  afterAll(async () => {
    await scenario.close();
  });

  const { status, until, patchSpec } = connectionsOf(() => ({ admin, namespace }));

  async function leaseHolder(): Promise<string | undefined> {
    const coordination = admin.makeApiClient(k8s.CoordinationV1Api);
    try {
      const lease = await coordination.readNamespacedLease({ name: LEASE, namespace: env.namespace });
      return lease.spec?.holderIdentity ?? undefined;
    } catch (err) {
      if (isApiError(err, 404)) return undefined;
      throw err;
    }
  }

  async function gone(read: () => Promise<unknown>): Promise<boolean> {
    try {
      await read();
      return false;
    } catch (err) {
      if (isApiError(err, 404)) return true;
      throw err;
    }
  }

  const recovery: ConnectionOverrides = {
    spec: {
      scopes: ['openid', 'offline_access'],
      recovery: {
        login: {
          flow: 'code',
          redirectURI: DEFAULT_REDIRECT_URI,
          usernameRef: { name: 'alice' },
          passwordRef: { name: 'alice' },
          totpSecretRef: { name: 'alice' },
          form: {
            loginFormSelector: '#login-form',
            usernameField: 'username',
            passwordField: 'password',
            otpFormSelector: '#otp-form',
            otpField: 'otp',
          },
          maxAttemptsPerHour: 30,
        },
      },
    },
  };

  // The rules above are what the chart renders (test/unit/chart.test.ts); here the API server
  // itself checks the rendered objects, which no unit test can: a NetworkPolicy except outside its
  // cidr, a binding to a Role in another namespace.
  // Without helm this is skipped, except where CI has installed the tools (OTO_REQUIRE_TOOLS=1):
  // there a missing helm fails it rather than leaving the chart's objects unchecked.
  it.skipIf(findTool('helm', 'OTO_HELM') === undefined && process.env.OTO_REQUIRE_TOOLS !== '1')(
    "accepts the chart's objects for this namespace, NetworkPolicy included (server-side dry run)",
    async () => {
      const helm = findTool('helm', 'OTO_HELM');
      if (helm === undefined) expect.fail('OTO_REQUIRE_TOOLS=1 but helm was not found');
      const values = JSON.stringify({
        operator: { watchNamespaces: [namespace] },
        prometheusRule: { enabled: false },
        networkPolicy: {
          enabled: true,
          apiServer: { cidrs: ['10.96.0.1/32', 'fd00:10:96::1/128'] },
          tokenEndpoints: { allowedCIDRs: ['10.20.0.0/16'] },
          dns: { cidrs: ['169.254.20.10/32'] },
        },
      });
      const rendered = spawnSync(
        helm,
        [
          'template',
          'chart',
          join(repoRoot, 'charts', 'oauth-token-operator'),
          '--namespace',
          env.namespace,
          '--values',
          '-',
        ],
        { input: values, encoding: 'utf8', timeout: 60_000 },
      );
      expect(rendered.status, rendered.stderr).toBe(0);
      const objects = parseAllDocuments(rendered.stdout)
        .map((doc) => doc.toJS() as k8s.KubernetesObject | null)
        .filter((object): object is k8s.KubernetesObject => object !== null);
      const kinds = objects.map((o) => `${o.kind ?? ''} ${o.metadata?.namespace ?? ''}`).sort();
      expect(kinds).toEqual(
        expect.arrayContaining([
          `NetworkPolicy ${env.namespace}`,
          `Role ${namespace}`,
          `RoleBinding ${namespace}`,
        ]),
      );
      const api = k8s.KubernetesObjectApi.makeApiClient(admin);
      for (const object of objects) await api.create(object, undefined, 'All');
    },
  );

  it('imports a seed, rotates the chain and publishes the output Secret', async () => {
    await scenario.seededConnection(oidc, namespace, 'books', recovery, 'alice');
    await until('books', 'Ready after two rotations', (s) => ready(s) && (s.rotations ?? 0) >= 2);
  });

  it('reconciles a second watched namespace and leaves an unwatched one alone', async () => {
    await scenario.seededConnection(oidc, outside, 'ignored');
    await scenario.seededConnection(oidc, second, 'ledger');
    await untilStatus(
      admin,
      second,
      'ledger',
      'Ready after a rotation',
      (s) => ready(s) && (s.rotations ?? 0) >= 1,
    );
    // Created before ledger, which is Ready: had the operator looked at it, it would have a finalizer.
    const ignored = (await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: outside,
      plural: PLURAL,
      name: 'ignored',
    })) as { metadata?: { finalizers?: string[] }; status?: unknown };
    expect(ignored.metadata?.finalizers ?? []).toEqual([]);
    expect(ignored.status).toBeUndefined();
  });

  it('recovers a revoked chain with a TOTP login', async () => {
    await oidc.revokeAllGrants();
    await until(
      'books',
      'a new chain, Ready',
      (s) => (s.chainGeneration ?? 0) >= 2 && ready(s) && condition(s, 'ChainBroken')?.status === 'False',
      90_000,
    );
  });

  it('records a repeated Event once, with its count raised', async () => {
    const tokenReady = async (): Promise<k8s.CoreV1Event[]> =>
      (await core.listNamespacedEvent({ namespace })).items.filter(
        (e) => e.involvedObject.name === 'books' && e.reason === 'TokenReady',
      );
    const before = await waitFor('a TokenReady Event', async () => (await tokenReady())[0]?.count);
    // Ready turns False while suspended and True again after: the same Event once more, from the
    // same leader, which aggregates it into the Event it wrote before.
    await patchSpec('books', { suspend: true });
    await until('books', 'Ready=False while suspended', (s) => condition(s, 'Ready')?.reason === 'Suspended');
    await patchSpec('books', { suspend: false });
    await waitFor(
      'the TokenReady Event counted once more',
      async () => ((await tokenReady())[0]?.count ?? 0) > before,
    );
    expect((await tokenReady()).length, 'TokenReady Events of books').toBe(1);
  });

  it('refuses an output Secret it owns that has a type other than Opaque, and writes it once a person deleted it', async () => {
    const name = 'typed';
    const body = connection(namespace, name, oidc.issuer, {
      grant: { type: 'clientCredentials', seedSecretRef: undefined },
      spec: { suspend: true },
    });
    await createConnection(admin, body);
    const created = (await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
      name,
    })) as { apiVersion: string; kind: string; metadata: { uid: string } };
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: {
          name: `${name}-token`,
          // As an older release would have labelled it: the operator's output-Secret informer
          // selects by these labels, and sees the deletion below.
          labels: { [MANAGED_BY_LABEL]: MANAGED_BY, [ROLE_LABEL]: 'output' },
          ownerReferences: [
            {
              apiVersion: created.apiVersion,
              kind: created.kind,
              name,
              uid: created.metadata.uid,
              controller: true,
            },
          ],
        },
        type: 'example.com/not-opaque',
        stringData: { note: 'left by an older release' },
      },
    });
    await patchSpec(name, { suspend: false });
    const refused = await until(
      name,
      'OutputSecretWrongType',
      (s) => condition(s, 'Ready')?.reason === 'OutputSecretWrongType',
    );
    expect(condition(refused, 'Ready')?.message).toContain('spec.output.secretName');
    // The fix is a person's: delete it. The operator creates an Opaque one in its place (its output
    // Secret informer sees the deletion).
    await core.deleteNamespacedSecret({ name: `${name}-token`, namespace });
    await waitFor('an Opaque output Secret in its place', async () => {
      const secret = await core.readNamespacedSecret({ name: `${name}-token`, namespace });
      return secret.type === 'Opaque' && secret.data?.access_token !== undefined;
    });
  });

  it('hands the Lease over to the other replica on SIGTERM', async () => {
    const leader = await waitFor('a leader', leaseHolder);
    const follower = [...replicas.keys()].find((identity) => identity !== leader) ?? '';
    const before = (await status('books')).rotations ?? 0;
    await replicas.get(leader)?.kill('SIGTERM');
    await waitFor('the follower to lead', async () => (await leaseHolder()) === follower, 30_000);
    await until('books', 'a rotation by the new leader', (s) => (s.rotations ?? 0) > before && ready(s));
  });

  it('deletes a connection: finalizer removed, state Secret deleted', async () => {
    await deleteConnection(admin, namespace, 'books');
    await waitFor('its state Secret to be gone', () =>
      gone(() =>
        core.readNamespacedSecret({ name: stateSecretName(namespace, 'books'), namespace: env.namespace }),
      ),
    );
  });

  it('used every permission the chart grants, was refused none and asked for nothing else', async () => {
    // The watches end with the processes; their ResponseComplete entries close the log.
    await Promise.all([...replicas.values()].map((operator) => operator.kill('SIGTERM')));
    const username = `system:serviceaccount:${env.namespace}:${SERVICE_ACCOUNT}`;
    const rules = rbacRulesFile();
    const granted = [
      ...grantedAccesses(rules.connectionNamespaceRules, 'connection namespace'),
      ...grantedAccesses(rules.operatorNamespaceRules, 'operator namespace'),
    ];
    const namespaces = { operator: env.namespace, connections: [namespace, second] };
    const read = (): { text: string; comparison: AuditComparison } => {
      const text = (localAuditLogFiles(inject('kubeconfig')) ?? [])
        .map((file) => readFileSync(file, 'utf8'))
        .join('');
      return {
        text,
        comparison: compareWithGrants(auditEventsOf(text, username), granted, namespaces, EXCUSED),
      };
    };
    // Each entry is written as its request completes; wait until the log holds every grant's use,
    // or show what it lacks.
    let last = read();
    await waitFor(
      'an audit log entry for every granted permission',
      () => {
        last = read();
        return last.comparison.unused.length === 0;
      },
      10_000,
    ).catch(() => undefined);
    const { comparison, text } = last;
    console.log(
      `rbac-audit: ${String(auditEventsOf(text, username).length)} audit entries of ${username}:\n` +
        [...comparison.used.entries()].map(([key, count]) => `  ${key} ×${String(count)}`).join('\n'),
    );
    expect(comparison.used.size, 'requests of the operator in the audit log').toBeGreaterThan(0);
    expect(comparison.forbidden, 'requests refused (403)').toEqual([]);
    expect(comparison.notGranted, 'permissions used but not granted').toEqual([]);
    expect(comparison.unused, 'permissions granted but never used').toEqual([]);
    expect(comparison.staleExcuses, 'excuses for permissions used after all, or not granted').toEqual([]);
    // Metadata level: no body, so no secret value of this test reaches the audit log.
    const mine = text.split('\n').filter((line) => line.includes(username));
    for (const value of [password, totpSecret, clientSecretOf(oidc)]) {
      expect(mine.filter((line) => line.includes(value))).toEqual([]);
    }
  });
});
