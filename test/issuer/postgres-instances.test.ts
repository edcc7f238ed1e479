/**
 * Scale-out: two token-service instances on one PostgreSQL database. A client registered on one
 * authenticates on the other; a refresh token rotated on one is a reuse on the other; a grant
 * revoked on one is rejected by the other's in-process verifier after its next sync, and, pushed
 * through LISTEN/NOTIFY, long before it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { decodeJwt, type JWK, SignJWT } from 'jose';
import pg from 'pg';
import { StoreUnavailableError } from '../../src/store/contract.ts';
import { LISTENER_APPLICATION_NAME } from '../../src/store/postgres/listener.ts';
import { PostgresStore, revocationChannel } from '../../src/store/postgres/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { until } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { bearer, claims, makeKey, sign } from '../helpers/tokens.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

const reachable = await postgresReachable(url);

async function dropSchema(name: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
  await c.end();
}

describe('two instances on PostgreSQL', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  let a: RunningIssuer;
  let b: RunningIssuer;
  let secret: string;

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema }) });
    // The second instance shares the store and the master key, and announces the same issuer.
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema }),
      master: a.master,
      config: { token_service: { issuer: a.url } },
    });
    secret = (await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials', 'refresh_token', EXCHANGE] }))
      .secret;
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await dropSchema(schema);
  });

  it('shares clients and keys, rotation state and revocations', async () => {
    await b.service.sync();
    const auth = { authorization: basic('agent', secret) };
    const cc = await b.post('/oauth2/token', { grant_type: 'client_credentials' }, auth);
    assert.equal(cc.status, 200, 'a client registered on A authenticates on B, which signs with the shared key');

    const user = await a.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const ex = (await (
      await a.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
        auth,
      )
    ).json()) as { access_token: string; refresh_token: string };
    assert.equal((await b.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: ex.refresh_token }, auth)).status, 200);
    assert.equal(
      (await a.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: ex.refresh_token }, auth)).status,
      400,
      'reuse across instances',
    );

    const verifierB = inProcessVerifier(b);
    const fresh = await a.service.mint({ clientId: 'agent', subject: 'bob', ttl: 600 });
    assert.equal((await verifierB.verify(bearer(fresh.access_token))).ok, true);
    await a.service.revokeGrants({ grantId: decodeJwt(fresh.access_token).grant_id as string }, 'test');
    await b.service.sync();
    assert.equal((await verifierB.verify(bearer(fresh.access_token))).ok, false, 'B rejects after its next sync');
  });

  it('attack: a client revoking its own access token in 20 concurrent RFC 7009 requests at two instances appends one revocation log entry and one token.revoked, not one per request that found it not yet revoked', async () => {
    const auth = { authorization: basic('agent', secret) };
    const now = Math.floor(Date.now() / 1000);
    const access = ((await (await a.post('/oauth2/token', { grant_type: 'client_credentials' }, auth)).json()) as { access_token: string })
      .access_token;
    const jti = decodeJwt(access).jti as string;
    const statuses = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).post('/oauth2/revoke', { token: access }, auth).then((r) => r.status)),
    );
    assert.deepEqual(new Set(statuses), new Set([200]));
    const logged = (await a.store.revocationsSince(0, now, 1_000_000)).filter((e) => e.value === jti);
    assert.equal(logged.length, 1, 'one log entry for one token');
    await a.service.audit.flush();
    await b.service.audit.flush();
    const revoked = (await a.store.queryAudit({ kinds: ['token.revoked'], limit: 10_000 })).filter((e) => e.jti === jti);
    assert.equal(revoked.length, 1, 'one token.revoked: the revocation that revoked it');
    const inactive = (await a.store.queryAudit({ kinds: ['revocation.denied'], limit: 10_000 })).filter(
      (e) => e.reason === 'inactive' && e.delegation_id === decodeJwt(access).grant_id,
    );
    assert.equal(inactive.length, 19, 'the 19 others on record as revocation.denied inactive');
  });

  it('a client disabled on A: B, before its next sync, writes no new grant for it, and what it issues on an old one dies with that grant', async () => {
    const s = (await a.addClient({ id: 'stale-window', scopes: ['api:read', 'api:write'], grantTypes: ['client_credentials'] })).secret;
    await b.service.sync();
    const auth = { authorization: basic('stale-window', s) };
    assert.equal((await b.post('/oauth2/token', { grant_type: 'client_credentials' }, auth)).status, 200);
    await a.service.setClientDisabled('stale-window', true);
    // B has not synced and still takes the client for enabled. Another scope needs a new grant:
    // the store refuses it, so nothing outlives A's revocation.
    const fresh = await b.post('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, auth);
    assert.equal(fresh.status, 401);
    assert.equal(((await fresh.json()) as { error: string }).error, 'invalid_client');
    // The scope it already holds a grant for is answered from B's cache, on the grant A revoked.
    const cached = (await (await b.post('/oauth2/token', { grant_type: 'client_credentials' }, auth)).json()) as { access_token: string };
    await b.service.sync();
    for (const [name, instance] of [
      ['A', a],
      ['B', b],
    ] as const) {
      const r = await inProcessVerifier(instance).verify(bearer(cached.access_token));
      assert.equal(r.ok, false, `${name} refuses the token B issued on the revoked grant`);
    }
    assert.equal((await b.post('/oauth2/token', { grant_type: 'client_credentials' }, auth)).status, 401, 'B now knows');
  });

  it('an instance started just after a revoked grant expired still refuses its token, which verifiers accept for their clock skew past exp', async () => {
    const t = await a.service.mint({ clientId: 'agent', subject: 'rolling-deploy', ttl: 1 });
    await a.service.revokeGrants({ grantId: t.grant_id }, 'test');
    // Past the token's exp (and its grant's expiry), within the issuers' clock_skew (30 s).
    await until(() => Date.now() / 1000 > (decodeJwt(t.access_token).exp as number) + 1, 5000);
    const c = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema }),
      master: a.master,
      config: { token_service: { issuer: a.url } },
    });
    try {
      const r = await inProcessVerifier(c).verify(bearer(t.access_token));
      assert.equal(r.ok ? 'accepted' : r.error.code, 'token_revoked', 'a new instance (a rolling deploy) must not take it for live');
    } finally {
      await c.close();
    }
  });

  it('a client removed and added again at A (its leaked secret replaced): B, whose read of it was in flight when it synced, refuses the old secret', async () => {
    const old = (await a.addClient({ id: 'leaked', scopes: ['api:read'], grantTypes: ['client_credentials'] })).secret;
    // C reads the client from the store once, and that answer is held back until the test lets it go.
    const real = await PostgresStore.open({ connectionString: url, schema });
    let hold: Promise<void> | undefined;
    let release = () => {};
    let read = () => {};
    const readDone = new Promise<void>((resolve) => {
      read = resolve;
    });
    const store = new Proxy(real, {
      get(target, name) {
        const value = Reflect.get(target, name, target);
        if (name !== 'getClient') return typeof value === 'function' ? value.bind(target) : value;
        return async (id: string) => {
          const record = await target.getClient(id);
          if (id === 'leaked' && hold === undefined) {
            hold = new Promise<void>((resolve) => {
              release = resolve;
            });
            read();
            await hold;
          }
          return record;
        };
      },
    });
    const c = await startIssuer({ store, master: a.master, config: { token_service: { issuer: a.url } } });
    try {
      const auth = (secret: string) => ({ authorization: basic('leaked', secret) });
      const inFlight = c.post('/oauth2/token', { grant_type: 'client_credentials' }, auth(old));
      await readDone;
      await a.service.removeClient('leaked');
      const fresh = (await a.addClient({ id: 'leaked', scopes: ['api:read'], grantTypes: ['client_credentials'] })).secret;
      await c.service.sync();
      release();
      await inFlight;
      const again = await c.post('/oauth2/token', { grant_type: 'client_credentials' }, auth(old));
      assert.equal(again.status, 401, 'the replaced secret still authenticates at C');
      assert.equal((await c.post('/oauth2/token', { grant_type: 'client_credentials' }, auth(fresh))).status, 200);
    } finally {
      release();
      await c.close();
    }
  });

  it('a key pre-published at A stays in the JWKS of an instance whose kid-miss read of its keys (a made-up kid) began before the rotation and ended after it synced', async () => {
    const real = await PostgresStore.open({ connectionString: url, schema });
    let armed = false;
    let release = () => {};
    let read = () => {};
    const readDone = new Promise<void>((resolve) => {
      read = resolve;
    });
    const store = new Proxy(real, {
      get(target, name) {
        const value = Reflect.get(target, name, target);
        if (name !== 'listSigningKeys') return typeof value === 'function' ? value.bind(target) : value;
        return async () => {
          const keys = await target.listSigningKeys();
          if (armed) {
            armed = false;
            read();
            await new Promise<void>((resolve) => {
              release = resolve;
            });
          }
          return keys;
        };
      },
    });
    const c = await startIssuer({ store, master: a.master, config: { token_service: { issuer: a.url } } });
    try {
      // Anyone can send a token naming a kid C does not know: C reads its keys again.
      armed = true;
      const made = await sign(makeKey('ES256', 'made-up-kid'), claims({ iss: a.url }));
      const missed = inProcessVerifier(c).verify(bearer(made));
      await readDone;
      const next = await a.service.keys.rotate();
      await c.service.sync();
      release();
      await missed;
      const jwks = (await (await fetch(`${c.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
      assert.ok(
        jwks.keys.some((k) => k.kid === next.kid),
        "the pre-published key is missing from C's JWKS: verifiers caching it will not know the key when it signs",
      );
    } finally {
      release();
      await c.close();
    }
  });

  it('attack: a failover that lost the revocation log’s last entries hands their sequence numbers out again; both instances read the new entries, never skip them', async () => {
    const verifierA = inProcessVerifier(a);
    const verifierB = inProcessVerifier(b);
    const pgc = new pg.Client({ connectionString: url });
    await pgc.connect();
    try {
      const seq = async () =>
        Number((await pgc.query(`SELECT value FROM ${schema}.meta WHERE name = 'revocations_seq'`)).rows[0].value as string);
      const first = await a.service.mint({ clientId: 'agent', subject: 'before-failover', ttl: 600 });
      const kept = await seq();
      await a.service.revokeGrants({ grantId: first.grant_id }, 'test');
      await b.service.sync();
      // The standby promoted had not received that revocation's commit (asynchronous replication):
      // its log ends, and its counter stands, where they were before it.
      await pgc.query(`DELETE FROM ${schema}.revocations WHERE seq > $1`, [kept]);
      await pgc.query(`UPDATE ${schema}.meta SET value = $1 WHERE name = 'revocations_seq'`, [kept]);
      await pgc.query(`UPDATE ${schema}.grants SET revoked_at = NULL, revoked_reason = NULL WHERE id = $1`, [first.grant_id]);

      const second = await a.service.mint({ clientId: 'agent', subject: 'after-failover', ttl: 600 });
      assert.equal((await verifierB.verify(bearer(second.access_token))).ok, true);
      await a.service.revokeGrants({ grantId: second.grant_id }, 'test');
      assert.equal(await seq(), kept + 1, 'its entry took the sequence number the lost one had');
      const onA = await verifierA.verify(bearer(second.access_token));
      assert.equal(onA.ok ? 'accepted' : onA.error.code, 'token_revoked', 'A, which revoked it, refuses it');
      await b.service.sync();
      const onB = await verifierB.verify(bearer(second.access_token));
      assert.equal(onB.ok ? 'accepted' : onB.error.code, 'token_revoked', 'B refuses it after its next sync');
    } finally {
      await pgc.end();
    }
  });

  it('takes a DPoP proof with a fractional iat (RFC 7519 NumericDate): the replay cache stores whole seconds', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const proof = await new SignJWT({ htm: 'POST', htu: `${a.url}/oauth2/token`, iat: Date.now() / 1000 - 0.5, jti: randomUUID() })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicKey.export({ format: 'jwk' }) as JWK })
      .sign(key.privateKey);
    const post = () =>
      a.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('agent', secret), dpop: proof });
    const res = await post();
    assert.equal(res.status, 200, await res.text());
    assert.equal((await post()).status, 400, 'and its replay is refused');
  });

  it('a NUL in a client id at the token endpoint, or in an admin API grant id or member is refused as unknown or invalid, not a 500 from PostgreSQL, which stores no NUL in text', async () => {
    const nul = await a.post('/oauth2/token', { grant_type: 'client_credentials', client_id: 'agent\u0000', client_secret: secret });
    assert.equal(nul.status, 401, await nul.clone().text());
    assert.equal(((await nul.json()) as { error: string }).error, 'invalid_client');
    const basicNul = await a.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('a\u0000b', 'x') });
    assert.equal(basicNul.status, 401);
    await a.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [a.url] }).then(async (ops) => {
      const admin = (await (
        await a.post('/oauth2/token', { grant_type: 'client_credentials', audience: a.url }, { authorization: basic('ops', ops.secret) })
      ).json()) as {
        access_token: string;
      };
      const headers = { authorization: `Bearer ${admin.access_token}`, 'content-type': 'application/json' };
      const tree = await fetch(`${a.url}/oauth2/admin/grants/g_%00x`, { headers });
      assert.equal(tree.status, 404);
      for (const body of ['{"grant_id":"g_\\u0000"}', '{"subject":"a\\u0000b"}', '{"client_id":"agent\\u0000"}']) {
        const res = await fetch(`${a.url}/oauth2/admin/revoke`, { method: 'POST', headers, body });
        assert.equal(res.status, 400, body);
      }
    });
  });
});

describe('refresh tokens across two instances on PostgreSQL', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  const refreshSchema = `${schema}_rt`;
  let a: RunningIssuer;
  let b: RunningIssuer;
  let holder: { id: string; secret: string };
  let thief: { id: string; secret: string };
  const AT = 'urn:ietf:params:oauth:token-type:access_token';

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema: refreshSchema }) });
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema: refreshSchema }),
      master: a.master,
      config: { token_service: { issuer: a.url } },
    });
    const grantTypes = ['refresh_token', EXCHANGE];
    holder = await a.addClient({ id: 'holder', scopes: ['api:read', 'api:write'], grantTypes });
    thief = await a.addClient({ id: 'thief', scopes: ['api:read', 'api:write'], grantTypes });
    await b.service.sync();
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await dropSchema(refreshSchema);
  });

  /** A delegated token with a refresh token, from instance `on`. */
  async function family(on: RunningIssuer, user: string): Promise<{ access_token: string; refresh_token: string }> {
    const subject = await a.service.mint({ clientId: 'holder', subject: user, ttl: 3600 });
    const res = await on.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
      { authorization: basic(holder.id, holder.secret) },
    );
    const body = (await res.json()) as { access_token: string; refresh_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  }
  const refresh = (on: RunningIssuer, rt: string, extra: Record<string, string> = {}, c = holder) =>
    on.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt, ...extra }, { authorization: basic(c.id, c.secret) });

  it('a refresh race across the two instances: of parallel uses of one refresh token on A and B, exactly one succeeds', async () => {
    for (let round = 0; round < 3; round++) {
      const f = await family(a, `racer-${round}`);
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => refresh(i % 2 === 0 ? a : b, f.refresh_token)));
      const statuses = results.map((r) => r.status);
      for (const r of results) await r.body?.cancel();
      assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
      assert.equal(statuses.filter((s) => s === 400).length, 7, statuses.join(','));
    }
  });

  it('a rotated token replayed on the other instance revokes the family there and here: the successor is refused on A, its access token by A’s verifier', async () => {
    const f = await family(a, 'replayed');
    const next = (await (await refresh(a, f.refresh_token)).json()) as { access_token: string; refresh_token: string };
    const r = await refresh(b, f.refresh_token);
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: string }).error, 'invalid_grant');
    assert.equal((await refresh(a, next.refresh_token)).status, 400, 'the legitimate successor is dead too');
    const verifier = inProcessVerifier(a);
    await until(async () => !(await verifier.verify(bearer(next.access_token))).ok, 5000);
  });

  it('a grant revoked on A: its refresh token is refused on B at once, before B syncs, and so is one revoked through RFC 7009 on A', async () => {
    const f = await family(b, 'revoked-grant');
    await a.service.revokeGrants({ grantId: decodeJwt(f.access_token).grant_id as string }, 'test');
    const r = await refresh(b, f.refresh_token);
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: string }).error, 'invalid_grant');
    const g = await family(b, 'rfc7009');
    assert.equal(
      (await a.post('/oauth2/revoke', { token: g.refresh_token }, { authorization: basic(holder.id, holder.secret) })).status,
      200,
    );
    assert.equal((await refresh(b, g.refresh_token)).status, 400);
  });

  it('another client presenting the refresh token on B is refused without spending it or revoking the family', async () => {
    const f = await family(a, 'stolen');
    const r = await refresh(b, f.refresh_token, {}, thief);
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: string }).error, 'invalid_grant');
    const ok = await refresh(a, f.refresh_token);
    assert.equal(ok.status, 200, 'the holder still refreshes');
  });

  it('scope narrowed on B, widened back to the grant’s on A, never beyond it', async () => {
    const f = await family(a, 'narrowing');
    const narrow = (await (await refresh(b, f.refresh_token, { scope: 'api:read' })).json()) as { scope: string; refresh_token: string };
    assert.equal(narrow.scope, 'api:read');
    const back = (await (await refresh(a, narrow.refresh_token)).json()) as { scope: string; refresh_token: string };
    assert.equal(back.scope, 'api:read api:write');
    const wider = await refresh(b, back.refresh_token, { scope: 'api:read admin' });
    assert.equal(wider.status, 400);
    assert.equal(((await wider.json()) as { error: string }).error, 'invalid_scope');
    assert.equal((await refresh(a, back.refresh_token)).status, 200, 'the refused request spent nothing');
  });
});

