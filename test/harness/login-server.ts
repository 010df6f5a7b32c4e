// A small HTML login server for unit tests of the headless recovery login (src/oauth/login.ts),
// shaped like Keycloak's browser flow: the authorization endpoint starts a session (cookie) and
// redirects, relatively, to a login page whose form carries a hidden CSRF field, other inputs with
// default values the server insists on, a cancel button before the real one, and a relative action;
// after the password comes a TOTP page. A right code redirects to redirect_uri with code+state
// (response_type=code) or #access_token (response_type=token).
//
// The pages are those of the test OpenID provider too (login-html.ts), with Keycloak's form ids and
// the extra controls of its theme. TOTP codes are checked by totp-verifier.ts (look-around of one step
// by default) and a code is never accepted twice: a code at or before the last accepted time step is
// rejected. Every code received is recorded, so tests can assert that a client never sent one twice.
//
// Misbehaviour on demand: other field names, rejected passwords or codes, an error redirect, a
// redirect to an arbitrary URL, a redirect loop, a non-HTML page, a 500.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loginPage, messagePage, otpPage, readForm, sendHtml } from './login-html.ts';
import { TotpVerifier, type TotpAlgorithm } from './totp-verifier.ts';

export interface LoginServerFields {
  username: string;
  password: string;
  otp: string;
  csrf: string;
}

export interface LoginServerOptions {
  username?: string;
  password?: string;
  /** Base32 TOTP secret (at least 10 bytes). Without it there is no TOTP page. */
  totpSecret?: string;
  totpAlgorithm?: TotpAlgorithm;
  totpDigits?: number;
  totpPeriodSec?: number;
  /** Steps accepted either side of the current one. Default 1 (Keycloak's look-around). */
  lookAroundSteps?: number;
  /** Wall clock for TOTP checks (FakeClock.now in tests). Default Date.now. */
  now?: () => number;
  clientID?: string;
  /** Field names of the served forms. Default username / password / otp / csrf. */
  fields?: Partial<LoginServerFields>;
  /** Ask for the username alone first, then for the password (a username-first flow). */
  usernameFirst?: boolean;
  /** After a right password, redirect to a TOTP page (GET) instead of answering with it. */
  otpPageViaRedirect?: boolean;
  /** HTTP status of the login page served again after a wrong password. Default 200. */
  wrongPasswordStatus?: number;
  /** Serve the forms with these field names instead (the profile no longer matches). */
  wrongFieldNames?: boolean;
  rejectPassword?: boolean;
  rejectOtp?: boolean;
  /** Answer the authorization request at once with an error redirect. */
  errorRedirect?: { error: string; description?: string };
  /** Answer the authorization request with a redirect to this absolute URL. */
  redirectTo?: string;
  redirectLoop?: boolean;
  /** Serve the login page as JSON. */
  nonHtml?: boolean;
  /** Answer the login page with HTTP 500. */
  serverError?: boolean;
  /** Return a state other than the one sent. */
  wrongState?: boolean;
}

export interface LoginServerRequest {
  method: string;
  path: string;
  hadSessionCookie: boolean;
}

export interface IssuedCode {
  clientID: string;
  redirectURI: string;
  codeChallenge: string | undefined;
  codeChallengeMethod: string | undefined;
}

export interface LoginServer {
  /** http://127.0.0.1:port */
  readonly origin: string;
  readonly authorizationEndpoint: string;
  /** A redirect URI on this server; the login driver must never request it. */
  readonly redirectURI: string;
  readonly fields: LoginServerFields;
  readonly requests: LoginServerRequest[];
  /** Form bodies the login page received (test data only). */
  readonly loginForms: URLSearchParams[];
  /** Every TOTP code received, in order. */
  readonly otpCodes: string[];
  /** Codes received again after having been received once. */
  readonly reusedOtpCodes: string[];
  readonly issuedCodes: Map<string, IssuedCode>;
  passwordSubmissions(): number;
  /** Whether S256(verifier) is the challenge sent with the request that produced the code. */
  pkceMatches(code: string, verifier: string): boolean;
  /** Changes options for the following requests. */
  configure(options: Partial<LoginServerOptions>): void;
  close(): Promise<void>;
}

