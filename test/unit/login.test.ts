import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateSecret } from 'otplib';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/kube/clock.ts';
import {
  isLoginFailure,
  OAuthClient,
  parseTotpSecret,
  TokenError,
  TotpGenerator,
  type EndpointPolicy,
  type LoginParams,
  type LoginResult,
  type TransportOptions,
} from '../../src/oauth/index.ts';
import { DEFAULT_MAX_PAGES, pageBudget } from '../../src/oauth/login.ts';
import { formProfileFor } from '../../src/providers/configure.ts';
import { presetDefaults } from '../../src/providers/presets.ts';
import { FakeClock } from '../harness/fake-clock.ts';
import { startLoginServer, type LoginServer, type LoginServerOptions } from '../harness/login-server.ts';

const USERNAME = 'alice.canary@example.com';
const PASSWORD = 'pw-CANARY-d2f1 &=+%';
const TOTP_SECRET = generateSecret();
const policy: EndpointPolicy = { allowInsecureHttp: true };
const KEYCLOAK_FORM = {
  loginFormSelector: 'form#kc-form-login',
  usernameField: 'username',
  passwordField: 'password',
  otpFormSelector: 'form#kc-otp-login-form',
  otpField: 'otp',
};

/** Servers and clients to close after each test. */
const open: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function server(options: LoginServerOptions = {}): Promise<LoginServer> {
  const started = await startLoginServer({
    username: USERNAME,
    password: PASSWORD,
    totpSecret: TOTP_SECRET,
    ...options,
  });
  open.push(started);
  return started;
}

/** Logs in through a new OAuthClient whose transport has the test policy and a 5 s cap by default. */
function login(params: LoginParams, transport: Partial<TransportOptions> = {}): Promise<LoginResult> {
  const oauth = new OAuthClient({ clock: systemClock, transport: { policy, timeoutMs: 5000, ...transport } });
  open.push(oauth);
  return oauth.login(params);
}

interface Front {
  /** The login server's authorization endpoint, reached through this server. */
  authorizationEndpoint: string;
  /** Path and query of every request received, in order. */
  urls: string[];
}

/**
 * An HTTP server in front of a login server, on a port of its own: it records every request and
 * passes it on unchanged, or without its Cookie header (`dropCookies`), or never answers (`silent`).
 * The login server's redirects are relative, so a walk that starts here stays here.
 */
