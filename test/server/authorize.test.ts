/**
 * `/oauth2/authorize` and the consent page over real HTTP, the person vouched for by the trusted
 * SSO-proxy headers: approval and denial redirects with state and iss (RFC 9207), errors shown
 * and never redirected before the redirect URI is verified, the anti-CSRF token bound to the
 * request (its DPoP key, `dpop_jkt`, included) and the person, codes bound to that key (RFC 9449
 * §10), escaping, framing and CSP headers, and the header login refused from an untrusted peer or
 * without the shared secret.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, type JWK, SignJWT } from 'jose';
import {
  answerConsent,
  approve,
  authorizationConfig,
  authorizationRequest,
  openConsent,
  PROXY_SECRET,
  personHeaders,
} from '../helpers/authorize.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { rawHttp } from '../helpers/net.ts';
import { pkcePair } from '../helpers/pkce.ts';

const REDIRECT = 'http://127.0.0.1:7777/callback';
const API = 'https://api.test';
const HOSTILE = `<script>alert(1)</script>"' onload=x`;

let issuer: RunningIssuer;
let endpoint: string;

/** The client's DPoP key (RFC 9449 §10 binds the code to its thumbprint), and an attacker's. */
const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwkOf = (k: { publicKey: KeyObject }) => k.publicKey.export({ format: 'jwk' }) as JWK;
const HOLDER_JKT = await calculateJwkThumbprint(jwkOf(holder));
const OTHER_JKT = await calculateJwkThumbprint(jwkOf(other));

/** A token-endpoint DPoP proof signed by `key`. */
function proof(key: { privateKey: KeyObject; publicKey: KeyObject }): Promise<string> {
  return new SignJWT({ htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: jwkOf(key) } as never)
    .sign(key.privateKey);
}

before(async () => {
  issuer = await startIssuer({ config: { token_service: { authorization: authorizationConfig() } } as never });
  endpoint = `${issuer.url}/oauth2/authorize`;
  await issuer.service.registerClient({
    id: 'mcp-app',
    public: true,
    name: 'MCP App',
    scopes: ['api:read', 'api:write'],
    audiences: [API],
    redirectUris: [REDIRECT],
  });
  await issuer.service.registerClient({
    id: 'hostile',
    public: true,
    name: HOSTILE,
    scopes: ['api:read'],
    audiences: [API],
    redirectUris: [REDIRECT],
  });
});
after(() => issuer?.close());

function authorizeUrl(overrides: Record<string, string | undefined> = {}, challenge = pkcePair().challenge): string {
  return authorizationRequest(endpoint, { redirect_uri: REDIRECT, code_challenge: challenge, resource: API, ...overrides });
}

async function audit(kind: string): Promise<string[]> {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === kind).map((e) => e.reason);
}

async function expectPage(res: Response, status: number): Promise<string> {
  const html = await res.text();
  assert.equal(res.status, status, html);
  assert.equal(res.headers.get('location'), null, 'never redirected');
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
  return html;
}

/** An error sent back to the client's redirect URI (no page, no code), with `state` and `iss` (RFC 9207): its `error`. */
async function errorToClient(res: Response, redirectUri = REDIRECT, iss = issuer.url): Promise<string | null> {
  assert.equal(res.status, 303, await res.text());
  assert.equal(res.headers.get('content-type'), null, 'no page');
  const to = new URL(res.headers.get('location') as string);
  assert.equal(`${to.origin}${to.pathname}`, redirectUri);
  assert.equal(to.searchParams.get('code'), null, 'no code');
  assert.equal(to.searchParams.get('state'), 'xyz-state');
  assert.equal(to.searchParams.get('iss'), iss);
  return to.searchParams.get('error');
}

