// The FOLIO protocol adapter (src/oauth/folio.ts) through OAuthClient against the FOLIO simulator on
// 127.0.0.1 (test/simulators/folio.ts), configured the way the operator configures it (the folio
// preset, spec.provider.baseURL and tenant): what a login and a refresh send and return, and how
// every way they fail is classified without a secret in the message. Then the pure parts: the
// cookies of an answer, FOLIO's error bodies.
import { describe, expect, it } from 'vitest';
import type { OAuthConnectionSpec } from '../../src/api/v1alpha1.ts';
import {
  classifyFolioFailure,
  folioLoginURL,
  folioLogoutURL,
  folioTokensFrom,
  logoutFolioRefreshToken,
  requestFolioTokens,
} from '../../src/oauth/folio.ts';
import { MAX_TOKEN_BYTES } from '../../src/oauth/grants.ts';
import {
  OAuthClient,
  TokenError,
  type ClientConfig,
  type ResolvedEndpoints,
  type TokenGrant,
  type TokenSet,
  type Transport,
  type TransportOptions,
  type TransportRequest,
} from '../../src/oauth/index.ts';
import { clientConfigFor, endpointSettingsFor } from '../../src/providers/configure.ts';
import { presetDefaults } from '../../src/providers/presets.ts';
import { startFolioSimulator, type FolioSimulator, type FolioSimulatorOptions } from '../simulators/folio.ts';
import { simulatorFixture } from '../simulators/sim-fixture.ts';

// Provider durations compressed 100-fold: access tokens live 6 s, refresh tokens 6,048 s.
const SCALE = 0.01;
const TENANT = 'diku';
const USER = { username: 'circ-sync', password: 'pässwörd canary-FOLIO-7f3a' };
const fx = simulatorFixture<FolioSimulatorOptions, FolioSimulator>(
  startFolioSimulator,
  Date.parse('2026-03-01T00:00:00Z'),
  SCALE,
);

interface Setup {
  sim: FolioSimulator;
  oauth: OAuthClient;
  client: ClientConfig;
  endpoints: ResolvedEndpoints;
  login: (password?: string) => Promise<TokenSet>;
  refresh: (refreshToken: string) => Promise<TokenSet>;
}

/** A simulator and an OAuthClient configured from a folio connection's spec, as the operator does. */
async function setup(
  options: FolioSimulatorOptions & { transport?: Partial<TransportOptions>; tenant?: string } = {},
): Promise<Setup> {
  const { transport, tenant = TENANT, ...simOptions } = options;
  const sim = await fx.start({ users: [USER], ...simOptions });
  const spec: OAuthConnectionSpec = {
    provider: { preset: 'folio', baseURL: `${sim.okapiUrl}/`, tenant },
    clientID: 'folio-circulation-sync',
    grant: { type: 'password', usernameRef: { name: 'folio' }, passwordRef: { name: 'folio' } },
    output: { secretName: 'folio-token' },
  };
  const preset = presetDefaults('folio');
  const oauth = new OAuthClient({
    clock: fx.clock,
    transport: { policy: { allowInsecureHttp: true }, ...transport },
  });
  const client = clientConfigFor(spec, preset, undefined);
  const endpoints = await oauth.resolveEndpoints(endpointSettingsFor(spec.provider, preset));
  const closeSim = sim.close.bind(sim);
  // The client's connections close with the simulator, after the test.
  sim.close = async () => {
    await oauth.close();
    await closeSim();
  };
  const request = (grant: TokenGrant): Promise<TokenSet> => oauth.requestTokens(client, endpoints, grant);
  return {
    sim,
    oauth,
    client,
    endpoints,
    login: (password = USER.password) => request({ type: 'password', username: USER.username, password }),
    refresh: (refreshToken) => request({ type: 'refresh_token', refreshToken }),
  };
}

async function rejection(promise: Promise<unknown>): Promise<TokenError> {
  const outcome = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(outcome).toBeInstanceOf(TokenError);
  return outcome as TokenError;
}

