// Reading the Secrets a connection references: the operator's policy (no Secret of a type that
// holds a cluster or registry credential; the opt-in label when the operator requires one) and the
// usual refusals, against a fake CoreV1Api that only answers readNamespacedSecret.
import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { OAuthConnection } from '../../src/api/v1alpha1.ts';
import {
  ConfigurationError,
  readSecretKeyVersioned,
  REFUSED_SECRET_TYPES,
  resolveInputs,
  type SecretReadOptions,
} from '../../src/controller/inputs.ts';

const NAMESPACE = 'tenant-a';
const OPT_IN = 'oauth.token-operator.dev/readable';
const VALUE = 'value-CANARY-7f3a';

interface FakeSecret {
  type?: string;
  labels?: Record<string, string>;
  data?: Record<string, string>;
  /** Answer with this HTTP error instead. */
  status?: number;
}

/** A CoreV1Api whose readNamespacedSecret serves these Secrets of NAMESPACE and records each read. */
function fakeCore(secrets: Record<string, FakeSecret>): { core: k8s.CoreV1Api; reads: string[] } {
  const reads: string[] = [];
  const readNamespacedSecret = (request: { name: string; namespace: string }): Promise<k8s.V1Secret> => {
    reads.push(`${request.namespace}/${request.name}`);
    const found = request.namespace === NAMESPACE ? secrets[request.name] : undefined;
    if (found === undefined) return Promise.reject(new k8s.ApiException(404, 'not found', {}, {}));
    if (found.status !== undefined) return Promise.reject(new k8s.ApiException(found.status, 'no', {}, {}));
    return Promise.resolve({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: request.name,
        namespace: NAMESPACE,
        resourceVersion: '7',
        ...(found.labels !== undefined ? { labels: found.labels } : {}),
      },
      ...(found.type !== undefined ? { type: found.type } : {}),
      ...(found.data !== undefined ? { data: found.data } : {}),
    });
  };
  // Only the one method inputs.ts calls; anything else would be a test bug and fail loudly.
  return { core: { readNamespacedSecret } as unknown as k8s.CoreV1Api, reads };
}

const b64 = (text: string): string => Buffer.from(text).toString('base64');

/** What the call threw, checked to be a ConfigurationError that shows no Secret value. */
async function refusal(work: Promise<unknown>): Promise<ConfigurationError> {
  let caught: unknown;
  try {
    await work;
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ConfigurationError);
  const err = caught as ConfigurationError;
  expect(err.message).not.toContain(VALUE);
  return err;
}

