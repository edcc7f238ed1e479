/**
 * The gateway with Tessera's own token service as its RFC 7662 introspection endpoint, end to
 * end: a real token service (SQLite, loopback HTTP), the gateway introspecting as a client that
 * also holds refresh tokens, and a route with `auth: introspection` and no `audience`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from '../gateway/helpers.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';

describe('gateway: introspection against Tessera’s own token service', () => {
  let issuer: RunningIssuer;
  let upstream: Upstream;
  let gw: TestGateway;
  let tokens: { access_token: string; refresh_token: string };
  before(async () => {
    issuer = await startIssuer();
    // The gateway's introspection client is also a client that obtains tokens (and refresh tokens).
    const client = await issuer.addClient({
      id: 'gw',
      scopes: ['api:read'],
      audiences: ['https://api.test'],
      grantTypes: ['client_credentials', 'refresh_token', EXCHANGE],
    });
    const subject = await issuer.service.mint({ clientId: 'gw', subject: 'alice', ttl: 3600 });
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: subject.access_token, subject_token_type: AT },
      { authorization: basic(client.id, client.secret) },
    );
    tokens = (await res.json()) as typeof tokens;
    assert.ok(tokens.refresh_token, 'the exchange issued a refresh token');
    upstream = await startUpstream();
    gw = await startGateway({
      introspection: { endpoint: `${issuer.url}/oauth2/introspect`, client_id: client.id, client_secret: client.secret },
      dpop: { mode: 'disabled' },
      gateway: {
        routes: [
          {
            id: 'opaque',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url },
            auth: 'introspection',
            rules: [{}],
            identity_headers: ['subject'],
          },
        ],
      },
    });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
    await issuer?.close();
  });

  const get = (token: string) => fetch(`${gw.url}/api/items`, { headers: { authorization: `Bearer ${token}` } });

  it('passes an access token the token service calls active', async () => {
    const res = await get(tokens.access_token);
    assert.equal(res.status, 200);
    assert.equal(upstream.seen.at(-1)?.headers['x-tessera-subject'], 'alice');
  });

  it('attack: a refresh token accepted as an access token (the endpoint says token_type refresh_token) is 401, never forwarded', async () => {
    const seen = upstream.seen.length;
    const res = await get(tokens.refresh_token);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token"/);
    assert.equal(upstream.seen.length, seen);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'token_typ_invalid');
  });
});
