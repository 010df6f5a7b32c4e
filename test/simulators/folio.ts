// A standalone simulator of FOLIO's login and refresh (mod-login in front of mod-authtoken, behind
// Okapi), for tests of a FOLIO protocol adapter. Not OAuth 2.0: a password login and cookie-borne
// tokens.
//
// What it reproduces, from the sources of https://github.com/folio-org/mod-login (LoginAPI,
// TokenCookieParser, CookieSameSiteConfig) and https://github.com/folio-org/mod-authtoken
// (RefreshTokenStore, TokenExpiration, FilterApi):
// - POST /authn/login-with-expiry {"username","password"} with X-Okapi-Tenant → 201, the tokens only
//   in Set-Cookie: folioAccessToken (Path=/) and folioRefreshToken (Path=/authn), both Secure,
//   HTTPOnly and SameSite (mod-login's LOGIN_COOKIE_SAMESITE: Lax unless configured, option
//   sameSite), Max-Age from the tenant's lifetimes (TOKEN_EXPIRATION_SECONDS, defaults 600 and
//   604800); body {"accessTokenExpiration","refreshTokenExpiration"} as ISO instants. Wrong
//   credentials: 422 with code wrong.username.or.wrong.password.or.account.blocked.
// - mod-login's lockout (LoginAttemptsHelper): the login.fail.attempts-th wrong password (default 5)
//   within login.fail.timeout minutes of the previous one (default 10) deactivates the user, whose
//   logins are then refused with the same 422 whatever the password (option lockout). A successful
//   login resets the count.
// - POST /authn/refresh with Cookie: folioRefreshToken=… → 201, same shape. No Cookie header, no
//   refresh cookie, or a duplicated one (either cookie): 400 token.parse.failure. Any refusal by
//   mod-authtoken (expired, unknown, already used) becomes 422 token.refresh.unprocessable.
// - Strict single use: a refresh token is marked revoked when redeemed; presenting it again revokes
//   every refresh token of that user ("Token leaked … All tokens for user are now revoked."). Access
//   tokens are self-contained JWTs and live on until they expire. An expired refresh token is
//   refused without revoking anything.
// - POST /authn/logout (mod-login 7.10.0+, LoginAPI.handleLogout, mod-authtoken's
//   RouteApi.handleTokenLogout and RefreshTokenStore.revokeToken) with Cookie: folioRefreshToken=…
//   → 204 with both cookies cleared (Path=/ and Path=/authn, not moved under the Okapi path, and
//   SameSite=None, as mod-login writes them): that one refresh token is marked revoked, whatever it
//   was (valid, used, revoked or expired), and nothing else of the user is touched. A token it never
//   issued (mod-authtoken cannot decrypt it): 422 token.logout.unprocessable. A Cookie header without
//   exactly one refresh cookie, or with two access cookies: 500 text (TokenCookieParser throws inside
//   the handler's catch-all). A logged-out token presented to /authn/refresh later is a reuse, as any
//   revoked token is.
// - POST /authn/logout without a Cookie header at all, and POST /authn/logout-all: every refresh
//   token of the user whose access token came with the request is revoked → 204. Without an access
//   token the caller has only the gateway's dummy token, which mod-authtoken cannot read as an
//   access token: 422 token.logout.unprocessable. (That a missing Cookie header reaches mod-login
//   as null, rather than RMB refusing it, is the same reading as the refresh's 400 above.)
// - mod-authtoken's filter (FilterApi) validates an access token that comes with a request (the
//   x-okapi-token header or the folioAccessToken cookie, Okapi's TokenHeader) before anything else:
//   a bad or expired one is 401 "Invalid token" (modelled on the logout and API routes); with none,
//   a route that needs no permission (the logout) runs with a dummy token.
// - An API call (GET /users) authenticated by the x-okapi-token header or the folioAccessToken
//   cookie, with x-okapi-tenant: 400 "Token missing, access requires permission: …" without a
//   token, 401 "Invalid token" for a bad or expired one.
// - pathPrefix stands for an Okapi URL with a path (e.g. /okapi): routes and cookie paths move under it.
//   A path no module serves (a base URL without the Okapi path, say), or a request without
//   X-Okapi-Tenant (the super tenant's, which has none of these modules): Okapi's 404 text "No
//   suitable module found for path …", counted as unrouted.
//
// Lifetimes are compressed by timeScale and judged on an injectable clock.
import { randomBytes, randomUUID } from 'node:crypto';
import {
  cookiesOf,
  FaultInjector,
  jsonReply,
  randomToken,
  signedJwt,
  simTime,
  startSimServer,
  textReply,
  wholeSeconds,
  type FaultControls,
  type Reply,
  type SimRequest,
  type SimTimeOptions,
} from './sim-server.ts';

