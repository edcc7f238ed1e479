/**
 * Event ids of an MCP route's SSE responses, signed for the caller as sessions are: every
 * `id: E` line the upstream sends reaches the caller as `id: E.<mac>` (see `signEventId`), and a
 * stream resumed with `Last-Event-ID` goes on only with an id the gateway gave this caller on
 * this session. Everything else in the stream passes byte for byte, as it arrives: only a line
 * that may still turn out to be an `id` field is held, and at most {@link HOLD_MAX} bytes of it.
 *
 * @module
 */

import { HeldLine } from './held-line.ts';
import { MAX_SESSION_ID, validSessionId } from './sessions.ts';

const CR = 0x0d;
const LF = 0x0a;
const I = 0x69;
const D = 0x64;
const COLON = 0x3a;
const SPACE = 0x20;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
/** `id: ` and the longest id the gateway signs: a longer line is passed on as it is. */
const HOLD_MAX = 4 + MAX_SESSION_ID;

/** Is this `Content-Type` an event stream (`text/event-stream`, any parameters)? */
export function isEventStream(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase() === 'text/event-stream';
}

type Line = 'hold' | 'pass';

/**
 * Rewrites the `id` fields of an SSE stream (WHATWG HTML §9.2.6: lines end with CR, LF or CRLF;
 * a field is `name: value` with one optional space; one U+FEFF may open the stream). An id that
 * is not visible ASCII, or longer than the gateway signs, passes unsigned: the caller can read it
 * but not resume from it through the gateway.
 *
 * @example
 * ```ts
 * const ids = new EventIdSigner((id) => signEventId(key, route, session, id, principal));
 * res.write(ids.push(chunk)); // …for every chunk, then res.write(ids.end())
 * ```
 */
export class EventIdSigner {
  readonly #sign: (id: string) => string;
  /** Where the current line stands: still possibly an `id` line (held), or passed through. */
  #line: Line = 'hold';
  readonly #held = new HeldLine();
  /** Before the first line ends: a BOM there is not part of the field name. */
  #first = true;

  constructor(sign: (id: string) => string) {
    this.#sign = sign;
  }

  /** The bytes to send for `chunk`: everything but a held partial line. */
  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i] as number;
      if (b === CR || b === LF) {
        if (this.#line === 'hold') {
          this.#held.hold(chunk.subarray(from, i));
          out.push(this.#finish());
          out.push(chunk.subarray(i, i + 1));
        } else out.push(chunk.subarray(from, i + 1));
        from = i + 1;
        this.#line = 'hold';
        this.#first = false;
        continue;
      }
      if (this.#line !== 'hold') continue;
      // Decide as early as possible whether this line can be an id line; only those are held.
      const seen = this.#held.size + (i - from) + 1;
      if (seen <= 3 + (this.#first ? 3 : 0) || seen > HOLD_MAX + (this.#first ? 3 : 0)) {
        this.#held.hold(chunk.subarray(from, i + 1));
        from = i + 1;
        if (!this.#maybeId()) {
          out.push(this.#held.release());
          this.#line = 'pass';
        }
      }
    }
    if (from < chunk.length) {
      if (this.#line === 'hold') this.#held.hold(chunk.subarray(from));
      else out.push(chunk.subarray(from));
    }
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** What is still held when the stream ends (a last line without its end): sent as it is. */
  end(): Buffer {
    return this.#held.release();
  }

  /** The held bytes, without a leading BOM on the first line. */
  #fieldStart(held: Buffer): number {
    if (!this.#first) return 0;
    const n = Math.min(held.length, 3);
    return held.subarray(0, n).equals(BOM.subarray(0, n)) ? n : 0;
  }

  /** Can the line held so far still be an `id` line the gateway signs? */
  #maybeId(): boolean {
    if (this.#held.size > HOLD_MAX + (this.#first ? 3 : 0)) return false;
    const held = this.#held.peek();
    const at = this.#fieldStart(held);
    if (this.#first && at < 3 && held.length <= 3 && held.equals(BOM.subarray(0, held.length))) return true;
    const field = held.subarray(at);
    return (field.length < 1 || field[0] === I) && (field.length < 2 || field[1] === D) && (field.length < 3 || field[2] === COLON);
  }

  /** The held line, complete: an `id` line with a signable id comes back signed. */
  #finish(): Buffer {
    const held = this.#held.release();
    const at = this.#fieldStart(held);
    if (held.length - at < 3 || held[at] !== I || held[at + 1] !== D || held[at + 2] !== COLON) return held;
    let value = at + 3;
    if (held[value] === SPACE) value++;
    const id = held.subarray(value).toString('latin1');
    if (!validSessionId(id)) return held;
    return Buffer.concat([held.subarray(0, at), Buffer.from(`id: ${this.#sign(id)}`, 'latin1')]);
  }
}
