/**
 * MCP tasks (2025-11-25) bound to the principal that created them: a real MCP SDK server
 * (McpServer, stateless, one InMemoryTaskStore shared by every request, as a server keeping tasks
 * in a database has) behind the gateway. Without the binding, any caller allowed `tasks/*` lists
 * every caller's tasks and reads their results (`tasks/result` of a task that ran `admin.reset`).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTaskStore } from '@modelcontextprotocol/sdk/experimental/tasks/stores/in-memory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { CreateTaskResultSchema, McpError } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { SqliteStore } from '../../../src/store/sqlite/store.ts';
import { mcpRoute, requestEvents, type TestGateway, token } from '../helpers.ts';
import {
  ACCEPT,
  connectClient,
  dataLines,
  RULES,
  type StatelessMcpUpstream,
  startStatelessMcpUpstream,
  startToolsGateway,
} from './helpers.ts';

/** A stateless MCP SDK server whose task-capable tools (`echo`, `admin.reset`) run as tasks in one shared store. */
async function startTaskUpstream(json: boolean): Promise<StatelessMcpUpstream & { readonly store: InMemoryTaskStore }> {
  const store = new InMemoryTaskStore();
  const server = () => {
    const mcp = new McpServer(
      { name: 'tasks', version: '1.0.0' },
      {
        capabilities: { tools: {}, tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } } },
        taskStore: store,
      },
    );
    for (const name of ['echo', 'admin.reset', 'files.write']) {
      mcp.experimental.tasks.registerToolTask(
        name,
        {
          description: name,
          // reuse: answer with a task the upstream holds already (an upstream naming an id twice).
          inputSchema: { text: z.string().optional(), hold: z.boolean().optional(), reuse: z.string().optional() },
          execution: { taskSupport: 'optional' },
        },
        {
          createTask: async ({ text, hold, reuse }, extra) => {
            if (reuse !== undefined) return { task: (await extra.taskStore.getTask(reuse)) as never };
            const task = await extra.taskStore.createTask({ ttl: 60_000 });
            if (hold !== true)
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
    // A plain tool that, called in a task's context (params._meta related-task), completes that task with its output.
    mcp.registerTool('note', { inputSchema: { text: z.string().optional() } }, async ({ text }, extra) => {
      const content = [{ type: 'text' as const, text: `note:${text ?? ''}` }];
      if (extra.taskId !== undefined) await extra.taskStore?.storeTaskResult(extra.taskId, 'completed', { content });
      return { content };
    });
    return mcp.server;
  };
  const upstream = await startStatelessMcpUpstream(json, server);
  return {
    url: upstream.url,
    store,
    close: async () => {
      store.cleanup();
      await upstream.close();
    },
  };
}

let posted = 0;
/** A JSON-RPC request (or, `notification`, a notification) POSTed to `url` with `t` as its bearer. */
const post = (url: string, t: string, message: { method: string; params?: unknown }, notification = false) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
    body: JSON.stringify({ jsonrpc: '2.0', ...(notification ? {} : { id: ++posted }), ...message }),
  });

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

/** The response (the message with an id) of an answer. */
async function response(res: Response): Promise<Record<string, unknown>> {
  const all = await messages(res);
  const r = all.find((m) => 'result' in m || 'error' in m);
  assert.ok(r, `no response in ${JSON.stringify(all)}`);
  return r;
}

