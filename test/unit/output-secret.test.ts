import { describe, expect, it } from 'vitest';
import type { OAuthConnection } from '../../src/api/v1alpha1.ts';
import {
  InvalidOutputKeyError,
  MAX_ACCESS_TOKEN_BYTES,
  MAX_RENDERED_BYTES,
  OutputError,
  OutputSecretNotOwnedError,
  OutputTooLargeError,
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

  it('builds the data on a null prototype: no key name is special while rendering', () => {
    const data = renderOutputData(withOutput({ secretName: 's' }), tokens);
    expect(Object.getPrototypeOf(data)).toBeNull();
    expect(Object.keys(data)).toEqual(['access_token', 'token_type', 'expires_at']);
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
      name: 'a token over 64 KiB',
      output: { secretName: 's' },
      tokenBytes: MAX_ACCESS_TOKEN_BYTES + 1,
      reason: 'OutputTooLarge',
      message:
        /^spec\.output\.keys\.accessToken: the provider's access token is 65537 bytes, over the 65536 bytes/,
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
      name: 'the CRD maxima: 8 templates of 16 KiB of {{accessToken}} with a 64 KiB token (570 MB if built)',
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

  it('renders a 64 KiB token into a header and templates up to the cap', () => {
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