interface Session {
  id: string;
  csrf: string;
  execution: string;
  clientID: string;
  redirectURI: string;
  responseType: string;
  state: string;
  codeChallenge: string | undefined;
  codeChallengeMethod: string | undefined;
  usernameOK: boolean;
  passwordOK: boolean;
}

const REALM = '/realms/test';
const AUTH_PATH = `${REALM}/protocol/openid-connect/auth`;
const LOGIN_PATH = `${REALM}/login-actions/authenticate`;
const OTP_PATH = `${REALM}/login-actions/otp`;
const COOKIE = 'AUTH_SESSION_ID';

// Controls of Keycloak's login form besides the credentials: a client submits them as served
// (disabled ones and unchecked boxes not at all) and never presses Cancel, which comes first.
const KEYCLOAK_CONTROLS = `  <input type="text" name="tenant" value="main">
  <select name="locale"><option value="de">Deutsch</option><option value="en" selected>English</option></select>
  <input type="checkbox" name="rememberMe">
  <input type="text" name="disabledField" value="x" disabled>
  <input type="submit" name="cancel" value="Cancel">
`;
// A form of the page header (Keycloak's language menu) comes before the login form.
const KEYCLOAK_LOCALE_FORM =
  '<form id="kc-locale-form" action="/elsewhere" method="get"><input name="q" value=""></form>\n';

function random(bytes = 16): string {
  return randomBytes(bytes).toString('base64url');
}

function message(res: ServerResponse, status: number, text: string): void {
  sendHtml(res, status, messagePage('Sign in', text));
}

function redirect(res: ServerResponse, location: string, headers: Record<string, string> = {}): void {
  res.writeHead(302, { location, ...headers });
  res.end();
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=');
    if (key === name) return value.join('=');
  }
  return undefined;
}

