import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { TokenBucketLimiter } from '../../src/core/ratelimit.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';
import {
  AUDIENCE,
  baseConfig,
  ISSUER,
  key,
  parse,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

describe('token bucket', () => {
  it('allows a burst, then refuses with the wait until the next token, then refills', () => {
    let now = 1_000_000;
    const l = new TokenBucketLimiter({ rate: 2, burst: 3, maxKeys: 10, clock: () => now });
    assert.deepEqual([l.take('a'), l.take('a'), l.take('a')], [0, 0, 0]);
    assert.equal(l.take('a'), 1);
    assert.equal(l.take('b'), 0, 'keys are independent');
    now += 500;
    assert.equal(l.take('a'), 0);
    assert.equal(l.take('a'), 1);
  });
  it('rounds slow refills up to whole seconds', () => {
    let now = 0;
    const l = new TokenBucketLimiter({ rate: 0.1, burst: 1, maxKeys: 10, clock: () => now });
    assert.equal(l.take('a'), 0);
    assert.equal(l.take('a'), 10);
    now += 10_000;
    assert.equal(l.take('a'), 0);
  });
  it('a rate too small for a header (1e-21/s) still answers a Retry-After of digits, at most a day, not 1e+21', () => {
    const l = new TokenBucketLimiter({ rate: 1e-21, burst: 1, maxKeys: 10, clock: () => 0 });
    assert.equal(l.take('a'), 0);
    const wait = l.take('a');
    assert.match(String(wait), /^\d+$/);
    assert.equal(wait, 86_400);
  });
  it('a rate of 0 or NaN (a library caller) gives a wait of digits too, not Infinity or NaN', () => {
    for (const rate of [0, Number.NaN]) {
      const l = new TokenBucketLimiter({ rate, burst: 1, maxKeys: 10, clock: () => 0 });
      l.take('a');
      assert.equal(l.take('a'), 86_400, String(rate));
    }
  });
  it('refund gives back a token taken for an outcome that did not spend it, and drops a bucket full again', () => {
    let now = 0;
    const l = new TokenBucketLimiter({ rate: 1, burst: 3, maxKeys: 10, clock: () => now });
    assert.equal(l.has('a'), false, 'no bucket until a take');
    assert.deepEqual([l.take('a'), l.take('a')], [0, 0]);
    assert.equal(l.has('a'), true);
    l.refund('a');
    assert.deepEqual([l.take('a'), l.take('a'), l.take('a')], [0, 0, 1], 'one token back, not a fresh burst');
    now += 2000;
    l.refund('a');
    assert.equal(l.has('a'), false, 'two refilled and one given back: full, so dropped');
    l.refund('b');
    assert.equal(l.has('b'), false, 'no bucket is made by a refund');
  });
  it('keeps at most maxKeys buckets', () => {
    const l = new TokenBucketLimiter({ rate: 1, burst: 1, maxKeys: 2, clock: () => 0 });
    for (const k of ['a', 'b', 'c']) l.take(k);
    assert.equal(l.size, 2);
  });
  it('memory exhaustion: buckets for many callers with long subjects (as long as a header allows) take no more memory than short ones; maxKeys bounds memory, not only the count', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const l = new TokenBucketLimiter({ rate: 1, burst: 2, maxKeys: 100_000, clock: () => 0 });
    gc();
    const before = process.memoryUsage().heapUsed;
    // Distinct subjects, as separate tokens carry them (not one repeated string V8 could share).
    const subjects = Array.from({ length: 2000 }, () => randomBytes(6000).toString('hex'));
    const long = (i: number) => `s:https://issuer.example\n${subjects[i]}`;
    for (let i = 0; i < 2000; i++) assert.equal(l.take(long(i)), 0);
    const kept = [long(7), long(8)];
    subjects.length = 0;
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    assert.equal(l.size, 2000);
    // 2000 keys of 12 kB each would be 24 MB; a bucket whose key is a digest is about 200 bytes.
    assert.ok(grown < 4_000_000, `${grown} bytes for 2000 buckets`);
    // Each long key is still its own bucket, and the same one on every request.
    assert.equal(l.take(kept[0] as string), 0);
    assert.equal(l.take(kept[0] as string), 1);
    assert.equal(l.take(kept[1] as string), 0);
  });
});

