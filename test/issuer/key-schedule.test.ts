/**
 * A signing key's schedule at rest, attacked by someone who can write to the database but holds no
 * master key: its `created_at` and `activates_at` are authenticated (the sealed private key's
 * AES-GCM associated data and a MAC under a key derived from the master key), so a pending key is
 * not made to sign early and a retired one is not moved back into signing; a public-only row of a
 * removed key is checked the same way before `tessera scan` recognises a token by it. Rows written
 * before the MAC existed are sealed again once, at start, each on the audit trail.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { jwkThumbprint } from '../../src/core/jose/jwk.ts';
import { unsealSigningKey } from '../../src/issuer/keys.ts';
import { seal } from '../../src/issuer/secrets.ts';
import { TokenService } from '../../src/issuer/service.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { makeKey, sign } from '../helpers/tokens.ts';

const running: RunningIssuer[] = [];
after(async () => {
  for (const i of running) await i.close();
});

async function fresh(config: Parameters<typeof startIssuer>[0] = {}) {
  const issuer = await startIssuer(config);
  running.push(issuer);
  const c = await issuer.addClient({ id: 'agent', scopes: ['api:read'] });
  const db = new DatabaseSync(join(issuer.dir, 'tessera.db'), { timeout: 5000 });
  return {
    issuer,
    db,
    /** Tell the running server the key set changed (as any write through the store does). */
    bump: () => db.prepare("UPDATE meta SET value = value + 1 WHERE name = 'keys_version'").run(),
    token: () => issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret) }),
    /** Start another instance on the same store, as one started after the rows were written. */
    async another(config: Parameters<typeof startIssuer>[0] = {}) {
      const next = await startIssuer({ ...config, dir: issuer.dir, master: issuer.master });
      running.push(next);
      return {
        next,
        token: () => next.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret) }),
      };
    },
  };
}

