// The controller's view of the OAuth layer: one object that carries the operator-wide endpoint
// policy, time and size caps, and the metrics hook, so the reconciler only says what it wants.
import type { OAuthConnection } from '../api/v1alpha1.ts';
import type { Clock } from '../kube/clock.ts';
import { checkEndpoint, type EndpointPolicy } from '../oauth/endpoint-policy.ts';
import {
  introspectToken,
  requestTokens,
  resolveEndpoints,
  revokeToken,
  type HttpOptions,
  type ResolvedEndpoints,
  type TokenGrant,
  type TokenSet,
} from '../oauth/token-client.ts';
import type { PresetDefaults } from '../providers/presets.ts';
import type { ResolvedInputs } from './inputs.ts';

export type { ResolvedEndpoints, TokenSet };

export interface TokenServiceOptions {
  policy: EndpointPolicy;
  clock: Clock;
  http?: HttpOptions;
}

export class TokenService {
  private readonly options: TokenServiceOptions;

  constructor(options: TokenServiceOptions) {
    this.options = options;
  }

  /**
   * The connection's endpoints, with the token endpoint already checked against the operator's
   * endpoint policy, so a refused URL fails before any state is written or request is sent.
   */
  async resolveEndpoints(
    connection: OAuthConnection,
    preset: PresetDefaults,
    geolocation?: string,
  ): Promise<ResolvedEndpoints> {
    const endpoints = await resolveEndpoints(connection.spec.provider, preset, this.options.policy, {
      ...this.options.http,
      nowMs: this.options.clock.now(),
      ...(geolocation !== undefined ? { geolocation } : {}),
    });
    await checkEndpoint(endpoints.tokenEndpoint, this.options.policy, this.options.http?.resolve);
    return endpoints;
  }

  /** What every call to the provider carries: the client, its authentication, the policy and caps. */
  private client(connection: OAuthConnection, inputs: ResolvedInputs, endpoints: ResolvedEndpoints) {
    const { spec } = connection;
    return {
      ...this.options.http,
      endpoints,
      clientID: spec.clientID,
      ...(inputs.clientSecret !== undefined ? { clientSecret: inputs.clientSecret } : {}),
      authMethod: spec.clientAuthMethod ?? inputs.preset.clientAuthMethod,
      preset: inputs.preset.preset,
      policy: this.options.policy,
      nowMs: this.options.clock.now(),
    };
  }

  request(params: {
    connection: OAuthConnection;
    inputs: ResolvedInputs;
    endpoints: ResolvedEndpoints;
    grant: TokenGrant;
  }): Promise<TokenSet> {
    const { spec } = params.connection;
    return requestTokens({
      ...this.client(params.connection, params.inputs, params.endpoints),
      grant: params.grant,
      ...(spec.scopes ? { scopes: spec.scopes } : {}),
      ...(spec.extraParameters ? { extraParameters: spec.extraParameters } : {}),
    });
  }

  async revoke(params: {
    connection: OAuthConnection;
    inputs: ResolvedInputs;
    endpoints: ResolvedEndpoints;
    refreshToken: string;
  }): Promise<boolean> {
    const result = await revokeToken({
      ...this.client(params.connection, params.inputs, params.endpoints),
      token: params.refreshToken,
      tokenTypeHint: 'refresh_token',
    });
    if (result.error) throw result.error;
    return result.revoked;
  }

  /** Whether the provider still accepts a refresh token; 'unknown' when it cannot say. */
  introspect(params: {
    connection: OAuthConnection;
    inputs: ResolvedInputs;
    endpoints: ResolvedEndpoints;
    refreshToken: string;
  }): Promise<'active' | 'inactive' | 'unknown'> {
    return introspectToken({
      ...this.client(params.connection, params.inputs, params.endpoints),
      token: params.refreshToken,
    });
  }
}
