// OAuthClient against a real provider on 127.0.0.1: what each grant sends and reads, how each way a
// token request can fail is classified (never exposing a secret), revocation, and where endpoints
// come from (explicit, discovered, a preset's defaults).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Provider } from '../../src/api/v1alpha1.ts';
import { normaliseTokenResponse } from '../../src/oauth/grants.ts';
import {
  OAuthClient,
  TokenError,
  type ClientConfig,
  type EndpointPolicy,
  type ResolvedEndpoints,
  type TokenGrant,
  type TokenSet,
  type TransportOptions,
} from '../../src/oauth/index.ts';
import { endpointSettingsFor } from '../../src/providers/configure.ts';
import { presetDefaults } from '../../src/providers/presets.ts';
import { FakeClock } from '../harness/fake-clock.ts';

interface Seen {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  form: URLSearchParams;
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen) => void;

let server: Server;
let port: number;
let base: string;
let host: string;
let handler: Handler;
let seen: Seen[] = [];

const NOW = Date.parse('2030-01-01T00:00:00Z');
const policy: EndpointPolicy = { allowInsecureHttp: true };
const CLIENT_SECRET = 'cl!ent secret+/=&x';
const REFRESH_TOKEN = 'rt-OLD-0123456789abcdef';
/** An Exact Online client (its preset's client authentication). */
const EXACT: ClientConfig = {
  clientID: 'client-1',
  clientSecret: CLIENT_SECRET,
  authMethod: 'client_secret_post',
};
/** What the concur preset adds to a client (src/providers/presets/concur.ts). */
const CONCUR: Partial<ClientConfig> = {
  passwordGrantParameters: { credtype: 'password' },
  errorDialect: 'concur',
};

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** The provider answers every request with this JSON. */
function respond(status: number, body: unknown, headers: Record<string, string> = {}): void {
  handler = (_req, res) => {
    json(res, status, body, headers);
  };
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const record: Seen = {
        method: req.method ?? '',
        path: url.pathname,
        headers: req.headers,
        form: new URLSearchParams(Buffer.concat(chunks).toString('utf8')),
      };
      seen.push(record);
      handler(req, res, record);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  host = `127.0.0.1:${port}`;
  base = `http://${host}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
});

const clients: OAuthClient[] = [];

beforeEach(() => {
  seen = [];
  respond(500, { error: 'server_error' });
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
});

/** A new OAuthClient (closed after the test); its clock stands at NOW unless one is given. */
function oauthClient(transport: Partial<TransportOptions> = {}, clock = new FakeClock(NOW)): OAuthClient {
  const client = new OAuthClient({ clock, transport: { policy, ...transport } });
  clients.push(client);
  return client;
}

interface RefreshOptions {
  client?: Partial<ClientConfig>;
  endpoints?: ResolvedEndpoints;
  grant?: TokenGrant;
  transport?: Partial<TransportOptions>;
}

/** By default: an Exact client refreshing REFRESH_TOKEN at the local provider. */
function refresh(options: RefreshOptions = {}): Promise<TokenSet> {
  return oauthClient(options.transport).requestTokens(
    { ...EXACT, ...options.client },
    options.endpoints ?? { tokenEndpoint: `${base}/api/oauth2/token` },
    options.grant ?? { type: 'refresh_token', refreshToken: REFRESH_TOKEN },
  );
}

async function failure(promise: Promise<unknown>): Promise<TokenError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TokenError);
  const tokenError = error as TokenError;
  // Nothing secret in the message or in what a logger would serialise.
  for (const secret of [CLIENT_SECRET, REFRESH_TOKEN, 'rt-NEW', 'at-']) {
    expect(tokenError.message).not.toContain(secret);
    expect(JSON.stringify(tokenError)).not.toContain(secret);
  }
  expect(tokenError.cause).toBeUndefined();
  return tokenError;
}

describe('requestTokens', () => {
  it('refreshes an Exact-style chain: client_secret_post, string expires_in', async () => {
    respond(200, {
      access_token: 'at-1',
      token_type: 'bearer',
      expires_in: '600',
      refresh_token: 'rt-NEW-1',
    });
    const observed: [string, number | 'error', number][] = [];
    const tokens = await refresh({ transport: { onRequest: (h, s, d) => observed.push([h, s, d]) } });
    expect(tokens).toEqual({
      accessToken: 'at-1',
      tokenType: 'Bearer',
      expiresInSec: 600,
      refreshToken: 'rt-NEW-1',
    });

    expect(seen).toHaveLength(1);
    const request = seen[0];
    expect(request?.method).toBe('POST');
    expect(request?.path).toBe('/api/oauth2/token');
    expect(request?.headers['content-type']).toMatch(/^application\/x-www-form-urlencoded/);
    expect(request?.headers.authorization).toBeUndefined();
    expect(Object.fromEntries(request?.form ?? [])).toEqual({
      grant_type: 'refresh_token',
      refresh_token: REFRESH_TOKEN,
      client_id: 'client-1',
      client_secret: CLIENT_SECRET,
    });
    expect(observed).toHaveLength(1);
    expect(observed[0]?.[0]).toBe(host);
    expect(observed[0]?.[1]).toBe(200);
    expect(observed[0]?.[2]).toBeGreaterThanOrEqual(0);
  });

  it('sends client_secret_basic in the Authorization header, form-encoded per RFC 6749', async () => {
    respond(200, { access_token: 'at-2', token_type: 'Bearer' });
    const tokens = await refresh({ client: { authMethod: 'client_secret_basic' } });
    // A missing expires_in stays undefined: the caller applies refresh.assumedLifetime.
    expect(tokens).toEqual({ accessToken: 'at-2', tokenType: 'Bearer' });
    const request = seen[0];
    const basic = String(request?.headers.authorization);
    expect(basic.startsWith('Basic ')).toBe(true);
    const [id, secret] = Buffer.from(basic.slice(6), 'base64').toString('utf8').split(':');
    expect(decodeURIComponent((id ?? '').replace(/\+/g, ' '))).toBe('client-1');
    expect(decodeURIComponent((secret ?? '').replace(/\+/g, ' '))).toBe(CLIENT_SECRET);
    expect(request?.form.has('client_secret')).toBe(false);
  });

  it('passes extra parameters but never lets them override its own; a refresh keeps the granted scope', async () => {
    respond(200, { access_token: 'at', token_type: 'bearer', scope: ['a', 'b'] });
    const tokens = await refresh({
      client: {
        scopes: ['openid', 'offline_access'],
        extraParameters: { audience: 'api', grant_type: 'password', client_secret: 'x', refresh_token: 'y' },
      },
    });
    expect(tokens.scope).toBe('a b');
    const form = seen[0]?.form;
    // RFC 6749 §6: omitted scope means the scope originally granted.
    expect(form?.get('scope')).toBeNull();
    expect(form?.get('audience')).toBe('api');
    expect(form?.get('grant_type')).toBe('refresh_token');
    expect(form?.get('refresh_token')).toBe(REFRESH_TOKEN);
    expect(form?.get('client_secret')).toBe(CLIENT_SECRET);
  });

  it('reads a Concur answer: geolocation, unvalidated id_token, epoch-seconds refresh_expires_in', async () => {
    respond(200, {
      expires_in: '3600',
      scope: 'EXPRPT',
      token_type: 'Bearer',
      access_token: 'at-c',
      refresh_token: 'rt-NEW-c',
      id_token: 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJzb21lb25lLWVsc2UifQ.sig',
      refresh_expires_in: String(NOW / 1000 + 180 * 86400),
      geolocation: 'https://us.api.concursolutions.com',
    });
    const tokens = await refresh({ client: CONCUR });
    expect(tokens).toEqual({
      accessToken: 'at-c',
      tokenType: 'Bearer',
      expiresInSec: 3600,
      refreshToken: 'rt-NEW-c',
      refreshExpiresInSec: 180 * 86400,
      idToken: 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJzb21lb25lLWVsc2UifQ.sig',
      scope: 'EXPRPT',
      geolocation: 'https://us.api.concursolutions.com',
    });
  });

  it('sends the password grant with otp, and Concur credtype', async () => {
    respond(200, { access_token: 'at', token_type: 'bearer' });
    await refresh({
      client: CONCUR,
      grant: { type: 'password', username: 'alice', password: 'pw-secret', otp: '123456' },
    });
    expect(Object.fromEntries(seen[0]?.form ?? [])).toMatchObject({
      grant_type: 'password',
      username: 'alice',
      password: 'pw-secret',
      otp: '123456',
      credtype: 'password',
    });
  });

  it('exchanges an authorization code with PKCE', async () => {
    respond(200, { access_token: 'at', token_type: 'bearer', refresh_token: 'rt-NEW' });
    const tokens = await refresh({
      grant: {
        type: 'authorization_code',
        code: 'c0de',
        codeVerifier: 'v'.repeat(43),
        redirectURI: 'https://cb/x',
      },
    });
    expect(tokens.refreshToken).toBe('rt-NEW');
    expect(Object.fromEntries(seen[0]?.form ?? [])).toMatchObject({
      grant_type: 'authorization_code',
      code: 'c0de',
      code_verifier: 'v'.repeat(43),
      redirect_uri: 'https://cb/x',
    });
  });

  // Token size caps (MAX_TOKEN_BYTES, 16 KiB). A refused successor of a rotated refresh token
  // leaves the chain broken: the presented token was used up by the answer.
  const KIB16 = 16 * 1024;
  it.each([
    {
      name: 'an access token of exactly 16 KiB is kept',
      answer: { access_token: 'a'.repeat(KIB16), refresh_token: 'rt-NEW-2' },
      expected: undefined,
    },
    {
      name: 'a rotated chain with an access token over 16 KiB is broken',
      answer: { access_token: 'a'.repeat(KIB16 + 1), refresh_token: 'rt-NEW-2' },
      expected: { code: 'chain_broken', reason: 'TokenTooLarge' },
    },
    {
      name: 'a refresh token over 16 KiB breaks the chain',
      answer: { access_token: 'at-3', refresh_token: `rt-NEW-${'r'.repeat(KIB16)}` },
      expected: { code: 'chain_broken', reason: 'TokenTooLarge' },
    },
    {
      name: 'bytes count, not characters',
      answer: { access_token: 'é'.repeat(KIB16 / 2 + 1), refresh_token: 'rt-NEW-2' },
      expected: { code: 'chain_broken', reason: 'TokenTooLarge' },
    },
    {
      name: 'without a new refresh token nothing was used up: configuration',
      answer: { access_token: 'a'.repeat(KIB16 + 1) },
      expected: { code: 'configuration', reason: 'TokenTooLarge' },
    },
    {
      name: 'the presented refresh token given back is not used up either',
      answer: { access_token: 'a'.repeat(KIB16 + 1), refresh_token: REFRESH_TOKEN },
      expected: { code: 'configuration', reason: 'TokenTooLarge' },
    },
    {
      name: 'client credentials: configuration',
      answer: { access_token: 'a'.repeat(KIB16 + 1) },
      grant: { type: 'client_credentials' } as const,
      expected: { code: 'configuration', reason: 'TokenTooLarge' },
    },
  ])('caps token sizes: $name', async ({ answer, grant, expected }) => {
    respond(200, { token_type: 'Bearer', expires_in: 60, ...answer });
    const request = refresh(grant !== undefined ? { grant } : {});
    if (expected === undefined) {
      expect((await request).accessToken).toHaveLength(KIB16);
      return;
    }
    const error = await failure(request);
    expect(error).toMatchObject(expected);
    expect(error.message).toContain('16384 bytes');
    expect(error.message.length).toBeLessThan(300);
  });

  it('classifies a reused Exact refresh token as a broken chain', async () => {
    respond(401, { error: 'unauthorized_client', error_description: 'Old refresh token used.' });
    const error = await failure(refresh());
    expect(error).toMatchObject({ code: 'chain_broken', reason: 'RefreshTokenReused', httpStatus: 401 });
    expect(error.message).toContain('Old refresh token used.');
  });

  it('classifies Exact too-early', async () => {
    respond(
      400,
      { error: 'access_denied', error_description: 'Rate limit exceeded: access_token not expired' },
      { Reason: 'TooEarlyToRefreshTokens' },
    );
    expect(await failure(refresh())).toMatchObject({
      code: 'too_early',
      reason: 'TooEarly',
      notBeforeMs: undefined,
    });
  });

  it('classifies Concur errors: relocate with geolocation, 108 chain broken', async () => {
    respond(400, {
      code: 16,
      error: 'invalid_grant',
      error_description: 'user lives elsewhere',
      geolocation: 'https://eu2.api.concursolutions.com',
    });
    expect(await failure(refresh({ client: CONCUR }))).toMatchObject({
      code: 'relocate',
      geolocation: 'https://eu2.api.concursolutions.com',
    });
    respond(400, {
      code: 108,
      error: 'invalid_grant',
      error_description: 'bad or expired refresh token',
    });
    expect(await failure(refresh({ client: CONCUR }))).toMatchObject({ code: 'chain_broken' });
  });

  it('classifies a 401 with a WWW-Authenticate challenge as invalid client', async () => {
    respond(401, { error: 'invalid_client' }, { 'www-authenticate': 'Basic realm="token"' });
    expect(await failure(refresh({ client: { authMethod: 'client_secret_basic' } }))).toMatchObject({
      code: 'configuration',
      reason: 'InvalidClient',
    });
  });

  it('never echoes secrets the provider repeats in its error', async () => {
    respond(400, {
      error: 'invalid_grant',
      error_description: `refresh token ${REFRESH_TOKEN} for secret ${CLIENT_SECRET} is stale token`,
    });
    const error = await failure(refresh());
    expect(error.code).toBe('chain_broken');
    expect(error.message).toContain('[redacted]');
  });

  it('does not follow redirects', async () => {
    handler = (req, res) => {
      if (req.url === '/elsewhere') {
        json(res, 200, { access_token: 'at', token_type: 'bearer' });
        return;
      }
      res.writeHead(302, { location: `${base}/elsewhere?refresh_token=leak` });
      res.end();
    };
    const error = await failure(refresh());
    expect(error).toMatchObject({ code: 'configuration', reason: 'UnexpectedRedirect', httpStatus: 302 });
    expect(error.message).not.toContain('leak');
    expect(seen.map((s) => s.path)).toEqual(['/api/oauth2/token']);
  });

  it('abandons a 2 MiB body: in doubt after a refresh, transient otherwise', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"access_token":"${'a'.repeat(2 * 1024 * 1024)}","token_type":"bearer"}`);
    };
    expect(await failure(refresh())).toMatchObject({ code: 'in_doubt', reason: 'ResponseTooLarge' });
    expect(await failure(refresh({ grant: { type: 'client_credentials' } }))).toMatchObject({
      code: 'transient',
      reason: 'ResponseTooLarge',
    });
  });

  it('caps a chunked body without content-length too', async () => {
    handler = (_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      const chunk = 'x'.repeat(64 * 1024);
      for (let i = 0; i < 40; i++) res.write(chunk);
      res.end();
    };
    expect(await failure(refresh())).toMatchObject({ code: 'transient', reason: 'ResponseTooLarge' });
  });

  it('times out a hanging provider: in doubt for a refresh, transient for client credentials', async () => {
    handler = () => {
      // Never answer.
    };
    const started = performance.now();
    const error = await failure(refresh({ transport: { timeoutMs: 300 } }));
    expect(error).toMatchObject({ code: 'in_doubt', reason: 'ResponseLost' });
    expect(performance.now() - started).toBeLessThan(5000);
    expect(
      await failure(refresh({ transport: { timeoutMs: 300 }, grant: { type: 'client_credentials' } })),
    ).toMatchObject({ code: 'transient', reason: 'Timeout' });
  });

  it('times out a body that stalls after the headers', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"access_token":');
    };
    expect(await failure(refresh({ transport: { timeoutMs: 300 } }))).toMatchObject({
      code: 'in_doubt',
      reason: 'ResponseLost',
    });
  });

  it('treats a connection reset mid-response as in doubt', async () => {
    handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
      res.write('{"access_token":"at-x","refresh_token":"rt-NEW');
      setTimeout(() => req.socket.destroy(), 20);
    };
    expect(await failure(refresh())).toMatchObject({ code: 'in_doubt', reason: 'ResponseLost' });
  });

  it('treats malformed JSON in a 200 as in doubt', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"access_token":"at-1","refresh_token":"rt-NEW-1",');
    };
    expect(await failure(refresh())).toMatchObject({
      code: 'in_doubt',
      reason: 'MalformedResponse',
      httpStatus: 200,
    });
  });

  it('treats a 200 without access_token as in doubt', async () => {
    respond(200, { token_type: 'bearer', refresh_token: 'rt-NEW' });
    expect(await failure(refresh())).toMatchObject({ code: 'in_doubt', reason: 'MalformedResponse' });
  });

  it('classifies 5xx and 429 with Retry-After as transient', async () => {
    respond(503, { error: 'temporarily_unavailable' }, { 'retry-after': '7' });
    expect(await failure(refresh())).toMatchObject({ code: 'transient', retryAfterMs: 7000 });
    handler = (_req, res) => {
      res.writeHead(429, { 'retry-after': '3' });
      res.end();
    };
    expect(await failure(refresh())).toMatchObject({
      code: 'transient',
      reason: 'RateLimited',
      retryAfterMs: 3000,
    });
  });

  it('reports a refused connection as transient (nothing was sent)', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) =>
      closed.close(() => {
        resolve();
      }),
    );
    const observed: (number | 'error')[] = [];
    const error = await failure(
      refresh({
        endpoints: { tokenEndpoint: `http://127.0.0.1:${closedPort}/token` },
        transport: { onRequest: (_h, s) => observed.push(s) },
      }),
    );
    expect(error).toMatchObject({ code: 'transient', reason: 'ConnectionFailed' });
    expect(observed).toEqual(['error']);
  });

  // Nothing is sent to a URL the policy refuses, and the refusal is insecure_endpoint.
  it.each<[string, () => RefreshOptions]>([
    ['plain http without allowInsecureHttp', () => ({ transport: { policy: { allowInsecureHttp: false } } })],
    [
      'the cloud metadata address',
      () => ({
        endpoints: { tokenEndpoint: 'http://169.254.169.254/token' },
        transport: { policy: { allowInsecureHttp: true } },
      }),
    ],
  ])('checks the endpoint policy before any request: %s', async (_name, options) => {
    respond(200, { access_token: 'at', token_type: 'bearer' });
    const error = await failure(refresh(options()));
    expect(error.code).toBe('insecure_endpoint');
    expect(seen).toHaveLength(0);
  });

  it('goes through the transport: the injected resolver names the address, the observer sees the call', async () => {
    respond(200, { access_token: 'at-f', token_type: 'DPoP' });
    const lookups: string[] = [];
    const observed: [string, number | 'error', string][] = [];
    const tokens = await refresh({
      endpoints: { tokenEndpoint: `http://idp.test:${port}/token` },
      transport: {
        resolve: (name) => {
          lookups.push(name);
          return Promise.resolve(['127.0.0.1']);
        },
        onRequest: (h, s, _d, purpose) => observed.push([h, s, purpose]),
      },
    });
    expect(tokens).toEqual({ accessToken: 'at-f', tokenType: 'DPoP' });
    expect(lookups).toEqual(['idp.test']);
    expect(observed).toEqual([[`idp.test:${port}`, 200, 'token']]);
    expect(seen.map((s) => `${s.method} ${s.path} ${String(s.headers.host)}`)).toEqual([
      `POST /token idp.test:${port}`,
    ]);
  });

  it('rejects bad inputs as configuration errors without a request', async () => {
    expect(await failure(refresh({ client: { clientSecret: undefined } }))).toMatchObject({
      reason: 'MissingClientSecret',
    });
    expect(await failure(refresh({ grant: { type: 'refresh_token', refreshToken: '' } }))).toMatchObject({
      reason: 'MissingCredential',
    });
    expect(seen).toHaveLength(0);
  });
});

