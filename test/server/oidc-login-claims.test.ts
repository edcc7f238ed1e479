/**
 * The ID token's claims as the login callback reads them: each claim Tessera takes a person from
 * is of the type OpenID Connect Core §2 and §5.1 give it, or the login fails as an invalid ID
 * token (a page, audited), never a server error, a login loop, or a subject that is not a string.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RunningIssuer } from '../helpers/issuer.ts';
import { beginLogin, loginCallbackUrl, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, rogueIdToken, startRogueProvider } from '../helpers/oidc-upstream.ts';

describe('ID token claims of the wrong type at the login callback', () => {
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

  async function denials(): Promise<string[]> {
    await issuer.service.audit.flush();
    return (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'authorization.denied').map((e) => e.reason);
  }

  for (const [name, sub] of [
    ['an array', ['alice']],
    ['a number', 12345],
    ['an object', { id: 'alice' }],
  ] as const) {
    it(`attack: an ID token whose sub is ${name} signs no one in: a 403 page, login_id_token_invalid, no session`, async () => {
      const browser = new Browser();
      const p = await beginLogin(issuer, browser);
      rogue.idToken = () => rogueIdToken(rogue, { sub, nonce: p.get('nonce') });
      const res = await browser.fetch(loginCallbackUrl(issuer, p.get('state') as string, 'c'));
      const html = await res.text();
      assert.equal(res.status, 403, html);
      assert.equal(res.headers.get('location'), null);
      assert.ok(!browser.jar.has('tessera-session'));
      assert.deepEqual((await denials()).slice(-1), ['login_id_token_invalid']);
    });
  }
});

describe('the e-mail the consent page shows (subject_claim: sub, no allowed_domains)', () => {
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

  /** Sign in with an ID token holding `claims`; the consent page's HTML. */
  async function consentPage(claims: Record<string, unknown>): Promise<string> {
    const browser = new Browser();
    const p = await beginLogin(issuer, browser);
    rogue.idToken = () => rogueIdToken(rogue, { ...claims, nonce: p.get('nonce') });
    const back = await browser.fetch(loginCallbackUrl(issuer, p.get('state') as string, 'c'));
    assert.equal(back.status, 303, await back.clone().text());
    const consent = await browser.fetch(back.headers.get('location') as string);
    const html = await consent.text();
    assert.equal(consent.status, 200, html);
    return html;
  }

  for (const [name, verified] of [
    ['absent', undefined],
    ['false', false],
    ['the string "true"', 'true'],
  ] as const) {
    it(`attack: an e-mail whose email_verified is ${name} is not shown as who is signed in: the subject is`, async () => {
      const html = await consentPage({
        sub: 'mallory-<1>',
        email: 'ceo@victim.example',
        ...(verified !== undefined ? { email_verified: verified } : {}),
      });
      assert.doesNotMatch(html, /ceo@victim\.example/);
      assert.match(html, /Signed in as <strong>mallory-&#60;1&#62;<\/strong>/);
    });
  }

  it('an e-mail the provider verified is shown', async () => {
    const html = await consentPage({ sub: 'alice-1', email: 'alice@example.com', email_verified: true });
    assert.match(html, /Signed in as <strong>alice@example\.com<\/strong>/);
  });
});
