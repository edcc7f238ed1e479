/** The pieces of A2A task binding that read bytes: SSE event data, request and answer ids. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  answerIds,
  answerText,
  isTaskPath,
  MAX_NAMED_IDS,
  RENEW_SLACK_MS,
  requestIds,
  SseDataReader,
  StoreTaskOwners,
  TaskOwners,
  type TaskStore,
} from '../../src/gateway/a2a-tasks.ts';

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

  it("overflow: an event's data (its lines joined) or a line past the limit is flagged in the push that passes it, before the event ends", () => {
    const data = new SseDataReader(16);
    assert.deepEqual(data.push(Buffer.from('data: 1234567890\n')), []);
    assert.equal(data.overflow, false);
    data.push(Buffer.from('data: 123456\n'));
    assert.equal(data.overflow, true);
    assert.deepEqual(data.push(Buffer.from('\n')), [], 'nothing more is read');
    const line = new SseDataReader(16);
    line.push(Buffer.from(': a comment longer than that'));
    assert.equal(line.overflow, true);
  });
});

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
      { ok: true, tasks: ['t1', 't2'], newTasks: [], contexts: ['c1'], maybeTasks: ['cfg'] },
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
  });

  it('reads keys as lenient clients do (any case, NULs, long s), discriminators and the envelope included', () => {
    assert.deepEqual(answerIds({ jsonrpc: '2.0', id: 1, Result: { ID: 't', ContextID: 'c', Status: {} } }), {
      tasks: ['t'],
      contexts: ['c'],
    });
    assert.deepEqual(answerIds({ result: { 'ta\u017fkId': 't', 'context\u0000Id': 'c' } }), { tasks: ['t'], contexts: ['c'] });
    assert.deepEqual(answerIds({ RESULT: { StatusUpdate: { TaskId: 't', '\u017fessionId': 'c' } } }), { tasks: ['t'], contexts: ['c'] });
    // A Task told by its kind (a2a-go decodes a result by `kind`), without a status.
    assert.deepEqual(answerIds({ result: { Kind: 'task', id: 't', contextId: 'c' } }), { tasks: ['t'], contexts: ['c'] });
    assert.deepEqual(answerIds({ result: { kind: 'message', id: 'm', contextId: 'c' } }), { tasks: [], contexts: ['c'] });
  });

  it('refuses an answer spelling a member it reads twice (clients disagree on which one wins)', () => {
    const task = { kind: 'task', id: 't', contextId: 'c', status: {} };
    assert.equal(answerIds({ jsonrpc: '2.0', id: 1, result: { ...task, ContextId: 'd' } }), 'ambiguous');
    assert.equal(answerIds({ jsonrpc: '2.0', id: 1, result: task, Result: { kind: 'message' } }), 'ambiguous');
    assert.equal(answerIds({ result: { task, Task: task } }), 'ambiguous');
    assert.equal(answerIds({ result: { ...task, 'kind\u0000': 'message' } }), 'ambiguous');
    assert.equal(answerIds({ result: { ...task, Status: {} } }), 'ambiguous');
    assert.equal(answerIds({ error: { code: 1, data: { taskId: 't', taskID: 'u' } } }), 'ambiguous');
    assert.equal(answerIds([{ result: task }, { result: { taskId: 't', TaskId: 'u' } }]), 'ambiguous');
    // Members it does not read, and objects it does not read, may repeat.
    assert.deepEqual(answerIds({ result: { ...task, Artifacts: [], artifacts: [], metadata: { contextId: 'x', ContextId: 'y' } } }), {
      tasks: ['t'],
      contexts: ['c'],
    });
  });

  it('reads snake_case keys (pydantic field names, proto names) as their camelCase member; leading underscores are another member', () => {
    assert.deepEqual(answerIds({ result: { status_update: { task_id: 't', context_id: 'c' } } }), { tasks: ['t'], contexts: ['c'] });
    assert.deepEqual(answerIds({ result: { artifact_update: { Task_Id: 't', session_id: 'c' } } }), { tasks: ['t'], contexts: ['c'] });
    assert.equal(answerIds({ result: { kind: 'task', id: 't', contextId: 'c', context_id: 'd', status: {} } }), 'ambiguous');
    assert.equal(answerIds({ result: { statusUpdate: { taskId: 't' }, status_update: { taskId: 'u' } } }), 'ambiguous');
    // `_id` (a document store's key left in an answer) is no spelling of `id` to any client.
    assert.deepEqual(answerIds({ result: { kind: 'task', id: 't', _id: 'x', contextId: 'c', status: {} } }), {
      tasks: ['t'],
      contexts: ['c'],
    });
  });

  it("reads the ids of a JSON-RPC error's data at the same places as a result", () => {
    assert.deepEqual(answerIds({ jsonrpc: '2.0', id: 1, error: { code: -32001, data: { taskId: 'z' } } }), { tasks: ['z'], contexts: [] });
    assert.deepEqual(
      answerIds({ jsonrpc: '2.0', id: 1, Error: { code: -32603, Data: { task: { id: 't', contextId: 'c', status: {} } } } }),
      {
        tasks: ['t'],
        contexts: ['c'],
      },
    );
    assert.deepEqual(answerIds({ jsonrpc: '2.0', id: 1, error: { code: -32603, data: 'task t failed' } }), { tasks: [], contexts: [] });
  });

  it('reads each response of a batch answer', () => {
    const task = (id: string, contextId: string) => ({ jsonrpc: '2.0', id: 1, result: { kind: 'task', id, contextId, status: {} } });
    assert.deepEqual(answerIds([task('t1', 'c1'), { jsonrpc: '2.0', id: 2, error: { code: -32600 } }, task('t2', 'c2')]), {
      tasks: ['t1', 't2'],
      contexts: ['c1', 'c2'],
    });
  });
});

describe('answerText', () => {
  it("decodes an answer's bytes as Python's json.loads and fetch's json() do: UTF-8 (BOM skipped), UTF-16 and UTF-32 (BOM or NULs)", () => {
    const text = '{"id":"t-é😀"}';
    const u16le = Buffer.from(text, 'utf16le');
    const u16be = Buffer.from(u16le).swap16();
    const u32le = Buffer.alloc([...text].length * 4);
    for (const [i, c] of [...text].entries()) u32le.writeUInt32LE(c.codePointAt(0) as number, i * 4);
    const u32be = Buffer.from(u32le).swap32();
    const cases: [string, Buffer][] = [
      ['utf-8', Buffer.from(text)],
      ['utf-8 BOM', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)])],
      ['utf-16le', u16le],
      ['utf-16be', u16be],
      ['utf-16le BOM', Buffer.concat([Buffer.from([0xff, 0xfe]), u16le])],
      ['utf-16be BOM', Buffer.concat([Buffer.from([0xfe, 0xff]), u16be])],
      ['utf-32le', u32le],
      ['utf-32be', u32be],
      ['utf-32le BOM', Buffer.concat([Buffer.from([0xff, 0xfe, 0, 0]), u32le])],
      ['utf-32be BOM', Buffer.concat([Buffer.from([0, 0, 0xfe, 0xff]), u32be])],
    ];
    for (const [name, bytes] of cases) assert.equal(answerText(bytes), text, name);
    assert.equal(answerText(Buffer.from('{}', 'utf16le')), '{}');
    assert.equal(answerText(Buffer.alloc(0)), '');
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

/** A store's two A2A methods over a Map (as SqliteStore keeps them), counting reads and writes; `records` is the table. */
function memoryStore() {
  const records = new Map<string, { owner: string; expiresAt: number }>();
  const calls = { reads: 0, writes: 0 };
  const key = (route: string, kind: string, id: string) => JSON.stringify([route, kind, id]);
  const store: TaskStore = {
    async claimA2aTask(route, kind, id, owner, expiresAt, now) {
      calls.writes++;
      const k = key(route, kind, id);
      const r = records.get(k);
      if (r === undefined || r.expiresAt <= now) records.set(k, { owner, expiresAt });
      else if (r.owner === owner) r.expiresAt = Math.max(r.expiresAt, expiresAt);
      return { ...(records.get(k) as { owner: string; expiresAt: number }) };
    },
    async a2aTaskOwner(route, kind, id, now) {
      calls.reads++;
      const r = records.get(key(route, kind, id));
      return r === undefined || r.expiresAt <= now ? undefined : { ...r };
    },
  };
  return { store, records, calls };
}

