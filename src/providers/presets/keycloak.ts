// Keycloak (https://www.keycloak.org/docs/latest/server_admin/): endpoints from the realm's OIDC
// discovery (spec.provider.issuerURL), rotating refresh tokens when the realm revokes them, a direct
// grant that takes the one-time code as `otp`, and the browser login's form ids.
//
// Session idle limits are realm settings the preset cannot know. A refresh token dies with its
// session when it is not used for SSO Session Idle (default 30 min; an offline token: Offline Session
// Idle, default 30 days), also while the access token it came with is still valid: a realm whose
// access tokens live longer than its idle limit kills a chain that is refreshed only before access
// tokens expire. The default keep-alive refreshes at least every 10 minutes, inside the default idle
// limit with room for a failed attempt; realms with a shorter idle limit need spec.refresh.keepAlive
// below it (docs/providers/keycloak.md).
import type { PresetTable } from '../preset-table.ts';

export const keycloak: PresetTable = {
  protocol: 'oauth2',
  clientAuthMethod: 'client_secret_basic',
  grantTypes: ['refreshToken', 'clientCredentials', 'password'],
  recoveryFlows: ['code', 'direct', 'implicit'],
  minIntervalMs: 0,
  keepAliveMs: 10 * 60_000,
  graceWindowMs: 0,
  accessTokenLifetimeMs: 300_000,
  otpParameter: 'otp',
  loginForm: {
    loginFormSelector: 'form#kc-form-login',
    usernameField: 'username',
    passwordField: 'password',
    otpFormSelector: 'form#kc-otp-login-form',
    otpField: 'otp',
  },
  totp: { algorithm: 'SHA1', digits: 6, periodSec: 30 },
};
