// A real Keycloak, started by the harness, behaves as the operator's recovery path expects: password + TOTP
// logins (direct grant and the browser pages), one-time refresh tokens and one-time TOTP codes.
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureKeycloakDistribution, startKeycloak, type KeycloakServer } from '../harness/keycloak.ts';

interface TokenResponse {
  status: number;
  body: {
    access_token?: string;
    refresh_token?: string;
    token_type?: string;
    expires_in?: number;
    error?: string;
    error_description?: string;
  };
}

describe('Keycloak (real server)', () => {
  let kc: KeycloakServer;
  let running: KeycloakServer | undefined;
  let tokenEndpoint: string;
  let authorizationEndpoint: string;

  // Only a cold cache pays here (download about 35 s, first build and master realm 70-230 s by load).
  beforeAll(async () => {
    await ensureKeycloakDistribution();
  }, 900_000);

  beforeAll(async () => {
    kc = await startKeycloak();
    running = kc;
    const discovery = (await (await fetch(`${kc.issuer}/.well-known/openid-configuration`)).json()) as {
      issuer: string;
      token_endpoint: string;
      authorization_endpoint: string;
      code_challenge_methods_supported?: string[];
    };
    expect(discovery.issuer).toBe(kc.issuer);
    expect(discovery.code_challenge_methods_supported).toContain('S256');
    tokenEndpoint = discovery.token_endpoint;
    authorizationEndpoint = discovery.authorization_endpoint;
    console.log(`Keycloak ${kc.version} at ${kc.baseURL}, issuer ${kc.issuer}`);
  }, 300_000);

  afterAll(async () => {
    await running?.close();
  });

  async function token(params: Record<string, string>): Promise<TokenResponse> {
    const response = await fetch(tokenEndpoint, {
      method: 'POST',
      body: new URLSearchParams({ client_id: kc.clientId, client_secret: kc.clientSecret, ...params }),
    });
    return { status: response.status, body: (await response.json()) as TokenResponse['body'] };
  }

  /** The TOTP code of the current 30 s step (offset 1 is the next step, which Keycloak also accepts). */
  function totp(offset = 0): Promise<string> {
    return generate({ secret: kc.totpSecret, epoch: Math.floor(Date.now() / 1000) + offset * 30 });
  }

  function passwordGrant(otp?: string): Promise<TokenResponse> {
    return token({
      grant_type: 'password',
      username: kc.username,
      password: kc.password,
      scope: 'openid',
      ...(otp === undefined ? {} : { otp }),
    });
  }

  let firstRefreshToken: string;

  it('issues tokens for password + TOTP, and refuses the same TOTP code a second time', async () => {
    const code = await totp();
    const first = await passwordGrant(code);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.token_type).toBe('Bearer');
    // exp - now, rounded down by Keycloak: 59 or 60.
    expect(first.body.expires_in).toBeGreaterThanOrEqual(55);
    expect(first.body.expires_in).toBeLessThanOrEqual(60);
    expect(first.body.refresh_token).toBeTruthy();
    firstRefreshToken = first.body.refresh_token ?? '';

    // Still inside the code's validity window: only its earlier use can make it fail.
    const again = await passwordGrant(code);
    console.log(`reused TOTP code: ${again.status} ${JSON.stringify(again.body)}`);
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
  });

  it('refuses a password without a TOTP code, and a wrong code', async () => {
    const missing = await passwordGrant();
    console.log(`password without otp: ${missing.status} ${JSON.stringify(missing.body)}`);
    expect(missing.status).toBe(400);
    expect(missing.body).toMatchObject({
      error: 'invalid_grant',
      error_description: 'Invalid user credentials',
    });

    const current = await totp();
    const wrong = String((Number(current) + 1) % 1_000_000).padStart(6, '0');
    const bad = await passwordGrant(wrong);
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: 'invalid_grant', error_description: 'Invalid user credentials' });
  });

  it('rotates the refresh token and refuses the old one (Revoke Refresh Token, max reuse 0)', async () => {
    const refreshed = await token({ grant_type: 'refresh_token', refresh_token: firstRefreshToken });
    expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
    const second = refreshed.body.refresh_token ?? '';
    expect(second).toBeTruthy();
    expect(second).not.toBe(firstRefreshToken);

    const stale = await token({ grant_type: 'refresh_token', refresh_token: firstRefreshToken });
    console.log(`reused refresh token: ${stale.status} ${JSON.stringify(stale.body)}`);
    expect(stale.status).toBe(400);
    expect(stale.body.error).toBe('invalid_grant');
    // Keycloak says "Maximum allowed refresh token reuse exceeded" (what 26.7 answered here), or "Stale
    // token" when the replayed token was issued before the client session's last refresh timestamp.
    expect(['Maximum allowed refresh token reuse exceeded', 'Stale token']).toContain(
      stale.body.error_description,
    );

    // The replay ends the chain: Keycloak drops the client session, so the newest token is refused too
    // and only a new login recovers.
    const next = await token({ grant_type: 'refresh_token', refresh_token: second });
    console.log(`newest refresh token after the replay: ${next.status} ${JSON.stringify(next.body)}`);
    expect(next.status).toBe(400);
    expect(next.body.error).toBe('invalid_grant');
  });

  it('serves the browser login: username/password form, then the OTP form, then a code for the redirect URI', async () => {
    const cookies = new Map<string, string>();
    const remember = (response: Response): void => {
      for (const line of response.headers.getSetCookie()) {
        const pair = line.split(';')[0] ?? '';
        const eq = pair.indexOf('=');
        if (eq > 0) cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
      }
    };
    const cookieHeader = (): string => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const formAction = (html: string, id: string): string => {
      const tag = new RegExp(`<form[^>]*\\bid="${id}"[^>]*>`).exec(html)?.[0];
      expect(tag, `form#${id}`).toBeTruthy();
      const action = /\baction="([^"]*)"/.exec(tag ?? '')?.[1] ?? '';
      return action.replaceAll('&amp;', '&');
    };
    const inputNames = (html: string): string[] =>
      [...html.matchAll(/<input\b[^>]*\bname="([^"]+)"/g)].map((m) => m[1] ?? '');

    const verifier =
      'k'.repeat(20) + Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url');
    const challenge = Buffer.from(
      await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)),
    ).toString('base64url');
    const state = 'state-123';
    const authorize = new URL(authorizationEndpoint);
    authorize.search = new URLSearchParams({
      response_type: 'code',
      client_id: kc.clientId,
      redirect_uri: kc.redirectURI,
      scope: 'openid',
      state,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }).toString();
    const loginPage = await fetch(authorize, { redirect: 'manual' });
    expect(loginPage.status).toBe(200);
    remember(loginPage);
    const loginHTML = await loginPage.text();
    const loginAction = formAction(loginHTML, 'kc-form-login');
    expect(loginAction.startsWith(`${kc.issuer}/login-actions/authenticate?`)).toBe(true);
    expect(inputNames(loginHTML)).toEqual(expect.arrayContaining(['username', 'password']));
    console.log(`login form action: ${loginAction}; inputs ${inputNames(loginHTML).join(', ')}`);

    const afterPassword = await fetch(loginAction, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: cookieHeader() },
      body: new URLSearchParams({ username: kc.username, password: kc.password, credentialId: '' }),
    });
    expect(afterPassword.status).toBe(200);
    remember(afterPassword);
    const otpHTML = await afterPassword.text();
    const otpAction = formAction(otpHTML, 'kc-otp-login-form');
    expect(inputNames(otpHTML)).toEqual(expect.arrayContaining(['otp', 'selectedCredentialId']));
    console.log(`otp form action: ${otpAction}; inputs ${inputNames(otpHTML).join(', ')}`);
    const credentialId = /name="selectedCredentialId" value="([^"]*)"/.exec(otpHTML)?.[1] ?? '';

    // The next step's code: the direct-grant test already used the current one.
    const afterOtp = await fetch(otpAction, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: cookieHeader() },
      body: new URLSearchParams({ otp: await totp(1), selectedCredentialId: credentialId, login: 'Sign In' }),
    });
    expect(afterOtp.status).toBe(302);
    const location = new URL(afterOtp.headers.get('location') ?? '');
    expect(`${location.origin}${location.pathname}`).toBe(kc.redirectURI);
    expect(location.searchParams.get('state')).toBe(state);
    expect(location.searchParams.get('iss')).toBe(kc.issuer);
    const code = location.searchParams.get('code') ?? '';
    expect(code).toBeTruthy();

    const exchanged = await token({
      grant_type: 'authorization_code',
      code,
      redirect_uri: kc.redirectURI,
      code_verifier: verifier,
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    expect(exchanged.body.refresh_token).toBeTruthy();
  });
});
