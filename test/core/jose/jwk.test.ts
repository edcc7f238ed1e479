/** RSA public keys a JWK may not carry: an exponent anyone can forge under (e = 1) or that NIST refuses (small or even). */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { importJwk, JwkError } from '../../../src/core/jose/jwk.ts';
import { parseJwks } from '../../../src/core/jose/keyset.ts';
import { generateSigningKey } from '../../../src/issuer/signer.ts';

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

/** `value` (base64url) with `zeros` zero octets put in front: the same integer, not its Base64urlUInt. */
const padded = (value: string, zeros = 1) => Buffer.concat([Buffer.alloc(zeros), Buffer.from(value, 'base64url')]).toString('base64url');

describe('importJwk: RSA n and e are Base64urlUInt, the minimum number of octets (RFC 7518 §2, §6.3.1)', () => {
  const good = rsa(65537);

  it('attack: n with a leading zero octet (257 octets for a 2048-bit key, a second spelling and thumbprint of one key) is refused', () => {
    for (const zeros of [1, 2]) {
      assert.throws(
        () => importJwk({ kty: 'RSA', n: padded(good.n, zeros), e: good.e }),
        (e) =>
          e instanceof JwkError &&
          e.message === 'JWK member "n" has a leading zero octet; RFC 7518 §6.3.1.1 wants the minimum number of octets',
      );
    }
  });

  it('attack: e with a leading zero octet (AAEAAQ for 65537) is refused', () => {
    assert.equal(padded(good.e), 'AAEAAQ');
    assert.throws(
      () => importJwk({ kty: 'RSA', n: good.n, e: 'AAEAAQ' }),
      (e) =>
        e instanceof JwkError &&
        e.message === 'JWK member "e" has a leading zero octet; RFC 7518 §6.3.1.2 wants the minimum number of octets',
    );
  });

  it('a client JWKS holding such a key is refused at registration, the key named', () => {
    const parsed = parseJwks({ keys: [{ kty: 'RSA', n: padded(good.n), e: good.e, kid: 'padded' }] }, { publicOnly: true });
    assert.equal(parsed.keys.length, 0);
    assert.deepEqual(parsed.problems, [
      { index: 0, kid: 'padded', message: 'JWK member "n" has a leading zero octet; RFC 7518 §6.3.1.1 wants the minimum number of octets' },
    ]);
  });

  it('keys Node exports and keys Tessera generates (RS256) are minimal and import: no interop loss for our own JWKS', () => {
    for (let i = 0; i < 3; i++) {
      const { publicJwk } = generateSigningKey('RS256');
      const n = Buffer.from(publicJwk.n as string, 'base64url');
      assert.notEqual(n[0], 0);
      assert.equal(publicJwk.e, 'AQAB');
      assert.doesNotThrow(() => importJwk({ ...publicJwk, alg: 'RS256' }, { algorithms: ['RS256'] }));
    }
    assert.doesNotThrow(() => importJwk({ kty: 'RSA', n: good.n, e: good.e }));
  });
});
