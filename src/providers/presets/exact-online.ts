// Exact Online (https://support.exactonline.com/community/s/knowledge-base#All-All-DNO-Content-oauth-eol-oauth-devstep4):
// regional hosts, a 570 s floor between token requests, 600 s access tokens, a refresh token that
// rotates on every use and expires after about 30 days unused. The hosts .de, .com, .es and .fr
// are not confirmed by Exact's documentation. Exact's login field names are not public, so the
// preset has no login form profile: spec.recovery.login.form must name them.
import type { PresetTable, RegionEndpoints } from '../preset-table.ts';

function exactHost(host: string): RegionEndpoints {
  return {
    tokenURL: `https://${host}/api/oauth2/token`,
    authorizationURL: `https://${host}/api/oauth2/auth`,
  };
}

export const exactOnline: PresetTable = {
  protocol: 'oauth2',
  regions: {
    nl: exactHost('start.exactonline.nl'),
    be: exactHost('start.exactonline.be'),
    uk: exactHost('start.exactonline.co.uk'),
    de: exactHost('start.exactonline.de'),
    com: exactHost('start.exactonline.com'),
    es: exactHost('start.exactonline.es'),
    fr: exactHost('start.exactonline.fr'),
  },
  clientAuthMethod: 'client_secret_post',
  grantTypes: ['refreshToken'],
  recoveryFlows: ['code', 'implicit'],
  minIntervalMs: 570_000,
  // An unused refresh token expires after about 30 days; the 10-minute access tokens keep the chain
  // busy anyway, this only bounds an idle connection.
  keepAliveMs: 14 * 86_400_000,
  graceWindowMs: 0,
  // A refresh whose answer was lost is settled by presenting the same token again after the floor.
  reusableUntilSuccessorUsed: true,
  accessTokenLifetimeMs: 600_000,
  // The current user: one API call, 288 a day at 5 minutes of the 5,000 a day per company and app.
  probe: { path: '/api/v1/current/Me', intervalMs: 300_000 },
  totp: { algorithm: 'SHA1', digits: 6, periodSec: 30 },
};
