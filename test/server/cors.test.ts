/**
 * CORS for browser-based clients (`token_service.cors.allowed_origins`) over real HTTP: preflights
 * answered for a listed origin at the token, revocation and registration endpoints, refused and
 * audited otherwise; answers (errors too) readable by a listed origin only, never with credentials;
 * the admin API and introspection never answer CORS; a public client's whole PKCE flow readable
 * cross-origin.
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
  issuer = await startIssuer({
    config: {
      token_service: {
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