async function front(
  target: LoginServer,
  options: { dropCookies?: boolean; silent?: boolean } = {},
): Promise<Front> {
  const urls: string[] = [];
  const relay = createServer((req, res) => {
    urls.push(req.url ?? '');
    if (options.silent === true) return;
    const headers = { ...req.headers };
    if (options.dropCookies === true) delete headers.cookie;
    const upstream = request(
      new URL(req.url ?? '/', target.origin),
      { method: req.method, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      res.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  open.push({
    close: () =>
      new Promise<void>((resolve) => {
        relay.closeAllConnections();
        relay.close(() => {
          resolve();
        });
      }),
  });
  const origin = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
  return { authorizationEndpoint: target.authorizationEndpoint.replace(target.origin, origin), urls };
}

/** Runs work to completion, moving the fake clock on whenever something waits on it. */
async function drive<T>(clock: FakeClock, work: Promise<T>): Promise<T> {
  const progress = { done: false };
  const settled = work.finally(() => {
    progress.done = true;
  });
  settled.catch(() => undefined);
  while (!progress.done) {
    if (clock.pendingTimers() > 0) await clock.advance(1000);
    else await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return settled;
}

function params(srv: LoginServer, generator: TotpGenerator, extra: Partial<LoginParams> = {}): LoginParams {
  return {
    authorizationEndpoint: srv.authorizationEndpoint,
    clientID: 'test-client',
    redirectURI: srv.redirectURI,
    flow: 'code',
    scopes: ['openid', 'offline_access'],
    username: USERNAME,
    password: PASSWORD,
    totp: generator.supplier(parseTotpSecret(TOTP_SECRET)),
    form: KEYCLOAK_FORM,
    ...extra,
  };
}

/** A fake clock shared by the server's TOTP check and the generator. */
function fakeTime(): { clock: FakeClock; generator: TotpGenerator; now: () => number } {
  const clock = new FakeClock(Date.parse('2026-03-01T12:00:07Z'));
  return { clock, generator: new TotpGenerator({ clock }), now: () => clock.now() };
}

/** The failure, checked to be a TokenError that exposes none of the secrets. */
async function failure(work: Promise<LoginResult>, srv?: LoginServer): Promise<TokenError> {
  let caught: unknown;
  try {
    await work;
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TokenError);
  const err = caught as TokenError;
  const exposed = `${err.message} ${JSON.stringify(err)} ${err.description ?? ''}`;
  for (const secret of [PASSWORD, USERNAME, TOTP_SECRET, ...(srv?.otpCodes ?? [])]) {
    expect(exposed).not.toContain(secret);
  }
  expect(exposed).not.toContain('/realms/');
  return err;
}

function noCallback(srv: LoginServer): void {
  expect(srv.requests.filter((r) => r.path === '/callback')).toEqual([]);
}

describe('login: code flow', () => {
  it('returns a code, its PKCE verifier and the checked state; never fetches the redirect URI', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    const result = await drive(clock, login(params(srv, generator)));
    expect(result.flow).toBe('code');
    if (result.flow !== 'code') return;
    expect(srv.issuedCodes.has(result.code)).toBe(true);
    expect(srv.pkceMatches(result.code, result.codeVerifier)).toBe(true);
    expect(result.state).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(result.redirectURI).toBe(srv.redirectURI);
    expect(srv.issuedCodes.get(result.code)).toMatchObject({
      clientID: 'test-client',
      redirectURI: srv.redirectURI,
      codeChallengeMethod: 'S256',
    });
    expect(srv.passwordSubmissions()).toBe(1);
    expect(srv.otpCodes).toHaveLength(1);
    noCallback(srv);
  });

  it('honours hidden fields, default values, the submit button and the relative action', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    await drive(clock, login(params(srv, generator)));
    const form = srv.loginForms[0];
    expect(form?.get('csrf')).toMatch(/.{10,}/);
    expect(form?.get('tenant')).toBe('main');
    expect(form?.get('locale')).toBe('en');
    expect(form?.get('login')).toBe('Sign In');
    expect(form?.get('username')).toBe(USERNAME);
    expect(form?.get('password')).toBe(PASSWORD);
    for (const absent of ['cancel', 'rememberMe', 'disabledField', 'q'])
      expect(form?.has(absent)).toBe(false);
    expect(srv.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'GET /realms/test/protocol/openid-connect/auth',
      'GET /realms/test/login-actions/authenticate',
      'POST /realms/test/login-actions/authenticate',
      'POST /realms/test/login-actions/otp',
    ]);
  });

  it('finds the forms by their fields when the profile has no selectors', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    const form = { usernameField: 'username', passwordField: 'password', otpField: 'otp' };
    const result = await drive(clock, login(params(srv, generator, { form })));
    expect(result.flow).toBe('code');
  });

  it('follows a redirect to a TOTP page and custom field names', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({
      now,
      otpPageViaRedirect: true,
      fields: { username: 'UserName', password: 'Password', otp: 'Code', csrf: '__RequestVerificationToken' },
    });
    const form = { usernameField: 'UserName', passwordField: 'Password', otpField: 'Code' };
    const result = await drive(clock, login(params(srv, generator, { form })));
    expect(result.flow).toBe('code');
    expect(srv.requests.map((r) => `${r.method} ${r.path}`)).toContain('GET /realms/test/login-actions/otp');
  });

  it('walks a username-first flow (username page, then password page)', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now, usernameFirst: true });
    const result = await drive(clock, login(params(srv, generator)));
    expect(result.flow).toBe('code');
    expect(srv.loginForms.map((f) => [f.get('username'), f.has('password')])).toEqual([
      [USERNAME, false],
      [null, true],
    ]);
    expect(srv.passwordSubmissions()).toBe(1);
  });

  it('logs in without a TOTP step when the provider asks for none', async () => {
    const srv = await server({ totpSecret: undefined });
    const result = await login(params(srv, new TotpGenerator(), { totp: undefined }));
    expect(result.flow).toBe('code');
  });

  it('keeps the session cookie the server requires', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    await drive(clock, login(params(srv, generator)));
    expect(srv.requests[0]?.hadSessionCookie).toBe(false);
    expect(srv.requests.slice(1).every((r) => r.hadSessionCookie)).toBe(true);

    // Without the cookie the server refuses: the test server really depends on the jar.
    const srv2 = await server({ now });
    const cookieless = await front(srv2, { dropCookies: true });
    const err = await failure(
      drive(
        clock,
        login(params(srv2, generator, { authorizationEndpoint: cookieless.authorizationEndpoint })),
      ),
      srv2,
    );
    expect(err.reason).toBe('ProviderError');
    expect(err.httpStatus).toBe(400);
    expect(srv2.passwordSubmissions()).toBe(0);
  });
});

