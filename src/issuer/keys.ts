/**
 * Signing keys over time. Each key is published in the JWKS from its creation, signs from its
 * activation until a later key activates, and stays published until every token it signed has
 * expired (`retired + sync_interval + max_access_token_ttl + skew`). `tessera keys rotate` adds a key that
 * activates `publish_ahead` later, so every verifier has fetched it before it signs; a running
 * server re-reads the keys when the store's key version changes and switches at the activation
 * time on its own, without a restart.
 *
 * @module
 */
import { createPrivateKey } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { SigningAlgorithm } from '../config/token-service-schema.ts';
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';
import { importJwk, jwkThumbprint, type VerificationKey } from '../core/jose/jwk.ts';
import type { KeyMiss, KeySource } from '../core/ports.ts';
import type { SigningKeyRecord, Store } from '../store/contract.ts';
import { type MasterKey, MasterKeyError, seal, unseal } from './secrets.ts';
import { createSigner, generateSigningKey, type JwsSigner } from './signer.ts';

/** Where a key is in its life at a given time. */
export type KeyState = 'pending' | 'active' | 'retired' | 'expired';

/** One key's schedule, for `tessera keys list`. */
export interface KeyStatus {
  readonly kid: string;
  readonly alg: JwsAlgorithm;
  readonly state: KeyState;
  readonly createdAt: number;
  readonly activatesAt: number;
  /** When a later key took (or takes) over; `null` while none is scheduled. */
  readonly retiresAt: number | null;
  /** When it leaves the JWKS; `null` while no successor is scheduled. */
  readonly publishedUntil: number | null;
}

export interface KeySchedule {
  readonly algorithm: SigningAlgorithm;
  readonly publishAhead: number;
  readonly jwksMaxAge: number;
  /** Longest access-token lifetime: a retired key stays published this long (plus skew). */
  readonly maxTokenTtl: number;
  readonly rotationInterval: number | undefined;
  /**
   * Longest time, seconds, before every instance serves a key another one added (`sync_interval`);
   * default 0. A new key signs no sooner than `jwks_max_age` after the last instance published it.
   */
  readonly propagation?: number;
}

interface CompiledKey {
  readonly record: SigningKeyRecord;
  readonly verification: VerificationKey;
  retiresAt: number | null;
  publishedUntil: number | null;
  signer?: JwsSigner;
}

const SKEW = 60;
/** Least time between two store reads after unknown kids (see KeyManager.refreshAfterMiss). */
const MISS_READ_COOLDOWN_MS = 1000;

/** Generate a key and its record (private key sealed under the master key). */
export function newKeyRecord(master: MasterKey, alg: SigningAlgorithm, now: number, activatesAt: number): SigningKeyRecord {
  const { privateKey, publicJwk } = generateSigningKey(alg);
  const kid = jwkThumbprint(publicJwk);
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  return { kid, alg, publicJwk, sealedPrivateKey: seal(master, pkcs8, kid), createdAt: now, activatesAt };
}

/**
 * The key set of this issuer: a {@link KeySource} for in-process verifiers, the signer of the
 * moment, and the JWKS document.
 */
export class KeyManager implements KeySource {
  readonly #store: Store;
  readonly #master: MasterKey | undefined;
  readonly #schedule: KeySchedule;
  readonly #now: () => number;
  #keys: CompiledKey[] = [];
  #byKid = new Map<string, CompiledKey>();
  /** Keys deleted from the store, by kid (public parts only), read on demand; dropped at each reload. */
  #removed: Promise<Map<string, VerificationKey>> | undefined;
  #jwksCache: { at: number; body: string } | undefined;
  /** `performance.now()` of the last store read after an unknown kid, and that read while it runs. */
  #missReadAt = Number.NEGATIVE_INFINITY;
  #missRead: Promise<boolean> | undefined;
  /** Store reads of the key set begun, and the latest one applied: reads may end out of order. */
  #reads = 0;
  #applied = 0;

  constructor(options: { store: Store; master: MasterKey | undefined; schedule: KeySchedule; now: () => number }) {
    this.#store = options.store;
    this.#master = options.master;
    this.#schedule = options.schedule;
    this.#now = options.now;
  }

