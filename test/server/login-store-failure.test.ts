/**
 * The login callback and sign-out (`/oauth2/login/callback`, `/oauth2/logout`) when the store fails,
 * with a real store that fails: PostgreSQL out of reach behind test/helpers/tcp-fault-proxy.ts
 * (connections reset), and a SQLite store closed under the running server. A person's browser
 * lands on these: the answer is an error page (503 with `Retry-After` for the store unavailable,
 * else 500, `Cache-Control: no-store`), as the authorization endpoint's before its redirect URI is
 * trusted, never the API endpoints' JSON, and it names no store detail nor any secret. The
 * callback's failure is audited as its refusals are (`authorization.denied`, `store_unavailable`);
 * a sign-out that failed signs no one out, not even in this browser (its cookies stay, so signing
 * out again once the store is back ends the session for good), and is audited as a failed
 * sign-out (`login.signed_out` with `decision: deny` and the error's code).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { authorizationRequest } from '../helpers/authorize.ts';
import type { RunningIssuer } from '../helpers/issuer.ts';
import { until } from '../helpers/net.ts';
import { API, beginLogin, loginCallbackUrl, REDIRECT, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, rogueIdToken, startRogueProvider, UPSTREAM_SECRET } from '../helpers/oidc-upstream.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { dropSchema, postgresReachable, storeBehindFaultProxy } from '../helpers/postgres.ts';
import type { FaultProxy } from '../helpers/tcp-fault-proxy.ts';

const PG_URL = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgSkip = (await postgresReachable(PG_URL)) ? false : 'PostgreSQL is not reachable';

/** A login begun at `issuer` in `browser`, the upstream's ID token ready: the callback URL that finishes it. */
async function begun(issuer: RunningIssuer, rogue: RogueUpstream, browser: Browser): Promise<string> {
  const up = await beginLogin(issuer, browser);
  rogue.idToken = () => rogueIdToken(rogue, { nonce: up.get('nonce'), email: 'rogue@example.com' });
  return loginCallbackUrl(issuer, up.get('state') as string);
}

const signOut = (issuer: RunningIssuer, browser: Browser, requestId?: string) =>
  browser.fetch(`${issuer.url}/oauth2/logout`, {
    method: 'POST',
    headers: { origin: new URL(issuer.url).origin, ...(requestId !== undefined ? { 'x-request-id': requestId } : {}) },
  });

/** An error page (never a redirect, never JSON) that names nothing of the store nor any secret: its status and text. */
async function failurePage(res: Response, browser: Browser): Promise<{ status: number; html: string }> {
  const html = await res.text();
  assert.equal(res.headers.get('location'), null, 'never redirected');
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/, html);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  assert.doesNotMatch(html, /postgres|sqlite|ECONNRESET|ECONNREFUSED|closed|database|store_unreachable/i);
  for (const value of browser.jar.values()) assert.ok(!html.includes(value), 'no cookie value on the page');
  assert.ok(!html.includes(UPSTREAM_SECRET));
  return { status: res.status, html };
}

