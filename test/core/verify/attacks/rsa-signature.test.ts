/**
 * Attack: an RSA signature one octet shorter than the modulus. RFC 8017 §8.1.2 and §8.2.2 (step 1)
 * refuse a signature that is not k octets (k the modulus length), as RFC 7518 §3.3 and §3.5 apply
 * them; OpenSSL refuses a short RSASSA-PKCS1-v1_5 signature but verifies a short RSASSA-PSS one
 * read as the same integer. About one PS256 signature in 256 starts with a zero octet: without the
 * length check its token has a second spelling, with its own cache entry and token hash (the hash
 * the audit trail, `tessera trace` and per-token keys name a token by).
 */

import assert from 'node:assert/strict';
import { constants, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, type TestKey } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const ps = makeKey('PS256', 'ps-1');
const rs = makeKey('RS256', 'rs-1');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['PS256', 'RS256'], jwks: { keys: [ps.jwk, rs.jwk] } }],
  dpop: { mode: 'disabled' },
});

/** A genuine token of `key` whose 256-octet signature starts with a zero octet (PSS is randomized; PKCS#1 v1.5 is not, so its claims vary). */
function tokenWithLeadingZero(key: TestKey): { input: string; signature: Buffer } {
  for (let i = 0; ; i++) {
    const input = `${b64json({ alg: key.alg, kid: key.kid })}.${b64json(claims({ jti: `jti-${i}` }))}`;
    const signature = cryptoSign(
      'sha256',
      Buffer.from(input),
      key.alg === 'PS256'
        ? { key: key.privateKey as KeyObject, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }
        : (key.privateKey as KeyObject),
    );
    if (signature[0] === 0) return { input, signature };
  }
}

describe('attack: an RSA signature shorter than the modulus (a second spelling of one token)', () => {
  for (const key of [ps, rs]) {
    it(`rejects a genuine ${key.alg} signature with its leading zero octet dropped; the full one verifies`, async () => {
      const { input, signature } = tokenWithLeadingZero(key);
      assert.equal((await verifier.verify(bearer(`${input}.${signature.toString('base64url')}`))).ok, true);
      const short = `${input}.${signature.subarray(1).toString('base64url')}`;
      assertInvalidToken(await verifier.verify(bearer(short)), verifier, 'token_signature_invalid');
    });
  }
});
