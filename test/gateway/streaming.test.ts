/**
 * Streaming through the gateway: SSE events reach the caller as the upstream produces them, and
 * a stream is ended by the gateway when its token is revoked or expires; so is any other exchange
 * still in flight (a long download with a Content-Length, a long upload).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { until } from '../helpers/net.ts';
import { baseConfig, capturedLog, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

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

/** The one warn line saying the gateway cut the stream of the audit event `e`: route, reason and request id, never the token. */
function assertStreamCutLogged(log: Record<string, unknown>[], e: { request_id?: string; reason?: string } | undefined, t: string): void {
  const cut = log.filter((l) => l.event === 'stream_closed' && l.request_id === e?.request_id);
  assert.equal(cut.length, 1, JSON.stringify(log));
  assert.equal(cut[0]?.level, 40, 'a warning');
  assert.equal(cut[0]?.reason_id, e?.reason);
  assert.equal(cut[0]?.route, 'sse');
  const text = JSON.stringify(log);
  assert.ok(!text.includes(t) && !text.includes(t.split('.')[2] as string), 'no token in the log');
}

describe('gateway: SSE and streamed responses', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const revocations = new RevocationList();
  const log = capturedLog();
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
      { revocation: revocations, logger: log.logger },
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
    assertStreamCutLogged(log.lines, closed.at(-1), t);
    // The next request with the revoked token is refused.
    const again = await fetch(`${gw.url}/events/finite`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(again.status, 401);
  });

  it('revocation race: a grant revoked after the decision but before the upstream starts its stream refuses the request', async () => {
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
    // Nothing of the stream was relayed: the request itself is refused, as a revoked token is.
    assert.equal(sse.status, 401);
    assert.equal(sse.events.length, 0);
    await until(() => upstreamClosed > closedBefore);
    const own = (await requestEvents(gw)).filter((e) => e.jti === 'j-late');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'token_revoked']],
    );
  });

  it('ends an SSE stream when its token expires (once past the clock skew the verifier allows)', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Expired 28 s ago: still accepted under the issuer's 30 s clock skew, refused from now + 2. (At
    // 29 s the request had to be decided within the second `now` was read in, which a loaded
    // machine sometimes misses.)
    const t = await token({ iat: now - 40, exp: now - 28 });
    const sse = await openSse(`${gw.url}/events/forever`, `Bearer ${t}`);
    assert.equal(sse.status, 200);
    const start = Date.now();
    await sse.ended;
    assert.ok(Date.now() - start < 3500);
    await gw.served.gateway.audit.flush();
    const closed = gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed').at(-1);
    assert.equal(closed?.reason, 'token_expired');
    assertStreamCutLogged(log.lines, closed, t);
  });
});

/** A download that outlives its token: what the caller got, and how its response ended. */
interface Download {
  status: number;
  length: number;
  received: () => number;
  /** Resolves with `complete` once the response ended or was cut. */
  ended: Promise<{ complete: boolean }>;
}

function openDownload(url: string, authorization: string): Promise<Download> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization } }, (res) => {
      let received = 0;
      res.on('data', (d: Buffer) => {
        received += d.length;
      });
      const ended = new Promise<{ complete: boolean }>((done) => {
        res.on('end', () => done({ complete: res.complete }));
        res.on('close', () => done({ complete: res.complete }));
        res.on('error', () => done({ complete: false }));
      });
      resolve({ status: res.statusCode ?? 0, length: Number(res.headers['content-length']), received: () => received, ended });
    });
    req.on('error', reject);
    req.end();
  });
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
}

