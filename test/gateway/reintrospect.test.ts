/**
 * Exchanges in flight admitted with an introspected token are introspected again: a token the
 * authorization server no longer calls active ends its WebSockets and streams (token_inactive),
 * through the same cached client (streams on one token make one call per interval between them),
 * and an endpoint that stays unreachable ends them after a bounded grace (introspection_unavailable).
 * A real RFC 7662 endpoint on loopback authenticates the gateway with client_secret_basic.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { until } from '../helpers/net.ts';
import { listen, readBody, type TestServer } from '../helpers/verify.ts';
import { baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const CLIENT_ID = 'gateway';
const CLIENT_SECRET = 'introspection-client-secret';

interface Endpoint extends TestServer {
  /** token → answer (`{ active: false }` when absent). */
  readonly answers: Map<string, unknown>;
  /** Calls per token. */
  readonly calls: Map<string, number>;
  /** Anything but 200: the endpoint fails with it. */
  status: number;
}

async function introspectionEndpoint(): Promise<Endpoint> {
  const state = { answers: new Map<string, unknown>(), calls: new Map<string, number>(), status: 200 };
  const basic = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;
  const server = await listen(async (req, res) => {
    const token = new URLSearchParams(await readBody(req)).get('token') ?? '';
    if (req.headers.authorization !== basic) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_client"}');
      return;
    }
    state.calls.set(token, (state.calls.get(token) ?? 0) + 1);
    if (state.status !== 200) {
      res.writeHead(state.status).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(state.answers.get(token) ?? { active: false }));
  });
  return Object.assign(state, server);
}

/** An SSE stream through the gateway: its status and when it ends. */
function openSse(url: string, token: string): Promise<{ status: number; ended: Promise<void>; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, (res) => {
      const ended = new Promise<void>((done) => {
        res.on('end', done);
        res.on('close', done);
      });
      res.resume();
      resolve({ status: res.statusCode ?? 0, ended, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

function openWs(url: string, token: string): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, closed }));
    ws.once('error', reject);
  });
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('gateway: exchanges in flight on an introspected token', () => {
  let endpoint: Endpoint;
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  before(async () => {
    endpoint = await introspectionEndpoint();
    wss = new WebSocketServer({ noServer: true });
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    gw = await startGateway({
      ...baseConfig(),
      introspection: {
        endpoint: `${endpoint.origin}/introspect`,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        cache_max_ttl: '1s',
        timeout: '1s',
      },
      gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'introspection', rules: [{}] }] },
    });
  });
  after(async () => {
    await gw.close();
    wss.close();
    await upstream.close();
    await endpoint.close();
  });

  async function closedEvents(subject: string) {
    await requestEvents(gw);
    return gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed' && e.subject === subject);
  }

  it('revoked at the authorization server: an introspected token without exp whose answer turns active:false ends its WebSocket (1008) and SSE streams with token_inactive, each interval making one call for all of them', async () => {
    const token = 'opaque-revoked-at-the-as';
    endpoint.answers.set(token, { active: true, sub: 'user-revoked', client_id: 'agent-1', scope: 'api:read' });
    const wsUrl = `${gw.url.replace('http', 'ws')}/ws`;
    const { closed: wsClosed } = await openWs(wsUrl, token);
    const sse1 = await openSse(`${gw.url}/events/1`, token);
    const sse2 = await openSse(`${gw.url}/events/2`, token);
    assert.equal(sse1.status, 200);
    assert.equal(sse2.status, 200);

    // Still active: the streams stay open, and three streams on one token cost about one call per
    // interval (cache_max_ttl, 1 s), not three.
    const before = endpoint.calls.get(token) ?? 0;
    await sleep(3200);
    const made = (endpoint.calls.get(token) ?? 0) - before;
    // (At most one per recheck: three of them in 3.2 s, fewer when an answer cached for its whole
    // second is still fresh; three streams asking apart would make up to nine.)
    assert.ok(made >= 1 && made <= 4, `${made} calls in 3.2 s for three streams`);
    assert.equal((await closedEvents('user-revoked')).length, 0);

    endpoint.answers.set(token, { active: false });
    const closed = await within(wsClosed, 4000, 'the WebSocket outlived the revocation at the authorization server');
    assert.deepEqual(closed, { code: 1008, reason: 'token inactive' });
    await within(Promise.all([sse1.ended, sse2.ended]), 4000, 'an SSE stream outlived the revocation at the authorization server');
    await until(async () => (await closedEvents('user-revoked')).length === 3);
    assert.deepEqual(
      (await closedEvents('user-revoked')).map((e) => e.reason),
      ['token_inactive', 'token_inactive', 'token_inactive'],
    );
    // A new request with the token is refused as well.
    const again = await fetch(`${gw.url}/x`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(again.status, 401);
  });

  it('introspection endpoint unreachable during a recheck: the stream is kept through one failed recheck, then closed (introspection_unavailable, WebSocket 1013) rather than kept open for the length of the outage', async () => {
    const token = 'opaque-outage';
    endpoint.answers.set(token, { active: true, sub: 'user-outage', scope: 'api:read' });
    const { closed: wsClosed } = await openWs(`${gw.url.replace('http', 'ws')}/ws`, token);
    const sse = await openSse(`${gw.url}/events/outage`, token);
    assert.equal(sse.status, 200);
    endpoint.status = 500;
    try {
      const started = Date.now();
      const closed = await within(wsClosed, 5000, 'the WebSocket outlived the outage grace');
      const took = Date.now() - started;
      assert.deepEqual(closed, { code: 1013, reason: 'token unverifiable' });
      // One failed recheck is tolerated: not closed at the first interval after the outage began.
      assert.ok(took >= 900, `closed after ${took} ms`);
      await within(sse.ended, 3000, 'the SSE stream outlived the outage grace');
      await until(async () => (await closedEvents('user-outage')).length === 2);
      assert.deepEqual(
        (await closedEvents('user-outage')).map((e) => e.reason),
        ['introspection_unavailable', 'introspection_unavailable'],
      );
    } finally {
      endpoint.status = 200;
    }
  });
});

