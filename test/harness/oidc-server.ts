// A real OAuth 2.0 / OpenID Connect authorization server for tests: oidc-provider on plain HTTP on
// loopback, with rotating refresh tokens, reuse detection that revokes the whole token family
// (RFC 9700 §4.14.2), an optional grace window for retries after a lost response (Okta's 30 s,
// Cognito's RetryGracePeriodSeconds) and fault injection in front of the token endpoint.
//
// Everything a client needs goes over HTTP on 127.0.0.1, so operators running as child processes can
// use it; only the inspection methods (refreshLog, reuseCount, ...) need the test process.
//
// How oidc-provider 9 treats refresh tokens (lib/actions/grants/refresh_token.js): a token whose
// payload has `consumed` set is destroyed, its grant revoked (every AccessToken / RefreshToken /
// AuthorizationCode with that grantId, and the Grant itself: lib/helpers/revoke.js, which emits
// 'grant.revoked') and the request fails with invalid_grant "refresh token already used". With
// rotation it calls `adapter.consume(jti)` on the presented token and saves a successor. It has no
// grace window, so this file supplies its own adapter: within the window `find` hides `consumed` and
// the provider answers normally with a new successor (the earlier successor stays valid). The adapter
// also makes consumption atomic, so two concurrent presentations of one token cannot both succeed
// outside the window: the loser is treated as a reuse.
//
// With `login`, the server also offers an interactive browser login through oidc-provider's
// interaction mechanism, for the operator's headless recovery login: the authorization endpoint
// redirects to /interaction/:uid, an HTML login form (username + password, a hidden CSRF field),
// then an HTML TOTP form (one field), then the authorization response: `?code=` for
// response_type=code (PKCE required) or `#access_token=` for response_type=token (OAuth 2.0
// implicit, which oidc-provider 9 no longer offers by itself; see allowPlainTokenResponseType).
// Consent is granted automatically with the login. A TOTP code is rejected when the time step it
// belongs to was already accepted for that user (RFC 6238 §5.2), so the same code never works twice.
import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGuardrails, generateSync, verifySync } from 'otplib';
import { FaultController, type KoaLikeContext, type KoaLikeMiddleware } from './fault-proxy.ts';

export { FaultController } from './fault-proxy.ts';
export type { Fault, InjectedFault } from './fault-proxy.ts';

export type GrantType = 'refresh_token' | 'client_credentials' | 'authorization_code' | 'implicit';

/** Where authorization responses go unless a client registers other redirect URIs (never fetched). */
export const DEFAULT_REDIRECT_URI = 'http://127.0.0.1/callback';

export interface TestOidcClient {
  clientId: string;
  /** Required for the client_secret_* methods; defaults to `${clientId}-secret`. */
  clientSecret?: string;
  authMethod: 'client_secret_basic' | 'client_secret_post' | 'none';
  grantTypes: GrantType[];
  /**
   * Only with authorization_code (response_type=code) or implicit (response_type=token); defaults to
   * [DEFAULT_REDIRECT_URI].
   */
  redirectUris?: string[];
}

export interface TestOidcUser {
  /** The `sub` of the tokens issued after this user's login. */
  accountId: string;
  username: string;
  password: string;
  /** Base32 TOTP secret (SHA-1, 6 digits, 30 s; at least 10 bytes). */
  totpSecret: string;
  /** TOTP period; default 30. Shorter periods let tests log in often without reusing a code. */
  totpPeriodSec?: number;
}

export interface TestOidcLoginFields {
  /** id of the login form; default 'login-form'. */
  loginFormId?: string;
  /** Default 'username'. */
  usernameField?: string;
  /** Default 'password'. */
  passwordField?: string;
  /** id of the TOTP form; default 'otp-form'. */
  otpFormId?: string;
  /** Default 'otp'. */
  otpField?: string;
}

export interface TestOidcLoginOptions {
  users: TestOidcUser[];
  fields?: TestOidcLoginFields;
}

export interface TotpCodeReceived {
  /** Date.now() when the code arrived. */
  at: number;
  code: string;
  accepted: boolean;
}

export interface LoginAttempt {
  /** Date.now() when the credentials arrived. */
  at: number;
  username: string;
  /** False for a wrong password and for an unknown user. */
  passwordOk: boolean;
}

