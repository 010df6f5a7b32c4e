import * as k8s from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import {
  GROUP,
  PLURAL,
  VERSION,
  applyCRDs,
  createNamespace,
  isApiError,
  loadKubeConfig,
  readYamlDocuments,
  repoRoot,
} from '../harness/kube.ts';

const execFileAsync = promisify(execFile);
const validDir = join(repoRoot, 'test', 'fixtures', 'valid');

type Obj = Record<string, unknown>;

function fixture(file: string): Obj {
  const [doc] = readYamlDocuments(join(validDir, file));
  if (!doc) throw new Error(`empty fixture ${file}`);
  return doc;
}

/** A deep copy of a valid connection with one change applied at a dotted path (undefined deletes). */
function mutated(base: Obj, path: string, value: unknown): Obj {
  const copy = structuredClone(base);
  const keys = path.split('.');
  const last = keys.pop() ?? '';
  let node = copy;
  for (const key of keys) {
    node[key] ??= {};
    node = node[key] as Obj;
  }
  if (value === undefined) Reflect.deleteProperty(node, last);
  else node[last] = value;
  return copy;
}

const exact = fixture('refresh-token-exact-online.yaml');
const clientCredentials = fixture('client-credentials-generic.yaml');
const folio = fixture('password-folio.yaml');
const keycloak = fixture('refresh-token-keycloak-direct.yaml');
// Every spec.refresh duration at its maximum.
const bounds = fixture('refresh-token-generic-bounds.yaml');

