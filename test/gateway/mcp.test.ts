/**
 * MCP routes end to end: a real MCP server (McpServer + StreamableHTTPServerTransport on
 * node:http, loopback) behind the gateway, real MCP SDK clients in front of it. Tool calls are
 * authorized by tool, the body reaches the upstream byte for byte, responses still stream, sessions
 * are bound to the principal that created them, and RFC 9728 metadata tells clients where to get
 * tokens.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pino from 'pino';
import type { AuditEvent } from '../../src/audit/event.ts';
import { runChecks } from '../../src/cli/commands/check.ts';
import { type McpUpstream, startMcpUpstream } from '../helpers/mcp-upstream.ts';
import {
  assertRpcTooLarge,
  baseConfig,
  ISSUER,
  mcpRoute,
  requestEvents,
  STATIC_TOKEN,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
  upgradeStatus,
} from './helpers.ts';

const RULES = [
  { id: 'files-read', tool: 'files.read*', scopes: ['files:read'] },
  { id: 'files-write', tool: 'files.write', scopes: ['files:write'] },
  { id: 'echo', tool: 'echo', scopes: ['mcp:use'] },
  { id: 'slow', tool: 'slow', scopes: ['mcp:use'] },
  { id: 'files-export', tool: 'files.export', scopes: ['files:read', 'admin'] },
  { id: 'other-tools', tool: '*', scopes: ['admin'] },
  { id: 'mcp', scopes: ['mcp:use'] },
];

const ACCEPT = 'application/json, text/event-stream';
const SESSION_SECRET = 'mcp-session-secret-of-this-gateway-0123456789';
const NONCE_SECRET = 'dpop-nonce-secret-of-this-gateway-0123456789';

describe('gateway: MCP routes', () => {
  let upstream: McpUpstream;
  let gw: TestGateway;
  const logLines: string[] = [];
  const tokens: string[] = [];
  const clients: Client[] = [];

  const mint = async (sub: string, scope: string) => {
    const t = await token({ sub, scope, client_id: `${sub}-agent` });
    tokens.push(t);
    return t;
  };
  const endpoint = () => new URL(`${gw.url}/mcp`);
  async function connect(t: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
    const transport = new StreamableHTTPClientTransport(endpoint(), { requestInit: { headers: { authorization: `Bearer ${t}` } } });
    const client = new Client({ name: 'test-agent', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    return { client, transport };
  }
  /** A raw JSON-RPC POST through the gateway. */
  const post = (t: string | undefined, body: string | Buffer, headers: Record<string, string> = {}) =>
    fetch(endpoint(), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, ...(t ? { authorization: `Bearer ${t}` } : {}), ...headers },
      body,
    });
  const events = async () => (await requestEvents(gw)) as AuditEvent[];
  const lastEvent = async () => (await events()).at(-1) as AuditEvent;
  const toolPosts = (name: string) =>
    upstream.requests.filter((r) => r.method === 'POST' && r.body.includes(`"tools/call"`) && r.body.includes(`"${name}"`));

  before(async () => {
    upstream = await startMcpUpstream();
    const sink = new Writable({
      write(chunk, _enc, done) {
        logLines.push(String(chunk));
        done();
      },
    });
    gw = await startGateway(
      {
        ...baseConfig(),
        scopes: { 'mcp:use': {}, 'files:read': {}, 'files:write': { implies: ['files:read'] }, admin: {} },
        dpop: { mode: 'disabled', nonce_secret: NONCE_SECRET },
        gateway: {
          mcp_session_secret: SESSION_SECRET,
          routes: [
            mcpRoute(upstream.url, RULES, { mcp: { max_message_size: '4kb' } }),
            { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] },
          ],
        },
      },
      { logger: pino({ level: 'debug' }, sink) },
    );
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    await gw?.close();
    await upstream?.close();
  });

  it('attack: a token sent as a tools/call name or a JSON-RPC method (a tgw_/tcs_/trt_ secret, a configured static token, the MCP session or DPoP nonce secret) is recorded as *', async () => {
    const t = await mint('leaky', 'mcp:use files:read');
    const before = (await events()).length;
    const secrets = [`tgw_${'T'.repeat(43)}`, `tcs_${'C'.repeat(43)}`, STATIC_TOKEN, SESSION_SECRET, NONCE_SECRET];
    for (const name of secrets)
      await (await post(t, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name } }))).arrayBuffer();
    for (const method of [`trt_${'R'.repeat(43)}`, STATIC_TOKEN])
      await (await post(t, JSON.stringify({ jsonrpc: '2.0', id: 2, method, params: {} }))).arrayBuffer();
    const recorded = (await events()).slice(before);
    assert.deepEqual(
      recorded.map((e) => [e.tool, e.detail?.rpc]),
      [
        ['*', 'tools/call'],
        ['*', 'tools/call'],
        ['*', 'tools/call'],
        ['*', 'tools/call'],
        ['*', 'tools/call'],
        [undefined, '*'],
        [undefined, '*'],
      ],
    );
    const text = JSON.stringify(recorded);
    for (const secret of [...secrets, `trt_${'R'.repeat(43)}`]) assert.ok(!text.includes(secret));
  });

  it('an allowed tool call reaches the MCP server and its result comes back; the audit event names the tool', async () => {
    const { client } = await connect(await mint('alice', 'mcp:use files:read'));
    const result = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.deepEqual(result.content, [{ type: 'text', text: 'echo:hi' }]);
    assert.ok(upstream.toolCalls.includes('echo'));
    const e = (await events()).filter((x) => x.tool === 'echo');
    assert.equal(e.length, 1);
    assert.equal(e[0]?.decision, 'allow');
    assert.equal(e[0]?.subject, 'alice');
    assert.equal(e[0]?.detail?.rule, 'echo');
  });

  it('tools/list and initialize are allowed by a rule without a tool (tool = null skips tool rules); the list names only the tools mcp:use may call', async () => {
    const { client } = await connect(await mint('lister', 'mcp:use'));
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['echo', 'slow']);
    const list = (await events()).filter((x) => x.subject === 'lister');
    assert.ok(list.length >= 2);
    for (const x of list) {
      assert.equal(x.tool, undefined);
      assert.equal(x.detail?.rule, 'mcp');
    }
  });

  it('tool glob rules: files.read* allows files.read and files.read_meta with files:read', async () => {
    const { client } = await connect(await mint('reader', 'mcp:use files:read'));
    assert.deepEqual((await client.callTool({ name: 'files.read', arguments: {} })).content, [{ type: 'text', text: 'files.read:' }]);
    assert.deepEqual((await client.callTool({ name: 'files.read_meta', arguments: {} })).content, [
      { type: 'text', text: 'files.read_meta:' },
    ]);
  });

  it('a tool outside the token scopes is refused 403 insufficient_scope with the scope challenge; the server never sees the call', async () => {
    const t = await mint('reader2', 'mcp:use files:read');
    const { client, transport } = await connect(t);
    const forbidden = (e: unknown) => (e as { code?: unknown }).code === 403 && /insufficient_scope/.test(String(e));
    await assert.rejects(client.callTool({ name: 'files.write', arguments: { text: 'x' } }), forbidden);
    await assert.rejects(client.callTool({ name: 'admin.reset', arguments: {} }), forbidden);
    assert.equal(toolPosts('files.write').length, 0);
    assert.equal(toolPosts('admin.reset').length, 0);
    assert.ok(!upstream.toolCalls.includes('files.write'));

    const res = await post(t, JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'files.write' } }), {
      'mcp-session-id': transport.sessionId as string,
    });
    assert.equal(res.status, 403);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer /);
    assert.match(challenge, /error="insufficient_scope"/);
    // The scope this call needs, and only it: one scope attribute, not the route's mcp:use added.
    assert.match(challenge, /scope="files:write"/);
    assert.equal(challenge.match(/scope=/g)?.length, 1, challenge);
    assert.match(challenge, /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);
    assert.deepEqual(await res.json(), {
      error: 'insufficient_scope',
      error_description: 'The access token does not grant the scope this request requires.',
    });
    const e = await lastEvent();
    assert.equal(e.decision, 'deny');
    assert.equal(e.reason, 'scope_insufficient');
    assert.equal(e.tool, 'files.write');
    assert.equal(e.detail?.rule, 'files-write');
    assert.equal(toolPosts('files.write').length, 0);
  });

  it('a tool whose rule needs two scopes, one of them held: the 403 names both (every scope the call needs, granted or not)', async () => {
    // MCP authorization 2025-11-25 (Runtime Insufficient Scope Errors): the scopes needed to
    // satisfy the current request, already granted ones included when required; not only the
    // missing one, which a client replacing its scope with the challenge's would then lose.
    const t = await mint('exporter', 'mcp:use files:read');
    const { transport } = await connect(t);
    const res = await post(t, JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'files.export' } }), {
      'mcp-session-id': transport.sessionId as string,
    });
    assert.equal(res.status, 403);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer error="insufficient_scope", error_description="[^"]+", scope="files:read admin", resource_metadata="/);
    assert.equal((await lastEvent()).detail?.rule, 'files-export');
    assert.equal(toolPosts('files.export').length, 0);
  });

  it('a tool no tool rule names falls to the catch-all tool rule, not to the rule without a tool', async () => {
    const t = await mint('user', 'mcp:use');
    const { transport } = await connect(t);
    const res = await post(t, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'unlisted' } }), {
      'mcp-session-id': transport.sessionId as string,
    });
    assert.equal(res.status, 403);
    assert.equal((await lastEvent()).detail?.rule, 'other-tools');
  });

  it('a tools/call whose params.name is not a string is refused 400 with a JSON-RPC error, before the upstream', async () => {
    const t = await mint('bad-name', 'mcp:use admin files:write');
    const before = upstream.requests.length;
    for (const params of [{ name: 42 }, { name: ['echo'] }, {}, { name: '' }]) {
      const res = await post(t, JSON.stringify({ jsonrpc: '2.0', id: 'q1', method: 'tools/call', params }));
      assert.equal(res.status, 400);
      assert.equal(res.headers.get('www-authenticate'), null);
      assert.deepEqual(await res.json(), {
        jsonrpc: '2.0',
        id: 'q1',
        error: { code: -32602, message: 'A tools/call request needs params.name: 1 to 128 visible ASCII characters.' },
      });
      assert.equal((await lastEvent()).reason, 'mcp_tool_name_invalid');
    }
    const noParams = await post(t, '{"jsonrpc":"2.0","id":2,"method":"tools/call"}');
    assert.equal(noParams.status, 400);
    assert.equal(upstream.requests.length, before);
  });

  it('unparseable JSON is a JSON-RPC parse error (400, -32700); a non-object or non-2.0 message is -32600', async () => {
    const t = await mint('bad-json', 'mcp:use');
    const res = await post(t, '{"jsonrpc":"2.0","id":1,"method":"tools/call",');
    assert.equal(res.status, 400);
    assert.deepEqual(((await res.json()) as { error: unknown }).error, {
      code: -32700,
      message: 'The request body is not a JSON-RPC 2.0 message.',
    });
    assert.equal((await lastEvent()).reason, 'mcp_message_invalid');
    for (const body of ['"tools/call"', 'null', '{"id":1,"method":"tools/list"}', '{"jsonrpc":"2.0","id":1,"method":7}']) {
      const r = await post(t, body);
      assert.equal(r.status, 400, body);
      assert.equal(((await r.json()) as { error: { code: number } }).error.code, -32600);
    }
    // Invalid UTF-8 is refused rather than read with replacement characters.
    const latin = Buffer.concat([
      Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo'),
      Buffer.from([0xff]),
      Buffer.from('"}}'),
    ]);
    assert.equal((await post(t, latin)).status, 400);
  });

  it('a JSON-RPC batch is refused (MCP 2025-06-18 has no batching), so a denied tool cannot hide in one', async () => {
    const t = await mint('batcher', 'mcp:use');
    const before = upstream.requests.length;
    const res = await post(
      t,
      JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'admin.reset' } },
      ]),
    );
    assert.equal(res.status, 400);
    assert.deepEqual(((await res.json()) as { error: unknown }).error, {
      code: -32600,
      message: 'JSON-RPC batches are not accepted; send one message per request.',
    });
    assert.equal((await lastEvent()).reason, 'mcp_batch_refused');
    assert.equal(upstream.requests.length, before);
  });

  it('parser differential: a tools/call naming its tool twice is refused before the upstream', async () => {
    const t = await mint('twice', 'mcp:use');
    const res = await post(t, '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"admin.reset"}}');
    assert.equal(res.status, 400);
    assert.equal((await lastEvent()).reason, 'mcp_message_invalid');
    assert.equal(toolPosts('admin.reset').length, 0);
  });

  it('method bypass: a tools/call sent with PUT is read and authorized like a POST', async () => {
    const t = await mint('putter', 'mcp:use');
    const res = await fetch(endpoint(), {
      method: 'PUT',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'admin.reset' } }),
    });
    assert.equal(res.status, 403);
    const e = await lastEvent();
    assert.equal(e.tool, 'admin.reset');
    assert.equal(e.reason, 'scope_insufficient');
  });

  it('a body that is not application/json is refused 415 before it is read', async () => {
    const t = await mint('form', 'mcp:use');
    const res = await post(t, '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', { 'content-type': 'text/plain' });
    assert.equal(res.status, 415);
    assert.equal((await lastEvent()).reason, 'mcp_content_type_invalid');
  });

  it('an oversize body is refused 413, declared or chunked, and audited', async () => {
    const t = await mint('big', 'mcp:use');
    const before = upstream.requests.length;
    const big = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'echo', arguments: { text: 'x'.repeat(5000) } },
    });
    const declared = await post(t, big);
    assert.equal(declared.status, 413);
    assert.equal((await lastEvent()).reason, 'request_too_large');
    const chunked = await fetch(endpoint(), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < 10; i++) c.enqueue(new TextEncoder().encode(' '.repeat(1000)));
          c.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    assert.equal(chunked.status, 413);
    const e = await lastEvent();
    assert.equal(e.reason, 'request_too_large');
    assert.equal(e.decision, 'deny');
    assert.equal(upstream.requests.length, before);
  });

  it('forwards the body byte for byte with its length, a chunked upload included', async () => {
    const t = await mint('bytes', 'mcp:use');
    const { transport } = await connect(t);
    const raw = Buffer.from(
      '{ "params" : {"name":"echo","arguments":{"text":"caf\\u00e9 ☕"}} ,\n "method":"tools/call", "id" : 77, "jsonrpc":"2.0" }  \n',
    );
    const res = await post(t, raw, { 'mcp-session-id': transport.sessionId as string });
    assert.equal(res.status, 200);
    assert.match(await res.text(), /echo:café ☕/);
    const seen = upstream.requests.find((r) => r.body.includes('"id" : 77'));
    assert.ok(seen);
    assert.ok(seen.body.equals(raw));
    assert.equal(seen.headers['content-length'], String(raw.length));

    const chunkedRaw = Buffer.from('{"jsonrpc":"2.0","id":78,"method":"tools/list"}');
    const chunked = await fetch(endpoint(), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: ACCEPT,
        authorization: `Bearer ${t}`,
        'mcp-session-id': transport.sessionId as string,
      },
      body: new ReadableStream({
        start(c) {
          c.enqueue(chunkedRaw.subarray(0, 10));
          c.enqueue(chunkedRaw.subarray(10));
          c.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    assert.equal(chunked.status, 200);
    await chunked.text();
    const seenChunked = upstream.requests.find((r) => r.body.includes('"id":78'));
    assert.ok(seenChunked?.body.equals(chunkedRaw));
    assert.equal(seenChunked?.headers['content-length'], String(chunkedRaw.length));
    assert.equal(seenChunked?.headers['transfer-encoding'], undefined);
  });

  it('SSE responses stream: a progress notification arrives while the tool call is still running', async () => {
    const { client } = await connect(await mint('streamer', 'mcp:use'));
    let progressed: () => void = () => {};
    const progress = new Promise<void>((resolve) => {
      progressed = resolve;
    });
    const call = client.callTool({ name: 'slow', arguments: {} }, undefined, {
      onprogress: () => progressed(),
      resetTimeoutOnProgress: true,
    });
    // Were the response buffered, the notification would only come with the result, which waits for it.
    await Promise.race([progress, call.then((r) => assert.fail(`the call ended before its progress arrived: ${JSON.stringify(r)}`))]);
    upstream.release();
    assert.deepEqual((await call).content, [{ type: 'text', text: 'done' }]);
  });

  it('session hijack: another principal presenting a session id gets 404 and the upstream never sees it', async () => {
    const { transport } = await connect(await mint('owner', 'mcp:use admin'));
    const sid = transport.sessionId as string;
    assert.ok(sid);
    const mallory = await mint('mallory', 'mcp:use admin files:write');
    const hijack = await post(mallory, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } }), {
      'mcp-session-id': sid,
      'x-probe': 'hijack',
    });
    assert.equal(hijack.status, 404);
    assert.deepEqual(((await hijack.json()) as { error: unknown }).error, { code: -32001, message: 'Session not found.' });
    let e = await lastEvent();
    assert.equal(e.reason, 'mcp_session_principal_mismatch');
    assert.equal(e.subject, 'mallory');
    // The SSE stream (GET) and session end (DELETE) are bound too.
    const get = await fetch(endpoint(), {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${mallory}`, 'mcp-session-id': sid, 'x-probe': 'hijack' },
    });
    assert.equal(get.status, 404);
    const del = await fetch(endpoint(), {
      method: 'DELETE',
      headers: { authorization: `Bearer ${mallory}`, 'mcp-session-id': sid, 'x-probe': 'hijack' },
    });
    assert.equal(del.status, 404);
    // Same subject through another client is another principal.
    const otherClient = await token({ sub: 'owner', scope: 'mcp:use', client_id: 'other-agent' });
    tokens.push(otherClient);
    assert.equal(
      (await post(otherClient, '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', { 'mcp-session-id': sid, 'x-probe': 'hijack' })).status,
      404,
    );
    assert.equal(upstream.requests.filter((r) => r.headers['x-probe'] === 'hijack').length, 0);
    // The owner with a fresh token (another jti) keeps the session.
    const again = await mint('owner', 'mcp:use');
    const ok = await post(again, '{"jsonrpc":"2.0","id":5,"method":"tools/list"}', { 'mcp-session-id': sid });
    assert.equal(ok.status, 200);
    await ok.text();
    e = await lastEvent();
    assert.equal(e.decision, 'allow');
    // The caller holds S.<mac>; the upstream only ever sees its own S.
    const bare = sid.slice(0, sid.lastIndexOf('.'));
    assert.match(bare, /^[0-9a-f-]{36}$/);
    const seen = upstream.requests.find((r) => r.body.includes('"id":5'));
    assert.equal(seen?.headers['mcp-session-id'], bare);
  });

  it('an unsigned session id is refused before the upstream; an ended session is refused by the upstream', async () => {
    const t = await mint('guesser', 'mcp:use');
    const res = await post(t, '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', { 'mcp-session-id': randomUUID(), 'x-probe': 'guess' });
    assert.equal(res.status, 404);
    assert.deepEqual(((await res.json()) as { error: unknown }).error, { code: -32001, message: 'Session not found.' });
    assert.equal((await lastEvent()).reason, 'mcp_session_unknown');
    assert.equal(upstream.requests.filter((r) => r.headers['x-probe'] === 'guess').length, 0);

    const { transport } = await connect(t);
    const sid = transport.sessionId as string;
    await transport.terminateSession();
    // The gateway keeps no table: the upstream, which ended the session, says it is gone.
    const after = await post(t, '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', { 'mcp-session-id': sid });
    assert.equal(after.status, 404);
    await after.text();
    const e = await lastEvent();
    assert.equal(e.decision, 'allow');
    assert.equal(e.upstream_status, 404);
  });

  it('tunnel bypass: a WebSocket upgrade on an MCP route is refused (its tool calls could not be read)', async () => {
    const t = await mint('tunnel', 'mcp:use admin');
    const status = await upgradeStatus(gw.url, '/mcp', { authorization: `Bearer ${t}`, 'x-probe': 'tunnel' });
    assert.equal(status, 400);
    assert.equal(upstream.requests.filter((r) => r.headers['x-probe'] === 'tunnel').length, 0);
  });

  it('401 without a token, with the MCP challenge pointing at the RFC 9728 metadata and naming the scope the route requires of every caller', async () => {
    const res = await post(undefined, '{"jsonrpc":"2.0","id":1,"method":"initialize"}');
    assert.equal(res.status, 401);
    const port = new URL(gw.url).port;
    // MCP authorization (Scope Selection Strategy): the scope of the rule that decides initialize,
    // not every tool's scope (files:read, files:write, admin come by step-up).
    assert.equal(
      res.headers.get('www-authenticate'),
      `Bearer scope="mcp:use", resource_metadata="http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp"`,
    );
    const bad = await post('not.a.jwt', '{"jsonrpc":"2.0","id":1,"method":"initialize"}');
    assert.equal(bad.status, 401);
    assert.match(
      bad.headers.get('www-authenticate') ?? '',
      /^Bearer error="invalid_token", error_description="[^"]+", scope="mcp:use", resource_metadata="/,
    );
    // The same on a request without a body (GET: the SSE stream), which never reads a tool name.
    const stream = await fetch(endpoint(), { headers: { accept: 'text/event-stream' } });
    assert.equal(stream.status, 401);
    assert.match(stream.headers.get('www-authenticate') ?? '', /^Bearer scope="mcp:use", resource_metadata="/);
    // Other routes are untouched.
    const api = await fetch(`${gw.url}/api/x`);
    assert.equal(api.status, 401);
    assert.equal(api.headers.get('www-authenticate'), 'Bearer');
  });

  it('serves RFC 9728 protected resource metadata publicly, path-suffixed and bare', async () => {
    const base = gw.url;
    const expected = {
      resource: `${base}/mcp`,
      authorization_servers: [ISSUER],
      scopes_supported: ['admin', 'files:read', 'files:write', 'mcp:use'],
      bearer_methods_supported: ['header'],
    };
    for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), 'application/json');
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      // Cache poisoning: the origin in it comes from the request (no server.public_url here), so a
      // shared cache must key on what a trusted proxy may say it was.
      assert.equal(res.headers.get('vary'), 'X-Forwarded-Host, X-Forwarded-Proto');
      assert.deepEqual(await res.json(), expected);
    }
    // Not an MCP route's path: not metadata (and here no route at all).
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/other`)).status, 404);
  });

  it('tessera check --mcp passes every check on an MCP route: metadata, challenges, and an initialize with the token', async () => {
    const t = await mint('checker', 'mcp:use');
    const before = upstream.requests.length;
    const results = await runChecks(`${gw.url}/mcp`, t, { mcp: true });
    assert.deepEqual(
      results.filter((r) => !r.ok),
      [],
    );
    assert.deepEqual(
      results.map((r) => r.name),
      [
        'public discovery reachable without a token',
        'protected path refuses a request without a token',
        'a malformed token is refused',
        'a token without the Bearer scheme is refused',
        'the valid token is accepted',
        'the 401 challenge points at the protected resource metadata',
        'the protected resource metadata names an authorization server',
        'the protected resource metadata names the checked URL as its resource',
      ],
    );
    assert.match(results[0]?.detail ?? '', /oauth-protected-resource/);
    // The check's session is ended again (initialize, then DELETE), not left open on the server.
    const seen = upstream.requests.slice(before);
    assert.deepEqual(
      seen.map((r) => r.method),
      ['POST', 'DELETE'],
    );
    assert.match(seen[0]?.body.toString() ?? '', /"method":"initialize"/);
  });

  it('tessera check --mcp fails the metadata checks against a route that is not MCP', async () => {
    const results = await runChecks(`${gw.url}/api/x`, await mint('checker2', 'mcp:use'), { mcp: true });
    const failed = results.filter((r) => !r.ok).map((r) => r.name);
    assert.ok(failed.includes('the 401 challenge points at the protected resource metadata'), String(failed));
  });

  it('no token appears in any audit event or log line', async () => {
    const all = JSON.stringify(await gw.served.gateway.audit.flush().then(() => gw.audit.events));
    const logs = logLines.join('');
    assert.ok(logs.length > 0);
    assert.ok(tokens.length > 5);
    for (const t of tokens) {
      for (const part of [t, t.split('.')[2] as string]) {
        assert.ok(!all.includes(part), 'a token in the audit trail');
        assert.ok(!logs.includes(part), 'a token in the logs');
      }
    }
    assert.ok((await events()).some((e) => e.tool !== undefined));
  });
});

