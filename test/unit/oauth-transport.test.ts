// The one transport: every kind of outbound call of the OAuth layer goes through it, the endpoint
// policy and the size cap apply to a login page exactly as to a token call, and a connection goes
// only to the address that was checked.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/kube/clock.ts';
import {
  OAuthClient,
  TokenError,
  Transport,
  type ClientConfig,
  type HostResolver,
  type RequestPurpose,
  type TransportOptions,
} from '../../src/oauth/index.ts';

type Route = (req: IncomingMessage, res: ServerResponse) => void;

interface TestServer {
  server: Server;
  port: number;
  requests: string[];
  routes: Map<string, Route>;
}

async function startServer(address: string, port = 0): Promise<TestServer> {
  const requests: string[] = [];
  const routes = new Map<string, Route>();
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      requests.push(`${req.method ?? ''} ${path}`);
      const route = routes.get(path);
      if (route) route(req, res);
      else res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, address, resolve));
  return { server, port: (server.address() as AddressInfo).port, requests, routes };
}

async function stop(test: TestServer): Promise<void> {
  test.server.closeAllConnections();
  await new Promise<void>((resolve) =>
    test.server.close(() => {
      resolve();
    }),
  );
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify(body));
}

function html(res: ServerResponse, body: string): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(body);
}

/** A resolver for test names: every name resolves to what `answer` says, and each call is counted. */
function resolver(answer: (call: number) => string[]): HostResolver & { calls: number } {
  const resolve = Object.assign(
    (host: string) => {
      resolve.calls++;
      return host.endsWith('.test')
        ? Promise.resolve(answer(resolve.calls))
        : Promise.reject(new Error('unknown'));
    },
    { calls: 0 },
  );
  return resolve;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (err: unknown) => err,
  );
}

const client: ClientConfig = {
  clientID: 'client-1',
  clientSecret: 'secret-1',
  authMethod: 'client_secret_post',
};

/** A code-flow login of alice that starts at `authorizationEndpoint`. */
function codeLogin(oauth: OAuthClient, authorizationEndpoint: string) {
  return oauth.login({
    authorizationEndpoint,
    clientID: 'client-1',
    redirectURI: 'http://app.test/cb',
    flow: 'code',
    username: 'alice',
    password: 'pw',
    form: { usernameField: 'username', passwordField: 'password' },
  });
}

describe('every outbound call goes through the one transport', () => {
  let idp: TestServer;
  let base: string;
  let oauth: OAuthClient;
  const seen: { purpose: RequestPurpose; host: string; status: number | 'error' }[] = [];

  beforeAll(async () => {
    idp = await startServer('127.0.0.1');
    base = `http://idp.test:${idp.port}`;
    idp.routes.set('/.well-known/openid-configuration', (_req, res) => {
      json(res, 200, {
        issuer: base,
        token_endpoint: `${base}/token`,
        authorization_endpoint: `${base}/authorize`,
        revocation_endpoint: `${base}/revoke`,
        introspection_endpoint: `${base}/introspect`,
      });
    });
    idp.routes.set('/token', (_req, res) => {
      json(res, 200, { access_token: 'at-1', token_type: 'bearer', expires_in: 60 });
    });
    idp.routes.set('/revoke', (_req, res) => res.writeHead(200).end());
    idp.routes.set('/introspect', (_req, res) => {
      json(res, 200, { active: true });
    });
    idp.routes.set('/authorize', (_req, res) => res.writeHead(302, { location: '/login' }).end());
    idp.routes.set('/login', (_req, res) => {
      html(
        res,
        '<form method="post" action="/done"><input name="username"><input name="password" type="password"></form>',
      );
    });
    idp.routes.set('/done', (_req, res) =>
      res.writeHead(302, { location: 'http://app.test/cb?error=access_denied' }).end(),
    );
    oauth = new OAuthClient({
      clock: systemClock,
      transport: {
        policy: { allowInsecureHttp: true },
        resolve: resolver(() => ['127.0.0.1']),
        onRequest: (host, status, _ms, purpose) => seen.push({ purpose, host, status }),
      },
    });
  });

  afterAll(async () => {
    await oauth.close();
    await stop(idp);
  });

  it('discovery, token, revocation, introspection and each login page', async () => {
    const endpoints = await oauth.resolveEndpoints({ issuerURL: base });
    await oauth.requestTokens(client, endpoints, { type: 'client_credentials' });
    await oauth.revoke(client, endpoints, 'rt-1');
    expect(await oauth.introspect(client, endpoints, 'rt-1')).toBe('active');
    const login = await rejection(codeLogin(oauth, endpoints.authorizationEndpoint ?? ''));
    // The provider's error redirect ends the walk; what matters here is the route it took.
    expect(login).toBeInstanceOf(TokenError);
    expect(seen.map((s) => s.purpose)).toEqual([
      'discovery',
      'token',
      'revocation',
      'introspection',
      'login',
      'login',
      'login',
    ]);
    expect(new Set(seen.map((s) => s.host))).toEqual(new Set([`idp.test:${idp.port}`]));
    expect(idp.requests).toEqual([
      'GET /.well-known/openid-configuration',
      'POST /token',
      'POST /revoke',
      'POST /introspect',
      'GET /authorize',
      'GET /login',
      'POST /done',
    ]);
  });
});

