/**
 * Refresh tokens: opaque, stored hashed, rotated on every use; a rotated one presented again
 * revokes the whole family and every access token it produced; parallel use yields exactly one
 * success; scope may narrow, never widen.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { compileScopes } from '../../src/core/scopes.ts';
import { scopesWithin } from '../../src/issuer/params.ts';
import { sha256 } from '../../src/issuer/secrets.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { bearer } from '../helpers/tokens.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';

let issuer: RunningIssuer;
let agent: { id: string; secret: string };
let other: { id: string; secret: string };

before(async () => {
  issuer = await startIssuer();
  const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
  agent = await issuer.addClient({ id: 'agent', scopes: ['api:read', 'api:write'], grantTypes });
  other = await issuer.addClient({ id: 'other', scopes: ['api:read', 'api:write'], grantTypes });
});
after(() => issuer?.close());

interface Tokens {
  access_token: string;
  refresh_token: string;
  scope?: string;
  expires_in: number;
}

/** A delegated token with a refresh token: the agent exchanges a user token minted for `user`. */
async function family(user = 'alice'): Promise<Tokens> {
  const subject = await issuer.service.mint({ clientId: 'agent', subject: user, ttl: 3600 });
  const res = await issuer.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
    { authorization: basic(agent.id, agent.secret) },
  );
  const body = (await res.json()) as Tokens;
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.match(body.refresh_token, /^trt_[A-Za-z0-9_-]{43}$/);
  return body;
}

const refresh = (rt: string, extra: Record<string, string> = {}, c = agent) =>
  issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt, ...extra }, { authorization: basic(c.id, c.secret) });

async function expectError(res: Response, status: number, error: string): Promise<void> {
  const body = (await res.json()) as { error: string };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
}

