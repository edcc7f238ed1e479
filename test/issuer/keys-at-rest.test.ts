/**
 * Signing keys at rest, attacked by someone who can write to the database but holds no master key:
 * rows added, altered or swapped must neither be published in the JWKS, nor accepted by the
 * in-process verifier, nor sign; the error names the key, never its material. Plus the JWKS of all
 * three algorithms (public members only), malformed master keys, and two processes rotating at once.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import fs, { chmodSync, chownSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { jwkThumbprint } from '../../src/core/jose/jwk.ts';
import { KeyManager, type KeySchedule, unsealSigningKey } from '../../src/issuer/keys.ts';
import { generateMasterKey, MasterKeyError, seal, unseal } from '../../src/issuer/secrets.ts';
import { generateSigningKey } from '../../src/issuer/signer.ts';
import { loadMasterKey } from '../../src/server/bootstrap.ts';
import { StoreConflictError } from '../../src/store/contract.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];
const running: RunningIssuer[] = [];
after(async () => {
  for (const i of running) await i.close();
});

/** A fresh issuer with one active key and a client, its warnings collected. */
async function fresh(config: Parameters<typeof startIssuer>[0] = {}): Promise<{
  issuer: RunningIssuer;
  db: DatabaseSync;
  warnings: string[];
  token(): Promise<Response>;
}> {
  const warnings: string[] = [];
  const issuer = await startIssuer({ ...config, onServiceWarning: (m) => warnings.push(m) });
  running.push(issuer);
  const c = await issuer.addClient({ id: 'agent', scopes: ['api:read'] });
  const db = new DatabaseSync(join(issuer.dir, 'tessera.db'), { timeout: 5000 });
  return {
    issuer,
    db,
    warnings,
    token: () => issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret) }),
  };
}

