import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] }, admin: { implies: ['api:*'] } },
  rules: [
    { id: 'read', methods: ['GET'], path: '/items/:id', scopes: ['api:read'] },
    { id: 'write', methods: ['POST'], path: '/items', scopes: ['api:write'] },
  ],
  dpop: { mode: 'disabled' },
});

describe('verifier: the happy path and the principal', () => {
  it('accepts a valid token and returns the principal with inherited scopes', async () => {
    const token = await sign(key, claims({ scope: 'api:write', act: { sub: 'agent-b', act: { sub: 'agent-a' } }, grant_id: 'g1' }));
    const result = await verifier.verify(bearer(token));
    assert.equal(result.ok, true);
    assert.ok(result.ok);
    const p = result.principal;
    assert.equal(p.issuer, ISSUER);
    assert.equal(p.subject, 'user-1');
    assert.equal(p.clientId, 'agent-1');
    assert.deepEqual(p.audience, [AUDIENCE]);
    assert.deepEqual(p.scopes, ['api:write']);
    assert.deepEqual(p.effectiveScopes.list, ['api:read', 'api:write']);
    assert.deepEqual(
      p.actors.map((a) => a.subject),
      ['agent-b', 'agent-a'],
    );
    assert.equal(p.delegationId, 'g1');
    assert.equal(result.rule?.id, 'read');
    assert.ok(Object.isFrozen(p) && Object.isFrozen(p.claims));
  });

  it('caches a token from its second presentation and serves it from the cache after that', async () => {
    const token = await sign(key);
    const before = verifier.stats.cacheHits;
    assert.equal((await verifier.verify(bearer(token))).ok, true);
    assert.equal((await verifier.verify(bearer(token))).ok, true);
    assert.equal(verifier.stats.cacheHits, before, 'a token seen once is not cached');
    assert.equal((await verifier.verify(bearer(token))).ok, true);
    assert.equal(verifier.stats.cacheHits, before + 1);
  });

  it('grants prefix wildcards through the catalogue', async () => {
    const token = await sign(key, claims({ scope: 'admin' }));
    const result = await verifier.verify(bearer(token, { method: 'POST', url: 'https://api.test/items' }));
    assert.equal(result.ok, true);
  });

  it('denies with 403 insufficient_scope and names the scope in the challenge', async () => {
    const token = await sign(key, claims({ scope: 'api:read' }));
    const result = await verifier.verify(bearer(token, { method: 'POST', url: 'https://api.test/items' }));
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.equal(result.error.status, 403);
    assert.equal(result.error.code, 'scope_insufficient');
    assert.deepEqual(verifier.challenges(result.error), [
      'Bearer error="insufficient_scope", error_description="The access token does not grant the scope this request requires.", scope="api:write"',
    ]);
    assert.equal(result.principal?.subject, 'user-1');
  });

  it('denies a route no rule matches', async () => {
    const token = await sign(key);
    const result = await verifier.verify(bearer(token, { url: 'https://api.test/other' }));
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'policy_no_match');
    assert.equal(result.error.status, 403);
  });
});

describe('attack: a path smuggled into the query of an absolute URL without a path', () => {
  it('matches https://host?x=/items/1 and https://host#/items/1 as the path /, not /items/1', async () => {
    const token = await sign(key);
    for (const url of ['https://api.test?next=/items/1', 'https://api.test#/items/1', 'https://api.test?a#/items/1']) {
      const result = await verifier.verify(bearer(token, { url }));
      assert.ok(!result.ok, url);
      assert.equal(result.error.code, 'policy_no_match', url);
    }
    assert.equal((await verifier.verify(bearer(token, { url: 'https://api.test/items/1?next=/x' }))).ok, true);
  });
});