/** An API call at the simulator with the access token, as a FOLIO client sends it. */
async function apiStatus(sim: FolioSimulator, headers: Record<string, string>): Promise<number> {
  const res = await fetch(`${sim.usersEndpoint}?limit=1`, {
    headers: { 'x-okapi-tenant': TENANT, ...headers },
  });
  await res.arrayBuffer();
  return res.status;
}

describe('FOLIO adapter: endpoints from the folio preset', () => {
  it.each([
    { pathPrefix: '', refresh: '/authn/refresh', login: '/authn/login-with-expiry' },
    { pathPrefix: '/okapi', refresh: '/okapi/authn/refresh', login: '/okapi/authn/login-with-expiry' },
  ])('gateway path "$pathPrefix": token endpoint $refresh, login $login', async (row) => {
    const { sim, client, endpoints, login } = await setup({ pathPrefix: row.pathPrefix });
    expect(endpoints.tokenEndpoint).toBe(`${sim.origin}${row.refresh}`);
    expect(folioLoginURL(endpoints.tokenEndpoint)).toBe(`${sim.origin}${row.login}`);
    expect(client.protocol).toEqual({ kind: 'folio', tenant: TENANT });
    await login();
    expect(sim.stats().logins).toBe(1);
  });
});

describe('FOLIO adapter: login and refresh', () => {
  it('logs in: the tokens come from the cookies, the lifetimes from their Max-Age', async () => {
    const { sim, login } = await setup();
    const tokens = await login();
    expect(tokens).toEqual({
      accessToken: expect.any(String) as string,
      refreshToken: expect.any(String) as string,
      tokenType: 'Bearer',
      expiresInSec: 6,
      refreshExpiresInSec: 6048,
    });
    expect(sim.refreshTokenState(tokens.refreshToken ?? '')).toBe('valid');
    // The access token is what FOLIO clients send, as x-okapi-token or as the folioAccessToken cookie.
    expect(await apiStatus(sim, { 'x-okapi-token': tokens.accessToken })).toBe(200);
    expect(await apiStatus(sim, { cookie: `folioAccessToken=${tokens.accessToken}` })).toBe(200);
    expect(sim.stats()).toMatchObject({ logins: 1, failedLogins: 0 });
  });

  it('refreshes 20 times: each answer rotates the token and uses the presented one up', async () => {
    const { sim, login, refresh } = await setup();
    let current = (await login()).refreshToken ?? '';
    for (let i = 0; i < 20; i++) {
      await fx.clock.advance(4_000);
      const next = await refresh(current);
      expect(next.refreshToken).not.toBe(current);
      expect(next.expiresInSec).toBe(6);
      expect(sim.refreshTokenState(current)).toBe('used');
      expect(await apiStatus(sim, { 'x-okapi-token': next.accessToken })).toBe(200);
      current = next.refreshToken ?? '';
    }
    expect(sim.validRefreshTokens(USER.username)).toEqual([current]);
    expect(sim.stats()).toMatchObject({ logins: 1, refreshes: 20, reuses: 0, refusedRefreshes: 0 });
  });
});

interface FailureRow {
  name: string;
  options?: Parameters<typeof setup>[0];
  /** Whether the row starts from a login (default true): `s.token` is its refresh token. */
  session?: false;
  /** Runs the failing call. */
  act: (s: Setup & { token: string }) => Promise<unknown>;
  code: TokenError['code'];
  reason: string;
  httpStatus?: number;
  folioCode?: string;
  /** What the simulator must have seen or kept. */
  after?: (s: Setup & { token: string }) => void;
}

