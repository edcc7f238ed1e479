/**
 * What every token-service command shares: finding the configuration.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/cli/context.ts';
import { ConfigError } from '../../src/core/errors.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('cli: a --config file that does not exist', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-context-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is an error naming the file, not the defaults', () => {
    const file = join(dir, 'tesera.yaml');
    assert.throws(
      () => loadConfig(file),
      (e: unknown) =>
        e instanceof ConfigError && e.issues[0]?.path === '(file)' && e.issues[0].message.startsWith(`${file} does not exist`),
    );
  });

  it('does not let a mistyped --config operate on the store in the working directory', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [MAIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
    assert.equal(run('init', '--json').status, 0);
    const r = run('clients', 'list', '--json', '--config', 'prod-tessera.yml');
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(
      r.stderr,
      /^tessera: invalid configuration in .*prod-tessera\.yml \(1 problem\):\n {2}\(file\): .*prod-tessera\.yml does not exist;/,
    );
  });
});
