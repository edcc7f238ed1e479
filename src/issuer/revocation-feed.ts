/**
 * Replays the store's revocation log into a {@link RevocationList}: all live entries at start-up,
 * then whatever is new, after every in-process revocation (so the verifier in the same process
 * rejects affected tokens on the very next request), when the store pushes another process's
 * revocation (PostgreSQL), and on every sync tick (to pick up the CLI's and other instances'
 * revocations where there is no push, or one was missed).
 *
 * @module
 */
import type { Revocation, RevocationList } from '../core/verify/revocation.ts';
import type { RevocationEntry, Store } from '../store/contract.ts';

export class RevocationFeed {
  readonly #store: Store;
  readonly #list: RevocationList;
  readonly #issuer: string;
  #cursor = 0;
  /** The entry at the cursor, as applied: found again at its `seq` on the next read, or the log was rolled back. */
  #last: RevocationEntry | undefined;
  #running: Promise<number> | undefined;
  #again = false;
  #readAt: number | undefined;
  #readAtMs: number | undefined;
  readonly #onGrants: ((ids: readonly string[]) => void) | undefined;
  readonly #clock: () => number;
  readonly #onRead: (() => void) | undefined;

  /**
   * `onGrants` hears the ids of revoked grants as they are applied (e.g. to drop cached grants);
   * `onRead` is told after each catch-up that read the log to its end; `clock` (epoch ms, default
   * `Date.now`) times {@link RevocationFeed.readAtMs}.
   */
  constructor(
    store: Store,
    list: RevocationList,
    issuer: string,
    onGrants?: (ids: readonly string[]) => void,
    options: { readonly clock?: () => number; readonly onRead?: () => void } = {},
  ) {
    this.#store = store;
    this.#list = list;
    this.#issuer = issuer;
    this.#onGrants = onGrants;
    this.#clock = options.clock ?? Date.now;
    this.#onRead = options.onRead;
  }

  /** The last applied sequence number. */
  get cursor(): number {
    return this.#cursor;
  }

  /** The `now` of the last catch-up that read the log to its end (epoch seconds), if any did. */
  get readAt(): number | undefined {
    return this.#readAt;
  }

  /**
   * When the last catch-up that read the log to its end began (epoch ms, by the feed's clock): what
   * it applied was in the log then, and anything committed since may not be.
   */
  get readAtMs(): number | undefined {
    return this.#readAtMs;
  }

  /**
   * Apply every entry newer than the cursor. Concurrent calls share one read, and a call made while
   * a read is running triggers one more read after it, so a caller's own write is always seen.
   * @returns the number of entries applied.
   */
  catchUp(now: number): Promise<number> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      let applied = 0;
      let began = 0;
      try {
        do {
          this.#again = false;
          began = this.#clock();
          for (;;) {
            // The read starts at the last entry applied, which must still be there: a failover to a
            // standby that had not received the log's last commits hands their sequence numbers out
            // again, and reading only past the cursor would skip the new entries for good. Then (or
            // when that entry has expired) every live entry is read again; applying one twice is
            // harmless.
            const last = this.#last;
            const read = await this.#store.revocationsSince(last === undefined ? this.#cursor : last.seq - 1, now, 5000);
            if (last !== undefined && !sameEntry(read[0], last)) {
              this.#cursor = 0;
              this.#last = undefined;
              continue;
            }
            const entries = last === undefined ? read : read.slice(1);
            if (entries.length === 0) break;
            const revocation = toRevocation(entries, this.#issuer);
            this.#list.apply(revocation);
            if (revocation.grants?.length) this.#onGrants?.(revocation.grants.map((g) => g.id));
            this.#last = entries.at(-1) as RevocationEntry;
            this.#cursor = this.#last.seq;
            applied += entries.length;
          }
        } while (this.#again);
        this.#readAt = Math.max(this.#readAt ?? now, now);
        this.#readAtMs = Math.max(this.#readAtMs ?? began, began);
      } finally {
        this.#running = undefined;
      }
      this.#onRead?.();
      return applied;
    })();
    return this.#running;
  }

  /**
   * Apply entries this process has just committed to the store's log, without reading them back:
   * for a revocation whose commit was acknowledged when the read that follows it fails (the store
   * went out of reach in between), so this process refuses what it revoked all the same. The
   * cursor does not move: the next catch-up reads them (applying one twice is harmless).
   */
  applyCommitted(entries: readonly Omit<RevocationEntry, 'seq'>[]): void {
    if (entries.length === 0) return;
    const revocation = toRevocation(entries, this.#issuer);
    this.#list.apply(revocation);
    if (revocation.grants?.length) this.#onGrants?.(revocation.grants.map((g) => g.id));
  }
}

function sameEntry(e: RevocationEntry | undefined, last: RevocationEntry): boolean {
  return (
    e !== undefined &&
    e.seq === last.seq &&
    e.kind === last.kind &&
    e.value === last.value &&
    e.issuer === last.issuer &&
    e.at === last.at &&
    e.expiresAt === last.expiresAt
  );
}

function toRevocation(entries: readonly Omit<RevocationEntry, 'seq'>[], issuer: string): Revocation {
  // Grants and token ids are this issuer's: another issuer's token with the same value is untouched.
  // A token entry that names its scope is that scope's (a signed-out login session's id, under the
  // login-session scope that no token's `iss` equals).
  const grants: { id: string; expiresAt: number; issuer: string }[] = [];
  const tokenIds: { jti: string; expiresAt: number; issuer: string }[] = [];
  const subjects: { issuer: string; subject: string; at: number; expiresAt: number }[] = [];
  const clients: { issuer: string; clientId: string; at: number; expiresAt: number }[] = [];
  // Each entry lives in the store until its `expiresAt` (its tokens' end plus skew), and so here.
  for (const e of entries) {
    if (e.kind === 'grant') grants.push({ id: e.value, expiresAt: e.expiresAt, issuer });
    else if (e.kind === 'token') tokenIds.push({ jti: e.value, expiresAt: e.expiresAt, issuer: e.issuer ?? issuer });
    else if (e.kind === 'subject') subjects.push({ issuer: e.issuer ?? issuer, subject: e.value, at: e.at, expiresAt: e.expiresAt });
    else clients.push({ issuer: e.issuer ?? issuer, clientId: e.value, at: e.at, expiresAt: e.expiresAt });
  }
  return { grants, tokenIds, subjects, clients };
}
