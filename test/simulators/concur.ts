// A standalone simulator of SAP Concur's OAuth 2.0 token service, for tests of the operator's concur
// preset: one loopback HTTP server per geolocation, each with POST /oauth2/v0/token.
//
// What it reproduces, from https://developer.concur.com/api-reference/authentication/apidoc.html
// (grants, response, error codes, base URIs), the company flow
// (https://developer.concur.com/api-reference/authentication/company-auth.html) and the migration
// notes (https://developer.concur.com/api-reference/authentication/oauth2-migration-best-practices.html):
// - Grants refresh_token and password (credtype=password, or authtoken for a company's App Center
//   request token), form-encoded, client_id and client_secret in the body.
// - The answer: expires_in as a string ("3600"), token_type Bearer, access_token, refresh_token,
//   id_token (a JWT naming the principal), geolocation (the base URI where the principal lives);
//   company logins add refresh_expires_in (epoch seconds), user logins on option.
// - The refresh token is usually returned unchanged (option rotateRefreshToken: a new one, and the
//   old one is then refused). It expires six months after its last use: a refresh keeps it alive.
// - Access tokens live an hour (option accessTokenLifetimeHours: another lifetime, for tests that
//   need a keep-alive refresh to be the only one due before the refresh token expires).
// - Tokens are refreshed at the principal's geolocation. Another geolocation answers code 16 "user
//   lives elsewhere" naming the right one; moveUser() relocates the principal mid-chain.
// - Errors: {"code":n,"error":…,"error_description":…,"geolocation":…} with the codes and texts of
//   the documentation's table. Which HTTP status a code gets (400/401/403/404) is not documented:
//   statusByCode chooses, with 400 by default, 401 for client authentication and 403 for a company
//   not enabled for the app. Whether every error body names a geolocation is not confirmed either
//   (option errorGeolocation: false leaves it out).
// - DELETE /app-mgmt/v0/connections with the access token revokes the principal's refresh tokens.
// - Every answer carries a concur-correlationid header.
//
// Durations (1 h access tokens, six months of refresh-token life) are compressed by timeScale and
// judged on an injectable clock.
import { randomBytes, randomUUID } from 'node:crypto';
import {
  bearerOf,
  FaultInjector,
  formOf,
  isFormPost,
  jsonReply,
  credentialsOf,
  randomToken,
  signedJwt,
  simTime,
  startSimServer,
  wholeSeconds,
  type FaultControls,
  type Reply,
  type SimCredentials,
  type SimRequest,
  type SimServer,
  type SimTimeOptions,
} from './sim-server.ts';

export const CONCUR_TOKEN_PATH = '/oauth2/v0/token';
export const CONCUR_CONNECTIONS_PATH = '/app-mgmt/v0/connections';

const HOUR = 3_600_000;
const ACCESS_TOKEN_LIFETIME = HOUR;
/** Six months, taken as 180 days. */
const REFRESH_TOKEN_LIFETIME = 180 * 24 * HOUR;

/** Error codes of the token endpoint, with their error and description (the documentation's table). */
export const CONCUR_ERRORS = {
  5: ['invalid_grant', 'Incorrect credentials. Please Retry'],
  10: ['invalid_grant', 'Account is disabled. Please contact support'],
  14: ['invalid_grant', 'Account Locked. Please contact support'],
  16: ['invalid_request', 'user lives elsewhere'],
  51: ['invalid_request', 'username was not supplied'],
  52: ['invalid_request', 'password was not supplied'],
  53: ['invalid_client', 'company is not enabled for this client'],
  54: ['invalid_scope', 'requested scope exceeds granted scope'],
  60: ['invalid_grant', 'these are not the grants you are looking for'],
  61: ['invalid_client', 'client not found'],
  62: ['invalid_request', 'client_id was not supplied'],
  63: ['invalid_request', 'client_secret was not supplied'],
  64: ['invalid_client', 'Incorrect credentials. Please Retry'],
  65: ['invalid_request', 'grant_type was not supplied'],
  106: ['invalid_request', 'refresh_token was not supplied'],
  107: ['invalid_request', 'refresh disallowed for app'],
  108: ['invalid_grant', 'bad or expired refresh token'],
  120: ['invalid_request', 'credtype is invalid'],
} as const satisfies Record<number, readonly [string, string]>;

