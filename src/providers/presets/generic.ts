// Any RFC 6749 server (https://www.rfc-editor.org/rfc/rfc6749): endpoints from the spec (issuerURL
// for discovery, or tokenURL), every grant and flow, no floor, no grace window unless the spec sets one.
import type { PresetTable } from '../preset-table.ts';

export const generic: PresetTable = {
  protocol: 'oauth2',
  clientAuthMethod: 'client_secret_basic',
  grantTypes: ['refreshToken', 'clientCredentials', 'password'],
  recoveryFlows: ['code', 'implicit', 'direct'],
  minIntervalMs: 0,
  graceWindowMs: 0,
  totp: { algorithm: 'SHA1', digits: 6, periodSec: 30 },
};