describe('StoreTaskOwners', () => {
  const DAY = 86_400_000;

  it('race across instances: an id unknown to this instance is asked of the store every time, never cached as unknown', async () => {
    const { store } = memoryStore();
    const a = new StoreTaskOwners(store);
    const b = new StoreTaskOwners(store);
    assert.equal(await b.ownerOf('r', 'task', 't', 0), undefined);
    // Instance A records it (the upstream's answer went through A); B must see it at once.
    assert.equal(await a.claim('r', 'task', 't', 'alice', 1000, DAY), 'owned');
    assert.equal(await b.ownerOf('r', 'task', 't', 1000), 'alice');
    // And a context Bob asks B for is Alice's, from A, too.
    assert.equal(await b.claim('r', 'task', 't', 'bob', 1000, DAY), 'foreign');
  });

  it('caches an owner until the record’s expiry and no longer: then the store is asked again', async () => {
    const { store, calls } = memoryStore();
    const owners = new StoreTaskOwners(store);
    await owners.claim('r', 'task', 't', 'alice', 0, 10_000);
    const reads = calls.reads;
    assert.equal(await owners.ownerOf('r', 'task', 't', 9_999), 'alice');
    assert.equal(calls.reads, reads, 'answered from the cache');
    assert.equal(await owners.ownerOf('r', 'task', 't', 10_000), undefined);
    assert.equal(calls.reads, reads + 1);
  });

  it('a stream naming one task in every event writes to the store once; the record is renewed once it falls RENEW_SLACK_MS behind the sliding ttl', async () => {
    const { store, records, calls } = memoryStore();
    const owners = new StoreTaskOwners(store);
    for (let t = 0; t < 100; t++) assert.equal(await owners.claim('r', 'task', 't', 'alice', t, DAY), 'owned');
    assert.equal(calls.writes, 1);
    assert.equal(await owners.claim('r', 'task', 't', 'alice', RENEW_SLACK_MS + 1000, DAY), 'owned');
    assert.equal(calls.writes, 2);
    assert.equal([...records.values()][0]?.expiresAt, Math.floor((RENEW_SLACK_MS + 1000 + DAY) / 1000));
  });

  it('another principal’s claim of a cached id is refused without a write, and changes nothing', async () => {
    const { store, records, calls } = memoryStore();
    const owners = new StoreTaskOwners(store);
    await owners.claim('r', 'context', 'c', 'alice', 0, DAY);
    assert.equal(await owners.claim('r', 'context', 'c', 'bob', 5, DAY), 'foreign');
    assert.equal(calls.writes, 1);
    assert.equal([...records.values()][0]?.owner, 'alice');
  });

  it('a store that cannot answer rejects (the gateway then refuses), and nothing is cached', async () => {
    let down = true;
    const { store } = memoryStore();
    const flaky: TaskStore = {
      claimA2aTask: (...a) => (down ? Promise.reject(new Error('down')) : store.claimA2aTask(...a)),
      a2aTaskOwner: (...a) => (down ? Promise.reject(new Error('down')) : store.a2aTaskOwner(...a)),
    };
    const owners = new StoreTaskOwners(flaky);
    await assert.rejects(owners.claim('r', 'task', 't', 'alice', 0, DAY));
    await assert.rejects(owners.ownerOf('r', 'task', 't', 0));
    down = false;
    assert.equal(await owners.ownerOf('r', 'task', 't', 0), undefined);
  });

  it('forgets the oldest cached records past maxCached, and asks the store for them again', async () => {
    const { store, calls } = memoryStore();
    const owners = new StoreTaskOwners(store, { maxCached: 2 });
    for (const id of ['a', 'b', 'c']) await owners.claim('r', 'task', id, 'alice', 0, DAY);
    const reads = calls.reads;
    assert.equal(await owners.ownerOf('r', 'task', 'c', 1), 'alice');
    assert.equal(calls.reads, reads);
    assert.equal(await owners.ownerOf('r', 'task', 'a', 1), 'alice');
    assert.equal(calls.reads, reads + 1);
  });
});

it('isTaskPath: the HTTP+JSON binding’s task resources', () => {
  for (const p of ['/v1/tasks/abc', '/a/tasks', '/v1/tasks/abc:cancel', '/TASKS/x', '/v1/%74asks/x']) assert.ok(isTaskPath(p), p);
  for (const p of ['/', '/v1/message:send', '/v1/card', '/taskslist']) assert.ok(!isTaskPath(p), p);
});
