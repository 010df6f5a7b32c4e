// FOLIO (https://github.com/folio-org/mod-login, https://github.com/folio-org/mod-authtoken): not
// OAuth 2.0. A password login (POST /authn/login-with-expiry) starts a chain, POST /authn/refresh
// rotates it, and both carry the tokens only in Set-Cookie (folioAccessToken, folioRefreshToken);
// the tenant travels in X-Okapi-Tenant. The protocol adapter is src/oauth/folio.ts; the guide,
// with its sources, is docs/providers/folio.md.
// - Lifetimes are per tenant (mod-authtoken's TOKEN_EXPIRATION_SECONDS): 600 s and 604800 s by
//   default (AccessToken.java, RefreshToken.java); the cookies' Max-Age states the real ones.
// - A refresh token is single-use with no grace window, and a second use revokes every refresh
//   token of the user (RefreshTokenStore.java): a chain whose refresh is refused is started again by
//   one password login, and a lost refresh answer is never settled by presenting the token again.
// - The client ID is not sent (FOLIO has no OAuth client): it only names the connection.
import type { PresetTable } from '../preset-table.ts';

export const folio: PresetTable = {
  protocol: 'folio',
  clientAuthMethod: 'none',
  grantTypes: ['password'],
  recoveryFlows: [],
  minIntervalMs: 0,
  // Refreshed every few minutes anyway; this only bounds the 7-day refresh token of an idle chain.
  keepAliveMs: 5 * 86_400_000,
  graceWindowMs: 0,
  accessTokenLifetimeMs: 600_000,
  baseURLTokenPath: '/authn/refresh',
  passwordStartsChain: true,
};
