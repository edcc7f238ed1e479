/**
 * The login callback, limited per connecting address (`oidc.callback_rate_limit`): anyone can
 * begin a login (GET /oauth2/authorize for a public client) and call the callback with any code,
 * and each callback whose login state verifies spends that state in the store and makes one token
 * request with Tessera's client secret. Bounded only by `max_token_requests_in_flight`, one address
 * could hold every slot (every other person's login refused `login_upstream_busy`) and have the
 * server send the provider as many token requests as it liked. Each address (an IPv6 address by its
 * /64, the connecting address as the token service's other buckets count it) has a bucket; past it,
 * the login-failure page, 429 with Retry-After, audited `login_rate_limited`, its login state kept
 * (reloaded after Retry-After, the same callback finishes the login).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { RunningIssuer } from '../helpers/issuer.ts';
import { beginLogin, loginCallbackUrl, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, rogueIdToken, startRogueProvider } from '../helpers/oidc-upstream.ts';

const BURST = 3;
/** Callbacks per second, sustained: one every 10 s. */
const RATE = 0.1;

/** GET `url` from the loopback address `localAddress` (another caller than 127.0.0.1), with `cookie`. */
function getFrom(
  localAddress: string,
  url: string,
  cookie: string,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress, headers: { cookie } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('login callbacks per connecting address', () => {
  let rogue: RogueUpstream;
  let issuer: RunningIssuer;
  let offset = 0;

  before(async () => {
    rogue = await startRogueProvider();
    issuer = await startLoginIssuer(rogue.url, {
      oidc: { callback_rate_limit: { enabled: true, rate: RATE, burst: BURST } },
      clock: () => Date.now() + offset,
    });
  });
  after(async () => {
    await issuer?.close();
    await rogue?.close();
  });

  /** A browser whose login has begun; the callback URL that finishes it, and the upstream request's nonce. */
  async function begun(code = 'any-code'): Promise<{ browser: Browser; callback: string; nonce: string }> {
    const browser = new Browser();
    const p = await beginLogin(issuer, browser);
    return { browser, callback: loginCallbackUrl(issuer, p.get('state') as string, code), nonce: p.get('nonce') as string };
  }

  it(`attack: one address floods the login callback: the provider sees ${BURST} token requests, the next callback is refused 429 with Retry-After and the login-failure page, audited login_rate_limited; another address still signs in, and the refused callback reloaded after Retry-After finishes`, async () => {
    rogue.idToken = () => 'not-a-jwt';
    // Beginning a login keeps nothing at the server (its state is the sealed cookie): not limited.
    const logins = [];
    for (let i = 0; i < BURST + 2; i++) logins.push(await begun());
    for (const l of logins.slice(0, BURST)) {
      const res = await l.browser.fetch(l.callback);
      assert.equal(res.status, 403, 'answered: the ID token is no JWT');
      await res.arrayBuffer();
    }
    assert.equal(rogue.tokenRequests.length, BURST);

    const extra = logins[BURST] as (typeof logins)[number];
    const refused = await extra.browser.fetch(extra.callback);
    const html = await refused.text();
    assert.equal(refused.status, 429, html);
    assert.equal(refused.headers.get('retry-after'), String(Math.ceil(1 / RATE)));
    assert.match(refused.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(refused.headers.get('cache-control'), 'no-store');
    assert.equal(refused.headers.get('location'), null);
    assert.match(html, /Too many sign-ins/);
    assert.doesNotMatch(html, /any-code|tessera-login/);
    assert.equal(rogue.tokenRequests.length, BURST, 'the provider saw no more');
    assert.ok(extra.browser.jar.has('tessera-login'), 'the login state is kept: the callback can be reloaded');

    // Replayed, the refused callback spends nothing more in the store either: still refused, still 429.
    const again = await extra.browser.fetch(extra.callback);
    await again.arrayBuffer();
    assert.equal(again.status, 429);
    assert.equal(rogue.tokenRequests.length, BURST);

    await issuer.service.audit.flush();
    const denials = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'authorization.denied');
    const limited = denials.filter((e) => e.reason === 'login_rate_limited');
    assert.equal(limited.length, 2);
    for (const e of limited) assert.equal(e.remote_addr, '127.0.0.1');

    // Another address is not held back by this one's bucket: its person signs in.
    const other = await begun('good-code');
    rogue.idToken = () => rogueIdToken(rogue, { nonce: other.nonce });
    const signedIn = await getFrom('127.0.0.2', other.callback, other.browser.cookieHeader());
    assert.equal(signedIn.status, 303, signedIn.body);
    assert.match(String(signedIn.headers.location), /\/oauth2\/authorize\?/);
    assert.equal(rogue.tokenRequests.length, BURST + 1);

    // After Retry-After, the refused callback reloaded reaches the provider: its state was not spent.
    rogue.idToken = () => 'not-a-jwt';
    offset += Math.ceil(1 / RATE) * 1000;
    const later = await extra.browser.fetch(extra.callback);
    await later.arrayBuffer();
    assert.equal(later.status, 403, 'its state was not spent: the code reached the provider');
    assert.equal(rogue.tokenRequests.length, BURST + 2);
  });

  it('a callback whose login state does not verify spends nothing of its address’s bucket (nothing is stored, nothing sent upstream)', async () => {
    offset += 3600_000;
    rogue.idToken = () => 'not-a-jwt';
    const before = rogue.tokenRequests.length;
    const l = await begun();
    const bogus = loginCallbackUrl(issuer, 'A'.repeat(43), 'any-code');
    // Sent with the login's cookie, whose state they do not name (and the jar kept, which they clear).
    for (let i = 0; i < BURST * 3; i++) {
      const res = await fetch(bogus, { headers: { cookie: l.browser.cookieHeader() }, redirect: 'manual' });
      await res.arrayBuffer();
      assert.equal(res.status, 403);
    }
    const res = await l.browser.fetch(l.callback);
    await res.arrayBuffer();
    assert.equal(res.status, 403, 'reached the provider');
    assert.equal(rogue.tokenRequests.length, before + 1);
  });
});
