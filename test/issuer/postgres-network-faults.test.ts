/**
 * The token service on PostgreSQL through a TCP proxy that resets, black-holes or refuses its
 * connections at chosen points (test/helpers/tcp-fault-proxy.ts); the shared server itself is
 * never stopped. Each describe uses a schema of its own.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { until } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { commandComplete, type FaultProxy, faultProxy } from '../helpers/tcp-fault-proxy.ts';
import { bearer } from '../helpers/tokens.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const base = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const reachable = await postgresReachable(url);
const skip = reachable ? false : 'PostgreSQL is not reachable';

async function dropSchema(name: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
  await c.end();
}

async function proxied(): Promise<{ proxy: FaultProxy; via: string }> {
  const target = new URL(url);
  const proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const via = new URL(url);
  via.port = String(proxy.port);
  return { proxy, via: via.toString() };
}

const COMMIT = commandComplete('COMMIT');
/** Once PostgreSQL has acknowledged a COMMIT: the network goes down (see FaultProxy.down). */
const downAfterCommit = (proxy: FaultProxy) =>
  proxy.trap(
    (d) => d.includes(COMMIT),
    () => proxy.down(),
  );

describe('a revocation whose commit is acknowledged just before the store goes out of reach', { skip }, () => {
  const schema = `${base}_aftercommit`;
  let issuer: RunningIssuer;
  let store: PostgresStore;
  let proxy: FaultProxy;
  let secret: string;

  before(async () => {
    const p = await proxied();
    proxy = p.proxy;
    store = await PostgresStore.open({ connectionString: p.via, schema, requestTimeoutMillis: 2000, readTimeoutMillis: 1000 });
    issuer = await startIssuer({ store, config: { token_service: { sync_interval: '60s' } } });
    secret = (await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['refresh_token', EXCHANGE] })).secret;
  });
  after(async () => {
    proxy?.heal();
    await issuer?.close();
    await proxy?.close();
    await dropSchema(schema);
  });

  it('attack: the log read after the commit fails: the grant stays revoked, this instance’s verifier refuses its token at once, and grant.revoked is on record once the store is back', async () => {
    const user = await issuer.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
    const verifier = inProcessVerifier(issuer);
    assert.equal((await verifier.verify(bearer(user.access_token))).ok, true);
    await issuer.service.audit.flush();

    downAfterCommit(proxy);
    let outcome: unknown;
    try {
      outcome = await issuer.service.revokeGrants({ grantId: user.grant_id }, 'incident', 'test');
    } catch (e) {
      outcome = e;
    }
    // The store is still out of reach here: only what this process holds can refuse the token.
    const r = await verifier.verify(bearer(user.access_token));
    proxy.heal();
    assert.equal(r.ok, false, `this instance accepts a token whose grant it revoked (outcome: ${String(outcome)})`);
    assert.equal(!r.ok && r.error.code, 'token_revoked');
    // Committed: the caller is told it took effect, not to retry a write that was not lost.
    assert.ok(Array.isArray(outcome), `the revocation answered ${String(outcome)}`);
    assert.deepEqual(
      (outcome as { id: string }[]).map((g) => g.id),
      [user.grant_id],
    );
    assert.ok((await store.getGrant(user.grant_id))?.revokedAt != null, 'the revocation committed');
    await issuer.service.audit.flush();
    const events = await store.queryAudit({ delegation_id: user.grant_id, kinds: ['grant.revoked'], limit: 10 });
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason]),
      [['grant.revoked', 'incident']],
      'a revocation that took effect is on the audit trail',
    );
  });

  it('attack: RFC 7009 revocation of a refresh token whose log read fails after the commit: the token is refused here at once and token.revoked is on record', async () => {
    const user = await issuer.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
    const ex = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
      { authorization: basic('agent', secret) },
    );
    assert.equal(ex.status, 200);
    const { refresh_token: refreshToken, access_token: accessToken } = (await ex.json()) as { refresh_token: string; access_token: string };
    const verifier = inProcessVerifier(issuer);
    assert.equal((await verifier.verify(bearer(accessToken))).ok, true);
    await issuer.service.audit.flush();

    downAfterCommit(proxy);
    const res = await issuer.post('/oauth2/revoke', { token: refreshToken }, { authorization: basic('agent', secret) });
    const r = await verifier.verify(bearer(accessToken));
    proxy.heal();
    assert.equal(!r.ok && r.error.code, 'token_revoked', `accepted after a revocation answered ${res.status}`);
    assert.equal(res.status, 200, 'the revocation took effect');
    await until(
      async () => (await issuer.post('/oauth2/revoke', { token: 'x' }, { authorization: basic('agent', secret) })).status === 200,
      5000,
    );
    await issuer.service.audit.flush();
    const kinds = (await store.queryAudit({ client_id: 'agent', kinds: ['token.revoked', 'grant.revoked'], limit: 20 })).map((e) => e.kind);
    assert.ok(
      kinds.includes('token.revoked') && kinds.includes('grant.revoked'),
      `on record: ${kinds.join(', ')} (answered ${res.status})`,
    );
  });
  it('attack: a stolen refresh token replayed (reuse) whose family revocation commits just before the store goes out of reach: invalid_grant, the family’s access token refused here at once, refresh.reuse_detected on record', async () => {
    const user = await issuer.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
    const ex = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
      { authorization: basic('agent', secret) },
    );
    const first = (await ex.json()) as { refresh_token: string };
    const refresh = (token: string) =>
      issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: token }, { authorization: basic('agent', secret) });
    const rotated = await refresh(first.refresh_token);
    assert.equal(rotated.status, 200);
    const { access_token: accessToken } = (await rotated.json()) as { access_token: string };
    const verifier = inProcessVerifier(issuer);
    assert.equal((await verifier.verify(bearer(accessToken))).ok, true);
    await issuer.service.audit.flush();

    downAfterCommit(proxy);
    const replay = await refresh(first.refresh_token);
    const r = await verifier.verify(bearer(accessToken));
    proxy.heal();
    assert.equal(!r.ok && r.error.code, 'token_revoked', `the family's token accepted after a reuse answered ${replay.status}`);
    assert.equal(replay.status, 400);
    assert.equal(((await replay.json()) as { error: string }).error, 'invalid_grant');
    await issuer.service.audit.flush();
    const grantId = decodeJwt(accessToken).grant_id as string;
    const events = await store.queryAudit({ delegation_id: grantId, kinds: ['refresh.reuse_detected'], limit: 10 });
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason]),
      [['refresh.reuse_detected', 'refresh_token_reused']],
    );
  });
});

