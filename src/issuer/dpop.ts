/**
 * DPoP proofs at the token endpoint (RFC 9449 §4.3, §5): a proof sent with a token request binds
 * the issued access token to the proof's key (`cnf.jkt`). Unlike a proof for a resource request it
 * carries no `ath`, since no access token accompanies it. With `token_service.dpop.nonce` it must
 * also carry a nonce this server handed out (RFC 9449 §8).
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { ASYMMETRIC_ALGORITHMS, isJwsAlgorithm, type JwsAlgorithm } from '../core/jose/algorithms.ts';
import { decodeJsonSegment, KEY_REFERENCE_HEADERS, splitCompact } from '../core/jose/compact.ts';
import { importJwk } from '../core/jose/jwk.ts';
import { normalizeTyp } from '../core/jose/typ.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { DPOP_MAX_RSA_BITS, type DpopNonceSource, htuClaimOf, htuOf } from '../core/verify/dpop.ts';
import { jtiDigest } from '../core/verify/replay.ts';

export interface TokenEndpointProofOptions {
  /** Absolute URL the proof's `htu` must name (scheme, host and path compared). */
  readonly url: string;
  readonly method: string;
  /** Epoch seconds. */
  readonly now: number;
  /** How old a proof may be, seconds. */
  readonly iatWindow: number;
  /** Algorithms accepted (asymmetric only): those the metadata advertises. */
  readonly algorithms: ReadonlySet<JwsAlgorithm>;
  /** Record a proof `jti` (per key) until it expires; false on replay. */
  readonly useOnce: (key: string, expiresAt: number) => Promise<boolean>;
  /** Server-provided nonces the proof must carry one of (RFC 9449 §8); none required when absent. */
  readonly nonces?: DpopNonceSource | undefined;
}

const SKEW = 30;

/** HKDF `info` of the key the token endpoint's DPoP nonces are MACed with (derived from the master key). */
export const DPOP_NONCE_KEY_INFO = 'tessera dpop nonce v1';

/**
 * Check a token-endpoint DPoP proof.
 * @returns the RFC 7638 thumbprint of the proof key, for `cnf.jkt`.
 * @throws {OAuthError} `dpop_proof_invalid`, `dpop_proof_replayed` for a `jti` already recorded, or `dpop_nonce_required` (`use_dpop_nonce`, with the
 *   nonce to retry with) for an otherwise valid proof without a valid nonce.
 */
export async function checkTokenEndpointProof(proof: string, o: TokenEndpointProofOptions): Promise<string> {
  const fail = () => new OAuthError('dpop_proof_invalid');
  if (proof.length > 8192) throw fail();
  const split = splitCompact(proof);
  if (!split) throw fail();
  const header = decodeJsonSegment(proof.slice(0, split.dot1));
  const claims = decodeJsonSegment(proof.slice(split.dot1 + 1, split.dot2));
  if (!header || !claims || typeof header.typ !== 'string' || normalizeTyp(header.typ) !== 'dpop+jwt' || header.crit !== undefined) {
    throw fail();
  }
  const alg = header.alg;
  if (!isJwsAlgorithm(alg) || !ASYMMETRIC_ALGORITHMS.includes(alg) || !o.algorithms.has(alg)) throw fail();
  for (const h of KEY_REFERENCE_HEADERS) if (h !== 'jwk' && header[h] !== undefined) throw fail();
  let key: ReturnType<typeof importJwk>;
  try {
    key = importJwk(header.jwk, { algorithms: [alg as JwsAlgorithm], publicOnly: true, maxRsaBits: DPOP_MAX_RSA_BITS });
  } catch {
    throw fail();
  }
  const check = key.checks.get(alg as JwsAlgorithm);
  if (!check?.(Buffer.from(proof.slice(0, split.dot2), 'latin1'), Buffer.from(proof.slice(split.dot2 + 1), 'base64url'))) throw fail();
  const { jti, htm, htu, iat, ath } = claims;
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) throw fail();
  if (htm !== o.method || typeof htu !== 'string' || htuClaimOf(htu) === undefined || htuClaimOf(htu) !== htuOf(o.url)) throw fail();
  // Accepted while now < iat + window + skew, the very time its replay entry lapses.
  if (typeof iat !== 'number' || iat > o.now + SKEW || iat <= o.now - o.iatWindow - SKEW) throw fail();
  // No access token travels with a token request, so a proof naming one is for another request.
  if (ath !== undefined) throw fail();
  // Before the jti is recorded: a proof refused for its nonce is retried with a new one (and jti).
  if (o.nonces !== undefined && (typeof claims.nonce !== 'string' || !o.nonces.isValid(claims.nonce))) {
    throw new OAuthError('dpop_nonce_required', { dpopNonce: o.nonces.current() });
  }
  // The store keeps whole seconds; a NumericDate may be fractional (RFC 7519 §2). The jti (any JSON
  // string) by its SHA-256: PostgreSQL refuses a NUL in text, a 500 for anyone naming a public client.
  if (!(await o.useOnce(`dpop:${key.thumbprint}:${jtiDigest(jti)}`, Math.ceil(iat) + o.iatWindow + SKEW)))
    throw new OAuthError('dpop_proof_replayed');
  return key.thumbprint;
}
