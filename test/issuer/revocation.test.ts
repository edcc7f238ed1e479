/**
 * Revocation: by token (RFC 7009), by grant with its whole subtree (three levels deep), by subject
 * and by client, through the service, the admin API and another process; the verifier in the same
 * process rejects affected tokens on the very next request.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, type JWK, SignJWT } from 'jose';
import type { AuditKind } from '../../src/audit/event.ts';
import { sha256 } from '../../src/issuer/secrets.ts';
import { GRANT_TREE_MAX_NODES } from '../../src/issuer/service.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { bearer } from '../helpers/tokens.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test';

let issuer: RunningIssuer;
let verifier: ReturnType<typeof inProcessVerifier>;
const c: Record<string, { id: string; secret: string }> = {};

before(async () => {
  issuer = await startIssuer();
  verifier = inProcessVerifier(issuer, ['https://api.test', issuer.url]);
  const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
  for (const id of ['broker', 'agent', 'subagent', 'other']) {
    // Client ids as audiences address exchanged tokens to the next client in a chain (RFC 8693 §2.1).
    c[id] = await issuer.addClient({ id, scopes: ['api:read', 'api:write'], audiences: [API, 'agent', 'subagent', 'other'], grantTypes });
  }
  c.ops = await issuer.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [issuer.url] });
});
after(() => issuer?.close());

const auth = (id: string) => ({ authorization: basic(id, (c[id] as { secret: string }).secret) });
const valid = async (token: string) => (await verifier.verify(bearer(token))).ok;

async function cc(id: string): Promise<string> {
  const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: API }, auth(id));
  return ((await res.json()) as { access_token: string }).access_token;
}

async function exchange(id: string, subject: string, audience: string[]): Promise<{ access_token: string; refresh_token: string }> {
  const res = await issuer.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token: subject, subject_token_type: AT, audience },
    auth(id),
  );
  const body = (await res.json()) as { access_token: string; refresh_token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/** alice → broker → agent → subagent. */
async function chain(user = 'alice') {
  const root = (await issuer.service.mint({ clientId: 'broker', subject: user, ttl: 3600, audiences: [API, 'agent', 'subagent', 'other'] }))
    .access_token;
  const broker = await exchange('broker', root, [API, 'agent', 'subagent', 'other']);
  const agent = await exchange('agent', broker.access_token, [API, 'subagent', 'other']);
  const sub = await exchange('subagent', agent.access_token, [API]);
  return { root, broker, agent, sub, grant: (t: string) => decodeJwt(t).grant_id as string };
}

describe('RFC 7009 revocation endpoint', () => {
  it('answers 200 for an unknown token', async () => {
    const res = await issuer.post('/oauth2/revoke', { token: 'no-such-token' }, auth('agent'));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(await res.text(), '');
  });

  it('revokes the client’s own access token: the next request with it fails', async () => {
    const token = await cc('agent');
    assert.equal(await valid(token), true);
    assert.equal((await issuer.post('/oauth2/revoke', { token, token_type_hint: 'access_token' }, auth('agent'))).status, 200);
    const r = await verifier.verify(bearer(token));
    assert.equal(r.ok, false);
    if (!r.ok) assert.equal(r.error.code, 'token_revoked');
    // Another token of the same client and grant stays valid: this revoked one token, not the grant.
    assert.equal(await valid(await cc('agent')), true);
  });

  it('leaves another client’s token untouched and still answers 200', async () => {
    const token = await cc('agent');
    assert.equal((await issuer.post('/oauth2/revoke', { token }, auth('other'))).status, 200);
    assert.equal(await valid(token), true);
  });

  it('revokes a refresh token with its family and the access tokens of its grant', async () => {
    const { agent } = await chain();
    assert.equal((await issuer.post('/oauth2/revoke', { token: agent.refresh_token }, auth('agent'))).status, 200);
    assert.equal(await valid(agent.access_token), false);
    const res = await issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: agent.refresh_token }, auth('agent'));
    assert.equal(res.status, 400);
  });

  it('leaves another client’s refresh token untouched (its grant and the refresh still work) and still answers 200', async () => {
    const { agent } = await chain();
    const res = await issuer.post('/oauth2/revoke', { token: agent.refresh_token, token_type_hint: 'refresh_token' }, auth('other'));
    assert.equal(res.status, 200);
    assert.equal(await valid(agent.access_token), true);
    const refreshed = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: agent.refresh_token },
      auth('agent'),
    );
    assert.equal(refreshed.status, 200);
  });

  it('revokes whatever the token is when token_type_hint is wrong or unknown (RFC 7009 §2.1: the hint only guides the lookup)', async () => {
    const access = await cc('agent');
    assert.equal((await issuer.post('/oauth2/revoke', { token: access, token_type_hint: 'refresh_token' }, auth('agent'))).status, 200);
    assert.equal(await valid(access), false);
    const { agent } = await chain();
    assert.equal(
      (await issuer.post('/oauth2/revoke', { token: agent.refresh_token, token_type_hint: 'no_such_hint' }, auth('agent'))).status,
      200,
    );
    assert.equal(await valid(agent.access_token), false);
  });

  it('attack: a client revoking its own access token (or refresh token) again and again appends one revocation log entry, not one per request (each kept until the token expires, read back by every instance)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const logged = async (value: string) =>
      (await issuer.store.revocationsSince(0, now, 1_000_000)).filter((e) => e.value === value).length;
    const inactive = async () => {
      await issuer.service.audit.flush();
      return (await issuer.store.queryAudit({ kinds: ['revocation.denied'], limit: 10_000 })).filter(
        (e) => e.reason === 'inactive' && e.client_id === 'agent',
      ).length;
    };
    const before = await inactive();
    const access = await cc('agent');
    const jti = decodeJwt(access).jti as string;
    for (let i = 0; i < 20; i++) assert.equal((await issuer.post('/oauth2/revoke', { token: access }, auth('agent'))).status, 200);
    assert.equal(await logged(jti), 1);
    assert.equal(await valid(access), false);
    assert.equal((await inactive()) - before, 19, 'each repeat is on record as revocation.denied inactive');
    const { agent, grant } = await chain();
    for (let i = 0; i < 20; i++)
      assert.equal((await issuer.post('/oauth2/revoke', { token: agent.refresh_token }, auth('agent'))).status, 200);
    assert.equal(await logged(grant(agent.access_token)), 1);
  });

  it('requires client authentication', async () => {
    const res = await issuer.post('/oauth2/revoke', { token: 'x' });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  });

  it('requires the token parameter', async () => {
    const res = await issuer.post('/oauth2/revoke', {}, auth('agent'));
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
  });

  it('audits a refused revocation request (a guessed client secret) as revocation.denied, without the secret or the token', async () => {
    const res = await issuer.post(
      '/oauth2/revoke',
      { token: 'probe-token-value' },
      { authorization: basic('agent', 'guessed-secret-value') },
    );
    assert.equal(res.status, 401);
    await issuer.service.audit.flush();
    const e = (await issuer.store.queryAudit({ kinds: ['revocation.denied'], limit: 10_000 })).at(-1);
    assert.equal(e?.decision, 'deny');
    assert.equal(e?.reason, 'client_secret_mismatch');
    assert.doesNotMatch(JSON.stringify(e), /guessed-secret-value|probe-token-value/);
  });

  it('attack: a client presenting another client’s refresh or access token (stolen) is answered 200 with nothing revoked, and is on record as revocation.denied token_of_another_client', async () => {
    const { agent } = await chain();
    const access = await cc('agent');
    const last = async () => {
      await issuer.service.audit.flush();
      return (await issuer.store.queryAudit({ kinds: ['revocation.denied', 'token.revoked'], limit: 10_000 })).at(-1);
    };
    for (const token of [agent.refresh_token, access]) {
      assert.equal((await issuer.post('/oauth2/revoke', { token }, auth('other'))).status, 200);
      const e = await last();
      assert.equal(e?.kind, 'revocation.denied');
      assert.equal(e?.decision, 'deny');
      assert.equal(e?.reason, 'token_of_another_client');
      assert.equal(e?.client_id, 'other');
      assert.ok(e?.token_hash, 'names the token by its hash');
      assert.doesNotMatch(JSON.stringify(e), new RegExp(token.slice(-20)));
    }
    assert.equal(await valid(agent.access_token), true);
    assert.equal(await valid(access), true);
    // An unknown token revokes nothing either, and is on record as inactive.
    assert.equal((await issuer.post('/oauth2/revoke', { token: 'no-such-token' }, auth('other'))).status, 200);
    const e = await last();
    assert.equal(e?.kind, 'revocation.denied');
    assert.equal(e?.reason, 'inactive');
    assert.equal(e?.client_id, 'other');
  });
});

