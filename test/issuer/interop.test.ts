/**
 * Interoperability with real OAuth software: openid-client (panva) as the client for discovery,
 * client_credentials, refresh with rotation and reuse detection, token exchange with an actor,
 * introspection and revocation (with client_secret_basic, client_secret_post and private_key_jwt);
 * jose verifying issued tokens through the JWKS endpoint.
 */
import assert from 'node:assert/strict';
import type { webcrypto } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, type JWK, jwtVerify } from 'jose';
import * as oidc from 'openid-client';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
let issuer: RunningIssuer;
let agent: oidc.Configuration;
let broker: oidc.Configuration;
let workload: oidc.Configuration;

async function discover(id: string, auth: oidc.ClientAuth): Promise<oidc.Configuration> {
  return oidc.discovery(new URL(issuer.url), id, undefined, auth, { execute: [oidc.allowInsecureRequests], algorithm: 'oauth2' });
}

before(async () => {
  issuer = await startIssuer();
  const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
  const a = await issuer.addClient({ id: 'agent', scopes: ['api:read', 'api:write'], audiences: ['https://api.test'], grantTypes });
  const b = await issuer.addClient({ id: 'broker', scopes: ['api:read', 'api:write'], audiences: ['https://api.test'], grantTypes });
  // Mints the user's token, addressed to the API and to the broker that will exchange it.
  await issuer.addClient({ id: 'portal', scopes: ['api:read', 'api:write'], audiences: ['https://api.test', 'broker'] });
  const pair = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as {
    publicKey: webcrypto.CryptoKey;
    privateKey: webcrypto.CryptoKey;
  };
  const publicJwk = await crypto.subtle.exportKey('jwk', pair.publicKey);
  await issuer.service.registerClient({
    id: 'workload',
    scopes: ['api:read'],
    audiences: ['https://api.test'],
    jwks: { keys: [{ kty: publicJwk.kty, crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y, kid: 'w1' }] },
  });
  agent = await discover(a.id, oidc.ClientSecretBasic(a.secret));
  broker = await discover(b.id, oidc.ClientSecretPost(b.secret));
  workload = await discover('workload', oidc.PrivateKeyJwt({ key: pair.privateKey, kid: 'w1' }));
});
after(() => issuer?.close());

