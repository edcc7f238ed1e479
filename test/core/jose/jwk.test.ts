/** RSA public keys a JWK may not carry: an exponent anyone can forge under (e = 1) or that NIST refuses (small or even). */
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, type JsonWebKey, sign } from 'node:crypto';
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

  // The cost of a verification grows with the exponent's length: one of 3000 bits under a
  // 3072-bit modulus (OpenSSL bounds it to 64 bits only above 3072) costs 6 to 15 ms, a private-key
  // operation, where 65537 costs 0.06 ms. A DPoP proof names its own jwk, which is checked before
  // its key is compared with the token's (and at the token endpoint, for a public client, before any).
  it('attack: an exponent thousands of bits long (each check as costly as a private-key operation) is refused', () => {
    const big = Buffer.alloc(375, 0xff).toString('base64url');
    const n3072 = (generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey.export({ format: 'jwk' }) as { n: string }).n;
    assert.throws(
      () => importJwk({ kty: 'RSA', n: n3072, e: big }),
      (e) => e instanceof JwkError && /public exponent of 3000 bits is refused/.test(e.message),
    );
  });

  it('accepts an exponent of up to 32 bits, refuses one of 33', () => {
    const odd32 = Buffer.from([0xff, 0xff, 0xff, 0xff]).toString('base64url');
    assert.doesNotThrow(() => importJwk({ kty: 'RSA', n: good.n, e: odd32 }));
    const odd33 = Buffer.from([1, 0, 0, 0, 1]).toString('base64url');
    assert.throws(() => importJwk({ kty: 'RSA', n: good.n, e: odd33 }), /public exponent of 33 bits is refused/);
  });
});

/** `value` (base64url) with `zeros` zero octets put in front: the same integer, not its Base64urlUInt. */
const padded = (value: string, zeros = 1) => Buffer.concat([Buffer.alloc(zeros), Buffer.from(value, 'base64url')]).toString('base64url');

describe('importJwk: one key, one thumbprint (RFC 7518 §2 Base64urlUInt, §6.2.1.2 coordinates; RFC 7638)', () => {
  const good = rsa(65537);
  const canonical = importJwk({ kty: 'RSA', n: good.n, e: good.e });

  it('attack: n with leading zero octets (a second spelling of one key) imports as that key under its one thumbprint', () => {
    for (const zeros of [1, 2]) {
      const k = importJwk({ kty: 'RSA', n: padded(good.n, zeros), e: good.e });
      assert.equal(k.thumbprint, canonical.thumbprint);
      assert.equal(k.publicJwk.n, good.n);
    }
  });

  it('attack: e with a leading zero octet (AAEAAQ for 65537) imports under the same thumbprint', () => {
    assert.equal(padded(good.e), 'AAEAAQ');
    const k = importJwk({ kty: 'RSA', n: good.n, e: 'AAEAAQ' });
    assert.equal(k.thumbprint, canonical.thumbprint);
    assert.equal(k.publicJwk.e, 'AQAB');
  });

  it('attack: a member spelled in padded or standard base64, or with stray bits, is refused (another spelling of the key)', () => {
    const std = Buffer.from(good.n, 'base64url').toString('base64');
    for (const n of [`${good.n}=`, std.includes('+') || std.includes('/') ? std : `${good.n.slice(0, -1)}+`, `${good.n}.`]) {
      assert.throws(
        () => importJwk({ kty: 'RSA', n, e: good.e }),
        (e) => e instanceof JwkError && e.message === 'JWK member "n" is not base64url',
      );
    }
  });

  it('attack: an EC coordinate with a leading zero octet (33 octets on P-256) is refused', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as JsonWebKey & {
      x: string;
      y: string;
    };
    assert.doesNotThrow(() => importJwk({ kty: 'EC', crv: 'P-256', x: ec.x, y: ec.y }));
    assert.throws(
      () => importJwk({ kty: 'EC', crv: 'P-256', x: padded(ec.x), y: ec.y }),
      (e) => e instanceof JwkError && e.message === 'JWK member "x" is 33 octets; P-256 coordinates are 32',
    );
  });

  it('a client JWKS holding a padded RSA key keeps it, published in its minimal spelling', () => {
    const parsed = parseJwks({ keys: [{ kty: 'RSA', n: padded(good.n), e: good.e, kid: 'padded' }] }, { publicOnly: true });
    assert.deepEqual(parsed.problems, []);
    assert.equal(parsed.keys[0]?.thumbprint, canonical.thumbprint);
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

describe('importJwk: RSA signature length (RFC 8017 §8.1.2, §8.2.2 step 1)', () => {
  // Every user of a key's checks gets this: issuer keys, DPoP proof keys and client keys.
  it('attack: a genuine PS256 or RS256 signature with its leading zero octet dropped is refused by every check of the key', () => {
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const key = importJwk(pair.publicKey.export({ format: 'jwk' }), { algorithms: ['PS256', 'RS256'] });
    for (const alg of ['PS256', 'RS256'] as const) {
      const options =
        alg === 'PS256' ? { key: pair.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : pair.privateKey;
      let input: Buffer;
      let signature: Buffer;
      let i = 0;
      do {
        input = Buffer.from(`input-${i++}`);
        signature = sign('sha256', input, options);
      } while (signature[0] !== 0);
      const check = key.checks.get(alg);
      assert.ok(check);
      assert.equal(check(input, signature), true);
      assert.equal(check(input, signature.subarray(1)), false);
    }
  });
});
