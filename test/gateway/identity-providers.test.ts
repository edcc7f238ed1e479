/**
 * The configuration snippets of docs/identity-providers.md, as written there (only `jwks_uri` is
 * pointed at a JWKS served over loopback HTTP), in front of a gateway route; tokens shaped like each
 * provider's (their claims, a `JWT` header or none, a `kid`, Entra's `x5t`) signed with RS256.
 * A granted scope passes, a missing one is 403 insufficient_scope with its challenge, and the
 * client is read from the provider's claim into the upstream's identity header and the audit event.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { JWTHeaderParameters } from 'jose';
import { parse as parseYaml } from 'yaml';
import { makeKey, sign, type TestKey } from '../helpers/tokens.ts';
import { requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const DOC = readFileSync(new URL('../../docs/identity-providers.md', import.meta.url), 'utf8');

/** The issuers of the snippet marked `<!-- idp: name -->`, as YAML reads them. */
function snippet(name: string): Record<string, unknown>[] {
  const m = new RegExp(`<!-- idp: ${name} -->\\n\`\`\`yaml\\n([\\s\\S]*?)\`\`\``).exec(DOC);
  assert.ok(m, `docs/identity-providers.md has no snippet ${name}`);
  return (parseYaml(m[1] as string) as { issuers: Record<string, unknown>[] }).issuers;
}

const NAMES = ['auth0', 'auth0-rfc9068', 'okta', 'entra', 'keycloak', 'google'] as const;
type Name = (typeof NAMES)[number];
const keys = Object.fromEntries(NAMES.map((n) => [n, makeKey('RS256', `${n}-kid-2024`)])) as Record<Name, TestKey>;

// The snippets' issuers and audiences, as the tokens below carry them.
const AUTH0 = 'https://example-tenant.us.auth0.com/';
const AUTH0_9068 = 'https://example-tenant.eu.auth0.com/';
const API = 'https://api.example.com';
const OKTA = 'https://example.okta.com/oauth2/default';
const TENANT = '00000000-0000-0000-0000-000000000001';
const ENTRA_V2 = `https://login.microsoftonline.com/${TENANT}/v2.0`;
const ENTRA_V1 = `https://sts.windows.net/${TENANT}/`;
const ENTRA_API = '11111111-1111-1111-1111-111111111111';
const KEYCLOAK = 'https://keycloak.example.com/realms/example';
const GOOGLE = 'https://accounts.google.com';

const now = () => Math.floor(Date.now() / 1000);

/** A token of `idp` with `claims` (lifetime added) and its header: `typ` JWT unless given (null: none). */
function mint(
  idp: Name,
  claims: Record<string, unknown>,
  header: Omit<Partial<JWTHeaderParameters>, 'typ'> & { typ?: string | null } = {},
) {
  const t = now();
  const { typ = 'JWT', ...rest } = header;
  return sign(keys[idp], { iat: t, exp: t + 3600, ...claims }, { ...(typ === null ? {} : { typ }), ...rest });
}

