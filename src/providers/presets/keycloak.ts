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
//
// The probe's default is the realm's userinfo endpoint: it looks the token's session up, so it answers
// 401 invalid_token once that session has ended (an administrator logged the user out or deleted the
// session) while the access token's signature and expiry are still good; a token without the openid
// scope gets 403 insufficient_scope instead (UserInfoEndpoint and UserSessionUtil in
// https://github.com/keycloak/keycloak).
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
  // Every minute: a userinfo call costs Keycloak one session look-up and counts against no API budget
  // (1,440 a day per connection), and a minute finds an ended session well before the next refresh of
  // the realm's default 5-minute access tokens (about 200 s apart); a shorter interval mostly adds load.
  probe: { userinfo: true, intervalMs: 60_000 },
  loginForm: {
    loginFormSelector: 'form#kc-form-login',
    usernameField: 'username',
    passwordField: 'password',
    otpFormSelector: 'form#kc-otp-login-form',
    otpField: 'otp',
  },
  totp: { algorithm: 'SHA1', digits: 6, periodSec: 30 },
};
