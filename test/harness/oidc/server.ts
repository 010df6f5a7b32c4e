// A real OAuth 2.0 / OpenID Connect authorization server for tests: oidc-provider on plain HTTP on
// loopback, with rotating refresh tokens, reuse detection that revokes the whole token family
// (RFC 9700 §4.14.2: https://www.rfc-editor.org/rfc/rfc9700#section-4.14.2), an optional grace
// window for retries after a lost response (Okta's 30 s, Cognito's RetryGracePeriodSeconds), fault
// injection in front of the token endpoint (fault-proxy.ts) and, with `login`, an interactive browser
// login with a TOTP step.
//
// This file composes the parts, each in its own file of this folder:
//   provider.ts     the slice of oidc-provider's API used here, and the patch that enables
//                   response_type=token (OAuth 2.0 implicit)
//   storage.ts      the in-memory adapter: grace window and atomic consumption of refresh tokens
//   interaction.ts  the login and TOTP pages behind the authorization endpoint
//   inspection.ts   the refresh log and the other methods only the test process can call
//   types.ts        the options and the server handle tests see
//
// Everything a client needs goes over HTTP on 127.0.0.1, so operators running as child processes can
// use it; only the inspection methods (refreshLog, reuseCount, ...) need the test process.
import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FaultController, type KoaLikeContext } from '../fault-proxy.ts';
import { inspection, refreshLogMiddleware } from './inspection.ts';
import { LoginInteraction } from './interaction.ts';
import { allowPlainTokenResponseType, loadOidcProvider, type ProviderClient } from './provider.ts';
import { HarnessAdapter, Store, type RotationContext } from './storage.ts';
import {
  DEFAULT_CLIENT,
  DEFAULT_REDIRECT_URI,
  type RefreshLogEntry,
  type TestOidcClient,
  type TestOidcServer,
  type TestOidcServerOptions,
} from './types.ts';

export * from './types.ts';

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
  provider.use(refreshLogMiddleware(rotation, isTokenRequest, refreshLog));
  const login = opts.login && new LoginInteraction(provider, errors, opts.login, serverErrors);
  if (login) provider.use(login.middleware());

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
    ...inspection({
      rotation,
      refreshLog,
      serverErrors,
      login,
      introspection: { endpoint: introspectionEndpoint, ...introspector },
    }),

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
  };
}
