/**
 * Remembered consent (`authorization.remember_consent`) over real HTTP, the person vouched for by
 * the trusted SSO-proxy headers: an approval on the consent page answers a later request for no
 * more without the page, audited as `remembered` and traced back to the page approval; anything
 * more (a scope, a resource, another redirect URI, a changed client, `prompt=consent`), expiry,
 * and every revocation concerned (subject, client, the root grant, disabling the client) shows the
 * page again. Off by default.
 */
import assert from 'node:assert/strict';
import { createSecretKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, type JWK } from 'jose';
import { buildTrace } from '../../src/audit/trace.ts';
import { formatTrace } from '../../src/cli/commands/trace.ts';
import { sha256 } from '../../src/issuer/secrets.ts';
import { createOidcAuthenticator, type OidcOptions } from '../../src/server/oidc-authenticator.ts';
import { createTrustedHeaderAuthenticator, type TrustedHeaderOptions } from '../../src/server/trusted-header-authenticator.ts';
import type { GrantSelector } from '../../src/store/contract.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { approve, authorizationConfig, authorizationRequest, personHeaders } from '../helpers/authorize.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const REDIRECT = 'https://app.test/callback';
const OTHER_REDIRECT = 'https://app.test/other';
const LOOPBACK = 'http://127.0.0.1:7777/callback';
const API = 'https://api.test';
const API2 = 'https://api2.test';
const REMEMBER = 3600;

let issuer: RunningIssuer;
let offset = 0;
let people = 0;
/** A person of their own for each test (the issuer and its store are shared). */
const person = () => `person-${++people}`;

before(async () => {
  issuer = await startIssuer({
    config: {
      token_service: {
        authorization: { ...authorizationConfig(), remember_consent: `${REMEMBER}s` },
        registration: { enabled: true, open: true, scopes: ['api:read', 'api:write'], audiences: [API] },
      },
    } as never,
    clock: () => Date.now() + offset,
  });
  await issuer.service.registerClient({
    id: 'mcp-app',
    public: true,
    name: 'MCP App',
    scopes: ['api:read', 'api:write'],
    audiences: [API, API2],
    redirectUris: [REDIRECT, OTHER_REDIRECT, LOOPBACK],
  });
});
after(() => issuer?.close());

function authorizeUrl(base: string, overrides: Record<string, string | undefined> = {}, challenge = pkcePair().challenge): string {
  return authorizationRequest(`${base}/oauth2/authorize`, {
    redirect_uri: REDIRECT,
    code_challenge: challenge,
    resource: API,
    ...overrides,
  });
}

/** A public client of the tests' shape (api:read at API, redirect REDIRECT) under its own id. */
async function publicApp(id: string): Promise<void> {
  await issuer.service.registerClient({ id, public: true, scopes: ['api:read'], audiences: [API], redirectUris: [REDIRECT] });
}

/**
 * Approve `url` as `who` while a revocation by `selector` lands between the approval's person
 * check and its writes, the writes falling in a later second than the revocation (a second
 * boundary crossed meanwhile).
 */
async function approveWhileRevoking(url: string, who: string, selector: GrantSelector): Promise<void> {
  const store = issuer.store;
  const create = store.createAuthorizationCode;
  store.createAuthorizationCode = async (record) => {
    store.createAuthorizationCode = create;
    offset += 1000;
    await issuer.service.revokeGrants(selector, 'operator', 'cli');
    offset += 1000;
    return create.call(store, record);
  };
  try {
    await approve(url, personHeaders(who));
  } finally {
    store.createAuthorizationCode = create;
  }
}

/**
 * Another instance of this issuer (same issuer identifier, master key and database) whose
 * configuration differs by `authorization` and `extra`, as after an operator's edit and a restart.
 */
