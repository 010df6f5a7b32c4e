import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { OAuthConnection } from '../../src/api/v1alpha1.ts';
import {
  controllingConnection,
  InvalidOutputKeyError,
  InvalidOutputMetadataError,
  isReservedMetadataKey,
  MAX_ACCESS_TOKEN_BYTES,
  MAX_RENDERED_BYTES,
  OutputError,
  outputGeolocation,
  templatesUse,
  OutputRejectedError,
  OutputSecretNotOwnedError,
  OutputSecretOfPredecessorError,
  OutputSecretWriter,
  outputMetadata,
  outputSecretOwnerKey,
  OutputTooLargeError,
  ownership,
  rejectionOf,
  renderOutputData,
} from '../../src/controller/output-secret.ts';

type Output = OAuthConnection['spec']['output'];

function withOutput(output: Output): OAuthConnection {
  return {
    apiVersion: 'oauth.token-operator.dev/v1alpha1',
    kind: 'OAuthConnection',
    metadata: { name: 'c', namespace: 'n' },
    spec: { provider: { preset: 'generic', tokenURL: 'https://x/token' }, clientID: 'id', output },
  };
}

const tokens = { accessToken: 'AT', tokenType: 'bearer', expiresAtMs: Date.parse('2026-01-01T00:10:00Z') };

/** An access token of the given size that no error message may contain any 16 characters of. */
function canaryToken(bytes: number): string {
  return 'CANARY-TOKEN-x9Q'.repeat(Math.ceil(bytes / 16)).slice(0, bytes);
}

/** What renderOutputData threw, checked to be an OutputError that shows no part of the token. */
function refusal(output: Output, accessToken = canaryToken(1024)): { err: OutputError; ms: number } {
  const start = performance.now();
  let caught: unknown;
  try {
    renderOutputData(withOutput(output), { ...tokens, accessToken });
  } catch (err) {
    caught = err;
  }
  const ms = performance.now() - start;
  expect(caught).toBeInstanceOf(OutputError);
  const err = caught as OutputError;
  expect(`${err.message} ${String(err.stack)}`).not.toContain(accessToken.slice(0, 16));
  return { err, ms };
}

describe('renderOutputData', () => {
  it.each([
    {
      name: 'defaults',
      output: { secretName: 's' },
      expected: { access_token: 'AT', token_type: 'Bearer', expires_at: '2026-01-01T00:10:00.000Z' },
    },
    {
      name: 'an Authorization header and renamed keys, expiry left out',
      output: {
        secretName: 's',
        keys: { accessToken: 'token', tokenType: '', expiresAt: '', authorizationHeader: 'authorization' },
      },
      expected: { token: 'AT', authorization: 'Bearer AT' },
    },
    {
      name: 'a template for a config file',
      output: {
        secretName: 's',
        keys: { tokenType: '', expiresAt: '' },
        templates: [{ key: 'cfg.json', template: '{"t":"{{ accessToken }}","e":"{{expiresAt}}"}' }],
      },
      expected: { access_token: 'AT', 'cfg.json': '{"t":"AT","e":"2026-01-01T00:10:00.000Z"}' },
    },
    {
      name: 'templates with every placeholder, repeated, and text that only looks like one',
      output: {
        secretName: 's',
        keys: { expiresAt: '' },
        templates: [
          { key: 'a', template: '{{tokenType}} {{accessToken}}/{{accessToken}}' },
          { key: 'b', template: '{{ refreshToken }} {accessToken} {{accessToken}' },
          { key: '.dotfile', template: '' },
        ],
      },
      expected: {
        access_token: 'AT',
        token_type: 'Bearer',
        a: 'Bearer AT/AT',
        b: '{{ refreshToken }} {accessToken} {{accessToken}',
        '.dotfile': '',
      },
    },
  ])('$name', ({ output, expected }) => {
    expect(renderOutputData(withOutput(output), tokens)).toEqual(expected);
  });

  it.each([
    {
      name: "a Concur chain's geolocation, for API clients",
      geolocation: 'https://us.api.concursolutions.com',
      template: '{{geolocation}}',
      expected: 'https://us.api.concursolutions.com',
    },
    {
      name: 'beside the token, with spaces in the braces',
      geolocation: 'https://emea.api.concursolutions.com',
      template: '{"base":"{{ geolocation }}/api/v3.0","token":"{{accessToken}}"}',
      expected: '{"base":"https://emea.api.concursolutions.com/api/v3.0","token":"AT"}',
    },
    { name: 'unknown: empty', geolocation: undefined, template: 'base={{geolocation}}', expected: 'base=' },
  ])('{{geolocation}}: $name', ({ geolocation, template, expected }) => {
    const output = { secretName: 's', templates: [{ key: 'api-base-url', template }] };
    const data = renderOutputData(withOutput(output), {
      ...tokens,
      ...(geolocation !== undefined ? { geolocation } : {}),
    });
    expect(data['api-base-url']).toBe(expected);
  });

  it('builds the data on a null prototype: no key name is special while rendering', () => {
    const data = renderOutputData(withOutput({ secretName: 's' }), tokens);
    expect(Object.getPrototypeOf(data)).toBeNull();
    expect(Object.keys(data)).toEqual(['access_token', 'token_type', 'expires_at']);
  });
});

