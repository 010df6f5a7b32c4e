// The test OIDC server's interactive login (login form, then TOTP form), driven the way the
// operator's headless recovery login will drive it: fetch without automatic redirects, a cookie jar,
// forms found by id and filled by field name.
import { createHash, randomBytes } from 'node:crypto';
import * as cheerio from 'cheerio';
import { generateSync } from 'otplib';
import { CookieJar } from 'tough-cookie';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_REDIRECT_URI,
  startTestOidcServer,
  type TestOidcClient,
  type TestOidcServer,
  type TestOidcServerOptions,
  type TestOidcUser,
} from '../harness/oidc/server.ts';

const ALICE: TestOidcUser = {
  accountId: 'alice-sub',
  username: 'alice',
  password: 'correct horse',
  totpSecret: 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP',
};
const BOB: TestOidcUser = {
  accountId: 'bob-sub',
  username: 'bob',
  password: 'battery staple',
  totpSecret: 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ',
};

/** Confidential, both flows. */
const WEB: TestOidcClient = {
  clientId: 'web',
  clientSecret: 'web-secret',
  authMethod: 'client_secret_basic',
  grantTypes: ['authorization_code', 'implicit', 'refresh_token'],
};
/** Public, implicit only. */
const SPA: TestOidcClient = { clientId: 'spa', authMethod: 'none', grantTypes: ['implicit'] };

// expect.any() is typed any; as unknown it fits in object literals.
const anyString: unknown = expect.any(String);
const anyNumber: unknown = expect.any(Number);

const servers: TestOidcServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(opts: Partial<TestOidcServerOptions> = {}): Promise<TestOidcServer> {
  const server = await startTestOidcServer({
    accessTokenTtlSec: 45,
    clients: [WEB, SPA],
    login: { users: [ALICE, BOB] },
    ...opts,
  });
  servers.push(server);
  return server;
}

function totp(user: TestOidcUser): string {
  return generateSync({ secret: user.totpSecret });
}

interface Page {
  status: number;
  url: string;
  html: string;
  $: cheerio.CheerioAPI;
}

/** A headless browser: a cookie jar, redirects followed by hand, stopping at the redirect URI. */
class Browser {
  private readonly jar = new CookieJar();
  private last: URL | undefined;

  /** The redirect to the redirect URI that ended the last flow. */
  get callback(): URL | undefined {
    return this.last;
  }

  forgetCallback(): void {
    this.last = undefined;
  }

  /** GETs `url` and follows redirects; the page reached, or undefined at the redirect URI. */
  async get(url: string): Promise<Page | undefined> {
    return this.follow(await this.send(url, 'GET'), url);
  }

  /** Submits the form with this id, with its fields (hidden ones included) and `values`. */
  async submit(from: Page, formId: string, values: Record<string, string>): Promise<Page | undefined> {
    const form = from.$(`form#${formId}`);
    expect(form.length, `form#${formId} on ${from.url}`).toBe(1);
    expect(form.attr('method')?.toLowerCase()).toBe('post');
    const body = new URLSearchParams();
    for (const input of form.find('input[name]').toArray()) {
      const name = from.$(input).attr('name') ?? '';
      body.set(name, values[name] ?? from.$(input).attr('value') ?? '');
    }
    for (const name of Object.keys(values)) {
      expect(body.has(name), `field ${name} in form#${formId}`).toBe(true);
    }
    const action = new URL(form.attr('action') ?? '', from.url).href;
    return this.follow(await this.send(action, 'POST', body), action);
  }

