/**
 * Subject and client revocations "as of a time" against the tokens a verifier sees: a revocation
 * recorded at second `at` refuses every token issued at or before that second, whatever the
 * precision of its `iat`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RevocationList } from '../../../src/core/verify/revocation.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';
import { assertInvalidToken, fakeClock } from '../../helpers/verify.ts';

const key = makeKey('ES256');

function setup() {
  const clock = fakeClock();
  const revocations = new RevocationList();
  const verifier = createVerifier(
    {
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
      dpop: { mode: 'disabled' },
    },
    { clock, revocation: revocations },
  );
  return { clock, revocations, verifier };
}

describe('attack: a fractional iat slips under a subject or client revocation in the same second', () => {
  it('refuses a token of a revoked subject whose iat is a fraction into the revocation second', async () => {
    const { clock, revocations, verifier } = setup();
    const now = clock.seconds();
    // Issued 0.2 s into the second, before a revocation later in that second (recorded as `now`).
    const token = await sign(key, claims({ iat: now + 0.2 }, now));
    assert.equal((await verifier.verify(bearer(token))).ok, true);
    revocations.apply({ subjects: [{ issuer: ISSUER, subject: 'user-1', at: now }] });
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_revoked');
  });

  it('refuses a token of a revoked client whose iat is a fraction into the revocation second', async () => {
    const { clock, revocations, verifier } = setup();
    const now = clock.seconds();
    const token = await sign(key, claims({ iat: now + 0.5 }, now));
    revocations.apply({ clients: [{ issuer: ISSUER, clientId: 'agent-1', at: now }] });
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_revoked');
  });

  it('still accepts a token issued in a later second', async () => {
    const { clock, revocations, verifier } = setup();
    const now = clock.seconds();
    revocations.apply({ subjects: [{ issuer: ISSUER, subject: 'user-1', at: now }] });
    clock.advance(1);
    const token = await sign(key, claims({ iat: now + 1 }, now));
    assert.equal((await verifier.verify(bearer(token))).ok, true);
  });
});
