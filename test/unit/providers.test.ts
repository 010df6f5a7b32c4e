// The provider presets are data. These tests read every table and check what must hold of any
// preset (its values agree with the CRD, its URLs pass the endpoint policy, its timings make sense
// together), then check the function that turns a connection's spec into the OAuth layer's
// configuration. They do not restate the tables' values: docs/providers.md says what they are and why.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { OAuthConnectionSpec, Preset } from '../../src/api/v1alpha1.ts';
import { checkURL } from '../../src/oauth/endpoint-policy.ts';
import { TokenError } from '../../src/oauth/errors.ts';
import { totpSecretFromKey } from '../../src/oauth/totp.ts';
import {
  clientConfigFor,
  endpointSettingsFor,
  formProfileFor,
  probeSettingsFor,
  unsupportedBy,
} from '../../src/providers/configure.ts';
import { PRESET_TABLES, presetDefaults, regionsOf } from '../../src/providers/presets.ts';

interface SchemaNode {
  enum?: string[];
  properties?: Record<string, SchemaNode>;
}

const crd = parse(
  readFileSync(
    resolve(import.meta.dirname, '../../crds/oauth.token-operator.dev_oauthconnections.yaml'),
    'utf8',
  ),
) as { spec: { versions: { schema: { openAPIV3Schema: SchemaNode } }[] } };
const specSchema = crd.spec.versions[0]?.schema.openAPIV3Schema.properties?.spec;

/** The enum the CRD declares at a path below spec. */
function crdEnum(...path: string[]): string[] {
  let node = specSchema;
  for (const key of path) node = node?.properties?.[key];
  if (node?.enum === undefined) throw new Error(`the CRD has no enum at spec.${path.join('.')}`);
  return node.enum;
}

const presets = Object.entries(PRESET_TABLES) as [Preset, (typeof PRESET_TABLES)[Preset]][];
const strictPolicy = { allowInsecureHttp: false };

function thrown(fn: () => unknown): TokenError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError);
    return err as TokenError;
  }
  throw new Error('expected a TokenError');
}

describe('every preset table', () => {
  it('exists for exactly the presets the CRD offers', () => {
    expect(Object.keys(PRESET_TABLES).sort()).toEqual(crdEnum('provider', 'preset').sort());
  });

  it.each(presets)(
    '%s: grants, flows and client authentication are values the CRD accepts',
    (_name, table) => {
      expect(crdEnum('grant', 'type')).toEqual(expect.arrayContaining([...table.grantTypes]));
      expect(crdEnum('recovery', 'login', 'flow')).toEqual(expect.arrayContaining([...table.recoveryFlows]));
      expect(crdEnum('clientAuthMethod')).toContain(table.clientAuthMethod);
      expect(table.grantTypes.length).toBeGreaterThan(0);
    },
  );

  it.each(presets)('%s: every regional URL passes the strict endpoint policy', (name, table) => {
    for (const [region, endpoints] of Object.entries(table.regions ?? {})) {
      for (const url of [endpoints.tokenURL, endpoints.authorizationURL, endpoints.revocationURL]) {
        if (url === undefined) continue;
        expect(() => checkURL(url, strictPolicy), `${name}/${region}: ${url}`).not.toThrow();
      }
      expect(presetDefaults(name, region.toUpperCase())).toMatchObject({ region, ...endpoints });
    }
  });

  it.each(presets)('%s: the first region is the default, and an unknown region is refused', (name) => {
    const regions = regionsOf(name);
    if (regions.length > 0) expect(presetDefaults(name).region).toBe(regions[0]);
    const error = thrown(() => presetDefaults(name, 'atlantis'));
    expect(error).toMatchObject({ code: 'configuration', reason: 'UnknownRegion' });
    for (const region of regions) expect(error.message).toContain(region);
  });

  it.each(presets)('%s: timings fit together', (_name, table) => {
    // The floor must leave time to refresh before the token expires; a keep-alive below a minute or
    // a grace window as long as the token would make the scheduler spin or retry blindly.
    if (table.accessTokenLifetimeMs !== undefined) {
      expect(table.minIntervalMs).toBeLessThan(table.accessTokenLifetimeMs);
      expect(table.graceWindowMs).toBeLessThan(table.accessTokenLifetimeMs);
    }
    expect(table.minIntervalMs).toBeGreaterThanOrEqual(0);
    if (table.keepAliveMs !== undefined) expect(table.keepAliveMs).toBeGreaterThanOrEqual(60_000);
  });

  it.each(presets)('%s: a login form profile and TOTP parameters are usable as they stand', (name, table) => {
    if (table.loginForm !== undefined) {
      expect(formProfileFor(presetDefaults(name), undefined)).toEqual(table.loginForm);
      if (table.loginForm.otpFormSelector !== undefined) expect(table.loginForm.otpField).toBeTruthy();
    }
    if (table.totp !== undefined)
      expect(() => totpSecretFromKey(new Uint8Array(20), table.totp)).not.toThrow();
    if (table.loginForm === undefined && table.recoveryFlows.some((f) => f !== 'direct')) {
      // The code and implicit flows then need the spec to name the fields: refused clearly without.
      expect(thrown(() => formProfileFor(presetDefaults(name), undefined)).reason).toBe('MissingLoginForm');
    }
  });

  it.each(presets)(
    '%s: follows a returned geolocation exactly when its error dialect relocates',
    (_name, table) => {
      expect(table.geolocationTokenPath !== undefined).toBe(table.errorDialect === 'concur');
    },
  );
});

