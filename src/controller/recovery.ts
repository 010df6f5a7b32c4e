// The recovery login: starts a new chain (or, in implicit mode, fetches the next access token) by
// logging in with username, password and a generated TOTP code. The decision whether a login may be
// tried at all is a pure function of the status (attempt budget, blocked credentials) so it survives
// restarts and leader changes.
import type { OAuthConnection, OAuthConnectionStatus } from '../api/v1alpha1.ts';
import type { Clock } from '../kube/clock.ts';
import {
  parseTotpSecret,
  TokenError,
  TotpGenerator,
  type OAuthClient,
  type ResolvedEndpoints,
  type TokenSet,
  type TotpSecret,
} from '../oauth/index.ts';
import { formProfileFor } from '../providers/configure.ts';
import type { ResolvedInputs } from './inputs.ts';

const HOUR_MS = 3_600_000;
export const DEFAULT_MAX_ATTEMPTS_PER_HOUR = 4;

export interface LoginGate {
  allowed: boolean;
  /** Attempt times to keep in status (the last hour's). */
  attempts: string[];
  reason?: string;
  message?: string;
  /** When a login may be tried again, when it may not now. */
  retryAtMs?: number;
}

/** The login attempts status records within the last hour, oldest first. */
export function recentLoginAttempts(status: OAuthConnectionStatus | undefined, nowMs: number): string[] {
  return (status?.loginAttempts ?? []).filter((t) => Date.parse(t) > nowMs - HOUR_MS).sort();
}

/**
 * Whether a recovery login may be tried now: at most maxAttemptsPerHour in a rolling hour, and never
 * again with credentials the provider rejected, until they change or the hour since passes.
 */
export function loginGate(
  status: OAuthConnectionStatus | undefined,
  maxAttemptsPerHour: number | undefined,
  credentialsVersion: string,
  nowMs: number,
): LoginGate {
  const attempts = recentLoginAttempts(status, nowMs);
  const max = maxAttemptsPerHour ?? DEFAULT_MAX_ATTEMPTS_PER_HOUR;
  const lastAttemptMs = attempts.length > 0 ? Date.parse(attempts[attempts.length - 1] ?? '') : undefined;
  if (status?.loginBlockedCredentials === credentialsVersion && lastAttemptMs !== undefined) {
    return {
      allowed: false,
      attempts,
      reason: 'LoginFailed',
      message:
        'the provider rejected the username or password; no further login until the credentials Secret changes or an hour has passed',
      retryAtMs: lastAttemptMs + HOUR_MS,
    };
  }
  if (attempts.length >= max) {
    const oldest = Date.parse(attempts[0] ?? '');
    return {
      allowed: false,
      attempts,
      reason: 'LoginAttemptsExhausted',
      message: `${attempts.length} recovery logins in the last hour reached spec.recovery.login.maxAttemptsPerHour (${max})`,
      retryAtMs: oldest + HOUR_MS,
    };
  }
  return { allowed: true, attempts };
}

export interface RecoveryOptions {
  oauth: OAuthClient;
  clock: Clock;
  /** The whole login walk's time limit (--login-deadline); default the OAuth layer's (2 min). */
  loginDeadlineMs?: number;
}

export type RecoveryResult = TokenSet & { flow: 'code' | 'implicit' | 'direct' };

export class RecoveryLogin {
  private readonly options: RecoveryOptions;
  /** One generator for the process: a code handed out once is never handed out again. */
  readonly totp: TotpGenerator;

  constructor(options: RecoveryOptions) {
    this.options = options;
    this.totp = new TotpGenerator({ clock: options.clock });
  }

  parseSecret(inputs: ResolvedInputs): TotpSecret | undefined {
    const raw = inputs.login?.totpSecret;
    if (raw === undefined) return undefined;
    try {
      return parseTotpSecret(raw, inputs.preset.totp ?? {});
    } catch (err) {
      // The status names the field to fix; the parser's message never quotes the secret.
      if (err instanceof TokenError) {
        throw new TokenError({
          code: err.code,
          reason: err.reason,
          message: `spec.recovery.login.totpSecretRef: ${err.message}`,
        });
      }
      throw err;
    }
  }

