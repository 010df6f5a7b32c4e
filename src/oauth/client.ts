// OAuthClient: the OAuth layer's one object. It owns the Transport every request goes through, the
// discovery cache and the clock, and offers what the controller needs of a provider: endpoints,
// tokens (OAuth grants, or FOLIO's login and refresh, by the client's protocol), revocation,
// introspection and the headless login.
import type { Clock } from '../kube/clock.ts';
import { DiscoveryCache } from './discovery.ts';
import { resolveEndpoints } from './endpoints.ts';
import { configurationError } from './exchange.ts';
import { logoutFolioRefreshToken, requestFolioTokens } from './folio.ts';
import { requestTokens } from './grants.ts';
import { introspectToken, type IntrospectionVerdict } from './introspection.ts';
import { performLogin, type LoginParams, type LoginResult } from './login.ts';
import { probeToken, type ProbeResult } from './probe.ts';
import type { ClientConfig, EndpointSettings, ResolvedEndpoints, TokenGrant, TokenSet } from './model.ts';
import { revokeToken } from './revocation.ts';
import { Transport, type TransportOptions } from './transport.ts';

export interface OAuthClientOptions {
  clock: Clock;
  /** The transport, or the options to build one. */
  transport: Transport | TransportOptions;
  /** How long a discovery document is reused. Default 1 h. */
  discoveryTtlMs?: number;
}

export class OAuthClient {
  readonly transport: Transport;
  private readonly clock: Clock;
  private readonly discovery: DiscoveryCache;

  constructor(options: OAuthClientOptions) {
    this.clock = options.clock;
    this.transport =
      options.transport instanceof Transport ? options.transport : new Transport(options.transport);
    this.discovery = new DiscoveryCache(this.transport, this.clock, options.discoveryTtlMs);
  }

  /**
   * The endpoints of a client, the token endpoint already checked against the endpoint policy's URL
   * rules, so a refused URL fails before any state is written or request sent. `signal` ends the
   * wait for a discovery document (the request itself is shared by every caller and bounded by the
   * Transport's timeout).
   */
  resolveEndpoints(settings: EndpointSettings, signal?: AbortSignal): Promise<ResolvedEndpoints> {
    return resolveEndpoints(this.transport, this.discovery, settings, signal);
  }

  /**
   * One token request in the client's protocol (an OAuth grant, or FOLIO's login and refresh for
   * the password and refresh_token grants); every failure is a classified TokenError.
   */
  requestTokens(
    client: ClientConfig,
    endpoints: ResolvedEndpoints,
    grant: TokenGrant,
    signal?: AbortSignal,
  ): Promise<TokenSet> {
    if (client.protocol?.kind === 'folio') {
      return requestFolioTokens(this.transport, client, endpoints, grant, this.clock.now(), signal);
    }
    return requestTokens(this.transport, client, endpoints, grant, this.clock.now(), signal);
  }

  /**
   * Revokes a token: RFC 7009, or for FOLIO the logout of its refresh token at mod-login (never at a
   * revocation URL from the spec, which would get the refresh token in an RFC 7009 form). Throws
   * TokenError.
   */
  async revoke(
    client: ClientConfig,
    endpoints: ResolvedEndpoints,
    token: string,
    tokenTypeHint: 'refresh_token' | 'access_token' = 'refresh_token',
    signal?: AbortSignal,
  ): Promise<void> {
    if (client.protocol?.kind === 'folio') {
      // FOLIO's access tokens are self-contained and cannot be revoked; only a refresh token can.
      if (tokenTypeHint !== 'refresh_token') {
        throw configurationError(
          'RevocationNotSupported',
          'FOLIO cannot revoke an access token; it stays valid until it expires',
        );
      }
      return logoutFolioRefreshToken(this.transport, client, endpoints, token, this.clock.now(), signal);
    }
    return revokeToken(this.transport, client, endpoints, token, tokenTypeHint, this.clock.now(), signal);
  }

  /** RFC 7662: whether the provider still accepts a token; 'unknown' when it cannot say. */
  introspect(
    client: ClientConfig,
    endpoints: ResolvedEndpoints,
    token: string,
    signal?: AbortSignal,
  ): Promise<IntrospectionVerdict> {
    // FOLIO has no introspection, and asking would mean sending its refresh token somewhere.
    if (client.protocol?.kind === 'folio') return Promise.resolve('unknown');
    return introspectToken(this.transport, client, endpoints, token, 'refresh_token', signal);
  }

  /**
   * The token liveness probe: GET `url` with the access token. 'rejected' only on 401; throws
   * TokenError when the endpoint policy refuses the URL or its addresses.
   */
  probe(url: string, accessToken: string, signal?: AbortSignal): Promise<ProbeResult> {
    return probeToken(this.transport, url, accessToken, this.clock.now(), signal);
  }

  /** The headless login walk (code or implicit flow). */
  login(params: LoginParams): Promise<LoginResult> {
    return performLogin(this.transport, params);
  }

  /** Forgets cached discovery documents (a configuration change, tests). */
  clearDiscoveryCache(): void {
    this.discovery.clear();
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}
