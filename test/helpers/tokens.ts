/**
 * Test fixtures: key pairs, JWKS documents and tokens signed by `jose` (an independent
 * implementation), so the verifier is never checked against its own signing code.
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { type JWTHeaderParameters, type JWTPayload, SignJWT } from 'jose';
import type { JwsAlgorithm } from '../../src/core/jose/algorithms.ts';

export const ISSUER = 'https://issuer.test';
export const AUDIENCE = 'https://api.test';

export interface TestKey {
  readonly alg: JwsAlgorithm;
  readonly kid: string;
  readonly privateKey: KeyObject | Uint8Array;
  /** The public JWK (or the `oct` JWK for HMAC). */
  readonly jwk: Record<string, unknown>;
}

/** Generate a key for `alg` with a public JWK carrying `kid`. */
export function makeKey(alg: JwsAlgorithm, kid = `${alg.toLowerCase()}-1`): TestKey {
  if (alg.startsWith('HS')) {
    const secret = randomBytes(alg === 'HS256' ? 32 : alg === 'HS384' ? 48 : 64);
    return { alg, kid, privateKey: secret, jwk: { kty: 'oct', k: secret.toString('base64url'), kid } };
  }
  const pair =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'ES384'
        ? generateKeyPairSync('ec', { namedCurve: 'P-384' })
        : alg === 'ES512'
          ? generateKeyPairSync('ec', { namedCurve: 'P-521' })
          : alg === 'EdDSA' || alg === 'Ed25519'
            ? generateKeyPairSync('ed25519')
            : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { alg, kid, privateKey: pair.privateKey, jwk: { ...pair.publicKey.export({ format: 'jwk' }), kid } };
}

/** Standard valid claims, overridable; `undefined` values remove a claim. */
export function claims(overrides: Record<string, unknown> = {}, now = Math.floor(Date.now() / 1000)): JWTPayload {
  const base: Record<string, unknown> = {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: 'user-1',
    client_id: 'agent-1',
    scope: 'api:read',
    iat: now,
    exp: now + 300,
    jti: randomBytes(8).toString('hex'),
  };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return base as JWTPayload;
}

/** Sign claims with `jose`. */
export async function sign(key: TestKey, payload: JWTPayload = claims(), header: Partial<JWTHeaderParameters> = {}): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header } as JWTHeaderParameters).sign(key.privateKey);
}

/** Base64url-encode JSON (for hand-built malicious tokens). */
export function b64json(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** A bearer request for the verifier. */
export function bearer(token: string, init: { method?: string; url?: string; headers?: Record<string, string | string[]> } = {}) {
  return {
    method: init.method ?? 'GET',
    url: init.url ?? 'https://api.test/items/1',
    headers: { authorization: `Bearer ${token}`, ...init.headers },
  };
}