describe('readSecretKeyVersioned', () => {
  const read = (secret: FakeSecret | undefined, options?: SecretReadOptions, key?: string) => {
    const { core } = fakeCore(secret === undefined ? {} : { creds: secret });
    return readSecretKeyVersioned(
      core,
      NAMESPACE,
      { name: 'creds', ...(key !== undefined ? { key } : {}) },
      'spec.clientSecretRef',
      'client_secret',
      options,
    );
  };

  it.each([
    { name: 'an Opaque Secret', secret: { type: 'Opaque' } },
    { name: 'a Secret without a type (Opaque)', secret: {} },
    { name: 'a basic-auth Secret', secret: { type: 'kubernetes.io/basic-auth' } },
    { name: 'a Secret of a custom type', secret: { type: 'example.com/oauth-client' } },
    {
      name: 'a labelled Secret when the label is required',
      secret: { labels: { [OPT_IN]: 'true' } },
      options: { requireSecretLabel: OPT_IN },
    },
    { name: 'an unlabelled Secret when no label is required', secret: {}, options: {} },
    {
      name: 'an unlabelled Secret when the required label is empty',
      secret: {},
      options: { requireSecretLabel: '' },
    },
  ])('reads $name', async ({ secret, options }) => {
    const value = await read({ ...secret, data: { client_secret: b64(` ${VALUE}\n`) } }, options);
    expect(value).toEqual({ value: VALUE, name: 'creds', resourceVersion: '7', annotations: {} });
  });

  it.each([...REFUSED_SECRET_TYPES].map((type) => [type]))('refuses a Secret of type %s', async (type) => {
    const err = await refusal(read({ type, data: { client_secret: b64(VALUE), token: b64(VALUE) } }));
    expect(err.reason).toBe('SecretTypeNotAllowed');
    expect(err.message).toBe(
      `spec.clientSecretRef: Secret ${NAMESPACE}/creds is of type ${type}, which the operator never reads (it holds a cluster or registry credential, not an OAuth one)`,
    );
  });

  it('refuses exactly the five types that hold cluster or registry credentials', () => {
    expect([...REFUSED_SECRET_TYPES].sort()).toEqual([
      'bootstrap.kubernetes.io/token',
      'kubernetes.io/dockercfg',
      'kubernetes.io/dockerconfigjson',
      'kubernetes.io/service-account-token',
      'kubernetes.io/tls',
    ]);
  });

  it.each<{ name: string; labels?: Record<string, string> }>([
    { name: 'no labels' },
    { name: 'other labels', labels: { app: 'x' } },
    { name: 'the label set to false', labels: { [OPT_IN]: 'false' } },
    { name: 'the label set to True', labels: { [OPT_IN]: 'True' } },
    { name: 'the label empty', labels: { [OPT_IN]: '' } },
  ])('refuses a Secret with $name when the opt-in label is required', async ({ labels }) => {
    const secret: FakeSecret = {
      data: { client_secret: b64(VALUE) },
      ...(labels !== undefined ? { labels } : {}),
    };
    const err = await refusal(read(secret, { requireSecretLabel: OPT_IN }));
    expect(err.reason).toBe('SecretNotOptedIn');
    expect(err.message).toBe(
      `spec.clientSecretRef: Secret ${NAMESPACE}/creds lacks the label ${OPT_IN}=true that this operator requires on every Secret a connection references`,
    );
  });

  interface Refusal {
    name: string;
    secret: FakeSecret | undefined;
    options?: SecretReadOptions;
    key?: string;
    reason: string;
    message?: RegExp;
  }
  it.each<Refusal>([
    {
      name: 'a refused type even when labelled (the type is checked first)',
      secret: { type: 'kubernetes.io/service-account-token', labels: { [OPT_IN]: 'true' } },
      options: { requireSecretLabel: OPT_IN },
      reason: 'SecretTypeNotAllowed',
    },
    { name: 'a missing Secret', secret: undefined, reason: 'SecretNotFound', message: /not found/ },
    { name: 'a forbidden Secret', secret: { status: 403 }, reason: 'SecretForbidden' },
    { name: 'a Secret without the key', secret: { data: {} }, reason: 'SecretKeyMissing' },
    { name: 'a Secret without data', secret: {}, reason: 'SecretKeyMissing' },
    {
      name: 'a key only Object.prototype has',
      secret: { data: { client_secret: b64(VALUE) } },
      key: 'constructor',
      reason: 'SecretKeyMissing',
      message: /has no key constructor/,
    },
    { name: 'an empty value', secret: { data: { client_secret: b64(' \n') } }, reason: 'SecretKeyEmpty' },
  ])('refuses $name: $reason', async ({ secret, options, key, reason, message }) => {
    const err = await refusal(read(secret, options, key));
    expect(err.reason).toBe(reason);
    expect(err.message).toMatch(/^spec\.clientSecretRef: /);
    if (message !== undefined) expect(err.message).toMatch(message);
  });

  it('refuses a reference to another namespace without reading anything', async () => {
    const { core, reads } = fakeCore({ creds: { data: { client_secret: b64(VALUE) } } });
    const ref = { name: 'creds', namespace: 'kube-system' };
    const err = await refusal(readSecretKeyVersioned(core, NAMESPACE, ref, 'spec.clientSecretRef', 'x'));
    expect(err.reason).toBe('CrossNamespaceReference');
    expect(reads).toEqual([]);
  });
});

