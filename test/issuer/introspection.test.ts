/**
 * RFC 7662 introspection: claims (with the act chain and grant id) for an active token the caller
 * may know about; `{"active":false}` and nothing else for anything invalid, revoked, expired,
 * unknown or someone else's.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { createTokenServiceFromConfig } from '../../src/server/bootstrap.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
let now = 1_900_000_000;
let issuer: RunningIssuer;
const c: Record<string, { id: string; secret: string }> = {};

before(async () => {
  issuer = await startIssuer({ clock: () => now * 1000 });
  const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
  c.agent = await issuer.addClient({ id: 'agent', scopes: ['api:read'], audiences: ['https://api.test'], grantTypes });
  c.api = await issuer.addClient({ id: 'api', scopes: [], audiences: ['https://api.test'] });
  c.stranger = await issuer.addClient({ id: 'stranger', scopes: [], audiences: ['https://elsewhere.test'] });
});
after(() => issuer?.close());

const introspect = async (token: string, as = 'api') => {
  const cl = c[as] as { id: string; secret: string };
  const res = await issuer.post('/oauth2/introspect', { token }, { authorization: basic(cl.id, cl.secret) });
  assert.equal(res.headers.get('cache-control'), 'no-store');
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};

async function delegated(): Promise<{ access_token: string; refresh_token: string }> {
  const subject = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 3600 });
  const res = await issuer.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
    { authorization: basic(c.agent?.id as string, c.agent?.secret as string) },
  );
  return (await res.json()) as { access_token: string; refresh_token: string };
}

describe('active tokens', () => {
  it('returns the claims, the act chain and the grant id to a resource server of the audience', async () => {
    const t = await delegated();
    const { status, body } = await introspect(t.access_token);
    assert.equal(status, 200);
    assert.equal(body.active, true);
    assert.equal(body.sub, 'alice');
    assert.equal(body.client_id, 'agent');
    assert.equal(body.scope, 'api:read');
    assert.equal(body.iss, issuer.url);
    assert.equal(body.aud, 'https://api.test');
    assert.deepEqual(body.act, { sub: 'agent' });
    assert.match(body.grant_id as string, /^g_/);
    assert.equal(body.token_type, 'Bearer');
  });

  it('answers the owning client about its refresh token', async () => {
    const t = await delegated();
    const { body } = await introspect(t.refresh_token, 'agent');
    assert.equal(body.active, true);
    assert.equal(body.token_type, 'refresh_token');
    assert.equal(body.sub, 'alice');
  });
});

describe('inactive: {"active":false} and nothing else', () => {
  const inactive = async (token: string, as = 'api') => {
    const { status, body } = await introspect(token, as);
    assert.equal(status, 200);
    assert.deepEqual(body, { active: false });
  };

  it('for garbage and unknown tokens', async () => {
    await inactive('garbage');
    await inactive('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.');
    await inactive('trt_unknown');
  });

  it('for a token with a tampered payload', async () => {
    const t = await delegated();
    const [h, , s] = t.access_token.split('.');
    const forged = Buffer.from(JSON.stringify({ iss: issuer.url, sub: 'admin', client_id: 'agent' })).toString('base64url');
    await inactive(`${h}.${forged}.${s}`);
  });

  it('for a revoked token and a revoked grant', async () => {
    const t = await delegated();
    await issuer.post('/oauth2/revoke', { token: t.access_token }, { authorization: basic('agent', c.agent?.secret as string) });
    await inactive(t.access_token);
    const u = await delegated();
    await issuer.service.revokeGrants({ subject: 'alice' }, 'test');
    await inactive(u.access_token);
    await inactive(u.refresh_token, 'agent');
  });

  it('for an expired token', async () => {
    const t = await delegated();
    now += 601;
    try {
      await inactive(t.access_token);
    } finally {
      now -= 601;
    }
  });

  it('for a client that is neither the token’s client nor of its audience', async () => {
    const t = await delegated();
    await inactive(t.access_token, 'stranger');
  });

  it('for another client’s refresh token, and a rotated one', async () => {
    const t = await delegated();
    await inactive(t.refresh_token, 'api');
    await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: t.refresh_token },
      {
        authorization: basic('agent', c.agent?.secret as string),
      },
    );
    await inactive(t.refresh_token, 'agent');
  });
});

describe('attack: a token signed with this service’s own key whose identifier claims are empty', () => {
  it('is {"active":false} for an empty sub, client_id, jti or grant_id: "" names no subject, client, token or grant (nothing could revoke it by id)', async () => {
    // What only a holder of the signing key could make: the service itself never issues one.
    const real = decodeJwt((await delegated()).access_token);
    const signer = issuer.service.keys.signer(now);
    assert.ok(signer);
    // The same claims re-signed are active: the refusals below are the empty claim's alone.
    assert.equal((await introspect(signer.sign(JSON.stringify(real)))).body.active, true);
    for (const claim of ['sub', 'client_id', 'jti', 'grant_id']) {
      const { status, body } = await introspect(signer.sign(JSON.stringify({ ...real, [claim]: '' })));
      assert.equal(status, 200, claim);
      assert.deepEqual(body, { active: false }, claim);
    }
  });
});

describe('revoked by another process (the CLI, a second instance on the same store)', () => {
  it('a token revoked through a second store on the same file (`tessera revoke --token`) is inactive at once, not after the next sync', async () => {
    // The in-memory revocation list syncs every minute here: only the store can tell.
    const slow = await startIssuer({ clock: () => now * 1000, config: { token_service: { sync_interval: '60s' } } });
    try {
      const agent = await slow.addClient({ id: 'agent', scopes: ['api:read'], audiences: ['https://api.test'] });
      const api = await slow.addClient({ id: 'api', scopes: [], audiences: ['https://api.test'] });
      const token = (await slow.service.mint({ clientId: agent.id, subject: 'alice', ttl: 3600 })).access_token;
      const ask = async () => {
        const res = await slow.post('/oauth2/introspect', { token }, { authorization: basic(api.id, api.secret) });
        assert.equal(res.status, 200);
        return (await res.json()) as Record<string, unknown>;
      };
      assert.equal((await ask()).active, true);
      // The CLI's way: its own store on the same file, its own token service.
      const store = SqliteStore.open({ path: join(slow.dir, 'tessera.db') });
      const cli = createTokenServiceFromConfig(slow.config, { store, master: slow.master, clock: () => now * 1000 });
      try {
        await cli.start({ background: false });
        assert.ok(await cli.revokeAccessToken(token, 'cli'));
      } finally {
        await cli.close();
        await store.close();
      }
      assert.deepEqual(await ask(), { active: false });
    } finally {
      await slow.close();
    }
  });
});

describe('attack: a live token whose grant the store does not hold', () => {
  it('is inactive, as the admin API refuses it: a grant deleted from the database (by hand, or a restore from an older backup) leaves nothing that could revoke the token', async () => {
    const token = (await issuer.service.mint({ clientId: 'agent', subject: 'mallory', ttl: 3600 })).access_token;
    assert.equal((await introspect(token)).body.active, true);
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(join(issuer.dir, 'tessera.db'));
    try {
      db.exec('PRAGMA foreign_keys = OFF');
      const gone = db.prepare('DELETE FROM grants WHERE id = ?').run(decodeJwt(token).grant_id as string);
      assert.equal(gone.changes, 1);
    } finally {
      db.close();
    }
    assert.deepEqual(await introspect(token), { status: 200, body: { active: false } });
  });
});

describe('errors', () => {
  it('requires client authentication', async () => {
    const res = await issuer.post('/oauth2/introspect', { token: 'x' });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  });

  it('requires the token parameter', async () => {
    const res = await issuer.post('/oauth2/introspect', {}, { authorization: basic('api', c.api?.secret as string) });
    assert.equal(res.status, 400);
  });
});

describe('refusals reach the audit trail', () => {
  const denials = async () => {
    await issuer.service.audit.flush();
    return issuer.store.queryAudit({ kinds: ['introspection.denied'], limit: 10_000 });
  };

  it('audits a guessed client secret (secret scanning of the introspection endpoint) as introspection.denied invalid_client, without the secret or the token', async () => {
    const before = (await denials()).length;
    const res = await issuer.post(
      '/oauth2/introspect',
      { token: 'probe-token-value' },
      { authorization: basic('api', 'guessed-secret-value') },
    );
    assert.equal(res.status, 401);
    const events = await denials();
    assert.equal(events.length, before + 1);
    const e = events.at(-1);
    assert.equal(e?.decision, 'deny');
    assert.equal(e?.reason, 'client_secret_mismatch');
    const text = JSON.stringify(e);
    assert.doesNotMatch(text, /guessed-secret-value|probe-token-value/);
  });

  it('audits a missing token parameter with the authenticated client', async () => {
    const res = await issuer.post(
      '/oauth2/introspect',
      {},
      { authorization: basic('api', c.api?.secret as string), 'x-request-id': 'req-introspect-1' },
    );
    assert.equal(res.status, 400);
    const e = (await denials()).at(-1);
    assert.equal(e?.reason, 'request_parameter_missing');
    assert.equal(e?.client_id, 'api');
  });
});

describe('token_type_hint (RFC 7662 §2.1: a hint the server may ignore)', () => {
  it('a wrong hint (refresh_token for an access token, access_token for a refresh token) or an unknown one still finds the token', async () => {
    const t = await delegated();
    const api = c.api as { id: string; secret: string };
    const agent = c.agent as { id: string; secret: string };
    for (const [token, as, hint] of [
      [t.access_token, api, 'refresh_token'],
      [t.access_token, api, 'no_such_type'],
      [t.refresh_token, agent, 'access_token'],
      [t.refresh_token, agent, 'no_such_type'],
    ] as const) {
      const res = await issuer.post('/oauth2/introspect', { token, token_type_hint: hint }, { authorization: basic(as.id, as.secret) });
      assert.equal(res.status, 200, hint);
      assert.equal(
        ((await res.json()) as { active: boolean }).active,
        true,
        `${hint} for ${token === t.access_token ? 'an access' : 'a refresh'} token`,
      );
    }
  });
});
