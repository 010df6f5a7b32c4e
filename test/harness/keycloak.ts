// Starts a real Keycloak (the Quarkus distribution from Maven Central) for integration tests.
//
// The distribution is fetched once with Maven, unzipped into ~/.cache/oauth-token-operator/keycloak/<ver>/
// and primed once: a first `kc.sh start-dev` runs Quarkus's augmentation (persisted in the distribution's
// lib/quarkus) and creates an H2 database with the master realm and a bootstrap admin, kept as a template.
// Every start then gets its own Keycloak home (symlinks to the shared lib/, conf/, themes/, providers/ and
// a private data/ with a copy of the template database and the realm to import), so runs share no state
// and never re-augment.
import { spawn, execFile } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  DEFAULT_REALM,
  TEST_CLIENT_ID,
  TEST_CLIENT_SECRET,
  TEST_PASSWORD,
  TEST_REDIRECT_URI,
  TEST_TOTP_SECRET,
  TEST_USERNAME,
  buildRealm,
} from './keycloak-realm.ts';

const execFileAsync = promisify(execFile);

/** The newest Keycloak on Maven Central when this was written; OTO_KEYCLOAK_VERSION overrides it. */
export const DEFAULT_KEYCLOAK_VERSION = '26.7.3';
const MAVEN_DEPENDENCY_PLUGIN = 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1';
/** The master realm's bootstrap admin, created when the template database is primed. */
const ADMIN_USERNAME = 'admin';
const ADMIN_PASSWORD = 'admin-Passw0rd';
/** Keycloak 26.x runs on OpenJDK 17, 21 and 25; the newest present is used. */
const MIN_JAVA = 17;

export interface KeycloakServer {
  /** `http://127.0.0.1:<port>`. */
  baseURL: string;
  /** `${baseURL}/realms/<realm>`: the issuer of the realm's tokens. */
  issuer: string;
  realm: string;
  /** A fresh master-realm admin access token for the Admin REST API (`${baseURL}/admin/realms/...`). */
  adminToken(): Promise<string>;
  close(): Promise<void>;
  /** Base32 TOTP secret of the test user, as an authenticator app would be given it. */
  totpSecret: string;
  username: string;
  password: string;
  clientId: string;
  clientSecret: string;
  redirectURI: string;
  /** Keycloak version that runs. */
  version: string;
  /** The run's Keycloak home (data/, keycloak.log); removed by close() unless OTO_KEEP_KEYCLOAK_DIR=1. */
  dir: string;
  /** Path of the server's log. */
  logPath: string;
}

export interface StartKeycloakOptions {
  /** Realm to import (default `ops`). */
  realm?: string;
  /** Access token lifespan of the realm in seconds (default 60). */
  accessTokenLifespan?: number;
  /** Top-level realm fields merged over the defaults of buildRealm(). */
  realmOverrides?: Record<string, unknown>;
  /** Pins the frontend URL (`--hostname`); by default Keycloak derives it from each request. */
  hostname?: string;
  /** How long to wait for the realm's discovery document (default 180 s). */
  startTimeoutMs?: number;
}

export function keycloakVersion(): string {
  return process.env.OTO_KEYCLOAK_VERSION ?? DEFAULT_KEYCLOAK_VERSION;
}

function cacheRoot(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'oauth-token-operator', 'keycloak');
}

function log(line: string): void {
  process.stderr.write(`[keycloak] ${line}\n`);
}

function seconds(since: number): string {
  return ((Date.now() - since) / 1000).toFixed(1);
}

interface JavaRuntime {
  home: string;
  major: number;
}

function javaMajor(home: string): number | undefined {
  try {
    const release = readFileSync(join(home, 'release'), 'utf8');
    const match = /^JAVA_VERSION="(\d+)(?:\.(\d+))?/m.exec(release);
    if (!match?.[1]) return undefined;
    const major = Number(match[1]);
    // Java 8 and older call themselves 1.x.
    return major === 1 ? Number(match[2]) : major;
  } catch {
    return undefined;
  }
}

/**
 * The JDK that runs Keycloak: OTO_KEYCLOAK_JAVA_HOME when set, otherwise the newest JDK of at least Java 17
 * among JAVA_HOME, the `java` on PATH and /usr/lib/jvm/*.
 */
