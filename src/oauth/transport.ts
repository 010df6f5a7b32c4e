// The one way out: every HTTP request the operator makes to a provider (token, discovery,
// revocation, introspection, each page of a login walk, and protocols that are not OAuth) goes
// through a Transport, which
// - checks the URL against the endpoint policy before anything is sent (scheme, allow-list,
//   address literals, internal names; endpoint-policy.ts);
// - resolves the host name itself, with a time limit, checks every address it got, and connects
//   only to those addresses: the name is resolved once, inside the connection's own look-up, so the
//   address that was checked is the address connected to (a DNS server that answers differently
//   to a second question, "DNS rebinding", is never asked one);
// - caps the total time of a request (connect, headers and body) and the size of the body read;
// - never follows a redirect: a 3xx comes back as it is, and a caller that walks redirects (the
//   login) sends each hop as a new, newly checked request;
// - reports every request to one observer (metrics).
//
// Connections are pooled by undici (https://undici.nodejs.org) per origin; a pooled connection was
// checked when it was opened, and the policy does not change while the process runs.
import { Agent, request as undiciRequest, type Dispatcher } from 'undici';
import type { LookupAddress } from 'node:dns';
import { checkAddresses, checkURL, type EndpointPolicy } from './endpoint-policy.ts';
import { systemResolve, type HostResolver } from './resolve.ts';
import { TokenError } from './errors.ts';

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;
export const DEFAULT_DNS_TIMEOUT_MS = 5_000;

/** What a request is for; the observer gets it so metrics can tell token calls from login pages. */
export type RequestPurpose =
  'token' | 'discovery' | 'revocation' | 'introspection' | 'login' | 'protocol' | 'probe';

/** Called once per request: host (with port), status or 'error', duration, purpose. */
export type RequestObserver = (
  host: string,
  status: number | 'error',
  durationMs: number,
  purpose: RequestPurpose,
) => void;

export interface TransportOptions {
  policy: EndpointPolicy;
  /** DNS resolution; the default asks the system resolver. */
  resolve?: HostResolver;
  /** Time limit of one DNS look-up. Default 5000. */
  dnsTimeoutMs?: number;
  /** Total time cap of one request. Default 30000. */
  timeoutMs?: number;
  /** Largest body read. Default 1 MiB. */
  maxResponseBytes?: number;
  onRequest?: RequestObserver;
}

export interface TransportRequest {
  purpose: RequestPurpose;
  method: 'GET' | 'POST';
  url: string;
  headers?: Readonly<Record<string, string>>;
  body?: string;
  signal?: AbortSignal;
}

export interface TransportResponse {
  /** The URL that answered (parsed; no redirect was followed). */
  url: URL;
  status: number;
  /** Header names in lower case; Set-Cookie keeps every value. */
  headers: Headers;
  body: Uint8Array;
}

/**
 * How a request failed below HTTP.
 * - connection: nothing was sent (refused, DNS, TLS handshake, connect timeout).
 * - timeout: the time cap expired once the request may have been sent.
 * - reset: the connection broke after it was established; the request may have been sent.
 * - lost-response: the response started but could not be read to the end.
 * - too-large: the body exceeded the size cap and was abandoned.
 * - aborted: the caller's signal fired.
 */
export type TransportFailureKind =
  'connection' | 'timeout' | 'reset' | 'lost-response' | 'too-large' | 'aborted';

/** A request that got no usable answer. Carries no text from the provider. */
export class TransportFailure extends Error {
  override readonly name = 'TransportFailure';
  readonly kind: TransportFailureKind;
  readonly host: string;
  /** The status line, when it arrived before the failure (lost-response, too-large). */
  readonly status: number | undefined;
  readonly headers: Headers | undefined;

  constructor(kind: TransportFailureKind, host: string, status?: number, headers?: Headers) {
    super(`request to host ${host} failed (${kind})`);
    this.kind = kind;
    this.host = host;
    this.status = status;
    this.headers = headers;
  }
}

const CONNECT_PHASE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_FAIL',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function errorCodeOf(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const record = current as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof record.code === 'string') return record.code;
    if (Array.isArray(record.errors) && record.errors.length > 0) {
      current = record.errors[0] as unknown;
      continue;
    }
    current = record.cause;
  }
  return undefined;
}

/** Whether the request may have left: only failures of the connect phase prove it did not. */
function failureKindOf(err: unknown, timedOut: boolean): TransportFailureKind {
  const code = errorCodeOf(err);
  if (code !== undefined) {
    if (CONNECT_PHASE_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_')) {
      return 'connection';
    }
  }
  // The cap fires after undici's own 10 s connect timeout would have, so a timeout here almost
  // always means the request was sent and the answer is late.
  return timedOut ? 'timeout' : 'reset';
}

/** A policy refusal raised inside the connection's look-up, carried out to the caller unchanged. */
export class LookupRefusal extends Error {
  readonly refusal: TokenError;
  constructor(refusal: TokenError) {
    super(refusal.message);
    this.refusal = refusal;
  }
}

function findRefusal(err: unknown): TokenError | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    if (current instanceof LookupRefusal) return current.refusal;
    if (current instanceof TokenError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function withTimeout<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(onTimeout());
    }, ms);
  });
  return Promise.race([work, limit]).finally(() => {
    clearTimeout(timer);
  });
}

type LookupCallback = (err: Error | null, address: string | LookupAddress[], family?: number) => void;

