import { describe, expect, it } from 'vitest';
import { TokenError } from '../../src/oauth/errors.ts';
import { concurTokenURL, PRESETS, presetDefaults, regionsOf } from '../../src/providers/presets.ts';

describe('presets', () => {
  it('cover every preset of the CRD', () => {
    expect([...PRESETS].sort()).toEqual(['concur', 'exact-online', 'folio', 'generic', 'keycloak']);
    for (const preset of PRESETS) {
      const defaults = presetDefaults(preset);
      expect(defaults.preset).toBe(preset);
      expect(defaults.graceWindowMs).toBe(0);
    }
  });

  it('default to generic', () => {
    expect(presetDefaults().preset).toBe('generic');
  });

  describe('exact-online', () => {
    it.each([
      ['nl', 'start.exactonline.nl'],
      ['be', 'start.exactonline.be'],
      ['uk', 'start.exactonline.co.uk'],
      ['de', 'start.exactonline.de'],
      ['com', 'start.exactonline.com'],
      ['es', 'start.exactonline.es'],
      ['fr', 'start.exactonline.fr'],
    ])('region %s → %s', (region, host) => {
      const defaults = presetDefaults('exact-online', region);
      expect(defaults.tokenURL).toBe(`https://${host}/api/oauth2/token`);
      expect(defaults.authorizationURL).toBe(`https://${host}/api/oauth2/auth`);
    });

    it('defaults to nl, client_secret_post, a 570 s floor and always-rotating tokens', () => {
      const defaults = presetDefaults('exact-online');
      expect(defaults).toMatchObject({
        region: 'nl',
        clientAuthMethod: 'client_secret_post',
        minIntervalMs: 570_000,
        alwaysRotates: true,
        accessTokenLifetimeMs: 600_000,
        grantTypes: ['refreshToken'],
        totp: { algorithm: 'SHA1', digits: 6, periodSec: 30 },
      });
      expect(defaults.keepAliveMs).toBeLessThan(30 * 24 * 3600 * 1000);
      // Login field names are not public: no hard-wired form profile.
      expect(defaults.loginForm).toBeUndefined();
    });

    it('marks the unconfirmed hosts', () => {
      expect(presetDefaults('exact-online', 'nl').unconfirmed.join()).not.toContain('host');
      expect(presetDefaults('exact-online', 'fr').unconfirmed.join()).toContain('start.exactonline.fr');
    });

    it('accepts region names in any case', () => {
      expect(presetDefaults('exact-online', ' UK ').region).toBe('uk');
    });
  });

  describe('concur', () => {
    it.each(['us', 'us2', 'emea', 'eu', 'eu2', 'usg'])('region %s', (region) => {
      expect(presetDefaults('concur', region).tokenURL).toBe(
        `https://${region}.api.concursolutions.com/oauth2/v0/token`,
      );
    });

    it('uses the China domain and marks it unconfirmed', () => {
      const defaults = presetDefaults('concur', 'cn');
      expect(defaults.tokenURL).toBe('https://cn.api.concurcdc.cn/oauth2/v0/token');
      expect(defaults.unconfirmed.join()).toContain('China');
    });

    it('keeps the chain alive well inside six months and posts the client secret', () => {
      const defaults = presetDefaults('concur');
      expect(defaults.region).toBe('us');
      expect(defaults.clientAuthMethod).toBe('client_secret_post');
      expect(defaults.keepAliveMs).toBe(150 * 24 * 3600 * 1000);
      expect(defaults.alwaysRotates).toBe(false);
      expect(defaults.minIntervalMs).toBe(0);
      expect(defaults.passwordGrantParameters).toEqual({ credtype: 'password' });
    });

    it('builds the token URL at a geolocation', () => {
      expect(concurTokenURL('https://emea.api.concursolutions.com/')).toBe(
        'https://emea.api.concursolutions.com/oauth2/v0/token',
      );
    });
  });

  it('keycloak has its login form profile, no regions and no keep-alive by default', () => {
    const defaults = presetDefaults('keycloak');
    expect(defaults.loginForm).toEqual({
      loginFormSelector: 'form#kc-form-login',
      usernameField: 'username',
      passwordField: 'password',
      otpFormSelector: 'form#kc-otp-login-form',
      otpField: 'otp',
    });
    expect(defaults.keepAliveMs).toBeUndefined();
    expect(defaults.tokenURL).toBeUndefined();
    expect(defaults.directGrantOtpParameter).toBe('otp');
    expect(defaults.recoveryFlows).toContain('direct');
  });

  it('folio is recorded as a non-OAuth protocol', () => {
    const defaults = presetDefaults('folio');
    expect(defaults.protocol).toBe('folio');
    expect(defaults.folio).toMatchObject({
      loginPath: '/authn/login-with-expiry',
      refreshPath: '/authn/refresh',
      refreshTokenCookie: 'folioRefreshToken',
      reuseRevokesAllTokens: true,
    });
    expect(defaults.tokenURL).toBeUndefined();
  });

  it('generic has no endpoints and no form profile', () => {
    const defaults = presetDefaults('generic');
    expect(defaults).toMatchObject({
      protocol: 'oauth2',
      clientAuthMethod: 'client_secret_basic',
      alwaysRotates: false,
    });
    expect(defaults.tokenURL).toBeUndefined();
    expect(defaults.loginForm).toBeUndefined();
  });

  it.each([
    ['exact-online', 'xx'],
    ['concur', 'mars'],
    ['keycloak', 'eu'],
    ['generic', 'us'],
  ] as const)('refuses region %s/%s as a configuration error', (preset, region) => {
    let error: unknown;
    try {
      presetDefaults(preset, region);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TokenError);
    expect(error).toMatchObject({ code: 'configuration', reason: 'UnknownRegion' });
  });

  it('lists regions with the default first', () => {
    expect(regionsOf('exact-online')[0]).toBe('nl');
    expect(regionsOf('concur')[0]).toBe('us');
    expect(regionsOf('keycloak')).toEqual([]);
  });
});