/**
 * Inside a describe: a loopback introspection endpoint, an upstream answering SSE and WebSocket
 * upgrades, and a gateway introspecting (rechecks every second) with `route`; `closedEvents` reads
 * the gateway.stream_closed events of a subject.
 */
function introspectedStreams(route: Record<string, unknown>) {
  const f = {} as { endpoint: Endpoint; upstream: Upstream; wss: WebSocketServer; gw: TestGateway };
  before(async () => {
    f.endpoint = await introspectionEndpoint();
    f.wss = new WebSocketServer({ noServer: true });
    f.upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    f.upstream.server.on('upgrade', (req, socket, head) => f.wss.handleUpgrade(req, socket, head, () => undefined));
    f.gw = await startGateway({
      ...baseConfig(),
      introspection: {
        endpoint: `${f.endpoint.origin}/introspect`,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        cache_max_ttl: '1s',
        timeout: '1s',
      },
      gateway: { routes: [{ id: 'api', upstream: { url: f.upstream.url }, auth: 'introspection', ...route }] },
    });
  });
  after(async () => {
    await f.gw.close();
    f.wss.close();
    await f.upstream.close();
    await f.endpoint.close();
  });
  const closedEvents = async (subject: string) => {
    await requestEvents(f.gw);
    return f.gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed' && e.subject === subject);
  };
  return { f, closedEvents };
}

