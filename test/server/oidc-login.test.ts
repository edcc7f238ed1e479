/**
 * Login through an upstream OpenID Connect provider (`token_service.authorization.oidc`), driven
 * as a browser would with a cookie jar: against a real provider (node-oidc-provider) the whole
 * way from the client's authorization request to its token; against a scripted provider, one
 * test per attack on the callback (login CSRF, replayed or foreign ID tokens, forged sessions).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, SignJWT } from 'jose';
import pg from 'pg';
import { buildTrace } from '../../src/audit/trace.ts';
import { sha256 } from '../../src/issuer/secrets.ts';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { authorizationRequest, formFields } from '../helpers/authorize.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { API, oidcConfig, REDIRECT, startLoginIssuer } from '../helpers/oidc-login.ts';
import {
  Browser,
  type OidcUpstream,
  type RogueUpstream,
  rogueIdToken,
  startOidcProvider,
  startRogueProvider,
  UPSTREAM_CLIENT,
  UPSTREAM_SECRET,
} from '../helpers/oidc-upstream.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { dropSchema, postgresReachable } from '../helpers/postgres.ts';

function authorizeUrl(issuer: RunningIssuer, challenge: string): string {
  return authorizationRequest(`${issuer.url}/oauth2/authorize`, {
    redirect_uri: REDIRECT,
    code_challenge: challenge,
    resource: API,
    state: 'client-state',
  });
}

async function audit(issuer: RunningIssuer): Promise<string[]> {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'authorization.denied').map((e) => e.reason);
}

async function expectPage(res: Response, status: number): Promise<string> {
  const html = await res.text();
  assert.equal(res.status, status, html);
  assert.equal(res.headers.get('location'), null, 'never redirected');
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
  return html;
}

const isCallback = (issuer: RunningIssuer) => (u: URL) => u.href.startsWith(`${issuer.url}/oauth2/login/callback`);

/** What a flood server may have sent before its reader gave up: the limit plus socket and stream buffers. */
const FLOOD_BOUND = 16 * 1024 * 1024;

/**
 * A server answering every request with 200 and a 64 MiB JSON string, written as fast as the reader
 * takes it; `sent` counts the bytes written, `closed` resolves once the reader has hung up or all
 * was sent.
 */
