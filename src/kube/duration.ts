// Go-style durations ("570s", "1h30m", "1.5h", "250ms"), as the CRD's pattern admits them.
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

/**
 * The longest duration accepted: 87600h (ten 365-day years). Far above every maximum of the CRD (8760h)
 * and far below what a Date can hold (±8.64e15 ms), so that now + a parsed duration is always a valid
 * date, also for a connection stored before the CRD bounded its durations or on a server without CEL.
 */
export const MAX_DURATION_MS = 10 * 365 * 24 * 3_600_000;

export function parseDuration(text: string): number {
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) {
    throw new Error(`invalid duration ${JSON.stringify(text)}: expected for example 90s, 10m or 1h30m`);
  }
  let total = 0;
  for (const [, value, unit] of text.matchAll(PART)) {
    total += Number(value) * (UNIT_MS[unit ?? 's'] ?? 0);
  }
  const ms = Math.round(total);
  // Written so that a non-finite total fails too: a long enough run of digits is Infinity to Number().
  if (!(Number.isFinite(ms) && ms <= MAX_DURATION_MS)) {
    throw new Error(`invalid duration ${JSON.stringify(text)}: longer than the maximum, 87600h (10 years)`);
  }
  return ms;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const seconds = Math.round(ms / 1000);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
}
