/**
 * The JWS algorithms Tessera verifies (RFC 7518 §3, RFC 8037) and the key each one needs.
 *
 * An algorithm is usable with a key only when the key's type says so. HMAC algorithms accept only
 * `oct` secrets and asymmetric algorithms only public keys, so `none` and RS/HS confusion cannot
 * be expressed: there is no table entry for `none`, and a public key never becomes an HMAC secret.
 */

/** Algorithm names accepted in configuration, exactly as JWA spells them. */
export const JWS_ALGORITHMS = [
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'HS256',
  'HS384',
  'HS512',
] as const;

export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

/** The asymmetric algorithms usable for DPoP proofs and private_key_jwt (never HMAC). */
export const ASYMMETRIC_ALGORITHMS: readonly JwsAlgorithm[] = JWS_ALGORITHMS.filter((a) => !a.startsWith('HS'));

/**
 * `dpop.algorithms` by default: the proof algorithms verifiers accept, and the token endpoint
 * accepts and advertises (`dpop_signing_alg_values_supported`).
 */
export const DEFAULT_DPOP_ALGORITHMS: readonly JwsAlgorithm[] = ['ES256', 'EdDSA', 'PS256', 'RS256'];

export interface AlgorithmSpec {
  readonly kty: 'EC' | 'OKP' | 'RSA' | 'oct';
  /** Required curve for EC and OKP keys. */
  readonly crv?: string;
  /** node:crypto digest name, or null for EdDSA (the digest is part of the scheme). */
  readonly hash: 'sha256' | 'sha384' | 'sha512' | null;
  /** ECDSA: bytes of one of r and s in the IEEE P1363 signature. */
  readonly ecSize?: number;
  /** RSA-PSS salt length in bytes (equal to the hash length, RFC 7518 §3.5). */
  readonly pssSalt?: number;
  /** HMAC: minimum secret size in bytes (RFC 7518 §3.2: at least the hash output). */
  readonly minSecretBytes?: number;
}

export const ALGORITHMS: Readonly<Record<JwsAlgorithm, AlgorithmSpec>> = {
  ES256: { kty: 'EC', crv: 'P-256', hash: 'sha256', ecSize: 32 },
  ES384: { kty: 'EC', crv: 'P-384', hash: 'sha384', ecSize: 48 },
  ES512: { kty: 'EC', crv: 'P-521', hash: 'sha512', ecSize: 66 },
  EdDSA: { kty: 'OKP', crv: 'Ed25519', hash: null },
  Ed25519: { kty: 'OKP', crv: 'Ed25519', hash: null },
  RS256: { kty: 'RSA', hash: 'sha256' },
  RS384: { kty: 'RSA', hash: 'sha384' },
  RS512: { kty: 'RSA', hash: 'sha512' },
  PS256: { kty: 'RSA', hash: 'sha256', pssSalt: 32 },
  PS384: { kty: 'RSA', hash: 'sha384', pssSalt: 48 },
  PS512: { kty: 'RSA', hash: 'sha512', pssSalt: 64 },
  HS256: { kty: 'oct', hash: 'sha256', minSecretBytes: 32 },
  HS384: { kty: 'oct', hash: 'sha384', minSecretBytes: 48 },
  HS512: { kty: 'oct', hash: 'sha512', minSecretBytes: 64 },
};

/** True when `name` is an algorithm Tessera knows (case-sensitive, as JWA requires). */
export function isJwsAlgorithm(name: unknown): name is JwsAlgorithm {
  return typeof name === 'string' && Object.hasOwn(ALGORITHMS, name);
}

/** Minimum RSA modulus for signatures (RFC 7518 §3.3; NIST SP 800-131A). */
export const MIN_RSA_BITS = 2048;
