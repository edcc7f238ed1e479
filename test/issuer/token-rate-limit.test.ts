/**
 * The token endpoint's per-client token bucket (`token_service.token_rate_limit`): off by default
 * (one client of a busy deployment, a gateway exchanging tokens, may rightly ask thousands a
 * second); when on, a client past its burst is refused before anything is signed or written.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type JWK, SignJWT } from 'jose';
import type { AuditKind } from '../../src/audit/event.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { makeKey } from '../helpers/tokens.ts';

const API = 'https://api.test';
const BURST = 3;

let issuer: RunningIssuer;
/** The issuer's clock (epoch ms): moved by hand to refill the buckets. */
let now = Date.now();
const c: Record<string, { id: string; secret: string }> = {};
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;
/** The private_key_jwt client `signer`'s key (RFC 7523 §2.2). */
const signerKey = makeKey('ES256', 'signer-1');

before(async () => {
  // One token every 2 s: the bucket does not refill unless the clock is moved.
  issuer = await startIssuer({
    clock: () => now,
    config: { token_service: { token_rate_limit: { enabled: true, rate: 0.5, burst: BURST } } },
  });
  for (const id of ['flooder', 'bystander']) {
    c[id] = await issuer.addClient({ id, scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
  }
  await issuer.service.registerClient({
    id: 'signer',
    scopes: ['api:read'],
    audiences: [API],
    grantTypes: ['client_credentials'],
    jwks: { keys: [signerKey.jwk] },
  });
});
after(() => issuer?.close());

const auth = (id: string) => ({ authorization: basic(id, (c[id] as { secret: string }).secret) });
const cc = (id: string, headers: Record<string, string> = {}) =>
  issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: API }, { ...auth(id), ...headers });

function proof(): Promise<string> {
  return new SignJWT({ htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: Math.floor(now / 1000), jti: crypto.randomUUID() })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: holderJwk })
    .sign(holder.privateKey);
}

/** A fresh client assertion of `signer`, dated by the issuer's clock (its own jti). */
function assertion(): Promise<string> {
  const iat = Math.floor(now / 1000);
  return new SignJWT({ iss: 'signer', sub: 'signer', aud: issuer.url, iat, exp: iat + 60, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: signerKey.kid })
    .sign(signerKey.privateKey);
}
const asSigner = (clientAssertion: string) =>
  issuer.post('/oauth2/token', {
    grant_type: 'client_credentials',
    audience: API,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: clientAssertion,
  });

/** A bogus code redeemed by the public client `spa` from `remoteAddr` (the service called directly, to set the address). */
const redeemAsPublic = (remoteAddr: string) =>
  issuer.service.token({
    params: new URLSearchParams({
      grant_type: 'authorization_code',
      client_id: 'spa',
      code: 'tac_bogus',
      code_verifier: 'v'.repeat(43),
      redirect_uri: 'http://127.0.0.1/cb',
    }),
    authorization: undefined,
    endpointUrl: `${issuer.url}/oauth2/token`,
    remoteAddr,
  });

const audit = async (kind: AuditKind) => {
  await issuer.service.audit.flush();
  return issuer.store.queryAudit({ kinds: [kind], limit: 10_000 });
};