describe('rotation', () => {
  it('rotates on every use; the new access token keeps subject, actor chain and grant', async () => {
    const f = await family();
    const res = await refresh(f.refresh_token);
    const next = (await res.json()) as Tokens;
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.notEqual(next.refresh_token, f.refresh_token);
    const before = decodeJwt(f.access_token);
    const after = decodeJwt(next.access_token);
    assert.equal(after.sub, 'alice');
    assert.deepEqual(after.act, before.act);
    assert.equal(after.grant_id, before.grant_id);
    assert.notEqual(after.jti, before.jti);
    const third = await refresh(next.refresh_token);
    assert.equal(third.status, 200);
  });

  it('stores refresh tokens only as hashes', async () => {
    const f = await family();
    assert.ok(await issuer.store.getRefreshToken(sha256(f.refresh_token)));
    const db = readFileSync(join(issuer.dir, 'tessera.db'));
    const wal = readFileSync(join(issuer.dir, 'tessera.db-wal'));
    for (const bytes of [db, wal]) assert.equal(bytes.includes(f.refresh_token), false);
  });

  it('narrows the scope on request and refuses to widen it', async () => {
    const f = await family();
    const narrow = await refresh(f.refresh_token, { scope: 'api:read' });
    const n = (await narrow.json()) as Tokens;
    assert.equal(narrow.status, 200);
    assert.equal(n.scope, 'api:read');
    // The family keeps its original scope: a later refresh may ask for all of it again.
    const again = (await (await refresh(n.refresh_token)).json()) as Tokens;
    assert.equal(again.scope, 'api:read api:write');
    await expectError(await refresh(again.refresh_token, { scope: 'api:read admin' }), 400, 'invalid_scope');
    // The refused request did not spend the token.
    assert.equal((await refresh(again.refresh_token)).status, 200);
  });

  it('scope removed from the client after the grant: a refresh without scope no longer carries it (RFC 6749 §5.1 scope lists what was issued); none left is invalid_scope, the token unspent', async () => {
    const c = await issuer.addClient({ id: 'shrinking', scopes: ['api:read', 'api:write'], grantTypes: ['refresh_token', EXCHANGE] });
    const subject = await issuer.service.mint({ clientId: 'shrinking', subject: 'erin', ttl: 3600 });
    const ex = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
      { authorization: basic(c.id, c.secret) },
    );
    const f = (await ex.json()) as Tokens;
    assert.equal(f.scope, 'api:read api:write');
    const use = (rt: string, extra: Record<string, string> = {}) => refresh(rt, extra, c);
    // An administrator takes api:write away from the client.
    await issuer.store.updateClient(c.id, { scopes: ['api:read'] }, Math.floor(Date.now() / 1000));
    await issuer.service.sync();
    await expectError(await use(f.refresh_token, { scope: 'api:write' }), 400, 'invalid_scope');
    const res = await use(f.refresh_token);
    const next = (await res.json()) as Tokens;
    assert.equal(res.status, 200, JSON.stringify(next));
    assert.equal(next.scope, 'api:read');
    assert.equal(decodeJwt(next.access_token).scope, 'api:read');
    // Nothing of the grant's scope left for the client: refused, and the token is not spent.
    await issuer.store.updateClient(c.id, { scopes: ['other:thing'] }, Math.floor(Date.now() / 1000));
    await issuer.service.sync();
    await expectError(await use(next.refresh_token), 400, 'invalid_scope');
    await issuer.store.updateClient(c.id, { scopes: ['api:read', 'api:write'] }, Math.floor(Date.now() / 1000));
    await issuer.service.sync();
    const back = (await (await use(next.refresh_token)).json()) as Tokens;
    assert.equal(back.scope, 'api:read api:write', 'the grant keeps its scope: given back, the client gets it again');
  });

  it('privilege escalation: a refresh of a `*` grant whose client now holds the admin scope by name does not narrow the wildcard to it (the grant never held it)', async () => {
    const c = await issuer.addClient({ id: 'wild', scopes: ['*'], audiences: [issuer.url], grantTypes: ['refresh_token', EXCHANGE] });
    const subject = await issuer.service.mint({ clientId: 'wild', subject: 'erin', ttl: 3600, audiences: [issuer.url] });
    const ex = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT, scope: '*', audience: issuer.url },
      { authorization: basic(c.id, c.secret) },
    );
    const f = (await ex.json()) as Tokens;
    assert.equal(ex.status, 200, JSON.stringify(f));
    assert.ok(!(f.scope ?? '').split(' ').includes('tessera:admin'), f.scope);
    // An administrator narrows the client to api:read and makes it an administrator by name.
    await issuer.store.updateClient(c.id, { scopes: ['api:read', 'tessera:admin'] }, Math.floor(Date.now() / 1000));
    await issuer.service.sync();
    const res = await refresh(f.refresh_token, {}, c);
    const next = (await res.json()) as Tokens;
    assert.equal(res.status, 200, JSON.stringify(next));
    assert.equal(next.scope, 'api:read');
    assert.equal(decodeJwt(next.access_token).scope, 'api:read');
  });

  it('a wildcard the client no longer holds whole narrows to what the client holds within it (scopesWithin)', () => {
    const { model } = compileScopes({ 'api:read': {}, 'api:write': {}, 'other:x': {} });
    assert.deepEqual(scopesWithin(['*'], model.expand(['api:*', 'other:x'])), ['api:*', 'other:x']);
    assert.deepEqual(scopesWithin(['api:*'], model.expand(['api:read', 'other:x'])), ['api:read']);
    assert.deepEqual(scopesWithin(['api:read', 'api:write'], model.expand(['api:*'])), ['api:read', 'api:write']);
    assert.deepEqual(scopesWithin(['api:write', 'other:x'], model.expand(['api:read'])), []);
  });

  it('scope with a trailing or doubled space (RFC 6749 §3.3): invalid_scope, and the token is not spent', async () => {
    const f = await family();
    for (const scope of ['api:read ', 'api:read  api:write', ' '])
      await expectError(await refresh(f.refresh_token, { scope }), 400, 'invalid_scope');
    assert.equal((await refresh(f.refresh_token)).status, 200);
  });

  it('resource= or audience= sent without a value (RFC 6749 §3.1: as if omitted) on a two-audience family: the grant’s audiences, not invalid_target', async () => {
    const wide = await issuer.addClient({
      id: 'two-audiences',
      scopes: ['api:read'],
      audiences: ['https://api.test', 'https://b.test'],
      grantTypes: ['refresh_token', EXCHANGE],
    });
    const subject = await issuer.service.mint({
      clientId: 'two-audiences',
      subject: 'dave',
      ttl: 3600,
      audiences: ['https://api.test', 'https://b.test'],
    });
    const res = await issuer.post(
      '/oauth2/token',
      {
        grant_type: EXCHANGE,
        subject_token: subject.access_token,
        subject_token_type: AT,
        audience: ['https://api.test', 'https://b.test'],
      },
      { authorization: basic(wide.id, wide.secret) },
    );
    let rt = ((await res.json()) as Tokens).refresh_token;
    for (const empty of [{ resource: '' }, { audience: '' }] as Record<string, string>[]) {
      const r = await refresh(rt, empty, wide);
      const body = (await r.json()) as Tokens;
      assert.equal(r.status, 200, `${JSON.stringify(empty)}: ${JSON.stringify(body)}`);
      assert.deepEqual(decodeJwt(body.access_token).aud, ['https://api.test', 'https://b.test']);
      rt = body.refresh_token;
    }
  });

  it('attack: a refresh naming an audience the client holds but the grant does not (alone, or beside a granted one): invalid_target, audited as target_not_granted, the token not spent; one granted audience narrows, and the next refresh without one has them all again', async () => {
    const three = await issuer.addClient({
      id: 'three-audiences',
      scopes: ['api:read'],
      audiences: ['https://api.test', 'https://b.test', 'https://c.test'],
      grantTypes: ['refresh_token', EXCHANGE],
    });
    const granted = ['https://api.test', 'https://b.test'];
    const subject = await issuer.service.mint({ clientId: 'three-audiences', subject: 'erin', ttl: 3600, audiences: granted });
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT, audience: granted },
      { authorization: basic(three.id, three.secret) },
    );
    let rt = ((await res.json()) as Tokens).refresh_token;
    const targets: Record<string, string | string[]>[] = [
      { resource: 'https://c.test' },
      { audience: 'https://c.test' },
      { resource: ['https://api.test', 'https://c.test'] },
      { resource: 'https://api.test/' },
    ];
    for (const target of targets) {
      const r = await issuer.post(
        '/oauth2/token',
        { grant_type: 'refresh_token', refresh_token: rt, ...target },
        { authorization: basic(three.id, three.secret) },
      );
      const body = (await r.json()) as { error: string; error_description: string };
      assert.equal(r.status, 400, JSON.stringify(target));
      assert.equal(body.error, 'invalid_target');
      assert.match(body.error_description, /granted/);
      await issuer.service.audit.flush();
      const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'token.denied').at(-1);
      assert.equal(denied?.reason, 'target_not_granted', JSON.stringify(target));
    }
    // RFC 8707 §2.2: downscoped to one resource, then the whole grant again.
    const narrowed = await refresh(rt, { resource: 'https://b.test' }, three);
    const n = (await narrowed.json()) as Tokens;
    assert.equal(narrowed.status, 200, JSON.stringify(n));
    assert.equal(decodeJwt(n.access_token).aud, 'https://b.test');
    rt = n.refresh_token;
    const whole = (await (await refresh(rt, {}, three)).json()) as Tokens;
    assert.deepEqual(decodeJwt(whole.access_token).aud, granted);
  });

  it('attack: an audience taken from the client after the grant: a refresh without a target no longer carries it, one naming it is invalid_target (target_not_allowed), none left is invalid_target, the token unspent; given back, the client gets it again', async () => {
    const c = await issuer.addClient({
      id: 'losing-audience',
      scopes: ['api:read'],
      audiences: ['https://api.test', 'https://b.test'],
      grantTypes: ['refresh_token', EXCHANGE],
    });
    const granted = ['https://api.test', 'https://b.test'];
    const subject = await issuer.service.mint({ clientId: c.id, subject: 'erin', ttl: 3600, audiences: granted });
    const ex = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT, audience: granted },
      { authorization: basic(c.id, c.secret) },
    );
    let rt = ((await ex.json()) as Tokens).refresh_token;
    const now = () => Math.floor(Date.now() / 1000);
    // An administrator takes https://b.test away from the client.
    await issuer.store.updateClient(c.id, { audiences: ['https://api.test'] }, now());
    await issuer.service.sync();
    await expectError(await refresh(rt, { resource: 'https://b.test' }, c), 400, 'invalid_target');
    const res = await refresh(rt, {}, c);
    const next = (await res.json()) as Tokens;
    assert.equal(res.status, 200, JSON.stringify(next));
    assert.equal(decodeJwt(next.access_token).aud, 'https://api.test');
    rt = next.refresh_token;
    // Nothing of the grant's audiences left for the client: refused, and the token is not spent.
    await issuer.store.updateClient(c.id, { audiences: ['https://c.test'] }, now());
    await issuer.service.sync();
    await expectError(await refresh(rt, {}, c), 400, 'invalid_target');
    await issuer.store.updateClient(c.id, { audiences: granted }, now());
    await issuer.service.sync();
    const back = (await (await refresh(rt, {}, c)).json()) as Tokens;
    assert.deepEqual(decodeJwt(back.access_token).aud, granted, 'the grant keeps its audiences: given back, the client gets them again');
  });

  it('refuses another client’s refresh token without touching the family', async () => {
    const f = await family();
    await expectError(await refresh(f.refresh_token, {}, other), 400, 'invalid_grant');
    assert.equal((await refresh(f.refresh_token)).status, 200);
  });

  it('refuses an unknown or malformed refresh token', async () => {
    await expectError(await refresh('trt_unknown'), 400, 'invalid_grant');
    await expectError(
      await issuer.post('/oauth2/token', { grant_type: 'refresh_token' }, { authorization: basic(agent.id, agent.secret) }),
      400,
      'invalid_request',
    );
  });
});