async function jwksKids(issuer: RunningIssuer): Promise<string[]> {
  const body = (await (await fetch(`${issuer.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
  return body.keys.map((k) => k.kid);
}

describe('the schedule of a stored key, rewritten without the master key', () => {
  it('attack: a pending key’s activates_at moved to now (signing before its pre-publication reached every verifier) is refused: it does not sign', async () => {
    let now = 1_900_000_000;
    const { issuer, db, bump, token } = await fresh({ clock: () => now * 1000 });
    now += 10;
    const pending = await issuer.service.keys.rotate();
    assert.equal((await token()).status, 200);
    db.prepare('UPDATE signing_keys SET activates_at = ? WHERE kid = ?').run(pending.createdAt, pending.kid);
    bump();
    await issuer.service.sync();
    // Refused, it keeps the place this server last trusted (pending): the active key signs on, the
    // moved key never; once its trusted time comes, nothing signs rather than the key it retires.
    const t = await token();
    assert.equal(t.status, 200);
    assert.notEqual(decodeProtectedHeader(((await t.json()) as { access_token: string }).access_token).kid, pending.kid);
    assert.equal(issuer.service.keys.lookup(pending.kid, 'ES256'), 'unknown');
    assert.equal((await jwksKids(issuer)).includes(pending.kid), false);
    assert.match(issuer.service.keys.status().find((k) => k.kid === pending.kid)?.invalid ?? '', /schedule/);
    now = pending.activatesAt;
    assert.equal((await token()).status, 503);
  });

  it('attack: a retired key’s activates_at moved after its successor’s (back into signing) is refused: it does not sign', async () => {
    const { issuer, db, bump, token } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    const current = await issuer.service.keys.rotate({ immediate: true });
    db.prepare('UPDATE signing_keys SET activates_at = ?, created_at = ? WHERE kid = ?').run(
      current.activatesAt,
      current.createdAt + 1,
      old.kid,
    );
    bump();
    await issuer.service.sync();
    // Refused, it keeps the place this server last trusted (retired): its successor signs on.
    const t = await token();
    assert.equal(t.status, 200, 'the retired key does not sign again');
    assert.equal(decodeProtectedHeader(((await t.json()) as { access_token: string }).access_token).kid, current.kid);
    assert.equal(issuer.service.keys.lookup(old.kid, 'ES256'), 'unknown');
    assert.match(issuer.service.keys.status().find((k) => k.kid === old.kid)?.invalid ?? '', /schedule/);
  });

  it('attack: the active key’s schedule moved before the key it retired (activates_at and created_at rewritten) does not bring the retired key back into signing at a running server: 503, nothing published anew', async () => {
    const { issuer, db, bump, token } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    // Rotated out at once, as after a compromise of the old key.
    const current = await issuer.service.keys.rotate({ immediate: true });
    const before = issuer.service.keys.status().find((k) => k.kid === old.kid)?.publishedUntil;
    assert.notEqual(before, null);
    db.prepare('UPDATE signing_keys SET activates_at = ?, created_at = ? WHERE kid = ?').run(
      old.activatesAt - 100,
      old.createdAt - 100,
      current.kid,
    );
    bump();
    await issuer.service.sync();
    const t = await token();
    assert.equal(
      t.status,
      503,
      `a token signed by ${t.status === 200 ? decodeProtectedHeader(((await t.json()) as { access_token: string }).access_token).kid : '?'}`,
    );
    const status = issuer.service.keys.status();
    assert.equal(status.find((k) => k.kid === old.kid)?.state, 'retired');
    assert.equal(status.find((k) => k.kid === old.kid)?.publishedUntil, before, 'the retired key’s window is not reopened');
    assert.match(status.find((k) => k.kid === current.kid)?.invalid ?? '', /schedule/);
    assert.equal(issuer.service.keys.readiness().ok, false);
    assert.deepEqual(await jwksKids(issuer), [old.kid]);
  });

  it('attack: the MAC of a row copied onto another row (same schedule elsewhere) does not authenticate it', async () => {
    const { issuer, db, bump } = await fresh();
    const first = await issuer.service.keys.rotate();
    const second = await issuer.service.keys.rotate({ immediate: true });
    const mac = (db.prepare('SELECT mac FROM signing_keys WHERE kid = ?').get(second.kid) as { mac: string | null }).mac;
    assert.ok(mac, 'a key written now carries a MAC');
    db.prepare('UPDATE signing_keys SET mac = ? WHERE kid = ?').run(mac, first.kid);
    bump();
    await issuer.service.sync();
    assert.notEqual(issuer.service.keys.status().find((k) => k.kid === first.kid)?.invalid, undefined);
  });
});

describe('a key’s end, sealed into its own row when its successor is added', () => {
  it('rotation seals the predecessor: its row carries its end and successor under its MAC', async () => {
    const { issuer } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    assert.equal(old.retiresAt, undefined, 'the only key has no end');
    const current = await issuer.service.keys.rotate({ immediate: true });
    const rows = await issuer.store.listSigningKeys();
    const sealed = rows.find((r) => r.kid === old.kid);
    assert.equal(sealed?.retiresAt, current.activatesAt);
    assert.equal(sealed?.successorKid, current.kid);
    assert.notEqual(sealed?.mac, old.mac, 'the MAC now covers the end');
    assert.equal(rows.find((r) => r.kid === current.kid)?.retiresAt, undefined);
    const status = issuer.service.keys.status();
    assert.equal(status.find((k) => k.kid === old.kid)?.invalid, undefined, 'the sealed row passes the checks');
    assert.equal(status.find((k) => k.kid === old.kid)?.sealedEnd, current.activatesAt);
    assert.equal(status.find((k) => k.kid === old.kid)?.successor, current.kid);
  });

  it('attack: a fresh instance does not sign with a retired key whose successor row was altered (its schedule moved before it): 503, readiness names why and the recovery, which works', async () => {
    const { issuer, db, another } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    // Rotated out at once, as after a compromise of the old key.
    const current = await issuer.service.keys.rotate({ immediate: true });
    db.prepare('UPDATE signing_keys SET activates_at = ?, created_at = ? WHERE kid = ?').run(
      old.activatesAt - 100,
      old.createdAt - 100,
      current.kid,
    );
    const { next, token } = await another();
    const t = await token();
    assert.equal(
      t.status,
      503,
      `a token signed by ${t.status === 200 ? decodeProtectedHeader(((await t.json()) as { access_token: string }).access_token).kid : '?'}`,
    );
    const ready = next.service.keys.readiness();
    assert.equal(ready.ok, false);
    assert.match(ready.ok ? '' : ready.detail, new RegExp(`${old.kid}.*ended.*${current.kid}.*rotate --now`, 's'));
    // Recovery: a key that signs at once.
    const added = await next.service.keys.rotate({ immediate: true });
    const r = await token();
    assert.equal(r.status, 200);
    assert.equal(decodeProtectedHeader(((await r.json()) as { access_token: string }).access_token).kid, added.kid);
    assert.equal(next.service.keys.readiness().ok, true);
  });

  it('attack: a fresh instance does not sign with a retired key whose successor row was deleted', async () => {
    const { issuer, db, another } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    const current = await issuer.service.keys.rotate({ immediate: true });
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(current.kid);
    const { next, token } = await another();
    assert.equal((await token()).status, 503);
    const ready = next.service.keys.readiness();
    assert.match(ready.ok ? '' : ready.detail, /not in the store.*rotate --now/s);
    await next.service.keys.rotate({ immediate: true });
    assert.equal((await token()).status, 200);
  });

  it('attack: a pre-published rotation after the successor’s row was deleted does not move the retired key’s passed end: nothing signs until the new key does', async () => {
    let now = 1_900_000_000;
    const { issuer, db, another } = await fresh({ clock: () => now * 1000 });
    now += 10;
    const current = await issuer.service.keys.rotate({ immediate: true });
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(current.kid);
    now += 10;
    const { next, token } = await another({ clock: () => now * 1000 });
    const pending = await next.service.keys.rotate();
    assert.equal((await token()).status, 503);
    now = pending.activatesAt;
    const t = await token();
    assert.equal(t.status, 200);
    assert.equal(decodeProtectedHeader(((await t.json()) as { access_token: string }).access_token).kid, pending.kid);
  });

  it('attack: the sealed end stripped from the retired key’s row (its successor deleted) does not bring it back: the row is refused', async () => {
    const { issuer, db, another } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    const current = await issuer.service.keys.rotate({ immediate: true });
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(current.kid);
    db.prepare('UPDATE signing_keys SET retires_at = NULL, successor_kid = NULL WHERE kid = ?').run(old.kid);
    const { next, token } = await another();
    assert.equal((await token()).status, 503);
    assert.match(next.service.keys.status().find((k) => k.kid === old.kid)?.invalid ?? '', /MAC/);
  });

  it('attack: a later end written into the retired key’s row is refused', async () => {
    const { issuer, db, another } = await fresh();
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    const current = await issuer.service.keys.rotate({ immediate: true });
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(current.kid);
    db.prepare('UPDATE signing_keys SET retires_at = ? WHERE kid = ?').run(current.activatesAt + 86_400, old.kid);
    const { token } = await another();
    assert.equal((await token()).status, 503);
  });

  it('a pre-published rotation seals the active key at the successor’s activation: it signs until then, the successor after', async () => {
    let now = 1_900_000_000;
    const { issuer, db, another } = await fresh({ clock: () => now * 1000 });
    const old = (await issuer.store.listSigningKeys())[0];
    assert.ok(old);
    now += 10;
    const pending = await issuer.service.keys.rotate();
    assert.equal((await issuer.store.listSigningKeys()).find((r) => r.kid === old.kid)?.retiresAt, pending.activatesAt);
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(pending.kid);
    const { token } = await another({ clock: () => now * 1000 });
    assert.equal((await token()).status, 200, 'before its end the old key signs');
    now = pending.activatesAt;
    assert.equal((await token()).status, 503, 'at its sealed end it stops, its successor gone');
  });

  it('concurrent rotations at two instances leave exactly one key without an end, the one that signs', async () => {
    const { issuer, another } = await fresh();
    const { next } = await another();
    await Promise.all([
      issuer.service.keys.rotate({ immediate: true }),
      next.service.keys.rotate({ immediate: true }),
      issuer.service.keys.rotate({ immediate: true }),
      next.service.keys.rotate({ immediate: true }),
    ]);
    const rows = await issuer.store.listSigningKeys();
    assert.equal(rows.length, 5);
    const open = rows.filter((r) => r.retiresAt === undefined);
    assert.equal(open.length, 1, JSON.stringify(rows.map((r) => [r.kid, r.seq, r.retiresAt, r.successorKid])));
    const { next: third, token } = await another();
    const t = await token();
    assert.equal(t.status, 200);
    assert.equal(decodeProtectedHeader(((await t.json()) as { access_token: string }).access_token).kid, open[0]?.kid);
    assert.equal(
      third.service.keys.status().every((k) => k.invalid === undefined),
      true,
    );
  });
});

describe('a removed key’s public part, planted without the master key', () => {
  it('attack: a row of the attacker’s key among the removed keys makes scan recognise nothing it signed', async () => {
    const { issuer, db } = await fresh();
    const minted = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const attacker = makeKey('ES256');
    const { kid: _, ...publicJwk } = attacker.jwk as Record<string, string>;
    const kid = jwkThumbprint(publicJwk);
    const payload = JSON.parse(Buffer.from(minted.access_token.split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>;
    const forged = await sign({ ...attacker, kid }, { ...payload, jti: 'forged-jti' }, { typ: 'at+jwt' });
    const insert = db.prepare(
      'INSERT INTO removed_signing_keys (kid, alg, public_jwk, created_at, activates_at, mac) VALUES (?, ?, ?, ?, ?, ?)',
    );
    insert.run(kid, 'ES256', JSON.stringify(publicJwk), 1, 1, 'AAAA');
    const scan = new TokenService({ config: issuer.service.config, store: issuer.store, master: issuer.master });
    await scan.start({ background: false });
    try {
      assert.equal(await scan.identifyLeak(forged), undefined, 'an unauthenticated removed row names nothing');
      assert.equal((await scan.identifyLeak(minted.access_token))?.state, 'live', 'the real key still does');
    } finally {
      await scan.close();
    }
  });

  it('attack: a removed row whose kid is not its key’s thumbprint is refused even without the master key', async () => {
    const { issuer, db } = await fresh();
    const minted = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const attacker = makeKey('ES256', 'chosen-kid');
    const { kid: _, ...publicJwk } = attacker.jwk as Record<string, string>;
    db.prepare('INSERT INTO removed_signing_keys (kid, alg, public_jwk, created_at, activates_at) VALUES (?, ?, ?, ?, ?)').run(
      'chosen-kid',
      'ES256',
      JSON.stringify(publicJwk),
      1,
      1,
    );
    const payload = JSON.parse(Buffer.from(minted.access_token.split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>;
    const forged = await sign(attacker, { ...payload, jti: 'forged-jti' }, { typ: 'at+jwt' });
    const scan = new TokenService({ config: issuer.service.config, store: issuer.store, master: undefined });
    await scan.start({ background: false });
    try {
      assert.equal(await scan.identifyLeak(forged), undefined);
    } finally {
      await scan.close();
    }
  });

  it('a key removed by housekeeping is still recognised (its MAC kept with its public part)', async () => {
    let now = 1_900_000_000;
    const clock = () => now * 1000;
    const { issuer } = await fresh({ clock, config: { token_service: { sync_interval: '60s', max_access_token_ttl: '1h' } } });
    const minted = await issuer.service.mint({ clientId: 'agent', subject: 'dana', ttl: 600 });
    const oldKid = decodeProtectedHeader(minted.access_token).kid as string;
    now += 1;
    await issuer.service.keys.rotate({ immediate: true });
    now += 60 + 3600 + 60 + 1;
    await issuer.service.sync();
    assert.equal(
      (await issuer.store.listRemovedSigningKeys()).some((k) => k.kid === oldKid),
      true,
    );
    assert.equal((await issuer.service.identifyLeak(minted.access_token))?.state, 'expired');
  });
});

describe('rows written before the schedule was authenticated', () => {
  it('are sealed again at the first start with the master key, one key.rotated key_resealed event each; their tokens still verify and they sign', async () => {
    const { issuer, db, token } = await fresh();
    const before = (await (await token()).json()) as { access_token: string };
    await issuer.service.keys.rotate();
    const rows = await issuer.store.listSigningKeys();
    // As a Tessera before the MAC wrote them: sealed under the kid alone, no MAC.
    for (const r of rows) {
      db.prepare('UPDATE signing_keys SET sealed_private_key = ?, mac = NULL WHERE kid = ?').run(
        seal(issuer.master, unsealSigningKey(issuer.master, r), r.kid),
        r.kid,
      );
    }
    const next = new TokenService({ config: issuer.service.config, store: issuer.store, master: issuer.master });
    await next.start({ background: false });
    try {
      const stored = await issuer.store.listSigningKeys();
      assert.equal(
        stored.every((r) => typeof r.mac === 'string'),
        true,
      );
      assert.equal(
        next.keys.status().every((k) => k.invalid === undefined),
        true,
        JSON.stringify(next.keys.status()),
      );
      assert.ok(next.keys.signer());
      assert.notEqual(next.keys.lookup(decodeProtectedHeader(before.access_token).kid, 'ES256'), 'unknown');
      await next.audit.flush();
      const events = await issuer.store.queryAudit({ kinds: ['key.rotated'], limit: 100 });
      const resealed = events.filter((e) => e.reason === 'key_resealed');
      assert.deepEqual(
        resealed.map((e) => e.detail?.kid),
        rows.map((r) => r.kid),
      );
    } finally {
      await next.close();
    }
  });

  it('attack: a row stripped of its MAC and sealed with the kid alone, once the store was upgraded, is refused, not sealed again', async () => {
    let now = 1_900_000_000;
    const { issuer, db, bump } = await fresh({ clock: () => now * 1000 });
    now += 10;
    const pending = await issuer.service.keys.rotate();
    const der = unsealSigningKey(issuer.master, pending);
    // A sealed value of the kid alone (as one copied before the upgrade would be), the schedule moved.
    db.prepare('UPDATE signing_keys SET sealed_private_key = ?, mac = NULL, activates_at = ? WHERE kid = ?').run(
      seal(issuer.master, der, pending.kid),
      pending.createdAt,
      pending.kid,
    );
    bump();
    const next = new TokenService({ config: issuer.service.config, store: issuer.store, master: issuer.master, clock: () => now * 1000 });
    await next.start({ background: false });
    try {
      assert.notEqual(next.keys.status().find((k) => k.kid === pending.kid)?.invalid, undefined);
      assert.equal(next.keys.signer(), undefined);
      const row = (await issuer.store.listSigningKeys()).find((k) => k.kid === pending.kid);
      assert.equal(row?.mac, undefined, 'not sealed again');
    } finally {
      await next.close();
    }
  });
});