const ACCESS_COOKIE = 'folioAccessToken';
const REFRESH_COOKIE = 'folioRefreshToken';
const DEFAULT_ACCESS_SECONDS = 600;
const DEFAULT_REFRESH_SECONDS = 604_800;

export interface FolioTenantOptions {
  /** Access-token lifetime in provider seconds. Default 600. */
  accessTokenSeconds?: number;
  /** Refresh-token lifetime in provider seconds. Default 604800 (7 days). */
  refreshTokenSeconds?: number;
}

export interface FolioUserOptions {
  username: string;
  password: string;
  /** Default: the first tenant. */
  tenant?: string;
}

export interface FolioSimulatorOptions extends SimTimeOptions {
  /** Tenants by id. Default { diku: {} }. */
  tenants?: Record<string, FolioTenantOptions>;
  /** Default one user, diku_admin / admin, in the first tenant. */
  users?: FolioUserOptions[];
  /** The cookies' SameSite attribute. Default 'Lax', mod-login's default (LOGIN_COOKIE_SAMESITE). */
  sameSite?: 'Strict' | 'Lax' | 'None';
  /** Path of the Okapi URL, e.g. '/okapi'. Default '' (Okapi at the root). */
  pathPrefix?: string;
  /**
   * mod-login's lockout: `attempts` wrong passwords, each within `timeoutMinutes` (provider minutes,
   * compressed by timeScale) of the previous one, deactivate the user. Default { attempts: 5,
   * timeoutMinutes: 10 }, mod-login's defaults; false turns it off.
   */
  lockout?: { attempts: number; timeoutMinutes: number } | false;
}

export interface FolioStats {
  /** Logouts of one refresh token (POST /authn/logout with the cookie) answered 204. */
  logouts: number;
  /** Logouts of every session of a user (logout-all, or a logout without a Cookie header), answered 204. */
  logoutsAll: number;
  /** Logouts of either kind answered 401, 422 or 500. */
  refusedLogouts: number;
  logins: number;
  failedLogins: number;
  /** Users deactivated by the lockout. */
  deactivations: number;
  /** Successful refreshes. */
  refreshes: number;
  /** Refreshes answered 422. */
  refusedRefreshes: number;
  /** Refreshes answered 400 token.parse.failure. */
  parseFailures: number;
  /** Second uses of a refresh token (each revokes all of the user's refresh tokens). */
  reuses: number;
  /** Revocations of all refresh tokens of a user (by reuse, a logout of every session, or revokeAll). */
  revocations: number;
  apiCalls: number;
  /** Requests Okapi routes to no module (404): a path it does not serve, or no X-Okapi-Tenant. */
  unrouted: number;
}

export type FolioRefreshTokenState = 'valid' | 'used' | 'revoked' | 'logged-out' | 'expired' | 'unknown';

