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
