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
      {
        username: TEST_USERNAME,
        enabled: true,
        email: `${TEST_USERNAME}@example.test`,
        emailVerified: true,
        firstName: 'Alice',
        lastName: 'Operator',
        requiredActions: [],
        credentials: [
          { type: 'password', value: TEST_PASSWORD, temporary: false },
          {
            type: 'otp',
            userLabel: 'test authenticator',
            secretData: JSON.stringify({ value: TEST_TOTP_RAW_SECRET }),
            credentialData: JSON.stringify({
              subType: 'totp',
              digits: 6,
              counter: 0,
              period: 30,
              algorithm: 'HmacSHA1',
            }),
          },
        ],
      },
    ],
    ...options.overrides,
  };
}
