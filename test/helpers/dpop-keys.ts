/**
 * DPoP proof keys for tests: a private key to sign proofs with, its public JWK for the proof's
 * `jwk` header, and its RFC 7638 thumbprint for a token's `cnf.jkt`.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';

export interface ProofKey {
  readonly privateKey: KeyObject;
  readonly jwk: JWK;
  readonly jkt: string;
}

/** A fresh P-256 key (ES256 proofs), or an RSA 2048 one (RS256/PS256). */
export async function proofKey(kind: 'ec' | 'rsa' = 'ec'): Promise<ProofKey> {
  const { privateKey, publicKey } =
    kind === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}
