/**
 * The login cookies as the OIDC authenticator reads them on an https issuer, where they are
 * `__Host-` prefixed so that no sibling subdomain (or plain-http page) can set one: a cookie the
 * browser stored under another name is never read as one of them.
 */
import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createOidcAuthenticator } from '../../src/server/oidc-authenticator.ts';
import { type RogueUpstream, rogueIdToken, startRogueProvider, UPSTREAM_CLIENT, UPSTREAM_SECRET } from '../helpers/oidc-upstream.ts';

describe('login cookies on an https issuer: read by their exact name', () => {
  let rogue: RogueUpstream;
  let auth: ReturnType<typeof createOidcAuthenticator>;

  before(async () => {
    rogue = await startRogueProvider();
    auth = createOidcAuthenticator(
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
  });
  after(async () => {
    await rogue?.close();
  });

  /** A login as `sub` at the provider: its state cookie, its callback query, and the session cookie it ends with. */
  async function signIn(sub: string): Promise<{ stateCookie: string; query: URLSearchParams; session: string }> {
    const to = await auth.login.start('client_id=x');
    const p = new URL(to.location).searchParams;
    const stateCookie = (to.cookies[0] as string).split(';')[0] as string;
    rogue.idToken = () => rogueIdToken(rogue, { sub, nonce: p.get('nonce') });
    const query = new URLSearchParams({ code: 'c', state: p.get('state') as string });
    const done = await auth.login.finish(query, { headers: { cookie: stateCookie }, remoteAddress: undefined });
    assert.ok(done.ok);
    const session = (done.cookies.find((c) => c.startsWith('__Host-tessera-session=')) as string).split(';')[0] as string;
    return { stateCookie, query, session };
  }

  // Node reads header bytes as latin1: a 0xA0 byte is U+00A0, which String.prototype.trim removes.
  // RFC 6265 §5.2 trims a cookie's name of SP and HTAB only; a browser stores "\xA0__Host-…" from a
  // sibling subdomain as a cookie of that other name, no prefix rule applying to it.
  for (const [label, lead] of [
    ['NBSP (0xA0)', '\u00a0'],
    ['vertical tab', '\u000b'],
    ['form feed', '\u000c'],
  ] as const) {
    it(`attack: a session cookie named ${label} + __Host-tessera-session (tossed by a sibling subdomain) signs no one in`, async () => {
      const { session } = await signIn('mallory');
      assert.equal((await auth.authenticate({ headers: { cookie: session }, remoteAddress: undefined })).ok, true);
      assert.deepEqual(await auth.authenticate({ headers: { cookie: `${lead}${session}` }, remoteAddress: undefined }), {
        ok: false,
        reason: 'session_missing',
      });
      // Beside the browser's own session, neither is it a second one that makes both ambiguous.
      const own = (await signIn('alice')).session;
      const both = await auth.authenticate({ headers: { cookie: `${lead}${session}; ${own}` }, remoteAddress: undefined });
      assert.equal(both.ok && both.subject, 'alice');
    });

    it(`attack: a login state cookie named ${label} + __Host-tessera-login (login CSRF by a sibling subdomain) is no login state`, async () => {
      const to = await auth.login.start('client_id=x');
      const p = new URL(to.location).searchParams;
      const stateCookie = (to.cookies[0] as string).split(';')[0] as string;
      rogue.idToken = () => rogueIdToken(rogue, { sub: 'mallory', nonce: p.get('nonce') });
      const query = new URLSearchParams({ code: 'c', state: p.get('state') as string });
      const out = await auth.login.finish(query, { headers: { cookie: `${lead}${stateCookie}` }, remoteAddress: undefined });
      assert.equal(out.ok, false);
      assert.equal(!out.ok && out.reason, 'login_state_missing');
    });
  }

  it('a space or tab around the name is still trimmed (RFC 6265 §5.2): the cookie is read', async () => {
    const { session } = await signIn('alice');
    for (const cookie of [` ${session}`, `\t${session}`, `other=1;  ${session}`, session.replace('=', ' =')]) {
      const got = await auth.authenticate({ headers: { cookie }, remoteAddress: undefined });
      assert.equal(got.ok && got.subject, 'alice', JSON.stringify(cookie));
    }
  });
});
