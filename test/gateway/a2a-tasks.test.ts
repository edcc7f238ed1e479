/**
 * A2A tasks bound to the principal that created them: behind the gateway, an upstream agent that
 * trusts it to authenticate (and checks no ownership itself) answers each caller about its own
 * tasks only. Two principals, Alice and Bob, against a real JSON-RPC agent on loopback.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { TaskStore } from '../../src/gateway/a2a/registry.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { assertRpcError, json, postAgent, startA2aPrincipals, TOKEN_URL, UPSTREAM_UNAVAILABLE, userMessage } from './a2a/helpers.ts';
import { requestEvents, startA2aGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

interface AgentTask {
  kind: 'task';
  id: string;
  contextId: string;
  status: { state: string };
  artifacts: unknown[];
  history: unknown[];
}

/**
 * A member as a Python agent's a2a-sdk model reads it: pydantic with camelCase aliases and
 * `populate_by_name=True` binds `taskId` and its field name `task_id` alike (the alias first).
 */
// biome-ignore lint/suspicious/noExplicitAny: JSON-RPC params under test
function py(o: any, camel: string): any {
  return o?.[camel] ?? o?.[camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)];
}

/**
 * An A2A 0.3 agent (JSON-RPC binding) keeping tasks in memory, with no notion of who owns them:
 * `message/send` creates a task (or continues the one `message.taskId` names), `message/stream`
 * streams one (task, working, artifact, then the final status once `release()` is called),
 * `tasks/get`, `tasks/cancel`, `tasks/resubscribe` and `tasks/pushNotificationConfig/set` act on
 * whatever task id they are given. Members are read as a Python agent reads them ({@link py}).
 */
function agent() {
  const tasks = new Map<string, AgentTask>();
  const configs = new Map<string, unknown>();
  const waiting: (() => void)[] = [];
  const handler = (_req: unknown, res: ServerResponse, body: string) => {
    // biome-ignore lint/suspicious/noExplicitAny: a JSON-RPC request under test
    const rpc: any = JSON.parse(body);
    const reply = (payload: Record<string, unknown>) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, ...payload }));
    const notFound = () => reply({ error: { code: -32001, message: 'Task not found' } });
    const p = rpc.params ?? {};
    switch (rpc.method) {
      case 'message/send':
      case 'message/stream': {
        const m = p.message ?? {};
        const taskId = py(m, 'taskId');
        let task = taskId === undefined ? undefined : tasks.get(taskId);
        if (taskId !== undefined && task === undefined) return notFound();
        if (task === undefined) {
          task = {
            kind: 'task',
            id: randomUUID(),
            contextId: py(m, 'contextId') ?? randomUUID(),
            status: { state: 'submitted' },
            artifacts: [],
            history: [],
          };
          tasks.set(task.id, task);
        }
        task.history.push(m);
        if (rpc.method === 'message/send') {
          task.status = { state: 'completed' };
          // Referenced tasks' results are the agent's context for this one.
          const refs = (py(m, 'referenceTaskIds') ?? []).flatMap((r: string) => tasks.get(r)?.artifacts ?? []);
          task.artifacts = [{ artifactId: 'a1', parts: [{ kind: 'text', text: `secret result for ${task.id}` }] }, ...refs];
          return reply({ result: task });
        }
        const t = task;
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const event = (result: unknown) => res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', id: rpc.id, result })}\n\n`);
        event(t);
        event({ kind: 'status-update', taskId: t.id, contextId: t.contextId, status: { state: 'working' }, final: false });
        event({
          kind: 'artifact-update',
          taskId: t.id,
          contextId: t.contextId,
          artifact: { artifactId: 'a1', parts: [{ kind: 'text', text: 'partial' }] },
        });
        waiting.push(() => {
          t.status = { state: 'completed' };
          event({ kind: 'status-update', taskId: t.id, contextId: t.contextId, status: { state: 'completed' }, final: true });
          res.end();
        });
        return;
      }
      case 'tasks/get': {
        const task = tasks.get(p.id);
        return task === undefined ? notFound() : reply({ result: task });
      }
      case 'tasks/cancel': {
        const task = tasks.get(p.id);
        if (task === undefined) return notFound();
        task.status = { state: 'canceled' };
        return reply({ result: task });
      }
      case 'tasks/resubscribe': {
        const task = tasks.get(p.id);
        if (task === undefined) return notFound();
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(`data: ${JSON.stringify({ jsonrpc: '2.0', id: rpc.id, result: task })}\n\n`);
        return;
      }
      case 'tasks/pushNotificationConfig/set': {
        const task = tasks.get(py(p, 'taskId'));
        if (task === undefined) return notFound();
        configs.set(py(p, 'taskId'), p);
        return reply({ result: p });
      }
      case 'tasks/pushNotificationConfig/get': {
        // A2A 0.3: `params.id` names the task (an extra `taskId` is ignored, as pydantic ignores it).
        const config = configs.get(p.id);
        return config === undefined ? notFound() : reply({ result: config });
      }
      default:
        return reply({ error: { code: -32601, message: 'Method not found' } });
    }
  };
  return {
    tasks,
    handler,
    /** End the streams waiting for their final event. */
    release: () => {
      for (const w of waiting.splice(0)) w();
    },
  };
}

