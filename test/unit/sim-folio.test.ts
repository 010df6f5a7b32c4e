// The FOLIO simulator (test/simulators/folio.ts) driven over HTTP with plain fetch, on a fake clock
// with time compressed 100-fold: the 600 s access token lives 6 s, the 7-day refresh token 6,048 s.
import { describe, expect, it } from 'vitest';
import { startFolioSimulator, type FolioSimulator, type FolioSimulatorOptions } from '../simulators/folio.ts';
import { simulatorFixture } from '../simulators/sim-fixture.ts';

const SCALE = 0.01;
const TENANT = 'diku';
const ALICE = { username: 'alice', password: 'alice-pw' };
const BOB = { username: 'bob', password: 'bob-pw' };

const fx = simulatorFixture(startFolioSimulator, Date.parse('2026-01-01T00:00:00Z'), SCALE);
const simulator = (options?: FolioSimulatorOptions): Promise<FolioSimulator> =>
  fx.start({ users: [ALICE, BOB], ...options });

interface Answer {
  status: number;
  setCookies: string[];
  text: string;
}

async function call(url: string, init: RequestInit): Promise<Answer> {
  const res = await fetch(url, init);
  return { status: res.status, setCookies: res.headers.getSetCookie(), text: await res.text() };
}

function loginAs(
  sim: FolioSimulator,
  credentials: Record<string, unknown>,
  tenant: string | null = TENANT,
): Promise<Answer> {
  return call(sim.loginEndpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(tenant === null ? {} : { 'x-okapi-tenant': tenant }),
    },
    body: JSON.stringify(credentials),
  });
}

function refreshWith(sim: FolioSimulator, cookieHeader: string | undefined): Promise<Answer> {
  return call(sim.refreshEndpoint, {
    method: 'POST',
    headers: { 'x-okapi-tenant': TENANT, ...(cookieHeader === undefined ? {} : { cookie: cookieHeader }) },
  });
}

/** The value of a cookie set by an answer. */
function cookieValue(answer: Answer, name: string): string {
  const set = answer.setCookies.find((c) => c.startsWith(`${name}=`)) ?? '';
  return set.slice(name.length + 1).split(';')[0] ?? '';
}

async function session(sim: FolioSimulator, who = ALICE): Promise<{ access: string; refresh: string }> {
  const answer = await loginAs(sim, who);
  expect(answer.status).toBe(201);
  return {
    access: cookieValue(answer, 'folioAccessToken'),
    refresh: cookieValue(answer, 'folioRefreshToken'),
  };
}

function errorCode(answer: Answer): unknown {
  return (JSON.parse(answer.text) as { errors: { code: string }[] }).errors[0]?.code;
}

async function listUsers(sim: FolioSimulator, headers: Record<string, string>): Promise<number> {
  return (await call(`${sim.usersEndpoint}?limit=1`, { headers })).status;
}

