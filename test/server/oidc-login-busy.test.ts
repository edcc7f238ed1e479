/**
 * The login callback's token requests to the upstream provider, bounded: anyone can begin a login
 * (GET /oauth2/authorize for a public client) and call the callback with any code, and each call
 * makes one token request with Tessera's client secret, held up to the upstream timeout. At most
 * `oidc.max_token_requests_in_flight` are in flight at once; a callback past it is refused at once
 * with the login-failure page, 503 and Retry-After, audited `login_upstream_busy`, its login state
 * not spent (the same callback, reloaded, finishes once there is room).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RunningIssuer } from '../helpers/issuer.ts';
import { beginLogin, loginCallbackUrl, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, startRogueProvider } from '../helpers/oidc-upstream.ts';

const LIMIT = 3;

describe('token requests to the upstream provider in flight at once', () => {
  let rogue: RogueUpstream;
  let issuer: RunningIssuer;

  before(async () => {
    rogue = await startRogueProvider();
    issuer = await startLoginIssuer(rogue.url, { oidc: { max_token_requests_in_flight: LIMIT } });
  });
  after(async () => {
    await issuer?.close();
    await rogue?.close();
  });

  /** A browser whose login has begun; the callback URL that finishes it. */
  async function begun(): Promise<{ browser: Browser; callback: string }> {
    const browser = new Browser();
    const p = await beginLogin(issuer, browser);
    return { browser, callback: loginCallbackUrl(issuer, p.get('state') as string, 'any-code') };
  }

  it(`attack: ${LIMIT + 1} callbacks at once at a slow provider: the provider sees ${LIMIT}, the extra one is refused 503 with Retry-After at once, audited login_upstream_busy`, async () => {
    let release: () => void = () => {};
    rogue.tokenHold = new Promise<void>((r) => (release = r));
    rogue.idToken = () => 'not-a-jwt';
    const logins = await Promise.all(Array.from({ length: LIMIT + 1 }, () => begun()));
    const held = logins.slice(0, LIMIT).map((l) => l.browser.fetch(l.callback));
    // The held requests have reached the provider.
    for (let i = 0; i < 200 && rogue.tokenRequests.length < LIMIT; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(rogue.tokenRequests.length, LIMIT);

    const extra = logins[LIMIT] as { browser: Browser; callback: string };
    const refused = await extra.browser.fetch(extra.callback);
    const html = await refused.text();
    assert.equal(refused.status, 503, html);
    assert.equal(refused.headers.get('retry-after'), '5');
    assert.match(refused.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(refused.headers.get('location'), null);
    assert.equal(rogue.tokenRequests.length, LIMIT, 'the provider saw no more');
    assert.ok(extra.browser.jar.has('tessera-login'), 'the login state is kept: the callback can be reloaded');
    await issuer.service.audit.flush();
    const denials = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'authorization.denied');
    assert.deepEqual(
      denials.map((e) => e.reason),
      ['login_upstream_busy'],
    );

    release();
    rogue.tokenHold = undefined;
    for (const res of await Promise.all(held)) assert.equal(res.status, 403, 'answered: the ID token is no JWT');

    // Room again: the refused callback, reloaded, reaches the provider (its login state was kept, unspent).
    const again = await extra.browser.fetch(extra.callback);
    assert.equal(again.status, 403, 'its state was not spent: the code reached the provider');
    assert.equal(rogue.tokenRequests.length, LIMIT + 1);
  });
});
