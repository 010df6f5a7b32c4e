// The HTTP side of the headless login: one request at a time, each URL checked against the
// endpoint policy before anything is sent, cookies kept in a per-login jar (tough-cookie), no
// automatic redirects, a time cap per request and a size cap on every body read.
import { CookieJar } from 'tough-cookie';
import { checkEndpoint, type EndpointPolicy, type HostResolver } from './endpoint-policy.ts';
import { loginError } from './login-errors.ts';
import type { FetchLike, RequestObserver } from './token-client.ts';

export interface LoginHttpOptions {
  policy: EndpointPolicy;
  resolve?: HostResolver;
  fetch: FetchLike;
  timeoutMs: number;
  maxBytes: number;
  signal?: AbortSignal;
  onRequest?: RequestObserver;
}

export interface LoginRequest {
  method: 'GET' | 'POST';
  url: string;
  /** application/x-www-form-urlencoded body for POST. */
  form?: string;
  /** The page the request comes from (Origin/Referer, sent to that page's origin only). */
  from?: URL;
}

export interface LoginAnswer {
  url: URL;
  status: number;
  /** Resolved against the request URL; present on 3xx with a Location header. */
  location?: string;
  /** Lower-case media type without parameters, '' when absent. */
  mediaType: string;
  charset?: string;
  /** Read only for HTML answers below 500. */
  body?: Buffer;
  retryAfterMs?: number;
}

class TooLarge extends Error {}

const HTML_TYPES = new Set(['text/html', 'application/xhtml+xml']);

export function isHtml(mediaType: string): boolean {
  return HTML_TYPES.has(mediaType);
}

async function readCapped(response: Response, maxBytes: number): Promise<Buffer> {
  const declared = response.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new TooLarge();
  }
  if (response.body === null) return Buffer.alloc(0);
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new TooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

function retryAfterOf(value: string | null): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d{1,7}$/.test(trimmed)) return Number(trimmed) * 1000;
  return undefined;
}

export class LoginHttp {
  private readonly jar = new CookieJar();
  private readonly options: LoginHttpOptions;

  constructor(options: LoginHttpOptions) {
    this.options = options;
  }

  async request(req: LoginRequest): Promise<LoginAnswer> {
    const options = this.options;
    options.signal?.throwIfAborted();
    const checked = await checkEndpoint(req.url, options.policy, options.resolve);
    const url = checked.url;
    const host = checked.hostname;

    const headers: Record<string, string> = {
      accept: 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.5',
      'accept-language': 'en',
      'user-agent': 'oauth-token-operator (recovery login)',
    };
    const cookie = await this.jar.getCookieString(url.href).catch(() => '');
    if (cookie !== '') headers.cookie = cookie;
    if (req.method === 'POST') headers['content-type'] = 'application/x-www-form-urlencoded';
    if (req.from !== undefined && req.from.origin === url.origin) {
      if (req.method === 'POST') headers.origin = req.from.origin;
      headers.referer = req.from.href;
    }

    const controller = new AbortController();
    const cap = { fired: false };
    const timer = setTimeout(() => {
      cap.fired = true;
      controller.abort(new DOMException('login request time cap reached', 'TimeoutError'));
    }, options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    const started = performance.now();
    const observe = (status: number | 'error'): void => {
      try {
        options.onRequest?.(url.host, status, performance.now() - started);
      } catch {
        // A metrics callback must not change the outcome of a login.
      }
    };
    try {
      let response: Response;
      try {
        response = await options.fetch(url.href, {
          method: req.method,
          headers,
          ...(req.method === 'POST' ? { body: req.form ?? '' } : {}),
          redirect: 'manual',
          signal,
        });
      } catch {
        observe('error');
        options.signal?.throwIfAborted();
        throw loginError(
          'ProviderError',
          cap.fired
            ? `login page at host ${host} did not answer in time`
            : `could not reach the login page at host ${host}`,
          'transient',
        );
      }
      observe(response.status);
      for (const setCookie of response.headers.getSetCookie()) {
        await this.jar.setCookie(setCookie, url.href, { ignoreError: true }).catch(() => undefined);
      }
      const contentType = response.headers.get('content-type') ?? '';
      const [type = '', ...parameters] = contentType.split(';');
      const charset = parameters
        .map((p) => /^\s*charset\s*=\s*"?([^";\s]+)"?\s*$/i.exec(p)?.[1])
        .find((c) => c !== undefined);
      const answer: LoginAnswer = {
        url,
        status: response.status,
        mediaType: type.trim().toLowerCase(),
        ...(charset !== undefined ? { charset } : {}),
      };
      const retryAfterMs = retryAfterOf(response.headers.get('retry-after'));
      if (retryAfterMs !== undefined) answer.retryAfterMs = retryAfterMs;
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location !== null) {
        try {
          answer.location = new URL(location, url).href;
        } catch {
          // Left undefined: the caller reports a redirect without a usable Location.
        }
      }
      if (answer.location === undefined && response.status < 500 && isHtml(answer.mediaType)) {
        try {
          answer.body = await readCapped(response, options.maxBytes);
        } catch (err) {
          options.signal?.throwIfAborted();
          if (err instanceof TooLarge) {
            throw loginError('LoginFormUnexpected', `a page at host ${host} exceeded the size limit`);
          }
          throw loginError(
            'ProviderError',
            cap.fired
              ? `login page at host ${host} did not answer in time`
              : `the answer of host ${host} broke off`,
            'transient',
          );
        }
      } else {
        await response.body?.cancel().catch(() => undefined);
      }
      return answer;
    } finally {
      clearTimeout(timer);
    }
  }
}
