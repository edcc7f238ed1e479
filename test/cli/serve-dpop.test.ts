/**
 * `tessera serve`: a DPoP proof (RFC 9449 §11.1) is accepted once per store, not once per process.
 * The gateway records each proof's `jti` in the store's replay table, so the same token and proof
 * are refused after a restart, and at a second instance on the same store, on SQLite and on
 * PostgreSQL (127.0.0.1:5432, database `test`, or TESSERA_TEST_POSTGRES_URL; skipped when it does
 * not answer). Both instances share `server.public_url`, as instances behind one load balancer do,
 * so the proof names a URL each of them accepts.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, afterEach, before, describe, it } from 'node:test';
import { decodeJwt, type JWK, SignJWT } from 'jose';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { drivers, PUBLIC, type ServeSite, serveInstances, serveSite } from './serve-instances.ts';

const AUDIENCE = `${PUBLIC}/api`;

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

/** A DPoP proof by `holder`; with `accessToken`, bound to it (`ath`). */
function proof(method: string, htu: string, accessToken?: string): Promise<string> {
  return new SignJWT({
    htm: method,
    htu,
    jti: randomUUID(),
    ...(accessToken !== undefined ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

for (const driver of drivers) {
  describe(`tessera serve on ${driver.name}: a DPoP proof is used once per store`, { skip: driver.skip }, () => {
    let site: ServeSite;
    let config: string;
    let upstream: Upstream;
    const instances = serveInstances();
    const { stop, stopAll } = instances;
    const start = (options: { port?: number } = {}) => instances.start(config, options);

    /** A DPoP-bound access token (`cnf.jkt` of `holder`) from the token service at `url`. */
    const boundToken = async (url: string): Promise<string> => {
      const res = await fetch(`${url}/oauth2/token`, {
        method: 'POST',
        headers: {
          authorization: basic('agent', site.secrets.agent as string),
          'content-type': 'application/x-www-form-urlencoded',
          dpop: await proof('POST', `${PUBLIC}/oauth2/token`),
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read' }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      const body = (await res.json()) as { access_token: string; token_type: string };
      assert.equal(body.token_type, 'DPoP');
      assert.ok((decodeJwt(body.access_token).cnf as { jkt?: string } | undefined)?.jkt);
      return body.access_token;
    };
    const call = (url: string, token: string, dpop: string) =>
      fetch(`${url}/api/items`, { headers: { authorization: `DPoP ${token}`, dpop } });
    const assertReplayRefused = (res: Response) => {
      assert.equal(res.status, 401);
      assert.match(
        res.headers.get('www-authenticate') ?? '',
        /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof was already used\."/,
      );
    };

    before(async () => {
      upstream = await startUpstream();
      site = await serveSite(instances, {
        prefix: 'tessera-serve-dpop-',
        audience: AUDIENCE,
        postgres: driver.postgres,
        clients: ['agent'],
        scope: 'api:read',
        settings: 'dpop: { mode: allowed }\n',
        route: 'api',
        upstream: upstream.url,
      });
      config = site.config;
    });
    afterEach(stopAll);
    after(async () => {
      await stopAll();
      await upstream?.close();
      await site?.remove();
    });

    it('replay after a restart: the same token and proof, accepted once, are refused by the restarted server', async () => {
      let server = await start();
      const token = await boundToken(server.url);
      const dpop = await proof('GET', `${PUBLIC}/api/items`, token);
      assert.equal((await call(server.url, token, dpop)).status, 200);
      assertReplayRefused(await call(server.url, token, dpop));
      const seen = upstream.seen.length;

      await stop(server);
      server = await start();
      assertReplayRefused(await call(server.url, token, dpop));
      assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
      // A fresh proof for the same token still passes: only the used proof is refused.
      assert.equal((await call(server.url, token, await proof('GET', `${PUBLIC}/api/items`, token))).status, 200);
    });

    it('replay at another instance: a proof accepted by one instance on the store is refused by a second one', async () => {
      const a = await start();
      const b = await start({ port: await freePort() });
      const token = await boundToken(a.url);
      const dpop = await proof('GET', `${PUBLIC}/api/items`, token);
      assert.equal((await call(a.url, token, dpop)).status, 200);
      const seen = upstream.seen.length;
      assertReplayRefused(await call(b.url, token, dpop));
      assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
      // And the other way round, with a proof used first at the second instance.
      const other = await proof('GET', `${PUBLIC}/api/items`, token);
      assert.equal((await call(b.url, token, other)).status, 200);
      assertReplayRefused(await call(a.url, token, other));
    });

    it('attack: a reload lengthening dpop.iat_window does not accept again a proof the store already forgot', async () => {
      const original = readFileSync(config, 'utf8');
      const windowed = (iatWindow: string) =>
        original
          .replace('token_type: at+jwt }', 'token_type: at+jwt, clock_skew: 0s }')
          .replace('dpop: { mode: allowed }', `dpop: { mode: allowed, iat_window: ${iatWindow} }`);
      try {
        writeFileSync(config, windowed('1s'));
        const server = await start();
        const token = await boundToken(server.url);
        const dpop = await proof('GET', `${PUBLIC}/api/items`, token);
        assert.equal((await call(server.url, token, dpop)).status, 200);
        assertReplayRefused(await call(server.url, token, dpop));
        const seen = upstream.seen.length;
        writeFileSync(config, windowed('60s'));
        assert.equal(server.gateway?.reload().ok, true);
        // The store keeps the jti until iat + 1 s + 0 s + 1 (whole seconds), then forgets it.
        await new Promise((r) => setTimeout(r, 3100));
        const res = await call(server.url, token, dpop);
        assert.equal(res.status, 401);
        assert.match(
          res.headers.get('www-authenticate') ?? '',
          /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof is too old or from the future\."/,
        );
        assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
        // A proof made now gets the new window.
        assert.equal((await call(server.url, token, await proof('GET', `${PUBLIC}/api/items`, token))).status, 200);
      } finally {
        writeFileSync(config, original);
      }
    });
  });
}
