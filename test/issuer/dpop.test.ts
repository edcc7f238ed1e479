/**
 * DPoP at the token endpoint (RFC 9449 §5): a valid proof binds the access token to its key
 * (`cnf.jkt`, token_type DPoP), which the verifier then enforces; bad or replayed proofs are
 * `invalid_dpop_proof`; a bound subject token is exchanged only with a proof of its key.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, type JWK, SignJWT } from 'jose';
import pg from 'pg';
import { DPOP_NONCE_KEY_INFO } from '../../src/issuer/dpop.ts';
import { deriveMacKey } from '../../src/issuer/secrets.ts';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { createVerifier } from '../../src/verifier.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { postgresReachable } from '../helpers/postgres.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const REDIRECT = 'http://127.0.0.1:7777/callback';
let issuer: RunningIssuer;
let agent: { id: string; secret: string };
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

before(async () => {
  issuer = await startIssuer();
  agent = await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials', EXCHANGE] });
  await issuer.service.registerClient({
    id: 'pub-app',
    public: true,
    scopes: ['api:read'],
    audiences: ['https://api.test'],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: [REDIRECT],
  });
});
after(() => issuer?.close());

async function proof(
  over: Record<string, unknown> = {},
  opts: { key?: KeyObject; jwk?: JWK; header?: Record<string, unknown>; url?: string } = {},
): Promise<string> {
  const claims: Record<string, unknown> = {
    htm: 'POST',
    htu: opts.url ?? `${issuer.url}/oauth2/token`,
    iat: Math.floor(Date.now() / 1000),
    jti: crypto.randomUUID(),
    ...over,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return new SignJWT(claims)
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: opts.jwk ?? holderJwk, ...opts.header } as never)
    .sign(opts.key ?? holder.privateKey);
}

const cc = (dpop?: string) =>
  issuer.post(
    '/oauth2/token',
    { grant_type: 'client_credentials' },
    { authorization: basic(agent.id, agent.secret), ...(dpop ? { dpop } : {}) },
  );

async function expectInvalidProof(res: Response): Promise<void> {
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { error: string }).error, 'invalid_dpop_proof');
}

describe('DPoP-bound tokens', () => {
  it('binds the token to the proof key, and the verifier enforces the binding', async () => {
    const res = await cc(await proof());
    const body = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(res.status, 200);
    assert.equal(body.token_type, 'DPoP');
    const jkt = await calculateJwkThumbprint(holderJwk);
    assert.deepEqual(decodeJwt(body.access_token).cnf, { jkt });

    const verifier = createVerifier(
      { issuers: [{ issuer: issuer.url, audiences: ['https://api.test'], jwks_uri: `${issuer.url}/.well-known/jwks.json` }] },
      { keySources: { [issuer.url]: issuer.service.keys }, revocation: issuer.service.revocations },
    );
    const asBearer = await verifier.verify({
      method: 'GET',
      url: 'https://api.test/x',
      headers: { authorization: `Bearer ${body.access_token}` },
    });
    assert.equal(asBearer.ok, false);
    if (!asBearer.ok) assert.equal(asBearer.error.code, 'token_dpop_bound_as_bearer');
    const ath = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(body.access_token))).toString('base64url');
    const resourceProof = await proof({ htm: 'GET', htu: 'https://api.test/x', ath });
    const withProof = await verifier.verify({
      method: 'GET',
      url: 'https://api.test/x',
      headers: { authorization: `DPoP ${body.access_token}`, dpop: resourceProof },
    });
    assert.equal(withProof.ok, true);
  });

  it('takes the proof typ as a media type (RFC 7515 §4.1.9): DPoP+JWT and application/dpop+jwt bind the token, typ JWT is refused', async () => {
    for (const typ of ['DPoP+JWT', 'application/dpop+jwt']) {
      const res = await cc(await proof({}, { header: { typ } }));
      assert.equal(res.status, 200, typ);
      assert.equal(((await res.json()) as { token_type: string }).token_type, 'DPoP', typ);
    }
    await expectInvalidProof(await cc(await proof({}, { header: { typ: 'JWT' } })));
  });

  it('issues plain bearer tokens without a proof', async () => {
    const body = (await (await cc()).json()) as { access_token: string; token_type: string };
    assert.equal(body.token_type, 'Bearer');
    assert.equal(decodeJwt(body.access_token).cnf, undefined);
  });

  it('algorithm mismatch: advertises exactly the proof algorithms a verifier of this configuration accepts (dpop.algorithms), and refuses a proof of another (ES384) rather than bind a token to a key no such resource server takes proofs of', async () => {
    const m = (await (await fetch(`${issuer.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, string[]>;
    const verifier = createVerifier({
      issuers: [{ issuer: issuer.url, audiences: ['https://api.test'], jwks_uri: `${issuer.url}/.well-known/jwks.json` }],
    });
    assert.deepEqual(m.dpop_signing_alg_values_supported, [...verifier.config.dpop.algorithms]);
    assert.deepEqual(m.dpop_signing_alg_values_supported, [...issuer.config.dpop.algorithms]);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const jwk = p384.publicKey.export({ format: 'jwk' }) as JWK;
    await expectInvalidProof(await cc(await proof({}, { key: p384.privateKey, jwk, header: { alg: 'ES384' } })));
  });

  it('attack: a proof key of an RSA modulus over 4096 bits (each check costs up to 40 ES256 ones: a 16384-bit key, 2.6 ms) is refused invalid_dpop_proof before its signature is checked, however well signed; 4096 bits bind', async () => {
    const rsaProof = (bits: number) => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
      return proof({}, { key: privateKey, jwk: publicKey.export({ format: 'jwk' }) as JWK, header: { alg: 'RS256' } });
    };
    await expectInvalidProof(await cc(await rsaProof(4608)));
    const ok = await cc(await rsaProof(4096));
    assert.equal(ok.status, 200, await ok.clone().text());
    assert.equal(((await ok.json()) as { token_type: string }).token_type, 'DPoP');
  });

  it('with dpop.algorithms widened (ES384 added), advertises and accepts it', async () => {
    const wide = await startIssuer({ config: { dpop: { algorithms: ['ES256', 'ES384'] } } });
    try {
      const client = await wide.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
      const m = (await (await fetch(`${wide.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, string[]>;
      assert.deepEqual(m.dpop_signing_alg_values_supported, ['ES256', 'ES384']);
      const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
      const jwk = p384.publicKey.export({ format: 'jwk' }) as JWK;
      const res = await wide.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        {
          authorization: basic(client.id, client.secret),
          dpop: await proof({}, { key: p384.privateKey, jwk, header: { alg: 'ES384' }, url: `${wide.url}/oauth2/token` }),
        },
      );
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { token_type: string }).token_type, 'DPoP');
    } finally {
      await wide.close();
    }
  });
});

describe('invalid proofs (invalid_dpop_proof)', () => {
  it('refuses a replayed proof', async () => {
    const p = await proof();
    assert.equal((await cc(p)).status, 200);
    await expectInvalidProof(await cc(p));
  });

  it('attack: a captured proof replayed at the token endpoint is audited as dpop_proof_replayed, not as any malformed proof', async () => {
    const p = await proof();
    assert.equal((await cc(p)).status, 200);
    const replay = await cc(p);
    assert.equal(replay.status, 400);
    assert.equal(((await replay.json()) as { error: string }).error, 'invalid_dpop_proof');
    await expectInvalidProof(await cc(await proof({ htm: 'GET' })));
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ client_id: 'agent', limit: 1000 })).filter((e) => e.kind === 'token.denied');
    assert.deepEqual(
      denied.slice(-2).map((e) => e.reason),
      ['dpop_proof_replayed', 'dpop_proof_invalid'],
    );
  });

  it('refuses a proof for another URL or method', async () => {
    await expectInvalidProof(await cc(await proof({}, { url: `${issuer.url}/oauth2/introspect` })));
    await expectInvalidProof(await cc(await proof({ htm: 'GET' })));
  });

  it('attack: userinfo in htu, another spelling of the token endpoint URL, is refused (RFC 9110 §4.2.4)', async () => {
    const endpoint = new URL(`${issuer.url}/oauth2/token`);
    for (const userinfo of ['user', 'user:pw', '']) {
      await expectInvalidProof(await cc(await proof({ htu: `${endpoint.protocol}//${userinfo}@${endpoint.host}${endpoint.pathname}` })));
    }
  });

  it('refuses a stale or future proof', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectInvalidProof(await cc(await proof({ iat: now - 600 })));
    await expectInvalidProof(await cc(await proof({ iat: now + 600 })));
  });

  it('refuses a proof carrying ath, a wrong typ, a key that did not sign it, or no jti', async () => {
    await expectInvalidProof(await cc(await proof({ ath: 'x' })));
    await expectInvalidProof(await cc(await proof({}, { header: { typ: 'JWT' } })));
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await expectInvalidProof(await cc(await proof({}, { key: other.privateKey })));
    await expectInvalidProof(await cc(await proof({ jti: undefined })));
  });

  it('refuses a private key in the proof header and two proofs', async () => {
    const priv = holder.privateKey.export({ format: 'jwk' }) as JWK;
    await expectInvalidProof(await cc(await proof({}, { jwk: priv })));
    const res = await fetch(`${issuer.url}/oauth2/token`, {
      method: 'POST',
      headers: [
        ['content-type', 'application/x-www-form-urlencoded'],
        ['authorization', basic(agent.id, agent.secret)],
        ['dpop', await proof()],
        ['dpop', await proof()],
      ],
      body: 'grant_type=client_credentials',
    });
    await expectInvalidProof(res);
  });
});

describe('exchanging a bound token', () => {
  it('requires a proof of the subject token’s key', async () => {
    const bound = ((await (await cc(await proof())).json()) as { access_token: string }).access_token;
    const form = { grant_type: EXCHANGE, subject_token: bound, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' };
    const auth = { authorization: basic(agent.id, agent.secret) };
    const without = await issuer.post('/oauth2/token', form, auth);
    assert.equal(without.status, 400);
    assert.equal(((await without.json()) as { error: string }).error, 'invalid_request');
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const wrongKey = await proof({}, { key: other.privateKey, jwk: other.publicKey.export({ format: 'jwk' }) as JWK });
    assert.equal((await issuer.post('/oauth2/token', form, { ...auth, dpop: wrongKey })).status, 400);
    const ok = await issuer.post('/oauth2/token', form, { ...auth, dpop: await proof() });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { token_type: string }).token_type, 'DPoP');
  });
});

describe('a public client’s refresh token (RFC 9449 §5: bound to the proof key)', () => {
  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const otherProof = () => proof({}, { key: other.privateKey, jwk: other.publicKey.export({ format: 'jwk' }) as JWK });

  /**
   * The public client redeems a code for `person`, with a DPoP proof of `holder` when `bound`
   * (then a DPoP-bound access token): its refresh token.
   */
  async function session(person: string, bound: boolean, iss = issuer): Promise<string> {
    const { verifier, challenge } = pkcePair();
    const outcome = await iss.service.checkAuthorizationRequest(
      new URLSearchParams({
        response_type: 'code',
        client_id: 'pub-app',
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        scope: 'api:read',
        resource: 'https://api.test',
      }),
    );
    if (!outcome.ok) throw new Error(outcome.error.code);
    const code = await iss.service.approveAuthorization(outcome.request, { subject: person, source: 'test' });
    const res = await iss.post(
      '/oauth2/token',
      { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT, client_id: 'pub-app' },
      bound ? { dpop: await proof({}, { url: `${iss.url}/oauth2/token` }) } : {},
    );
    const body = (await res.json()) as { token_type: string; refresh_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, bound ? 'DPoP' : 'Bearer');
    return body.refresh_token;
  }

  const refresh = (rt: string, dpop?: string, iss = issuer) =>
    iss.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt, client_id: 'pub-app' }, dpop ? { dpop } : {});

  it('refuses a stolen refresh token presented without a proof, or with a proof of another key, and leaves it usable by its holder', async () => {
    const rt = await session('alice@example.com', true);
    for (const res of [await refresh(rt), await refresh(rt, await otherProof())]) {
      const body = (await res.json()) as { error: string };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(body.error, 'invalid_grant');
    }
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ client_id: 'pub-app', limit: 1000 })).filter((e) => e.kind === 'token.denied');
    assert.equal(denied.at(-1)?.reason, 'refresh_token_proof_mismatch');
    // Neither attempt spent the token: the holder still refreshes with its key, and the chain stays bound.
    const ok = await refresh(rt, await proof());
    const body = (await ok.json()) as { access_token: string; token_type: string; refresh_token: string };
    assert.equal(ok.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
    assert.equal((decodeJwt(body.access_token).cnf as { jkt: string }).jkt, await calculateJwkThumbprint(holderJwk));
    assert.equal((await refresh(body.refresh_token)).status, 400);
    assert.equal((await refresh(body.refresh_token, await otherProof())).status, 400);
    assert.equal((await refresh(body.refresh_token, await proof())).status, 200);
  });

  it('leaves a refresh token issued without a proof unbound (a bearer session stays bearer)', async () => {
    const next = await refresh(await session('bob@example.com', false));
    assert.equal(next.status, 200);
    assert.equal(((await next.json()) as { token_type: string }).token_type, 'Bearer');
  });

  it('binds the successor of an unbound refresh token refreshed with a proof to that proof’s key (RFC 9449 §5): the rotated token is no bearer credential', async () => {
    const upgraded = await refresh(await session('carol@example.com', false), await proof());
    const body = (await upgraded.json()) as { token_type: string; refresh_token: string };
    assert.equal(upgraded.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
    const stolen = await refresh(body.refresh_token);
    assert.equal(stolen.status, 400);
    assert.equal(((await stolen.json()) as { error: string }).error, 'invalid_grant');
    assert.equal((await refresh(body.refresh_token, await otherProof())).status, 400);
    assert.equal((await refresh(body.refresh_token, await proof())).status, 200);
  });
  it('refresh_reuse_interval: a retry of a DPoP-bound refresh token whose response was lost succeeds with a proof of its key, stays bound; attack: without the proof or with another key it is refused (refresh_token_proof_mismatch), the family kept and nothing issued', async () => {
    const iss = await startIssuer({ config: { token_service: { refresh_reuse_interval: '30s' } } });
    try {
      await iss.service.registerClient({
        id: 'pub-app',
        public: true,
        scopes: ['api:read'],
        audiences: ['https://api.test'],
        grantTypes: ['authorization_code', 'refresh_token'],
        redirectUris: [REDIRECT],
      });
      const at = { url: `${iss.url}/oauth2/token` };
      const rt = await session('dora@example.com', true, iss);
      const lost = await refresh(rt, await proof({}, at), iss);
      assert.equal(lost.status, 200);
      await lost.body?.cancel();
      for (const res of [
        await refresh(rt, undefined, iss),
        await refresh(rt, await proof({}, { ...at, key: other.privateKey, jwk: other.publicKey.export({ format: 'jwk' }) as JWK }), iss),
      ]) {
        const body = (await res.json()) as { error: string };
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(body.error, 'invalid_grant');
      }
      const retry = await refresh(rt, await proof({}, at), iss);
      const body = (await retry.json()) as { access_token: string; token_type: string; refresh_token: string };
      assert.equal(retry.status, 200, JSON.stringify(body));
      assert.equal(body.token_type, 'DPoP');
      assert.equal((decodeJwt(body.access_token).cnf as { jkt: string }).jkt, await calculateJwkThumbprint(holderJwk));
      assert.equal((await refresh(body.refresh_token, undefined, iss)).status, 400);
      const next = await refresh(body.refresh_token, await proof({}, at), iss);
      assert.equal(next.status, 200);
      await next.body?.cancel();
    } finally {
      await iss.close();
    }
  });
});