describe('revocations made on A while B’s LISTEN connection is lost', { skip }, () => {
  const schema = `${base}_listen`;
  let a: RunningIssuer;
  /** sync_interval 60 s: only the push (and its catch-up on reconnect) tells B in time. */
  let pushOnly: RunningIssuer;
  /** sync_interval 1 s: the poll, while the push is down. */
  let polling: RunningIssuer;
  const proxies: FaultProxy[] = [];
  const listening = new Map<RunningIssuer, number>();

  /** B through a proxy of its own, with the proxy's id of its LISTEN connection noted. */
  async function startB(syncInterval: string): Promise<RunningIssuer> {
    const { proxy, via } = await proxied();
    proxies.push(proxy);
    let listen: number | undefined;
    proxy.trap(
      (d, id) => {
        if (!d.includes(commandComplete('LISTEN'))) return false;
        listen = id;
        return true;
      },
      () => {},
    );
    const b = await startIssuer({
      store: await PostgresStore.open({ connectionString: via, schema, readTimeoutMillis: 1000 }),
      master: a.master,
      config: { token_service: { issuer: a.url, sync_interval: syncInterval } },
    });
    assert.notEqual(listen, undefined, 'B listens');
    listening.set(b, listen as number);
    return b;
  }
  const proxyOf = (b: RunningIssuer) => proxies[b === pushOnly ? 0 : 1] as FaultProxy;

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema }) });
    await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
    pushOnly = await startB('60s');
    polling = await startB('1s');
  });
  after(async () => {
    for (const p of proxies) p.heal();
    await pushOnly?.close();
    await polling?.close();
    await a?.close();
    for (const p of proxies) await p.close();
    await dropSchema(schema);
  });

  const refusedBy = async (b: RunningIssuer, token: string) => {
    const r = await inProcessVerifier(b).verify(bearer(token));
    return !r.ok && r.error.code === 'token_revoked';
  };

  it('attack: B’s LISTEN connection reset (RST) and PostgreSQL out of B’s reach while A revokes a grant (sync_interval 60 s): once B reconnects it catches up from its cursor and refuses the token within seconds', async () => {
    const user = await a.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
    assert.equal((await inProcessVerifier(pushOnly).verify(bearer(user.access_token))).ok, true);
    const proxy = proxyOf(pushOnly);
    proxy.reset({ refuse: true });
    await a.service.revokeGrants({ grantId: user.grant_id }, 'test');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await refusedBy(pushOnly, user.access_token), false, 'B cannot have heard of it yet');
    proxy.heal();
    const healed = Date.now();
    await until(() => refusedBy(pushOnly, user.access_token), 8000).catch(() =>
      assert.fail('B never applied the revocation made while its LISTEN connection was down'),
    );
    assert.ok(Date.now() - healed < 6000, `refused ${Date.now() - healed} ms after the network came back`);
  });

  it('attack: B’s LISTEN connection silently black-holed (no RST, no FIN; its pool fine) while A revokes a grant: B’s sync tick goes on and refuses the token within sync_interval and a read', async () => {
    const user = await a.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
    assert.equal((await inProcessVerifier(polling).verify(bearer(user.access_token))).ok, true);
    proxyOf(polling).blackHole({ only: listening.get(polling) as number });
    await a.service.revokeGrants({ grantId: user.grant_id }, 'test');
    const revoked = Date.now();
    await until(() => refusedBy(polling, user.access_token), 8000).catch(() =>
      assert.fail('B went on accepting the revoked token while its LISTEN connection was dead'),
    );
    assert.ok(Date.now() - revoked < 3000, `refused ${Date.now() - revoked} ms after the revocation`);
  });
});

