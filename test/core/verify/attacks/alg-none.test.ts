/**
 * Attack: `alg: none` (RFC 7518 §3.6, RFC 8725 §2.1). An unsecured JWS must never verify, whatever
 * the casing of `none` and whether or not a signature segment is attached.
 */
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' },
});

describe('attack: alg none', () => {
  for (const none of ['none', 'None', 'NONE', 'nOnE']) {
    it(`rejects alg "${none}" with an empty signature as a malformed token`, async () => {
      const token = `${b64json({ alg: none, typ: 'JWT' })}.${b64json(claims())}.`;
      assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_malformed');
    });

    it(`rejects alg "${none}" carrying a signature copied from a valid token`, async () => {
      const valid = await sign(key);
      const signature = valid.slice(valid.lastIndexOf('.') + 1);
      const token = `${b64json({ alg: none, kid: key.kid })}.${b64json(claims())}.${signature}`;
      assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_alg_not_allowed');
    });
  }

  it('rejects alg "none" even through verifyToken (no transport)', async () => {
    const token = `${b64json({ alg: 'none' })}.${b64json(claims())}.AAAA`;
    assertInvalidToken(await verifier.verifyToken(token), verifier, 'token_alg_not_allowed');
  });

  it('rejects a header without alg, and alg of the wrong type', async () => {
    const valid = await sign(key);
    const rest = valid.slice(valid.indexOf('.'));
    assertInvalidToken(await verifier.verify(bearer(`${b64json({ kid: key.kid })}${rest}`)), verifier, 'token_header_invalid');
    assertInvalidToken(await verifier.verify(bearer(`${b64json({ alg: ['ES256'] })}${rest}`)), verifier, 'token_header_invalid');
    assertInvalidToken(await verifier.verify(bearer(`${b64json({ alg: '' })}${rest}`)), verifier, 'token_header_invalid');
  });
});
