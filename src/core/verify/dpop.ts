/**
 * DPoP proofs for resource requests (RFC 9449 §4.3, §7).
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { createHmac, createSecretKey, hkdfSync, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import { TesseraError } from '../errors.ts';
import { ASYMMETRIC_ALGORITHMS, isJwsAlgorithm, type JwsAlgorithm } from '../jose/algorithms.ts';
import { decodeJsonSegment, KEY_REFERENCE_HEADERS, splitCompact } from '../jose/compact.ts';
import { importJwk, type VerificationKey } from '../jose/jwk.ts';
import { normalizeTyp } from '../jose/typ.ts';
import type { Clock, ReplayCache, ReplayRefusal } from '../ports.ts';
import { BoundedMap } from './bounded-map.ts';
import { jtiDigest } from './replay.ts';

/** A nonce as {@link createDpopNonces} writes it: 20 bytes (slot and MAC) in unpadded base64url. */
const NONCE = /^[A-Za-z0-9_-]{27}$/;

/** Server-issued DPoP nonces (RFC 9449 §9). */
export interface DpopNonceSource {
  /** The nonce to hand out now. */
  current(): string;
  /** Whether a nonce presented in a proof is still acceptable. */
  isValid(nonce: string): boolean;
}

/**
 * HKDF `info` of the key resource-server nonces are MACed with when `dpop.nonce_secret` is set: its
 * own, neither the token endpoint's nor the one `tessera serve` derives from the master key.
 */
export const DPOP_NONCE_SECRET_KEY_INFO = 'tessera dpop nonce secret v1';

/** The nonce key from `dpop.nonce_secret` (HKDF-SHA-256, so the secret is never the key itself). */
export function dpopNonceKeyFromSecret(secret: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.alloc(0), DPOP_NONCE_SECRET_KEY_INFO, 32)));
}

/**
 * Stateless nonces: a time slot and an HMAC over it, valid for the current and previous slot, so
 * several instances sharing the secret accept each other's nonces without shared state. `secret`
 * is the HMAC key (default: random, this process only).
 */
export function createDpopNonces(
  options: { secret?: Uint8Array | KeyObject; rotationSeconds?: number; clock?: Clock } = {},
): DpopNonceSource {
  const secret = options.secret ?? randomBytes(32);
  const rotation = (options.rotationSeconds ?? 300) * 1000;
  const clock = options.clock ?? Date.now;
  // The nonces of the last two slots asked for are kept: every token response and every proof
  // check names one of them, and each would otherwise cost an HMAC.
  let recent: [number, string][] = [];
  const make = (slot: number): string => {
    for (const [s, n] of recent) if (s === slot) return n;
    const head = Buffer.alloc(4);
    head.writeUInt32BE(slot >>> 0);
    const mac = createHmac('sha256', secret).update(head).digest().subarray(0, 16);
    const nonce = Buffer.concat([head, mac]).toString('base64url');
    recent = [[slot, nonce], ...recent.slice(0, 1)];
    return nonce;
  };
  return {
    current: () => make(Math.floor(clock() / rotation)),
    isValid(nonce) {
      // Only the spelling handed out: Node's base64url decoder also reads padding, standard
      // base64 and the last character's unused bits, each another string for the same nonce.
      if (!NONCE.test(nonce)) return false;
      const slot = Buffer.from(nonce.slice(0, 6), 'base64url').readUInt32BE(0);
      const now = Math.floor(clock() / rotation) >>> 0;
      if (slot !== now && slot !== (now - 1) >>> 0) return false;
      return timingSafeEqual(Buffer.from(make(slot), 'latin1'), Buffer.from(nonce, 'latin1'));
    },
  };
}

/**
 * How long a verifier kept a proof's `jti`: it accepted the proof while its `iat` was at most
 * `retention` (`iat_window` plus clock skew) seconds old, and remembered it no longer.
 */
export interface DpopWindow {
  /** `iat_window` plus the clock skew the verifier tolerates, seconds. */
  readonly retention: number;
  /** The latest `iat` of a proof it recorded (`-Infinity`: none). */
  readonly lastIat: number;
}

