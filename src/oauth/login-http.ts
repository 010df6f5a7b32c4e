// The HTTP side of the headless login: one request at a time through the Transport (so every hop is
// checked against the endpoint policy, pinned to its checked address, and capped in time and size),
// cookies kept in a jar for this login only (tough-cookie), redirects returned to the walk rather
// than followed.
import { CookieJar } from 'tough-cookie';
import { loginError } from './login-errors.ts';
import { TransportFailure, type Transport } from './transport.ts';

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
  /** Kept only for HTML answers below 500 that are not redirects. */
  body?: Buffer;
  retryAfterMs?: number;
}

const HTML_TYPES = new Set(['text/html', 'application/xhtml+xml']);

export function isHtml(mediaType: string): boolean {
  return HTML_TYPES.has(mediaType);
}

function retryAfterOf(value: string | null): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d{1,7}$/.test(trimmed)) return Number(trimmed) * 1000;
  return undefined;
}

function mediaTypeOf(contentType: string): { mediaType: string; charset?: string } {
  const [type = '', ...parameters] = contentType.split(';');
  const charset = parameters
    .map((p) => /^\s*charset\s*=\s*"?([^";\s]+)"?\s*$/i.exec(p)?.[1])
    .find((c) => c !== undefined);
  return { mediaType: type.trim().toLowerCase(), ...(charset !== undefined ? { charset } : {}) };
}

function transportError(err: TransportFailure): Error {
  if (err.kind === 'too-large') {
    return loginError('LoginFormUnexpected', `a page at host ${err.host} exceeded the size limit`);
  }
  const message =
    err.kind === 'timeout'
      ? `login page at host ${err.host} did not answer in time`
      : err.kind === 'connection'
        ? `could not reach the login page at host ${err.host}`
        : `the answer of host ${err.host} broke off`;
  return loginError('ProviderError', message, 'transient');
}

export class LoginHttp {
  private readonly jar = new CookieJar();
  private readonly transport: Transport;
  private readonly signal: AbortSignal | undefined;

  constructor(transport: Transport, signal?: AbortSignal) {
    this.transport = transport;
    this.signal = signal;
  }

  async request(req: LoginRequest): Promise<LoginAnswer> {
    this.signal?.throwIfAborted();
    const url = this.transport.check(req.url);
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
    let response;
    try {
      response = await this.transport.request({
        purpose: 'login',
        method: req.method,
        url: url.href,
        headers,
        ...(req.method === 'POST' ? { body: req.form ?? '' } : {}),
        ...(this.signal !== undefined ? { signal: this.signal } : {}),
      });
    } catch (err) {
      this.signal?.throwIfAborted();
      if (err instanceof TransportFailure) throw transportError(err);
      throw err;
    }
    for (const setCookie of response.headers.getSetCookie()) {
      await this.jar.setCookie(setCookie, url.href, { ignoreError: true }).catch(() => undefined);
    }
    const answer: LoginAnswer = {
      url,
      status: response.status,
      ...mediaTypeOf(response.headers.get('content-type') ?? ''),
    };
    const retryAfterMs = retryAfterOf(response.headers.get('retry-after'));
    if (retryAfterMs !== undefined) answer.retryAfterMs = retryAfterMs;
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location !== null) {
      try {
        answer.location = new URL(location, url).href;
      } catch {
        // Left undefined: the walk reports a redirect without a usable Location.
      }
    }
    if (answer.location === undefined && response.status < 500 && isHtml(answer.mediaType)) {
      answer.body = Buffer.from(response.body);
    }
    return answer;
  }
}