const failures: FailureRow[] = [
  {
    name: 'a wrong password',
    act: (s) => s.login('wrong-password'),
    code: 'configuration',
    reason: 'InvalidCredentials',
    httpStatus: 422,
    folioCode: 'wrong.username.or.wrong.password.or.account.blocked',
    after: (s) => {
      expect(s.sim.stats().failedLogins).toBe(1);
    },
  },
  {
    name: 'a user the lockout deactivated (the right password)',
    options: { lockout: { attempts: 1, timeoutMinutes: 10 } },
    act: async (s) => {
      await s.login('wrong-password').catch(() => undefined);
      return s.login();
    },
    code: 'configuration',
    reason: 'InvalidCredentials',
    httpStatus: 422,
    folioCode: 'wrong.username.or.wrong.password.or.account.blocked',
  },
  {
    name: 'a refresh token used before (the reuse revokes the whole chain)',
    act: async (s) => {
      await s.refresh(s.token);
      return s.refresh(s.token);
    },
    code: 'chain_broken',
    reason: 'RefreshTokenRejected',
    httpStatus: 422,
    folioCode: 'token.refresh.unprocessable',
    after: (s) => {
      expect(s.sim.stats().reuses).toBe(1);
      expect(s.sim.validRefreshTokens(USER.username)).toEqual([]);
    },
  },
  {
    name: 'a chain revoked at FOLIO',
    act: (s) => {
      s.sim.revokeAll(USER.username);
      return s.refresh(s.token);
    },
    code: 'chain_broken',
    reason: 'RefreshTokenRejected',
    httpStatus: 422,
    folioCode: 'token.refresh.unprocessable',
  },
  {
    name: 'an expired refresh token',
    act: async (s) => {
      await fx.clock.advance(6048 * 1000);
      return s.refresh(s.token);
    },
    code: 'chain_broken',
    reason: 'RefreshTokenRejected',
    httpStatus: 422,
  },
  {
    name: 'a tenant Okapi does not know',
    options: { tenant: 'nosuch' },
    session: false,
    act: (s) => s.login(),
    code: 'configuration',
    reason: 'UnknownTenant',
    httpStatus: 400,
  },
  {
    name: 'a gateway outage (503) on refresh, which consumes nothing',
    act: (s) => {
      s.sim.faults.failNext(1, 503, '/authn/refresh');
      return s.refresh(s.token);
    },
    code: 'transient',
    reason: 'ProviderUnavailable',
    httpStatus: 503,
    after: (s) => {
      expect(s.sim.refreshTokenState(s.token)).toBe('valid');
    },
  },
  {
    name: 'a rate limit (429) on login',
    act: (s) => {
      s.sim.faults.failNext(1, 429, '/authn/login-with-expiry');
      return s.login();
    },
    code: 'transient',
    reason: 'RateLimited',
    httpStatus: 429,
  },
  {
    name: 'a refresh answer lost after FOLIO rotated',
    act: (s) => {
      s.sim.faults.dropNext(1, '/authn/refresh');
      return s.refresh(s.token);
    },
    code: 'in_doubt',
    reason: 'ResponseLost',
    after: (s) => {
      expect(s.sim.refreshTokenState(s.token)).toBe('used');
    },
  },
  {
    name: 'a refresh answer too late (the request timed out after FOLIO rotated)',
    options: { transport: { timeoutMs: 300 } },
    act: (s) => {
      s.sim.faults.delayNext(1, 1_000, '/authn/refresh');
      return s.refresh(s.token);
    },
    code: 'in_doubt',
    reason: 'ResponseLost',
  },
  {
    name: 'a login answer lost (a login consumes nothing: retried later)',
    act: (s) => {
      s.sim.faults.dropNext(1, '/authn/login-with-expiry');
      return s.login();
    },
    code: 'transient',
    reason: 'ConnectionReset',
  },
  {
    name: 'a refresh answered 201 without the cookies',
    act: (s) => {
      s.sim.faults.failNext(1, 201, '/authn/refresh', '{}');
      return s.refresh(s.token);
    },
    code: 'in_doubt',
    reason: 'MalformedResponse',
    httpStatus: 201,
  },
  {
    name: 'a login answered 201 without the cookies',
    act: (s) => {
      s.sim.faults.failNext(1, 201, '/authn/login-with-expiry', '{}');
      return s.login();
    },
    code: 'transient',
    reason: 'MalformedResponse',
    httpStatus: 201,
  },
  {
    name: 'a redirect (never followed)',
    act: (s) => {
      s.sim.faults.failNext(1, 302, '/authn/refresh');
      return s.refresh(s.token);
    },
    code: 'configuration',
    reason: 'UnexpectedRedirect',
    httpStatus: 302,
  },
  {
    name: 'a base URL without FOLIO behind it',
    options: { pathPrefix: '/okapi' },
    act: (s) =>
      s.oauth.requestTokens(
        s.client,
        { tokenEndpoint: `${s.sim.origin}/authn/refresh` },
        { type: 'refresh_token', refreshToken: s.token },
      ),
    code: 'configuration',
    reason: 'EndpointNotFound',
    httpStatus: 404,
  },
];

