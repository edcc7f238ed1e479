/**
 * MCP routes answer a refusal made after the JSON-RPC body is read (the upstream down, slow, its
 * credential not obtainable, the gateway's own failure) as a JSON-RPC 2.0 error echoing the call's
 * id, with the refusal's HTTP status: MCP is JSON-RPC over Streamable HTTP, and clients that parse a
 * non-2xx JSON-RPC error body (the Rust SDK) surface it as the call's error; the TypeScript SDK
 * shows the body's text. 401 and 403 keep their challenge (the SDK's auth flow reads it).
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { UpstreamTokenIssuer } from '../../../src/core/ports.ts';
import {
  assertRpcError,
  mcpRoute,
  type RawUpstream,
  requestEvents,
  startRawUpstream,
  startUpstream,
  type TestGateway,
  token,
  UPSTREAM_UNAVAILABLE,
  type Upstream,
} from '../helpers.ts';
import { ACCEPT, RULES, startToolsGateway } from './helpers.ts';

describe('gateway: MCP refusals after the JSON-RPC body is read are JSON-RPC errors', () => {
  let upstream: Upstream;
  let odd: RawUpstream;
  let gw: TestGateway;
  let deadPort: number;
  let issuerMode: 'fail' | 'throw' = 'fail';
  const issuer: UpstreamTokenIssuer = {
    // Not async: 'throw' is a port failing synchronously, which the gateway does not expect.
    issueForUpstream() {
      if (issuerMode === 'throw') throw new Error('issuer bug');
      return Promise.reject(new Error('token service down'));
    },
  };

  before(async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    deadPort = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    upstream = await startUpstream(() => {
      // Never answers: the route's header timeout does.
    });
    // A status outside 100–599, with a JSON-RPC result of its own.
    odd = await startRawUpstream((head) => {
      const body = '{"jsonrpc":"2.0","id":5,"result":{"internal":"db-7"}}';
      return `HTTP/1.1 ${head.includes('/odd/099') ? '099' : '700'} X\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    });
    const at = (id: string, url: string, extra: Record<string, unknown> = {}) =>
      mcpRoute(url, RULES, { id, match: { path_prefix: `/${id}` }, ...extra });
    gw = await startToolsGateway(
      [
        at('down', `http://127.0.0.1:${deadPort}`),
        at('odd', odd.url),
        at('slow', upstream.url, { upstream: { url: upstream.url, timeouts: { header: '200ms' } } }),
        at('minted', upstream.url, {
          upstream: { url: upstream.url, credential: { type: 'exchange', audience: 'https://upstream.internal', max_ttl: '5m' } },
        }),
      ],
      { upstreamTokenIssuer: issuer },
    );
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
    await odd?.close();
  });

  const bearer = () => token({ sub: 'alice', scope: 'mcp:use echo:use' });
  const post = async (path: string, message: unknown) =>
    fetch(`${gw.url}/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${await bearer()}` },
      body: JSON.stringify(message),
    });
  const call = (id: unknown, name = 'echo') => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });
  const lastReason = async () => (await requestEvents(gw)).at(-1)?.reason;

  it('upstream down: 502 as a JSON-RPC -32603 error echoing the call id (a string or a number), audited upstream_unavailable', async () => {
    for (const id of [42, 'call-42']) {
      await assertRpcError(await post('down', call(id)), { status: 502, id, code: -32603, message: UPSTREAM_UNAVAILABLE });
      assert.equal(await lastReason(), 'upstream_unavailable');
    }
    // A notification has no id to echo: null.
    await assertRpcError(await post('down', { jsonrpc: '2.0', method: 'notifications/initialized' }), {
      status: 502,
      id: null,
      code: -32603,
      message: UPSTREAM_UNAVAILABLE,
    });
  });

  it('upstream timeout: 504 as a JSON-RPC -32603 error echoing the call id, audited upstream_timeout', async () => {
    await assertRpcError(await post('slow', call(7)), {
      status: 504,
      id: 7,
      code: -32603,
      message: 'The upstream service did not answer in time.',
    });
    assert.equal(await lastReason(), 'upstream_timeout');
  });

  it('upstream status outside 100–599 (700, 099): 502 as a JSON-RPC -32603 error echoing the call id, audited upstream_status_invalid with the status sent', async () => {
    for (const [path, sent] of [
      ['odd', 700],
      ['odd/099', 99],
    ] as const) {
      await assertRpcError(await post(path, call(5)), {
        status: 502,
        id: 5,
        code: -32603,
        message: 'The upstream service answered with an invalid status code.',
      });
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.reason, 'upstream_status_invalid');
      assert.equal(e.upstream_status, sent);
    }
  });

  it('upstream credential not obtainable (the token service fails): 502 as a JSON-RPC -32603 error echoing the call id, audited upstream_credential_unavailable', async () => {
    issuerMode = 'fail';
    await assertRpcError(await post('minted', call(8)), {
      status: 502,
      id: 8,
      code: -32603,
      message: 'The credential for the upstream service could not be obtained.',
    });
    assert.equal(await lastReason(), 'upstream_credential_unavailable');
  });

  it('an internal error after the body is read: 500 as a JSON-RPC -32603 error with a fixed message echoing the call id, audited internal_error', async () => {
    issuerMode = 'throw';
    try {
      const res = await post('minted', call(9));
      await assertRpcError(res, { status: 500, id: 9, code: -32603, message: 'The gateway could not handle the request.' });
      assert.equal(await lastReason(), 'internal_error');
    } finally {
      issuerMode = 'fail';
    }
  });

  it('a request without a body (GET, the SSE stream) keeps the plain error body: there is no call to answer', async () => {
    const res = await fetch(`${gw.url}/down`, { headers: { accept: 'text/event-stream', authorization: `Bearer ${await bearer()}` } });
    assert.equal(res.status, 502);
    assert.equal(((await res.json()) as { error: string }).error, 'bad_gateway');
  });

  it('401 and 403 keep their WWW-Authenticate challenge and OAuth body (the SDK auth flow reads them)', async () => {
    const anonymous = await fetch(`${gw.url}/down`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT },
      body: JSON.stringify(call(1)),
    });
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer /);
    const forbidden = await post('down', call(2, 'admin.reset'));
    assert.equal(forbidden.status, 403);
    assert.match(forbidden.headers.get('www-authenticate') ?? '', /insufficient_scope/);
    assert.equal(((await forbidden.json()) as { error: string }).error, 'insufficient_scope');
  });

  it('the MCP SDK client surfaces the refusal as a StreamableHTTPError with the status and the JSON-RPC error in its message', async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/down`), {
      requestInit: { headers: { authorization: `Bearer ${await bearer()}` } },
    });
    const client = new Client({ name: 'test-agent', version: '1.0.0' });
    try {
      await assert.rejects(client.connect(transport), (e: unknown) => {
        assert.ok(e instanceof StreamableHTTPError, String(e));
        assert.equal(e.code, 502);
        assert.match(e.message, /"code":-32603,"message":"The upstream service is unavailable\."/);
        return true;
      });
    } finally {
      await client.close();
    }
  });
});
