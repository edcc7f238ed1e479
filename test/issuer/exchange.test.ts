/**
 * RFC 8693 token exchange: the result only ever narrows (scope, audience, lifetime), `may_act` is
 * honoured, prior actors nest under the new one, chains have a maximum depth, and nothing is
 * derived from a revoked grant.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, type JWK, SignJWT } from 'jose';
import { buildTrace } from '../../src/audit/trace.ts';
import { OAuthError } from '../../src/core/oauth-errors.ts';
import { createTokenServiceFromConfig } from '../../src/server/bootstrap.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { bearer, claims, makeKey, sign } from '../helpers/tokens.ts';

const IDP = 'https://idp.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const idpKey = makeKey('ES256', 'idp-1');
/** A second trusted identity provider: its actors are its own to name, not the first one's. */
const OTHER_IDP = 'https://other-idp.test';
const otherIdpKey = makeKey('ES256', 'other-idp-1');

let issuer: RunningIssuer;
const clients: Record<string, { id: string; secret: string }> = {};

before(async () => {
  issuer = await startIssuer({
    config: {
      issuers: [
        { issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } },
        { issuer: OTHER_IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [otherIdpKey.jwk] } },
      ],
      token_service: { max_chain_depth: 3 },
    },
  });
  const grantTypes = ['client_credentials', EXCHANGE];
  clients.broker = await issuer.addClient({
    id: 'broker',
    scopes: ['api:read', 'api:write', 'files:read'],
    // A client id as an audience (RFC 8693 §2.1) addresses the token to that client for a further exchange.
    audiences: ['https://agents.test', 'https://api.test', 'agent', 'subagent', 'deep'],
    grantTypes,
  });
  clients.agent = await issuer.addClient({
    id: 'agent',
    scopes: ['api:read', 'api:write'],
    audiences: ['https://api.test', 'subagent', 'deep'],
    grantTypes,
  });
  clients.subagent = await issuer.addClient({ id: 'subagent', scopes: ['api:read'], audiences: ['https://api.test', 'deep'], grantTypes });
  clients.deep = await issuer.addClient({ id: 'deep', scopes: ['api:read'], audiences: ['https://api.test'], grantTypes });
  clients.plain = await issuer.addClient({ id: 'plain', scopes: ['api:read'], audiences: ['https://api.test'] });
  clients.retargeter = await issuer.addClient({
    id: 'retargeter',
    scopes: ['api:read'],
    audiences: ['https://api.test', 'https://other.test'],
    grantTypes,
    retargetAudiences: true,
  });
});
after(() => issuer?.close());

const userToken = (over: Record<string, unknown> = {}) =>
  sign(idpKey, claims({ iss: IDP, sub: 'alice', aud: 'https://agents.test', scope: 'api:read api:write', ...over }));

async function exchange(client: string, form: Record<string, string | string[]>): Promise<Response> {
  const c = clients[client] as { id: string; secret: string };
  return issuer.post('/oauth2/token', { grant_type: EXCHANGE, subject_token_type: AT, ...form }, { authorization: basic(c.id, c.secret) });
}

async function ccToken(
  client: string,
  form: Record<string, string | string[]> = {},
  headers: Record<string, string> = {},
): Promise<string> {
  const c = clients[client] as { id: string; secret: string };
  const res = await issuer.post(
    '/oauth2/token',
    { grant_type: 'client_credentials', ...form },
    { authorization: basic(c.id, c.secret), ...headers },
  );
  return (await ok(res)).access_token;
}

async function ok(res: Response): Promise<{ access_token: string; issued_token_type: string; expires_in: number; scope?: string }> {
  const body = (await res.json()) as { access_token: string; issued_token_type: string; expires_in: number; error?: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

async function expectError(res: Response, status: number, error: string): Promise<void> {
  const body = (await res.json()) as { error: string };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
}

describe('delegation chains', () => {
  it('exchanges a user IdP token, then again twice, nesting each prior actor under the new one', async () => {
    const t1 = await ok(
      await exchange('broker', { subject_token: await userToken(), audience: ['https://api.test', 'agent', 'subagent', 'deep'] }),
    );
    assert.equal(t1.issued_token_type, AT);
    const c1 = decodeJwt(t1.access_token);
    assert.equal(c1.sub, 'alice');
    assert.equal(c1.client_id, 'broker');
    assert.deepEqual(c1.act, { sub: 'broker' });
    assert.equal(c1.scope, 'api:read api:write');

    const t2 = await ok(
      await exchange('agent', {
        subject_token: t1.access_token,
        scope: 'api:read api:write',
        audience: ['https://api.test', 'subagent', 'deep'],
      }),
    );
    const c2 = decodeJwt(t2.access_token);
    assert.equal(c2.sub, 'alice');
    assert.deepEqual(c2.act, { sub: 'agent', act: { sub: 'broker' } });

    const t3 = await ok(await exchange('subagent', { subject_token: t2.access_token, audience: ['https://api.test', 'deep'] }));
    const c3 = decodeJwt(t3.access_token);
    assert.deepEqual(c3.act, { sub: 'subagent', act: { sub: 'agent', act: { sub: 'broker' } } });
    assert.equal(c3.scope, 'api:read', 'defaults to subject ∩ client');

    const tree = await issuer.service.grantTree(c1.grant_id as string);
    assert.deepEqual(
      tree?.subtree.map((g) => [g.id, g.depth, g.clientId, g.issuer]),
      [
        [c1.grant_id, 0, 'broker', IDP],
        [c2.grant_id, 1, 'agent', IDP],
        [c3.grant_id, 2, 'subagent', IDP],
      ],
    );

    // max_chain_depth is 3: a fourth actor is refused.
    await expectError(await exchange('deep', { subject_token: t3.access_token }), 400, 'invalid_request');
  });

  it('uses actor_token as the actor when given', async () => {
    const actor = await ccToken('broker', { scope: 'api:read', audience: 'https://api.test' });
    const t = await ok(
      await exchange('broker', {
        subject_token: await userToken(),
        audience: 'https://api.test',
        actor_token: actor,
        actor_token_type: AT,
      }),
    );
    assert.deepEqual(decodeJwt(t.access_token).act, { sub: 'broker' });
  });

  it('records an external actor with its issuer', async () => {
    // The IdP issued this workload token to the broker (client_id), for its workflow run.
    const actor = await sign(idpKey, claims({ iss: IDP, sub: 'workflow-7', client_id: 'broker', aud: 'https://agents.test' }));
    const t = await ok(
      await exchange('broker', {
        subject_token: await userToken(),
        audience: 'https://api.test',
        actor_token: actor,
        actor_token_type: AT,
      }),
    );
    assert.deepEqual(decodeJwt(t.access_token).act, { sub: 'workflow-7', iss: IDP });
  });
});

describe('narrowing', () => {
  it('refuses a scope beyond the subject token with invalid_scope', async () => {
    await expectError(
      await exchange('broker', { subject_token: await userToken(), scope: 'files:read', audience: 'https://api.test' }),
      400,
      'invalid_scope',
    );
  });

  it('refuses a scope beyond the client with invalid_scope', async () => {
    await expectError(
      await exchange('subagent', { subject_token: await userToken(), scope: 'api:write', audience: 'https://api.test' }),
      400,
      'invalid_scope',
    );
  });

  it('refuses an audience outside the client with invalid_target', async () => {
    await expectError(
      await exchange('agent', { subject_token: await userToken(), audience: 'https://agents.test' }),
      400,
      'invalid_target',
    );
  });

  it('never outlives the subject token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await ok(await exchange('broker', { subject_token: await userToken({ exp: now + 90 }), audience: 'https://api.test' }));
    assert.ok(t.expires_in <= 90);
    assert.ok((decodeJwt(t.access_token).exp as number) <= now + 90);
  });

  it('attack: never outlives the actor token either (an actor token about to expire does not buy its holder a token, nor a grant, for the subject token’s whole life)', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Another issuer's actor token, expiring in 90 s; the subject token lives an hour.
    const external = await sign(
      idpKey,
      claims({ iss: IDP, sub: 'workflow-8', client_id: 'broker', aud: 'https://agents.test', exp: now + 90 }),
    );
    // This issuer's own actor token, expiring in 60 s.
    const own = (await issuer.service.mint({ clientId: 'broker', ttl: 60, audiences: ['https://api.test'] })).access_token;
    const ownExp = decodeJwt(own).exp as number;
    for (const [actor, exp] of [
      [external, now + 90],
      [own, ownExp],
    ] as const) {
      const t = await ok(
        await exchange('broker', {
          subject_token: await userToken({ exp: now + 3600 }),
          audience: 'https://api.test',
          actor_token: actor,
          actor_token_type: AT,
        }),
      );
      assert.ok((decodeJwt(t.access_token).exp as number) <= exp, `token exp ${decodeJwt(t.access_token).exp} > actor exp ${exp}`);
      assert.ok(t.expires_in <= exp - now + 1, String(t.expires_in));
      const grant = await issuer.store.getGrant(decodeJwt(t.access_token).grant_id as string);
      assert.ok((grant?.expiresAt as number) <= exp, `grant expiresAt ${grant?.expiresAt} > actor exp ${exp}`);
    }
  });

  it('keeps whole seconds for an IdP token with a fractional exp (RFC 7519 NumericDate), never past it', async () => {
    const exp = Math.floor(Date.now() / 1000) + 90.5;
    const t = await ok(await exchange('broker', { subject_token: await userToken({ exp }), audience: 'https://api.test' }));
    const issued = decodeJwt(t.access_token).exp as number;
    assert.ok(Number.isInteger(issued) && issued <= exp, String(issued));
    assert.ok(Number.isInteger(t.expires_in), String(t.expires_in));
    const grant = await issuer.store.getGrant(decodeJwt(t.access_token).grant_id as string);
    assert.ok(Number.isInteger(grant?.expiresAt), 'the grant is stored in whole seconds (a bigint on PostgreSQL)');
  });
});

