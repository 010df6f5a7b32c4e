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

  /** Records the access token a probe-triggered refresh returned. */
  refreshedAfterRejection(uid: string, accessTokenFingerprint: string): void {
    this.entry(uid).refreshedFor = accessTokenFingerprint;
  }

  /** Whether this token came from a refresh a rejection triggered: rejecting it too blames the probe URL. */
  isFreshFromRejection(uid: string, accessTokenFingerprint: string): boolean {
    return this.entries.get(uid)?.refreshedFor === accessTokenFingerprint;
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
