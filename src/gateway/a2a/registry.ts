/**
 * Who owns each A2A task and context. An A2A upstream names its tasks (`Task.id`) and contexts
 * (`contextId`) in its answers, and callers name them again in `tasks/get`, `tasks/cancel`,
 * `tasks/resubscribe`, `tasks/pushNotificationConfig/*` and in a `message/send` or `message/stream`
 * continuing a task (`message.taskId`, `message.contextId`). Upstreams often trust the gateway to
 * have checked who may do that; this folder is that check: this registry, the readers of the ids a
 * request names (`message.ts`) and an answer names (`answers.ts`, `events.ts`), and the forwarder
 * recording an answer's ids before its caller can read them (`forward.ts`).
 *
 * Stateful, not signed ids (as MCP sessions are): the gateway records, when an answer names a task
 * or a context, that it belongs to the caller it was sent to (first one wins), and lets a request
 * naming a task through only for its owner. The upstream's ids and bytes pass unchanged, so push
 * notifications (sent by the upstream straight to the client, with the upstream's ids), ids a
 * client chooses (a new `contextId`, A2A 0.2's task id) and ids quoted in text keep working; and an
 * id the upstream shows a caller is not thereby that caller's (a signed id would be: anyone shown
 * it could present it). A task never recorded is refused; a context never recorded is new, and goes
 * to the first principal naming it: so every 2xx JSON or event-stream answer, and every answer to a
 * call whatever its label or status, is read for its ids or refused (`TaskForwardHandler`,
 * `forward.ts`).
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { Principal } from '../../core/verify/principal.ts';
import { ownerOf } from '../mcp/sessions.ts';

/**
 * An A2A task or context, or an MCP task (`../mcp/tasks.ts`: its owner and tool, and its principal
 * alone, counted), each in its own key space.
 */
export type IdKind = 'task' | 'context' | 'mcp_task' | 'mcp_task_principal';

/** Who a task belongs to: a digest of {@link ownerOf} (the same principal as MCP sessions). */
export function taskOwner(p: Principal): string {
  return createHash('sha256')
    .update(JSON.stringify(ownerOf(p)), 'utf8')
    .digest('base64url');
}

/**
 * The most distinct ids one answer (a JSON answer, or an event stream across its events) or one
 * request (a batch) is recorded for. Past it, or past what the principal may own at all (`limit`:
 * that many new ones could never all be claimed), the answer or request is refused as full before
 * any more claims start. Each claim is a store call, started together for what one chunk names:
 * an upstream naming thousands of ids would otherwise start thousands of store calls before the
 * cap refused them. An answer to one request names one task (MCP) or a task and its context (A2A).
 */
export const MAX_IDS_PER_ANSWER = 256;

/** Are `count` distinct ids more than one answer or request is recorded for ({@link MAX_IDS_PER_ANSWER}, or `limit`)? */
export function tooManyIds(count: number, limit: number): boolean {
  return count > Math.min(limit, MAX_IDS_PER_ANSWER);
}

/**
 * The distinct ids an answer named so far, across its chunks: true once they are
 * {@link tooManyIds} (the set then stops growing; the answer is refused).
 */
export function answerNamesTooMany(seen: Set<string>, keys: readonly string[], limit: number): boolean {
  for (const key of keys) {
    seen.add(key);
    if (tooManyIds(seen.size, limit)) return true;
  }
  return false;
}

/** What a claim answers: the id is (now) the claimant's, another's, or cannot be recorded. */
export type Claim = 'owned' | 'foreign' | 'full';

/**
 * Where the gateway keeps who owns each task and context: in this process ({@link memoryTaskRegistry})
 * or in a store shared by every instance and kept across restarts ({@link StoreTaskOwners}). A
 * registry that cannot answer rejects, and the gateway refuses (fail closed).
 */
export interface TaskRegistry {
  /** The owner of `id`, if it is recorded and not expired at `now` (epoch ms). */
  ownerOf(route: string, kind: IdKind, id: string, now: number): Promise<string | undefined>;
  /**
   * Record `id` as `owner`'s for `ttlMs` from `now` unless it is another's, or `owner` has `limit`
   * live ones on `route` already and it would be a new one (see {@link TaskOwners.claim}).
   */
  claim(route: string, kind: IdKind, id: string, owner: string, now: number, ttlMs: number, limit?: number): Promise<Claim>;
  /** Take back `owner`'s record of `id` (no longer counted, anyone's again); another owner's is left. */
  release(route: string, kind: IdKind, id: string, owner: string): Promise<void>;
}