export async function findJava(): Promise<JavaRuntime> {
  const forced = process.env.OTO_KEYCLOAK_JAVA_HOME;
  if (forced) {
    const major = javaMajor(forced);
    if (major === undefined) throw new Error(`OTO_KEYCLOAK_JAVA_HOME=${forced} has no readable release file`);
    return { home: forced, major };
  }
  const candidates: string[] = [];
  if (process.env.JAVA_HOME) candidates.push(process.env.JAVA_HOME);
  try {
    const { stderr } = await execFileAsync('java', ['-XshowSettings:properties', '-version']);
    const home = /^\s*java\.home = (.+)$/m.exec(stderr)?.[1];
    if (home) candidates.push(home.trim());
  } catch {
    // no java on PATH
  }
  try {
    for (const entry of readdirSync('/usr/lib/jvm')) candidates.push(join('/usr/lib/jvm', entry));
  } catch {
    // no /usr/lib/jvm
  }
  const seen = new Map<string, JavaRuntime>();
  for (const candidate of candidates) {
    let home: string;
    try {
      home = realpathSync(candidate);
    } catch {
      continue;
    }
    const major = javaMajor(home);
    if (major !== undefined && existsSync(join(home, 'bin', 'java'))) seen.set(home, { home, major });
  }
  const best = [...seen.values()]
    .filter((java) => java.major >= MIN_JAVA)
    .sort((a, b) => b.major - a.major)[0];
  if (!best) {
    throw new Error(
      `Keycloak needs Java ${MIN_JAVA} or newer; none found in JAVA_HOME, PATH or /usr/lib/jvm (set OTO_KEYCLOAK_JAVA_HOME)`,
    );
  }
  return best;
}

/** A child environment without the caller's Keycloak settings, so only the harness configures the server. */
function keycloakEnv(java: JavaRuntime, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('KC_') || key.startsWith('KEYCLOAK_') || key === 'JAVA_OPTS' || key === 'JAVA')
      continue;
    env[key] = value;
  }
  // Tests run Keycloak briefly: C1 alone starts it with about 40% less CPU than tiered compilation.
  const append = [env.JAVA_OPTS_APPEND, '-XX:TieredStopAtLevel=1'].filter(Boolean).join(' ');
  return { ...env, JAVA_HOME: java.home, JAVA_OPTS_APPEND: append, ...extra };
}

