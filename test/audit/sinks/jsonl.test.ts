/**
 * The JSON-lines sink under attack and under failure: a value a caller chose cannot split a line,
 * and a file that could not be written once (disk full, its directory gone) is written again once
 * the cause is gone, without waiting for a reload.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { uuidv7 } from '../../../src/audit/id.ts';
import { createJsonLinesSink } from '../../../src/audit/sinks/jsonl.ts';

const event = (fields: Partial<AuditEvent> = {}): AuditEvent => ({
  id: uuidv7(),
  time: 1,
  kind: 'gateway.request',
  decision: 'deny',
  reason: 'token_invalid',
  ...fields,
});

/** Run `fn` with a fresh temporary directory, removed afterwards whatever the outcome. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-jsonl-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('JSON-lines sink: line injection', () => {
  it('a line separator (U+2028, U+2029, NEL), CR, LF, an ANSI or C1 escape or a bidi override in a field stays inside its one line', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => (text += c.toString('utf8')));
    const sink = createJsonLinesSink({ stream: out });
    const forged = 'agent\u2028{"kind":"token.issued"}\u2029\r\n{"decision":"allow"}\u001b[2K\u0085\u009b2J\u202eevil';
    await sink.write([event({ subject: forged, path: `/x/${forged}`, tool: forged }), event()]);
    // Every line splitter (JavaScript's, Python's str.splitlines, editors and log shippers) sees two lines.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: line breaks are what this counts
    assert.equal(text.split(/\r\n|[\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/).length, 3);
    const lines = text.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.doesNotMatch(
      text,
      // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this looks for
      /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/,
      'no raw control, separator or bidi override in the file: `tail -f` in a terminal shows it as it is',
    );
    const first = JSON.parse(lines[0] as string) as AuditEvent;
    assert.equal(first.subject, forged, 'the value reads back as it was');
  });
});

describe('JSON-lines sink: a file that could not be written', () => {
  it('is opened again for the next batch once the cause is gone (no reload needed)', () =>
    inTempDir(async (dir) => {
      const parent = join(dir, 'logs');
      writeFileSync(parent, '');
      const file = join(parent, 'audit.jsonl');
      const sink = createJsonLinesSink({ file });
      await assert.rejects(sink.write([event({ time: 1 })]), { code: 'ENOTDIR' });
      await assert.rejects(sink.write([event({ time: 2 })]), { code: 'ENOTDIR' }, 'still failing: the same cause');
      // The operator fixes it (frees the disk, creates the directory).
      rmSync(parent);
      mkdirSync(parent);
      await sink.write([event({ time: 3 })]);
      await sink.close();
      const times = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as AuditEvent).time);
      assert.deepEqual(times, [3]);
    }));
  it('a disk that is full fails the batch with ENOSPC, and the next batch is tried again', async () => {
    const sink = createJsonLinesSink({ file: '/dev/full' });
    await assert.rejects(sink.write([event()]), { code: 'ENOSPC' });
    // Before: ERR_STREAM_DESTROYED for ever, whatever the disk did meanwhile.
    await assert.rejects(sink.write([event()]), { code: 'ENOSPC' });
    await sink.close();
  });
});

/**
 * A real partial write: a process whose file size limit is 1 KiB (`ulimit -S -f 1`; Node ignores
 * SIGXFSZ) writes 4 events of about 350 bytes: the kernel takes the first 1024 bytes, then EFBIG.
 * `between` runs next (a rotation, or the limit raised: prlimit on the process itself), then the
 * same batch, one newer event after it, is written again, as audit.on_queue_full: refuse keeps it.
 */
