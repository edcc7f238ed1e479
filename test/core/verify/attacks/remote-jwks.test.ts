/**
 * Attacks on and failures of a remote `jwks_uri`, against a real loopback JWKS server and the
 * verifier's runtime clock: a flood of random `kid`s must not turn the verifier into a request
 * amplifier against the issuer, a failing endpoint must not drop keys that were good until
 * `jwks_cache.max_stale` past their expiry (and must then), and the cache lifetime follows the
 * response's Cache-Control.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { readiness } from '../../../../src/gateway/ops.ts';
import { RemoteJwks } from '../../../../src/jwks/remote.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertDenied, assertInvalidToken, type FakeClock, fakeClock, listen, type TestServer } from '../../../helpers/verify.ts';

const key = makeKey('ES256', 'k1');
const rotated = makeKey('ES256', 'k2');

/** A JWKS endpoint whose answer the test controls; counts every hit. */
interface JwksEndpoint extends TestServer {
  hits: number;
  status: number;
  keys: Record<string, unknown>[];
  cacheControl: string | undefined;
  /** Raw body replacing the key set. */
  body: string | undefined;
}

async function jwksEndpoint(): Promise<JwksEndpoint> {
  const state = {
    hits: 0,
    status: 200,
    keys: [key.jwk],
    cacheControl: undefined as string | undefined,
    body: undefined as string | undefined,
  };
  const server = await listen((_req, res) => {
    state.hits++;
    if (state.status !== 200) {
      res.writeHead(state.status).end('unavailable');
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'application/jwk-set+json' };
    if (state.cacheControl) headers['cache-control'] = state.cacheControl;
    res.writeHead(200, headers).end(state.body ?? JSON.stringify({ keys: state.keys }));
  });
  return Object.assign(state, server) as JwksEndpoint;
}

/** A verifier of ISSUER's tokens through `endpoint`; `resultCache` entries of verified results (none by default). */
function remoteVerifier(endpoint: JwksEndpoint, clock: FakeClock, cache: Record<string, string> = {}, resultCache = 0) {
  return createVerifier(
    {
      issuers: [
        {
          issuer: ISSUER,
          audiences: [AUDIENCE],
          algorithms: ['ES256'],
          jwks_uri: `${endpoint.origin}/jwks`,
          jwks_cache: { miss_cooldown: '30s', ...cache },
        },
      ],
      dpop: { mode: 'disabled' },
      cache: { max_entries: resultCache },
    },
    { clock, onWarning: () => {} },
  );
}

/** A token with claims valid at the fake clock's time. */
const tokenAt = (clock: FakeClock, k = key, kid = k.kid) => sign(k, claims({}, clock.seconds()), { kid });

