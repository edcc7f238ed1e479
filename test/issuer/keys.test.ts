/**
 * Signing keys: kid = RFC 7638 thumbprint, private keys sealed at rest, rotation with
 * pre-publication and overlap that a running server follows without a restart, and a JWKS with
 * public members only.
 */
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, createLocalJWKSet, decodeJwt, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from 'jose';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { KeyManager, unsealSigningKey } from '../../src/issuer/keys.ts';
import { generateMasterKey, MasterKeyError, seal, unseal } from '../../src/issuer/secrets.ts';
import { TokenService } from '../../src/issuer/service.ts';
import { createTokenServiceFromConfig } from '../../src/server/bootstrap.ts';
import { createTokenServiceHandler } from '../../src/server/token-handler.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { createVerifier } from '../../src/verifier.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

let now = 1_900_000_000;
const clock = () => now * 1000;
let issuer: RunningIssuer;
let agent: { id: string; secret: string };

before(async () => {
  issuer = await startIssuer({ clock, config: { token_service: { keys: { publish_ahead: '1h', jwks_max_age: '10m' } } } });
  agent = await issuer.addClient({ id: 'agent', scopes: ['api:read'] });
});
after(() => issuer?.close());

async function jwks(): Promise<{ body: JSONWebKeySet; cacheControl: string | null }> {
  const res = await fetch(`${issuer.url}/.well-known/jwks.json`);
  assert.equal(res.headers.get('content-type'), 'application/jwk-set+json');
  return { body: (await res.json()) as JSONWebKeySet, cacheControl: res.headers.get('cache-control') };
}

async function issue(): Promise<string> {
  const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(agent.id, agent.secret) });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

describe('the JWKS', () => {
  it('publishes public members, kid, alg and use only, with a max-age from the configuration', async () => {
    const { body, cacheControl } = await jwks();
    assert.equal(cacheControl, 'public, max-age=600');
    assert.equal(body.keys.length, 1);
    const key = body.keys[0] as Record<string, unknown>;
    assert.deepEqual(Object.keys(key).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.equal(key.use, 'sig');
    assert.equal(key.alg, 'ES256');
  });

  it('names each key by its RFC 7638 thumbprint', async () => {
    const key = (await jwks()).body.keys[0] as Record<string, string>;
    assert.equal(key.kid, await calculateJwkThumbprint({ kty: key.kty, crv: key.crv, x: key.x, y: key.y } as never, 'sha256'));
  });

  it('issues tokens that jose verifies with the published JWKS', async () => {
    const token = await issue();
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet((await jwks()).body), {
      issuer: issuer.url,
      audience: 'https://api.test',
      typ: 'at+jwt',
      currentDate: new Date(clock()),
    });
    assert.equal(payload.client_id, 'agent');
    assert.equal(protectedHeader.alg, 'ES256');
  });
});

describe('rotation', () => {
  it('pre-publishes the next key, switches at its activation without a restart, and keeps the old one until its tokens expire', async () => {
    const oldKid = decodeProtectedHeader(await issue()).kid;
    const oldToken = await issue();

    // Rotation from another process (the CLI): its own service instance on the same store.
    const cli = new TokenService({ config: issuer.service.config, store: issuer.store, master: issuer.master, clock });
    await cli.keys.reload();
    const next = await cli.keys.rotate();
    assert.equal(next.activatesAt, now + 3600);

    await issuer.service.sync();
    let published = (await jwks()).body.keys.map((k) => k.kid);
    assert.deepEqual(published.sort(), [oldKid, next.kid].sort(), 'the next key is published before it signs');
    assert.equal(decodeProtectedHeader(await issue()).kid, oldKid, 'and does not sign yet');
    assert.deepEqual(
      issuer.service.keys.status().map((k) => k.state),
      ['active', 'pending'],
    );

    now += 3600;
    assert.equal(decodeProtectedHeader(await issue()).kid, next.kid, 'signs from its activation time');
    published = (await jwks()).body.keys.map((k) => k.kid);
    assert.ok(published.includes(oldKid as string), 'the retired key stays published');
    await jwtVerify(oldToken, createLocalJWKSet((await jwks()).body), {
      currentDate: new Date((decodeJwt(oldToken).iat as number) * 1000),
    });

    // sync_interval (1s) + max_access_token_ttl (1h) + skew after retirement, the old key leaves the JWKS and the store.
    now += 1 + 3600 + 61;
    await issuer.service.sync();
    published = (await jwks()).body.keys.map((k) => k.kid);
    assert.deepEqual(published, [next.kid]);
    assert.equal(
      (await issuer.store.listSigningKeys()).some((k) => k.kid === oldKid),
      false,
    );
  });

  it('an immediate rotation (after a compromise) signs at once', async () => {
    const before = decodeProtectedHeader(await issue()).kid;
    const record = await issuer.service.keys.rotate({ immediate: true });
    assert.notEqual(record.kid, before);
    assert.equal(decodeProtectedHeader(await issue()).kid, record.kid);
  });

  it('with rotation_interval, a running server pre-publishes the next key by itself', async () => {
    let t = 1_900_000_000;
    const auto = await startIssuer({
      clock: () => t * 1000,
      config: { token_service: { keys: { publish_ahead: '1h', rotation_interval: '3h' }, max_access_token_ttl: '1h' } },
    });
    try {
      await auto.service.sync();
      assert.equal(auto.service.keys.status().length, 1);
      t += 2 * 3600;
      await auto.service.sync();
      const status = auto.service.keys.status();
      assert.deepEqual(
        status.map((k) => k.state),
        ['active', 'pending'],
      );
      assert.equal(status[1]?.activatesAt, t + 3600);
    } finally {
      await auto.close();
    }
  });
});

