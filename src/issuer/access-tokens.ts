/**
 * This issuer's own access tokens: signing RFC 9068 JWTs with the active key, and checking a token
 * presented back to the service (as a subject or actor token, for revocation, introspection or the
 * admin API), with a cache of tokens already checked.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { uuidv7 } from '../audit/id.ts';
import { ASYMMETRIC_ALGORITHMS, type JwsAlgorithm } from '../core/jose/algorithms.ts';
import { decodeJsonSegment, KEY_REFERENCE_HEADERS, splitCompact } from '../core/jose/compact.ts';
import type { JsonObject } from '../core/jose/json.ts';
import type { VerificationKey } from '../core/jose/jwk.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import type { KeyMiss } from '../core/ports.ts';
import { BoundedMap } from '../core/verify/bounded-map.ts';
import type { RevocationList } from '../core/verify/revocation.ts';
import type { KeyManager } from './keys.ts';
import { sha256 } from './secrets.ts';
import type { JwsSigner } from './signer.ts';

const MAX_TOKEN_SIZE = 8192;

/** A token this service issued, after its signature and type were checked. */
export interface OwnToken {
  readonly kid: string;
  readonly alg: JwsAlgorithm;
  readonly claims: JsonObject;
  readonly subject: string;
  readonly clientId: string;
  readonly jti: string;
  readonly exp: number;
  readonly iat: number;
  readonly grantId: string;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly act: JsonObject | null;
  /** RFC 9449 `cnf.jkt`, when the token is sender-constrained. */
  readonly jkt: string | undefined;
}

/** A signature waiting for the end of the event loop's turn (see {@link AccessTokens.signSoon}). */
interface PendingSignature {
  readonly signer: JwsSigner;
  readonly claims: string;
  readonly resolve: (token: string) => void;
  readonly reject: (error: unknown) => void;
}

/** What an access token is signed for. */
export interface AccessTokenSpec {
  readonly client: { readonly id: string };
  readonly subject: string;
  readonly audiences: readonly string[];
  readonly scopes: readonly string[];
  readonly act: JsonObject | null;
  readonly grantId: string;
  readonly now: number;
  readonly exp: number;
  readonly jkt?: string | undefined;
  /**
   * The issuer of the subject as the grant records it (a child grant inherits its root's). When it
   * is not this issuer, the token names it in an RFC 9493 `sub_id` (iss_sub format, §3.2.3), built
   * from it and `subject`: never copied from a presented token.
   */
  readonly subjectIssuer?: string | undefined;
}

/**
 * The RFC 9493 `sub_id` (iss_sub format, §3.2.3) of a subject of another issuer than this one, as
 * its grant records it; `undefined` for this issuer's own subjects.
 */
export function subjectId(grantIssuer: string, subject: string, own: string): JsonObject | undefined {
  return grantIssuer === own ? undefined : { format: 'iss_sub', iss: grantIssuer, sub: subject };
}

export class AccessTokens {
  readonly #issuer: string;
  readonly #keys: KeyManager;
  readonly #revocations: RevocationList;
  readonly #own = new BoundedMap<string, OwnToken>(10_000);
  #pending: PendingSignature[] = [];

  constructor(issuer: string, keys: KeyManager, revocations: RevocationList) {
    this.#issuer = issuer;
    this.#keys = keys;
    this.#revocations = revocations;
  }

  /**
   * Sign an RFC 9068 access token now. For a caller that reaches this together with others
   * already (token exchange: the grants of one group commit are answered in one go, so their
   * signatures already follow each other); anyone else wants {@link AccessTokens.signSoon}.
   */
  sign(spec: AccessTokenSpec): { token: string; jti: string } {
    const { signer, claims, jti } = this.#prepare(spec);
    return { token: signer.sign(claims), jti };
  }

