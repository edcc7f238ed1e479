/**
 * Graceful shutdown: in-flight requests finish, streams are closed cleanly (SSE ends, WebSocket
 * gets 1001), the audit queue is flushed.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { baseConfig, startGateway, startUpstream, token } from './helpers.ts';

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
    const sseEnded = new Promise<string>((resolve, reject) => {
      request(`${gw.url}/events`, { headers: auth }, (res) => {
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
