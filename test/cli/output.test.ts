/**
 * How every command reports a failure: one line on stderr, a non-zero exit, and "unexpected error"
 * only for what is unexpected.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('cli: the store is down', () => {
  it('says PostgreSQL is unreachable in one line, not "unexpected error", and never prints the password', async () => {
    // A port nothing listens on: take one, then free it.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    await new Promise((r) => server.close(r));
    const dir = mkdtempSync(join(tmpdir(), 'tessera-output-'));
    try {
      writeFileSync(join(dir, 'tessera.yaml'), 'store: { driver: postgres, postgres: { url: "${DATABASE_URL}" } }\n');
      const r = spawnSync(process.execPath, [MAIN, 'audit', 'query'], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, DATABASE_URL: `postgres://tessera:pg-password-123@127.0.0.1:${port}/test` },
      });
      assert.equal(r.status, 1);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: PostgreSQL is unreachable: connect ECONNREFUSED 127.0.0.1:${port}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cli: the store cannot be used', () => {
  it('attack: says which SQLite store file is not a database, in one line, not "unexpected error: file is not a database"', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-output-'));
    try {
      writeFileSync(join(dir, 'tessera.yaml'), 'store: { driver: sqlite }\n');
      mkdirSync(join(dir, '.tessera'), { mode: 0o700 });
      writeFileSync(join(dir, '.tessera', 'tessera.db'), 'not a database '.repeat(400));
      const r = spawnSync(process.execPath, [MAIN, 'audit', 'query'], { cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 1);
      assert.equal(r.stdout, '');
      assert.doesNotMatch(r.stderr, /unexpected error/);
      assert.match(r.stderr, /^tessera: the SQLite store \S*tessera\.db is not a SQLite database/);
      assert.equal(r.stderr.split('\n').length, 2, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cli: printable', () => {
  it('escapes the line and paragraph separators (U+2028, U+2029) a caller put in an audit value, as it does \\n', async () => {
    const { printable } = await import('../../src/cli/output.ts');
    const forged = 'mallory\u20282026-01-01T00:00:00.000Z  token.revoked  allow:ok\u2029';
    assert.equal(printable(forged), 'mallory\\u20282026-01-01T00:00:00.000Z  token.revoked  allow:ok\\u2029');
    assert.equal(printable('a\nb\x1b[2K\x85\u202e'), 'a\\nb\\x1b[2K\\x85\\u202e');
  });
});