function partialWriteThen(file: string, between: string): { first: string; second: string } {
  const sink = new URL('../../../src/audit/sinks/jsonl.ts', import.meta.url).href;
  const script = `
    import { execFileSync } from 'node:child_process';
    import { renameSync, truncateSync } from 'node:fs';
    import { createJsonLinesSink } from ${JSON.stringify(sink)};
    const file = ${JSON.stringify(file)};
    const unlimited = () => execFileSync('prlimit', ['--pid', String(process.pid), '--fsize=unlimited']);
    const ev = (n) => ({ id: 'e' + n, time: n, kind: 'gateway.request', decision: 'allow', reason: 'ok', path: '/' + String(n).repeat(250) });
    const out = createJsonLinesSink({ file });
    const batch = [1, 2, 3, 4].map(ev);
    const first = await out.write(batch).then(() => 'written', (e) => e.code);
    ${between}
    const second = await out.write([...batch, ev(5)]).then(() => 'written', (e) => e.code);
    await out.close();
    console.log(JSON.stringify({ first, second }));
  `;
  return JSON.parse(
    execFileSync('bash', ['-c', 'ulimit -S -f 1; exec "$0" --input-type=module -e "$1"', process.execPath, script], { encoding: 'utf8' }),
  ) as { first: string; second: string };
}

/** The ids of a file's lines, each of which must be one whole JSON event. */
const ids = (text: string): string[] => {
  assert.ok(text.endsWith('\n'), 'the file ends with a whole line');
  return text
    .trimEnd()
    .split('\n')
    .map((l) => (JSON.parse(l) as { id: string }).id);
};