describe('may_act (RFC 8693 §4.4)', () => {
  it('lets the named actor exchange', async () => {
    const subject = await userToken({ may_act: { sub: 'broker' } });
    await ok(await exchange('broker', { subject_token: subject, audience: 'https://api.test' }));
  });

  it('refuses any other actor', async () => {
    const subject = await userToken({ may_act: { sub: 'broker' } });
    await expectError(await exchange('agent', { subject_token: subject, audience: 'https://api.test' }), 400, 'invalid_request');
  });

  it('refuses a named actor from another issuer', async () => {
    const subject = await userToken({ may_act: { sub: 'broker', iss: 'https://elsewhere.test' } });
    await expectError(await exchange('broker', { subject_token: subject, audience: 'https://api.test' }), 400, 'invalid_request');
  });
});

describe('invalid subject and actor tokens (invalid_request)', () => {
  it('refuses a missing subject_token', async () => {
    await expectError(await exchange('broker', {}), 400, 'invalid_request');
  });

  it('refuses an unsupported subject_token_type', async () => {
    await expectError(
      await exchange('broker', { subject_token: await userToken(), subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }),
      400,
      'invalid_request',
    );
  });

  it('names the JWT type as issued_token_type when the client requested it (RFC 8693 §2.2.1), and refuses types it cannot issue', async () => {
    const jwt = 'urn:ietf:params:oauth:token-type:jwt';
    const asked = await ok(
      await exchange('broker', { subject_token: await userToken(), audience: 'https://api.test', requested_token_type: jwt }),
    );
    assert.equal(asked.issued_token_type, jwt);
    assert.equal(decodeJwt(asked.access_token).sub, 'alice');
    const unasked = await ok(await exchange('broker', { subject_token: await userToken(), audience: 'https://api.test' }));
    assert.equal(unasked.issued_token_type, AT);
    for (const type of ['urn:ietf:params:oauth:token-type:refresh_token', 'urn:ietf:params:oauth:token-type:id_token', 'urn:x:unknown']) {
      await expectError(
        await exchange('broker', { subject_token: await userToken(), audience: 'https://api.test', requested_token_type: type }),
        400,
        'invalid_request',
      );
    }
  });

  it('refuses a refresh token as subject_token, whatever type it is declared as', async () => {
    clients.refresher = await issuer.addClient({
      id: 'refresher',
      scopes: ['api:read'],
      audiences: ['https://api.test'],
      grantTypes: ['client_credentials', EXCHANGE, 'refresh_token'],
    });
    const issued = await exchange('refresher', { subject_token: await ccToken('refresher') });
    const rt = ((await issued.json()) as { refresh_token: string }).refresh_token;
    assert.match(rt, /^trt_/);
    for (const type of [AT, 'urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:refresh_token']) {
      await expectError(await exchange('refresher', { subject_token: rt, subject_token_type: type }), 400, 'invalid_request');
    }
  });

  it('refuses garbage, a forged signature, an expired token and an untrusted issuer', async () => {
    const forged = makeKey('ES256', 'idp-1');
    const now = Math.floor(Date.now() / 1000);
    for (const subject of [
      'not-a-token',
      await sign(forged, claims({ iss: IDP, sub: 'alice', aud: 'https://agents.test' })),
      await userToken({ iat: now - 600, exp: now - 300 }),
      await sign(idpKey, claims({ iss: 'https://untrusted.test', sub: 'alice', aud: 'https://agents.test' })),
      await userToken({ aud: 'https://not-for-us.test' }),
    ]) {
      await expectError(await exchange('broker', { subject_token: subject, audience: 'https://api.test' }), 400, 'invalid_request');
    }
  });

  it('audits why the verifier refused an external subject or actor token (its reason code and claim, never the token), while the caller gets invalid_request alone', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await userToken({ iat: now - 600, exp: now - 300 });
    const forged = await sign(makeKey('ES256', 'idp-1'), claims({ iss: IDP, sub: 'alice', aud: 'https://agents.test' }));
    const expiredActor = await userToken({ sub: 'broker', client_id: 'broker', iat: now - 600, exp: now - 300 });
    const cases: { form: Record<string, string>; token: string; reason: string; detail: Record<string, string> }[] = [
      {
        form: { subject_token: expired },
        token: expired,
        reason: 'subject_token_invalid',
        detail: { verifier_reason: 'token_expired', claim: 'exp' },
      },
      {
        form: { subject_token: forged },
        token: forged,
        reason: 'subject_token_invalid',
        detail: { verifier_reason: 'token_signature_invalid' },
      },
      {
        form: { subject_token: await userToken(), actor_token: expiredActor, actor_token_type: AT },
        token: expiredActor,
        reason: 'actor_token_invalid',
        detail: { verifier_reason: 'token_expired', claim: 'exp' },
      },
    ];
    for (const { form, token, reason, detail } of cases) {
      const res = await exchange('broker', { ...form, audience: 'https://api.test' });
      // The caller learns nothing of the verifier's reason (RFC 8693 §2.2.2).
      assert.deepEqual(await res.json(), {
        error: 'invalid_request',
        error_description: reason === 'subject_token_invalid' ? 'The subject token is invalid.' : 'The actor token is invalid.',
      });
      assert.equal(res.status, 400);
      await issuer.service.audit.flush();
      const [event] = await issuer.store.queryAudit({ request_id: res.headers.get('x-request-id') as string, kinds: ['token.denied'] });
      assert.ok(event);
      assert.equal(event.reason, reason);
      assert.deepEqual(event.detail, { grant_type: EXCHANGE, ...detail });
      const recorded = JSON.stringify(event);
      for (const secret of [token, token.slice(token.lastIndexOf('.') + 1), form.subject_token as string])
        assert.ok(!recorded.includes(secret), 'no token in the event');
    }
  });

  it('attack: refuses an external subject or actor token whose sub (or an act.sub) is empty: no grant for nobody, no actor named nothing', async () => {
    const forms: Record<string, string>[] = [
      { subject_token: await userToken({ sub: '' }) },
      { subject_token: await userToken({ act: { sub: '' } }) },
      { subject_token: await userToken(), actor_token: await userToken({ sub: '', client_id: 'broker' }), actor_token_type: AT },
    ];
    for (const form of forms) {
      await expectError(await exchange('broker', { ...form, audience: 'https://api.test' }), 400, 'invalid_request');
    }
  });

  it('attack: refuses an external subject token whose jti, client_id or grant_id is empty, or whose act names an empty client_id: no root grant keyed by nothing', async () => {
    for (const over of [{ jti: '' }, { client_id: '' }, { grant_id: '' }, { act: { sub: 'agent-a', client_id: '' } }]) {
      const res = await exchange('broker', { subject_token: await userToken(over), audience: 'https://api.test' });
      await expectError(res, 400, 'invalid_request');
    }
  });

  it('attack: refuses a subject or actor token signed with this service’s own key whose sub, client_id, jti or grant_id is empty (subject_token_invalid, actor_token_invalid)', async () => {
    // Only a holder of the signing key could make one (the service never issues it): the checks
    // of its own tokens refuse "" as the verifier does, rather than key a grant or an actor on it.
    const signer = issuer.service.keys.signer();
    assert.ok(signer);
    const real = decodeJwt(await ccToken('broker', { audience: 'https://api.test' }));
    const resigned = (over: Record<string, unknown>) => signer.sign(JSON.stringify({ ...real, ...over }));
    const reasonOf = async (res: Response) => {
      await issuer.service.audit.flush();
      const [event] = await issuer.store.queryAudit({ request_id: res.headers.get('x-request-id') as string, kinds: ['token.denied'] });
      return event?.reason;
    };
    // Re-signed as it was, it is accepted both ways: each refusal below is the empty claim's.
    await ok(await exchange('broker', { subject_token: resigned({}), audience: 'https://api.test' }));
    await ok(
      await exchange('broker', {
        subject_token: await userToken(),
        actor_token: resigned({}),
        actor_token_type: AT,
        audience: 'https://api.test',
      }),
    );
    for (const claim of ['sub', 'client_id', 'jti', 'grant_id']) {
      const asSubject = await exchange('broker', { subject_token: resigned({ [claim]: '' }), audience: 'https://api.test' });
      assert.equal(await reasonOf(asSubject), 'subject_token_invalid', claim);
      await expectError(asSubject, 400, 'invalid_request');
      const asActor = await exchange('broker', {
        subject_token: await userToken(),
        actor_token: resigned({ [claim]: '' }),
        actor_token_type: AT,
        audience: 'https://api.test',
      });
      assert.equal(await reasonOf(asActor), 'actor_token_invalid', claim);
      await expectError(asActor, 400, 'invalid_request');
    }
  });

  it('issues no token with an empty sub of its own: mint for subject "" is refused', async () => {
    await assert.rejects(
      issuer.service.mint({ clientId: 'broker', subject: '', audiences: ['https://api.test'] }),
      (e: unknown) => e instanceof OAuthError && e.code === 'request_parameter_invalid',
    );
  });

  it('attack: mint for a subject the login paths would refuse (a space, a control character, more than 256 characters) is refused; 256 printable characters are not', async () => {
    for (const subject of ['alice admin', 'alice\nbob', 'alice\u0000', '\u0085alice', 'a'.repeat(257)]) {
      await assert.rejects(
        issuer.service.mint({ clientId: 'broker', subject, audiences: ['https://api.test'] }),
        (e: unknown) => e instanceof OAuthError && e.code === 'request_parameter_invalid',
        JSON.stringify(subject),
      );
    }
    const minted = await issuer.service.mint({ clientId: 'broker', subject: 'a'.repeat(256), audiences: ['https://api.test'] });
    assert.ok(minted.access_token);
  });

  it('refuses actor_token without actor_token_type', async () => {
    await expectError(
      await exchange('broker', { subject_token: await userToken(), audience: 'https://api.test', actor_token: await userToken() }),
      400,
      'invalid_request',
    );
  });

  it('refuses a client not registered for token exchange with unauthorized_client', async () => {
    await expectError(await exchange('plain', { subject_token: await userToken() }), 400, 'unauthorized_client');
  });
});

