// Plumbing shared by the provider simulators (exact-online.ts, concur.ts, folio.ts): a loopback HTTP
// server whose handler returns a reply instead of writing it, so that faults can be applied around
// the processing; compressed time; opaque and JWT-shaped tokens; cookie and form parsing.
//
// Faults model what a client sees on a flaky network: an answer held back after the request was
// processed (the client times out although the provider already rotated its token), a connection
// dropped after processing (a lost response), and a gateway error before processing (nothing
// consumed). They apply to the next requests in arrival order, optionally only to one path.
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

const MAX_BODY_BYTES = 256 * 1024;

/** The wall clock a simulator judges expiry by; a FakeClock in unit tests. */
export interface SimClock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export interface SimTimeOptions {
  /** Default: Date.now. */
  clock?: SimClock;
  /**
   * Factor applied to every provider duration (lifetimes, minimum intervals, rate-limit windows):
   * 0.01 turns a 570 s floor into 5.7 s. Protocol constants such as the 30 s TOTP step are not
   * scaled. Default 1.
   */
  timeScale?: number;
}

export interface SimTime {
  now(): number;
  /** A provider duration in milliseconds, compressed by the time scale. */
  scaled(providerMs: number): number;
}

export function simTime(options: SimTimeOptions): SimTime {
  const scale = options.timeScale ?? 1;
  if (!(scale > 0) || !Number.isFinite(scale)) throw new Error(`timeScale must be a positive number`);
  const clock = options.clock;
  return {
    now: () => (clock === undefined ? Date.now() : clock.now()),
    scaled: (providerMs) => providerMs * scale,
  };
}

/** A lifetime as whole seconds, at least 1 (what a provider writes into expires_in or Max-Age). */
export function wholeSeconds(ms: number): number {
  return Math.max(1, Math.round(ms / 1000));
}

/** Who may ask: the app's client credentials and the account's (test values). */
export interface SimCredentials {
  clientId: string;
  clientSecret: string;
  username: string;
  password: string;
}

/** The credentials given, the rest `<provider>-test-…` (fixed for a simulator's life). */
export function credentialsOf(given: Partial<SimCredentials>, provider: string): SimCredentials {
  return {
    clientId: given.clientId ?? `${provider}-test-client`,
    clientSecret: given.clientSecret ?? `${provider}-test-secret`,
    username: given.username ?? 'alice@example.test',
    password: given.password ?? `${provider}-test-password`,
  };
}

export interface SimRequest {
  method: string;
  /** The request URL, absolute against the server's origin. */
  url: URL;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Reply {
  status: number;
  headers?: Record<string, string | string[]>;
  body?: string;
}

export function jsonReply(status: number, body: unknown, headers: Record<string, string> = {}): Reply {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers },
    body: JSON.stringify(body),
  };
}

export function textReply(status: number, text: string, headers: Record<string, string> = {}): Reply {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers }, body: text };
}

export function htmlReply(
  status: number,
  html: string,
  headers: Record<string, string | string[]> = {},
): Reply {
  return {
    status,
    headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...headers },
    body: html,
  };
}

export function redirectReply(location: string, headers: Record<string, string | string[]> = {}): Reply {
  return { status: 302, headers: { location, 'cache-control': 'no-store', ...headers } };
}

/** The body parsed as a form (application/x-www-form-urlencoded). */
export function formOf(req: SimRequest): URLSearchParams {
  return new URLSearchParams(req.body);
}

export function isFormPost(req: SimRequest): boolean {
  return (
    req.method === 'POST' &&
    (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')
  );
}

/** The cookies of a Cookie header in order, duplicates kept (servers differ in what they do with them). */
export function cookiesOf(req: SimRequest): [string, string][] {
  const header = req.headers.cookie ?? '';
  const out: [string, string][] = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    out.push([part.slice(0, eq).trim(), value]);
  }
  return out;
}

