/**
 * What the OIDC login tells a library user's `onWarning` quotes the provider (its metadata's URLs,
 * its key set): control characters there are written as escapes (`printable`), so a provider
 * cannot forge a log line or rewrite the operator's terminal through the user's own logger.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { printable } from '../../src/core/printable.ts';
import { authorizationRequest } from '../helpers/authorize.ts';
import type { RunningIssuer } from '../helpers/issuer.ts';
import { API, REDIRECT, startLoginIssuer } from '../helpers/oidc-login.ts';
import { Browser, type RogueUpstream, rogueIdToken, startRogueProvider } from '../helpers/oidc-upstream.ts';
import { pkcePair } from '../helpers/pkce.ts';

const NASTY = '\u001b[2J\n\u202e';

describe('attack: control characters from the provider in the OIDC login warnings', () => {
  let rogue: RogueUpstream;
  let issuer: RunningIssuer;
  const warnings: string[] = [];

  before(async () => {
    rogue = await startRogueProvider();
    issuer = await startLoginIssuer(rogue.url, { onWarning: (m) => warnings.push(m) });
  });
  after(async () => {
    await issuer?.close();
    await rogue?.close();
  });

  it('attack: a jwks_uri and a kid holding ESC, a newline and U+202E reach onWarning escaped', async () => {
    rogue.rewrite = (path, json) => {
      if (path === '/.well-known/openid-configuration') {
        const m = JSON.parse(json) as Record<string, unknown>;
        return JSON.stringify({ ...m, jwks_uri: `${m.jwks_uri}${NASTY}` });
      }
      if (path.startsWith('/jwks')) {
        const set = JSON.parse(json) as { keys: Record<string, unknown>[] };
        return JSON.stringify({ keys: set.keys.map((k) => ({ ...k, kid: `k${NASTY}` })) });
      }
      return json;
    };
    const browser = new Browser();
    const start = await browser.fetch(
      authorizationRequest(`${issuer.url}/oauth2/authorize`, {
        redirect_uri: REDIRECT,
        code_challenge: pkcePair().challenge,
        resource: API,
        state: 'client-state',
      }),
    );
    assert.equal(start.status, 303);
    const p = new URL(start.headers.get('location') as string).searchParams;
    rogue.idToken = () => rogueIdToken(rogue, { nonce: p.get('nonce') }, rogue.key, `k${NASTY}`);
    const res = await browser.fetch(
      `${issuer.url}/oauth2/login/callback?${new URLSearchParams({ code: 'c', state: p.get('state') as string })}`,
    );
    await res.text();
    assert.equal(res.status, 502);
    assert.ok(warnings.length > 0, 'warned');
    for (const w of warnings) {
      assert.equal(printable(w), w, 'no control character left raw');
    }
    assert.ok(
      warnings.some((w) => w.includes('\\x1b[2J\\n\\u202e')),
      warnings.join(' | '),
    );
  });
});
