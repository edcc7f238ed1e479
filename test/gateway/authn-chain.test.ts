/**
 * Authentication strategies per route: an RFC 7662 introspection route, a `[jwt, static]` chain
 * (each token kind goes to its own verifier), passthrough (explicitly allowed), and a per-subject
 * rate limit on the proxy path.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AUDIENCE, baseConfig, STATIC_TOKEN, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

describe('gateway: authentication strategies', () => {
  let upstream: Upstream;
  let introspection: Upstream;
  let gw: TestGateway;
  const introspected: string[] = [];
  before(async () => {
    upstream = await startUpstream();
    introspection = await startUpstream((_req, res, body) => {
      const t = new URLSearchParams(body).get('token') ?? '';
      introspected.push(t);
      const active = t === 'opaque-good-token' || t === 'v4.local.opaque-good-token';
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(
          active
            ? { active, sub: 'opaque-user', scope: 'api:read', client_id: 'opaque-client', exp: Math.floor(Date.now() / 1000) + 60 }
            : { active },
        ),
      );
    });
    gw = await startGateway({
      ...baseConfig(),
      introspection: { endpoint: `${introspection.url}/introspect`, client_id: 'gw', client_secret: 'secret' },
      gateway: {
        allow_passthrough: true,
        routes: [
          {
            id: 'opaque',
            match: { path_prefix: '/opaque' },
            upstream: { url: upstream.url },
            auth: 'introspection',
            rules: [{ scopes: ['api:read'] }],
            identity_headers: ['subject'],
          },
          {
            id: 'chain',
            match: { path_prefix: '/chain' },
            upstream: { url: upstream.url },
            auth: ['jwt', 'static'],
            rules: [{ scopes: ['api:read'] }],
            identity_headers: ['subject'],
          },
          {
            id: 'either',
            match: { path_prefix: '/either' },
            upstream: { url: upstream.url },
            auth: ['jwt', 'introspection'],
            rules: [{ scopes: ['api:read'] }],
            identity_headers: ['subject'],
          },
          {
            id: 'pass',
            match: { path_prefix: '/pass' },
            upstream: { url: upstream.url, credential: { type: 'passthrough' } },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [{}],
          },
          {
            id: 'limited',
            match: { path_prefix: '/limited' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            rules: [{}],
            rate_limit: { key: 'subject', rate: 0.5, burst: 2 },
          },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await introspection.close();
  });

  const get = (path: string, authorization?: string) => fetch(`${gw.url}${path}`, authorization ? { headers: { authorization } } : {});

  it('introspection: an active opaque token passes, an inactive one is 401', async () => {
    assert.equal((await get('/opaque/x', 'Bearer opaque-good-token')).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers['x-tessera-subject'], 'opaque-user');
    const bad = await get('/opaque/x', 'Bearer opaque-bad-token');
    assert.equal(bad.status, 401);
    assert.match(bad.headers.get('www-authenticate') ?? '', /invalid_token/);
  });

  it('a JWT route never sends an opaque token to the introspection endpoint', async () => {
    const n = introspected.length;
    assert.equal((await get('/chain/x', 'Bearer some-opaque-value')).status, 401);
    assert.equal(introspected.length, n);
  });

  it('[jwt, introspection]: an opaque token of three dot-separated parts (PASETO-like) is introspected, a JWT verified', async () => {
    const n = introspected.length;
    assert.equal((await get('/either/x', 'Bearer v4.local.opaque-good-token')).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers['x-tessera-subject'], 'opaque-user');
    assert.deepEqual(introspected.slice(n), ['v4.local.opaque-good-token']);
    assert.equal((await get('/either/x', `Bearer ${await token()}`)).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers['x-tessera-subject'], 'user-1');
    // A forged JWT (a JSON header) stays the JWT verifier's: refused, never introspected.
    const forged = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{}').toString('base64url')}.`;
    assert.equal((await get('/either/x', `Bearer ${forged}x`)).status, 401);
    assert.equal(introspected.length, n + 1);
  });

  it('[jwt, static]: each kind of token is accepted by its own strategy', async () => {
    const t = await token();
    assert.equal((await get('/chain/x', `Bearer ${t}`)).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers['x-tessera-subject'], 'user-1');
    assert.equal((await get('/chain/x', `Bearer ${STATIC_TOKEN}`)).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers['x-tessera-subject'], 'static:ci');
    assert.equal((await get('/chain/x')).status, 401);
  });

  it('passthrough: the caller’s Authorization reaches the upstream unchanged', async () => {
    const t = await token();
    assert.equal((await get('/pass/x', `Bearer ${t}`)).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, `Bearer ${t}`);
  });

  it('rate limits per subject with 429 and Retry-After', async () => {
    const a = await token({ sub: 'busy' });
    const b = await token({ sub: 'calm' });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await get('/limited/x', `Bearer ${a}`)).status);
    assert.deepEqual(statuses, [200, 200, 429]);
    const limited = await get('/limited/x', `Bearer ${a}`);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal((await get('/limited/x', `Bearer ${b}`)).status, 200, 'another subject has its own bucket');
  });
});
