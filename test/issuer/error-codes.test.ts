/** The token-service error catalogue and its documentation agree, both ways (fastify's errors test). */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import { OAUTH_ERROR_CODES, OAuthError, type OAuthErrorCode, RETIRED_OAUTH_CODES } from '../../src/core/oauth-errors.ts';

const doc = readFileSync(new URL('../../docs/token-service.md', import.meta.url), 'utf8');
const documented = [...doc.matchAll(/^\| `([a-z0-9_]+)` \| (\d{3}) \| `([a-z_]+)` \| (.+) \|$/gm)].map((m) => ({
  code: m[1] as string,
  status: Number(m[2]),
  error: m[3] as string,
  description: m[4] as string,
}));

/** A description without its asides in parentheses (nested ones too): the words a reader acts on. */
function outsideParentheses(text: string): string {
  let s = text;
  for (let before = ''; before !== s; ) {
    before = s;
    s = s.replace(/ ?\([^()]*\)/g, '');
  }
  return s;
}

it('documents every code with its status and error, and nothing else', () => {
  assert.deepEqual(documented.map((d) => d.code).sort(), Object.keys(OAUTH_ERROR_CODES).sort());
  for (const d of documented) {
    const spec = OAUTH_ERROR_CODES[d.code as keyof typeof OAUTH_ERROR_CODES];
    assert.equal(d.status, spec.status, d.code);
    assert.equal(d.error, spec.error, d.code);
  }
});

it('documents each code’s error_description as sent: the table may add asides in parentheses, but its words outside them are the message’s (so advice such as which command recovers cannot drift between the two)', () => {
  for (const d of documented) {
    const spec = OAUTH_ERROR_CODES[d.code as keyof typeof OAUTH_ERROR_CODES];
    assert.equal(outsideParentheses(d.description), outsideParentheses(spec.description), d.code);
  }
  const signing = documented.find((d) => d.code === 'signing_key_unavailable');
  assert.match(OAUTH_ERROR_CODES.signing_key_unavailable.description, /run `tessera keys rotate --now`/);
  assert.match(signing?.description ?? '', /run `tessera keys rotate --now`/);
});

it('writes every error and error_description in RFC 6749 §5.2 NQSCHAR: no %x22 or %x5C, nothing outside ASCII (the token response, and the redirect of §4.1.2.1)', () => {
  for (const [code, spec] of Object.entries(OAUTH_ERROR_CODES)) {
    assert.match(spec.error, /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/, code);
    assert.match(spec.description, /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/, code);
  }
});

it('never reuses a retired code', () => {
  for (const c of RETIRED_OAUTH_CODES) assert.equal(c in OAUTH_ERROR_CODES, false);
});

it('every 401 names its challenge (RFC 9110 §15.5.2): a code without an HTTP authentication scheme to name is not a 401', () => {
  for (const [code, spec] of Object.entries(OAUTH_ERROR_CODES)) {
    if (spec.status !== 401) continue;
    assert.ok(new OAuthError(code as OAuthErrorCode).headers()['www-authenticate'], code);
  }
});

it('renders only the error and the fixed description, and a Basic challenge on every 401 invalid_client', () => {
  const e = new OAuthError('client_secret_mismatch', { basic: true });
  assert.deepEqual(e.toJSON(), { error: 'invalid_client', error_description: 'Client authentication failed.' });
  assert.equal(e.headers()['www-authenticate'], 'Basic realm="tessera", charset="UTF-8"');
  assert.equal(new OAuthError('client_secret_mismatch').headers()['www-authenticate'], 'Basic realm="tessera", charset="UTF-8"');
  assert.equal(new OAuthError('client_auth_multiple_methods').headers()['www-authenticate'], undefined, '400, not 401');
  assert.match(
    new OAuthError('admin_scope_missing', { scope: 'tessera:admin' }).headers()['www-authenticate'] ?? '',
    /scope="tessera:admin"/,
  );
});
