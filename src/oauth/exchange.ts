// openid-client v6 (https://github.com/panva/openid-client) builds the requests, authenticates the
// client and validates the answers; this file gives it the Transport as its fetch and records what
// actually happened on the wire (an Exchange), so that every failure is classified from the status,
// headers and body the provider sent, never from a library's error message.
//
// Library errors hold the parsed response body (tokens included) in their cause chain; nothing here
// attaches one to a TokenError.
import {
  allowInsecureRequests,
  ClientSecretBasic,
  ClientSecretPost,
  Configuration,
  customFetch,
  None,
  type ClientAuth,
  type CustomFetch,
  type ServerMetadata,
} from 'openid-client';
import { tokenErrorFor, type NetworkFailure, type TokenFailureInput } from './classify.ts';
import { TokenError } from './errors.ts';
import type { ClientConfig, ResolvedEndpoints, TokenGrantType } from './model.ts';
import { TransportFailure, type RequestPurpose, type Transport } from './transport.ts';

/** What happened on the wire during one library call. In memory only; never in an error. */
export interface Exchange {
  status?: number;
  headers?: Record<string, string>;
  /** Parsed JSON when the body was JSON, else the raw text. */
  body?: unknown;
  network?: NetworkFailure;
  /** The host the failed request went to. */
  host?: string;
  tooLarge?: boolean;
  refused?: TokenError;
}

/** Rewrites a 2xx JSON body before openid-client validates it (token responses); may record extras. */
export type SuccessBodyRewrite = (body: Record<string, unknown>) => Record<string, unknown>;

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/** Response headers as a plain record with lower-case names, as the classifiers read them. */
export function headersToRecord(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name.toLowerCase()] = value;
  });
  return out;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function bodyText(body: unknown): string | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof URLSearchParams) return body.toString();
  throw new TokenError({
    code: 'configuration',
    reason: 'InvalidRequest',
    message: 'token request body of an unsupported kind',
  });
}

function networkFailureOf(failure: TransportFailure): NetworkFailure {
  switch (failure.kind) {
    case 'connection':
    case 'timeout':
    case 'reset':
    case 'lost-response':
      return failure.kind;
    default:
      // Aborted by the caller: the request may have been sent.
      return 'reset';
  }
}

/** openid-client's fetch: one Transport request per call, recorded in `exchange`. */
export function recordingFetch(
  transport: Transport,
  purpose: RequestPurpose,
  exchange: Exchange,
  rewriteSuccess?: SuccessBodyRewrite,
  signal?: AbortSignal,
): CustomFetch {
  return async (url, init) => {
    const signals = [init.signal, signal].filter((s): s is AbortSignal => s !== undefined);
    let answer;
    try {
      answer = await transport.request({
        purpose,
        method: init.method === 'POST' ? 'POST' : 'GET',
        url,
        headers: init.headers,
        ...(init.body !== undefined && init.body !== null ? { body: bodyText(init.body) ?? '' } : {}),
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
      });
    } catch (err) {
      if (err instanceof TokenError) {
        exchange.refused = err;
      } else if (err instanceof TransportFailure) {
        if (err.status !== undefined) exchange.status = err.status;
        if (err.headers !== undefined) exchange.headers = headersToRecord(err.headers);
        if (err.kind === 'too-large') exchange.tooLarge = true;
        else {
          exchange.network = networkFailureOf(err);
          exchange.host = new URL(url).host;
        }
      }
      throw err;
    }
    exchange.status = answer.status;
    exchange.headers = headersToRecord(answer.headers);
    const text = new TextDecoder().decode(answer.body);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text) as unknown;
    } catch {
      parsed = undefined;
    }
    exchange.body = parsed !== undefined ? parsed : text;
    const success = answer.status >= 200 && answer.status < 300;
    if (rewriteSuccess !== undefined && success && isObject(parsed)) {
      return new Response(JSON.stringify(rewriteSuccess(parsed)), {
        status: answer.status,
        headers: { 'content-type': 'application/json' },
      });
    }
    const headers = new Headers(answer.headers);
    for (const name of ['content-length', 'content-encoding', 'transfer-encoding']) headers.delete(name);
    return new Response(NULL_BODY_STATUSES.has(answer.status) ? null : text, {
      status: answer.status,
      headers,
    });
  };
}

export function configurationError(reason: string, message: string): TokenError {
  return new TokenError({ code: 'configuration', reason, message });
}

function clientAuth(client: ClientConfig): ClientAuth {
  if (client.authMethod === 'none') return None();
  if (client.clientSecret === undefined || client.clientSecret === '') {
    throw configurationError(
      'MissingClientSecret',
      `client authentication ${client.authMethod} needs a client secret`,
    );
  }
  return client.authMethod === 'client_secret_basic'
    ? ClientSecretBasic(client.clientSecret)
    : ClientSecretPost(client.clientSecret);
}