async function floodServer(): Promise<{ url: string; sent: number; closed: Promise<void>; close(): Promise<void> }> {
  const { createServer } = await import('node:http');
  let done: () => void = () => {};
  const state = { url: '', sent: 0, closed: new Promise<void>((r) => (done = r)), close: async () => {} };
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    const chunk = Buffer.alloc(1 << 20, 0x20);
    res.write('{"pad":"');
    let n = 0;
    res.on('close', done);
    const pump = () => {
      while (n < 64 && !res.destroyed) {
        n++;
        state.sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end('"}');
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`;
  state.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return state;
}

describe('login at a real OpenID Connect provider (node-oidc-provider)', () => {
  let upstream: OidcUpstream;
  let issuer: RunningIssuer;

  before(async () => {
    upstream = await startOidcProvider();
    issuer = await startLoginIssuer(upstream.url, { oidc: { allowed_domains: ['example.com'] } });
    upstream.configure(`${issuer.url}/oauth2/login/callback`);
  });
  after(async () => {
    await issuer?.close();
    await upstream?.close();
  });

  it('authorize → upstream login → callback → consent → code → token: sub is the upstream person', async () => {
    const browser = new Browser();
    const pkce = pkcePair();
    const start = await browser.fetch(authorizeUrl(issuer, pkce.challenge));
    assert.equal(start.status, 303);
    const up = new URL(start.headers.get('location') as string);
    assert.equal(up.origin, upstream.url);
    assert.equal(up.searchParams.get('client_id'), UPSTREAM_CLIENT);
    assert.equal(up.searchParams.get('redirect_uri'), `${issuer.url}/oauth2/login/callback`);
    assert.equal(up.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(up.searchParams.get('scope'), 'openid email profile');
    assert.ok(up.searchParams.get('nonce'));
    const stateCookie = start.headers.getSetCookie()[0] as string;
    assert.match(stateCookie, /^tessera-login=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=600$/);

    const { url: callback } = await browser.follow(up.href, isCallback(issuer));
    assert.equal(callback.searchParams.get('state'), up.searchParams.get('state'));
    const back = await browser.fetch(callback.href);
    assert.equal(back.status, 303, await back.clone().text());
    assert.equal(back.headers.get('location'), authorizeUrl(issuer, pkce.challenge), 'back to the very request');
    assert.ok(browser.jar.has('tessera-session'));
    assert.ok(!browser.jar.has('tessera-login'), 'the state cookie is cleared');

    const consent = await browser.fetch(back.headers.get('location') as string);
    const html = await consent.text();
    assert.equal(consent.status, 200, html);
    assert.match(html, /Signed in as <strong>alice@example\.com<\/strong>/);
    const approved = await browser.fetch(`${issuer.url}/oauth2/authorize`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ ...formFields(html), decision: 'approve' }).toString(),
    });
    assert.equal(approved.status, 303, await approved.text());
    const code = new URL(approved.headers.get('location') as string).searchParams.get('code') as string;
    const token = await issuer.post('/oauth2/token', {
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT,
      code_verifier: pkce.verifier,
      client_id: 'mcp-app',
      resource: API,
    });
    const body = (await token.json()) as { access_token: string };
    assert.equal(token.status, 200, JSON.stringify(body));
    assert.equal(decodeJwt(body.access_token).sub, 'upstream-user-42');
    // The sign-in itself is on the trail: who, through which provider (the start of the chain).
    await issuer.service.audit.flush();
    const signedIn = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'login.succeeded');
    assert.equal(signedIn.length, 1);
    assert.equal(signedIn[0]?.subject, 'upstream-user-42');
    assert.equal(signedIn[0]?.decision, 'allow');
    assert.equal(signedIn[0]?.detail?.provider, upstream.url);
    // tessera trace starts the chain there: the sign-in, then the approval, then the root grant.
    const trace = await buildTrace(issuer.store, 'jti', decodeJwt(body.access_token).jti as string);
    const approval = trace.grants[0]?.approval;
    assert.equal(approval?.subject, 'upstream-user-42');
    assert.equal(approval?.client_id, 'mcp-app');
    assert.equal(approval?.login?.provider, upstream.url);
    assert.ok(Date.parse(approval?.login?.time ?? '') <= Date.parse(approval?.time ?? ''));

    // A second authorization request within the session skips the upstream login.
    const again = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
    assert.equal(again.status, 200);
    await again.text();
  });

  it('prompt=login and max_age=0 at a real provider with a session of its own: it re-authenticates (a fresh auth_time) and the request is answered', async () => {
    const browser = new Browser();
    const first = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
    const { url: firstBack } = await browser.follow(first.headers.get('location') as string, isCallback(issuer));
    assert.equal((await browser.fetch(firstBack.href)).status, 303);
    for (const extra of [{ prompt: 'login' }, { max_age: '0' }] as Record<string, string>[]) {
      const url = authorizationRequest(`${issuer.url}/oauth2/authorize`, {
        redirect_uri: REDIRECT,
        code_challenge: pkcePair().challenge,
        resource: API,
        ...extra,
      });
      const res = await browser.fetch(url);
      assert.equal(res.status, 303, JSON.stringify(extra));
      const up = new URL(res.headers.get('location') as string);
      assert.equal(up.origin, upstream.url);
      assert.equal(up.searchParams.get('max_age'), '0');
      const { url: callback } = await browser.follow(up.href, isCallback(issuer));
      const back = await browser.fetch(callback.href);
      assert.equal(back.status, 303, await back.clone().text());
      assert.equal(back.headers.get('location'), url, 'signed in afresh: back to the very request');
      assert.equal((await browser.fetch(url)).status, 200, JSON.stringify(extra));
    }
  });

  it('access_denied from the upstream is a page, never a redirect', async () => {
    upstream.deny = true;
    try {
      const browser = new Browser();
      const start = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
      const { url: callback } = await browser.follow(start.headers.get('location') as string, isCallback(issuer));
      assert.equal(callback.searchParams.get('error'), 'access_denied');
      const html = await expectPage(await browser.fetch(callback.href), 403);
      assert.match(html, /Signing in did not complete/);
      assert.ok(!browser.jar.has('tessera-session'));
      assert.ok((await audit(issuer)).includes('login_upstream_error:access_denied'));
    } finally {
      upstream.deny = false;
    }
  });

  it('a person outside allowed_domains is refused', async () => {
    const saved = upstream.person;
    upstream.person = { id: 'mallory-7', email: 'mallory@evil.test', email_verified: true };
    try {
      const browser = new Browser();
      const start = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
      const { url: callback } = await browser.follow(start.headers.get('location') as string, isCallback(issuer));
      await expectPage(await browser.fetch(callback.href), 403);
      assert.ok(!browser.jar.has('tessera-session'));
      assert.ok((await audit(issuer)).includes('login_domain_not_allowed'));
    } finally {
      upstream.person = saved;
    }
  });

  it('an unverified e-mail address does not pass the domain check', async () => {
    const saved = upstream.person;
    upstream.person = { id: 'eve-8', email: 'eve@example.com', email_verified: false };
    try {
      const browser = new Browser();
      const start = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
      const { url: callback } = await browser.follow(start.headers.get('location') as string, isCallback(issuer));
      await expectPage(await browser.fetch(callback.href), 403);
      assert.ok((await audit(issuer)).includes('login_email_unverified'));
    } finally {
      upstream.person = saved;
    }
  });

  it('login CSRF: a callback carried to another browser (no state cookie) is refused', async () => {
    const victim = new Browser();
    const attacker = new Browser();
    const start = await attacker.fetch(authorizeUrl(issuer, pkcePair().challenge));
    const { url: callback } = await attacker.follow(start.headers.get('location') as string, isCallback(issuer));
    // The attacker's own code and state, delivered to the victim's browser.
    await expectPage(await victim.fetch(callback.href), 403);
    assert.ok(!victim.jar.has('tessera-session'));
    assert.ok((await audit(issuer)).includes('login_state_missing'));
  });

  it('signing in did not complete: a 403 page with no WWW-Authenticate, not a 401 without the challenge RFC 9110 §15.5.2 requires (the person signs in at the OIDC provider, not with an HTTP authentication scheme)', async () => {
    const victim = new Browser();
    const attacker = new Browser();
    const start = await attacker.fetch(authorizeUrl(issuer, pkcePair().challenge));
    const { url: callback } = await attacker.follow(start.headers.get('location') as string, isCallback(issuer));
    const res = await victim.fetch(callback.href);
    const html = await expectPage(res, 403);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.match(html, /Signing in did not complete/);
    assert.ok((await audit(issuer)).includes('login_state_missing'));
  });
});

describe('attacks on the login callback (scripted upstream)', () => {
  let rogue: RogueUpstream;
  let issuer: RunningIssuer;
  let skew = 0;

  before(async () => {
    rogue = await startRogueProvider();
    // Dozens of people's callbacks in a second, every one from 127.0.0.1: past the per-address
    // bucket's default burst (20), which oidc-login-rate-limit.test.ts tests.
    issuer = await startLoginIssuer(rogue.url, { oidc: { callback_rate_limit: { burst: 1000 } }, clock: () => Date.now() + skew });
  });
  after(async () => {
    await issuer?.close();
    await rogue?.close();
  });

  /** Start a login; the upstream authorization request's parameters. */
  async function begin(browser: Browser): Promise<URLSearchParams> {
    const res = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
    assert.equal(res.status, 303);
    return new URL(res.headers.get('location') as string).searchParams;
  }

  const idToken = (claims: Record<string, unknown>, key = rogue.key, kid = rogue.kid) => rogueIdToken(rogue, claims, key, kid);

  async function callback(browser: Browser, state: string, code = 'upstream-code-1', on: RunningIssuer = issuer): Promise<Response> {
    return browser.fetch(`${on.url}/oauth2/login/callback?${new URLSearchParams({ code, state })}`);
  }

  it('a correct ID token signs in; the token request carried the PKCE verifier and client_secret_basic', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce') });
    const res = await callback(browser, p.get('state') as string);
    assert.equal(res.status, 303, await res.clone().text());
    const sent = rogue.tokenRequests.at(-1);
    assert.ok(sent);
    assert.equal(sent.authorization, `Basic ${Buffer.from(`${UPSTREAM_CLIENT}:${UPSTREAM_SECRET}`).toString('base64')}`);
    assert.equal(sent.form.get('redirect_uri'), `${issuer.url}/oauth2/login/callback`);
    const verifier = sent.form.get('code_verifier') as string;
    const { createHash } = await import('node:crypto');
    assert.equal(createHash('sha256').update(verifier).digest('base64url'), p.get('code_challenge'));
    assert.equal((await browser.fetch(res.headers.get('location') as string)).status, 200);
  });

  it('login CSRF: a state that is not the cookie’s is refused', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce') });
    const other = new Browser();
    const q = await begin(other);
    await expectPage(await callback(browser, q.get('state') as string), 403);
    assert.ok(!browser.jar.has('tessera-session'));
    assert.ok((await audit(issuer)).includes('login_state_mismatch'));
  });

  it('a replayed callback (same state twice) is refused', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    const cookie = browser.jar.get('tessera-login') as string;
    rogue.idToken = () => idToken({ nonce: p.get('nonce') });
    assert.equal((await callback(browser, p.get('state') as string)).status, 303);
    const replay = new Browser();
    replay.jar.set('tessera-login', cookie);
    await expectPage(await callback(replay, p.get('state') as string), 403);
    assert.ok((await audit(issuer)).includes('login_state_replayed'));
  });

  it('a replayed ID token (another login’s nonce) is refused', async () => {
    const browser = new Browser();
    const first = await begin(new Browser());
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: first.get('nonce') });
    await expectPage(await callback(browser, p.get('state') as string), 403);
    assert.ok(!browser.jar.has('tessera-session'));
    assert.ok((await audit(issuer)).includes('login_nonce_mismatch'));
  });

  it('an ID token for another audience is refused', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () =>
      new SignJWT({ sub: 'rogue-user', nonce: p.get('nonce') })
        .setProtectedHeader({ alg: 'ES256', kid: rogue.kid })
        .setIssuer(rogue.url)
        .setAudience('some-other-client')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(rogue.key);
    await expectPage(await callback(browser, p.get('state') as string), 403);
    assert.ok((await audit(issuer)).includes('login_id_token_invalid'));
  });

  it('an ID token whose azp is another client is refused', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce'), azp: 'some-other-client' });
    const before = (await audit(issuer)).length;
    await expectPage(await callback(browser, p.get('state') as string), 403);
    assert.deepEqual((await audit(issuer)).slice(before), ['login_id_token_invalid']);
  });

  it('an ID token issued in the future, or before this login began, is refused (iat checked with 30 s leeway)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const timedIdToken = (nonce: string, iat: number, exp: number) =>
      new SignJWT({ sub: 'rogue-user', nonce, iat, exp })
        .setProtectedHeader({ alg: 'ES256', kid: rogue.kid })
        .setIssuer(rogue.url)
        .setAudience(UPSTREAM_CLIENT)
        .sign(rogue.key);
    // The login began just now: an ID token for its nonce cannot have been issued before.
    for (const iat of [now + 3600, now + 60, now - 3600, now - 60]) {
      const browser = new Browser();
      const p = await begin(browser);
      rogue.idToken = () => timedIdToken(p.get('nonce') as string, iat, now + 7200);
      const before = (await audit(issuer)).length;
      await expectPage(await callback(browser, p.get('state') as string), 403);
      assert.ok(!browser.jar.has('tessera-session'), String(iat - now));
      assert.deepEqual((await audit(issuer)).slice(before), ['login_id_token_invalid'], String(iat - now));
    }
    // Within the leeway, and issued during the login: signed in.
    for (const iat of [now + 20, now - 20]) {
      const browser = new Browser();
      const p = await begin(browser);
      rogue.idToken = () => timedIdToken(p.get('nonce') as string, iat, now + 7200);
      assert.equal((await callback(browser, p.get('state') as string)).status, 303, String(iat - now));
    }
  });

  it('a provider whose clock is off by more than 30 s: the refusal names the claim (iat) and the skew seen, in the audit detail and the log, never the token', async () => {
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
    try {
      const now = Math.floor(Date.now() / 1000);
      for (const [offset, words] of [
        // The skew as the server sees it: a second may pass between signing and the callback.
        [45, /\biat\b.*\b(?:4[3-7]) s ahead of this server's clock/],
        [-3600, /\biat\b.*\b(?:359[89]|360[0-2]) s behind this server's clock/],
      ] as const) {
        const browser = new Browser();
        const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
        const p = new URL(res.headers.get('location') as string).searchParams;
        const token = await new SignJWT({ sub: 'rogue-user', nonce: p.get('nonce'), iat: now + offset, exp: now + 7200 })
          .setProtectedHeader({ alg: 'ES256', kid: rogue.kid })
          .setIssuer(rogue.url)
          .setAudience(UPSTREAM_CLIENT)
          .sign(rogue.key);
        rogue.idToken = () => token;
        warnings.length = 0;
        const back = await browser.fetch(
          `${fresh.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`,
        );
        await expectPage(back, 403);
        await fresh.service.audit.flush();
        const refused = (await fresh.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'authorization.denied').at(-1);
        assert.equal(refused?.reason, 'login_id_token_invalid', 'the reason stays stable');
        assert.equal(refused?.detail?.claim, 'iat');
        const seen = refused?.detail?.skew_seconds as number;
        assert.ok(Math.abs(seen - offset) <= 2, `skew_seconds ${seen} for ${offset}`);
        assert.ok(
          warnings.some((w) => words.test(w)),
          warnings.join('\n'),
        );
        for (const part of token.split('.')) assert.ok(!warnings.join('\n').includes(part), 'no part of the token in the log');
        assert.ok(!JSON.stringify(refused).includes(token.split('.')[2] as string), 'nor in the audit event');
      }
    } finally {
      await fresh.close();
    }
  });

  it('an ID token signed with a key not in the JWKS is refused', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    for (const kid of [rogue.kid, 'unknown-kid']) {
      const browser = new Browser();
      const p = await begin(browser);
      rogue.idToken = () => idToken({ nonce: p.get('nonce') }, stranger, kid);
      const before = (await audit(issuer)).length;
      await expectPage(await callback(browser, p.get('state') as string), 403);
      assert.deepEqual((await audit(issuer)).slice(before), ['login_id_token_invalid'], kid);
    }
  });

  it('an ID token with alg none, or HS256 keyed by the client secret, is refused', async () => {
    const claims = (nonce: string) => ({
      sub: 'rogue-user',
      iss: rogue.url,
      aud: UPSTREAM_CLIENT,
      nonce,
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 300,
    });
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const forgers = [
      (nonce: string) => `${b64({ alg: 'none' })}.${b64(claims(nonce))}.`,
      (nonce: string) => new SignJWT(claims(nonce)).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(UPSTREAM_SECRET)),
    ];
    for (const forge of forgers) {
      const browser = new Browser();
      const p = await begin(browser);
      rogue.idToken = () => forge(p.get('nonce') as string);
      const before = (await audit(issuer)).length;
      await expectPage(await callback(browser, p.get('state') as string), 403);
      assert.deepEqual((await audit(issuer)).slice(before), ['login_id_token_invalid']);
      assert.ok(!browser.jar.has('tessera-session'));
    }
  });

  it('the provider’s JWKS down at the callback: fails closed as unavailable (502 page), not as a forged ID token', async () => {
    // A fresh Tessera: its key set for the provider is not cached yet.
    const fresh = await startLoginIssuer(rogue.url);
    rogue.jwksDown = true;
    try {
      const browser = new Browser();
      const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
      const p = new URL(res.headers.get('location') as string).searchParams;
      rogue.idToken = () => idToken({ nonce: p.get('nonce') });
      const html = await expectPage(
        await browser.fetch(`${fresh.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`),
        502,
      );
      assert.match(html, /could not be reached/);
      assert.ok(!browser.jar.has('tessera-session'));
      await fresh.service.audit.flush();
      const reasons = (await fresh.store.queryAudit({ limit: 100 })).map((e) => e.reason);
      assert.ok(reasons.includes('login_upstream_unavailable'), reasons.join());
      assert.ok(!reasons.includes('login_id_token_invalid'));
    } finally {
      rogue.jwksDown = false;
      await fresh.close();
    }
  });

  /** A compact ES256 JWS over exactly these header and payload texts (duplicates and all), signed by the provider's key. */
  async function rawIdToken(header: string, payload: string): Promise<string> {
    const { sign } = await import('node:crypto');
    const input = `${Buffer.from(header).toString('base64url')}.${Buffer.from(payload).toString('base64url')}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key: rogue.key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  }

  it('an ID token that names a member twice (two sub, two kid, a nested claim twice) is refused, not read as the last', async () => {
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
    try {
      const now = Math.floor(Date.now() / 1000);
      const rest = (nonce: string) =>
        `"iss":${JSON.stringify(rogue.url)},"aud":${JSON.stringify(UPSTREAM_CLIENT)},"nonce":${JSON.stringify(nonce)},"iat":${now},"exp":${now + 300}`;
      const header = `{"alg":"ES256","kid":"${rogue.kid}"}`;
      const cases: [string, (nonce: string) => [string, string]][] = [
        ['sub twice', (n) => [header, `{"sub":"victim","sub":"rogue-user",${rest(n)}}`]],
        ['kid twice in the header', (n) => [`{"alg":"ES256","kid":"other","kid":"${rogue.kid}"}`, `{"sub":"rogue-user",${rest(n)}}`]],
        ['a member twice in a nested claim', (n) => [header, `{"sub":"rogue-user","address":{"country":"A","country":"B"},${rest(n)}}`]],
      ];
      const start = async (browser: Browser) => {
        const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
        return new URL(res.headers.get('location') as string).searchParams;
      };
      const finish = (browser: Browser, p: URLSearchParams) =>
        browser.fetch(`${fresh.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`);
      // The same token with each member once signs in: only the repetition is refused.
      const control = new Browser();
      const cp = await start(control);
      rogue.idToken = () => rawIdToken(header, `{"sub":"rogue-user",${rest(cp.get('nonce') as string)}}`);
      assert.equal((await finish(control, cp)).status, 303);
      for (const [name, build] of cases) {
        const browser = new Browser();
        const p = await start(browser);
        const token = await rawIdToken(...build(p.get('nonce') as string));
        rogue.idToken = () => token;
        await fresh.service.audit.flush();
        const before = (await audit(fresh)).length;
        await expectPage(await finish(browser, p), 403);
        assert.ok(!browser.jar.has('tessera-session'), name);
        assert.deepEqual((await audit(fresh)).slice(before), ['login_id_token_invalid'], name);
        assert.match(warnings.at(-1) ?? '', /ID token repeats a member name in one object/, name);
        for (const part of token.split('.')) assert.ok(!warnings.join('\n').includes(part), 'no part of the token in the log');
      }
    } finally {
      await fresh.close();
    }
  });

  it('a token response that names id_token twice is refused (login_code_rejected), not read as the last', async () => {
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
    try {
      const browser = new Browser();
      const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
      const p = new URL(res.headers.get('location') as string).searchParams;
      // Both verify: which person signs in would depend on which of the two a reader keeps.
      const victim = await idToken({ nonce: p.get('nonce'), sub: 'victim' });
      rogue.idToken = () => idToken({ nonce: p.get('nonce') });
      rogue.rewrite = (path, text) => (path === '/token' ? `{"id_token":${JSON.stringify(victim)},${text.slice(1)}` : text);
      const html = await expectPage(
        await browser.fetch(`${fresh.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`),
        403,
      );
      assert.match(html, /Signing in did not complete/);
      assert.ok(!browser.jar.has('tessera-session'));
      assert.deepEqual(await audit(fresh), ['login_code_rejected']);
      assert.match(warnings.join('\n'), /the token endpoint's response \(200\) repeats a member name in one object/);
      assert.ok(!warnings.join('\n').includes(victim.split('.')[1] as string));
    } finally {
      rogue.rewrite = undefined;
      await fresh.close();
    }
  });

  it('mix-up (RFC 9207): a callback whose iss names another provider, or none from a provider that sends it, is refused as login_issuer_mismatch, not as login CSRF', async () => {
    // The provider advertises iss in its answers: a callback without one was not its answer.
    const fresh = await startLoginIssuer(rogue.url);
    rogue.rewrite = (path, text) =>
      path === '/.well-known/openid-configuration' ? text.replace('{', '{"authorization_response_iss_parameter_supported":true,') : text;
    try {
      for (const iss of ['https://evil.test', `${rogue.url}/`, undefined]) {
        const browser = new Browser();
        const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
        assert.equal(res.status, 303);
        const p = new URL(res.headers.get('location') as string).searchParams;
        rogue.idToken = () => idToken({ nonce: p.get('nonce') });
        const requests = rogue.tokenRequests.length;
        const before = (await audit(fresh)).length;
        const query = new URLSearchParams({ code: 'upstream-code-1', state: p.get('state') as string, ...(iss ? { iss } : {}) });
        await expectPage(await browser.fetch(`${fresh.url}/oauth2/login/callback?${query}`), 403);
        assert.deepEqual((await audit(fresh)).slice(before), ['login_issuer_mismatch'], String(iss));
        assert.equal(rogue.tokenRequests.length, requests, 'the code is never sent to the token endpoint');
        assert.ok(!browser.jar.has('tessera-session'));
      }
      // Its own iss signs in.
      const browser = new Browser();
      const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
      const p = new URL(res.headers.get('location') as string).searchParams;
      rogue.idToken = () => idToken({ nonce: p.get('nonce') });
      const query = new URLSearchParams({ code: 'upstream-code-1', state: p.get('state') as string, iss: rogue.url });
      assert.equal((await browser.fetch(`${fresh.url}/oauth2/login/callback?${query}`)).status, 303);
    } finally {
      rogue.rewrite = undefined;
      await fresh.close();
    }
  });

  it('a discovery document that names a member twice (two jwks_uri) is refused: no login starts (502 page)', async () => {
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
    rogue.rewrite = (path, text) =>
      path === '/.well-known/openid-configuration' ? text.replace('"jwks_uri":', '"jwks_uri":"https://evil.test/jwks","jwks_uri":') : text;
    try {
      const browser = new Browser();
      const html = await expectPage(await browser.fetch(authorizeUrl(fresh, pkcePair().challenge)), 502);
      assert.match(html, /could not be reached/);
      assert.ok(!browser.jar.has('tessera-login'));
      assert.deepEqual(await audit(fresh), ['login_upstream_unavailable']);
      assert.match(warnings.join('\n'), /openid-configuration repeats a member name in one object/);
    } finally {
      rogue.rewrite = undefined;
      await fresh.close();
    }
  });

  it('a provider on plain-http loopback whose discovery names a plain-http endpoint off loopback (jwks_uri, token_endpoint, authorization_endpoint) is refused: no login starts (502 page)', async () => {
    // Plain http is accepted for a provider on this machine; a key set fetched over plain http
    // from another host could be swapped on the way, and the ID token forged with its key.
    for (const member of ['jwks_uri', 'token_endpoint', 'authorization_endpoint']) {
      const warnings: string[] = [];
      const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
      rogue.rewrite = (path, text) => {
        if (path !== '/.well-known/openid-configuration') return text;
        const doc = JSON.parse(text) as Record<string, string>;
        doc[member] = `http://idp.example.com/${member}`;
        return JSON.stringify(doc);
      };
      try {
        const browser = new Browser();
        const html = await expectPage(await browser.fetch(authorizeUrl(fresh, pkcePair().challenge)), 502);
        assert.match(html, /could not be reached/, member);
        assert.ok(!browser.jar.has('tessera-login'), member);
        assert.deepEqual(await audit(fresh), ['login_upstream_unavailable'], member);
        assert.match(warnings.join('\n'), new RegExp(`metadata ${member} is not https`), member);
      } finally {
        rogue.rewrite = undefined;
        await fresh.close();
      }
    }
  });

  it('a discovery document nested 30,000 arrays deep is refused as too deep, not as a repeated member: no login starts', async () => {
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
    rogue.rewrite = (path, text) =>
      path === '/.well-known/openid-configuration' ? `{"x":${'['.repeat(30_000)}${']'.repeat(30_000)},${text.slice(1)}` : text;
    try {
      const browser = new Browser();
      await expectPage(await browser.fetch(authorizeUrl(fresh, pkcePair().challenge)), 502);
      assert.deepEqual(await audit(fresh), ['login_upstream_unavailable']);
      assert.match(warnings.join('\n'), /openid-configuration nests objects and arrays too deeply/);
      assert.doesNotMatch(warnings.join('\n'), /repeats a member name/);
    } finally {
      rogue.rewrite = undefined;
      await fresh.close();
    }
  });

  it('a provider JWKS that names a member twice (two x in the key) fails closed as unavailable, not read as the last', async () => {
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
    try {
      const { generateKeyPairSync } = await import('node:crypto');
      const strangerX = (generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as { x: string }).x;
      const browser = new Browser();
      const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
      const p = new URL(res.headers.get('location') as string).searchParams;
      rogue.idToken = () => idToken({ nonce: p.get('nonce') });
      rogue.rewrite = (path, text) => (path === '/jwks' ? text.replace('"x":', `"x":"${strangerX}","x":`) : text);
      const html = await expectPage(
        await browser.fetch(`${fresh.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`),
        502,
      );
      assert.match(html, /could not be reached/);
      assert.ok(!browser.jar.has('tessera-session'));
      assert.deepEqual(await audit(fresh), ['login_upstream_unavailable']);
      assert.match(warnings.join('\n'), /\/jwks failed: Error: response repeats a member name in one object/);
    } finally {
      rogue.rewrite = undefined;
      await fresh.close();
    }
  });

  it('attack: a 64 MiB discovery document is refused after 256 KiB, not read whole first: no login starts (502 page)', async () => {
    const flood = await floodServer();
    const warnings: string[] = [];
    const fresh = await startLoginIssuer(flood.url, { onWarning: (m) => warnings.push(m) });
    try {
      const browser = new Browser();
      await expectPage(await browser.fetch(authorizeUrl(fresh, pkcePair().challenge)), 502);
      assert.deepEqual(await audit(fresh), ['login_upstream_unavailable']);
      assert.match(warnings.join('\n'), /discovery of .* failed: response larger than 262144 bytes/);
      await flood.closed;
      assert.ok(flood.sent < FLOOD_BOUND, `${flood.sent} bytes were sent before Tessera stopped reading`);
    } finally {
      await fresh.close();
      await flood.close();
    }
  });

  it('attack: a 64 MiB provider JWKS is refused after 512 KiB, not read whole: fails closed as unavailable', async () => {
    const flood = await floodServer();
    const fresh = await startLoginIssuer(rogue.url);
    rogue.rewrite = (path, text) =>
      path === '/.well-known/openid-configuration' ? text.replace(`${rogue.url}/jwks`, `${flood.url}/jwks`) : text;
    try {
      const browser = new Browser();
      const res = await browser.fetch(authorizeUrl(fresh, pkcePair().challenge));
      const p = new URL(res.headers.get('location') as string).searchParams;
      rogue.idToken = () => idToken({ nonce: p.get('nonce') });
      await expectPage(
        await browser.fetch(`${fresh.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`),
        502,
      );
      assert.ok(!browser.jar.has('tessera-session'));
      assert.deepEqual(await audit(fresh), ['login_upstream_unavailable']);
      await flood.closed;
      assert.ok(flood.sent < FLOOD_BOUND, `${flood.sent} bytes were sent before Tessera stopped reading`);
    } finally {
      rogue.rewrite = undefined;
      await fresh.close();
      await flood.close();
    }
  });

  it('a person the provider names like a client (MCP-APP for client mcp-app) or like a static token (static:ci): signed in, but refused at authorize, audited', async () => {
    for (const sub of ['MCP-APP', 'static:ci']) {
      const browser = new Browser();
      const p = await begin(browser);
      rogue.idToken = () => idToken({ nonce: p.get('nonce'), sub });
      assert.equal((await callback(browser, p.get('state') as string)).status, 303);
      const before = (await audit(issuer)).filter((r) => r === 'login_subject_is_client').length;
      await expectPage(await browser.fetch(authorizeUrl(issuer, pkcePair().challenge)), 403);
      assert.equal((await audit(issuer)).filter((r) => r === 'login_subject_is_client').length, before + 1, sub);
    }
  });

  it('a person the provider names like a client in a Unicode spelling (dotless ı, Kelvin sign, full-width letters: Java equalsIgnoreCase, PRECIS and NFKC read them as the client id): refused at authorize, audited', async () => {
    await issuer.service.registerClient({ id: 'billing-kiosk', scopes: [], audiences: ['https://api.test'] });
    for (const sub of [
      'b\u0131lling-kiosk',
      'b\u0130lling-kiosk',
      'billing-\u212Aiosk',
      'ＢＩＬＬＩＮＧ-kiosk',
      '\u017Ftatic:ci',
      'stat\u0130c:ci',
    ]) {
      const browser = new Browser();
      const p = await begin(browser);
      rogue.idToken = () => idToken({ nonce: p.get('nonce'), sub });
      assert.equal((await callback(browser, p.get('state') as string)).status, 303);
      const before = (await audit(issuer)).filter((r) => r === 'login_subject_is_client').length;
      await expectPage(await browser.fetch(authorizeUrl(issuer, pkcePair().challenge)), 403);
      assert.equal((await audit(issuer)).filter((r) => r === 'login_subject_is_client').length, before + 1, sub);
    }
    // A name that merely contains non-ASCII letters is no client.
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce'), sub: 'björn-kiosk' });
    assert.equal((await callback(browser, p.get('state') as string)).status, 303);
    assert.equal((await browser.fetch(authorizeUrl(issuer, pkcePair().challenge))).status, 200);
  });

  async function signedIn(): Promise<Browser> {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce'), email: 'rogue@example.com' });
    assert.equal((await callback(browser, p.get('state') as string)).status, 303);
    return browser;
  }

  it('an expired login session no longer signs in: the browser is sent to log in again', async () => {
    const browser = await signedIn();
    assert.equal((await browser.fetch(authorizeUrl(issuer, pkcePair().challenge))).status, 200);
    skew = 601_000;
    try {
      const res = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
      assert.equal(res.status, 303);
      assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
    } finally {
      skew = 0;
    }
  });

  it('a login session from before its subject was revoked approves nothing more: the browser is sent to log in again', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce'), sub: 'compromised-user' });
    assert.equal((await callback(browser, p.get('state') as string)).status, 303);
    assert.equal((await browser.fetch(authorizeUrl(issuer, pkcePair().challenge))).status, 200, 'the consent page, before');
    await issuer.service.revokeGrants({ subject: 'compromised-user' }, 'account_compromised');
    const before = (await audit(issuer)).length;
    const res = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
    assert.equal(res.status, 303, 'no consent page for the old session');
    assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
    assert.deepEqual((await audit(issuer)).slice(before), ['login_session_revoked']);
    const refused = (await issuer.store.queryAudit({ limit: 10_000 })).find((e) => e.reason === 'login_session_revoked');
    assert.equal(refused?.subject, 'compromised-user', 'the audit trail names whose session was refused');
    // Signing in again afterwards is a new session, which the revocation does not cover.
    skew = 2000;
    try {
      const again = await begin(browser);
      rogue.idToken = () => idToken({ nonce: again.get('nonce'), sub: 'compromised-user' });
      assert.equal((await callback(browser, again.get('state') as string)).status, 303);
      assert.equal((await browser.fetch(authorizeUrl(issuer, pkcePair().challenge))).status, 200);
    } finally {
      skew = 0;
    }
  });

  it('the login callback and sign-out answer a method they do not take with 405, Allow and Cache-Control: no-store, as their pages', async () => {
    for (const [path, method, allow] of [
      ['/oauth2/login/callback', 'POST', 'GET'],
      ['/oauth2/logout', 'PUT', 'GET, HEAD, POST'],
    ] as const) {
      const res = await fetch(`${issuer.url}${path}`, { method });
      await res.body?.cancel();
      assert.equal(res.status, 405, path);
      assert.equal(res.headers.get('allow'), allow, path);
      assert.equal(res.headers.get('cache-control'), 'no-store', path);
      assert.equal(res.headers.get('pragma'), 'no-cache', path);
    }
  });

  it('attack: a code approved in a login session the subject’s revocation ended, by an instance that has not read it, is dated by the sign-in and refused at redemption (invalid_grant, no grant)', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    rogue.idToken = () => idToken({ nonce: p.get('nonce'), sub: 'stale-session-user' });
    assert.equal((await callback(browser, p.get('state') as string)).status, 303);
    skew = 5000;
    try {
      const pkce = pkcePair();
      const page = await browser.fetch(authorizeUrl(issuer, pkce.challenge));
      const html = await page.text();
      assert.equal(page.status, 200, html);
      const approved = await browser.fetch(`${issuer.url}/oauth2/authorize`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...formFields(html), decision: 'approve' }).toString(),
      });
      assert.equal(approved.status, 303, await approved.text());
      const code = new URL(approved.headers.get('location') as string).searchParams.get('code') as string;
      const record = await issuer.store.getAuthorizationCode(sha256(code));
      assert.ok(record?.approvalSince != null && record.approvalSince < record.createdAt, 'dated by the sign-in, not the approval');
      // Another process records the subject's revocation for login sessions (the entry `tessera
      // revoke --subject` writes), after the sign-in: this server has not read it, and approved.
      const cli = SqliteStore.open({ path: join(issuer.dir, 'tessera.db') });
      const at = record.createdAt - 1;
      await cli.appendRevocations([
        { kind: 'subject', value: 'stale-session-user', issuer: `${issuer.url}#login-sessions`, at, expiresAt: at + 600 },
      ]);
      await cli.close();
      const token = await issuer.post('/oauth2/token', {
        grant_type: 'authorization_code',
        code,
        redirect_uri: REDIRECT,
        code_verifier: pkce.verifier,
        client_id: 'mcp-app',
      });
      const body = (await token.json()) as { error?: string; access_token?: string };
      assert.equal(token.status, 400);
      assert.equal(body.error, 'invalid_grant');
      assert.equal(body.access_token, undefined);
      assert.equal((await issuer.store.getAuthorizationCode(sha256(code)))?.grantId, null, 'no grant');
    } finally {
      skew = 0;
    }
  });

  it('sign out: GET only shows a button; a POST from this server ends the session, audited; the next authorize sends to login', async () => {
    const browser = await signedIn();
    const consent = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
    assert.match(await consent.text(), new RegExp(`<form method="post" action="${issuer.url}/oauth2/logout">`));
    const shown = await browser.fetch(`${issuer.url}/oauth2/logout`);
    assert.equal(shown.status, 200);
    assert.deepEqual(shown.headers.getSetCookie(), [], 'a GET (a link, an image) signs no one out');
    assert.ok(browser.jar.has('tessera-session'));
    const foreign = await browser.fetch(`${issuer.url}/oauth2/logout`, { method: 'POST', headers: { origin: 'https://evil.test' } });
    assert.equal(foreign.status, 400);
    assert.ok(browser.jar.has('tessera-session'), 'a cross-site post signs no one out');
    // A sandboxed frame on another site posts with Origin: null.
    const sandboxed = await browser.fetch(`${issuer.url}/oauth2/logout`, {
      method: 'POST',
      headers: { origin: 'null', 'sec-fetch-site': 'cross-site' },
    });
    assert.equal(sandboxed.status, 400);
    assert.ok(browser.jar.has('tessera-session'), 'nor does a sandboxed cross-site frame');
    // Nor an opaque origin in a browser without Fetch Metadata: this server's own pages post with
    // their real Origin (Referrer-Policy: same-origin), so Origin: null alone is foreign.
    const opaque = await browser.fetch(`${issuer.url}/oauth2/logout`, { method: 'POST', headers: { origin: 'null' } });
    assert.equal(opaque.status, 400);
    assert.ok(browser.jar.has('tessera-session'), 'nor does an opaque origin without Fetch Metadata');
    assert.equal(shown.headers.get('referrer-policy'), 'same-origin', 'the sign-out page posts with its real Origin');
    const out = await browser.fetch(`${issuer.url}/oauth2/logout`, {
      method: 'POST',
      headers: { origin: 'null', 'sec-fetch-site': 'same-origin' },
    });
    assert.equal(out.status, 200);
    assert.equal(browser.jar.has('tessera-session'), false, 'the session cookie is cleared');
    await issuer.service.audit.flush();
    const events = await issuer.store.queryAudit({ limit: 10_000 });
    assert.deepEqual(
      events.filter((e) => e.kind === 'login.signed_out').map((e) => e.subject),
      ['rogue-user'],
    );
    const next = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
    assert.equal(next.status, 303);
    assert.ok((next.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
  });

  it('attack: a copy of the session cookie taken before sign-out is no session afterwards, at this instance and at another sharing the store (login_session_ended)', async () => {
    const browser = await signedIn();
    assert.equal((await browser.fetch(authorizeUrl(issuer, pkcePair().challenge))).status, 200, 'the consent page, before');
    // Another instance of the same deployment: same master key, same store.
    const other = await startIssuer({
      config: { token_service: { authorization: oidcConfig(rogue.url) } } as never,
      dir: issuer.dir,
      master: issuer.master,
    });
    try {
      assert.equal((await browser.fetch(authorizeUrl(other, pkcePair().challenge))).status, 200, 'signed in there too');
      const copy = browser.jar.get('tessera-session') as string;
      const thief = new Browser();
      thief.jar.set('tessera-session', copy);
      const shown = await thief.fetch(authorizeUrl(issuer, pkcePair().challenge));
      const form = await shown.text();
      assert.equal(shown.status, 200, 'the copy works before the sign-out');
      const out = await browser.fetch(`${issuer.url}/oauth2/logout`, { method: 'POST', headers: { 'sec-fetch-site': 'same-origin' } });
      assert.equal(out.status, 200);
      assert.equal(browser.jar.has('tessera-session'), false);
      // The copy, replayed from elsewhere (the cookie is unchanged and its MAC still verifies).
      for (const at of [issuer, other]) {
        const before = (await audit(at)).length;
        const res = await thief.fetch(authorizeUrl(at, pkcePair().challenge));
        assert.equal(res.status, 303, 'sent to log in, not shown a consent page');
        assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
        assert.deepEqual((await audit(at)).slice(before), ['login_session_ended']);
      }
      await issuer.service.audit.flush();
      const refused = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.reason === 'login_session_ended');
      assert.ok(refused.length >= 1 && refused.every((e) => e.subject === 'rogue-user'), 'names whose session was refused');
      // Nor does the copy answer a consent page it was shown before the sign-out, at either instance.
      for (const at of [issuer, other]) {
        const approved = await thief.fetch(`${at.url}/oauth2/authorize`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ ...formFields(form), decision: 'approve' }).toString(),
        });
        await expectPage(approved, 403);
      }
      // Signing in again is a new session, which the sign-out does not cover.
      const again = await signedIn();
      assert.equal((await again.fetch(authorizeUrl(issuer, pkcePair().challenge))).status, 200);
    } finally {
      await other.close();
    }
  });

  /** An authorization request to `on` with `extra` parameters (prompt, max_age). */
  const requestWith = (extra: Record<string, string>, on: RunningIssuer = issuer) =>
    authorizationRequest(`${on.url}/oauth2/authorize`, {
      redirect_uri: REDIRECT,
      code_challenge: pkcePair().challenge,
      resource: API,
      state: 'client-state',
      ...extra,
    });

  /** Sign in at the upstream for the login `res` (a 303 to it) started at `to`; the 303 back to the authorization request. */
  async function loginThrough(browser: Browser, res: Response, to: RunningIssuer = issuer): Promise<Response> {
    const up = new URL(res.headers.get('location') as string);
    // Issued by the upstream's clock as this server's test clock reads it (skew), not the real one.
    const at = Math.floor((Date.now() + skew) / 1000);
    rogue.idToken = () =>
      new SignJWT({ sub: 'rogue-user', nonce: up.searchParams.get('nonce'), email: 'rogue@example.com', auth_time: at })
        .setProtectedHeader({ alg: 'ES256', kid: rogue.kid })
        .setIssuer(rogue.url)
        .setAudience(UPSTREAM_CLIENT)
        .setIssuedAt(at)
        .setExpirationTime(at + 300)
        .sign(rogue.key);
    const back = await callback(browser, up.searchParams.get('state') as string, undefined, to);
    assert.equal(back.status, 303, await back.clone().text());
    return back;
  }

  it('prompt=login (OIDC Core §3.1.2.1): a valid session signs in afresh, the upstream is asked for prompt=login too, and the request then shows its page (no loop)', async () => {
    const browser = await signedIn();
    const url = requestWith({ prompt: 'login' });
    const res = await browser.fetch(url);
    assert.equal(res.status, 303, 'sent to sign in, not shown the page');
    const up = new URL(res.headers.get('location') as string);
    assert.ok(up.href.startsWith(`${rogue.url}/authorize?`));
    assert.equal(up.searchParams.get('prompt'), 'login', 'the upstream re-authenticates, not a silent SSO');
    const back = await loginThrough(browser, res);
    assert.equal(back.headers.get('location'), url, 'back to the very request');
    const page = await browser.fetch(url);
    const html = await page.text();
    assert.equal(page.status, 200, 'the fresh sign-in answers the prompt: the page, not another login');
    const approved = await browser.fetch(`${issuer.url}/oauth2/authorize`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ ...formFields(html), decision: 'approve' }).toString(),
    });
    assert.equal(approved.status, 303, await approved.text());
    assert.ok(new URL(approved.headers.get('location') as string).searchParams.get('code'));
    // Another request with prompt=login asks again; one without it is answered by the session.
    assert.equal((await browser.fetch(requestWith({ prompt: 'login' }))).status, 303);
    assert.equal((await browser.fetch(requestWith({}))).status, 200);
  });

  it('max_age: a session older than max_age seconds signs in afresh; a younger one is used', async () => {
    const browser = await signedIn();
    skew = 120_000;
    try {
      assert.equal((await browser.fetch(requestWith({ max_age: '300' }))).status, 200, 'a 2-minute-old session within 300 s');
      const url = requestWith({ max_age: '60' });
      const res = await browser.fetch(url);
      assert.equal(res.status, 303, 'older than 60 s: sign in again');
      assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
      await loginThrough(browser, res);
      assert.equal((await browser.fetch(url)).status, 200, 'the fresh session answers it');
      assert.equal((await browser.fetch(requestWith({ max_age: '60' }))).status, 200, 'and the next one within 60 s');
      assert.equal((await browser.fetch(requestWith({ max_age: '0' }))).status, 303, 'max_age=0 is prompt=login');
    } finally {
      skew = 0;
    }
  });

  it('attack: a prompt=login or max_age request replayed later in the session is not answered by the sign-in made for it (its digest holds only on the way back from that sign-in)', async () => {
    for (const extra of [{ prompt: 'login' }, { max_age: '60' }, { max_age: '0' }] as Record<string, string>[]) {
      const browser = await signedIn();
      const url = requestWith(extra);
      // Two minutes after that sign-in: too old for max_age=60.
      skew = 120_000;
      try {
        const res = await browser.fetch(url);
        assert.equal(res.status, 303, JSON.stringify(extra));
        await loginThrough(browser, res);
        assert.equal((await browser.fetch(url)).status, 200, 'on its way back from the sign-in: the page');
        // The very same query (its state, its PKCE challenge) 5 minutes on, the session still valid.
        skew = 420_000;
        const replay = await browser.fetch(url);
        assert.equal(replay.status, 303, `${JSON.stringify(extra)}: a 5-minute-old sign-in is not fresh for it any more`);
        assert.ok((replay.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
      } finally {
        skew = 0;
      }
    }
  });

  it('oidc.return_window: a sign-in answers the request it was made for on its way back within the window only; at 2 s, a return 3 s after it is treated as expired (sent to sign in again), within 1 s it is answered; the 60 s default still answers at 3 s', async () => {
    const short = await startLoginIssuer(rogue.url, { oidc: { return_window: 2 }, clock: () => Date.now() + skew, master: issuer.master });
    /** Sign in at `at` for a prompt=login request there; then `later` ms on, that request's answer. */
    const returnAfter = async (at: RunningIssuer, later: number): Promise<Response> => {
      const browser = new Browser();
      const first = await browser.fetch(authorizeUrl(at, pkcePair().challenge));
      const p = new URL(first.headers.get('location') as string).searchParams;
      rogue.idToken = () => idToken({ nonce: p.get('nonce'), email: 'rogue@example.com' });
      const signIn = await callback(browser, p.get('state') as string, 'c', at);
      assert.equal(signIn.status, 303, await signIn.text());
      const url = requestWith({ prompt: 'login' }, at);
      const res = await browser.fetch(url);
      assert.equal(res.status, 303, 'prompt=login: sent to sign in afresh');
      const back = await loginThrough(browser, res, at);
      assert.equal(back.headers.get('location'), url, 'back to the very request');
      // The test clock moves on (no real sleep): the sign-in is `later` ms old when the request returns.
      skew += later;
      return browser.fetch(url);
    };
    try {
      const expired = await returnAfter(short, 3_000);
      assert.equal(expired.status, 303, 'past the 2 s window: not answered by that sign-in');
      assert.ok((expired.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`), 'sent to sign in again');
      skew = 0;
      assert.equal((await returnAfter(short, 1_000)).status, 200, 'within the 2 s window: the page');
      skew = 0;
      assert.equal((await returnAfter(issuer, 3_000)).status, 200, 'the 60 s default: the page at 3 s');
    } finally {
      skew = 0;
      await short.close();
    }
  });

  /** At `at`, from a browser with no session, the request with `extra` (prompt, max_age), signed in for: the browser and the request's URL. */
  async function signInFor(at: RunningIssuer, extra: Record<string, string>): Promise<{ browser: Browser; url: string }> {
    const browser = new Browser();
    const url = authorizationRequest(`${at.url}/oauth2/authorize`, {
      redirect_uri: REDIRECT,
      code_challenge: pkcePair().challenge,
      resource: API,
      state: 'client-state',
      ...extra,
    });
    const res = await browser.fetch(url);
    assert.equal(res.status, 303, 'sent to sign in');
    const back = await loginThrough(browser, res, at);
    assert.equal(back.headers.get('location'), url, 'back to the very request');
    return { browser, url };
  }

  /** `res` sends the browser to sign in at the upstream, asking it for `asked` (its prompt, max_age). */
  function sentToSignIn(res: Response, asked: Record<string, string>, message: string): void {
    assert.equal(res.status, 303, message);
    const up = new URL(res.headers.get('location') as string);
    assert.ok(up.href.startsWith(`${rogue.url}/authorize?`), message);
    for (const [name, value] of Object.entries(asked)) assert.equal(up.searchParams.get(name), value, `${message}: ${name}`);
  }

  it('attack: a max_age=30 request reloaded 45 s after the sign-in made for it (return_window 600) is not answered by that sign-in: the person signs in again', async () => {
    const long = await startLoginIssuer(rogue.url, { oidc: { return_window: 600 }, clock: () => Date.now() + skew, master: issuer.master });
    try {
      const { browser, url } = await signInFor(long, { max_age: '30' });
      assert.equal((await browser.fetch(url)).status, 200, 'on its way back from the sign-in: the page');
      // The test clock moves on (no real sleep): the sign-in is 45 s old, older than max_age.
      skew = 45_000;
      sentToSignIn(await browser.fetch(url), { prompt: 'login', max_age: '30' }, 'the same request 45 s on: signed in again');
      // Still within max_age, a reload is answered by the session as any request is (OIDC Core §3.1.2.1).
      skew = 0;
      const again = await signInFor(long, { max_age: '30' });
      assert.equal((await again.browser.fetch(again.url)).status, 200);
      skew = 20_000;
      assert.equal((await again.browser.fetch(again.url)).status, 200, 'reloaded 20 s on, within max_age=30: the page');
    } finally {
      skew = 0;
      await long.close();
    }
  });

  it('attack: a max_age=0 request reloaded after its single round trip is not answered by the sign-in made for it; the round trip itself completes, also at another instance sharing the store whose clock is 90 s ahead (return_window 120)', async () => {
    const config = { token_service: { authorization: oidcConfig(rogue.url, { return_window: 120 }) } } as never;
    const a = await startLoginIssuer(rogue.url, { oidc: { return_window: 120 }, clock: () => Date.now() + skew, master: issuer.master });
    const b = await startIssuer({ config, dir: a.dir, master: a.master, clock: () => Date.now() + skew + 90_000 });
    try {
      // The round trip at one instance: the page; the same request loaded again at once, at either: a new sign-in.
      const here = await signInFor(a, { max_age: '0' });
      assert.equal((await here.browser.fetch(here.url)).status, 200, 'max_age=0: its round trip completes');
      for (const at of [a, b]) {
        sentToSignIn(
          await here.browser.fetch(here.url.replace(a.url, at.url)),
          { prompt: 'login', max_age: '0' },
          `reloaded at once (${at === a ? 'same' : 'other'} instance): signed in again`,
        );
      }
      // The callback at one instance, the way back at the other (90 s ahead): answered there, once.
      const there = await signInFor(a, { max_age: '0' });
      assert.equal((await there.browser.fetch(there.url.replace(a.url, b.url))).status, 200, 'answered at the instance 90 s ahead');
      sentToSignIn(await there.browser.fetch(there.url), { prompt: 'login', max_age: '0' }, 'then reloaded at the first: signed in again');
    } finally {
      skew = 0;
      await b.close();
      await a.close();
    }
  });

  it('attack: a prompt=login request reloaded after the page its fresh sign-in answered (return_window 600) asks for a new sign-in: one sign-in answers one authorization response, also for two loads at once; the page’s form still approves', async () => {
    const long = await startLoginIssuer(rogue.url, { oidc: { return_window: 600 }, clock: () => Date.now() + skew, master: issuer.master });
    try {
      const { browser, url } = await signInFor(long, { prompt: 'login' });
      const page = await browser.fetch(url);
      const html = await page.text();
      assert.equal(page.status, 200, 'on its way back from the sign-in: the page');
      skew = 5_000;
      sentToSignIn(await browser.fetch(url), { prompt: 'login' }, 'the same request reloaded 5 s on: signed in again');
      // The form of the page that sign-in answered still approves (judged as of that page).
      const approved = await browser.fetch(`${long.url}/oauth2/authorize`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...formFields(html), decision: 'approve' }).toString(),
      });
      assert.equal(approved.status, 303, await approved.clone().text());
      assert.ok(new URL(approved.headers.get('location') as string).searchParams.get('code'));
      // Two loads of the request at once on its way back: one answered, the other sent to sign in.
      skew = 0;
      const twice = await signInFor(long, { prompt: 'login' });
      const both = await Promise.all([twice.browser.fetch(twice.url), twice.browser.fetch(twice.url)]);
      assert.deepEqual(both.map((r) => r.status).sort(), [200, 303]);
    } finally {
      skew = 0;
      await long.close();
    }
  });

  it('prompt=login and max_age are judged when the consent page was shown: its form answered minutes later (within consent_ttl) still approves', async () => {
    const approve = (browser: Browser, html: string) =>
      browser.fetch(`${issuer.url}/oauth2/authorize`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...formFields(html), decision: 'approve' }).toString(),
      });
    const codeOf = async (res: Response) => {
      assert.equal(res.status, 303, await res.clone().text());
      return new URL(res.headers.get('location') as string).searchParams.get('code');
    };
    // prompt=login: the page right after the fresh sign-in, approved 5 minutes later.
    const browser = await signedIn();
    const url = requestWith({ prompt: 'login' });
    await loginThrough(browser, await browser.fetch(url));
    const page = await browser.fetch(url);
    const html = await page.text();
    assert.equal(page.status, 200);
    skew = 300_000;
    try {
      assert.ok(await codeOf(await approve(browser, html)), 'prompt=login: approved');
    } finally {
      skew = 0;
    }
    // max_age=300: a 250 s old session is shown the page; approved when it is 310 s old.
    const other = await signedIn();
    skew = 250_000;
    try {
      const shown = await other.fetch(requestWith({ max_age: '300' }));
      const form = await shown.text();
      assert.equal(shown.status, 200, 'within max_age: the page');
      skew = 310_000;
      assert.ok(await codeOf(await approve(other, form)), 'max_age: the answer to a page shown within it');
    } finally {
      skew = 0;
    }
  });

  it('attack: a provider that ignores prompt=login (or max_age) and answers from its own session (an old auth_time, or none) signs no one in: login_not_fresh, the login-failure page', async () => {
    /** An ID token for the login `up` asked for, with `auth_time` (none when undefined). */
    const answered = (up: URLSearchParams, authTime: number | undefined) => () =>
      idToken({ nonce: up.get('nonce'), email: 'rogue@example.com', ...(authTime !== undefined ? { auth_time: authTime } : {}) });
    const now = () => Math.floor((Date.now() + skew) / 1000);
    // A fresh sign-in asked for with a session here (prompt=login), and with none at all (prompt=login, max_age=0).
    for (const fresh of [true, false]) {
      for (const authTime of [undefined, now() - 3600, now() - 120]) {
        const browser = fresh ? await signedIn() : new Browser();
        const url = requestWith(fresh ? { prompt: 'login' } : { max_age: '0' });
        const res = await browser.fetch(url);
        assert.equal(res.status, 303);
        const up = new URL(res.headers.get('location') as string).searchParams;
        assert.equal(up.get('prompt'), 'login', 'the upstream is asked to re-authenticate, session here or not');
        assert.equal(up.get('max_age'), '0', 'and max_age=0, so that its ID token must carry auth_time');
        const session = browser.jar.get('tessera-session');
        rogue.idToken = answered(up, authTime);
        const before = (await audit(issuer)).length;
        const html = await expectPage(await callback(browser, up.get('state') as string), 403);
        assert.match(html, /Signing in did not complete/);
        assert.deepEqual((await audit(issuer)).slice(before), ['login_not_fresh'], String(authTime));
        const refused = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.reason === 'login_not_fresh').at(-1);
        assert.equal(refused?.detail?.claim, 'auth_time', 'the audit detail names the claim');
        assert.equal(browser.jar.get('tessera-session'), session, 'no new session');
        assert.equal((await browser.fetch(url)).status, 303, 'the request is not answered: sign in again');
      }
    }
    // max_age=600 and no session here: the provider's sign-in may be up to 600 s old (it was sent max_age=600).
    for (const [age, ok] of [
      [900, false],
      [300, true],
    ] as const) {
      const browser = new Browser();
      const res = await browser.fetch(requestWith({ max_age: '600' }));
      const up = new URL(res.headers.get('location') as string).searchParams;
      assert.equal(up.get('max_age'), '600');
      assert.equal(up.get('prompt'), null, 'no session here to be too old: the provider judges its own by max_age');
      rogue.idToken = answered(up, now() - age);
      const back = await callback(browser, up.get('state') as string);
      assert.equal(back.status, ok ? 303 : 403, String(age));
      await back.body?.cancel();
    }
    // A re-authentication this very moment, or a few seconds off by the provider's clock (30 s leeway): signed in.
    for (const offset of [0, -20, 20]) {
      const browser = await signedIn();
      const url = requestWith({ prompt: 'login' });
      const up = new URL((await browser.fetch(url)).headers.get('location') as string).searchParams;
      rogue.idToken = answered(up, now() + offset);
      const back = await callback(browser, up.get('state') as string);
      assert.equal(back.status, 303, String(offset));
      assert.equal((await browser.fetch(url)).status, 200, String(offset));
    }
    // A login asking for nothing fresh needs no auth_time.
    const browser = new Browser();
    const up = new URL((await browser.fetch(requestWith({}))).headers.get('location') as string).searchParams;
    assert.equal(up.get('prompt'), null);
    assert.equal(up.get('max_age'), null);
    rogue.idToken = answered(up, undefined);
    assert.equal((await callback(browser, up.get('state') as string)).status, 303);
  });

  it('attack: prompt=none never sends its error to an unregistered redirect URI (a page, no Location); a signed-out copy of a session gets login_required at the registered one (state, iss), and no login starts', async () => {
    const evil = await new Browser().fetch(requestWith({ prompt: 'none', redirect_uri: 'https://evil.test/cb' }));
    await expectPage(evil, 400);
    const browser = await signedIn();
    const thief = new Browser();
    thief.jar.set('tessera-session', browser.jar.get('tessera-session') as string);
    const out = await browser.fetch(`${issuer.url}/oauth2/logout`, { method: 'POST', headers: { 'sec-fetch-site': 'same-origin' } });
    assert.equal(out.status, 200);
    const res = await thief.fetch(requestWith({ prompt: 'none' }));
    assert.equal(res.status, 303);
    const to = new URL(res.headers.get('location') as string);
    assert.equal(`${to.origin}${to.pathname}`, REDIRECT);
    assert.equal(to.searchParams.get('error'), 'login_required');
    assert.equal(to.searchParams.get('state'), 'client-state');
    assert.equal(to.searchParams.get('iss'), issuer.url);
    assert.equal(thief.jar.has('tessera-login'), false, 'no login started');
  });

  it('sign-out records the session once, until the session would have ended, and that record is pruned then; no session id or cookie value in the audit trail or the log', async () => {
    const browser = await signedIn();
    const cookie = browser.jar.get('tessera-session') as string;
    const claims = JSON.parse(Buffer.from(cookie.split('.')[0] as string, 'base64url').toString()) as { d: string; e: number };
    const headers = { 'sec-fetch-site': 'same-origin', cookie: `tessera-session=${cookie}` };
    // Signing out again with copies of the cookie, some at once: nothing more is written.
    for (const n of [1, 5, 1]) {
      const all = await Promise.all(Array.from({ length: n }, () => fetch(`${issuer.url}/oauth2/logout`, { method: 'POST', headers })));
      for (const r of all) assert.equal(r.status, 200, await r.text());
    }
    const entries = (await issuer.store.revocationsSince(0, 0, 100_000)).filter((e) => e.value === claims.d);
    assert.equal(entries.length, 1, 'one entry for one session');
    assert.equal(entries[0]?.kind, 'token');
    assert.equal(entries[0]?.issuer, `${issuer.url}#login-sessions`);
    assert.equal(entries[0]?.expiresAt, claims.e + 60, 'kept until the session would have ended (and the skew)');
    assert.equal(await issuer.store.tokenRevoked(claims.d), true);
    await issuer.store.prune(claims.e + 61);
    assert.equal(await issuer.store.tokenRevoked(claims.d), false, 'pruned once the cookie could no longer be used anyway');
    await issuer.service.audit.flush();
    const events = JSON.stringify(await issuer.store.queryAudit({ limit: 10_000 }));
    for (const secret of [cookie, cookie.split('.')[1] as string, claims.d]) assert.ok(!events.includes(secret), 'audit');
  });

  it('attack: max_age is measured from the sign-in at the provider (its auth_time), not from when this server took its answer: an SSO session 50 minutes old is not "signed in 0 s ago"', async () => {
    const now = () => Math.floor((Date.now() + skew) / 1000);
    const browser = new Browser();
    const up = new URL((await browser.fetch(requestWith({}))).headers.get('location') as string).searchParams;
    // A plain login, answered by the provider from its own session, signed in 50 minutes ago.
    rogue.idToken = () => idToken({ nonce: up.get('nonce'), email: 'rogue@example.com', auth_time: now() - 3000 });
    assert.equal((await callback(browser, up.get('state') as string)).status, 303);
    assert.equal((await browser.fetch(requestWith({ max_age: '3600' }))).status, 200, 'within an hour');
    const url = requestWith({ max_age: '600' });
    const res = await browser.fetch(url);
    assert.equal(res.status, 303, 'older than 600 s at the provider: sign in again');
    const again = new URL(res.headers.get('location') as string).searchParams;
    assert.equal(again.get('max_age'), '600');
    rogue.idToken = () => idToken({ nonce: again.get('nonce'), email: 'rogue@example.com', auth_time: now() - 5 });
    assert.equal((await callback(browser, again.get('state') as string)).status, 303);
    assert.equal((await browser.fetch(url)).status, 200, 'the fresh sign-in answers it');
  });

  it('prompt=none: never a page; login_required or consent_required back to the client with state and iss (RFC 9207)', async () => {
    const errorOf = (res: Response) => {
      assert.equal(res.status, 303);
      const to = new URL(res.headers.get('location') as string);
      assert.equal(`${to.origin}${to.pathname}`, REDIRECT);
      assert.equal(to.searchParams.get('state'), 'client-state');
      assert.equal(to.searchParams.get('iss'), issuer.url);
      return to.searchParams.get('error');
    };
    const before = (await audit(issuer)).length;
    const stranger = new Browser();
    assert.equal(errorOf(await stranger.fetch(requestWith({ prompt: 'none' }))), 'login_required', 'no session: no login page');
    assert.equal(stranger.jar.has('tessera-login'), false, 'no login started');
    const browser = await signedIn();
    // Signed in, but nothing remembered (remember_consent is off): the page would be needed.
    assert.equal(errorOf(await browser.fetch(requestWith({ prompt: 'none' }))), 'consent_required');
    skew = 120_000;
    try {
      assert.equal(errorOf(await browser.fetch(requestWith({ prompt: 'none', max_age: '60' }))), 'login_required', 'too old for max_age');
    } finally {
      skew = 0;
    }
    assert.deepEqual((await audit(issuer)).slice(before), [
      'authorize_login_required',
      'authorize_consent_required',
      'authorize_login_required',
    ]);
  });

  it('prompt=none with another value, an unknown spelling of max_age, or either repeated: invalid_request back to the client', async () => {
    const browser = await signedIn();
    const cases: Record<string, string>[] = [
      { prompt: 'none login' },
      { prompt: 'consent none' },
      { max_age: '-1' },
      { max_age: '1.5' },
      { max_age: 'soon' },
    ];
    for (const extra of cases) {
      const res = await browser.fetch(requestWith(extra));
      assert.equal(res.status, 303, JSON.stringify(extra));
      const to = new URL(res.headers.get('location') as string);
      assert.equal(to.searchParams.get('error'), 'invalid_request', JSON.stringify(extra));
      assert.equal(to.searchParams.get('state'), 'client-state');
    }
    for (const repeated of ['prompt=login&prompt=login', 'max_age=5&max_age=5']) {
      const res = await browser.fetch(`${requestWith({})}&${repeated}`);
      assert.equal(new URL(res.headers.get('location') as string).searchParams.get('error'), 'invalid_request', repeated);
    }
  });

  it('RFC 8414 metadata advertises prompt_values_supported (OpenID Connect Prompt Create §4.2)', async () => {
    const res = await fetch(`${issuer.url}/.well-known/oauth-authorization-server`);
    const body = (await res.json()) as { prompt_values_supported?: string[] };
    assert.deepEqual(body.prompt_values_supported, ['none', 'login', 'consent']);
  });

  it('a tampered session cookie (another subject, or a forged MAC) signs no one in', async () => {
    const browser = await signedIn();
    const [body, mac] = (browser.jar.get('tessera-session') as string).split('.') as [string, string];
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    const forged = Buffer.from(JSON.stringify({ ...claims, s: 'admin' })).toString('base64url');
    for (const value of [`${forged}.${mac}`, `${body}.${mac.slice(0, -2)}AA`]) {
      browser.jar.set('tessera-session', value);
      const before = (await audit(issuer)).length;
      const res = await browser.fetch(authorizeUrl(issuer, pkcePair().challenge));
      assert.equal(res.status, 303, 'sent to log in, not shown a consent page');
      assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
      assert.deepEqual((await audit(issuer)).slice(before), ['login_session_invalid']);
    }
  });

  it('upstream switched: a session signed in at the former provider (same master key, same sub) signs no one in at the new one', async () => {
    // sub is only unique per issuer (OIDC Core §2): the former provider's "rogue-user" may be
    // someone else at the new one. Narrowing allowed_domains likewise ends the sessions it excludes.
    const browser = await signedIn();
    const other = await startRogueProvider();
    const moved = await startLoginIssuer(other.url, { master: issuer.master });
    const narrowed = await startLoginIssuer(rogue.url, { oidc: { allowed_domains: ['corp.example'] }, master: issuer.master });
    const same = await startLoginIssuer(rogue.url, { master: issuer.master });
    try {
      assert.equal((await browser.fetch(authorizeUrl(same, pkcePair().challenge))).status, 200, 'same upstream: still signed in');
      for (const [next, upstream] of [
        [moved, other.url],
        [narrowed, rogue.url],
      ] as const) {
        const res = await browser.fetch(authorizeUrl(next, pkcePair().challenge));
        assert.equal(res.status, 303, 'sent to log in, not shown a consent page');
        assert.ok((res.headers.get('location') as string).startsWith(`${upstream}/authorize?`));
      }
    } finally {
      await Promise.all([moved.close(), narrowed.close(), same.close()]);
      await other.close();
    }
  });

  it('session lifetime: a session_ttl shortened since the sign-in (say, after an incident) shortens the sessions already signed in', async () => {
    // Signed in under session_ttl 10m (its cookie says so); the configuration now says 2m.
    const browser = await signedIn();
    const later = (ms: number) => () => Date.now() + ms;
    const within = await startLoginIssuer(rogue.url, { oidc: { session_ttl: '2m' }, clock: later(60_000), master: issuer.master });
    const past = await startLoginIssuer(rogue.url, { oidc: { session_ttl: '2m' }, clock: later(180_000), master: issuer.master });
    try {
      assert.equal((await browser.fetch(authorizeUrl(within, pkcePair().challenge))).status, 200, 'within 2m: still signed in');
      const res = await browser.fetch(authorizeUrl(past, pkcePair().challenge));
      assert.equal(res.status, 303, 'past 2m: sent to log in, not shown a consent page');
      assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
    } finally {
      await Promise.all([within.close(), past.close()]);
    }
  });

  it('the login session is not a bearer token: the admin API refuses it', async () => {
    const browser = await signedIn();
    const session = browser.jar.get('tessera-session') as string;
    const res = await fetch(`${issuer.url}/oauth2/admin/grants/x`, { headers: { authorization: `Bearer ${session}` } });
    assert.equal(res.status, 401);
  });

  it('a consent form posted without a session is refused as a page (a POST never starts a login)', async () => {
    const browser = new Browser();
    const res = await browser.fetch(`${issuer.url}/oauth2/authorize`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        request: new URL(authorizeUrl(issuer, pkcePair().challenge)).search.slice(1),
        csrf: 'x',
        decision: 'approve',
      }).toString(),
    });
    await expectPage(res, 403);
    assert.equal(res.headers.get('www-authenticate'), null);
  });

  it('no client secret, code, ID token or cookie value in audit events, pages or Set-Cookie of errors', async () => {
    const browser = new Browser();
    const p = await begin(browser);
    const secretToken = await idToken({ nonce: 'wrong-nonce' });
    rogue.idToken = () => secretToken;
    const stateCookie = browser.jar.get('tessera-login') as string;
    const page = await (await callback(browser, p.get('state') as string, 'CODE-SECRET-123')).text();
    await issuer.service.audit.flush();
    const events = JSON.stringify(await issuer.store.queryAudit({ limit: 10_000 }));
    for (const secret of [UPSTREAM_SECRET, 'CODE-SECRET-123', secretToken, stateCookie, secretToken.split('.')[2] as string]) {
      assert.ok(!events.includes(secret), 'audit');
      assert.ok(!page.includes(secret), 'page');
    }
  });
});

