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
  const last = VALUE[text.charCodeAt(end - 1)] as number;
  return rem === 2 ? (last & 0x0f) === 0 : (last & 0x03) === 0;
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
