/**
 * The token service's batching audit sink while the store fails: the queue stays bounded, and
 * every event it cannot keep is counted as dropped.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchingAuditSink } from '../../src/audit/batching.ts';
import type { AuditEvent } from '../../src/audit/event.ts';
import { uuidv7 } from '../../src/audit/id.ts';

const event = (n: number): AuditEvent => ({ id: uuidv7(), time: n, kind: 'token.issued', decision: 'allow', reason: 'ok' });

describe('batching audit sink: store down', () => {
  it('counts the events a failed flush cannot put back within max_queue', async () => {
    let fail!: (e: Error) => void;
    const sink = new BatchingAuditSink(
      { write: () => new Promise<void>((_, reject) => (fail = reject)) },
      { flushIntervalMs: 60_000, maxBatch: 100, maxQueue: 3, onError: () => {} },
    );
    for (let i = 0; i < 3; i++) sink.push(event(i));
    const flushing = sink.flush();
    // While the store hangs, the queue fills up again, and one more is dropped at once.
    for (let i = 3; i < 7; i++) sink.push(event(i));
    assert.equal(sink.dropped, 1);
    fail(new Error('store down'));
    await flushing;
    // 3 in the failed batch + 3 queued meanwhile, room for 3: 3 more dropped.
    assert.equal(sink.depth, 3);
    assert.equal(sink.dropped, 4);
    assert.equal(sink.depth + sink.dropped, 7, 'every event is either kept or counted');
  });
});
