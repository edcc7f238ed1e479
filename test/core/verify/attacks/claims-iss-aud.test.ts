/**
 * Attack: a token for another issuer or another audience (RFC 7519 §4.1.1, §4.1.3; RFC 8725
 * §3.9). Both are compared exactly: no prefix, suffix, case or trailing-slash tolerance.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const other = makeKey('ES256', 'other');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' },
});

describe('attack: wrong issuer', () => {
  for (const iss of [
    'https://issuer.test/',
    'HTTPS://ISSUER.TEST',
    'https://issuer.test.evil',
    'https://issuer.tes',
    'https://evil.test',
    '',
  ]) {
    it(`rejects iss ${JSON.stringify(iss)}`, async () => {
      assertInvalidToken(await verifier.verify(bearer(await sign(key, claims({ iss })))), verifier, 'token_issuer_unknown');
    });
  }

  it('rejects a token of an untrusted issuer signed by that issuer', async () => {
    const token = await sign(other, claims({ iss: 'https://evil.test' }));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_issuer_unknown');
  });
});

describe('attack: wrong audience', () => {
  const lookAlikes: Record<string, unknown> = {
    'a suffix look-alike': 'https://api.test.evil',
    'a prefix of the audience': 'https://api.tes',
    'a trailing slash': 'https://api.test/',
    'a different case': 'HTTPS://API.TEST',
    'a path appended': 'https://api.test/other',
    'a userinfo trick': 'https://api.test@evil.test',
    'another API': 'https://other.test',
    'an empty string': '',
    'an array without the audience': ['https://other.test', 'https://api.test.evil'],
    'an empty array': [],
  };
  for (const [name, aud] of Object.entries(lookAlikes)) {
    it(`rejects aud with ${name}`, async () => {
      const error = assertInvalidToken(await verifier.verify(bearer(await sign(key, claims({ aud })))), verifier, 'token_audience_invalid');
      assert.equal(error.details.claim, 'aud');
    });
  }

  it('accepts aud as a string and as an array containing the audience', async () => {
    for (const aud of [AUDIENCE, ['https://other.test', AUDIENCE]]) {
      assert.equal((await verifier.verify(bearer(await sign(key, claims({ aud }))))).ok, true);
    }
  });

  it('rejects a token without aud', async () => {
    const error = assertInvalidToken(
      await verifier.verify(bearer(await sign(key, claims({ aud: undefined })))),
      verifier,
      'token_claim_missing',
    );
    assert.equal(error.details.claim, 'aud');
  });
});