describe('gateway: rate limit keys', () => {
  const other = makeKey('ES256', 'other-1');
  const OTHER_ISSUER = 'https://other-issuer.test';
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      issuers: [
        { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } },
        { issuer: OTHER_ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [other.jwk] } },
      ],
      gateway: {
        routes: [
          { id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}], rate_limit: { key: 'client', rate: 0.01, burst: 1 } },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('bucket exhaustion: a client of another issuer with the same client_id does not spend the victim’s bucket', async () => {
    const call = (t: string) => fetch(`${gw.url}/x`, { headers: { authorization: `Bearer ${t}` } }).then((r) => r.status);
    const attacker = await sign(other, claims({ iss: OTHER_ISSUER, sub: 'mallory', client_id: 'agent-1' }));
    assert.equal(await call(attacker), 200);
    assert.equal(await call(attacker), 429);
    assert.equal(await call(await token({ client_id: 'agent-1' })), 200, 'agent-1 of the trusted issuer keeps its own bucket');
  });

  it('attack: the other-s twin (r, n - s) of an ES256 token naming no sub or client_id is the same caller, not a fresh bucket', async () => {
    const call = (t: string) => fetch(`${gw.url}/x`, { headers: { authorization: `Bearer ${t}` } }).then((r) => r.status);
    const valid = await token({ sub: undefined, client_id: undefined });
    const dot = valid.lastIndexOf('.');
    const sig = Buffer.from(valid.slice(dot + 1), 'base64url');
    const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
    const otherS = Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex');
    const twin = `${valid.slice(0, dot)}.${Buffer.concat([sig.subarray(0, 32), otherS]).toString('base64url')}`;
    assert.equal(await call(valid), 200);
    assert.equal(await call(valid), 429);
    assert.equal(await call(twin), 429, 'the twin spends the same bucket');
  });
});

describe('gateway: rate_limit.key ip', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        trust_proxy: ['127.0.0.1/32'],
        routes: [{ id: 'open', upstream: { url: upstream.url }, auth: 'none', rate_limit: { key: 'ip', rate: 0.01, burst: 1 } }],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });
  const from = (address: string) => fetch(`${gw.url}/x`, { headers: { 'x-forwarded-for': address } }).then((r) => r.status);

  it('IPv6 rotation: a client sending each request from another address of its /64 shares one bucket', async () => {
    assert.equal(await from('2001:db8:1:2::1'), 200);
    assert.equal(await from('2001:db8:1:2::2'), 429);
    assert.equal(await from('2001:db8:1:2:ffff:ffff:ffff:ffff'), 429);
    assert.equal(await from('2001:0db8:0001:0002:0:0:0:3'), 429, 'another spelling of the same /64');
    assert.equal(await from('2001:db8:1:3::1'), 200, 'the next /64 is another client');
  });

  it('IPv4 addresses, also as an IPv4-mapped IPv6 address, keep a bucket each', async () => {
    assert.equal(await from('192.0.2.7'), 200);
    assert.equal(await from('192.0.2.7'), 429);
    assert.equal(await from('::ffff:192.0.2.7'), 429);
    assert.equal(await from('192.0.2.8'), 200);
  });
});

describe('gateway: the slowest rate allowed', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [{ id: 'open', upstream: { url: upstream.url }, auth: 'none', rate_limit: { key: 'ip', rate: 0.0000116, burst: 1 } }],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('about one request a day (0.0000116/s): the 429 says Retry-After: 86207, an RFC 9110 delay-seconds', async () => {
    assert.equal((await fetch(`${gw.url}/x`)).status, 200);
    const refused = await fetch(`${gw.url}/x`);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('retry-after'), '86207');
  });
});

describe('gateway: rate limits across a reload', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const config = (rateLimit: { rate: number; burst: number }, extra: Record<string, unknown> = {}) =>
    parse({
      ...baseConfig(),
      gateway: {
        routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}], rate_limit: { key: 'subject', ...rateLimit } }],
        ...extra,
      },
    });
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          { id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}], rate_limit: { key: 'subject', rate: 0.01, burst: 2 } },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });
  const call = (t: string) => fetch(`${gw.url}/x`, { headers: { authorization: `Bearer ${t}` } }).then((r) => r.status);

  it('burst on reload: a caller who spent its bucket gets no fresh burst when an unrelated setting reloads', async () => {
    const t = await token({ sub: 'spender' });
    assert.deepEqual([await call(t), await call(t), await call(t)], [200, 200, 429]);
    // SIGHUP from logrotate, a watched save of another section: the route's limit is unchanged.
    assert.equal(gw.served.reload(config({ rate: 0.01, burst: 2 }, { strip_headers: ['x-other'] })).ok, true);
    assert.equal(await call(t), 429, 'the bucket is as it was');
  });

  it('a changed limit carries the buckets over (clamped to the new burst): lowering or raising it is no fresh burst', async () => {
    const spent = await token({ sub: 'spent' });
    const saver = await token({ sub: 'saver' });
    assert.deepEqual([await call(spent), await call(spent)], [200, 200]);
    assert.equal(gw.served.reload(config({ rate: 0.01, burst: 5 })).ok, true);
    assert.equal(await call(spent), 429, 'a raised burst is a larger bucket, not a refill');
    assert.equal(await call(saver), 200, 'a new caller gets the new burst');
    assert.equal(gw.served.reload(config({ rate: 0.01, burst: 2 })).ok, true);
    assert.equal(await call(spent), 429);
    assert.deepEqual([await call(saver), await call(saver), await call(saver)], [200, 200, 429], 'four tokens left, clamped to two');
  });
});
