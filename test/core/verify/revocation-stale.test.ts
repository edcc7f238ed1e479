/**
 * A revocation list marked stale for an issuer (`RevocationList.markStale`, what the token service
 * does past `token_service.revocation_max_staleness`): that issuer's tokens it does not hold revoked
 * are refused with 503 `revocation_state_stale` and Retry-After, a cached result too; a token it
 * holds revoked stays 401 `token_revoked`; another issuer's tokens are not affected; the stream
 * registry closes that issuer's streams as the change is announced; unmarked, all is as before.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../../../src/core/verify/principal.ts';
import { RevocationList, revocationAnswer } from '../../../src/core/verify/revocation.ts';
import { type StreamCloseReason, StreamRegistry } from '../../../src/gateway/streams.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';
import { assertDenied } from '../../helpers/verify.ts';

const OTHER = 'https://other-idp.test';
const key = makeKey('ES256');
const options = {
  issuers: [
    { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } },
    { issuer: OTHER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } },
  ],
  dpop: { mode: 'disabled' as const },
};
const stale = { status: 503, code: 'revocation_state_stale', error: 'temporarily_unavailable', challenges: ['Bearer'] } as const;

describe('attack: an instance cut off from its revocation log (the list marked stale for its issuer)', () => {
  it('refuses the issuer’s tokens 503 revocation_state_stale with Retry-After (cached ones too), keeps revoked ones 401, leaves other issuers’ alone, and recovers when unmarked', async () => {
    const list = new RevocationList();
    const warnings: string[] = [];
    const verifier = createVerifier(options, { revocation: list, onWarning: (m) => warnings.push(m) });
    const own = await sign(key, claims({ jti: 'own-1' }));
    const revoked = await sign(key, claims({ jti: 'own-revoked' }));
    const other = await sign(key, claims({ iss: OTHER, jti: 'other-1' }));
    // Twice each: the second presentation is cached.
    for (let i = 0; i < 2; i++) for (const t of [own, other]) assert.equal((await verifier.verify(bearer(t))).ok, true);
    list.apply({ tokenIds: [{ jti: 'own-revoked', expiresAt: Math.floor(Date.now() / 1000) + 600, issuer: ISSUER }] });

    list.markStale(ISSUER, true);
    for (let i = 0; i < 2; i++) {
      const r = await verifier.verify(bearer(own));
      const error = assertDenied(r, verifier, stale);
      assert.equal(error.details.retryAfter, 5);
      assert.equal(!r.ok && r.principal?.subject, 'user-1', 'the principal goes to the audit trail');
    }
    const r = await verifier.verify(bearer(revoked));
    assert.equal(!r.ok && r.error.code, 'token_revoked');
    assert.equal((await verifier.verify(bearer(other))).ok, true, 'another issuer’s token');
    assert.deepEqual(warnings, [], 'no warning per request');

    list.markStale(ISSUER, false);
    assert.equal((await verifier.verify(bearer(own))).ok, true);
    assert.equal((await verifier.verify(bearer(revoked))).ok, false);
  });

  it('closes the streams of the issuer’s tokens as the change is announced (and one added meanwhile), not another issuer’s', () => {
    const list = new RevocationList();
    const registry = new StreamRegistry({ clock: Date.now, revocation: list });
    try {
      const principal = (issuer: string) =>
        ({ kind: 'jwt', issuer, subject: 'alice', expiresAt: Number.POSITIVE_INFINITY, issuedAt: 1 }) as unknown as Principal;
      const closed: [string, StreamCloseReason][] = [];
      const stream = (name: string, issuer: string) => ({
        kind: 'websocket' as const,
        principal: principal(issuer),
        close: (reason: StreamCloseReason) => closed.push([name, reason]),
      });
      registry.add(stream('own', ISSUER));
      registry.add(stream('other', OTHER));
      const epoch = list.epoch;
      list.markStale(ISSUER, true);
      assert.ok(list.epoch > epoch, 'the epoch moves: cached results are checked again');
      assert.deepEqual(closed, [['own', 'revocation_state_stale']]);
      registry.add(stream('late', ISSUER));
      assert.deepEqual(closed.at(-1), ['late', 'revocation_state_stale']);
      list.markStale(ISSUER, false);
      registry.add(stream('after', ISSUER));
      assert.equal(closed.length, 2);
    } finally {
      registry.stop();
    }
  });

  it('an application’s isStale that throws or answers a promise is no answer (revocation_unavailable), never accepted', () => {
    const p = { kind: 'jwt', issuer: ISSUER, subject: 'alice', expiresAt: 1e12, issuedAt: 1 } as unknown as Principal;
    const base = { epoch: 0, isRevoked: () => false };
    assert.equal(revocationAnswer({ ...base, isStale: () => false }, p), false);
    assert.equal(revocationAnswer({ ...base, isStale: () => true }, p), 'stale');
    assert.equal(revocationAnswer({ ...base, isRevoked: () => true, isStale: () => true }, p), true);
    const threw = revocationAnswer(
      {
        ...base,
        isStale: () => {
          throw new TypeError('x');
        },
      },
      p,
    );
    assert.deepEqual(threw, { unanswered: 'isStale threw TypeError' });
    const promised = revocationAnswer({ ...base, isStale: (async () => false) as unknown as () => boolean }, p);
    assert.equal(typeof promised === 'object' && 'unanswered' in promised, true);
  });
});