/** A TCP relay to PostgreSQL that the test can cut (every connection dropped, nothing listening) and restore. */
/**
 * A TCP relay to PostgreSQL. `cut` closes it and every connection through it; `blackHole` silently
 * drops whatever its open connections carry from then on (no RST, no FIN: a partition, a failover
 * behind a stateful firewall), while new connections pass.
 */
async function relay(): Promise<{ port: number; cut(): Promise<void>; restore(): Promise<void>; blackHole(): void }> {
  const target = new URL(url);
  const sockets = new Set<Socket>();
  const holes = new Set<{ holed: boolean }>();
  let server: Server;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((inbound) => {
        const outbound = createConnection(Number(target.port || 5432), target.hostname);
        const pair = { holed: false };
        holes.add(pair);
        for (const s of [inbound, outbound]) {
          sockets.add(s);
          s.on('close', () => {
            sockets.delete(s);
            holes.delete(pair);
            if (!pair.holed) (s === inbound ? outbound : inbound).destroy();
          });
          s.on('error', () => {});
        }
        inbound.on('data', (d) => {
          if (!pair.holed) outbound.write(d);
        });
        outbound.on('data', (d) => {
          if (!pair.holed) inbound.write(d);
        });
      });
      server.listen(port, '127.0.0.1', () => {
        port = (server.address() as { port: number }).port;
        resolve();
      });
    });
  await listen();
  return {
    port,
    cut: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
    restore: listen,
    blackHole: () => {
      for (const pair of holes) pair.holed = true;
    },
  };
}

