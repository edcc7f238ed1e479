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

describe('batching audit sink: store refusing at once', () => {
  it('retries on its timer, not once per event pushed (no store or log storm during an outage)', async () => {
    let attempts = 0;
    let errors = 0;
    const sink = new BatchingAuditSink(
      {
        write: async () => {
          attempts++;
          throw new Error('store down');
        },
      },
      { flushIntervalMs: 60_000, maxBatch: 10, maxQueue: 1000, onError: () => errors++ },
    );
    for (let i = 0; i < 10; i++) sink.push(event(i));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(attempts, 1, 'a full batch is written at once');
    // Every request during the outage pushes an event: none of them may start a write of its own.
    for (let i = 10; i < 500; i++) {
      sink.push(event(i));
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(attempts, 1, 'the next attempt waits for the timer');
    assert.equal(errors, 1);
    assert.equal(sink.depth, 500, 'nothing lost while the queue has room');
    await sink.flush();
    assert.equal(attempts, 2, 'an explicit flush (shutdown) still tries');
  });
});

describe('batching audit sink: failed events', () => {
  it('counts each event a write refused once, however many attempts refuse it', async () => {
    let down = true;
    const sink = new BatchingAuditSink(
      {
        write: async () => {
          if (down) throw new Error('store down');
        },
      },
      { flushIntervalMs: 60_000, maxBatch: 100, maxQueue: 8, onError: () => {} },
    );
    for (let i = 0; i < 4; i++) sink.push(event(i));
    await sink.flush();
    await sink.flush();
    await sink.flush();
    assert.equal(sink.failed, 4, 'three attempts at the same 4 events');
    for (let i = 4; i < 10; i++) sink.push(event(i)); // 4 fit, 2 dropped
    await sink.flush();
    assert.equal(sink.failed, 8, 'the 4 new ones, once');
    assert.equal(sink.dropped, 2);
    down = false;
    await sink.flush();
    for (let i = 0; i < 3; i++) sink.push(event(i));
    await sink.flush();
    assert.equal(sink.failed, 8);
    assert.equal(sink.depth, 0);
  });
});

describe('batching audit sink: busy store', () => {
  it('a batch that fills while a write is under way is written as soon as that write is done', async () => {
    const writes: number[] = [];
    let release!: () => void;
    const sink = new BatchingAuditSink(
      {
        write: (events) => {
          writes.push(events.length);
          return writes.length === 1 ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve();
        },
      },
      { flushIntervalMs: 60_000, maxBatch: 10 },
    );
    for (let i = 0; i < 10; i++) sink.push(event(i));
    for (let i = 10; i < 25; i++) sink.push(event(i));
    assert.deepEqual(writes, [10]);
    release();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, [10, 15], 'without waiting for the 60 s timer');
    assert.equal(sink.depth, 0);
  });
});

describe('batching audit sink: close()', () => {
  it('store down at shutdown: close() tries again every flush interval within its timeout, instead of once', async () => {
    const written: AuditEvent[] = [];
    let attempts = 0;
    const sink = new BatchingAuditSink(
      {
        write: async (events) => {
          if (++attempts <= 3) throw new Error('store down');
          written.push(...events);
        },
      },
      { flushIntervalMs: 20, maxBatch: 100, onError: () => {} },
    );
    for (let i = 0; i < 5; i++) sink.push(event(i));
    const lost = await sink.close({ timeoutMs: 5000 });
    assert.equal(written.length, 5, 'written once the store was back');
    assert.equal(lost, 0);
    assert.equal(attempts, 4);
  });

  it('store down for longer than the timeout: close() gives up then and says how many events were not written', async () => {
    let errors = 0;
    const sink = new BatchingAuditSink(
      {
        write: async () => {
          throw new Error('store down');
        },
      },
      { flushIntervalMs: 20, maxBatch: 100, onError: () => errors++ },
    );
    for (let i = 0; i < 5; i++) sink.push(event(i));
    const started = performance.now();
    const lost = await sink.close({ timeoutMs: 200 });
    assert.ok(performance.now() - started < 1000, `gave up after ${Math.round(performance.now() - started)} ms`);
    assert.equal(lost, 5);
    assert.equal(errors, 0, 'the retries at shutdown are not each reported: the caller reports the loss once');
  });

  it('hung store write (an NFS hang): close() does not wait for it past its timeout, and counts its events as not written', async () => {
    const sink = new BatchingAuditSink({ write: () => new Promise<void>(() => {}) }, { flushIntervalMs: 20, maxBatch: 3 });
    for (let i = 0; i < 5; i++) sink.push(event(i)); // 3 in the hung write, 2 queued
    const closed = sink.close({ timeoutMs: 100 });
    const outcome = await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve('hung'), 3000))]);
    assert.equal(outcome, 5, 'close() resolved with every event not written');
  });
});

