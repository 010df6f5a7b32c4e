// The Exact Online simulator (test/simulators/exact-online.ts) driven over HTTP with plain fetch, on
// a fake clock with time compressed 100-fold: 570 s is 5.7 s, 600 s is 6 s, a day 864 s.
import { createHash } from 'node:crypto';
import { generateSync } from 'otplib';
import { describe, expect, it } from 'vitest';
import { exactOnline } from '../../src/providers/presets/exact-online.ts';
import {
  startExactOnlineSimulator,
  type ExactOnlineSimulator,
  type ExactOnlineSimulatorOptions,
} from '../simulators/exact-online.ts';
import { postForm, simulatorFixture, type JsonAnswer } from '../simulators/sim-fixture.ts';

const SCALE = 0.01;
const FLOOR_MS = 570_000 * SCALE;
const HOUR_MS = 3_600_000 * SCALE;
const DAY_MS = 86_400_000 * SCALE;
const REDIRECT_URI = 'http://127.0.0.1:9/callback';

const fx = simulatorFixture(startExactOnlineSimulator, Date.parse('2026-03-02T09:00:00Z'), SCALE);
const simulator = (options?: ExactOnlineSimulatorOptions): Promise<ExactOnlineSimulator> => fx.start(options);

function refresh(sim: ExactOnlineSimulator, refreshToken: string): Promise<JsonAnswer> {
  return postForm(sim.tokenEndpoint, {
    grant_type: 'refresh_token',
    refresh_token: refreshToken,
    client_id: sim.clientId,
    client_secret: sim.clientSecret,
  });
}

async function me(sim: ExactOnlineSimulator, accessToken: string): Promise<Response> {
  const res = await fetch(sim.meEndpoint, { headers: { authorization: `Bearer ${accessToken}` } });
  await res.arrayBuffer();
  return res;
}

function tokens(answer: JsonAnswer): { accessToken: string; refreshToken: string } {
  expect(answer.status).toBe(200);
  return { accessToken: String(answer.json.access_token), refreshToken: String(answer.json.refresh_token) };
}

/** The value of a named input in a page. */
function inputValue(html: string, name: string): string {
  return new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? '';
}

function totpNow(secret: string): string {
  return generateSync({ secret, epoch: Math.floor(fx.clock.now() / 1000) });
}

interface LoginRun {
  /** Where the authorization server finally redirected to. */
  location: URL;
  pages: string[];
}

/** Follows the authorization request through the login pages, as a browser would, with the given answers. */
async function browserLogin(
  sim: ExactOnlineSimulator,
  query: Record<string, string>,
  answers: { password?: string; code?: () => string } = {},
): Promise<LoginRun> {
  const params = new URLSearchParams({ client_id: sim.clientId, redirect_uri: REDIRECT_URI, ...query });
  const first = await fetch(`${sim.authorizationEndpoint}?${params.toString()}`, { redirect: 'manual' });
  expect(first.status).toBe(302);
  const loginURL = new URL(first.headers.get('location') ?? '', sim.origin);
  const f = sim.fields;
  const pages = [await (await fetch(loginURL)).text()];
  const state = inputValue(pages[0] ?? '', f.state);
  const submit = async (form: Record<string, string>): Promise<Response> =>
    fetch(loginURL, {
      method: 'POST',
      body: new URLSearchParams({ [f.state]: state, ...form }),
      redirect: 'manual',
    });
  let res = await submit({ [f.username]: sim.username, [f.password]: answers.password ?? sim.password });
  pages.push(await res.text());
  if (answers.password !== undefined) return { location: loginURL, pages };
  res = await submit({ [f.totp]: (answers.code ?? (() => totpNow(sim.totpSecret)))() });
  if (res.status !== 302) {
    pages.push(await res.text());
    return { location: loginURL, pages };
  }
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
  const back = await fetch(new URL(res.headers.get('location') ?? '', sim.origin), {
    headers: { cookie },
    redirect: 'manual',
  });
  expect(back.status).toBe(302);
  return { location: new URL(back.headers.get('location') ?? ''), pages };
}