describe('outputGeolocation: what {{geolocation}} renders', () => {
  const US = 'https://us.api.concursolutions.com';
  const EMEA = 'https://emea.api.concursolutions.com';
  it.each([
    {
      name: 'Concur, a stored geolocation: it, whatever endpoint answered',
      chain: { followsGeolocation: true, geolocation: EMEA, tokenEndpoint: `${US}/oauth2/v0/token` },
      expected: EMEA,
    },
    {
      name: 'Concur, none stored yet: the origin of the regional token endpoint',
      chain: { followsGeolocation: true, tokenEndpoint: `${US}/oauth2/v0/token` },
      expected: US,
    },
    {
      name: 'Concur, a stored geolocation that is not a URL: the token endpoint',
      chain: { followsGeolocation: true, geolocation: 'emea', tokenEndpoint: `${US}/oauth2/v0/token` },
      expected: US,
    },
    {
      name: 'Concur, a geolocation with a path and a query: its origin only',
      chain: { followsGeolocation: true, geolocation: `${EMEA}/x?y=1` },
      expected: EMEA,
    },
    {
      name: 'another provider: the token host, a port kept',
      chain: {
        followsGeolocation: false,
        tokenEndpoint: 'https://start.exactonline.nl:443/api/oauth2/token',
      },
      expected: 'https://start.exactonline.nl',
    },
    {
      name: 'another provider whose answers carry a geolocation: not followed, not rendered',
      chain: {
        followsGeolocation: false,
        geolocation: EMEA,
        tokenEndpoint: 'https://sso.example.org:8443/realms/r/protocol/openid-connect/token',
      },
      expected: 'https://sso.example.org:8443',
    },
    {
      name: 'a token endpoint with credentials in it: nothing',
      chain: { followsGeolocation: false, tokenEndpoint: 'https://user:pw@sso.example.org/token' },
      expected: undefined,
    },
    { name: 'nothing known', chain: { followsGeolocation: true }, expected: undefined },
  ])('$name', ({ chain, expected }) => {
    expect(outputGeolocation(chain)).toBe(expected);
  });

  // The engine looks the value up only for a connection whose templates ask for it.
  it.each([
    { templates: [{ key: 'base', template: '{{geolocation}}' }], expected: true },
    { templates: [{ key: 'url', template: 'x={{ geolocation }}/api' }], expected: true },
    { templates: [{ key: 'auth', template: 'Bearer {{accessToken}}' }], expected: false },
    { templates: [{ key: 'text', template: 'geolocation {{geolocationX}}' }], expected: false },
    { templates: undefined, expected: false },
  ])('templatesUse geolocation in $templates: $expected', ({ templates, expected }) => {
    const output = { secretName: 'out', ...(templates ? { templates } : {}) };
    expect(templatesUse(withOutput(output), 'geolocation')).toBe(expected);
  });
});