interface Window {
  readonly retention: number;
  lastIat: number;
  retired: boolean;
}

/**
 * The DPoP acceptance windows of the verifiers a gateway replaced (reloads), shared by its
 * verifiers as the replay cache is. A replaced verifier remembered each proof it accepted only
 * until `iat` + its retention; a successor with a longer window would accept that proof again once
 * it was forgotten. So a proof is held to the shortest retention of every verifier that may have
 * recorded it (one that recorded a proof of that `iat` or later), its own included.
 */
export class DpopWindowHistory {
  /** Replaced windows that recorded proofs, oldest first. */
  #retired = new Set<Window>();
  /**
   * A replaced window whose last proof is older than this matters to no verifier: each refuses such
   * a proof by its own window. The longest retention any verifier may be given, then, not only the
   * ones opened so far: a later, longer one would accept what a pruned window had forgotten.
   */
  #horizon: number;
  readonly #maxEntries: number;

  /**
   * @param options.horizon the longest retention (`iat_window` plus clock skew, seconds) a verifier
   *   sharing this history may have.
   * @param options.maxEntries replaced windows kept (default 256); past it the oldest two merge
   *   into one as strict as both (a verifier of theirs still in flight then lists its own again).
   */
  constructor(options: { horizon: number; maxEntries?: number }) {
    this.#horizon = options.horizon;
    this.#maxEntries = options.maxEntries ?? 256;
  }

  /** A window for a verifier built with this retention; it counts for others once {@link retire}d. */
  open(retention: number): DpopWindow {
    this.#horizon = Math.max(this.#horizon, retention);
    const w: Window = { retention, lastIat: Number.NEGATIVE_INFINITY, retired: false };
    return w;
  }

  /**
   * The verifier of `window` recorded (or is about to record) a proof of `iat`. Also after it was
   * replaced (requests in flight at a reload): the window then counts again if it had been pruned.
   */
  record(window: DpopWindow, iat: number): void {
    const w = window as Window;
    if (iat <= w.lastIat) return;
    w.lastIat = iat;
    if (w.retired && !this.#retired.has(w)) this.#add(w);
  }

  /** The verifier of `window` was replaced: from now on its window bounds the others. */
  retire(window: DpopWindow): void {
    const w = window as Window;
    if (w.retired) return;
    w.retired = true;
    if (w.lastIat > Number.NEGATIVE_INFINITY) this.#add(w);
  }

  /** The longest a proof of `iat` may be accepted (seconds after `iat`) by a verifier of `retention`. */
  limit(iat: number, retention: number, nowSeconds: number): number {
    let limit = retention;
    const horizon = nowSeconds - this.#horizon;
    for (const w of this.#retired) {
      if (w.lastIat < horizon) this.#retired.delete(w);
      else if (iat <= w.lastIat && w.retention < limit) limit = w.retention;
    }
    return limit;
  }

