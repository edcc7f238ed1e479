/**
 * Case-folding attacks on `case_insensitive_paths`: characters outside ASCII that another
 * implementation's case mapping makes ASCII letters (`ı` → `I`, `ſ` → `S`, `İ` → `i`, Kelvin `K` →
 * `k`, `ﬁ` → `FI`). An upstream that ignores case (.NET OrdinalIgnoreCase, Java equalsIgnoreCase,
 * Python casefold) reads `/ci/admın/users` as `/ci/admin/users`, which `toLowerCase` does not: the
 * gateway refuses such a path (400 request_path_invalid) instead of letting a later, laxer rule or
 * route take it. So are characters NFKC makes ASCII (fullwidth `ａ` and `／`, `ĳ`, `𝐚`, `²`) and
 * ones NFKC_Casefold drops from ASCII (soft hyphen, zero-width space), for an upstream normalizing
 * Unicode (Python `unicodedata.normalize`, Java `Normalizer`, IDNA-like handling) reads
 * `/ci/ａdmin` as `/ci/admin`. Other characters outside ASCII pass as before, and case-sensitive
 * routes are unchanged. Double-encoded (`/ci/%25EF%25BD%2581dmin`, `ａdmin` after a second decode),
 * such characters are refused on every route, as double-encoded ASCII is.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { asciiFoldedPath } from '../../src/gateway/routes.ts';
import { caseMappings } from '../helpers/case-mappings.ts';
import {
  AUDIENCE,
  baseConfig,
  parse,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
  upgradeStatus,
} from './helpers.ts';

const FA_SECRET = 'forward-auth-secret-0123456789';

describe('gateway: case_insensitive_paths and characters a case mapping makes ASCII', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let reader: string;
  before(async () => {
    upstream = await startUpstream();
    const route = { auth: 'jwt', audience: AUDIENCE } as const;
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: [
          {
            ...route,
            id: 'sensitive',
            match: { path_prefix: '/cs' },
            upstream: { url: upstream.url },
            rules: [
              { id: 'cs-admin', path: '/cs/admin/**', scopes: ['admin'] },
              { id: 'cs-strasse', path: '/cs/straße/**', scopes: ['admin'] },
              { id: 'cs-read', path: '/cs/**', scopes: ['api:read'] },
            ],
          },
          {
            ...route,
            id: 'internal',
            match: { path_prefix: '/internal' },
            upstream: { url: upstream.url },
            case_insensitive_paths: true,
            rules: [{ id: 'internal-admin', scopes: ['admin'] }],
          },
          {
            ...route,
            id: 'folded',
            match: { path_prefix: '/ci' },
            upstream: { url: upstream.url },
            case_insensitive_paths: true,
            websocket: true,
            rules: [
              { id: 'admin', path: '/ci/admin/**', scopes: ['admin'] },
              { id: 'secret', path: '/ci/secret/**', scopes: ['admin'] },
              { id: 'kelvin', path: '/ci/kelvin/**', scopes: ['admin'] },
              { id: 'files', path: '/ci/files/**', scopes: ['admin'] },
              { id: 'fiji', path: '/ci/fiji/**', scopes: ['admin'] },
              { id: 'v2', path: '/ci/v2/**', scopes: ['admin'] },
              { id: 'read', path: '/ci/**', scopes: ['api:read'] },
            ],
          },
          // A laxer case-sensitive route after them all: what a case-insensitive route passed on would land here.
          { ...route, id: 'rest', match: { path_prefix: '/' }, upstream: { url: upstream.url }, rules: [{}] },
        ],
      },
    });
    reader = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = (path: string) => fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });

  /** `path` is refused as a malformed path (400 request_path_invalid, audited so), the upstream gets nothing. */
  async function refused(path: string): Promise<void> {
    const n = upstream.seen.length;
    const res = await call(path);
    assert.equal(res.status, 400, path);
    assert.deepEqual(await res.json(), {
      error: 'invalid_request',
      error_description: 'The request path is not a normalized absolute path.',
    });
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'request_path_invalid', path);
    assert.equal(upstream.seen.length, n, `${path} reached the upstream`);
  }

  it('dotless-i bypass: /ci/admın/users (fetch sends it percent-encoded) is refused, not taken by the /ci/** rule', async () => {
    await refused('/ci/admın/users');
  });

  it('dotless-i bypass: /ci/adm%C4%B1n/users is refused', async () => {
    await refused('/ci/adm%C4%B1n/users');
    await refused('/ci/ADM%c4%b1N/users');
  });

  it('dotless-i bypass: the raw UTF-8 bytes of /ci/admın/users are refused', async () => {
    const n = upstream.seen.length;
    const { port } = new URL(gw.url);
    const socket = connect(Number(port), '127.0.0.1');
    socket.end(
      Buffer.concat([
        Buffer.from('GET /ci/adm'),
        Buffer.from('ı', 'utf8'),
        Buffer.from(`n/users HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${reader}\r\nconnection: close\r\n\r\n`),
      ]),
    );
    let answer = '';
    for await (const chunk of socket) answer += chunk;
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.equal(upstream.seen.length, n);
  });

  it('long-s bypass: /ci/ſecret (ſ uppercases to S) is refused', async () => {
    await refused('/ci/ſecret');
    await refused('/ci/%C5%BFecret/x');
  });

  it('dotted-capital-I bypass: /İnternal (İ lowercases to i) is refused by the /internal route, not passed to the route after it', async () => {
    await refused('/İnternal');
    await refused('/%C4%B0NTERNAL/x');
  });

  it('Kelvin-sign bypass: /ci/\u212Aelvin (K lowercases to k) is refused', async () => {
    await refused('/ci/\u212Aelvin');
    await refused('/ci/%E2%84%AAELVIN/x');
  });

  it('ligature bypass: /ci/ﬁles (ﬁ uppercases to FI) is refused', async () => {
    await refused('/ci/ﬁles');
    await refused('/ci/%EF%AC%81les/x');
  });

  it('sharp-s bypass: /ci/aß (ß uppercases to SS) is refused', async () => {
    await refused('/ci/a%C3%9F');
  });

  it('a folding character anywhere in the path is refused on a case-insensitive route, parameters and ** included', async () => {
    await refused('/ci/things/ſ');
  });

  it('fullwidth-letter bypass (NFKC): /ci/ａdmin/users (U+FF41, NFKC a) is refused, not taken by the /ci/** rule', async () => {
    await refused('/ci/ａdmin/users');
    await refused('/ci/%EF%BC%A1DMIN/x');
  });

  it('fullwidth-letter bypass (NFKC) past a case-insensitive route: /ｉnternal is refused by the /internal route, not passed to the / route', async () => {
    await refused('/ｉnternal');
    await refused('/%EF%BD%89NTERNAL/x');
  });

  it('fullwidth-solidus bypass (NFKC): /ci／admin/users and /ci/／admin (U+FF0F, NFKC /) are refused, not passed to the / route or the /ci/** rule', async () => {
    await refused('/ci%EF%BC%8Fadmin/users');
    await refused('/ci/%EF%BC%8Fadmin');
    await refused('/ci/x%EF%BC%8F..%EF%BC%8Fadmin');
  });

  it('fullwidth-full-stop traversal (NFKC): /zz/．．/ci/admin (U+FF0E, NFKC .) is refused, not passed to the / route', async () => {
    await refused('/zz/%EF%BC%8E%EF%BC%8E/ci/admin/users');
    await refused('/ci/x/%EF%BC%8E%EF%BC%8E/admin');
  });

  it('ligature bypass (NFKC): /ci/fĳi (ĳ U+0133: no case mapping makes it ASCII, NFKC makes it ij) is refused, not taken by the /ci/** rule', async () => {
    await refused('/ci/fĳi/x');
    await refused('/ci/F%C4%B2I');
  });

  it('mathematical-bold-letter bypass (NFKC): /ci/𝐚dmin (U+1D41A, NFKC a) is refused', async () => {
    await refused('/ci/𝐚dmin/users');
    await refused('/ci/%F0%9D%90%9Admin');
  });

  it('roman-numeral bypass (NFKC): /ci/admⅰn (U+2170, NFKC i) is refused', async () => {
    await refused('/ci/adm%E2%85%B0n/users');
  });

  it('superscript-digit bypass (NFKC): /ci/v²/x (U+00B2, NFKC 2) is refused, not taken by the /ci/** rule', async () => {
    await refused('/ci/v²/x');
    await refused('/ci/v%EF%BC%92/x');
  });

  it('soft-hyphen and zero-width-space bypass (NFKC_Casefold drops them): /ci/ad­min, /ci/adm​in, /ci/​/admin are refused', async () => {
    await refused('/ci/ad%C2%ADmin/users');
    await refused('/ci/adm%E2%80%8Bin');
    await refused('/ci/%E2%80%8B/admin');
    await refused('/%E2%80%8Binternal/x');
  });

  // An upstream that decodes twice (or nginx forwarding its decoded `$uri`) and then folds case or
  // applies NFKC reads these as `/ci/admin`, which the rules never saw: refused as double-encoded
  // printable ASCII is, on every route.
  it('double-encoded fullwidth-letter bypass (NFKC): /ci/%25EF%25BD%2581dmin/users (a second decode reads /ci/ａdmin) is refused, not taken by the /ci/** rule', async () => {
    await refused('/ci/%25EF%25BD%2581dmin/users');
    await refused('/ci/%25ef%25bd%2581dmin');
  });

  it('double-encoded dotless-i bypass: /ci/adm%25C4%25B1n/users (a second decode reads /ci/admın) is refused', async () => {
    await refused('/ci/adm%25C4%25B1n/users');
  });

  it('double-encoded dotted-capital-I bypass: /%25C4%25B0nternal/x is refused, not passed to the / route', async () => {
    await refused('/%25C4%25B0nternal/x');
  });

  it('double-encoded non-ASCII rule bypass on a case-sensitive route: /cs/stra%25C3%259Fe/x (a second decode reads /cs/straße/x) is refused, not taken by the /cs/** rule', async () => {
    assert.equal((await call('/cs/stra%C3%9Fe/x')).status, 403, 'the straße rule holds for the plain spelling');
    await refused('/cs/stra%25C3%259Fe/x');
  });

  it('double-encoded overlong traversal: /cs/x/%25C0%25AE%25C0%25AE/admin (a lenient second decode reads /cs/x/../admin) is refused', async () => {
    await refused('/cs/x/%25C0%25AE%25C0%25AE/admin');
  });

  it('double-encoded fullwidth-letter bypass through forward-auth and a WebSocket upgrade: /ci/%25EF%25BD%2581dmin is refused, never allowed or tunnelled', async () => {
    const res = await fetch(`${gw.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-original-uri': '/ci/%25EF%25BD%2581dmin/users',
        'x-original-method': 'GET',
        'x-original-host': 'api.example.com',
        authorization: `Bearer ${reader}`,
      },
    });
    assert.notEqual(res.status, 200);
    assert.equal(res.headers.get('x-tessera-subject'), null);
    await gw.served.gateway.audit.flush();
    assert.equal(gw.audit.events.at(-1)?.reason, 'request_path_invalid');
    const n = upstream.seen.length;
    assert.equal(await upgradeStatus(gw.url, '/ci/%25EF%25BD%2581dmin/socket', { authorization: `Bearer ${reader}` }), 400);
    assert.equal(upstream.seen.length, n);
  });

  it('a literal percent and a double-encoded space still pass: /ci/caf%C3%A9, /ci/100%25, /ci/a%2520b, /cs/50%25off reach the upstream as sent', async () => {
    for (const path of ['/ci/caf%C3%A9', '/ci/100%25', '/ci/a%2520b', '/ci/%25%C3%A9', '/cs/50%25off', '/cs/caf%C3%A9']) {
      const res = await call(path);
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)?.url, path, path);
    }
  });

  it('fullwidth-letter bypass through forward-auth and a WebSocket upgrade: /ci/ａdmin is refused, never allowed or tunnelled', async () => {
    const res = await fetch(`${gw.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-original-uri': '/ci/%EF%BD%81dmin/users',
        'x-original-method': 'GET',
        'x-original-host': 'api.example.com',
        authorization: `Bearer ${reader}`,
      },
    });
    assert.notEqual(res.status, 200);
    assert.equal(res.headers.get('x-tessera-subject'), null);
    await gw.served.gateway.audit.flush();
    assert.equal(gw.audit.events.at(-1)?.reason, 'request_path_invalid');
    const n = upstream.seen.length;
    assert.equal(await upgradeStatus(gw.url, '/ci/%EF%BD%81dmin/socket', { authorization: `Bearer ${reader}` }), 400);
    assert.equal(upstream.seen.length, n);
  });

  it('dotless-i bypass through forward-auth: a check of /ci/adm%C4%B1n/users is refused as a bad path, not allowed by the /ci/** rule', async () => {
    const check = (uri: string) =>
      fetch(`${gw.url}/_tessera/auth`, {
        headers: {
          'x-tessera-forward-auth': FA_SECRET,
          'x-original-uri': uri,
          'x-original-method': 'GET',
          'x-original-host': 'api.example.com',
          authorization: `Bearer ${reader}`,
        },
      });
    const res = await check('/ci/adm%C4%B1n/users');
    assert.notEqual(res.status, 200);
    assert.equal(res.headers.get('x-tessera-subject'), null);
    await gw.served.gateway.audit.flush();
    assert.equal(gw.audit.events.at(-1)?.reason, 'request_path_invalid');
    assert.equal((await check('/ci/caf%C3%A9')).status, 200);
  });

  it('dotless-i bypass through a WebSocket upgrade: /ci/adm%C4%B1n/socket is refused 400, never tunnelled', async () => {
    const n = upstream.seen.length;
    assert.equal(await upgradeStatus(gw.url, '/ci/adm%C4%B1n/socket', { authorization: `Bearer ${reader}` }), 400);
    assert.equal(upstream.seen.length, n);
  });

  it('case bypass: /CI/ADMIN/users still takes the admin rule (403)', async () => {
    const n = upstream.seen.length;
    const res = await call('/CI/ADMIN/users');
    assert.equal(res.status, 403);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'scope_insufficient');
    assert.equal((await call('/INTERNAL/x')).status, 403);
    assert.equal(upstream.seen.length, n);
  });

  it('other characters outside ASCII pass on a case-insensitive route: /ci/café, /CI/CAFÉ, /ci/şehir, Cyrillic, CJK', async () => {
    for (const [path, sent] of [
      ['/ci/café', '/ci/caf%C3%A9'],
      ['/CI/CAFÉ', '/CI/CAF%C3%89'],
      ['/ci/şehir', '/ci/%C5%9Fehir'],
      ['/ci/Şehir', '/ci/%C5%9Eehir'],
      ['/ci/привет', '/ci/%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82'],
      ['/ci/東京', '/ci/%E6%9D%B1%E4%BA%AC'],
      // NFKC leaves no ASCII: halfwidth katakana is katakana, an emoji's zero-width joiners dropped leave emoji.
      ['/ci/ｶﾀ', '/ci/%EF%BD%B6%EF%BE%80'],
      ['/ci/👨‍👩‍👧', '/ci/%F0%9F%91%A8%E2%80%8D%F0%9F%91%A9%E2%80%8D%F0%9F%91%A7'],
      ['/ci/cafe%CC%81', '/ci/cafe%CC%81'],
    ] as const) {
      const res = await call(path);
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)?.url, sent, path);
    }
  });

  it('a case-sensitive route is unchanged: /cs/admın/users, /cs/ſecret, /cs/café reach the upstream under its /cs/** rule', async () => {
    for (const [path, sent] of [
      ['/cs/admın/users', '/cs/adm%C4%B1n/users'],
      ['/cs/adm%C4%B1n/users', '/cs/adm%C4%B1n/users'],
      ['/cs/ſecret', '/cs/%C5%BFecret'],
      ['/cs/\u212Aelvin', '/cs/%E2%84%AAelvin'],
      ['/cs/ﬁles', '/cs/%EF%AC%81les'],
      ['/cs/ａdmin/users', '/cs/%EF%BD%81dmin/users'],
      ['/cs/x%EF%BC%8Fadmin', '/cs/x%EF%BC%8Fadmin'],
      ['/cs/café', '/cs/caf%C3%A9'],
    ] as const) {
      const res = await call(path);
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)?.url, sent, path);
    }
    assert.equal((await call('/cs/admin/users')).status, 403);
  });

  it('a case-sensitive route after a case-insensitive one still takes what no case-insensitive route would, even folded: /wiki/Straße, /docs/Işık reach the upstream under the / route', async () => {
    for (const [path, sent] of [
      ['/wiki/Straße', '/wiki/Stra%C3%9Fe'],
      ['/docs/Işık', '/docs/I%C5%9F%C4%B1k'],
      ['/docs/İstanbul/ﬁles', '/docs/%C4%B0stanbul/%EF%AC%81les'],
      ['/wiki/ＡＢＣ', '/wiki/%EF%BC%A1%EF%BC%A2%EF%BC%A3'],
      ['/docs/v²', '/docs/v%C2%B2'],
    ] as const) {
      const res = await call(path);
      assert.equal(res.status, 200, path);
      assert.equal(upstream.seen.at(-1)?.url, sent, path);
    }
    // Folded, these are paths of the case-insensitive routes before it: still refused.
    await refused('/%C4%B0nternal');
    await refused('/c%C4%B1/anything');
    await refused('/%EF%BD%83i/anything');
    // Read as `/`, `.`, `%` or `;`, the path has another shape, which no route is asked about: every
    // case-insensitive route the request reaches refuses it.
    await refused('/wiki/a%EF%BC%8Fb');
    await refused('/wiki/%E2%80%A6');
  });
});