describe('revoked grants', () => {
  it('refuses to exchange a token whose grant is revoked', async () => {
    const t1 = await ok(await exchange('broker', { subject_token: await userToken(), audience: ['https://api.test', 'agent'] }));
    await ok(await exchange('agent', { subject_token: t1.access_token, audience: 'https://api.test' }));
    await issuer.service.revokeGrants({ grantId: decodeJwt(t1.access_token).grant_id as string }, 'test');
    await expectError(await exchange('agent', { subject_token: t1.access_token, audience: 'https://api.test' }), 400, 'invalid_request');
  });

  it('refuses even before this process has synced a revocation made by another process', async () => {
    const t1 = await ok(await exchange('broker', { subject_token: await userToken(), audience: ['https://api.test', 'agent'] }));
    const cli = SqliteStore.open({ path: join(issuer.dir, 'tessera.db') });
    const now = Math.floor(Date.now() / 1000);
    await cli.revokeGrants(
      { grantId: decodeJwt(t1.access_token).grant_id as string },
      { at: now, reason: 'cli', entryExpiresAt: now + 600 },
    );
    await cli.close();
    await expectError(await exchange('agent', { subject_token: t1.access_token, audience: 'https://api.test' }), 400, 'invalid_request');
  });

  it('refuses to exchange a revoked subject’s older IdP tokens', async () => {
    const subject = await userToken({ sub: 'mallory', iat: Math.floor(Date.now() / 1000) - 5 });
    await ok(await exchange('broker', { subject_token: subject, audience: 'https://api.test' }));
    await issuer.service.revokeGrants({ subject: 'mallory' }, 'test');
    await expectError(await exchange('broker', { subject_token: subject, audience: 'https://api.test' }), 400, 'invalid_request');
  });
});

describe('a subject revoked on another instance', () => {
  it('refuses the subject’s older IdP token at once on an instance that has not synced (no new root grant, no refresh token), and accepts a newer one', async () => {
    const config = {
      issuers: [{ issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } }],
      // This instance reads other processes' revocations only this often: never within the test.
      token_service: { sync_interval: '60s' },
    } as never;
    const a = await startIssuer({ config });
    let b: RunningIssuer | undefined;
    try {
      const broker = await a.addClient({
        id: 'broker',
        scopes: ['api:read'],
        audiences: ['https://agents.test', 'https://api.test'],
        grantTypes: [EXCHANGE, 'refresh_token'],
      });
      const swap = (subject_token: string) =>
        a.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token_type: AT, subject_token, audience: 'https://api.test' },
          { authorization: basic(broker.id, broker.secret) },
        );
      const issuedAt = Math.floor(Date.now() / 1000) - 5;
      const old = await sign(idpKey, claims({ iss: IDP, sub: 'mallory', aud: 'https://agents.test', scope: 'api:read' }, issuedAt));
      await ok(await swap(old));
      // The other instance (same store) revokes mallory, as `tessera revoke --subject mallory` does.
      b = await startIssuer({ config, dir: a.dir, master: a.master });
      const revoked = await b.service.revokeGrants({ subject: 'mallory' }, 'offboarded');
      assert.equal(revoked.length, 1);
      assert.equal(a.service.revocations.size.subjects, 0, 'this instance has not read the revocation');
      const res = await swap(old);
      const body = (await res.json()) as { error?: string; refresh_token?: string };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(body.error, 'invalid_request');
      assert.equal(body.refresh_token, undefined);
      // A token the IdP issued after the revocation is the subject's again.
      const newer = await sign(
        idpKey,
        claims({ iss: IDP, sub: 'mallory', aud: 'https://agents.test', scope: 'api:read' }, Math.floor(Date.now() / 1000) + 1),
      );
      const fresh = await ok(await swap(newer));
      // The refused exchange left no grant behind: revoking mallory again finds only the newer one's.
      const again = await b.service.revokeGrants({ subject: 'mallory' }, 'offboarded');
      assert.deepEqual(
        again.map((g) => g.id),
        [decodeJwt(fresh.access_token).grant_id],
      );
    } finally {
      await b?.close();
      await a.close();
    }
  });
});

