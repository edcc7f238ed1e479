/**
 * Recovering from a refused active signing key the way readiness and `tessera keys list` say:
 * `tessera keys rotate --now`. A row altered behind the service (by whoever can write to the
 * database without the master key) must not lock the operator out of that recovery while another
 * stored key proves the master key is the right one; a wrong master key is still refused.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { loadMasterKey } from '../../src/server/bootstrap.ts';
import { cliDirs, runTessera } from '../helpers/cli.ts';
import { basic, startIssuer } from '../helpers/issuer.ts';

const dirs = cliDirs('tessera-keys-recovery-');

interface Listed {
  readonly kid: string;
  readonly state: string;
  readonly invalid?: string;
}

const list = (dir: string): Listed[] => {
  const r = runTessera(dir, ['keys', 'list', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Listed[];
};

/** Alter the active key's row as someone without the master key can. */
const ALTERATIONS: readonly [string, (db: DatabaseSync, kid: string) => void][] = [
  [
    'a bit flipped in its sealed private key',
    (db, kid) => {
      const { sealed } = db.prepare('SELECT sealed_private_key AS sealed FROM signing_keys WHERE kid = ?').get(kid) as { sealed: string };
      const [v, iv, ct, tag] = sealed.split('.') as [string, string, string, string];
      const bytes = Buffer.from(ct, 'base64url');
      bytes[5] = (bytes[5] as number) ^ 1;
      db.prepare('UPDATE signing_keys SET sealed_private_key = ? WHERE kid = ?').run(
        [v, iv, bytes.toString('base64url'), tag].join('.'),
        kid,
      );
    },
  ],
  ['its alg relabelled RS256', (db, kid) => void db.prepare("UPDATE signing_keys SET alg = 'RS256' WHERE kid = ?").run(kid)],
];

describe('attack: the active signing key’s row altered in the store, another key intact', () => {
  for (const [what, alter] of ALTERATIONS) {
    it(`${what}: \`tessera keys rotate --now\`, the recovery readiness names, adds a key that signs (it was refused as master_key_mismatch), a wrong master key is still refused`, async () => {
      // Two keys: the first retired by a rotation (still published), the second active.
      const dir = dirs.fresh(['keys', 'rotate', '--now']);
      const [retired, active] = list(dir);
      assert.equal(retired?.state, 'retired');
      assert.equal(active?.state, 'active');
      const db = new DatabaseSync(join(dir, '.tessera', 'tessera.db'));
      try {
        alter(db, active.kid);
      } finally {
        db.close();
      }
      assert.match(list(dir).find((k) => k.kid === active.kid)?.invalid ?? '', /./, 'the altered row is refused');

      const wrong = runTessera(dir, ['keys', 'rotate', '--now'], { env: { TESSERA_MASTER_KEY: 'A'.repeat(43) } });
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /^tessera: the master key .*not the one they were sealed with/);

      const r = runTessera(dir, ['keys', 'rotate', '--now', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const added = JSON.parse(r.stdout) as Listed;
      assert.equal(added.state, 'active');
      const after = list(dir);
      assert.equal(after.length, 3, 'exactly one key added');
      assert.equal(after.find((k) => k.kid === added.kid)?.invalid, undefined);
      assert.equal(after.find((k) => k.state === 'active')?.kid, added.kid);

      // The token service over that store signs with the new key over HTTP, and publishes it,
      // never the altered one; the first key (retired) is not brought back to sign.
      const data = join(dir, '.tessera');
      const master = loadMasterKey(data)?.key;
      assert.ok(master);
      const issuer = await startIssuer({ dir: data, master });
      try {
        const c = await issuer.addClient({ id: 'agent', scopes: ['api:read'] });
        const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret) });
        assert.equal(res.status, 200);
        const { access_token } = (await res.json()) as { access_token: string };
        assert.equal(decodeProtectedHeader(access_token).kid, added.kid);
        const jwks = (await (await fetch(`${issuer.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
        const kids = jwks.keys.map((k) => k.kid);
        assert.ok(kids.includes(added.kid));
        assert.ok(!kids.includes(active.kid));
        assert.equal(issuer.service.keys.readiness().ok, true);
      } finally {
        await issuer.close();
      }
    });
  }
});

describe('a key’s end sealed into its own row', () => {
  it('`tessera keys list` shows the sealed end and successor; attack: with the successor’s row deleted nothing is active, and `tessera keys rotate --now` recovers', async () => {
    const dir = dirs.fresh(['keys', 'rotate', '--now']);
    const listed = (): (Listed & { authenticated_end: string; successor: string | null })[] => {
      const r = runTessera(dir, ['keys', 'list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    const [retired, active] = listed();
    assert.ok(retired && active);
    assert.equal(retired.successor, active.kid);
    assert.match(retired.authenticated_end, /^\d{4}-\d\d-\d\dT/);
    assert.equal(active.authenticated_end, '-');
    const text = runTessera(dir, ['keys', 'list']);
    assert.match(
      text.stdout,
      new RegExp(`retired .*${retired.kid} .*ends ${retired.authenticated_end} \\(authenticated, successor ${active.kid}\\)`),
    );

    const db = new DatabaseSync(join(dir, '.tessera', 'tessera.db'));
    try {
      db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(active.kid);
    } finally {
      db.close();
    }
    assert.equal(
      listed().some((k) => k.state === 'active'),
      false,
      'the retired key is not active again',
    );
    const r = runTessera(dir, ['keys', 'rotate', '--now', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const added = JSON.parse(r.stdout) as Listed;
    assert.equal(listed().find((k) => k.state === 'active')?.kid, added.kid);
  });
});