describe('the policy and the size cap apply to a login page exactly as to a token call', () => {
  let idp: TestServer;
  let base: string;
  const options = (extra: Partial<TransportOptions> = {}): TransportOptions => ({
    policy: { allowInsecureHttp: true, allowedHosts: ['idp.test'] },
    resolve: resolver(() => ['127.0.0.1']),
    maxResponseBytes: 1024,
    ...extra,
  });

  beforeAll(async () => {
    idp = await startServer('127.0.0.1');
    base = `http://idp.test:${idp.port}`;
    const big = 'x'.repeat(4096);
    idp.routes.set('/token', (_req, res) => {
      json(res, 200, { access_token: big, token_type: 'bearer' });
    });
    idp.routes.set('/authorize', (_req, res) => {
      html(res, `<p>${big}</p>`);
    });
    idp.routes.set('/elsewhere', (_req, res) =>
      res.writeHead(302, { location: `http://other.test:${idp.port}/authorize` }).end(),
    );
  });

  afterAll(async () => {
    await stop(idp);
  });

  afterEach(() => {
    idp.requests.length = 0;
  });

  const loginAt = (oauth: OAuthClient, path: string) => codeLogin(oauth, `${base}${path}`);

  it('a body over the cap is abandoned, for a token answer and for a login page', async () => {
    const oauth = new OAuthClient({ clock: systemClock, transport: options() });
    const token = await rejection(
      oauth.requestTokens(client, { tokenEndpoint: `${base}/token` }, { type: 'client_credentials' }),
    );
    expect(token).toMatchObject({ code: 'transient', reason: 'ResponseTooLarge' });
    const page = await rejection(loginAt(oauth, '/authorize'));
    expect(page).toMatchObject({ reason: 'LoginFormUnexpected' });
    expect((page as Error).message).toContain('size limit');
    await oauth.close();
  });

  it('a host outside the allow-list is refused unsent, for a token call and for a login redirect', async () => {
    const oauth = new OAuthClient({ clock: systemClock, transport: options() });
    const token = await rejection(
      oauth.requestTokens(
        client,
        { tokenEndpoint: `http://other.test:${idp.port}/token` },
        { type: 'client_credentials' },
      ),
    );
    expect(token).toMatchObject({ code: 'insecure_endpoint' });
    const page = await rejection(loginAt(oauth, '/elsewhere'));
    expect(page).toMatchObject({ code: 'insecure_endpoint' });
    // Only the redirect itself reached the server; neither refused request was sent.
    expect(idp.requests).toEqual(['GET /elsewhere']);
    await oauth.close();
  });

  it('a redirect is returned, never followed', async () => {
    const oauth = new OAuthClient({ clock: systemClock, transport: options() });
    const err = await rejection(
      oauth.requestTokens(client, { tokenEndpoint: `${base}/elsewhere` }, { type: 'client_credentials' }),
    );
    expect(err).toMatchObject({ code: 'configuration', reason: 'UnexpectedRedirect' });
    expect(idp.requests).toEqual(['POST /elsewhere']);
    await oauth.close();
  });
});

describe('DNS: resolved once per connection, inside the connection, and checked', () => {
  let server: TestServer;
  let trap: TestServer;

  beforeAll(async () => {
    server = await startServer('127.0.0.1');
    // The same port on another loopback address: where a second, rebound answer would lead.
    trap = await startServer('127.0.0.2', server.port);
    for (const target of [server, trap]) {
      target.routes.set('/token', (_req, res) => {
        json(res, 200, { access_token: 'at-1', token_type: 'bearer' });
      });
    }
  });

  afterAll(async () => {
    await stop(server);
    await stop(trap);
  });

  afterEach(() => {
    server.requests.length = 0;
    trap.requests.length = 0;
  });

  it('connects to the address that was checked, even when the name answers differently afterwards', async () => {
    // No public address is reachable from a test machine, so the checked answer is 127.0.0.1 and the
    // rebound one 127.0.0.2: what the test shows is that the name is asked once, and the connection
    // goes where that one answer (the one the policy judged) points.
    const resolve = resolver((call) => (call === 1 ? ['127.0.0.1'] : ['127.0.0.2']));
    const transport = new Transport({ policy: { allowInsecureHttp: true }, resolve });
    const answer = await transport.request({
      purpose: 'token',
      method: 'POST',
      url: `http://rebind.test:${server.port}/token`,
      body: 'grant_type=client_credentials',
    });
    expect(answer.status).toBe(200);
    expect(resolve.calls).toBe(1);
    expect(server.requests).toEqual(['POST /token']);
    expect(trap.requests).toEqual([]);
    await transport.close();
  });

  it('refuses a connection whose look-up answers a forbidden address, before anything is sent', async () => {
    // 0.0.0.0 is "unspecified": refused by the policy. (Were it not, a connect would reach loopback.)
    const resolve = resolver(() => ['0.0.0.0']);
    const observed: (number | 'error')[] = [];
    const transport = new Transport({
      policy: { allowInsecureHttp: true },
      resolve,
      onRequest: (_host, status) => {
        observed.push(status);
      },
    });
    const err = await rejection(
      transport.request({ purpose: 'token', method: 'GET', url: `http://inward.test:${server.port}/token` }),
    );
    expect(err).toBeInstanceOf(TokenError);
    expect(err).toMatchObject({ code: 'insecure_endpoint' });
    expect(server.requests).toEqual([]);
    expect(observed).toEqual([]);
    await transport.close();
  });

  it('gives up on a look-up that does not answer in time', async () => {
    const transport = new Transport({
      policy: { allowInsecureHttp: true },
      resolve: () => new Promise<string[]>(() => undefined),
      dnsTimeoutMs: 50,
    });
    const err = await rejection(
      transport.request({ purpose: 'token', method: 'GET', url: `http://tarpit.test:${server.port}/token` }),
    );
    expect(err).toMatchObject({ code: 'transient', reason: 'DNSFailure' });
    await transport.close();
  });
});
