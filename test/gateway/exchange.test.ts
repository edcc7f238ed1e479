/**
 * `credential: exchange` against the UpstreamTokenIssuer port, with a test issuer that signs real
 * JWTs with jose: the upstream gets a narrow token for its own audience, carrying the caller's
 * chain, never outliving the caller's token; mints are cached per caller token and rule, and an
 * upstream 401 to a minted token evicts it; a failed mint is logged with the error's name and, for
 * the token service's OAuthError, its fixed code, never its message.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, jwtVerify, SignJWT } from 'jose';
import pino from 'pino';
import { ConfigError } from '../../src/core/errors.ts';
import { OAuthError } from '../../src/core/oauth-errors.ts';
import type { UpstreamTokenIssuer } from '../../src/core/ports.ts';
import { createGateway } from '../../src/gateway/gateway.ts';
import { acceptOf } from '../../src/gateway/proxy/websocket.ts';
import { rawHttp, until } from '../helpers/net.ts';
import { listen, readBody, type TestServer } from '../helpers/verify.ts';
import {
  baseConfig,
  parse,
  requestEvents,
  silent,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

const UPSTREAM_AUD = 'https://upstream.internal';
const TESSERA = 'https://tessera.test';

/** A stand-in for the token service: RFC 8693-style narrowed tokens signed with jose. */
function testIssuer() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const calls: { audience: string; scopes: readonly string[]; maxTtl: number }[] = [];
  let fail: boolean | Error = false;
  const issuer: UpstreamTokenIssuer = {
    async issueForUpstream({ principal, audience, scopes, maxTtl }) {
      calls.push({ audience, scopes, maxTtl });
      if (fail) throw fail === true ? new Error('token service down') : fail;
      const now = Math.floor(Date.now() / 1000);
      // The gateway acts for the caller: the caller's chain nests under it.
      let act: Record<string, unknown> | undefined;
      for (const a of [...principal.actors].reverse()) act = act ? { sub: a.subject, act } : { sub: a.subject };
      const jwt = await new SignJWT({
        scope: scopes.join(' '),
        client_id: principal.clientId,
        act: act ? { sub: 'tessera-gateway', act } : { sub: 'tessera-gateway' },
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' })
        .setIssuer(TESSERA)
        .setAudience(audience)
        .setSubject(principal.subject ?? 'unknown')
        .setIssuedAt(now)
        .setExpirationTime(now + maxTtl)
        // Two mints in the same second differ (as the token service's do).
        .setJti(randomUUID())
        .sign(privateKey);
      return { token: jwt, expiresAt: now + maxTtl };
    },
  };
  return { issuer, publicKey, calls, setFail: (v: boolean | Error) => (fail = v) };
}

const routes = (upstreamUrl: string) => [
  {
    id: 'llm',
    upstream: { url: upstreamUrl, credential: { type: 'exchange' as const, audience: UPSTREAM_AUD, max_ttl: '5m' } },
    auth: 'jwt' as const,
    rules: [
      { id: 'chat', methods: ['POST'], path: '/v1/chat', scopes: ['api:write'] },
      { id: 'models', methods: ['GET'], path: '/v1/models', scopes: { any: ['api:read', 'admin'] } },
    ],
  },
];

describe('gateway: exchange upstream credential', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const ti = testIssuer();
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({ ...baseConfig(), gateway: { routes: routes(upstream.url) } }, { upstreamTokenIssuer: ti.issuer });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('sends a narrow token for the upstream audience carrying the caller chain', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ scope: 'api:write admin', act: { sub: 'agent-b', act: { sub: 'agent-a' } }, exp: now + 120, iat: now });
    const res = await fetch(`${gw.url}/v1/chat`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
    assert.equal(res.status, 200);
    const sent = String(upstream.seen.at(-1)!.headers.authorization).replace(/^Bearer /, '');
    assert.notEqual(sent, t);
    const { payload } = await jwtVerify(sent, ti.publicKey, { issuer: TESSERA, audience: UPSTREAM_AUD, typ: 'at+jwt' });
    assert.equal(payload.sub, 'user-1');
    assert.equal(payload.scope, 'api:write', 'narrowed to the rule, not everything the caller holds');
    assert.deepEqual(payload.act, { sub: 'tessera-gateway', act: { sub: 'agent-b', act: { sub: 'agent-a' } } });
    assert.ok((payload.exp as number) <= now + 120, 'never outlives the caller token');
    assert.ok(ti.calls.at(-1)!.maxTtl <= 120);
  });

  it('caches the minted token per caller token and rule', async () => {
    const t = await token({ scope: 'api:read' });
    const before = ti.calls.length;
    for (let i = 0; i < 3; i++)
      assert.equal((await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } })).status, 200);
    assert.equal(ti.calls.length, before + 1);
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:read'], 'any-of scopes: only those the caller holds');
    const other = await token({ scope: 'api:read' });
    await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${other}` } });
    assert.equal(ti.calls.length, before + 2);
  });

  it('shares one mint between concurrent first requests', async () => {
    const t = await token({ scope: 'api:read' });
    const before = ti.calls.length;
    const results = await Promise.all(
      Array.from({ length: 5 }, () => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } })),
    );
    assert.deepEqual(
      results.map((r) => r.status),
      [200, 200, 200, 200, 200],
    );
    assert.equal(ti.calls.length, before + 1);
  });

  it('answers 502 upstream_credential_unavailable when the token service fails', async () => {
    ti.setFail(true);
    try {
      const t = await token({ scope: 'api:read' });
      const n = upstream.seen.length;
      const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 502);
      assert.deepEqual(await res.json(), {
        error: 'bad_gateway',
        error_description: 'The credential for the upstream service could not be obtained.',
      });
      assert.equal(upstream.seen.length, n);
      assert.equal((await requestEvents(gw)).at(-1)!.reason, 'upstream_credential_unavailable');
    } finally {
      ti.setFail(false);
    }
  });

  it('never puts the minted token in the audit trail', async () => {
    const events = JSON.stringify(await requestEvents(gw));
    for (const s of upstream.seen) {
      const sent = String(s.headers.authorization ?? '').replace(/^Bearer /, '');
      if (sent) {
        assert.ok(decodeJwt(sent).aud);
        assert.ok(!events.includes(sent));
      }
    }
  });
});

describe('gateway: a failed exchange mint in the log', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const ti = testIssuer();
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      { ...baseConfig(), gateway: { routes: routes(upstream.url) } },
      { upstreamTokenIssuer: ti.issuer, logger: pino({ level: 'warn' }, { write: (l: string) => lines.push(JSON.parse(l)) }) },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const failWith = async (error: Error, t: string) => {
    ti.setFail(error);
    try {
      const n = lines.length;
      const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 502);
      await until(() => lines.slice(n).some((l) => l.event === 'upstream_credential_failed'));
      return lines.slice(n).filter((l) => l.event === 'upstream_credential_failed');
    } finally {
      ti.setFail(false);
    }
  };

  it("names the token service's OAuthError code (target_not_allowed), not only the error's name", async () => {
    const logged = await failWith(new OAuthError('target_not_allowed'), await token({ scope: 'api:read' }));
    assert.equal(logged.length, 1);
    assert.equal(logged[0]!.route, 'llm');
    assert.equal(logged[0]!.error, 'OAuthError');
    assert.equal(logged[0]!.code, 'target_not_allowed');
  });

  it("any other error: its name only, never its message (which may carry the caller's token)", async () => {
    const t = await token({ scope: 'api:read' });
    const logged = await failWith(new Error(`store refused ${t}`), t);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]!.error, 'Error');
    assert.equal(logged[0]!.code, undefined);
    assert.ok(!JSON.stringify(logged).includes(t), 'the caller token is in the log');
  });
});

describe('gateway: exchange credential refused by the upstream', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const ti = testIssuer();
  /** Minted tokens the upstream refuses (as an upstream that revoked them, or whose keys rotated). */
  const refused = new Set<string>();
  /** Refuse the next minted token it has not seen refused yet. */
  let refuseNext = false;
  /** Refuse every token it is sent. */
  let refuseAll = false;
  /** Responses held on `/v1/slow` until the test answers them. */
  const held: { auth: string; res: ServerResponse }[] = [];
  /** The Authorization of each upgrade the upstream received. */
  const upgrades: string[] = [];
  const answer = (auth: string, res: ServerResponse) => {
    if (refuseAll) refused.add(auth);
    if (refuseNext) {
      refuseNext = false;
      refused.add(auth);
    }
    res.writeHead(refused.has(auth) ? 401 : 200, { 'content-type': 'text/plain' }).end(refused.has(auth) ? 'expired' : 'ok');
  };
  before(async () => {
    upstream = await startUpstream((req, res) => {
      const auth = String(req.headers.authorization);
      if (req.url === '/v1/slow') held.push({ auth, res });
      else answer(auth, res);
    });
    upstream.server.on('upgrade', (req, socket) => {
      const auth = String(req.headers.authorization);
      upgrades.push(auth);
      if (refuseNext) {
        refuseNext = false;
        refused.add(auth);
      }
      socket.end(
        refused.has(auth)
          ? 'HTTP/1.1 401 Unauthorized\r\ncontent-length: 7\r\n\r\nexpired'
          : `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(String(req.headers['sec-websocket-key']))}\r\n\r\n`,
      );
    });
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: {
          routes: [
            {
              id: 'llm',
              upstream: { url: upstream.url, credential: { type: 'exchange', audience: UPSTREAM_AUD, max_ttl: '5m' } },
              auth: 'jwt',
              rules: [{ id: 'models', path: '/v1/*', scopes: ['api:read'] }],
            },
          ],
        },
      },
      { upstreamTokenIssuer: ti.issuer },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const get = (t: string, path = '/v1/models') => fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${t}` } });
  const sent = () => String(upstream.seen.at(-1)!.headers.authorization);

  it('an upstream 401 to a minted token evicts it: the next request mints a new one; other callers keep theirs', async () => {
    const a = await token();
    const b = await token();
    assert.equal((await get(a)).status, 200);
    const first = sent();
    assert.equal((await get(b)).status, 200);
    const other = sent();
    const mints = ti.calls.length;

    refuseNext = true;
    const res = await get(a);
    assert.equal(res.status, 502);
    assert.deepEqual(await res.json(), {
      error: 'bad_gateway',
      error_description: "The upstream service refused the gateway's credential.",
    });
    assert.equal(sent(), first);
    const e = (await requestEvents(gw)).at(-1)!;
    assert.equal(e.reason, 'upstream_credential_rejected');
    assert.equal(e.upstream_status, 401);

    assert.equal((await get(a)).status, 200, 'the refused token is not sent again');
    assert.notEqual(sent(), first);
    assert.equal(decodeJwt(sent().replace(/^Bearer /, '')).aud, UPSTREAM_AUD);
    assert.equal(ti.calls.length, mints + 1);
    // And the new one is cached in its place.
    assert.equal((await get(a)).status, 200);
    assert.equal(ti.calls.length, mints + 1);

    assert.equal((await get(b)).status, 200);
    assert.equal(sent(), other, "another caller's minted token stays cached");
    assert.equal(ti.calls.length, mints + 1);
  });

  it('a late 401 to a minted token already replaced does not evict its replacement', async () => {
    const a = await token();
    assert.equal((await get(a)).status, 200);
    const first = sent();
    // A request with the first token waits at the upstream while that token is refused and replaced.
    const slow = get(a, '/v1/slow');
    await until(() => held.length === 1);
    refuseNext = true;
    assert.equal((await get(a)).status, 502);
    assert.equal((await get(a)).status, 200);
    const replacement = sent();
    assert.notEqual(replacement, first);
    const mints = ti.calls.length;
    const h = held.shift()!;
    assert.equal(h.auth, first);
    answer(h.auth, h.res);
    assert.equal((await slow).status, 502);
    assert.equal((await get(a)).status, 200);
    assert.equal(sent(), replacement);
    assert.equal(ti.calls.length, mints);
  });

  it('attack: an upstream that refuses every token is not sent a newly minted one per request (a grant each)', async () => {
    const a = await token();
    assert.equal((await get(a)).status, 200);
    const first = sent();
    const mints = ti.calls.length;
    refuseAll = true;
    try {
      assert.equal((await get(a)).status, 502);
      assert.equal(sent(), first);
      assert.equal((await get(a)).status, 502);
      const replacement = sent();
      assert.notEqual(replacement, first, 'the first refusal evicts');
      assert.equal(ti.calls.length, mints + 1);
      for (let i = 0; i < 3; i++) assert.equal((await get(a)).status, 502);
      assert.equal(sent(), replacement, 'the replacement, refused too, is kept');
      assert.equal(ti.calls.length, mints + 1);
    } finally {
      refuseAll = false;
    }
  });

  it('WebSocket: an upstream 401 to the upgrade evicts the minted token; the next upgrade carries a new one', async () => {
    const a = await token();
    const upgrade = () =>
      rawHttp(
        gw.url,
        `GET /v1/ws HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${a}\r\nConnection: Upgrade\r\n` +
          'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
    assert.match(await upgrade(), /^HTTP\/1\.1 101 /);
    const first = upgrades.at(-1);
    refuseNext = true;
    assert.match(await upgrade(), /^HTTP\/1\.1 502 /);
    assert.equal(upgrades.at(-1), first);
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'upstream_credential_rejected');
    assert.match(await upgrade(), /^HTTP\/1\.1 101 /);
    assert.notEqual(upgrades.at(-1), first);
  });
});