describe('an actor token revoked on another instance', () => {
  it('refuses an actor_token whose grant another instance revoked, on an instance that has not synced (actor_token_invalid, no grant, no refresh token)', async () => {
    const a = await startIssuer({
      config: {
        issuers: [{ issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } }],
        // This instance reads other processes' revocations only this often: never within the test.
        token_service: { sync_interval: '60s' },
      } as never,
    });
    try {
      const broker = await a.addClient({
        id: 'broker',
        scopes: ['api:read'],
        audiences: ['https://agents.test', 'https://api.test'],
        grantTypes: ['client_credentials', EXCHANGE, 'refresh_token'],
      });
      const post = (form: Record<string, string>) => a.post('/oauth2/token', form, { authorization: basic(broker.id, broker.secret) });
      const actor = (await ok(await post({ grant_type: 'client_credentials', scope: 'api:read', audience: 'https://api.test' })))
        .access_token;
      const subject = (
        await ok(
          await post({ grant_type: EXCHANGE, subject_token_type: AT, subject_token: await userToken(), audience: 'https://api.test' }),
        )
      ).access_token;
      const subjectGrant = decodeJwt(subject).grant_id as string;
      const swap = () =>
        post({
          grant_type: EXCHANGE,
          subject_token_type: AT,
          subject_token: subject,
          actor_token: actor,
          actor_token_type: AT,
          audience: 'https://api.test',
        });
      await ok(await swap());
      assert.equal((await a.store.grantSubtree(subjectGrant)).length, 2);
      // Another process on the same store (`tessera revoke`, another instance) revokes the actor's grant.
      const cli = SqliteStore.open({ path: join(a.dir, 'tessera.db') });
      const now = Math.floor(Date.now() / 1000);
      await cli.revokeGrants({ grantId: decodeJwt(actor).grant_id as string }, { at: now, reason: 'cli', entryExpiresAt: now + 600 });
      await cli.close();
      assert.equal(a.service.revocations.size.grants, 0, 'this instance has not read the revocation');
      const res = await swap();
      const body = (await res.json()) as { error?: string; error_description?: string; refresh_token?: string };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(body.error, 'invalid_request');
      assert.equal(body.error_description, 'The actor token is invalid.');
      assert.equal(body.refresh_token, undefined);
      assert.equal((await a.store.grantSubtree(subjectGrant)).length, 2, 'the refused exchange created no grant');
    } finally {
      await a.close();
    }
  });
});

describe('a subject revoked while it holds no grant here', () => {
  it('revoke --subject without --issuer covers every trusted issuer: the subject’s older IdP token is refused though no grant of it was revoked', async () => {
    const config = {
      issuers: [{ issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } }],
    } as never;
    const a = await startIssuer({ config });
    try {
      const broker = await a.addClient({
        id: 'broker',
        scopes: ['api:read'],
        audiences: ['https://agents.test', 'https://api.test'],
        grantTypes: [EXCHANGE],
      });
      const swap = (subject_token: string) =>
        a.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token_type: AT, subject_token, audience: 'https://api.test' },
          { authorization: basic(broker.id, broker.secret) },
        );
      // A stolen IdP token of eve's, never exchanged here before the revocation.
      const stolen = await sign(
        idpKey,
        claims({ iss: IDP, sub: 'eve', aud: 'https://agents.test', scope: 'api:read' }, Math.floor(Date.now() / 1000) - 5),
      );
      assert.deepEqual(await a.service.revokeGrants({ subject: 'eve' }, 'compromised'), []);
      const res = await swap(stolen);
      assert.equal(res.status, 400, await res.clone().text());
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
    } finally {
      await a.close();
    }
  });
});