describe('FOLIO simulator: login', () => {
  it.each([
    { timeScale: 1, sameSite: undefined, access: 600, refresh: 604_800, attr: 'Lax' },
    { timeScale: SCALE, sameSite: 'Strict' as const, access: 6, refresh: 6048, attr: 'Strict' },
  ])(
    'answers 201 with the tokens only in cookies (scale $timeScale, SameSite=$attr)',
    async ({ timeScale, sameSite, access, refresh, attr }) => {
      const sim = await simulator({ timeScale, sameSite });
      const answer = await loginAs(sim, ALICE);
      expect(answer.status).toBe(201);
      const start = fx.clock.now();
      expect(JSON.parse(answer.text)).toEqual({
        accessTokenExpiration: new Date(start + access * 1000).toISOString().replace('.000Z', 'Z'),
        refreshTokenExpiration: new Date(start + refresh * 1000).toISOString().replace('.000Z', 'Z'),
      });
      const at = cookieValue(answer, 'folioAccessToken');
      const rt = cookieValue(answer, 'folioRefreshToken');
      expect(answer.setCookies).toEqual([
        `folioAccessToken=${at}; Max-Age=${access}; Expires=${new Date(start + access * 1000).toUTCString()}; Path=/; Secure; HTTPOnly; SameSite=${attr}`,
        `folioRefreshToken=${rt}; Max-Age=${refresh}; Expires=${new Date(start + refresh * 1000).toUTCString()}; Path=/authn; Secure; HTTPOnly; SameSite=${attr}`,
      ]);
      expect(answer.text).not.toContain(at);
    },
  );

  it("takes the lifetimes from the user's tenant", async () => {
    const sim = await simulator({
      tenants: { diku: {}, short: { accessTokenSeconds: 300, refreshTokenSeconds: 3600 } },
      users: [{ ...ALICE, tenant: 'short' }],
    });
    const answer = await loginAs(sim, ALICE, 'short');
    expect(answer.setCookies.map((c) => /Max-Age=(\d+)/.exec(c)?.[1])).toEqual(['3', '36']);
  });

  it.each([
    { name: 'a wrong password', body: { ...ALICE, password: 'nope' }, status: 422 },
    { name: 'an unknown user', body: { username: 'carol', password: 'x' }, status: 422 },
    { name: 'no password', body: { username: ALICE.username }, status: 400 },
    { name: 'no username', body: { password: ALICE.password }, status: 400 },
  ])('answers $name with $status', async ({ body, status }) => {
    const sim = await simulator();
    const answer = await loginAs(sim, body);
    expect(answer.status).toBe(status);
    expect(answer.setCookies).toEqual([]);
    if (status === 422) expect(errorCode(answer)).toBe('wrong.username.or.wrong.password.or.account.blocked');
  });

  // mod-login's LoginAttemptsHelper: login.fail.attempts (5) within login.fail.timeout (10 min,
  // 6 s at this scale) of each other deactivate the user.
  it.each([
    { name: 'five wrong passwords in a row deactivate the user', gapsMs: [0, 0, 0, 0], active: false },
    { name: 'a pause past the timeout starts the count again', gapsMs: [0, 0, 6001, 0], active: true },
    { name: 'a successful login in between resets the count', gapsMs: [0, 0, 0, 0], login: 2, active: true },
    { name: 'with the lockout off nobody is deactivated', gapsMs: [0, 0, 0, 0], off: true, active: true },
  ])('lockout: $name', async ({ gapsMs, login, off, active }) => {
    const sim = await simulator(off === true ? { lockout: false } : {});
    const wrong = { ...ALICE, password: 'nope' };
    expect((await loginAs(sim, wrong)).status).toBe(422);
    for (const [i, gap] of gapsMs.entries()) {
      await fx.clock.advance(gap);
      if (login === i) expect((await loginAs(sim, ALICE)).status).toBe(201);
      expect((await loginAs(sim, wrong)).status).toBe(422);
    }
    expect(sim.isActive(ALICE.username)).toBe(active);
    const right = await loginAs(sim, ALICE);
    expect(right.status).toBe(active ? 201 : 422);
    if (!active) expect(errorCode(right)).toBe('wrong.username.or.wrong.password.or.account.blocked');
    expect(sim.stats()).toMatchObject({ failedLogins: 5 + (active ? 0 : 1), deactivations: active ? 0 : 1 });
    expect(sim.isActive(BOB.username)).toBe(true);
  });

  it('routes nothing without a known tenant', async () => {
    const sim = await simulator();
    expect((await loginAs(sim, ALICE, null)).status).toBe(404);
    expect((await loginAs(sim, ALICE, 'other')).status).toBe(400);
    // Only the 404 is Okapi finding no module; the unknown tenant is refused by name.
    expect(sim.stats()).toMatchObject({ unrouted: 1, logins: 0, failedLogins: 0 });
  });

  it('moves routes and cookie paths under pathPrefix', async () => {
    const sim = await simulator({ pathPrefix: '/okapi' });
    expect(sim.loginEndpoint).toBe(`${sim.origin}/okapi/authn/login-with-expiry`);
    const answer = await loginAs(sim, ALICE);
    expect(answer.setCookies.map((c) => /Path=([^;]+)/.exec(c)?.[1])).toEqual(['/okapi/', '/okapi/authn']);
    const rootLogin = await call(`${sim.origin}/authn/login-with-expiry`, {
      method: 'POST',
      headers: { 'x-okapi-tenant': TENANT },
      body: JSON.stringify(ALICE),
    });
    expect(rootLogin.status).toBe(404);
    expect(rootLogin.text).toBe('No suitable module found for path /authn/login-with-expiry');
    expect(sim.stats()).toMatchObject({ unrouted: 1, logins: 1 });
  });
});

