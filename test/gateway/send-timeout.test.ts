/**
 * `limits.send_timeout`: a client that stops reading a large answer is cut once not one byte could
 * be written to it for that long, and its upstream request aborted (the pooled connection freed);
 * a client that reads, however slowly, is not. Real upstream and client sockets on loopback.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type WebSocket, WebSocketServer } from 'ws';
import { MemoryAuditSink } from '../../src/audit/sinks/memory.ts';
import { type ServedGateway, serveGateway } from '../../src/gateway/serve.ts';
import { until } from '../helpers/net.ts';
import {
  baseConfig,
  ISSUER,
  key,
  requestEvents,
  silent,
  startGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
  WS_KEY,
} from './helpers.ts';

const MB = Buffer.alloc(1024 * 1024, 0x61);
/** 64 KiB SSE events, as fast as the gateway takes them. */
const EVENT = `data: ${'e'.repeat(64 * 1024 - 8)}\n\n`;

interface Served {
  /** The upstream's response closed before it was written whole (the gateway aborted its request). */
  aborted: boolean;
  finished: boolean;
  /** res.write returned false at least once: the caller's back-pressure reached the upstream. */
  pushedBack: boolean;
}

describe('gateway: limits.send_timeout', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const served: Served[] = [];
  before(async () => {
    upstream = await startUpstream((req, res) => {
      const s: Served = { aborted: false, finished: false, pushedBack: false };
      served.push(s);
      res.on('finish', () => {
        s.finished = true;
      });
      res.on('close', () => {
        s.aborted = !s.finished;
      });
      let n = 0;
      const sse = req.url === '/events';
      if (sse) res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      else res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(50 * MB.length) });
      const pump = () => {
        while (!res.destroyed && (sse || n < 50)) {
          n++;
          if (!res.write(sse ? EVENT : MB)) {
            s.pushedBack = true;
            res.once('drain', pump);
            return;
          }
        }
        if (!sse) res.end();
      };
      pump();
    });
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        limits: { send_timeout: '1s' },
        routes: [{ id: 'dl', upstream: { url: upstream.url }, auth: 'none' }],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const connections = () => new Promise<number>((resolve) => gw.served.server.getConnections((_e, n) => resolve(n)));

  const open = (path: string): Socket => {
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
    socket.on('error', () => undefined);
    socket.on('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nhost: gw\r\n\r\n`));
    return socket;
  };

  it('attack: a client that never reads a 50 MB answer is cut within send_timeout, its upstream request aborted, audited once as send_timeout', async () => {
    const before = served.length;
    const socket = open('/big');
    socket.pause();
    const start = Date.now();
    await until(() => served.length > before);
    const s = served[before] as Served;
    // 1 s without a byte taken, seen by a check once a second, once the buffers filled. (The client
    // reads nothing, so it cannot see its connection go: the gateway's side is what is measured.)
    await until(() => s.aborted, 6000);
    const after = Date.now() - start;
    assert.ok(after >= 1000 && after < 4000, `cut after ${after} ms`);
    assert.equal(s.finished, false, 'the upstream did not write its answer whole');
    assert.equal(await connections(), 0, 'the gateway holds the connection no more');
    socket.destroy();
    const events = (await requestEvents(gw)).filter((e) => e.route === 'dl' && (e.detail as { closed?: string })?.closed !== undefined);
    assert.equal(events.length, 1, JSON.stringify(events));
    const e = events[0];
    assert.equal(e?.decision, 'allow');
    assert.equal((e?.detail as { closed?: string } | undefined)?.closed, 'send_timeout');
    assert.match(await gw.served.gateway.registry.metrics(), /^tessera_gateway_send_timeouts_total\{kind="http"\} 1$/m);
  });

  it('a slow SSE client that keeps reading is not cut, however long its buffers stay full', async () => {
    const before = served.length;
    const socket = open('/events');
    let received = 0;
    // One read (at most 64 KiB) every 20 ms: far slower than the upstream writes.
    socket.on('data', (d: Buffer) => {
      received += d.length;
      socket.pause();
      setTimeout(() => socket.resume(), 20).unref();
    });
    let closed = false;
    socket.once('close', () => {
      closed = true;
    });
    await until(() => served.length > before);
    const s = served[before] as Served;
    await new Promise((resolve) => setTimeout(resolve, 4000));
    assert.equal(closed, false, 'the reading client was not cut');
    assert.equal(s.aborted, false);
    assert.ok(s.pushedBack, 'the client’s pace held the upstream back');
    assert.ok(received > 1024 * 1024, `read ${received} bytes`);
    socket.destroy();
    await until(() => s.aborted, 3000);
    assert.match(await gw.served.gateway.registry.metrics(), /^tessera_gateway_send_timeouts_total\{kind="http"\} 1$/m);
  });
});