describe('docs/identity-providers.md: each snippet at a gateway, with tokens shaped like the provider’s', () => {
  let jwks: Server;
  let upstream: Upstream;
  let gw: TestGateway;

  before(async () => {
    jwks = createServer((req, res) => {
      const idp = /^\/([a-z0-9-]+)\/jwks\.json$/.exec(req.url ?? '')?.[1] as Name | undefined;
      const key = idp === undefined ? undefined : keys[idp];
      if (key === undefined) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...key.jwk, use: 'sig', alg: 'RS256' }] }));
    });
    jwks.listen(0, '127.0.0.1');
    await once(jwks, 'listening');
    const port = (jwks.address() as AddressInfo).port;
    upstream = await startUpstream();
    const issuers = NAMES.flatMap((n) => snippet(n).map((i) => ({ ...i, jwks_uri: `http://127.0.0.1:${port}/${n}/jwks.json` })));
    gw = await startGateway({
      issuers,
      gateway: {
        routes: [
          {
            id: 'api',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            rules: [
              { id: 'read', methods: ['GET'], path: '/api/items', scopes: ['items:read'] },
              { id: 'write', methods: ['POST'], path: '/api/items', scopes: ['items:write'] },
              { id: 'open', methods: ['GET'], path: '/api/open' },
            ],
            identity_headers: ['subject', 'client', 'scopes'],
          },
        ],
      },
    } as Parameters<typeof startGateway>[0]);
  });
  after(async () => {
    // Also when `before` failed (a snippet the schema refuses): the JWKS server must not keep the run alive.
    jwks?.closeAllConnections();
    jwks?.close();
    await gw?.close();
    await upstream?.close();
  });

  it('every snippet in the document is one this test runs', () => {
    assert.deepEqual([...DOC.matchAll(/<!-- idp: ([a-z0-9-]+) -->/g)].map((m) => m[1]).sort(), [...NAMES].sort());
  });

  /** The request's answer, upstream header and audit event, checked: allowed (200) or refused for `missing`. */
  async function expect(token: string, method: 'GET' | 'POST', path: string, client: string, missing?: string) {
    const seen = upstream.seen.length;
    const res = await fetch(`${gw.url}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    const body = await res.text();
    const event = (await requestEvents(gw)).at(-1);
    assert.equal(event?.client_id, client);
    if (missing === undefined) {
      assert.equal(res.status, 200, body);
      assert.equal(upstream.seen.length, seen + 1);
      assert.equal(upstream.seen.at(-1)?.headers['x-tessera-client-id'], client);
      assert.equal(event?.decision, 'allow');
    } else {
      assert.equal(res.status, 403, body);
      assert.equal(upstream.seen.length, seen);
      const challenge = res.headers.get('www-authenticate') ?? '';
      assert.match(challenge, /^Bearer /);
      assert.match(challenge, /error="insufficient_scope"/);
      assert.match(challenge, new RegExp(`scope="${missing}"`));
      assert.equal(event?.decision, 'deny');
      assert.equal(event?.reason, 'scope_insufficient');
    }
    return event;
  }

  describe('Auth0', () => {
    const user = { iss: AUTH0, sub: 'auth0|65a1b2c3d4', aud: [API, `${AUTH0}userinfo`], azp: 'Xq3mE9tAuth0ClientId' };

    it('reads the client from azp and the scopes from scope', async () => {
      const t = await mint('auth0', { ...user, scope: 'openid profile items:read', permissions: [] }, { kid: 'auth0-kid-2024' });
      const e = await expect(t, 'GET', '/api/items', 'Xq3mE9tAuth0ClientId');
      assert.deepEqual(e?.scopes_granted, ['openid', 'profile', 'items:read']);
      await expect(t, 'POST', '/api/items', 'Xq3mE9tAuth0ClientId', 'items:write');
    });

    it('unites the RBAC permissions (an array) with scope', async () => {
      const t = await mint('auth0', { ...user, scope: 'openid', permissions: ['items:read', 'items:write'] });
      await expect(t, 'POST', '/api/items', 'Xq3mE9tAuth0ClientId');
      const e = await expect(t, 'GET', '/api/items', 'Xq3mE9tAuth0ClientId');
      assert.deepEqual(e?.scopes_granted, ['openid', 'items:read', 'items:write']);
    });

    it('a machine-to-machine token: its client in azp, its permissions', async () => {
      const m2m = { iss: AUTH0, sub: 'Xq3mE9tAuth0ClientId@clients', aud: API, azp: 'Xq3mE9tAuth0ClientId', gty: 'client-credentials' };
      const t = await mint('auth0', { ...m2m, scope: 'items:read', permissions: ['items:read'] });
      await expect(t, 'GET', '/api/items', 'Xq3mE9tAuth0ClientId');
      await expect(t, 'POST', '/api/items', 'Xq3mE9tAuth0ClientId', 'items:write');
    });

    it('the RFC 9068 profile: client_id, typ at+jwt (required; a JWT-typed token is refused)', async () => {
      const claims = { iss: AUTH0_9068, sub: 'auth0|65a1b2c3d4', aud: API, client_id: 'Rfc9068ClientId', scope: 'items:write', jti: 'j-1' };
      await expect(await mint('auth0-rfc9068', claims, { typ: 'at+jwt' }), 'POST', '/api/items', 'Rfc9068ClientId');
      await expect(await mint('auth0-rfc9068', claims, { typ: 'at+jwt' }), 'GET', '/api/items', 'Rfc9068ClientId', 'items:read');
      const res = await fetch(`${gw.url}/api/items`, { headers: { authorization: `Bearer ${await mint('auth0-rfc9068', claims)}` } });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    });
  });

  describe('Okta', () => {
    const base = { ver: 1, jti: 'AT.k2Qx9', iss: OKTA, aud: 'api://default', cid: '0oa1b2c3d4OktaApp', uid: '00u1a2b3c4' };

    it('reads the client from cid and the scopes from scp (an array); no typ header', async () => {
      const t = await mint('okta', { ...base, sub: 'alice@example.com', scp: ['openid', 'items:read'] }, { typ: null });
      const e = await expect(t, 'GET', '/api/items', '0oa1b2c3d4OktaApp');
      assert.deepEqual(e?.scopes_granted, ['openid', 'items:read']);
      await expect(t, 'POST', '/api/items', '0oa1b2c3d4OktaApp', 'items:write');
    });

    it('a client-credentials token (sub is the client)', async () => {
      const t = await mint('okta', { ...base, uid: undefined, sub: '0oa1b2c3d4OktaApp', scp: ['items:write'] }, { typ: null });
      await expect(t, 'POST', '/api/items', '0oa1b2c3d4OktaApp');
    });
  });

  describe('Microsoft Entra ID', () => {
    const v2 = {
      aud: ENTRA_API,
      iss: ENTRA_V2,
      nbf: now() - 5,
      azp: '22222222-2222-2222-2222-222222222222',
      oid: '33333333-3333-3333-3333-333333333333',
      sub: 'pR9lHJ6kQx0-entra-sub',
      tid: TENANT,
      uti: 'AbCdEfGh',
      ver: '2.0',
    };
    const header = { kid: 'entra-kid-2024', x5t: 'entra-kid-2024' };

    it('v2.0 delegated: client from azp, scopes from scp (a string)', async () => {
      const t = await mint('entra', { ...v2, azpacr: '0', scp: 'items:read User.Read', name: 'Alice' }, header);
      const e = await expect(t, 'GET', '/api/items', '22222222-2222-2222-2222-222222222222');
      assert.deepEqual(e?.scopes_granted, ['items:read', 'User.Read']);
      await expect(t, 'POST', '/api/items', '22222222-2222-2222-2222-222222222222', 'items:write');
    });

    it('v2.0 client credentials: no scp, the application permissions in roles', async () => {
      const t = await mint('entra', { ...v2, azpacr: '1', sub: v2.oid, roles: ['items:write'] }, header);
      const e = await expect(t, 'POST', '/api/items', '22222222-2222-2222-2222-222222222222');
      assert.deepEqual(e?.scopes_granted, ['items:write']);
      await expect(t, 'GET', '/api/items', '22222222-2222-2222-2222-222222222222', 'items:read');
    });

    it('v1.0 (sts.windows.net issuer, ver 1.0): client from appid', async () => {
      const v1 = {
        ...v2,
        azp: undefined,
        iss: ENTRA_V1,
        aud: 'api://example-api',
        ver: '1.0',
        appid: '44444444-4444-4444-4444-444444444444',
        appidacr: '1',
      };
      const delegated = await mint('entra', { ...v1, scp: 'items:read' }, header);
      await expect(delegated, 'GET', '/api/items', '44444444-4444-4444-4444-444444444444');
      await expect(delegated, 'POST', '/api/items', '44444444-4444-4444-4444-444444444444', 'items:write');
      const app = await mint('entra', { ...v1, roles: ['items:write', 'items:read'] }, header);
      await expect(app, 'POST', '/api/items', '44444444-4444-4444-4444-444444444444');
    });
  });

  describe('Keycloak', () => {
    it('reads the client from azp and the scopes from scope', async () => {
      const claims = {
        jti: 'kc-1',
        iss: KEYCLOAK,
        aud: ['example-api', 'account'],
        sub: 'f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b',
        typ: 'Bearer',
        azp: 'example-client',
        session_state: 's-1',
        scope: 'openid profile email items:read',
      };
      const t = await mint('keycloak', claims);
      await expect(t, 'GET', '/api/items', 'example-client');
      await expect(t, 'POST', '/api/items', 'example-client', 'items:write');
    });
  });

  describe('Google', () => {
    it('reads the client from azp; no scopes: a rule without scopes passes, one with is 403', async () => {
      const claims = {
        iss: GOOGLE,
        azp: '123456789012-abc.apps.googleusercontent.com',
        aud: API,
        sub: '110169484474386276334',
        email: 'robot@example.iam.gserviceaccount.com',
        email_verified: true,
      };
      const t = await mint('google', claims);
      await expect(t, 'GET', '/api/open', '123456789012-abc.apps.googleusercontent.com');
      await expect(t, 'GET', '/api/items', '123456789012-abc.apps.googleusercontent.com', 'items:read');
    });
  });
});