describe('token endpoint rate limit', () => {
  it('attack: a client past its burst is refused 429 temporarily_unavailable with Retry-After and no token, audited as token.denied token_rate_limited; nothing signed or written (its DPoP proof is not spent); a wrong secret spends nothing; another client is unaffected', async () => {
    // A wrong secret, many times over: refused at client authentication, before the bucket, so
    // a caller without the client's credentials cannot lock it out.
    for (let i = 0; i < BURST + 2; i++) {
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: 'client_credentials', audience: API },
        { authorization: basic('flooder', 'wrong-secret-value-0123456789') },
      );
      assert.equal(res.status, 401);
    }
    for (let i = 0; i < BURST; i++) assert.equal((await cc('flooder')).status, 200);
    const issued = (await audit('token.issued')).length;

    const dpop = await proof();
    const res = await cc('flooder', { dpop });
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '2');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.error, 'temporarily_unavailable');
    assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description']);
    assert.equal((await audit('token.issued')).length, issued, 'no token issued');

    const e = (await audit('token.denied')).at(-1);
    assert.equal(e?.decision, 'deny');
    assert.equal(e?.reason, 'token_rate_limited');
    assert.equal(e?.client_id, 'flooder');
    assert.equal((e?.detail as { grant_type?: string } | undefined)?.grant_type, 'client_credentials');
    assert.doesNotMatch(JSON.stringify(e), new RegExp((c.flooder as { secret: string }).secret));

    // Another client's bucket is its own.
    assert.equal((await cc('bystander')).status, 200);

    // Refilled: the same proof is accepted, so the refused request recorded nothing of it.
    now += 2_000;
    const again = await cc('flooder', { dpop });
    assert.equal(again.status, 200);
    assert.equal(((await again.json()) as { token_type: string }).token_type, 'DPoP');
    assert.equal((await cc('flooder')).status, 429);
  });

  it('attack: a private_key_jwt client refused 429 does not lose its assertion (its jti is not recorded by the refused request, RFC 7523 §3), and a replayed assertion is refused whether or not the bucket is empty, without spending it', async () => {
    const first = await assertion();
    assert.equal((await asSigner(first)).status, 200);
    for (let i = 1; i < BURST; i++) assert.equal((await asSigner(await assertion())).status, 200);

    // The bucket is empty: refused 429, and its jti stays unused.
    const kept = await assertion();
    const limited = await asSigner(kept);
    assert.equal(limited.status, 429);
    assert.equal(((await limited.json()) as { error: string }).error, 'temporarily_unavailable');
    // A replayed assertion is refused too while the bucket is empty (no token).
    assert.notEqual((await asSigner(first)).status, 200, 'a replay is never answered with a token');

    // One token refilled. A replay is refused as such (invalid_client) and spends none of it …
    now += 2_000;
    const replayed = await asSigner(first);
    assert.equal(replayed.status, 401);
    assert.equal(((await replayed.json()) as { error: string }).error, 'invalid_client');
    const e = (await audit('token.denied')).at(-1);
    assert.equal(e?.reason, 'client_assertion_replayed');
    assert.equal(e?.client_id, 'signer');
    // … so the assertion refused 429 is accepted now: that refusal had not recorded its jti.
    assert.equal((await asSigner(kept)).status, 200, 'the assertion refused 429 was not burnt');
    // And it is single-use from here on.
    now += 2_000;
    const again = await asSigner(kept);
    assert.equal(again.status, 401);
    assert.equal((await audit('token.denied')).at(-1)?.reason, 'client_assertion_replayed');
  });

  it('attack: anyone naming a public client (no credentials to prove) spends only the bucket of its own address: the client’s users elsewhere keep theirs', async () => {
    await issuer.addClient({
      id: 'spa',
      public: true,
      scopes: ['api:read'],
      audiences: [API],
      grantTypes: ['authorization_code', 'refresh_token'],
      redirectUris: ['http://127.0.0.1/cb'],
    });
    const code = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: { code?: string }) => e.code,
      );
    // The flooder's bogus codes spend its bucket, then it is refused before any code is looked up.
    for (let i = 0; i < BURST; i++) assert.notEqual(await code(redeemAsPublic('203.0.113.9')), 'token_rate_limited');
    assert.equal(await code(redeemAsPublic('203.0.113.9')), 'token_rate_limited');
    // Another address of the flooder's IPv6 /64 is the same sender; another address is not.
    for (let i = 0; i < BURST; i++) assert.notEqual(await code(redeemAsPublic('2001:db8:1:2::a')), 'token_rate_limited');
    assert.equal(await code(redeemAsPublic('2001:db8:1:2::b')), 'token_rate_limited');
    assert.notEqual(await code(redeemAsPublic('198.51.100.4')), 'token_rate_limited');
  });

  it('attack: public-client senders from 10,001 addresses do not push a confidential client’s empty bucket out (it would refill at once)', async () => {
    // The bystander's bucket emptied (the clock does not move, so it stays empty).
    while ((await cc('bystander')).status === 200);
    for (let i = 0; i <= 10_000; i++) {
      await redeemAsPublic(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`).catch(() => undefined);
    }
    assert.equal((await cc('bystander')).status, 429);
  });

  it('is off by default (a benchmark drives thousands of tokens a second from one client), and enabled: false turns it off', async () => {
    const def = await startIssuer();
    const off = await startIssuer({ config: { token_service: { token_rate_limit: { enabled: false, burst: 1 } } } });
    try {
      assert.equal(def.config.token_service?.token_rate_limit.enabled, false);
      for (const running of [def, off]) {
        const client = await running.addClient({ id: 'c', scopes: ['api:read'], audiences: [API], grantTypes: ['client_credentials'] });
        for (let i = 0; i < 5; i++) {
          const res = await running.post(
            '/oauth2/token',
            { grant_type: 'client_credentials', audience: API },
            { authorization: basic('c', client.secret) },
          );
          assert.equal(res.status, 200);
        }
      }
    } finally {
      await def.close();
      await off.close();
    }
  });
});
