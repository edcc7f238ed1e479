/**
 * The forwarder under a caller that goes away: the upstream exchange is given up at once, so a
 * caller cannot pin pooled upstream connections by abandoning large responses, and the request
 * is audited when it ends, not at shutdown. And an upstream status outside 100–599 (which
 * undici's parser accepts) is never relayed.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { rawHttp, until } from '../../helpers/net.ts';
import {
  baseConfig,
  type RawUpstream,
  requestEvents,
  startGateway,
  startRawUpstream,
  startUpstream,
  type TestGateway,
  type Upstream,
} from '../helpers.ts';

describe('gateway: forwarding to a caller that goes away', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let upstreamClosed = 0;
  before(async () => {
    const chunk = Buffer.alloc(64 * 1024, 'a');
    const chunks = 1024; // 64 MiB: far more than the socket buffers hold
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(chunk.length * chunks) });
      let sent = 0;
      const pump = () => {
        while (sent < chunks && !res.destroyed) {
          sent++;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      res.on('close', () => upstreamClosed++);
      pump();
    });
    gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'files', upstream: { url: upstream.url, connections: 1 }, auth: 'none' }] },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('client abort on a large response with a length: the upstream exchange ends at once and is audited once', async () => {
    const u = new URL(gw.url);
    const socket = connect(Number(u.port), u.hostname, () => socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n'));
    let received = 0;
    await new Promise<void>((resolve) => {
      socket.on('data', (d: Buffer) => {
        received += d.length;
        if (received > 1024 * 1024 && !socket.destroyed) {
          socket.destroy();
          resolve();
        }
      });
    });
    // Not at the idle timeout (5 min) or at shutdown: now.
    await until(() => upstreamClosed === 1);
    const events = await requestEvents(gw);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.decision, 'allow');
    assert.equal(events[0]!.detail?.closed, 'client_closed');
    // The upstream pool (one connection) is free for the next caller.
    upstream.server.removeAllListeners('request');
    upstream.server.on('request', (_req, res) => res.writeHead(200, { 'content-length': '2' }).end('ok'));
    const res = await fetch(`${gw.url}/next`, { signal: AbortSignal.timeout(2000) });
    assert.equal(await res.text(), 'ok');
  });
});

describe('gateway: an upstream status outside 100–599', () => {
  let upstream: RawUpstream;
  let gw: TestGateway;
  /** What the upstream says besides its status, none of which may reach the caller. */
  const SECRET = 'stack trace at db-7.internal';
  before(async () => {
    upstream = await startRawUpstream((head) => {
      const path = head.split(' ')[1] ?? '';
      const code = /^\/status\/(\d+)$/.exec(path)?.[1];
      // An informational answer nobody asked for, then the final one.
      if (path === '/informational') return 'HTTP/1.1 150 Odd\r\nX-Hint: a\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
      if (code === undefined) return undefined;
      return `HTTP/1.1 ${code} X\r\nX-Upstream-Internal: db-7.internal\r\nContent-Length: ${SECRET.length}\r\n\r\n${SECRET}`;
    });
    gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'odd', upstream: { url: upstream.url }, auth: 'none' }] },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  for (const code of ['700', '999', '099']) {
    it(`an upstream answering "HTTP/1.1 ${code} X" is not relayed: 502 upstream_status_invalid with the fixed body, audited with upstream_status ${Number(code)}`, async () => {
      const r = await rawHttp(gw.url, `GET /status/${code} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 502 /, r);
      assert.match(r, /\{"error":"bad_gateway","error_description":"The upstream service answered with an invalid status code\."\}$/);
      assert.equal(r.includes('db-7.internal'), false, 'nothing of the upstream answer is relayed');
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.reason, 'upstream_status_invalid');
      assert.equal(e.upstream_status, Number(code));
      assert.equal(e.decision, 'allow', 'decided and allowed; the upstream failed');
    });
  }

  it('an informational 1xx nobody asked for (150) is skipped and the final answer relayed', async () => {
    const r = await rawHttp(gw.url, 'GET /informational HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.match(r, /^HTTP\/1\.1 200 /, r);
    assert.doesNotMatch(r, /150|x-hint/i);
    assert.ok(r.endsWith('\r\n\r\nok'), r);
    assert.equal((await requestEvents(gw)).at(-1)!.upstream_status, 200);
  });
});