describe('FOLIO simulator: refresh', () => {
  it('answers 201 with new cookies and uses the presented token up', async () => {
    const sim = await simulator();
    const first = await session(sim);
    const answer = await refreshWith(
      sim,
      `folioAccessToken=${first.access}; folioRefreshToken=${first.refresh}`,
    );
    expect(answer.status).toBe(201);
    expect(Object.keys(JSON.parse(answer.text) as object)).toEqual([
      'accessTokenExpiration',
      'refreshTokenExpiration',
    ]);
    const next = cookieValue(answer, 'folioRefreshToken');
    expect(next).not.toBe(first.refresh);
    expect(sim.refreshTokenState(first.refresh)).toBe('used');
    expect(sim.validRefreshTokens(ALICE.username)).toEqual([next]);
  });

  it.each([
    { name: 'no Cookie header', cookie: undefined },
    { name: 'an empty Cookie header', cookie: '' },
    { name: 'only the access cookie', cookie: 'folioAccessToken=a' },
    { name: 'a duplicated refresh cookie', cookie: 'folioRefreshToken=%RT%; folioRefreshToken=%RT%' },
    {
      name: 'a duplicated access cookie',
      cookie: 'folioAccessToken=a; folioRefreshToken=%RT%; folioAccessToken=a',
    },
  ])('answers $name with 400 token.parse.failure, consuming nothing', async ({ cookie }) => {
    const sim = await simulator();
    const { refresh } = await session(sim);
    const answer = await refreshWith(sim, cookie?.replaceAll('%RT%', refresh));
    expect(answer.status).toBe(400);
    expect(errorCode(answer)).toBe('token.parse.failure');
    expect(sim.refreshTokenState(refresh)).toBe('valid');
    expect(sim.stats().parseFailures).toBe(1);
  });

  it("revokes every refresh token of the user on a second use, and no one else's", async () => {
    const sim = await simulator();
    const first = await session(sim);
    const other = await session(sim);
    const bob = await session(sim, BOB);
    const rotated = await refreshWith(sim, `folioRefreshToken=${first.refresh}`);
    const successor = cookieValue(rotated, 'folioRefreshToken');
    const reuse = await refreshWith(sim, `folioRefreshToken=${first.refresh}`);
    expect(reuse.status).toBe(422);
    expect(errorCode(reuse)).toBe('token.refresh.unprocessable');
    expect(sim.refreshTokenState(successor)).toBe('revoked');
    expect(sim.refreshTokenState(other.refresh)).toBe('revoked');
    expect(sim.validRefreshTokens(ALICE.username)).toEqual([]);
    expect((await refreshWith(sim, `folioRefreshToken=${successor}`)).status).toBe(422);
    expect(sim.validRefreshTokens(BOB.username)).toEqual([bob.refresh]);
    // Access tokens are JWTs: mod-authtoken does not revoke them.
    const access = cookieValue(rotated, 'folioAccessToken');
    expect(await listUsers(sim, { 'x-okapi-tenant': TENANT, 'x-okapi-token': access })).toBe(200);
    expect(sim.stats()).toMatchObject({ reuses: 2, revocations: 2, refreshes: 1, refusedRefreshes: 2 });
  });

  it('refuses an expired refresh token without revoking the others', async () => {
    const sim = await simulator();
    const old = await session(sim);
    await fx.clock.advance(6048 * 1000 - 1000);
    const fresh = await session(sim);
    await fx.clock.advance(1000);
    expect(sim.refreshTokenState(old.refresh)).toBe('expired');
    expect((await refreshWith(sim, `folioRefreshToken=${old.refresh}`)).status).toBe(422);
    expect(sim.validRefreshTokens(ALICE.username)).toEqual([fresh.refresh]);
    expect(sim.stats()).toMatchObject({ reuses: 0, revocations: 0 });
  });

  it('turns a retry after a lost answer into a revocation (the answer was dropped after processing)', async () => {
    const sim = await simulator();
    const { refresh } = await session(sim);
    sim.faults.dropNext(1, '/authn/refresh');
    await expect(refreshWith(sim, `folioRefreshToken=${refresh}`)).rejects.toThrow();
    expect((await refreshWith(sim, `folioRefreshToken=${refresh}`)).status).toBe(422);
    expect(sim.validRefreshTokens(ALICE.username)).toEqual([]);
  });

  it('answers an injected 5xx without consuming the token', async () => {
    const sim = await simulator();
    const { refresh } = await session(sim);
    sim.faults.failNext(1, 504, '/authn/refresh');
    expect((await refreshWith(sim, `folioRefreshToken=${refresh}`)).status).toBe(504);
    expect((await refreshWith(sim, `folioRefreshToken=${refresh}`)).status).toBe(201);
  });
});

