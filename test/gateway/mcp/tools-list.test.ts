/**
 * tools/list on MCP routes lists only the tools the caller's token may call: the same rules that
 * decide tools/call decide each listed tool, in both answer forms of Streamable HTTP (a JSON body;
 * an SSE stream in which the response is one event among notifications), against a real MCP server
 * (the SDK's Server + StreamableHTTPServerTransport on loopback) and real MCP SDK clients; a result
 * the gateway cannot read whole and filter never reaches the caller unfiltered.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { ToolsListEvents } from '../../../src/gateway/mcp/tools-list.ts';
import { mcpRoute, requestEvents, startUpstream, type TestGateway, token, type Upstream } from '../helpers.ts';
import {
  ACCEPT,
  connectClient,
  dataLines,
  RULES,
  type StatelessMcpUpstream,
  startStatelessMcpUpstream,
  startToolsGateway,
  TOOL_LIST,
  TOOLS,
} from './helpers.ts';

const NOTIFICATION = { method: 'notifications/message', params: { level: 'info', data: 'listing tools' } };

/** A real MCP server, stateless, answering in JSON (`json`) or SSE. Its tools/list sends a log
 * notification first (SSE: on the request's stream), then waits for `hold` when one is set.
 * `params.cursor: "start"` lists the first two tools with `nextCursor: "next"`. */
interface ToolsUpstream extends StatelessMcpUpstream {
  readonly toolCalls: string[];
  hold: Promise<void> | undefined;
}

async function startToolsUpstream(json: boolean): Promise<ToolsUpstream> {
  const toolCalls: string[] = [];
  const upstream: Omit<ToolsUpstream, keyof StatelessMcpUpstream> = { toolCalls, hold: undefined };
  const served = await startStatelessMcpUpstream(json, () => {
    const server = new Server({ name: 'tools', version: '1.0.0' }, { capabilities: { tools: {}, logging: {} } });
    server.setRequestHandler(ListToolsRequestSchema, async (request, extra) => {
      await extra.sendNotification(NOTIFICATION as never);
      if (upstream.hold !== undefined) await upstream.hold;
      const all = TOOLS.map((name) => ({ name, description: `the ${name} tool`, inputSchema: { type: 'object' as const } }));
      if (request.params?.cursor === 'start') return { tools: all.slice(0, 2), nextCursor: 'next' };
      if (request.params?.cursor === 'next') return { tools: all.slice(2) };
      return { tools: all };
    });
    server.setRequestHandler(CallToolRequestSchema, async (request) => {
      toolCalls.push(request.params.name);
      return { content: [{ type: 'text', text: `${request.params.name}:ok` }] };
    });
    return server;
  });
  return Object.assign(upstream, served);
}

/** The JSON-RPC messages of an answer: its JSON body, or the data of each SSE event. */
async function messages(res: Response): Promise<Record<string, unknown>[]> {
  const text = await res.text();
  if ((res.headers.get('content-type') ?? '').startsWith('application/json')) return [JSON.parse(text)];
  const out: Record<string, unknown>[] = [];
  for (const event of text.split(/\r\n\r\n|\n\n|\r\r/)) {
    const data = dataLines(event);
    if (data.length > 0) out.push(JSON.parse(data.join('\n')));
  }
  return out;
}

const names = (message: Record<string, unknown> | undefined) =>
  ((message?.result as { tools?: { name: string }[] } | undefined)?.tools ?? []).map((t) => t.name);

