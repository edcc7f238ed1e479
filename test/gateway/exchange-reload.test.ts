/**
 * `credential: exchange` across a configuration reload: a route whose credential is unchanged (the
 * same id, audience, `scopes`, `max_ttl`, `refresh_before`, token service) keeps its minted tokens
 * and its mints in flight, so a reload that changes something else costs no caller a mint (and no
 * grant), and a busy route no storm of mints past `max_in_flight`. A token is reused only for what
 * it was minted for: another audience, other scopes (configured, a rule's, or the caller's as the
 * catalogue expands them), another lifetime, or a route removed and added again mint anew.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { UpstreamTokenIssuer } from '../../src/core/ports.ts';
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