describe('gateway: MCP rpc (JSON-RPC method) rules', () => {
  let upstream: McpUpstream;
  let gw: TestGateway;
  const clients: Client[] = [];
  const endpoint = () => new URL(`${gw.url}/mcp`);
  async function connect(t: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
    const transport = new StreamableHTTPClientTransport(endpoint(), { requestInit: { headers: { authorization: `Bearer ${t}` } } });
    const client = new Client({ name: 'test-agent', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    return { client, transport };
  }
  const post = (t: string, body: unknown, session: string) =>
    fetch(endpoint(), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}`, 'mcp-session-id': session },
      body: JSON.stringify(body),
    });
  const received = (method: string) => upstream.requests.filter((r) => r.method === 'POST' && r.body.includes(`"${method}"`)).length;
  const lastEvent = async () => ((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent;
  const forbidden = (e: unknown) => (e as { code?: unknown }).code === 403 && /insufficient_scope/.test(String(e));

  before(async () => {
    upstream = await startMcpUpstream();
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {}, 'files:read': {}, admin: {} },
      gateway: {
        routes: [
          mcpRoute(upstream.url, [
            { id: 'resources-read', rpc: 'resources/read', scopes: ['files:read'] },
            { id: 'prompts', rpc: 'prompts/*', scopes: ['admin'] },
            { id: 'mcp', scopes: ['mcp:use'] },
          ]),
        ],
      },
    });
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    // Optional: a gateway refusing the configuration must not leave the upstream holding the run open.
    await gw?.close();
    await upstream?.close();
  });

  it('rpc-rule bypass: resources/read without the rule scope is refused 403 insufficient_scope; the server never receives it', async () => {
    const t = await token({ sub: 'no-files', scope: 'mcp:use', client_id: 'no-files-agent' });
    const { client, transport } = await connect(t);
    // Methods no rpc rule names fall to the catch-all.
    assert.ok((await client.listResources()).resources.some((r) => r.uri === 'file:///readme'));
    await assert.rejects(client.readResource({ uri: 'file:///readme' }), forbidden);
    const res = await post(
      t,
      { jsonrpc: '2.0', id: 5, method: 'resources/read', params: { uri: 'file:///readme' } },
      transport.sessionId as string,
    );
    assert.equal(res.status, 403);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /error="insufficient_scope"/);
    assert.match(challenge, /scope="files:read"/);
    assert.equal(((await res.json()) as { error: string }).error, 'insufficient_scope');
    const e = await lastEvent();
    assert.equal(e.decision, 'deny');
    assert.equal(e.reason, 'scope_insufficient');
    assert.equal(e.detail?.rule, 'resources-read');
    assert.equal(e.detail?.rpc, 'resources/read');
    assert.equal(e.tool, undefined);
    assert.equal(received('resources/read'), 0);
  });

  it('resources/read with the rule scope reaches the server and its result comes back', async () => {
    const { client } = await connect(await token({ sub: 'files', scope: 'mcp:use files:read', client_id: 'files-agent' }));
    const { contents } = await client.readResource({ uri: 'file:///readme' });
    assert.deepEqual(contents, [{ uri: 'file:///readme', text: 'readme' }]);
    assert.equal(received('resources/read'), 1);
    const e = await lastEvent();
    assert.equal(e.decision, 'allow');
    assert.equal(e.detail?.rule, 'resources-read');
    assert.equal(e.detail?.rpc, 'resources/read');
  });

  it('a glob rpc rule (prompts/*) covers prompts/list and prompts/get; methods are matched case-sensitively', async () => {
    const user = await token({ sub: 'prompt-user', scope: 'mcp:use', client_id: 'prompt-user-agent' });
    const { client, transport } = await connect(user);
    await assert.rejects(client.listPrompts(), forbidden);
    await assert.rejects(client.getPrompt({ name: 'greet' }), forbidden);
    assert.equal((await lastEvent()).detail?.rule, 'prompts');
    assert.equal(received('prompts/list') + received('prompts/get'), 0);
    // Another case is another method: the catch-all decides, and the server answers it as unknown.
    const res = await post(
      user,
      { jsonrpc: '2.0', id: 6, method: 'Prompts/Get', params: { name: 'greet' } },
      transport.sessionId as string,
    );
    assert.equal(res.status, 200);
    assert.equal((await lastEvent()).detail?.rule, 'mcp');
    assert.equal(received('Prompts/Get'), 1);

    const { client: admin } = await connect(await token({ sub: 'prompt-admin', scope: 'mcp:use admin', client_id: 'prompt-admin-agent' }));
    assert.ok((await admin.listPrompts()).prompts.some((p) => p.name === 'greet'));
    assert.equal((await admin.getPrompt({ name: 'greet' })).messages.length, 1);
    assert.equal(received('prompts/get'), 1);
  });

  it('a request without a JSON-RPC method (DELETE ending the session) skips rpc rules for the catch-all', async () => {
    const t = await token({ sub: 'ender', scope: 'mcp:use', client_id: 'ender-agent' });
    const { transport } = await connect(t);
    const res = await fetch(endpoint(), {
      method: 'DELETE',
      headers: { authorization: `Bearer ${t}`, 'mcp-session-id': transport.sessionId as string },
    });
    assert.equal(res.status, 200);
    const e = await lastEvent();
    assert.equal(e.detail?.rule, 'mcp');
    assert.equal(e.detail?.rpc, undefined);
  });
});

describe("gateway: the scope of an MCP route's 401 challenge", () => {
  let upstream: McpUpstream;
  let gw: TestGateway;
  const unauthenticated = (path: string) =>
    fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT },
      body: '{"jsonrpc":"2.0","id":1,"method":"initialize"}',
    });

  before(async () => {
    upstream = await startMcpUpstream();
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {}, 'team:x': {}, admin: {} },
      gateway: {
        routes: [
          // Every caller may open a session; only tools need a scope.
          mcpRoute(upstream.url, [{ id: 'admin-tools', tool: 'admin.*', scopes: ['admin'] }, { id: 'open' }], {
            id: 'open-mcp',
            match: { path_prefix: '/open' },
          }),
          // initialize falls past the tool rule, the rpc rule and the rule for another path to the
          // catch-all, whose two scopes the challenge names as written.
          mcpRoute(
            upstream.url,
            [
              { id: 'tools', tool: '*', scopes: ['admin'] },
              { id: 'prompts', rpc: 'prompts/*', scopes: ['admin'] },
              { id: 'elsewhere', path: '/team/other/**', scopes: ['admin'] },
              { id: 'team', scopes: ['mcp:use', 'team:x'] },
            ],
            { id: 'team-mcp', match: { path_prefix: '/team' } },
          ),
          // Matched by a pattern: initialize is decided for a path the pattern takes.
          mcpRoute(
            upstream.url,
            [
              { id: 'tenant', path: '/t/:tenant/mcp', scopes: ['team:x'] },
              { id: 'rest', scopes: ['admin'] },
            ],
            {
              id: 'tenant-mcp',
              match: { path: '/t/:tenant/mcp' },
              audience: 'https://mcp.example.com/t/acme/mcp',
              mcp: { resource: 'https://mcp.example.com/t/acme/mcp' },
            },
          ),
        ],
      },
    });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  it('no scope attribute when the rule deciding initialize requires none', async () => {
    const res = await unauthenticated('/open');
    assert.equal(res.status, 401);
    const port = new URL(gw.url).port;
    assert.equal(
      res.headers.get('www-authenticate'),
      `Bearer resource_metadata="http://127.0.0.1:${port}/.well-known/oauth-protected-resource/open"`,
    );
  });

  it("exactly the scopes of the rule deciding initialize: not the tools' or the methods' scopes; all of them in the metadata", async () => {
    const res = await unauthenticated('/team');
    assert.equal(res.status, 401);
    const port = new URL(gw.url).port;
    assert.equal(
      res.headers.get('www-authenticate'),
      `Bearer scope="mcp:use team:x", resource_metadata="http://127.0.0.1:${port}/.well-known/oauth-protected-resource/team"`,
    );
    // RFC 9728 metadata: every scope the route's rules name, the challenge's among them.
    const doc = (await (await fetch(`${gw.url}/.well-known/oauth-protected-resource/team`)).json()) as { scopes_supported: string[] };
    assert.deepEqual(doc.scopes_supported, ['admin', 'mcp:use', 'team:x']);
    assert.equal(upstream.requests.length, 0);
  });

  it('a route matched by a path pattern: the scopes of the rule deciding initialize at a path it takes', async () => {
    const res = await unauthenticated('/t/acme/mcp');
    assert.equal(res.status, 401);
    assert.equal(
      res.headers.get('www-authenticate'),
      'Bearer scope="team:x", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/t/acme/mcp"',
    );
  });
});

describe('gateway: MCP routes under a rate limit', () => {
  let gw: TestGateway;
  let upstream: McpUpstream;
  before(async () => {
    upstream = await startMcpUpstream();
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {} },
      gateway: {
        routes: [mcpRoute(upstream.url, [{ scopes: ['mcp:use'] }], { rate_limit: { key: 'subject', rate: 0.01, burst: 1 } })],
      },
    });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  it('a caller over its limit gets 429 before the gateway reads (and buffers) its body', async () => {
    const t = await token({ sub: 'flooder', scope: 'mcp:use' });
    const post = (body: string) =>
      fetch(`${gw.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
        body,
      });
    // The first request spends the burst (its body is not JSON: 400 from the parser).
    assert.equal((await post('not json')).status, 400);
    // Over the limit, the body is never parsed: the answer is 429, not a parse error.
    const res = await post('not json either');
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    const events = (await requestEvents(gw)) as AuditEvent[];
    assert.deepEqual(
      events.map((e) => e.reason),
      ['mcp_message_invalid', 'rate_limited'],
    );
    assert.equal(upstream.requests.length, 0);
  });
});