describe('reuse detection', () => {
  it('revokes the whole family and every access token it produced when a rotated token comes back', async () => {
    const verifier = inProcessVerifier(issuer);
    const f = await family();
    const second = (await (await refresh(f.refresh_token)).json()) as Tokens;
    const third = (await (await refresh(second.refresh_token)).json()) as Tokens;
    for (const t of [f.access_token, second.access_token, third.access_token]) assert.equal((await verifier.verify(bearer(t))).ok, true);

    // The attacker replays the first refresh token.
    await expectError(await refresh(f.refresh_token), 400, 'invalid_grant');

    for (const t of [f.access_token, second.access_token, third.access_token]) {
      const r = await verifier.verify(bearer(t));
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.error.code, 'token_revoked');
    }
    // The legitimate holder's current refresh token is dead too.
    await expectError(await refresh(third.refresh_token), 400, 'invalid_grant');

    await issuer.service.audit.flush();
    const grantId = decodeJwt(f.access_token).grant_id as string;
    const events = await issuer.store.queryAudit({ delegation_id: grantId, limit: 1000 });
    const reuse = events.find((e) => e.kind === 'refresh.reuse_detected');
    assert.ok(reuse, 'a reuse leaves an audit event');
    assert.equal(reuse.decision, 'deny');
    assert.equal(reuse.client_id, 'agent');
    assert.ok(events.some((e) => e.kind === 'grant.revoked'));
  });

  it('also revokes tokens exchanged from the family', async () => {
    const verifier = inProcessVerifier(issuer);
    const f = await family();
    const child = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: f.access_token, subject_token_type: AT },
      { authorization: basic(other.id, other.secret) },
    );
    const c = (await child.json()) as Tokens;
    await refresh(f.refresh_token);
    await refresh(f.refresh_token);
    assert.equal((await verifier.verify(bearer(c.access_token))).ok, false);
    await expectError(await refresh(c.refresh_token, {}, other), 400, 'invalid_grant');
  });
});

