/**
 * The file walk of `tessera scan`: what is opened must be what was looked at. A regular file
 * replaced by a FIFO between the two (anyone who can write to a log directory can do it) must be
 * skipped with a note, never hang the scan on an open that waits for a writer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { notFollowed, type ScanNote, scanPaths } from '../../src/scan/files.ts';

const JWS = 'eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-scan-files-'));
});
after(() => {
  // Before the fix an open of the FIFO is stuck waiting for a writer: give it one, so the test ends.
  try {
    closeSync(openSync(join(dir, 'b.log'), constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {}
  rmSync(dir, { recursive: true, force: true });
});

describe('scanPaths', () => {
  it('skips a file replaced by a FIFO after it was looked at (not a regular file), instead of waiting forever for a writer', {
    timeout: 10_000,
  }, async () => {
    const a = join(dir, 'a.log');
    const b = join(dir, 'b.log');
    writeFileSync(a, `token ${JWS}\n`);
    writeFileSync(b, 'a log\n');
    const notes: ScanNote[] = [];
    // Both paths are looked at first; while a.log is read, b.log becomes a FIFO with no writer.
    const totals = await scanPaths([a, b], {
      maxFileSize: 1 << 20,
      onCandidate: async () => {
        unlinkSync(b);
        execFileSync('mkfifo', [b]);
      },
      onNote: (n) => notes.push(n),
    });
    assert.equal(totals.files, 1);
    assert.deepEqual(
      notes.map((n) => [n.path, n.reason]),
      [[b, 'not_a_file']],
    );
  });

  it('does not follow a planted link to / or /proc/self out of the paths given (which walked the whole filesystem): each is noted outside, the rest scanned; a link to one file elsewhere is read', {
    timeout: 20_000,
  }, async () => {
    const walk = join(dir, 'walk');
    mkdirSync(join(walk, 'a'), { recursive: true });
    writeFileSync(join(walk, 'a/in.log'), `token ${JWS}\n`);
    writeFileSync(join(dir, 'outside.log'), `token ${JWS}\n`);
    symlinkSync('/', join(walk, 'root'));
    symlinkSync('/proc/self', join(walk, 'proc'));
    symlinkSync(join(dir, 'outside.log'), join(walk, 'file'));
    symlinkSync('a', join(walk, 'b'));
    const notes: ScanNote[] = [];
    const found: string[] = [];
    const totals = await scanPaths([walk], {
      maxFileSize: 1 << 20,
      onCandidate: async (path) => {
        found.push(path);
      },
      onNote: (n) => notes.push(n),
    });
    assert.deepEqual(found, [join(walk, 'a/in.log'), join(walk, 'file')]);
    assert.equal(totals.files, 2);
    assert.deepEqual(
      notes.map((n) => [n.path, n.reason]),
      [
        [join(walk, 'b'), 'loop'],
        [join(walk, 'proc'), 'outside'],
        [join(walk, 'root'), 'outside'],
      ],
    );

    // A link into another path given is followed: the file is read once, under the first name reached.
    const both: string[] = [];
    const again = await scanPaths([walk, join(dir, 'outside.log')], {
      maxFileSize: 1 << 20,
      onCandidate: async (path) => {
        both.push(path);
      },
      onNote: () => {},
    });
    assert.deepEqual(both, [join(walk, 'a/in.log'), join(walk, 'file')]);
    assert.equal(again.files, 2);
  });

  it('never walks into /proc, /sys or /dev unless a path in them is given; a path given there is read', async () => {
    assert.equal(notFollowed('/proc', ['/'], false), 'system');
    assert.equal(notFollowed('/proc/1/root', ['/'], true), 'system');
    assert.equal(notFollowed('/sys/kernel', ['/'], false), 'system');
    assert.equal(notFollowed('/dev', ['/'], false), 'system');
    assert.equal(notFollowed('/devices', ['/'], false), undefined);
    assert.equal(notFollowed('/var/log', ['/'], false), undefined);
    assert.equal(notFollowed('/dev/shm/x', ['/dev/shm'], false), undefined);
    assert.equal(notFollowed('/proc/self/status', ['/proc/self'], false), undefined);
    assert.equal(notFollowed('/proc/1', ['/proc/self', '/'], true), 'system');
    assert.equal(notFollowed('/etc', ['/var/log'], true), 'outside');
    assert.equal(notFollowed('/var/log/pods/x/0.log', ['/var/log/containers'], false), undefined);
    assert.equal(notFollowed('/var/log/app/x', ['/var/log'], true), undefined);
    assert.equal(notFollowed('/var/logs', ['/var/log'], true), 'outside');
    const notes: ScanNote[] = [];
    const totals = await scanPaths(['/proc/self/status'], {
      maxFileSize: 1 << 20,
      onCandidate: async () => {},
      onNote: (n) => notes.push(n),
    });
    assert.deepEqual(notes, []);
    assert.equal(totals.files, 1);
  });

  it('skips a file replaced by a larger one after it was looked at: --max-size holds for what is opened, not what was looked at', async () => {
    const a = join(dir, 'swap-a.log');
    const b = join(dir, 'swap-b.log');
    writeFileSync(a, `token ${JWS}\n`);
    writeFileSync(b, 'small\n');
    const notes: ScanNote[] = [];
    const totals = await scanPaths([a, b], {
      maxFileSize: 1024,
      onCandidate: async () => {
        unlinkSync(b);
        writeFileSync(b, 'x'.repeat(1 << 20));
      },
      onNote: (n) => notes.push(n),
    });
    assert.equal(totals.files, 1);
    assert.equal(totals.bytes, JWS.length + 7);
    assert.deepEqual(
      notes.map((n) => [n.path, n.reason, n.message]),
      [[b, 'too_large', '1048576 bytes, over the --max-size of 1024; raise --max-size to scan it']],
    );
  });

  it('stops reading a file that grows past --max-size while it is read, and skips it as too large', async () => {
    const a = join(dir, 'grow.log');
    writeFileSync(a, `token ${JWS}\n${'y\n'.repeat(500)}`);
    const notes: ScanNote[] = [];
    const totals = await scanPaths([a], {
      maxFileSize: 4096,
      chunkSize: 64,
      onCandidate: async () => {
        appendFileSync(a, 'x'.repeat(1 << 20));
      },
      onNote: (n) => notes.push(n),
    });
    assert.equal(totals.files, 0);
    assert.equal(totals.bytes, 0);
    assert.deepEqual(
      notes.map((n) => [n.path, n.reason]),
      [[a, 'too_large']],
    );
  });
});
