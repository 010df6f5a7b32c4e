// TOTP (RFC 6238) for the recovery login: parsing the authenticator secret a Secret holds, and a
// generator that never hands out the same code twice for one secret.
//
// The secret is either raw base32 (what an authenticator app shows under "enter a setup key";
// spaces, hyphens, lower case and '=' padding are tolerated) or the otpauth://totp/… URI that the
// enrolment QR code holds, whose algorithm/digits/period parameters then take precedence over the
// preset's profile. @scure/base decodes the base32 and @otplib/uri reads the URI (both are what
// otplib itself uses); codes are computed by otplib v13 from the decoded key bytes.
//
// Verifiers must not accept a code twice (RFC 6238 §5.2; Keycloak rejects reuse by default), so a
// client that sends the same code twice fails the login and burns one of its bounded attempts.
// TotpGenerator remembers, per secret (by a SHA-256 fingerprint, in memory), the last time step it
// handed out; when asked again within that step it waits, on the injected clock, for the next one.
// Share ONE generator per process. The memory does not survive a restart: a process restarted
// within the same step as its last login could repeat a code; callers that persist
// lastUsedStep()/markUsed() close that gap.
//
// Nothing here ever puts the secret, the key or a code into an error message.
import { createHash } from 'node:crypto';
import {
  InvalidParameterError,
  MissingParameterError,
  parse as parseOtpauthUri,
  type OTPAuthURI,
} from '@otplib/uri';
import { base32 } from '@scure/base';
import { createGuardrails, generateSync, type HashAlgorithm } from 'otplib';
import { sleep, systemClock, type Clock } from '../kube/clock.ts';
import { TokenError } from './errors.ts';

export type TotpAlgorithm = 'SHA1' | 'SHA256' | 'SHA512';

export interface TotpParameters {
  algorithm: TotpAlgorithm;
  /** 6 or 8. */
  digits: number;
  /** Time step in seconds (1 … 300; see MAX_PERIOD_SEC). */
  periodSec: number;
}

/** A parsed authenticator secret. Holds key material: keep it in memory only, never log it. */
export interface TotpSecret extends TotpParameters {
  readonly key: Uint8Array;
  /** SHA-256 over key and parameters, hex; identifies the secret in the generator's memory. */
  readonly fingerprint: string;
}

export const RFC6238_DEFAULTS: Readonly<TotpParameters> = { algorithm: 'SHA1', digits: 6, periodSec: 30 };

/** 80-bit keys (16 base32 characters) are common in the field although RFC 4226 asks for 128. */
export const MIN_KEY_BYTES = 10;
export const MAX_KEY_BYTES = 64;
/**
 * The longest time step accepted. A login that needs a fresh code (the previous one was handed out,
 * or was rejected and is retried with the next) waits for the next step, holding a reconcile worker
 * for up to one period: five minutes is already long, the hour the URI format allows would stall a
 * worker for an hour. Authenticators and providers use 30 s, rarely 60 s.
 */
export const MAX_PERIOD_SEC = 300;
const MAX_SECRET_TEXT = 4096;

const GUARDRAILS = createGuardrails({ MIN_SECRET_BYTES: MIN_KEY_BYTES, MAX_SECRET_BYTES: MAX_KEY_BYTES });

/** @otplib/uri reports the algorithm in otplib's lower-case names. */
const ALGORITHM_OF: Readonly<Record<HashAlgorithm, TotpAlgorithm>> = {
  sha1: 'SHA1',
  sha256: 'SHA256',
  sha512: 'SHA512',
};

function invalid(message: string): TokenError {
  return new TokenError({
    code: 'configuration',
    reason: 'InvalidTotpSecret',
    message: `TOTP secret: ${message}`,
  });
}

/**
 * Key bytes from base32 text. Authenticator apps show keys in lower case or in groups, with or
 * without '=' padding, while @scure/base's RFC 4648 codec reads only upper case in whole 8-character
 * groups: hence the clean-up. Its errors quote the offending character, so none reaches a message.
 */
function decodeKey(text: string): Uint8Array {
  const clean = text
    .replace(/[\s-]+/g, '')
    .toUpperCase()
    .replace(/=+$/, '');
  if (clean === '') throw invalid('is empty');
  try {
    return base32.decode(clean.padEnd(Math.ceil(clean.length / 8) * 8, '='));
  } catch {
    throw invalid('is not valid base32 (RFC 4648 letters A-Z and digits 2-7, encoding whole bytes)');
  }
}

/**
 * Reads an otpauth://totp/… URI (https://github.com/google/google-authenticator/wiki/Key-Uri-Format).
 * Only the error's class is used: @otplib/uri's messages repeat the URI or a parameter value.
 */