describe('JSON-lines sink: a batch written again after a write that took part of it', () => {
  it('to the same file (the cause gone): goes on where the refused write stopped, no line written twice, the cut line completed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-jsonl-'));
    const file = join(dir, 'audit.jsonl');
    try {
      assert.deepEqual(partialWriteThen(file, 'unlimited();'), { first: 'EFBIG', second: 'written' });
      assert.deepEqual(ids(readFileSync(file, 'utf8')), ['e1', 'e2', 'e3', 'e4', 'e5']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('after a rotation (the file renamed, a new one opened): the new file holds every event as whole lines; the old one ends with the cut start of a line', () => {
    // Log shippers (Filebeat, Vector, fluent-bit) read each file on its own: the rest of a cut
    // line at the top of the new file would be whole in neither.
    const dir = mkdtempSync(join(tmpdir(), 'tessera-jsonl-'));
    const file = join(dir, 'audit.jsonl');
    try {
      assert.deepEqual(partialWriteThen(file, `renameSync(file, file + '.1'); unlimited();`), { first: 'EFBIG', second: 'written' });
      const old = readFileSync(`${file}.1`, 'utf8');
      assert.equal(old.length, 1024, 'the refused write took part of the batch');
      assert.ok(!old.endsWith('\n'), 'the old file ends with a cut line, no newline after it');
      const whole = old.slice(0, old.lastIndexOf('\n') + 1);
      assert.deepEqual(ids(whole), ['e1', 'e2', 'e3'], 'the lines before the cut one are whole');
      assert.deepEqual(ids(readFileSync(file, 'utf8')), ['e1', 'e2', 'e3', 'e4', 'e5']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('to the same file emptied meanwhile (logrotate copytruncate): the batch is written whole, not from the middle of a line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-jsonl-'));
    const file = join(dir, 'audit.jsonl');
    try {
      assert.deepEqual(partialWriteThen(file, 'truncateSync(file, 0); unlimited();'), { first: 'EFBIG', second: 'written' });
      assert.deepEqual(ids(readFileSync(file, 'utf8')), ['e1', 'e2', 'e3', 'e4', 'e5']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('JSON-lines sink: a stream it does not own', () => {
  it('closed, it leaves no listener on the stream (a reload reopens audit.stdout on process.stdout each time)', async () => {
    const stream = new PassThrough();
    stream.resume();
    const before = stream.listenerCount('error');
    for (let i = 0; i < 20; i++) {
      const sink = createJsonLinesSink({ stream });
      await sink.write([event()]);
      await sink.close();
    }
    assert.equal(stream.listenerCount('error'), before);
    assert.equal(stream.writableEnded, false, 'the stream itself stays open');
  });
});

describe('JSON-lines sink: the file it opens', () => {
  it('is created mode 0600 (events name subjects, clients and addresses)', () =>
    inTempDir(async (dir) => {
      const file = join(dir, 'audit.jsonl');
      const sink = createJsonLinesSink({ file });
      await sink.write([event()]);
      await sink.close();
      assert.equal(statSync(file).mode & 0o777, 0o600);
    }));

  it('attack: a symlink planted at its path (to a file the gateway may write: a config, authorized_keys) is not followed; the write fails with ELOOP and the target is untouched', () =>
    inTempDir(async (dir) => {
      const target = join(dir, 'authorized_keys');
      writeFileSync(target, 'ssh-ed25519 AAAA owner\n', { mode: 0o600 });
      const file = join(dir, 'audit.jsonl');
      symlinkSync(target, file);
      const sink = createJsonLinesSink({ file });
      await assert.rejects(sink.write([event({ subject: 'ssh-ed25519 AAAA mallory' })]), { code: 'ELOOP' });
      await assert.rejects(sink.write([event()]), { code: 'ELOOP' }, 'reopened for the next batch: still refused');
      await sink.close();
      assert.equal(readFileSync(target, 'utf8'), 'ssh-ed25519 AAAA owner\n');
      assert.ok(lstatSync(file).isSymbolicLink(), 'the link is left for the operator to find');
      // The operator removes the link: the next batch goes to a file of its own.
      rmSync(file);
      const again = createJsonLinesSink({ file });
      await again.write([event({ time: 7 })]);
      await again.close();
      assert.equal((JSON.parse(readFileSync(file, 'utf8')) as AuditEvent).time, 7);
    }));
});

/**
 * A file deleted, or renamed away without a SIGHUP, while the sink has it open: the open descriptor
 * still writes, into a file no name reaches (deleted: lost once closed) or into the renamed one.
 * As nginx, pino and Envoy reopen their logs, the sink compares the file open with the one at its
 * path before each batch and opens the path again when they differ: the batch goes to the new file.
 */
describe('JSON-lines sink: its file deleted or moved while open', () => {
  const times = (text: string): number[] =>
    text
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as AuditEvent).time);

  it('deleted: the next batch is written to a new file at the path (mode 0600), said once, and the batches after it follow it there', () =>
    inTempDir(async (dir) => {
      const file = join(dir, 'audit.jsonl');
      let reopened = 0;
      const sink = createJsonLinesSink({ file }, { onReopened: () => reopened++ });
      await sink.write([event({ time: 1 }), event({ time: 2 })]);
      rmSync(file);
      await sink.write([event({ time: 3 })]);
      await sink.write([event({ time: 4 }), event({ time: 5 })]);
      await sink.close();
      assert.deepEqual(times(readFileSync(file, 'utf8')), [3, 4, 5], 'every event after the deletion, once each, in order');
      assert.equal(statSync(file).mode & 0o777, 0o600, 'created as the first one was');
      assert.equal(reopened, 1, 'said once, not once per batch');
    }));

  it('renamed away (no SIGHUP): the renamed file keeps the events written before, a new file at the path gets the later ones; none lost or written twice', () =>
    inTempDir(async (dir) => {
      const file = join(dir, 'audit.jsonl');
      let reopened = 0;
      const sink = createJsonLinesSink({ file }, { onReopened: () => reopened++ });
      await sink.write([event({ time: 1 }), event({ time: 2 })]);
      renameSync(file, `${file}.1`);
      await sink.write([event({ time: 3 })]);
      await sink.write([event({ time: 4 })]);
      await sink.close();
      assert.deepEqual(times(readFileSync(`${file}.1`, 'utf8')), [1, 2]);
      assert.deepEqual(times(readFileSync(file, 'utf8')), [3, 4]);
      assert.equal(reopened, 1);
    }));

  it('renamed away and another file created at the path (logrotate’s `create`): the later events go to that file', () =>
    inTempDir(async (dir) => {
      const file = join(dir, 'audit.jsonl');
      const sink = createJsonLinesSink({ file });
      await sink.write([event({ time: 1 })]);
      renameSync(file, `${file}.1`);
      writeFileSync(file, '', { mode: 0o600 });
      await sink.write([event({ time: 2 })]);
      await sink.close();
      assert.deepEqual(times(readFileSync(`${file}.1`, 'utf8')), [1]);
      assert.deepEqual(times(readFileSync(file, 'utf8')), [2]);
    }));

  it('attack: deleted and a world-writable file planted at the path: no event is written to it (AUDIT_FILE_WRITABLE, each batch failing) until it is chmod go-w, then the batch kept is', () =>
    inTempDir(async (dir) => {
      const file = join(dir, 'audit.jsonl');
      const sink = createJsonLinesSink({ file });
      await sink.write([event({ time: 1 })]);
      rmSync(file);
      writeFileSync(file, '');
      chmodSync(file, 0o666);
      await assert.rejects(sink.write([event({ time: 2 })]), {
        code: 'AUDIT_FILE_WRITABLE',
        message: /writable by every user \(mode 0666\); run chmod go-w/,
      });
      await assert.rejects(sink.write([event({ time: 2 })]), { code: 'AUDIT_FILE_WRITABLE' }, 'still refused: the same file');
      assert.equal(readFileSync(file, 'utf8'), '', 'nothing written to a file others can forge or erase');
      chmodSync(file, 0o644);
      await sink.write([event({ time: 2 })]);
      await sink.close();
      assert.deepEqual(times(readFileSync(file, 'utf8')), [2]);
    }));

  it(
    'attack: deleted and a file owned by another user planted at the path (mode 0600): no event is written to it (AUDIT_FILE_FOREIGN_OWNER, each batch failing) until it is chown’d to the user Tessera runs as, then the batch kept is',
    {
      skip: process.geteuid?.() !== 0 && 'needs root: only root can give a file to another user (chown) and still open it',
    },
    () =>
      inTempDir(async (dir) => {
        const file = join(dir, 'audit.jsonl');
        const sink = createJsonLinesSink({ file });
        await sink.write([event({ time: 1 })]);
        rmSync(file);
        // Another user's file: root opens it all the same, and its owner could rewrite or truncate it.
        writeFileSync(file, '', { mode: 0o600 });
        chownSync(file, 65534, 65534);
        await assert.rejects(sink.write([event({ time: 2 })]), {
          code: 'AUDIT_FILE_FOREIGN_OWNER',
          message: new RegExp(`^audit file ${file} belongs to uid 65534, not to the user Tessera runs as \\(uid 0\\); run chown 0 ${file}`),
        });
        await assert.rejects(sink.write([event({ time: 2 })]), { code: 'AUDIT_FILE_FOREIGN_OWNER' }, 'still refused: the same file');
        assert.equal(readFileSync(file, 'utf8'), '', 'nothing written to a file another user can rewrite or truncate');
        chownSync(file, 0, 0);
        await sink.write([event({ time: 2 })]);
        await sink.close();
        assert.deepEqual(times(readFileSync(file, 'utf8')), [2]);
      }),
  );

  it('left in place: no reopen, every batch appended to the same file', () =>
    inTempDir(async (dir) => {
      const file = join(dir, 'audit.jsonl');
      let reopened = 0;
      const sink = createJsonLinesSink({ file }, { onReopened: () => reopened++ });
      for (let t = 1; t <= 5; t++) await sink.write([event({ time: t })]);
      await sink.close();
      assert.deepEqual(times(readFileSync(file, 'utf8')), [1, 2, 3, 4, 5]);
      assert.equal(reopened, 0);
    }));

  it('its directory removed too: the reopen fails and so does the batch (ENOENT), not said reopened; the batch written again once the directory is back is in the new file, and the reopen said once then', () =>
    inTempDir(async (dir) => {
      const logs = join(dir, 'logs');
      mkdirSync(logs);
      const file = join(logs, 'audit.jsonl');
      let reopened = 0;
      const sink = createJsonLinesSink({ file }, { onReopened: () => reopened++ });
      await sink.write([event({ time: 1 })]);
      rmSync(logs, { recursive: true });
      const batch = [event({ time: 2 })];
      // Before: written into the deleted file, reported as written.
      await assert.rejects(sink.write(batch), { code: 'ENOENT' });
      assert.equal(reopened, 0, 'the new file could not be opened: not said reopened (the write failure says why)');
      await assert.rejects(sink.write(batch), { code: 'ENOENT' }, 'tried again: still no directory');
      assert.equal(reopened, 0);
      mkdirSync(logs);
      await sink.write(batch);
      assert.equal(reopened, 1, 'said once the new file is open');
      await sink.write([event({ time: 3 })]);
      await sink.close();
      assert.deepEqual(times(readFileSync(file, 'utf8')), [2, 3]);
      assert.equal(reopened, 1, 'once per reopen, not once per attempt or batch');
    }));
});