async function twin(authorization: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<RunningIssuer> {
  return startIssuer({
    config: {
      ...extra,
      token_service: {
        issuer: issuer.url,
        authorization: { ...authorizationConfig(), remember_consent: `${REMEMBER}s`, ...authorization },
      },
    } as never,
    store: SqliteStore.open({ path: join(issuer.dir, 'tessera.db') }),
    master: issuer.master,
    clock: () => Date.now() + offset,
  });
}

/** GET the authorization request as `who` (or with these proxy headers): `page` (the consent page) or the redirect URL with its code. */
async function ask(
  url: string,
  who: string | Record<string, string>,
): Promise<{ kind: 'page'; status: number } | { kind: 'redirect'; location: URL; requestId: string | null }> {
  const res = await fetch(url, { headers: typeof who === 'string' ? personHeaders(who) : who, redirect: 'manual' });
  const body = await res.text();
  if (res.status === 200) {
    assert.match(body, /name="csrf"/, 'the consent page');
    return { kind: 'page', status: 200 };
  }
  assert.equal(res.status, 303, body);
  return { kind: 'redirect', location: new URL(res.headers.get('location') as string), requestId: res.headers.get('x-request-id') };
}

async function redeem(code: string, verifier: string, redirectUri = REDIRECT): Promise<{ access_token: string }> {
  const res = await issuer.post('/oauth2/token', {
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: redirectUri,
    client_id: 'mcp-app',
  });
  const body = (await res.json()) as { access_token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

describe('remembered consent', () => {
  it('a second request for no more is approved without the page, audited as remembered, traced to the page approval', async () => {
    const who = person();
    const first = await approve(authorizeUrl(issuer.url, { scope: 'api:read api:write' }), personHeaders(who));
    assert.ok(first.searchParams.get('code'));
    const { verifier, challenge } = pkcePair();
    const again = await ask(authorizeUrl(issuer.url, { scope: 'api:read' }, challenge), who);
    assert.equal(again.kind, 'redirect');
    if (again.kind !== 'redirect') return;
    assert.equal(`${again.location.origin}${again.location.pathname}`, REDIRECT);
    assert.equal(again.location.searchParams.get('state'), 'xyz-state');
    assert.equal(again.location.searchParams.get('iss'), issuer.url);
    const token = await redeem(again.location.searchParams.get('code') as string, verifier);
    const claims = decodeJwt(token.access_token);
    assert.equal(claims.sub, who);
    assert.equal(claims.scope, 'api:read', 'what this request asked for, not all that was approved');

    await issuer.service.audit.flush();
    const approvals = (await issuer.store.queryAudit({ subject: who, kinds: ['authorization.approved'] })).map((e) => e.detail);
    assert.deepEqual(
      approvals.map((d) => d?.method),
      ['consent_page', 'remembered'],
    );
    const trace = await buildTrace(issuer.store, 'jti', claims.jti as string);
    const approval = trace.grants[0]?.approval;
    assert.equal(approval?.method, 'remembered');
    assert.equal(approval?.subject, who);
    assert.ok(approval?.remembered_from, 'names the approval on the consent page it came from');
    assert.ok(Date.parse(approval.remembered_from.time) <= Date.parse(approval.time));
    assert.match(formatTrace(trace, 'trace'), new RegExp(`approved by ${who} \\S+ by a remembered consent \\(consent page \\S+ request `));
  });

  it('a request with dpop_jkt answered by a remembered consent: the code is bound to that request’s key (RFC 9449 §10), not redeemable without it', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    const jkt = await calculateJwkThumbprint(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as JWK);
    const { verifier, challenge } = pkcePair();
    const again = await ask(authorizeUrl(issuer.url, { dpop_jkt: jkt }, challenge), who);
    assert.equal(again.kind, 'redirect');
    if (again.kind !== 'redirect') return;
    const code = again.location.searchParams.get('code') as string;
    assert.equal((await issuer.store.getAuthorizationCode(sha256(code)))?.jkt, jkt);
    const res = await issuer.post('/oauth2/token', {
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: REDIRECT,
      client_id: 'mcp-app',
    });
    const body = (await res.json()) as { error: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error, 'invalid_grant');
  });

  it('a remembered approval harvested by a same-origin script (the gateway serves upstream pages on this origin; fetch, iframe or object: Sec-Fetch-Dest other than document): no code, refused as authorize_not_navigation, audited', async () => {
    // The consent page is refused to such a request (its anti-CSRF token would be read); the
    // approval it stands for, answered without the page, is refused to it too: the script chose
    // the PKCE challenge, and a redirect URI on this origin would hand it the code.
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    for (const dest of ['empty', 'iframe', 'object']) {
      const res = await fetch(authorizeUrl(issuer.url), { headers: { ...personHeaders(who), 'sec-fetch-dest': dest }, redirect: 'manual' });
      const html = await res.text();
      assert.equal(res.status, 400, dest);
      assert.equal(res.headers.get('location'), null, dest);
      assert.doesNotMatch(html, /tac_|name="csrf"/, dest);
    }
    await issuer.service.audit.flush();
    const events = await issuer.store.queryAudit({ subject: who });
    assert.deepEqual(
      events.filter((e) => e.kind === 'authorization.denied').map((e) => e.reason),
      ['authorize_not_navigation', 'authorize_not_navigation', 'authorize_not_navigation'],
    );
    assert.equal(events.filter((e) => e.kind === 'authorization.approved').length, 1, 'the page approval only');
    // A navigation is answered as before.
    const nav = await ask(authorizeUrl(issuer.url), { ...personHeaders(who), 'sec-fetch-dest': 'document' });
    assert.equal(nav.kind, 'redirect');
  });

  it('a remembered approval harvested through a popup by a same-origin script (window.open is a navigation, Sec-Fetch-Dest: document): the redirect carries Cross-Origin-Opener-Policy: same-origin, as the consent page it stands for does, so the opener cannot read the code from a same-origin redirect URI', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    const res = await fetch(authorizeUrl(issuer.url), {
      headers: { ...personHeaders(who), 'sec-fetch-dest': 'document' },
      redirect: 'manual',
    });
    await res.body?.cancel();
    assert.equal(res.status, 303);
    assert.match(res.headers.get('location') ?? '', /[?&]code=tac_/);
    assert.equal(res.headers.get('cross-origin-opener-policy'), 'same-origin');
  });

  it('a wider scope shows the page', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url, { scope: 'api:read' }), personHeaders(who));
    assert.equal((await ask(authorizeUrl(issuer.url, { scope: 'api:read api:write' }), who)).kind, 'page');
  });

  it('another resource, or another redirect URI, shows the page', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    assert.equal((await ask(authorizeUrl(issuer.url, { resource: API2 }), who)).kind, 'page');
    assert.equal((await ask(authorizeUrl(issuer.url, { redirect_uri: OTHER_REDIRECT }), who)).kind, 'page');
  });

  it('a confidential client on a loopback redirect URI: the port is not part of the match (RFC 8252 §7.3)', async () => {
    await issuer.service.registerClient({
      id: 'native-confidential',
      scopes: ['api:read'],
      audiences: [API],
      grantTypes: ['authorization_code'],
      redirectUris: [LOOPBACK],
    });
    const who = person();
    const url = (redirect: string) => authorizeUrl(issuer.url, { client_id: 'native-confidential', redirect_uri: redirect });
    await approve(url(LOOPBACK), personHeaders(who));
    assert.equal((await ask(url(LOOPBACK), who)).kind, 'redirect');
    assert.equal((await ask(url('http://127.0.0.1:45678/callback'), who)).kind, 'redirect');
  });

  it('client impersonation: a public client on a loopback redirect URI is shown the page every time (RFC 8252 §8.6)', async () => {
    // Any local process can listen on a loopback port and, with no client authentication, redeem
    // the code with its own PKCE verifier: nothing proves the request is the approved app's.
    const who = person();
    await approve(authorizeUrl(issuer.url, { redirect_uri: LOOPBACK }), personHeaders(who));
    assert.equal((await ask(authorizeUrl(issuer.url, { redirect_uri: LOOPBACK }), who)).kind, 'page');
    assert.equal((await ask(authorizeUrl(issuer.url, { redirect_uri: 'http://127.0.0.1:45678/callback' }), who)).kind, 'page');
    // Nor does such an approval replace what the person approved for the client's https redirect URI.
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    await approve(authorizeUrl(issuer.url, { redirect_uri: LOOPBACK }), personHeaders(who));
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'redirect');
  });

  it('another person is shown the page: a consent is the person’s own', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    assert.equal((await ask(authorizeUrl(issuer.url), person())).kind, 'page');
  });

  it('prompt=consent shows the page (OIDC Core §3.1.2.1); prompt=none is answered by the remembered consent', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    assert.equal((await ask(authorizeUrl(issuer.url, { prompt: 'consent' }), who)).kind, 'page');
    const none = await ask(authorizeUrl(issuer.url, { prompt: 'none' }), who);
    assert.ok(none.kind === 'redirect' && none.location.searchParams.get('code'), 'a code, no page');
    // Behind an SSO proxy no fresh sign-in can be asked for: login_required (OIDC Core §3.1.2.1), not the page.
    const login = await ask(authorizeUrl(issuer.url, { prompt: 'login consent' }), who);
    assert.ok(login.kind === 'redirect');
    assert.equal(login.location.searchParams.get('error'), 'login_required');
    const meta = (await (await fetch(`${issuer.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.deepEqual(meta.prompt_values_supported, ['none', 'consent'], 'login is not offered behind a proxy');
  });

  it('an expired consent shows the page', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    offset += (REMEMBER - 60) * 1000;
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'redirect', 'still remembered just before');
    offset += 61 * 1000;
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'page');
  });

  it('a client changed since the approval shows the page', async () => {
    await publicApp('changing');
    const who = person();
    const url = () => authorizeUrl(issuer.url, { client_id: 'changing' });
    await approve(url(), personHeaders(who));
    assert.equal((await ask(url(), who)).kind, 'redirect');
    await issuer.service.updateClient('changing', { retargetAudiences: true });
    assert.equal((await ask(url(), who)).kind, 'page');
  });

  it('a revoked subject (tessera revoke --subject) is shown the page again', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    await issuer.service.revokeGrants({ subject: who }, 'operator', 'cli');
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'page');
  });

  it('a consent written by an approval racing tessera revoke --subject (after the revocation forgot) is not used', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    const remembered = await issuer.store.getRememberedConsent(who, 'mcp-app', Math.floor((Date.now() + offset) / 1000));
    assert.ok(remembered);
    await issuer.service.revokeGrants({ subject: who }, 'operator', 'cli');
    // The approval's own write lands after the revocation's transaction: nothing forgets it again.
    await issuer.store.rememberConsent(remembered);
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'page');
  });

  it('an approval racing tessera revoke --subject across a second boundary: its consent, written in a later second than the revocation, is not used', async () => {
    const who = person();
    await approveWhileRevoking(authorizeUrl(issuer.url), who, { subject: who });
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'page');
  });

  it('the revocation that voids such a late consent lasts as long as a consent can (remember_consent longer than a login session)', async () => {
    const long = await startIssuer({
      config: { token_service: { authorization: { ...authorizationConfig(), remember_consent: '30d' } } } as never,
    });
    try {
      const now = Math.floor(Date.now() / 1000);
      await long.service.revokeGrants({ subject: 'late-consent' }, 'operator', 'cli');
      const entries = await long.store.revocationsSince(0, now + 29 * 86_400);
      assert.ok(
        entries.some((e) => e.kind === 'subject' && e.value === 'late-consent' && e.issuer?.endsWith('#login-sessions')),
        'still in force 29 days on',
      );
    } finally {
      await long.close();
    }
  });

  it('a revoked client (tessera revoke --client) is shown the page again', async () => {
    await publicApp('revoked-app');
    const who = person();
    const url = () => authorizeUrl(issuer.url, { client_id: 'revoked-app' });
    await approve(url(), personHeaders(who));
    await issuer.service.revokeGrants({ clientId: 'revoked-app' }, 'operator', 'cli');
    assert.equal((await ask(url(), who)).kind, 'page');
  });

  it('an approval racing tessera revoke --client across a second boundary: its consent, written after the revocation forgot, is not used', async () => {
    await publicApp('raced-app');
    const who = person();
    const url = () => authorizeUrl(issuer.url, { client_id: 'raced-app' });
    await approveWhileRevoking(url(), who, { clientId: 'raced-app' });
    assert.equal((await ask(url(), who)).kind, 'page');
    // A later approval, after the revocation, is remembered as usual.
    offset += 1000;
    await approve(url(), personHeaders(who));
    assert.equal((await ask(url(), who)).kind, 'redirect');
  });

  it('a client disabled and enabled again is shown the page again', async () => {
    await publicApp('paused-app');
    const who = person();
    const url = () => authorizeUrl(issuer.url, { client_id: 'paused-app' });
    await approve(url(), personHeaders(who));
    await issuer.service.setClientDisabled('paused-app', true);
    await issuer.service.setClientDisabled('paused-app', false);
    assert.equal((await ask(url(), who)).kind, 'page');
  });

  it('revoking the root grant that came from the consent page shows the page again', async () => {
    const who = person();
    const { verifier, challenge } = pkcePair();
    const back = await approve(authorizeUrl(issuer.url, {}, challenge), personHeaders(who));
    const token = await redeem(back.searchParams.get('code') as string, verifier);
    const grantId = decodeJwt(token.access_token).grant_id as string;
    assert.ok(grantId);
    await issuer.service.revokeGrants({ grantId }, 'operator', 'cli');
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'page');
  });

  it('the same configuration on another instance: the consent holds there too', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    const other = await twin({});
    try {
      assert.equal((await ask(authorizeUrl(other.url), who)).kind, 'redirect');
    } finally {
      await other.close();
    }
  });

  it('subject collision after a switch of identity source: another person with the same subject is shown the page', async () => {
    // The proxy now takes the subject from the e-mail header: someone whose address reads like the
    // earlier user name is a different person, who never approved anything.
    const who = person();
    await approve(authorizeUrl(issuer.url), personHeaders(who));
    const byEmail = await twin({ trusted_header: { ...(authorizationConfig().trusted_header as object), subject_from: 'email' } });
    try {
      assert.equal((await ask(authorizeUrl(byEmail.url), personHeaders('someone-else', who))).kind, 'page');
    } finally {
      await byEmail.close();
    }
    // The same for another header naming the person (another proxy in front).
    const otherHeader = await twin({
      trusted_header: { ...(authorizationConfig().trusted_header as object), user_header: 'x-remote-user' },
    });
    try {
      const headers = { ...personHeaders('ignored'), 'x-remote-user': who };
      assert.equal((await ask(authorizeUrl(otherHeader.url), headers)).kind, 'page');
    } finally {
      await otherHeader.close();
    }
    // Back to the source the person approved under: the consent is theirs again.
    assert.equal((await ask(authorizeUrl(issuer.url), who)).kind, 'redirect');
  });

  it('scope widened under a consent: an approved scope that now implies more shows the page', async () => {
    const who = person();
    await approve(authorizeUrl(issuer.url, { scope: 'api:read' }), personHeaders(who));
    // A catalogue that gives the approved scope the meaning it had (nothing more) changes nothing.
    const same = await twin({}, { scopes: { 'api:read': {}, 'api:write': {} } });
    try {
      assert.equal((await ask(authorizeUrl(same.url, { scope: 'api:read' }), who)).kind, 'redirect');
    } finally {
      await same.close();
    }
    // api:read now implies api:write: a token for api:read is one for api:write at the resource.
    const wider = await twin({}, { scopes: { 'api:read': { implies: ['api:write'] }, 'api:write': {} } });
    try {
      assert.equal((await ask(authorizeUrl(wider.url, { scope: 'api:read' }), who)).kind, 'page');
      // Approved again under the new meaning, it is remembered with it.
      await approve(authorizeUrl(wider.url, { scope: 'api:read' }), personHeaders(who));
      assert.equal((await ask(authorizeUrl(wider.url, { scope: 'api:read' }), who)).kind, 'redirect');
    } finally {
      await wider.close();
    }
  });

  it('a dynamically registered client is shown the page every time and its approval is not remembered (default)', async () => {
    const res = await fetch(`${issuer.url}/oauth2/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', client_name: 'MCP App', scope: 'api:read' }),
    });
    assert.equal(res.status, 201);
    const { client_id: dcr } = (await res.json()) as { client_id: string };
    assert.match(dcr, /^dcr_/);
    const url = () => authorizeUrl(issuer.url, { client_id: dcr });
    const who = person();
    await approve(url(), personHeaders(who));
    assert.equal((await ask(url(), who)).kind, 'page');
    assert.equal(await issuer.store.getRememberedConsent(who, dcr, Math.floor((Date.now() + offset) / 1000)), undefined, 'nothing stored');
    // With remember_consent_dynamic_clients, it is remembered like any client...
    const opted = await twin({ remember_consent_dynamic_clients: true });
    try {
      await approve(authorizeUrl(opted.url, { client_id: dcr }), personHeaders(who));
      assert.equal((await ask(authorizeUrl(opted.url, { client_id: dcr }), who)).kind, 'redirect');
    } finally {
      await opted.close();
    }
    // ...and what was remembered then is not used once the switch is off again.
    assert.equal((await ask(url(), who)).kind, 'page');
  });
});