describe('openid-client against the running token service', () => {
  it('discovers the server from RFC 8414 metadata', () => {
    const m = agent.serverMetadata();
    assert.equal(m.issuer, issuer.url);
    assert.equal(m.token_endpoint, `${issuer.url}/oauth2/token`);
    assert.equal(m.introspection_endpoint, `${issuer.url}/oauth2/introspect`);
    assert.equal(m.revocation_endpoint, `${issuer.url}/oauth2/revoke`);
    assert.deepEqual(m.grant_types_supported, ['client_credentials', 'refresh_token', EXCHANGE]);
  });

  it('gets a client_credentials token (client_secret_basic) that jose verifies through the JWKS endpoint', async () => {
    const tokens = await oidc.clientCredentialsGrant(agent, { scope: 'api:read', resource: 'https://api.test' });
    assert.equal(tokens.token_type, 'bearer');
    assert.equal(tokens.expires_in, 600);
    const jwks = createRemoteJWKSet(new URL(agent.serverMetadata().jwks_uri as string));
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, {
      issuer: issuer.url,
      audience: 'https://api.test',
      typ: 'at+jwt',
      requiredClaims: ['jti', 'client_id', 'iat', 'sub'],
    });
    assert.equal(payload.scope, 'api:read');
    assert.equal(protectedHeader.alg, 'ES256');
  });

  it('authenticates with private_key_jwt', async () => {
    const tokens = await oidc.clientCredentialsGrant(workload, { scope: 'api:read' });
    assert.ok(tokens.access_token);
  });

  it('exchanges a token with the client as actor, then refreshes with rotation, and detects reuse', async () => {
    const user = await issuer.service.mint({ clientId: 'portal', subject: 'alice', ttl: 3600, audiences: ['https://api.test', 'broker'] });
    const exchanged = await oidc.genericGrantRequest(broker, EXCHANGE, {
      subject_token: user.access_token,
      subject_token_type: AT,
      scope: 'api:read',
    });
    assert.equal(exchanged.issued_token_type, AT);
    const jwks = createRemoteJWKSet(new URL(broker.serverMetadata().jwks_uri as string));
    const { payload } = await jwtVerify(exchanged.access_token, jwks, { issuer: issuer.url, audience: 'https://api.test' });
    assert.equal(payload.sub, 'alice');
    assert.deepEqual(payload.act, { sub: 'broker' });
    assert.ok(exchanged.refresh_token);

    const first = await oidc.refreshTokenGrant(broker, exchanged.refresh_token as string);
    assert.ok(first.refresh_token);
    assert.notEqual(first.refresh_token, exchanged.refresh_token);
    const second = await oidc.refreshTokenGrant(broker, first.refresh_token as string);
    assert.ok(second.access_token);

    await assert.rejects(oidc.refreshTokenGrant(broker, exchanged.refresh_token as string), (e: unknown) => {
      assert.ok(e instanceof oidc.ResponseBodyError);
      assert.equal(e.error, 'invalid_grant');
      return true;
    });
    // The family is gone: even the latest refresh token and access token are dead.
    await assert.rejects(oidc.refreshTokenGrant(broker, second.refresh_token as string));
    const introspected = await oidc.tokenIntrospection(broker, second.access_token);
    assert.equal(introspected.active, false);
  });

  it('introspects an active token, then revokes it and sees it inactive', async () => {
    const tokens = await oidc.clientCredentialsGrant(agent, { scope: 'api:write' });
    const active = await oidc.tokenIntrospection(agent, tokens.access_token);
    assert.equal(active.active, true);
    assert.equal(active.client_id, 'agent');
    assert.equal(active.scope, 'api:write');
    await oidc.tokenRevocation(agent, tokens.access_token);
    assert.equal((await oidc.tokenIntrospection(agent, tokens.access_token)).active, false);
  });

  it('revocation of an unknown token succeeds (RFC 7009 §2.2)', async () => {
    await oidc.tokenRevocation(agent, 'unknown-token');
  });

  it('surfaces invalid_scope as an OAuth error', async () => {
    await assert.rejects(oidc.clientCredentialsGrant(agent, { scope: 'admin' }), (e: unknown) => {
      assert.ok(e instanceof oidc.ResponseBodyError);
      assert.equal(e.error, 'invalid_scope');
      return true;
    });
  });
});

describe('openid-client with DPoP against a token service requiring nonces (token_service.dpop.nonce)', () => {
  it('gets a DPoP-bound client_credentials token: refused once with use_dpop_nonce, retried with the nonce by openid-client, then kept', async () => {
    const nonced = await startIssuer({ config: { token_service: { dpop: { nonce: true } } } });
    try {
      const c = await nonced.addClient({ id: 'agent', scopes: ['api:read'], audiences: ['https://api.test'] });
      const config = await oidc.discovery(new URL(nonced.url), c.id, undefined, oidc.ClientSecretBasic(c.secret), {
        execute: [oidc.allowInsecureRequests],
        algorithm: 'oauth2',
      });
      const keyPair = await oidc.randomDPoPKeyPair('ES256');
      const DPoP = oidc.getDPoPHandle(config, keyPair);
      const first = await oidc.clientCredentialsGrant(config, { scope: 'api:read' }, { DPoP });
      assert.equal(first.token_type, 'dpop');
      const jkt = await calculateJwkThumbprint((await crypto.subtle.exportKey('jwk', keyPair.publicKey)) as JWK);
      assert.deepEqual(decodeJwt(first.access_token).cnf, { jkt });
      // The nonce the responses carry is kept: the next request needs no retry.
      const second = await oidc.clientCredentialsGrant(config, { scope: 'api:read' }, { DPoP });
      assert.equal(second.token_type, 'dpop');
      await nonced.service.audit.flush();
      const events = await nonced.store.queryAudit({ client_id: 'agent', limit: 100 });
      assert.deepEqual(
        events.filter((e) => e.kind === 'token.denied').map((e) => e.reason),
        ['dpop_nonce_required'],
      );
    } finally {
      await nonced.close();
    }
  });
});
