/**
 * The legacy HTTP+SSE transport (`SSEServerTransport`: GET /sse, POST /messages?sessionId=…) and
 * what MCP routes check: a message POSTed there is decided as on Streamable HTTP (tools/call by
 * tool, task-augmented calls and tasks/list refused, related-task refused), and the answers relayed on the GET stream are filtered
 * (tools lists) or refused. A real SDK server (one shared InMemoryTaskStore, as a server keeping
 * tasks in a database has) and real SDK clients on loopback behind the gateway.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { InMemoryTaskStore } from '@modelcontextprotocol/sdk/experimental/tasks/stores/in-memory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { CallToolResultSchema, CreateTaskResultSchema, ListTasksResultSchema } from '@modelcontextprotocol/sdk/types.js';
import express from 'express';
import { z } from 'zod';
import { mcpRoute, requestEvents, type TestGateway, token } from '../helpers.ts';
import { RULES, startToolsGateway } from './helpers.ts';

describe('gateway: MCP legacy HTTP+SSE transport, decided as Streamable HTTP (real SSEServerTransport)', () => {
  let http: Server;
  let gw: TestGateway;
  /** The same upstream behind a route with mcp.list_tasks. */
  let listing: TestGateway;
  const store = new InMemoryTaskStore();
  const transports = new Map<string, SSEServerTransport>();
  const ran: string[] = [];
  const clients: Client[] = [];

  before(async () => {
    const app = express();
    app.get('/mcp/sse', async (_req, res) => {
      const transport = new SSEServerTransport('/mcp/messages', res);
      transports.set(transport.sessionId, transport);
      const mcp = new McpServer(
        { name: 'legacy-tasks', version: '1.0.0' },
        { capabilities: { tools: {}, tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } } }, taskStore: store },
      );
      for (const name of ['echo', 'admin.reset']) {
        mcp.experimental.tasks.registerToolTask(
          name,
          { description: name, inputSchema: { text: z.string().optional() }, execution: { taskSupport: 'optional' } },
          {
            createTask: async ({ text }, extra) => {
              ran.push(`${name}:${text ?? ''}`);
              const task = await extra.taskStore.createTask({ ttl: 60_000 });
              await extra.taskStore.storeTaskResult(task.taskId, 'completed', {
                content: [{ type: 'text', text: `${name}:${text ?? ''}` }],
              });
              return { task };
            },
            getTask: async (_args, extra) => extra.taskStore.getTask(extra.taskId),
            getTaskResult: async (_args, extra) => extra.taskStore.getTaskResult(extra.taskId) as never,
          },
        );
      }
      await mcp.connect(transport);
    });
    app.post('/mcp/messages', async (req, res) => {
      const transport = transports.get(String(req.query.sessionId));
      if (transport === undefined) return void res.status(404).end();
      await transport.handlePostMessage(req as unknown as IncomingMessage, res);
    });
    http = app.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    gw = await startToolsGateway([mcpRoute(url, RULES)]);
    listing = await startToolsGateway([mcpRoute(url, RULES, { mcp: { list_tasks: true } })]);
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    await gw.close();
    await listing.close();
    store.cleanup();
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
  });

  async function connect(sub: string, scope: string, through: TestGateway = gw): Promise<Client> {
    const bearer = await token({ sub, scope, client_id: `${sub}-agent` });
    const client = new Client({ name: sub, version: '1.0.0' });
    clients.push(client);
    await client.connect(
      new SSEClientTransport(new URL(`${through.url}/mcp/sse`), { requestInit: { headers: { authorization: `Bearer ${bearer}` } } }),
    );
    return client;
  }

  it('attack: tools/list on a legacy session failed (502: its 202 read as the tools list); its answer on the stream is filtered, a tools/call not allowed refused (403)', async () => {
    const bob = await connect('bob', 'mcp:use echo:use');
    const listed = await bob.listTools();
    // (It was refused 502: the POST's 202 read as the tools/list answer that must list tools.)
    assert.deepEqual(
      listed.tools.map((t) => t.name),
      ['echo'],
    );
    await assert.rejects(bob.callTool({ name: 'admin.reset', arguments: { text: 'bob' } }), /403/);
    assert.ok(!ran.includes('admin.reset:bob'));
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'scope_insufficient');
  });

  it('a task-augmented tools/call on a legacy session is refused before the upstream (mcp_task_legacy_refused), not run and then unreadable', async () => {
    const alice = await connect('alice', 'mcp:use admin');
    // It ran, and its CreateTaskResult went on the GET stream, never recorded: even its owner then got
    // 404 Task not found for it. Now refused up front with a reason saying why; the tool does not run.
    await assert.rejects(
      alice.request(
        { method: 'tools/call', params: { name: 'admin.reset', arguments: { text: 'legacy-task' }, task: { ttl: 60_000 } } },
        CreateTaskResultSchema,
      ),
      /400/,
    );
    assert.ok(!ran.includes('admin.reset:legacy-task'));
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_task_legacy_refused');
    // The same call without params.task runs as before.
    const plain = await alice.request(
      { method: 'tools/call', params: { name: 'admin.reset', arguments: { text: 'legacy-plain' } } },
      CallToolResultSchema,
    );
    assert.ok(plain);
    assert.ok(ran.includes('admin.reset:legacy-plain'));
  });

  it('tasks/list on a legacy session with mcp.list_tasks is refused before the upstream (mcp_task_legacy_refused)', async () => {
    const bob = await connect('bob', 'mcp:use echo:use', listing);
    await assert.rejects(bob.request({ method: 'tasks/list' }, ListTasksResultSchema), /400/);
    assert.equal((await requestEvents(listing)).at(-1)?.reason, 'mcp_task_legacy_refused');
  });

  it("attack: a message posted in another principal's task context (params._meta related-task) on a legacy session is refused", async () => {
    const alice = await connect('alice', 'mcp:use admin echo:use');
    const bob = await connect('bob', 'mcp:use echo:use');
    const mine = await bob.request({ method: 'tools/call', params: { name: 'echo', arguments: { text: 'mine' } } }, CallToolResultSchema);
    assert.ok(mine);
    const theirs = (await store.createTask({ ttl: 60_000 }, 1, { method: 'tools/call', params: { name: 'admin.reset' } })).taskId;
    await assert.rejects(
      bob.request(
        {
          method: 'tools/call',
          params: {
            name: 'echo',
            arguments: { text: 'in-their-task' },
            _meta: { 'io.modelcontextprotocol/related-task': { taskId: theirs } },
          },
        },
        CallToolResultSchema,
      ),
      /404/,
    );
    assert.ok(!ran.includes('echo:in-their-task'));
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_task_unknown');
    void alice;
  });
});
