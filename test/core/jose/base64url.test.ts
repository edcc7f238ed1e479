/**
 * Strict base64url. decodeBase64urlInto validates by decoded length instead of a regular
 * expression, which is only sound because of how Node's decoder treats characters outside the
 * alphabet. These tests pin that behaviour for every ASCII character, so a Node upgrade that
 * changes it fails here rather than loosening token parsing.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  binaryBase64url12,
  decodeBase64url,
  decodeBase64urlInto,
  encodeBinaryBase64url,
  isAsciiWithoutPlusOrSlash,
} from '../../../src/core/jose/base64url.ts';
import { splitCompactInto } from '../../../src/core/jose/compact.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const target = Buffer.alloc(64);

/** The reference: the alphabet by regular expression, then canonical re-encoding. */
function reference(s: string): Buffer | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return undefined;
  const bytes = Buffer.from(s, 'base64url');
  return bytes.toString('base64url') === s ? bytes : undefined;
}

function strict(s: string): Buffer | undefined {
  const scratch = Buffer.alloc(s.length + 4);
  if (!isAsciiWithoutPlusOrSlash(s, scratch)) return undefined;
  const n = decodeBase64urlInto(s, 0, s.length, target);
  return n < 0 ? undefined : Buffer.from(target.subarray(0, n));
}

let seed = 99;
const rand = (n: number) => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed % n;
};
const canonical = (len: number) => {
  let s = '';
  for (let i = 0; i < len; i++) s += ALPHABET[rand(64)];
  return Buffer.from(s, 'base64url').toString('base64url').slice(0, len);
};

describe('strict base64url without a regular expression', () => {
  it('refuses every ASCII character outside the alphabet, at every position, by decoded length', () => {
    let cases = 0;
    for (let code = 0; code < 128; code++) {
      const c = String.fromCharCode(code);
      if (ALPHABET.includes(c)) continue;
      for (const len of [2, 3, 4, 6, 7, 8, 10, 11, 12]) {
        const seg = canonical(len);
        assert.notEqual(strict(seg), undefined);
        for (let p = 0; p < len; p++) {
          const replaced = seg.slice(0, p) + c + seg.slice(p + 1);
          const inserted = seg.slice(0, p) + c + seg.slice(p);
          assert.equal(strict(replaced), undefined, `${JSON.stringify(replaced)}`);
          assert.equal(strict(inserted), undefined, `${JSON.stringify(inserted)}`);
          // The decoder itself: outside the alphabet, only '+' and '/' decode; everything else is
          // skipped or ends decoding, so fewer bytes come out than the length implies.
          const n = target.write(replaced, 0, 'base64url');
          if (c === '+' || c === '/') assert.equal(n, (len * 3) >> 2);
          else assert.ok(n < (len * 3) >> 2, `${JSON.stringify(c)} in ${replaced} decoded to ${n} bytes`);
          cases++;
        }
      }
    }
    assert.ok(cases > 3000);
  });

  it('needs its ASCII precondition: Node reads a character above U+00FF by its low byte', () => {
    assert.deepEqual(Buffer.from('QUJDRAŁ', 'base64url'), Buffer.from('QUJDRAA', 'base64url'));
    assert.equal(strict('QUJDRAŁ'), undefined);
    assert.equal(strict('QUJDRAａ'), undefined);
    assert.equal(strict('QUJDRAé'), undefined);
    assert.equal(strict('QUJDR😀'), undefined);
    assert.equal(strict('QUJDRA\uD800'), undefined);
    // The first wide character is counted even when it is the last one of a full scratch.
    const exact = Buffer.alloc(7 + 4);
    assert.equal(isAsciiWithoutPlusOrSlash(`${'A'.repeat(6)}😀`.slice(0, 7), exact), false);
    assert.equal(isAsciiWithoutPlusOrSlash('AAAAAAA', exact), true);
    assert.equal(isAsciiWithoutPlusOrSlash('AAAAAAA', Buffer.alloc(10)), false, 'too small a scratch is refused');
  });

  it('agrees with the regular-expression reference on random strings, bytes included', () => {
    const pool = `${ALPHABET}${ALPHABET}=+/ .!\n\té~Ł`;
    for (let i = 0; i < 50_000; i++) {
      const len = rand(14);
      let s = '';
      for (let j = 0; j < len; j++) s += pool[rand(pool.length)];
      if (rand(2) === 0) s = Buffer.from(s.replace(/[^A-Za-z0-9_-]/g, 'A'), 'base64url').toString('base64url') + s.slice(0, rand(2));
      assert.deepEqual(strict(s), reference(s), JSON.stringify(s));
      assert.deepEqual(decodeBase64url(s), reference(s), JSON.stringify(s));
    }
  });

  it('splits only three non-empty ASCII segments without + or /', () => {
    const input = Buffer.alloc(64);
    assert.deepEqual(splitCompactInto('ab.cd.ef', input), { dot1: 2, dot2: 5 });
    assert.equal(input.toString('latin1', 0, 5), 'ab.cd');
    for (const bad of [
      'ab.cd',
      'ab.cd.ef.gh',
      '.ab.cd',
      'ab..cd',
      'ab.cd.',
      'a+.cd.ef',
      'ab.c/.ef',
      'ab.cd.eŁ',
      'ab.cd.e\u00e9',
      '..',
      '',
    ]) {
      assert.equal(splitCompactInto(bad, input), undefined, bad);
    }
  });
});

describe('base64url of binary (latin1) strings', () => {
  it("encodes every length of a digest as Buffer's base64url does, and the 12-byte short form likewise", () => {
    for (let k = 0; k < 500; k++) {
      const bytes = randomBytes(32);
      const binary = bytes.toString('latin1');
      for (let n = 0; n <= 32; n++)
        assert.equal(encodeBinaryBase64url(binary, n), bytes.subarray(0, n).toString('base64url'), `${n} bytes`);
      assert.equal(encodeBinaryBase64url(binary), bytes.toString('base64url'));
      assert.equal(binaryBase64url12(binary), bytes.subarray(0, 12).toString('base64url'));
    }
    const edges = Buffer.from([0, 0xff, 0x80, 0x7f, 0x3f, 0xfe, 0x01, 0xfb, 0xef, 0xbe, 0xff, 0xff, 0]);
    assert.equal(encodeBinaryBase64url(edges.toString('latin1')), edges.toString('base64url'));
    assert.equal(binaryBase64url12(edges.toString('latin1')), edges.subarray(0, 12).toString('base64url'));
  });
});