describe('gateway: MCP discovery behind a proxy that mounts the gateway under a path (server.public_url with a path)', () => {
  let gw: TestGateway;
  let upstream: McpUpstream;
  const PUBLIC = 'https://gw.example.com/tessera';
  before(async () => {
    upstream = await startMcpUpstream();
    gw = await startGateway({
      ...baseConfig(),
      // Written with an upper-case host and the default port: the resource is the URL's normal form.
      server: { public_url: 'https://GW.example.com:443/tessera/' },
      scopes: { 'mcp:use': {} },
      // The audience is the resource the metadata names (clients request tokens for it as it is).
      gateway: { routes: [mcpRoute(upstream.url, [{ scopes: ['mcp:use'] }], { audience: 'https://gw.example.com/tessera/mcp' })] },
    });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  it('names the resource clients reach (public_url + path_prefix) and serves its document where RFC 9728 §3.1 puts it', async () => {
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT },
      body: '{"jsonrpc":"2.0","id":1,"method":"initialize"}',
    });
    assert.equal(res.status, 401);
    // The well-known prefix goes between the host and the resource's whole path, /tessera included.
    assert.equal(
      res.headers.get('www-authenticate'),
      'Bearer scope="mcp:use", resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/tessera/mcp"',
    );
    // The proxy forwards that root path as it is; the document names the URL the client called,
    // which MCP clients require the resource to match.
    const doc = await fetch(`${gw.url}/.well-known/oauth-protected-resource/tessera/mcp`);
    assert.equal(doc.status, 200);
    assert.equal(((await doc.json()) as { resource: string }).resource, `${PUBLIC}/mcp`);
    // Still served at the bare prefix, as before the public path counted.
    const bare = await fetch(`${gw.url}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(((await bare.json()) as { resource: string }).resource, `${PUBLIC}/mcp`);
  });
});

describe('gateway: an MCP body over the limit (max_message_size, or the route max_body_size)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let auth: Record<string, string>;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {} },
      gateway: {
        routes: [
          mcpRoute(upstream.url, [{ id: 'mcp', scopes: ['mcp:use'] }], { mcp: { max_message_size: '1kb' } }),
          // The route's own limit below the default max_message_size (1mb): the declared length is checked against both.
          mcpRoute(upstream.url, [{ id: 'mcp', scopes: ['mcp:use'] }], {
            id: 'narrow',
            match: { path_prefix: '/narrow' },
            max_body_size: '1kb',
          }),
        ],
      },
    });
    auth = { authorization: `Bearer ${await token({ scope: 'mcp:use' })}` };
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = JSON.stringify({
    jsonrpc: '2.0',
    id: 5,
    method: 'tools/call',
    params: { name: 'echo', arguments: { text: 'x'.repeat(2000) } },
  });
  const post = (path: string, body: string | ReadableStream<Uint8Array>) =>
    fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, ...auth },
      body,
      ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
    } as RequestInit);

  it('a Content-Length over max_message_size: 413 with a JSON-RPC error, as the other MCP body refusals, never forwarded', async () => {
    const before = upstream.seen.length;
    await assertRpcTooLarge(gw, await post('/mcp', call));
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('a chunked body passing max_message_size: 413 with a JSON-RPC error, never forwarded', async () => {
    const before = upstream.seen.length;
    const chunked = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(call));
        c.close();
      },
    });
    await assertRpcTooLarge(gw, await post('/mcp', chunked));
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('a Content-Length over the route max_body_size (under max_message_size): 413 with a JSON-RPC error, never forwarded', async () => {
    const before = upstream.seen.length;
    await assertRpcTooLarge(gw, await post('/narrow', call));
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('a chunked body over the route max_body_size (under max_message_size): 413 with a JSON-RPC error, never forwarded', async () => {
    const before = upstream.seen.length;
    const chunked = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(call));
        c.close();
      },
    });
    await assertRpcTooLarge(gw, await post('/narrow', chunked));
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('a body within the limit still passes', async () => {
    // Not a tools/list: this upstream is no MCP server, and its answer to one would be refused as unfilterable.
    const small = '{"jsonrpc":"2.0","id":6,"method":"ping"}';
    for (const path of ['/mcp', '/narrow']) {
      const res = await post(path, small);
      assert.equal(res.status, 200, path);
      await res.text();
      assert.equal(upstream.seen.at(-1)?.body, small, path);
    }
  });
});