describe('gateway: a path literal outside ASCII on a case-insensitive route is refused at load', () => {
  /** A configuration of these routes, each to a closed port with JWT auth. */
  const withRoutes = (...routes: Record<string, unknown>[]) =>
    parse({
      ...baseConfig(),
      gateway: { routes: routes.map((r) => ({ upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', audience: AUDIENCE, ...r })) as never },
    });

  it('config error: a rule path /ci/straße on a case-insensitive route names the path and what to write instead', () => {
    assert.throws(
      () =>
        withRoutes({
          id: 'ci',
          match: { path_prefix: '/ci' },
          case_insensitive_paths: true,
          rules: [
            { path: '/ci/straße/**', scopes: ['admin'] },
            { path: '/ci/**', scopes: ['api:read'] },
          ],
        }),
      (e: Error) =>
        /gateway\.routes\[0\]\.rules\[0\]\.path/.test(e.message) && /outside ASCII/.test(e.message) && /:name parameter/.test(e.message),
    );
  });

  it('config error: a match path /Σα/** and a path_prefix /café on case-insensitive routes', () => {
    assert.throws(
      () =>
        withRoutes(
          { id: 'pattern', match: { path: '/Σα/**' }, case_insensitive_paths: true },
          { id: 'prefix', match: { path_prefix: '/caf%C3%A9' }, case_insensitive_paths: true },
        ),
      (e: Error) =>
        /gateway\.routes\[0\]\.match\.path/.test(e.message) &&
        /gateway\.routes\[1\]\.match\.path_prefix/.test(e.message) &&
        /outside ASCII/.test(e.message),
    );
  });

  it('config error: a strip_prefix /café (or /caf%C3%A9) on a case-insensitive route names upstream.strip_prefix and what to write instead', () => {
    for (const strip of ['/café', '/caf%C3%A9', '/ａpi']) {
      assert.throws(
        () =>
          withRoutes({
            id: 'ci',
            match: { path_prefix: '/api' },
            case_insensitive_paths: true,
            upstream: { url: 'http://127.0.0.1:9', strip_prefix: strip },
          }),
        (e: Error) =>
          /gateway\.routes\[0\]\.upstream\.strip_prefix/.test(e.message) &&
          /outside ASCII/.test(e.message) &&
          /strip an ASCII prefix/.test(e.message),
        strip,
      );
    }
  });

  it('the same literals load on case-sensitive routes', () => {
    withRoutes({
      id: 'cs',
      match: { path_prefix: '/café' },
      upstream: { url: 'http://127.0.0.1:9', strip_prefix: '/café' },
      rules: [{ path: '/café/straße/**', scopes: ['admin'] }, { scopes: ['api:read'] }],
    });
  });
});

describe('gateway: the cost of reading a path as an upstream normalizing Unicode may', () => {
  it('hostile path (CPU): 8 KB of U+FDFA (NFKC spells it with 18 characters, spaces among them) is read with a few case mappings per character, each character read once', () => {
    const hostile = `/ci/${encodeURIComponent('\ufdfa'.repeat(2730))}`;
    const cjk = `/ci/${encodeURIComponent('\u6771'.repeat(2730))}`;
    const [read, calls] = caseMappings(() => asciiFoldedPath(hostile));
    assert.equal(typeof read, 'string', 'read (with spaces), so matched against the case-insensitive routes');
    assert.equal(caseMappings(() => asciiFoldedPath(cjk))[0], undefined);
    // Counted, not timed: the work a path costs, whatever else the machine is doing.
    assert.ok(calls <= 4 * 2730 + 100, `${calls} case mappings for 2730 characters`);
  });

  it('a character read as / . % ; ? # still reshapes the path however many others are read (counted, not read twice)', () => {
    assert.equal(asciiFoldedPath(`/ci/${encodeURIComponent('\ufdfa'.repeat(100))}%EF%BC%8Fadmin`), false);
    assert.equal(asciiFoldedPath('/ci/a.b%EF%BD%81'), '/ci/a.ba', 'an ASCII dot is no reshaping');
    assert.equal(asciiFoldedPath('/ci/a.b%E2%80%A4'), false, 'U+2024 ONE DOT LEADER is read as a dot');
  });
});