function readUri(text: string): OTPAuthURI {
  try {
    // Scheme and type are compared without regard to case (RFC 3986 §3.1 for the scheme; the type
    // stands where a URL has its host); @otplib/uri compares both verbatim.
    return parseOtpauthUri(text.replace(/^otpauth:\/\/[^/?#]*/i, (head) => head.toLowerCase()));
  } catch (error) {
    if (error instanceof MissingParameterError) throw invalid('otpauth URI has no secret parameter');
    if (error instanceof InvalidParameterError) {
      throw invalid(
        `otpauth URI has an invalid type, algorithm, digits or period (use totp, SHA1, SHA256 or SHA512, 6 or 8 digits, 1 to ${MAX_PERIOD_SEC} s)`,
      );
    }
    throw invalid('is not a valid otpauth URI');
  }
}

function checkParameters(params: TotpParameters): void {
  if (!['SHA1', 'SHA256', 'SHA512'].includes(params.algorithm)) throw invalid('unsupported algorithm');
  if (params.digits !== 6 && params.digits !== 8) throw invalid('digits must be 6 or 8');
  if (!Number.isInteger(params.periodSec) || params.periodSec < 1 || params.periodSec > MAX_PERIOD_SEC) {
    throw invalid(`period must be a whole number of seconds from 1 to ${MAX_PERIOD_SEC}`);
  }
}

/** A TotpSecret from key bytes (for secrets that are not base32 text, and tests). */
export function totpSecretFromKey(key: Uint8Array, params: Partial<TotpParameters> = {}): TotpSecret {
  const full: TotpParameters = {
    algorithm: params.algorithm ?? RFC6238_DEFAULTS.algorithm,
    digits: params.digits ?? RFC6238_DEFAULTS.digits,
    periodSec: params.periodSec ?? RFC6238_DEFAULTS.periodSec,
  };
  checkParameters(full);
  if (key.byteLength < MIN_KEY_BYTES) throw invalid(`key is shorter than ${MIN_KEY_BYTES} bytes`);
  if (key.byteLength > MAX_KEY_BYTES) throw invalid(`key is longer than ${MAX_KEY_BYTES} bytes`);
  const fingerprint = createHash('sha256')
    .update(`${full.algorithm}/${full.digits}/${full.periodSec}/`)
    .update(key)
    .digest('hex');
  return { ...full, key: Uint8Array.from(key), fingerprint };
}

/**
 * Parses an authenticator secret: base32, or an otpauth://totp/…?secret=…&algorithm=…&digits=…&period=…
 * URI. `defaults` (the preset's TOTP profile) apply where the URI says nothing; RFC 6238's
 * SHA-1 / 6 digits / 30 s where neither does.
 * Throws TokenError 'configuration' / InvalidTotpSecret with a message that never quotes the input.
 */
export function parseTotpSecret(input: string, defaults: Partial<TotpParameters> = {}): TotpSecret {
  const text = input.trim();
  if (text === '') throw invalid('is empty');
  if (text.length > MAX_SECRET_TEXT) throw invalid('is too long');
  if (!/^otpauth:/i.test(text)) return totpSecretFromKey(decodeKey(text), defaults);

  const { type, params } = readUri(text);
  if (type !== 'totp') throw invalid('otpauth URI is not of type totp');
  return totpSecretFromKey(decodeKey(params.secret), {
    ...defaults,
    ...(params.algorithm !== undefined && { algorithm: ALGORITHM_OF[params.algorithm] }),
    ...(params.digits !== undefined && { digits: params.digits }),
    ...(params.period !== undefined && { periodSec: params.period }),
  });
}

/** The RFC 6238 time step (counter) at a wall-clock time. */
export function timeStepAt(secret: TotpParameters, epochMs: number): number {
  return Math.floor(epochMs / 1000 / secret.periodSec);
}

/** The code for one time step. Pure; knows nothing about reuse (use TotpGenerator for that). */
export function totpCodeForStep(secret: TotpSecret, step: number): string {
  try {
    return generateSync({
      secret: secret.key,
      algorithm: secret.algorithm === 'SHA1' ? 'sha1' : secret.algorithm === 'SHA256' ? 'sha256' : 'sha512',
      digits: secret.digits,
      period: secret.periodSec,
      epoch: step * secret.periodSec,
      guardrails: GUARDRAILS,
    });
  } catch {
    // otplib's messages do not quote secrets, but nothing from the library reaches a message.
    throw invalid('could not compute a code from this key');
  }
}

/** The code at a wall-clock time (RFC 6238 with T0 = 0). */
export function totpCodeAt(secret: TotpSecret, epochMs: number): string {
  return totpCodeForStep(secret, timeStepAt(secret, epochMs));
}

export interface TotpCode {
  code: string;
  /** The time step the code belongs to. */
  step: number;
  /** Wall-clock time at which the step ends (the code may still be accepted a step later). */
  stepEndsAtMs: number;
}

export interface NextCodeOptions {
  /**
   * Offset in steps added to the step the clock gives, for a provider whose clock differs from
   * ours: +1 when our clock is behind (the provider expects the next code), -1 when it is ahead.
   * Default 0. A typical use: after a "wrong code" answer whose cause may be drift, try once more
   * with +1 or -1. The no-reuse rule still holds: a step at or before the last one handed out for
   * the secret is never used, so -1 right after a code was handed out waits two steps.
   */
  driftSteps?: number;
  /**
   * Do not hand out a code with less than this much of its step left; wait for the next step
   * instead (the code may otherwise expire on the way). Default 0.
   */
  minRemainingMs?: number;
  /** Abandons a wait for the next step (rejects with the signal's reason). */
  signal?: AbortSignal;
}

interface UsedState {
  lastStep: number;
  lastCode: string;
  /** For pruning: wall-clock end of lastStep. */
  endsAtMs: number;
}

/** How long a remembered step is kept after it ended (guards against a wall clock stepped back). */
const FORGET_AFTER_MS = 60 * 60 * 1000;

export class TotpGenerator {
  private readonly clock: Clock;
  private readonly used = new Map<string, UsedState>();

  constructor(options: { clock?: Clock } = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /**
   * The next code for the secret: the current step's code unless that step (or a later one) was
   * already handed out for this secret, in which case it waits on the clock for the first unused
   * step. Concurrent callers for one secret get different steps. A code that happens to equal the
   * previous code (1 in 10^digits) is skipped too.
   */
  async next(secret: TotpSecret, options: NextCodeOptions = {}): Promise<TotpCode> {
    const drift = Math.trunc(options.driftSteps ?? 0);
    const minRemainingMs = Math.max(0, options.minRemainingMs ?? 0);
    const periodMs = secret.periodSec * 1000;
    for (;;) {
      options.signal?.throwIfAborted();
      const now = this.clock.now();
      this.prune(now);
      const clockStep = Math.floor(now / periodMs);
      const step = clockStep + drift;
      const remaining = (clockStep + 1) * periodMs - now;
      const state = this.used.get(secret.fingerprint);
      // Everything from the check to the record is synchronous: no other caller can slip in.
      if ((state === undefined || step > state.lastStep) && remaining >= minRemainingMs) {
        const code = totpCodeForStep(secret, step);
        const endsAtMs = (step - drift + 1) * periodMs;
        if (state?.lastCode !== code) {
          this.used.set(secret.fingerprint, { lastStep: step, lastCode: code, endsAtMs });
          return { code, step, stepEndsAtMs: endsAtMs };
        }
        // Same digits as the previous code: treat this step as used and move on.
        this.used.set(secret.fingerprint, { lastStep: step, lastCode: code, endsAtMs });
      }
      const last = this.used.get(secret.fingerprint)?.lastStep;
      // The wall-clock time at which the first usable step begins (in clock steps).
      const wantedClockStep = last !== undefined && step <= last ? last + 1 - drift : clockStep + 1;
      const delay = Math.max(1, wantedClockStep * periodMs - now);
      await sleep(this.clock, delay, options.signal);
    }
  }

  /** A supplier for performLogin's `totp` parameter. */
  supplier(secret: TotpSecret, options: NextCodeOptions = {}): () => Promise<string> {
    return async () => (await this.next(secret, options)).code;
  }

  /** The last step handed out for the secret, for callers that persist it across restarts. */
  lastUsedStep(secret: TotpSecret): number | undefined {
    return this.used.get(secret.fingerprint)?.lastStep;
  }

  /** Records a step as used (restored from persisted state, or used by another component). */
  markUsed(secret: TotpSecret, step: number): void {
    const state = this.used.get(secret.fingerprint);
    if (state !== undefined && state.lastStep >= step) return;
    this.used.set(secret.fingerprint, {
      lastStep: step,
      lastCode: totpCodeForStep(secret, step),
      endsAtMs: (step + 1) * secret.periodSec * 1000,
    });
  }

  /** Forgets everything (tests). */
  reset(): void {
    this.used.clear();
  }

  private prune(nowMs: number): void {
    for (const [fingerprint, state] of this.used) {
      if (state.endsAtMs + FORGET_AFTER_MS < nowMs) this.used.delete(fingerprint);
    }
  }
}
