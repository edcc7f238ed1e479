/**
 * Static gateway tokens: several valid at once so rotation has an overlap, compared in constant
 * time over SHA-256 digests against every configured token (no early exit), never stored in the
 * clear.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { describe, it, mock } from 'node:test';
import { ConfigError } from '../../../src/core/errors.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';
import { assertDenied, assertInvalidToken } from '../../helpers/verify.ts';

const OLD = 'old-gateway-token-0123456789abcdefghijklmnop';
const NEW = 'new-gateway-token-0123456789abcdefghijklmnop';
const key = makeKey('ES256');
const verifier = createVerifier({
  static_tokens: [
    { id: 'gw-2024', token: OLD, scopes: ['api:read'] },
    { id: 'gw-2025', token: NEW, subject: 'gateway', scopes: ['api:read', 'api:write'] },
  ],
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' },
});
const bearer = (token: string) => ({ method: 'GET', url: 'https://api.test/', headers: { authorization: `Bearer ${token}` } });

describe('static tokens', () => {
  it('accepts the old and the new token during a rotation, each with its own identity', async () => {
    const old = await verifier.verify(bearer(OLD));
    const cur = await verifier.verify(bearer(NEW));
    assert.ok(old.ok && cur.ok);
    assert.equal(old.principal.kind, 'static');
    assert.equal(old.principal.staticTokenId, 'gw-2024');
    assert.equal(old.principal.subject, 'static:gw-2024');
    assert.deepEqual(old.principal.scopes, ['api:read']);
    assert.equal(cur.principal.staticTokenId, 'gw-2025');
    assert.equal(cur.principal.subject, 'gateway');
    assert.ok(cur.principal.effectiveScopes.has('api:write'));
  });

  it('rejects a token differing in its last character, a prefix and an extension', async () => {
    for (const wrong of [`${NEW.slice(0, -1)}q`, NEW.slice(0, -1), `${NEW}x`, NEW.toUpperCase()]) {
      assertInvalidToken(await verifier.verify(bearer(wrong)), verifier, 'token_unknown');
    }
  });

  it('still verifies JWTs alongside static tokens', async () => {
    assert.equal((await verifier.verify(bearer(await sign(key)))).ok, true);
  });

  it('compares SHA-256 digests with timingSafeEqual against every configured token, without stopping at a match', async () => {
    const calls: [number, number][] = [];
    const original = crypto.timingSafeEqual;
    const spy = mock.method(crypto, 'timingSafeEqual', (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      calls.push([a.byteLength, b.byteLength]);
      return original(a, b);
    });
    syncBuiltinESMExports();
    try {
      // The first configured token matches: the second is still compared.
      assert.equal((await verifier.verify(bearer(OLD))).ok, true);
      assert.deepEqual(calls, [
        [32, 32],
        [32, 32],
      ]);
      calls.length = 0;
      assertInvalidToken(await verifier.verify(bearer('x'.repeat(40))), verifier, 'token_unknown');
      assert.deepEqual(calls, [
        [32, 32],
        [32, 32],
      ]);
    } finally {
      spy.mock.restore();
      syncBuiltinESMExports();
    }
  });

  it('does not keep the token in the compiled configuration other than in the frozen config', async () => {
    // The principal and its claims never carry the token.
    const result = await verifier.verify(bearer(NEW));
    assert.ok(result.ok);
    assert.ok(!JSON.stringify(result.principal).includes(NEW));
  });

  it('answers a request without credentials with a bare challenge', async () => {
    assertDenied(await verifier.verify({ method: 'GET', url: '/', headers: {} }), verifier, {
      status: 401,
      code: 'credentials_missing',
      error: null,
      challenges: ['Bearer'],
    });
  });

  it('refuses short and duplicated static tokens at load, naming the path', () => {
    assert.throws(
      () =>
        createVerifier({
          static_tokens: [
            { id: 'a', token: NEW },
            { id: 'b', token: NEW },
            { id: 'c', token: 'short' },
          ],
        }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.deepEqual(
          e.issues.map((i) => i.path),
          ['static_tokens[2].token', 'static_tokens[1].token'],
        );
        return true;
      },
    );
    assert.throws(
      () =>
        createVerifier({
          static_tokens: [
            { id: 'a', token: NEW },
            { id: 'b', token: NEW },
          ],
        }),
      (e: unknown) => e instanceof ConfigError && e.issues.length === 1 && e.issues[0]?.path === 'static_tokens[1].token',
    );
  });
});
