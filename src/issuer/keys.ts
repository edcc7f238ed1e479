/**
 * Signing keys over time. Each key is published in the JWKS from its creation, signs from its
 * activation until a later key activates, and stays published until every token it signed has
 * expired (`retired + sync_interval + max_access_token_ttl + skew`). `tessera keys rotate` adds a key that
 * activates `publish_ahead` later, so every verifier has fetched it before it signs; a running
 * server re-reads the keys at every sync and switches at the activation time on its own, without
 * a restart. A key whose row is deleted while still in its window stops signing (KeyManager.#vanished)
 * until that very row is written back. A rotation seals each earlier key's end into its own row
 * (covered by its MAC, in the same store write): past it the key never signs, whatever the other rows say.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { createHmac, createPrivateKey, createPublicKey, type KeyObject, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../config/signing-algorithms.ts';
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';
import { importJwk, jwkThumbprint, type VerificationKey } from '../core/jose/jwk.ts';
import type { KeyMiss, KeySource } from '../core/ports.ts';
import {
  type RemovedSigningKeyRecord,
  type SigningKeyRecord,
  type SigningKeySeal,
  type Store,
  StoreConflictError,
} from '../store/contract.ts';
import { deriveMacKey, type MasterKey, MasterKeyError, seal, unseal } from './secrets.ts';
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
  /**
   * Its end sealed into its own row when its successor was added (covered by its MAC): past it,
   * it never signs, whatever the other rows say. `null` while none was sealed (the newest key, or
   * a row written before schema 25 and not yet followed by a rotation).
   */
  readonly sealedEnd: number | null;
  /** The kid of the key whose addition sealed {@link KeyStatus.sealedEnd}. */
  readonly successor: string | null;
  /**
   * Why the stored row is refused, when it is: it is then neither published nor used to verify or
   * sign (see {@link KeyManager.reload}). Names no key material.
   */
  readonly invalid?: string;
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
  /** Absent when the public key does not import for its alg (then `invalid` says so). */
  readonly verification?: VerificationKey;
  /** Why the row is refused; a refused key is not published, verifies nothing and does not sign. */
  readonly invalid?: string;
  /** The store no longer lists the row (see KeyManager.#vanished): `record` is the row as last read. */
  readonly vanished?: true;
  /**
   * The row, trusted when last read, was altered since and is refused: `record` is the row as last
   * trusted, which keeps it in the place of the schedule it had (see KeyManager.reload).
   */
  readonly displaced?: true;
  retiresAt: number | null;
  publishedUntil: number | null;
  signer?: JwsSigner;
}

/** The public members of the keys Tessera generates: all the JWKS publishes of a stored JWK. */
const PUBLIC_MEMBERS = ['kty', 'crv', 'x', 'y', 'n', 'e'] as const;

function publicPart(jwk: Readonly<Record<string, unknown>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of PUBLIC_MEMBERS) if (typeof jwk[m] === 'string') out[m] = jwk[m];
  return out;
}

/** Whether two rows of the same kid are the same (key, schedule and MAC; not the store's `seq`). */
function sameKey(a: SigningKeyRecord, b: SigningKeyRecord): boolean {
  return (
    a.alg === b.alg &&
    a.sealedPrivateKey === b.sealedPrivateKey &&
    a.createdAt === b.createdAt &&
    a.activatesAt === b.activatesAt &&
    a.mac === b.mac &&
    a.retiresAt === b.retiresAt &&
    a.successorKid === b.successorKid &&
    JSON.stringify(publicPart(a.publicJwk)) === JSON.stringify(publicPart(b.publicJwk)) &&
    Object.keys(a.publicJwk).length === Object.keys(b.publicJwk).length
  );
}

const SKEW = 60;
/** Why a key whose row was deleted while still in use is refused (see KeyManager.#vanished). */
const DELETED =
  'its row was deleted from the store while it was still in use or published (not by housekeeping): it no longer signs, and the key before it does not sign again';
/** What recovers from a refused key that is, or is to be, the active one. */
export const RECOVER = 'run `tessera keys rotate --now`';
/** What a row altered behind a running instance keeps (see KeyManager.reload). */
const DISPLACED =
  'altered since this instance last read it, it keeps the place in the schedule it had then (a key it retired does not sign again)';
/** Why a deleted key is still refused once a row of other contents was written under its kid. */
const REWRITTEN = `${DELETED}; a row written back under its kid since is not the one deleted`;

