// The shared setup of the exact-online integration files: Exact Online simulators for one
// namespace, and exact-online connections seeded at them the way a person would hand one over.
//
// Time compression: the simulator scales every provider duration, the operator does not know it. The
// preset's 570 s minInterval would hold every refresh for minutes, so each connection names the
// preset's floor scaled (scaledMinInterval) in spec.refresh.minInterval. It is taken from the preset,
// not from the simulator's own 570 s: a preset floor below Exact's then meets TooEarly in the tests,
// and one far above it lets the access token expire before the refresh. The operator takes issuedAt
// when the answer has arrived, after the simulator stamped the issue, so a minInterval at or above
// the scaled floor cannot be too early; the slack above it only absorbs timers and scheduling.
import type * as k8s from '@kubernetes/client-node';
import { exactOnline } from '../../src/providers/presets/exact-online.ts';
import {
  connection,
  createConnection,
  createSecret,
  getConnectionStatus,
  untilStatus,
  waitFor,
  type ConnectionStatus,
} from './builders.ts';
import { canary } from './leaks.ts';
import {
  EXACT_FLOOR_MS,
  startExactOnlineSimulator,
  type ExactOnlineBehaviour,
  type ExactOnlineSimulator,
  type ExactRequest,
} from '../simulators/exact-online.ts';

export { EXACT_ACCESS_TOKEN_LIFETIME_MS, EXACT_FLOOR_MS } from '../simulators/exact-online.ts';
export const EXACT_REDIRECT_URI = 'http://127.0.0.1:9/exact-callback';
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** The preset's floor (exactOnline.minIntervalMs) compressed by timeScale, plus slack: milliseconds. */
export function scaledMinIntervalMs(timeScale: number, slackMs = 100): number {
  return Math.ceil(exactOnline.minIntervalMs * timeScale + slackMs);
}

/** scaledMinIntervalMs as spec.refresh.minInterval. */
export function scaledMinInterval(timeScale: number, slackMs = 100): string {
  return `${String(scaledMinIntervalMs(timeScale, slackMs))}ms`;
}

/** The refresh-token requests in a simulator's log, in order of arrival. */
export function refreshRequests(sim: ExactOnlineSimulator): ExactRequest[] {
  return sim.requests().filter((r) => r.endpoint === 'token' && r.grantType === 'refresh_token');
}

/**
 * Refresh requests that did not present the refresh token the request before them was issued:
 * empty when a client moved along its chain one token at a time, each presented once.
 */
export function offChain(refreshes: readonly ExactRequest[]): ExactRequest[] {
  return refreshes.filter((r, i) => {
    const before = refreshes[i - 1];
    return r.presentation !== 1 || (before !== undefined && r.generation !== before.issued);
  });
}

function randomBase32(length: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => BASE32[b % 32] ?? 'A').join('');
}

/** The simulator's field names and form ids, as a connection must name them (the preset has none). */
export function exactFormProfile(sim: ExactOnlineSimulator) {
  return {
    loginFormSelector: 'form#LoginForm',
    usernameField: sim.fields.username,
    passwordField: sim.fields.password,
    otpFormSelector: 'form#TotpForm',
    otpField: sim.fields.totp,
  };
}

export class ExactOnlineFixture {
  readonly clientSecret = canary('exact-client-secret');
  readonly password = canary('exact-password');
  readonly totpSecret = randomBase32(32);
  private readonly simulators: ExactOnlineSimulator[] = [];
  private readonly admin: k8s.KubeConfig;
  private readonly namespace: string;

  constructor(admin: k8s.KubeConfig, namespace: string) {
    this.admin = admin;
    this.namespace = namespace;
  }

  /** The client Secret 'client' and the login Secret 'exact-user' in the namespace. */
  async createSecrets(): Promise<void> {
    await createSecret(this.admin, this.namespace, 'client', { client_secret: this.clientSecret });
    await createSecret(this.admin, this.namespace, 'exact-user', {
      username: 'alice@example.test',
      password: this.password,
      totp: `otpauth://totp/Exact:alice?secret=${this.totpSecret}&issuer=Exact&period=30&digits=6&algorithm=SHA1`,
    });
  }

  /** The login of a connection's spec.recovery, through the code flow. */
  recoveryLogin(sim: ExactOnlineSimulator, maxAttemptsPerHour = 3) {
    return {
      login: {
        flow: 'code',
        redirectURI: EXACT_REDIRECT_URI,
        usernameRef: { name: 'exact-user' },
        passwordRef: { name: 'exact-user' },
        totpSecretRef: { name: 'exact-user' },
        form: exactFormProfile(sim),
        maxAttemptsPerHour,
      },
    };
  }

  async simulator(timeScale: number, behaviour: ExactOnlineBehaviour = {}): Promise<ExactOnlineSimulator> {
    const sim = await startExactOnlineSimulator({
      timeScale,
      clientId: 'operator',
      clientSecret: this.clientSecret,
      username: 'alice@example.test',
      password: this.password,
      totpSecret: this.totpSecret,
      redirectUris: [EXACT_REDIRECT_URI],
      ...behaviour,
    });
    this.simulators.push(sim);
    return sim;
  }

  /** Stops a simulator whose test is over, so that the connection's traffic ends with it. */
  async closeSimulator(sim: ExactOnlineSimulator): Promise<void> {
    this.simulators.splice(this.simulators.indexOf(sim), 1);
    await sim.close();
  }

  async close(): Promise<void> {
    await Promise.all(this.simulators.map((s) => s.close()));
  }

  /**
   * A chain seeded at the simulator, handed to a new exact-online connection once the floor since
   * the seed's issue has passed (a seed from a login long ago, as in real life; a fresh one would be
   * refused as too early on the first refresh).
   */
  async seededConnection(
    sim: ExactOnlineSimulator,
    name: string,
    timeScale: number,
    spec: { refresh: Record<string, unknown>; extra?: Record<string, unknown> },
  ): Promise<void> {
    const seededAt = Date.now();
    const seed = sim.seedChain();
    await createSecret(this.admin, this.namespace, `${name}-seed`, { refresh_token: seed.refreshToken });
    const floor = EXACT_FLOOR_MS * timeScale;
    await waitFor(
      'the floor since the seed to pass',
      () => Date.now() >= seededAt + floor + 100,
      floor + 5_000,
    );
    await createConnection(
      this.admin,
      connection(this.namespace, name, '', {
        provider: {
          issuerURL: undefined,
          preset: 'exact-online',
          tokenURL: sim.tokenEndpoint,
          authorizationURL: sim.authorizationEndpoint,
        },
        refresh: spec.refresh,
        ...(spec.extra !== undefined ? { spec: spec.extra } : {}),
      }),
    );
  }

  status(name: string): Promise<ConnectionStatus> {
    return getConnectionStatus(this.admin, this.namespace, name);
  }

  /** Polls the connection's status every 100 ms until `check` holds. */
  until(
    name: string,
    what: string,
    check: (s: ConnectionStatus) => boolean,
    timeoutMs?: number,
  ): Promise<ConnectionStatus> {
    return untilStatus(this.admin, this.namespace, name, what, check, timeoutMs);
  }
}
