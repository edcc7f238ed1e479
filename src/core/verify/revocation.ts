/**
 * The in-memory revocation view a verifier consults on every request: revoked grants (whole
 * delegation subtrees, already expanded by the token service), token ids, and subjects or clients
 * revoked as of a time. Checks are a few `Set`/`Map` lookups; the token service or a shared store
 * feeds it.
 *
 * @module
 */
import { kindOf } from '../errors.ts';
import type { Principal } from './principal.ts';

/** The token facts revocation decides on. */
export interface RevocationSubject {
  readonly issuer: string;
  readonly subject: string | undefined;
  readonly clientId: string | undefined;
  readonly delegationId: string | undefined;
  readonly tokenId: string | undefined;
  readonly issuedAt: number | undefined;
  readonly expiresAt: number;
}

/** What a verifier needs from a revocation source. */
export interface RevocationCheck {
  /** Increments on every change, so cached verification results know when to re-check. */
  readonly epoch: number;
  /**
   * Whether the token is revoked: `true` or `false`, synchronously. Called on the request path (and
   * on a cached result once `epoch` has changed), so it must answer from memory, as
   * {@link RevocationList} does: keep an in-memory view fed from your store. When it throws or
   * answers anything else (a promise: an `async` function is not awaited), the verifier refuses
   * the request with 503 `revocation_unavailable` (fail closed), handling a promise's rejection and
   * naming nothing of an error but its class.
   */
  isRevoked(token: RevocationSubject): boolean;
  /**
   * Optional: whether this source can no longer vouch for the revocation state of `token` (not
   * revoked as far as it knows, but it has not heard of revocations for too long: its feed cut
   * off). `true` refuses a token `isRevoked` does not with 503 `revocation_state_stale`, and ends
   * its open streams when the source announces the change. Synchronous, as `isRevoked`; an answer
   * other than `true` or `false` is no answer (`revocation_unavailable`).
   */
  isStale?(token: RevocationSubject): boolean;
}

/** One revocation to apply. Times are epoch seconds. */
export interface Revocation {
  /** Revoked grants, kept for the life of the list (a token of any issuer naming one is refused). */
  readonly grantIds?: readonly string[];
  /**
   * Revoked grants, each with the time its entry may be dropped (its last token has expired). With
   * `issuer`, only that issuer's tokens naming the grant are refused: a grant id is one issuer's
   * namespace, and another issuer's token carrying the same value is not of that grant.
   */
  readonly grants?: readonly { readonly id: string; readonly expiresAt: number; readonly issuer?: string }[];
  /**
   * `jti` values, each with the token's `exp` so the entry can be dropped once it expires. With
   * `issuer`, only that issuer's token of that `jti` is refused (RFC 7519 §4.1.7: a `jti` is unique
   * per issuer only); without, a token of any issuer with it.
   */
  readonly tokenIds?: readonly { readonly jti: string; readonly expiresAt: number; readonly issuer?: string }[];
  /** Every token of this subject issued at or before `at`; dropped after `expiresAt` when given. */
  readonly subjects?: readonly { readonly issuer: string; readonly subject: string; readonly at: number; readonly expiresAt?: number }[];
  /** Every token of this client issued at or before `at`; dropped after `expiresAt` when given. */
  readonly clients?: readonly { readonly issuer: string; readonly clientId: string; readonly at: number; readonly expiresAt?: number }[];
}

/**
 * A mutable revocation list.
 *
 * @example
 * ```ts
 * const revocations = new RevocationList();
 * const verifier = createVerifier({ ...options, revocation: revocations });
 * revocations.apply({ grantIds: ['g_123', 'g_124'] }); // next request with those tokens fails
 * ```
 */
/** What a revocation check is told of the token `p` stands for. */
function revocationSubject(p: Principal): RevocationSubject {
  return {
    issuer: p.issuer,
    subject: p.subject,
    clientId: p.clientId,
    delegationId: p.delegationId,
    tokenId: p.tokenId,
    issuedAt: p.issuedAt,
    expiresAt: p.expiresAt,
  };
}

/** A thrown value's class as a warning may name it (`SyntaxError`, `a string`), never its message. */
function classOf(thrown: unknown): string {
  try {
    const name = (thrown as { name?: unknown } | null | undefined)?.name;
    if (typeof name === 'string' && /^[A-Za-z_$][\w$.]{0,63}$/.test(name)) return name;
  } catch {
    // a getter that throws: no name
  }
  return kindOf(thrown);
}

