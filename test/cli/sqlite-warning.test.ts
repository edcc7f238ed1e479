/**
 * On Node 22.13–22.x every `tessera` command, `--help` included, printed
 * `ExperimentalWarning: SQLite is an experimental feature` (the store loads `node:sqlite`). The CLI
 * entry (bin/tessera.js) silences exactly that warning, before it loads the CLI; every other
 * warning, another experimental feature's included, is still printed. The library does not hide it
 * (README, "Node 22"). Node 24 no longer emits it, so the filter is tested by emitting the warning
 * Node 22 emits, in the shapes `process.emitWarning` takes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
// @ts-expect-error: plain JavaScript, no declarations (it runs on Nodes that strip no types).
import { quietSqliteWarning } from '../../bin/quiet-sqlite-warning.js';

/** Node 22.13's text (lib/internal/util.js emitExperimentalWarning('SQLite')). */
const SQLITE = 'SQLite is an experimental feature and might change at any time';

function recorder(): { proc: { emitWarning: (...args: unknown[]) => void }; calls: unknown[][] } {
  const calls: unknown[][] = [];
  return { proc: { emitWarning: (...args: unknown[]) => calls.push(args) }, calls };
}

describe('defect: the CLI printed the SQLite ExperimentalWarning on Node 22, even for --help', () => {
  it('drops the SQLite ExperimentalWarning in each shape process.emitWarning takes', () => {
    const { proc, calls } = recorder();
    quietSqliteWarning(proc);
    proc.emitWarning(SQLITE, 'ExperimentalWarning');
    proc.emitWarning(SQLITE, { type: 'ExperimentalWarning' });
    const error = new Error(SQLITE);
    error.name = 'ExperimentalWarning';
    proc.emitWarning(error);
    assert.deepEqual(calls, []);
  });

  it('passes every other warning on unchanged: other experimental features, other types, a mere mention of SQLite', () => {
    const { proc, calls } = recorder();
    quietSqliteWarning(proc);
    const others: unknown[][] = [
      ['WASI is an experimental feature and might change at any time', 'ExperimentalWarning'],
      ['Type Stripping is an experimental feature and might change at any time', { type: 'ExperimentalWarning' }],
      [SQLITE, 'DeprecationWarning', 'DEP0000'],
      [SQLITE],
      ['the SQLite store is locked: SQLite is an experimental feature', 'ExperimentalWarning'],
      ['Possible EventEmitter memory leak detected', 'MaxListenersExceededWarning'],
    ];
    for (const args of others) proc.emitWarning(...args);
    assert.deepEqual(calls, others);
  });

  it('in a real process: the SQLite warning is not printed, another warning is', () => {
    const script = `
      const { quietSqliteWarning } = await import(${JSON.stringify(new URL('../../bin/quiet-sqlite-warning.js', import.meta.url).href)});
      quietSqliteWarning();
      process.emitWarning(${JSON.stringify(SQLITE)}, 'ExperimentalWarning');
      process.emitWarning('Other is an experimental feature and might change at any time', 'ExperimentalWarning');
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /SQLite/);
    assert.match(r.stderr, /ExperimentalWarning: Other is an experimental feature/);
  });

  it('bin/tessera.js installs it before it loads the CLI', async () => {
    const { readFileSync } = await import('node:fs');
    const bin = readFileSync(new URL('../../bin/tessera.js', import.meta.url), 'utf8');
    const quiet = bin.indexOf('quietSqliteWarning()');
    assert.ok(quiet > 0, 'bin/tessera.js does not call quietSqliteWarning()');
    assert.ok(quiet < bin.indexOf('await import(entry.href)'), 'the CLI (and node:sqlite) loads before the filter');
  });
});
