/**
 * The file walk of `tessera scan`: what is opened must be what was looked at. A regular file
 * replaced by a FIFO between the two (anyone who can write to a log directory can do it) must be
 * skipped with a note, never hang the scan on an open that waits for a writer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ScanNote, scanPaths } from '../../src/scan/files.ts';

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
});