function exchange(
  sim: ExactOnlineSimulator,
  code: string,
  extra: Record<string, string> = {},
): Promise<JsonAnswer> {
  return postForm(sim.tokenEndpoint, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: REDIRECT_URI,
    client_id: sim.clientId,
    client_secret: sim.clientSecret,
    ...extra,
  });
}

describe('Exact Online simulator: login and codes', () => {
  it('logs in with password and TOTP, redirects with code and state, and exchanges the code once', async () => {
    const sim = await simulator();
    const run = await browserLogin(sim, { response_type: 'code', state: 'st-1' });
    expect(run.pages[0]).toContain(`name="${sim.fields.password}"`);
    expect(run.pages[1]).toContain(`name="${sim.fields.totp}"`);
    expect(run.location.origin + run.location.pathname).toBe(REDIRECT_URI);
    expect(run.location.searchParams.get('state')).toBe('st-1');
    const code = run.location.searchParams.get('code') ?? '';

    const answer = await exchange(sim, code);
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ token_type: 'bearer', expires_in: '6' });
    expect(typeof answer.json.refresh_token).toBe('string');
    expect((await exchange(sim, code)).json.error).toBe('invalid_grant');
    expect(sim.stats().logins).toBe(1);
  });

  it('serves the field names it is given and shows a wrong password or code on the page again', async () => {
    const fields = { username: 'u_in', password: 'p_in', totp: 'c_in', state: 's_in' };
    const sim = await simulator({ fields });
    const wrongPassword = await browserLogin(sim, { response_type: 'code' }, { password: 'nope' });
    expect(wrongPassword.pages[0]).toMatch(/name="u_in".*\n.*name="p_in"/);
    expect(wrongPassword.pages[1]).toContain('Invalid username or password.');
    const wrongCode = await browserLogin(sim, { response_type: 'code' }, { code: () => '000000' });
    expect(wrongCode.pages[2]).toContain('Invalid verification code.');
    expect(sim.stats()).toMatchObject({ failedPasswords: 1, failedTotpCodes: 1, logins: 0 });
  });

  it('answers response_type=token with #access_token, no refresh token, usable at the API', async () => {
    const sim = await simulator();
    const run = await browserLogin(sim, { response_type: 'token', state: 'st-2' });
    const fragment = new URLSearchParams(run.location.hash.slice(1));
    expect(fragment.get('state')).toBe('st-2');
    expect(fragment.get('expires_in')).toBe('6');
    expect(fragment.has('refresh_token')).toBe(false);
    expect((await me(sim, fragment.get('access_token') ?? '')).status).toBe(200);
  });

  const verifier = 'v'.repeat(43);
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  it.each<{ name: string; waitMs: number; pkce: boolean; codeVerifier?: string; ok: boolean }>([
    { name: 'a code within 3 minutes', waitMs: 179_000 * SCALE, pkce: false, ok: true },
    { name: 'a code after 3 minutes', waitMs: 180_000 * SCALE, pkce: false, ok: false },
    { name: 'PKCE with the right verifier', waitMs: 0, pkce: true, codeVerifier: verifier, ok: true },
    { name: 'PKCE without a verifier', waitMs: 0, pkce: true, ok: false },
    { name: 'PKCE with a wrong verifier', waitMs: 0, pkce: true, codeVerifier: `${verifier}x`, ok: false },
  ])('exchanges $name: $ok', async ({ waitMs, pkce, codeVerifier, ok }) => {
    const sim = await simulator();
    const pkceQuery: Record<string, string> = pkce
      ? { code_challenge: challenge, code_challenge_method: 'S256' }
      : {};
    const run = await browserLogin(sim, { response_type: 'code', ...pkceQuery });
    await fx.clock.advance(waitMs);
    const extra: Record<string, string> = codeVerifier === undefined ? {} : { code_verifier: codeVerifier };
    const answer = await exchange(sim, run.location.searchParams.get('code') ?? '', extra);
    expect(answer.status).toBe(ok ? 200 : 400);
  });
});

