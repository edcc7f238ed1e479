/**
 * Signing-key lifecycle, red-team round: a key row deleted behind a running server, instances on
 * one store whose clocks disagree, and what verifiers fetching the JWKS over HTTP see across
 * rotations. Against a SQLite file, real HTTP and `jose` verifying through the JWKS endpoint.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from 'jose';
import { jwkThumbprint } from '../../src/core/jose/jwk.ts';
import { KeyManager, type KeySchedule } from '../../src/issuer/keys.ts';
import { generateMasterKey, seal } from '../../src/issuer/secrets.ts';
import { generateSigningKey } from '../../src/issuer/signer.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const running: RunningIssuer[] = [];
after(async () => {
  for (const i of running) await i.close();
});

const T0 = 1_900_000_000;

/** A running issuer on a clock of its own, one client, its warnings collected, and its database file opened beside it. */
async function fresh(config: NonNullable<Parameters<typeof startIssuer>[0]>['config'] = {}) {
  const clock = { now: T0 };
  const warnings: string[] = [];
  const issuer = await startIssuer({ clock: () => clock.now * 1000, config, onServiceWarning: (m) => warnings.push(m) });
  running.push(issuer);
  const c = await issuer.addClient({ id: 'agent', scopes: ['api:read'] });
  const db = new DatabaseSync(join(issuer.dir, 'tessera.db'), { timeout: 5000 });
  const token = () => issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret) });
  const jwks = async () => (await (await fetch(`${issuer.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
  return { issuer, clock, warnings, db, token, jwks };
}

async function accessToken(res: Response): Promise<string> {
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { access_token: string }).access_token;
}

const kidOf = (jwt: string) => decodeProtectedHeader(jwt).kid as string;

describe('a signing key row deleted behind a running server', () => {
  it('attack: the active key’s row deleted (no key version bump): at its next sync the server stops signing with it (503 signing_key_unavailable, not ready, a warning naming the kid), never falls back to the retired key, and `keys rotate --now` recovers', async () => {
    const { issuer, clock, warnings, db, token, jwks } = await fresh();
    const retired = issuer.service.keys.signer()?.kid as string;
    clock.now += 1;
    // After a compromise of `retired`: a key that signs at once.
    const active = (await issuer.service.rotateSigningKey({ immediate: true }, 'cli')).kid;
    assert.equal(kidOf(await accessToken(await token())), active);

    // Whoever can write to the database deletes the active key's row, and nothing else.
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(active);
    await issuer.service.sync();

    // Every other instance (and any started now) no longer publishes `active`: this one must not
    // go on signing tokens with it that they refuse, nor sign with the compromised `retired` again.
    const res = await token();
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { error_code?: string; error: string }).error, 'temporarily_unavailable');
    assert.equal(issuer.service.keys.ready(), false);
    const published = (await jwks()).keys.map((k) => k.kid);
    assert.equal(published.includes(active), false, 'the deleted key is not published (no other instance publishes it)');
    const warning = warnings.find((w) => w.includes(active));
    assert.ok(warning, `a warning names ${active}: ${JSON.stringify(warnings)}`);
    assert.match(warning, /deleted/);
    const status = issuer.service.keys.status().find((k) => k.kid === active);
    assert.equal(status?.state, 'active');
    assert.match(status?.invalid ?? '', /deleted/);

    // One warning, not one per sync.
    const before = warnings.length;
    await issuer.service.sync();
    await issuer.service.sync();
    assert.equal(warnings.length, before);

    // The key version bumped later (any change) or a token with an unknown kid (a kid-miss read):
    // the retired key still does not take over again.
    db.prepare("UPDATE meta SET value = value + 1 WHERE name = 'keys_version'").run();
    await issuer.service.sync();
    assert.equal((await token()).status, 503);
    await issuer.service.keys.refreshAfterMiss();
    assert.equal(issuer.service.keys.signer(), undefined);

    // Recovery: a key that signs at once.
    clock.now += 1;
    const next = (await issuer.service.rotateSigningKey({ immediate: true }, 'cli')).kid;
    const t = await accessToken(await token());
    assert.equal(kidOf(t), next);
    assert.equal(issuer.service.keys.ready(), true);
    await jwtVerify(t, createLocalJWKSet(await jwks()), { issuer: issuer.url });
    assert.equal(
      (await jwks()).keys.some((k) => k.kid === retired),
      true,
      'the retired key stays published for its tokens',
    );
  });

  it('attack: a pending key’s row deleted: when its time comes the server does not sign with the key before it (the rotation was cancelled behind its back), and says so', async () => {
    const { issuer, clock, warnings, db, token } = await fresh({ token_service: { keys: { publish_ahead: '1h', jwks_max_age: '10m' } } });
    const first = issuer.service.keys.signer()?.kid as string;
    const pending = (await issuer.service.rotateSigningKey({}, 'cli')).kid;
    db.prepare('DELETE FROM signing_keys WHERE kid = ?').run(pending);
    await issuer.service.sync();
    assert.ok(
      warnings.some((w) => w.includes(pending) && /deleted/.test(w)),
      JSON.stringify(warnings),
    );
    // Until then the key before it signs, as every instance agrees.
    assert.equal(kidOf(await accessToken(await token())), first);
    clock.now += 3600;
    await issuer.service.sync();
    assert.equal((await token()).status, 503);
  });

  it('a key housekeeping removed once its tokens expired is not taken for a deleted one: no warning, the active key signs', async () => {
    const { issuer, clock, warnings, token } = await fresh({ token_service: { max_access_token_ttl: '5m', access_token_ttl: '5m' } });
    const old = issuer.service.keys.signer()?.kid as string;
    clock.now += 1;
    const active = (await issuer.service.rotateSigningKey({ immediate: true }, 'cli')).kid;
    const until = issuer.service.keys.status().find((k) => k.kid === old)?.publishedUntil as number;
    clock.now = until + 1;
    await issuer.service.sync();
    assert.equal(
      (await issuer.store.listSigningKeys()).some((k) => k.kid === old),
      false,
      'housekeeping removed it',
    );
    await issuer.service.sync();
    assert.equal(kidOf(await accessToken(await token())), active);
    assert.deepEqual(
      warnings.filter((w) => w.includes(old)),
      [],
    );
  });
});

describe('two instances on one store whose clocks disagree', () => {
  const schedule: KeySchedule = {
    algorithm: 'ES256',
    publishAhead: 600,
    jwksMaxAge: 600,
    maxTokenTtl: 600,
    rotationInterval: undefined,
    propagation: 5,
  };

  it('a key removed by an instance whose clock is up to 60 s ahead is not taken for a deleted one by the other', async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    let t = T0;
    const a = new KeyManager({ store, master, schedule, now: () => t + 59 });
    const b = new KeyManager({ store, master, schedule, now: () => t });
    await a.rotate({ immediate: true });
    t += 1;
    await a.rotate({ immediate: true });
    await b.reload();
    const old = b.status()[0] as { kid: string; publishedUntil: number };
    t = old.publishedUntil - 58;
    assert.deepEqual((await a.maintain()).removed, [old.kid]);
    await b.reload();
    assert.deepEqual(
      b.status().map((k) => k.kid),
      b
        .status()
        .map((k) => k.kid)
        .filter((k) => k !== old.kid),
    );
    assert.ok(b.signer() !== undefined && b.status().every((k) => k.invalid === undefined));
    await store.close();
  });

  it('attack: a rotation written on a clock 60 s behind the signing instance’s: the new key still never signs before a JWKS fetched just before every instance published it has run out', async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    const t = T0;
    // The CLI (or instance) that rotates runs 60 s behind the instance that signs.
    const writer = new KeyManager({ store, master, schedule, now: () => t - 60 });
    const signer = new KeyManager({ store, master, schedule, now: () => t });
    await writer.rotate({ immediate: true });
    await signer.reload();
    await writer.rotate();
    // A verifier fetches the signer's JWKS at the last moment before it syncs, and keeps it max-age.
    const fetched = JSON.parse(signer.jwks().body) as { keys: { kid: string }[] };
    const fetchedAt = t + 1 + (schedule.propagation ?? 0);
    await signer.reload();
    for (let at = t; at < fetchedAt + schedule.jwksMaxAge; at++) {
      const kid = signer.signer(at)?.kid;
      assert.ok(
        fetched.keys.some((k) => k.kid === kid),
        `at +${at - T0}s the signer signs with ${kid}, which the cached JWKS does not have`,
      );
    }
    await store.close();
  });
});

describe('known gaps of a deleted key row, and rotations in the same second', () => {
  const schedule: KeySchedule = {
    algorithm: 'ES256',
    publishAhead: 3600,
    jwksMaxAge: 600,
    maxTokenTtl: 600,
    rotationInterval: 86_400,
    propagation: 1,
  };
  const setup = async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    const clock = { t: T0 };
    const keys = new KeyManager({ store, master, schedule, now: () => clock.t });
    return { store, master, clock, keys };
  };

  it('readiness names the refused active key and why, and what recovers (no key material); with no key at all, says there is none', async () => {
    const { store, keys } = await setup();
    assert.deepEqual(keys.readiness(), { ok: false, detail: 'no active signing key' });
    const row = await keys.rotate({ immediate: true });
    assert.deepEqual(keys.readiness(), { ok: true });
    await store.deleteSigningKey(row.kid);
    await keys.reload();
    const r = keys.readiness();
    assert.equal(r.ok, false);
    assert.match(r.detail ?? '', new RegExp(`^signing key ${row.kid} refused: its row was deleted .*; run \`tessera keys rotate --now\`$`));
    assert.equal((r.detail ?? '').match(/tessera keys rotate --now/g)?.length, 1, 'the advice once');
    assert.ok(!(r.detail ?? '').includes(row.sealedPrivateKey) && !(r.detail ?? '').includes(row.mac as string));
    // The key material only: `kty` (EC) and `crv` are short enough to occur in the kid by chance.
    for (const m of ['x', 'y']) {
      const v = row.publicJwk[m];
      assert.ok(typeof v === 'string' && !(r.detail ?? '').includes(v), m);
    }
    await store.close();
  });

  it('a deleted row restored as it was is accepted again at the next reload (signing, published), without a restart', async () => {
    const { store, keys } = await setup();
    const row = await keys.rotate({ immediate: true });
    await store.deleteSigningKey(row.kid);
    await keys.reload();
    assert.equal(keys.signer(), undefined);
    await store.addSigningKey(row);
    await keys.reload();
    assert.equal(keys.signer()?.kid, row.kid);
    assert.equal(keys.ready(), true);
    assert.deepEqual(
      keys.status().map((k) => [k.kid, k.invalid]),
      [[row.kid, undefined]],
    );
    assert.ok((JSON.parse(keys.jwks().body) as { keys: { kid: string }[] }).keys.some((k) => k.kid === row.kid));
    await store.close();
  });

  it('attack: a deleted row written back with other contents under its kid stays refused, even contents that would pass on their own', async () => {
    const { store, master, keys } = await setup();
    // A store of rows written before the MAC (sealed under the kid alone): there a row sealed again
    // under its kid passes every check by itself.
    const { privateKey, publicJwk } = generateSigningKey('ES256');
    const kid = jwkThumbprint(publicJwk);
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const row = { kid, alg: 'ES256' as const, publicJwk, createdAt: T0, activatesAt: T0, sealedPrivateKey: seal(master, der, kid) };
    await store.addSigningKey(row);
    await keys.reload();
    assert.equal(keys.signer()?.kid, kid);
    await store.deleteSigningKey(kid);
    await keys.reload();
    assert.equal(keys.signer(), undefined);
    await store.addSigningKey({ ...row, sealedPrivateKey: seal(master, der, kid) });
    await keys.reload();
    assert.equal(keys.signer(), undefined);
    assert.match(keys.status().find((k) => k.kid === kid)?.invalid ?? '', /deleted/);
    assert.equal(keys.ready(), false);
    await store.close();
  });

  it('a deleted pending key does not hold back the automatic rotation: a new key is pre-published as if it were absent, and the active key signs until that one does', async () => {
    const { store, clock, keys } = await setup();
    const first = await keys.rotate({ immediate: true });
    clock.t += schedule.rotationInterval! - schedule.publishAhead;
    const { rotated: pending } = await keys.maintain();
    assert.ok(pending, 'rotation_interval pre-publishes the next key');
    await store.deleteSigningKey(pending.kid);
    await keys.reload();
    clock.t += 10;
    const { rotated } = await keys.maintain();
    assert.ok(rotated, 'a new key is pre-published');
    assert.notEqual(rotated.kid, pending.kid);
    // Through the deleted key's time, the key before it signs; then the new one.
    for (const at of [pending.activatesAt - 1, pending.activatesAt, rotated.activatesAt - 1]) {
      assert.equal(keys.signer(at)?.kid, first.kid, `at ${at - T0}`);
    }
    assert.equal(keys.signer(rotated.activatesAt)?.kid, rotated.kid);
    await store.close();
  });

  it('a deleted pending key does not take over after `keys rotate --now` recovered', async () => {
    const { store, clock, keys } = await setup();
    await keys.rotate({ immediate: true });
    clock.t += 1;
    const pending = await keys.rotate();
    await store.deleteSigningKey(pending.kid);
    await keys.reload();
    clock.t += 1;
    const now = await keys.rotate({ immediate: true });
    assert.equal(keys.signer(pending.activatesAt + 1)?.kid, now.kid);
    assert.equal(keys.ready(pending.activatesAt + 1), true);
    await store.close();
  });

  it('attack: a deleted pending key is not dropped for a refused row added after it: whoever writes to the database without the master key cannot delete the pending key, insert a junk row and keep the current key signing past its end', async () => {
    const { store, clock, keys } = await setup();
    const first = await keys.rotate({ immediate: true });
    clock.t += 1;
    const pending = await keys.rotate();
    await store.deleteSigningKey(pending.kid);
    await keys.reload();
    // A row of the attacker's own, added after the pending key: a key pair they generated, sealed
    // under a master key of theirs, with a MAC they cannot make right (one copied from a real row).
    const { privateKey, publicJwk } = generateSigningKey('ES256');
    const kid = jwkThumbprint(publicJwk);
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const junk = {
      kid,
      alg: 'ES256' as const,
      publicJwk,
      createdAt: clock.t + 1,
      activatesAt: pending.activatesAt + 30 * 86_400,
      sealedPrivateKey: seal(generateMasterKey().key, der, kid),
      mac: first.mac as string,
    };
    clock.t += 1;
    await store.addSigningKey(junk);
    await keys.reload();
    assert.match(keys.status().find((k) => k.kid === kid)?.invalid ?? '', /MAC/, 'the junk row is refused');
    assert.match(
      keys.status().find((k) => k.kid === pending.kid)?.invalid ?? '',
      /deleted/,
      'the deleted pending key still holds its place',
    );
    assert.equal(keys.signer(pending.activatesAt - 1)?.kid, first.kid);
    assert.equal(keys.signer(pending.activatesAt), undefined, 'the key before it does not sign past the deleted key’s time');
    assert.equal(keys.ready(pending.activatesAt), false);
    await store.close();
  });

  it('of keys rotated at once in the same second, the later rotation signs, whatever their kids, and every instance agrees', async () => {
    const { store, master, keys } = await setup();
    const other = new KeyManager({ store, master, schedule, now: () => T0 });
    await keys.rotate({ immediate: true });
    // Enough rotations that some later kid sorts before an earlier one.
    for (let i = 0; i < 12; i++) {
      const latest = await keys.rotate({ immediate: true });
      await other.reload();
      assert.equal(keys.signer()?.kid, latest.kid, `rotation ${i + 2}`);
      assert.equal(other.signer()?.kid, latest.kid, `rotation ${i + 2}, another instance`);
    }
    await store.close();
  });
});
