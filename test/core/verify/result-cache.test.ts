import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { getHeapSnapshot } from 'node:v8';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

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

describe('attack: a token that ends like a cached one', () => {
  // A JWT's cache entry is found by the end of its signature; only the token's hash makes a hit.
  it("refuses a forged payload under a cached token's signature, and the cached token still hits", async () => {
    const verifier = createVerifier(config(8));
    const token = await sign(key, claims({ sub: 'alice' }));
    await verifier.verifyToken(token);
    await verifier.verifyToken(token); // admitted
    const [header, , signature] = token.split('.');
    const forged = `${header}.${b64json(claims({ sub: 'admin' }))}.${signature}`;
    const hits = verifier.stats.cacheHits;
    for (const attempt of [verifier.verifyToken(forged), verifier.verify(bearer(forged))]) {
      const result = await attempt;
      assert.ok(!result.ok);
      assert.equal(result.error.code, 'token_signature_invalid');
    }
    assert.equal(verifier.stats.cacheHits, hits);
    const again = await verifier.verifyToken(token);
    assert.equal(again.ok && again.principal.subject, 'alice');
    assert.equal(verifier.stats.cacheHits, hits + 1);
  });
});

describe('principal.tokenHash', () => {
  const expected = (token: string) => createHash('sha256').update(token).digest('base64url').slice(0, 16);

  it("is the first 16 characters of the token's SHA-256, on a first presentation and on a cache hit", async () => {
    const verifier = createVerifier(config(8));
    const token = await sign(key, claims());
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await verifier.verify(bearer(token)));
    assert.equal(verifier.stats.cacheHits, 1);
    for (const r of results) assert.equal(r.ok && r.principal.tokenHash, expected(token));
  });

  it("is in the principal's JSON, and cannot be written", async () => {
    const verifier = createVerifier(config(8));
    const token = await sign(key, claims({ scope: 'a b' }));
    const result = await verifier.verifyToken(token);
    assert.ok(result.ok);
    const json = JSON.parse(JSON.stringify(result.principal));
    assert.equal(json.tokenHash, expected(token));
    assert.equal(json.subject, result.principal.subject);
    assert.deepEqual(json.scopes, ['a', 'b']);
    assert.ok(Object.isFrozen(result.principal));
    assert.throws(() => {
      (result.principal as { tokenHash: string }).tokenHash = 'forged';
    }, TypeError);
    assert.equal(result.principal.tokenHash, expected(token));
  });
});

/** Whether a heap snapshot holds `halves` joined: the needle is only made after the snapshot is taken. */
async function heapHolds(halves: readonly [string, string]): Promise<boolean> {
  /x/.exec('the last RegExp match otherwise keeps its subject, the header, alive');
  let heap = '';
  for await (const chunk of getHeapSnapshot()) heap += chunk;
  return heap.includes(halves[0] + halves[1]);
}

describe('attack: reading a cached opaque token out of a heap dump', () => {
  // An opaque token's entry is keyed by its SHA-256, which alone makes a hit: the entry needs no
  // copy of the token, which would stay in memory (a live credential at its authorization server)
  // until the entry is evicted, long after `cache_max_ttl`.
  it('keeps no copy of an introspected token in its cache entry', async () => {
    const marker = randomBytes(12).toString('hex').toUpperCase();
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const verifier = createVerifier(
      {
        introspection: { endpoint: 'https://as.test/introspect', client_id: 'rs', client_secret: 'secret', cache_max_ttl: '60s' },
        cache: { max_entries: 8 },
      },
      {
        introspector: {
          introspect: async (t: string) => (t.startsWith('opaque-') ? { active: true, sub: 'alice', exp } : { active: false }),
        },
      },
    );
    // The token exists only inside this function, so once it returns only the verifier can hold it.
    const present = async () => {
      const token = `opaque-${marker}`;
      for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(token))).ok, true);
    };
    await present();
    assert.equal(verifier.stats.cacheHits, 2, 'the token was cached');
    assert.equal(await heapHolds(['opaque-', marker]), false, 'the heap holds the token');
    assert.equal((await verifier.verify(bearer(`opaque-${marker}`))).ok, true);
    assert.equal(verifier.stats.cacheHits, 3, 'still a hit');
  });
});

describe('attack: reading a JWT out of a heap dump after its request', () => {
  // The cache key (the end of the signature) and the header cache's keys are copies: a substring
  // of the token would keep the whole token alive for as long as they are kept.
  for (const [name, entries, presentations] of [
    ['with the cache disabled', 0, 3],
    ['seen once, so not admitted to the cache', 8, 1],
  ] as const) {
    it(`keeps no copy of a verified JWT ${name}`, async () => {
      const verifier = createVerifier(config(entries));
      let halves: [string, string] = ['', ''];
      // The token exists only inside this function, so once it returns only the verifier can hold it.
      const present = async () => {
        const token = await sign(key, claims({ jti: randomBytes(12).toString('hex') }));
        // Copies: a slice would keep the token alive.
        halves = [Buffer.from(token.slice(-40, -20)).toString(), Buffer.from(token.slice(-20)).toString()];
        for (let i = 0; i < presentations; i++) assert.equal((await verifier.verify(bearer(token))).ok, true);
      };
      await present();
      assert.equal(verifier.stats.cacheHits, 0);
      assert.equal(await heapHolds(halves), false, 'the heap holds the token');
    });
  }
});