describe('login: implicit flow', () => {
  it('reads the access token from the fragment', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    const result = await drive(clock, login(params(srv, generator, { flow: 'implicit' })));
    expect(result).toMatchObject({ flow: 'implicit', tokenType: 'Bearer', expiresInSec: 600 });
    if (result.flow !== 'implicit') return;
    expect(result.accessToken).toMatch(/^at-/);
    expect(srv.issuedCodes.size).toBe(0);
    noCallback(srv);
  });
});

describe('login: failures', () => {
  it('wrong password: WrongCredentials after exactly one password submission', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    const err = await failure(
      drive(clock, login(params(srv, generator, { password: `${PASSWORD}-wrong` }))),
      srv,
    );
    expect(err.reason).toBe('WrongCredentials');
    expect(err.code).toBe('configuration');
    expect(isLoginFailure(err, 'WrongCredentials')).toBe(true);
    expect(srv.passwordSubmissions()).toBe(1);
    expect(srv.otpCodes).toEqual([]);
  });

  it('an unknown username in a username-first flow: WrongCredentials, no password sent', async () => {
    const srv = await server({ usernameFirst: true });
    const err = await failure(login(params(srv, new TotpGenerator(), { username: 'mallory' })), srv);
    expect(err.reason).toBe('WrongCredentials');
    expect(srv.passwordSubmissions()).toBe(0);
    expect(srv.loginForms).toHaveLength(1);
  });

  it('a rejected password served with HTTP 401 is still WrongCredentials, once', async () => {
    const srv = await server({ rejectPassword: true, wrongPasswordStatus: 401 });
    const err = await failure(login(params(srv, new TotpGenerator())), srv);
    expect(err.reason).toBe('WrongCredentials');
    expect(srv.passwordSubmissions()).toBe(1);
  });

  it('wrong TOTP secret: WrongTotp after one retry with the next code', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    const wrong = generator.supplier(parseTotpSecret(generateSecret()));
    const err = await failure(drive(clock, login(params(srv, generator, { totp: wrong }))), srv);
    expect(err.reason).toBe('WrongTotp');
    expect(srv.passwordSubmissions()).toBe(1);
    expect(srv.otpCodes).toHaveLength(2);
    expect(new Set(srv.otpCodes).size).toBe(2);
  });

  it('WrongTotp after a single code when retries are off', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now, rejectOtp: true });
    const err = await failure(drive(clock, login(params(srv, generator, { retryWrongTotp: false }))), srv);
    expect(err.reason).toBe('WrongTotp');
    expect(srv.otpCodes).toHaveLength(1);
  });

  it('a TOTP page without a TOTP supplier is LoginFormUnexpected', async () => {
    const srv = await server();
    const err = await failure(login(params(srv, new TotpGenerator(), { totp: undefined })), srv);
    expect(err.reason).toBe('LoginFormUnexpected');
    expect(err.message).toMatch(/no TOTP secret/);
  });

  it('forms that do not match the profile: LoginFormUnexpected, nothing submitted', async () => {
    const srv = await server({ wrongFieldNames: true });
    const err = await failure(login(params(srv, new TotpGenerator())), srv);
    expect(err.reason).toBe('LoginFormUnexpected');
    expect(err.code).toBe('configuration');
    expect(srv.loginForms).toHaveLength(0);
  });

  it.each([
    ['loginFormSelector', 'form#[', /not a valid CSS selector/],
    ['loginFormSelector', '*:has(*:has(x))', /universal selector/],
    ['loginFormSelector', 'form:has(input[name=password])', /pseudo-classes \(:has\)/],
    ['otpFormSelector', 'form#kc-otp-login-form, form', /selector lists/],
    ['otpFormSelector', 'h1 ~ form', /combinators/],
  ])('%s %s is InvalidSelector, refused before anything is sent', async (field, selector, problem) => {
    const srv = await server();
    const form = { ...KEYCLOAK_FORM, [field]: selector };
    const err = await failure(login(params(srv, new TotpGenerator(), { form })), srv);
    expect(err).toMatchObject({ code: 'configuration', reason: 'InvalidSelector' });
    expect(err.message).toContain(field);
    expect(err.message).toMatch(problem);
    expect(srv.requests).toHaveLength(0);
  });

  it('a non-HTML page, a redirect loop, too many pages and an oversized page are LoginFormUnexpected', async () => {
    const cases: [Partial<LoginServerOptions>, Partial<LoginParams>, Partial<TransportOptions>, RegExp][] = [
      [{ nonHtml: true }, {}, {}, /content type application\/json/],
      [{ redirectLoop: true }, {}, {}, /too many redirects/],
      [{}, { maxPages: 1 }, {}, /after 1 pages/],
      // Below 1 is 1: a budget never turns the bound off.
      [{}, { maxPages: 0 }, {}, /after 1 pages/],
      [{}, { maxPages: -Infinity }, {}, /after 1 pages/],
      [{}, {}, { maxResponseBytes: 200 }, /size limit/],
    ];
    for (const [options, extra, transport, message] of cases) {
      const srv = await server(options);
      const err = await failure(login(params(srv, new TotpGenerator(), extra), transport), srv);
      expect(err.reason).toBe('LoginFormUnexpected');
      expect(err.message).toMatch(message);
    }
  });

  it('an error redirect is ProviderError with the sanitised OAuth error', async () => {
    const srv = await server({
      errorRedirect: {
        error: 'access_denied',
        description: `user ${USERNAME} may not log in, password=${PASSWORD}`,
      },
    });
    const err = await failure(login(params(srv, new TotpGenerator())), srv);
    expect(err.reason).toBe('ProviderError');
    expect(err.code).toBe('configuration');
    expect(err.oauthError).toBe('access_denied');
    expect(err.message).toMatch(/access_denied/);
    noCallback(srv);

    srv.configure({ errorRedirect: { error: 'temporarily_unavailable' } });
    const transient = await failure(login(params(srv, new TotpGenerator())), srv);
    expect(transient.code).toBe('transient');
  });

  it('a 5xx page is a transient ProviderError; a wrong state is a ProviderError', async () => {
    const broken = await server({ serverError: true });
    const err = await failure(login(params(broken, new TotpGenerator())), broken);
    expect(err).toMatchObject({ reason: 'ProviderError', code: 'transient', httpStatus: 500 });

    const { clock, generator, now } = fakeTime();
    const forged = await server({ now, wrongState: true });
    const mismatch = await failure(drive(clock, login(params(forged, generator))), forged);
    expect(mismatch.reason).toBe('ProviderError');
    expect(mismatch.message).toMatch(/state does not match/);
  });

  it('a provider that does not answer in time is a transient ProviderError', async () => {
    const srv = await server();
    const silent = await front(srv, { silent: true });
    const err = await failure(
      login(params(srv, new TotpGenerator(), { authorizationEndpoint: silent.authorizationEndpoint }), {
        timeoutMs: 50,
      }),
    );
    expect(err).toMatchObject({ reason: 'ProviderError', code: 'transient' });
    expect(err.message).toMatch(/did not answer in time/);
    // The request did arrive: it is the answer that never came.
    expect(silent.urls).toHaveLength(1);
  });
});

