/**
 * `credential: exchange` across a configuration reload: a route whose credential is unchanged (the
 * same id, audience, `scopes`, `max_ttl`, `refresh_before`, token service) keeps its minted tokens
 * and its mints in flight, so a reload that changes something else costs no caller a mint (and no
 * grant), and a busy route no storm of mints past `max_in_flight`. A token is reused only for what
 * it was minted for: another audience, other scopes (configured, a rule's, or the caller's as the
 * catalogue expands them), another lifetime, or a route removed and added again mint anew.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { UpstreamTokenIssuer } from '../../src/core/ports.ts';
import { until } from '../helpers/net.ts';
import { baseConfig, parse, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const AUD = 'https://upstream.internal';

interface Call {
  readonly audience: string;
  readonly scopes: readonly string[];
  readonly maxTtl: number;
}

/** A token service stand-in answering `minted-<n>`, recording what each mint asked for. */
function countingIssuer() {
  const calls: Call[] = [];
  const issuer: UpstreamTokenIssuer = {
    async issueForUpstream({ audience, scopes, maxTtl }) {
      calls.push({ audience, scopes, maxTtl });
      return { token: `minted-${calls.length}`, expiresAt: Math.floor(Date.now() / 1000) + maxTtl };
    },
  };
  return { issuer, calls };
}

type Credential = {
  audience?: string;
  scopes?: string[];
  max_ttl?: string;
  refresh_before?: string;
  mint_timeout?: string;
  max_in_flight?: number;
  cache_size?: number;
};
type Rule = { id?: string; methods?: string[]; path: string; scopes: string[] | { any: string[] } };

const RULES: Rule[] = [
  { id: 'chat', methods: ['POST'], path: '/v1/chat', scopes: ['api:write'] },
  { id: 'models', methods: ['GET'], path: '/v1/models', scopes: { any: ['api:read', 'admin'] } },
];

interface Shape {
  credential?: Credential;
  rules?: Rule[];
  /** Another route, with this upstream path: an unrelated change. */
  other?: string;
  /** Leave the exchange route out. */
  without?: boolean;
  catalogue?: Record<string, { implies?: string[] }>;
}

function config(upstreamUrl: string, shape: Shape = {}) {
  const base = baseConfig();
  const routes = [];
  if (shape.other !== undefined) {
    routes.push({
      id: 'other',
      match: { path_prefix: '/other' },
      upstream: { url: `${upstreamUrl}${shape.other}` },
      auth: 'jwt' as const,
      rules: [{ path: '/other/*', scopes: ['api:read'] }],
    });
  }
  if (shape.without !== true) {
    routes.push({
      id: 'llm',
      match: { path_prefix: '/v1' },
      upstream: {
        url: upstreamUrl,
        credential: { type: 'exchange' as const, audience: AUD, max_ttl: '5m', ...shape.credential },
      },
      auth: 'jwt' as const,
      rules: shape.rules ?? RULES,
    });
  }
  return { ...base, ...(shape.catalogue ? { scopes: shape.catalogue } : {}), gateway: { routes } };
}