/**
 * The order of the keys (the active one is the last activated): by activation, then creation, then
 * the store's `seq` (of two `tessera keys rotate --now` in the same second, the later one signs),
 * and last the kid (rows without `seq`), so that every instance agrees on which key is active (each
 * would otherwise retire, and in time delete, the key the other signs with).
 */
function scheduleOrder(a: SigningKeyRecord, b: SigningKeyRecord): number {
  return (
    a.activatesAt - b.activatesAt ||
    a.createdAt - b.createdAt ||
    (a.seq !== undefined && b.seq !== undefined ? a.seq - b.seq : 0) ||
    (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0)
  );
}

/** Whether `later` was added after `earlier` (by creation time, then the store's `seq`). */
function addedAfter(later: SigningKeyRecord, earlier: SigningKeyRecord): boolean {
  if (later.createdAt !== earlier.createdAt) return later.createdAt > earlier.createdAt;
  return later.seq !== undefined && earlier.seq !== undefined && later.seq > earlier.seq;
}
/** Least time between two store reads after unknown kids (see KeyManager.refreshAfterMiss). */
const MISS_READ_COOLDOWN_MS = 1000;

/**
 * What a row's MAC and its sealed private key's associated data cover: the kid, the alg, the
 * public key and the schedule. Whoever writes to the database without the master key can then
 * neither move a key in the schedule (a pending key signing early, a retired one signing again)
 * nor plant a public part of their own among the removed keys.
 */
function authenticated(r: Omit<RemovedSigningKeyRecord, 'mac'>): string {
  return JSON.stringify(['tessera signing key v2', r.kid, r.alg, publicPart(r.publicJwk), r.createdAt, r.activatesAt]);
}

/**
 * What the MAC of a row whose end is sealed covers: {@link authenticated}'s fields and the end, so
 * that the end can be neither moved nor stripped (a row stripped of it is checked against the
 * fields alone, which its MAC does not cover). The sealed private key's associated data stays
 * {@link authenticated}: sealing an end rewrites the MAC, never the private key.
 */
function authenticatedWithEnd(r: Omit<RemovedSigningKeyRecord, 'mac'>): string {
  return JSON.stringify([
    'tessera signing key v3',
    r.kid,
    r.alg,
    publicPart(r.publicJwk),
    r.createdAt,
    r.activatesAt,
    r.retiresAt ?? null,
    r.successorKid ?? null,
  ]);
}

const MAC_INFO = 'tessera signing key mac v1';

function macOf(master: MasterKey, r: Omit<RemovedSigningKeyRecord, 'mac'>): string {
  const covered = r.retiresAt === undefined && r.successorKid === undefined ? authenticated(r) : authenticatedWithEnd(r);
  return createHmac('sha256', deriveMacKey(master, MAC_INFO)).update(covered).digest('base64url');
}

/** What seals `r`'s end at `retiresAt`, when `successor` activates: its new MAC, written where its MAC is still `r.mac`. */
function sealOf(master: MasterKey, r: SigningKeyRecord & { mac: string }, retiresAt: number, successor: string): SigningKeySeal {
  return { kid: r.kid, from: r.mac, retiresAt, successorKid: successor, mac: macOf(master, { ...r, retiresAt, successorKid: successor }) };
}