describe('renderOutputData: keys', () => {
  it.each([
    {
      name: '__proto__ as the access token key (client-node would drop the token)',
      output: { secretName: 's', keys: { accessToken: '__proto__' } },
      message: /^spec\.output\.keys\.accessToken: the Secret data key "__proto__" is reserved/,
    },
    {
      name: 'constructor as a template key',
      output: { secretName: 's', templates: [{ key: 'constructor', template: 'x' }] },
      message: /^spec\.output\.templates\[0\]\.key: .*"constructor" is reserved/,
    },
    {
      name: 'prototype as the Authorization header key',
      output: { secretName: 's', keys: { authorizationHeader: 'prototype' } },
      message: /^spec\.output\.keys\.authorizationHeader: .*"prototype" is reserved/,
    },
    {
      name: 'an empty access token key (it cannot be left out)',
      output: { secretName: 's', keys: { accessToken: '' } },
      message: /^spec\.output\.keys\.accessToken: the Secret data key is empty/,
    },
    {
      name: 'a slash',
      output: { secretName: 's', keys: { tokenType: 'a/b' } },
      message: /^spec\.output\.keys\.tokenType: .*"a\/b" may only contain letters, digits/,
    },
    {
      name: 'a space',
      output: { secretName: 's', templates: [{ key: 'my file', template: 'x' }] },
      message: /^spec\.output\.templates\[0\]\.key: .*may only contain/,
    },
    {
      name: 'a non-ASCII letter',
      output: { secretName: 's', keys: { expiresAt: 'ablauf_ü' } },
      message: /^spec\.output\.keys\.expiresAt: .*may only contain/,
    },
    {
      name: '.',
      output: { secretName: 's', keys: { expiresAt: '.' } },
      message: /may not be '\.' or start with '\.\.'/,
    },
    {
      name: '..data (the kubelet uses it for its atomic-writer directory)',
      output: { secretName: 's', templates: [{ key: '..data', template: 'x' }] },
      message: /^spec\.output\.templates\[0\]\.key: .*may not be '\.' or start with '\.\.'/,
    },
    {
      name: 'a key over 253 characters',
      output: { secretName: 's', templates: [{ key: 'k'.repeat(254), template: 'x' }] },
      message: /longer than 253 characters/,
    },
    {
      name: 'the token type under the access token key',
      output: { secretName: 's', keys: { tokenType: 'access_token' } },
      message:
        /^spec\.output\.keys\.tokenType: the Secret data key "access_token" is already used by spec\.output\.keys\.accessToken$/,
    },
    {
      name: 'the Authorization header under the expiry key',
      output: { secretName: 's', keys: { expiresAt: 'h', authorizationHeader: 'h' } },
      message: /^spec\.output\.keys\.authorizationHeader: .* already used by spec\.output\.keys\.expiresAt$/,
    },
    {
      name: 'a template under a default key',
      output: { secretName: 's', templates: [{ key: 'token_type', template: 'x' }] },
      message: /^spec\.output\.templates\[0\]\.key: .* already used by spec\.output\.keys\.tokenType$/,
    },
    {
      name: 'two templates under one key',
      output: {
        secretName: 's',
        templates: [
          { key: 'cfg', template: 'a' },
          { key: 'other', template: 'b' },
          { key: 'cfg', template: 'c' },
        ],
      },
      message:
        /^spec\.output\.templates\[2\]\.key: .*"cfg" is already used by spec\.output\.templates\[0\]\.key$/,
    },
  ])('refuses $name: InvalidOutputKey', ({ output, message }) => {
    const { err } = refusal(output);
    expect(err).toBeInstanceOf(InvalidOutputKeyError);
    expect(err).toMatchObject({ reason: 'InvalidOutputKey', code: 'configuration' });
    expect(err.message).toMatch(message);
  });

  it('a key left out with an empty string is not a duplicate', () => {
    const output = { secretName: 's', keys: { tokenType: '', expiresAt: '' }, templates: [] };
    expect(renderOutputData(withOutput(output), tokens)).toEqual({ access_token: 'AT' });
  });

  it('quotes at most 40 characters of a refused key', () => {
    const { err } = refusal({ secretName: 's', templates: [{ key: `${'k'.repeat(60)}/`, template: 'x' }] });
    expect(err.message).toContain(`"${'k'.repeat(40)}…"`);
    expect(err.message).not.toContain('k'.repeat(41));
  });
});