describe('metadata', () => {
  it('advertises the authorization endpoint, code + S256 only, iss in responses and public clients', async () => {
    const m = (await (await fetch(`${issuer.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.equal(m.authorization_endpoint, endpoint);
    assert.deepEqual(m.response_types_supported, ['code']);
    assert.deepEqual(m.code_challenge_methods_supported, ['S256']);
    assert.equal(m.authorization_response_iss_parameter_supported, true);
    assert.ok((m.grant_types_supported as string[]).includes('authorization_code'));
    assert.ok((m.token_endpoint_auth_methods_supported as string[]).includes('none'));
    assert.ok(!(m.introspection_endpoint_auth_methods_supported as string[]).includes('none'));
    assert.equal(m.registration_endpoint, undefined);
  });
});

describe('405 at the authorization endpoint', () => {
  it('a method other than GET and POST: 405 with Allow and Cache-Control: no-store, as every other answer of the endpoint', async () => {
    for (const method of ['PUT', 'DELETE', 'PATCH']) {
      const res = await fetch(endpoint, { method, headers: personHeaders() });
      await res.body?.cancel();
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.get('allow'), 'GET, POST', method);
      assert.equal(res.headers.get('cache-control'), 'no-store', method);
      assert.equal(res.headers.get('pragma'), 'no-cache', method);
    }
  });
});

describe('consent', () => {
  it('shows who asks, for what and where it goes, in a page that cannot be framed or run script', async () => {
    const { res, html } = await openConsent(authorizeUrl({ scope: 'api:read api:write' }));
    assert.match(html, /MCP App/);
    assert.match(html, /127\.0\.0\.1:7777/);
    assert.match(html, /api:read/);
    assert.match(html, /api:write/);
    assert.match(html, /https:\/\/api\.test/);
    assert.match(html, /alice@example\.com/);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /form-action http:\/\/127\.0\.0\.1:\d+ http:\/\/127\.0\.0\.1:7777/);
    assert.doesNotMatch(csp, /script-src|unsafe-inline/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    // Referer to this server alone, so the form's post carries its real Origin (see CSRF below).
    assert.equal(res.headers.get('referrer-policy'), 'same-origin');
  });

  it('approve: redirects with code, state and iss; the code redeems for a token of the person', async () => {
    const { verifier, challenge } = pkcePair();
    const back = await approve(authorizeUrl({}, challenge));
    assert.equal(`${back.origin}${back.pathname}`, REDIRECT);
    assert.equal(back.searchParams.get('state'), 'xyz-state');
    assert.equal(back.searchParams.get('iss'), issuer.url);
    const code = back.searchParams.get('code') as string;
    const res = await issuer.post('/oauth2/token', {
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: REDIRECT,
      client_id: 'mcp-app',
    });
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(decodeJwt(body.access_token).sub, 'alice');
    assert.ok((await audit('authorization.approved')).includes('ok'));
  });

  it('state with form-reserved characters (space, +, &, =, %, /, #, non-ASCII): echoed exactly, one state, no parameter split off it', async () => {
    const state = 'a b+c&code=forged&iss=https://evil.test%2F#é';
    const back = await approve(authorizeUrl({ state }));
    assert.deepEqual(back.searchParams.getAll('state'), [state]);
    assert.equal(back.searchParams.getAll('code').length, 1);
    assert.notEqual(back.searchParams.get('code'), 'forged');
    assert.deepEqual(back.searchParams.getAll('iss'), [issuer.url]);
    assert.equal(back.hash, '');
  });

  it('parameter splitting through a registered query (?a=1;state=forged&code=…: a client splitting on ";" would read the registration\'s state): the query goes back form-encoded, ";" escaped', async () => {
    // RFC 6749 §3.1.2 keeps the registered query; it is re-serialised as the form it is, so a ";"
    // (a separator to some parsers) never reaches the client as one.
    const uri = 'https://semi.test/cb?a=1;state=forged;code=forged';
    await issuer.service.registerClient({ id: 'semi-app', public: true, scopes: ['api:read'], audiences: [API], redirectUris: [uri] });
    const back = await approve(authorizeUrl({ client_id: 'semi-app', redirect_uri: uri }));
    assert.doesNotMatch(back.search, /;/);
    assert.equal(back.searchParams.get('a'), '1;state=forged;code=forged');
    assert.deepEqual(back.searchParams.getAll('state'), ['xyz-state']);
    assert.match(back.href, /^https:\/\/semi\.test\/cb\?a=1%3Bstate%3Dforged%3Bcode%3Dforged&code=tac_[\w-]+&state=xyz-state&iss=/);
  });

  it('deny: redirects with error=access_denied, state and iss, and no code', async () => {
    const url = authorizeUrl();
    const { fields } = await openConsent(url);
    const res = await answerConsent(endpoint, { ...fields, decision: 'deny' });
    assert.equal(res.status, 303);
    const back = new URL(res.headers.get('location') as string);
    assert.equal(back.searchParams.get('error'), 'access_denied');
    assert.equal(back.searchParams.get('state'), 'xyz-state');
    assert.equal(back.searchParams.get('iss'), issuer.url);
    assert.equal(back.searchParams.get('code'), null);
    assert.ok((await audit('authorization.denied')).includes('authorize_access_denied'));
  });

  it('consent page escaping of a hostile client name', async () => {
    const { html } = await openConsent(authorizeUrl({ client_id: 'hostile' }));
    assert.equal(html.includes('<script>'), false);
    assert.equal(html.includes(HOSTILE), false);
    assert.match(html, /&#60;script&#62;alert\(1\)&#60;\/script&#62;&#34;&#39; onload&#61;x/);
  });

  it('a client registered with --allow-retarget (and token exchange): the page says it may exchange what is approved for tokens to its other resources, and names them, escaped', async () => {
    const other = 'https://other.test/<b>"x"';
    await issuer.service.registerClient({
      id: 'broker',
      name: 'Broker',
      scopes: ['api:read'],
      audiences: [API, other, 'https://third.test'],
      grantTypes: ['authorization_code', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      redirectUris: [REDIRECT],
      retargetAudiences: true,
    });
    const { html } = await openConsent(authorizeUrl({ client_id: 'broker' }));
    assert.match(html, /may also exchange what you approve for tokens to these other resources/);
    assert.ok(html.includes('<li><code>https://other.test/&#60;b&#62;&#34;x&#34;</code></li>'), html);
    assert.ok(html.includes('<li><code>https://third.test</code></li>'), html);
    assert.equal(html.includes('<b>'), false);
    // The resource asked for is listed once, among those the request names.
    assert.equal(html.split('<code>https://api.test</code>').length - 1, 1);
  });

  it('attack: a client given --allow-retarget after the consent page was shown without it: that page’s approval is refused (a page), no code', async () => {
    await issuer.service.registerClient({
      id: 'late-broker',
      scopes: ['api:read'],
      audiences: [API, 'https://other.test'],
      grantTypes: ['authorization_code', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      redirectUris: [REDIRECT],
    });
    const { html, fields } = await openConsent(authorizeUrl({ client_id: 'late-broker' }));
    assert.doesNotMatch(html, /re-target/);
    await issuer.service.updateClient('late-broker', { retargetAudiences: true }, 'cli');
    await expectPage(await answerConsent(endpoint, { ...fields, decision: 'approve' }), 400);
  });

  it('a client without --allow-retarget, or with it but without token exchange (it could never re-target): no such notice', async () => {
    await issuer.service.registerClient({
      id: 'retarget-public',
      public: true,
      scopes: ['api:read'],
      audiences: [API, 'https://other.test'],
      redirectUris: [REDIRECT],
      retargetAudiences: true,
    });
    for (const clientId of ['mcp-app', 'retarget-public']) {
      const { html } = await openConsent(authorizeUrl({ client_id: clientId }));
      assert.doesNotMatch(html, /may also exchange|other resources/, clientId);
    }
  });

  it('a client name stored before the visible-name rule (only U+2800 braille blanks) is not shown: the page names the client by its id', async () => {
    await issuer.service.registerClient({
      id: 'blank-legacy',
      public: true,
      name: 'Legacy',
      scopes: ['api:read'],
      audiences: [API],
      redirectUris: [REDIRECT],
    });
    // As an older Tessera stored it, before registration refused it.
    const stored = (await issuer.store.getClient('blank-legacy')) as NonNullable<Awaited<ReturnType<typeof issuer.store.getClient>>>;
    await issuer.store.deleteClient('blank-legacy');
    await issuer.store.createClient({ ...stored, name: '\u2800\u2800' });
    issuer.service.clients.invalidate();
    const { html } = await openConsent(authorizeUrl({ client_id: 'blank-legacy' }));
    assert.equal(html.includes('\u2800'), false);
    assert.match(html, /<strong>blank-legacy<\/strong> wants to act for you/);
  });
});

describe('consent page: who is asking and where the code goes (confused deputy: RFC 6749 §10.2, RFC 9700 §4.11.2, MCP security best practices)', () => {
  // A client that registered itself may take an operator client's display name ("MCP App"):
  // the page must show where the code will be sent, whole, and that nobody reviewed the client.
  const SELF_REDIRECT = "https://app.example/cb/%3Cscript%3E/done?x=1&y='q'&z=%3Cb%3E";
  const SELF_REDIRECT_ESCAPED = 'https://app.example/cb/%3Cscript%3E/done?x&#61;1&#38;y&#61;&#39;q&#39;&#38;z&#61;%3Cb%3E';
  let open: RunningIssuer;
  let selfRegistered: string;

  before(async () => {
    open = await startIssuer({
      config: {
        token_service: {
          authorization: authorizationConfig(),
          registration: { enabled: true, open: true, scopes: ['api:read'], audiences: [API] },
        },
      } as never,
    });
    const res = await fetch(`${open.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'MCP App',
        redirect_uris: [SELF_REDIRECT],
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
      }),
    });
    const body = (await res.json()) as { client_id: string };
    assert.equal(res.status, 201, JSON.stringify(body));
    selfRegistered = body.client_id;
    assert.match(selfRegistered, /^dcr_/);
    await open.service.registerClient({
      id: 'mcp-app',
      public: true,
      name: 'MCP App',
      scopes: ['api:read'],
      audiences: [API],
      redirectUris: [REDIRECT],
    });
  });
  after(() => open?.close());

  const openUrl = (clientId: string, redirectUri: string) =>
    authorizationRequest(`${open.url}/oauth2/authorize`, {
      client_id: clientId,
      redirect_uri: redirectUri,
      code_challenge: pkcePair().challenge,
      resource: API,
    });

  it('a self-registered (dcr_) client named like an operator client: the page shows the full redirect URI, path and query, escaped, and says the client registered itself', async () => {
    const { html } = await openConsent(openUrl(selfRegistered, SELF_REDIRECT));
    assert.ok(html.includes(`<code>${SELF_REDIRECT_ESCAPED}</code>`), html);
    assert.match(html, /registered itself/);
    assert.match(html, /not been reviewed by the operator/);
  });

  it("consent page escaping of a redirect URI holding & and ' (and %3C, never decoded): never raw in the page", async () => {
    const { html } = await openConsent(openUrl(selfRegistered, SELF_REDIRECT));
    assert.equal(html.includes(SELF_REDIRECT), false);
    assert.equal(html.includes("'q'"), false);
    assert.equal(html.includes('<script'), false);
    assert.equal(html.includes('<b>'), false);
  });

  it('attack: prompt=none for a self-registered client on its non-loopback redirect URI (anyone may have registered it, RFC 9700 §4.11.2): a person whose subject is a client id, or a load by a script, is still a page, never a redirect', async () => {
    const url = `${openUrl(selfRegistered, SELF_REDIRECT)}&prompt=none`;
    await expectPage(await fetch(url, { headers: personHeaders('mcp-app'), redirect: 'manual' }), 403);
    await expectPage(await fetch(url, { headers: { ...personHeaders(), 'sec-fetch-dest': 'iframe' }, redirect: 'manual' }), 400);
  });

  it('an operator client: the full redirect URI, and no self-registered notice', async () => {
    const { html } = await openConsent(openUrl('mcp-app', REDIRECT));
    assert.ok(html.includes('<code>http://127.0.0.1:7777/callback</code>'), html);
    assert.doesNotMatch(html, /registered itself|reviewed/);
  });
});

