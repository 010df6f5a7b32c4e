// The SAP Concur simulator (test/simulators/concur.ts) driven over HTTP with plain fetch, on a fake
// clock with time compressed 100-fold: an hour is 36 s, six months (180 days) 155,520 s.
import { describe, expect, it } from 'vitest';
import {
  startConcurSimulator,
  type ConcurBehaviour,
  type ConcurErrorCode,
  type ConcurSimulator,
  type ConcurSimulatorOptions,
} from '../simulators/concur.ts';
import { postForm, simulatorFixture, type JsonAnswer } from '../simulators/sim-fixture.ts';

const SCALE = 0.01;
const DAY_MS = 86_400_000 * SCALE;

const fx = simulatorFixture(startConcurSimulator, Date.parse('2026-01-05T08:00:00Z'), SCALE);
const simulator = (options?: ConcurSimulatorOptions): Promise<ConcurSimulator> => fx.start(options);

function token(sim: ConcurSimulator, geolocation: string, form: Record<string, string>): Promise<JsonAnswer> {
  return postForm(sim.tokenEndpoint(geolocation), form);
}

function client(sim: ConcurSimulator): Record<string, string> {
  return { client_id: sim.clientId, client_secret: sim.clientSecret };
}

function passwordForm(sim: ConcurSimulator): Record<string, string> {
  return { ...client(sim), grant_type: 'password', username: sim.username, password: sim.password };
}

function refreshForm(sim: ConcurSimulator, refreshToken: string): Record<string, string> {
  return { ...client(sim), grant_type: 'refresh_token', refresh_token: refreshToken };
}

/** Logs the user in at its geolocation and returns the refresh token. */
async function login(sim: ConcurSimulator, geolocation = 'us'): Promise<string> {
  const answer = await token(sim, geolocation, passwordForm(sim));
  expect(answer.status).toBe(200);
  return String(answer.json.refresh_token);
}

