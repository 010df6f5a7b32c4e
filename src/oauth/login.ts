// Headless recovery login: walks a provider's HTML login over HTTP the way a browser would, to start
// a new refresh-token chain (code flow with PKCE) or to get an access token (implicit flow) when the
// chain is broken and nobody is there to log in.
//
// The walk: GET the authorization URL; follow redirects by hand (each Location resolved against the
// request URL and checked against the endpoint policy before it is fetched; cookies kept in a jar
// for this login only); on a page with the login form fill username and password, keep every other
// input's default (hidden CSRF fields included) and submit it where and how the form says; on a
// page with the TOTP form fill a code from `totp()`; stop at the first redirect to `redirectURI`
// WITHOUT fetching it, and read `code`/`state` from its query (code flow) or `access_token` from its
// fragment (implicit).
//
// Safety rules:
// - The password is submitted at most once per login. When the login form comes back after it,
//   the login stops with WrongCredentials: no second try that could lock the account.
// - A rejected TOTP code is retried at most once, with the NEXT code (the supplier waits for the
//   next time step; see TotpGenerator), then WrongTotp.
// - Every request goes through the Transport (endpoint policy, pinned address, time and size caps),
//   and the number of pages (at most DEFAULT_MAX_PAGES) and of consecutive redirects is bounded; so
//   are each page's size and nesting and the form selectors' grammar (login-form.ts).
// - The whole walk has one deadline (DEFAULT_LOGIN_DEADLINE_MS unless the caller sets one): every
//   page, redirect and wait for a TOTP step together. Each request's own time cap is not enough: a
//   provider (or a tenant's own server) that answers every page just inside it, through 10 pages and
//   20 redirects each, would hold the worker for hours. Past the deadline the request in flight is
//   aborted and the login ends with LoginDeadlineExceeded.
// - Nothing is logged. Errors are TokenErrors (login-errors.ts) whose messages may name a host,
//   never a path, a query, page text, the username, the password, a TOTP code or an authorization code.
import { calculatePKCECodeChallenge, randomPKCECodeVerifier, randomState } from 'openid-client';
import { withDeadline } from '../kube/clock.ts';
import { sanitizeDescription, sanitizeErrorCode, TokenError } from './errors.ts';
import { configurationError } from './exchange.ts';
import { checkTokenSizes } from './grants.ts';
import { loginError } from './login-errors.ts';
import { analysePage, checkFormProfile, fillForm, type FormProfile, type HtmlForm } from './login-form.ts';
import { isHtml, LoginHttp, type LoginAnswer, type LoginRequest } from './login-http.ts';
import { canonicalTokenType } from './model.ts';
import type { Transport } from './transport.ts';

/**
 * HTML pages one login reads: the default, and the most a caller may ask for. Every page costs a
 * parse on the shared event loop and a request to a host the tenant chose; a real login shows two
 * to four (username, password, one or two TOTP pages).
 */
export const DEFAULT_MAX_PAGES = 10;
/** Consecutive redirects without a page in between (browsers allow 20). */
export const MAX_CONSECUTIVE_REDIRECTS = 20;
/**
 * The whole walk, by default. A real login is a few pages and at most one wait for the next TOTP
 * step (30 s, MAX_PERIOD_SEC at most): seconds to a minute.
 */
export const DEFAULT_LOGIN_DEADLINE_MS = 120_000;

