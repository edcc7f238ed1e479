/**
 * Reading `tessera.yaml` as an attacker or a careless editor would write it: every such file is
 * refused with one configuration error naming where, never an unexpected error or a silent change.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfigFile, parseConfigText } from '../../src/config/load.ts';
import { ConfigError, type ConfigIssue } from '../../src/core/errors.ts';

function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    return [...e.issues];
  }
  assert.fail('expected a ConfigError');
}

describe('config: YAML aliases', () => {
  it('refuses an alias bomb as a configuration error', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 10; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(', ')}]`,
      );
    lines.push('data_dir: *a9');
    const issues = issuesOf(() => parseConfigText(`${lines.join('\n')}\n`, 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      { path: '(yaml)', message: 'too many alias expansions (the YAML aliases nest too deep); write the values out' },
    ]);
  });

  it('refuses an alias that refers to the node containing it (a cycle)', () => {
    const issues = issuesOf(() => parseConfigText('gateway: &g { routes: [*g] }\n', 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      { path: '(yaml)', message: 'an alias refers to a node that contains it; YAML aliases must not form a cycle' },
    ]);
  });

  it('refuses an alias with no anchor', () => {
    const issues = issuesOf(() => parseConfigText('data_dir: *nowhere\n', 'tessera.yaml', {}));
    assert.equal(issues[0]?.path, '(yaml)');
    assert.match(issues[0]?.message ?? '', /Unresolved alias.*nowhere/);
  });
});

describe('config: file encoding', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-load-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a file that is not UTF-8, naming the line, instead of replacing the bad bytes', () => {
    const file = join(dir, 'latin1.yaml');
    writeFileSync(file, Buffer.concat([Buffer.from('server:\n  host: "h'), Buffer.from([0xe9]), Buffer.from('"\n')]));
    assert.deepEqual(
      issuesOf(() => loadConfigFile(file, {})),
      [{ path: 'line 2', message: 'not valid UTF-8; save the file as UTF-8' }],
    );
  });

  it('reads UTF-8 with a byte-order mark and a literal U+FFFD', () => {
    const file = join(dir, 'utf8.yaml');
    writeFileSync(file, '\uFEFFrealm: "r\uFFFD"\n');
    assert.equal(loadConfigFile(file, {}).realm, 'r\uFFFD');
  });
});