describe('PostgreSQL out of reach', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  const outageSchema = `${schema}_outage`;
  let issuer: RunningIssuer;
  let store: PostgresStore;
  let net: Awaited<ReturnType<typeof relay>>;

  before(async () => {
    net = await relay();
    const via = new URL(url);
    via.port = String(net.port);
    store = await PostgresStore.open({ connectionString: via.toString(), schema: outageSchema });
    issuer = await startIssuer({ store });
  });
  after(async () => {
    await issuer?.close();
    await net?.cut();
    await dropSchema(outageSchema);
  });

  it('survives its pooled connections being dropped, answers 503 temporarily_unavailable while the store is down, and recovers', async () => {
    const secret = (await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE] })).secret;
    const user = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const exchange = () =>
      issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
        { authorization: basic('agent', secret) },
      );
    assert.equal((await exchange()).status, 200);

    // Idle pooled connections are closed under the pool: unheard, that event would end this process.
    await net.cut();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await assert.rejects(store.getClient('agent'), StoreUnavailableError);
    const down = await exchange();
    assert.equal(down.status, 503, 'a token exchange needs its grant written');
    assert.equal(down.headers.get('retry-after'), '5');
    assert.equal(down.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await down.json(), { error: 'temporarily_unavailable', error_description: 'The store is unavailable; retry later.' });

    await net.restore();
    assert.equal((await exchange()).status, 200, 'the pool reconnects once PostgreSQL is back');
  });

  it('an admin request whose token the store cannot confirm while it is down is 503 and audited as admin.denied store_unavailable (written once the store is back)', async () => {
    const ops = await issuer.addClient({ id: 'ops-outage', scopes: ['tessera:admin'], audiences: [issuer.url] });
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: issuer.url },
      { authorization: basic(ops.id, ops.secret) },
    );
    const admin = ((await res.json()) as { access_token: string }).access_token;
    const tree = (requestId: string) =>
      fetch(`${issuer.url}/oauth2/admin/grants/${decodeJwt(admin).grant_id as string}`, {
        headers: { authorization: `Bearer ${admin}`, 'x-request-id': requestId },
      });
    assert.equal((await tree('admin-outage-before')).status, 200);

    await net.cut();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const down = await tree('admin-outage-down');
    assert.equal(down.status, 503);
    assert.deepEqual(await down.json(), { error: 'temporarily_unavailable', error_description: 'The store is unavailable; retry later.' });

    await net.restore();
    await issuer.service.audit.flush();
    const events = await store.queryAudit({ request_id: 'admin-outage-down', limit: 10 });
    assert.deepEqual(
      events.map((e) => [e.kind, e.decision, e.reason, e.client_id, e.jti]),
      [['admin.denied', 'deny', 'store_unavailable', 'ops-outage', decodeJwt(admin).jti]],
    );
    assert.doesNotMatch(JSON.stringify(events), new RegExp(admin.split('.')[2] as string));
  });
});

