/**
 * Path matching attacks: a rule written for `/api/admin` is not bypassed with `/api/admin/`, and
 * with `case_insensitive_paths: true` not with `/API/Admin` either (for upstreams that ignore case).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AUDIENCE, baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

describe('gateway: path matching', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let reader: string;
  before(async () => {
    upstream = await startUpstream();
    const rules = (p: string) => [
      { id: 'admin', path: `${p}/admin`, scopes: ['admin'] },
      { id: 'items', methods: ['DELETE'], path: `${p}/items/`, scopes: ['api:write'] },
      { id: 'read', path: `${p}/**`, scopes: ['api:read'] },
    ];
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          {
            id: 'sensitive',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: rules('/api'),
          },
          {
            id: 'insensitive',
            match: { path_prefix: '/ci' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            case_insensitive_paths: true,
            rules: rules('/ci'),
          },
          {
            id: 'insensitive-stripped',
            match: { path_prefix: '/cs' },
            upstream: { url: `${upstream.url}/v1`, strip_prefix: '/cs' },
            auth: 'jwt',
            audience: AUDIENCE,
            case_insensitive_paths: true,
            rules: rules('/cs'),
          },
          {
            id: 'users',
            match: { path: '/Users/:id/**' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            case_insensitive_paths: true,
            rules: [{ id: 'own', path: '/Users/:id/**', scopes: ['api:read'], claims: { sub: ':id', region: 'eu' } }],
          },
        ],
      },
    });
    reader = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = (path: string, method = 'GET') => fetch(`${gw.url}${path}`, { method, headers: { authorization: `Bearer ${reader}` } });

  it('trailing-slash bypass: /api/admin/ gets the decision of /api/admin (403), the upstream sees nothing', async () => {
    const n = upstream.seen.length;
    for (const path of ['/api/admin', '/api/admin/']) {
      const res = await call(path);
      assert.equal(res.status, 403, path);
      assert.match(res.headers.get('www-authenticate') ?? '', /insufficient_scope.*scope="admin"/, path);
    }
    assert.equal(upstream.seen.length, n);
  });

  it('trailing-slash bypass: a rule written with a trailing slash also holds without it', async () => {
    for (const path of ['/api/items', '/api/items/']) {
      const res = await call(path, 'DELETE');
      assert.equal(res.status, 403, path);
    }
    assert.equal((await call('/api/items/')).status, 200);
  });

  it('case bypass: paths are case-sensitive by default (/API/admin is not the /api route)', async () => {
    const n = upstream.seen.length;
    assert.equal((await call('/API/admin')).status, 404);
    assert.equal(upstream.seen.length, n);
  });

  it('case bypass: with case_insensitive_paths, /CI/Admin and /ci/ADMIN/ get the admin rule (403)', async () => {
    const n = upstream.seen.length;
    for (const path of ['/CI/Admin', '/ci/ADMIN/', '/Ci/admin']) {
      const res = await call(path);
      assert.equal(res.status, 403, path);
    }
    assert.equal(upstream.seen.length, n);
    assert.equal((await call('/CI/Things')).status, 200);
    assert.equal((await call('/CI/ITEMS/', 'DELETE')).status, 403);
  });

  it('case confusion: with case_insensitive_paths, /users/ABC takes /Users/:id, whose :id is ABC as sent, compared with sub exactly', async () => {
    const as = async (sub: string, path: string, region = 'eu') => {
      const bearer = await token({ scope: 'api:read', sub, region });
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${bearer}` } });
      await res.arrayBuffer();
      return [res.status, (await requestEvents(gw)).at(-1)?.reason];
    };
    const n = upstream.seen.length;
    for (const path of ['/users/ABC', '/USERS/ABC/x']) {
      assert.deepEqual(await as('ABC', path), [200, 'ok'], path);
      assert.equal(upstream.seen.at(-1)!.url, path, 'the upstream got another path than the one sent');
    }
    assert.equal(upstream.seen.length, n + 2);
    // A subject is case-sensitive: abc is not ABC, whatever case the literal segment came in.
    for (const [sub, path] of [
      ['abc', '/users/ABC'],
      ['ABC', '/users/abc'],
      ['Abc', '/Users/aBC/x'],
    ]) {
      assert.deepEqual(await as(sub as string, path as string), [403, 'policy_condition_failed'], `${sub} ${path}`);
    }
    // Nor does a literal condition lose its case.
    assert.deepEqual(await as('ABC', '/users/ABC', 'EU'), [403, 'policy_condition_failed']);
    assert.equal(upstream.seen.length, n + 2);
  });

  it('case bypass: with case_insensitive_paths, strip_prefix removes /CS as it removes /cs (the upstream acts on the path decided)', async () => {
    for (const path of ['/cs/items', '/CS/items', '/Cs/items']) {
      assert.equal((await call(path)).status, 200, path);
      assert.equal(upstream.seen.at(-1)!.url, '/v1/items', path);
    }
  });
});

describe('gateway: HEAD is decided as GET', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let reader: string;
  const FA_SECRET = 'forward-auth-secret-0123456789';
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: [
          {
            id: 'admin',
            match: { path_prefix: '/admin', methods: ['GET'] },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [{ scopes: ['admin'] }],
          },
          {
            id: 'api',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [
              { id: 'admin-read', methods: ['GET'], path: '/api/admin/**', scopes: ['admin'] },
              { id: 'read', path: '/api/**', scopes: ['api:read'] },
            ],
          },
          { id: 'public', match: { path_prefix: '/' }, upstream: { url: upstream.url }, auth: 'none' },
        ],
      },
    });
    reader = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const check = (method: string, uri: string) =>
    fetch(`${gw.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-original-uri': uri,
        'x-original-method': method,
        'x-original-host': 'api.example.com',
        authorization: `Bearer ${reader}`,
      },
    });

  it('HEAD bypass: a HEAD for a GET-only admin rule gets its refusal (403), not the catch-all rule, through the gateway and forward-auth', async () => {
    const n = upstream.seen.length;
    for (const method of ['GET', 'HEAD']) {
      const res = await fetch(`${gw.url}/api/admin/export`, { method, headers: { authorization: `Bearer ${reader}` } });
      assert.equal(res.status, 403, method);
      const fa = await check(method, '/api/admin/export');
      assert.equal(fa.status, 403, method);
      assert.equal(fa.headers.get('x-tessera-subject'), null, method);
    }
    assert.equal(upstream.seen.length, n, 'the upstream saw nothing');
    assert.equal((await fetch(`${gw.url}/api/items`, { method: 'HEAD', headers: { authorization: `Bearer ${reader}` } })).status, 200);
  });

  it('HEAD bypass: a HEAD for a GET-only route is that route (401 without a token), not the public route after it', async () => {
    const n = upstream.seen.length;
    const res = await fetch(`${gw.url}/admin/export`, { method: 'HEAD' });
    assert.equal(res.status, 401);
    const fa = await fetch(`${gw.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-original-uri': '/admin/export',
        'x-original-method': 'HEAD',
        'x-original-host': 'a',
      },
    });
    assert.equal(fa.status, 401);
    assert.equal(upstream.seen.length, n, 'the upstream saw nothing');
    // Other methods are not GET: a POST still falls to the public route, as configured.
    assert.equal((await fetch(`${gw.url}/admin/export`, { method: 'POST' })).status, 200);
  });

  it('attack: an encoded ? or # in the path (/api/admin%3F, /api/admin%23x) is refused 400 through the gateway and forward-auth, never decided as another path than the one an upstream decoding it once acts on', async () => {
    // nginx forwarding `proxy_pass http://app$uri` (after an auth_request, or as the upstream)
    // sends the path decoded once: /api/admin?x, which the app reads as /api/admin. Decided as the
    // segment `admin?x`, it passed the catch-all rule instead of the admin one.
    const n = upstream.seen.length;
    for (const path of ['/api/admin%3F', '/api/admin%3fx=1', '/api/admin%23', '/api/admin%23x/export']) {
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });
      assert.equal(res.status, 400, path);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request', path);
      const fa = await check('GET', path);
      assert.equal(fa.status, 401, path);
      assert.equal(fa.headers.get('x-tessera-status'), '400', path);
    }
    assert.equal(upstream.seen.length, n, 'the upstream saw nothing');
    await gw.served.gateway.audit.flush();
    assert.ok(gw.audit.events.some((e) => e.kind === 'gateway.forward_auth' && e.reason === 'request_path_invalid'));
  });
});

describe('gateway: a route prefix with a character that has two spellings (@ and %40)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let fa: TestGateway;
  let reader: string;
  const FA_SECRET = 'forward-auth-secret-0123456789';
  const routes = (url: string) => [
    {
      id: 'internal',
      match: { path_prefix: '/@internal' },
      upstream: { url },
      auth: 'jwt' as const,
      audience: AUDIENCE,
      rules: [{ scopes: ['admin'] }],
    },
    {
      id: 'rest',
      match: { path_prefix: '/' },
      upstream: { url },
      auth: 'jwt' as const,
      audience: AUDIENCE,
      rules: [{ scopes: ['api:read'] }],
    },
  ];
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({ ...baseConfig(), gateway: { routes: routes(upstream.url) } });
    fa = await startGateway({
      ...baseConfig(),
      gateway: {
        forward_auth: { enabled: true, flavor: 'traefik', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: routes(upstream.url),
      },
    });
    reader = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await fa.close();
    await upstream.close();
  });

  it('route bypass: /%40internal/x (which the upstream decodes to /@internal/x) takes the /@internal route, not the laxer one after it', async () => {
    const n = upstream.seen.length;
    for (const path of ['/@internal/x', '/%40internal/x', '/%40internal']) {
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });
      assert.equal(res.status, 403, path);
      const check = await fetch(`${fa.url}/_tessera/auth`, {
        headers: {
          'x-tessera-forward-auth': FA_SECRET,
          'x-forwarded-uri': path,
          'x-forwarded-method': 'GET',
          'x-forwarded-host': 'api.example.com',
          authorization: `Bearer ${reader}`,
        },
      });
      assert.equal(check.status, 403, `forward-auth ${path}`);
      assert.equal(check.headers.get('authorization'), null);
    }
    assert.equal(upstream.seen.length, n);
    await fa.served.gateway.audit.flush();
    assert.equal(fa.audit.events.filter((e) => e.kind === 'gateway.forward_auth').at(-1)?.route, 'internal');
    assert.equal((await fetch(`${gw.url}/other`, { headers: { authorization: `Bearer ${reader}` } })).status, 200);
  });
});

describe('gateway: strip_prefix removes the prefix in whichever spelling it matched', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let reader: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          {
            id: 'at',
            match: { path_prefix: '/@tenant' },
            upstream: { url: `${upstream.url}/v1`, strip_prefix: '/@tenant' },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [{ scopes: ['api:read'] }],
          },
          {
            id: 'at-insensitive',
            match: { path_prefix: '/@CI/x' },
            upstream: { url: `${upstream.url}/v2`, strip_prefix: '/@ci/x/' },
            auth: 'jwt',
            audience: AUDIENCE,
            case_insensitive_paths: true,
            rules: [{ scopes: ['api:read'] }],
          },
          {
            id: 'accent',
            match: { path_prefix: '/café' },
            upstream: { url: `${upstream.url}/v3`, strip_prefix: '/café' },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [{ scopes: ['api:read'] }],
          },
        ],
      },
    });
    reader = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('prefix confusion: /%40tenant/items reaches the upstream as /v1/items, as /@tenant/items does (not /v1/%40tenant/items)', async () => {
    for (const path of ['/@tenant/items', '/%40tenant/items', '/%40tenant']) {
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)!.url, path.endsWith('items') ? '/v1/items' : '/v1', path);
    }
    for (const path of ['/%40ci/x/items', '/@CI/X/items', '/%40Ci/X/items']) {
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)!.url, '/v2/items', path);
    }
    assert.equal((await fetch(`${gw.url}/caf%C3%A9/items`, { headers: { authorization: `Bearer ${reader}` } })).status, 200);
    assert.equal(upstream.seen.at(-1)!.url, '/v3/items');
  });
});