describe('gateway: exchanges in flight on an introspected token whose scope the authorization server narrows', () => {
  const { f, closedEvents } = introspectedStreams({ rules: [{ id: 'read', path: '/**', scopes: ['api:read'] }] });

  it('attack: still active but no longer granting the scope the route requires ends its WebSocket (1008) and SSE stream with token_scope_narrowed, audited; a narrower answer that still grants it keeps them open', async () => {
    const token = 'opaque-narrowed-at-the-as';
    f.endpoint.answers.set(token, { active: true, sub: 'user-narrowed', client_id: 'agent-1', scope: 'api:read admin' });
    const { closed: wsClosed } = await openWs(`${f.gw.url.replace('http', 'ws')}/ws`, token);
    const sse = await openSse(`${f.gw.url}/events/narrowed`, token);
    assert.equal(sse.status, 200);

    // Narrowed, but api:read is still granted: nothing closes.
    f.endpoint.answers.set(token, { active: true, sub: 'user-narrowed', client_id: 'agent-1', scope: 'api:read' });
    const before = f.endpoint.calls.get(token) ?? 0;
    await until(() => (f.endpoint.calls.get(token) ?? 0) >= before + 2, 6000);
    assert.equal((await closedEvents('user-narrowed')).length, 0);

    // Narrowed below what the route requires (admin implies no api:read): the streams end as an
    // inactive token's would.
    f.endpoint.answers.set(token, { active: true, sub: 'user-narrowed', client_id: 'agent-1', scope: 'admin' });
    const closed = await within(wsClosed, 4000, 'the WebSocket outlived the narrowing of its scope at the authorization server');
    assert.deepEqual(closed, { code: 1008, reason: 'token scope narrowed' });
    await within(sse.ended, 4000, 'the SSE stream outlived the narrowing of its scope at the authorization server');
    await until(async () => (await closedEvents('user-narrowed')).length === 2);
    const events = await closedEvents('user-narrowed');
    assert.deepEqual(
      events.map((e) => [e.reason, e.decision]),
      [
        ['token_scope_narrowed', 'deny'],
        ['token_scope_narrowed', 'deny'],
      ],
    );
    // A new request with the token gets the refusal a new request gets.
    const again = await fetch(`${f.gw.url}/x`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(again.status, 403);
  });
});

describe('gateway: exchanges in flight on an introspected token whose claims or audience the authorization server changes', () => {
  const AUDIENCE = 'https://api.example.test';
  const { f, closedEvents } = introspectedStreams({
    audience: AUDIENCE,
    rules: [{ id: 'tenant', path: '/t/:tenant/**', scopes: ['api:read'], claims: { tenant: ':tenant' } }],
  });

  /**
   * Opens a WebSocket and an SSE stream on `answer`, sees them survive two unchanged rechecks, then
   * has the authorization server answer `changed`: both must end with `code` (WebSocket 1008
   * `closeText`), audited, and a new request be refused with `status` and the same code.
   */
  async function changeEndsStreams(o: {
    token: string;
    answer: Record<string, unknown>;
    changed: Record<string, unknown>;
    code: string;
    closeText: string;
    status: number;
  }) {
    const subject = o.answer.sub as string;
    f.endpoint.answers.set(o.token, o.answer);
    const { closed: wsClosed } = await openWs(`${f.gw.url.replace('http', 'ws')}/t/acme/ws`, o.token);
    const sse = await openSse(`${f.gw.url}/t/acme/events`, o.token);
    assert.equal(sse.status, 200);

    // Unchanged for a couple of rechecks: nothing closes.
    const before = f.endpoint.calls.get(o.token) ?? 0;
    await until(() => (f.endpoint.calls.get(o.token) ?? 0) >= before + 2, 6000);
    assert.equal((await closedEvents(subject)).length, 0);

    f.endpoint.answers.set(o.token, o.changed);
    const closed = await within(wsClosed, 4000, `the WebSocket outlived the change (${o.code})`);
    assert.deepEqual(closed, { code: 1008, reason: o.closeText });
    await within(sse.ended, 4000, `the SSE stream outlived the change (${o.code})`);
    await until(async () => (await closedEvents(subject)).length === 2);
    assert.deepEqual(
      (await closedEvents(subject)).map((e) => [e.reason, e.decision]),
      [
        [o.code, 'deny'],
        [o.code, 'deny'],
      ],
    );
    const again = await fetch(`${f.gw.url}/t/acme/x`, { headers: { authorization: `Bearer ${o.token}` } });
    assert.equal(again.status, o.status);
    await requestEvents(f.gw);
    const refused = f.gw.audit.events.filter((e) => e.kind === 'gateway.request' && e.subject === subject && e.decision === 'deny');
    assert.deepEqual(
      refused.map((e) => e.reason),
      [o.code],
    );
  }

  it("attack: still active with the scope but a claim the route's rule requires changed (another tenant) ends its WebSocket (1008) and SSE stream with policy_condition_failed, audited, as a new request is refused", async () => {
    const answer = { active: true, sub: 'user-tenant', client_id: 'agent-1', scope: 'api:read', aud: AUDIENCE, tenant: 'acme' };
    await changeEndsStreams({
      token: 'opaque-tenant-moved-at-the-as',
      answer,
      changed: { ...answer, tenant: 'other' },
      code: 'policy_condition_failed',
      closeText: 'policy condition failed',
      status: 403,
    });
  });

  it("attack: still active with the scope but no longer carrying the route's audience ends its WebSocket (1008) and SSE stream with token_audience_invalid, audited, as a new request is refused", async () => {
    const answer = {
      active: true,
      sub: 'user-aud',
      client_id: 'agent-1',
      scope: 'api:read',
      aud: [AUDIENCE, 'https://other.example.test'],
      tenant: 'acme',
    };
    await changeEndsStreams({
      token: 'opaque-audience-dropped-at-the-as',
      answer,
      changed: { ...answer, aud: 'https://other.example.test' },
      code: 'token_audience_invalid',
      closeText: 'token audience invalid',
      status: 401,
    });
  });
});

describe('gateway: exchanges in flight on an introspected token whose answer loses the audience introspection.audiences requires', () => {
  const AUDIENCE = 'https://api.example.test';
  let endpoint: Endpoint;
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    endpoint = await introspectionEndpoint();
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    gw = await startGateway({
      ...baseConfig(),
      introspection: {
        endpoint: `${endpoint.origin}/introspect`,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        audiences: [AUDIENCE],
        cache_max_ttl: '1s',
        timeout: '1s',
      },
      gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'introspection', rules: [{}] }] },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await endpoint.close();
  });

  it('attack: the SSE stream ends with token_audience_invalid, the code a new request with that answer gets, not token_inactive', async () => {
    const token = 'opaque-verifier-audience-dropped';
    const answer = { active: true, sub: 'user-vaud', scope: 'api:read', aud: AUDIENCE };
    endpoint.answers.set(token, answer);
    const sse = await openSse(`${gw.url}/events`, token);
    assert.equal(sse.status, 200);
    endpoint.answers.set(token, { ...answer, aud: 'https://other.example.test' });
    await within(sse.ended, 4000, 'the SSE stream outlived the removal of its audience');
    const closedEvents = async () => {
      await requestEvents(gw);
      return gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed' && e.subject === 'user-vaud');
    };
    await until(async () => (await closedEvents()).length === 1);
    const closed = await closedEvents();
    assert.deepEqual(
      closed.map((e) => e.reason),
      ['token_audience_invalid'],
    );
    const again = await fetch(`${gw.url}/x`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(again.status, 401);
    await requestEvents(gw);
    const refused = gw.audit.events.filter((e) => e.kind === 'gateway.request' && e.path === '/x' && e.decision === 'deny');
    assert.deepEqual(
      refused.map((e) => e.reason),
      ['token_audience_invalid'],
    );
  });
});

