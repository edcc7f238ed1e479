/**
 * `token_service.trust_proxy`: behind a proxy every client reaches the token service from the
 * proxy's address. With the proxy listed, the client's address is read from X-Forwarded-For (walked
 * right to left past the listed hops, as `gateway.trust_proxy` reads it) for the per-address buckets
 * (`auth_failure_limit`, `oidc.callback_rate_limit`, the registration limit, a public client's token
 * and revocation buckets) and the audit events' `remote_addr`. From any other peer X-Forwarded-For
 * is ignored: a caller cannot name a fresh address to get a fresh bucket.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { beginLogin, loginCallbackUrl, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, startRogueProvider } from '../helpers/oidc-upstream.ts';

const API = 'https://api.test';
const WRONG = 'wrong-secret-value-0123456789';
const BURST = 3;

async function withIssuer(trustProxy: string[] | undefined, run: (issuer: RunningIssuer) => Promise<void>): Promise<void> {
  const issuer = await startIssuer({
    clock: () => 1_800_000_000_000,
    config: {
      token_service: {
        auth_failure_limit: { enabled: true, rate: 0.001, burst: BURST },
        ...(trustProxy !== undefined ? { trust_proxy: trustProxy } : {}),
      },
    } as never,
  });
  try {
    await issuer.addClient({ id: 'app', scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
    await run(issuer);
  } finally {
    await issuer.close();
  }
}

const guess = (issuer: RunningIssuer, xff?: string) =>
  issuer.post(
    '/oauth2/token',
    { grant_type: 'client_credentials', audience: API },
    { authorization: basic('app', WRONG), ...(xff !== undefined ? { 'x-forwarded-for': xff } : {}) },
  );

async function statuses(issuer: RunningIssuer, n: number, xff?: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const res = await guess(issuer, xff);
    await res.arrayBuffer();
    out.push(res.status);
  }
  return out;
}

async function limitedAddrs(issuer: RunningIssuer, kind: string, reason: string): Promise<(string | undefined)[]> {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === kind && e.reason === reason).map((e) => e.remote_addr);
}

describe('token_service.trust_proxy at the token endpoint (auth_failure_limit)', () => {
  it('two clients behind one trusted proxy (different X-Forwarded-For) get separate buckets; the audit event names the client, not the proxy', async () => {
    await withIssuer(['127.0.0.1/32'], async (issuer) => {
      assert.deepEqual(await statuses(issuer, BURST + 1, '203.0.113.7'), [401, 401, 401, 429]);
      // The second client, behind the same proxy, has its own bucket.
      assert.deepEqual(await statuses(issuer, BURST + 1, '198.51.100.1, 203.0.113.8'), [401, 401, 401, 429]);
      assert.deepEqual(await limitedAddrs(issuer, 'token.denied', 'client_auth_failure_rate_limited'), ['203.0.113.7', '203.0.113.8']);
      await issuer.service.audit.flush();
      const denied = (await issuer.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 })).map((e) => e.remote_addr);
      assert.equal(denied.length, 2 * BURST + 2);
      assert.deepEqual([...new Set(denied)].sort(), ['203.0.113.7', '203.0.113.8'], 'every refusal names the client, not the proxy');
    });
  });

  it('walks X-Forwarded-For right to left past trusted hops only: a hop the client wrote left of the first untrusted one is not believed', async () => {
    await withIssuer(['127.0.0.1/32', '10.0.0.0/8'], async (issuer) => {
      assert.deepEqual(await statuses(issuer, BURST + 1, '192.0.2.1, 203.0.113.9, 10.1.2.3'), [401, 401, 401, 429]);
      // The client's own spoofed left-hand entry changes; the address the trusted proxy saw does not.
      assert.deepEqual(await statuses(issuer, 1, '192.0.2.99, 203.0.113.9, 10.1.2.3'), [429]);
      assert.deepEqual(await limitedAddrs(issuer, 'token.denied', 'client_auth_failure_rate_limited'), ['203.0.113.9']);
    });
  });

  it('attack: audit amplification: a hop with an unbounded IPv6 zone (fe80::1%<3 KB>) is recorded and bucketed as the address alone; another zone is the same bucket', async () => {
    await withIssuer(['127.0.0.1/32'], async (issuer) => {
      assert.deepEqual(await statuses(issuer, BURST, `fe80::1%${'a'.repeat(3000)}`), [401, 401, 401]);
      assert.deepEqual(await statuses(issuer, 1, `fe80::1%${'b'.repeat(3000)}`), [429]);
      await issuer.service.audit.flush();
      const denied = (await issuer.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 })).map((e) => e.remote_addr);
      assert.deepEqual([...new Set(denied)], ['fe80::1']);
    });
  });

  it('attack: X-Forwarded-For sent straight from a peer not in trust_proxy is ignored: a fresh forwarded address gets no fresh bucket', async () => {
    await withIssuer(['10.0.0.0/8'], async (issuer) => {
      assert.deepEqual(await statuses(issuer, BURST, '203.0.113.1'), [401, 401, 401]);
      assert.deepEqual(await statuses(issuer, 1, '203.0.113.2'), [429]);
      assert.deepEqual(await limitedAddrs(issuer, 'token.denied', 'client_auth_failure_rate_limited'), ['127.0.0.1']);
    });
  });

  it('attack: without trust_proxy (the default), X-Forwarded-For is ignored', async () => {
    await withIssuer(undefined, async (issuer) => {
      assert.deepEqual(await statuses(issuer, BURST, '203.0.113.1'), [401, 401, 401]);
      assert.deepEqual(await statuses(issuer, 1, '203.0.113.2'), [429]);
    });
  });

  it('an invalid entry is refused at load, naming token_service.trust_proxy', async () => {
    await assert.rejects(
      withIssuer(['10.0.0.0/33'], async () => {}),
      (e: Error) => /token_service\.trust_proxy\[0\]/.test(e.message),
    );
  });
});

describe('token_service.trust_proxy at the login callback (oidc.callback_rate_limit)', () => {
  let rogue: RogueUpstream;
  let trusting: RunningIssuer;
  let untrusting: RunningIssuer;

  before(async () => {
    rogue = await startRogueProvider();
    rogue.idToken = () => 'not-a-jwt';
    const oidc = { callback_rate_limit: { enabled: true, rate: 0.001, burst: 2 } };
    trusting = await startLoginIssuer(rogue.url, { oidc, tokenService: { trust_proxy: ['127.0.0.1'] } });
    untrusting = await startLoginIssuer(rogue.url, { oidc, tokenService: { trust_proxy: ['10.0.0.0/8'] } });
  });
  after(async () => {
    await trusting?.close();
    await untrusting?.close();
    await rogue?.close();
  });

  async function callback(issuer: RunningIssuer, xff: string): Promise<number> {
    const browser = new Browser();
    const p = await beginLogin(issuer, browser);
    const res = await browser.fetch(loginCallbackUrl(issuer, p.get('state') as string, 'any-code'), {
      headers: { 'x-forwarded-for': xff },
    });
    await res.arrayBuffer();
    return res.status;
  }

  it('two people behind one trusted proxy get separate callback buckets; the refusal is audited with the person’s address', async () => {
    const a = [
      await callback(trusting, '203.0.113.10'),
      await callback(trusting, '203.0.113.10'),
      await callback(trusting, '203.0.113.10'),
    ];
    assert.deepEqual(a, [403, 403, 429]);
    assert.equal(await callback(trusting, '203.0.113.11'), 403, 'another person behind the proxy is not held back');
    assert.deepEqual(await limitedAddrs(trusting, 'authorization.denied', 'login_rate_limited'), ['203.0.113.10']);
  });

  it('attack: X-Forwarded-For from a peer not in trust_proxy is ignored at the callback: a fresh forwarded address gets no fresh bucket', async () => {
    assert.deepEqual([await callback(untrusting, '203.0.113.20'), await callback(untrusting, '203.0.113.21')], [403, 403]);
    assert.equal(await callback(untrusting, '203.0.113.22'), 429);
    assert.deepEqual(await limitedAddrs(untrusting, 'authorization.denied', 'login_rate_limited'), ['127.0.0.1']);
  });
});
