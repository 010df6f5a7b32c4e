// Structured JSON logs. Secrets are kept out by construction (the code never passes a token, secret
// or password to the logger); the redaction list is a second line of defence for fields that could
// carry one if a future change slipped.
import { ApiException } from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACTED_FIELDS = [
  'accessToken',
  'refreshToken',
  'access_token',
  'refresh_token',
  'id_token',
  'clientSecret',
  'client_secret',
  'password',
  'otp',
  'totp',
  'code_verifier',
  'authorization',
  'Authorization',
  'cookie',
  'Cookie',
  'headers.authorization',
  'headers.cookie',
  'data',
  'stringData',
  'body',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { component: 'oauth-token-operator' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...REDACTED_FIELDS, ...REDACTED_FIELDS.map((f) => `*.${f}`)], censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? process.stdout,
  );
}

/** The part of an error that may be logged: its class, stable code and public message. */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof ApiException) {
    // Its message repeats the whole response with headers; the status line says what matters.
    const status = parseStatus(err.body);
    return { errorName: 'ApiException', httpStatus: err.code, error: status ?? `HTTP ${String(err.code)}` };
  }
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      errorName: err.name,
      ...(typeof code === 'string' ? { errorCode: code } : {}),
      error: err.message,
    };
  }
  return { error: String(err) };
}

function parseStatus(body: unknown): string | undefined {
  try {
    const status = (typeof body === 'string' ? JSON.parse(body) : body) as {
      reason?: unknown;
      message?: unknown;
    };
    return typeof status.message === 'string' ? `${String(status.reason)}: ${status.message}` : undefined;
  } catch {
    return undefined;
  }
}
