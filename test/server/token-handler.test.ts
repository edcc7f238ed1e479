/**
 * The request handler: answers only its own paths so the gateway can share the listener, serves
 * RFC 8414 metadata listing exactly what is supported, and the JWKS with the right headers.
 */
import assert from 'node:assert/strict';
import { createServer, type ServerOptions } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createTokenServiceHandler } from '../../src/server/token-handler.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { rawHttp } from '../helpers/net.ts';

let issuer: RunningIssuer;
before(async () => {
  // This file refuses many client authentications from one address on purpose; the per-address
  // limit of those (auth_failure_limit) is test/issuer/auth-failure-limit.test.ts's.
  issuer = await startIssuer({
    config: {
      scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] } },
      token_service: { auth_failure_limit: { enabled: false } },
    },
  });
});
after(() => issuer?.close());

describe('mounting beside other handlers', () => {
  it('returns false for paths that are not the token service’s, so another handler can answer', async () => {
    const tokens = createTokenServiceHandler(issuer.service);
    const server = createServer((req, res) => {
      if (tokens(req, res)) return;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('gateway');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      assert.equal(await (await fetch(`${base}/api/items`)).text(), 'gateway');
      assert.equal(await (await fetch(`${base}/oauth2/tokenx`)).text(), 'gateway');
      const jwks = await fetch(`${base}/.well-known/jwks.json`);
      assert.equal(jwks.status, 200);
      assert.equal(jwks.headers.get('content-type'), 'application/jwk-set+json');
    } finally {
      server.close();
    }
  });
});

describe('RFC 8414 metadata', () => {
  it('lists the endpoints, grant types, auth methods and the scope catalogue, and nothing unsupported', async () => {
    const res = await fetch(`${issuer.url}/.well-known/oauth-authorization-server`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('cache-control') ?? '', /max-age=/);
    const m = (await res.json()) as Record<string, unknown>;
    assert.equal(m.issuer, issuer.url);
    assert.deepEqual(m.scopes_supported, ['api:read', 'api:write']);
    assert.deepEqual(m.response_types_supported, []);
    for (const absent of ['authorization_endpoint', 'registration_endpoint', 'userinfo_endpoint', 'code_challenge_methods_supported']) {
      assert.equal(m[absent], undefined, absent);
    }
    assert.ok(!(m.token_endpoint_auth_signing_alg_values_supported as string[]).some((a) => a.startsWith('HS')));
  });

  it('refuses methods other than GET and HEAD', async () => {
    const res = await fetch(`${issuer.url}/.well-known/jwks.json`, { method: 'POST' });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get('allow'), 'GET, HEAD');
    assert.equal((await fetch(`${issuer.url}/.well-known/jwks.json`, { method: 'HEAD' })).status, 200);
  });
});

describe('405 answers (wrong method): Allow, and never cacheable', () => {
  it('every endpoint answers a method it does not take with 405, the methods it does take in Allow, and Cache-Control: no-store, as its other answers that are not public', async () => {
    const cases: [string, string, string][] = [
      ['/oauth2/token', 'GET', 'POST'],
      ['/oauth2/revoke', 'GET', 'POST'],
      ['/oauth2/introspect', 'GET', 'POST'],
      ['/.well-known/oauth-authorization-server', 'POST', 'GET, HEAD'],
      ['/.well-known/jwks.json', 'POST', 'GET, HEAD'],
      ['/.well-known/jwks.json', 'DELETE', 'GET, HEAD'],
    ];
    for (const [path, method, allow] of cases) {
      const res = await fetch(`${issuer.url}${path}`, { method });
      await res.body?.cancel();
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.headers.get('allow'), allow, `${method} ${path}`);
      assert.equal(res.headers.get('cache-control'), 'no-store', `${method} ${path}`);
      assert.equal(res.headers.get('pragma'), 'no-cache', `${method} ${path}`);
      assert.ok(res.headers.get('x-request-id'), `${method} ${path}`);
    }
  });
});