/** {@link TaskOwners} (this process only) as a {@link TaskRegistry}. */
export function memoryTaskRegistry(owners: TaskOwners = new TaskOwners()): TaskRegistry {
  return {
    ownerOf: async (route, kind, id, now) => owners.ownerOf(route, kind, id, now),
    claim: async (route, kind, id, owner, now, ttlMs, limit) => owners.claim(route, kind, id, owner, now, ttlMs, limit),
    release: async (route, kind, id, owner) => owners.release(route, kind, id, owner),
  };
}

/**
 * What {@link StoreTaskOwners} needs of the store (`Store.claimA2aTask`, `Store.a2aTaskOwner`,
 * `Store.releaseA2aTask`; times in epoch seconds). Without `releaseA2aTask` nothing is taken back: a
 * claim stands until it expires.
 */
export interface TaskStore {
  claimA2aTask(
    route: string,
    kind: IdKind,
    id: string,
    owner: string,
    expiresAt: number,
    now: number,
    limit?: number,
  ): Promise<{ readonly owner: string; readonly expiresAt: number } | 'full'>;
  a2aTaskOwner(
    route: string,
    kind: IdKind,
    id: string,
    now: number,
  ): Promise<{ readonly owner: string; readonly expiresAt: number } | undefined>;
  releaseA2aTask?(route: string, kind: IdKind, id: string, owner: string): Promise<boolean>;
}

/**
 * Task ownership kept in the store, so every gateway instance on it (`tessera serve` on
 * PostgreSQL behind one load balancer) and a restarted one agree on it; the store's claim is atomic,
 * so of two instances recording one id for two principals, one wins and the other is told.
 *
 * A cache in this process holds the records the store answered, each until the expiry the store
 * gave it: a record's owner never changes before it expires (a claim by another owner leaves it,
 * and only the owner's own claims extend it), so a cached owner is never stale. The one exception,
 * {@link StoreTaskOwners.release}, takes back only what the gateway claimed for an MCP task it could
 * not finish recording (its id never reached a caller), forgotten here too. An id the store
 * does not know is never cached: another instance may record it the next moment. The owner naming
 * its own id again extends its record in the store only once it would end more than
 * {@link RENEW_SLACK_MS} (at most a tenth of the ttl) before `now + ttl`: a record stays at
 * least that close to the sliding ttl, and a stream naming one task in every event costs one write.
 */
export class StoreTaskOwners implements TaskRegistry {
  readonly #store: TaskStore;
  readonly #maxCached: number;
  /** key → owner and the record's expiry (epoch ms); Map order is insertion order (oldest first). */
  readonly #cache = new Map<string, { owner: string; until: number }>();

  constructor(store: TaskStore, options: { maxCached?: number } = {}) {
    this.#store = store;
    this.#maxCached = options.maxCached ?? 100_000;
  }

  async ownerOf(route: string, kind: IdKind, id: string, now: number): Promise<string | undefined> {
    const key = keyOf(route, kind, id);
    const cached = this.#cached(key, now);
    if (cached !== undefined) return cached.owner;
    const r = await this.#store.a2aTaskOwner(route, kind, id, Math.floor(now / 1000));
    if (r === undefined) return undefined;
    this.#remember(key, r.owner, r.expiresAt * 1000);
    return r.owner;
  }

  async claim(route: string, kind: IdKind, id: string, owner: string, now: number, ttlMs: number, limit?: number): Promise<Claim> {
    const key = keyOf(route, kind, id);
    const cached = this.#cached(key, now);
    if (cached !== undefined) {
      if (cached.owner !== owner) return 'foreign';
      if (cached.until >= now + ttlMs - Math.min(RENEW_SLACK_MS, ttlMs / 10)) return 'owned';
    }
    const r = await this.#store.claimA2aTask(route, kind, id, owner, Math.floor((now + ttlMs) / 1000), Math.floor(now / 1000), limit);
    // Nothing recorded, so nothing cached: the id is still anyone's.
    if (r === 'full') return 'full';
    this.#remember(key, r.owner, r.expiresAt * 1000);
    return r.owner === owner ? 'owned' : 'foreign';
  }

