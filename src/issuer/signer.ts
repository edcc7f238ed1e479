/**
 * Signing: key generation for the algorithms Tessera issues with, and a compact-JWS signer per key
 * with its protected header encoded once. The signature math is `node:crypto`'s.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import type { SigningAlgorithm } from '../config/token-service-schema.ts';

/** A generated key pair: the private key and the public JWK members (no kid/alg/use). */
export interface GeneratedKey {
  readonly privateKey: KeyObject;
  readonly publicJwk: Record<string, string>;
}

/** Generate a signing key: P-256 for ES256, Ed25519 for EdDSA, 3072-bit RSA for RS256. */
export function generateSigningKey(alg: SigningAlgorithm): GeneratedKey {
  const pair =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'EdDSA'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('rsa', { modulusLength: 3072 });
  const jwk = pair.publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const publicJwk: Record<string, string> = {};
  for (const m of ['kty', 'crv', 'x', 'y', 'n', 'e']) if (typeof jwk[m] === 'string') publicJwk[m] = jwk[m];
  return { privateKey: pair.privateKey, publicJwk };
}

/**
 * Convert a DER ECDSA signature to JOSE's fixed-size r || s (RFC 7518 §3.4). Signing in DER and
 * converting is markedly cheaper than asking `crypto.sign` for `ieee-p1363` through an options
 * object.
 */
export function derToP1363(der: Buffer, size: number): Buffer {
  const out = Buffer.alloc(size * 2);
  let o = der[1] === 0x81 ? 3 : 2;
  for (let i = 0; i < 2; i++) {
    if (der[o] !== 0x02) throw new Error('not a DER ECDSA signature');
    const len = der[o + 1] as number;
    let start = o + 2;
    let n = len;
    while (n > size && der[start] === 0) {
      start++;
      n--;
    }
    der.copy(out, i * size + (size - n), start, start + n);
    o += 2 + len;
  }
  return out;
}

/** Signs compact JWSs with one key. */
export interface JwsSigner {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  /** Sign a JSON claim set (already serialized) with the protected header for `typ`. */
  sign(claimsJson: string, typ?: string): string;
}

export function createSigner(alg: SigningAlgorithm, kid: string, privateKey: KeyObject): JwsSigner {
  const headers = new Map<string, string>();
  const header = (typ: string) => {
    let h = headers.get(typ);
    if (h === undefined) {
      h = Buffer.from(JSON.stringify({ alg, kid, typ })).toString('base64url');
      headers.set(typ, h);
    }
    return h;
  };
  const signBytes: (input: Buffer) => Buffer =
    alg === 'ES256'
      ? (input) => derToP1363(sign('sha256', input, privateKey), 32)
      : alg === 'EdDSA'
        ? (input) => sign(null, input, privateKey)
        : (input) => sign('sha256', input, privateKey);
  return {
    kid,
    alg,
    sign(claimsJson, typ = 'at+jwt') {
      const input = `${header(typ)}.${Buffer.from(claimsJson).toString('base64url')}`;
      return `${input}.${signBytes(Buffer.from(input, 'latin1')).toString('base64url')}`;
    },
  };
}