export type ConcurErrorCode = keyof typeof CONCUR_ERRORS;
export type ConcurErrorStatus = 400 | 401 | 403 | 404;

const DEFAULT_STATUS: Partial<Record<ConcurErrorCode, ConcurErrorStatus>> = { 53: 403, 61: 401, 64: 401 };

export type ConcurPrincipal = 'user' | 'company';

/** Who the simulator knows and where; fixed for its life. */
export interface ConcurIdentity extends Partial<SimCredentials> {
  /** Geolocation names, one server each. Default ['us', 'emea'] (the documented production base URIs). */
  geolocations?: string[];
  /** Where the user and the company live at start (see moveUser). Default the first geolocation. */
  userGeolocation?: string;
  /** The company's UUID (username of credtype=authtoken). */
  companyId?: string;
  /** The App Center request token accepted as password with credtype=authtoken. */
  companyRequestToken?: string;
}

/** What configure() may change while the simulator runs. */
export interface ConcurBehaviour {
  /**
   * The app's geolocation, where password grants succeed for principals living elsewhere ("the base
   * URI for obtaining a token will leverage your application's geolocation"). Default none: every
   * grant at a geolocation other than the principal's answers code 16.
   */
  appGeolocation?: string;
  /** 'disabled' answers code 10, 'locked' code 14 to the user's password grant. */
  accountState?: 'active' | 'disabled' | 'locked';
  /** Scopes the app was granted; a request for more answers code 54. */
  grantedScopes?: string[];
  /** false: refresh grants answer code 107. */
  refreshAllowed?: boolean;
  /** false: password grants answer code 53. */
  companyEnabled?: boolean;
  /** Return a new refresh token on every refresh (the previous one is then refused). Default false. */
  rotateRefreshToken?: boolean;
  /** Add refresh_expires_in to user logins too (company logins always have it). Default false. */
  refreshExpiresInForUsers?: boolean;
  /** HTTP status per error code; the rest 400 (53: 403; 61, 64: 401). */
  statusByCode?: Partial<Record<ConcurErrorCode, ConcurErrorStatus>>;
  /** false: error bodies carry no geolocation, code 16 included. Default true. */
  errorGeolocation?: boolean;
  /**
   * Lifetime of the access tokens issued from now on, in provider hours (compressed by timeScale
   * like every provider duration). Default 1, Concur's. A test device: a lifetime above the refresh
   * token's six months makes a keep-alive refresh the only one due before the refresh token expires.
   */
  accessTokenLifetimeHours?: number;
}

export type ConcurSimulatorOptions = ConcurIdentity & ConcurBehaviour & SimTimeOptions;

export interface ConcurStats {
  /** Requests that reached each geolocation (injected gateway errors do not). */
  requestsByGeolocation: Record<string, number>;
  passwordGrants: number;
  refreshes: number;
  /** Error answers per code. */
  errorsByCode: Record<number, number>;
  /** When the last refresh succeeded (clock ms). */
  lastRefreshAt: number | undefined;
}

export type RefreshTokenState = 'valid' | 'expired' | 'revoked' | 'unknown';

/** One request to the token endpoint, as the simulator answered it. */
export interface ConcurTokenRequest {
  /** Clock ms when it arrived. */
  at: number;
  /** The geolocation (name) that received it. */
  geolocation: string;
  /** The grant_type parameter as sent. */
  grantType: string;
  status: number;
  /** The error code of an error answer. */
  code?: number;
  /** A refresh answered with a refresh token other than the one presented. */
  rotated?: boolean;
}

