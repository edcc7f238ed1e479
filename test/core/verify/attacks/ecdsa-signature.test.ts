/**
 * Attack: degenerate ECDSA signatures (CVE-2022-21449 "psychic signatures": r = s = 0 passed in
 * some verifiers) and signatures in the wrong encoding. JWS ECDSA signatures are r || s (IEEE
 * P1363, RFC 7518 §3.4); r and s must be in [1, n-1].
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { sign as cryptoSign } from 'node:crypto';
import { describe, it } from 'node:test';
import { RevocationList } from '../../../../src/core/verify/revocation.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
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

describe('attack: the other-s twin of an ECDSA signature (r, n - s)', () => {
  // ECDSA is malleable and JWS does not ask for low s (RFC 7518 §3.4); OpenSSL signs with either
  // half, so refusing one would refuse genuine tokens. The twin is the same token to every check
  // that decides on its claims: revoking its jti refuses both spellings.
  it('is refused with the token once its jti is revoked', async () => {
    const revocations = new RevocationList();
    const revocable = createVerifier(
      {
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
        dpop: { mode: 'disabled' },
      },
      { revocation: revocations },
    );
    const payload = claims({ jti: 'twin-1' });
    const valid = await sign(key, payload);
    const sig = Buffer.from(valid.slice(valid.lastIndexOf('.') + 1), 'base64url');
    const n = BigInt(`0x${P256_N.toString('hex')}`);
    const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
    const twin = `${valid.slice(0, valid.lastIndexOf('.'))}.${Buffer.concat([sig.subarray(0, 32), Buffer.from((n - s).toString(16).padStart(64, '0'), 'hex')]).toString('base64url')}`;
    for (const token of [valid, twin]) assert.equal((await revocable.verify(bearer(token))).ok, true);
    revocations.apply({ tokenIds: [{ jti: 'twin-1', expiresAt: payload.exp as number }] });
    for (const token of [valid, twin]) assertInvalidToken(await revocable.verify(bearer(token)), revocable, 'token_revoked');
  });
});
