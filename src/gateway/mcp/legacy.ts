/**
 * Sessions of MCP's deprecated HTTP+SSE transport (protocol 2024-11-05; the TypeScript SDK's
 * `SSEServerTransport`, the Python SDK's `SseServerTransport`), bound to their principal as
 * `Mcp-Session-Id` is (see `sessions.ts`). Such a server names its session in the `endpoint` event
 * of the GET stream (`data: /messages?sessionId=S`) and the client then POSTs every message to that
 * URL. The gateway rewrites the event's `S` to `S.<mac>` (signed for the caller and the route) as
 * the stream passes ({@link EndpointSigner}), and a request whose query names a session
 * ({@link legacySession}) is let through, with the bare `S`, only when the MAC verifies for the
 * principal making it.
 *
 * @module
 */

import { HeldLine } from './held-line.ts';
import { validSessionId } from './sessions.ts';

/** The query parameters the SDKs name the session with: TypeScript's `sessionId`, Python's `session_id`. */
const NAMES: ReadonlySet<string> = new Set(['sessionId', 'session_id']);

/** application/x-www-form-urlencoded decoding of one name or value; `undefined` when malformed. */
function formDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

/**
 * Could an upstream's query parser read this parameter as a session: `sessionId`, `session_id`,
 * or a spelling some parser folds into one (case, `-`/`_`/`.`, percent-encoding, qs's
 * `sessionId[]`/`sessionId[0]`)? A malformed percent-encoding is read as qs does, literally.
 */
function namesSession(rawName: string): boolean {
  const name = formDecode(rawName) ?? rawName;
  const bracket = name.indexOf('[');
  return (bracket < 0 ? name : name.slice(0, bracket)).toLowerCase().replace(/[^a-z0-9]/g, '') === 'sessionid';
}

/** The session a query names. */
export type LegacySession =
  | { readonly kind: 'none' }
  /** Named more than once, in a spelling other than the SDKs', without a value, or not decodable. */
  | { readonly kind: 'invalid' }
  | {
      readonly kind: 'one';
      /** The value as presented (decoded). */
      readonly value: string;
      /** The query (`?…`) with that value replaced by `id`, everything else as it was. */
      readonly replace: (id: string) => string;
    };

const NONE: LegacySession = { kind: 'none' };
const INVALID: LegacySession = { kind: 'invalid' };

/**
 * The legacy session `query` (`''` or `?…`) names. Parameters are split on `&` and on `;` (which
 * some parsers still take as a separator), so no upstream finds a session parameter this did not.
 *
 * @example
 * ```ts
 * legacySession('?sessionId=abc'); // { kind: 'one', value: 'abc', replace }
 * legacySession('?sessionId=a&sessionId=b'); // { kind: 'invalid' }
 * ```
 */
export function legacySession(query: string): LegacySession {
  if (query.length <= 1) return NONE;
  // Separators kept, at odd indices: the query is put back together byte for byte.
  const parts = query.slice(1).split(/([&;])/);
  let at = -1;
  for (let i = 0; i < parts.length; i += 2) {
    const part = parts[i] as string;
    const eq = part.indexOf('=');
    if (!namesSession(eq < 0 ? part : part.slice(0, eq))) continue;
    if (at >= 0) return INVALID;
    at = i;
  }
  if (at < 0) return NONE;
  const part = parts[at] as string;
  const eq = part.indexOf('=');
  if (eq < 0) return INVALID;
  const rawName = part.slice(0, eq);
  const name = formDecode(rawName);
  const value = formDecode(part.slice(eq + 1));
  if (name === undefined || !NAMES.has(name) || value === undefined) return INVALID;
  return {
    kind: 'one',
    value,
    replace: (id) => {
      const out = parts.slice();
      out[at] = `${rawName}=${encodeURIComponent(id)}`;
      return `?${out.join('')}`;
    },
  };
}

/**
 * The endpoint URL an upstream sent with its session `S` replaced by `sign(S)`; unchanged when it
 * names no session; `undefined` when the session cannot be bound (named twice or in another
 * spelling, not visible ASCII, longer than the gateway signs).
 */
export function signEndpoint(url: string, sign: (id: string) => string): string | undefined {
  const hash = url.indexOf('#');
  const q = url.indexOf('?');
  if (q < 0 || (hash >= 0 && hash < q)) return url;
  const end = hash < 0 ? url.length : hash;
  const found = legacySession(url.slice(q, end));
  if (found.kind === 'none') return url;
  if (found.kind === 'invalid' || !validSessionId(found.value)) return undefined;
  return url.slice(0, q) + found.replace(sign(found.value)) + url.slice(end);
}

const CR = 0x0d;
const LF = 0x0a;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const EVENT = Buffer.from('event:', 'latin1');
const DATA = Buffer.from('data:', 'latin1');
/** `event: endpoint`: a longer event line names another event type. */
const EVENT_LINE_MAX = 15;
/** The longest `data:` line of an endpoint event the gateway reads; a longer one fails the stream. */
export const ENDPOINT_LINE_MAX = 8192;

/** What the line being read is, as far as it is known yet. */
type Kind = 'unknown' | 'event' | 'data' | 'pass';