describe('renderOutputData: sizes', () => {
  const many = (count: number): string => '{{accessToken}}'.repeat(count);

  it.each([
    {
      name: 'a token over 16 KiB, the OAuth layer cap',
      output: { secretName: 's' },
      tokenBytes: MAX_ACCESS_TOKEN_BYTES + 1,
      reason: 'OutputTooLarge',
      message:
        /^spec\.output\.keys\.accessToken: the provider's access token is 16385 bytes, over the 16384 bytes/,
    },
    {
      name: '1000 × {{accessToken}} in the third template',
      output: {
        secretName: 's',
        templates: [
          { key: 'a', template: 'x' },
          { key: 'b', template: 'y' },
          { key: 'c', template: many(1000) },
        ],
      },
      tokenBytes: 1024,
      reason: 'OutputTooLarge',
      message:
        /^spec\.output\.templates\[2\]: the template renders 1024001 bytes, taking the output to \d+ bytes, over the 524288 bytes/,
    },
    {
      name: 'eight templates that each stay under the cap but not together',
      output: {
        secretName: 's',
        templates: Array.from({ length: 8 }, (_, i) => ({ key: `t${i}`, template: many(100) })),
      },
      tokenBytes: 1024,
      reason: 'OutputTooLarge',
      message: /^spec\.output\.templates\[5\]: the template renders 102402 bytes/,
    },
    {
      name: 'the CRD maxima: 8 templates of 16 KiB of {{accessToken}} with a 16 KiB token (140 MB if built)',
      output: {
        secretName: 's',
        templates: Array.from({ length: 8 }, (_, i) => ({ key: `t${i}`, template: many(1092) })),
      },
      tokenBytes: MAX_ACCESS_TOKEN_BYTES,
      reason: 'OutputTooLarge',
      message: /^spec\.output\.templates\[0\]: /,
    },
  ])('refuses $name, fast and without building it', ({ output, tokenBytes, reason, message }) => {
    const heapBefore = process.memoryUsage().heapUsed;
    const { err, ms } = refusal(output, canaryToken(tokenBytes));
    expect(err).toBeInstanceOf(OutputTooLargeError);
    expect(err.reason).toBe(reason);
    expect(err.message).toMatch(message);
    expect(ms).toBeLessThan(250);
    // Nothing near the rendered size was allocated (allow for the garbage of the test itself).
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(32 * 1024 * 1024);
  });

  it('renders a 16 KiB token into a header and templates up to the cap', () => {
    const accessToken = canaryToken(MAX_ACCESS_TOKEN_BYTES);
    const output = {
      secretName: 's',
      keys: { tokenType: '', expiresAt: '', authorizationHeader: 'authorization' },
      templates: [{ key: 'cfg', template: many(5) }],
    };
    const data = renderOutputData(withOutput(output), { ...tokens, accessToken });
    expect(data.access_token).toBe(accessToken);
    expect(data.authorization).toBe(`Bearer ${accessToken}`);
    expect(data.cfg).toBe(accessToken.repeat(5));
    const size = Object.entries(data).reduce((n, [k, v]) => n + k.length + v.length, 0);
    expect(size).toBeLessThanOrEqual(MAX_RENDERED_BYTES);
  });

  it('counts the geolocation in the rendered size like any other value', () => {
    // access_token=AT is 14 bytes and the template's key 2; the rest is the template's text.
    const geolocation = 'https://emea.api.concursolutions.com';
    const room = MAX_RENDERED_BYTES - 'access_token'.length - 'AT'.length - 'kk'.length;
    const output = { secretName: 's', keys: { tokenType: '', expiresAt: '' } };
    const template = (fill: number): Output => ({
      ...output,
      templates: [{ key: 'kk', template: `${'x'.repeat(fill)}{{geolocation}}` }],
    });
    const fits = renderOutputData(withOutput(template(room - geolocation.length)), {
      ...tokens,
      geolocation,
    });
    expect(fits.kk?.endsWith(geolocation)).toBe(true);
    expect(() =>
      renderOutputData(withOutput(template(room - geolocation.length + 1)), { ...tokens, geolocation }),
    ).toThrow(/templates\[0\]: the template renders 524275 bytes, taking the output to 524289 bytes/);
  });

  it('counts bytes, not characters, exactly at the boundary', () => {
    // access_token=AT is 14 bytes and the template's key 2: the rest is two-byte characters.
    const fill = (MAX_RENDERED_BYTES - 'access_token'.length - 'AT'.length - 'kk'.length) / 2;
    const output = { secretName: 's', keys: { tokenType: '', expiresAt: '' } };
    const fits = { ...output, templates: [{ key: 'kk', template: 'é'.repeat(fill) }] };
    expect(Object.keys(renderOutputData(withOutput(fits), tokens))).toEqual(['access_token', 'kk']);
    const over = { ...output, templates: [{ key: 'kk', template: `${'é'.repeat(fill)}x` }] };
    expect(() => renderOutputData(withOutput(over), tokens)).toThrow(
      /templates\[0\]: the template renders 524275 bytes, taking the output to 524289 bytes/,
    );
  });
});

describe('output errors carry the Ready=False reason', () => {
  it.each([
    [new OutputSecretNotOwnedError('s'), 'OutputSecretNotOwned', /spec\.output\.secretName/],
    [new InvalidOutputKeyError('spec.output.keys.accessToken: x'), 'InvalidOutputKey', /keys\.accessToken/],
    [new OutputTooLargeError('spec.output.templates[2]: x'), 'OutputTooLarge', /templates\[2\]/],
  ])('%s', (err, reason, message) => {
    expect(err).toBeInstanceOf(OutputError);
    expect(err.reason).toBe(reason);
    expect(err.message).toMatch(message);
  });

  it('OutputSecretNotOwnedError keeps its code', () => {
    expect(new OutputSecretNotOwnedError('s').code).toBe('output_not_owned');
  });
});

