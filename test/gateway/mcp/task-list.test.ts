/**
 * `tasks/list` through an MCP route with `mcp.list_tasks`: a real MCP SDK server (stateless, one
 * InMemoryTaskStore shared by every caller, pages of 10) lists every principal's tasks; the
 * gateway relays only the caller's own (recorded as its, created by a tool it may call now), and
 * the upstream's cursor (the SDK's: the page's last task id, anyone's) sealed for the caller.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { InMemoryTaskStore } from '@modelcontextprotocol/sdk/experimental/tasks/stores/in-memory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import { mcpRoute, requestEvents, type TestGateway, token } from '../helpers.ts';
import { ACCEPT, dataLines, RULES, type StatelessMcpUpstream, startStatelessMcpUpstream, startToolsGateway } from './helpers.ts';

async function startTaskUpstream(json: boolean, store: InMemoryTaskStore): Promise<StatelessMcpUpstream> {
  return startStatelessMcpUpstream(json, () => {
    const mcp = new McpServer(
      { name: 'tasks', version: '1.0.0' },
      { capabilities: { tools: {}, tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } } }, taskStore: store },
    );
    for (const name of ['echo', 'admin.reset']) {
      mcp.experimental.tasks.registerToolTask(
        name,
        { description: name, inputSchema: { text: z.string().optional() }, execution: { taskSupport: 'optional' } },
        {
          createTask: async (_args, extra) => ({ task: await extra.taskStore.createTask({ ttl: 60_000 }) }),
          getTask: async (_args, extra) => extra.taskStore.getTask(extra.taskId),
          getTaskResult: async (_args, extra) => extra.taskStore.getTaskResult(extra.taskId) as never,
        },
      );
    }
    return mcp.server;
  });
}

/** The response of an answer (its JSON body, or the SSE event carrying it), and the raw text. */
async function response(res: Response): Promise<{ body: Record<string, unknown>; text: string }> {
  const text = await res.text();
  if ((res.headers.get('content-type') ?? '').startsWith('application/json')) return { body: JSON.parse(text), text };
  for (const event of text.split(/\r\n\r\n|\n\n|\r\r/)) {
    const data = dataLines(event);
    if (data.length > 0) {
      const m = JSON.parse(data.join('\n'));
      if ('result' in m || 'error' in m) return { body: m, text };
    }
  }
  assert.fail(`no response in ${text}`);
}

type Listed = { tasks: { taskId: string; status: string }[]; nextCursor?: string };

for (const mode of ['json', 'sse'] as const) {
  describe(`gateway: tasks/list with mcp.list_tasks lists the caller's own tasks (${mode} answers, real SDK server)`, () => {
    const store = new InMemoryTaskStore();
    let upstream: StatelessMcpUpstream;
    let gw: TestGateway;
    let id = 0;
    const rpc = (t: string, method: string, params?: unknown) =>
      fetch(`${gw.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${t}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, ...(params === undefined ? {} : { params }) }),
      });
    const create = async (t: string, tool: string): Promise<string> => {
      const { body } = await response(await rpc(t, 'tools/call', { name: tool, arguments: {}, task: {} }));
      return (body.result as { task: { taskId: string } }).task.taskId;
    };
    /** Every page of `t`'s tasks/list, following nextCursor. */
    const listAll = async (t: string): Promise<{ ids: string[]; pages: number; texts: string[]; cursors: string[] }> => {
      const ids: string[] = [];
      const texts: string[] = [];
      const cursors: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const res = await rpc(t, 'tasks/list', cursor === undefined ? undefined : { cursor });
        assert.equal(res.status, 200);
        const { body, text } = await response(res);
        texts.push(text);
        const result = body.result as Listed;
        ids.push(...result.tasks.map((task) => task.taskId));
        cursor = result.nextCursor;
        if (cursor !== undefined) cursors.push(cursor);
        pages++;
      } while (cursor !== undefined && pages < 10);
      return { ids, pages, texts, cursors };
    };

    let alice: string;
    let bob: string;
    const aliceTasks: string[] = [];
    const bobTasks: string[] = [];
    before(async () => {
      upstream = await startTaskUpstream(mode === 'json', store);
      gw = await startToolsGateway([mcpRoute(upstream.url, RULES, { mcp: { list_tasks: true } })]);
      alice = await token({ sub: 'alice', scope: 'mcp:use echo:use admin', client_id: 'alice-agent' });
      bob = await token({ sub: 'bob', scope: 'mcp:use echo:use', client_id: 'bob-agent' });
      // Interleaved, so each of the SDK's pages of 10 holds both principals' tasks.
      for (let i = 0; i < 12; i++) {
        aliceTasks.push(await create(alice, i % 2 === 0 ? 'echo' : 'admin.reset'));
        if (i % 5 === 0) bobTasks.push(await create(bob, 'echo'));
      }
    });
    after(async () => {
      await gw?.close();
      await upstream?.close();
      store.cleanup();
    });

    it("attack: tasks/list shows another principal's task ids and statuses (the upstream lists all 15)", async () => {
      assert.equal((await store.listTasks()).tasks.length + (await store.listTasks((await store.listTasks()).nextCursor)).tasks.length, 15);
      const bobs = await listAll(bob);
      assert.deepEqual(bobs.ids.sort(), [...bobTasks].sort());
      for (const text of bobs.texts) for (const task of aliceTasks) assert.ok(!text.includes(task), `alice's ${task} shown to bob`);
      // The upstream's cursor (a task id, alice's or bob's) never reaches the caller as it is.
      for (const c of bobs.cursors) assert.ok(![...aliceTasks, ...bobTasks].some((t) => c.includes(t)));
      assert.equal(bobs.pages, 2);
      const alices = await listAll(alice);
      assert.deepEqual(alices.ids.sort(), [...aliceTasks].sort());
    });

    it('a token no longer allowed the tool that created a task does not list it (as tasks/get is refused)', async () => {
      const narrow = await token({ sub: 'alice', scope: 'mcp:use echo:use', client_id: 'alice-agent' });
      const listed = await listAll(narrow);
      assert.deepEqual(listed.ids.sort(), aliceTasks.filter((_, i) => i % 2 === 0).sort());
    });

    it("attack: a cursor sealed for another principal, or the upstream's own cursor (a task id), is refused before the upstream", async () => {
      const alices = await listAll(alice);
      const theirs = alices.cursors[0] as string;
      for (const cursor of [theirs, aliceTasks[9] as string, 'x', 42]) {
        const res = await rpc(bob, 'tasks/list', { cursor });
        assert.equal(res.status, 400, String(cursor));
        assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32602);
        assert.equal((await requestEvents(gw)).at(-1)?.reason, 'mcp_message_invalid');
      }
      const spelled = await rpc(bob, 'tasks/list', { Cursor: theirs });
      assert.equal(spelled.status, 400);
    });
  });
}
