/**
 * The forwarder under a caller that goes away: the upstream exchange is given up at once, so a
 * caller cannot pin pooled upstream connections by abandoning large responses, and the request
 * is audited when it ends, not at shutdown.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { until } from '../../helpers/net.ts';
import { baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from '../helpers.ts';

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
