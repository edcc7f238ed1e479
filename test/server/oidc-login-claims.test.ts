/**
 * The ID token's claims as the login callback reads them: each claim Tessera takes a person from
 * is of the type OpenID Connect Core §2 and §5.1 give it, or the login fails as an invalid ID
 * token (a page, audited), never a server error, a login loop, or a subject that is not a string.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { authorizationRequest } from '../helpers/authorize.ts';
import type { RunningIssuer } from '../helpers/issuer.ts';
import { API, REDIRECT, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, rogueIdToken, startRogueProvider } from '../helpers/oidc-upstream.ts';
import { pkcePair } from '../helpers/pkce.ts';

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

  async function begin(browser: Browser): Promise<URLSearchParams> {
    const url = authorizationRequest(`${issuer.url}/oauth2/authorize`, {
      redirect_uri: REDIRECT,
      code_challenge: pkcePair().challenge,
      resource: API,
      state: 'client-state',
    });
    const res = await browser.fetch(url);
    assert.equal(res.status, 303);
    return new URL(res.headers.get('location') as string).searchParams;
  }

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
      const p = await begin(browser);
      rogue.idToken = () => rogueIdToken(rogue, { sub, nonce: p.get('nonce') });
      const res = await browser.fetch(
        `${issuer.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`,
      );
      const html = await res.text();
      assert.equal(res.status, 403, html);
      assert.equal(res.headers.get('location'), null);
      assert.ok(!browser.jar.has('tessera-session'));
      assert.deepEqual((await denials()).slice(-1), ['login_id_token_invalid']);
    });
  }
});
