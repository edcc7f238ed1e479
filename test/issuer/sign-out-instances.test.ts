/**
 * A login session signed out at two instances at once (two stores on one PostgreSQL schema, two
 * on one SQLite file: what two processes of one deployment hold): one entry in the revocation log,
 * whichever instance wrote it, and both refuse the session from then on, from the store and from
 * their own copy of the log.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { loginSessionScope } from '../../src/issuer/revoke.ts';
import type { Store } from '../../src/store/contract.ts';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { postgresReachable } from '../helpers/postgres.ts';

const PG_URL = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgSkip = (await postgresReachable(PG_URL)) ? false : 'PostgreSQL is not reachable';

const SESSIONS = 25;

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`sign-out at two instances at once: ${backend}`, { skip: backend === 'postgres' ? pgSkip : false }, () => {
    const schema = `tessera_signout_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    let a: RunningIssuer;
    let b: RunningIssuer;
    const open = (): Promise<Store> | undefined =>
      backend === 'postgres' ? PostgresStore.open({ connectionString: PG_URL, schema }) : undefined;

    before(async () => {
      const store = await open();
      a = await startIssuer(store !== undefined ? { store } : {});
      // Another process of the deployment: same master key, its own connection to the same store.
      const other = await open();
      b = await startIssuer({
        master: a.master,
        ...(other !== undefined ? { store: other } : { dir: a.dir }),
        config: { token_service: { issuer: a.url } },
      });
    });
    after(async () => {
      await b?.close();
      await a?.close();
      if (backend === 'postgres' && !pgSkip) {
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
    });

    it('each session signed out at both instances at once (copies of one cookie) is one entry of the log, and refused at both', async () => {
      const now = Math.floor(Date.now() / 1000);
      const ids = Array.from({ length: SESSIONS }, () => randomUUID());
      await Promise.all(ids.map((id) => Promise.all([a.service.endLoginSession(id, now + 600), b.service.endLoginSession(id, now + 600)])));
      const log = await a.store.revocationsSince(0, now);
      for (const id of ids) {
        assert.deepEqual(
          log.filter((e) => e.value === id).map((e) => [e.kind, e.issuer]),
          [['token', loginSessionScope(a.url)]],
          `one entry for session ${id}`,
        );
      }
      assert.equal((await b.store.versions()).revocations, log.at(-1)?.seq, 'the log’s counter is its last entry');
      // Both refuse every session: from the store, and once synced from their own copy of the log.
      for (const at of [a, b]) {
        await at.service.sync();
        for (const id of ids) {
          assert.equal(await at.service.loginSessionEnded(id), true);
          assert.equal(
            at.service.revocations.isRevoked({
              issuer: loginSessionScope(a.url),
              subject: undefined,
              clientId: undefined,
              delegationId: undefined,
              tokenId: id,
              issuedAt: undefined,
              expiresAt: Number.POSITIVE_INFINITY,
            }),
            true,
          );
        }
        assert.equal(await at.service.loginSessionEnded(randomUUID()), false, 'another session is not');
      }
    });
  });
}