describe('login: one deadline for the whole walk', () => {
  /** A server that answers every request, after `delayMs`, with a redirect to itself: endless. */
  async function slowRedirects(delayMs: number): Promise<{ url: string; hits: () => number }> {
    let hits = 0;
    const loop = createServer((req, res) => {
      hits++;
      setTimeout(() => {
        res.writeHead(302, { location: `/step-${String(hits)}` }).end();
      }, delayMs);
    });
    await new Promise<void>((resolve) => loop.listen(0, '127.0.0.1', resolve));
    open.push({
      close: () =>
        new Promise<void>((resolve) => {
          loop.closeAllConnections();
          loop.close(() => {
            resolve();
          });
        }),
    });
    return { url: `http://127.0.0.1:${(loop.address() as AddressInfo).port}/auth`, hits: () => hits };
  }

  it.each([
    {
      name: 'a provider that never answers (the request cap is far longer)',
      setup: async (srv: LoginServer) => ({
        authorizationEndpoint: (await front(srv, { silent: true })).authorizationEndpoint,
      }),
    },
    {
      name: 'redirects answered just inside the request cap, one after another',
      setup: async () => ({ authorizationEndpoint: (await slowRedirects(60)).url }),
    },
    {
      name: 'a wait for a TOTP code that never comes (the supplier ignores the signal)',
      setup: () => Promise.resolve({ totp: () => new Promise<string>(() => undefined) }),
    },
  ])('ends with LoginDeadlineExceeded: $name', async ({ setup }) => {
    const srv = await server();
    const started = performance.now();
    const err = await failure(
      login(params(srv, new TotpGenerator(), { ...(await setup(srv)), deadlineMs: 400 }), {
        timeoutMs: 30_000,
      }),
    );
    const elapsedMs = performance.now() - started;
    expect(err).toMatchObject({ code: 'configuration', reason: 'LoginDeadlineExceeded' });
    expect(err.message).toMatch(/did not finish within its deadline of 0.4 s .*host 127\.0\.0\.1/);
    expect(elapsedMs).toBeGreaterThanOrEqual(390);
    expect(elapsedMs).toBeLessThan(2_000);
  });

  it('stops sending at the deadline', async () => {
    const srv = await server();
    const loop = await slowRedirects(60);
    await failure(
      login(params(srv, new TotpGenerator(), { authorizationEndpoint: loop.url, deadlineMs: 300 })),
    );
    const atDeadline = loop.hits();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(atDeadline).toBeGreaterThan(1);
    expect(atDeadline).toBeLessThanOrEqual(6);
    expect(loop.hits()).toBe(atDeadline);
  });

  it("reports the caller's own abort as such, not as the deadline", async () => {
    const srv = await server();
    const silent = await front(srv, { silent: true });
    const caller = new AbortController();
    const reason = new Error('reconcile deadline');
    setTimeout(() => {
      caller.abort(reason);
    }, 100);
    const work = login(
      params(srv, new TotpGenerator(), {
        authorizationEndpoint: silent.authorizationEndpoint,
        deadlineMs: 5_000,
        signal: caller.signal,
      }),
    );
    await expect(work).rejects.toBe(reason);
  });
});