async function jwksKids(issuer: RunningIssuer): Promise<string[]> {
  const body = (await (await fetch(`${issuer.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
  return body.keys.map((k) => k.kid);
}

async function activeRow(issuer: RunningIssuer) {
  const [row] = await issuer.store.listSigningKeys();
  assert.ok(row);
  return row;
}

describe('write access to the database without the master key', () => {
  it('a row an attacker adds with their own public key (its sealed private key made up) is not published, verifies nothing and does not sign', async () => {
    const { issuer, db, token } = await fresh();
    const real = await activeRow(issuer);
    const attacker = generateSigningKey('ES256');
    const kid = jwkThumbprint(attacker.publicJwk);
    // Newest: it would be the active key, and in the JWKS from now on.
    db.prepare(
      'INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at) VALUES (?, ?, ?, ?, ?, ?)',
    ).run(
      kid,
      'ES256',
      JSON.stringify(attacker.publicJwk),
      'v1.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA',
      // Same activation, created later: ordered after the real key, so the one signing from now.
      real.createdAt + 1,
      real.activatesAt,
    );
    await issuer.service.keys.reload();
    assert.deepEqual(await jwksKids(issuer), [real.kid]);
    assert.equal(issuer.service.keys.lookup(kid, 'ES256'), 'unknown');
    // The key the attacker made newest does not sign, and neither does the one it would have retired.
    const t = await token();
    assert.equal(t.status, 503);
    assert.equal(((await t.json()) as { error: string }).error, 'temporarily_unavailable');
    assert.equal(issuer.service.keys.ready(), false);
  });

  it('a row whose public key an attacker replaced with their own (kid kept) is not published and verifies nothing', async () => {
    const { issuer, db, token } = await fresh();
    const real = await activeRow(issuer);
    const attacker = generateSigningKey('ES256');
    db.prepare('UPDATE signing_keys SET public_jwk = ? WHERE kid = ?').run(JSON.stringify(attacker.publicJwk), real.kid);
    await issuer.service.keys.reload();
    assert.deepEqual(await jwksKids(issuer), []);
    assert.equal(issuer.service.keys.lookup(real.kid, 'ES256'), 'unknown');
    assert.equal((await token()).status, 503);
  });

  it('a sealed private key copied onto a row of the attacker’s (their public key, its thumbprint as kid) does not open there', async () => {
    const { issuer, db } = await fresh();
    const real = await activeRow(issuer);
    const attacker = generateSigningKey('ES256');
    const kid = jwkThumbprint(attacker.publicJwk);
    db.prepare(
      'INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at) VALUES (?, ?, ?, ?, ?, ?)',
    ).run(kid, 'ES256', JSON.stringify(attacker.publicJwk), real.sealedPrivateKey, real.createdAt - 1, real.activatesAt - 1);
    await issuer.service.keys.reload();
    assert.deepEqual(await jwksKids(issuer), [real.kid]);
    assert.equal(issuer.service.keys.lookup(kid, 'ES256'), 'unknown');
    assert.equal(issuer.service.keys.status().find((k) => k.kid === kid)?.invalid !== undefined, true);
  });

  it('a row’s kid changed to another value (no longer its thumbprint) is not published under it', async () => {
    const { issuer, db, token } = await fresh();
    const real = await activeRow(issuer);
    db.prepare('UPDATE signing_keys SET kid = ? WHERE kid = ?').run('attacker-chosen', real.kid);
    await issuer.service.keys.reload();
    assert.deepEqual(await jwksKids(issuer), []);
    assert.equal((await token()).status, 503);
  });

  for (const alg of ['RS256', 'EdDSA'] as const) {
    it(`an ES256 row relabelled ${alg} (an alg downgrade or confusion) is refused alone: the other keys stay published and sign`, async () => {
      const { issuer, db, token } = await fresh();
      await issuer.service.keys.rotate({ immediate: true });
      // The retired key (still published) is the one relabelled.
      const status = issuer.service.keys.status();
      const retired = status.find((k) => k.state === 'retired')?.kid as string;
      const active = status.find((k) => k.state === 'active')?.kid as string;
      db.prepare('UPDATE signing_keys SET alg = ? WHERE kid = ?').run(alg, retired);
      await issuer.service.keys.reload();
      assert.deepEqual(await jwksKids(issuer), [active]);
      assert.equal(issuer.service.keys.lookup(retired, 'ES256'), 'unknown');
      assert.equal((await token()).status, 200);
    });
  }

  it('a bit flipped in the active key’s sealed private key fails closed: 503, a warning naming the kid and no key material', async () => {
    const { issuer, db, token, warnings } = await fresh();
    const real = await activeRow(issuer);
    const der = unsealSigningKey(issuer.master, real);
    const [v, iv, ct, tag] = real.sealedPrivateKey.split('.') as [string, string, string, string];
    const bytes = Buffer.from(ct, 'base64url');
    bytes[10] = (bytes[10] as number) ^ 1;
    const tampered = [v, iv, bytes.toString('base64url'), tag].join('.');
    db.prepare('UPDATE signing_keys SET sealed_private_key = ? WHERE kid = ?').run(tampered, real.kid);
    db.prepare("UPDATE meta SET value = value + 1 WHERE name = 'keys_version'").run();
    // A running server: its next sync reads the changed key set. The signer it had opened is not
    // kept for a row whose sealed key changed.
    await issuer.service.sync();
    const t = await token();
    assert.equal(t.status, 503);
    const body = await t.text();
    const warning = warnings.find((w) => w.includes(real.kid));
    assert.ok(warning, `a warning names ${real.kid}: ${JSON.stringify(warnings)}`);
    for (const text of [body, ...warnings]) {
      for (const secret of [der.toString('base64'), der.toString('base64url'), ct, bytes.toString('base64url'), real.sealedPrivateKey]) {
        assert.equal(text.includes(secret), false);
      }
    }
    const status = issuer.service.keys.status().find((k) => k.kid === real.kid);
    assert.match(status?.invalid ?? '', /does not open/);
  });
});

describe('the JWKS of every algorithm', () => {
  for (const alg of ['ES256', 'EdDSA', 'RS256'] as const) {
    it(`holds no private member for ${alg} (no d, p, q, dp, dq, qi, k)`, async () => {
      const issuer = await startIssuer({ config: { token_service: { keys: { algorithm: alg } } } });
      running.push(issuer);
      const res = await fetch(`${issuer.url}/.well-known/jwks.json`);
      const body = (await res.json()) as { keys: Record<string, unknown>[] };
      assert.equal(body.keys.length, 1);
      const key = body.keys[0] as Record<string, unknown>;
      assert.equal(key.alg, alg);
      for (const m of PRIVATE_MEMBERS) assert.equal(m in key, false, `${alg}: ${m}`);
      const status = JSON.stringify(issuer.service.keys.status());
      for (const m of PRIVATE_MEMBERS) assert.equal(status.includes(`"${m}"`), false);
    });
  }
});

describe('malformed master keys', () => {
  it('are refused as master_key_malformed without echoing the value: whitespace, wrong lengths, standard base64, hex with a prefix', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-mk-'));
    try {
      const hex = 'ab'.repeat(32);
      const b64 = Buffer.alloc(32, 7).toString('base64url');
      for (const value of [
        '   ',
        '\t\n',
        hex.slice(1),
        `${hex}a`,
        `0x${hex}`,
        `${b64}A`,
        b64.slice(1),
        Buffer.alloc(32, 251).toString('base64'),
        `${b64.slice(0, 42)}=`,
        'é'.repeat(43),
        Buffer.alloc(16, 9).toString('hex'),
      ]) {
        assert.throws(
          () => loadMasterKey(dir, { env: { TESSERA_MASTER_KEY: value } }),
          (e: unknown) =>
            e instanceof MasterKeyError &&
            e.code === 'master_key_malformed' &&
            (value.trim() === '' || !e.message.includes(value.trim())) &&
            // What to write instead, not only what is wrong.
            e.message.includes('generate one with `openssl rand -hex 32`'),
          JSON.stringify(value),
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the master key file', () => {
  it('is refused as master_key_file_unsafe when another user owns it, or its group may read it, never read', {
    skip: process.getuid?.() !== 0 && 'chown needs root',
  }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-mkf-'));
    try {
      chmodSync(dir, 0o700);
      const file = join(dir, 'master.key');
      writeFileSync(file, `${Buffer.alloc(32, 3).toString('base64url')}\n`, { mode: 0o600 });
      assert.equal(loadMasterKey(dir, { env: {} })?.source, 'file');
      chownSync(file, 4242, 4242);
      assert.throws(
        () => loadMasterKey(dir, { env: {} }),
        (e: unknown) => e instanceof MasterKeyError && e.code === 'master_key_file_unsafe' && /belongs to uid 4242/.test(e.message),
      );
      chownSync(file, 0, 0);
      chmodSync(file, 0o640);
      assert.throws(
        () => loadMasterKey(dir, { env: {} }),
        (e: unknown) => e instanceof MasterKeyError && e.code === 'master_key_file_unsafe',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('swapped for a symlink after its checks and before its read (a race in the data directory) is refused, the planted key never used', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-mkf-'));
    const outside = mkdtempSync(join(tmpdir(), 'tessera-mkf-planted-'));
    const real = Buffer.alloc(32, 3);
    const planted = Buffer.alloc(32, 7);
    const originals = { lstatSync: fs.lstatSync, statSync: fs.statSync };
    try {
      chmodSync(dir, 0o700);
      const file = join(dir, 'master.key');
      writeFileSync(file, `${real.toString('base64url')}\n`, { mode: 0o600 });
      writeFileSync(join(outside, 'key'), `${planted.toString('base64url')}\n`, { mode: 0o600 });
      symlinkSync(join(outside, 'key'), join(dir, 'swap'));
      // The attacker's rename lands right after the file's type and owner are looked at by name
      // (deterministic here; a loop of renames wins it sooner or later).
      const swapAfter =
        <F extends (...a: never[]) => unknown>(f: F) =>
        (...a: Parameters<F>) => {
          const r = f(...a);
          if (String(a[0]) === file && originals.lstatSync(join(dir, 'swap'), { throwIfNoEntry: false }) !== undefined) {
            renameSync(join(dir, 'swap'), file);
          }
          return r;
        };
      Object.assign(fs, { lstatSync: swapAfter(originals.lstatSync), statSync: swapAfter(originals.statSync) });
      syncBuiltinESMExports();
      let loaded: ReturnType<typeof loadMasterKey> | Error;
      try {
        loaded = loadMasterKey(dir, { env: {} });
      } catch (e) {
        loaded = e as Error;
      }
      if (loaded instanceof Error) {
        assert.ok(loaded instanceof MasterKeyError && loaded.code === 'master_key_file_unsafe', String(loaded));
        assert.match(loaded.message, /regular file, not a symlink/);
      } else {
        assert.deepEqual(loaded?.key.key.export(), real, 'the key read is the one that was checked, never the planted one');
      }
    } finally {
      Object.assign(fs, originals);
      syncBuiltinESMExports();
      rmSync(dir, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('a symlink, a FIFO or a directory in its place is refused as master_key_file_unsafe without blocking', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-mkf-'));
    try {
      chmodSync(dir, 0o700);
      const file = join(dir, 'master.key');
      writeFileSync(join(dir, 'real'), `${Buffer.alloc(32, 3).toString('base64url')}\n`, { mode: 0o600 });
      symlinkSync(join(dir, 'real'), file);
      assert.throws(
        () => loadMasterKey(dir, { env: {} }),
        (e: unknown) => e instanceof MasterKeyError && e.code === 'master_key_file_unsafe' && /not a symlink/.test(e.message),
      );
      rmSync(file);
      execFileSync('mkfifo', ['-m', '600', file]);
      assert.throws(
        () => loadMasterKey(dir, { env: {} }),
        (e: unknown) => e instanceof MasterKeyError && e.code === 'master_key_file_unsafe' && /regular file/.test(e.message),
      );
      rmSync(file);
      fs.mkdirSync(file, { mode: 0o700 });
      assert.throws(
        () => loadMasterKey(dir, { env: {} }),
        (e: unknown) => e instanceof MasterKeyError && e.code === 'master_key_file_unsafe' && /regular file/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an altered sealed key is told apart in the message from a wrong master key, with no key material', () => {
    const master = generateMasterKey().key;
    const sealed = seal(master, Buffer.from('private key bytes'), 'kid-1');
    assert.throws(
      () =>
        unseal(
          master,
          sealed.replace(/\.(.)/, (_, c: string) => `.${c === 'A' ? 'B' : 'A'}`),
          'kid-1',
        ),
      (e: unknown) =>
        e instanceof MasterKeyError &&
        e.code === 'master_key_mismatch' &&
        /altered/.test(e.message) &&
        !e.message.includes('private key bytes'),
    );
  });
});

describe('two processes rotating at once', () => {
  const schedule: KeySchedule = { algorithm: 'ES256', publishAhead: 3600, jwksMaxAge: 600, maxTokenTtl: 600, rotationInterval: 86_400 };

  async function twoManagers() {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-rotate-'));
    const path = join(dir, 'tessera.db');
    const master = generateMasterKey().key;
    let now = 1_900_000_000;
    const stores = [SqliteStore.open({ path }), SqliteStore.open({ path })];
    const managers = stores.map((store) => new KeyManager({ store, master, schedule, now: () => now }));
    const [a, b] = managers as [KeyManager, KeyManager];
    await a.reload();
    await a.rotate({ immediate: true });
    now += 86_400 - 3600;
    // Both have read the key set (no pending key) before either writes.
    await a.reload();
    await b.reload();
    return {
      a,
      b,
      pending: async () => {
        const fresh = new KeyManager({ store: stores[0] as SqliteStore, master, schedule, now: () => now });
        await fresh.reload();
        return fresh.status().filter((k) => k.state === 'pending');
      },
      async close() {
        for (const s of stores) await s.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  it('`tessera keys rotate` in two processes leaves exactly one pending key; the other is refused as signing_key_pending', async () => {
    const { a, b, pending, close } = await twoManagers();
    try {
      const results = await Promise.allSettled([a.rotate(), b.rotate()]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      const refused = results.find((r) => r.status === 'rejected');
      assert.ok(refused?.status === 'rejected' && refused.reason instanceof StoreConflictError);
      assert.equal(refused.reason.code, 'signing_key_pending');
      assert.equal((await pending()).length, 1);
    } finally {
      await close();
    }
  });

  it('two servers rotating by rotation_interval at the same sync leave exactly one pending key, neither failing', async () => {
    const { a, b, pending, close } = await twoManagers();
    try {
      const [ra, rb] = await Promise.all([a.maintain(), b.maintain()]);
      assert.equal([ra.rotated, rb.rotated].filter(Boolean).length, 1);
      assert.equal((await pending()).length, 1);
    } finally {
      await close();
    }
  });

  it('--now still adds a key while one is pending (after a compromise)', async () => {
    const { a, pending, close } = await twoManagers();
    try {
      await a.rotate();
      const now = await a.rotate({ immediate: true });
      assert.equal(a.status().find((k) => k.kid === now.kid)?.state, 'active');
      assert.equal((await pending()).length, 1);
    } finally {
      await close();
    }
  });
});