describe('gateway: exchange tokens across a reload', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const ti = countingIssuer();
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(config(upstream.url), { upstreamTokenIssuer: ti.issuer });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  const reload = (shape: Shape) => assert.equal(gw.served.reload(parse(config(upstream.url, shape))).ok, true);
  const models = async (t: string) => {
    const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 200);
    return upstream.seen.at(-1)!.headers.authorization;
  };

  it('a reload that changes another route, a rule on another path, mint_timeout, max_in_flight or cache_size keeps the cached token: no mint', async () => {
    reload({});
    const t = await token({ scope: 'api:read admin', sub: 'keeps' });
    const calls = ti.calls.length;
    const first = await models(t);
    assert.equal(ti.calls.length, calls + 1);
    for (const shape of [
      { other: '/a' },
      { other: '/b' },
      {},
      { rules: [{ ...RULES[0]!, scopes: ['admin'] }, RULES[1]!] },
      { credential: { mint_timeout: '2s', max_in_flight: 8 } },
      { credential: { mint_timeout: '2s', max_in_flight: 8, cache_size: 4 } },
    ] satisfies Shape[]) {
      reload(shape);
      assert.equal(await models(t), first, `a new token after the reload to ${JSON.stringify(shape)}`);
    }
    assert.equal(ti.calls.length, calls + 1, 'the token service was asked again');
  });

  for (const [what, shape, expect] of [
    ['audience', { credential: { audience: 'https://other.internal' } }, { audience: 'https://other.internal' }],
    ['scopes', { credential: { scopes: ['api:read'] } }, { scopes: ['api:read'] }],
    ['max_ttl', { credential: { max_ttl: '2m' } }, { maxTtl: 120 }],
    ['refresh_before', { credential: { refresh_before: '10s' } }, {}],
  ] satisfies [string, Shape, Partial<Call>][]) {
    it(`a reload that changes the route's ${what} mints anew`, async () => {
      reload({});
      // Lives past max_ttl: the mint asks for max_ttl.
      const t = await token({ scope: 'api:read admin', sub: `changed-${what}`, exp: Math.floor(Date.now() / 1000) + 3600 });
      const before = await models(t);
      const calls = ti.calls.length;
      reload(shape);
      const now = await models(t);
      assert.notEqual(now, before, 'the token minted under the old credential was sent');
      assert.equal(ti.calls.length, calls + 1);
      const call = ti.calls.at(-1)!;
      assert.deepEqual(
        { audience: call.audience, scopes: call.scopes, maxTtl: call.maxTtl },
        { audience: AUD, scopes: ['api:read', 'admin'], maxTtl: 300, ...expect },
      );
      // And the new credential's token is then cached in turn.
      assert.equal(await models(t), now);
    });
  }

  it("a reload that narrows the matched rule's scopes mints a token with the narrower scopes", async () => {
    reload({});
    const t = await token({ scope: 'api:read admin', sub: 'rule-narrowed' });
    const before = await models(t);
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:read', 'admin']);
    reload({ rules: [RULES[0]!, { ...RULES[1]!, scopes: ['api:read'] }] });
    assert.notEqual(await models(t), before, 'a token carrying admin was sent after the rule no longer gives it');
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:read']);
  });

  it('a reload that inserts a rule before the matched one (rules[i] ids move) mints for the rule that now matches', async () => {
    const unnamed = (rules: Rule[]) => rules.map(({ id: _, ...r }) => r);
    reload({ rules: unnamed(RULES) });
    const t = await token({ scope: 'api:read admin', sub: 'rule-moved' });
    const before = await models(t);
    // rules[1] was models (api:read, admin); it is now a rule on /v1/models giving api:read only
    // (models, now rules[2], is left PUT: a rule no request reaches is refused at load).
    reload({
      rules: unnamed([RULES[0]!, { methods: ['GET'], path: '/v1/models', scopes: ['api:read'] }, { ...RULES[1]!, methods: ['PUT'] }]),
    });
    assert.notEqual(await models(t), before);
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:read']);
  });

  it("a reload that changes what the caller's scopes expand to mints with the scopes now held", async () => {
    const catalogue = { 'api:read': {}, 'api:write': { implies: ['api:read'] }, admin: {} };
    const rules: Rule[] = [{ id: 'models', methods: ['GET'], path: '/v1/models', scopes: { any: ['api:read', 'api:write'] } }];
    reload({ rules, catalogue });
    const t = await token({ scope: 'api:write', sub: 'catalogue' });
    const before = await models(t);
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:read', 'api:write']);
    reload({ rules, catalogue: { ...catalogue, 'api:write': {} } });
    assert.notEqual(await models(t), before, 'a token carrying api:read was sent to a caller that no longer holds it');
    assert.deepEqual(ti.calls.at(-1)!.scopes, ['api:write']);
  });

  it('a route removed and added again starts with no cached token', async () => {
    reload({});
    const t = await token({ scope: 'api:read admin', sub: 'removed' });
    const before = await models(t);
    reload({ without: true, other: '/a' });
    const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 404);
    await res.body?.cancel();
    const calls = ti.calls.length;
    reload({});
    assert.notEqual(await models(t), before);
    assert.equal(ti.calls.length, calls + 1);
  });
});