  async release(route: string, kind: IdKind, id: string, owner: string): Promise<void> {
    const key = keyOf(route, kind, id);
    // Forgotten first: a record answered later is read from the store again.
    if (this.#cache.get(key)?.owner === owner) this.#cache.delete(key);
    await this.#store.releaseA2aTask?.(route, kind, id, owner);
  }

  #cached(key: string, now: number): { owner: string; until: number } | undefined {
    const e = this.#cache.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now) {
      this.#cache.delete(key);
      return undefined;
    }
    return e;
  }

  #remember(key: string, owner: string, until: number): void {
    this.#cache.delete(key);
    this.#cache.set(key, { owner, until });
    // Forgetting a record costs a store read, nothing more: the oldest go first.
    while (this.#cache.size > this.#maxCached) this.#cache.delete(this.#cache.keys().next().value as string);
  }
}

/** How far before `now + ttl` a record the owner names again may end before the store is told (see {@link StoreTaskOwners}). */
export const RENEW_SLACK_MS = 60_000;

/**
 * Which principal each task and context of a route belongs to, kept in this process: several
 * gateway instances do not share it (a task created through one is unknown to the others), and a
 * restart forgets it. The gateway's registry when it has no store (`tessera gateway`).
 */
export class TaskOwners {
  readonly #maxEntries: number;
  readonly #maxPerOwner: number;
  /** key → owner, expiry and route; Map order is insertion order, refreshed on use (oldest first). */
  readonly #entries = new Map<string, { owner: string; until: number; route: string }>();
  /** JSON [route, owner] → how many entries of `#entries` are the owner's on the route. */
  readonly #perOwner = new Map<string, number>();

  constructor(options: { maxEntries?: number; maxPerOwner?: number } = {}) {
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#maxPerOwner = options.maxPerOwner ?? 10_000;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The owner of `id`, if it is recorded and not expired at `now`. */
  ownerOf(route: string, kind: IdKind, id: string, now: number): string | undefined {
    const key = keyOf(route, kind, id);
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now) {
      this.#delete(key, route, e.owner);
      return undefined;
    }
    return e.owner;
  }

  /**
   * Record `id` as `owner`'s unless it is another's: `'owned'` when it is (now) `owner`'s (for
   * `ttlMs` from `now`, on each use again), `'foreign'` when another owns it, `'full'` when it cannot be recorded
   * (the registry is full, or `owner` has `limit` entries on `route` already (default `maxPerOwner`):
   * nothing is evicted that is still live, since an evicted context could then be claimed by anyone).
   */
  claim(
    route: string,
    kind: IdKind,
    id: string,
    owner: string,
    now: number,
    ttlMs: number,
    limit: number = this.#maxPerOwner,
  ): 'owned' | 'foreign' | 'full' {
    const key = keyOf(route, kind, id);
    const current = this.ownerOf(route, kind, id, now);
    if (current !== undefined && current !== owner) return 'foreign';
    if (current === undefined) {
      const share = JSON.stringify([route, owner]);
      // Expired entries still count until swept: swept first, so only live ones are held against the limits.
      if (this.#entries.size >= this.#maxEntries || (this.#perOwner.get(share) ?? 0) >= limit) this.#sweep(now);
      if (this.#entries.size >= this.#maxEntries || (this.#perOwner.get(share) ?? 0) >= limit) return 'full';
      this.#perOwner.set(share, (this.#perOwner.get(share) ?? 0) + 1);
    } else this.#entries.delete(key);
    this.#entries.set(key, { owner, until: now + ttlMs, route });
    return 'owned';
  }

  /** Take back `owner`'s entry of `id` (no longer counted against its limit); another owner's is left. */
  release(route: string, kind: IdKind, id: string, owner: string): void {
    const key = keyOf(route, kind, id);
    const e = this.#entries.get(key);
    if (e !== undefined && e.owner === owner) this.#delete(key, route, owner);
  }

  #delete(key: string, route: string, owner: string): void {
    this.#entries.delete(key);
    const share = JSON.stringify([route, owner]);
    const n = (this.#perOwner.get(share) ?? 1) - 1;
    if (n <= 0) this.#perOwner.delete(share);
    else this.#perOwner.set(share, n);
  }

  /** Drop expired entries (oldest first, so it stops at the first live one). */
  #sweep(now: number): void {
    for (const [key, e] of this.#entries) {
      if (e.until > now) break;
      this.#delete(key, e.route, e.owner);
    }
  }
}

function keyOf(route: string, kind: IdKind, id: string): string {
  return JSON.stringify([route, kind, id]);
}
