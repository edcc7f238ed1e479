/**
 * `audit.on_queue_full: refuse` at the token service: while its audit queue holds `audit.max_queue`
 * events (the store refusing every audit write), token, introspection, registration, authorization
 * and admin grant-tree requests are refused with 503 `temporarily_unavailable` and `Retry-After`,
 * as a store outage is answered, and nothing is issued unaudited; revocations are served (they take
 * access away). Once the store takes the queue, everything is served again. With `drop` (the
 * default) the token endpoint serves on.
 *
 * The store is a real SQLite store; a trigger aborts every insert into its audit table (grants and
 * clients still work), and is dropped to recover.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import type { AuditEventsDropped } from '../../src/audit/pipeline.ts';
import { OAuthError } from '../../src/core/oauth-errors.ts';
import { createListener } from '../../src/gateway/serve.ts';
import { createTokenServiceHandler } from '../../src/server/token-handler.ts';
import type { Store } from '../../src/store/contract.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { answerConsent, authorizationConfig, authorizationRequest, openConsent, personHeaders } from '../helpers/authorize.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { rawHttp, until } from '../helpers/net.ts';
import { API as LOGIN_API, REDIRECT as LOGIN_REDIRECT, oidcConfig, startLoginIssuer } from '../helpers/oidc-login.ts';
import {
  Browser,
  rogueIdToken,
  startOidcProvider,
  startRogueProvider,
  UPSTREAM_CLIENT,
  UPSTREAM_SECRET,
} from '../helpers/oidc-upstream.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { bearer } from '../helpers/tokens.ts';

const FAIL = `CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit volume full'); END`;

async function issuerWith(audit: Record<string, unknown>, options: { onAuditEventsDropped?: (d: AuditEventsDropped) => void } = {}) {
  const issuer = await startIssuer({
    ...options,
    config: {
      audit: { max_queue: 3, ...audit },
      token_service: {
        audit_flush_interval: '20ms',
        authorization: authorizationConfig(),
        registration: { enabled: true, open: true, scopes: ['api:read'], audiences: ['https://api.example'] },
      },
    } as never,
  });
  const admin = new DatabaseSync(join(issuer.dir, 'tessera.db'));
  const { id, secret } = await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
  const auth = { authorization: basic(id, secret) };
  // Added when first asked for: its client.added event would take a place in the queue.
  const adminToken = async () => {
    const ops = await issuer.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [issuer.url] });
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: issuer.url },
      { authorization: basic(ops.id, ops.secret) },
    );
    return ((await res.json()) as { access_token: string }).access_token;
  };
  const token = () => issuer.post('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, auth);
  const fill = () => fillQueue(issuer, auth);
  const register = () =>
    fetch(`${issuer.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'MCP App',
        redirect_uris: ['http://127.0.0.1:33418/callback'],
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
      }),
    });
  return {
    issuer,
    auth,
    adminToken,
    token,
    register,
    fill,
    fail: () => admin.exec(FAIL),
    heal: () => admin.exec('DROP TRIGGER IF EXISTS audit_down'),
    async close(i: RunningIssuer) {
      admin.close();
      await i.close();
    },
  };
}

/**
 * Fill the audit queue (max_queue: 3, the store refusing) to the brim: a token request reserves two
 * slots when admitted (a reused refresh token writes two events) and writes one, so two are served
 * and the third refused; an introspection (one slot) takes the last. Returns the tokens issued.
 */
async function fillQueue(issuer: RunningIssuer, auth: { authorization: string }): Promise<string[]> {
  const issued: string[] = [];
  for (;;) {
    const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, auth);
    if (res.status !== 200) {
      assert.equal(res.status, 503, await res.text());
      break;
    }
    issued.push(((await res.json()) as { access_token: string }).access_token);
  }
  assert.equal(issued.length, 2, 'two token requests fit in max_queue: 3 (two slots each, one used)');
  const introspected = await issuer.post('/oauth2/introspect', { token: 'not-a-token' }, auth);
  assert.equal(introspected.status, 200, 'an introspection’s one event fits in the last place');
  await introspected.arrayBuffer();
  assert.equal(issuer.service.audit.held, 3);
  assert.equal(issuer.service.audit.reserved, 0);
  return issued;
}