describe('gateway: exchange mints in flight across a reload', () => {
  it('attack: a reload does not reset max_in_flight while the token service hangs; a late answer serves the caller after the reload', {
    timeout: 10_000,
  }, async () => {
    const upstream = await startUpstream();
    const held: ((answer: { token: string; expiresAt: number }) => void)[] = [];
    const issuer: UpstreamTokenIssuer = { issueForUpstream: () => new Promise((resolve) => held.push(resolve)) };
    const credential = { mint_timeout: '200ms', max_in_flight: 1 };
    const gw = await startGateway(config(upstream.url, { credential }), { upstreamTokenIssuer: issuer });
    try {
      const get = (t: string) =>
        fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` }, signal: AbortSignal.timeout(5000) });
      const a = await token({ scope: 'api:read', sub: 'hung-a' });
      const b = await token({ scope: 'api:read', sub: 'hung-b' });
      assert.equal((await get(a)).status, 502);
      assert.equal((await requestEvents(gw)).at(-1)!.detail?.upstream_error, 'mint_timeout');
      assert.equal(held.length, 1);
      assert.equal(gw.served.reload(parse(config(upstream.url, { credential, other: '/a' }))).ok, true);
      const res = await get(b);
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '5');
      assert.equal((await requestEvents(gw)).at(-1)!.detail?.upstream_error, 'mints_in_flight');
      assert.equal(held.length, 1, 'the reload let a second call start past max_in_flight: 1');

      held[0]!({ token: 'minted-late', expiresAt: Math.floor(Date.now() / 1000) + 120 });
      await new Promise((r) => setTimeout(r, 30));
      assert.equal((await get(a)).status, 200);
      assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-late');
      assert.equal(held.length, 1);
    } finally {
      for (const r of held) r({ token: 'end', expiresAt: Math.floor(Date.now() / 1000) + 60 });
      await gw.close();
      await upstream.close();
    }
  });
});

/**
 * A token endpoint on loopback, and the UpstreamTokenIssuer that mints through it over HTTP. While
 * `hold` is set it keeps each request waiting until the test releases it (a mint in flight for as
 * long as the test says); otherwise it answers at once.
 */
async function slowTokenEndpoint() {
  const waiting: (() => void)[] = [];
  let received = 0;
  const state = { hold: true };
  const server = createServer((req, res) => {
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      const n = ++received;
      const asked = JSON.parse(Buffer.concat(body).toString()) as { max_ttl: number };
      const answer = () => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ access_token: `slow-${n}`, token_type: 'Bearer', expires_in: asked.max_ttl }));
      };
      if (state.hold) waiting.push(answer);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  const issuer: UpstreamTokenIssuer = {
    async issueForUpstream({ scopes, maxTtl, signal }) {
      const res = await fetch(endpoint, { method: 'POST', body: JSON.stringify({ scopes, max_ttl: maxTtl }), signal: signal ?? null });
      const answer = (await res.json()) as { access_token: string; expires_in: number };
      return { token: answer.access_token, expiresAt: Math.floor(Date.now() / 1000) + answer.expires_in };
    },
  };
  return {
    issuer,
    state,
    /** Requests the endpoint received, answered or not. */
    received: () => received,
    /** Answer the oldest request held. */
    release: () => waiting.shift()?.(),
    close: () => {
      for (const answer of waiting.splice(0)) answer();
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('gateway: a reload that changes only cache_size while a mint is in flight', () => {
  let upstream: Upstream;
  let endpoint: Awaited<ReturnType<typeof slowTokenEndpoint>>;
  let gw: TestGateway;
  const credential = { mint_timeout: '10s' };
  before(async () => {
    upstream = await startUpstream();
    endpoint = await slowTokenEndpoint();
    gw = await startGateway(config(upstream.url, { credential }), { upstreamTokenIssuer: endpoint.issuer });
  });
  after(async () => {
    await gw?.close();
    await endpoint?.close();
    await upstream?.close();
  });

  const get = (t: string) => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` }, signal: AbortSignal.timeout(5000) });
  const reload = (cacheSize: number) =>
    assert.equal(gw.served.reload(parse(config(upstream.url, { credential: { ...credential, cache_size: cacheSize } }))).ok, true);
  /** One request per token, each held at the token endpoint: the mints are in flight when this returns. */
  const startMints = async (tokens: string[]) => {
    endpoint.state.hold = true;
    const n = endpoint.received();
    const responses = tokens.map((t) => get(t));
    await until(() => endpoint.received() === n + tokens.length);
    return responses;
  };
  /** What the upstream was sent for a request answered 200. */
  const sent = async (res: Promise<Response>) => {
    const r = await res;
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    return upstream.seen.at(-1)!.headers.authorization;
  };
  /** Let the mints held finish, in the order they started; later mints are answered at once. */
  const finish = async (responses: Promise<Response>[]) => {
    endpoint.state.hold = false;
    const out = [];
    for (const res of responses) {
      endpoint.release();
      out.push(await sent(res));
    }
    return out;
  };

  it('the token minted across the reload is cached under the new size: the next request does not mint again', {
    timeout: 10_000,
  }, async () => {
    reload(10_000);
    const t = await token({ scope: 'api:read', sub: 'slow-grow' });
    const pending = await startMints([t]);
    reload(500);
    const [first] = await finish(pending);
    const calls = endpoint.received();
    assert.equal(await sent(get(t)), first, 'a new token was sent after the mint in flight at the reload ended');
    assert.equal(endpoint.received(), calls, 'the token endpoint was asked again');
  });

  it('from no cache to a cache: the mint in flight at the reload is kept', { timeout: 10_000 }, async () => {
    reload(0);
    const t = await token({ scope: 'api:read', sub: 'slow-from-none' });
    const pending = await startMints([t]);
    reload(100);
    const [first] = await finish(pending);
    const calls = endpoint.received();
    assert.equal(await sent(get(t)), first, 'a new token was sent after the mint in flight at the reload ended');
    assert.equal(endpoint.received(), calls, 'the token endpoint was asked again');
  });

  it('a reload refused after compiling the route (an audit file others may write) leaves its cache as it was', {
    timeout: 10_000,
  }, async () => {
    reload(10_000);
    const t = await token({ scope: 'api:read', sub: 'slow-refused' });
    const pending = await startMints([t]);
    const dir = mkdtempSync(join(tmpdir(), 'tessera-exchange-refused-'));
    try {
      const file = join(dir, 'audit.jsonl');
      writeFileSync(file, '');
      chmodSync(file, 0o666);
      const refused = gw.served.reload(
        parse({ ...config(upstream.url, { credential: { ...credential, cache_size: 0 } }), audit: { file } }),
      );
      assert.equal(refused.ok, false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const [first] = await finish(pending);
    const calls = endpoint.received();
    assert.equal(await sent(get(t)), first, 'the refused reload emptied the cache in force');
    assert.equal(endpoint.received(), calls);
  });

  it('the new size holds: a reload to cache_size 0 caches nothing of the mints in flight', { timeout: 10_000 }, async () => {
    reload(10_000);
    const t = await token({ scope: 'api:read', sub: 'slow-to-none' });
    const pending = await startMints([t]);
    reload(0);
    const [first] = await finish(pending);
    const calls = endpoint.received();
    assert.notEqual(await sent(get(t)), first);
    assert.equal(endpoint.received(), calls + 1);
  });

  it('the new size holds: two mints in flight across a reload to cache_size 1 leave the newest cached', { timeout: 10_000 }, async () => {
    reload(10_000);
    const a = await token({ scope: 'api:read', sub: 'slow-shrink-a' });
    const b = await token({ scope: 'api:read', sub: 'slow-shrink-b' });
    const pending = await startMints([a, b]);
    reload(1);
    const [first, second] = await finish(pending);
    const calls = endpoint.received();
    assert.equal(await sent(get(b)), second, 'the newest token minted was not kept');
    assert.equal(endpoint.received(), calls);
    assert.notEqual(await sent(get(a)), first, 'a cache of size 1 kept two tokens');
    assert.equal(endpoint.received(), calls + 1);
  });
});
