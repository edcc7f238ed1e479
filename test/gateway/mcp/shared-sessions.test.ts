/**
 * Signed MCP sessions across gateway instances: a real MCP server behind two (and more) gateways,
 * a real MCP SDK client in front. Gateways with the same `gateway.mcp_session_secret` accept each
 * other's sessions and keep them across a restart; another key, another principal or an altered
 * MAC is refused 404 before the upstream, on POST, GET (SSE) and DELETE.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pino from 'pino';
import type { AuditEvent } from '../../../src/audit/event.ts';
import type { TesseraConfigInput } from '../../../src/config/schema.ts';
import type { GatewayDeps } from '../../../src/gateway/gateway.ts';
import { type McpUpstream, startMcpUpstream } from '../../helpers/mcp-upstream.ts';
import {
  baseConfig,
  mcpRoute,
  parse,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from '../helpers.ts';

const SECRET = 'shared-mcp-session-secret-0123456789-abcdef';
const OTHER_SECRET = 'another-mcp-session-secret-0123456789-xyz';
const ACCEPT = 'application/json, text/event-stream';
const LIST = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}';

function config(upstream: string, secret: boolean): TesseraConfigInput {
  return {
    ...baseConfig(),
    scopes: { 'mcp:use': {}, 'api:read': {} },
    gateway: {
      ...(secret ? { mcp_session_secret: '${MCP_SESSION_SECRET}' } : {}),
      routes: [mcpRoute(upstream, [{ scopes: { any: ['mcp:use', 'api:read'] } }], { auth: ['jwt', 'static'] })],
    },
  };
}

describe('gateway: MCP sessions shared by instances with the same key', () => {
  let upstream: McpUpstream;
  let a: TestGateway;
  let b: TestGateway;
  let other: TestGateway;
  const logLines: string[] = [];
  const started: TestGateway[] = [];
  const clients: Client[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      logLines.push(String(chunk));
      done();
    },
  });

  const start = async (secret: string | undefined, deps: GatewayDeps = {}) => {
    const gw = await startGateway(
      config(upstream.url, secret !== undefined),
      { logger: pino({ level: 'debug' }, sink), ...deps },
      secret !== undefined ? { MCP_SESSION_SECRET: secret } : {},
    );
    started.push(gw);
    return gw;
  };
  const alice = () => token({ sub: 'alice', scope: 'mcp:use', client_id: 'alice-agent' });
  async function connect(gw: TestGateway, t: string): Promise<string> {
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${t}` } },
    });
    const client = new Client({ name: 'test-agent', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    return transport.sessionId as string;
  }
  const send = (gw: TestGateway, method: string, t: string, sid: string, probe: string, body?: string) =>
    fetch(`${gw.url}/mcp`, {
      method,
      headers: {
        accept: method === 'GET' ? 'text/event-stream' : ACCEPT,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        authorization: `Bearer ${t}`,
        'mcp-session-id': sid,
        'x-probe': probe,
      },
      ...(body !== undefined ? { body } : {}),
    });
  const probed = (probe: string) => upstream.requests.filter((r) => r.headers['x-probe'] === probe);
  const lastEvent = async (gw: TestGateway) => ((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent;
  const bare = (sid: string) => sid.slice(0, sid.lastIndexOf('.'));

  before(async () => {
    upstream = await startMcpUpstream();
    a = await start(SECRET);
    b = await start(SECRET);
    other = await start(OTHER_SECRET);
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    for (const gw of started) await gw.close().catch(() => {});
    await upstream.close();
  });

  it('a session created through gateway A is used through gateway B (POST, SSE GET, DELETE); the upstream sees the bare id', async () => {
    const t = await alice();
    const init = await fetch(`${a.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
      }),
    });
    assert.equal(init.status, 200);
    await init.text();
    const sid = init.headers.get('mcp-session-id') as string;
    assert.match(sid, /^[0-9a-f-]{36}\.[A-Za-z0-9_-]{22}$/);
    const initialized = await send(b, 'POST', t, sid, 'via-b', '{"jsonrpc":"2.0","method":"notifications/initialized"}');
    assert.equal(initialized.status, 202);

    const call = await send(
      b,
      'POST',
      t,
      sid,
      'via-b',
      '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}}',
    );
    assert.equal(call.status, 200);
    assert.match(await call.text(), /echo:b/);
    assert.equal((await lastEvent(b)).decision, 'allow');

    const controller = new AbortController();
    const stream = await fetch(`${b.url}/mcp`, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${t}`, 'mcp-session-id': sid, 'x-probe': 'via-b' },
      signal: controller.signal,
    });
    assert.equal(stream.status, 200);
    assert.match(stream.headers.get('content-type') ?? '', /text\/event-stream/);
    // An upstream echoing the session id in its answer is signed again, never shown bare.
    assert.equal(stream.headers.get('mcp-session-id'), sid);
    controller.abort();

    const del = await send(b, 'DELETE', t, sid, 'via-b');
    assert.equal(del.status, 200);
    await del.text();

    const seen = probed('via-b');
    assert.deepEqual(
      seen.map((r) => r.method),
      ['POST', 'POST', 'GET', 'DELETE'],
    );
    for (const r of seen) assert.equal(r.headers['mcp-session-id'], bare(sid));
    // Ended at the upstream: the next use through A is the upstream's 404.
    const gone = await send(a, 'POST', t, sid, 'after-delete', LIST);
    assert.equal(gone.status, 404);
    await gone.text();
    assert.equal(probed('after-delete').length, 1);
  });

  it('a gateway with another key refuses the session 404 (mcp_session_principal_mismatch), before the upstream', async () => {
    const t = await alice();
    const sid = await connect(a, t);
    for (const method of ['POST', 'GET', 'DELETE']) {
      const res = await send(other, method, t, sid, 'other-key', method === 'POST' ? LIST : undefined);
      assert.equal(res.status, 404, method);
      assert.deepEqual(((await res.json()) as { error: unknown }).error, { code: -32001, message: 'Session not found.' });
      assert.equal((await lastEvent(other)).reason, 'mcp_session_principal_mismatch');
    }
    assert.equal(probed('other-key').length, 0);
  });

  it('a session survives a gateway restart with the same key', async () => {
    const t = await alice();
    const first = await start(SECRET);
    const sid = await connect(first, t);
    await first.close();
    const restarted = await start(SECRET);
    const res = await send(restarted, 'POST', t, sid, 'restarted', LIST);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /"tools"/);
    assert.equal(probed('restarted')[0]?.headers['mcp-session-id'], bare(sid));
  });

  it('session hijack across instances: another principal presenting the id through B is refused on POST, GET and DELETE', async () => {
    const sid = await connect(a, await alice());
    const mallory = await token({ sub: 'mallory', scope: 'mcp:use', client_id: 'mallory-agent' });
    const sameSubjectOtherClient = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'other-agent' });
    for (const t of [mallory, sameSubjectOtherClient]) {
      for (const method of ['POST', 'GET', 'DELETE']) {
        const res = await send(b, method, t, sid, 'hijack', method === 'POST' ? LIST : undefined);
        assert.equal(res.status, 404, method);
        await res.text();
        assert.equal((await lastEvent(b)).reason, 'mcp_session_principal_mismatch');
      }
    }
    // The static token (another kind of principal) neither.
    const ci = await fetch(`${b.url}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: ACCEPT,
        authorization: 'Bearer static-gateway-token-0123456789-abcdefghij',
        'mcp-session-id': sid,
        'x-probe': 'hijack',
      },
      body: LIST,
    });
    assert.equal(ci.status, 404);
    assert.equal(probed('hijack').length, 0);
  });

  it('forged, altered, truncated or unsigned ids are refused before the upstream', async () => {
    const t = await alice();
    const sid = await connect(a, t);
    const id = bare(sid);
    const mac = sid.slice(-22);
    const flipped = `${id}.${mac[0] === 'A' ? 'B' : 'A'}${mac.slice(1)}`;
    const cases: [string, string][] = [
      [flipped, 'mcp_session_principal_mismatch'],
      [`${id}.${'A'.repeat(22)}`, 'mcp_session_principal_mismatch'],
      [`not-${id}.${mac}`, 'mcp_session_principal_mismatch'],
      [sid.slice(0, -1), 'mcp_session_unknown'],
      [id, 'mcp_session_unknown'],
      [`${sid}.${mac}`, 'mcp_session_principal_mismatch'],
    ];
    for (const [presented, reason] of cases) {
      const res = await send(b, 'POST', t, presented, 'forged', LIST);
      assert.equal(res.status, 404, presented);
      await res.text();
      assert.equal((await lastEvent(b)).reason, reason, presented);
    }
    assert.equal(probed('forged').length, 0);
  });

  it('a session id spelled Mcp_Session_Id (read as Mcp-Session-Id by CGI-style servers) is refused, not passed on', async () => {
    const t = await alice();
    const sid = await connect(a, t);
    const res = await fetch(`${b.url}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: ACCEPT,
        authorization: `Bearer ${t}`,
        mcp_session_id: bare(sid),
        'x-probe': 'underscore',
      },
      body: LIST,
    });
    assert.equal(res.status, 404);
    await res.text();
    assert.equal((await lastEvent(b)).reason, 'mcp_session_unknown');
    assert.equal(probed('underscore').length, 0);
  });

  it('without a secret or host key, each process signs with its own random key, with a warning at start', async () => {
    const before = logLines.length;
    const one = await start(undefined);
    const two = await start(undefined);
    assert.ok(
      logLines
        .slice(before)
        .some((l) => /"event":"config_warning"/.test(l) && /random key of this process/.test(l) && /mcp_session_secret/.test(l)),
    );
    const t = await alice();
    const sid = await connect(one, t);
    const res = await send(two, 'POST', t, sid, 'random-key', LIST);
    assert.equal(res.status, 404);
    await res.text();
    assert.equal(probed('random-key').length, 0);
    // With the secret set, no such warning.
    const quiet = logLines.length;
    await start(SECRET);
    assert.ok(!logLines.slice(quiet).some((l) => /random key of this process/.test(l)));
  });

  it('session key rotation: a reload changing mcp_session_secret ends the SSE stream of a session signed under the old secret; the same secret keeps it', async () => {
    const gw = await start(SECRET);
    const t = await alice();
    // A raw session (the SDK client would hold the one GET stream a session may have).
    const init = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
      }),
    });
    assert.equal(init.status, 200);
    await init.text();
    const sid = init.headers.get('mcp-session-id') as string;
    assert.equal((await send(gw, 'POST', t, sid, 'rotation', '{"jsonrpc":"2.0","method":"notifications/initialized"}')).status, 202);
    const controller = new AbortController();
    const stream = await fetch(`${gw.url}/mcp`, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${t}`, 'mcp-session-id': sid },
      signal: controller.signal,
    });
    assert.equal(stream.status, 200);
    let ended = false;
    const reading = (async () => {
      try {
        for await (const _ of stream.body as ReadableStream<Uint8Array>);
      } catch {}
      ended = true;
    })();
    const reload = (secret: string) => {
      const r = gw.served.gateway.reload(parse(config(upstream.url, true), { MCP_SESSION_SECRET: secret }));
      assert.equal(r.ok, true, r.ok ? '' : r.error.message);
    };
    // The same secret: the session is still this caller's, the stream goes on.
    reload(SECRET);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(ended, false, 'a reload keeping the secret ended the stream');
    // Another secret: the id no longer opens, so the stream on it ends (as a new request would be refused).
    reload(OTHER_SECRET);
    await Promise.race([
      reading,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the stream outlived its session key')), 2000)),
    ]);
    assert.equal(ended, true);
    await gw.served.gateway.audit.flush();
    const closed = gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed');
    assert.deepEqual(
      closed.map((e) => [e.reason, e.route]),
      [['config_narrowed', 'mcp']],
    );
    const refused = await send(gw, 'POST', t, sid, 'rotated', LIST);
    assert.equal(refused.status, 404);
    await refused.text();
    controller.abort();
  });

  it('the session secret appears in no log line or audit event', async () => {
    const audit = JSON.stringify([a, b, other].flatMap((g) => g.audit.events));
    const logs = logLines.join('');
    assert.ok(logs.length > 0);
    for (const s of [SECRET, OTHER_SECRET]) {
      assert.ok(!audit.includes(s));
      assert.ok(!logs.includes(s));
    }
  });
});

describe('gateway: an MCP upstream sending an invalid session id', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let sessionHeader: string | string[] = '';
  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.setHeader('mcp-session-id', sessionHeader);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{}}');
    });
    gw = await startGateway(config(upstream.url, true), {}, { MCP_SESSION_SECRET: SECRET });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('is refused 502 (mcp_upstream_session_invalid): not visible ASCII, too long, or repeated; a valid one is signed', async () => {
    const t = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'alice-agent' });
    const initialize = () =>
      fetch(`${gw.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
        body: '{"jsonrpc":"2.0","id":1,"method":"initialize"}',
      });
    for (const bad of ['has space', 'x'.repeat(513), ['one', 'two']]) {
      sessionHeader = bad;
      const res = await initialize();
      assert.equal(res.status, 502, JSON.stringify(bad).slice(0, 40));
      assert.equal(res.headers.get('mcp-session-id'), null);
      const body = await res.text();
      assert.ok(!body.includes('space') && !body.includes('xxxx'));
      assert.equal((await lastEventOf(gw)).reason, 'mcp_upstream_session_invalid');
    }
    sessionHeader = 'ok-session';
    const ok = await initialize();
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('mcp-session-id') ?? '', /^ok-session\.[A-Za-z0-9_-]{22}$/);
  });
});

async function lastEventOf(gw: TestGateway): Promise<AuditEvent> {
  return ((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent;
}
