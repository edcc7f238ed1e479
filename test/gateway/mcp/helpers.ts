/**
 * Fixtures of the tools-list tests of MCP routes: four tools and the rules deciding them, a real
 * stateless MCP server (the SDK's Server + StreamableHTTPServerTransport on loopback), a gateway in
 * front of it, real SDK clients, and the reading of SSE events.
 */
import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { GatewayDeps } from '../../../src/gateway/gateway.ts';
import { baseConfig, type mcpRoute, startGateway, type TestGateway } from '../helpers.ts';

export const TOOLS = ['echo', 'files.read', 'files.write', 'admin.reset'];

/** The tools as a tools/list result lists them. */
export const TOOL_LIST = TOOLS.map((name) => ({ name, inputSchema: { type: 'object' } }));

// echo needs echo:use, files.write files:write, admin.* admin; files.read has no tool rule and
// falls, like tools/list itself, to the route's catch-all (mcp:use).
export const RULES = [
  { id: 'echo', tool: 'echo', scopes: ['echo:use'] },
  { id: 'files-write', tool: 'files.write', scopes: ['files:write'] },
  { id: 'admin-tools', tool: 'admin.*', scopes: ['admin'] },
  { id: 'protocol', scopes: ['mcp:use'] },
];

export const SCOPES = { 'mcp:use': {}, 'echo:use': {}, 'files:write': {}, admin: {} };

export const ACCEPT = 'application/json, text/event-stream';

/** A gateway with {@link SCOPES} and `routes`. */
export function startToolsGateway(routes: ReturnType<typeof mcpRoute>[], deps: GatewayDeps = {}): Promise<TestGateway> {
  return startGateway({ ...baseConfig(), scopes: SCOPES, gateway: { routes } }, deps);
}

export interface StatelessMcpUpstream {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * A real MCP server, stateless: each request is served by a new `server()` connected to a new
 * transport answering in JSON (`json`) or SSE, both closed with the response.
 */
export async function startStatelessMcpUpstream(json: boolean, server: () => Server): Promise<StatelessMcpUpstream> {
  const http: HttpServer = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const mcp = server();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: json });
    res.on('close', () => {
      void transport.close();
      void mcp.close();
    });
    await mcp.connect(transport);
    await transport.handleRequest(req, res, body.length > 0 ? JSON.parse(body.toString()) : undefined);
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    close: async () => {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/** An MCP SDK client connected to `url` with `token` as its bearer, added to `clients` (to close after). */
export async function connectClient(url: string, token: string, clients: Client[]): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: 'test-agent', version: '1.0.0' });
  clients.push(client);
  await client.connect(transport);
  return client;
}

/** The data lines of one SSE event, each without `data:` and one leading space. */
export const dataLines = (event: string): string[] =>
  event
    .split(/\r\n|\n|\r/)
    .filter((l) => l.startsWith('data:'))
    .map((l) => l.slice(5).replace(/^ /, ''));