export interface LoginParams {
  authorizationEndpoint: string;
  clientID: string;
  /** Registered redirect URI; the walk stops at the first redirect to it and never fetches it. */
  redirectURI: string;
  flow: 'code' | 'implicit';
  scopes?: readonly string[];
  username: string;
  password: string;
  /**
   * Supplies one TOTP code per call, never the same twice (TotpGenerator.supplier). Without it a
   * TOTP page ends the login with LoginFormUnexpected. It gets the walk's signal, which aborts at the
   * deadline: a wait for the next time step must end there (the walk stops waiting for it anyway).
   */
  totp?: (signal: AbortSignal) => Promise<string>;
  form: FormProfile;
  /** HTML pages read before giving up: 1 to DEFAULT_MAX_PAGES (10, the default); clamped to that. */
  maxPages?: number;
  /** Further authorization request parameters; the ones the driver sets itself are ignored. */
  extraAuthParams?: Readonly<Record<string, string>>;
  /** Submit a second (the next) TOTP code after a rejected one. Default true. */
  retryWrongTotp?: boolean;
  /** The whole walk's time limit; default DEFAULT_LOGIN_DEADLINE_MS. */
  deadlineMs?: number;
  signal?: AbortSignal;
}

export interface CodeLoginResult {
  flow: 'code';
  /** The authorization code, to exchange with an authorization_code grant. */
  code: string;
  codeVerifier: string;
  /** The state sent and received back (already checked). */
  state: string;
  redirectURI: string;
}

export interface ImplicitLoginResult {
  flow: 'implicit';
  accessToken: string;
  /** 'Bearer' in canonical case, else as sent. */
  tokenType: string;
  /** Undefined when the provider sent no (usable) expires_in. */
  expiresInSec?: number;
  scope?: string;
  state: string;
}

export type LoginResult = CodeLoginResult | ImplicitLoginResult;

/** Authorization request parameters the driver sets itself. */
const RESERVED_AUTH_PARAMS = new Set([
  'response_type',
  'client_id',
  'redirect_uri',
  'scope',
  'state',
  'code_challenge',
  'code_challenge_method',
  'response_mode',
]);

/** Origin, path and query-less form used to recognise the redirect URI. */
function redirectBase(value: string): string | undefined {
  try {
    const url = new URL(value);
    url.search = '';
    url.hash = '';
    return url.href;
  } catch {
    return undefined;
  }
}

/** The caller's page budget within 1 … DEFAULT_MAX_PAGES; anything unusable (NaN) is the default. */
export function pageBudget(maxPages: number | undefined): number {
  if (maxPages === undefined || Number.isNaN(maxPages)) return DEFAULT_MAX_PAGES;
  return Math.min(DEFAULT_MAX_PAGES, Math.max(1, Math.floor(maxPages)));
}

