// Servers a hostile tenant points its connections at, for test/integration/tenants.test.ts: each
// counts what reached it, so a test can say how often the operator called (or did not call) it.
// - a rogue provider: huge tokens, a rotated refresh token too large to keep, a password grant that
//   rejects every password, a collector that only counts (a confused deputy's destination), and
//   discovery documents and login redirects that point elsewhere (at a trap, at a metadata address);
// - a tarpit: accepts a connection, then answers one byte a second, forever;
// - a slow login: every page a redirect to the next, each answered just inside the request cap;
// - a trap on an address the operator's endpoint policy forbids: it must see no connection at all.
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';

export interface Counting {
  /** http://host:port, no trailing slash. */
  origin: string;
  close(): Promise<void>;
}

async function listen(server: Server | ReturnType<typeof createTcpServer>, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  return (server.address() as AddressInfo).port;
}

function closer(
  server: Server | ReturnType<typeof createTcpServer>,
  sockets: Set<Socket>,
): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => {
        resolve();
      });
    });
}

function track(server: Server | ReturnType<typeof createTcpServer>): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  return sockets;
}

export const KIB = 1024;
/** An access token just under the operator's 16 KiB cap: harmless alone, huge in 1000 copies. */
export const BIG_TOKEN_BYTES = 15 * KIB;
/** An access token far over the cap (the response still fits the 1 MiB response cap). */
export const HUGE_TOKEN_BYTES = 600 * KIB;

export interface RogueProvider extends Counting {
  /** Requests whose path starts with `prefix` (/big, /huge, /rotate-huge, /password, /collector, …). */
  hits(prefix: string): number;
  /**
   * Serves an OpenID discovery document for the issuer `${origin}${issuerPath}` naming `endpoints`
   * (token_endpoint and the like, anywhere at all); returns the issuer URL.
   */
  discovery(issuerPath: string, endpoints: Record<string, string>): string;
  /** Answers every request under `pathPrefix` with a 302 to `location`. */
  redirect(pathPrefix: string, location: string): void;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/** The tenant's own token endpoint, answering by path. */
export async function startRogueProvider(): Promise<RogueProvider> {
  const paths: string[] = [];
  const documents = new Map<string, Record<string, string>>();
  const redirects = new Map<string, string>();
  const server = createHttpServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    paths.push(path);
    req.resume();
    req.on('end', () => {
      const document = documents.get(path);
      const redirect = [...redirects].find(([prefix]) => path.startsWith(prefix))?.[1];
      if (document !== undefined) {
        json(res, 200, document);
      } else if (redirect !== undefined) {
        res.writeHead(302, { location: redirect }).end();
      } else if (path === '/big/token') {
        json(res, 200, { access_token: 'b'.repeat(BIG_TOKEN_BYTES), token_type: 'Bearer', expires_in: 3600 });
      } else if (path === '/huge/token') {
        json(res, 200, {
          access_token: 'h'.repeat(HUGE_TOKEN_BYTES),
          token_type: 'Bearer',
          expires_in: 3600,
        });
      } else if (path === '/rotate-huge/token') {
        json(res, 200, {
          access_token: 'small-access-token',
          token_type: 'Bearer',
          expires_in: 3600,
          refresh_token: 'r'.repeat(20 * KIB),
        });
      } else if (path === '/password/token') {
        json(res, 400, { error: 'invalid_grant', error_description: 'Invalid user credentials' });
      } else {
        json(res, 404, { error: 'not_found' });
      }
    });
  });
  const sockets = track(server);
  const port = await listen(server, '127.0.0.1');
  const origin = `http://127.0.0.1:${String(port)}`;
  return {
    origin,
    hits: (prefix) => paths.filter((p) => p.startsWith(prefix)).length,
    discovery: (issuerPath, endpoints) => {
      const issuer = `${origin}${issuerPath}`;
      // OpenID Connect Discovery 1.0 §4: the document sits under the issuer's path.
      documents.set(`${issuerPath}/.well-known/openid-configuration`, { issuer, ...endpoints });
      return issuer;
    },
    redirect: (pathPrefix, location) => {
      redirects.set(pathPrefix, location);
    },
    close: closer(server, sockets),
  };
}

