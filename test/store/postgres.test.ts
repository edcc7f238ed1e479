/**
 * The PostgreSQL store runs the same contract suite as SQLite, against the real server on
 * 127.0.0.1:5432 (database `test`; override with TESSERA_TEST_POSTGRES_URL), each run in its own
 * schema, dropped afterwards. Plus what only a multi-process database can show: two stores (two
 * instances) racing, and revocation-log appends pushed from one store to another (LISTEN/NOTIFY).
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { inspect } from 'node:util';
import pg from 'pg';
import { idFloor, uuidv7 } from '../../src/audit/id.ts';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { RevocationFeed } from '../../src/issuer/revocation-feed.ts';
import { type GrantRecord, type NewGrant, type Store, StoreOpenError, StoreUnavailableError } from '../../src/store/contract.ts';
import { LISTENER_APPLICATION_NAME, Listener } from '../../src/store/postgres/listener.ts';
import { PostgresStore, type PostgresStoreOptions, revocationChannel } from '../../src/store/postgres/store.ts';
import { a2aTaskKey } from '../../src/store/rows.ts';
import { until } from '../helpers/net.ts';
import { postgresReachable, storeBehindFaultProxy } from '../helpers/postgres.ts';
import { commandComplete, faultProxy } from '../helpers/tcp-fault-proxy.ts';
import { clientRecord, code, newGrant, runStoreContract, testClock } from './contract.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schemas: string[] = [];
const schemaName = () => {
  const s = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  schemas.push(s);
  return s;
};

const reachable = await postgresReachable(url);

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
  runStoreContract('postgres', (tuning) => PostgresStore.open({ connectionString: url, schema: schemaName(), ...tuning }), testClock());

  /**
   * A store on a fresh schema, its sessions named by an application_name of their own (so a test
   * can find or end them, never another test's), opened with `options`; and `other`, a plain
   * session in that schema (another instance, or an operator's psql) to hold locks against it.
   * `close()` rolls back whatever `other` left open, then ends it and the store.
   */
  async function heldStore(options: Omit<PostgresStoreOptions, 'connectionString' | 'schema'> = {}) {
    const schema = schemaName();
    const app = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    const store = await PostgresStore.open({ connectionString: `${url}?application_name=${app}`, schema, ...options });
    const other = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
    await other.connect();
    return {
      store,
      other,
      schema,
      app,
      close: async () => {
        await other.query('ROLLBACK').catch(() => {});
        await other.end();
        await store.close();
      },
    };
  }

  /**
   * A TCP forwarder on loopback in front of PostgreSQL. `blackHole()` makes every connection open
   * at that moment stop carrying bytes, both ways, without closing anything (a silent network
   * partition: no RST, no FIN); connections made afterwards are forwarded.
   */
  async function forwarder(): Promise<{ url: string; blackHole(): void; close(): Promise<void> }> {
    const target = new URL(url);
    const pairs: { client: Socket; server: Socket; holed: boolean }[] = [];
    const server: Server = createServer((client) => {
      const upstream = connect(Number(target.port || 5432), target.hostname);
      const pair = { client, server: upstream, holed: false };
      pairs.push(pair);
      client.on('data', (d) => {
        if (!pair.holed) upstream.write(d);
      });
      upstream.on('data', (d) => {
        if (!pair.holed) client.write(d);
      });
      const drop = () => {
        if (pair.holed) return; // a black hole tells neither side anything
        client.destroy();
        upstream.destroy();
      };
      client.on('close', drop);
      upstream.on('close', drop);
      client.on('error', () => {});
      upstream.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const proxied = new URL(url);
    proxied.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
    return {
      url: proxied.href,
      blackHole: () => {
        for (const p of pairs) p.holed = true;
      },
      close: async () => {
        for (const p of pairs) {
          p.client.destroy();
          p.server.destroy();
        }
        await new Promise((r) => server.close(r));
      },
    };
  }

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

    it('attack: two instances signing out one login session, or revoking one grant, at once, 20 rounds: exactly one of them is told it appended the session’s entry, and each grant is reported newly revoked by exactly one (so one record of each is kept past a full audit queue, not one per instance)', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      try {
        const now = 1_800_000_000;
        await a.createClient(clientRecord({ id: 'agent' }, now));
        const opts = { at: now, reason: 'race', entryExpiresAt: now + 600 };
        for (let round = 0; round < 20; round++) {
          const ended = {
            kind: 'token' as const,
            value: `session-${round}`,
            issuer: 'https://issuer.test#login-sessions',
            at: now,
            expiresAt: now + 600,
          };
          const appended = await Promise.all([a, b, a, b].map((s) => s.appendRevocations([ended])));
          assert.equal(appended.filter((n) => n === 1).length, 1, `round ${round}: ${appended}`);
          assert.equal(appended.filter((n) => n === 0).length, 3);
          const root = await a.createGrant(newGrant({}, now), now);
          assert.equal(typeof root, 'object');
          const rootId = (root as { id: string }).id;
          const calls = await Promise.all([a, b, a, b].map((s) => s.revokeGrants({ grantId: rootId }, opts)));
          assert.deepEqual(calls.map((r) => r.length).toSorted(), [0, 0, 0, 1], `round ${round}`);
        }
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('revocation by subject or client meets no tree begun midway: a new grant of that subject or client waits for it, and it waits for one in flight', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      // Another instance's transaction, holding what a revocation (or a grant creation) holds until it commits.
      const other = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await other.connect();
      const settled = <T>(p: Promise<T>) => {
        const state = { done: false };
        void p.then(() => {
          state.done = true;
        });
        return state;
      };
      const pause = () => new Promise((r) => setTimeout(r, 300));
      try {
        const now = 1_800_000_000;
        await a.createClient(clientRecord({ id: 'agent' }, now));
        // A revocation of carol's grants in progress: a tree of hers cannot begin until it commits.
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", ['carol']);
        const creating = a.createGrant(newGrant({ subject: 'carol' }, now), now);
        const created = settled(creating);
        await pause();
        assert.equal(created.done, false, 'a new root grant of carol waits for the revocation of carol');
        await other.query('COMMIT');
        assert.equal(typeof (await creating), 'object');
        // And the other way round: a revocation of carol waits for a grant of hers in flight.
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", ['carol']);
        const bySubject = a.revokeGrants({ subject: 'carol' }, { at: now, reason: 'race', entryExpiresAt: now + 600 });
        const subjectDone = settled(bySubject);
        await pause();
        assert.equal(subjectDone.done, false, 'the revocation of carol waits for the grant being created');
        await other.query('COMMIT');
        assert.equal((await bySubject).length, 1);
        // A grant of the client in flight (its row FOR SHARE) holds a revocation by client back.
        await other.query('BEGIN');
        await other.query("SELECT 1 FROM clients WHERE id = 'agent' FOR SHARE");
        const byClient = a.revokeGrants({ clientId: 'agent' }, { at: now, reason: 'race', entryExpiresAt: now + 600 });
        const clientDone = settled(byClient);
        await pause();
        assert.equal(clientDone.done, false, 'the revocation of the client waits for its grant being created');
        await other.query('COMMIT');
        await byClient;
      } finally {
        await other.end();
        await a.close();
      }
    });

    it("refresh reuse takes its tree's lock before the token's row, as a revocation does: a revocation holding the tree updates the row without waiting (no deadlock)", async () => {
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
        // Waiting for that row past lock_timeout (shorter than the 1 s deadlock check) fails it.
        await other.query("SET lock_timeout = '500ms'");
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [grantId]);
        const reuse = store.rotateRefreshToken(hash, {
          clientId: 'agent',
          nextHash: `${hash}_next`,
          nextExpiresAt: now + 7200,
          now: now + 10,
          graceSeconds: 0,
          entryExpiresAt: now + 600,
        });
        let done = false;
        void reuse.then(() => {
          done = true;
        });
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(done, false, 'the reuse waits for the tree being revoked');
        // The reuse holds nothing the revocation wants: the row is free.
        await other.query('UPDATE refresh_tokens SET revoked_at = $1 WHERE hash = $2', [now + 10, hash]);
        await other.query('COMMIT');
        const r = await reuse;
        assert.equal(r.status, 'invalid', 'it sees the token the revocation revoked');
      } finally {
        await other.end();
        await store.close();
      }
    });

    it("authorization code reuse takes the code's row before its tree's lock, as a subject's or client's revocation does (its unredeemed codes' rows, then the trees): a transaction holding the row takes the tree without waiting (no deadlock)", async () => {
      const schema = schemaName();
      const store = await PostgresStore.open({ connectionString: url, schema });
      const other = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await other.connect();
      try {
        const now = 1_800_000_000;
        const { hash, redeem } = await pendingCode(store, now);
        const grant = newGrant({ kind: 'authorization_code', subject: 'alice@example.com' }, now);
        assert.equal((await redeem(grant)).status, 'redeemed');
        // Another transaction holds the code's row (a revocation's delete of unredeemed codes keeps
        // the row of one redeemed while it waited locked) and will want the tree's lock. Waiting for
        // that lock past lock_timeout (shorter than the 1 s deadlock check) fails it.
        await other.query("SET lock_timeout = '500ms'");
        await other.query('BEGIN');
        await other.query('SELECT 1 FROM authorization_codes WHERE hash = $1 FOR UPDATE', [hash]);
        const reuse = redeem(grant);
        let done = false;
        void reuse.then(
          () => {
            done = true;
          },
          () => {
            done = true;
          },
        );
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(done, false, 'the reuse waits for the row');
        // The reuse holds nothing the other wants: the tree is free.
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [grant.id]);
        await other.query('DELETE FROM authorization_codes WHERE hash = $1', [hash]);
        await other.query('COMMIT');
        const r = await reuse;
        assert.equal(r.status, 'invalid', 'it sees the code the other transaction deleted');
      } finally {
        await other.end();
        await store.close();
      }
    });

    /**
     * Counts the transactions the store begins (a run again after a deadlock's abort is one more),
     * and how many of `app`'s sessions wait for a lock, read by a session of its own outside a
     * transaction (one inside reads a snapshot of pg_stat_activity taken once).
     */
    async function lockWatch(app: string) {
      const watch = new pg.Client({ connectionString: url });
      await watch.connect();
      let runs = 0;
      const query = pg.Client.prototype.query;
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        if (typeof args[0] === 'string' && args[0].startsWith('BEGIN;')) runs++;
        return (query as (...a: unknown[]) => unknown).apply(this, args);
      } as typeof query;
      return {
        runs: () => runs,
        /**
         * How many of the store's sessions are waiting for a lock `pid` holds: who a session waits
         * for, not only that it waits (a session PostgreSQL has just woken still shows its old wait
         * until it is scheduled, and under load that can take a while).
         */
        blockedBy: async (pid: number) =>
          Number(
            (
              await watch.query(
                'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pg_blocking_pids(pid) @> ARRAY[$2::int]',
                [app, pid],
              )
            ).rows[0].n,
          ),
        waiting: async () =>
          Number(
            (
              await watch.query(
                "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                [app],
              )
            ).rows[0].n,
          ),
        end: async () => {
          pg.Client.prototype.query = query;
          await watch.end();
        },
      };
    }

    /**
     * Client `agent` and an unredeemed code of alice's for it, stored; `redeem(grant)` redeems the
     * code, beginning `grant` (a new grant of alice's where none is given).
     */
    async function pendingCode(store: PostgresStore, now: number) {
      await store.createClient(clientRecord({ id: 'agent' }, now));
      const record = code({}, now);
      await store.createAuthorizationCode(record);
      const { hash } = record;
      const redeem = (grant: NewGrant = newGrant({ kind: 'authorization_code', subject: 'alice@example.com' }, now)) =>
        store.redeemAuthorizationCode(hash, {
          clientId: 'agent',
          loginScope: 'https://issuer.test#login-sessions',
          grant,
          refreshToken: null,
          now,
          entryExpiresAt: now + 600,
        });
      return { hash, redeem };
    }

    it('concurrent redemptions of one code, some begun before its winner committed and some after, take their locks in one order: none is made a deadlock’s victim (each transaction runs once, no 1 s deadlock check), one wins, the rest are reuses', async () => {
      const { store, other, schema, app, close } = await heldStore();
      const w = await lockWatch(app);
      // Another transaction in a tree.
      const trees = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await trees.connect();
      try {
        const now = 1_800_000_000;
        const { redeem } = await pendingCode(store, now);
        const grants = Array.from({ length: 8 }, () => newGrant({ kind: 'authorization_code', subject: 'alice@example.com' }, now));
        const before = w.runs();
        // The winner is held at alice's lock (taken after the code's row) while three more
        // redemptions queue behind it: a winner slow to commit.
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", ['alice@example.com']);
        const early = grants.slice(0, 4).map(redeem);
        await until(async () => (await w.waiting()) === 4);
        // Whichever tree the winner begins is held too (a rotation or a revocation under way in it).
        await trees.query('BEGIN');
        for (const g of grants) await trees.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [g.id]);
        await other.query('COMMIT');
        const [won] = await Promise.race(early.map((p) => p.then((r) => [r])));
        assert.equal(won?.status, 'redeemed');
        await until(async () => (await w.waiting()) === 3);
        // Four more begin after the winner committed: they find the code redeemed, with its tree.
        const late = grants.slice(4).map(redeem);
        await until(async () => (await w.waiting()) === 7);
        await trees.query('COMMIT');
        const results = await Promise.all([...early, ...late]);
        assert.equal(results.filter((r) => r.status === 'redeemed').length, 1);
        const reuses = results.filter((r) => r.status === 'reused');
        assert.equal(reuses.length, 7);
        // The reuse cascade: each names the winner's grant, and the first revoked its tree.
        const winner = won?.status === 'redeemed' ? won.grant.id : '';
        assert.deepEqual(new Set(reuses.map((r) => r.grantId)), new Set([winner]));
        assert.deepEqual(
          reuses.flatMap((r) => r.revokedGrantIds),
          [winner],
        );
        assert.notEqual((await store.getGrant(winner))?.revokedAt ?? null, null);
        assert.equal(w.runs() - before, 8, 'a redemption was run again: PostgreSQL aborted it to break a deadlock');
      } finally {
        await trees.query('ROLLBACK').catch(() => {});
        await trees.end();
        await w.end();
        await close();
      }
    });

    it('a sign-out racing the reuse cascade of a refresh token of the person’s approved tree takes the tree before the remembered consent, as the cascade does: neither is made a deadlock’s victim (each transaction runs once), the tree is revoked and the consent forgotten', async () => {
      const { store, other, app, close } = await heldStore();
      const w = await lockWatch(app);
      try {
        const now = 1_800_000_000;
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const root = await store.createGrant(newGrant({ kind: 'authorization_code', subject: 'alice@example.com' }, now), now);
        assert.equal(typeof root, 'object');
        const rootId = (root as { id: string }).id;
        await store.rememberConsent({
          subject: 'alice@example.com',
          clientId: 'agent',
          issuer: 'https://issuer.test',
          identitySource: 'header',
          scopes: ['api:read'],
          scopesDigest: 'digest',
          audiences: ['https://api.test'],
          redirectUri: 'https://app.test/cb',
          clientFingerprint: 'fingerprint',
          approvalHash: 'approval',
          createdAt: now,
          expiresAt: now + 3600,
        });
        const hash = `rt_${Math.random().toString(36).slice(2)}`;
        await store.createRefreshToken({
          hash,
          grantId: rootId,
          clientId: 'agent',
          createdAt: now,
          expiresAt: now + 3600,
          rotatedAt: null,
          revokedAt: null,
        });
        const rotate = () =>
          store.rotateRefreshToken(hash, {
            clientId: 'agent',
            nextHash: `rt_${Math.random().toString(36).slice(2)}`,
            nextExpiresAt: now + 3600,
            now,
            graceSeconds: 0,
            entryExpiresAt: now + 600,
          });
        assert.equal((await rotate()).status, 'rotated');
        const before = w.runs();
        // The tree is held (a rotation under way in it): the replayed token queues on it first,
        // then the sign-out, holding alice's lock.
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [rootId]);
        const reuse = rotate();
        await until(async () => (await w.waiting()) === 1);
        const signOut = store.revokeGrants({ subject: 'alice@example.com' }, { at: now, reason: 'sign_out', entryExpiresAt: now + 600 });
        await until(async () => (await w.waiting()) === 2);
        await other.query('COMMIT');
        const [reused, revoked] = await Promise.all([reuse, signOut]);
        assert.equal(reused.status, 'reused');
        assert.deepEqual(reused.status === 'reused' ? reused.revokedGrantIds : [], [rootId]);
        assert.deepEqual(revoked, []);
        assert.notEqual((await store.getGrant(rootId))?.revokedAt ?? null, null);
        assert.equal(await store.getRememberedConsent('alice@example.com', 'agent', now), undefined);
        assert.equal(w.runs() - before, 2, 'a transaction was run again: PostgreSQL aborted it to break a deadlock');
      } finally {
        await w.end();
        await close();
      }
    });

    it('a client’s revocation that waited for a code’s row while the code was redeemed, meeting a replay of that code, takes the row before the new tree, as the replay does: neither is made a deadlock’s victim (each transaction runs once), the tree is revoked', async () => {
      const { store, other, schema, app, close } = await heldStore();
      const w = await lockWatch(app);
      // A session holding the client's row shared (a grant creation for it under way).
      const creation = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await creation.connect();
      try {
        const now = 1_800_000_000;
        const { redeem } = await pendingCode(store, now);
        const before = w.runs();
        // The redemption is held at alice's lock, holding the code's row; the revocation's delete
        // of the client's unredeemed codes queues on that row.
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", ['alice@example.com']);
        await creation.query('BEGIN');
        await creation.query("SELECT 1 FROM clients WHERE id = 'agent' FOR SHARE");
        const winner = redeem();
        await until(async () => (await w.waiting()) === 1);
        const revocation = store.revokeGrants({ clientId: 'agent' }, { at: now, reason: 'client_disabled', entryExpiresAt: now + 600 });
        await until(async () => (await w.waiting()) === 2);
        await other.query('COMMIT');
        const won = await winner;
        assert.equal(won.status, 'redeemed');
        const grantId = won.status === 'redeemed' ? won.grant.id : '';
        // The revocation, past the code (redeemed, kept locked), waits for the client's row; the
        // code is replayed meanwhile. Known by whom it waits for, the session holding the client's
        // row, not by how many wait: woken by the winner's commit, the revocation shows its wait
        // for the code's row until it runs, and a replay begun then took the row first (the
        // revocation then found the tree revoked by it, and the replay never waited: timed out).
        const creationPid = Number((await creation.query('SELECT pg_backend_pid() AS p')).rows[0].p);
        await until(async () => (await w.blockedBy(creationPid)) === 1);
        const replay = redeem();
        await until(async () => (await w.waiting()) === 2);
        await creation.query('COMMIT');
        const [revoked, reused] = await Promise.all([revocation, replay]);
        assert.deepEqual(
          revoked.map((g) => g.id),
          [grantId],
        );
        assert.equal(reused.status, 'reused');
        assert.equal(reused.status === 'reused' ? reused.grantId : '', grantId);
        assert.notEqual((await store.getGrant(grantId))?.revokedAt ?? null, null);
        assert.equal(w.runs() - before, 3, 'a transaction was run again: PostgreSQL aborted it to break a deadlock');
      } finally {
        await creation.query('ROLLBACK').catch(() => {});
        await creation.end();
        await w.end();
        await close();
      }
    });

    it('runs a transaction PostgreSQL aborted to break a deadlock again (a grant creation, holding the subject lock and wanting the tree, meeting a transaction that holds the tree and wants the subject lock)', async () => {
      const { store, other, close } = await heldStore();
      try {
        const now = 1_800_000_000;
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const parent = await store.createGrant(newGrant({ subject: 'alice' }, now), now);
        assert.equal(typeof parent, 'object');
        const parentId = (parent as { id: string }).id;
        // Another transaction holds the tree's lock and will want alice's lock: the opposite order
        // of a grant creation's (none of the store's transactions takes them so). Its deadlock
        // check waits longer, so PostgreSQL aborts the store's transaction, not this one. Both are
        // advisory locks: the abort hands alice's lock to the other at once, so the run again
        // waits for it, however late the other's session gets the CPU back.
        await other.query("SET deadlock_timeout = '10s'");
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [parentId]);
        // The creation takes alice's lock, then waits for the tree's...
        const creating = store.createGrant(newGrant({ subject: 'alice', parentId }, now), now);
        await new Promise((resolve) => setTimeout(resolve, 200));
        // ...while the other waits for alice's: a deadlock, detected after deadlock_timeout (1 s).
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", ['alice']);
        await other.query('UPDATE grants SET revoked_at = $1 WHERE id = $2', [now, parentId]);
        await other.query('COMMIT');
        assert.equal(await creating, 'parent_inactive', 'run again after the abort, it sees the parent the other transaction revoked');
      } finally {
        await close();
      }
    });

    it('an instance cut off mid-transaction (silent partition) holds its locks only until idleInTransactionTimeoutMillis: another instance revoking the client is not held for ever', async () => {
      const schema = schemaName();
      const fwd = await forwarder();
      const a = await PostgresStore.open({ connectionString: fwd.url, schema, idleInTransactionTimeoutMillis: 500 });
      const b = await PostgresStore.open({ connectionString: url, schema });
      const other = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await other.connect();
      try {
        const now = 1_800_000_000;
        await b.createClient(clientRecord({ id: 'agent' }, now));
        // A's grant creation takes the client's row (FOR SHARE), then waits for carol's lock...
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", ['carol']);
        const stranded = a.createGrant(newGrant({ subject: 'carol' }, now), now).catch((e: unknown) => e);
        await new Promise((r) => setTimeout(r, 300));
        // ...and is cut off: its session, idle in its transaction, keeps both until PostgreSQL hears
        // of the loss (TCP keepalive: hours).
        fwd.blackHole();
        await other.query('COMMIT');
        const started = Date.now();
        const revoked = await Promise.race([
          b.revokeGrants({ clientId: 'agent' }, { at: now, reason: 'client_disabled', entryExpiresAt: now + 600 }),
          new Promise((_, reject) => setTimeout(() => reject(new Error('revocation still waiting after 5 s')), 5000)),
        ]);
        assert.deepEqual(revoked, []);
        assert.ok(Date.now() - started < 3000);
        assert.equal(typeof (await b.createGrant(newGrant({ subject: 'carol' }, now), now)), 'object');
        await fwd.close();
        assert.ok((await stranded) instanceof StoreUnavailableError);
      } finally {
        await other.end();
        await fwd.close();
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

  describe('postgres: overlapping revocations racing', () => {
    /**
     * Counts the statements PostgreSQL aborted to break a deadlock (SQLSTATE 40P01), on every
     * session of this process: the store runs such a transaction again, so the callers never see them.
     */
    function deadlockCount() {
      let n = 0;
      const query = pg.Client.prototype.query;
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        const r = (query as (...a: unknown[]) => unknown).apply(this, args);
        if (r instanceof Promise) {
          r.then(undefined, (e: { code?: unknown }) => {
            if (e?.code === '40P01') n++;
          });
        }
        return r;
      } as typeof query;
      return {
        count: () => n,
        end: () => {
          pg.Client.prototype.query = query;
        },
      };
    }

    it('40 pairs of overlapping revocations at once (by subject, by subject and issuer, by client, of a tree and of a subtree inside it, a refresh token’s reuse cascade), with many unredeemed codes of each subject and client and a codes table PostgreSQL scans in step (synchronized sequential scans, each starting where another is): no deadlock (SQLSTATE 40P01), every grant and refresh token revoked, every unredeemed code and remembered consent deleted', async (t) => {
      const PAIRS = 40;
      const ROUNDS = 2;
      const now = 1_800_000_000;
      const issuer = 'https://issuer.test';
      const schema = schemaName();
      const sql = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await sql.connect();
      // Every call of the round at once, on two instances: the pools and their waits must hold them all.
      const open = () =>
        PostgresStore.open({ connectionString: url, schema, max: 15, requestTimeoutMillis: 60_000, connectionTimeoutMillis: 120_000 });
      const one = await open();
      const two = await open();
      const deadlocks = deadlockCount();
      try {
        // PostgreSQL synchronizes the sequential scans of a table larger than a quarter of
        // shared_buffers: a scan begins where one under way is, wraps around, and so meets the rows
        // in another order than a scan begun elsewhere. The codes table (no index on subject or
        // client: every DELETE of a subject's or client's codes scans it) is made that large, with
        // redeemed codes of nobody's concern, stored uncompressed, the codes of the pairs spread
        // among them.
        const buffers = Number((await sql.query("SELECT setting::bigint AS n FROM pg_settings WHERE name = 'shared_buffers'")).rows[0].n);
        if (buffers > 65_536) {
          t.skip(`shared_buffers is ${buffers} pages: the table scanned in step would be too large for a test`);
          return;
        }
        await sql.query('ALTER TABLE authorization_codes ALTER COLUMN redirect_uri SET STORAGE PLAIN');
        // About three rows of 2,000 bytes a page, a quarter more than a quarter of the buffers.
        const filler = Math.ceil((buffers / 4) * 1.25 * 3);
        for (let round = 0; round < ROUNDS; round++) {
          const subject = (i: number) => `person${round}_${i}`;
          const client = (i: number) => `agent${round}_${i % PAIRS}`;
          for (let i = 0; i < PAIRS; i++) await one.createClient(clientRecord({ id: client(i) }, now));
          // Each pair's person has 30 unredeemed codes for the pair's client and 30 for the next
          // pair's (so one client's revocation overlaps two people's), spread through the table.
          await sql.query(
            `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at, consumed_at)
             SELECT hash, client_id, redirect_uri, 'x', subject, $1, '[]', '[]', $2::bigint, $2::bigint + 60, consumed_at FROM (
               SELECT 'filler${round}_' || k AS hash, 'filler' AS client_id, repeat('x', 2000) AS redirect_uri, 'filler' AS subject, $2::bigint AS consumed_at
               FROM generate_series(1, $3::int) k
               UNION ALL
               SELECT 'code${round}_' || p || '_' || k, 'agent${round}_' || ((p + k % 2) % $4::int), 'https://app.test/cb', 'person${round}_' || p, NULL
               FROM generate_series(0, $4::int - 1) p, generate_series(0, 59) k
             ) s ORDER BY random()`,
            [issuer, now, round === 0 ? filler : 0, PAIRS],
          );
          // Four approved trees a person (with the pair's client and the next pair's), each of a
          // root, 25 children and 25 grandchildren under the first child; a refresh token per
          // grant, the roots' rotated (replayed, a reuse cascade); a remembered consent a client.
          await sql.query(
            `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, scopes, audiences, created_at, expires_at)
             SELECT 'g${round}_' || p || '_' || t, NULL, 'g${round}_' || p || '_' || t, 0, 'authorization_code', $1,
                    'person${round}_' || p, 'agent${round}_' || ((p + t % 2) % $3::int), '[]', '[]', $2::bigint, $2::bigint + 3600
             FROM generate_series(0, $3::int - 1) p, generate_series(0, 3) t`,
            [issuer, now, PAIRS],
          );
          for (const [parent, suffix, depth] of [
            ['r.id', "'_' || k", 1],
            ["r.id || '_0'", "'_0_' || k", 2],
          ] as const) {
            await sql.query(
              `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, scopes, audiences, created_at, expires_at)
               SELECT r.id || ${suffix}, ${parent}, r.id, ${depth}, 'token_exchange', r.issuer, r.subject, r.client_id, '[]', '[]', r.created_at, r.expires_at
               FROM grants r, generate_series(0, 24) k WHERE r.parent_id IS NULL AND r.id LIKE 'g${round}\\_%' ORDER BY random()`,
            );
          }
          await sql.query(
            `INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at)
             SELECT 'rt_' || id, id, client_id, $1::bigint, $1::bigint + 3600, CASE WHEN parent_id IS NULL THEN $1::bigint END
             FROM grants WHERE id LIKE 'g${round}\\_%' ORDER BY random()`,
            [now],
          );
          await sql.query(
            `INSERT INTO remembered_consents (subject, client_id, issuer, identity_source, scopes, scopes_digest, audiences, redirect_uri, client_fingerprint, approval_hash, created_at, expires_at)
             SELECT 'person${round}_' || p, 'agent${round}_' || ((p + d) % $3::int), $1, 'header', '[]', 'd', '[]', 'https://app.test/cb', 'f', 'a', $2::bigint, $2::bigint + 3600
             FROM generate_series(0, $3::int - 1) p, generate_series(0, 1) d ORDER BY random()`,
            [issuer, now, PAIRS],
          );
          await sql.query('ANALYZE');
          const options = (reason: string) => ({ at: now, reason, entryExpiresAt: now + 600 });
          const calls: Promise<unknown>[] = [];
          for (let i = 0; i < PAIRS; i++) {
            const [a, b] = i % 2 === 0 ? [one, two] : [two, one];
            calls.push(
              a.revokeGrants({ subject: subject(i) }, options('sign_out')),
              b.revokeGrants({ clientId: client(i) }, options('client_disabled')),
              b.revokeGrants({ subject: subject(i), issuer }, options('sign_out')),
              a.revokeGrants({ grantId: `g${round}_${i}_0` }, options('admin')),
              b.revokeGrants({ grantId: `g${round}_${i}_0_0` }, options('admin')),
              a.rotateRefreshToken(`rt_g${round}_${i}_1`, {
                clientId: client(i + 1),
                nextHash: `next${round}_${i}`,
                nextExpiresAt: now + 3600,
                now,
                graceSeconds: 0,
                entryExpiresAt: now + 600,
              }),
            );
          }
          const settled = await Promise.allSettled(calls);
          assert.equal(deadlocks.count(), 0, `PostgreSQL aborted transactions to break deadlocks (round ${round})`);
          assert.deepEqual(
            settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason)),
            [],
          );
          const left = async (q: string) => Number((await sql.query(q)).rows[0].n);
          assert.equal(await left(`SELECT count(*) AS n FROM grants WHERE id LIKE 'g${round}\\_%' AND revoked_at IS NULL`), 0);
          assert.equal(
            await left(`SELECT count(*) AS n FROM refresh_tokens WHERE hash LIKE 'rt\\_g${round}\\_%' AND revoked_at IS NULL`),
            0,
          );
          assert.equal(await left(`SELECT count(*) AS n FROM authorization_codes WHERE hash LIKE 'code${round}\\_%'`), 0);
          assert.equal(await left(`SELECT count(*) AS n FROM remembered_consents WHERE subject LIKE 'person${round}\\_%'`), 0);
        }
      } finally {
        deadlocks.end();
        await sql.end();
        await one.close();
        await two.close();
      }
    });
  });

  describe('postgres: a wide grant tree', () => {
    it('reads a grant tree with a level wider than a spread argument list (150,000 children of one grant) without a stack overflow', async () => {
      const schema = schemaName();
      const store = await PostgresStore.open({ connectionString: url, schema });
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        const now = 1_800_000_000;
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const root = await store.createGrant(newGrant({}, now), now);
        assert.equal(typeof root, 'object');
        const rootId = (root as { id: string }).id;
        await c.query(
          `INSERT INTO ${schema}.grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
           SELECT 'wide-' || i, g.id, g.root_id, 1, g.kind, g.issuer, g.subject, g.client_id, NULL, g.scopes, g.audiences, g.created_at, g.expires_at
           FROM generate_series(1, 150000) AS i, ${schema}.grants g WHERE g.id = $1`,
          [rootId],
        );
        assert.equal((await store.grantSubtree(rootId)).length, 150_001);
      } finally {
        await c.end();
        await store.close();
      }
    });
  });

  describe('postgres: revoking a large tree within the default request timeout', () => {
    const now = 1_800_000_000;

    /** A feed on another store instance, as another `tessera serve` replays the log: the grant ids it applies. */
    async function feedGrants(schema: string): Promise<Set<string>> {
      const other = await PostgresStore.open({ connectionString: url, schema });
      try {
        const seen = new Set<string>();
        const feed = new RevocationFeed(other, new RevocationList(), 'https://issuer.test', (ids) => {
          for (const id of ids) seen.add(id);
        });
        await feed.catchUp(now);
        return seen;
      } finally {
        await other.close();
      }
    }

    it("revoking a subject whose delegation tree holds 50,000 grants (one exchange per agent call) succeeds at the default request_timeout: every grant and refresh token revoked, every grant logged in order, another instance's feed sees them all", async () => {
      const { store, other: c, schema, close } = await heldStore();
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const root = await store.createGrant(newGrant({ subject: 'alice', kind: 'authorization_code' }, now), now);
        const rootId = (root as { id: string }).id;
        // A binary tree under the root: t-1 is its child, t-i the child of t-(i/2).
        await c.query(
          `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
           SELECT 't-' || i, CASE WHEN i = 1 THEN g.id ELSE 't-' || (i / 2) END, g.id, floor(log(2, i))::int + 1, 'token_exchange',
                  g.issuer, g.subject, g.client_id, NULL, g.scopes, g.audiences, g.created_at, g.expires_at
           FROM generate_series(1, 49999) AS i, grants g WHERE g.id = $1`,
          [rootId],
        );
        await c.query(
          `INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at)
           SELECT 'rt-' || i, 't-' || i, 'agent', $1::bigint, $1::bigint + 3600, NULL, NULL FROM generate_series(1, 49999, 10) AS i`,
          [now],
        );
        const revoked = await store.revokeGrants(
          { subject: 'alice' },
          {
            at: now,
            reason: 'subject_revoked',
            entryExpiresAt: now + 600,
            alsoLog: () => [{ kind: 'subject', value: 'alice', issuer: 'https://issuer.test', at: now, expiresAt: now + 600 }],
          },
        );
        assert.equal(revoked.length, 50_000);
        const { rows } = await c.query(
          `SELECT (SELECT count(*) FROM grants WHERE revoked_at IS NULL)::int AS live,
                  (SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL)::int AS live_tokens,
                  (SELECT count(*) FROM revocations)::int AS entries,
                  (SELECT min(seq) FROM revocations)::int AS first, (SELECT max(seq) FROM revocations)::int AS last`,
        );
        assert.deepEqual(rows[0], { live: 0, live_tokens: 0, entries: 50_001, first: 1, last: 50_001 });
        assert.equal((await store.versions()).revocations, 50_001);
        const [subject] = await store.revocationsSince(50_000, now);
        assert.equal(subject?.kind, 'subject', 'the subject entry follows the grants, in the same transaction');
        const seen = await feedGrants(schema);
        assert.equal(seen.size, 50_000);
        for (const g of revoked) assert.ok(seen.has(g.id), g.id);
      } finally {
        await close();
      }
    });

    it('revoking a client with 2,000 trees of 25 grants (one per person, each approved with a remembered consent) succeeds at the default request_timeout: every tree revoked and logged, every consent forgotten', async () => {
      const { store, other: c, schema, close } = await heldStore();
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        await c.query(
          `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
           SELECT 'r-' || i, NULL, 'r-' || i, 0, 'authorization_code', 'https://issuer.test', 'user-' || i, 'agent', NULL, '["api:read"]', '["https://api.test"]', $1::bigint, $1::bigint + 3600
           FROM generate_series(1, 2000) AS i
           UNION ALL
           SELECT 'c-' || i || '-' || j, 'r-' || i, 'r-' || i, 1, 'token_exchange', 'https://issuer.test', 'user-' || i, 'agent', NULL, '["api:read"]', '["https://api.test"]', $1::bigint, $1::bigint + 3600
           FROM generate_series(1, 2000) AS i, generate_series(1, 24) AS j`,
          [now],
        );
        await c.query(
          `INSERT INTO remembered_consents (subject, client_id, issuer, identity_source, scopes, scopes_digest, audiences, redirect_uri, client_fingerprint, approval_hash, created_at, expires_at)
           SELECT 'user-' || i, 'agent', 'https://issuer.test', 'oidc', '["api:read"]', 'd', '["https://api.test"]', 'https://app.test/cb', 'f', 'h', $1::bigint, $1::bigint + 86400
           FROM generate_series(1, 2000) AS i`,
          [now],
        );
        const revoked = await store.revokeGrants({ clientId: 'agent' }, { at: now, reason: 'client_disabled', entryExpiresAt: now + 600 });
        assert.equal(revoked.length, 50_000);
        const { rows } = await c.query(
          `SELECT (SELECT count(*) FROM grants WHERE revoked_at IS NULL)::int AS live,
                  (SELECT count(*) FROM remembered_consents)::int AS consents,
                  (SELECT count(*) FROM revocations)::int AS entries`,
        );
        assert.deepEqual(rows[0], { live: 0, consents: 0, entries: 50_000 });
        assert.equal((await feedGrants(schema)).size, 50_000);
      } finally {
        await close();
      }
    });

    /** `n` separate trees of client `agent`, one per person: a root and one child each. */
    async function manyTrees(c: pg.Client, n: number): Promise<void> {
      await c.query(
        `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
         SELECT 'r-' || i, NULL, 'r-' || i, 0, 'authorization_code', 'https://issuer.test', 'user-' || i, 'agent', NULL, '["api:read"]', '["https://api.test"]', $2::bigint, $2::bigint + 3600
         FROM generate_series(1, $1::int) AS i
         UNION ALL
         SELECT 'c-' || i, 'r-' || i, 'r-' || i, 1, 'token_exchange', 'https://issuer.test', 'user-' || i, 'agent', NULL, '["api:read"]', '["https://api.test"]', $2::bigint, $2::bigint + 3600
         FROM generate_series(1, $1::int) AS i`,
        [n, now],
      );
    }

    it('revoking a client with 20,000 separate trees (more advisory locks than the shared lock table holds at default settings, max_locks_per_transaction × max_connections and its slack: about 13,000 here) succeeds at default settings: every grant revoked and logged', async () => {
      const { store, other: c, schema, close } = await heldStore();
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        await manyTrees(c, 20_000);
        const revoked = await store.revokeGrants({ clientId: 'agent' }, { at: now, reason: 'client_disabled', entryExpiresAt: now + 600 });
        assert.equal(revoked.length, 40_000);
        const { rows } = await c.query(
          `SELECT (SELECT count(*) FROM grants WHERE revoked_at IS NULL)::int AS live,
                  (SELECT count(DISTINCT value) FROM revocations WHERE kind = 'grant')::int AS entries`,
        );
        assert.deepEqual(rows[0], { live: 0, entries: 40_000 });
        assert.equal((await feedGrants(schema)).size, 40_000);
      } finally {
        await close();
      }
    });

    it('attack: a child grant created (by another client, on another instance) under one of 20,000 trees while a revocation of their client is under way is refused or revoked, never a live grant in a revoked tree', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await a.createClient(clientRecord({ id: 'agent' }, now));
        await a.createClient(clientRecord({ id: 'helper' }, now));
        await manyTrees(c, 20_000);
        // The revocation is held just before it writes its log (another append holds the log's
        // lock): its grants are updated, not yet committed.
        await c.query('BEGIN');
        await c.query('LOCK TABLE revocations IN EXCLUSIVE MODE');
        const revoking = a.revokeGrants({ clientId: 'agent' }, { at: now, reason: 'client_disabled', entryExpiresAt: now + 600 });
        // Awaited below; a failure meanwhile must not count as unhandled.
        revoking.catch(() => {});
        await until(async () => {
          const { rows } = await c.query(
            "SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class r ON r.oid = l.relation WHERE r.relname = 'revocations' AND r.relnamespace = $1::regnamespace AND NOT l.granted",
            [schema],
          );
          return rows[0].n > 0;
        }, 10_000);
        const child = newGrant({ parentId: 'r-15000', clientId: 'helper', subject: 'user-15000' }, now);
        const creating = b.createGrant(child, now);
        await new Promise((r) => setTimeout(r, 300));
        await c.query('COMMIT');
        assert.equal((await revoking).length, 40_000);
        const created = await creating;
        const stored = await a.getGrant(child.id);
        if (created === 'parent_inactive') assert.equal(stored, undefined);
        else assert.notEqual(stored?.revokedAt, null, 'a child created during the revocation escaped it');
      } finally {
        await c.end();
        await a.close();
        await b.close();
      }
    });
  });

  describe('postgres: a revocation gets the longer bound', () => {
    it("a revocation is bounded by maintenanceTimeoutMillis when that is longer than requestTimeoutMillis: one held up past the request bound (the subject's lock held by another session) still revokes, where a grant creation fails within the request bound", async () => {
      const now = 1_800_000_000;
      const { store, other: holder, close } = await heldStore({ requestTimeoutMillis: 400, maintenanceTimeoutMillis: 10_000 });
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const g = await store.createGrant(newGrant({ subject: 'alice' }, now), now);
        await holder.query("BEGIN; SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || 'alice'))");
        const started = Date.now();
        await assert.rejects(store.createGrant(newGrant({ subject: 'alice' }, now), now), StoreUnavailableError);
        assert.ok(Date.now() - started < 2000, `a grant creation gave up after ${Date.now() - started} ms`);
        const revoking = store.revokeGrants({ subject: 'alice' }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        await new Promise((r) => setTimeout(r, 1000));
        await holder.query('COMMIT');
        assert.deepEqual(
          (await revoking).map((r) => r.id),
          [(g as { id: string }).id],
        );
      } finally {
        await close();
      }
    });
  });

  describe('postgres: a connection lost mid-transaction', () => {
    const now = 1_800_000_000;

    it('a session PostgreSQL ended for idling inside its transaction (25P03: an instance stalled mid-transaction) is StoreUnavailableError (a 503, not a 500): nothing written, and the next call works', async () => {
      const schema = schemaName();
      const store = await PostgresStore.open({ connectionString: url, schema, idleInTransactionTimeoutMillis: 200 });
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const g = (await store.createGrant(newGrant({}, now), now)) as { id: string };
        // The process stalls (a long pause of its event loop) between two statements of the revocation.
        const stall = () => {
          const t = Date.now();
          while (Date.now() - t < 600);
          return [{ kind: 'subject' as const, value: 'alice', issuer: 'https://issuer.test', at: now, expiresAt: now + 600 }];
        };
        const revoking = store.revokeGrants({ grantId: g.id }, { at: now, reason: 'r', entryExpiresAt: now + 600, alsoLog: stall });
        await assert.rejects(revoking, StoreUnavailableError);
        assert.equal((await store.getGrant(g.id))?.revokedAt, null, 'rolled back');
        assert.equal((await store.versions()).revocations, 0);
        assert.equal((await store.revokeGrants({ grantId: g.id }, { at: now, reason: 'r', entryExpiresAt: now + 600 })).length, 1);
      } finally {
        await store.close();
      }
    });

    it("a connection terminated while waiting for a tree's lock is StoreUnavailableError: nothing written, and the pool recovers", async () => {
      const { store, other, app, close } = await heldStore();
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const root = (await store.createGrant(newGrant({}, now), now)) as { id: string };
        await other.query("SELECT pg_advisory_lock(hashtext('tessera.grant:' || $1))", [root.id]);
        const child = newGrant({ parentId: root.id }, now);
        // Expected to reject from the start: it can reject before the terminating query below has
        // answered, and a rejection nothing handles yet fails the test as an unhandled one.
        const refused = assert.rejects(store.createGrant(child, now), StoreUnavailableError);
        await new Promise((r) => setTimeout(r, 200));
        // Only this store's sessions (its application_name), never another test's.
        await other.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'", [app]);
        await refused;
        await other.query("SELECT pg_advisory_unlock(hashtext('tessera.grant:' || $1))", [root.id]);
        assert.equal(await store.getGrant(child.id), undefined);
        // Every pooled connection gone too: the next calls do not wait for the pool to hear of it.
        await other.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
        assert.equal(typeof (await store.createGrant(newGrant({ parentId: root.id }, now), now)), 'object');
        assert.equal(await store.useOnce('jti', now + 60, now), true);
      } finally {
        await close();
      }
    });

    /** Client `agent`, a grant and a current refresh token of it; `rotate(graceSeconds)` rotates that token. */
    async function currentToken(store: PostgresStore) {
      await store.createClient(clientRecord({ id: 'agent' }, now));
      const grant = (await store.createGrant(newGrant({}, now), now)) as { id: string; rootId: string };
      const hash = `rt_${Math.random().toString(36).slice(2)}`;
      await store.createRefreshToken({
        hash,
        grantId: grant.id,
        clientId: 'agent',
        createdAt: now,
        expiresAt: now + 3600,
        rotatedAt: null,
        revokedAt: null,
      });
      const next = `${hash}_next`;
      const rotate = (graceSeconds: number, nextHash = next) =>
        store.rotateRefreshToken(hash, {
          clientId: 'agent',
          nextHash,
          nextExpiresAt: now + 7200,
          now: now + 10,
          graceSeconds,
          entryExpiresAt: now + 600,
        });
      return { grant, hash, next, rotate };
    }

    it('a refresh rotation whose connection is terminated mid-transaction (waiting for its tree’s lock) is StoreUnavailableError, not run again behind the operator’s back: rolled back whole (the old token current, no successor), and the client’s retry rotates it once', async () => {
      const { store, other, app, close } = await heldStore();
      try {
        const { grant, hash, next, rotate } = await currentToken(store);
        await other.query("SELECT pg_advisory_lock(hashtext('tessera.grant:' || $1))", [grant.id]);
        const killed = rotate(0).catch((e: unknown) => e);
        await until(
          async () =>
            Number(
              (
                await other.query(
                  "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                  [app],
                )
              ).rows[0].n,
            ) === 1,
        );
        await other.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'", [app]);
        // Free before its outcome: run again, the rotation would go through now.
        await other.query("SELECT pg_advisory_unlock(hashtext('tessera.grant:' || $1))", [grant.id]);
        const outcome = await killed;
        assert.ok(outcome instanceof StoreUnavailableError, `the rotation answered ${JSON.stringify(outcome)}`);
        // The old state whole: never the old token spent without its successor, nor both current.
        assert.equal((await store.getRefreshToken(hash))?.rotatedAt, null);
        assert.equal(await store.getRefreshToken(next), undefined);
        const retried = await rotate(0);
        assert.equal(retried.status, 'rotated');
        assert.equal((await store.getRefreshToken(hash))?.rotatedAt, now + 10);
        assert.equal((await store.getRefreshToken(next))?.rotatedAt, null);
        assert.equal((await store.getGrant(grant.id))?.revokedAt, null);
      } finally {
        await close();
      }
    });

    it('attack: a refresh rotation whose COMMIT PostgreSQL carried out but whose answer was lost (the connection reset just then) is StoreUnavailableError, never run again by the store (a second run would take its own rotation for a reuse and revoke the family): the new state alone (the old token spent, one successor, the grant live); the client’s retry within refresh_reuse_grace is refused without revoking the family, within refresh_reuse_interval rotated again (the lost successor retired)', async () => {
      const { store, proxy } = await storeBehindFaultProxy(url, schemaName());
      try {
        const { grant, hash, next, rotate } = await currentToken(store);
        proxy.trap(
          (d, id) => {
            if (!d.includes(commandComplete('COMMIT'))) return false;
            proxy.reset({ only: id });
            return true;
          },
          () => {},
          { withhold: true },
        );
        await assert.rejects(rotate(0), StoreUnavailableError);
        assert.equal((await store.getRefreshToken(hash))?.rotatedAt, now + 10, 'committed');
        assert.equal((await store.getRefreshToken(next))?.rotatedAt, null);
        assert.equal((await store.getGrant(grant.id))?.revokedAt, null, 'the family is not revoked');
        // The client, told 503, retries with the token it holds: a reuse. Within the grace period
        // it is refused and the family kept (with none, the reuse revokes it: see refresh_reuse_grace).
        assert.equal((await rotate(60, `${hash}_again`)).status, 'grace');
        assert.equal((await store.getGrant(grant.id))?.revokedAt, null);
        // Within refresh_reuse_interval the retry succeeds: a new successor, the lost one retired.
        const retry = await store.rotateRefreshToken(hash, {
          clientId: 'agent',
          nextHash: `${hash}_retry`,
          nextExpiresAt: now + 7200,
          now: now + 11,
          graceSeconds: 0,
          reuseIntervalSeconds: 30,
          entryExpiresAt: now + 600,
        });
        assert.equal(retry.status, 'rotated');
        assert.equal((await store.getRefreshToken(`${hash}_retry`))?.rotatedAt, null);
        assert.equal((await store.getRefreshToken(next))?.rotatedAt, now + 11);
        assert.equal((await store.getGrant(grant.id))?.revokedAt, null);
      } finally {
        await store.close();
        await proxy.close();
      }
    });
  });

  describe('postgres: pooled connections that died while idle', () => {
    const now = 1_800_000_000;

    /**
     * A store whose sessions carry an application_name of their own, on a URL with a password (the
     * test server trusts loopback and never asks for it; a URL given one keeps its own), and every
     * warning it gives; and `other`, a plain session to terminate its backends from.
     */
    async function idleStore(options: Omit<PostgresStoreOptions, 'connectionString' | 'schema'> = {}) {
      const app = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
      const withPassword = new URL(url);
      if (withPassword.password === '') withPassword.password = 'pw-7Rq2-never-in-a-log';
      withPassword.searchParams.set('application_name', app);
      const warnings: string[] = [];
      const schema = schemaName();
      const store = await PostgresStore.open({
        connectionString: withPassword.href,
        schema,
        onWarning: (m) => warnings.push(m),
        ...options,
      });
      const other = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await other.connect();
      await store.createClient(clientRecord({ id: 'agent' }, now));
      const sessions = async (where = 'true') =>
        Number(
          (await other.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND ${where}`, [app])).rows[0].n,
        );
      return {
        store,
        other,
        app,
        warnings,
        password: decodeURIComponent(withPassword.password),
        sessions,
        /** Opens `n` pooled connections at once (grant creations queued on alice’s lock) and leaves them idle. */
        warm: async (n: number) => {
          await other.query("SELECT pg_advisory_lock(hashtext('tessera.subject:' || $1))", ['alice']);
          const calls = Array.from({ length: n }, () => store.createGrant(newGrant({}, now), now));
          await until(async () => (await sessions("wait_event_type = 'Lock'")) === n);
          await other.query("SELECT pg_advisory_unlock(hashtext('tessera.subject:' || $1))", ['alice']);
          for (const r of await Promise.all(calls)) assert.equal(typeof r, 'object');
          assert.equal(await sessions(), n);
        },
        /** What a failover, a restart or a pooler's recycle does to the idle connections. */
        terminate: async () => {
          await other.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
        },
        close: async () => {
          await other.end();
          await store.close();
        },
      };
    }

    it('attack: every pooled connection terminated while idle (a failover, a restart, a pooler recycling them), the calls right after it succeed, none fails for a dead connection: a transaction (grant creation), a read (a revocation check), single writes (a DPoP jti, audit events), one after another and all at once', async () => {
      const { store, warm, terminate, warnings, password, close } = await idleStore({ max: 4 });
      try {
        await warm(4);
        await terminate();
        // One after another, at once: each call gets a connection the pool has not yet heard is dead.
        assert.equal(typeof (await store.createGrant(newGrant({}, now), now)), 'object');
        assert.equal(await store.tokenRevoked('jti-1'), false);
        assert.equal(await store.useOnce('dpop:jti-1', now + 60, now), true);
        assert.equal(await store.useOnce('dpop:jti-1', now + 60, now), false, 'recorded once');
        await store.appendAudit([
          { id: uuidv7(now * 1000), time: now, kind: 'token.issued', decision: 'allow', reason: 'ok', client_id: 'agent' },
        ]);
        assert.equal(await store.tokenRevoked('jti-2'), false);

        await warm(4);
        await terminate();
        const grants = Array.from({ length: 4 }, () => newGrant({}, now));
        const results = await Promise.all([
          ...grants.map((g) => store.createGrant(g, now)),
          ...Array.from({ length: 4 }, (_, i) => store.tokenRevoked(`jti-${i}`)),
          store.useOnce('dpop:jti-2', now + 60, now),
        ]);
        assert.deepEqual(
          results.map((r) => typeof r),
          [...grants.map(() => 'object'), ...Array.from({ length: 4 }, () => 'boolean'), 'boolean'],
        );
        for (const g of grants) assert.equal((await store.getGrant(g.id))?.id, g.id, 'created once');
        assert.ok(warnings.length > 0, 'the lost connections are reported');
        for (const w of warnings) {
          assert.match(
            w,
            /^PostgreSQL (?:closed an idle pooled connection|connection found lost) \((?:57P01|ECONNRESET|EPIPE|connection closed)\)/,
          );
          assert.ok(!w.includes(password), 'no password in a warning');
        }
      } finally {
        await close();
      }
    });

    it('attack: every pooled connection dead without a word (a failover that moved the server’s address: each is reset once used), the pool not yet aware: a call’s retry goes out on a new connection, not on another of the dead ones', async () => {
      const target = new URL(url);
      const proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
      const via = new URL(url);
      via.port = String(proxy.port);
      const warnings: string[] = [];
      const store = await PostgresStore.open({
        connectionString: via.href,
        schema: schemaName(),
        max: 4,
        onWarning: (m) => warnings.push(m),
      });
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        await Promise.all(Array.from({ length: 8 }, () => store.tokenRevoked('jti')));
        const open = proxy.connections();
        assert.ok(open > 1, `${open} pooled connections`);
        proxy.doom();
        assert.equal(typeof (await store.createGrant(newGrant({}, now), now)), 'object');
        assert.equal(await store.tokenRevoked('jti'), false);
        assert.equal(await store.useOnce('dpop:jti', now + 60, now), true);
        assert.ok(
          warnings.some((w) => w.startsWith('PostgreSQL connection found lost (ECONNRESET) before a transaction began')),
          warnings.join('\n'),
        );
      } finally {
        await store.close();
        await proxy.close();
      }
    });

    it('the pool’s error event for a connection that dies while idle is heard (the process goes on) and reported once per connection, by its code: never the connection string, its password or the server’s message', async () => {
      const { store, warm, terminate, sessions, warnings, password, close } = await idleStore({ max: 3 });
      try {
        await warm(3);
        await terminate();
        await until(async () => (await sessions()) === 0 && warnings.length === 3);
        assert.deepEqual(warnings, Array(3).fill('PostgreSQL closed an idle pooled connection (57P01); a new one is opened when needed'));
        assert.ok(warnings.every((w) => !w.includes(password) && !w.includes('postgres://')));
        assert.equal(typeof (await store.createGrant(newGrant({}, now), now)), 'object');
      } finally {
        await close();
      }
    });

    it('attack: the connection string’s password is in no warning, error message or cause of a store that loses its connections, mid-transaction or for good', async () => {
      const { store, other, app, warnings, password, sessions, close } = await idleStore({ requestTimeoutMillis: 2000 });
      const failures: unknown[] = [];
      try {
        // A transaction whose connection is terminated under it (waiting for a lock).
        await other.query("SELECT pg_advisory_lock(hashtext('tessera.subject:' || $1))", ['alice']);
        const held = store.createGrant(newGrant({}, now), now).catch((e: unknown) => e);
        await until(async () => (await sessions("wait_event_type = 'Lock'")) === 1);
        await other.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'", [app]);
        failures.push(await held);
        await other.query("SELECT pg_advisory_unlock(hashtext('tessera.subject:' || $1))", ['alice']);
      } finally {
        await close();
      }
      // The same URL's server gone for good: a port nothing listens on.
      const gone = new URL(url);
      if (gone.password === '') gone.password = password;
      const probe = createServer();
      await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
      gone.port = String((probe.address() as { port: number }).port);
      await new Promise((r) => probe.close(r));
      failures.push(
        await PostgresStore.open({ connectionString: gone.href, schema: schemaName(), onWarning: (m) => warnings.push(m) }).catch(
          (e: unknown) => e,
        ),
      );
      for (const f of failures) {
        assert.ok(f instanceof StoreUnavailableError, String(f));
        const told = inspect(f, { depth: 10, showHidden: true });
        assert.ok(!told.includes(password), `the password is in: ${f.message}`);
      }
      for (const w of warnings) assert.ok(!w.includes(password));
    });
  });

  describe('postgres: housekeeping held up', () => {
    it('a prune held up by a lock fails with StoreUnavailableError within maintenanceTimeoutMillis, the pool (max: 1) still works, and the next prune works', async () => {
      const { store, other, schema, close } = await heldStore({ max: 1, maintenanceTimeoutMillis: 300 });
      try {
        const now = 1_800_000_000;
        assert.equal(await store.useOnce('jti', now - 1, now - 60), true);
        await other.query('BEGIN');
        await other.query(`LOCK TABLE ${schema}.replay IN ACCESS EXCLUSIVE MODE`);
        const started = Date.now();
        await assert.rejects(store.prune(now), StoreUnavailableError);
        assert.ok(Date.now() - started < 2000, `gave up after ${Date.now() - started} ms`);
        await other.query('ROLLBACK');
        // The pool's only connection was the one whose statement was given up on (by the server's
        // lock_timeout, rolled back; or, were the server not answering, destroyed): a call now works.
        assert.equal((await store.versions()).revocations, 0);
        await store.prune(now);
        assert.equal(Number((await other.query(`SELECT count(*) AS n FROM ${schema}.replay`)).rows[0].n), 0, 'pruned');
      } finally {
        await close();
      }
    });
  });

  describe('postgres: audit pruning beside another instance', () => {
    it('an audit prune skips the events another transaction holds locked (another instance’s prune batch under way) rather than wait for them, deletes the rest, and a later prune deletes those', async () => {
      const { store, other, schema, close } = await heldStore({ maintenanceTimeoutMillis: 1000 });
      try {
        const base = Date.UTC(2001, 0, 1);
        // Written by hand: uuidv7() never goes back in time within a process.
        const idAt = (ms: number) => `${idFloor(ms)}-7000-8000-${String(ms).slice(-12).padStart(12, '0')}`;
        const events = [0, 1_000, 2_000].map((dt) => ({
          id: idAt(base + dt),
          time: base + dt,
          kind: 'token.issued' as const,
          decision: 'allow' as const,
          reason: 'ok',
        }));
        await store.appendAudit(events);
        // The oldest held, as another instance's DELETE of its batch holds it until it commits.
        await other.query('BEGIN');
        await other.query(`SELECT 1 FROM ${schema}.audit_events WHERE id = $1 FOR UPDATE`, [events[0]?.id]);
        assert.equal(await store.pruneAudit(base + 10_000, 1000), 2);
        await other.query('ROLLBACK');
        assert.equal(await store.pruneAudit(base + 10_000, 1000), 1);
        assert.equal(Number((await other.query(`SELECT count(*) AS n FROM ${schema}.audit_events`)).rows[0].n), 0);
      } finally {
        await close();
      }
    });
  });

  describe('postgres: a request held up', () => {
    it('attack: a DPoP jti recorded (useOnce, one statement) while another session holds its row locked fails with StoreUnavailableError within requestTimeoutMillis, leaves no backend waiting on the lock, and the pool (max: 1) serves the next call', async () => {
      const { store, other, schema, app, close } = await heldStore({ max: 1, requestTimeoutMillis: 500 });
      try {
        const now = 1_800_000_000;
        assert.equal(await store.useOnce('jti-expired', now - 1, now - 60), true);
        await other.query('BEGIN');
        await other.query(`SELECT * FROM ${schema}.replay WHERE key = 'jti-expired' FOR UPDATE`);
        const started = Date.now();
        const held = store.useOnce('jti-expired', now + 60, now);
        await assert.rejects(
          Promise.race([held, new Promise((_, reject) => setTimeout(() => reject(new Error('still waiting after 5 s')), 5000))]),
          StoreUnavailableError,
        );
        assert.ok(Date.now() - started < 2000, `gave up after ${Date.now() - started} ms`);
        const waiting = await other.query(
          "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
          [app],
        );
        assert.equal(Number(waiting.rows[0].n), 0, 'a backend of the store still waits on the lock the call gave up on');
        await other.query('ROLLBACK');
        assert.equal(await store.useOnce('jti-expired', now + 60, now), true, 'not recorded by the call given up on');
      } finally {
        await close();
      }
    });
  });

  describe('postgres: prune in batches', () => {
    it('a prune given up on (a lock held past maintenanceTimeoutMillis) leaves no server backend waiting on that lock: the server gives up too', async () => {
      const { store, other, schema, app, close } = await heldStore({ maintenanceTimeoutMillis: 500 });
      try {
        const now = 1_800_000_000;
        assert.equal(await store.useOnce('jti', now - 1, now - 60), true);
        await other.query('BEGIN');
        await other.query(`LOCK TABLE ${schema}.replay IN ACCESS EXCLUSIVE MODE`);
        const started = Date.now();
        await assert.rejects(store.prune(now), StoreUnavailableError);
        assert.ok(Date.now() - started < 3000, `gave up after ${Date.now() - started} ms (maintenanceTimeoutMillis 500)`);
        // The lock is still held: a backend the client gave up on would wait on it until it is freed.
        const waiting = async () =>
          Number(
            (
              await other.query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()",
                [app],
              )
            ).rows[0].n,
          );
        await until(async () => (await waiting()) === 0, 2000).catch(() => {});
        assert.equal(await waiting(), 0, 'a backend of the store still waits on the lock the client gave up on');
        await other.query('ROLLBACK');
        assert.equal(await store.prune(now), true);
      } finally {
        await close();
      }
    });

    it('a prune goes past expired rows another transaction holds locked for longer than maintenanceTimeoutMillis: it deletes the rest, in every table, and does not wait', async () => {
      const { store, other, schema, close } = await heldStore({ maintenanceTimeoutMillis: 500, pruneBatchSize: 3 });
      try {
        const now = 1_800_000_000;
        await store.createClient(clientRecord({ id: 'agent' }, now - 100));
        for (let i = 0; i < 10; i++) assert.equal(await store.useOnce(`jti-${i}`, now - 1, now - 60), true);
        const old = await store.createGrant(newGrant({ expiresAt: now - 10 }, now - 100), now - 100);
        assert.equal(typeof old, 'object');
        const oldId = (old as { id: string }).id;
        await other.query('BEGIN');
        await other.query(`SELECT * FROM ${schema}.replay WHERE key = 'jti-4' FOR UPDATE`);
        let done = false;
        for (let calls = 0; !done; calls++) {
          assert.ok(calls < 20, 'prune never finished');
          done = await store.prune(now, { grantsExpiredBefore: now });
        }
        const left = (await other.query(`SELECT key FROM ${schema}.replay ORDER BY key`)).rows.map((r) => r.key);
        assert.deepEqual(left, ['jti-4'], 'the locked row alone is left');
        assert.equal(await store.getGrant(oldId), undefined, 'the tables after it were pruned');
        await other.query('ROLLBACK');
        assert.equal(await store.prune(now, { grantsExpiredBefore: now }), true);
        assert.equal(Number((await other.query(`SELECT count(*) AS n FROM ${schema}.replay`)).rows[0].n), 0, 'pruned once unlocked');
      } finally {
        await close();
      }
    });
  });

  describe('postgres: connection pool exhausted', () => {
    it('fails a call that cannot get a connection within the connect timeout with StoreUnavailableError (a 503), never waits for ever', async () => {
      const { store, other: blocker, close } = await heldStore({ max: 1, connectionTimeoutMillis: 300 });
      try {
        const now = 1_800_000_000;
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const root = await store.createGrant(newGrant({}, now), now);
        const rootId = (root as { id: string }).id;
        // Another session holds the tree lock, so a child creation holds the pool's only connection.
        await blocker.query("SELECT pg_advisory_lock(hashtext('tessera.grant:' || $1))", [rootId]);
        const child = store.createGrant(newGrant({ parentId: rootId }, now), now);
        await new Promise((r) => setTimeout(r, 100));
        const started = Date.now();
        await assert.rejects(
          Promise.race([
            store.getClient('agent'),
            new Promise((_, reject) => setTimeout(() => reject(new Error('still waiting after 5 s')), 5000)),
          ]),
          StoreUnavailableError,
        );
        assert.ok(Date.now() - started < 2000);
        await blocker.query("SELECT pg_advisory_unlock(hashtext('tessera.grant:' || $1))", [rootId]);
        assert.equal(typeof (await child), 'object');
        assert.equal((await store.getClient('agent'))?.id, 'agent');
      } finally {
        await close();
      }
    });
  });

  describe('postgres: the wait for a connection under a short request timeout', () => {
    it('a server that stopped answering: a call gives up within requestTimeoutMillis (1 s) plus its connect wait, not the 5 s default connect wait on top', async () => {
      const target = new URL(url);
      const proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
      const proxied = new URL(url);
      proxied.host = `127.0.0.1:${proxy.port}`;
      const store = await PostgresStore.open({ connectionString: proxied.href, schema: schemaName(), max: 1, requestTimeoutMillis: 1000 });
      try {
        // Every connection, open or new, carries nothing: the open one's call times out and is
        // destroyed, and the new one it needs never completes its startup.
        proxy.blackHole({ newToo: true });
        const started = Date.now();
        await assert.rejects(store.getClient('agent'), StoreUnavailableError);
        await assert.rejects(store.getClient('agent'), StoreUnavailableError);
        const took = Date.now() - started;
        assert.ok(took < 4500, `two calls gave up after ${took} ms (request timeout 1 s each, connect wait bounded by it)`);
      } finally {
        proxy.heal();
        await store.close().catch(() => undefined);
        await proxy.close();
      }
    });
  });

  describe('postgres: a database that refuses connections', () => {
    it('reports "not accepting connections" (55000) and a missing database (3D000) as StoreUnavailableError (a 503), not a 500', async () => {
      const db = `tessera_refuse_${process.pid}_${Date.now()}`;
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${db}`);
      const target = new URL(url);
      target.pathname = `/${db}`;
      const store = await PostgresStore.open({ connectionString: target.toString(), connectionTimeoutMillis: 2000 });
      try {
        await admin.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS false`);
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [db]);
        await assert.rejects(store.getClient('agent'), StoreUnavailableError);
        await admin.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`);
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [db]);
        await admin.query(`DROP DATABASE ${db}`);
        await assert.rejects(store.getClient('agent'), StoreUnavailableError);
      } finally {
        await store.close().catch(() => undefined);
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
        await admin.end();
      }
    });
  });

  describe('postgres: out of resources', () => {
    it('PostgreSQL out of a resource (53200 out of shared memory: the shared lock table full; class 53) is StoreUnavailableError (a 503, not a 500), nothing written, and the next call works', async () => {
      const now = 1_800_000_000;
      const { store, other: c, schema, close } = await heldStore();
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        // What PostgreSQL raises when a lock does not fit in its shared lock table, raised here by a
        // trigger so no other session is starved of locks.
        await c.query(`
          CREATE FUNCTION ${schema}.no_lock_space() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN RAISE EXCEPTION 'out of shared memory' USING ERRCODE = '53200', HINT = 'You might need to increase max_locks_per_transaction.'; END $$;
          CREATE TRIGGER no_lock_space BEFORE INSERT ON ${schema}.grants FOR EACH ROW EXECUTE FUNCTION ${schema}.no_lock_space();
          CREATE TRIGGER no_lock_space BEFORE INSERT ON ${schema}.replay FOR EACH ROW EXECUTE FUNCTION ${schema}.no_lock_space();
        `);
        const g = newGrant({}, now);
        await assert.rejects(store.createGrant(g, now), (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy');
        // A single statement (a DPoP proof's jti recorded) too.
        await assert.rejects(
          store.useOnce('jti', now + 60, now),
          (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy',
        );
        await c.query(`DROP TRIGGER no_lock_space ON ${schema}.grants; DROP TRIGGER no_lock_space ON ${schema}.replay`);
        assert.equal(await store.getGrant(g.id), undefined);
        assert.equal(typeof (await store.createGrant(g, now)), 'object');
        assert.equal(await store.useOnce('jti', now + 60, now), true);
      } finally {
        await close();
      }
    });
    it('PostgreSQL out of a resource while starting the session a transaction connects on (class 53 at connect, 53200 out of memory) is StoreUnavailableError store_busy (a 503), not a 500', async () => {
      const now = 1_800_000_000;
      const target = new URL(url);
      // In front of PostgreSQL: forwards, until `refuse`; then every new session is refused at
      // startup with what a backend short of memory answers.
      let refuse = false;
      const sockets: Socket[] = [];
      const server: Server = createServer((client) => {
        sockets.push(client);
        client.on('error', () => {});
        if (refuse) {
          client.once('data', () => {
            const fields = Buffer.from('SFATAL\0VFATAL\0C53200\0Mout of memory\0\0');
            const head = Buffer.alloc(5);
            head.write('E', 0);
            head.writeInt32BE(fields.length + 4, 1);
            client.end(Buffer.concat([head, fields]));
          });
          return;
        }
        const upstream = connect(Number(target.port || 5432), target.hostname);
        sockets.push(upstream);
        upstream.on('error', () => {});
        client.pipe(upstream);
        upstream.pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const proxied = new URL(url);
      proxied.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
      const store = await PostgresStore.open({ connectionString: proxied.href, schema: schemaName(), max: 1 });
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        refuse = true;
        // The pooled session is gone (a restart, say): the next call starts a new one.
        for (const s of sockets) s.destroy();
        await new Promise((r) => setTimeout(r, 100));
        await assert.rejects(
          store.createGrant(newGrant({}, now), now),
          (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy',
        );
        // A single statement already was.
        await assert.rejects(
          store.useOnce('jti', now + 60, now),
          (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy',
        );
      } finally {
        await store.close();
        for (const s of sockets) s.destroy();
        await new Promise((r) => server.close(r));
      }
    });
  });

  describe('postgres: a transaction aborted again and again', () => {
    /** A trigger raising what PostgreSQL raises on a deadlock's victim on every grant insert, counting the runs. */
    async function alwaysDeadlocked(c: pg.Client, schema: string): Promise<() => Promise<number>> {
      await c.query(`
        CREATE SEQUENCE ${schema}.runs;
        CREATE FUNCTION ${schema}.always_deadlocked() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM nextval('${schema}.runs'); RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$;
        CREATE TRIGGER always_deadlocked BEFORE INSERT ON ${schema}.grants FOR EACH ROW EXECUTE FUNCTION ${schema}.always_deadlocked();
      `);
      return async () => {
        const [runs] = (await c.query(`SELECT last_value, is_called FROM ${schema}.runs`)).rows;
        return runs.is_called ? Number(runs.last_value) : 0;
      };
    }

    it('a transaction PostgreSQL aborts as a deadlock on every run is run five times in all, pausing a growing, randomized time between runs (10-20, 20-40, 40-80, 80-160 ms), then is StoreUnavailableError store_busy (a 503), not the raw error (a 500), and nothing is written', async () => {
      const now = 1_800_000_000;
      const { store, other: c, schema, close } = await heldStore();
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const runs = await alwaysDeadlocked(c, schema);
        const g = newGrant({}, now);
        const started = performance.now();
        await assert.rejects(store.createGrant(g, now), (e: unknown) => e instanceof StoreUnavailableError && e.code === 'store_busy');
        const took = performance.now() - started;
        assert.equal(await runs(), 5, 'run five times in all');
        // Run again at once, a victim takes back the row it lost before the transaction it
        // deadlocked with (woken, not yet run) does, and the same deadlock follows.
        assert.ok(took >= 150, `the four pauses add up to at least 150 ms, not ${took} ms`);
        assert.ok(took < 2000, `and to 300 ms at most, far within a request's bound, not ${took} ms in all`);
        await c.query(`DROP TRIGGER always_deadlocked ON ${schema}.grants`);
        assert.equal(await store.getGrant(g.id), undefined);
      } finally {
        await close();
      }
    });

    it('the pauses and runs of a transaction aborted again and again stay within requestTimeoutMillis: it fails on time (a 503), before its fifth run', async () => {
      const now = 1_800_000_000;
      // Shorter than the four pauses' least sum (150 ms): the bound ends the runs.
      const { store, other: c, schema, close } = await heldStore({ requestTimeoutMillis: 120 });
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        const runs = await alwaysDeadlocked(c, schema);
        const started = performance.now();
        await assert.rejects(store.createGrant(newGrant({}, now), now), (e: unknown) => e instanceof StoreUnavailableError);
        const took = performance.now() - started;
        // Not a timing test: far below five runs' pauses and deadlock waits, with room for a loaded machine.
        assert.ok(took < 1000, `settled after ${took} ms, far past its 120 ms bound`);
        const n = await runs();
        assert.ok(n >= 1 && n < 5, `gave up before the fifth run (${n} runs)`);
      } finally {
        await close();
      }
    });

    it("a transaction run again after a deadlock does not queue for a pool connection behind other callers: it stays within requestTimeoutMillis, its retry included, while another caller holds the pool's only connection for longer", async () => {
      const now = 1_800_000_000;
      const { store, other: c, schema, close } = await heldStore({ max: 1, requestTimeoutMillis: 1500, maintenanceTimeoutMillis: 10_000 });
      try {
        await store.createClient(clientRecord({ id: 'agent' }, now));
        // The first run of a grant insert is a deadlock's victim, a little after it began (a
        // sequence, which a rollback does not undo, counts the runs).
        await c.query(`
          CREATE SEQUENCE ${schema}.runs;
          CREATE FUNCTION ${schema}.deadlocked_once() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF nextval('${schema}.runs') = 1 THEN
              PERFORM pg_sleep(0.3);
              RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
            END IF;
            RETURN NEW;
          END $$;
          CREATE TRIGGER deadlocked_once BEFORE INSERT ON ${schema}.grants FOR EACH ROW EXECUTE FUNCTION ${schema}.deadlocked_once();
        `);
        // Another session holds bob's subject lock: a revocation of bob (bounded by the longer
        // maintenance timeout) holds the pool's only connection until it is released, 3 s on.
        await c.query("BEGIN; SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || 'bob'))");
        const started = Date.now();
        const creating = store.createGrant(newGrant({ subject: 'alice' }, now), now).then(
          (v) => ({ ok: true as const, v, ms: Date.now() - started }),
          (e: unknown) => ({ ok: false as const, e, ms: Date.now() - started }),
        );
        // Queued for the connection while the grant insert's first run is under way.
        await new Promise((r) => setTimeout(r, 100));
        const revoking = store.revokeGrants({ subject: 'bob' }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        const release = setTimeout(() => void c.query('COMMIT').catch(() => {}), 3000);
        const created = await creating;
        clearTimeout(release);
        await c.query('COMMIT');
        await revoking;
        assert.ok(created.ms < 1500 + 300, `the grant creation settled after ${created.ms} ms, past its 1500 ms bound`);
        assert.equal(created.ok, true, 'its run again had time to spare');
      } finally {
        await close();
      }
    });
  });

  describe('postgres: migrations', () => {
    it('attack: an instance whose role may only read and write the tables of a schema already migrated (no CREATE on the database or the schema: migrations run by the owner) starts, and serves (was "permission denied for database" from CREATE SCHEMA IF NOT EXISTS)', async () => {
      const schema = schemaName();
      const role = `${schema}_app`;
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        await admin.query(`CREATE ROLE ${role} LOGIN`);
        await admin.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
        await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${schema} TO ${role}`);
        await admin.query(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA ${schema} TO ${role}`);
        const as = new URL(url);
        as.username = role;
        as.password = '';
        const store = await PostgresStore.open({ connectionString: as.href, schema });
        try {
          await store.createClient(clientRecord({ id: 'agent' }, 1_800_000_000));
          assert.equal((await store.getClient('agent'))?.id, 'agent');
        } finally {
          await store.close();
        }
      } finally {
        await admin.query(`DROP OWNED BY ${role}`).catch(() => {});
        await admin.query(`DROP ROLE IF EXISTS ${role}`);
        await admin.end();
      }
    });

    it('attack: a migration that fails (an object it creates exists already) is refused with StoreOpenError naming the schema, the migration and the version the database stays at, with nothing of it applied; eight instances opening an empty schema at once all succeed, each migration applied once', async () => {
      const schema = schemaName();
      const opened = await Promise.all(Array.from({ length: 8 }, () => PostgresStore.open({ connectionString: url, schema, max: 1 })));
      await Promise.all(opened.map((s) => s.close()));
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        const versions = (await c.query('SELECT version FROM schema_migrations ORDER BY version')).rows.map((r) => r.version);
        assert.deepEqual(
          versions,
          Array.from({ length: versions.length }, (_, i) => i + 1),
        );
        const latest = Number(versions.at(-1));
        // The database back at version 21, and an object migration 22 creates there already (the
        // migrations after 22 are written to be re-run: IF NOT EXISTS).
        const failing = 22;
        await c.query('DELETE FROM schema_migrations WHERE version >= $1', [failing]);
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('CREATE SEQUENCE signing_keys_seq');
        await assert.rejects(PostgresStore.open({ connectionString: url, schema }), (e: unknown) => {
          assert.ok(e instanceof StoreOpenError, String(e));
          assert.equal(e.code, 'migration_failed');
          assert.match(
            e.message,
            new RegExp(`^schema ${schema}: migration ${failing} failed \\(the database stays at version ${failing - 1}\\): `),
          );
          assert.match(e.message, /signing_keys_seq/);
          return true;
        });
        assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0].v), failing - 1);
        assert.equal(
          (
            await c.query(
              "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'signing_keys' AND column_name = 'seq'",
              [schema],
            )
          ).rowCount,
          0,
        );
        await c.query('DROP SEQUENCE signing_keys_seq');
        await (await PostgresStore.open({ connectionString: url, schema })).close();
        assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0].v), latest);
        // A newer database is refused the same way.
        await c.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [latest + 1]);
        await assert.rejects(
          PostgresStore.open({ connectionString: url, schema }),
          (e: unknown) => e instanceof StoreOpenError && e.code === 'schema_newer' && /newer than this Tessera knows/.test(e.message),
        );
      } finally {
        await c.end();
      }
    });

    it('counts one owner’s live A2A records on a route through an index (a2a.max_tasks_per_principal), not by reading every record', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await c.query('SET enable_seqscan = off');
        const plan = await c.query(
          'EXPLAIN SELECT count(*) AS n FROM (SELECT 1 FROM a2a_tasks WHERE route = $1 AND owner = $2 AND expires_at > $3 LIMIT $4) t',
          ['agent', 'alice', 0, 10],
        );
        assert.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), /a2a_tasks_owner/);
      } finally {
        await c.end();
      }
    });

    it('migrates a schema-12 database (A2A records without a route) through 13: the records keep their owner, and an older instance still on it claims as before', async () => {
      const schema = schemaName();
      const before = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.deepEqual(await before.claimA2aTask('agent', 'task', 't-old', 'alice', 200, 100), { owner: 'alice', expiresAt: 200 });
      } finally {
        await before.close();
      }
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      // The claim of Tessera 12, word for word: it names no route.
      const claimOfVersion12 = (key: string, owner: string, expiresAt: number, now: number) =>
        c.query(
          `INSERT INTO a2a_tasks (key, owner, expires_at) VALUES ($1, $2, $3)
           ON CONFLICT (key) DO UPDATE SET
             owner = EXCLUDED.owner,
             expires_at = CASE WHEN a2a_tasks.expires_at <= $4 THEN EXCLUDED.expires_at ELSE GREATEST(a2a_tasks.expires_at, EXCLUDED.expires_at) END
           WHERE a2a_tasks.owner = EXCLUDED.owner OR a2a_tasks.expires_at <= $4
           RETURNING owner, expires_at`,
          [key, owner, expiresAt, now],
        );
      try {
        // Back to schema 12, as Tessera 12 left it.
        await c.query('DROP INDEX revocations_token');
        await c.query('DROP INDEX a2a_tasks_owner');
        await c.query('ALTER TABLE a2a_tasks DROP COLUMN route');
        await c.query('ALTER TABLE authorization_codes DROP COLUMN approval_since');
        await c.query('ALTER TABLE clients DROP COLUMN secret_method, DROP COLUMN allowed_origins');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 12');
        const store = await PostgresStore.open({ connectionString: url, schema });
        try {
          // Through 13, and every migration after it.
          assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
          assert.equal((await store.a2aTaskOwner('agent', 'task', 't-old', 100))?.owner, 'alice');
          // An instance of Tessera 12 still running on the database writes records without a route.
          assert.equal((await claimOfVersion12(a2aTaskKey('agent', 'task', 't-12'), 'alice', 300, 100)).rows[0]?.owner, 'alice');
          assert.equal((await store.a2aTaskOwner('agent', 'task', 't-12', 100))?.owner, 'alice');
          // Those records are not counted until renewed; renewed at the limit, hers still, and counted from then on.
          assert.deepEqual(await store.claimA2aTask('agent', 'task', 't-old', 'alice', 300, 100, 1), { owner: 'alice', expiresAt: 300 });
          assert.equal(await store.claimA2aTask('agent', 'task', 't-new', 'alice', 300, 100, 1), 'full');
          // Renewed by Tessera 12, a record keeps the route it was given.
          assert.equal((await claimOfVersion12(a2aTaskKey('agent', 'task', 't-old'), 'alice', 400, 100)).rows[0]?.owner, 'alice');
          assert.equal(await store.claimA2aTask('agent', 'task', 't-new', 'alice', 300, 100, 1), 'full');
        } finally {
          await store.close();
        }
      } finally {
        await c.end();
      }
    });

    it('migrates a schema-13 database to 14: a token revoked before is found by its jti, through the index (introspection reads it on every call)', async () => {
      const schema = schemaName();
      const before = await PostgresStore.open({ connectionString: url, schema });
      try {
        await before.appendRevocations([{ kind: 'token', value: 'jti-old', issuer: null, at: 100, expiresAt: 200 }]);
      } finally {
        await before.close();
      }
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await c.query('DROP INDEX revocations_token');
        await c.query('ALTER TABLE authorization_codes DROP COLUMN approval_since');
        await c.query('ALTER TABLE clients DROP COLUMN secret_method, DROP COLUMN allowed_origins');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 13');
        const store = await PostgresStore.open({ connectionString: url, schema });
        try {
          assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
          assert.equal(await store.tokenRevoked('jti-old'), true);
          assert.equal(await store.tokenRevoked('jti-new'), false);
        } finally {
          await store.close();
        }
        // A table this small is read whole whatever the indexes; forbid that to see whether one fits.
        await c.query('SET enable_seqscan = off');
        const plan = await c.query("EXPLAIN SELECT 1 FROM revocations WHERE kind = 'token' AND value = $1 LIMIT 1", ['jti-old']);
        assert.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), /revocations_token/);
      } finally {
        await c.end();
      }
    });

    it('migrates a schema-17 database to 18: grants made before are exchanged from no token (a revocation of a token leaves them), those made after are found through the indexes', async () => {
      const schema = schemaName();
      const now = 1_800_000_000;
      const before = await PostgresStore.open({ connectionString: url, schema });
      try {
        await before.createClient(clientRecord({ id: 'agent' }));
        assert.equal(typeof (await before.createGrant(newGrant({ id: 'g-root' }, now), now)), 'object');
      } finally {
        await before.close();
      }
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 17');
        // A child Tessera 17 wrote: no column for the token it was exchanged from.
        await c.query(
          `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at)
           VALUES ('g-old', 'g-root', 'g-root', 1, 'token_exchange', 'https://issuer.test', 'alice', 'agent', NULL, '[]', '[]', $1, $2)`,
          [now, now + 3600],
        );
        const store = await PostgresStore.open({ connectionString: url, schema });
        try {
          assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
          const old = await store.getGrant('g-old');
          assert.equal(old?.subjectJti, null);
          assert.equal(old?.actorJti, null);
          assert.equal(
            typeof (await store.createGrant(newGrant({ id: 'g-new', parentId: 'g-root', subjectJti: 'jti-1' }, now), now)),
            'object',
          );
          const revoked = await store.revokeGrants(
            { exchangedFrom: 'jti-1', tokenGrantId: 'g-root' },
            { at: now, reason: 'access_token_revoked', entryExpiresAt: now + 600 },
          );
          assert.deepEqual(
            revoked.map((g) => g.id),
            ['g-new'],
          );
          assert.equal((await store.getGrant('g-old'))?.revokedAt, null);
        } finally {
          await store.close();
        }
        // A table this small is read whole whatever the indexes; forbid that to see whether one fits.
        await c.query('SET enable_seqscan = off');
        // The subject token's exchanges among its grant's children; no index of subject_jti to update on every exchange.
        for (const [where, args, index] of [
          ['parent_id = $1 AND subject_jti = $2', ['g-root', 'jti-1'], 'grants_parent'],
          ['actor_jti = $1', ['jti-1'], 'grants_actor_jti'],
        ] as const) {
          const plan = await c.query(`EXPLAIN SELECT id FROM grants WHERE ${where} AND revoked_at IS NULL`, [...args]);
          assert.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), new RegExp(index));
        }
      } finally {
        await c.end();
      }
    });

    it('migrates a schema-22 database to 23: grants made before were exchanged with no recorded actor grant (a revocation of the actor’s grant leaves them, as before); those made after are revoked with their actor’s grant, found through grants_actor_grant', async () => {
      const schema = schemaName();
      const now = 1_800_000_000;
      const before = await PostgresStore.open({ connectionString: url, schema });
      try {
        await before.createClient(clientRecord({ id: 'agent' }));
        for (const id of ['g-root', 'g-actor']) assert.equal(typeof (await before.createGrant(newGrant({ id }, now), now)), 'object');
      } finally {
        await before.close();
      }
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await c.query('DROP INDEX grants_actor_grant; ALTER TABLE grants DROP COLUMN actor_grant_id');
        await c.query('DELETE FROM schema_migrations WHERE version > 22');
        // A grant Tessera 22 wrote, exchanged with a token of g-actor: its actor grant was not recorded.
        await c.query(
          `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at, actor_jti)
           VALUES ('g-old', 'g-root', 'g-root', 1, 'token_exchange', 'https://issuer.test', 'alice', 'agent', '{"sub":"agent"}', '[]', '[]', $1, $2, 'jti-a')`,
          [now, now + 3600],
        );
        const store = await PostgresStore.open({ connectionString: url, schema });
        try {
          assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
          assert.equal((await store.getGrant('g-old'))?.actorGrantId, null);
          const fresh = await store.createGrant(newGrant({ id: 'g-new', parentId: 'g-root' }, now), now, { actorGrantId: 'g-actor' });
          assert.equal((fresh as GrantRecord).actorGrantId, 'g-actor');
          const revoked = await store.revokeGrants(
            { grantId: 'g-actor' },
            { at: now, reason: 'agent_compromised', entryExpiresAt: now + 600 },
          );
          assert.deepEqual(revoked.map((g) => g.id).sort(), ['g-actor', 'g-new']);
          assert.equal((await store.getGrant('g-old'))?.revokedAt, null);
        } finally {
          await store.close();
        }
        await c.query('SET enable_seqscan = off');
        const plan = await c.query('EXPLAIN SELECT id FROM grants WHERE actor_grant_id = $1', ['g-actor']);
        assert.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), /grants_actor_grant/);
      } finally {
        await c.end();
      }
    });

    it('migrates a schema-21 database to 22: the signing keys stored before are numbered in the order they were used (activation, creation, kid in byte order), so the active key stays the same; a key added after, by this Tessera or an instance still on 21, comes after them whatever its kid', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      const insert = (kid: string, at: number) =>
        c.query(
          "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at) VALUES ($1, 'ES256', '{}', 'sealed', $2, $2)",
          [kid, at],
        );
      try {
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 21');
        // Kids a linguistic collation orders otherwise than bytes ('_' and '-' ignored, case folded).
        for (const [kid, at] of [
          ['k_b', 100],
          ['K-a', 100],
          ['k-old', 50],
          ['k-c', 100],
        ] as const)
          await insert(kid, at);
        const store = await PostgresStore.open({ connectionString: url, schema });
        try {
          assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
          await store.addSigningKey({
            kid: 'k-0',
            alg: 'ES256',
            publicJwk: {},
            sealedPrivateKey: 'sealed',
            createdAt: 100,
            activatesAt: 100,
          });
          // An instance still on 21 inserts without the column.
          await insert('a-21', 100);
          assert.deepEqual(
            (await store.listSigningKeys()).map((k) => [k.kid, k.seq]),
            [
              ['k-old', 1],
              ['K-a', 2],
              ['k-c', 3],
              ['k_b', 4],
              ['k-0', 5],
              ['a-21', 6],
            ],
          );
        } finally {
          await store.close();
        }
      } finally {
        await c.end();
      }
    });

    it('migrates a schema-20 database with a login session signed out twice (instances racing before migration 21) to one entry, the one lasting longest; other entries are untouched, and the session is signed out once from then on', async () => {
      const schema = schemaName();
      const scope = 'https://issuer.test#login-sessions';
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        await c.query('DROP INDEX revocations_scoped_token');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 20');
        // What two instances of Tessera 20 signing one session out at once wrote, with other entries around.
        const rows: [string, string, string | null, number][] = [
          ['token', 'session-1', scope, 700],
          ['token', 'session-1', scope, 900],
          ['token', 'session-1', scope, 900],
          ['token', 'session-2', scope, 700],
          ['token', 'jti-1', null, 200],
          ['token', 'jti-1', null, 200],
          ['subject', 'alice', scope, 900],
          ['subject', 'alice', scope, 900],
        ];
        for (const [i, [kind, value, issuer, expiresAt]] of rows.entries()) {
          await c.query('INSERT INTO revocations (seq, kind, value, issuer, at, expires_at) VALUES ($1, $2, $3, $4, 100, $5)', [
            i + 1,
            kind,
            value,
            issuer,
            expiresAt,
          ]);
        }
        await c.query("UPDATE meta SET value = $1 WHERE name = 'revocations_seq'", [rows.length]);
        const store = await PostgresStore.open({ connectionString: url, schema });
        try {
          assert.equal(Number((await c.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
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
          assert.equal((await store.versions()).revocations, rows.length, 'nothing numbered');
        } finally {
          await store.close();
        }
      } finally {
        await c.end();
      }
    });

    it('finds a client id in any case through an index, not by reading every client (dynamic registration can make many)', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        // A table this small is read whole whatever the indexes; forbid that to see whether one fits.
        await c.query('SET enable_seqscan = off');
        const plan = await c.query('EXPLAIN SELECT id FROM clients WHERE lower(id) = lower($1) LIMIT 1', ['X']);
        assert.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), /clients_id_lower/);
      } finally {
        await c.end();
      }
    });

    it('reads codes written before migration 10 with no DPoP key (jkt NULL), so they redeem unbound', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        // Back to schema 9, with a code an older Tessera wrote.
        await c.query('DROP INDEX revocations_token');
        await c.query('DROP TABLE a2a_tasks');
        await c.query('DROP INDEX revocations_subject');
        await c.query('DROP INDEX clients_id_lower');
        await c.query('ALTER TABLE authorization_codes DROP COLUMN jkt, DROP COLUMN approval_since');
        await c.query('ALTER TABLE clients DROP COLUMN secret_method, DROP COLUMN allowed_origins');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 9');
        await c.query(
          `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at)
           VALUES ('h-old', 'agent', NULL, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'alice', 'https://issuer.test', '[]', '[]', 1, 2)`,
        );
      } finally {
        await c.end();
      }
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.equal((await store.getAuthorizationCode('h-old'))?.jkt, null);
      } finally {
        await store.close();
      }
    });

    it('reads secret clients registered before migration 16 (secret_method NULL) as accepting either secret method, and keeps the method of one registered after', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        // Back to schema 15, with a client Tessera 15 registered.
        await c.query('ALTER TABLE clients DROP COLUMN secret_method, DROP COLUMN allowed_origins');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 15');
        await c.query(
          `INSERT INTO clients (id, auth_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, created_at, updated_at)
           VALUES ('old', 'client_secret', 'hash', NULL, NULL, '[]', '["https://api.test"]', '["client_credentials"]', NULL, 1, 1)`,
        );
      } finally {
        await c.end();
      }
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.equal((await store.getClient('old'))?.secretMethod, null);
        assert.deepEqual((await store.getClient('old'))?.allowedOrigins, []);
        await store.createClient(clientRecord({ id: 'new', secretMethod: 'client_secret_basic' }));
        assert.equal((await store.getClient('new'))?.secretMethod, 'client_secret_basic');
      } finally {
        await store.close();
      }
    });

    it('reads clients registered before migration 17 as having no origins of their own, and keeps those of one registered after', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        // Back to schema 16, with a public client Tessera 16 registered.
        await c.query('ALTER TABLE clients DROP COLUMN allowed_origins');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 16');
        await c.query(
          `INSERT INTO clients (id, auth_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, redirect_uris, created_at, updated_at)
           VALUES ('old', 'none', NULL, NULL, NULL, '[]', '["https://api.test"]', '["authorization_code"]', NULL, '["https://app.test/cb"]', 1, 1)`,
        );
      } finally {
        await c.end();
      }
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.deepEqual((await store.getClient('old'))?.allowedOrigins, []);
        await store.createClient(clientRecord({ id: 'new', allowedOrigins: ['https://app.test'] }));
        assert.deepEqual((await store.getClient('new'))?.allowedOrigins, ['https://app.test']);
        // An instance still on 16 registers clients without the column: they read as having none.
        const v16 = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
        await v16.connect();
        try {
          await v16.query(
            `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, created_at, updated_at)
             VALUES ('by-16', 'client_secret', NULL, 'hash', NULL, NULL, '[]', '["https://api.test"]', '["client_credentials"]', NULL, 1, 1)`,
          );
        } finally {
          await v16.end();
        }
        assert.deepEqual((await store.getClient('by-16'))?.allowedOrigins, []);
      } finally {
        await store.close();
      }
    });

    it('reads clients registered before migration 20 as not DPoP-bound, keeps the flag of one registered after, and reads those an instance still on 19 registers as not bound', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        // Back to schema 19, with a client Tessera 19 registered.
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 19');
        await c.query(
          `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, allowed_origins, created_at, updated_at)
           VALUES ('old', 'client_secret', NULL, 'hash', NULL, NULL, '[]', '["https://api.test"]', '["client_credentials"]', NULL, '[]', 1, 1)`,
        );
      } finally {
        await c.end();
      }
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
        const admin = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
        await admin.connect();
        try {
          assert.equal(Number((await admin.query('SELECT max(version) AS v FROM schema_migrations')).rows[0]?.v), 25);
          // An instance still on 19 registers clients without the column: they read as not bound.
          await admin.query(
            `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, allowed_origins, created_at, updated_at)
             VALUES ('by-19', 'client_secret', NULL, 'hash', NULL, NULL, '[]', '["https://api.test"]', '["client_credentials"]', NULL, '[]', 1, 1)`,
          );
        } finally {
          await admin.end();
        }
        assert.equal((await store.getClient('old'))?.dpopBoundAccessTokens, false);
        assert.equal((await store.getClient('by-19'))?.dpopBoundAccessTokens, false);
        await store.createClient(clientRecord({ id: 'new', dpopBoundAccessTokens: true }));
        assert.equal((await store.getClient('new'))?.dpopBoundAccessTokens, true);
        assert.equal((await store.updateClient('old', { dpopBoundAccessTokens: true }, 2))?.dpopBoundAccessTokens, true);
      } finally {
        await store.close();
      }
    });

    it('dates codes written before migration 15 (approval_since NULL) by their creation: a subject revocation from then on refuses them at redemption', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      const now = Math.floor(Date.now() / 1000);
      try {
        // Back to schema 14, with codes Tessera 14 wrote.
        await c.query('ALTER TABLE authorization_codes DROP COLUMN approval_since');
        await c.query('ALTER TABLE clients DROP COLUMN secret_method, DROP COLUMN allowed_origins');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac; ALTER TABLE removed_signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 14');
        for (const [hash, subject] of [
          ['h-revoked', 'mallory'],
          ['h-kept', 'alice'],
        ]) {
          await c.query(
            `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at)
             VALUES ($1, 'agent', NULL, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', $2, 'https://issuer.test', '[]', '[]', $3, $4)`,
            [hash, subject, now, now + 60],
          );
        }
      } finally {
        await c.end();
      }
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
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
      } finally {
        await store.close();
      }
    });

    it('fills in the jti and token hash of events written before migration 4, so tessera trace finds them', async () => {
      const schema = schemaName();
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      const old = {
        id: uuidv7(),
        time: Date.now(),
        kind: 'gateway.request',
        decision: 'allow',
        reason: 'ok',
        jti: 'j-old',
        token_hash: 'h-old',
      };
      try {
        // Back to schema 3, as an older Tessera left it, with one event it wrote.
        await c.query('DROP INDEX revocations_token');
        await c.query('DROP TABLE a2a_tasks');
        await c.query('DROP INDEX revocations_subject');
        await c.query('DROP INDEX clients_id_lower');
        await c.query('DROP TABLE remembered_consents');
        await c.query('DROP TABLE removed_signing_keys');
        await c.query('ALTER TABLE refresh_tokens DROP COLUMN jkt');
        await c.query(
          'DROP TABLE authorization_codes; ALTER TABLE clients DROP COLUMN redirect_uris, DROP COLUMN name, DROP COLUMN secret_method, DROP COLUMN allowed_origins',
        );
        await c.query('ALTER TABLE audit_events DROP COLUMN jti, DROP COLUMN token_hash');
        await c.query('DROP INDEX grants_actor_jti; ALTER TABLE grants DROP COLUMN subject_jti, DROP COLUMN actor_jti');
        await c.query('ALTER TABLE signing_keys DROP COLUMN mac');
        await c.query('ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens');
        await c.query('ALTER TABLE signing_keys DROP COLUMN seq');
        await c.query('DELETE FROM schema_migrations WHERE version > 3');
        await c.query('INSERT INTO audit_events (id, time, kind, event) VALUES ($1, $2, $3, $4)', [
          old.id,
          old.time,
          old.kind,
          JSON.stringify(old),
        ]);
      } finally {
        await c.end();
      }
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.deepEqual(await store.queryAudit({ jti: 'j-old' }), [old]);
        assert.deepEqual(await store.queryAudit({ token_hash: 'h-old' }), [old]);
      } finally {
        await store.close();
      }
    });
  });

  describe('postgres: revocation log appends pushed to watchers (LISTEN/NOTIFY)', () => {
    const now = 1_800_000_000;
    const token = (value: string) => [{ kind: 'token' as const, value, issuer: null, at: now, expiresAt: now + 600 }];
    const lastSeq = async (store: Store) => (await store.versions()).revocations;

    /** A plain connection in `schema`, as an operator's psql would be. */
    async function admin(schema: string): Promise<pg.Client> {
      const c = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
      await c.connect();
      return c;
    }
    /** Backends LISTENing for `schema`'s revocations, found the way an operator would. */
    async function listenerPids(c: pg.Client, schema: string): Promise<number[]> {
      const r = await c.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query = $2 ORDER BY pid', [
        LISTENER_APPLICATION_NAME,
        `LISTEN "${revocationChannel(schema)}"`,
      ]);
      return r.rows.map((row: { pid: number }) => row.pid);
    }

    it('tells a watcher on another store of every committed append (revokeGrants, appendRevocations, refresh reuse), with only the last seq as payload', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      const raw = await admin(schema);
      const payloads: string[] = [];
      raw.on('notification', (m) => payloads.push(m.payload ?? ''));
      await raw.query(`LISTEN "${revocationChannel(schema)}"`);
      const heard: (number | undefined)[] = [];
      const stop = await b.watchRevocations((seq) => heard.push(seq));
      try {
        await a.createClient(clientRecord({ id: 'agent' }, now));
        const root = await a.createGrant(newGrant({}, now), now);
        const rootId = (root as { id: string }).id;
        await a.createGrant(newGrant({ parentId: rootId }, now), now);
        await a.revokeGrants({ grantId: rootId }, { at: now, reason: 'test', entryExpiresAt: now + 600 });
        const afterTree = await lastSeq(a);
        assert.equal(afterTree, 2, 'the root and its child');
        await until(() => heard.includes(afterTree));

        await a.appendRevocations(token('jti-1'));
        const afterToken = await lastSeq(a);
        await until(() => heard.includes(afterToken));

        const family = await a.createGrant(newGrant({}, now), now);
        const familyId = (family as { id: string }).id;
        const hash = `rt_${Math.random().toString(36).slice(2)}`;
        await a.createRefreshToken({
          hash,
          grantId: familyId,
          clientId: 'agent',
          createdAt: now,
          expiresAt: now + 3600,
          rotatedAt: now,
          revokedAt: null,
        });
        const reuse = await a.rotateRefreshToken(hash, {
          clientId: 'agent',
          nextHash: `${hash}_next`,
          nextExpiresAt: now + 7200,
          now: now + 1,
          graceSeconds: 0,
          entryExpiresAt: now + 600,
        });
        assert.equal(reuse.status, 'reused');
        const afterReuse = await lastSeq(a);
        await until(() => heard.includes(afterReuse));

        assert.deepEqual(heard, [afterTree, afterToken, afterReuse], 'one call per committing transaction');
        await until(() => payloads.length === 3);
        assert.deepEqual(payloads, [String(afterTree), String(afterToken), String(afterReuse)], 'the payload is the seq, nothing else');
      } finally {
        await stop();
        await raw.end();
        await a.close();
        await b.close();
      }
    });

    it('notifies on commit only: never for a write that rolled back, and never before the entry can be read', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      const c = await admin(schema);
      // Checked at COMMIT, after every statement of the transaction (the NOTIFY included) ran:
      // 'doomed' makes the commit fail, 'slow' holds it open for 300 ms.
      await c.query(`
        CREATE FUNCTION commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.value = 'doomed' THEN RAISE EXCEPTION 'refused at commit by the test'; END IF;
          IF NEW.value = 'slow' THEN PERFORM pg_sleep(0.3); END IF;
          RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER commit_gate AFTER INSERT ON revocations
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_gate();`);
      const heard: { seq: number | undefined; readable: Promise<boolean> }[] = [];
      const stop = await b.watchRevocations((seq) => {
        // Read at once: a notification sent before the commit would find nothing.
        heard.push({ seq, readable: b.revocationsSince((seq ?? 1) - 1, now).then((es) => es.some((e) => e.seq === seq)) });
      });
      try {
        await assert.rejects(a.appendRevocations(token('doomed')), /refused at commit by the test/);
        assert.deepEqual(await a.revocationsSince(0, now), [], 'rolled back');
        await a.appendRevocations(token('slow'));
        await a.appendRevocations(token('after'));
        await until(() => heard.length >= 2);
        assert.deepEqual(
          heard.map((h) => h.seq),
          [1, 2],
          'one notification per committed append; none for the rolled-back one (it would have carried seq 1 too)',
        );
        for (const h of heard) assert.equal(await h.readable, true, `seq ${h.seq} was readable when it was announced`);
      } finally {
        await stop();
        await c.end();
        await a.close();
        await b.close();
      }
    });

    it('attack: two appends racing to commit out of order (the first to take a seq holds its commit open, the second tries to commit past it): a feed reading only past its cursor, polling throughout, applies both', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      const reader = await PostgresStore.open({ connectionString: url, schema });
      const c = await admin(schema);
      // Runs at COMMIT, after the append and its NOTIFY: 'slow' holds its commit open for 500 ms.
      await c.query(`
        CREATE FUNCTION commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.value = 'slow' THEN PERFORM pg_sleep(0.5); END IF;
          RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER commit_gate AFTER INSERT ON revocations
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_gate();`);
      const list = new RevocationList();
      const applied: string[] = [];
      list.subscribe((r) => applied.push(...(r.tokenIds ?? []).map((t) => t.jti)));
      const feed = new RevocationFeed(reader, list, 'https://issuer.test');
      let polling = true;
      const poll = (async () => {
        while (polling) {
          await feed.catchUp(now);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      try {
        const slow = a.appendRevocations(token('slow'));
        await new Promise((r) => setTimeout(r, 100));
        // With a seq taken from a sequence at insert, this one (seq 2) would commit first and the
        // feed's cursor pass seq 1 before it became visible.
        const fast = b.appendRevocations(token('fast'));
        await Promise.all([slow, fast]);
        await until(() => applied.length >= 2);
        assert.deepEqual(
          (await reader.revocationsSince(0, now)).map((e) => [e.seq, e.value]),
          [
            [1, 'slow'],
            [2, 'fast'],
          ],
          'numbered in commit order',
        );
        assert.deepEqual(applied, ['slow', 'fast']);
      } finally {
        polling = false;
        await poll;
        await c.end();
        await a.close();
        await b.close();
        await reader.close();
      }
    });

    it('reconnects after its connection is terminated, says so once, and reports the gap with an undefined seq', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      const c = await admin(schema);
      const heard: (number | undefined)[] = [];
      const warnings: string[] = [];
      const stop = await b.watchRevocations((seq) => heard.push(seq), { onWarning: (m) => warnings.push(m) });
      try {
        const [pid, ...others] = await listenerPids(c, schema);
        assert.ok(pid !== undefined && others.length === 0, 'one listening backend, on a connection of its own');
        await c.query('SELECT pg_terminate_backend($1)', [pid]);
        await until(() => heard.includes(undefined), 5000);
        const now2 = await listenerPids(c, schema);
        assert.equal(now2.length, 1);
        assert.notEqual(now2[0], pid, 'a new backend');
        assert.equal(warnings.length, 1);
        assert.match(warnings[0] ?? '', /^PostgreSQL revocation notifications interrupted \(57P01\); reconnecting$/);

        await a.appendRevocations(token('after-reconnect'));
        const seq = await lastSeq(a);
        await until(() => heard.includes(seq));
      } finally {
        await stop();
        await c.end();
        await a.close();
        await b.close();
      }
    });

    it('silent network partition (no RST, no FIN): the LISTEN connection is found dead by its liveness query within the interval, reconnected, the gap reported, and a NOTIFY after recovery delivered', async () => {
      const schema = schemaName();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const c = await admin(schema);
      const fwd = await forwarder();
      const heard: string[] = [];
      const warnings: string[] = [];
      let gaps = 0;
      const listener = new Listener({
        connectionString: fwd.url,
        channel: revocationChannel(schema),
        onNotify: (p) => heard.push(p),
        onReconnect: () => gaps++,
        onWarning: (m) => warnings.push(m),
        livenessIntervalMs: 300,
        livenessTimeoutMs: 300,
      });
      await listener.start();
      try {
        const [pid] = await listenerPids(c, schema);
        assert.ok(pid !== undefined);
        fwd.blackHole();
        const holed = Date.now();
        // Keepalive alone would take minutes; the liveness query notices after 300 ms of silence plus 300 ms unanswered.
        await until(() => warnings.length > 0, 3000);
        assert.ok(Date.now() - holed < 2000, `noticed after ${Date.now() - holed} ms`);
        assert.match(warnings[0] ?? '', /^PostgreSQL revocation notifications interrupted \(LIVENESS_TIMEOUT\); reconnecting$/);
        await until(() => gaps === 1, 5000);
        await until(async () => (await listenerPids(c, schema)).some((p) => p !== pid), 3000);

        await a.appendRevocations([{ kind: 'token', value: 'after-partition', issuer: null, at: now, expiresAt: now + 600 }]);
        const seq = await lastSeq(a);
        await until(() => heard.includes(String(seq)), 3000);
        assert.equal(warnings.length, 1, 'one warning per loss');
        // Still answering: quiet but alive is not a loss.
        await new Promise((r) => setTimeout(r, 1200));
        assert.equal(gaps, 1);
        assert.equal(warnings.length, 1);
      } finally {
        await listener.stop();
        await fwd.close();
        await c.end();
        await a.close();
      }
    });

    it('leaves no listening connection behind once stopped, or once the store is closed', async () => {
      const schema = schemaName();
      const store = await PostgresStore.open({ connectionString: url, schema });
      const c = await admin(schema);
      try {
        const stop = await store.watchRevocations(() => {});
        assert.equal((await listenerPids(c, schema)).length, 1);
        await stop();
        await until(async () => (await listenerPids(c, schema)).length === 0);
        await store.watchRevocations(() => {});
        await store.watchRevocations(() => {});
        assert.equal((await listenerPids(c, schema)).length, 2);
      } finally {
        await store.close();
      }
      try {
        await until(async () => (await listenerPids(c, schema)).length === 0);
      } finally {
        await c.end();
      }
    });
  });
}
