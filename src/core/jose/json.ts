/**
 * Strict JSON for JOSE headers and claim sets.
 *
 * `JSON.parse` keeps the last of duplicate members, so `{"sub":"alice","sub":"admin"}` reads as
 * admin to one parser and alice to another. RFC 7515 §4 and RFC 7519 §4 let a receiver reject
 * duplicates; Tessera does. The check is cheap: in valid JSON every `:` outside a string separates
 * exactly one member, so the text has duplicates exactly when it holds more such colons than the
 * parsed value has own keys.
 */
import { Buffer, isUtf8 } from 'node:buffer';

function countMemberColons(text: string): number {
  let count = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x3a) count++;
  }
  return count;
}

function countKeys(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  let count = 0;
  if (Array.isArray(value)) {
    for (const item of value) count += countKeys(item);
    return count;
  }
  for (const key in value) {
    count++;
    count += countKeys((value as Record<string, unknown>)[key]);
  }
  return count;
}

/** A JSON object with string keys, as parsed from a JOSE header or claim set. */
export type JsonObject = Record<string, unknown>;

/**
 * Parse UTF-8 bytes as one JSON object. Returns `undefined` for invalid UTF-8 (including a BOM,
 * which RFC 8259 §8.1 forbids), invalid JSON, a non-object top level, or duplicate members at any
 * depth.
 */
export function parseJsonObject(bytes: Buffer): JsonObject | undefined {
  if (!isUtf8(bytes)) return undefined;
  const text = bytes.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  if (countKeys(value) !== countMemberColons(text)) return undefined;
  return value as JsonObject;
}

/** Parse a UTF-8 string as one strict JSON object (see {@link parseJsonObject}). */
export function parseJsonObjectText(text: string): JsonObject | undefined {
  return parseJsonObject(Buffer.from(text, 'utf8'));
}
