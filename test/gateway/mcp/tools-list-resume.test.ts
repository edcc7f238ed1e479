/**
 * Every event stream of an MCP route is read for tools lists, not only the one answering a POSTed
 * tools/list: a stream resumed with `Last-Event-ID` replays the upstream's stored events (the MCP
 * SDK's event store does), among them a tools/list response the caller dropped its POST stream
 * before; a standalone GET stream may carry a response too. Against a real MCP server (the SDK's
 * Server + StreamableHTTPServerTransport with an InMemoryEventStore, on loopback), and raw
 * upstreams for what the SDK does not send.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { capturedLog, mcpRoute, requestEvents, startUpstream, type TestGateway, token, type Upstream } from '../helpers.ts';
import { ACCEPT, dataLines, RULES, startToolsGateway, TOOL_LIST, TOOLS } from './helpers.ts';

/** The version whose clients the SDK server sends a priming event (an id, empty data) to. */
const VERSION = '2025-11-25';

/** One SSE event: its fields as sent (`id`, `data` joined with LF). */
interface SseEvent {
  readonly id: string | undefined;
  readonly data: string;
}

function parseEvents(text: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const event of text.split(/\r\n\r\n|\n\n|\r\r/)) {
    const lines = event.split(/\r\n|\n|\r/);
    const id = lines.find((l) => l.startsWith('id:'))?.replace(/^id: ?/, '');
    const data = dataLines(event);
    if (id !== undefined || data.length > 0) out.push({ id, data: data.join('\n') });
  }
  return out;
}

/** Reads an event stream until `done` says the events so far are enough (or it ends), then drops it. */
async function readUntil(res: Response, done: (events: SseEvent[]) => boolean): Promise<{ text: string; events: SseEvent[] }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  for (;;) {
    const events = parseEvents(text.slice(0, Math.max(0, text.lastIndexOf('\n\n') + 2)));
    if (done(events)) {
      await reader.cancel();
      return { text, events };
    }
    const { value, done: ended } = await reader.read();
    if (ended) return { text, events: parseEvents(text) };
    text += decoder.decode(value, { stream: true });
  }
}

const toolNames = (data: string) =>
  ((JSON.parse(data) as { result?: { tools?: { name: string }[] } }).result?.tools ?? []).map((t) => t.name);
const isResponse = (e: SseEvent) => e.data.includes('"result"') || e.data.includes('"error"');

/** A real MCP server with sessions and an event store; `servers` by session id, to notify on. */
interface StoreUpstream {
  readonly url: string;
  readonly servers: Map<string, Server>;
  close(): Promise<void>;
}

