/**
 * The MCP SDK's deprecated HTTP+SSE transport (protocol 2024-11-05, `SSEServerTransport`), still
 * served beside Streamable HTTP by many servers: the session id travels in the `endpoint` event's
 * data and the POST's `?sessionId=` query, not in `Mcp-Session-Id`. The gateway binds it as it
 * binds `Mcp-Session-Id`: the endpoint event names `S.<mac>` (signed for the caller and the route),
 * and a POST naming a session is let through, with the bare `S`, only when the MAC verifies for the
 * principal making it. A real SDK server (and client) on loopback behind the gateway.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import express from 'express';
import { z } from 'zod';
import { baseConfig, mcpRoute, requestEvents, startGateway, type TestGateway, token } from '../helpers.ts';

const CALL = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'from bob' } } });

describe('gateway: MCP legacy HTTP+SSE sessions (SSEServerTransport)', () => {
  let http: Server;
  let gw: TestGateway;
  const transports = new Map<string, SSEServerTransport>();
  /** Who the echo tool ran for, by session. */
  const ran: { session: string; text: string }[] = [];
  /** Every POST the upstream received: the raw query it saw and the test's probe header. */
  const posted: { url: string; probe: string | undefined }[] = [];

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
    // An upstream naming a message endpoint the route does not serve: its session would be posted
    // where no MCP route checks it.
    app.get('/mcp/off-route', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      res.write(': ready\n\n');
      setTimeout(() => res.write('event: endpoint\ndata: /other/messages?sessionId=abc\n\n'), 50);
    });
    app.post('/mcp/messages', async (req, res) => {
      posted.push({ url: req.url, probe: req.headers['x-probe'] as string | undefined });
      // express's query parser: `sessionId[]=S` and `sessionId=S` both name S here.
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

  /** Opens the legacy stream as `bearer` and reads its endpoint event. */
  async function openStream(bearer: string): Promise<{ endpoint: string; session: string; close: () => void }> {
    const stream = new AbortController();
    const sse = await fetch(`${gw.url}/mcp/sse`, {
      headers: { authorization: `Bearer ${bearer}`, accept: 'text/event-stream' },
      signal: stream.signal,
    });
    assert.equal(sse.status, 200);
    const reader = (sse.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    while (!/\n\n/.test(text)) text += Buffer.from((await reader.read()).value ?? []).toString();
    assert.match(text, /^event: endpoint\n/);
    const endpoint = /data: (\S+)/.exec(text)?.[1] as string;
    const session = new URL(endpoint, gw.url).searchParams.get('sessionId') as string;
    return { endpoint, session, close: () => stream.abort() };
  }

  /** The gateway.request events written while `run` ran. */
  async function eventsOf(run: () => Promise<void>) {
    const before = (await requestEvents(gw)).length;
    await run();
    return (await requestEvents(gw)).slice(before);
  }

  async function postAs(bearer: string, url: string, probe: string): Promise<Response> {
    return fetch(new URL(url, gw.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json', 'x-probe': probe },
      body: CALL,
    });
  }

  async function assertSessionRefused(res: Response): Promise<void> {
    assert.equal(res.status, 404);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.deepEqual(await res.json(), { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found.' } });
  }

  it("the owner's own flow: the SDK's SSE client connects, its endpoint names a signed session, its tool call runs in it", async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'agent' });
    const { endpoint, session, close } = await openStream(alice);
    close();
    // The caller holds S.<mac> on the path the upstream named; the upstream's S is a UUID.
    assert.match(endpoint, /^\/mcp\/messages\?sessionId=[0-9a-f-]{36}\.[A-Za-z0-9_-]{22}$/);
    assert.ok(transports.has(session.slice(0, -23)));

    const client = new Client({ name: 'alice', version: '1.0.0' });
    const transport = new SSEClientTransport(new URL(`${gw.url}/mcp/sse`), {
      requestInit: { headers: { authorization: `Bearer ${alice}` } },
    });
    await client.connect(transport);
    try {
      const result = await client.callTool({ name: 'echo', arguments: { text: 'from alice' } });
      assert.deepEqual(result.content, [{ type: 'text', text: 'echo:from alice' }]);
      const mine = ran.find((r) => r.text === 'from alice');
      assert.ok(mine);
      // The upstream only ever sees its own S, never the gateway's MAC.
      const seen = posted.filter((p) => p.url.includes(mine.session));
      assert.ok(seen.length >= 2); // initialize, initialized, tools/call
      for (const p of seen) assert.equal(p.url, `/mcp/messages?sessionId=${mine.session}`);
    } finally {
      await client.close();
    }
  });

  it("session hijack: another principal POSTing with the victim's ?sessionId= is refused before the upstream", async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'agent' });
    const bob = await token({ sub: 'bob', scope: 'mcp:use', client_id: 'agent' });
    const { endpoint, session, close } = await openStream(alice);
    try {
      let res: Response | undefined;
      const events = await eventsOf(async () => {
        res = await postAs(bob, endpoint, 'hijack');
        await assertSessionRefused(res);
      });
      assert.equal(events.length, 1);
      assert.equal(events[0]?.reason, 'mcp_session_principal_mismatch');
      assert.equal(events[0]?.subject, 'bob');
      // The same subject through another client is another principal.
      const otherClient = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'other-agent' });
      await assertSessionRefused(await postAs(otherClient, endpoint, 'hijack'));
      assert.deepEqual(
        ran.filter((r) => r.session === session.slice(0, -23)),
        [],
        "Bob's call ran in Alice's session",
      );
      assert.equal(posted.filter((p) => p.probe === 'hijack').length, 0);
    } finally {
      close();
    }
  });

  it('session hijack with the bare upstream id, or spelled so the upstream still reads it, is refused as unknown', async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'agent' });
    const bob = await token({ sub: 'bob', scope: 'mcp:use', client_id: 'agent' });
    const { session, close } = await openStream(alice);
    const bare = session.slice(0, -23);
    try {
      for (const query of [
        `sessionId=${bare}`,
        `sessionId[]=${bare}`,
        `sessionId%5B%5D=${bare}`,
        `%73essionId=${bare}`,
        `SessionID=${bare}`,
        `session_id=${bare}`,
        `x=1;sessionId=${bare}`,
        `sessionId=${encodeURIComponent(session)}&sessionId=${bare}`,
        `sessionId=${encodeURIComponent(session)}&session_id=${bare}`,
        `sessionId=${encodeURIComponent(session)}&sessionid=${bare}`,
      ]) {
        const events = await eventsOf(async () => assertSessionRefused(await postAs(bob, `/mcp/messages?${query}`, 'bare')));
        assert.equal(events.length, 1, query);
        assert.ok(['mcp_session_unknown', 'mcp_session_principal_mismatch'].includes(events[0]?.reason as string), query);
      }
      assert.equal(posted.filter((p) => p.probe === 'bare').length, 0);
      assert.deepEqual(
        ran.filter((r) => r.session === bare),
        [],
      );
    } finally {
      close();
    }
  });

  it('a tampered session id (its MAC or its session changed) is refused, the owner included', async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'agent' });
    const { session, close } = await openStream(alice);
    const other = await openStream(alice);
    try {
      const mac = session.slice(-22);
      const flipped = `${session.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`;
      // Another session of the same caller with this one's MAC.
      const swapped = `${other.session.slice(0, -22)}${mac}`;
      for (const forged of [flipped, swapped]) {
        const events = await eventsOf(async () =>
          assertSessionRefused(await postAs(alice, `/mcp/messages?sessionId=${encodeURIComponent(forged)}`, 'tampered')),
        );
        assert.equal(events.length, 1);
        assert.equal(events[0]?.reason, 'mcp_session_principal_mismatch');
      }
      assert.equal(posted.filter((p) => p.probe === 'tampered').length, 0);
    } finally {
      close();
      other.close();
    }
  });

  it('an endpoint event naming a path the route does not serve ends the stream (upstream_error session_id_invalid), the event not relayed', async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use', client_id: 'agent' });
    let text = '';
    const events = await eventsOf(async () => {
      const sse = await fetch(`${gw.url}/mcp/off-route`, { headers: { authorization: `Bearer ${alice}`, accept: 'text/event-stream' } });
      assert.equal(sse.status, 200);
      const reader = (sse.body as ReadableStream<Uint8Array>).getReader();
      try {
        for (let r = await reader.read(); !r.done; r = await reader.read()) text += Buffer.from(r.value).toString();
      } catch {
        // Cut: the connection closed mid-stream.
      }
    });
    // What came before the event went out; the event did not.
    assert.match(text, /^: ready\n\n/);
    assert.doesNotMatch(text, /endpoint|sessionId/);
    // (Other tests' streams, ended before, may be audited meanwhile.)
    const mine = events.filter((e) => e.path === '/mcp/off-route');
    assert.equal(mine.length, 1);
    // Cut after its head went out: the request was answered, the cut is told in the event's detail.
    assert.equal(mine[0]?.detail?.upstream_error, 'session_id_invalid');
  });
});