  /**
   * Sign an RFC 9068 access token at the end of the event loop's current turn, back to back with
   * every other token asked for in that turn. Inside a loaded server a P-256 signature measured
   * ~1.8× its cost in a tight loop (median 53-56 µs against 30): each one reads all of OpenSSL's
   * ~150 KB precomputed table for the curve's generator (in constant time), which the request
   * handling between two signatures evicts from the CPU caches. Signed in a row, it stays cached:
   * about a third less CPU per client_credentials token under load (bench/README.md), for a wait
   * of one turn.
   */
  async signSoon(spec: AccessTokenSpec): Promise<{ token: string; jti: string }> {
    const { signer, claims, jti } = this.#prepare(spec);
    const token = await new Promise<string>((resolve, reject) => {
      if (this.#pending.length === 0) setImmediate(this.#signPending);
      this.#pending.push({ signer, claims, resolve, reject });
    });
    return { token, jti };
  }

  /** The signer and the serialized claims of a token; throws when no key can sign. */
  #prepare(spec: AccessTokenSpec): { signer: JwsSigner; claims: string; jti: string } {
    // Every grant names its subject (a client id, a signed-in person, a verified token's sub); an
    // empty one is a bug upstream of here, never a token for nobody.
    if (spec.subject === '') throw new Error('an access token needs a non-empty subject');
    const signer = this.#keys.signer(spec.now);
    if (signer === undefined) throw new OAuthError('signing_key_unavailable');
    const jti = uuidv7();
    const claims: Record<string, unknown> = {
      iss: this.#issuer,
      sub: spec.subject,
      aud: spec.audiences.length === 1 ? spec.audiences[0] : spec.audiences,
      exp: spec.exp,
      iat: spec.now,
      jti,
      client_id: spec.client.id,
    };
    // RFC 9493 §4.1: `sub` is kept (revocation by subject and the grants are keyed on it), and
    // `sub_id` identifies the same subject with the issuer it belongs to.
    const subId = spec.subjectIssuer === undefined ? undefined : subjectId(spec.subjectIssuer, spec.subject, this.#issuer);
    if (subId !== undefined) claims.sub_id = subId;
    if (spec.scopes.length > 0) claims.scope = spec.scopes.join(' ');
    if (spec.act !== null) claims.act = spec.act;
    claims.grant_id = spec.grantId;
    if (spec.jkt !== undefined) claims.cnf = { jkt: spec.jkt };
    return { signer, claims: JSON.stringify(claims), jti };
  }

  readonly #signPending = (): void => {
    const batch = this.#pending;
    this.#pending = [];
    for (const p of batch) {
      try {
        p.resolve(p.signer.sign(p.claims));
      } catch (e) {
        // One failed signature fails its own request, not the others signed with it.
        p.reject(e);
      }
    }
  };

  /**
   * Check a token this service issued: size, compact form, header (`typ` at+jwt, a published key,
   * no key references), signature, issuer and claim types. Expiry and revocation are checked by
   * the caller, because revocation and introspection treat them differently.
   */
  verify(token: string): OwnToken | undefined {
    return this.#verify(token, undefined);
  }

  /** {@link AccessTokens.verify}; `onMiss` is told when the token's header names a key not loaded. */
  #verify(token: string, onMiss: (() => void) | undefined): OwnToken | undefined {
    if (token.length > MAX_TOKEN_SIZE) return undefined;
    const hash = sha256(token);
    const hit = this.#own.get(hash);
    // A cached token is still re-checked against the key set: its key may have been unpublished.
    if (hit !== undefined) return typeof this.#keys.lookup(hit.kid, hit.alg) === 'string' ? undefined : hit;
    const own = checkOwnToken(token, this.#issuer, (kid, alg) => {
      const key = this.#keys.lookup(kid, alg);
      if (key === 'unknown') onMiss?.();
      return key;
    });
    if (own !== undefined) this.#own.set(hash, own);
    return own;
  }

  /**
   * {@link AccessTokens.verify}, and when the token names a key this instance has not loaded, once
   * more after reading the keys from the store (at most once a second, `KeyManager.refreshAfterMiss`):
   * another instance may have rotated in a key at once (`tessera keys rotate --now`) and signed
   * with it. Without this, that token would be refused for exchange, reported inactive, and its
   * revocation answered 200 while nothing was revoked.
   */
  async verifyFresh(token: string): Promise<OwnToken | undefined> {
    let missed = false;
    const own = this.#verify(token, () => {
      missed = true;
    });
    if (own !== undefined || !missed) return own;
    return (await this.#keys.refreshAfterMiss()) ? this.verify(token) : undefined;
  }

  /**
   * Whether the token's own `jti` is revoked (not its grant, subject or client): a revocation of
   * it would append nothing new. Only the token id is given, so only its entries are consulted.
   */
  jtiRevoked(t: OwnToken): boolean {
    return this.#revocations.isRevoked({
      issuer: this.#issuer,
      subject: undefined,
      clientId: undefined,
      delegationId: undefined,
      tokenId: t.jti,
      issuedAt: t.iat,
      expiresAt: t.exp,
    });
  }

  isRevoked(t: Pick<OwnToken, 'subject' | 'clientId' | 'grantId' | 'jti' | 'iat' | 'exp'>): boolean {
    return this.#revocations.isRevoked({
      issuer: this.#issuer,
      subject: t.subject,
      clientId: t.clientId,
      delegationId: t.grantId,
      tokenId: t.jti,
      issuedAt: t.iat,
      expiresAt: t.exp,
    });
  }
}