export interface TestOidcServerOptions {
  /** Lifetime of access tokens (refresh and client_credentials grants); default 20. */
  accessTokenTtlSec?: number;
  /** Lifetime of each refresh token from its issuance; default 3600. */
  refreshTokenTtlSec?: number;
  /** Default true: every refresh returns a new refresh token and consumes the presented one. */
  rotate?: boolean;
  /**
   * Default 0. A consumed refresh token presented again less than this long after its (first)
   * consumption gets a normal answer with a new successor, and the previous successor stays valid.
   * Later presentations revoke the family.
   */
  graceWindowSec?: number;
  /** Default: one confidential client, DEFAULT_CLIENT. */
  clients?: TestOidcClient[];
  /** Port on 127.0.0.1; default 0 (any free port). */
  port?: number;
  /**
   * Enables the interactive login (HTML login form, then TOTP form) behind the authorization
   * endpoint. Without it an authorization request ends at an interaction page that does not exist.
   */
  login?: TestOidcLoginOptions;
}

export type Presented = 'current' | 'in-grace' | 'reused' | 'unknown';

export interface RefreshLogEntry {
  /** Date.now() when the request arrived. */
  at: number;
  /** State of the presented refresh token when the provider looked it up. */
  presented: Presented;
  /** HTTP status the provider answered with (what the client saw unless a lostResponse fault dropped it). */
  status: number;
  /** OAuth error code of an error answer. */
  error?: string;
  /** Whether this request revoked a token family. */
  revokedFamily: boolean;
}

export interface TestOidcServer {
  /** http://127.0.0.1:PORT (plain http on loopback, no trailing slash). */
  issuer: string;
  /** ${issuer}/auth. */
  authorizationEndpoint: string;
  tokenEndpoint: string;
  introspectionEndpoint: string;
  revocationEndpoint: string;
  /** The registered clients, with their secrets filled in. */
  clients: TestOidcClient[];
  close(): Promise<void>;
  /** Mints a grant with openid offline_access for accountId/clientId and returns its first refresh token (the "seed"). */
  seedRefreshToken(opts: { clientId: string; accountId?: string }): Promise<string>;
  /** Count of presentations of an already consumed refresh token outside the grace window (each one revoked a family). */
  reuseCount(): number;
  /**
   * Every completed refresh-token grant request the provider saw, in order of arrival (faults other
   * than lostResponse/delay never reach it, see faults.log()).
   */
  refreshLog(): RefreshLogEntry[];
  /** State of a refresh token right now, without presenting it. */
  refreshTokenState(token: string): 'current' | 'consumed' | 'unknown';
  /** Validates an access token via the provider's introspection endpoint (active and not expired). */
  isAccessTokenActive(token: string): Promise<boolean>;
  /** Revokes the family (grant) a refresh token belongs to; false when the token is unknown. */
  revokeFamilyOf(refreshToken: string): Promise<boolean>;
  /** Revokes every grant and all their tokens, so every chain breaks. */
  revokeAllGrants(): Promise<void>;
  /** Errors the provider reported through its 'server_error' event (and those of the login pages). */
  serverErrors(): Error[];
  /** Every TOTP code posted to the TOTP form, in order, accepted or not (empty without `login`). */
  totpCodesReceived(): TotpCodeReceived[];
  /** Every POST of the login form, in order (empty without `login`). */
  loginAttempts(): LoginAttempt[];
  faults: FaultController;
}

export const DEFAULT_CLIENT: Readonly<TestOidcClient> = Object.freeze({
  clientId: 'operator',
  clientSecret: 'operator-secret',
  authMethod: 'client_secret_basic',
  grantTypes: ['refresh_token', 'client_credentials'] as GrantType[],
});

// ---------------------------------------------------------------------------------------------------
// The slice of oidc-provider's API used here (the package ships no type declarations).

type Payload = Record<string, unknown> & {
  grantId?: string;
  consumed?: number;
  uid?: string;
  userCode?: string;
};

interface ProviderClient {
  clientId: string;
}

interface ProviderGrant {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(indicator: string, scope: string): void;
  save(): Promise<string>;
}

interface InteractionDetails {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

interface InteractionResult {
  login?: { accountId: string };
  consent?: { grantId?: string };
}

interface Provider {
  readonly issuer: string;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  use(middleware: KoaLikeMiddleware): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  urlFor(name: string): string;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  /** Stores the result and answers 303 to the authorization endpoint's resume URL. */
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: InteractionResult,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  Client: {
    find(id: string): Promise<ProviderClient | undefined>;
    Schema: { prototype: { invalidate: (this: unknown, message: string, code?: string) => void } };
  };
  Grant: {
    new (init: { accountId: string; clientId: string }): ProviderGrant;
    find(id: string): Promise<ProviderGrant | undefined>;
  };
  RefreshToken: new (init: {
    client: ProviderClient;
    accountId: string;
    grantId: string;
    scope: string;
    gty: string;
    authTime: number;
  }) => { save(): Promise<string> };
}

interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => Provider;
  errors: { InvalidGrant: new (description: string) => Error; SessionNotFound: new () => Error };
}

