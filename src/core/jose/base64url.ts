/**
 * Strict base64url (RFC 4648 §5, unpadded, as RFC 7515 §2 requires for JWS).
 *
 * Node's `Buffer.from(s, 'base64url')` silently skips characters outside the alphabet and accepts
 * non-canonical trailing bits, which would let one signature have several spellings. Every
 * decode here checks the alphabet, the length and the trailing bits first.
 */
import { Buffer } from 'node:buffer';

const ALPHABET = /^[A-Za-z0-9_-]*$/;

// Value of each base64url character, -1 outside the alphabet.
const VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) {
  VALUE['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.charCodeAt(i)] = i;
}

/**
 * True when `segment` (already known to use only the base64url alphabet) has a valid length and
 * canonical trailing bits: the unused low bits of the last character must be zero.
 */
export function isCanonicalSegment(segment: string): boolean {
  return isCanonicalRange(segment, 0, segment.length);
}

/** {@link isCanonicalSegment} for `text.slice(start, end)`, without slicing. */
export function isCanonicalRange(text: string, start: number, end: number): boolean {
  const rem = (end - start) & 3;
  if (rem === 0) return true;
  if (rem === 1) return false;
  const last = VALUE[text.charCodeAt(end - 1)] ?? -1;
  return rem === 2 ? (last & 0x0f) === 0 : (last & 0x03) === 0;
}

/**
 * Decode `text.slice(start, end)` as strict unpadded base64url into `target` from offset 0, without
 * a regular expression. Returns the number of bytes written, or -1 when the range is not canonical
 * unpadded base64url (or does not fit).
 *
 * PRECONDITION: `text` is ASCII and holds no `+` or `/` ({@link isAsciiWithoutPlusOrSlash}).
 *
 * Why that makes it strict: Node's decoder skips every other character outside the alphabet and
 * stops at `=`, so a range holding any of them decodes to fewer bytes than its length implies, and
 * the length is checked. `+` and `/` are the only characters it decodes besides base64url's, and it
 * reads a character above U+00FF by its low byte (`Ł` as `A`): the precondition excludes both.
 * The last character's unused bits are checked by {@link isCanonicalRange}. The decoder behaviour
 * this relies on is pinned, for every ASCII character at every position, by
 * test/core/jose/base64url.test.ts.
 */
export function decodeBase64urlInto(text: string, start: number, end: number, target: Buffer): number {
  if (!isCanonicalRange(text, start, end)) return -1;
  const expected = ((end - start) * 3) >> 2;
  if (expected > target.length) return -1;
  return target.write(text.slice(start, end), 0, 'base64url') === expected ? expected : -1;
}

/**
 * True when every character of `text` is ASCII and none is `+` or `/`: the precondition of
 * {@link decodeBase64urlInto}. `scratch` (at least `text.length + 4` bytes) receives the text's
 * bytes, which for a compact JWS start with its signing input.
 */
export function isAsciiWithoutPlusOrSlash(text: string, scratch: Buffer): boolean {
  // UTF-8 takes one byte per character exactly when all are ASCII; the spare capacity guarantees
  // that the first wider character, if any, is written and counted.
  return (
    scratch.length >= text.length + 4 &&
    scratch.write(text, 0, 'utf8') === text.length &&
    text.indexOf('+') === -1 &&
    text.indexOf('/') === -1
  );
}

/** Decode strict base64url, or return `undefined` if the input is not canonical base64url. */
export function decodeBase64url(segment: string): Buffer | undefined {
  if (!ALPHABET.test(segment) || !isCanonicalSegment(segment)) return undefined;
  return Buffer.from(segment, 'base64url');
}

/** Encode bytes or a UTF-8 string as unpadded base64url. */
export function encodeBase64url(input: Uint8Array | string): string {
  return (typeof input === 'string' ? Buffer.from(input, 'utf8') : Buffer.from(input.buffer, input.byteOffset, input.byteLength)).toString(
    'base64url',
  );
}

const CODES = new Uint8Array(64);
for (let i = 0; i < 64; i++) CODES[i] = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.charCodeAt(i);
const code = (sextet: number): number => CODES[sextet] as number;

/**
 * Unpadded base64url of the first `length` bytes of `binary`, a string of byte values (one
 * character per byte, as `crypto.hash(alg, data, 'latin1')` returns).
 */
export function encodeBinaryBase64url(binary: string, length: number = binary.length): string {
  const codes: number[] = [];
  let i = 0;
  for (; i + 2 < length; i += 3) {
    const n = (binary.charCodeAt(i) << 16) | (binary.charCodeAt(i + 1) << 8) | binary.charCodeAt(i + 2);
    codes.push(code(n >> 18), code((n >> 12) & 63), code((n >> 6) & 63), code(n & 63));
  }
  if (length - i === 1) {
    const n = binary.charCodeAt(i);
    codes.push(code(n >> 2), code((n & 3) << 4));
  } else if (length - i === 2) {
    const n = (binary.charCodeAt(i) << 8) | binary.charCodeAt(i + 1);
    codes.push(code(n >> 10), code((n >> 4) & 63), code((n & 15) << 2));
  }
  return String.fromCharCode(...codes);
}

/**
 * `encodeBinaryBase64url(binary, 12)`, the 16-character short hash that names a token in audit
 * events, in one string allocation: it runs once per verified token.
 */
export function binaryBase64url12(binary: string): string {
  const a = (binary.charCodeAt(0) << 16) | (binary.charCodeAt(1) << 8) | binary.charCodeAt(2);
  const b = (binary.charCodeAt(3) << 16) | (binary.charCodeAt(4) << 8) | binary.charCodeAt(5);
  const c = (binary.charCodeAt(6) << 16) | (binary.charCodeAt(7) << 8) | binary.charCodeAt(8);
  const d = (binary.charCodeAt(9) << 16) | (binary.charCodeAt(10) << 8) | binary.charCodeAt(11);
  return String.fromCharCode(
    code(a >> 18),
    code((a >> 12) & 63),
    code((a >> 6) & 63),
    code(a & 63),
    code(b >> 18),
    code((b >> 12) & 63),
    code((b >> 6) & 63),
    code(b & 63),
    code(c >> 18),
    code((c >> 12) & 63),
    code((c >> 6) & 63),
    code(c & 63),
    code(d >> 18),
    code((d >> 12) & 63),
    code((d >> 6) & 63),
    code(d & 63),
  );
}
