/**
 * `issuers[].exchange_clients`: a trusted identity provider's tokens are exchanged (as subject or
 * actor token) only by the clients its entry lists. Its `audiences` say what its tokens are for and
 * are shared with the gateway; without this list any client registered for token exchange could
 * swap any user's IdP token it came by for a Tessera token in that user's name.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { externalIssuers } from '../../src/server/bootstrap.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
/** Lists the broker alone. */
const IDP = 'https://idp.test';
/** Lists no client: trusted by the gateway only. */
const GATEWAY_ONLY = 'https://gateway-only.test';
/** No list: any exchange client, with a warning. */
const UNLISTED = 'https://unlisted.test';
const keys: Record<string, ReturnType<typeof makeKey>> = {
  [IDP]: makeKey('ES256', 'idp-1'),
  [GATEWAY_ONLY]: makeKey('ES256', 'gw-1'),
  [UNLISTED]: makeKey('ES256', 'un-1'),
};
type TestKeyOf = ReturnType<typeof makeKey>;
const entry = (iss: string, extra: Record<string, unknown> = {}) => ({
  issuer: iss,
  audiences: ['https://agents.test'],
  algorithms: ['ES256' as const],
  jwks: { keys: [keys[iss]?.jwk as Record<string, unknown>] },
  ...extra,
});

let issuer: RunningIssuer;
const warnings: string[] = [];
const clients: Record<string, { id: string; secret: string }> = {};

before(async () => {
  issuer = await startIssuer({
    config: {
      issuers: [entry(IDP, { exchange_clients: ['broker'] }), entry(GATEWAY_ONLY, { exchange_clients: [] }), entry(UNLISTED)],
    },
    onServiceWarning: (m) => warnings.push(m),
  });
  const grantTypes = ['client_credentials', EXCHANGE];
  for (const id of ['broker', 'agent']) {
    clients[id] = await issuer.addClient({ id, scopes: ['api:read'], audiences: ['https://api.test'], grantTypes });
  }
});
after(() => issuer?.close());

const idpToken = (iss: string, over: Record<string, unknown> = {}) =>
  sign(keys[iss] as TestKeyOf, claims({ iss, sub: 'alice', aud: 'https://agents.test', scope: 'api:read', ...over }));

function exchange(client: string, form: Record<string, string>): Promise<Response> {
  const c = clients[client] as { id: string; secret: string };
  return issuer.post(
    '/oauth2/token',
    { grant_type: EXCHANGE, subject_token_type: AT, audience: 'https://api.test', ...form },
    { authorization: basic(c.id, c.secret) },
  );
}

async function denied(res: Response, reason: string, description: string, secrets: readonly string[]): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 400, text);
  // What an invalid token's holder gets (RFC 8693 §2.2.2): nothing about the token or the list.
  assert.deepEqual(JSON.parse(text), { error: 'invalid_request', error_description: description });
  await issuer.service.audit.flush();
  const events = await issuer.store.queryAudit({ request_id: res.headers.get('x-request-id') as string });
  assert.deepEqual(
    events.map((e) => e.kind),
    ['token.denied'],
    'nothing issued',
  );
  const [event] = events;
  assert.equal(event?.reason, reason);
  const recorded = JSON.stringify(event);
  for (const s of secrets) {
    assert.ok(!text.includes(s), 'no token in the body');
    assert.ok(!recorded.includes(s) && !recorded.includes(s.slice(s.lastIndexOf('.') + 1)), 'no token in the event');
  }
}