describe('gateway: A2A tasks bound to their creator', () => {
  const a = agent();
  let upstream: Upstream;
  let gw: TestGateway;
  let alice: string;
  let bob: string;
  let close: () => Promise<void>;
  before(async () => {
    ({ upstream, gw, alice, bob, close } = await startA2aPrincipals(a.handler));
  });
  after(() => close());

  let n = 0;
  const call = (bearer: string, method: string, params: unknown) => postAgent(gw, bearer, { jsonrpc: '2.0', id: ++n, method, params });
  const message = userMessage;
  /** A task Alice created with message/send. */
  const alicesTask = async (): Promise<AgentTask> => {
    const res = await call(alice, 'message/send', message('find papers'));
    assert.equal(res.status, 200);
    return (await json(res)).result;
  };
  /** The upstream's requests naming `id` since `from`. */
  const reached = (from: number, id: string) => upstream.seen.slice(from).filter((s) => s.body.includes(id));

  async function assertTaskNotFound(res: Response, id: number): Promise<void> {
    assert.equal(res.status, 404);
    assert.deepEqual(await json(res), { jsonrpc: '2.0', id, error: { code: -32001, message: 'Task not found' } });
  }

  it('the creator gets, cancels and resubscribes to its own task', async () => {
    const task = await alicesTask();
    const got = await json(await call(alice, 'tasks/get', { id: task.id }));
    assert.equal(got.result.id, task.id);
    assert.match(JSON.stringify(got.result.artifacts), /secret result/);
    const resub = await call(alice, 'tasks/resubscribe', { id: task.id });
    assert.equal(resub.status, 200);
    assert.match(await resub.text(), new RegExp(task.id));
    const more = await json(await call(alice, 'message/send', message('and more', { taskId: task.id, contextId: task.contextId })));
    assert.equal(more.result.id, task.id);
    const canceled = await json(await call(alice, 'tasks/cancel', { id: task.id }));
    assert.equal(canceled.result.status.state, 'canceled');
  });

  it("tasks/get of another principal's task: -32001 Task not found, the upstream never asked, audited a2a_task_foreign", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    const res = await call(bob, 'tasks/get', { id: task.id });
    await assertTaskNotFound(res, n);
    assert.equal(reached(from, task.id).length, 0);
    const events = await requestEvents(gw);
    const last = events.at(-1);
    assert.equal(last?.reason, 'a2a_task_foreign');
    assert.equal(last?.decision, 'deny');
    assert.equal(last?.subject, 'bob');
  });

  it("tasks/cancel of another principal's task is refused; the task runs on", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    await assertTaskNotFound(await call(bob, 'tasks/cancel', { id: task.id }), n);
    assert.equal(reached(from, task.id).length, 0);
    assert.equal(a.tasks.get(task.id)?.status.state, 'completed');
  });

  it("tasks/resubscribe to another principal's task is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    await assertTaskNotFound(await call(bob, 'tasks/resubscribe', { id: task.id }), n);
    assert.equal(reached(from, task.id).length, 0);
  });

  it("message/send continuing another principal's task (message.taskId) is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    await assertTaskNotFound(await call(bob, 'message/send', message('give me the result', { taskId: task.id })), n);
    assert.equal(reached(from, task.id).length, 0);
  });

  it("message/stream in another principal's context (message.contextId) is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    await assertTaskNotFound(await call(bob, 'message/stream', message('what did we say?', { contextId: task.contextId })), n);
    assert.equal(reached(from, task.contextId).length, 0);
  });

  it("a message referencing another principal's task (referenceTaskIds) is refused", async () => {
    const task = await alicesTask();
    await assertTaskNotFound(await call(bob, 'message/send', message('summarize', { referenceTaskIds: [task.id] })), n);
  });

  it("tasks/pushNotificationConfig/set on another principal's task is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    const res = await call(bob, 'tasks/pushNotificationConfig/set', {
      taskId: task.id,
      pushNotificationConfig: { url: 'https://bob.example/hook' },
    });
    await assertTaskNotFound(res, n);
    assert.equal(reached(from, task.id).length, 0);
  });

  it("push config id confusion: a 0.3 tasks/pushNotificationConfig/get naming another principal's task by params.id beside the caller's own taskId is refused", async () => {
    const task = await alicesTask();
    const set = await json(
      await call(alice, 'tasks/pushNotificationConfig/set', {
        taskId: task.id,
        pushNotificationConfig: { url: 'https://alice.example/hook', token: 'alice-push-secret' },
      }),
    );
    assert.equal(set.result.taskId, task.id);
    const bobs = await json(await call(bob, 'message/send', message('mine')));
    const from = upstream.seen.length;
    // A 0.3 agent reads params.id as the task; the gateway must not take it for a 1.0 config id.
    // (Its answer, naming Alice's task, would be cut 502 as foreign; a 0.3 delete answers nothing to cut.)
    const res = await call(bob, 'tasks/pushNotificationConfig/get', { id: task.id, taskId: bobs.result.id });
    assert.equal(reached(from, task.id).length, 0, 'the upstream was asked about Alice’s task');
    await assertTaskNotFound(res, n);
    // Bob's own task, and a 1.0 config id beside it, still pass.
    const own = await call(bob, 'tasks/pushNotificationConfig/get', { id: bobs.result.id, taskId: bobs.result.id });
    assert.equal(own.status, 200);
    await own.text();
    const v1 = await call(bob, 'GetTaskPushNotificationConfig', { taskId: bobs.result.id, id: 'cfg-1' });
    assert.equal(v1.status, 200);
    await v1.text();
  });

  it("attack: a 0.3 push config get, list or delete naming by params.id a task the gateway has no record of (created around it, expired, through another instance), beside the caller's own taskId, is refused as not found", async () => {
    // Carol's task reached the agent without the gateway recording it; its config holds her webhook token.
    const direct = async (method: string, params: unknown) =>
      (await fetch(upstream.url, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) })).json();
    const carols = (await direct('message/send', message('unrecorded'))) as { result: AgentTask };
    const x = carols.result.id;
    await direct('tasks/pushNotificationConfig/set', {
      taskId: x,
      pushNotificationConfig: { url: 'https://carol.example/hook', token: 'carol-push-secret' },
    });
    const bobs = await json(await call(bob, 'message/send', message('mine')));
    const from = upstream.seen.length;
    for (const method of ['tasks/pushNotificationConfig/get', 'tasks/pushNotificationConfig/list', 'tasks/pushNotificationConfig/delete']) {
      const res = await call(bob, method, { id: x, taskId: bobs.result.id });
      await assertTaskNotFound(res, n);
    }
    assert.equal(reached(from, x).length, 0, 'the upstream was asked about a task the gateway never recorded');
    // Bob's own task by params.id still passes, and a 1.0 config id beside taskId too.
    const own = await call(bob, 'tasks/pushNotificationConfig/get', { id: bobs.result.id, taskId: bobs.result.id });
    assert.equal(own.status, 200);
    await own.text();
    const v1 = await call(bob, 'GetTaskPushNotificationConfig', { taskId: bobs.result.id, id: 'cfg-unrecorded' });
    assert.equal(v1.status, 200);
    await v1.text();
  });

  it("method/params look-alike keys: a second `Method` or `Params` (a case-sensitive upstream reads the exact one) cannot hide another principal's task", async () => {
    const task = await alicesTask();
    const bobs = await json(await call(bob, 'message/send', message('mine')));
    const from = upstream.seen.length;
    const send = (body: string) => postAgent(gw, bob, body);
    // The gateway read the last spelling, the upstream the exact `method` / `params`: a cancel of
    // Alice's task, whatever answer the gateway then cuts.
    const viaMethod = await send(
      `{"jsonrpc":"2.0","id":8,"method":"tasks/cancel","Method":"tasks/pushNotificationConfig/get","params":{"taskId":"${bobs.result.id}","id":"${task.id}"}}`,
    );
    const viaParams = await send(
      `{"jsonrpc":"2.0","id":9,"method":"tasks/cancel","params":{"id":"${task.id}"},"Params":{"id":"${bobs.result.id}"}}`,
    );
    assert.equal(reached(from, task.id).length, 0, 'the upstream was asked about Alice’s task');
    assert.equal(a.tasks.get(task.id)?.status.state, 'completed');
    for (const res of [viaMethod, viaParams]) {
      assert.equal(res.status, 400);
      assert.equal((await json(res)).error.code, -32600);
    }
  });

  it("extended-card look-alike: a second `Method` (or `method\\u0000`) naming the extended card, or an extended card path, cannot carry a tasks/get or tasks/cancel of another principal's task past the task check", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    // The gateway took any spelling of `method` naming the extended card for a card call, and a
    // card call skipped the task check; this upstream reads the exact `method`: Alice's task.
    const bodies = [
      `{"jsonrpc":"2.0","id":11,"method":"tasks/get","params":{"id":"${task.id}"},"Method":"agent/getAuthenticatedExtendedCard"}`,
      `{"jsonrpc":"2.0","id":12,"method":"tasks/cancel","params":{"id":"${task.id}"},"METHOD":"GetExtendedAgentCard"}`,
      `{"jsonrpc":"2.0","id":13,"method":"tasks/get","params":{"id":"${task.id}"},"method\\u0000":"GetExtendedAgentCard"}`,
    ];
    for (const body of bodies) {
      const res = await postAgent(gw, bob, body);
      const text = await res.text();
      assert.ok(!text.includes('secret result'), `Alice's task reached Bob: ${text}`);
      assert.equal(res.status, 400, text);
      assert.equal(JSON.parse(text).error.code, -32600);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_message_invalid');
    }
    // One spelling, taken for the card, naming Alice's task; and a JSON-RPC call posted to an
    // extended card path (this agent, like a catch-all handler, reads JSON-RPC at any path): the
    // ids of an extended-card call are checked as any call's.
    await assertTaskNotFound(
      await postAgent(gw, bob, `{"jsonrpc":"2.0","id":15,"Method":"GetExtendedAgentCard","params":{"id":"${task.id}"}}`),
      15,
    );
    const viaPath = await fetch(`${gw.url}/agent/v1/card`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bob}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 16, method: 'tasks/get', params: { id: task.id } }),
    });
    await assertTaskNotFound(viaPath, 16);
    assert.equal(reached(from, task.id).length, 0, 'the upstream was asked about Alice’s task');
    assert.equal(a.tasks.get(task.id)?.status.state, 'completed');
    // A plain extended card call still passes the task check (it names no task).
    const card = await postAgent(gw, bob, { jsonrpc: '2.0', id: 14, method: 'agent/getAuthenticatedExtendedCard' });
    assert.notEqual(card.status, 400);
    await card.text();
  });

  it('a key spelled in another case or with a NUL (read alike by lenient upstreams) is checked too', async () => {
    const task = await alicesTask();
    const body = `{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"ID":"${task.id}"}}`;
    const res = await postAgent(gw, bob, body);
    await assertTaskNotFound(res, 7);
    await assertTaskNotFound(await call(bob, 'message/send', message('x', { 'task\u0000Id': task.id })), n);
  });

  it("snake_case message.task_id (a Python agent's pydantic model binds it as taskId): continuing another principal's task is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    await assertTaskNotFound(await call(bob, 'message/send', message('give me the result', { task_id: task.id })), n);
    assert.equal(reached(from, task.id).length, 0, 'the upstream was asked about Alice’s task');
  });

  it("snake_case params.task_id on tasks/pushNotificationConfig/set: a push config on another principal's task is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    const res = await call(bob, 'tasks/pushNotificationConfig/set', {
      task_id: task.id,
      push_notification_config: { url: 'https://bob.example/hook' },
    });
    await assertTaskNotFound(res, n);
    assert.equal(reached(from, task.id).length, 0, 'the upstream was asked about Alice’s task');
  });

  it("snake_case reference_task_ids: a message referencing another principal's task is refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    await assertTaskNotFound(await call(bob, 'message/send', message('summarize', { reference_task_ids: [task.id] })), n);
    assert.equal(reached(from, task.id).length, 0, 'the upstream was asked about Alice’s task');
  });

  it('taskId and task_id in one message (upstreams disagree on which one they read) is refused: 400, -32600, a2a_message_invalid', async () => {
    const first = await json(await call(bob, 'message/send', message('one')));
    const second = await json(await call(bob, 'message/send', message('two')));
    const from = upstream.seen.length;
    const res = await call(bob, 'message/send', message('which?', { taskId: first.result.id, task_id: second.result.id }));
    assert.equal(res.status, 400);
    assert.equal((await json(res)).error.code, -32600);
    assert.equal(upstream.seen.length, from);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_message_invalid');
  });

  it('a task id the gateway never saw answers exactly as a foreign one (audited a2a_task_unknown)', async () => {
    const res = await call(bob, 'tasks/get', { id: randomUUID() });
    await assertTaskNotFound(res, n);
    const events = await requestEvents(gw);
    assert.equal(events.at(-1)?.reason, 'a2a_task_unknown');
  });

  it("a task id that is not a string is refused (an upstream may read 123 as '123')", async () => {
    const res = await call(bob, 'tasks/get', { id: 123 });
    assert.equal(res.status, 400);
    assert.equal((await json(res)).error.code, -32600);
  });

  it("listing tasks is refused: the answer would list every principal's tasks", async () => {
    const res = await call(bob, 'ListTasks', {});
    assert.equal(res.status, 400);
    assert.equal((await json(res)).error.code, -32004);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_list_refused');
  });

  it("the HTTP+JSON binding's task paths (ids in the path) are refused", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    for (const path of [`/agent/v1/tasks/${task.id}`, `/agent/v1/tasks/${task.id}:cancel`, '/agent/tasks']) {
      const res = await fetch(`${gw.url}${path}`, {
        method: path.endsWith(':cancel') ? 'POST' : 'GET',
        headers: { authorization: `Bearer ${alice}` },
      });
      assert.equal(res.status, 404, path);
      await res.text();
    }
    assert.equal(upstream.seen.length, from);
  });

  it('message/stream: events reach the creator as they come (before the stream ends), then the streamed task is its alone', async () => {
    const res = await call(alice, 'message/stream', message('stream it'));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = '';
    // The task, working and artifact events arrive while the upstream still holds the stream open.
    while ((text.match(/\n\n/g) ?? []).length < 3) {
      const { value, done } = await reader.read();
      assert.equal(done, false, 'the stream ended before its events arrived');
      text += decoder.decode(value, { stream: true });
    }
    const task = JSON.parse((text.split('\n\n')[0] as string).slice('data: '.length)).result as AgentTask;
    assert.match(text, /artifact-update/);
    // Bound while the stream is still open: Bob cannot read it, Alice can.
    await assertTaskNotFound(await call(bob, 'tasks/get', { id: task.id }), n);
    assert.equal((await json(await call(alice, 'tasks/get', { id: task.id }))).result.id, task.id);
    a.release();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    assert.match(text, /"final":true/);
    await assertTaskNotFound(await call(bob, 'tasks/resubscribe', { id: task.id }), n);
  });

  it('a caller may start a context with an id of its choosing; it is then its alone', async () => {
    const contextId = randomUUID();
    const res = await json(await call(bob, 'message/send', message('hi', { contextId })));
    assert.equal(res.result.contextId, contextId);
    await assertTaskNotFound(await call(alice, 'message/send', message('hi', { contextId })), n);
  });
});

