import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { rawHttp, until } from '../helpers/net.ts';
import { ISSUER } from '../helpers/tokens.ts';
import {
  AUDIENCE,
  baseConfig,
  requestEvents,
  STATIC_TOKEN,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
  type Upstream,
} from './helpers.ts';

describe('gateway: plain HTTP proxying', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: {
          routes: [
            {
              id: 'api',
              match: { path_prefix: '/api' },
              upstream: { url: `${upstream.url}/base`, strip_prefix: '/api', credential: { type: 'static', token: '${GATEWAY_TOKEN}' } },
              auth: 'jwt',
              audience: AUDIENCE,
              rules: [
                { id: 'read', methods: ['GET'], path: '/api/items/**', scopes: ['api:read'] },
                { id: 'write', methods: ['POST'], path: '/api/items', scopes: ['api:write'] },
              ],
              identity_headers: ['subject', 'client', 'actors', 'scopes'],
            },
            { id: 'ci', match: { path_prefix: '/ci' }, upstream: { url: upstream.url }, auth: 'static', rules: [{}] },
            { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' },
          ],
        },
      },
      {},
      { GATEWAY_TOKEN: UPSTREAM_TOKEN },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('forwards an allowed request with the upstream credential and identity headers', async () => {
    const t = await token({ scope: 'api:read', act: { sub: 'agent-b' } });
    const res = await fetch(`${gw.url}/api/items/1?x=1`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true, method: 'GET', url: '/base/items/1?x=1' });
    const seen = upstream.seen.at(-1)!;
    assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(seen.headers['x-tessera-subject'], 'user-1');
    assert.equal(seen.headers['x-tessera-client-id'], 'agent-1');
    assert.equal(seen.headers['x-tessera-actor-chain'], 'agent-b');
    assert.equal(seen.headers['x-tessera-scopes'], 'api:read');
    assert.ok(res.headers.get('x-request-id'));
    assert.equal(seen.headers['x-request-id'], res.headers.get('x-request-id'));
    assert.match(String(seen.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  it('shows an actor of another issuer with that issuer, upstream and in the audit trail (an IdP’s “agent-a” is not the client agent-a)', async () => {
    const idp = 'https://idp.test';
    const t = await token({
      scope: 'api:read',
      act: { sub: 'agent-b', act: { sub: 'agent-a', iss: idp, act: { sub: 'x2', iss: ISSUER } } },
    });
    const res = await fetch(`${gw.url}/api/items/1`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 200);
    // RFC 8693 §4.1: an act without iss (or with the token's own) is in the token issuer's namespace.
    assert.equal(upstream.seen.at(-1)!.headers['x-tessera-actor-chain'], `agent-b, agent-a (${idp}), x2`);
    assert.deepEqual((await requestEvents(gw)).at(-1)!.actor_chain, ['agent-b', `agent-a (${idp})`, 'x2']);
  });

  it('actor spoofing: an act.sub written like an issuer-qualified actor (`agent-b (https://idp.example)`) is one label upstream and in the audit trail, its parentheses encoded', async () => {
    const idp = 'https://idp.test';
    const t = await token({
      scope: 'api:read',
      act: { sub: 'agent-b (https://idp.example)', act: { sub: 'a), (b', iss: idp, act: { sub: 'x (y', iss: 'https://i (1)' } } },
    });
    const res = await fetch(`${gw.url}/api/items/1`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 200);
    assert.equal(
      upstream.seen.at(-1)!.headers['x-tessera-actor-chain'],
      `agent-b%20%28https://idp.example%29, a%29%2C%20%28b (${idp}), x%20%28y (https://i%20%281%29)`,
    );
    // The audit trail's labels too: parentheses (and %) in a subject or issuer are encoded, spaces kept.
    assert.deepEqual((await requestEvents(gw)).at(-1)!.actor_chain, [
      'agent-b %28https://idp.example%29',
      `a%29, %28b (${idp})`,
      'x %28y (https://i %281%29)',
    ]);
  });

  it('streams a POST body upstream', async () => {
    const t = await token({ scope: 'api:write' });
    const res = await fetch(`${gw.url}/api/items`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
      body: '{"a":1}',
    });
    assert.equal(res.status, 200);
    assert.equal(upstream.seen.at(-1)!.body, '{"a":1}');
  });

  it('answers 401 with a bare Bearer challenge without a token', async () => {
    const res = await fetch(`${gw.url}/api/items/1`);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.doesNotMatch(res.headers.get('www-authenticate') ?? '', /error=/);
  });

  it('answers 403 insufficient_scope with scope= when the rule needs more', async () => {
    const t = await token({ scope: 'api:read' });
    const res = await fetch(`${gw.url}/api/items`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
    assert.equal(res.status, 403);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="insufficient_scope".*scope="api:write"/);
  });

  it('refuses a token for another audience on a route that requires its own', async () => {
    const t = await token({ aud: [AUDIENCE, 'https://other.test'] });
    const ok = await fetch(`${gw.url}/api/items/1`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(ok.status, 200);
  });

  it('accepts a static token on a static route and refuses a JWT there', async () => {
    const ok = await fetch(`${gw.url}/ci/x`, { headers: { authorization: `Bearer ${STATIC_TOKEN}` } });
    assert.equal(ok.status, 200);
    const t = await token();
    const no = await fetch(`${gw.url}/ci/x`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(no.status, 401);
    assert.match(no.headers.get('www-authenticate') ?? '', /invalid_token/);
  });

  it("attack: an issuer's token whose sub is empty (or an actor's) is refused 401 token_claim_invalid, never forwarded with an empty x-tessera-subject", async () => {
    const seen = upstream.seen.length;
    for (const claims of [{ sub: '' }, { act: { sub: '' } }]) {
      const t = await token({ scope: 'api:read', ...claims });
      const res = await fetch(`${gw.url}/api/items/1`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.decision, 'deny');
      assert.equal(e.reason, 'token_claim_invalid');
    }
    assert.equal(upstream.seen.length, seen);
  });

  it('identity header injection: a claim holding a lone surrogate (no UTF-8 form, so no header value) is refused 401 token_claim_invalid, not a 500, and never forwarded', async () => {
    const seen = upstream.seen.length;
    for (const claims of [
      { sub: 'user-\ud800' },
      { client_id: '\udc00agent' },
      { act: { sub: 'agent-\ud83d' } },
      { scope: 'api:read \ud800' },
    ]) {
      const t = await token({ scope: 'api:read', ...claims });
      const res = await fetch(`${gw.url}/api/items/1`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 401, JSON.stringify(claims));
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.decision, 'deny');
      assert.equal(e.reason, 'token_claim_invalid');
    }
    assert.equal(upstream.seen.length, seen);
  });

  it('serves a public route without credentials', async () => {
    const res = await fetch(`${gw.url}/public/hello`);
    assert.equal(res.status, 200);
  });

  it('denies unmatched requests with 404', async () => {
    const res = await fetch(`${gw.url}/nowhere`);
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { error: 'not_found', error_description: 'No route matches this request.' });
  });

  it('writes one audit event per request, without any token', async () => {
    const before = (await requestEvents(gw)).length;
    const t = await token({ scope: 'api:read', grant_id: 'g-7', jti: 'jti-7' });
    const res = await fetch(`${gw.url}/api/items/9?secret=value`, { headers: { authorization: `Bearer ${t}` } });
    await res.arrayBuffer();
    const events = await requestEvents(gw);
    assert.equal(events.length, before + 1);
    const e = events.at(-1)!;
    assert.equal(e.decision, 'allow');
    assert.equal(e.reason, 'ok');
    assert.equal(e.route, 'api');
    assert.equal(e.method, 'GET');
    assert.equal(e.path, '/api/items/9?secret=');
    assert.equal(e.subject, 'user-1');
    assert.equal(e.client_id, 'agent-1');
    assert.equal(e.delegation_id, 'g-7');
    assert.equal(e.jti, 'jti-7');
    assert.deepEqual(e.scopes_required, ['api:read']);
    assert.deepEqual(e.scopes_granted, ['api:read']);
    assert.equal(e.upstream_status, 200);
    assert.equal(e.request_id, res.headers.get('x-request-id'));
    assert.ok(typeof e.latency_ms === 'number');
    const text = JSON.stringify(events);
    assert.ok(!text.includes(t));
    assert.ok(!text.includes(UPSTREAM_TOKEN));
    assert.ok(!text.includes('value'));
  });

  it('attack: a static token the operator chose (no tgw_ prefix) sent in the path or a query key is not recorded, presented or not', async () => {
    const before = (await requestEvents(gw)).length;
    const opaque = 'opaque-credential-0123456789';
    const sent: [string, Record<string, string>][] = [
      [`/ci/hook/${STATIC_TOKEN}`, { authorization: `Bearer ${STATIC_TOKEN}` }],
      [`/ci/hook/${STATIC_TOKEN}`, {}],
      [`/public/${UPSTREAM_TOKEN}/x`, {}],
      [`/public/x/${opaque}?${opaque}=1&page=2`, { authorization: `Bearer ${opaque}` }],
      [`/public/x/%6Fpaque-credential-0123456789`, { authorization: `DPoP ${opaque}` }],
      [`/public/x/k3y?k3y`, { authorization: 'Bearer k3y' }],
      [`/nowhere/${opaque}/a%5Cb`, { authorization: `Bearer ${opaque}` }], // refused: the raw path is recorded
    ];
    for (const [path, headers] of sent) await (await fetch(`${gw.url}${path}`, { headers })).arrayBuffer();
    const events = (await requestEvents(gw)).slice(before);
    assert.deepEqual(
      events.map((e) => e.path),
      ['/ci/hook/*', '/ci/hook/*', '/public/*/x', '/public/x/*?*=&page=', '/public/x/*', '/public/x/*?*=', '/nowhere/*/a%5Cb'],
    );
    const text = JSON.stringify(events);
    for (const secret of [STATIC_TOKEN, UPSTREAM_TOKEN, opaque]) assert.ok(!text.includes(secret));
  });

  it('attack: the presented or a configured static token sent as X-Request-Id (a safe shape, no prefix) is not recorded or propagated', async () => {
    const before = (await requestEvents(gw)).length;
    for (const [id, headers] of [
      [STATIC_TOKEN, { authorization: `Bearer ${STATIC_TOKEN}` }],
      [UPSTREAM_TOKEN, {}],
    ] as const) {
      const res = await fetch(`${gw.url}/ci/x`, { headers: { ...headers, 'x-request-id': id } });
      await res.arrayBuffer();
      assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, id);
    }
    const text = JSON.stringify((await requestEvents(gw)).slice(before));
    for (const secret of [STATIC_TOKEN, UPSTREAM_TOKEN]) assert.ok(!text.includes(secret));
  });

  it('attack: a token sent as X-Request-Id reaches neither the audit trail, the upstream nor the response: a new id replaces it', async () => {
    const secret = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ';
    const t = await token({ scope: 'api:read' });
    const before = (await requestEvents(gw)).length;
    const seen = upstream.seen.length;
    const res = await fetch(`${gw.url}/api/items/1`, { headers: { authorization: `Bearer ${t}`, 'x-request-id': secret } });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    const id = res.headers.get('x-request-id') ?? '';
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(upstream.seen[seen]?.headers['x-request-id'], id);
    const events = (await requestEvents(gw)).slice(before);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.request_id, id);
    assert.ok(!JSON.stringify(events).includes(secret));
  });
});

