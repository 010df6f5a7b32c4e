// The realm that test/harness/keycloak.ts imports into a real Keycloak: one confidential client for the
// operator and one user whose logins need a password and a TOTP code. Everything a test needs to log in
// is a known constant here, including the TOTP seed.

/** The realm's name unless a test asks for another. */
export const DEFAULT_REALM = 'ops';

export const TEST_USERNAME = 'alice';
export const TEST_PASSWORD = 'alice-Passw0rd!';
export const TEST_CLIENT_ID = 'operator';
export const TEST_CLIENT_SECRET = 'operator-client-secret-0123456789';
/** Registered exactly; a login driver stops at it and never fetches it. */
export const TEST_REDIRECT_URI = 'http://127.0.0.1/callback';

/**
 * The seed Keycloak stores for the user's OTP credential. Keycloak keeps it as `secretData.value` and, with
 * no `secretEncoding` in `credentialData`, uses its UTF-8 bytes as the HMAC key (OTPCredentialModel
 * .getDecodedSecret). Its 20 ASCII characters are what Keycloak itself would generate on enrolment.
 */
export const TEST_TOTP_RAW_SECRET = 'OtoKeycloakTotpKey20';

/** RFC 4648 base32 without padding, as authenticator apps and otplib take a secret. */
export function base32Encode(bytes: Uint8Array): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet.charAt((buffer >>> (bits - 5)) & 31);
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += alphabet.charAt((buffer << (5 - bits)) & 31);
  return out;
}

/** The base32 form of the seed: what Keycloak's QR code would hand an authenticator app. */
export const TEST_TOTP_SECRET = base32Encode(new TextEncoder().encode(TEST_TOTP_RAW_SECRET));

export interface RealmOptions {
  realm?: string;
  /** Access token lifespan in seconds (default 60). */
  accessTokenLifespan?: number;
  /** Top-level realm fields merged over the defaults (e.g. `ssoSessionIdleTimeout`). */
  overrides?: Record<string, unknown>;
}

/** A realm representation for Keycloak's realm import (the JSON `kc.sh export` writes). */
export function buildRealm(options: RealmOptions = {}): Record<string, unknown> {
  const realm = options.realm ?? DEFAULT_REALM;
  return {
    realm,
    enabled: true,
    sslRequired: 'external',
    accessTokenLifespan: options.accessTokenLifespan ?? 60,
    // Each refresh token may be used once: reusing an old one fails and ends the chain.
    revokeRefreshToken: true,
    refreshTokenMaxReuse: 0,
    bruteForceProtected: false,
    loginWithEmailAllowed: false,
    registrationAllowed: false,
    resetPasswordAllowed: false,
    rememberMe: false,
    // Keycloak's defaults, spelled out because the tests compute codes against them.
    otpPolicyType: 'totp',
    otpPolicyAlgorithm: 'HmacSHA1',
    otpPolicyDigits: 6,
    otpPolicyPeriod: 30,
    otpPolicyLookAheadWindow: 1,
    otpPolicyInitialCounter: 0,
    otpPolicyCodeReusable: false,
    clients: [
      {
        clientId: TEST_CLIENT_ID,
        name: 'oauth-token-operator',
        enabled: true,
        protocol: 'openid-connect',
        publicClient: false,
        clientAuthenticatorType: 'client-secret',
        secret: TEST_CLIENT_SECRET,
        standardFlowEnabled: true,
        implicitFlowEnabled: true,
        directAccessGrantsEnabled: true,
        serviceAccountsEnabled: false,
        redirectUris: [TEST_REDIRECT_URI],
        webOrigins: ['+'],
        // No 'pkce.code.challenge.method' attribute: PKCE (S256 or plain) is accepted but not required.
        attributes: {},
      },
    ],
    users: [
      realmUser({ username: TEST_USERNAME, password: TEST_PASSWORD, totpRawSecret: TEST_TOTP_RAW_SECRET }),
    ],
    ...options.overrides,
  };
}

export interface RealmUserOptions {
  username: string;
  password: string;
  /** The OTP seed Keycloak stores (see TEST_TOTP_RAW_SECRET); without one the password alone logs in. */
  totpRawSecret?: string;
  /**
   * Realm roles. A user from a realm import gets no default roles, and offline tokens need the
   * `offline_access` role ("Offline tokens not allowed for the user or client" without it).
   */
  realmRoles?: string[];
}