describe('gateway: requests in flight when their token is revoked or expires', () => {
  const SIZE = 1_000_000;
  const FIRST = 10_000;
  let server: Server;
  let upstreamUrl: string;
  let gw: TestGateway;
  const revocations = new RevocationList();
  /** Upstream requests by path: how much of the body arrived, and whether the gateway gave them up. */
  const upstreamSeen = new Map<string, { bodyBytes: number; aborted: boolean }>();

  before(async () => {
    // A slow upstream: a download sends part of its Content-Length body and then waits; an upload
    // is read as it comes and answered only once complete.
    server = createServer((req: IncomingMessage, res) => {
      const seen = { bodyBytes: 0, aborted: false };
      upstreamSeen.set(req.url ?? '', seen);
      res.on('close', () => {
        if (!res.writableFinished) seen.aborted = true;
      });
      req.on('data', (c: Buffer) => {
        seen.bodyBytes += c.length;
      });
      if (req.url === '/slow') {
        setTimeout(() => res.writeHead(200, { 'content-length': '4' }).end('done'), 1500);
        return;
      }
      if (req.url?.startsWith('/download')) {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
        res.write(Buffer.alloc(FIRST, 1));
        return;
      }
      req.on('end', () => res.writeHead(200, { 'content-length': '2' }).end('ok'));
    });
    server.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    upstreamUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: {
          routes: [{ id: 'files', upstream: { url: upstreamUrl }, auth: 'jwt', rules: [{ scopes: ['api:read'] }] }],
        },
      },
      { revocation: revocations },
    );
  });
  after(async () => {
    await gw.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  async function revokedDenies(): Promise<number> {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    return Number(/^tessera_gateway_denies_total\{reason="token_revoked"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  }

  async function closedEvent(jti: string) {
    await gw.served.gateway.audit.flush();
    return gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed' && e.jti === jti).at(-1);
  }

  it('revoked download: a response with a Content-Length still in flight is cut when its grant is revoked, and the upstream request aborted', async () => {
    const t = await token({ grant_id: 'g-dl', jti: 'j-dl' });
    const dl = await openDownload(`${gw.url}/download/revoked`, `Bearer ${t}`);
    assert.equal(dl.status, 200);
    assert.equal(dl.length, SIZE);
    await until(() => dl.received() >= FIRST);
    revocations.apply({ grantIds: ['g-dl'] });
    const end = await within(dl.ended, 2000, 'the download outlived its revocation');
    assert.equal(end.complete, false, 'the caller can tell the body is incomplete');
    assert.ok(dl.received() < SIZE, `got ${dl.received()} of ${SIZE} bytes`);
    await until(() => upstreamSeen.get('/download/revoked')?.aborted === true);
    const closed = await closedEvent('j-dl');
    assert.equal(closed?.reason, 'token_revoked');
    const events = await requestEvents(gw);
    assert.equal(events.find((e) => e.jti === 'j-dl')?.detail?.closed, 'token_revoked');
    // The next request with the revoked token is refused.
    const again = await fetch(`${gw.url}/download/again`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(again.status, 401);
  });

  it('expired download: a response with a Content-Length still in flight is cut when its token expires', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ iat: now - 40, exp: now - 28, jti: 'j-dl-exp' }); // 2 s inside the 30 s skew (see the SSE test above)
    const dl = await openDownload(`${gw.url}/download/expired`, `Bearer ${t}`);
    assert.equal(dl.status, 200);
    const end = await within(dl.ended, 3500, 'the download outlived its token');
    assert.equal(end.complete, false);
    assert.ok(dl.received() < SIZE);
    await until(() => upstreamSeen.get('/download/expired')?.aborted === true);
    assert.equal((await closedEvent('j-dl-exp'))?.reason, 'token_expired');
  });

  it('a token past its exp but inside the clock skew is not cut while the verifier would still accept it', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ iat: now - 60, exp: now - 5, jti: 'j-skew' });
    const res = await fetch(`${gw.url}/slow`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'done');
    assert.equal(await closedEvent('j-skew'), undefined);
  });

  it('revoked upload: a request body still being sent is cut when its grant is revoked, and the upstream request aborted', async () => {
    const t = await token({ grant_id: 'g-up', jti: 'j-up' });
    const deniesBefore = await revokedDenies();
    const outcome = new Promise<{ status?: number; headers?: IncomingMessage['headers']; error?: string }>((resolve) => {
      const req = request(`${gw.url}/upload`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${t}`, 'content-length': String(SIZE), 'content-type': 'application/octet-stream' },
      });
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, headers: res.headers });
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? 'error' }));
      req.write(Buffer.alloc(FIRST, 2));
    });
    await until(() => (upstreamSeen.get('/upload')?.bodyBytes ?? 0) >= FIRST);
    revocations.apply({ grantIds: ['g-up'] });
    const got = await within(outcome, 2000, 'the upload outlived its revocation');
    // The caller is answered (it is not sending at that moment) and the connection is not kept
    // for the rest of a body nobody will read.
    assert.equal(got.error, undefined);
    assert.equal(got.status, 401);
    assert.match(String(got.headers?.['www-authenticate']), /invalid_token/);
    assert.equal(got.headers?.connection, 'close');
    await until(() => upstreamSeen.get('/upload')?.aborted === true);
    assert.ok((upstreamSeen.get('/upload')?.bodyBytes ?? 0) < SIZE);
    // Cut before its response: the request's own event is the refusal, counted once.
    const events = await requestEvents(gw);
    const own = events.filter((e) => e.jti === 'j-up');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'token_revoked']],
    );
    assert.equal(await closedEvent('j-up'), undefined);
    assert.equal((await revokedDenies()) - deniesBefore, 1);
  });
});
