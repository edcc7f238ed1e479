/**
 * `tessera serve` with `dpop.nonce` and `token_service.dpop.nonce` (RFC 9449 §8, §9): the
 * server-provided nonces are MACed under keys derived from the master key, one per purpose. So the
 * gateway's nonces are accepted by every instance sharing the master key (behind one load
 * balancer) and still after a restart, refused by an instance with another master key, and a
 * nonce the token endpoint hands out is no nonce for the gateway, nor the other way round.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type JWK, SignJWT } from 'jose';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { PUBLIC, type ServeSite, serveInstances, serveSite } from './serve-instances.ts';

const AUDIENCE = `${PUBLIC}/api`;
const ITEMS = `${PUBLIC}/api/items`;
const TOKEN_ENDPOINT = `${PUBLIC}/oauth2/token`;

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

/** A DPoP proof by `holder`; with `accessToken`, bound to it (`ath`); with `nonce`, naming it. */
function proof(method: string, htu: string, accessToken?: string, nonce?: string): Promise<string> {
  return new SignJWT({
    htm: method,
    htu,
    jti: randomUUID(),
    ...(accessToken !== undefined ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
    ...(nonce !== undefined ? { nonce } : {}),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

describe('tessera serve: DPoP nonces derived from the master key', () => {
  let upstream: Upstream;
  /** Data directories, each its own store and master key (`tessera init`), and a client `agent`. */
  const sites: ServeSite[] = [];
  const instances = serveInstances();
  const start = async (site: ServeSite) => instances.start(site.config, { port: await freePort() });
  const { stop } = instances;

  const newSite = async (): Promise<ServeSite> => {
    const site = await serveSite(instances, {
      prefix: 'tessera-serve-nonce-',
      audience: AUDIENCE,
      clients: ['agent'],
      scope: 'api:read',
      settings: `token_service:
  dpop: { nonce: true }
dpop: { mode: allowed, nonce: true }
`,
      route: 'api',
      upstream: upstream.url,
    });
    sites.push(site);
    return site;
  };

  /** A token request to the instance at `url`, its proof naming `nonce` when given. */
  const tokenRequest = async (url: string, site: ServeSite, nonce?: string) =>
    fetch(`${url}/oauth2/token`, {
      method: 'POST',
      headers: {
        authorization: basic('agent', site.secrets.agent as string),
        'content-type': 'application/x-www-form-urlencoded',
        dpop: await proof('POST', TOKEN_ENDPOINT, undefined, nonce),
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read' }),
    });
  /** The token endpoint's nonce, from a request whose proof names none (400 use_dpop_nonce). */
  const tokenEndpointNonce = async (url: string, site: ServeSite): Promise<string> => {
    const res = await tokenRequest(url, site);
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'use_dpop_nonce');
    const nonce = res.headers.get('dpop-nonce');
    assert.ok(nonce);
    return nonce;
  };
  /** A DPoP-bound access token from the instance at `url`. */
  const boundToken = async (url: string, site: ServeSite): Promise<string> => {
    const res = await tokenRequest(url, site, await tokenEndpointNonce(url, site));
    assert.equal(res.status, 200, await res.clone().text());
    return ((await res.json()) as { access_token: string }).access_token;
  };
  /** A gateway request to the instance at `url`, its proof naming `nonce` when given. */
  const call = async (url: string, token: string, nonce?: string) =>
    fetch(`${url}/api/items`, { headers: { authorization: `DPoP ${token}`, dpop: await proof('GET', ITEMS, token, nonce) } });
  /** The gateway's nonce, from a request whose proof names none (401 use_dpop_nonce). */
  const gatewayNonce = async (url: string, token: string): Promise<string> => {
    const res = await call(url, token);
    assertNonceRefused(res);
    const nonce = res.headers.get('dpop-nonce');
    assert.ok(nonce);
    return nonce;
  };
  const assertNonceRefused = (res: Response) => {
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /DPoP .*error="use_dpop_nonce"/);
  };

  let a: ServeSite;
  let b: ServeSite;
  before(async () => {
    upstream = await startUpstream();
    a = await newSite();
    b = await newSite();
  });
  after(async () => {
    await instances.stopAll();
    await upstream?.close();
    for (const s of sites) await s.remove();
  });

  it("gateway: a nonce handed out by one instance is accepted by another sharing the master key (one load balancer's pool)", async () => {
    const one = await start(a);
    const two = await start(a);
    try {
      const token = await boundToken(one.url, a);
      assert.equal((await call(two.url, token, await gatewayNonce(one.url, token))).status, 200);
      assert.equal((await call(one.url, token, await gatewayNonce(two.url, token))).status, 200);
    } finally {
      await stop(one);
      await stop(two);
    }
  });

  it('gateway: a nonce handed out before a restart is accepted after it (no use_dpop_nonce round trip for every client)', async () => {
    let server = await start(a);
    const token = await boundToken(server.url, a);
    const nonce = await gatewayNonce(server.url, token);
    await stop(server);
    server = await start(a);
    try {
      assert.equal((await call(server.url, token, nonce)).status, 200);
    } finally {
      await stop(server);
    }
  });

  it('attack: a gateway nonce from an instance with another master key is refused', async () => {
    const ours = await start(a);
    const theirs = await start(b);
    try {
      const foreign = await gatewayNonce(theirs.url, await boundToken(theirs.url, b));
      const token = await boundToken(ours.url, a);
      assertNonceRefused(await call(ours.url, token, foreign));
      // The same request with a nonce of its own passes.
      assert.equal((await call(ours.url, token, await gatewayNonce(ours.url, token))).status, 200);
    } finally {
      await stop(ours);
      await stop(theirs);
    }
  });

  it("attack: the token endpoint's nonce is refused by the gateway, and the gateway's by the token endpoint (one key per purpose)", async () => {
    const server = await start(a);
    try {
      const token = await boundToken(server.url, a);
      assertNonceRefused(await call(server.url, token, await tokenEndpointNonce(server.url, a)));
      const res = await tokenRequest(server.url, a, await gatewayNonce(server.url, token));
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as { error: string }).error, 'use_dpop_nonce');
    } finally {
      await stop(server);
    }
  });
});