/**
 * Rewrites the `endpoint` events of an SSE stream (WHATWG HTML §9.2.6), passing everything else
 * byte for byte as it arrives. Held: a line while it may still be an `event` line (at most
 * {@link EVENT_LINE_MAX} bytes) and the `data` line of an endpoint event (at most
 * {@link ENDPOINT_LINE_MAX}), which goes out as `rewrite` returns it. The stream fails
 * ({@link failed}, the offending line not sent) when an endpoint event cannot be bound: `rewrite`
 * refuses its URL, it has a second data line, its data line is longer than read, or it is typed
 * `endpoint` only after one of its data lines went out unread. An event's type is its last
 * `event` line, as a client reads it.
 *
 * @example
 * ```ts
 * const endpoints = new EndpointSigner((url) => signEndpoint(url, sign));
 * const out = endpoints.push(chunk); // send `out`; then stop if endpoints.failed
 * ```
 */
export class EndpointSigner {
  readonly #rewrite: (url: string) => string | undefined;
  #kind: Kind = 'unknown';
  readonly #held = new HeldLine();
  /** Before the first line ends: a BOM there is not part of the field name. */
  #first = true;
  /** The last line ended with CR: an LF right after it ends no other line. */
  #afterCr = false;
  /** The current event is typed `endpoint`. */
  #endpoint = false;
  /** A data line of the current event went out. */
  #data = false;
  /** The stream cannot go on: an endpoint event could not be bound. */
  failed = false;

  constructor(rewrite: (url: string) => string | undefined) {
    this.#rewrite = rewrite;
  }

  /** The bytes to send for `chunk`: everything but a held partial line (and, once {@link failed}, nothing more). */
  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    if (this.failed) return Buffer.alloc(0);
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i] as number;
      if (b === LF && this.#afterCr) {
        this.#afterCr = false;
        out.push(chunk.subarray(i, i + 1));
        from = i + 1;
        continue;
      }
      this.#afterCr = false;
      if (b === CR || b === LF) {
        if (this.#kind === 'pass') out.push(chunk.subarray(from, i + 1));
        else {
          this.#held.hold(chunk.subarray(from, i));
          const line = this.#finish();
          if (line === undefined) return this.#fail(out);
          out.push(line, chunk.subarray(i, i + 1));
        }
        from = i + 1;
        this.#kind = 'unknown';
        this.#first = false;
        this.#afterCr = b === CR;
        continue;
      }
      if (this.#kind === 'pass') continue;
      if (this.#kind === 'unknown') {
        // A few bytes tell the field: held one by one until they do.
        this.#held.hold(chunk.subarray(from, i + 1));
        from = i + 1;
        this.#kind = this.#classify();
        if (this.#kind === 'data' && !this.#endpoint) {
          this.#data = true;
          this.#kind = 'pass';
        }
        if (this.#kind === 'pass') out.push(this.#held.release());
        continue;
      }
      const seen = this.#held.size + (i - from) + 1 - this.#bomBytes();
      if (this.#kind === 'event' && seen > EVENT_LINE_MAX) {
        // Longer than `event: endpoint`: the event is of another type now.
        this.#endpoint = false;
        this.#held.hold(chunk.subarray(from, i + 1));
        from = i + 1;
        out.push(this.#held.release());
        this.#kind = 'pass';
      } else if (this.#kind === 'data' && seen > ENDPOINT_LINE_MAX) return this.#fail(out);
    }
    if (from < chunk.length) {
      if (this.#kind === 'pass') out.push(chunk.subarray(from));
      else this.#held.hold(chunk.subarray(from));
    }
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** What is still held when the stream ends (a last line without its end, never dispatched): sent as it is. */
  end(): Buffer {
    return this.failed ? Buffer.alloc(0) : this.#held.release();
  }

  #fail(out: Buffer[]): Buffer {
    this.failed = true;
    this.#held.release();
    return Buffer.concat(out);
  }

  /** How many bytes of the held line are a BOM opening the stream. */
  #bomBytes(): number {
    if (!this.#first) return 0;
    const held = this.#held.peek();
    const n = Math.min(held.length, 3);
    return held.subarray(0, n).equals(BOM.subarray(0, n)) ? n : 0;
  }

  /** The held start of a line: `event:…`, `data:…`, not yet known, or anything else (`pass`). */
  #classify(): Kind {
    const held = this.#held.peek();
    const at = this.#bomBytes();
    if (this.#first && at === held.length && at < 3) return 'unknown';
    const field = held.subarray(at);
    if (field.length < EVENT.length && field.equals(EVENT.subarray(0, field.length))) return 'unknown';
    if (field.length < DATA.length && field.equals(DATA.subarray(0, field.length))) return 'unknown';
    if (field.subarray(0, EVENT.length).equals(EVENT)) return 'event';
    if (field.subarray(0, DATA.length).equals(DATA)) return 'data';
    return 'pass';
  }

  /** The held line, complete: what to send for it, or `undefined` when the stream must fail. */
  #finish(): Buffer | undefined {
    const held = this.#held.release();
    const start = this.#first && held.subarray(0, 3).equals(BOM) ? 3 : 0;
    const field = held.subarray(start).toString('latin1');
    if (field === '') {
      // An empty line dispatches the event: the next one starts untyped.
      this.#endpoint = false;
      this.#data = false;
      return held;
    }
    const colon = field.indexOf(':');
    const name = colon < 0 ? field : field.slice(0, colon);
    let value = colon < 0 ? '' : field.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') {
      this.#endpoint = value === 'endpoint';
      // Its data went out unread.
      if (this.#endpoint && this.#data) return undefined;
      return held;
    }
    if (name !== 'data') return held;
    if (!this.#endpoint) {
      this.#data = true;
      return held;
    }
    // One URL per endpoint event: a second data line would join it with a newline.
    if (this.#data) return undefined;
    const url = this.#rewrite(value);
    if (url === undefined) return undefined;
    this.#data = true;
    return Buffer.concat([held.subarray(0, start), Buffer.from(`data: ${url}`, 'latin1')]);
  }
}