async function startStoreUpstream(): Promise<StoreUpstream> {
  const store = new InMemoryEventStore();
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const servers = new Map<string, Server>();
  const http: HttpServer = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const sid = req.headers['mcp-session-id'];
    let transport = typeof sid === 'string' ? transports.get(sid) : undefined;
    if (transport === undefined) {
      const server = new Server({ name: 'tools', version: '1.0.0' }, { capabilities: { tools: {}, logging: {} } });
      server.setRequestHandler(ListToolsRequestSchema, async () => {
        // The store orders events by their ids (a millisecond time first): the response comes after
        // the priming event.
        await new Promise((resolve) => setTimeout(resolve, 5));
        return { tools: TOOLS.map((name) => ({ name, inputSchema: { type: 'object' as const } })) };
      });
      const t: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        eventStore: store,
        onsessioninitialized: (id) => {
          transports.set(id, t);
          servers.set(id, server);
        },
      });
      transport = t;
      await server.connect(t);
    }
    await transport.handleRequest(req, res, body.length > 0 ? JSON.parse(body.toString()) : undefined);
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    servers,
    close: async () => {
      for (const t of transports.values()) await t.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

describe('gateway: MCP streams resumed or opened with GET are filtered for tools lists too', () => {
  let upstream: StoreUpstream;
  let gw: TestGateway;

  before(async () => {
    upstream = await startStoreUpstream();
    gw = await startToolsGateway([
      mcpRoute(upstream.url, RULES),
      mcpRoute(upstream.url, RULES, { id: 'unfiltered', match: { path_prefix: '/unfiltered' }, mcp: { filter_tools_list: false } }),
    ]);
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  /** A session opened through the gateway (initialize, SSE), and a POST on it. */
  async function open(path = '/mcp') {
    const t = await token({ sub: 'mallory', scope: 'mcp:use echo:use', client_id: 'mallory-agent' });
    const headers = (session?: string): Record<string, string> => ({
      authorization: `Bearer ${t}`,
      'content-type': 'application/json',
      accept: ACCEPT,
      'mcp-protocol-version': VERSION,
      ...(session === undefined ? {} : { 'mcp-session-id': session }),
    });
    const init = await fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: VERSION, capabilities: {}, clientInfo: { name: 't', version: '1' } },
      }),
    });
    assert.equal(init.status, 200);
    await init.text();
    const session = init.headers.get('mcp-session-id') as string;
    const initialized = await fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: headers(session),
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    assert.equal(initialized.status, 202);
    await initialized.body?.cancel();
    const get = (extra: Record<string, string> = {}) =>
      fetch(`${gw.url}${path}`, {
        headers: {
          authorization: `Bearer ${t}`,
          accept: 'text/event-stream',
          'mcp-session-id': session,
          'mcp-protocol-version': VERSION,
          ...extra,
        },
      });
    const post = (body: unknown) => fetch(`${gw.url}${path}`, { method: 'POST', headers: headers(session), body: JSON.stringify(body) });
    return { session, get, post };
  }

  it('attack: a tools/list POST stream dropped after its first event, resumed with GET and Last-Event-ID, replays only the permitted tools', async () => {
    const { get, post } = await open();
    const r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    assert.equal(r.status, 200);
    // The first event is the priming event (an id, empty data): dropped right after it.
    const first = await readUntil(r, (events) => events.length >= 1);
    const lastEventId = first.events[0]?.id;
    assert.ok(lastEventId !== undefined, first.text);
    const resumed = await get({ 'last-event-id': lastEventId });
    assert.equal(resumed.status, 200);
    const replay = await readUntil(resumed, (events) => events.some(isResponse));
    const response = replay.events.find(isResponse);
    assert.ok(response !== undefined, replay.text);
    assert.deepEqual(toolNames(response.data), ['echo', 'files.read']);
    assert.ok(!replay.text.includes('admin.reset') && !replay.text.includes('files.write'), replay.text);
    assert.equal((JSON.parse(response.data) as { id: unknown }).id, 2);
    // The GET's audit event is written once the gateway sees the stream closed.
    let e: AuditEvent | undefined;
    for (let i = 0; i < 100 && e === undefined; i++) {
      e = (await requestEvents(gw)).find((x) => x.method === 'GET' && x.detail?.tools_hidden !== undefined);
      if (e === undefined) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(e?.detail?.tools_hidden, 2);
  });

  it('attack: the whole tools/list POST stream read, then resumed from its first event id: the replay is filtered too', async () => {
    const { get, post } = await open();
    const r = await post({ jsonrpc: '2.0', id: 'list', method: 'tools/list' });
    const whole = parseEvents(await r.text());
    assert.deepEqual(toolNames((whole.find(isResponse) as SseEvent).data), ['echo', 'files.read']);
    const resumed = await get({ 'last-event-id': whole[0]?.id as string });
    const replay = await readUntil(resumed, (events) => events.some(isResponse));
    assert.deepEqual(toolNames((replay.events.find(isResponse) as SseEvent).data), ['echo', 'files.read']);
  });

  it('a notification on a standalone GET stream passes through unchanged (the same bytes as through a route not filtering)', async () => {
    const params = { level: 'info', logger: 'tools', data: { note: 'a "tools" word and {"result":{"tools":[]}} in a string' } };
    async function notified(path: string): Promise<string> {
      const { session, get } = await open(path);
      const r = await get();
      assert.equal(r.status, 200);
      assert.match(r.headers.get('content-type') ?? '', /text\/event-stream/);
      const reading = readUntil(r, (events) => events.some((e) => e.data.includes('notifications/message')));
      // The standalone stream is set up upstream once its head is out: notified after that.
      await new Promise((resolve) => setTimeout(resolve, 50));
      await (upstream.servers.get(session.slice(0, session.lastIndexOf('.'))) as Server).notification({
        method: 'notifications/message',
        params,
      });
      const { text, events } = await reading;
      return text.slice(text.indexOf((events.find((e) => e.data.includes('notifications/message')) as SseEvent).data));
    }
    const filtered = await notified('/mcp');
    assert.deepEqual(JSON.parse(filtered.slice(0, filtered.indexOf('\n'))), { jsonrpc: '2.0', method: 'notifications/message', params });
    assert.equal(filtered, await notified('/unfiltered'));
  });

  it('mcp.filter_tools_list: false: a resumed stream replays every tool', async () => {
    const { get, post } = await open('/unfiltered');
    const r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    const first = await readUntil(r, (events) => events.length >= 1);
    const resumed = await get({ 'last-event-id': first.events[0]?.id as string });
    const replay = await readUntil(resumed, (events) => events.some(isResponse));
    assert.deepEqual(toolNames((replay.events.find(isResponse) as SseEvent).data), TOOLS);
  });
});

