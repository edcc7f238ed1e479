/**
 * The gateway of `tessera serve` while its PostgreSQL store is out of reach (every connection
 * black-holed through test/helpers/tcp-fault-proxy.ts, new ones too; PostgreSQL itself is never
 * touched): what needs no store goes on (JWT verification of warm and cold tokens, rate limits,
 * /healthz, the revocations already read), what needs it is refused within a bound with 503 and a
 * stable reason (a DPoP proof's replay check, an exchange credential's mint, /readyz naming the
 * store), audit events wait off the request path in a bounded queue (the excess counted as
 * dropped), and after the network heals everything comes back: the pool, the replay check, the
 * mint, and the queued events reach the store.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { type JWK, SignJWT } from 'jose';
import pg from 'pg';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort, until } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { type FaultProxy, faultProxy } from '../helpers/tcp-fault-proxy.ts';

const pgUrl = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await postgresReachable(pgUrl);
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const UPSTREAM_AUD = 'https://upstream.internal';

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

/** A DPoP proof by `holder` for `method` `htu`; with `accessToken`, bound to it (`ath`). */
function proof(method: string, htu: string, accessToken?: string): Promise<string> {
  return new SignJWT({
    htm: method,
    htu,
    jti: randomUUID(),
    ...(accessToken !== undefined ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

describe('tessera serve: the gateway while PostgreSQL is out of reach', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  let dir: string;
  let url: string;
  let proxy: FaultProxy;
  let upstream: Upstream;
  let running: RunningServer;
  let secret: string;

  before(async () => {
    const target = new URL(pgUrl);
    proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const via = new URL(pgUrl);
    via.port = String(proxy.port);
    upstream = await startUpstream();
    dir = mkdtempSync(join(tmpdir(), 'tessera-serve-outage-'));
    mkdirSync(join(dir, '.tessera'), { mode: 0o700 });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const route = (id: string, extra: Record<string, unknown> = {}) => ({
      id,
      match: { path_prefix: `/${id}` },
      upstream: { url: upstream.url },
      auth: 'jwt',
      audience: `${url}/api`,
      rules: [{ scopes: ['api:read'] }],
      ...extra,
    });
    const gateway = {
      watch_config: false,
      exchange_client: 'gw',
      routes: [
        route('api'),
        route('limited', { rate_limit: { key: 'subject', rate: 0.001, burst: 1 } }),
        route('exch', { upstream: { url: upstream.url, credential: { type: 'exchange', audience: UPSTREAM_AUD, max_ttl: '5m' } } }),
      ],
    };
    writeFileSync(
      join(dir, 'tessera.yaml'),
      `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
store: { driver: postgres, postgres: { url: "${via.toString()}", schema: ${schema}, request_timeout: 2s } }
token_service: { sync_interval: 1s }
issuers: ${JSON.stringify([{ issuer: url, audiences: [`${url}/api`], jwks_uri: `${url}/.well-known/jwks.json`, token_type: 'at+jwt' }])}
scopes:
  api:read: {}
dpop: { mode: allowed }
audit: { flush_interval: 100ms, max_queue: 20 }
gateway: ${JSON.stringify(gateway)}
`,
    );
    await initialize({ config: join(dir, 'tessera.yaml') });
    const logStream = new Writable({ write: (_chunk, _encoding, done) => done() });
    running = await startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'warn' }, logStream) });
    await running.service.registerClient({ id: 'gw', scopes: ['api:read'], audiences: [UPSTREAM_AUD], grantTypes: [TOKEN_EXCHANGE] });
    secret = (
      await running.service.registerClient({
        id: 'agent',
        scopes: ['api:read'],
        audiences: [`${url}/api`],
        grantTypes: ['client_credentials'],
      })
    ).secret as string;
  });
  after(async () => {
    proxy?.heal();
    await running?.close();
    await upstream?.close();
    await proxy?.close();
    const admin = new pg.Client({ connectionString: pgUrl });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const form = (path: string, body: Record<string, string>, headers: Record<string, string> = {}) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { authorization: basic('agent', secret), 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(body),
    });
  const issue = async (dpop?: string) => {
    const res = await form('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, dpop ? { dpop } : {});
    assert.equal(res.status, 200, await res.clone().text());
    return ((await res.json()) as { access_token: string }).access_token;
  };
  /** A request and how long its answer took (ms). */
  const timed = async (path: string, headers: Record<string, string>) => {
    const started = Date.now();
    const res = await fetch(`${url}${path}`, { headers, signal: AbortSignal.timeout(20_000) });
    const body = await res.text();
    return { status: res.status, headers: res.headers, body, ms: Date.now() - started };
  };
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
  const metric = async (name: string) => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  const auditRows = async (requestId: string) => {
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    try {
      const rows = (await c.query(`SELECT event FROM ${schema}.audit_events WHERE request_id = $1`, [requestId])).rows as {
        event: string;
      }[];
      return rows.map((r) => (typeof r.event === 'string' ? JSON.parse(r.event) : r.event) as { decision?: string; reason?: string });
    } finally {
      await c.end();
    }
  };

  it('attack: PostgreSQL black-holed: JWTs (warm and cold) still verify and revoked ones stay refused, rate limits hold, a DPoP proof and an exchange mint are refused 503/502 within a bound (never accepted unchecked), /readyz names the store, audit events are queued (the excess dropped and counted) and reach the store once the network heals, when DPoP and exchange work again', async () => {
    const warm = await issue();
    const cold = await issue();
    const coldExchange = await issue();
    const revoked = await issue();
    const bound = await issue(await proof('POST', `${url}/oauth2/token`));
    assert.equal((await timed('/api/x', bearer(warm))).status, 200);
    const revokedRes = await form('/oauth2/revoke', { token: revoked });
    assert.equal(revokedRes.status, 200);
    assert.equal((await timed('/api/x', bearer(revoked))).status, 401);
    assert.equal((await timed('/api/x', { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${url}/api/x`, bound) })).status, 200);
    assert.equal((await timed('/exch/x', bearer(warm))).status, 200, 'exchange before the outage');
    assert.equal((await fetch(`${url}/readyz`)).status, 200);

    proxy.blackHole({ newToo: true });

    // Liveness needs no store; readiness names it, within its check timeout.
    const health = await timed('/healthz', {});
    assert.equal(health.status, 200);
    assert.ok(health.ms < 1000, `/healthz took ${health.ms} ms`);
    const ready = await timed('/readyz', {});
    assert.equal(ready.status, 503, ready.body);
    assert.ok(ready.ms < 4000, `/readyz took ${ready.ms} ms`);
    const checks = (JSON.parse(ready.body) as { checks: { name: string; ok: boolean }[] }).checks;
    assert.equal(checks.find((c) => c.name === 'store')?.ok, false, ready.body);

    // JWT verification needs no store: a token seen before and one never seen.
    for (const t of [warm, cold]) {
      const r = await timed('/api/x', bearer(t));
      assert.equal(r.status, 200, r.body);
      assert.ok(r.ms < 1000, `a JWT took ${r.ms} ms`);
    }
    // Revoked before the outage: still refused, also after failed sync ticks (sync_interval 1 s).
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const stillRevoked = await timed('/api/x', bearer(revoked));
    assert.equal(stillRevoked.status, 401);
    assert.match(stillRevoked.headers.get('www-authenticate') ?? '', /error="invalid_token"/);

    // Rate limits are in memory.
    assert.equal((await timed('/limited/x', bearer(cold))).status, 200);
    const limited = await timed('/limited/x', bearer(cold));
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) > 0);

    // A DPoP proof cannot be recorded: refused (503, Retry-After), not accepted unchecked, within
    // the wait for a pool connection (5 s, not configurable) plus the store's request_timeout (2 s).
    const seen = upstream.seen.length;
    const dpopId = `outage-dpop-${randomUUID()}`;
    const dpop = await timed('/api/x', {
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', `${url}/api/x`, bound),
      'x-request-id': dpopId,
    });
    assert.equal(dpop.status, 503, dpop.body);
    assert.ok(Number(dpop.headers.get('retry-after')) > 0, 'Retry-After');
    assert.equal((JSON.parse(dpop.body) as { error: string }).error, 'temporarily_unavailable');
    assert.ok(dpop.ms < 8000, `the DPoP request took ${dpop.ms} ms`);
    assert.equal(upstream.seen.length, seen, 'the request reached the upstream');

    // An exchange credential not yet minted: the mint needs the store.
    const exchId = `outage-exch-${randomUUID()}`;
    const exch = await timed('/exch/x', { ...bearer(coldExchange), 'x-request-id': exchId });
    assert.equal(exch.status, 502, exch.body);
    assert.equal((JSON.parse(exch.body) as { error: string }).error, 'bad_gateway');
    assert.ok(exch.ms < 8000, `the exchange request took ${exch.ms} ms`);
    assert.equal(upstream.seen.length, seen, 'the request reached the upstream');

    // Audit: no request waits on the store; past max_queue (20) events are dropped and counted.
    const marked = `outage-${randomUUID()}`;
    assert.equal((await timed('/api/marked', { ...bearer(warm), 'x-request-id': marked })).status, 200);
    const burst = await Promise.all(Array.from({ length: 40 }, () => timed('/api/x', bearer(warm))));
    assert.ok(
      burst.every((r) => r.status === 200 && r.ms < 2000),
      JSON.stringify(burst.map((r) => [r.status, r.ms])),
    );
    assert.ok((await metric('tessera_audit_events_dropped_total')) > 0, 'dropped events are counted');

    proxy.heal();
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 20_000).catch(() => assert.fail('/readyz never came back'));
    const dpopBack = await timed('/api/x', { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${url}/api/x`, bound) });
    assert.equal(dpopBack.status, 200, dpopBack.body);
    assert.equal((await timed('/exch/x', bearer(coldExchange))).status, 200, 'exchange after the outage');
    assert.equal((await timed('/api/x', bearer(revoked))).status, 401);
    // The event queued during the outage is written once the store answers; the queue drains.
    await until(async () => (await auditRows(marked)).length > 0, 15_000).catch(() =>
      assert.fail('the queued audit event never reached the store'),
    );
    // The refusals made during the outage are on record, each with its stable reason.
    assert.deepEqual(
      (await auditRows(dpopId)).map((e) => [e.decision, e.reason]),
      [['deny', 'dpop_replay_unavailable']],
    );
    assert.deepEqual(
      (await auditRows(exchId)).map((e) => [e.decision, e.reason]),
      [['deny', 'upstream_credential_unavailable']],
    );
    await until(async () => (await metric('tessera_audit_queue_depth')) === 0, 10_000).catch(() =>
      assert.fail('the audit queue never drained'),
    );
  });
});
