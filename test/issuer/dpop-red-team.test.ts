/**
 * A red-team round on DPoP at the token endpoint (RFC 9449 §5), beside dpop.test.ts: a bound actor
 * token in an exchange, an empty or oversized DPoP header, a proof of the wrong method spelling,
 * RFC 9449 §6.2 introspection of a bound token, and refusals whose body and audit events never
 * carry the proof.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
let issuer: RunningIssuer;
let agent: { id: string; secret: string };
let rs: { id: string; secret: string };
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const otherJwk = other.publicKey.export({ format: 'jwk' }) as JWK;

before(async () => {
  issuer = await startIssuer();
  agent = await issuer.addClient({ id: 'rt-agent', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE] });
  rs = await issuer.addClient({ id: 'rt-rs', scopes: [], audiences: ['https://api.test'], grantTypes: ['client_credentials'] });
});
after(() => issuer?.close());

function proof(over: Record<string, unknown> = {}, opts: { key?: KeyObject; jwk?: JWK } = {}): Promise<string> {
  const claims: Record<string, unknown> = {
    htm: 'POST',
    htu: `${issuer.url}/oauth2/token`,
    iat: Math.floor(Date.now() / 1000),
    jti: crypto.randomUUID(),
    ...over,
  };
  return new SignJWT(claims)
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: opts.jwk ?? holderJwk })
    .sign(opts.key ?? holder.privateKey);
}
const otherProof = () => proof({}, { key: other.privateKey, jwk: otherJwk });

const auth = () => ({ authorization: basic(agent.id, agent.secret) });
const cc = (headers: Record<string, string> = {}) =>
  issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, { ...auth(), ...headers });

async function accessToken(dpop?: string): Promise<string> {
  const res = await cc(dpop === undefined ? {} : { dpop });
  const body = (await res.json()) as { access_token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.access_token;
}

async function lastDenial(clientId: string): Promise<{ reason: string; text: string }> {
  await issuer.service.audit.flush();
  const events = await issuer.store.queryAudit({ client_id: clientId, limit: 1000 });
  const denied = events.filter((e) => e.kind === 'token.denied');
  return { reason: denied.at(-1)?.reason ?? '', text: JSON.stringify(events) };
}

describe('attack: a DPoP-bound actor token in a token exchange', () => {
  /** An exchange form: a bearer subject token, and an actor token bound to `proof()`'s key. */
  const exchangeWithBoundActor = async () => ({
    grant_type: EXCHANGE,
    subject_token: await accessToken(),
    subject_token_type: ACCESS_TOKEN,
    actor_token: await accessToken(await proof()),
    actor_token_type: ACCESS_TOKEN,
  });

  it('attack: a bound actor token presented without a proof of its key is refused (actor_token_proof_required)', async () => {
    const form = await exchangeWithBoundActor();
    const res = await issuer.post('/oauth2/token', form, auth());
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
    assert.equal((await lastDenial(agent.id)).reason, 'actor_token_proof_required');
  });

  it('attack: a bound actor token presented with a proof of another key is refused', async () => {
    const form = await exchangeWithBoundActor();
    const res = await issuer.post('/oauth2/token', form, { ...auth(), dpop: await otherProof() });
    assert.equal(res.status, 400);
    assert.equal((await lastDenial(agent.id)).reason, 'actor_token_proof_required');
  });

  it('a bound actor token with a proof of its key is exchanged, and the new token is bound to that key', async () => {
    const form = await exchangeWithBoundActor();
    const res = await issuer.post('/oauth2/token', form, { ...auth(), dpop: await proof() });
    const body = (await res.json()) as { token_type: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
  });

  it('attack: a bound subject token exchanged with a proof of another key is audited as subject_token_invalid and issues nothing', async () => {
    const subject = await accessToken(await proof());
    const form = { grant_type: EXCHANGE, subject_token: subject, subject_token_type: ACCESS_TOKEN };
    const res = await issuer.post('/oauth2/token', form, { ...auth(), dpop: await otherProof() });
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(res.status, 400);
    assert.equal(body.access_token, undefined);
    assert.equal((await lastDenial(agent.id)).reason, 'subject_token_invalid');
  });
});

