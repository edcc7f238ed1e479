/**
 * An in-memory, bounded, expiring replay cache for one process (DPoP proof and client assertion
 * `jti`s). Several instances share one through the store's replay cache instead.
 */
import type { Clock, ReplayCache } from '../ports.ts';

export class MemoryReplayCache implements ReplayCache {
  readonly #seen = new Map<string, number>();
  #max: number;
  readonly #clock: Clock;
  /** When a full cache may next be swept (seconds). */
  #nextSweep = 0;

  constructor(options: { maxEntries?: number; clock?: Clock } = {}) {
    this.#max = options.maxEntries ?? 100_000;
    this.#clock = options.clock ?? Date.now;
  }

  use(key: string, expiresAt: number): boolean {
    const now = this.#clock() / 1000;
    const prior = this.#seen.get(key);
    if (prior !== undefined && prior >= now) return false;
    if (this.#seen.size >= this.#max) {
      // A sweep visits every entry: at most one a second, or a cache kept full of live entries
      // (proofs from a holder of a valid bound token) would cost a full scan per request.
      if (now >= this.#nextSweep) {
        this.#nextSweep = now + 1;
        for (const [k, exp] of this.#seen) if (exp < now) this.#seen.delete(k);
      }
      // Still full of live entries: forgetting one early would allow its replay, so fail closed.
      // Entries are only recorded after every other check passed, so filling it takes valid
      // credentials, not just traffic.
      if (this.#seen.size >= this.#max) return false;
    }
    this.#seen.set(key, expiresAt);
    return true;
  }

  /** Change the bound (a gateway reload): the entries held are kept until they expire. */
  resize(maxEntries: number): void {
    this.#max = maxEntries;
  }

  get size(): number {
    return this.#seen.size;
  }
}