describe('normaliseTokenResponse', () => {
  it('drops unusable numbers, keeps usable ones, and omits Keycloak 0 refresh_expires_in', () => {
    const { body, extras } = normaliseTokenResponse(
      {
        access_token: 'a',
        token_type: 'bearer',
        expires_in: 'soon',
        refresh_expires_in: 0,
        refresh_token: null,
      },
      NOW,
    );
    expect(body).toEqual({ access_token: 'a', token_type: 'bearer' });
    expect(extras).toEqual({});
    expect(normaliseTokenResponse({ expires_in: 300.5, refresh_expires_in: '1800' }, NOW)).toEqual({
      body: { expires_in: 300.5 },
      extras: { refreshExpiresInSec: 1800 },
    });
  });
});

describe('revoke', () => {
  const revoke = (
    endpoints: ResolvedEndpoints = { tokenEndpoint: `${base}/token`, revocationEndpoint: `${base}/revoke` },
  ): Promise<void> =>
    oauthClient().revoke(
      { ...EXACT, authMethod: 'client_secret_basic' },
      endpoints,
      REFRESH_TOKEN,
      'refresh_token',
    );

  it('posts token and token_type_hint (RFC 7009)', async () => {
    handler = (_req, res) => {
      res.writeHead(200);
      res.end();
    };
    await expect(revoke()).resolves.toBeUndefined();
    expect(seen[0]?.path).toBe('/revoke');
    expect(Object.fromEntries(seen[0]?.form ?? [])).toEqual({
      token: REFRESH_TOKEN,
      token_type_hint: 'refresh_token',
    });
  });

  it('throws classified failures: transient for a 503, NoRevocationEndpoint without an endpoint', async () => {
    respond(503, { error: 'temporarily_unavailable' });
    expect(await failure(revoke())).toMatchObject({ code: 'transient' });
    expect(await failure(revoke({ tokenEndpoint: `${base}/token` }))).toMatchObject({
      reason: 'NoRevocationEndpoint',
    });
    expect(seen).toHaveLength(1);
  });

  it("ends at the caller's signal, as does introspection (then 'unknown')", async () => {
    // The provider never answers: only the signal can end these calls before the request timeout.
    handler = () => undefined;
    const oauth = oauthClient({ timeoutMs: 60_000 });
    const endpoints = {
      tokenEndpoint: `${base}/token`,
      revocationEndpoint: `${base}/revoke`,
      introspectionEndpoint: `${base}/introspect`,
    };
    // Without the signal they would wait the 60 s timeout, past the test's own timeout.
    const revoked = failure(
      oauth.revoke(EXACT, endpoints, REFRESH_TOKEN, 'refresh_token', AbortSignal.timeout(100)),
    );
    const verdict = oauth.introspect(EXACT, endpoints, REFRESH_TOKEN, AbortSignal.timeout(100));
    expect((await revoked).code).toBe('transient');
    expect(await verdict).toBe('unknown');
    expect(seen.map((r) => r.path).sort()).toEqual(['/introspect', '/revoke']);
  });
});

