/**
 * What the token service tells a library user's `onWarning` may quote what another party wrote (a
 * kid in the shared store): control characters there reach the user's logger as escapes
 * (`printable`), never raw.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { printable } from '../../src/core/printable.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const running: RunningIssuer[] = [];
after(async () => {
  for (const i of running) await i.close();
});

describe('attack: control characters in a stored kid', () => {
  it('attack: a pending key whose kid was rewritten to hold ESC, a newline and U+202E is refused, and the warning quotes it escaped', async () => {
    const warnings: string[] = [];
    const issuer = await startIssuer({ onServiceWarning: (m) => warnings.push(m) });
    running.push(issuer);
    const pending = await issuer.service.keys.rotate();
    const db = new DatabaseSync(join(issuer.dir, 'tessera.db'), { timeout: 5000 });
    db.prepare('UPDATE signing_keys SET kid = ? WHERE kid = ?').run(`${pending.kid}\u001b[2J\n\u202e`, pending.kid);
    db.prepare("UPDATE meta SET value = value + 1 WHERE name = 'keys_version'").run();
    db.close();
    await issuer.service.sync();
    assert.ok(
      warnings.some((w) => w.startsWith(`signing key ${pending.kid}\\x1b[2J\\n\\u202e is refused`)),
      warnings.join(' | '),
    );
    for (const w of warnings) assert.equal(printable(w), w, 'no control character left raw');
  });
});