describe('private keys at rest', () => {
  it('are sealed: the database holds neither the key nor its JWK d', async () => {
    const [record] = await issuer.store.listSigningKeys();
    assert.ok(record);
    const der = unsealSigningKey(issuer.master, record);
    const d = (createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' }) as { d: string }).d;
    const files = ['tessera.db', 'tessera.db-wal'].map((f) => readFileSync(join(issuer.dir, f)));
    for (const bytes of files) {
      assert.equal(bytes.includes(der), false);
      assert.equal(bytes.includes(der.toString('base64')), false);
      assert.equal(bytes.includes(d), false);
    }
  });

  it('do not open with another master key, or under another key id', () => {
    const sealed = seal(issuer.master, Buffer.from('secret key bytes'), 'kid-1');
    assert.equal(unseal(issuer.master, sealed, 'kid-1').toString(), 'secret key bytes');
    assert.throws(() => unseal(generateMasterKey().key, sealed, 'kid-1'), MasterKeyError);
    assert.throws(() => unseal(issuer.master, sealed, 'kid-2'), MasterKeyError);
  });

  it('a rotation under another master key than the stored keys were sealed with is refused (master_key_mismatch) and adds no key', async () => {
    // `tessera keys rotate` run with a stale TESSERA_MASTER_KEY: the key it added would be one the
    // server cannot open, and every token request would fail once it activates.
    const wrong = new KeyManager({
      store: issuer.store,
      master: generateMasterKey().key,
      schedule: { algorithm: 'ES256', publishAhead: 3600, jwksMaxAge: 600, maxTokenTtl: 3600, rotationInterval: undefined },
      now: () => now,
    });
    await wrong.reload();
    const before = (await issuer.store.listSigningKeys()).map((k) => k.kid);
    for (const options of [{}, { immediate: true }]) {
      await assert.rejects(
        wrong.rotate(options),
        (e: unknown) => e instanceof MasterKeyError && e.code === 'master_key_mismatch' && /no key was added/.test(e.message),
      );
    }
    assert.deepEqual(
      (await issuer.store.listSigningKeys()).map((k) => k.kid),
      before,
    );
  });
});

describe('algorithms', () => {
  for (const alg of ['EdDSA', 'RS256'] as const) {
    it(`generates and signs with ${alg}`, async () => {
      const other = await startIssuer({ config: { token_service: { keys: { algorithm: alg } } } });
      try {
        const c = await other.addClient({ id: 'agent', scopes: ['api:read'] });
        const res = await other.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret) });
        const token = ((await res.json()) as { access_token: string }).access_token;
        assert.equal(decodeProtectedHeader(token).alg, alg);
        const set = (await (await fetch(`${other.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
        const { payload } = await jwtVerify(token, createLocalJWKSet(set), { issuer: other.url });
        assert.equal(decodeJwt(token).sub, payload.sub);
      } finally {
        await other.close();
      }
    });
  }
});

describe('pre-publication with publish_ahead equal to jwks_max_age (the least the configuration allows)', () => {
  it('a verifier that fetched the JWKS from another instance just before that one synced still finds the new kid while its cache is fresh', async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    const sync = 5;
    const schedule = {
      algorithm: 'ES256' as const,
      publishAhead: 600,
      jwksMaxAge: 600,
      maxTokenTtl: 600,
      rotationInterval: undefined,
      propagation: sync,
    };
    let t = 1_900_000_000;
    const a = new KeyManager({ store, master, schedule, now: () => t });
    await a.rotate({ immediate: true });
    const b = new KeyManager({ store, master, schedule, now: () => t });
    await b.reload();
    // A rotates during second t (its clock reads whole seconds); B reads the store `sync` seconds
    // later. A verifier fetches B's JWKS at the last moment before that and keeps it for max-age.
    await a.rotate();
    const fetched = JSON.parse(b.jwks().body) as { keys: { kid: string }[] };
    const { maxAge } = b.jwks();
    const fetchedAt = t + 1 + sync;
    for (let at = t; at < fetchedAt + maxAge; at++) {
      t = at;
      const kid = a.signer()?.kid;
      assert.ok(
        fetched.keys.some((k) => k.kid === kid),
        `at +${at - 1_900_000_000}s A signs with ${kid}, which the cached JWKS does not have`,
      );
    }
    await store.close();
  });
});

describe('retirement after tessera keys rotate --now at one instance', () => {
  it('keeps the old key published until the last token another instance signed with it before its sync has expired (clock skew included)', async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    const sync = 60;
    const schedule = {
      algorithm: 'ES256' as const,
      publishAhead: 3600,
      jwksMaxAge: 600,
      maxTokenTtl: 600,
      rotationInterval: undefined,
      propagation: sync,
    };
    let t = 1_900_000_000;
    const a = new KeyManager({ store, master, schedule, now: () => t });
    await a.rotate({ immediate: true });
    const b = new KeyManager({ store, master, schedule, now: () => t });
    await b.reload();
    const old = a.signer()?.kid as string;
    t += 1;
    await a.rotate({ immediate: true });
    assert.notEqual(a.signer()?.kid, old);
    // B signs with the old key until its next sync, `sync` seconds later, for the longest lifetime.
    const exp = t + sync + schedule.maxTokenTtl;
    assert.equal(b.signer(t + sync)?.kid, old);
    // A verifier allows up to 60 s of clock skew past exp.
    t = exp + 60;
    assert.notEqual(a.lookup(old, 'ES256'), 'unknown');
    assert.ok((JSON.parse(a.jwks().body) as { keys: { kid: string }[] }).keys.some((k) => k.kid === old));
    assert.deepEqual((await a.maintain()).removed, []);
    await store.close();
  });
});

describe('two instances rotating in the same second', () => {
  it('agree on the active key whatever order the store lists equal keys in', async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    const schedule = { algorithm: 'ES256' as const, publishAhead: 3600, jwksMaxAge: 600, maxTokenTtl: 600, rotationInterval: undefined };
    const at = () => 1_900_000_000;
    const a = new KeyManager({ store, master, schedule, now: at });
    await a.rotate({ immediate: true });
    await a.rotate({ immediate: true });
    // Another instance whose database returns the two (same activation, same creation) in the other order.
    const reversed = new Proxy(store, {
      get: (target, p) =>
        p === 'listSigningKeys' ? async () => (await target.listSigningKeys()).reverse() : Reflect.get(target, p, target),
    });
    const b = new KeyManager({ store: reversed, master, schedule, now: at });
    await b.reload();
    assert.equal(a.signer()?.kid, b.signer()?.kid);
    const active = a.status().filter((k) => k.state === 'active');
    assert.equal(active.length, 1);
    await store.close();
  });
});

describe('another instance rotating at once (tessera keys rotate --now)', () => {
  it('a token signed with a key this instance has not loaded yet is verified after one read of the store, not refused as token_kid_unknown', async () => {
    const store = SqliteStore.open({ path: ':memory:' });
    const master = generateMasterKey().key;
    const schedule = { algorithm: 'ES256' as const, publishAhead: 3600, jwksMaxAge: 600, maxTokenTtl: 600, rotationInterval: undefined };
    const t = Math.floor(Date.now() / 1000);
    const at = () => t;
    const a = new KeyManager({ store, master, schedule, now: at });
    await a.rotate({ immediate: true });
    const b = new KeyManager({ store, master, schedule, now: at });
    await b.reload();
    const issuerUrl = 'https://issuer.rotate.test';
    const verifier = createVerifier(
      {
        issuers: [{ issuer: issuerUrl, audiences: ['https://api.test'], jwks_uri: `${issuerUrl}/jwks`, token_type: 'at+jwt' }],
        dpop: { mode: 'disabled' },
      },
      { keySources: { [issuerUrl]: b } },
    );
    // Instance A rotates at once and signs with the new key; B has not synced yet.
    await a.rotate({ immediate: true });
    const claims = JSON.stringify({
      iss: issuerUrl,
      sub: 'agent',
      aud: 'https://api.test',
      iat: t,
      exp: t + 300,
      jti: 'j-1',
      client_id: 'agent',
    });
    const token = (a.signer(t) as NonNullable<ReturnType<KeyManager['signer']>>).sign(claims);
    const result = await verifier.verify({ method: 'GET', url: 'https://api.test/x', headers: { authorization: [`Bearer ${token}`] } });
    assert.equal(result.ok, true, result.ok ? '' : result.error.code);
    // A kid no instance has is still refused, and asks the store again only after a cooldown.
    let reads = 0;
    const counting = new Proxy(store, {
      get: (target, p) =>
        p === 'listSigningKeys'
          ? async () => {
              reads++;
              return target.listSigningKeys();
            }
          : Reflect.get(target, p, target),
    });
    const c = new KeyManager({ store: counting, master, schedule, now: at });
    await c.reload();
    reads = 0;
    assert.equal(await c.refreshAfterMiss(), false);
    assert.equal(await c.refreshAfterMiss(), false);
    assert.equal(reads, 1);
    await store.close();
  });
});

/**
 * Two token service instances on one SQLite file and master key (instance A syncing only every
 * 60 s, so nothing but an unknown kid makes it read a key B adds), on one clock `later` moves.
 */
function twoInstances(name: string) {
  const dir = mkdtempSync(join(tmpdir(), `tessera-${name}-`));
  const master = generateMasterKey().key;
  const issuerUrl = `https://issuer.${name}.test`;
  const config = parseConfig(configSchema, { data_dir: dir, token_service: { issuer: issuerUrl, sync_interval: '60s' } });
  const storeA = SqliteStore.open({ path: join(dir, 'tessera.db') });
  const storeB = SqliteStore.open({ path: join(dir, 'tessera.db') });
  // B's key must activate after A's (`later`): keys activated in the same second are ordered by
  // kid, so B's would be the active one only half the time (and B would sign with A's key otherwise).
  let time = Date.now();
  const clock = () => time;
  const a = createTokenServiceFromConfig(config, { store: storeA, master, clock });
  const b = createTokenServiceFromConfig(config, { store: storeB, master, clock });
  return {
    a,
    b,
    issuerUrl,
    later: (ms: number) => {
      time += ms;
    },
    close: async () => {
      await a.close();
      await b.close();
      await storeA.close();
      await storeB.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('token service: a token another instance signed right after rotating at once', () => {
  it('is exchanged, introspected and revoked by this instance before its next sync, not taken for unknown', async () => {
    const { a, b, issuerUrl, later, close } = twoInstances('rotate-now');
    try {
      await a.keys.rotate({ immediate: true });
      await a.start();
      await b.start();
      const { secret } = await a.registerClient({
        id: 'rotating-agent',
        scopes: ['api:read'],
        audiences: ['https://api.test'],
        grantTypes: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      });
      const authorization = basic('rotating-agent', secret as string);
      const request = (params: Record<string, string>) => ({
        params: new URLSearchParams(params),
        authorization,
        endpointUrl: `${issuerUrl}/oauth2/token`,
      });
      // B rotates at once (`tessera keys rotate --now` on B's host) and signs with its new key.
      later(2000);
      await b.keys.rotate({ immediate: true });
      const user = await b.mint({ clientId: 'rotating-agent', subject: 'alice', ttl: 600, scopes: ['api:read'] });
      const introspected = await a.introspect(request({ token: user.access_token }));
      assert.equal(introspected.active, true);
      assert.equal(introspected.sub, 'alice');
      const exchanged = await a.token(
        request({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: user.access_token,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        }),
      );
      assert.equal(typeof exchanged.access_token, 'string');
      const other = await b.mint({ clientId: 'rotating-agent', subject: 'bob', ttl: 600, scopes: ['api:read'] });
      await a.revoke(request({ token: other.access_token }));
      assert.equal((await a.introspect(request({ token: other.access_token }))).active, false);
      await b.sync();
      assert.equal((await b.introspect(request({ token: other.access_token }))).active, false, 'revoked in the store, not only in A');
    } finally {
      await close();
    }
  });
});

describe('admin API: an admin token another instance signed right after rotating at once', () => {
  it('is let in by this instance before its next sync (a grant tree answered, a revocation done), not refused 401 admin_token_invalid as a forgery', async () => {
    const { a, b, issuerUrl, later, close } = twoInstances('rotate-now-admin');
    const tokens = createTokenServiceHandler(a);
    const server = createServer((req, res) => {
      if (!tokens(req, res)) res.writeHead(404).end();
    });
    try {
      await a.keys.rotate({ immediate: true });
      await a.start();
      await b.start();
      await a.registerClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [issuerUrl] });
      await a.registerClient({ id: 'agent', scopes: ['api:read'], audiences: ['https://api.test'] });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      // B rotates at once (`tessera keys rotate --now` on B's host) and signs with its new key.
      later(2000);
      await b.keys.rotate({ immediate: true });
      const admin = await b.mint({ clientId: 'ops', subject: 'operator', ttl: 600, scopes: ['tessera:admin'], audiences: [issuerUrl] });
      const agent = await b.mint({ clientId: 'agent', subject: 'alice', ttl: 600, scopes: ['api:read'], audiences: ['https://api.test'] });
      const kid = (t: string) => (JSON.parse(Buffer.from(t.split('.')[0] as string, 'base64url').toString()) as { kid: string }).kid;
      assert.ok(
        !(JSON.parse(a.keys.jwks().body) as JSONWebKeySet).keys.some((k) => k.kid === kid(admin.access_token)),
        'A has not loaded B’s key',
      );
      const tree = await fetch(`${url}/oauth2/admin/grants/${agent.grant_id}`, {
        headers: { authorization: `Bearer ${admin.access_token}` },
      });
      assert.equal(tree.status, 200, await tree.clone().text());
      const revoked = await fetch(`${url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ grant_id: agent.grant_id }),
      });
      assert.equal(revoked.status, 200);
      assert.deepEqual(await revoked.json(), { revoked_grants: [agent.grant_id] });
      // A token no instance signed is still refused.
      const forged = `${admin.access_token.slice(0, -4)}AAAA`;
      const refused = await fetch(`${url}/oauth2/admin/grants/${agent.grant_id}`, { headers: { authorization: `Bearer ${forged}` } });
      assert.equal(refused.status, 401);
    } finally {
      server.closeAllConnections();
      server.close();
      await close();
    }
  });
});

describe('a custom Store written before addSigningKey answered whether it added', () => {
  it('a rotation through one (its addSigningKey resolves undefined, having added the key) returns the key, not signing_key_pending', async () => {
    // The interface's earlier `Promise<void>`: such a store ignores `unlessPendingAfter` and adds.
    const store = SqliteStore.open({ path: ':memory:' });
    const older = new Proxy(store, {
      get(target, name, receiver) {
        if (name === 'addSigningKey') {
          return async (...args: Parameters<typeof store.addSigningKey>) => {
            await target.addSigningKey(...args);
          };
        }
        const value = Reflect.get(target, name, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    try {
      const keys = new KeyManager({
        store: older,
        master: issuer.master,
        schedule: { algorithm: 'ES256', publishAhead: 3600, jwksMaxAge: 600, maxTokenTtl: 3600, rotationInterval: undefined },
        now: () => now,
      });
      await keys.reload();
      const record = await keys.rotate();
      assert.deepEqual(
        (await store.listSigningKeys()).map((k) => k.kid),
        [record.kid],
      );
      assert.equal(keys.status().find((k) => k.kid === record.kid)?.state, 'pending');
    } finally {
      await store.close();
    }
  });
});
