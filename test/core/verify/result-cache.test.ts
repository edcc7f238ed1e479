import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

const key = makeKey('EdDSA');
const config = (maxEntries: number) => ({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['EdDSA' as const], jwks: { keys: [key.jwk] } }],
  cache: { max_entries: maxEntries },
});

describe('result cache admission', () => {
  it('keeps a token in steady use cached through a flood of tokens used once', async () => {
    const verifier = createVerifier(config(8));
    const hot = await sign(key, claims());
    await verifier.verifyToken(hot);
    await verifier.verifyToken(hot); // admitted
    const once = await Promise.all(Array.from({ length: 200 }, () => sign(key, claims())));
    for (const token of once) assert.equal((await verifier.verifyToken(token)).ok, true);
    const hits = verifier.stats.cacheHits;
    assert.equal((await verifier.verifyToken(hot)).ok, true);
    assert.equal(verifier.stats.cacheHits, hits + 1, 'the one-time tokens did not push the hot one out');
  });

  it('caches nothing when the cache is disabled', async () => {
    const verifier = createVerifier(config(0));
    const token = await sign(key, claims());
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verifyToken(token)).ok, true);
    assert.equal(verifier.stats.cacheHits, 0);
  });

  it('answers hits with one frozen result, and a throwing key source with a rejected promise', async () => {
    const verifier = createVerifier(config(8));
    const token = await sign(key, claims());
    await verifier.verify(bearer(token));
    await verifier.verify(bearer(token));
    const [a, b] = await Promise.all([verifier.verify(bearer(token)), verifier.verify(bearer(token))]);
    assert.equal(a, b);
    assert.ok(Object.isFrozen(a));
    assert.deepEqual(Object.keys(a), ['ok', 'principal']);

    const broken = createVerifier(
      { issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['EdDSA'], jwks_uri: 'https://issuer.test/jwks' }] },
      {
        keySources: {
          [ISSUER]: {
            lookup: () => {
              throw new Error('key store down');
            },
          },
        },
      },
    );
    const pending = broken.verify(bearer(await sign(key, claims())));
    assert.ok(pending instanceof Promise);
    await assert.rejects(pending, /key store down/);
  });

  it('deep-freezes the claims of a principal, nested objects and arrays included', async () => {
    const verifier = createVerifier(config(8));
    const token = await sign(key, claims({ act: { sub: 'b', act: { sub: 'a' } }, ext: { roles: [{ name: 'r' }], tags: ['x'] } }));
    const result = await verifier.verifyToken(token);
    assert.ok(result.ok);
    const c = result.principal.claims as { act: { act: object }; ext: { roles: [{ name: string }]; tags: string[] } };
    for (const o of [c, c.act, c.act.act, c.ext, c.ext.roles, c.ext.roles[0], c.ext.tags]) assert.ok(Object.isFrozen(o));
    assert.throws(() => {
      (c.ext.roles[0] as { name: string }).name = 'admin';
    }, TypeError);
  });
});
