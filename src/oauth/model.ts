// The data the OAuth layer takes and gives. It knows nothing of Kubernetes resources or provider
// presets: the providers layer turns a connection's spec into a ClientConfig and EndpointSettings.

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'none';

/** How a provider spells errors beyond RFC 6749 §5.2, where that changes their meaning. */
export type ErrorDialect = 'rfc6749' | 'concur';

/**
 * The wire protocol of a client's token requests. 'oauth2' (the default): RFC 6749 token requests.
 * 'folio': FOLIO's own login and refresh (folio.ts), which carry the tokens in cookies and send the
 * tenant in the X-Okapi-Tenant header; the client ID and secret are not sent.
 */
export type TokenProtocol = { kind: 'oauth2' } | { kind: 'folio'; tenant: string };

/** One OAuth client at one provider: who it is and how its requests are shaped. */
export interface ClientConfig {
  /** Default { kind: 'oauth2' }. */
  protocol?: TokenProtocol;
  clientID: string;
  clientSecret?: string;
  authMethod: ClientAuthMethod;
  scopes?: readonly string[];
  /** Extra form parameters; ones the operator sets itself (grant_type, client_id, scope …) are dropped. */
  extraParameters?: Readonly<Record<string, string>>;
  /** Added to every password grant, below extraParameters (Concur: credtype=password). */
  passwordGrantParameters?: Readonly<Record<string, string>>;
  /** Name of the one-time-code parameter of a password grant. Default 'otp' (Keycloak). */
  otpParameter?: string;
  /** Default 'rfc6749'. 'concur' also reads the numeric `code` field of error bodies. */
  errorDialect?: ErrorDialect;
}

/**
 * Where a client's endpoints come from, in order of precedence: the explicit URLs, then the ones
 * OIDC discovery at issuerURL announces, then the defaults (a preset's regional URLs).
 */
export interface EndpointSettings {
  issuerURL?: string;
  tokenURL?: string;
  authorizationURL?: string;
  revocationURL?: string;
  defaults?: { tokenURL?: string; authorizationURL?: string; revocationURL?: string };
}

export interface ResolvedEndpoints {
  tokenEndpoint: string;
  authorizationEndpoint?: string;
  revocationEndpoint?: string;
  /** RFC 7662; used to settle whether an in-doubt refresh token was consumed. */
  introspectionEndpoint?: string;
  /** OIDC userinfo, from discovery. */
  userinfoEndpoint?: string;
  issuer?: string;
}

export type TokenGrant =
  | { type: 'refresh_token'; refreshToken: string }
  | { type: 'client_credentials' }
  | { type: 'password'; username: string; password: string; otp?: string }
  | { type: 'authorization_code'; code: string; codeVerifier: string; redirectURI: string };

export type TokenGrantType = TokenGrant['type'];

export interface TokenSet {
  accessToken: string;
  /** 'Bearer' or 'DPoP' in canonical case, else as sent. */
  tokenType: string;
  /** Undefined when the provider omitted expires_in: the caller applies its assumed lifetime. */
  expiresInSec?: number;
  /** Undefined when the response carried no (new) refresh token: keep the current one. */
  refreshToken?: string;
  /** Seconds from now; Concur's epoch-seconds value is converted, Keycloak's 0 (no limit) omitted. */
  refreshExpiresInSec?: number;
  /** Passed through UNVALIDATED: the operator does not consume identity claims. */
  idToken?: string;
  scope?: string;
  /** Concur: the origin of the user's data center; later calls go there. */
  geolocation?: string;
}

/** Providers answer "bearer" or "Bearer"; HTTP clients expect the canonical spelling (RFC 6750, RFC 9449). */
export function canonicalTokenType(value: string): string {
  const lower = value.toLowerCase();
  if (lower === 'bearer') return 'Bearer';
  if (lower === 'dpop') return 'DPoP';
  return value;
}
