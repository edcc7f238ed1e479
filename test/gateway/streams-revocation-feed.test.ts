/**
 * The revocation feed the gateway watches its streams with may be the application's (createGateway's
 * `revocation`): one whose `isRevoked` throws, answers a promise or anything but a boolean gives no
 * answer. The stream registry must hold up as the verifier does (6fd4fdd): a stream whose token it
 * cannot check is closed as `revocation_unavailable` (fail closed, not as revoked), `add` does not
 * throw in the middle of a request, the feed's listener loop is not broken for the listeners after
 * the registry's, and a promise's rejection is handled.
 */
import assert from 'node:assert/strict';
import { type IncomingMessage, request } from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Principal } from '../../src/core/verify/principal.ts';
import { type Revocation, RevocationList, type RevocationSubject } from '../../src/core/verify/revocation.ts';
import { type RevocationFeed, type StreamCloseReason, StreamRegistry, type TrackedStream } from '../../src/gateway/streams.ts';
import { baseConfig, mcpRoute, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const principal = (subject: string) =>
  ({ kind: 'jwt', issuer: 'https://issuer.test', subject, expiresAt: Number.POSITIVE_INFINITY, issuedAt: 1 }) as unknown as Principal;

/** A feed answering with `answer` for every token, announcing changes as a RevocationList does. */
function feed(answer: (t: RevocationSubject) => unknown): RevocationFeed & { apply(r: Revocation): void } {
  const list = new RevocationList();
  return {
    get epoch() {
      return list.epoch;
    },
    isRevoked: (t) => answer(t) as boolean,
    subscribe: (l) => list.subscribe(l),
    apply: (r) => list.apply(r),
  };
}

function stream(closed: StreamCloseReason[], subject = 'alice'): TrackedStream {
  return { kind: 'websocket', principal: principal(subject), close: (r) => closed.push(r) };
}

describe('gateway streams: a revocation feed that gives no answer', () => {
  const registries: StreamRegistry[] = [];
  afterEach(() => {
    for (const r of registries.splice(0)) r.stop();
  });
  const registry = (revocation: RevocationFeed) => {
    const r = new StreamRegistry({ clock: Date.now, revocation });
    registries.push(r);
    return r;
  };

  it('attack: a feed that throws (an error quoting the token): add does not throw, the stream is closed as revocation_unavailable', () => {
    const r = registry(
      feed(() => {
        throw new SyntaxError('Unexpected token eyJhbGciOi');
      }),
    );
    const closed: StreamCloseReason[] = [];
    assert.doesNotThrow(() => r.add(stream(closed)));
    assert.deepEqual(closed, ['revocation_unavailable']);
  });

  it('attack: a feed that throws on a revocation: apply does not throw, listeners after the registry are told, the streams are closed as revocation_unavailable', () => {
    let failing = false;
    const f = feed(() => {
      if (failing) throw new TypeError('store down');
      return false;
    });
    const r = registry(f);
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed, 'alice'));
    r.add(stream(closed, 'bob'));
    assert.deepEqual(closed, []);
    const told: Revocation[] = [];
    f.subscribe((rev) => told.push(rev));
    failing = true;
    assert.doesNotThrow(() => f.apply({ grantIds: ['g1'] }));
    assert.equal(told.length, 1);
    assert.deepEqual(closed, ['revocation_unavailable', 'revocation_unavailable']);
  });

  it('an async feed (a promise of false) does not count as revoked: the stream is closed as revocation_unavailable, not token_revoked', () => {
    const r = registry(feed(async () => false));
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed));
    assert.deepEqual(closed, ['revocation_unavailable']);
  });

  it('a feed whose promise rejects: the rejection is handled (no unhandledRejection)', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const r = registry(feed(async () => Promise.reject(new Error('store down'))));
      const closed: StreamCloseReason[] = [];
      r.add(stream(closed));
      assert.deepEqual(closed, ['revocation_unavailable']);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a feed answering undefined (a check that forgot to return) keeps no stream open unchecked', () => {
    const r = registry(feed(() => undefined));
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed));
    assert.deepEqual(closed, ['revocation_unavailable']);
  });

  it('true and false are answers: a revoked token is closed as token_revoked, another kept', () => {
    const f = feed((t) => t.subject === 'mallory');
    const r = registry(f);
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed, 'alice'));
    r.add(stream(closed, 'mallory'));
    f.apply({});
    assert.deepEqual(closed, ['token_revoked']);
  });
});

describe('gateway: a request in flight whose revocation the feed cannot answer', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let failing = false;
  /** The application's feed: a RevocationList whose check throws while its store is down. */
  class Failing extends RevocationList {
    override isRevoked(t: RevocationSubject): boolean {
      if (failing) throw new TypeError('store down');
      return super.isRevoked(t);
    }
  }
  const revocations = new Failing();
  let heads = 0;

  before(async () => {
    upstream = await startUpstream((_req, res, body) => {
      const text = JSON.stringify({ jsonrpc: '2.0', id: 7, result: { seen: body.length } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    });
    upstream.server.on('request', () => {
      heads++;
    });
    gw = await startGateway(
      { ...baseConfig(), gateway: { routes: [mcpRoute(upstream.url, [{ scopes: ['api:read'] }])] } },
      { revocation: revocations },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('attack: a revocation applied while its body trickles in, the feed throwing: 503 revocation_unavailable with Retry-After, nothing upstream', async () => {
    const call = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'transfer', arguments: {} } });
    const t = await token({ jti: 'j-feed-down' });
    const headsBefore = heads;
    let rest!: () => void;
    const outcome = new Promise<{ status: number; headers: IncomingMessage['headers']; body: string } | { error: string }>((resolve) => {
      const req = request(`${gw.url}/mcp`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${t}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'content-length': String(Buffer.byteLength(call)),
        },
      });
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? 'error' }));
      req.write(call.slice(0, 20));
      rest = () => req.end(call.slice(20));
    });
    await new Promise((r) => setTimeout(r, 200));
    failing = true;
    try {
      assert.doesNotThrow(() => revocations.apply({ grantIds: ['g-other'] }));
      rest();
      const got = await outcome;
      assert.ok(!('error' in got), `the request failed: ${JSON.stringify(got)}`);
      assert.equal(got.status, 503);
      assert.equal(got.headers['retry-after'], '5');
      assert.doesNotMatch(got.body, /store down/);
    } finally {
      failing = false;
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(heads - headsBefore, 0, 'nothing of the request was sent upstream');
    const own = (await requestEvents(gw)).filter((e) => e.jti === 'j-feed-down');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'revocation_unavailable']],
    );
  });
});
