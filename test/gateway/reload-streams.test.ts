/**
 * A configuration reload decides the exchanges in flight again. A credential it withdraws ends the
 * exchanges it opened: a static token dropped after a rotation (or given a new value under the same
 * id), a trusted issuer removed or its keys replaced, introspection removed or pointed at another
 * endpoint. A reload that narrows what a caller may do ends the exchanges it no longer allows: a
 * rule needing a scope the caller lacks, a route removed or no longer accepting the caller's kind of
 * token, a static token's scopes narrowed. An issuer's or introspection's settings narrowed (or a
 * key file rewritten without the key) withdraw their tokens; DPoP made required (or narrowed for
 * bound tokens), query tokens turned off, a smaller max_token_size and a trust_proxy change that
 * moves a request's host or URL end the exchanges they no longer allow. Streams the new
 * configuration still allows go on, a reload that changes nothing (or only widens) cuts nothing, and
 * a refused reload changes nothing.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import WebSocket, { WebSocketServer } from 'ws';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import type { Principal } from '../../src/core/verify/principal.ts';
import { type StreamCloseReason, StreamRegistry, type TrackedStream } from '../../src/gateway/streams.ts';
import { until } from '../helpers/net.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';
import {
  AUDIENCE,
  ISSUER,
  key,
  mcpRoute,
  parse,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from './helpers.ts';

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

/** A request whose answer is an event stream: a GET, or `post` (an MCP JSON-RPC request); `extra`: more headers. */
function openSse(url: string, authorization: string | undefined, post?: string, extra: Record<string, string> = {}): Promise<Sse> {
  return new Promise((resolve, reject) => {
    const headers = post === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(post)) };
    const accept = post === undefined ? 'text/event-stream' : 'application/json, text/event-stream';
    const method = post === undefined ? 'GET' : 'POST';
    const credential = authorization === undefined ? {} : { authorization };
    const req = request(url, { method, headers: { ...credential, accept, ...headers, ...extra } }, (res) => {
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
    req.end(post);
  });
}

function connectWs(url: string, authorization: string, extra: Record<string, string> = {}) {
  const ws = new WebSocket(url, { headers: { authorization, ...extra } });
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

/** The WebSocket still carries messages both ways (it was not cut). */
async function echoes(ws: WebSocket, text: string): Promise<void> {
  const reply = new Promise<Buffer>((r) => ws.once('message', (m: Buffer) => r(m)));
  ws.send(text);
  assert.equal((await within(reply, 2000, 'the WebSocket is gone')).toString(), `echo:${text}`);
}

/** The stream keeps delivering events after the reload (it was not cut). */
async function continues(s: Sse): Promise<void> {
  const n = s.events.length;
  await until(() => s.events.length >= n + 3);
  assert.equal(s.ended, false);
}

// One upstream for every suite: event streams (`/events/late` slow to start), a WebSocket echo, and
// an introspection endpoint that knows OPAQUE (on any path).
let upstream: Upstream;
let introspection: Upstream;
let wss: WebSocketServer;
const upstreamWsCloses: number[] = [];
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
  wss.close();
  await upstream.close();
  await introspection.close();
});

async function closedEvents(gw: TestGateway) {
  await gw.served.gateway.audit.flush();
  return gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed');
}