describe('gateway: A2A tasks with a2a.bind_tasks: false', () => {
  const a = agent();
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream(a.handler);
    gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL, bind_tasks: false });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('passes every task call to the upstream (which then checks ownership itself)', async () => {
    const post = async (bearer: string, method: string, params: unknown) =>
      (await postAgent(gw, bearer, { jsonrpc: '2.0', id: 1, method, params })).json() as Promise<{ result: AgentTask }>;
    const alice = await token({ sub: 'alice', scope: 'agent:invoke' });
    const bob = await token({ sub: 'bob', scope: 'agent:invoke' });
    const task = (await post(alice, 'message/send', { message: { role: 'user', messageId: 'm', parts: [] } })).result;
    assert.equal((await post(bob, 'tasks/get', { id: task.id })).result.id, task.id);
  });
});

describe("gateway: an A2A upstream answering with another principal's task", () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let leaked: unknown;
  before(async () => {
    upstream = await startUpstream((_req, res, body) => {
      const rpc = JSON.parse(body) as { id: number; method: string };
      if (rpc.method === 'message/stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(
          `data: {"jsonrpc":"2.0","id":${rpc.id},"result":{"kind":"status-update","taskId":"t-other","contextId":"c-new","status":{"state":"working"},"final":false}}\r\n\r\n`,
        );
        setTimeout(() => res.end(`data: {"jsonrpc":"2.0","id":${rpc.id},"result":${JSON.stringify(leaked)}}\n\n`), 20);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, result: leaked }));
    });
    gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const send = async (bearer: string, method: string) =>
    postAgent(gw, bearer, { jsonrpc: '2.0', id: 1, method, params: { message: { role: 'user', messageId: randomUUID(), parts: [] } } });

  it("a JSON answer naming another principal's task is not relayed (502 a2a_upstream_task_foreign, a JSON-RPC -32006 echoing the id)", async () => {
    const alice = await token({ sub: 'alice', scope: 'agent:invoke' });
    const bob = await token({ sub: 'bob', scope: 'agent:invoke' });
    leaked = { kind: 'task', id: 't-alice', contextId: 'c-alice', status: { state: 'completed' }, artifacts: [{ text: 'secret' }] };
    const first = await send(alice, 'message/send');
    assert.equal(first.status, 200);
    assert.equal(((await first.json()) as { result: { id: string } }).result.id, 't-alice');
    const res = await send(bob, 'message/send');
    await assertRpcError(res, { status: 502, id: 1, code: -32006, message: UPSTREAM_UNAVAILABLE });
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_upstream_task_foreign');
  });

  it("an event stream naming another principal's task ends before that event with a JSON-RPC -32006 error event echoing the id (CRLF-delimited events read too)", async () => {
    const bob = await token({ sub: 'bob', scope: 'agent:invoke' });
    const res = await send(bob, 'message/stream');
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.doesNotMatch(text, /secret|t-alice/);
    const events = text.split(/\r?\n\r?\n/).filter((e) => e !== '');
    assert.equal(events.length, 2);
    assert.match(events[0] as string, /"taskId":"t-other"/);
    assert.deepEqual(JSON.parse((events[1] as string).replace(/^data: /, '')), {
      jsonrpc: '2.0',
      id: 1,
      error: { code: -32006, message: UPSTREAM_UNAVAILABLE },
    });
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'task_foreign');
  });
});