describe('prompt=none: never a page once the redirect URI is trusted (OIDC Core §3.1.2.1, §3.1.2.6)', () => {
  it('prompt=none and a person whose subject is a client id: access_denied back to the client with state and iss, not the page; audited login_subject_is_client', async () => {
    const before = (await audit('authorization.denied')).filter((r) => r === 'login_subject_is_client').length;
    const res = await fetch(authorizeUrl({ prompt: 'none' }), { headers: personHeaders('mcp-app'), redirect: 'manual' });
    assert.equal(await errorToClient(res), 'access_denied');
    assert.equal((await audit('authorization.denied')).filter((r) => r === 'login_subject_is_client').length, before + 1);
  });

  it('prompt=none loaded by a script, in a frame or an object (Sec-Fetch-Dest other than document): interaction_required back to the client, no code, not the page; audited authorize_not_navigation', async () => {
    const before = (await audit('authorization.denied')).filter((r) => r === 'authorize_not_navigation').length;
    for (const dest of ['empty', 'iframe', 'object']) {
      const res = await fetch(authorizeUrl({ prompt: 'none' }), {
        headers: { ...personHeaders(), 'sec-fetch-dest': dest, 'sec-fetch-site': 'cross-site' },
        redirect: 'manual',
      });
      assert.equal(await errorToClient(res), 'interaction_required', dest);
    }
    assert.equal((await audit('authorization.denied')).filter((r) => r === 'authorize_not_navigation').length, before + 3);
  });

  it('prompt=none in a posted consent form (no consent page is ever shown for it, so no form token matches): invalid_request back to the client, not the page, no code; audited authorize_consent_invalid', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const query = new URL(authorizeUrl({ prompt: 'none' })).search.slice(1);
    const before = (await audit('authorization.denied')).filter((r) => r === 'authorize_consent_invalid').length;
    const res = await answerConsent(endpoint, { request: query, csrf: fields.csrf, decision: 'approve' });
    assert.equal(await errorToClient(res), 'invalid_request');
    assert.equal((await audit('authorization.denied')).filter((r) => r === 'authorize_consent_invalid').length, before + 1);
  });

  it('attack: prompt=none with an unregistered redirect URI or an unknown client, for a person whose subject is a client id: still a page, never a redirect (RFC 6749 §4.1.2.1)', async () => {
    for (const overrides of [{ redirect_uri: 'https://evil.test/cb' }, { client_id: 'no-such-client' }]) {
      const res = await fetch(authorizeUrl({ prompt: 'none', ...overrides }), { headers: personHeaders('mcp-app'), redirect: 'manual' });
      await expectPage(res, 400);
    }
  });
});

