/**
 * The gateway's audit outputs side by side: `audit.file` (or stdout) that cannot be written must not
 * cut short the write to the store. The batch is over only when every output has answered, so a
 * shutdown does not close the store under a write still running, and writes never pile up beside
 * one another while the queue looks empty.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AuditEvent, AuditSink } from '../../src/audit/event.ts';
import { createGateway } from '../../src/gateway/gateway.ts';
import { baseConfig, parse, silent } from './helpers.ts';

/** A store that takes `ms` to write a batch, and records how many writes ran at once. */
function slowStore(ms: number) {
  const store = { events: [] as AuditEvent[], running: 0, most: 0 };
  const sink: AuditSink = {
    async write(events) {
      store.running++;
      store.most = Math.max(store.most, store.running);
      await new Promise((resolve) => setTimeout(resolve, ms));
      store.events.push(...events);
      store.running--;
    },
  };
  return { store, sink };
}

const event = (n: number): AuditEvent => ({ id: `e${n}`, time: n, kind: 'gateway.request', decision: 'allow', reason: 'ok' });

describe('gateway audit outputs: a broken audit.file', () => {
  it('a failing audit.file does not let close() end before the store has written the last batch', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-out-'));
    try {
      // The file's directory is a file: every write to audit.file fails (ENOTDIR), at once.
      writeFileSync(join(dir, 'not-a-dir'), '');
      const { store, sink } = slowStore(100);
      const gateway = createGateway(
        parse({
          ...baseConfig(),
          audit: { file: join(dir, 'not-a-dir', 'audit.jsonl'), batch_size: 10 },
          gateway: { routes: [{ id: 'pub', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' as const }] },
        }),
        { logger: silent, auditSinks: [sink] },
      );
      for (let i = 0; i < 30; i++) gateway.audit.emit(event(i));
      await gateway.close({ drainTimeoutMs: 10 });
      assert.equal(store.events.length, 30, 'every queued event reached the store before close() resolved');
      assert.equal(store.most, 1, 'one batch at a time, as with a healthy file');
      assert.equal(gateway.audit.stats.failed, 30, 'the file failures are still counted');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
