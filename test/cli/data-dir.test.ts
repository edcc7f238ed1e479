/**
 * The data directory holds the store (signing keys, clients, grants), the master key and
 * secrets.env: another local user who can write to it can replace any of them. As PostgreSQL does
 * with its data directory, `tessera init` and `tessera serve` refuse one that is not the user's
 * own with mode 0700 or 0750, on one line naming it, its mode and the command that fixes it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { withService } from '../../src/cli/context.ts';
import { DataDirError, ensureDataDir } from '../../src/server/bootstrap.ts';

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