/** `tessera_gateway_denies_total{reason}`. */
async function denies(gw: TestGateway, reason: string): Promise<number> {
  const text = await gw.served.gateway.registry.getSingleMetricAsString('tessera_gateway_denies_total');
  return Number(new RegExp(`reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
}

describe('gateway: streams opened with a credential a reload withdraws', () => {
  const gateways: TestGateway[] = [];
  after(async () => {
    for (const gw of gateways) await gw.close();
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

  const withdrawnDenies = (gw: TestGateway) => denies(gw, 'credential_withdrawn');

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

type Rules = NonNullable<NonNullable<TesseraConfigInput['gateway']>['routes'][number]['rules']>;

/** How the narrowing suite's configuration differs from its default. */
interface Narrowing {
  /** Rules of the events and ws routes (default: api:read for anything). */
  readonly rules?: Rules;
  /** `auth` of the events and ws routes (default: all three kinds); `none` makes them public. */
  readonly auth?: readonly ('jwt' | 'static' | 'introspection')[] | 'none';
  /** Leave the events route out. */
  readonly withoutEvents?: boolean;
  /** Scopes of static token a (default api:read); b holds api:read. */
  readonly aScopes?: readonly string[];
  /** The introspection endpoint's path (default `/introspect`) and client secret. */
  readonly introspectionPath?: string;
  readonly introspectionSecret?: string;
  /** Issuer X's keys (default: the key its tokens are signed with). */
  readonly xKeys?: readonly Record<string, unknown>[];
  /** Rules of the MCP route (default: api:read for anything). */
  readonly mcpRules?: Rules;
  /** Add a route the gateway cannot build (an exchanged credential without a token service). */
  readonly unbuildable?: boolean;
}

const READ_ANYTHING: Rules = [{ scopes: ['api:read'] }];
const ADMIN_PATHS: Rules = [
  { path: '/events/admin/**', scopes: ['api:admin'] },
  { path: '/ws/admin/**', scopes: ['api:admin'] },
  { scopes: ['api:read'] },
];
const SEARCH = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search', arguments: {} } });
const newKey = makeKey('ES256', 'es256-2');

describe('gateway: streams a reload no longer allows', () => {
  const gateways: TestGateway[] = [];
  after(async () => {
    for (const gw of gateways) await gw.close();
  });

  function config(n: Narrowing): TesseraConfigInput {
    const access =
      n.auth === 'none'
        ? { auth: 'none' as const }
        : { auth: [...(n.auth ?? ['jwt', 'static', 'introspection'])], rules: n.rules ?? READ_ANYTHING };
    const route = (id: string, prefix: string) => ({ id, match: { path_prefix: prefix }, upstream: { url: upstream.url }, ...access });
    const exchange = { type: 'exchange' as const, audience: 'https://upstream.test' };
    return {
      issuers: [
        { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [...(n.xKeys ?? [key.jwk])] } },
        { issuer: OTHER_ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [otherKey.jwk] } },
      ],
      static_tokens: [
        { id: 'a', token: TOKEN_A, scopes: [...(n.aScopes ?? ['api:read'])] },
        { id: 'b', token: TOKEN_B, scopes: ['api:read'] },
      ],
      introspection: {
        endpoint: `${introspection.url}${n.introspectionPath ?? '/introspect'}`,
        client_id: 'gw',
        client_secret: n.introspectionSecret ?? 'secret',
      },
      scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] }, 'api:admin': {} },
      dpop: { mode: 'disabled' },
      gateway: {
        mcp_session_secret: 'mcp-session-secret-0123456789abcdef',
        routes: [
          ...(n.withoutEvents ? [] : [route('events', '/events')]),
          route('ws', '/ws'),
          mcpRoute(upstream.url, n.mcpRules ?? READ_ANYTHING),
          ...(n.unbuildable
            ? [
                {
                  id: 'x',
                  match: { path_prefix: '/x' },
                  upstream: { url: upstream.url, credential: exchange },
                  auth: 'jwt' as const,
                  rules: [{}],
                },
              ]
            : []),
        ],
      },
    };
  }

  async function gateway(n: Narrowing): Promise<TestGateway> {
    const gw = await startGateway(config(n));
    gateways.push(gw);
    return gw;
  }

  function reload(gw: TestGateway, n: Narrowing): void {
    const r = gw.served.gateway.reload(parse(config(n)));
    assert.equal(r.ok, true, r.ok ? '' : r.error.message);
  }

  const wsUrl = (gw: TestGateway, path: string) => `${gw.url.replace('http', 'ws')}${path}`;
  const xToken = (jti: string, scope: string) => sign(key, claims({ jti, scope }));
  const yToken = (jti: string, scope: string) => sign(otherKey, claims({ jti, scope, iss: OTHER_ISSUER }));
  const status = async (url: string, authorization: string) => (await fetch(url, { headers: { authorization } })).status;

  it('rules narrowed: a reload whose rule for the path needs a scope the caller lacks ends that SSE stream and closes that WebSocket with 1008; the same caller elsewhere, and a caller holding the scope, go on', async () => {
    const gw = await gateway({});
    const reader = await xToken('j-reader', 'api:read');
    const admin = await xToken('j-admin', 'api:read api:admin');
    const cut = await openSse(`${gw.url}/events/admin/feed`, `Bearer ${reader}`);
    const elsewhere = await openSse(`${gw.url}/events/feed`, `Bearer ${reader}`);
    const allowed = await openSse(`${gw.url}/events/admin/feed`, `Bearer ${admin}`);
    const ws = connectWs(wsUrl(gw, '/ws/admin/chat'), `Bearer ${reader}`);
    await ws.opened;
    await until(() => [cut, elsewhere, allowed].every((s) => s.events.length >= 2));
    const upstreamClosesBefore = upstreamWsCloses.length;

    reload(gw, { rules: ADMIN_PATHS });
    await within(cut.done, 2000, 'the stream outlived the rule that no longer allows it');
    const closed = await within(ws.closed, 2000, 'the WebSocket outlived the rule that no longer allows it');
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'config narrowed');
    await until(() => upstreamWsCloses.length > upstreamClosesBefore);
    assert.equal(upstreamWsCloses.at(-1), 1008);
    await continues(elsewhere);
    await continues(allowed);

    const events = await closedEvents(gw);
    assert.deepEqual(events.map((e) => [e.reason, e.decision, e.route, e.path, e.jti]).sort(), [
      ['config_narrowed', 'deny', 'events', '/events/admin/feed', 'j-reader'],
      ['config_narrowed', 'deny', 'ws', '/ws/admin/chat', 'j-reader'],
    ]);
    assert.equal(await denies(gw, 'config_narrowed'), 2);
    const own = (await requestEvents(gw)).find((e) => e.path === '/events/admin/feed' && e.jti === 'j-reader');
    assert.equal(own?.detail?.closed, 'config_narrowed');
    // A new request of the caller there is refused as the new rule says.
    assert.equal(await status(`${gw.url}/events/admin/again`, `Bearer ${reader}`), 403);
    elsewhere.close();
    allowed.close();
  });

  it('route removed: a reload without the route an SSE stream was admitted on ends it; a WebSocket on a route kept goes on', async () => {
    const gw = await gateway({});
    const t = await xToken('j-route', 'api:read');
    const s = await openSse(`${gw.url}/events/feed`, `Bearer ${t}`);
    const ws = connectWs(wsUrl(gw, '/ws/chat'), `Bearer ${t}`);
    await ws.opened;
    await until(() => s.events.length >= 2);

    reload(gw, { withoutEvents: true });
    await within(s.done, 2000, 'the stream outlived its route');
    await echoes(ws.ws, 'still-routed');
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.route, e.jti]),
      [['config_narrowed', 'events', 'j-route']],
    );
    assert.equal(await status(`${gw.url}/events/feed`, `Bearer ${t}`), 404);
    ws.ws.close();
    await ws.closed;
  });

  it('route removed: the stream the reload ends is not counted again under the removed route (its series stay gone, the open-stream gauge is back at 0)', async () => {
    const gw = await gateway({});
    const t = await xToken('j-route-metrics', 'api:read');
    const s = await openSse(`${gw.url}/events/feed`, `Bearer ${t}`);
    await until(() => s.events.length >= 2);
    const registry = gw.served.gateway.registry;
    assert.match(await registry.getSingleMetricAsString('tessera_gateway_active_streams'), /kind="http"\} 1$/m);

    reload(gw, { withoutEvents: true });
    await within(s.done, 2000, 'the stream outlived its route');
    // The stream's exchange ends (and is observed) after the reload dropped the route's series.
    await until(async () => (await requestEvents(gw)).some((e) => e.jti === 'j-route-metrics'));
    const text = await registry.metrics();
    assert.deepEqual(
      text.split('\n').filter((l) => l.includes('route="events"')),
      [],
    );
    assert.match(text, /tessera_gateway_active_streams\{kind="http"\} 0$/m);
    assert.equal(await denies(gw, 'config_narrowed'), 1);
  });

  it('auth narrowed: a route that no longer accepts static tokens ends the stream a static token opened on it; a JWT stream on it goes on', async () => {
    const gw = await gateway({});
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    const x = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-auth', 'api:read')}`);
    await until(() => a.events.length >= 2 && x.events.length >= 2);

    reload(gw, { auth: ['jwt', 'introspection'] });
    await within(a.done, 2000, 'the stream outlived its route accepting static tokens');
    await continues(x);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.detail?.static_token]),
      [['config_narrowed', 'a']],
    );
    x.close();
  });

  it('public route made private: an anonymous stream ends once its route requires a token', async () => {
    const gw = await gateway({ auth: 'none' });
    const anonymous = await openSse(`${gw.url}/events/feed`, undefined);
    assert.equal(anonymous.status, 200);
    await until(() => anonymous.events.length >= 2);

    reload(gw, {});
    await within(anonymous.done, 2000, 'the anonymous stream outlived its route becoming private');
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.route, e.subject]),
      [['config_narrowed', 'events', undefined]],
    );
  });

  it("static token scopes narrowed: a reload leaving token a without the scope its route requires ends a's stream; b keeps the scope and goes on", async () => {
    const gw = await gateway({});
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    const b = await openSse(`${gw.url}/events/b`, `Bearer ${TOKEN_B}`);
    await until(() => a.events.length >= 2 && b.events.length >= 2);

    reload(gw, { aScopes: ['api:admin'] });
    await within(a.done, 2000, "the stream outlived its token's scopes");
    await continues(b);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.detail?.static_token]),
      [['config_narrowed', 'a']],
    );
    // Token a is still accepted, for less: 403, not 401.
    assert.equal(await status(`${gw.url}/events/again`, `Bearer ${TOKEN_A}`), 403);
    b.close();
  });

  it('introspection endpoint changed: a stream of an introspected token ends when introspection points at another endpoint; a static stream goes on', async () => {
    const gw = await gateway({});
    const o = await openSse(`${gw.url}/events/o`, `Bearer ${OPAQUE}`);
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    assert.equal(o.status, 200);
    await until(() => o.events.length >= 2 && a.events.length >= 2);

    reload(gw, { introspectionPath: '/introspect-v2' });
    await within(o.done, 2000, 'the stream outlived the endpoint that vouched for its token');
    await continues(a);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.subject]),
      [['credential_withdrawn', 'opaque-user']],
    );
    a.close();
  });

  it("issuer keys replaced: a stream of issuer X ends once X's keys no longer include those it was admitted under; issuer Y's goes on", async () => {
    const gw = await gateway({});
    const x = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-keys-x', 'api:read')}`);
    const y = await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-keys-y', 'api:read')}`);
    await until(() => x.events.length >= 2 && y.events.length >= 2);

    reload(gw, { xKeys: [newKey.jwk] });
    await within(x.done, 2000, "the stream outlived its issuer's keys");
    await continues(y);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.jti, e.issuer]),
      [['credential_withdrawn', 'j-keys-x', ISSUER]],
    );
    y.close();
  });

  it('MCP tool narrowed: a streamed tools/call is decided again with the tool it named, and ends once that tool needs a scope the caller lacks', async () => {
    const before: Rules = [{ tool: 'search', scopes: ['api:read'] }, { scopes: ['api:read'] }];
    const gw = await gateway({ mcpRules: before });
    const call = await openSse(`${gw.url}/mcp`, `Bearer ${await xToken('j-mcp', 'api:read')}`, SEARCH);
    assert.equal(call.status, 200);
    await until(() => call.events.length >= 2);
    // Decided again under an equal configuration, with the tool it named: still allowed.
    reload(gw, { mcpRules: before });
    await continues(call);

    reload(gw, { mcpRules: [{ tool: 'search', scopes: ['api:admin'] }, { scopes: ['api:read'] }] });
    await within(call.done, 2000, 'the tool call outlived the rule that no longer allows it');
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.route, e.jti]),
      [['config_narrowed', 'mcp', 'j-mcp']],
    );
  });

  it('still allowed: streams whose rule, scopes, route and credential a reload keeps or widens survive it (SSE, WebSocket, MCP)', async () => {
    const gw = await gateway({});
    const streams = [
      await openSse(`${gw.url}/events/feed`, `Bearer ${await xToken('j-keep-x', 'api:read')}`),
      await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-keep-y', 'api:read')}`),
      await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`),
      await openSse(`${gw.url}/events/o`, `Bearer ${OPAQUE}`),
      await openSse(`${gw.url}/mcp`, `Bearer ${await xToken('j-keep-mcp', 'api:read')}`, SEARCH),
    ];
    const ws = connectWs(wsUrl(gw, '/ws/chat'), `Bearer ${TOKEN_A}`);
    await ws.opened;
    let wsClosed = false;
    void ws.closed.then(() => {
      wsClosed = true;
    });
    await until(() => streams.every((s) => s.events.length >= 2));

    // A stricter rule elsewhere, token a granted more, the introspection secret rotated, a key
    // added to X, a tool rule for another tool.
    reload(gw, {
      rules: ADMIN_PATHS,
      aScopes: ['api:read', 'api:write'],
      introspectionSecret: 'rotated-secret',
      xKeys: [key.jwk, newKey.jwk],
      mcpRules: [{ tool: 'delete', scopes: ['api:admin'] }, { scopes: ['api:read'] }],
    });
    for (const s of streams) await continues(s);
    await echoes(ws.ws, 'after-reload');
    assert.equal(wsClosed, false);
    assert.deepEqual(await closedEvents(gw), []);
    assert.equal(await denies(gw, 'config_narrowed'), 0);
    assert.equal(await denies(gw, 'credential_withdrawn'), 0);
    for (const s of streams) s.close();
    ws.ws.close();
    await ws.closed;
  });

  it('a refused reload (a configuration the gateway cannot build) cuts nothing, though it would narrow', async () => {
    const gw = await gateway({});
    const s = await openSse(`${gw.url}/events/feed`, `Bearer ${await xToken('j-refused', 'api:read')}`);
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    await until(() => s.events.length >= 2 && a.events.length >= 2);

    const r = gw.served.gateway.reload(parse(config({ rules: [{ scopes: ['api:admin'] }], aScopes: [], unbuildable: true })));
    assert.equal(r.ok, false);
    await continues(s);
    await continues(a);
    assert.deepEqual(await closedEvents(gw), []);
    s.close();
    a.close();
  });

  it('narrowing race: a request allowed before the reload whose upstream has not answered is refused (403 insufficient_scope), its own event the refusal', async () => {
    const gw = await gateway({});
    const late = () => upstream.seen.filter((r) => r.url === '/events/late').length;
    const dispatched = late();
    const opening = openSse(`${gw.url}/events/late`, `Bearer ${await xToken('j-race', 'api:read')}`);
    // Dispatched: the upstream has the request and has not answered yet.
    await until(() => late() > dispatched);
    reload(gw, { rules: [{ scopes: ['api:admin'] }] });
    const s = await within(opening, 2000, 'no answer');
    assert.equal(s.status, 403);
    assert.match(String(s.challenge), /error="insufficient_scope"/);
    await s.done;
    assert.deepEqual(s.events, []);
    const own = (await requestEvents(gw)).filter((e) => e.path === '/events/late');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'config_narrowed']],
    );
    assert.deepEqual(await closedEvents(gw), []);
    assert.equal(await denies(gw, 'config_narrowed'), 1);
  });
});

type IssuerInput = NonNullable<TesseraConfigInput['issuers']>[number];
type IntrospectionInput = NonNullable<TesseraConfigInput['introspection']>;

/** How the settings suite's configuration differs from its default. */
interface Settings {
  /** Issuer X's settings besides its name and keys (default: audience AUDIENCE, ES256 and EdDSA). */
  readonly x?: Partial<Omit<IssuerInput, 'issuer' | 'jwks' | 'jwks_uri'>>;
  /** Issuer X's keys read from this file (default: inline, the key its tokens are signed with). */
  readonly xFile?: string;
  /** Introspection settings besides its endpoint and client id. */
  readonly introspection?: Partial<Omit<IntrospectionInput, 'endpoint' | 'client_id'>>;
  /** Default: `allowed`. */
  readonly dpop?: TesseraConfigInput['dpop'];
  readonly transport?: TesseraConfigInput['transport'];
  readonly maxTokenSize?: number;
  /** `gateway.trust_proxy` (default: none). */
  readonly trustProxy?: string[];
  /** A route the streams do not use (their reload changes nothing for them). */
  readonly otherRoute?: boolean;
}

const OTHER_AUDIENCE = 'https://other-api.test';
const FORWARDED = { 'x-forwarded-host': 'public.example', 'x-forwarded-proto': 'https' };
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

/** A DPoP proof (RFC 9449) by `holder` for `url` and `accessToken`. */
function proof(method: string, url: string, accessToken: string): Promise<string> {
  return new SignJWT({ htm: method, htu: url, jti: randomUUID(), ath: createHash('sha256').update(accessToken).digest('base64url') })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

describe("gateway: streams whose issuer's, introspection's, DPoP or proxy settings a reload narrows", () => {
  const gateways: TestGateway[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-reload-'));
  after(async () => {
    for (const gw of gateways) await gw.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A JWKS file holding `keys`. */
  function keyFile(name: string, keys: readonly Record<string, unknown>[]): string {
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify({ keys }));
    return file;
  }

  function config(n: Settings): TesseraConfigInput {
    const auth = ['jwt', 'static', 'introspection'] as ('jwt' | 'static' | 'introspection')[];
    const route = (id: string, match: { host?: string; path_prefix: string }) => ({
      id,
      match,
      upstream: { url: upstream.url },
      auth,
      rules: READ_ANYTHING,
    });
    return {
      issuers: [
        {
          issuer: ISSUER,
          audiences: [AUDIENCE],
          algorithms: ['ES256', 'EdDSA'],
          ...n.x,
          jwks: n.xFile === undefined ? { keys: [key.jwk] } : { file: n.xFile },
        },
        { issuer: OTHER_ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [otherKey.jwk] } },
      ],
      static_tokens: [{ id: 'a', token: TOKEN_A, scopes: ['api:read'] }],
      introspection: { endpoint: `${introspection.url}/introspect`, client_id: 'gw', client_secret: 'secret', ...n.introspection },
      scopes: { 'api:read': {}, 'api:admin': {} },
      dpop: n.dpop ?? { mode: 'allowed' },
      ...(n.transport ? { transport: n.transport } : {}),
      ...(n.maxTokenSize ? { max_token_size: n.maxTokenSize } : {}),
      gateway: {
        trust_proxy: n.trustProxy ?? [],
        routes: [
          route('events', { path_prefix: '/events' }),
          route('ws', { path_prefix: '/ws' }),
          route('hosted', { host: 'public.example', path_prefix: '/hosted' }),
          ...(n.otherRoute
            ? [{ id: 'other', match: { path_prefix: '/other' }, upstream: { url: introspection.url }, auth: 'jwt' as const, rules: [{}] }]
            : []),
        ],
      },
    };
  }

  async function gateway(n: Settings): Promise<TestGateway> {
    const gw = await startGateway(config(n));
    gateways.push(gw);
    return gw;
  }

  function reload(gw: TestGateway, n: Settings): void {
    const r = gw.served.gateway.reload(parse(config(n)));
    assert.equal(r.ok, true, r.ok ? '' : r.error.message);
  }

  const xToken = (jti: string, header: { typ?: string } = {}) => sign(key, claims({ jti }), header);
  const yToken = (jti: string) => sign(otherKey, claims({ jti, iss: OTHER_ISSUER }));
  /** A token of issuer X bound to `holder`'s key (RFC 9449 `cnf.jkt`). */
  const boundToken = async (jti: string, header: { typ?: string } = {}) =>
    sign(key, claims({ jti, cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }), header);
  /** An SSE stream of a bound token, its proof for `htu` (default: the URL opened). */
  async function openBound(url: string, token: string, htu = url, extra: Record<string, string> = {}): Promise<Sse> {
    return openSse(url, `DPoP ${token}`, undefined, { dpop: await proof('GET', htu, token), ...extra });
  }

  const issuerNarrowings: [string, Settings['x']][] = [
    ['an algorithm removed', { algorithms: ['ES256'] }],
    ['an audience removed', { audiences: [OTHER_AUDIENCE] }],
    ['token_type required', { token_type: 'at+jwt' }],
    ['a required claim added', { required_claims: ['iat', 'nbf'] }],
    ['max_lifetime shortened', { max_lifetime: '10m' }],
    ['clock_skew shortened', { clock_skew: '5s' }],
    ['scope_claim changed', { scope_claim: 'scp' }],
    ['delegation_claim changed', { delegation_claim: 'gid' }],
  ];
  for (const [what, x] of issuerNarrowings) {
    it(`issuer settings narrowed (${what}): a stream of issuer X ends with credential_withdrawn, though X keeps its keys; issuer Y's goes on`, async () => {
      const gw = await gateway({});
      const s = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-settings-x')}`);
      const y = await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-settings-y')}`);
      assert.equal(s.status, 200);
      await until(() => s.events.length >= 2 && y.events.length >= 2);

      reload(gw, { x });
      await within(s.done, 2000, `the stream outlived its issuer's settings narrowed (${what})`);
      await continues(y);
      assert.deepEqual(
        (await closedEvents(gw)).map((e) => [e.reason, e.jti, e.issuer]),
        [['credential_withdrawn', 'j-settings-x', ISSUER]],
      );
      y.close();
    });
  }

  const introspectionNarrowings: [string, Settings['introspection']][] = [
    ['audiences required', { audiences: [OTHER_AUDIENCE] }],
    ['issuer renamed', { issuer: 'https://as.test' }],
    ['scope_claim changed', { scope_claim: 'scp' }],
  ];
  for (const [what, introspectionSettings] of introspectionNarrowings) {
    it(`introspection settings narrowed (${what}): a stream of an introspected token ends with credential_withdrawn, though the endpoint and client stay; a static stream goes on`, async () => {
      const gw = await gateway({});
      const o = await openSse(`${gw.url}/events/o`, `Bearer ${OPAQUE}`);
      const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
      assert.equal(o.status, 200);
      await until(() => o.events.length >= 2 && a.events.length >= 2);

      reload(gw, { introspection: introspectionSettings });
      await within(o.done, 2000, `the stream outlived introspection narrowed (${what})`);
      await continues(a);
      assert.deepEqual(
        (await closedEvents(gw)).map((e) => [e.reason, e.subject]),
        [['credential_withdrawn', 'opaque-user']],
      );
      a.close();
    });
  }

  it("jwks.file rewritten: a stream of issuer X ends once the file at the same path no longer holds the key it was admitted under; issuer Y's goes on", async () => {
    const file = keyFile('x-replaced.json', [key.jwk]);
    const gw = await gateway({ xFile: file });
    const x = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-file-x')}`);
    const y = await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-file-y')}`);
    assert.equal(x.status, 200);
    await until(() => x.events.length >= 2 && y.events.length >= 2);

    keyFile('x-replaced.json', [newKey.jwk]);
    reload(gw, { xFile: file });
    await within(x.done, 2000, 'the stream outlived the key its issuer no longer loads from its file');
    await continues(y);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.jti, e.issuer]),
      [['credential_withdrawn', 'j-file-x', ISSUER]],
    );
    y.close();
  });

  it('DPoP made required: bearer streams (a JWT, a static token, a WebSocket) end with config_narrowed; a DPoP-bound stream goes on', async () => {
    const gw = await gateway({});
    const jwt = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-bearer')}`);
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    const bound = await openBound(`${gw.url}/events/d`, await boundToken('j-bound'));
    assert.equal(bound.status, 200);
    const ws = connectWs(`${gw.url.replace('http', 'ws')}/ws/chat`, `Bearer ${await xToken('j-bearer-ws')}`);
    await ws.opened;
    await until(() => [jwt, a, bound].every((s) => s.events.length >= 2));

    reload(gw, { dpop: { mode: 'required' } });
    await within(jwt.done, 2000, 'the bearer JWT stream outlived DPoP made required');
    await within(a.done, 2000, 'the static token stream outlived DPoP made required');
    const closed = await within(ws.closed, 2000, 'the bearer WebSocket outlived DPoP made required');
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'config narrowed');
    await continues(bound);
    assert.deepEqual((await closedEvents(gw)).map((e) => [e.reason, e.jti ?? e.detail?.static_token]).sort(), [
      ['config_narrowed', 'a'],
      ['config_narrowed', 'j-bearer'],
      ['config_narrowed', 'j-bearer-ws'],
    ]);
    // A new bearer request is refused as the new configuration says.
    assert.equal((await fetch(`${gw.url}/events/again`, { headers: { authorization: `Bearer ${TOKEN_A}` } })).status, 401);
    bound.close();
  });

  const dpopNarrowings: [string, TesseraConfigInput['dpop']][] = [
    ['disabled', { mode: 'disabled' }],
    ['the proof algorithm removed', { mode: 'allowed', algorithms: ['EdDSA'] }],
    ['nonces required', { mode: 'allowed', nonce: true }],
    ['iat_window shortened', { mode: 'allowed', iat_window: '10s' }],
  ];
  for (const [what, dpop] of dpopNarrowings) {
    it(`DPoP narrowed (${what}): a DPoP-bound stream ends with config_narrowed; a bearer stream goes on`, async () => {
      const gw = await gateway({});
      const bound = await openBound(`${gw.url}/events/d`, await boundToken('j-bound'));
      const bearer = await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-bearer')}`);
      assert.equal(bound.status, 200);
      await until(() => bound.events.length >= 2 && bearer.events.length >= 2);

      reload(gw, { dpop });
      await within(bound.done, 2000, `the DPoP-bound stream outlived DPoP narrowed (${what})`);
      await continues(bearer);
      assert.deepEqual(
        (await closedEvents(gw)).map((e) => [e.reason, e.jti]),
        [['config_narrowed', 'j-bound']],
      );
      bearer.close();
    });
  }

  it('query tokens turned off (transport.query): a stream whose token came in the query ends with config_narrowed; one sent in the header goes on', async () => {
    const gw = await gateway({ transport: { query: true } });
    const q = await openSse(`${gw.url}/events/q?access_token=${await xToken('j-query')}`, undefined);
    const h = await openSse(`${gw.url}/events/h`, `Bearer ${await xToken('j-header')}`);
    assert.equal(q.status, 200);
    await until(() => q.events.length >= 2 && h.events.length >= 2);

    reload(gw, {});
    await within(q.done, 2000, 'the stream outlived query tokens turned off');
    await continues(h);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.jti]),
      [['config_narrowed', 'j-query']],
    );
    h.close();
  });

  it('max_token_size lowered below a token in use: its stream ends with credential_withdrawn; a shorter token goes on', async () => {
    const gw = await gateway({});
    const long = await xToken('j-long');
    assert.ok(long.length > 256 && TOKEN_A.length <= 256);
    const x = await openSse(`${gw.url}/events/x`, `Bearer ${long}`);
    const a = await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`);
    await until(() => x.events.length >= 2 && a.events.length >= 2);

    reload(gw, { maxTokenSize: 256 });
    await within(x.done, 2000, 'the stream outlived max_token_size lowered below its token');
    await continues(a);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.jti]),
      [['credential_withdrawn', 'j-long']],
    );
    a.close();
  });

  it('trust_proxy narrowed: a stream routed by the X-Forwarded-Host of a proxy no longer trusted ends with config_narrowed (its host is read again); a stream not routed by host goes on', async () => {
    const gw = await gateway({ trustProxy: ['127.0.0.1/32'] });
    const hosted = await openSse(`${gw.url}/hosted/feed`, `Bearer ${TOKEN_A}`, undefined, FORWARDED);
    const plain = await openSse(`${gw.url}/events/feed`, `Bearer ${TOKEN_A}`, undefined, FORWARDED);
    assert.equal(hosted.status, 200);
    await until(() => hosted.events.length >= 2 && plain.events.length >= 2);

    reload(gw, { trustProxy: [] });
    await within(hosted.done, 2000, 'the stream outlived the proxy that routed it losing trust');
    await continues(plain);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.route]),
      [['config_narrowed', 'hosted']],
    );
    // A new request through the untrusted proxy finds no route.
    assert.equal((await fetch(`${gw.url}/hosted/feed`, { headers: { authorization: `Bearer ${TOKEN_A}`, ...FORWARDED } })).status, 404);
    plain.close();
  });

  it("trust_proxy narrowed: a DPoP-bound stream whose proof named the URL a proxy forwarded ends with config_narrowed, the gateway's own URL for it having changed; a bearer stream through the proxy goes on", async () => {
    const gw = await gateway({ trustProxy: ['127.0.0.1/32'] });
    const token = await boundToken('j-htu');
    const bound = await openBound(`${gw.url}/events/d`, token, 'https://public.example/events/d', FORWARDED);
    const bearer = await openSse(`${gw.url}/events/b`, `Bearer ${await xToken('j-proxied')}`, undefined, FORWARDED);
    assert.equal(bound.status, 200);
    await until(() => bound.events.length >= 2 && bearer.events.length >= 2);

    reload(gw, { trustProxy: [] });
    await within(bound.done, 2000, 'the DPoP-bound stream outlived the URL its proof named');
    await continues(bearer);
    assert.deepEqual(
      (await closedEvents(gw)).map((e) => [e.reason, e.jti]),
      [['config_narrowed', 'j-htu']],
    );
    bearer.close();
  });

  it('still accepted: a reload that only widens issuer, introspection and DPoP settings, adds a key to a jwks.file and adds an unrelated route keeps every stream', async () => {
    const file = keyFile('x-widened.json', [key.jwk]);
    const typ = { typ: 'at+jwt' };
    const narrow: Settings = {
      xFile: file,
      x: {
        algorithms: ['ES256'],
        token_type: 'at+jwt',
        required_claims: ['iat', 'jti'],
        clock_skew: '10s',
        max_lifetime: '1h',
      },
      dpop: {
        mode: 'allowed',
        algorithms: ['ES256'],
        iat_window: '30s',
        nonce: false,
        nonce_secret: 'nonce-secret-before-0123456789abcdef',
      },
      maxTokenSize: 4096,
    };
    const gw = await gateway(narrow);
    const streams = [
      await openSse(`${gw.url}/events/x`, `Bearer ${await xToken('j-wide-x', typ)}`),
      await openSse(`${gw.url}/events/y`, `Bearer ${await yToken('j-wide-y')}`),
      await openSse(`${gw.url}/events/a`, `Bearer ${TOKEN_A}`),
      await openSse(`${gw.url}/events/o`, `Bearer ${OPAQUE}`),
      await openBound(`${gw.url}/events/d`, await boundToken('j-wide-d', typ)),
    ];
    assert.deepEqual(
      streams.map((s) => s.status),
      [200, 200, 200, 200, 200],
    );
    const ws = connectWs(`${gw.url.replace('http', 'ws')}/ws/chat`, `Bearer ${await xToken('j-wide-ws', typ)}`);
    await ws.opened;
    await until(() => streams.every((s) => s.events.length >= 2));

    keyFile('x-widened.json', [key.jwk, newKey.jwk]);
    reload(gw, {
      xFile: file,
      // No token_type, fewer required claims, more skew, lifetime, algorithms and audiences; keys
      // fetched otherwise (jwks_cache does not decide which tokens are accepted).
      x: {
        algorithms: ['ES256', 'EdDSA'],
        audiences: [AUDIENCE, OTHER_AUDIENCE],
        required_claims: ['iat'],
        clock_skew: '30s',
        max_lifetime: '2h',
        jwks_cache: { timeout: '3s' },
      },
      // A rotated secret, how introspection is asked and its answers cached, and whether its
      // sub_id is believed (which names the subject's issuer, not whether a token is accepted).
      introspection: { client_secret: 'rotated-secret', timeout: '3s', cache_max_ttl: '30s', trust_sub_id: true },
      // More proof algorithms, an older proof accepted, a larger replay cache, another nonce
      // secret (which nonces a new proof may name).
      dpop: {
        mode: 'allowed',
        algorithms: ['ES256', 'EdDSA'],
        iat_window: '60s',
        replay_cache_size: 1000,
        nonce_secret: 'nonce-secret-after-0123456789abcdefgh',
      },
      transport: { query: true },
      maxTokenSize: 8192,
      otherRoute: true,
    });
    for (const s of streams) await continues(s);
    await echoes(ws.ws, 'after-widening');
    assert.deepEqual(await closedEvents(gw), []);
    for (const s of streams) s.close();
    ws.ws.close();
    await ws.closed;
  });
});

describe('StreamRegistry: streams decided again on a reload', () => {
  const principal = (issuer: string) => ({ kind: 'jwt', issuer, expiresAt: Number.POSITIVE_INFINITY }) as unknown as Principal;
  /** A stream with the configuration it was decided under (what the gateway's recheck compares). */
  type Decided = TrackedStream & { readonly decidedUnder: string };

  it('reload race: a stream decided under the configuration before a reload and added after it is decided again at once', () => {
    const registry = new StreamRegistry<Decided>({ clock: Date.now, recheck: () => undefined });
    try {
      // The configuration "new" withdraws one issuer and no longer allows public streams.
      const recheck = (s: Decided): StreamCloseReason | undefined =>
        s.decidedUnder === 'new'
          ? undefined
          : s.principal === undefined
            ? 'config_narrowed'
            : s.principal.issuer === 'https://withdrawn.test'
              ? 'credential_withdrawn'
              : undefined;
      registry.reconfigure(recheck);
      const closed: StreamCloseReason[] = [];
      const stream = (p: Principal | undefined, decidedUnder: string): Decided => ({
        kind: 'http',
        principal: p,
        decidedUnder,
        close: (r) => closed.push(r),
      });
      registry.add(stream(principal('https://withdrawn.test'), 'old'));
      registry.add(stream(principal('https://kept.test'), 'old'));
      registry.add(stream(undefined, 'old'));
      registry.add(stream(principal('https://withdrawn.test'), 'new'));
      assert.deepEqual(closed, ['credential_withdrawn', 'config_narrowed']);
      // Every stream watched is decided again on the next reload, a public one too.
      registry.reconfigure(() => 'config_narrowed');
      assert.deepEqual(closed, ['credential_withdrawn', 'config_narrowed', 'config_narrowed', 'config_narrowed']);
    } finally {
      registry.stop();
    }
  });
});