function logoutWith(
  sim: FolioSimulator,
  headers: Record<string, string>,
  url: string = sim.logoutEndpoint,
): Promise<Answer> {
  return call(url, { method: 'POST', headers: { 'x-okapi-tenant': TENANT, ...headers } });
}

describe('FOLIO simulator: logout', () => {
  it('logs out one refresh token: 204, both cookies cleared, no other session touched, the access token lives on', async () => {
    const sim = await simulator();
    const first = await session(sim);
    const other = await session(sim);
    const bob = await session(sim, BOB);
    const answer = await logoutWith(sim, { cookie: `folioRefreshToken=${first.refresh}` });
    expect(answer.status).toBe(204);
    expect(answer.text).toBe('');
    // mod-login's logoutResponse: fixed paths and SameSite=None, whatever the login cookies had.
    expect(answer.setCookies).toEqual([
      'folioAccessToken=; SameSite=None; Secure; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT',
      'folioRefreshToken=; SameSite=None; Secure; Path=/authn; Expires=Thu, 01 Jan 1970 00:00:00 GMT',
    ]);
    expect(sim.refreshTokenState(first.refresh)).toBe('logged-out');
    expect(sim.refreshTokensIn(ALICE.username, 'logged-out')).toEqual([first.refresh]);
    expect(sim.validRefreshTokens(ALICE.username)).toEqual([other.refresh]);
    expect(sim.validRefreshTokens(BOB.username)).toEqual([bob.refresh]);
    expect(await listUsers(sim, { 'x-okapi-tenant': TENANT, 'x-okapi-token': first.access })).toBe(200);
    expect(sim.stats()).toMatchObject({ logouts: 1, logoutsAll: 0, refusedLogouts: 0, revocations: 0 });
    // A logged-out token is a revoked one: presenting it is a reuse, which revokes the user's others.
    const reuse = await refreshWith(sim, `folioRefreshToken=${first.refresh}`);
    expect(reuse.status).toBe(422);
    expect(errorCode(reuse)).toBe('token.refresh.unprocessable');
    expect(sim.validRefreshTokens(ALICE.username)).toEqual([]);
    expect(sim.stats()).toMatchObject({ reuses: 1, revocations: 1 });
  });

  it.each([
    {
      name: 'used',
      spoil: async (sim: FolioSimulator, rt: string) => {
        expect((await refreshWith(sim, `folioRefreshToken=${rt}`)).status).toBe(201);
      },
      after: 'used',
    },
    {
      name: 'revoked',
      spoil: (sim: FolioSimulator) => {
        sim.revokeAll(ALICE.username);
        return Promise.resolve();
      },
      after: 'revoked',
    },
    {
      name: 'expired',
      spoil: () => fx.clock.advance(6048 * 1000),
      after: 'logged-out',
    },
  ] as const)('answers 204 for a token already $name, and revokes nothing else', async (row) => {
    const sim = await simulator();
    const { refresh } = await session(sim);
    await row.spoil(sim, refresh);
    const bob = await session(sim, BOB);
    const valid = sim.validRefreshTokens(ALICE.username);
    const before = sim.stats();
    expect((await logoutWith(sim, { cookie: `folioRefreshToken=${refresh}` })).status).toBe(204);
    expect(sim.refreshTokenState(refresh)).toBe(row.after);
    expect(sim.validRefreshTokens(ALICE.username)).toEqual(valid);
    expect(sim.validRefreshTokens(BOB.username)).toEqual([bob.refresh]);
    expect(sim.stats()).toMatchObject({ logouts: 1, revocations: before.revocations, reuses: 0 });
  });

  it.each([
    {
      name: 'a refresh token it never issued',
      cookie: 'folioRefreshToken=eyJhbGciOiJkaXIifQ..x.y.z',
      status: 422,
      code: 'token.logout.unprocessable',
    },
    { name: 'an empty Cookie header', cookie: '', status: 500 },
    { name: 'only the access cookie', cookie: 'folioAccessToken=%AT%', status: 500 },
    {
      name: 'a duplicated refresh cookie',
      cookie: 'folioRefreshToken=%RT%; folioRefreshToken=%RT%',
      status: 500,
    },
    {
      name: 'a duplicated access cookie',
      cookie: 'folioAccessToken=%AT%; folioRefreshToken=%RT%; folioAccessToken=%AT%',
      status: 500,
    },
  ])('answers $name with $status, logging nothing out', async ({ cookie, status, code }) => {
    const sim = await simulator();
    const { access, refresh } = await session(sim);
    const answer = await logoutWith(sim, {
      cookie: cookie.replaceAll('%RT%', refresh).replaceAll('%AT%', access),
    });
    expect(answer.status).toBe(status);
    if (code !== undefined) expect(errorCode(answer)).toBe(code);
    expect(answer.setCookies).toEqual([]);
    expect(sim.refreshTokenState(refresh)).toBe('valid');
    expect(sim.stats()).toMatchObject({ logouts: 0, logoutsAll: 0, refusedLogouts: 1 });
  });

  it.each([
    { name: 'logout-all with an access token', all: true, token: 'valid', status: 204 },
    {
      name: 'a logout without a Cookie header, with an access token',
      all: false,
      token: 'valid',
      status: 204,
    },
    { name: 'logout-all without an access token', all: true, token: 'none', status: 422 },
    { name: 'a logout without a Cookie header or an access token', all: false, token: 'none', status: 422 },
    { name: 'logout-all with an expired access token', all: true, token: 'expired', status: 401 },
  ] as const)('$name: $status', async ({ all, token, status }) => {
    const sim = await simulator();
    const first = await session(sim);
    const other = await session(sim);
    const bob = await session(sim, BOB);
    if (token === 'expired') await fx.clock.advance(6000);
    const answer = await logoutWith(
      sim,
      token === 'none' ? {} : { 'x-okapi-token': first.access },
      all ? sim.logoutAllEndpoint : sim.logoutEndpoint,
    );
    expect(answer.status).toBe(status);
    const everySession = status === 204;
    expect(sim.validRefreshTokens(ALICE.username)).toEqual(
      everySession ? [] : [first.refresh, other.refresh],
    );
    expect(sim.refreshTokenState(other.refresh)).toBe(everySession ? 'revoked' : 'valid');
    expect(sim.validRefreshTokens(BOB.username)).toEqual([bob.refresh]);
    expect(sim.stats()).toMatchObject({
      logouts: 0,
      logoutsAll: everySession ? 1 : 0,
      refusedLogouts: everySession ? 0 : 1,
      revocations: everySession ? 1 : 0,
    });
  });

  it('moves the logout under pathPrefix', async () => {
    const sim = await simulator({ pathPrefix: '/okapi' });
    expect(sim.logoutEndpoint).toBe(`${sim.origin}/okapi/authn/logout`);
    expect(sim.logoutAllEndpoint).toBe(`${sim.origin}/okapi/authn/logout-all`);
    const { refresh } = await session(sim);
    const cookie = `folioRefreshToken=${refresh}`;
    expect((await logoutWith(sim, { cookie }, `${sim.origin}/authn/logout`)).status).toBe(404);
    expect((await logoutWith(sim, { cookie })).status).toBe(204);
  });
});