/** The gateway's listener: how many connections it holds. */
const connectionsOf = (served: ServedGateway) => new Promise<number>((resolve) => served.server.getConnections((_e, n) => resolve(n)));

/** A raw client of `url` that sends a GET of `path` (an upgrade when `ws`) and never reads past the answer's head. */
function stalledClient(url: string, path: string, ws = false): { socket: Socket; head: Promise<string>; closed: () => boolean } {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  socket.on('error', () => undefined);
  let closed = false;
  socket.once('close', () => {
    closed = true;
  });
  const upgrade = ws ? `connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${WS_KEY}\r\n` : '';
  socket.on('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nhost: gw\r\n${upgrade}\r\n`));
  // The first chunk (the head, and whatever came with it) is read; nothing after it.
  const head = new Promise<string>((resolve) =>
    socket.once('data', (d: Buffer) => {
      socket.pause();
      resolve(d.toString('latin1').split('\r\n')[0] ?? '');
    }),
  );
  return { socket, head, closed: () => closed };
}

describe('gateway: limits.send_timeout on a WebSocket', () => {
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  const sides: { ws: WebSocket; closed: boolean; flooded: boolean }[] = [];
  before(async () => {
    upstream = await startUpstream();
    wss = new WebSocketServer({ noServer: true });
    upstream.server.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        const side = { ws, closed: false, flooded: false };
        sides.push(side);
        ws.once('close', () => {
          side.closed = true;
        });
        ws.on('error', () => undefined);
        // 64 KiB frames as fast as they are taken, up to 32 MiB buffered here (the flood held back).
        const frame = Buffer.alloc(64 * 1024, 0x62);
        const flood = () => {
          if (ws.readyState !== ws.OPEN) return;
          while (ws.bufferedAmount < 32 * 1024 * 1024) ws.send(frame);
          side.flooded = true;
          setTimeout(flood, 50).unref();
        };
        flood();
      }),
    );
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        limits: { send_timeout: '1s' },
        routes: [{ id: 'ws', upstream: { url: upstream.url }, auth: 'none' }],
      },
    });
  });
  after(async () => {
    await gw.close();
    for (const c of wss.clients) c.terminate();
    wss.close();
    await upstream.close();
  });

  it('attack: a WebSocket client that never reads while its upstream floods it is cut within send_timeout, the upstream side closed, counted as websocket', async () => {
    const client = stalledClient(gw.url, '/feed', true);
    assert.equal(await client.head, 'HTTP/1.1 101 Switching Protocols');
    const start = Date.now();
    await until(() => sides[0]?.flooded === true, 3000);
    const side = sides[0] as (typeof sides)[number];
    // The relay passes the client's back-pressure on: the upstream's frames wait in its own buffer.
    await until(async () => (await connectionsOf(gw.served)) === 0, 6000);
    const cut = Date.now() - start;
    assert.ok(cut >= 1000 && cut < 3500, `client connection cut after ${cut} ms`);
    assert.equal(side.closed, false, 'the upstream side is still open when the client is cut');
    // Ended at once; destroyed after the relay's 2 s grace, its flood never taken (it cannot finish a close).
    await until(() => side.closed, 4000);
    const closed = Date.now() - start - cut;
    assert.ok(closed < 3000, `upstream side closed ${closed} ms after the cut`);
    client.socket.destroy();
    const metrics = await gw.served.gateway.registry.metrics();
    assert.match(metrics, /^tessera_gateway_send_timeouts_total\{kind="websocket"\} 1$/m);
    assert.match(metrics, /^tessera_gateway_send_timeouts_total\{kind="http"\} 0$/m);
  });
});