describe('identity source of a remembered consent', () => {
  const header = (o: Partial<TrustedHeaderOptions> = {}) =>
    createTrustedHeaderAuthenticator({
      user_header: 'x-forwarded-user',
      email_header: 'x-forwarded-email',
      subject_from: 'user',
      allowed_peers: ['127.0.0.1'],
      secret_header: 'x-tessera-proxy-secret',
      secret: 'a'.repeat(32),
      ...o,
    }).source;
  const oidc = (o: Partial<OidcOptions> = {}) =>
    createOidcAuthenticator(
      {
        issuer: 'https://accounts.example.com',
        client_id: 'tessera',
        client_secret: 'upstream-secret',
        scopes: ['openid'],
        subject_claim: 'sub',
        session_ttl: 600,
        login_ttl: 300,
        ...o,
      },
      {
        tesseraIssuer: 'https://auth.example.com',
        keys: { state: createSecretKey(randomBytes(32)), session: createSecretKey(randomBytes(32)) },
        store: { useOnce: async () => true },
        now: () => 0,
      },
    ).source;

  it('changes with whatever decides who a subject is: the kind, the provider, its client, the claim or header', () => {
    const sources = [
      header(),
      header({ subject_from: 'email' }),
      header({ user_header: 'x-remote-user' }),
      oidc(),
      oidc({ issuer: 'https://login.example.org' }),
      oidc({ client_id: 'tessera-2' }),
      oidc({ subject_claim: 'email' }),
      oidc({ allowed_domains: ['example.com'] }),
    ];
    assert.equal(new Set(sources).size, sources.length);
    assert.equal(header({ subject_from: 'email', email_header: 'x-mail' }) === header({ subject_from: 'email' }), false);
  });

  it('does not change with what does not (the proxy’s address and secret, the upstream secret and session lifetimes, new instances)', () => {
    assert.equal(header({ allowed_peers: ['10.0.0.5'], secret: 'b'.repeat(32), secret_header: 'x-other' }), header());
    assert.equal(header({ email_header: 'x-mail' }), header(), 'the e-mail header does not name the subject by default');
    assert.equal(oidc({ client_secret: 'rotated', session_ttl: 60, login_ttl: 60, scopes: ['openid', 'email'] }), oidc());
  });
});

describe('remembered consent off (the default)', () => {
  it('shows the page every time', async () => {
    const plain = await startIssuer({ config: { token_service: { authorization: authorizationConfig() } } as never });
    try {
      assert.equal(plain.service.config.authorization.remember_consent, 0);
      await plain.service.registerClient({ id: 'mcp-app', public: true, scopes: ['api:read'], audiences: [API], redirectUris: [REDIRECT] });
      await approve(authorizeUrl(plain.url), personHeaders('alice'));
      const res = await fetch(authorizeUrl(plain.url), { headers: personHeaders('alice'), redirect: 'manual' });
      assert.equal(res.status, 200, 'the consent page again');
      assert.match(await res.text(), /name="csrf"/);
    } finally {
      await plain.close();
    }
  });
});
