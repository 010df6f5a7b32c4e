import { describe, expect, it } from 'vitest';
import { TokenError } from '../../src/oauth/errors.ts';
import {
  MAX_PERIOD_SEC,
  parseTotpSecret,
  timeStepAt,
  totpCodeAt,
  totpCodeForStep,
  totpSecretFromKey,
  TotpGenerator,
  type TotpAlgorithm,
} from '../../src/oauth/totp.ts';
import { FakeClock, flushMicrotasks } from '../harness/fake-clock.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET.charAt((buffer >> bits) & 31);
    }
    buffer &= 0xff;
  }
  if (bits > 0) out += ALPHABET.charAt((buffer << (5 - bits)) & 31);
  return out;
}

const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);

// RFC 6238 Appendix B: the seeds are the ASCII digits repeated to the hash's block-free key size.
const SEEDS: Record<TotpAlgorithm, Uint8Array> = {
  SHA1: ascii('12345678901234567890'),
  SHA256: ascii('12345678901234567890123456789012'),
  SHA512: ascii('1234567890123456789012345678901234567890123456789012345678901234'),
};

const RFC6238_VECTORS: [number, TotpAlgorithm, string][] = [
  [59, 'SHA1', '94287082'],
  [59, 'SHA256', '46119246'],
  [59, 'SHA512', '90693936'],
  [1111111109, 'SHA1', '07081804'],
  [1111111109, 'SHA256', '68084774'],
  [1111111109, 'SHA512', '25091201'],
  [1111111111, 'SHA1', '14050471'],
  [1111111111, 'SHA256', '67062674'],
  [1111111111, 'SHA512', '99943326'],
  [1234567890, 'SHA1', '89005924'],
  [1234567890, 'SHA256', '91819424'],
  [1234567890, 'SHA512', '93441116'],
  [2000000000, 'SHA1', '69279037'],
  [2000000000, 'SHA256', '90698825'],
  [2000000000, 'SHA512', '38618901'],
  [20000000000, 'SHA1', '65353130'],
  [20000000000, 'SHA256', '77737706'],
  [20000000000, 'SHA512', '47863826'],
];

// A 20-byte secret in base32 (what an authenticator app shows), used for the generator tests.
const SECRET_B32 = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';

describe('RFC 6238 test vectors', () => {
  it.each(RFC6238_VECTORS)('T=%i %s → %s (8 digits)', (seconds, algorithm, expected) => {
    const secret = parseTotpSecret(base32(SEEDS[algorithm]), { algorithm, digits: 8 });
    expect(totpCodeAt(secret, seconds * 1000)).toBe(expected);
  });

  it('6 digits are the low six of the same value', () => {
    const secret = totpSecretFromKey(SEEDS.SHA1);
    expect(totpCodeAt(secret, 59_000)).toBe('287082');
    expect(totpCodeAt(secret, 1111111109_000)).toBe('081804');
  });

  it('derives the step from the period, T0 = 0', () => {
    const secret = totpSecretFromKey(SEEDS.SHA1, { periodSec: 60 });
    expect(timeStepAt(secret, 59_999)).toBe(0);
    expect(timeStepAt(secret, 60_000)).toBe(1);
    expect(totpCodeForStep(secret, 1)).toBe(totpCodeAt(secret, 119_000));
  });
});

