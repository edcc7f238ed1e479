/**
 * Metric label cardinality: every label value comes from a closed set (route ids from the
 * configuration, decisions, status codes or classes, reason codes, upstream failure kinds), never
 * from what a caller or an upstream chooses.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer } from 'node:net';
import { describe, it } from 'node:test';
import { statusLabel } from '../../src/gateway/metrics.ts';
import { rawHttp, until } from '../helpers/net.ts';
import { AUDIENCE, baseConfig, issuersAt, key, mcpRoute, startGateway, startUpstream, type TestGateway, token } from './helpers.ts';

/** The series of a scrape: every sample line, value dropped. */
function seriesOf(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.slice(0, l.lastIndexOf(' ')))
    .sort();
}

/** The value of `series` in a scrape, 0 when it is not there. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/**
 * Requests `${prefix}1` (route api) and `${prefix}2` (route public), whose bodies the listener
 * refused with `status`, are each one deny `reason` event, counted once in requests_total, never as
 * a parser refusal, and neither as allow status 0 on public: the scrape, for more checks.
 */
async function assertBodiesRefused(gw: TestGateway, prefix: string, status: number, reason: string): Promise<string> {
  const events = gw.audit.events.filter((e) => e.request_id?.startsWith(prefix));
  assert.deepEqual(events.map((e) => [e.request_id, e.route, e.decision, e.reason]).sort(), [
    [`${prefix}1`, 'api', 'deny', reason],
    [`${prefix}2`, 'public', 'deny', reason],
  ]);
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  assert.equal(sample(text, `tessera_gateway_requests_total{route="api",decision="deny",status="${status}"}`), 1, text);
  assert.equal(sample(text, `tessera_gateway_requests_total{route="public",decision="deny",status="${status}"}`), 1);
  assert.equal(sample(text, 'tessera_gateway_requests_total{route="public",decision="allow",status="0"}'), 0);
  assert.equal(sample(text, `tessera_gateway_parser_refusals_total{status="${status}"}`), 0);
  return text;
}