for (const mode of ['json', 'sse'] as const) {
  describe(`gateway: MCP tools/list lists only the tools the token may call (${mode} answers)`, () => {
    let upstream: ToolsUpstream;
    let gw: TestGateway;
    const clients: Client[] = [];

    const mint = (sub: string, scope: string) => token({ sub, scope, client_id: `${sub}-agent` });
    const post = (path: string, t: string, body: unknown) =>
      fetch(`${gw.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
        body: JSON.stringify(body),
      });
    async function listed(t: string, path = '/mcp'): Promise<string[]> {
      const client = await connectClient(`${gw.url}${path}`, t, clients);
      return (await client.listTools()).tools.map((x) => x.name);
    }

    before(async () => {
      upstream = await startToolsUpstream(mode === 'json');
      gw = await startToolsGateway([
        mcpRoute(upstream.url, RULES),
        mcpRoute(upstream.url, RULES, { id: 'unfiltered', match: { path_prefix: '/unfiltered' }, mcp: { filter_tools_list: false } }),
        mcpRoute(upstream.url, RULES, { id: 'small', match: { path_prefix: '/small' }, mcp: { max_tools_list_size: 200 } }),
      ]);
    });
    after(async () => {
      for (const c of clients) await c.close().catch(() => {});
      await gw?.close();
      await upstream?.close();
    });

    it('a token allowed one tool (echo) lists it and the tool without a rule (the catch-all), not the others', async () => {
      assert.deepEqual(await listed(await mint('one', 'mcp:use echo:use')), ['echo', 'files.read']);
    });

    it('a token allowed both echo and files.write lists both', async () => {
      assert.deepEqual(await listed(await mint('two', 'mcp:use echo:use files:write')), ['echo', 'files.read', 'files.write']);
    });

    it('a token with the catch-all scope alone lists only the tool no rule names', async () => {
      assert.deepEqual(await listed(await mint('none', 'mcp:use')), ['files.read']);
    });

    it('a hidden tool is still refused when called (the list is not the authorization)', async () => {
      const t = await mint('caller', 'mcp:use echo:use');
      const res = await post('/mcp', t, { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'admin.reset', arguments: {} } });
      assert.equal(res.status, 403);
      await res.arrayBuffer();
      assert.ok(!upstream.toolCalls.includes('admin.reset'));
    });

    it('a tools/list with a string id: the response keeps it and is filtered', async () => {
      const res = await post('/mcp', await mint('str', 'mcp:use echo:use'), {
        jsonrpc: '2.0',
        id: 'list-1',
        method: 'tools/list',
        params: {},
      });
      assert.equal(res.status, 200);
      const response = (await messages(res)).find((m) => 'result' in m);
      assert.equal(response?.id, 'list-1');
      assert.deepEqual(names(response), ['echo', 'files.read']);
    });

    it('a tools/list with id 0 (falsy) is filtered too', async () => {
      const res = await post('/mcp', await mint('zero', 'mcp:use'), { jsonrpc: '2.0', id: 0, method: 'tools/list' });
      const response = (await messages(res)).find((m) => 'result' in m);
      assert.equal(response?.id, 0);
      assert.deepEqual(names(response), ['files.read']);
    });

    it('a paginated tools/list keeps its nextCursor, each page filtered', async () => {
      const t = await mint('pages', 'mcp:use echo:use');
      const first = (
        await messages(await post('/mcp', t, { jsonrpc: '2.0', id: 1, method: 'tools/list', params: { cursor: 'start' } }))
      ).find((m) => 'result' in m);
      assert.deepEqual(first?.result, {
        tools: [
          { name: 'echo', description: 'the echo tool', inputSchema: { type: 'object' } },
          { name: 'files.read', description: 'the files.read tool', inputSchema: { type: 'object' } },
        ],
        nextCursor: 'next',
      });
      const second = (
        await messages(await post('/mcp', t, { jsonrpc: '2.0', id: 2, method: 'tools/list', params: { cursor: 'next' } }))
      ).find((m) => 'result' in m);
      assert.deepEqual(second?.result, { tools: [] });
    });

    it('the audit event of a filtered tools/list counts the hidden tools', async () => {
      const res = await post('/mcp', await mint('audited', 'mcp:use'), { jsonrpc: '2.0', id: 3, method: 'tools/list' });
      await res.arrayBuffer();
      const e = ((await requestEvents(gw)) as AuditEvent[]).filter((x) => x.subject === 'audited').at(-1);
      assert.equal(e?.decision, 'allow');
      assert.equal(e?.detail?.tools_hidden, 3);
    });

    it('mcp.filter_tools_list: false lists every tool', async () => {
      assert.deepEqual(await listed(await mint('all', 'mcp:use'), '/unfiltered'), TOOLS);
    });

    it('a tools/list result over mcp.max_tools_list_size is a JSON-RPC error naming no tool', async () => {
      const res = await post('/small', await mint('big', 'mcp:use echo:use'), { jsonrpc: '2.0', id: 9, method: 'tools/list' });
      const text = await res.text();
      for (const name of TOOLS) assert.ok(!text.includes(name), text);
      assert.match(text, /"id":9,"error":\{"code":-32000,/);
      const e = ((await requestEvents(gw)) as AuditEvent[]).filter((x) => x.subject === 'big').at(-1);
      assert.equal(e?.detail?.tools_list, 'mcp_tools_list_invalid');
    });

    if (mode === 'sse')
      it('notifications before the response pass untouched and at once (the response is not awaited for them)', async () => {
        let release: () => void = () => {};
        upstream.hold = new Promise<void>((resolve) => {
          release = resolve;
        });
        try {
          const res = await post('/mcp', await mint('stream', 'mcp:use'), { jsonrpc: '2.0', id: 4, method: 'tools/list' });
          assert.equal(res.status, 200);
          assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
          const reader = (res.body as ReadableStream<Uint8Array>).getReader();
          const decoder = new TextDecoder();
          let text = '';
          const expected = `event: message\ndata: ${JSON.stringify({ ...NOTIFICATION, jsonrpc: '2.0' })}\n\n`;
          while (!text.includes('\n\n')) {
            const { value, done } = await reader.read();
            assert.equal(done, false, 'the stream ended before the notification');
            text += decoder.decode(value, { stream: true });
          }
          // The notification arrived while the upstream still holds the response back.
          assert.equal(text, expected);
          release();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
          }
          const events = text.split('\n\n').filter((e) => e !== '');
          assert.equal(events.length, 2);
          const response = JSON.parse(
            (events[1] as string)
              .split('\n')
              .find((l) => l.startsWith('data: '))
              ?.slice(6) as string,
          );
          assert.equal(response.id, 4);
          assert.deepEqual(names(response), ['files.read']);
        } finally {
          release();
          upstream.hold = undefined;
        }
      });
  });
}

/**
 * Answers the MCP SDK would not send, from a plain HTTP upstream: what a client could still read as
 * the tools/list result never reaches it unfiltered.
 */
describe('gateway: MCP tools/list answers that cannot be filtered are refused, not passed', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let answer: { type: string; body: string } = { type: 'application/json', body: '' };

  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': answer.type, 'content-length': Buffer.byteLength(answer.body) });
      res.end(answer.body);
    });
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)]);
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  const list = async (id: unknown = 1) =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: ACCEPT,
        authorization: `Bearer ${await token({ sub: 'raw', scope: 'mcp:use echo:use' })}`,
      },
      body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/list' }),
    });
  const sse = (...events: string[]) => ({ type: 'text/event-stream', body: events.join('') });

  it('a response whose id is the request id as a string (1 for "1", which the SDK client matches) is filtered too', async () => {
    answer = { type: 'application/json', body: JSON.stringify({ jsonrpc: '2.0', id: '1', result: { tools: TOOL_LIST } }) };
    assert.deepEqual(names((await messages(await list(1)))[0]), ['echo', 'files.read']);
    answer = sse(`data: ${JSON.stringify({ jsonrpc: '2.0', id: '1', result: { tools: TOOL_LIST } })}\n\n`);
    assert.deepEqual(names((await messages(await list(1)))[0]), ['echo', 'files.read']);
  });

  it('SSE: a response split over several data lines, CRLF line ends, result after id: filtered; other fields kept', async () => {
    const json = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } }, null, 1);
    answer = sse(
      ': a comment\r\n\r\n',
      `event: message\r\nid: e1\r\n${json
        .split('\n')
        .map((l) => `data: ${l}\r\n`)
        .join('')}\r\n`,
    );
    const res = await list(1);
    const text = await res.text();
    assert.ok(text.startsWith(': a comment\r\n\r\n'), text);
    assert.match(text, /event: message/);
    for (const hidden of ['files.write', 'admin.reset']) assert.ok(!text.includes(hidden), text);
    const data = text.split(/\r\n|\n/).filter((l) => l.startsWith('data: '));
    assert.deepEqual(names(JSON.parse(data.map((l) => l.slice(6)).join('\n'))), ['echo', 'files.read']);
  });

  for (const [what, body] of [
    ['not JSON', '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"admin.reset"}'],
    ['tools not an array', JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: { 'admin.reset': {} } } })],
    ['the request id with no tools', JSON.stringify({ jsonrpc: '2.0', id: 1, result: { 'admin.reset': {} } })],
    ['a repeated result key', `{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":${JSON.stringify(TOOL_LIST)}}}`],
    ['a Result lookalike key', `{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"Result":{"tools":${JSON.stringify(TOOL_LIST)}}}`],
    ['a batch', JSON.stringify([{ jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } }])],
  ] as const) {
    it(`attack: a JSON tools/list answer that is ${what} is refused (502, JSON-RPC error), no tool name relayed`, async () => {
      answer = { type: 'application/json', body };
      const res = await list(1);
      assert.equal(res.status, 502);
      const text = await res.text();
      assert.ok(!text.includes('admin.reset'), text);
      assert.deepEqual(JSON.parse(text), {
        jsonrpc: '2.0',
        id: 1,
        error: { code: -32000, message: 'The upstream service is unavailable.' },
      });
    });

    it(`attack: an SSE tools/list response that is ${what} becomes a JSON-RPC error event, no tool name relayed`, async () => {
      answer = sse(`data: ${body}\n\n`);
      const res = await list(1);
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.ok(!text.includes('admin.reset'), text);
      assert.deepEqual(await messages(new Response(text, { headers: { 'content-type': 'text/event-stream' } })), [
        { jsonrpc: '2.0', id: 1, error: { code: -32000, message: 'The upstream service is unavailable.' } },
      ]);
    });
  }

  it('attack: a JSON tools/list answer of another content type is refused, not passed', async () => {
    answer = { type: 'text/plain', body: JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } }) };
    const res = await list(1);
    assert.equal(res.status, 502);
    assert.ok(!(await res.text()).includes('admin.reset'));
  });

  it('attack: an SSE event read as a notification that turns out to carry a result too is never completed (the stream is cut)', async () => {
    answer = sse(
      `data: ${JSON.stringify({ method: 'notifications/message', params: {}, jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } })}\n\n`,
    );
    const res = await list(1);
    const text = await res.text().catch(() => '');
    // No complete event (one ended by a blank line) carries the hidden tool.
    for (const event of text.split('\n\n').slice(0, -1)) assert.ok(!event.includes('admin.reset'), text);
  });

  it('an SSE stream ending inside the response event sends nothing of it', async () => {
    answer = sse(`data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } })}`);
    const res = await list(1);
    const text = await res.text().catch(() => '');
    assert.ok(!text.includes('admin.reset'), text);
  });

  it('attack: an SSE tools/list response split by a line of only a BOM (U+FEFF) mid-stream, one event to a client (a field line, not an empty line): filtered, no hidden tool relayed', async () => {
    const response = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } });
    const half = response.indexOf('"tools"');
    for (const end of ['\n', '\r\n', '\r']) {
      answer = sse(`data: ${response.slice(0, half)}${end}\uFEFF${end}data: ${response.slice(half)}${end}${end}`);
      const res = await list(1);
      assert.equal(res.status, 200);
      const bytes = Buffer.from(await res.arrayBuffer());
      assert.ok(!bytes.includes('admin.reset'), bytes.toString());
      // The MCP SDK client's parser reads one event: the response, filtered.
      const events = await clientEvents(bytes);
      assert.deepEqual(
        events.map((e) => names(JSON.parse(e))),
        [['echo', 'files.read']],
        JSON.stringify(end),
      );
    }
  });

  it('attack: a notification and a tools/list response in one SSE event, a BOM line between them (two events to a parser stripping a BOM from every line): never relayed whole', async () => {
    const notification = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: {} });
    const response = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOL_LIST } });
    answer = sse(`data: ${notification}\n\uFEFF\ndata: ${response}\n\n`);
    const res = await list(1);
    const text = await res.text().catch(() => '');
    for (const event of text.split('\n\n').slice(0, -1)) assert.ok(!event.includes('admin.reset'), text);
  });

  it('an error response passes as it is', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, error: { code: -32601, message: 'Method not found' } });
    answer = { type: 'application/json', body };
    assert.equal(await (await list(1)).text(), body);
    answer = sse(`event: message\ndata: ${body}\n\n`);
    assert.equal(await (await list(1)).text(), `event: message\ndata: ${body}\n\n`);
  });
});

