/**
 * `tessera gateway` alone in front of `tessera serve`: the subject's issuer. A token the token
 * service issued for another issuer's subject names that issuer in its RFC 9493 `sub_id`; a
 * gateway without the token service in its process verifies it by the token service's JWKS, and
 * believes that `sub_id` when `gateway.trust_sub_id` lists the token service: then the upstream's
 * `x-tessera-subject-issuer`, the per-subject rate limit and the audit event's `subject_issuer`
 * name the identity provider, as under `tessera serve`. Any other issuer's `sub_id` is its own claim.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import { AUDIENCE, ISSUER, key, parse, startGateway, type TestGateway } from './helpers.ts';
import {
  IDP2,
  idp2Key,
  idpToken,
  limitedStatus,
  partnerToken,
  type SubjectIssuerFixture,
  startSubjectIssuerFixture,
  subjectRoutes,
  tokenServiceIssuer,
  whoamiThrough,
} from './subject-issuer-fixture.ts';

let fx: SubjectIssuerFixture;
let tessera: string;

before(async () => {
  // The token service: it trusts the two identity providers for token exchange.
  fx = await startSubjectIssuerFixture('tessera-gateway-subject-issuer-');
  tessera = fx.url;
});

after(async () => {
  await fx?.close();
});

/** The standalone gateway: it trusts the token service (by its JWKS) and both identity providers. */
function gatewayConfig(trustSubId: readonly string[] | undefined): TesseraConfigInput {
  return {
    issuers: [
      tokenServiceIssuer(tessera),
      { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } },
      { issuer: IDP2, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [idp2Key.jwk] } },
    ],
    scopes: { 'api:read': {} },
    dpop: { mode: 'disabled' },
    gateway: {
      watch_config: false,
      ...(trustSubId !== undefined ? { trust_sub_id: [...trustSubId] } : {}),
      routes: subjectRoutes(fx.upstream.url, 'jwt'),
    },
  } as TesseraConfigInput;
}

const exchange = (subjectToken: string) => fx.exchange(subjectToken);

/** Calls /whoami: what the upstream received and the request's audit event. */
const whoami = (gw: TestGateway, token: string) => whoamiThrough(gw, fx.upstream, token);

const status = (gw: TestGateway, token: string) => limitedStatus(gw.url, token);

describe('tessera gateway alone: the subject’s issuer of a token service’s tokens', () => {
  it('names the IdP upstream and in the audit event for a token of a token service listed in trust_sub_id', async () => {
    const gw = await startGateway(gatewayConfig([tessera]));
    try {
      const t = await exchange(await idpToken());
      assert.deepEqual(decodeJwt(t).sub_id, { format: 'iss_sub', iss: ISSUER, sub: 'alice' });
      const { headers, event } = await whoami(gw, t);
      assert.equal(headers['x-tessera-subject'], 'alice');
      assert.equal(headers['x-tessera-issuer'], tessera);
      assert.equal(headers['x-tessera-subject-issuer'], ISSUER);
      assert.equal(event.issuer, tessera);
      assert.equal(event.subject, 'alice');
      assert.equal(event.subject_issuer, ISSUER);
      // The IdP's own token: its subject is its issuer's, which the event's issuer already says.
      const own = await whoami(gw, await idpToken());
      assert.equal(own.headers['x-tessera-subject-issuer'], ISSUER);
      assert.equal(own.event.issuer, ISSUER);
      assert.equal(own.event.subject_issuer, undefined);
    } finally {
      await gw.close();
    }
  });

  it('rate-limits two IdPs’ same-named subjects apart, and one subject’s tokens together', async () => {
    const gw = await startGateway(gatewayConfig([tessera]));
    try {
      const corporate = await exchange(await idpToken({ sub: 'carol' }));
      const partner = await exchange(await partnerToken('carol'));
      assert.equal(await status(gw, corporate), 200);
      assert.equal(await status(gw, partner), 200, 'the partner IdP’s carol has a bucket of her own');
      assert.equal(await status(gw, await idpToken({ sub: 'carol' })), 429, 'the corporate carol’s own IdP token shares her bucket');
    } finally {
      await gw.close();
    }
  });

  it('attack: a token service not listed in trust_sub_id is not believed about its subject’s issuer', async () => {
    const gw = await startGateway(gatewayConfig(undefined));
    try {
      const { headers, event } = await whoami(gw, await exchange(await idpToken()));
      assert.equal(headers['x-tessera-subject-issuer'], tessera);
      assert.equal(event.issuer, tessera);
      assert.equal(event.subject_issuer, undefined);
    } finally {
      await gw.close();
    }
  });

  it('attack: an IdP not listed in trust_sub_id cannot pass its user off as another IdP’s by a sub_id', async () => {
    const gw = await startGateway(gatewayConfig([tessera]));
    try {
      const forged = await idpToken({ iss: IDP2, sub_id: { format: 'iss_sub', iss: ISSUER, sub: 'alice' } }, idp2Key);
      const { headers, event } = await whoami(gw, forged);
      assert.equal(headers['x-tessera-subject-issuer'], IDP2);
      assert.equal(event.issuer, IDP2);
      assert.equal(event.subject_issuer, undefined);
      // Nor share the corporate alice's bucket.
      const limiter = await startGateway(gatewayConfig([tessera]));
      try {
        assert.equal(await status(limiter, forged), 200);
        assert.equal(await status(limiter, await idpToken()), 200, 'the corporate alice has a bucket of her own');
      } finally {
        await limiter.close();
      }
    } finally {
      await gw.close();
    }
  });

  it('refuses a trust_sub_id entry that is not a trusted issuer', () => {
    assert.throws(() => parse(gatewayConfig(['https://unknown.test'])), /gateway\.trust_sub_id\[0\].*issuers/s);
  });
});
