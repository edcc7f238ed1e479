/**
 * Standing grants: the grant that client-credentials tokens of one client, scope set and audience
 * set share, remembered per process so that issuing a token usually writes nothing.
 *
 * @module
 */
import { OAuthError } from '../../core/oauth-errors.ts';
import { BoundedMap } from '../../core/verify/bounded-map.ts';
import type { RevocationList } from '../../core/verify/revocation.ts';
import type { GrantRecord, Store } from '../../store/contract.ts';
import type { CompiledClient } from '../clients.ts';
import { newGrantId } from '../context.ts';

/**
 * How long a client-credentials standing grant is reused for new tokens. It then expires (once its
 * last token has), is replaced by a fresh one, and is pruned after `grant_retention` like any grant.
 */
const STANDING_GRANT_LIFETIME = 86_400;
/** Most standing grants remembered per process (one per client, scope set and audience set). */
export const STANDING_CACHE_SIZE = 4096;

export class StandingGrants {
  readonly #store: Pick<Store, 'createGrant'>;
  readonly #issuer: string;
  readonly #revocations: RevocationList;
  readonly #fresh: ((now: number) => Promise<void> | undefined) | undefined;
  /** By client, sorted scope set and sorted audience set; bounded (oldest evicted first). */
  readonly #cache: BoundedMap<string, { readonly id: string; readonly expiresAt: number }>;

  constructor(options: {
    readonly store: Pick<Store, 'createGrant'>;
    readonly issuer: string;
    readonly revocations: RevocationList;
    readonly size: number;
    /**
     * Before a cached grant is handed out: make sure this process has read the revocation log
     * recently enough (a promise of the read, or `undefined` when it has). Rejects when it cannot
     * read it: no token is signed on a grant this process cannot tell is unrevoked.
     */
    readonly fresh?: (now: number) => Promise<void> | undefined;
  }) {
    this.#store = options.store;
    this.#issuer = options.issuer;
    this.#revocations = options.revocations;
    this.#fresh = options.fresh;
    this.#cache = new BoundedMap(options.size);
  }

  /**
   * The grant client-credentials tokens of one client, scope set and audience set share (the same
   * set in any order is the same grant). It expires after {@link STANDING_GRANT_LIFETIME}; a token
   * never outlives it, and a grant too close to its end for a token of `ttl` is replaced.
   */
  async get(client: CompiledClient, scopes: readonly string[], audiences: readonly string[], now: number, ttl: number): Promise<string> {
    const key = `${client.id}\n${[...scopes].sort().join(' ')}\n${[...audiences].sort().join(' ')}`;
    if (this.#cache.get(key) !== undefined) await this.#fresh?.(now);
    // Looked up after the read: it may have dropped the grant (revoked by another process).
    const cached = this.#cache.get(key);
    if (cached !== undefined && cached.expiresAt >= now + ttl && !this.#revoked(cached.id)) return cached.id;
    const expiresAt = now + STANDING_GRANT_LIFETIME + ttl;
    const grant = await this.#store.createGrant(
      {
        id: newGrantId(),
        parentId: null,
        kind: 'client_credentials',
        issuer: this.#issuer,
        subject: client.id,
        clientId: client.id,
        act: null,
        scopes,
        audiences,
        createdAt: now,
        expiresAt,
      },
      now,
    );
    // Disabled or removed since this process authenticated it (another instance, a racing call).
    if (grant === 'client_inactive') throw new OAuthError('client_disabled');
    const id = (grant as GrantRecord).id;
    this.#cache.set(key, { id, expiresAt });
    return id;
  }

  /** Drop revoked grants (this process's revocations and the feed's). */
  forget(ids: readonly string[]): void {
    if (ids.length === 0 || this.#cache.size === 0) return;
    const gone = new Set(ids);
    for (const [key, g] of this.#cache.entries()) if (gone.has(g.id)) this.#cache.delete(key);
  }

  /** Forget every grant (the service does so when the store reports a client change). */
  clear(): void {
    this.#cache.clear();
  }

  #revoked(id: string): boolean {
    return this.#revocations.isRevoked({
      issuer: this.#issuer,
      subject: undefined,
      clientId: undefined,
      delegationId: id,
      tokenId: undefined,
      issuedAt: undefined,
      expiresAt: 0,
    });
  }
}
