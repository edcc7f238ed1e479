/**
 * gateway.auth_failure_limit: failed authentications spend a bucket per client address (as
 * `rate_limit.key: ip` keys it), checked before authentication; an empty bucket is 429
 * `auth_failure_rate_limited` with Retry-After, and the verifier (the introspection endpoint) is
 * never called for it. A real introspection endpoint on loopback counts the calls it gets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { listen, readBody, type TestServer } from '../helpers/verify.ts';
import { baseConfig, parse, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const GOOD = 'good-opaque-token-0123456789abcdef';
const FA_SECRET = 'forward-auth-secret-0123456789';

interface Endpoint extends TestServer {
  hits: number;
}

/** An RFC 7662 endpoint: GOOD is active, anything else inactive. */
async function introspectionEndpoint(): Promise<Endpoint> {
  const state = { hits: 0 };
  const server = await listen(async (req, res) => {
    state.hits++;
    const token = new URLSearchParams(await readBody(req)).get('token');
    const answer = token === GOOD ? { active: true, sub: 'alice', scope: 'api:read', client_id: 'app' } : { active: false };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
  });
  return Object.assign(state, server) as Endpoint;
}

type Limit = { rate: number; burst?: number; max_keys?: number };

const limited = (upstream: string, endpoint: string, limit: Limit | undefined) => ({
  ...baseConfig(),
  introspection: { endpoint: `${endpoint}/introspect`, client_id: 'gw', client_secret: 'secret' },
  gateway: {
    trust_proxy: ['127.0.0.1/32'],
    ...(limit ? { auth_failure_limit: limit } : {}),
    forward_auth: { enabled: true, flavor: 'nginx' as const, shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
    routes: [
      { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream }, auth: 'none' as const },
      { id: 'jwt', match: { path_prefix: '/jwt' }, upstream: { url: upstream }, auth: 'jwt' as const, rules: [{}] },
      { id: 'api', match: { path_prefix: '/' }, upstream: { url: upstream }, auth: 'introspection' as const, rules: [{}] },
    ],
  },
});

/** A request from client `from` (behind the trusted proxy at 127.0.0.1) with `token`, or none. */
const send = (gw: TestGateway, path: string, from: string, token?: string) =>
  fetch(`${gw.url}${path}`, { headers: { 'x-forwarded-for': from, ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) } });

const status = async (r: Promise<Response>) => {
  const res = await r;
  await res.arrayBuffer();
  return res.status;
};

describe('gateway: auth_failure_limit', () => {
  let upstream: Upstream;
  let endpoint: Endpoint;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    endpoint = await introspectionEndpoint();
    // One failure a day after a burst of 3: a test's refusals never refill.
    gw = await startGateway(limited(upstream.url, endpoint.origin, { rate: 0.0000116, burst: 3 }));
  });
  after(async () => {
    await gw?.close();
    await endpoint?.close();
    await upstream?.close();
  });

  it('attack: a flood of junk opaque tokens from one address: after `burst` failures the rest are 429 with Retry-After and never reach the introspection endpoint', async () => {
    const before = endpoint.hits;
    for (let i = 0; i < 3; i++) assert.equal(await status(send(gw, '/x', '198.51.100.1', `junk-${i}-${'x'.repeat(20)}`)), 401);
    assert.equal(endpoint.hits - before, 3);
    for (let i = 3; i < 20; i++) {
      const res = await send(gw, '/x', '198.51.100.1', `junk-${i}-${'x'.repeat(20)}`);
      assert.equal(res.status, 429);
      assert.match(res.headers.get('retry-after') ?? '', /^[1-9]\d*$/, 'whole seconds');
      assert.equal(((await res.json()) as { error: string }).error, 'rate_limited');
    }
    assert.equal(endpoint.hits - before, 3, 'no introspection call once the bucket is empty');
    // The address is refused whatever it presents on a route that needs a token, a valid token included.
    assert.equal(await status(send(gw, '/x', '198.51.100.1', GOOD)), 429);
    assert.equal(await status(send(gw, '/jwt/x', '198.51.100.1', 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln')), 429);
    // Not on a public route, and not another address.
    assert.equal(await status(send(gw, '/public/x', '198.51.100.1')), 200);
    assert.equal(await status(send(gw, '/x', '198.51.100.2', GOOD)), 200);
    assert.equal(upstream.seen.filter((s) => s.url === '/x').length, 1, 'only the other address reached the upstream');

    const events = await requestEvents(gw);
    const refused = events.filter((e) => e.reason === 'auth_failure_rate_limited');
    assert.equal(refused.length, 19);
    assert.equal(refused[0]?.remote_addr, '198.51.100.1');
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /^tessera_gateway_denies_total\{reason="auth_failure_rate_limited"\} 19$/m);
  });

  it('a missing token and a valid one spend nothing; a valid one after failures gives its reservation back', async () => {
    const from = '198.51.100.10';
    for (let i = 0; i < 10; i++) assert.equal(await status(send(gw, '/x', from)), 401, 'no token: a bare challenge');
    for (let i = 0; i < 10; i++) assert.equal(await status(send(gw, '/x', from, GOOD)), 200);
    // Two failures of three, then valid requests: still one failure left.
    assert.equal(await status(send(gw, '/x', from, 'junk-a-0123456789abcdef')), 401);
    assert.equal(await status(send(gw, '/x', from, 'junk-b-0123456789abcdef')), 401);
    for (let i = 0; i < 5; i++) assert.equal(await status(send(gw, '/x', from, GOOD)), 200);
    assert.equal(await status(send(gw, '/x', from, 'junk-c-0123456789abcdef')), 401);
    assert.equal(await status(send(gw, '/x', from, 'junk-d-0123456789abcdef')), 429);
  });

  it('attack: an IPv6 client rotating addresses within its /64, or writing its IPv4 address as ::ffff:…, spends one bucket', async () => {
    for (let i = 1; i <= 3; i++) assert.equal(await status(send(gw, '/x', `2001:db8:1:2::${i}`, `junk6-${i}-0123456789abcdef`)), 401);
    assert.equal(await status(send(gw, '/x', '2001:db8:1:2:ffff::9', 'junk6-4-0123456789abcdef')), 429);
    assert.equal(await status(send(gw, '/x', '2001:db8:1:3::1', GOOD)), 200, 'another /64 is another client');

    for (let i = 1; i <= 3; i++) assert.equal(await status(send(gw, '/x', '203.0.113.9', `junk4-${i}-0123456789abcdef`)), 401);
    assert.equal(await status(send(gw, '/x', '::ffff:203.0.113.9', 'junk4-4-0123456789abcdef')), 429);
  });

  it('attack: concurrent junk from an address that failed before reaches the endpoint at most the failures left in its bucket', async () => {
    const from = '198.51.100.20';
    assert.equal(await status(send(gw, '/x', from, 'junk-first-0123456789abcdef')), 401);
    const before = endpoint.hits;
    const statuses = await Promise.all(Array.from({ length: 30 }, (_, i) => status(send(gw, '/x', from, `junk-c${i}-0123456789abcdef`))));
    assert.equal(endpoint.hits - before, 2);
    assert.equal(statuses.filter((s) => s === 401).length, 2);
    assert.equal(statuses.filter((s) => s === 429).length, 28);
  });

  it('forward-auth checks spend the bucket of the address the proxy names (X-Real-IP)', async () => {
    const check = (token: string) =>
      fetch(`${gw.url}/_tessera/auth`, {
        headers: {
          'x-tessera-forward-auth': FA_SECRET,
          'x-original-uri': '/x',
          'x-original-method': 'GET',
          'x-original-host': 'api.example.com',
          'x-real-ip': '192.0.2.77',
          authorization: `Bearer ${token}`,
        },
      });
    const before = endpoint.hits;
    for (let i = 0; i < 3; i++) assert.equal((await check(`junk-fa-${i}-0123456789abcdef`)).status, 401);
    const res = await check('junk-fa-3-0123456789abcdef');
    // nginx auth_request reads any other status as an error: folded to 403, the real one in X-Tessera-Status.
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('x-tessera-status'), '429');
    assert.equal(endpoint.hits - before, 3);
  });
});