  /** Read the key set from the store (at start-up and whenever its version changes). */
  async reload(): Promise<void> {
    const read = ++this.#reads;
    const records = await this.#store.listSigningKeys();
    // A read that ends after a later one was applied (a kid-miss read held up while a sync read a
    // newer key set) is older than what is in place: applying it would drop a key added meanwhile.
    if (read < this.#applied) return;
    this.#applied = read;
    const previous = this.#byKid;
    const keys: CompiledKey[] = records
      .map((record) => {
        const old = previous.get(record.kid);
        const verification =
          old?.verification ?? importJwk({ ...record.publicJwk, kid: record.kid, alg: record.alg }, { algorithms: [record.alg] });
        return { record, verification, retiresAt: null, publishedUntil: null, ...(old?.signer ? { signer: old.signer } : {}) };
      })
      // kid last: two instances rotating in the same second must agree on which key is active
      // (each would otherwise retire, and in time delete, the key the other signs with).
      .sort(
        (a, b) =>
          a.record.activatesAt - b.record.activatesAt ||
          a.record.createdAt - b.record.createdAt ||
          (a.record.kid < b.record.kid ? -1 : a.record.kid > b.record.kid ? 1 : 0),
      );
    for (let i = 0; i < keys.length; i++) {
      const successor = keys[i + 1];
      const k = keys[i] as CompiledKey;
      if (successor) {
        k.retiresAt = successor.record.activatesAt;
        // Another instance goes on signing with this key until it reads its successor (up to
        // `propagation` later: at once after `tessera keys rotate --now`).
        k.publishedUntil = successor.record.activatesAt + (this.#schedule.propagation ?? 0) + this.#schedule.maxTokenTtl + SKEW;
      }
    }
    this.#keys = keys;
    this.#byKid = new Map(keys.map((k) => [k.record.kid, k]));
    this.#removed = undefined;
    this.#jwksCache = undefined;
  }

  #active(now: number): CompiledKey | undefined {
    for (let i = this.#keys.length - 1; i >= 0; i--) {
      const k = this.#keys[i] as CompiledKey;
      if (k.record.activatesAt <= now) return k;
    }
    return undefined;
  }

  #state(k: CompiledKey, now: number, active: CompiledKey | undefined): KeyState {
    if (k.record.activatesAt > now) return 'pending';
    if (k === active) return 'active';
    return k.publishedUntil !== null && k.publishedUntil < now ? 'expired' : 'retired';
  }

