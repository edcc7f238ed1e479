/**
 * The application's revocation check (`runtime.revocation`) failing: a check that throws, one
 * written as an async function (a promise, which resolves or rejects later), one answering no
 * boolean. Each request is refused, fail closed, with 503 `revocation_unavailable` and Retry-After,
 * as a result of `verify` (never a rejection, never an unhandled one); nothing of the thrown
 * error (its message may quote the token) is in the refusal, and a warning names its class only.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RevocationCheck, RevocationSubject } from '../../../src/core/verify/revocation.ts';
import type { VerifyResult } from '../../../src/core/verify/verifier.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';
import { assertDenied, fakeClock, listen, readBody } from '../../helpers/verify.ts';

const key = makeKey('ES256');
const options = {
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' as const },
};
const unavailable = { status: 503, code: 'revocation_unavailable', error: 'temporarily_unavailable', challenges: ['Bearer'] } as const;

/** A revocation check whose answer the test sets; `epoch` moves when `bump` is called. */
function hook(answer: (t: RevocationSubject) => unknown) {
  const state = { epoch: 0, calls: 0, answer };
  const check = {
    get epoch() {
      return state.epoch;
    },
    isRevoked(t: RevocationSubject) {
      state.calls++;
      return state.answer(t);
    },
  } as RevocationCheck;
  return { state, check };
}

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
before(() => process.on('unhandledRejection', onUnhandled));
after(() => process.off('unhandledRejection', onUnhandled));

/** The refusal: 503 revocation_unavailable, Retry-After, the principal for the audit trail, nothing of `secret`. */
function assertUnavailable(result: VerifyResult, verifier: ReturnType<typeof createVerifier>, secret: string) {
  const error = assertDenied(result, verifier, unavailable);
  assert.equal(error.details.retryAfter, 5);
  assert.equal(!result.ok && result.principal?.subject, 'user-1');
  assert.equal(error.cause, undefined, 'the thrown error is kept on the refusal');
  const seen = `${error.message} ${JSON.stringify(error)} ${JSON.stringify(error.details)} ${error.stack}`;
  assert.ok(!seen.includes(secret), 'the refusal carries the thrown error');
}

describe('attack: a revocation check that throws (its database is down) with an error quoting the token', () => {
  it('refuses the request, fail closed, with 503 revocation_unavailable and Retry-After (not a rejected verify); the warning names the error class only', async () => {
    const token = await sign(key, claims());
    const warnings: string[] = [];
    const { check } = hook(() => {
      throw new SyntaxError(`Unexpected token, "Bearer ${token}" is not valid JSON`);
    });
    const verifier = createVerifier(options, { revocation: check, onWarning: (m) => warnings.push(m) });
    for (const r of [await verifier.verify(bearer(token)), await verifier.authenticate(bearer(token)), await verifier.verifyToken(token)]) {
      assertUnavailable(r, verifier, token);
    }
    assert.equal(warnings.length, 1, 'one warning per 30 s');
    assert.match(warnings[0] as string, /revocation check \(isRevoked\) threw SyntaxError.*503 revocation_unavailable/);
    assert.ok(!warnings.join('\n').includes(token) && !warnings.join('\n').includes('not valid JSON'), warnings.join('\n'));
  });

  it('a cached token whose re-check throws after a revocation change is refused, not served from the cache; accepted again once the check answers', async () => {
    const clock = fakeClock();
    const token = await sign(key, claims({}, clock.seconds()));
    const { state, check } = hook(() => false);
    const verifier = createVerifier(options, { clock, revocation: check, onWarning: () => {} });
    // Cached on its second presentation, a hit on the third.
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(token))).ok, true);
    assert.equal(verifier.stats.cacheHits, 1);
    state.answer = () => {
      throw new Error(`lookup of ${token} failed`);
    };
    state.epoch++;
    assertUnavailable(await verifier.verify(bearer(token)), verifier, token);
    state.answer = () => false;
    assert.equal((await verifier.verify(bearer(token))).ok, true);
  });

  it('an introspected token: refused with 503 revocation_unavailable, not a rejected verify', async () => {
    const endpoint = await listen(async (req, res) => {
      await readBody(req);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ active: true, sub: 'user-1', iss: ISSUER }));
    });
    try {
      const { check } = hook(() => {
        throw new TypeError('opaque-secret-token');
      });
      const verifier = createVerifier(
        {
          introspection: { endpoint: `${endpoint.origin}/introspect`, client_id: 'rs', client_secret: 'secret', issuer: ISSUER },
          dpop: { mode: 'disabled' },
        },
        { revocation: check, onWarning: () => {} },
      );
      assertUnavailable(await verifier.verify(bearer('opaque-secret-token')), verifier, 'opaque-secret-token');
    } finally {
      await endpoint.close();
    }
  });

  it('warnings are throttled: one per 30 s, counting the failures in between', async () => {
    const clock = fakeClock();
    const token = await sign(key, claims({}, clock.seconds()));
    const warnings: string[] = [];
    const { check } = hook(() => {
      throw new RangeError('x');
    });
    const verifier = createVerifier(options, { clock, revocation: check, onWarning: (m) => warnings.push(m) });
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(token))).ok, false);
    clock.advance(31);
    assert.equal((await verifier.verify(bearer(token))).ok, false);
    assert.equal(warnings.length, 2);
    assert.match(warnings[1] as string, /RangeError.*\(2 more since the last warning\)/);
  });
});

describe('attack: a revocation check written as an async function', () => {
  it('a promise that rejects: refused with 503 revocation_unavailable, the rejection handled (no unhandled rejection)', async () => {
    const token = await sign(key, claims());
    const warnings: string[] = [];
    const { check } = hook(async () => {
      throw new Error(`store down while looking up ${token}`);
    });
    const verifier = createVerifier(options, { revocation: check, onWarning: (m) => warnings.push(m) });
    unhandled.length = 0;
    assertUnavailable(await verifier.verify(bearer(token)), verifier, token);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(unhandled, [], 'the rejection went unhandled');
    assert.match(warnings[0] as string, /revocation check \(isRevoked\) returned a promise; it must answer synchronously/);
  });

  it('a promise of false is no answer either: refused with 503 revocation_unavailable (not accepted, not token_revoked)', async () => {
    const token = await sign(key, claims());
    const { check } = hook(async () => false);
    const verifier = createVerifier(options, { revocation: check, onWarning: () => {} });
    assertUnavailable(await verifier.verify(bearer(token)), verifier, token);
  });

  it('a check that answers no boolean (undefined: a JavaScript check that forgot to return) is refused, not taken for "not revoked"', async () => {
    const token = await sign(key, claims());
    const warnings: string[] = [];
    const { check } = hook(() => undefined);
    const verifier = createVerifier(options, { revocation: check, onWarning: (m) => warnings.push(m) });
    assertUnavailable(await verifier.verify(bearer(token)), verifier, token);
    assert.match(warnings[0] as string, /revocation check \(isRevoked\) returned undefined, not a boolean/);
  });

  it('true and false are answers: token_revoked, and accepted', async () => {
    const token = await sign(key, claims());
    const { state, check } = hook(() => true);
    const verifier = createVerifier(options, { revocation: check });
    const revoked = await verifier.verify(bearer(token));
    assert.equal(!revoked.ok && revoked.error.code, 'token_revoked');
    state.answer = () => false;
    assert.equal((await verifier.verify(bearer(token))).ok, true);
  });
});