// Each invalid connection and the text the API server's answer must contain: the offending field
// (and, where several rules guard one field, words of the rule that must have fired).
const invalid: { name: string; body: Obj; field: string; says?: string }[] = [
  { name: 'no clientID', body: mutated(exact, 'spec.clientID', undefined), field: 'spec.clientID' },
  {
    name: 'unknown preset',
    body: mutated(exact, 'spec.provider.preset', 'okta'),
    field: 'spec.provider.preset',
  },
  {
    name: 'token URL that is not http(s)',
    body: mutated(clientCredentials, 'spec.provider.tokenURL', 'file:///etc/passwd'),
    field: 'spec.provider.tokenURL',
  },
  {
    name: 'cross-namespace secret reference',
    body: mutated(exact, 'spec.clientSecretRef.namespace', 'kube-system'),
    field: 'spec.clientSecretRef.namespace',
  },
  {
    name: 'client credentials without a client secret',
    body: mutated(clientCredentials, 'spec.clientSecretRef', undefined),
    field: 'spec.clientSecretRef',
  },
  {
    name: 'refresh-token grant with neither seed nor login',
    body: mutated(mutated(exact, 'spec.grant.seedSecretRef', undefined), 'spec.recovery', undefined),
    field: 'spec.grant.seedSecretRef',
  },
  {
    name: 'password grant without username',
    body: mutated(folio, 'spec.grant.usernameRef', undefined),
    field: 'spec.grant.usernameRef',
  },
  {
    name: 'extra parameter that overrides grant_type',
    body: mutated(clientCredentials, 'spec.extraParameters', { grant_type: 'password' }),
    field: 'spec.extraParameters',
  },
  {
    name: 'malformed duration',
    body: mutated(exact, 'spec.refresh.before', 'ten minutes'),
    field: 'spec.refresh.before',
  },
  {
    name: 'generic provider with no endpoint',
    body: mutated(clientCredentials, 'spec.provider.issuerURL', undefined),
    field: 'spec.provider.issuerURL',
  },
  {
    name: 'unknown Exact region',
    body: mutated(exact, 'spec.provider.region', 'xx'),
    field: 'spec.provider.region',
  },
  {
    name: 'output Secret name that is not a DNS name',
    body: mutated(exact, 'spec.output.secretName', 'Not_A_Name'),
    field: 'spec.output.secretName',
  },
  {
    name: 'unknown login flow',
    body: mutated(exact, 'spec.recovery.login.flow', 'magic'),
    field: 'spec.recovery.login.flow',
  },
  {
    name: 'login attempts above the ceiling',
    body: mutated(exact, 'spec.recovery.login.maxAttemptsPerHour', 1000),
    field: 'spec.recovery.login.maxAttemptsPerHour',
  },
  {
    name: 'folio with client credentials',
    body: mutated(folio, 'spec.grant', { type: 'clientCredentials' }),
    field: 'spec.grant.type',
  },
  {
    name: 'keepAlive shorter than minInterval',
    body: mutated(exact, 'spec.refresh.keepAlive', '60s'),
    field: 'spec.refresh.keepAlive',
  },
  { name: 'no output', body: mutated(exact, 'spec.output', undefined), field: 'spec.output' },
  {
    name: 'seed with the client credentials grant',
    body: mutated(clientCredentials, 'spec.grant.seedSecretRef', { name: 'seed' }),
    field: 'spec.grant.seedSecretRef',
  },
  // No hot loops: a refresh due as soon as the token arrives, or a keep-alive that never rests.
  {
    name: 'before not shorter than assumedLifetime',
    body: mutated(bounds, 'spec.refresh.assumedLifetime', '24h'),
    field: 'spec.refresh.before',
  },
  {
    name: 'keepAlive of 0s',
    body: mutated(keycloak, 'spec.refresh.keepAlive', '0s'),
    field: 'spec.refresh.keepAlive',
  },
  {
    name: 'keepAlive under a minute',
    body: mutated(keycloak, 'spec.refresh.keepAlive', '30s'),
    field: 'spec.refresh.keepAlive',
  },
  // Each duration just above its maximum (the bounds fixture holds them at it).
  {
    name: 'before above 24h',
    body: mutated(bounds, 'spec.refresh.before', '24h1ms'),
    field: 'spec.refresh.before',
  },
  {
    name: 'minInterval above 24h',
    body: mutated(bounds, 'spec.refresh.minInterval', '86401s'),
    field: 'spec.refresh.minInterval',
  },
  {
    name: 'keepAlive above 8760h',
    body: mutated(bounds, 'spec.refresh.keepAlive', '525601m'),
    field: 'spec.refresh.keepAlive',
  },
  {
    name: 'assumedLifetime above 8760h',
    body: mutated(bounds, 'spec.refresh.assumedLifetime', '8760h1ms'),
    field: 'spec.refresh.assumedLifetime',
  },
  {
    name: 'graceWindow above 1h',
    body: mutated(bounds, 'spec.refresh.graceWindow', '2h'),
    field: 'spec.refresh.graceWindow',
  },
  // Beyond what duration() can hold: a rule that failed at run time would name only spec.refresh.
  {
    name: 'assumedLifetime beyond Go durations',
    body: mutated(keycloak, 'spec.refresh.assumedLifetime', '3000000000h'),
    field: 'spec.refresh.assumedLifetime',
  },
  {
    name: 'before beyond Go durations, next to an assumedLifetime',
    body: mutated(bounds, 'spec.refresh.before', '99999999999999999999h'),
    field: 'spec.refresh.before',
  },
  {
    name: 'keepAlive beyond Go durations, next to a minInterval',
    body: mutated(exact, 'spec.refresh.keepAlive', '3000000000h'),
    field: 'spec.refresh.keepAlive',
  },
  // Output labels and annotations: what the API server would refuse on the Secret, refused here
  // already, and the operator's own keys, which a tenant may not set.
  {
    name: 'a label key with a space',
    body: mutated(exact, 'spec.output.labels', { 'my label': 'x' }),
    field: 'spec.output.labels',
    says: 'label keys must be qualified names',
  },
  {
    name: 'a label key with a capital prefix',
    body: mutated(exact, 'spec.output.labels', { 'Example.com/tier': 'x' }),
    field: 'spec.output.labels',
    says: 'label keys must be qualified names',
  },
  {
    name: 'a label key prefix over 253 characters',
    body: mutated(exact, 'spec.output.labels', { [`${'p'.repeat(250)}.com/x`]: 'x' }),
    field: 'spec.output.labels',
    says: 'label keys must be qualified names',
  },
  {
    name: 'a label value with a space',
    body: mutated(exact, 'spec.output.labels', { app: 'two words' }),
    field: 'spec.output.labels.app',
  },
  {
    name: 'the role label the operator sets',
    body: mutated(exact, 'spec.output.labels', { 'oauth.token-operator.dev/role': 'state' }),
    field: 'spec.output.labels',
    says: 'reserved for the operator',
  },
  {
    name: 'the managed-by label',
    body: mutated(exact, 'spec.output.labels', { 'app.kubernetes.io/managed-by': 'someone' }),
    field: 'spec.output.labels',
    says: 'reserved for the operator',
  },
  {
    name: 'the connection annotations, in any case',
    body: mutated(exact, 'spec.output.annotations', { 'OAuth.Token-Operator.dev/connection-namespace': 'b' }),
    field: 'spec.output.annotations',
    says: 'reserved for the operator',
  },
  {
    name: 'an annotation key with two slashes',
    body: mutated(exact, 'spec.output.annotations', { 'a/b/c': 'x' }),
    field: 'spec.output.annotations',
    says: 'annotation keys must be qualified names',
  },
  // Output keys: two items writing one Secret key, and names Kubernetes or JavaScript refuse.
  {
    name: 'tokenType under the access token key',
    body: mutated(exact, 'spec.output.keys', { tokenType: 'access_token' }),
    field: 'spec.output.keys.tokenType',
  },
  {
    name: 'expiresAt under a renamed access token key',
    body: mutated(exact, 'spec.output.keys', { accessToken: 'token', expiresAt: 'token' }),
    field: 'spec.output.keys.expiresAt',
  },
  {
    name: 'the Authorization header under the default expiry key',
    body: mutated(exact, 'spec.output.keys', { authorizationHeader: 'expires_at' }),
    field: 'spec.output.keys.authorizationHeader',
  },
  {
    name: 'a template under the default token type key',
    body: mutated(exact, 'spec.output.templates', [{ key: 'token_type', template: 'x' }]),
    field: 'spec.output.templates',
    says: "a template's key names the same Secret key",
  },
  {
    name: 'two templates under one key',
    body: mutated(exact, 'spec.output.templates', [
      { key: 'cfg', template: 'a' },
      { key: 'cfg', template: 'b' },
    ]),
    field: 'spec.output.templates[1]',
  },
  {
    name: '__proto__ as the access token key',
    body: mutated(exact, 'spec.output.keys', { accessToken: '__proto__' }),
    field: 'spec.output.keys.accessToken',
  },
  {
    name: 'constructor as a template key',
    body: mutated(exact, 'spec.output.templates', [{ key: 'constructor', template: 'x' }]),
    field: 'spec.output.templates[0].key',
  },
  {
    name: '..data (the directory the kubelet writes) as the expiry key',
    body: mutated(exact, 'spec.output.keys', { expiresAt: '..data' }),
    field: 'spec.output.keys.expiresAt',
  },
];

