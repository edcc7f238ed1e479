/**
 * Operations endpoints: liveness, readiness (remote JWKS loaded, injected checks, shutdown) and
 * Prometheus metrics.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { readiness } from '../../src/gateway/ops.ts';
import { serveGateway } from '../../src/gateway/serve.ts';
import {
  baseConfig,
  capturedLog,
  ISSUER,
  parse,
  silent,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

describe('gateway: operations endpoints', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let storeOk = true;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ path: '/ok', scopes: ['api:read'] }] }] },
      },
      { readiness: [{ name: 'store', check: () => ({ ok: storeOk, detail: storeOk ? 'reachable' : 'unreachable' }) }] },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('/healthz answers', async () => {
    const res = await fetch(`${gw.url}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
  });

  it('/readyz reflects its checks', async () => {
    const ok = await fetch(`${gw.url}/readyz`);
    assert.equal(ok.status, 200);
    storeOk = false;
    const no = await fetch(`${gw.url}/readyz`);
    assert.equal(no.status, 503);
    const body = (await no.json()) as { status: string; checks: { name: string }[] };
    assert.equal(body.status, 'not_ready');
    assert.deepEqual(
      body.checks.find((c: { name: string }) => c.name === 'store'),
      { name: 'store', ok: false, detail: 'unreachable' },
    );
    storeOk = true;
  });

  it('/metrics exposes requests, latency, denies, cache ratio and audit depth', async () => {
    const t = await token();
    await fetch(`${gw.url}/ok`, { headers: { authorization: `Bearer ${t}` } });
    await fetch(`${gw.url}/ok`, { headers: { authorization: `Bearer ${t}` } });
    await fetch(`${gw.url}/nope`, { headers: { authorization: `Bearer ${t}` } });
    const res = await fetch(`${gw.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /tessera_gateway_requests_total\{route="api",decision="allow",status="200"\} 2/);
    assert.match(text, /tessera_gateway_requests_total\{route="api",decision="deny",status="403"\} 1/);
    assert.match(text, /tessera_gateway_request_duration_seconds_bucket\{le="0\.5",route="api"\} 3/);
    assert.match(text, /tessera_gateway_denies_total\{reason="policy_no_match"\} 1/);
    // The verifier admits a token to its cache on the second presentation: the third is the hit.
    assert.match(text, /tessera_verifier_cache_hits_total 1/);
    assert.match(text, /tessera_verifier_cache_hit_ratio 0\.33/);
    assert.match(text, /tessera_audit_queue_depth \d+/);
    assert.ok(!text.includes(t));
  });

  it('answers 405 with Allow: GET, HEAD to other methods on /healthz, /readyz and /metrics (POST, PUT, OPTIONS were answered 200, the metrics with them), and HEAD as GET', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
        const res = await fetch(`${gw.url}${path}`, { method });
        assert.equal(res.status, 405, `${method} ${path}`);
        assert.equal(res.headers.get('allow'), 'GET, HEAD');
        assert.equal(res.headers.get('cache-control'), 'no-store');
        const body = await res.text();
        assert.doesNotMatch(body, /tessera_/);
        assert.deepEqual(JSON.parse(body), { error: 'method_not_allowed', error_description: 'This endpoint accepts GET and HEAD only.' });
      }
      const head = await fetch(`${gw.url}${path}`, { method: 'HEAD' });
      assert.equal(head.status, 200, `HEAD ${path}`);
      assert.equal(await head.text(), '');
    }
  });
});

describe('gateway: /metrics after a reload removes routes', () => {
  it('drops every series labelled with a removed route (requests, latency, upstream errors) and keeps the counts of the routes kept', async () => {
    const upstream = await startUpstream();
    const route = (id: string, url: string) => ({
      id,
      match: { path_prefix: `/${id}` },
      upstream: { url },
      auth: 'jwt' as const,
      rules: [{}],
    });
    const kept = route('kept', upstream.url);
    const config = (routes: ReturnType<typeof route>[]) => ({ ...baseConfig(), gateway: { routes } });
    // `dead` forwards to a closed port: its upstream error is counted under its route.
    const gw = await startGateway(config([kept, route('gone', upstream.url), route('dead', 'http://127.0.0.1:9')]));
    try {
      const t = await token();
      const get = async (path: string) => (await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${t}` } })).status;
      assert.equal(await get('/kept/a'), 200);
      assert.equal(await get('/kept/b'), 200);
      assert.equal(await get('/gone/a'), 200);
      assert.equal(await get('/dead/a'), 502);
      const scrape = async () => (await fetch(`${gw.url}/metrics`)).text();
      const series = (text: string, route: string) => text.split('\n').filter((l) => l.includes(`route="${route}"`));
      const before = await scrape();
      assert.ok(series(before, 'gone').length > 0 && series(before, 'dead').length > 0, 'the removed routes had series');
      assert.match(before, /tessera_gateway_upstream_errors_total\{route="dead",kind="connect"\} 1/);
      const keptBefore = series(before, 'kept');
      assert.ok(keptBefore.includes('tessera_gateway_requests_total{route="kept",decision="allow",status="200"} 2'));

      const r = gw.served.gateway.reload(parse(config([kept])));
      assert.equal(r.ok, true);
      const after = await scrape();
      assert.deepEqual(series(after, 'gone'), [], 'series of the removed route gone');
      assert.deepEqual(series(after, 'dead'), [], 'series of the removed route dead');
      assert.deepEqual(series(after, 'kept'), keptBefore, 'series of the kept route unchanged');
      // The kept route goes on counting from where it was.
      assert.equal(await get('/kept/c'), 200);
      assert.match(await scrape(), /tessera_gateway_requests_total\{route="kept",decision="allow",status="200"\} 3/);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: /metrics behind a trusted proxy', () => {
  it('checks the client the proxy names against metrics_allowed_peers, not the proxy itself', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        trust_proxy: ['127.0.0.1/32', '::1'],
        operations: { metrics_allowed_peers: ['127.0.0.0/8', '::1', '10.0.0.0/8'] },
        routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ path: '/ok', scopes: ['api:read'] }] }],
      },
    });
    try {
      const via = (client: string) => fetch(`${gw.url}/metrics`, { headers: { 'x-forwarded-for': client } });
      assert.equal((await via('203.0.113.9')).status, 404, 'an outside client through the proxy');
      assert.equal((await via('192.168.1.5')).status, 404, 'a private address not listed');
      assert.equal((await via('10.1.2.3')).status, 200, 'an allowed client through the proxy');
      assert.equal((await fetch(`${gw.url}/metrics`)).status, 200, 'the proxy host itself');
      // A client the proxy names in a form that is no address (a port appended, as some load
      // balancers write it; "unknown") is no one known: it was taken for the proxy, and let in.
      for (const named of ['203.0.113.9:4711', 'unknown', '[2001:db8::1]:443', '203.0.113.9, unknown']) {
        assert.equal((await via(named)).status, 404, named);
      }
      // Another method from outside is not told the path exists.
      const post = await fetch(`${gw.url}/metrics`, { method: 'POST', headers: { 'x-forwarded-for': '203.0.113.9' } });
      assert.equal(post.status, 404, 'POST from an outside client');
      assert.equal(post.headers.get('allow'), null);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: /metrics default metrics_allowed_peers', () => {
  it('attack: a public client whose source address is rewritten to a private one (kube-proxy SNAT under externalTrafficPolicy: Cluster, a Docker bridge, a TCP load balancer; no X-Forwarded-For) read /metrics, since the default list held every private range; the default is loopback only', async () => {
    const upstream = await startUpstream();
    // The proxy on loopback stands for the rewriting hop: the address it names is what the gateway
    // would see as the socket's.
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        trust_proxy: ['127.0.0.1/32'],
        routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ path: '/ok', scopes: ['api:read'] }] }],
      },
    });
    try {
      const via = (client: string) => fetch(`${gw.url}/metrics`, { headers: { 'x-forwarded-for': client } });
      for (const client of ['10.1.2.3', '172.16.0.1', '192.168.1.5', 'fc00::1', 'fd12:3456::1', '::ffff:10.1.2.3', '::ffff:a01:203']) {
        const res = await via(client);
        assert.equal(res.status, 404, client);
        assert.doesNotMatch(await res.text(), /tessera_/);
      }
      for (const client of ['127.0.0.1', '127.0.0.5', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1']) {
        assert.equal((await via(client)).status, 200, client);
      }
      assert.equal((await fetch(`${gw.url}/metrics`)).status, 200, 'a scrape on loopback');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });

  it('admits a loopback scrape arriving on a dual-stack listener as ::ffff:127.0.0.1', async () => {
    const served = await serveGateway(
      {
        config: parse({
          ...baseConfig(),
          gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] },
        }),
        host: '::',
        port: 0,
      },
      { logger: silent },
    );
    try {
      const port = new URL(served.url).port;
      assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 200);
    } finally {
      await served.close({ drainTimeoutMs: 500 });
    }
  });
});

describe('gateway: /metrics behind a proxy not in trust_proxy', () => {
  it('attack: a public client relayed by a proxy on a private address (not listed in trust_proxy) is refused 404, not let in on the proxy’s address; a direct scrape still passes', async () => {
    const upstream = await startUpstream();
    // The default metrics_allowed_peers (loopback) and no trust_proxy: an ingress or sidecar on
    // 127.0.0.1 relays anyone's GET /metrics with the proxy's own address.
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ path: '/ok', scopes: ['api:read'] }] }] },
    });
    try {
      const relayed: Record<string, string>[] = [
        { 'x-forwarded-for': '203.0.113.9' },
        { forwarded: 'for=203.0.113.9;proto=https' },
        { 'x-real-ip': '203.0.113.9' },
      ];
      for (const headers of relayed) {
        const res = await fetch(`${gw.url}/metrics`, { headers });
        assert.equal(res.status, 404, JSON.stringify(headers));
        assert.doesNotMatch(await res.text(), /tessera_/);
      }
      assert.equal((await fetch(`${gw.url}/metrics`)).status, 200, 'a scrape from an allowed address, relayed by no one');
      // /healthz and /readyz answer anyone, as before.
      assert.equal((await fetch(`${gw.url}/healthz`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status, 200);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: /readyz to a caller outside metrics_allowed_peers', () => {
  it('attack: an unauthenticated outside caller read the checks on /readyz (remote JWKS URLs with internal hostnames, the audit queue depth, the store’s state); it gets the status alone, 503 when not ready, and HEAD works', async () => {
    const gw = await startGateway(
      {
        ...baseConfig(),
        issuers: [
          {
            issuer: ISSUER,
            audiences: ['https://api.test'],
            algorithms: ['ES256'],
            jwks_uri: 'https://keycloak.internal.test:9/realms/corp/jwks.json',
            jwks_cache: { timeout: '200ms' },
          },
        ],
        gateway: {
          trust_proxy: ['127.0.0.1/32'],
          routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }],
        },
      },
      { readiness: [{ name: 'store', check: () => ({ ok: false, detail: 'postgres://db.internal.test:5432 unreachable' }) }] },
    );
    try {
      await new Promise((r) => setTimeout(r, 300));
      for (const client of ['203.0.113.9', '10.1.2.3']) {
        const res = await fetch(`${gw.url}/readyz`, { headers: { 'x-forwarded-for': client } });
        assert.equal(res.status, 503, client);
        assert.equal(res.headers.get('cache-control'), 'no-store');
        const text = await res.text();
        assert.deepEqual(JSON.parse(text), { status: 'not_ready' }, client);
        assert.doesNotMatch(text, /internal|queued|jwks/);
        const head = await fetch(`${gw.url}/readyz`, { method: 'HEAD', headers: { 'x-forwarded-for': client } });
        assert.equal(head.status, 503);
        assert.equal(await head.text(), '');
      }
      // The operator, on loopback, sees what fails.
      const own = (await (await fetch(`${gw.url}/readyz`)).json()) as { status: string; checks: { name: string }[] };
      assert.equal(own.status, 'not_ready');
      assert.deepEqual(
        own.checks.map((c) => c.name),
        ['jwks https://keycloak.internal.test:9/realms/corp/jwks.json', 'audit queue', 'store'],
      );
      // /healthz says no more than it did, to anyone.
      const health = await fetch(`${gw.url}/healthz`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      assert.deepEqual(await health.json(), { status: 'ok' });
    } finally {
      await gw.close();
    }
  });

  it('/readyz with two hung checks (a partitioned store and token service) answers 503 within one check timeout, not one per check; the operator sees both named', {
    timeout: 10_000,
  }, async () => {
    const hung = (name: string) => ({ name, check: () => new Promise<{ ok: boolean }>(() => {}) });
    const gw = await startGateway(
      { ...baseConfig(), gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] } },
      { readiness: [hung('store'), hung('revocations')] },
    );
    try {
      const started = performance.now();
      const res = await fetch(`${gw.url}/readyz`);
      const took = performance.now() - started;
      assert.equal(res.status, 503);
      assert.ok(took < 3000, `answered after ${Math.round(took)} ms; one check timeout is 2 s`);
      const body = (await res.json()) as { checks: { name: string; ok: boolean; detail?: string }[] };
      assert.deepEqual(
        body.checks.filter((c) => !c.ok),
        [
          { name: 'store', ok: false, detail: 'no answer within 2000ms' },
          { name: 'revocations', ok: false, detail: 'no answer within 2000ms' },
        ],
      );
    } finally {
      await gw.close();
    }
  });

  it('attack: a caller relayed by a proxy not in trust_proxy gets the status alone (the proxy’s loopback address is not the caller’s)', async () => {
    const gw = await startGateway(
      { ...baseConfig(), gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] } },
      { readiness: [{ name: 'store', check: () => ({ ok: true, detail: 'db.internal.test' }) }] },
    );
    try {
      const res = await fetch(`${gw.url}/readyz`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: 'ready' });
    } finally {
      await gw.close();
    }
  });
});

describe('gateway: operations paths and a route on /', () => {
  it('the exact operations paths are the gateway’s, before any route (a refused /metrics is not handed to the route either); every other spelling is an ordinary request the routes decide', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'all', match: { path_prefix: '/' }, upstream: { url: upstream.url }, auth: 'none' }] },
    });
    try {
      for (const path of ['/healthz', '/readyz', '/metrics', '/metrics?name[]=x']) {
        const res = await fetch(`${gw.url}${path}`);
        assert.equal(res.status, 200, path);
        await res.arrayBuffer();
      }
      const refused = await fetch(`${gw.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      assert.equal(refused.status, 404);
      assert.deepEqual(await refused.json(), { error: 'not_found', error_description: 'No route matches this request.' });
      assert.deepEqual(upstream.seen, [], 'the route got an operations request');
      for (const path of ['/metrics/', '/Metrics', '/%6Detrics', '/healthz/x']) {
        const res = await fetch(`${gw.url}${path}`);
        assert.equal(res.status, 200, path);
        assert.doesNotMatch(await res.text(), /tessera_/, path);
      }
      assert.equal(upstream.seen.length, 4, 'the other spellings went to the route');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: readiness waits for remote keys', () => {
  it('is not ready while a jwks_uri has never been fetched', async () => {
    const gw = await startGateway({
      ...baseConfig(),
      issuers: [
        {
          issuer: ISSUER,
          audiences: ['https://api.test'],
          algorithms: ['ES256'],
          jwks_uri: 'http://127.0.0.1:9/jwks.json',
          jwks_cache: { timeout: '200ms' },
        },
      ],
      gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] },
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const res = await fetch(`${gw.url}/readyz`);
      assert.equal(res.status, 503);
      const body = (await res.json()) as { checks: { detail: string }[] };
      assert.equal(body.checks[0]?.detail, 'not loaded');
    } finally {
      await gw.close();
    }
  });
});

describe('gateway: a credential in a jwks_uri query', () => {
  it('is shown neither on /readyz (public) nor in the log when the fetch fails: query values are dropped, keys kept', async () => {
    const SECRET = 'jwks-api-key-secret-value-0123456789';
    let log = '';
    const sink = new Writable({
      write(chunk, _encoding, done) {
        log += chunk.toString();
        done();
      },
    });
    const logger = pino({ level: 'trace' }, sink);
    const gw = await startGateway(
      {
        ...baseConfig(),
        issuers: [
          {
            issuer: ISSUER,
            audiences: ['https://api.test'],
            algorithms: ['ES256'],
            jwks_uri: `http://127.0.0.1:9/jwks.json?tenant=a&api_key=${SECRET}`,
            jwks_cache: { timeout: '200ms' },
          },
        ],
        gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] },
      },
      { logger },
    );
    try {
      await new Promise((r) => setTimeout(r, 300));
      const res = await fetch(`${gw.url}/readyz`);
      assert.equal(res.status, 503);
      const text = await res.text();
      const body = JSON.parse(text) as { checks: { name: string }[] };
      assert.equal(body.checks[0]?.name, 'jwks http://127.0.0.1:9/jwks.json?tenant=&api_key=');
      assert.ok(!text.includes(SECRET), '/readyz shows the key');
      assert.match(log, /JWKS fetch from http:\/\/127\.0\.0\.1:9\/jwks\.json\?tenant=&api_key= failed/);
      assert.ok(!log.includes(SECRET), 'the log shows the key');
    } finally {
      await gw.close();
    }
  });
});

describe('gateway: readiness and a JWKS that stays stale', () => {
  const remote = (staleForMs: number) => ({
    jwksStatus: () => [
      { url: 'https://idp.test/jwks', loaded: true, fresh: staleForMs === 0, staleForMs, keys: 2, fetches: 9, lastError: 'HTTP 503' },
    ],
  });
  const audit = { depth: 0, max: 10 };

  it('stays ready through a short IdP outage (the last good keys are used)', async () => {
    const r = await readiness([remote(5 * 60_000) as never], audit, [], false, 3_600_000);
    assert.equal(r.ready, true);
    assert.match(r.checks[0]?.detail ?? '', /stale for 300s/);
  });

  it('reports not ready once the key set has been stale longer than operations.jwks_max_stale', async () => {
    const r = await readiness([remote(2 * 3_600_000) as never], audit, [], false, 3_600_000);
    assert.equal(r.ready, false);
    assert.match(r.checks[0]?.detail ?? '', /over operations\.jwks_max_stale/);
  });
});

describe('gateway: readiness and a store that hangs', () => {
  it('runs the checks at once under one deadline: two hung checks answer 503 within one timeout, not two, naming both', {
    timeout: 5000,
  }, async () => {
    const hung = (name: string) => ({ name, check: () => new Promise<{ ok: boolean }>(() => {}) });
    const slowOk = { name: 'slow', check: () => new Promise<{ ok: boolean }>((r) => setTimeout(() => r({ ok: true }), 150)) };
    const started = performance.now();
    const r = await readiness([], { depth: 0, max: 10 }, [hung('store'), slowOk, hung('tokens')], false, Number.POSITIVE_INFINITY, 300);
    const took = performance.now() - started;
    assert.ok(took < 500, `answered after ${Math.round(took)} ms; one timeout is 300 ms`);
    assert.equal(r.ready, false);
    assert.deepEqual(r.checks, [
      { name: 'audit queue', ok: true, detail: '0 queued' },
      { name: 'store', ok: false, detail: 'no answer within 300ms' },
      { name: 'slow', ok: true },
      { name: 'tokens', ok: false, detail: 'no answer within 300ms' },
    ]);
  });

  it('reports not ready when a check does not answer in time, and probes share the pending check', { timeout: 5000 }, async () => {
    let calls = 0;
    const hanging = {
      name: 'store',
      check: () => {
        calls++;
        return new Promise<{ ok: boolean }>(() => {});
      },
    };
    const probes = await Promise.all(
      [1, 2, 3].map(() => readiness([], { depth: 0, max: 10 }, [hanging], false, Number.POSITIVE_INFINITY, 50)),
    );
    for (const r of probes) {
      assert.equal(r.ready, false);
      assert.deepEqual(r.checks.at(-1), { name: 'store', ok: false, detail: 'no answer within 50ms' });
    }
    assert.equal(calls, 1, 'one query to the hanging store, not one per probe');
  });
});

describe('gateway: a JWKS endpoint that stops answering', () => {
  /** A JWKS endpoint that sends its headers and part of a key set, then nothing (`stallBody`), or nothing at all. */
  async function stalling(stallBody: boolean): Promise<{ url: string; close: () => Promise<void> }> {
    const sockets = new Set<import('node:net').Socket>();
    const server = createServer((_req, res) => {
      if (!stallBody) return;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys":[');
    });
    server.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}/jwks`,
      close: () =>
        new Promise((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    };
  }

  /** The warning lines a gateway logs for `jwks`, its timeout 200 ms, after the start-up fetch timed out. */
  async function warnings(jwks: string): Promise<Record<string, unknown>[]> {
    const { lines, logger } = capturedLog();
    const gw = await startGateway(
      {
        ...baseConfig(),
        issuers: [
          { issuer: ISSUER, audiences: ['https://api.test'], algorithms: ['ES256'], jwks_uri: jwks, jwks_cache: { timeout: '200ms' } },
        ],
        gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] },
      },
      { logger },
    );
    try {
      for (let i = 0; i < 100 && !lines.some((l) => l.event === 'verifier_warning'); i++) await new Promise((r) => setTimeout(r, 10));
      return lines.filter((l) => l.event === 'verifier_warning');
    } finally {
      await gw.close();
    }
  }

  it('a body that stops mid-way is logged as a timeout, in the words and shape of a header timeout (not the runtime abort message)', async () => {
    const body = await stalling(true);
    const headers = await stalling(false);
    try {
      const [bodyLine] = await warnings(body.url);
      const [headerLine] = await warnings(headers.url);
      assert.equal(headerLine?.msg, `JWKS fetch from ${headers.url} failed: no answer in time; no key set to use`);
      assert.equal(bodyLine?.msg, `JWKS fetch from ${body.url} failed: no answer in time; no key set to use`);
      assert.equal(bodyLine?.level, headerLine?.level);
      assert.deepEqual(Object.keys(bodyLine ?? {}).sort(), Object.keys(headerLine ?? {}).sort());
    } finally {
      await body.close();
      await headers.close();
    }
  });
});
