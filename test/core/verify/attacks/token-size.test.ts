/**
 * Attack: oversized tokens. The size limit is checked before any decoding (base64url, JSON,
 * signature), so a huge token costs a length comparison and nothing more: inputs that would fail
 * every later step still get `token_too_large`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidRequest, assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  transport: { query: true, form_body: true },
  dpop: { mode: 'disabled' },
  cache: { max_entries: 0 },
});

describe('attack: oversized token', () => {
  it('rejects a token of 8193 characters with the default 8 KiB limit', async () => {
    assertInvalidToken(await verifier.verify(bearer('A'.repeat(8193))), verifier, 'token_too_large');
  });

  it('does not call a token of exactly 8192 characters too large', async () => {
    assertInvalidToken(await verifier.verify(bearer('A'.repeat(8192))), verifier, 'token_malformed');
  });

  it('gives token_too_large to a huge token that is not base64url at all (no decoding first)', async () => {
    // token68 characters outside base64url: any decoder would fail on the first one.
    for (const junk of ['~'.repeat(9000), '+/'.repeat(5000), '.'.repeat(100_000), `${'~.'.repeat(5000)}~~~`]) {
      assertInvalidToken(await verifier.verify(bearer(junk)), verifier, 'token_too_large');
      assertInvalidToken(await verifier.verifyToken(junk), verifier, 'token_too_large');
    }
  });

  it('gives token_too_large to a genuinely signed token whose claims make it large', async () => {
    const token = await sign(key, claims({ pad: 'x'.repeat(9000) }));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_too_large');
  });

  it('gives token_too_large to a huge header with invalid JSON', async () => {
    const token = `${b64json('{'.repeat(7000))}.${b64json(claims())}.AAAA`;
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_too_large');
  });

  it('applies the limit to query and form-body tokens too', async () => {
    const huge = '~'.repeat(9000);
    assertInvalidToken(
      await verifier.verify({ method: 'GET', url: `https://api.test/x?access_token=${huge}`, headers: {} }),
      verifier,
      'token_too_large',
    );
    assertInvalidToken(
      await verifier.verify({
        method: 'POST',
        url: 'https://api.test/x',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `access_token=${huge}`,
      }),
      verifier,
      'token_too_large',
    );
  });

  it('honours a configured max_token_size', async () => {
    const small = createVerifier({
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
      max_token_size: 256,
      dpop: { mode: 'disabled' },
    });
    const token = await sign(key, claims({ pad: 'x'.repeat(200) }));
    assert.ok(token.length > 256);
    assertInvalidToken(await small.verify(bearer(token)), small, 'token_too_large');
  });

  it('still treats a huge Authorization value that is not token68 as a malformed header', async () => {
    assertInvalidRequest(await verifier.verify(bearer(`${'A'.repeat(9000)} B`)), verifier, 'request_malformed_authorization');
  });
});