describe('gateway: exchange without a token service', () => {
  it('is refused at load with the path', () => {
    assert.throws(
      () => createGateway(parse({ ...baseConfig(), gateway: { routes: routes('http://127.0.0.1:9') } }), { logger: silent }),
      (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.path === 'gateway.routes[0].upstream.credential.type'),
    );
  });
});

describe('gateway: exchange upstream credential and identity headers', () => {
  it('attack: a token whose identity claim cannot be sent (a lone surrogate) is refused before any mint (no grant, no token.exchanged event)', async () => {
    const upstream = await startUpstream();
    const ti = testIssuer();
    const gw = await startGateway(
      {
        ...baseConfig(),
        gateway: { routes: [{ ...routes(upstream.url)[0]!, identity_headers: ['subject' as const] }] },
      },
      { upstreamTokenIssuer: ti.issuer },
    );
    try {
      const t = await token({ sub: 'user-\ud800', scope: 'api:read' });
      const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
      assert.equal(ti.calls.length, 0, 'the token service was asked for a token');
      assert.equal(upstream.seen.length, 0);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: the exchanged-token cache against an introspected token whose answer changes', () => {
  const CLIENT_ID = 'gateway';
  const CLIENT_SECRET = 'introspection-client-secret';
  let endpoint: TestServer;
  /** Opaque caller token → the endpoint's answer (`active: false` when absent). */
  const answers = new Map<string, Record<string, unknown>>();
  let upstream: Upstream;
  let gw: TestGateway;
  const ti = testIssuer();
  before(async () => {
    const basic = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;
    endpoint = await listen(async (req, res) => {
      const presented = new URLSearchParams(await readBody(req)).get('token') ?? '';
      const body = (req.headers.authorization === basic && answers.get(presented)) || { active: false };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        introspection: {
          endpoint: `${endpoint.origin}/introspect`,
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          cache_max_ttl: '1s',
          timeout: '1s',
        },
        gateway: { routes: [{ ...routes(upstream.url)[0]!, auth: 'introspection' as const }] },
      },
      { upstreamTokenIssuer: ti.issuer },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await endpoint.close();
  });

  const models = (t: string) => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
  /** Past the introspection cache (cache_max_ttl 1 s): the gateway knows the new answer. */
  const sleep = () => new Promise((r) => setTimeout(r, 1200));
  const sentPayload = () => decodeJwt(String(upstream.seen.at(-1)!.headers.authorization).replace(/^Bearer /, ''));

  it('attack: a token the authorization server narrowed (admin taken away) is not sent the upstream token minted with admin', async () => {
    const t = 'opaque-narrowed-0123456789';
    const exp = Math.floor(Date.now() / 1000) + 600;
    answers.set(t, { active: true, sub: 'user-narrowed', client_id: 'agent-1', scope: 'api:read admin', exp });
    assert.equal((await models(t)).status, 200);
    assert.equal(sentPayload().scope, 'api:read admin');
    answers.set(t, { ...answers.get(t), scope: 'api:read' });
    await sleep();
    assert.equal((await models(t)).status, 200);
    assert.equal(sentPayload().scope, 'api:read', 'the cached upstream token still carries admin');
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:read']);
  });

  it('attack: a token whose expiry the authorization server brought forward is not sent an upstream token that outlives it', async () => {
    const t = 'opaque-shortened-0123456789';
    const now = Math.floor(Date.now() / 1000);
    answers.set(t, { active: true, sub: 'user-shortened', client_id: 'agent-1', scope: 'api:read', exp: now + 600 });
    assert.equal((await models(t)).status, 200);
    assert.ok((sentPayload().exp as number) > now + 120);
    answers.set(t, { ...answers.get(t), exp: now + 60 });
    await sleep();
    assert.equal((await models(t)).status, 200);
    assert.ok((sentPayload().exp as number) <= now + 60, 'the cached upstream token outlives the caller token');
  });

  it('attack: the same token answered for another subject (or client) is not sent the first one’s upstream token', async () => {
    const t = 'opaque-reassigned-0123456789';
    answers.set(t, { active: true, sub: 'user-first', client_id: 'agent-1', scope: 'api:read', exp: Math.floor(Date.now() / 1000) + 600 });
    assert.equal((await models(t)).status, 200);
    assert.equal(sentPayload().sub, 'user-first');
    answers.set(t, { ...answers.get(t), sub: 'user-second' });
    await sleep();
    assert.equal((await models(t)).status, 200);
    assert.equal(sentPayload().sub, 'user-second');
    answers.set(t, { ...answers.get(t), client_id: 'agent-2' });
    await sleep();
    assert.equal((await models(t)).status, 200);
    assert.equal(sentPayload().client_id, 'agent-2');
  });
});

describe('gateway: a reload that changes the exchange configuration', () => {
  it('never serves a token minted under the old configuration (another audience, narrower scopes)', async () => {
    const upstream = await startUpstream();
    const ti = testIssuer();
    const config = (audience: string, scopes?: string[]) => ({
      ...baseConfig(),
      gateway: {
        routes: [
          {
            ...routes(upstream.url)[0]!,
            upstream: {
              url: upstream.url,
              credential: { type: 'exchange' as const, audience, max_ttl: '5m', ...(scopes ? { scopes } : {}) },
            },
          },
        ],
      },
    });
    const gw = await startGateway(config(UPSTREAM_AUD), { upstreamTokenIssuer: ti.issuer });
    try {
      const t = await token({ scope: 'api:read admin' });
      const get = () => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
      const sent = () => decodeJwt(String(upstream.seen.at(-1)!.headers.authorization).replace(/^Bearer /, ''));
      assert.equal((await get()).status, 200);
      assert.equal(sent().aud, UPSTREAM_AUD);
      assert.equal(sent().scope, 'api:read admin');
      assert.equal(gw.served.reload(parse(config('https://other-upstream.internal', ['api:read']))).ok, true);
      assert.equal((await get()).status, 200);
      assert.equal(sent().aud, 'https://other-upstream.internal');
      assert.equal(sent().scope, 'api:read');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('gateway: an exchange answer the gateway must not forward', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  /** What the stand-in token service answers next. */
  let answer: (maxTtl: number, callerExp: number) => { token: string; expiresAt: number };
  const calls: number[] = [];
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    upstream = await startUpstream();
    const issuer: UpstreamTokenIssuer = {
      async issueForUpstream({ principal, maxTtl }) {
        calls.push(maxTtl);
        return answer(maxTtl, principal.expiresAt);
      },
    };
    gw = await startGateway(
      { ...baseConfig(), gateway: { routes: routes(upstream.url) } },
      { upstreamTokenIssuer: issuer, logger: pino({ level: 'warn' }, { write: (l: string) => lines.push(JSON.parse(l)) }) },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const now = () => Math.floor(Date.now() / 1000);
  for (const [name, make, code] of [
    [
      'a token with CR LF (header injection)',
      (ttl: number) => ({ token: 'abc\r\nX-Tessera-Subject: admin', expiresAt: now() + ttl }),
      'token_malformed',
    ],
    [
      'a token with a space (another scheme, another credential)',
      (ttl: number) => ({ token: 'abc def', expiresAt: now() + ttl }),
      'token_malformed',
    ],
    ['an empty token', (ttl: number) => ({ token: '', expiresAt: now() + ttl }), 'token_malformed'],
    ['an expiry that is not a number', () => ({ token: 'abc', expiresAt: Number.NaN }), 'expiry_invalid'],
    ['an expiry already past', () => ({ token: 'abc', expiresAt: now() - 10 }), 'expiry_invalid'],
    [
      'a token outliving the caller token',
      (_: number, callerExp: number) => ({ token: 'abc', expiresAt: callerExp + 3600 }),
      'outlives_caller',
    ],
  ] as const) {
    it(`attack: ${name} is refused (502 upstream_credential_unavailable), never forwarded`, async () => {
      answer = make;
      const logged = lines.length;
      const t = await token({ scope: 'api:read', exp: now() + 120 });
      const n = upstream.seen.length;
      const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 502);
      assert.deepEqual(await res.json(), {
        error: 'bad_gateway',
        error_description: 'The credential for the upstream service could not be obtained.',
      });
      assert.equal(upstream.seen.length, n, 'the upstream was sent the answer');
      const events = await requestEvents(gw);
      assert.equal(events.at(-1)!.reason, 'upstream_credential_unavailable');
      await until(() => lines.length > logged);
      assert.deepEqual(
        lines.slice(logged).map((l) => [l.event, l.error, l.code]),
        [['upstream_credential_failed', 'ExchangeAnswerRefused', code]],
      );
      assert.ok(!JSON.stringify(lines).includes(t), 'the caller token is in the log');
    });
  }
});
