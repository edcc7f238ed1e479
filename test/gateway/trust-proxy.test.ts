/**
 * gateway.trust_proxy: X-Forwarded-* are believed only from the proxies listed, the client address
 * is found by walking X-Forwarded-For from the right past trusted hops, routing by host uses a
 * forwarded host only from a trusted proxy, and a malformed Host is refused.
 */
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { createGateway } from '../../src/gateway/gateway.ts';
import { rawHttp } from '../helpers/net.ts';
import { baseConfig, parse, requestEvents, silent, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

function send(base: string, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    request(`${base}${path}`, { headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on('error', reject)
      .end();
  });
}

const gatewayConfig = (upstream: string, trust: string[]) => ({
  ...baseConfig(),
  gateway: {
    trust_proxy: trust,
    routes: [
      { id: 'internal', match: { host: 'internal.example.com' }, upstream: { url: upstream }, auth: 'none' as const },
      { id: 'public', match: { path_prefix: '/' }, upstream: { url: upstream }, auth: 'none' as const },
    ],
  },
});

describe('gateway: trust_proxy', () => {
  let upstream: Upstream;
  let trusted: TestGateway;
  let untrusted: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    trusted = await startGateway(gatewayConfig(upstream.url, ['127.0.0.1/32', '10.0.0.0/8']));
    untrusted = await startGateway(gatewayConfig(upstream.url, ['10.0.0.0/8']));
  });
  after(async () => {
    await trusted.close();
    await untrusted.close();
    await upstream.close();
  });

  const lastEvent = async (gw: TestGateway) => (await requestEvents(gw)).at(-1);

  it('XFF spoofing: behind trusted proxies the client is the rightmost untrusted hop, not the leftmost claim', async () => {
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-for': '6.6.6.6, 203.0.113.7, 10.1.2.3' }), 200);
    assert.equal((await lastEvent(trusted))?.remote_addr, '203.0.113.7');
    // Every hop trusted: the leftmost is the client.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-for': '10.9.9.9, 10.1.2.3' }), 200);
    assert.equal((await lastEvent(trusted))?.remote_addr, '10.9.9.9');
    // A malformed hop stops the walk at the last trusted one.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-for': '6.6.6.6, not-an-ip, 10.1.2.3' }), 200);
    assert.equal((await lastEvent(trusted))?.remote_addr, '10.1.2.3');
  });

  it('attack: audit amplification: a hop with an unbounded IPv6 zone (fe80::1%<3 KB>) from a trusted proxy is recorded without its zone, never verbatim', async () => {
    const zone = 'a'.repeat(3000);
    // The untrusted client hop: its zone is the proxy's interface, not the caller's.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-for': `6.6.6.6, fe80::1%${zone}, 10.1.2.3` }), 200);
    let e = await lastEvent(trusted);
    assert.equal(e?.remote_addr, 'fe80::1');
    assert.ok(JSON.stringify(e).length < 1000);
    // A trimmed IPv4-mapped hop is shown as IPv4.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-for': ` ::ffff:203.0.113.9 , 10.1.2.3` }), 200);
    e = await lastEvent(trusted);
    assert.equal(e?.remote_addr, '203.0.113.9');
    // A hop whose zone holds a space is no address: the walk stops at the last trusted hop.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-for': `fe80::1%${zone} x, 10.1.2.3` }), 200);
    e = await lastEvent(trusted);
    assert.equal(e?.remote_addr, '10.1.2.3');
    assert.ok(JSON.stringify(e).length < 1000);
  });

  it('XFF spoofing: from a peer not in trust_proxy, X-Forwarded-For is ignored', async () => {
    assert.equal(await send(untrusted.url, '/x', { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https' }), 200);
    assert.equal((await lastEvent(untrusted))?.remote_addr, '127.0.0.1');
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-proto'], 'http');
  });

  it('host spoofing: X-Forwarded-Host selects a host-routed route only from a trusted proxy', async () => {
    await send(untrusted.url, '/x', { 'x-forwarded-host': 'internal.example.com' });
    assert.equal((await lastEvent(untrusted))?.route, 'public');
    assert.equal(upstream.seen.at(-1)!.headers['x-forwarded-host'], new URL(untrusted.url).host);
    await send(trusted.url, '/x', { 'x-forwarded-host': 'internal.example.com' });
    assert.equal((await lastEvent(trusted))?.route, 'internal');
    assert.equal(upstream.seen.at(-1)!.headers['x-forwarded-host'], 'internal.example.com');
  });

  it('host spoofing through an appending proxy: routing and the upstream’s X-Forwarded-Host and -Proto take the entry the trusted proxy wrote (the rightmost), not the caller’s', async () => {
    // One header, the caller's value first (Apache httpd's mod_proxy appends so), or two lines.
    assert.equal(
      await send(trusted.url, '/x', { 'x-forwarded-host': 'internal.example.com, public.example', 'x-forwarded-proto': 'https, http' }),
      200,
    );
    assert.equal((await lastEvent(trusted))?.route, 'public');
    let h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-forwarded-host'], 'public.example');
    assert.equal(h['x-forwarded-proto'], 'http');
    const res = await rawHttp(
      trusted.url,
      'GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: internal.example.com\r\nX-Forwarded-Host: public.example\r\nConnection: close\r\n\r\n',
    );
    assert.match(res, /^HTTP\/1\.1 200/, res);
    assert.equal((await lastEvent(trusted))?.route, 'public');
    assert.equal(upstream.seen.at(-1)!.headers['x-forwarded-host'], 'public.example');
    // The proxy's own entry is the one checked: the caller's is never read.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-host': 'internal.example.com, a.example.com/evil' }), 400);
    assert.equal((await lastEvent(trusted))?.reason, 'request_host_invalid');
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-host': 'a.example.com/evil, public.example' }), 200);
    h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-forwarded-host'], 'public.example');
    // The proxy writing the only entry routes as before.
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-host': 'public.example, internal.example.com' }), 200);
    assert.equal((await lastEvent(trusted))?.route, 'internal');
  });

  it('host trick: a trailing dot (internal.example.com.) is the same host, not a way past a host-routed route', async () => {
    for (const host of ['internal.example.com.', 'Internal.Example.com.:8080']) {
      const res = await rawHttp(untrusted.url, `GET /x HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.match(res, /^HTTP\/1\.1 200/, res);
      assert.equal((await lastEvent(untrusted))?.route, 'internal', host);
    }
    await send(trusted.url, '/x', { 'x-forwarded-host': 'internal.example.com.' });
    assert.equal((await lastEvent(trusted))?.route, 'internal');
  });

  for (const [name, head] of [
    ['userinfo', 'Host: internal.example.com@evil.test\r\n'],
    ['a list', 'Host: internal.example.com, evil.test\r\n'],
    ['a path', 'Host: evil.test/x\r\n'],
    ['repeated', 'Host: evil.test\r\nHost: internal.example.com\r\n'],
  ] as const) {
    it(`malformed Host (${name}) is 400 request_host_invalid and never forwarded`, async () => {
      const n = upstream.seen.length;
      const res = await rawHttp(untrusted.url, `GET /x HTTP/1.1\r\n${head}Connection: close\r\n\r\n`);
      assert.match(res, /^HTTP\/1\.1 400/, res);
      assert.equal(upstream.seen.length, n);
      assert.equal((await lastEvent(untrusted))?.reason, 'request_host_invalid');
    });
  }

  it('a reload that stops trusting the peer applies to its open keep-alive connection', async () => {
    const gw = await startGateway(gatewayConfig(upstream.url, ['127.0.0.1/32']));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const ports: number[] = [];
    const viaAgent = () =>
      new Promise<number>((resolve, reject) => {
        const req = request(`${gw.url}/x`, { agent, headers: { 'x-forwarded-for': '203.0.113.9' } }, (res) => {
          res.resume();
          res.on('end', () => {
            ports.push(req.socket?.localPort ?? 0);
            resolve(res.statusCode ?? 0);
          });
        });
        req.on('error', reject).end();
      });
    try {
      assert.equal(await viaAgent(), 200);
      assert.equal((await lastEvent(gw))?.remote_addr, '203.0.113.9');
      assert.equal(gw.served.gateway.reload(parse(gatewayConfig(upstream.url, ['10.0.0.0/8']))).ok, true);
      assert.equal(await viaAgent(), 200);
      assert.equal(ports[1], ports[0], 'the same connection');
      assert.equal((await lastEvent(gw))?.remote_addr, '127.0.0.1');
    } finally {
      agent.destroy();
      await gw.close();
    }
  });

  it('malformed X-Forwarded-Host from a trusted proxy is 400', async () => {
    const n = upstream.seen.length;
    assert.equal(await send(trusted.url, '/x', { 'x-forwarded-host': 'a.example.com/evil' }), 400);
    assert.equal((await lastEvent(trusted))?.reason, 'request_host_invalid');
    assert.equal(upstream.seen.length, n);
  });
});

describe('gateway: trust_proxy configuration', () => {
  const issues = (input: Record<string, unknown>) => {
    try {
      createGateway(parse(input as never), { logger: silent });
    } catch (e) {
      if (e instanceof ConfigError) return [...e.issues];
      throw e;
    }
    return [];
  };
  // On /api: a route on every path would add the warning about the operations paths it covers.
  const routes = [{ id: 'r', match: { path_prefix: '/api' }, upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' }];

  it('refuses a boolean, saying what to write', () => {
    const [i] = issues({ ...baseConfig(), gateway: { trust_proxy: true, routes } });
    assert.equal(i?.path, 'gateway.trust_proxy');
    assert.match(i?.message ?? '', /10\.0\.0\.0\/8/);
    const [s] = issues({ ...baseConfig(), server: { trust_proxy: true }, gateway: { routes } });
    assert.equal(s?.path, 'server.trust_proxy');
    assert.match(s?.message ?? '', /gateway\.trust_proxy/);
  });

  it('refuses entries that are not addresses or CIDRs', () => {
    const [i] = issues({ ...baseConfig(), gateway: { trust_proxy: ['10.0.0.0/8', 'proxy.local'], routes } });
    assert.equal(i?.path, 'gateway.trust_proxy[1]');
  });

  const warnings = (gateway: Record<string, unknown>) =>
    createGateway(parse({ ...baseConfig(), gateway: { routes, ...gateway } } as never), { logger: silent }).state.warnings;

  it('spoofed client address: a catch-all in trust_proxy (0.0.0.0/0, ::/0) is accepted with a warning naming its path', () => {
    const found = warnings({ trust_proxy: ['10.0.0.0/8', '0.0.0.0/0', '::/0'] });
    assert.equal(found.length, 2);
    assert.match(found[0] ?? '', /^gateway\.trust_proxy\[1\] "0\.0\.0\.0\/0" is every IPv4 address: .*X-Forwarded-For/);
    assert.match(found[1] ?? '', /^gateway\.trust_proxy\[2\] "::\/0" is every IPv6 address: /);
  });

  it('warns of a catch-all in the other peer lists: forward-auth callers (when enabled) and metrics scrapers', () => {
    const found = warnings({
      forward_auth: { enabled: true, flavor: 'nginx', allowed_peers: ['::/0'] },
      operations: { metrics_allowed_peers: ['0.0.0.0/0'] },
    });
    assert.deepEqual(
      found.map((w) => w.split(' ')[0]),
      ['gateway.forward_auth.allowed_peers[0]', 'gateway.operations.metrics_allowed_peers[0]'],
    );
    assert.deepEqual(warnings({ forward_auth: { allowed_peers: ['0.0.0.0/0'] } }), [], 'forward-auth off: nobody calls it');
    assert.deepEqual(warnings({ trust_proxy: ['10.0.0.0/8', '::1'] }), [], 'no warning for proxies listed by address');
  });

  it('spoofed client address: an IPv6 entry holding every IPv4-mapped address (::ffff:0:0/96, ::/80, ::ffff:0.0.0.0/96) is a catch-all too, in every list', () => {
    const found = warnings({
      trust_proxy: [
        '::ffff:0:0/96',
        '::/80',
        '::ffff:0.0.0.0/96',
        '::ffff:10.0.0.0/104',
        '::/96',
        '::ffff:0:0/97',
        '2001:db8::/32',
        '::ffff:0:0',
      ],
      forward_auth: { enabled: true, flavor: 'nginx', allowed_peers: ['::ffff:0:0/96'] },
      operations: { metrics_allowed_peers: ['0:0:0:0:0:ffff::/96'] },
    });
    assert.deepEqual(
      found.map((w) => w.split(' ')[0]),
      [
        'gateway.trust_proxy[0]',
        'gateway.trust_proxy[1]',
        'gateway.trust_proxy[2]',
        'gateway.forward_auth.allowed_peers[0]',
        'gateway.operations.metrics_allowed_peers[0]',
      ],
    );
    assert.match(
      found[0] ?? '',
      /^gateway\.trust_proxy\[0\] "::ffff:0:0\/96" is every IPv4 address \(as IPv4-mapped IPv6\): .*X-Forwarded-For/,
    );
  });
});
