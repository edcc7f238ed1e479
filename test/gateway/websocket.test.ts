/**
 * WebSocket through the gateway: authenticated before the upgrade, the upstream sees the injected
 * credential and never the caller's, messages flow both ways, and the gateway closes the
 * connection (1008) when the token is revoked or expires.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { rawHttp, until } from '../helpers/net.ts';
import {
  baseConfig,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
  type Upstream,
  wsUpgradeRequest,
} from './helpers.ts';

function connectWs(url: string, headers: Record<string, string> = {}, protocols?: string[]) {
  const ws = new WebSocket(url, protocols, { headers });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res: IncomingMessage) =>
      reject(Object.assign(new Error(`status ${res.statusCode}`), { status: res.statusCode, headers: res.headers })),
    );
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return { ws, opened, closed };
}

describe('gateway: WebSocket', () => {
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  const revocations = new RevocationList();
  const upgrades: IncomingMessage['headers'][] = [];
  const upstreamCloses: number[] = [];
  const stalled: Duplex[] = [];
  before(async () => {
    // `/ws/wait` is a plain HTTP request the upstream answers 300 ms late (for pipelining behind it).
    upstream = await startUpstream((req, res) => {
      const text = JSON.stringify({ url: req.url });
      const send = () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': text.length }).end(text);
      if (req.url === '/ws/wait') setTimeout(send, 300);
      else send();
    });
    wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => (p.has('chat') ? 'chat' : false) });
    upstream.server.on('upgrade', (req, socket, head) => {
      upgrades.push(req.headers);
      if (req.url === '/ws/refuse') {
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\n\r\nnope');
        return;
      }
      if (req.url === '/ws/sse') {
        // An upstream that ignores the Upgrade header and answers with an event stream.
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n');
        let n = 0;
        const timer = setInterval(() => socket.write(`data: ${n++}\n\n`), 50);
        socket.on('error', () => socket.destroy());
        socket.once('close', () => {
          clearInterval(timer);
          upstreamCloses.push(-2);
        });
        stalled.push(socket);
        return;
      }
      if (req.url?.startsWith('/ws/hang') === true) {
        // An upstream that never answers the upgrade: the gateway waits for it, up to the header timeout.
        // Its side of the connection ending is the gateway giving up (http.Server sockets are half-open).
        socket.once('end', () => upstreamCloses.push(-3));
        socket.resume();
        stalled.push(socket);
        return;
      }
      if (req.url === '/ws/refuse-hang') {
        // A refusal whose body never ends: the head and a first chunk, then silence.
        socket.write('HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnope\r\n');
        // The gateway ending its side (http.Server sockets are half-open: 'end', not yet 'close').
        socket.once('end', () => upstreamCloses.push(-1));
        stalled.push(socket);
        return;
      }
      const accept = () =>
        wss.handleUpgrade(req, socket, head, (ws) => {
          ws.on('message', (m, binary) => ws.send(binary ? m : `echo:${m.toString()}`, { binary }));
          ws.on('close', (code) => upstreamCloses.push(code));
        });
      // An upstream slow to accept (the gateway has decided; the upgrade is not done yet).
      if (req.url === '/ws/slow') {
        // The gateway may give up first (its caller gone): that ends this side of the connection.
        const gaveUp = () => {
          clearTimeout(slow);
          upstreamCloses.push(-4);
          socket.destroy();
        };
        const slow = setTimeout(() => {
          socket.off('end', gaveUp);
          accept();
        }, 300);
        socket.once('end', gaveUp);
        socket.resume();
      } else accept();
    });
    const base = baseConfig();
    gw = await startGateway(
      {
        ...base,
        // No clock skew: a stream on an expiring token is closed at its exp, not 30 s later.
        issuers: base.issuers?.map((i) => ({ ...i, clock_skew: '0s' })),
        gateway: {
          routes: [
            {
              id: 'ws',
              match: { path_prefix: '/ws' },
              upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN }, timeouts: { idle: '1s' } },
              auth: 'jwt',
              max_body_size: '1kb',
              rules: [{ path: '/ws/admin', scopes: ['admin'] }, { scopes: ['api:read'] }],
              identity_headers: ['subject'],
            },
            { id: 'nows', match: { path_prefix: '/plain' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}], websocket: false },
          ],
        },
      },
      { revocation: revocations },
    );
  });
  after(async () => {
    await gw.close();
    for (const socket of stalled) socket.destroy();
    wss.close();
    await upstream.close();
  });

  const wsUrl = (path: string) => `${gw.url.replace('http', 'ws')}${path}`;
  /** A raw connection to the gateway that has asked to upgrade `path` with `t`. */
  const rawUpgrade = (path: string, t: string) => {
    const u = new URL(gw.url);
    const socket = connect(Number(u.port), u.hostname, () => socket.write(wsUpgradeRequest(path, t)));
    return socket;
  };
  /** Wait up to `ms` for the upstream to report a close after the `before` it had reported. */
  const upstreamClosed = async (before: number, ms: number) => {
    const start = Date.now();
    while (upstreamCloses.length === before && Date.now() - start < ms) await new Promise((r) => setTimeout(r, 20));
  };

  it('authenticates at the upgrade and injects the upstream credential', async () => {
    const t = await token();
    const c = connectWs(wsUrl('/ws/chat?room=1'), { authorization: `Bearer ${t}`, 'x-tessera-subject': 'admin' }, ['chat']);
    await c.opened;
    assert.equal(c.ws.protocol, 'chat');
    const h = upgrades.at(-1)!;
    assert.equal(h.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(h['x-tessera-subject'], 'user-1');
    c.ws.send('hello');
    const [msg] = await once(c.ws, 'message');
    assert.equal(msg.toString(), 'echo:hello');
    const big = Buffer.alloc(200_000, 3);
    c.ws.send(big);
    const [echoed] = await once(c.ws, 'message');
    assert.equal(Buffer.compare(echoed as Buffer, big), 0);
    c.ws.close(1000, 'done');
    assert.equal((await c.closed).code, 1000);
  });

  it('refuses an upgrade without a token before contacting the upstream', async () => {
    const n = upgrades.length;
    const c = connectWs(wsUrl('/ws/chat'));
    await assert.rejects(
      c.opened,
      (e: { status?: number; headers?: Record<string, string> }) =>
        e.status === 401 && /^Bearer/.test(e.headers?.['www-authenticate'] ?? ''),
    );
    assert.equal(upgrades.length, n);
  });

  it('refuses an upgrade the rules do not allow (403)', async () => {
    const t = await token();
    const c = connectWs(wsUrl('/ws/admin'), { authorization: `Bearer ${t}` });
    await assert.rejects(c.opened, (e: { status?: number }) => e.status === 403);
  });

  it('refuses an upgrade on a route without WebSocket', async () => {
    const t = await token();
    const c = connectWs(wsUrl('/plain/x'), { authorization: `Bearer ${t}` });
    await assert.rejects(c.opened, (e: { status?: number }) => e.status === 400);
  });

  for (const [name, framing] of [
    ['Content-Length', 'Content-Length: 5\r\n\r\nhello'],
    ['chunked', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
  ] as const) {
    it(`smuggling: an upgrade carrying a body (${name}) is refused before the upstream sees it (the gateway would relay the body as WebSocket data, an upstream reads it as the request's)`, async () => {
      const t = await token();
      const n = upgrades.length;
      const r = await rawHttp(
        gw.url,
        `GET /ws/chat HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${framing}`,
      );
      assert.match(r, /^HTTP\/1\.1 400 /);
      assert.equal(upgrades.length, n);
    });
  }

  it('h2c smuggling: an Upgrade: h2c is refused, never forwarded (also on a WebSocket route, also next to websocket)', async () => {
    const t = await token();
    const n = upgrades.length;
    for (const upgrade of ['h2c', 'websocket, h2c', 'h2c, websocket']) {
      const r = await rawHttp(
        gw.url,
        `GET /ws/chat HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: ${upgrade}\r\n` +
          'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
      );
      assert.match(r, /^HTTP\/1\.1 400 /, upgrade);
    }
    assert.equal(upgrades.length, n);
    assert.equal(upstream.seen.length, 0);
  });

  it('relays the upstream’s refusal of the upgrade', async () => {
    const t = await token();
    const c = connectWs(wsUrl('/ws/refuse'), { authorization: `Bearer ${t}` });
    await assert.rejects(c.opened, (e: { status?: number }) => e.status === 403);
  });

  it('slowloris upstream: a refusal whose body stalls is cut after timeouts.idle, both connections closed (they stayed open forever)', async () => {
    const t = await token();
    const closesBefore = upstreamCloses.length;
    const socket = rawUpgrade('/ws/refuse-hang', t);
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString();
    });
    const closed = await Promise.race([
      once(socket, 'close').then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 4000)),
    ]);
    socket.destroy();
    assert.match(got, /^HTTP\/1\.1 403 /);
    assert.ok(closed, 'the caller connection is closed');
    await upstreamClosed(closesBefore, 2000);
    assert.equal(upstreamCloses.at(-1), -1, 'the upstream connection is closed');
  });

  it('caller gone during a refusal whose body stalls: the upstream connection is closed too', async () => {
    const t = await token();
    const closesBefore = upstreamCloses.length;
    const socket = rawUpgrade('/ws/refuse-hang', t);
    await once(socket, 'data');
    socket.destroy();
    await upstreamClosed(closesBefore, 500);
    assert.equal(upstreamCloses.at(-1), -1, 'the upstream connection is closed with the caller’s, not at the idle timeout');
  });

  it('caller gone during a refusal whose body stalls (it closes its side, nothing unread to reset with): the upstream connection is closed too', async () => {
    const t = await token();
    const closesBefore = upstreamCloses.length;
    const socket = rawUpgrade('/ws/refuse-hang', t);
    let received = '';
    socket.on('data', (c: Buffer) => {
      received += c.toString('latin1');
    });
    await until(() => received.includes('nope'), 2000);
    socket.end();
    await upstreamClosed(closesBefore, 500);
    assert.equal(upstreamCloses.at(-1), -1, 'the upstream connection is closed with the caller’s, not at the idle timeout');
    socket.destroy();
  });

  it('closes the connection with 1008 when the token is revoked, and audits it', async () => {
    const t = await token({ jti: 'ws-jti', grant_id: 'g-ws' });
    const c = connectWs(wsUrl('/ws/chat'), { authorization: `Bearer ${t}` });
    await c.opened;
    c.ws.send('ping');
    await once(c.ws, 'message');
    const closesBefore = upstreamCloses.length;
    revocations.apply({ tokenIds: [{ jti: 'ws-jti', expiresAt: Math.floor(Date.now() / 1000) + 300 }] });
    const closed = await c.closed;
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'token revoked');
    await upstreamClosed(closesBefore, 3000);
    assert.equal(upstreamCloses.at(-1), 1008, 'the upstream is told too');
    await gw.served.gateway.audit.flush();
    const e = gw.audit.events.filter((x) => x.kind === 'gateway.stream_closed').at(-1);
    assert.equal(e?.reason, 'token_revoked');
    assert.equal(e?.jti, 'ws-jti');
  });

  it('revocation bypass: an event stream the upstream answers an upgrade with ends when the token is revoked, audited once (it was relayed as a refusal nobody watched)', async () => {
    const t = await token({ jti: 'ws-sse' });
    const closesBefore = upstreamCloses.length;
    const socket = rawUpgrade('/ws/sse', t);
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString();
    });
    const closed = once(socket, 'close');
    await until(() => got.includes('data: 1\n\n'));
    assert.match(got, /^HTTP\/1\.1 200 /);
    revocations.apply({ tokenIds: [{ jti: 'ws-sse', expiresAt: Math.floor(Date.now() / 1000) + 300 }] });
    const ended = await Promise.race([closed.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 2000))]);
    socket.destroy();
    assert.ok(ended, 'the caller connection is closed');
    await upstreamClosed(closesBefore, 2000);
    assert.equal(upstreamCloses.at(-1), -2, 'the upstream connection is closed');
    await gw.served.gateway.audit.flush();
    const events = gw.audit.events.filter((x) => x.kind === 'gateway.stream_closed' && x.jti === 'ws-sse');
    assert.equal(events.length, 1);
    assert.equal(events[0]?.reason, 'token_revoked');
  });

  it('revocation race: a token revoked after the decision but before the upstream accepts the upgrade gets 1008', async () => {
    const t = await token({ jti: 'ws-slow', grant_id: 'g-ws-slow' });
    const c = connectWs(wsUrl('/ws/slow'), { authorization: `Bearer ${t}` });
    await new Promise((r) => setTimeout(r, 100));
    revocations.apply({ grantIds: ['g-ws-slow'] });
    await c.opened;
    const closed = await Promise.race([
      c.closed,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the connection outlived its revocation')), 2000)),
    ]);
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'token revoked');
  });

  it('caller gone during the upgrade: the upstream connection accepted after it left is closed, not left open', async () => {
    const t = await token();
    const closesBefore = upstreamCloses.length;
    const socket = rawUpgrade('/ws/slow', t);
    await new Promise((r) => setTimeout(r, 100));
    socket.destroy();
    const start = Date.now();
    await upstreamClosed(closesBefore, 3000);
    assert.equal(upstreamCloses.length, closesBefore + 1, 'the upstream connection is closed');
    // The upstream records its close before the gateway's side of that socket has seen it: the
    // stream is unwatched when the gateway's 'close' arrives, a moment later.
    const gauge = () => gw.served.gateway.registry.getSingleMetricAsString('tessera_gateway_active_streams');
    let metrics = await gauge();
    while (!/kind="websocket"\} 0/.test(metrics) && Date.now() - start < 3000) {
      await new Promise((r) => setTimeout(r, 20));
      metrics = await gauge();
    }
    assert.match(metrics, /kind="websocket"\} 0/);
  });

  for (const [how, leave] of [
    ['closes its connection', (socket: Socket) => socket.end()],
    ['resets its connection', (socket: Socket) => socket.resetAndDestroy()],
  ] as const) {
    it(`caller gone before the upstream answers the upgrade (${how}): the upstream request is aborted at once and audited client_closed, not held until the header timeout and counted an upstream error`, async () => {
      const t = await token({ jti: `ws-gone-${how.split(' ')[0]}` });
      const closesBefore = upstreamCloses.length;
      const upgradesBefore = upgrades.length;
      const upstreamErrors = () => gw.served.gateway.registry.getSingleMetricAsString('tessera_gateway_upstream_errors_total');
      const errorsBefore = await upstreamErrors();
      const socket = rawUpgrade(`/ws/hang/${how.split(' ')[0]}`, t);
      socket.on('error', () => {});
      await until(() => upgrades.length > upgradesBefore, 2000);
      leave(socket);
      await upstreamClosed(closesBefore, 2000);
      assert.equal(upstreamCloses.at(-1), -3, 'the upstream connection is closed while it has not answered');
      const start = Date.now();
      let event: Awaited<ReturnType<typeof requestEvents>>[number] | undefined;
      while (event === undefined && Date.now() - start < 2000) {
        event = (await requestEvents(gw)).find((e) => e.jti === `ws-gone-${how.split(' ')[0]}`);
        if (event === undefined) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(event?.reason, 'client_closed');
      assert.equal(event?.decision, 'allow');
      assert.equal(event?.upstream_status, undefined);
      assert.equal(await upstreamErrors(), errorsBefore, 'no upstream error counted');
    });
  }

  it('a frame the caller sends before the upstream accepts the upgrade (read meanwhile to see it leave) reaches the upstream after the 101', async () => {
    const t = await token();
    const socket = rawUpgrade('/ws/slow', t);
    const payload = Buffer.from('early');
    const mask = Buffer.from([1, 2, 3, 4]);
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ (mask[i % 4] as number))]);
    await new Promise((r) => setTimeout(r, 100));
    socket.write(frame);
    let received = Buffer.alloc(0);
    socket.on('data', (c: Buffer) => {
      received = Buffer.concat([received, c]);
    });
    await until(() => received.includes('echo:early'), 3000);
    assert.match(received.toString('latin1'), /^HTTP\/1\.1 101 /);
    socket.destroy();
  });

  it('pipelining: an upgrade sent behind a request still waiting for its upstream is handled after that answer is written, which is not lost (RFC 9112 §9.3.2)', async () => {
    const t = await token();
    const n = upgrades.length;
    const u = new URL(gw.url);
    const socket = connect(Number(u.port), u.hostname, () =>
      socket.write(`GET /ws/wait HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\n\r\n${wsUpgradeRequest('/ws/chat', t)}`),
    );
    let received = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d]);
    });
    socket.on('error', () => {});
    try {
      await until(() => /HTTP\/1\.1 101 /.test(received.toString('latin1')) || socket.destroyed, 3000);
      const text = received.toString('latin1');
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
      assert.deepEqual(statuses, [200, 101], text);
      assert.match(text, /\{"url":"\/ws\/wait"\}HTTP\/1\.1 101 /);
      assert.equal(upgrades.length, n + 1);
      // The WebSocket then carries messages both ways: a masked text frame "hi" comes back echoed.
      const mask = [1, 2, 3, 4];
      const payload = Buffer.from('hi').map((b, i) => b ^ mask[i % 4]!);
      const from = received.length;
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length, ...mask]), payload]));
      await until(() => received.subarray(from).includes('echo:hi'), 2000);
    } finally {
      socket.destroy();
    }
  });

  it('pipelining: an upgrade sent behind an answer that closes the connection (413, its body sent whole) is never handled (RFC 9112 §9.6)', async () => {
    const t = await token();
    const n = upgrades.length;
    const body = 'x'.repeat(2000);
    const r = await rawHttp(
      gw.url,
      `POST /ws/upload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nContent-Length: ${body.length}\r\n\r\n${body}${wsUpgradeRequest('/ws/chat', t)}`,
    );
    const statuses = [...r.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [413], r);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(upgrades.length, n);
  });

  it('pipelining: an upgrade without a token sent behind a request still waiting is refused 401 after that answer', async () => {
    const t = await token();
    const n = upgrades.length;
    const r = await rawHttp(
      gw.url,
      `GET /ws/wait HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\n\r\n` +
        'GET /ws/chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    const statuses = [...r.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 401], r);
    assert.equal(upgrades.length, n);
  });

  it('closes the connection when the token expires', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ iat: now - 10, exp: now + 2 });
    const c = connectWs(wsUrl('/ws/chat'), { authorization: `Bearer ${t}` });
    await c.opened;
    const closed = await c.closed;
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'token expired');
    assert.ok(Date.now() >= (now + 2) * 1000, 'not before the token expired');
  });

  it('audits the upgrade once with status 101', async () => {
    const t = await token({ jti: 'ws-audit' });
    const c = connectWs(wsUrl('/ws/chat'), { authorization: `Bearer ${t}` });
    await c.opened;
    c.ws.close();
    await c.closed;
    const events = (await requestEvents(gw)).filter((e) => e.jti === 'ws-audit');
    assert.equal(events.length, 1);
    assert.equal(events[0]!.upstream_status, 101);
    assert.equal(events[0]!.decision, 'allow');
  });
});
