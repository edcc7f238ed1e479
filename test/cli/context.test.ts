/**
 * What every token-service command shares: finding the configuration.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hostArg, loadConfig, ttlArg } from '../../src/cli/context.ts';
import { CliError } from '../../src/cli/output.ts';
import { ConfigError } from '../../src/core/errors.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('cli: ./tessera.yaml a symbolic link to nothing (an unmounted volume, a moved file, a loop)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-context-link-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const run = (cwd: string, ...args: string[]) =>
    spawnSync(process.execPath, [MAIN, ...args], { cwd, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });

  for (const [name, link] of [
    ['a dangling link', (d: string) => symlinkSync(join(d, 'mounted', 'tessera.yaml'), join(d, 'tessera.yaml'))],
    [
      'a loop of links',
      (d: string) => {
        symlinkSync('other.yaml', join(d, 'tessera.yaml'));
        symlinkSync('tessera.yaml', join(d, 'other.yaml'));
      },
    ],
  ] as const) {
    it(`${name}: every command refuses it naming the link (exit 2), never the defaults; init writes nothing`, () => {
      const cwd = mkdtempSync(join(dir, 'case-'));
      // The defaults' store is there: a command falling back to them would operate on it.
      assert.equal(run(cwd, 'init', '--json').status, 0);
      rmSync(join(cwd, 'tessera.yaml'));
      link(cwd);
      const before = readdirSync(cwd).sort();
      for (const args of [['clients', 'list', '--json'], ['init']]) {
        const r = run(cwd, ...args);
        assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.stdout, '');
        assert.match(
          r.stderr,
          /^tessera: invalid configuration in .*tessera\.yaml \(1 problem\):\n {2}\(file\): .*tessera\.yaml is a symbolic link to .*, which leads to no file \(its target is missing, or the links loop\); point it at the configuration file, or remove it\n$/,
        );
      }
      assert.deepEqual(readdirSync(cwd).sort(), before);
    });
  }
});

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

describe('cli: the loaded configuration is frozen', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-context-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('at every level, the top included: its resolved data_dir was set on a copy that could be written to', () => {
    const file = join(dir, 'tessera.yaml');
    writeFileSync(file, 'data_dir: state\nscopes: { a: { implies: [b] }, b: {} }\n');
    const { config } = loadConfig(file);
    assert.equal(config.data_dir, join(dir, 'state'));
    assert.ok(Object.isFrozen(config));
    assert.throws(() => {
      (config as { data_dir: string }).data_dir = '/tmp/elsewhere';
    }, TypeError);
    const implies = config.scopes?.a?.implies as string[];
    assert.deepEqual(implies, ['b']);
    assert.throws(() => implies.push('c'), TypeError);
    assert.equal(config.data_dir, join(dir, 'state'));
  });
});

describe('cli: an empty --config or TESSERA_CONFIG', () => {
  for (const [name, args, env, message] of [
    ['--config ""', ['--config', ''], {}, '--config is empty; name the configuration file (--config tessera.yaml)'],
    [
      'TESSERA_CONFIG=""',
      [],
      { TESSERA_CONFIG: '' },
      'TESSERA_CONFIG is set but empty; name the configuration file in it, or unset it to use ./tessera.yaml',
    ],
  ] as const) {
    it(`${name} is refused naming it (an unset variable in a compose file), not read as the working directory`, () => {
      const r = spawnSync(process.execPath, [MAIN, 'clients', 'list', ...args], {
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '', ...env },
      });
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: ${message}\n`);
    });
  }
});

describe('cli: --ttl', () => {
  it('takes whole seconds, as its error message has always suggested, and durations', () => {
    assert.equal(ttlArg('--ttl', '300'), 300);
    assert.equal(ttlArg('--ttl', '5m'), 300);
    assert.equal(ttlArg('--ttl', '1.5s'), 2);
  });

  it('refuses a lifetime under one second instead of minting a token that is born expired', () => {
    for (const v of ['0', '0s', '400ms', '-5', '5x', '']) {
      assert.throws(
        () => ttlArg('--ttl', v),
        (e: unknown) =>
          e instanceof CliError &&
          e.message === `--ttl "${v}" is not a lifetime; write seconds (300) or a duration (90s, 5m, 1h), at least 1s`,
      );
    }
  });

  it('tessera token mint --ttl 0s fails with one line; clients add --ttl 300 registers the client', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-ttl-'));
    try {
      const run = (...args: string[]) =>
        spawnSync(process.execPath, [MAIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
      assert.equal(run('init', '--json').status, 0);
      const minted = run('token', 'mint', '--client', 'demo-agent', '--ttl', '0s');
      assert.equal(minted.status, 1);
      assert.equal(minted.stdout, '');
      assert.match(minted.stderr, /^tessera: --ttl "0s" is not a lifetime;[^\n]*\n$/);
      const tooLong = run('token', 'mint', '--client', 'demo-agent', '--ttl', '2h');
      assert.equal(tooLong.status, 1, 'never silently shortened to the maximum');
      assert.equal(tooLong.stdout, '');
      assert.equal(
        tooLong.stderr,
        'tessera: --ttl 7200s is longer than token_service.max_access_token_ttl (3600s); ask for at most 3600s\n',
      );
      const added = run('clients', 'add', 'agent', '--audiences', 'https://api.test', '--ttl', '300', '--json');
      assert.equal(added.status, 0, added.stderr);
      assert.equal(JSON.parse(added.stdout).access_token_ttl, 300);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cli: --host', () => {
  it('takes a name or an address, the wildcards written out', () => {
    for (const v of ['127.0.0.1', 'localhost', '::1', '0.0.0.0', '::', 'gw.internal.example']) assert.equal(hostArg('--host')(v), v);
  });

  it('refuses an empty --host (an unset "$HOST"), which Node would take for every interface, and whitespace or control characters', () => {
    for (const v of ['', ' ', 'a b', 'host\n', 'a\x1b[2J']) {
      assert.throws(
        () => hostArg('--host')(v),
        (e: unknown) =>
          e instanceof CliError &&
          e.message ===
            `--host must be a host name or an address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every interface), not ${JSON.stringify(v)}`,
      );
    }
  });

  for (const command of ['serve', 'gateway']) {
    it(`tessera ${command} --host "" fails with one line before listening anywhere`, () => {
      const r = spawnSync(process.execPath, [MAIN, command, '--host', '', '--port', '0'], {
        encoding: 'utf8',
        timeout: 20_000,
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(
        r.stderr,
        'tessera: --host must be a host name or an address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every interface), not ""\n',
      );
    });
  }
});
