/**
 * A credential withdrawn by a configuration reload ends the exchanges it opened: a static token
 * dropped after a rotation (or given a new value under the same id), a trusted issuer removed, an
 * introspection endpoint removed. Streams whose credential the new configuration still accepts go
 * on, and a reload that changes nothing cuts nothing.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import type { Principal } from '../../src/core/verify/principal.ts';
import { type StreamCloseReason, StreamRegistry } from '../../src/gateway/streams.ts';
import { until } from '../helpers/net.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';
import { AUDIENCE, ISSUER, key, parse, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const TOKEN_A = 'static-token-a-0123456789-abcdefghijklmnop';
const TOKEN_A2 = 'static-token-a-second-value-0123456789-abcdef';
const TOKEN_B = 'static-token-b-0123456789-abcdefghijklmnop';
const OPAQUE = 'opaque-token-0123456789';
const OTHER_ISSUER = 'https://other-issuer.test';
const otherKey = makeKey('ES256', 'other-1');
const A_AND_B = [
  { id: 'a', token: TOKEN_A },
  { id: 'b', token: TOKEN_B },
];
const ONLY_B = [{ id: 'b', token: TOKEN_B }];

interface Credentials {
  readonly statics?: readonly { id: string; token: string }[];
  readonly issuers?: readonly ('x' | 'y')[];
  readonly introspection?: boolean;
  /** A route setting that has nothing to do with credentials: the events route sends identity headers. */
  readonly identityHeaders?: boolean;
}

interface Sse {
  status: number;
  challenge: string | undefined;
  events: string[];
  ended: boolean;
  done: Promise<void>;
  close(): void;
}

function openSse(url: string, authorization: string): Promise<Sse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization, accept: 'text/event-stream' } }, (res) => {
      const sse: Sse = {
        status: res.statusCode ?? 0,
        challenge: res.headers['www-authenticate'],
        events: [],
        ended: false,
        done: new Promise<void>((done) => {
          const end = () => {
            sse.ended = true;
            done();
          };
          res.on('end', end);
          res.on('close', end);
        }),
        close: () => req.destroy(),
      };
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          sse.events.push(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      });
      resolve(sse);
    });
    req.on('error', reject);
    req.end();
  });
}

function connectWs(url: string, authorization: string) {
  const ws = new WebSocket(url, { headers: { authorization } });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res: IncomingMessage) => reject(new Error(`status ${res.statusCode}`)));
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return { ws, opened, closed };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
}

/** The stream keeps delivering events after the reload (it was not cut). */
async function continues(s: Sse): Promise<void> {
  const n = s.events.length;
  await until(() => s.events.length >= n + 3);
  assert.equal(s.ended, false);
}