/** A user representation for a realm import (`users` of buildRealm's result, or its overrides). */
export function realmUser(options: RealmUserOptions): Record<string, unknown> {
  const credentials: Record<string, unknown>[] = [
    { type: 'password', value: options.password, temporary: false },
  ];
  if (options.totpRawSecret !== undefined) {
    credentials.push({
      type: 'otp',
      userLabel: 'test authenticator',
      secretData: JSON.stringify({ value: options.totpRawSecret }),
      credentialData: JSON.stringify({
        subType: 'totp',
        digits: 6,
        counter: 0,
        period: 30,
        algorithm: 'HmacSHA1',
      }),
    });
  }
  return {
    username: options.username,
    enabled: true,
    email: `${options.username}@example.test`,
    emailVerified: true,
    firstName: 'Alice',
    lastName: 'Operator',
    requiredActions: [],
    ...(options.realmRoles !== undefined ? { realmRoles: options.realmRoles } : {}),
    credentials,
  };
}

// Realm administration through Keycloak's Admin REST API
// (https://www.keycloak.org/docs-api/latest/rest-api/index.html), for tests that give each case a realm
// of its own (its own lifetimes and session limits) on one running server.

/** What the admin helpers need of a running server (test/harness/keycloak.ts's KeycloakServer). */
export interface KeycloakAdminTarget {
  baseURL: string;
  adminToken(): Promise<string>;
}

/** Calls `${baseURL}/admin/realms${path}`; throws unless the status is 2xx. Returns the parsed body. */
export async function adminRequest<T = unknown>(
  server: KeycloakAdminTarget,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  path: string,
  body?: unknown,
): Promise<T> {
  const response = await fetch(`${server.baseURL}/admin/realms${path}`, {
    method,
    headers: {
      authorization: `Bearer ${await server.adminToken()}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`Keycloak admin ${method} ${path}: HTTP ${response.status} ${text}`);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

/** Imports a realm (buildRealm's result) into a running server; returns its issuer. */
export async function createRealm(
  server: KeycloakAdminTarget,
  realm: Record<string, unknown>,
): Promise<string> {
  await adminRequest(server, 'POST', '', realm);
  return `${server.baseURL}/realms/${String(realm.realm)}`;
}

/** Changes realm settings (e.g. `offlineSessionIdleTimeout`); fields not named keep their value. */
export async function updateRealm(
  server: KeycloakAdminTarget,
  realm: string,
  fields: Record<string, unknown>,
): Promise<void> {
  const current = await adminRequest<Record<string, unknown>>(server, 'GET', `/${realm}`);
  await adminRequest(server, 'PUT', `/${realm}`, { ...current, ...fields });
}

/** The id of a user of the realm, by exact username. */
export async function userId(server: KeycloakAdminTarget, realm: string, username: string): Promise<string> {
  const users = await adminRequest<{ id: string }[]>(
    server,
    'GET',
    `/${realm}/users?username=${encodeURIComponent(username)}&exact=true`,
  );
  const id = users[0]?.id;
  if (id === undefined) throw new Error(`no user ${username} in realm ${realm}`);
  return id;
}

/** Realm settings that make Keycloak store the events of token requests and logins. */
export const TOKEN_EVENTS = {
  eventsEnabled: true,
  enabledEventTypes: [
    'LOGIN',
    'LOGIN_ERROR',
    'CODE_TO_TOKEN',
    'CODE_TO_TOKEN_ERROR',
    'REFRESH_TOKEN',
    'REFRESH_TOKEN_ERROR',
  ],
} as const;

/** A stored Keycloak event (GET /admin/realms/{realm}/events). */
export interface KeycloakEvent {
  time: number;
  type: string;
  sessionId?: string;
  error?: string;
  details?: Record<string, string>;
}

/** Every stored event of the realm, oldest first (the realm needs TOKEN_EVENTS). */
export async function realmEvents(server: KeycloakAdminTarget, realm: string): Promise<KeycloakEvent[]> {
  const events = await adminRequest<KeycloakEvent[]>(server, 'GET', `/${realm}/events?first=0&max=10000`);
  return events.sort((a, b) => a.time - b.time);
}
