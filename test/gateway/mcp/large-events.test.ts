/**
 * Large response events on the SSE streams of an MCP route. Every such stream is read for tools
 * lists (a resumed one may replay a tools/list response), but a response that is not a tools list
 * (a tools/call result: a file read, a big search answer) must reach the caller whatever its size,
 * not be replaced by an error because it is larger than `mcp.max_tools_list_size`. A response
 * found to carry `result.tools` only after the limit was passed is cut before its end, so that no
 * client ever dispatches it. Against a real MCP server (the SDK's Server +
 * StreamableHTTPServerTransport on loopback) and real SDK clients, and raw upstreams for what the
 * SDK does not send.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { CallToolRequestSchema, type JSONRPCMessage, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { MessageKeys, ToolsListEvents } from '../../../src/gateway/mcp/tools-list.ts';
import { capturedLog, mcpRoute, requestEvents, startUpstream, type TestGateway, token, type Upstream } from '../helpers.ts';
import {
  connectClient,
  dataLines,
  RULES,
  type StatelessMcpUpstream,
  startStatelessMcpUpstream,
  startToolsGateway,
  TOOL_LIST,
  TOOLS,
} from './helpers.ts';

/** Larger than the default max_tools_list_size (4mb). */
const BIG = 5 << 20;

/** A file's worth of text that names tools, as JSON inside a string (escaped quotes) would. */
const bigText = (): string => {
  const piece = 'line {"tools":[{"name":"admin.reset"}]} "tools": \\ x\n';
  return piece.repeat(Math.ceil(BIG / piece.length));
};

/** A real MCP server, stateless, answering in SSE (`json`: JSON): its tools are four, each call answers 5 MB. */
function startBigUpstream(json: boolean): Promise<StatelessMcpUpstream> {
  return startStatelessMcpUpstream(json, () => {
    const server = new Server({ name: 'big', version: '1.0.0' }, { capabilities: { tools: {} } });
    server.setRequestHandler(ListToolsRequestSchema, async () => ({
      tools: TOOLS.map((name) => ({ name, inputSchema: { type: 'object' as const } })),
    }));
    server.setRequestHandler(CallToolRequestSchema, async (request) => {
      if (request.params.name === 'files.read') return { content: [{ type: 'text', text: bigText() }] };
      // A `tools` member deeper than result's own members: not a tools list.
      return {
        content: [{ type: 'text', text: 'structured' }],
        structuredContent: { tools: TOOL_LIST, blob: 'y'.repeat(BIG) },
      };
    });
    return server;
  });
}

for (const mode of ['sse', 'json'] as const) {
  describe(`gateway: MCP tools/call results larger than max_tools_list_size reach the caller whole (${mode} answers)`, () => {
    let upstream: StatelessMcpUpstream;
    let gw: TestGateway;
    const clients: Client[] = [];

    before(async () => {
      upstream = await startBigUpstream(mode === 'json');
      gw = await startToolsGateway([mcpRoute(upstream.url, RULES)]);
    });
    after(async () => {
      for (const c of clients) await c.close().catch(() => {});
      await gw?.close();
      await upstream?.close();
    });

    async function connect(): Promise<Client> {
      const t = await token({ sub: `big-${mode}`, scope: 'mcp:use echo:use' });
      return connectClient(`${gw.url}/mcp`, t, clients);
    }

    it('a 5 MB tools/call result (text naming tools inside a string) arrives intact through the SDK client', async () => {
      const client = await connect();
      const result = await client.callTool({ name: 'files.read', arguments: {} });
      assert.equal(result.isError, undefined);
      assert.equal((result.content as { text: string }[])[0]?.text, bigText());
    });

    it('a 5 MB tools/call result with a tools member nested below result (structuredContent.tools) arrives intact', async () => {
      const client = await connect();
      const result = await client.callTool({ name: 'echo', arguments: {} });
      assert.deepEqual(result.structuredContent, { tools: TOOL_LIST, blob: 'y'.repeat(BIG) });
    });

    it('tools/list through the same route is still filtered', async () => {
      const client = await connect();
      assert.deepEqual(
        (await client.listTools()).tools.map((t) => t.name),
        ['echo', 'files.read'],
      );
    });
  });
}

/** The complete events (ended by a blank line) of an event stream's text. */
function completeEvents(text: string): string[] {
  const events = text.split(/\r\n\r\n|\n\n|\r\r/);
  events.pop(); // what follows the last blank line: not an event (yet)
  return events.filter((e) => e !== '');
}