export class Transport {
  private readonly policy: EndpointPolicy;
  private readonly resolve: HostResolver;
  private readonly dnsTimeoutMs: number;
  /** Total time cap of one request. */
  readonly timeoutMs: number;
  private readonly maxBytes: number;
  private readonly observer: RequestObserver | undefined;
  private readonly dispatcher: Dispatcher;

  constructor(options: TransportOptions) {
    this.policy = options.policy;
    this.resolve = options.resolve ?? systemResolve;
    this.dnsTimeoutMs = options.dnsTimeoutMs ?? DEFAULT_DNS_TIMEOUT_MS;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.observer = options.onRequest;
    this.dispatcher = new Agent({
      connect: {
        lookup: (hostname: string, lookupOptions: { all?: boolean }, callback: LookupCallback) => {
          this.lookup(hostname).then(
            (addresses) => {
              const entries = addresses.map((address) => ({
                address,
                family: address.includes(':') ? 6 : 4,
              }));
              if (lookupOptions.all === true) callback(null, entries);
              else callback(null, entries[0]?.address ?? '', entries[0]?.family);
            },
            (err: unknown) => {
              callback(err instanceof Error ? err : new Error('look-up failed'), []);
            },
          );
        },
      },
    });
  }

  /**
   * The URL-level part of the endpoint policy (no DNS): what a request to this URL would be refused
   * for before it is sent. Throws TokenError 'insecure_endpoint'.
   */
  check(url: string): URL {
    return checkURL(url, this.policy).url;
  }

  /**
   * What a new connection to `hostname` resolves and checks: the only resolution made for it. Throws
   * LookupRefusal (carrying the TokenError) when the name does not resolve in time or an address is
   * refused.
   */
  async lookup(hostname: string): Promise<string[]> {
    let addresses: string[];
    try {
      addresses = await withTimeout(
        this.resolve(hostname),
        this.dnsTimeoutMs,
        () => new Error('dns timeout'),
      );
    } catch {
      throw new LookupRefusal(
        new TokenError({
          code: 'transient',
          reason: 'DNSFailure',
          message: `could not resolve host ${hostname}`,
        }),
      );
    }
    if (addresses.length === 0) {
      throw new LookupRefusal(
        new TokenError({
          code: 'transient',
          reason: 'DNSFailure',
          message: `host ${hostname} has no addresses`,
        }),
      );
    }
    try {
      checkAddresses(hostname, addresses, this.policy);
    } catch (err) {
      if (err instanceof TokenError) throw new LookupRefusal(err);
      throw err;
    }
    return addresses;
  }

  /**
   * Sends one request. Resolves with the answer (any status, redirects included, body read under the
   * cap). Throws TokenError 'insecure_endpoint' (nothing sent) or 'transient' DNSFailure (nothing
   * sent) for a refused or unresolvable host, TransportFailure for everything else.
   */
  async request(req: TransportRequest): Promise<TransportResponse> {
    req.signal?.throwIfAborted();
    const url = checkURL(req.url, this.policy).url;
    const host = url.host;
    const cap = { controller: new AbortController(), fired: false };
    const timer = setTimeout(() => {
      cap.fired = true;
      cap.controller.abort(new DOMException('request time cap reached', 'TimeoutError'));
    }, this.timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, cap.controller.signal]) : cap.controller.signal;
    const started = performance.now();
    const observe = (status: number | 'error'): void => {
      try {
        this.observer?.(host, status, performance.now() - started, req.purpose);
      } catch {
        // A metrics callback must not change the outcome of a request.
      }
    };
    try {
      let answer: Dispatcher.ResponseData;
      try {
        answer = await undiciRequest(url, {
          dispatcher: this.dispatcher,
          method: req.method,
          headers: { ...req.headers },
          ...(req.body !== undefined ? { body: req.body } : {}),
          signal,
        });
      } catch (err) {
        const refusal = findRefusal(err);
        if (refusal !== undefined) throw refusal;
        observe('error');
        if (req.signal?.aborted === true) throw new TransportFailure('aborted', host);
        throw new TransportFailure(failureKindOf(err, cap.fired), host);
      }
      const headers = toHeaders(answer.headers);
      let body: Uint8Array;
      try {
        body = await readCapped(answer, this.maxBytes);
      } catch (err) {
        if (err instanceof BodyTooLarge) {
          observe(answer.statusCode);
          throw new TransportFailure('too-large', host, answer.statusCode, headers);
        }
        observe('error');
        if (req.signal?.aborted === true)
          throw new TransportFailure('aborted', host, answer.statusCode, headers);
        throw new TransportFailure(cap.fired ? 'timeout' : 'lost-response', host, answer.statusCode, headers);
      }
      observe(answer.statusCode);
      return { url, status: answer.statusCode, headers, body };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes pooled connections (process shutdown, tests). */
  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

class BodyTooLarge extends Error {}

async function readCapped(answer: Dispatcher.ResponseData, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(answer.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await answer.body.dump().catch(() => undefined);
    throw new BodyTooLarge();
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of answer.body as AsyncIterable<Buffer>) {
    total += chunk.byteLength;
    if (total > maxBytes) {
      answer.body.destroy();
      throw new BodyTooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function toHeaders(raw: Dispatcher.ResponseData['headers']): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) headers.append(name, one);
  }
  return headers;
}