describe('errors before the redirect URI is verified are shown, never redirected', () => {
  it('redirect_uri mismatch: a page, no redirect', async () => {
    await expectPage(
      await fetch(authorizeUrl({ redirect_uri: 'https://evil.test/cb' }), { headers: personHeaders(), redirect: 'manual' }),
      400,
    );
    assert.ok((await audit('authorization.denied')).includes('authorize_redirect_uri_invalid'));
  });

  it('redirect_uri variants of a registered one (case, percent-encoding, userinfo @, dot segments, port, fragment, prefix, javascript:, data:): a page, no redirect', async () => {
    await issuer.service.registerClient({
      id: 'web-variants',
      public: true,
      name: 'Web',
      scopes: ['api:read'],
      audiences: [API],
      redirectUris: ['https://app.test/cb', 'http://127.0.0.1:7777/callback'],
    });
    for (const uri of [
      'HTTPS://app.test/cb',
      'https://APP.test/cb',
      'https://app.test/CB',
      'https://app.test/c%62',
      'https://app.test/cb/',
      'https://app.test/cb?',
      'https://app.test/cb#x',
      'https://app.test:443/cb',
      'https://app.test:8443/cb',
      'https://app.test/cb/../cb',
      'https://app.test/cbx',
      'https://app.test/cb?next=https://evil.test',
      'https://app.test@evil.test/cb',
      'https://evil.test@app.test/cb',
      'https://app.test.evil.test/cb',
      'javascript:alert(1)//https://app.test/cb',
      'data:text/html,<script>alert(1)</script>',
      // Loopback: only an IP literal's port may differ (RFC 8252 §7.3), not its host, path or scheme.
      'http://localhost:7777/callback',
      'http://[::1]:7777/callback',
      'http://127.0.0.1:7777/callback/../callback',
      'https://127.0.0.1:7777/callback',
      'http://127.0.0.1:7777/Callback',
    ]) {
      const html = await expectPage(
        await fetch(authorizeUrl({ client_id: 'web-variants', redirect_uri: uri, scope: 'api:read' }), {
          headers: personHeaders(),
          redirect: 'manual',
        }),
        400,
      );
      assert.doesNotMatch(html, /evil\.test|<script>/, uri);
    }
  });

  it('port variation on a registered localhost redirect URI (RFC 8252 §7.3 leeway is for loopback IP literals, §8.3): a page, no redirect', async () => {
    await issuer.service.registerClient({
      id: 'localhost-app',
      public: true,
      scopes: ['api:read'],
      audiences: [API],
      redirectUris: ['http://localhost:8080/cb'],
    });
    for (const uri of ['http://localhost:9999/cb', 'http://localhost/cb', 'http://127.0.0.1:8080/cb']) {
      await expectPage(
        await fetch(authorizeUrl({ client_id: 'localhost-app', redirect_uri: uri }), { headers: personHeaders(), redirect: 'manual' }),
        400,
      );
    }
    // The registered one itself is answered.
    const back = await approve(authorizeUrl({ client_id: 'localhost-app', redirect_uri: 'http://localhost:8080/cb' }));
    assert.equal(`${back.origin}${back.pathname}`, 'http://localhost:8080/cb');
  });

  it('unknown client: a page, no redirect', async () => {
    await expectPage(await fetch(authorizeUrl({ client_id: 'nobody', redirect_uri: 'https://evil.test/cb' }), { redirect: 'manual' }), 400);
  });

  it('after the redirect URI is verified, errors go back to the client with state and iss', async () => {
    const res = await fetch(authorizeUrl({ code_challenge_method: 'plain' }), { headers: personHeaders(), redirect: 'manual' });
    assert.equal(res.status, 303);
    const back = new URL(res.headers.get('location') as string);
    assert.equal(back.searchParams.get('error'), 'invalid_request');
    assert.equal(back.searchParams.get('state'), 'xyz-state');
    assert.equal(back.searchParams.get('iss'), issuer.url);
    const target = await fetch(authorizeUrl({ resource: 'https://evil.test' }), { headers: personHeaders(), redirect: 'manual' });
    assert.equal(new URL(target.headers.get('location') as string).searchParams.get('error'), 'invalid_target');
  });

  it('response_mode downgrade (form_post, fragment asked for, code in the query): refused back to the client, no consent page', async () => {
    // A client that asks for form_post or fragment keeps the code out of URLs its server logs;
    // answering in the query instead would put it there without the client knowing.
    for (const mode of ['form_post', 'fragment', 'query.jwt']) {
      const res = await fetch(authorizeUrl({ response_mode: mode }), { headers: personHeaders(), redirect: 'manual' });
      assert.equal(res.status, 303, mode);
      const back = new URL(res.headers.get('location') as string);
      assert.equal(back.searchParams.get('error'), 'invalid_request', mode);
      assert.equal(back.searchParams.get('code'), null);
      assert.equal(back.searchParams.get('state'), 'xyz-state');
      assert.equal(back.searchParams.get('iss'), issuer.url);
    }
    assert.ok((await audit('authorization.denied')).includes('authorize_response_mode_unsupported'));
    // The one it supports, named explicitly, is fine.
    await openConsent(authorizeUrl({ response_mode: 'query' }));
  });

  it('request object or request_uri (JAR, PAR) silently ignored while the bare parameters rule: refused back to the client', async () => {
    for (const [name, error] of [
      ['request', 'request_not_supported'],
      ['request_uri', 'request_uri_not_supported'],
    ] as const) {
      const value = name === 'request' ? 'eyJhbGciOiJub25lIn0.eyJzY29wZSI6ImFwaTp3cml0ZSJ9.' : 'urn:ietf:params:oauth:request_uri:abc';
      const res = await fetch(authorizeUrl({ [name]: value }), { headers: personHeaders(), redirect: 'manual' });
      assert.equal(res.status, 303, name);
      const back = new URL(res.headers.get('location') as string);
      assert.equal(back.searchParams.get('error'), error);
      assert.equal(back.searchParams.get('iss'), issuer.url);
    }
  });

  it('malformed dpop_jkt (RFC 9449 §10: a base64url SHA-256 JWK thumbprint): refused back to the client with state and iss, no consent page', async () => {
    for (const dpop_jkt of [`${HOLDER_JKT}x`, HOLDER_JKT.slice(1), `${HOLDER_JKT.slice(0, 42)}=`, 'abc+/']) {
      const res = await fetch(authorizeUrl({ dpop_jkt }), { headers: personHeaders(), redirect: 'manual' });
      assert.equal(res.status, 303, await res.text());
      const back = new URL(res.headers.get('location') as string);
      assert.equal(back.searchParams.get('error'), 'invalid_request');
      assert.equal(back.searchParams.get('code'), null);
      assert.equal(back.searchParams.get('state'), 'xyz-state');
      assert.equal(back.searchParams.get('iss'), issuer.url);
    }
    assert.ok((await audit('authorization.denied')).includes('authorize_dpop_jkt_invalid'));
  });

  it('dpop_jkt repeated (which key binds?): refused back to the client', async () => {
    const url = new URL(authorizeUrl({ dpop_jkt: HOLDER_JKT }));
    url.searchParams.append('dpop_jkt', OTHER_JKT);
    const res = await fetch(url, { headers: personHeaders(), redirect: 'manual' });
    assert.equal(res.status, 303, await res.text());
    const back = new URL(res.headers.get('location') as string);
    assert.equal(back.searchParams.get('error'), 'invalid_request');
    assert.equal(back.searchParams.get('code'), null);
  });
});