describe('FOLIO simulator: API', () => {
  it.each([
    { name: 'the x-okapi-token header', headers: (at: string) => ({ 'x-okapi-token': at }), status: 200 },
    {
      name: 'the folioAccessToken cookie',
      headers: (at: string) => ({ cookie: `folioAccessToken=${at}` }),
      status: 200,
    },
    { name: 'no token', headers: () => ({}), status: 400 },
    { name: 'a token it never issued', headers: () => ({ 'x-okapi-token': 'e30.e30.x' }), status: 401 },
  ])('answers a call with $name: $status', async ({ headers, status }) => {
    const sim = await simulator();
    const { access } = await session(sim);
    expect(await listUsers(sim, { 'x-okapi-tenant': TENANT, ...headers(access) })).toBe(status);
  });

  it('refuses an expired access token and one of another tenant', async () => {
    const sim = await simulator({
      tenants: { diku: {}, other: {} },
      users: [ALICE, { ...BOB, tenant: 'other' }],
    });
    const { access } = await session(sim);
    expect(await listUsers(sim, { 'x-okapi-tenant': 'other', 'x-okapi-token': access })).toBe(401);
    const page = await call(`${sim.usersEndpoint}?limit=1`, {
      headers: { 'x-okapi-tenant': TENANT, 'x-okapi-token': access },
    });
    expect(JSON.parse(page.text)).toMatchObject({ users: [{ username: ALICE.username }], totalRecords: 1 });
    await fx.clock.advance(6000);
    expect(await listUsers(sim, { 'x-okapi-tenant': TENANT, 'x-okapi-token': access })).toBe(401);
    expect(sim.stats()).toMatchObject({ logins: 1, apiCalls: 1 });
  });
});