describe('parseTotpSecret', () => {
  it('reads raw base32 with spaces, hyphens, lower case and padding', () => {
    const plain = parseTotpSecret(SECRET_B32);
    const messy = parseTotpSecret(' gezd gnbv gy3t qojq-gezd gnbv gy3t qojq\n');
    expect(Buffer.from(messy.key).toString()).toBe('12345678901234567890');
    expect(messy.fingerprint).toBe(plain.fingerprint);
    expect(Buffer.from(parseTotpSecret('JBSWY3DPEHPK3PXP').key)).toEqual(
      Buffer.from([0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x21, 0xde, 0xad, 0xbe, 0xef]),
    );
    expect(plain).toMatchObject({ algorithm: 'SHA1', digits: 6, periodSec: 30 });
  });

  it('reads base32 with or without its = padding', () => {
    expect(parseTotpSecret('MZXW6YTBOJRGC6TROU======').key).toEqual(ascii('foobarbazqu'));
    expect(parseTotpSecret('mzxw6ytbojrgc6trou').key).toEqual(ascii('foobarbazqu'));
  });

  it('applies the profile defaults to raw base32', () => {
    expect(parseTotpSecret(SECRET_B32, { algorithm: 'SHA256', digits: 8, periodSec: 60 })).toMatchObject({
      algorithm: 'SHA256',
      digits: 8,
      periodSec: 60,
    });
  });

  it('reads an otpauth URI whose parameters override the profile', () => {
    const uri = `otpauth://totp/ACME:alice%40example.com?secret=${SECRET_B32.toLowerCase()}&issuer=ACME&algorithm=SHA512&digits=8&period=60`;
    const secret = parseTotpSecret(uri, { algorithm: 'SHA1', digits: 6, periodSec: 30 });
    expect(secret).toMatchObject({ algorithm: 'SHA512', digits: 8, periodSec: 60 });
    expect(Buffer.from(secret.key).toString()).toBe('12345678901234567890');
  });

  it('reads algorithm=sha-256, an upper-case type and the longest period, five minutes', () => {
    const uri = `otpauth://TOTP/x?secret=${SECRET_B32}&algorithm=sha-256&period=300`;
    expect(parseTotpSecret(uri)).toMatchObject({ algorithm: 'SHA256', periodSec: 300 });
    expect(MAX_PERIOD_SEC).toBe(300);
  });

  it('takes the profile, then RFC defaults, where the URI is silent', () => {
    expect(parseTotpSecret(`otpauth://totp/x?secret=${SECRET_B32}`)).toMatchObject({
      algorithm: 'SHA1',
      digits: 6,
      periodSec: 30,
    });
    expect(parseTotpSecret(`OTPAUTH://totp/x?secret=${SECRET_B32}`, { digits: 8 })).toMatchObject({
      digits: 8,
    });
  });

  it('fingerprints differ by key and by parameters', () => {
    const a = parseTotpSecret(SECRET_B32);
    expect(parseTotpSecret(SECRET_B32, { periodSec: 60 }).fingerprint).not.toBe(a.fingerprint);
    expect(parseTotpSecret(base32(SEEDS.SHA256)).fingerprint).not.toBe(a.fingerprint);
  });

  const canary = 'KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU';
  it.each([
    ['an empty value', '   '],
    ['a character outside base32', `${canary.slice(0, 10)}1${canary.slice(11)}`],
    ['padding inside the text', `${canary.slice(0, 8)}=${canary.slice(8)}`],
    ['an impossible length', `${canary}A`],
    // 26 characters carry 130 bits; the 2 that do not make a byte must be zero (RFC 4648 §3.5).
    ['a last character with spare bits set', canary.slice(0, 26)],
    ['a key shorter than 80 bits', canary.slice(0, 8)],
    ['a key longer than 512 bits', canary.repeat(4)],
    ['an otpauth URI of type hotp', `otpauth://hotp/x?secret=${canary}&counter=1`],
    ['an otpauth URI without secret', 'otpauth://totp/x?issuer=ACME'],
    ['an otpauth URI without //', `otpauth:totp/x?secret=${canary}`],
    ['an unsupported algorithm', `otpauth://totp/x?secret=${canary}&algorithm=MD5`],
    ['7 digits', `otpauth://totp/x?secret=${canary}&digits=7`],
    ['a zero period', `otpauth://totp/x?secret=${canary}&period=0`],
    ['a period that is not a number', `otpauth://totp/x?secret=${canary}&period=30s`],
    // A login waiting for the next step would hold a worker for up to a period (MAX_PERIOD_SEC).
    ['a period over five minutes', `otpauth://totp/x?secret=${canary}&period=301`],
    ['a one-hour period', `otpauth://totp/x?secret=${canary}&period=3600`],
    ['an unparseable URI', 'otpauth://[totp/x'],
  ])('rejects %s as InvalidTotpSecret without quoting it', (_what, input) => {
    let caught: unknown;
    try {
      parseTotpSecret(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(TokenError);
    const err = caught as TokenError;
    expect(err.code).toBe('configuration');
    expect(err.reason).toBe('InvalidTotpSecret');
    const exposed = `${err.message} ${JSON.stringify(err)} ${String(err.stack)}`;
    expect(exposed).not.toContain(canary.slice(0, 8));
    expect(exposed.toUpperCase()).not.toContain(canary.slice(0, 8));
    if (input.trim() !== '') expect(exposed).not.toContain(input.trim());
  });

  it('rejects parameters outside what it supports', () => {
    expect(() => totpSecretFromKey(SEEDS.SHA1, { digits: 7 })).toThrow(/digits must be 6 or 8/);
    expect(() => totpSecretFromKey(SEEDS.SHA1, { periodSec: 0 })).toThrow(TokenError);
  });

  it.each([
    { periodSec: 1, accepted: true },
    { periodSec: 30, accepted: true },
    { periodSec: 300, accepted: true },
    { periodSec: 301, accepted: false },
    { periodSec: 3600, accepted: false },
    { periodSec: 30.5, accepted: false },
  ])('a period of $periodSec s from the profile is accepted: $accepted', ({ periodSec, accepted }) => {
    const parse = () => parseTotpSecret(SECRET_B32, { periodSec });
    if (accepted) expect(parse().periodSec).toBe(periodSec);
    else expect(parse).toThrow(/period must be a whole number of seconds from 1 to 300/);
  });
});

describe('TotpGenerator', () => {
  const secret = parseTotpSecret(SECRET_B32);

  it('gives the current step at once, then waits for the next step instead of repeating it', async () => {
    const clock = new FakeClock(Date.parse('2026-01-01T00:00:10Z'));
    const generator = new TotpGenerator({ clock });
    const first = await generator.next(secret);
    expect(first.step).toBe(timeStepAt(secret, clock.now()));
    expect(first.code).toBe(totpCodeAt(secret, clock.now()));
    expect(first.stepEndsAtMs).toBe(Date.parse('2026-01-01T00:00:30Z'));

    let second: { code: string; step: number } | undefined;
    void generator.next(secret).then((c) => (second = c));
    await flushMicrotasks();
    expect(second).toBeUndefined();
    await clock.advance(19_999);
    expect(second).toBeUndefined();
    await clock.advance(1);
    expect(second?.step).toBe(first.step + 1);
    expect(second?.code).not.toBe(first.code);
    expect(second?.code).toBe(totpCodeForStep(secret, first.step + 1));
  });

  it('hands concurrent callers different steps', async () => {
    const clock = new FakeClock();
    const generator = new TotpGenerator({ clock });
    const results: number[] = [];
    const all = Promise.all(
      [1, 2, 3].map(async () => {
        const c = await generator.next(secret);
        results.push(c.step);
        return c.code;
      }),
    );
    await flushMicrotasks();
    expect(results).toHaveLength(1);
    await clock.advance(30_000);
    expect(results).toHaveLength(2);
    await clock.advance(30_000);
    const codes = await all;
    expect(new Set(codes).size).toBe(3);
    expect(new Set(results).size).toBe(3);
  });

  it('never repeats a code over many calls, and remembers per secret', async () => {
    const clock = new FakeClock(Date.parse('2026-01-01T00:00:29Z'));
    const generator = new TotpGenerator({ clock });
    const other = parseTotpSecret(base32(SEEDS.SHA256));
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) {
      const pending = generator.next(secret);
      // Another secret is independent: its current code is available while this one waits.
      if (i === 1) await generator.next(other);
      for (let n = 0; n < 40 && clock.pendingTimers() > 0; n++) await clock.advance(1000);
      seen.push((await pending).code);
    }
    expect(new Set(seen).size).toBe(seen.length);
  });

  it('driftSteps shifts the step, and the no-reuse rule still holds', async () => {
    const clock = new FakeClock(Date.parse('2026-01-01T00:00:05Z'));
    const generator = new TotpGenerator({ clock });
    const now = timeStepAt(secret, clock.now());
    const ahead = await generator.next(secret, { driftSteps: 1 });
    expect(ahead.step).toBe(now + 1);
    // Without drift the current step (now) is before the one handed out: wait until now+2 begins.
    let plain: number | undefined;
    void generator.next(secret).then((c) => (plain = c.step));
    await clock.advance(25_000 + 29_999);
    expect(plain).toBeUndefined();
    await clock.advance(1);
    expect(plain).toBe(now + 2);
  });

  it('minRemainingMs waits for a fresh step near the end of one', async () => {
    const clock = new FakeClock(Date.parse('2026-01-01T00:00:28Z'));
    const generator = new TotpGenerator({ clock });
    let got: number | undefined;
    void generator.next(secret, { minRemainingMs: 5000 }).then((c) => (got = c.step));
    await flushMicrotasks();
    expect(got).toBeUndefined();
    await clock.advance(2000);
    expect(got).toBe(timeStepAt(secret, clock.now()));
  });

  it('markUsed / lastUsedStep restore the memory across generators', async () => {
    const clock = new FakeClock();
    const first = new TotpGenerator({ clock });
    const used = await first.next(secret);
    expect(first.lastUsedStep(secret)).toBe(used.step);
    const restarted = new TotpGenerator({ clock });
    restarted.markUsed(secret, used.step);
    let code: string | undefined;
    void restarted.next(secret).then((c) => (code = c.code));
    await flushMicrotasks();
    expect(code).toBeUndefined();
    await clock.advance(30_000);
    expect(code).toBeDefined();
    expect(code).not.toBe(used.code);
  });

  it('supplier() feeds performLogin one fresh code per call', async () => {
    const clock = new FakeClock();
    const generator = new TotpGenerator({ clock });
    const supply = generator.supplier(secret);
    const a = await supply();
    const pending = supply();
    await clock.advance(30_000);
    expect(await pending).not.toBe(a);
  });

  it('an aborted wait rejects and leaves no timer behind', async () => {
    const clock = new FakeClock();
    const generator = new TotpGenerator({ clock });
    await generator.next(secret);
    const controller = new AbortController();
    const waiting = generator.next(secret, { signal: controller.signal });
    await flushMicrotasks();
    expect(clock.pendingTimers()).toBe(1);
    controller.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    expect(clock.pendingTimers()).toBe(0);
  });
});