function toSeconds(value: string | null): number | undefined {
  if (value === null || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return undefined;
  return Number(value);
}

const TRANSIENT_OAUTH_ERRORS = new Set(['temporarily_unavailable', 'server_error']);

interface WalkState {
  pages: number;
  redirects: number;
  usernameSubmitted: boolean;
  passwordSubmitted: boolean;
  otpSubmissions: number;
}

/** Reads the authorization response off the redirect to redirectURI. */
function readRedirect(
  location: string,
  params: LoginParams,
  expected: { state: string; codeVerifier: string },
): LoginResult {
  const url = new URL(location);
  const query = url.searchParams;
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  const secrets = [params.password, params.username].filter((s) => s !== '');
  const error = query.get('error') ?? fragment.get('error');
  if (error !== null) {
    const oauthError = sanitizeErrorCode(error) ?? 'unrecognised_error';
    const description = sanitizeDescription(
      query.get('error_description') ?? fragment.get('error_description'),
      secrets,
    );
    throw loginError(
      'ProviderError',
      `the provider answered the authorization request with ${oauthError}${description !== undefined ? `: ${description}` : ''}`,
      TRANSIENT_OAUTH_ERRORS.has(oauthError) ? 'transient' : 'configuration',
      { oauthError, ...(description !== undefined ? { description } : {}) },
    );
  }
  const primary = params.flow === 'code' ? query : fragment;
  const secondary = params.flow === 'code' ? fragment : query;
  const state = primary.get('state') ?? secondary.get('state');
  if (state !== expected.state) {
    throw loginError(
      'ProviderError',
      state === null
        ? 'the authorization response carries no state'
        : 'the authorization response state does not match the request',
    );
  }
  if (params.flow === 'code') {
    const code = primary.get('code') ?? secondary.get('code');
    if (code === null || code === '') {
      throw loginError('ProviderError', 'the authorization response carries no code');
    }
    return {
      flow: 'code',
      code,
      codeVerifier: expected.codeVerifier,
      state,
      redirectURI: params.redirectURI,
    };
  }
  const accessToken = primary.get('access_token') ?? secondary.get('access_token');
  if (accessToken === null || accessToken === '') {
    throw loginError('ProviderError', 'the authorization response carries no access_token');
  }
  // The same cap as a token endpoint's answer; nothing was consumed by this login.
  checkTokenSizes({ accessToken }, false, 'recovery login: the provider');
  const result: ImplicitLoginResult = {
    flow: 'implicit',
    accessToken,
    tokenType: canonicalTokenType(primary.get('token_type') ?? secondary.get('token_type') ?? 'Bearer'),
    state,
  };
  const expiresIn = toSeconds(primary.get('expires_in') ?? secondary.get('expires_in'));
  if (expiresIn !== undefined) result.expiresInSec = expiresIn;
  const scope = primary.get('scope') ?? secondary.get('scope');
  if (scope !== null && scope !== '') result.scope = scope;
  return result;
}

function submission(form: HtmlForm, values: Record<string, string>, from: URL): LoginRequest {
  const body = new URLSearchParams(fillForm(form, values)).toString();
  if (form.method === 'POST') return { method: 'POST', url: form.action.href, form: body, from };
  const target = new URL(form.action.href);
  target.search = body;
  return { method: 'GET', url: target.href, from };
}

/** What a non-redirect answer means for a login that has come this far. */
function providerPageError(answer: LoginAnswer): Error {
  const host = answer.url.hostname;
  const status = answer.status;
  const transient = status >= 500 || status === 429 || status === 408;
  return loginError(
    'ProviderError',
    `host ${host} answered HTTP ${status}`,
    transient ? 'transient' : 'configuration',
    {
      httpStatus: status,
      ...(answer.retryAfterMs !== undefined ? { retryAfterMs: answer.retryAfterMs } : {}),
    },
  );
}

/**
 * Logs in headlessly and returns the authorization code (with its PKCE verifier) or, for the
 * implicit flow, the access token. Throws TokenError: WrongCredentials, WrongTotp,
 * LoginFormUnexpected, ProviderError (login-errors.ts); the endpoint policy's insecure_endpoint /
 * DNSFailure for a refused or unresolvable hop; 'configuration' MissingCredential, MissingClientID,
 * InvalidRedirectURI, MissingAuthorizationEndpoint, InvalidSelector for unusable parameters (nothing
 * sent).
 */
export async function performLogin(transport: Transport, params: LoginParams): Promise<LoginResult> {
  if (params.username === '' || params.password === '') {
    throw configurationError('MissingCredential', 'recovery login: username or password is empty');
  }
  if (params.clientID === '')
    throw configurationError('MissingClientID', 'recovery login: clientID is empty');
  const redirect = redirectBase(params.redirectURI);
  if (redirect === undefined) {
    throw configurationError('InvalidRedirectURI', 'recovery login: redirectURI is not an absolute URL');
  }
  checkFormProfile(params.form);

  const state = randomState();
  const codeVerifier = randomPKCECodeVerifier();
  let authorizationURL: URL;
  try {
    authorizationURL = new URL(params.authorizationEndpoint);
  } catch {
    throw configurationError(
      'MissingAuthorizationEndpoint',
      'recovery login: the authorization endpoint is not an absolute URL',
    );
  }
  authorizationURL.hash = '';
  for (const [name, value] of Object.entries(params.extraAuthParams ?? {})) {
    if (!RESERVED_AUTH_PARAMS.has(name.toLowerCase())) authorizationURL.searchParams.set(name, value);
  }
  authorizationURL.searchParams.set('response_type', params.flow === 'code' ? 'code' : 'token');
  authorizationURL.searchParams.set('client_id', params.clientID);
  authorizationURL.searchParams.set('redirect_uri', params.redirectURI);
  if (params.scopes !== undefined && params.scopes.length > 0) {
    authorizationURL.searchParams.set('scope', params.scopes.join(' '));
  }
  authorizationURL.searchParams.set('state', state);
  if (params.flow === 'code') {
    authorizationURL.searchParams.set('code_challenge', await calculatePKCECodeChallenge(codeVerifier));
    authorizationURL.searchParams.set('code_challenge_method', 'S256');
  }

  const deadlineMs = params.deadlineMs ?? DEFAULT_LOGIN_DEADLINE_MS;
  const expired = new LoginDeadline();
  const deadline = withDeadline(params.signal, deadlineMs, expired);
  const progress: WalkProgress = {};
  try {
    return await walkPages(transport, params, deadline.signal, authorizationURL, redirect, progress, {
      state,
      codeVerifier,
    });
  } catch (err) {
    // Whatever the aborted request or wait threw, the reason it stopped is the deadline.
    // (Not when the caller aborted first: the signal keeps the first reason.)
    if (deadline.signal.reason === expired) throw deadlineError(deadlineMs, progress);
    throw err;
  } finally {
    deadline.clear();
  }
}

class LoginDeadline extends Error {
  override readonly name = 'LoginDeadline';
}

/** Where the walk was, for the deadline's message. */
interface WalkProgress {
  host?: string;
  pages?: number;
}

function deadlineError(deadlineMs: number, progress: WalkProgress): TokenError {
  const where =
    progress.host === undefined
      ? ''
      : `; ${String(progress.pages ?? 0)} pages read, the last request to host ${progress.host}`;
  // A person has to look: no provider's login takes this long, and retrying soon would only hold
  // a worker for the whole deadline again.
  return new TokenError({
    code: 'configuration',
    reason: 'LoginDeadlineExceeded',
    message: `recovery login: the login did not finish within its deadline of ${String(deadlineMs / 1000)} s (every page, redirect and TOTP wait together)${where}`,
  });
}

/** Resolves with `work`, or rejects with the signal's reason as soon as it aborts. */
function unlessAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => {
      signal.removeEventListener('abort', onAbort);
    });
  });
}

