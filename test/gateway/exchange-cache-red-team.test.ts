/**
 * Red team of `credential: exchange`'s cache and mint in a real `tessera serve` (token service and
 * gateway in one process, SQLite in a temp dir) in front of a loopback upstream recording the
 * Authorization it receives: callers that differ in one dimension, a caller narrower than the one
 * before it, a caller's token expiring, another issuer's chain, a token service that fails.
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

describe('gateway: exchange cache and mint, red team (real token service)', () => {
  let serve: ExchangeServe;
  let url: string;
  let upstream: Upstream;
  let running: RunningServer;

  before(async () => {
    serve = await exchangeServe(
      'tessera-exchange-red-',
      'gw',
      [
        { issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [key.jwk] } },
        { issuer: IDP2, audiences: [AUDIENCE], jwks: { keys: [idp2Key.jwk] } },
      ],
      {
        scopes: ['api:write'],
        routes: (upstreamUrl) => [
          {
            id: 'wide',
            match: { path_prefix: '/wide' },
            upstream: {
              url: upstreamUrl,
              credential: { type: 'exchange', audience: UPSTREAM_AUD, max_ttl: '5m', scopes: ['api:read', 'api:write'] },
            },
            auth: 'jwt',
            rules: [{ id: 'read', scopes: ['api:read'] }],
          },
        ],
      },
    );
    ({ url, upstream } = serve);
    running = await serve.start();
    await running.service.registerClient({
      id: 'gw',
      scopes: ['api:read', 'api:write'],
      audiences: [UPSTREAM_AUD],
      grantTypes: [TOKEN_EXCHANGE],
    });
    await running.service.registerClient({
      id: 'agent',
      scopes: ['api:read', 'api:write'],
      audiences: [`${url}/api`],
      grantTypes: ['client_credentials'],
    });
  });
  after(async () => {
    await running?.close();
    await serve?.close();
  });

  const call = async (token: string, path = '/api/x') => {
    const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    const body = await res.text();
    return { status: res.status, body, challenge: res.headers.get('www-authenticate') };
  };
  const sent = () => String(upstream.seen.at(-1)!.headers.authorization).replace(/^Bearer /, '');
  const now = () => Math.floor(Date.now() / 1000);

  it('a narrower caller of the same subject never gets the broader one’s cached token (route `scopes:` wider than the rule)', async () => {
    const broad = await sign(key, claims({ iss: ISSUER, sub: 'erin', aud: AUDIENCE, scope: 'api:read api:write' }));
    const narrow = await sign(key, claims({ iss: ISSUER, sub: 'erin', aud: AUDIENCE, scope: 'api:read' }));
    assert.equal((await call(broad, '/wide/x')).status, 200);
    const b = decodeJwt(sent());
    assert.equal(b.scope, 'api:read api:write');
    assert.equal((await call(narrow, '/wide/x')).status, 200);
    const n = decodeJwt(sent());
    assert.notEqual(n.jti, b.jti);
    assert.equal(n.scope, 'api:read');
    assert.equal((await call(broad, '/wide/x')).status, 200);
    assert.equal(decodeJwt(sent()).jti, b.jti, 'each caller keeps its own cached token');
  });

  it('the same subject and scopes under another client_id gets its own token', async () => {
    const base = { iss: ISSUER, sub: 'fred', aud: AUDIENCE, scope: 'api:read' };
    assert.equal((await call(await sign(key, claims({ ...base, client_id: 'c1' })))).status, 200);
    const first = sent();
    assert.equal((await call(await sign(key, claims({ ...base, client_id: 'c2' })))).status, 200);
    assert.notEqual(sent(), first);
  });

  it('a sub and client_id crafted around the cache key’s separators share no token', async () => {
    const a = await sign(key, claims({ iss: ISSUER, sub: 'x\n\n', aud: AUDIENCE, scope: 'api:read', client_id: 'c', jti: 'j' }));
    const b = await sign(key, claims({ iss: ISSUER, sub: 'x', aud: AUDIENCE, scope: 'api:read', client_id: '\n\nc', jti: 'j' }));
    assert.equal((await call(a)).status, 200);
    const first = decodeJwt(sent());
    assert.equal((await call(b)).status, 200);
    const second = decodeJwt(sent());
    assert.notEqual(second.jti, first.jti);
    assert.equal(first.sub, 'x\n\n');
    assert.equal(second.sub, 'x');
  });

  it('the minted exp is ≤ the caller’s (a fractional one too); once the caller’s has passed (within clock_skew) nothing is forwarded and the caller gets 401 invalid_token, not 502; a new token of the subject mints anew', async () => {
    const exp = now() + 2.7;
    const t1 = await sign(key, claims({ iss: ISSUER, sub: 'gina', aud: AUDIENCE, scope: 'api:read', exp }));
    assert.equal((await call(t1)).status, 200);
    const m1 = decodeJwt(sent());
    assert.ok((m1.exp as number) <= exp, `minted exp ${m1.exp} > caller exp ${exp}`);
    await new Promise((r) => setTimeout(r, (exp - Date.now() / 1000) * 1000 + 300));
    // Within clock_skew (30 s) the gateway still takes the caller's token, but no upstream token
    // can be minted for it: the caller is told its token expired (401, so it gets a new one), not
    // 502 (a server fault it would retry as it is).
    const seen = upstream.seen.length;
    const late = await call(t1);
    assert.equal(late.status, 401);
    assert.match(late.challenge ?? '', /^Bearer .*error="invalid_token"/);
    assert.equal(upstream.seen.length, seen, 'a request with an expired caller token reached the upstream');
    const t2 = await sign(key, claims({ iss: ISSUER, sub: 'gina', aud: AUDIENCE, scope: 'api:read' }));
    assert.equal((await call(t2)).status, 200);
    const m2 = decodeJwt(sent());
    assert.notEqual(m2.jti, m1.jti);
    assert.ok((m2.exp as number) > now());
  });

  it('attack: an identity provider’s chain is re-issued under its issuer; one naming the token service or another trusted issuer’s subject, or a sub that is a client id, is refused with nothing forwarded', async () => {
    const t = await sign(
      idp2Key,
      claims({ iss: IDP2, sub: 'hank', aud: AUDIENCE, scope: 'api:read', act: { sub: 'bot', act: { sub: 'human', iss: IDP2 } } }),
    );
    assert.equal((await call(t)).status, 200);
    const m = decodeJwt(sent());
    assert.equal(m.sub, 'hank');
    assert.deepEqual(m.sub_id, { format: 'iss_sub', iss: IDP2, sub: 'hank' });
    assert.deepEqual(m.act, { sub: 'gw', act: { sub: 'bot', iss: IDP2, act: { sub: 'human', iss: IDP2 } } });
    const seen = upstream.seen.length;
    for (const over of [
      { act: { sub: 'bot', act: { sub: 'agent', iss: url } } },
      // IDP2 may not say that a subject of ISSUER (the other identity provider the gateway trusts) acted.
      { act: { sub: 'bot', act: { sub: 'human', iss: ISSUER } } },
      { sub: 'agent' },
      { sub: 'gw' },
    ]) {
      const forged = await sign(idp2Key, claims({ iss: IDP2, sub: 'hank', aud: AUDIENCE, scope: 'api:read', ...over }));
      const r = await call(forged);
      assert.equal(r.status, 502, JSON.stringify(over));
    }
    assert.equal(upstream.seen.length, seen);
  });

  it('a token service that fails (its store refusing) fails closed: 502 upstream_credential_unavailable, nothing forwarded, no message leaked', async () => {
    const store = running.service.store as unknown as Record<string, unknown>;
    const createGrant = store.createGrant;
    store.createGrant = () => Promise.reject(new Error('connect ECONNREFUSED password=hunter2'));
    try {
      const seen = upstream.seen.length;
      const logged = serve.log.length;
      const r = await call(await sign(key, claims({ iss: ISSUER, sub: 'ivy', aud: AUDIENCE, scope: 'api:read' })));
      assert.equal(r.status, 502);
      assert.equal(JSON.parse(r.body).error_description, 'The credential for the upstream service could not be obtained.');
      assert.doesNotMatch(r.body, /hunter2|ECONNREFUSED/);
      assert.equal(upstream.seen.length, seen);
      // The failure is logged, by its stable code, never with the store's message.
      const lines = serve.log.slice(logged).join('');
      assert.match(lines, /upstream_credential/);
      assert.doesNotMatch(lines, /hunter2|ECONNREFUSED/);
    } finally {
      store.createGrant = createGrant;
    }
  });
});