describe('parameters in the URL query (RFC 6749 §3.2, §2.3.1)', () => {
  it('refuses a query on the form endpoints instead of ignoring it: ?scope=… would otherwise get the full scope, ?client_secret=… would authenticate nothing and sit in access logs', async () => {
    const c = await issuer.addClient({ id: 'query-probe', scopes: ['api:read', 'api:write'] });
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      fetch(`${issuer.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
    const auth = { authorization: basic(c.id, c.secret) };
    for (const [path, body, headers] of [
      ['/oauth2/token?scope=api:read', 'grant_type=client_credentials', auth],
      ['/oauth2/token?grant_type=refresh_token', 'grant_type=client_credentials', auth],
      [`/oauth2/token?client_id=${c.id}&client_secret=${c.secret}`, 'grant_type=client_credentials', {}],
      ['/oauth2/revoke?token=x', 'token=y', auth],
      ['/oauth2/introspect?token=x', 'token=y', auth],
    ] as const) {
      const res = await post(path, body, headers);
      const json = (await res.json()) as { error: string };
      assert.equal(res.status, 400, `${path}: ${JSON.stringify(json)}`);
      assert.equal(json.error, 'invalid_request');
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.equal(res.headers.get('pragma'), 'no-cache');
    }
    // A bare `?` carries nothing and is no reason to refuse.
    const bare = await post('/oauth2/token?', 'grant_type=client_credentials&scope=api:read', auth);
    assert.equal(bare.status, 200);
  });
});

describe('the Content-Type header', () => {
  it('sent twice (a form label and one with another charset, or JSON): refused as request_content_type, not read by the first label Node keeps', async () => {
    const c = await issuer.addClient({ id: 'content-type-probe', scopes: ['api:read'] });
    const body = 'grant_type=client_credentials';
    for (const [path, second] of [
      ['/oauth2/token', 'application/x-www-form-urlencoded; charset=iso-8859-1'],
      ['/oauth2/token', 'application/json'],
      ['/oauth2/token', 'application/x-www-form-urlencoded'],
      ['/oauth2/revoke', 'application/x-www-form-urlencoded; charset=iso-8859-1'],
      ['/oauth2/introspect', 'application/json'],
    ] as const) {
      const answer = await rawHttp(
        issuer.url,
        `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${basic(c.id, c.secret)}\r\n` +
          `Content-Type: application/x-www-form-urlencoded\r\nContent-Type: ${second}\r\n` +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      assert.match(answer, /^HTTP\/1\.1 400 /, `${path}, ${second}: ${answer.split('\r\n')[0]}`);
      assert.match(answer, /"error":"invalid_request"/);
      assert.match(answer, /The request body must be application\/x-www-form-urlencoded\./);
      assert.match(answer, /\r\ncache-control: no-store\r\n/i);
    }
  });
});

describe('refusals before the form is read are audited too', () => {
  it('GET, another Content-Type, a query, a body over the limit and two DPoP headers: token.denied (revocation.denied, introspection.denied) with their reason code', async () => {
    const c = await issuer.addClient({ id: 'unread-form-probe', scopes: ['api:read'] });
    const form = { authorization: basic(c.id, c.secret), 'content-type': 'application/x-www-form-urlencoded' };
    const body = 'grant_type=client_credentials';
    const cases: [string, string, RequestInit, number, string, string][] = [
      ['get', '/oauth2/token', { headers: form }, 405, 'token.denied', 'request_method_not_allowed'],
      [
        'type',
        '/oauth2/token',
        { method: 'POST', headers: { ...form, 'content-type': 'text/plain' }, body },
        400,
        'token.denied',
        'request_content_type',
      ],
      ['query', '/oauth2/token?scope=api:read', { method: 'POST', headers: form, body }, 400, 'token.denied', 'request_query_not_allowed'],
      [
        'large',
        '/oauth2/token',
        { method: 'POST', headers: form, body: `${body}&x=${'a'.repeat(70_000)}` },
        413,
        'token.denied',
        'request_body_too_large',
      ],
      [
        'dpop',
        '/oauth2/token',
        { method: 'POST', headers: { ...form, dpop: 'a.b.c, d.e.f' }, body },
        400,
        'token.denied',
        'dpop_proof_invalid',
      ],
      ['revoke-get', '/oauth2/revoke', { headers: form }, 405, 'revocation.denied', 'request_method_not_allowed'],
      [
        'introspect-type',
        '/oauth2/introspect',
        { method: 'POST', headers: { ...form, 'content-type': 'application/json' }, body: '{}' },
        400,
        'introspection.denied',
        'request_content_type',
      ],
    ];
    for (const [name, path, init, status, kind, reason] of cases) {
      const requestId = `unread-form-${name}`;
      const res = await fetch(`${issuer.url}${path}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), 'x-request-id': requestId },
      });
      const json = (await res.json()) as { error: string };
      assert.equal(res.status, status, `${name}: ${JSON.stringify(json)}`);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      await issuer.service.audit.flush();
      const events = await issuer.store.queryAudit({ request_id: requestId, limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.reason, e.decision]),
        [[kind, reason, 'deny']],
        name,
      );
    }
  });
});