export type EndpointKey = 'token_endpoint' | 'revocation_endpoint' | 'introspection_endpoint';

/** openid-client's timeout: a backstop only, as the Transport enforces its own cap. */
export function libraryTimeoutSec(transport: Transport): number {
  return Math.ceil(transport.timeoutMs / 1000) + 1;
}

/** One library call to one of the provider's endpoints: its Configuration and the Exchange it records. */
export interface EndpointCall {
  config: Configuration;
  exchange: Exchange;
}

const ENDPOINTS: Record<
  EndpointKey,
  { field: keyof ResolvedEndpoints; purpose: RequestPurpose; missing: string; what: string }
> = {
  token_endpoint: {
    field: 'tokenEndpoint',
    purpose: 'token',
    missing: 'MissingTokenEndpoint',
    what: 'token endpoint',
  },
  revocation_endpoint: {
    field: 'revocationEndpoint',
    purpose: 'revocation',
    missing: 'NoRevocationEndpoint',
    what: 'revocation endpoint',
  },
  introspection_endpoint: {
    field: 'introspectionEndpoint',
    purpose: 'introspection',
    missing: 'NoIntrospectionEndpoint',
    what: 'introspection endpoint',
  },
};

/**
 * An openid-client Configuration for a call to one of the provider's endpoints, whose requests go
 * through the Transport and are recorded in the returned Exchange.
 */
export function endpointCall(
  transport: Transport,
  client: ClientConfig,
  endpoints: ResolvedEndpoints,
  key: EndpointKey,
  options: { rewriteSuccess?: SuccessBodyRewrite; signal?: AbortSignal } = {},
): EndpointCall {
  const { field, purpose, missing, what } = ENDPOINTS[key];
  const endpoint = endpoints[field];
  if (endpoint === undefined || endpoint === '') {
    throw configurationError(missing, `provider has no ${what} configured`);
  }
  const exchange: Exchange = {};
  const fetchFn = recordingFetch(transport, purpose, exchange, options.rewriteSuccess, options.signal);
  if (client.clientID === '') throw configurationError('MissingClientID', 'clientID is empty');
  const server: ServerMetadata = {
    issuer: endpoints.issuer ?? new URL(endpoint).origin,
    // openid-client needs a token endpoint in the metadata even when another endpoint is called.
    token_endpoint: endpoints.tokenEndpoint,
    [key]: endpoint,
  };
  const config = new Configuration(server, client.clientID, undefined, clientAuth(client));
  config[customFetch] = fetchFn;
  config.timeout = libraryTimeoutSec(transport);
  allowTransportToJudgeScheme(config);
  return { config, exchange };
}

/**
 * The Transport applies the endpoint policy, the https rule included, to every request and reports
 * a refusal as the TokenError 'insecure_endpoint'. openid-client's own http check would only repeat
 * that rule, before the Transport is reached, and report it as a library error; so it is switched
 * off here and the policy is applied in one place.
 */
export function allowTransportToJudgeScheme(config: Configuration): void {
  // Deprecated only to stand out: the scheme rule is the Transport's (see above).
  // eslint-disable-next-line @typescript-eslint/no-deprecated
  allowInsecureRequests(config);
}

/** A library error's code (ERR_INVALID_ARG_VALUE, OAUTH_…), never its message. */
export function safeLibraryCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code) ? code : 'unknown';
}

function findTokenError(err: unknown): TokenError | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (current instanceof TokenError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export interface FailureContext {
  grant: TokenGrantType;
  errorDialect: ClientConfig['errorDialect'];
  /** Values that must never reach a message even if the provider echoes them. */
  redact: readonly string[];
  nowMs: number;
}

/** The TokenError for a failed library call, judged from the exchange. */
export function failureFrom(err: unknown, exchange: Exchange, context: FailureContext): TokenError {
  const refused = exchange.refused ?? findTokenError(err);
  if (refused !== undefined) return refused;
  const base: TokenFailureInput = {
    grant: context.grant,
    redact: context.redact,
    nowMs: context.nowMs,
    ...(context.errorDialect !== undefined ? { errorDialect: context.errorDialect } : {}),
    ...(exchange.status !== undefined ? { httpStatus: exchange.status } : {}),
    headers: exchange.headers ?? {},
  };
  if (exchange.tooLarge === true) return tokenErrorFor({ ...base, bodyTooLarge: true });
  if (exchange.network !== undefined) {
    return tokenErrorFor({
      ...base,
      networkError: exchange.network,
      ...(exchange.host !== undefined ? { host: exchange.host } : {}),
    });
  }
  if (exchange.status !== undefined) return tokenErrorFor({ ...base, body: exchange.body });
  return configurationError('InvalidRequest', `token request could not be built (${safeLibraryCode(err)})`);
}
