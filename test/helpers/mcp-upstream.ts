/** A real MCP server (McpServer + StreamableHTTPServerTransport on node:http, loopback) for tests. */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { type EventStore, StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

/** What the MCP upstream received: every HTTP request (raw body) and every tool it ran. */
export interface McpUpstream {
  readonly url: string;
  readonly requests: { method: string; headers: IncomingMessage['headers']; body: Buffer }[];
  readonly toolCalls: string[];
  /** Resolves the `slow` tool. */
  release(): void;
  close(): Promise<void>;
}

/** `eventStore`: one store for every session (resumable streams, as a server keeping events in a shared database has).
 * Tools `echo`, `files.read`, `files.read_meta`, `files.write`, `admin.reset` (each answers `name:text`) and `slow`;
 * the resource `file:///readme` (text `readme`) and the prompt `greet`. */
export async function startMcpUpstream(options: { readonly eventStore?: EventStore } = {}): Promise<McpUpstream> {
  const requests: McpUpstream['requests'] = [];
  const toolCalls: string[] = [];
  const transports = new Map<string, StreamableHTTPServerTransport>();
  let release: () => void = () => {};

  const mcpServer = () => {
    const server = new McpServer({ name: 'files', version: '1.0.0' });
    const tool = (name: string) =>
      server.registerTool(name, { description: name, inputSchema: { text: z.string().optional() } }, async ({ text }) => {
        toolCalls.push(name);
        return { content: [{ type: 'text', text: `${name}:${text ?? ''}` }] };
      });
    for (const name of ['echo', 'files.read', 'files.read_meta', 'files.write', 'admin.reset']) tool(name);
    server.registerResource('readme', 'file:///readme', { description: 'readme' }, async (uri) => ({
      contents: [{ uri: uri.href, text: 'readme' }],
    }));
    server.registerPrompt('greet', { description: 'greet' }, () => ({
      messages: [{ role: 'user', content: { type: 'text', text: 'hello' } }],
    }));
    server.registerTool('slow', { description: 'progress, then waits' }, async (extra) => {
      toolCalls.push('slow');
      const progressToken = extra._meta?.progressToken;
      if (progressToken !== undefined)
        await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: 1, total: 2 } });
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return { content: [{ type: 'text', text: 'done' }] };
    });
    return server;
  };

  const http: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    requests.push({ method: req.method ?? '', headers: req.headers, body });
    const sid = req.headers['mcp-session-id'];
    let transport = typeof sid === 'string' ? transports.get(sid) : undefined;
    if (transport === undefined) {
      if (sid !== undefined) {
        res
          .writeHead(404, { 'content-type': 'application/json' })
          .end('{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}');
        return;
      }
      const t: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        ...(options.eventStore ? { eventStore: options.eventStore } : {}),
        onsessioninitialized: (id) => {
          transports.set(id, t);
        },
        onsessionclosed: (id) => {
          transports.delete(id);
        },
      });
      transport = t;
      await mcpServer().connect(t);
    }
    await transport.handleRequest(req, res, body.length > 0 ? JSON.parse(body.toString()) : undefined);
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    requests,
    toolCalls,
    release: () => release(),
    close: async () => {
      for (const t of transports.values()) await t.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