describe('gateway: auth_failure_limit configuration', () => {
  it('is off unless configured: junk tokens are never refused 429', async () => {
    const upstream = await startUpstream();
    const endpoint = await introspectionEndpoint();
    let gw: TestGateway | undefined;
    try {
      gw = await startGateway(limited(upstream.url, endpoint.origin, undefined));
      for (let i = 0; i < 15; i++) assert.equal(await status(send(gw, '/x', '198.51.100.1', `junk-${i}-0123456789abcdef`)), 401);
    } finally {
      await gw?.close();
      await endpoint.close();
      await upstream.close();
    }
  });

  it('refuses a rate below one a day and a burst below 1, with the path', () => {
    for (const bad of [{ rate: 0 }, { rate: 1, burst: 0 }, { rate: 1, max_keys: 0 }, { rate: 1, key: 'ip' }]) {
      assert.throws(
        () => parse(limited('http://127.0.0.1:9', 'http://127.0.0.1:9', bad as Limit)),
        (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.path.startsWith('gateway.auth_failure_limit')),
        JSON.stringify(bad),
      );
    }
  });

  it('burst on reload: a reload keeps the buckets (a SIGHUP gives no flooding address a fresh burst); a changed limit carries them over', async () => {
    const upstream = await startUpstream();
    const endpoint = await introspectionEndpoint();
    const config = (limit: Limit, strip: string[] = []) => {
      const c = limited(upstream.url, endpoint.origin, limit);
      return parse({ ...c, gateway: { ...c.gateway, strip_headers: strip } });
    };
    let gw: TestGateway | undefined;
    try {
      gw = await startGateway(limited(upstream.url, endpoint.origin, { rate: 0.0000116, burst: 2 }));
      const g = gw;
      const junk = (i: number) => status(send(g, '/x', '198.51.100.1', `junk-r${i}-0123456789abcdef`));
      assert.deepEqual([await junk(0), await junk(1), await junk(2)], [401, 401, 429]);
      assert.equal(g.served.reload(config({ rate: 0.0000116, burst: 2 }, ['x-other'])).ok, true);
      assert.equal(await junk(3), 429, 'the bucket is as it was');
      assert.equal(g.served.reload(config({ rate: 0.0000116, burst: 5 })).ok, true);
      assert.equal(await junk(4), 429, 'a raised burst is a larger bucket, not a refill');
    } finally {
      await gw?.close();
      await endpoint.close();
      await upstream.close();
    }
  });
});