describe('reuse detection past the refresh lifetime', () => {
  it('stolen refresh token kept rotating by the thief: the real client’s spent token, back after refresh_token_ttl and a prune, still revokes the family', async () => {
    let t = Date.now(); // the service's clock is in milliseconds
    const timed = await startIssuer({ clock: () => t, config: { token_service: { refresh_token_ttl: '60s' } } });
    try {
      const c = await timed.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['refresh_token', EXCHANGE] });
      const use = (rt: string) =>
        timed.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt }, { authorization: basic(c.id, c.secret) });
      const subject = await timed.service.mint({ clientId: 'agent', subject: 'bob', ttl: 3600 });
      const stolen = (await (
        await timed.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
          { authorization: basic(c.id, c.secret) },
        )
      ).json()) as Tokens;
      // The thief uses the stolen token first and keeps rotating before each successor expires.
      let current = stolen.refresh_token;
      for (let i = 0; i < 3; i++) {
        const res = await use(current);
        const body = (await res.json()) as Tokens;
        assert.equal(res.status, 200, JSON.stringify(body));
        current = body.refresh_token;
        t += 50_000;
      }
      // The real client comes back long after its own token's refresh_token_ttl, past a prune.
      await timed.store.prune(Math.floor(t / 1000));
      await expectError(await use(stolen.refresh_token), 400, 'invalid_grant');
      await expectError(await use(current), 400, 'invalid_grant');
      const grantId = decodeJwt(stolen.access_token).grant_id as string;
      assert.equal((await timed.store.getGrant(grantId))?.revokedReason, 'refresh_token_reused');
    } finally {
      await timed.close();
    }
  });

  it('an expired refresh token never rotated: invalid_grant, and the family is not revoked', async () => {
    let t = Date.now(); // the service's clock is in milliseconds
    const timed = await startIssuer({ clock: () => t, config: { token_service: { refresh_token_ttl: '60s' } } });
    try {
      const c = await timed.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['refresh_token', EXCHANGE] });
      const subject = await timed.service.mint({ clientId: 'agent', subject: 'bob', ttl: 3600 });
      const ex = (await (
        await timed.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
          { authorization: basic(c.id, c.secret) },
        )
      ).json()) as Tokens;
      t += 61_000;
      const res = await timed.post(
        '/oauth2/token',
        { grant_type: 'refresh_token', refresh_token: ex.refresh_token },
        { authorization: basic(c.id, c.secret) },
      );
      await expectError(res, 400, 'invalid_grant');
      const grantId = decodeJwt(ex.access_token).grant_id as string;
      assert.equal((await timed.store.getGrant(grantId))?.revokedAt, null);
    } finally {
      await timed.close();
    }
  });
});

