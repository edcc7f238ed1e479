/**
 * A client registered as always using DPoP (RFC 9449 §5.2 `dpop_bound_access_tokens`, `tessera
 * clients add --dpop-bound`): every token request of it without a DPoP proof is refused, whatever
 * the grant, so no bearer token is ever issued to it. With a proof each grant issues a DPoP-bound
 * token as for any client (bound to the proof's key: no key is registered with the client, so its
 * stolen secret is not made worthless); other clients are unaffected.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, type JWK, SignJWT } from 'jose';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

let issuer: RunningIssuer;
let bound: { id: string; secret: string };
let web: { id: string; secret: string };
let plain: { id: string; secret: string };
let jkt: string;

before(async () => {
  issuer = await startIssuer();
  jkt = await calculateJwkThumbprint(holderJwk);
  bound = await issuer.addClient({ id: 'dpop-only', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE], dpopBound: true });
  web = await issuer.addClient({
    id: 'dpop-web',
    scopes: ['api:read'],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: [REDIRECT],
    dpopBound: true,
  });
  await issuer.service.registerClient({
    id: 'dpop-pub',
    public: true,
    scopes: ['api:read'],
    audiences: ['https://api.test'],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: [REDIRECT],
    dpopBound: true,
  });
  plain = await issuer.addClient({ id: 'plain', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE] });
});
after(() => issuer?.close());

function proof(): Promise<string> {
  return new SignJWT({ htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: holderJwk } as never)
    .sign(holder.privateKey);
}

const token = (form: Record<string, string>, headers: Record<string, string>, dpop?: string) =>
  issuer.post('/oauth2/token', form, { ...headers, ...(dpop !== undefined ? { dpop } : {}) });

/** Refused 400 invalid_request, audited as client_dpop_proof_required for `grantType`, with no proof or secret in the answer or the event. */
async function expectProofRequired(res: Response, clientId: string, grantType: string): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 400, text);
  assert.deepEqual(JSON.parse(text), {
    error: 'invalid_request',
    error_description: 'This client is registered to use DPoP (dpop_bound_access_tokens): the token request needs a DPoP proof.',
  });
  await issuer.service.audit.flush();
  const denied = (await issuer.store.queryAudit({ client_id: clientId, limit: 1000 })).filter((e) => e.kind === 'token.denied');
  assert.equal(denied.at(-1)?.reason, 'client_dpop_proof_required');
  assert.equal(denied.at(-1)?.detail?.grant_type, grantType);
}

/** A DPoP-bound success: token_type DPoP, cnf.jkt the holder key's thumbprint. */
async function expectBound(res: Response): Promise<{ access_token: string; refresh_token?: string }> {
  const body = (await res.json()) as { access_token: string; token_type: string; refresh_token?: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.token_type, 'DPoP');
  assert.deepEqual(decodeJwt(body.access_token).cnf, { jkt });
  return body;
}

/** A code `clientId` got for `person` (the consent given in-process). */
async function code(clientId: string, person: string): Promise<{ code: string; verifier: string }> {
  const { verifier, challenge } = pkcePair();
  const outcome = await issuer.service.checkAuthorizationRequest(
    new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      scope: 'api:read',
      resource: 'https://api.test',
    }),
  );
  if (!outcome.ok) throw new Error(outcome.error.code);
  return { code: await issuer.service.approveAuthorization(outcome.request, { subject: person, source: 'test' }), verifier };
}

