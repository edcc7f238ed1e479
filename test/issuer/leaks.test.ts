/**
 * Recognising a leaked token (`TokenService.identifyLeak`, behind `tessera scan`): under every key
 * the store holds, including a retired key still published and one past its publication window
 * that no verifier accepts any longer; refresh tokens by their stored hash, rotated ones named so.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { ACCESS_TOKEN_TYPE, TokenService } from '../../src/issuer/service.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { makeKey, sign } from '../helpers/tokens.ts';

let now = 1_900_000_000;
const clock = () => now * 1000;
let issuer: RunningIssuer;
let agent: { id: string; secret: string };

before(async () => {
  // No background sync: its housekeeping would delete the expired key this file looks for.
  issuer = await startIssuer({ clock, config: { token_service: { sync_interval: '60s', max_access_token_ttl: '1h' } } });
  agent = await issuer.addClient({
    id: 'agent',
    grantTypes: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange', 'refresh_token'],
  });
});
after(() => issuer?.close());

describe('identifyLeak', () => {
  it('names an access token signed by a retired key, live while that key is published', async () => {
    const minted = await issuer.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 });
    const oldKid = decodeProtectedHeader(minted.access_token).kid as string;
    now += 1;
    await issuer.service.keys.rotate({ immediate: true });
    assert.deepEqual(
      issuer.service.keys.status().map((k) => [k.kid === oldKid, k.state]),
      [
        [true, 'retired'],
        [false, 'active'],
      ],
    );
    const leak = await issuer.service.identifyLeak(minted.access_token);
    assert.deepEqual(leak && { ...leak, tokenHash: undefined }, {
      kind: 'access_token',
      tokenHash: undefined,
      jti: minted.jti,
      subject: 'alice',
      clientId: 'agent',
      grantId: minted.grant_id,
      expiresAt: now - 1 + 600,
      state: 'live',
    });

    // Past the retired key's publication window (retired + sync_interval + max_access_token_ttl +
    // skew), before any housekeeping removed it from the store: no verifier accepts its tokens, scan
    // still names them.
    now += 60 + 3600 + 60 + 1;
    const cli = new TokenService({ config: issuer.service.config, store: issuer.store, master: undefined, clock });
    await cli.start({ background: false });
    try {
      assert.equal(cli.keys.lookup(oldKid, 'ES256'), 'unknown', 'no longer published');
      assert.equal(JSON.parse(cli.keys.jwks().body).keys.length, 1);
      assert.equal((await cli.identifyLeak(minted.access_token))?.state, 'expired');
      assert.equal((await cli.revokeAccessToken(minted.access_token)) === undefined, true, 'nothing to revoke');
    } finally {
      await cli.close();
    }
  });

  it('names a token whose key housekeeping removed from the store (its public part is kept) as expired; a forgery naming that kid stays nothing', async () => {
    const minted = await issuer.service.mint({ clientId: 'agent', subject: 'dana', ttl: 600 });
    const oldKid = decodeProtectedHeader(minted.access_token).kid as string;
    now += 1;
    await issuer.service.keys.rotate({ immediate: true });
    now += 60 + 3600 + 60 + 1;
    await issuer.service.sync();
    assert.equal(
      issuer.service.keys.status().some((k) => k.kid === oldKid),
      false,
      'housekeeping removed the key',
    );
    const [h, p] = minted.access_token.split('.') as [string, string];
    const attacker = makeKey('ES256', oldKid);
    const forged = await sign(attacker, JSON.parse(Buffer.from(p, 'base64url').toString()), {
      typ: 'at+jwt',
      kid: oldKid,
    });
    assert.equal(JSON.parse(Buffer.from(h, 'base64url').toString()).kid, oldKid);

    const cli = new TokenService({ config: issuer.service.config, store: issuer.store, master: undefined, clock });
    await cli.start({ background: false });
    try {
      const leak = await cli.identifyLeak(minted.access_token);
      assert.deepEqual(leak && { ...leak, tokenHash: undefined }, {
        kind: 'access_token',
        tokenHash: undefined,
        jti: minted.jti,
        subject: 'dana',
        clientId: 'agent',
        grantId: minted.grant_id,
        expiresAt: now - 60 - 3661 - 1 + 600,
        state: 'expired',
      });
      assert.equal(await cli.identifyLeak(forged), undefined, 'the kid alone proves nothing');
      assert.equal(cli.keys.lookup(oldKid, 'ES256'), 'unknown', 'never accepted');
      assert.equal(await cli.revokeAccessToken(minted.access_token), undefined, 'nothing to revoke');
    } finally {
      await cli.close();
    }
  });

  it('names refresh tokens by their stored hash: live, then rotated once exchanged for the next', async () => {
    const user = await issuer.service.mint({ clientId: 'agent', subject: 'bob', ttl: 600 });
    const params = new URLSearchParams({ subject_token: user.access_token, subject_token_type: ACCESS_TOKEN_TYPE });
    const first = (await issuer.service.exchangeAs('agent', params)).refresh_token as string;
    assert.equal((await issuer.service.identifyLeak(first))?.state, 'live');
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: first },
      { authorization: basic(agent.id, agent.secret) },
    );
    assert.equal(res.status, 200);
    const next = ((await res.json()) as { refresh_token: string }).refresh_token;
    const [old, current] = [await issuer.service.identifyLeak(first), await issuer.service.identifyLeak(next)];
    assert.equal(old?.state, 'rotated');
    assert.equal(current?.state, 'live');
    assert.equal(current?.kind, 'refresh_token');
    assert.equal(current?.jti, null);
    assert.equal(current?.subject, 'bob');
    assert.equal(current?.grantId, old?.grantId);
  });

  it('names nothing else: an unknown refresh token, a JWT-looking string, text', async () => {
    for (const s of [`trt_${'A'.repeat(43)}`, 'eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.', 'eyJ.eyJ.x', 'hello']) {
      assert.equal(await issuer.service.identifyLeak(s), undefined, s);
    }
  });
});