/** mkdir is atomic: the lock keeps two processes from preparing the same version at once. */
async function withLock<T>(
  lock: string,
  done: () => boolean,
  body: () => Promise<T>,
): Promise<T | undefined> {
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      break;
    } catch {
      if (done()) return undefined;
      if (lockIsStale(lock)) {
        log(`removing the stale lock ${lock}`);
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the lock ${lock}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    return await body();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function lockIsStale(lock: string): boolean {
  try {
    const pid = Number(readFileSync(join(lock, 'pid'), 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    try {
      process.kill(pid, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  } catch {
    // No pid file yet: the owner is between mkdir and write, or died there.
    try {
      return Date.now() - statSync(lock).mtimeMs > 60_000;
    } catch {
      return false;
    }
  }
}

function preparedPaths(version: string): { root: string; dist: string; template: string; marker: string } {
  const root = join(cacheRoot(), version);
  return {
    root,
    dist: join(root, `keycloak-${version}`),
    template: join(root, 'template-h2', 'keycloakdb.mv.db'),
    marker: join(root, 'prepared.json'),
  };
}

/**
 * Returns the directory of an unzipped, augmented Keycloak distribution with a primed template database,
 * downloading and preparing it only when the cache has none.
 */
export async function ensureKeycloakDistribution(): Promise<string> {
  const version = keycloakVersion();
  const paths = preparedPaths(version);
  if (existsSync(paths.marker)) {
    log(`reusing cached Keycloak ${version} (${paths.dist})`);
    return paths.dist;
  }
  mkdirSync(cacheRoot(), { recursive: true });
  await withLock(
    join(cacheRoot(), `${version}.lock`),
    () => existsSync(paths.marker),
    async () => {
      if (existsSync(paths.marker)) return;
      const java = await findJava();
      const started = Date.now();
      if (!existsSync(join(paths.dist, 'bin', 'kc.sh')))
        await downloadAndUnzip(version, paths.root, paths.dist, java);
      const downloaded = Date.now();
      await prime(version, paths.dist, paths.template, java);
      writeFileSync(
        paths.marker,
        JSON.stringify(
          {
            version,
            javaHome: java.home,
            javaMajor: java.major,
            downloadSeconds: Number(((downloaded - started) / 1000).toFixed(1)),
            primeSeconds: Number(seconds(downloaded)),
            preparedAt: new Date().toISOString(),
          },
          null,
          2,
        ),
      );
      log(`Keycloak ${version} prepared in ${seconds(started)}s`);
    },
  );
  if (!existsSync(paths.marker)) throw new Error(`Keycloak ${version} was not prepared in ${paths.root}`);
  return paths.dist;
}

async function downloadAndUnzip(
  version: string,
  root: string,
  dist: string,
  java: JavaRuntime,
): Promise<void> {
  const started = Date.now();
  const download = join(root, 'download');
  rmSync(download, { recursive: true, force: true });
  mkdirSync(download, { recursive: true });
  const artifact = `org.keycloak:keycloak-quarkus-dist:${version}:zip`;
  log(`fetching ${artifact} from Maven Central (about 180 MB, once)`);
  // Run outside any Maven project; the zip also lands in ~/.m2, so a later fetch is offline.
  await run(
    'mvn',
    [
      '-B',
      '-q',
      `${MAVEN_DEPENDENCY_PLUGIN}:copy`,
      `-Dartifact=${artifact}`,
      `-DoutputDirectory=${download}`,
      '-Dmdep.overWriteReleases=true',
    ],
    { cwd: download },
  );
  const zip = join(download, `keycloak-quarkus-dist-${version}.zip`);
  if (!existsSync(zip)) throw new Error(`Maven did not produce ${zip}`);
  log(`downloaded in ${seconds(started)}s; unzipping`);
  const unzipped = join(root, 'unzip.partial');
  rmSync(unzipped, { recursive: true, force: true });
  mkdirSync(unzipped, { recursive: true });
  const top = join(unzipped, `keycloak-${version}`);
  try {
    await run('unzip', ['-q', zip, '-d', unzipped]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    // No unzip on this machine: the JDK's jar tool extracts too, without the executable bits.
    await run(join(java.home, 'bin', 'jar'), ['xf', zip], { cwd: unzipped });
    for (const script of readdirSync(join(top, 'bin')).filter((f) => f.endsWith('.sh'))) {
      chmodSync(join(top, 'bin', script), 0o755);
    }
  }
  if (!existsSync(join(top, 'bin', 'kc.sh'))) {
    throw new Error(`${zip} holds no keycloak-${version}/bin/kc.sh`);
  }
  rmSync(dist, { recursive: true, force: true });
  renameSync(top, dist);
  rmSync(unzipped, { recursive: true, force: true });
  rmSync(download, { recursive: true, force: true });
}

/**
 * First start in the distribution's own home: Quarkus augments (and persists that in lib/quarkus) and
 * Keycloak creates its schema, the master realm and the bootstrap admin. The database is kept as the
 * template every run copies.
 */
async function prime(version: string, dist: string, template: string, java: JavaRuntime): Promise<void> {
  const started = Date.now();
  log(`priming Keycloak ${version} on Java ${java.major} (${java.home}): build and master realm, once`);
  rmSync(join(dist, 'data'), { recursive: true, force: true });
  const logPath = join(dist, '..', 'prime.log');
  const server = await spawnOnFreePort(async (port) => {
    const server = spawnKeycloak({
      dist,
      home: undefined,
      args: ['start-dev', `--http-port=${port}`, '--http-host=127.0.0.1'],
      env: keycloakEnv(java, {
        KC_BOOTSTRAP_ADMIN_USERNAME: ADMIN_USERNAME,
        KC_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      }),
      logPath,
    });
    try {
      await waitForDiscovery(`http://127.0.0.1:${port}/realms/master`, server, logPath, 900_000);
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }, logPath);
  await server.stop();
  rmSync(join(dist, 'keycloak.pgid'), { force: true });
  const code = server.exitCode();
  // 143 is kc.sh's own status after it forwarded SIGTERM to the JVM.
  if (code !== 0 && code !== 143 && code !== 130) {
    throw new Error(`priming Keycloak exited with ${String(code)}; see ${logPath}:\n${tail(logPath)}`);
  }
  const db = join(dist, 'data', 'h2', 'keycloakdb.mv.db');
  if (!existsSync(db)) throw new Error(`priming Keycloak left no database at ${db}; see ${logPath}`);
  mkdirSync(join(template, '..'), { recursive: true });
  copyFileSync(db, template);
  rmSync(join(dist, 'data'), { recursive: true, force: true });
  log(`primed in ${seconds(started)}s`);
}

function run(command: string, args: string[], options: { cwd?: string } = {}): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`${command} ${args.join(' ')} failed with ${String(code ?? signal)}`));
    });
  });
}

// Keycloak binds its port seconds after we pick it, so a port the kernel hands out for port 0 (from the
// ephemeral range, 32768-60999 on Linux) can meanwhile go to another test file's outgoing connection or
// listener. Ports are picked below that range, at random, and a start that still loses the race retries.
const PORT_RANGE = { low: 20_000, high: 32_000 };

function canListen(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once('error', () => {
      resolvePromise(false);
    });
    server.listen(port, '127.0.0.1', () => {
      server.close(() => {
        resolvePromise(true);
      });
    });
  });
}

