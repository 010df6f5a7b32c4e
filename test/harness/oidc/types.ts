// What tests see of the test OpenID provider (server.ts): its options, its clients and users, and the
// server handle with its inspection methods.
import type { FaultController } from '../fault-proxy.ts';

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

export const DEFAULT_CLIENT: Readonly<TestOidcClient> = Object.freeze({
  clientId: 'operator',
  clientSecret: 'operator-secret',
  authMethod: 'client_secret_basic',
  grantTypes: ['refresh_token', 'client_credentials'] as GrantType[],
});

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

/** What tests learn from the provider beyond its HTTP answers, and how they break chains on purpose. */
export interface TestOidcInspection {
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
}

export interface TestOidcServer extends TestOidcInspection {
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
  faults: FaultController;
}