describe('attack: kid-miss flood against a remote JWKS', () => {
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  it('fetches at most once per cooldown however many random kids arrive', async () => {
    const clock = fakeClock();
    const verifier = remoteVerifier(endpoint, clock);
    const start = endpoint.hits;
    await verifier.ready();
    assert.equal(endpoint.hits, start + 1);

    const flood = async (n: number) => {
      const tokens = await Promise.all(Array.from({ length: n }, () => tokenAt(clock, key, randomBytes(12).toString('hex'))));
      const results = await Promise.all(tokens.map((t) => verifier.verify(bearer(t))));
      for (const r of results) assertInvalidToken(r, verifier, 'token_kid_unknown');
    };

    // Within the cooldown of the start-up fetch: no fetch at all.
    await flood(50);
    assert.equal(endpoint.hits, start + 1);
    clock.advance(29);
    await flood(50);
    assert.equal(endpoint.hits, start + 1);

    // Cooldown over: one fetch shared by every concurrent miss, then none again.
    clock.advance(2);
    await flood(50);
    assert.equal(endpoint.hits, start + 2);
    for (let i = 0; i < 20; i++) await flood(1);
    assert.equal(endpoint.hits, start + 2);

    // Valid tokens keep verifying throughout the flood.
    const ok = await verifier.verify(bearer(await tokenAt(clock)));
    assert.equal(ok.ok, true);
  });

  it('attack: with miss_cooldown 0, forged tokens naming random kids fetch at most once a second, not once each', async () => {
    const clock = fakeClock();
    const verifier = remoteVerifier(endpoint, clock, { miss_cooldown: '0s' });
    await verifier.ready();
    const start = endpoint.hits;
    // One after another (concurrent misses already share one fetch): each was a fetch of its own.
    for (let i = 0; i < 20; i++) {
      assertInvalidToken(
        await verifier.verify(bearer(await tokenAt(clock, key, randomBytes(12).toString('hex')))),
        verifier,
        'token_kid_unknown',
      );
    }
    assert.equal(endpoint.hits, start);
    clock.advance(1);
    for (let i = 0; i < 20; i++) {
      assertInvalidToken(
        await verifier.verify(bearer(await tokenAt(clock, key, randomBytes(12).toString('hex')))),
        verifier,
        'token_kid_unknown',
      );
    }
    assert.equal(endpoint.hits, start + 1);
    // A rotated key is still picked up at the next miss a second later.
    endpoint.keys = [key.jwk, rotated.jwk];
    clock.advance(1);
    assert.equal((await verifier.verify(bearer(await tokenAt(clock, rotated)))).ok, true);
    assert.equal(endpoint.hits, start + 2);
    endpoint.keys = [key.jwk];
  });

  it('attack: with min_ttl 0 and an issuer answering no-store (or failing, with miss_cooldown 0), requests refresh the set at most once a second, not each', async () => {
    const clock = fakeClock();
    endpoint.cacheControl = 'no-store';
    const verifier = remoteVerifier(endpoint, clock, { min_ttl: '0s', miss_cooldown: '0s' });
    await verifier.ready();
    const start = endpoint.hits;
    const token = await tokenAt(clock);
    for (let i = 0; i < 20; i++) {
      assert.equal((await verifier.verify(bearer(token))).ok, true);
      // Let a background refresh, if one began, finish before the next request.
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(endpoint.hits, start);
    clock.advance(1);
    endpoint.status = 503;
    for (let i = 0; i < 20; i++) {
      assert.equal((await verifier.verify(bearer(token))).ok, true);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(endpoint.hits, start + 1);
    endpoint.status = 200;
    endpoint.cacheControl = undefined;
  });

  it('picks up a rotated key on a kid miss once the cooldown allows it', async () => {
    const clock = fakeClock();
    const verifier = remoteVerifier(endpoint, clock);
    endpoint.keys = [key.jwk];
    await verifier.ready();
    endpoint.keys = [key.jwk, rotated.jwk];
    // The start-up fetch was just now: the new kid is refused until the cooldown passes.
    assertInvalidToken(await verifier.verify(bearer(await tokenAt(clock, rotated))), verifier, 'token_kid_unknown');
    clock.advance(31);
    const before = endpoint.hits;
    assert.equal((await verifier.verify(bearer(await tokenAt(clock, rotated)))).ok, true);
    assert.equal(endpoint.hits, before + 1);
    endpoint.keys = [key.jwk];
  });

  it('a key withdrawn from the JWKS (after a compromise) stops vouching for tokens it signed, cached results included', async () => {
    const clock = fakeClock();
    endpoint.keys = [key.jwk];
    const verifier = remoteVerifier(endpoint, clock, {}, 100);
    await verifier.ready();
    const signedByWithdrawn = await tokenAt(clock);
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(signedByWithdrawn))).ok, true);
    assert.ok(verifier.stats.cacheHits > 0, 'the result is cached');

    endpoint.keys = [rotated.jwk];
    clock.advance(31);
    // A token by the new key misses, and the refetch it causes drops k1.
    assert.equal((await verifier.verify(bearer(await tokenAt(clock, rotated)))).ok, true);
    assertInvalidToken(await verifier.verify(bearer(signedByWithdrawn)), verifier, 'token_kid_unknown');
    endpoint.keys = [key.jwk];
  });

  it('a withdrawn key stops vouching even when only its cached token is presented (cache hits refresh an expired key set)', async () => {
    const clock = fakeClock();
    endpoint.keys = [key.jwk];
    const verifier = remoteVerifier(endpoint, clock, { default_ttl: '60s', min_ttl: '60s' }, 100);
    await verifier.ready();
    // A forged token an attacker made with the compromised key, valid for hours.
    const signedByWithdrawn = await sign(key, claims({ exp: clock.seconds() + 6 * 3600 }, clock.seconds()), { kid: key.kid });
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(signedByWithdrawn))).ok, true);
    const hits = verifier.stats.cacheHits;
    assert.ok(hits > 0, 'the result is cached');

    endpoint.keys = [rotated.jwk];
    // Past the key set's TTL, and nobody presents any other token: every request is a cache hit.
    clock.advance(120);
    const before = endpoint.hits;
    // The stale set may answer while it is refreshed, as on a miss...
    assert.equal((await verifier.verify(bearer(signedByWithdrawn))).ok, true);
    assert.ok(verifier.stats.cacheHits > hits);
    for (let i = 0; i < 50 && endpoint.hits === before; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(endpoint.hits, before + 1, 'a cache hit past the TTL refreshes the key set');
    for (let i = 0; i < 50 && verifier.jwksStatus()[0]?.fresh !== true; i++) await new Promise((r) => setTimeout(r, 10));
    // ...but once the refresh dropped k1 the token is refused.
    assertInvalidToken(await verifier.verify(bearer(signedByWithdrawn)), verifier, 'token_kid_unknown');
    endpoint.keys = [key.jwk];
  });
});

