/**
 * `tessera clients`: what it prints of a client is safe to print, and a secret client's secret is
 * never lost between the store and the operator (the rest runs in token-service-cli.test.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initialize } from '../../src/cli/commands/init.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
let dir: string;

function tessera(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-clients-'));
  await initialize({ config: join(dir, 'tessera.yaml') });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('tessera clients show', () => {
  it('escapes control characters in a JWKS kid (a forged line, an OSC title, a cleared screen), which the JWKS file chose', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = 'k\x1b]0;pwned\x07\x1b[2J\nforged_line: yes\u202e';
    const file = join(dir, 'evil.jwks');
    writeFileSync(file, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }] }));
    const added = tessera('clients', 'add', 'kid-client', '--audiences', 'https://api.test', '--jwks', file);
    assert.equal(added.code, 0, added.stderr);

    const shown = tessera('clients', 'show', 'kid-client');
    assert.equal(shown.code, 0, shown.stderr);
    // No control character but the newline ending each line, no bidirectional override.
    assert.ok(![...shown.stdout].some((c) => (c < ' ' && c !== '\n') || (c >= '\x7f' && c <= '\x9f') || c === '\u202e'), shown.stdout);
    assert.ok(!shown.stdout.split('\n').some((l) => l.startsWith('forged_line')), shown.stdout);
    assert.match(shown.stdout, /^jwks_kids +k\\x1b\]0;pwned\\x07\\x1b\[2J\\nforged_line: yes\\u202e$/m);
    // --json carries the value as it is (JSON escapes controls itself).
    const json = JSON.parse(tessera('clients', 'show', 'kid-client', '--json').stdout) as { jwks_kids: string[] };
    assert.deepEqual(json.jwks_kids, [kid]);
  });
});