describe('the proof window', () => {
  it('refuses a proof replayed at the last second its iat is accepted', async () => {
    let now = 1_900_000_000;
    const timed = await startIssuer({ clock: () => now * 1000 });
    try {
      const c = await timed.addClient({ id: 'agent', scopes: ['api:read'] });
      const p = await proof({ iat: now }, { url: `${timed.url}/oauth2/token` });
      const post = () =>
        timed.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(c.id, c.secret), dpop: p });
      assert.equal((await post()).status, 200);
      // The iat window (60 s) and the clock skew (30 s) later, the proof's replay entry must not have lapsed first.
      now += 90;
      await expectInvalidProof(await post());
    } finally {
      await timed.close();
    }
  });

  it('accepts a fractional iat (RFC 7519 NumericDate) and still refuses its replay', async () => {
    const p = await proof({ iat: Date.now() / 1000 - 0.5 });
    assert.equal((await cc(p)).status, 200);
    await expectInvalidProof(await cc(p));
  });
});

describe('authorization-server nonces (RFC 9449 §8, token_service.dpop.nonce)', () => {
  const NONCED = { token_service: { dpop: { nonce: true } } };

  async function noncedIssuer(options: Parameters<typeof startIssuer>[0] = {}) {
    const running = await startIssuer({ ...options, config: NONCED });
    const client = await running.addClient({ id: 'agent', scopes: ['api:read'] });
    const post = (dpop: string) =>
      running.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(client.id, client.secret), dpop });
    const at = (over: Record<string, unknown> = {}) => proof(over, { url: `${running.url}/oauth2/token` });
    return { running, client, post, at };
  }

  /** A 400 use_dpop_nonce, not cacheable, carrying a nonce: the nonce. */
  async function expectNonceRequired(res: Response): Promise<string> {
    const body = (await res.json()) as { error: string; error_description: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error, 'use_dpop_nonce');
    assert.equal(typeof body.error_description, 'string');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const nonce = res.headers.get('dpop-nonce');
    assert.ok(nonce, 'a DPoP-Nonce header');
    return nonce;
  }

  it('refuses a proof without a nonce with 400 use_dpop_nonce and a DPoP-Nonce header, then binds the token on the retry with it', async () => {
    const { running, post, at } = await noncedIssuer();
    try {
      const nonce = await expectNonceRequired(await post(await at()));
      const res = await post(await at({ nonce }));
      const body = (await res.json()) as { access_token: string; token_type: string };
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(body.token_type, 'DPoP');
      assert.deepEqual(decodeJwt(body.access_token).cnf, { jkt: await calculateJwkThumbprint(holderJwk) });
      // The success carries the current nonce too (§8.2), so the client keeps one that works.
      assert.ok(res.headers.get('dpop-nonce'));
      assert.equal(res.headers.get('cache-control'), 'no-store');
      // The refusal is audited with its stable code; neither the nonce, the proof nor the token is written.
      await running.service.audit.flush();
      const events = await running.store.queryAudit({ client_id: 'agent', limit: 100 });
      assert.equal(events.find((e) => e.kind === 'token.denied')?.reason, 'dpop_nonce_required');
      const written = JSON.stringify(events);
      assert.ok(!written.includes(nonce), 'no nonce in the audit trail');
      assert.ok(!written.includes(body.access_token), 'no token in the audit trail');
      const key = deriveMacKey(running.master, DPOP_NONCE_KEY_INFO).export();
      for (const form of [key.toString('hex'), key.toString('base64url'), key.toString('base64')]) assert.ok(!written.includes(form));
    } finally {
      await running.close();
    }
  });

  it('carries the current nonce on a response to a request without DPoP, and on other errors', async () => {
    const { running, client } = await noncedIssuer();
    try {
      const bearer = await running.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { authorization: basic(client.id, client.secret) },
      );
      assert.equal(bearer.status, 200, 'a bearer request needs no nonce');
      assert.ok(bearer.headers.get('dpop-nonce'));
      const refused = await running.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { authorization: basic(client.id, 'wrong') },
      );
      assert.equal(refused.status, 401);
      assert.ok(refused.headers.get('dpop-nonce'));
    } finally {
      await running.close();
    }
  });

  it('attack: a made-up nonce, or one tampered with, is refused with use_dpop_nonce', async () => {
    const { running, post, at } = await noncedIssuer();
    try {
      const nonce = await expectNonceRequired(await post(await at()));
      await expectNonceRequired(await post(await at({ nonce: 'made-up-nonce' })));
      const raw = Buffer.from(nonce, 'base64url');
      raw[raw.length - 1] = (raw.at(-1) as number) ^ 1;
      await expectNonceRequired(await post(await at({ nonce: raw.toString('base64url') })));
      await expectNonceRequired(await post(await at({ nonce: 42 })));
    } finally {
      await running.close();
    }
  });

  it('attack: an expired nonce (handed out more than two rotation periods ago) is refused', async () => {
    let now = 1_900_000_000;
    const { running, post, at } = await noncedIssuer({ clock: () => now * 1000 });
    try {
      const nonce = await expectNonceRequired(await post(await at({ iat: now })));
      now += 601;
      const fresh = await expectNonceRequired(await post(await at({ iat: now, nonce })));
      assert.notEqual(fresh, nonce);
      assert.equal((await post(await at({ iat: now, nonce: fresh }))).status, 200);
    } finally {
      await running.close();
    }
  });

  it('accepts a nonce handed out by another instance with the same master key, and refuses one of another master key', async () => {
    const a = await noncedIssuer();
    const b = await noncedIssuer({ master: a.running.master });
    const c = await noncedIssuer();
    try {
      const nonce = await expectNonceRequired(await a.post(await a.at()));
      assert.equal((await b.post(await b.at({ nonce }))).status, 200);
      await expectNonceRequired(await c.post(await c.at({ nonce })));
    } finally {
      await a.running.close();
      await b.running.close();
      await c.running.close();
    }
  });

  it('with token_service.dpop.nonce off (the default), accepts a proof without a nonce and sends no DPoP-Nonce', async () => {
    const res = await cc(await proof());
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { token_type: string }).token_type, 'DPoP');
    assert.equal(res.headers.get('dpop-nonce'), null);
  });
});