export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = PORT_RANGE.low + Math.floor(Math.random() * (PORT_RANGE.high - PORT_RANGE.low));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port between ${PORT_RANGE.low} and ${PORT_RANGE.high} after 100 tries`);
}

function lostPortRace(logPath: string): boolean {
  return /Port already bound|Address already in use/.test(tail(logPath));
}

// Runs kc.sh in a process group of its own (kc.sh runs java as its child) and stops that whole group when
// the wrapper gets SIGTERM/SIGINT/SIGHUP or when its stdin, a pipe only the test process holds, reaches
// EOF: if the test process dies, Keycloak goes too. SIGKILL follows SIGTERM after 20 s.
const WRAPPER = `
exec 3<&0
setsid "$@" </dev/null 3<&- &
kc=$!
echo "$kc" > keycloak.pgid
setsid sh -c 'cat >/dev/null; kill -TERM "$1" 2>/dev/null' watcher "$$" <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&-
killer=
stop() {
  [ -n "$killer" ] && return
  kill -TERM -"$kc" 2>/dev/null
  setsid sh -c 'sleep 20; kill -KILL -"$1" 2>/dev/null' killer "$kc" </dev/null >/dev/null 2>&1 &
  killer=$!
}
trap stop TERM INT HUP
status=0
while kill -0 "$kc" 2>/dev/null; do wait "$kc"; status=$?; done
kill -KILL -"$kc" 2>/dev/null
kill -TERM -"$watcher" 2>/dev/null
[ -n "$killer" ] && kill -TERM -"$killer" 2>/dev/null
exit $status
`;

interface SpawnedKeycloak {
  exitCode(): number | null | undefined;
  exited: Promise<void>;
  stop(): Promise<void>;
}

function spawnKeycloak(options: {
  dist: string;
  home: string | undefined;
  args: string[];
  env: NodeJS.ProcessEnv;
  logPath: string;
}): SpawnedKeycloak {
  const cwd = options.home ?? options.dist;
  const logFd = openSync(options.logPath, 'a');
  const args = [...options.args];
  // kc.sh passes -D options to the JVM after its own -Dkc.home.dir, so this one wins.
  if (options.home) args.push(`-Dkc.home.dir=${options.home}`);
  const child = spawn('sh', ['-c', WRAPPER, 'keycloak', join(options.dist, 'bin', 'kc.sh'), ...args], {
    cwd,
    env: options.env,
    stdio: ['pipe', logFd, logFd],
    detached: false,
  });
  closeSync(logFd);
  const stdin = child.stdin;
  if (!stdin) throw new Error('kc.sh was spawned without a stdin pipe');
  stdin.on('error', () => {
    // The wrapper is gone; nothing to tell it.
  });
  let code: number | null | undefined;
  const exited = new Promise<void>((resolveExit) => {
    child.on('exit', (exitCode, signal) => {
      code = exitCode ?? (signal ? 128 : null);
      resolveExit();
    });
    child.on('error', (err) => {
      log(`could not start kc.sh: ${err.message}`);
      code = null;
      resolveExit();
    });
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (code === undefined) {
        child.kill('SIGTERM');
        stdin.end();
        const timer = setTimeout(() => {
          killGroup(join(cwd, 'keycloak.pgid'));
          child.kill('SIGKILL');
        }, 30_000);
        await exited;
        clearTimeout(timer);
      }
    })();
    return stopping;
  };
  return { exitCode: () => code, exited, stop };
}

/** Last resort when the wrapper does not exit: SIGKILL what is left in Keycloak's process group. */
function killGroup(pgidFile: string): void {
  try {
    const pgid = Number(readFileSync(pgidFile, 'utf8').trim());
    if (Number.isInteger(pgid) && pgid > 1) process.kill(-pgid, 'SIGKILL');
  } catch {
    // no pgid recorded, or the group is gone already
  }
}

async function waitForDiscovery(
  issuer: string,
  server: SpawnedKeycloak,
  logPath: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const url = `${issuer}/.well-known/openid-configuration`;
  for (;;) {
    if (server.exitCode() !== undefined) {
      throw new Error(
        `Keycloak exited with ${String(server.exitCode())} before it was ready; see ${logPath}:\n${tail(logPath)}`,
      );
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
      if (response.status === 200) {
        await response.arrayBuffer();
        return;
      }
      await response.arrayBuffer();
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(
        `Keycloak did not serve ${url} within ${timeoutMs / 1000}s; see ${logPath}:\n${tail(logPath)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-40).join('\n');
  } catch {
    return '';
  }
}