  /** Every key with its state at `now`. */
  status(now = this.#now()): KeyStatus[] {
    const active = this.#active(now);
    return this.#keys.map((k) => ({
      kid: k.record.kid,
      alg: k.record.alg,
      state: this.#state(k, now, active),
      createdAt: k.record.createdAt,
      activatesAt: k.record.activatesAt,
      retiresAt: k.retiresAt,
      publishedUntil: k.publishedUntil,
    }));
  }

  /** The signer of the key active at `now`, or `undefined` when no key is active. */
  signer(now = this.#now()): JwsSigner | undefined {
    const k = this.#active(now);
    return k === undefined ? undefined : this.#open(k);
  }

  #open(k: CompiledKey): JwsSigner {
    if (k.signer === undefined) {
      if (this.#master === undefined) throw new Error('signing needs the master key (TESSERA_MASTER_KEY or <data_dir>/master.key)');
      const der = unseal(this.#master, k.record.sealedPrivateKey, k.record.kid);
      k.signer = createSigner(k.record.alg as SigningAlgorithm, k.record.kid, createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }));
    }
    return k.signer;
  }

  /**
   * Check that the master key opens the key signing at `now` (else the newest stored one).
   * Another master key than the keys were sealed with (a stale `TESSERA_MASTER_KEY`) is then found
   * before a server serves or a rotation writes, not at the first token request, nor once a key
   * sealed under it activates and no other instance can sign with it.
   *
   * @throws {MasterKeyError} `master_key_mismatch`.
   */
  verifyMaster(now = this.#now()): void {
    const k = this.#active(now) ?? this.#keys.at(-1);
    if (k !== undefined && this.#master !== undefined) this.#open(k);
  }

  /** KeySource: published keys only, by kid. */
  lookup(kid: string | undefined, alg: JwsAlgorithm): VerificationKey | KeyMiss {
    if (kid === undefined) return 'unknown';
    const k = this.#byKid.get(kid);
    if (k === undefined || !k.verification.checks.has(alg)) return 'unknown';
    if (k.publishedUntil !== null && k.publishedUntil < this.#now()) return 'unknown';
    return k.verification;
  }

  /**
   * KeySource: after a kid this instance does not know. Another instance may have just rotated in
   * a key at once (`tessera keys rotate --now`) and signed with it before this one's next sync;
   * refusing its tokens as unknown (401) would tell their holders to throw them away. So the store
   * is read again, at most once per {@link MISS_READ_COOLDOWN_MS} (a flood of made-up kids costs a
   * read a second), and `true` when a key was added.
   */
  refreshAfterMiss(): Promise<boolean> {
    if (this.#missRead !== undefined) return this.#missRead;
    const t = performance.now();
    if (t - this.#missReadAt < MISS_READ_COOLDOWN_MS) return Promise.resolve(false);
    this.#missReadAt = t;
    const known = new Set(this.#byKid.keys());
    this.#missRead = this.reload()
      .then(
        () => [...this.#byKid.keys()].some((kid) => !known.has(kid)),
        () => false,
      )
      .finally(() => {
        this.#missRead = undefined;
      });
    return this.#missRead;
  }

  /**
   * Every key the store still holds, published or not, by kid: to recognise a leaked token that a
   * key past its publication window signed (`tessera scan`). Never to accept a token: every such
   * token has expired (a key stays published until the last token it signed has).
   */
  lookupStored(kid: string, alg: JwsAlgorithm): VerificationKey | KeyMiss {
    const k = this.#byKid.get(kid);
    return k?.verification.checks.has(alg) ? k.verification : 'unknown';
  }

  /**
   * The keys housekeeping deleted, by kid (the store keeps their public part, not the private key):
   * to recognise a leaked token such a key signed (`tessera scan`; every such token has expired).
   * Never to accept a token. Read from the store once, and again after a reload.
   */
  async lookupRemoved(kid: string, alg: JwsAlgorithm): Promise<VerificationKey | KeyMiss> {
    this.#removed ??= this.#store.listRemovedSigningKeys().then((records) => {
      const map = new Map<string, VerificationKey>();
      for (const r of records) {
        try {
          map.set(r.kid, importJwk({ ...r.publicJwk, kid: r.kid, alg: r.alg }, { algorithms: [r.alg] }));
        } catch {
          // A key that no longer imports cannot identify anything: left out.
        }
      }
      return map;
    });
    const removed = await this.#removed.catch((e: unknown) => {
      this.#removed = undefined;
      throw e;
    });
    const k = removed.get(kid);
    return k?.checks.has(alg) ? k : 'unknown';
  }

  /** The JWKS document (serialized) and its max-age. Public members, `kid`, `alg`, `use` only. */
  jwks(now = this.#now()): { readonly body: string; readonly maxAge: number } {
    // A key leaves the document when its window closes; re-render at most once a second.
    if (this.#jwksCache === undefined || this.#jwksCache.at !== now) {
      const keys = this.#keys
        .filter((k) => k.publishedUntil === null || k.publishedUntil >= now)
        .map((k) => ({ ...k.record.publicJwk, kid: k.record.kid, alg: k.record.alg, use: 'sig' }));
      this.#jwksCache = { at: now, body: JSON.stringify({ keys }) };
    }
    return { body: this.#jwksCache.body, maxAge: this.#schedule.jwksMaxAge };
  }

  /**
   * Add a key. By default it activates `publish_ahead` from now (pre-publication; at least
   * `jwks_max_age` + `propagation` + 1 s after every instance published it); `immediate`
   * activates it at once (after a compromise: verifiers pick it up on their kid-miss refetch).
   */
  async rotate(options: { immediate?: boolean; algorithm?: SigningAlgorithm } = {}): Promise<SigningKeyRecord> {
    const record = await this.#add(options);
    if (record === undefined) throw new Error('no key was added');
    return record;
  }

  /**
   * {@link KeyManager.rotate}; with `unlessPending`, adds nothing (undefined) when the store holds
   * a key not yet active, which another instance may have added since this one last read its keys.
   */
  async #add(options: {
    immediate?: boolean;
    algorithm?: SigningAlgorithm;
    unlessPending?: boolean;
  }): Promise<SigningKeyRecord | undefined> {
    if (this.#master === undefined) throw new Error('rotating keys needs the master key');
    const now = this.#now();
    try {
      this.verifyMaster(now);
    } catch (e) {
      if (!(e instanceof MasterKeyError) || e.code !== 'master_key_mismatch') throw e;
      throw new MasterKeyError(
        'master_key_mismatch',
        'the master key does not open the stored signing keys (it is not the one they were sealed with); no key was added',
      );
    }
    // `now` is whole seconds: the key is in the store up to a second later than it says, and in
    // another instance's JWKS up to `propagation` after that. A verifier that fetched a JWKS just
    // before keeps it `jwks_max_age`: the key must not sign before that has run out, even when
    // publish_ahead is no longer than jwks_max_age.
    const { publishAhead, jwksMaxAge, propagation = 0 } = this.#schedule;
    const record = newKeyRecord(
      this.#master,
      options.algorithm ?? this.#schedule.algorithm,
      now,
      options.immediate ? now : now + Math.max(publishAhead, jwksMaxAge + propagation + 1),
    );
    const added = await this.#store.addSigningKey(record, options.unlessPending ? { unlessPendingAfter: now } : {});
    await this.reload();
    return added ? record : undefined;
  }

  /**
   * Housekeeping for a running server: with `rotation_interval`, pre-publish the next key so it
   * activates when the current one reaches that age; drop keys whose publication window closed.
   * @returns what changed, for the audit trail.
   */
  async maintain(): Promise<{ rotated?: SigningKeyRecord; removed: string[] }> {
    const now = this.#now();
    const removed: string[] = [];
    for (const k of this.#keys) {
      if (k.publishedUntil !== null && k.publishedUntil < now && (await this.#store.deleteSigningKey(k.record.kid))) {
        removed.push(k.record.kid);
      }
    }
    let rotated: SigningKeyRecord | undefined;
    const interval = this.#schedule.rotationInterval;
    const active = this.#active(now);
    const pending = this.#keys.some((k) => k.record.activatesAt > now);
    if (interval !== undefined && this.#master !== undefined && active && !pending) {
      // Another instance may rotate at the same moment: the store adds one key between them.
      if (now - active.record.activatesAt >= interval - this.#schedule.publishAhead) rotated = await this.#add({ unlessPending: true });
    }
    if (removed.length > 0 && !rotated) await this.reload();
    return rotated ? { rotated, removed } : { removed };
  }

  /** True when some key is active at `now` (readiness). */
  ready(now = this.#now()): boolean {
    return this.#active(now) !== undefined;
  }
}
