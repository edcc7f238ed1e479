/** The pieces of A2A task binding that read bytes: SSE event data, request and answer ids. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answerIds, isTaskPath, requestIds, SseDataReader, TaskOwners } from '../../src/gateway/a2a-tasks.ts';

describe('SseDataReader', () => {
  it('reads each event’s data whatever the line ends and however the chunks split them', () => {
    const stream = 'data: {"a":1}\r\n\r\nevent: x\ndata: {"b":\ndata: 2}\n\n: comment\r\rdata:{"c":3}\r\n\r\n';
    for (let size = 1; size <= stream.length; size++) {
      const reader = new SseDataReader();
      const events: string[] = [];
      for (let i = 0; i < stream.length; i += size) events.push(...reader.push(Buffer.from(stream.slice(i, i + size))));
      assert.deepEqual(events, ['{"a":1}', '{"b":\n2}', '{"c":3}'], `chunks of ${size}`);
    }
  });
});

describe('requestIds', () => {
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

  it('reads params.id as a task, except a 1.0 push config id beside taskId; 0.2 tasks/send may name a new one', () => {
    assert.deepEqual(requestIds({ method: 'tasks/get', params: { id: 't' } }), { ok: true, tasks: ['t'], newTasks: [], contexts: [] });
    assert.deepEqual(requestIds({ method: 'GetTaskPushNotificationConfig', params: { taskId: 't', id: 'cfg' } }), {
      ok: true,
      tasks: ['t'],
      newTasks: [],
      contexts: [],
    });
    assert.deepEqual(requestIds({ method: 'tasks/send', params: { id: 't', sessionId: 's' } }), {
      ok: true,
      tasks: [],
      newTasks: ['t'],
      contexts: ['s'],
    });
    assert.deepEqual(requestIds({ method: 'GetTask', params: { name: 'tasks/t9' } }), {
      ok: true,
      tasks: ['t9'],
      newTasks: [],
      contexts: [],
    });
  });

  it('refuses ids that are not strings, and listing tasks', () => {
    assert.equal(requestIds({ method: 'tasks/get', params: { id: 5 } }).ok, false);
    assert.equal(requestIds({ method: 'message/send', params: { message: { taskId: ['t'] } } }).ok, false);
    assert.deepEqual(requestIds({ method: ' ListTasks ', params: {} }), { ok: false, reason: 'a2a_task_list_refused' });
  });
});

describe('answerIds', () => {
  it('reads a Task, a Message, update events and 1.0 wrappers, not ids in parts or references', () => {
    assert.deepEqual(answerIds({ jsonrpc: '2.0', id: 1, result: { id: 't', contextId: 'c', status: {}, history: [{ taskId: 'x' }] } }), {
      tasks: ['t'],
      contexts: ['c'],
    });
    assert.deepEqual(answerIds({ result: { kind: 'message', taskId: 't', contextId: 'c', referenceTaskIds: ['y'] } }), {
      tasks: ['t'],
      contexts: ['c'],
    });
    assert.deepEqual(answerIds({ statusUpdate: { taskId: 't', contextId: 'c' } }), { tasks: ['t'], contexts: ['c'] });
    assert.deepEqual(answerIds({ jsonrpc: '2.0', id: 1, error: { code: -32001, data: { taskId: 'z' } } }), { tasks: [], contexts: [] });
  });
});

describe('TaskOwners', () => {
  it('first claim wins, expires after its ttl (renewed on use), and evicts nothing live when full', () => {
    const owners = new TaskOwners({ maxEntries: 2, maxPerOwner: 2 });
    assert.equal(owners.claim('r', 'task', 't', 'alice', 0, 100), 'owned');
    assert.equal(owners.claim('r', 'task', 't', 'bob', 50, 100), 'foreign');
    assert.equal(owners.claim('r', 'task', 't', 'alice', 90, 100), 'owned');
    assert.equal(owners.ownerOf('r', 'task', 't', 150), 'alice');
    assert.equal(owners.ownerOf('r', 'context', 't', 150), undefined);
    assert.equal(owners.claim('r', 'task', 'u', 'bob', 150, 100), 'owned');
    assert.equal(owners.claim('r', 'task', 'v', 'carol', 150, 100), 'full');
    assert.equal(owners.ownerOf('r', 'task', 't', 190), undefined);
    assert.equal(owners.claim('r', 'task', 'v', 'carol', 251, 100), 'owned');
  });
});

it('isTaskPath: the HTTP+JSON binding’s task resources', () => {
  for (const p of ['/v1/tasks/abc', '/a/tasks', '/v1/tasks/abc:cancel', '/TASKS/x', '/v1/%74asks/x']) assert.ok(isTaskPath(p), p);
  for (const p of ['/', '/v1/message:send', '/v1/card', '/taskslist']) assert.ok(!isTaskPath(p), p);
});
