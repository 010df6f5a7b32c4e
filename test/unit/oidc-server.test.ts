import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as client from 'openid-client';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_CLIENT,
  startTestOidcServer,
  type TestOidcServer,
  type TestOidcServerOptions,
} from '../harness/oidc/server.ts';

const execFileAsync = promisify(execFile);

// The test server speaks plain HTTP on loopback, which openid-client refuses unless told otherwise.
// eslint-disable-next-line @typescript-eslint/no-deprecated -- deliberate, see above
const execute = [client.allowInsecureRequests];

const servers: TestOidcServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(opts?: TestOidcServerOptions): Promise<TestOidcServer> {
  const server = await startTestOidcServer(opts);
  servers.push(server);
  return server;
}

async function configFor(
  server: TestOidcServer,
  clientId = DEFAULT_CLIENT.clientId,
  secret = DEFAULT_CLIENT.clientSecret,
): Promise<client.Configuration> {
  return client.discovery(new URL(server.issuer), clientId, undefined, client.ClientSecretBasic(secret), {
    execute,
  });
}

/** A raw refresh_token grant with client_secret_basic, as an operator would send it. */
function rawRefresh(server: TestOidcServer, refreshToken: string, signal?: AbortSignal): Promise<Response> {
  const basic = Buffer.from(`${DEFAULT_CLIENT.clientId}:${DEFAULT_CLIENT.clientSecret ?? ''}`).toString(
    'base64',
  );
  return fetch(server.tokenEndpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString(),
    ...(signal ? { signal } : {}),
  });
}

async function refreshFails(
  config: client.Configuration,
  refreshToken: string,
): Promise<client.ResponseBodyError> {
  const err: unknown = await client.refreshTokenGrant(config, refreshToken).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(client.ResponseBodyError);
  return err as client.ResponseBodyError;
}