for (const mode of ['json', 'sse'] as const) {
  describe(`gateway: MCP tasks are bound to the principal that created them (${mode} answers)`, () => {
    let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
    let gw: TestGateway;
    let id = 0;
    const lastEvent = async () => (await requestEvents(gw)).at(-1);

    const mint = (sub: string, scope: string) => token({ sub, scope, client_id: `${sub}-agent` });
    const rpc = (t: string, method: string, params?: unknown, path = '/mcp') =>
      fetch(`${gw.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, ...(params === undefined ? {} : { params }) }),
      });
    /** A task made by a task-augmented tools/call of `tool` as `t`: its id. */
    async function createTask(t: string, tool: string, args: Record<string, unknown> = {}, path = '/mcp'): Promise<string> {
      const res = await rpc(t, 'tools/call', { name: tool, arguments: args, task: { ttl: 60_000 } }, path);
      assert.equal(res.status, 200);
      const r = await response(res);
      const task = (r.result as { task?: { taskId?: string } } | undefined)?.task;
      assert.ok(typeof task?.taskId === 'string', JSON.stringify(r));
      return task.taskId;
    }

    before(async () => {
      upstream = await startTaskUpstream(mode === 'json');
      gw = await startToolsGateway([
        mcpRoute(upstream.url, RULES),
        mcpRoute(upstream.url, RULES, { id: 'listing', match: { path_prefix: '/listing' }, mcp: { list_tasks: true } }),
        mcpRoute(upstream.url, RULES, { id: 'unbound', match: { path_prefix: '/unbound' }, mcp: { bind_tasks: false } }),
      ]);
    });
    after(async () => {
      await gw?.close();
      await upstream?.close();
    });

    it('the owner reads its own task (tasks/get, tasks/result) through the gateway', async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const task = await createTask(alice, 'admin.reset', { text: 'all' });
      const got = await response(await rpc(alice, 'tasks/get', { taskId: task }));
      assert.equal((got.result as { taskId?: string }).taskId, task);
      const result = await response(await rpc(alice, 'tasks/result', { taskId: task }));
      assert.deepEqual((result.result as { content: unknown }).content, [{ type: 'text', text: 'admin.reset:all' }]);
    });

    it("attack: another principal reads a task's result (tasks/result of alice's admin.reset task)", async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const task = await createTask(alice, 'admin.reset', { text: 'secret' });
      const bob = await mint('bob', 'mcp:use echo:use');
      const res = await rpc(bob, 'tasks/result', { taskId: task });
      const text = await res.text();
      assert.doesNotMatch(text, /admin\.reset:secret/);
      assert.equal(res.status, 404);
      assert.deepEqual(JSON.parse(text).error, { code: -32602, message: 'Task not found' });
      assert.equal((await lastEvent())?.reason, 'mcp_task_foreign');
    });

    it("attack: another principal reads or cancels a task's state (tasks/get, tasks/cancel)", async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const task = await createTask(alice, 'admin.reset', { text: 'x', hold: true });
      const bob = await mint('bob', 'mcp:use echo:use');
      for (const method of ['tasks/get', 'tasks/cancel']) {
        const res = await rpc(bob, method, { taskId: task });
        assert.equal(res.status, 404, method);
        assert.equal((await lastEvent())?.reason, 'mcp_task_foreign');
      }
      assert.equal((await upstream.store.getTask(task))?.status, 'working');
    });

    it('attack: a task id the gateway never saw created is refused (mcp_task_unknown)', async () => {
      const bob = await mint('bob', 'mcp:use echo:use');
      // Made straight in the upstream's store: no answer through the gateway named it.
      const task = await upstream.store.createTask({ ttl: 60_000 }, 1, { method: 'tools/call', params: { name: 'admin.reset' } });
      const res = await rpc(bob, 'tasks/get', { taskId: task.taskId });
      assert.equal(res.status, 404);
      assert.equal((await lastEvent())?.reason, 'mcp_task_unknown');
    });

    it("attack: tasks/list shows another principal's tasks (refused unless mcp.list_tasks)", async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const aliceTask = await createTask(alice, 'admin.reset', { text: 'l' });
      const bob = await mint('bob', 'mcp:use echo:use');
      const res = await rpc(bob, 'tasks/list');
      const text = await res.text();
      assert.doesNotMatch(text, new RegExp(aliceTask));
      assert.equal(res.status, 400, text);
      assert.equal(JSON.parse(text).error?.code, -32601);
      assert.equal((await lastEvent())?.reason, 'mcp_task_list_refused');
      // An operator whose upstream lists each caller's own tasks lets it through.
      const listed = await response(await rpc(bob, 'tasks/list', undefined, '/listing'));
      assert.ok(Array.isArray((listed.result as { tasks?: unknown }).tasks));
    });

    it('attack: the same principal with a token no longer allowed the tool reads its task result', async () => {
      const wide = await mint('carol', 'mcp:use admin');
      const task = await createTask(wide, 'admin.reset', { text: 'narrow' });
      const narrow = await mint('carol', 'mcp:use');
      const res = await rpc(narrow, 'tasks/result', { taskId: task });
      assert.doesNotMatch(await res.text(), /admin\.reset:narrow/);
      assert.equal(res.status, 403);
      assert.match(res.headers.get('www-authenticate') ?? '', /insufficient_scope/);
      const event = await lastEvent();
      assert.equal(event?.reason, 'scope_insufficient');
      assert.equal(event?.tool, 'admin.reset');
    });

    it('attack: params.TaskId beside taskId (a case-folding upstream reads the other one) is refused', async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const mine = await createTask(alice, 'admin.reset', { text: 'mine' });
      const theirs = await createTask(await mint('dave', 'mcp:use admin'), 'admin.reset', { text: 'theirs' });
      const res = await rpc(alice, 'tasks/result', { taskId: mine, TaskId: theirs });
      assert.equal(res.status, 400);
      assert.doesNotMatch(await res.text(), /theirs/);
      assert.equal((await lastEvent())?.reason, 'mcp_message_invalid');
    });

    it("attack: a request in another principal's task context (params._meta related-task) writes that task", async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const bob = await mint('bob', 'mcp:use');
      const task = await createTask(alice, 'admin.reset', { text: 'x', hold: true });
      const meta = { 'io.modelcontextprotocol/related-task': { taskId: task } };
      const res = await rpc(bob, 'tools/call', { name: 'note', arguments: { text: 'forged' }, _meta: meta });
      assert.equal(res.status, 404);
      assert.doesNotMatch(await res.text(), /note:forged/);
      assert.equal((await lastEvent())?.reason, 'mcp_task_foreign');
      assert.equal((await upstream.store.getTask(task))?.status, 'working');
      // A notification too, and a related task the gateway cannot read as one id.
      const params = { progressToken: 1, progress: 1, _meta: meta };
      const note = await post(`${gw.url}/mcp`, bob, { method: 'notifications/progress', params }, true);
      assert.equal(note.status, 404);
      for (const related of [{ taskId: 7 }, 'x', { taskId: task, TaskId: 'y' }]) {
        const odd = await rpc(bob, 'tools/call', {
          name: 'note',
          arguments: {},
          _meta: { 'io.modelcontextprotocol/related-task': related },
        });
        assert.equal(odd.status, 400, JSON.stringify(related));
      }
      const lookalike = await rpc(bob, 'tools/call', { name: 'note', arguments: {}, _Meta: meta });
      assert.equal(lookalike.status, 400);
      // Its owner runs a request in its context.
      const own = await response(await rpc(alice, 'tools/call', { name: 'note', arguments: { text: 'mine' }, _meta: meta }));
      assert.deepEqual((own.result as { content: unknown }).content, [{ type: 'text', text: 'note:mine' }]);
      assert.equal((await upstream.store.getTask(task))?.status, 'completed');
    });

    it('a route with bind_tasks: false leaves tasks to the upstream (any caller reads any task)', async () => {
      const alice = await mint('alice', 'mcp:use admin');
      const task = await createTask(alice, 'admin.reset', { text: 'open' }, '/unbound');
      const bob = await mint('bob', 'mcp:use echo:use');
      const r = await response(await rpc(bob, 'tasks/result', { taskId: task }, '/unbound'));
      assert.deepEqual((r.result as { content: unknown }).content, [{ type: 'text', text: 'admin.reset:open' }]);
    });
  });
}

describe('gateway: MCP tasks recorded in a store are bound across instances (tessera serve)', () => {
  let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
  let store: SqliteStore;
  let a: TestGateway;
  let b: TestGateway;
  let id = 0;
  const rpc = (gw: TestGateway, t: string, method: string, params: unknown) =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
    });

  before(async () => {
    upstream = await startTaskUpstream(true);
    store = SqliteStore.open({ path: ':memory:' });
    const routes = [mcpRoute(upstream.url, RULES, { mcp: { max_tasks_per_principal: 2 } })];
    a = await startToolsGateway(routes, { taskStore: store });
    b = await startToolsGateway(routes, { taskStore: store });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await upstream?.close();
    await store?.close();
  });

  it("a task created through one instance is its owner's on another, and another principal's there too", async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use admin', client_id: 'alice-agent' });
    const bob = await token({ sub: 'bob', scope: 'mcp:use echo:use', client_id: 'bob-agent' });
    const created = await response(await rpc(a, alice, 'tools/call', { name: 'admin.reset', arguments: { text: 's' }, task: {} }));
    const task = (created.result as { task: { taskId: string } }).task.taskId;
    const mine = await response(await rpc(b, alice, 'tasks/result', { taskId: task }));
    assert.deepEqual((mine.result as { content: unknown }).content, [{ type: 'text', text: 'admin.reset:s' }]);
    const theirs = await rpc(b, bob, 'tasks/result', { taskId: task });
    assert.equal(theirs.status, 404);
    assert.doesNotMatch(await theirs.text(), /admin\.reset:s/);
    assert.equal((await requestEvents(b)).at(-1)?.reason, 'mcp_task_foreign');
  });

  it('past mcp.max_tasks_per_principal the answer creating one more is refused (503, -32000), nothing of it relayed', async () => {
    const carol = await token({ sub: 'carol', scope: 'mcp:use echo:use', client_id: 'carol-agent' });
    for (let i = 0; i < 2; i++) assert.equal((await rpc(a, carol, 'tools/call', { name: 'echo', arguments: {}, task: {} })).status, 200);
    const res = await rpc(a, carol, 'tools/call', { name: 'echo', arguments: {}, task: {} });
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error?: unknown };
    assert.deepEqual(body.error, { code: -32000, message: 'The gateway cannot record more tasks now; try again later.' });
    assert.equal((await requestEvents(a)).at(-1)?.reason, 'mcp_task_registry_full');
  });
});

describe('gateway: a task id the answer names that is recorded for another owner costs the caller nothing of mcp.max_tasks_per_principal', () => {
  let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
  let store: SqliteStore;
  let gw: TestGateway;
  const rpc = (t: string, method: string, params: unknown) => post(`${gw.url}/mcp`, t, { method, params });

  before(async () => {
    upstream = await startTaskUpstream(true);
    store = SqliteStore.open({ path: ':memory:' });
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES, { mcp: { max_tasks_per_principal: 1 } })], { taskStore: store });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
    await store?.close();
  });

  it('attack: an answer naming a task whose owner-and-tool record is another’s (its principal’s count record gone: a renewal half done) leaves the caller’s count as it was', async () => {
    // A task of the upstream whose owner-and-tool record is someone else’s, without the record
    // counting it under a principal (checkMcpTask renewed one of the pair, not the other).
    const held = await upstream.store.createTask({ ttl: 60_000 }, 1, { method: 'tools/call', params: {} } as never);
    const now = Math.floor(Date.now() / 1000);
    await store.claimA2aTask('mcp', 'mcp_task', held.taskId, 'another-principal-and-tool', now + 3600, now);
    const gail = await token({ sub: 'gail', scope: 'mcp:use echo:use', client_id: 'gail-agent' });
    const named = await rpc(gail, 'tools/call', { name: 'echo', arguments: { reuse: held.taskId }, task: {} });
    assert.notEqual(named.status, 200);
    assert.doesNotMatch(await named.text(), new RegExp(held.taskId));
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_upstream_task_foreign');
    // Her cap (1) is still free: the refused answer counted nothing against it.
    const own = await rpc(gail, 'tools/call', { name: 'echo', arguments: {}, task: {} });
    assert.equal(own.status, 200, await own.clone().text());
    const task = ((await own.json()) as { result: { task: { taskId: string } } }).result.task.taskId;
    assert.equal((await rpc(gail, 'tasks/get', { taskId: task })).status, 200);
  });
});

for (const registry of ['store', 'memory'] as const) {
  describe(`gateway: mcp.max_tasks_per_principal counts a principal's tasks across tools (${registry} registry)`, () => {
    let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
    let store: SqliteStore | undefined;
    let gw: TestGateway;
    const rpc = (t: string, method: string, params: unknown) => post(`${gw.url}/mcp`, t, { method, params });

    before(async () => {
      upstream = await startTaskUpstream(true);
      store = registry === 'store' ? SqliteStore.open({ path: ':memory:' }) : undefined;
      gw = await startToolsGateway(
        [mcpRoute(upstream.url, RULES, { mcp: { max_tasks_per_principal: 2 } })],
        store === undefined ? {} : { taskStore: store },
      );
    });
    after(async () => {
      await gw?.close();
      await upstream?.close();
      await store?.close();
    });

    it('attack: a principal opening tasks with one tool after another holds more than the cap (refused past it)', async () => {
      const erin = await token({ sub: 'erin', scope: 'mcp:use echo:use admin files:write', client_id: 'erin-agent' });
      const call = (name: string) => rpc(erin, 'tools/call', { name, arguments: {}, task: {} });
      const shown: string[] = [];
      for (const tool of ['echo', 'admin.reset']) {
        const created = await call(tool);
        assert.equal(created.status, 200);
        shown.push(((await created.json()) as { result: { task: { taskId: string } } }).result.task.taskId);
      }
      const res = await call('files.write');
      assert.equal(res.status, 503);
      const body = (await res.json()) as { error?: unknown; result?: unknown };
      assert.equal(body.result, undefined);
      assert.deepEqual(body.error, { code: -32000, message: 'The gateway cannot record more tasks now; try again later.' });
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_task_registry_full');
      // The upstream made the task, but its id reached no one: naming it is refused as unknown.
      const made = (await upstream.store.listTasks()).tasks.filter((t) => !shown.includes(t.taskId));
      assert.equal(made.length, 1);
      const named = await rpc(erin, 'tasks/get', { taskId: (made[0] as { taskId: string }).taskId });
      assert.equal(named.status, 404);
      // Another principal has a cap of its own.
      const frank = await token({ sub: 'frank', scope: 'mcp:use files:write', client_id: 'frank-agent' });
      assert.equal((await rpc(frank, 'tools/call', { name: 'files.write', arguments: {}, task: {} })).status, 200);
    });
  });
}

describe('gateway: an MCP request stream the gateway ends answers the pending request (real SDK client)', () => {
  let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
  let gw: TestGateway;
  const clients: Client[] = [];

  before(async () => {
    upstream = await startTaskUpstream(false);
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)]);
  });
  after(async () => {
    for (const c of clients) await c.close();
    await gw?.close();
    await upstream?.close();
  });

  it('attack: tasks/result waiting on a task when its token expires gets a JSON-RPC error, not a silent end (the client waited out its timeout)', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Expired 28 s ago: accepted under the 30 s clock skew for 2 s more (see streaming.test.ts).
    const t = await token({ sub: 'alice', scope: 'mcp:use admin', client_id: 'alice-agent', iat: now - 40, exp: now - 28 });
    const client = await connectClient(`${gw.url}/mcp`, t, clients);
    const created = await client.request(
      { method: 'tools/call', params: { name: 'admin.reset', arguments: { hold: true }, task: { ttl: 60_000 } } },
      CreateTaskResultSchema,
    );
    const start = Date.now();
    // The SDK server answers tasks/result once the task ends: this one never does.
    const waiting = client.request({ method: 'tasks/result', params: { taskId: created.task.taskId } }, z.object({}).loose(), {
      timeout: 20_000,
    });
    await assert.rejects(waiting, (e: unknown) => {
      assert.ok(e instanceof McpError, String(e));
      assert.equal(e.code, -32000);
      assert.match(e.message, /The access token expired\./);
      return true;
    });
    assert.ok(Date.now() - start < 10_000, `rejected after ${Date.now() - start} ms`);
    await gw.served.gateway.audit.flush();
    const closed = gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed').at(-1);
    assert.equal(closed?.reason, 'token_expired');
  });
});

