/**
 * The RFC 7009 endpoint's per-client token bucket (`token_service.revocation_rate_limit`): each
 * access token a client revokes appends a revocation-log entry every instance keeps in memory
 * until the token expires, so a client minting and revoking its own tokens at request rate would
 * grow every instance's memory at that rate.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { makeKey } from '../helpers/tokens.ts';

const API = 'https://api.test';
const BURST = 3;

let issuer: RunningIssuer;
const c: Record<string, { id: string; secret: string }> = {};

before(async () => {
  // A slow refill: the bucket does not fill again while the test runs.
  issuer = await startIssuer({ config: { token_service: { revocation_rate_limit: { rate: 0.001, burst: BURST } } } });
  for (const id of ['flooder', 'bystander']) {
    c[id] = await issuer.addClient({ id, scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
  }
});
after(() => issuer?.close());

const auth = (id: string) => ({ authorization: basic(id, (c[id] as { secret: string }).secret) });

async function cc(id: string): Promise<string> {
  const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: API }, auth(id));
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

const logSize = async () => (await issuer.store.revocationsSince(0, Math.floor(Date.now() / 1000), 1_000_000)).length;

describe('revocation endpoint rate limit', () => {
  it('attack: a client minting and revoking its own tokens past its burst is refused 429 with Retry-After, nothing appended to the revocation log, audited as revocation.denied revocation_rate_limited; a wrong secret spends nothing; another client is unaffected', async () => {
    // A wrong secret for the flooder, many times over: refused at client authentication, before
    // the bucket, so an unauthenticated caller cannot lock the client out.
    for (let i = 0; i < BURST + 2; i++) {
      const res = await issuer.post('/oauth2/revoke', { token: 'x' }, { authorization: basic('flooder', 'wrong-secret-value-0123456789') });
      assert.equal(res.status, 401);
    }
    const tokens = await Promise.all(Array.from({ length: BURST + 1 }, () => cc('flooder')));
    for (const token of tokens.slice(0, BURST)) {
      assert.equal((await issuer.post('/oauth2/revoke', { token }, auth('flooder'))).status, 200);
    }
    const before = await logSize();
    const last = tokens[BURST] as string;
    const res = await issuer.post('/oauth2/revoke', { token: last }, auth('flooder'));
    assert.equal(res.status, 429);
    assert.match(res.headers.get('retry-after') ?? '', /^[1-9][0-9]*$/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = (await res.json()) as { error: string; error_description: string };
    assert.equal(body.error, 'temporarily_unavailable');
    assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description']);
    assert.equal(await logSize(), before, 'nothing appended');
    // The refused token still stands.
    const intro = await issuer.post('/oauth2/introspect', { token: last }, auth('flooder'));
    assert.equal(((await intro.json()) as { active: boolean }).active, true);

    await issuer.service.audit.flush();
    const e = (await issuer.store.queryAudit({ kinds: ['revocation.denied'], limit: 10_000 })).at(-1);
    assert.equal(e?.decision, 'deny');
    assert.equal(e?.reason, 'revocation_rate_limited');
    assert.equal(e?.client_id, 'flooder');
    assert.doesNotMatch(JSON.stringify(e), new RegExp(last.slice(-20)));

    // Another client's bucket is its own.
    const other = await cc('bystander');
    assert.equal((await issuer.post('/oauth2/revoke', { token: other }, auth('bystander'))).status, 200);
    assert.equal(await logSize(), before + 1);

    // The operator is not limited: the admin path (the CLI's too) revokes the flooder's token.
    assert.ok(await issuer.service.revokeAccessToken(last, 'ops'));
  });

  it('attack: anyone naming a public client (no credential to authenticate it) cannot drain its bucket for all its users: a flood from one address is refused 429, a user at another address still revokes', async () => {
    await issuer.service.registerClient({
      id: 'spa',
      public: true,
      scopes: ['api:read'],
      audiences: [API],
      grantTypes: ['authorization_code', 'refresh_token'],
      redirectUris: ['http://127.0.0.1/cb'],
    });
    // The flood: client_id=spa is all it takes, from anywhere.
    for (let i = 0; i < BURST; i++) {
      assert.equal((await issuer.post('/oauth2/revoke', { token: 'junk', client_id: 'spa' })).status, 200);
    }
    const flooded = await issuer.post('/oauth2/revoke', { token: 'junk', client_id: 'spa' });
    assert.equal(flooded.status, 429, 'the flooding address is limited');
    // A user of the app signing out, from another address: its token is revoked.
    const { access_token } = await issuer.service.mint({ clientId: 'spa', subject: 'alice', ttl: 600 });
    const signOut = () =>
      issuer.service.revoke({
        params: new URLSearchParams({ token: access_token, client_id: 'spa' }),
        authorization: undefined,
        endpointUrl: `${issuer.url}/oauth2/revoke`,
        remoteAddr: '203.0.113.7',
      });
    await assert.doesNotReject(signOut());
    const intro = await issuer.post('/oauth2/introspect', { token: access_token }, auth('bystander'));
    assert.deepEqual(await intro.json(), { active: false });
  });

  it('is on by default, and can be turned off', async () => {
    const on = await startIssuer();
    const off = await startIssuer({ config: { token_service: { revocation_rate_limit: { enabled: false, burst: 1 } } } });
    try {
      assert.deepEqual(on.config.token_service?.revocation_rate_limit, { enabled: true, rate: 10, burst: 100 });
      const client = await off.addClient({ id: 'c', scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
      for (let i = 0; i < 3; i++) {
        const res = await off.post('/oauth2/revoke', { token: 'no-such-token' }, { authorization: basic('c', client.secret) });
        assert.equal(res.status, 200);
      }
    } finally {
      await on.close();
      await off.close();
    }
  });

  it('attack: a private_key_jwt client refused 429 does not lose its assertion (its jti is not recorded by the refused request), and a replayed assertion spends none of the bucket', async () => {
    let now = Date.now();
    const key = makeKey('ES256', 'revoker-1');
    const limited = await startIssuer({
      clock: () => now,
      config: { token_service: { revocation_rate_limit: { rate: 0.5, burst: 1 } } },
    });
    try {
      await limited.service.registerClient({
        id: 'revoker',
        scopes: ['api:read'],
        audiences: [API],
        grantTypes: ['client_credentials'],
        jwks: { keys: [key.jwk] },
      });
      const assertion = () => {
        const iat = Math.floor(now / 1000);
        return new SignJWT({ iss: 'revoker', sub: 'revoker', aud: limited.url, iat, exp: iat + 60, jti: crypto.randomUUID() })
          .setProtectedHeader({ alg: 'ES256', kid: key.kid })
          .sign(key.privateKey);
      };
      const revoke = (clientAssertion: string) =>
        limited.post('/oauth2/revoke', {
          token: 'no-such-token',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: clientAssertion,
        });
      const first = await assertion();
      assert.equal((await revoke(first)).status, 200);
      const kept = await assertion();
      assert.equal((await revoke(kept)).status, 429);
      now += 2_000;
      assert.equal((await revoke(first)).status, 401, 'a replay is refused');
      assert.equal((await revoke(kept)).status, 200, 'the assertion refused 429 was not burnt, and the replay spent no token');
      now += 2_000;
      assert.equal((await revoke(kept)).status, 401, 'single-use from here on');
    } finally {
      await limited.close();
    }
  });
});
