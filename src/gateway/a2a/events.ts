/**
 * The `data` of each event of an A2A answer's event stream, read as it arrives for the ids it
 * names (`answers.ts`).
 *
 * @module
 */
import { DEFAULT_MAX_ANSWER } from './answers.ts';

const BOM = [0xef, 0xbb, 0xbf];

/**
 * The `data` of each event of an SSE stream, fed chunk by chunk, parsed as WHATWG HTML §9.2.6
 * does: one U+FEFF skipped at the very start of the stream (and nowhere else: a later line of only
 * U+FEFF is a field named so, ignored, not the empty line that dispatches an event); lines end with
 * CR, LF or CRLF; `data: v` lines joined with LF; an empty line dispatches. The MCP filter
 * (`../mcp/tools-list.ts`, `ToolsListEvents`) reads streams alike.
 *
 * A stream opening with a partial BOM or with a byte that is not ASCII sets {@link ambiguous}:
 * clients read its first line differently (a decoder reads a lone EF as U+FFFD, so no field the
 * gateway reads; eventsource-parser strips a mis-decoded "ï»¿" as if it were a BOM, making the line
 * a data field), so the ids it names cannot be known. A line or an event's data passing `limit`
 * bytes sets {@link overflow} in the {@link push} of the chunk that passes it: its ids cannot be
 * read. Either way the caller must cut the stream before that chunk (the event has not ended yet:
 * no client has dispatched it), and nothing more is read.
 */
export class SseDataReader {
  /** A line or an event's data passed the limit: nothing more is read. */
  overflow = false;
  /** The stream opens with a partial BOM or a byte that is not ASCII: nothing more is read. */
  ambiguous = false;
  readonly #limit: number;
  #line: Buffer[] = [];
  #lineBytes = 0;
  #data: string[] = [];
  #dataBytes = 0;
  /** The previous chunk ended with a CR: a LF opening this one ends no second line. */
  #skipLf = false;
  /** A field line (`data`, `event`, `id`, `retry`, any other) since the last empty line. */
  #fields = false;
  /** How many bytes of a leading BOM (EF BB BF) the stream opened with. */
  #bom = 0;
  /** The first byte after the optional BOM has been read (and was ASCII). */
  #opened = false;

  constructor(limit: number = DEFAULT_MAX_ANSWER) {
    this.#limit = limit;
  }

  /**
   * The chunks pushed so far end between two events: no line begun, no field since the last
   * empty line (comments aside). An event written now is dispatched by a client as it is, not
   * merged into one the stream left unfinished. Not after part of a BOM: a client would read the
   * event's first line with those bytes before it, as an unknown field.
   */
  get betweenEvents(): boolean {
    return this.#line.length === 0 && !this.#fields && (this.#opened || this.#bom === 0 || this.#bom === 3);
  }

  /** The data of every event completed in `chunk`. */
  push(chunk: Buffer): string[] {
    const events: string[] = [];
    if (this.overflow || this.ambiguous) return events;
    let from = 0;
    for (let i = 0; i < chunk.length && !this.overflow; i++) {
      const b = chunk[i] as number;
      if (!this.#opened) {
        // Only the stream's first bytes may be a BOM (WHATWG HTML §9.2.6: the UTF-8 decode strips one).
        if (this.#bom < 3 && b === BOM[this.#bom]) {
          this.#bom++;
          from = i + 1;
          continue;
        }
        this.#opened = true;
        if ((this.#bom > 0 && this.#bom < 3) || b >= 0x80) {
          this.ambiguous = true;
          return events;
        }
      }
      if (b === 0x0a && this.#skipLf) {
        // The LF of a CRLF whose CR ended the previous chunk.
        this.#skipLf = false;
        from = i + 1;
        continue;
      }
      this.#skipLf = false;
      if (b !== 0x0a && b !== 0x0d) continue;
      this.#add(chunk.subarray(from, i));
      const event = this.#endLine();
      if (event !== undefined) events.push(event);
      if (b === 0x0d) {
        if (i + 1 >= chunk.length) this.#skipLf = true;
        else if (chunk[i + 1] === 0x0a) i++;
      }
      from = i + 1;
    }
    if (!this.overflow) this.#add(chunk.subarray(from));
    return events;
  }

  #add(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.#lineBytes += bytes.length;
    if (this.#lineBytes > this.#limit) {
      this.overflow = true;
      this.#line = [];
      return;
    }
    this.#line.push(bytes);
  }

  #endLine(): string | undefined {
    const line = Buffer.concat(this.#line).toString('utf8');
    this.#line = [];
    this.#lineBytes = 0;
    if (line === '') {
      this.#fields = false;
      const data = this.#data;
      this.#data = [];
      this.#dataBytes = 0;
      return data.length === 0 ? undefined : data.join('\n');
    }
    if (!line.startsWith(':')) this.#fields = true;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    if (name !== 'data') return undefined;
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    this.#dataBytes += Buffer.byteLength(value) + 1;
    if (this.#dataBytes > this.#limit) this.overflow = true;
    else this.#data.push(value);
    return undefined;
  }
}