  private async send(url: string, method: 'GET' | 'POST', body?: URLSearchParams): Promise<Response> {
    const cookie = await this.jar.getCookieString(url);
    const res = await fetch(url, {
      method,
      redirect: 'manual',
      headers: {
        ...(cookie ? { cookie } : {}),
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      ...(body ? { body: body.toString() } : {}),
    });
    for (const header of res.headers.getSetCookie()) await this.jar.setCookie(header, url);
    return res;
  }

  private async follow(first: Response, firstUrl: string): Promise<Page | undefined> {
    let res = first;
    let url = firstUrl;
    for (let hops = 0; res.status >= 300 && res.status < 400; hops++) {
      expect(hops).toBeLessThan(10);
      const location = res.headers.get('location');
      expect(location).toEqual(expect.any(String));
      await res.body?.cancel();
      url = new URL(location ?? '', url).href;
      if (url.startsWith(DEFAULT_REDIRECT_URI)) {
        this.last = new URL(url);
        return undefined;
      }
      res = await this.send(url, 'GET');
    }
    const html = await res.text();
    return { status: res.status, url, html, $: cheerio.load(html) };
  }
}

function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

function authorizeUrl(server: TestOidcServer, params: Record<string, string>): string {
  const url = new URL(server.authorizationEndpoint);
  url.search = new URLSearchParams({ redirect_uri: DEFAULT_REDIRECT_URI, ...params }).toString();
  return url.href;
}

/** Opens the login page of a fresh code-flow authorization request. */
async function openLogin(
  server: TestOidcServer,
  extra: Record<string, string> = {},
): Promise<{ browser: Browser; page: Page; verifier: string; state: string }> {
  const { verifier, challenge } = pkcePair();
  const state = randomBytes(8).toString('hex');
  const browser = new Browser();
  const page = await browser.get(
    authorizeUrl(server, {
      client_id: WEB.clientId,
      response_type: 'code',
      scope: 'openid offline_access',
      state,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      ...extra,
    }),
  );
  if (!page) throw new Error('no login page');
  return { browser, page, verifier, state };
}

async function passwordStep(browser: Browser, page: Page, user: TestOidcUser): Promise<Page> {
  const otpPage = await browser.submit(page, 'login-form', {
    username: user.username,
    password: user.password,
  });
  if (!otpPage) throw new Error('no TOTP page');
  expect(otpPage.$('form#otp-form').length).toBe(1);
  return otpPage;
}

async function redeemCode(
  server: TestOidcServer,
  code: string,
  verifier: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(server.tokenEndpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${WEB.clientId}:${WEB.clientSecret ?? ''}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: DEFAULT_REDIRECT_URI,
      code_verifier: verifier,
    }).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('test OIDC server interactive login', () => {
  it('code flow with PKCE: login form, TOTP form, code, refresh token', async () => {
    const server = await start();
    const { browser, page, verifier, state } = await openLogin(server);

    expect(page.status).toBe(200);
    expect(page.url).toMatch(new RegExp(`^${server.issuer}/interaction/[\\w-]+$`));
    const uid = new URL(page.url).pathname.split('/')[2] ?? '';
    const form = page.$('form#login-form');
    expect(form.attr('method')).toBe('post');
    expect(form.attr('action')).toBe(`/interaction/${uid}/login`);
    expect(form.find('input[type=hidden][name=csrf]').attr('value')).toMatch(/^[\w-]{16,}$/);
    expect(form.find('input[name=username]').length).toBe(1);
    expect(form.find('input[type=password][name=password]').length).toBe(1);

    const otpPage = await passwordStep(browser, page, ALICE);
    expect(otpPage.status).toBe(200);
    const otpForm = otpPage.$('form#otp-form');
    expect(otpForm.attr('action')).toBe(`/interaction/${uid}/otp`);
    expect(otpForm.find('input[name=otp]').length).toBe(1);
    expect(otpForm.find('input[type=hidden][name=csrf]').length).toBe(1);

    const code = totp(ALICE);
    expect(await browser.submit(otpPage, 'otp-form', { otp: code })).toBeUndefined();
    const callback = browser.callback;
    if (!callback) throw new Error('no redirect to the client');
    expect(`${callback.origin}${callback.pathname}`).toBe(DEFAULT_REDIRECT_URI);
    expect(callback.searchParams.get('state')).toBe(state);
    expect(callback.searchParams.get('iss')).toBe(server.issuer);
    const authCode = callback.searchParams.get('code') ?? '';
    expect(authCode).not.toBe('');

    // Without prompt=consent oidc-provider drops offline_access, and still issues a refresh token.
    const tokens = await redeemCode(server, authCode, verifier);
    expect(tokens.status).toBe(200);
    expect(tokens.body).toMatchObject({
      access_token: anyString,
      refresh_token: anyString,
      id_token: anyString,
      expires_in: 45,
      token_type: 'Bearer',
    });
    const refreshToken = String(tokens.body.refresh_token);
    expect(await server.isAccessTokenActive(String(tokens.body.access_token))).toBe(true);
    expect(server.refreshTokenState(refreshToken)).toBe('current');

    // The chain from a login rotates like a seeded one.
    const refreshed = await fetch(server.tokenEndpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${WEB.clientId}:${WEB.clientSecret ?? ''}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString(),
    });
    expect(refreshed.status).toBe(200);
    const next = (await refreshed.json()) as { refresh_token?: string; access_token: string };
    expect(next.refresh_token).toEqual(expect.any(String));
    expect(next.refresh_token).not.toBe(refreshToken);
    expect(server.refreshTokenState(refreshToken)).toBe('consumed');
    expect(server.refreshLog()).toEqual([expect.objectContaining({ presented: 'current', status: 200 })]);

    // The code works once only.
    expect((await redeemCode(server, authCode, verifier)).body).toMatchObject({ error: 'invalid_grant' });

    expect(server.loginAttempts()).toEqual([{ at: anyNumber, username: 'alice', passwordOk: true }]);
    expect(server.totpCodesReceived()).toEqual([{ at: anyNumber, code, accepted: true }]);
    expect(server.serverErrors()).toEqual([]);
  });

  it('requires PKCE for the code flow', async () => {
    const server = await start();
    const res = await fetch(
      authorizeUrl(server, { client_id: WEB.clientId, response_type: 'code', scope: 'openid', state: 's' }),
      { redirect: 'manual' },
    );
    expect(res.status).toBe(303);
    const location = new URL(res.headers.get('location') ?? '');
    expect(location.searchParams.get('error')).toBe('invalid_request');
    expect(location.searchParams.get('error_description')).toMatch(/PKCE/);
  });

  it.each([
    ['a confidential client', WEB.clientId],
    ['a public client', SPA.clientId],
  ])('implicit flow (response_type=token) for %s: #access_token in the redirect', async (_, clientId) => {
    const server = await start();
    const browser = new Browser();
    const state = randomBytes(8).toString('hex');
    const page = await browser.get(
      authorizeUrl(server, { client_id: clientId, response_type: 'token', scope: 'openid', state }),
    );
    if (!page) throw new Error('no login page');
    const otpPage = await passwordStep(browser, page, BOB);
    expect(await browser.submit(otpPage, 'otp-form', { otp: totp(BOB) })).toBeUndefined();

    const callback = browser.callback;
    expect(callback?.search).toBe('');
    const fragment = new URLSearchParams(callback?.hash.slice(1));
    expect(fragment.get('token_type')).toBe('Bearer');
    expect(fragment.get('expires_in')).toBe('45');
    expect(fragment.get('state')).toBe(state);
    expect(fragment.has('refresh_token')).toBe(false);
    expect(fragment.has('code')).toBe(false);
    const accessToken = fragment.get('access_token') ?? '';
    expect(accessToken).not.toBe('');
    expect(await server.isAccessTokenActive(accessToken)).toBe(true);
    expect(server.serverErrors()).toEqual([]);
  });

  it('advertises response_type token in discovery', async () => {
    const server = await start();
    const res = await fetch(`${server.issuer}/.well-known/openid-configuration`);
    const metadata = (await res.json()) as {
      response_types_supported: string[];
      grant_types_supported: string[];
    };
    expect(metadata.response_types_supported).toEqual(expect.arrayContaining(['code', 'token']));
    expect(metadata.grant_types_supported).toEqual(
      expect.arrayContaining(['authorization_code', 'implicit', 'refresh_token']),
    );
  });

  it('a wrong password or an unknown user gets the login form again', async () => {
    const server = await start();
    const { browser, page, verifier } = await openLogin(server);

    const again = await browser.submit(page, 'login-form', { username: 'alice', password: 'wrong' });
    expect(again?.status).toBe(200);
    expect(again?.$('form#login-form').length).toBe(1);
    expect(again?.$('form#otp-form').length).toBe(0);
    expect(again?.$('.error').text()).toBe('Invalid username or password');
    expect(again?.$('input[name=username]').attr('value')).toBe('alice');
    expect(again?.$('input[name=password]').attr('value')).toBeUndefined();

    const unknown =
      again && (await browser.submit(again, 'login-form', { username: 'mallory', password: 'x' }));
    expect(unknown?.$('form#login-form').length).toBe(1);
    expect(unknown?.html).toContain('Invalid username or password');

    if (!unknown) throw new Error('no login page');
    const otpPage = await passwordStep(browser, unknown, ALICE);
    expect(await browser.submit(otpPage, 'otp-form', { otp: totp(ALICE) })).toBeUndefined();
    const tokens = await redeemCode(server, browser.callback?.searchParams.get('code') ?? '', verifier);
    expect(tokens.status).toBe(200);

    expect(server.loginAttempts().map(({ username, passwordOk }) => ({ username, passwordOk }))).toEqual([
      { username: 'alice', passwordOk: false },
      { username: 'mallory', passwordOk: false },
      { username: 'alice', passwordOk: true },
    ]);
    expect(server.totpCodesReceived()).toHaveLength(1);
  });

  it('a wrong TOTP code gets the TOTP form again', async () => {
    const server = await start();
    const { browser, page } = await openLogin(server);
    const otpPage = await passwordStep(browser, page, ALICE);

    const right = totp(ALICE);
    const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, '0');
    const again = await browser.submit(otpPage, 'otp-form', { otp: wrong });
    expect(again?.status).toBe(200);
    expect(again?.$('form#otp-form').length).toBe(1);
    expect(again?.$('.error').text()).toBe('Invalid authenticator code');

    const malformed = again && (await browser.submit(again, 'otp-form', { otp: 'abc' }));
    expect(malformed?.$('form#otp-form').length).toBe(1);
    // The secret of another user does not do either.
    const bobsCode = totp(BOB);
    const bobs = malformed && (await browser.submit(malformed, 'otp-form', { otp: bobsCode }));
    expect(bobs?.$('form#otp-form').length).toBe(1);

    if (!bobs) throw new Error('no TOTP page');
    expect(await browser.submit(bobs, 'otp-form', { otp: right })).toBeUndefined();
    expect(browser.callback?.searchParams.get('code')).toEqual(expect.any(String));
    expect(server.totpCodesReceived().map(({ code, accepted }) => ({ code, accepted }))).toEqual([
      { code: wrong, accepted: false },
      { code: 'abc', accepted: false },
      { code: bobsCode, accepted: false },
      { code: right, accepted: true },
    ]);
  });

