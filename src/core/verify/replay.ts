/**
 * An in-memory, bounded, expiring replay cache for one process (DPoP proof `jti`s at the gateway
 * and in the library). Several instances share one through the store's replay cache instead.
 */
import { hash } from 'node:crypto';
import type { Clock, ReplayCache, ReplayRefusal } from '../ports.ts';

/**
 * How a one-time identifier (a DPoP proof's or client assertion's `jti`) is named in a replay
 * cache: its SHA-256, base64url (43 characters). A `jti` is any JSON string, of any length, NUL
 * included, and PostgreSQL refuses a NUL in text: recorded as it came, it would make the store
 * write fail (a 503 or 500 instead of the proof's own answer) and put the sender's bytes in the
 * database. The token endpoint (proofs, client assertions) and the gateway's verifier key their
 * entries by it alike.
 */
export function jtiDigest(jti: string): string {
  return hash('sha256', jti, 'base64url');
}

/**
 * How many live entries one owner (a DPoP proof key) may hold in a cache of `maxEntries`:
 * max(1000, maxEntries / 16), at most the whole cache. 6250 of the default 100000: a key may keep
 * sending about 68 proofs a second (each remembered 91 s with the default `iat_window` and
 * `clock_skew`), and it takes 16 keys, each bound to its own token, to fill the cache.
 */
export function replayShare(maxEntries: number): number {
  return Math.min(maxEntries, Math.max(1000, Math.floor(maxEntries / 16)));
}

interface Entry {
  readonly expiresAt: number;
  readonly owner: string | undefined;
}

export class MemoryReplayCache implements ReplayCache {
  readonly #seen = new Map<string, Entry>();
  /** Live and not yet swept entries of each owner; an owner without entries has none here. */
  readonly #counts = new Map<string, number>();
  #max: number;
  #share: number;
  readonly #clock: Clock;
  /** When a full cache or share may next be swept (seconds). */
  #nextSweep = 0;

  constructor(options: { maxEntries?: number; clock?: Clock } = {}) {
    this.#max = options.maxEntries ?? 100_000;
    this.#share = replayShare(this.#max);
    this.#clock = options.clock ?? Date.now;
  }

  /**
   * Record `key` for `owner` until `expiresAt`: true on first use (or after the earlier use
   * expired), false on replay, `'full'` when the cache, `'owner_full'` when the owner's share of it
   * ({@link replayShare}) is full of live entries.
   */
  use(key: string, expiresAt: number, owner?: string): boolean | ReplayRefusal {
    const now = this.#clock() / 1000;
    const prior = this.#seen.get(key);
    if (prior !== undefined && prior.expiresAt >= now) return false;
    if (this.#seen.size >= this.#max || this.#ownerFull(owner)) {
      // A sweep visits every entry: at most one a second, or a cache (or a share) kept full of live
      // entries (proofs from a holder of a valid bound token) would cost a full scan per request.
      if (now >= this.#nextSweep) {
        this.#nextSweep = now + 1;
        for (const [k, entry] of this.#seen) if (entry.expiresAt < now) this.#delete(k, entry);
      }
      // Still full of live entries: forgetting one early would allow its replay, so fail closed.
      // Entries are only recorded after every other check passed, so filling it takes valid
      // credentials, not just traffic; the share keeps one key (one bound token) from filling it
      // for every other.
      if (this.#seen.size >= this.#max) return 'full';
      if (this.#ownerFull(owner)) return 'owner_full';
    }
    // An expired entry of the key not swept yet is replaced: its owner's count goes with it.
    const stale = this.#seen.get(key);
    if (stale !== undefined) this.#delete(key, stale);
    this.#seen.set(key, { expiresAt, owner });
    if (owner !== undefined) this.#counts.set(owner, (this.#counts.get(owner) ?? 0) + 1);
    return true;
  }

  /** Change the bound (a gateway reload): the entries held are kept until they expire. */
  resize(maxEntries: number): void {
    this.#max = maxEntries;
    this.#share = replayShare(maxEntries);
  }

  get size(): number {
    return this.#seen.size;
  }

  #ownerFull(owner: string | undefined): boolean {
    return owner !== undefined && (this.#counts.get(owner) ?? 0) >= this.#share;
  }

  #delete(key: string, entry: Entry): void {
    this.#seen.delete(key);
    if (entry.owner === undefined) return;
    const left = (this.#counts.get(entry.owner) ?? 1) - 1;
    if (left > 0) this.#counts.set(entry.owner, left);
    else this.#counts.delete(entry.owner);
  }
}