export function bearerOf(req: SimRequest): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return match?.[1];
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** A compact JWT signed with HS256: the shape of the providers' tokens, verifiable only by the simulator. */
export function signedJwt(payload: Record<string, unknown>, key: Buffer): string {
  const encode = (part: unknown): string => Buffer.from(JSON.stringify(part)).toString('base64url');
  const signingInput = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(payload)}`;
  return `${signingInput}.${createHmac('sha256', key).update(signingInput).digest('base64url')}`;
}

export type Fault =
  /** The request is processed at once; the answer leaves only after `ms` (real time). */
  | { kind: 'delay'; ms: number }
  /** The request is processed, then the connection is destroyed without a byte of answer. */
  | { kind: 'drop' }
  /** An error answer from a gateway in front of the provider; the request is not processed. */
  | { kind: 'status'; status: number; body?: string };

export interface InjectedFault {
  fault: Fault;
  method: string;
  path: string;
}

/** How a test makes the next answers misbehave. `path` limits a fault to requests for that path. */
export interface FaultControls {
  delayNext(count: number, ms: number, path?: string): void;
  dropNext(count: number, path?: string): void;
  /** Default status 503. */
  failNext(count: number, status?: number, path?: string, body?: string): void;
  clear(): void;
  /** Faults queued and not yet applied. */
  readonly pending: number;
  /** Faults applied, in order. */
  readonly injected: readonly InjectedFault[];
}

export class FaultInjector implements FaultControls {
  private queue: { fault: Fault; path: string | undefined }[] = [];
  private readonly applied: InjectedFault[] = [];

  delayNext(count: number, ms: number, path?: string): void {
    this.push(count, { kind: 'delay', ms }, path);
  }

  dropNext(count: number, path?: string): void {
    this.push(count, { kind: 'drop' }, path);
  }

  failNext(count: number, status = 503, path?: string, body?: string): void {
    this.push(
      count,
      body === undefined ? { kind: 'status', status } : { kind: 'status', status, body },
      path,
    );
  }

  clear(): void {
    this.queue = [];
  }

  get pending(): number {
    return this.queue.length;
  }

  get injected(): readonly InjectedFault[] {
    return this.applied;
  }

  /** The fault for this request, if one is queued for it (it is then used up). */
  take(method: string, path: string): Fault | undefined {
    const index = this.queue.findIndex((q) => q.path === undefined || q.path === path);
    if (index < 0) return undefined;
    const [entry] = this.queue.splice(index, 1);
    if (entry === undefined) return undefined;
    this.applied.push({ fault: entry.fault, method, path });
    return entry.fault;
  }

  private push(count: number, fault: Fault, path: string | undefined): void {
    for (let i = 0; i < count; i++) this.queue.push({ fault, path });
  }
}

export interface SimServer {
  /** http://127.0.0.1:port */
  readonly origin: string;
  close(): Promise<void>;
}

export type SimHandler = (req: SimRequest) => Reply;

/** Listens on an ephemeral loopback port; the handler's reply goes out through the fault injector. */
export async function startSimServer(handle: SimHandler, faults: FaultInjector): Promise<SimServer> {
  const timers = new Set<NodeJS.Timeout>();
  let origin = '';
  const server: Server = createServer((req, res) => {
    const write = (reply: Reply): void => {
      if (res.destroyed) return;
      const body = reply.body ?? '';
      res.writeHead(reply.status, { 'content-length': String(Buffer.byteLength(body)), ...reply.headers });
      res.end(body);
    };
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) req.destroy();
      else chunks.push(chunk);
    });
    req.on('end', () => {
      const url = new URL(req.url ?? '/', origin);
      const method = req.method ?? 'GET';
      const fault = faults.take(method, url.pathname);
      if (fault?.kind === 'status') {
        write(textReply(fault.status, fault.body ?? 'Service Unavailable'));
        return;
      }
      let reply: Reply;
      try {
        reply = handle({ method, url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      } catch {
        reply = textReply(500, 'Internal Server Error');
      }
      if (fault?.kind === 'drop') {
        req.socket.destroy();
        return;
      }
      if (fault?.kind === 'delay') {
        const timer = setTimeout(() => {
          timers.delete(timer);
          write(reply);
        }, fault.ms);
        timers.add(timer);
        return;
      }
      write(reply);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => {
        server.close((err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    },
  };
}