/**
 * A store (its two A2A methods) whose claims can be held, as a slow PostgreSQL would hold them, or
 * failed, as an unreachable one does: the gateway must not relay a byte naming an id before the
 * store has recorded it (another instance the caller's next request reaches would not know it yet).
 */
function gatedStore() {
  const records = new Map<string, { owner: string; expiresAt: number }>();
  const held: (() => void)[] = [];
  const state = { hold: false, down: false, claims: 0 };
  const key = (route: string, kind: string, id: string) => JSON.stringify([route, kind, id]);
  const store: TaskStore = {
    async claimA2aTask(route, kind, id, owner, expiresAt, now) {
      state.claims++;
      if (state.down) throw new Error('store unreachable');
      if (state.hold) await new Promise<void>((resolve) => held.push(resolve));
      const k = key(route, kind, id);
      const r = records.get(k);
      if (r === undefined || r.expiresAt <= now) records.set(k, { owner, expiresAt });
      return { ...(records.get(k) as { owner: string; expiresAt: number }) };
    },
    async a2aTaskOwner(route, kind, id, now) {
      if (state.down) throw new Error('store unreachable');
      const r = records.get(key(route, kind, id));
      return r === undefined || r.expiresAt <= now ? undefined : { ...r };
    },
  };
  return {
    store,
    state,
    records,
    release: () => {
      state.hold = false;
      for (const h of held.splice(0)) h();
    },
  };
}

