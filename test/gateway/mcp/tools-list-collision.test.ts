/**
 * A tools list in the JSON answer to another request. The MCP SDK's server in JSON response mode
 * routes a response to the HTTP request by the JSON-RPC id alone: a second request of the same id
 * on the session takes over the first one's answer. A caller sending a tools/list, then a
 * tools/call of a tool it may call with the same id while the list is being made, received the
 * tools/list result as the answer to the tools/call, which the gateway passed unread: every tool
 * of the upstream, those the caller may not call included.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { mcpRoute, requestEvents, startUpstream, type TestGateway, token, type Upstream } from '../helpers.ts';
import { ACCEPT, RULES, startToolsGateway, TOOL_LIST } from './helpers.ts';

/**
 * A stateful MCP server answering in JSON, whose tools/list takes 100 ms (a list read from
 * elsewhere) and whose tools/call takes `callMs`; `big` makes the echo tool answer that many bytes.
 */
async function startSlowListUpstream(): Promise<{ url: string; big: { bytes: number }; close(): Promise<void> }> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const big = { bytes: 0 };
  const http: HttpServer = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const id = req.headers['mcp-session-id'];
    let transport = typeof id === 'string' ? transports.get(id) : undefined;
    if (transport === undefined) {
      const t = new StreamableHTTPServerTransport({
        sessionIdGenerator: randomUUID,
        enableJsonResponse: true,
        onsessioninitialized: (sid) => {
          transports.set(sid, t);
        },
      });
      const server = new Server({ name: 'slow-list', version: '1.0.0' }, { capabilities: { tools: {} } });
      server.setRequestHandler(ListToolsRequestSchema, async () => {
        await sleep(100);
        return { tools: TOOL_LIST };
      });
      server.setRequestHandler(CallToolRequestSchema, async (request) => {
        await sleep(300);
        return { content: [{ type: 'text', text: big.bytes > 0 ? 'x'.repeat(big.bytes) : request.params.name }] };
      });
      await server.connect(t);
      transport = t;
    }
    await transport.handleRequest(req, res, body);
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    big,
    close: async () => {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

describe('gateway: MCP tools/list filtering, a tools list answering another request', () => {
  let upstream: Awaited<ReturnType<typeof startSlowListUpstream>>;
  let gw: TestGateway;
  let user: string;
  let session: string;

  const post = (body: unknown, signal?: AbortSignal) =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      signal,
      headers: {
        'content-type': 'application/json',
        accept: ACCEPT,
        authorization: `Bearer ${user}`,
        'mcp-protocol-version': '2025-06-18',
        ...(session ? { 'mcp-session-id': session } : {}),
      },
      body: JSON.stringify(body),
    });

  before(async () => {
    upstream = await startSlowListUpstream();
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)]);
    // echo and files.read (the catch-all) only: files.write and admin.reset are not this caller's.
    user = await token({ sub: 'lister', scope: 'mcp:use echo:use', client_id: 'agent' });
    session = '';
    const init = await post({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'attacker', version: '1' } },
    });
    assert.equal(init.status, 200);
    await init.text();
    session = init.headers.get('mcp-session-id') as string;
    await (await post({ jsonrpc: '2.0', method: 'notifications/initialized' })).text();
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  /** A tools/list of id 5, then, while it is made, `second` (id 5 too): the answer to `second`. */
  async function collide(second: unknown): Promise<Response> {
    const stop = new AbortController();
    const list = post({ jsonrpc: '2.0', id: 5, method: 'tools/list' }, stop.signal).catch(() => undefined);
    await sleep(30);
    try {
      return await post(second);
    } finally {
      stop.abort();
      await list;
    }
  }

  it('the setup holds: a tools/list lists echo and files.read only', async () => {
    const res = await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    const names = ((await res.json()) as { result: { tools: { name: string }[] } }).result.tools.map((t) => t.name);
    assert.deepEqual(names, ['echo', 'files.read']);
  });

  it('attack: a tools/call of the same id as a pending tools/list gets the tools list filtered, not every tool of the upstream', async () => {
    const res = await collide({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: {} } });
    const text = await res.text();
    assert.doesNotMatch(text, /admin\.reset|files\.write/);
    assert.equal(res.status, 200);
    const answer = JSON.parse(text) as { id: number; result: { tools: { name: string }[] } };
    assert.deepEqual(
      answer.result.tools.map((t) => t.name),
      ['echo', 'files.read'],
    );
    assert.equal(res.headers.get('content-length'), String(Buffer.byteLength(text)));
    const e = ((await requestEvents(gw)) as AuditEvent[]).find((ev) => ev.tool === 'echo' && ev.detail?.tools_hidden !== undefined);
    assert.equal(e?.detail?.tools_hidden, 2);
  });

  it('any other JSON answer passes as the upstream wrote it, a large one streamed', async () => {
    const small = await post({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: {} } });
    assert.equal(small.status, 200);
    assert.deepEqual(await small.json(), { jsonrpc: '2.0', id: 7, result: { content: [{ type: 'text', text: 'echo' }] } });
    upstream.big.bytes = 5 << 20; // past max_tools_list_size (4mb)
    try {
      const large = await post({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo', arguments: {} } });
      assert.equal(large.status, 200);
      const answer = (await large.json()) as { result: { content: { text: string }[] } };
      assert.equal(answer.result.content[0]?.text.length, 5 << 20);
    } finally {
      upstream.big.bytes = 0;
    }
  });
});

