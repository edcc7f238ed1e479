/**
 * The forward-auth endpoint as nginx auth_request, Traefik ForwardAuth and Envoy HTTP ext_authz
 * call it: the original request is read from their headers (or path), the answer is 200 with
 * the headers to inject, or the refusal with its challenge; each check is audited once.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { Agent, type IncomingHttpHeaders, request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import { rawHttp } from '../helpers/net.ts';
import { AUDIENCE, baseConfig, parse, startGateway, startUpstream, type TestGateway, token, UPSTREAM_TOKEN } from './helpers.ts';

const FA_SECRET = 'forward-auth-secret-0123456789';
type Flavor = 'nginx' | 'traefik' | 'caddy' | 'envoy';

const config = (peers?: string[], flavor: Flavor = 'nginx') => ({
  ...baseConfig(),
  gateway: {
    forward_auth: {
      enabled: true,
      flavor,
      shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET },
      ...(peers ? { allowed_peers: peers } : {}),
    },
    routes: [
      {
        id: 'api',
        match: { host: 'api.example.com', path_prefix: '/api' },
        upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static' as const, token: UPSTREAM_TOKEN } },
        auth: 'jwt' as const,
        audience: AUDIENCE,
        rules: [
          { methods: ['GET'], path: '/api/**', scopes: ['api:read'] },
          { methods: ['DELETE'], path: '/api/**', scopes: ['admin'] },
        ],
        identity_headers: ['subject' as const, 'delegation' as const],
        rate_limit: { key: 'subject' as const, rate: 0.01, burst: 10 },
      },
      {
        id: 'mcp',
        match: { host: 'api.example.com', path_prefix: '/mcp' },
        upstream: { url: 'http://127.0.0.1:9' },
        auth: 'jwt' as const,
        audience: AUDIENCE,
        rules: [{ tool: 'files.delete', scopes: ['admin'] }, { scopes: ['api:read'] }],
        mcp: {},
      },
    ],
  },
});

/** A raw request (headers may repeat; the Host header is set as given, as Envoy does). */
const raw = (base: string, path: string, method: string, headers: [string, string][]) =>
  new Promise<{ status: number; headers: IncomingHttpHeaders }>((resolve, reject) => {
    const all = headers.some(([n]) => n === 'host') ? headers : [['host', new URL(base).host] as [string, string], ...headers];
    request(`${base}${path}`, { method, headers: all.flat() }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
    })
      .on('error', reject)
      .end();
  });

