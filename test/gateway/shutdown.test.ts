/**
 * Graceful shutdown: in-flight requests finish, streams are closed cleanly (SSE ends, WebSocket
 * gets 1001), the audit queue is flushed, and the whole of it takes no longer than drain_timeout.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { MemoryAuditSink } from '../../src/audit/sinks/memory.ts';
import { createGateway } from '../../src/gateway/gateway.ts';
import { serveGateway } from '../../src/gateway/serve.ts';
import { rawHttp, until } from '../helpers/net.ts';
import { spawnCollecting } from '../helpers/spawned.ts';
import { baseConfig, capturedLog, parse, STATIC_TOKEN, silent, startGateway, startUpstream, token, wsUpgradeRequest } from './helpers.ts';

/** The whole body of a GET (a stream's, once the gateway ends it). */
function bodyOf(url: string, headers: Record<string, string>): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    request(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

describe('gateway: graceful shutdown', () => {
  it('drains in-flight requests and closes streams cleanly', async () => {
    const wss = new WebSocketServer({ noServer: true });
    const upstream = await startUpstream((req, res) => {
      if (req.url === '/slow') {
        setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('done'), 400);
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
    });
    const t = await token();
    const auth = { authorization: `Bearer ${t}` };

    const slow = fetch(`${gw.url}/slow`, { headers: auth });
    const sseEnded = bodyOf(`${gw.url}/events`, auth);
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, { headers: auth });
    const wsClosed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    await new Promise((r) => setTimeout(r, 100));

    const closing = gw.served.close({ drainTimeoutMs: 3000 });
    assert.equal(await wsClosed, 1001);
    assert.equal(await sseEnded, 'data: hello\n\n');
    const res = await slow;
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'done');
    await closing;
    const kinds = gw.audit.events.filter((e) => e.kind === 'gateway.request').map((e) => e.upstream_status);
    assert.deepEqual(kinds.sort(), [101, 200, 200]);
    wss.close();
    await upstream.close();
  });
});