/** Runs `start` on a free port, and on another one (three tries in all) when Keycloak lost the port. */
async function spawnOnFreePort<T>(start: (port: number) => Promise<T>, logPath: string): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await freePort());
    } catch (err) {
      if (attempt >= 3 || !lostPortRace(logPath)) throw err;
      renameSync(logPath, `${logPath}.${attempt}`);
      log(`Keycloak lost its port to another process; retrying on another (attempt ${attempt + 1})`);
    }
  }
}

/** Starts a Keycloak of its own, with the test realm imported, on a free loopback port. */
export async function startKeycloak(opts: StartKeycloakOptions = {}): Promise<KeycloakServer> {
  const version = keycloakVersion();
  const dist = await ensureKeycloakDistribution();
  const java = await findJava();
  const realm = opts.realm ?? DEFAULT_REALM;
  const { template } = preparedPaths(version);

  const home = mkdtempSync(join(tmpdir(), 'oto-keycloak-'));
  for (const shared of ['lib', 'conf', 'themes', 'providers'])
    symlinkSync(join(dist, shared), join(home, shared));
  mkdirSync(join(home, 'data', 'h2'), { recursive: true });
  mkdirSync(join(home, 'data', 'import'), { recursive: true });
  copyFileSync(template, join(home, 'data', 'h2', 'keycloakdb.mv.db'));
  const realmJSON = buildRealm({
    realm,
    ...(opts.accessTokenLifespan !== undefined ? { accessTokenLifespan: opts.accessTokenLifespan } : {}),
    ...(opts.realmOverrides ? { overrides: opts.realmOverrides } : {}),
  });
  writeFileSync(join(home, 'data', 'import', `${realm}-realm.json`), JSON.stringify(realmJSON, null, 2));

  const logPath = join(home, 'keycloak.log');
  const started = Date.now();
  const { server, baseURL } = await spawnOnFreePort(async (port) => {
    const baseURL = `http://127.0.0.1:${port}`;
    const args = ['start-dev', `--http-port=${port}`, '--http-host=127.0.0.1', '--import-realm'];
    if (opts.hostname) args.push(`--hostname=${opts.hostname}`);
    const server = spawnKeycloak({ dist, home, args, env: keycloakEnv(java), logPath });
    try {
      await waitForDiscovery(`${baseURL}/realms/${realm}`, server, logPath, opts.startTimeoutMs ?? 180_000);
    } catch (err) {
      log(`start failed; ${home} is kept for its log`);
      throw err;
    }
    return { server, baseURL };
  }, logPath);
  const issuer = `${baseURL}/realms/${realm}`;
  log(`Keycloak ${version} (Java ${java.major}) ready at ${issuer} in ${seconds(started)}s`);

  let closed: Promise<void> | undefined;
  let adminTokenCache: { token: string; atMs: number } | undefined;
  return {
    baseURL,
    issuer: opts.hostname ? `${opts.hostname.replace(/\/$/, '')}/realms/${realm}` : issuer,
    realm,
    version,
    dir: home,
    logPath,
    totpSecret: TEST_TOTP_SECRET,
    username: TEST_USERNAME,
    password: TEST_PASSWORD,
    clientId: TEST_CLIENT_ID,
    clientSecret: TEST_CLIENT_SECRET,
    redirectURI: TEST_REDIRECT_URI,
    // Cached for 30 s (admin-cli tokens live 60 s): a test's admin calls then cost one login, not
    // one each, and an admin action is not preceded by a password hash on a busy machine.
    adminToken: async () => {
      if (adminTokenCache !== undefined && Date.now() - adminTokenCache.atMs < 30_000)
        return adminTokenCache.token;
      const response = await fetch(`${baseURL}/realms/master/protocol/openid-connect/token`, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'password',
          client_id: 'admin-cli',
          username: ADMIN_USERNAME,
          password: ADMIN_PASSWORD,
        }),
      });
      const body = (await response.json()) as { access_token?: string; error_description?: string };
      if (!response.ok || !body.access_token) {
        throw new Error(`admin token request failed with ${response.status}: ${JSON.stringify(body)}`);
      }
      adminTokenCache = { token: body.access_token, atMs: Date.now() };
      return body.access_token;
    },
    close: () => {
      closed ??= (async () => {
        await server.stop();
        if (process.env.OTO_KEEP_KEYCLOAK_DIR !== '1') rmSync(home, { recursive: true, force: true });
      })();
      return closed;
    },
  };
}
