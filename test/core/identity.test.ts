import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validIdentity } from '../../src/core/identity.ts';

describe('subjects (core/identity.ts)', () => {
  it('accepts printable subjects, e-mail addresses and non-Latin scripts', () => {
    for (const ok of ['alice', 'alice@example.com', 'auth0|5f7c8ec7c33c6c004bbafe82', 'Ünïcødé', '山田太郎', 'x'.repeat(256)])
      assert.ok(validIdentity(ok), ok);
  });
  it('attack: a bidi override (U+202E), line/paragraph separators, U+FEFF, zero-width and other format characters are refused: a subject must read as it is recorded', () => {
    for (const bad of [
      'admin\u202etxt.exe',
      'alice\u2028bob',
      'alice\u2029',
      '\ufeffalice',
      'ali\u200bce',
      'ali\u200dce',
      'a\u2066b',
      'a\u{e0041}b',
      'a\u00adb',
    ])
      assert.equal(validIdentity(bad), false, JSON.stringify(bad));
  });
  it('refuses spaces of every kind, control characters and lone surrogates', () => {
    for (const bad of ['', 'a b', 'a\u00a0b', 'a\u3000b', 'a\u2003b', 'a\tb', 'a\u0085b', 'a\u009fb', 'a\ud800b', 'a\udc00', '\ud83d'])
      assert.equal(validIdentity(bad), false, JSON.stringify(bad));
  });
  it('accepts characters above U+FFFF (emoji, supplementary scripts) and counts 256 code points, not UTF-16 units', () => {
    for (const ok of ['agent-🤖', '𠮷野家', '𝔞𝔩𝔦𝔠𝔢', '😀'.repeat(256)]) assert.ok(validIdentity(ok), ok);
    assert.equal(validIdentity('😀'.repeat(257)), false);
    assert.equal(validIdentity('x'.repeat(257)), false);
  });
});