async function walkPages(
  transport: Transport,
  params: LoginParams,
  signal: AbortSignal,
  authorizationURL: URL,
  redirect: string,
  progress: WalkProgress,
  expected: { state: string; codeVerifier: string },
): Promise<LoginResult> {
  const { state, codeVerifier } = expected;
  const http = new LoginHttp(transport, signal);
  const maxPages = pageBudget(params.maxPages);
  const maxOtpSubmissions = params.retryWrongTotp === false ? 1 : 2;
  const walk: WalkState = {
    pages: 0,
    redirects: 0,
    usernameSubmitted: false,
    passwordSubmitted: false,
    otpSubmissions: 0,
  };

  // The redirect URI itself, with any query or fragment, or anything that starts with it.
  const isRedirectTarget = (url: string): boolean =>
    redirectBase(url) === redirect || url.startsWith(params.redirectURI);

  let next: LoginRequest = { method: 'GET', url: authorizationURL.href };
  for (;;) {
    if (isRedirectTarget(next.url)) {
      // A form that submits to the redirect URI (form_post and the like) is not what was asked for.
      throw loginError('LoginFormUnexpected', 'a login form submits to the redirect URI');
    }
    try {
      progress.host = new URL(next.url).hostname;
    } catch {
      // An unparsable URL is refused by the request below.
    }
    const answer = await http.request(next);
    const host = answer.url.hostname;

    if (answer.status >= 300 && answer.status < 400) {
      if (answer.location === undefined) {
        throw loginError(
          'ProviderError',
          `host ${host} redirected without a usable Location`,
          'configuration',
          {
            httpStatus: answer.status,
          },
        );
      }
      if (isRedirectTarget(answer.location)) {
        return readRedirect(answer.location, params, { state, codeVerifier });
      }
      if (++walk.redirects > MAX_CONSECUTIVE_REDIRECTS) {
        throw loginError('LoginFormUnexpected', `too many redirects in a row (last at host ${host})`);
      }
      // 307/308 repeat the request as it was; every other redirect becomes a GET.
      next =
        (answer.status === 307 || answer.status === 308) && next.method === 'POST'
          ? { ...next, url: answer.location, from: answer.url }
          : { method: 'GET', url: answer.location, from: answer.url };
      continue;
    }
    walk.redirects = 0;

    if (answer.status >= 500 || answer.body === undefined) {
      if (answer.status >= 400) throw providerPageError(answer);
      throw loginError(
        'LoginFormUnexpected',
        isHtml(answer.mediaType)
          ? `host ${host} answered HTTP ${answer.status} without a page`
          : `host ${host} answered with content type ${answer.mediaType === '' ? 'none' : answer.mediaType.slice(0, 64)} instead of an HTML page`,
      );
    }
    progress.pages = walk.pages + 1;
    if (++walk.pages > maxPages) {
      throw loginError('LoginFormUnexpected', `no redirect to the redirect URI after ${maxPages} pages`);
    }

    const page = analysePage(answer.body, answer.url, answer.charset, params.form);
    switch (page.kind) {
      case 'otp': {
        if (params.totp === undefined) {
          throw loginError(
            'LoginFormUnexpected',
            'the provider asks for a TOTP code but no TOTP secret is configured',
          );
        }
        if (walk.otpSubmissions >= maxOtpSubmissions) {
          throw loginError('WrongTotp', `the TOTP code was rejected (${walk.otpSubmissions} codes tried)`);
        }
        const code = await unlessAborted(params.totp(signal), signal);
        const otpField = params.form.otpField ?? '';
        next = submission(page.form, { [otpField]: code }, answer.url);
        walk.otpSubmissions++;
        continue;
      }
      case 'password': {
        if (walk.otpSubmissions > 0) {
          throw loginError('WrongTotp', 'the login started over after the TOTP code was submitted');
        }
        if (walk.passwordSubmitted) {
          throw loginError('WrongCredentials', 'the username or password was rejected; not trying again');
        }
        const values: Record<string, string> = { [params.form.passwordField]: params.password };
        if (page.hasUsername) values[params.form.usernameField] = params.username;
        next = submission(page.form, values, answer.url);
        walk.passwordSubmitted = true;
        continue;
      }
      case 'username': {
        if (walk.otpSubmissions > 0) {
          throw loginError('WrongTotp', 'the login started over after the TOTP code was submitted');
        }
        if (walk.passwordSubmitted || walk.usernameSubmitted) {
          throw loginError('WrongCredentials', 'the username or password was rejected; not trying again');
        }
        next = submission(page.form, { [params.form.usernameField]: params.username }, answer.url);
        walk.usernameSubmitted = true;
        continue;
      }
      case 'other': {
        if (walk.otpSubmissions > 0 && page.totpError) {
          throw loginError('WrongTotp', 'the TOTP code was rejected');
        }
        if ((walk.passwordSubmitted || walk.usernameSubmitted) && page.credentialsError) {
          throw loginError('WrongCredentials', 'the username or password was rejected; not trying again');
        }
        if (answer.status >= 400) throw providerPageError(answer);
        const stage =
          walk.otpSubmissions > 0
            ? 'after the TOTP code was submitted'
            : walk.passwordSubmitted
              ? 'after the password was submitted'
              : walk.usernameSubmitted
                ? 'after the username was submitted'
                : 'before any form was submitted';
        throw loginError(
          'LoginFormUnexpected',
          `a page at host ${host} (${stage}) has none of the forms the login form profile describes`,
        );
      }
    }
  }
}
