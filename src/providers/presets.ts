// What each provider preset contributes to a connection: endpoints per region, the client
// authentication method it expects, its refresh rules (rate floor, keep-alive, rotation, grace
// window) and its login form profile. Facts come from /work/shared/providers.md; entries marked
// unconfirmed there are listed in `unconfirmed` so that callers and docs can say so.
//
// FOLIO is not OAuth2 (password login and cookie-borne tokens through /authn/*): only its metadata
// lives here; its protocol adapter is separate work and the OAuth token client refuses the preset.
import type { ClientAuthMethod, GrantType, LoginFlow, Preset } from '../api/v1alpha1.ts';
import { TokenError } from '../oauth/errors.ts';

export const PRESETS: readonly Preset[] = ['exact-online', 'concur', 'keycloak', 'folio', 'generic'];

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Field names and selectors of a provider's HTML login (recovery login with flow code/implicit). */
export interface LoginFormProfile {
  loginFormSelector: string;
  usernameField: string;
  passwordField: string;
  otpFormSelector?: string;
  otpField?: string;
}

export interface TotpProfile {
  algorithm: 'SHA1' | 'SHA256' | 'SHA512';
  digits: number;
  periodSec: number;
}

/** FOLIO's non-OAuth protocol, recorded for its adapter. */
export interface FolioProtocol {
  loginPath: string;
  refreshPath: string;
  tenantHeader: string;
  accessTokenCookie: string;
  refreshTokenCookie: string;
  /** Both login and refresh answer 201. */
  successStatus: number;
  /** A second use of a refresh token revokes every refresh token of the user. */
  reuseRevokesAllTokens: boolean;
}

export interface PresetDefaults {
  preset: Preset;
  protocol: 'oauth2' | 'folio';
  /** The region the URLs were built for, where the preset has regions. */
  region?: string;
  tokenURL?: string;
  authorizationURL?: string;
  revocationURL?: string;
  /** Default when spec.clientAuthMethod is unset. */
  clientAuthMethod: ClientAuthMethod;
  /** Grants the provider offers (spec.grant.type values). */
  grantTypes: readonly GrantType[];
  /** Recovery login flows that make sense for the provider. */
  recoveryFlows: readonly LoginFlow[];
  /** Provider floor between two successful refreshes; 0 when none. */
  minIntervalMs: number;
  /** Refresh at least this often so an unused refresh token never expires; undefined when none. */
  keepAliveMs?: number;
  /** Every refresh returns a new refresh token that replaces the old one. */
  alwaysRotates: boolean;
  /** How long the previous refresh token stays usable after a rotation; 0 = a lost response breaks the chain. */
  graceWindowMs: number;
  /** Typical access-token lifetime (informational; expires_in decides). */
  accessTokenLifetimeMs?: number;
  /** How long an unused refresh token lives, where known. */
  refreshTokenLifetimeMs?: number;
  /** Extra parameters for the password grant (overridable through spec.extraParameters). */
  passwordGrantParameters?: Readonly<Record<string, string>>;
  /** Name of the one-time-code parameter of a direct (password) grant. */
  directGrantOtpParameter?: string;
  loginForm?: LoginFormProfile;
  totp?: TotpProfile;
  folio?: FolioProtocol;
  /** Facts that are not confirmed by the provider's documentation. */
  unconfirmed: readonly string[];
}

/** Exact Online hosts by region; `uk` is .co.uk. */
export const EXACT_ONLINE_HOSTS: Readonly<Record<string, string>> = {
  nl: 'start.exactonline.nl',
  be: 'start.exactonline.be',
  uk: 'start.exactonline.co.uk',
  de: 'start.exactonline.de',
  com: 'start.exactonline.com',
  es: 'start.exactonline.es',
  fr: 'start.exactonline.fr',
};
const EXACT_UNCONFIRMED_REGIONS = ['de', 'com', 'es', 'fr'];

/**
 * Concur base URIs by region. China is on a separate domain per Concur's published base-URI table
 * (https://developer.concur.com/platform/base-uris.html); its token path is not confirmed.
 */
export const CONCUR_ORIGINS: Readonly<Record<string, string>> = {
  us: 'https://us.api.concursolutions.com',
  us2: 'https://us2.api.concursolutions.com',
  emea: 'https://emea.api.concursolutions.com',
  eu: 'https://eu.api.concursolutions.com',
  eu2: 'https://eu2.api.concursolutions.com',
  usg: 'https://usg.api.concursolutions.com',
  cn: 'https://cn.api.concurcdc.cn',
};

export const CONCUR_TOKEN_PATH = '/oauth2/v0/token';

/** The token endpoint at a Concur geolocation (which takes precedence over the region once known). */
export function concurTokenURL(geolocation: string): string {
  const url = new URL(geolocation);
  return `${url.origin}${CONCUR_TOKEN_PATH}`;
}

const KEYCLOAK_LOGIN_FORM: LoginFormProfile = {
  loginFormSelector: 'form#kc-form-login',
  usernameField: 'username',
  passwordField: 'password',
  otpFormSelector: 'form#kc-otp-login-form',
  otpField: 'otp',
};

const RFC6238_DEFAULT: TotpProfile = { algorithm: 'SHA1', digits: 6, periodSec: 30 };

/** Regions a preset accepts (first is the default); empty when it has none. */
export function regionsOf(preset: Preset): readonly string[] {
  switch (preset) {
    case 'exact-online':
      return Object.keys(EXACT_ONLINE_HOSTS);
    case 'concur':
      return Object.keys(CONCUR_ORIGINS);
    default:
      return [];
  }
}