describe('login: the page budget', () => {
  it.each([
    [undefined, DEFAULT_MAX_PAGES],
    [Number.NaN, DEFAULT_MAX_PAGES],
    [0, 1],
    [-3, 1],
    [1, 1],
    [2.7, 2],
    [4, 4],
    [DEFAULT_MAX_PAGES, DEFAULT_MAX_PAGES],
    // A caller can lower the bound, never raise it.
    [DEFAULT_MAX_PAGES + 1, DEFAULT_MAX_PAGES],
    [1e9, DEFAULT_MAX_PAGES],
    [Number.POSITIVE_INFINITY, DEFAULT_MAX_PAGES],
  ])('maxPages %s reads at most %i pages', (maxPages, expected) => {
    expect(DEFAULT_MAX_PAGES).toBe(10);
    expect(pageBudget(maxPages)).toBe(expected);
  });

  it('a budget above the default still logs in (the default bounds it)', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now });
    const result = await drive(clock, login(params(srv, generator, { maxPages: 1e9 })));
    expect(result.flow).toBe('code');
  });
});

describe('login: parameters', () => {
  it('refuses unusable parameters before sending anything', async () => {
    const srv = await server();
    const generator = new TotpGenerator();
    const cases: [Partial<LoginParams>, string][] = [
      [{ password: '' }, 'MissingCredential'],
      [{ clientID: '' }, 'MissingClientID'],
      [{ redirectURI: '/callback' }, 'InvalidRedirectURI'],
      [{ authorizationEndpoint: 'not a url' }, 'MissingAuthorizationEndpoint'],
    ];
    for (const [extra, reason] of cases) {
      const err = await failure(login(params(srv, generator, extra)));
      expect(err).toMatchObject({ code: 'configuration', reason });
    }
    expect(srv.requests).toHaveLength(0);
  });

  it('sends extra authorization parameters but never lets them override its own', async () => {
    const srv = await server({ totpSecret: undefined });
    const recorder = await front(srv);
    await login(
      params(srv, new TotpGenerator(), {
        totp: undefined,
        authorizationEndpoint: recorder.authorizationEndpoint,
        extraAuthParams: { prompt: 'login', state: 'forged', redirect_uri: 'https://evil.example/' },
      }),
    );
    const first = new URL(recorder.urls[0] ?? '', 'http://x').searchParams;
    expect(first.get('prompt')).toBe('login');
    expect(first.get('state')).not.toBe('forged');
    expect(first.get('redirect_uri')).toBe(srv.redirectURI);
    expect(first.get('code_challenge_method')).toBe('S256');
    expect(first.get('scope')).toBe('openid offline_access');
  });

  it('formProfileFor lays the CRD form over the preset profile field by field', () => {
    const keycloak = presetDefaults('keycloak');
    expect(formProfileFor(keycloak, { otpField: 'totp', loginFormSelector: '' })).toEqual({
      ...KEYCLOAK_FORM,
      otpField: 'totp',
    });
    // The generic preset has no profile of its own.
    expect(formProfileFor(presetDefaults('generic'), { usernameField: 'u', passwordField: 'p' })).toEqual({
      usernameField: 'u',
      passwordField: 'p',
    });
    expect(() => formProfileFor(presetDefaults('exact-online'), {})).toThrow(
      expect.objectContaining({ code: 'configuration', reason: 'MissingLoginForm' }),
    );
  });
});

