/**
 * The data directory holds the store (signing keys, clients, grants), the master key and
 * secrets.env: another local user who can write to it can replace any of them. As PostgreSQL does
 * with its data directory, `tessera init` and `tessera serve` refuse one that is not the user's
 * own with mode 0700 or 0750, on one line naming it, its mode and the command that fixes it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { withService } from '../../src/cli/context.ts';
import { DataDirError, ensureDataDir, openStore } from '../../src/server/bootstrap.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const env = { ...process.env, TESSERA_MASTER_KEY: '' };
const tessera = (cwd: string, ...args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { cwd, encoding: 'utf8', env });
const posix = process.platform !== 'win32';

describe('attack: a data directory other local users can write to (they could replace tessera.db or master.key)', { skip: !posix }, () => {
  let dir: string;
  before(() => {
    delete process.env.TESSERA_MASTER_KEY;
    dir = mkdtempSync(join(tmpdir(), 'tessera-data-dir-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A new site: an empty directory holding a data directory `data` of `mode`. */
  function site(name: string, mode: number): { cwd: string; data: string } {
    const cwd = join(dir, name);
    const data = join(cwd, 'data');
    mkdirSync(data, { recursive: true });
    chmodSync(data, mode);
    return { cwd, data };
  }

  it('tessera init refuses a world-writable one (0777, and 1777: the sticky bit still lets others create files) on one line, and writes nothing', () => {
    for (const [mode, shown] of [
      [0o777, '0777'],
      [0o1777, '1777'],
    ] as const) {
      const { cwd, data } = site(`init-${shown}`, mode);
      const r = tessera(cwd, 'init', '--data-dir', 'data');
      assert.equal(r.status, 1);
      assert.equal(r.stdout, '');
      assert.equal(
        r.stderr,
        `tessera: data directory ${data} is writable by other users (mode ${shown}); run chmod 700 ${data}; init undid its changes\n`,
      );
      assert.deepEqual(readdirSync(cwd), ['data'], 'tessera.yaml is not left behind');
      assert.deepEqual(readdirSync(data), [], 'nothing was written into it');
      assert.equal(statSync(data).mode & 0o7777, mode, 'its mode is left as it was');
    }
  });

  it('tessera init refuses a group-writable one (0770, 0730), as OpenSSH StrictModes does', () => {
    for (const [mode, says] of [
      [0o770, 'writable by other users (mode 0770)'],
      [0o730, 'writable by other users (mode 0730)'],
    ] as const) {
      const { cwd, data } = site(`init-${mode.toString(8)}`, mode);
      const r = tessera(cwd, 'init', '--data-dir', 'data');
      assert.equal(r.status, 1);
      assert.equal(r.stderr, `tessera: data directory ${data} is ${says}; run chmod 700 ${data}; init undid its changes\n`);
    }
  });

  it('tessera init accepts 0700, 0750 and 0755 (readable: every file in it is 0600), and leaves the mode as it was', () => {
    for (const mode of [0o700, 0o750, 0o755]) {
      const { cwd, data } = site(`init-ok-${mode.toString(8)}`, mode);
      const r = tessera(cwd, 'init', '--data-dir', 'data');
      assert.equal(r.status, 0, r.stderr);
      assert.ok(existsSync(join(data, 'master.key')));
      assert.equal(statSync(data).mode & 0o7777, mode);
    }
  });

  it('tessera serve refuses a data directory made writable by others after init, before it opens the store or listens', () => {
    const { cwd, data } = site('serve', 0o700);
    assert.equal(tessera(cwd, 'init', '--data-dir', 'data').status, 0);
    chmodSync(data, 0o777);
    const r = tessera(cwd, 'serve');
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `tessera: data directory ${data} is writable by other users (mode 0777); run chmod 700 ${data}\n`);
  });

  it('tessera serve refuses a data directory of another user, naming its owner', {
    skip: process.getuid?.() !== 0 && 'needs root to chown',
  }, () => {
    const { cwd, data } = site('serve-owner', 0o700);
    assert.equal(tessera(cwd, 'init', '--data-dir', 'data').status, 0);
    chownSync(data, 4242, 4242);
    const r = tessera(cwd, 'serve');
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `tessera: data directory ${data} belongs to uid 4242, not to the user Tessera runs as (${process.getuid?.()}); run chown ${process.getuid?.()} ${data}\n`,
    );
  });

  it('the service serve opens accepts a 0750 data directory', async () => {
    const { cwd, data } = site('serve-0750', 0o700);
    assert.equal(tessera(cwd, 'init', '--data-dir', 'data').status, 0);
    chmodSync(data, 0o750);
    const keys = await withService(join(cwd, 'tessera.yaml'), true, async ({ service }) => service.keys.ready());
    assert.equal(keys, true);
  });

  it('ensureDataDir (the library) throws DataDirError with code data_dir_unsafe', () => {
    const { data } = site('library', 0o777);
    assert.throws(
      () => ensureDataDir(data),
      (e) => e instanceof DataDirError && e.code === 'data_dir_unsafe' && e.message.includes('(mode 0777)'),
    );
  });
});

