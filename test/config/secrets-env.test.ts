/**
 * `<data_dir>/secrets.env`: fills in `${VAR}`s the environment leaves unset, never overrides it,
 * refuses a file others can read, and reports a bad line by number without echoing its content.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs, { chmodSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configEnv, dataDirOf, readSecretsEnv, writeSecretsEnv } from '../../src/config/secrets-env.ts';
import { ConfigError } from '../../src/core/errors.ts';

let dir: string;
let config: string;
let secrets: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-secrets-'));
  config = join(dir, 'tessera.yaml');
  writeFileSync(config, 'data_dir: state\n');
  mkdirSync(join(dir, 'state'));
  secrets = join(dir, 'state', 'secrets.env');
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('secrets.env', () => {
  it('is written owner-only, and a second write replaces one variable and keeps the others', () => {
    writeSecretsEnv(secrets, { GATEWAY_TOKEN: 'one', OTHER: 'x' });
    writeSecretsEnv(secrets, { GATEWAY_TOKEN: 'two' });
    assert.equal(statSync(secrets).mode & 0o777, 0o600);
    assert.deepEqual(readSecretsEnv(secrets), { OTHER: 'x', GATEWAY_TOKEN: 'two' });
  });

  it('fills in what the environment leaves unset or empty; the environment wins otherwise', () => {
    assert.equal(configEnv(config, {}).GATEWAY_TOKEN, 'two');
    assert.equal(configEnv(config, { GATEWAY_TOKEN: '' }).GATEWAY_TOKEN, 'two');
    assert.equal(configEnv(config, { GATEWAY_TOKEN: 'from-env' }).GATEWAY_TOKEN, 'from-env');
  });

  it('is found through a data_dir that references the environment', () => {
    writeFileSync(config, 'data_dir: ${STATE_DIR:elsewhere}\n');
    assert.equal(configEnv(config, { STATE_DIR: 'state' }).GATEWAY_TOKEN, 'two');
    assert.equal(configEnv(config, {}).GATEWAY_TOKEN, undefined);
    writeFileSync(config, 'data_dir: state\n');
  });

  it('is found through a data_dir written ${VAR:-default}, the bash spelling the loader reads as ${VAR:default}', () => {
    // It was looked for under "-state" (the "-" read as part of the default), where the loaded
    // configuration's data_dir is "state": the variables it holds went unset.
    writeFileSync(config, 'data_dir: ${STATE_DIR:-state}\n');
    assert.equal(dataDirOf(config, {}), join(dir, 'state'));
    assert.equal(configEnv(config, {}).GATEWAY_TOKEN, 'two');
    writeFileSync(config, 'data_dir: state\n');
  });

  it('is found through a data_dir written as an alias, where the loader reads data_dir (not in ./.tessera)', () => {
    writeFileSync(config, 'paths:\n  state: &state state\ndata_dir: *state\n');
    assert.equal(dataDirOf(config, {}), join(dir, 'state'));
    assert.equal(configEnv(config, {}).GATEWAY_TOKEN, 'two');
    writeFileSync(config, 'data_dir: state\n');
  });

  it('refuses a file readable by others', () => {
    chmodSync(secrets, 0o644);
    assert.throws(
      () => configEnv(config, {}),
      (e: ConfigError) => e instanceof ConfigError && /chmod 600/.test(e.message),
    );
    chmodSync(secrets, 0o600);
  });

  it('a variable of data_dir never comes from secrets.env (it cannot move the directory it lives in)', () => {
    writeFileSync(config, 'data_dir: ${STATE_DIR:state}\n');
    writeSecretsEnv(secrets, { STATE_DIR: '/somewhere/else' });
    const env = configEnv(config, {});
    assert.equal(env.STATE_DIR, undefined);
    assert.equal(env.GATEWAY_TOKEN, 'two');
    writeFileSync(config, 'data_dir: state\n');
  });

  it('refuses a symlink in place of the file', () => {
    const real = join(dir, 'elsewhere.env');
    writeFileSync(real, 'GATEWAY_TOKEN=planted\n', { mode: 0o600 });
    const link = join(dir, 'state', 'link.env');
    symlinkSync(real, link);
    assert.throws(
      () => readSecretsEnv(link),
      (e: ConfigError) => e instanceof ConfigError && /regular file/.test(e.message),
    );
  });

  it('swapped for a symlink after its checks and before its read (a race) is refused, the planted values never used', () => {
    const file = join(dir, 'state', 'race.env');
    writeFileSync(file, 'GATEWAY_TOKEN=checked\n', { mode: 0o600 });
    const planted = join(dir, 'planted.env');
    writeFileSync(planted, 'GATEWAY_TOKEN=planted\n', { mode: 0o600 });
    const swap = join(dir, 'state', 'swap');
    symlinkSync(planted, swap);
    const originals = { lstatSync: fs.lstatSync, statSync: fs.statSync };
    const swapAfter =
      <F extends (...a: never[]) => unknown>(f: F) =>
      (...a: Parameters<F>) => {
        const r = f(...a);
        if (String(a[0]) === file && originals.lstatSync(swap, { throwIfNoEntry: false }) !== undefined) renameSync(swap, file);
        return r;
      };
    Object.assign(fs, { lstatSync: swapAfter(originals.lstatSync), statSync: swapAfter(originals.statSync) });
    syncBuiltinESMExports();
    let read: Record<string, string> | Error;
    try {
      read = readSecretsEnv(file);
    } catch (e) {
      read = e as Error;
    } finally {
      Object.assign(fs, originals);
      syncBuiltinESMExports();
    }
    if (read instanceof Error) assert.match(read.message, /regular file, not a symlink/);
    else assert.deepEqual(read, { GATEWAY_TOKEN: 'checked' });
  });

  it('a FIFO in place of the file is refused without blocking', () => {
    const fifo = join(dir, 'state', 'fifo.env');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    assert.throws(
      () => readSecretsEnv(fifo),
      (e: ConfigError) => e instanceof ConfigError && /regular file/.test(e.message),
    );
  });

  it('names a malformed line by number and does not echo it', () => {
    const before = readFileSync(secrets, 'utf8');
    writeFileSync(secrets, `${before}not a pair s3cr3t\n`, { mode: 0o600 });
    assert.throws(
      () => readSecretsEnv(secrets),
      (e: ConfigError) =>
        e instanceof ConfigError && e.message.includes(`line ${before.split('\n').length}`) && !e.message.includes('s3cr3t'),
    );
    writeFileSync(secrets, before, { mode: 0o600 });
  });
});
