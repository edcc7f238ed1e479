/**
 * A token carrying the admin scope is for the admin audience alone (RFC 8707 §2, RFC 9068 §3):
 * whatever the grant, a client holding the admin scope and an API audience is never issued one
 * token good for both, which that API (or whoever compromises it) could replay at the admin API.
 * A request naming the admin scope and another target is refused (invalid_target,
 * `target_admin_shared`); one naming the admin scope and no target gets the admin audience; a
 * request leaving the scope to its default gets the admin scope only with the admin audience alone.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { OAuthError } from '../../src/core/oauth-errors.ts';
import { REFRESH_TOKEN_PREFIX, randomSecret, sha256 } from '../../src/issuer/secrets.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const SHARED = 'A token with the admin scope is for the admin audience alone; request other audiences in another token.';

let issuer: RunningIssuer;
let ops: { id: string; secret: string };

before(async () => {
  issuer = await startIssuer();
  // An operator's client that also calls an API: the configuration the attack needs.
  ops = await issuer.addClient({
    id: 'ops-api',
    scopes: ['tessera:admin', 'api:read'],
    audiences: [issuer.url, API],
    grantTypes: ['client_credentials', 'refresh_token', EXCHANGE],
    retargetAudiences: true,
  });
  await issuer.service.registerClient({
    id: 'ops-app',
    public: true,
    scopes: ['tessera:admin', 'api:read'],
    audiences: [issuer.url, API],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: [REDIRECT],
  });
});
after(() => issuer?.close());

const token = (form: Record<string, string | string[]>) => issuer.post('/oauth2/token', form, { authorization: basic(ops.id, ops.secret) });

async function refused(res: Response): Promise<void> {
  const body = (await res.json()) as Record<string, string>;
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.deepEqual(body, { error: 'invalid_target', error_description: SHARED });
}

async function issued(res: Response): Promise<{ aud: unknown; scope: string | undefined; refresh_token?: string }> {
  const body = (await res.json()) as Record<string, string>;
  assert.equal(res.status, 200, JSON.stringify(body));
  const claims = decodeJwt(body.access_token as string);
  assert.equal(claims.scope, body.scope);
  return { aud: claims.aud, scope: body.scope, ...(body.refresh_token ? { refresh_token: body.refresh_token } : {}) };
}

describe('client credentials', () => {
  it('attack: refuses the admin scope with the admin audience and an API audience in one token (invalid_target target_admin_shared)', async () => {
    await refused(await token({ grant_type: 'client_credentials', scope: 'tessera:admin', audience: [issuer.url, API] }));
    await refused(await token({ grant_type: 'client_credentials', scope: 'tessera:admin api:read', resource: [API, issuer.url] }));
  });

  it('attack: refuses the admin scope for an API audience alone', async () => {
    await refused(await token({ grant_type: 'client_credentials', scope: 'tessera:admin', audience: API }));
  });

  it('gives the admin audience alone to a request naming the admin scope and no target, though the client has several audiences', async () => {
    assert.deepEqual(await issued(await token({ grant_type: 'client_credentials', scope: 'tessera:admin' })), {
      aud: issuer.url,
      scope: 'tessera:admin',
    });
  });

  it('leaves the admin scope out of a default-scoped token for another audience, and in one for the admin audience alone', async () => {
    assert.deepEqual(await issued(await token({ grant_type: 'client_credentials', audience: API })), { aud: API, scope: 'api:read' });
    assert.deepEqual(await issued(await token({ grant_type: 'client_credentials', audience: [issuer.url, API] })), {
      aud: [issuer.url, API],
      scope: 'api:read',
    });
    assert.deepEqual(await issued(await token({ grant_type: 'client_credentials', audience: issuer.url })), {
      aud: issuer.url,
      scope: 'tessera:admin api:read',
    });
  });
});

describe('tessera token mint', () => {
  it('attack: refuses to mint the admin scope with another audience', async () => {
    await assert.rejects(
      issuer.service.mint({ clientId: 'ops-api', scopes: ['tessera:admin'], audiences: [issuer.url, API] }),
      (e) => e instanceof OAuthError && e.code === 'target_admin_shared',
    );
    await assert.rejects(
      issuer.service.mint({ clientId: 'ops-api', subject: 'root-admin', scopes: ['tessera:admin'], audiences: [API] }),
      (e) => e instanceof OAuthError && e.code === 'target_admin_shared',
    );
  });

  it('mints an admin token for the admin audience alone when none is named', async () => {
    const minted = await issuer.service.mint({ clientId: 'ops-api', subject: 'root-admin', scopes: ['tessera:admin'] });
    assert.equal(decodeJwt(minted.access_token).aud, issuer.url);
  });
});

describe('token exchange and refresh', () => {
  const admin = async () =>
    (await issuer.service.mint({ clientId: 'ops-api', subject: 'root-admin', ttl: 600, audiences: [issuer.url] })).access_token;
  const exchange = async (form: Record<string, string | string[]>) =>
    token({ grant_type: EXCHANGE, subject_token: await admin(), subject_token_type: AT, ...form });

  it('attack: an admin token exchanged for the admin scope and an API audience is refused', async () => {
    await refused(await exchange({ scope: 'tessera:admin', audience: [issuer.url, API] }));
    await refused(await exchange({ scope: 'tessera:admin', audience: API }));
  });

  it('attack: an admin token exchanged for an API audience with the default scope loses the admin scope, and refreshing cannot win it back', async () => {
    const t = await issued(await exchange({ audience: API }));
    assert.deepEqual([t.aud, t.scope], [API, 'api:read']);
    const back = await token({ grant_type: 'refresh_token', refresh_token: t.refresh_token as string, scope: 'tessera:admin' });
    assert.equal(back.status, 400);
    assert.equal(((await back.json()) as { error: string }).error, 'invalid_scope');
  });

  it('exchanges for the admin scope with no target into the admin audience alone, and refreshes it so', async () => {
    const t = await issued(await exchange({ scope: 'tessera:admin' }));
    assert.deepEqual([t.aud, t.scope], [issuer.url, 'tessera:admin']);
    const r = await issued(await token({ grant_type: 'refresh_token', refresh_token: t.refresh_token as string }));
    assert.deepEqual([r.aud, r.scope], [issuer.url, 'tessera:admin']);
  });

  it('attack: a refresh of a grant holding the admin scope and an API audience (left by an older version) never yields both in one token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const legacy = async () => {
      const grant = await issuer.store.createGrant(
        {
          id: `g_legacy_${randomUUID()}`,
          parentId: null,
          kind: 'mint',
          issuer: issuer.url,
          subject: 'root-admin',
          clientId: 'ops-api',
          act: null,
          scopes: ['tessera:admin', 'api:read'],
          audiences: [issuer.url, API],
          createdAt: now,
          expiresAt: now + 600,
        },
        now,
      );
      assert.equal(typeof grant, 'object');
      const refreshToken = randomSecret(REFRESH_TOKEN_PREFIX);
      await issuer.store.createRefreshToken({
        hash: sha256(refreshToken),
        grantId: (grant as { id: string }).id,
        clientId: 'ops-api',
        createdAt: now,
        expiresAt: now + 600,
        rotatedAt: null,
        revokedAt: null,
      });
      return refreshToken;
    };
    const refresh = async (form: Record<string, string | string[]> = {}) =>
      token({ grant_type: 'refresh_token', refresh_token: await legacy(), ...form });
    await refused(await refresh({ scope: 'tessera:admin', audience: [issuer.url, API] }));
    await refused(await refresh({ scope: 'tessera:admin', audience: API }));
    // The grant's scope and audiences as they are: the admin scope is left out.
    const r = await issued(await refresh());
    assert.deepEqual([r.aud, r.scope], [[issuer.url, API], 'api:read']);
    // Named, the admin scope narrows the token to the admin audience.
    const a = await issued(await refresh({ scope: 'tessera:admin' }));
    assert.deepEqual([a.aud, a.scope], [issuer.url, 'tessera:admin']);
  });
});

describe('authorization code', () => {
  const authorize = (scope: string | undefined, resources: string[]) => {
    const { challenge } = pkcePair();
    const params = new URLSearchParams({
      response_type: 'code',
      client_id: 'ops-app',
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state: 'st',
    });
    if (scope !== undefined) params.set('scope', scope);
    for (const r of resources) params.append('resource', r);
    return issuer.service.checkAuthorizationRequest(params);
  };

  it('attack: refuses an authorization request for the admin scope and an API resource (invalid_target target_admin_shared)', async () => {
    for (const resources of [[issuer.url, API], [API]]) {
      const outcome = await authorize('tessera:admin api:read', resources);
      assert.equal(outcome.ok, false);
      if (!outcome.ok) assert.equal(outcome.error.code, 'target_admin_shared');
    }
  });

  it('approves the admin scope with no resource for the admin audience alone, and leaves it out of a default-scoped request for an API', async () => {
    const admin = await authorize('tessera:admin', []);
    assert.equal(admin.ok, true);
    if (admin.ok) assert.deepEqual([admin.request.audiences, admin.request.scopes], [[issuer.url], ['tessera:admin']]);
    const api = await authorize(undefined, [API]);
    assert.equal(api.ok, true);
    if (api.ok) assert.deepEqual([api.request.audiences, api.request.scopes], [[API], ['api:read']]);
  });
});