describe('gateway: exchanges in flight on an introspected token whose answer names another subject or client', () => {
  // The upstream got the identity headers of the answer the exchange was admitted with; an answer
  // now naming someone else must not leave it running as the first.
  let endpoint: Endpoint;
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  const seen: { subject: string | undefined; client: string | undefined }[] = [];
  before(async () => {
    endpoint = await introspectionEndpoint();
    wss = new WebSocketServer({ noServer: true });
    const identity = (req: import('node:http').IncomingMessage) => {
      seen.push({ subject: req.headers['x-tessera-subject'] as string, client: req.headers['x-tessera-client-id'] as string });
    };
    upstream = await startUpstream((req, res) => {
      identity(req);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    upstream.server.on('upgrade', (req, socket, head) => {
      identity(req);
      wss.handleUpgrade(req, socket, head, () => undefined);
    });
    gw = await startGateway({
      ...baseConfig(),
      introspection: {
        endpoint: `${endpoint.origin}/introspect`,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        cache_max_ttl: '1s',
        timeout: '1s',
        trust_sub_id: true,
      },
      gateway: {
        routes: [
          {
            id: 'api',
            upstream: { url: upstream.url },
            auth: 'introspection',
            rules: [{}],
            websocket: true,
            identity_headers: ['subject', 'client'],
          },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    wss.close();
    await upstream.close();
    await endpoint.close();
  });

  async function identityChangeEndsStreams(token: string, answer: Record<string, unknown>, changed: Record<string, unknown>) {
    const subject = answer.sub as string;
    endpoint.answers.set(token, answer);
    seen.length = 0;
    const { closed: wsClosed } = await openWs(`${gw.url.replace('http', 'ws')}/ws`, token);
    const sse = await openSse(`${gw.url}/events`, token);
    assert.equal(sse.status, 200);
    // The upstream was told who the caller is, once per exchange.
    assert.deepEqual(seen, [
      { subject, client: answer.client_id },
      { subject, client: answer.client_id },
    ]);

    // The same identity (another scope, an added claim) for a couple of rechecks: nothing closes.
    endpoint.answers.set(token, { ...answer, scope: 'api:read admin', extra: 'x' });
    const before = endpoint.calls.get(token) ?? 0;
    await until(() => (endpoint.calls.get(token) ?? 0) >= before + 2, 6000);
    const closedEvents = async () => {
      await requestEvents(gw);
      return gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed' && e.subject === subject);
    };
    assert.equal((await closedEvents()).length, 0);

    endpoint.answers.set(token, changed);
    const closed = await within(wsClosed, 4000, 'the WebSocket outlived the change of its identity');
    assert.deepEqual(closed, { code: 1008, reason: 'token identity changed' });
    await within(sse.ended, 4000, 'the SSE stream outlived the change of its identity');
    await until(async () => (await closedEvents()).length === 2);
    assert.deepEqual(
      (await closedEvents()).map((e) => [e.reason, e.decision, e.client_id]),
      [
        ['token_identity_changed', 'deny', answer.client_id],
        ['token_identity_changed', 'deny', answer.client_id],
      ],
    );
    // The upstream saw no second exchange under the first identity.
    assert.equal(seen.length, 2);
  }

  it('attack: an answer now naming another sub ends its WebSocket (1008) and SSE stream with token_identity_changed, audited under the identity they were opened with', async () => {
    const answer = { active: true, sub: 'user-alice', client_id: 'agent-1', scope: 'api:read' };
    await identityChangeEndsStreams('opaque-sub-reassigned', answer, { ...answer, sub: 'user-mallory' });
  });

  it('attack: an answer now naming another client_id ends its WebSocket (1008) and SSE stream with token_identity_changed, audited', async () => {
    const answer = { active: true, sub: 'user-bob', client_id: 'agent-1', scope: 'api:read' };
    await identityChangeEndsStreams('opaque-client-reassigned', answer, { ...answer, client_id: 'agent-2' });
  });

  it('attack: an answer now naming the same sub of another identity provider (its believed sub_id) ends them too', async () => {
    const answer = {
      active: true,
      sub: 'user-dave',
      client_id: 'agent-1',
      scope: 'api:read',
      sub_id: { format: 'iss_sub', iss: 'https://idp-a.example', sub: 'user-dave' },
    };
    await identityChangeEndsStreams('opaque-subject-issuer-changed', answer, {
      ...answer,
      sub_id: { format: 'iss_sub', iss: 'https://idp-b.example', sub: 'user-dave' },
    });
  });

  it('attack: an answer that drops its sub ends them too', async () => {
    const answer = { active: true, sub: 'user-carol', client_id: 'agent-1', scope: 'api:read' };
    await identityChangeEndsStreams('opaque-sub-dropped', answer, { active: true, client_id: 'agent-1', scope: 'api:read' });
  });
});
