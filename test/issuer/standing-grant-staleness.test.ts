/**
 * A client-credentials token signed on a cached standing grant writes nothing to the store, so
 * only the signing process's revocation list stands between a grant revoked elsewhere and a new
 * token of it. The grant's revocation entry lives max_access_token_ttl + 60 s from the revocation:
 * a token signed on the grant more than 60 s after it outlives the entry, and every verifier
 * accepts it once the entry is dropped. An instance that has not read the revocation log for 30 s
 * reads it before handing out a cached grant, and refuses the token (503) when it cannot.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { bearer } from '../helpers/tokens.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await postgresReachable(url);

for (const driver of ['SQLite', 'PostgreSQL'] as const) {
  describe(`standing grants at an instance that has not read the revocation log lately (${driver})`, {
    skip: driver === 'PostgreSQL' && !reachable ? 'PostgreSQL is not reachable' : false,
  }, () => {
    const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}_standing`;
    let a: RunningIssuer;
    let b: RunningIssuer;
    let secret: string;
    /** Added to B's clock. */
    let skew = 0;

    before(async () => {
      a = await startIssuer(driver === 'PostgreSQL' ? { store: await PostgresStore.open({ connectionString: url, schema }) } : {});
      const storeB =
        driver === 'PostgreSQL'
          ? await PostgresStore.open({ connectionString: url, schema, readTimeoutMillis: 500 })
          : SqliteStore.open({ path: join(a.dir, 'tessera.db') });
      // B hears of A's revocations only from its poll, every minute (sync_interval's most): no LISTEN.
      Object.defineProperty(storeB, 'watchRevocations', { value: undefined });
      b = await startIssuer({
        store: storeB,
        master: a.master,
        config: { token_service: { issuer: a.url, sync_interval: '60s' } },
        clock: () => Date.now() + skew,
      });
      secret = (await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] })).secret;
      await b.service.sync();
    });
    after(async () => {
      await b?.close();
      await a?.close();
      if (driver === 'PostgreSQL') {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
    });

    const tokenAtB = () => b.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('agent', secret) });
    const grantOf = (t: string) => String(decodeJwt(t).grant_id);

    it('attack: its standing grant revoked at another instance 31 s before B’s next poll: B signs no token on it (reads the log first, or refuses 503 when it cannot)', async () => {
      const first = await tokenAtB();
      assert.equal(first.status, 200);
      const revoked = (await first.json()) as { access_token: string };
      const grant = grantOf(revoked.access_token);
      assert.equal((await a.service.revokeGrants({ grantId: grant }, 'test')).length, 1);
      // Half a minute on B's clock, its next poll not yet due.
      skew = 31_000;
      const admin = driver === 'PostgreSQL' ? new pg.Client({ connectionString: url }) : undefined;
      try {
        if (admin !== undefined) {
          // B's reads of the log held up (a migration's ALTER TABLE, VACUUM FULL): it cannot tell.
          await admin.connect();
          await admin.query('BEGIN');
          await admin.query(`LOCK TABLE ${schema}.revocations IN ACCESS EXCLUSIVE MODE`);
          const refused = await tokenAtB();
          const body = await refused.text();
          const minted = refused.status === 200 ? grantOf((JSON.parse(body) as { access_token: string }).access_token) : undefined;
          assert.notEqual(minted, grant, 'B signed a token on the revoked grant it could not check');
          assert.equal(refused.status, 503, body);
          await admin.query('ROLLBACK');
        }
        const res = await tokenAtB();
        assert.equal(res.status, 200);
        const fresh = (await res.json()) as { access_token: string };
        assert.notEqual(grantOf(fresh.access_token), grant, 'B signed a token on a grant revoked 31 s before');
        // And B, having read the log, refuses the revoked grant's older token too.
        const v = inProcessVerifier(b);
        const r = await v.verify(bearer(revoked.access_token));
        assert.equal(r.ok ? 'accepted' : r.error.code, 'token_revoked');
      } finally {
        skew = 0;
        await admin?.query('ROLLBACK').catch(() => {});
        await admin?.end().catch(() => {});
      }
    });

    it('within 30 s of its last read, a cached standing grant is handed out without reading the log', async () => {
      await b.service.sync();
      const one = ((await (await tokenAtB()).json()) as { access_token: string }).access_token;
      skew = 20_000;
      try {
        const two = ((await (await tokenAtB()).json()) as { access_token: string }).access_token;
        assert.equal(grantOf(two), grantOf(one));
      } finally {
        skew = 0;
      }
    });
  });
}