describe('FOLIO adapter: failures', () => {
  it.each(failures)('$name: $code $reason', async (row) => {
    const s = await setup(row.options);
    const token = row.session === false ? '' : ((await s.login()).refreshToken ?? '');
    const context = { ...s, token };
    const err = await rejection(row.act(context));
    expect({ code: err.code, reason: err.reason }).toEqual({ code: row.code, reason: row.reason });
    expect(err.httpStatus).toBe(row.httpStatus);
    if (row.folioCode !== undefined) {
      expect(err.oauthError).toBe(row.folioCode);
      expect(err.message).toContain(`error=${row.folioCode}`);
    }
    for (const secret of [USER.password, token]) {
      if (secret !== '') expect(JSON.stringify([err.message, err.toJSON()])).not.toContain(secret);
    }
    row.after?.(context);
  });

  it.each<{
    name: string;
    transport: Partial<TransportOptions>;
    client: Partial<ClientConfig>;
    password?: string;
    code: TokenError['code'];
    reason: string;
  }>([
    {
      name: 'a URL the endpoint policy refuses',
      transport: { policy: { allowInsecureHttp: false } },
      client: {},
      code: 'insecure_endpoint',
      reason: 'InsecureEndpoint',
    },
    {
      name: 'no tenant',
      transport: {},
      client: { protocol: { kind: 'folio', tenant: '' } },
      code: 'configuration',
      reason: 'MissingTenant',
    },
    {
      name: 'an empty password',
      transport: {},
      client: {},
      password: '',
      code: 'configuration',
      reason: 'MissingCredential',
    },
  ])('sends nothing for $name', async (row) => {
    const sim = await fx.start({ users: [USER] });
    const oauth = new OAuthClient({
      clock: fx.clock,
      transport: { policy: { allowInsecureHttp: true }, ...row.transport },
    });
    const client: ClientConfig = {
      clientID: 'folio',
      authMethod: 'none',
      protocol: { kind: 'folio', tenant: TENANT },
      ...row.client,
    };
    const err = await rejection(
      oauth.requestTokens(
        client,
        { tokenEndpoint: sim.refreshEndpoint },
        {
          type: 'password',
          username: USER.username,
          password: row.password ?? USER.password,
        },
      ),
    );
    await oauth.close();
    expect({ code: err.code, reason: err.reason }).toEqual({ code: row.code, reason: row.reason });
    expect(sim.stats()).toMatchObject({ logins: 0, failedLogins: 0 });
  });

  it('offers no client credentials grant and no introspection; a revocation URL set by hand gets nothing', async () => {
    const { sim, oauth, client, endpoints, login } = await setup();
    const { refreshToken = '', accessToken } = await login();
    const grant = await rejection(oauth.requestTokens(client, endpoints, { type: 'client_credentials' }));
    expect({ code: grant.code, reason: grant.reason }).toEqual({
      code: 'configuration',
      reason: 'UnsupportedGrantType',
    });
    // A revocation or introspection URL set by hand must not receive FOLIO's refresh token (an RFC
    // 7009 form there would be a refresh without the cookie): the revocation is mod-login's logout.
    const trap = {
      ...endpoints,
      revocationEndpoint: sim.refreshEndpoint,
      introspectionEndpoint: sim.refreshEndpoint,
    };
    expect(await oauth.introspect(client, trap, refreshToken)).toBe('unknown');
    // An access token cannot be revoked at FOLIO: nothing is sent for one.
    const access = await rejection(oauth.revoke(client, trap, accessToken, 'access_token'));
    expect(access.reason).toBe('RevocationNotSupported');
    expect(sim.stats()).toMatchObject({ logouts: 0, refusedLogouts: 0 });
    await oauth.revoke(client, trap, refreshToken);
    expect(sim.refreshTokenState(refreshToken)).toBe('logged-out');
    expect(sim.stats()).toMatchObject({ logouts: 1, refreshes: 0, refusedRefreshes: 0, parseFailures: 0 });
  });
});