describe('revocations pushed between instances (LISTEN/NOTIFY)', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  // Neither instance polls during these tests (sync_interval is 60 s, its maximum): only a push,
  // or the catch-up after a reconnection, can tell B of A's revocations.
  const pushSchema = `${schema}_push`;
  const slow = { sync_interval: '60s' };
  let a: RunningIssuer;
  let b: RunningIssuer;
  let secret: string;
  let net: Awaited<ReturnType<typeof relay>>;
  let verifierB: ReturnType<typeof inProcessVerifier>;

  /** B's verifier accepts `token` now, then refuses it as revoked within a bounded wait. */
  const acceptedThenRevokedOnB = async (token: string, revoke: () => Promise<unknown>, ms = 3000) => {
    assert.equal((await verifierB.verify(bearer(token))).ok, true, 'B accepts the token before');
    await revoke();
    await until(async () => {
      const r = await verifierB.verify(bearer(token));
      return !r.ok && r.error.code === 'token_revoked';
    }, ms);
  };
  const exchange = async (subjectToken: string) =>
    (
      (await (
        await a.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token: subjectToken, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
          { authorization: basic('agent', secret) },
        )
      ).json()) as { access_token: string }
    ).access_token;

  before(async () => {
    net = await relay();
    a = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema: pushSchema }),
      config: { token_service: slow },
    });
    // B reaches PostgreSQL through a relay the last test cuts.
    const via = new URL(url);
    via.port = String(net.port);
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: via.toString(), schema: pushSchema }),
      master: a.master,
      config: { token_service: { ...slow, issuer: a.url } },
    });
    secret = (await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE] })).secret;
    verifierB = inProcessVerifier(b);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await net?.cut();
    await dropSchema(pushSchema);
  });

  it('a token revoked on A (RFC 7009, by its client) is refused by B', async () => {
    const cc = (await (
      await a.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('agent', secret) })
    ).json()) as {
      access_token: string;
    };
    await acceptedThenRevokedOnB(cc.access_token, async () => {
      const r = await a.post('/oauth2/revoke', { token: cc.access_token }, { authorization: basic('agent', secret) });
      assert.equal(r.status, 200);
    });
  });

  it('a grant revoked on A takes its subtree on B: the root token and the token exchanged from it', async () => {
    const user = await a.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const child = await exchange(user.access_token);
    assert.notEqual(decodeJwt(child).grant_id, user.grant_id, 'the exchange made a child grant');
    assert.equal((await verifierB.verify(bearer(child))).ok, true);
    await acceptedThenRevokedOnB(user.access_token, () => a.service.revokeGrants({ grantId: user.grant_id }, 'test'));
    const r = await verifierB.verify(bearer(child));
    assert.equal(r.ok ? 'accepted' : r.error.code, 'token_revoked', 'the child grant went with it, in the same push');
  });

  it('a revocation by `tessera revoke` (its own process and store connection) reaches the running instances', async () => {
    const dir = join(a.dir, 'cli');
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(
      join(dir, 'tessera.yaml'),
      `data_dir: ./data\ntoken_service: { issuer: "${a.url}" }\nstore: { driver: postgres, postgres: { url: "\${DATABASE_URL}", schema: ${pushSchema} } }\n`,
    );
    const user = await a.service.mint({ clientId: 'agent', subject: 'carol', ttl: 600 });
    const cli = promisify(execFile);
    const main = new URL('../../src/cli/main.ts', import.meta.url).pathname;
    for (const [name, verifier] of [
      ['A', inProcessVerifier(a)],
      ['B', verifierB],
    ] as const) {
      assert.equal((await verifier.verify(bearer(user.access_token))).ok, true, `${name} accepts the token before`);
    }
    const { stdout } = await cli(process.execPath, [main, 'revoke', '--grant', user.grant_id, '-c', join(dir, 'tessera.yaml')], {
      cwd: dir,
      env: { ...process.env, DATABASE_URL: url, TESSERA_MASTER_KEY: '' },
    });
    assert.match(stdout, new RegExp(`^revoked 1 grant\\(s\\): ${user.grant_id}$`, 'm'));
    for (const [name, verifier] of [
      ['A', inProcessVerifier(a)],
      ['B', verifierB],
    ] as const) {
      await until(async () => {
        const r = await verifier.verify(bearer(user.access_token));
        return !r.ok && r.error.code === 'token_revoked';
      }).catch(() => assert.fail(`${name} did not hear of the CLI's revocation`));
    }
  });

  it('attack: forged NOTIFYs on the channel (malformed, JSON asking to un-revoke, 7999 bytes, a huge or a stale seq) un-revoke nothing, crash nothing, and a real revocation after them is still pushed', async () => {
    const revoked = await a.service.mint({ clientId: 'agent', subject: 'mallory-victim', ttl: 600 });
    await acceptedThenRevokedOnB(revoked.access_token, () => a.service.revokeGrants({ grantId: revoked.grant_id }, 'test'));
    const forger = new pg.Client({ connectionString: url });
    await forger.connect();
    try {
      for (const payload of [
        `{"unrevoke":["${revoked.grant_id}"]}`,
        '{"seq":',
        'x'.repeat(7999),
        '999999999999999',
        '0',
        '-1',
        '1e308',
        '',
      ]) {
        await forger.query('SELECT pg_notify($1, $2)', [revocationChannel(pushSchema), payload]);
      }
      // One more notification, genuine, after the forged ones: heard and applied.
      const later = await a.service.mint({ clientId: 'agent', subject: 'frank', ttl: 600 });
      await acceptedThenRevokedOnB(later.access_token, () => a.service.revokeGrants({ grantId: later.grant_id }, 'test'));
      const r = await verifierB.verify(bearer(revoked.access_token));
      assert.equal(r.ok ? 'accepted' : r.error.code, 'token_revoked', 'still revoked');
    } finally {
      await forger.end();
    }
  });

  it('after the listening connections are killed (pg_terminate_backend), they reconnect and later revocations are still pushed', async () => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      const listeners = async () =>
        (
          await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query = $2', [
            LISTENER_APPLICATION_NAME,
            `LISTEN "${revocationChannel(pushSchema)}"`,
          ])
        ).rows.map((r: { pid: number }) => r.pid);
      const killed = await listeners();
      assert.equal(killed.length, 2, "A's and B's");
      await admin.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [killed]);
      await until(async () => {
        const now = await listeners();
        return now.length === 2 && now.every((pid) => !killed.includes(pid));
      }, 5000);
      const user = await a.service.mint({ clientId: 'agent', subject: 'dave', ttl: 600 });
      await acceptedThenRevokedOnB(user.access_token, () => a.service.revokeGrants({ grantId: user.grant_id }, 'test'));
    } finally {
      await admin.end();
    }
  });

  it('a revocation committed while B was cut off from PostgreSQL is caught up as soon as B reconnects', async () => {
    const user = await a.service.mint({ clientId: 'agent', subject: 'erin', ttl: 600 });
    assert.equal((await verifierB.verify(bearer(user.access_token))).ok, true);
    await net.cut();
    await a.service.revokeGrants({ grantId: user.grant_id }, 'test');
    assert.equal((await verifierB.verify(bearer(user.access_token))).ok, true, 'B cannot know yet: no connection, no poll for 60 s');
    await net.restore();
    await until(async () => {
      const r = await verifierB.verify(bearer(user.access_token));
      return !r.ok && r.error.code === 'token_revoked';
    }, 10_000);
  });
});