describe('gateway: forward-auth endpoint', () => {
  let gw: TestGateway;
  let traefik: TestGateway;
  let envoyGw: TestGateway;
  let t: string;
  before(async () => {
    gw = await startGateway(config());
    traefik = await startGateway(config(undefined, 'traefik'));
    envoyGw = await startGateway(config(undefined, 'envoy'));
    t = await token({ grant_id: 'g-1', sub: 'fa-user' });
  });
  after(async () => {
    await gw.close();
    await traefik.close();
    await envoyGw.close();
  });

  const check = (headers: Record<string, string>, path = '/_tessera/auth', method = 'GET') =>
    fetch(`${gw.url}${path}`, { method, headers: { 'x-tessera-forward-auth': FA_SECRET, ...headers } });
  const checkTraefik = (headers: Record<string, string>) =>
    fetch(`${traefik.url}/_tessera/auth`, { headers: { 'x-tessera-forward-auth': FA_SECRET, ...headers } });
  /** Like Envoy: the Host header is the original request's (fetch cannot set Host). */
  const envoy = (path: string, method: string, authorization: string) =>
    raw(envoyGw.url, path, method, [
      ['host', 'api.example.com'],
      ['x-tessera-forward-auth', FA_SECRET],
      ['authorization', authorization],
    ]);

  it('nginx: allows and answers the headers to inject', async () => {
    const res = await check({
      'x-original-uri': '/api/items?x=1',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('authorization'), `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(res.headers.get('x-tessera-subject'), 'fa-user');
    assert.equal(res.headers.get('x-tessera-delegation-id'), 'g-1');
    assert.ok(res.headers.get('x-request-id'));
  });

  it('nginx: a missing token is 401 with the challenge', async () => {
    const res = await check({ 'x-original-uri': '/api/items', 'x-original-method': 'GET', 'x-original-host': 'api.example.com' });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.equal(res.headers.get('authorization'), null);
  });

  it('nginx: refusals other than 401/403 are folded (400 → 401, 404 → 403) with the real status kept', async () => {
    const bad = await check({ 'x-original-uri': '/api/%2e%2e/x', 'x-original-method': 'GET', 'x-original-host': 'api.example.com' });
    assert.equal(bad.status, 401);
    assert.equal(bad.headers.get('x-tessera-status'), '400');
    const none = await check({
      'x-original-uri': '/other',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(none.status, 403);
    assert.equal(none.headers.get('x-tessera-status'), '404');
  });

  it('Traefik: reads X-Forwarded-Method/Host/Uri and keeps real statuses', async () => {
    const ok = await checkTraefik({
      'x-forwarded-uri': '/api/a',
      'x-forwarded-method': 'GET',
      'x-forwarded-host': 'api.example.com',
      'x-forwarded-proto': 'https',
      authorization: `Bearer ${t}`,
    });
    assert.equal(ok.status, 200);
    const scope = await checkTraefik({
      'x-forwarded-uri': '/api/a',
      'x-forwarded-method': 'DELETE',
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(scope.status, 403);
    assert.match(scope.headers.get('www-authenticate') ?? '', /insufficient_scope.*scope="admin"/);
  });

  it('method confusion: a method not in upper case (get, Get; Go proxies pass it as sent) is refused 400, never decided as GET, since methods are case-sensitive and the upstream may not read it as GET', async () => {
    for (const method of ['get', 'Get', 'delete']) {
      const res = await checkTraefik({
        'x-forwarded-uri': '/api/a',
        'x-forwarded-method': method,
        'x-forwarded-host': 'api.example.com',
        authorization: `Bearer ${t}`,
      });
      assert.equal(res.status, 400, method);
      assert.equal(res.headers.get('authorization'), null, method);
    }
    await traefik.served.gateway.audit.flush();
    assert.equal(traefik.audit.events.filter((e) => e.kind === 'gateway.forward_auth').at(-1)?.reason, 'forward_auth_request_invalid');
    const nginx = await check({
      'x-original-uri': '/api/a',
      'x-original-method': 'get',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(nginx.status, 500);
    assert.equal(nginx.headers.get('authorization'), null);
  });

  it('attack: audit amplification: an X-Forwarded-Method of 12000 letters (Go proxies pass any token a client sends) was recorded whole in every check’s audit event, the path beside it capped; refused 400, the event holding the check’s own method', async () => {
    const long = 'A'.repeat(12_000);
    const res = await checkTraefik({
      'x-forwarded-uri': '/api/a',
      'x-forwarded-method': long,
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('authorization'), null);
    await traefik.served.gateway.audit.flush();
    const e = traefik.audit.events.filter((x) => x.kind === 'gateway.forward_auth').at(-1);
    assert.equal(e?.reason, 'forward_auth_request_invalid');
    assert.equal(e?.method, 'GET');
    assert.ok(JSON.stringify(e).length < 1000, `${JSON.stringify(e).length} bytes`);
    // The longest registered method (UPDATEREDIRECTREF, 17 letters) and any up to 32 are still read.
    const named = await checkTraefik({
      'x-forwarded-uri': '/api/a',
      'x-forwarded-method': 'UPDATEREDIRECTREF',
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.notEqual(named.status, 400);
  });

  it('Traefik: a WebSocket check (X-Forwarded-Proto ws or wss, as Traefik sends on an upgrade) is decided, not refused as malformed', async () => {
    for (const proto of ['ws', 'wss', 'WSS']) {
      const res = await checkTraefik({
        'x-forwarded-uri': '/api/socket',
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        'x-forwarded-proto': proto,
        authorization: `Bearer ${t}`,
      });
      assert.equal(res.status, 200, proto);
    }
    const other = await checkTraefik({
      'x-forwarded-uri': '/api/socket',
      'x-forwarded-method': 'GET',
      'x-forwarded-host': 'api.example.com',
      'x-forwarded-proto': 'wsx',
      authorization: `Bearer ${t}`,
    });
    assert.equal(other.status, 400);
  });

  it('Envoy ext_authz: the original path follows the endpoint path, the method is the original', async () => {
    const ok = await envoy('/_tessera/auth/api/items?q=1', 'GET', `Bearer ${t}`);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    const del = await envoy('/_tessera/auth/api/items', 'DELETE', `Bearer ${t}`);
    assert.equal(del.status, 403);
  });

  it('identity header spoofing through Envoy: an allow answer names every identity header it does not set in x-envoy-auth-headers-to-remove', async () => {
    // Envoy sets the headers an answer carries and leaves the caller's others in place: without
    // the list, a caller's own X-Tessera-Actor-Chain would reach the upstream beside the real subject.
    const plain = await token({ sub: 'fa-user' });
    const ok = await envoy('/_tessera/auth/api/items', 'GET', `Bearer ${plain}`);
    assert.equal(ok.status, 200);
    const removed = String(ok.headers['x-envoy-auth-headers-to-remove'] ?? '').split(', ');
    assert.deepEqual(
      new Set(removed),
      new Set([
        'dpop',
        'x-tessera-client-id',
        'x-tessera-issuer',
        'x-tessera-subject-issuer',
        'x-tessera-actor-chain',
        'x-tessera-delegation-id',
        'x-tessera-scopes',
        'x-tessera-token-id',
      ]),
    );
    assert.equal(ok.headers['x-tessera-subject'], 'fa-user');
    assert.equal(ok.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    // Only Envoy reads the list; nginx and Traefik answers do not carry it.
    const nginx = await check({
      'x-original-uri': '/api/items',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${plain}`,
    });
    assert.equal(nginx.status, 200);
    assert.equal(nginx.headers.get('x-envoy-auth-headers-to-remove'), null);
  });

  it('refuses a check that does not describe the original request (nginx: 500, so nginx fails closed; Traefik: 400)', async () => {
    const res = await check({ authorization: `Bearer ${t}` });
    assert.equal(res.status, 500);
    assert.equal(res.headers.get('x-tessera-status'), '400');
    assert.equal(res.headers.get('authorization'), null);
    const tr = await checkTraefik({ authorization: `Bearer ${t}` });
    assert.equal(tr.status, 400);
    assert.equal(((await tr.json()) as { error: string }).error, 'invalid_request');
  });

  it('flavor confusion: behind Traefik, an added X-Original-URI does not change the path decided: the check is refused, never allowed', async () => {
    // Traefik forwards DELETE /api/items; the client adds nginx's header naming a path it may call.
    const res = await checkTraefik({
      'x-forwarded-uri': '/api/items',
      'x-forwarded-method': 'DELETE',
      'x-forwarded-host': 'api.example.com',
      'x-original-uri': '/api/items',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('authorization'), null);
  });

  it('attack: behind Traefik or Envoy, a caller’s X-Original-URI / -Method / -Host / -Proto (also spelled with _) on a request it may make is refused 400 forward_auth_override_refused: the proxy forwards it to the upstream, and nginx-style setups and PHP apps act on it as the request (the gateway’s own proxy strips it)', async () => {
    const allowed = {
      'x-forwarded-uri': '/api/a',
      'x-forwarded-method': 'GET',
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    };
    assert.equal((await checkTraefik(allowed)).status, 200, 'allowed without them');
    for (const [name, value] of [
      ['x-original-uri', '/api/admin'],
      ['X-Original-Method', 'DELETE'],
      ['x-original-host', 'admin.example.com'],
      ['x-original-proto', 'http'],
      ['x_original_uri', '/api/admin'],
    ] as const) {
      const res = await checkTraefik({ ...allowed, [name]: value });
      assert.equal(res.status, 400, name);
      assert.equal(res.headers.get('authorization'), null, name);
      await traefik.served.gateway.audit.flush();
      const e = traefik.audit.events.filter((ev) => ev.kind === 'gateway.forward_auth').at(-1);
      assert.equal(e?.reason, 'forward_auth_override_refused', name);
      assert.equal(e?.decision, 'deny', name);
    }
    const viaEnvoy = await raw(envoyGw.url, '/_tessera/auth/api/a', 'GET', [
      ['host', 'api.example.com'],
      ['x-tessera-forward-auth', FA_SECRET],
      ['authorization', `Bearer ${t}`],
      ['x-original-uri', '/api/admin'],
    ]);
    assert.equal(viaEnvoy.status, 400);
  });

  it('flavor confusion: behind nginx, Traefik headers alone are not read', async () => {
    const res = await check({
      'x-forwarded-uri': '/api/items',
      'x-forwarded-method': 'GET',
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(res.status, 500);
    assert.equal(res.headers.get('authorization'), null);
  });

  it('flavor confusion: behind Envoy, the endpoint path with nginx headers is not a check', async () => {
    const res = await raw(envoyGw.url, '/_tessera/auth', 'GET', [
      ['host', 'api.example.com'],
      ['x-tessera-forward-auth', FA_SECRET],
      ['x-original-uri', '/api/items'],
      ['x-original-method', 'GET'],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(res.status, 400);
    assert.equal(res.headers.authorization, undefined);
  });

  it('flavor confusion: an nginx endpoint does not take the Envoy path form', async () => {
    const res = await raw(gw.url, '/_tessera/auth/api/items', 'GET', [
      ['host', 'api.example.com'],
      ['x-tessera-forward-auth', FA_SECRET],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(res.status, 500);
    assert.equal(res.headers.authorization, undefined);
  });

  it('duplicated original-request headers are refused, never guessed (nginx and Traefik)', async () => {
    const dupNginx = await raw(gw.url, '/_tessera/auth', 'GET', [
      ['x-tessera-forward-auth', FA_SECRET],
      ['x-original-uri', '/api/items'],
      ['x-original-uri', '/public'],
      ['x-original-method', 'GET'],
      ['x-original-host', 'api.example.com'],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(dupNginx.status, 500);
    assert.equal(dupNginx.headers.authorization, undefined);
    const dupHost = await raw(traefik.url, '/_tessera/auth', 'GET', [
      ['x-tessera-forward-auth', FA_SECRET],
      ['x-forwarded-uri', '/api/items'],
      ['x-forwarded-method', 'GET'],
      ['x-forwarded-host', 'api.example.com'],
      ['x-forwarded-host', 'other.example.com'],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(dupHost.status, 400);
    const dupMethod = await raw(traefik.url, '/_tessera/auth', 'GET', [
      ['x-tessera-forward-auth', FA_SECRET],
      ['x-forwarded-uri', '/api/items'],
      ['x-forwarded-method', 'GET'],
      ['x-forwarded-method', 'DELETE'],
      ['x-forwarded-host', 'api.example.com'],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(dupMethod.status, 400);
  });

  it('nginx: a missing X-Original-Host is refused (the subrequest Host is not the original)', async () => {
    const res = await check({ 'x-original-uri': '/api/items', 'x-original-method': 'GET', authorization: `Bearer ${t}` });
    assert.equal(res.status, 500);
    assert.equal(res.headers.get('authorization'), null);
  });

  const original = {
    'x-original-uri': '/api/items',
    'x-original-method': 'GET',
    'x-original-host': 'api.example.com',
  };

  it('credential theft: a direct check with a valid token but no shared secret gets 403 and no credential', async () => {
    await gw.served.gateway.audit.flush();
    const n = gw.audit.events.length;
    const res = await fetch(`${gw.url}/_tessera/auth`, { headers: { ...original, authorization: `Bearer ${t}` } });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('authorization'), null);
    assert.equal(res.headers.get('x-tessera-subject'), null);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.equal(((await res.json()) as { error: string }).error, 'forbidden');
    await gw.served.gateway.audit.flush();
    const e = gw.audit.events.slice(n).find((x) => x.kind === 'gateway.forward_auth');
    assert.equal(e?.reason, 'forward_auth_secret_invalid');
    assert.equal(e?.decision, 'deny');
  });

  it('credential theft: a wrong, prefixed or repeated shared secret gets 403 (Traefik and Envoy too)', async () => {
    const wrong = await fetch(`${gw.url}/_tessera/auth`, {
      headers: { ...original, authorization: `Bearer ${t}`, 'x-tessera-forward-auth': `${FA_SECRET.slice(0, -1)}x` },
    });
    assert.equal(wrong.status, 403);
    assert.equal(wrong.headers.get('authorization'), null);
    const longer = await fetch(`${gw.url}/_tessera/auth`, {
      headers: { ...original, authorization: `Bearer ${t}`, 'x-tessera-forward-auth': `${FA_SECRET}0` },
    });
    assert.equal(longer.status, 403);
    const twice = await raw(gw.url, '/_tessera/auth', 'GET', [
      ['x-tessera-forward-auth', FA_SECRET],
      ['x-tessera-forward-auth', 'guess'],
      ...Object.entries(original),
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(twice.status, 403);
    assert.equal(twice.headers.authorization, undefined);
    const tr = await fetch(`${traefik.url}/_tessera/auth`, {
      headers: {
        'x-forwarded-uri': '/api/a',
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        authorization: `Bearer ${t}`,
      },
    });
    assert.equal(tr.status, 403);
    assert.equal(tr.headers.get('authorization'), null);
    const env = await raw(envoyGw.url, '/_tessera/auth/api/items', 'GET', [
      ['host', 'api.example.com'],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(env.status, 403);
    assert.equal(env.headers.authorization, undefined);
  });

  it('credential theft: on a connection that already proved the shared secret, a wrong one still gets 403, and a reload that changes it applies at once', async () => {
    const own = await startGateway(config());
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const ports: number[] = [];
    const viaAgent = (secret: string) =>
      new Promise<{ status: number; authorization: string | undefined }>((resolve, reject) => {
        const headers = { ...original, authorization: `Bearer ${t}`, 'x-tessera-forward-auth': secret };
        const req = request(`${own.url}/_tessera/auth`, { agent, headers }, (res) => {
          res.resume();
          res.on('end', () => {
            ports.push(req.socket?.localPort ?? 0);
            resolve({ status: res.statusCode ?? 0, authorization: res.headers.authorization });
          });
        });
        req.on('error', reject).end();
      });
    try {
      assert.equal((await viaAgent(FA_SECRET)).status, 200);
      const wrong = await viaAgent(`${FA_SECRET.slice(0, -1)}x`);
      assert.equal(wrong.status, 403);
      assert.equal(wrong.authorization, undefined);
      assert.equal((await viaAgent(FA_SECRET)).status, 200);
      const next = config();
      next.gateway.forward_auth.shared_secret.value = 'rotated-forward-auth-secret-0123456789';
      assert.equal(own.served.gateway.reload(parse(next)).ok, true);
      const old = await viaAgent(FA_SECRET);
      assert.equal(old.status, 403);
      assert.equal(old.authorization, undefined);
      assert.equal((await viaAgent('rotated-forward-auth-secret-0123456789')).status, 200);
      // The peer allowlist is decided once per connection too, and again after a reload.
      const fenced = config(['10.0.0.0/8']);
      fenced.gateway.forward_auth.shared_secret.value = 'rotated-forward-auth-secret-0123456789';
      assert.equal(own.served.gateway.reload(parse(fenced)).ok, true);
      const refused = await viaAgent('rotated-forward-auth-secret-0123456789');
      assert.equal(refused.status, 404);
      assert.equal(refused.authorization, undefined);
      assert.equal(new Set(ports).size, 1, 'every check went over one keep-alive connection');
    } finally {
      agent.destroy();
      await own.close();
    }
  });

  it('rate-limits per subject with 429 and Retry-After (Traefik keeps the status)', async () => {
    const other = await token({ sub: 'limited' });
    const h = {
      'x-forwarded-uri': '/api/a',
      'x-forwarded-method': 'GET',
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${other}`,
    };
    const statuses = [];
    for (let i = 0; i < 11; i++) statuses.push((await checkTraefik(h)).status);
    assert.deepEqual(statuses, [...Array(10).fill(200), 429]);
    const res = await checkTraefik(h);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
  });

  it('tool-rule bypass: a check for an MCP route is refused, whatever the token, since the proxy sends no body to read', async () => {
    // nginx in front of an MCP route would let any tools/call through a rule without a tool.
    const res = await check({
      'x-original-uri': '/mcp',
      'x-original-method': 'POST',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${await token({ scope: 'api:read admin' })}`,
    });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('x-tessera-status'), '404');
    assert.equal(res.headers.get('authorization'), null);
    await gw.served.gateway.audit.flush();
    const e = gw.audit.events.at(-1);
    assert.equal(e?.route, 'mcp');
    assert.equal(e?.reason, 'mcp_forward_auth_refused');
  });

  // The proxy, not Tessera, forwards the request: an upstream honouring an override would act on
  // another method or path than the one allowed, and Tessera cannot remove it from there.
  const lastCheck = async () => {
    await gw.served.gateway.audit.flush();
    return gw.audit.events.filter((e) => e.kind === 'gateway.forward_auth').at(-1);
  };

  it('method override: a check whose original URI carries _method (also encoded, PHP-style or after ;) is refused 400, audited, no credential', async () => {
    for (const uri of [
      '/api/items?_method=DELETE',
      '/api/items?a=1&%5Fmethod=DELETE',
      '/api/items?_method[]=DELETE',
      '/api/items?a=1;_method=PUT',
      '/api/items?+_method=DELETE',
      '/api/items?a=1&%20_method=DELETE',
    ]) {
      const res = await check({
        'x-original-uri': uri,
        'x-original-method': 'GET',
        'x-original-host': 'api.example.com',
        authorization: `Bearer ${t}`,
      });
      assert.equal(res.status, 401, uri);
      assert.equal(res.headers.get('x-tessera-status'), '400', uri);
      assert.equal(res.headers.get('authorization'), null, uri);
      const e = await lastCheck();
      assert.equal(e?.reason, 'forward_auth_override_refused', uri);
      assert.equal(e?.decision, 'deny', uri);
    }
    const tr = await checkTraefik({
      'x-forwarded-uri': '/api/items?_method=DELETE',
      'x-forwarded-method': 'GET',
      'x-forwarded-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(tr.status, 400);
    assert.equal(((await tr.json()) as { error: string }).error, 'invalid_request');
    assert.equal(tr.headers.get('authorization'), null);
    const env = await envoy('/_tessera/auth/api/items?_method=DELETE', 'GET', `Bearer ${t}`);
    assert.equal(env.status, 400);
    assert.equal(env.headers.authorization, undefined);
    // Other keys that merely contain "method" are not overrides.
    const ok = await check({
      'x-original-uri': '/api/items?method=x&my_method=y',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      authorization: `Bearer ${t}`,
    });
    assert.equal(ok.status, 200);
  });

  it('method override: a check carrying X-HTTP-Method-Override, X-Method-Override or X-HTTP-Method (also with underscores) is refused 400, audited', async () => {
    for (const name of ['X-HTTP-Method-Override', 'X-Method-Override', 'X-HTTP-Method', 'X_HTTP_Method_Override']) {
      const res = await raw(traefik.url, '/_tessera/auth', 'GET', [
        ['x-tessera-forward-auth', FA_SECRET],
        ['x-forwarded-uri', '/api/items'],
        ['x-forwarded-method', 'GET'],
        ['x-forwarded-host', 'api.example.com'],
        [name, 'DELETE'],
        ['authorization', `Bearer ${t}`],
      ]);
      assert.equal(res.status, 400, name);
      assert.equal(res.headers.authorization, undefined, name);
      await traefik.served.gateway.audit.flush();
      const e = traefik.audit.events.filter((x) => x.kind === 'gateway.forward_auth').at(-1);
      assert.equal(e?.reason, 'forward_auth_override_refused', name);
    }
    const nginx = await check({ ...original, 'x-http-method-override': 'DELETE', authorization: `Bearer ${t}` });
    assert.equal(nginx.status, 401);
    assert.equal(nginx.headers.get('x-tessera-status'), '400');
    const env = await raw(envoyGw.url, '/_tessera/auth/api/items', 'GET', [
      ['host', 'api.example.com'],
      ['x-tessera-forward-auth', FA_SECRET],
      ['x-method-override', 'DELETE'],
      ['authorization', `Bearer ${t}`],
    ]);
    assert.equal(env.status, 400);
    assert.equal(env.headers.authorization, undefined);
  });

  it('path override: a check carrying X-Original-URL or X-Rewrite-URL is refused 400, audited', async () => {
    for (const name of ['x-original-url', 'x-rewrite-url']) {
      const res = await checkTraefik({
        'x-forwarded-uri': '/api/items',
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        [name]: '/admin/reset',
        authorization: `Bearer ${t}`,
      });
      assert.equal(res.status, 400, name);
      assert.equal(res.headers.get('authorization'), null, name);
      await traefik.served.gateway.audit.flush();
      assert.equal(traefik.audit.events.filter((x) => x.kind === 'gateway.forward_auth').at(-1)?.reason, 'forward_auth_override_refused');
    }
    const nginx = await check({ ...original, 'x-original-url': '/admin/reset', authorization: `Bearer ${t}` });
    assert.equal(nginx.status, 401);
    assert.equal((await lastCheck())?.reason, 'forward_auth_override_refused');
  });

  it('identity spoofing: a Traefik check carrying an identity header spelled with underscores (X_Tessera_Subject) is refused 400 without the credential; other underscore headers pass', async () => {
    const traefikCheck = (extra: Record<string, string>) =>
      checkTraefik({
        'x-forwarded-uri': '/api/items',
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        authorization: `Bearer ${t}`,
        ...extra,
      });
    for (const name of ['X_Tessera_Subject', 'x-tessera_delegation_id']) {
      const res = await traefikCheck({ [name]: 'admin' });
      assert.equal(res.status, 400, name);
      assert.equal(res.headers.get('authorization'), null, name);
      await traefik.served.gateway.audit.flush();
      assert.equal(
        traefik.audit.events.filter((x) => x.kind === 'gateway.forward_auth').at(-1)?.reason,
        'forward_auth_header_spoof_refused',
      );
    }
    assert.equal((await traefikCheck({ x_custom_trace: '1' })).status, 200);
  });

  it('query token leak: a check whose original URI carries access_token (any spelling the gateway strips) is refused, with transport.query on or off, since the proxy forwards the URI with the token to the upstream', async () => {
    const withQuery = await startGateway({ ...config(), transport: { query: true } });
    try {
      const spellings = (v: string) => [
        `/api/items?access_token=${v}`,
        `/api/items?a=1&access%5Ftoken=${v}`,
        `/api/items?access.token=${v}`,
        `/api/items?access[token=${v}`,
        `/api/items?access_token[]=${v}`,
        `/api/items?a=1;access_token=${v}`,
        `/api/items?+access_token=${v}`,
      ];
      for (const [name, g] of [
        ['query on', withQuery],
        ['query off', gw],
      ] as const) {
        // The token in the query alone, and a header token with the query one riding along.
        for (const uri of spellings(t)) {
          for (const auth of [{}, { authorization: `Bearer ${t}` }]) {
            const res = await fetch(`${g.url}/_tessera/auth`, {
              headers: { 'x-tessera-forward-auth': FA_SECRET, ...original, 'x-original-uri': uri, ...auth },
            });
            const body = await res.text();
            assert.equal(res.status, 401, `${name} ${uri}`);
            assert.equal(res.headers.get('x-tessera-status'), '400', `${name} ${uri}`);
            assert.equal(res.headers.get('authorization'), null, `${name} ${uri}`);
            assert.ok(!body.includes(t), 'no token in the body');
            await g.served.gateway.audit.flush();
            const e = g.audit.events.filter((x) => x.kind === 'gateway.forward_auth').at(-1);
            assert.equal(e?.decision, 'deny', `${name} ${uri}`);
            assert.equal(e?.reason, 'forward_auth_query_token_refused', `${name} ${uri}`);
          }
        }
      }
      // Keys that merely contain the words are not tokens.
      const ok = await fetch(`${withQuery.url}/_tessera/auth`, {
        headers: {
          'x-tessera-forward-auth': FA_SECRET,
          ...original,
          'x-original-uri': '/api/items?token=1&my_access_token=2',
          authorization: `Bearer ${t}`,
        },
      });
      assert.equal(ok.status, 200);
      // Traefik and Envoy keep the real status.
      const tr = await checkTraefik({
        'x-forwarded-uri': `/api/items?access.token=${t}`,
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        authorization: `Bearer ${t}`,
      });
      assert.equal(tr.status, 400);
      assert.equal(tr.headers.get('authorization'), null);
      const env = await envoy(`/_tessera/auth/api/items?access%5Ftoken=${t}`, 'GET', `Bearer ${t}`);
      assert.equal(env.status, 400);
      assert.equal(env.headers.authorization, undefined);
    } finally {
      await withQuery.close();
    }
  });

  it('request desync: an nginx check declaring a body it never sends (an auth_request without Content-Length cleared) closes its connection, so the next check is not read as that body', async () => {
    const head = (cl: string) =>
      `GET /_tessera/auth HTTP/1.1\r\nHost: tessera\r\nX-Tessera-Forward-Auth: ${FA_SECRET}\r\nAuthorization: Bearer ${t}\r\n` +
      `X-Original-URI: /api/items\r\nX-Original-Method: GET\r\nX-Original-Host: api.example.com\r\n${cl}\r\n`;
    // As nginx sends it: a POST's Content-Length, no body, then the next check on the connection.
    const text = await rawHttp(gw.url, head('Content-Length: 40\r\n'), 2000, (first) =>
      first.includes('\r\n\r\n') ? head('') : undefined,
    );
    const answers = text.split(/(?=HTTP\/1\.1 )/);
    assert.match(answers[0] ?? '', /^HTTP\/1\.1 200 /);
    assert.match(answers[0] ?? '', /\r\nconnection: close\r\n/i, text);
    assert.equal(answers.length, 1, 'the connection closes after the answer');
    // Without a declared body the connection stays open for the next check.
    const kept = await rawHttp(gw.url, head(''), 500, (first) => (first.includes('\r\n\r\n') ? head('') : undefined));
    assert.equal(kept.split(/(?=HTTP\/1\.1 )/).length, 2, kept);
  });

  it('header flooding: a check with more headers than the parser keeps is refused 431, never decided on the headers it kept (an override past them would reach the upstream unseen)', async () => {
    const head = (junk: number) =>
      `GET /_tessera/auth HTTP/1.1\r\nHost: tessera\r\nX-Forwarded-Uri: /api/items\r\nX-Forwarded-Method: GET\r\n` +
      `X-Forwarded-Host: api.example.com\r\nAuthorization: Bearer ${t}\r\n${'a: 1\r\n'.repeat(junk)}` +
      `X-Tessera-Forward-Auth: ${FA_SECRET}\r\nX_HTTP_Method_Override: DELETE\r\nConnection: close\r\n\r\n`;
    // 8 headers of the check's own: 992 more make 1000, which Node reads whole; one more is 431.
    assert.match(await rawHttp(traefik.url, head(992)), /^HTTP\/1\.1 400 /, 'read whole: the override is seen');
    const flooded = await rawHttp(traefik.url, head(993));
    assert.match(flooded, /^HTTP\/1\.1 431 /);
    assert.doesNotMatch(flooded, /upstream-secret|authorization/i);
  });

  it('audits each check once as gateway.forward_auth', async () => {
    await gw.served.gateway.audit.flush();
    const before = gw.audit.events.length;
    const jti = 'fa-jti';
    const t2 = await token({ jti });
    await check({
      'x-original-uri': '/api/items?secret=1',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      'x-real-ip': '203.0.113.9',
      authorization: `Bearer ${t2}`,
    });
    await gw.served.gateway.audit.flush();
    const events = gw.audit.events.slice(before);
    assert.equal(events.length, 1);
    const e = events[0]!;
    assert.equal(e.kind, 'gateway.forward_auth');
    assert.equal(e.decision, 'allow');
    assert.equal(e.jti, jti);
    assert.equal(e.path, '/api/items?secret=');
    assert.equal(e.route, 'api');
    assert.equal(e.remote_addr, '203.0.113.9');
  });

  it('attack: audit amplification: an X-Real-IP or last X-Forwarded-For entry that is no address (3 KB of text, an IPv6 address with 3 KB of zone holding a space, a port, brackets) is recorded as the check’s own peer, never verbatim; an address is recorded trimmed, IPv4-mapped as IPv4, without its zone', async () => {
    // Each check by a subject of its own: the route's rate limit (burst 10) is not what is tested.
    const junk = 'x'.repeat(3000);
    const lastNginx = async (ip: string) => {
      const res = await check({
        'x-original-uri': '/api/items',
        'x-original-method': 'GET',
        'x-original-host': 'api.example.com',
        'x-real-ip': ip,
        authorization: `Bearer ${await token({ sub: `fa-${randomUUID()}` })}`,
      });
      assert.equal(res.status, 200, ip.slice(0, 40));
      await gw.served.gateway.audit.flush();
      return gw.audit.events.filter((e) => e.kind === 'gateway.forward_auth').at(-1);
    };
    const lastTraefik = async (xff: string) => {
      const res = await checkTraefik({
        'x-forwarded-uri': '/api/items',
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        'x-forwarded-for': xff,
        authorization: `Bearer ${await token({ sub: `fa-${randomUUID()}` })}`,
      });
      assert.equal(res.status, 200, xff.slice(0, 40));
      await traefik.served.gateway.audit.flush();
      return traefik.audit.events.filter((e) => e.kind === 'gateway.forward_auth').at(-1);
    };
    for (const bad of [junk, `fe80::1%${'a'.repeat(3000)} x`, 'unknown', '[::1]', '203.0.113.9:4711', '1.2.3.4%eth0']) {
      const n = await lastNginx(bad);
      assert.equal(n?.remote_addr, '127.0.0.1', bad.slice(0, 40));
      assert.ok(JSON.stringify(n).length < 1000);
      const tr = await lastTraefik(`198.51.100.7, ${bad}`);
      assert.equal(tr?.remote_addr, '127.0.0.1', bad.slice(0, 40));
      assert.ok(JSON.stringify(tr).length < 1000);
    }
    assert.equal((await lastNginx(`fe80::1%${'a'.repeat(3000)}`))?.remote_addr, 'fe80::1');
    assert.equal((await lastNginx(' ::ffff:203.0.113.9 '))?.remote_addr, '203.0.113.9');
    assert.equal((await lastTraefik('198.51.100.7, 2001:db8::1 '))?.remote_addr, '2001:db8::1');
  });

  it('attack: a token sent as the X-Request-Id of a check is neither answered to the proxy (which forwards it upstream) nor recorded', async () => {
    const secret = `tgw_${'Q'.repeat(43)}`;
    await gw.served.gateway.audit.flush();
    const before = gw.audit.events.length;
    const res = await check({
      'x-original-uri': '/api/items',
      'x-original-method': 'GET',
      'x-original-host': 'api.example.com',
      'x-request-id': secret,
      authorization: `Bearer ${t}`,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    await gw.served.gateway.audit.flush();
    const events = gw.audit.events.slice(before);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.request_id, res.headers.get('x-request-id'));
    assert.ok(!JSON.stringify(events).includes(secret));
  });
});

describe('gateway: forward-auth peers', () => {
  it('hides the endpoint from peers not on the allowlist', async () => {
    const gw = await startGateway(config(['10.0.0.0/8']));
    try {
      const t = await token();
      const res = await fetch(`${gw.url}/_tessera/auth`, {
        headers: {
          'x-tessera-forward-auth': FA_SECRET,
          'x-original-uri': '/api/x',
          'x-original-method': 'GET',
          'x-original-host': 'api.example.com',
          authorization: `Bearer ${t}`,
        },
      });
      assert.equal(res.status, 404);
      assert.equal(res.headers.get('authorization'), null);
    } finally {
      await gw.close();
    }
  });
});

describe('gateway: CORS preflight (OPTIONS without a token)', () => {
  it('is refused 401 unless a route takes OPTIONS with auth: none; then it reaches the upstream without a credential, at the gateway and through forward-auth', async () => {
    const up = await startUpstream();
    const route = (id: string, extra: object) => ({
      id,
      match: { path_prefix: '/api', ...extra },
      upstream: { url: up.url, credential: { type: 'static' as const, token: UPSTREAM_TOKEN } },
      auth: 'jwt' as const,
      audience: AUDIENCE,
      rules: [{ scopes: ['api:read'] }],
    });
    const preflight = { origin: 'https://app.example', 'access-control-request-method': 'DELETE' };
    const closed = await startGateway({ ...baseConfig(), gateway: { routes: [route('api', {})] } });
    const open = await startGateway({
      ...baseConfig(),
      gateway: {
        forward_auth: { enabled: true, flavor: 'traefik', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: [
          { id: 'preflight', match: { path_prefix: '/api', methods: ['OPTIONS'] }, upstream: { url: up.url }, auth: 'none' as const },
          route('api', {}),
        ],
      },
    });
    try {
      const refused = await fetch(`${closed.url}/api/items`, { method: 'OPTIONS', headers: preflight });
      assert.equal(refused.status, 401);
      assert.equal(up.seen.length, 0);
      const passed = await fetch(`${open.url}/api/items`, { method: 'OPTIONS', headers: preflight });
      assert.equal(passed.status, 200);
      assert.equal(up.seen.at(-1)?.method, 'OPTIONS');
      assert.equal(up.seen.at(-1)?.headers.authorization, undefined, 'no credential for an unauthenticated preflight');
      const check = await fetch(`${open.url}/_tessera/auth`, {
        headers: {
          'x-tessera-forward-auth': FA_SECRET,
          'x-forwarded-method': 'OPTIONS',
          'x-forwarded-uri': '/api/items',
          'x-forwarded-host': 'api.example.com',
          ...preflight,
        },
      });
      assert.equal(check.status, 200);
      assert.equal(check.headers.get('authorization'), null);
      // Other methods still need a token.
      assert.equal((await fetch(`${open.url}/api/items`, { method: 'DELETE', headers: preflight })).status, 401);
    } finally {
      await closed.close();
      await open.close();
      await up.close();
    }
  });
});

describe('gateway: forward-auth for Envoy, routes with different credential headers', () => {
  it("an allow answer names for removal only its own route's headers: another route's credential header (an API key its upstream takes from callers) passes as through Tessera's own proxy", async () => {
    const base = config(undefined, 'envoy');
    const gw = await startGateway({
      ...base,
      gateway: {
        ...base.gateway,
        routes: [
          {
            id: 'keyed',
            match: { host: 'api.example.com', path_prefix: '/keyed' },
            upstream: {
              url: 'http://127.0.0.1:9',
              credential: { type: 'static' as const, header: 'x-api-key', scheme: '', token: UPSTREAM_TOKEN },
            },
            auth: 'jwt' as const,
            audience: AUDIENCE,
            rules: [{ path: '/keyed/**', scopes: ['api:read'] }],
          },
          {
            id: 'open',
            match: { host: 'api.example.com', path_prefix: '/open' },
            upstream: { url: 'http://127.0.0.1:9' },
            auth: 'jwt' as const,
            audience: AUDIENCE,
            rules: [{ path: '/open/**', scopes: ['api:read'] }],
          },
        ],
      },
    });
    try {
      const t = await token({ scope: 'api:read' });
      const ask = (path: string) =>
        raw(gw.url, path, 'GET', [
          ['host', 'api.example.com'],
          ['x-tessera-forward-auth', FA_SECRET],
          ['authorization', `Bearer ${t}`],
        ]);
      const open = await ask('/_tessera/auth/open/x');
      assert.equal(open.status, 200);
      const removedOpen = String(open.headers['x-envoy-auth-headers-to-remove']).split(', ');
      assert.ok(removedOpen.includes('authorization') && removedOpen.includes('x-tessera-subject'), removedOpen.join());
      assert.ok(!removedOpen.includes('x-api-key'), removedOpen.join());
      const keyed = await ask('/_tessera/auth/keyed/x');
      assert.equal(keyed.status, 200);
      assert.equal(keyed.headers['x-api-key'], UPSTREAM_TOKEN);
      assert.ok(!String(keyed.headers['x-envoy-auth-headers-to-remove']).split(', ').includes('x-api-key'));
    } finally {
      await gw.close();
    }
  });
});

describe('attack: replaying a DPoP proof through the nginx decision cache (forward_auth.cache_ttl)', () => {
  it('an allow for a DPoP-bound token is never marked cacheable (no X-Accel-Expires), so each proof is checked, and its replay refused; a bearer allow still is', async () => {
    const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;
    const base = config();
    const gw = await startGateway({
      ...base,
      dpop: { mode: 'allowed' },
      gateway: { ...base.gateway, forward_auth: { ...base.gateway.forward_auth, cache_ttl: '30s' } },
    });
    try {
      const bound = await token({ sub: 'fa-dpop', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
      const proof = await new SignJWT({
        htm: 'GET',
        htu: 'http://api.example.com/api/items',
        jti: randomUUID(),
        ath: createHash('sha256').update(bound).digest('base64url'),
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
        .setIssuedAt()
        .sign(holder.privateKey);
      const ask = (authorization: string, dpop?: string) =>
        fetch(`${gw.url}/_tessera/auth`, {
          headers: {
            'x-tessera-forward-auth': FA_SECRET,
            'x-original-uri': '/api/items',
            'x-original-method': 'GET',
            'x-original-host': 'api.example.com',
            authorization,
            ...(dpop ? { dpop } : {}),
          },
        });
      const first = await ask(`DPoP ${bound}`, proof);
      assert.equal(first.status, 200);
      // nginx would serve this allow from its cache (keyed by Authorization and DPoP) to whoever
      // presents the same pair again within cache_ttl, never asking whether the proof was used.
      assert.equal(first.headers.get('x-accel-expires'), null);
      const replay = await ask(`DPoP ${bound}`, proof);
      assert.equal(replay.status, 401);
      assert.match(replay.headers.get('www-authenticate') ?? '', /error="invalid_dpop_proof"/);
      const plain = await ask(`Bearer ${await token({ sub: 'fa-bearer' })}`);
      assert.equal(plain.status, 200);
      assert.ok(Number(plain.headers.get('x-accel-expires')) >= 1);
    } finally {
      await gw.close();
    }
  });
});

describe('gateway: forward-auth, the public A2A agent card', () => {
  it('identity spoofing through the public card: an allow answer for the card (no token needed) still names for removal (Envoy) or answers empty (Caddy) every identity and credential header, so a caller’s own X-Tessera-Subject and Authorization do not reach the upstream beside it', async () => {
    const card = { name: 'agent', url: 'https://agent.example/a2a', version: '1.0.0' };
    const gateway = (flavor: 'envoy' | 'caddy') =>
      startGateway({
        ...baseConfig(),
        scopes: { 'agent:invoke': {} },
        gateway: {
          forward_auth: { enabled: true, flavor, shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
          routes: [
            {
              id: 'agent',
              match: { host: 'api.example.com', path_prefix: '/agent' },
              upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static' as const, token: UPSTREAM_TOKEN } },
              auth: 'jwt' as const,
              audience: AUDIENCE,
              rules: [{ scopes: ['agent:invoke'] }],
              identity_headers: ['subject' as const, 'client' as const],
              a2a: { token_url: 'https://issuer.example/oauth2/token', card },
            },
          ],
        },
      });
    const spoof: [string, string][] = [
      ['x-tessera-forward-auth', FA_SECRET],
      ['authorization', 'Bearer caller-own-token'],
      ['x-tessera-subject', 'admin'],
    ];
    const envoyGw = await gateway('envoy');
    const caddyGw = await gateway('caddy');
    try {
      const viaEnvoy = await raw(envoyGw.url, '/_tessera/auth/agent/.well-known/agent-card.json', 'GET', [
        ['host', 'api.example.com'],
        ...spoof,
      ]);
      assert.equal(viaEnvoy.status, 200);
      const removed = new Set(String(viaEnvoy.headers['x-envoy-auth-headers-to-remove'] ?? '').split(', '));
      for (const name of ['authorization', 'dpop', 'x-tessera-subject', 'x-tessera-client-id', 'x-tessera-issuer'])
        assert.ok(removed.has(name), `${name} not removed: ${[...removed].join()}`);
      assert.equal(viaEnvoy.headers['cache-control'], 'no-store');
      const viaCaddy = await raw(caddyGw.url, '/_tessera/auth', 'GET', [
        ['host', new URL(caddyGw.url).host],
        ['x-forwarded-method', 'GET'],
        ['x-forwarded-uri', '/agent/.well-known/agent-card.json'],
        ['x-forwarded-host', 'api.example.com'],
        ...spoof,
      ]);
      assert.equal(viaCaddy.status, 200);
      assert.equal(viaCaddy.headers.authorization, '');
      assert.equal(viaCaddy.headers['x-tessera-subject'], '');
      assert.equal(viaCaddy.headers['x-tessera-client-id'], '');
    } finally {
      await envoyGw.close();
      await caddyGw.close();
    }
  });
});

describe('gateway: forward-auth, A2A routes binding tasks to their creator', () => {
  const card = { name: 'agent', url: 'https://agent.example/a2a', version: '1.0.0' };
  const gateway = (bindTasks: boolean) =>
    startGateway({
      ...baseConfig(),
      scopes: { 'agent:invoke': {} },
      gateway: {
        forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: [
          {
            id: 'agent',
            match: { host: 'api.example.com', path_prefix: '/agent' },
            upstream: { url: 'http://127.0.0.1:9' },
            auth: 'jwt' as const,
            audience: AUDIENCE,
            rules: [{ scopes: ['agent:invoke'] }],
            a2a: { token_url: 'https://issuer.example/oauth2/token', card, bind_tasks: bindTasks },
          },
        ],
      },
    });
  const check = async (gw: TestGateway, uri: string, method: string) =>
    fetch(`${gw.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-original-uri': uri,
        'x-original-method': method,
        'x-original-host': 'api.example.com',
        authorization: `Bearer ${await token({ sub: 'bob', scope: 'agent:invoke' })}`,
      },
    });

  it("task binding bypass: a check for an A2A route binding tasks is refused, whatever the token, since the proxy sends neither the body (naming another principal's task) nor the answer (creating one)", async () => {
    const gw = await gateway(true);
    try {
      const res = await check(gw, '/agent/', 'POST');
      assert.equal(res.status, 403);
      assert.equal(res.headers.get('x-tessera-status'), '404');
      assert.equal(res.headers.get('authorization'), null);
      await gw.served.gateway.audit.flush();
      const e = gw.audit.events.filter((x) => x.kind === 'gateway.forward_auth').at(-1);
      assert.equal(e?.route, 'agent');
      assert.equal(e?.reason, 'a2a_forward_auth_refused');
      assert.equal(e?.decision, 'deny');
      // The public card is discovery, no task in it: still allowed.
      assert.equal((await check(gw, '/agent/.well-known/agent-card.json', 'GET')).status, 200);
    } finally {
      await gw.close();
    }
  });

  it('with a2a.bind_tasks: false (the upstream checks ownership), A2A calls are decided through forward-auth as before', async () => {
    const gw = await gateway(false);
    try {
      assert.equal((await check(gw, '/agent/', 'POST')).status, 200);
    } finally {
      await gw.close();
    }
  });
});

describe('attack: a token offered as a WebSocket subprotocol beside Authorization, behind forward-auth', () => {
  // The proxy forwards Sec-WebSocket-Protocol as the client sent it; Tessera's own proxy removes
  // such entries, here it can only refuse the check.
  const REASON = 'forward_auth_subprotocol_credential_refused';
  const gateways = new Map<Flavor, TestGateway>();
  let t: string;
  before(async () => {
    for (const flavor of ['nginx', 'traefik', 'caddy', 'envoy'] as const)
      gateways.set(flavor, await startGateway(config(undefined, flavor)));
    t = await token({ sub: 'ws-user' });
  });
  after(async () => {
    for (const g of gateways.values()) await g.close();
  });

  /** A check as each proxy sends it, with the caller's Authorization and Sec-WebSocket-Protocol. */
  const check = (flavor: Flavor, protocols: string, authorization = `Bearer ${t}`) => {
    const g = gateways.get(flavor)!;
    const described: [string, string][] =
      flavor === 'envoy'
        ? [['host', 'api.example.com']]
        : flavor === 'nginx'
          ? [
              ['x-original-uri', '/api/ws'],
              ['x-original-method', 'GET'],
              ['x-original-host', 'api.example.com'],
            ]
          : [
              ['x-forwarded-uri', '/api/ws'],
              ['x-forwarded-method', 'GET'],
              ['x-forwarded-host', 'api.example.com'],
            ];
    const headers: [string, string][] = [
      ...described,
      ['x-tessera-forward-auth', FA_SECRET],
      ['authorization', authorization],
      ['sec-websocket-version', '13'],
      ['sec-websocket-protocol', protocols],
    ];
    if (flavor !== 'envoy') headers.unshift(['host', new URL(g.url).host]);
    const path = flavor === 'envoy' ? '/_tessera/auth/api/ws' : '/_tessera/auth';
    return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
      request(`${g.url}${path}`, { headers: headers.flat() }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      })
        .on('error', reject)
        .end();
    });
  };
  const lastCheck = async (flavor: Flavor) => {
    const g = gateways.get(flavor)!;
    await g.served.gateway.audit.flush();
    return g.audit.events.filter((e) => e.kind === 'gateway.forward_auth').at(-1);
  };

  for (const flavor of ['nginx', 'traefik', 'caddy', 'envoy'] as const) {
    it(`token leak through Sec-WebSocket-Protocol (${flavor}): a check whose subprotocols carry the presented token or a configured secret is refused 400, audited, with no credential and no token in the answer or the audit`, async () => {
      // nginx turns any 4xx but 401/403 into a 500 for the client: 401 with the real status.
      const status = flavor === 'nginx' ? 401 : 400;
      for (const [label, protocols] of [
        ['bearer, <token>', `bearer, ${t}`],
        ['chat, access_token.<token>', `chat, access_token.${t}`],
        ['bearer, <upstream credential>', `bearer, ${UPSTREAM_TOKEN}`],
        [
          'base64url.bearer.authorization.k8s.io.<base64url(token)>',
          `base64url.bearer.authorization.k8s.io.${Buffer.from(t).toString('base64url')}`,
        ],
      ] as const) {
        const res = await check(flavor, protocols);
        assert.equal(res.status, status, label);
        if (flavor === 'nginx') assert.equal(res.headers['x-tessera-status'], '400');
        assert.equal(res.headers.authorization, undefined, 'no upstream credential answered');
        assert.ok(!res.body.includes(t) && !res.body.includes(UPSTREAM_TOKEN), 'no token in the body');
        assert.match(res.body, /invalid_request/);
        const e = await lastCheck(flavor);
        assert.equal(e?.decision, 'deny');
        assert.equal(e?.reason, REASON);
        const recorded = JSON.stringify(gateways.get(flavor)!.audit.events);
        assert.ok(!recorded.includes(t) && !recorded.includes(UPSTREAM_TOKEN), 'no token in the audit trail');
      }
      // Other subprotocols pass.
      const ok = await check(flavor, 'chat, superchat');
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    });
  }

  it('a token offered only as a subprotocol is not read as a credential behind forward-auth (401 credentials_missing, not in the audit)', async () => {
    const g = gateways.get('traefik')!;
    const res = await fetch(`${g.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-forwarded-uri': '/api/ws',
        'x-forwarded-method': 'GET',
        'x-forwarded-host': 'api.example.com',
        'sec-websocket-protocol': `bearer, ${t}`,
      },
    });
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('authorization'), null);
    const e = await lastCheck('traefik');
    assert.equal(e?.reason, 'credentials_missing');
    assert.ok(!JSON.stringify(g.audit.events).includes(t));
  });
});
