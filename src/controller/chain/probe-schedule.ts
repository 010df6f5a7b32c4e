// When each connection's access token was last probed (spec.probe), and which token a refresh the
// probe triggered produced. Kept in memory on purpose: a new leader simply probes again, and nothing
// here is needed for the safety of the chain, only to spread probes and to notice a probe endpoint
// that rejects even a token fresh from the provider (a wrong spec.probe.url, not a dead chain).
import { stableJitter } from './decide.ts';

interface Entry {
  lastAtMs?: number;
  /** A probe put off because its host was busy: not before this. */
  notBeforeMs?: number;
  /** Fingerprint of the access token a probe-triggered refresh returned. */
  refreshedFor?: string;
  /** Fingerprint of the access token the probe last saw rejected (401). */
  rejectedToken?: string;
  /** The probe's last answer was 403. */
  forbidden?: boolean;
}

export class ProbeSchedule {
  private readonly entries = new Map<string, Entry>();

  /** When the connection is next probed; a connection first seen is probed within one interval, spread by its UID. */
  nextAt(uid: string, intervalMs: number, nowMs: number): number {
    const entry = this.entry(uid);
    if (entry.lastAtMs === undefined) entry.lastAtMs = nowMs - intervalMs * (1 - stableJitter(uid, 0));
    return Math.max(entry.lastAtMs + intervalMs, entry.notBeforeMs ?? 0);
  }

  probed(uid: string, atMs: number): void {
    const entry = this.entry(uid);
    entry.lastAtMs = atMs;
    delete entry.notBeforeMs;
  }

  /** The probe found its host busy: it is due again at `untilMs`, when a slot should be free. */
  putOff(uid: string, untilMs: number): void {
    this.entry(uid).notBeforeMs = untilMs;
  }

  /**
   * Records that the probe saw this access token rejected. The rejection outlives the reconcile: when
   * the refresh it calls for must first wait out the request gap, the reconcile after that wait
   * still refreshes, instead of publishing the token again until the next probe rejects it anew.
   */
  rejected(uid: string, accessTokenFingerprint: string): void {
    this.entry(uid).rejectedToken = accessTokenFingerprint;
  }

  /** Whether the probe saw this access token rejected (a replaced token starts clean). */
  wasRejected(uid: string, accessTokenFingerprint: string): boolean {
    return this.entries.get(uid)?.rejectedToken === accessTokenFingerprint;
  }

  /** Records the access token a probe-triggered refresh returned; the rejection it answered is forgotten. */
  refreshedAfterRejection(uid: string, accessTokenFingerprint: string): void {
    const entry = this.entry(uid);
    entry.refreshedFor = accessTokenFingerprint;
    delete entry.rejectedToken;
  }

  /** Whether this token came from a refresh a rejection triggered: rejecting it too blames the probe URL. */
  isFreshFromRejection(uid: string, accessTokenFingerprint: string): boolean {
    return this.entries.get(uid)?.refreshedFor === accessTokenFingerprint;
  }

  /**
   * Records the HTTP status of a probe's answer (none: it failed below HTTP, which changes nothing).
   * True for a 403 after an answer that was not one: reported once, not every interval.
   */
  newlyForbidden(uid: string, status: number | undefined): boolean {
    if (status === undefined) return false;
    const entry = this.entry(uid);
    const first = status === 403 && entry.forbidden !== true;
    entry.forbidden = status === 403;
    return first;
  }

  forget(uid: string): void {
    this.entries.delete(uid);
  }

  private entry(uid: string): Entry {
    let entry = this.entries.get(uid);
    if (entry === undefined) {
      entry = {};
      this.entries.set(uid, entry);
    }
    return entry;
  }
}