describe('revocations when B’s connections to PostgreSQL silently die', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  // B polls every second (the default sync_interval) and gives a read of the store 500 ms; its
  // LISTEN connection's liveness check (15 s of silence, then 5 s) is far beyond these tests, so
  // only the poll can tell B of A's revocations here.
  const holeSchema = `${schema}_hole`;
  let a: RunningIssuer;
  let b: RunningIssuer;
  let net: Awaited<ReturnType<typeof relay>>;
  let verifierB: ReturnType<typeof inProcessVerifier>;
  /** Added to B's clock. */
  let skew = 0;

  before(async () => {
    net = await relay();
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema: holeSchema }) });
    const via = new URL(url);
    via.port = String(net.port);
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: via.toString(), schema: holeSchema, readTimeoutMillis: 500 }),
      master: a.master,
      config: { token_service: { issuer: a.url } },
      clock: () => Date.now() + skew,
    });
    await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
    verifierB = inProcessVerifier(b);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await net?.cut();
    await dropSchema(holeSchema);
  });

  it('attack: every open connection of B black-holed (no RST, no FIN) mid-poll: B still refuses a grant revoked on A within sync_interval and the read timeout, not never', async () => {
    const user = await a.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    assert.equal((await verifierB.verify(bearer(user.access_token))).ok, true);
    net.blackHole();
    // B's next poll goes out on a pooled connection that will never answer (as does its LISTEN).
    await new Promise((r) => setTimeout(r, 1500));
    await a.service.revokeGrants({ grantId: user.grant_id }, 'test');
    const revoked = Date.now();
    await until(async () => {
      const r = await verifierB.verify(bearer(user.access_token));
      return !r.ok && r.error.code === 'token_revoked';
    }, 8000).catch(() => assert.fail('B went on accepting the revoked token: its poll hung on a dead connection'));
    assert.ok(Date.now() - revoked < 5000, `refused ${Date.now() - revoked} ms after the revocation`);
  });

  it('attack: B cannot read the revocation log (its reads held up by a lock) for longer than 2 × sync_interval + 10 s: its revocations check fails, so /readyz takes it out of service, and passes again once it reads', async () => {
    assert.deepEqual(b.service.revocationStatus(), { ok: true });
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      // What an ALTER TABLE of a migration, or VACUUM FULL, holds: B's reads of the log wait on it
      // (and give up after the read timeout), while the store itself still answers.
      await admin.query('BEGIN');
      await admin.query(`LOCK TABLE ${holeSchema}.revocations IN ACCESS EXCLUSIVE MODE`);
      await b.store.versions();
      skew = 11_000;
      assert.deepEqual(b.service.revocationStatus(), { ok: true }, 'within the bound (12 s) of the last read');
      skew = 13_000;
      assert.deepEqual(b.service.revocationStatus(), { ok: false, detail: 'revocation log not read for over 12 s' });
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(b.service.revocationStatus().ok, false, 'the polls meanwhile failed');
      await admin.query('ROLLBACK');
      await until(() => b.service.revocationStatus().ok, 5000);
    } finally {
      await admin.query('ROLLBACK').catch(() => {});
      await admin.end();
      skew = 0;
    }
  });
});