// Loaded through a computed specifier: a static import of the untyped package fails type checking.
const OIDC_PROVIDER_PACKAGE: string = 'oidc-provider';
let loaded: Promise<OidcProviderModule> | undefined;
function loadOidcProvider(): Promise<OidcProviderModule> {
  loaded ??= import(OIDC_PROVIDER_PACKAGE) as Promise<OidcProviderModule>;
  return loaded;
}

// oidc-provider's accessor for a provider's private state (the same module instance the provider
// uses: the package has no "exports" map, so the deep path resolves to the very file it imports).
const OIDC_PROVIDER_INTERNALS: string = 'oidc-provider/lib/helpers/weak_cache.js';

/**
 * oidc-provider 9 refuses `responseTypes: ['token']` (OAuth 2.0 implicit without an id_token) when
 * it validates its configuration, yet its authorization endpoint still knows how to answer it: it
 * checks requests against configuration.responseTypes at request time. So 'token' is added to that
 * list after construction (tested against 9.13.3: test/unit/oidc-login.test.ts fails if it stops
 * working). Implicit clients also need http loopback redirect URIs, which the provider's documented
 * recipe (recipes/implicit_http_localhost.md) allows by skipping two client validations.
 */
async function allowPlainTokenResponseType(provider: Provider): Promise<void> {
  const { default: internals } = (await import(OIDC_PROVIDER_INTERNALS)) as {
    default: (
      provider: unknown,
    ) => { configuration?: { responseTypes?: unknown; grantTypes?: unknown } } | undefined;
  };
  const configuration = internals(provider)?.configuration;
  const responseTypes = configuration?.responseTypes;
  const grantTypes = configuration?.grantTypes;
  if (!Array.isArray(responseTypes) || !(grantTypes instanceof Set)) {
    throw new Error('oidc-provider internals changed: cannot enable response_type=token');
  }
  if (!responseTypes.includes('token')) responseTypes.push('token');
  grantTypes.add('implicit');

  const schema = provider.Client.Schema.prototype;
  const invalidate = schema.invalidate;
  schema.invalidate = function (message, code) {
    if (code === 'implicit-force-https' || code === 'implicit-forbid-localhost') return;
    invalidate.call(this, message, code);
  };
}

// ---------------------------------------------------------------------------------------------------
// Storage: an in-memory adapter (one store per server) with grace-window handling for refresh tokens.

interface Entry {
  model: string;
  payload: Payload;
  expiresAtMs: number | undefined;
  /** First consumption, in ms (the payload's `consumed` is in seconds). */
  consumedAtMs?: number;
}

interface RequestRecord {
  presented?: Presented;
  revokedFamily: boolean;
}

class Store {
  private readonly entries = new Map<string, Entry>();

  private key(model: string, id: string): string {
    return `${model}:${id}`;
  }

