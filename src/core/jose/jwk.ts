/**
 * JSON Web Keys (RFC 7517) imported into `node:crypto` key objects, each with the signature check
 * for every algorithm it may verify compiled once, and its RFC 7638 thumbprint.
 */
import { Buffer } from 'node:buffer';
import {
  constants,
  createHash,
  createHmac,
  createPublicKey,
  createSecretKey,
  verify as cryptoVerify,
  type KeyObject,
  timingSafeEqual,
} from 'node:crypto';
import { ALGORITHMS, type AlgorithmSpec, isJwsAlgorithm, type JwsAlgorithm, MIN_RSA_BITS } from './algorithms.ts';
import { decodeBase64url } from './base64url.ts';

/** A signature check over the JWS signing input and the decoded signature bytes. */
export type SignatureCheck = (signingInput: Buffer, signature: Buffer) => boolean;

/** A key ready to verify signatures. Immutable. */
export interface VerificationKey {
  readonly kid: string | undefined;
  readonly kty: 'EC' | 'OKP' | 'RSA' | 'oct';
  /** The JWK `alg`, when the key set pinned one. */
  readonly alg: JwsAlgorithm | undefined;
  /** RFC 7638 SHA-256 thumbprint, base64url. */
  readonly thumbprint: string;
  /** The checks for each algorithm this key may verify: key type, curve, size, `alg`, `use`,
   * `key_ops` and the caller's allowlist already applied. */
  readonly checks: ReadonlyMap<JwsAlgorithm, SignatureCheck>;
  /** The public JWK members (empty for `oct` keys, whose material is secret). */
  readonly publicJwk: Readonly<Record<string, string>>;
}

/** The modulus length of an RSA key, in bits; undefined for another key type. */
export function rsaModulusBits(key: VerificationKey): number | undefined {
  const n = key.kty === 'RSA' ? key.publicJwk.n : undefined;
  if (n === undefined) return undefined;
  // Imported keys hold the minimal spelling of n (canonicalMember): its first octet is not zero.
  const bytes = Buffer.from(n, 'base64url');
  return (bytes.length - 1) * 8 + (bytes[0] ?? 0).toString(2).length;
}

