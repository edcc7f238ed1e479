/**
 * A real MCP server deployed the way the SDK's examples do: express, `express.json()` (body-parser,
 * which honours `Content-Encoding` and any `charset=utf-*`), then a stateless
 * StreamableHTTPServerTransport given the parsed body. The gateway's reading of a body must agree
 * with this one's.
 */
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import express from 'express';
import { z } from 'zod';

export interface ExpressMcpUpstream {
  readonly url: string;
  /** Every HTTP request that reached the server, before body-parser read it. */
  readonly requests: { method: string; headers: IncomingMessage['headers'] }[];
  /** The tools it ran. */
  readonly toolCalls: string[];
  close(): Promise<void>;
}

/** Tools `echo` and `admin.reset`, each answering `name:text`. */
export async function startExpressMcpUpstream(): Promise<ExpressMcpUpstream> {
  const requests: ExpressMcpUpstream['requests'] = [];
  const toolCalls: string[] = [];
  const app = express();
  app.use((req, _res, next) => {
    requests.push({ method: req.method, headers: req.headers });
    next();
  });
  app.use(express.json());
  app.all('/mcp', async (req, res) => {
    const server = new McpServer({ name: 'express-files', version: '1.0.0' });
    for (const name of ['echo', 'admin.reset'])
      server.registerTool(name, { description: name, inputSchema: { text: z.string().optional() } }, async ({ text }) => {
        toolCalls.push(name);
        return { content: [{ type: 'text', text: `${name}:${text ?? ''}` }] };
      });
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req as unknown as IncomingMessage, res, req.body);
  });
  const http: Server = app.listen(0, '127.0.0.1');
  await once(http, 'listening');
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    requests,
    toolCalls,
    close: async () => {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