describe('codes bound to a DPoP key (dpop_jkt, RFC 9449 §10)', () => {
  const redeem = (code: string, verifier: string, dpop?: string) =>
    issuer.post(
      '/oauth2/token',
      { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT, client_id: 'mcp-app' },
      dpop === undefined ? {} : { dpop },
    );

  it('the code approved on the consent page redeems only with a proof of the key the request named, for a token bound to it', async () => {
    const { verifier, challenge } = pkcePair();
    const back = await approve(authorizeUrl({ dpop_jkt: HOLDER_JKT }, challenge));
    assert.equal(back.searchParams.get('state'), 'xyz-state');
    const code = back.searchParams.get('code') as string;
    for (const res of [await redeem(code, verifier), await redeem(code, verifier, await proof(other))]) {
      const body = (await res.json()) as { error: string };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(body.error, 'invalid_grant');
    }
    assert.equal(
      (await audit('token.denied')).filter((r) => r === 'code_dpop_key_mismatch').length >= 2,
      true,
      'audited as code_dpop_key_mismatch',
    );
    const res = await redeem(code, verifier, await proof(holder));
    const body = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(body.access_token).cnf, { jkt: HOLDER_JKT });
    await issuer.service.audit.flush();
    const approved = (await issuer.store.queryAudit({ kinds: ['authorization.approved'], limit: 10_000 })).at(-1);
    assert.equal(approved?.detail?.dpop_jkt, HOLDER_JKT, 'the approval names the key its code is bound to');
  });

  for (const [what, tamper] of [
    ['swapped for the attacker’s key', (q: URLSearchParams) => q.set('dpop_jkt', OTHER_JKT)],
    ['removed', (q: URLSearchParams) => q.delete('dpop_jkt')],
  ] as const) {
    it(`dpop_jkt ${what} between the consent page and the approval: the answer is refused, no code`, async () => {
      const { fields } = await openConsent(authorizeUrl({ dpop_jkt: HOLDER_JKT }));
      const q = new URLSearchParams(fields.request);
      assert.equal(q.get('dpop_jkt'), HOLDER_JKT, 'the form carries the key the page was shown for');
      tamper(q);
      const before = (await audit('authorization.denied')).filter((r) => r === 'authorize_consent_invalid').length;
      const res = await answerConsent(endpoint, { request: q.toString(), csrf: fields.csrf, decision: 'approve' });
      if (res.status === 303)
        assert.fail(
          `answered with a redirect: ${new URL(res.headers.get('location') as string).searchParams.has('code') ? 'a code' : 'no code'}`,
        );
      await expectPage(res, 400);
      assert.equal((await audit('authorization.denied')).filter((r) => r === 'authorize_consent_invalid').length, before + 1);
    });
  }

  it('dpop_jkt added to a request whose page showed none: the answer is refused, no code', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const q = new URLSearchParams(fields.request);
    q.set('dpop_jkt', OTHER_JKT);
    await expectPage(await answerConsent(endpoint, { request: q.toString(), csrf: fields.csrf, decision: 'approve' }), 400);
  });
});

