/** The UTF-8-only form reader and charset check behind every form endpoint (RFC 6749 Appendix B). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { declaredCharsetIsUtf8, parseUtf8Form } from '../../src/core/form.ts';

const F = 'application/x-www-form-urlencoded';

describe('declaredCharsetIsUtf8', () => {
  it('accepts no parameters, a UTF-8 charset however spelled, other parameters, and a trailing ";"', () => {
    for (const v of [
      F,
      `${F}; charset=utf-8`,
      `${F};charset="UTF-8"`,
      `${F} ; CharSet=UTF8`,
      `${F}; foo=bar; charset=utf-8`,
      `${F};`,
      `${F}; x="a;b"`,
    ]) {
      assert.equal(declaredCharsetIsUtf8(v), true, v);
    }
  });

  it('refuses another charset, a second charset that is not UTF-8, an empty charset and unreadable parameters', () => {
    for (const v of [
      `${F}; charset=iso-8859-1`,
      `${F}; charset="windows-1252"`,
      `${F}; charset=utf-7`,
      `${F}; charset=utf-8; charset=latin1`,
      `${F}; charset=""`,
      `${F}; charset="utf-8`,
      `${F}; x="a;charset=latin1`,
      `${F}; charset=utf-8 latin1`,
    ]) {
      assert.equal(declaredCharsetIsUtf8(v), false, v);
    }
  });
});

describe('parseUtf8Form', () => {
  it('refuses percent-encoded and raw bytes that are not UTF-8', () => {
    for (const body of ['a=%FF', 'a=%ff', 'a=%C3%28', 'a=%C0%AF', 'a=%ED%A0%80', 'a=%E2%82&b=%AC', 'a=%F4%90%80%80']) {
      assert.equal(parseUtf8Form(Buffer.from(body)), undefined, body);
      assert.equal(parseUtf8Form(body), undefined, `${body} as a query string`);
    }
    assert.equal(parseUtf8Form(Buffer.from([0x61, 0x3d, 0xff])), undefined);
    assert.equal(parseUtf8Form(Buffer.concat([Buffer.from('a='), Buffer.from([0xc3]), Buffer.from('%A9')])), undefined);
  });

  it('reads valid UTF-8, a real U+FFFD, stray percent signs and %25FF as themselves', () => {
    assert.equal(parseUtf8Form(Buffer.from('a=caf%C3%A9'))?.get('a'), 'caf\u00e9');
    assert.equal(parseUtf8Form(Buffer.from('a=caf\u00e9'))?.get('a'), 'caf\u00e9');
    assert.equal(parseUtf8Form(Buffer.from('a=%EF%BF%BD'))?.get('a'), '\uFFFD');
    assert.equal(parseUtf8Form(Buffer.from('a=\uFFFD'))?.get('a'), '\uFFFD');
    assert.equal(parseUtf8Form(Buffer.from('a=%F&b=%'))?.get('a'), '%F');
    assert.equal(parseUtf8Form(Buffer.from('a=%25FF'))?.get('a'), '%FF');
    assert.equal(parseUtf8Form('a=%C3%A9&b=1')?.get('b'), '1');
  });
});
