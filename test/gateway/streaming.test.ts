/**
 * Streaming through the gateway: SSE events reach the caller as the upstream produces them, and
 * a stream is ended by the gateway when its token is revoked or expires.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { until } from '../helpers/net.ts';
import { baseConfig, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

interface Sse {
  status: number;
  events: { at: number; data: string }[];
  ended: Promise<void>;
  close(): void;
}

/** Open an SSE stream and record when each event arrives. */
function openSse(url: string, authorization: string): Promise<Sse> {
  return new Promise((resolve, reject) => {
    const events: { at: number; data: string }[] = [];
    const req = request(url, { headers: { authorization, accept: 'text/event-stream' } }, (res) => {
      let buf = '';
      const ended = new Promise<void>((done) => {
        res.on('end', done);
        res.on('close', done);
      });
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let i = buf.indexOf('\n\n');
        while (i >= 0) {
          events.push({ at: Date.now(), data: buf.slice(0, i).replace(/^data: /, '') });
          buf = buf.slice(i + 2);
          i = buf.indexOf('\n\n');
        }
      });
      resolve({ status: res.statusCode ?? 0, events, ended, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('gateway: SSE and streamed responses', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const revocations = new RevocationList();
  let upstreamClosed = 0;
  before(async () => {
    upstream = await startUpstream((req, res) => {
      if (req.url === '/events/late') {
        // An upstream slow to start its stream (an LLM thinking before its first token).
        const start = setTimeout(() => {
          res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
          const timer = setInterval(() => res.write('data: late\n\n'), 100);
          res.on('close', () => clearInterval(timer));
        }, 300);
        res.on('close', () => {
          clearTimeout(start);
          upstreamClosed++;
        });
        return;
      }
      if (req.url?.startsWith('/events')) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        let n = 0;
        const timer = setInterval(() => {
          res.write(`data: ${n++}\n\n`);
          if (n === 5 && req.url === '/events/finite') {
            clearInterval(timer);
            res.end();
          }
        }, 100);
        res.on('close', () => {
          clearInterval(timer);
          upstreamClosed++;
        });
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first;');
      setTimeout(() => res.end('second'), 200);
    });
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: {
          routes: [{ id: 'sse', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ scopes: ['api:read'] }] }],
        },
      },
      { revocation: revocations },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('delivers SSE events before the stream ends', async () => {
    const t = await token();
    const start = Date.now();
    const sse = await openSse(`${gw.url}/events/finite`, `Bearer ${t}`);
    assert.equal(sse.status, 200);
    await until(() => sse.events.length >= 1);
    const firstAt = sse.events[0]!.at - start;
    await sse.ended;
    const lastAt = sse.events.at(-1)!.at - start;
    assert.equal(sse.events.length, 5);
    assert.deepEqual(
      sse.events.map((e) => e.data),
      ['0', '1', '2', '3', '4'],
    );
    assert.ok(lastAt - firstAt >= 300, `events were spread over time (first ${firstAt} ms, last ${lastAt} ms)`);
  });

  it('passes a chunked response through as it is produced', async () => {
    const t = await token();
    const chunks: { at: number; text: string }[] = [];
    await new Promise<void>((resolve, reject) => {
      request(`${gw.url}/chunked`, { headers: { authorization: `Bearer ${t}` } }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (d: string) => chunks.push({ at: Date.now(), text: d }));
        res.on('end', resolve);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(chunks.map((c) => c.text).join(''), 'first;second');
    assert.ok(chunks.length >= 2);
    assert.ok(chunks.at(-1)!.at - chunks[0]!.at >= 150);
  });

  it('ends an SSE stream when its grant is revoked, and tells the upstream', async () => {
    const t = await token({ grant_id: 'g-sse', jti: 'j-sse' });
    const closedBefore = upstreamClosed;
    const sse = await openSse(`${gw.url}/events/forever`, `Bearer ${t}`);
    await until(() => sse.events.length >= 2);
    revocations.apply({ grantIds: ['g-sse'] });
    await sse.ended;
    const count = sse.events.length;
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(sse.events.length, count, 'no events after revocation');
    await until(() => upstreamClosed > closedBefore);
    await gw.served.gateway.audit.flush();
    const closed = gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed');
    assert.equal(closed.at(-1)?.reason, 'token_revoked');
    assert.equal(closed.at(-1)?.jti, 'j-sse');
    // The next request with the revoked token is refused.
    const again = await fetch(`${gw.url}/events/finite`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(again.status, 401);
  });

  it('revocation race: a grant revoked after the decision but before the upstream starts its stream ends the stream', async () => {
    const t = await token({ grant_id: 'g-late', jti: 'j-late' });
    const closedBefore = upstreamClosed;
    const opening = openSse(`${gw.url}/events/late`, `Bearer ${t}`);
    await new Promise((r) => setTimeout(r, 100));
    revocations.apply({ grantIds: ['g-late'] });
    const sse = await opening;
    await Promise.race([
      sse.ended,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the stream outlived its revocation')), 2000)),
    ]);
    assert.equal(sse.events.length, 0);
    await until(() => upstreamClosed > closedBefore);
    await gw.served.gateway.audit.flush();
    const closed = gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed');
    assert.equal(closed.at(-1)?.jti, 'j-late');
    assert.equal(closed.at(-1)?.reason, 'token_revoked');
  });

  it('ends an SSE stream when its token expires', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ iat: now - 10, exp: now + 1 });
    const sse = await openSse(`${gw.url}/events/forever`, `Bearer ${t}`);
    assert.equal(sse.status, 200);
    const start = Date.now();
    await sse.ended;
    assert.ok(Date.now() - start < 3500);
    await gw.served.gateway.audit.flush();
    assert.equal(gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed').at(-1)?.reason, 'token_expired');
  });
});
