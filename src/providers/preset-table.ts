// The shape of a provider preset: data only. One table per provider lives in presets/; what the
// provider's token endpoint really does, and the public sources, are in docs/providers.md.
import type { GrantType, LoginFlow } from '../api/v1alpha1.ts';
import type { ClientAuthMethod, ErrorDialect, FormProfile, TotpParameters } from '../oauth/index.ts';

export interface RegionEndpoints {
  tokenURL: string;
  authorizationURL?: string;
  revocationURL?: string;
}

export interface PresetTable {
  /** 'folio' speaks its own login protocol (cookie-borne tokens), not OAuth 2.0. */
  protocol: 'oauth2' | 'folio';
  /** Endpoints by region; the first region is the default. Absent: the endpoints come from the spec. */
  regions?: Readonly<Record<string, RegionEndpoints>>;
  /** Default when spec.clientAuthMethod is unset. */
  clientAuthMethod: ClientAuthMethod;
  /** spec.grant.type values the provider offers. */
  grantTypes: readonly GrantType[];
  /** spec.recovery.login.flow values the provider offers. */
  recoveryFlows: readonly LoginFlow[];
  /** Provider floor between two token requests; default for spec.refresh.minInterval. */
  minIntervalMs: number;
  /** Refresh at least this often so an unused refresh token never expires; default for spec.refresh.keepAlive. */
  keepAliveMs?: number;
  /** How long the previous refresh token stays usable after a rotation; default for spec.refresh.graceWindow. */
  graceWindowMs: number;
  /**
   * A presented refresh token stays usable until its successor (or an access token issued with it)
   * is first used (Exact Online). A successor lost with its answer is never used, so after a lost
   * answer the same token can be presented again once the provider's floor (minIntervalMs) allows.
   */
  reusableUntilSuccessorUsed?: boolean;
  /** Access-token lifetime when the provider omits expires_in; default for spec.refresh.assumedLifetime. */
  accessTokenLifetimeMs?: number;
  /** Added to every password grant (overridable through spec.extraParameters). */
  passwordGrantParameters?: Readonly<Record<string, string>>;
  /** Name of the one-time-code parameter of a direct (password) grant. */
  otpParameter?: string;
  errorDialect?: ErrorDialect;
  /** The token endpoint's path at a geolocation the provider returns (Concur). */
  geolocationTokenPath?: string;
  /** The token endpoint's path under spec.provider.baseURL (FOLIO: the refresh, /authn/refresh). */
  baseURLTokenPath?: string;
  /**
   * The password grant's answer carries a refresh token that later requests rotate (FOLIO): the
   * password starts a chain, and starts a new one when the chain breaks, instead of being sent on
   * every refresh.
   */
  passwordStartsChain?: boolean;
  /**
   * Defaults of spec.probe: a well-known endpoint that answers 401 to a rejected access token (a
   * path on the token endpoint's origin, or OIDC userinfo from discovery) and an interval that
   * fits the provider's API budget.
   */
  probe?: { path?: string; userinfo?: boolean; intervalMs: number };
  /** The provider's login pages, for the code and implicit recovery flows. */
  loginForm?: FormProfile;
  totp?: TotpParameters;
}
