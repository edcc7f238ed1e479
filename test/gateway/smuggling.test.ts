/**
 * Request smuggling and framing attacks on the proxy path, sent on raw sockets, against an upstream
 * on raw TCP that records every byte it receives: what the gateway refuses never reaches the
 * upstream, what it forwards arrives with the gateway's own framing, and no refusal or abort leaves
 * a connection (the caller's or a pooled upstream one) out of step.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { rawHttp, sendLargeBody, until } from '../helpers/net.ts';
import {
  AUDIENCE,
  baseConfig,
  type RawUpstream,
  requestEvents,
  startGateway,
  startRawUpstream,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
} from './helpers.ts';

const statuses = (response: string) => [...response.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`;

describe('gateway: request smuggling and framing', () => {
  let upstream: RawUpstream;
  let gw: TestGateway;
  let t: string;
  before(async () => {
    upstream = await startRawUpstream((head, _body, socket) => {
      if (!head.startsWith('GET /public/slow ')) return undefined;
      setTimeout(() => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow'), 300);
      return '';
    });
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        limits: { max_body_size: '1kb', max_header_size: 65_536 },
        routes: [
          {
            id: 'api',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN } },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [
              { id: 'admin', path: '/api/admin/**', scopes: ['admin'] },
              { id: 'upload', path: '/api/upload', methods: ['POST'], scopes: ['api:read'] },
              { id: 'any', path: '/api/**', scopes: ['api:read'] },
            ],
            identity_headers: ['subject', 'scopes'],
          },
          { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' },
          { id: 'ws', match: { path_prefix: '/ws' }, websocket: true, upstream: { url: upstream.url }, auth: 'none' },
        ],
      },
    });
    t = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  /** Where each upstream connection's bytes stand now (pooled connections carry more later). */
  const mark = () => upstream.connections.map((c) => c.length);
  /** The bytes the upstream received since `from` ({@link mark}), on every connection, joined. */
  const receivedSince = (from: readonly number[]) => upstream.connections.map((c, i) => c.slice(from[i] ?? 0)).join('');

  it('trailer smuggling: trailers of a chunked request (Authorization, X-Tessera-Subject) reach the upstream neither as headers nor as trailers, nor do Trailer and TE', async () => {
    const from = mark();
    const r = await rawHttp(
      gw.url,
      `POST /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nTransfer-Encoding: chunked\r\n` +
        `Trailer: authorization, x-tessera-subject\r\nTE: trailers\r\nConnection: close\r\n\r\n` +
        `${chunk('abc')}0\r\nAuthorization: Bearer forged\r\nX-Tessera-Subject: admin\r\nX-Tessera-Scopes: admin\r\n\r\n`,
    );
    assert.deepEqual(statuses(r), [200], r);
    const sent = receivedSince(from);
    assert.match(sent, /\r\nx-tessera-subject: user-1\r\n/);
    assert.match(sent, /\r\n\r\n3\r\nabc\r\n0\r\n\r\n$/, 'the body ends with no trailer');
    assert.doesNotMatch(sent, /forged|: admin\r\n|\r\ntrailer:|\r\nte:/i);
  });

  it('hop-by-hop framing: Connection naming Content-Length and Transfer-Encoding cannot strip the framing the upstream reads: the body arrives with a length of the gateway’s', async () => {
    const from = mark();
    const r = await rawHttp(
      gw.url,
      `POST /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nContent-Length: 5\r\n` +
        'Connection: content-length, transfer-encoding, host, close\r\n\r\nhello',
    );
    assert.deepEqual(statuses(r), [200], r);
    const sent = receivedSince(from);
    assert.match(
      sent,
      /\r\n(content-length: 5\r\n(?:.*\r\n)*\r\nhello|transfer-encoding: chunked\r\n(?:.*\r\n)*\r\n5\r\nhello\r\n0\r\n\r\n)$/,
    );
    assert.match(sent, /\r\nhost: 127\.0\.0\.1:\d+\r\n/i);
  });

  it('pipelining behind a refusal: a request smuggled in the body of a refused (401) request is never forwarded, and the request after it is answered as its own', async () => {
    const seen = upstream.requests.length;
    const smuggled = 'GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n';
    const r = await rawHttp(
      gw.url,
      `POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}` +
        'GET /public/second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    assert.deepEqual(statuses(r), [401, 200], r);
    assert.deepEqual(upstream.requests.slice(seen), ['GET /public/second HTTP/1.1']);
  });

  it('pipelining behind a refusal: a request smuggled in the chunked body of a refused (401) request is never forwarded, and the request after it is answered as its own', async () => {
    const seen = upstream.requests.length;
    const r = await rawHttp(
      gw.url,
      `POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk('GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n')}0\r\n\r\n` +
        'GET /public/second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    assert.deepEqual(statuses(r), [401, 200], r);
    assert.deepEqual(upstream.requests.slice(seen), ['GET /public/second HTTP/1.1']);
  });

  it('pool desync: a caller that leaves halfway through its body leaves no half-sent request on a pooled upstream connection (the next request is not read as its rest)', async () => {
    const u = new URL(gw.url);
    const seen = upstream.requests.length;
    const from = mark();
    const s = connect(Number(u.port), '127.0.0.1', () =>
      s.write('POST /public/half HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\nGET /public/inside HTTP/1.1\r\n'),
    );
    s.on('error', () => undefined);
    await until(() => receivedSince(from).includes('GET /public/inside'));
    s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const r = await rawHttp(gw.url, 'GET /public/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.deepEqual(statuses(r), [200], r);
    assert.deepEqual(upstream.requests.slice(seen), ['GET /public/after HTTP/1.1']);
  });

  it('pool desync: an upload cut at max_body_size midway (413) leaves no half-sent chunked request on a pooled upstream connection', async () => {
    const u = new URL(gw.url);
    const seen = upstream.requests.length;
    const from = mark();
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      const s = connect(Number(u.port), '127.0.0.1', () =>
        s.write(`POST /public/big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk('a'.repeat(600))}`),
      );
      s.on('data', (d) => {
        text += d.toString();
      });
      s.on('error', () => undefined);
      s.on('close', () => resolve(text));
      // The first chunk is on its way upstream before the second passes the limit.
      void until(() => receivedSince(from).includes('a'.repeat(600))).then(() => s.write(chunk('b'.repeat(600))));
    });
    assert.deepEqual(statuses(answer), [413], answer);
    const r = await rawHttp(gw.url, 'GET /public/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.deepEqual(statuses(r), [200], r);
    assert.deepEqual(upstream.requests.slice(seen), ['GET /public/after HTTP/1.1']);
  });

  it('chunk-extension flooding: a chunk extension of 20 000 bytes is refused 400 and nothing reaches the upstream', async () => {
    const from = mark();
    const r = await rawHttp(
      gw.url,
      `POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;${'x'.repeat(20_000)}\r\nabc\r\n0\r\n\r\n`,
    );
    assert.deepEqual(statuses(r), [400], r);
    assert.equal(receivedSince(from), '');
  });

  for (const [name, line] of [
    ['a NUL in a header value', 'X-A: a\0b'],
    ['a bare CR in a header value', 'X-A: a\rb'],
    ['a header name with a space', 'X A: b'],
    ['a header name with a non-token character', 'X(A): b'],
    ['an empty header name', ': b'],
  ] as const) {
    it(`header smuggling: ${name} is refused 400 and nothing reaches the upstream`, async () => {
      const from = mark();
      const r = await rawHttp(gw.url, `GET /public/x HTTP/1.1\r\nHost: a\r\n${line}\r\nConnection: close\r\n\r\n`);
      assert.deepEqual(statuses(r), [400], r);
      assert.equal(receivedSince(from), '');
    });
  }

  it('asterisk-form target: OPTIONS * is refused 400 request_path_invalid, never routed', async () => {
    const from = mark();
    const r = await rawHttp(gw.url, 'OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.deepEqual(statuses(r), [400], r);
    assert.match(r, /"error":"invalid_request"/);
    assert.equal(receivedSince(from), '');
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_path_invalid');
  });

  it('tunnel: CONNECT is answered 501 and its connection closed, nothing reaches the upstream and no tunnel opens', async () => {
    const from = mark();
    const r = await rawHttp(
      gw.url,
      `CONNECT ${new URL(upstream.url).host} HTTP/1.1\r\nHost: ${new URL(upstream.url).host}\r\n\r\nGET /public/x HTTP/1.1\r\nHost: a\r\n\r\n`,
    );
    assert.deepEqual(statuses(r), [501], r);
    assert.match(r, /\r\nconnection: close\r\n/i);
    assert.equal(receivedSince(from), '');
  });

  it('header flooding: more headers than the parser keeps (1001) is refused 431, never forwarded with the ones it kept', async () => {
    const from = mark();
    const r = await rawHttp(
      gw.url,
      `GET /public/x HTTP/1.1\r\nHost: a\r\n${'a: 1\r\n'.repeat(1000)}X-Tessera-Subject: admin\r\nConnection: close\r\n\r\n`,
    );
    assert.deepEqual(statuses(r), [431], r);
    assert.equal(receivedSince(from), '');
  });

  it('a single long header under max_header_size is forwarded whole', async () => {
    const from = mark();
    const value = 'v'.repeat(60_000);
    const r = await rawHttp(gw.url, `GET /public/x HTTP/1.1\r\nHost: a\r\nX-Long: ${value}\r\nConnection: close\r\n\r\n`);
    assert.deepEqual(statuses(r), [200], r);
    assert.ok(receivedSince(from).includes(`\r\nx-long: ${value}\r\n`), 'the header arrived whole');
  });

  it('upgrade smuggling: a POST asking to upgrade to websocket on a route whose rules allow POST (Connection: keep-alive, Upgrade) is refused 400 request_upgrade_refused, nothing reaches the upstream', async () => {
    const from = mark();
    const r = await rawHttp(
      gw.url,
      `POST /api/upload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0\r\n\r\n',
    );
    assert.deepEqual(statuses(r), [400], r);
    assert.equal(receivedSince(from), '');
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_upgrade_refused');
  });
  it('pipelining behind a closing answer: a request sent behind one refused 413 (its body sent whole, the connection announced closed) is never forwarded (RFC 9112 §9.6)', async () => {
    const seen = upstream.requests.length;
    const body = 'x'.repeat(2000);
    const r = await rawHttp(
      gw.url,
      `POST /public/big HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
        'POST /public/second HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n',
    );
    assert.deepEqual(statuses(r), [413], r);
    assert.match(r, /\r\nconnection: close\r\n/i);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(upstream.requests.slice(seen), []);
  });

  it('413 for a declared Content-Length over max_body_size, the client still sending: answered with Connection: close, half-closed, and closed a linger later, not reset at once (which may discard the answer) nor drained', async () => {
    const r = await sendLargeBody(gw.url, 'POST /public/big HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n');
    assert.deepEqual(statuses(r.answer), [413], r.answer);
    assert.match(r.answer, /\r\nconnection: close\r\n/i);
    assert.match(r.answer, /"error":"[a-z_]+"/);
    assert.ok(r.finMs < 1000, `the answer came with no FIN (${r.finMs} ms)`);
    assert.ok(r.ms - r.finMs >= 500, `the connection was closed ${Math.round(r.ms - r.finMs)} ms after the FIN`);
    assert.ok(r.ms < 4000, `the connection was held ${Math.round(r.ms)} ms`);
  });

  it('HTTP/1.0 without Host (RFC 9112 §3.2 requires it of HTTP/1.1 only) is forwarded without an empty X-Forwarded-Host or host= in Forwarded', async () => {
    const from = mark();
    const r = await rawHttp(gw.url, 'GET /public/nohost HTTP/1.0\r\n\r\n');
    assert.deepEqual(statuses(r), [200], r);
    const sent = receivedSince(from);
    assert.match(sent, /^GET \/public\/nohost HTTP\/1\.1\r\n/);
    assert.doesNotMatch(sent, /\r\nx-forwarded-host:/i);
    assert.match(sent, /\r\nforwarded: for=[^;\r]+;proto=http\r\n/i);
  });

  it('pipelining behind a closing answer: a request sent behind one refused 413 on an authenticated route is never forwarded, with a valid token', async () => {
    const seen = upstream.requests.length;
    const body = 'x'.repeat(2000);
    const r = await rawHttp(
      gw.url,
      `POST /api/upload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
        `DELETE /api/items/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\n\r\n`,
    );
    assert.deepEqual(statuses(r), [413], r);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(upstream.requests.slice(seen), []);
  });

  const upgradeHead =
    'GET /ws/chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

  it('pipelining behind a closing answer: a WebSocket upgrade sent behind one refused 413 (the connection announced closed) is never forwarded (RFC 9112 §9.6)', async () => {
    const seen = upstream.requests.length;
    const body = 'x'.repeat(2000);
    const r = await rawHttp(gw.url, `POST /public/big HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}${upgradeHead}`);
    assert.deepEqual(statuses(r), [413], r);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(upstream.requests.slice(seen), []);
  });

  it('pipelining: a WebSocket upgrade sent behind a request still being answered is handled after that answer, whose bytes it never cuts into', async () => {
    const seen = upstream.requests.length;
    const r = await rawHttp(gw.url, `GET /public/slow HTTP/1.1\r\nHost: a\r\n\r\n${upgradeHead}`);
    // The slow answer whole, then the upgrade's (the raw upstream answers it 200 ok, not 101).
    assert.match(r, /^HTTP\/1\.1 200 OK\r\n(?:[^\r\n]+\r\n)*\r\nslowHTTP\/1\.1 \d{3} /, r);
    assert.equal(statuses(r).length, 2, r);
    assert.deepEqual(upstream.requests.slice(seen), ['GET /public/slow HTTP/1.1', 'GET /ws/chat HTTP/1.1']);
  });

  it('pipelining: requests behind one still being answered are answered in order, each on its own decision', async () => {
    const seen = upstream.requests.length;
    const r = await rawHttp(
      gw.url,
      `GET /api/one HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\n\r\n` +
        'GET /api/two HTTP/1.1\r\nHost: a\r\n\r\n' +
        `GET /api/admin/three HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\n\r\n` +
        'GET /public/four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    assert.deepEqual(statuses(r), [200, 401, 403, 200], r);
    assert.deepEqual(upstream.requests.slice(seen), ['GET /api/one HTTP/1.1', 'GET /public/four HTTP/1.1']);
  });

  for (const [name, first] of [
    ['Connection: close', 'GET /public/first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'],
    ['HTTP/1.0 without keep-alive', 'GET /public/first HTTP/1.0\r\nHost: a\r\n\r\n'],
  ] as const) {
    it(`bytes after a request that closes the connection (${name}) are never read as a request, and do not replace its answer with a 400`, async () => {
      const seen = upstream.requests.length;
      const r = await rawHttp(gw.url, `${first}POST /public/second HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n`);
      assert.deepEqual(statuses(r), [200], r);
      assert.match(r, /\r\n\r\nok$/);
      assert.deepEqual(upstream.requests.slice(seen), ['GET /public/first HTTP/1.1']);
    });
  }

  for (const [name, head, body] of [
    [
      'HTTP/1.0 with Transfer-Encoding: chunked and keep-alive',
      'POST /public/x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n',
      `${chunk('abc')}0\r\n\r\n`,
    ],
    [
      'Transfer-Encoding: gzip, chunked (a coding the gateway would drop)',
      'POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n',
      `${chunk('abc')}0\r\n\r\n`,
    ],
    [
      'Transfer-Encoding: identity, chunked',
      'POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n',
      `${chunk('abc')}0\r\n\r\n`,
    ],
    ['an HTTP/2.0 request line on an HTTP/1 connection', 'GET /public/x HTTP/2.0\r\nHost: a\r\nConnection: keep-alive\r\n', ''],
  ] as const) {
    it(`framing: ${name} is refused 400 request_framing_invalid, the connection closed, and nothing (nor a request behind it) reaches the upstream`, async () => {
      const from = mark();
      const r = await rawHttp(gw.url, `${head}\r\n${body}GET /public/behind HTTP/1.1\r\nHost: a\r\n\r\n`);
      assert.deepEqual(statuses(r), [400], r);
      assert.match(r, /\r\nconnection: close\r\n/i);
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(receivedSince(from), '');
      assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_framing_invalid');
    });
  }
});
