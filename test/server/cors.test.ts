/**
 * CORS for browser-based clients (`token_service.cors.allowed_origins`) over real HTTP: preflights
 * answered for a listed origin at the token, revocation and registration endpoints, refused and
 * audited otherwise; answers (errors too) readable by a listed origin only, never with credentials;
 * the admin API and introspection never answer CORS; a public client's whole PKCE flow readable
 * cross-origin. A client's own allowed_origins: only they may act as it (refused and audited
 * otherwise), preflights answered for the union with every client's, no change for clients without.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { approve, authorizationConfig, authorizationRequest } from '../helpers/authorize.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const APP = 'https://app.example.com';
const INSPECTOR = 'http://localhost:6274';
const MCP = 'https://mcp.test/mcp';
const REDIRECT = 'http://127.0.0.1:33418/callback';

let issuer: RunningIssuer;

before(async () => {
  // This file refuses many client authentications from one address on purpose; the per-address
  // limit of those (auth_failure_limit) is test/issuer/auth-failure-limit.test.ts's.
  issuer = await startIssuer({
    config: {
      token_service: {
        auth_failure_limit: { enabled: false },
        authorization: authorizationConfig(),
        registration: { enabled: true, open: true, scopes: ['mcp:tools'], audiences: [MCP] },
        dpop: { nonce: true },
        cors: { allowed_origins: [APP, INSPECTOR] },
      },
    } as never,
  });
});
after(() => issuer?.close());

const ENDPOINTS = ['/oauth2/token', '/oauth2/revoke', '/oauth2/register'] as const;

function preflight(url: string, origin: string, requestId?: string, headers = 'authorization, content-type'): Promise<Response> {
  return fetch(url, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': headers,
      ...(requestId !== undefined ? { 'x-request-id': requestId } : {}),
    },
  });
}

const accessControl = (res: Response) => [...res.headers.keys()].filter((h) => h.startsWith('access-control-'));

async function auditOf(requestId: string): Promise<[string, string][]> {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ request_id: requestId, limit: 10 })).map((e) => [e.kind, e.reason ?? '']);
}

describe('preflight (OPTIONS with Origin and Access-Control-Request-Method)', () => {
  it('from a listed origin: 204 naming that origin, POST, the headers the endpoint reads, Max-Age, Vary: Origin; no credentials; not audited', async () => {
    for (const path of ENDPOINTS) {
      for (const origin of [APP, INSPECTOR]) {
        const id = `preflight-ok-${path.slice(8)}-${origin.length}`;
        const res = await preflight(`${issuer.url}${path}`, origin, id);
        assert.equal(res.status, 204, path);
        assert.equal(res.headers.get('access-control-allow-origin'), origin, path);
        assert.equal(res.headers.get('access-control-allow-methods'), 'POST', path);
        assert.equal(
          res.headers.get('access-control-allow-headers'),
          path === '/oauth2/token' ? 'Authorization, Content-Type, DPoP' : 'Authorization, Content-Type',
          path,
        );
        assert.equal(res.headers.get('access-control-max-age'), '600', path);
        assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i, path);
        assert.equal(res.headers.get('access-control-allow-credentials'), null, path);
        assert.deepEqual(await auditOf(id), [], path);
      }
    }
  });

  it('attack: a preflight from an origin not listed (another site, a look-alike host, another scheme or port, a path, "null", two origins) is 403 cors_origin_not_allowed with no Access-Control-* header, and audited at each endpoint', async () => {
    const kinds = {
      '/oauth2/token': 'token.denied',
      '/oauth2/revoke': 'revocation.denied',
      '/oauth2/register': 'client.registration_denied',
    };
    const hostile = [
      'https://evil.example',
      'https://app.example.com.evil.test',
      'http://app.example.com',
      'https://app.example.com:8443',
      'https://APP.example.com',
      'null',
      `${APP}, https://evil.example`,
      'http://localhost:6275',
    ];
    for (const path of ENDPOINTS) {
      for (const [i, origin] of hostile.entries()) {
        const id = `preflight-refused-${path.slice(8)}-${i}`;
        const res = await preflight(`${issuer.url}${path}`, origin, id);
        assert.equal(res.status, 403, `${path} ${origin}`);
        assert.deepEqual(accessControl(res), [], `${path} ${origin}`);
        assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
        assert.deepEqual(await res.json(), {
          error: 'invalid_request',
          error_description: 'Browser requests from this origin are not allowed at this endpoint.',
        });
        assert.deepEqual(await auditOf(id), [[kinds[path], 'cors_origin_not_allowed']], `${path} ${origin}`);
      }
    }
  });

  it('an OPTIONS that is no preflight (no Origin) is refused as before: 405 request_method_not_allowed, no CORS', async () => {
    const res = await fetch(`${issuer.url}/oauth2/token`, { method: 'OPTIONS' });
    assert.equal(res.status, 405);
    assert.deepEqual(accessControl(res), []);
  });
});

describe('answers to a browser', () => {
  it('a token request from a listed origin carries Access-Control-Allow-Origin (that origin) and exposes DPoP-Nonce and WWW-Authenticate; never credentials', async () => {
    const c = await issuer.addClient({ id: 'cors-app', scopes: ['api:read'] });
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: basic(c.id, c.secret), origin: APP },
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), APP);
    assert.equal(res.headers.get('access-control-expose-headers'), 'DPoP-Nonce, WWW-Authenticate, X-Request-Id');
    assert.ok(res.headers.get('dpop-nonce'));
    assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
    assert.equal(res.headers.get('cache-control'), 'no-store');
  });

  it('OAuth errors to a listed origin are readable too: 401 invalid_client (with its challenge), 400 unsupported_grant_type, 405, a bad Content-Type, at the revocation endpoint and registration too', async () => {
    const cases: [string, RequestInit, number][] = [
      [
        '/oauth2/token',
        { method: 'POST', headers: { authorization: basic('nobody', 'wrong') }, body: 'grant_type=client_credentials' },
        401,
      ],
      ['/oauth2/token', { method: 'POST', body: 'grant_type=password&client_id=x' }, 400],
      ['/oauth2/token', { method: 'GET' }, 405],
      ['/oauth2/revoke', { method: 'POST', body: 'token=x' }, 401],
      ['/oauth2/register', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' }, 400],
      ['/oauth2/register', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"redirect_uris":["ftp://x"]}' }, 400],
    ];
    for (const [path, init, status] of cases) {
      const headers = {
        'content-type': 'application/x-www-form-urlencoded',
        ...(init.headers as Record<string, string>),
        origin: INSPECTOR,
      };
      const res = await fetch(`${issuer.url}${path}`, { ...init, headers });
      assert.equal(res.status, status, `${path} ${await res.clone().text()}`);
      assert.equal(res.headers.get('access-control-allow-origin'), INSPECTOR, path);
      assert.match(res.headers.get('access-control-expose-headers') ?? '', /WWW-Authenticate/, path);
      assert.equal(res.headers.get('access-control-allow-credentials'), null, path);
      if (status === 401) assert.ok(res.headers.get('www-authenticate'), path);
    }
  });

  it('attack: an Origin not listed is never reflected: the request is answered as without CORS (the browser keeps the answer from the page), with Vary: Origin', async () => {
    const c = await issuer.addClient({ id: 'cors-reflect', scopes: ['api:read'] });
    for (const origin of ['https://evil.example', `${APP}.evil.test`, 'null', `${APP}/`]) {
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { authorization: basic(c.id, c.secret), origin },
      );
      assert.equal(res.status, 200);
      assert.deepEqual(accessControl(res), [], origin);
      assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
    }
  });

  it('attack: the admin API and introspection never answer CORS, to a listed origin either (resource servers and operators call them, never pages)', async () => {
    for (const path of ['/oauth2/introspect', '/oauth2/admin/revoke', '/oauth2/admin/grants/g_x']) {
      const pre = await preflight(`${issuer.url}${path}`, APP);
      assert.ok(pre.status >= 400, `${path}: ${pre.status}`);
      assert.deepEqual(accessControl(pre), [], path);
      const post = await fetch(`${issuer.url}${path}`, {
        method: 'POST',
        headers: { origin: APP, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'token=x',
      });
      assert.deepEqual(accessControl(post), [], path);
    }
  });

  it('the metadata and the JWKS stay open to every origin (Access-Control-Allow-Origin: *)', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/jwks.json']) {
      const res = await fetch(`${issuer.url}${path}`, { headers: { origin: 'https://evil.example' } });
      assert.equal(res.headers.get('access-control-allow-origin'), '*', path);
    }
  });
});

describe('a public client in a browser (MCP Inspector): registration, code, token, refresh, revocation', () => {
  it('every answer is readable from its origin (Access-Control-Allow-Origin equals it)', async () => {
    const origin = INSPECTOR;
    const readable = (res: Response, what: string) => {
      assert.equal(res.headers.get('access-control-allow-origin'), origin, what);
      assert.equal(res.headers.get('access-control-allow-credentials'), null, what);
    };
    for (const path of ENDPOINTS) readable(await preflight(`${issuer.url}${path}`, origin, undefined, 'content-type'), `preflight ${path}`);

    const reg = await fetch(`${issuer.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin },
      body: JSON.stringify({
        client_name: 'Inspector',
        redirect_uris: [REDIRECT],
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      }),
    });
    assert.equal(reg.status, 201);
    readable(reg, 'registration');
    const { client_id } = (await reg.json()) as { client_id: string };

    const { verifier, challenge } = pkcePair();
    const redirect = await approve(
      authorizationRequest(`${issuer.url}/oauth2/authorize`, {
        client_id,
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        scope: 'mcp:tools',
        resource: MCP,
      }),
    );
    const code = redirect.searchParams.get('code') as string;
    assert.ok(code);

    const form = { 'content-type': 'application/x-www-form-urlencoded', origin };
    const token = await fetch(`${issuer.url}/oauth2/token`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: REDIRECT,
        code_verifier: verifier,
        client_id,
      }).toString(),
    });
    const tokens = (await token.json()) as { refresh_token: string };
    assert.equal(token.status, 200, JSON.stringify(tokens));
    readable(token, 'code redemption');
    assert.ok(tokens.refresh_token);

    const refresh = await fetch(`${issuer.url}/oauth2/token`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id }).toString(),
    });
    const refreshed = (await refresh.json()) as { refresh_token: string };
    assert.equal(refresh.status, 200, JSON.stringify(refreshed));
    readable(refresh, 'refresh');

    const revoke = await fetch(`${issuer.url}/oauth2/revoke`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ token: refreshed.refresh_token, client_id }).toString(),
    });
    assert.equal(revoke.status, 200);
    readable(revoke, 'revocation');
  });
});

describe('dynamic registration: allowed_cors_origins (Ory Hydra’s client metadata extension)', () => {
  const SPA = 'https://spa.test';
  const register = (metadata: Record<string, unknown>) =>
    fetch(`${issuer.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', ...metadata }),
    });

  it('registers the origins, echoes them, and holds the client to them: a listed origin of token_service.cors is refused for it', async () => {
    const res = await register({ allowed_cors_origins: [SPA] });
    assert.equal(res.status, 201);
    const body = (await res.json()) as { client_id: string; allowed_cors_origins: string[] };
    assert.deepEqual(body.allowed_cors_origins, [SPA]);
    // Its preflight is answered, though token_service.cors does not list it.
    assert.equal((await preflight(`${issuer.url}/oauth2/revoke`, SPA)).status, 204);
    const own = await issuer.post('/oauth2/revoke', { token: 'x', client_id: body.client_id }, { origin: SPA });
    assert.equal(own.status, 200);
    assert.equal(own.headers.get('access-control-allow-origin'), SPA);
    const listed = await issuer.post('/oauth2/revoke', { token: 'x', client_id: body.client_id }, { origin: APP });
    assert.equal(listed.status, 401);
    assert.deepEqual(accessControl(listed), []);
    // Without the member, nothing changes: no origins of its own.
    const plain = await register({});
    assert.equal(plain.status, 201);
    assert.equal(((await plain.json()) as Record<string, unknown>).allowed_cors_origins, undefined);
  });

  it('attack: origins that are patterns, paths, plain http off loopback, not a list, or too many are refused as invalid metadata', async () => {
    for (const value of [
      ['https://*.spa.test'],
      [`${SPA}/`],
      ['http://spa.test'],
      SPA,
      [1],
      Array.from({ length: 21 }, (_, i) => `https://s${i}.test`),
    ]) {
      const res = await register({ allowed_cors_origins: value });
      assert.equal(res.status, 400, JSON.stringify(value));
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client_metadata');
    }
  });
});

describe('without token_service.cors (the default) and with "*"', () => {
  it('by default a preflight is refused (403 cors_origin_not_allowed, audited) and no answer carries CORS headers or Vary', async () => {
    const plain = await startIssuer();
    try {
      const res = await fetch(`${plain.url}/oauth2/token`, {
        method: 'OPTIONS',
        headers: { origin: APP, 'access-control-request-method': 'POST', 'x-request-id': 'cors-default' },
      });
      assert.equal(res.status, 403);
      assert.deepEqual(accessControl(res), []);
      assert.equal(res.headers.get('vary'), null);
      await plain.service.audit.flush();
      const events = await plain.store.queryAudit({ request_id: 'cors-default', limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.reason]),
        [['token.denied', 'cors_origin_not_allowed']],
      );
      const post = await plain.post('/oauth2/token', { grant_type: 'client_credentials' }, { origin: APP });
      assert.deepEqual(accessControl(post), []);
      assert.equal(post.headers.get('vary'), null);
    } finally {
      await plain.close();
    }
  });

  it('"*" answers every origin with Access-Control-Allow-Origin: * (never the origin, never credentials)', async () => {
    const open = await startIssuer({ config: { token_service: { cors: { allowed_origins: ['*'] } } } as never });
    try {
      const pre = await preflight(`${open.url}/oauth2/token`, 'https://anywhere.example');
      assert.equal(pre.status, 204);
      assert.equal(pre.headers.get('access-control-allow-origin'), '*');
      assert.equal(pre.headers.get('access-control-allow-credentials'), null);
      const post = await open.post('/oauth2/token', { grant_type: 'client_credentials' }, { origin: 'https://anywhere.example' });
      assert.equal(post.status, 401);
      assert.equal(post.headers.get('access-control-allow-origin'), '*');
      assert.equal(post.headers.get('access-control-allow-credentials'), null);
    } finally {
      await open.close();
    }
  });
});

describe('a client’s own allowed origins (allowed_origins, Hydra’s allowed_cors_origins)', () => {
  // GLOBAL is in token_service.cors; SPA and OTHER are each allowed by one client only.
  const GLOBAL = 'https://global.example';
  const SPA = 'https://spa.example';
  const OTHER = 'https://other.example';
  let own: RunningIssuer;
  let spa: { id: string; secret: string };
  let other: { id: string; secret: string };
  let legacy: { id: string; secret: string };

  before(async () => {
    // Refused authentications from one address on purpose, as above.
    own = await startIssuer({
      config: { token_service: { cors: { allowed_origins: [GLOBAL] }, auth_failure_limit: { enabled: false } } } as never,
    });
    spa = await own.addClient({ id: 'spa-secret', scopes: ['api:read'], allowedOrigins: [SPA] });
    await own.addClient({
      id: 'spa-public',
      public: true,
      grantTypes: ['authorization_code', 'refresh_token'],
      redirectUris: ['https://spa.example/cb'],
      allowedOrigins: [SPA, 'http://localhost:5173'],
    });
    other = await own.addClient({ id: 'other-app', scopes: ['api:read'], allowedOrigins: [OTHER] });
    legacy = await own.addClient({ id: 'legacy', scopes: ['api:read'] });
  });
  after(() => own?.close());

  async function auditAt(requestId: string): Promise<[string, string, string][]> {
    await own.service.audit.flush();
    return (await own.store.queryAudit({ request_id: requestId, limit: 10 })).map((e) => [e.kind, e.reason ?? '', e.client_id ?? '']);
  }

  it('a request from the client’s own origin is answered, readable by that origin alone (it is not in token_service.cors)', async () => {
    const res = await own.post(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: basic(spa.id, spa.secret), origin: SPA },
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), SPA);
    assert.equal(res.headers.get('access-control-expose-headers'), 'DPoP-Nonce, WWW-Authenticate, X-Request-Id');
    assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
    // A public client, identified by its client_id: an OAuth error after it is identified is readable too.
    const grant = await own.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: 'nope', client_id: 'spa-public' },
      { origin: SPA },
    );
    assert.equal(grant.status, 400);
    assert.equal(((await grant.json()) as { error: string }).error, 'invalid_grant');
    assert.equal(grant.headers.get('access-control-allow-origin'), SPA);
    const revoke = await own.post('/oauth2/revoke', { token: 'nope', client_id: 'spa-public' }, { origin: 'http://localhost:5173' });
    assert.equal(revoke.status, 200);
    assert.equal(revoke.headers.get('access-control-allow-origin'), 'http://localhost:5173');
  });

  it('attack: another client’s origin, or one token_service.cors lists, may not act as this client: 401 invalid_client, no Access-Control-Allow-Origin, audited cors_origin_not_allowed_for_client at token, revocation and introspection', async () => {
    for (const origin of [OTHER, GLOBAL, 'https://evil.example', `${SPA}.evil.test`, 'null']) {
      const cases: [string, Record<string, string>, Record<string, string>, string][] = [
        ['/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(spa.id, spa.secret) }, 'token.denied'],
        ['/oauth2/token', { grant_type: 'refresh_token', refresh_token: 'nope', client_id: 'spa-public' }, {}, 'token.denied'],
        ['/oauth2/revoke', { token: 'nope', client_id: 'spa-public' }, {}, 'revocation.denied'],
        ['/oauth2/revoke', { token: 'nope' }, { authorization: basic(spa.id, spa.secret) }, 'revocation.denied'],
        ['/oauth2/introspect', { token: 'nope' }, { authorization: basic(spa.id, spa.secret) }, 'introspection.denied'],
      ];
      for (const [i, [path, form, headers, kind]] of cases.entries()) {
        const id = `own-refused-${i}-${origin.length}`;
        const res = await own.post(path, form, { ...headers, origin, 'x-request-id': id });
        assert.equal(res.status, 401, `${path} ${origin}`);
        assert.deepEqual(await res.json(), { error: 'invalid_client', error_description: 'Client authentication failed.' });
        assert.deepEqual(accessControl(res), [], `${path} ${origin}`);
        // Introspection answers no browser whatever the origin; the others vary by it.
        if (path !== '/oauth2/introspect') assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
        const client = form.client_id ?? spa.id;
        assert.deepEqual(await auditAt(id), [[kind, 'cors_origin_not_allowed_for_client', client]], `${path} ${origin}`);
      }
    }
    // The other client, from its own origin, is answered: the refusal was about the pair.
    const res = await own.post(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: basic(other.id, other.secret), origin: OTHER },
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), OTHER);
  });

  it('a server’s request (no Origin) is not a browser’s: answered, with no CORS header', async () => {
    const res = await own.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(spa.id, spa.secret) });
    assert.equal(res.status, 200);
    assert.deepEqual(accessControl(res), []);
  });

  it('introspection answers no browser, from the client’s own origin either', async () => {
    const res = await own.post('/oauth2/introspect', { token: 'nope' }, { authorization: basic(spa.id, spa.secret), origin: SPA });
    assert.equal(res.status, 200);
    assert.deepEqual(accessControl(res), []);
  });

  it('a client without allowed_origins is decided by token_service.cors exactly as before: its origin readable, another client’s origin answered without CORS', async () => {
    const listed = await own.post(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: basic(legacy.id, legacy.secret), origin: GLOBAL },
    );
    assert.equal(listed.status, 200);
    assert.equal(listed.headers.get('access-control-allow-origin'), GLOBAL);
    for (const origin of [SPA, 'https://evil.example']) {
      const res = await own.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { authorization: basic(legacy.id, legacy.secret), origin },
      );
      assert.equal(res.status, 200, origin);
      assert.deepEqual(accessControl(res), [], origin);
      assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
    }
    // Before the client is known (no such client), token_service.cors decides too.
    const unknown = await own.post(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: basic('nobody', 'x'), origin: SPA },
    );
    assert.equal(unknown.status, 401);
    assert.deepEqual(accessControl(unknown), []);
  });

  it('a preflight names no client: answered for token_service.cors ∪ every enabled client’s origins at the token and revocation endpoints, registration keeps token_service.cors alone', async () => {
    for (const origin of [GLOBAL, SPA, OTHER, 'http://localhost:5173']) {
      for (const path of ['/oauth2/token', '/oauth2/revoke']) {
        const res = await preflight(`${own.url}${path}`, origin);
        assert.equal(res.status, 204, `${path} ${origin}`);
        assert.equal(res.headers.get('access-control-allow-origin'), origin);
        assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/i);
      }
    }
    for (const origin of ['https://evil.example', 'https://spa.example:8443']) {
      const res = await preflight(`${own.url}/oauth2/token`, origin, `own-preflight-${origin.length}`);
      assert.equal(res.status, 403, origin);
      assert.deepEqual(accessControl(res), []);
      assert.deepEqual(await auditAt(`own-preflight-${origin.length}`), [['token.denied', 'cors_origin_not_allowed', '']]);
    }
    // Registration creates a client, it is not one: no client's origin opens it.
    assert.equal((await preflight(`${own.url}/oauth2/register`, SPA)).status, 404);
    // Introspection answers no preflight at all.
    assert.deepEqual(accessControl(await preflight(`${own.url}/oauth2/introspect`, SPA)), []);
  });

  it('the union follows the clients: a client registered here counts at once, one changed or disabled elsewhere at the next sync (clients_version)', async () => {
    const NEW = 'https://new.example';
    assert.equal((await preflight(`${own.url}/oauth2/token`, NEW)).status, 403);
    await own.addClient({ id: 'new-app', allowedOrigins: [NEW] });
    assert.equal((await preflight(`${own.url}/oauth2/token`, NEW)).status, 204);
    // Another process (the CLI) disables it: the store's clients_version moves, read at the sync.
    await own.store.updateClient('new-app', { disabled: true }, Math.floor(Date.now() / 1000));
    await own.service.sync();
    assert.equal((await preflight(`${own.url}/oauth2/token`, NEW)).status, 403);
    await own.store.updateClient('other-app', { allowedOrigins: [NEW] }, Math.floor(Date.now() / 1000));
    await own.service.sync();
    assert.equal((await preflight(`${own.url}/oauth2/token`, NEW)).status, 204);
    assert.equal((await preflight(`${own.url}/oauth2/token`, OTHER)).status, 403);
    await own.store.updateClient('other-app', { allowedOrigins: [OTHER] }, Math.floor(Date.now() / 1000));
    await own.service.sync();
  });

  it('without token_service.cors, a client’s own origins alone open the endpoints to it (and nothing else changes)', async () => {
    const plain = await startIssuer();
    try {
      const c = await plain.addClient({ id: 'spa-only', scopes: ['api:read'], allowedOrigins: [SPA] });
      const pre = await preflight(`${plain.url}/oauth2/token`, SPA);
      assert.equal(pre.status, 204);
      assert.equal(pre.headers.get('access-control-allow-origin'), SPA);
      assert.equal((await preflight(`${plain.url}/oauth2/token`, OTHER)).status, 403);
      const res = await plain.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { authorization: basic(c.id, c.secret), origin: SPA },
      );
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), SPA);
      const refused = await plain.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { authorization: basic(c.id, c.secret), origin: OTHER },
      );
      assert.equal(refused.status, 401);
      assert.deepEqual(accessControl(refused), []);
    } finally {
      await plain.close();
    }
  });
});