describe('FOLIO adapter: logout (revokeOnDelete)', () => {
  it('sends POST <gateway>/authn/logout with the tenant and the refresh cookie, and nothing else', async () => {
    const sent: TransportRequest[] = [];
    const transport = {
      request: (req: TransportRequest) => {
        sent.push(req);
        return Promise.resolve({
          url: new URL(req.url),
          status: 204,
          headers: new Headers(),
          body: new Uint8Array(),
        });
      },
    } as unknown as Transport;
    const client: ClientConfig = {
      clientID: 'folio-circulation-sync',
      clientSecret: 'never-sent',
      authMethod: 'none',
      protocol: { kind: 'folio', tenant: TENANT },
    };
    const endpoints = {
      tokenEndpoint: 'https://folio.example.org/okapi/authn/refresh',
      revocationEndpoint: 'https://elsewhere.example.org/revoke',
    };
    const signal = new AbortController().signal;
    await logoutFolioRefreshToken(transport, client, endpoints, 'R1', 0, signal);
    expect(sent).toEqual([
      {
        purpose: 'revocation',
        method: 'POST',
        url: 'https://folio.example.org/okapi/authn/logout',
        // No access token (header or cookie): without the refresh cookie mod-login would log every
        // session of that access token's user out.
        headers: {
          accept: 'application/json',
          'user-agent': 'oauth-token-operator',
          'x-okapi-tenant': TENANT,
          cookie: 'folioRefreshToken=R1',
        },
        signal,
      },
    ]);
    expect(folioLogoutURL(endpoints.tokenEndpoint)).toBe('https://folio.example.org/okapi/authn/logout');
  });

  it('logs out exactly the presented refresh token: other sessions keep theirs, and it never refreshes again', async () => {
    const { sim, oauth, client, endpoints, login, refresh } = await setup({ pathPrefix: '/okapi' });
    const other = await login();
    const mine = await login();
    await oauth.revoke(client, endpoints, mine.refreshToken ?? '');
    expect(sim.refreshTokenState(mine.refreshToken ?? '')).toBe('logged-out');
    expect(sim.validRefreshTokens(USER.username)).toEqual([other.refreshToken]);
    expect(sim.stats()).toMatchObject({ logouts: 1, logoutsAll: 0, refusedLogouts: 0, revocations: 0 });
    // FOLIO's access tokens are self-contained: the last one stays valid until it expires.
    expect(await apiStatus(sim, { 'x-okapi-token': mine.accessToken })).toBe(200);
    const after = await rejection(refresh(mine.refreshToken ?? ''));
    expect({ code: after.code, reason: after.reason }).toEqual({
      code: 'chain_broken',
      reason: 'RefreshTokenRejected',
    });
  });

  it.each([
    {
      name: 'a token already used',
      spoil: async (s: Setup, token: string) => {
        await s.refresh(token);
      },
    },
    { name: 'a token already expired', spoil: () => fx.clock.advance(6048 * 1000) },
    {
      name: 'a chain already revoked at FOLIO',
      spoil: (s: Setup) => {
        s.sim.revokeAll(USER.username);
        return Promise.resolve();
      },
    },
  ])('counts $name as revoked (FOLIO answers 204)', async (row) => {
    const s = await setup();
    const token = (await s.login()).refreshToken ?? '';
    await row.spoil(s, token);
    await s.oauth.revoke(s.client, s.endpoints, token);
    expect(s.sim.stats()).toMatchObject({ logouts: 1, refusedLogouts: 0, reuses: 0 });
  });

  it.each<{
    name: string;
    options?: Parameters<typeof setup>[0];
    /** Prepares the failure; returns the token to log out (default: the login's). */
    arrange?: (s: Setup, token: string) => string | undefined;
    code: TokenError['code'];
    reason: string;
    httpStatus?: number;
    folioCode?: string;
  }>([
    {
      // The same 422 covers a failure of mod-authtoken, so it is not counted as revoked.
      name: 'a token FOLIO cannot read (never issued)',
      arrange: () => 'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..bm90.aXNzdWVk.YnlfZm9saW8',
      code: 'transient',
      reason: 'LogoutUnprocessable',
      httpStatus: 422,
      folioCode: 'token.logout.unprocessable',
    },
    {
      name: 'a gateway outage (503)',
      arrange: (s) => {
        s.sim.faults.failNext(1, 503, '/authn/logout');
        return undefined;
      },
      code: 'transient',
      reason: 'ProviderUnavailable',
      httpStatus: 503,
    },
    {
      name: 'a lost answer (a logout consumes nothing the operator needs: not in doubt)',
      arrange: (s) => {
        s.sim.faults.dropNext(1, '/authn/logout');
        return undefined;
      },
      code: 'transient',
      reason: 'ConnectionReset',
    },
    {
      name: 'a redirect (never followed)',
      arrange: (s) => {
        s.sim.faults.failNext(1, 302, '/authn/logout');
        return undefined;
      },
      code: 'configuration',
      reason: 'UnexpectedRedirect',
      httpStatus: 302,
    },
    {
      name: 'a tenant Okapi does not know',
      arrange: (s) => {
        s.client.protocol = { kind: 'folio', tenant: 'nosuch' };
        return undefined;
      },
      code: 'configuration',
      reason: 'UnknownTenant',
      httpStatus: 400,
    },
    {
      name: 'a base URL without FOLIO behind it',
      options: { pathPrefix: '/okapi' },
      arrange: (s) => {
        s.endpoints.tokenEndpoint = `${s.sim.origin}/authn/refresh`;
        return undefined;
      },
      code: 'configuration',
      reason: 'EndpointNotFound',
      httpStatus: 404,
    },
  ])('$name: $code $reason', async (row) => {
    const s = await setup(row.options);
    const issued = (await s.login()).refreshToken ?? '';
    const token = row.arrange?.(s, issued) ?? issued;
    const err = await rejection(s.oauth.revoke(s.client, s.endpoints, token));
    expect({ code: err.code, reason: err.reason }).toEqual({ code: row.code, reason: row.reason });
    expect(err.httpStatus).toBe(row.httpStatus);
    if (row.folioCode !== undefined) {
      expect(err.oauthError).toBe(row.folioCode);
      expect(err.message).toContain(`error=${row.folioCode}`);
    }
    expect(JSON.stringify([err.message, err.toJSON()])).not.toContain(token);
    expect(JSON.stringify([err.message, err.toJSON()])).not.toContain(issued);
    // Nothing but the presented token was at stake: the user's chain was not revoked wholesale.
    expect(s.sim.stats()).toMatchObject({ logoutsAll: 0, revocations: 0, reuses: 0 });
  });

  it("ends at the caller's signal", async () => {
    const s = await setup();
    const token = (await s.login()).refreshToken ?? '';
    s.sim.faults.delayNext(1, 5_000, '/authn/logout');
    const started = performance.now();
    const err = await rejection(
      s.oauth.revoke(s.client, s.endpoints, token, 'refresh_token', AbortSignal.timeout(100)),
    );
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(err.code).toBe('transient');
  });

  it.each<{
    name: string;
    transport: Partial<TransportOptions>;
    client?: Partial<ClientConfig>;
    token?: string;
    code: TokenError['code'];
    reason: string;
  }>([
    {
      name: 'a URL the endpoint policy refuses',
      transport: { policy: { allowInsecureHttp: false } },
      code: 'insecure_endpoint',
      reason: 'InsecureEndpoint',
    },
    {
      name: 'no tenant',
      transport: {},
      client: { protocol: { kind: 'folio', tenant: '' } },
      code: 'configuration',
      reason: 'MissingTenant',
    },
    // Without a Cookie header mod-login would log out every session of the caller instead.
    {
      name: 'an empty refresh token',
      transport: {},
      token: '',
      code: 'configuration',
      reason: 'MissingCredential',
    },
  ])('sends nothing for $name', async (row) => {
    const sim = await fx.start({ users: [USER] });
    const requests: string[] = [];
    const oauth = new OAuthClient({
      clock: fx.clock,
      transport: {
        policy: { allowInsecureHttp: true },
        onRequest: (host, status, _ms, purpose) => requests.push(`${purpose} ${host} ${String(status)}`),
        ...row.transport,
      },
    });
    const client: ClientConfig = {
      clientID: 'folio',
      authMethod: 'none',
      protocol: { kind: 'folio', tenant: TENANT },
      ...row.client,
    };
    const err = await rejection(
      oauth.revoke(client, { tokenEndpoint: sim.refreshEndpoint }, row.token ?? 'R-canary-7f3a'),
    );
    await oauth.close();
    expect({ code: err.code, reason: err.reason }).toEqual({ code: row.code, reason: row.reason });
    expect(err.message).not.toContain('R-canary-7f3a');
    expect(requests).toEqual([]);
    expect(sim.stats()).toMatchObject({ logouts: 0, logoutsAll: 0, refusedLogouts: 0 });
  });
});

