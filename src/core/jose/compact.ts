/**
 * JWS Compact Serialization (RFC 7515 §7.1), parsed strictly: exactly three segments of canonical
 * unpadded base64url, a UTF-8 JSON object header without duplicate members.
 */
import { Buffer } from 'node:buffer';
import { isCanonicalSegment } from './base64url.ts';
import { type JsonObject, parseJsonObject } from './json.ts';

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
  if (
    !isCanonicalSegment(token.slice(0, dot1)) ||
    !isCanonicalSegment(token.slice(dot1 + 1, dot2)) ||
    !isCanonicalSegment(token.slice(dot2 + 1))
  ) {
    return undefined;
  }
  return { dot1, dot2 };
}

/** Decode a (canonical) segment and parse it as a strict JSON object. */
export function decodeJsonSegment(segment: string): JsonObject | undefined {
  return parseJsonObject(Buffer.from(segment, 'base64url'));
}

/** Header parameters that would let a token choose its own verification key. Never trusted. */
export const KEY_REFERENCE_HEADERS = ['jku', 'x5u', 'jwk', 'x5c'] as const;
