import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { MIGRATIONS } from '../../src/store/sqlite/migrations.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { runStoreContract, testClock } from './contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'tessera-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

runStoreContract('sqlite (file)', async () => SqliteStore.open({ path: join(dir, `contract-${++n}.db`) }), testClock());
runStoreContract('sqlite (:memory:)', async () => SqliteStore.open({ path: ':memory:' }), testClock());

describe('sqlite store specifics', () => {
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

  it('refuses a database migrated by a newer Tessera', async () => {
    const path = join(dir, 'newer.db');
    (await SqliteStore.open({ path })).close();
    const db = new DatabaseSync(path);
    db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)').run(999);
    db.close();
    assert.throws(() => SqliteStore.open({ path }), /newer than this Tessera knows/);
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
});