describe('a subject of one trusted issuer among several (revocation by subject is keyed by issuer and subject)', () => {
  const IDP_B = 'https://idp-b.test';
  const idpKeyB = makeKey('ES256', 'idp-b-1');
  const config = {
    issuers: [
      { issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } },
      { issuer: IDP_B, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKeyB.jwk] } },
    ],
  } as never;
  let a: RunningIssuer;
  let broker: { id: string; secret: string };
  let ops: { id: string; secret: string };
  before(async () => {
    a = await startIssuer({ config });
    broker = await a.addClient({
      id: 'broker',
      scopes: ['api:read'],
      audiences: ['https://agents.test', 'https://api.test'],
      grantTypes: [EXCHANGE],
    });
    ops = await a.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [a.url] });
  });
  after(() => a?.close());
  const swap = (subject_token: string) =>
    a.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token_type: AT, subject_token, audience: 'https://api.test' },
      { authorization: basic(broker.id, broker.secret) },
    );
  const idpToken = (key: typeof idpKey, iss: string, sub: string) =>
    sign(key, claims({ iss, sub, aud: 'https://agents.test', scope: 'api:read' }, Math.floor(Date.now() / 1000) - 5));
  const adminRevoke = async (body: unknown) => {
    const t = await a.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: a.url },
      { authorization: basic(ops.id, ops.secret) },
    );
    const token = ((await t.json()) as { access_token: string }).access_token;
    return fetch(`${a.url}/oauth2/admin/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
  };

  it('revoking one issuer’s alice revokes her grants and older tokens there, and spares the other issuer’s alice', async () => {
    const fromA = await ok(await swap(await idpToken(idpKey, IDP, 'alice')));
    const fromB = await ok(await swap(await idpToken(idpKeyB, IDP_B, 'alice')));
    const res = await adminRevoke({ subject: 'alice', issuer: IDP });
    assert.equal(res.status, 200, await res.clone().text());
    const revoked = ((await res.json()) as { revoked_grants: string[] }).revoked_grants;
    assert.deepEqual(revoked, [decodeJwt(fromA.access_token).grant_id]);
    assert.notEqual(decodeJwt(fromB.access_token).grant_id, revoked[0]);
    // IdP A's older alice token is refused; IdP B's alice still exchanges.
    await expectError(await swap(await idpToken(idpKey, IDP, 'alice')), 400, 'invalid_request');
    await ok(await swap(await idpToken(idpKeyB, IDP_B, 'alice')));
  });

  it('attack: a revocation by subject whose issuer names no issuer known here (a trailing-slash typo of a trusted one) is refused (admin_revoke_issuer_unknown), nothing written; it answered "0 grants revoked" and left the subject’s tokens exchangeable', async () => {
    const stolen = await idpToken(idpKey, IDP, 'mallory');
    for (const issuerTypo of [`${IDP}/`, 'https://IDP.test', 'idp.test']) {
      const res = await adminRevoke({ subject: 'mallory', issuer: issuerTypo });
      assert.equal(res.status, 400, await res.clone().text());
      assert.deepEqual(await res.json(), {
        error: 'invalid_request',
        error_description: 'issuer is neither this issuer nor a trusted one, and the subject holds no grant of it here.',
      });
      await assert.rejects(a.service.revokeGrants({ subject: 'mallory', issuer: issuerTypo }, 'typo'), {
        code: 'admin_revoke_issuer_unknown',
      });
    }
    await a.service.audit.flush();
    const refused = await a.store.queryAudit({ kinds: ['admin.action'], limit: 100 });
    assert.ok(refused.some((e) => e.decision === 'deny' && e.reason === 'admin_revoke_issuer_unknown'));
    // Nothing was revoked or recorded: the stolen token still exchanges until the right issuer is named.
    await ok(await swap(stolen));
    const stolen2 = await idpToken(idpKey, IDP, 'mallory');
    assert.equal((await adminRevoke({ subject: 'mallory', issuer: IDP })).status, 200);
    await expectError(await swap(stolen2), 400, 'invalid_request');
    // This issuer itself is a known issuer (its own subjects), whether or not the subject holds a grant.
    assert.equal((await adminRevoke({ subject: 'nobody', issuer: a.url })).status, 200);
  });
});

describe('an external token without iat and a subject revocation', () => {
  it('an IdP token without iat (issuer with required_claims: []) signed before a subject revocation is refused after the revocation entry is pruned, and by a freshly started instance', async () => {
    let now = Math.floor(Date.now() / 1000);
    const config = {
      issuers: [
        { issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] }, required_claims: [] },
      ],
    } as never;
    const timed = await startIssuer({ clock: () => now * 1000, config });
    let fresh: RunningIssuer | undefined;
    try {
      const broker = await timed.addClient({
        id: 'broker',
        scopes: ['api:read'],
        audiences: ['https://agents.test', 'https://api.test'],
        grantTypes: [EXCHANGE],
      });
      const swap = (at: RunningIssuer, subject_token: string) =>
        at.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token_type: AT, subject_token, audience: 'https://api.test' },
          { authorization: basic(broker.id, broker.secret) },
        );
      const revokedAt = now;
      // Signed before the revocation; with no iat nothing says so. Its exp is 30 h away: within
      // max_lifetime (24 h) of the verification time once 6 h have passed.
      const old = await sign(
        idpKey,
        claims({ iss: IDP, sub: 'mallory', aud: 'https://agents.test', scope: 'api:read', iat: undefined, exp: revokedAt + 30 * 3600 }),
      );
      await timed.service.revokeGrants({ subject: 'mallory', issuer: IDP }, 'test');
      // Past the subject entry's life (max_lifetime + 60 s), pruned from the store and the list.
      now = revokedAt + 25 * 3600;
      await timed.service.sync();
      assert.equal(timed.service.revocations.size.subjects, 0, 'the entry is gone');
      await expectError(await swap(timed, old), 400, 'invalid_request');

      fresh = await startIssuer({ clock: () => now * 1000, config, dir: timed.dir, master: timed.master });
      await expectError(await swap(fresh, old), 400, 'invalid_request');

      // A token with iat after the revocation is still accepted (the rule is about iat, not the subject).
      await ok(
        await swap(timed, await sign(idpKey, claims({ iss: IDP, sub: 'mallory', aud: 'https://agents.test', scope: 'api:read' }, now))),
      );
    } finally {
      await fresh?.close();
      await timed.close();
    }
  });
});

/** A token-endpoint DPoP proof (RFC 9449 §4.2) by `key`. */
async function dpopProof(key: ReturnType<typeof generateKeyPairSync>): Promise<string> {
  const jwk = key.publicKey.export({ format: 'jwk' }) as JWK;
  return new SignJWT({ htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
    .sign(key.privateKey);
}

describe('who may exchange what (RFC 8693 §2.2.2: unacceptable tokens are invalid_request)', () => {
  it('refuses an actor_token issued to another client (actor impersonation)', async () => {
    const foreign = await ccToken('plain', { scope: 'api:read' });
    await expectError(
      await exchange('broker', {
        subject_token: await userToken(),
        audience: 'https://api.test',
        actor_token: foreign,
        actor_token_type: AT,
      }),
      400,
      'invalid_request',
    );
  });

  it('refuses an external actor_token the IdP issued to another client, or to no client', async () => {
    for (const extra of [{ client_id: 'someone-else' }, {}]) {
      const actor = await sign(idpKey, claims({ iss: IDP, sub: 'workflow-8', aud: 'https://agents.test', ...extra }));
      await expectError(
        await exchange('broker', {
          subject_token: await userToken(),
          audience: 'https://api.test',
          actor_token: actor,
          actor_token_type: AT,
        }),
        400,
        'invalid_request',
      );
    }
  });

  it('refuses as actor_token a token that stands for someone other than the client (forged act, may_act bypass)', async () => {
    // The broker holds a token alice delegated to it (sub alice, client_id broker, act broker).
    const delegated = await ok(await exchange('broker', { subject_token: await userToken(), audience: 'https://api.test' }));
    // The deep client holds subagent's client-credentials token, exchanged to it (sub subagent, client_id deep).
    const addressed = await ccToken('subagent', { audience: ['deep', 'https://api.test'] });
    const impersonation = await ok(await exchange('deep', { subject_token: addressed, audience: 'https://api.test' }));
    // The IdP's own delegated token for alice, issued to the broker (sub alice, act broker).
    const idpDelegated = await userToken({ client_id: 'broker', act: { sub: 'broker' } });
    for (const [client, actorToken, named] of [
      ['broker', delegated.access_token, 'alice'],
      ['deep', impersonation.access_token, 'subagent'],
      ['broker', idpDelegated, 'alice'],
    ] as const) {
      // Bob's token lets only `named` act for him; the client must not pass for it.
      const subject = await userToken({ sub: 'bob', may_act: { sub: named } });
      await expectError(
        await exchange(client, { subject_token: subject, audience: 'https://api.test', actor_token: actorToken, actor_token_type: AT }),
        400,
        'invalid_request',
      );
    }
  });

  it('refuses a sender-constrained actor_token without a DPoP proof of its key', async () => {
    const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bound = await ccToken('broker', { scope: 'api:read', audience: 'https://api.test' }, { dpop: await dpopProof(holder) });
    assert.ok((decodeJwt(bound).cnf as { jkt?: string } | undefined)?.jkt);
    const form = { subject_token: await userToken(), audience: 'https://api.test', actor_token: bound, actor_token_type: AT };
    await expectError(await exchange('broker', form), 400, 'invalid_request');
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const c = clients.broker as { id: string; secret: string };
    const post = async (proof: string) =>
      issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token_type: AT, ...form },
        { authorization: basic(c.id, c.secret), dpop: proof },
      );
    await expectError(await post(await dpopProof(other)), 400, 'invalid_request');
    await ok(await post(await dpopProof(holder)));
  });

  it('refuses a stolen subject token: another client’s token not addressed to the exchanging client', async () => {
    const stolen = await ccToken('plain', { scope: 'api:read' });
    await expectError(await exchange('agent', { subject_token: stolen, audience: 'https://api.test' }), 400, 'invalid_request');
    // An exchanged token addressed only to the API is no more the agent's to exchange.
    const t1 = await ok(await exchange('broker', { subject_token: await userToken(), audience: 'https://api.test' }));
    await expectError(await exchange('agent', { subject_token: t1.access_token, audience: 'https://api.test' }), 400, 'invalid_request');
  });

  it('refuses re-targeting a subject token into an audience outside its own with invalid_target', async () => {
    const own = await ccToken('agent', { scope: 'api:read', audience: 'https://api.test' });
    await ok(await exchange('agent', { subject_token: own, audience: 'https://api.test' }));
    await expectError(await exchange('agent', { subject_token: own, audience: 'subagent' }), 400, 'invalid_target');
    const t1 = await ok(await exchange('broker', { subject_token: await userToken(), audience: 'agent' }));
    await expectError(await exchange('agent', { subject_token: t1.access_token, audience: 'https://api.test' }), 400, 'invalid_target');
  });

  it('attack: an audience-array token re-exchanged into a wider set (by resource= or audience=, or both): invalid_target, target_exceeds_subject; a subset passes', async () => {
    // Broker → agent: a token for the API and the subagent, addressed to the agent (aud agent).
    const wide = await ok(
      await exchange('broker', { subject_token: await userToken(), audience: ['agent', 'https://api.test', 'subagent'] }),
    );
    const t = await ok(await exchange('agent', { subject_token: wide.access_token, resource: 'https://api.test', audience: 'subagent' }));
    assert.deepEqual(decodeJwt(t.access_token).aud, ['subagent', 'https://api.test']);
    // Narrower again: 'deep' (an audience the agent holds) was never in the subject token.
    const wider: Record<string, string | string[]>[] = [
      { audience: ['subagent', 'deep'] },
      { resource: 'https://api.test', audience: 'deep' },
      { audience: 'deep' },
    ];
    for (const target of wider) {
      await expectError(await exchange('agent', { subject_token: wide.access_token, ...target }), 400, 'invalid_target');
      await expectError(await exchange('subagent', { subject_token: t.access_token, ...target }), 400, 'invalid_target');
    }
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'token.denied').at(-1);
    assert.equal(denied?.reason, 'target_exceeds_subject');
    const sub = await ok(await exchange('subagent', { subject_token: t.access_token, resource: 'https://api.test' }));
    assert.equal(decodeJwt(sub.access_token).aud, 'https://api.test');
  });

  it('lets a client registered with retarget_audiences move a token to another of its audiences, and no further', async () => {
    const own = await ccToken('retargeter', { audience: 'https://api.test' });
    const t = await ok(await exchange('retargeter', { subject_token: own, audience: 'https://other.test' }));
    assert.equal(decodeJwt(t.access_token).aud, 'https://other.test');
    await expectError(await exchange('retargeter', { subject_token: own, audience: 'https://evil.test' }), 400, 'invalid_target');
    const stolen = await ccToken('plain', { scope: 'api:read' });
    await expectError(await exchange('retargeter', { subject_token: stolen, audience: 'https://api.test' }), 400, 'invalid_request');
  });

  it('accepts an external IdP subject token only for the verifier’s configured audience', async () => {
    await expectError(
      await exchange('broker', { subject_token: await userToken({ aud: 'https://api.test' }), audience: 'https://api.test' }),
      400,
      'invalid_request',
    );
    await ok(await exchange('broker', { subject_token: await userToken({ aud: 'https://agents.test' }), audience: 'https://api.test' }));
  });
});

describe('re-targeting changed after registration (tessera clients update)', () => {
  const retarget = (client: string) => async () => {
    const own = await ccToken(client, { audience: 'https://api.test' });
    return exchange(client, { subject_token: own, audience: 'https://other.test' });
  };
  const register = async (id: string) => {
    clients[id] = await issuer.addClient({
      id,
      scopes: ['api:read'],
      audiences: ['https://api.test', 'https://other.test'],
      grantTypes: ['client_credentials', EXCHANGE],
    });
  };

  it('refuses re-targeting before the update, allows it after, and refuses it again once turned off', async () => {
    await register('switcher');
    const attempt = retarget('switcher');
    await expectError(await attempt(), 400, 'invalid_target');

    const on = await issuer.service.updateClient('switcher', { retargetAudiences: true }, 'test');
    assert.deepEqual(on?.changed, ['exchange_retarget_audiences']);
    assert.equal(on?.client.exchangeRetargetAudiences, true);
    assert.equal(decodeJwt((await ok(await attempt())).access_token).aud, 'https://other.test');

    assert.deepEqual((await issuer.service.updateClient('switcher', { retargetAudiences: true }))?.changed, [], 'already on: no change');
    assert.deepEqual((await issuer.service.updateClient('switcher', { retargetAudiences: false }))?.changed, [
      'exchange_retarget_audiences',
    ]);
    await expectError(await attempt(), 400, 'invalid_target');

    await issuer.service.audit.flush();
    const updates = (await issuer.store.queryAudit({ client_id: 'switcher', limit: 100 })).filter((e) => e.kind === 'client.updated');
    assert.deepEqual(
      updates.map((e) => [e.reason, e.detail]),
      [
        ['updated', { exchange_retarget_audiences: true, by: 'test' }],
        ['updated', { exchange_retarget_audiences: false }],
      ],
      'one audit event per actual change, none for the no-op',
    );
  });

  it('reaches a running server from another process (the CLI) on its next sync, both ways', async () => {
    await register('remote');
    const attempt = retarget('remote');
    await expectError(await attempt(), 400, 'invalid_target');
    // Another process: its own store connection and token service, without the master key, as the CLI runs.
    const fromCli = async (allow: boolean) => {
      const store = SqliteStore.open({ path: join(issuer.dir, 'tessera.db') });
      const cli = createTokenServiceFromConfig(issuer.config, { store, master: undefined });
      const r = await cli.updateClient('remote', { retargetAudiences: allow }, 'cli');
      await cli.close();
      await store.close();
      return r;
    };
    assert.deepEqual((await fromCli(true))?.changed, ['exchange_retarget_audiences']);
    await issuer.service.sync();
    assert.equal(decodeJwt((await ok(await attempt())).access_token).aud, 'https://other.test');
    assert.deepEqual((await fromCli(false))?.changed, ['exchange_retarget_audiences']);
    await issuer.service.sync();
    await expectError(await attempt(), 400, 'invalid_target');
    const updates = (await issuer.store.queryAudit({ client_id: 'remote', limit: 100 })).filter((e) => e.kind === 'client.updated');
    assert.deepEqual(
      updates.map((e) => e.detail),
      [
        { exchange_retarget_audiences: true, by: 'cli' },
        { exchange_retarget_audiences: false, by: 'cli' },
      ],
    );
  });

  it('answers undefined for an unknown client and writes nothing', async () => {
    const v = (await issuer.store.versions()).clients;
    assert.equal(await issuer.service.updateClient('nobody', { retargetAudiences: true }), undefined);
    assert.equal((await issuer.store.versions()).clients, v);
  });
});

describe('identities of another issuer never pass for this service’s (RFC 9068 §5, RFC 8693 §4.1)', () => {
  before(async () => {
    const grantTypes = ['client_credentials', EXCHANGE];
    clients['agent-a'] = await issuer.addClient({
      id: 'agent-a',
      scopes: ['api:read'],
      audiences: ['https://api.test', 'agent-b'],
      grantTypes,
    });
    clients['agent-b'] = await issuer.addClient({
      id: 'agent-b',
      scopes: ['api:read', 'api:write'],
      audiences: ['https://api.test', 'agent-a'],
      grantTypes,
    });
  });

  /** The reason code the token endpoint audited for the request that got `res`. */
  async function deniedFor(res: Response): Promise<string | undefined> {
    const requestId = res.headers.get('x-request-id') as string;
    await issuer.service.audit.flush();
    const events = await issuer.store.queryAudit({ request_id: requestId, kinds: ['token.denied'], limit: 10 });
    return events[0]?.reason;
  }

  /** The `token.exchanged` event of an exchanged token. */
  async function exchangedEvent(token: string) {
    await issuer.service.audit.flush();
    const jti = decodeJwt(token).jti as string;
    const [event] = await issuer.store.queryAudit({ jti, kinds: ['token.exchanged'], limit: 10 });
    return event;
  }

  it('refuses an external subject token whose sub is a client id (subject collision with that client’s own tokens)', async () => {
    // agent-a's client_credentials tokens carry sub agent-a; an exchange of the IdP's "agent-a" would too.
    assert.equal(decodeJwt(await ccToken('agent-a', { audience: 'https://api.test' })).sub, 'agent-a');
    for (const sub of ['agent-a', 'agent-b']) {
      const res = await exchange('agent-b', { subject_token: await userToken({ sub }), audience: 'https://api.test' });
      assert.equal(await deniedFor(res), 'subject_token_subject_is_client');
      await expectError(res, 400, 'invalid_request');
    }
    // This service's own token for agent-a, addressed to agent-b, is still agent-a's to delegate.
    const own = await ccToken('agent-a', { audience: ['agent-b', 'https://api.test'] });
    const t = await ok(await exchange('agent-b', { subject_token: own, audience: 'https://api.test' }));
    assert.equal(decodeJwt(t.access_token).sub, 'agent-a');
  });

  it('refuses an external subject token whose sub is a client id in another case, or has a static token’s form (subject collision)', async () => {
    for (const sub of ['AGENT-A', 'Agent-B', 'static:deploy', 'STATIC:deploy']) {
      const res = await exchange('agent-b', { subject_token: await userToken({ sub }), audience: 'https://api.test' });
      assert.equal(await deniedFor(res), 'subject_token_subject_is_client', sub);
      await expectError(res, 400, 'invalid_request');
    }
  });

  it('refuses an external actor_token whose sub is another client id (actor collision, may_act bypass)', async () => {
    // alice lets only agent-a act for her; agent-b's workload is named "agent-a" at the IdP.
    const subject = await userToken({ may_act: { sub: 'agent-a' } });
    const actor = await sign(idpKey, claims({ iss: IDP, sub: 'agent-a', client_id: 'agent-b', aud: 'https://agents.test' }));
    const res = await exchange('agent-b', {
      subject_token: subject,
      audience: 'https://api.test',
      actor_token: actor,
      actor_token_type: AT,
    });
    assert.equal(await deniedFor(res), 'actor_token_subject_is_client');
    await expectError(res, 400, 'invalid_request');
    // The IdP naming the client by its own id is the client itself, recorded with the IdP's issuer.
    const self = await sign(idpKey, claims({ iss: IDP, sub: 'agent-b', client_id: 'agent-b', aud: 'https://agents.test' }));
    const t = await ok(
      await exchange('agent-b', {
        subject_token: await userToken(),
        audience: 'https://api.test',
        actor_token: self,
        actor_token_type: AT,
      }),
    );
    assert.deepEqual(decodeJwt(t.access_token).act, { sub: 'agent-b', iss: IDP });
  });

  it('re-issues an external subject token’s prior actors under its issuer (an IdP cannot name this service’s clients as prior actors)', async () => {
    const subject = await userToken({ act: { sub: 'agent-a', act: { sub: 'x2', iss: IDP } } });
    const t = await ok(await exchange('agent-b', { subject_token: subject, audience: 'https://api.test' }));
    // RFC 8693 §4.1: an act without iss is read in the token's issuer's namespace, now this service's;
    // one naming the token's own issuer is kept as it is.
    assert.deepEqual(decodeJwt(t.access_token).act, {
      sub: 'agent-b',
      act: { sub: 'agent-a', iss: IDP, act: { sub: 'x2', iss: IDP } },
    });
    // A verifier of this service's tokens sees which issuer each actor belongs to.
    const verified = await inProcessVerifier(issuer).verify(bearer(t.access_token));
    assert.ok(verified.ok);
    assert.deepEqual(verified.principal.actors, [
      { subject: 'agent-b' },
      { subject: 'agent-a', issuer: IDP },
      { subject: 'x2', issuer: IDP },
    ]);
    // So do the audit trail and `tessera trace`.
    const shown = ['agent-b', `agent-a (${IDP})`, `x2 (${IDP})`];
    assert.deepEqual((await exchangedEvent(t.access_token))?.actor_chain, shown);
    const trace = await buildTrace(issuer.store, 'grant', decodeJwt(t.access_token).grant_id as string);
    assert.deepEqual(trace.grants.find((g) => g.focus)?.actor_chain, shown);
  });

  it('attack: an IdP’s actor named like an issuer-qualified actor (`agent-a (https://corp.example)`) reads as one subject of that IdP in the audit trail and trace', async () => {
    const subject = await userToken({ act: { sub: 'agent-a (https://corp.example)' } });
    const t = await ok(await exchange('agent-b', { subject_token: subject, audience: 'https://api.test' }));
    const shown = ['agent-b', `agent-a %28https://corp.example%29 (${IDP})`];
    assert.deepEqual((await exchangedEvent(t.access_token))?.actor_chain, shown);
    const trace = await buildTrace(issuer.store, 'grant', decodeJwt(t.access_token).grant_id as string);
    assert.deepEqual(trace.grants.find((g) => g.focus)?.actor_chain, shown);
  });

  it('attack: an identity provider’s actor chain naming another trusted issuer’s subject (`act: {sub: agent-x, iss: <other IdP>}`) is refused, at any depth; the other IdP names its own actors', async () => {
    for (const act of [
      { sub: 'agent-x', iss: OTHER_IDP },
      { sub: 'x1', act: { sub: 'agent-x', iss: OTHER_IDP } },
      // Nor an issuer it is not trusted for here: what it says of another issuer's parties is not its to say.
      { sub: 'agent-x', iss: 'https://untrusted.test' },
    ]) {
      const res = await exchange('agent-b', { subject_token: await userToken({ act }), audience: 'https://api.test' });
      assert.equal(await deniedFor(res), 'subject_token_act_names_issuer', JSON.stringify(act));
      await expectError(res, 400, 'invalid_request');
    }
    // The other identity provider's own token naming its own agent-x (with or without iss) is delegated.
    for (const act of [{ sub: 'agent-x', iss: OTHER_IDP }, { sub: 'agent-x' }]) {
      const subject = await sign(otherIdpKey, claims({ iss: OTHER_IDP, sub: 'alice', aud: 'https://agents.test', scope: 'api:read', act }));
      const t = await ok(await exchange('agent-b', { subject_token: subject, audience: 'https://api.test' }));
      assert.deepEqual(decodeJwt(t.access_token).act, { sub: 'agent-b', act: { sub: 'agent-x', iss: OTHER_IDP } });
      assert.deepEqual((await exchangedEvent(t.access_token))?.actor_chain, ['agent-b', `agent-x (${OTHER_IDP})`]);
    }
  });

  it('refuses an external subject token whose act names an actor of this issuer', async () => {
    const subject = await userToken({ act: { sub: 'x1', act: { sub: 'agent-a', iss: issuer.service.issuer } } });
    const res = await exchange('agent-b', { subject_token: subject, audience: 'https://api.test' });
    assert.equal(await deniedFor(res), 'subject_token_act_names_issuer');
    await expectError(res, 400, 'invalid_request');
  });

  it('attack: refuses an external subject token whose act has an empty iss (read as absent, it would name this issuer’s client agent-a)', async () => {
    for (const act of [
      { sub: 'agent-a', iss: '' },
      { sub: 'x1', act: { sub: 'agent-a', iss: '' } },
    ]) {
      const res = await exchange('agent-b', { subject_token: await userToken({ act }), audience: 'https://api.test' });
      // The verifier refuses an empty act.iss as a malformed actor (token_claim_invalid, claim act)
      // before the exchange reads the chain; its own check (subject_token_act_names_issuer) stays behind it.
      assert.equal(await deniedFor(res), 'subject_token_invalid', JSON.stringify(act));
      await expectError(res, 400, 'invalid_request');
    }
  });

  it('attack: an external subject token’s own act chain counts toward max_chain_depth, here and on every later exchange (a chain cannot be reset)', async () => {
    // max_chain_depth is 3: the IdP's three actors leave no room for agent-b.
    const deep = await userToken({ act: { sub: 'x1', act: { sub: 'x2', act: { sub: 'x3' } } } });
    const res = await exchange('agent-b', { subject_token: deep, audience: 'https://api.test' });
    assert.equal(await deniedFor(res), 'delegation_chain_too_deep');
    await expectError(res, 400, 'invalid_request');
    // Two leave room for agent-b, and none after it: agent-a (its token's audience) is refused.
    const two = await userToken({ act: { sub: 'x1', act: { sub: 'x2' } } });
    const t = await ok(await exchange('agent-b', { subject_token: two, audience: ['agent-a', 'https://api.test'] }));
    const again = await exchange('agent-a', { subject_token: t.access_token, audience: 'https://api.test', scope: 'api:read' });
    assert.equal(await deniedFor(again), 'delegation_chain_too_deep');
    await expectError(again, 400, 'invalid_request');
  });

  it('nests the chain of this service’s own token as it is, issuers included', async () => {
    const subject = await userToken({ act: { sub: 'x1' } });
    const t1 = await ok(await exchange('agent-b', { subject_token: subject, audience: ['agent-a', 'https://api.test'] }));
    const chain = { sub: 'agent-b', act: { sub: 'x1', iss: IDP } };
    assert.deepEqual(decodeJwt(t1.access_token).act, chain);
    const t2 = await ok(await exchange('agent-a', { subject_token: t1.access_token, audience: 'https://api.test', scope: 'api:read' }));
    assert.deepEqual(decodeJwt(t2.access_token).act, { sub: 'agent-a', act: chain });
    assert.deepEqual((await exchangedEvent(t2.access_token))?.actor_chain, ['agent-a', 'agent-b', `x1 (${IDP})`]);
  });
});