describe('gateway: MCP tasks when the task registry (the store) fails: refused, fail closed', () => {
  let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
  let gw: TestGateway;
  let fail = false;
  let id = 0;
  const rpc = (t: string, method: string, params: unknown) =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
    });

  before(async () => {
    upstream = await startTaskUpstream(false);
    const store = SqliteStore.open({ path: ':memory:' });
    const failing = {
      claimA2aTask: (...args: Parameters<SqliteStore['claimA2aTask']>) =>
        fail ? Promise.reject(new Error('down')) : store.claimA2aTask(...args),
      a2aTaskOwner: (...args: Parameters<SqliteStore['a2aTaskOwner']>) =>
        fail ? Promise.reject(new Error('down')) : store.a2aTaskOwner(...args),
    };
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)], { taskStore: failing });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  it('the answer creating a task is not relayed (503) when the task cannot be recorded (SSE answer)', async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use admin', client_id: 'alice-agent' });
    fail = true;
    try {
      const res = await rpc(alice, 'tools/call', { name: 'admin.reset', arguments: {}, task: {} });
      // The stream had begun: it is cut before the event naming the task.
      const text = await res.text().catch(() => '');
      assert.doesNotMatch(text, /taskId/);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'ok');
      assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'task_registry_unavailable');
    } finally {
      fail = false;
    }
  });

  it('a request naming a task is refused (503, -32000) when the registry cannot answer', async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use admin', client_id: 'alice-agent' });
    // One this instance has not cached (another instance recorded it, or none did): the store is asked.
    const task = (await upstream.store.createTask({ ttl: 60_000 }, 1, { method: 'tools/call', params: { name: 'admin.reset' } })).taskId;
    fail = true;
    try {
      const res = await rpc(alice, 'tasks/get', { taskId: task });
      assert.equal(res.status, 503);
      assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32000);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_task_registry_unavailable');
    } finally {
      fail = false;
    }
  });
});