describe('Exact Online simulator: the refresh-token chain', () => {
  it('writes expires_in as the string "600" at real time scale', async () => {
    const sim = await simulator({ timeScale: 1 });
    const first = sim.seedChain();
    await fx.clock.advance(570_000);
    const answer = await refresh(sim, first.refreshToken);
    expect(answer.json).toMatchObject({ token_type: 'bearer', expires_in: '600' });
    expect(Object.keys(answer.json)).toEqual(['access_token', 'token_type', 'expires_in', 'refresh_token']);
  });

  it.each([
    { use: 'the successor presented at the token endpoint', how: 'refresh', predecessor: 401 },
    { use: 'the access token issued with the successor used at the API', how: 'api', predecessor: 401 },
    { use: 'nothing (the answer was lost)', how: 'none', predecessor: 200 },
  ] as const)('after $use, the predecessor answers $predecessor', async ({ how, predecessor }) => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    const second = tokens(await refresh(sim, first.refreshToken));
    expect(sim.validRefreshTokens().sort()).toEqual([first.refreshToken, second.refreshToken].sort());
    await fx.clock.advance(FLOOR_MS);
    if (how === 'refresh') tokens(await refresh(sim, second.refreshToken));
    if (how === 'api') expect((await me(sim, second.accessToken)).status).toBe(200);
    if (how === 'refresh') await fx.clock.advance(FLOOR_MS);
    const again = await refresh(sim, first.refreshToken);
    expect(again.status).toBe(predecessor);
    if (predecessor === 401) {
      expect(again.json).toEqual({
        error: 'unauthorized_client',
        error_description: 'Old refresh token used.',
      });
      expect(sim.stats().reuses).toBe(1);
    }
  });

  it('leaves the successor a client never saw dead once it retried with the predecessor', async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    const unseen = tokens(await refresh(sim, first.refreshToken));
    await fx.clock.advance(FLOOR_MS);
    const retried = tokens(await refresh(sim, first.refreshToken));
    expect((await refresh(sim, unseen.refreshToken)).status).toBe(401);
    expect(sim.validRefreshTokens().sort()).toEqual([first.refreshToken, retried.refreshToken].sort());
  });

  it('logs each presentation of a refresh token by generation: a retry is the second, the lost successor never appears', async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS - 1);
    const t0 = fx.clock.now();
    expect((await refresh(sim, first.refreshToken)).status).toBe(400); // too early
    await fx.clock.advance(1);
    const unseen = tokens(await refresh(sim, first.refreshToken));
    await fx.clock.advance(FLOOR_MS);
    const retried = tokens(await refresh(sim, first.refreshToken));
    expect((await me(sim, retried.accessToken)).status).toBe(200);
    expect(sim.stats().repeatedPresentations).toBe(2);
    expect(sim.requests().map((r) => ({ ...r, at: r.at - t0 }))).toEqual([
      {
        at: 0,
        endpoint: 'token',
        grantType: 'refresh_token',
        generation: 1,
        presentation: 1,
        status: 400,
        outcome: 'too-early',
      },
      {
        at: 1,
        endpoint: 'token',
        grantType: 'refresh_token',
        generation: 1,
        presentation: 2,
        issued: 2,
        status: 200,
        outcome: 'issued',
      },
      {
        at: 1 + FLOOR_MS,
        endpoint: 'token',
        grantType: 'refresh_token',
        generation: 1,
        presentation: 3,
        issued: 3,
        status: 200,
        outcome: 'issued',
      },
      { at: 1 + FLOOR_MS, endpoint: 'api', generation: 3, status: 200, outcome: 'ok' },
    ]);
    // The unseen successor, presented now, is a reuse: its first presentation.
    expect((await refresh(sim, unseen.refreshToken)).status).toBe(401);
    expect(sim.requests().at(-1)).toMatchObject({ generation: 2, presentation: 1, outcome: 'reused' });
    expect(sim.stats().repeatedPresentations).toBe(2);
  });

  it("has the preset's floor: too early 1 ms before exactOnline.minIntervalMs (scaled), issued at it", async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(exactOnline.minIntervalMs * SCALE - 1);
    expect((await refresh(sim, first.refreshToken)).status).toBe(400);
    await fx.clock.advance(1);
    expect((await refresh(sim, first.refreshToken)).status).toBe(200);
    expect(sim.requests().map((r) => r.outcome)).toEqual(['too-early', 'issued']);
  });

  it('answers a reuse with 400 when configured so', async () => {
    const sim = await simulator({ oldTokenStatus: 400 });
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    const second = tokens(await refresh(sim, first.refreshToken));
    await fx.clock.advance(FLOOR_MS);
    tokens(await refresh(sim, second.refreshToken));
    const reuse = await refresh(sim, first.refreshToken);
    expect(reuse.status).toBe(400);
    expect(reuse.json.error_description).toBe('Old refresh token used.');
  });

  it.each([
    { tooEarlyKillsChain: false, after: 200 },
    { tooEarlyKillsChain: true, after: 400 },
  ])(
    'refuses a refresh within 570 s (scaled); tooEarlyKillsChain=$tooEarlyKillsChain',
    async ({ tooEarlyKillsChain, after }) => {
      const sim = await simulator({ tooEarlyKillsChain });
      const first = sim.seedChain();
      await fx.clock.advance(FLOOR_MS - 1);
      const early = await refresh(sim, first.refreshToken);
      expect(early.status).toBe(400);
      expect(early.json).toEqual({
        error: 'access_denied',
        error_description: 'Rate limit exceeded: access_token not expired',
      });
      expect(early.headers.get('reason')).toBe('TooEarlyToRefreshTokens');
      await fx.clock.advance(1);
      const later = await refresh(sim, first.refreshToken);
      expect(later.status).toBe(after);
      if (tooEarlyKillsChain) expect(later.json.error_description).toMatch(/invalid or empty chainId/);
      expect(sim.stats().tooEarly).toBe(1);
    },
  );

  it('expires a refresh token unused for 30 days (scaled), with both dates in the message', async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(30 * DAY_MS + 1000);
    const answer = await refresh(sim, first.refreshToken);
    expect(answer.status).toBe(400);
    expect(answer.json.error).toBe('invalid_request');
    // 2026-03-02T09:00:00Z + 30 × 864 s = 2026-03-02T16:12:00Z.
    expect(answer.json.error_description).toBe(
      'The refresh token expired at 3/2/2026 4:12:00 PM and it is now 3/2/2026 4:12:01 PM.',
    );
    expect(sim.validRefreshTokens()).toEqual([]);
  });

  it.each([
    {
      name: 'a revoked chain',
      token: (s: ExactOnlineSimulator, rt: string): string => {
        expect(s.revoke(rt)).toBe(1);
        return rt;
      },
    },
    { name: 'a token never issued', token: () => 'not-a-token' },
  ])('answers $name with invalid_grant "invalid or empty chainId"', async ({ token }) => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    const answer = await refresh(sim, token(sim, first.refreshToken));
    expect(answer.status).toBe(400);
    expect(answer.json).toEqual({
      error: 'invalid_grant',
      error_description: 'Token is not allowed, because of invalid or empty chainId',
    });
    expect(sim.stats().brokenChain).toBe(1);
  });
});

