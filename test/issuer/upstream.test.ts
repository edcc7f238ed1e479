/**
 * The in-process UpstreamTokenIssuer the gateway calls: an exchange in which the gateway's client
 * is the actor, the verified caller the subject, narrowed to the route's audience and scopes,
 * never outliving the caller's token, the caller's chain nested in `act`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { OAuthError } from '../../src/core/oauth-errors.ts';
import type { Principal } from '../../src/core/verify/principal.ts';
import { createVerifier } from '../../src/verifier.ts';
import { inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { bearer, claims, makeKey, sign } from '../helpers/tokens.ts';
import { listen, type TestServer } from '../helpers/verify.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const IDP = 'https://idp.test';
const idpKey = makeKey('ES256', 'idp');
let issuer: RunningIssuer;

before(async () => {
  issuer = await startIssuer();
  await issuer.addClient({
    id: 'gateway',
    scopes: ['api:read', 'api:write'],
    audiences: ['https://upstream.test'],
    grantTypes: [EXCHANGE],
  });
  await issuer.addClient({
    id: 'agent',
    scopes: ['api:read', 'api:write'],
    audiences: ['https://gateway.test'],
    grantTypes: ['client_credentials', EXCHANGE],
  });
});
after(() => issuer?.close());

async function callerPrincipal(): Promise<{ principal: Principal; token: string }> {
  // alice's token, held by the agent that calls the gateway.
  const user = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600, audiences: ['https://gateway.test'] });
  const verifier = inProcessVerifier(issuer, ['https://gateway.test']);
  const result = await verifier.verify(bearer(user.access_token));
  assert.ok(result.ok);
  return { principal: result.principal, token: user.access_token };
}

describe('issueForUpstream', () => {
  it('mints a narrowed token for the upstream with the gateway as actor and the caller as subject', async () => {
    const { principal } = await callerPrincipal();
    const upstream = issuer.service.upstreamIssuer('gateway');
    const { token, expiresAt } = await upstream.issueForUpstream({
      principal,
      audience: 'https://upstream.test',
      scopes: ['api:read'],
      maxTtl: 120,
    });
    const c = decodeJwt(token);
    assert.equal(c.sub, 'alice');
    assert.equal(c.aud, 'https://upstream.test');
    assert.equal(c.scope, 'api:read');
    assert.equal(c.client_id, 'gateway');
    assert.deepEqual(c.act, { sub: 'gateway' });
    assert.equal(c.sub_id, undefined, 'alice is this issuer’s own subject');
    assert.equal(c.exp, expiresAt);
    assert.ok(expiresAt - (c.iat as number) <= 120);
    const tree = await issuer.service.grantTree(principal.delegationId as string);
    assert.ok(tree?.subtree.some((g) => g.id === c.grant_id && g.kind === 'upstream'));
    // An upstream verifying Tessera tokens accepts it.
    const upstreamVerifier = inProcessVerifier(issuer, ['https://upstream.test']);
    assert.equal((await upstreamVerifier.verify(bearer(token))).ok, true);
  });

  it('revoking the caller’s token revokes the upstream grant exchanged from it: the gateway’s upstream token is refused, a grant from the caller’s other token is not', async () => {
    const { principal, token: callerToken } = await callerPrincipal();
    const other = await callerPrincipal();
    const upstream = issuer.service.upstreamIssuer('gateway');
    const forUpstream = (p: Principal) =>
      upstream.issueForUpstream({ principal: p, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 120 });
    const { token } = await forUpstream(principal);
    const { token: otherToken } = await forUpstream(other.principal);
    const grant = await issuer.store.getGrant(decodeJwt(token).grant_id as string);
    assert.equal(grant?.subjectJti, principal.tokenId);
    const revoked = await issuer.service.revokeAccessToken(callerToken, 'test');
    assert.deepEqual(revoked?.revokedGrants, [grant?.id]);
    const upstreamVerifier = inProcessVerifier(issuer, ['https://upstream.test']);
    const r = await upstreamVerifier.verify(bearer(token));
    assert.equal(r.ok, false);
    if (!r.ok) assert.equal(r.error.code, 'token_revoked');
    assert.equal((await upstreamVerifier.verify(bearer(otherToken))).ok, true);
    // Nor does the revoked caller's principal (a gateway that has not synced) get another one.
    await assert.rejects(forUpstream(principal), (e) => e instanceof OAuthError && e.code === 'subject_token_invalid');
  });

  it('nests an external caller’s chain under the gateway and keeps the caller’s issuer on the grant', async () => {
    const idpToken = await sign(
      idpKey,
      claims({ iss: IDP, sub: 'bob', aud: 'https://gateway.test', scope: 'api:read api:write', act: { sub: 'assistant', iss: IDP } }),
    );
    const verifier = createVerifier({ issuers: [{ issuer: IDP, audiences: ['https://gateway.test'], jwks: { keys: [idpKey.jwk] } }] });
    const result = await verifier.verify(bearer(idpToken));
    assert.ok(result.ok);
    const { token } = await issuer.service
      .upstreamIssuer('gateway')
      .issueForUpstream({ principal: result.principal, audience: 'https://upstream.test', scopes: ['api:write'], maxTtl: 60 });
    const c = decodeJwt(token);
    assert.equal(c.sub, 'bob');
    assert.deepEqual(c.act, { sub: 'gateway', act: { sub: 'assistant', iss: IDP } });
    // RFC 9493 §4.1: the upstream can tell the IdP's bob from another issuer's.
    assert.deepEqual(c.sub_id, { format: 'iss_sub', iss: IDP, sub: 'bob' });
    const grant = await issuer.store.getGrant(c.grant_id as string);
    assert.equal(grant?.issuer, IDP);
    assert.equal(grant?.parentId, null);
  });

  it('refuses an external caller named like a client in another case or like a static token, but not a static token itself', async () => {
    const verifier = createVerifier({
      issuers: [{ issuer: IDP, audiences: ['https://gateway.test'], jwks: { keys: [idpKey.jwk] } }],
      static_tokens: [
        { id: 'ci', token: 'static-token-ci-0123456789abcdef', scopes: ['api:read'] },
        // A configured subject naming another static token, or a client, passes for it.
        { id: 'masked', token: 'static-token-masked-0123456789abc', scopes: ['api:read'], subject: 'static:ci' },
        { id: 'client', token: 'static-token-client-0123456789abc', scopes: ['api:read'], subject: 'AGENT' },
      ],
    } as never);
    const upstream = (principal: Principal) =>
      issuer.service
        .upstreamIssuer('gateway')
        .issueForUpstream({ principal, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 60 });
    const refused = (e: unknown) => e instanceof OAuthError && e.code === 'subject_token_subject_is_client';
    for (const sub of ['AGENT', 'Gateway', 'static:ci']) {
      const result = await verifier.verify(
        bearer(await sign(idpKey, claims({ iss: IDP, sub, aud: 'https://gateway.test', scope: 'api:read' }))),
      );
      assert.ok(result.ok);
      await assert.rejects(upstream(result.principal), refused, sub);
    }
    for (const token of ['static-token-masked-0123456789abc', 'static-token-client-0123456789abc']) {
      const result = await verifier.verify(bearer(token));
      assert.ok(result.ok);
      await assert.rejects(upstream(result.principal), refused, token);
    }
    // The static token ci itself is static:ci: the minted token stands for it.
    const own = await verifier.verify(bearer('static-token-ci-0123456789abcdef'));
    assert.ok(own.ok);
    const minted = decodeJwt((await upstream(own.principal)).token);
    assert.equal(minted.sub, 'static:ci');
    // The grant records a static token's subject under the issuer "static", as the gateway names it.
    assert.deepEqual(minted.sub_id, { format: 'iss_sub', iss: 'static', sub: 'static:ci' });
  });

  it('re-issues an external caller’s unqualified prior actors under the caller’s issuer', async () => {
    // The IdP names "agent" (a client of this service) as a prior actor, in its own namespace.
    const idpToken = await sign(
      idpKey,
      claims({ iss: IDP, sub: 'bob', aud: 'https://gateway.test', scope: 'api:read', act: { sub: 'agent', act: { sub: 'x2' } } }),
    );
    const verifier = createVerifier({ issuers: [{ issuer: IDP, audiences: ['https://gateway.test'], jwks: { keys: [idpKey.jwk] } }] });
    const result = await verifier.verify(bearer(idpToken));
    assert.ok(result.ok);
    const { token } = await issuer.service
      .upstreamIssuer('gateway')
      .issueForUpstream({ principal: result.principal, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 60 });
    assert.deepEqual(decodeJwt(token).act, { sub: 'gateway', act: { sub: 'agent', iss: IDP, act: { sub: 'x2', iss: IDP } } });
  });

  it('refuses an external caller whose sub is a client id (subject collision with that client’s own tokens)', async () => {
    const idpToken = await sign(idpKey, claims({ iss: IDP, sub: 'agent', aud: 'https://gateway.test', scope: 'api:read' }));
    const verifier = createVerifier({ issuers: [{ issuer: IDP, audiences: ['https://gateway.test'], jwks: { keys: [idpKey.jwk] } }] });
    const result = await verifier.verify(bearer(idpToken));
    assert.ok(result.ok);
    await assert.rejects(
      issuer.service
        .upstreamIssuer('gateway')
        .issueForUpstream({ principal: result.principal, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 60 }),
      (e: unknown) => e instanceof OAuthError && e.code === 'subject_token_subject_is_client',
    );
    // This service's own token for the agent (sub agent) still goes through.
    const own = await issuer.service.mint({ clientId: 'agent', ttl: 600, audiences: ['https://gateway.test'] });
    const r = await inProcessVerifier(issuer, ['https://gateway.test']).verify(bearer(own.access_token));
    assert.ok(r.ok);
    assert.equal(r.principal.subject, 'agent');
    const { token } = await issuer.service
      .upstreamIssuer('gateway')
      .issueForUpstream({ principal: r.principal, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 60 });
    assert.equal(decodeJwt(token).sub, 'agent');
  });

  it('never exceeds the caller’s scopes or the gateway client’s audiences', async () => {
    const { principal } = await callerPrincipal();
    const upstream = issuer.service.upstreamIssuer('gateway');
    await assert.rejects(
      upstream.issueForUpstream({ principal, audience: 'https://other.test', scopes: ['api:read'], maxTtl: 60 }),
      (e: unknown) => e instanceof OAuthError && e.error === 'invalid_target',
    );
    const narrow = await issuer.service.mint({
      clientId: 'agent',
      subject: 'carol',
      scopes: ['api:read'],
      audiences: ['https://gateway.test'],
    });
    const r = await inProcessVerifier(issuer, ['https://gateway.test']).verify(bearer(narrow.access_token));
    assert.ok(r.ok);
    await assert.rejects(
      upstream.issueForUpstream({ principal: r.principal, audience: 'https://upstream.test', scopes: ['api:write'], maxTtl: 60 }),
      (e: unknown) => e instanceof OAuthError && e.error === 'invalid_scope',
    );
  });

  it('refuses once the caller’s grant is revoked', async () => {
    const { principal } = await callerPrincipal();
    await issuer.service.revokeGrants({ grantId: principal.delegationId as string }, 'test');
    await assert.rejects(
      issuer.service
        .upstreamIssuer('gateway')
        .issueForUpstream({ principal, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 60 }),
      (e: unknown) => e instanceof OAuthError && e.code === 'grant_inactive',
    );
  });

  it('refuses an unknown gateway client', async () => {
    const { principal } = await callerPrincipal();
    await assert.rejects(
      issuer.service.upstreamIssuer('nobody').issueForUpstream({ principal, audience: 'https://upstream.test', scopes: [], maxTtl: 60 }),
      OAuthError,
    );
  });
});

describe('a caller whose principal names this issuer without being one of its tokens', () => {
  // Another authorization server's RFC 7662 endpoint, as a gateway route with `auth: introspection`
  // uses it: its answer's `iss` is its own word, not a signature of this token service. The
  // verifier refuses an answer naming another issuer than `introspection.issuer`
  // (token_issuer_unknown); here that setting names this token service (a misconfiguration, or a
  // custom introspector), so the token service's own check is what stands.
  let endpoint: TestServer;
  let answer: Record<string, unknown> = {};
  before(async () => {
    endpoint = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
  });
  after(() => endpoint?.close());

  async function introspected(over: Record<string, unknown>): Promise<Principal> {
    const now = Math.floor(Date.now() / 1000);
    answer = { active: true, iss: issuer.url, scope: 'api:read', exp: now + 300, iat: now, ...over };
    const verifier = createVerifier({
      introspection: {
        endpoint: `${endpoint.origin}/introspect`,
        client_id: 'rs',
        client_secret: 'rs-secret',
        issuer: issuer.url,
      },
      dpop: { mode: 'disabled' },
    } as never);
    const result = await verifier.verify(bearer(`opaque-${now}-${Math.random().toString(36).slice(2)}`));
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.principal.issuer, issuer.url);
    return result.principal;
  }
  const forUpstream = (principal: Principal, scopes = ['api:read']) =>
    issuer.service.upstreamIssuer('gateway').issueForUpstream({ principal, audience: 'https://upstream.test', scopes, maxTtl: 60 });
  const invalid = (e: unknown) => e instanceof OAuthError && e.code === 'subject_token_invalid';

  it('attack: an introspection answer claiming this issuer for a client id (no grant_id) gets no upstream token in that client’s name, nor a prior actor of this issuer', async () => {
    await issuer.service.audit.flush();
    const before = (await issuer.store.queryAudit({ kinds: ['token.exchanged'], limit: 10_000 })).length;
    await assert.rejects(forUpstream(await introspected({ sub: 'agent', client_id: 'agent', act: { sub: 'admin' } })), invalid);
    await issuer.service.audit.flush();
    assert.equal((await issuer.store.queryAudit({ kinds: ['token.exchanged'], limit: 10_000 })).length, before, 'no token minted');
  });

  it('attack: an introspection answer claiming this issuer names a real grant of another subject or client: refused', async () => {
    const { principal: alice } = await callerPrincipal();
    const grantId = alice.delegationId as string;
    await assert.rejects(forUpstream(await introspected({ sub: 'agent', client_id: 'agent', grant_id: grantId })), invalid);
    await assert.rejects(forUpstream(await introspected({ sub: 'alice', client_id: 'gateway', grant_id: grantId })), invalid);
  });

  it('attack: an introspection answer claiming this issuer for a real grant gets no more than that grant holds (its scopes, its actor chain, its lifetime)', async () => {
    const carol = await issuer.service.mint({
      clientId: 'agent',
      subject: 'carol',
      ttl: 120,
      scopes: ['api:read'],
      audiences: ['https://gateway.test'],
    });
    const grantId = decodeJwt(carol.access_token).grant_id as string;
    const wide = await introspected({
      sub: 'carol',
      client_id: 'agent',
      grant_id: grantId,
      scope: 'api:read api:write',
      act: { sub: 'admin' },
      exp: Math.floor(Date.now() / 1000) + 3600,
    });
    await assert.rejects(forUpstream(wide, ['api:write']), (e: unknown) => e instanceof OAuthError && e.error === 'invalid_scope');
    const { token, expiresAt } = await issuer.service
      .upstreamIssuer('gateway')
      .issueForUpstream({ principal: wide, audience: 'https://upstream.test', scopes: ['api:read'], maxTtl: 3600 });
    const c = decodeJwt(token);
    assert.equal(c.sub, 'carol');
    assert.deepEqual(c.act, { sub: 'gateway' }, 'the grant’s chain, not the answer’s');
    assert.ok(expiresAt <= (decodeJwt(carol.access_token).exp as number) + 0, 'no longer than the caller’s grant');
  });

  it('this token service’s own introspection answer (a route introspecting Tessera) still mints, as a child of the caller’s grant', async () => {
    // The gateway introspects as a client holding the caller tokens' audience (RFC 7662 §4: the
    // endpoint answers a client its tokens are meant for).
    const gwClient = await issuer.addClient({
      id: 'gw-introspect',
      scopes: ['api:read'],
      audiences: ['https://upstream.test', 'https://gateway.test'],
      grantTypes: [EXCHANGE],
    });
    const user = await issuer.service.mint({ clientId: 'agent', subject: 'dave', ttl: 600, audiences: ['https://gateway.test'] });
    const verifier = createVerifier({
      introspection: { endpoint: `${issuer.url}/oauth2/introspect`, client_id: gwClient.id, client_secret: gwClient.secret },
      dpop: { mode: 'disabled' },
    } as never);
    const result = await verifier.verify(bearer(user.access_token));
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.principal.kind, 'introspection');
    const { token } = await forUpstream(result.principal);
    const grant = await issuer.store.getGrant(decodeJwt(token).grant_id as string);
    assert.equal(grant?.parentId, user.grant_id);
    assert.equal(grant?.subject, 'dave');
  });
});
