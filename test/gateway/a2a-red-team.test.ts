/**
 * A2A red team: what the other A2A tests leave open. An agent on loopback serving the JSON-RPC
 * binding and, as a connect-go or connect-es server generated from `a2a.proto` does, the gRPC
 * service's methods over the Connect protocol (HTTP/1.1 POST `/lf.a2a.v1.A2AService/<Method>`, a
 * ProtoJSON body): two principals, Alice and Bob, and push notification configs whose webhook the
 * agent would call.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { json, postAgent, startA2aPrincipals, userMessage } from './a2a/helpers.ts';
import { requestEvents, type TestGateway, type Upstream } from './helpers.ts';

interface Task {
  id: string;
  contextId: string;
  status: { state: string };
}

/**
 * An agent trusting the gateway to authenticate: JSON-RPC `message/send` creates a task, and
 * `tasks/pushNotificationConfig/set` stores a webhook (which it would call with the task's
 * results); Connect `GetTask`, `CancelTask` and `CreateTaskPushNotificationConfig` act on the task
 * their ProtoJSON request names (`id`, or a draft's resource name `tasks/{id}` in `name`/`parent`).
 */
function agent() {
  const tasks = new Map<string, Task>();
  const hooks: { taskId: string; url: string }[] = [];
  const handler = (req: { url?: string }, res: ServerResponse, body: string) => {
    // biome-ignore lint/suspicious/noExplicitAny: requests under test
    const b: any = body === '' ? {} : JSON.parse(body);
    const send = (status: number, v: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(v));
    const connect = /\/lf\.a2a\.v1\.A2AService\/(\w+)$/.exec(req.url ?? '');
    if (connect !== null) {
      const id: string = b.id ?? String(b.name ?? b.parent ?? '').split('/')[1];
      const task = tasks.get(id);
      if (task === undefined) return send(404, { code: 'not_found', message: 'task not found' });
      switch (connect[1]) {
        case 'GetTask':
          return send(200, task);
        case 'CancelTask':
          task.status = { state: 'TASK_STATE_CANCELED' };
          return send(200, task);
        case 'CreateTaskPushNotificationConfig':
          hooks.push({ taskId: id, url: b.config?.url });
          return send(200, { name: `tasks/${id}/pushNotificationConfigs/c1`, config: b.config });
        default:
          return send(501, { code: 'unimplemented' });
      }
    }
    const reply = (payload: Record<string, unknown>) => send(200, { jsonrpc: '2.0', id: b.id, ...payload });
    switch (b.method) {
      case 'message/send': {
        const task: Task = { id: randomUUID(), contextId: randomUUID(), status: { state: 'completed' } };
        tasks.set(task.id, task);
        const push = b.params?.configuration?.pushNotificationConfig;
        if (push !== undefined) hooks.push({ taskId: task.id, url: push.url });
        return reply({ result: { kind: 'task', ...task } });
      }
      case 'tasks/pushNotificationConfig/set': {
        const taskId = b.params?.taskId;
        if (!tasks.has(taskId)) return reply({ error: { code: -32001, message: 'Task not found' } });
        hooks.push({ taskId, url: b.params?.pushNotificationConfig?.url });
        return reply({ result: b.params });
      }
      default:
        return reply({ error: { code: -32601, message: 'Method not found' } });
    }
  };
  return { tasks, hooks, handler };
}