describe('CSRF', () => {
  it('CSRF token missing: refused with a page', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const res = await fetch(endpoint, {
      method: 'POST',
      headers: { ...personHeaders(), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ request: fields.request, decision: 'approve' }).toString(),
      redirect: 'manual',
    });
    await expectPage(res, 400);
  });

  it('CSRF token wrong: refused with a page', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const [exp, nonce, mac] = fields.csrf.split('.') as [string, string, string];
    const flipped = `${exp}.${nonce}.${mac.startsWith('A') ? 'B' : 'A'}${mac.slice(1)}`;
    await expectPage(await answerConsent(endpoint, { ...fields, csrf: flipped, decision: 'approve' }), 400);
    await expectPage(await answerConsent(endpoint, { ...fields, csrf: 'garbage', decision: 'approve' }), 400);
  });

  it('CSRF token from another request: refused with a page', async () => {
    const a = await openConsent(authorizeUrl({ scope: 'api:read' }));
    const b = await openConsent(authorizeUrl({ scope: 'api:read api:write' }));
    await expectPage(await answerConsent(endpoint, { request: b.fields.request, csrf: a.fields.csrf, decision: 'approve' }), 400);
  });

  it('CSRF token of another person: refused with a page', async () => {
    const { fields } = await openConsent(authorizeUrl(), personHeaders('mallory'));
    await expectPage(await answerConsent(endpoint, { ...fields, decision: 'approve' }, personHeaders('alice')), 400);
  });

  it('CSRF token read by a same-origin script or frame (the gateway serves upstream pages on this origin; Sec-Fetch-Dest other than document): no consent page, no token, audited', async () => {
    const url = authorizeUrl();
    for (const dest of ['empty', 'iframe', 'object']) {
      const res = await fetch(url, {
        headers: { ...personHeaders(), 'sec-fetch-dest': dest, 'sec-fetch-site': 'same-origin' },
        redirect: 'manual',
      });
      const html = await expectPage(res, 400);
      assert.doesNotMatch(html, /name="csrf"/, dest);
    }
    assert.ok((await audit('authorization.denied')).includes('authorize_not_navigation'));
    // A browser's own navigation to the page is served as before.
    const { fields } = await openConsent(url, { ...personHeaders(), 'sec-fetch-dest': 'document', 'sec-fetch-mode': 'navigate' });
    assert.equal((await answerConsent(endpoint, { ...fields, decision: 'approve' })).status, 303);
  });

  it('CSRF token used twice: the second answer is refused', async () => {
    const { fields } = await openConsent(authorizeUrl());
    assert.equal((await answerConsent(endpoint, { ...fields, decision: 'approve' })).status, 303);
    await expectPage(await answerConsent(endpoint, { ...fields, decision: 'approve' }), 400);
  });

  it('scope widening between the page and the answer (the client re-registered with more scopes): the answer is refused', async () => {
    const register = (scopes: string[]) =>
      issuer.service.registerClient({ id: 'widening', public: true, scopes, audiences: [API], redirectUris: [REDIRECT] });
    await register(['api:read']);
    // The request asks for more than the client may have: the page shows only api:read.
    const { html, fields } = await openConsent(authorizeUrl({ client_id: 'widening', scope: 'api:read api:write' }));
    assert.doesNotMatch(html, /api:write/);
    await issuer.service.removeClient('widening');
    await register(['api:read', 'api:write']);
    // Approving must not grant what the person was never shown.
    const res = await answerConsent(endpoint, { ...fields, decision: 'approve' });
    if (res.status === 303) {
      const code = new URL(res.headers.get('location') as string).searchParams.get('code');
      assert.fail(`approved with a code (${code === null ? 'none' : 'issued'}) for scopes the page did not show`);
    }
    await expectPage(res, 400);
  });

  it('cross-site post (foreign Origin): refused with a page', async () => {
    const { fields } = await openConsent(authorizeUrl());
    await expectPage(
      await answerConsent(endpoint, { ...fields, decision: 'approve' }, { ...personHeaders(), origin: 'https://evil.test' }),
      400,
    );
    assert.ok((await audit('authorization.denied')).includes('authorize_consent_invalid'));
  });

  it('cross-site post from an opaque origin (Origin: null, no Sec-Fetch-Site: a sandboxed frame or data: page in a browser without Fetch Metadata): refused, audited', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const before = (await audit('authorization.denied')).filter((r) => r === 'authorize_consent_invalid').length;
    await expectPage(await answerConsent(endpoint, { ...fields, decision: 'approve' }, { ...personHeaders(), origin: 'null' }), 400);
    const after = (await audit('authorization.denied')).filter((r) => r === 'authorize_consent_invalid').length;
    assert.equal(after, before + 1);
    // Fetch Metadata tells a sandboxed frame elsewhere from a same-origin post.
    await expectPage(
      await answerConsent(
        endpoint,
        { ...fields, decision: 'approve' },
        { ...personHeaders(), origin: 'null', 'sec-fetch-site': 'cross-site' },
      ),
      400,
    );
  });

  it('consent form labelled twice (a UTF-8 form, then one in ISO-8859-1, of which Node keeps the first): refused as request_content_type with a page, audited, no code', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const body = new URLSearchParams({ ...fields, decision: 'approve' }).toString();
    const person = Object.entries(personHeaders())
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    const answer = await rawHttp(
      issuer.url,
      `POST /oauth2/authorize HTTP/1.1\r\nHost: 127.0.0.1\r\n${person}` +
        'Content-Type: application/x-www-form-urlencoded\r\nContent-Type: application/x-www-form-urlencoded; charset=iso-8859-1\r\n' +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    assert.match(answer, /^HTTP\/1\.1 400 /, answer.split('\r\n')[0]);
    assert.doesNotMatch(answer, /\r\nlocation:/i, 'never redirected');
    assert.match(answer, /The request body must be application\/x-www-form-urlencoded\./);
    assert.equal((await audit('authorization.denied')).at(-1), 'request_content_type');
    // The CSRF token was not spent: the same answer labelled once still goes through.
    assert.equal((await answerConsent(endpoint, { ...fields, decision: 'approve' })).status, 303);
  });

  it("this server's own pages post with their real Origin (Referrer-Policy: same-origin), which is accepted, as is Origin: null with Sec-Fetch-Site: same-origin", async () => {
    const { res, html, fields } = await openConsent(authorizeUrl());
    // Under no-referrer a browser sends Origin: null on the page's own post, which could then not
    // be told from an opaque origin elsewhere without Fetch Metadata.
    assert.equal(res.headers.get('referrer-policy'), 'same-origin');
    assert.match(html, /<meta name="referrer" content="same-origin">/);
    const own = await answerConsent(
      endpoint,
      { ...fields, decision: 'approve' },
      { ...personHeaders(), origin: new URL(issuer.url).origin },
    );
    assert.equal(own.status, 303, await own.text());
    assert.equal(own.headers.get('referrer-policy'), 'no-referrer', 'the redirect to the client carries no Referer');
    const again = await openConsent(authorizeUrl());
    const fetchMetadata = await answerConsent(
      endpoint,
      { ...again.fields, decision: 'approve' },
      { ...personHeaders(), origin: 'null', 'sec-fetch-site': 'same-origin' },
    );
    assert.equal(fetchMetadata.status, 303, await fetchMetadata.text());
  });
});