describe('resolveInputs: the policy applies to every referenced Secret', () => {
  function connection(spec: Partial<OAuthConnection['spec']> = {}): OAuthConnection {
    return {
      apiVersion: 'oauth.token-operator.dev/v1alpha1',
      kind: 'OAuthConnection',
      metadata: { name: 'c', namespace: NAMESPACE },
      spec: {
        provider: { preset: 'generic', tokenURL: 'https://tenant.example/token' },
        clientID: 'id',
        clientSecretRef: { name: 'client' },
        grant: { type: 'refreshToken', seedSecretRef: { name: 'seed' } },
        output: { secretName: 'out' },
        ...spec,
      },
    };
  }
  const login = {
    flow: 'code' as const,
    redirectURI: 'https://app.example/cb',
    usernameRef: { name: 'login' },
    passwordRef: { name: 'login' },
    totpSecretRef: { name: 'totp' },
  };
  const labelled = { [OPT_IN]: 'true' };
  /** Every Secret the connections below reference, Opaque and labelled. */
  const good = (): Record<string, FakeSecret> => ({
    client: { labels: labelled, data: { client_secret: b64(VALUE) } },
    seed: { labels: labelled, data: { refresh_token: b64(VALUE) } },
    login: { labels: labelled, data: { username: b64('alice'), password: b64(VALUE) } },
    totp: { labels: labelled, data: { totp: b64('JBSWY3DPEHPK3PXP') } },
  });

  it('reads only the client secret for a revocation (clientOnly), so deleted user Secrets do not stop it', async () => {
    // The user's Secrets are gone: only the client's is left.
    const { core, reads } = fakeCore({ client: { labels: labelled, data: { client_secret: b64(VALUE) } } });
    const inputs = await resolveInputs(core, connection({ recovery: { login } }), 1000, { clientOnly: true });
    expect(inputs.client.clientSecret).toBe(VALUE);
    expect(inputs.seed).toBeUndefined();
    expect(inputs.login).toBeUndefined();
    expect(reads).toEqual([`${NAMESPACE}/client`]);
  });

  it('resolves with the options left out (the existing callers) and with them', async () => {
    const { core } = fakeCore(good());
    const plain = await resolveInputs(core, connection({ recovery: { login } }), 1000);
    expect(plain.client.clientSecret).toBe(VALUE);
    expect(plain.login?.password).toBe(VALUE);
    const optedIn = await resolveInputs(core, connection({ recovery: { login } }), 1000, {
      requireSecretLabel: OPT_IN,
    });
    expect(optedIn.seed?.value).toBe(VALUE);
  });

  it.each([
    {
      name: 'a clientSecretRef to a service-account token (the confused deputy)',
      secret: 'client',
      change: { type: 'kubernetes.io/service-account-token' },
      field: 'spec.clientSecretRef',
      reason: 'SecretTypeNotAllowed',
    },
    {
      name: 'login credentials in a dockerconfigjson Secret (usernameRef reads it first)',
      secret: 'login',
      change: { type: 'kubernetes.io/dockerconfigjson' },
      field: 'spec.recovery.login.usernameRef',
      reason: 'SecretTypeNotAllowed',
    },
    {
      name: 'an unlabelled TOTP Secret',
      secret: 'totp',
      change: { labels: {} },
      field: 'spec.recovery.login.totpSecretRef',
      reason: 'SecretNotOptedIn',
      options: { requireSecretLabel: OPT_IN },
    },
    {
      name: 'an unlabelled client Secret',
      secret: 'client',
      change: { labels: {} },
      field: 'spec.clientSecretRef',
      reason: 'SecretNotOptedIn',
      options: { requireSecretLabel: OPT_IN },
    },
    // With a login to fall back on a missing seed is tolerated, but a refused one is reported.
    {
      name: 'a seed in a TLS Secret, even with a login to fall back on',
      secret: 'seed',
      change: { type: 'kubernetes.io/tls' },
      field: 'spec.grant.seedSecretRef',
      reason: 'SecretTypeNotAllowed',
    },
    {
      name: 'an unlabelled seed, even with a login to fall back on',
      secret: 'seed',
      change: { labels: {} },
      field: 'spec.grant.seedSecretRef',
      reason: 'SecretNotOptedIn',
      options: { requireSecretLabel: OPT_IN },
    },
  ])('refuses $name: $reason', async ({ secret, change, field, reason, options }) => {
    const secrets = good();
    secrets[secret] = { ...secrets[secret], ...change };
    const { core } = fakeCore(secrets);
    const err = await refusal(resolveInputs(core, connection({ recovery: { login } }), 1000, options));
    expect(err.reason).toBe(reason);
    expect(err.message.startsWith(`${field}: Secret ${NAMESPACE}/${secret} `)).toBe(true);
  });

  it('still tolerates a missing seed when a login can bootstrap the chain', async () => {
    const secrets = good();
    delete secrets.seed;
    const { core } = fakeCore(secrets);
    const inputs = await resolveInputs(core, connection({ recovery: { login } }), 1000);
    expect(inputs.seed).toBeUndefined();
    expect(inputs.login?.username).toBe('alice');
  });
});
