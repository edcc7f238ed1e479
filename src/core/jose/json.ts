/**
 * Strict JSON for JOSE headers and claim sets.
 *
 * `JSON.parse` keeps the last of duplicate members, so `{"sub":"alice","sub":"admin"}` reads as
 * admin to one parser and alice to another. RFC 7515 §4 and RFC 7519 §4 let a receiver reject
 * duplicates; Tessera does. The check counts colons: in valid JSON every `:` outside a string
 * separates exactly one member, so the text has duplicates exactly when it holds more such colons
 * than the parsed value has members (a duplicate's earlier member leaves no trace in the result).
 */
import { Buffer, isUtf8 } from 'node:buffer';

/** Colons outside string literals, by a scan that follows escapes. */
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
    for (let i = 0; i < value.length; i++) count += countKeys(value[i]);
    return count;
  }
  for (const key in value) count += 1 + countKeys((value as Record<string, unknown>)[key]);
  return count;
}

function colonsIn(text: string): number {
  let count = 0;
  for (let i = text.indexOf(':'); i !== -1; i = text.indexOf(':', i + 1)) count++;
  return count;
}

/** Members of the parsed value plus the colons inside its string values (not its keys). */
function countKeysAndValueColons(value: unknown): number {
  if (typeof value === 'string') return colonsIn(value);
  if (typeof value !== 'object' || value === null) return 0;
  let count = 0;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) count += countKeysAndValueColons(value[i]);
    return count;
  }
  for (const key in value) count += 1 + countKeysAndValueColons((value as Record<string, unknown>)[key]);
  return count;
}

/**
 * True when `text` (which `JSON.parse` turned into `value`) has no duplicate member at any depth.
 *
 * Fast path, for text without a backslash: every string literal is then spelled exactly as the
 * string it parses to, and each survives parsing unless a duplicate replaced its member. The text's
 * colons T = S + Ck + Cv (S member separators, Ck and Cv colons inside key and value literals),
 * and the parsed value gives K members and Cv' colons inside its string values, with K <= S and
 * Cv' <= Cv. So T = K + Cv' forces S = K (no member was replaced) and Ck = 0. When they differ (a
 * duplicate, or a key holding a colon such as a URI-named claim), or the text has escapes, the
 * character scan decides. Colons are found with `indexOf`, far faster than a character loop.
 */
function isDuplicateFree(text: string, value: object): boolean {
  if (text.indexOf('\\') === -1 && colonsIn(text) === countKeysAndValueColons(value)) return true;
  return countMemberColons(text) === countKeys(value);
}

/** A JSON object with string keys, as parsed from a JOSE header or claim set. */
export type JsonObject = Record<string, unknown>;

/**
 * Parse UTF-8 bytes as one JSON object. Returns `undefined` for invalid UTF-8 (including a BOM,
 * which RFC 8259 §8.1 forbids), invalid JSON, a non-object top level, or duplicate members at any
 * depth.
 */
export function parseJsonObject(bytes: Buffer): JsonObject | undefined {
  return parseJsonBytes(bytes, bytes.length);
}

/** {@link parseJsonObject} over the first `length` bytes of `bytes`. */
export function parseJsonBytes(bytes: Buffer, length: number): JsonObject | undefined {
  const text = bytes.toString('utf8', 0, length);
  // Decoding replaces every invalid UTF-8 sequence with U+FFFD, so only text holding one needs the
  // strict check. A BOM decodes to U+FEFF, which JSON.parse refuses.
  if (text.indexOf('\uFFFD') !== -1 && !isUtf8(bytes.subarray(0, length))) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
    // Inside the try: absurd nesting overflows the stack of the walk, and is refused.
    if (!isDuplicateFree(text, value)) return undefined;
  } catch {
    return undefined;
  }
  return value as JsonObject;
}

/** Parse a UTF-8 string as one strict JSON object (see {@link parseJsonObject}). */
export function parseJsonObjectText(text: string): JsonObject | undefined {
  return parseJsonObject(Buffer.from(text, 'utf8'));
}

/** Why the strict parser refused a document: see {@link strictJsonFault}. */
export type StrictJsonFault = 'repeated' | 'too_deep' | 'not_utf8';

/**
 * Why a document that `JSON.parse` read as `value` is refused by the strict parser, for documents
 * read with `JSON.parse` first (to tell "not JSON" apart): `'not_utf8'` when the bytes are not
 * UTF-8, `'too_deep'` when objects and arrays nest past what the duplicate check can walk (it
 * overflows the stack, some thousands of levels), `'repeated'` when the text names a member twice
 * in one object; `undefined` when the strict parser agrees, or when `value` is not an object (the
 * caller's own shape check says what is wrong).
 *
 * Only the refusal path pays for telling these apart: {@link parseJsonObject} refuses them all alike.
 *
 * @example
 * ```ts
 * const value = JSON.parse(text);
 * const fault = strictJsonFault(text, value);
 * if (fault !== undefined) throw new Error(STRICT_JSON_FAULTS[fault]);
 * ```
 */
export function strictJsonFault(document: string | Buffer, value: unknown): StrictJsonFault | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const bytes = typeof document === 'string' ? Buffer.from(document, 'utf8') : document;
  if (parseJsonObject(bytes) !== undefined) return undefined;
  if (!isUtf8(bytes)) return 'not_utf8';
  // UTF-8 JSON with an object at the top that parseJsonObject refused: a duplicate, or a walk that
  // overflowed the stack. The walk is run again to tell which. It can also succeed here, a few
  // frames shallower than in parseJsonObject, for a document within a frame or two of the limit.
  try {
    return isDuplicateFree(bytes.toString('utf8'), value) ? 'too_deep' : 'repeated';
  } catch {
    return 'too_deep';
  }
}

/** {@link strictJsonFault} as a sentence for an error message. */
export const STRICT_JSON_FAULTS = {
  repeated: 'a member name is repeated in one object (write each member once)',
  too_deep: 'objects and arrays are nested too deeply to check for repeated member names',
  not_utf8: 'not UTF-8',
} as const satisfies Record<StrictJsonFault, string>;

/**
 * {@link strictJsonFault} as what a document does, after its name: `response repeats a member name
 * in one object`. For documents from elsewhere (an upstream's response), where the advice of
 * {@link STRICT_JSON_FAULTS} is not the reader's to follow.
 */
export const STRICT_JSON_REFUSALS = {
  repeated: 'repeats a member name in one object',
  too_deep: 'nests objects and arrays too deeply',
  not_utf8: 'is not UTF-8',
} as const satisfies Record<StrictJsonFault, string>;