describe('grant revocation cascades', () => {
  it('revoking a middle grant revokes its subtree three levels down, and nothing above it', async () => {
    const t = await chain();
    for (const x of [t.broker.access_token, t.agent.access_token, t.sub.access_token]) assert.equal(await valid(x), true);
    const revoked = await issuer.service.revokeGrants({ grantId: t.grant(t.agent.access_token) }, 'incident');
    assert.deepEqual(revoked.map((g) => g.id).sort(), [t.grant(t.agent.access_token), t.grant(t.sub.access_token)].sort());
    assert.equal(await valid(t.broker.access_token), true);
    assert.equal(await valid(t.agent.access_token), false);
    assert.equal(await valid(t.sub.access_token), false);
    // Nothing can be exchanged or refreshed from the revoked grants any more.
    const ex = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: t.agent.access_token, subject_token_type: AT, audience: API },
      auth('other'),
    );
    assert.equal(ex.status, 400);
    const rf = await issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: t.sub.refresh_token }, auth('subagent'));
    assert.equal(rf.status, 400);
  });

  it('revoking the root revokes all four levels', async () => {
    const t = await chain();
    await issuer.service.revokeGrants({ grantId: t.grant(t.root) }, 'incident');
    for (const x of [t.root, t.broker.access_token, t.agent.access_token, t.sub.access_token]) assert.equal(await valid(x), false);
  });

  it('revokes by subject: every grant of alice, none of bob', async () => {
    const alice = await chain('alice-2');
    const bob = await chain('bob');
    await issuer.service.revokeGrants({ subject: 'alice-2' }, 'offboarded');
    for (const x of [alice.root, alice.broker.access_token, alice.sub.access_token]) assert.equal(await valid(x), false);
    for (const x of [bob.root, bob.broker.access_token, bob.sub.access_token]) assert.equal(await valid(x), true);
  });

  it('revoking a subject spares a token issued after it within the same second (the client asking again at once)', async () => {
    const fixed = await startIssuer({ clock: () => 1_900_000_000_250 });
    try {
      const svc = await fixed.addClient({ id: 'svc', scopes: ['api:read'] });
      const ask = async () => {
        const res = await fixed.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(svc.id, svc.secret) });
        assert.equal(res.status, 200);
        return ((await res.json()) as { access_token: string }).access_token;
      };
      // Introspection, on the issuer's own (fixed) clock.
      const active = async (token: string) => {
        const res = await fixed.post('/oauth2/introspect', { token }, { authorization: basic(svc.id, svc.secret) });
        return ((await res.json()) as { active: boolean }).active;
      };
      const old = await ask();
      assert.equal(await active(old), true);
      await fixed.service.revokeGrants({ subject: 'svc' }, 'rotate');
      const fresh = await ask();
      assert.equal(await active(old), false, 'issued before: revoked');
      assert.equal(await active(fresh), true, 'issued after, same second: live');
    } finally {
      await fixed.close();
    }
  });

  it('revokes by client, and disabling or removing a client revokes its live grants', async () => {
    const t = await chain('carol');
    await issuer.service.revokeGrants({ clientId: 'agent' }, 'compromised');
    assert.equal(await valid(t.broker.access_token), true);
    assert.equal(await valid(t.agent.access_token), false);
    assert.equal(await valid(t.sub.access_token), false, 'derived from the client’s grant');

    c.temp = await issuer.addClient({ id: 'temp', scopes: ['api:read'] });
    const tok = await cc('temp');
    assert.equal(await valid(tok), true);
    await issuer.service.setClientDisabled('temp', true);
    assert.equal(await valid(tok), false);
    await issuer.service.setClientDisabled('temp', false);
    const again = await cc('temp');
    assert.equal(await valid(again), true);
    await issuer.service.removeClient('temp');
    assert.equal(await valid(again), false);
  });

  it('attack: revoking a grant while 20 exchanges from it are in flight leaves no child active, refreshable or exchangeable', async () => {
    // The revocation starts as soon as the first child grant is written, so the others race it.
    const store = issuer.store as unknown as { createGrant: (...args: unknown[]) => Promise<unknown> };
    const createGrant = store.createGrant;
    try {
      const root = (await issuer.service.mint({ clientId: 'broker', subject: 'erin', ttl: 3600, audiences: [API, 'agent'] })).access_token;
      let revoking: Promise<unknown> | undefined;
      store.createGrant = (...args: unknown[]) => {
        const created = createGrant.apply(issuer.store, args);
        if (revoking === undefined) {
          revoking = created.then(() => issuer.service.revokeGrants({ grantId: decodeJwt(root).grant_id as string }, 'incident'));
        }
        return created;
      };
      const results = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const res = await issuer.post(
            '/oauth2/token',
            { grant_type: EXCHANGE, subject_token: root, subject_token_type: AT, audience: [API, 'agent'] },
            auth('broker'),
          );
          return { status: res.status, body: (await res.json()) as { access_token: string; refresh_token: string; error?: string } };
        }),
      );
      await revoking;
      store.createGrant = createGrant;
      for (const { status, body } of results) {
        if (status !== 200) {
          assert.equal(body.error, 'invalid_request');
          continue;
        }
        assert.equal(await valid(body.access_token), false);
        const introspected = await issuer.post('/oauth2/introspect', { token: body.access_token }, auth('broker'));
        assert.equal(((await introspected.json()) as { active: boolean }).active, false);
        const rf = await issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token }, auth('broker'));
        assert.equal(rf.status, 400);
        const ex = await issuer.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token: body.access_token, subject_token_type: AT, audience: API },
          auth('agent'),
        );
        assert.equal(ex.status, 400);
      }
      const tree = await issuer.store.grantSubtree(decodeJwt(root).grant_id as string);
      assert.ok(tree.length > 1, 'some exchanges committed before the revocation');
      assert.deepEqual(
        tree.filter((g) => g.revokedAt === null).map((g) => g.id),
        [],
      );
    } finally {
      store.createGrant = createGrant;
    }
  });

  it('picks up a revocation made by another process (the CLI) at the next sync', async () => {
    const t = await chain('dave');
    const cli = SqliteStore.open({ path: join(issuer.dir, 'tessera.db') });
    const now = Math.floor(Date.now() / 1000);
    await cli.revokeGrants({ grantId: t.grant(t.broker.access_token) }, { at: now, reason: 'cli', entryExpiresAt: now + 3600 });
    await cli.close();
    await issuer.service.sync();
    assert.equal(await valid(t.broker.access_token), false);
    assert.equal(await valid(t.sub.access_token), false);
  });
});

