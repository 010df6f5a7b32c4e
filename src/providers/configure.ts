// Turns a connection's spec and its preset into what the OAuth layer takes: a ClientConfig, the
// EndpointSettings, the login form profile and the TOTP defaults. Spec values win over the preset's.
import type { OAuthConnectionSpec, Provider } from '../api/v1alpha1.ts';
import {
  normaliseGeolocation,
  TokenError,
  type ClientConfig,
  type EndpointSettings,
  type FormProfile,
  type ResolvedEndpoints,
} from '../oauth/index.ts';
import type { PresetDefaults } from './presets.ts';

function configurationError(reason: string, message: string): TokenError {
  return new TokenError({ code: 'configuration', reason, message });
}

/** The client as the OAuth layer sees it; the secret is read from spec.clientSecretRef by the caller. */
export function clientConfigFor(
  spec: OAuthConnectionSpec,
  preset: PresetDefaults,
  clientSecret: string | undefined,
): ClientConfig {
  const client: ClientConfig = {
    clientID: spec.clientID,
    authMethod: spec.clientAuthMethod ?? preset.clientAuthMethod,
  };
  if (preset.protocol === 'folio') client.protocol = { kind: 'folio', tenant: spec.provider.tenant ?? '' };
  if (clientSecret !== undefined) client.clientSecret = clientSecret;
  if (spec.scopes !== undefined) client.scopes = spec.scopes;
  if (spec.extraParameters !== undefined) client.extraParameters = spec.extraParameters;
  if (preset.passwordGrantParameters !== undefined)
    client.passwordGrantParameters = preset.passwordGrantParameters;
  if (preset.otpParameter !== undefined) client.otpParameter = preset.otpParameter;
  if (preset.errorDialect !== undefined) client.errorDialect = preset.errorDialect;
  return client;
}

/**
 * Where the connection's endpoints come from. A geolocation the provider returned (Concur) takes
 * precedence over spec.provider.tokenURL and the region. Throws TokenError 'configuration'
 * InvalidGeolocation for a stored geolocation that is not a URL.
 */
export function endpointSettingsFor(
  provider: Provider,
  preset: PresetDefaults,
  geolocation?: string,
): EndpointSettings {
  let tokenURL = provider.tokenURL;
  if (preset.geolocationTokenPath !== undefined && geolocation !== undefined) {
    const origin = normaliseGeolocation(geolocation);
    if (origin === undefined) {
      throw configurationError('InvalidGeolocation', 'the stored geolocation of the provider is not a URL');
    }
    tokenURL = `${origin}${preset.geolocationTokenPath}`;
  }
  const defaults: NonNullable<EndpointSettings['defaults']> = {};
  if (preset.tokenURL !== undefined) defaults.tokenURL = preset.tokenURL;
  if (preset.baseURLTokenPath !== undefined && provider.baseURL !== undefined) {
    // A gateway with a path (an Okapi URL such as https://folio.example.org/okapi) keeps it.
    let base = provider.baseURL;
    while (base.endsWith('/')) base = base.slice(0, -1);
    defaults.tokenURL = `${base}${preset.baseURLTokenPath}`;
  }
  if (preset.authorizationURL !== undefined) defaults.authorizationURL = preset.authorizationURL;
  if (preset.revocationURL !== undefined) defaults.revocationURL = preset.revocationURL;
  return {
    ...(provider.issuerURL !== undefined ? { issuerURL: provider.issuerURL } : {}),
    ...(tokenURL !== undefined ? { tokenURL } : {}),
    ...(provider.authorizationURL !== undefined ? { authorizationURL: provider.authorizationURL } : {}),
    ...(provider.revocationURL !== undefined ? { revocationURL: provider.revocationURL } : {}),
    defaults,
  };
}

/** spec.probe with the preset's defaults: where to probe (once the endpoints are known) and how often. */
export interface ProbeSettings {
  intervalMs: number;
  /** The probe URL; throws TokenError 'configuration' ProbeURLUnknown when neither spec nor preset names one. */
  urlFor(endpoints: ResolvedEndpoints): string;
}

