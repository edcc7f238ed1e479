/**
 * `tessera keys list` shows stored rows, refused ones included: a row written by whoever can write
 * to the database without the master key (the case the key-row checks exist for) chooses its `kid`
 * and `alg`. Printed raw, an ESC or C1 sequence in them would rewrite the operator's terminal.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { cliDirs, runTessera } from '../helpers/cli.ts';

const dirs = cliDirs('tessera-keys-list-');

describe('attack: terminal escapes in a planted signing-key row', () => {
  it('tessera keys list shows the refused row with its kid and alg escaped, never raw control characters', () => {
    const dir = dirs.fresh();
    const db = new DatabaseSync(join(dir, '.tessera', 'tessera.db'));
    try {
      // Activated long ago: not the key that signs, so the service still opens.
      db.prepare(
        'INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at) VALUES (?, ?, ?, ?, ?, ?)',
      ).run('evil\u001b]0;owned\u0007\u009b2J\u202ekid', 'ES\u001b[2J', '{}', 'x', 1, 1);
    } finally {
      db.close();
    }
    const r = runTessera(dir, ['keys', 'list']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /REFUSED/);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are the point
    assert.doesNotMatch(r.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/);
    assert.match(r.stdout, /evil\\x1b\]0;owned\\x07\\x9b2J\\u202ekid/);
  });
});

describe('tessera keys list under another master key', () => {
  it('attack: names the master key as a cause of the refused rows, as the admin commands’ refusal sends the operator here', () => {
    const dir = dirs.fresh();
    const other = runTessera(dir, ['keys', 'list'], { env: { TESSERA_MASTER_KEY: 'ab'.repeat(32) } });
    assert.equal(other.code, 0, other.stderr);
    const rows = other.stdout.trimEnd().split('\n');
    assert.ok(rows.length > 0 && rows.every((l) => /REFUSED .*another master key/.test(l)), other.stdout);
    // The admin commands' refusal says `keys list` names why: it does.
    const refused = runTessera(dir, ['keys', 'rotate'], { env: { TESSERA_MASTER_KEY: 'ab'.repeat(32) } });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /`tessera keys list` names it and why/);
  });
});