  it('the same TOTP code is accepted once per user: a second login in the same step is refused', async () => {
    const server = await start();
    const first = await openLogin(server);
    const second = await openLogin(server);
    const firstOtp = await passwordStep(first.browser, first.page, ALICE);
    const secondOtp = await passwordStep(second.browser, second.page, ALICE);

    const code = totp(ALICE);
    expect(await first.browser.submit(firstOtp, 'otp-form', { otp: code })).toBeUndefined();
    const refused = await second.browser.submit(secondOtp, 'otp-form', { otp: code });
    expect(refused?.$('form#otp-form').length).toBe(1);
    expect(refused?.$('.error').text()).toBe('Invalid authenticator code');
    expect(second.browser.callback).toBeUndefined();

    // Another user's codes are their own.
    const bob = await openLogin(server);
    const bobOtp = await passwordStep(bob.browser, bob.page, BOB);
    const bobsCode = totp(BOB);
    expect(await bob.browser.submit(bobOtp, 'otp-form', { otp: bobsCode })).toBeUndefined();

    expect(server.totpCodesReceived().map(({ code: c, accepted }) => ({ code: c, accepted }))).toEqual([
      { code, accepted: true },
      { code, accepted: false },
      { code: bobsCode, accepted: true },
    ]);
  });

  it('serves the configured form ids and field names', async () => {
    const server = await start({
      login: {
        users: [ALICE],
        fields: {
          loginFormId: 'kc-form-login',
          usernameField: 'user',
          passwordField: 'pass',
          otpFormId: 'kc-otp-login-form',
          otpField: 'totp',
        },
      },
    });
    const { browser, page, verifier } = await openLogin(server);
    expect(page.$('form#login-form').length).toBe(0);
    const otpPage = await browser.submit(page, 'kc-form-login', { user: 'alice', pass: ALICE.password });
    if (!otpPage) throw new Error('no TOTP page');
    expect(otpPage.$('form#kc-otp-login-form input[name=totp]').length).toBe(1);
    expect(await browser.submit(otpPage, 'kc-otp-login-form', { totp: totp(ALICE) })).toBeUndefined();
    const tokens = await redeemCode(server, browser.callback?.searchParams.get('code') ?? '', verifier);
    expect(tokens.body.refresh_token).toEqual(expect.any(String));
  });

