/**
 * The `tessera` process: usage errors in one line like every other failure, and as a pipeline
 * stage, a reader that stops early ends it quietly.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { uuidv7 } from '../../src/audit/id.ts';
import { initialize } from '../../src/cli/commands/init.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
// What `npx tessera` and an installed `tessera` run: it imports main.ts, which is then not the entry module.
const BIN = new URL('../../bin/tessera.js', import.meta.url).pathname;

describe('tessera | head', () => {
  let dir: string;
  before(async () => {
    delete process.env.TESSERA_MASTER_KEY;
    dir = mkdtempSync(join(tmpdir(), 'tessera-pipe-'));
    await initialize({ config: join(dir, 'tessera.yaml') });
    const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const start = Date.now() - 60_000;
    await store.appendAudit(
      Array.from({ length: 5000 }, (_, i) => ({
        id: uuidv7(start + i),
        time: start + i,
        kind: 'gateway.request' as const,
        decision: 'allow' as const,
        reason: 'ok',
        subject: 's'.repeat(200),
      })),
    );
    await store.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [name, entry] of [
    ['src/cli/main.ts', MAIN],
    ['bin/tessera.js', BIN],
  ]) {
    it(`audit tail stops quietly (exit 0, no stack trace) when its reader closes the pipe, run as ${name}`, async () => {
      const child = spawn(process.execPath, [entry as string, 'audit', 'tail'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => {
        err += d.toString();
      });
      await once(child.stdout, 'data');
      child.stdout.destroy();
      const [code] = await once(child, 'exit');
      assert.equal(err, '');
      assert.equal(code, 0);
    });
  }
});

describe('tessera: usage errors', () => {
  it('are one line, "tessera: <reason>", exit 1', () => {
    for (const [args, reason] of [
      [['--bogus'], "unknown option '--bogus'"],
      [['clients', 'add', 'x'], "required option '--audiences <audiences...>' not specified"],
      [['serve', '--port'], "option '--port <port>' argument missing"],
      [['clients', 'show'], "missing required argument 'client_id'"],
      [['revoke', '--tokn', 'x'], "unknown option '--tokn' (Did you mean --token?)"],
    ] as const) {
      const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: ${reason} (run with --help for usage)\n`);
    }
  });
});

describe('tessera: a command group without a subcommand', () => {
  it('prints the group’s help on stdout and exits 0, as --help does, instead of the help on stderr with exit 1', () => {
    for (const group of [[], ['clients'], ['keys'], ['token'], ['audit'], ['grants']]) {
      const r = spawnSync(process.execPath, [MAIN, ...group], { encoding: 'utf8' });
      assert.equal(r.status, 0, group.join(' '));
      assert.equal(r.stderr, '', group.join(' '));
      assert.match(r.stdout, new RegExp(`^Usage: tessera ${group.map((g) => `${g} `).join('')}\\[options\\] \\[command\\]\n`));
      assert.equal(r.stdout, spawnSync(process.execPath, [MAIN, ...group, '--help'], { encoding: 'utf8' }).stdout);
    }
  });

  it('still refuses a word that names no subcommand, suggesting the nearest, and keeps `help <command>`', () => {
    const r = spawnSync(process.execPath, [MAIN, 'clients', 'lst'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, "tessera: unknown command 'lst' (Did you mean list?) (run with --help for usage)\n");
    const help = spawnSync(process.execPath, [MAIN, 'clients', 'help', 'add'], { encoding: 'utf8' });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^Usage: tessera clients add /);
  });
});

describe('tessera: an option that takes one value, given twice', () => {
  it('is refused in one line naming it, instead of silently keeping the last (revoke --grant A --grant B revoked only B)', () => {
    for (const [args, flags] of [
      [['revoke', '--grant', 'g-a', '--grant', 'g-b'], '--grant <id>'],
      [['clients', 'add', 'x', '--audiences', 'https://a', '--ttl', '5m', '--ttl', '1h'], '--ttl <duration>'],
      [['keys', 'rotate', '--alg', 'ES256', '--alg=RS256'], '--alg <alg>'],
      [['clients', 'list', '-c', 'a.yaml', '--config', 'b.yaml'], '-c, --config <file>'],
      [['serve', '--port', '1', '--port', '2'], '--port <port>'],
    ] as const) {
      const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: option '${flags}' given more than once; give it once (run with --help for usage)\n`, args.join(' '));
    }
  });

  it('still adds up a list option given twice (--scopes a --scopes b) and takes a flag given twice', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-repeat-'));
    try {
      const run = (...args: string[]) =>
        spawnSync(process.execPath, [MAIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
      assert.equal(run('init', '--json').status, 0);
      const r = run('clients', 'add', 'agent', '--audiences', 'https://a', '--audiences', 'https://b', '--json', '--json');
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).audiences, ['https://a', 'https://b']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