/**
 * What `check` answers about the token `p` stands for: `true` (revoked), `false`, `'stale'` (not
 * revoked as far as it knows, but its `isStale` says it cannot vouch for that now), or, when it gives
 * no answer, why (`{ unanswered }`, naming no value: never a thrown error's message, which may quote
 * the token). No answer is a throw or anything but `true` or `false`: a promise (an `async` check)
 * is not awaited, and its rejection is handled here (unhandled, it would end the process). Whoever
 * asks fails closed on no answer (the verifier refuses with `revocation_unavailable`, the gateway
 * closes a stream with it): an application's check may be any function.
 */
export function revocationAnswer(check: RevocationCheck, p: Principal): boolean | 'stale' | { readonly unanswered: string } {
  const token = revocationSubject(p);
  let answer: unknown;
  try {
    answer = check.isRevoked(token);
  } catch (thrown) {
    return { unanswered: `threw ${classOf(thrown)}` };
  }
  // Revoked as far as the check knows stays revoked, stale or not (401, not a 503 to retry).
  if (answer === false) return staleAnswer(check, token);
  return settled(answer);
}

/** `check.isStale` of `token`: `'stale'`, `false`, or no answer as {@link revocationAnswer} says. */
function staleAnswer(check: RevocationCheck, token: RevocationSubject): false | 'stale' | { readonly unanswered: string } {
  let answer: unknown;
  try {
    const isStale = check.isStale;
    if (isStale === undefined) return false;
    answer = isStale.call(check, token);
  } catch (thrown) {
    return { unanswered: `isStale threw ${classOf(thrown)}` };
  }
  const a = settled(answer);
  return a === true ? 'stale' : a;
}

/** A check's answer: `true`, `false`, or why it is none (a promise's rejection handled). */
function settled(answer: unknown): boolean | { readonly unanswered: string } {
  if (answer === false || answer === true) return answer;
  if ((typeof answer === 'object' && answer !== null) || typeof answer === 'function') {
    try {
      const then = (answer as { then?: unknown }).then;
      if (typeof then === 'function') {
        then.call(answer, undefined, () => {});
        return { unanswered: 'returned a promise; it must answer synchronously (true or false)' };
      }
    } catch {
      // a `then` that throws: no answer either
    }
  }
  return { unanswered: `returned ${kindOf(answer)}, not a boolean` };
}

/**
 * The whole second a token was issued in (0 without `iat`: revoked by any entry; the verifier
 * refuses a JWT without `iat` before it gets here, since an entry is dropped once every token
 * issued until it has expired, and one without `iat` may outlive it). Revocations are
 * recorded to the second, so a fractional `iat` (a NumericDate may have one) issued earlier in the
 * revocation's second must not pass as issued after it.
 */
function issuedSecond(t: RevocationSubject): number {
  return Math.floor(t.issuedAt ?? 0);
}

/** Keep the latest `at` of a key and, when every entry for it has one, the latest `expiresAt`. */
function setAsOf(asOf: Map<string, number>, until: Map<string, number>, k: string, at: number, expiresAt: number | undefined): void {
  const known = asOf.has(k);
  asOf.set(k, Math.max(asOf.get(k) ?? 0, at));
  // An entry once applied without an expiry is kept for good.
  if (expiresAt === undefined) until.delete(k);
  else if (!known || until.has(k)) until.set(k, Math.max(until.get(k) ?? 0, expiresAt));
}

/**
 * The in-memory list of revoked grants, tokens, subjects and clients that verifiers consult on
 * every request (the token service fills it from the store's revocation log); `subscribe` lets the
 * gateway close the streams of a token as it is revoked.
 */
