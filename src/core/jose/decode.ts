/**
 * Decode a compact JWT for display, WITHOUT verifying it. Never use the result for a decision.
 */
import { decodeJsonSegment, splitCompact } from './compact.ts';
import type { JsonObject } from './json.ts';

export function decodeUnverified(token: string): { header: JsonObject; claims: JsonObject } | undefined {
  const split = splitCompact(token);
  if (!split) return undefined;
  const header = decodeJsonSegment(token.slice(0, split.dot1));
  const claims = decodeJsonSegment(token.slice(split.dot1 + 1, split.dot2));
  return header && claims ? { header, claims } : undefined;
}