function macMatches(master: MasterKey, r: RemovedSigningKeyRecord): boolean {
  if (r.mac === undefined) return false;
  const want = Buffer.from(macOf(master, r));
  const got = Buffer.from(r.mac);
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * The private key (PKCS #8 DER) of a stored row: sealed with its authenticated fields as associated
 * data, or (a row with no MAC, written before) its kid alone.
 *
 * @throws {MasterKeyError} when it does not open.
 */
export function unsealSigningKey(master: MasterKey, record: SigningKeyRecord): Buffer {
  return unseal(master, record.sealedPrivateKey, record.mac === undefined ? record.kid : authenticated(record));
}

function sealedRecord(master: MasterKey, fields: Omit<SigningKeyRecord, 'sealedPrivateKey' | 'mac'>, pkcs8: Uint8Array): SigningKeyRecord {
  return { ...fields, sealedPrivateKey: seal(master, pkcs8, authenticated(fields)), mac: macOf(master, fields) };
}

/**
 * Generate a key and its record (private key sealed under the master key, schedule authenticated);
 * with `end`, its end sealed too (a key added before a pending one, which takes over from it).
 */
export function newKeyRecord(
  master: MasterKey,
  alg: SigningAlgorithm,
  now: number,
  activatesAt: number,
  end?: { readonly retiresAt: number; readonly successorKid: string },
): SigningKeyRecord {
  const { privateKey, publicJwk } = generateSigningKey(alg);
  const kid = jwkThumbprint(publicJwk);
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  return sealedRecord(master, { kid, alg, publicJwk, createdAt: now, activatesAt, ...(end ?? {}) }, pkcs8);
}

/**
 * Why a row's public part is refused, or undefined: the alg one Tessera signs with, the kid the
 * RFC 7638 thumbprint of the public key. Needs no master key.
 */
function publicCheck(record: RemovedSigningKeyRecord): string | undefined {
  if (!(SIGNING_ALGORITHMS as readonly string[]).includes(record.alg)) {
    return `its alg "${String(record.alg).slice(0, 16)}" is not one Tessera signs with`;
  }
  let thumbprint: string;
  try {
    thumbprint = jwkThumbprint(record.publicJwk);
  } catch {
    return 'its public key is not a usable JWK';
  }
  return thumbprint === record.kid ? undefined : 'its kid is not the RFC 7638 thumbprint of its public key';
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

  /** Read the key set from the store (at start-up, at every sync, and after an unknown kid). */
  async reload(): Promise<void> {
    const read = ++this.#reads;
    const records = await this.#store.listSigningKeys();
    // A read that ends after a later one was applied (a kid-miss read held up while a sync read a
    // newer key set) is older than what is in place: applying it would drop a key added meanwhile.
    if (read < this.#applied) return;
    this.#applied = read;
    const previous = this.#byKid;
    // Rows without a MAC are those of a store not yet upgraded (see upgrade()); once any row has
    // one, a row without is refused: a MAC stripped cannot bring back the kid-only sealing.
    const legacy = records.every((r) => r.mac === undefined);
    const listed: CompiledKey[] = records.map((record): CompiledKey => {
      const old = previous.get(record.kid);
      if (old?.vanished) {
        // A row deleted behind this instance, listed again: the very row deleted (restored from a
        // backup, say) is checked again as any row; one of other contents under its kid (the key
        // sealed again, another schedule) stays refused, as the row deleted was.
        return sameKey(old.record, record)
          ? this.#compile(record, legacy)
          : { record: old.record, retiresAt: null, publishedUntil: null, invalid: REWRITTEN, vanished: true };
      }
      // A row whose key changed under the same kid (written by someone else than Tessera) is checked again.
      if (old !== undefined && sameKey(old.record, record)) {
        // The very row this instance last trusted, written back: checked again as any row.
        if (old.displaced) return this.#compile(record, legacy);
        return {
          record,
          retiresAt: null,
          publishedUntil: null,
          ...(old.verification ? { verification: old.verification } : {}),
          ...(old.invalid !== undefined ? { invalid: old.invalid } : {}),
          ...(old.signer ? { signer: old.signer } : {}),
        };
      }
      const compiled = this.#compile(record, legacy);
      // A row this instance trusted, altered since and now refused: its schedule as written now is
      // not authenticated, so it does not place the key. Placed by it, a key moved before the key
      // it retired (its activates_at and created_at set earlier) would bring that key back into
      // signing, and into the JWKS for good: the key rotated out (after a compromise, say) by
      // whoever can write to the database without the master key. It keeps the place this
      // instance last trusted, refused: nothing signs until a key activates after it.
      if (compiled.invalid !== undefined && old !== undefined && (old.invalid === undefined || old.displaced)) {
        return { record: old.record, retiresAt: null, publishedUntil: null, invalid: `${compiled.invalid}; ${DISPLACED}`, displaced: true };
      }
      return compiled;
    });
    const keys = listed.concat(this.#vanished(listed)).sort((a, b) => scheduleOrder(a.record, b.record));
    for (let i = 0; i < keys.length; i++) {
      const successor = keys[i + 1];
      const k = keys[i] as CompiledKey;
      // A row's sealed end (authenticated: only that of a row that passed the checks) ends it
      // whatever follows it in the schedule as read: its successor's row deleted, or refused and
      // so placed where its rewritten schedule says.
      const sealed = k.invalid === undefined ? k.record.retiresAt : undefined;
      const end =
        successor === undefined
          ? sealed
          : sealed === undefined
            ? successor.record.activatesAt
            : Math.min(sealed, successor.record.activatesAt);
      if (end !== undefined) {
        k.retiresAt = end;
        // Another instance goes on signing with this key until it reads its successor (up to
        // `propagation` later: at once after `tessera keys rotate --now`).
        k.publishedUntil = end + (this.#schedule.propagation ?? 0) + this.#schedule.maxTokenTtl + SKEW;
      }
    }
    this.#keys = keys;
    this.#byKid = new Map(keys.map((k) => [k.record.kid, k]));
    this.#removed = undefined;
    this.#jwksCache = undefined;
  }

  /**
   * The keys this instance held that the store no longer lists although their publication window
   * is open (pending, active, or retired with tokens still live): deleted by someone other than
   * housekeeping, which removes a key only once its window has closed (on a clock up to
   * {@link SKEW} ahead of this one). Such a key is kept in its place in the schedule, refused: it no
   * longer signs (every other instance, and any started now, no longer publishes it, so its tokens
   * would be refused there), and the key before it does not sign again (it may be one rotated out
   * after a compromise). Signing resumes with the next key that activates (`tessera keys rotate
   * --now`); the refused entry is dropped once its own window closes. A key deleted while pending
   * is dropped as soon as a key added after it is listed (a rotation, `rotation_interval`'s
   * included, which does not wait for it): the rotation it stood for was replaced, and it neither
   * takes over at its time nor holds the next rotation back. Only a key that passed every check
   * counts (`listed` as compiled, none `invalid`): a row refused (its MAC wrong, not sealed under
   * the master key, a kid not its thumbprint) is not a rotation, and one written by whoever can
   * write to the database without the master key must not drop the deleted key and so keep the key
   * before it signing past its end. The very row written back is accepted again at the next read
   * (see {@link KeyManager.reload}). An instance started after the deletion cannot tell: it never
   * saw the key.
   */
  #vanished(listed: readonly CompiledKey[]): CompiledKey[] {
    const kids = new Set(listed.map((k) => k.record.kid));
    const now = this.#now();
    return this.#keys
      .filter((k) => !kids.has(k.record.kid) && (k.publishedUntil === null || k.publishedUntil >= now + SKEW))
      .filter((k) => !(k.record.activatesAt > now && listed.some((l) => l.invalid === undefined && addedAfter(l.record, k.record))))
      .map((k) => ({ record: k.record, retiresAt: null, publishedUntil: null, invalid: DELETED, vanished: true }));
  }

  /**
   * Check a stored row before it is trusted: whoever can write to the database but holds no master
   * key must not get a key of theirs published or accepted (a row of their own, a public key
   * replaced), nor a key signing under another kid or alg. The kid must be the RFC 7638 thumbprint
   * of the public key, the alg one Tessera signs with and fitting the key, and (with the master
   * key) its MAC must match its kid, alg, public key and schedule, the sealed private key must open
   * with those as the AEAD's associated data (a row without a MAC: its kid, and only in a store not
   * yet upgraded, `legacy`) and be the private half of that public key. A refused row keeps its
   * place in the schedule, so a key it would have retired does not take over again: when it is the
   * active one, nothing signs (`signing_key_unavailable`) and the instance is not ready.
   */
  #compile(record: SigningKeyRecord, legacy: boolean): CompiledKey {
    const base = { record, retiresAt: null, publishedUntil: null };
    const refused = publicCheck(record);
    if (refused !== undefined) return { ...base, invalid: refused };
    let verification: VerificationKey;
    try {
      verification = importJwk({ ...publicPart(record.publicJwk), kid: record.kid, alg: record.alg }, { algorithms: [record.alg] });
    } catch {
      return { ...base, invalid: `its public key does not fit its alg ${record.alg}` };
    }
    if (this.#master === undefined) return { ...base, verification };
    if (record.mac === undefined && !legacy) {
      return {
        ...base,
        verification,
        invalid:
          'its schedule is not authenticated: it has no MAC while other keys of the store have one (removed, or sealed again under its kid alone)',
      };
    }
    if (record.mac !== undefined && !macMatches(this.#master, record)) {
      return {
        ...base,
        verification,
        invalid:
          'its MAC does not match its kid, alg, public key and schedule (its schedule or sealed end altered or removed, the MAC copied from another row, or another master key than the one it was made under)',
      };
    }
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey({ key: unsealSigningKey(this.#master, record), format: 'der', type: 'pkcs8' });
    } catch {
      return {
        ...base,
        verification,
        invalid:
          'its sealed private key does not open under the master key and this kid (altered, copied from another row, or sealed under another master key)',
      };
    }
    const derived = publicPart(createPublicKey(privateKey).export({ format: 'jwk' }) as Record<string, unknown>);
    if (JSON.stringify(derived) !== JSON.stringify(publicPart(record.publicJwk))) {
      return { ...base, verification, invalid: 'its sealed private key is not the private half of its public key' };
    }
    return { ...base, verification, signer: createSigner(record.alg as SigningAlgorithm, record.kid, privateKey) };
  }

  #active(now: number): CompiledKey | undefined {
    for (let i = this.#keys.length - 1; i >= 0; i--) {
      const k = this.#keys[i] as CompiledKey;
      if (k.record.activatesAt <= now) return k;
    }
    return undefined;
  }

  /**
   * Whether `k`'s sealed end has passed at `now`: it then never signs, even as the last key
   * activated (its successor's row deleted, or refused and placed before it).
   */
  #ended(k: CompiledKey, now: number): boolean {
    return k.invalid === undefined && k.record.retiresAt !== undefined && k.record.retiresAt <= now;
  }

  #state(k: CompiledKey, now: number, active: CompiledKey | undefined): KeyState {
    if (k.record.activatesAt > now) return 'pending';
    if (k === active && !this.#ended(k, now)) return 'active';
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
      sealedEnd: k.record.retiresAt ?? null,
      successor: k.record.successorKid ?? null,
      ...(k.invalid !== undefined ? { invalid: k.invalid } : {}),
    }));
  }

  /** The signer of the key active at `now`, or `undefined` when no key is active. */
  signer(now = this.#now()): JwsSigner | undefined {
    const k = this.#active(now);
    return k === undefined || k.invalid !== undefined || this.#ended(k, now) ? undefined : this.#open(k);
  }

  #open(k: CompiledKey): JwsSigner {
    if (k.signer === undefined) {
      if (this.#master === undefined) throw new Error('signing needs the master key (TESSERA_MASTER_KEY or <data_dir>/master.key)');
      const der = unsealSigningKey(this.#master, k.record);
      k.signer = createSigner(k.record.alg as SigningAlgorithm, k.record.kid, createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }));
    }
    return k.signer;
  }

  /**
   * Check that the master key is the one the stored keys were sealed with: some stored key passed
   * every check under it, else it opens the key signing at `now` (else the newest stored one).
   * Another master key than the keys were sealed with (a stale `TESSERA_MASTER_KEY`) is then found
   * before a server serves or a rotation writes, not at the first token request, nor once a key
   * sealed under it activates and no other instance can sign with it.
   *
   * @throws {MasterKeyError} `master_key_mismatch`.
   */
  verifyMaster(now = this.#now()): void {
    if (this.#master === undefined) return;
    // A stored row that passed every check under this master key (its MAC, its sealed private key)
    // proves it the one the store's keys were sealed with: a refused active row is then that row's
    // fault, named by readiness and `tessera keys list`, and the recovery they name (`tessera keys
    // rotate --now`) must not be refused as another master key.
    if (this.#keys.some((k) => k.invalid === undefined && k.signer !== undefined)) return;
    const k = this.#active(now) ?? this.#keys.at(-1);
    if (k !== undefined) this.#open(k);
  }

  /** KeySource: published keys only, by kid. */
  lookup(kid: string | undefined, alg: JwsAlgorithm): VerificationKey | KeyMiss {
    if (kid === undefined) return 'unknown';
    const k = this.#byKid.get(kid);
    if (k === undefined || k.invalid !== undefined || !k.verification?.checks.has(alg)) return 'unknown';
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
    return k?.invalid === undefined && k?.verification?.checks.has(alg) ? k.verification : 'unknown';
  }

  /**
   * The keys housekeeping deleted, by kid (the store keeps their public part, not the private key):
   * to recognise a leaked token such a key signed (`tessera scan`; every such token has expired).
   * Never to accept a token. Read from the store once, and again after a reload.
   */
  async lookupRemoved(kid: string, alg: JwsAlgorithm): Promise<VerificationKey | KeyMiss> {
    this.#removed ??= this.#store.listRemovedSigningKeys().then((records) => {
      const map = new Map<string, VerificationKey>();
      // As for the stored keys (see reload): rows without a MAC pass only in a store not upgraded.
      const legacy = this.#keys.every((k) => k.record.mac === undefined) && records.every((r) => r.mac === undefined);
      for (const r of records) {
        // A public part planted by whoever can write to the database would have scan name the
        // tokens of their key as this issuer's: checked as a stored key is (thumbprint, MAC).
        if (publicCheck(r) !== undefined) continue;
        if (this.#master !== undefined && !(r.mac === undefined ? legacy : macMatches(this.#master, r))) continue;
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
        .filter((k) => k.invalid === undefined && (k.publishedUntil === null || k.publishedUntil >= now))
        .map((k) => ({ ...publicPart(k.record.publicJwk), kid: k.record.kid, alg: k.record.alg, use: 'sig' }));
      this.#jwksCache = { at: now, body: JSON.stringify({ keys }) };
    }
    return { body: this.#jwksCache.body, maxAge: this.#schedule.jwksMaxAge };
  }

  /**
   * Add a key. By default it activates `publish_ahead` from now (pre-publication; at least
   * `jwks_max_age` + `propagation` + 1 s after every instance published it); `immediate`
   * activates it at once (after a compromise: verifiers pick it up on their kid-miss refetch).
   * A pre-published key is added only while none is pending, checked in the store's write: of two
   * processes rotating at once, one adds a key.
   *
   * @throws {StoreConflictError} `signing_key_pending` (not `immediate`) when a key is pending.
   */
  async rotate(options: { immediate?: boolean; algorithm?: SigningAlgorithm } = {}): Promise<SigningKeyRecord> {
    const record = await this.#add({ ...options, unlessPending: !options.immediate });
    if (record === undefined) throw new StoreConflictError('signing_key_pending', 'another signing key is pending; nothing was added');
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
    // publish_ahead is no longer than jwks_max_age. And the instance that signs may run up to SKEW
    // ahead of the clock that wrote the schedule (as a verifier's may behind at retirement).
    const { publishAhead, jwksMaxAge, propagation = 0 } = this.#schedule;
    const activatesAt = options.immediate ? now : now + Math.max(publishAhead, jwksMaxAge + propagation + SKEW + 1);
    const master = this.#master;
    // Where the new key sorts (see scheduleOrder): the store numbers it after every key it holds.
    const before = (r: SigningKeyRecord) => r.activatesAt < activatesAt || (r.activatesAt === activatesAt && r.createdAt <= now);
    let record: SigningKeyRecord;
    let added: boolean | undefined;
    for (let attempt = 1; ; attempt++) {
      // Read just before the write: the keys to seal are those the store holds now.
      await this.reload();
      const trusted = this.#keys.filter((k) => k.invalid === undefined && !k.vanished);
      // A key already pending after it takes over from it (`--now` while a key is pending).
      const next = trusted.find((k) => !before(k.record));
      record = newKeyRecord(
        master,
        options.algorithm ?? this.#schedule.algorithm,
        now,
        activatesAt,
        next && { retiresAt: next.record.activatesAt, successorKid: next.record.kid },
      );
      // Every key before it that passed the checks gets its end sealed at the new key's
      // activation (or keeps an earlier one), in the same write: then past it no such key signs,
      // whatever becomes of the new key's row. A refused row cannot be (its MAC would then
      // authenticate what whoever wrote it chose); it does not sign anyway. An end not yet passed
      // whose successor the store no longer holds (a pending key deleted) moves to the new key's
      // activation, as the deleted key is dropped from the schedule (see #vanished); an end
      // passed never moves: a key retired does not sign again.
      const held = new Set(trusted.map((k) => k.record.kid));
      const seal: SigningKeySeal[] = [];
      for (const k of trusted) {
        const r = k.record;
        const open =
          r.retiresAt === undefined ||
          r.retiresAt > activatesAt ||
          (r.retiresAt > now && r.retiresAt !== activatesAt && !held.has(r.successorKid ?? ''));
        if (r.mac !== undefined && before(r) && open) {
          seal.push(sealOf(master, { ...r, mac: r.mac }, activatesAt, record.kid));
        }
      }
      try {
        added = await this.#store.addSigningKey(record, {
          ...(options.unlessPending ? { unlessPendingAfter: now } : {}),
          ...(seal.length > 0 ? { seal } : {}),
        });
        break;
      } catch (e) {
        // Another rotation sealed one of these keys first: read again and seal what it left.
        if (!(e instanceof StoreConflictError && e.code === 'signing_key_stale') || attempt >= 5) throw e;
      }
    }
    await this.reload();
    // Only `false` says nothing was added: a custom Store written before the answer (its
    // `Promise<void>`) ignores `unlessPendingAfter` and has added the key.
    return added === false ? undefined : record;
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
    // A pending key whose row was deleted does not count: the store no longer holds it, and the
    // key added now replaces it (see #vanished).
    const pending = this.#keys.some((k) => k.record.activatesAt > now && !k.vanished);
    if (interval !== undefined && this.#master !== undefined && active && !pending) {
      // Another instance may rotate at the same moment: the store adds one key between them.
      if (now - active.record.activatesAt >= interval - this.#schedule.publishAhead) rotated = await this.#add({ unlessPending: true });
    }
    if (removed.length > 0 && !rotated) await this.reload();
    return rotated ? { rotated, removed } : { removed };
  }

  /**
   * Authenticate the rows a Tessera before the MAC wrote (each private key sealed under its kid
   * alone, no MAC), once: at the first start with the master key, while no stored key has a MAC.
   * Each that passes every check is sealed again with its authenticated fields as associated data
   * and gets its MAC, and each removed key's public part whose kid is its thumbprint gets its MAC,
   * in one write (of processes starting at once, one writes). From then on a row without a MAC is
   * refused, so stripping one does not bring the old sealing back. What this cannot tell: a row
   * altered before the upgrade, or one sealed before it and written back later in place of every
   * stored key, is authenticated as it then is; the audit event names each key it sealed.
   *
   * @returns the kids sealed again, and the removed kids given a MAC.
   */
  async upgrade(): Promise<{ keys: string[]; removed: string[] }> {
    const master = this.#master;
    const records = master === undefined ? [] : await this.#store.listSigningKeys();
    if (master === undefined || records.length === 0 || records.some((r) => r.mac !== undefined)) return { keys: [], removed: [] };
    const keys = records
      .filter((r) => this.#compile(r, true).invalid === undefined)
      .map((r) => {
        const next = sealedRecord(master, r, unseal(master, r.sealedPrivateKey, r.kid));
        return { kid: r.kid, from: r.sealedPrivateKey, sealedPrivateKey: next.sealedPrivateKey, mac: next.mac as string };
      });
    if (keys.length === 0) return { keys: [], removed: [] };
    const removed = (await this.#store.listRemovedSigningKeys())
      .filter((r) => r.mac === undefined && publicCheck(r) === undefined)
      .map((r) => ({ kid: r.kid, mac: macOf(master, r) }));
    if (!(await this.#store.upgradeSigningKeys({ keys, removed }))) return { keys: [], removed: [] };
    await this.reload();
    return { keys: keys.map((k) => k.kid), removed: removed.map((r) => r.kid) };
  }

  /** True when some key is active at `now` (readiness). */
  ready(now = this.#now()): boolean {
    return this.readiness(now).ok;
  }

  /**
   * Readiness with its reason: none when no key was ever active, else the active key's kid and why
   * its row is refused (deleted behind this instance, altered), and what recovers. Names no key
   * material (the kid is the public key's thumbprint, published while it was).
   */
  readiness(now = this.#now()): { readonly ok: true } | { readonly ok: false; readonly detail: string } {
    const k = this.#active(now);
    if (k === undefined) return { ok: false, detail: 'no active signing key' };
    if (this.#ended(k, now)) {
      const kid = k.record.successorKid ?? '';
      const s = this.#byKid.get(kid);
      const why =
        s === undefined
          ? 'is not in the store (its row deleted)'
          : s.invalid !== undefined
            ? `is refused: ${s.invalid}`
            : 'is not after it in the schedule as stored';
      return {
        ok: false,
        detail: `signing key ${k.record.kid.slice(0, 64)} ended at ${new Date((k.record.retiresAt as number) * 1000).toISOString()} (sealed when ${kid.slice(0, 64)} was added), and ${kid.slice(0, 64)} ${why}: nothing signs; ${RECOVER}`,
      };
    }
    if (k.invalid === undefined) return { ok: true };
    return { ok: false, detail: `signing key ${k.record.kid.slice(0, 64)} refused: ${k.invalid}; ${RECOVER}` };
  }
}