describe('the OAuthConnection CRD on the real API server', () => {
  let admin: k8s.KubeConfig;
  let custom: k8s.CustomObjectsApi;
  let namespace: string;

  beforeAll(async () => {
    admin = loadKubeConfig(inject('kubeconfig'));
    await applyCRDs(admin);
    custom = admin.makeApiClient(k8s.CustomObjectsApi);
    namespace = await createNamespace(admin, 'crd');
  });

  const create = (body: Obj) =>
    custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
      body,
      // What kubectl does by default: unknown fields are errors, not silently pruned.
      fieldValidation: 'Strict',
    });

  const validFiles = readdirSync(validDir).filter((f) => f.endsWith('.yaml'));
  it.each(validFiles)('accepts %s', async (file) => {
    const created = (await create(fixture(file))) as { spec: { grant?: { type?: string } } };
    expect(['refreshToken', 'clientCredentials', 'password']).toContain(created.spec.grant?.type);
  });

  it('has a valid fixture for every grant type', () => {
    const types = new Set(
      validFiles.map((f) => (fixture(f).spec as { grant?: { type?: string } }).grant?.type ?? 'refreshToken'),
    );
    expect([...types].sort()).toEqual(['clientCredentials', 'password', 'refreshToken']);
  });

  it('applies defaults from the schema', async () => {
    const body = mutated(fixture('refresh-token-keycloak-direct.yaml'), 'metadata.name', 'defaults');
    const created = (await create(body)) as {
      spec: {
        grant: { type: string; seedSecretRef: { key: string } };
        output: { keys: Obj };
        revokeOnDelete: boolean;
      };
    };
    expect(created.spec.grant.type).toBe('refreshToken');
    expect(created.spec.grant.seedSecretRef.key).toBe('refresh_token');
    expect(created.spec.output.keys).toEqual({
      accessToken: 'access_token',
      tokenType: 'token_type',
      expiresAt: 'expires_at',
    });
    expect(created.spec.revokeOnDelete).toBe(false);
  });

  it.each(invalid)('rejects $name, naming $field', async ({ body, field, says }) => {
    const named = mutated(body, 'metadata.name', `invalid-${Math.random().toString(36).slice(2, 8)}`);
    const error = await create(named).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isApiError(error), `the server accepted it`).toBe(true);
    if (!isApiError(error)) return;
    expect([400, 422]).toContain(error.code);
    const status = JSON.parse(error.body) as { message: string };
    expect(status.message).toContain(field);
    if (says !== undefined) expect(status.message).toContain(says);
  });

  it('teaches the API through kubectl explain', async () => {
    const { stdout } = await execFileAsync(inject('controlPlaneBinary'), [
      'kubectl',
      '--kubeconfig',
      inject('kubeconfig'),
      'explain',
      'oac.spec',
    ]);
    expect(stdout).toContain('KIND:       OAuthConnection');
    expect(stdout).toContain('Desired state of the token chain.');
    expect(stdout).toMatch(
      /clientID\s+<string> -required-\n\s+OAuth2 client identifier registered with the provider\./,
    );
    const { stdout: nested } = await execFileAsync(inject('controlPlaneBinary'), [
      'kubectl',
      '--kubeconfig',
      inject('kubeconfig'),
      'explain',
      'oac.spec.refresh.minInterval',
    ]);
    expect(nested).toContain('Exact Online - 570s');
  });

  it('prints the printer columns', async () => {
    const { stdout } = await execFileAsync(inject('controlPlaneBinary'), [
      'kubectl',
      '--kubeconfig',
      inject('kubeconfig'),
      'get',
      'oac',
      '-n',
      namespace,
    ]);
    expect(stdout.split('\n')[0]).toMatch(/^NAME\s+READY\s+PROVIDER\s+EXPIRES\s+LAST REFRESH\s+AGE/);
  });
});