describe('header login', () => {
  it('header login without the shared secret, or with a wrong one: not signed in', async () => {
    const { 'x-tessera-proxy-secret': _, ...noSecret } = personHeaders();
    await expectPage(await fetch(authorizeUrl(), { headers: noSecret, redirect: 'manual' }), 403);
    await expectPage(await fetch(authorizeUrl(), { headers: personHeaders('alice', 'a@x', `${PROXY_SECRET}x`), redirect: 'manual' }), 403);
    const reasons = await audit('authorization.denied');
    assert.ok(reasons.includes('login_proxy_secret_missing'));
    assert.ok(reasons.includes('login_proxy_secret_mismatch'));
  });

  it('header login with the user header repeated (alice, then mallory): not signed in, never guessed at', async () => {
    const headers = new Headers(personHeaders());
    headers.append('x-forwarded-user', 'mallory');
    await expectPage(await fetch(authorizeUrl(), { headers, redirect: 'manual' }), 403);
    assert.ok((await audit('authorization.denied')).includes('login_identity_invalid'));
  });

  it('a person whose subject is a client id (RFC 9068 §5: their tokens would pass for the client’s own): refused, audited', async () => {
    // mcp-app is a registered client; a user name chosen at a self-service IdP could be the same.
    const res = await fetch(authorizeUrl(), { headers: personHeaders('mcp-app'), redirect: 'manual' });
    await expectPage(res, 403);
    assert.ok((await audit('authorization.denied')).includes('login_subject_is_client'));
    const { fields } = await openConsent(authorizeUrl(), personHeaders('alice'));
    assert.equal(
      (await answerConsent(endpoint, { ...fields, decision: 'approve' }, personHeaders('mcp-app'))).status,
      403,
      'nor can such a person answer a consent form',
    );
  });

  it('a person whose subject is a client id in another case (MCP-App for client mcp-app: a case-insensitive resource server reads them alike): refused, audited', async () => {
    const before = (await audit('authorization.denied')).filter((r) => r === 'login_subject_is_client').length;
    for (const subject of ['MCP-App', 'MCP-APP']) {
      await expectPage(await fetch(authorizeUrl(), { headers: personHeaders(subject), redirect: 'manual' }), 403);
    }
    assert.equal((await audit('authorization.denied')).filter((r) => r === 'login_subject_is_client').length, before + 2);
  });

  it('a person whose subject has the form of a static token’s (static:deploy: rules and rate limits would take it for that token): refused, audited', async () => {
    const before = (await audit('authorization.denied')).filter((r) => r === 'login_subject_is_client').length;
    for (const subject of ['static:deploy', 'Static:deploy']) {
      await expectPage(await fetch(authorizeUrl(), { headers: personHeaders(subject), redirect: 'manual' }), 403);
    }
    assert.equal((await audit('authorization.denied')).filter((r) => r === 'login_subject_is_client').length, before + 2);
    // A colon elsewhere, or a subject that only contains a client id, is someone else.
    for (const subject of ['alice:static', 'mcp-app2']) await openConsent(authorizeUrl(), personHeaders(subject));
  });

  it('not signed in: a 403 page with no WWW-Authenticate, not a 401 without the challenge RFC 9110 §15.5.2 requires (no HTTP authentication scheme signs a person in here: the SSO proxy does)', async () => {
    const { 'x-tessera-proxy-secret': _, ...noSecret } = personHeaders();
    const res = await fetch(authorizeUrl(), { headers: noSecret, redirect: 'manual' });
    const html = await expectPage(res, 403);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.match(html, /<h1>You are not signed in<\/h1>/);
    assert.ok((await audit('authorization.denied')).includes('login_proxy_secret_missing'));
  });

  it('header login without a user header: not signed in', async () => {
    await expectPage(await fetch(authorizeUrl(), { headers: { 'x-tessera-proxy-secret': PROXY_SECRET }, redirect: 'manual' }), 403);
  });

  it('header login from an untrusted peer: not signed in, whatever the headers say', async () => {
    const far = await startIssuer({
      config: { token_service: { authorization: authorizationConfig({ allowed_peers: ['192.0.2.10'] }) } } as never,
    });
    try {
      await far.service.registerClient({ id: 'mcp-app', public: true, scopes: ['api:read'], audiences: [API], redirectUris: [REDIRECT] });
      const url = authorizeUrl().replace(endpoint, `${far.url}/oauth2/authorize`);
      await expectPage(await fetch(url, { headers: personHeaders(), redirect: 'manual' }), 403);
      await far.service.audit.flush();
      const reasons = (await far.store.queryAudit({ limit: 100 })).map((e) => e.reason);
      assert.ok(reasons.includes('login_peer_not_trusted'));
    } finally {
      await far.close();
    }
  });
});