/** Why a JWK was refused. The message names the problem, never key material. */
export class JwkError extends Error {
  override readonly name = 'JwkError';
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth'] as const;
const THUMBPRINT_MEMBERS: Record<string, readonly string[]> = {
  EC: ['crv', 'kty', 'x', 'y'],
  OKP: ['crv', 'kty', 'x'],
  RSA: ['e', 'kty', 'n'],
  oct: ['k', 'kty'],
};

/** RFC 7638 thumbprint of a JWK: SHA-256 over the required members in lexicographic order. */
export function jwkThumbprint(jwk: Readonly<Record<string, unknown>>): string {
  const members = THUMBPRINT_MEMBERS[String(jwk.kty)];
  if (!members) throw new JwkError(`unsupported key type "${String(jwk.kty)}"`);
  const parts: string[] = [];
  for (const m of members) {
    const v = jwk[m];
    if (typeof v !== 'string' || v === '') throw new JwkError(`JWK member "${m}" must be a non-empty string`);
    parts.push(`${JSON.stringify(m)}:${JSON.stringify(v)}`);
  }
  return createHash('sha256')
    .update(`{${parts.join(',')}}`)
    .digest('base64url');
}

/**
 * Convert an IEEE P1363 ECDSA signature (r || s) into DER, the shape `crypto.verify` checks fastest.
 * `into` receives the DER bytes (at least `2 * size + 9`); the result is a view of it.
 */
export function p1363ToDer(signature: Uint8Array, size: number, into?: DerScratch): Buffer | undefined {
  if (signature.length !== size * 2) return undefined;
  let rStart = 0;
  while (rStart < size - 1 && signature[rStart] === 0) rStart++;
  let sStart = size;
  while (sStart < size * 2 - 1 && signature[sStart] === 0) sStart++;
  const rPad = (signature[rStart] as number) & 0x80 ? 1 : 0;
  const sPad = (signature[sStart] as number) & 0x80 ? 1 : 0;
  const rLen = size - rStart + rPad;
  const sLen = size * 2 - sStart + sPad;
  const body = 4 + rLen + sLen;
  const head = body < 0x80 ? 2 : 3;
  const der = into ? into.view(head + body) : Buffer.allocUnsafe(head + body);
  let o = 0;
  der[o++] = 0x30;
  if (head === 3) der[o++] = 0x81;
  der[o++] = body;
  der[o++] = 0x02;
  der[o++] = rLen;
  if (rPad) der[o++] = 0;
  der.set(signature.subarray(rStart, size), o);
  o += size - rStart;
  der[o++] = 0x02;
  der[o++] = sLen;
  if (sPad) der[o++] = 0;
  der.set(signature.subarray(sStart, size * 2), o);
  return der;
}

/** A reusable DER buffer with one view per length (DER lengths vary by a few bytes). */
export class DerScratch {
  readonly #buffer: Buffer;
  readonly #views = new Map<number, Buffer>();
  constructor(size: number) {
    this.#buffer = Buffer.allocUnsafeSlow(2 * size + 9);
  }
  view(length: number): Buffer {
    let v = this.#views.get(length);
    if (v === undefined) {
      v = this.#buffer.subarray(0, length);
      this.#views.set(length, v);
    }
    return v;
  }
}

function compileCheck(spec: AlgorithmSpec, key: KeyObject): SignatureCheck {
  const { hash } = spec;
  if (spec.kty === 'oct') {
    const digest = hash as string;
    return (input, signature) => {
      const mac = createHmac(digest, key).update(input).digest();
      return mac.length === signature.length && timingSafeEqual(mac, signature);
    };
  }
  if (spec.kty === 'EC') {
    const size = spec.ecSize as number;
    // Checks are synchronous, so one DER buffer per compiled check is never shared.
    const scratch = new DerScratch(size);
    return (input, signature) => {
      const der = p1363ToDer(signature, size, scratch);
      return der !== undefined && cryptoVerify(hash, input, key, der);
    };
  }
  if (spec.kty === 'OKP') return (input, signature) => cryptoVerify(hash, input, key, signature);
  // RFC 8017 §8.1.2, §8.2.2 step 1: a signature is exactly k octets. OpenSSL checks that for
  // PKCS#1 v1.5 but reads a shorter PSS signature as the same integer, so a PS256 signature that
  // starts with a zero octet (one in 256) would verify without it too: a second spelling of the token.
  const octets = Math.ceil((key.asymmetricKeyDetails?.modulusLength as number) / 8);
  if (spec.pssSalt !== undefined) {
    // The options object is built once per key, not per request.
    const pss = { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: spec.pssSalt };
    return (input, signature) => signature.length === octets && cryptoVerify(hash, input, pss, signature);
  }
  return (input, signature) => signature.length === octets && cryptoVerify(hash, input, key, signature);
}

/** Options for {@link importJwk}. */
export interface ImportJwkOptions {
  /** Algorithms the key may be used with; others are dropped. Defaults to all known. */
  readonly algorithms?: readonly JwsAlgorithm[];
  /** Refuse `oct` keys (true for anything that arrives over the network or in a DPoP proof). */
  readonly publicOnly?: boolean;
  /**
   * Refuse RSA moduli over this many bits. For keys a caller chooses (a DPoP proof's `jwk`): a
   * check's cost grows with the modulus (16384 bits: ~2.6 ms, 40 ES256 checks), and the proof's
   * signature is checked before anything else vouches for its sender.
   */
  readonly maxRsaBits?: number;
}

function str(jwk: Record<string, unknown>, name: string): string | undefined {
  const v = jwk[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new JwkError(`JWK member "${name}" must be a string`);
  return v;
}

/** The largest RSA public exponent accepted: 2^32 - 1. */
const MAX_RSA_EXPONENT = 0xffffffffn;

/** Octets of each coordinate (RFC 7518 §6.2.1.2, RFC 8037 §2): a shorter or longer one is refused. */
const COORDINATE_OCTETS: Readonly<Record<string, number>> = { 'P-256': 32, 'P-384': 48, 'P-521': 66, Ed25519: 32, Ed448: 57 };

/**
 * The canonical spelling of key member `m`, or a JwkError. RSA `n` and `e` are Base64urlUInt
 * (RFC 7518 §2): a leading zero octet spells the same integer a second way, with a second RFC 7638
 * thumbprint (DPoP's jkt, a kid derived from it) for one key. Some publishers do send one, so it is
 * read as the integer it spells and the thumbprint is taken over the minimal spelling. Text that is
 * not canonical base64url (padding, `+`, `/`, stray bits) is refused: it would be another spelling too.
 */
function canonicalMember(kty: string, crv: string | undefined, m: string, v: string): string {
  if (m === 'crv' || m === 'kty') return v;
  const bytes = decodeBase64url(v);
  if (bytes === undefined || bytes.length === 0) throw new JwkError(`JWK member "${m}" is not base64url`);
  if (kty === 'RSA') {
    let start = 0;
    while (start < bytes.length - 1 && bytes[start] === 0) start++;
    return start === 0 ? v : bytes.subarray(start).toString('base64url');
  }
  const octets = crv === undefined ? undefined : COORDINATE_OCTETS[crv];
  if (octets !== undefined && bytes.length !== octets) {
    throw new JwkError(`JWK member "${m}" is ${bytes.length} octets; ${crv} coordinates are ${octets}`);
  }
  return v;
}

/**
 * Import one JWK for signature verification.
 *
 * Refuses private keys, unknown key types and curves, RSA moduli under 2048 bits and RSA public
 * exponents other than an odd one of at least 65537 and at most 32 bits (e = 1 lets anyone forge,
 * a long one makes each check cost a private-key operation), key members that are
 * not canonical base64url, EC and OKP coordinates not of their curve's length, HMAC secrets
 * shorter than their hash, `use` other than `sig`, `key_ops` without `verify`, and keys usable with
 * none of the allowed algorithms.
 *
 * @throws {JwkError} with a message naming the offending member.
 */
export function importJwk(input: unknown, options: ImportJwkOptions = {}): VerificationKey {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new JwkError('a JWK must be a JSON object');
  const jwk = input as Record<string, unknown>;
  const kty = str(jwk, 'kty');
  if (kty !== 'EC' && kty !== 'OKP' && kty !== 'RSA' && kty !== 'oct') {
    throw new JwkError(`unsupported key type "${String(kty)}" (use EC, OKP, RSA or oct)`);
  }
  if (kty === 'oct' && options.publicOnly) throw new JwkError('symmetric (oct) keys are not accepted here');
  for (const m of PRIVATE_MEMBERS) {
    if (kty !== 'oct' && jwk[m] !== undefined) throw new JwkError(`JWK holds private key material ("${m}"); publish public keys only`);
  }
  const kid = str(jwk, 'kid');
  const use = str(jwk, 'use');
  if (use !== undefined && use !== 'sig') throw new JwkError(`JWK "use" is "${use}", expected "sig"`);
  const keyOps = jwk.key_ops;
  if (keyOps !== undefined && (!Array.isArray(keyOps) || !keyOps.includes('verify'))) {
    throw new JwkError('JWK "key_ops" does not include "verify"');
  }
  const jwkAlg = str(jwk, 'alg');
  if (jwkAlg !== undefined && !isJwsAlgorithm(jwkAlg)) throw new JwkError(`JWK "alg" "${jwkAlg}" is not a supported JWS algorithm`);
  const crv = str(jwk, 'crv');

  let key: KeyObject;
  let secretBytes = 0;
  // The members as read (canonical spellings): what the key is imported, published and thumbprinted from.
  const material: Record<string, string> = { kty };
  try {
    if (kty === 'oct') {
      const k = decodeBase64url(str(jwk, 'k') ?? '');
      if (!k || k.length === 0) throw new JwkError('JWK "k" must be non-empty base64url');
      secretBytes = k.length;
      key = createSecretKey(k);
    } else {
      for (const m of THUMBPRINT_MEMBERS[kty] as readonly string[]) {
        const v = str(jwk, m);
        if (v === undefined) throw new JwkError(`JWK member "${m}" is required for ${kty} keys`);
        material[m] = canonicalMember(kty, crv, m, v);
      }
      key = createPublicKey({ key: material as unknown as import('node:crypto').JsonWebKeyInput['key'], format: 'jwk' });
    }
  } catch (cause) {
    if (cause instanceof JwkError) throw cause;
    throw new JwkError(`JWK could not be imported as a ${kty} key`, { cause });
  }
  if (kty === 'RSA') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new JwkError(`RSA key is ${bits} bits; at least ${MIN_RSA_BITS} are required`);
    if (options.maxRsaBits !== undefined && bits > options.maxRsaBits) {
      throw new JwkError(`RSA key is ${bits} bits; at most ${options.maxRsaBits} are accepted here`);
    }
    // e = 1 makes a signature of the padded hash itself (anyone can forge one); small or even
    // exponents are refused as NIST SP 800-89 §5.3.3 does: odd, at least 65537. A long one makes
    // every check as costly as a private-key operation (a 3000-bit e under a 3072-bit modulus:
    // milliseconds, where 65537 takes tens of microseconds), and a DPoP proof names its own key:
    // at most 32 bits, as every key in use (65537 is 17).
    const e = key.asymmetricKeyDetails?.publicExponent ?? 0n;
    if (e > MAX_RSA_EXPONENT) throw new JwkError(`RSA public exponent of ${e.toString(2).length} bits is refused; use 65537`);
    if (e < 65537n || e % 2n === 0n) throw new JwkError(`RSA public exponent ${e} is refused; use 65537`);
  }

  const allowed = options.algorithms ?? (Object.keys(ALGORITHMS) as JwsAlgorithm[]);
  const checks = new Map<JwsAlgorithm, SignatureCheck>();
  for (const alg of allowed) {
    const spec = ALGORITHMS[alg];
    if (spec.kty !== kty) continue;
    if (spec.crv !== undefined && spec.crv !== crv) continue;
    if (jwkAlg !== undefined && jwkAlg !== alg) continue;
    if (spec.minSecretBytes !== undefined && secretBytes < spec.minSecretBytes) {
      if (jwkAlg === alg || secretBytes < 32) {
        throw new JwkError(`HMAC secret is ${secretBytes * 8} bits; ${alg} requires at least ${spec.minSecretBytes * 8}`);
      }
      continue;
    }
    checks.set(alg, compileCheck(spec, key));
  }
  if (checks.size === 0) {
    throw new JwkError(
      `${kty}${crv ? ` ${crv}` : ''} key${kid ? ` "${kid}"` : ''} fits none of the allowed algorithms (${allowed.join(', ')})`,
    );
  }

  const publicJwk: Record<string, string> = {};
  if (kty !== 'oct') {
    for (const m of THUMBPRINT_MEMBERS[kty] as readonly string[]) publicJwk[m] = material[m] as string;
    if (kid !== undefined) publicJwk.kid = kid;
    if (jwkAlg !== undefined) publicJwk.alg = jwkAlg;
  }
  return Object.freeze({
    kid,
    kty,
    alg: jwkAlg as JwsAlgorithm | undefined,
    thumbprint: jwkThumbprint(kty === 'oct' ? jwk : material),
    checks,
    publicJwk: Object.freeze(publicJwk),
  });
}