describe('attack: a key whose JWKS entry narrows its alg keeps vouching through the result cache', () => {
  let endpoint: JwksEndpoint;
  const rsa = makeKey('RS256', 'rsa-1');
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  it('a token of an algorithm the key is no longer published for is refused once the key set is refreshed, cached result included', async () => {
    const clock = fakeClock();
    // Published without `alg`, the RSA key verifies RS256 and PS256, the issuer's allowlist.
    endpoint.keys = [rsa.jwk];
    const verifier = createVerifier(
      {
        issuers: [
          {
            issuer: ISSUER,
            audiences: [AUDIENCE],
            algorithms: ['RS256', 'PS256'],
            jwks_uri: `${endpoint.origin}/jwks`,
            jwks_cache: { miss_cooldown: '30s', default_ttl: '60s', min_ttl: '60s' },
          },
        ],
        dpop: { mode: 'disabled' },
        cache: { max_entries: 100 },
      },
      { clock, onWarning: () => {} },
    );
    await verifier.ready();
    const rs256 = await sign(rsa, claims({ exp: clock.seconds() + 6 * 3600 }, clock.seconds()));
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(rs256))).ok, true);
    const hits = verifier.stats.cacheHits;
    assert.ok(hits > 0, 'the result is cached');

    // The issuer pins the key to PS256 (RFC 7517 §4.4): it no longer vouches for RS256 tokens.
    endpoint.keys = [{ ...rsa.jwk, alg: 'PS256' }];
    clock.advance(120);
    const before = endpoint.hits;
    await verifier.verify(bearer(rs256));
    for (let i = 0; i < 50 && endpoint.hits === before; i++) await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < 50 && verifier.jwksStatus()[0]?.fresh !== true; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(endpoint.hits, before + 1);
    // A token first seen now is refused...
    const fresh = await sign(rsa, claims({}, clock.seconds()));
    assertInvalidToken(await verifier.verify(bearer(fresh)), verifier, 'token_kid_unknown');
    // ...and so is the one whose result was cached.
    assertInvalidToken(await verifier.verify(bearer(rs256)), verifier, 'token_kid_unknown');
  });
});