export async function startLoginServer(initial: LoginServerOptions = {}): Promise<LoginServer> {
  let options: LoginServerOptions = { ...initial };
  const username = (): string => options.username ?? 'alice';
  const password = (): string => options.password ?? 'correct horse battery staple';
  const clientID = (): string => options.clientID ?? 'test-client';
  const fields = (): LoginServerFields => ({
    username: options.fields?.username ?? 'username',
    password: options.fields?.password ?? 'password',
    otp: options.fields?.otp ?? 'otp',
    csrf: options.fields?.csrf ?? 'csrf',
  });
  const served = (): LoginServerFields =>
    options.wrongFieldNames === true
      ? { username: 'j_username', password: 'j_password', otp: 'j_otp', csrf: fields().csrf }
      : fields();

  const sessions = new Map<string, Session>();
  const requests: LoginServerRequest[] = [];
  const loginForms: URLSearchParams[] = [];
  const otpCodes: string[] = [];
  const reusedOtpCodes: string[] = [];
  const issuedCodes = new Map<string, IssuedCode>();
  let passwordSubmissions = 0;
  const totp = new TotpVerifier('after-last-step');

  const showLogin = (res: ServerResponse, session: Session, status: number, error?: string): void => {
    const f = served();
    const stage = options.usernameFirst !== true ? 'both' : session.usernameOK ? 'password' : 'username';
    sendHtml(
      res,
      status,
      loginPage({
        formId: 'kc-form-login',
        action: `authenticate?session_code=${session.id}&execution=${session.execution}`,
        hidden: { [f.csrf]: session.csrf },
        username: stage === 'password' ? { known: username() } : { field: f.username, value: '' },
        passwordField: stage === 'username' ? undefined : f.password,
        error,
        controls: KEYCLOAK_CONTROLS,
        before: KEYCLOAK_LOCALE_FORM,
        submit: { name: 'login', label: 'Sign In' },
      }),
    );
  };

  const showOtp = (res: ServerResponse, session: Session, error?: string): void => {
    const f = served();
    sendHtml(
      res,
      200,
      otpPage({
        formId: 'kc-otp-login-form',
        action: `otp?session_code=${session.id}`,
        hidden: { [f.csrf]: session.csrf },
        otpField: f.otp,
        error,
        submit: { name: 'login', label: 'Sign In' },
      }),
    );
  };

  const finish = (res: ServerResponse, session: Session): void => {
    sessions.delete(session.id);
    const state = options.wrongState === true ? `${session.state}-not` : session.state;
    const target = new URL(session.redirectURI);
    if (session.responseType === 'token') {
      const fragment = new URLSearchParams({
        access_token: `at-${random(24)}`,
        token_type: 'bearer',
        expires_in: '600',
        state,
      });
      target.hash = fragment.toString();
    } else {
      const code = random(24);
      issuedCodes.set(code, {
        clientID: session.clientID,
        redirectURI: session.redirectURI,
        codeChallenge: session.codeChallenge,
        codeChallengeMethod: session.codeChallengeMethod,
      });
      target.searchParams.set('code', code);
      target.searchParams.set('state', state);
    }
    redirect(res, target.href, { 'set-cookie': `${COOKIE}=; Path=${REALM}/; Max-Age=0` });
  };

  const checkOtp = (code: string): boolean => {
    if (options.totpSecret === undefined || options.rejectOtp === true) return false;
    const parameters = {
      secret: options.totpSecret,
      algorithm: options.totpAlgorithm,
      digits: options.totpDigits,
      periodSec: options.totpPeriodSec,
      lookAroundSteps: options.lookAroundSteps,
    };
    return totp.accept(username(), code, parameters, (options.now ?? Date.now)());
  };

  const handle = (req: IncomingMessage, res: ServerResponse, form: URLSearchParams): void => {
    const url = new URL(req.url ?? '/', 'http://login.test');
    const sid = cookieOf(req, COOKIE);
    requests.push({ method: req.method ?? '', path: url.pathname, hadSessionCookie: sid !== undefined });
    const session = sid !== undefined ? sessions.get(sid) : undefined;

    if (url.pathname === AUTH_PATH && req.method === 'GET') {
      const q = url.searchParams;
      const redirectURI = q.get('redirect_uri') ?? '';
      const responseType = q.get('response_type') ?? '';
      if (
        q.get('client_id') !== clientID() ||
        redirectURI === '' ||
        !['code', 'token'].includes(responseType)
      ) {
        message(res, 400, 'Invalid request.');
        return;
      }
      if (options.errorRedirect !== undefined) {
        const target = new URL(redirectURI);
        target.searchParams.set('error', options.errorRedirect.error);
        if (options.errorRedirect.description !== undefined) {
          target.searchParams.set('error_description', options.errorRedirect.description);
        }
        target.searchParams.set('state', q.get('state') ?? '');
        redirect(res, target.href);
        return;
      }
      if (options.redirectTo !== undefined) {
        redirect(res, options.redirectTo);
        return;
      }
      if (options.redirectLoop === true) {
        redirect(res, `${REALM}/loop?n=0`);
        return;
      }
      const created: Session = {
        id: random(),
        csrf: random(),
        execution: random(8),
        clientID: clientID(),
        redirectURI,
        responseType,
        state: q.get('state') ?? '',
        codeChallenge: q.get('code_challenge') ?? undefined,
        codeChallengeMethod: q.get('code_challenge_method') ?? undefined,
        usernameOK: false,
        passwordOK: false,
      };
      sessions.set(created.id, created);
      // Relative to the request path: /realms/test/protocol/openid-connect/auth → /realms/test/login-actions/…
      redirect(res, `../../login-actions/authenticate?client_id=${encodeURIComponent(created.clientID)}`, {
        'set-cookie': `${COOKIE}=${created.id}; Path=${REALM}/; HttpOnly; SameSite=Lax`,
      });
      return;
    }

    if (url.pathname === `${REALM}/loop`) {
      const n = Number(url.searchParams.get('n') ?? '0');
      redirect(res, `loop?n=${n + 1}`);
      return;
    }

    if (url.pathname === LOGIN_PATH || url.pathname === OTP_PATH) {
      if (session === undefined) {
        message(res, 400, 'Cookie not found. Please make sure cookies are enabled in your browser.');
        return;
      }
      if (options.serverError === true) {
        message(res, 500, 'Internal server error');
        return;
      }
      if (options.nonHtml === true) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"login":"here"}');
        return;
      }
    }

    if (url.pathname === LOGIN_PATH && session !== undefined && req.method === 'GET') {
      showLogin(res, session, 200);
      return;
    }

    if (url.pathname === LOGIN_PATH && session !== undefined && req.method === 'POST') {
      loginForms.push(form);
      const f = served();
      const honoured =
        url.searchParams.get('session_code') === session.id &&
        url.searchParams.get('execution') === session.execution &&
        req.headers['content-type'] === 'application/x-www-form-urlencoded' &&
        form.get(f.csrf) === session.csrf &&
        form.get('tenant') === 'main' &&
        form.get('locale') === 'en' &&
        !form.has('rememberMe') &&
        !form.has('disabledField') &&
        !form.has('q') &&
        form.get('login') === 'Sign In';
      if (form.has('cancel')) {
        const target = new URL(session.redirectURI);
        target.searchParams.set('error', 'access_denied');
        target.searchParams.set('state', session.state);
        redirect(res, target.href);
        return;
      }
      if (!honoured) {
        message(res, 400, 'Invalid request: the form was not submitted as served.');
        return;
      }
      if (options.usernameFirst === true && !session.usernameOK) {
        if (form.has(f.password) || form.get(f.username) !== username()) {
          showLogin(res, session, 200, 'Invalid username or password.');
          return;
        }
        session.usernameOK = true;
        showLogin(res, session, 200);
        return;
      }
      passwordSubmissions++;
      const givenUsername = options.usernameFirst === true ? username() : form.get(f.username);
      if (
        options.rejectPassword === true ||
        givenUsername !== username() ||
        form.get(f.password) !== password()
      ) {
        showLogin(res, session, options.wrongPasswordStatus ?? 200, 'Invalid username or password.');
        return;
      }
      session.passwordOK = true;
      if (options.totpSecret === undefined) {
        finish(res, session);
        return;
      }
      if (options.otpPageViaRedirect === true) {
        redirect(res, `otp?session_code=${session.id}`);
        return;
      }
      showOtp(res, session);
      return;
    }

    if (url.pathname === OTP_PATH && session?.passwordOK === true && req.method === 'GET') {
      showOtp(res, session);
      return;
    }

    if (url.pathname === OTP_PATH && session?.passwordOK === true && req.method === 'POST') {
      const f = served();
      if (url.searchParams.get('session_code') !== session.id || form.get(f.csrf) !== session.csrf) {
        message(res, 400, 'Invalid request.');
        return;
      }
      const code = form.get(f.otp) ?? '';
      if (otpCodes.includes(code)) reusedOtpCodes.push(code);
      otpCodes.push(code);
      if (!checkOtp(code)) {
        showOtp(res, session, 'Invalid authenticator code.');
        return;
      }
      finish(res, session);
      return;
    }

    message(res, 404, 'Not found');
  };

  const server: Server = createServer((req, res) => {
    readForm(req)
      .then((form) => {
        handle(req, res, form);
      })
      .catch(() => {
        if (!res.headersSent) message(res, 500, 'Internal server error');
        else res.end();
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    origin,
    authorizationEndpoint: `${origin}${AUTH_PATH}`,
    redirectURI: `${origin}/callback`,
    get fields() {
      return fields();
    },
    requests,
    loginForms,
    otpCodes,
    reusedOtpCodes,
    issuedCodes,
    passwordSubmissions: () => passwordSubmissions,
    pkceMatches(code, verifier) {
      const issued = issuedCodes.get(code);
      if (issued?.codeChallengeMethod !== 'S256' || issued.codeChallenge === undefined) return false;
      return createHash('sha256').update(verifier).digest('base64url') === issued.codeChallenge;
    },
    configure(changes) {
      options = { ...options, ...changes };
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => {
        server.close((err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    },
  };
}
