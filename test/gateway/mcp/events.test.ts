/**
 * SSE event ids on MCP routes: signed for the caller as they pass (EventIdSigner), and a stream
 * resumed with `Last-Event-ID` only from an id this caller was sent on this session. End to end
 * against a real MCP server whose event store is shared by every session.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { EventIdSigner, isEventStream } from '../../../src/gateway/mcp/events.ts';
import { type McpUpstream, startMcpUpstream } from '../../helpers/mcp-upstream.ts';
import { baseConfig, mcpRoute, requestEvents, startGateway, type TestGateway, token } from '../helpers.ts';

const sign = (id: string) => `${id}.SIGNED`;
/** The signer's output for `input` fed in chunks of `size` bytes. */
function run(input: string | Buffer, size = Number.POSITIVE_INFINITY): string {
  const s = new EventIdSigner(sign);
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(s.push(bytes.subarray(i, Math.min(bytes.length, i + size))));
  out.push(s.end());
  return Buffer.concat(out).toString('utf8');
}

describe('EventIdSigner', () => {
  const stream = 'event: message\nid: s1_1\ndata: {"a":1}\n\nid:s1_2\r\ndata: x\r\n\r\nid: s1_3\rdata: y\r\r: comment id: no\n';
  const signed =
    'event: message\nid: s1_1.SIGNED\ndata: {"a":1}\n\nid: s1_2.SIGNED\r\ndata: x\r\n\r\nid: s1_3.SIGNED\rdata: y\r\r: comment id: no\n';

  it('signs every id field, whatever the line ends (LF, CRLF, CR), and passes every other byte', () => {
    assert.equal(run(stream), signed);
  });

  it('gives the same bytes however the stream is cut into chunks (one byte at a time included)', () => {
    for (const size of [1, 2, 3, 5, 7, 13]) assert.equal(run(stream, size), signed, `chunks of ${size}`);
  });

  it('signs an id after a BOM opening the stream, even one split across chunks', () => {
    assert.equal(run('\uFEFFid: a\ndata: 1\n\n', 1), '\uFEFFid: a.SIGNED\ndata: 1\n\n');
    assert.equal(run('data: 1\n\uFEFFid: a\n'), 'data: 1\n\uFEFFid: a\n'); // only the stream's first line
  });

  it('leaves ids it cannot sign as they are: empty, not visible ASCII, longer than 512, "id" without a colon', () => {
    for (const line of ['id:', 'id: ', 'id: a b', 'id: é', 'id', `id: ${'x'.repeat(513)}`, 'ids: a', 'Id: a', ' id: a']) {
      assert.equal(run(`${line}\ndata: 1\n\n`), `${line}\ndata: 1\n\n`, JSON.stringify(line));
      assert.equal(run(`${line}\ndata: 1\n\n`, 1), `${line}\ndata: 1\n\n`, JSON.stringify(line));
    }
    assert.equal(run(`id: ${'x'.repeat(512)}\n`, 100), `id: ${'x'.repeat(512)}.SIGNED\n`);
  });

  it('sends a data line as it arrives: nothing of a line that cannot be an id is held back', () => {
    const s = new EventIdSigner(sign);
    assert.equal(s.push(Buffer.from('data: {"partial')).toString(), 'data: {"partial');
    assert.equal(s.push(Buffer.from('":1}\n')).toString(), '":1}\n');
    assert.equal(s.push(Buffer.from('i')).length, 0); // may still be an id line
    assert.equal(s.push(Buffer.from('x')).toString(), 'ix');
    assert.equal(s.push(Buffer.from(`\nid: ${'y'.repeat(600)}`)).length, 605); // too long to sign: not held
  });

  it('recognizes text/event-stream with parameters and in any case', () => {
    assert.equal(isEventStream('text/event-stream'), true);
    assert.equal(isEventStream('Text/Event-Stream; charset=utf-8'), true);
    assert.equal(isEventStream('application/json'), false);
    assert.equal(isEventStream(undefined), false);
  });
});

/** The `id:` values of an SSE body. */
const idsOf = (body: string) => [...body.matchAll(/^id: ?(.*)$/gm)].map((m) => (m[1] as string).replace(/\r$/, ''));