/** An issuer with a 10 s refresh reuse grace, and a refresh-token family from an exchange for bob. */
async function gracefulFamily() {
  const graceful = await startIssuer({ config: { token_service: { refresh_reuse_grace: '10s' } } });
  const c = await graceful.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['refresh_token', EXCHANGE] });
  const subject = await graceful.service.mint({ clientId: 'agent', subject: 'bob', ttl: 3600 });
  const use = (rt: string) =>
    graceful.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt }, { authorization: basic(c.id, c.secret) });
  const res = await graceful.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
    { authorization: basic(c.id, c.secret) },
  );
  return { graceful, ex: (await res.json()) as Tokens, use };
}

describe('the refresh race', () => {
  it('lets exactly one of many parallel uses of one refresh token succeed', async () => {
    const f = await family();
    const results = await Promise.all(Array.from({ length: 10 }, () => refresh(f.refresh_token)));
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
    assert.equal(statuses.filter((s) => s === 400).length, 9);
    for (const r of results) await r.body?.cancel();
  });

  it('with a reuse grace period, the losers are refused without killing the winner’s family', async () => {
    const { graceful, ex, use } = await gracefulFamily();
    try {
      const results = await Promise.all(Array.from({ length: 5 }, () => use(ex.refresh_token)));
      const winners = results.filter((r) => r.status === 200);
      assert.equal(winners.length, 1);
      const won = (await (winners[0] as Response).json()) as Tokens;
      const next = await use(won.refresh_token);
      assert.equal(next.status, 200);
    } finally {
      await graceful.close();
    }
  });

  it('a rotated token presented again within the grace period (a retry, or a thief racing the client): audited as such, not as an unknown token', async () => {
    const { graceful, ex, use } = await gracefulFamily();
    try {
      assert.equal((await use(ex.refresh_token)).status, 200);
      const again = await use(ex.refresh_token);
      const body = (await again.json()) as { error: string; error_description: string };
      assert.equal(again.status, 400);
      // The caller reads what any refused refresh token reads.
      assert.equal(body.error, 'invalid_grant');
      assert.equal(body.error_description, 'The refresh token is invalid, expired, revoked or was issued to another client.');
      const unknown = await use(`trt_${'x'.repeat(43)}`);
      assert.equal(unknown.status, 400);
      await unknown.body?.cancel();
      await graceful.service.audit.flush();
      const denied = (await graceful.store.queryAudit({ limit: 1000 })).filter((e) => e.kind === 'token.denied').map((e) => e.reason);
      assert.deepEqual(denied, ['refresh_token_reused_in_grace', 'refresh_token_invalid']);
    } finally {
      await graceful.close();
    }
  });
});

