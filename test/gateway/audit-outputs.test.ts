/**
 * The gateway's audit outputs side by side: `audit.file` (or stdout) that cannot be written must not
 * cut short the write to the store. The batch is over only when every output has answered, so a
 * shutdown does not close the store under a write still running, and writes never pile up beside
 * one another while the queue looks empty.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AuditEvent, AuditSink } from '../../src/audit/event.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { createGateway } from '../../src/gateway/gateway.ts';
import { until } from '../helpers/net.ts';
import { baseConfig, capturedLog, parse, silent } from './helpers.ts';

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
      // Nothing in flight: the drain timeout bounds only the audit flush (300 ms of store writes).
      await gateway.close({ drainTimeoutMs: 5000 });
      assert.equal(store.events.length, 30, 'every queued event reached the store before close() resolved');
      assert.equal(store.most, 1, 'one batch at a time, as with a healthy file');
      assert.equal(gateway.audit.stats.failed, 30, 'the file failures are still counted');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway audit outputs: a symlink planted at audit.file', () => {
  it('attack: the gateway appends nothing to the file the link points at; each refused batch is counted and logged with its errno code (ELOOP), the store still gets every event', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-out-'));
    try {
      const target = join(dir, 'tessera.yaml');
      writeFileSync(target, 'issuer: https://tokens.example\n');
      symlinkSync(target, join(dir, 'audit.jsonl'));
      const { store, sink } = slowStore(0);
      const log = capturedLog();
      const gateway = createGateway(
        parse({
          ...baseConfig(),
          audit: { file: join(dir, 'audit.jsonl'), batch_size: 10 },
          gateway: { routes: [{ id: 'pub', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' as const }] },
        }),
        { logger: log.logger, auditSinks: [sink] },
      );
      for (let i = 0; i < 5; i++) gateway.audit.emit(event(i));
      await gateway.close({ drainTimeoutMs: 5000 });
      assert.equal(readFileSync(target, 'utf8'), 'issuer: https://tokens.example\n', 'the link target is untouched');
      assert.equal(store.events.length, 5);
      assert.equal(gateway.audit.stats.failed, 5);
      const failed = log.lines.filter((l) => l.event === 'audit_write_failed');
      assert.equal(failed.length, 1);
      assert.equal(failed[0]?.code, 'ELOOP', 'the operator is told why, not only "Error"');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * `audit.file` deleted, or its directory removed, while the gateway runs, with no SIGHUP after: the
 * next batch goes to a new file at the path (before, every later event went on into the deleted
 * file, lost, with nothing said). One warning line says so, without any event's content.
 */
