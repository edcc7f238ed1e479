/**
 * Mints in flight on an `exchange` route (`credential.max_in_flight`): a token service that hangs
 * past `mint_timeout` keeps its calls; the gateway answers the callers at the deadline but counts
 * each call until the issuer settles it, so hung mints cannot pile up without bound. One caller
 * holds at most two of them (the abandoned one and one new try). A late answer still valid is cached.
 * A mint refused for want of a slot is a capacity refusal (RFC 9110 §15.6.4): 503
 * `upstream_credential_busy` with Retry-After, as `introspection.max_in_flight` answers, not the 502
 * of a token service that failed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { UpstreamTokenIssuer } from '../../src/core/ports.ts';
import {
  assertRpcError,
  baseConfig,
  capturedLog,
  mcpRoute,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';
import { ACCEPT, RULES, SCOPES } from './mcp/helpers.ts';

interface HeldCall {
  readonly signal: AbortSignal | undefined;
  readonly resolve: (answer: { token: string; expiresAt: number }) => void;
}

function heldIssuer() {
  const calls: HeldCall[] = [];
  const issuer: UpstreamTokenIssuer = {
    // Ignores its signal, as a token service may: the call goes on after the deadline.
    issueForUpstream({ signal }) {
      return new Promise((resolve) => calls.push({ signal, resolve }));
    },
  };
  return { issuer, calls };
}

const answer = (name: string, ttl = 120) => ({ token: `minted-${name}`, expiresAt: Math.floor(Date.now() / 1000) + ttl });

const config = (upstreamUrl: string) => ({
  ...baseConfig(),
  gateway: {
    routes: [
      {
        id: 'llm',
        upstream: {
          url: upstreamUrl,
          credential: { type: 'exchange' as const, audience: 'https://upstream.internal', mint_timeout: '200ms', max_in_flight: 3 },
        },
        auth: 'jwt' as const,
        rules: [{ id: 'models', path: '/v1/*', scopes: ['api:read'] }],
      },
    ],
  },
});

describe('gateway: exchange mints in flight', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const held = heldIssuer();
  const log = capturedLog();
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(config(upstream.url), { upstreamTokenIssuer: held.issuer, logger: log.logger });
  });
  after(async () => {
    for (const c of held.calls) c.resolve(answer('end'));
    await gw?.close();
    await upstream?.close();
  });

  const get = (t: string) => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` }, signal: AbortSignal.timeout(5000) });

  it('attack: one caller whose mints hang holds at most two issuer calls; the next request is refused at once, and a late answer serves it', {
    timeout: 10_000,
  }, async () => {
    const t = await token();
    const calls = held.calls.length;
    assert.equal((await get(t)).status, 502);
    assert.equal((await get(t)).status, 502);
    assert.equal(held.calls.length, calls + 2, 'the second request tries anew');
    const started = performance.now();
    const third = await get(t);
    const took = performance.now() - started;
    assert.equal(third.status, 503);
    assert.equal(third.headers.get('retry-after'), '5');
    assert.ok(took < 150, `refused after ${took} ms, not at the deadline`);
    assert.equal(held.calls.length, calls + 2, 'a third hung mint was started for the caller');
    const e = (await requestEvents(gw)).at(-1)!;
    assert.equal(e.reason, 'upstream_credential_busy');
    assert.equal(e.detail?.upstream_error, 'mints_in_flight');

    // The first hung mint answers late with a valid token: cached, and the caller's next request uses it.
    held.calls[calls]!.resolve(answer('late'));
    await new Promise((r) => setTimeout(r, 30));
    const res = await get(t);
    assert.equal(res.status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-late');
    assert.equal(held.calls.length, calls + 2);
    held.calls[calls + 1]!.resolve(answer('later'));
    await new Promise((r) => setTimeout(r, 30));
  });

  it('attack: distinct callers while the token service hangs: past max_in_flight calls unsettled, a mint is refused at once, not started', {
    timeout: 10_000,
  }, async () => {
    const calls = held.calls.length;
    const logged = log.lines.length;
    const tokens = await Promise.all([1, 2, 3, 4].map((i) => token({ sub: `caller-${i}` })));
    const first = await Promise.all(tokens.slice(0, 3).map(get));
    assert.deepEqual(
      first.map((r) => r.status),
      [502, 502, 502],
    );
    assert.equal(held.calls.length, calls + 3);
    const started = performance.now();
    const fourth = await get(tokens[3]!);
    const took = performance.now() - started;
    // A capacity refusal (RFC 9110 §15.6.4): 503 with Retry-After, as introspection.max_in_flight
    // answers, not the 502 of a token service that failed.
    assert.equal(fourth.status, 503);
    assert.equal(fourth.headers.get('retry-after'), '5');
    assert.equal(fourth.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await fourth.json(), {
      error: 'temporarily_unavailable',
      error_description: 'The credential for the upstream service cannot be obtained right now; try again later.',
    });
    assert.ok(took < 150, `refused after ${took} ms`);
    assert.equal(held.calls.length, calls + 3, 'a fourth mint was started');
    const e = (await requestEvents(gw)).at(-1)!;
    assert.equal(e.reason, 'upstream_credential_busy');
    assert.equal(e.detail?.upstream_error, 'mints_in_flight');
    const lines = log.lines.slice(logged).filter((l) => l.event === 'upstream_credential_failed');
    assert.ok(lines.some((l) => l.code === 'mints_in_flight'));
    assert.ok(!JSON.stringify(log.lines).includes(tokens[3]!), 'a caller token is in the log');

    // One hung mint settles (even with an answer refused): its slot is free, the next caller mints.
    held.calls[calls]!.resolve({ token: 'bad token', expiresAt: 0 });
    await new Promise((r) => setTimeout(r, 30));
    const next = get(tokens[3]!);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(held.calls.length, calls + 4);
    held.calls.at(-1)!.resolve(answer('fourth'));
    assert.equal((await next).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-fourth');
  });
});

describe('gateway: exchange mints in flight on MCP and A2A routes', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const held = heldIssuer();
  const credential = { type: 'exchange' as const, audience: 'https://upstream.internal', mint_timeout: '200ms', max_in_flight: 1 };
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        scopes: { ...SCOPES, 'agent:invoke': {} },
        gateway: {
          routes: [
            mcpRoute(upstream.url, RULES, { upstream: { url: upstream.url, credential } }),
            {
              id: 'agent',
              match: { path_prefix: '/agent' },
              upstream: { url: upstream.url, credential },
              auth: 'jwt',
              rules: [{ scopes: ['agent:invoke'] }],
              a2a: { token_url: 'https://issuer.test/oauth2/token' },
            },
          ],
        },
      },
      { upstreamTokenIssuer: held.issuer },
    );
  });
  after(async () => {
    for (const c of held.calls) c.resolve(answer('end'));
    await gw?.close();
    await upstream?.close();
  });

  const rpc = async (path: string, sub: string, scope: string, id: number, method: string) =>
    fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${await token({ sub, scope })}` },
      body: JSON.stringify({ jsonrpc: '2.0', id, method, params: {} }),
      signal: AbortSignal.timeout(5000),
    });

  it('attack: an MCP call refused for want of a mint slot is 503 with Retry-After, still a JSON-RPC -32603 error echoing its id', {
    timeout: 10_000,
  }, async () => {
    const mcp = (sub: string, id: number) => rpc('/mcp', sub, 'mcp:use echo:use', id, 'tools/list');
    // The route's one slot is held by a mint that hangs (answered 502 at mint_timeout).
    await assertRpcError(await mcp('holder', 1), {
      status: 502,
      id: 1,
      code: -32603,
      message: 'The credential for the upstream service could not be obtained.',
    });
    const res = await mcp('cold', 2);
    assert.equal(res.headers.get('retry-after'), '5');
    await assertRpcError(res, {
      status: 503,
      id: 2,
      code: -32603,
      message: 'The credential for the upstream service cannot be obtained right now; try again later.',
    });
    const e = (await requestEvents(gw)).at(-1)!;
    assert.equal(e.reason, 'upstream_credential_busy');
    assert.equal(e.detail?.upstream_error, 'mints_in_flight');
  });

  it("attack: an A2A call refused for want of a mint slot is 503 with Retry-After, in the form of the route's other credential refusals (decided before the body is read: the OAuth JSON, not JSON-RPC)", {
    timeout: 10_000,
  }, async () => {
    const a2a = (sub: string, id: number) => rpc('/agent', sub, 'agent:invoke', id, 'message/send');
    const first = await a2a('holder', 1);
    assert.equal(first.status, 502);
    assert.equal(((await first.json()) as { error: string }).error, 'bad_gateway');
    const res = await a2a('cold', 2);
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '5');
    assert.deepEqual(await res.json(), {
      error: 'temporarily_unavailable',
      error_description: 'The credential for the upstream service cannot be obtained right now; try again later.',
    });
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'upstream_credential_busy');
  });
});