describe('FOLIO adapter: the cookies of an answer', () => {
  const NOW = Date.parse('2026-03-01T00:00:00Z');
  const at = (seconds: number): string => new Date(NOW + seconds * 1000).toISOString();
  const body = JSON.stringify({ accessTokenExpiration: at(300), refreshTokenExpiration: at(3600) });
  const attrs = 'Path=/; Secure; HTTPOnly; SameSite=Lax';
  it.each([
    {
      name: 'Max-Age wins over the stated instants (it is immune to clock skew)',
      cookies: [
        `folioAccessToken=A.B.C; Max-Age=600; ${attrs}`,
        `folioRefreshToken=R1; Max-Age=604800; ${attrs}`,
      ],
      expect: { accessToken: 'A.B.C', refreshToken: 'R1', expiresInSec: 600, refreshExpiresInSec: 604800 },
    },
    {
      name: 'without Max-Age, the instants of the body',
      cookies: [`folioAccessToken=A; ${attrs}`, `folioRefreshToken=R; Path=/authn`],
      expect: { accessToken: 'A', refreshToken: 'R', expiresInSec: 300, refreshExpiresInSec: 3600 },
    },
    {
      name: 'without either, Expires',
      cookies: [
        `folioAccessToken=A; Expires=${new Date(NOW + 120_000).toUTCString()}`,
        `folioRefreshToken=R; Expires=${new Date(NOW + 240_000).toUTCString()}`,
      ],
      body: '',
      expect: { accessToken: 'A', refreshToken: 'R', expiresInSec: 120, refreshExpiresInSec: 240 },
    },
    {
      name: 'no lifetime at all: left to the assumed lifetime',
      cookies: ['folioAccessToken=A', 'folioRefreshToken=R'],
      body: 'not json',
      expect: { accessToken: 'A', refreshToken: 'R' },
    },
    {
      name: 'a later cookie of the same name wins; other cookies are ignored',
      cookies: ['folioAccessToken=old', 'JSESSIONID=x', 'folioAccessToken=new', 'folioRefreshToken=R'],
      body: '',
      expect: { accessToken: 'new', refreshToken: 'R' },
    },
    {
      name: 'no refresh cookie: nothing usable',
      cookies: ['folioAccessToken=A; Max-Age=600'],
      expect: undefined,
    },
    {
      name: 'an empty access cookie: nothing usable',
      cookies: ['folioAccessToken=', 'folioRefreshToken=R'],
      expect: undefined,
    },
  ])('$name', (row) => {
    const tokens = folioTokensFrom(row.cookies, row.body ?? body, NOW);
    expect(tokens).toEqual(row.expect === undefined ? undefined : { tokenType: 'Bearer', ...row.expect });
  });
});