export interface FolioSimulator {
  /** http://127.0.0.1:port */
  readonly origin: string;
  /** The Okapi URL: origin plus pathPrefix. */
  readonly okapiUrl: string;
  readonly loginEndpoint: string;
  readonly refreshEndpoint: string;
  readonly logoutEndpoint: string;
  readonly logoutAllEndpoint: string;
  readonly usersEndpoint: string;
  readonly faults: FaultControls;
  stats(): FolioStats;
  /** Refresh tokens of a user that a refresh would accept now. */
  validRefreshTokens(username: string): string[];
  refreshTokenState(refreshToken: string): FolioRefreshTokenState;
  /** Refresh tokens of a user in a state, in the order they were issued. */
  refreshTokensIn(username: string, state: FolioRefreshTokenState): string[];
  /** Revokes every refresh token of a user; returns how many were still usable. */
  revokeAll(username: string): number;
  /** Whether a user may log in (false once the lockout deactivated it, or for an unknown user). */
  isActive(username: string): boolean;
  close(): Promise<void>;
}

interface User {
  id: string;
  username: string;
  password: string;
  tenant: string;
  active: boolean;
  /** mod-login's auth_attempts record. */
  failedAttempts: number;
  lastFailureMs: number | undefined;
}

interface RefreshRecord {
  user: User;
  expiresAtSec: number;
  /** mod-authtoken's is_revoked, with why (the first reason; FOLIO keeps only the flag). */
  revoked: 'used' | 'revoked' | 'logged-out' | undefined;
}

interface AccessRecord {
  user: User;
  expiresAtSec: number;
}

/** mod-login's error body (RMB's Errors). */
function folioErrors(status: number, message: string, code: string): Reply {
  return jsonReply(status, { errors: [{ message, type: 'error', code, parameters: [] }] });
}

/** An instant as Java's Instant.toString writes whole seconds. */
function isoSeconds(epochSec: number): string {
  return new Date(epochSec * 1000).toISOString().replace('.000Z', 'Z');
}

/** A JWE-shaped opaque string (compact serialization, direct encryption): FOLIO refresh tokens are JWEs. */
function jweShaped(): string {
  const header = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM' })).toString('base64url');
  return `${header}..${randomToken(12)}.${randomToken(96)}.${randomToken(16)}`;
}