describe('login: endpoint policy on every hop', () => {
  /** A transport observer: the host of every request sent (a refused one is never sent). */
  function observing(): { hosts: string[]; onRequest: (host: string) => void } {
    const hosts: string[] = [];
    return { hosts, onRequest: (host) => hosts.push(host) };
  }

  it('refuses a redirect to the cloud metadata address without requesting it', async () => {
    const srv = await server({ redirectTo: 'http://169.254.169.254/latest/meta-data/iam/' });
    const rec = observing();
    const err = await failure(login(params(srv, new TotpGenerator()), { onRequest: rec.onRequest }), srv);
    expect(err.code).toBe('insecure_endpoint');
    expect(rec.hosts).toEqual([new URL(srv.origin).host]);
  });

  it('refuses a redirect to a host outside the allow-list', async () => {
    const srv = await server();
    srv.configure({ redirectTo: `${srv.origin.replace('127.0.0.1', 'localhost')}/realms/test/x` });
    const rec = observing();
    const err = await failure(
      login(params(srv, new TotpGenerator()), {
        onRequest: rec.onRequest,
        policy: { allowInsecureHttp: true, allowedHosts: ['127.0.0.1'] },
      }),
      srv,
    );
    expect(err.code).toBe('insecure_endpoint');
    expect(err.message).toMatch(/allowed hosts/);
    expect(rec.hosts).toHaveLength(1);
  });

  it('refuses plain http without allowInsecureHttp before sending anything', async () => {
    const srv = await server();
    const err = await failure(
      login(params(srv, new TotpGenerator()), { policy: { allowInsecureHttp: false } }),
    );
    expect(err.code).toBe('insecure_endpoint');
    expect(srv.requests).toHaveLength(0);
  });
});

describe('login: TOTP codes are never sent twice', () => {
  it('several logins in a row on a fake clock: every code the server received is new', async () => {
    const { clock, generator, now } = fakeTime();
    const srv = await server({ now, lookAroundSteps: 0 });
    for (let i = 0; i < 4; i++) {
      const result = await drive(clock, login(params(srv, generator)));
      expect(result.flow).toBe('code');
    }
    expect(srv.otpCodes).toHaveLength(4);
    expect(srv.reusedOtpCodes).toEqual([]);
    expect(new Set(srv.otpCodes).size).toBe(4);
  });

  it('several logins in a row on the real clock with a 1 s step', async () => {
    const secret = generateSecret();
    const srv = await server({ totpSecret: secret, totpPeriodSec: 1 });
    const generator = new TotpGenerator({ clock: systemClock });
    const totp = generator.supplier(parseTotpSecret(secret, { periodSec: 1 }));
    for (let i = 0; i < 3; i++) {
      const result = await login(params(srv, generator, { totp }));
      expect(result.flow).toBe('code');
    }
    expect(srv.otpCodes).toHaveLength(3);
    expect(srv.reusedOtpCodes).toEqual([]);
  });
});
