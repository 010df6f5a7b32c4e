// FOLIO (https://github.com/folio-org/mod-login, https://github.com/folio-org/mod-authtoken): a
// password login and cookie-borne tokens through /authn/*, not OAuth 2.0. Its protocol adapter is
// not written yet: a connection with this preset is refused with ProtocolNotSupported.
import type { PresetTable } from '../preset-table.ts';

export const folio: PresetTable = {
  protocol: 'folio',
  clientAuthMethod: 'none',
  grantTypes: ['password', 'refreshToken'],
  recoveryFlows: [],
  minIntervalMs: 0,
  // The refresh cookie lives 7 days by default (per tenant: TOKEN_EXPIRATION_SECONDS).
  keepAliveMs: 5 * 86_400_000,
  graceWindowMs: 0,
  accessTokenLifetimeMs: 600_000,
};