describe('outputMetadata: labels and annotations', () => {
  it("adds the operator's keys to the tenant's, which follow Kubernetes' rules", () => {
    const { labels, annotations } = outputMetadata(
      withOutput({
        secretName: 's',
        labels: { app: 'billing', 'example.com/tier': '', 'team.example.com/Owner_1': 'a.b-c_D' },
        // Annotation keys are checked lowercased, as the API server does: a capital prefix is fine.
        annotations: { 'Reloader.Stakater.com/match': 'true', note: 'any text at all: "quoted", spaces' },
      }),
    );
    expect(labels).toEqual({
      app: 'billing',
      'example.com/tier': '',
      'team.example.com/Owner_1': 'a.b-c_D',
      'app.kubernetes.io/managed-by': 'oauth-token-operator',
      'oauth.token-operator.dev/role': 'output',
    });
    expect(annotations).toEqual({
      'Reloader.Stakater.com/match': 'true',
      note: 'any text at all: "quoted", spaces',
      'oauth.token-operator.dev/connection-name': 'c',
    });
  });

  it.each<{ name: string; output: Partial<Output>; message: RegExp }>([
    {
      name: 'the role label',
      output: { labels: { 'oauth.token-operator.dev/role': 'state' } },
      message:
        /^spec\.output\.labels\["oauth\.token-operator\.dev\/role"\]: the key is reserved for the operator/,
    },
    {
      name: 'the managed-by label',
      output: { labels: { 'app.kubernetes.io/managed-by': 'argocd' } },
      message: /^spec\.output\.labels\["app\.kubernetes\.io\/managed-by"\]: the key is reserved/,
    },
    {
      name: 'the connection-namespace annotation that once steered events to another namespace',
      output: { annotations: { 'oauth.token-operator.dev/connection-namespace': 'victim' } },
      message: /^spec\.output\.annotations\["oauth\.token-operator\.dev\/connection-namespace"\]: .*reserved/,
    },
    {
      name: 'a reserved annotation in capitals (annotation keys compare lowercased)',
      output: { annotations: { 'OAuth.Token-Operator.DEV/connection-name': 'x' } },
      message: /^spec\.output\.annotations\["OAuth\.Token-Operator\.DEV\/connection-name"\]: .*reserved/,
    },
    {
      name: 'any key under token-operator.dev',
      output: { labels: { 'token-operator.dev/anything': 'x' } },
      message: /reserved for the operator/,
    },
    {
      name: 'a label key with a space (the API server would answer 422)',
      output: { labels: { 'my label': 'x' } },
      message: /^spec\.output\.labels\["my label"\]: the key needs a name of at most 63/,
    },
    {
      name: 'a label key with a capital prefix',
      output: { labels: { 'Example.com/x': 'x' } },
      message: /^spec\.output\.labels\["Example\.com\/x"\]: the key has a prefix that is not a DNS subdomain/,
    },
    {
      name: 'a key with two slashes',
      output: { annotations: { 'a/b/c': 'x' } },
      message: /^spec\.output\.annotations\["a\/b\/c"\]: the key may contain at most one \//,
    },
    {
      name: 'a key name over 63 characters',
      output: { annotations: { [`example.com/${'n'.repeat(64)}`]: 'x' } },
      message: /the key needs a name of at most 63/,
    },
    {
      name: 'a key prefix over 253 characters',
      output: { labels: { [`${'p'.repeat(254)}/x`]: 'x' } },
      message: /the key has a prefix that is not a DNS subdomain/,
    },
    {
      name: '__proto__ as a label key (JavaScript would lose it)',
      output: { labels: JSON.parse('{"__proto__": "x"}') as Record<string, string> },
      message: /^spec\.output\.labels\["__proto__"\]: the key needs a name/,
    },
    {
      name: 'a label value with a space',
      output: { labels: { app: 'two words' } },
      message: /^spec\.output\.labels\["app"\]: the value must be at most 63 letters/,
    },
    {
      name: 'a label value over 63 characters',
      output: { labels: { app: 'v'.repeat(64) } },
      message: /^spec\.output\.labels\["app"\]: the value must be/,
    },
    {
      name: 'annotations over 256 KiB together',
      output: {
        annotations: Object.fromEntries(Array.from({ length: 70 }, (_, i) => [`a${i}`, 'x'.repeat(4000)])),
      },
      message: /^spec\.output\.annotations: over the 262144 bytes Kubernetes allows$/,
    },
  ])('refuses $name: InvalidOutputMetadata', ({ output, message }) => {
    let caught: unknown;
    try {
      outputMetadata(withOutput({ secretName: 's', ...output }));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidOutputMetadataError);
    expect(caught).toMatchObject({ reason: 'InvalidOutputMetadata', code: 'configuration' });
    expect((caught as Error).message).toMatch(message);
  });

  it.each([
    ['app.kubernetes.io/managed-by', true],
    ['oauth.token-operator.dev/role', true],
    ['OAUTH.token-operator.dev/x', true],
    ['token-operator.dev/x', true],
    ['app.kubernetes.io/name', false],
    ['example.com/token-operator.dev', false],
    ['nottoken-operator.dev/x', false],
    ['token-operator.dev', false],
  ])('isReservedMetadataKey(%s) is %s', (key, reserved) => {
    expect(isReservedMetadataKey(key)).toBe(reserved);
  });
});

const UID = '6a1c0e3e-0000-4000-8000-000000000001';
const connection: OAuthConnection = {
  ...withOutput({ secretName: 's' }),
  metadata: { name: 'c', namespace: 'n', uid: UID },
};
const API = 'oauth.token-operator.dev/v1alpha1';
const ref = (overrides: Partial<k8s.V1OwnerReference> = {}): k8s.V1OwnerReference => ({
  apiVersion: API,
  kind: 'OAuthConnection',
  name: 'c',
  uid: UID,
  controller: true,
  ...overrides,
});
const outputLabels = {
  'app.kubernetes.io/managed-by': 'oauth-token-operator',
  'oauth.token-operator.dev/role': 'output',
};

