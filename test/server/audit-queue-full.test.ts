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
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { answerConsent, authorizationConfig, authorizationRequest, openConsent, personHeaders } from '../helpers/authorize.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { until } from '../helpers/net.ts';
import { startOidcProvider, UPSTREAM_CLIENT, UPSTREAM_SECRET } from '../helpers/oidc-upstream.ts';
import { pkcePair } from '../helpers/pkce.ts';

const FAIL = `CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit volume full'); END`;

async function issuerWith(audit: Record<string, unknown>) {
  const issuer = await startIssuer({
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
    fail: () => admin.exec(FAIL),
    heal: () => admin.exec('DROP TRIGGER IF EXISTS audit_down'),
    async close(i: RunningIssuer) {
      admin.close();
      await i.close();
    },
  };
}

describe('token service: audit.on_queue_full', () => {
  it('attack: refuse: past max_queue no token is issued unaudited: 503 temporarily_unavailable with Retry-After at the token, revocation and introspection endpoints; served again once the store takes the queue', async () => {
    const t = await issuerWith({ on_queue_full: 'refuse' });
    try {
      await t.issuer.service.audit.flush();
      const admin = await t.adminToken();
      const grant = await t.issuer.post('/oauth2/token', { grant_type: 'client_credentials', scope: 'api:read' }, t.auth);
      const grantId = JSON.parse(
        Buffer.from(((await grant.json()) as { access_token: string }).access_token.split('.')[1] as string, 'base64url').toString(),
      ).grant_id as string;
      await t.issuer.service.audit.flush();
      t.fail();
      // Each issued token is one event (token.issued): three fit in the queue.
      const issued: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await t.token();
        assert.equal(res.status, 200, await res.clone().text());
        issued.push(((await res.json()) as { access_token: string }).access_token);
      }
      assert.equal(t.issuer.service.audit.held, 3);
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
      // The revocations' own events did not fit: dropped and counted (the revocation log has them).
      assert.ok(t.issuer.service.audit.dropped > 0);

      t.heal();
      await until(async () => (await t.token()).status === 200, 5000);
      const back = await t.issuer.post('/oauth2/introspect', { token: issued[0] as string }, t.auth);
      assert.equal(back.status, 200);
      assert.deepEqual(await back.json(), { active: false }, 'revoked while the queue was full');
      assert.equal((await t.register()).status, 201, 'registration is served again');
      await t.issuer.service.audit.flush();
      const issuedEvents = await t.issuer.store.queryAudit({ kinds: ['token.issued'], limit: 100 });
      assert.ok(issuedEvents.length >= 4, `${issuedEvents.length} token.issued events`);
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
      const { fields } = await openConsent(url);
      await t.issuer.service.audit.flush();
      t.fail();
      for (let i = 0; i < 3; i++) assert.equal((await t.token()).status, 200);
      assert.equal(t.issuer.service.audit.held, 3);
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
      for (let i = 0; i < 3; i++) {
        const res = await issuer.post(
          '/oauth2/token',
          { grant_type: 'client_credentials', scope: 'api:read' },
          { authorization: basic(id, secret) },
        );
        assert.equal(res.status, 200);
      }
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