  #add(w: Window): void {
    this.#retired.add(w);
    if (this.#retired.size <= this.#maxEntries) return;
    // Never dropped while it may matter (fail closed): the two oldest merge into one as strict as both.
    const [a, b] = [...this.#retired] as [Window, Window];
    this.#retired.delete(a);
    this.#retired.delete(b);
    const merged: Window = { retention: Math.min(a.retention, b.retention), lastIat: Math.max(a.lastIat, b.lastIat), retired: true };
    this.#retired = new Set([merged, ...this.#retired]);
  }
}

/** Options for checking proofs. */
export interface DpopCheckOptions {
  /** Asymmetric algorithms accepted for proofs. */
  readonly algorithms: ReadonlySet<JwsAlgorithm>;
  /** How old a proof's `iat` may be, in seconds. */
  readonly iatWindow: number;
  /** Tolerated clock difference, in seconds. */
  readonly clockSkew: number;
  readonly replay: ReplayCache;
  readonly nonces: DpopNonceSource | undefined;
  readonly maxProofSize: number;
  /**
   * The windows of verifiers this one replaced, sharing its replay cache (a gateway's reloads), and
   * this verifier's own: a proof is refused as too old once past the shortest of those that may have
   * recorded it.
   */
  readonly history?: { readonly windows: DpopWindowHistory; readonly own: DpopWindow };
}

/**
 * The proofs one HTTP request had recorded, per replay cache, as `<thumbprint>:<jti digest>`: the
 * adapters put it on each {@link VerifyRequest} they build for one request, under
 * {@link RECORDED_PROOFS}. Two verifiers on one request (an app-wide one and a stricter one on
 * some routes) sharing one replay cache each check the proof in full, but record it once: the
 * proof's one use (RFC 9449 §11.1) is the request, and the second would refuse it as a replay of
 * itself. Another request has a map of its own, so a proof used by one is refused at the next.
 */
export type RecordedProofs = WeakMap<ReplayCache, Set<string>>;

/** Where a request built by an adapter carries its {@link RecordedProofs} (not part of the public request shape). */
export const RECORDED_PROOFS: unique symbol = Symbol('tessera.recordedProofs');

/** A request that may carry its {@link RecordedProofs}. */
export interface WithRecordedProofs {
  readonly [RECORDED_PROOFS]?: RecordedProofs;
}

/** The request a proof must be bound to. */
export interface DpopContext {
  readonly method: string;
  /** Absolute request URL. */
  readonly url: string;
  /** base64url(SHA-256(access token)), the expected `ath`. */
  readonly accessTokenHash: string;
  /** The token's `cnf.jkt`: the thumbprint the proof key must have. */
  readonly jkt: string;
}

const PERCENT_ENCODED = /%[0-9A-Fa-f]{2}/g;
const UNRESERVED = /[A-Za-z0-9\-._~]/;
/** An `@` in the authority (up to the first `/`, `\`, `?` or `#` after the scheme): userinfo, even empty. */
const USERINFO = /^[^:]*:[/\\]*[^/\\?#]*@/;

/**
 * The URI a proof's `htu` is compared as (RFC 9449 §4.3): scheme, authority and path, without
 * query and fragment, after the normalizations RFC 3986 §6.2.2–6.2.3 describe. URL parsing
 * lower-cases scheme and host, drops a default port and resolves dot segments; percent-encoded
 * unreserved characters are decoded and the hex digits of the others upper-cased here, so
 * `/%7euser` and `/~user` are one resource. `undefined` unless an absolute http(s) URI without
 * userinfo: RFC 9110 §4.2.4 forbids it there, and dropping it would let `https://x@api.example/`
 * pass as a spelling of `https://api.example/`.
 */
export function htuOf(url: string): string | undefined {
  if (!URL.canParse(url)) return undefined;
  const u = new URL(url);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return undefined;
  if (u.username !== '' || u.password !== '' || USERINFO.test(url)) return undefined;
  let path = u.pathname;
  if (path.includes('%')) {
    path = path.replace(PERCENT_ENCODED, (e) => {
      const c = String.fromCharCode(Number.parseInt(e.slice(1), 16));
      return UNRESERVED.test(c) ? c : e.toUpperCase();
    });
  }
  return `${u.protocol}//${u.host}${path}`;
}

/**
 * Before the query or fragment: a backslash, whitespace or a control character, or anything not
 * ASCII. None is allowed in a URI (RFC 3986 §2), and URL parsing rewrites each instead of refusing
 * it: `\` becomes `/`, tabs and newlines are dropped, leading and trailing spaces trimmed, a
 * non-ASCII host mapped (IDNA) to another name. No URL serializer writes one there.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this finds
const NOT_URI = /^[^?#]*[\\\x00-\x20\x7f-\uffff]/;

/**
 * The URI a proof's `htu` claim names, as {@link htuOf}, or `undefined` when it is no URI that an
 * RFC 3986 parser reads as URL parsing does: `http://api.example\@evil.example/` is evil.example
 * to the one (userinfo `api.example\`), api.example (path `/@evil.example/`) to the other, so a
 * proof a client sent to evil.example would pass at api.example.
 */
export function htuClaimOf(htu: string): string | undefined {
  return NOT_URI.test(htu) ? undefined : htuOf(htu);
}

// Shared by every verifier in the process, so a key is imported for every asymmetric algorithm,
// not one verifier's allowlist (the proof's alg is checked against that before the key is used):
// else a proof sent to one verifier would narrow what another accepts for the same key.
const keyCache = new BoundedMap<string, VerificationKey>(1024);

/**
 * The largest RSA modulus a DPoP proof key may have: the proof names its own key, and at the token
 * endpoint its signature is checked before anything else vouches for the caller (a public client
 * has no other credential). 4096 bits is what any client uses at most.
 */
export const DPOP_MAX_RSA_BITS = 4096;

function proofKey(jwk: unknown): VerificationKey | undefined {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return undefined;
  const cacheKey = JSON.stringify(jwk);
  const cached = keyCache.get(cacheKey);
  if (cached) return cached;
  try {
    const key = importJwk(jwk, { algorithms: ASYMMETRIC_ALGORITHMS, publicOnly: true, maxRsaBits: DPOP_MAX_RSA_BITS });
    keyCache.set(cacheKey, key);
    return key;
  } catch {
    return undefined;
  }
}

const fail = (code: ConstructorParameters<typeof TesseraError>[0], claim?: string) => new TesseraError(code, claim ? { claim } : {});

/**
 * Check one DPoP proof against the request and the access token it accompanies.
 *
 * @returns the RFC 7638 thumbprint of the proof key (equal to the token's `cnf.jkt`), or the
 *   error: `dpop_proof_invalid` for a malformed or badly signed proof, a specific code for a wrong
 *   `htm`, `htu`, `iat`, `ath`, a replayed `jti`, `dpop_binding_mismatch` for a proof by another
 *   key than the token's, `dpop_nonce_required` with a fresh nonce, `dpop_replay_unavailable`
 *   when the replay cache cannot record the `jti` (unreachable or full), or `dpop_key_rate_limited`
 *   when the proof key's share of a bounded replay cache is full.
 */
export async function checkDpopProof(
  proof: string,
  context: DpopContext,
  options: DpopCheckOptions,
  nowSeconds: number,
  recorded?: RecordedProofs,
): Promise<{ jkt: string; nonce?: string } | TesseraError> {
  if (proof.length > options.maxProofSize) return fail('dpop_proof_invalid');
  const split = splitCompact(proof);
  if (!split) return fail('dpop_proof_invalid');
  const header = decodeJsonSegment(proof.slice(0, split.dot1));
  if (!header) return fail('dpop_proof_invalid', 'header');
  if (typeof header.typ !== 'string' || normalizeTyp(header.typ) !== 'dpop+jwt') return fail('dpop_proof_invalid', 'typ');
  const alg = header.alg;
  if (!isJwsAlgorithm(alg) || !options.algorithms.has(alg)) return fail('dpop_proof_invalid', 'alg');
  if (header.crit !== undefined) return fail('dpop_proof_invalid', 'crit');
  for (const h of KEY_REFERENCE_HEADERS) if (h !== 'jwk' && header[h] !== undefined) return fail('dpop_proof_invalid', h);
  const key = proofKey(header.jwk);
  const check = key?.checks.get(alg);
  if (!key || !check) return fail('dpop_proof_invalid', 'jwk');
  // Before the signature is checked: a key that is not the token's cannot make the proof valid,
  // and whoever holds a stolen bound token (not its key) would else have this verifier check
  // signatures under keys of its choosing (a 16384-bit RSA key costs milliseconds a check), and
  // before the jti is recorded (else its proofs could fill the replay cache, and a full cache
  // refuses every proof). The thumbprint is in the token: saying so tells its holder nothing new.
  if (key.thumbprint !== context.jkt) return new TesseraError('dpop_binding_mismatch', { claim: 'cnf' });
  const signature = Buffer.from(proof.slice(split.dot2 + 1), 'base64url');
  if (!check(Buffer.from(proof.slice(0, split.dot2), 'latin1'), signature)) return fail('dpop_proof_invalid', 'signature');

  const claims = decodeJsonSegment(proof.slice(split.dot1 + 1, split.dot2));
  if (!claims) return fail('dpop_proof_invalid', 'payload');
  const { jti, htm, htu, iat, ath, nonce } = claims;
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) return fail('dpop_proof_invalid', 'jti');
  if (typeof htm !== 'string') return fail('dpop_proof_invalid', 'htm');
  if (typeof htu !== 'string') return fail('dpop_proof_invalid', 'htu');
  if (typeof iat !== 'number') return fail('dpop_proof_invalid', 'iat');
  if (htm !== context.method) return fail('dpop_htm_mismatch', 'htm');
  const expected = htuOf(context.url);
  if (expected === undefined || htuClaimOf(htu) !== expected) return fail('dpop_htu_mismatch', 'htu');
  const retention = options.iatWindow + options.clockSkew;
  const history = options.history;
  if (
    iat > nowSeconds + options.clockSkew ||
    iat < nowSeconds - (history ? history.windows.limit(iat, retention, nowSeconds) : retention)
  ) {
    return fail('dpop_iat_invalid', 'iat');
  }
  if (typeof ath !== 'string' || ath.length !== context.accessTokenHash.length) return fail('dpop_ath_mismatch', 'ath');
  // Compare byte lengths too: a non-ASCII ath of the right length in characters is longer in
  // bytes, and timingSafeEqual throws on unequal lengths.
  const athBytes = Buffer.from(ath);
  const expectedAth = Buffer.from(context.accessTokenHash);
  if (athBytes.length !== expectedAth.length || !timingSafeEqual(athBytes, expectedAth)) return fail('dpop_ath_mismatch', 'ath');
  // With nonces, a proof naming one of the previous slot (valid until the current slot ends) is
  // answered with the current one (RFC 9449 §9: a server may send a fresh nonce on a successful
  // response), so a client that follows never pays a use_dpop_nonce round trip.
  let next: { jkt: string; nonce?: string } = { jkt: key.thumbprint };
  if (options.nonces) {
    if (typeof nonce !== 'string' || !options.nonces.isValid(nonce)) {
      return new TesseraError('dpop_nonce_required', { claim: 'nonce', dpopNonce: options.nonces.current() });
    }
    const current = options.nonces.current();
    if (nonce !== current) next = { jkt: key.thumbprint, nonce: current };
  }
  // Only a proof that passed every other check is remembered, so junk cannot fill the cache. Its
  // iat passes while the whole second nowSeconds <= iat + window + skew lasts, so the jti is kept
  // until that second is over, else the proof could be replayed within it (RFC 9449 §11.1).
  // A shared cache (the store) that cannot answer refuses the proof: accepted unrecorded, it could
  // be presented again at another instance.
  // The entry counts against the proof key, whose share of a bounded cache is bounded: else one
  // holder of one bound token sending proofs with fresh jtis fills it and locks out every other.
  // Before it is recorded: were this verifier replaced meanwhile, the proof counts as one it held.
  // The jti by its SHA-256 (jtiDigest): any JSON string, a NUL included, which the store's
  // PostgreSQL refuses; a gateway from before this recorded it as sent, so a proof it accepted can
  // be accepted once more by this one while in its window (an upgrade's overlap).
  history?.windows.record(history.own, iat);
  const replayKey = `${key.thumbprint}:${jtiDigest(jti)}`;
  // This very request recorded it in this cache already (another verifier it passed).
  const ofRequest = recorded === undefined || !(recorded instanceof WeakMap) ? undefined : recorded.get(options.replay);
  if (ofRequest?.has(replayKey)) return next;
  let first: boolean | ReplayRefusal;
  try {
    first = await options.replay.use(replayKey, Math.floor(iat + retention) + 1, key.thumbprint);
  } catch {
    return new TesseraError('dpop_replay_unavailable', { retryAfter: 5 });
  }
  // A full cache cannot check the proof (it is no replay); a key over its share is told to slow
  // down: entries free as they expire, swept at most once a second.
  if (first === 'full') return new TesseraError('dpop_replay_unavailable', { retryAfter: 5 });
  if (first === 'owner_full') return new TesseraError('dpop_key_rate_limited', { retryAfter: 1 });
  if (first !== true) return fail('dpop_replayed', 'jti');
  if (recorded instanceof WeakMap) {
    if (ofRequest === undefined) recorded.set(options.replay, new Set([replayKey]));
    else ofRequest.add(replayKey);
  }
  return next;
}