function unknownRegion(preset: Preset, region: string): TokenError {
  const known = regionsOf(preset);
  return new TokenError({
    code: 'configuration',
    reason: 'UnknownRegion',
    message:
      known.length > 0
        ? `preset ${preset} has no region "${region.slice(0, 32)}"; known regions: ${known.join(', ')}`
        : `preset ${preset} has no regions; remove provider.region`,
  });
}

/**
 * The defaults of a preset for a region (the preset's default region when unset).
 * Throws TokenError 'configuration' / UnknownRegion for a region the preset does not have.
 */
export function presetDefaults(preset: Preset = 'generic', region?: string): PresetDefaults {
  const wanted = region?.trim().toLowerCase() || undefined;
  switch (preset) {
    case 'exact-online': {
      const r = wanted ?? 'nl';
      const host = EXACT_ONLINE_HOSTS[r];
      if (host === undefined) throw unknownRegion(preset, r);
      return {
        preset,
        protocol: 'oauth2',
        region: r,
        tokenURL: `https://${host}/api/oauth2/token`,
        authorizationURL: `https://${host}/api/oauth2/auth`,
        clientAuthMethod: 'client_secret_post',
        grantTypes: ['refreshToken'],
        recoveryFlows: ['code', 'implicit'],
        // No new access token within 570 s of the previous successful one.
        minIntervalMs: 570 * SECOND,
        // An unused refresh token expires after ~30 days; the 10-minute access tokens keep the chain
        // busy anyway, this only bounds an idle connection.
        keepAliveMs: 14 * DAY,
        alwaysRotates: true,
        graceWindowMs: 0,
        accessTokenLifetimeMs: 600 * SECOND,
        refreshTokenLifetimeMs: 30 * DAY,
        // Field names of Exact's login pages are not public: recovery.login.form must name them.
        totp: RFC6238_DEFAULT,
        unconfirmed: [
          ...(EXACT_UNCONFIRMED_REGIONS.includes(r) ? [`host start.exactonline.${r} for region ${r}`] : []),
          'whether a too-early refresh also ends the chain',
          'login form field names (configure recovery.login.form)',
        ],
      };
    }
    case 'concur': {
      const r = wanted ?? 'us';
      const origin = CONCUR_ORIGINS[r];
      if (origin === undefined) throw unknownRegion(preset, r);
      return {
        preset,
        protocol: 'oauth2',
        region: r,
        tokenURL: `${origin}${CONCUR_TOKEN_PATH}`,
        clientAuthMethod: 'client_secret_post',
        grantTypes: ['refreshToken', 'password'],
        // Concur's password grant (credtype=password) is the direct flow, without an otp.
        recoveryFlows: ['direct'],
        minIntervalMs: 0,
        // Refresh tokens die after 6 months unused; a refresh before that keeps the chain alive.
        keepAliveMs: 150 * DAY,
        alwaysRotates: false,
        graceWindowMs: 0,
        accessTokenLifetimeMs: HOUR,
        refreshTokenLifetimeMs: 180 * DAY,
        passwordGrantParameters: { credtype: 'password' },
        unconfirmed: [
          ...(r === 'cn' ? ['token path on the China host cn.api.concurcdc.cn'] : []),
          'which error code is answered with which HTTP status',
          'authorization endpoint (not preset)',
        ],
      };
    }
    case 'keycloak':
      if (wanted !== undefined) throw unknownRegion(preset, wanted);
      return {
        preset,
        protocol: 'oauth2',
        // Endpoints come from provider.issuerURL (the realm URL) by discovery.
        clientAuthMethod: 'client_secret_basic',
        grantTypes: ['refreshToken', 'clientCredentials', 'password'],
        recoveryFlows: ['code', 'direct', 'implicit'],
        minIntervalMs: 0,
        // Session idle limits are realm settings; set refresh.keepAlive to match the realm.
        alwaysRotates: true,
        graceWindowMs: 0,
        accessTokenLifetimeMs: 300 * SECOND,
        refreshTokenLifetimeMs: 1800 * SECOND,
        directGrantOtpParameter: 'otp',
        loginForm: KEYCLOAK_LOGIN_FORM,
        totp: RFC6238_DEFAULT,
        unconfirmed: [],
      };
    case 'folio':
      if (wanted !== undefined) throw unknownRegion(preset, wanted);
      return {
        preset,
        protocol: 'folio',
        clientAuthMethod: 'none',
        grantTypes: ['password', 'refreshToken'],
        recoveryFlows: [],
        minIntervalMs: 0,
        // The refresh cookie lives 7 days.
        keepAliveMs: 5 * DAY,
        alwaysRotates: true,
        graceWindowMs: 0,
        accessTokenLifetimeMs: 600 * SECOND,
        refreshTokenLifetimeMs: 7 * DAY,
        folio: {
          loginPath: '/authn/login-with-expiry',
          refreshPath: '/authn/refresh',
          tenantHeader: 'X-Okapi-Tenant',
          accessTokenCookie: 'folioAccessToken',
          refreshTokenCookie: 'folioRefreshToken',
          successStatus: 201,
          reuseRevokesAllTokens: true,
        },
        unconfirmed: [],
      };
    case 'generic':
      if (wanted !== undefined) throw unknownRegion(preset, wanted);
      return {
        preset,
        protocol: 'oauth2',
        clientAuthMethod: 'client_secret_basic',
        grantTypes: ['refreshToken', 'clientCredentials', 'password'],
        recoveryFlows: ['code', 'implicit', 'direct'],
        minIntervalMs: 0,
        alwaysRotates: false,
        graceWindowMs: 0,
        totp: RFC6238_DEFAULT,
        unconfirmed: [],
      };
  }
}
