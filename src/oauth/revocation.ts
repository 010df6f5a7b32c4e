// RFC 7009 revocation of a refresh token, used when a connection is deleted with revokeOnDelete.
import { tokenRevocation } from 'openid-client';
import { configurationError, endpointCall, failureFrom } from './exchange.ts';
import { secretsOf } from './grants.ts';
import type { ClientConfig, ResolvedEndpoints } from './model.ts';
import type { Transport } from './transport.ts';

/**
 * Revokes a token. Throws TokenError: 'configuration' NoRevocationEndpoint when the provider has no
 * revocation endpoint, else the classified failure. A lost answer is only transient: revocation
 * consumes nothing the operator still needs.
 */
export async function revokeToken(
  transport: Transport,
  client: ClientConfig,
  endpoints: ResolvedEndpoints,
  token: string,
  tokenTypeHint: 'refresh_token' | 'access_token',
  nowMs: number,
  signal?: AbortSignal,
): Promise<void> {
  if (token === '') throw configurationError('MissingCredential', 'token to revoke is empty');
  const { config, exchange } = endpointCall(transport, client, endpoints, 'revocation_endpoint', {
    ...(signal !== undefined ? { signal } : {}),
  });
  try {
    await tokenRevocation(config, token, { token_type_hint: tokenTypeHint });
  } catch (err) {
    throw failureFrom(err, exchange, {
      grant: 'client_credentials',
      errorDialect: client.errorDialect,
      redact: secretsOf(client, undefined, token),
      nowMs,
    });
  }
}
