// The steps of the chain engine that log in: starting a chain with the password grant's own
// credentials (a preset whose password starts a chain: FOLIO), and the recovery login of
// spec.recovery.login. Both are claimed and persisted like a refresh and report the attempt before
// it is made; they act on the engine through EngineSteps (engine.ts).
import { isTokenError, type ResolvedEndpoints, type TokenGrant, type TokenSet } from '../../oauth/index.ts';
import { failureOf } from '../failures.ts';
import type { ResolvedInputs } from '../inputs.ts';
import { recentLoginAttempts, type RecoveryLogin } from '../recovery.ts';
import type { ChainState } from '../state-store.ts';
import { onRecovering, type Failure } from '../status.ts';
import { brokenCause } from './decide.ts';
import type { EngineResult, EngineSteps } from './engine.ts';
import { afterFailedLogin, afterLogin } from './transitions.ts';

/** The password grant of the connection's spec.grant credentials. */
export function passwordGrant(inputs: ResolvedInputs): TokenGrant {
  return { type: 'password', username: inputs.username ?? '', password: inputs.password ?? '' };
}

/**
 * Starts a chain by logging in with the password grant's credentials (a preset whose password
 * starts a chain: FOLIO), claimed and persisted like a refresh. A chain that broke is reported
 * before the login as a recovery login reports it (ChainBroken and Recovering, the attempt, a
 * Warning Event). A rejected password is LoginFailed and blocks further logins until the
 * credentials Secrets change (decide.ts, passwordBlocked).
 */
export async function startChain(engine: EngineSteps, why: Failure): Promise<EngineResult | 'again'> {
  const { clock, metrics } = engine.deps;
  const { handle, inputs, connection, log } = engine.ctx;
  const base = engine.chainState();
  const restart = why.reason !== 'NoRefreshToken';
  const endpoints = await engine.deps.oauth.resolveEndpoints(
    inputs.endpoints(base.geolocation),
    engine.ctx.signal,
  );
  // Before the attempt is recorded or anything claimed (see hostAdmission).
  const host = engine.hostAdmission(endpoints.tokenEndpoint);
  if (!('slot' in host)) return { requeueAfterMs: host.retryAfterMs };
  if (restart) {
    const nowMs = clock.now();
    const broken = base.broken;
    const cause =
      broken !== undefined
        ? brokenCause(base, broken.reason, broken.detail)
        : `the refresh-token chain cannot continue (${why.reason})`;
    const recovering = onRecovering({
      previous: engine.ctx.status.current,
      generation: connection.metadata.generation,
      nowMs,
      why: { ...why, message: `${cause}; logging in with spec.grant's credentials to start a new one` },
      attempts: recentLoginAttempts(engine.ctx.status.current, nowMs),
      chainBroken: true,
    });
    await host.slot.releaseOnError(engine.ctx.status.write(recovering.status, recovering.event));
  }
  log.info({ reason: why.reason }, 'logging in to start a refresh-token chain');
  const claim = await host.slot.releaseOnError(handle.claim(base, engine.ctx.identity, undefined));
  const claimed: ChainState = { ...base, claim };
  let tokens: TokenSet;
  try {
    tokens = await host.slot.run(() =>
      engine.deps.oauth.requestTokens(inputs.client, endpoints, passwordGrant(inputs), engine.ctx.signal),
    );
  } catch (err) {
    if (!isTokenError(err)) throw err;
    const rejected = err.reason === 'InvalidCredentials';
    const failure = { ...failureOf(err), ...(rejected ? { reason: 'LoginFailed' } : {}) };
    if (restart) metrics.recoveryLogins.inc({ ...engine.labels, result: failure.reason });
    log.warn({ code: err.code, reason: err.reason, httpStatus: err.httpStatus }, 'login failed');
    const released: ChainState = { ...claimed };
    delete released.claim;
    const persisted = await engine.persistOrConflict(released, claim.id, claim.startedAtMs);
    if (persisted !== undefined) return persisted;
    return engine.fail(failure, { blockCredentials: rejected ? inputs.passwordVersion : undefined });
  }
  const next = afterLogin(
    handle.state,
    connection.metadata.uid ?? '',
    { ...tokens, flow: 'direct' },
    {
      nowMs: clock.now(),
      assumedLifetimeMs: inputs.assumedLifetimeMs,
      statusGeneration: engine.ctx.status.current.chainGeneration,
    },
  );
  const persisted = await engine.persistOrConflict(next, claim.id, claim.startedAtMs);
  if (persisted !== undefined) return persisted;
  if (restart) metrics.recoveryLogins.inc({ ...engine.labels, result: 'success' });
  engine.ctx.status.record({
    type: 'Normal',
    reason: restart ? 'RecoveryLoginSucceeded' : 'LoggedIn',
    message: `logged in with spec.grant's credentials and started refresh-token chain ${next.chainGeneration}`,
  });
  log.info({ chainGeneration: next.chainGeneration }, 'logged in; refresh-token chain started');
  return engine.publish(true, endpoints.tokenEndpoint, true);
}

/**
 * Starts a new chain (or, in implicit mode, gets the next access token) by logging in. The attempt
 * is recorded in status before it is made, and the login is claimed and persisted like a refresh.
 */