describe('login callback and sign-out, PostgreSQL out of reach', { skip: pgSkip }, () => {
  const schema = `tessera_login_fail_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let proxy: FaultProxy;
  let rogue: RogueUpstream;
  let issuer: RunningIssuer;

  before(async () => {
    const behind = await storeBehindFaultProxy(PG_URL, schema);
    proxy = behind.proxy;
    rogue = await startRogueProvider();
    issuer = await startLoginIssuer(rogue.url, { store: behind.store });
  });
  after(async () => {
    proxy?.heal();
    await issuer?.close();
    await rogue?.close();
    await proxy?.close();
    await dropSchema(PG_URL, schema);
  });

  async function down<T>(fn: () => Promise<T>): Promise<T> {
    proxy.down();
    try {
      return await fn();
    } finally {
      proxy.reset();
      proxy.heal();
    }
  }

  it('the callback while PostgreSQL is down: a 503 error page with Retry-After (not JSON), no session begun, audited store_unavailable; the same callback once it is back signs in', async () => {
    const browser = new Browser();
    const callback = await begun(issuer, rogue, browser);
    const res = await down(() => browser.fetch(callback, { headers: { 'x-request-id': 'callback-down' } }));
    const { status, html } = await failurePage(res, browser);
    assert.equal(status, 503, html);
    assert.ok(res.headers.get('retry-after'), 'says when to try again');
    assert.ok(!browser.jar.has('tessera-session'), 'no session begun');
    assert.ok(browser.jar.has('tessera-login'), 'the login state is kept: its login was not spent');
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ limit: 1000 })).filter((e) => e.request_id === 'callback-down');
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason]),
      [['authorization.denied', 'store_unavailable']],
    );
    const again = await browser.fetch(callback);
    assert.equal(again.status, 303, await again.text());
    assert.ok(browser.jar.has('tessera-session'), 'signed in once the store is back');
  });

  it('attack: a sign-out while PostgreSQL is down: a 503 error page (not JSON, not "You are signed out"), the session cookie kept, audited as a failed sign-out (login.signed_out, deny, store_unavailable, with the subject), not as signed out; signing out again once it is back ends it', async () => {
    const browser = new Browser();
    assert.equal((await browser.fetch(await begun(issuer, rogue, browser))).status, 303);
    const copy = browser.cookieHeader();
    const res = await down(() => signOut(issuer, browser, 'sign-out-down'));
    const { status, html } = await failurePage(res, browser);
    assert.equal(status, 503, html);
    assert.ok(res.headers.get('retry-after'));
    assert.doesNotMatch(html, /signed out/i);
    assert.deepEqual(res.headers.getSetCookie(), [], 'the cookies stay: a sign-out the store did not record is none');
    const signedOut = () =>
      issuer.store
        .queryAudit({ limit: 1000 })
        .then((all) => all.filter((e) => e.kind === 'login.signed_out').map((e) => [e.request_id, e.decision, e.reason, e.subject]));
    // The first write (or read) after the outage may still meet a connection it broke: tried again.
    await until(async () => {
      await issuer.service.audit.flush();
      return (await signedOut().catch(() => [])).length > 0;
    }, 5000);
    assert.deepEqual(await signedOut(), [['sign-out-down', 'deny', 'store_unavailable', 'rogue-user']], 'the failure is on record');
    const out = await signOut(issuer, browser, 'sign-out-back');
    assert.equal(out.status, 200, await out.text());
    assert.equal(browser.jar.has('tessera-session'), false);
    await issuer.service.audit.flush();
    assert.deepEqual((await signedOut()).slice(1), [['sign-out-back', 'allow', 'ok', 'rogue-user']]);
    // A copy of the cookie taken before is no session afterwards: the sign-out was recorded.
    const replay = await fetch(
      authorizationRequest(`${issuer.url}/oauth2/authorize`, {
        redirect_uri: REDIRECT,
        code_challenge: pkcePair().challenge,
        resource: API,
      }),
      { headers: { cookie: copy }, redirect: 'manual' },
    );
    assert.equal(replay.status, 303);
    assert.ok((replay.headers.get('location') as string).startsWith(`${rogue.url}/authorize?`));
  });
});

describe('login callback and sign-out, SQLite store closed under the running server', () => {
  let rogue: RogueUpstream;
  let issuer: RunningIssuer;

  before(async () => {
    rogue = await startRogueProvider();
    issuer = await startLoginIssuer(rogue.url);
  });
  after(async () => {
    await issuer?.close();
    await rogue?.close();
  });

  it('the callback and a sign-out, the store gone: 500 error pages (server_error, not JSON), no session begun or ended', async () => {
    const signedIn = new Browser();
    assert.equal((await signedIn.fetch(await begun(issuer, rogue, signedIn))).status, 303);
    const browser = new Browser();
    const callback = await begun(issuer, rogue, browser);
    await issuer.store.close();
    const res = await browser.fetch(callback);
    assert.equal((await failurePage(res, browser)).status, 500);
    assert.equal(res.headers.get('retry-after'), null);
    assert.ok(!browser.jar.has('tessera-session'));
    const out = await signOut(issuer, signedIn);
    assert.equal((await failurePage(out, signedIn)).status, 500);
    assert.deepEqual(out.headers.getSetCookie(), []);
  });
});