describe('request ids', () => {
  it('echoes a well-formed X-Request-Id and replaces a malformed one', async () => {
    const a = await issuer.post('/oauth2/token', {}, { 'x-request-id': 'req-123' });
    assert.equal(a.headers.get('x-request-id'), 'req-123');
    const b = await issuer.post('/oauth2/token', {}, { 'x-request-id': 'bad id with spaces' });
    assert.match(b.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
  });
  it('attack: a refresh token or client secret sent as X-Request-Id is neither echoed nor recorded: a new id replaces it', async () => {
    for (const secret of [`trt_${'R'.repeat(43)}`, `tcs_${'S'.repeat(43)}`, 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl']) {
      // A GET is refused (405) and audited as token.denied under the request id.
      const res = await fetch(`${issuer.url}/oauth2/token`, { headers: { 'x-request-id': secret } });
      assert.equal(res.status, 405);
      const id = res.headers.get('x-request-id') ?? '';
      assert.match(id, /^[0-9a-f-]{36}$/, secret);
      await issuer.service.audit.flush();
      assert.deepEqual(await issuer.store.queryAudit({ request_id: secret, limit: 10 }), []);
      assert.ok((await issuer.store.queryAudit({ request_id: id, limit: 10 })).length > 0, 'the refusal is audited under the new id');
    }
  });
});

/**
 * The token handler under a server of the embedder’s own (`options` its Node settings) on a
 * loopback port: what the handler reports to onError, and each request’s close (100 ms after).
 */
async function embedderServer(options: ServerOptions = {}) {
  const errors: unknown[] = [];
  const tokens = createTokenServiceHandler(issuer.service, { onError: (e) => errors.push(e) });
  const closed: Promise<void>[] = [];
  const server = createServer(options, (req, res) => {
    closed.push(new Promise((resolve) => req.on('close', () => setTimeout(resolve, 100))));
    if (!tokens(req, res)) res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, errors, closed };
}

/** An access token for the admin API, of a new client `id` with scope tessera:admin. */
async function adminToken(id: string): Promise<{ access_token: string }> {
  const ops = await issuer.addClient({ id, scopes: ['tessera:admin'], audiences: [issuer.url] });
  return (await (
    await issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(ops.id, ops.secret) })
  ).json()) as { access_token: string };
}

/** The audit trail of request `id` is one `kind` event, denied for `reason`. */
async function assertDenied(id: string, kind: string, reason: string): Promise<void> {
  const trail = await issuer.store.queryAudit({ request_id: id, limit: 10 });
  assert.deepEqual(
    trail.map((e) => [e.kind, e.decision, e.reason]),
    [[kind, 'deny', reason]],
    id,
  );
}

describe('a client hanging up while it sends the body', () => {
  it('attack: half a body, then the connection closed (or cut by request_timeout), at the token endpoint and the admin API: not reported to onError as a server failure (serve logs each one at level error, so any client could flood the error log), admin.action records client_closed, not server_error', async () => {
    const { server, port, errors, closed } = await embedderServer();
    const c = await issuer.addClient({ id: 'hang-up-probe', scopes: ['api:read'] });
    const admin = await adminToken('hang-up-ops');
    const hangUp = (path: string, authorization: string, type: string, requestId: string) =>
      new Promise<void>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => {
          s.write(
            `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${authorization}\r\nContent-Type: ${type}\r\n` +
              `Content-Length: 100\r\nX-Request-Id: ${requestId}\r\n\r\n{"grant_`,
          );
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 100);
        });
        s.on('error', reject);
      });
    try {
      await hangUp('/oauth2/token', basic(c.id, c.secret), 'application/x-www-form-urlencoded', 'hang-up-token');
      await hangUp('/oauth2/revoke', basic(c.id, c.secret), 'application/x-www-form-urlencoded', 'hang-up-revoke');
      await hangUp('/oauth2/admin/revoke', `Bearer ${admin.access_token}`, 'application/json', 'hang-up-admin');
      assert.equal(closed.length, 3);
      await Promise.all(closed);
      assert.deepEqual(errors, []);
      await issuer.service.audit.flush();
      const events = await issuer.store.queryAudit({ request_id: 'hang-up-admin', limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.reason]),
        [['admin.action', 'client_closed']],
      );
      // One event per request at the form endpoints too: a client (or a scanner) that sends a
      // credential and hangs up before the body is whole is on record, not invisible.
      for (const [id, kind] of [
        ['hang-up-token', 'token.denied'],
        ['hang-up-revoke', 'revocation.denied'],
      ] as const) {
        await assertDenied(id, kind, 'client_closed');
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('a body the HTTP parser refuses', () => {
  it('attack: a chunk that is no chunk, under a server of the embedder’s own (Node answers 400 itself): audited request_body_invalid at the token endpoint and the admin API, not client_closed (the client did not hang up), and not reported to onError', async () => {
    const { server, port, errors, closed } = await embedderServer();
    const c = await issuer.addClient({ id: 'bad-chunk-probe', scopes: ['api:read'] });
    const admin = await adminToken('bad-chunk-ops');
    const badChunk = (path: string, authorization: string, type: string, requestId: string) =>
      new Promise<string>((resolve, reject) => {
        let got = '';
        const s = connect(port, '127.0.0.1', () => {
          s.write(
            `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${authorization}\r\nContent-Type: ${type}\r\n` +
              `Transfer-Encoding: chunked\r\nX-Request-Id: ${requestId}\r\n\r\n7\r\n{"grant\r\nzz\r\n`,
          );
        });
        s.on('data', (d) => {
          got += d;
        });
        s.on('close', () => resolve(got)).on('error', reject);
      });
    try {
      assert.match(
        await badChunk('/oauth2/token', basic(c.id, c.secret), 'application/x-www-form-urlencoded', 'bad-chunk-token'),
        /^HTTP\/1\.1 400 /,
      );
      assert.match(
        await badChunk('/oauth2/admin/revoke', `Bearer ${admin.access_token}`, 'application/json', 'bad-chunk-admin'),
        /^HTTP\/1\.1 400 /,
      );
      await Promise.all(closed);
      assert.deepEqual(errors, []);
      await issuer.service.audit.flush();
      for (const [id, kind] of [
        ['bad-chunk-token', 'token.denied'],
        ['bad-chunk-admin', 'admin.action'],
      ] as const) {
        await assertDenied(id, kind, 'request_body_invalid');
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('a body still arriving at the server’s request timeout', () => {
  it('attack: slow body: a head with Content-Length, then nothing, under a server of the embedder’s own (Node answers 408 itself): audited request_timeout, not client_closed (the client did not hang up), and not reported to onError', async () => {
    const { server, port, errors, closed } = await embedderServer({
      requestTimeout: 1000,
      headersTimeout: 1000,
      connectionsCheckingInterval: 200,
    });
    const c = await issuer.addClient({ id: 'slow-body-probe', scopes: ['api:read'] });
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        let got = '';
        const s = connect(port, '127.0.0.1', () => {
          s.write(
            `POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${basic(c.id, c.secret)}\r\n` +
              'Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nX-Request-Id: slow-body-token\r\n\r\ngrant_type=',
          );
        });
        s.on('data', (d) => {
          got += d;
        });
        s.on('close', () => resolve(got)).on('error', reject);
      });
      assert.match(answer, /^HTTP\/1\.1 408 /);
      await Promise.all(closed);
      assert.deepEqual(errors, []);
      await issuer.service.audit.flush();
      await assertDenied('slow-body-token', 'token.denied', 'request_timeout');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('browsers and CORS', () => {
  it('attack: a page on another origin cannot call the token endpoint: a preflight gets 405 and no Access-Control-Allow-* header, a simple POST carrying an Origin gets no Access-Control-Allow-Origin (none reflected, none with credentials)', async () => {
    const c = await issuer.addClient({ id: 'cors-probe', scopes: ['api:read'] });
    for (const path of ['/oauth2/token', '/oauth2/introspect', '/oauth2/revoke', '/oauth2/admin/revoke']) {
      const preflight = await fetch(`${issuer.url}${path}`, {
        method: 'OPTIONS',
        headers: {
          origin: 'https://evil.test',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization',
        },
      });
      assert.ok(preflight.status >= 400, `${path}: ${preflight.status}`);
      assert.deepEqual(
        [...preflight.headers.keys()].filter((h) => h.startsWith('access-control-')),
        [],
        path,
      );
    }
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: basic(c.id, c.secret), origin: 'https://evil.test', cookie: 'session=1' },
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), null);
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
  });
});

describe('Basic credentials and body framing (RFC 6749 §2.3.1, RFC 7617, RFC 9112 §7.1)', () => {
  it('the Basic scheme in any case (basic, BASIC) is read (RFC 9110 §11.1), and an id form-urlencoded before base64 (%63ors…) is decoded as §2.3.1 says', async () => {
    const c = await issuer.addClient({ id: 'basic-case-probe', scopes: ['api:read'] });
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    for (const authorization of [
      `basic ${b64(`${c.id}:${c.secret}`)}`,
      `BASIC ${b64(`${c.id}:${c.secret}`)}`,
      `Basic ${b64(`%62asic-case-probe:${c.secret}`)}`,
    ]) {
      const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization });
      assert.equal(res.status, 200, authorization.split(' ')[0]);
    }
  });

  it('a chunked body (Transfer-Encoding: chunked, no Content-Length) is read whole; one past the limit is 413, not read on', async () => {
    const c = await issuer.addClient({ id: 'chunked-probe', scopes: ['api:read'] });
    const chunked = (parts: string[]) =>
      fetch(`${issuer.url}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic(c.id, c.secret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new ReadableStream({
          start(ctl) {
            for (const p of parts) ctl.enqueue(new TextEncoder().encode(p));
            ctl.close();
          },
        }),
        duplex: 'half',
      } as RequestInit);
    assert.equal((await chunked(['grant_type=client_', 'credentials&scope=api%3A', 'read'])).status, 200);
    const big = await chunked(['grant_type=client_credentials&x=', 'a'.repeat(40_000), 'a'.repeat(40_000)]);
    assert.equal(big.status, 413);
    assert.equal(big.headers.get('cache-control'), 'no-store');
  });
});
