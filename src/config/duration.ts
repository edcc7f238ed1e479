/** Durations in configuration: a number of seconds, or a string such as `30s`, `10m`, `24h`, `7d`. */

/** A day, in seconds. */
export const DAY = 86_400;
/** The longest lifetime of what is issued or remembered (a refresh token, a grant, a consent): 366 days. */
export const YEAR = 366 * DAY;
/** The longest retention or key rotation period: ten years (of 366 days). */
export const DECADE = 10 * YEAR;
/**
 * The longest duration that runs a timer: Node fires a timer of more than 2^31-1 ms (24.8 days)
 * after 1 ms instead, which would turn "drain for a month" into "cut at once".
 */
export const TIMER_MAX = 24 * DAY;

const UNIT: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/** Parse a duration to seconds, or `undefined` when it is not one. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  // A quoted zero ("0", as tools that quote every scalar write it) is zero in any unit; other
  // bare numbers in quotes are refused rather than guessed.
  if (value.trim() === '0') return 0;
  const m = DURATION.exec(value.trim());
  if (!m) return undefined;
  return Number(m[1]) * (UNIT[m[2] as string] as number);
}

/** Render seconds as the shortest exact duration string (`600` → `10m`). */
export function formatDuration(seconds: number): string {
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}
