/** The ids an A2A answer names, and how its bytes are decoded (src/gateway/a2a/answers.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answerIds, answerText } from '../../../src/gateway/a2a/answers.ts';

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