function jwtPayload(jwt: unknown): Record<string, unknown> {
  const part = String(jwt).split('.')[1] ?? '';
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

describe('Concur simulator: grants and answers', () => {
  it('answers a password grant with the documented shape, expires_in a string "3600"', async () => {
    const sim = await simulator({ timeScale: 1 });
    const answer = await token(sim, 'us', passwordForm(sim));
    expect(answer.status).toBe(200);
    expect(Object.keys(answer.json)).toEqual([
      'expires_in',
      'scope',
      'token_type',
      'access_token',
      'refresh_token',
      'id_token',
      'geolocation',
    ]);
    expect(answer.json).toMatchObject({
      expires_in: '3600',
      token_type: 'Bearer',
      geolocation: sim.geolocations.us,
    });
    expect(jwtPayload(answer.json.id_token)).toMatchObject({
      aud: sim.clientId,
      iss: sim.geolocations.us,
      'concur.type': 'user',
      'concur.version': 2,
    });
    expect(answer.headers.get('concur-correlationid')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('returns the same refresh token by default and keeps it alive six months from each refresh', async () => {
    const sim = await simulator();
    const refreshToken = await login(sim);
    for (let i = 0; i < 3; i++) {
      await fx.clock.advance(179 * DAY_MS);
      const answer = await token(sim, 'us', refreshForm(sim, refreshToken));
      expect(answer.status).toBe(200);
      expect(answer.json.refresh_token).toBe(refreshToken);
      expect(answer.json).not.toHaveProperty('refresh_expires_in');
      expect(sim.stats().lastRefreshAt).toBe(fx.clock.now());
    }
    expect(sim.refreshTokenExpiresAt(refreshToken)).toBe(fx.clock.now() + 180 * DAY_MS);
    await fx.clock.advance(180 * DAY_MS);
    expect(sim.refreshTokenState(refreshToken)).toBe('expired');
    const expired = await token(sim, 'us', refreshForm(sim, refreshToken));
    expect(expired.json).toMatchObject({ code: 108, error: 'invalid_grant' });
  });

  it('rotates the refresh token on option, and refuses the previous one', async () => {
    const sim = await simulator({ rotateRefreshToken: true });
    const first = await login(sim);
    const answer = await token(sim, 'us', refreshForm(sim, first));
    const second = String(answer.json.refresh_token);
    expect(second).not.toBe(first);
    expect(sim.currentRefreshToken()).toBe(second);
    expect((await token(sim, 'us', refreshForm(sim, first))).json.code).toBe(108);
    expect((await token(sim, 'us', refreshForm(sim, second))).status).toBe(200);
  });

  it('issues access tokens of another lifetime on option (provider hours, compressed)', async () => {
    const sim = await simulator();
    const refreshToken = sim.seedChain();
    sim.configure({ accessTokenLifetimeHours: 24 * 365 });
    const answer = await token(sim, 'us', refreshForm(sim, refreshToken));
    expect(answer.json.expires_in).toBe(String(Math.round((365 * DAY_MS) / 1000)));
  });

  it('seeds a chain without a request, and logs each token request without its tokens', async () => {
    const sim = await simulator({ rotateRefreshToken: true });
    const seed = sim.seedChain('company');
    expect(sim.refreshTokenState(seed)).toBe('valid');
    expect(sim.currentRefreshToken('company')).toBe(seed);
    expect(sim.stats()).toMatchObject({ passwordGrants: 0, refreshes: 0, requestsByGeolocation: { us: 0 } });
    const at = fx.clock.now();
    const rotated = await token(sim, 'us', refreshForm(sim, seed));
    expect(rotated.json).toMatchObject({ refresh_expires_in: Math.floor((at + 180 * DAY_MS) / 1000) });
    sim.configure({ rotateRefreshToken: false });
    await token(sim, 'us', refreshForm(sim, String(rotated.json.refresh_token)));
    await token(sim, 'emea', refreshForm(sim, String(rotated.json.refresh_token)));
    expect(sim.tokenRequests()).toEqual([
      { at, geolocation: 'us', grantType: 'refresh_token', status: 200, rotated: true },
      { at, geolocation: 'us', grantType: 'refresh_token', status: 200, rotated: false },
      { at, geolocation: 'emea', grantType: 'refresh_token', status: 400, code: 16 },
    ]);
    expect(JSON.stringify(sim.tokenRequests())).not.toContain(seed);
  });

  it('adds refresh_expires_in (epoch seconds) to company logins, and to user logins on option', async () => {
    const sim = await simulator();
    const company = await token(sim, 'us', {
      ...client(sim),
      grant_type: 'password',
      credtype: 'authtoken',
      username: sim.companyId,
      password: sim.companyRequestToken,
    });
    const expected = Math.floor((fx.clock.now() + 180 * DAY_MS) / 1000);
    expect(company.json.refresh_expires_in).toBe(expected);
    expect(jwtPayload(company.json.id_token)).toMatchObject({ sub: sim.companyId, 'concur.type': 'company' });
    expect((await token(sim, 'us', passwordForm(sim))).json).not.toHaveProperty('refresh_expires_in');
    sim.configure({ refreshExpiresInForUsers: true });
    expect((await token(sim, 'us', passwordForm(sim))).json.refresh_expires_in).toBe(expected);
  });
});

describe('Concur simulator: geolocations', () => {
  it('answers code 16 at a geolocation that does not hold the user, naming the one that does', async () => {
    const sim = await simulator({ userGeolocation: 'emea' });
    const elsewhere = await token(sim, 'us', passwordForm(sim));
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.json).toEqual({
      code: 16,
      error: 'invalid_request',
      error_description: 'user lives elsewhere',
      geolocation: sim.geolocations.emea,
    });
    const refreshToken = await login(sim, 'emea');
    expect((await token(sim, 'us', refreshForm(sim, refreshToken))).json.code).toBe(16);
    expect(sim.stats().requestsByGeolocation).toEqual({ us: 2, emea: 1 });
  });

  it("accepts password grants at the app's geolocation, and refreshes only at the user's", async () => {
    const sim = await simulator({ userGeolocation: 'emea', appGeolocation: 'us' });
    const answer = await token(sim, 'us', passwordForm(sim));
    expect(answer.json.geolocation).toBe(sim.geolocations.emea);
    const refreshToken = String(answer.json.refresh_token);
    expect((await token(sim, 'us', refreshForm(sim, refreshToken))).json.code).toBe(16);
    expect((await token(sim, 'emea', refreshForm(sim, refreshToken))).status).toBe(200);
  });

  it('moves the user mid-chain: the old geolocation answers 16, the new one refreshes the same token', async () => {
    const sim = await simulator();
    const refreshToken = await login(sim, 'us');
    sim.moveUser('emea');
    expect(sim.userGeolocation).toBe(sim.geolocations.emea);
    const moved = await token(sim, 'us', refreshForm(sim, refreshToken));
    expect(moved.json).toMatchObject({ code: 16, geolocation: sim.geolocations.emea });
    const answer = await token(sim, 'emea', refreshForm(sim, refreshToken));
    expect(answer.json).toMatchObject({ refresh_token: refreshToken, geolocation: sim.geolocations.emea });
  });
});

describe('Concur simulator: errors', () => {
  type Form = (sim: ConcurSimulator, refreshToken: string) => Record<string, string>;
  const cases: { code: ConcurErrorCode; status: number; options?: ConcurBehaviour; form: Form }[] = [
    { code: 5, status: 400, form: (s) => ({ ...passwordForm(s), password: 'wrong' }) },
    { code: 10, status: 400, options: { accountState: 'disabled' }, form: (s) => passwordForm(s) },
    { code: 14, status: 400, options: { accountState: 'locked' }, form: (s) => passwordForm(s) },
    { code: 51, status: 400, form: (s) => ({ ...passwordForm(s), username: '' }) },
    { code: 52, status: 400, form: (s) => ({ ...passwordForm(s), password: '' }) },
    { code: 53, status: 403, options: { companyEnabled: false }, form: (s) => passwordForm(s) },
    { code: 54, status: 400, form: (s, rt) => ({ ...refreshForm(s, rt), scope: 'company.write' }) },
    { code: 60, status: 400, form: (s) => ({ ...client(s), grant_type: 'urn:example:unknown' }) },
    { code: 61, status: 401, form: (s, rt) => ({ ...refreshForm(s, rt), client_id: 'someone-else' }) },
    { code: 62, status: 400, form: (s, rt) => ({ ...refreshForm(s, rt), client_id: '' }) },
    { code: 63, status: 400, form: (s, rt) => ({ ...refreshForm(s, rt), client_secret: '' }) },
    { code: 64, status: 401, form: (s, rt) => ({ ...refreshForm(s, rt), client_secret: 'wrong' }) },
    { code: 65, status: 400, form: (s) => client(s) },
    { code: 106, status: 400, form: (s) => refreshForm(s, '') },
    { code: 107, status: 400, options: { refreshAllowed: false }, form: (s, rt) => refreshForm(s, rt) },
    { code: 108, status: 400, form: (s) => refreshForm(s, 'e013335d-b4ce-4c43-a7e4-b67abc1adcb0') },
    { code: 120, status: 400, form: (s) => ({ ...passwordForm(s), credtype: 'certificate' }) },
  ];

  it.each(cases)('answers code $code with status $status', async ({ code, status, options, form }) => {
    const sim = await simulator();
    const refreshToken = await login(sim);
    sim.configure(options ?? {});
    const answer = await token(sim, 'us', form(sim, refreshToken));
    expect(answer.status).toBe(status);
    expect(answer.json).toMatchObject({ code, geolocation: sim.geolocations.us });
    expect(Object.keys(answer.json).sort()).toEqual(['code', 'error', 'error_description', 'geolocation']);
    expect(sim.stats().errorsByCode).toEqual({ [code]: 1 });
  });

  it('leaves the geolocation out of error bodies on option, code 16 included', async () => {
    const sim = await simulator({ errorGeolocation: false });
    const refreshToken = sim.seedChain();
    sim.moveUser('emea');
    const moved = await token(sim, 'us', refreshForm(sim, refreshToken));
    expect(moved.json).toEqual({
      code: 16,
      error: 'invalid_request',
      error_description: 'user lives elsewhere',
    });
  });

  it('takes the status of each code from statusByCode', async () => {
    const sim = await simulator({ statusByCode: { 108: 401, 16: 404, 53: 400 } });
    const refreshToken = await login(sim);
    expect((await token(sim, 'us', refreshForm(sim, 'unknown'))).status).toBe(401);
    expect((await token(sim, 'emea', refreshForm(sim, refreshToken))).status).toBe(404);
    sim.configure({ companyEnabled: false });
    expect((await token(sim, 'us', passwordForm(sim))).status).toBe(400);
  });

  it('revokes the refresh tokens through DELETE /app-mgmt/v0/connections and through revoke()', async () => {
    const sim = await simulator();
    const first = await token(sim, 'us', passwordForm(sim));
    const res = await fetch(`${sim.geolocations.us}/app-mgmt/v0/connections`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${String(first.json.access_token)}` },
    });
    expect(res.status).toBe(200);
    const revoked = String(first.json.refresh_token);
    expect(sim.refreshTokenState(revoked)).toBe('revoked');
    expect((await token(sim, 'us', refreshForm(sim, revoked))).json.code).toBe(108);
    const second = await login(sim);
    expect(sim.revoke()).toBe(1);
    expect(sim.refreshTokenState(second)).toBe('revoked');
  });

  it('drops a connection after processing the refresh', async () => {
    const sim = await simulator();
    const refreshToken = await login(sim);
    await fx.clock.advance(DAY_MS);
    sim.faults.dropNext(1, '/oauth2/v0/token');
    await expect(token(sim, 'us', refreshForm(sim, refreshToken))).rejects.toThrow();
    expect(sim.stats()).toMatchObject({ refreshes: 1, lastRefreshAt: fx.clock.now() });
  });
});
