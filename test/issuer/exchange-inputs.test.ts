/**
 * RFC 8693 token exchange against what an attacker controls at the token endpoint: the subject
 * and actor tokens (from a trusted external issuer whose keys a real loopback JWKS server serves),
 * their declared types, the target and repeated parameters, lifetimes, and the state of the grant
 * and client behind them. One test per attack; each asserts the status, the RFC error and the
 * reason code audited.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';

const IDP = 'https://idp.inputs.test';
/** A second trusted issuer configured to accept only explicitly typed access tokens (`token_type: at+jwt`). */
const TYPED_IDP = 'https://typed-idp.inputs.test';
const AGENTS = 'https://agents.test';
const API = 'https://api.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const idpKey = makeKey('ES256', 'inputs-idp-1');
const typedKey = makeKey('ES256', 'inputs-typed-1');

let jwksServer: Server;
let issuer: RunningIssuer;
const clients: Record<string, { id: string; secret: string }> = {};

before(async () => {
  // The identity providers' keys, served over loopback HTTP as a real jwks_uri.
  jwksServer = createServer((req, res) => {
    const keys = req.url === '/idp/jwks.json' ? [idpKey.jwk] : req.url === '/typed/jwks.json' ? [typedKey.jwk] : undefined;
    if (keys === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}`;
  issuer = await startIssuer({
    config: {
      issuers: [
        { issuer: IDP, audiences: [AGENTS], algorithms: ['ES256'], jwks_uri: `${base}/idp/jwks.json` },
        { issuer: TYPED_IDP, audiences: [AGENTS], algorithms: ['ES256'], jwks_uri: `${base}/typed/jwks.json`, token_type: 'at+jwt' },
      ],
      token_service: { max_chain_depth: 3, access_token_ttl: '10m', max_access_token_ttl: '1h' },
    },
  });
  const grantTypes = ['client_credentials', EXCHANGE];
  clients.broker = await issuer.addClient({ id: 'broker', scopes: ['api:read', 'api:write'], audiences: [API, 'agent'], grantTypes });
  clients.agent = await issuer.addClient({ id: 'agent', scopes: ['api:read'], audiences: [API], grantTypes });
});
after(async () => {
  await issuer?.close();
  jwksServer?.closeAllConnections();
  await new Promise<void>((resolve) => (jwksServer ? jwksServer.close(() => resolve()) : resolve()));
});

const now = () => Math.floor(Date.now() / 1000);
const userToken = (over: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
  sign(idpKey, claims({ iss: IDP, sub: 'alice', aud: AGENTS, client_id: 'web-app', scope: 'api:read api:write', ...over }), header);

async function exchange(client: string, form: Record<string, string | string[]>): Promise<Response> {
  const c = clients[client] as { id: string; secret: string };
  return issuer.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token_type: AT, audience: API, ...form },
    { authorization: basic(c.id, c.secret) },
  );
}

async function ok(res: Response): Promise<{ access_token: string; expires_in: number; refresh_token?: string }> {
  const body = (await res.json()) as { access_token: string; expires_in: number; error?: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/** Assert the refusal: status, RFC error, and the reason code (and verifier reason) audited for it. */
async function refused(res: Response, reason: string, options: { status?: number; error?: string; verifier?: string } = {}) {
  const body = (await res.json()) as { error: string };
  assert.equal(res.status, options.status ?? 400, JSON.stringify(body));
  assert.equal(body.error, options.error ?? 'invalid_request');
  await issuer.service.audit.flush();
  const requestId = res.headers.get('x-request-id') as string;
  const [event] = await issuer.store.queryAudit({ request_id: requestId, kinds: ['token.denied'], limit: 10 });
  assert.equal(event?.reason, reason, JSON.stringify(event));
  if (options.verifier !== undefined) assert.equal(event?.detail?.verifier_reason, options.verifier, JSON.stringify(event?.detail));
}

describe('token confusion: an external token minted for another application', () => {
  it('attack: an IdP token whose aud is another application (string or array) is refused: aud must contain one of issuers[].audiences', async () => {
    for (const aud of ['https://app-b.test', ['https://app-b.test'], ['https://app-b.test', 'https://app-c.test'], []]) {
      await refused(await exchange('broker', { subject_token: await userToken({ aud }) }), 'subject_token_invalid', {
        verifier: 'token_audience_invalid',
      });
    }
    // A token for several audiences, one of them the configured one, is a token for Tessera too (RFC 7519 §4.1.3).
    await ok(await exchange('broker', { subject_token: await userToken({ aud: ['https://app-b.test', AGENTS] }) }));
  });

  it('attack: a token for another application whose azp names Tessera’s audience is refused (azp is no audience)', async () => {
    await refused(
      await exchange('broker', { subject_token: await userToken({ aud: 'https://app-b.test', azp: AGENTS }) }),
      'subject_token_invalid',
      { verifier: 'token_audience_invalid' },
    );
  });

  it('attack: an OpenID Connect ID token (typ JWT, aud its client id, nonce) is refused, declared as access_token, jwt or id_token', async () => {
    const idToken = await userToken(
      { aud: 'web-app', azp: 'web-app', nonce: 'n-0S6_WzA2Mj', auth_time: now(), scope: undefined, client_id: undefined },
      { typ: 'JWT' },
    );
    for (const type of [AT, JWT]) {
      await refused(await exchange('broker', { subject_token: idToken, subject_token_type: type }), 'subject_token_invalid', {
        verifier: 'token_audience_invalid',
      });
    }
    // RFC 8693 §3 names an id_token type; Tessera exchanges only access tokens and JWTs.
    await refused(
      await exchange('broker', { subject_token: idToken, subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }),
      'token_type_unsupported',
    );
  });

  it('attack: an ID token of an issuer configured with token_type at+jwt is refused even for a configured audience; its at+jwt access token is not', async () => {
    const typed = (header: Record<string, unknown>) =>
      sign(typedKey, claims({ iss: TYPED_IDP, sub: 'alice', aud: AGENTS, scope: 'api:read' }), header);
    for (const typ of ['JWT', undefined]) {
      const header = typ === undefined ? {} : { typ };
      await refused(await exchange('broker', { subject_token: await typed(header) }), 'subject_token_invalid', {
        verifier: 'token_typ_invalid',
      });
    }
    await ok(await exchange('broker', { subject_token: await typed({ typ: 'at+jwt' }) }));
  });

  it('attack: a JWT the IdP explicitly typed as another kind (logout token, security event, DPoP proof) is no access token: refused as subject and as actor token (RFC 8725 §3.11)', async () => {
    for (const typ of ['logout+jwt', 'application/logout+jwt', 'secevent+jwt', 'dpop+jwt', 'Token-Introspection+JWT']) {
      const extra = { events: { 'http://schemas.openid.net/event/backchannel-logout': {} } };
      for (const type of [AT, JWT]) {
        await refused(
          await exchange('broker', { subject_token: await userToken(extra, { typ }), subject_token_type: type }),
          'subject_token_invalid',
          { verifier: 'token_typ_invalid' },
        );
      }
      const actor = await userToken({ sub: 'workflow-1', client_id: 'broker' }, { typ });
      await refused(
        await exchange('broker', { subject_token: await userToken(), actor_token: actor, actor_token_type: AT }),
        'actor_token_invalid',
        { verifier: 'token_typ_invalid' },
      );
    }
    // Untyped, `JWT` and `at+jwt` tokens of an issuer without token_type are still exchanged.
    for (const header of [{}, { typ: 'JWT' }, { typ: 'at+jwt' }, { typ: 'application/at+jwt' }]) {
      await ok(await exchange('broker', { subject_token: await userToken({}, header) }));
    }
  });

  it('attack: an external actor_token whose azp names another client than its client_id is refused (the token was issued to that other party)', async () => {
    // An IdP that lets a client add claims (a hard-coded claim mapper) lets client "evil" mint a
    // token with client_id "broker"; azp, which the IdP sets itself, still names evil.
    const actor = await userToken({ sub: 'workflow-2', client_id: 'broker', azp: 'evil' });
    await refused(
      await exchange('broker', { subject_token: await userToken(), actor_token: actor, actor_token_type: AT }),
      'actor_token_not_client',
    );
    // azp naming the client itself, or absent, is the client's own actor token.
    for (const azp of ['broker', undefined]) {
      const own = await userToken({ sub: 'workflow-2', client_id: 'broker', azp });
      const t = await ok(await exchange('broker', { subject_token: await userToken(), actor_token: own, actor_token_type: AT }));
      assert.deepEqual(decodeJwt(t.access_token).act, { sub: 'workflow-2', iss: IDP });
    }
  });
});

describe('declared token types (RFC 8693 §2.1, §3)', () => {
  it('attack: an unknown, SAML or empty subject_token_type is refused (token_type_unsupported, or the parameter missing)', async () => {
    for (const type of [
      'urn:x:unknown',
      'urn:ietf:params:oauth:token-type:saml2',
      'urn:ietf:params:oauth:token-type:access_token ',
      'access_token',
    ]) {
      await refused(await exchange('broker', { subject_token: await userToken(), subject_token_type: type }), 'token_type_unsupported');
    }
    await refused(await exchange('broker', { subject_token: await userToken(), subject_token_type: '' }), 'request_parameter_missing');
  });

  it('attack: a Tessera refresh token as actor_token is refused, whatever type it is declared as', async () => {
    const refresher = await issuer.addClient({
      id: 'refresher',
      scopes: ['api:read'],
      audiences: [API],
      grantTypes: ['client_credentials', EXCHANGE, 'refresh_token'],
    });
    clients.refresher = refresher;
    const rt = (await ok(await exchange('refresher', { subject_token: await userToken() }))).refresh_token as string;
    assert.match(rt, /^trt_/);
    for (const type of [AT, JWT]) {
      await refused(
        await exchange('refresher', { subject_token: await userToken(), actor_token: rt, actor_token_type: type }),
        'actor_token_invalid',
      );
    }
    await refused(
      await exchange('refresher', {
        subject_token: await userToken(),
        actor_token: rt,
        actor_token_type: 'urn:ietf:params:oauth:token-type:refresh_token',
      }),
      'token_type_unsupported',
    );
  });

  it('attack: actor_token_type without actor_token is refused (RFC 8693 §2.1), and an unknown actor_token_type too', async () => {
    await refused(await exchange('broker', { subject_token: await userToken(), actor_token_type: AT }), 'request_parameter_invalid');
    const actor = await userToken({ sub: 'workflow-3', client_id: 'broker' });
    await refused(
      await exchange('broker', { subject_token: await userToken(), actor_token: actor, actor_token_type: 'urn:x:unknown' }),
      'token_type_unsupported',
    );
  });
});

describe('may_act of an external subject token (RFC 8693 §4.4)', () => {
  it('attack: a may_act of the wrong shape (a string, an array, null, {}, or without sub) names no one: refused, not read as absent', async () => {
    for (const mayAct of ['broker', ['broker'], [{ sub: 'broker' }], null, {}, { iss: IDP }, { sub: ['broker'] }]) {
      await refused(await exchange('broker', { subject_token: await userToken({ may_act: mayAct }) }), 'actor_not_permitted');
    }
  });
});

describe('targets and repeated parameters', () => {
  it('attack: resource and audience that disagree, one outside the client’s audiences, are refused whole (invalid_target)', async () => {
    await refused(
      await exchange('agent', { subject_token: await userToken(), resource: API, audience: 'https://admin.test' }),
      'target_not_allowed',
      { error: 'invalid_target' },
    );
    await refused(
      await exchange('agent', { subject_token: await userToken(), resource: 'https://admin.test', audience: API }),
      'target_not_allowed',
      { error: 'invalid_target' },
    );
  });

  it('attack: a repeated single-valued parameter (scope, subject_token, subject_token_type, actor_token, requested_token_type) is refused (RFC 6749 §3.1); audience may repeat (RFC 8693 §2.1)', async () => {
    const subject = await userToken();
    const actor = await userToken({ sub: 'workflow-4', client_id: 'broker' });
    const forms: Record<string, string | string[]>[] = [
      { subject_token: subject, scope: ['api:read', 'api:write'] },
      { subject_token: subject, scope: ['api:read', ''] },
      { subject_token: [subject, await userToken({ sub: 'bob' })] },
      { subject_token: subject, subject_token_type: [AT, JWT] },
      { subject_token: subject, actor_token: [actor, actor], actor_token_type: AT },
      { subject_token: subject, actor_token: actor, actor_token_type: [AT, AT] },
      { subject_token: subject, requested_token_type: [AT, JWT] },
    ];
    for (const form of forms) {
      await refused(await exchange('broker', form), 'request_parameter_repeated');
    }
    const t = await ok(await exchange('broker', { subject_token: subject, audience: [API, 'agent'] }));
    assert.deepEqual(decodeJwt(t.access_token).aud, [API, 'agent']);
  });
});

describe('lifetimes of an external subject token', () => {
  it('attack: an IdP token living longer than its issuer’s max_lifetime is refused; one within it gives a token no longer than max_access_token_ttl', async () => {
    await refused(
      await exchange('broker', { subject_token: await userToken({ iat: now(), exp: now() + 10 * 86_400 }) }),
      'subject_token_invalid',
      { verifier: 'token_lifetime_exceeded' },
    );
    const t = await ok(await exchange('broker', { subject_token: await userToken({ iat: now(), exp: now() + 23 * 3600 }) }));
    assert.ok(t.expires_in <= 600, String(t.expires_in));
    const c = decodeJwt(t.access_token);
    assert.ok((c.exp as number) - (c.iat as number) <= 600);
  });

  it('attack: an IdP token expiring in 1 s gives a token that expires with it; one already expired within the clock skew gives none', async () => {
    const t = await ok(await exchange('broker', { subject_token: await userToken({ exp: now() + 1 }) }));
    assert.ok(t.expires_in <= 1, String(t.expires_in));
    const n = now();
    assert.ok((decodeJwt(t.access_token).exp as number) <= n + 1);
    // The verifier tolerates 30 s of clock skew on exp; the exchange never issues past the exp itself.
    await refused(await exchange('broker', { subject_token: await userToken({ iat: n - 60, exp: n - 5 }) }), 'subject_token_invalid');
  });

  it('attack: an IdP token not yet valid (nbf beyond the clock skew) is refused', async () => {
    await refused(
      await exchange('broker', { subject_token: await userToken({ nbf: now() + 600, exp: now() + 900 }) }),
      'subject_token_invalid',
      { verifier: 'token_not_yet_valid' },
    );
  });
});

describe('the grant and client behind a Tessera subject token', () => {
  it('attack: a subject token whose access token was revoked (RFC 7009) between issuance and exchange is refused', async () => {
    const t1 = await ok(await exchange('broker', { subject_token: await userToken(), audience: [API, 'agent'] }));
    const b = clients.broker as { id: string; secret: string };
    const res = await issuer.post('/oauth2/revoke', { token: t1.access_token }, { authorization: basic(b.id, b.secret) });
    assert.equal(res.status, 200);
    await refused(await exchange('agent', { subject_token: t1.access_token }), 'subject_token_invalid');
  });

  it('attack: a disabled client cannot exchange (invalid_client), and a token issued to a client since disabled is no subject token', async () => {
    const grantTypes = ['client_credentials', EXCHANGE];
    clients.giver = await issuer.addClient({ id: 'giver', scopes: ['api:read'], audiences: [API, 'taker'], grantTypes });
    clients.taker = await issuer.addClient({ id: 'taker', scopes: ['api:read'], audiences: [API], grantTypes });
    const t1 = await ok(await exchange('giver', { subject_token: await userToken(), audience: [API, 'taker'], scope: 'api:read' }));
    await ok(await exchange('taker', { subject_token: t1.access_token }));
    await issuer.service.setClientDisabled('giver', true);
    await refused(await exchange('taker', { subject_token: t1.access_token }), 'subject_token_invalid');
    await issuer.service.setClientDisabled('taker', true);
    await refused(await exchange('taker', { subject_token: await userToken() }), 'client_disabled', {
      status: 401,
      error: 'invalid_client',
    });
  });
});