describe('batching audit sink: failClosed (audit.on_queue_full: refuse)', () => {
  it('a reserved slot keeps its event however full the queue became after it was reserved; events without one never take it, nor push a refused write past max_queue', async () => {
    let fail!: (e: Error) => void;
    const sink = new BatchingAuditSink(
      { write: () => new Promise<void>((_, reject) => (fail = reject)) },
      { flushIntervalMs: 60_000, maxBatch: 100, maxQueue: 4, failClosed: true, onError: () => {} },
    );
    const slots = sink.reserve(2);
    assert.ok(slots, 'room for two');
    sink.push(event(1));
    const flushing = sink.flush();
    // One being written, two reserved: one place left for an event without a slot.
    sink.push(event(2));
    sink.push(event(3));
    assert.equal(sink.dropped, 1, 'the events being written count');
    assert.equal(sink.full, true);
    assert.equal(sink.reserve(1), undefined, 'no room for another request');
    slots.push(event(4));
    assert.equal(sink.dropped, 1, 'the reserved event is kept');
    slots.release();
    assert.equal(sink.reserved, 0, 'the slot not used given back');
    slots.release();
    assert.equal(sink.reserved, 0, 'release is idempotent');
    fail(new Error('store down'));
    await flushing;
    assert.equal(sink.depth, 3, 'the refused batch is kept with the others, nothing trimmed');
    assert.equal(sink.dropped, 1);
    assert.ok(sink.reserve(1), 'the slot given back is free again');
  });

  it('an event kept (a committed revocation’s) goes past max_queue, is never dropped, not even by a refused write, and holds back every reservation until written; an event dropped is told to onDropped', async () => {
    let fail!: (e: Error) => void;
    const dropped: string[] = [];
    const sink = new BatchingAuditSink(
      { write: () => new Promise<void>((_, reject) => (fail = reject)) },
      { flushIntervalMs: 60_000, maxBatch: 100, maxQueue: 3, failClosed: true, onError: () => {}, onDropped: (e) => dropped.push(e.kind) },
    );
    sink.push(event(1));
    sink.push(event(2));
    for (let i = 3; i <= 5; i++) sink.keep({ ...event(i), kind: 'grant.revoked' });
    assert.equal(sink.held, 5, 'kept past max_queue: 3 (under its ceiling, 6)');
    assert.equal(sink.reserve(1), undefined, 'no request admitted while past it');
    sink.push({ ...event(6), kind: 'key.rotated' });
    assert.deepEqual(dropped, ['key.rotated'], 'an event without a slot is dropped, and told');
    const flushing = sink.flush();
    fail(new Error('store down'));
    await flushing;
    assert.equal(sink.depth, 5, 'the refused batch is kept whole for the next attempt');
    assert.equal(sink.dropped, 1);
  });

  it('attack: keep() is bounded: a revocation cascade past twice max_queue (events held and slots reserved) is dropped, counted and told to onDropped, never held without end; room again once the store takes the queue', async () => {
    let fail!: (e: Error) => void;
    let succeed = false;
    const dropped: string[] = [];
    const sink = new BatchingAuditSink(
      {
        write: () => (succeed ? Promise.resolve() : new Promise<void>((_, reject) => (fail = reject))),
      },
      { flushIntervalMs: 60_000, maxBatch: 1000, maxQueue: 3, failClosed: true, onError: () => {}, onDropped: (e) => dropped.push(e.kind) },
    );
    const slots = sink.reserve(1);
    assert.ok(slots);
    sink.push(event(1));
    // A hostile cascade: far more grants revoked than the queue can hold.
    for (let i = 0; i < 100; i++) sink.keep({ ...event(100 + i), kind: 'grant.revoked' });
    assert.equal(sink.held, 5, 'kept up to twice max_queue: 6, the slot reserved counted');
    assert.equal(sink.dropped, 96);
    assert.equal(dropped.length, 96, 'each drop told (the audit_events_dropped line)');
    assert.ok(dropped.every((k) => k === 'grant.revoked'));
    slots.push(event(2));
    assert.equal(sink.held, 6, 'the reserved slot still takes its event');
    const flushing = sink.flush();
    fail(new Error('store down'));
    await flushing;
    assert.equal(sink.depth, 6, 'a refused write keeps what was kept, and adds nothing');
    assert.equal(sink.dropped, 96);
    succeed = true;
    await sink.flush();
    sink.keep({ ...event(300), kind: 'grant.revoked' });
    assert.equal(sink.held, 1, 'kept again once the store took the queue');
    assert.equal(sink.dropped, 96);
  });
});
