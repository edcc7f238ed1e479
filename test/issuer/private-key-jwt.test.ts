/**
 * private_key_jwt client authentication (RFC 7523 §2.2, §3): signature, iss = sub = client_id,
 * aud naming this server, exp required and bounded, jti replay refused. Client assertions are
 * signed by jose.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type JWK, SignJWT } from 'jose';
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { makeKey } from '../helpers/tokens.ts';

const TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const key = makeKey('ES256', 'wk-1');
let issuer: RunningIssuer;

before(async () => {
  // This file refuses many client authentications from one address on purpose; the per-address
  // limit of those (auth_failure_limit) is test/issuer/auth-failure-limit.test.ts's.
  issuer = await startIssuer({ config: { token_service: { auth_failure_limit: { enabled: false } } } });
  await issuer.service.registerClient({ id: 'workload', scopes: ['api:read'], audiences: ['https://api.test'], jwks: { keys: [key.jwk] } });
});
after(() => issuer?.close());

async function assertion(over: Record<string, unknown> = {}, signWith = key, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: 'workload', sub: 'workload', aud: issuer.url, iat: now, exp: now + 60, jti: crypto.randomUUID(), ...over };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete (claims as Record<string, unknown>)[k];
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: signWith.kid, ...header }).sign(signWith.privateKey);
}

const request = (a: string, extra: Record<string, string> = {}) =>
  issuer.post('/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: TYPE, client_assertion: a, ...extra });

async function expectInvalidClient(res: Response): Promise<void> {
  assert.equal(res.status, 401);
  assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  // RFC 6749 §5.2 / RFC 9110 §15.5.2: every 401 carries a challenge, whatever method was tried.
  assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="tessera"/);
}

describe('private_key_jwt', () => {
  it('authenticates a client by a signed assertion for the issuer (a string, as openid-client sends, or a one-element array)', async () => {
    assert.equal((await request(await assertion())).status, 200);
    assert.equal((await request(await assertion({ aud: [issuer.url] }), { client_id: 'workload' })).status, 200);
  });

  it('refuses an assertion whose aud names other servers besides this issuer (multi-audience replay)', async () => {
    await expectInvalidClient(await request(await assertion({ aud: ['https://x.test', issuer.url] }), { client_id: 'workload' }));
    await expectInvalidClient(await request(await assertion({ aud: [issuer.url, issuer.url] })));
  });

  it('refuses an assertion for an endpoint URL instead of the issuer identifier', async () => {
    await expectInvalidClient(await request(await assertion({ aud: `${issuer.url}/oauth2/token` })));
    await expectInvalidClient(await request(await assertion({ aud: [`${issuer.url}/oauth2/token`] })));
  });

  it('refuses a replayed assertion (same jti)', async () => {
    const a = await assertion();
    assert.equal((await request(a)).status, 200);
    await expectInvalidClient(await request(a));
  });

  it('refuses an assertion signed by another key', async () => {
    await expectInvalidClient(await request(await assertion({}, makeKey('ES256', 'wk-1'))));
  });

  it('refuses an assertion for another audience', async () => {
    await expectInvalidClient(await request(await assertion({ aud: 'https://other-as.test' })));
  });

  it('refuses an expired assertion, one without exp, and one valid for too long', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectInvalidClient(await request(await assertion({ iat: now - 600, exp: now - 300 })));
    await expectInvalidClient(await request(await assertion({ exp: undefined })));
    await expectInvalidClient(await request(await assertion({ exp: now + 3600 })));
  });

  it('attack: an assertion made to live a year (exp − iat), presented in its last minute when its exp alone is near, is refused client_assertion_lifetime_too_long: a stolen one cannot be kept for then', async () => {
    const now = Math.floor(Date.now() / 1000);
    const YEAR = 365 * 86_400;
    await expectInvalidClient(await request(await assertion({ iat: now + 60 - YEAR, exp: now + 60 })));
    // Made 6 minutes ago to live 7: past client_assertion_max_lifetime (5 min) + 30 s of skew.
    await expectInvalidClient(await request(await assertion({ iat: now - 360, exp: now + 60 })));
    await issuer.service.audit.flush();
    const reasons = (await issuer.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 })).slice(-2).map((e) => e.reason);
    assert.deepEqual(reasons, ['client_assertion_lifetime_too_long', 'client_assertion_lifetime_too_long']);
    // Up to the bound and its skew, with or without iat (5 min; an iat set 30 s back, as some clients do).
    assert.equal((await request(await assertion({ iat: now - 30, exp: now + 300 }))).status, 200);
    assert.equal((await request(await assertion({ iat: undefined, exp: now + 300 }))).status, 200);
  });

  it('attack: an assertion whose exp is far ahead (a year, with or without iat) is refused client_assertion_lifetime_too_long, and its jti never reaches the replay cache', async () => {
    const now = Math.floor(Date.now() / 1000);
    const jti = crypto.randomUUID();
    await expectInvalidClient(await request(await assertion({ exp: now + 365 * 86_400, jti })));
    await expectInvalidClient(await request(await assertion({ iat: undefined, exp: now + 365 * 86_400, jti })));
    await expectInvalidClient(await request(await assertion({ iat: undefined, exp: now + 331 })));
    await issuer.service.audit.flush();
    const reasons = (await issuer.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 })).slice(-3).map((e) => e.reason);
    assert.deepEqual(reasons, Array(3).fill('client_assertion_lifetime_too_long'));
    // Unspent: the same jti in an assertion of a sound lifetime is accepted once.
    assert.equal((await request(await assertion({ jti }))).status, 200);
  });

  it('refuses an assertion without jti', async () => {
    await expectInvalidClient(await request(await assertion({ jti: undefined })));
  });

  it('refuses iss different from sub, and a client_id that differs from both', async () => {
    await expectInvalidClient(await request(await assertion({ sub: 'someone-else' })));
    await expectInvalidClient(await request(await assertion(), { client_id: 'other' }));
  });

  it('refuses an HMAC-signed assertion and embedded keys', async () => {
    const hs = makeKey('HS256', 'wk-1');
    await expectInvalidClient(await request(await assertion({}, { ...hs, alg: 'HS256' } as typeof key, { alg: 'HS256' })));
    await expectInvalidClient(await request(await assertion({}, key, { jwk: key.jwk })));
  });

  it('attack: a JWT of another explicit type signed by the client key (at+jwt, dpop+jwt, a request object) is no client assertion (RFC 8725 §3.11, RFC 7523bis client-authentication+jwt)', async () => {
    for (const typ of ['at+jwt', 'dpop+jwt', 'oauth-authz-req+jwt', 'application/secevent+jwt', 'jwt+client-authentication']) {
      await expectInvalidClient(await request(await assertion({}, key, { typ })));
    }
    await issuer.service.audit.flush();
    const reasons = (await issuer.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 })).slice(-5).map((e) => e.reason);
    assert.deepEqual(reasons, Array(5).fill('client_assertion_invalid'));
    // Untyped, typed as a plain JWT, or as a client authentication JWT (any case, with or without application/).
    for (const typ of [
      undefined,
      'JWT',
      'jwt',
      'client-authentication+jwt',
      'application/client-authentication+jwt',
      'Client-Authentication+JWT',
    ]) {
      assert.equal((await request(await assertion({}, key, typ === undefined ? {} : { typ }))).status, 200, String(typ));
    }
  });

  it('refuses an assertion not yet valid (nbf or iat more than 30 s ahead) and claims of the wrong type, audited as client_assertion_invalid', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const over of [{ nbf: now + 120 }, { iat: now + 120 }, { iat: 'now' }, { nbf: 'now' }, { exp: String(now + 60) }]) {
      await expectInvalidClient(await request(await assertion(over)));
    }
    await issuer.service.audit.flush();
    const reasons = (await issuer.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 })).slice(-5).map((e) => e.reason);
    assert.deepEqual(reasons, Array(5).fill('client_assertion_invalid'));
  });

  it('attack: an assertion used once is refused at every endpoint that authenticates clients (token, introspection, revocation), in either order', async () => {
    const form = (a: string) => ({ client_assertion_type: TYPE, client_assertion: a });
    const first = await assertion();
    assert.equal((await request(first)).status, 200);
    await expectInvalidClient(await issuer.post('/oauth2/introspect', { token: 'x', ...form(first) }));
    await expectInvalidClient(await issuer.post('/oauth2/revoke', { token: 'x', ...form(first) }));
    const second = await assertion();
    assert.equal((await issuer.post('/oauth2/introspect', { token: 'x', ...form(second) })).status, 200);
    await expectInvalidClient(await issuer.post('/oauth2/revoke', { token: 'x', ...form(second) }));
    await expectInvalidClient(await request(second));
    await issuer.service.audit.flush();
    const replayed = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.reason === 'client_assertion_replayed');
    assert.deepEqual(
      replayed.slice(-4).map((e) => e.kind),
      ['introspection.denied', 'revocation.denied', 'revocation.denied', 'token.denied'],
    );
  });

  it('attack: an assertion beside a secret (Basic, or client_secret in the body) is two methods, 400 invalid_request, at the token, introspection and revocation endpoints (RFC 6749 §2.3)', async () => {
    const secretClient = await issuer.addClient({ id: 'two-methods', scopes: [] });
    for (const path of ['/oauth2/token', '/oauth2/introspect', '/oauth2/revoke']) {
      const base: Record<string, string> = path === '/oauth2/token' ? { grant_type: 'client_credentials' } : { token: 'x' };
      const a = { client_assertion_type: TYPE, client_assertion: await assertion() };
      const viaBasic = await issuer.post(path, { ...base, ...a }, { authorization: basic(secretClient.id, secretClient.secret) });
      const viaBody = await issuer.post(path, { ...base, ...a, client_id: 'workload', client_secret: secretClient.secret });
      for (const res of [viaBasic, viaBody]) {
        assert.equal(res.status, 400, path);
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request', path);
      }
    }
  });

  it('refuses the wrong client_assertion_type', async () => {
    const res = await issuer.post('/oauth2/token', {
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:example:other',
      client_assertion: await assertion(),
    });
    await expectInvalidClient(res);
  });

  it('refuses a secret client presenting an assertion, and a key client presenting a secret', async () => {
    const secretClient = await issuer.addClient({ id: 'secret-client', scopes: [] });
    await expectInvalidClient(await request(await assertion({ iss: 'secret-client', sub: 'secret-client' })));
    await expectInvalidClient(
      await issuer.post('/oauth2/token', { grant_type: 'client_credentials', client_id: 'workload', client_secret: secretClient.secret }),
    );
    const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('workload', 'tcs_x') });
    assert.equal(res.status, 401);
  });

  it('fetches keys from a jwks_uri', async () => {
    const remote = makeKey('ES256', 'remote-1');
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [remote.jwk] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
      await issuer.service.registerClient({ id: 'remote-workload', scopes: [], audiences: ['https://api.test'], jwksUri: uri });
      const a = await assertion({ iss: 'remote-workload', sub: 'remote-workload' }, remote);
      assert.equal((await request(a)).status, 200);
    } finally {
      server.close();
    }
  });

  it('a client whose jwks_uri is down is refused as keys unavailable, not as a bad signature (the first assertion after a failed fetch included)', async () => {
    const remote = makeKey('ES256', 'down-1');
    let fetches = 0;
    const server = createServer((_req, res) => {
      fetches++;
      res.writeHead(503).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
      await issuer.service.registerClient({ id: 'down-workload', scopes: [], audiences: ['https://api.test'], jwksUri: uri });
      for (let i = 0; i < 2; i++) {
        await expectInvalidClient(await request(await assertion({ iss: 'down-workload', sub: 'down-workload' }, remote)));
      }
      assert.equal(fetches, 1, 'one fetch per cooldown');
      await issuer.service.audit.flush();
      const reasons = (await issuer.store.queryAudit({ limit: 1000 }))
        .filter((e) => e.kind === 'token.denied' && e.reason?.startsWith('client_'))
        .slice(-2)
        .map((e) => e.reason);
      assert.deepEqual(reasons, ['client_keys_unavailable', 'client_keys_unavailable']);
    } finally {
      server.close();
    }
  });
  it('a JWKS with a repeated kid for the same algorithm, or two keys without kid for one algorithm, is refused at registration (jwks_key_ambiguous, naming the kid): no assertion could ever pick one of them', async () => {
    const a = makeKey('ES256', 'dup');
    const b = makeKey('ES256', 'dup');
    const { kid: _a, ...bareA } = a.jwk as Record<string, unknown>;
    const { kid: _b, ...bareB } = b.jwk as Record<string, unknown>;
    for (const [keys, pattern] of [
      [[a.jwk, b.jwk], /JWKS keys 0 and 1 both have kid "dup" for ES256/],
      [[makeKey('ES256', 'other').jwk, a.jwk, b.jwk], /JWKS keys 1 and 2 both have kid "dup" for ES256/],
      [[bareA, bareB], /JWKS keys 0 and 1 both have no kid for ES256/],
      // A key without kid is picked only when no other key verifies its algorithm.
      [[a.jwk, bareB], /JWKS key 1 has no kid and key 0 also verifies ES256/],
    ] as const) {
      await assert.rejects(
        issuer.service.registerClient({ id: 'ambiguous-workload', scopes: [], audiences: ['https://api.test'], jwks: { keys } }),
        (e: Error & { code?: string; field?: string }) => {
          assert.equal(e.code, 'jwks_key_ambiguous', e.message);
          assert.equal(e.field, 'jwks');
          assert.match(e.message, pattern);
          return true;
        },
      );
      assert.equal(await issuer.store.getClient('ambiguous-workload'), undefined);
    }
  });

  it('a repeated kid for different algorithms (an EC and an RSA key) and a key without kid beside keys of other algorithms are accepted, and each key authenticates', async () => {
    const ec = makeKey('ES256', 'shared');
    const rsa = makeKey('RS256', 'shared');
    const bareKey = makeKey('ES256', 'unnamed');
    const { kid: _kid, ...bareJwk } = bareKey.jwk;
    await issuer.service.registerClient({
      id: 'shared-kid',
      scopes: [],
      audiences: ['https://api.test'],
      jwks: { keys: [ec.jwk, rsa.jwk] },
    });
    await issuer.service.registerClient({
      id: 'bare-kid',
      scopes: [],
      audiences: ['https://api.test'],
      jwks: { keys: [bareJwk, rsa.jwk] },
    });
    const claims = { iss: 'shared-kid', sub: 'shared-kid' };
    assert.equal((await request(await assertion(claims, ec))).status, 200);
    assert.equal((await request(await assertion(claims, rsa, { alg: 'RS256' }))).status, 200);
    const bareClaims = { iss: 'bare-kid', sub: 'bare-kid' };
    assert.equal((await request(await assertion(bareClaims, bareKey, { kid: undefined }))).status, 200);
    assert.equal((await request(await assertion(bareClaims, rsa, { alg: 'RS256' }))).status, 200);
  });

  it('a client whose keys hold two that fit the assertion (a JWKS stored before registration refused it, or a jwks_uri) is refused as key ambiguous, not as a bad signature', async () => {
    const a = makeKey('ES256', 'dup');
    const b = makeKey('ES256', 'dup');
    const record = await issuer.store.getClient('workload');
    assert.ok(record);
    await issuer.store.createClient({ ...record, id: 'legacy-dup', jwks: { keys: [a.jwk, b.jwk] } });
    const { kid: _a, ...bareA } = a.jwk as Record<string, unknown>;
    const { kid: _b, ...bareB } = b.jwk as Record<string, unknown>;
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [bareA, bareB] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
      await issuer.service.registerClient({ id: 'remote-bare', scopes: [], audiences: ['https://api.test'], jwksUri: uri });
      await expectInvalidClient(await request(await assertion({ iss: 'legacy-dup', sub: 'legacy-dup' }, a)));
      await expectInvalidClient(await request(await assertion({ iss: 'remote-bare', sub: 'remote-bare' }, b, { kid: undefined })));
      await issuer.service.audit.flush();
      const reasons = (await issuer.store.queryAudit({ limit: 1000 }))
        .filter((e) => e.kind === 'token.denied' && e.reason?.startsWith('client_'))
        .slice(-2)
        .map((e) => e.reason);
      assert.deepEqual(reasons, ['client_assertion_key_ambiguous', 'client_assertion_key_ambiguous']);
    } finally {
      server.close();
    }
  });

  it('attack: a client JWKS holding an RSA key over 4096 bits (each check costs up to 40 ES256 ones, before anything vouches for the caller) is refused at registration (jwks_invalid, naming the key), and one under 2048 bits too; 4096 bits register', async () => {
    for (const [bits, pattern] of [
      [4608, /JWKS key 1 \("big"\): RSA key is 4608 bits; at most 4096 are accepted here/],
      [1024, /JWKS key 1 \("big"\): RSA key is 1024 bits; at least 2048 are required/],
    ] as const) {
      const big = { ...(generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ format: 'jwk' }) as JWK), kid: 'big' };
      await assert.rejects(
        issuer.service.registerClient({ id: 'big-key', scopes: [], audiences: ['https://api.test'], jwks: { keys: [key.jwk, big] } }),
        (e: Error & { code?: string; field?: string }) => {
          assert.equal(e.code, 'jwks_invalid', e.message);
          assert.equal(e.field, 'jwks');
          assert.match(e.message, pattern);
          return true;
        },
      );
      assert.equal(await issuer.store.getClient('big-key'), undefined);
    }
    const pair = generateKeyPairSync('rsa', { modulusLength: 4096 });
    const rsa = {
      ...key,
      kid: 'rsa-4096',
      privateKey: pair.privateKey,
      jwk: { ...(pair.publicKey.export({ format: 'jwk' }) as JWK), kid: 'rsa-4096' },
    };
    await issuer.service.registerClient({ id: 'rsa-4096', scopes: [], audiences: ['https://api.test'], jwks: { keys: [rsa.jwk] } });
    const ok = await request(await assertion({ iss: 'rsa-4096', sub: 'rsa-4096' }, rsa, { alg: 'RS256' }));
    assert.equal(ok.status, 200, await ok.text());
  });

  it('attack: an RSA key over 4096 bits served by a client jwks_uri (or stored before registration refused it) is refused client_assertion_key_too_large, however well signed; one under 2048 bits never verifies', async () => {
    const big = generateKeyPairSync('rsa', { modulusLength: 4608 });
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const bigJwk = { ...(big.publicKey.export({ format: 'jwk' }) as JWK), kid: 'big' };
    const smallJwk = { ...(small.publicKey.export({ format: 'jwk' }) as JWK), kid: 'small' };
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [bigJwk, smallJwk] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    // jose refuses to sign with an RSA key under 2048 bits: the assertion is made by hand.
    const rs256 = (claims: Record<string, unknown>, kid: string, privateKey: KeyObject) => {
      const now = Math.floor(Date.now() / 1000);
      const input = [
        { alg: 'RS256', kid },
        { aud: issuer.url, iat: now, exp: now + 60, jti: crypto.randomUUID(), ...claims },
      ]
        .map((part) => Buffer.from(JSON.stringify(part)).toString('base64url'))
        .join('.');
      return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
    };
    try {
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
      await issuer.service.registerClient({ id: 'remote-big', scopes: [], audiences: ['https://api.test'], jwksUri: uri });
      const record = await issuer.store.getClient('workload');
      assert.ok(record);
      await issuer.store.createClient({ ...record, id: 'legacy-big', jwks: { keys: [bigJwk] } });
      const remote = { iss: 'remote-big', sub: 'remote-big' };
      await expectInvalidClient(await request(rs256(remote, 'big', big.privateKey)));
      await expectInvalidClient(await request(rs256({ iss: 'legacy-big', sub: 'legacy-big' }, 'big', big.privateKey)));
      await expectInvalidClient(await request(rs256(remote, 'small', small.privateKey)));
      await issuer.service.audit.flush();
      const reasons = (await issuer.store.queryAudit({ limit: 1000 }))
        .filter((e) => e.kind === 'token.denied' && e.reason?.startsWith('client_'))
        .slice(-3)
        .map((e) => e.reason);
      assert.deepEqual(reasons, ['client_assertion_key_too_large', 'client_assertion_key_too_large', 'client_assertion_signature_invalid']);
    } finally {
      server.close();
    }
  });

  it('attack: a jwks_uri with user:password@ is refused at registration (jwks_uri_invalid), as an issuer jwks_uri is, and its password is not echoed', async () => {
    // fetch refuses such a URL at every attempt, quoting it whole: the client could never
    // authenticate, and its password would end in the warning log.
    await assert.rejects(
      issuer.service.registerClient({
        id: 'userinfo-workload',
        scopes: [],
        audiences: ['https://api.test'],
        jwksUri: 'https://keys-user:keys-password-4d2b@keys.test/jwks',
      }),
      (e: Error & { code?: string; field?: string }) => {
        assert.equal(e.code, 'jwks_uri_invalid');
        assert.equal(e.field, 'jwksUri');
        assert.ok(!e.message.includes('keys-password-4d2b'), e.message);
        return true;
      },
    );
    assert.equal(await issuer.store.getClient('userinfo-workload'), undefined);
  });
});

const pgUrl = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgReachable = await postgresReachable(pgUrl);

describe('private_key_jwt on each store', () => {
  for (const backend of ['sqlite', 'postgres'] as const) {
    it(`attack: a jti holding a NUL is recorded like any other on ${backend} (once accepted, then refused as replayed), never a 500`, {
      skip: backend === 'postgres' && !pgReachable ? 'PostgreSQL is not reachable' : false,
    }, async () => {
      const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
      const running = await startIssuer(
        backend === 'postgres' ? { store: await PostgresStore.open({ connectionString: pgUrl, schema }) } : {},
      );
      try {
        await running.service.registerClient({ id: 'workload', scopes: [], audiences: ['https://api.test'], jwks: { keys: [key.jwk] } });
        const now = Math.floor(Date.now() / 1000);
        const a = await new SignJWT({ iss: 'workload', sub: 'workload', aud: running.url, iat: now, exp: now + 60, jti: 'a\u0000b' })
          .setProtectedHeader({ alg: 'ES256', kid: key.kid })
          .sign(key.privateKey);
        const send = () =>
          running.post('/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: TYPE, client_assertion: a });
        assert.equal((await send()).status, 200);
        await expectInvalidClient(await send());
        await running.service.audit.flush();
        const last = (await running.store.queryAudit({ kinds: ['token.denied'], limit: 1000 })).at(-1);
        assert.equal(last?.reason, 'client_assertion_replayed');
      } finally {
        await running.close();
        if (backend === 'postgres') {
          const c = new pg.Client({ connectionString: pgUrl });
          await c.connect();
          await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
          await c.end();
        }
      }
    });
  }
});
