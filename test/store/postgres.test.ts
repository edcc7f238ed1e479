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
import { newGrant, runStoreContract, testClock } from './contract.ts';

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
        for (let round = 0; round < 20; round++) {
          const root = await a.createGrant(newGrant({}, now), now);
          assert.notEqual(root, 'parent_inactive');
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