describe("FOLIO adapter: FOLIO's error answers", () => {
  const errors = (code: string, message: string): string =>
    JSON.stringify({ errors: [{ message, type: 'error', code, parameters: [] }] });
  it.each([
    {
      status: 400,
      body: errors('token.parse.failure', 'Bad request'),
      grant: 'refresh_token',
      reason: 'InvalidRequest',
    },
    { status: 400, body: 'You must provide a password', grant: 'password', reason: 'InvalidRequest' },
    { status: 400, body: 'No such Tenant diku2', grant: 'password', reason: 'UnknownTenant' },
    { status: 401, body: 'Invalid token', grant: 'refresh_token', reason: 'Unauthorized' },
    { status: 403, body: 'Access requires permission: x', grant: 'password', reason: 'Forbidden' },
    { status: 405, body: '', grant: 'password', reason: 'EndpointNotFound' },
    { status: 418, body: '', grant: 'password', reason: 'UnexpectedResponse' },
  ] as const)('$status $body ($grant): configuration $reason', (row) => {
    const failure = classifyFolioFailure({
      grant: row.grant,
      httpStatus: row.status,
      body: row.body,
      nowMs: 0,
    });
    expect({ code: failure.code, reason: failure.reason }).toEqual({
      code: 'configuration',
      reason: row.reason,
    });
    expect(failure.message).toContain(`HTTP ${row.status}`);
  });

  it('keeps a secret FOLIO echoes out of the message', () => {
    const failure = classifyFolioFailure({
      grant: 'password',
      httpStatus: 422,
      body: errors(
        'wrong.username.or.wrong.password.or.account.blocked',
        `bad password ${USER.password} for ${USER.username}`,
      ),
      redact: [USER.password, USER.username],
      nowMs: 0,
    });
    expect(failure.reason).toBe('InvalidCredentials');
    expect(failure.message).not.toContain(USER.password);
    expect(failure.message).not.toContain(USER.username);
    expect(failure.message).toContain('[redacted]');
  });
});