/** An event's data, its data lines joined. */
const dataOf = (event: string) => dataLines(event).join('\n');

/** Reads a response to its end, or to its cut: the text that arrived and whether it was cut. */
async function readAll(res: Response): Promise<{ text: string; cut: boolean }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { text, cut: false };
      text += decoder.decode(value, { stream: true });
    }
  } catch {
    return { text, cut: true };
  }
}

describe('gateway: MCP response events larger than max_tools_list_size from raw upstreams', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let answer = '';
  const padding = 'x'.repeat(BIG);
  const note = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'x' } });
  const { lines: log, logger } = capturedLog();

  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' }).end(answer);
    });
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)], { logger });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  const auth = async (sub: string) => `Bearer ${await token({ sub, scope: 'mcp:use echo:use' })}`;
  const get = async (sub: string) => fetch(`${gw.url}/mcp`, { headers: { authorization: await auth(sub), accept: 'text/event-stream' } });
  const lastAudit = async (sub: string) => ((await requestEvents(gw)) as AuditEvent[]).filter((e) => e.subject === sub).at(-1);

  it('a 5 MB response without tools on a GET stream passes with its data unchanged, the events around it too', async () => {
    const response = JSON.stringify({ jsonrpc: '2.0', id: 3, result: { content: [{ type: 'text', text: padding }] } });
    answer = `data: ${note}\n\nid: e1\nevent: message\ndata: ${response}\n\ndata: ${note}\n\n`;
    const { text, cut } = await readAll(await get('plain'));
    assert.equal(cut, false);
    const events = completeEvents(text);
    assert.equal(events.length, 3);
    assert.equal(dataOf(events[0] as string), note);
    assert.ok((events[1] as string).startsWith('id: e1.'), 'its id signed as any other'); // see events.ts
    assert.ok((events[1] as string).includes('\nevent: message\n'));
    assert.equal(dataOf(events[1] as string), response);
    assert.equal(dataOf(events[2] as string), note);
    assert.equal((await lastAudit('plain'))?.detail?.tools_list, undefined);
  });

  it('attack: a response whose result.tools comes after 5 MB of other members is cut before its end, its tools never sent', async () => {
    answer = `data: ${note}\n\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 4, result: { padding, tools: TOOL_LIST } })}\n\ndata: ${note}\n\n`;
    const { text, cut } = await readAll(await get('late-tools'));
    assert.equal(cut, true);
    const events = completeEvents(text);
    // The notification before it arrived; the response never ends, nothing after it is sent.
    assert.deepEqual(events.map(dataOf), [note]);
    assert.ok(!text.includes('admin.reset'));
    assert.ok(!text.includes('"tools"'));
    const e = await lastAudit('late-tools');
    assert.equal(e?.detail?.tools_list, 'mcp_tools_list_invalid');
    // The operator is told too: one warning naming the route, the reason and the request, no tool of it.
    const told = log.filter((l) => l.request_id === e?.request_id && l.level === 40);
    assert.equal(told.length, 1, JSON.stringify(log));
    assert.equal(told[0]?.reason_id, 'mcp_tools_list_invalid');
    assert.equal(told[0]?.route, e?.route);
    assert.equal(told[0]?.stream_cut, true);
    assert.ok(!JSON.stringify(told).includes('admin.reset'));
  });

  it('attack: result.tools after 5 MB, spelled another way ("Tools", escaped "tool\\u0073") or on a later data line, is cut too', async () => {
    for (const data of [
      `{"jsonrpc":"2.0","id":5,"result":{"padding":"${padding}","Tools":${JSON.stringify(TOOL_LIST)}}}`,
      `{"jsonrpc":"2.0","id":5,"result":{"padding":"${padding}","tool\\u0073":${JSON.stringify(TOOL_LIST)}}}`,
      `{"jsonrpc":"2.0","id":5,"result":{"padding":"${padding}",\ndata: "tools":${JSON.stringify(TOOL_LIST)}}}`,
    ]) {
      answer = `data: ${data}\n\n`;
      const { text, cut } = await readAll(await get('spelled'));
      assert.equal(cut, true);
      assert.deepEqual(completeEvents(text), []);
      assert.ok(!text.includes('admin.reset'));
    }
  });

  it('attack: an oversized response naming result.tools before the limit is an error event, as before', async () => {
    answer = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 6, result: { tools: TOOL_LIST, padding } })}\n\n`;
    const { text, cut } = await readAll(await get('early-tools'));
    assert.equal(cut, false);
    assert.ok(!text.includes('admin.reset'));
    assert.deepEqual(
      completeEvents(text).map((e) => JSON.parse(dataOf(e))),
      [{ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'The upstream service is unavailable.' } }],
    );
  });

  it('attack: a tools/call POST stream whose response shows result.tools after 5 MB: the SDK client receives no message', async () => {
    answer = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: padding }], tools: TOOL_LIST } })}\n\n`;
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp`), {
      requestInit: { headers: { authorization: await auth('sdk-cut') } },
    });
    const messages: JSONRPCMessage[] = [];
    const errors: Error[] = [];
    transport.onmessage = (m) => messages.push(m);
    transport.onerror = (e) => errors.push(e);
    await transport.start();
    try {
      await transport.send({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: {} } });
      for (let i = 0; i < 500 && errors.length === 0 && messages.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(messages, []);
      assert.match(String(errors[0]), /SSE stream disconnected/);
    } finally {
      await transport.close();
    }
  });

  it('a tools/list POST stream keeps its limit: an oversized response to it is an error event, not streamed', async () => {
    answer = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 2, result: { padding, tools: TOOL_LIST } })}\n\n`;
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { authorization: await auth('listing'), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
    });
    const { text, cut } = await readAll(res);
    assert.equal(cut, false);
    assert.ok(!text.includes('admin.reset'));
    assert.ok(!text.includes(padding.slice(0, 100)));
    assert.deepEqual(JSON.parse(dataOf(completeEvents(text)[0] as string)).error.code, -32000);
  });
});

