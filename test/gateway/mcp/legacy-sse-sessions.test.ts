/**
 * The MCP SDK's deprecated HTTP+SSE transport (protocol 2024-11-05, `SSEServerTransport`), still
 * served beside Streamable HTTP by many servers: the session id travels in the `endpoint` event's
 * data and the POST's `?sessionId=` query, not in `Mcp-Session-Id`, so the gateway does not bind it
 * to the principal that opened the stream. A real SDK server on loopback behind the gateway.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import express from 'express';
import { z } from 'zod';
import { baseConfig, mcpRoute, startGateway, type TestGateway, token } from '../helpers.ts';

describe('gateway: MCP legacy HTTP+SSE sessions (SSEServerTransport)', () => {
  let http: Server;
  let gw: TestGateway;
  const transports = new Map<string, SSEServerTransport>();
  /** Who the echo tool ran for, by session. */
  const ran: { session: string; text: string }[] = [];

  before(async () => {
    const app = express();
    app.get('/mcp/sse', async (_req, res) => {
      const transport = new SSEServerTransport('/mcp/messages', res);
      transports.set(transport.sessionId, transport);
      const server = new McpServer({ name: 'legacy', version: '1.0.0' });
      server.registerTool('echo', { description: 'echo', inputSchema: { text: z.string() } }, async ({ text }) => {
        ran.push({ session: transport.sessionId, text });
        return { content: [{ type: 'text', text: `echo:${text}` }] };
      });
      await server.connect(transport);
    });
    app.post('/mcp/messages', async (req, res) => {
      const transport = transports.get(String(req.query.sessionId));
      if (transport === undefined) return void res.status(404).end();
      await transport.handlePostMessage(req as unknown as IncomingMessage, res);
    });
    http = app.listen(0, '127.0.0.1');
    await once(http, 'listening');
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'mcp:use': {} },
      gateway: { routes: [mcpRoute(`http://127.0.0.1:${(http.address() as AddressInfo).port}`, [{ scopes: ['mcp:use'] }])] },
    });
  });
  after(async () => {
    await gw.close();
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
  });

  it("session hijack: another principal POSTing to the legacy endpoint with the victim's ?sessionId= is refused before the upstream", {
    todo: 'not fixed: the legacy session id (the endpoint event data, ?sessionId=) is neither signed nor bound to the principal',
  }, async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'agent' });
    const bob = await token({ sub: 'bob', scope: 'mcp:use', client_id: 'agent' });
    const stream = new AbortController();
    const sse = await fetch(`${gw.url}/mcp/sse`, {
      headers: { authorization: `Bearer ${alice}`, accept: 'text/event-stream' },
      signal: stream.signal,
    });
    assert.equal(sse.status, 200);
    const reader = (sse.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    while (!/\n\n/.test(text)) text += Buffer.from((await reader.read()).value ?? []).toString();
    const endpoint = /data: (\S+)/.exec(text)?.[1] as string;
    const session = new URL(endpoint, gw.url).searchParams.get('sessionId') as string;
    try {
      const res = await fetch(new URL(endpoint, gw.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${bob}`, 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'from bob' } } }),
      });
      await res.text();
      assert.deepEqual(
        ran.filter((r) => r.session === session),
        [],
        "Bob's call ran in Alice's session",
      );
      assert.equal(res.status, 404);
    } finally {
      stream.abort();
    }
  });
});