describe('remote JWKS failure keeps the last good key set', () => {
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  it('keeps verifying with the last good keys while the endpoint fails', async () => {
    const clock = fakeClock();
    endpoint.status = 200;
    const verifier = remoteVerifier(endpoint, clock, { default_ttl: '60s', min_ttl: '60s' });
    await verifier.ready();
    endpoint.status = 500;

    // Past the TTL: the stale set is used while a background refresh fails.
    clock.advance(120);
    const before = endpoint.hits;
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
    // A kid miss waits for (or starts) the refresh; it fails and the old set stays.
    assertInvalidToken(await verifier.verify(bearer(await tokenAt(clock, rotated))), verifier, 'token_kid_unknown');
    assert.equal(endpoint.hits, before + 1);
    const status = verifier.jwksStatus()[0];
    assert.equal(status?.loaded, true);
    assert.equal(status?.lastError, 'HTTP 500');
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);

    // A failure is retried no sooner than the cooldown.
    clock.advance(10);
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
    assert.equal(endpoint.hits, before + 1);
    // Staleness counts from the first failed refresh of the expired set (10 s ago), not from the
    // expiry: nobody needed the keys between the two.
    assert.equal(verifier.jwksStatus()[0]?.fresh, false);
    assert.equal(verifier.jwksStatus()[0]?.staleForMs, 10_000);
  });

  it('an idle verifier whose key set expired unused is not stale (its readiness must not decay)', async () => {
    const clock = fakeClock();
    endpoint.status = 200;
    const verifier = remoteVerifier(endpoint, clock, { default_ttl: '60s', min_ttl: '60s' });
    await verifier.ready();
    clock.advance(2 * 3600);
    assert.equal(verifier.jwksStatus()[0]?.fresh, false);
    assert.equal(verifier.jwksStatus()[0]?.staleForMs, 0);
  });

  /** The endpoint starts answering `bad`: the refetch a kid miss forces fails, and the last good key still verifies. */
  async function assertBadRefetchKeepsLastGood(bad: string, lastError?: string): Promise<void> {
    const clock = fakeClock();
    endpoint.status = 200;
    endpoint.body = undefined;
    const verifier = remoteVerifier(endpoint, clock);
    await verifier.ready();
    endpoint.body = bad;
    clock.advance(700);
    const before = endpoint.hits;
    assertInvalidToken(await verifier.verify(bearer(await tokenAt(clock, rotated))), verifier, 'token_kid_unknown');
    assert.equal(endpoint.hits, before + 1);
    if (lastError !== undefined) assert.equal(verifier.jwksStatus()[0]?.lastError, lastError);
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
    assert.equal(verifier.jwksStatus()[0]?.keys, 1);
  }

  it('keeps the last good keys when the endpoint answers garbage, an empty set or only unusable keys', async () => {
    const oct = { kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA' };
    try {
      for (const bad of ['not json', '{"keys": []}', JSON.stringify({ keys: [oct] }), '{"keys": {}}'])
        await assertBadRefetchKeepsLastGood(bad);
    } finally {
      endpoint.body = undefined;
    }
  });

  it('attack: a key set with a member named twice in a key is a failed fetch; the last good keys stay', async () => {
    // The rotated key, its x spelled twice: JSON.parse keeps the last (the real one), another
    // parser the first. Refused as a token with a duplicate claim is; nothing of it is used.
    const rotatedJwk = JSON.stringify(rotated.jwk);
    try {
      for (const bad of [
        `{"keys":[${rotatedJwk.replace('"x":', `"x":${JSON.stringify(key.jwk.x)},"x":`)}]}`,
        `{"keys":[${JSON.stringify(key.jwk)}],"keys":[${rotatedJwk}]}`,
      ]) {
        await assertBadRefetchKeepsLastGood(bad, 'response repeats a member name in one object');
      }
    } finally {
      endpoint.body = undefined;
    }
  });

  it('attack: a key set nested 100,000 arrays deep is a failed fetch that says so, not a repeated member; the last good keys stay', async () => {
    const deep = `{"keys":[${JSON.stringify(rotated.jwk)}],"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    try {
      await assertBadRefetchKeepsLastGood(deep, 'response nests objects and arrays too deeply');
    } finally {
      endpoint.body = undefined;
    }
  });

  it('answers 503 keys_unavailable while no key set was ever fetched, and recovers once the endpoint does', async () => {
    const clock = fakeClock();
    endpoint.status = 503;
    const verifier = remoteVerifier(endpoint, clock);
    await verifier.ready();
    assertDenied(await verifier.verify(bearer(await tokenAt(clock))), verifier, {
      status: 503,
      code: 'keys_unavailable',
      error: 'temporarily_unavailable',
      challenges: ['Bearer'],
    });
    // Still down after the cooldown: one more fetch, and still 503 (not an unknown-kid 401).
    clock.advance(31);
    const before = endpoint.hits;
    assertDenied(await verifier.verify(bearer(await tokenAt(clock))), verifier, {
      status: 503,
      code: 'keys_unavailable',
      error: 'temporarily_unavailable',
      challenges: ['Bearer'],
    });
    assert.equal(endpoint.hits, before + 1);
    // Within the cooldown of that failure: no fetch.
    assertDenied(await verifier.verify(bearer(await tokenAt(clock))), verifier, {
      status: 503,
      code: 'keys_unavailable',
      error: 'temporarily_unavailable',
      challenges: ['Bearer'],
    });
    assert.equal(endpoint.hits, before + 1);
    endpoint.status = 200;
    clock.advance(31);
    // After the cooldown the next request fetches again instead of failing forever.
    const result = await verifier.verify(bearer(await tokenAt(clock)));
    assert.equal(result.ok, true, result.ok ? '' : result.error.code);
  });
});

describe('remote JWKS honours Cache-Control', () => {
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  function remote(clock: FakeClock, ttl: { min?: number; max?: number } = {}) {
    return new RemoteJwks({
      url: `${endpoint.origin}/jwks`,
      algorithms: ['ES256'],
      minTtl: ttl.min ?? 60,
      maxTtl: ttl.max ?? 86400,
      defaultTtl: 600,
      missCooldown: 30,
      timeout: 5,
      clock,
    });
  }

  /** Look a key up and let any background refresh the lookup started finish. */
  async function lookupAndSettle(r: RemoteJwks): Promise<void> {
    r.lookup('k1', 'ES256');
    // refreshAfterMiss returns the in-flight refresh when there is one.
    if (r.status.fresh === false) await r.refreshAfterMiss();
  }

  it('uses the key set for max-age seconds, then refreshes', async () => {
    const clock = fakeClock();
    endpoint.cacheControl = 'public, max-age=300';
    const r = remote(clock);
    await r.load();
    const start = endpoint.hits;
    clock.advance(299);
    await lookupAndSettle(r);
    assert.equal(endpoint.hits, start);
    assert.equal(r.status.fresh, true);
    clock.advance(2);
    await lookupAndSettle(r);
    assert.equal(endpoint.hits, start + 1);
    assert.equal(r.status.fresh, true);
  });

  it('clamps max-age to min_ttl and max_ttl', async () => {
    const clock = fakeClock();
    endpoint.cacheControl = 'max-age=5';
    const r = remote(clock, { min: 60 });
    await r.load();
    clock.advance(30);
    assert.equal(r.status.fresh, true);
    clock.advance(31);
    assert.equal(r.status.fresh, false);

    endpoint.cacheControl = 'max-age=999999';
    const capped = remote(clock, { max: 3600 });
    await capped.load();
    clock.advance(3599);
    assert.equal(capped.status.fresh, true);
    clock.advance(2);
    assert.equal(capped.status.fresh, false);
  });

  it('uses default_ttl without Cache-Control and min_ttl for no-store', async () => {
    const clock = fakeClock();
    endpoint.cacheControl = undefined;
    const r = remote(clock);
    await r.load();
    clock.advance(599);
    assert.equal(r.status.fresh, true);
    clock.advance(2);
    assert.equal(r.status.fresh, false);

    endpoint.cacheControl = 'no-store';
    const n = remote(clock, { min: 60 });
    await n.load();
    clock.advance(61);
    assert.equal(n.status.fresh, false);
    endpoint.cacheControl = undefined;
  });

  it('refuses an oversized key set without reading it all and keeps the last good set, no longer fresh', async () => {
    const clock = fakeClock();
    endpoint.cacheControl = 'max-age=60';
    const r = new RemoteJwks({
      url: `${endpoint.origin}/jwks`,
      algorithms: ['ES256'],
      minTtl: 60,
      maxTtl: 86400,
      defaultTtl: 600,
      missCooldown: 30,
      timeout: 5,
      clock,
      maxBytes: 4096,
    });
    assert.equal(await r.load(), true);
    endpoint.body = JSON.stringify({ keys: [key.jwk], padding: 'x'.repeat(100_000) });
    clock.advance(61);
    assert.equal(await r.refreshAfterMiss(), false);
    assert.match(r.status.lastError ?? '', /larger than 4096 bytes/);
    assert.equal(r.status.fresh, false);
    assert.equal(typeof r.lookup('k1', 'ES256'), 'object');
    endpoint.body = undefined;
    endpoint.cacheControl = undefined;
  });
});

describe("a trusted issuer's RSA key whose n is not minimal (a leading zero octet, as some IdPs publish)", () => {
  const rsa = makeKey('RS256', 'rsa-padded');
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
    const n = Buffer.concat([Buffer.alloc(1), Buffer.from(rsa.jwk.n as string, 'base64url')]).toString('base64url');
    endpoint.keys = [key.jwk, { ...rsa.jwk, n }];
  });
  after(() => endpoint.close());

  it('is read as the integer it spells (RFC 7518 §6.3.1.1): its tokens verify, without a warning', async () => {
    const clock = fakeClock();
    const warnings: string[] = [];
    const verifier = createVerifier(
      {
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256', 'RS256'], jwks_uri: `${endpoint.origin}/jwks` }],
        dpop: { mode: 'disabled' },
        cache: { max_entries: 0 },
      },
      { clock, onWarning: (w) => warnings.push(w) },
    );
    await verifier.ready();
    assert.equal((await verifier.verify(bearer(await sign(rsa, claims({}, clock.seconds()))))).ok, true);
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
    assert.deepEqual(warnings, []);
  });
});

describe('attack: a jwks_uri holding credentials (user:password@, a key in the query) leaks none of them when its fetch fails', () => {
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  it('the warning and the status say why without the URL fetch put in its message', async () => {
    // fetch refuses a URL with credentials, naming the whole URL in its message. The verifier's
    // configuration refuses user:password@, but a client's jwks_uri stored earlier may hold one.
    const url = new URL(`${endpoint.origin}/jwks?api_key=query-secret-7f3a`);
    url.username = 'jwks-user';
    url.password = 'jwks-password-9c1e';
    const warnings: string[] = [];
    const r = new RemoteJwks({
      url: url.href,
      algorithms: ['ES256'],
      minTtl: 60,
      maxTtl: 86400,
      defaultTtl: 600,
      missCooldown: 30,
      timeout: 5,
      clock: fakeClock(),
      onWarning: (w) => warnings.push(w),
    });
    const hits = endpoint.hits;
    assert.equal(await r.load(), false);
    assert.equal(endpoint.hits, hits, 'nothing was sent');
    assert.equal(warnings.length, 1);
    for (const text of [...warnings, r.status.lastError ?? '', r.status.url]) {
      for (const secret of ['jwks-password-9c1e', 'query-secret-7f3a', 'jwks-user']) assert.ok(!text.includes(secret), text);
    }
    assert.match(r.status.lastError ?? '', /\S/);
  });
});

describe('attack: a key set of 100 keys, 99 of them unusable (use enc, key_ops without verify, an unknown kty)', () => {
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  it('costs a bounded number of warnings per fetch, not one log line per key; the usable key still verifies', async () => {
    endpoint.keys = [
      { ...key.jwk, kid: 'enc', use: 'enc' },
      { ...key.jwk, kid: 'ops', key_ops: ['encrypt'] },
      ...Array.from({ length: 97 }, () => ({ kty: 'none' })),
      key.jwk,
    ];
    const clock = fakeClock();
    const warnings: string[] = [];
    const verifier = createVerifier(
      {
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks_uri: `${endpoint.origin}/jwks` }],
        dpop: { mode: 'disabled' },
        cache: { max_entries: 0 },
      },
      { clock, onWarning: (w) => warnings.push(w) },
    );
    try {
      await verifier.ready();
      assert.ok(warnings.length <= 11, `${warnings.length} warnings for one fetch`);
      assert.match(warnings.join('\n'), /skipped key enc: JWK "use" is "enc"/);
      assert.match(warnings.at(-1) ?? '', /89 more keys skipped/);
      assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
      // A token naming a skipped key is refused as an unknown key.
      assertInvalidToken(await verifier.verify(bearer(await tokenAt(clock, key, 'enc'))), verifier, 'token_kid_unknown');
    } finally {
      endpoint.keys = [key.jwk];
    }
  });
});

describe('attack: a key set of 2,800 valid keys (512 KiB of P-256 keys: ~0.4 s of imports at each fetch)', () => {
  it('is refused whole, saying how many keys it holds, and the last good set is kept', async () => {
    const endpoint = await jwksEndpoint();
    try {
      const clock = fakeClock();
      endpoint.cacheControl = 'max-age=60';
      const r = new RemoteJwks({
        url: `${endpoint.origin}/jwks`,
        algorithms: ['ES256'],
        minTtl: 60,
        maxTtl: 86400,
        defaultTtl: 600,
        missCooldown: 30,
        timeout: 5,
        clock,
      });
      assert.equal(await r.load(), true);
      endpoint.keys = Array.from({ length: 2800 }, (_, i) => ({ ...rotated.jwk, kid: `k${i}` }));
      clock.advance(61);
      assert.equal(await r.refreshAfterMiss(), false);
      assert.match(r.status.lastError ?? '', /holds at most 100 keys; this one holds 2800/);
      assert.equal(typeof r.lookup('k1', 'ES256'), 'object');
      assert.equal(r.lookup('k5', 'ES256'), 'unknown');
    } finally {
      await endpoint.close();
    }
  });
});

describe('attack: a JWKS endpoint that redirects to an internal address', () => {
  it('is not followed: the target is never asked, the fetch fails saying why, and no key is taken from it', async () => {
    const internal = await jwksEndpoint();
    const redirecting = await listen((_req, res) => {
      res.writeHead(302, { location: `${internal.origin}/jwks` }).end();
    });
    try {
      const r = new RemoteJwks({
        url: `${redirecting.origin}/jwks`,
        algorithms: ['ES256'],
        minTtl: 60,
        maxTtl: 86400,
        defaultTtl: 600,
        missCooldown: 30,
        timeout: 5,
        clock: fakeClock(),
      });
      assert.equal(await r.load(), false);
      assert.equal(internal.hits, 0);
      assert.equal(r.status.lastError, 'answered with a redirect, which is not followed');
      assert.equal(r.lookup('k1', 'ES256'), 'unavailable');
    } finally {
      await internal.close();
      await redirecting.close();
    }
  });
});

describe('attack: a key withdrawn while the IdP cannot be reached (jwks_cache.max_stale)', () => {
  let endpoint: JwksEndpoint;
  before(async () => {
    endpoint = await jwksEndpoint();
  });
  after(() => endpoint.close());

  const keysStale = { status: 503, code: 'keys_stale', error: 'temporarily_unavailable', challenges: ['Bearer'] } as const;

  /** Wait until the verifier's key source has made `n` more fetches than `from`. */
  async function fetched(from: number, n = 1): Promise<void> {
    for (let i = 0; i < 100 && endpoint.hits < from + n; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(endpoint.hits, from + n);
    // The failure is recorded once the fetch settles.
    await new Promise((r) => setTimeout(r, 20));
  }

  it('a set whose refreshes keep failing is dropped max_stale past its TTL: its tokens, cached ones included, get 503 keys_stale and /readyz says why', async () => {
    const clock = fakeClock();
    endpoint.status = 200;
    const verifier = remoteVerifier(endpoint, clock, { default_ttl: '60s', min_ttl: '60s', max_stale: '1h' }, 100);
    await verifier.ready();
    // A token an attacker made with a key the IdP is about to withdraw, valid for hours.
    const signedByWithdrawn = await sign(key, claims({ exp: clock.seconds() + 6 * 3600 }, clock.seconds()), { kid: key.kid });
    for (let i = 0; i < 3; i++) assert.equal((await verifier.verify(bearer(signedByWithdrawn))).ok, true);

    // The IdP withdraws the key, and Tessera cannot reach it any more.
    endpoint.keys = [rotated.jwk];
    endpoint.status = 500;
    clock.advance(60);
    const before = endpoint.hits;
    // Within max_stale of the set's expiry the last good keys are used (an IdP outage is not ours).
    assert.equal((await verifier.verify(bearer(signedByWithdrawn))).ok, true);
    await fetched(before);
    clock.advance(3600 - 1);
    assert.equal((await verifier.verify(bearer(signedByWithdrawn))).ok, true);
    assert.equal(verifier.jwksStatus()[0]?.loaded, true);

    // max_stale past the expiry: the set is dropped, the cached result with it.
    clock.advance(1);
    assertDenied(await verifier.verify(bearer(signedByWithdrawn)), verifier, keysStale);
    assertDenied(await verifier.verify(bearer(await tokenAt(clock))), verifier, keysStale);
    const status = verifier.jwksStatus()[0];
    assert.equal(status?.loaded, false);
    assert.equal(status?.dropped, true);
    const ready = await readiness([verifier], undefined, [], false);
    assert.equal(ready.ready, false);
    assert.match(ready.checks[0]?.detail ?? '', /dropped.*jwks_cache\.max_stale/);

    // The IdP is back: the next request after the cooldown fetches the current set, without the withdrawn key.
    endpoint.status = 200;
    clock.advance(31);
    assertInvalidToken(await verifier.verify(bearer(signedByWithdrawn)), verifier, 'token_kid_unknown');
    assert.equal((await verifier.verify(bearer(await tokenAt(clock, rotated)))).ok, true);
    assert.equal(verifier.jwksStatus()[0]?.dropped, false);
    assert.equal((await readiness([verifier], undefined, [], false)).ready, true);
    endpoint.keys = [key.jwk];
  });

  it('a connection refused counts as a failed refresh: the default max_stale (24h) drops the set', async () => {
    const down = await jwksEndpoint();
    const clock = fakeClock();
    const verifier = createVerifier(
      {
        issuers: [
          {
            issuer: ISSUER,
            audiences: [AUDIENCE],
            algorithms: ['ES256'],
            jwks_uri: `${down.origin}/jwks`,
            jwks_cache: { default_ttl: '60s' },
          },
        ],
        dpop: { mode: 'disabled' },
        cache: { max_entries: 0 },
      },
      { clock, onWarning: () => {} },
    );
    await verifier.ready();
    await down.close();
    clock.advance(60);
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
    for (let i = 0; i < 100 && verifier.jwksStatus()[0]?.lastError === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.match(verifier.jwksStatus()[0]?.lastError ?? '', /^unreachable \(ECONNREFUSED\)$/);
    clock.advance(24 * 3600 - 1);
    assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
    clock.advance(1);
    assertDenied(await verifier.verify(bearer(await tokenAt(clock))), verifier, keysStale);
  });

  it('an idle verifier whose set expired more than max_stale ago does not use it while it refetches: the request waits, and fails closed when the fetch does', async () => {
    const clock = fakeClock();
    endpoint.status = 200;
    endpoint.keys = [key.jwk];
    const verifier = remoteVerifier(endpoint, clock, { default_ttl: '60s', min_ttl: '60s', max_stale: '1h' });
    await verifier.ready();
    const token = await sign(key, claims({ exp: clock.seconds() + 6 * 3600 }, clock.seconds()), { kid: key.kid });
    endpoint.keys = [rotated.jwk];
    endpoint.status = 500;
    clock.advance(2 * 3600);
    // Nobody needed the keys: not stale for readiness, nothing dropped yet.
    assert.equal(verifier.jwksStatus()[0]?.dropped, false);
    assert.equal((await readiness([verifier], undefined, [], false)).ready, true);
    const before = endpoint.hits;
    assertDenied(await verifier.verify(bearer(token)), verifier, keysStale);
    assert.equal(endpoint.hits, before + 1, 'the request waited for a fetch');
    // With the IdP reachable the same request gets the current set: the withdrawn key is gone.
    endpoint.status = 200;
    clock.advance(31);
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_kid_unknown');
    endpoint.keys = [key.jwk];
  });
});

describe('attack: a trusted issuer’s key set holding an RSA key of 16384 bits (each check under it costs ~2.6 ms, and any caller picks the key by kid)', () => {
  it('skips that key with a warning naming its size; the other keys verify, and a token naming it is refused token_kid_unknown without a check', async () => {
    const endpoint = await jwksEndpoint();
    // A modulus need not be a product of primes to be imported: an odd 16384-bit number will do.
    const modulus = randomBytes(2048);
    modulus.writeUInt8(modulus.readUInt8(0) | 0x80, 0);
    modulus.writeUInt8(modulus.readUInt8(2047) | 1, 2047);
    const big = { kty: 'RSA', kid: 'big', alg: 'RS256', n: modulus.toString('base64url'), e: 'AQAB' };
    const rsa = makeKey('RS256', 'rsa');
    endpoint.keys = [big, rsa.jwk, key.jwk];
    const clock = fakeClock();
    const warnings: string[] = [];
    const verifier = createVerifier(
      {
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256', 'RS256'], jwks_uri: `${endpoint.origin}/jwks` }],
        dpop: { mode: 'disabled' },
        cache: { max_entries: 0 },
      },
      { clock, onWarning: (w) => warnings.push(w) },
    );
    try {
      await verifier.ready();
      assert.match(warnings.join('\n'), /skipped key big: RSA key is 16384 bits; at most 8192 are accepted here/);
      assert.equal((await verifier.verify(bearer(await tokenAt(clock)))).ok, true);
      assert.equal((await verifier.verify(bearer(await tokenAt(clock, rsa)))).ok, true);
      assertInvalidToken(await verifier.verify(bearer(await tokenAt(clock, rsa, 'big'))), verifier, 'token_kid_unknown');
    } finally {
      await endpoint.close();
    }
  });
});