describe('gateway audit outputs: audit.file deleted while the gateway runs', () => {
  const ids = (file: string): string[] => {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return [];
    }
    return text
      .trimEnd()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as AuditEvent).id);
  };
  const config = (file: string, audit: Record<string, unknown> = {}) =>
    parse({
      ...baseConfig(),
      audit: { file, batch_size: 10, flush_interval: '50ms', ...audit },
      gateway: { routes: [{ id: 'pub', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' as const }] },
    });

  it('the events after the deletion are in a new file at audit.file, once each; one audit_file_reopened warning, no event content in it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-out-'));
    try {
      const file = join(dir, 'audit.jsonl');
      const log = capturedLog();
      const { store, sink } = slowStore(0);
      const gateway = createGateway(config(file), { logger: log.logger, auditSinks: [sink] });
      try {
        for (let i = 0; i < 3; i++) gateway.audit.emit(event(i));
        await gateway.audit.flush();
        assert.deepEqual(ids(file), ['e0', 'e1', 'e2']);
        rmSync(file);
        for (let i = 3; i < 6; i++) gateway.audit.emit(event(i));
        await gateway.audit.flush();
        await until(() => ids(file).length >= 3, 5000);
        assert.deepEqual(ids(file), ['e3', 'e4', 'e5']);
        assert.equal(statSync(file).mode & 0o777, 0o600);
        assert.equal(store.events.length, 6, 'the store got every event too');
      } finally {
        await gateway.close({ drainTimeoutMs: 1000 });
      }
      const reopened = log.lines.filter((l) => l.event === 'audit_file_reopened');
      assert.equal(reopened.length, 1);
      assert.equal(reopened[0]?.level, 40, 'a warning');
      assert.equal(reopened[0]?.output, 'file');
      assert.equal(reopened[0]?.msg, 'audit file was deleted or moved; reopened');
      assert.doesNotMatch(JSON.stringify(reopened[0]), /"e\d"|gateway\.request/, 'no event content in the line');
      assert.equal(log.lines.filter((l) => l.event === 'audit_write_failed').length, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('on_queue_full: refuse, its directory removed too: the reopen fails, the batch is kept and written to the new file once the directory is back, none lost or written twice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-out-'));
    try {
      const logs = join(dir, 'logs');
      mkdirSync(logs);
      const file = join(logs, 'audit.jsonl');
      const log = capturedLog();
      const gateway = createGateway(config(file, { on_queue_full: 'refuse' }), { logger: log.logger, auditSinks: [] });
      try {
        for (let i = 0; i < 3; i++) gateway.audit.emit(event(i));
        await gateway.audit.flush();
        assert.deepEqual(ids(file), ['e0', 'e1', 'e2']);
        rmSync(logs, { recursive: true });
        for (let i = 3; i < 6; i++) gateway.audit.emit(event(i));
        await gateway.audit.flush();
        // Before: written into the deleted file and taken as written.
        await until(() => log.lines.some((l) => l.event === 'audit_write_failed'), 5000);
        assert.equal(log.lines.find((l) => l.event === 'audit_write_failed')?.code, 'ENOENT');
        mkdirSync(logs);
        // Kept, and tried again every flush_interval: written once the directory is back.
        await until(() => ids(file).length >= 3, 5000);
        for (let i = 6; i < 8; i++) gateway.audit.emit(event(i));
        await gateway.audit.flush();
        await until(() => ids(file).length >= 5, 5000);
        assert.deepEqual(ids(file), ['e3', 'e4', 'e5', 'e6', 'e7']);
      } finally {
        await gateway.close({ drainTimeoutMs: 1000 });
      }
      assert.equal(log.lines.filter((l) => l.event === 'audit_file_reopened').length, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A gateway with one public route whose audit goes to `file` as well. */
const publicRouteWithAuditFile = (file: string) =>
  parse({
    ...baseConfig(),
    audit: { file },
    gateway: { routes: [{ id: 'pub', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' as const }] },
  });

describe('gateway audit outputs: an audit.file others may write', () => {
  it('attack: an existing audit file writable by its group or by every user (forged or erased events) is refused at start and on reload, naming audit.file and the chmod to run; 0644 is accepted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-mode-'));
    try {
      const file = join(dir, 'audit.jsonl');
      const config = () => publicRouteWithAuditFile(file);
      writeFileSync(file, '');
      for (const mode of [0o666, 0o620]) {
        chmodSync(file, mode);
        assert.throws(
          () => createGateway(config(), { logger: silent, auditSinks: [] }),
          (e: unknown) =>
            e instanceof ConfigError &&
            e.issues.length === 1 &&
            e.issues[0]?.path === 'audit.file' &&
            e.issues[0].message.includes(`mode 0${mode.toString(8)}`) &&
            e.issues[0].message.endsWith(`run chmod go-w ${file}`),
        );
      }
      chmodSync(file, 0o644);
      const gateway = createGateway(config(), { logger: silent, auditSinks: [] });
      try {
        chmodSync(file, 0o646);
        const refused = gateway.reload(config());
        assert.equal(refused.ok, false);
        assert.match(refused.ok ? '' : refused.error.message, /audit\.file: .* is writable by every user \(mode 0646\)/);
        assert.equal(statSync(file).mode & 0o777, 0o646, 'the file is left as it is, not silently changed');
        chmodSync(file, 0o600);
        assert.equal(gateway.reload(config()).ok, true);
      } finally {
        await gateway.close({ drainTimeoutMs: 1000 });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway audit outputs: an audit.file another user owns', () => {
  it('attack: an existing audit file owned by another user (mode 0600 or 0644: its owner can rewrite or truncate the trail) is refused at start and on reload, naming audit.file, the owner and the chown to run', {
    skip: process.geteuid?.() !== 0 && 'needs root: only root can give a file to another user (chown)',
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-owner-'));
    try {
      const file = join(dir, 'audit.jsonl');
      const config = () => publicRouteWithAuditFile(file);
      writeFileSync(file, '');
      chownSync(file, 65534, 65534);
      for (const mode of [0o600, 0o644]) {
        chmodSync(file, mode);
        assert.throws(
          () => createGateway(config(), { logger: silent, auditSinks: [] }),
          (e: unknown) =>
            e instanceof ConfigError &&
            e.issues.length === 1 &&
            e.issues[0]?.path === 'audit.file' &&
            e.issues[0].message.startsWith(`${file} belongs to uid 65534, not to the user Tessera runs as (uid 0)`) &&
            e.issues[0].message.includes(`run chown 0 ${file}, or remove it`),
        );
      }
      chownSync(file, 0, 0);
      const gateway = createGateway(config(), { logger: silent, auditSinks: [] });
      try {
        chownSync(file, 65534, 65534);
        const refused = gateway.reload(config());
        assert.equal(refused.ok, false);
        assert.match(refused.ok ? '' : refused.error.message, /audit\.file: .* belongs to uid 65534/);
        assert.equal(statSync(file).uid, 65534, 'the file is left as it is, not silently changed');
        chownSync(file, 0, 0);
        assert.equal(gateway.reload(config()).ok, true);
      } finally {
        await gateway.close({ drainTimeoutMs: 1000 });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway audit outputs: the store down', () => {
  const config = (audit: Record<string, unknown>) =>
    parse({ ...baseConfig(), audit, gateway: { routes: [{ id: 'pub', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' as const }] } });

  it('store down for a moment: the gateway batches it refused are written once it is back, none lost', async () => {
    let down = true;
    const written: AuditEvent[] = [];
    const sink: AuditSink = {
      write: async (events) => {
        if (down) throw new Error('store down');
        written.push(...events);
      },
    };
    const gateway = createGateway(config({ flush_interval: '20ms', batch_size: 10 }), { logger: silent, auditSinks: [sink] });
    try {
      for (let i = 0; i < 25; i++) gateway.audit.emit(event(i));
      await gateway.audit.flush();
      assert.equal(written.length, 0);
      down = false;
      const end = Date.now() + 3000;
      while (written.length < 25 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        written.map((e) => e.id),
        Array.from({ length: 25 }, (_, i) => `e${i}`),
      );
      const text = await gateway.registry.metrics();
      assert.match(text, /^tessera_audit_events_dropped_total 0$/m);
      assert.doesNotMatch(text, /^tessera_audit_write_failures_total 0$/m, 'the refused writes are counted');
    } finally {
      await gateway.close({ drainTimeoutMs: 100 });
    }
  });

  it('store down for several flushes: tessera_audit_write_failures_total counts each refused event once, not once per retry', async () => {
    let down = true;
    let attempts = 0;
    const written: AuditEvent[] = [];
    const sink: AuditSink = {
      write: async (events) => {
        attempts++;
        if (down) throw new Error('store down');
        written.push(...events);
      },
    };
    const failures = async () => {
      const m = /^tessera_audit_write_failures_total (\d+)$/m.exec(await gateway.registry.metrics());
      return Number(m?.[1]);
    };
    const until = async (done: () => boolean) => {
      const end = Date.now() + 3000;
      while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      assert.ok(done(), `timed out (attempts ${attempts}, written ${written.length})`);
    };
    const gateway = createGateway(config({ flush_interval: '20ms', batch_size: 100 }), { logger: silent, auditSinks: [sink] });
    try {
      for (let i = 0; i < 10; i++) gateway.audit.emit(event(i));
      await gateway.audit.flush();
      await until(() => attempts >= 3);
      assert.equal(await failures(), 10, 'three refused attempts of the same 10 events count 10');
      // 5 more events arrive during the outage: they count when first refused, the 10 do not again.
      for (let i = 10; i < 15; i++) gateway.audit.emit(event(i));
      await gateway.audit.flush();
      const before = attempts;
      await until(() => attempts >= before + 3);
      assert.equal(await failures(), 15);
      down = false;
      await until(() => written.length === 15);
      assert.equal(await failures(), 15, 'the store is back: the count stays');
      for (let i = 15; i < 18; i++) gateway.audit.emit(event(i));
      await gateway.audit.flush();
      await until(() => written.length === 18);
      assert.equal(await failures(), 15, 'events written at the first attempt are no failures');
      assert.match(await gateway.registry.metrics(), /^tessera_audit_events_dropped_total 0$/m);
    } finally {
      await gateway.close({ drainTimeoutMs: 100 });
    }
  });

  it('store down past max_queue: what the retry queue cannot hold is dropped and counted, not held without bound', async () => {
    const sink: AuditSink = { write: () => Promise.reject(new Error('store down')) };
    const gateway = createGateway(config({ flush_interval: '10s', batch_size: 5, max_queue: 5 }), { logger: silent, auditSinks: [sink] });
    try {
      for (let i = 0; i < 5; i++) gateway.audit.emit(event(i));
      await gateway.audit.flush();
      for (let i = 5; i < 12; i++) gateway.audit.emit(event(i));
      await gateway.audit.flush();
      const text = await gateway.registry.metrics();
      assert.match(text, /^tessera_audit_events_dropped_total 7$/m, text);
    } finally {
      await gateway.close({ drainTimeoutMs: 10 });
    }
  });

  it('store down at shutdown: close() retries within drain_timeout, then logs once how many events are lost', async () => {
    const { lines: out, logger } = capturedLog();
    const sink: AuditSink = { write: () => Promise.reject(new Error('store down')) };
    const gateway = createGateway(config({ flush_interval: '20ms' }), { logger, auditSinks: [sink] });
    for (let i = 0; i < 4; i++) gateway.audit.emit(event(i));
    const started = performance.now();
    await gateway.close({ drainTimeoutMs: 200 });
    assert.ok(performance.now() - started < 2000);
    const lost = out.filter((l) => l.event === 'audit_events_lost');
    assert.equal(lost.length, 1, JSON.stringify(out));
    assert.equal(lost[0]?.events, 4);
  });

  it('hung audit output (an NFS hang): close() gives up after drain_timeout and logs how many events were not written', async () => {
    const { lines: out, logger } = capturedLog();
    const hung: AuditSink = { write: () => new Promise<void>(() => {}) };
    const gateway = createGateway(config({ batch_size: 3 }), { logger, auditSinks: [hung] });
    for (let i = 0; i < 5; i++) gateway.audit.emit(event(i));
    const outcome = await Promise.race([
      gateway.close({ drainTimeoutMs: 100 }).then(() => 'closed'),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 3000)),
    ]);
    assert.equal(outcome, 'closed');
    assert.equal(out.find((l) => l.event === 'audit_events_lost')?.events, 5, JSON.stringify(out));
  });
});