describe('resolveEndpoints', () => {
  function serveDiscovery(issuer: string): void {
    handler = (_req, res, record) => {
      if (record.path === '/realms/demo/.well-known/openid-configuration') {
        json(res, 200, {
          issuer,
          token_endpoint: `${issuer}/protocol/openid-connect/token`,
          authorization_endpoint: `${issuer}/protocol/openid-connect/auth`,
          revocation_endpoint: `${issuer}/protocol/openid-connect/revoke`,
        });
        return;
      }
      json(res, 404, {});
    };
  }

  /** The endpoints of a connection's provider, through the providers layer's precedence rules. */
  function endpointsOf(provider: Provider, geolocation?: string): Promise<ResolvedEndpoints> {
    const preset = presetDefaults(provider.preset, provider.region);
    return oauthClient().resolveEndpoints(endpointSettingsFor(provider, preset, geolocation));
  }

  it('discovers endpoints from the issuer and caches them per issuer', async () => {
    const issuer = `${base}/realms/demo`;
    serveDiscovery(issuer);
    const clock = new FakeClock(NOW);
    const oauth = oauthClient({}, clock);
    const endpoints = await oauth.resolveEndpoints({ issuerURL: issuer });
    expect(endpoints).toEqual({
      issuer,
      tokenEndpoint: `${issuer}/protocol/openid-connect/token`,
      authorizationEndpoint: `${issuer}/protocol/openid-connect/auth`,
      revocationEndpoint: `${issuer}/protocol/openid-connect/revoke`,
    });
    clock.stepWall(1000);
    await oauth.resolveEndpoints({ issuerURL: issuer });
    expect(seen).toHaveLength(1);
    // After the TTL it asks again.
    clock.stepWall(2 * 3600 * 1000);
    await oauth.resolveEndpoints({ issuerURL: issuer });
    expect(seen).toHaveLength(2);
    // And after the cache is cleared.
    oauth.clearDiscoveryCache();
    await oauth.resolveEndpoints({ issuerURL: issuer });
    expect(seen).toHaveLength(3);
  });

  it("ends one caller's wait for a discovery at its signal, not the request the others share", async () => {
    const issuer = `${base}/realms/demo`;
    let answer: (() => void) | undefined;
    handler = (_req, res) => {
      answer = () => {
        json(res, 200, { issuer, token_endpoint: `${issuer}/protocol/openid-connect/token` });
      };
    };
    const oauth = oauthClient({ timeoutMs: 60_000 });
    const controller = new AbortController();
    const patient = oauth.resolveEndpoints({ issuerURL: issuer });
    const hurried = oauth.resolveEndpoints({ issuerURL: issuer }, controller.signal);
    await expect.poll(() => seen.length).toBe(1);
    controller.abort(new DOMException('reconcile deadline reached', 'TimeoutError'));
    await expect(hurried).rejects.toThrow('reconcile deadline reached');
    // An explicit tokenURL does not turn an abort into "use what is configured".
    await expect(
      oauth.resolveEndpoints({ issuerURL: issuer, tokenURL: `${base}/token` }, controller.signal),
    ).rejects.toThrow('reconcile deadline reached');
    answer?.();
    expect((await patient).tokenEndpoint).toBe(`${issuer}/protocol/openid-connect/token`);
    expect(seen).toHaveLength(1);
  });

  it('lets an explicit tokenURL override the discovered one, and survive a failed discovery', async () => {
    respond(500, {});
    const endpoints = await oauthClient().resolveEndpoints({
      issuerURL: `${base}/realms/demo`,
      tokenURL: `${base}/custom/token`,
    });
    expect(endpoints).toEqual({ tokenEndpoint: `${base}/custom/token` });
  });

  it('fails discovery as configuration on an issuer mismatch and transient on 5xx', async () => {
    serveDiscovery('https://other.example.com/realms/demo');
    const mismatch = await failure(oauthClient().resolveEndpoints({ issuerURL: `${base}/realms/demo` }));
    expect(mismatch).toMatchObject({ code: 'configuration', reason: 'DiscoveryFailed' });
    expect(mismatch.message).toContain('issuer');
    respond(502, {});
    const unavailable = await failure(oauthClient().resolveEndpoints({ issuerURL: `${base}/realms/demo` }));
    expect(unavailable.code).toBe('transient');
  });

  it('refuses a metadata issuer before fetching', async () => {
    const error = await failure(oauthClient().resolveEndpoints({ issuerURL: 'http://169.254.169.254/' }));
    expect(error.code).toBe('insecure_endpoint');
    const withTokenURL = await failure(
      oauthClient().resolveEndpoints({ issuerURL: 'http://169.254.169.254/', tokenURL: `${base}/token` }),
    );
    expect(withTokenURL.code).toBe('insecure_endpoint');
    expect(seen).toHaveLength(0);
  });

  it('uses preset URLs by region, explicit URLs over them, and a Concur geolocation over both', async () => {
    expect(await endpointsOf({ preset: 'exact-online', region: 'be' })).toEqual({
      tokenEndpoint: 'https://start.exactonline.be/api/oauth2/token',
      authorizationEndpoint: 'https://start.exactonline.be/api/oauth2/auth',
    });
    expect(
      await endpointsOf({ preset: 'exact-online', tokenURL: 'https://sim.example.com/token' }),
    ).toMatchObject({ tokenEndpoint: 'https://sim.example.com/token' });
    expect(
      await endpointsOf(
        { preset: 'concur', tokenURL: 'https://us.api.concursolutions.com/oauth2/v0/token' },
        'https://emea.api.concursolutions.com',
      ),
    ).toEqual({ tokenEndpoint: 'https://emea.api.concursolutions.com/oauth2/v0/token' });
  });

  it('reports a missing token endpoint', async () => {
    expect(await failure(endpointsOf({ preset: 'generic' }))).toMatchObject({
      code: 'configuration',
      reason: 'MissingTokenEndpoint',
    });
  });
});