/**
 * An issuer with `refresh_reuse_interval: 30s` (and `grace`, when given, as refresh_reuse_grace) on
 * a settable clock, two clients, and a refresh-token family from an exchange for carol.
 */
async function retryingFamily(grace?: string) {
  let now = 1_900_000_000;
  const config = { token_service: { refresh_reuse_interval: '30s', ...(grace ? { refresh_reuse_grace: grace } : {}) } };
  const iss = await startIssuer({ config, clock: () => now * 1000 });
  const grantTypes = ['refresh_token', EXCHANGE];
  const a = await iss.addClient({ id: 'agent', scopes: ['api:read', 'api:write'], grantTypes });
  const b = await iss.addClient({ id: 'other', scopes: ['api:read', 'api:write'], grantTypes });
  const subject = await iss.service.mint({ clientId: 'agent', subject: 'carol', ttl: 3600 });
  const use = (rt: string, c = a, extra: Record<string, string> = {}) =>
    iss.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt, ...extra }, { authorization: basic(c.id, c.secret) });
  const res = await iss.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
    { authorization: basic(a.id, a.secret) },
  );
  const ex = (await res.json()) as Tokens;
  assert.equal(res.status, 200);
  const grantId = decodeJwt(ex.access_token).grant_id as string;
  const ok = async (r: Response): Promise<Tokens> => {
    const body = (await r.json()) as Tokens;
    assert.equal(r.status, 200, JSON.stringify(body));
    return body;
  };
  const revoked = async () => (await iss.store.getGrant(grantId))?.revokedAt !== null;
  const reasons = async (kind: string) => {
    await iss.service.audit.flush();
    return (await iss.store.queryAudit({ limit: 1000 })).filter((e) => e.kind === kind);
  };
  return { iss, ex, use, other: b, grantId, ok, revoked, reasons, tick: (s: number) => (now += s) };
}

