/**
 * `tessera init --data-dir DIR` writes DIR into a new tessera.yaml: the directory it then uses is
 * DIR as typed, whatever characters it holds (a `#`, a `${`, a leading `*`, digits alone), and what
 * init prints of it, or of the configuration file's name, cannot rewrite the terminal.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { runTessera } from '../helpers/cli.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-init-dd-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('tessera init --data-dir: the value is the directory, as typed', () => {
  for (const value of ['data #1', '${HOME}', '*data', '123', 'null', 'a: b', '[x]', "it's"]) {
    it(`attack: --data-dir ${JSON.stringify(value)} makes and uses that directory, not another one`, () => {
      // HOME inside the test's directory: a run that reads `${HOME}` as a reference writes there, not in the real one.
      const env = { HOME: join(dir, 'home') };
      const r = runTessera(dir, ['init', '--data-dir', value, '--json'], { env });
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(r.stdout) as { data_dir: string };
      assert.equal(report.data_dir, join(dir, value));
      assert.ok(existsSync(join(dir, value, 'master.key')), `no master key in ${join(dir, value)}`);
      // Only the file and the directory named: nothing made elsewhere (a truncated name, $HOME).
      assert.deepEqual(readdirSync(dir).sort(), [value, 'tessera.yaml'].sort());
      // Later commands read the same directory from the file.
      const listed = runTessera(dir, ['clients', 'list', '--json'], { env });
      assert.equal(listed.code, 0, listed.stderr);
    });
  }

  for (const [name, value] of [
    ['an escape sequence', 'd\x1b[2J'],
    ['a newline (YAML structure)', 'd\nstore:\n  driver: postgres'],
    ['a bidirectional override', 'd\u202e'],
  ] as const) {
    it(`attack: --data-dir with ${name} is refused naming the option, nothing written`, () => {
      const r = runTessera(dir, ['init', '--data-dir', value]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^tessera: --data-dir /);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.ok(![...r.stderr.trimEnd()].some((c) => c < ' ' || c === '\u202e'), r.stderr);
      assert.deepEqual(readdirSync(dir), []);
    });
  }
});

describe('tessera init: what it prints for people', () => {
  it('attack: a configuration file name holding an escape sequence is printed escaped', () => {
    const r = runTessera(dir, ['init', '--config', 'x\x1b]0;pwned\x07.yaml']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(![...r.stdout].some((c) => (c < ' ' && c !== '\n') || (c >= '\x7f' && c <= '\x9f')), JSON.stringify(r.stdout));
    assert.match(r.stdout, /^wrote {2}.*x\\x1b\]0;pwned\\x07\.yaml$/m);
  });
});
