/**
 * The PostgreSQL store runs the same contract suite as SQLite, against the real server on
 * 127.0.0.1:5432 (database `test`; override with TESSERA_TEST_POSTGRES_URL), each run in its own
 * schema, dropped afterwards. Plus what only a multi-process database can show: two stores (two
 * instances) racing.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { clientRecord, newGrant, runStoreContract, testClock } from './contract.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schemas: string[] = [];
const schemaName = () => {
  const s = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  schemas.push(s);
  return s;
};

let reachable = true;
try {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  await c.connect();
  await c.end();
} catch {
  reachable = false;
}

after(async () => {
  if (!reachable || schemas.length === 0) return;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await c.end();
});

if (!reachable) {
  describe('store contract: postgres', () => {
    it.skip(`PostgreSQL is not reachable at ${url.replace(/\/\/[^@]*@/, '//')}`);
  });
} else {
  runStoreContract('postgres', () => PostgresStore.open({ connectionString: url, schema: schemaName() }), testClock());

  describe('postgres: two instances sharing one database', () => {
    it('never lets a child grant escape a concurrent revocation of its parent', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      try {
        const now = 1_800_000_000;
        await a.createClient(clientRecord({ id: 'agent' }, now));
        for (let round = 0; round < 20; round++) {
          const root = await a.createGrant(newGrant({}, now), now);
          assert.equal(typeof root, 'object');
          const rootId = (root as { id: string }).id;
          const children = Array.from({ length: 5 }, () => newGrant({ parentId: rootId }, now));
          const [, ...created] = await Promise.all([
            b.revokeGrants({ grantId: rootId }, { at: now, reason: 'race', entryExpiresAt: now + 600 }),
            ...children.map((g) => a.createGrant(g, now)),
          ]);
          // Every child either was refused, or exists and is revoked.
          for (const [i, r] of created.entries()) {
            const stored = await a.getGrant((children[i] as { id: string }).id);
            if (r === 'parent_inactive') assert.equal(stored, undefined);
            else assert.notEqual(stored?.revokedAt, null, 'a child created concurrently escaped the revocation');
          }
        }
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('runs a transaction PostgreSQL aborted to break a deadlock again (refresh reuse meeting a revocation of its tree)', async () => {
      const schema = schemaName();
      const store = await PostgresStore.open({ connectionString: url, schema });
      const other = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await other.connect();
      try {
        const now = 1_800_000_000;
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const g = await store.createGrant(newGrant({}, now), now);
        assert.equal(typeof g, 'object');
        const grantId = (g as { id: string }).id;
        const hash = `rt_${Math.random().toString(36).slice(2)}`;
        await store.createRefreshToken({
          hash,
          grantId,
          clientId: 'agent',
          createdAt: now,
          expiresAt: now + 3600,
          rotatedAt: now,
          revokedAt: null,
        });
        // Another instance revoking the tree: it holds the tree's lock, and will want the token's row.
        // Its deadlock check waits longer, so PostgreSQL aborts the store's transaction, not this one.
        await other.query("SET deadlock_timeout = '10s'");
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [grantId]);
        // The reuse locks the token's row, then waits for the tree's lock...
        const reuse = store.rotateRefreshToken(hash, {
          clientId: 'agent',
          nextHash: `${hash}_next`,
          nextExpiresAt: now + 7200,
          now: now + 10,
          graceSeconds: 0,
          entryExpiresAt: now + 600,
        });
        await new Promise((resolve) => setTimeout(resolve, 200));
        // ...while the revocation waits for the row: a deadlock, detected after deadlock_timeout (1 s).
        const revoking = other.query('UPDATE refresh_tokens SET revoked_at = $1 WHERE hash = $2', [now + 10, hash]);
        await revoking;
        await other.query('COMMIT');
        const r = await reuse;
        assert.equal(r.status, 'invalid', 'run again after the abort, it sees the token the other transaction revoked');
      } finally {
        await other.end();
        await store.close();
      }
    });

    it('keeps revocation log sequence numbers in commit order for a reader', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      try {
        const now = 1_800_000_000;
        await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            (i % 2 ? a : b).appendRevocations([{ kind: 'token', value: `j${i}`, issuer: null, at: now, expiresAt: now + 60 }]),
          ),
        );
        const entries = await a.revocationsSince(0, now);
        assert.equal(entries.length, 20);
        assert.deepEqual(
          entries.map((e) => e.seq),
          Array.from({ length: 20 }, (_, i) => i + 1),
        );
        assert.equal((await b.versions()).revocations, 20);
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
}