describe('test OIDC server', () => {
  it('rotates: a seed refreshes into a new refresh token and a 20 s access token the provider accepts', async () => {
    const server = await start();
    expect(server.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.tokenEndpoint).toBe(`${server.issuer}/token`);
    const config = await configFor(server);
    expect(config.serverMetadata().token_endpoint).toBe(server.tokenEndpoint);

    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    expect(server.refreshTokenState(seed)).toBe('current');
    const tokens = await client.refreshTokenGrant(config, seed);

    expect(tokens.refresh_token).toEqual(expect.any(String));
    expect(tokens.refresh_token).not.toBe(seed);
    expect(tokens.expires_in).toBe(20);
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(await server.isAccessTokenActive(tokens.access_token)).toBe(true);
    expect(await server.isAccessTokenActive('not-a-token')).toBe(false);
    expect(server.refreshTokenState(seed)).toBe('consumed');
    expect(server.refreshTokenState(tokens.refresh_token ?? '')).toBe('current');
    const [entry, ...more] = server.refreshLog();
    expect(more).toEqual([]);
    expect(entry).toEqual({ at: entry?.at, presented: 'current', status: 200, revokedFamily: false });
    expect(entry?.at).toBeGreaterThan(Date.now() - 60_000);
    expect(server.reuseCount()).toBe(0);

    // The chain goes on.
    const next = await client.refreshTokenGrant(config, tokens.refresh_token ?? '');
    expect(next.refresh_token).not.toBe(tokens.refresh_token);
    expect(server.serverErrors()).toEqual([]);
  });

  it('honours the configured lifetimes', async () => {
    const server = await start({ accessTokenTtlSec: 5, refreshTokenTtlSec: 1 });
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const tokens = await client.refreshTokenGrant(config, seed);
    expect(tokens.expires_in).toBe(5);

    await new Promise((r) => setTimeout(r, 1100));
    const err = await refreshFails(config, tokens.refresh_token ?? '');
    expect(err.error).toBe('invalid_grant');
    expect(server.refreshLog().at(-1)).toMatchObject({ presented: 'unknown', status: 400 });
  });

  it('without a grace window, reusing a rotated token revokes the whole family', async () => {
    const server = await start();
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const first = await client.refreshTokenGrant(config, seed);
    const successor = first.refresh_token ?? '';

    const reuse = await refreshFails(config, seed);
    expect(reuse.error).toBe('invalid_grant');
    expect(reuse.status).toBe(400);
    expect(server.reuseCount()).toBe(1);

    // The successor and the access token issued with it went with the family.
    expect(server.refreshTokenState(successor)).toBe('unknown');
    expect((await refreshFails(config, successor)).error).toBe('invalid_grant');
    expect(await server.isAccessTokenActive(first.access_token)).toBe(false);

    expect(
      server.refreshLog().map(({ presented, status, error, revokedFamily }) => ({
        presented,
        status,
        error,
        revokedFamily,
      })),
    ).toEqual([
      { presented: 'current', status: 200, error: undefined, revokedFamily: false },
      { presented: 'reused', status: 400, error: 'invalid_grant', revokedFamily: true },
      { presented: 'unknown', status: 400, error: 'invalid_grant', revokedFamily: false },
    ]);
    expect(server.reuseCount()).toBe(1);
  });

  it('of two concurrent presentations of one token, one succeeds and the other revokes the family', async () => {
    const server = await start();
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const statuses = (await Promise.all([rawRefresh(server, seed), rawRefresh(server, seed)])).map(
      (r) => r.status,
    );
    expect(statuses.sort()).toEqual([200, 400]);
    expect(server.reuseCount()).toBe(1);
    expect(server.refreshLog().filter((e) => e.revokedFamily)).toHaveLength(1);
  });

  it('logs refresh requests rejected before the lookup with the token state left untouched', async () => {
    const server = await start();
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const res = await fetch(server.tokenEndpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${DEFAULT_CLIENT.clientId}:wrong`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: seed }).toString(),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: 'invalid_client' });
    expect(server.refreshLog().map(({ presented, status, error }) => ({ presented, status, error }))).toEqual(
      [{ presented: 'current', status: 401, error: 'invalid_client' }],
    );
    expect(server.refreshTokenState(seed)).toBe('current');
  });

  it('within the grace window, the previous token gets a new successor and the earlier successor stays valid', async () => {
    const server = await start({ graceWindowSec: 30 });
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const first = await client.refreshTokenGrant(config, seed);

    const retry = await client.refreshTokenGrant(config, seed);
    expect(retry.refresh_token).toEqual(expect.any(String));
    expect(retry.refresh_token).not.toBe(first.refresh_token);
    expect(retry.refresh_token).not.toBe(seed);
    expect(await server.isAccessTokenActive(retry.access_token)).toBe(true);
    expect(server.reuseCount()).toBe(0);

    // Both successors work.
    await client.refreshTokenGrant(config, first.refresh_token ?? '');
    await client.refreshTokenGrant(config, retry.refresh_token ?? '');
    expect(server.refreshLog().map((e) => e.presented)).toEqual([
      'current',
      'in-grace',
      'current',
      'current',
    ]);
    expect(server.reuseCount()).toBe(0);
  });

  it('after the grace window, reuse revokes the family', async () => {
    const server = await start({ graceWindowSec: 1 });
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const first = await client.refreshTokenGrant(config, seed);
    await client.refreshTokenGrant(config, seed); // in grace
    await new Promise((r) => setTimeout(r, 1100)); // the window is anchored at the first consumption

    expect((await refreshFails(config, seed)).error).toBe('invalid_grant');
    expect(server.reuseCount()).toBe(1);
    expect((await refreshFails(config, first.refresh_token ?? '')).error).toBe('invalid_grant');
  });

  it('without rotation, the same refresh token keeps working', async () => {
    const server = await start({ rotate: false });
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const first = await client.refreshTokenGrant(config, seed);
    expect(first.refresh_token).toBe(seed);
    await client.refreshTokenGrant(config, seed);
    expect(server.reuseCount()).toBe(0);
    expect(server.refreshTokenState(seed)).toBe('current');
  });

  it('revokeAllGrants and revokeFamilyOf break chains on purpose', async () => {
    const server = await start();
    const config = await configFor(server);
    const a = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId, accountId: 'a' });
    const b = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId, accountId: 'b' });
    const c = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId, accountId: 'c' });
    const aTokens = await client.refreshTokenGrant(config, a);

    expect(await server.revokeFamilyOf(aTokens.refresh_token ?? '')).toBe(true);
    expect(await server.isAccessTokenActive(aTokens.access_token)).toBe(false);
    expect((await refreshFails(config, aTokens.refresh_token ?? '')).error).toBe('invalid_grant');
    expect(server.refreshTokenState(b)).toBe('current');

    await server.revokeAllGrants();
    expect((await refreshFails(config, b)).error).toBe('invalid_grant');
    expect((await refreshFails(config, c)).error).toBe('invalid_grant');
    expect(server.reuseCount()).toBe(0);
  });

  it('supports client_secret_post, public clients and client_credentials', async () => {
    const server = await start({
      clients: [
        {
          clientId: 'post',
          clientSecret: 'post-secret',
          authMethod: 'client_secret_post',
          grantTypes: ['refresh_token'],
        },
        { clientId: 'public', authMethod: 'none', grantTypes: ['refresh_token'] },
        {
          clientId: 'machine',
          clientSecret: 'm-secret',
          authMethod: 'client_secret_basic',
          grantTypes: ['client_credentials'],
        },
      ],
    });
    const post = await client.discovery(
      new URL(server.issuer),
      'post',
      undefined,
      client.ClientSecretPost('post-secret'),
      {
        execute,
      },
    );
    const pub = await client.discovery(new URL(server.issuer), 'public', undefined, client.None(), {
      execute,
    });
    const machine = await configFor(server, 'machine', 'm-secret');

    const viaPost = await client.refreshTokenGrant(post, await server.seedRefreshToken({ clientId: 'post' }));
    expect(await server.isAccessTokenActive(viaPost.access_token)).toBe(true);
    const viaPublic = await client.refreshTokenGrant(
      pub,
      await server.seedRefreshToken({ clientId: 'public' }),
    );
    expect(viaPublic.refresh_token).toEqual(expect.any(String));

    const cc = await client.clientCredentialsGrant(machine, { scope: 'api.read' });
    expect(cc.expires_in).toBe(20);
    expect(cc.refresh_token).toBeUndefined();
    expect(await server.isAccessTokenActive(cc.access_token)).toBe(true);
    expect(server.refreshLog()).toHaveLength(2);

    // A token of another client is rejected without consuming it.
    const other = await server.seedRefreshToken({ clientId: 'public' });
    expect((await refreshFails(post, other)).error).toBe('invalid_grant');
    expect(server.refreshTokenState(other)).toBe('current');
  });

  it('is usable from another process', async () => {
    const server = await start();
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    const script = `
      const [endpoint, id, secret, rt] = process.argv.slice(1);
      const res = await fetch(endpoint, {
        method: 'POST',
        headers: { authorization: 'Basic ' + Buffer.from(id + ':' + secret).toString('base64'),
                   'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt }),
      });
      process.stdout.write(JSON.stringify({ status: res.status, body: await res.json() }));
    `;
    const { stdout } = await execFileAsync(process.execPath, [
      '--input-type=module',
      '-e',
      script,
      server.tokenEndpoint,
      DEFAULT_CLIENT.clientId,
      DEFAULT_CLIENT.clientSecret ?? '',
      seed,
    ]);
    const { status, body } = JSON.parse(stdout) as { status: number; body: { access_token: string } };
    expect(status).toBe(200);
    expect(await server.isAccessTokenActive(body.access_token)).toBe(true);
    expect(server.refreshTokenState(seed)).toBe('consumed');
  });
});

describe('token endpoint faults', () => {
  it('a 503 never reaches the provider: the refresh token is not consumed', async () => {
    const server = await start();
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'status', status: 503 }, 2);

    for (let i = 0; i < 2; i++) {
      const res = await rawRefresh(server, seed);
      expect(res.status).toBe(503);
      expect(res.headers.get('content-type')).toMatch(/text\/html/);
      await res.text();
    }
    expect(server.refreshTokenState(seed)).toBe('current');
    expect(server.refreshLog()).toEqual([]);

    const ok = await rawRefresh(server, seed);
    expect(ok.status).toBe(200);
    expect(server.faults.log().map((f) => [f.fault.kind, f.processed, f.path])).toEqual([
      ['status', false, '/token'],
      ['status', false, '/token'],
    ]);
    expect(server.faults.pending()).toBe(0);
  });

  it('a lost response: the provider rotates the token, the client sees a socket error', async () => {
    const server = await start();
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'lostResponse' });

    const err: unknown = await rawRefresh(server, seed).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TypeError); // fetch failed
    expect(String((err as TypeError).cause)).toMatch(/closed|socket|reset/i);
    expect(server.refreshTokenState(seed)).toBe('consumed');
    expect(server.refreshLog()).toEqual([expect.objectContaining({ presented: 'current', status: 200 })]);
    expect(server.faults.log()).toEqual([expect.objectContaining({ processed: true })]);

    // Retrying with the old token is a reuse without a grace window.
    expect((await refreshFails(config, seed)).error).toBe('invalid_grant');
    expect(server.reuseCount()).toBe(1);
  });

  it('a lost response is recoverable within a grace window', async () => {
    const server = await start({ graceWindowSec: 30 });
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'lostResponse' });
    await expect(client.refreshTokenGrant(config, seed)).rejects.toThrow();
    const tokens = await client.refreshTokenGrant(config, seed);
    expect(await server.isAccessTokenActive(tokens.access_token)).toBe(true);
    expect(server.refreshLog().map((e) => e.presented)).toEqual(['current', 'in-grace']);
    expect(server.reuseCount()).toBe(0);
  });

  it('a malformed body is a 200 that does not parse, and the token is not consumed', async () => {
    const server = await start();
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'malformed' }, 2);

    const res = await rawRefresh(server, seed);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const text = await res.text();
    expect(() => JSON.parse(text) as unknown).toThrow(SyntaxError);

    await expect(client.refreshTokenGrant(config, seed)).rejects.toThrow();
    expect(server.refreshTokenState(seed)).toBe('current');
    expect(server.refreshLog()).toEqual([]);
  });

  it('rate limiting answers 429 with Retry-After', async () => {
    const server = await start();
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'rateLimit', retryAfterSec: 7 });

    const res = await rawRefresh(server, seed);
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('7');
    expect(await res.json()).toMatchObject({ error: 'too_many_requests' });
    expect(server.refreshTokenState(seed)).toBe('current');
  });

  it('an injected OAuth error is passed through without consuming the token', async () => {
    const server = await start();
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({
      kind: 'oauthError',
      status: 400,
      body: { error: 'invalid_grant', error_description: 'nope' },
    });

    const err = await refreshFails(config, seed);
    expect(err.error).toBe('invalid_grant');
    expect(err.error_description).toBe('nope');
    expect(server.refreshTokenState(seed)).toBe('current');
    expect(server.reuseCount()).toBe(0);
  });

  it('a delay makes clients time out after the provider has already rotated', async () => {
    const server = await start();
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'delay', ms: 1000 });

    await expect(rawRefresh(server, seed, AbortSignal.timeout(150))).rejects.toThrow(/timeout|abort/i);
    expect(server.refreshTokenState(seed)).toBe('consumed');

    // beforeProcessing: the request reaches the provider only after the delay.
    const seed2 = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'delay', ms: 300, phase: 'beforeProcessing' });
    const started = Date.now();
    const pending = rawRefresh(server, seed2);
    await new Promise((r) => setTimeout(r, 100));
    expect(server.refreshTokenState(seed2)).toBe('current');
    const res = await pending;
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(server.refreshTokenState(seed2)).toBe('consumed');
  });

  it('clear() drops queued faults and other endpoints are never faulted', async () => {
    const server = await start();
    const config = await configFor(server);
    const seed = await server.seedRefreshToken({ clientId: DEFAULT_CLIENT.clientId });
    server.faults.next({ kind: 'status', status: 500 }, 3);

    // Discovery and introspection are untouched by token-endpoint faults.
    await configFor(server);
    expect(await server.isAccessTokenActive('x')).toBe(false);
    expect(server.faults.pending()).toBe(3);

    server.faults.clear();
    expect(server.faults.pending()).toBe(0);
    await client.refreshTokenGrant(config, seed);
    expect(server.faults.log()).toEqual([]);
  });
});
