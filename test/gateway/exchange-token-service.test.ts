/**
 * `credential: exchange` in a real `tessera serve` (SQLite in a temp dir, its gateway minting
 * through its own token service as the client `gw`) in front of a loopback upstream: what the
 * upstream receives on behalf of callers that differ in one dimension only, and after the caller's
 * token is revoked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import type { RunningServer } from '../../src/cli/commands/serve.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { claims, sign } from '../helpers/tokens.ts';
import { type ExchangeServe, exchangeServe, UPSTREAM_AUD } from './exchange-serve-fixture.ts';
import { AUDIENCE, ISSUER, key, type Upstream } from './helpers.ts';
import { IDP2, idp2Key } from './subject-issuer-fixture.ts';

describe('gateway: exchange through a real token service', () => {
  let serve: ExchangeServe;
  let url: string;
  let upstream: Upstream;
  let running: RunningServer;

  before(async () => {
    serve = await exchangeServe('tessera-exchange-e2e-', 'gw', [
      { issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [key.jwk] } },
      { issuer: IDP2, audiences: [AUDIENCE], jwks: { keys: [idp2Key.jwk] } },
    ]);
    ({ url, upstream } = serve);
    running = await serve.start();
    await running.service.registerClient({ id: 'gw', scopes: ['api:read'], audiences: [UPSTREAM_AUD], grantTypes: [TOKEN_EXCHANGE] });
    await running.service.registerClient({
      id: 'agent',
      scopes: ['api:read'],
      audiences: [`${url}/api`],
      grantTypes: ['client_credentials'],
    });
  });
  after(async () => {
    await running?.close();
    await serve?.close();
  });

  const call = async (token: string) => {
    const res = await fetch(`${url}/api/x`, { headers: { authorization: `Bearer ${token}` } });
    await res.arrayBuffer();
    return res.status;
  };
  const sent = () => String(upstream.seen.at(-1)!.headers.authorization).replace(/^Bearer /, '');
  /** The grant a minted upstream token belongs to, as the store has it. */
  const grantOf = async (token: string) => {
    const id = decodeJwt(token).grant_id as string;
    return (await running.service.grantTree(id))?.subtree.find((g) => g.id === id);
  };

  it('attack: two identity providers’ users with the same sub never receive each other’s upstream token', async () => {
    const alice1 = await sign(key, claims({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, scope: 'api:read' }));
    const alice2 = await sign(idp2Key, claims({ iss: IDP2, sub: 'alice', aud: AUDIENCE, scope: 'api:read' }));
    assert.equal(await call(alice1), 200);
    const first = sent();
    assert.equal(await call(alice2), 200);
    const second = sent();
    assert.notEqual(first, second);
    assert.equal(await call(alice1), 200);
    assert.equal(sent(), first, 'cached for the first caller');
    const c1 = decodeJwt(first);
    const c2 = decodeJwt(second);
    assert.equal(c1.aud, UPSTREAM_AUD);
    assert.deepEqual(c1.sub_id, { format: 'iss_sub', iss: ISSUER, sub: 'alice' });
    assert.deepEqual(c2.sub_id, { format: 'iss_sub', iss: IDP2, sub: 'alice' });
  });

  it('attack: the same subject through another actor chain never receives the first chain’s upstream token', async () => {
    const direct = await sign(key, claims({ iss: ISSUER, sub: 'bob', aud: AUDIENCE, scope: 'api:read' }));
    const viaAgent = await sign(key, claims({ iss: ISSUER, sub: 'bob', aud: AUDIENCE, scope: 'api:read', act: { sub: 'agent-x' } }));
    assert.equal(await call(direct), 200);
    const first = decodeJwt(sent());
    assert.equal(await call(viaAgent), 200);
    const second = decodeJwt(sent());
    assert.notEqual(first.jti, second.jti);
    assert.deepEqual(first.act, { sub: 'gw' });
    assert.deepEqual(second.act, { sub: 'gw', act: { sub: 'agent-x', iss: ISSUER } });
  });

  it('attack: a revoked caller token is refused at the edge (its cached upstream token is never sent again) and the upstream token minted from it is revoked with it', async () => {
    const caller = await running.service.mint({ clientId: 'agent', subject: 'carol', ttl: 600, audiences: [`${url}/api`] });
    assert.equal(await call(caller.access_token), 200);
    const minted = sent();
    assert.equal(decodeJwt(minted).sub, 'carol');
    const seen = upstream.seen.length;
    await running.service.revokeAccessToken(caller.access_token, 'test');
    assert.equal(await call(caller.access_token), 401);
    assert.equal(upstream.seen.length, seen, 'the revoked caller reached the upstream');
    const grant = await grantOf(minted);
    assert.equal(grant?.kind, 'upstream');
    assert.notEqual(grant?.revokedAt, null, 'the upstream token outlived the revocation of the token it was minted from');
  });

  it('attack: an upstream token whose own grant an operator revoked is not sent again from the cache: the next request mints a new one', async () => {
    const caller = await running.service.mint({ clientId: 'agent', subject: 'dave', ttl: 600, audiences: [`${url}/api`] });
    assert.equal(await call(caller.access_token), 200);
    const minted = sent();
    assert.equal(await call(caller.access_token), 200);
    assert.equal(sent(), minted, 'cached');
    const grantId = decodeJwt(minted).grant_id as string;
    assert.equal((await grantOf(minted))?.kind, 'upstream');
    // As `tessera revoke --grant <id>` (the admin API, this process): the upstream grant only; the caller's stays.
    const revoked = await running.service.revokeGrants({ grantId }, 'test');
    assert.deepEqual(
      revoked.map((g) => g.id),
      [grantId],
    );
    const seen = upstream.seen.length;
    for (let i = 0; i < 3; i++) assert.equal(await call(caller.access_token), 200);
    const after = upstream.seen.slice(seen).map((s) => String(s.headers.authorization).replace(/^Bearer /, ''));
    assert.equal(after.length, 3);
    assert.ok(!after.includes(minted), 'the revoked upstream token was sent again');
    const fresh = decodeJwt(after[0] as string);
    assert.notEqual(fresh.jti, decodeJwt(minted).jti);
    assert.notEqual(fresh.grant_id, grantId);
    assert.equal(fresh.sub, 'dave');
    assert.deepEqual(new Set(after), new Set([after[0]]), 'the new one is cached in its turn');
  });
});