describe('ToolsListEvents: the stream filter reads events however the bytes are cut', () => {
  const filter = { id: 1, allows: (name: string) => name === 'echo', limit: 4096 };
  const run = (chunks: Buffer[]) => {
    const tools = new ToolsListEvents(filter, () => {});
    return Buffer.concat([...chunks.map((c) => tools.push(c)), tools.end()]).toString('utf8');
  };
  const response = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOLS.map((name) => ({ name })) } });
  const notification = JSON.stringify({ method: 'notifications/message', params: { level: 'info', data: 'x' }, jsonrpc: '2.0' });

  for (const [what, stream] of [
    ['LF', `event: message\nid: 1\ndata: ${notification}\n\nevent: message\nid: 2\ndata: ${response}\n\n`],
    ['CRLF', `event: message\r\nid: 1\r\ndata: ${notification}\r\n\r\nevent: message\r\nid: 2\r\ndata:${response}\r\n\r\n`],
    ['CR and a BOM', `\ufeffdata: ${notification}\r\rdata: ${response}\r\r`],
  ] as const) {
    it(`${what}: the notification passes byte for byte, the response is filtered, whole or a byte at a time`, () => {
      const bytes = Buffer.from(stream, 'utf8');
      const whole = run([bytes]);
      const bytewise = run([...bytes].map((b) => Buffer.from([b])));
      assert.equal(bytewise, whole);
      assert.ok(whole.startsWith(stream.slice(0, stream.indexOf(notification) + notification.length)), whole);
      assert.ok(!whole.includes('admin.reset'), whole);
      assert.ok(whole.includes(`data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'echo' }] } })}`), whole);
    });
  }

  it('a notification is sent as soon as its method is read, before its event ends', () => {
    const tools = new ToolsListEvents(filter, () => {});
    const out = tools.push(Buffer.from('data: {"method":"notifications/progress","params":{"progress":'));
    assert.equal(out.toString(), 'data: {"method":"notifications/progress","params":{"progress":');
  });

  it('a response is held until its event ends', () => {
    const tools = new ToolsListEvents(filter, () => {});
    assert.equal(tools.push(Buffer.from(`data: ${response}\n`)).length, 0);
    assert.ok(!tools.push(Buffer.from('\n')).toString().includes('admin.reset'));
  });
});