describe('revocations while a step of B’s sync is held up', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  // B polls every second and gives a read and a housekeeping write of the store 500 ms. It does not
  // LISTEN, so only its poll (the fallback when LISTEN is down) can tell it of A's revocations.
  const stuckSchema = `${schema}_stuck`;
  let a: RunningIssuer;
  let b: RunningIssuer;
  let verifierB: ReturnType<typeof inProcessVerifier>;
  let admin: pg.Client;
  /** Added to B's clock. */
  let skew = 0;

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema: stuckSchema }) });
    const storeB = await PostgresStore.open({
      connectionString: url,
      schema: stuckSchema,
      readTimeoutMillis: 500,
      maintenanceTimeoutMillis: 500,
    });
    Object.defineProperty(storeB, 'watchRevocations', { value: undefined });
    b = await startIssuer({
      store: storeB,
      master: a.master,
      config: { token_service: { issuer: a.url } },
      clock: () => Date.now() + skew,
    });
    await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
    verifierB = inProcessVerifier(b);
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  after(async () => {
    await admin?.query('ROLLBACK').catch(() => {});
    await admin?.end();
    await a?.close();
    await b?.close();
    await dropSchema(stuckSchema);
  });

  /** Until a statement of `stuckSchema` matching `like` waits on a lock. */
  async function waitingOnLock(like: string): Promise<void> {
    const probe = new pg.Client({ connectionString: url });
    await probe.connect();
    try {
      await until(async () => {
        const r = await probe.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1", [like]);
        return (r.rowCount ?? 0) > 0;
      }, 5000);
    } finally {
      await probe.end();
    }
  }

  /** With B's sync stuck in what `holdUp` did, a grant revoked on A is soon refused by B all the same. */
  async function refusedOnBSoonAfter(holdUp: () => Promise<void>, what: string): Promise<void> {
    const user = await a.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
    assert.equal((await verifierB.verify(bearer(user.access_token))).ok, true);
    await holdUp();
    await a.service.revokeGrants({ grantId: user.grant_id }, 'test');
    const revoked = Date.now();
    await until(async () => {
      const r = await verifierB.verify(bearer(user.access_token));
      return !r.ok && r.error.code === 'token_revoked';
    }, 8000).catch(() => assert.fail(`B went on accepting the revoked token: its sync stalled on ${what}`));
    assert.ok(Date.now() - revoked < 5000, `refused ${Date.now() - revoked} ms after the revocation`);
  }

  it('attack: B’s prune held up for ever (a lock on a table it deletes from): B still refuses a grant revoked on A within seconds', async () => {
    try {
      await refusedOnBSoonAfter(async () => {
        await admin.query('BEGIN');
        await admin.query(`LOCK TABLE ${stuckSchema}.replay IN ACCESS EXCLUSIVE MODE`);
        // A minute later on B's clock, its next sync prunes, and waits on the lock.
        skew = 61_000;
        await waitingOnLock('DELETE FROM replay%');
      }, 'a prune');
    } finally {
      await admin.query('ROLLBACK');
      skew = 0;
    }
  });

  it('attack: B’s reload of the signing keys held up for ever (a lock on their table): B still refuses a grant revoked on A within seconds', async () => {
    try {
      await refusedOnBSoonAfter(async () => {
        await admin.query('BEGIN');
        await admin.query(`LOCK TABLE ${stuckSchema}.signing_keys IN ACCESS EXCLUSIVE MODE`);
        // As a key rotation elsewhere does: every instance reloads its keys on its next sync.
        const bump = new pg.Client({ connectionString: url });
        await bump.connect();
        await bump.query(`UPDATE ${stuckSchema}.meta SET value = value + 1 WHERE name = 'keys_version'`);
        await bump.end();
        await waitingOnLock('SELECT * FROM signing_keys%');
      }, 'a key reload');
    } finally {
      await admin.query('ROLLBACK');
    }
  });
});

