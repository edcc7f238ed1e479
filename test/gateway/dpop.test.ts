/**
 * DPoP-bound tokens through the gateway: the proof is checked against the URL the caller used
 * (htu), a bound token sent as Bearer is refused, and neither the token nor the proof reaches the
 * upstream.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import { baseConfig, parse, startGateway, startUpstream, type TestGateway, token, UPSTREAM_TOKEN, type Upstream } from './helpers.ts';

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

function proof(method: string, url: string, accessToken: string): Promise<string> {
  return new SignJWT({ htm: method, htu: url, jti: randomUUID(), ath: createHash('sha256').update(accessToken).digest('base64url') })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

describe('gateway: DPoP-bound tokens', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let bound: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      dpop: { mode: 'allowed' },
      gateway: {
        routes: [
          { id: 'api', upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN } }, auth: 'jwt', rules: [{}] },
        ],
      },
    });
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('accepts a bound token with a valid proof for the URL the caller used', async () => {
    const url = `${gw.url}/items?x=1`;
    const res = await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${gw.url}/items`, bound) } });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(h.dpop, undefined);
  });

  it('refuses a proof for another URL', async () => {
    const res = await fetch(`${gw.url}/items`, {
      headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', 'https://elsewhere.test/items', bound) },
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /DPoP.*invalid_dpop_proof/);
  });

  it('refuses a bound token presented as Bearer', async () => {
    const res = await fetch(`${gw.url}/items`, { headers: { authorization: `Bearer ${bound}` } });
    assert.equal(res.status, 401);
  });

  it('replay after a reload: a proof accepted before the configuration was reloaded is refused after it', async () => {
    const url = `${gw.url}/items`;
    const dpop = await proof('GET', url, bound);
    assert.equal((await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop } })).status, 200);
    const seen = upstream.seen.length;
    // The reload builds new verifiers; the proofs the old ones accepted are still remembered.
    const config = gw.served.gateway.state.config;
    assert.equal(
      gw.served.reload(parse({ ...baseConfig(), dpop: { mode: 'allowed', replay_cache_size: 1000 }, gateway: config.gateway } as never)).ok,
      true,
    );
    const res = await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop } });
    assert.equal(res.status, 401);
    assert.match(
      res.headers.get('www-authenticate') ?? '',
      /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof was already used\."/,
    );
    assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
  });
});

describe('gateway: DPoP proofs remembered in a store that cannot answer', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        dpop: { mode: 'allowed' },
        gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
      },
      { verifierRuntime: { replay: { use: () => Promise.reject(new Error('store unavailable')) } } },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('refuses a DPoP request with 503 and Retry-After (fail closed), and passes bearer requests without the store', async () => {
    const bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
    const res = await fetch(`${gw.url}/items`, {
      headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${gw.url}/items`, bound) },
    });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '5');
    assert.deepEqual(await res.json(), {
      error: 'temporarily_unavailable',
      error_description: 'The DPoP proof cannot be checked right now.',
    });
    assert.equal(upstream.seen.length, 0);
    assert.equal((await fetch(`${gw.url}/items`, { headers: { authorization: `Bearer ${await token()}` } })).status, 200);
  });
});
