/**
 * Attack: a token that brings its own key (RFC 8725 §3.10). `jwk`, `jku`, `x5u` and `x5c` headers
 * are never trusted: the token is signed by the attacker's key and names it in the header.
 */
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const issuerKey = makeKey('ES256', 'issuer-key');
const attacker = makeKey('ES256', 'issuer-key');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [issuerKey.jwk] } }],
  dpop: { mode: 'disabled' },
});

const { kid: _kid, ...attackerJwk } = attacker.jwk;
const headers: Record<string, Record<string, unknown>> = {
  'embedded jwk': { jwk: attackerJwk },
  'embedded jwk without a kid header': { jwk: attackerJwk, kid: undefined },
  jku: { jku: 'https://attacker.test/jwks.json' },
  x5u: { x5u: 'https://attacker.test/cert.pem' },
  x5c: { x5c: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'] },
};

describe('attack: key reference headers', () => {
  for (const [name, header] of Object.entries(headers)) {
    it(`rejects a token signed by the attacker's key and naming it by ${name}`, async () => {
      const token = await sign(attacker, claims(), header);
      assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_key_reference_untrusted');
    });
  }

  it('rejects an embedded jwk even when it is the issuer key and the signature is genuine', async () => {
    const { kid: _k, ...publicJwk } = issuerKey.jwk;
    const token = await sign(issuerKey, claims(), { jwk: publicJwk });
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_key_reference_untrusted');
  });

  it("rejects the attacker's token under the issuer's kid as a bad signature", async () => {
    const token = await sign(attacker, claims());
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_signature_invalid');
  });
});
