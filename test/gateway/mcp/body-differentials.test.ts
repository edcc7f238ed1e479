/**
 * Reading differentials between the gateway and an MCP server behind it: a body the gateway reads
 * as one message must not reach an upstream that reads another. The upstream is the SDK's usual
 * deployment (express + express.json(), which decodes any `charset=utf-*` and decompresses
 * `Content-Encoding`), on loopback; the rules let any tool run with `mcp:use` except
 * `admin.reset`, which needs `admin`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { type ExpressMcpUpstream, startExpressMcpUpstream } from '../../helpers/mcp-express-upstream.ts';
import { baseConfig, mcpRoute, requestEvents, startGateway, type TestGateway, token } from '../helpers.ts';

const ACCEPT = 'application/json, text/event-stream';
const call = (name: string) => JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: { text: 'x' } } });

/** An MCP server behind express (the SDK's usual stack), behind the gateway; `adminTool` needs scope admin. */
async function mcpBehindGateway(
  adminTool: string,
  subject: string,
): Promise<{ upstream: ExpressMcpUpstream; gw: TestGateway; user: string }> {
  const upstream = await startExpressMcpUpstream();
  const gw = await startGateway({
    ...baseConfig(),
    scopes: { 'mcp:use': {}, admin: {} },
    gateway: {
      routes: [
        mcpRoute(upstream.url, [
          { id: 'admin', tool: adminTool, scopes: ['admin'] },
          { id: 'tools', tool: '*', scopes: ['mcp:use'] },
          { id: 'mcp', scopes: ['mcp:use'] },
        ]),
      ],
    },
  });
  return { upstream, gw, user: await token({ sub: subject, scope: 'mcp:use', client_id: 'agent' }) };
}