const pgUrl = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgReachable = await postgresReachable(pgUrl);

describe('DPoP at the token endpoint on each store', () => {
  for (const backend of ['sqlite', 'postgres'] as const) {
    it(`attack: a proof whose jti holds a NUL, sent by anyone naming a public client, is recorded like any other on ${backend} (never a 500)`, {
      skip: backend === 'postgres' && !pgReachable ? 'PostgreSQL is not reachable' : false,
    }, async () => {
      const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
      const running = await startIssuer(
        backend === 'postgres' ? { store: await PostgresStore.open({ connectionString: pgUrl, schema }) } : {},
      );
      try {
        await running.service.registerClient({
          id: 'pub-app',
          public: true,
          scopes: ['api:read'],
          audiences: ['https://api.test'],
          grantTypes: ['authorization_code', 'refresh_token'],
          redirectUris: [REDIRECT],
        });
        const p = await proof({ jti: 'a\u0000b' }, { url: `${running.url}/oauth2/token` });
        const send = () =>
          running.post(
            '/oauth2/token',
            {
              grant_type: 'authorization_code',
              client_id: 'pub-app',
              code: 'no-such-code',
              redirect_uri: REDIRECT,
              code_verifier: 'v'.repeat(43),
            },
            { dpop: p },
          );
        const first = await send();
        assert.equal(first.status, 400);
        assert.equal(((await first.json()) as { error: string }).error, 'invalid_grant');
        const again = await send();
        assert.equal(again.status, 400);
        assert.equal(((await again.json()) as { error: string }).error, 'invalid_dpop_proof');
      } finally {
        await running.close();
        if (backend === 'postgres') {
          const c = new pg.Client({ connectionString: pgUrl });
          await c.connect();
          await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
          await c.end();
        }
      }
    });
  }
});
