/**
 * Single use across instances on one PostgreSQL store, at the token endpoint: a DPoP proof's `jti`
 * (RFC 9449 §11.1) and an authorization code (RFC 6749 §4.1.2), each used at A and at B, one after
 * the other and at the same moment.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type JWK, SignJWT } from 'jose';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { dropSchema, postgresReachable } from '../helpers/postgres.ts';
import { bearer } from '../helpers/tokens.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}_once`;
const skip = (await postgresReachable(url)) ? false : 'PostgreSQL is not reachable';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const API = 'https://api.test';

describe('single use across two instances on PostgreSQL', { skip }, () => {
  let a: RunningIssuer;
  let b: RunningIssuer;
  let agent: { id: string; secret: string };
  const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema }) });
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema }),
      master: a.master,
      config: { token_service: { issuer: a.url } },
    });
    agent = await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
    await a.service.registerClient({
      id: 'mcp-app',
      public: true,
      scopes: ['api:read'],
      audiences: [API],
      grantTypes: ['authorization_code', 'refresh_token'],
      redirectUris: [REDIRECT],
    });
    await b.service.sync();
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await dropSchema(url, schema);
  });

  /** A proof for the token endpoint both instances announce (A's issuer URL). */
  const proof = () =>
    new SignJWT({ htm: 'POST', htu: `${a.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: holderJwk })
      .sign(holder.privateKey);
  const cc = (on: RunningIssuer, dpop: string) =>
    on.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic(agent.id, agent.secret), dpop });

  it('attack: a DPoP proof used at A’s token endpoint is refused when replayed at B (invalid_dpop_proof, audited dpop_proof_replayed)', async () => {
    const p = await proof();
    const first = await cc(a, p);
    assert.equal(first.status, 200, await first.text());
    const replay = await cc(b, p);
    assert.equal(replay.status, 400);
    assert.equal(((await replay.json()) as { error: string }).error, 'invalid_dpop_proof');
    await b.service.audit.flush();
    const last = (await b.store.queryAudit({ kinds: ['token.denied'], limit: 1000 })).at(-1);
    assert.equal(last?.reason, 'dpop_proof_replayed');
  });

  it('attack: one DPoP proof sent to A and B at the same moment binds exactly one token', async () => {
    for (let round = 0; round < 3; round++) {
      const p = await proof();
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => cc(i % 2 === 0 ? a : b, p)));
      const statuses = results.map((r) => r.status);
      for (const r of results) await r.body?.cancel();
      assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
      assert.equal(statuses.filter((s) => s === 400).length, 5, statuses.join(','));
    }
  });

  /** A code approved at A for mcp-app, and its PKCE verifier. */
  async function code(subject: string): Promise<{ code: string; verifier: string }> {
    const { verifier, challenge } = pkcePair();
    const params = new URLSearchParams({
      response_type: 'code',
      client_id: 'mcp-app',
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      scope: 'api:read',
      resource: API,
    });
    const outcome = await a.service.checkAuthorizationRequest(params);
    if (!outcome.ok) throw new Error(outcome.error.code);
    return { code: await a.service.approveAuthorization(outcome.request, { subject, source: 'test' }), verifier };
  }
  const redeem = (on: RunningIssuer, c: { code: string; verifier: string }) =>
    on.post('/oauth2/token', {
      grant_type: 'authorization_code',
      redirect_uri: REDIRECT,
      client_id: 'mcp-app',
      code: c.code,
      code_verifier: c.verifier,
    });

  it('attack: one authorization code redeemed at A and B at the same moment: exactly one token response, and the replay revokes what it issued on both instances', async () => {
    for (let round = 0; round < 3; round++) {
      const c = await code(`racer-${round}@example.com`);
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => redeem(i % 2 === 0 ? a : b, c)));
      const bodies = await Promise.all(results.map((r) => r.json() as Promise<Record<string, string>>));
      const won = results.flatMap((r, i) => (r.status === 200 ? [bodies[i] as Record<string, string>] : []));
      assert.equal(won.length, 1, results.map((r) => r.status).join(','));
      for (const [i, r] of results.entries()) {
        if (r.status === 200) continue;
        assert.equal(r.status, 400);
        assert.equal(bodies[i]?.error, 'invalid_grant');
      }
      const winner = won[0] as Record<string, string>;
      // The losers are replays of a redeemed code: the grant issued from it is revoked (§4.1.2).
      for (const on of [a, b]) {
        const rt = await on.post('/oauth2/token', {
          grant_type: 'refresh_token',
          refresh_token: winner.refresh_token as string,
          client_id: 'mcp-app',
        });
        assert.equal(rt.status, 400, `refresh at ${on === a ? 'A' : 'B'}`);
        assert.equal(((await rt.json()) as { error: string }).error, 'invalid_grant');
        await on.service.sync();
        const v = await inProcessVerifier(on).verify(bearer(winner.access_token as string));
        assert.equal(v.ok ? 'accepted' : v.error.code, 'token_revoked', `access token at ${on === a ? 'A' : 'B'}`);
      }
    }
  });
});