describe('gateway: MCP GET streams from raw upstreams: responses carrying tools are filtered, unreadable streams refused', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let answer: { head: Record<string, string>; body: Buffer | string } = { head: {}, body: '' };
  const sse = (body: string) => ({ head: { 'content-type': 'text/event-stream' }, body });
  const { lines: log, logger } = capturedLog();

  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, answer.head).end(answer.body);
    });
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)], { logger });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });
  const get = async () =>
    fetch(`${gw.url}/mcp`, {
      headers: { authorization: `Bearer ${await token({ sub: 'raw', scope: 'mcp:use echo:use' })}`, accept: 'text/event-stream' },
    });

  it('attack: a standalone GET stream carrying a response with result.tools (any id, any method it answered) is filtered', async () => {
    const note = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'x' } });
    for (const id of [7, 'other', null]) {
      answer = sse(
        `data: ${note}\n\nid: e1\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, result: { tools: TOOL_LIST, nextCursor: 'n' } })}\n\n`,
      );
      const r = await get();
      assert.equal(r.status, 200);
      const events = parseEvents(await r.text());
      assert.equal(events[0]?.data, note);
      assert.deepEqual(toolNames(events[1]?.data as string), ['echo', 'files.read']);
      assert.deepEqual(JSON.parse(events[1]?.data as string).result.nextCursor, 'n');
      assert.equal(JSON.parse(events[1]?.data as string).id, id);
    }
  });

  it('a response on a GET stream without tools passes unchanged', async () => {
    const other = JSON.stringify({ jsonrpc: '2.0', id: 3, result: { content: [{ type: 'text', text: 'tools' }] } });
    answer = sse(`data: ${other}\n\n`);
    const r = await get();
    assert.equal(parseEvents(await r.text())[0]?.data, other);
  });

  it('a response without tools on several data lines (CRLF ends) reaches the caller as the same message, still on several lines', async () => {
    const other = '{"jsonrpc":"2.0",\n"id":3,\n"result":{"content":[]}}';
    answer = sse(
      `id: e2\r\n${other
        .split('\n')
        .map((l) => `data: ${l}\r\n`)
        .join('')}\r\n`,
    );
    const r = await get();
    const events = parseEvents(await r.text());
    assert.equal(events[0]?.data, other);
    assert.match(events[0]?.id ?? '', /^e2\./);
  });

  it('attack: a GET stream response carrying tools that cannot be read whole becomes a JSON-RPC error event, no tool name relayed', async () => {
    answer = sse(`data: {"jsonrpc":"2.0","id":4,"result":{"tools":${JSON.stringify(TOOL_LIST)},"tools":[]}}\n\n`);
    const r = await get();
    const text = await r.text();
    assert.ok(!text.includes('admin.reset'), text);
    assert.equal((JSON.parse(parseEvents(text)[0]?.data as string) as { error: { code: number } }).error.code, -32000);
    const e = (await requestEvents(gw)).at(-1) as AuditEvent;
    assert.equal(e.detail?.tools_list, 'mcp_tools_list_invalid');
    // The operator is told too, in one warning naming the route, the reason and the request.
    const told = log.filter((l) => l.request_id === e.request_id && l.level === 40);
    assert.equal(told.length, 1, JSON.stringify(log));
    assert.equal(told[0]?.reason_id, 'mcp_tools_list_invalid');
    assert.equal(told[0]?.route, e.route);
    assert.ok(!JSON.stringify(told).includes('admin.reset'), 'nothing of the upstream answer');
  });

  it('attack: a compressed GET event stream (asked for identity) is refused: it cannot be read for tools', async () => {
    const body = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 5, result: { tools: TOOL_LIST } })}\n\n`;
    answer = { head: { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' }, body: gzipSync(body) };
    const r = await get();
    assert.equal(r.status, 502);
    const text = await r.text();
    assert.ok(!text.includes('admin.reset'), text);
    const e = (await requestEvents(gw)).at(-1) as AuditEvent;
    assert.equal(e.reason, 'mcp_tools_list_invalid');
  });
});