const DEFAULT_PROBE_INTERVAL_MS = 60_000;

/** Why a preset whose default is userinfo cannot name a probe URL, for the message. */
function probeDefaultMissing(defaults: PresetDefaults['probe'], userToken: boolean): string {
  if (defaults?.userinfo !== true) return '';
  return userToken
    ? ' (discovery names no userinfo_endpoint)'
    : ' (its default, userinfo, needs a user token, not client credentials)';
}

/** Undefined when spec.probe is absent: probing costs API calls, so it is opted into. */
export function probeSettingsFor(
  spec: OAuthConnectionSpec,
  preset: PresetDefaults,
  intervalMs: number | undefined,
): ProbeSettings | undefined {
  if (spec.probe === undefined) return undefined;
  const explicit = spec.probe.url?.trim() || undefined;
  const defaults = preset.probe;
  // Userinfo describes a user: a client's own token (client credentials) has none to describe.
  const userToken = spec.grant?.type !== 'clientCredentials';
  return {
    intervalMs: intervalMs ?? defaults?.intervalMs ?? DEFAULT_PROBE_INTERVAL_MS,
    urlFor(endpoints) {
      if (explicit !== undefined) return explicit;
      if (defaults?.path !== undefined) return new URL(defaults.path, endpoints.tokenEndpoint).href;
      if (defaults?.userinfo === true && userToken && endpoints.userinfoEndpoint !== undefined)
        return endpoints.userinfoEndpoint;
      throw configurationError(
        'ProbeURLUnknown',
        `spec.probe.url: preset ${preset.preset} has no well-known endpoint to probe${probeDefaultMissing(defaults, userToken)}; set spec.probe.url`,
      );
    },
  };
}

/**
 * The login form profile: spec.recovery.login.form over the preset's profile, field by field (empty
 * strings count as unset). Throws TokenError 'configuration' MissingLoginForm when the username or
 * password field name is known from neither.
 */
export function formProfileFor(
  preset: PresetDefaults,
  override: Partial<FormProfile> | undefined,
): FormProfile {
  const pick = (key: keyof FormProfile): string | undefined => {
    const value = override?.[key]?.trim() || preset.loginForm?.[key]?.trim();
    return value === '' ? undefined : value;
  };
  const usernameField = pick('usernameField');
  const passwordField = pick('passwordField');
  if (usernameField === undefined || passwordField === undefined) {
    throw configurationError(
      'MissingLoginForm',
      'the provider preset has no login form profile: set spec.recovery.login.form.usernameField and passwordField (and otpField for a TOTP page)',
    );
  }
  const profile: FormProfile = { usernameField, passwordField };
  const loginFormSelector = pick('loginFormSelector');
  if (loginFormSelector !== undefined) profile.loginFormSelector = loginFormSelector;
  const otpFormSelector = pick('otpFormSelector');
  if (otpFormSelector !== undefined) profile.otpFormSelector = otpFormSelector;
  const otpField = pick('otpField');
  if (otpField !== undefined) profile.otpField = otpField;
  return profile;
}

/**
 * What the spec asks of the preset that the provider does not offer: a grant type or a recovery
 * flow. Returns the field and message, or undefined when the spec fits the preset.
 */
export function unsupportedBy(
  spec: OAuthConnectionSpec,
  preset: PresetDefaults,
): { reason: string; message: string } | undefined {
  const grant = spec.grant?.type ?? 'refreshToken';
  if (!preset.grantTypes.includes(grant)) {
    return {
      reason: 'GrantNotSupported',
      message: `spec.grant.type: preset ${preset.preset} does not offer the ${grant} grant (it offers ${preset.grantTypes.join(', ')})`,
    };
  }
  const flow = spec.recovery?.login?.flow;
  if (flow !== undefined && !preset.recoveryFlows.includes(flow)) {
    return {
      reason: 'LoginFlowNotSupported',
      message: `spec.recovery.login.flow: preset ${preset.preset} does not offer the ${flow} flow${preset.recoveryFlows.length > 0 ? ` (it offers ${preset.recoveryFlows.join(', ')})` : ''}`,
    };
  }
  return undefined;
}