describe('header login: a catch-all in allowed_peers', () => {
  it('spoofed person: 0.0.0.0/0, ::/0 or ::ffff:0:0/96 in trusted_header.allowed_peers is accepted with a warning naming its path at start', async () => {
    const warnings: string[] = [];
    const wide = await startIssuer({
      config: {
        token_service: { authorization: authorizationConfig({ allowed_peers: ['192.0.2.10', '0.0.0.0/0', '::/0', '::ffff:0:0/96'] }) },
      } as never,
      onWarning: (m) => warnings.push(m),
    });
    await wide.close();
    const found = warnings.filter((w) => w.startsWith('token_service.authorization.trusted_header.allowed_peers'));
    assert.deepEqual(
      found.map((w) => w.split(' ')[0]),
      [1, 2, 3].map((i) => `token_service.authorization.trusted_header.allowed_peers[${i}]`),
    );
    assert.match(found[0] ?? '', /"0\.0\.0\.0\/0" is every IPv4 address: .*secret_header/);
    assert.equal(warnings.join('\n').includes(PROXY_SECRET), false);
    const narrow: string[] = [];
    const listed = await startIssuer({
      config: { token_service: { authorization: authorizationConfig() } } as never,
      onWarning: (m) => narrow.push(m),
    });
    await listed.close();
    assert.deepEqual(narrow, []);
  });
});

describe('secrecy', () => {
  it('no code, CSRF token or proxy secret in the audit trail', async () => {
    const url = authorizeUrl();
    const { fields } = await openConsent(url);
    const res = await answerConsent(endpoint, { ...fields, decision: 'approve' });
    const code = new URL(res.headers.get('location') as string).searchParams.get('code') as string;
    await issuer.service.audit.flush();
    const all = JSON.stringify(await issuer.store.queryAudit({ limit: 10_000 }));
    for (const secret of [code, fields.csrf, PROXY_SECRET]) assert.equal(all.includes(secret), false);
  });
});