describe('attack: DPoP headers the token endpoint must not read as no proof', () => {
  it('attack: an empty DPoP header is refused (invalid_dpop_proof), never answered with a bearer token', async () => {
    const res = await cc({ dpop: '' });
    const body = (await res.json()) as { error?: string; token_type?: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error, 'invalid_dpop_proof');
  });

  it('attack: a huge DPoP header (past 8 KiB) is refused with 400 invalid_dpop_proof', async () => {
    const res = await cc({ dpop: await proof({ pad: 'x'.repeat(9000) }) });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_dpop_proof');
  });

  it('attack: a proof with htm "post" (another method spelling: methods are case-sensitive) is refused', async () => {
    const res = await cc({ dpop: await proof({ htm: 'post' }) });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_dpop_proof');
  });

  it('attack: a proof whose jwk thumbprint is another key’s (header names the holder, the other key signs) is refused', async () => {
    const res = await cc({ dpop: await proof({}, { key: other.privateKey, jwk: holderJwk }) });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_dpop_proof');
  });

  it('attack: an htu that is no RFC 3986 URI but that URL parsing reads as the token endpoint (backslashes, a tab, a leading space) is refused', async () => {
    // `http://<issuer>\@evil.example/…` names evil.example to an RFC 3986 parser (userinfo
    // `<issuer>\`), but the issuer to WHATWG URL parsing, which reads `\` as `/`.
    const { host } = new URL(issuer.url);
    for (const htu of [
      `http://${host}\\oauth2\\token`,
      `http://${host}/oauth2\\token`,
      `http://${host}/oauth2/to\tken`,
      ` ${issuer.url}/oauth2/token`,
    ]) {
      const res = await cc({ dpop: await proof({ htu }) });
      const body = (await res.json()) as { error?: string; token_type?: string };
      assert.equal(res.status, 400, `${JSON.stringify(htu)}: ${body.error ?? body.token_type}`);
      assert.equal(body.error, 'invalid_dpop_proof');
    }
  });
});

describe('RFC 9449 §6.2: introspection of a DPoP-bound token', () => {
  it('answers token_type DPoP and cnf.jkt of the proof key, so an introspecting resource server enforces the binding', async () => {
    const bound = await accessToken(await proof());
    const res = await issuer.post('/oauth2/introspect', { token: bound }, { authorization: basic(rs.id, rs.secret) });
    const body = (await res.json()) as { active: boolean; token_type?: string; cnf?: { jkt?: string } };
    assert.equal(res.status, 200);
    assert.equal(body.active, true);
    assert.equal(body.token_type, 'DPoP');
    assert.equal(body.cnf?.jkt, await calculateJwkThumbprint(holderJwk));
  });
});

describe('attack: refusals quoting the proof', () => {
  it('no refused proof (wrong URL, replay, another key, bad signature) appears in the answer or any audit event', async () => {
    const replayed = await proof();
    await accessToken(replayed);
    const proofs = [
      await proof({ htu: 'https://evil.test/oauth2/token' }),
      replayed,
      `${(await proof()).slice(0, -8)}AAAAAAAA`,
      await proof({ iat: 0 }),
    ];
    for (const p of proofs) {
      const res = await cc({ dpop: p });
      const text = await res.text();
      assert.equal(res.status, 400);
      assert.ok(!text.includes(p) && !text.includes(p.slice(p.lastIndexOf('.') + 1)), 'the answer quotes the proof');
    }
    const { text } = await lastDenial(agent.id);
    for (const p of proofs) {
      assert.ok(!text.includes(p.slice(p.lastIndexOf('.') + 1)), 'an audit event quotes the proof');
      assert.ok(!text.includes(p.slice(0, p.indexOf('.'))), 'an audit event quotes the proof header');
    }
  });
});