describe('gateway metrics: label cardinality', () => {
  it('attack: an upstream answering whatever status a caller asks for (/status/{code}, 100 to 999) opened one series per code; unregistered codes are counted under their class, and 600-999 are no status the gateway relays (502 upstream_status_invalid)', async () => {
    // A raw upstream: Node's own server refuses to write a status above 999 but not 600-999.
    const server = createServer((sock) => {
      sock.once('data', (d) => {
        const m = /\/s\/(\d+)/.exec(d.toString());
        sock.end(`HTTP/1.1 ${m?.[1] ?? 200} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'api', upstream: { url: `http://127.0.0.1:${port}` }, auth: 'jwt', rules: [{}] }] },
    });
    try {
      const t = await token();
      const statuses = new Set<number>();
      for (let s = 200; s <= 999; s += 7) {
        const res = await fetch(`${gw.url}/s/${s}`, { headers: { authorization: `Bearer ${t}` } });
        await res.arrayBuffer();
        statuses.add(res.status);
      }
      assert.ok(statuses.size > 50, 'the upstream statuses reached the caller');
      assert.deepEqual(
        [...statuses].filter((s) => s > 599),
        [],
        'a status outside 100-599 is answered 502',
      );
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      const labels = [...text.matchAll(/^tessera_gateway_requests_total\{route="api",decision="allow",status="([^"]*)"\}/gm)].map(
        (m) => m[1],
      );
      assert.deepEqual(
        labels.filter((l) => !/^(?:[1-5]\d\d|[2-5]xx|other)$/.test(l as string)),
        [],
      );
      // 200 206 207 226 304 308 … the registered ones hit, plus 2xx..5xx and other.
      assert.ok(labels.length <= 70, `${labels.length} series for one route`);
      assert.ok(labels.includes('2xx') && labels.includes('5xx') && labels.includes('502'));
      assert.equal(labels.includes('other'), false);
      assert.match(text, /tessera_gateway_requests_total\{route="api",decision="allow",status="200"\} 1/);
    } finally {
      await gw.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('statusLabel: registered codes as themselves, others by class, outside 100-599 as other', () => {
    assert.equal(statusLabel(200), '200');
    assert.equal(statusLabel(429), '429');
    assert.equal(statusLabel(0), '0');
    assert.equal(statusLabel(299), '2xx');
    assert.equal(statusLabel(499), '4xx');
    assert.equal(statusLabel(599), '5xx');
    assert.equal(statusLabel(600), 'other');
    assert.equal(statusLabel(999), 'other');
    assert.equal(statusLabel(-1), 'other');
  });

  it('attack: distinct paths, methods, Host headers, tool names, JSON-RPC and A2A methods, subjects, client ids, request ids and user agents open no series', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{ path: '/api/ok/**' }] },
          mcpRoute(upstream.url, [{ id: 'all', tool: '*' }]),
          {
            id: 'agent',
            match: { path_prefix: '/agent' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            rules: [{}],
            a2a: { token_url: 'https://t.example/token' },
          },
          { id: 'open', match: { path_prefix: '/open' }, upstream: { url: upstream.url }, auth: 'none' },
        ],
      },
    });
    const rpc = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const round = async (n: string) => {
      const t = await token({ sub: `user-${n}`, client_id: `client-${n}`, aud: AUDIENCE });
      const bearer = { authorization: `Bearer ${t}` };
      const go = async (path: string, init: RequestInit = {}) => {
        const res = await fetch(`${gw.url}${path}`, init);
        await res.arrayBuffer();
      };
      await go(`/api/ok/${n}`, { headers: { ...bearer, 'x-request-id': `req-${n}`, 'user-agent': `agent-${n}` } });
      await go(`/api/denied-${n}`, { headers: bearer });
      await go(`/nowhere-${n}`);
      await go(`/open/${n}?q=${n}`);
      await go(`/api/ok/${n}`, { headers: { authorization: `Bearer forged.${n}.x` } });
      await go(`/api/ok/${n}`, { headers: { authorization: `Scheme-${n} x` } });
      await go('/mcp', {
        method: 'POST',
        headers: { ...bearer, ...rpc },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: `tool-${n}` } }),
      });
      await go('/mcp', {
        method: 'POST',
        headers: { ...bearer, ...rpc },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: `m-${n}` }),
      });
      await go('/agent', {
        method: 'POST',
        headers: { ...bearer, ...rpc },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: `a2a-${n}`, params: {} }),
      });
      await rawHttp(gw.url, `M${n.toUpperCase()} /api/ok/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`);
      await rawHttp(gw.url, `GET /api/ok/x HTTP/1.1\r\nHost: host-${n}.example\r\nConnection: close\r\n\r\n`);
      await rawHttp(gw.url, `GET /api/%ZZ${n} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`);
    };
    try {
      await round('a');
      await round('b');
      const scrape = async () => seriesOf(await (await fetch(`${gw.url}/metrics`)).text());
      const first = await scrape();
      for (const n of ['c', 'd', 'e', 'f']) await round(n);
      const later = await scrape();
      assert.deepEqual(later, first, 'new caller-chosen values added series');
      const text = later.join('\n');
      for (const n of ['a', 'b', 'c', 'd', 'e', 'f']) {
        for (const v of [
          `user-${n}`,
          `client-${n}`,
          `tool-${n}`,
          `m-${n}`,
          `a2a-${n}`,
          `host-${n}`,
          `req-${n}`,
          `agent-${n}`,
          `denied-${n}`,
          `nowhere-${n}`,
        ]) {
          assert.ok(!text.includes(v), `${v} is a label value`);
        }
      }
      const routes = new Set([...text.matchAll(/route="([^"]*)"/g)].map((m) => m[1]));
      assert.deepEqual([...routes].sort(), ['(none)', 'agent', 'api', 'mcp', 'open']);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });

  it('requests the HTTP layer refuses before the gateway sees them (no audit event) are counted by status, not left unseen: a malformed head (400), a head over max_header_size (431), CONNECT (501)', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        limits: { max_header_size: 4096 },
        routes: [{ id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }],
      },
    });
    const count = async (status: number) => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      const m = text.match(new RegExp(`^tessera_gateway_parser_refusals_total\\{status="${status}"\\} (\\d+)$`, 'm'));
      return m === null ? undefined : Number(m[1]);
    };
    try {
      assert.deepEqual([await count(400), await count(431), await count(501), await count(408)], [0, 0, 0, 0]);
      for (let i = 0; i < 3; i++) assert.match(await rawHttp(gw.url, 'GET /api HTTP/1.1\r\nHost h\r\n\r\n'), /^HTTP\/1\.1 400 /);
      assert.match(await rawHttp(gw.url, `GET /api HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(8192)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
      assert.match(
        await rawHttp(gw.url, 'CONNECT upstream.example:443 HTTP/1.1\r\nHost: upstream.example:443\r\n\r\n'),
        /^HTTP\/1\.1 501 /,
      );
      assert.deepEqual([await count(400), await count(431), await count(501), await count(408)], [3, 1, 1, 0]);
      await gw.served.gateway.audit.flush();
      assert.equal(gw.audit.events.length, 0, 'no audit event for any of them');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });

  it('attack: a body whose chunk the parser refuses, sent in the head’s packet, was answered 400 by the listener while the decision made after it (401) was audited and counted, and the 400 counted as a parser refusal too; now one 400 request_body_invalid, in the event and in requests_total, none among the parser refusals; likewise one relayed upstream (was allow client_closed, status 0)', async () => {
    const upstream = await startUpstream();
    // The issuer's keys come late: the token is decided after the parser has refused the body.
    const jwks = createHttpServer((_req, res) => {
      setTimeout(() => res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [key.jwk] })), 400);
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const gw = await startGateway({
      ...baseConfig(),
      issuers: issuersAt(jwks),
      gateway: {
        routes: [
          { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', audience: AUDIENCE, rules: [{}] },
          { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' },
        ],
      },
    });
    try {
      const other = await token({ aud: 'https://other.example' });
      const head = (path: string, rid: string, auth = '') =>
        `POST ${path} HTTP/1.1\r\nHost: a\r\nX-Request-Id: ${rid}\r\n${auth}Transfer-Encoding: chunked\r\n\r\n`;
      const r = await rawHttp(gw.url, `${head('/api/x', 'bad-chunk-1', `Authorization: Bearer ${other}\r\n`)}5\r\nhello\r\nzz\r\n`);
      assert.equal(r, 'HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      // The body cut in a later packet, the request relayed upstream meanwhile.
      const relayed = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(new URL(gw.url).port), '127.0.0.1', () =>
          socket.write(`${head('/public/x', 'bad-chunk-2')}5\r\nhello\r\n`),
        );
        setTimeout(() => socket.write('zz\r\n'), 200);
        let got = '';
        socket.on('data', (d) => {
          got += d;
        });
        socket.on('end', () => resolve(got)).on('error', reject);
      });
      assert.match(relayed, /^HTTP\/1\.1 400 Bad Request\r\n/);
      // The late keys arrive, and the token is refused (401) for the first, answered to no one.
      await new Promise((resolve) => setTimeout(resolve, 600));
      await gw.served.gateway.audit.flush();
      const text = await assertBodiesRefused(gw, 'bad-chunk-', 400, 'request_body_invalid');
      assert.equal(sample(text, 'tessera_gateway_requests_total{route="api",decision="deny",status="401"}'), 0);
    } finally {
      await gw.close();
      await upstream.close();
      jwks.close();
    }
  });

  it('attack: slow body: a head with Content-Length, then a stalled body, cut by limits.request_timeout with the listener’s 408, was audited allow client_closed (status 0: the client had not hung up) and the 408 counted as a parser refusal too; now one 408 request_timeout, in the event and in requests_total, none among the parser refusals (a route relaying the body, one deciding a token first)', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        limits: { headers_timeout: '1s', request_timeout: '1s' },
        routes: [
          { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', audience: AUDIENCE, rules: [{}] },
          { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' },
        ],
      },
    });
    // The head and 5 of the 100 bytes it announces, then nothing: the listener's 408 ends it.
    const stall = (head: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(new URL(gw.url).port), '127.0.0.1', () => socket.write(`${head}Content-Length: 100\r\n\r\nhello`));
        let got = '';
        socket.on('data', (d) => {
          got += d;
        });
        socket.on('end', () => resolve(got)).on('error', reject);
      });
    try {
      const valid = await token({});
      const [api, pub] = await Promise.all([
        stall(`POST /api/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: slow-body-1\r\nAuthorization: Bearer ${valid}\r\n`),
        stall('POST /public/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: slow-body-2\r\n'),
      ]);
      assert.equal(api, 'HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      assert.equal(pub, api);
      await until(async () => {
        await gw.served.gateway.audit.flush();
        return gw.audit.events.filter((e) => e.request_id?.startsWith('slow-body-')).length === 2;
      });
      const text = await assertBodiesRefused(gw, 'slow-body-', 408, 'request_timeout');
      assert.equal(sample(text, 'tessera_gateway_requests_total{route="api",decision="allow",status="0"}'), 0);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });

  it('attack: a request with an Expect other than 100-continue was answered 417 by Node before the gateway saw it, with no audit event and not counted either: a flood of them left no trace; now counted (status 417), the connection closed, nothing forwarded', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'none' }] },
    });
    const count = async () => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      const m = text.match(/^tessera_gateway_parser_refusals_total\{status="417"\} (\d+)$/m);
      return m === null ? undefined : Number(m[1]);
    };
    try {
      assert.equal(await count(), 0);
      for (const expect of ['200-ok', 'x-anything', '100-continued']) {
        const answer = await rawHttp(gw.url, `POST /api/x HTTP/1.1\r\nHost: h\r\nExpect: ${expect}\r\nContent-Length: 5\r\n\r\nhello`);
        assert.match(answer, /^HTTP\/1\.1 417 /, expect);
        assert.match(answer, /\r\nconnection: close\r\n/i, expect);
      }
      assert.equal(await count(), 3);
      assert.equal(upstream.seen.length, 0, 'nothing reached the upstream');
      await gw.served.gateway.audit.flush();
      assert.equal(gw.audit.events.length, 0, 'refused before the gateway: no audit event, as the other parser refusals');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