describe('may_act across trusted issuers (RFC 8693 §4.4, §4.1)', () => {
  it('attack: an IdP’s may_act without iss is not met by a same-named actor of another trusted issuer (may_act issuer confusion)', async () => {
    const IDP2 = 'https://idp2.test';
    const idp2Key = makeKey('ES256', 'idp2-1');
    const a = await startIssuer({
      config: {
        issuers: [
          { issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } },
          { issuer: IDP2, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idp2Key.jwk] } },
        ],
      } as never,
    });
    try {
      const evil = await a.addClient({ id: 'evil', scopes: ['api:read'], audiences: ['https://api.test'], grantTypes: [EXCHANGE] });
      const swap = (subject_token: string, actor_token: string) =>
        a.post(
          '/oauth2/token',
          { grant_type: EXCHANGE, subject_token_type: AT, subject_token, actor_token, actor_token_type: AT, audience: 'https://api.test' },
          { authorization: basic(evil.id, evil.secret) },
        );
      // alice lets only the IdP's own bot-7 act for her: may_act without iss is in the IdP's namespace.
      const subject = await userToken({ may_act: { sub: 'bot-7' }, scope: 'api:read' });
      // Another trusted issuer's identity that happens to be named bot-7, held by the client evil.
      const impostor = await sign(idp2Key, claims({ iss: IDP2, sub: 'bot-7', client_id: 'evil', aud: 'https://agents.test' }));
      const res = await swap(subject, impostor);
      assert.equal(res.status, 400, await res.clone().text());
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
      await a.service.audit.flush();
      const requestId = res.headers.get('x-request-id') as string;
      const [denied] = await a.store.queryAudit({ request_id: requestId, kinds: ['token.denied'], limit: 10 });
      assert.equal(denied?.reason, 'actor_not_permitted');
      // The IdP's own bot-7 (the IdP vouches that evil holds it) is the actor alice named.
      const bot = await sign(idpKey, claims({ iss: IDP, sub: 'bot-7', client_id: 'evil', aud: 'https://agents.test' }));
      const ok = await swap(subject, bot);
      assert.equal(ok.status, 200, await ok.clone().text());
      assert.deepEqual(decodeJwt(((await ok.json()) as { access_token: string }).access_token).act, { sub: 'bot-7', iss: IDP });
    } finally {
      await a.close();
    }
  });
});

