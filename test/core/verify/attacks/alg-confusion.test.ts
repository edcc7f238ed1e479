/**
 * Attack: algorithm confusion (RFC 8725 §2.1, §3.1). HS256 "signed" with the issuer's RSA public
 * key as the HMAC secret, and algorithms off the allowlist that the key could technically verify.
 */
import { createHmac, createPublicKey, type KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, sign, type TestKey } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const rsa = makeKey('RS256', 'rsa-1');
const hmac = makeKey('HS256', 'hmac-1');
const rsaPublic = createPublicKey({ key: rsa.jwk as never, format: 'jwk' }) as KeyObject;

/** The public-key forms an attacker would try as the HMAC secret. */
const secretForms: Record<string, string> = {
  'SPKI PEM': rsaPublic.export({ type: 'spki', format: 'pem' }).toString(),
  'PKCS#1 PEM': rsaPublic.export({ type: 'pkcs1', format: 'pem' }).toString(),
  'JWK JSON': JSON.stringify(rsa.jwk),
  'JWK JSON without kid': JSON.stringify({ kty: 'RSA', n: rsa.jwk.n, e: rsa.jwk.e }),
};

function hs256(secret: string, header: Record<string, unknown>): string {
  const input = `${b64json({ alg: 'HS256', ...header })}.${b64json(claims())}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

const rsOnly = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['RS256'], jwks: { keys: [rsa.jwk] } }],
  dpop: { mode: 'disabled' },
});
// The worst case an operator can configure: HS256 allowed for the same issuer (with its own secret).
const mixed = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['RS256', 'HS256'], jwks: { keys: [rsa.jwk, hmac.jwk] } }],
  dpop: { mode: 'disabled' },
});

describe('attack: HS256 signed with the RSA public key', () => {
  for (const [form, secret] of Object.entries(secretForms)) {
    it(`rejects HS256 keyed with the ${form} public key when only RS256 is allowed`, async () => {
      const token = hs256(secret, { kid: rsa.kid });
      assertInvalidToken(await rsOnly.verify(bearer(token)), rsOnly, 'token_alg_not_allowed');
    });

    it(`rejects HS256 keyed with the ${form} public key under the RSA kid even when HS256 is allowed`, async () => {
      const token = hs256(secret, { kid: rsa.kid });
      // The RSA key has no HMAC check at all, so the kid resolves to no usable key.
      assertInvalidToken(await mixed.verify(bearer(token)), mixed, 'token_kid_unknown');
    });

    it(`rejects HS256 keyed with the ${form} public key without a kid even when HS256 is allowed`, async () => {
      const token = hs256(secret, {});
      // Only the oct key can check HS256, and the RSA public key is not its secret.
      assertInvalidToken(await mixed.verify(bearer(token)), mixed, 'token_signature_invalid');
    });
  }

  it('still accepts the genuine tokens of both keys in the mixed configuration', async () => {
    for (const key of [rsa, hmac]) {
      const result = await mixed.verify(bearer(await sign(key)));
      if (!result.ok) throw new Error(`${key.alg}: ${result.error.code}`);
    }
  });
});

describe('attack: an algorithm off the allowlist that fits the key', () => {
  const signWith = (alg: 'RS384' | 'RS512' | 'PS256') => sign({ ...rsa, alg } as TestKey);
  for (const alg of ['RS384', 'RS512', 'PS256'] as const) {
    it(`rejects ${alg} signed by the issuer's own RSA key when only RS256 is allowed`, async () => {
      assertInvalidToken(await rsOnly.verify(bearer(await signWith(alg))), rsOnly, 'token_alg_not_allowed');
    });
  }

  it('rejects an allowlisted algorithm spelled in another case (JWA names are case-sensitive)', async () => {
    const valid = await sign(rsa);
    const rest = valid.slice(valid.indexOf('.'));
    for (const alg of ['rs256', 'Rs256', 'RS256 ']) {
      assertInvalidToken(await rsOnly.verify(bearer(`${b64json({ alg, kid: rsa.kid })}${rest}`)), rsOnly, 'token_alg_not_allowed');
    }
  });

  it('rejects PS256 on an allowlist of RS256 and PS256 when the JWK pins alg RS256', async () => {
    const pinned = createVerifier({
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['RS256', 'PS256'], jwks: { keys: [{ ...rsa.jwk, alg: 'RS256' }] } }],
      dpop: { mode: 'disabled' },
    });
    assertInvalidToken(await pinned.verify(bearer(await signWith('PS256'))), pinned, 'token_kid_unknown');
    const ok = await pinned.verify(bearer(await sign(rsa)));
    if (!ok.ok) throw new Error(ok.error.code);
  });
});