export interface ConcurSimulator extends Readonly<SimCredentials> {
  /** Origin (http://127.0.0.1:port) per geolocation name. */
  readonly geolocations: Readonly<Record<string, string>>;
  /** The origin of the geolocation where the principals live now. */
  readonly userGeolocation: string;
  readonly companyId: string;
  readonly companyRequestToken: string;
  readonly faults: FaultControls;
  /** `${origin}/oauth2/v0/token` of a geolocation (by name). */
  tokenEndpoint(geolocation: string): string;
  /** Relocates the principals to another geolocation (by name). */
  moveUser(geolocation: string): void;
  /** The refresh token last returned to a principal. */
  currentRefreshToken(principal?: ConcurPrincipal): string | undefined;
  /**
   * Starts a chain for a principal as a login long ago would have (no request, nothing counted):
   * its refresh token, to seed a client with.
   */
  seedChain(principal?: ConcurPrincipal): string;
  /** Every token endpoint request so far, in order of arrival (injected gateway errors excluded). */
  tokenRequests(): ConcurTokenRequest[];
  refreshTokenState(refreshToken: string): RefreshTokenState;
  refreshTokenExpiresAt(refreshToken: string): number | undefined;
  /** Revokes every refresh token of a principal; returns how many were live. */
  revoke(principal?: ConcurPrincipal): number;
  stats(): ConcurStats;
  /** Changes behaviour options for the following requests. */
  configure(changes: ConcurBehaviour): void;
  close(): Promise<void>;
}

interface RefreshGrant {
  principal: ConcurPrincipal;
  expiresAt: number;
  revoked: boolean;
}