describe('gateway: limits.send_timeout 0, then 1s by a reload', () => {
  let upstream: Upstream;
  let served: ServedGateway;
  let dir: string;
  let file: string;
  const aborted: boolean[] = [];
  const yaml = (sendTimeout: string) => `
issuers:
  - issuer: ${ISSUER}
    audiences: [https://api.test]
    algorithms: [ES256]
    jwks: { keys: [${JSON.stringify(key.jwk)}] }
dpop: { mode: disabled }
gateway:
  limits: { send_timeout: ${sendTimeout} }
  routes:
    - { id: dl, upstream: { url: ${upstream.url} }, auth: none }
`;
  before(async () => {
    // 50 MiB, as fast as it is taken; \`aborted[i]\`: the i-th answer closed before it was written whole.
    upstream = await startUpstream((_req, res) => {
      const i = aborted.push(false) - 1;
      let finished = false;
      res.on('finish', () => {
        finished = true;
      });
      res.on('close', () => {
        aborted[i] = !finished;
      });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(50 * MB.length) });
      let n = 0;
      const pump = () => {
        while (!res.destroyed && n < 50) {
          n++;
          if (!res.write(MB)) {
            res.once('drain', pump);
            return;
          }
        }
        if (n === 50) res.end();
      };
      pump();
    });
    dir = mkdtempSync(join(tmpdir(), 'tessera-send-timeout-'));
    file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml('0'));
    served = await serveGateway(
      { configFile: file, env: {}, host: '127.0.0.1', port: 0, signals: true },
      { logger: silent, auditSinks: [new MemoryAuditSink()] },
    );
  });
  after(async () => {
    await served?.close({ drainTimeoutMs: 200 });
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let first: ReturnType<typeof stalledClient>;

  it('send_timeout: 0 never cuts: a client that never reads a 50 MB answer is still connected after 3 s, its upstream request still open', async () => {
    first = stalledClient(served.url, '/big');
    assert.equal(await first.head, 'HTTP/1.1 200 OK');
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal(first.closed(), false);
    assert.equal(await connectionsOf(served), 1, 'the gateway still holds the connection');
    assert.deepEqual(aborted, [false], 'the upstream request is still open (held back, not finished)');
    assert.match(await served.gateway.registry.metrics(), /^tessera_gateway_send_timeouts_total\{kind="http"\} 0$/m);
  });

  it('a reload (SIGHUP) to send_timeout: 1s applies at once: the connection stalled since before it is cut within about a second and a check, and so is a new one', async () => {
    writeFileSync(file, yaml('1s'));
    const reloaded = served.gateway.state;
    process.kill(process.pid, 'SIGHUP');
    await once(process, 'SIGHUP');
    await until(() => served.gateway.state !== reloaded, 5000);
    const at = Date.now();
    await until(() => aborted[0] === true, 5000);
    const after = Date.now() - at;
    assert.ok(after < 3000, `the stalled connection cut ${after} ms after the reload`);
    first.socket.destroy();
    const second = stalledClient(served.url, '/big');
    assert.equal(await second.head, 'HTTP/1.1 200 OK');
    await until(() => aborted[1] === true, 6000);
    second.socket.destroy();
    assert.equal(await connectionsOf(served), 0);
    assert.match(await served.gateway.registry.metrics(), /^tessera_gateway_send_timeouts_total\{kind="http"\} 2$/m);
  });
});