describe('refresh_reuse_interval (a retry after a lost token response)', () => {
  it('the just-rotated token presented again by its client within the interval: a fresh access token and a new refresh token of the same family; the newest wins (the successor the lost response carried is retired, and presenting it is a reuse)', async () => {
    const f = await retryingFamily();
    try {
      const lost = await f.ok(await f.use(f.ex.refresh_token)); // the response the client never saw
      f.tick(10);
      const retry = await f.ok(await f.use(f.ex.refresh_token));
      assert.notEqual(retry.refresh_token, lost.refresh_token);
      assert.equal(decodeJwt(retry.access_token).grant_id, f.grantId);
      assert.equal(decodeJwt(retry.access_token).sub, 'carol');
      // A second lost response: the retry within the same interval (counted from the first rotation) again.
      f.tick(10);
      const again = await f.ok(await f.use(f.ex.refresh_token));
      // The family goes on from the newest token.
      const next = await f.ok(await f.use(again.refresh_token));
      assert.equal(await f.revoked(), false);
      const refreshed = await f.reasons('token.refreshed');
      assert.equal(refreshed.filter((e) => e.detail?.reuse_interval === true).length, 2);
      // The retired successor presented (someone held the lost response): reuse, the family revoked.
      await expectError(await f.use(lost.refresh_token), 400, 'invalid_grant');
      assert.equal(await f.revoked(), true);
      await expectError(await f.use(next.refresh_token), 400, 'invalid_grant');
      const reuse = await f.reasons('refresh.reuse_detected');
      assert.deepEqual(
        reuse.map((e) => e.reason),
        ['refresh_token_reused'],
      );
    } finally {
      await f.iss.close();
    }
  });

  it('attack: rotated refresh token replayed after the reuse interval still revokes the family', async () => {
    const f = await retryingFamily();
    try {
      const current = await f.ok(await f.use(f.ex.refresh_token));
      f.tick(30);
      await expectError(await f.use(f.ex.refresh_token), 400, 'invalid_grant');
      assert.equal(await f.revoked(), true);
      await expectError(await f.use(current.refresh_token), 400, 'invalid_grant');
      assert.deepEqual(
        (await f.reasons('refresh.reuse_detected')).map((e) => e.reason),
        ['refresh_token_reused'],
      );
    } finally {
      await f.iss.close();
    }
  });

  it('attack: a refresh token rotated two generations ago, replayed within the interval, still revokes the family', async () => {
    const f = await retryingFamily();
    try {
      const second = await f.ok(await f.use(f.ex.refresh_token));
      const third = await f.ok(await f.use(second.refresh_token));
      f.tick(1);
      await expectError(await f.use(f.ex.refresh_token), 400, 'invalid_grant');
      assert.equal(await f.revoked(), true);
      await expectError(await f.use(third.refresh_token), 400, 'invalid_grant');
      assert.equal((await f.reasons('refresh.reuse_detected')).length, 1);
    } finally {
      await f.iss.close();
    }
  });

  it('attack: another client presenting the just-rotated token within the interval is refused (refresh_token_invalid, as without the interval) and gets nothing', async () => {
    const f = await retryingFamily();
    try {
      const current = await f.ok(await f.use(f.ex.refresh_token));
      await expectError(await f.use(f.ex.refresh_token, f.other), 400, 'invalid_grant');
      assert.deepEqual(
        (await f.reasons('token.denied')).map((e) => e.reason),
        ['refresh_token_invalid'],
      );
      // The family and its current token are untouched.
      await f.ok(await f.use(current.refresh_token));
    } finally {
      await f.iss.close();
    }
  });

  it('attack: a revoked family is never revived by the interval', async () => {
    const f = await retryingFamily();
    try {
      await f.ok(await f.use(f.ex.refresh_token));
      await f.iss.service.revokeGrants({ grantId: f.grantId }, 'offboarded');
      f.tick(1);
      await expectError(await f.use(f.ex.refresh_token), 400, 'invalid_grant');
      assert.equal((await f.reasons('token.refreshed')).length, 1);
    } finally {
      await f.iss.close();
    }
  });

  it('with refresh_reuse_grace too: past the interval but within the grace, a reuse is refused without revoking the family', async () => {
    const f = await retryingFamily('60s');
    try {
      const current = await f.ok(await f.use(f.ex.refresh_token));
      f.tick(5);
      await f.ok(await f.use(f.ex.refresh_token));
      f.tick(40);
      await expectError(await f.use(f.ex.refresh_token), 400, 'invalid_grant');
      assert.equal(await f.revoked(), false);
      // The retired successor within the grace of its retirement: refused, the family kept.
      await expectError(await f.use(current.refresh_token), 400, 'invalid_grant');
      assert.equal(await f.revoked(), false);
    } finally {
      await f.iss.close();
    }
  });
});