describe('gateway: a task whose record fails after its principal’s count was claimed gives the place back (mcp.max_tasks_per_principal)', () => {
  let upstream: StatelessMcpUpstream & { readonly store: InMemoryTaskStore };
  let gw: TestGateway;
  /** The store fails the owner-and-tool claim (the second of a new task’s two), after the count claim went through. */
  let failTask = false;
  const rpc = (t: string, method: string, params: unknown) => post(`${gw.url}/mcp`, t, { method, params });

  before(async () => {
    upstream = await startTaskUpstream(true);
    const store = SqliteStore.open({ path: ':memory:' });
    const failing = {
      claimA2aTask: (...args: Parameters<SqliteStore['claimA2aTask']>) =>
        failTask && args[1] === 'mcp_task' ? Promise.reject(new Error('down')) : store.claimA2aTask(...args),
      a2aTaskOwner: (...args: Parameters<SqliteStore['a2aTaskOwner']>) => store.a2aTaskOwner(...args),
      releaseA2aTask: (...args: Parameters<SqliteStore['releaseA2aTask']>) => store.releaseA2aTask(...args),
    };
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES, { mcp: { max_tasks_per_principal: 1 } })], { taskStore: failing });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  it('attack: store errors on the second claim lock a principal out until task_ttl (its cap reached with no task)', async () => {
    const hana = await token({ sub: 'hana', scope: 'mcp:use echo:use', client_id: 'hana-agent' });
    const call = () => rpc(hana, 'tools/call', { name: 'echo', arguments: {}, task: {} });
    failTask = true;
    try {
      const refused = await call();
      assert.equal(refused.status, 503);
      assert.doesNotMatch(await refused.text(), /taskId/);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_task_registry_unavailable');
    } finally {
      failTask = false;
    }
    // The store is back: her one place is free (it was held by the count of a task never recorded).
    const own = await call();
    assert.equal(own.status, 200, await own.clone().text());
    const task = ((await own.json()) as { result: { task: { taskId: string } } }).result.task.taskId;
    assert.equal((await rpc(hana, 'tasks/get', { taskId: task })).status, 200);
    // And the cap still holds.
    assert.equal((await call()).status, 503);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_task_registry_full');
  });
});
