// The TOTP check (RFC 6238) of the test login pages, shared by the oidc-provider interaction pages
// (oidc/interaction.ts) and the Keycloak-shaped login server (login-server.ts).
//
// A code is right when otplib finds it within the steps around the current one, and is accepted only
// once (RFC 6238 §5.2: https://www.rfc-editor.org/rfc/rfc6238#section-5.2). Verifiers differ in how
// they remember what they accepted, so the rule is chosen per server (ReplayRule). Like the operator
// (src/oauth/totp.ts, MIN_KEY_BYTES), secrets of 10 bytes are enough: 80-bit secrets (16 base32
// characters) are common in the field although otplib asks for 16 bytes by default.
import { createGuardrails, generateSync, verifySync } from 'otplib';

export type TotpAlgorithm = 'sha1' | 'sha256' | 'sha512';

/** How a verifier refuses a code that was already used. */
export type ReplayRule =
  /**
   * A code of a time step already accepted for the account is refused; a code of an earlier step
   * that was never accepted still passes while it is within the window.
   */
  | 'same-step'
  /**
   * A code at or before the account's last accepted time step is refused (also when the clock went
   * back past it).
   */
  | 'after-last-step';

export interface TotpParameters {
  /** Base32. */
  secret: string;
  /** Default 'sha1'. */
  algorithm?: TotpAlgorithm;
  /** Default 6. */
  digits?: number;
  /** Default 30. */
  periodSec?: number;
  /** Steps accepted either side of the current one; default 1. */
  lookAroundSteps?: number;
}

const GUARDRAILS = createGuardrails({ MIN_SECRET_BYTES: 10 });

/** Throws otplib's error when `secret` cannot produce codes (not base32, or too short). */
export function checkTotpSecret(secret: string): void {
  generateSync({ secret, guardrails: GUARDRAILS });
}

/** Checks codes and remembers, per account, the time steps it accepted. */
export class TotpVerifier {
  private readonly replay: ReplayRule;
  private readonly acceptedSteps = new Map<string, Set<number>>();

  constructor(replay: ReplayRule) {
    this.replay = replay;
  }

  /** Whether `code` is right at `nowMs` and not a replay for `account`; an accepted step is remembered. */
  accept(account: string, code: string, totp: TotpParameters, nowMs: number): boolean {
    const digits = totp.digits ?? 6;
    if (!new RegExp(`^\\d{${digits}}$`).test(code)) return false;
    const accepted = this.acceptedSteps.get(account) ?? new Set<number>();
    // otplib skips the steps up to the last accepted one, and throws when the window ends before it.
    const afterTimeStep =
      this.replay === 'after-last-step' && accepted.size > 0 ? Math.max(...accepted) : undefined;
    const periodSec = totp.periodSec ?? 30;
    let step: number;
    try {
      const result = verifySync({
        secret: totp.secret,
        token: code,
        algorithm: totp.algorithm ?? 'sha1',
        digits,
        period: periodSec,
        epoch: Math.floor(nowMs / 1000),
        epochTolerance: (totp.lookAroundSteps ?? 1) * periodSec,
        guardrails: GUARDRAILS,
        ...(afterTimeStep === undefined ? {} : { afterTimeStep }),
      });
      if (!result.valid || !('timeStep' in result)) return false;
      step = result.timeStep;
    } catch {
      // An unusable secret, or a last accepted step beyond the window (the clock went back).
      return false;
    }
    if (accepted.has(step)) return false;
    accepted.add(step);
    this.acceptedSteps.set(account, accepted);
    return true;
  }
}