/**
 * An identifier claim of this service's own tokens: a non-empty string. The service never signs
 * an empty one; one signed with its key anyway is refused, as the verifier refuses it in another
 * issuer's token: "" names no subject, client, token or grant (revoking jti "" would match every
 * such token, and a grant looked up by "" is none, so never revoked).
 */
function isId(v: unknown): v is string {
  return typeof v === 'string' && v !== '';
}

/**
 * The checks of {@link AccessTokens.verify} without its cache, against the keys `lookup` serves:
 * the published ones for a token presented to the service, every key the store still holds to
 * recognise a leaked token (`tessera scan`). Expiry and revocation are the caller's. `sub`,
 * `client_id`, `jti` and `grant_id` must be non-empty strings.
 */
export function checkOwnToken(
  token: string,
  issuer: string,
  lookup: (kid: string, alg: JwsAlgorithm) => VerificationKey | KeyMiss,
): OwnToken | undefined {
  if (token.length > MAX_TOKEN_SIZE) return undefined;
  const split = splitCompact(token);
  if (!split) return undefined;
  const header = decodeJsonSegment(token.slice(0, split.dot1));
  if (!header || header.typ !== 'at+jwt' || header.crit !== undefined) return undefined;
  if (KEY_REFERENCE_HEADERS.some((h) => header[h] !== undefined)) return undefined;
  const { alg, kid } = header;
  if (typeof kid !== 'string' || typeof alg !== 'string' || !ASYMMETRIC_ALGORITHMS.includes(alg as JwsAlgorithm)) return undefined;
  const key = lookup(kid, alg as JwsAlgorithm);
  if (typeof key === 'string') return undefined;
  const check = key.checks.get(alg as JwsAlgorithm);
  if (!check?.(Buffer.from(token.slice(0, split.dot2), 'latin1'), Buffer.from(token.slice(split.dot2 + 1), 'base64url'))) {
    return undefined;
  }
  const claims = decodeJsonSegment(token.slice(split.dot1 + 1, split.dot2));
  if (!claims || claims.iss !== issuer) return undefined;
  const { sub, client_id, jti, exp, iat, grant_id, scope, aud, act } = claims;
  if (!isId(sub) || !isId(client_id) || !isId(jti) || !isId(grant_id)) return undefined;
  if (typeof exp !== 'number' || typeof iat !== 'number') return undefined;
  if (scope !== undefined && typeof scope !== 'string') return undefined;
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.every((a) => typeof a === 'string') ? aud : undefined;
  if (audiences === undefined) return undefined;
  if (act !== undefined && (typeof act !== 'object' || act === null || Array.isArray(act))) return undefined;
  const cnf = claims.cnf as JsonObject | undefined;
  if (cnf !== undefined && (typeof cnf !== 'object' || cnf === null || typeof cnf.jkt !== 'string')) return undefined;
  return {
    kid,
    alg: alg as JwsAlgorithm,
    claims,
    subject: sub,
    clientId: client_id,
    jti,
    exp,
    iat,
    grantId: grant_id,
    scopes: scope === undefined || scope === '' ? [] : scope.split(' '),
    audiences,
    act: (act as JsonObject | undefined) ?? null,
    jkt: cnf?.jkt as string | undefined,
  };
}
