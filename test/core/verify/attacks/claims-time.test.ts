/**
 * Attack: tokens outside their validity window (RFC 7519 §4.1.4–4.1.6): expired, not yet valid,
 * issued in the future, or living longer than the accepted maximum. The clock is fixed; the skew
 * is 30 s, so each boundary is tested on both sides.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken, fakeClock } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const clock = fakeClock();
const now = clock.seconds();
const issuer = { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] }, clock_skew: '30s' };
const verifier = createVerifier({ issuers: [issuer], dpop: { mode: 'disabled' }, cache: { max_entries: 0 } }, { clock });

const verify = async (overrides: Record<string, unknown>, v = verifier) => v.verify(bearer(await sign(key, claims(overrides, now))));
const accepted = async (overrides: Record<string, unknown>, v = verifier) => {
  const result = await verify(overrides, v);
  assert.equal(result.ok, true, result.ok ? '' : `${result.error.code} for ${JSON.stringify(overrides)}`);
};

describe('attack: expired token', () => {
  it('rejects exp in the past beyond the skew', async () => {
    const error = assertInvalidToken(await verify({ iat: now - 600, exp: now - 31 }), verifier, 'token_expired');
    assert.equal(error.details.claim, 'exp');
  });

  it('rejects exp exactly at now - skew, accepts one second later', async () => {
    assertInvalidToken(await verify({ iat: now - 600, exp: now - 30 }), verifier, 'token_expired');
    await accepted({ iat: now - 600, exp: now - 29 });
  });

  it('rejects a token that expired long ago', async () => {
    assertInvalidToken(await verify({ iat: 1000, exp: 2000 }), verifier, 'token_expired');
  });

  it('rejects a cached token once it expires (the cache never outlives exp + skew)', async () => {
    const cached = createVerifier({ issuers: [issuer], dpop: { mode: 'disabled' } }, { clock });
    const token = await sign(key, claims({ iat: now, exp: now + 60 }, now));
    // Admitted to the cache on its second presentation, served from it on the third.
    assert.equal((await cached.verify(bearer(token))).ok, true);
    assert.equal((await cached.verify(bearer(token))).ok, true);
    assert.equal((await cached.verify(bearer(token))).ok, true);
    assert.equal(cached.stats.cacheHits, 1);
    clock.advance(60 + 30);
    try {
      assertInvalidToken(await cached.verify(bearer(token)), cached, 'token_expired');
    } finally {
      clock.advance(-90);
    }
  });
});

describe('attack: token not yet valid', () => {
  it('rejects nbf beyond now + skew, accepts nbf at now + skew', async () => {
    const error = assertInvalidToken(await verify({ nbf: now + 31 }), verifier, 'token_not_yet_valid');
    assert.equal(error.details.claim, 'nbf');
    await accepted({ nbf: now + 30 });
  });
});

describe('attack: iat in the future', () => {
  it('rejects iat beyond now + skew, accepts iat at now + skew', async () => {
    const error = assertInvalidToken(await verify({ iat: now + 31, exp: now + 600 }), verifier, 'token_iat_in_future');
    assert.equal(error.details.claim, 'iat');
    await accepted({ iat: now + 30, exp: now + 600 });
  });
});

describe('attack: lifetime longer than the maximum', () => {
  it('rejects exp - iat above the default 24 h, accepts exactly 24 h', async () => {
    assertInvalidToken(await verify({ iat: now, exp: now + 86_401 }), verifier, 'token_lifetime_exceeded');
    await accepted({ iat: now, exp: now + 86_400 });
  });

  it('rejects a long-lived token with an old iat (exp - iat, not exp - now)', async () => {
    assertInvalidToken(await verify({ iat: now - 86_000, exp: now + 1000 }), verifier, 'token_lifetime_exceeded');
  });

  it('honours a configured max_lifetime', async () => {
    const short = createVerifier({ issuers: [{ ...issuer, max_lifetime: '1h' }], dpop: { mode: 'disabled' } }, { clock });
    assertInvalidToken(await verify({ iat: now, exp: now + 3601 }, short), short, 'token_lifetime_exceeded');
    await accepted({ iat: now, exp: now + 3600 }, short);
  });

  it('measures the lifetime from now when iat is absent and not required', async () => {
    const noIat = createVerifier({ issuers: [{ ...issuer, required_claims: [] }], dpop: { mode: 'disabled' } }, { clock });
    assertInvalidToken(await verify({ iat: undefined, exp: now + 86_401 }, noIat), noIat, 'token_lifetime_exceeded');
    await accepted({ iat: undefined, exp: now + 600 }, noIat);
  });

  it('rejects exp = 1e400 (JSON.parse gives Infinity) as an excessive lifetime', async () => {
    const { signRaw } = await import('../../../helpers/raw.ts');
    const payload = JSON.stringify(claims({ exp: 0 }, now)).replace('"exp":0', '"exp":1e400');
    const token = signRaw(key, JSON.stringify({ alg: 'ES256', kid: key.kid }), payload);
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_lifetime_exceeded');
  });
});

describe('clock skew is bounded by configuration', () => {
  it('refuses a clock_skew above 60 s at load', () => {
    assert.throws(
      () => createVerifier({ issuers: [{ ...issuer, clock_skew: '61s' }] }),
      (e: Error & { issues?: { path: string }[] }) => e.issues?.[0]?.path === 'issuers[0].clock_skew',
    );
  });
});
