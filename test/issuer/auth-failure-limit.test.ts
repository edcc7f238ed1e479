/**
 * The per-address bucket of failed client authentications (`token_service.auth_failure_limit`),
 * one for the token, revocation and introspection endpoints together: a flood of guessed client
 * secrets from one address gets about one guess a second wherever it sends them, and is refused
 * before any secret is checked once the bucket is empty (the right one too: no oracle). A request
 * that authenticates, a public client's included, spends nothing of it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditKind } from '../../src/audit/event.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const API = 'https://api.test';
/** The default burst. */
const BURST = 20;
const WRONG = 'wrong-secret-value-0123456789';

/** An issuer whose clock stands still (no bucket refills unless `tick` moves it), with a confidential client `app`. */
async function withIssuer(
  run: (t: {
    issuer: RunningIssuer;
    app: { id: string; secret: string };
    tick: (ms: number) => void;
    denials: (kind: AuditKind, reason: string) => Promise<{ client_id?: string; remote_addr?: string; detail?: Record<string, unknown> }[]>;
  }) => Promise<void>,
  config: Record<string, unknown> = {},
): Promise<void> {
  let now = Date.now();
  // Off by default (every client behind a proxy shares one address): these tests turn it on.
  const issuer = await startIssuer({
    clock: () => now,
    config: { token_service: { auth_failure_limit: { enabled: true }, ...config } } as never,
  });
  try {
    const app = await issuer.addClient({ id: 'app', scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
    await run({
      issuer,
      app,
      tick: (ms) => {
        now += ms;
      },
      denials: async (kind, reason) => {
        await issuer.service.audit.flush();
        return (await issuer.store.queryAudit({ kinds: [kind], limit: 10_000 })).filter((e) => e.reason === reason) as never;
      },
    });
  } finally {
    await issuer.close();
  }
}

const cc = (issuer: RunningIssuer, secret: string) =>
  issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: API }, { authorization: basic('app', secret) });
const revoke = (issuer: RunningIssuer, secret: string) =>
  issuer.post('/oauth2/revoke', { token: 'x' }, { authorization: basic('app', secret) });
const introspect = (issuer: RunningIssuer, secret: string) =>
  issuer.post('/oauth2/introspect', { token: 'x' }, { authorization: basic('app', secret) });

async function expectThrottled(res: Response): Promise<void> {
  assert.equal(res.status, 429);
  assert.match(res.headers.get('retry-after') ?? '', /^[1-9][0-9]*$/);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  const body = (await res.json()) as { error: string; error_description: string };
  assert.equal(body.error, 'temporarily_unavailable');
  assert.equal(body.error_description, 'Too many failed client authentications from this address; try again later.');
}