describe('the subject’s issuer in re-issued tokens (RFC 9493 sub_id)', () => {
  const IDP2 = 'https://idp2.test';
  const idp2Key = makeKey('ES256', 'idp2-1');
  let a: RunningIssuer;
  let relay: { id: string; secret: string };
  let helper: { id: string; secret: string };
  before(async () => {
    a = await startIssuer({
      config: {
        issuers: [
          { issuer: IDP, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idpKey.jwk] } },
          { issuer: IDP2, audiences: ['https://agents.test'], algorithms: ['ES256'], jwks: { keys: [idp2Key.jwk] } },
        ],
      } as never,
    });
    const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
    relay = await a.addClient({ id: 'relay', scopes: ['api:read'], audiences: ['https://api.test', 'helper'], grantTypes });
    helper = await a.addClient({ id: 'helper', scopes: ['api:read'], audiences: ['https://api.test'], grantTypes });
  });
  after(() => a?.close());

  const as = (c: { id: string; secret: string }, form: Record<string, string | string[]>) =>
    a.post('/oauth2/token', form, { authorization: basic(c.id, c.secret) });
  const swap = async (c: { id: string; secret: string }, subject_token: string, audience = ['https://api.test', 'helper']) =>
    (await ok(await as(c, { grant_type: EXCHANGE, subject_token_type: AT, subject_token, audience }))) as {
      access_token: string;
      refresh_token?: string;
    };
  const idpAlice = (key = idpKey, iss = IDP, over: Record<string, unknown> = {}) =>
    sign(key, claims({ iss, sub: 'alice', aud: 'https://agents.test', scope: 'api:read', ...over }));
  const introspect = async (token: string, c = relay) =>
    (await (await a.post('/oauth2/introspect', { token }, { authorization: basic(c.id, c.secret) })).json()) as Record<string, unknown>;

  it('names each trusted issuer of two same-named subjects: the sub is the same, the sub_id is not', async () => {
    const one = decodeJwt((await swap(relay, await idpAlice())).access_token);
    const two = decodeJwt((await swap(relay, await idpAlice(idp2Key, IDP2))).access_token);
    assert.equal(one.iss, a.url);
    assert.equal(one.sub, 'alice');
    assert.equal(two.sub, 'alice');
    assert.deepEqual(one.sub_id, { format: 'iss_sub', iss: IDP, sub: 'alice' });
    assert.deepEqual(two.sub_id, { format: 'iss_sub', iss: IDP2, sub: 'alice' });
  });

  it('keeps the original issuer through a chained exchange and a refresh, and introspection shows it', async () => {
    const first = await swap(relay, await idpAlice(idp2Key, IDP2));
    const expected = { format: 'iss_sub', iss: IDP2, sub: 'alice' };
    const child = await swap(helper, first.access_token, ['https://api.test']);
    assert.equal(decodeJwt(child.access_token).iss, a.url);
    assert.deepEqual(decodeJwt(child.access_token).sub_id, expected, 'the grandchild still names the IdP');
    assert.ok(child.refresh_token);
    const res = await as(helper, { grant_type: 'refresh_token', refresh_token: child.refresh_token as string });
    const refreshed = (await res.json()) as { access_token: string; refresh_token: string };
    assert.equal(res.status, 200, JSON.stringify(refreshed));
    assert.deepEqual(decodeJwt(refreshed.access_token).sub_id, expected);
    // RFC 7662: the access token's claims, and the refresh token's grant, name the subject's issuer.
    const at = await introspect(refreshed.access_token, helper);
    assert.equal(at.active, true);
    assert.deepEqual(at.sub_id, expected);
    const rt = await introspect(refreshed.refresh_token, helper);
    assert.equal(rt.active, true);
    assert.equal(rt.sub, 'alice');
    assert.deepEqual(rt.sub_id, expected);
  });

  it('attack: an external token’s own sub_id claiming another issuer’s subject is not copied; the verified iss and sub are', async () => {
    // IdP2 tries to pass its user for the corporate IdP's alice.
    const forged = await idpAlice(idp2Key, IDP2, { sub: 'mallory', sub_id: { format: 'iss_sub', iss: IDP, sub: 'alice' } });
    const issued = await swap(relay, forged);
    const c = decodeJwt(issued.access_token);
    assert.equal(c.sub, 'mallory');
    assert.deepEqual(c.sub_id, { format: 'iss_sub', iss: IDP2, sub: 'mallory' });
    // Nor through a chained exchange or a refresh: the grant, not a token, is the source.
    const child = await swap(helper, issued.access_token, ['https://api.test']);
    assert.deepEqual(decodeJwt(child.access_token).sub_id, { format: 'iss_sub', iss: IDP2, sub: 'mallory' });
    // A sub_id in another format (an email) is not copied either.
    const email = decodeJwt(
      (await swap(relay, await idpAlice(idpKey, IDP, { sub_id: { format: 'email', email: 'ceo@corp.test' } }))).access_token,
    );
    assert.deepEqual(email.sub_id, { format: 'iss_sub', iss: IDP, sub: 'alice' });
  });

  it('gives no sub_id to this issuer’s own subjects: a client_credentials token, a minted person, their exchanges and refreshes', async () => {
    const cc = await ok(await as(relay, { grant_type: 'client_credentials', audience: 'helper' }));
    assert.equal(decodeJwt(cc.access_token).sub_id, undefined);
    const minted = await a.service.mint({ clientId: 'relay', subject: 'alice', ttl: 600, audiences: ['https://api.test', 'helper'] });
    assert.equal(decodeJwt(minted.access_token).sub_id, undefined);
    const child = await swap(helper, minted.access_token, ['https://api.test']);
    assert.equal(decodeJwt(child.access_token).sub_id, undefined);
    const res = await as(helper, { grant_type: 'refresh_token', refresh_token: child.refresh_token as string });
    const refreshed = (await res.json()) as { access_token: string; refresh_token: string };
    assert.equal(res.status, 200, JSON.stringify(refreshed));
    assert.equal(decodeJwt(refreshed.access_token).sub_id, undefined);
    assert.equal((await introspect(refreshed.refresh_token, helper)).sub_id, undefined);
  });
});
