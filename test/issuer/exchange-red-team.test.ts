/**
 * A red-team round on RFC 8693 token exchange, beside exchange.test.ts and exchange-inputs.test.ts:
 * what a token exchanged from a sender-constrained (DPoP, RFC 9449) subject or actor token keeps of
 * that binding once its grant is refreshed, and what its audit event records of its lineage.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, type JWK, SignJWT } from 'jose';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test';
let issuer: RunningIssuer;
const clients: Record<string, { id: string; secret: string }> = {};
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const otherJwk = other.publicKey.export({ format: 'jwk' }) as JWK;

before(async () => {
  issuer = await startIssuer();
  const grantTypes = ['client_credentials', EXCHANGE, 'refresh_token'];
  clients.user = await issuer.addClient({ id: 'xr-user', scopes: ['api:read'], audiences: [API, 'xr-agent'], grantTypes });
  clients.agent = await issuer.addClient({ id: 'xr-agent', scopes: ['api:read'], audiences: [API], grantTypes });
});
after(() => issuer?.close());

function proof(key: KeyObject = holder.privateKey, jwk: JWK = holderJwk): Promise<string> {
  const claims = { htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() };
  return new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk }).sign(key);
}
const otherProof = () => proof(other.privateKey, otherJwk);

type Answer = { status: number; body: Record<string, string> };
async function post(who: string, form: Record<string, string | string[]>, dpop?: string): Promise<Answer> {
  const c = clients[who] as { id: string; secret: string };
  const res = await issuer.post('/oauth2/token', form, { authorization: basic(c.id, c.secret), ...(dpop ? { dpop } : {}) });
  return { status: res.status, body: (await res.json()) as Record<string, string> };
}
async function token(who: string, form: Record<string, string | string[]>, dpop?: string): Promise<Record<string, string>> {
  const { status, body } = await post(who, form, dpop);
  assert.equal(status, 200, JSON.stringify(body));
  return body;
}
const refresh = (rt: string, dpop?: string) => post('agent', { grant_type: 'refresh_token', refresh_token: rt }, dpop);

async function lastDenial(): Promise<string | undefined> {
  await issuer.service.audit.flush();
  const events = await issuer.store.queryAudit({ client_id: 'xr-agent', kinds: ['token.denied'], limit: 1000 });
  return events.at(-1)?.reason;
}

/** A refresh token of the exchanged grant is usable only with a proof of the holder’s key, and keeps the token bound. */
async function expectBoundRefresh(rt: string): Promise<void> {
  for (const dpop of [undefined, await otherProof()]) {
    const { status, body } = await refresh(rt, dpop);
    assert.equal(status, 400, JSON.stringify(body));
    assert.equal(body.error, 'invalid_grant');
    assert.equal(await lastDenial(), 'refresh_token_proof_mismatch');
  }
  // Neither refusal spent it: the holder refreshes with its key, and gets a token bound to that key.
  const { status, body } = await refresh(rt, await proof());
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.token_type, 'DPoP');
  assert.deepEqual(decodeJwt(body.access_token as string).cnf, { jkt: await calculateJwkThumbprint(holderJwk) });
  // The rotated refresh token is bound too.
  assert.equal((await refresh(body.refresh_token as string)).status, 400);
}

describe('DPoP binding through the refresh of an exchanged grant (RFC 9449 §5, RFC 8693)', () => {
  it('attack: the refresh token of a DPoP-bound subject token’s exchange is no bearer credential: refreshed without a proof of that key (or with another key’s) it is refused, so the binding is not dropped', async () => {
    const bound = (await token('user', { grant_type: 'client_credentials', audience: [API, 'xr-agent'] }, await proof()))
      .access_token as string;
    const form = { grant_type: EXCHANGE, subject_token: bound, subject_token_type: AT, audience: API };
    const exchanged = await token('agent', form, await proof());
    assert.equal(exchanged.token_type, 'DPoP');
    assert.ok(exchanged.refresh_token);
    await expectBoundRefresh(exchanged.refresh_token as string);
  });

  it('attack: the refresh token of an exchange with a DPoP-bound actor token is bound to the actor’s key as well', async () => {
    const subject = (await token('user', { grant_type: 'client_credentials', audience: [API, 'xr-agent'] })).access_token as string;
    const actor = (await token('agent', { grant_type: 'client_credentials', audience: API }, await proof())).access_token as string;
    const form = {
      grant_type: EXCHANGE,
      subject_token: subject,
      subject_token_type: AT,
      actor_token: actor,
      actor_token_type: AT,
      audience: API,
    };
    const exchanged = await token('agent', form, await proof());
    assert.equal(exchanged.token_type, 'DPoP');
    await expectBoundRefresh(exchanged.refresh_token as string);
  });

  it('leaves the refresh token of a bearer subject token’s exchange unbound when the client chose to prove a key (a confidential client’s, RFC 9449 §5)', async () => {
    const subject = (await token('user', { grant_type: 'client_credentials', audience: [API, 'xr-agent'] })).access_token as string;
    const form = { grant_type: EXCHANGE, subject_token: subject, subject_token_type: AT, audience: API };
    const exchanged = await token('agent', form, await proof());
    const { status, body } = await refresh(exchanged.refresh_token as string);
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'Bearer');
  });
});

describe('the lineage an exchange puts on record (token.exchanged)', () => {
  /** The `token.exchanged` event of an exchanged token. */
  async function exchangedEvent(accessToken: string) {
    await issuer.service.audit.flush();
    const jti = decodeJwt(accessToken).jti as string;
    const [event] = await issuer.store.queryAudit({ jti, kinds: ['token.exchanged'], limit: 10 });
    assert.ok(event, 'no token.exchanged event');
    return event;
  }

  it('attack: an exchange with an actor token names the actor token’s grant beside the subject’s, so an investigation of a compromised agent’s grant finds every exchange made with its tokens in the audit trail', async () => {
    const subject = (await token('user', { grant_type: 'client_credentials', audience: [API, 'xr-agent'] })).access_token as string;
    const actor = (await token('agent', { grant_type: 'client_credentials', audience: API })).access_token as string;
    const form = { grant_type: EXCHANGE, subject_token: subject, subject_token_type: AT, audience: API };
    const acted = await token('agent', { ...form, actor_token: actor, actor_token_type: AT });
    const event = await exchangedEvent(acted.access_token as string);
    assert.equal(event.delegation_id, decodeJwt(acted.access_token as string).grant_id);
    assert.equal(event.detail?.parent_grant, decodeJwt(subject).grant_id);
    assert.equal(event.detail?.actor_grant, decodeJwt(actor).grant_id);
    assert.deepEqual(event.actor_chain, ['xr-agent']);
    // Without an actor token the client itself is the actor: no actor grant to name.
    const plain = await token('agent', form);
    assert.equal((await exchangedEvent(plain.access_token as string)).detail?.actor_grant, undefined);
  });
});
