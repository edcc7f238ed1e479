/**
 * Open streams at a gateway fed by one token-service instance end when another instance on the
 * same PostgreSQL schema revokes their authority: the revocation reaches this instance's
 * revocation list through LISTEN/NOTIFY (polling is out of the way: `sync_interval` 60 s), and the
 * gateway's streams are closed from it. By grant (an ancestor of the token's), by subject, by
 * client (disabled) and by jti (RFC 7009).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import WebSocket, { WebSocketServer } from 'ws';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { until } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const skip = (await postgresReachable(url)) ? false : 'PostgreSQL is not reachable';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test';
/** The push bound: milliseconds promised, 2 s asserted on a loaded 2-core machine. */
const PUSH_MS = 2000;

describe('gateway streams when another instance revokes (PostgreSQL)', { skip }, () => {
  const slow = { sync_interval: '60s' };
  let a: RunningIssuer;
  let b: RunningIssuer;
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  const secrets: Record<string, string> = {};

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema }), config: { token_service: slow } });
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema }),
      master: a.master,
      config: { token_service: { ...slow, issuer: a.url } },
    });
    for (const id of ['broker', 'agent', 'doomed']) {
      const grantTypes = ['client_credentials', EXCHANGE];
      secrets[id] = (await a.addClient({ id, scopes: ['api:read'], audiences: [API, 'agent'], grantTypes })).secret;
    }
    await b.service.sync();
    wss = new WebSocketServer({ noServer: true });
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    // The gateway in B's process: B's revocation list, B's keys (the same schema's).
    gw = await startGateway(
      {
        issuers: [{ issuer: b.service.issuer, audiences: [API], jwks_uri: `${b.url}/.well-known/jwks.json`, token_type: 'at+jwt' }],
        scopes: { 'api:read': {} },
        dpop: { mode: 'disabled' },
        gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ scopes: ['api:read'] }] }] },
      },
      { revocation: b.service.revocations },
    );
  });
  after(async () => {
    await gw?.close();
    wss?.close();
    await upstream?.close();
    await a?.close();
    await b?.close();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  /** An SSE stream and a WebSocket opened with `t`, and how each ended. */
  async function open(t: string) {
    const auth = { authorization: `Bearer ${t}` };
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, { headers: auth });
    const wsClosed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    let events = '';
    const sseEnded = new Promise<void>((resolve, reject) => {
      request(`${gw.url}/events`, { headers: auth }, (r) => {
        assert.equal(r.statusCode, 200);
        r.setEncoding('utf8');
        r.on('data', (d: string) => {
          events += d;
        });
        r.on('end', resolve);
        r.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    await until(() => events.includes('data: hello'));
    const within = <T>(p: Promise<T>, what: string) =>
      Promise.race([
        p,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} still open ${PUSH_MS} ms later`)), PUSH_MS).unref()),
      ]);
    return {
      ws: () => within(wsClosed, 'the WebSocket'),
      sse: () => within(sseEnded, 'the event stream'),
    };
  }

  async function delegated(subject: string): Promise<string> {
    const root = (await a.service.mint({ clientId: 'broker', subject, ttl: 600, audiences: [API, 'agent'], scopes: ['api:read'] }))
      .access_token;
    const res = await b.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: root, subject_token_type: AT, audience: API, scope: 'api:read' },
      { authorization: basic('agent', secrets.agent as string) },
    );
    assert.equal(res.status, 200);
    return ((await res.json()) as { access_token: string }).access_token;
  }

  it('a subject revoked on A: B’s gateway closes the WebSocket (1008) and ends the event stream of a token exchanged on B', async () => {
    const s = await open(await delegated('stream-victim'));
    await a.service.revokeGrants({ subject: 'stream-victim' }, 'test');
    assert.deepEqual(await s.ws(), { code: 1008, reason: 'token revoked' });
    await s.sse();
  });

  it('a client disabled on A: B’s gateway closes its client_credentials token’s streams', async () => {
    const res = await b.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: API },
      { authorization: basic('doomed', secrets.doomed as string) },
    );
    const t = ((await res.json()) as { access_token: string }).access_token;
    const s = await open(t);
    await a.service.setClientDisabled('doomed', true);
    assert.deepEqual(await s.ws(), { code: 1008, reason: 'token revoked' });
    await s.sse();
  });

  it('an access token revoked on A (RFC 7009): B’s gateway closes its streams', async () => {
    const res = await b.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: API },
      { authorization: basic('agent', secrets.agent as string) },
    );
    const t = ((await res.json()) as { access_token: string }).access_token;
    const s = await open(t);
    assert.equal((await a.post('/oauth2/revoke', { token: t }, { authorization: basic('agent', secrets.agent as string) })).status, 200);
    assert.deepEqual(await s.ws(), { code: 1008, reason: 'token revoked' });
    await s.sse();
  });
});