describe('ownership: the controller owner reference, never a label', () => {
  it.each([
    { name: 'no owner reference', refs: undefined, owner: undefined },
    { name: 'our controller reference', refs: [ref()], owner: { name: 'c', uid: UID, apiVersion: API } },
    {
      name: 'ours among other owners',
      refs: [ref({ kind: 'Deployment', apiVersion: 'apps/v1', controller: false }), ref()],
      owner: { name: 'c', uid: UID, apiVersion: API },
    },
    {
      name: 'a reference to us that is not the controller',
      refs: [ref({ controller: false })],
      owner: undefined,
    },
    { name: 'the controller is another kind', refs: [ref({ kind: 'Deployment' })], owner: undefined },
    {
      name: 'our kind name in another API group',
      refs: [ref({ apiVersion: 'evil.example.com/v1alpha1' })],
      owner: undefined,
    },
  ])('controllingConnection: $name', ({ refs, owner }) => {
    expect(controllingConnection({ ownerReferences: refs })).toEqual(owner);
  });

  const live = (namespace: string, name: string) =>
    namespace === 'n' && name === 'c' ? { metadata: { uid: UID } } : undefined;
  it.each([
    {
      name: 'an output Secret of a live connection',
      secret: { namespace: 'n', ownerReferences: [ref()] },
      key: 'n/c',
    },
    {
      name: 'a forged Secret in another namespace naming the same connection and UID',
      secret: { namespace: 'attacker', ownerReferences: [ref()] },
      key: undefined,
    },
    {
      name: 'a Secret naming the connection with another UID (a leftover, or a guess)',
      secret: { namespace: 'n', ownerReferences: [ref({ uid: 'other' })] },
      key: undefined,
    },
    {
      name: "a Secret with only the operator's labels and the old annotations",
      secret: {
        namespace: 'attacker',
        labels: outputLabels,
        annotations: {
          'oauth.token-operator.dev/connection-namespace': 'n',
          'oauth.token-operator.dev/connection-name': 'c',
        },
      },
      key: undefined,
    },
    {
      name: 'a Secret naming a connection that does not exist',
      secret: { namespace: 'n', ownerReferences: [ref({ name: 'gone' })] },
      key: undefined,
    },
  ])('outputSecretOwnerKey: $name', ({ secret, key }) => {
    expect(outputSecretOwnerKey({ metadata: secret }, live)).toBe(key);
  });

  const marked = { labels: outputLabels, annotations: { 'oauth.token-operator.dev/connection-name': 'c' } };
  it.each([
    { name: 'controlled by this connection', meta: { ownerReferences: [ref()] }, expected: 'owned' },
    {
      name: 'controlled by an earlier connection of the same name',
      meta: { ownerReferences: [ref({ uid: 'earlier' })] },
      expected: 'predecessor',
    },
    {
      name: 'controlled by another connection',
      meta: { ownerReferences: [ref({ name: 'other' })] },
      expected: 'foreign',
    },
    {
      name: 'naming this connection at a version the API server does not serve (never collected)',
      meta: { ownerReferences: [ref({ uid: 'earlier', apiVersion: 'oauth.token-operator.dev/v0' })] },
      expected: 'foreign',
    },
    {
      name: "written by an earlier version: the operator's labels and name annotation, no controller",
      meta: marked,
      expected: 'adopt',
    },
    {
      name: 'marked, with a non-controller owner besides',
      meta: { ...marked, ownerReferences: [ref({ kind: 'ConfigMap', apiVersion: 'v1', controller: false })] },
      expected: 'adopt',
    },
    {
      name: 'marked, but controlled by something else',
      meta: {
        ...marked,
        ownerReferences: [ref({ kind: 'ExternalSecret', apiVersion: 'external-secrets.io/v1' })],
      },
      expected: 'foreign',
    },
    {
      name: 'marked for another connection',
      meta: { ...marked, annotations: { 'oauth.token-operator.dev/connection-name': 'other' } },
      expected: 'foreign',
    },
    {
      name: 'the annotation without the labels',
      meta: { annotations: marked.annotations },
      expected: 'foreign',
    },
    { name: 'a plain Secret', meta: {}, expected: 'foreign' },
  ])('ownership: $name is $expected', ({ meta, expected }) => {
    expect(ownership(meta, connection)).toBe(expected);
  });
});

/** An ApiException as client-node builds it from the API server's answer. */
function apiError(code: number, body: unknown): k8s.ApiException<string> {
  return new k8s.ApiException(code, 'Unknown API Status Code!', JSON.stringify(body), {});
}

function invalid(causes: { field?: string; message: string }[]): k8s.ApiException<string> {
  return apiError(422, {
    kind: 'Status',
    apiVersion: 'v1',
    status: 'Failure',
    message: `Secret "s" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`,
    reason: 'Invalid',
    details: {
      name: 's',
      kind: 'Secret',
      causes: causes.map((c) => ({ reason: 'FieldValueInvalid', ...c })),
    },
    code: 422,
  });
}