describe('gateway: TRACE', () => {
  it('credential leak: TRACE is never routed, so an upstream that echoes it cannot hand the injected credential to the caller', async () => {
    const upstream = await startUpstream((req, res) => {
      // Apache's default (TraceEnable On): the request head as received comes back as the body.
      let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) text += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      res.writeHead(200, { 'content-type': 'message/http', 'content-length': Buffer.byteLength(text) }).end(text);
    });
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          { id: 'any', upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN } }, auth: 'jwt', rules: [{}] },
        ],
      },
    });
    try {
      const t = await token();
      const r = await rawHttp(gw.url, `TRACE /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 404/, r);
      assert.ok(!r.includes(UPSTREAM_TOKEN));
      assert.equal(upstream.seen.length, 0);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'route_not_found');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: bytes_in of an upload', () => {
  it('aborted upload: a caller declaring Content-Length 500 that sends 3 bytes and leaves is audited with bytes_in 3, not the 500 it declared', async () => {
    let received = 0;
    const upstream = createServer((req, res) => {
      req.on('data', (c: Buffer) => {
        received += c.length;
      });
      req.on('end', () => res.writeHead(200, { 'content-length': '2' }).end('ok'));
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          { id: 'up', upstream: { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }, auth: 'static', rules: [{}] },
        ],
      },
    });
    try {
      // A whole upload counts every byte it sent.
      const whole = await fetch(`${gw.url}/whole`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${STATIC_TOKEN}` },
        body: 'x'.repeat(500),
      });
      assert.equal(await whole.text(), 'ok');
      await until(async () => (await requestEvents(gw)).some((e) => e.path === '/whole'));
      assert.equal((await requestEvents(gw)).find((e) => e.path === '/whole')?.bytes_in, 500);

      const { port } = new URL(gw.url);
      const socket = connect(Number(port), '127.0.0.1');
      await once(socket, 'connect');
      socket.write(`PUT /aborted HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${STATIC_TOKEN}\r\nContent-Length: 500\r\n\r\nabc`);
      await until(() => received >= 503);
      socket.destroy();
      await until(async () => (await requestEvents(gw)).some((e) => e.path === '/aborted'));
      const e = (await requestEvents(gw)).find((x) => x.path === '/aborted');
      assert.equal(e?.reason, 'client_closed');
      assert.equal(e?.bytes_in, 3);
    } finally {
      await gw.close();
      upstream.closeAllConnections();
      await new Promise((r) => upstream.close(r));
    }
  });
});
