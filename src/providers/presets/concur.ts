// SAP Concur (https://developer.concur.com/api-reference/authentication/apidoc.html): the token
// endpoint at the user's geolocation, one-hour access tokens, refresh tokens that live six months
// unused and usually come back unchanged, numeric error codes (code 16: the user lives at another
// geolocation). Base URIs: https://developer.concur.com/platform/base-uris.html (the China host's
// token path is not confirmed). Concur's password grant (credtype=password) is the direct flow.
import type { PresetTable, RegionEndpoints } from '../preset-table.ts';

export const CONCUR_TOKEN_PATH = '/oauth2/v0/token';

function concurOrigin(origin: string): RegionEndpoints {
  return { tokenURL: `${origin}${CONCUR_TOKEN_PATH}` };
}

export const concur: PresetTable = {
  protocol: 'oauth2',
  regions: {
    us: concurOrigin('https://us.api.concursolutions.com'),
    us2: concurOrigin('https://us2.api.concursolutions.com'),
    emea: concurOrigin('https://emea.api.concursolutions.com'),
    eu: concurOrigin('https://eu.api.concursolutions.com'),
    eu2: concurOrigin('https://eu2.api.concursolutions.com'),
    usg: concurOrigin('https://usg.api.concursolutions.com'),
    cn: concurOrigin('https://cn.api.concurcdc.cn'),
  },
  clientAuthMethod: 'client_secret_post',
  grantTypes: ['refreshToken', 'password'],
  recoveryFlows: ['direct'],
  minIntervalMs: 0,
  // Refresh tokens die after six months unused; a refresh before that keeps the chain alive.
  keepAliveMs: 150 * 86_400_000,
  graceWindowMs: 0,
  accessTokenLifetimeMs: 3_600_000,
  passwordGrantParameters: { credtype: 'password' },
  errorDialect: 'concur',
  geolocationTokenPath: CONCUR_TOKEN_PATH,
};