export async function recoveryLogin(
  engine: EngineSteps,
  attempts: string[],
  why: Failure,
): Promise<EngineResult | 'again'> {
  const { clock, metrics } = engine.deps;
  const { handle, inputs, connection, log } = engine.ctx;
  const login = connection.spec.recovery?.login;
  if (login === undefined || inputs.login === undefined)
    throw new Error('recover without spec.recovery.login');
  // A TOTP secret that cannot be read is the spec's mistake: found before an attempt is counted or
  // a claim taken, so it never spends the hour's logins, and reported as such (not as a failed login).
  let secret: ReturnType<typeof engine.deps.recovery.parseSecret>;
  try {
    secret = engine.deps.recovery.parseSecret(inputs);
  } catch (err) {
    if (!isTokenError(err)) throw err;
    return engine.fail(failureOf(err));
  }
  const chainBroken = why.reason !== 'NoRefreshToken' && why.reason !== 'LoginRequired';
  const recovering = onRecovering({
    previous: engine.ctx.status.current,
    generation: connection.metadata.generation,
    nowMs: clock.now(),
    why,
    attempts,
    chainBroken,
  });
  await engine.ctx.status.write(recovering.status, recovering.event);
  log.info({ flow: login.flow, reason: why.reason }, 'recovery login');

  const base = engine.chainState();
  const claim = await handle.claim(base, engine.ctx.identity, undefined);
  const claimed: ChainState = { ...base, claim };
  // Where the login's token request goes: the chain's geolocation, then the one a code 16 names.
  let geolocation = base.geolocation;
  let endpoints: ResolvedEndpoints;
  let result: Awaited<ReturnType<RecoveryLogin['login']>>;
  try {
    // Concur's code 16 on the password grant consumed nothing: the same login (one attempt, one
    // claim) sends its token request once more at the geolocation named, in this reconcile, as a
    // refresh would (engine.followRelocation allows one move, so this runs at most twice). Only the
    // token endpoint moves (inputs.endpoints). A TOTP code, where one is sent, is a new one: the
    // generator never hands out a code twice. A code flow would walk its login pages again before
    // exchanging a new code there; no preset that relocates offers one (Concur: direct only).
    for (;;) {
      endpoints = await engine.deps.oauth.resolveEndpoints(inputs.endpoints(geolocation), engine.ctx.signal);
      try {
        result = await engine.deps.recovery.login(
          connection,
          inputs,
          endpoints,
          base.totpLastStep,
          engine.ctx.signal,
        );
        break;
      } catch (err) {
        const there = isTokenError(err) ? engine.followRelocation(err) : undefined;
        if (there === undefined) throw err;
        geolocation = there;
      }
    }
  } catch (err) {
    if (!isTokenError(err)) throw err;
    const failure = failureOf(err, 'login');
    metrics.recoveryLogins.inc({ ...engine.labels, result: failure.reason });
    log.warn(
      { reason: failure.reason, loginReason: err.reason, httpStatus: err.httpStatus },
      'recovery login failed',
    );
    // The code sent (if any) is spent even though the login failed; the claim is released. A
    // geolocation the provider named (followed or not) is where the next attempt goes.
    const step = secret ? engine.deps.recovery.totp.lastUsedStep(secret) : undefined;
    const named = err.code === 'relocate' ? (err.geolocation ?? geolocation) : geolocation;
    const released = { ...afterFailedLogin(withGeolocation(claimed, named), step) };
    delete released.claim;
    const persisted = await engine.persistOrConflict(released, claim.id, claim.startedAtMs);
    if (persisted !== undefined) return persisted;
    return engine.fail(failure, {
      blockCredentials: failure.reason === 'LoginFailed' ? inputs.login.version : undefined,
    });
  }

  // A geolocation in the answer (Concur's) replaces the one followed (afterLogin).
  const next = afterLogin(
    withGeolocation(claimed, geolocation),
    connection.metadata.uid ?? '',
    result.tokens,
    {
      nowMs: clock.now(),
      assumedLifetimeMs: inputs.assumedLifetimeMs,
      statusGeneration: engine.ctx.status.current.chainGeneration,
      ...(result.totpStep !== undefined ? { totpStep: result.totpStep } : {}),
    },
  );
  const persisted = await engine.persistOrConflict(next, claim.id, claim.startedAtMs);
  if (persisted !== undefined) return persisted;
  metrics.recoveryLogins.inc({ ...engine.labels, result: 'success' });
  const implicitContinuing = result.tokens.flow === 'implicit' && base.implicit === true;
  if (!implicitContinuing) {
    engine.ctx.status.record({
      type: 'Normal',
      reason: 'RecoveryLoginSucceeded',
      message:
        result.tokens.flow === 'implicit'
          ? 'logged in (implicit flow): access tokens are fetched by logging in again before each expiry'
          : `logged in (${result.tokens.flow} flow) and started refresh-token chain ${next.chainGeneration}`,
    });
  }
  log.info({ flow: result.tokens.flow, chainGeneration: next.chainGeneration }, 'recovery login succeeded');
  // An implicit login asks no token endpoint: status keeps naming the last one that answered.
  return engine.publish(true, result.tokens.flow === 'implicit' ? undefined : endpoints.tokenEndpoint, true);
}

/** The state with the chain's geolocation set to `geolocation` (unchanged when that is unknown). */
function withGeolocation(state: ChainState, geolocation: string | undefined): ChainState {
  return geolocation === undefined || geolocation === state.geolocation ? state : { ...state, geolocation };
}