describe('admin API', () => {
  const adminToken = async (id = 'ops') => {
    const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: issuer.url }, auth(id));
    return ((await res.json()) as { access_token: string }).access_token;
  };
  const post = (body: unknown, token?: string) =>
    fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });

  it('refuses a request without a token with 401 and a Bearer challenge', async () => {
    const res = await post({ grant_id: 'g_x' });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer /);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_token');
  });

  it('challenges a request without any token with no error code (RFC 6750 §3.1), one with a bad token with error="invalid_token", on both routes', async () => {
    for (const [path, method] of [
      ['/oauth2/admin/revoke', 'POST'],
      ['/oauth2/admin/grants/g_x', 'GET'],
    ] as const) {
      const none = await fetch(`${issuer.url}${path}`, { method });
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="tessera"', path);
      assert.equal(none.headers.get('cache-control'), 'no-store');
      const bad = await fetch(`${issuer.url}${path}`, { method, headers: { authorization: 'Bearer not.a.token' } });
      assert.equal(bad.status, 401);
      assert.equal(bad.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"', path);
    }
  });

  it('refuses on every admin route a token for another audience, an expired one and a revoked one (401 invalid_token), and one without the admin scope (403 naming it)', async () => {
    c['ops-scopeless'] ??= await issuer.addClient({ id: 'ops-scopeless', scopes: ['api:read'], audiences: [issuer.url] });
    const expired = (await issuer.service.mint({ clientId: 'ops', ttl: 1, audiences: [issuer.url] })).access_token;
    const revoked = (await issuer.service.mint({ clientId: 'ops', subject: 'ops-revoked', ttl: 600, audiences: [issuer.url] }))
      .access_token;
    await issuer.service.revokeAccessToken(revoked);
    const foreign = await cc('agent');
    const scopeless = await adminToken('ops-scopeless');
    await new Promise((r) => setTimeout(r, 1100));
    const routes = [
      ['/oauth2/admin/revoke', 'POST'],
      ['/oauth2/admin/grants/g_x', 'GET'],
      ['/oauth2/admin/grants/g_x', 'HEAD'],
      ['/oauth2/admin/elsewhere', 'GET'],
    ] as const;
    for (const [path, method] of routes) {
      const call = (t: string) =>
        fetch(`${issuer.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
          ...(method === 'POST' ? { body: '{"grant_id":"g_x"}' } : {}),
        });
      for (const [name, t] of [
        ['another audience', foreign],
        ['expired', expired],
        ['revoked', revoked],
      ] as const) {
        const res = await call(t);
        assert.equal(res.status, 401, `${name}: ${method} ${path}`);
        assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"');
        assert.equal(res.headers.get('cache-control'), 'no-store');
      }
      const res = await call(scopeless);
      assert.equal(res.status, 403, `no scope: ${method} ${path}`);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tessera", error="insufficient_scope", scope="tessera:admin"');
      assert.equal(res.headers.get('cache-control'), 'no-store');
    }
  });

  it('refuses a token without the admin scope with 403 insufficient_scope', async () => {
    const t = await cc('agent');
    const res = await post({ grant_id: 'g_x' }, t);
    // The agent's token is not even for the admin audience.
    assert.equal(res.status, 401);
    const ops2 = await issuer.addClient({ id: 'ops-no-scope', scopes: ['api:read'], audiences: [issuer.url] });
    c['ops-no-scope'] = ops2;
    const res2 = await post({ grant_id: 'g_x' }, await adminToken('ops-no-scope'));
    assert.equal(res2.status, 403);
    assert.match(res2.headers.get('www-authenticate') ?? '', /error="insufficient_scope", scope="tessera:admin"/);
  });

  it('attack: a client granted a wildcard (`*`, `tessera:*`) is no admin: the admin scope must be granted by name', async () => {
    for (const [id, scope] of [
      ['ops-star', '*'],
      ['ops-prefix', 'tessera:*'],
    ] as const) {
      c[id] = await issuer.addClient({ id, scopes: [scope], audiences: [issuer.url] });
      const res = await post({ grant_id: 'g_x' }, await adminToken(id));
      assert.equal(res.status, 403, scope);
      assert.match(res.headers.get('www-authenticate') ?? '', /error="insufficient_scope", scope="tessera:admin"/);
      // Asking for the admin scope by name is no way round it: the wildcard does not cover it.
      const asked = await issuer.post(
        '/oauth2/token',
        { grant_type: 'client_credentials', audience: issuer.url, scope: 'tessera:admin' },
        auth(id),
      );
      assert.equal(asked.status, 400, scope);
      assert.equal(((await asked.json()) as { error: string }).error, 'invalid_scope');
    }
    // Granted by name, the same request reaches the admin API (an unknown grant: 404).
    c['ops-named'] = await issuer.addClient({ id: 'ops-named', scopes: ['*', 'tessera:admin'], audiences: [issuer.url] });
    assert.equal((await post({ grant_id: 'g_x' }, await adminToken('ops-named'))).status, 404);
  });

  it('attack: an admin token whose aud also names an API (one issued before issuance kept the admin scope to the admin audience) replayed at the admin API by that API is refused: 401 admin_token_audience_shared, audited as admin.denied', async () => {
    // The ops client's real admin token, re-signed by the issuer's active key with a second
    // audience: what a client holding the admin scope and an API audience could be issued before
    // issuance confined the admin scope to the admin audience alone.
    const real = decodeJwt(await adminToken());
    const signer = issuer.service.keys.signer();
    assert.ok(signer);
    const denied = async () => {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: ['admin.denied'], limit: 10_000 });
    };
    const before = (await denied()).length;
    for (const aud of [
      [issuer.url, API],
      [API, issuer.url],
    ]) {
      const shared = signer.sign(JSON.stringify({ ...real, aud, jti: randomUUID() }));
      // The API it was handed to accepts it, as it should...
      assert.equal(await valid(shared), true);
      // ...but the admin API takes no token another resource server has seen.
      for (const [path, method] of [
        ['/oauth2/admin/revoke', 'POST'],
        ['/oauth2/admin/grants/g_x', 'GET'],
      ] as const) {
        const res = await fetch(`${issuer.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${shared}`, 'content-type': 'application/json' },
          ...(method === 'POST' ? { body: '{"subject":"anyone"}' } : {}),
        });
        assert.equal(res.status, 401, `${aud.join(' ')}: ${method} ${path}`);
        assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"');
        assert.equal(res.headers.get('cache-control'), 'no-store');
        assert.deepEqual(await res.json(), {
          error: 'invalid_token',
          error_description: 'The admin access token is for other audiences too; the admin API takes one for its audience alone.',
        });
      }
    }
    const events = (await denied()).slice(before);
    assert.deepEqual(
      events.map((e) => [e.reason, e.decision, e.subject, e.client_id]),
      Array.from({ length: 4 }, () => ['admin_token_audience_shared', 'deny', 'ops', 'ops']),
    );
    // The same token with the admin audience alone is let in (an unknown grant: 404).
    const alone = signer.sign(JSON.stringify({ ...real, aud: [issuer.url], jti: randomUUID() }));
    assert.equal((await post({ grant_id: 'g_x' }, alone)).status, 404);
  });

  it('audits refused admin requests as admin.denied: no token, an authentic token of another audience and one without the admin scope (both naming their client)', async () => {
    const denied = async () => {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: ['admin.denied'], limit: 10_000 });
    };
    const before = (await denied()).length;
    assert.equal((await post({ grant_id: 'g_x' })).status, 401);
    const foreign = await cc('agent');
    assert.equal((await post({ grant_id: 'g_x' }, foreign)).status, 401);
    c['ops-audited'] = await issuer.addClient({ id: 'ops-audited', scopes: ['api:read'], audiences: [issuer.url] });
    assert.equal((await post({ grant_id: 'g_x' }, await adminToken('ops-audited'))).status, 403);
    const events = (await denied()).slice(before);
    assert.deepEqual(
      events.map((e) => [e.reason, e.decision, e.client_id]),
      [
        ['admin_token_missing', 'deny', undefined],
        ['admin_token_invalid', 'deny', 'agent'],
        ['admin_scope_missing', 'deny', 'ops-audited'],
      ],
    );
    assert.doesNotMatch(JSON.stringify(events), new RegExp(foreign.split('.')[2] as string));
  });

  it('audits every admin request its token let through as admin.action, naming who (the admin token’s subject, client and jti, request id, address) and what: also a subject revocation that matched no grant and a refused body, which left no event', async () => {
    const actions = async () => {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 });
    };
    const before = (await actions()).length;
    const token = await adminToken();
    const jti = decodeJwt(token).jti as string;
    const as = (body: unknown, requestId: string) =>
      fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': requestId },
        body: JSON.stringify(body),
      });
    // Subject entries are written (the subject's older tokens of other issuers fall), no grant matched.
    assert.equal((await as({ subject: 'nobody-here', reason: 'offboarded' }, 'adm-1')).status, 200);
    const t = await chain('iris');
    assert.equal((await as({ grant_id: t.grant(t.broker.access_token) }, 'adm-2')).status, 200);
    const victim = await cc('agent');
    assert.equal((await as({ token: victim }, 'adm-3')).status, 200);
    assert.equal((await as({ subject: 'iris', issuer: '' }, 'adm-4')).status, 400);
    const tree = await fetch(`${issuer.url}/oauth2/admin/grants/${t.grant(t.root)}`, {
      headers: { authorization: `Bearer ${token}`, 'x-request-id': 'adm-5' },
    });
    assert.equal(tree.status, 200);
    const events = (await actions()).slice(before);
    assert.deepEqual(
      events.map((e) => [e.request_id, e.decision, e.reason, e.subject, e.client_id, e.jti, e.remote_addr, e.detail]),
      [
        [
          'adm-1',
          'allow',
          'ok',
          'ops',
          'ops',
          jti,
          '127.0.0.1',
          { action: 'revoke', selector: 'subject', target: 'nobody-here', revoke_reason: 'offboarded', revoked: 0 },
        ],
        [
          'adm-2',
          'allow',
          'ok',
          'ops',
          'ops',
          jti,
          '127.0.0.1',
          { action: 'revoke', selector: 'grant_id', target: t.grant(t.broker.access_token), revoked: 3 },
        ],
        [
          'adm-3',
          'allow',
          'ok',
          'ops',
          'ops',
          jti,
          '127.0.0.1',
          { action: 'revoke', selector: 'token', target: decodeJwt(victim).jti, revoked: 1 },
        ],
        ['adm-4', 'deny', 'admin_revoke_member_invalid', 'ops', 'ops', jti, '127.0.0.1', { action: 'revoke' }],
        ['adm-5', 'allow', 'ok', 'ops', 'ops', jti, '127.0.0.1', { action: 'grant_tree', target: t.grant(t.root) }],
      ],
    );
    // The revoked token is named by its jti, never written.
    assert.doesNotMatch(JSON.stringify(events), new RegExp(victim.split('.')[2] as string));
    assert.doesNotMatch(JSON.stringify(events), new RegExp(token.split('.')[2] as string));
  });

  it('attack: an agent acting for an admin (an admin token from token exchange) is named in admin.action and admin.denied by its actor chain and delegation id, not recorded as the admin alone', async () => {
    c['ops-agent'] = await issuer.addClient({
      id: 'ops-agent',
      scopes: ['tessera:admin', 'api:read'],
      audiences: [issuer.url],
      grantTypes: [EXCHANGE],
    });
    const admin = await issuer.service.mint({ clientId: 'ops-agent', subject: 'root-admin', ttl: 600, audiences: [issuer.url] });
    const acting = async (scope: string) => {
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: admin.access_token, subject_token_type: AT, audience: issuer.url, scope },
        auth('ops-agent'),
      );
      assert.equal(res.status, 200);
      return ((await res.json()) as { access_token: string }).access_token;
    };
    const delegated = await acting('tessera:admin');
    const underScoped = await acting('api:read');
    const send = (token: string, requestId: string) =>
      fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': requestId },
        body: JSON.stringify({ subject: 'nobody-at-all' }),
      });
    assert.equal((await send(delegated, 'adm-act-1')).status, 200);
    assert.equal((await send(underScoped, 'adm-act-2')).status, 403);
    await issuer.service.audit.flush();
    for (const [requestId, kind, token] of [
      ['adm-act-1', 'admin.action', delegated],
      ['adm-act-2', 'admin.denied', underScoped],
    ] as const) {
      const [event] = await issuer.store.queryAudit({ request_id: requestId, kinds: [kind] });
      assert.deepEqual(
        [event?.subject, event?.client_id, event?.actor_chain, event?.delegation_id, event?.jti],
        ['root-admin', 'ops-agent', ['ops-agent'], decodeJwt(token).grant_id, decodeJwt(token).jti],
        kind,
      );
    }
  });

  it('attack: a person’s `*` token does not widen into the admin scope through token exchange or refresh by a client given the admin scope by name (the subject never held it)', async () => {
    c['ops-console'] = await issuer.addClient({
      id: 'ops-console',
      scopes: ['*', 'tessera:admin'],
      audiences: [issuer.url],
      grantTypes: ['client_credentials', 'refresh_token', EXCHANGE],
    });
    // What alice approved: `*`, which never covers the admin scope.
    const alice = await issuer.service.mint({
      clientId: 'ops-console',
      subject: 'alice-wild',
      scopes: ['*'],
      ttl: 600,
      audiences: [issuer.url],
    });
    const exchangeFor = (scope?: string) =>
      issuer.post(
        '/oauth2/token',
        {
          grant_type: EXCHANGE,
          subject_token: alice.access_token,
          subject_token_type: AT,
          audience: issuer.url,
          ...(scope ? { scope } : {}),
        },
        auth('ops-console'),
      );
    for (const scope of ['tessera:admin', '* tessera:admin']) {
      const res = await exchangeFor(scope);
      assert.equal(res.status, 400, scope);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope', scope);
    }
    // Her `*` exchanged as it is, then refreshed asking for the admin scope: still not granted.
    const wild = (await (await exchangeFor()).json()) as { access_token: string; refresh_token: string; scope: string };
    assert.equal(wild.scope, '*');
    const refreshed = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: wild.refresh_token, scope: 'tessera:admin' },
      auth('ops-console'),
    );
    assert.equal(refreshed.status, 400);
    assert.equal(((await refreshed.json()) as { error: string }).error, 'invalid_scope');
    assert.equal((await post({ grant_id: 'g_x' }, wild.access_token)).status, 403);
  });

  it('attack: CSRF: an admin token in a cookie, in an access_token query or form parameter, or as Basic credentials is no credential: only the Authorization header’s Bearer token is read (401, audited), nothing revoked', async () => {
    const victim = (await issuer.service.mint({ clientId: 'broker', subject: 'csrf-victim', ttl: 600, audiences: [API] })).access_token;
    const token = await adminToken();
    const denied = async () => {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: ['admin.denied'], limit: 10_000 });
    };
    const before = (await denied()).length;
    const url = `${issuer.url}/oauth2/admin/revoke`;
    const body = JSON.stringify({ subject: 'csrf-victim' });
    const attempts: [string, RequestInit, string][] = [
      ['cookie', { headers: { 'content-type': 'application/json', cookie: `access_token=${token}; token=${token}` }, body }, url],
      // A cross-site form can send text/plain or a form, never application/json without a preflight.
      ['text/plain form', { headers: { 'content-type': 'text/plain', cookie: `token=${token}` }, body }, url],
      [
        'form parameter',
        { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `access_token=${token}&subject=csrf-victim` },
        url,
      ],
      ['query parameter (RFC 6750 §2.3)', { headers: { 'content-type': 'application/json' }, body }, `${url}?access_token=${token}`],
      [
        'basic',
        { headers: { 'content-type': 'application/json', authorization: basic('ops', (c.ops as { secret: string }).secret) }, body },
        url,
      ],
    ];
    for (const [name, init, target] of attempts) {
      const res = await fetch(target, { method: 'POST', ...init });
      assert.equal(res.status, 401, name);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_token', name);
      // No CORS grant: a browser page of another origin may not read the answer either.
      assert.equal(res.headers.get('access-control-allow-origin'), null, name);
    }
    assert.deepEqual(
      (await denied()).slice(before).map((e) => e.reason),
      ['admin_token_missing', 'admin_token_missing', 'admin_token_missing', 'admin_token_missing', 'admin_token_invalid'],
    );
    assert.equal(await valid(victim), true);
  });

  it('attack: method confusion on the revocation route: GET, HEAD, OPTIONS, PUT and DELETE with a valid admin token are 405 (Allow: POST), audited as admin.action deny, and revoke nothing', async () => {
    const victim = (await issuer.service.mint({ clientId: 'broker', subject: 'method-victim', ttl: 600, audiences: [API] })).access_token;
    const token = await adminToken();
    const actions = async () => {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 });
    };
    const before = (await actions()).length;
    const methods = ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'];
    for (const method of methods) {
      const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(method === 'GET' || method === 'HEAD' ? {} : { body: JSON.stringify({ subject: 'method-victim' }) }),
      });
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.get('allow'), 'POST', method);
      assert.equal(res.headers.get('cache-control'), 'no-store', method);
      assert.equal(res.headers.get('access-control-allow-origin'), null, method);
    }
    assert.deepEqual(
      (await actions()).slice(before).map((e) => [e.decision, e.reason, e.client_id, e.detail]),
      methods.map(() => ['deny', 'request_method_not_allowed', 'ops', { action: 'revoke' }]),
    );
    assert.equal(await valid(victim), true);
  });

  it('attack: JSON body oddities: __proto__ and constructor members, a huge array, an object or a number as a value, a body that is no object, each refused with its code, nothing revoked', async () => {
    const victim = (await issuer.service.mint({ clientId: 'broker', subject: 'json-victim', ttl: 600, audiences: [API] })).access_token;
    const token = await adminToken();
    const send = (body: string) =>
      fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
      });
    const cases: [string, string][] = [
      [
        '{"__proto__":{"subject":"json-victim"}}',
        'The request body has 2 problems: $.__proto__: unknown member, remove it (the members are grant_id, subject, issuer, client_id, token, reason); $: names nothing to revoke, give exactly one of grant_id, subject, client_id and token.',
      ],
      [
        '{"subject":"json-victim","__proto__":{"issuer":"x"}}',
        'The request body has 1 problem: $.__proto__: unknown member, remove it (the members are grant_id, subject, issuer, client_id, token, reason).',
      ],
      [
        '{"constructor":{"prototype":{"subject":"json-victim"}}}',
        'The request body has 2 problems: $.constructor: unknown member, remove it (the members are grant_id, subject, issuer, client_id, token, reason); $: names nothing to revoke, give exactly one of grant_id, subject, client_id and token.',
      ],
      [
        `{"subject":[${'"json-victim",'.repeat(3000)}"x"]}`,
        'The request body has 1 problem: $.subject: expected the subject as a non-empty string, got an array.',
      ],
      [
        '{"subject":{"toString":"json-victim"}}',
        'The request body has 1 problem: $.subject: expected the subject as a non-empty string, got an object.',
      ],
      ['{"client_id":1e400}', 'The request body has 1 problem: $.client_id: expected the client id as a non-empty string, got a number.'],
      ['["json-victim"]', 'The request body has 1 problem: $: expected a JSON object, got an array.'],
      ['"json-victim"', 'The request body has 1 problem: $: expected a JSON object, got a string.'],
      ['null', 'The request body has 1 problem: $: expected a JSON object, got null.'],
      ['', 'The request body has 1 problem: $: the body is empty, send one JSON object.'],
    ];
    for (const [body, description] of cases) {
      const res = await send(body);
      assert.equal(res.status, 400, body.slice(0, 60));
      assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: description }, body.slice(0, 60));
    }
    // Nothing leaked into the prototype of every object.
    assert.equal(({} as Record<string, unknown>).subject, undefined);
    assert.equal(await valid(victim), true);
  });

  it('attack: a revocation body over the limit (declared or streamed) is 413 request_body_too_large, audited as admin.action deny, nothing revoked', async () => {
    const victim = (await issuer.service.mint({ clientId: 'broker', subject: 'big-victim', ttl: 600, audiences: [API] })).access_token;
    const token = await adminToken();
    const actions = async () => {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 });
    };
    const before = (await actions()).length;
    const big = JSON.stringify({ subject: 'big-victim', reason: 'x'.repeat(70_000) });
    const declared = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: big,
    });
    assert.equal(declared.status, 413);
    assert.equal(((await declared.json()) as { error: string }).error, 'invalid_request');
    // Without a Content-Length: counted as it arrives.
    const streamed = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(big));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    assert.equal(streamed.status, 413);
    assert.deepEqual(
      (await actions()).slice(before).map((e) => [e.decision, e.reason, e.client_id]),
      [
        ['deny', 'request_body_too_large', 'ops'],
        ['deny', 'request_body_too_large', 'ops'],
      ],
    );
    assert.equal(await valid(victim), true);
  });

  it('attack: a token pasted into an admin revocation’s subject is recorded as *, not written into admin.action', async () => {
    const token = await adminToken();
    const pasted = (await cc('agent')) as string;
    const before = (await issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 })).length;
    const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': 'adm-paste' },
      body: JSON.stringify({ subject: pasted, reason: 'oops' }),
    });
    assert.equal(res.status, 200);
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 })).slice(before);
    assert.deepEqual(
      events.map((e) => e.detail),
      [{ action: 'revoke', selector: 'subject', target: '*', revoke_reason: 'oops', revoked: 0 }],
    );
    assert.doesNotMatch(JSON.stringify(events), new RegExp(pasted.split('.')[2] as string));
  });

  it('attack: a token pasted into an admin revocation’s reason is refused (admin_revoke_reason_token), not stored with the grant as revoked_reason nor written into grant.revoked: nothing is revoked', async () => {
    const token = await adminToken();
    const pasted = (await cc('agent')) as string;
    const t = await chain('kurt');
    const grantId = t.grant(t.broker.access_token);
    await issuer.service.audit.flush();
    const before = (await issuer.store.queryAudit({ limit: 10_000 })).length;
    const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': 'adm-reason' },
      body: JSON.stringify({ grant_id: grantId, reason: `oops ${pasted}` }),
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), {
      error: 'invalid_request',
      error_description:
        'The request body has 1 problem: $.reason: holds a token, which would be stored with the grants and written into the audit trail, write the reason without it.',
    });
    assert.equal(await valid(t.broker.access_token), true);
    assert.equal((await issuer.store.getGrant(grantId))?.revokedReason, null);
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ limit: 10_000 })).slice(before);
    assert.deepEqual(
      events.filter((e) => e.kind === 'admin.action').map((e) => [e.decision, e.reason, e.detail]),
      [['deny', 'admin_revoke_reason_token', { action: 'revoke' }]],
    );
    assert.equal(events.filter((e) => e.kind === 'grant.revoked').length, 0);
    assert.doesNotMatch(JSON.stringify(events), new RegExp(pasted.split('.')[2] as string));
  });

  it('attack: the service refuses a revocation reason holding a token (every caller of revokeGrants), revoking nothing', async () => {
    const pasted = (await cc('agent')) as string;
    const t = await chain('lena');
    const grantId = t.grant(t.root);
    await assert.rejects(issuer.service.revokeGrants({ grantId }, `pasted ${pasted}`, 'test'), (e: Error) => {
      assert.equal((e as { code?: string }).code, 'admin_revoke_reason_token');
      assert.doesNotMatch(e.message, new RegExp(pasted.split('.')[2] as string));
      return true;
    });
    assert.equal(await valid(t.root), true);
    assert.equal((await issuer.store.getGrant(grantId))?.revokedReason, null);
  });

  it('refuses a URL query on every admin route (request_query_not_allowed, audited as admin.action deny) instead of ignoring it: ?issuer=… beside {"subject"} revoked the subject at every issuer', async () => {
    const kate = await issuer.service.mint({ clientId: 'broker', subject: 'kate', ttl: 3600, audiences: [API] });
    const t = await chain('kyle');
    const token = await adminToken();
    const before = (await issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 })).length;
    const revoke = await fetch(`${issuer.url}/oauth2/admin/revoke?issuer=https://idp.example`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': 'adm-q1' },
      body: JSON.stringify({ subject: 'kate' }),
    });
    assert.equal(revoke.status, 400);
    assert.equal(revoke.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await revoke.json(), {
      error: 'invalid_request',
      error_description: 'Parameters go in the request body; the endpoint URL takes no query.',
    });
    assert.equal(await valid(kate.access_token), true);
    for (const method of ['GET', 'HEAD']) {
      const tree = await fetch(`${issuer.url}/oauth2/admin/grants/${t.grant(t.root)}?depth=1`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'x-request-id': `adm-q-${method}` },
      });
      assert.equal(tree.status, 400, method);
    }
    // A bare '?' carries no query, as at the form endpoints.
    const bare = await fetch(`${issuer.url}/oauth2/admin/grants/${t.grant(t.root)}?`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(bare.status, 200);
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 })).slice(before);
    assert.deepEqual(
      events.filter((e) => e.request_id?.startsWith('adm-q')).map((e) => [e.request_id, e.decision, e.reason, e.detail]),
      [
        ['adm-q1', 'deny', 'request_query_not_allowed', { action: 'revoke' }],
        ['adm-q-GET', 'deny', 'request_query_not_allowed', { action: 'grant_tree' }],
        ['adm-q-HEAD', 'deny', 'request_query_not_allowed', { action: 'grant_tree' }],
      ],
    );
  });

  it('refuses a DPoP-bound admin token presented as a bearer token (RFC 9449 §7.1)', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const proof = await new SignJWT({
      htm: 'POST',
      htu: `${issuer.url}/oauth2/token`,
      iat: Math.floor(Date.now() / 1000),
      jti: randomUUID(),
    })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicKey.export({ format: 'jwk' }) as JWK })
      .sign(key.privateKey);
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: issuer.url },
      { ...auth('ops'), dpop: proof },
    );
    const bound = ((await res.json()) as { access_token: string }).access_token;
    assert.ok((decodeJwt(bound).cnf as { jkt?: string } | undefined)?.jkt);
    // Stolen without its key, the bound token must be worth nothing.
    const stolen = await post({ grant_id: 'g_x' }, bound);
    assert.equal(stolen.status, 401);
    assert.equal(((await stolen.json()) as { error: string }).error, 'invalid_token');
    const tree = await fetch(`${issuer.url}/oauth2/admin/grants/g_x`, { headers: { authorization: `Bearer ${bound}` } });
    assert.equal(tree.status, 401);
  });

  it('revokes a grant subtree and shows a grant tree for an admin', async () => {
    const t = await chain('erin');
    const token = await adminToken();
    const tree = await fetch(`${issuer.url}/oauth2/admin/grants/${t.grant(t.broker.access_token)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(tree.status, 200);
    const body = (await tree.json()) as { ancestors: { id: string }[]; subtree: { id: string }[] };
    assert.deepEqual(
      body.ancestors.map((g) => g.id),
      [t.grant(t.root)],
    );
    assert.equal(body.subtree.length, 3);
    const res = await post({ grant_id: t.grant(t.broker.access_token), reason: 'admin test' }, token);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { revoked_grants: string[] }).revoked_grants.length, 3);
    assert.equal(await valid(t.sub.access_token), false);
    assert.equal(await valid(t.root), true);
  });

  it('refuses an ambiguous or empty revocation request', async () => {
    const token = await adminToken();
    assert.equal((await post({}, token)).status, 400);
    assert.equal((await post({ grant_id: 'a', subject: 'b' }, token)).status, 400);
  });

  it('refuses a revocation body whose issuer is empty, not a string, misspelt or given without subject, with a code naming the fault: no one is revoked (an ignored issuer revoked the subject at every issuer)', async () => {
    const ivan = await issuer.service.mint({ clientId: 'broker', subject: 'ivan', ttl: 3600, audiences: [API] });
    const token = await adminToken();
    const cases: [unknown, string, string][] = [
      // An unset "$IDP" in a script: read as no issuer, it revoked ivan at every issuer, this one too.
      [
        { subject: 'ivan', issuer: '' },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.issuer: expected the issuer URL as a non-empty string, got an empty string, or leave issuer out to revoke the subject at every issuer.',
      ],
      [
        { subject: 'ivan', issuer: 5 },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.issuer: expected the issuer URL as a non-empty string, got a number, or leave issuer out to revoke the subject at every issuer.',
      ],
      [
        { subject: 'ivan', issuer: null },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.issuer: expected the issuer URL as a non-empty string, got null, or leave issuer out to revoke the subject at every issuer.',
      ],
      [
        { grant_id: ivan.grant_id, reason: 7 },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.reason: expected a short reason as a non-empty string, got a number.',
      ],
      // A typo of `issuer`: ignored, it too widened the revocation to every issuer.
      [
        { subject: 'ivan', isuer: 'https://idp.example' },
        'admin_revoke_member_unknown',
        'The request body has 1 problem: $.isuer: unknown member, did you mean issuer?.',
      ],
      [
        { grant_id: ivan.grant_id, issuer: 'https://idp.example' },
        'admin_revoke_issuer_without_subject',
        'The request body has 1 problem: $.issuer: given without subject, add subject or remove issuer.',
      ],
      // A control character or a lone surrogate names no grant, subject or client (PostgreSQL stores no NUL at all).
      [
        { subject: 'ivan\u0000' },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.subject: holds a control character or a lone surrogate, which names nothing here, remove it.',
      ],
      [
        { subject: 'iv\nan' },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.subject: holds a control character or a lone surrogate, which names nothing here, remove it.',
      ],
      [
        { client_id: '\ud800' },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.client_id: holds a control character or a lone surrogate, which names nothing here, remove it.',
      ],
      [
        { grant_id: 5 },
        'admin_revoke_member_invalid',
        'The request body has 1 problem: $.grant_id: expected the grant id as a non-empty string, got a number.',
      ],
      [
        { reason: 'x' },
        'admin_revoke_selector_invalid',
        'The request body has 1 problem: $: names nothing to revoke, give exactly one of grant_id, subject, client_id and token.',
      ],
    ];
    for (const [body, code, description] of cases) {
      const res = await post(body, token);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: description }, `${JSON.stringify(body)}: ${code}`);
    }
    assert.equal(await valid(ivan.access_token), true);
  });

  it('names every problem of a revocation body at once, each by its JSON path with what to write instead (a wrong type, a misspelt member, an unknown one, no selector), audits one admin.action with the first problem’s code, and repeats no value, nor a member name shaped like a token', async () => {
    const jane = (await issuer.service.mint({ clientId: 'broker', subject: 'jane', ttl: 3600, audiences: [API] })).access_token;
    const token = await adminToken();
    const pasted = await cc('agent');
    const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': 'adm-problems' },
      body: JSON.stringify({ subjet: 'jane', scopes: ['admin'], issuer: 5, [pasted]: 'x', reason: pasted.slice(0, 20) }),
    });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = (await res.json()) as Record<string, string>;
    assert.deepEqual(Object.keys(body), ['error', 'error_description']);
    assert.equal(body.error, 'invalid_request');
    assert.equal(
      body.error_description,
      'The request body has 6 problems: ' +
        '$.subjet: unknown member, did you mean subject?; ' +
        '$.scopes: unknown member, remove it (the members are grant_id, subject, issuer, client_id, token, reason); ' +
        '$.issuer: expected the issuer URL as a non-empty string, got a number, or leave issuer out to revoke the subject at every issuer; ' +
        `$[a member name of ${pasted.length} characters, not shown]: unknown member, remove it (the members are grant_id, subject, issuer, client_id, token, reason); ` +
        '$: names nothing to revoke, give exactly one of grant_id, subject, client_id and token; ' +
        '$.issuer: given without subject, add subject or remove issuer.',
    );
    // RFC 6749 §5.2: printable ASCII without '"' and '\'.
    assert.match(body.error_description as string, /^[\x20\x21\x23-\x5B\x5D-\x7E]+$/);
    assert.doesNotMatch(body.error_description as string, new RegExp(pasted.split('.')[2] as string));
    await issuer.service.audit.flush();
    const events = await issuer.store.queryAudit({ request_id: 'adm-problems', limit: 10 });
    assert.deepEqual(
      events.map((e) => [e.kind, e.decision, e.reason]),
      [['admin.action', 'deny', 'admin_revoke_member_unknown']],
    );
    assert.doesNotMatch(JSON.stringify(events), new RegExp(pasted.split('.')[2] as string));
    assert.equal(await valid(jane), true);
  });

  it('lists at most ten problems of a body of thousands of unknown members, and how many more', async () => {
    const members = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`m${i}`, 'x']));
    const res = await post({ grant_id: 'g_x', ...members }, await adminToken());
    assert.equal(res.status, 400);
    const { error_description: d } = (await res.json()) as { error_description: string };
    assert.match(d, /^The request body has 3000 problems: \$\.m0: unknown member, .*; \$\.m9: unknown member, [^;]*; and 2990 more\.$/);
    assert.ok(d.length < 2000, String(d.length));
  });

  it('refuses a revocation body sent as a form with 400 naming application/json, the type it reads (not x-www-form-urlencoded)', async () => {
    const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${await adminToken()}` },
      body: 'grant_id=g_x',
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'The request body must be application/json.' });
  });

  it('answers 404 admin_not_found for a revocation of an unknown grant (a typo read as done, as `tessera revoke --grant` refuses it)', async () => {
    const res = await post({ grant_id: 'g_00000000-0000-7000-8000-000000000000' }, await adminToken());
    assert.equal(res.status, 404);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'No such resource.' });
  });

  it('attack: {"token"} naming no token it can revoke (a mistyped or expired access or refresh token) is 404 admin_not_found, audited, not 200 read as done while the token lives on (as `tessera revoke --token` refuses it)', async () => {
    const root = (await issuer.service.mint({ clientId: 'broker', subject: 'henry', ttl: 3600, audiences: [API, 'agent'] })).access_token;
    const leaked = await exchange('broker', root, [API]);
    const token = await adminToken();
    const expired = (await issuer.service.mint({ clientId: 'broker', subject: 'henry', ttl: 1, audiences: [API] })).access_token;
    // A refresh token of the live grant, expired (as one past refresh_token_ttl is).
    const expiredRefresh = `trt_${randomBytes(32).toString('base64url')}`;
    const now = Math.floor(Date.now() / 1000);
    await issuer.store.createRefreshToken({
      hash: sha256(expiredRefresh),
      grantId: decodeJwt(leaked.access_token).grant_id as string,
      clientId: 'broker',
      createdAt: now - 100,
      expiresAt: now - 1,
      rotatedAt: null,
      revokedAt: null,
    });
    await new Promise((resolve) => setTimeout(resolve, 2100));
    for (const [i, [what, value]] of (
      [
        ['a mistyped refresh token', `${leaked.refresh_token.slice(0, -2)}xx`],
        ['an expired refresh token', expiredRefresh],
        ['a mistyped access token', `${leaked.access_token.slice(0, -2)}xx`],
        ['an expired access token', expired],
      ] as const
    ).entries()) {
      const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': `adm-token-${i}` },
        body: JSON.stringify({ token: value }),
      });
      assert.equal(res.status, 404, what);
      assert.equal(res.headers.get('cache-control'), 'no-store', what);
      assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'No such resource.' }, what);
      await issuer.service.audit.flush();
      const events = await issuer.store.queryAudit({ request_id: `adm-token-${i}`, limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.decision, e.reason]),
        [['admin.action', 'deny', 'admin_not_found']],
        what,
      );
    }
    // Nothing was revoked: the refresh token still refreshes.
    const refreshed = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: leaked.refresh_token },
      auth('broker'),
    );
    assert.equal(refreshed.status, 200);
  });

  it('attack: a leaked refresh token sent as {"token"} revokes its grant (the rotation family) with its subtree, as RFC 7009 would for its client: 200 {"revoked_grants"}, then invalid_grant at /oauth2/token and its access tokens refused by the verifier; audited as admin.action naming the grant, never the token', async () => {
    const { broker, agent, sub, grant } = await chain('ivan');
    const family = grant(agent.access_token);
    const token = await adminToken();
    const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': 'adm-refresh-1' },
      body: JSON.stringify({ token: agent.refresh_token, reason: 'leaked in a ticket' }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = (await res.json()) as { revoked_grants: string[] };
    assert.deepEqual(Object.keys(body), ['revoked_grants']);
    assert.deepEqual([...body.revoked_grants].sort(), [family, grant(sub.access_token)].sort());
    const refreshed = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: agent.refresh_token },
      auth('agent'),
    );
    assert.equal(refreshed.status, 400);
    assert.equal(((await refreshed.json()) as { error: string }).error, 'invalid_grant');
    for (const t of [agent.access_token, sub.access_token]) {
      const r = await verifier.verify(bearer(t));
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.error.code, 'token_revoked');
    }
    // The grant it was exchanged from is not its family: untouched.
    assert.equal(await valid(broker.access_token), true);
    await issuer.service.audit.flush();
    const events = await issuer.store.queryAudit({ request_id: 'adm-refresh-1', limit: 10 });
    const action = events.find((e) => e.kind === 'admin.action');
    assert.equal(action?.decision, 'allow');
    assert.equal(action?.reason, 'ok');
    assert.deepEqual(action?.detail, {
      action: 'revoke',
      selector: 'token',
      token_type: 'refresh_token',
      target: family,
      revoke_reason: 'leaked in a ticket',
      revoked: 2,
    });
    const all = await issuer.store.queryAudit({ limit: 10_000 });
    const revokedFamily = all.find((e) => e.kind === 'grant.revoked' && e.delegation_id === family);
    assert.equal(revokedFamily?.reason, 'leaked in a ticket');
    assert.deepEqual(
      all.filter((e) => e.kind === 'token.revoked' && e.delegation_id === family).map((e) => [e.reason, e.client_id, e.detail]),
      [['leaked in a ticket', 'agent', { by: 'admin:ops', revoked_grants: body.revoked_grants }]],
    );
    const text = JSON.stringify(all);
    assert.equal(text.includes(agent.refresh_token), false, 'the refresh token is in the audit trail');
    assert.equal(text.includes(agent.refresh_token.slice(4)), false, 'the refresh token is in the audit trail');

    // Again: its grant was revoked before, answered as {"grant_id"} of a revoked grant is.
    const again = await post({ token: agent.refresh_token }, token);
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { revoked_grants: [] });
  });

  it('attack: a refresh token rotated since it leaked, sent as {"token"}, revokes the family its successor holds', async () => {
    const { agent, sub, grant } = await chain('judy');
    const rotated = await issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: agent.refresh_token }, auth('agent'));
    assert.equal(rotated.status, 200);
    const next = (await rotated.json()) as { access_token: string; refresh_token: string };
    const res = await post({ token: agent.refresh_token }, await adminToken());
    assert.equal(res.status, 200);
    assert.deepEqual(
      [...((await res.json()) as { revoked_grants: string[] }).revoked_grants].sort(),
      [grant(agent.access_token), grant(sub.access_token)].sort(),
    );
    const refreshed = await issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: next.refresh_token }, auth('agent'));
    assert.equal(refreshed.status, 400);
    assert.equal(((await refreshed.json()) as { error: string }).error, 'invalid_grant');
    assert.equal(await valid(next.access_token), false);
  });

  it('refuses a revocation body that names a member twice ({"subject":"frank","subject":"gina"}): no one is revoked', async () => {
    // JSON.parse reads the last subject; a proxy or log that read the body may have read the first.
    const frank = (await issuer.service.mint({ clientId: 'broker', subject: 'frank', ttl: 3600, audiences: [API] })).access_token;
    const gina = (await issuer.service.mint({ clientId: 'broker', subject: 'gina', ttl: 3600, audiences: [API] })).access_token;
    const token = await adminToken();
    for (const [body, path] of [
      ['{"subject":"frank","subject":"gina"}', '$.subject'],
      ['{"subject":"gina","reason":"a","reason":"b"}', '$.reason'],
      ['{"subject":"gina","reason":"a","re\\u0061son":"b"}', '$.reason'],
    ]) {
      const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
      });
      assert.equal(res.status, 400, body);
      assert.deepEqual(await res.json(), {
        error: 'invalid_request',
        error_description: `The request body has 1 problem: ${path}: named more than once, write each member once.`,
      });
    }
    assert.equal(await valid(frank), true);
    assert.equal(await valid(gina), true);
  });

  it('refuses a revocation body nested 30,000 arrays deep as malformed, not as a repeated member: no one is revoked', async () => {
    const hana = (await issuer.service.mint({ clientId: 'broker', subject: 'hana', ttl: 3600, audiences: [API] })).access_token;
    const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await adminToken()}` },
      body: `{"subject":"hana","x":${'['.repeat(30_000)}${']'.repeat(30_000)}}`,
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), {
      error: 'invalid_request',
      error_description: 'The request body has 1 problem: $: objects and arrays are nested too deeply to check for repeated member names.',
    });
    assert.equal(await valid(hana), true);
  });

  it('answers 405 with Allow: GET, HEAD for another method on the grant tree', async () => {
    for (const method of ['DELETE', 'POST', 'OPTIONS']) {
      const res = await fetch(`${issuer.url}/oauth2/admin/grants/g_unknown`, {
        method,
        headers: { authorization: `Bearer ${await adminToken()}` },
      });
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'This endpoint accepts GET and HEAD only.' });
    }
  });

  it('answers HEAD on the grant tree as GET without the body (RFC 9110 §9.3.2), not 405', async () => {
    const t = await chain('hugo');
    const token = await adminToken();
    const url = `${issuer.url}/oauth2/admin/grants/${t.grant(t.broker.access_token)}`;
    const get = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    const head = await fetch(url, { method: 'HEAD', headers: { authorization: `Bearer ${token}` } });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), get.headers.get('content-length'));
    assert.equal(head.headers.get('cache-control'), 'no-store');
    assert.equal(await head.text(), '');
    assert.equal(
      (await fetch(`${issuer.url}/oauth2/admin/grants/g_unknown`, { method: 'HEAD', headers: { authorization: `Bearer ${token}` } }))
        .status,
      404,
    );
  });

  it('caps the grant tree it answers at 10,000 grants of the subtree, the first in tree order, marked truncated (a tree of any size was read and serialized whole)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const grant = (id: string, parentId: string | null, createdAt: number) => ({
      id,
      parentId,
      kind: 'token_exchange' as const,
      issuer: issuer.url,
      subject: 'wide',
      clientId: 'agent',
      act: null,
      scopes: ['api:read'],
      audiences: [API],
      createdAt,
      expiresAt: now + 3600,
    });
    const root = `g_wide-${randomUUID()}`;
    assert.equal(typeof (await issuer.store.createGrant(grant(root, null, now), now)), 'object');
    const children: string[] = [];
    for (let i = 0; i < GRANT_TREE_MAX_NODES + 5; i++) {
      const id = `g_wide-${String(i).padStart(6, '0')}-${randomUUID()}`;
      children.push(id);
      assert.equal(typeof (await issuer.store.createGrant(grant(id, root, now), now)), 'object');
    }
    const token = await adminToken();
    const res = await fetch(`${issuer.url}/oauth2/admin/grants/${root}`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { ancestors: unknown[]; subtree: { id: string }[]; truncated: boolean };
    assert.equal(GRANT_TREE_MAX_NODES, 10_000);
    assert.equal(body.truncated, true);
    assert.deepEqual(
      body.subtree.map((g) => g.id),
      [root, ...children.slice(0, GRANT_TREE_MAX_NODES - 1)],
    );
    // Under the cap: the whole tree, truncated false.
    const small = await fetch(`${issuer.url}/oauth2/admin/grants/${children[0]}`, { headers: { authorization: `Bearer ${token}` } });
    const smallBody = (await small.json()) as { ancestors: { id: string }[]; subtree: { id: string }[]; truncated: boolean };
    assert.deepEqual(
      [smallBody.ancestors.map((g) => g.id), smallBody.subtree.map((g) => g.id), smallBody.truncated],
      [[root], [children[0]], false],
    );
  });

  it('answers 404 for an unknown grant', async () => {
    const res = await fetch(`${issuer.url}/oauth2/admin/grants/g_unknown`, { headers: { authorization: `Bearer ${await adminToken()}` } });
    assert.equal(res.status, 404);
  });
});

describe('attack: tokens signed with this service’s own key whose identifier claims are empty', () => {
  // Only a holder of the signing key could make one (the service never issues it). Each is
  // refused as no token of this service: "" names no subject, client, token or grant.
  const EMPTIED = ['sub', 'client_id', 'jti', 'grant_id'];
  const resigned = (token: string, over: Record<string, unknown>) => {
    const signer = issuer.service.keys.signer();
    assert.ok(signer);
    return signer.sign(JSON.stringify({ ...decodeJwt(token), ...over }));
  };
  const events = async (kind: AuditKind) => {
    await issuer.service.audit.flush();
    return issuer.store.queryAudit({ kinds: [kind], limit: 10_000 });
  };

  it('revoking one (RFC 7009) answers 200, revokes nothing and is audited as revocation.denied inactive', async () => {
    const real = await cc('agent');
    const revokedBefore = (await events('token.revoked')).length;
    const deniedBefore = (await events('revocation.denied')).length;
    for (const claim of EMPTIED) {
      const res = await issuer.post('/oauth2/revoke', { token: resigned(real, { [claim]: '' }) }, auth('agent'));
      assert.equal(res.status, 200, claim);
    }
    assert.equal((await events('token.revoked')).length, revokedBefore, 'nothing revoked');
    const denied = (await events('revocation.denied')).slice(deniedBefore);
    assert.deepEqual(
      denied.map((e) => e.reason),
      EMPTIED.map(() => 'inactive'),
    );
    assert.equal(await valid(real), true, 'the real token is untouched');
  });

  it('the admin API refuses one as an admin token: 401 invalid_token, audited as admin.denied admin_token_invalid', async () => {
    const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: issuer.url }, auth('ops'));
    const real = ((await res.json()) as { access_token: string }).access_token;
    const deniedBefore = (await events('admin.denied')).length;
    for (const token of [real, ...EMPTIED.map((claim) => resigned(real, { [claim]: '' }))]) {
      const res = await fetch(`${issuer.url}/oauth2/admin/grants/g_unknown`, { headers: { authorization: `Bearer ${token}` } });
      // The real token reaches the API (an unknown grant: 404); each emptied one is refused.
      if (token === real) assert.equal(res.status, 404);
      else {
        assert.equal(res.status, 401);
        assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"');
      }
    }
    const denied = (await events('admin.denied')).slice(deniedBefore);
    assert.deepEqual(
      denied.map((e) => e.reason),
      EMPTIED.map(() => 'admin_token_invalid'),
    );
  });
});

describe('admin API: the store decides, not the last sync', () => {
  // A long sync interval: what another process (the CLI, another instance) wrote is not yet read.
  let slow: RunningIssuer;
  before(async () => {
    slow = await startIssuer({ config: { token_service: { sync_interval: '60s' } } as never });
  });
  after(() => slow?.close());

  const adminToken = async (id: string) => {
    const ops = await slow.addClient({ id, scopes: ['tessera:admin'], audiences: [slow.url] });
    const res = await slow.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: slow.url },
      { authorization: basic(ops.id, ops.secret) },
    );
    return ((await res.json()) as { access_token: string }).access_token;
  };
  const tree = (token: string, requestId: string) =>
    fetch(`${slow.url}/oauth2/admin/grants/${decodeJwt(token).grant_id as string}`, {
      headers: { authorization: `Bearer ${token}`, 'x-request-id': requestId },
    });
  const other = async (work: (cli: SqliteStore, now: number) => Promise<unknown>) => {
    const cli = SqliteStore.open({ path: join(slow.dir, 'tessera.db') });
    try {
      await work(cli, Math.floor(Date.now() / 1000));
    } finally {
      await cli.close();
    }
  };

  for (const [attack, write] of [
    [
      'its token revoked by jti (tessera revoke --token)',
      (cli: SqliteStore, now: number, token: string) =>
        cli.appendRevocations([{ kind: 'token', value: decodeJwt(token).jti as string, issuer: null, at: now, expiresAt: now + 3600 }]),
    ],
    [
      'its grant revoked (tessera revoke --grant, --subject, --client)',
      (cli: SqliteStore, now: number, token: string) =>
        cli.revokeGrants({ grantId: decodeJwt(token).grant_id as string }, { at: now, reason: 'cli', entryExpiresAt: now + 3600 }),
    ],
    [
      'its client disabled (tessera clients disable, before its grants are revoked)',
      (cli: SqliteStore, now: number, token: string) => cli.updateClient(decodeJwt(token).client_id as string, { disabled: true }, now),
    ],
    ['its client removed', (cli: SqliteStore, _now: number, token: string) => cli.deleteClient(decodeJwt(token).client_id as string)],
  ] as const) {
    it(`attack: an admin token with ${attack} by another process is refused at once (401 admin_token_invalid, admin.denied), not until this instance's next sync`, async () => {
      const id = `ops-${randomUUID().slice(0, 8)}`;
      const token = await adminToken(id);
      assert.equal((await tree(token, `${id}-before`)).status, 200);
      await other((cli, now) => write(cli, now, token));
      const res = await tree(token, `${id}-after`);
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"');
      assert.deepEqual(await res.json(), { error: 'invalid_token', error_description: 'The admin access token is invalid.' });
      await slow.service.audit.flush();
      const events = await slow.store.queryAudit({ request_id: `${id}-after`, limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.reason, e.client_id]),
        [['admin.denied', 'admin_token_invalid', id]],
      );
    });
  }
});

