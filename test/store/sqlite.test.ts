import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { uuidv7 } from '../../src/audit/id.ts';
import { type GrantRecord, StoreOpenError, StoreUnavailableError } from '../../src/store/contract.ts';
import { MIGRATIONS } from '../../src/store/sqlite/migrations.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { clientRecord, newGrant, runStoreContract, testClock } from './contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'tessera-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** Take a database back to schema `version`, as an older Tessera left it. */
function rewind(db: DatabaseSync, version: number): void {
  if (version < 25) {
    db.exec('ALTER TABLE signing_keys DROP COLUMN retires_at; ALTER TABLE signing_keys DROP COLUMN successor_kid');
    db.exec('ALTER TABLE removed_signing_keys DROP COLUMN retires_at; ALTER TABLE removed_signing_keys DROP COLUMN successor_kid');
  }
  if (version < 24) db.exec('ALTER TABLE refresh_tokens DROP COLUMN successor_hash');
  if (version < 23) db.exec('DROP INDEX grants_actor_grant; ALTER TABLE grants DROP COLUMN actor_grant_id');
  if (version < 22) db.exec("ALTER TABLE signing_keys DROP COLUMN seq; DELETE FROM meta WHERE name = 'signing_keys_seq'");
  if (version < 21) db.exec('DROP INDEX revocations_scoped_token');
  if (version < 20) db.exec('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
  if (version < 19) db.exec('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
  if (version < 18) {
    db.exec('DROP INDEX grants_actor_jti');
    db.exec('ALTER TABLE grants DROP COLUMN subject_jti; ALTER TABLE grants DROP COLUMN actor_jti');
  }
  if (version < 17) db.exec('ALTER TABLE clients DROP COLUMN allowed_origins');
  if (version < 16) db.exec('ALTER TABLE clients DROP COLUMN secret_method');
  if (version < 15) db.exec('ALTER TABLE authorization_codes DROP COLUMN approval_since');
  if (version < 14) db.exec('DROP INDEX revocations_token');
  if (version < 12) db.exec('DROP TABLE a2a_tasks');
  else if (version < 13) db.exec('DROP INDEX a2a_tasks_owner; ALTER TABLE a2a_tasks DROP COLUMN route');
  if (version < 11) db.exec('DROP INDEX revocations_subject');
  if (version < 10) db.exec('DROP INDEX clients_id_nocase; ALTER TABLE authorization_codes DROP COLUMN jkt');
  if (version < 9) db.exec('DROP TABLE remembered_consents');
  if (version < 7) db.exec('DROP TABLE removed_signing_keys');
  if (version < 6) db.exec('ALTER TABLE refresh_tokens DROP COLUMN jkt');
  if (version < 5) {
    db.exec('DROP TABLE authorization_codes; ALTER TABLE clients DROP COLUMN redirect_uris; ALTER TABLE clients DROP COLUMN name;');
  }
  if (version < 4) {
    db.exec('DROP INDEX audit_jti; DROP INDEX audit_token_hash');
    db.exec('ALTER TABLE audit_events DROP COLUMN jti; ALTER TABLE audit_events DROP COLUMN token_hash');
  }
  db.prepare('DELETE FROM schema_migrations WHERE version > ?').run(version);
}

const hasPython = spawnSync('python3', ['-c', 'import fcntl'], { stdio: 'ignore' }).status === 0;

/**
 * Another process recovering the WAL index of the database at `path`, as SQLite does when a process
 * died in the middle of a commit: it holds the WAL write and recover locks (POSIX record locks on
 * bytes 120 and 122 of the `-shm` file, SQLite's unix layout) while the index header's two copies
 * disagree. Readers meet SQLITE_BUSY_RECOVERY meanwhile: the lock a reader in WAL mode can meet
 * once the database is open (writers do not block it). Python takes the locks, since Node has no
 * POSIX record locks and a real recovery is over too quickly to meet on purpose. Resolves once they
 * are held with the process's exit, which lets them go after `holdMs`; the next reader repairs the
 * header from the WAL.
 */
async function recoveringElsewhere(path: string, holdMs: number): Promise<{ exited: Promise<unknown> }> {
  const script = `
import fcntl, os, sys, time
fd = os.open(sys.argv[1] + '-shm', os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 120, os.SEEK_SET)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 122, os.SEEK_SET)
b = os.pread(fd, 1, 60)
os.pwrite(fd, bytes([b[0] ^ 0xff]), 60)
print('held', flush=True)
time.sleep(float(sys.argv[2]) / 1000)
`;
  const child = spawn('python3', ['-c', script, path, String(holdMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  await once(child.stdout, 'data');
  return { exited };
}

runStoreContract('sqlite (file)', async (tuning) => SqliteStore.open({ path: join(dir, `contract-${++n}.db`), ...tuning }), testClock());
runStoreContract('sqlite (:memory:)', async (tuning) => SqliteStore.open({ path: ':memory:', ...tuning }), testClock());

describe('sqlite store specifics', () => {
  it('reads a grant tree with a level wider than a spread argument list (150,000 children of one grant) without a stack overflow', async () => {
    const path = join(dir, 'wide.db');
    const store = SqliteStore.open({ path });
    const now = 1_800_000_000;
    await store.createClient(clientRecord({ id: 'agent' }, now));
    const root = await store.createGrant(newGrant({}, now), now);
    assert.equal(typeof root, 'object');
    const rootId = (root as { id: string }).id;
    const db = new DatabaseSync(path);
    db.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150000)
       INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
       SELECT 'wide-' || i, g.id, g.root_id, 1, g.kind, g.issuer, g.subject, g.client_id, NULL, g.scopes, g.audiences, g.created_at, g.expires_at
       FROM n, grants g WHERE g.id = ?`,
    ).run(rootId);
    db.close();
    assert.equal((await store.grantSubtree(rootId)).length, 150_001);
    await store.close();
  });

  it('a prune of more rows than one batch lets other writers in between its batches: it never holds the write lock for the whole prune', async () => {
    const path = join(dir, 'prune-batches.db');
    const store = SqliteStore.open({ path, pruneBatchSize: 100 });
    const now = 1_800_000_000;
    const db = new DatabaseSync(path, { timeout: 0 });
    db.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
       INSERT INTO replay (key, expires_at) SELECT 'old-' || i, ? FROM n`,
    ).run(now - 1);
    // Another connection (as another process would) writes, with no busy timeout, at every turn
    // the event loop gets while the prune runs.
    const seen: { left: number; wrote: boolean }[] = [];
    let finished = false;
    const tick = () => {
      if (finished) return;
      const left = Number((db.prepare("SELECT count(*) AS n FROM replay WHERE key LIKE 'old-%'").get() as { n: number }).n);
      let wrote = true;
      try {
        db.prepare('INSERT INTO replay (key, expires_at) VALUES (?, ?)').run(`other-${seen.length}`, now + 3600);
      } catch {
        wrote = false;
      }
      seen.push({ left, wrote });
      setImmediate(tick);
    };
    setImmediate(tick);
    try {
      assert.equal(await store.prune(now), true);
    } finally {
      finished = true;
    }
    assert.ok(
      seen.some((s) => s.left > 0 && s.left < 1000 && s.wrote),
      `the other writer got the lock mid-prune (${JSON.stringify(seen.slice(0, 5))})`,
    );
    assert.ok(
      seen.every((s) => s.wrote),
      'every write got the lock',
    );
    const n = Number((db.prepare("SELECT count(*) AS n FROM replay WHERE key LIKE 'old-%'").get() as { n: number }).n);
    assert.equal(n, 0, 'every expired row pruned');
    assert.equal(Number((db.prepare('SELECT count(*) AS n FROM replay').get() as { n: number }).n), seen.length, 'the new ones kept');
    db.close();
    await store.close();
  });

  it('creates the database file owner-only, in WAL mode, with a busy timeout', async () => {
    const path = join(dir, 'mode.db');
    const store = SqliteStore.open({ path, busyTimeoutMs: 1234 });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const db = new DatabaseSync(path);
    assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
    db.close();
    await store.close();
  });

  it('applies migrations once and records the schema version', async () => {
    const path = join(dir, 'migrate.db');
    const a = SqliteStore.open({ path });
    assert.equal(a.schemaVersion, MIGRATIONS.at(-1)?.version);
    await a.close();
    const b = SqliteStore.open({ path });
    assert.equal(b.schemaVersion, MIGRATIONS.at(-1)?.version);
    await b.close();
  });

  it('gives legacy open-ended client-credentials grants an expiry (migration 3), and leaves other grants alone', async () => {
    const path = join(dir, 'legacy.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    const insert = db.prepare(
      `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
       VALUES (?, NULL, ?, 0, ?, 'https://i.test', 's', 'c', NULL, '[]', '[]', 1, NULL)`,
    );
    insert.run('g_legacy_cc', 'g_legacy_cc', 'client_credentials');
    insert.run('g_legacy_mint', 'g_legacy_mint', 'mint');
    rewind(db, 2);
    db.close();
    const store = SqliteStore.open({ path });
    const now = Math.floor(Date.now() / 1000);
    const cc = (await store.getGrant('g_legacy_cc'))?.expiresAt as number;
    assert.ok(cc >= now + 86_400 && cc <= now + 86_400 + 120, 'ends once its last token (max_access_token_ttl ≤ 1 day) can have');
    assert.equal((await store.getGrant('g_legacy_mint'))?.expiresAt, null);
    await store.close();
  });

  it('fills in the jti and token hash of events written before migration 4, so tessera trace finds them', async () => {
    const path = join(dir, 'legacy-audit.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 3);
    const old = {
      id: uuidv7(),
      time: Date.now(),
      kind: 'gateway.request',
      decision: 'allow',
      reason: 'ok',
      jti: 'j-old',
      token_hash: 'h-old',
    };
    db.prepare('INSERT INTO audit_events (id, time, kind, event) VALUES (?, ?, ?, ?)').run(old.id, old.time, old.kind, JSON.stringify(old));
    db.close();
    const store = SqliteStore.open({ path });
    assert.deepEqual(await store.queryAudit({ jti: 'j-old' }), [old]);
    assert.deepEqual(await store.queryAudit({ token_hash: 'h-old' }), [old]);
    await store.close();
  });

  it('finds a client id in any case through an index, not by reading every client (dynamic registration can make many)', async () => {
    const path = join(dir, 'nocase.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    const plan = db.prepare('EXPLAIN QUERY PLAN SELECT id FROM clients WHERE id = ? COLLATE NOCASE LIMIT 1').all('X') as {
      detail: string;
    }[];
    db.close();
    assert.match(plan.map((r) => r.detail).join('; '), /USING (COVERING )?INDEX clients_id_nocase/);
  });

  it('reads codes written before migration 10 with no DPoP key (jkt NULL), so they redeem unbound', async () => {
    const path = join(dir, 'legacy-codes.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 9);
    db.prepare(
      `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at)
       VALUES ('h-old', 'agent', NULL, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'alice', 'https://issuer.test', '[]', '[]', 1, 2)`,
    ).run();
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    assert.equal((await store.getAuthorizationCode('h-old'))?.jkt, null);
    await store.close();
  });

  it('reads clients registered before migration 17 as having no origins of their own, and keeps those of one registered after', async () => {
    const path = join(dir, 'legacy-allowed-origins.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 16);
    db.prepare(
      `INSERT INTO clients (id, auth_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, redirect_uris, disabled, created_at, updated_at)
       VALUES ('old', 'none', NULL, NULL, NULL, '[]', '["https://api.test"]', '["authorization_code"]', NULL, '["https://app.test/cb"]', 0, 1, 1)`,
    ).run();
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    assert.deepEqual((await store.getClient('old'))?.allowedOrigins, []);
    await store.createClient(clientRecord({ id: 'new', allowedOrigins: ['https://app.test', 'http://127.0.0.1:5173'] }));
    assert.deepEqual((await store.getClient('new'))?.allowedOrigins, ['https://app.test', 'http://127.0.0.1:5173']);
    await store.close();
  });

  it('reads clients registered before migration 20 as not DPoP-bound, and keeps the flag of one registered after', async () => {
    const path = join(dir, 'legacy-dpop-bound.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 19);
    db.prepare(
      `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, allowed_origins, disabled, created_at, updated_at)
       VALUES ('old', 'client_secret', NULL, 'hash', NULL, NULL, '[]', '["https://api.test"]', '["client_credentials"]', NULL, '[]', 0, 1, 1)`,
    ).run();
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, 25);
    assert.equal((await store.getClient('old'))?.dpopBoundAccessTokens, false);
    await store.createClient(clientRecord({ id: 'new', dpopBoundAccessTokens: true }));
    assert.equal((await store.getClient('new'))?.dpopBoundAccessTokens, true);
    assert.equal((await store.updateClient('old', { dpopBoundAccessTokens: true }, 2))?.dpopBoundAccessTokens, true);
    assert.equal((await store.getClient('old'))?.dpopBoundAccessTokens, true);
    await store.close();
  });

  it('reads secret clients registered before migration 16 (secret_method NULL) as accepting either secret method, and keeps the method of one registered after', async () => {
    const path = join(dir, 'legacy-secret-method.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 15);
    db.prepare(
      `INSERT INTO clients (id, auth_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, disabled, created_at, updated_at)
       VALUES ('old', 'client_secret', 'hash', NULL, NULL, '[]', '["https://api.test"]', '["client_credentials"]', NULL, 0, 1, 1)`,
    ).run();
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    assert.equal((await store.getClient('old'))?.secretMethod, null);
    await store.createClient(clientRecord({ id: 'new', secretMethod: 'client_secret_post' }));
    assert.equal((await store.getClient('new'))?.secretMethod, 'client_secret_post');
    await store.close();
  });

  it('dates codes written before migration 15 (approval_since NULL) by their creation: a subject revocation from then on refuses them at redemption', async () => {
    const path = join(dir, 'legacy-approval.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 14);
    const now = Math.floor(Date.now() / 1000);
    const insert = db.prepare(
      `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at)
       VALUES (?, 'agent', NULL, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', ?, 'https://issuer.test', '[]', '[]', ?, ?)`,
    );
    insert.run('h-revoked', 'mallory', now, now + 60);
    insert.run('h-kept', 'alice', now, now + 60);
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    await store.createClient(clientRecord({ id: 'agent' }));
    assert.equal((await store.getAuthorizationCode('h-revoked'))?.approvalSince, null);
    const loginScope = 'https://issuer.test#login-sessions';
    await store.appendRevocations([{ kind: 'subject', value: 'mallory', issuer: loginScope, at: now, expiresAt: now + 600 }]);
    const redeem = (hash: string, subject: string) =>
      store.redeemAuthorizationCode(hash, {
        clientId: 'agent',
        loginScope,
        grant: newGrant({ kind: 'authorization_code', subject, issuer: 'https://issuer.test' }, now),
        refreshToken: null,
        now,
        entryExpiresAt: now + 600,
      });
    assert.equal((await redeem('h-revoked', 'mallory')).status, 'subject_revoked');
    assert.equal((await redeem('h-kept', 'alice')).status, 'redeemed');
    await store.close();
  });

  it('keeps A2A records made before migration 13 (no route) their owner’s, and counts a route’s through an index', async () => {
    const path = join(dir, 'legacy-a2a.db');
    const before = SqliteStore.open({ path });
    assert.deepEqual(await before.claimA2aTask('agent', 'task', 't-old', 'alice', 200, 100), { owner: 'alice', expiresAt: 200 });
    await before.close();
    const db = new DatabaseSync(path);
    rewind(db, 12);
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    assert.equal((await store.a2aTaskOwner('agent', 'task', 't-old', 100))?.owner, 'alice');
    // Renewed at the limit: hers still, and counted from then on.
    assert.deepEqual(await store.claimA2aTask('agent', 'task', 't-old', 'alice', 300, 100, 1), { owner: 'alice', expiresAt: 300 });
    assert.equal(await store.claimA2aTask('agent', 'task', 't-new', 'alice', 300, 100, 1), 'full');
    await store.close();
    const check = new DatabaseSync(path);
    const plan = check
      .prepare(
        'EXPLAIN QUERY PLAN SELECT count(*) AS n FROM (SELECT 1 FROM a2a_tasks WHERE route = ? AND owner = ? AND expires_at > ? LIMIT ?)',
      )
      .all('agent', 'alice', 0, 10);
    check.close();
    assert.match(JSON.stringify(plan), /COVERING INDEX a2a_tasks_owner/);
  });

  it('finds a token revoked before migration 14 by its jti, through the index that migration adds (introspection reads it on every call)', async () => {
    const path = join(dir, 'legacy-revocations.db');
    const before = SqliteStore.open({ path });
    await before.appendRevocations([{ kind: 'token', value: 'jti-old', issuer: null, at: 100, expiresAt: 200 }]);
    await before.close();
    const db = new DatabaseSync(path);
    rewind(db, 13);
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    assert.equal(await store.tokenRevoked('jti-old'), true);
    assert.equal(await store.tokenRevoked('jti-new'), false);
    await store.close();
    const check = new DatabaseSync(path);
    const plan = check.prepare("EXPLAIN QUERY PLAN SELECT 1 FROM revocations WHERE kind = 'token' AND value = ? LIMIT 1").all('jti-old');
    check.close();
    assert.match(JSON.stringify(plan), /INDEX revocations_token/);
  });

  it('reads grants made before migration 18 as exchanged from no token (a revocation of a token leaves them), and finds those made after through its indexes', async () => {
    const path = join(dir, 'legacy-grant-jti.db');
    const before = SqliteStore.open({ path });
    await before.createClient(clientRecord({ id: 'agent' }));
    const now = 1_800_000_000;
    const root = await before.createGrant(newGrant({ id: 'g-root' }, now), now);
    assert.equal(typeof root, 'object');
    await before.close();
    const db = new DatabaseSync(path);
    rewind(db, 17);
    // A child Tessera 17 wrote: no column for the token it was exchanged from.
    db.prepare(
      `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
       VALUES ('g-old', 'g-root', 'g-root', 1, 'token_exchange', 'https://issuer.test', 'alice', 'agent', NULL, '[]', '[]', ?, ?)`,
    ).run(now, now + 3600);
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, MIGRATIONS.at(-1)?.version);
    assert.equal(store.schemaVersion, 25);
    const old = await store.getGrant('g-old');
    assert.equal(old?.subjectJti, null);
    assert.equal(old?.actorJti, null);
    const fresh = await store.createGrant(newGrant({ id: 'g-new', parentId: 'g-root', subjectJti: 'jti-1' }, now), now);
    assert.equal(typeof fresh, 'object');
    const revoked = await store.revokeGrants(
      { exchangedFrom: 'jti-1', tokenGrantId: 'g-root' },
      { at: now, reason: 'access_token_revoked', entryExpiresAt: now + 600 },
    );
    assert.deepEqual(
      revoked.map((g) => g.id),
      ['g-new'],
    );
    assert.equal((await store.getGrant('g-old'))?.revokedAt, null);
    await store.close();
    const check = new DatabaseSync(path);
    const plan = (where: string, ...args: string[]) =>
      JSON.stringify(check.prepare(`EXPLAIN QUERY PLAN SELECT id FROM grants WHERE ${where} AND revoked_at IS NULL`).all(...args));
    // The subject token's exchanges among its grant's children; no index of subject_jti to update on every exchange.
    assert.match(plan('parent_id = ? AND subject_jti = ?', 'g-root', 'jti-1'), /INDEX grants_parent/);
    assert.match(plan('actor_jti = ?', 'jti-1'), /INDEX grants_actor_jti/);
    check.close();
  });

  it('migrates a log with a login session signed out twice (instances racing before migration 21) to one entry, the one lasting longest; other entries are untouched, and the session is signed out once from then on', async () => {
    const path = join(dir, 'legacy-sign-outs.db');
    const scope = 'https://issuer.test#login-sessions';
    const before = SqliteStore.open({ path });
    await before.close();
    const db = new DatabaseSync(path);
    rewind(db, 20);
    // What two instances of Tessera 20 signing one session out at once wrote, with other entries around.
    const insert = db.prepare('INSERT INTO revocations (kind, value, issuer, at, expires_at) VALUES (?, ?, ?, ?, ?)');
    insert.run('token', 'session-1', scope, 100, 700);
    insert.run('token', 'session-1', scope, 101, 900);
    insert.run('token', 'session-1', scope, 102, 900);
    insert.run('token', 'session-2', scope, 100, 700);
    insert.run('token', 'jti-1', null, 100, 200);
    insert.run('token', 'jti-1', null, 100, 200);
    insert.run('subject', 'alice', scope, 100, 900);
    insert.run('subject', 'alice', scope, 100, 900);
    db.close();
    const store = SqliteStore.open({ path });
    try {
      assert.equal(store.schemaVersion, 25);
      const left = (await store.revocationsSince(0, 0)).map((e) => [e.seq, e.kind, e.value, e.issuer, e.expiresAt]);
      assert.deepEqual(left, [
        [2, 'token', 'session-1', scope, 900],
        [4, 'token', 'session-2', scope, 700],
        [5, 'token', 'jti-1', null, 200],
        [6, 'token', 'jti-1', null, 200],
        [7, 'subject', 'alice', scope, 900],
        [8, 'subject', 'alice', scope, 900],
      ]);
      await store.appendRevocations([{ kind: 'token', value: 'session-1', issuer: scope, at: 200, expiresAt: 900 }]);
      assert.equal((await store.revocationsSince(0, 0)).length, 6, 'signed out already: nothing more');
    } finally {
      await store.close();
    }
  });

  it('numbers the signing keys stored before migration 22 in the order they were used (activation, creation, kid), so the active key stays the same; a key added after comes after them, whatever its kid', async () => {
    const path = join(dir, 'legacy-key-seq.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    rewind(db, 21);
    const insert = db.prepare(
      "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at) VALUES (?, 'ES256', '{}', 'sealed', ?, ?)",
    );
    insert.run('k-b', 100, 100);
    insert.run('k-a', 100, 100);
    insert.run('k-old', 50, 50);
    insert.run('k-c', 100, 100);
    db.close();
    const store = SqliteStore.open({ path });
    try {
      assert.equal(store.schemaVersion, 25);
      const key = { kid: 'k-0', alg: 'ES256' as const, publicJwk: {}, sealedPrivateKey: 'sealed', createdAt: 100, activatesAt: 100 };
      await store.addSigningKey(key);
      assert.deepEqual(
        (await store.listSigningKeys()).map((k) => [k.kid, k.seq]),
        [
          ['k-old', 1],
          ['k-a', 2],
          ['k-b', 3],
          ['k-c', 4],
          ['k-0', 5],
        ],
      );
    } finally {
      await store.close();
    }
  });

  it('reads grants made before migration 23 as exchanged with no actor grant (a revocation of the actor’s grant leaves them, as before), and cascades from an actor’s grant to those made after through the grants_actor_grant index', async () => {
    const path = join(dir, 'legacy-actor-grant.db');
    const before = SqliteStore.open({ path });
    await before.createClient(clientRecord({ id: 'agent' }));
    const now = 1_800_000_000;
    for (const id of ['g-root', 'g-actor']) assert.equal(typeof (await before.createGrant(newGrant({ id }, now), now)), 'object');
    await before.close();
    const db = new DatabaseSync(path);
    rewind(db, 22);
    // A grant Tessera 22 wrote, exchanged with a token of g-actor: its actor grant was not recorded.
    db.prepare(
      `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at, actor_jti)
       VALUES ('g-old', 'g-root', 'g-root', 1, 'token_exchange', 'https://issuer.test', 'alice', 'agent', '{"sub":"agent"}', '[]', '[]', ?, ?, 'jti-a')`,
    ).run(now, now + 3600);
    db.close();
    const store = SqliteStore.open({ path });
    assert.equal(store.schemaVersion, 25);
    assert.equal((await store.getGrant('g-old'))?.actorGrantId, null);
    const fresh = await store.createGrant(newGrant({ id: 'g-new', parentId: 'g-root' }, now), now, { actorGrantId: 'g-actor' });
    assert.equal((fresh as GrantRecord).actorGrantId, 'g-actor');
    const revoked = await store.revokeGrants({ grantId: 'g-actor' }, { at: now, reason: 'agent_compromised', entryExpiresAt: now + 600 });
    assert.deepEqual(revoked.map((g) => g.id).sort(), ['g-actor', 'g-new']);
    assert.equal((await store.getGrant('g-old'))?.revokedAt, null);
    await store.close();
    const check = new DatabaseSync(path);
    const plan = JSON.stringify(check.prepare('EXPLAIN QUERY PLAN SELECT id FROM grants WHERE actor_grant_id = ?').all('g-actor'));
    check.close();
    assert.match(plan, /INDEX grants_actor_grant/);
  });

  it('refuses a database migrated by a newer Tessera', async () => {
    const path = join(dir, 'newer.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)').run(999);
    db.close();
    assert.throws(
      () => SqliteStore.open({ path }),
      (e: unknown) => e instanceof StoreOpenError && /newer than this Tessera knows/.test(e.message),
    );
  });

  it('attack: an older Tessera opening the file while a newer one migrates it is refused (schema_newer), not left running on the newer schema: the version is read under the write lock its migration holds', async () => {
    const path = join(dir, 'racing.db');
    await SqliteStore.open({ path }).close();
    // The newer Tessera, in another process: one migration more, which holds the write lock a while.
    const fake = {
      version: (MIGRATIONS.at(-1)?.version ?? 0) + 1,
      description: 'a newer Tessera’s',
      sql: `CREATE TABLE newer (x);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c;`,
    };
    const script = `
      import { SqliteStore } from ${JSON.stringify(new URL('../../src/store/sqlite/store.ts', import.meta.url).href)};
      import { MIGRATIONS } from ${JSON.stringify(new URL('../../src/store/sqlite/migrations.ts', import.meta.url).href)};
      SqliteStore.open({ path: ${JSON.stringify(path)}, migrations: [...MIGRATIONS, ${JSON.stringify(fake)}] }).close();
    `;
    const newer = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    newer.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = once(newer, 'exit');
    // Wait until it holds the write lock for its migration: held at two looks 10 ms apart.
    const probe = new DatabaseSync(path, { timeout: 0 });
    for (let held = 0; held < 2; ) {
      try {
        probe.exec('BEGIN IMMEDIATE');
        probe.exec('ROLLBACK');
        held = 0;
      } catch {
        held += 1;
      }
      await new Promise((r) => setTimeout(r, held === 0 ? 1 : 10));
    }
    probe.close();
    // The older one, at its own latest version, finds nothing to migrate: it must read the version
    // once the newer one's migration is committed, not the one before it.
    assert.throws(
      () => SqliteStore.open({ path }),
      (e: unknown) => e instanceof StoreOpenError && e.code === 'schema_newer' && /newer than this Tessera knows/.test(e.message),
    );
    const [code] = await exited;
    assert.equal(code, 0, stderr);
  });

  it('runs the migrations of one start in one transaction with the version check: one that fails leaves the database at the version it was opened at, none of them applied', async () => {
    const path = join(dir, 'failing.db');
    await SqliteStore.open({ path }).close();
    const db = new DatabaseSync(path);
    rewind(db, 20);
    // Migration 22 adds this row: there already, it fails, after migration 21 ran in this start.
    db.exec("INSERT INTO meta (name, value) VALUES ('signing_keys_seq', 0)");
    db.close();
    assert.throws(
      () => SqliteStore.open({ path }),
      (e: unknown) =>
        e instanceof StoreOpenError &&
        e.code === 'migration_failed' &&
        /migration 22 failed \(the database stays at version 20\)/.test(e.message),
    );
    const check = new DatabaseSync(path);
    assert.equal(Number((check.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number }).v), 20);
    assert.equal(
      check.prepare("SELECT 1 FROM sqlite_master WHERE name = 'revocations_scoped_token'").get(),
      undefined,
      'migration 21 rolled back',
    );
    check.close();
  });

  it('attack: a store file that is not a SQLite database, or is corrupt, or cannot be opened is refused at open with StoreOpenError naming the file and what to do (was a bare "file is not a database", printed as an unexpected error)', async () => {
    const garbage = join(dir, 'garbage.db');
    writeFileSync(garbage, 'not a database '.repeat(400));
    const corrupt = join(dir, 'corrupt.db');
    (await SqliteStore.open({ path: corrupt })).close();
    const bytes = readFileSync(corrupt);
    for (let i = 4096; i < bytes.length; i += 7) bytes[i] = 0xff;
    writeFileSync(corrupt, bytes);
    for (const [path, reason] of [
      [garbage, /is not a SQLite database/],
      [corrupt, /is corrupt/],
      [join(dir, 'no-such-dir', 'x.db'), /cannot be opened/],
    ] as const) {
      assert.throws(
        () => SqliteStore.open({ path }),
        (e: unknown) => {
          assert.ok(e instanceof StoreOpenError, String(e));
          assert.equal(e.code, 'store_unusable');
          assert.ok(e.message.startsWith(`the SQLite store ${path} `), e.message);
          assert.match(e.message, reason);
          return true;
        },
      );
    }
  });

  it('attack: a store file this process may read but not write (its mode, or an immutable file for root) is refused at open with StoreOpenError naming the file, not opened read-only to fail every write as an unexpected error (a 500)', async (t) => {
    const path = join(dir, 'read-only.db');
    const store = SqliteStore.open({ path });
    await store.createClient(clientRecord({ id: 'agent' }));
    store.close();
    // Root writes whatever the mode: an immutable file then (chattr, where the file system has it).
    const root = process.getuid?.() === 0;
    if (root) {
      if (spawnSync('chattr', ['+i', path]).status !== 0) return t.skip('chattr +i is not available here');
    } else chmodSync(path, 0o400);
    try {
      assert.throws(
        () => SqliteStore.open({ path }),
        (e: unknown) => {
          assert.ok(e instanceof StoreOpenError, String(e));
          assert.equal(e.code, 'store_unusable');
          assert.match(e.message, new RegExp(`^the SQLite store ${path} cannot be written \\(attempt to write a readonly database\\)`));
          return true;
        },
      );
    } finally {
      if (root) spawnSync('chattr', ['-i', path]);
      else chmodSync(path, 0o600);
    }
    const again = SqliteStore.open({ path });
    assert.equal((await again.listClients()).length, 1);
    again.close();
  });

  it('shares one file between two connections (CLI and server): writes of one are seen by the other', async () => {
    const path = join(dir, 'shared.db');
    const server = SqliteStore.open({ path });
    const cli = SqliteStore.open({ path });
    const v0 = await server.versions();
    await cli.appendRevocations([{ kind: 'token', value: 'j', issuer: null, at: 1, expiresAt: 2_000_000_000 }]);
    const v1 = await server.versions();
    assert.equal(v1.revocations, v0.revocations + 1);
    assert.equal((await server.revocationsSince(v0.revocations, 1))[0]?.value, 'j');
    await cli.close();
    await server.close();
  });

  it('reports a write lock held by another process past the busy timeout as StoreUnavailableError (a 503, not a 500)', async () => {
    const path = join(dir, 'locked.db');
    const store = SqliteStore.open({ path, busyTimeoutMs: 50 });
    const other = new DatabaseSync(path);
    other.exec('BEGIN IMMEDIATE');
    try {
      await assert.rejects(
        store.appendRevocations([{ kind: 'token', value: 'j', issuer: null, at: 1, expiresAt: 2_000_000_000 }]),
        StoreUnavailableError,
      );
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    await store.appendRevocations([{ kind: 'token', value: 'j', issuer: null, at: 1, expiresAt: 2_000_000_000 }]);
    await store.close();
  });

  it('reports the lock held past the busy timeout as StoreUnavailableError for single-statement writes too (a replayed-jti check, a refresh token, a code, a consent answered 500 "database is locked")', async () => {
    const path = join(dir, 'locked-single.db');
    const store = SqliteStore.open({ path, busyTimeoutMs: 50 });
    const other = new DatabaseSync(path);
    other.exec('BEGIN IMMEDIATE');
    const now = 1_800_000_000;
    const token = { hash: 'rt', grantId: 'g', clientId: 'agent', createdAt: now, expiresAt: now + 60, rotatedAt: null, revokedAt: null };
    const code = {
      hash: 'code',
      clientId: 'agent',
      redirectUri: null,
      codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      subject: 'alice',
      issuer: 'https://issuer.test',
      scopes: [],
      audiences: [],
      createdAt: now,
      expiresAt: now + 60,
      consumedAt: null,
      grantId: null,
      jkt: null,
      approvalSince: now,
    };
    const consent = {
      subject: 'alice',
      clientId: 'agent',
      issuer: 'https://issuer.test',
      identitySource: 'header',
      scopes: [],
      scopesDigest: 'd',
      audiences: [],
      redirectUri: 'https://app.test/cb',
      clientFingerprint: 'f',
      approvalHash: 'a',
      createdAt: now,
      expiresAt: now + 60,
    };
    const writes = {
      useOnce: () => store.useOnce('jti', now + 60, now),
      createRefreshToken: () => store.createRefreshToken(token),
      createAuthorizationCode: () => store.createAuthorizationCode(code),
      rememberConsent: () => store.rememberConsent(consent),
    };
    try {
      for (const [name, write] of Object.entries(writes)) {
        await assert.rejects(write(), (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy', name);
      }
      // What an operator reads (`tessera: <message>`): which database, as several data directories may be in use.
      await assert.rejects(writes.useOnce(), (e: unknown) => e instanceof Error && e.message.includes(`SQLite store ${path} is locked`));
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    assert.equal(await writes.useOnce(), true, 'nothing was written while locked');
    await writes.createRefreshToken();
    await writes.createAuthorizationCode();
    await writes.rememberConsent();
    await store.close();
  });

  it('a write waiting for another process’s lock does not stall the event loop: timers run while it waits, and it goes through once the lock is released (a transaction, a group commit, a single-statement write)', async () => {
    const path = join(dir, 'locked-wait.db');
    const store = SqliteStore.open({ path, busyTimeoutMs: 3000 });
    const client = clientRecord();
    await store.createClient(client);
    const now = 1_800_000_000;
    const writes = {
      appendRevocations: () => store.appendRevocations([{ kind: 'token', value: 'w', issuer: null, at: 1, expiresAt: 2_000_000_000 }]),
      createGrant: () => store.createGrant(newGrant({ clientId: client.id }), now),
      useOnce: () => store.useOnce('jti-wait', now + 60, now),
    };
    for (const [name, write] of Object.entries(writes)) {
      const other = new DatabaseSync(path, { timeout: 0 });
      other.exec('BEGIN IMMEDIATE');
      // SQLite's own busy handler sleeps in this thread: no timer fires until the lock is released.
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      setTimeout(() => {
        other.exec('COMMIT');
        other.close();
      }, 250);
      try {
        await write();
      } finally {
        clearInterval(timer);
      }
      assert.ok(ticks >= 5, `${name}: the event loop ran ${ticks} timer turns while the write waited for the lock`);
    }
    assert.equal(await writes.useOnce(), false, 'the single-statement write went through');
    assert.equal(
      (await store.revocationsSince(0, 1)).some((r) => r.value === 'w'),
      true,
      'the transaction committed',
    );
    await store.close();
  });

  describe('reads while another process holds a lock readers wait for (it recovers the WAL index)', {
    skip: hasPython ? false : 'python3 (for POSIX record locks) is not installed',
  }, () => {
    /** Every read of the store, on a database holding a little of each. */
    async function seeded(path: string, busyTimeoutMs: number) {
      const store = SqliteStore.open({ path, busyTimeoutMs });
      const client = clientRecord();
      await store.createClient(client);
      const now = 1_800_000_000;
      const grant = newGrant({ clientId: client.id });
      assert.equal(typeof (await store.createGrant(grant, now)), 'object');
      await store.appendRevocations([{ kind: 'token', value: 'j', issuer: null, at: 1, expiresAt: 2_000_000_000 }]);
      const reads: Record<string, () => Promise<unknown>> = {
        getClient: () => store.getClient(client.id),
        findClientIdIgnoringCase: () => store.findClientIdIgnoringCase(client.id.toUpperCase()),
        listClients: () => store.listClients(),
        listSigningKeys: () => store.listSigningKeys(),
        listRemovedSigningKeys: () => store.listRemovedSigningKeys(),
        getGrant: () => store.getGrant(grant.id),
        grantSubtree: () => store.grantSubtree(grant.id),
        grantAncestors: () => store.grantAncestors(grant.id),
        getRefreshToken: () => store.getRefreshToken('rt'),
        getAuthorizationCode: () => store.getAuthorizationCode('code'),
        getRememberedConsent: () => store.getRememberedConsent('alice', client.id, now),
        tokenRevoked: () => store.tokenRevoked('j'),
        revocationsSince: () => store.revocationsSince(0, 1),
        a2aTaskOwner: () => store.a2aTaskOwner('r', 'task', 't', now),
        queryAudit: () => store.queryAudit({}),
        versions: () => store.versions(),
      };
      return { store, reads };
    }

    it('a read meeting it waits without stalling the event loop (timers run), then answers as before (was a raw SQLITE_BUSY, "database is locked")', async () => {
      const path = join(dir, 'recovering-wait.db');
      const { store, reads } = await seeded(path, 3000);
      const names = Object.keys(reads);
      const expected = await Promise.all(Object.values(reads).map((read) => read()));
      const { exited } = await recoveringElsewhere(path, 250);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      try {
        const answers = await Promise.all(Object.values(reads).map((read) => read()));
        for (const [i, name] of names.entries()) assert.deepEqual(answers[i], expected[i], name);
      } finally {
        clearInterval(timer);
      }
      assert.ok(ticks >= 5, `the event loop ran ${ticks} timer turns while the reads waited`);
      await exited;
      await store.close();
    });

    it('a read meeting it past the busy timeout is StoreUnavailableError store_busy (a 503, not a 500)', async () => {
      const path = join(dir, 'recovering-timeout.db');
      const { store, reads } = await seeded(path, 50);
      const { exited } = await recoveringElsewhere(path, 2000);
      for (const [name, read] of Object.entries(reads)) {
        await assert.rejects(read(), (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy', name);
      }
      await exited;
      assert.equal(await reads.tokenRevoked!(), true, 'the store reads again once the lock is let go');
      await store.close();
    });
  });
});