describe('attack: store.sqlite.path in a directory other local users can write to, outside the data directory (they could replace the database, or plant its -wal file)', {
  skip: !posix,
}, () => {
  let dir: string;
  before(() => {
    delete process.env.TESSERA_MASTER_KEY;
    dir = mkdtempSync(join(tmpdir(), 'tessera-store-dir-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** An initialized site whose tessera.yaml puts the database in `elsewhere` (of `mode`), outside its 0700 data directory. */
  function site(name: string, mode: number): { cwd: string; elsewhere: string; db: string } {
    const cwd = join(dir, name);
    mkdirSync(cwd);
    assert.equal(tessera(cwd, 'init', '--data-dir', 'data').status, 0);
    const elsewhere = join(cwd, 'shared');
    mkdirSync(elsewhere);
    chmodSync(elsewhere, mode);
    const db = join(elsewhere, 'tessera.db');
    appendFileSync(join(cwd, 'tessera.yaml'), `\nstore:\n  sqlite:\n    path: ${db}\n`);
    return { cwd, elsewhere, db };
  }

  it('tessera serve refuses a world-writable one (1777, as /tmp) on one line naming store.sqlite.path, and creates no database there', () => {
    const { cwd, elsewhere, db } = site('serve-1777', 0o1777);
    const r = spawnSync(process.execPath, [MAIN, 'serve', '--port', '0'], { cwd, encoding: 'utf8', env, timeout: 15_000 });
    assert.equal(r.status, 1, 'serve started with its database in a world-writable directory');
    assert.equal(
      r.stderr,
      `tessera: store.sqlite.path ${db}: its directory ${elsewhere} is writable by other users (mode 1777); run chmod 700 ${elsewhere}, or put the database in a directory only its owner can write to\n`,
    );
    assert.deepEqual(readdirSync(elsewhere), [], 'nothing was written into it');
  });

  it('a CLI command refuses a group-writable one (0770) the same way', () => {
    const { cwd, elsewhere, db } = site('cli-0770', 0o770);
    const r = tessera(cwd, 'clients', 'list');
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `tessera: store.sqlite.path ${db}: its directory ${elsewhere} is writable by other users (mode 0770); run chmod 700 ${elsewhere}, or put the database in a directory only its owner can write to\n`,
    );
    assert.equal(existsSync(db), false);
  });

  it('refuses one of another user, naming its owner', { skip: process.getuid?.() !== 0 && 'needs root to chown' }, () => {
    const { cwd, elsewhere, db } = site('cli-owner', 0o700);
    chownSync(elsewhere, 4242, 4242);
    const r = tessera(cwd, 'clients', 'list');
    assert.equal(r.status, 1);
    const uid = process.getuid?.();
    assert.equal(
      r.stderr,
      `tessera: store.sqlite.path ${db}: its directory ${elsewhere} belongs to uid 4242, not to the user Tessera runs as (${uid}); run chown ${uid} ${elsewhere}, or put the database in a directory only its owner can write to\n`,
    );
  });

  it('accepts one of its own (0700, 0755) outside the data directory, and keeps the database there', () => {
    for (const mode of [0o700, 0o755]) {
      const { cwd, db } = site(`ok-${mode.toString(8)}`, mode);
      const r = tessera(cwd, 'clients', 'list');
      assert.equal(r.status, 0, r.stderr);
      assert.ok(existsSync(db));
    }
  });

  it('openStore (the library) throws DataDirError with code data_dir_unsafe', async () => {
    const data = join(dir, 'library', 'data');
    const elsewhere = join(dir, 'library', 'shared');
    mkdirSync(data, { recursive: true, mode: 0o700 });
    mkdirSync(elsewhere);
    chmodSync(elsewhere, 0o777);
    const config = { data_dir: data, store: { driver: 'sqlite', sqlite: { path: join(elsewhere, 'tessera.db'), busy_timeout: 5 } } };
    await assert.rejects(
      openStore(config as never),
      (e) =>
        e instanceof DataDirError &&
        e.code === 'data_dir_unsafe' &&
        e.message.includes(`its directory ${elsewhere} is writable by other users (mode 0777)`),
    );
    assert.deepEqual(readdirSync(elsewhere), []);
  });
});
