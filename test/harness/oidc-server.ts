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
import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FaultController, type KoaLikeContext, type KoaLikeMiddleware } from './fault-proxy.ts';

export { FaultController } from './fault-proxy.ts';
export type { Fault, InjectedFault } from './fault-proxy.ts';

export type GrantType = 'refresh_token' | 'client_credentials' | 'authorization_code';

export interface TestOidcClient {
  clientId: string;
  /** Required for the client_secret_* methods; defaults to `${clientId}-secret`. */
  clientSecret?: string;
  authMethod: 'client_secret_basic' | 'client_secret_post' | 'none';
  grantTypes: GrantType[];
  /** Only with authorization_code; defaults to http://127.0.0.1/callback. */
  redirectUris?: string[];
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
  /** Errors the provider reported through its 'server_error' event. */
  serverErrors(): Error[];
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

interface Provider {
  readonly issuer: string;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  use(middleware: KoaLikeMiddleware): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  urlFor(name: string): string;
  Client: { find(id: string): Promise<ProviderClient | undefined> };
  Grant: new (init: { accountId: string; clientId: string }) => {
    addOIDCScope(scope: string): void;
    save(): Promise<string>;
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
  errors: { InvalidGrant: new (description: string) => Error };
}

// Loaded through a computed specifier: a static import of the untyped package fails type checking.
const OIDC_PROVIDER_PACKAGE: string = 'oidc-provider';
let loaded: Promise<OidcProviderModule> | undefined;
function loadOidcProvider(): Promise<OidcProviderModule> {
  loaded ??= import(OIDC_PROVIDER_PACKAGE) as Promise<OidcProviderModule>;
  return loaded;
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
  const code = client.grantTypes.includes('authorization_code');
  return {
    client_id: client.clientId,
    ...(client.authMethod === 'none' ? {} : { client_secret: client.clientSecret }),
    token_endpoint_auth_method: client.authMethod,
    grant_types: [...client.grantTypes],
    response_types: code ? ['code'] : [],
    redirect_uris: code ? (client.redirectUris ?? ['http://127.0.0.1/callback']) : [],
  };
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
    issueRefreshToken: (
      _ctx: unknown,
      client: { grantTypeAllowed(t: string): boolean },
      code: { scopes: Set<string> },
    ) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
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

  // Surface bad client metadata now rather than as invalid_client later.
  for (const client of clients) {
    if (!(await provider.Client.find(client.clientId)))
      throw new Error(`client ${client.clientId} not registered`);
  }

  server.on('request', provider.callback());

  const introspectionEndpoint = provider.urlFor('introspection');

  return {
    issuer,
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
  };
}
