// RFC 7662 introspection, to settle whether a refresh token whose refresh answer was lost is still
// usable (the provider rotated it only if the lost request reached it).
import { tokenIntrospection } from 'openid-client';
import { endpointCall } from './exchange.ts';
import type { ClientConfig, ResolvedEndpoints } from './model.ts';
import type { Transport } from './transport.ts';

export type IntrospectionVerdict = 'active' | 'inactive' | 'unknown';

/**
 * Never throws: 'unknown' when the provider has no introspection endpoint or does not answer
 * clearly, so the caller falls back to assuming the worst.
 */
export async function introspectToken(
  transport: Transport,
  client: ClientConfig,
  endpoints: ResolvedEndpoints,
  token: string,
  tokenTypeHint: 'refresh_token' | 'access_token' = 'refresh_token',
  signal?: AbortSignal,
): Promise<IntrospectionVerdict> {
  if (token === '') return 'unknown';
  try {
    const { config } = endpointCall(transport, client, endpoints, 'introspection_endpoint', {
      ...(signal !== undefined ? { signal } : {}),
    });
    const result = await tokenIntrospection(config, token, { token_type_hint: tokenTypeHint });
    return result.active ? 'active' : 'inactive';
  } catch {
    return 'unknown';
  }
}
