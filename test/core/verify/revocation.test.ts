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

describe('attack: a token without iat outlives the subject revocation entry that should refuse it', () => {
  it('with a revocation list, a token without iat is refused (token_claim_missing) even when required_claims leaves iat out, before and after any entry is pruned; without one it is accepted as configured', async () => {
    const clock = fakeClock();
    const now = clock.seconds();
    const issuer = {
      issuer: ISSUER,
      audiences: [AUDIENCE],
      algorithms: ['ES256' as const],
      jwks: { keys: [key.jwk] },
      required_claims: [],
    };
    const revocations = new RevocationList();
    const guarded = createVerifier({ issuers: [issuer], dpop: { mode: 'disabled' } }, { clock, revocation: revocations });
    const plain = createVerifier({ issuers: [issuer], dpop: { mode: 'disabled' } }, { clock });
    // Signed before the revocation below, with no iat to say so.
    const token = await sign(key, claims({ iat: undefined, exp: now + 30 * 3600 }, now));
    revocations.apply({ subjects: [{ issuer: ISSUER, subject: 'user-1', at: now, expiresAt: now + 86_460 }] });
    clock.advance(25 * 3600);
    revocations.prune(clock.seconds());
    assert.equal(revocations.size.subjects, 0);
    const refused = await guarded.verify(bearer(token));
    assertInvalidToken(refused, guarded, 'token_claim_missing');
    assert.equal((await plain.verify(bearer(token))).ok, true);
  });
});

describe('revocation list: a long-running process does not keep every revocation it ever saw', () => {
  const t = (over: Partial<{ subject: string; clientId: string; delegationId: string }>) => ({
    issuer: ISSUER,
    subject: undefined,
    clientId: undefined,
    delegationId: undefined,
    tokenId: undefined,
    issuedAt: 100,
    expiresAt: 200,
    ...over,
  });

  it('drops grants, subjects and clients once past the expiry they were applied with, and not before', () => {
    const list = new RevocationList();
    list.apply({
      grants: [{ id: 'g1', expiresAt: 1000 }],
      subjects: [{ issuer: ISSUER, subject: 'alice', at: 150, expiresAt: 1000 }],
      clients: [{ issuer: ISSUER, clientId: 'agent', at: 150, expiresAt: 1000 }],
    });
    list.prune(1000);
    assert.equal(list.isRevoked(t({ delegationId: 'g1' })), true);
    assert.equal(list.isRevoked(t({ subject: 'alice' })), true);
    assert.equal(list.isRevoked(t({ clientId: 'agent' })), true);
    list.prune(1001);
    assert.deepEqual(list.size, { grants: 0, tokens: 0, subjects: 0, clients: 0 });
  });

  it('keeps for good what was applied without an expiry (grantIds, a subject entry without expiresAt), also when another entry has one', () => {
    const list = new RevocationList();
    list.apply({ grantIds: ['g-forever'], subjects: [{ issuer: ISSUER, subject: 'bob', at: 150 }] });
    list.apply({ grants: [{ id: 'g-forever', expiresAt: 10 }], subjects: [{ issuer: ISSUER, subject: 'bob', at: 160, expiresAt: 10 }] });
    list.prune(1_000_000);
    assert.equal(list.isRevoked(t({ delegationId: 'g-forever' })), true);
    assert.equal(list.isRevoked(t({ subject: 'bob' })), true);
  });

  it('keeps an entry applied twice until the later of its expiries', () => {
    const list = new RevocationList();
    list.apply({ grants: [{ id: 'g2', expiresAt: 500 }], subjects: [{ issuer: ISSUER, subject: 'carol', at: 150, expiresAt: 500 }] });
    list.apply({ grants: [{ id: 'g2', expiresAt: 900 }], subjects: [{ issuer: ISSUER, subject: 'carol', at: 150, expiresAt: 900 }] });
    list.prune(600);
    assert.equal(list.isRevoked(t({ delegationId: 'g2' })), true);
    assert.equal(list.isRevoked(t({ subject: 'carol' })), true);
  });
});