describe('cookies on an https issuer', () => {
  it('are __Host- prefixed, Secure, HttpOnly, SameSite=Lax, Path=/', async () => {
    const rogue = await startRogueProvider();
    try {
      const { createOidcAuthenticator } = await import('../../src/server/oidc-authenticator.ts');
      const { createSecretKey, randomBytes } = await import('node:crypto');
      const auth = createOidcAuthenticator(
        {
          issuer: rogue.url,
          client_id: UPSTREAM_CLIENT,
          client_secret: UPSTREAM_SECRET,
          scopes: ['openid'],
          subject_claim: 'sub',
          session_ttl: 600,
          login_ttl: 300,
        },
        {
          tesseraIssuer: 'https://auth.example.com',
          keys: { state: createSecretKey(randomBytes(32)), session: createSecretKey(randomBytes(32)) },
          store: { useOnce: async () => true },
          now: () => Math.floor(Date.now() / 1000),
        },
      );
      const to = await auth.login.start('client_id=x');
      assert.equal(new URL(to.location).searchParams.get('redirect_uri'), 'https://auth.example.com/oauth2/login/callback');
      assert.match(
        to.cookies[0] as string,
        /^__Host-tessera-login=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=300$/,
      );
      // The http cookie name is not read on https (no downgrade by a plain-http page setting it).
      assert.deepEqual(auth.authenticate({ headers: { cookie: 'tessera-session=x.y' }, remoteAddress: undefined }), {
        ok: false,
        reason: 'session_missing',
      });
      // Plain http elsewhere than loopback: no cookie could be Secure, so no login at all.
      const runtime = {
        keys: { state: createSecretKey(randomBytes(32)), session: createSecretKey(randomBytes(32)) },
        store: { useOnce: async () => true },
        now: () => Math.floor(Date.now() / 1000),
      };
      const options = { issuer: rogue.url, client_id: UPSTREAM_CLIENT, client_secret: UPSTREAM_SECRET, scopes: ['openid'] };
      assert.throws(
        () =>
          createOidcAuthenticator(
            { ...options, subject_claim: 'sub', session_ttl: 600, login_ttl: 300 },
            { ...runtime, tesseraIssuer: 'http://auth.example.com' },
          ),
        /https/,
      );
    } finally {
      await rogue.close();
    }
  });
});