describe('a DPoP-bound client (RFC 9449 §5.2 dpop_bound_access_tokens)', () => {
  it('attack: its stolen secret used for client_credentials without a proof is refused (client_dpop_proof_required); with a proof the token is DPoP-bound', async () => {
    const auth = { authorization: basic(bound.id, bound.secret) };
    await expectProofRequired(await token({ grant_type: 'client_credentials' }, auth), 'dpop-only', 'client_credentials');
    await expectBound(await token({ grant_type: 'client_credentials' }, auth, await proof()));
  });

  it('attack: a token exchange by it without a proof is refused, even of an unbound subject token; with a proof it issues a DPoP-bound token', async () => {
    // A bearer token the client got before it was registered as DPoP-bound.
    const broker = await issuer.addClient({ id: 'broker', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE] });
    const auth = { authorization: basic(broker.id, broker.secret) };
    const subject = ((await (await token({ grant_type: 'client_credentials' }, auth)).json()) as { access_token: string }).access_token;
    assert.equal(decodeJwt(subject).cnf, undefined);
    await issuer.service.updateClient('broker', { dpopBound: true }, 'test');
    const form = { grant_type: EXCHANGE, subject_token: subject, subject_token_type: ACCESS_TOKEN };
    await expectProofRequired(await token(form, auth), 'broker', EXCHANGE);
    await expectBound(await token(form, auth, await proof()));
  });

  it('attack: a confidential client’s stolen secret and refresh token without a proof are refused, code redemption and refresh alike, and spend nothing', async () => {
    const auth = { authorization: basic(web.id, web.secret) };
    const c = await code('dpop-web', 'alice@example.com');
    const redeem = { grant_type: 'authorization_code', code: c.code, code_verifier: c.verifier, redirect_uri: REDIRECT };
    await expectProofRequired(await token(redeem, auth), 'dpop-web', 'authorization_code');
    // The refusal did not spend the code: its holder redeems it with a proof.
    const first = await expectBound(await token(redeem, auth, await proof()));
    assert.ok(first.refresh_token);
    const refresh = { grant_type: 'refresh_token', refresh_token: first.refresh_token };
    await expectProofRequired(await token(refresh, auth), 'dpop-web', 'refresh_token');
    // Nor the refresh token: no reuse detection tripped, the holder refreshes with a proof.
    const next = await expectBound(await token(refresh, auth, await proof()));
    assert.ok(next.refresh_token);
  });

  it('attack: a public client’s code or refresh token without a proof is refused; with one it redeems and refreshes DPoP-bound', async () => {
    const c = await code('dpop-pub', 'bob@example.com');
    const redeem = {
      grant_type: 'authorization_code',
      code: c.code,
      code_verifier: c.verifier,
      redirect_uri: REDIRECT,
      client_id: 'dpop-pub',
    };
    await expectProofRequired(await token(redeem, {}), 'dpop-pub', 'authorization_code');
    const first = await expectBound(await token(redeem, {}, await proof()));
    const refresh = { grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '', client_id: 'dpop-pub' };
    await expectProofRequired(await token(refresh, {}), 'dpop-pub', 'refresh_token');
    await expectBound(await token(refresh, {}, await proof()));
  });

  it('limit: the flag names no key, so whoever holds a confidential client’s secret (and refresh token) gets tokens with a proof of a key of its own, bound to that key', async () => {
    // RFC 9449 §5.0: a confidential client’s refresh token is bound to its authentication, not to a
    // DPoP key, and no key is registered with the client: the flag keeps bearer tokens from being
    // issued to it, it does not make its secret worthless (docs/token-service.md says so).
    const thief = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const thiefJwk = thief.publicKey.export({ format: 'jwk' }) as JWK;
    const thiefProof = () =>
      new SignJWT({ htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })
        .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: thiefJwk } as never)
        .sign(thief.privateKey);
    const auth = { authorization: basic(web.id, web.secret) };
    const c = await code('dpop-web', 'carol@example.com');
    const redeem = { grant_type: 'authorization_code', code: c.code, code_verifier: c.verifier, redirect_uri: REDIRECT };
    const first = await expectBound(await token(redeem, auth, await proof()));
    const res = await token({ grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '' }, auth, await thiefProof());
    const body = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(body.access_token).cnf, { jkt: await calculateJwkThumbprint(thiefJwk) });
  });

  it('an invalid proof is still invalid_dpop_proof (dpop_proof_invalid), not a missing one', async () => {
    const res = await token({ grant_type: 'client_credentials' }, { authorization: basic(bound.id, bound.secret) }, 'not-a-proof');
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_dpop_proof');
  });

  it('leaves other clients as they were: a token request without a proof gets a bearer token', async () => {
    const res = await token({ grant_type: 'client_credentials' }, { authorization: basic(plain.id, plain.secret) });
    const body = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(res.status, 200);
    assert.equal(body.token_type, 'Bearer');
    assert.equal(decodeJwt(body.access_token).cnf, undefined);
  });

  it('turned on later (updateClient dpopBound), refuses the client’s next request without a proof; turned off, serves it again', async () => {
    const auth = { authorization: basic(plain.id, plain.secret) };
    assert.deepEqual((await issuer.service.updateClient('plain', { dpopBound: true }, 'test'))?.changed, ['dpop_bound_access_tokens']);
    try {
      await expectProofRequired(await token({ grant_type: 'client_credentials' }, auth), 'plain', 'client_credentials');
      await expectBound(await token({ grant_type: 'client_credentials' }, auth, await proof()));
    } finally {
      assert.deepEqual((await issuer.service.updateClient('plain', { dpopBound: false }, 'test'))?.changed, ['dpop_bound_access_tokens']);
    }
    assert.equal((await token({ grant_type: 'client_credentials' }, auth)).status, 200);
    await issuer.service.audit.flush();
    const updated = (await issuer.store.queryAudit({ client_id: 'plain', limit: 1000 })).filter((e) => e.kind === 'client.updated');
    assert.deepEqual(
      updated.map((e) => e.detail),
      [
        { dpop_bound_access_tokens: true, by: 'test' },
        { dpop_bound_access_tokens: false, by: 'test' },
      ],
    );
  });
});
