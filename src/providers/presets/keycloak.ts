// Keycloak (https://www.keycloak.org/docs/latest/server_admin/): endpoints from the realm's OIDC
// discovery (spec.provider.issuerURL), rotating refresh tokens when the realm revokes them, a direct
// grant that takes the one-time code as `otp`, and the browser login's form ids. Session idle limits
// are realm settings: set spec.refresh.keepAlive below the realm's SSO Session Idle.
import type { PresetTable } from '../preset-table.ts';

export const keycloak: PresetTable = {
  protocol: 'oauth2',
  clientAuthMethod: 'client_secret_basic',
  grantTypes: ['refreshToken', 'clientCredentials', 'password'],
  recoveryFlows: ['code', 'direct', 'implicit'],
  minIntervalMs: 0,
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
