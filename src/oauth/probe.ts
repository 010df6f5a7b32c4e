// The token liveness probe: an authenticated GET of an endpoint on the provider's API with the
// current access token, through the one Transport (endpoint policy, time and size caps, no
// redirects). Only a 401 says the token is rejected (RFC 6750 §3.1 invalid_token); anything else,
// including 403 (a token without the scope) and every failure below HTTP, says nothing about the
// chain and is reported as inconclusive, so that a flaky API never triggers a refresh.
import { TransportFailure, type Transport } from './transport.ts';

export type ProbeVerdict = 'accepted' | 'rejected' | 'inconclusive';

export interface ProbeResult {
  verdict: ProbeVerdict;
  /** The HTTP status, when an answer came. */
  status?: number;
}

export async function probeToken(
  transport: Transport,
  url: string,
  accessToken: string,
  signal?: AbortSignal,
): Promise<ProbeResult> {
  try {
    const answer = await transport.request({
      purpose: 'probe',
      method: 'GET',
      url,
      headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
      ...(signal !== undefined ? { signal } : {}),
    });
    if (answer.status === 401) return { verdict: 'rejected', status: answer.status };
    if (answer.status >= 200 && answer.status < 300) return { verdict: 'accepted', status: answer.status };
    return { verdict: 'inconclusive', status: answer.status };
  } catch (err) {
    // A refused URL (endpoint policy) is the spec's fault, not the provider's: the caller reports it.
    if (!(err instanceof TransportFailure)) throw err;
    return err.status !== undefined
      ? { verdict: 'inconclusive', status: err.status }
      : { verdict: 'inconclusive' };
  }
}
