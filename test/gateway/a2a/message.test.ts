/** The ids an A2A request names (src/gateway/a2a/message.ts), and the HTTP+JSON binding’s task paths. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTaskPath, MAX_NAMED_IDS, requestIds } from '../../../src/gateway/a2a/message.ts';

describe('requestIds', () => {
  it('store amplification: a request naming more than MAX_NAMED_IDS distinct ids (each a store round trip) is refused', () => {
    const refs = (n: number) => ({
      method: 'message/send',
      params: { message: { referenceTaskIds: Array.from({ length: n }, (_, i) => `t${i}`), contextId: 'c' } },
    });
    assert.equal(requestIds(refs(MAX_NAMED_IDS - 1)).ok, true);
    assert.deepEqual(requestIds(refs(MAX_NAMED_IDS)), { ok: false, reason: 'a2a_message_invalid' });
    // The same id many times is one id.
    const same = { method: 'message/send', params: { message: { referenceTaskIds: Array(5000).fill('t'), contextId: 'c' } } };
    assert.equal(requestIds(same).ok, true);
  });

  it('finds task and context ids wherever a request names them', () => {
    const r = requestIds({
      jsonrpc: '2.0',
      id: 1,
      method: 'message/send',
      params: { message: { TaskId: 't1', contextId: 'c1', referenceTaskIds: ['t2'] }, metadata: { deep: [{ taskid: 't3' }] } },
    });
    assert.ok(r.ok);
    assert.deepEqual([...r.tasks].sort(), ['t1', 't2', 't3']);
    assert.deepEqual(r.newTasks, []);
    assert.deepEqual(r.contexts, ['c1']);
  });

  it('reads params.id as a task, a push config id beside taskId as maybe one (1.0 config, 0.3 task); 0.2 tasks/send may name a new one', () => {
    assert.deepEqual(requestIds({ method: 'tasks/get', params: { id: 't' } }), {
      ok: true,
      tasks: ['t'],
      newTasks: [],
      contexts: [],
      maybeTasks: [],
    });
    assert.deepEqual(requestIds({ method: 'GetTaskPushNotificationConfig', params: { taskId: 't', id: 'cfg' } }), {
      ok: true,
      tasks: ['t'],
      newTasks: [],
      contexts: [],
      maybeTasks: ['cfg'],
    });
    assert.deepEqual(requestIds({ method: 'tasks/send', params: { id: 't', sessionId: 's' } }), {
      ok: true,
      tasks: [],
      newTasks: ['t'],
      contexts: ['s'],
      maybeTasks: [],
    });
    assert.deepEqual(requestIds({ method: 'GetTask', params: { name: 'tasks/t9' } }), {
      ok: true,
      tasks: ['t9'],
      newTasks: [],
      contexts: [],
      maybeTasks: [],
    });
  });

  it('long s: keys with U+017F (Go encoding/json folds ſ to s: `taſkId` is taskId, `paramſ` is params) are read as their ASCII spelling', () => {
    const viaTaskId = requestIds({ method: 'message/send', params: { message: { 'ta\u017fkId': 't1' } } });
    assert.ok(viaTaskId.ok);
    assert.deepEqual(viaTaskId.tasks, ['t1']);
    const viaParams = requestIds({ method: 'tasks/get', 'param\u017f': { id: 't2' } });
    assert.ok(viaParams.ok);
    assert.deepEqual(viaParams.tasks, ['t2']);
    const viaSession = requestIds({ method: 'tasks/send', params: { id: 't3', '\u017fessionId': 'c1' } });
    assert.ok(viaSession.ok);
    assert.deepEqual(viaSession.contexts, ['c1']);
  });

  it('snake_case: keys the Python SDK (pydantic field names) and protobuf JSON (proto names) read as their camelCase member are read alike; two spellings of one member in one object are refused', () => {
    assert.deepEqual(
      requestIds({
        method: 'tasks/pushNotificationConfig/get',
        params: { id: 'cfg', task_id: 't1', metadata: { x: { Reference_Task_IDs: ['t2'] } }, message: { context_id: 'c1' } },
      }),
      // A 0.3 push config call's `id` is its task (the caller's own, like tasks/get).
      { ok: true, tasks: ['t1', 't2', 'cfg'], newTasks: [], contexts: ['c1'], maybeTasks: [] },
    );
    for (const message of [
      { taskId: 't1', task_id: 't2' },
      { contextId: 'c1', context_id: 'c2' },
      { referenceTaskIds: ['t1'], reference_task_ids: ['t2'] },
      { taskId: 't1', TaskId: 't2' },
    ])
      assert.deepEqual(
        requestIds({ method: 'message/send', params: { message } }),
        { ok: false, reason: 'a2a_message_invalid' },
        JSON.stringify(message),
      );
    // One spelling per object: the same id in two objects is no ambiguity.
    assert.equal(requestIds({ method: 'message/send', params: { message: { taskId: 't1' }, metadata: { task_id: 't1' } } }).ok, true);
  });

  it('refuses ids that are not strings, and listing tasks', () => {
    assert.equal(requestIds({ method: 'tasks/get', params: { id: 5 } }).ok, false);
    assert.equal(requestIds({ method: 'message/send', params: { message: { taskId: ['t'] } } }).ok, false);
    assert.deepEqual(requestIds({ method: ' ListTasks ', params: {} }), { ok: false, reason: 'a2a_task_list_refused' });
  });

  it('params that are not an object (positional, null, a string) are refused; absent params are not', () => {
    for (const params of [[{ id: 't' }], null, 't', 1])
      assert.deepEqual(requestIds({ method: 'tasks/get', params }), { ok: false, reason: 'a2a_message_invalid' }, JSON.stringify(params));
    assert.deepEqual(
      requestIds([
        { method: 'message/send', params: {} },
        { method: 'tasks/get', params: ['t'] },
      ]),
      {
        ok: false,
        reason: 'a2a_message_invalid',
      },
    );
    assert.equal(requestIds({ method: 'message/send' }).ok, true);
  });
});

it('isTaskPath: the HTTP+JSON binding’s task resources', () => {
  for (const p of ['/v1/tasks/abc', '/a/tasks', '/v1/tasks/abc:cancel', '/TASKS/x', '/v1/%74asks/x']) assert.ok(isTaskPath(p), p);
  for (const p of ['/', '/v1/message:send', '/v1/card', '/taskslist']) assert.ok(!isTaskPath(p), p);
  // The gRPC service's task methods over Connect (HTTP/1.1, a ProtoJSON body naming the task).
  for (const p of ['/lf.a2a.v1.A2AService/CancelTask', '/a/a2a.v1.A2AService/GetTask', '/x/lf.a2a.v1.a2aservice/subscribetotask'])
    assert.ok(isTaskPath(p), p);
  for (const p of ['/lf.a2a.v1.A2AService/SendMessage', '/lf.a2a.v1.A2AService/GetExtendedAgentCard', '/lf.a2a.v1.A2AService'])
    assert.ok(!isTaskPath(p), p);
});