describe('attack: an external issuer’s token carrying the jti or grant_id of one of this service’s revoked tokens', () => {
  it('revoking this service’s token (by jti, then its grant) refuses only that issuer’s token: the gateway’s verifier still accepts the identity provider’s token with the same jti and grant_id, and refuses this service’s', async () => {
    const { createVerifier } = await import('../../src/verifier.ts');
    const { makeKey, sign, claims } = await import('../helpers/tokens.ts');
    const idp = makeKey('ES256', 'idp-jti');
    const IDP = 'https://idp.jti.test';
    const gateway = createVerifier(
      {
        issuers: [
          { issuer: issuer.service.issuer, audiences: [API], jwks_uri: `${issuer.url}/.well-known/jwks.json`, token_type: 'at+jwt' },
          { issuer: IDP, audiences: [API], algorithms: ['ES256'], jwks: { keys: [idp.jwk] } },
        ],
        dpop: { mode: 'disabled' },
      },
      { keySources: { [issuer.service.issuer]: issuer.service.keys }, revocation: issuer.service.revocations },
    );
    const own = await cc('other');
    const { jti, grant_id } = decodeJwt(own) as { jti: string; grant_id: string };
    const external = await sign(idp, claims({ iss: IDP, aud: API, sub: 'bob', jti, grant_id }));
    assert.equal((await gateway.verify(bearer(external))).ok, true);
    assert.ok(await issuer.service.revokeAccessToken(own, 'test'));
    const refused = await gateway.verify(bearer(own));
    assert.equal(refused.ok ? 'accepted' : refused.error.code, 'token_revoked');
    const ext = await gateway.verify(bearer(external));
    assert.equal(ext.ok, true, ext.ok ? '' : `IdP token refused by this service's jti revocation: ${ext.error.code}`);
    await issuer.service.revokeGrants({ grantId: grant_id }, 'test');
    const ext2 = await gateway.verify(bearer(external));
    assert.equal(ext2.ok, true, ext2.ok ? '' : `IdP token refused by this service's grant revocation: ${ext2.error.code}`);
  });
});