describe('Exact Online simulator: limits', () => {
  it('reports API limits with resets in epoch ms and answers 429 past 60 calls a minute', async () => {
    const sim = await simulator();
    const { accessToken } = sim.seedChain();
    const minute = 60_000 * SCALE;
    const first = await me(sim, accessToken);
    expect(Object.fromEntries([...first.headers].filter(([k]) => k.startsWith('x-ratelimit')))).toEqual({
      'x-ratelimit-limit': '5000',
      'x-ratelimit-remaining': '4999',
      'x-ratelimit-reset': String((Math.floor(fx.clock.now() / DAY_MS) + 1) * DAY_MS),
      'x-ratelimit-minutely-limit': '60',
      'x-ratelimit-minutely-remaining': '59',
      'x-ratelimit-minutely-reset': String((Math.floor(fx.clock.now() / minute) + 1) * minute),
    });
    for (let i = 2; i <= 60; i++) expect((await me(sim, accessToken)).status).toBe(200);
    const over = await me(sim, accessToken);
    expect(over.status).toBe(429);
    expect(over.headers.get('x-ratelimit-minutely-remaining')).toBe('0');
    await fx.clock.advance(minute);
    expect((await me(sim, accessToken)).status).toBe(200);
    expect(sim.stats()).toMatchObject({ apiCalls: 62, apiRateLimited: 1 });
  });

  it('answers 401 for an expired access token (600 s scaled)', async () => {
    const sim = await simulator();
    const { accessToken } = sim.seedChain();
    await fx.clock.advance(600_000 * SCALE);
    expect((await me(sim, accessToken)).status).toBe(401);
    expect((await me(sim, 'unknown')).status).toBe(401);
  });

  it('limits token requests per day', async () => {
    const sim = await simulator({ limits: { tokenRequestsPerDay: 2 } });
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    const second = tokens(await refresh(sim, first.refreshToken));
    expect((await refresh(sim, second.refreshToken)).headers.get('x-ratelimit-remaining')).toBe('0');
    expect((await refresh(sim, second.refreshToken)).status).toBe(429);
    await fx.clock.advance(DAY_MS);
    expect((await refresh(sim, second.refreshToken)).status).toBe(200);
  });

  it.each([401, 429] as const)(
    'blocks the key for an hour after 10 errors in an hour (answer %i)',
    async (status) => {
      const sim = await simulator({ blockedStatus: status });
      const first = sim.seedChain();
      for (let i = 0; i < 10; i++) expect((await refresh(sim, 'not-a-token')).status).toBe(400);
      expect(sim.blockedUntil('token')).toBe(fx.clock.now() + HOUR_MS);
      await fx.clock.advance(FLOOR_MS);
      expect((await refresh(sim, first.refreshToken)).status).toBe(status);
      expect(sim.stats()).toMatchObject({ errors: 10, blockedAnswers: 1 });
      await fx.clock.advance(HOUR_MS);
      expect(sim.blockedUntil('token')).toBeUndefined();
      expect((await refresh(sim, first.refreshToken)).status).toBe(200);
    },
  );

  it('forgets errors older than an hour', async () => {
    const sim = await simulator();
    for (let i = 0; i < 9; i++) await refresh(sim, 'not-a-token');
    await fx.clock.advance(HOUR_MS);
    for (let i = 0; i < 9; i++) await refresh(sim, 'not-a-token');
    expect(sim.blockedUntil('token')).toBeUndefined();
  });
});

