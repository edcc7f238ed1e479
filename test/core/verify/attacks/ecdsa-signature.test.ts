/**
 * Attack: degenerate ECDSA signatures (CVE-2022-21449 "psychic signatures": r = s = 0 passed in
 * some verifiers) and signatures in the wrong encoding. JWS ECDSA signatures are r || s (IEEE
 * P1363, RFC 7518 §3.4); r and s must be in [1, n-1].
 */
import { Buffer } from 'node:buffer';
import { sign as cryptoSign } from 'node:crypto';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

// The order of the P-256 group (SEC 2, §2.4.2).
const P256_N = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' },
});

async function withSignature(signature: Buffer): Promise<string> {
  const valid = await sign(key);
  return `${valid.slice(0, valid.lastIndexOf('.'))}.${signature.toString('base64url')}`;
}

describe('attack: degenerate ECDSA signatures', () => {
  it('rejects the all-zero signature (r = s = 0)', async () => {
    const token = await withSignature(Buffer.alloc(64));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_signature_invalid');
  });

  it('rejects r = s = n (the group order)', async () => {
    const token = await withSignature(Buffer.concat([P256_N, P256_N]));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_signature_invalid');
  });

  it('rejects r = 0 with a genuine s, and r genuine with s = n', async () => {
    const valid = await sign(key);
    const sig = Buffer.from(valid.slice(valid.lastIndexOf('.') + 1), 'base64url');
    for (const bad of [Buffer.concat([Buffer.alloc(32), sig.subarray(32)]), Buffer.concat([sig.subarray(0, 32), P256_N])]) {
      assertInvalidToken(await verifier.verify(bearer(await withSignature(bad))), verifier, 'token_signature_invalid');
    }
  });

  it('rejects a genuine signature in DER encoding instead of r || s', async () => {
    const valid = await sign(key);
    const input = valid.slice(0, valid.lastIndexOf('.'));
    const der = cryptoSign('sha256', Buffer.from(input), key.privateKey as import('node:crypto').KeyObject);
    assertInvalidToken(await verifier.verify(bearer(`${input}.${der.toString('base64url')}`)), verifier, 'token_signature_invalid');
  });

  it('rejects a signature one byte short and one byte long', async () => {
    const valid = await sign(key);
    const sig = Buffer.from(valid.slice(valid.lastIndexOf('.') + 1), 'base64url');
    for (const bad of [sig.subarray(0, 63), Buffer.concat([sig, Buffer.alloc(1)])]) {
      assertInvalidToken(await verifier.verify(bearer(await withSignature(bad))), verifier, 'token_signature_invalid');
    }
  });
});