export class RevocationList implements RevocationCheck {
  #epoch = 0;
  /** `issuer\ngrant id` (issuer empty: any issuer's) → when its entry may be dropped (Infinity: never). */
  readonly #grants = new Map<string, number>();
  /** `issuer\njti` (issuer empty: any issuer's) → when its entry may be dropped. */
  readonly #tokens = new Map<string, number>();
  /** `issuer\nsubject` → revoked as of; and when that entry may be dropped. */
  readonly #subjects = new Map<string, number>();
  readonly #subjectsUntil = new Map<string, number>();
  readonly #clients = new Map<string, number>();
  readonly #clientsUntil = new Map<string, number>();
  readonly #listeners = new Set<(r: Revocation) => void>();
  /** Issuers whose tokens this list cannot vouch for now (see {@link RevocationList.markStale}). */
  readonly #stale = new Set<string>();

  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Say whether this list can vouch for the revocation state of `issuer`'s tokens: `true` once
   * whoever feeds it has not read its source for too long (the token service's revocation log,
   * `token_service.revocation_max_staleness`), so that verifiers refuse that issuer's tokens it
   * does not hold revoked with 503 `revocation_state_stale` and the gateway ends their streams;
   * `false` once it has read it again. A change moves the epoch and is announced to subscribers
   * (with an empty revocation), as an applied revocation is.
   */
  markStale(issuer: string, stale: boolean): void {
    if (stale === this.#stale.has(issuer)) return;
    if (stale) this.#stale.add(issuer);
    else this.#stale.delete(issuer);
    this.#epoch++;
    for (const listener of this.#listeners) listener({});
  }

  /** Whether the token's issuer is one this list cannot vouch for now ({@link RevocationList.markStale}). */
  isStale(t: RevocationSubject): boolean {
    return this.#stale.size > 0 && this.#stale.has(t.issuer);
  }

  apply(r: Revocation): void {
    for (const g of r.grantIds ?? []) this.#grants.set(`\n${g}`, Number.POSITIVE_INFINITY);
    for (const g of r.grants ?? []) {
      const k = `${g.issuer ?? ''}\n${g.id}`;
      this.#grants.set(k, Math.max(this.#grants.get(k) ?? 0, g.expiresAt));
    }
    for (const t of r.tokenIds ?? []) this.#tokens.set(`${t.issuer ?? ''}\n${t.jti}`, t.expiresAt);
    for (const s of r.subjects ?? []) setAsOf(this.#subjects, this.#subjectsUntil, `${s.issuer}\n${s.subject}`, s.at, s.expiresAt);
    for (const c of r.clients ?? []) setAsOf(this.#clients, this.#clientsUntil, `${c.issuer}\n${c.clientId}`, c.at, c.expiresAt);
    this.#epoch++;
    for (const listener of this.#listeners) listener(r);
  }

  /** Be told of every applied revocation (used to close long-lived streams). */
  subscribe(listener: (r: Revocation) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  isRevoked(t: RevocationSubject): boolean {
    // An issuer is never empty (the verifier refuses an empty `iss`), so `\n…` is an any-issuer entry.
    if (this.#grants.size > 0 && t.delegationId !== undefined) {
      if (this.#grants.has(`${t.issuer}\n${t.delegationId}`) || this.#grants.has(`\n${t.delegationId}`)) return true;
    }
    if (this.#tokens.size > 0 && t.tokenId !== undefined) {
      if (this.#tokens.has(`${t.issuer}\n${t.tokenId}`) || this.#tokens.has(`\n${t.tokenId}`)) return true;
    }
    if (this.#subjects.size > 0 && t.subject !== undefined) {
      const at = this.#subjects.get(`${t.issuer}\n${t.subject}`);
      if (at !== undefined && issuedSecond(t) <= at) return true;
    }
    if (this.#clients.size > 0 && t.clientId !== undefined) {
      const at = this.#clients.get(`${t.issuer}\n${t.clientId}`);
      if (at !== undefined && issuedSecond(t) <= at) return true;
    }
    return false;
  }

  /**
   * Drop entries whose tokens have all expired anyway: token ids past their `exp`, and grants,
   * subjects and clients past the `expiresAt` they were applied with. A long-running process
   * would otherwise keep every revocation it ever saw.
   */
  prune(nowSeconds: number): void {
    for (const [k, exp] of this.#tokens) if (exp < nowSeconds) this.#tokens.delete(k);
    for (const [id, until] of this.#grants) if (until < nowSeconds) this.#grants.delete(id);
    for (const [k, until] of this.#subjectsUntil) {
      if (until < nowSeconds) {
        this.#subjectsUntil.delete(k);
        this.#subjects.delete(k);
      }
    }
    for (const [k, until] of this.#clientsUntil) {
      if (until < nowSeconds) {
        this.#clientsUntil.delete(k);
        this.#clients.delete(k);
      }
    }
  }

  get size(): { grants: number; tokens: number; subjects: number; clients: number } {
    return { grants: this.#grants.size, tokens: this.#tokens.size, subjects: this.#subjects.size, clients: this.#clients.size };
  }
}