describe('the sync tick while PostgreSQL does not answer', { skip }, () => {
  const schema = `${base}_synctick`;
  let issuer: RunningIssuer;
  let store: PostgresStore;
  let proxy: FaultProxy;
  const warnings: string[] = [];

  before(async () => {
    const p = await proxied();
    proxy = p.proxy;
    store = await PostgresStore.open({ connectionString: p.via, schema, requestTimeoutMillis: 1000, readTimeoutMillis: 3000 });
    issuer = await startIssuer({ store, config: { token_service: { sync_interval: '1s' } }, onServiceWarning: (m) => warnings.push(m) });
  });
  after(async () => {
    proxy?.heal();
    await issuer?.close();
    await proxy?.close();
    await dropSchema(schema);
  });

  it('a sync held up past sync_interval (every connection black-holed, its read bounded at 3 s) is warned about once when it fails, not once per tick that found it under way', async () => {
    proxy.blackHole({ newToo: true });
    const failed = () => warnings.filter((w) => w.startsWith('store sync failed')).length;
    await until(() => failed() > 0, 10_000).catch(() => assert.fail('no sync failure was reported'));
    // The ticks during that sync (about 3 of them) do not each report its failure.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(failed(), 1, warnings.join('\n'));
  });
});

describe('token requests right after every pooled connection was terminated while idle (a failover, a restart, a pooler recycling them)', {
  skip,
}, () => {
  const schema = `${base}_idle`;
  const app = `${base}_idle`;
  let issuer: RunningIssuer;
  let other: pg.Client;
  let secret: string;

  before(async () => {
    const withApp = new URL(url);
    withApp.searchParams.set('application_name', app);
    const store = await PostgresStore.open({ connectionString: withApp.href, schema, max: 4 });
    issuer = await startIssuer({ store, config: { token_service: { sync_interval: '60s' } } });
    secret = (await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: [EXCHANGE] })).secret;
    other = new pg.Client({ connectionString: url });
    await other.connect();
  });
  after(async () => {
    await other?.end();
    await issuer?.close();
    await dropSchema(schema);
  });

  it('attack: no token exchange or introspection answers 503 for a connection that died while idle, one after another or all at once', async () => {
    const exchange = async () => {
      const user = await issuer.service.mint({ clientId: 'agent', subject: `s-${randomUUID()}`, ttl: 600 });
      return issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
        { authorization: basic('agent', secret) },
      );
    };
    const introspect = async (token: string) => issuer.post('/oauth2/introspect', { token }, { authorization: basic('agent', secret) });
    const first = await exchange();
    assert.equal(first.status, 200);
    const { access_token: token } = (await first.json()) as { access_token: string };
    const sessions = async () =>
      Number((await other.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [app])).rows[0].n);
    for (const round of [0, 1]) {
      // Several pooled connections, idle.
      await Promise.all(Array.from({ length: 8 }, () => exchange()));
      assert.ok((await sessions()) > 1, 'several pooled connections');
      await other.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
      const statuses: number[] = [];
      if (round === 0) {
        for (let i = 0; i < 4; i++) {
          statuses.push((await exchange()).status);
          const r = await introspect(token);
          statuses.push(r.status);
          assert.equal(((await r.json()) as { active: boolean }).active, true);
        }
      } else {
        const all = await Promise.all([
          ...Array.from({ length: 6 }, () => exchange()),
          ...Array.from({ length: 6 }, () => introspect(token)),
        ]);
        statuses.push(...all.map((r) => r.status));
      }
      assert.deepEqual(statuses, Array(statuses.length).fill(200), `round ${round}`);
    }
  });
});