export interface Tarpit extends Counting {
  /** Requests received so far (connections that sent something). */
  requests(): number;
  /**
   * Most requests in progress at once, not counting an overlap shorter than `graceMs`: a client
   * that gives up on a request and sends the next one closes the old socket in the same instant
   * it writes on a new one (undici does), and the server may see the write first.
   */
  maxConcurrent(graceMs?: number): number;
}

/**
 * Accepts every connection and, once a request arrived, answers one byte a second of a response
 * that never ends: a status line and then headers, forever.
 */
export async function startTarpit(): Promise<Tarpit> {
  const requests: { start: number; end?: number }[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const server = createTcpServer((socket) => {
    const answer = `HTTP/1.1 200 OK\r\nx-slow: ${'a'.repeat(100_000)}`;
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    let request: { start: number; end?: number } | undefined;
    socket.once('data', () => {
      request = { start: performance.now() };
      requests.push(request);
      timer = setInterval(() => {
        socket.write(answer.charAt(sent++ % answer.length));
      }, 1000);
      timers.add(timer);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (request !== undefined) request.end = performance.now();
      if (timer !== undefined) {
        clearInterval(timer);
        timers.delete(timer);
      }
    });
  });
  const sockets = track(server);
  const port = await listen(server, '127.0.0.1');
  const close = closer(server, sockets);
  return {
    origin: `http://127.0.0.1:${String(port)}`,
    requests: () => requests.length,
    maxConcurrent: (graceMs = 100) =>
      Math.max(
        0,
        ...requests.map(
          (r) =>
            1 +
            requests.filter(
              (q) => q !== r && q.start <= r.start && (q.end === undefined || q.end > r.start + graceMs),
            ).length,
        ),
      ),
    close: async () => {
      for (const timer of timers) clearInterval(timer);
      await close();
    },
  };
}

export interface SlowLogin extends Counting {
  /** Requests received. */
  hits(): number;
}

/**
 * A login that never ends: every request is answered, after `delayMs` (inside the request cap), by
 * a redirect to a new page on the same server.
 */
export async function startSlowLogin(delayMs: number): Promise<SlowLogin> {
  let hits = 0;
  const server = createHttpServer((req, res) => {
    hits++;
    req.resume();
    const timer = setTimeout(() => {
      res.writeHead(302, { location: `/page-${String(hits)}` }).end();
    }, delayMs);
    res.on('close', () => {
      clearTimeout(timer);
    });
  });
  const sockets = track(server);
  const port = await listen(server, '127.0.0.1');
  return { origin: `http://127.0.0.1:${String(port)}`, hits: () => hits, close: closer(server, sockets) };
}

export interface Trap extends Counting {
  /** TCP connections accepted (a request needs one, so 0 means nothing was sent). */
  connections(): number;
}

/** A server on `address` that counts every connection and answers nothing useful. */
export async function startTrap(address: string): Promise<Trap> {
  let connections = 0;
  const server = createHttpServer((_req, res) => {
    json(res, 200, { access_token: 'trapped', token_type: 'Bearer' });
  });
  server.on('connection', () => {
    connections++;
  });
  const sockets = track(server);
  const port = await listen(server, address);
  return {
    origin: `http://${address}:${String(port)}`,
    connections: () => connections,
    close: closer(server, sockets),
  };
}

/** Samples a process's resident set size from /proc (Linux), keeping the largest seen. */
export class RssSampler {
  private peakKiB = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly pid: number;

  constructor(pid: number, intervalMs = 200) {
    this.pid = pid;
    this.timer = setInterval(() => {
      this.sample();
    }, intervalMs);
  }

  /** The current RSS in MiB (0 once the process is gone). */
  sample(): number {
    const kib = readRssKiB(this.pid);
    this.peakKiB = Math.max(this.peakKiB, kib);
    return kib / 1024;
  }

  peakMiB(): number {
    return this.peakKiB / 1024;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

function readRssKiB(pid: number): number {
  try {
    const status = readFileSync(`/proc/${String(pid)}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}