  get(model: string, id: string): Entry | undefined {
    const key = this.key(model, id);
    const entry = this.entries.get(key);
    if (entry?.expiresAtMs !== undefined && entry.expiresAtMs <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  set(model: string, id: string, payload: Payload, expiresInSec: number | undefined): void {
    const expiresAtMs = typeof expiresInSec === 'number' ? Date.now() + expiresInSec * 1000 : undefined;
    this.entries.set(this.key(model, id), { model, payload: structuredClone(payload), expiresAtMs });
  }

  delete(model: string, id: string): void {
    this.entries.delete(this.key(model, id));
  }

  findBy(model: string, field: 'uid' | 'userCode', value: string): Payload | undefined {
    for (const [key, entry] of this.entries) {
      if (entry.model === model && entry.payload[field] === value) {
        return this.get(model, key.slice(model.length + 1))?.payload;
      }
    }
    return undefined;
  }

  /** Deletes the model's entries of a grant (every model when `model` is undefined). */
  revokeByGrantId(grantId: string, model?: string): void {
    for (const [key, entry] of this.entries) {
      if ((model === undefined || entry.model === model) && entry.payload.grantId === grantId) {
        this.entries.delete(key);
      }
    }
  }

  /** Deletes a grant and every token of it. */
  revokeGrant(grantId: string): void {
    this.revokeByGrantId(grantId);
    this.delete('Grant', grantId);
  }

  grantIds(): string[] {
    const ids: string[] = [];
    for (const [key, entry] of this.entries) {
      if (entry.model === 'Grant') ids.push(key.slice('Grant:'.length));
    }
    return ids;
  }
}

interface RotationContext {
  store: Store;
  invalidGrant: (description: string) => Error;
  graceMs: number;
  requests: AsyncLocalStorage<RequestRecord>;
}

function classify(entry: Entry | undefined, graceMs: number, now: number): Presented {
  if (!entry) return 'unknown';
  if (entry.consumedAtMs === undefined) return 'current';
  return now - entry.consumedAtMs < graceMs ? 'in-grace' : 'reused';
}

class HarnessAdapter {
  private readonly model: string;
  private readonly ctx: RotationContext;

  constructor(model: string, ctx: RotationContext) {
    this.model = model;
    this.ctx = ctx;
  }

  upsert(id: string, payload: Payload, expiresIn?: number): Promise<void> {
    this.ctx.store.set(this.model, id, payload, expiresIn);
    return Promise.resolve();
  }

  find(id: string): Promise<Payload | undefined> {
    const entry = this.ctx.store.get(this.model, id);
    if (this.model !== 'RefreshToken') return Promise.resolve(entry && structuredClone(entry.payload));

    const presented = classify(entry, this.ctx.graceMs, Date.now());
    const record = this.ctx.requests.getStore();
    if (record && record.presented === undefined) record.presented = presented;
    if (!entry) return Promise.resolve(undefined);
    const payload = structuredClone(entry.payload);
    // Within the grace window the provider must see a usable token and answer as for a current one.
    if (presented === 'in-grace') delete payload.consumed;
    return Promise.resolve(payload);
  }

  findByUid(uid: string): Promise<Payload | undefined> {
    return Promise.resolve(this.ctx.store.findBy(this.model, 'uid', uid));
  }

  findByUserCode(userCode: string): Promise<Payload | undefined> {
    return Promise.resolve(this.ctx.store.findBy(this.model, 'userCode', userCode));
  }

  consume(id: string): Promise<void> {
    const { store, graceMs, requests, invalidGrant } = this.ctx;
    const entry = store.get(this.model, id);
    const now = Date.now();
    if (!entry) {
      // Revoked or expired between lookup and consumption.
      return Promise.reject(invalidGrant('refresh token not found'));
    }
    if (entry.consumedAtMs === undefined) {
      entry.consumedAtMs = now;
      entry.payload.consumed = Math.floor(now / 1000);
      return Promise.resolve();
    }
    // The grace window stays anchored at the first consumption.
    if (this.model !== 'RefreshToken' || now - entry.consumedAtMs < graceMs) return Promise.resolve();

    // Another request consumed this token after our lookup: a concurrent presentation outside the
    // grace window is a reuse, and a server with atomic consumption revokes the family.
    const record = requests.getStore();
    if (record) {
      record.presented = 'reused';
      record.revokedFamily = true;
    }
    if (entry.payload.grantId) store.revokeGrant(entry.payload.grantId);
    return Promise.reject(invalidGrant('refresh token already used'));
  }

  destroy(id: string): Promise<void> {
    this.ctx.store.delete(this.model, id);
    return Promise.resolve();
  }

  revokeByGrantId(grantId: string): Promise<void> {
    this.ctx.store.revokeByGrantId(grantId, this.model);
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------------------------------

function clientMetadata(client: TestOidcClient): Record<string, unknown> {
  const responseTypes = [
    ...(client.grantTypes.includes('authorization_code') ? ['code'] : []),
    ...(client.grantTypes.includes('implicit') ? ['token'] : []),
  ];
  return {
    client_id: client.clientId,
    ...(client.authMethod === 'none' ? {} : { client_secret: client.clientSecret }),
    token_endpoint_auth_method: client.authMethod,
    grant_types: [...client.grantTypes],
    response_types: responseTypes,
    redirect_uris: responseTypes.length > 0 ? (client.redirectUris ?? [DEFAULT_REDIRECT_URI]) : [],
  };
}

// ---------------------------------------------------------------------------------------------------
// Interactive login: Koa middleware on the provider's app serving /interaction/:uid.

const INTERACTION_PATH = /^\/interaction\/([\w-]+)(?:\/(login|otp))?$/;
const CSRF_FIELD = 'csrf';
const MAX_FORM_BYTES = 64 * 1024;
const TOTP_PERIOD_SEC = 30;
// otplib's default minimum is 16 bytes; 80-bit secrets (16 base32 characters) are common in the field.
const TOTP_GUARDRAILS = createGuardrails({ MIN_SECRET_BYTES: 10 });

type ResolvedFields = Required<TestOidcLoginFields>;

function resolveFields(fields: TestOidcLoginFields = {}): ResolvedFields {
  return {
    loginFormId: fields.loginFormId ?? 'login-form',
    usernameField: fields.usernameField ?? 'username',
    passwordField: fields.passwordField ?? 'password',
    otpFormId: fields.otpFormId ?? 'otp-form',
    otpField: fields.otpField ?? 'otp',
  };
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

function errorText(error: string | undefined): string {
  return error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(error)}</p>\n`;
}

function sendHtml(ctx: KoaLikeContext, status: number, html: string): void {
  ctx.respond = false;
  ctx.res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(Buffer.byteLength(html)),
  });
  ctx.res.end(html);
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    return new URLSearchParams();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function checkTotpSecret(user: TestOidcUser): void {
  try {
    generateSync({ secret: user.totpSecret, guardrails: TOTP_GUARDRAILS });
  } catch (err) {
    throw new Error(`login user ${user.username}: unusable totpSecret`, { cause: err });
  }
}

interface InteractionState {
  csrf: string;
  /** Set once the password was right; the TOTP form is next. */
  user?: TestOidcUser;
}

class LoginPages {
  private readonly provider: Provider;
  private readonly users: Map<string, TestOidcUser>;
  private readonly fields: ResolvedFields;
  private readonly serverErrors: Error[];
  private readonly interactions = new Map<string, InteractionState>();
  /** Per accountId, the TOTP time steps already accepted. */
  private readonly acceptedSteps = new Map<string, Set<number>>();
  readonly codes: TotpCodeReceived[] = [];
  readonly attempts: LoginAttempt[] = [];

  private readonly sessionNotFound: OidcProviderModule['errors']['SessionNotFound'];

  constructor(
    provider: Provider,
    errors: OidcProviderModule['errors'],
    login: TestOidcLoginOptions,
    serverErrors: Error[],
  ) {
    this.provider = provider;
    this.sessionNotFound = errors.SessionNotFound;
    this.fields = resolveFields(login.fields);
    this.serverErrors = serverErrors;
    this.users = new Map();
    for (const user of login.users) {
      if (this.users.has(user.username)) throw new Error(`login user ${user.username} listed twice`);
      checkTotpSecret(user);
      this.users.set(user.username, { ...user });
    }
  }

  middleware(): KoaLikeMiddleware {
    return async (ctx, next) => {
      const match = INTERACTION_PATH.exec(ctx.path);
      if (!match) {
        await next();
        return;
      }
      const uid = match[1] ?? '';
      const step = match[2];
      try {
        await this.handle(ctx, uid, step);
      } catch (err) {
        if (ctx.res.headersSent) throw err;
        if (err instanceof this.sessionNotFound) {
          // No interaction cookie, or the interaction expired or finished already.
          sendHtml(ctx, 400, page('Sign-in failed', errorText('Your sign-in session expired, start again')));
          return;
        }
        this.serverErrors.push(err instanceof Error ? err : new Error(String(err)));
        sendHtml(ctx, 500, page('Sign-in failed', errorText('Internal error')));
      }
    };
  }

  private async handle(ctx: KoaLikeContext, uid: string, step: string | undefined): Promise<void> {
    const method = ctx.method;
    if ((step === undefined && method !== 'GET') || (step !== undefined && method !== 'POST')) {
      sendHtml(ctx, 405, page('Method not allowed', ''));
      return;
    }
    const details = await this.provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) {
      sendHtml(ctx, 400, page('Sign-in failed', errorText('This sign-in page belongs to another session')));
      return;
    }
    let state = this.interactions.get(uid);
    if (!state) {
      state = { csrf: randomBytes(16).toString('base64url') };
      this.interactions.set(uid, state);
    }

    if (details.prompt.name === 'consent') {
      // Already signed in (a session cookie): consent is automatic.
      await this.finishConsent(ctx, details);
      return;
    }
    if (details.prompt.name !== 'login') {
      sendHtml(ctx, 400, page('Sign-in failed', errorText(`Unsupported prompt ${details.prompt.name}`)));
      return;
    }

    if (step === undefined) {
      sendHtml(ctx, 200, state.user ? this.otpPage(uid, state) : this.loginPage(uid, state));
      return;
    }

    const form = await readForm(ctx.req);
    if (form.get(CSRF_FIELD) !== state.csrf) {
      sendHtml(ctx, 403, page('Sign-in failed', errorText('Invalid CSRF token')));
      return;
    }
    if (step === 'login') {
      this.postLogin(ctx, uid, state, form);
    } else {
      await this.postOtp(ctx, uid, state, form, details);
    }
  }

  private postLogin(ctx: KoaLikeContext, uid: string, state: InteractionState, form: URLSearchParams): void {
    const username = form.get(this.fields.usernameField) ?? '';
    const password = form.get(this.fields.passwordField) ?? '';
    const user = this.users.get(username);
    const passwordOk = user !== undefined && password === user.password;
    this.attempts.push({ at: Date.now(), username, passwordOk });
    if (!user || !passwordOk) {
      delete state.user;
      sendHtml(ctx, 200, this.loginPage(uid, state, 'Invalid username or password', username));
      return;
    }
    state.user = user;
    sendHtml(ctx, 200, this.otpPage(uid, state));
  }

  private async postOtp(
    ctx: KoaLikeContext,
    uid: string,
    state: InteractionState,
    form: URLSearchParams,
    details: InteractionDetails,
  ): Promise<void> {
    const user = state.user;
    if (!user) {
      sendHtml(ctx, 200, this.loginPage(uid, state, 'Please sign in first'));
      return;
    }
    const code = form.get(this.fields.otpField) ?? '';
    const accepted = this.acceptTotp(user, code);
    this.codes.push({ at: Date.now(), code, accepted });
    if (!accepted) {
      sendHtml(ctx, 200, this.otpPage(uid, state, 'Invalid authenticator code'));
      return;
    }

    // Login and consent in one step: a grant with every requested scope (oidc-provider has already
    // dropped offline_access unless prompt=consent was asked for; refresh tokens are issued anyway).
    const clientId = String(details.params.client_id);
    const grant = new this.provider.Grant({ accountId: user.accountId, clientId });
    const scope = typeof details.params.scope === 'string' ? details.params.scope : '';
    if (scope !== '') grant.addOIDCScope(scope);
    const grantId = await grant.save();
    this.interactions.delete(uid);
    ctx.respond = false;
    await this.provider.interactionFinished(
      ctx.req,
      ctx.res,
      { login: { accountId: user.accountId }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  }

  private async finishConsent(ctx: KoaLikeContext, details: InteractionDetails): Promise<void> {
    const accountId = details.session?.accountId;
    if (accountId === undefined) throw new Error('consent prompt without a session');
    const existing =
      details.grantId === undefined ? undefined : await this.provider.Grant.find(details.grantId);
    const grant =
      existing ?? new this.provider.Grant({ accountId, clientId: String(details.params.client_id) });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details as {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
    };
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    this.interactions.delete(details.uid);
    ctx.respond = false;
    await this.provider.interactionFinished(
      ctx.req,
      ctx.res,
      { consent: existing ? {} : { grantId } },
      { mergeWithLastSubmission: true },
    );
  }

  /** RFC 6238 with one step either side; a time step already accepted for the user is refused. */
  private acceptTotp(user: TestOidcUser, code: string): boolean {
    if (!/^\d{6}$/.test(code)) return false;
    let step: number;
    try {
      const result = verifySync({
        secret: user.totpSecret,
        token: code,
        algorithm: 'sha1',
        digits: 6,
        period: user.totpPeriodSec ?? TOTP_PERIOD_SEC,
        epochTolerance: user.totpPeriodSec ?? TOTP_PERIOD_SEC,
        guardrails: TOTP_GUARDRAILS,
      });
      if (!result.valid || !('timeStep' in result)) return false;
      step = result.timeStep;
    } catch {
      return false;
    }
    let accepted = this.acceptedSteps.get(user.accountId);
    if (!accepted) {
      accepted = new Set();
      this.acceptedSteps.set(user.accountId, accepted);
    }
    if (accepted.has(step)) return false;
    accepted.add(step);
    return true;
  }

  private loginPage(uid: string, state: InteractionState, error?: string, username = ''): string {
    const f = this.fields;
    return page(
      'Sign in',
      `${errorText(error)}<form id="${escapeHtml(f.loginFormId)}" method="post" action="/interaction/${uid}/login">
  <input type="hidden" name="${CSRF_FIELD}" value="${escapeHtml(state.csrf)}">
  <label>Username <input type="text" name="${escapeHtml(f.usernameField)}" value="${escapeHtml(username)}" autocomplete="username" autofocus></label>
  <label>Password <input type="password" name="${escapeHtml(f.passwordField)}" autocomplete="current-password"></label>
  <button type="submit">Sign in</button>
</form>`,
    );
  }

  private otpPage(uid: string, state: InteractionState, error?: string): string {
    const f = this.fields;
    return page(
      'Two-factor authentication',
      `${errorText(error)}<form id="${escapeHtml(f.otpFormId)}" method="post" action="/interaction/${uid}/otp">
  <input type="hidden" name="${CSRF_FIELD}" value="${escapeHtml(state.csrf)}">
  <label>Authenticator code <input type="text" name="${escapeHtml(f.otpField)}" inputmode="numeric" pattern="[0-9]{6}" autocomplete="one-time-code" autofocus></label>
  <button type="submit">Verify</button>
</form>`,
    );
  }
}

function listen(port: number): Promise<Server> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function oauthErrorOf(body: unknown): string | undefined {
  if (typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'string') {
    return body.error;
  }
  return undefined;
}

function paramsOf(ctx: KoaLikeContext): Record<string, unknown> {
  // oidc-provider defines ctx.oidc (with the parsed parameters) on the contexts it routes.
  const oidc = (ctx as KoaLikeContext & { oidc?: { params?: Record<string, unknown> } }).oidc;
  return oidc?.params ?? {};
}

export async function startTestOidcServer(opts: TestOidcServerOptions = {}): Promise<TestOidcServer> {
  // The issuer names the port, so the socket is bound before the provider is built.
  const server = await listen(opts.port ?? 0);
  try {
    return await serve(server, opts);
  } catch (err) {
    server.close();
    throw err;
  }
}

async function serve(server: Server, opts: TestOidcServerOptions): Promise<TestOidcServer> {
  const accessTokenTtlSec = opts.accessTokenTtlSec ?? 20;
  const refreshTokenTtlSec = opts.refreshTokenTtlSec ?? 3600;
  const rotate = opts.rotate ?? true;
  const graceMs = (opts.graceWindowSec ?? 0) * 1000;
  const clients = (opts.clients ?? [DEFAULT_CLIENT]).map((c): TestOidcClient => ({
    ...c,
    grantTypes: [...c.grantTypes],
    ...(c.authMethod === 'none' ? {} : { clientSecret: c.clientSecret ?? `${c.clientId}-secret` }),
  }));
  const introspector = {
    clientId: `harness-introspector-${randomUUID()}`,
    secret: randomBytes(24).toString('hex'),
  };

  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const { default: ProviderClass, errors } = await loadOidcProvider();
  const rotation: RotationContext = {
    store: new Store(),
    graceMs,
    requests: new AsyncLocalStorage(),
    invalidGrant: (description) => new errors.InvalidGrant(description),
  };
  const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

  const provider = new ProviderClass(issuer, {
    adapter: (model: string) => new HarnessAdapter(model, rotation),
    clients: [
      ...clients.map(clientMetadata),
      {
        client_id: introspector.clientId,
        client_secret: introspector.secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: { keys: [{ ...signingKey, kid: 'harness-rs256', alg: 'RS256', use: 'sig' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    findAccount: (_ctx: unknown, sub: string) => ({ accountId: sub, claims: () => ({ sub }) }),
    scopes: ['openid', 'offline_access'],
    // 'token' (OAuth 2.0 implicit) is added by allowPlainTokenResponseType.
    responseTypes: ['code', 'id_token token', 'none'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      userinfo: { enabled: true },
      introspection: { enabled: true, allowedPolicy: () => true },
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx: unknown, client: ProviderClient, token: { clientId?: string }) =>
          token.clientId === client.clientId,
      },
    },
    rotateRefreshToken: rotate,
    // A refresh token for every authorization_code grant of a client allowed the refresh_token grant,
    // with or without offline_access (which oidc-provider drops unless prompt=consent is requested),
    // as Keycloak and most IdPs do.
    issueRefreshToken: (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) =>
      client.grantTypeAllowed('refresh_token'),
    // Tokens from an interactive login outlive the login session (the operator drops its cookies).
    expiresWithSession: () => false,
    pkce: { required: () => true },
    allowOmittingSingleRegisteredRedirectUri: true,
    clientBasedCORS: () => false,
    ttl: {
      AccessToken: accessTokenTtlSec,
      ClientCredentials: accessTokenTtlSec,
      RefreshToken: refreshTokenTtlSec,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 10 * 365 * 86400,
    },
  });

  await allowPlainTokenResponseType(provider);

  const serverErrors: Error[] = [];
  provider.on('server_error', (_ctx, err) => {
    serverErrors.push(err instanceof Error ? err : new Error(String(err)));
  });
  provider.on('grant.revoked', () => {
    const record = rotation.requests.getStore();
    if (record) record.revokedFamily = true;
  });

  const tokenPath = new URL(provider.urlFor('token')).pathname;
  const isTokenRequest = (ctx: KoaLikeContext): boolean => ctx.method === 'POST' && ctx.path === tokenPath;

  const faults = new FaultController();
  const refreshLog: RefreshLogEntry[] = [];

  // Outermost: faults (so that rejected requests never reach the log or the provider).
  provider.use(faults.middleware(isTokenRequest));
  provider.use(async (ctx, next) => {
    if (!isTokenRequest(ctx)) {
      await next();
      return;
    }
    const at = Date.now();
    const record: RequestRecord = { revokedFamily: false };
    try {
      await rotation.requests.run(record, next);
    } finally {
      const params = paramsOf(ctx);
      if (record.presented !== undefined || params.grant_type === 'refresh_token') {
        // A request rejected before the lookup (e.g. invalid_client) left the token as it was.
        const token = params.refresh_token;
        const presented =
          record.presented ??
          (typeof token === 'string'
            ? classify(rotation.store.get('RefreshToken', token), graceMs, Date.now())
            : 'unknown');
        const error = ctx.status >= 400 ? oauthErrorOf(ctx.body) : undefined;
        refreshLog.push({
          at,
          presented,
          status: ctx.status,
          ...(error === undefined ? {} : { error }),
          revokedFamily: record.revokedFamily,
        });
      }
    }
  });
  const loginPages = opts.login && new LoginPages(provider, errors, opts.login, serverErrors);
  if (loginPages) provider.use(loginPages.middleware());

  // Surface bad client metadata now rather than as invalid_client later.
  for (const client of clients) {
    if (!(await provider.Client.find(client.clientId)))
      throw new Error(`client ${client.clientId} not registered`);
  }

  server.on('request', provider.callback());

  const introspectionEndpoint = provider.urlFor('introspection');

  return {
    issuer,
    authorizationEndpoint: provider.urlFor('authorization'),
    tokenEndpoint: provider.urlFor('token'),
    introspectionEndpoint,
    revocationEndpoint: provider.urlFor('revocation'),
    clients,
    faults,

    async close() {
      faults.dispose();
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => {
        server.close((err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    },

    async seedRefreshToken({ clientId, accountId = 'user-1' }) {
      const client = await provider.Client.find(clientId);
      if (!client) throw new Error(`unknown client ${clientId}`);
      const scope = 'openid offline_access';
      const grant = new provider.Grant({ accountId, clientId });
      grant.addOIDCScope(scope);
      const grantId = await grant.save();
      return new provider.RefreshToken({
        client,
        accountId,
        grantId,
        scope,
        gty: 'authorization_code',
        authTime: Math.floor(Date.now() / 1000),
      }).save();
    },

    reuseCount() {
      return refreshLog.filter((e) => e.presented === 'reused').length;
    },

    refreshLog() {
      // Entries are recorded on completion; report them in order of arrival.
      return refreshLog.map((e) => ({ ...e })).sort((a, b) => a.at - b.at);
    },

    refreshTokenState(token) {
      const presented = classify(rotation.store.get('RefreshToken', token), graceMs, Date.now());
      if (presented === 'unknown' || presented === 'current') return presented;
      return 'consumed';
    },

    async isAccessTokenActive(token) {
      const res = await fetch(introspectionEndpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${introspector.clientId}:${introspector.secret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
      });
      if (!res.ok) throw new Error(`introspection answered ${res.status}: ${await res.text()}`);
      const body = (await res.json()) as { active?: unknown; exp?: unknown };
      return body.active === true && (typeof body.exp !== 'number' || body.exp * 1000 > Date.now());
    },

    revokeFamilyOf(refreshToken) {
      const grantId = rotation.store.get('RefreshToken', refreshToken)?.payload.grantId;
      if (!grantId) return Promise.resolve(false);
      rotation.store.revokeGrant(grantId);
      return Promise.resolve(true);
    },

    revokeAllGrants() {
      for (const grantId of rotation.store.grantIds()) rotation.store.revokeGrant(grantId);
      return Promise.resolve();
    },

    serverErrors() {
      return [...serverErrors];
    },

    totpCodesReceived() {
      return (loginPages?.codes ?? []).map((e) => ({ ...e }));
    },

    loginAttempts() {
      return (loginPages?.attempts ?? []).map((e) => ({ ...e }));
    },
  };
}
