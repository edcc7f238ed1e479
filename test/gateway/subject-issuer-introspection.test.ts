/**
 * `tessera gateway` alone on `auth: introspection` against `tessera serve`: the subject's issuer.
 * Tessera's introspection endpoint answers for a token it issued for another issuer's subject with
 * that token's RFC 9493 `sub_id`. The gateway believes it when `introspection.trust_sub_id` says
 * so (the endpoint is one configured party it authenticates to): the upstream's
 * `x-tessera-subject-issuer`, the per-subject rate limit and the audit event's `subject_issuer`
 * then name the identity provider; without it they name the introspection answer's issuer.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import { AUDIENCE, ISSUER, key, parse, startGateway, type TestGateway } from './helpers.ts';
import {
  idpToken,
  limitedStatus,
  partnerToken,
  type SubjectIssuerFixture,
  startSubjectIssuerFixture,
  subjectRoutes,
  whoamiThrough,
} from './subject-issuer-fixture.ts';

let fx: SubjectIssuerFixture;
let tessera: string;
let rsSecret: string;

before(async () => {
  fx = await startSubjectIssuerFixture('tessera-gateway-subject-issuer-introspection-');
  tessera = fx.url;
  // The gateway's introspection client: the resource server the tokens are addressed to.
  const rs = await fx.running.service.registerClient({
    id: 'gateway-rs',
    scopes: ['api:read'],
    audiences: [`${tessera}/api`],
    grantTypes: ['client_credentials'],
  });
  rsSecret = rs.secret as string;
});

after(async () => {
  await fx?.close();
});

/** The standalone gateway: its routes introspect every token at the token service. */
function gatewayConfig(trustSubId: boolean | undefined): TesseraConfigInput {
  return {
    issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
    introspection: {
      endpoint: `${tessera}/oauth2/introspect`,
      client_id: 'gateway-rs',
      client_secret: rsSecret,
      cache_max_ttl: '0s',
      ...(trustSubId !== undefined ? { trust_sub_id: trustSubId } : {}),
    },
    scopes: { 'api:read': {} },
    dpop: { mode: 'disabled' },
    gateway: {
      watch_config: false,
      routes: subjectRoutes(fx.upstream.url, 'introspection'),
    },
  } as TesseraConfigInput;
}

const exchange = (subjectToken: string) => fx.exchange(subjectToken);

/** Calls /whoami: what the upstream received and the request's audit event. */
const whoami = (gw: TestGateway, token: string) => whoamiThrough(gw, fx.upstream, token);

const status = (gw: TestGateway, token: string) => limitedStatus(gw.url, token);

describe('tessera gateway alone on auth: introspection: the subject’s issuer of an introspected token', () => {
  it('names the IdP upstream and in the audit event with introspection.trust_sub_id', async () => {
    const gw = await startGateway(gatewayConfig(true));
    try {
      const { headers, event } = await whoami(gw, await exchange(await idpToken()));
      assert.equal(headers['x-tessera-subject'], 'alice');
      assert.equal(headers['x-tessera-issuer'], tessera);
      assert.equal(headers['x-tessera-subject-issuer'], ISSUER);
      assert.equal(event.issuer, tessera);
      assert.equal(event.subject, 'alice');
      assert.equal(event.subject_issuer, ISSUER);
    } finally {
      await gw.close();
    }
  });

  it('rate-limits two IdPs’ same-named subjects apart with introspection.trust_sub_id', async () => {
    const gw = await startGateway(gatewayConfig(true));
    try {
      assert.equal(await status(gw, await exchange(await idpToken({ sub: 'carol' }))), 200);
      const partner = await exchange(await partnerToken('carol'));
      assert.equal(await status(gw, partner), 200, 'the partner IdP’s carol has a bucket of her own');
      assert.equal(
        await status(gw, await exchange(await idpToken({ sub: 'carol' }))),
        429,
        'the corporate carol’s tokens share her bucket',
      );
    } finally {
      await gw.close();
    }
  });

  it('attack: without introspection.trust_sub_id an introspection answer’s sub_id is not believed', async () => {
    for (const trust of [undefined, false]) {
      const gw = await startGateway(gatewayConfig(trust));
      try {
        const { headers, event } = await whoami(gw, await exchange(await idpToken()));
        assert.equal(headers['x-tessera-subject-issuer'], tessera);
        assert.equal(event.issuer, tessera);
        assert.equal(event.subject_issuer, undefined);
        // Both IdPs' dave are the token service's dave: one bucket.
        assert.equal(await status(gw, await exchange(await idpToken({ sub: 'dave' }))), 200);
        const partner = await exchange(await partnerToken('dave'));
        assert.equal(await status(gw, partner), 429, String(trust));
      } finally {
        await gw.close();
      }
    }
  });

  it('refuses a non-boolean introspection.trust_sub_id', () => {
    const config = gatewayConfig(undefined) as { introspection: Record<string, unknown> };
    config.introspection.trust_sub_id = [tessera];
    assert.throws(() => parse(config as TesseraConfigInput), /introspection\.trust_sub_id/);
  });
});