describe('FOLIO adapter: token sizes', () => {
  // The Transport's HTTP client refuses header blocks this large before they get here; the adapter
  // still refuses them itself, as the OAuth grants do, so a transport that allows more cannot fill
  // the state Secret. A stand-in Transport hands the adapter such an answer.
  const big = 'x'.repeat(MAX_TOKEN_BYTES + 1);
  const answering = (setCookies: string[]): { transport: Transport; sent: TransportRequest[] } => {
    const sent: TransportRequest[] = [];
    const request = (req: TransportRequest) => {
      sent.push(req);
      const headers = new Headers({ 'content-type': 'application/json' });
      for (const cookie of setCookies) headers.append('set-cookie', cookie);
      return Promise.resolve({ url: new URL(req.url), status: 201, headers, body: new Uint8Array() });
    };
    return { transport: { request } as unknown as Transport, sent };
  };
  const client: ClientConfig = {
    clientID: 'folio',
    authMethod: 'none',
    protocol: { kind: 'folio', tenant: TENANT },
  };
  const endpoints = { tokenEndpoint: 'https://folio.example.org/okapi/authn/refresh' };
  it.each([
    {
      name: 'an oversized access token after a refresh: the presented token is used up, chain broken',
      cookies: [`folioAccessToken=${big}`, 'folioRefreshToken=R2'],
      grant: { type: 'refresh_token', refreshToken: 'R1' } as const,
      code: 'chain_broken',
    },
    {
      name: 'an oversized refresh token after a login: nothing used up, a configuration problem',
      cookies: ['folioAccessToken=A', `folioRefreshToken=${big}`],
      grant: { type: 'password', username: USER.username, password: USER.password } as const,
      code: 'configuration',
    },
    {
      name: 'tokens at the limit are kept',
      cookies: [`folioAccessToken=${big.slice(1)}`, `folioRefreshToken=${big.slice(1)}`],
      grant: { type: 'refresh_token', refreshToken: 'R1' } as const,
      code: undefined,
    },
  ])('$name', async (row) => {
    const { transport, sent } = answering(row.cookies);
    const outcome = await requestFolioTokens(transport, client, endpoints, row.grant, 0).then(
      (tokens) => tokens,
      (e: unknown) => e,
    );
    expect(sent.map((r) => [r.method, r.url, r.headers?.['x-okapi-tenant']])).toEqual([
      [
        'POST',
        row.grant.type === 'password'
          ? 'https://folio.example.org/okapi/authn/login-with-expiry'
          : endpoints.tokenEndpoint,
        TENANT,
      ],
    ]);
    if (row.code === undefined) {
      expect(outcome).toMatchObject({ accessToken: big.slice(1), refreshToken: big.slice(1) });
    } else {
      expect(outcome).toBeInstanceOf(TokenError);
      expect({ code: (outcome as TokenError).code, reason: (outcome as TokenError).reason }).toEqual({
        code: row.code,
        reason: 'TokenTooLarge',
      });
    }
  });
});
