/**
 * The authorization code flow with real clients against a running Tessera: openid-client (panva)
 * doing discovery, PKCE S256, the authorization request with an RFC 8707 resource, the callback
 * with `iss` checked (RFC 9207), the code exchange and a refresh, the same with its DPoP handle
 * (RFC 9449: `dpop_jkt`, nonces, a bound refresh token); and the MCP SDK's `auth()`
 * helper doing what an MCP client does (RFC 9728 discovery from the MCP server, RFC 8414,
 * RFC 7591 dynamic registration, PKCE, code exchange). The person's side is driven as a browser
 * behind an SSO proxy would: plain HTTP requests carrying the trusted headers, the consent form's
 * fields read from the HTML and posted back.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as oidc from 'openid-client';
import { approve, authorizationConfig, personHeaders } from '../helpers/authorize.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { MemoryOAuthProvider } from '../helpers/mcp-oauth-provider.ts';

const REDIRECT = 'http://127.0.0.1:33418/callback';
let issuer: RunningIssuer;
let mcp: Server;
let mcpUrl: string;
let resource: string;

before(async () => {
  // The MCP server (a resource server) only needs to say which authorization server protects it (RFC 9728).
  mcp = createServer((req, res) => {
    if (req.url?.startsWith('/.well-known/oauth-protected-resource')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ resource, authorization_servers: [issuer.url], scopes_supported: ['mcp:tools'] }));
      return;
    }
    res.writeHead(401, { 'www-authenticate': `Bearer resource_metadata="${mcpUrl}/.well-known/oauth-protected-resource/mcp"` });
    res.end();
  });
  await new Promise<void>((resolve) => mcp.listen(0, '127.0.0.1', resolve));
  mcpUrl = `http://127.0.0.1:${(mcp.address() as AddressInfo).port}`;
  resource = `${mcpUrl}/mcp`;
  issuer = await startIssuer({
    config: {
      token_service: {
        authorization: authorizationConfig(),
        registration: { enabled: true, open: true, scopes: ['mcp:tools', 'mcp:read'], audiences: [resource] },
      },
    } as never,
  });
  await issuer.service.registerClient({
    id: 'oidc-app',
    public: true,
    name: 'openid-client app',
    scopes: ['mcp:tools'],
    audiences: [resource],
    redirectUris: [REDIRECT],
  });
});
after(async () => {
  await issuer?.close();
  mcp.closeAllConnections();
  await new Promise<void>((resolve) => mcp.close(() => resolve()));
});

async function verified(token: string): Promise<Record<string, unknown>> {
  const jwks = createRemoteJWKSet(new URL(`${issuer.url}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(token, jwks, { issuer: issuer.url, audience: resource, typ: 'at+jwt' });
  return payload;
}

describe('openid-client: authorization code + PKCE', () => {
  it('discovers, authorizes with a resource, checks iss and state, exchanges the code and refreshes', async () => {
    const config = await oidc.discovery(new URL(issuer.url), 'oidc-app', undefined, oidc.None(), {
      execute: [oidc.allowInsecureRequests],
      algorithm: 'oauth2',
    });
    const m = config.serverMetadata();
    assert.equal(m.authorization_endpoint, `${issuer.url}/oauth2/authorize`);
    assert.equal(m.authorization_response_iss_parameter_supported, true);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT,
      scope: 'mcp:tools',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      resource,
    });
    const callback = await approve(url.href, personHeaders('alice'));
    assert.equal(callback.searchParams.get('iss'), issuer.url);
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource });
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    const claims = await verified(tokens.access_token);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.aud, resource);
    assert.equal(claims.scope, 'mcp:tools');
    assert.equal(claims.client_id, 'oidc-app');
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token as string);
    assert.equal((await verified(refreshed.access_token)).sub, 'alice');
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  });

  it('rejects a callback whose state is not the one sent (openid-client checks it; Tessera echoes it unchanged)', async () => {
    const config = await oidc.discovery(new URL(issuer.url), 'oidc-app', undefined, oidc.None(), {
      execute: [oidc.allowInsecureRequests],
      algorithm: 'oauth2',
    });
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: 'sent-state',
    });
    const callback = await approve(url.href);
    assert.equal(callback.searchParams.get('state'), 'sent-state');
    await assert.rejects(oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: 'other-state' }));
  });
});

describe('openid-client: authorization code + PKCE + DPoP (RFC 9449)', () => {
  /**
   * openid-client's own DPoP handle end to end: the code bound to its key by `dpop_jkt` (§10), the
   * tokens bound to it (`cnf.jkt`), the public client's refresh token bound to it too (§5), and with
   * `token_service.dpop.nonce` the client's retry on `use_dpop_nonce` (§8). A refresh token used
   * with another key's proof, or none, is refused.
   */
  for (const nonce of [false, true]) {
    it(`attack: a DPoP-bound code and refresh token redeem only with the client’s key (nonces ${nonce ? 'required' : 'off'})`, async () => {
      const server = nonce
        ? await startIssuer({ config: { token_service: { authorization: authorizationConfig(), dpop: { nonce: true } } } as never })
        : issuer;
      try {
        if (nonce) {
          await server.service.registerClient({
            id: 'oidc-app',
            public: true,
            scopes: ['mcp:tools'],
            audiences: [resource],
            redirectUris: [REDIRECT],
          });
        }
        const config = await oidc.discovery(new URL(server.url), 'oidc-app', undefined, oidc.None(), {
          execute: [oidc.allowInsecureRequests],
          algorithm: 'oauth2',
        });
        const DPoP = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
        const jkt = await DPoP.calculateThumbprint();
        const verifier = oidc.randomPKCECodeVerifier();
        const url = oidc.buildAuthorizationUrl(config, {
          redirect_uri: REDIRECT,
          scope: 'mcp:tools',
          code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
          code_challenge_method: 'S256',
          state: 'dpop-state',
          resource,
          dpop_jkt: jkt,
        });
        const callback = await approve(url.href, personHeaders('alice'));
        const tokens = await oidc.authorizationCodeGrant(
          config,
          callback,
          { pkceCodeVerifier: verifier, expectedState: 'dpop-state' },
          { resource },
          { DPoP },
        );
        assert.equal(tokens.token_type.toLowerCase(), 'dpop');
        const jwks = createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`));
        const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: server.url, audience: resource, typ: 'at+jwt' });
        assert.deepEqual(payload.cnf, { jkt });

        const thief = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
        const refreshToken = tokens.refresh_token as string;
        await assert.rejects(oidc.refreshTokenGrant(config, refreshToken, undefined, { DPoP: thief }), { error: 'invalid_grant' });
        await assert.rejects(oidc.refreshTokenGrant(config, refreshToken), { error: 'invalid_grant' });
        // Refused before anything was spent: the client's own refresh still works, still bound.
        const refreshed = await oidc.refreshTokenGrant(config, refreshToken, undefined, { DPoP });
        assert.equal(refreshed.token_type.toLowerCase(), 'dpop');
        const again = await jwtVerify(refreshed.access_token, jwks, { issuer: server.url, audience: resource, typ: 'at+jwt' });
        assert.deepEqual(again.payload.cnf, { jkt });
      } finally {
        if (nonce) await server.close();
      }
    });
  }
});

describe('MCP SDK: auth() with dynamic registration and PKCE', () => {
  it('registers itself, sends the person to the consent page, and exchanges the code for a token for the MCP server', async () => {
    const provider = new MemoryOAuthProvider(REDIRECT, 'MCP SDK test client');
    assert.equal(await auth(provider, { serverUrl: resource }), 'REDIRECT');
    const client = provider.client as { client_id: string; client_secret?: string };
    assert.match(client.client_id, /^dcr_/);
    assert.equal(client.client_secret, undefined);
    const url = provider.authorizationUrl as URL;
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(url.searchParams.get('resource'), resource);

    const callback = await approve(url.href, personHeaders('bob'));
    const code = callback.searchParams.get('code') as string;
    assert.equal(await auth(provider, { serverUrl: resource, authorizationCode: code }), 'AUTHORIZED');
    const claims = await verified((provider.saved as OAuthTokens).access_token);
    assert.equal(claims.sub, 'bob');
    assert.equal(claims.client_id, client.client_id);
    assert.equal(claims.scope, 'mcp:tools');

    // The next auth() refreshes with the rotated refresh token instead of asking the person again.
    const before = provider.saved?.refresh_token;
    assert.equal(await auth(provider, { serverUrl: resource }), 'AUTHORIZED');
    assert.notEqual(provider.saved?.refresh_token, before);

    await issuer.service.audit.flush();
    const created = (await issuer.store.queryAudit({ client_id: client.client_id })).find((e) => e.kind === 'client.created');
    assert.equal(created?.detail?.registered, 'dynamic');
  });
});
