/**
 * RFC 7591 dynamic client registration at `/oauth2/register`: off by default; gated by an initial
 * access token (or explicitly open); public and confidential clients; redirect URIs https or
 * loopback http only; scopes within the configured maximum; `client.created` audited with
 * `registered: dynamic`; the secret returned once and stored hashed.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { authorizationConfig, authorizationRequest, openConsent } from '../helpers/authorize.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const IAT = 'initial-access-token-0123456789abcdefghij';
const MCP = 'https://mcp.test/mcp';

let issuer: RunningIssuer;

const registrationConfig = (extra: Record<string, unknown> = {}) => ({
  token_service: {
    authorization: authorizationConfig(),
    // Many registrations from one loopback address: a limit the flooding test lowers.
    registration: {
      enabled: true,
      initial_access_token: IAT,
      scopes: ['mcp:tools', 'mcp:read'],
      audiences: [MCP],
      rate_limit: { rate: 100, burst: 1000 },
      ...extra,
    },
  },
});

before(async () => {
  issuer = await startIssuer({ config: registrationConfig() as never });
});
after(() => issuer?.close());

function register(body: unknown, token: string | null = IAT, url = issuer.url): Promise<Response> {
  return fetch(`${url}/oauth2/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token !== null ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

const mcpClient = {
  client_name: 'Test MCP Client',
  redirect_uris: ['http://127.0.0.1:33418/callback'],
  token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
};

async function expectError(res: Response, status: number, error: string): Promise<void> {
  const body = (await res.json()) as { error: string };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
}

describe('dynamic client registration', () => {
  it('is off by default: no endpoint, nothing in the metadata', async () => {
    const plain = await startIssuer();
    try {
      assert.equal((await register(mcpClient, null, plain.url)).status, 404);
      const m = (await (await fetch(`${plain.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
      assert.equal(m.registration_endpoint, undefined);
    } finally {
      await plain.close();
    }
  });

  it('advertises registration_endpoint when enabled', async () => {
    const m = (await (await fetch(`${issuer.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.equal(m.registration_endpoint, `${issuer.url}/oauth2/register`);
  });

  it('registers a public MCP client: 201, a client_id, no secret, the configured resources', async () => {
    const res = await register(mcpClient);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.match(body.client_id as string, /^dcr_[A-Za-z0-9_-]{22}$/);
    assert.equal(body.client_secret, undefined);
    assert.equal(body.token_endpoint_auth_method, 'none');
    assert.deepEqual(body.grant_types, ['authorization_code', 'refresh_token']);
    assert.deepEqual(body.redirect_uris, mcpClient.redirect_uris);
    assert.equal(body.scope, 'mcp:tools mcp:read');
    const stored = await issuer.store.getClient(body.client_id as string);
    assert.equal(stored?.authMethod, 'none');
    assert.equal(stored?.name, 'Test MCP Client');
    assert.deepEqual(stored?.audiences, [MCP]);
    await issuer.service.audit.flush();
    const created = (await issuer.store.queryAudit({ client_id: body.client_id as string })).find((e) => e.kind === 'client.created');
    assert.equal(created?.detail?.registered, 'dynamic');
  });

  it('registers a confidential client: the secret returned once, stored only as a keyed hash', async () => {
    const res = await register({ redirect_uris: ['https://web.test/cb'], scope: 'mcp:read' });
    const body = (await res.json()) as Record<string, string>;
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.match(body.client_secret as string, /^tcs_/);
    assert.equal(body.token_endpoint_auth_method, 'client_secret_basic');
    // Registered with the whole maximum, whatever it asked for (it may step up later).
    assert.equal(body.scope, 'mcp:tools mcp:read');
    const stored = await issuer.store.getClient(body.client_id as string);
    assert.equal(stored?.authMethod, 'client_secret');
    assert.notEqual(stored?.secretHash, null);
    assert.equal(JSON.stringify(stored).includes(body.client_secret as string), false);
    await issuer.service.audit.flush();
    assert.equal(JSON.stringify(await issuer.store.queryAudit({ limit: 10_000 })).includes(body.client_secret as string), false);
  });

  it('auth method downgrade: a client registered for client_secret_basic is refused with client_secret_post (and the reverse) at the token, revocation and introspection endpoints, audited as client_auth_method_mismatch', async () => {
    const post = (path: string, form: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(`${issuer.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams(form).toString(),
      });
    const seen: string[] = [];
    for (const [registered, other] of [
      ['client_secret_basic', 'client_secret_post'],
      ['client_secret_post', 'client_secret_basic'],
    ] as const) {
      const res = await register({ redirect_uris: ['https://web.test/cb'], token_endpoint_auth_method: registered });
      const body = (await res.json()) as Record<string, string>;
      assert.equal(res.status, 201, JSON.stringify(body));
      assert.equal(body.token_endpoint_auth_method, registered);
      const id = body.client_id as string;
      const secret = body.client_secret as string;
      const as = (method: string, form: Record<string, string>): [Record<string, string>, Record<string, string>] =>
        method === 'client_secret_basic'
          ? [form, { authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}` }]
          : [{ ...form, client_id: id, client_secret: secret }, {}];
      const code = {
        grant_type: 'authorization_code',
        code: 'no-such-code',
        redirect_uri: 'https://web.test/cb',
        code_verifier: 'v'.repeat(43),
      };
      // The registered method authenticates: the code is what is refused, then the token is.
      await expectError(await post('/oauth2/token', ...as(registered, code)), 400, 'invalid_grant');
      assert.equal((await post('/oauth2/revoke', ...as(registered, { token: 'no-such-token' }))).status, 200, registered);
      assert.equal((await post('/oauth2/introspect', ...as(registered, { token: 'no-such-token' }))).status, 200, registered);
      // The other one, with the right secret, does not.
      for (const path of ['/oauth2/token', '/oauth2/revoke', '/oauth2/introspect']) {
        const refused = await post(path, ...as(other, path === '/oauth2/token' ? code : { token: 'no-such-token' }));
        await expectError(refused, 401, 'invalid_client');
        if (other === 'client_secret_basic') assert.match(refused.headers.get('www-authenticate') ?? '', /^Basic /, path);
      }
      await issuer.service.audit.flush();
      const mismatches = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.reason === 'client_auth_method_mismatch');
      assert.deepEqual(mismatches.map((e) => e.kind).sort(), [...seen, 'introspection.denied', 'revocation.denied', 'token.denied'].sort());
      seen.push('introspection.denied', 'revocation.denied', 'token.denied');
      assert.equal((await issuer.store.getClient(id))?.secretMethod, registered);
      const created = (await issuer.store.queryAudit({ client_id: id })).find((e) => e.kind === 'client.created');
      assert.equal(created?.detail?.secret_method, registered);
    }
  });

  it('accepts https and loopback http redirect URIs', async () => {
    for (const uri of ['https://app.test/cb', 'http://localhost:8080/cb', 'http://[::1]:9000/cb', 'http://127.0.0.1/cb']) {
      assert.equal((await register({ ...mcpClient, redirect_uris: [uri] })).status, 201, uri);
    }
  });

  it('DCR with a non-loopback http redirect: refused with invalid_redirect_uri', async () => {
    for (const uri of [
      'http://evil.test/cb',
      'http://10.0.0.1/cb',
      'javascript:alert(1)',
      'https://app.test/cb#frag',
      'https://u:p@app.test/cb',
    ]) {
      await expectError(await register({ ...mcpClient, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
    }
    await expectError(await register({ ...mcpClient, redirect_uris: [] }), 400, 'invalid_redirect_uri');
  });

  it('DCR with many redirect URIs (eleven, one more than the limit): refused with invalid_redirect_uri, nothing registered, and the description names the limit rather than telling the developer their https URIs are not https', async () => {
    const uris = (n: number) => Array.from({ length: n }, (_, i) => `https://many.test/cb${i}`);
    const before = (await issuer.store.listClients()).length;
    const res = await register({ ...mcpClient, redirect_uris: uris(11) });
    const body = (await res.json()) as { error: string; error_description: string };
    assert.equal(res.status, 400);
    assert.equal(body.error, 'invalid_redirect_uri');
    assert.match(body.error_description, /1-10/);
    assert.equal((await issuer.store.listClients()).length, before);
    assert.equal((await register({ ...mcpClient, redirect_uris: uris(10) })).status, 201);
  });

  it('DCR redirect URI that is not an RFC 3986 URI (control characters, whitespace, a second URI in disguise): refused', async () => {
    // WHATWG URL drops or escapes these while the raw string would be stored, matched and printed
    // by `tessera clients show` (a terminal escape, or what reads as two URIs, from a registrant).
    for (const uri of [
      'https://app.test/\u001b[2Kcb',
      'https://app.test/cb https://evil.test/cb',
      ' https://app.test/cb',
      'https://app.test/c\nb',
      'https://app.test/cb\t',
      'https://app.test/<cb>',
      'https://app.test/cb\u00a0',
    ]) {
      await expectError(await register({ ...mcpClient, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
    }
  });

  it('DCR redirect URI whose host is not a DNS name or IP literal (commas and semicolons would land in the consent page CSP): refused', async () => {
    for (const uri of ['https://a,b.test/cb', 'https://a;b.test/cb', "https://a'b.test/cb", 'https://a*b.test/cb', 'https://a$b.test/cb']) {
      await expectError(await register({ ...mcpClient, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
    }
    // Internationalised names are registered as their A-label; IP literals are fine.
    for (const uri of ['https://xn--bcher-kva.test/cb', 'https://192.0.2.1/cb', 'https://[2001:db8::1]/cb']) {
      assert.equal((await register({ ...mcpClient, redirect_uris: [uri] })).status, 201, uri);
    }
  });

  it('DCR redirect URI whose host is not the one written (parser differential: https:///evil.test/cb has no host in RFC 3986, the browser goes to evil.test): refused', async () => {
    for (const uri of [
      'https:///evil.test/cb',
      'https:/evil.test/cb',
      'https:evil.test/cb',
      'https://evil%2etest/cb',
      'http://127.1:33418/cb',
      'http://2130706433/cb',
      'http://127.0.0.1.:33418/cb',
    ]) {
      await expectError(await register({ ...mcpClient, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
    }
    // The host as written, in any case, with or without a port, is fine.
    for (const uri of ['https://App.Test/cb', 'https://app.test:443/cb', 'http://[::1]:33418/cb', 'http://localhost:33418/cb']) {
      assert.equal((await register({ ...mcpClient, redirect_uris: [uri] })).status, 201, uri);
    }
  });

  it('DCR redirect URI with dot segments (path differential: https://shared.test/victim/%2e%2e/attacker/cb is shown, the browser goes to /attacker/cb): refused', async () => {
    for (const uri of [
      'https://shared.test/victim/../attacker/cb',
      'https://shared.test/victim/%2e%2e/attacker/cb',
      'https://shared.test/victim/%2E%2E/attacker/cb',
      'https://shared.test/victim/.%2e/attacker/cb',
      'https://shared.test/./cb',
      'https://shared.test/cb/..',
      'http://127.0.0.1:33418/app/../callback',
    ]) {
      await expectError(await register({ ...mcpClient, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
    }
    // Dots that are no path segment of their own, and no path at all, are fine.
    for (const uri of [
      'https://shared.test/v1.2/..cb',
      'https://shared.test/a%2eb/cb',
      'https://shared.test',
      'https://shared.test/cb?next=../x',
    ]) {
      assert.equal((await register({ ...mcpClient, redirect_uris: [uri] })).status, 201, uri);
    }
  });

  it("DCR redirect URI presetting the answer's parameters (?iss=https://evil.test&state=…: every answer would carry two of each): refused", async () => {
    for (const uri of [
      'https://app.test/cb?iss=https://evil.test',
      'https://app.test/cb?state=forged',
      'https://app.test/cb?tenant=a&code=x',
      'http://127.0.0.1:33418/callback?error=access_denied',
      'https://app.test/cb?error_description=x',
      'https://app.test/cb?error_uri=https://evil.test',
    ]) {
      await expectError(await register({ ...mcpClient, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
    }
    assert.equal((await register({ ...mcpClient, redirect_uris: ['https://app.test/cb?tenant=a&codes=1'] })).status, 201);
  });

  it('a redirect URI stored before the dot-segment rule (https://legacy.test/app/../cb) receives no code: refused as a page at authorize', async () => {
    const res = await register({ ...mcpClient, redirect_uris: ['https://legacy.test/cb'] });
    const clientId = ((await res.json()) as { client_id: string }).client_id;
    const legacy = 'https://legacy.test/app/%2e%2e/cb';
    const stored = (await issuer.store.getClient(clientId)) as NonNullable<Awaited<ReturnType<typeof issuer.store.getClient>>>;
    await issuer.store.deleteClient(clientId);
    await issuer.store.createClient({ ...stored, redirectUris: [legacy] });
    issuer.service.clients.invalidate();
    const q = new URLSearchParams({
      client_id: clientId,
      redirect_uri: legacy,
      response_type: 'code',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
      state: 's',
    });
    const page = await fetch(`${issuer.url}/oauth2/authorize?${q}`, { redirect: 'manual' });
    assert.equal(page.status, 400);
    assert.equal(page.headers.get('location'), null);
  });

  it('a redirect URI stored before the host-spelling rule (https:///evil.test/cb) receives no code: refused as a page at authorize', async () => {
    const res = await register({ ...mcpClient, redirect_uris: ['https://legacy.test/cb'] });
    const clientId = ((await res.json()) as { client_id: string }).client_id;
    // As an older Tessera stored it, before registration refused it.
    const legacy = 'https:///evil.test/cb';
    const stored = (await issuer.store.getClient(clientId)) as NonNullable<Awaited<ReturnType<typeof issuer.store.getClient>>>;
    await issuer.store.deleteClient(clientId);
    await issuer.store.createClient({ ...stored, redirectUris: [legacy] });
    issuer.service.clients.invalidate();
    const q = new URLSearchParams({
      client_id: clientId,
      redirect_uri: legacy,
      response_type: 'code',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
      state: 's',
    });
    const page = await fetch(`${issuer.url}/oauth2/authorize?${q}`, { redirect: 'manual' });
    assert.equal(page.status, 400);
    assert.equal(page.headers.get('location'), null);
  });

  it('DCR without the initial access token, or with a wrong one: 401 invalid_token with a Bearer challenge', async () => {
    const none = await register(mcpClient, null);
    // RFC 6750 §3.1: a request with no credentials at all gets the challenge without an error code.
    assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="tessera"');
    await expectError(none, 401, 'invalid_token');
    const wrong = await register(mcpClient, `${IAT}x`);
    assert.equal(wrong.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"');
    await expectError(wrong, 401, 'invalid_token');
    await expectError(await register(mcpClient, IAT.slice(0, -1)), 401, 'invalid_token');
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'client.registration_denied');
    assert.ok(denied.some((e) => e.reason === 'registration_token_invalid'));
    assert.ok(denied.some((e) => e.reason === 'registration_token_missing'));
    assert.equal(JSON.stringify(denied).includes(IAT), false);
  });

  it('DCR asking for more than the configured scopes is narrowed to them (RFC 7591 §3.2.1), and the answer says so', async () => {
    // MCP clients ask for what the resource's metadata lists, which may be more than registration allows.
    const res = await register({ ...mcpClient, scope: 'mcp:tools admin mcp:read' });
    const body = (await res.json()) as { client_id: string; scope: string };
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(body.scope, 'mcp:tools mcp:read');
    assert.deepEqual((await issuer.store.getClient(body.client_id))?.scopes, ['mcp:tools', 'mcp:read']);
  });

  it('DCR asking for less than the configured scopes is registered with all of them, so an MCP client can step up to a tool scope later without registering again', async () => {
    // The MCP SDK registers with the scope of the first 401 challenge (MCP Scope Selection Strategy).
    for (const scope of ['mcp:read', 'admin']) {
      const res = await register({ ...mcpClient, scope });
      const body = (await res.json()) as { client_id: string; scope: string };
      assert.equal(res.status, 201, JSON.stringify(body));
      assert.equal(body.scope, 'mcp:tools mcp:read', scope);
      assert.deepEqual((await issuer.store.getClient(body.client_id))?.scopes, ['mcp:tools', 'mcp:read']);
    }
  });

  it('DCR asking for a wildcard or malformed scope, or other grants: invalid_client_metadata', async () => {
    await expectError(await register({ ...mcpClient, scope: '*' }), 400, 'invalid_client_metadata');
    await expectError(await register({ ...mcpClient, scope: 'mcp:tools bad"scope' }), 400, 'invalid_client_metadata');
    await expectError(await register({ ...mcpClient, grant_types: ['client_credentials'] }), 400, 'invalid_client_metadata');
    await expectError(
      await register({ ...mcpClient, grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:token-exchange'] }),
      400,
      'invalid_client_metadata',
    );
    await expectError(await register({ ...mcpClient, response_types: ['token'] }), 400, 'invalid_client_metadata');
    await expectError(await register({ ...mcpClient, token_endpoint_auth_method: 'private_key_jwt' }), 400, 'invalid_client_metadata');
    await expectError(await register({ ...mcpClient, client_name: 'x'.repeat(101) }), 400, 'invalid_client_metadata');
    await expectError(await register([mcpClient]), 400, 'invalid_client_metadata');
  });

  it('registers a DPoP-bound client (RFC 9449 §5.2 dpop_bound_access_tokens: true) and echoes it; absent, the client is not bound and the answer says false', async () => {
    const res = await register({ ...mcpClient, dpop_bound_access_tokens: true });
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(body.dpop_bound_access_tokens, true);
    assert.equal((await issuer.store.getClient(body.client_id as string))?.dpopBoundAccessTokens, true);
    await issuer.service.audit.flush();
    const created = (await issuer.store.queryAudit({ client_id: body.client_id as string })).find((e) => e.kind === 'client.created');
    assert.equal(created?.detail?.dpop_bound_access_tokens, true);
    for (const asked of [false, undefined]) {
      const plain = await register({ ...mcpClient, dpop_bound_access_tokens: asked });
      const b = (await plain.json()) as Record<string, unknown>;
      assert.equal(plain.status, 201, JSON.stringify(b));
      assert.equal(b.dpop_bound_access_tokens, false);
      assert.equal((await issuer.store.getClient(b.client_id as string))?.dpopBoundAccessTokens, false);
    }
  });

  it('DCR dpop_bound_access_tokens that is not a JSON boolean ("true", 1, null, [true], {}): invalid_client_metadata, nothing registered', async () => {
    const before = (await issuer.store.listClients()).length;
    for (const value of ['true', 'false', 1, 0, null, [true], {}]) {
      await expectError(await register({ ...mcpClient, dpop_bound_access_tokens: value }), 400, 'invalid_client_metadata');
    }
    assert.equal((await issuer.store.listClients()).length, before);
  });

  it('attack: DCR carrying both jwks and jwks_uri (RFC 7591 §2: they MUST NOT both be present): invalid_client_metadata, nothing registered, audited', async () => {
    const jwks = {
      keys: [
        { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' },
      ],
    };
    const clients = (await issuer.store.listClients()).length;
    for (const [i, method] of (['none', 'client_secret_basic'] as const).entries()) {
      const res = await fetch(`${issuer.url}/oauth2/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${IAT}`, 'x-request-id': `dcr-jwks-both-${i}` },
        body: JSON.stringify({ ...mcpClient, token_endpoint_auth_method: method, jwks, jwks_uri: 'https://mcp.test/jwks.json' }),
      });
      assert.equal(res.status, 400, method);
      assert.deepEqual(
        await res.json(),
        { error: 'invalid_client_metadata', error_description: 'The client metadata is invalid.' },
        method,
      );
      await issuer.service.audit.flush();
      const events = await issuer.store.queryAudit({ request_id: `dcr-jwks-both-${i}`, limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.reason]),
        [['client.registration_denied', 'registration_metadata_invalid']],
        method,
      );
    }
    assert.equal((await issuer.store.listClients()).length, clients, 'nothing registered');
  });

  it('DCR metadata that names a member twice (two redirect_uris, two token_endpoint_auth_method): invalid_client_metadata, nothing registered', async () => {
    // JSON.parse reads the last; a proxy or log that checked the body may have read the first.
    const rest = '"client_name":"Twice","grant_types":["authorization_code","refresh_token"],"response_types":["code"]';
    const bodies = [
      `{${rest},"token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1:1/ok"],"redirect_uris":["http://127.0.0.1:2/cb"]}`,
      `{${rest},"redirect_uris":["http://127.0.0.1:2/cb"],"token_endpoint_auth_method":"client_secret_basic","token_endpoint_auth_method":"none"}`,
    ];
    const clients = (await issuer.store.listClients()).length;
    for (const body of bodies) {
      const res = await fetch(`${issuer.url}/oauth2/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${IAT}` },
        body,
      });
      assert.equal(res.status, 400, body);
      assert.deepEqual(await res.json(), {
        error: 'invalid_client_metadata',
        error_description: 'The client metadata names a member more than once in one object.',
      });
    }
    assert.equal((await issuer.store.listClients()).length, clients, 'nothing registered');
    // Refused like any other registration: audited (and counted by the registration rate limit).
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ kinds: ['client.registration_denied'], limit: 10_000 })).filter(
      (e) => e.reason === 'registration_metadata_member_repeated',
    );
    assert.equal(denied.length, bodies.length);
  });

  it('DCR refused before its body is read (GET, a URL query, another Content-Type, a charset other than UTF-8, a body over the limit): audited as client.registration_denied with the code, as every other refused registration', async () => {
    const cases: [string, RequestInit, number, string][] = [
      ['get', { headers: { authorization: `Bearer ${IAT}` } }, 405, 'request_method_not_allowed'],
      [
        'query',
        { method: 'POST', headers: { authorization: `Bearer ${IAT}`, 'content-type': 'application/json' }, body: '{}' },
        400,
        'request_query_not_allowed',
      ],
      [
        'type',
        { method: 'POST', headers: { authorization: `Bearer ${IAT}`, 'content-type': 'text/plain' }, body: '{}' },
        400,
        'request_content_type_json',
      ],
      [
        'charset',
        { method: 'POST', headers: { authorization: `Bearer ${IAT}`, 'content-type': 'application/json; charset=iso-8859-1' }, body: '{}' },
        400,
        'request_not_utf8',
      ],
      [
        'large',
        {
          method: 'POST',
          headers: { authorization: `Bearer ${IAT}`, 'content-type': 'application/json' },
          body: JSON.stringify({ client_name: 'x'.repeat(70_000) }),
        },
        413,
        'request_body_too_large',
      ],
    ];
    for (const [name, init, status, reason] of cases) {
      const requestId = `dcr-unread-${name}`;
      // The query case names metadata in the URL, where no endpoint reads parameters.
      const res = await fetch(`${issuer.url}/oauth2/register${name === 'query' ? '?client_name=from-the-url' : ''}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), 'x-request-id': requestId },
      });
      const body = (await res.json()) as { error: string };
      assert.equal(res.status, status, `${name}: ${JSON.stringify(body)}`);
      assert.equal(res.headers.get('cache-control'), 'no-store', name);
      if (status === 405) assert.equal(res.headers.get('allow'), 'POST', name);
      await issuer.service.audit.flush();
      const events = await issuer.store.queryAudit({ request_id: requestId, limit: 10 });
      assert.deepEqual(
        events.map((e) => [e.kind, e.reason]),
        [['client.registration_denied', reason]],
        name,
      );
    }
  });

  it('DCR metadata nested 30,000 arrays deep: invalid_client_metadata as invalid metadata, not as a repeated member; nothing registered', async () => {
    const clients = (await issuer.store.listClients()).length;
    const res = await fetch(`${issuer.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${IAT}` },
      body: `{"client_name":"Deep","redirect_uris":["http://127.0.0.1:2/cb"],"x":${'['.repeat(30_000)}${']'.repeat(30_000)}}`,
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { error: 'invalid_client_metadata', error_description: 'The client metadata is invalid.' });
    assert.equal((await issuer.store.listClients()).length, clients, 'nothing registered');
  });

  describe('errors of an authorization request before the person sees anything', () => {
    const authorize = (clientId: string, redirectUri: string) => {
      const q = new URLSearchParams({
        client_id: clientId,
        redirect_uri: redirectUri,
        response_type: 'token',
        state: 's',
      });
      return fetch(`${issuer.url}/oauth2/authorize?${q}`, { redirect: 'manual' });
    };
    const registered = async (redirectUri: string) => {
      const res = await register({ ...mcpClient, redirect_uris: [redirectUri] });
      assert.equal(res.status, 201);
      return ((await res.json()) as { client_id: string }).client_id;
    };

    it('open redirector through a self-registered client: its https redirect URI gets the error as a page, never a redirect', async () => {
      const phish = 'https://phish.test/cb';
      const clientId = await registered(phish);
      const res = await authorize(clientId, phish);
      const html = await res.text();
      assert.equal(res.status, 400, html);
      assert.equal(res.headers.get('location'), null);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
      assert.equal(html.includes('phish.test'), false, 'no link to follow either');
      // The client and its redirect URI were verified before the refusal: the trail names it.
      await issuer.service.audit.flush();
      const denied = (await issuer.store.queryAudit({ client_id: clientId })).filter((e) => e.kind === 'authorization.denied');
      assert.deepEqual(
        denied.map((e) => e.reason),
        ['authorize_response_type_unsupported'],
      );
    });

    it("a self-registered client's loopback redirect URI still gets its errors back (the person's own machine)", async () => {
      const loopback = 'http://127.0.0.1:33418/callback';
      const res = await authorize(await registered(loopback), loopback);
      assert.equal(res.status, 303);
      const to = new URL(res.headers.get('location') as string);
      assert.equal(`${to.origin}${to.pathname}`, loopback);
      assert.equal(to.searchParams.get('error'), 'unsupported_response_type');
      assert.equal(to.searchParams.get('state'), 's');
    });

    it("an operator-registered client's https redirect URI gets its errors back", async () => {
      await issuer.addClient({
        id: 'web-app',
        scopes: ['mcp:read'],
        audiences: [MCP],
        grantTypes: ['authorization_code'],
        redirectUris: ['https://app.test/cb'],
        public: true,
      });
      const res = await authorize('web-app', 'https://app.test/cb');
      assert.equal(res.status, 303);
      assert.equal(new URL(res.headers.get('location') as string).searchParams.get('error'), 'unsupported_response_type');
    });

    it('a missing response_type is invalid_request, not unsupported_response_type (RFC 6749 §4.1.2.1)', async () => {
      const loopback = 'http://127.0.0.1:33419/callback';
      const clientId = await registered(loopback);
      const q = new URLSearchParams({ client_id: clientId, redirect_uri: loopback, state: 's' });
      const res = await fetch(`${issuer.url}/oauth2/authorize?${q}`, { redirect: 'manual' });
      assert.equal(res.status, 303);
      const to = new URL(res.headers.get('location') as string);
      assert.equal(to.searchParams.get('error'), 'invalid_request');
      assert.equal(to.searchParams.get('state'), 's');
      await issuer.service.audit.flush();
      const denied = (await issuer.store.queryAudit({ client_id: clientId })).filter((e) => e.kind === 'authorization.denied');
      assert.deepEqual(
        denied.map((e) => e.reason),
        ['request_parameter_missing'],
      );
    });

    it('an operator cannot give a client a dynamically registered id (the dcr_ prefix is reserved)', async () => {
      await assert.rejects(issuer.addClient({ id: 'dcr_mine', scopes: ['mcp:read'] }), /reserved for dynamically registered clients/);
    });
  });

  it('DCR body sent as a form: 400 naming application/json, the type this endpoint reads (not x-www-form-urlencoded)', async () => {
    const res = await fetch(`${issuer.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${IAT}` },
      body: 'client_name=x',
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'The request body must be application/json.' });
  });

  it('DCR client_name with bidirectional overrides (U+202E reorders what the consent page shows after it): refused', async () => {
    for (const name of ['Trusted App\u202Eevil', 'App\u2066x\u2069', 'App\u200F']) {
      await expectError(await register({ ...mcpClient, client_name: name }), 400, 'invalid_client_metadata');
    }
    await assert.rejects(
      issuer.addClient({ id: 'bidi', scopes: ['mcp:read'], name: 'Trusted\u202Eppa' }),
      /bidirectional formatting characters/,
    );
    assert.equal((await register({ ...mcpClient, client_name: 'Agent \u{1F469}\u200d\u{1F4BB}' })).status, 201);
  });

  it('DCR client_name the consent page would show as nothing (zero-width space, Hangul filler, soft hyphen) or split over lines: refused', async () => {
    for (const name of ['\u200b', '\u3164', '\u115f\u1160', '\u00ad', ' \ufe0f ', 'App\u2028Evil', 'App\u2029Evil']) {
      await expectError(await register({ ...mcpClient, client_name: name }), 400, 'invalid_client_metadata');
    }
    await assert.rejects(issuer.addClient({ id: 'blank-name', scopes: ['mcp:read'], name: '\u3164' }), /some of them visible/);
    assert.equal((await register({ ...mcpClient, client_name: 'Ünïcödé App' })).status, 201);
  });

  it('DCR client_name of only a braille blank (U+2800), a null notehead (U+1D159) or combining marks with no base (the consent page would show a blank name): refused', async () => {
    for (const name of ['\u2800', '\u2800\u2800 \u2800', '\u{1D159}', '\u0301', '\u0301\u0302\u0303', ' \u0301 ', '\u20dd', '\u0488']) {
      await expectError(await register({ ...mcpClient, client_name: name }), 400, 'invalid_client_metadata');
      await assert.rejects(issuer.addClient({ id: 'blank-name', scopes: ['mcp:read'], name }), /some of them visible/);
    }
    // Other blank-looking characters (already refused, kept so): ideographic space, Hangul fillers,
    // en quad to hair space, medium mathematical space, no-break space, Mongolian vowel separator, tags.
    for (const name of ['\u3000', '\u115f', '\u1160', '\uffa0', '\u2000\u2005\u200a', '\u205f', '\u00a0', '\u180e', '\u{E0041}\u{E007F}']) {
      await expectError(await register({ ...mcpClient, client_name: name }), 400, 'invalid_client_metadata');
    }
    for (const name of [
      'Caf\u0065\u0301',
      'e\u0301',
      'Agent 👩‍💻',
      '🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}',
      '\u2800 App',
    ]) {
      assert.equal((await register({ ...mcpClient, client_name: name })).status, 201, name);
    }
  });

  it('DCR client_name with a lone surrogate (stored as U+FFFD: the name shown would not be the one checked): refused', async () => {
    for (const name of ['App\ud800', '\udc00App', 'A\ud800\ud800B']) {
      await expectError(await register({ ...mcpClient, client_name: name }), 400, 'invalid_client_metadata');
      await assert.rejects(issuer.addClient({ id: 'surrogate-name', scopes: ['mcp:read'], name }), /unpaired surrogate/);
    }
    assert.equal((await register({ ...mcpClient, client_name: 'Agent \u{1F916}' })).status, 201);
  });

  it('XSS through a self-registered client_name (<img onerror>, a quote that would end the attribute): registered as text, escaped on the consent page, never markup', async () => {
    for (const name of ['<img src=x onerror=alert(1)>', '"><svg onload=alert(1)>', "x' autofocus onfocus='alert(1)"]) {
      const res = await register({ ...mcpClient, client_name: name });
      const body = (await res.json()) as { client_id: string; client_name: string };
      assert.equal(res.status, 201, JSON.stringify(body));
      const { html } = await openConsent(
        authorizationRequest(`${issuer.url}/oauth2/authorize`, {
          client_id: body.client_id,
          redirect_uri: mcpClient.redirect_uris[0],
          code_challenge: pkcePair().challenge,
          scope: 'mcp:read',
          resource: MCP,
        }),
      );
      assert.doesNotMatch(html, /<img|<svg|onerror=|onload=|autofocus onfocus='/, name);
      const escaped = name.replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);
      assert.ok(html.includes(`<strong>${escaped}</strong>`), name);
    }
  });

  it('no registration management (RFC 7592): the answer carries no registration_access_token or registration_client_uri, a standing credential nothing would check', async () => {
    for (const method of ['none', 'client_secret_basic']) {
      const body = (await (await register({ ...mcpClient, token_endpoint_auth_method: method })).json()) as Record<string, unknown>;
      assert.equal(typeof body.client_id, 'string', method);
      assert.equal('registration_access_token' in body, false, method);
      assert.equal('registration_client_uri' in body, false, method);
    }
  });

  it('open registration needs no token', async () => {
    const open = await startIssuer({ config: registrationConfig({ initial_access_token: undefined, open: true }) as never });
    try {
      assert.equal((await register(mcpClient, null, open.url)).status, 201);
    } finally {
      await open.close();
    }
  });

  it('client flooding: registrations from one address past registration.rate_limit get 429 with Retry-After, and are audited', async () => {
    const open = await startIssuer({
      config: registrationConfig({ initial_access_token: undefined, open: true, rate_limit: { rate: 0.01, burst: 2 } }) as never,
    });
    try {
      assert.equal((await register(mcpClient, null, open.url)).status, 201);
      assert.equal((await register(mcpClient, null, open.url)).status, 201);
      const res = await register(mcpClient, null, open.url);
      await expectError(res, 429, 'temporarily_unavailable');
      assert.ok(Number(res.headers.get('retry-after')) >= 1);
      await open.service.audit.flush();
      const events = await open.store.queryAudit({ limit: 100 });
      assert.equal(events.filter((e) => e.kind === 'client.created').length, 2, 'no client was created for the refused one');
      assert.ok(events.some((e) => e.kind === 'client.registration_denied' && e.reason === 'registration_rate_limited'));
    } finally {
      await open.close();
    }
  });

  it('client flooding from many addresses: registration.max_clients caps the dynamically registered clients (503, audited), operator clients not counted', async () => {
    const open = await startIssuer({
      config: registrationConfig({ initial_access_token: undefined, open: true, max_clients: 2 }) as never,
    });
    try {
      // Clients the operator registers are not dynamic ones: they neither count nor are refused.
      await open.service.registerClient({ id: 'operator-app', scopes: ['mcp:read'], audiences: [MCP] });
      const first = (await (await register(mcpClient, null, open.url)).json()) as { client_id: string };
      assert.equal((await register(mcpClient, null, open.url)).status, 201);
      const res = await register(mcpClient, null, open.url);
      await expectError(res, 503, 'temporarily_unavailable');
      assert.ok(Number(res.headers.get('retry-after')) >= 1);
      await open.service.audit.flush();
      const events = await open.store.queryAudit({ limit: 100 });
      assert.equal(events.filter((e) => e.kind === 'client.created' && e.detail?.registered === 'dynamic').length, 2);
      assert.ok(events.some((e) => e.kind === 'client.registration_denied' && e.reason === 'registration_capacity_reached'));
      assert.equal(
        (await open.store.listClients()).filter((c) => c.id.startsWith('dcr_')).length,
        2,
        'nothing written for the refused one',
      );
      // Removing a registered client frees its place.
      assert.equal(await open.store.deleteClient(first.client_id), true);
      assert.equal((await register(mcpClient, null, open.url)).status, 201);
    } finally {
      await open.close();
    }
  });

  it('client flooding from one IPv6 network: a new source address of the same /64 for each registration is limited as one address', async () => {
    // A host with IPv6 routinely holds a whole /64 and can send from any address of it; the
    // listener on loopback has one, so the connecting addresses are given as the handler gives them.
    const open = await startIssuer({
      config: registrationConfig({ initial_access_token: undefined, open: true, rate_limit: { rate: 0.01, burst: 2 } }) as never,
    });
    const from = async (remoteAddr: string): Promise<string> => {
      try {
        await open.service.registerDynamicClient(mcpClient, undefined, { remoteAddr });
        return 'registered';
      } catch (e) {
        return (e as { code: string }).code;
      }
    };
    try {
      assert.equal(await from('2001:db8:1:2::1'), 'registered');
      assert.equal(await from('2001:db8:1:2:0:0:0:2'), 'registered');
      assert.equal(await from('2001:db8:1:2:ffff:ffff:ffff:ffff'), 'registration_rate_limited');
      assert.equal(await from('2001:0db8:0001:0002::abcd'), 'registration_rate_limited', 'another spelling of the same /64');
      assert.equal(await from('2001:db8:1:3::1'), 'registered', 'another /64 has its own limit');
      // An IPv4 client of a dual-stack listener (::ffff:192.0.2.7) is the same as on an IPv4 one.
      assert.equal(await from('192.0.2.7'), 'registered');
      assert.equal(await from('::ffff:192.0.2.7'), 'registered');
      assert.equal(await from('192.0.2.7'), 'registration_rate_limited');
      assert.equal(await from('192.0.2.8'), 'registered', 'IPv4 addresses count one by one');
    } finally {
      await open.close();
    }
  });
});

describe('attack: registering for the admin scope through a wildcard maximum', () => {
  it('a registration maximum of `*` does not reach the admin scope: asked for by name, the client is registered with `*`, which never covers it', async () => {
    const wide = await startIssuer({ config: registrationConfig({ scopes: ['*'] }) as never });
    try {
      for (const scope of ['mcp:tools tessera:admin', 'tessera:admin']) {
        const res = await register({ ...mcpClient, scope }, IAT, wide.url);
        const body = (await res.json()) as { client_id: string; scope: string };
        assert.equal(res.status, 201);
        assert.equal(body.scope, '*');
        const compiled = await wide.service.clients.get(body.client_id);
        assert.equal(compiled?.scopes.has('tessera:admin'), false, scope);
        assert.equal(compiled?.scopes.has('mcp:tools'), true);
      }
    } finally {
      await wide.close();
    }
  });
});

describe('a client hanging up while it sends the body, at /oauth2/register and /oauth2/authorize', () => {
  it('attack: half a body, then the connection closed: one client.registration_denied (authorization.denied) with reason client_closed, not a request with no trail', async () => {
    const { port } = new URL(issuer.url);
    const hangUp = (path: string, headers: string, requestId: string) =>
      new Promise<void>((resolve, reject) => {
        const s = connect(Number(port), '127.0.0.1', () => {
          s.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}Content-Length: 100\r\nX-Request-Id: ${requestId}\r\n\r\n{"clie`);
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 100);
        });
        s.on('error', reject);
      });
    await hangUp('/oauth2/register', `Authorization: Bearer ${IAT}\r\nContent-Type: application/json\r\n`, 'hang-up-register');
    await hangUp('/oauth2/authorize', 'Content-Type: application/x-www-form-urlencoded\r\n', 'hang-up-authorize');
    await new Promise((resolve) => setTimeout(resolve, 200));
    await issuer.service.audit.flush();
    for (const [id, kind] of [
      ['hang-up-register', 'client.registration_denied'],
      ['hang-up-authorize', 'authorization.denied'],
    ] as const) {
      const trail = await issuer.store.queryAudit({ request_id: id, limit: 10 });
      assert.deepEqual(
        trail.map((e) => [e.kind, e.decision, e.reason]),
        [[kind, 'deny', 'client_closed']],
        id,
      );
    }
  });
});