describe('failed client authentications per address (auth_failure_limit)', () => {
  it('attack: a flood of guessed client secrets at /oauth2/token from one address is refused 429 client_auth_failure_rate_limited past the default burst, before any secret is checked (the right one too: no oracle), audited token.denied once per throttled window; another address is unaffected', async () => {
    await withIssuer(async ({ issuer, app, tick, denials }) => {
      const statuses: number[] = [];
      for (let i = 0; i < BURST + 1; i++) statuses.push((await cc(issuer, WRONG)).status);
      assert.deepEqual(statuses, [...Array<number>(BURST).fill(401), 429]);
      for (let i = 0; i < 3; i++) await expectThrottled(await cc(issuer, WRONG));
      // A guess that happens to be right is not told apart from a wrong one.
      await expectThrottled(await cc(issuer, app.secret));
      const events = await denials('token.denied', 'client_auth_failure_rate_limited');
      assert.equal(events.length, 1, 'five refusals in one window: one event');
      assert.equal(events[0]?.client_id, undefined, 'no client authenticated');
      assert.equal(events[0]?.remote_addr, '127.0.0.1');
      assert.equal((await denials('token.denied', 'client_secret_mismatch')).length, BURST);
      assert.doesNotMatch(JSON.stringify(events), /wrong-secret|Basic /);

      // The client itself, from another address, is not locked out.
      const answer = await issuer.service.token({
        params: new URLSearchParams({ grant_type: 'client_credentials', audience: API }),
        authorization: basic('app', app.secret),
        endpointUrl: `${issuer.url}/oauth2/token`,
        remoteAddr: '203.0.113.7',
      });
      assert.ok(answer.access_token);

      // One failure regained a second: the right secret then gets its token and gives back the
      // failure it held, so the next request is served too; the next refusal is audited with the
      // ones the last window left unaudited.
      tick(1_000);
      assert.equal((await cc(issuer, app.secret)).status, 200);
      assert.equal((await cc(issuer, app.secret)).status, 200);
      assert.equal((await cc(issuer, WRONG)).status, 401);
      await expectThrottled(await cc(issuer, WRONG));
      const later = await denials('token.denied', 'client_auth_failure_rate_limited');
      assert.equal(later.length, 2);
      assert.equal(later[1]?.detail?.refusals_not_audited, 4);
    });
  });

  it('attack: a flood of guessed client secrets at /oauth2/revoke from one address is refused 429 past the default burst (the right secret too), audited revocation.denied once per throttled window', async () => {
    await withIssuer(async ({ issuer, app, denials }) => {
      const statuses: number[] = [];
      for (let i = 0; i < BURST + 1; i++) statuses.push((await revoke(issuer, WRONG)).status);
      assert.deepEqual(statuses, [...Array<number>(BURST).fill(401), 429]);
      await expectThrottled(await revoke(issuer, WRONG));
      await expectThrottled(await revoke(issuer, app.secret));
      const events = await denials('revocation.denied', 'client_auth_failure_rate_limited');
      assert.equal(events.length, 1);
      assert.equal(events[0]?.remote_addr, '127.0.0.1');
    });
  });

  it('attack: an address’s failures are counted across /oauth2/token, /oauth2/revoke and /oauth2/introspect together (guessing moved from one endpoint to another gets no fresh burst)', async () => {
    await withIssuer(async ({ issuer, app }) => {
      for (let i = 0; i < 7; i++) assert.equal((await cc(issuer, WRONG)).status, 401);
      for (let i = 0; i < 7; i++) assert.equal((await revoke(issuer, WRONG)).status, 401);
      for (let i = 0; i < 6; i++) assert.equal((await introspect(issuer, WRONG)).status, 401);
      for (const send of [cc, revoke, introspect]) {
        await expectThrottled(await send(issuer, WRONG));
        await expectThrottled(await send(issuer, app.secret));
      }
    });
  });

  it('a public client’s token requests and revocations spend none of the address’s failures, even refused (a code that does not redeem), at an address with one failure left', async () => {
    await withIssuer(async ({ issuer }) => {
      await issuer.addClient({
        id: 'spa',
        public: true,
        scopes: ['api:read'],
        audiences: [API],
        grantTypes: ['authorization_code', 'refresh_token'],
        redirectUris: ['http://127.0.0.1/cb'],
      });
      for (let i = 0; i < BURST - 1; i++) assert.equal((await cc(issuer, WRONG)).status, 401);
      for (let i = 0; i < 2 * BURST; i++) {
        const redeemed = await issuer.post('/oauth2/token', {
          grant_type: 'authorization_code',
          client_id: 'spa',
          code: 'tac_bogus',
          code_verifier: 'v'.repeat(43),
          redirect_uri: 'http://127.0.0.1/cb',
        });
        assert.equal(redeemed.status, 400);
        assert.equal(((await redeemed.json()) as { error: string }).error, 'invalid_grant');
        const refreshed = await issuer.post('/oauth2/token', { grant_type: 'refresh_token', client_id: 'spa', refresh_token: 'x' });
        assert.equal(refreshed.status, 400);
        assert.equal((await issuer.post('/oauth2/revoke', { client_id: 'spa', token: 'x' })).status, 200);
      }
      assert.equal((await cc(issuer, WRONG)).status, 401, 'the failure left is still there');
      await expectThrottled(await cc(issuer, WRONG));
      // Empty, the address is refused whoever it names: the public client too.
      const res = await issuer.post('/oauth2/revoke', { client_id: 'spa', token: 'x' });
      await expectThrottled(res);
    });
  });

  it('is off by default (rate 1, burst 20 once `enabled: true`), and `enabled: false` turns it off at every endpoint', async () => {
    const plain = await startIssuer({});
    try {
      assert.deepEqual(plain.config.token_service?.auth_failure_limit, { enabled: false, rate: 1, burst: 20 });
      const app = await plain.addClient({ id: 'app', scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
      for (let i = 0; i < BURST + 5; i++) assert.equal((await cc(plain, WRONG)).status, 401);
      assert.equal((await cc(plain, app.secret)).status, 200);
    } finally {
      await plain.close();
    }
    await withIssuer(
      async ({ issuer, app }) => {
        for (let i = 0; i < 3; i++) {
          assert.equal((await cc(issuer, WRONG)).status, 401);
          assert.equal((await revoke(issuer, WRONG)).status, 401);
          assert.equal((await introspect(issuer, WRONG)).status, 401);
        }
        assert.equal((await cc(issuer, app.secret)).status, 200);
      },
      { auth_failure_limit: { enabled: false, burst: 1 } },
    );
  });
});