describe('gateway: MCP event ids and Last-Event-ID', () => {
  const store = new InMemoryEventStore();
  let upstream: McpUpstream;
  let gw: TestGateway;
  const ACCEPT = 'application/json, text/event-stream';
  const INIT = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } },
  });

  before(async () => {
    upstream = await startMcpUpstream({ eventStore: store });
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {} },
      gateway: { routes: [mcpRoute(upstream.url, [{ scopes: ['mcp:use'] }])] },
    });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  async function initialize(sub: string) {
    const t = await token({ sub, scope: 'mcp:use', client_id: `${sub}-agent` });
    const r = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json', accept: ACCEPT },
      body: INIT,
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /text\/event-stream/);
    const ids = idsOf(await r.text());
    return { token: t, session: r.headers.get('mcp-session-id') as string, ids };
  }
  const resume = (t: string, session: string, lastEventId: string, headerName = 'last-event-id') =>
    fetch(`${gw.url}/mcp`, {
      headers: { authorization: `Bearer ${t}`, accept: 'text/event-stream', 'mcp-session-id': session, [headerName]: lastEventId },
    });
  const upstreamGets = () => upstream.requests.filter((r) => r.method === 'GET');

  it('the caller receives the upstream event ids signed, never bare', async () => {
    const alice = await initialize('alice');
    assert.ok(alice.ids.length >= 1);
    const stored = [...(store as unknown as { events: Map<string, unknown> }).events.keys()];
    for (const id of alice.ids) {
      const dot = id.lastIndexOf('.');
      assert.ok(stored.includes(id.slice(0, dot)), 'the bare part is the upstream event id');
      assert.match(id.slice(dot + 1), /^[A-Za-z0-9_-]{22}$/);
    }
  });

  it('resuming from an event id the caller was sent reaches the upstream with the bare id', async () => {
    const alice = await initialize('alice');
    const r = await resume(alice.token, alice.session, alice.ids[0] as string);
    assert.equal(r.status, 200);
    await r.body?.cancel();
    const got = upstreamGets().at(-1);
    const bare = (alice.ids[0] as string).slice(0, (alice.ids[0] as string).lastIndexOf('.'));
    assert.equal(got?.headers['last-event-id'], bare);
  });

  it("another caller naming a victim's bare event id on its own session is refused (cross-session replay)", async () => {
    const alice = await initialize('alice');
    const mallory = await initialize('mallory');
    const before = upstreamGets().length;
    const bare = (alice.ids[0] as string).slice(0, (alice.ids[0] as string).lastIndexOf('.'));
    const r = await resume(mallory.token, mallory.session, bare);
    assert.equal(r.status, 400);
    const body = (await r.json()) as { error: { code: number } };
    assert.equal(body.error.code, -32600);
    assert.equal(upstreamGets().length, before, 'the upstream never saw it');
    const e = (await requestEvents(gw)).at(-1) as AuditEvent;
    assert.equal(e.decision, 'deny');
    assert.equal(e.reason, 'mcp_event_id_invalid');
  });

  it("another caller presenting a victim's signed event id is refused", async () => {
    const alice = await initialize('alice');
    const mallory = await initialize('mallory');
    const r = await resume(mallory.token, mallory.session, alice.ids[0] as string);
    assert.equal(r.status, 400);
    await r.body?.cancel();
  });

  it('an event id signed for one session does not resume another session of the same caller', async () => {
    const first = await initialize('bob');
    const second = await initialize('bob');
    const r = await resume(second.token, second.session, first.ids[0] as string);
    assert.equal(r.status, 400);
    await r.body?.cancel();
  });

  it('Last_Event_ID (an underscore spelling CGI-style servers read as the header) is refused', async () => {
    const alice = await initialize('alice');
    const before = upstreamGets().length;
    const r = await resume(alice.token, alice.session, alice.ids[0] as string, 'last_event_id');
    assert.equal(r.status, 400);
    await r.body?.cancel();
    assert.equal(upstreamGets().length, before);
  });
});

describe('gateway: MCP event streams from an upstream that compresses', () => {
  let gw: TestGateway;
  let seen: (string | undefined)[] = [];
  let always: false | 'gzip' | 'opaque' = false;
  const upstream = createServer((req, res) => {
    req.resume();
    seen.push(req.headers['accept-encoding']);
    const sse = 'id: s1_1\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n';
    const head = { 'content-type': 'text/event-stream', 'mcp-session-id': 'sess-1' };
    // A coding whose bytes would still read as SSE: the signer must not take them as plain text.
    if (always === 'opaque') {
      res.writeHead(200, { ...head, 'content-encoding': 'x-opaque' }).end(sse);
      return;
    }
    // As Express's compression() does: gzip whenever the client accepts it (or always, here).
    if (always === 'gzip' || /gzip/.test(String(req.headers['accept-encoding']))) {
      res.writeHead(200, { ...head, 'content-encoding': 'gzip' }).end(gzipSync(sse));
    } else res.writeHead(200, head).end(sse);
  });
  before(async () => {
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {} },
      gateway: {
        routes: [
          mcpRoute(url, [{ scopes: ['mcp:use'] }]),
          // A stream compressed anyway cannot be read for tools lists: passed only where none are filtered.
          mcpRoute(url, [{ scopes: ['mcp:use'] }], {
            id: 'unfiltered',
            match: { path_prefix: '/unfiltered' },
            mcp: { filter_tools_list: false },
          }),
        ],
      },
    });
  });
  after(async () => {
    await gw?.close();
    upstream.close();
  });
  const post = async (path: string) => {
    const t = await token({ sub: 'carol', scope: 'mcp:use', client_id: 'carol-agent' });
    return fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'accept-encoding': 'gzip',
      },
      body: '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}',
    });
  };
  const initialize = async (path = '/mcp') => {
    const r = await post(path);
    assert.equal(r.status, 200);
    return idsOf(await r.text());
  };

  it('the upstream is asked for an uncompressed answer, so the ids it sends are signed', async () => {
    seen = [];
    always = false;
    const ids = await initialize();
    assert.deepEqual(seen, ['identity']);
    assert.equal(ids.length, 1);
    assert.match(ids[0] as string, /^s1_1\.[A-Za-z0-9_-]{22}$/);
  });

  it('an upstream compressing anyway (tools lists not filtered): its bytes pass untouched (the ids unsigned, so not resumable), never rewritten inside the gzip', async () => {
    always = 'gzip';
    const ids = await initialize('/unfiltered');
    assert.deepEqual(ids, ['s1_1']);
  });

  it('a stream in a coding other than identity (tools lists not filtered) is never rewritten, even where its bytes look like id lines', async () => {
    always = 'opaque';
    const ids = await initialize('/unfiltered');
    assert.deepEqual(ids, ['s1_1']);
  });

  it('where tools lists are filtered, a stream compressed anyway is refused (502, JSON-RPC error): it cannot be read for them', async () => {
    for (const coding of ['gzip', 'opaque'] as const) {
      always = coding;
      const r = await post('/mcp');
      assert.equal(r.status, 502, coding);
      const body = (await r.json()) as { error: { code: number }; id: unknown };
      assert.equal(body.error.code, -32000);
      assert.equal(body.id, 1);
    }
  });
});