export async function startFolioSimulator(options: FolioSimulatorOptions = {}): Promise<FolioSimulator> {
  const time = simTime(options);
  const faults = new FaultInjector();
  const tenants = options.tenants ?? { diku: {} };
  const firstTenant = Object.keys(tenants)[0];
  if (firstTenant === undefined) throw new Error('at least one tenant');
  const users: User[] = (options.users ?? [{ username: 'diku_admin', password: 'admin' }]).map((u) => ({
    id: randomUUID(),
    username: u.username,
    password: u.password,
    tenant: u.tenant ?? firstTenant,
    active: true,
    failedAttempts: 0,
    lastFailureMs: undefined,
  }));
  const lockout = options.lockout ?? { attempts: 5, timeoutMinutes: 10 };
  const prefix = (options.pathPrefix ?? '').replace(/\/+$/, '');
  const paths = {
    login: `${prefix}/authn/login-with-expiry`,
    refresh: `${prefix}/authn/refresh`,
    logout: `${prefix}/authn/logout`,
    logoutAll: `${prefix}/authn/logout-all`,
    users: `${prefix}/users`,
  };
  const signingKey = randomBytes(32);
  const stats: FolioStats = {
    logouts: 0,
    logoutsAll: 0,
    refusedLogouts: 0,
    logins: 0,
    failedLogins: 0,
    deactivations: 0,
    refreshes: 0,
    refusedRefreshes: 0,
    parseFailures: 0,
    reuses: 0,
    revocations: 0,
    apiCalls: 0,
    unrouted: 0,
  };
  const refreshTokens = new Map<string, RefreshRecord>();
  const accessTokens = new Map<string, AccessRecord>();
  const nowSec = (): number => Math.floor(time.now() / 1000);

  const lifetimes = (tenant: string): { access: number; refresh: number } => {
    const config = tenants[tenant] ?? {};
    return {
      access: wholeSeconds(time.scaled((config.accessTokenSeconds ?? DEFAULT_ACCESS_SECONDS) * 1000)),
      refresh: wholeSeconds(time.scaled((config.refreshTokenSeconds ?? DEFAULT_REFRESH_SECONDS) * 1000)),
    };
  };

  /** Set-Cookie as Vert.x/Netty encode it (Max-Age, Expires, Path, Secure, HTTPOnly, SameSite). */
  const cookie = (name: string, value: string, expiresAtSec: number, path: string): string => {
    const maxAge = expiresAtSec - nowSec();
    const expires = new Date(time.now() + maxAge * 1000).toUTCString();
    const sameSite = options.sameSite ?? 'Lax';
    return `${name}=${value}; Max-Age=${maxAge}; Expires=${expires}; Path=${path}; Secure; HTTPOnly; SameSite=${sameSite}`;
  };

  /** mod-authtoken's returnTokens, wrapped by mod-login's tokenResponse. */
  const tokenResponse = (user: User): Reply => {
    const life = lifetimes(user.tenant);
    const now = nowSec();
    const accessExp = now + life.access;
    const refreshExp = now + life.refresh;
    const accessToken = signedJwt(
      { sub: user.username, user_id: user.id, type: 'access', tenant: user.tenant, iat: now, exp: accessExp },
      signingKey,
    );
    const refreshToken = jweShaped();
    accessTokens.set(accessToken, { user, expiresAtSec: accessExp });
    refreshTokens.set(refreshToken, { user, expiresAtSec: refreshExp, revoked: undefined });
    const reply = jsonReply(201, {
      accessTokenExpiration: isoSeconds(accessExp),
      refreshTokenExpiration: isoSeconds(refreshExp),
    });
    return {
      ...reply,
      headers: {
        ...reply.headers,
        'set-cookie': [
          cookie(ACCESS_COOKIE, accessToken, accessExp, `${prefix}/`),
          cookie(REFRESH_COOKIE, refreshToken, refreshExp, `${prefix}/authn`),
        ],
      },
    };
  };

  const revokeAll = (user: User): number => {
    stats.revocations++;
    let live = 0;
    for (const record of refreshTokens.values()) {
      if (record.user !== user || record.revoked !== undefined) continue;
      if (record.expiresAtSec > nowSec()) live++;
      record.revoked = 'revoked';
    }
    return live;
  };

  /** LoginAttemptsHelper: count a wrong password; enough of them close together deactivate the user. */
  const countFailure = (user: User): void => {
    if (lockout === false) return;
    const now = time.now();
    const window = time.scaled(lockout.timeoutMinutes * 60_000);
    if (user.lastFailureMs !== undefined && now - user.lastFailureMs > window) user.failedAttempts = 0;
    user.failedAttempts++;
    user.lastFailureMs = now;
    if (user.failedAttempts >= lockout.attempts) {
      user.active = false;
      user.failedAttempts = 0;
      stats.deactivations++;
    }
  };

  const login = (req: SimRequest, tenant: string): Reply => {
    let body: unknown;
    try {
      body = JSON.parse(req.body);
    } catch {
      return textReply(400, 'Json content error');
    }
    const credentials = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const { username, password } = credentials;
    if (typeof username !== 'string') return textReply(400, 'You must provide a username or userId');
    if (typeof password !== 'string') return textReply(400, 'You must provide a password');
    const user = users.find((u) => u.username === username && u.tenant === tenant);
    const refuse = (): Reply => {
      stats.failedLogins++;
      return folioErrors(
        422,
        'Wrong username or wrong password or account blocked',
        'wrong.username.or.wrong.password.or.account.blocked',
      );
    };
    // An inactive user is refused before the password is looked at (requireActiveUser).
    if (user === undefined || !user.active) return refuse();
    if (user.password !== password) {
      countFailure(user);
      return refuse();
    }
    user.failedAttempts = 0;
    stats.logins++;
    return tokenResponse(user);
  };

  const refresh = (req: SimRequest): Reply => {
    // mod-login's TokenCookieParser: exactly one refresh cookie, at most one access cookie.
    const cookies = cookiesOf(req);
    const count = (name: string): number => cookies.filter(([n]) => n === name).length;
    const presented = cookies.find(([n]) => n === REFRESH_COOKIE)?.[1];
    if (presented === undefined || count(REFRESH_COOKIE) > 1 || count(ACCESS_COOKIE) > 1) {
      stats.parseFailures++;
      return folioErrors(400, 'Bad request', 'token.parse.failure');
    }
    const refused = (): Reply => {
      stats.refusedRefreshes++;
      return folioErrors(
        422,
        'Authorization server unable to process token refresh request',
        'token.refresh.unprocessable',
      );
    };
    const record = refreshTokens.get(presented);
    // RefreshTokenStore.checkTokenNotRevoked: expiry first (nothing revoked), then the atomic
    // "mark revoked unless already revoked"; a token already revoked means a leak.
    if (record === undefined || record.expiresAtSec <= nowSec()) return refused();
    if (record.revoked !== undefined) {
      stats.reuses++;
      revokeAll(record.user);
      return refused();
    }
    record.revoked = 'used';
    stats.refreshes++;
    return tokenResponse(record.user);
  };

  /** The access token Okapi takes from a request (TokenHeader.java): the header, else the cookie. */
  const presentedAccessToken = (req: SimRequest): string | undefined => {
    const header = req.headers['x-okapi-token'];
    return typeof header === 'string' ? header : cookiesOf(req).find(([n]) => n === ACCESS_COOKIE)?.[1];
  };

  /** mod-authtoken's filter: the access token's record, or undefined for a bad or expired one. */
  const validAccess = (token: string, tenant: string): AccessRecord | undefined => {
    const access = accessTokens.get(token);
    if (access === undefined || access.expiresAtSec <= nowSec() || access.user.tenant !== tenant) {
      return undefined;
    }
    return access;
  };

  /** mod-login's logoutResponse: both cookies cleared, at fixed paths. */
  const loggedOut = (): Reply => ({
    status: 204,
    headers: {
      'set-cookie': [
        `${ACCESS_COOKIE}=; SameSite=None; Secure; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT`,
        `${REFRESH_COOKIE}=; SameSite=None; Secure; Path=/authn; Expires=Thu, 01 Jan 1970 00:00:00 GMT`,
      ],
    },
  });

  const logoutRefused = (): Reply => {
    stats.refusedLogouts++;
    return folioErrors(
      422,
      'Authorization server unable to process token logout request',
      'token.logout.unprocessable',
    );
  };

  /** LoginAPI.handleLogout: one refresh token with a Cookie header, every session without one. */
  const logout = (req: SimRequest, tenant: string, all: boolean): Reply => {
    const token = presentedAccessToken(req);
    const access = token === undefined ? undefined : validAccess(token, tenant);
    if (token !== undefined && access === undefined) {
      stats.refusedLogouts++;
      return textReply(401, 'Invalid token');
    }
    if (all || req.headers.cookie === undefined) {
      // /token/invalidate-all reads the caller's token as an access token; a dummy token is not one.
      if (access === undefined) return logoutRefused();
      revokeAll(access.user);
      stats.logoutsAll++;
      return loggedOut();
    }
    const cookies = cookiesOf(req);
    const count = (name: string): number => cookies.filter(([n]) => n === name).length;
    if (count(REFRESH_COOKIE) !== 1 || count(ACCESS_COOKIE) > 1) {
      stats.refusedLogouts++;
      return textReply(500, 'Internal Server error');
    }
    const record = refreshTokens.get(cookies.find(([n]) => n === REFRESH_COOKIE)?.[1] ?? '');
    if (record === undefined) return logoutRefused();
    // RefreshTokenStore.revokeToken: is_revoked=TRUE by id in the tenant's table, with no look at
    // what the token was or whether a row changed (another tenant's token changes nothing).
    if (record.user.tenant === tenant) record.revoked ??= 'logged-out';
    stats.logouts++;
    return loggedOut();
  };

  const listUsers = (req: SimRequest, tenant: string): Reply => {
    const token = presentedAccessToken(req);
    if (token === undefined)
      return textReply(400, 'Token missing, access requires permission: users.collection.get');
    const access = validAccess(token, tenant);
    if (access === undefined) return textReply(401, 'Invalid token');
    stats.apiCalls++;
    const limit = Number(req.url.searchParams.get('limit') ?? '10');
    const inTenant = users.filter((u) => u.tenant === tenant);
    const page = inTenant.slice(0, Number.isInteger(limit) && limit >= 0 ? limit : 10);
    return jsonReply(200, {
      users: page.map((u) => ({ username: u.username, id: u.id, active: true })),
      totalRecords: inTenant.length,
      resultInfo: { totalRecords: inTenant.length, facets: [], diagnostics: [] },
    });
  };

  const handle = (req: SimRequest): Reply => {
    const path = req.url.pathname;
    const routes: Record<string, ((req: SimRequest, tenant: string) => Reply) | undefined> = {
      [`POST ${paths.login}`]: login,
      [`POST ${paths.refresh}`]: refresh,
      [`POST ${paths.logout}`]: (r, t) => logout(r, t, false),
      [`POST ${paths.logoutAll}`]: (r, t) => logout(r, t, true),
      [`GET ${paths.users}`]: listUsers,
    };
    const route = routes[`${req.method} ${path}`];
    if (route === undefined) {
      stats.unrouted++;
      return textReply(404, `No suitable module found for path ${path}`);
    }
    // Okapi routes by tenant: without the header the request is the super tenant's, which has none
    // of these modules.
    const tenant = req.headers['x-okapi-tenant'];
    if (typeof tenant !== 'string' || tenant === '') {
      stats.unrouted++;
      return textReply(404, `No suitable module found for path ${path} for tenant supertenant`);
    }
    if (!(tenant in tenants)) return textReply(400, `No such Tenant ${tenant}`);
    return route(req, tenant);
  };

  const server = await startSimServer(handle, faults);
  const okapiUrl = `${server.origin}${prefix}`;
  const userNamed = (username: string): User | undefined => users.find((u) => u.username === username);
  const stateOf = (record: RefreshRecord | undefined): FolioRefreshTokenState => {
    if (record === undefined) return 'unknown';
    if (record.revoked !== undefined) return record.revoked;
    return record.expiresAtSec <= nowSec() ? 'expired' : 'valid';
  };

  return {
    origin: server.origin,
    okapiUrl,
    loginEndpoint: `${server.origin}${paths.login}`,
    refreshEndpoint: `${server.origin}${paths.refresh}`,
    logoutEndpoint: `${server.origin}${paths.logout}`,
    logoutAllEndpoint: `${server.origin}${paths.logoutAll}`,
    usersEndpoint: `${server.origin}${paths.users}`,
    faults,
    stats: () => ({ ...stats }),
    validRefreshTokens: (username) =>
      [...refreshTokens]
        .filter(([, r]) => r.user.username === username && stateOf(r) === 'valid')
        .map(([token]) => token),
    refreshTokenState: (token) => stateOf(refreshTokens.get(token)),
    refreshTokensIn: (username, state) =>
      [...refreshTokens]
        .filter(([, r]) => r.user.username === username && stateOf(r) === state)
        .map(([token]) => token),
    revokeAll(username) {
      const user = userNamed(username);
      return user === undefined ? 0 : revokeAll(user);
    },
    isActive: (username) => userNamed(username)?.active === true,
    close: () => server.close(),
  };
}
