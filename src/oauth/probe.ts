// The token liveness probe: an authenticated GET of an endpoint on the provider's API with the
// current access token, through the one Transport (endpoint policy, time and size caps, no
// redirects). Only a 401 says the token is rejected (RFC 6750 §3.1 invalid_token); anything else,
// including 403 (a token without the scope) and every failure below HTTP, says nothing about the
// chain and is reported as inconclusive, so that a flaky API never triggers a refresh.
//
// Every probe is an API call the connection's consumers could have made, counted against the same
// budget (Exact Online: 60 a minute and 5,000 a day per company and app). The probe therefore reads
// the rate-limit headers of each answer and stands back: after a 429 until the limit resets, and
// when the day's remaining calls fall to a tenth of the limit, until the daily reset, leaving the
// rest to the consumers.
import { retryAfterFrom } from './classify.ts';
import { headersToRecord } from './exchange.ts';
import { TransportFailure, type Transport } from './transport.ts';

export type ProbeVerdict = 'accepted' | 'rejected' | 'inconclusive';

export interface ProbeResult {
  verdict: ProbeVerdict;
  /** The HTTP status, when an answer came. */
  status?: number;
  /** The API's rate limit asks the probe to wait this long before its next call. */
  standBackMs?: number;
}

/** The share of a daily API budget the probe never spends: it is the consumers'. */
export const PROBE_BUDGET_RESERVE = 0.1;

/** The longest pause an API may ask of the probe: a day, the longest budget window Exact has. */
export const MAX_STAND_BACK_MS = 86_400_000;

/** How long the probe should stand back after an answer with these headers (at most a day), or undefined. */
export function probeStandBack(status: number, headers: Headers, nowMs: number): number | undefined {
  const asked = askedPause(status, headers, nowMs);
  return asked !== undefined ? Math.min(asked, MAX_STAND_BACK_MS) : undefined;
}

function askedPause(status: number, headers: Headers, nowMs: number): number | undefined {
  const lower = headersToRecord(headers);
  if (status === 429) return retryAfterFrom(lower, nowMs);
  if (lower['x-ratelimit-minutely-remaining']?.trim() === '0') {
    return retryAfterFrom(
      { 'x-ratelimit-minutely-remaining': '0', ...pick(lower, 'x-ratelimit-minutely-reset') },
      nowMs,
    );
  }
  const remaining = Number(lower['x-ratelimit-remaining']);
  const limit = Number(lower['x-ratelimit-limit']);
  if (
    Number.isFinite(remaining) &&
    Number.isFinite(limit) &&
    limit > 0 &&
    remaining <= limit * PROBE_BUDGET_RESERVE
  ) {
    return retryAfterFrom(pick(lower, 'x-ratelimit-reset'), nowMs);
  }
  return undefined;
}

function pick(headers: Record<string, string>, name: string): Record<string, string> {
  const value = headers[name];
  return value !== undefined ? { [name]: value } : {};
}

export async function probeToken(
  transport: Transport,
  url: string,
  accessToken: string,
  nowMs: number,
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
    const standBackMs = probeStandBack(answer.status, answer.headers, nowMs);
    const verdict: ProbeVerdict =
      answer.status === 401
        ? 'rejected'
        : answer.status >= 200 && answer.status < 300
          ? 'accepted'
          : 'inconclusive';
    return { verdict, status: answer.status, ...(standBackMs !== undefined ? { standBackMs } : {}) };
  } catch (err) {
    // A refused URL (endpoint policy) is the spec's fault, not the provider's: the caller reports it.
    if (!(err instanceof TransportFailure)) throw err;
    return err.status !== undefined
      ? { verdict: 'inconclusive', status: err.status }
      : { verdict: 'inconclusive' };
  }
}
