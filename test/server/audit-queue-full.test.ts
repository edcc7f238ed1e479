/**
 * `audit.on_queue_full: refuse` at the token service: while its audit queue holds `audit.max_queue`
 * events (the store refusing every audit write), token, revocation and introspection requests are
 * refused with 503 `temporarily_unavailable` and `Retry-After`, as a store outage is answered, and
 * nothing is issued unaudited; once the store takes the queue, they are served again. With `drop`
 * (the default) the token endpoint serves on.
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
      for (const path of ['/oauth2/revoke', '/oauth2/introspect']) {
        const res = await t.issuer.post(path, { token: issued[0] as string }, t.auth);
        assert.equal(res.status, 503, path);
        assert.equal(((await res.json()) as { error: string }).error, 'temporarily_unavailable', path);
      }
      const registration = await t.register();
      assert.equal(registration.status, 503, 'no client is registered unaudited');
      assert.equal(registration.headers.get('retry-after'), '5');
      assert.equal(((await registration.json()) as { error: string }).error, 'temporarily_unavailable');
      assert.equal((await t.issuer.store.listClients()).filter((c) => c.name === 'MCP App').length, 0);
      assert.equal(t.issuer.service.audit.dropped, 0, 'no event was dropped');

      t.heal();
      await until(async () => (await t.token()).status === 200, 5000);
      const back = await t.issuer.post('/oauth2/introspect', { token: issued[0] as string }, t.auth);
      assert.equal(back.status, 200);
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
