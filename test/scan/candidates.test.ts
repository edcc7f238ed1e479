/**
 * The streaming candidate finder: what looks like one of Tessera's tokens, where it starts, and
 * the same answer however the text is cut into pieces (a token split across two reads is found).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Candidate, CandidateScanner } from '../../src/scan/candidates.ts';

const JWS = 'eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz';
const RT = `trt_${'Ab9_-'.repeat(8)}xyz`;

function scan(text: string, piece = text.length || 1, maxLength?: number): [string, number, number][] {
  const s = new CandidateScanner(maxLength !== undefined ? { maxLength } : {});
  const out: Candidate[] = [];
  for (let i = 0; i < text.length; i += piece) out.push(...s.push(text.slice(i, i + piece)));
  out.push(...s.end());
  return out.map((c) => [c.value, c.line, c.column]);
}

describe('CandidateScanner', () => {
  it('finds tokens in JSON lines, Authorization headers and URLs, with 1-based line and column', () => {
    const text = `first line\n{"auth":"Bearer ${JWS}","n":1}\nAuthorization: Bearer ${JWS}\r\nGET /api?access_token=${JWS}&page=2\nrefresh=${RT};\n`;
    assert.equal(RT.length, 47);
    assert.deepEqual(scan(text), [
      [JWS, 2, 17],
      [JWS, 3, 23],
      [JWS, 4, 23],
      [RT, 5, 9],
    ]);
  });

  it('gives the same answer however the text is cut, down to one character at a time', () => {
    const text = `a ${JWS}\n\n  x.${JWS}.y ${RT}\n"${JWS}"`;
    const whole = scan(text);
    // `x.JWS.y` also yields its payload, signature and `y` as a window: a candidate, never a finding.
    assert.deepEqual(
      whole.map(([v]) => (v === JWS ? 'JWS' : v === RT ? 'RT' : 'other')),
      ['JWS', 'JWS', 'other', 'RT', 'JWS'],
    );
    for (let piece = 1; piece <= text.length; piece++) assert.deepEqual(scan(text, piece), whole, `pieces of ${piece}`);
  });

  it('finds a token split across a boundary when only the overlap is kept (maxLength bounds memory)', () => {
    const filler = 'z '.repeat(5000);
    const text = `${filler}${JWS}\n${filler}${RT} ${filler}`;
    for (const piece of [7, 64, 1000, 4096]) {
      assert.deepEqual(
        scan(text, piece, 200).map(([v, l]) => [v, l]),
        [
          [JWS, 1],
          [RT, 2],
        ],
      );
    }
  });

  it('finds tokens right after a percent-encoded byte (URL-encoded logs) or a JSON string escape, however the text is cut', () => {
    const text = [
      `GET /cb?next=https%3A%2F%2Fapp%2Fcb%3Faccess_token%3D${JWS}%26state%3Dx`,
      `q=Authorization%3A%20Bearer%20${JWS}`,
      `form: refresh_token%3D${RT}%26grant_type`,
      String.raw`{"stdout":"token:\n${JWS}\n","quoted":"\u0022${JWS}\u0022","tab":"\t${RT}"}`,
    ].join('\n');
    const want = [
      [JWS, 1],
      [JWS, 2],
      [RT, 3],
      [JWS, 4],
      [JWS, 4],
      [RT, 4],
    ];
    assert.deepEqual(
      scan(text).map(([v, l]) => [v, l]),
      want,
    );
    // maxLength the token's own length keeps the least overlap: the escape before a token must stay with it.
    const padded = `${'z '.repeat(400)}${text}`;
    for (let piece = 1; piece <= 120; piece++) {
      assert.deepEqual(
        scan(padded, piece, JWS.length).map(([v, l]) => [v, l]),
        want,
        `pieces of ${piece}`,
      );
    }
  });

  it('finds tokens in nginx-escaped logs (\\x22) and after a percent-encoded percent (a URL encoded twice or more), however the text is cut', () => {
    const text = [
      // nginx log_format escape=default writes `"` as \x22: a JSON request body logged with $request_body.
      String.raw`127.0.0.1 - - "POST /oauth2/token" 200 "{\x22access_token\x22:\x22${JWS}\x22,\x22refresh_token\x22:\x22${RT}\x22}"`,
      // A redirect URL carried in a query parameter, then logged percent-encoded again.
      `GET /login?next=%2Fcb%253Faccess_token%253D${JWS}%2526x%253D1 302`,
      `GET /sso?r=%252Fcb%25253Faccess_token%25253D${JWS} 302`,
    ].join('\n');
    const want = [
      [JWS, 1],
      [RT, 1],
      [JWS, 2],
      [JWS, 3],
    ];
    assert.deepEqual(
      scan(text).map(([v, l]) => [v, l]),
      want,
    );
    const padded = `${'z '.repeat(400)}${text}`;
    for (let piece = 1; piece <= 120; piece++) {
      assert.deepEqual(
        scan(padded, piece, JWS.length).map(([v, l]) => [v, l]),
        want,
        `pieces of ${piece}`,
      );
    }
  });

  it('ignores what is not a candidate: two segments, a token glued after other base64url, a refresh token of the wrong length', () => {
    assert.deepEqual(scan(`eyJhbGc.eyJzdWIi x${JWS} trt_${'A'.repeat(42)} trt_${'A'.repeat(44)} atrt_${'A'.repeat(43)}`), []);
  });

  it('finds every three segments starting eyJ in a longer dotted run, so a token glued to another is not missed', () => {
    const found = scan(`eyJmb28.eyJiYXI.${JWS}`).map(([v]) => v);
    assert.ok(found.includes(JWS), 'the real token, after two other segments');
  });

  it('scans a long line full of candidates (a minified bundle, a one-line JSON dump) in time linear in its length, as fast as the same text in lines', () => {
    // Counting lines searched past each candidate to the end of the piece for a newline: on a line
    // with none, 400 000 candidates in 1 MiB pieces took seconds (quadratic in the piece), where
    // the same text one candidate a line took a fraction of one.
    const time = (sep: string) => {
      const text = `eyJA.eyJB.c${sep}`.repeat(400_000);
      const s = new CandidateScanner();
      const start = performance.now();
      let found = 0;
      for (let i = 0; i < text.length; i += 1 << 20) found += s.push(text.slice(i, i + (1 << 20))).length;
      found += s.end().length;
      assert.equal(found, 400_000);
      return performance.now() - start;
    };
    const lines = time('\n');
    const oneLine = time(' ');
    assert.ok(oneLine < 3 * lines + 300, `one line: ${Math.round(oneLine)} ms, the same in lines: ${Math.round(lines)} ms`);
  });

  it('skips a candidate longer than maxLength', () => {
    const long = `eyJ${'A'.repeat(300)}.eyJ.sig`;
    assert.deepEqual(
      scan(`${long} ${JWS}`, undefined, 200).map(([v]) => v),
      [JWS],
    );
  });
});