describe('MessageKeys: result.tools is found by depth and string state, however the bytes are cut', () => {
  /** Feeds `json` whole, and a byte at a time: both readings must agree. */
  const read = (json: string) => {
    const whole = new MessageKeys();
    whole.feed(Buffer.from(json));
    const bytewise = new MessageKeys();
    for (const b of Buffer.from(json)) bytewise.feed(Buffer.from([b]));
    assert.equal(bytewise.kind, whole.kind, json);
    assert.equal(bytewise.mayListTools, whole.mayListTools, json);
    return { kind: whole.kind, tools: whole.mayListTools };
  };

  for (const [what, json] of [
    ['tools after other members', '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}],"tools":[]}}'],
    ['tools first', '{"result":{"tools":[{"name":"a"}]},"id":1,"jsonrpc":"2.0"}'],
    ['tools after a nested object closed', '{"result":{"a":{"b":{"c":[1,{"d":2}]}},"tools":[]}}'],
    ['tools after a string ending in an escaped backslash', String.raw`{"result":{"a":"\\","tools":[]}}`],
    ['tools after a string holding an escaped quote', String.raw`{"result":{"a":"\"x\"","tools":[]}}`],
    ['tools spelled Tools', '{"result":{"Tools":[]}}'],
    ['tools escaped (tool\\u0073)', String.raw`{"result":{"tool\u0073":[]}}`],
    ['tools with a NUL', String.raw`{"result":{"tools\u0000":[]}}`],
    ['a result key spelled Result', '{"id":1,"Result":{"tools":[]}}'],
    ['a result key escaped (re\\u0073ult)', String.raw`{"id":1,"re\u0073ult":{"tools":[]}}`],
    ['a second result member', '{"result":{"a":1},"result":{"tools":[]}}'],
    ['a result member key too long to compare', `{"result":{"${String.raw`\u0000`.repeat(100)}tools":[]}}`],
    ['a top-level key too long to compare', `{"${String.raw`\u0000`.repeat(100)}result":{"tools":[]}}`],
    ['a result member key with an invalid escape', String.raw`{"result":{"tool\s":[]}}`],
    ['a batch', '[{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}]'],
    ['a second value after the first', '{"id":1,"result":{}} {"result":{"tools":[]}}'],
    ['whitespace and line breaks everywhere', '{ "id" : 1 ,\n "result" :\n {\n "a" : [ ] ,\n "tools" : [ ] } }'],
  ] as const) {
    it(`may list tools: ${what}`, () => assert.equal(read(json).tools, true));
  }

  for (const [what, json] of [
    ['a tools member nested below result', '{"id":1,"result":{"structuredContent":{"tools":[]},"content":[{"tools":1}]}}'],
    ['"tools" inside a string value', String.raw`{"id":1,"result":{"text":"{\"tools\": [\"admin.reset\"]}"}}`],
    ['"tools" as a value', '{"id":1,"result":{"a":"tools","b":["tools"]}}'],
    ['"tools" after an escaped backslash inside a string', String.raw`{"id":1,"result":{"a":"\\\",\"tools\":"}}`],
    ['a result that is an array', '{"id":1,"result":[{"tools":[]}]}'],
    ['tools in the error', '{"id":1,"error":{"code":1,"message":"m","data":{"tools":[]}}}'],
    ['tools in another top-level member', '{"id":1,"result":{"a":1},"_meta":{"tools":[]}}'],
    ['a result member nested in another member', '{"id":1,"meta":{"result":{"tools":[]}},"result":{}}'],
    ['a notification with tools in its params', '{"jsonrpc":"2.0","method":"notifications/x","params":{"tools":[]}}'],
    ['not an object', '"tools"'],
  ] as const) {
    it(`lists no tools: ${what}`, () => {
      assert.equal(read(json).tools, false);
      // The same JSON as a parser reads it: no tools member in an object result.
      const parsed = JSON.parse(json);
      assert.ok(typeof parsed.result !== 'object' || Array.isArray(parsed.result) || !('tools' in parsed.result));
    });
  }

  it('kinds: a response, a message, an ambiguous message, not an object', () => {
    assert.equal(read('{"id":1,"result":{}}').kind, 'response');
    assert.equal(read('{"method":"x","params":{"result":1}}').kind, 'message');
    assert.equal(read('{"method":"x","result":{}}').kind, 'ambiguous');
    assert.equal(read('{"result":{},"method":"x"}').kind, 'ambiguous');
    assert.equal(read('12').kind, 'other');
  });

  it('says so at the byte closing the key, not before: nothing after the key needs to be read', () => {
    const json = '{"id":1,"result":{"padding":"xx","tools":[{"name":"admin.reset"}]}}';
    const end = json.indexOf('"tools"') + '"tools"'.length;
    const keys = new MessageKeys();
    keys.feed(Buffer.from(json.slice(0, end - 1)));
    assert.equal(keys.mayListTools, false);
    keys.feed(Buffer.from(json.slice(end - 1, end)));
    assert.equal(keys.mayListTools, true);
  });
});

