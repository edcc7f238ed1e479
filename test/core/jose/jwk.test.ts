/** RSA public keys a JWK may not carry: an exponent anyone can forge under (e = 1) or that NIST refuses (small or even). */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { importJwk, JwkError } from '../../../src/core/jose/jwk.ts';

const rsa = (publicExponent: number) =>
  generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent }).publicKey.export({ format: 'jwk' }) as JsonWebKey & {
    n: string;
    e: string;
  };

describe('importJwk: RSA public exponent', () => {
  const good = rsa(65537);

  it('accepts e = 65537 (AQAB)', () => {
    assert.equal(good.e, 'AQAB');
    assert.doesNotThrow(() => importJwk({ kty: 'RSA', n: good.n, e: good.e }));
  });

  it('attack: e = 1 (a signature is the padded hash itself) is refused', () => {
    assert.throws(
      () => importJwk({ kty: 'RSA', n: good.n, e: 'AQ' }),
      (e) => e instanceof JwkError && /public exponent 1 is refused/.test(e.message),
    );
  });

  it('refuses a small exponent (3) and an even one', () => {
    const three = rsa(3);
    assert.throws(() => importJwk({ kty: 'RSA', n: three.n, e: three.e }), /public exponent 3 is refused/);
    assert.throws(
      () => importJwk({ kty: 'RSA', n: good.n, e: Buffer.from([1, 0, 2]).toString('base64url') }),
      /public exponent 65538 is refused/,
    );
  });
});