export async function startConcurSimulator(initial: ConcurSimulatorOptions = {}): Promise<ConcurSimulator> {
  let opts: ConcurBehaviour = { ...initial };
  const time = simTime(initial);
  const faults = new FaultInjector();
  const names = initial.geolocations ?? ['us', 'emea'];
  const firstName = names[0];
  if (firstName === undefined || new Set(names).size !== names.length) {
    throw new Error('geolocations must be distinct names, at least one');
  }
  const checkName = (name: string): string => {
    if (!names.includes(name)) throw new Error(`unknown geolocation ${name}`);
    return name;
  };
  let home = checkName(initial.userGeolocation ?? firstName);
  const credentials = credentialsOf(initial, 'concur');
  const { clientId, clientSecret, username, password } = credentials;
  const companyId = initial.companyId ?? 'f1e2d3c4-0000-4000-8000-00000000c0de';
  const companyRequestToken = initial.companyRequestToken ?? 'concur-test-request-token';
  const userSubject = randomUUID();
  const subjectOf = (principal: ConcurPrincipal): string => (principal === 'user' ? userSubject : companyId);
  const idTokenKey = randomBytes(32);

  const stats: ConcurStats = {
    requestsByGeolocation: Object.fromEntries(names.map((n) => [n, 0])),
    passwordGrants: 0,
    refreshes: 0,
    errorsByCode: {},
    lastRefreshAt: undefined,
  };
  const refreshTokens = new Map<string, RefreshGrant>();
  const requests: ConcurTokenRequest[] = [];
  const current = new Map<ConcurPrincipal, string>();
  const accessTokens = new Map<string, { principal: ConcurPrincipal; expiresAt: number }>();
  const origins: Record<string, string> = {};
  const originOf = (name: string): string => origins[name] ?? '';

  const error = (code: ConcurErrorCode, geolocation: string): Reply => {
    stats.errorsByCode[code] = (stats.errorsByCode[code] ?? 0) + 1;
    const [err, description] = CONCUR_ERRORS[code];
    const status = opts.statusByCode?.[code] ?? DEFAULT_STATUS[code] ?? 400;
    return jsonReply(status, {
      code,
      error: err,
      error_description: description,
      ...(opts.errorGeolocation === false ? {} : { geolocation: originOf(geolocation) }),
    });
  };

  const stateOf = (grant: RefreshGrant | undefined): RefreshTokenState => {
    if (grant === undefined) return 'unknown';
    if (grant.revoked) return 'revoked';
    return time.now() >= grant.expiresAt ? 'expired' : 'valid';
  };

  /** The scope to grant, or undefined when the request asks for more than the app has. */
  const scopeFor = (form: URLSearchParams): string | undefined => {
    const granted = opts.grantedScopes ?? ['openid', 'user.read', 'expense.report.read'];
    const asked = (form.get('scope') ?? '').split(' ').filter((s) => s !== '');
    if (asked.some((s) => !granted.includes(s))) return undefined;
    return (asked.length > 0 ? asked : granted).join(' ');
  };

  const tokenResponse = (principal: ConcurPrincipal, refreshToken: string, scope: string): Reply => {
    const now = time.now();
    const grant = refreshTokens.get(refreshToken);
    const accessToken = randomToken(64);
    const accessLifetime = time.scaled(
      opts.accessTokenLifetimeHours !== undefined
        ? opts.accessTokenLifetimeHours * HOUR
        : ACCESS_TOKEN_LIFETIME,
    );
    accessTokens.set(accessToken, { principal, expiresAt: now + accessLifetime });
    const iat = Math.floor(now / 1000);
    const issuer = originOf(home);
    const idToken = signedJwt(
      {
        aud: clientId,
        'concur.profile': `${issuer}/profile/v1/principals/${subjectOf(principal)}`,
        'concur.version': 2,
        'concur.type': principal,
        sub: subjectOf(principal),
        iss: issuer,
        exp: iat + wholeSeconds(accessLifetime),
        nbf: iat,
        iat,
      },
      idTokenKey,
    );
    const withExpiry = principal === 'company' || opts.refreshExpiresInForUsers === true;
    return jsonReply(200, {
      expires_in: String(wholeSeconds(accessLifetime)),
      scope,
      token_type: 'Bearer',
      access_token: accessToken,
      refresh_token: refreshToken,
      id_token: idToken,
      geolocation: issuer,
      ...(withExpiry && grant !== undefined
        ? { refresh_expires_in: Math.floor(grant.expiresAt / 1000) }
        : {}),
    });
  };

  const newRefreshToken = (principal: ConcurPrincipal): string => {
    const token = randomUUID();
    refreshTokens.set(token, {
      principal,
      expiresAt: time.now() + time.scaled(REFRESH_TOKEN_LIFETIME),
      revoked: false,
    });
    current.set(principal, token);
    return token;
  };

  const refreshGrant = (form: URLSearchParams, here: string): Reply => {
    const presented = form.get('refresh_token') ?? '';
    if (presented === '') return error(106, here);
    if (opts.refreshAllowed === false) return error(107, here);
    const grant = refreshTokens.get(presented);
    if (grant === undefined || stateOf(grant) !== 'valid') return error(108, here);
    if (here !== home) return error(16, home);
    const scope = scopeFor(form);
    if (scope === undefined) return error(54, home);
    let token = presented;
    if (opts.rotateRefreshToken === true) {
      refreshTokens.delete(presented);
      token = newRefreshToken(grant.principal);
    } else {
      // A refresh before expiry keeps the chain alive: six months from now.
      grant.expiresAt = time.now() + time.scaled(REFRESH_TOKEN_LIFETIME);
      current.set(grant.principal, presented);
    }
    stats.refreshes++;
    stats.lastRefreshAt = time.now();
    return tokenResponse(grant.principal, token, scope);
  };

  const passwordGrant = (form: URLSearchParams, here: string): Reply => {
    const credtype = form.get('credtype') ?? 'password';
    if (credtype !== 'password' && credtype !== 'authtoken') return error(120, here);
    const user = form.get('username') ?? '';
    const secret = form.get('password') ?? '';
    if (user === '') return error(51, here);
    if (secret === '') return error(52, here);
    const principal: ConcurPrincipal = credtype === 'authtoken' ? 'company' : 'user';
    const right =
      principal === 'company'
        ? user === companyId && secret === companyRequestToken
        : user === username && secret === password;
    // The error names where the principal lives when the name is known.
    if (!right) return error(5, user === username || user === companyId ? home : here);
    if (principal === 'user' && opts.accountState === 'disabled') return error(10, home);
    if (principal === 'user' && opts.accountState === 'locked') return error(14, home);
    if (opts.companyEnabled === false) return error(53, home);
    if (here !== home && here !== opts.appGeolocation) return error(16, home);
    const scope = scopeFor(form);
    if (scope === undefined) return error(54, home);
    stats.passwordGrants++;
    return tokenResponse(principal, newRefreshToken(principal), scope);
  };

  const tokenEndpoint = (req: SimRequest, here: string): Reply => {
    const form = isFormPost(req) ? formOf(req) : new URLSearchParams();
    const id = form.get('client_id') ?? '';
    const secret = form.get('client_secret') ?? '';
    if (id === '') return error(62, here);
    if (secret === '') return error(63, here);
    if (id !== clientId) return error(61, here);
    if (secret !== clientSecret) return error(64, here);
    const grantType = form.get('grant_type') ?? '';
    if (grantType === '') return error(65, here);
    if (grantType === 'refresh_token') return refreshGrant(form, here);
    if (grantType === 'password') return passwordGrant(form, here);
    return error(60, here);
  };

  /** DELETE /app-mgmt/v0/connections: revokes the refresh tokens of the access token's principal. */
  const revokeConnections = (req: SimRequest): Reply => {
    const access = accessTokens.get(bearerOf(req) ?? '');
    if (access === undefined || time.now() >= access.expiresAt)
      return jsonReply(401, { error: 'invalid_token' });
    revokeAll(access.principal);
    return jsonReply(200, {});
  };

  const revokeAll = (principal: ConcurPrincipal): number => {
    let live = 0;
    for (const grant of refreshTokens.values()) {
      if (grant.principal !== principal || grant.revoked) continue;
      if (stateOf(grant) === 'valid') live++;
      grant.revoked = true;
    }
    return live;
  };

  /** What the request log keeps of one token request: no token, no secret. */
  const requestRecord = (req: SimRequest, here: string, at: number, reply: Reply): ConcurTokenRequest => {
    const form = isFormPost(req) ? formOf(req) : new URLSearchParams();
    const record: ConcurTokenRequest = {
      at,
      geolocation: here,
      grantType: form.get('grant_type') ?? '',
      status: reply.status,
    };
    const body = JSON.parse(reply.body ?? '{}') as { code?: unknown; refresh_token?: unknown };
    if (typeof body.code === 'number') record.code = body.code;
    if (record.grantType === 'refresh_token' && reply.status === 200) {
      record.rotated = body.refresh_token !== form.get('refresh_token');
    }
    return record;
  };

  const handlerFor =
    (here: string) =>
    (req: SimRequest): Reply => {
      stats.requestsByGeolocation[here] = (stats.requestsByGeolocation[here] ?? 0) + 1;
      const path = req.url.pathname;
      let reply: Reply;
      if (path === CONCUR_TOKEN_PATH && req.method === 'POST') {
        const at = time.now();
        reply = tokenEndpoint(req, here);
        requests.push(requestRecord(req, here, at, reply));
      } else if (path === CONCUR_CONNECTIONS_PATH && req.method === 'DELETE') reply = revokeConnections(req);
      else reply = jsonReply(404, { error: 'not_found' });
      return { ...reply, headers: { ...reply.headers, 'concur-correlationid': randomUUID() } };
    };

  const servers: SimServer[] = [];
  try {
    for (const name of names) {
      const server = await startSimServer(handlerFor(name), faults);
      servers.push(server);
      origins[name] = server.origin;
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.close()));
    throw err;
  }

  return {
    geolocations: { ...origins },
    get userGeolocation() {
      return originOf(home);
    },
    ...credentials,
    companyId,
    companyRequestToken,
    faults,
    tokenEndpoint: (name) => `${originOf(checkName(name))}${CONCUR_TOKEN_PATH}`,
    moveUser(name) {
      home = checkName(name);
    },
    currentRefreshToken: (principal = 'user') => current.get(principal),
    seedChain: (principal = 'user') => newRefreshToken(principal),
    tokenRequests: () => requests.map((r) => ({ ...r })),
    refreshTokenState: (token) => stateOf(refreshTokens.get(token)),
    refreshTokenExpiresAt: (token) => refreshTokens.get(token)?.expiresAt,
    revoke: (principal = 'user') => revokeAll(principal),
    stats: () => ({
      ...stats,
      requestsByGeolocation: { ...stats.requestsByGeolocation },
      errorsByCode: { ...stats.errorsByCode },
    }),
    configure(changes) {
      opts = { ...opts, ...changes };
    },
    close: async () => {
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}