describe('gateway: shutdown of streams nobody’s token ends', () => {
  it('closes a WebSocket (1001) and ends an event stream on a public route at once, instead of hanging until the caller leaves', async () => {
    const wss = new WebSocketServer({ noServer: true });
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' },
          { id: 'static', match: { path_prefix: '/static' }, upstream: { url: upstream.url }, auth: 'static', rules: [{}] },
        ],
      },
    });
    const sse = (path: string, headers: Record<string, string> = {}) => bodyOf(`${gw.url}${path}`, headers);
    const publicEvents = sse('/public/events');
    const staticEvents = sse('/static/events', { authorization: `Bearer ${STATIC_TOKEN}` });
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/public/ws`);
    const wsClosed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    await until(() => upstream.seen.length === 2);
    await new Promise((r) => setTimeout(r, 100));

    const started = performance.now();
    const closing = gw.served.close({ drainTimeoutMs: 5000 });
    assert.equal(await wsClosed, 1001);
    assert.equal(await publicEvents, 'data: hello\n\n');
    assert.equal(await staticEvents, 'data: hello\n\n');
    await closing;
    const ms = performance.now() - started;
    assert.ok(ms < 3000, `shutdown took ${Math.round(ms)} ms`);
    ws.terminate();
    wss.close();
    await upstream.close();
  });
});

describe('gateway: shutdown is bounded by drain_timeout', () => {
  it('waits drain_timeout once for requests of the gateway and of the handler in front of it, not one after the other', async () => {
    // Neither ever answers: the upstream holds the gateway's request, the handler in front (the
    // token service in `tessera serve`) holds its own.
    const upstream = await startUpstream(() => undefined);
    const served = await serveGateway(
      {
        config: parse({
          ...baseConfig(),
          gateway: {
            routes: [{ id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'none' }],
            drain_timeout: '1s',
          },
        }),
        host: '127.0.0.1',
        port: 0,
        before: (req) => req.url?.startsWith('/oauth2/') === true,
      },
      { logger: silent },
    );
    try {
      const settled = (url: string) =>
        fetch(`${served.url}${url}`).then(
          (res) => res.status,
          () => 'cut',
        );
      const gatewayRequest = settled('/api/slow');
      const handlerRequest = settled('/oauth2/slow');
      await until(() => served.gateway.inflight === 1 && upstream.seen.length === 1);

      const start = performance.now();
      await served.close();
      const took = performance.now() - start;
      assert.ok(took >= 900, `waited drain_timeout for the requests to finish (${Math.round(took)} ms)`);
      assert.ok(took < 1600, `closed within drain_timeout and a margin, not twice drain_timeout (${Math.round(took)} ms)`);
      // Then both are cut: the gateway answers 502 for the upstream exchange it gave up, the
      // handler's connection is closed.
      assert.deepEqual(await Promise.all([gatewayRequest, handlerRequest]), [502, 'cut']);
    } finally {
      await served.close();
      await upstream.close();
    }
  });
});

describe('gateway: one deadline for the drain and the audit events', () => {
  it('a request in flight for all of drain_timeout and a hung audit store: close() ends after drain_timeout and the 1 s audit floor, not drain_timeout twice, and logs the events dropped', async () => {
    const upstream = await startUpstream(() => undefined);
    const { lines: out, logger } = capturedLog();
    const served = await serveGateway(
      {
        config: parse({
          ...baseConfig(),
          gateway: {
            routes: [{ id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'none' }],
            drain_timeout: '2s',
          },
        }),
        host: '127.0.0.1',
        port: 0,
      },
      // The store does not answer (a table locked by another session): every write hangs.
      { logger, auditSinks: [{ write: () => new Promise<void>(() => {}) }] },
    );
    try {
      const inFlight = fetch(`${served.url}/api/slow`).then((r) => r.status);
      await until(() => served.gateway.inflight === 1 && upstream.seen.length === 1);
      const start = performance.now();
      await served.close();
      const took = performance.now() - start;
      assert.ok(took >= 2900, `the requests had drain_timeout, the audit events the floor after it (${Math.round(took)} ms)`);
      assert.ok(took < 3600, `closed within drain_timeout and the audit floor, not drain_timeout twice (${Math.round(took)} ms)`);
      assert.equal(await inFlight, 502);
      const lost = out.filter((l) => l.event === 'audit_events_lost');
      assert.equal(lost.length, 1, JSON.stringify(out));
      assert.equal(lost[0]?.events, 1);
    } finally {
      await served.close();
      await upstream.close();
    }
  });
});

describe('gateway: a reload while draining', () => {
  it('is refused: the requests being drained keep the configuration in force, and the route does not change under them', async () => {
    const upstream = await startUpstream((_req, res) => {
      setTimeout(() => res.end('done'), 300);
    });
    const config = (prefix: string) =>
      parse({
        ...baseConfig(),
        gateway: { routes: [{ id: 'pub', match: { path_prefix: prefix }, upstream: { url: upstream.url }, auth: 'none' as const }] },
      });
    const served = await serveGateway({ config: config('/one'), host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      const slow = fetch(`${served.url}/one/x`);
      await until(() => upstream.seen.length === 1);
      const before = served.gateway.state;
      const closing = served.close({ drainTimeoutMs: 3000 });
      const r = served.reload(config('/two'));
      assert.equal(r.ok, false);
      assert.ok(!r.ok && r.error.issues[0]?.message.includes('shutting down'));
      assert.equal(served.gateway.state, before, 'the compiled configuration was not swapped');
      assert.equal((await slow).status, 200);
      await closing;
    } finally {
      await served.close();
      await upstream.close();
    }
  });
});

describe('gateway: a shutdown that fails', () => {
  it('exits 1 with one log line, not an unhandled rejection and its stack trace', async () => {
    const root = new URL('../../', import.meta.url).pathname;
    const script = `
      import { serveGateway } from '${root}src/gateway/serve.ts';
      import { baseConfig, parse } from '${root}test/gateway/helpers.ts';
      const config = parse({ ...baseConfig(), gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] }] } });
      await serveGateway({ config, host: '127.0.0.1', port: 0, signals: true, onClose: async () => { throw new Error('the store will not close'); } });
      process.stderr.write('ready\\n');
    `;
    const run = spawnCollecting(process.execPath, ['--input-type=module', '-e', script]);
    await until(() => run.err.includes('ready'), 10_000);
    run.child.kill('SIGTERM');
    assert.deepEqual(await run.exited, [1, null]);
    assert.match(run.out, /"event":"shutdown_failed"/);
    assert.doesNotMatch(run.err, /the store will not close|\n\s+at /, 'no unhandled rejection, no stack trace');
  });
});

describe('gateway: a WebSocket upgrade during shutdown', () => {
  it('upgrade during shutdown: a valid upgrade arriving while the gateway drains is answered 503 with Retry-After (retry elsewhere), not 400 request_upgrade_refused, which clients read as permanent', async () => {
    const wss = new WebSocketServer({ noServer: true });
    const upstream = await startUpstream((_req, res) => {
      setTimeout(() => res.end('done'), 600);
    });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    // A gateway mounted in a server of the host's own, whose listener stays open while the gateway drains.
    const audit = new MemoryAuditSink();
    const gateway = createGateway(
      parse({ ...baseConfig(), gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'static', rules: [{}] }] } }),
      { logger: silent, auditSinks: [audit] },
    );
    const server = createServer(gateway.handleRequest).on('upgrade', gateway.handleUpgrade);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const slow = fetch(`${url}/slow`, { headers: { authorization: `Bearer ${STATIC_TOKEN}` } });
      await until(() => upstream.seen.length === 1 || gateway.inflight === 1);
      const closing = gateway.close({ drainTimeoutMs: 3000 });
      const answer = await rawHttp(url, wsUpgradeRequest('/ws', STATIC_TOKEN));
      assert.match(answer, /^HTTP\/1\.1 503 /, answer);
      assert.match(answer, /\r\nretry-after: \d+\r\n/i, answer);
      assert.match(answer, /temporarily_unavailable/);
      assert.doesNotMatch(answer, /request_upgrade_refused|does not accept this protocol upgrade/);
      assert.equal((await slow).status, 200);
      await closing;
      const refused = audit.events.find((e) => e.kind === 'gateway.request' && e.path === '/ws');
      assert.equal(refused?.reason, 'gateway_shutting_down');
      assert.equal(wss.clients.size, 0, 'nothing reached the upstream');
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      wss.close();
      await upstream.close();
    }
  });
});

describe('gateway: a stream that starts while the gateway drains', () => {
  it('an event stream whose response starts during the drain is ended at once, not held until drain_timeout', async () => {
    const upstream = await startUpstream((req, res) => {
      if (req.url === '/slow') {
        setTimeout(() => res.end('done'), 400);
        return;
      }
      // An SSE stream that never ends by itself, whose head comes after the drain began.
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: first\n\n');
      }, 150);
    });
    const audit = new MemoryAuditSink();
    const gateway = createGateway(
      parse({ ...baseConfig(), gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'static', rules: [{}] }] } }),
      { logger: silent, auditSinks: [audit] },
    );
    const server = createServer(gateway.handleRequest);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const slow = fetch(`${url}/slow`, { headers: { authorization: `Bearer ${STATIC_TOKEN}` } });
      await until(() => gateway.inflight === 1);
      const started = Date.now();
      const closing = gateway.close({ drainTimeoutMs: 10_000 });
      const events = await fetch(`${url}/events`, { headers: { authorization: `Bearer ${STATIC_TOKEN}` } });
      assert.equal(events.status, 200);
      await events.text(); // ends: the gateway closed the stream
      assert.equal((await slow).status, 200);
      await closing;
      assert.ok(Date.now() - started < 5000, `drained in ${Date.now() - started} ms, not at drain_timeout`);
      const closed = audit.events.find((e) => e.kind === 'gateway.stream_closed' || (e.kind === 'gateway.request' && e.path === '/events'));
      assert.ok(closed, 'the stream is audited');
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await upstream.close();
    }
  });
});

describe('gateway: a WebSocket that opens while the gateway drains', () => {
  it('a WebSocket decided before the shutdown whose upstream accepts it during the drain is closed at once (1001), not relayed until drain_timeout', async () => {
    const wss = new WebSocketServer({ noServer: true });
    const upstream = await startUpstream((_req, res) => {
      setTimeout(() => res.end('done'), 3000);
    });
    // Slow to accept: the upgrade was decided before the drain began, its 101 comes during it.
    upstream.server.on('upgrade', (req, socket, head) => setTimeout(() => wss.handleUpgrade(req, socket, head, () => undefined), 300));
    const audit = new MemoryAuditSink();
    const gateway = createGateway(
      parse({ ...baseConfig(), gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'static', rules: [{}] }] } }),
      { logger: silent, auditSinks: [audit] },
    );
    const server = createServer(gateway.handleRequest).on('upgrade', gateway.handleUpgrade);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const auth = { authorization: `Bearer ${STATIC_TOKEN}` };
    try {
      const slow = fetch(`${url}/slow`, { headers: auth });
      await until(() => gateway.inflight === 1);
      const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`, { headers: auth });
      const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
      await until(() => gateway.inflight === 2);
      const started = Date.now();
      const closing = gateway.close({ drainTimeoutMs: 10_000 });
      assert.equal(await closed, 1001);
      assert.ok(Date.now() - started < 1500, `closed after ${Date.now() - started} ms, while a plain request held the drain`);
      assert.equal((await slow).status, 200);
      await closing;
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      wss.close();
      await upstream.close();
    }
  });
});

describe('gateway: shutdown of an event stream answered to an upgrade', () => {
  it('an upstream that answers a WebSocket upgrade with an event stream has it ended at shutdown, not relayed past it', async () => {
    const sockets: Duplex[] = [];
    const upstream = await startUpstream();
    upstream.server.on('upgrade', (_req, socket: Duplex) => {
      socket.on('error', () => socket.destroy());
      socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: hello\n\n');
      sockets.push(socket);
    });
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'static', rules: [{}] }] },
    });
    const u = new URL(gw.url);
    const caller = connect(Number(u.port), u.hostname, () => caller.write(wsUpgradeRequest('/events', STATIC_TOKEN)));
    let got = '';
    caller.on('data', (d: Buffer) => {
      got += d.toString();
    });
    const closed = once(caller, 'close');
    try {
      await until(() => got.includes('data: hello'));
      const closing = gw.served.close({ drainTimeoutMs: 3000 });
      const ended = await Promise.race([closed.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 2000))]);
      assert.ok(ended, 'the caller connection is closed');
      await closing;
    } finally {
      caller.destroy();
      for (const s of sockets) s.destroy();
      await upstream.close();
    }
  });
});