describe('gateway: MCP bodies read alike by the gateway and the upstream', () => {
  let upstream: ExpressMcpUpstream;
  let gw: TestGateway;
  let user: string;

  before(async () => {
    ({ upstream, gw, user } = await mcpBehindGateway('admin.reset', 'user'));
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const post = (body: string | Buffer, headers: Record<string, string> = {}) =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${user}`, ...headers },
      body,
    });
  const lastEvent = async () => ((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent;

  it('the setup holds: echo runs with mcp:use, admin.reset is refused 403 without admin', async () => {
    const ok = await post(call('echo'));
    assert.equal(ok.status, 200);
    assert.match(await ok.text(), /echo:x/);
    const denied = await post(call('admin.reset'));
    assert.equal(denied.status, 403);
    assert.ok(!upstream.toolCalls.includes('admin.reset'));
  });

  it('charset smuggling: a UTF-7 body naming "+AGE-dmin.reset" (admin.reset to the upstream) is refused 415 before the upstream', async () => {
    const before = upstream.requests.length;
    for (const ct of ['application/json; charset=utf-7', 'application/json; charset="UTF-7"', 'application/json;charset=utf-16']) {
      const res = await post(call('+AGE-dmin.reset'), { 'content-type': ct });
      assert.equal(res.status, 415, ct);
      assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32000);
      assert.equal((await lastEvent()).reason, 'mcp_content_type_invalid');
    }
    assert.equal(upstream.requests.length, before);
    assert.ok(!upstream.toolCalls.includes('admin.reset'));
    // UTF-8, however spelled, is what the gateway reads: accepted.
    for (const ct of ['application/json; charset=utf-8', 'Application/JSON; Charset="UTF-8"']) {
      const res = await post(call('echo'), { 'content-type': ct });
      assert.equal(res.status, 200, ct);
      await res.text();
    }
  });

  it('content-encoding smuggling: a body the upstream would decompress is refused 415 before the upstream, fail closed', async () => {
    const before = upstream.requests.length;
    for (const encoding of ['gzip', 'deflate', 'br', 'x-gzip', 'identity, gzip', 'compress']) {
      const res = await post(call('echo'), { 'content-encoding': encoding });
      assert.equal(res.status, 415, encoding);
      assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32000);
      assert.equal((await lastEvent()).reason, 'mcp_content_encoding_refused');
    }
    // A gzip body is refused for its encoding, not as unreadable JSON.
    const gz = await post(gzipSync(call('admin.reset')), { 'content-encoding': 'gzip' });
    assert.equal(gz.status, 415);
    assert.equal(upstream.requests.length, before);
    // `identity` is no encoding.
    const identity = await post(call('echo'), { 'content-encoding': 'identity' });
    assert.equal(identity.status, 200);
    await identity.text();
  });
  it('other spellings of a forbidden tools/call (a notification without id, a UTF-8 BOM, a chunked body) are refused 403 before the upstream', async () => {
    const before = upstream.requests.length;
    const notification = JSON.stringify({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'admin.reset' } });
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(call('admin.reset'))]);
    const chunked = new ReadableStream<Uint8Array>({
      start(c) {
        const bytes = Buffer.from(call('admin.reset'));
        c.enqueue(bytes.subarray(0, 20));
        c.enqueue(bytes.subarray(20));
        c.close();
      },
    });
    for (const [name, body] of [
      ['notification', notification],
      ['bom', bom],
      ['chunked', chunked],
    ] as const) {
      const res = await fetch(`${gw.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${user}` },
        body,
        ...(name === 'chunked' ? { duplex: 'half' } : {}),
      } as RequestInit);
      assert.equal(res.status, 403, name);
      await res.text();
      const e = await lastEvent();
      assert.equal(e.reason, 'scope_insufficient', name);
      assert.equal(e.tool, 'admin.reset', name);
    }
    assert.equal(upstream.requests.length, before);
    assert.ok(!upstream.toolCalls.includes('admin.reset'));
  });

  it('case-folded member smuggling: a JSON-RPC member spelled another way (Method, Name, paramſ, name\\u0000), which Go MCP servers read as the member (CVE-2026-27896), is refused 400 before the upstream', async () => {
    const before = upstream.requests.length;
    const bodies = [
      // Go's encoding/json matches keys without case, the last one winning: the upstream runs admin.reset.
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"admin.reset"}}',
      // Read here as a response (no method), where the Go upstream reads a tools/call.
      '{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"admin.reset"}}',
      '{"jsonrpc":"2.0","id":1,"method":"ping","METHOD":"tools/call","params":{"name":"admin.reset"}}',
      // Go also folds \u017f (long s) to s and \u212a (Kelvin sign) to k.
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"param\u017f":{"name":"admin.reset"}}',
      // segmentio/encoding (go-sdk 1.3.1 to 1.4.0) matched a key with NULs appended as the key (GHSA-q382-vc8q-7jhj).
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name\\u0000":"admin.reset"}}',
    ];
    for (const body of bodies) {
      const res = await post(body);
      assert.equal(res.status, 400, body);
      assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32600, body);
      assert.equal((await lastEvent()).reason, 'mcp_message_invalid', body);
    }
    assert.equal(upstream.requests.length, before);
    // A member spelled exactly, beside keys of other names in any case, still passes.
    const ok = await post('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x","Text":"y"}}}');
    assert.equal(ok.status, 200);
    await ok.text();
  });
});

describe('gateway: MCP tool names the gateway decides on', () => {
  let upstream: ExpressMcpUpstream;
  let gw: TestGateway;
  let user: string;

  before(async () => {
    ({ upstream, gw, user } = await mcpBehindGateway('admin.*', 'namer'));
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('tool-name smuggling: control characters, whitespace, lookalikes and overlong names are refused 400 before the upstream, and never audited', async () => {
    const before = upstream.requests.length;
    const names = [
      'admin.reset\u0000', // NUL: a C upstream stops reading there
      ' admin.reset', // whitespace an upstream may trim
      'admin.reset\t',
      'echo\n2026-01-01T00:00:00Z  allow ok · tool admin.reset', // a forged line in `tessera trace`
      'echo\u001b[2J', // a terminal escape
      'аdmin.reset', // Cyrillic а: NFKC-normalizing or confusable-folding upstreams
      'ａｄｍｉｎ.reset', // fullwidth: NFKC makes it admin.reset
      'admin\u200b.reset', // zero-width space
      'x'.repeat(129), // longer than MCP's 128 characters
    ];
    for (const name of names) {
      const res = await fetch(`${gw.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${user}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name } }),
      });
      assert.equal(res.status, 400, JSON.stringify(name));
      assert.deepEqual(((await res.json()) as { id: unknown; error: { code: number } }).error.code, -32602);
      const e = ((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent;
      assert.equal(e.reason, 'mcp_tool_name_invalid');
      assert.equal(e.tool, undefined);
    }
    assert.equal(upstream.requests.length, before);
    // Names within MCP's format (letters, digits, _ - . /, and other visible ASCII) still pass.
    for (const name of ['echo', 'x'.repeat(128), 'ns/tool:v2']) {
      const res = await fetch(`${gw.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${user}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name } }),
      });
      assert.equal(res.status, 200, name);
      await res.text();
      assert.equal((((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent).tool, name);
    }
  });
});