describe('token service: audit.on_queue_full', () => {
  it('attack: refuse: past max_queue no token is issued unaudited: 503 temporarily_unavailable with Retry-After at the token, revocation and introspection endpoints; served again once the store takes the queue', async () => {
    const t = await issuerWith({ on_queue_full: 'refuse' });
    try {
      await t.issuer.service.audit.flush();
      const admin = await t.adminToken();
      // Its client.added and token.issued written: the next token request’s two slots fit in three.
      await t.issuer.service.audit.flush();
      const grant = await t.issuer.post('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, t.auth);
      const grantId = JSON.parse(
        Buffer.from(((await grant.json()) as { access_token: string }).access_token.split('.')[1] as string, 'base64url').toString(),
      ).grant_id as string;
      await t.issuer.service.audit.flush();
      t.fail();
      const issued = await t.fill();
      const refused = await t.token();
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '5');
      assert.deepEqual(await refused.json(), {
        error: 'temporarily_unavailable',
        error_description: 'The audit trail cannot record this request right now; retry later.',
      });
      const introspected = await t.issuer.post('/oauth2/introspect', { token: issued[0] as string }, t.auth);
      assert.equal(introspected.status, 503);
      assert.equal(((await introspected.json()) as { error: string }).error, 'temporarily_unavailable');
      // The admin API's grant tree (a read) is refused; its revocation is not (below).
      const tree = await fetch(`${t.issuer.url}/oauth2/admin/grants/${grantId}`, { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(tree.status, 503);
      assert.equal(t.issuer.service.audit.dropped, 0, 'no event was dropped');
      // A revocation is never refused: it takes access away, and the revocation log records it
      // whether or not its audit event fits (refused, the token would live on for want of a log line).
      const revoked = await t.issuer.post('/oauth2/revoke', { token: issued[0] as string }, t.auth);
      assert.equal(revoked.status, 200);
      const adminRevoked = await fetch(`${t.issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: JSON.stringify({ grant_id: grantId }),
      });
      assert.equal(adminRevoked.status, 200, await adminRevoked.clone().text());
      assert.notEqual((await t.issuer.store.getGrant(grantId))?.revokedAt, null);
      const registration = await t.register();
      assert.equal(registration.status, 503, 'no client is registered unaudited');
      assert.equal(registration.headers.get('retry-after'), '5');
      assert.equal(((await registration.json()) as { error: string }).error, 'temporarily_unavailable');
      assert.equal((await t.issuer.store.listClients()).filter((c) => c.name === 'MCP App').length, 0);
      // The revocations' own records (token.revoked, grant.revoked) are kept past max_queue: the
      // revocation is done, and its record must not be lost. Only the admin API's admin.action,
      // which no request reserved a slot for, is dropped (counted and logged).
      assert.equal(t.issuer.service.audit.dropped, 1, 'only the admin.action was dropped');
      assert.equal(t.issuer.service.audit.held, 5, 'token.revoked and grant.revoked kept past max_queue: 3');

      t.heal();
      await until(async () => (await t.token()).status === 200, 5000);
      const back = await t.issuer.post('/oauth2/introspect', { token: issued[0] as string }, t.auth);
      assert.equal(back.status, 200);
      assert.deepEqual(await back.json(), { active: false }, 'revoked while the queue was full');
      assert.equal((await t.register()).status, 201, 'registration is served again');
      await t.issuer.service.audit.flush();
      const issuedEvents = await t.issuer.store.queryAudit({ kinds: ['token.issued'], limit: 100 });
      assert.ok(issuedEvents.length >= 4, `${issuedEvents.length} token.issued events`);
      const revokedJti = JSON.parse(Buffer.from((issued[0] as string).split('.')[1] as string, 'base64url').toString()).jti as string;
      const tokenRevoked = await t.issuer.store.queryAudit({ kinds: ['token.revoked'], limit: 100 });
      assert.deepEqual(
        tokenRevoked.map((e) => [e.reason, e.jti]),
        [['access_token_revoked', revokedJti]],
        'the RFC 7009 revocation is on record',
      );
      const grantRevoked = await t.issuer.store.queryAudit({ kinds: ['grant.revoked'], limit: 100 });
      assert.deepEqual(
        grantRevoked.map((e) => [e.reason, e.delegation_id]),
        [['admin_api', grantId]],
        'the admin API’s revocation is on record',
      );
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });

  it('attack: refuse: past max_queue the authorization endpoint issues no code unaudited: a consent page shown before is answered 503 (no code), a new request too; served again once the store takes the queue', async () => {
    const t = await issuerWith({ on_queue_full: 'refuse' });
    const redirect = 'http://127.0.0.1:7777/callback';
    try {
      await t.issuer.service.registerClient({
        id: 'mcp-app',
        public: true,
        name: 'MCP App',
        scopes: ['api:read'],
        audiences: ['https://api.test'],
        redirectUris: [redirect],
      });
      const endpoint = `${t.issuer.url}/oauth2/authorize`;
      const url = authorizationRequest(endpoint, { redirect_uri: redirect, code_challenge: pkcePair().challenge });
      // The clients' events written: the page's request reserves two slots of the three.
      await t.issuer.service.audit.flush();
      const { fields } = await openConsent(url);
      await t.issuer.service.audit.flush();
      t.fail();
      await t.fill();
      const answer = await answerConsent(endpoint, { ...fields, decision: 'approve' });
      assert.equal(answer.status, 503, 'no code issued while its authorization.approved event cannot be kept');
      assert.equal(answer.headers.get('location'), null);
      assert.equal(answer.headers.get('retry-after'), '5');
      const page = await fetch(url, { headers: personHeaders(), redirect: 'manual' });
      assert.equal(page.status, 503, 'no consent page either');
      assert.equal(page.headers.get('retry-after'), '5');
      assert.equal(t.issuer.service.audit.dropped, 0, 'no event was dropped');

      t.heal();
      await until(async () => (await fetch(url, { headers: personHeaders(), redirect: 'manual' })).status === 200, 5000);
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });

  it('attack: refuse: past max_queue the login callback begins no session unaudited (its login.succeeded could not be kept): 503, the login state not spent', async () => {
    const provider = await startOidcProvider();
    const issuer = await startIssuer({
      config: {
        audit: { max_queue: 3, on_queue_full: 'refuse' },
        token_service: {
          audit_flush_interval: '20ms',
          authorization: { enabled: true, oidc: { issuer: provider.url, client_id: UPSTREAM_CLIENT, client_secret: UPSTREAM_SECRET } },
        },
      } as never,
    });
    provider.configure(`${issuer.url}/oauth2/login/callback`);
    const admin = new DatabaseSync(join(issuer.dir, 'tessera.db'));
    try {
      const { id, secret } = await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
      await issuer.service.audit.flush();
      admin.exec(FAIL);
      await fillQueue(issuer, { authorization: basic(id, secret) });
      const callback = () => fetch(`${issuer.url}/oauth2/login/callback?code=c&state=${'s'.repeat(43)}`, { redirect: 'manual' });
      const refused = await callback();
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '5');
      assert.equal(refused.headers.get('set-cookie'), null, 'nothing of the login touched');
      admin.exec('DROP TRIGGER IF EXISTS audit_down');
      await until(async () => (await callback()).status !== 503, 5000);
      // Served again: this callback, which no login began, is the ordinary refusal.
      assert.equal((await callback()).status, 403);
    } finally {
      admin.exec('DROP TRIGGER IF EXISTS audit_down');
      admin.close();
      await issuer.close();
      await provider.close();
    }
  });

  it('attack: refuse: past max_queue a request to the authorization endpoint refused for its framing (Transfer-Encoding: gzip, chunked) is refused 503, not served its 400 with its authorization.denied dropped', async () => {
    const t = await issuerWith({ on_queue_full: 'refuse' });
    // The listener of `tessera serve`: it hands a misframed request to the handler's refuseFraming.
    const handler = createTokenServiceHandler(t.issuer.service);
    const listener = createListener(
      (req, res) => {
        if (!handler(req, res)) res.writeHead(404).end();
      },
      undefined,
      undefined,
      handler.refuseFraming,
    );
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(listener.address() as { port: number }).port}`;
    const misframed = (id: string) =>
      rawHttp(url, `GET /oauth2/authorize HTTP/1.1\r\nHost: a\r\nX-Request-Id: ${id}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`);
    try {
      await t.issuer.service.audit.flush();
      t.fail();
      await t.fill();
      const refused = await misframed('framing-while-full');
      assert.match(refused, /^HTTP\/1\.1 503 /, refused);
      assert.match(refused, /\r\nretry-after: 5\r\n/i);
      assert.match(refused, /\r\nconnection: close\r\n/i);
      assert.equal(t.issuer.service.audit.dropped, 0, 'no event was dropped');

      t.heal();
      await until(async () => (await t.token()).status === 200, 5000);
      const kept = await misframed('framing-kept');
      assert.match(kept, /^HTTP\/1\.1 400 /, kept);
      assert.equal(t.issuer.service.audit.reserved, 0, 'its slot was used or given back');
      await t.issuer.service.audit.flush();
      const events = await t.issuer.store.queryAudit({ limit: 100 });
      assert.deepEqual(
        events.filter((e) => e.request_id === 'framing-kept').map((e) => [e.kind, e.reason]),
        [['authorization.denied', 'request_framing_invalid']],
      );
      assert.ok(!events.some((e) => e.request_id === 'framing-while-full'), 'the 503 took no slot');
    } finally {
      t.heal();
      listener.closeAllConnections();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      await t.close(t.issuer);
    }
  });

  it('attack: refuse: past max_queue the events no request reserved a slot for (a revocation that revoked nothing, an operator’s key rotation) are not dropped silently: an audit_events_dropped report at once with their count by kind, later ones gathered (at most one every 10 s, the last at shutdown), and /readyz names them', async () => {
    const reports: AuditEventsDropped[] = [];
    const t = await issuerWith({ on_queue_full: 'refuse' }, { onAuditEventsDropped: (d) => reports.push(d) });
    let closed = false;
    try {
      await t.issuer.service.audit.flush();
      t.fail();
      const issued = await t.fill();
      // A token this server never issued: revoked nothing, its revocation.denied has no slot.
      const unknown = `${issued[0] as string}x`;
      const revoked = await t.issuer.post('/oauth2/revoke', { token: unknown }, t.auth);
      assert.equal(revoked.status, 200, 'a revocation is served all the same');
      await until(async () => reports.length > 0, 2000);
      const first = reports[0] as AuditEventsDropped;
      assert.equal(first.event, 'audit_events_dropped');
      assert.equal(first.component, 'token_service');
      assert.deepEqual(first.kinds, { 'revocation.denied': 1 });
      assert.equal(first.events, 1);
      assert.equal(first.total, 1);
      assert.match(first.message, /^1 audit events of the token service were dropped and are lost \(1 revocation\.denied\)/);
      assert.ok(!first.message.includes(issued[0] as string), 'no token in the line');
      // Within 10 s of that report: gathered into the next, written at shutdown at the latest.
      await t.issuer.service.rotateSigningKey({}, 'ops');
      const again = await t.issuer.post('/oauth2/revoke', { token: unknown }, t.auth);
      assert.equal(again.status, 200);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(reports.length, 1, 'at most one report every 10 s');
      assert.equal(t.issuer.service.audit.dropped, 3);
      const status = t.issuer.service.auditStatus();
      assert.equal(status.ok, false);
      assert.match(status.detail ?? '', /3 events no request reserved a slot for dropped since start/);
      t.heal();
      closed = true;
      await t.close(t.issuer);
      assert.equal(reports.length, 2, 'the last drops reported at shutdown');
      assert.deepEqual(reports[1]?.kinds, { 'key.rotated': 1, 'revocation.denied': 1 });
      assert.equal(reports[1]?.events, 2);
      assert.equal(reports[1]?.total, 3);
    } finally {
      if (!closed) {
        t.heal();
        await t.close(t.issuer);
      }
    }
  });

  it('attack: refuse: past max_queue a client disabled or removed (tessera clients disable|remove) loses none of its grant.revoked: each is kept past max_queue and written once the store takes the queue; its client.updated or client.removed, which no request reserved a slot for, is dropped, counted and told', async () => {
    const reports: AuditEventsDropped[] = [];
    const t = await issuerWith({ on_queue_full: 'refuse' }, { onAuditEventsDropped: (d) => reports.push(d) });
    try {
      const other = await t.issuer.addClient({ id: 'other', scopes: ['api:read'], grantTypes: ['client_credentials'] });
      await t.issuer.service.audit.flush();
      const otherToken = await t.issuer.post(
        '/oauth2/token',
        { grant_type: 'client_credentials', scope: 'api:read' },
        { authorization: basic(other.id, other.secret) },
      );
      assert.equal(otherToken.status, 200);
      const otherGrant = grantOf(((await otherToken.json()) as { access_token: string }).access_token);
      await t.issuer.service.audit.flush();
      t.fail();
      const issued = await t.fill();
      const agentGrants = [...new Set(issued.map(grantOf))].sort();
      const disabled = await t.issuer.service.setClientDisabled('agent', true, 'cli');
      assert.deepEqual(disabled?.revoked.map((g) => g.id).sort(), agentGrants);
      const removed = await t.issuer.service.removeClient('other', 'cli');
      assert.deepEqual(
        removed?.revoked.map((g) => g.id),
        [otherGrant],
      );
      assert.equal(t.issuer.service.audit.held, 3 + agentGrants.length + 1, 'every grant.revoked kept past max_queue: 3');
      assert.equal(t.issuer.service.audit.dropped, 2, 'the client.updated and client.removed alone dropped');
      await until(async () => reports.length > 0, 2000);
      t.heal();
      const revoked = async () =>
        (await t.issuer.store.queryAudit({ kinds: ['grant.revoked'], limit: 100 })).map((e) => [e.reason, e.delegation_id]);
      await until(async () => (await revoked()).length === agentGrants.length + 1, 5000);
      assert.deepEqual(
        (await revoked()).sort(),
        [...agentGrants.map((g) => ['client_disabled', g]), ['client_removed', otherGrant]].sort(),
      );
      const kinds = Object.assign({}, ...reports.map((r) => r.kinds));
      assert.equal(kinds['grant.revoked'], undefined, 'no grant.revoked was dropped');
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });

  it('attack: refuse: a revocation of more grants than twice max_queue while the store refuses (a hostile cascade) keeps the queue bounded: the grant.revoked past the ceiling are dropped, counted and told in an audit_events_dropped line; every grant is revoked all the same', async () => {
    const reports: AuditEventsDropped[] = [];
    const t = await issuerWith({ on_queue_full: 'refuse' }, { onAuditEventsDropped: (d) => reports.push(d) });
    try {
      const grants: string[] = [];
      for (let i = 0; i < 8; i++) {
        grants.push((await t.issuer.service.mint({ clientId: 'agent', subject: 'mallory' })).grant_id);
        await t.issuer.service.audit.flush();
      }
      await t.issuer.service.audit.flush();
      t.fail();
      await t.fill();
      const revoked = await t.issuer.service.revokeGrants({ subject: 'mallory' }, 'incident', 'cli');
      assert.deepEqual(revoked.map((g) => g.id).sort(), [...grants].sort(), 'all eight revoked');
      // max_queue: 3, so the ceiling is 6: three kept past it, five dropped.
      assert.equal(t.issuer.service.audit.held, 6);
      assert.equal(t.issuer.service.audit.dropped, 5);
      await until(async () => reports.length > 0, 2000);
      assert.deepEqual(reports[0]?.kinds, { 'grant.revoked': 5 });
      for (const id of grants) assert.notEqual((await t.issuer.store.getGrant(id))?.revokedAt, null);
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });

  it('attack: refuse: past max_queue a sign-out (/oauth2/logout) is served and its login.signed_out kept past max_queue, never dropped; written once the store takes the queue', async () => {
    const { issuer, admin, reports, id, secret, browser, close } = await signedInUnderRefuse('alice');
    try {
      admin.exec(FAIL);
      await fillQueue(issuer, { authorization: basic(id, secret) });
      const out = await browser.fetch(`${issuer.url}/oauth2/logout`, { method: 'POST', headers: { origin: new URL(issuer.url).origin } });
      assert.equal(out.status, 200, await out.text());
      assert.equal(browser.jar.has('tessera-session'), false, 'signed out');
      assert.equal(issuer.service.audit.dropped, 0, 'the sign-out’s event was not dropped');
      assert.equal(issuer.service.audit.held, 4, 'kept past max_queue: 3');
      assert.deepEqual(reports, []);
      admin.exec('DROP TRIGGER IF EXISTS audit_down');
      const signedOut = async () =>
        (await issuer.store.queryAudit({ kinds: ['login.signed_out'], limit: 10 })).map((e) => [e.decision, e.reason, e.subject]);
      await until(async () => (await signedOut()).length > 0, 5000);
      assert.deepEqual(await signedOut(), [['allow', 'ok', 'alice']]);
    } finally {
      await close();
    }
  });

  it('attack: refuse: past max_queue a copy of a signed-out session cookie signing out again and again cannot grow the queue: each login.signed_out that ended nothing is dropped, counted and told, not kept past max_queue', async () => {
    const { issuer, admin, reports, id, secret, browser, close } = await signedInUnderRefuse('mallory');
    try {
      const copy = browser.cookieHeader();
      const signOut = async (cookie: string) => {
        const out = await fetch(`${issuer.url}/oauth2/logout`, {
          method: 'POST',
          headers: { cookie, origin: new URL(issuer.url).origin },
          redirect: 'manual',
        });
        assert.equal(out.status, 200, await out.text());
      };
      await signOut(copy); // the session recorded as ended in the store
      await issuer.service.audit.flush();
      admin.exec(FAIL);
      await fillQueue(issuer, { authorization: basic(id, secret) });
      for (let i = 0; i < 4; i++) await signOut(copy);
      assert.equal(issuer.service.audit.held, 3, 'nothing kept past max_queue: no session was ended');
      assert.equal(issuer.service.audit.dropped, 4);
      await until(async () => reports.length > 0, 2000);
      // The first line at once, with the drops of the same turn: the next sign-out, quick on
      // loopback, may be dropped before its timer fires, so it may say 2 (the rest 10 s later).
      assert.deepEqual(Object.keys(reports[0]?.kinds ?? {}), ['login.signed_out']);
    } finally {
      await close();
    }
  });

  it('attack: refuse: past max_queue two sign-outs of one session racing at two instances sharing the store (both find it live, then both record it as ended) keep one login.signed_out past max_queue, not one each: the other ended nothing, and is dropped, counted and told', async () => {
    const { a, b, admin, reports, id, secret, browser, close } = await twoInstancesSignedIn('alice', 2);
    try {
      admin.exec(FAIL);
      for (const at of [a, b]) await fillQueue(at, { authorization: basic(id, secret) });
      const signOut = async (at: RunningIssuer) => {
        const out = await fetch(`${at.url}/oauth2/logout`, {
          method: 'POST',
          headers: { cookie: browser.cookieHeader(), 'sec-fetch-site': 'same-origin' },
          redirect: 'manual',
        });
        assert.equal(out.status, 200, await out.text());
      };
      await Promise.all([signOut(a), signOut(b)]);
      assert.equal(a.service.audit.held + b.service.audit.held, 7, 'one kept past max_queue: 3, at one instance');
      assert.equal(a.service.audit.dropped + b.service.audit.dropped, 1);
      await until(async () => reports.length > 0, 2000);
      assert.deepEqual(
        reports.map((r) => r.kinds),
        [{ 'login.signed_out': 1 }],
      );
      admin.exec('DROP TRIGGER IF EXISTS audit_down');
      await until(async () => a.service.audit.held + b.service.audit.held === 0, 5000);
      const signedOut = (await a.store.queryAudit({ kinds: ['login.signed_out'], limit: 10 })).map((e) => [
        e.decision,
        e.reason,
        e.subject,
      ]);
      assert.deepEqual(signedOut, [['allow', 'ok', 'alice']]);
    } finally {
      await close();
    }
  });

  it('attack: refuse: past max_queue two sign-outs of one session at once at one instance keep one login.signed_out past max_queue, not one each: the other ended nothing, and is dropped, counted and told', async () => {
    const { a, admin, reports, id, secret, browser, close } = await twoInstancesSignedIn('alice', 2);
    try {
      admin.exec(FAIL);
      await fillQueue(a, { authorization: basic(id, secret) });
      const signOut = async () => {
        const out = await fetch(`${a.url}/oauth2/logout`, {
          method: 'POST',
          headers: { cookie: browser.cookieHeader(), 'sec-fetch-site': 'same-origin' },
          redirect: 'manual',
        });
        assert.equal(out.status, 200, await out.text());
      };
      await Promise.all([signOut(), signOut()]);
      assert.equal(a.service.audit.held, 4, 'one kept past max_queue: 3');
      assert.equal(a.service.audit.dropped, 1);
      await until(async () => reports.length > 0, 2000);
      assert.deepEqual(
        reports.map((r) => r.kinds),
        [{ 'login.signed_out': 1 }],
      );
    } finally {
      await close();
    }
  });

  it('attack: refuse: past max_queue an operator repeating the revocation of one access token (tessera revoke --token, the admin API) cannot grow the queue or the log: the first token.revoked is kept past max_queue, each repeat is on record but dropped, counted and told, and the log holds the token’s entry once', async () => {
    const reports: AuditEventsDropped[] = [];
    const t = await issuerWith({ on_queue_full: 'refuse' }, { onAuditEventsDropped: (d) => reports.push(d) });
    try {
      const minted = await t.issuer.service.mint({ clientId: 'agent', subject: 'mallory' });
      const { jti } = minted;
      await t.issuer.service.audit.flush();
      t.fail();
      await t.fill();
      const first = await t.issuer.service.revokeAccessToken(minted.access_token, 'cli');
      assert.equal(first?.jti, jti);
      assert.equal(t.issuer.service.audit.held, 4, 'the revocation’s record kept past max_queue: 3');
      assert.equal(t.issuer.service.audit.dropped, 0);
      for (let i = 0; i < 3; i++) {
        assert.equal((await t.issuer.service.revokeAccessToken(minted.access_token, 'cli'))?.jti, jti, 'answered as before');
      }
      assert.equal(t.issuer.service.audit.held, 4, 'no repeat kept past max_queue: it revoked nothing');
      assert.equal(t.issuer.service.audit.dropped, 3);
      await until(async () => reports.length > 0, 2000);
      assert.deepEqual(Object.keys(reports[0]?.kinds ?? {}), ['token.revoked']);
      const now = Math.floor(Date.now() / 1000);
      assert.equal((await t.issuer.store.revocationsSince(0, now, 1_000_000)).filter((e) => e.value === jti).length, 1, 'one log entry');
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });

  it('drop (the default): the token endpoint serves on while the store refuses audit writes', async () => {
    const t = await issuerWith({});
    try {
      await t.issuer.service.audit.flush();
      t.fail();
      for (let i = 0; i < 5; i++) assert.equal((await t.token()).status, 200);
      assert.ok(t.issuer.service.audit.dropped > 0);
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });
});

/**
 * A login issuer with `audit.on_queue_full: refuse` and `max_queue: 3` (drops reported to
 * `reports`), a client registered, and a browser signed in as `sub` through a rogue upstream; the
 * store's audit table is left writable (FAIL breaks it, `close` heals it and ends everything).
 */
async function signedInUnderRefuse(sub: string) {
  const rogue = await startRogueProvider();
  const reports: AuditEventsDropped[] = [];
  const issuer = await startLoginIssuer(rogue.url, {
    audit: { max_queue: 3, on_queue_full: 'refuse' },
    tokenService: { audit_flush_interval: '20ms' },
    onAuditEventsDropped: (d) => reports.push(d),
  });
  const admin = new DatabaseSync(join(issuer.dir, 'tessera.db'));
  const close = async () => {
    admin.exec('DROP TRIGGER IF EXISTS audit_down');
    admin.close();
    await issuer.close();
    await rogue.close();
  };
  try {
    const { id, secret } = await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
    await issuer.service.audit.flush();
    const browser = await signedIn(issuer, rogue, sub);
    await issuer.service.audit.flush();
    return { issuer, admin, reports, id, secret, browser, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * Two login issuers (`a`, `b`: instances sharing one SQLite store, one issuer URL and master key)
 * with `audit.on_queue_full: refuse` and `max_queue: 3` (drops of both reported to `reports`), a
 * client registered, and a browser signed in as `sub` at `a`. Each instance's store holds a
 * sign-out's append (a scoped `token` entry) until `racers` of them are waiting, or 500 ms have
 * passed: sign-outs of one session racing each find it live before either records it as ended.
 */
async function twoInstancesSignedIn(sub: string, racers: number) {
  const rogue = await startRogueProvider();
  const reports: AuditEventsDropped[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-two-'));
  const path = join(dir, 'tessera.db');
  let waiting: (() => void)[] = [];
  const barrier = (): Promise<void> =>
    new Promise((resolve) => {
      waiting.push(resolve);
      const go = () => {
        for (const w of waiting) w();
        waiting = [];
      };
      if (waiting.length >= racers) go();
      else setTimeout(go, 500).unref();
    });
  const held = (inner: Store): Store =>
    new Proxy(inner, {
      get(target, p) {
        if (p === 'appendRevocations') {
          return async (entries: Parameters<Store['appendRevocations']>[0]) => {
            if (entries.some((e) => e.kind === 'token' && e.issuer !== null)) await barrier();
            return target.appendRevocations(entries);
          };
        }
        const v = Reflect.get(target, p, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as Store;
  const audit = { max_queue: 3, on_queue_full: 'refuse' };
  const a = await startLoginIssuer(rogue.url, {
    audit,
    tokenService: { audit_flush_interval: '20ms' },
    store: held(SqliteStore.open({ path })),
    onAuditEventsDropped: (d) => reports.push(d),
  });
  const b = await startIssuer({
    store: held(SqliteStore.open({ path })),
    master: a.master,
    config: { audit, token_service: { issuer: a.url, audit_flush_interval: '20ms', authorization: oidcConfig(rogue.url) } } as never,
    onAuditEventsDropped: (d) => reports.push(d),
  });
  const admin = new DatabaseSync(path);
  const close = async () => {
    admin.exec('DROP TRIGGER IF EXISTS audit_down');
    admin.close();
    await b.close();
    await a.close();
    await rogue.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const { id, secret } = await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
    await a.service.audit.flush();
    const browser = await signedIn(a, rogue, sub);
    await a.service.audit.flush();
    await b.service.audit.flush();
    return { a, b, admin, reports, id, secret, browser, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** A browser signed in as `sub` at `issuer` (its login at the rogue provider): it holds a session cookie. */
async function signedIn(issuer: RunningIssuer, rogue: Awaited<ReturnType<typeof startRogueProvider>>, sub: string): Promise<Browser> {
  const browser = new Browser();
  const started = await browser.fetch(
    authorizationRequest(`${issuer.url}/oauth2/authorize`, {
      redirect_uri: LOGIN_REDIRECT,
      code_challenge: pkcePair().challenge,
      resource: LOGIN_API,
    }),
  );
  assert.equal(started.status, 303, await started.text());
  const up = new URL(started.headers.get('location') as string).searchParams;
  rogue.idToken = () => rogueIdToken(rogue, { nonce: up.get('nonce'), sub });
  const callback = await browser.fetch(
    `${issuer.url}/oauth2/login/callback?${new URLSearchParams({ code: 'upstream-code', state: up.get('state') as string })}`,
  );
  assert.equal(callback.status, 303, await callback.text());
  assert.ok(browser.jar.has('tessera-session'));
  return browser;
}

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** The `grant_id` claim of an access token. */
function grantOf(accessToken: string): string {
  return JSON.parse(Buffer.from(accessToken.split('.')[1] as string, 'base64url').toString()).grant_id as string;
}

/**
 * A real SQLite store whose refresh-token rotation waits at a gate the test opens: a token request
 * whose store work is slow, still in flight while other requests fill the audit queue behind it.
 */
function gatedStore(path: string) {
  const inner = SqliteStore.open({ path });
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let reached: (() => void) | undefined;
  const store = new Proxy(inner, {
    get(target, p) {
      if (p === 'rotateRefreshToken') {
        return async (...args: Parameters<Store['rotateRefreshToken']>) => {
          reached?.();
          await gate;
          return target.rotateRefreshToken(...args);
        };
      }
      const v = Reflect.get(target, p, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as Store;
  return {
    store,
    /** Hold the next rotations until `release()`; resolves once one is waiting. */
    hold(): Promise<void> {
      gate = new Promise((resolve) => {
        open = resolve;
      });
      return new Promise((resolve) => {
        reached = resolve;
      });
    },
    release() {
      open?.();
      gate = undefined;
    },
  };
}

/**
 * Requests in flight while the queue fills (max_queue: 4, the store refusing audit writes): each
 * took its slots when it was admitted, so its events are kept when it ends, however full the queue
 * has become; the request that finds no room is refused instead.
 */
describe('token service: audit.on_queue_full: refuse, requests in flight while the queue fills', () => {
  async function setup() {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-slots-'));
    const gated = gatedStore(join(dir, 'tessera.db'));
    const reports: AuditEventsDropped[] = [];
    const issuer = await startIssuer({
      dir,
      store: gated.store,
      onAuditEventsDropped: (d) => reports.push(d),
      config: {
        audit: { max_queue: 4, on_queue_full: 'refuse' },
        token_service: { audit_flush_interval: '20ms' },
      } as never,
    });
    const admin = new DatabaseSync(join(dir, 'tessera.db'));
    const agent = await issuer.addClient({
      id: 'agent',
      scopes: ['api:read'],
      grantTypes: ['client_credentials', 'refresh_token', EXCHANGE],
    });
    const auth = { authorization: basic(agent.id, agent.secret) };
    // A delegated token with a refresh token (the agent exchanges a user token minted for alice).
    const family = async () => {
      const subject = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 3600 });
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
        auth,
      );
      assert.equal(res.status, 200, await res.clone().text());
      return (await res.json()) as { access_token: string; refresh_token: string };
    };
    const refresh = (rt: string, requestId: string) =>
      issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt }, { ...auth, 'x-request-id': requestId });
    // A grant exchanged under the one `subject` (an access token) belongs to.
    const exchangeUnder = async (subject: string) => {
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: subject, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
        auth,
      );
      assert.equal(res.status, 200, await res.clone().text());
      return (await res.json()) as { access_token: string };
    };
    const token = () => issuer.post('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, auth);
    const events = async (requestId: string) => (await issuer.store.queryAudit({ limit: 100 })).filter((e) => e.request_id === requestId);
    return {
      issuer,
      gated,
      reports,
      auth,
      family,
      exchange: exchangeUnder,
      refresh,
      token,
      events,
      fail: () => admin.exec(FAIL),
      heal: () => admin.exec('DROP TRIGGER IF EXISTS audit_down'),
      async close() {
        gated.release();
        admin.exec('DROP TRIGGER IF EXISTS audit_down');
        admin.close();
        await issuer.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  it('attack: a slow token request admitted just before the queue fills cannot end unaudited: its slots were reserved, the later request is refused instead', async () => {
    const t = await setup();
    try {
      const f = await t.family();
      await t.issuer.service.audit.flush();
      t.fail();
      const waiting = t.gated.hold();
      const slow = t.refresh(f.refresh_token, 'slow-refresh');
      slow.catch(() => {}); // awaited below; a failed assertion before must not leave it unhandled
      await waiting;
      let served = 0;
      let refused = 0;
      for (let i = 0; i < 5 && refused === 0; i++) {
        const res = await t.token();
        await res.arrayBuffer();
        if (res.status === 200) served++;
        else {
          assert.equal(res.status, 503);
          refused++;
        }
      }
      assert.equal(refused, 1, 'once the queue is full, requests are refused');
      // The slow request holds two slots; the one served after it took two and gave one back
      // (its one event, token.issued, waits in the queue): no room left for two more.
      assert.equal(served, 1, 'the slow request keeps its slots: one more token request fits in max_queue: 4');
      t.gated.release();
      const done = await slow;
      assert.equal(done.status, 200, await done.clone().text());
      await done.arrayBuffer();
      assert.equal(t.issuer.service.audit.dropped, 0, 'the slow request’s event was not dropped');
      assert.equal(t.issuer.service.audit.reserved, 0, 'its unused slot given back');
      assert.equal(t.issuer.service.audit.held, 2);
      t.heal();
      await until(async () => (await t.events('slow-refresh')).some((e) => e.kind === 'token.refreshed'), 5000);
    } finally {
      await t.close();
    }
  });

  it('attack: a reused refresh token answered while the queue fills loses none of its events: refresh.reuse_detected, token.denied and a grant.revoked for every grant of the family (kept past max_queue, however many), and the next request is refused', async () => {
    const t = await setup();
    try {
      const f = await t.family();
      // Two grants exchanged under the family's: the reuse revokes three, more than its slots.
      const children: string[] = [];
      for (let i = 0; i < 2; i++) {
        await t.issuer.service.audit.flush();
        children.push(grantOf((await t.exchange(f.access_token)).access_token));
      }
      const grantId = grantOf(f.access_token);
      await t.issuer.service.audit.flush();
      const rotated = await t.refresh(f.refresh_token, 'first-use');
      assert.equal(rotated.status, 200);
      await rotated.arrayBuffer();
      await t.issuer.service.audit.flush();
      t.fail();
      // Two token requests: two events held, two places left, what a token request reserves.
      for (let i = 0; i < 2; i++) assert.equal((await t.token()).status, 200);
      assert.equal(t.issuer.service.audit.held, 2);
      const reused = await t.refresh(f.refresh_token, 'reuse');
      assert.equal(reused.status, 400);
      assert.equal(((await reused.json()) as { error: string }).error, 'invalid_grant');
      assert.equal(t.issuer.service.audit.dropped, 0, 'no event of the reuse was dropped');
      // Its two slots, and the three grant.revoked kept past max_queue: 4 (the family is revoked
      // in the store's transaction that found the reuse: there was nothing left to refuse).
      assert.equal(t.issuer.service.audit.held, 7);
      assert.equal(t.issuer.service.audit.reserved, 0);
      const refused = await t.token();
      assert.equal(refused.status, 503, 'past max_queue now: the next request is refused');
      assert.equal(t.issuer.service.auditStatus().ok, false);
      // A store refusing the batch again keeps every event for the next attempt.
      await t.issuer.service.audit.flush();
      assert.equal(t.issuer.service.audit.held, 7);
      assert.equal(t.issuer.service.audit.dropped, 0);
      t.heal();
      const family = [grantId, ...children].sort();
      const revokedEvents = async () =>
        (await t.issuer.store.queryAudit({ kinds: ['grant.revoked'], limit: 100 })).filter((e) => e.reason === 'refresh_token_reused');
      await until(async () => (await revokedEvents()).length === family.length, 5000);
      assert.deepEqual((await revokedEvents()).map((e) => e.delegation_id).sort(), family, 'one grant.revoked per grant of the family');
      const denied = (await t.events('reuse')).find((e) => e.kind === 'token.denied');
      assert.equal(denied?.reason, 'refresh_token_reused');
      const detected = (await t.issuer.store.queryAudit({ kinds: ['refresh.reuse_detected'], limit: 10 })).filter(
        (e) => e.delegation_id === grantId,
      );
      assert.equal(detected.length, 1, 'refresh.reuse_detected was kept');
      assert.deepEqual([...((detected[0]?.detail as { revoked_grants?: string[] } | undefined)?.revoked_grants ?? [])].sort(), family);
      for (const id of family) assert.notEqual((await t.issuer.store.getGrant(id))?.revokedAt, null, 'the family is revoked');
      await until(async () => (await t.token()).status === 200, 5000);
    } finally {
      await t.close();
    }
  });

  it('attack: a public client repeating the RFC 7009 revocation of a refresh token whose grant is already revoked cannot grow the queue past max_queue while the store fails: each token.revoked that revoked nothing is dropped, counted and told, not kept', async () => {
    const t = await setup();
    try {
      const f = await t.family();
      const grantId = grantOf(f.access_token);
      const revoke = async () => {
        const res = await t.issuer.post('/oauth2/revoke', { token: f.refresh_token, token_type_hint: 'refresh_token' }, t.auth);
        await res.arrayBuffer();
        return res.status;
      };
      assert.equal(await revoke(), 200);
      assert.notEqual((await t.issuer.store.getGrant(grantId))?.revokedAt, null, 'the family is revoked');
      await t.issuer.service.audit.flush();
      t.fail();
      // max_queue: 4 to the brim: three token requests (two slots each, one used), an introspection.
      for (let i = 0; i < 3; i++) assert.equal((await t.token()).status, 200);
      const introspected = await t.issuer.post('/oauth2/introspect', { token: 'not-a-token' }, t.auth);
      assert.equal(introspected.status, 200);
      await introspected.arrayBuffer();
      assert.equal(t.issuer.service.audit.held, 4);
      for (let i = 0; i < 5; i++) assert.equal(await revoke(), 200, 'a revocation is served all the same');
      assert.equal(t.issuer.service.audit.held, 4, 'nothing kept past max_queue: nothing was revoked');
      assert.equal(t.issuer.service.audit.dropped, 5);
      await until(async () => t.reports.length > 0, 2000);
      // The first line at once, with the drops of the same turn (the next revocation, quick on
      // loopback, may be dropped before its timer fires, so it may say 2; the rest 10 s later).
      assert.deepEqual(Object.keys(t.reports[0]?.kinds ?? {}), ['token.revoked'], 'told at once, by kind');
      assert.equal(t.issuer.service.audit.reserved, 0);
    } finally {
      await t.close();
    }
  });

  it('no slot is kept by a request that fails: 401 and 400 answers give back the slots they did not use, and the requests after them are admitted', async () => {
    const t = await setup();
    try {
      await t.issuer.service.audit.flush();
      t.fail();
      const status = async (res: Promise<Response>) => {
        const r = await res;
        await r.arrayBuffer();
        return r.status;
      };
      assert.equal(
        await status(t.issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('agent', 'wrong') })),
        401,
      );
      assert.equal(await status(t.issuer.post('/oauth2/token', { grant_type: 'password' }, t.auth)), 400);
      assert.equal(t.issuer.service.audit.reserved, 0, 'every slot not used was given back');
      assert.equal(t.issuer.service.audit.held, 2, 'one token.denied each');
      // Two places left: a token request (two slots) is admitted, then an introspection (one).
      assert.equal(await status(t.token()), 200);
      assert.equal(await status(t.issuer.post('/oauth2/introspect', { token: 'x' }, { authorization: basic('agent', 'wrong') })), 401);
      assert.equal(t.issuer.service.audit.held, 4);
      assert.equal(t.issuer.service.audit.reserved, 0);
      assert.equal(await status(fetch(`${t.issuer.url}/oauth2/admin/grants/g_1`, { headers: { authorization: 'Bearer nope' } })), 503);
      assert.equal(t.issuer.service.audit.dropped, 0);
    } finally {
      await t.close();
    }
  });

  it('attack: the gateway’s exchange mint issues no upstream token unaudited: each reserves its token.exchanged’s slot, refused (audit_unavailable) once the queue is full', async () => {
    const t = await setup();
    try {
      await t.issuer.addClient({ id: 'gateway', scopes: ['api:read'], audiences: ['https://upstream.test'], grantTypes: [EXCHANGE] });
      const user = await t.issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
      const verified = await inProcessVerifier(t.issuer).verify(bearer(user.access_token));
      assert.ok(verified.ok);
      await t.issuer.service.audit.flush();
      t.fail();
      const upstream = t.issuer.service.upstreamIssuer('gateway');
      const mint = () =>
        upstream.issueForUpstream({ principal: verified.principal, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 60 });
      for (let i = 0; i < 4; i++) await mint();
      assert.equal(t.issuer.service.audit.held, 4);
      await assert.rejects(mint(), (e: unknown) => e instanceof OAuthError && e.code === 'audit_unavailable');
      assert.equal(t.issuer.service.audit.dropped, 0, 'no token.exchanged was dropped');
      assert.equal(t.issuer.service.audit.reserved, 0);
    } finally {
      await t.close();
    }
  });
});

/**
 * Slowloris against `audit.on_queue_full: refuse`: a request's slots are reserved once its body is
 * read, not when its head arrives, so connections trickling a body (no credential needed; the
 * listener's request_timeout is minutes) hold none. While they trickle, a whole request is served
 * and the queue is not full (/readyz's `token service audit queue` check stays ok); once a body
 * is whole, its request takes its slots and its event is kept.
 */
describe('token service: audit.on_queue_full: refuse, slow request bodies', () => {
  /**
   * `count` connections each sending `head` (request id `slow-<i>`) and `body` but its last byte,
   * which `finish` sends.
   */
  async function trickling(url: string, count: number, head: string, body: string) {
    const u = new URL(url);
    const sockets = await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const s = connect(Number(u.port), u.hostname);
        await once(s, 'connect');
        let answer = '';
        s.on('data', (d: Buffer) => {
          answer += d.toString('latin1');
        });
        s.on('error', () => undefined);
        s.write(`${head}X-Request-Id: slow-${i}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, -1)}`);
        return { s, answer: () => answer };
      }),
    );
    return {
      /** Send each body's last byte, one after the other's answer; the answers' status lines. */
      async finish(): Promise<string[]> {
        const lines: string[] = [];
        for (const { s, answer } of sockets) {
          s.write(body.slice(-1));
          await until(() => /\r\n\r\n/.test(answer()), 5000);
          lines.push(answer().split('\r\n')[0] as string);
        }
        return lines;
      },
      destroy: () => {
        for (const { s } of sockets) s.destroy();
      },
    };
  }

  /** Resolves once the server has been handed `n` requests more than now. */
  function requestsSeen(issuer: RunningIssuer, n: number): Promise<void> {
    let seen = 0;
    return new Promise((resolve) => {
      const on = () => {
        if (++seen < n) return;
        issuer.server.off('request', on);
        resolve();
      };
      issuer.server.on('request', on);
    });
  }

  const endpoints = [
    {
      name: 'token endpoint',
      head: 'POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n',
      body: 'grant_type=client_credentials&scope=api%3Aread',
      answered: 'HTTP/1.1 401 ',
      event: 'token.denied',
    },
    {
      name: 'authorization endpoint (the consent form)',
      head: 'POST /oauth2/authorize HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n',
      body: 'request=x&csrf=y&decision=approve',
      answered: 'HTTP/1.1 400 ',
      event: 'authorization.denied',
    },
    {
      name: 'registration endpoint',
      head: 'POST /oauth2/register HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n',
      // Refused (no redirect URI): its client.registration_denied names the request.
      body: '{"client_name":"Slow","redirect_uris":[],"token_endpoint_auth_method":"none"}',
      answered: 'HTTP/1.1 400 ',
      event: 'client.registration_denied',
    },
  ] as const;
  for (const ep of endpoints) {
    it(`attack: slow request bodies at the ${ep.name} hold no audit slot: a whole token request is served meanwhile and the queue is not full (/readyz ready); each body once whole is answered and audited`, async () => {
      const t = await issuerWith({ on_queue_full: 'refuse', max_queue: 4 });
      let slow: Awaited<ReturnType<typeof trickling>> | undefined;
      try {
        await t.issuer.service.audit.flush();
        const arrived = requestsSeen(t.issuer, 3);
        // Three bodies held open: with slots taken at the head, two of them (two slots each) would fill max_queue: 4.
        slow = await trickling(t.issuer.url, 3, ep.head, ep.body);
        await arrived;
        assert.equal(t.issuer.service.audit.reserved, 0, 'a request whose body is still coming holds no slot');
        assert.deepEqual(t.issuer.service.auditStatus(), { ok: true }, '/readyz’s audit queue check stays ok');
        const served = await t.token();
        assert.equal(served.status, 200, await served.clone().text());
        await served.arrayBuffer();
        const answers = await slow.finish();
        for (const a of answers) assert.ok(a.startsWith(ep.answered), a);
        assert.equal(t.issuer.service.audit.reserved, 0);
        assert.equal(t.issuer.service.audit.dropped, 0, 'every event kept');
        await t.issuer.service.audit.flush();
        const events = (await t.issuer.store.queryAudit({ limit: 100 })).filter((e) => e.request_id?.startsWith('slow-'));
        assert.deepEqual(
          events.map((e) => [e.request_id, e.kind]).sort(),
          [0, 1, 2].map((i) => [`slow-${i}`, ep.event]),
          `each slow request’s ${ep.event}`,
        );
      } finally {
        slow?.destroy();
        await t.close(t.issuer);
      }
    });
  }
});

describe('token service: audit.on_queue_full: refuse, a body that could not be read', () => {
  it('attack: refuse: past max_queue a token request whose body is too large is refused 503, not served its 413 with its token.denied dropped; with room its 413 is audited', async () => {
    const t = await issuerWith({ on_queue_full: 'refuse' });
    const tooLarge = (id: string) =>
      rawHttp(
        t.issuer.url,
        `POST /oauth2/token HTTP/1.1\r\nHost: a\r\nX-Request-Id: ${id}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\ngrant_type=`,
      );
    try {
      await t.issuer.service.audit.flush();
      t.fail();
      await t.fill();
      const refused = await tooLarge('too-large-while-full');
      assert.match(refused, /^HTTP\/1\.1 503 /, refused);
      assert.equal(t.issuer.service.audit.dropped, 0, 'no event was dropped');
      t.heal();
      await until(async () => (await t.token()).status === 200, 5000);
      const kept = await tooLarge('too-large-kept');
      assert.match(kept, /^HTTP\/1\.1 413 /, kept);
      assert.equal(t.issuer.service.audit.reserved, 0);
      await t.issuer.service.audit.flush();
      const events = await t.issuer.store.queryAudit({ limit: 100 });
      assert.deepEqual(
        events.filter((e) => e.request_id === 'too-large-kept').map((e) => [e.kind, e.reason]),
        [['token.denied', 'request_body_too_large']],
      );
      assert.ok(!events.some((e) => e.request_id === 'too-large-while-full'), 'the 503 took no slot');
    } finally {
      t.heal();
      await t.close(t.issuer);
    }
  });
});