/** The events an MCP SDK client reads from `bytes` (its pipeline: TextDecoderStream, then eventsource-parser). */
async function clientEvents(bytes: Buffer): Promise<string[]> {
  const { EventSourceParserStream } = await import('eventsource-parser/stream');
  const stream = new Blob([bytes]).stream().pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  const events: string[] = [];
  for await (const e of stream) events.push(e.data);
  return events;
}

describe('ToolsListEvents: the stream opening (a client reads its first line otherwise than the filter did)', () => {
  const filter = { id: 1, allows: (name: string) => name === 'echo', limit: 4096 };
  const response = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: TOOLS.map((name) => ({ name })) } });
  const filtered = async (stream: Buffer) => {
    for (const size of [stream.length, 1]) {
      const tools = new ToolsListEvents(filter, () => {});
      const out: Buffer[] = [];
      for (let i = 0; i < stream.length && !tools.failed; i += size) out.push(tools.push(stream.subarray(i, i + size)));
      if (!tools.failed) out.push(tools.end());
      for (const data of await clientEvents(Buffer.concat(out))) assert.ok(!data.includes('admin.reset'), `chunks of ${size}: ${data}`);
    }
  };

  it('attack: a partial BOM (EF, EF BB) opening the stream: the filter read a data line the client reads as an unknown field, and passed the next line, a tools list, unread', async () => {
    const stream = (bom: number[]) =>
      Buffer.concat([
        Buffer.from(bom),
        Buffer.from(`data: {"jsonrpc":"2.0","method":"notifications/message","params":"\ndata: ${response}\n\n`),
      ]);
    await filtered(stream([0xef]));
    await filtered(stream([0xef, 0xbb]));
  });

  it('attack: a line of only a BOM after the stream start (a field line to a client, not an empty line) between a notification and a tools list: the client reads no tool the filter did not hide', async () => {
    const notification = '{"jsonrpc":"2.0","method":"notifications/message","params":{}}';
    const half = response.indexOf('"tools"');
    await filtered(Buffer.from(`data: ${response.slice(0, half)}\n\uFEFF\ndata: ${response.slice(half)}\n\n`));
    await filtered(Buffer.from(`data: ${notification}\n\uFEFF\ndata: ${response}\n\n`));
    await filtered(Buffer.from(`data: ${notification}\n\n\uFEFF\ndata: ${response}\n\n`));
    await filtered(Buffer.from(`data: ${notification}\n\n\uFEFFdata: x\ndata: ${response}\n\n`));
  });

  it('a response event after the first opening with a U+FEFF line (a field named U+FEFF "data" to a client, not data): filtered as the client reads it, not refused', async () => {
    const tools = new ToolsListEvents(filter, () => {});
    const notification = '{"jsonrpc":"2.0","method":"notifications/message","params":{}}';
    const out = Buffer.concat([tools.push(Buffer.from(`data: ${notification}\n\n\uFEFFdata: [\ndata: ${response}\n\n`)), tools.end()]);
    const events = await clientEvents(out);
    assert.equal(events.length, 2, out.toString());
    assert.deepEqual(names(JSON.parse(events[1] as string)), ['echo']);
  });

  it('attack: "ï»¿" (C3 AF C2 BB C2 BF) opening the stream, which eventsource-parser strips after decoding as if it were a BOM: the client reads a data line the filter did not', async () => {
    await filtered(Buffer.concat([Buffer.from('ï»¿', 'utf8'), Buffer.from(`data: ${response}\n\n`)]));
    await filtered(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('ï»¿', 'utf8'), Buffer.from(`data: ${response}\n\n`)]));
  });
});
