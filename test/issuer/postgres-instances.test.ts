/**
 * Scale-out: two token-service instances on one PostgreSQL database. A client registered on one
 * authenticates on the other; a refresh token rotated on one is a reuse on the other; a grant
 * revoked on one is rejected by the other's in-process verifier after its next sync.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, type JWK, SignJWT } from 'jose';
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { bearer } from '../helpers/tokens.ts';

const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

let reachable = true;
try {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  await c.connect();
  await c.end();
} catch {
  reachable = false;
}

describe('two instances on PostgreSQL', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  let a: RunningIssuer;
  let b: RunningIssuer;
  let secret: string;

  before(async () => {
    a = await startIssuer({ store: await PostgresStore.open({ connectionString: url, schema }) });
    // The second instance shares the store and the master key, and announces the same issuer.
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: url, schema }),
      master: a.master,
      config: { token_service: { issuer: a.url } },
    });
    secret = (await a.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials', 'refresh_token', EXCHANGE] }))
      .secret;
  });
  after(async () => {
    await a?.close();
    await b?.close();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  it('shares clients and keys, rotation state and revocations', async () => {
    await b.service.sync();
    const auth = { authorization: basic('agent', secret) };
    const cc = await b.post('/oauth2/token', { grant_type: 'client_credentials' }, auth);
    assert.equal(cc.status, 200, 'a client registered on A authenticates on B, which signs with the shared key');

    const user = await a.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const ex = (await (
      await a.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' },
        auth,
      )
    ).json()) as { access_token: string; refresh_token: string };
    assert.equal((await b.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: ex.refresh_token }, auth)).status, 200);
    assert.equal(
      (await a.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: ex.refresh_token }, auth)).status,
      400,
      'reuse across instances',
    );

    const verifierB = inProcessVerifier(b);
    const fresh = await a.service.mint({ clientId: 'agent', subject: 'bob', ttl: 600 });
    assert.equal((await verifierB.verify(bearer(fresh.access_token))).ok, true);
    await a.service.revokeGrants({ grantId: decodeJwt(fresh.access_token).grant_id as string }, 'test');
    await b.service.sync();
    assert.equal((await verifierB.verify(bearer(fresh.access_token))).ok, false, 'B rejects after its next sync');
  });

  it('takes a DPoP proof with a fractional iat (RFC 7519 NumericDate): the replay cache stores whole seconds', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const proof = await new SignJWT({ htm: 'POST', htu: `${a.url}/oauth2/token`, iat: Date.now() / 1000 - 0.5, jti: randomUUID() })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicKey.export({ format: 'jwk' }) as JWK })
      .sign(key.privateKey);
    const post = () =>
      a.post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('agent', secret), dpop: proof });
    const res = await post();
    assert.equal(res.status, 200, await res.text());
    assert.equal((await post()).status, 400, 'and its replay is refused');
  });
});
