// Fault injection in front of a test authorization server's token endpoint.
//
// It runs as Koa middleware on the provider's own app, ahead of the provider's router, so it sees
// every request on the real socket. Faults other than 'lostResponse' answer by themselves and never
// reach the provider: the presented refresh token is not consumed. A 'lostResponse' lets the provider
// process the request completely (the refresh token is rotated and the successor stored) and then
// destroys the client's connection without a byte of answer, as a dropped connection or a crashed
// gateway would.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export type Fault =
  /** An HTTP error before the provider; the default body is HTML for 502/503 (a gateway) and JSON for 500. */
  | { kind: 'status'; status: 500 | 502 | 503; retryAfterSec?: number; body?: string }
  /** 429 with a Retry-After header (seconds). */
  | { kind: 'rateLimit'; retryAfterSec: number }
  /**
   * A slow answer, for client timeouts. By default ('afterProcessing') the provider processes the
   * request at once and only the answer is held back, so a client that gives up has still consumed
   * its refresh token. With 'beforeProcessing' the request reaches the provider only after the delay
   * (even if the client has gone by then, as a real server would not notice).
   */
  | { kind: 'delay'; ms: number; phase?: 'afterProcessing' | 'beforeProcessing' }
  /** 200 with a body that is not valid JSON; the request is not processed. */
  | { kind: 'malformed'; body?: string }
  /** The provider processes the request, then the connection is destroyed without an answer. */
  | { kind: 'lostResponse' }
  /** An OAuth-style error answer (e.g. 400 invalid_grant) that the provider never saw. */
  | { kind: 'oauthError'; status: number; body: Record<string, unknown> | string };

export interface InjectedFault {
  /** Date.now() when the faulted request arrived. */
  at: number;
  fault: Fault;
  method: string;
  path: string;
  /** Whether the request reached the provider (true only for 'lostResponse' and 'delay'). */
  processed: boolean;
}

/** The part of a Koa context the middleware uses (oidc-provider's app is a Koa app). */
export interface KoaLikeContext {
  method: string;
  path: string;
  status: number;
  body: unknown;
  respond?: boolean;
  req: IncomingMessage;
  res: ServerResponse;
}

export type KoaLikeMiddleware = (ctx: KoaLikeContext, next: () => Promise<void>) => Promise<void>;

const MALFORMED_BODY = '{"access_token":"eyJhbGciOiJSUzI1NiJ9.truncated","token_type":"Bear';

function defaultStatusBody(status: number): { type: string; body: string } {
  if (status === 500) {
    return {
      type: 'application/json',
      body: JSON.stringify({ error: 'server_error', error_description: 'injected fault' }),
    };
  }
  const title = status === 502 ? '502 Bad Gateway' : '503 Service Temporarily Unavailable';
  return {
    type: 'text/html',
    body: `<html><head><title>${title}</title></head><body><center><h1>${title}</h1></center></body></html>`,
  };
}

function send(ctx: KoaLikeContext, status: number, headers: Record<string, string>, body: string): void {
  // Bypass Koa's response handling: the answer is exactly what is written here.
  ctx.respond = false;
  ctx.res.writeHead(status, { 'cache-control': 'no-store', ...headers });
  ctx.res.end(body);
}

export class FaultController {
  private readonly queue: Fault[] = [];
  private readonly injected: InjectedFault[] = [];
  private readonly shutdown = new AbortController();

  /** Queues `fault` for each of the next `count` token requests (after those already queued). */
  next(fault: Fault, count = 1): void {
    for (let i = 0; i < count; i++) this.queue.push(fault);
  }

  /** Drops every queued fault (the log is kept). */
  clear(): void {
    this.queue.length = 0;
  }

  /** Number of faults still queued. */
  pending(): number {
    return this.queue.length;
  }

  /** The faults injected so far, oldest first. */
  log(): InjectedFault[] {
    return this.injected.map((entry) => ({ ...entry }));
  }

  /** Ends pending delays (their connections are destroyed); called when the server closes. */
  dispose(): void {
    this.queue.length = 0;
    this.shutdown.abort();
  }

  /**
   * Koa middleware that applies queued faults to requests for which `isTarget` is true (the token
   * endpoint); other requests pass untouched.
   */
  middleware(isTarget: (ctx: KoaLikeContext) => boolean): KoaLikeMiddleware {
    return async (ctx, next) => {
      if (!isTarget(ctx)) {
        await next();
        return;
      }
      const fault = this.queue.shift();
      if (!fault) {
        await next();
        return;
      }
      const entry: InjectedFault = {
        at: Date.now(),
        fault,
        method: ctx.method,
        path: ctx.path,
        processed: false,
      };
      this.injected.push(entry);
      await this.apply(fault, ctx, async () => {
        entry.processed = true;
        await next();
      });
    };
  }

  private async apply(fault: Fault, ctx: KoaLikeContext, next: () => Promise<void>): Promise<void> {
    switch (fault.kind) {
      case 'status': {
        const { type, body } =
          fault.body === undefined
            ? defaultStatusBody(fault.status)
            : { type: 'text/plain', body: fault.body };
        const headers: Record<string, string> = { 'content-type': type };
        if (fault.retryAfterSec !== undefined) headers['retry-after'] = String(fault.retryAfterSec);
        send(ctx, fault.status, headers, body);
        return;
      }
      case 'rateLimit':
        send(
          ctx,
          429,
          { 'content-type': 'application/json', 'retry-after': String(fault.retryAfterSec) },
          JSON.stringify({ error: 'too_many_requests', error_description: 'Global limit has been reached' }),
        );
        return;
      case 'malformed':
        send(ctx, 200, { 'content-type': 'application/json' }, fault.body ?? MALFORMED_BODY);
        return;
      case 'oauthError': {
        const body = typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body);
        send(ctx, fault.status, { 'content-type': 'application/json' }, body);
        return;
      }
      case 'lostResponse':
        await next();
        ctx.respond = false;
        ctx.req.socket.destroy();
        return;
      case 'delay':
        if (fault.phase === 'beforeProcessing') {
          if (!(await this.wait(fault.ms, ctx))) return;
          await next();
        } else {
          await next();
          await this.wait(fault.ms, ctx);
        }
        return;
    }
  }

  /** Waits `ms`; false (and the connection destroyed) when the server shuts down meanwhile. */
  private async wait(ms: number, ctx: KoaLikeContext): Promise<boolean> {
    try {
      await sleep(ms, undefined, { signal: this.shutdown.signal });
      return true;
    } catch {
      ctx.respond = false;
      ctx.req.socket.destroy();
      return false;
    }
  }
}