describe('gateway: A2A red team (bind_tasks)', () => {
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
  const alicesTask = async (): Promise<Task> => {
    const res = await call(alice, 'message/send', userMessage('find papers'));
    assert.equal(res.status, 200);
    return (await json(res)).result;
  };
  const connect = (bearer: string, method: string, body: unknown) =>
    fetch(`${gw.url}/agent/lf.a2a.v1.A2AService/${method}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it("attack: the gRPC service's task methods over Connect (`/lf.a2a.v1.A2AService/CancelTask`, a ProtoJSON body naming the task by `id` or `name`) cannot reach another principal's task: refused before the agent (404 a2a_task_path_refused)", async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    for (const [method, body] of [
      ['CancelTask', { id: task.id }],
      ['CancelTask', { name: `tasks/${task.id}` }],
      ['GetTask', { id: task.id }],
      ['CreateTaskPushNotificationConfig', { parent: `tasks/${task.id}`, configId: 'c1', config: { url: 'https://bob.example/hook' } }],
      ['SubscribeToTask', { id: task.id }],
    ] as const) {
      for (const m of [method, method.toLowerCase()]) {
        const res = await connect(bob, m, body);
        assert.equal(res.status, 404, m);
        await res.text();
        assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_path_refused', m);
      }
    }
    // Also from the task's own creator: the path names the call, the body the task, and neither is read.
    const own = await connect(alice, 'CancelTask', { id: task.id });
    assert.equal(own.status, 404);
    await own.text();
    assert.equal(upstream.seen.length, from);
    assert.equal(a.tasks.get(task.id)?.status.state, 'completed');
    assert.equal(
      a.hooks.some((h) => h.taskId === task.id),
      false,
    );
  });

  it('the Connect paths that name no task (SendMessage, the card) are not refused as task paths', async () => {
    const res = await connect(alice, 'SendMessage', { message: { role: 'ROLE_USER', messageId: 'm1', parts: [{ text: 'hi' }] } });
    assert.notEqual((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_path_refused');
    await res.text();
  });

  const HOSTILE_HOOKS = [
    'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
    'http://127.0.0.1:9090/metrics',
    'http://localhost:4000/admin',
    'http://[::1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://0x7f.1/',
    'http://2130706433/',
    'http://10.0.0.8/internal',
    'http://192.168.1.1/',
    'http://[fd00::1]/',
    'http://0.0.0.0:8080/',
    'http://metadata.google.internal/computeMetadata/v1/',
    'http://app.localhost/',
    'file:///etc/passwd',
    'gopher://127.0.0.1:6379/_FLUSHALL',
    'http://bob.example\\@127.0.0.1/',
    'http://bob.example@127.0.0.1/',
    'not a url',
  ];

  it('attack: a push notification webhook at a loopback, link-local (cloud metadata), private or non-HTTP address is refused before the agent (400, -32602, a2a_push_url_refused): the agent would call it from inside', async () => {
    const task = await alicesTask();
    const from = upstream.seen.length;
    for (const url of HOSTILE_HOOKS) {
      for (const [method, params] of [
        ['tasks/pushNotificationConfig/set', { taskId: task.id, pushNotificationConfig: { url } }],
        ['tasks/pushNotificationConfig/set', { task_id: task.id, push_notification_config: { URL: url } }],
        ['message/send', { ...userMessage('hi'), configuration: { pushNotificationConfig: { url } } }],
        ['CreateTaskPushNotificationConfig', { taskId: task.id, config: { url } }],
      ] as const) {
        const res = await call(alice, method, params);
        assert.equal(res.status, 400, `${method} ${url}`);
        const body = await json(res);
        assert.equal(body.error.code, -32602, url);
        assert.equal(body.id, n);
        assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_push_url_refused', url);
      }
    }
    assert.equal(upstream.seen.length, from);
    assert.deepEqual(
      a.hooks.filter((h) => h.taskId === task.id),
      [],
    );
  });

  it('a push notification webhook at a public HTTPS (or HTTP) address passes', async () => {
    const task = await alicesTask();
    for (const url of ['https://alice.example/hook', 'http://hooks.alice.example:8443/a2a?x=1', 'https://203.0.113.7/hook']) {
      const res = await call(alice, 'tasks/pushNotificationConfig/set', { taskId: task.id, pushNotificationConfig: { url } });
      assert.equal(res.status, 200, url);
      assert.equal((await json(res)).result.pushNotificationConfig.url, url);
    }
    const sent = await call(alice, 'message/send', {
      ...userMessage('hi'),
      configuration: { pushNotificationConfig: { url: 'https://alice.example/hook' } },
    });
    assert.equal(sent.status, 200);
    await sent.text();
  });
});