describe('Exact Online simulator: faults', () => {
  it('processes a delayed request before the answer leaves, so a client that gave up lost its token', async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    sim.faults.delayNext(1, 300, '/api/oauth2/token');
    const gaveUp = fetch(sim.tokenEndpoint, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: first.refreshToken,
        client_id: sim.clientId,
        client_secret: sim.clientSecret,
      }),
      signal: AbortSignal.timeout(50),
    });
    await expect(gaveUp).rejects.toThrow();
    expect(sim.stats().tokensIssued).toBe(2);
    // The lost successor was never used: after the floor, the predecessor still works.
    expect((await refresh(sim, first.refreshToken)).status).toBe(400);
    await fx.clock.advance(FLOOR_MS);
    expect((await refresh(sim, first.refreshToken)).status).toBe(200);
  });

  it('drops the connection after processing', async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    sim.faults.dropNext(1);
    await expect(refresh(sim, first.refreshToken)).rejects.toThrow();
    expect(sim.stats().tokensIssued).toBe(2);
    expect(sim.faults.injected).toEqual([
      { fault: { kind: 'drop' }, method: 'POST', path: '/api/oauth2/token' },
    ]);
  });

  it('answers 5xx without processing', async () => {
    const sim = await simulator();
    const first = sim.seedChain();
    await fx.clock.advance(FLOOR_MS);
    sim.faults.failNext(2, 502);
    expect((await refresh(sim, first.refreshToken)).status).toBe(502);
    expect((await refresh(sim, first.refreshToken)).status).toBe(502);
    expect(sim.stats()).toMatchObject({ tokenRequests: 0, tokensIssued: 1 });
    expect((await refresh(sim, first.refreshToken)).status).toBe(200);
  });
});
