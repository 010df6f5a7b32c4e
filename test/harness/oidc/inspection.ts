// The test OpenID provider's inspection API (TestOidcInspection in types.ts): the refresh log, written
// by Koa middleware around the token endpoint, and what tests read or break on purpose in storage.
// Only the test process can call it; everything a client needs goes over HTTP.
import type { KoaLikeContext, KoaLikeMiddleware } from '../fault-proxy.ts';
import type { LoginInteraction } from './interaction.ts';
import { classify, type RequestRecord, type RotationContext } from './storage.ts';
import type { RefreshLogEntry, TestOidcInspection } from './types.ts';

function oauthErrorOf(body: unknown): string | undefined {
  if (typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'string') {
    return body.error;
  }
  return undefined;
}

function paramsOf(ctx: KoaLikeContext): Record<string, unknown> {
  // oidc-provider defines ctx.oidc (with the parsed parameters) on the contexts it routes.
  const oidc = (ctx as KoaLikeContext & { oidc?: { params?: Record<string, unknown> } }).oidc;
  return oidc?.params ?? {};
}

/**
 * Middleware that runs each token request with a RequestRecord the adapter fills in, and logs every
 * refresh-token grant request in `log` when it completes.
 */
export function refreshLogMiddleware(
  rotation: RotationContext,
  isTokenRequest: (ctx: KoaLikeContext) => boolean,
  log: RefreshLogEntry[],
): KoaLikeMiddleware {
  return async (ctx, next) => {
    if (!isTokenRequest(ctx)) {
      await next();
      return;
    }
    const at = Date.now();
    const record: RequestRecord = { revokedFamily: false };
    try {
      await rotation.requests.run(record, next);
    } finally {
      const params = paramsOf(ctx);
      if (record.presented !== undefined || params.grant_type === 'refresh_token') {
        // A request rejected before the lookup (e.g. invalid_client) left the token as it was.
        const token = params.refresh_token;
        const presented =
          record.presented ??
          (typeof token === 'string'
            ? classify(rotation.store.get('RefreshToken', token), rotation.graceMs, Date.now())
            : 'unknown');
        const error = ctx.status >= 400 ? oauthErrorOf(ctx.body) : undefined;
        log.push({
          at,
          presented,
          status: ctx.status,
          ...(error === undefined ? {} : { error }),
          revokedFamily: record.revokedFamily,
        });
      }
    }
  };
}

export interface InspectedState {
  rotation: RotationContext;
  refreshLog: readonly RefreshLogEntry[];
  serverErrors: readonly Error[];
  login: LoginInteraction | undefined;
  introspection: { endpoint: string; clientId: string; secret: string };
}

export function inspection(state: InspectedState): TestOidcInspection {
  const { rotation, introspection } = state;
  const { store, graceMs } = rotation;
  return {
    reuseCount() {
      return state.refreshLog.filter((e) => e.presented === 'reused').length;
    },

    refreshLog() {
      // Entries are recorded on completion; report them in order of arrival.
      return state.refreshLog.map((e) => ({ ...e })).sort((a, b) => a.at - b.at);
    },

    refreshTokenState(token) {
      const presented = classify(store.get('RefreshToken', token), graceMs, Date.now());
      if (presented === 'unknown' || presented === 'current') return presented;
      return 'consumed';
    },

    async isAccessTokenActive(token) {
      const credentials = `${introspection.clientId}:${introspection.secret}`;
      const res = await fetch(introspection.endpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(credentials).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
      });
      if (!res.ok) throw new Error(`introspection answered ${res.status}: ${await res.text()}`);
      const body = (await res.json()) as { active?: unknown; exp?: unknown };
      return body.active === true && (typeof body.exp !== 'number' || body.exp * 1000 > Date.now());
    },

    revokeFamilyOf(refreshToken) {
      const grantId = store.get('RefreshToken', refreshToken)?.payload.grantId;
      if (!grantId) return Promise.resolve(false);
      store.revokeGrant(grantId);
      return Promise.resolve(true);
    },

    revokeAllGrants() {
      for (const grantId of store.grantIds()) store.revokeGrant(grantId);
      return Promise.resolve();
    },

    serverErrors() {
      return [...state.serverErrors];
    },

    totpCodesReceived() {
      return (state.login?.codes ?? []).map((e) => ({ ...e }));
    },

    loginAttempts() {
      return (state.login?.attempts ?? []).map((e) => ({ ...e }));
    },
  };
}