const baseSpec: OAuthConnectionSpec = {
  provider: { preset: 'generic', tokenURL: 'https://idp.example.com/token' },
  clientID: 'client-1',
  output: { secretName: 'out' },
};

function spec(overrides: Partial<OAuthConnectionSpec>): OAuthConnectionSpec {
  return { ...baseSpec, ...overrides };
}

describe('clientConfigFor', () => {
  it.each(presets)(
    '%s: carries the preset quirks and lets the spec choose the client authentication',
    (name, table) => {
      const preset = presetDefaults(name);
      const client = clientConfigFor(
        spec({ scopes: ['a', 'b'], extraParameters: { x: '1' } }),
        preset,
        's3cret',
      );
      expect(client).toMatchObject({
        clientID: 'client-1',
        clientSecret: 's3cret',
        authMethod: table.clientAuthMethod,
        scopes: ['a', 'b'],
        extraParameters: { x: '1' },
      });
      expect(client.passwordGrantParameters).toEqual(table.passwordGrantParameters);
      expect(client.otpParameter).toEqual(table.otpParameter);
      expect(client.errorDialect).toEqual(table.errorDialect);
      expect(clientConfigFor(spec({ clientAuthMethod: 'none' }), preset, undefined).authMethod).toBe('none');
    },
  );
});

describe('endpointSettingsFor', () => {
  const concur = presetDefaults('concur', 'eu');
  it.each([
    {
      name: 'a preset region supplies defaults; explicit spec URLs take precedence',
      provider: { preset: 'concur' as const, tokenURL: 'https://proxy.example.com/token' },
      preset: concur,
      geolocation: undefined,
      expected: { tokenURL: 'https://proxy.example.com/token', defaults: { tokenURL: concur.tokenURL } },
    },
    {
      name: 'a geolocation the provider returned wins over the spec and the region',
      provider: { preset: 'concur' as const, tokenURL: 'https://proxy.example.com/token' },
      preset: concur,
      geolocation: 'https://us2.api.concursolutions.com/',
      expected: { tokenURL: 'https://us2.api.concursolutions.com/oauth2/v0/token' },
    },
    {
      name: 'a geolocation means nothing to a provider that does not relocate',
      provider: { preset: 'generic' as const, issuerURL: 'https://idp.example.com/realm' },
      preset: presetDefaults('generic'),
      geolocation: 'https://elsewhere.example.com',
      expected: { issuerURL: 'https://idp.example.com/realm', defaults: {} },
    },
  ])('$name', ({ provider, preset, geolocation, expected }) => {
    const settings = endpointSettingsFor(provider, preset, geolocation);
    expect(settings).toMatchObject(expected);
    if (!('tokenURL' in expected)) expect(settings.tokenURL).toBeUndefined();
  });

  it('refuses a stored geolocation that is not a URL', () => {
    expect(thrown(() => endpointSettingsFor({ preset: 'concur' }, concur, 'not a url')).reason).toBe(
      'InvalidGeolocation',
    );
  });
});

describe('formProfileFor', () => {
  it('takes the spec field by field over the preset, ignoring empty strings', () => {
    const profile = formProfileFor(presetDefaults('keycloak'), { usernameField: 'login', otpField: ' ' });
    expect(profile.usernameField).toBe('login');
    expect(profile.otpField).toBe(PRESET_TABLES.keycloak.loginForm?.otpField);
  });
});