describe('rejectionOf: what the API server refuses becomes a status naming the field', () => {
  const token = canaryToken(200);
  it.each([
    {
      name: 'an invalid label',
      err: invalid([
        { field: 'metadata.labels', message: 'Invalid value: "a b": name part must consist of …' },
      ]),
      message:
        /^the API server refused the output Secret s: spec\.output\.labels: Invalid value: "a b": name part must consist of … \(metadata\.labels\)$/,
    },
    {
      name: 'two causes',
      err: invalid([
        { field: 'metadata.annotations', message: 'Too long: may not be more than 262144 bytes' },
        { field: 'data', message: 'Too long: may not be more than 1048576 bytes' },
      ]),
      message:
        /spec\.output\.annotations: Too long: .* \(metadata\.annotations\); spec\.output\.keys, spec\.output\.templates: Too long/,
    },
    {
      name: 'a 400 with a message and no causes',
      err: apiError(400, { kind: 'Status', message: 'bad request body', code: 400 }),
      message: /^the API server refused the output Secret s: spec\.output: bad request body$/,
    },
    {
      name: 'a body that is no Status',
      err: new k8s.ApiException(422, 'x', '<html>', {}),
      message: /^the API server refused the output Secret s: spec\.output: HTTP 422$/,
    },
  ])('$name', ({ err, message }) => {
    const rejected = rejectionOf(err, 's', [token]);
    expect(rejected).toBeInstanceOf(OutputRejectedError);
    expect(rejected).toMatchObject({ reason: 'OutputRejected', code: 'configuration' });
    expect(rejected?.message).toMatch(message);
  });

  it.each([
    ['a conflict', apiError(409, { code: 409 })],
    ['forbidden', apiError(403, { code: 403 })],
    ['a server error', apiError(500, { code: 500 })],
    ['no API error at all', new Error('socket hang up')],
  ])('leaves %s to the retry path', (_name, err) => {
    expect(rejectionOf(err, 's', [token])).toBeUndefined();
  });

  it('redacts every secret value, raw and base64, before it truncates', () => {
    const encoded = Buffer.from(`Bearer ${token}`).toString('base64');
    // The token sits right across the 1024-character cut: truncating first would keep its head.
    const err = invalid([
      { field: 'metadata.labels', message: `${'x'.repeat(1000)} ${token}` },
      { field: 'data[authorization]', message: `Invalid value: "${encoded}"` },
    ]);
    const rejected = rejectionOf(err, 's', [token, `Bearer ${token}`, encoded]);
    expect(rejected?.message.length).toBeLessThanOrEqual(1024);
    expect(rejected?.message).not.toContain(token.slice(0, 16));
    expect(rejected?.message).not.toContain(encoded.slice(0, 16));
    const whole = rejectionOf(
      invalid([{ field: 'data[authorization]', message: `"${encoded}" ${token}` }]),
      's',
      [token, encoded],
    );
    expect(whole?.message).toBe(
      'the API server refused the output Secret s: spec.output.keys, spec.output.templates: "[redacted]" [redacted] (data[authorization])',
    );
  });
});

/** The Secrets of one namespace, with the calls the writer makes; errors can be injected per verb. */
class FakeSecrets {
  readonly secrets = new Map<string, k8s.V1Secret>();
  readonly calls: string[] = [];
  readonly fail: Partial<Record<'create' | 'replace', Error>> = {};
  private version = 1;

  readNamespacedSecret({ name }: { name: string }): Promise<k8s.V1Secret> {
    this.calls.push(`read ${name}`);
    const secret = this.secrets.get(name);
    return secret ? Promise.resolve(structuredClone(secret)) : Promise.reject(apiError(404, { code: 404 }));
  }

  createNamespacedSecret({ body }: { body: k8s.V1Secret }): Promise<k8s.V1Secret> {
    return this.store('create', body);
  }

  replaceNamespacedSecret({ body }: { body: k8s.V1Secret }): Promise<k8s.V1Secret> {
    return this.store('replace', body);
  }

  private store(verb: 'create' | 'replace', body: k8s.V1Secret): Promise<k8s.V1Secret> {
    const name = body.metadata?.name ?? '';
    this.calls.push(`${verb} ${name}`);
    if (this.fail[verb] !== undefined) return Promise.reject(this.fail[verb]);
    const stored = structuredClone(body);
    stored.metadata = Object.assign({}, stored.metadata, { resourceVersion: String(this.version++) });
    this.secrets.set(name, stored);
    return Promise.resolve(stored);
  }
}