  /**
   * Logs in and returns the tokens; throws TokenError (login reasons or token endpoint classes).
   * `signal` (the reconcile's) aborts every request and the wait for a TOTP step.
   */
  async login(
    connection: OAuthConnection,
    inputs: ResolvedInputs,
    endpoints: ResolvedEndpoints,
    lastTotpStep: number | undefined,
    signal?: AbortSignal,
  ): Promise<{ tokens: RecoveryResult; totpStep?: number }> {
    const login = connection.spec.recovery?.login;
    const credentials = inputs.login;
    if (!login || !credentials) throw new Error('recovery login is not configured');
    const secret = this.parseSecret(inputs);
    // A code another replica handed out (persisted in the state) is never handed out again here.
    if (secret && lastTotpStep !== undefined) this.totp.markUsed(secret, lastTotpStep);
    let usedStep: number | undefined;
    const nextCode = async (walkSignal: AbortSignal | undefined = signal): Promise<string> => {
      if (!secret)
        throw new TokenError({
          code: 'configuration',
          reason: 'LoginFormUnexpected',
          message:
            'recovery login: the provider asked for a TOTP code but spec.recovery.login.totpSecretRef is not set',
        });
      const code = await this.totp.next(secret, {
        minRemainingMs: 3_000,
        ...(walkSignal !== undefined ? { signal: walkSignal } : {}),
      });
      usedStep = code.step;
      return code.code;
    };

    if (login.flow === 'direct') {
      const otp = secret ? await nextCode() : undefined;
      const tokens = await this.options.oauth.requestTokens(
        inputs.client,
        endpoints,
        {
          type: 'password',
          username: credentials.username,
          password: credentials.password,
          ...(otp ? { otp } : {}),
        },
        signal,
      );
      return {
        tokens: { ...tokens, flow: 'direct' },
        ...(usedStep !== undefined ? { totpStep: usedStep } : {}),
      };
    }

    if (!endpoints.authorizationEndpoint) {
      throw new TokenError({
        code: 'configuration',
        reason: 'MissingAuthorizationEndpoint',
        message:
          'spec.provider.authorizationURL: the login flow needs an authorization endpoint (or an issuerURL that announces one)',
      });
    }
    if (!login.redirectURI) {
      throw new TokenError({
        code: 'configuration',
        reason: 'MissingRedirectURI',
        message:
          'spec.recovery.login.redirectURI: the code and implicit flows need the redirect URI registered for the client',
      });
    }
    const result = await this.options.oauth.login({
      authorizationEndpoint: endpoints.authorizationEndpoint,
      clientID: connection.spec.clientID,
      redirectURI: login.redirectURI,
      flow: login.flow,
      ...(connection.spec.scopes ? { scopes: connection.spec.scopes } : {}),
      username: credentials.username,
      password: credentials.password,
      totp: nextCode,
      form: formProfileFor(inputs.preset, login.form),
      ...(this.options.loginDeadlineMs !== undefined ? { deadlineMs: this.options.loginDeadlineMs } : {}),
      ...(signal !== undefined ? { signal } : {}),
    });
    if (result.flow === 'implicit') {
      return {
        tokens: {
          flow: 'implicit',
          accessToken: result.accessToken,
          tokenType: result.tokenType,
          ...(result.expiresInSec !== undefined ? { expiresInSec: result.expiresInSec } : {}),
        },
        ...(usedStep !== undefined ? { totpStep: usedStep } : {}),
      };
    }
    const tokens = await this.options.oauth.requestTokens(
      inputs.client,
      endpoints,
      {
        type: 'authorization_code',
        code: result.code,
        codeVerifier: result.codeVerifier,
        redirectURI: result.redirectURI,
      },
      signal,
    );
    return { tokens: { ...tokens, flow: 'code' }, ...(usedStep !== undefined ? { totpStep: usedStep } : {}) };
  }
}
