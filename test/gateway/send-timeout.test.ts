/**
 * `limits.send_timeout`: a client that stops reading a large answer is cut once not one byte could
 * be written to it for that long, and its upstream request aborted (the pooled connection freed);
 * a client that reads, however slowly, is not. Real upstream and client sockets on loopback.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { until } from '../helpers/net.ts';
import { baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

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
