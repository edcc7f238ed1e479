/**
 * The deadline of an exchange mint (`credential.mint_timeout`): a custom UpstreamTokenIssuer that
 * never answers, or answers late, does not hold the caller's request open. The caller gets the
 * answer of a token service that is down (502 `upstream_credential_unavailable`), the audit event
 * says `detail.upstream_error: mint_timeout`, one log line says so without any token, and the
 * upstream is sent nothing. A late answer still valid is cached for the caller's next request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { UpstreamTokenIssuer } from '../../src/core/ports.ts';
import { until } from '../helpers/net.ts';
import {
  baseConfig,
  capturedLog,
  parse,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

const UPSTREAM_AUD = 'https://upstream.internal';
const UNAVAILABLE = { error: 'bad_gateway', error_description: 'The credential for the upstream service could not be obtained.' };

interface HeldCall {
  readonly signal: AbortSignal | undefined;
  readonly resolve: (answer: { token: string; expiresAt: number }) => void;
}

/** A custom UpstreamTokenIssuer that answers only when the test says so (or never). */
function heldIssuer() {
  const calls: HeldCall[] = [];
  const issuer: UpstreamTokenIssuer = {
    issueForUpstream({ signal }) {
      return new Promise((resolve) => calls.push({ signal, resolve }));
    },
  };
  return { issuer, calls };
}

const answer = (name: string, ttl = 120) => ({ token: `minted-${name}`, expiresAt: Math.floor(Date.now() / 1000) + ttl });

const config = (upstreamUrl: string, mintTimeout: string | number | undefined) => ({
  ...baseConfig(),
  gateway: {
    routes: [
      {
        id: 'llm',
        upstream: {
          url: upstreamUrl,
          credential: {
            type: 'exchange' as const,
            audience: UPSTREAM_AUD,
            ...(mintTimeout !== undefined ? { mint_timeout: mintTimeout } : {}),
          },
        },
        auth: 'jwt' as const,
        rules: [{ id: 'models', path: '/v1/*', scopes: ['api:read'] }],
      },
    ],
  },
});

/** An upstream that also counts the connections it was opened: "nothing sent" means none. */
async function countingUpstream(): Promise<Upstream & { connections: () => number }> {
  const upstream = await startUpstream();
  let connections = 0;
  upstream.server.on('connection', () => connections++);
  return Object.assign(upstream, { connections: () => connections });
}

