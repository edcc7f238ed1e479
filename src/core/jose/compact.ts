/**
 * JWS Compact Serialization (RFC 7515 §7.1), parsed strictly: exactly three segments of canonical
 * unpadded base64url, a UTF-8 JSON object header without duplicate members.
 */
import { Buffer } from 'node:buffer';
import { isAsciiWithoutPlusOrSlash, isCanonicalRange } from './base64url.ts';
import { type JsonObject, parseJsonBytes } from './json.ts';

const COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** Positions of the two dots of a compact JWS, or `undefined` when it is not one. */
export interface CompactSplit {
  readonly dot1: number;
  readonly dot2: number;
}

/** Split a compact JWS after checking its alphabet and every segment's canonical encoding. */
export function splitCompact(token: string): CompactSplit | undefined {
  if (!COMPACT.test(token)) return undefined;
  const dot1 = token.indexOf('.');
  const dot2 = token.indexOf('.', dot1 + 1);
  if (!isCanonicalRange(token, 0, dot1) || !isCanonicalRange(token, dot1 + 1, dot2) || !isCanonicalRange(token, dot2 + 1, token.length)) {
    return undefined;
  }
  return { dot1, dot2 };
}

/**
 * Split a compact JWS for verification without a regular expression: exactly three non-empty
 * segments, ASCII, no `+` or `/`. The token's bytes are written into `input` (at least
 * `token.length + 4` bytes), whose first `dot2` bytes are then the signing input.
 *
 * This establishes the precondition of `decodeBase64urlInto`; each segment's alphabet and canonical
 * form are checked when it is decoded with it (or, for a header, with the strict decoder).
 */
export function splitCompactInto(token: string, input: Buffer): CompactSplit | undefined {
  const dot1 = token.indexOf('.');
  if (dot1 <= 0) return undefined;
  const dot2 = token.indexOf('.', dot1 + 1);
  if (dot2 <= dot1 + 1 || dot2 === token.length - 1 || token.indexOf('.', dot2 + 1) !== -1) return undefined;
  return isAsciiWithoutPlusOrSlash(token, input) ? { dot1, dot2 } : undefined;
}

// Decoded segments are parsed straight out of this buffer (synchronously, so it is never shared
// by two calls); larger ones get their own.
const SCRATCH = Buffer.allocUnsafeSlow(16384);

/** Decode a (canonical) segment and parse it as a strict JSON object. */
export function decodeJsonSegment(segment: string): JsonObject | undefined {
  if (segment.length > (SCRATCH.length / 3) * 4) {
    const bytes = Buffer.from(segment, 'base64url');
    return parseJsonBytes(bytes, bytes.length);
  }
  return parseJsonBytes(SCRATCH, SCRATCH.write(segment, 0, 'base64url'));
}

/** Header parameters that would let a token choose its own verification key. Never trusted. */
export const KEY_REFERENCE_HEADERS = ['jku', 'x5u', 'jwk', 'x5c'] as const;