describe('gateway: A2A tasks recorded in a store (tessera serve)', () => {
  const a = agent();
  const gated = gatedStore();
  let upstream: Upstream;
  let gw: TestGateway;
  let alice: string;
  before(async () => {
    upstream = await startUpstream(a.handler);
    gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL }, { deps: { taskStore: gated.store } });
    alice = await token({ sub: 'alice', scope: 'agent:invoke' });
  });
  after(async () => {
    gated.release();
    a.release();
    await gw.close();
    await upstream.close();
  });

  let n = 0;
  const call = (method: string, params: unknown) => postAgent(gw, alice, { jsonrpc: '2.0', id: ++n, method, params });
  const message = () => userMessage('hi');
  /** Wait until the store holds a claim, then a little longer: whatever the gateway would send early has had time to arrive. */
  const claimHeld = async (claimsBefore: number) => {
    while (gated.state.claims === claimsBefore) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100));
  };

  it('race (JSON): the answer naming a new task reaches the caller only once the store has recorded it', async () => {
    gated.state.hold = true;
    const claims = gated.state.claims;
    let answered = false;
    const pending = call('message/send', message()).then((res) => {
      answered = true;
      return res;
    });
    await claimHeld(claims);
    assert.equal(answered, false, 'the answer went out before the store recorded its task');
    gated.release();
    const res = await pending;
    assert.equal(res.status, 200);
    const task = ((await res.json()) as { result: AgentTask }).result;
    assert.equal(gated.records.get(JSON.stringify(['agent', 'task', task.id]))?.owner !== undefined, true);
  });

  it('race (event stream): no event naming a task is written before the store has recorded it', async () => {
    gated.state.hold = true;
    const claims = gated.state.claims;
    const res = await call('message/stream', message());
    assert.equal(res.status, 200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let received = '';
    const reading = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        received += Buffer.from(value).toString();
        if (received.includes('artifact-update')) return;
      }
    })();
    await claimHeld(claims);
    assert.equal(received, '', 'an event naming the task went out before the store recorded it');
    gated.release();
    await reading;
    assert.match(received, /"kind":"task"/);
    a.release();
    await reader.cancel();
  });

  it('store unreachable while recording an answer: nothing of it is relayed (503 a2a_task_registry_unavailable)', async () => {
    gated.state.down = true;
    try {
      const res = await call('message/send', message());
      assert.equal(res.status, 503);
      const body = await res.text();
      assert.doesNotMatch(body, /secret result/);
      // A JSON-RPC error echoing the call's id, as an A2A client reads one.
      assert.deepEqual(JSON.parse(body), {
        jsonrpc: '2.0',
        id: n,
        error: { code: -32000, message: 'The gateway cannot read or record tasks now; try again later.' },
      });
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_unavailable');
    } finally {
      gated.state.down = false;
    }
  });

  it('store unreachable while checking a request: refused (503, JSON-RPC -32000), the upstream never asked', async () => {
    const task = ((await (await call('message/send', message())).json()) as { result: AgentTask }).result;
    // Not cached by the gateway this time: a new instance's view, through a fresh id, is asked of the store.
    gated.state.down = true;
    try {
      const from = upstream.seen.length;
      const res = await call('message/send', { message: { ...message().message, contextId: `new-${randomUUID()}` } });
      assert.equal(res.status, 503);
      assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32000);
      assert.equal(upstream.seen.length, from);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_unavailable');
      // A task the gateway has cached as Alice's is still hers while the store is down.
      assert.equal((await call('tasks/get', { id: task.id })).status, 200);
    } finally {
      gated.state.down = false;
    }
  });
});

