import { describe, expect, it } from 'vitest';
import type { OAuthConnection } from '../../src/api/v1alpha1.ts';
import { renderOutputData } from '../../src/controller/output-secret.ts';

function withOutput(output: OAuthConnection['spec']['output']): OAuthConnection {
  return {
    apiVersion: 'oauth.token-operator.dev/v1alpha1',
    kind: 'OAuthConnection',
    metadata: { name: 'c', namespace: 'n' },
    spec: { provider: { preset: 'generic', tokenURL: 'https://x/token' }, clientID: 'id', output },
  };
}

const tokens = { accessToken: 'AT', tokenType: 'bearer', expiresAtMs: Date.parse('2026-01-01T00:10:00Z') };

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
  ])('$name', ({ output, expected }) => {
    expect(renderOutputData(withOutput(output), tokens)).toEqual(expected);
  });
});
