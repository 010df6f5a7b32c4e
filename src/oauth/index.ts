// The OAuth layer's whole public surface. Nothing outside src/oauth imports another file of it.
//
// - OAuthClient (client.ts): the one object. Built with a clock and a Transport (or its options),
//   it resolves a client's endpoints (explicit, OIDC discovery with a per-client cache, defaults),
//   requests tokens (refresh token, client credentials, password with a one-time code, authorization
//   code with PKCE; or FOLIO's cookie-borne login and refresh, folio.ts), revokes (RFC 7009),
//   introspects (RFC 7662), probes an API endpoint with the access token (probe.ts) and walks a provider's HTML login headlessly (code or implicit flow, a
//   TOTP page included).
// - Transport (transport.ts): every outbound request of the operator, OAuth or not. It enforces the
//   endpoint policy (endpoint-policy.ts) once per request and pins each connection to the addresses
//   it checked; it caps time and size, never follows a redirect, and reports to one observer.
// - ClientConfig, EndpointSettings, TokenGrant, TokenSet (model.ts): the data it takes and gives.
//   It knows no Kubernetes resource and no provider preset: src/providers builds these.
// - TokenError (errors.ts): the only error that leaves the layer. `code` is a stable class
//   (TokenErrorCode) that says what to do; `reason` a stable CamelCase word; `message` is safe for
//   status, Events and logs (an OAuth error code and a sanitised description at most, never a
//   token, secret, password, TOTP code or response body). Classification of a provider's answer is
//   the pure classifyTokenFailure (classify.ts).
// - TOTP (totp.ts): parsing an authenticator secret and a generator that never hands out a code
//   twice. Login form profiles (login-form.ts) say which form and fields a provider's pages use.
export { OAuthClient, type OAuthClientOptions } from './client.ts';
export type { ProbeResult, ProbeVerdict } from './probe.ts';
export {
  Transport,
  TransportFailure,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_MAX_RESPONSE_BYTES,
  type RequestObserver,
  type RequestPurpose,
  type TransportOptions,
  type TransportRequest,
  type TransportResponse,
} from './transport.ts';
export { type EndpointPolicy } from './endpoint-policy.ts';
export { MAX_TOKEN_BYTES } from './grants.ts';
export { type HostResolver, systemResolve } from './resolve.ts';
export {
  canonicalTokenType,
  type ClientAuthMethod,
  type ClientConfig,
  type EndpointSettings,
  type ErrorDialect,
  type ResolvedEndpoints,
  type TokenGrant,
  type TokenGrantType,
  type TokenProtocol,
  type TokenSet,
} from './model.ts';
export type { IntrospectionVerdict } from './introspection.ts';
export {
  TokenError,
  TOKEN_ERROR_CODES,
  isTokenError,
  sanitizeDescription,
  type TokenErrorCode,
  type TokenFailure,
} from './errors.ts';
export { classifyTokenFailure, normaliseGeolocation, type TokenFailureInput } from './classify.ts';
export { isLoginFailure, LOGIN_FAILURE_REASONS, type LoginFailureReason } from './login-errors.ts';
export type { CodeLoginResult, ImplicitLoginResult, LoginParams, LoginResult } from './login.ts';
export type { FormProfile } from './login-form.ts';
export {
  parseTotpSecret,
  RFC6238_DEFAULTS,
  TotpGenerator,
  type TotpAlgorithm,
  type TotpParameters,
  type TotpSecret,
} from './totp.ts';
