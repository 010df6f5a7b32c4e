// The token liveness probe step of the chain engine (spec.probe): one authenticated GET of the
// probe URL with the current access token, whose verdict the next decision takes.
import { isTokenError, type ProbeResult, type ProbeVerdict } from '../../oauth/index.ts';
import { failureOf } from '../failures.ts';
import { fingerprint } from '../state-store.ts';
import type { EngineResult, EngineSteps } from './engine.ts';

/**
 * The token liveness probe: GET spec.probe's URL with the current access token. A 401 makes the
 * next decision refresh at once (and, on a broken chain, recover). A 401 for a token that a
 * probe-triggered refresh just brought blames the probe URL instead, so a wrong URL cannot turn
 * into a refresh every interval. A URL the endpoint policy refuses is a configuration failure.
 */
export async function probeToken(engine: EngineSteps): Promise<EngineResult | ProbeVerdict> {
  const { handle, inputs, log, connection } = engine.ctx;
  const state = handle.state;
  const settings = inputs.probe;
  if (settings === undefined || state?.accessToken === undefined)
    throw new Error('probe without spec.probe or an access token');
  const uid = connection.metadata.uid ?? '';
  const { signal } = engine.ctx;
  let result: ProbeResult;
  try {
    const endpoints = await engine.deps.oauth.resolveEndpoints(inputs.endpoints(state.geolocation), signal);
    const url = settings.urlFor(endpoints);
    // The probe's host counts against --max-concurrent-per-host, but a probe only takes a slot that
    // is free, never a place in line that a token request waits for. Turned away, it is put off until
    // the host should have a slot (the limiter's estimate) and the decision goes on without a
    // verdict: the output Secret is still written, not held back by a busy API host.
    const host = engine.deps.hostLimiter.tryAcquireIfFree(new URL(url).host);
    if (!('slot' in host)) {
      engine.ctx.probes.putOff(uid, engine.deps.clock.now() + host.retryAfterMs);
      log.debug({ retryAfterMs: host.retryAfterMs }, 'the probe host is busy; probe put off');
      return 'inconclusive';
    }
    engine.ctx.probes.probed(uid, engine.deps.clock.now());
    const accessToken = state.accessToken;
    result = await host.slot.run(() => engine.deps.oauth.probe(url, accessToken, signal));
  } catch (err) {
    // A probe that failed is done for this interval all the same: no retry loop on a bad URL.
    engine.ctx.probes.probed(uid, engine.deps.clock.now());
    if (!isTokenError(err)) throw err;
    // A probe URL the preset cannot name (ProbeURLUnknown) says so itself, field included; anything
    // else is a URL the endpoint policy refused.
    return engine.fail(
      err.reason === 'ProbeURLUnknown'
        ? { ...failureOf(err), kind: 'configuration' }
        : {
            ...failureOf(err),
            kind: 'configuration',
            reason: 'ProbeRefused',
            message: `spec.probe.url: ${err.message}`,
          },
    );
  }
  // The API's rate limit asks for a pause (a 429, or the day's budget down to the consumers' share):
  // the next probe waits for it rather than spend calls the consumers need.
  if (result.standBackMs !== undefined) {
    engine.ctx.probes.putOff(uid, engine.deps.clock.now() + result.standBackMs);
    log.info(
      { standBackMs: result.standBackMs, httpStatus: result.status },
      'the API asks the probe to wait',
    );
  }
  let verdict = result.verdict;
  if (verdict === 'rejected' && engine.ctx.probes.isFreshFromRejection(uid, fingerprint(state.accessToken))) {
    verdict = 'inconclusive';
    engine.ctx.status.record({
      type: 'Warning',
      reason: 'ProbeRejectsFreshToken',
      message:
        'spec.probe.url answered 401 to an access token the provider had just issued; the probe is ignored until the token changes: check that the URL accepts this token',
    });
  } else if (verdict === 'rejected') {
    engine.ctx.probes.rejected(uid, fingerprint(state.accessToken));
    engine.ctx.status.record({
      type: 'Warning',
      reason: 'ProbeRejected',
      message: 'spec.probe.url answered 401 to the current access token: refreshing now',
    });
  }
  // A 403 is inconclusive like any answer but 401, yet it repeats every interval for as long as the
  // token lacks the endpoint's scope: the probe then can never notice a dead chain, which a person
  // should learn without reading debug logs (Keycloak's userinfo answers 403 to a token without openid).
  if (engine.ctx.probes.newlyForbidden(uid, result.status)) {
    engine.ctx.status.record({
      type: 'Warning',
      reason: 'ProbeForbidden',
      message:
        'spec.probe.url answered 403 to the current access token, so the probe cannot notice a revoked chain: the token lacks a scope or permission the endpoint requires (OIDC userinfo, the default of the keycloak preset, needs the openid scope: add openid to spec.scopes and to the login that made the seed)',
    });
  }
  engine.deps.metrics.probes.inc({ ...engine.labels, verdict });
  log.info({ verdict, httpStatus: result.status }, 'token probe');
  return verdict;
}
