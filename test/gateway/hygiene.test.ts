/**
 * Attacks on the proxy path, one per test: spoofed identity and forwarding headers, credentials
 * that must not reach the upstream, query tokens, traversal, oversized input.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { rawHttp } from '../helpers/net.ts';
import {
  AUDIENCE,
  baseConfig,
  ISSUER,
  key,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

const status = (response: string) => Number(response.split(' ')[1]);

describe('gateway hygiene', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let t: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE, 'https://other.test'], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
      gateway: {
        strip_cookies: ['gw_session'],
        limits: { max_body_size: '1kb', max_header_size: 4096 },
        routes: [
          {
            id: 'api',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [
              { id: 'admin', path: '/api/admin/**', scopes: ['admin'] },
              { id: 'any', path: '/api/**', scopes: ['api:read'] },
            ],
            identity_headers: ['subject', 'scopes'],
          },
          { id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' },
        ],
      },
    });
    t = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${t}`, ...headers } });

  it('strips spoofed identity headers', async () => {
    const res = await get('/api/x', { 'x-tessera-subject': 'admin', 'x-tessera-scopes': 'admin', 'x-tessera-delegation-id': 'g-evil' });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-tessera-subject'], 'user-1');
    assert.equal(h['x-tessera-scopes'], 'api:read');
    assert.equal(h['x-tessera-delegation-id'], undefined, 'not configured on this route, still stripped');
  });

  it('hop-by-hop abuse: headers named in Connection cannot remove what the gateway sets (identity, X-Forwarded-For, request id, trace context)', async () => {
    const r = await rawHttp(
      gw.url,
      `GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\n` +
        'Connection: close, authorization, x-tessera-subject, x-tessera-scopes, x-forwarded-for, forwarded, x-request-id, traceparent\r\n\r\n',
    );
    assert.equal(status(r), 200, r);
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-tessera-subject'], 'user-1');
    assert.equal(h['x-tessera-scopes'], 'api:read');
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.match(h.forwarded ?? '', /^for=127\.0\.0\.1;/);
    assert.match(String(h['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.match(String(h.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    assert.equal(h.connection, 'keep-alive');
  });

  for (const [name, head] of [
    ['Transfer-Encoding with Content-Length', 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two Content-Length', 'Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde'],
    ['Content-Length as a list', 'Content-Length: 4, 4\r\n\r\nabcd'],
    ['chunked not last (chunked, identity)', 'Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'],
    ['Transfer-Encoding without chunked', 'Transfer-Encoding: identity\r\n\r\nabcd'],
    ['space before the colon', 'Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n'],
    ['obs-fold', 'X-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n'],
  ] as const) {
    it(`request smuggling: ${name} is refused (400) and nothing reaches the upstream`, async () => {
      const n = upstream.seen.length;
      const r = await rawHttp(gw.url, `POST /public/x HTTP/1.1\r\nHost: a\r\n${head}`);
      assert.equal(status(r), 400, r);
      assert.equal(upstream.seen.length, n);
    });
  }

  it('request smuggling: bare LF line endings are refused (400)', async () => {
    const n = upstream.seen.length;
    const r = await rawHttp(gw.url, 'GET /public/x HTTP/1.1\nHost: a\nConnection: close\n\n');
    assert.equal(status(r), 400, r);
    assert.equal(upstream.seen.length, n);
  });

  it('a refusal on a route without a verifier carries no empty WWW-Authenticate (there is no challenge to send)', async () => {
    const r = await rawHttp(gw.url, 'GET /public/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
    assert.equal(status(r), 400, r);
    assert.doesNotMatch(r, /www-authenticate/i);
  });

  it('absolute-form target: GET http://evil.test/... is refused (400), never routed by its path', async () => {
    const n = upstream.seen.length;
    const r = await rawHttp(gw.url, 'GET http://evil.test/public/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.equal(status(r), 400, r);
    assert.equal(upstream.seen.length, n);
  });

  it('replaces spoofed X-Forwarded-* and Forwarded (no trusted proxy)', async () => {
    await get('/api/x', {
      'x-forwarded-for': '6.6.6.6',
      'x-forwarded-host': 'evil.test',
      forwarded: 'for=6.6.6.6',
      'x-real-ip': '6.6.6.6',
    });
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-host'], new URL(gw.url).host);
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.match(String(h.forwarded), /^for=127\.0\.0\.1;host="127\.0\.0\.1:\d+";proto=http$/);
    assert.equal(h['x-real-ip'], undefined);
  });

  it('attack: client-IP spoofing: the caller’s own X-Client-IP, True-Client-IP, CF-Connecting-IP, Fastly-Client-IP, X-Cluster-Client-IP and the like never reach the upstream (frameworks read them as the client address before X-Forwarded-For)', async () => {
    const spoofed = [
      'x-client-ip',
      'true-client-ip',
      'cf-connecting-ip',
      'cf-connecting-ipv6',
      'cf-pseudo-ipv4',
      'fastly-client-ip',
      'x-cluster-client-ip',
      'x-appengine-user-ip',
      'client-ip',
      'x-forwarded',
      'forwarded-for',
      'x-original-forwarded-for',
      'x-envoy-external-address',
    ];
    const res = await get('/api/x', {
      ...Object.fromEntries(spoofed.map((n) => [n, '6.6.6.6'])),
      x_client_ip: '6.6.6.6',
      True_Client_IP: '6.6.6.6',
    });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    for (const name of [...spoofed, 'x_client_ip', 'true_client_ip']) assert.equal(h[name], undefined, name);
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
  });

  it('forwarding spoofing: no X-Forwarded-* of the caller’s own (Ssl, Scheme, Uri, Method, Server) reaches the upstream', async () => {
    const res = await get('/api/x', {
      'x-forwarded-ssl': 'on',
      'x-forwarded-scheme': 'https',
      'x-forwarded-uri': '/api/admin/secrets',
      'x-forwarded-method': 'DELETE',
      'x-forwarded-server': 'internal',
    });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    for (const name of ['x-forwarded-ssl', 'x-forwarded-scheme', 'x-forwarded-uri', 'x-forwarded-method', 'x-forwarded-server'])
      assert.equal(h[name], undefined, name);
    assert.equal(h['x-forwarded-proto'], 'http');
  });

  it('path override: X-Original-URL and X-Rewrite-URL never reach the upstream (frameworks that honour them would serve another path than the one decided)', async () => {
    const res = await get('/api/x', { 'x-original-url': '/api/admin/secrets', 'x-rewrite-url': '/api/admin/secrets' });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h['x-original-url'], undefined);
    assert.equal(h['x-rewrite-url'], undefined);
  });

  // The headers a proxy in front of an upstream uses to describe the original request (nginx
  // auth_request, Traefik, Spring's ForwardedHeaderFilter, PHP apps reading X-Original-URI): an
  // upstream trusting the caller's copy would act on another request than the one authorized.
  for (const [attack, name, value] of [
    ['path confusion: a caller’s X-Original-URI (nginx auth_request setups, PHP apps)', 'X-Original-URI', '/api/admin/secrets'],
    ['method confusion: a caller’s X-Original-Method (nginx auth_request setups)', 'X-Original-Method', 'DELETE'],
    ['host confusion: a caller’s X-Original-Host (nginx auth_request setups)', 'X-Original-Host', 'admin.internal'],
    ['scheme spoofing: a caller’s X-Original-Proto (nginx auth_request setups)', 'X-Original-Proto', 'https'],
    ['path confusion: a caller’s X-Forwarded-Uri (Traefik forward-auth)', 'X-Forwarded-Uri', '/api/admin/secrets'],
    ['method confusion: a caller’s X-Forwarded-Method (Traefik forward-auth)', 'X-Forwarded-Method', 'DELETE'],
    ['prefix confusion: a caller’s X-Forwarded-Prefix (Spring ForwardedHeaderFilter)', 'X-Forwarded-Prefix', '/api/admin'],
  ] as const) {
    it(`${attack} never reaches the upstream, also spelled with _`, async () => {
      const res = await get('/api/x', { [name]: value, [name.replaceAll('-', '_')]: value, 'x-keep': 'yes' });
      assert.equal(res.status, 200);
      const seen = upstream.seen.at(-1)!;
      assert.equal(seen.method, 'GET');
      assert.equal(seen.url, '/api/x');
      for (let i = 0; i < seen.rawHeaders.length; i += 2) {
        const n = seen.rawHeaders[i]!.toLowerCase().replaceAll('_', '-');
        assert.notEqual(n, name.toLowerCase(), `${seen.rawHeaders[i]} reached the upstream`);
      }
      assert.equal(seen.headers['x-keep'], 'yes', 'other headers pass');
      assert.equal(seen.headers['x-forwarded-proto'], 'http', 'the gateway’s own forwarding headers stay');
      assert.equal(seen.headers['x-forwarded-host'], new URL(gw.url).host);
      assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    });
  }

  it('httpoxy: a Proxy header never reaches the upstream (CGI exposes it as HTTP_PROXY, the outbound proxy of its HTTP clients)', async () => {
    const res = await get('/api/x', { proxy: 'http://attacker.example:8080', 'x-keep': 'yes' });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h.proxy, undefined);
    assert.equal(h['x-keep'], 'yes', 'other headers pass');
  });

  it('never forwards the caller’s Authorization, DPoP or configured cookies', async () => {
    await get('/api/x', { dpop: 'proof', cookie: 'gw_session=s3cret; theme=dark' });
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h.authorization, undefined);
    assert.equal(h.dpop, undefined);
    assert.equal(h.cookie, 'theme=dark');
  });

  it('session replay: the token service’s login cookies (same listener, Path=/) never reach an upstream, even on a public route', async () => {
    // A person who signed in at /oauth2/authorize and then follows a link to a gateway route sends
    // these cookies along; an upstream holding the session cookie could approve grants as them.
    const cookie =
      '__Host-tessera-session=sess.mac; __Host-tessera-login=state.mac; tessera-session=s2.mac; tessera-login=l2.mac; theme=dark';
    for (const path of ['/public/x', '/api/x']) {
      const res = await get(path, { cookie });
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)!.headers.cookie, 'theme=dark', path);
    }
  });

  it('method override: X-HTTP-Method-Override, X-HTTP-Method and X-Method-Override never reach the upstream', async () => {
    // A GET allowed with api:read must not be run by the upstream as the DELETE it names.
    const res = await get('/api/items/1', {
      'x-http-method-override': 'DELETE',
      'x-http-method': 'DELETE',
      'x-method-override': 'DELETE',
    });
    assert.equal(res.status, 200);
    const seen = upstream.seen.at(-1)!;
    assert.equal(seen.method, 'GET');
    assert.equal(seen.headers['x-http-method-override'], undefined);
    assert.equal(seen.headers['x-http-method'], undefined);
    assert.equal(seen.headers['x-method-override'], undefined);
    const pub = await fetch(`${gw.url}/public/x`, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'PUT' }, body: 'x' });
    assert.equal(pub.status, 200);
    assert.equal(upstream.seen.at(-1)!.headers['x-http-method-override'], undefined);
  });

  it('method override: a _method query parameter (Symfony, Laravel) never reaches the upstream', async () => {
    const pub = await fetch(`${gw.url}/public/x?_method=DELETE&a=1&_method%5B%5D=PUT`, { method: 'POST', body: 'x' });
    assert.equal(pub.status, 200);
    const seen = upstream.seen.at(-1)!;
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/public/x?a=1');
  });

  it('strips access_token from the query on a public route', async () => {
    const res = await fetch(`${gw.url}/public/x?a=1&access_token=leaked&access%5Ftoken=leaked2`);
    assert.equal(res.status, 200);
    assert.equal(upstream.seen.at(-1)!.url, '/public/x?a=1');
  });

  it('refuses a query token on an authenticated route (400, never forwarded)', async () => {
    const n = upstream.seen.length;
    const res = await fetch(`${gw.url}/api/x?access_token=${t}`);
    assert.equal(res.status, 400);
    assert.match(res.headers.get('www-authenticate') ?? '', /invalid_request/);
    assert.equal(upstream.seen.length, n);
    const events = await requestEvents(gw);
    assert.equal(events.at(-1)!.reason, 'request_query_token_disabled');
    assert.ok(!JSON.stringify(events).includes(t));
  });

  it('refuses two Authorization headers', async () => {
    const r = await rawHttp(
      gw.url,
      `GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nAuthorization: Bearer other\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(status(r), 400);
  });

  it('refuses a token without the Bearer scheme as missing credentials', async () => {
    const res = await fetch(`${gw.url}/api/x`, { headers: { authorization: t } });
    assert.equal(res.status, 401);
  });

  it('refuses a token whose audience is another API on this route', async () => {
    const other = await token({ aud: 'https://other.test' });
    const res = await fetch(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${other}` } });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /invalid_token/);
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'token_audience_invalid');
  });

  for (const [name, target] of [
    ['dot-dot', '/api/x/../admin/secrets'],
    ['encoded dot-dot', '/api/x/%2e%2e/admin/secrets'],
    ['encoded slash', '/api/x%2f..%2fadmin/secrets'],
    ['backslash', '/api/x\\..\\admin'],
    ['semicolon', '/api/admin;x/secrets'],
    ['double slash', '/api//admin/secrets'],
  ] as const) {
    it(`refuses traversal: ${name}`, async () => {
      const n = upstream.seen.length;
      const r = await rawHttp(gw.url, `GET ${target} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`);
      assert.equal(status(r), 400, r);
      assert.equal(upstream.seen.length, n);
    });
  }

  // Lenient UTF-8 decoders (old IIS, Tomcat, some Java and PHP stacks) read an overlong `%c0%ae` as
  // `.` and `%c0%af` as `/`: through the public route (no rules, no token) to /api/admin/secrets.
  for (const [name, target] of [
    ['overlong UTF-8 dot-dot (%c0%ae)', '/public/%c0%ae%c0%ae/api/admin/secrets'],
    ['overlong UTF-8 slash (%c0%af)', '/public%c0%af..%c0%afapi/admin/secrets'],
  ] as const) {
    it(`refuses traversal out of a public route: ${name}`, async () => {
      const n = upstream.seen.length;
      const r = await rawHttp(gw.url, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
      assert.equal(status(r), 400, r);
      assert.equal(upstream.seen.length, n);
    });
  }

  // `/api/admin%0A/x` matches no admin rule, but an upstream that drops or trims control
  // characters (or splits a log or header line at them) acts on `/api/admin/x`.
  for (const control of ['%00', '%01', '%09', '%0A', '%0a', '%0D', '%1F', '%7F', '%250A']) {
    it(`control-character smuggling: /api/admin${control}/x is refused (400 request_path_invalid) and never forwarded`, async () => {
      const n = upstream.seen.length;
      const r = await rawHttp(
        gw.url,
        `GET /api/admin${control}/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(status(r), 400, r);
      assert.match(r, /invalid_request/);
      assert.equal(upstream.seen.length, n);
      assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_path_invalid');
    });
  }

  // Upstreams that trim segments (Windows and IIS drop a trailing space, many frameworks trim
  // whitespace) read `admin%20` as `admin`, past the admin rule.
  for (const [name, target] of [
    ['trailing space', '/api/admin%20/x'],
    ['trailing space, last segment', '/api/admin%20'],
    ['leading space', '/api/%20admin/x'],
    ['trailing no-break space (U+00A0)', '/api/admin%C2%A0/x'],
    ['trailing ideographic space (U+3000)', '/api/admin%E3%80%80/x'],
    ['leading byte order mark (U+FEFF)', '/api/%EF%BB%BFadmin/x'],
  ] as const) {
    it(`whitespace-trimming smuggling: ${name} (${target}) is refused (400 request_path_invalid) and never forwarded`, async () => {
      const n = upstream.seen.length;
      const r = await rawHttp(gw.url, `GET ${target} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`);
      assert.equal(status(r), 400, r);
      assert.equal(upstream.seen.length, n);
      assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_path_invalid');
    });
  }

  it('a space inside a segment and a trailing dot are forwarded as they came (names like `a b` and `Washington,_D.C.`)', async () => {
    for (const path of ['/api/a%20b/x', '/api/Washington,_D.C./x']) {
      const res = await get(path);
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)!.url, path);
    }
  });

  it('decodes %61dmin before matching, so the admin rule applies', async () => {
    const res = await get('/api/%61dmin/x');
    assert.equal(res.status, 403);
  });

  it('refuses an oversized header block (431)', async () => {
    const r = await rawHttp(gw.url, `GET /api/x HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`);
    assert.equal(status(r), 431);
  });

  it('refuses a body over the limit by Content-Length (413) before authentication', async () => {
    const n = upstream.seen.length;
    const res = await fetch(`${gw.url}/api/x`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: 'x'.repeat(2000) });
    assert.equal(res.status, 413);
    assert.equal(upstream.seen.length, n);
  });

  it('cuts a chunked body at the limit (413)', async () => {
    const status413 = await new Promise<number>((resolve, reject) => {
      const u = new URL(gw.url);
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          method: 'POST',
          path: '/api/x',
          headers: { authorization: `Bearer ${t}`, 'transfer-encoding': 'chunked' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      let i = 0;
      const timer = setInterval(() => {
        if (i++ > 20 || req.destroyed) {
          clearInterval(timer);
          req.end();
          return;
        }
        req.write('y'.repeat(200));
      }, 5);
    });
    assert.equal(status413, 413);
  });

  it('audits each refused request once, with its reason', async () => {
    await requestEvents(gw);
    const before = gw.audit.events.length;
    await rawHttp(gw.url, `GET /api/%2e%2e/x?access_token=zzz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
    const events = (await requestEvents(gw)).slice(-1);
    assert.equal(gw.audit.events.length, before + 1);
    assert.equal(events[0]!.reason, 'request_path_invalid');
    assert.equal(events[0]!.path, '/api/%2e%2e/x');
  });
});

describe('gateway hygiene next to a token service behind an SSO proxy', () => {
  it('proxy secret replay: the trusted_header shared secret the SSO proxy adds never reaches an upstream', async () => {
    // The proxy adds it to whatever it forwards to the listener, gateway routes included; an
    // upstream on a trusted peer (loopback by default) holding it could sign in as anyone.
    const upstream = await startUpstream();
    const secret = 'proxy-secret-0123456789abcdef0123456789';
    const gw = await startGateway({
      ...baseConfig(),
      token_service: {
        authorization: { enabled: true, trusted_header: { secret, secret_header: 'X-SSO-Secret' } },
      },
      gateway: { routes: [{ id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' }] },
    } as never);
    try {
      const res = await fetch(`${gw.url}/public/x`, { headers: { 'x-sso-secret': secret, 'x-keep': 'yes' } });
      assert.equal(res.status, 200);
      const h = upstream.seen.at(-1)!.headers;
      assert.equal(h['x-sso-secret'], undefined);
      assert.equal(h['x-keep'], 'yes');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });

  it('login CSRF: an upstream cannot plant (or clear) the token service’s login cookies in the browser (same origin, Path=/)', async () => {
    // An attacker signs in as themselves and copies their own session (or login state) cookie; an
    // upstream on this origin that sets it in a victim's browser would have the victim approve
    // grants as the attacker, or finish the attacker's login at the callback.
    const planted = [
      '__Host-tessera-session=attacker.mac; Path=/; Secure; HttpOnly; SameSite=Lax',
      '__Host-tessera-login=attacker-state.mac; Path=/; Secure; HttpOnly',
      'tessera-session=attacker.mac; Path=/oauth2',
      ' tessera-login =attacker-state.mac',
      '__HOST-tessera-session=attacker.mac; Path=/; Secure',
      '=__Host-tessera-session=attacker.mac; Path=/; Secure',
      'theme=dark; Path=/',
    ];
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'set-cookie': planted, 'content-length': 2 });
      res.end('ok');
    });
    const gw = await startGateway({
      ...baseConfig(),
      gateway: { routes: [{ id: 'public', match: { path_prefix: '/public' }, upstream: { url: upstream.url }, auth: 'none' }] },
    });
    try {
      const res = await fetch(`${gw.url}/public/x`);
      assert.equal(res.status, 200);
      assert.deepEqual(res.headers.getSetCookie(), ['theme=dark; Path=/']);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