describe('gateway: one deadline for the store calls of a request or an answer (taskStoreTimeoutMs)', () => {
  const TIMEOUT_MS = 400;
  /** A store taking `delay` ms over each call, one call at a time (one pool connection, a slow server); `hold` parks them. */
  const slow = { delay: 150, hold: false, claims: 0 };
  const held: (() => void)[] = [];
  const records = new Map<string, { owner: string; expiresAt: number }>();
  let queue = Promise.resolve();
  const inTurn = <T>(fn: () => T): Promise<T> => {
    const run = queue.then(async () => {
      if (slow.hold) await new Promise<void>((resolve) => held.push(resolve));
      await new Promise((r) => setTimeout(r, slow.delay));
      return fn();
    });
    queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };
  const key = (route: string, kind: string, id: string) => JSON.stringify([route, kind, id]);
  const store: TaskStore = {
    claimA2aTask: (route, kind, id, owner, expiresAt, now) =>
      inTurn(() => {
        slow.claims++;
        const r = records.get(key(route, kind, id));
        if (r === undefined || r.expiresAt <= now) records.set(key(route, kind, id), { owner, expiresAt });
        return { ...(records.get(key(route, kind, id)) as { owner: string; expiresAt: number }) };
      }),
    a2aTaskOwner: (route, kind, id, now) =>
      inTurn(() => {
        const r = records.get(key(route, kind, id));
        return r === undefined || r.expiresAt <= now ? undefined : { ...r };
      }),
  };
  // An agent answering every call with 20 new tasks (a batch answer), each in a context of its own: 40 ids.
  const handler = (_req: unknown, res: ServerResponse, body: string) => {
    const id = (JSON.parse(body) as { id: unknown }).id;
    const tasks = Array.from({ length: 20 }, () => ({
      jsonrpc: '2.0',
      id,
      result: { kind: 'task', id: randomUUID(), contextId: randomUUID(), status: { state: 'completed' }, artifacts: ['secret result'] },
    }));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(tasks));
  };
  let upstream: Upstream;
  let gw: TestGateway;
  let alice: string;
  before(async () => {
    upstream = await startUpstream(handler);
    gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL }, { deps: { taskStore: store, taskStoreTimeoutMs: TIMEOUT_MS } });
    alice = await token({ sub: 'alice', scope: 'agent:invoke' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('slow store, answer naming 40 ids: refused at one timeout (503 a2a_task_registry_timeout, nothing relayed), not held 40 × the store call', async () => {
    const started = performance.now();
    const res = await postAgent(gw, alice, { jsonrpc: '2.0', id: 1, method: 'message/send', params: userMessage('hi') });
    const body = await res.text();
    const elapsed = performance.now() - started;
    assert.equal(res.status, 503);
    assert.doesNotMatch(body, /secret result/);
    // The same answer as when the store is down: the JSON-RPC error of a request refused for its tasks.
    assert.deepEqual(JSON.parse(body), {
      jsonrpc: '2.0',
      id: 1,
      error: { code: -32000, message: 'The gateway cannot read or record tasks now; try again later.' },
    });
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_timeout');
    assert.ok(elapsed < TIMEOUT_MS + 1000, `answered after ${Math.round(elapsed)} ms`);
  });

  it('store holding the calls of a request naming a new context: refused at the timeout (503, JSON-RPC -32000), the upstream never asked', async () => {
    slow.hold = true;
    try {
      const from = upstream.seen.length;
      const res = await postAgent(gw, alice, {
        jsonrpc: '2.0',
        id: 2,
        method: 'message/send',
        params: userMessage('hi', { contextId: `ctx-${randomUUID()}` }),
      });
      assert.equal(res.status, 503);
      assert.deepEqual(((await res.json()) as { id: unknown; error: { code: number } }).error.code, -32000);
      assert.equal(upstream.seen.length, from);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_timeout');
    } finally {
      slow.hold = false;
      for (const h of held.splice(0)) h();
    }
  });
});

for (const registry of ['process (tessera gateway)', 'store (tessera serve)'] as const) {
  describe(`gateway: at most a2a.max_tasks_per_principal live tasks and contexts per principal and route, kept in the ${registry}`, () => {
    const a = agent();
    let store: SqliteStore | undefined;
    let upstream: Upstream;
    let gw: TestGateway;
    let alice: string;
    let bob: string;
    before(async () => {
      upstream = await startUpstream(a.handler);
      store = registry.startsWith('store') ? SqliteStore.open({ path: ':memory:' }) : undefined;
      gw = await startA2aGateway(
        upstream.url,
        { token_url: TOKEN_URL, max_tasks_per_principal: 2 },
        { deps: store === undefined ? {} : { taskStore: store } },
      );
      alice = await token({ sub: 'alice', scope: 'agent:invoke' });
      bob = await token({ sub: 'bob', scope: 'agent:invoke' });
    });
    after(async () => {
      a.release();
      await gw.close();
      await upstream.close();
      await store?.close();
    });

    let n = 0;
    const send = (bearer: string, params: unknown) => postAgent(gw, bearer, { jsonrpc: '2.0', id: ++n, method: 'message/send', params });

    it('flooding new tasks: the answer naming one past the cap is not relayed (503, JSON-RPC -32000 with its id, a2a_task_registry_full)', async () => {
      // A task and its context: Alice's two.
      const first = await send(alice, userMessage('hi'));
      assert.equal(first.status, 200);
      const task = (await json(first)).result as AgentTask;
      const res = await send(alice, userMessage('again'));
      assert.equal(res.status, 503);
      const body = await json(res);
      assert.deepEqual(body, {
        jsonrpc: '2.0',
        id: n,
        error: { code: -32000, message: 'The gateway cannot record more tasks now; try again later.' },
      });
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_full');
      // Her own go on; Bob has a cap of his own.
      assert.equal((await postAgent(gw, alice, { jsonrpc: '2.0', id: ++n, method: 'tasks/get', params: { id: task.id } })).status, 200);
      assert.equal((await send(alice, userMessage('more', { taskId: task.id, contextId: task.contextId }))).status, 200);
      assert.equal((await send(bob, userMessage('hi'))).status, 200);
    });

    it('a request naming a new context past the cap is refused before the upstream sees it (503, JSON-RPC -32000)', async () => {
      const from = upstream.seen.length;
      const res = await send(alice, userMessage('hi', { contextId: `ctx-${randomUUID()}` }));
      assert.equal(res.status, 503);
      assert.equal((await json(res)).error.code, -32000);
      assert.equal(upstream.seen.length, from);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_full');
    });
  });
}

describe('gateway: A2A internal errors after the JSON-RPC body is read', () => {
  it('an internal error while checking a call is a JSON-RPC -32603 error echoing its id (500, a fixed message), audited internal_error, the upstream never asked', async () => {
    const upstream = await startUpstream((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    // A clock failing only where the call's ids are checked: after its body is read.
    const clock = () => {
      if (new Error().stack?.includes('checkTasks')) throw new Error('clock failed');
      return Date.now();
    };
    const gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL, bind_tasks: true }, { deps: { clock } });
    try {
      const alice = await token({ sub: 'alice', scope: 'agent:invoke' });
      const res = await postAgent(gw, alice, { jsonrpc: '2.0', id: 'call-7', method: 'message/send', params: userMessage('hi') });
      await assertRpcError(res, { status: 500, id: 'call-7', code: -32603, message: 'The gateway could not handle the request.' });
      assert.ok(res.headers.get('x-request-id'));
      assert.equal(upstream.seen.length, 0);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'internal_error');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