describe('gateway: an exchange mint past its deadline', () => {
  let upstream: Awaited<ReturnType<typeof countingUpstream>>;
  let gw: TestGateway;
  const held = heldIssuer();
  const log = capturedLog();
  before(async () => {
    upstream = await countingUpstream();
    gw = await startGateway(config(upstream.url, '300ms'), { upstreamTokenIssuer: held.issuer, logger: log.logger });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const get = (t: string) => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` }, signal: AbortSignal.timeout(5000) });

  it('attack: an issuer that never answers does not hold the request open: 502 upstream_credential_unavailable, mint_timeout audited and logged, nothing upstream', {
    timeout: 10_000,
  }, async () => {
    const t = await token();
    const calls = held.calls.length;
    const logged = log.lines.length;
    const events = (await requestEvents(gw)).length;
    const started = performance.now();
    const res = await get(t);
    const took = performance.now() - started;
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.deepEqual(await res.json(), UNAVAILABLE);
    assert.ok(took >= 290 && took < 3000, `answered after ${took} ms`);
    assert.equal(held.calls.length, calls + 1);
    assert.equal(held.calls.at(-1)!.signal?.aborted, true, "the issuer's signal is aborted at the deadline");

    assert.equal(upstream.seen.length, 0, 'the upstream was sent a request');
    assert.equal(upstream.connections(), 0, 'the upstream was opened a connection');

    const all = await requestEvents(gw);
    assert.equal(all.length, events + 1, 'one audit event');
    const e = all.at(-1)!;
    assert.equal(e.decision, 'deny');
    assert.equal(e.reason, 'upstream_credential_unavailable');
    assert.equal(e.detail?.upstream_error, 'mint_timeout');
    assert.equal(e.detail?.rule, 'models');

    await until(() => log.lines.slice(logged).some((l) => l.event === 'upstream_credential_failed'));
    const lines = log.lines.slice(logged).filter((l) => l.event === 'upstream_credential_failed');
    assert.deepEqual(
      lines.map((l) => [l.route, l.error, l.code]),
      [['llm', 'ExchangeMintTimeout', 'mint_timeout']],
    );
    assert.ok(!JSON.stringify(log.lines).includes(t), 'the caller token is in the log');
    assert.ok(!JSON.stringify(log.lines).includes('Bearer'), 'a credential is in the log');
  });

  it('concurrent requests sharing one hung mint each get the deadline; the next request after it mints anew', {
    timeout: 10_000,
  }, async () => {
    const t = await token();
    const calls = held.calls.length;
    const events = (await requestEvents(gw)).length;
    const started = performance.now();
    const results = await Promise.all([get(t), get(t), get(t)]);
    const took = performance.now() - started;
    assert.deepEqual(
      results.map((r) => r.status),
      [502, 502, 502],
    );
    assert.ok(took < 3000, `answered after ${took} ms`);
    assert.equal(held.calls.length, calls + 1, 'one mint shared');
    const all = (await requestEvents(gw)).slice(events);
    assert.deepEqual(
      all.map((e) => [e.reason, e.detail?.upstream_error]),
      Array.from({ length: 3 }, () => ['upstream_credential_unavailable', 'mint_timeout']),
    );

    // The hung mint is not waited on again: the next request asks the issuer anew, and gets an answer.
    const next = get(t);
    await until(() => held.calls.length === calls + 2);
    held.calls.at(-1)!.resolve(answer('fresh'));
    assert.equal((await next).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-fresh');
  });

  it('a late answer still valid is cached for the caller’s next request (no new mint)', { timeout: 10_000 }, async () => {
    const t = await token();
    const calls = held.calls.length;
    assert.equal((await get(t)).status, 502);
    assert.equal(held.calls.length, calls + 1);
    const n = upstream.seen.length;
    held.calls.at(-1)!.resolve(answer('late'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(upstream.seen.length, n, 'the late answer was sent upstream for the request already answered');
    assert.equal((await get(t)).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-late');
    assert.equal(held.calls.length, calls + 1);
  });

  it('attack: a late answer that is not valid (outliving the caller) is not cached', { timeout: 10_000 }, async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ exp: now + 60 });
    const calls = held.calls.length;
    assert.equal((await get(t)).status, 502);
    held.calls.at(-1)!.resolve({ token: 'minted-outliving', expiresAt: now + 3600 });
    await new Promise((r) => setTimeout(r, 50));
    const next = get(t);
    await until(() => held.calls.length === calls + 2);
    held.calls.at(-1)!.resolve(answer('valid', 30));
    assert.equal((await next).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-valid');
  });

  it('a late answer does not take the place of a newer mint in flight (requests keep sharing it)', { timeout: 10_000 }, async () => {
    const t = await token();
    const calls = held.calls.length;
    assert.equal((await get(t)).status, 502);
    const first = held.calls.at(-1)!;
    // A second mint for the same caller is under way when the first answers, too late and expired.
    const second = get(t);
    await until(() => held.calls.length === calls + 2);
    first.resolve({ token: 'minted-stale', expiresAt: Math.floor(Date.now() / 1000) - 1 });
    await new Promise((r) => setTimeout(r, 50));
    const third = get(t);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(held.calls.length, calls + 2, 'the third request started a mint of its own');
    held.calls.at(-1)!.resolve(answer('second'));
    assert.deepEqual([(await second).status, (await third).status], [200, 200]);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer minted-second');
  });
});

describe('gateway: a reload that changes the mint deadline', () => {
  it('applies to the next request', { timeout: 10_000 }, async () => {
    const upstream = await startUpstream();
    /** Answers each mint after 500 ms. */
    let mints = 0;
    const issuer: UpstreamTokenIssuer = {
      issueForUpstream() {
        mints++;
        return new Promise((resolve) => setTimeout(() => resolve(answer(`slow-${mints}`)), 500));
      },
    };
    const gw = await startGateway(config(upstream.url, '200ms'), { upstreamTokenIssuer: issuer });
    try {
      const t = await token();
      const get = () => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${t}` }, signal: AbortSignal.timeout(5000) });
      assert.equal((await get()).status, 502);
      assert.equal((await requestEvents(gw)).at(-1)!.detail?.upstream_error, 'mint_timeout');
      assert.equal(gw.served.reload(parse(config(upstream.url, '2s'))).ok, true);
      const res = await get();
      assert.equal(res.status, 200);
      assert.equal(upstream.seen.length, 1);
      assert.equal(upstream.seen[0]!.headers.authorization, 'Bearer minted-slow-2');
      assert.equal(gw.served.reload(parse(config(upstream.url, '200ms'))).ok, true);
      const other = await token();
      assert.equal(
        (await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${other}` }, signal: AbortSignal.timeout(5000) })).status,
        502,
      );
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