const PG_URL = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgSkip = (await postgresReachable(PG_URL)) ? false : 'PostgreSQL is not reachable';

describe('sign-out on PostgreSQL, two instances sharing one schema', { skip: pgSkip }, () => {
  const schema = `tessera_login_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let rogue: RogueUpstream;
  let a: RunningIssuer;
  let b: RunningIssuer;

  before(async () => {
    rogue = await startRogueProvider();
    a = await startLoginIssuer(rogue.url, { store: await PostgresStore.open({ connectionString: PG_URL, schema }) });
    b = await startIssuer({
      store: await PostgresStore.open({ connectionString: PG_URL, schema }),
      master: a.master,
      config: { token_service: { issuer: a.url, authorization: oidcConfig(rogue.url) } } as never,
    });
  });
  after(async () => {
    await b?.close();
    await a?.close();
    await rogue?.close();
    await dropSchema(PG_URL, schema);
  });

  it('attack: a session signed out at one instance is no session at the other, for a page or a form shown before; sign-outs at once with copies of one cookie record it once', async () => {
    const browser = new Browser();
    const start = await browser.fetch(authorizeUrl(a, pkcePair().challenge));
    const up = new URL(start.headers.get('location') as string).searchParams;
    rogue.idToken = () => rogueIdToken(rogue, { sub: 'pg-user', nonce: up.get('nonce') });
    const back = await browser.fetch(
      `${a.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: up.get('state') as string })}`,
    );
    assert.equal(back.status, 303, await back.text());
    const shown = await browser.fetch(authorizeUrl(a, pkcePair().challenge));
    const form = await shown.text();
    assert.equal(shown.status, 200, form);
    const cookie = browser.jar.get('tessera-session') as string;
    const id = (JSON.parse(Buffer.from(cookie.split('.')[0] as string, 'base64url').toString()) as { d: string }).d;
    const headers = { 'sec-fetch-site': 'same-origin', cookie: `tessera-session=${cookie}` };
    const outs = await Promise.all(Array.from({ length: 40 }, () => fetch(`${b.url}/oauth2/logout`, { method: 'POST', headers })));
    for (const r of outs) assert.equal(r.status, 200, await r.text());
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      const { rows } = await c.query(`SELECT count(*)::int AS n FROM ${schema}.revocations WHERE kind = 'token' AND value = $1`, [id]);
      assert.equal(rows[0].n, 1, 'one entry for one session, however many sign-outs raced');
    } finally {
      await c.end();
    }
    for (const at of [a, b]) {
      const res = await browser.fetch(authorizeUrl(at, pkcePair().challenge));
      assert.equal(res.status, 303, 'sent to log in');
      assert.ok((res.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
      const approved = await browser.fetch(`${at.url}/oauth2/authorize`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...formFields(form), decision: 'approve' }).toString(),
      });
      await expectPage(approved, 403);
    }
  });
});
