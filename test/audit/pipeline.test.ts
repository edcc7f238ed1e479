import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.ts';
import { uuidv7 } from '../../src/audit/id.ts';
import { createAuditPipeline } from '../../src/audit/pipeline.ts';
import { createJsonLinesSink } from '../../src/audit/sinks/jsonl.ts';
import { MemoryAuditSink } from '../../src/audit/sinks/memory.ts';

const event = (n: number): AuditEvent => ({ id: uuidv7(), time: n, kind: 'gateway.request', decision: 'allow', reason: 'ok' });

describe('uuidv7', () => {
  it('is a version 7, variant 10 UUID carrying the time', () => {
    const id = uuidv7(0x0192b0c46f4e);
    assert.match(id, /^0192b0c4-6f4e-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
  it('sorts in creation order within a millisecond', () => {
    const ids = Array.from({ length: 5000 }, () => uuidv7(1_700_000_000_000));
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('audit pipeline', () => {
  it('writes batches off the request path and flushes on close', async () => {
    const sink = new MemoryAuditSink();
    const p = createAuditPipeline({ sinks: [sink], batchSize: 10, flushIntervalMs: 60_000 });
    for (let i = 0; i < 25; i++) p.emit(event(i));
    assert.equal(sink.events.length, 0, 'emit never writes synchronously');
    await sink.waitFor(() => true, 20);
    await p.close();
    assert.equal(sink.events.length, 25);
    assert.deepEqual(
      sink.events.map((e) => e.time),
      Array.from({ length: 25 }, (_, i) => i),
    );
  });
  it('drops and counts beyond the queue bound, and survives a failing sink', async () => {
    const errors: number[] = [];
    const failing = { write: () => Promise.reject(new Error('disk full')) };
    const good = new MemoryAuditSink();
    const p = createAuditPipeline({
      sinks: [failing, good],
      batchSize: 100,
      maxQueue: 3,
      flushIntervalMs: 60_000,
      onError: (_e, i, n) => errors.push(i, n),
    });
    for (let i = 0; i < 5; i++) p.emit(event(i));
    assert.equal(p.stats.dropped, 2);
    await p.close();
    assert.equal(good.events.length, 3);
    assert.deepEqual(errors, [0, 3]);
    assert.equal(p.stats.failed, 3);
  });
  it('a reserved slot keeps its event when the queue filled after it was reserved; events without a slot are dropped first', async () => {
    const sink = new MemoryAuditSink();
    let held = 0;
    const p = createAuditPipeline({ sinks: [sink], batchSize: 100, maxQueue: 3, flushIntervalMs: 60_000, heldElsewhere: () => held });
    assert.equal(p.reserve(), true, 'the slow request is admitted while there is room');
    p.emit(event(1));
    held = 1; // a sink holds one event it refused
    assert.equal(p.full, true, 'one queued, one reserved, one held elsewhere: max_queue');
    assert.equal(p.reserve(), false, 'no slot for the next request: it is refused');
    p.emit(event(2));
    assert.equal(p.stats.dropped, 1, 'an event without a slot does not take the reserved one');
    p.emit(event(3), true);
    assert.equal(p.stats.dropped, 1, 'the reserved event is kept');
    assert.equal(p.stats.reserved, 0);
    assert.equal(p.reserve(), false);
    held = 0;
    assert.equal(p.reserve(), true);
    p.release();
    assert.equal(p.stats.reserved, 0, 'a slot given back');
    await p.close();
    assert.deepEqual(
      sink.events.map((e) => e.time),
      [1, 3],
    );
  });
  it('appends JSON lines to a file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-'));
    try {
      const file = join(dir, 'audit.jsonl');
      const sink = createJsonLinesSink({ file });
      await sink.write([event(1), event(2)]);
      await sink.close();
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.deepEqual(
        lines.map((l) => l.time),
        [1, 2],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
