/**
 * Attack: key sets that would let a token pick among keys, or use a key that is too weak or not
 * meant for signatures (RFC 7517 §4.2–4.3, §4.5; RFC 7518 §3.3; RFC 8725 §3.5). Two keys a token
 * could name alike are never tried in turn: the token is refused as ambiguous. A weak or non-signing
 * key in a local key set is a configuration error, named, not a key left out in silence.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { issuesOf } from '../../../helpers/config.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const a = makeKey('ES256', 'shared');
const b = makeKey('ES256', 'shared');
const issuer = { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const] };

describe('attack: two keys of a key set under one kid', () => {
  const verifier = createVerifier({ issuers: [{ ...issuer, jwks: { keys: [a.jwk, b.jwk] } }], dpop: { mode: 'disabled' } });

  it('refuses the tokens of both as token_key_ambiguous, trying neither', async () => {
    for (const key of [a, b]) {
      const error = assertInvalidToken(await verifier.verify(bearer(await sign(key))), verifier, 'token_key_ambiguous');
      assert.equal(error.details.claim, 'kid');
    }
  });

  it('refuses a token without kid when two keys fit its alg', async () => {
    const token = await sign(a, claims(), { kid: undefined });
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_key_ambiguous');
  });

  it('picks the one key of the shared kid that fits the alg (an RSA and an EC key under one kid)', async () => {
    const rsa = makeKey('RS256', 'shared');
    const mixed = createVerifier({
      issuers: [{ ...issuer, algorithms: ['ES256', 'RS256'], jwks: { keys: [a.jwk, rsa.jwk] } }],
      dpop: { mode: 'disabled' },
    });
    for (const key of [a, rsa]) assert.equal((await mixed.verify(bearer(await sign(key)))).ok, true);
  });
});

describe('attack: unusable keys in a local key set', () => {
  const weak = {
    ...generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }),
    kid: 'weak',
  };
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['an RSA key of 1024 bits', weak, 'RS256', /RSA key is 1024 bits; at least 2048 are required/],
    ['a key published for encryption (use enc)', { ...a.jwk, use: 'enc' }, 'ES256', /"use" is "enc", expected "sig"/],
    ['a key whose key_ops lack verify', { ...a.jwk, key_ops: ['encrypt'] }, 'ES256', /"key_ops" does not include "verify"/],
    ['a key holding its private part', { ...a.jwk, d: 'AAAA' }, 'ES256', /private key material/],
    // HS256 confusion: a shared secret in the key set would let anyone who reads it sign; with no
    // HS* algorithm allowed it is no key at all, and a named error beats ignoring it.
    [
      'a symmetric oct key when no HS* algorithm is allowed (attack: HS256 confusion)',
      { kty: 'oct', k: Buffer.alloc(32, 7).toString('base64url'), kid: 'hs' },
      'ES256',
      /oct key "hs" fits none of the allowed algorithms \(ES256\)/,
    ],
  ];
  for (const [name, jwk, alg, message] of cases) {
    it(`refuses ${name} at load, naming the key`, () => {
      const issues = issuesOf(() =>
        createVerifier({ issuers: [{ ...issuer, algorithms: [alg as 'ES256'], jwks: { keys: [jwk] } }], dpop: { mode: 'disabled' } }),
      );
      assert.equal(issues.length, 1);
      assert.equal(issues[0]?.path, 'issuers[0].jwks.keys[0]');
      assert.match(issues[0]?.message ?? '', message);
    });
  }
});