describe('issuers[].exchange_clients', () => {
  it('lets a listed client exchange that issuer’s token', async () => {
    const res = await exchange('broker', { subject_token: await idpToken(IDP) });
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    const c = decodeJwt(body.access_token);
    assert.equal(c.sub, 'alice');
    assert.deepEqual(c.act, { sub: 'broker' });
  });

  it('attack: a client registered for token exchange but not listed cannot swap a user’s IdP token it came by for a Tessera token in her name (subject_token_client_not_allowed)', async () => {
    const stolen = await idpToken(IDP);
    const res = await exchange('agent', { subject_token: stolen });
    await denied(res, 'subject_token_client_not_allowed', 'The subject token is invalid.', [stolen]);
    await issuer.service.audit.flush();
    const [event] = await issuer.store.queryAudit({ request_id: res.headers.get('x-request-id') as string });
    assert.equal(event?.client_id, 'agent');
    assert.deepEqual(event?.detail, { grant_type: EXCHANGE, token_issuer: IDP });
  });

  it('attack: an issuer listing no client (exchange_clients: []) is trusted by the gateway only: no client exchanges its tokens', async () => {
    const token = await idpToken(GATEWAY_ONLY);
    await denied(await exchange('broker', { subject_token: token }), 'subject_token_client_not_allowed', 'The subject token is invalid.', [
      token,
    ]);
  });

  it('attack: a non-listed client cannot present that issuer’s token as actor_token either, even one the IdP issued to it (actor_token_client_not_allowed)', async () => {
    // The IdP issued this workload token to `agent` (client_id), but does not list it for exchange.
    const actor = await idpToken(IDP, { sub: 'workflow-7', client_id: 'agent' });
    const subject = await idpToken(UNLISTED);
    const res = await exchange('agent', { subject_token: subject, actor_token: actor, actor_token_type: AT });
    await denied(res, 'actor_token_client_not_allowed', 'The actor token is invalid.', [actor, subject]);
    // The listed client's own actor token of that issuer is accepted.
    const own = await idpToken(IDP, { sub: 'workflow-8', client_id: 'broker' });
    const ok = await exchange('broker', { subject_token: await idpToken(UNLISTED), actor_token: own, actor_token_type: AT });
    const body = (await ok.json()) as { access_token: string };
    assert.equal(ok.status, 200, JSON.stringify(body));
    assert.deepEqual(decodeJwt(body.access_token).act, { sub: 'workflow-8', iss: IDP });
  });

  it('refuses an invalid token of a listed issuer as invalid (subject_token_invalid), whoever presents it: the list is read only once the token is valid', async () => {
    const forged = await sign(makeKey('ES256', 'idp-1'), claims({ iss: IDP, sub: 'alice', aud: 'https://agents.test' }));
    await denied(await exchange('agent', { subject_token: forged }), 'subject_token_invalid', 'The subject token is invalid.', [forged]);
  });

  it('keeps an issuer without the setting open to every exchange client, as before, and warns about it at start, naming the path to set', async () => {
    for (const client of ['broker', 'agent']) {
      const res = await exchange(client, { subject_token: await idpToken(UNLISTED) });
      assert.equal(res.status, 200, await res.text());
    }
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0] as string, /^issuers\[2\] \(https:\/\/unlisted\.test\): every client registered for token exchange may/);
    assert.match(warnings[0] as string, /issuers\[2\]\.exchange_clients/);
  });

  it('a reload (as tessera serve applies one) takes a client off the list from the next exchange on', async () => {
    const next = parseConfig(configSchema, {
      data_dir: issuer.dir,
      issuers: [entry(IDP, { exchange_clients: ['agent'] })],
      token_service: { issuer: issuer.url },
    });
    const ext = externalIssuers(next, issuer.service.revocations);
    assert.deepEqual(ext.warnings, []);
    issuer.service.useExternalIssuers(ext.verifier, ext.maxLifetime, ext.issuers, ext.exchangeClients);
    try {
      const token = await idpToken(IDP);
      await denied(
        await exchange('broker', { subject_token: token }),
        'subject_token_client_not_allowed',
        'The subject token is invalid.',
        [token],
      );
      assert.equal((await exchange('agent', { subject_token: await idpToken(IDP) })).status, 200);
    } finally {
      const was = externalIssuers(issuer.config, issuer.service.revocations);
      issuer.service.useExternalIssuers(was.verifier, was.maxLifetime, was.issuers, was.exchangeClients);
    }
  });
});