  it('refuses a post with a wrong CSRF field or without the interaction cookie', async () => {
    const server = await start();
    const { page } = await openLogin(server);
    const action = new URL(page.$('form#login-form').attr('action') ?? '', page.url).href;
    const form = new URLSearchParams({ username: 'alice', password: ALICE.password }).toString();
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };

    // Without cookies: the interaction is unknown to this client.
    const noCookie = await fetch(action, { method: 'POST', headers, body: form, redirect: 'manual' });
    expect(noCookie.status).toBe(400);
    expect(await noCookie.text()).toContain('session expired');

    const { browser, page: fresh } = await openLogin(server);
    const noCsrf = await browser.submit(fresh, 'login-form', {
      username: 'alice',
      password: ALICE.password,
      csrf: 'x',
    });
    expect(noCsrf?.status).toBe(403);
    expect(server.loginAttempts()).toEqual([]);
  });

  it('an authorization request while signed in goes straight back to the client', async () => {
    const server = await start();
    const { browser, page } = await openLogin(server);
    const otpPage = await passwordStep(browser, page, ALICE);
    expect(await browser.submit(otpPage, 'otp-form', { otp: totp(ALICE) })).toBeUndefined();
    browser.forgetCallback();

    // The session cookie: no forms this time, for either flow or another client.
    const { challenge } = pkcePair();
    expect(
      await browser.get(
        authorizeUrl(server, {
          client_id: WEB.clientId,
          response_type: 'code',
          scope: 'openid',
          code_challenge: challenge,
          code_challenge_method: 'S256',
        }),
      ),
    ).toBeUndefined();
    expect(browser.callback?.searchParams.get('code')).toEqual(expect.any(String));
    expect(
      await browser.get(
        authorizeUrl(server, { client_id: SPA.clientId, response_type: 'token', scope: 'openid' }),
      ),
    ).toBeUndefined();
    expect(new URLSearchParams(browser.callback?.hash.slice(1)).get('access_token')).toEqual(
      expect.any(String),
    );
    expect(server.totpCodesReceived()).toHaveLength(1);
    expect(server.serverErrors()).toEqual([]);
  });

  it('rejects a login configuration with an unusable TOTP secret', async () => {
    await expect(
      startTestOidcServer({ login: { users: [{ ...ALICE, totpSecret: 'not base32!' }] } }),
    ).rejects.toThrow(/alice: unusable totpSecret/);
  });
});