describe('unsupportedBy', () => {
  it.each(presets)('%s: refuses exactly the grants and flows the table does not list', (name, table) => {
    const preset = presetDefaults(name);
    for (const type of crdEnum('grant', 'type')) {
      const verdict = unsupportedBy(spec({ grant: { type } } as Partial<OAuthConnectionSpec>), preset);
      expect(verdict?.reason, `${name} grant ${type}`).toBe(
        (table.grantTypes as readonly string[]).includes(type) ? undefined : 'GrantNotSupported',
      );
    }
    const grant = { type: table.grantTypes[0] };
    for (const flow of crdEnum('recovery', 'login', 'flow')) {
      const login = { flow, usernameRef: { name: 'u' }, passwordRef: { name: 'p' } };
      const verdict = unsupportedBy(
        spec({ grant, recovery: { login } } as Partial<OAuthConnectionSpec>),
        preset,
      );
      expect(verdict?.reason, `${name} flow ${flow}`).toBe(
        (table.recoveryFlows as readonly string[]).includes(flow) ? undefined : 'LoginFlowNotSupported',
      );
      if (verdict !== undefined) expect(verdict.message).toMatch(/^spec\.recovery\.login\.flow: /);
    }
  });
});

describe('probeSettingsFor', () => {
  const issuer = 'https://sso.example.com/realms/r';
  const discovered = {
    tokenEndpoint: `${issuer}/protocol/openid-connect/token`,
    userinfoEndpoint: `${issuer}/protocol/openid-connect/userinfo`,
  };
  const keycloakSpec = (probe: OAuthConnectionSpec['probe']): OAuthConnectionSpec =>
    spec({ provider: { preset: 'keycloak', issuerURL: issuer }, ...(probe !== undefined ? { probe } : {}) });

  it('keycloak: spec.probe {} probes the userinfo endpoint from discovery at the preset interval', () => {
    const settings = probeSettingsFor(keycloakSpec({}), presetDefaults('keycloak'), undefined);
    expect(settings?.urlFor(discovered)).toBe(discovered.userinfoEndpoint);
    expect(settings?.intervalMs).toBe(PRESET_TABLES.keycloak.probe?.intervalMs);
  });

  it('keycloak: a discovery document without userinfo_endpoint is ProbeURLUnknown, naming discovery', () => {
    const settings = probeSettingsFor(keycloakSpec({}), presetDefaults('keycloak'), undefined);
    const error = thrown(() => settings?.urlFor({ tokenEndpoint: discovered.tokenEndpoint }));
    expect(error).toMatchObject({ code: 'configuration', reason: 'ProbeURLUnknown' });
    expect(error.message).toMatch(/^spec\.probe\.url: .*userinfo_endpoint/);
  });

  it('keycloak: a client-credentials connection has no userinfo to probe: ProbeURLUnknown, saying why', () => {
    const clientOnly = { ...keycloakSpec({}), grant: { type: 'clientCredentials' as const } };
    const settings = probeSettingsFor(clientOnly, presetDefaults('keycloak'), undefined);
    const error = thrown(() => settings?.urlFor(discovered));
    expect(error).toMatchObject({ code: 'configuration', reason: 'ProbeURLUnknown' });
    expect(error.message).toMatch(/^spec\.probe\.url: .*needs a user token, not client credentials/);
    // An explicit URL is probed whatever the grant.
    const url = 'https://api.example.com/health';
    expect(
      probeSettingsFor({ ...clientOnly, probe: { url } }, presetDefaults('keycloak'), undefined)?.urlFor(
        discovered,
      ),
    ).toBe(url);
  });

  it('spec.probe.url and spec.probe.interval win over the defaults; no spec.probe, no probe', () => {
    const url = 'https://api.example.com/me';
    const settings = probeSettingsFor(keycloakSpec({ url }), presetDefaults('keycloak'), 5_000);
    expect(settings?.urlFor(discovered)).toBe(url);
    expect(settings?.intervalMs).toBe(5_000);
    expect(probeSettingsFor(keycloakSpec(undefined), presetDefaults('keycloak'), undefined)).toBeUndefined();
  });

  it.each(presets.filter(([, table]) => table.probe !== undefined))(
    '%s: the default probe names an endpoint and comes before the next refresh would',
    (_name, table) => {
      const probe = table.probe;
      expect(probe?.path !== undefined || probe?.userinfo === true).toBe(true);
      // Refreshes come at the floor or a third of the token's lifetime before expiry, whichever is
      // later: a probe no more often than that could never notice a dead chain before the refresh.
      const refreshEvery = Math.max(table.minIntervalMs, ((table.accessTokenLifetimeMs ?? 0) * 2) / 3);
      expect(probe?.intervalMs).toBeLessThan(refreshEvery);
    },
  );
});