describe('OutputSecretWriter', () => {
  const token = canaryToken(100);
  const write = (fake: FakeSecrets, conn: OAuthConnection = connection) =>
    new OutputSecretWriter(fake as unknown as k8s.CoreV1Api).write(conn, { ...tokens, accessToken: token });

  it('creates the Secret Opaque, controlled by the connection, with the operator labels', async () => {
    const fake = new FakeSecrets();
    expect(await write(fake)).toBe(true);
    const secret = fake.secrets.get('s');
    expect(secret?.type).toBe('Opaque');
    expect(secret?.metadata?.ownerReferences).toEqual([ref()]);
    expect(secret?.metadata?.labels).toEqual(outputLabels);
    expect(Buffer.from(secret?.data?.access_token ?? '', 'base64').toString()).toBe(token);
    expect(await write(fake)).toBe(false);
    expect(fake.calls).toEqual(['read s', 'create s', 'read s']);
  });

  it('gives a Secret written by an earlier version the owner reference, keeping other owners', async () => {
    const fake = new FakeSecrets();
    const other = ref({ kind: 'ConfigMap', apiVersion: 'v1', name: 'x', uid: 'u2', controller: false });
    fake.secrets.set('s', {
      type: 'Opaque',
      metadata: {
        name: 's',
        labels: outputLabels,
        annotations: { 'oauth.token-operator.dev/connection-name': 'c' },
        ownerReferences: [other],
        resourceVersion: '7',
      },
      data: {},
    });
    expect(await write(fake)).toBe(true);
    expect(fake.calls).toEqual(['read s', 'replace s']);
    expect(fake.secrets.get('s')?.metadata?.ownerReferences).toEqual([ref(), other]);
  });

  it.each([
    { name: 'a plain Secret', metadata: { name: 's' } },
    {
      name: "a Secret with the operator's labels and annotation, controlled by something else",
      metadata: {
        name: 's',
        labels: outputLabels,
        annotations: { 'oauth.token-operator.dev/connection-name': 'c' },
        ownerReferences: [ref({ kind: 'ExternalSecret', apiVersion: 'external-secrets.io/v1' })],
      },
    },
  ])('never touches $name', async ({ metadata }) => {
    const fake = new FakeSecrets();
    fake.secrets.set('s', { type: 'Opaque', metadata, data: { mine: 'eA==' } });
    await expect(write(fake)).rejects.toBeInstanceOf(OutputSecretNotOwnedError);
    expect(fake.calls).toEqual(['read s']);
  });

  it("waits, as transient, for the garbage collector to take a deleted predecessor's Secret, then creates its own", async () => {
    const fake = new FakeSecrets();
    fake.secrets.set('s', {
      type: 'Opaque',
      metadata: { name: 's', ownerReferences: [ref({ uid: 'earlier' })], resourceVersion: '3' },
      data: { access_token: 'b2xk' },
    });
    const refused = write(fake);
    await expect(refused).rejects.toBeInstanceOf(OutputSecretOfPredecessorError);
    await expect(refused).rejects.toMatchObject({ kind: 'transient', reason: 'OutputSecretPendingDeletion' });
    expect(fake.calls).toEqual(['read s']);
    expect(fake.secrets.get('s')?.data).toEqual({ access_token: 'b2xk' });
    // The garbage collector deletes it with its owner; the next write creates this connection's own.
    fake.secrets.delete('s');
    expect(await write(fake)).toBe(true);
    expect(fake.secrets.get('s')?.metadata?.ownerReferences).toEqual([ref()]);
  });

  it('refuses, without deleting it, a Secret of its own whose type is not Opaque', async () => {
    const fake = new FakeSecrets();
    fake.secrets.set('s', {
      type: 'kubernetes.io/tls',
      metadata: { name: 's', ownerReferences: [ref()], resourceVersion: '3' },
      data: { 'tls.crt': 'eA==' },
    });
    const refused = write(fake);
    await expect(refused).rejects.toBeInstanceOf(OutputError);
    await expect(refused).rejects.toMatchObject({ reason: 'OutputSecretWrongType' });
    expect(fake.calls).toEqual(['read s']);
    expect(fake.secrets.get('s')?.type).toBe('kubernetes.io/tls');
  });

  it('sends nothing for a reserved label', async () => {
    const fake = new FakeSecrets();
    const conn = {
      ...connection,
      spec: {
        ...connection.spec,
        output: { secretName: 's', labels: { 'oauth.token-operator.dev/role': 'x' } },
      },
    };
    await expect(write(fake, conn)).rejects.toBeInstanceOf(InvalidOutputMetadataError);
    expect(fake.calls).toEqual([]);
  });

  it.each(['create', 'replace'] as const)(
    'turns a 422 on %s into OutputRejected without the token',
    async (verb) => {
      const fake = new FakeSecrets();
      if (verb === 'replace') await write(fake);
      const encoded = Buffer.from(token).toString('base64');
      fake.fail[verb] = invalid([
        { field: 'data[access_token]', message: `Invalid value: "${encoded}" ${token}` },
      ]);
      const conn = {
        ...connection,
        spec: { ...connection.spec, output: { secretName: 's', keys: { expiresAt: 'when' } } },
      };
      const err: unknown = await write(fake, conn).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OutputRejectedError);
      expect((err as Error).message).toMatch(
        /^the API server refused the output Secret s: spec\.output\.keys, spec\.output\.templates: /,
      );
      expect(`${(err as Error).message} ${String((err as Error).stack)}`).not.toContain(token.slice(0, 16));
      expect((err as Error).message).not.toContain(encoded.slice(0, 16));
    },
  );

  it('leaves other API errors to the retry path', async () => {
    const fake = new FakeSecrets();
    const conflict = apiError(409, { code: 409 });
    fake.fail.create = conflict;
    await expect(write(fake)).rejects.toBe(conflict);
  });
});
