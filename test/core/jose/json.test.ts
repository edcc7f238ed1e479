/**
 * Strict JSON: duplicate members are found at any depth, whichever path the check takes (the
 * colon count for plain text, the character scan for text with escapes or URI-named members).
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { describe, it } from 'node:test';
import { parseJsonObject, STRICT_JSON_FAULTS, strictJsonFault } from '../../../src/core/jose/json.ts';

const parse = (text: string) => parseJsonObject(Buffer.from(text, 'utf8'));

/** Reference: a recursive-descent walk that records each object's member names. */
function hasDuplicates(text: string): boolean {
  let i = 0;
  const ws = () => {
    while (' \t\n\r'.includes(text[i] as string) && i < text.length) i++;
  };
  const str = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (): boolean => {
    ws();
    const c = text[i];
    if (c === '"') {
      str();
      return false;
    }
    if (c !== '{' && c !== '[') {
      while (i < text.length && !',]} \t\n\r'.includes(text[i] as string)) i++;
      return false;
    }
    i++;
    ws();
    let dup = false;
    const seen = new Set<string>();
    if (text[i] === (c === '{' ? '}' : ']')) {
      i++;
      return false;
    }
    for (;;) {
      if (c === '{') {
        ws();
        const k = str();
        if (seen.has(k)) dup = true;
        seen.add(k);
        ws();
        i++;
      }
      if (value()) dup = true;
      ws();
      if (text[i++] !== ',') return dup;
    }
  };
  return value();
}

let seed = 12345;
const rand = (n: number) => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed % n;
};
const KEYS = ['a', 'b', 'iss', 'aud', 'urn:x:y', 'https://c.test/claims', ':', 'a:b:c', '\\u0061', 'i\\u0073s', '__proto__', 'é'];
const STRINGS = ['', 'x', 'https://i.test', 'a:b', ':::', 'q\\"uote', 'back\\\\slash', '\\u003a', 'é:'];
function gen(depth: number): string {
  const r = rand(depth > 3 ? 3 : 6);
  if (r === 0) return `"${STRINGS[rand(STRINGS.length)]}"`;
  if (r === 1) return String(rand(1000));
  if (r === 2) return ['true', 'false', 'null'][rand(3)] as string;
  if (r === 3) return `[${Array.from({ length: rand(4) }, () => gen(depth + 1)).join(',')}]`;
  const n = rand(5);
  const members = Array.from({ length: n }, () => `"${KEYS[rand(KEYS.length)]}"${[':', ' : ', ':\n'][rand(3)]}${gen(depth + 1)}`);
  return `{${members.join(',')}}`;
}

describe('strict JSON objects', () => {
  it('finds duplicate members exactly as a full parse would, on 30,000 random objects', () => {
    let dups = 0;
    for (let i = 0; i < 30_000; i++) {
      let text = gen(0);
      if (!text.startsWith('{')) text = `{"k":${text}}`;
      JSON.parse(text);
      const dup = hasDuplicates(text);
      if (dup) dups++;
      assert.equal(parse(text) === undefined, dup, text);
    }
    assert.ok(dups > 3000 && dups < 27_000, `${dups} duplicates: the generator should make both kinds`);
  });

  it('accepts URI-named members and colons in values, and refuses the duplicates they could hide', () => {
    assert.ok(parse('{"https://c.test/roles":["a:b"],"iss":"https://i.test"}'));
    assert.equal(parse('{"https://c.test/roles":1,"https://c.test/roles":2}'), undefined);
    assert.equal(parse('{"a":"x:y","a":"z"}'), undefined);
    assert.equal(parse('{"a":"\\u003a","a":1}'), undefined);
    assert.equal(parse('{"iss":"x","\\u0069ss":"y"}'), undefined);
    assert.equal(parse('{"o":{"a":1,"a":1}}'), undefined);
    assert.equal(parse('{"l":[{"a":1},{"b":2,"b":3}]}'), undefined);
    assert.ok(parse('{"__proto__":{"a":1},"b":"c"}'));
  });

  it('refuses a BOM, invalid UTF-8, and non-objects', () => {
    assert.equal(parseJsonObject(Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), undefined);
    assert.equal(parseJsonObject(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d])), undefined);
    assert.ok(parseJsonObject(Buffer.from('{"a":"\uFFFD"}')));
    for (const t of ['[]', '"x"', '1', 'null', '', '{', '{}x']) assert.equal(parse(t), undefined, t);
  });

  it('refuses absurd nesting instead of overflowing the stack', () => {
    assert.equal(parse(`{"a":${'['.repeat(200_000)}${']'.repeat(200_000)}}`), undefined);
  });
});

describe('strictJsonFault: why the strict parser refused a document', () => {
  const fault = (text: string) => strictJsonFault(text, JSON.parse(text));

  it('names a repeated member, invalid UTF-8, and nothing for a document it accepts', () => {
    assert.equal(fault('{"a":1,"a":2}'), 'repeated');
    assert.equal(fault('{"a":[{"b":1,"c":{"d":1,"d":1}}]}'), 'repeated');
    const notUtf8 = Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d]);
    assert.equal(strictJsonFault(notUtf8, JSON.parse(notUtf8.toString('utf8'))), 'not_utf8');
    assert.equal(fault('{"a":{"b":[1,{"c":2}]}}'), undefined);
    assert.equal(fault('[1,1]'), undefined);
  });

  // A 100,000-deep document was reported as "a member name is repeated in one object": the
  // overflow of the duplicate walk was taken for a duplicate.
  for (const [name, deep] of [
    ['arrays', (n: number) => `{"a":${'['.repeat(n)}${']'.repeat(n)}}`],
    ['objects', (n: number) => `{"a":${'{"b":'.repeat(n)}1${'}'.repeat(n)}}`],
    ['objects with a repeated member at the bottom', (n: number) => `{"a":${'{"b":'.repeat(n)}{"c":1,"c":2}${'}'.repeat(n)}}`],
  ] as const) {
    it(`attack: absurdly nested ${name} is too_deep, not repeated, and still refused`, () => {
      for (const n of [100_000, 200_000]) {
        const text = deep(n);
        assert.equal(parse(text), undefined);
        assert.equal(fault(text), 'too_deep', `${n}`);
        assert.equal(strictJsonFault(Buffer.from(text), JSON.parse(text)), 'too_deep', `${n}, as bytes`);
      }
    });
  }

  it('has a sentence for every fault', () => {
    assert.deepEqual(Object.keys(STRICT_JSON_FAULTS).sort(), ['not_utf8', 'repeated', 'too_deep']);
    assert.match(STRICT_JSON_FAULTS.too_deep, /nested too deeply/);
  });
});