describe('ToolsListEvents: a response past the limit streams unless it lists tools (a small limit, any cut of the bytes)', () => {
  const LIMIT = 100;
  const filter = { id: null, listing: false, allows: (name: string) => name === 'echo', limit: LIMIT };
  const padding = 'p'.repeat(200);
  const note = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'x' } });
  const error = (id: number | null) =>
    `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32000, message: 'The upstream service is unavailable.' } })}\n\n`;
  /** The stream pushed whole, and a byte at a time: what went out each way, whether it was cut, what was reported. */
  const run = (stream: string, f: ConstructorParameters<typeof ToolsListEvents>[0] = filter) =>
    [[Buffer.from(stream)], [...Buffer.from(stream)].map((b) => Buffer.from([b]))].map((chunks) => {
      const reports: (number | 'invalid' | 'tasks')[] = [];
      const tools = new ToolsListEvents(f, (r) => reports.push(r));
      const out: Buffer[] = [];
      for (const c of chunks) {
        out.push(tools.push(c));
        if (tools.failed) break;
      }
      if (!tools.failed) out.push(tools.end());
      return { text: Buffer.concat(out).toString(), failed: tools.failed, reports };
    });

  for (const [what, data] of [
    ['a large result', JSON.stringify({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: padding }] } })],
    ['tools nested and in strings', JSON.stringify({ id: 1, result: { s: { tools: [] }, t: `"tools":${padding}` }, jsonrpc: '2.0' })],
    ['a large first member of no note', JSON.stringify({ _pad: padding, jsonrpc: '2.0', id: 1, result: {} })],
    ['an error', JSON.stringify({ jsonrpc: '2.0', id: 1, error: { code: 1, message: padding } })],
  ] as const) {
    it(`${what} passes byte for byte, on several data lines and CRLF too`, () => {
      for (const stream of [
        `data: ${note}\n\nid: 1\ndata: ${data}\n\ndata: ${note}\n\n`,
        `data: ${note}\r\n\r\nid: 1\r\n${data
          .split(',')
          .map((l) => `data: ${l}`)
          .join(',\r\n')}\r\n\r\n`,
      ]) {
        for (const way of run(stream)) {
          assert.equal(way.text, stream);
          assert.equal(way.failed, false);
          assert.deepEqual(way.reports, []);
        }
      }
    });
  }

  // Pushed a byte at a time, the bytes past the limit go out before the key is read: the event is
  // cut. Pushed whole, the line is read before any of it goes out: the event is an error event.
  it('attack: result.tools after the limit: cut before the event ends (an error event if read before), the tools never sent', () => {
    const response = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { padding, tools: [{ name: 'admin.reset' }] } });
    const stream = `data: ${note}\n\nevent: message\ndata: ${response}\n\ndata: ${note}\n\n`;
    const [whole, bytewise] = run(stream);
    assert.equal(whole?.text, `data: ${note}\n\n${error(null)}data: ${note}\n\n`);
    assert.deepEqual(whole?.reports, ['invalid']);
    for (const way of [bytewise]) {
      assert.ok(way !== undefined);
      assert.equal(way.failed, true);
      assert.ok(stream.startsWith(way.text), way.text);
      assert.ok(way.text.length > `data: ${note}\n\n`.length + LIMIT, 'what was held went out');
      assert.equal(way.text.indexOf('\n\n'), `data: ${note}`.length);
      assert.equal(way.text.indexOf('\n\n', `data: ${note}`.length + 2), -1, 'only the notification is a complete event');
      assert.ok(!way.text.includes('admin.reset'), way.text);
      assert.ok(!way.text.includes('"tools"'), way.text);
    }
  });

  it('attack: a late result.tools on a data line of its own is cut at that line', () => {
    const stream = `data: {"jsonrpc":"2.0","id":1,"result":{"padding":"${padding}",\ndata: "tools":[{"name":"admin.reset"}]}}\n\n`;
    const [whole, bytewise] = run(stream);
    assert.equal(whole?.text, stream.slice(0, stream.indexOf('\n') + 1), 'the first line went out past the limit');
    for (const way of [whole, bytewise]) {
      assert.ok(way !== undefined);
      assert.equal(way.failed, true);
      assert.ok(!way.text.includes('admin.reset'), way.text);
      assert.ok(!way.text.includes('\n\n'), way.text);
    }
  });

  it('attack: a late method (a response that reads as a request too) is cut, or an error event when read whole', () => {
    const stream = `data: {"jsonrpc":"2.0","id":1,"result":{"a":"${padding}"},"method":"x"}\n\n`;
    const [whole, bytewise] = run(stream);
    assert.equal(whole?.text, error(null));
    assert.equal(bytewise?.failed, true);
    assert.ok(!bytewise?.text.includes('\n\n'));
  });

  it('attack: result.tools before the limit: the event becomes an error event (as before), nothing of it sent', () => {
    const stream = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'admin.reset' }], padding } })}\n\n`;
    for (const way of run(stream)) {
      assert.equal(way.failed, false);
      assert.equal(way.text, error(null));
      assert.deepEqual(way.reports, ['invalid']);
    }
  });

  it('attack: a batch past the limit is an error event, never streamed', () => {
    const stream = `data: ${JSON.stringify([{ jsonrpc: '2.0', id: 1, result: { padding, tools: [{ name: 'admin.reset' }] } }])}\n\n`;
    for (const way of run(stream)) assert.equal(way.text, error(null));
  });

  it('the stream answering a tools/list keeps the limit: a large response is an error event', () => {
    const stream = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { padding, tools: [] } })}\n\n`;
    for (const way of run(stream, { ...filter, id: 1, listing: true })) {
      assert.equal(way.failed, false);
      assert.equal(way.text, error(1));
    }
  });

  it('an event held in very many small chunks (an upstream trickling bytes) goes out whole, streamed or not', () => {
    // Before, what was held went out spread into push()'s arguments: a RangeError past ~100k chunks.
    const pad = 'p'.repeat(300_000);
    for (const [data, limit] of [
      [`{"_pad":"${pad}","method":"notifications/x"}`, 4 << 20], // held (scan), then passed
      [`{"jsonrpc":"2.0","id":1,"result":{"a":"${pad}"}}`, 200_000], // held (hold), then streamed
    ] as const) {
      const stream = Buffer.from(`data: ${data}\n\n`);
      const tools = new ToolsListEvents({ ...filter, limit }, () => {});
      const out: Buffer[] = [];
      for (let i = 0; i < stream.length; i++) out.push(tools.push(stream.subarray(i, i + 1)));
      assert.equal(Buffer.concat(out).toString(), stream.toString());
    }
  });

  it('a small response with tools is still filtered whole (the limit not reached)', () => {
    const stream = `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'echo' }, { name: 'admin.reset' }] } })}\n\n`;
    for (const way of run(stream)) {
      assert.equal(way.text, `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'echo' }] } })}\n\n`);
      assert.deepEqual(way.reports, [1]);
    }
  });
});