describe('gateway: MCP tools/list filtering, a JSON answer to another request read for a tools list', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let user: string;
  /** The next answer's head and body. */
  let answer: { head: Record<string, string>; body: Buffer; split?: number };

  before(async () => {
    upstream = await startUpstream((_req, res) => {
      const { head, body, split } = answer;
      res.writeHead(200, { 'content-length': String(body.length), ...head });
      if (split === undefined) res.end(body);
      else {
        // The first part alone, then the rest: the gateway has streamed the first part on.
        res.write(body.subarray(0, split));
        setTimeout(() => res.end(body.subarray(split)), 100);
      }
    });
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES, { mcp: { max_tools_list_size: '1kb' } })]);
    user = await token({ sub: 'reader', scope: 'mcp:use echo:use', client_id: 'agent' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = () =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${user}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo' } }),
    });
  const listing = (prefix = '') => `{"jsonrpc":"2.0","id":3,"result":{${prefix}"tools":[{"name":"echo"},{"name":"admin.reset"}]}}`;

  it('attack: one opening with a byte-order mark (which fetch’s json() skips) is filtered', async () => {
    answer = {
      head: { 'content-type': 'application/json' },
      body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(listing())]),
    };
    const res = await call();
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { jsonrpc: '2.0', id: 3, result: { tools: [{ name: 'echo' }] } });
  });

  it('attack: one past max_tools_list_size whose tools show up after the limit is cut before them', async () => {
    const body = Buffer.from(listing(`"pad":"${'x'.repeat(4096)}",`));
    answer = { head: { 'content-type': 'application/json' }, body, split: body.indexOf('"tools"') };
    const res = await call();
    assert.equal(res.status, 200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const got: Uint8Array[] = [];
    await assert.rejects(async () => {
      for (let r = await reader.read(); !r.done; r = await reader.read()) got.push(r.value);
    });
    assert.doesNotMatch(Buffer.concat(got).toString(), /admin\.reset/);
    const e = ((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent;
    assert.equal(e.detail?.tools_list, 'mcp_tools_list_invalid');
  });

  it('attack: one compressed anyway, unreadable, is refused 502', async () => {
    answer = { head: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync(listing()) };
    const res = await call();
    assert.equal(res.status, 502);
    assert.doesNotMatch(await res.text(), /admin\.reset/);
  });
});