describe('gateway: streams opened with a credential a reload withdraws', () => {
  let upstream: Upstream;
  let introspection: Upstream;
  let wss: WebSocketServer;
  const upstreamWsCloses: number[] = [];
  const gateways: TestGateway[] = [];

  before(async () => {
    upstream = await startUpstream((req, res) => {
      if (req.url === '/events/late') {
        // An upstream slow to start its stream: the exchange is in flight, its response not begun.
        const start = setTimeout(() => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: late\n\n');
        }, 400);
        res.on('close', () => clearTimeout(start));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let n = 0;
      const timer = setInterval(() => res.write(`data: ${n++}\n\n`), 30);
      res.on('close', () => clearInterval(timer));
    });
    wss = new WebSocketServer({ noServer: true });
    upstream.server.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.on('message', (m) => ws.send(`echo:${m.toString()}`));
        ws.on('close', (code) => upstreamWsCloses.push(code));
      }),
    );
    introspection = await startUpstream((_req, res, body) => {
      const active = new URLSearchParams(body).get('token') === OPAQUE;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(active ? { active, sub: 'opaque-user', scope: 'api:read', exp: Math.floor(Date.now() / 1000) + 300 } : { active }),
      );
    });
  });
  after(async () => {
    for (const gw of gateways) await gw.close();
    wss.close();
    await upstream.close();
    await introspection.close();
  });

  function config(c: Credentials): TesseraConfigInput {
    const issuers = c.issuers ?? ['x', 'y'];
    const auth = ['jwt', 'static', ...(c.introspection ? ['introspection' as const] : [])] as ('jwt' | 'static' | 'introspection')[];
    return {
      issuers: issuers.map((i) =>
        i === 'x'
          ? { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }
          : { issuer: OTHER_ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [otherKey.jwk] } },
      ),
      static_tokens: (c.statics ?? [{ id: 'a', token: TOKEN_A }]).map((s) => ({ ...s, scopes: ['api:read'] })),
      ...(c.introspection
        ? { introspection: { endpoint: `${introspection.url}/introspect`, client_id: 'gw', client_secret: 'secret' } }
        : {}),
      scopes: { 'api:read': {} },
      dpop: { mode: 'disabled' },
      gateway: {
        routes: [
          {
            id: 'events',
            match: { path_prefix: '/events' },
            upstream: { url: upstream.url },
            auth,
            rules: [{ scopes: ['api:read'] }],
            ...(c.identityHeaders ? { identity_headers: ['subject' as const] } : {}),
          },
          { id: 'ws', match: { path_prefix: '/ws' }, upstream: { url: upstream.url }, auth, rules: [{ scopes: ['api:read'] }] },
        ],
      },
    };
  }

  async function gateway(c: Credentials): Promise<TestGateway> {
    const gw = await startGateway(config(c));
    gateways.push(gw);
    return gw;
  }

  function reload(gw: TestGateway, c: Credentials): void {
    const r = gw.served.gateway.reload(parse(config(c)));
    assert.equal(r.ok, true, r.ok ? '' : r.error.message);
  }

  async function closedEvents(gw: TestGateway) {
    await gw.served.gateway.audit.flush();
    return gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed');
  }

  async function withdrawnDenies(gw: TestGateway): Promise<number> {
    const text = await gw.served.gateway.registry.getSingleMetricAsString('tessera_gateway_denies_total');
    return Number(/reason="credential_withdrawn"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  }

  const xToken = (jti: string) => sign(key, claims({ jti }));
  const yToken = (jti: string) => sign(otherKey, claims({ jti, iss: OTHER_ISSUER }));

  it('static token rotation: a reload that leaves only token B ends the SSE stream opened with token A; the stream opened with B goes on', async () => {
    const gw = await gateway({ statics: A_AND_B });
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    const b = await openSse(`${gw.url}/events/b`, `Bearer ${TOKEN_B}`);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    await until(() => a.events.length >= 2 && b.events.length >= 2);

    reload(gw, { statics: ONLY_B });
    await within(a.done, 2000, 'the stream outlived the withdrawal of its static token');
    await continues(b);

    const closed = await closedEvents(gw);
    assert.equal(closed.length, 1);
    assert.equal(closed[0]?.reason, 'credential_withdrawn');
    assert.equal(closed[0]?.detail?.static_token, 'a');
    assert.equal(closed[0]?.decision, 'deny');
    assert.equal(await withdrawnDenies(gw), 1);
    // The request event of the cut stream records how it ended.
    const own = (await requestEvents(gw)).find((e) => e.path === '/events/a');
    assert.equal(own?.detail?.closed, 'credential_withdrawn');
    // And the old token is refused from now on.
    assert.equal((await fetch(`${gw.url}/events/again`, { headers: { authorization: `Bearer ${TOKEN_A}` } })).status, 401);
    b.close();
  });

  it('static token rotation keeping the id: a new value under the same id withdraws the old value, and its stream ends', async () => {
    const gw = await gateway({ statics: [{ id: 'a', token: TOKEN_A }] });
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    await until(() => a.events.length >= 2);
    reload(gw, { statics: [{ id: 'a', token: TOKEN_A2 }] });
    await within(a.done, 2000, 'the stream outlived the change of its static token value');
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => e.reason),
      ['credential_withdrawn'],
    );
  });

  it('static token renamed: the same value under a new id is still accepted, and its stream goes on', async () => {
    const gw = await gateway({ statics: [{ id: 'a', token: TOKEN_A }] });
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    await until(() => a.events.length >= 2);
    reload(gw, { statics: [{ id: 'renamed', token: TOKEN_A }] });
    await continues(a);
    assert.deepEqual(await closedEvents(gw), []);
    a.close();
  });

  it('closes a WebSocket opened with token A with 1008 once a reload leaves only token B, and tells the upstream', async () => {
    const gw = await gateway({ statics: A_AND_B });
    const wsUrl = `${gw.url.replace('http', 'ws')}/ws/chat`;
    const a = connectWs(wsUrl, `Bearer ${TOKEN_A}`);
    const b = connectWs(wsUrl, `Bearer ${TOKEN_B}`);
    await Promise.all([a.opened, b.opened]);
    const upstreamClosesBefore = upstreamWsCloses.length;

    reload(gw, { statics: ONLY_B });
    const closed = await within(a.closed, 2000, 'the WebSocket outlived the withdrawal of its static token');
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'credential withdrawn');
    await until(() => upstreamWsCloses.length > upstreamClosesBefore);
    assert.equal(upstreamWsCloses.at(-1), 1008);
    // The connection authenticated with B still carries messages.
    b.ws.send('still-here');
    const [reply] = await within(new Promise<[Buffer]>((r) => b.ws.once('message', (m: Buffer) => r([m]))), 2000, 'B is gone');
    assert.equal(reply.toString(), 'echo:still-here');

    const events = await closedEvents(gw);
    assert.deepEqual(
      events.map((e) => [e.reason, e.detail?.static_token]),
      [['credential_withdrawn', 'a']],
    );
    b.ws.close();
    await b.closed;
  });

  it('issuer removed: a stream from issuer X ends when X is no longer trusted; a stream from issuer Y survives that and a further reload', async () => {
    const gw = await gateway({ issuers: ['x', 'y'] });
    const x = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-x')}`);
    const y = await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-y')}`);
    assert.equal(x.status, 200);
    assert.equal(y.status, 200);
    await until(() => x.events.length >= 2 && y.events.length >= 2);

    reload(gw, { issuers: ['y'] });
    await within(x.done, 2000, 'the stream outlived the removal of its issuer');
    await continues(y);
    // Another reload (static tokens rotated, a route setting changed) leaves Y's stream alone.
    reload(gw, { issuers: ['y'], statics: ONLY_B, identityHeaders: true });
    await continues(y);

    const closed = await closedEvents(gw);
    assert.deepEqual(
      closed.map((e) => [e.reason, e.jti, e.issuer]),
      [['credential_withdrawn', 'j-x', ISSUER]],
    );
    y.close();
  });

  it('introspection removed: a stream of an introspected token ends when introspection is no longer configured', async () => {
    const gw = await gateway({ introspection: true });
    const o = await openSse(`${gw.url}/events/o`, `Bearer ${OPAQUE}`);
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    assert.equal(o.status, 200);
    await until(() => o.events.length >= 2 && a.events.length >= 2);
    reload(gw, { introspection: false });
    await within(o.done, 2000, 'the stream outlived the removal of introspection');
    await continues(a);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.subject]),
      [['credential_withdrawn', 'opaque-user']],
    );
    a.close();
  });

  it('a reload that changes nothing cuts nothing (static, JWT, introspected, WebSocket)', async () => {
    const c: Credentials = { statics: [{ id: 'a', token: TOKEN_A }], issuers: ['x', 'y'], introspection: true };
    const gw = await gateway(c);
    const streams = [
      await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`),
      await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-same-x')}`),
      await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-same-y')}`),
      await openSse(`${gw.url}/events/o`, `Bearer ${OPAQUE}`),
    ];
    const ws = connectWs(`${gw.url.replace('http', 'ws')}/ws/chat`, `Bearer ${TOKEN_A}`);
    await ws.opened;
    let wsClosed = false;
    void ws.closed.then(() => {
      wsClosed = true;
    });
    await until(() => streams.every((s) => s.events.length >= 2));
    reload(gw, c);
    for (const s of streams) await continues(s);
    ws.ws.send('after-reload');
    const reply = await within(new Promise<Buffer>((r) => ws.ws.once('message', (m: Buffer) => r(m))), 2000, 'the WebSocket is gone');
    assert.equal(reply.toString(), 'echo:after-reload');
    assert.equal(wsClosed, false);
    assert.deepEqual(await closedEvents(gw), []);
    assert.equal(await withdrawnDenies(gw), 0);
    for (const s of streams) s.close();
    ws.ws.close();
    await ws.closed;
  });

  it('withdrawal race: a request whose token is withdrawn after the decision but before the upstream answers is refused (401), its own event the refusal', async () => {
    const gw = await gateway({ statics: A_AND_B });
    const opening = openSse(`${gw.url}/events/late`, `Bearer ${TOKEN_A}`);
    // Dispatched: the upstream has the request and has not answered yet.
    await until(() => upstream.seen.some((r) => r.url === '/events/late'));
    reload(gw, { statics: ONLY_B });
    const s = await within(opening, 2000, 'no answer');
    assert.equal(s.status, 401);
    assert.match(String(s.challenge), /error="invalid_token"/);
    await s.done;
    assert.deepEqual(s.events, []);
    const own = (await requestEvents(gw)).filter((e) => e.path === '/events/late');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'credential_withdrawn']],
    );
    assert.deepEqual(await closedEvents(gw), []);
    assert.equal(await withdrawnDenies(gw), 1);
  });
});

describe('StreamRegistry: credentials withdrawn', () => {
  const principal = (issuer: string) => ({ kind: 'jwt', issuer, expiresAt: Number.POSITIVE_INFINITY }) as unknown as Principal;

  it('withdrawal race: a stream decided under the configuration before a reload and added after it is closed at once', () => {
    const registry = new StreamRegistry({ clock: Date.now, accepts: () => true });
    try {
      registry.acceptOnly((p) => p.issuer !== 'https://withdrawn.test');
      const closed: StreamCloseReason[] = [];
      registry.add({ kind: 'http', principal: principal('https://withdrawn.test'), close: (r) => closed.push(r) });
      registry.add({ kind: 'http', principal: principal('https://kept.test'), close: (r) => closed.push(r) });
      registry.add({ kind: 'http', principal: undefined, close: (r) => closed.push(r) });
      assert.deepEqual(closed, ['credential_withdrawn']);
      // A public route's stream (no principal) is never cut by a reload.
      registry.acceptOnly(() => false);
      assert.deepEqual(closed, ['credential_withdrawn', 'credential_withdrawn']);
    } finally {
      registry.stop();
    }
  });
});
