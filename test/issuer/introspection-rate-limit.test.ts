/**
 * The RFC 7662 endpoint's limits (`token_service.introspection_rate_limit`): a token bucket per
 * authenticated client, and one of failed client authentications per connecting address
 * (`token_service.auth_failure_limit`, shared with the token and revocation endpoints). Each
 * introspection reads the store and writes an audit event, so without them one client (or anyone,
 * with wrong credentials) could grow the audit trail and load the store at its request rate. A
 * refusal of either is audited once per throttled window, not once per request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const API = 'https://api.test';
const BURST = 3;

let now = Date.now();
let issuer: RunningIssuer;
const c: Record<string, { id: string; secret: string }> = {};

before(async () => {
  issuer = await startIssuer({
    clock: () => now,
    config: {
      token_service: {
        introspection_rate_limit: { rate: 1, burst: BURST },
        auth_failure_limit: { enabled: true, rate: 1, burst: BURST },
      },
    },
  });
  for (const id of ['rs', 'bystander', 'guessed']) c[id] = await issuer.addClient({ id, scopes: [], audiences: [API] });
});
after(() => issuer?.close());

const auth = (id: string) => ({ authorization: basic(id, (c[id] as { secret: string }).secret) });

async function denials(reason: string) {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ kinds: ['introspection.denied'], limit: 10_000 })).filter((e) => e.reason === reason);
}

describe('introspection endpoint rate limit', () => {
  it('attack: introspection flood by one client past its burst is refused 429 temporarily_unavailable with Retry-After, audited as introspection.denied introspection_rate_limited once per throttled window (not per request); another client is unaffected', async () => {
    const { access_token } = await issuer.service.mint({ clientId: 'rs', subject: 'alice', ttl: 600 });
    const introspect = (as = 'rs') => issuer.post('/oauth2/introspect', { token: access_token }, auth(as));
    for (let i = 0; i < BURST; i++) {
      const res = await introspect();
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { active: boolean }).active, true);
    }
    for (let i = 0; i < 5; i++) {
      const res = await introspect();
      assert.equal(res.status, 429);
      assert.match(res.headers.get('retry-after') ?? '', /^[1-9][0-9]*$/);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const body = (await res.json()) as { error: string; error_description: string };
      assert.equal(body.error, 'temporarily_unavailable', 'as revocation_rate_limited answers');
      assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description']);
    }
    const first = await denials('introspection_rate_limited');
    assert.equal(first.length, 1, 'five refusals in one window: one event');
    assert.equal(first[0]?.decision, 'deny');
    assert.equal(first[0]?.client_id, 'rs');
    assert.equal(first[0]?.remote_addr, '127.0.0.1');
    assert.doesNotMatch(JSON.stringify(first), new RegExp(access_token.slice(-20)));

    // Another client's bucket is its own.
    assert.equal((await introspect('bystander')).status, 200);

    // The window over (one token refilled): one more answer, then a new window, audited with the
    // refusals the last one left unaudited.
    now += 1_000;
    assert.equal((await introspect()).status, 200);
    assert.equal((await introspect()).status, 429);
    const second = await denials('introspection_rate_limited');
    assert.equal(second.length, 2);
    assert.equal(second[1]?.detail?.refusals_not_audited, 4);
  });

  it('attack: introspection flood of guessed client secrets from one address is refused 429 client_auth_failure_rate_limited past its burst before any secret is checked (the right one too: no oracle), audited once per window; another address is unaffected', async () => {
    const wrong = { authorization: basic('guessed', 'wrong-secret-value-0123456789') };
    for (let i = 0; i < BURST; i++) {
      assert.equal((await issuer.post('/oauth2/introspect', { token: 'x' }, wrong)).status, 401);
    }
    for (let i = 0; i < 4; i++) {
      const res = await issuer.post('/oauth2/introspect', { token: 'x' }, wrong);
      assert.equal(res.status, 429);
      assert.match(res.headers.get('retry-after') ?? '', /^[1-9][0-9]*$/);
      assert.equal(((await res.json()) as { error: string }).error, 'temporarily_unavailable');
    }
    // The right secret from the flooding address is refused as well: a guess that happened to be
    // right is not told apart from a wrong one.
    assert.equal((await issuer.post('/oauth2/introspect', { token: 'x' }, auth('guessed'))).status, 429);
    const events = await denials('client_auth_failure_rate_limited');
    assert.equal(events.length, 1, 'five refusals in one window: one event');
    assert.equal(events[0]?.client_id, undefined, 'no client authenticated');
    assert.equal(events[0]?.remote_addr, '127.0.0.1');
    assert.doesNotMatch(JSON.stringify(events), /wrong-secret/);

    // The client itself, from another address, is not locked out.
    const answer = await issuer.service.introspect({
      params: new URLSearchParams({ token: 'x' }),
      authorization: auth('guessed').authorization,
      endpointUrl: `${issuer.url}/oauth2/introspect`,
      remoteAddr: '203.0.113.7',
    });
    assert.deepEqual(answer, { active: false });

    // Refilled: a request that authenticates gives back the token it reserved.
    now += 1_000;
    assert.equal((await issuer.post('/oauth2/introspect', { token: 'x' }, auth('guessed'))).status, 200);
    assert.equal((await issuer.post('/oauth2/introspect', { token: 'x' }, auth('guessed'))).status, 200);
  });

  it('a client over its own bucket, at an address that failed lately, spends none of the address’s failures', async () => {
    const limited = await startIssuer({
      clock: () => now,
      config: {
        token_service: {
          introspection_rate_limit: { rate: 0.001, burst: 1 },
          auth_failure_limit: { enabled: true, rate: 0.001, burst: 2 },
        },
      },
    });
    try {
      const rs = await limited.addClient({ id: 'rs', scopes: [], audiences: [API] });
      const post = (secret: string) => limited.post('/oauth2/introspect', { token: 'x' }, { authorization: basic('rs', secret) });
      assert.equal((await post('guess')).status, 401, 'one failure: the address has a bucket, one failure left');
      assert.equal((await post(rs.secret)).status, 200);
      for (let i = 0; i < 3; i++) {
        const res = await post(rs.secret);
        assert.equal(res.status, 429);
        assert.equal(
          ((await res.json()) as { error_description: string }).error_description,
          'Too many introspection requests from this client; try again later.',
        );
      }
      assert.equal((await post('guess')).status, 401, 'the failure left is still there');
      assert.equal((await post('guess')).status, 429);
    } finally {
      await limited.close();
    }
  });

  it('attack: introspection flood of failed authentications is bounded once auth_failure_limit is on (off by default: behind a proxy every client is one address); the per-client limit is on by default; both can be turned off', async () => {
    const on = await startIssuer({ config: { token_service: { auth_failure_limit: { enabled: true } } } });
    const off = await startIssuer({
      config: {
        token_service: { introspection_rate_limit: { enabled: false, burst: 1 }, auth_failure_limit: { enabled: false, burst: 1 } },
      },
    });
    try {
      assert.deepEqual(on.config.token_service?.introspection_rate_limit, { enabled: true, rate: 100, burst: 1000 });
      assert.deepEqual(on.config.token_service?.auth_failure_limit, { enabled: true, rate: 1, burst: 20 });
      const plain = await startIssuer();
      try {
        assert.deepEqual(plain.config.token_service?.introspection_rate_limit, { enabled: true, rate: 100, burst: 1000 });
        assert.deepEqual(plain.config.token_service?.auth_failure_limit, { enabled: false, rate: 1, burst: 20 });
      } finally {
        await plain.close();
      }
      const statuses: number[] = [];
      for (let i = 0; i < 21; i++) {
        statuses.push((await on.post('/oauth2/introspect', { token: 'x' }, { authorization: basic('nobody', 'guess') })).status);
      }
      assert.deepEqual(statuses, [...Array<number>(20).fill(401), 429]);
      const client = await off.addClient({ id: 'c', scopes: [], audiences: [API] });
      for (let i = 0; i < 3; i++) {
        assert.equal((await off.post('/oauth2/introspect', { token: 'x' }, { authorization: basic('c', client.secret) })).status, 200);
        assert.equal((await off.post('/oauth2/introspect', { token: 'x' }, { authorization: basic('c', 'guess') })).status, 401);
      }
    } finally {
      await on.close();
      await off.close();
    }
  });
});