describe('token requests when PostgreSQL holds them up', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  // The instance gives a request's store call 1 s (requestTimeoutMillis), has a pool of one
  // connection (so one leaked or stuck connection would hold every later request) and does not
  // LISTEN; it reaches PostgreSQL through a relay whose open connections a test can black-hole.
  const heldSchema = `${schema}_held`;
  const app = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const BOUND = 1000;
  let issuer: RunningIssuer;
  let net: Awaited<ReturnType<typeof relay>>;
  let admin: pg.Client;
  let secret: string;
  const auth = () => ({ authorization: basic('agent', secret) });

  before(async () => {
    net = await relay();
    const via = new URL(url);
    via.port = String(net.port);
    via.searchParams.set('application_name', app);
    const store = await PostgresStore.open({
      connectionString: via.toString(),
      schema: heldSchema,
      max: 1,
      requestTimeoutMillis: BOUND,
      readTimeoutMillis: 500,
      maintenanceTimeoutMillis: 500,
    });
    Object.defineProperty(store, 'watchRevocations', { value: undefined });
    issuer = await startIssuer({ store });
    secret = (await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['refresh_token', EXCHANGE] })).secret;
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  after(async () => {
    await admin?.query('ROLLBACK').catch(() => {});
    await admin?.end();
    await issuer?.close();
    await net?.cut();
    await dropSchema(heldSchema);
  });

  /** A person's access token, minted before anything holds the store up (minting writes a grant). */
  const userToken = async () => (await issuer.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 })).access_token;
  const exchange = (subjectToken: string) =>
    issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subjectToken, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
      auth(),
    );
  /** `request`, or a failure once it has taken 8 s (the bound it should keep is far shorter). */
  const bounded = (request: Promise<Response>) =>
    Promise.race([request, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer after 8 s')), 8000))]);

  it('attack: a token exchange whose grant insert waits on a lock another session holds answers 503 store_unavailable within the bound, and the pool serves the next request once the lock is gone', async () => {
    assert.equal((await exchange(await userToken())).status, 200);
    const subjectToken = await userToken();
    try {
      // What a stuck session (a migration's ALTER TABLE, a VACUUM FULL, a hung admin transaction) holds.
      await admin.query('BEGIN');
      await admin.query(`LOCK TABLE ${heldSchema}.grants IN SHARE MODE`);
      const started = Date.now();
      const held = await bounded(exchange(subjectToken));
      const took = Date.now() - started;
      assert.equal(held.status, 503);
      assert.equal(held.headers.get('retry-after'), '5');
      assert.deepEqual(await held.json(), {
        error: 'temporarily_unavailable',
        error_description: 'The store is unavailable; retry later.',
      });
      assert.ok(took < BOUND + 1500, `answered after ${took} ms`);
      // The server gave up on the statement too: nothing of this store is left waiting on the lock.
      const waiting = await admin.query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        [app],
      );
      assert.equal(Number(waiting.rows[0].n), 0, 'a backend still waits on the lock the request gave up on');
    } finally {
      await admin.query('ROLLBACK');
    }
    assert.equal((await bounded(exchange(subjectToken))).status, 200, 'the pool (one connection) serves the next request');
  });

  it('attack: a refresh rotation whose connection dies mid-transaction (black-holed: no RST, no FIN) answers 503 within the bound, writes nothing, and the old refresh token then rotates', async () => {
    const ex = await exchange(await userToken());
    assert.equal(ex.status, 200);
    const { refresh_token: refreshToken, access_token: accessToken } = (await ex.json()) as { refresh_token: string; access_token: string };
    const rootId = decodeJwt(accessToken).grant_id as string;
    const root = (await issuer.store.getGrant(rootId))?.rootId ?? rootId;
    const refresh = () => issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: refreshToken }, auth());
    // The rotation reads the token's tree, then waits for the tree's lock, held here; the
    // connection is cut off while it waits, and the lock freed: the server goes on with the
    // transaction (the token row locked) and its answers are lost.
    await admin.query("SELECT pg_advisory_lock(hashtext('tessera.grant:' || $1))", [root]);
    let unlocked = false;
    try {
      const started = Date.now();
      const rotating = bounded(refresh());
      await until(async () => {
        const r = await admin.query(
          "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'",
          [app],
        );
        return (r.rowCount ?? 0) > 0;
      }, 3000);
      net.blackHole();
      await admin.query("SELECT pg_advisory_unlock(hashtext('tessera.grant:' || $1))", [root]);
      unlocked = true;
      const r = await rotating;
      const took = Date.now() - started;
      assert.equal(r.status, 503);
      assert.equal(((await r.json()) as { error: string }).error, 'temporarily_unavailable');
      assert.ok(took < BOUND + 1500, `answered after ${took} ms`);
    } finally {
      if (!unlocked) await admin.query("SELECT pg_advisory_unlock(hashtext('tessera.grant:' || $1))", [root]);
    }
    // Nothing half-written: the token was not spent. Until the server has rolled back the lost
    // session (it holds the tree's lock), a use of it may get 503, never 400 invalid_grant.
    let status = 0;
    await until(async () => {
      status = (await bounded(refresh())).status;
      assert.ok(status === 200 || status === 503, `the refresh token was refused (${status}): the lost rotation spent it`);
      return status === 200;
    }, 6000).catch((e: unknown) => assert.fail(`the old refresh token never rotated again (last ${status}): ${String(e)}`));
  });
});
