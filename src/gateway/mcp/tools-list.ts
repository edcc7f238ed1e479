/**
 * The answer to an MCP `tools/list`, filtered to the tools the caller may call: each listed tool is
 * kept when the route's rules would allow a `tools/call` of it (the caller decides that, see
 * {@link ToolsListFilter.allows}), so an agent is not offered tools that would be refused, nor
 * told their names. Both answer forms of Streamable HTTP are read: a JSON body
 * ({@link filterToolsMessage} on the whole of it) and an SSE stream ({@link ToolsListEvents}), in
 * which only the event carrying a JSON-RPC response is held and rewritten; every other event
 * passes as it arrives. Every event stream of an MCP route is read so, not only the one answering a
 * tools/list: a stream resumed with `Last-Event-ID` replays the upstream's stored events, a
 * tools/list response among them (`listing: false`). There, a response larger than the limit whose
 * result has shown no `tools` member by then (a large tools/call result) is not held to its end:
 * it streams, still read, and is cut if a `tools` member of its result shows up later.
 *
 * Fail closed: a result the gateway cannot read whole (over the limit, not JSON, a repeated or
 * look-alike key, `tools` not a list, the answer to the request without `tools`) is replaced by a
 * JSON-RPC error, never passed on unfiltered.
 *
 * @module
 */
import {
  hasDuplicateKeys,
  hasMemberLookalike,
  isDecidableName,
  isObject,
  MESSAGE_MEMBERS,
  memberFold,
  RPC_SERVER_ERROR,
  rpcErrorBody,
} from './message.ts';

/**
 * The tools/list answer could not be read whole and filtered: nothing of it is relayed. With
 * `tasks`, what was refused is a task list outside the answer to a tasks/list (`refuseTasks`): its
 * own reason (`mcp_upstream_task_list_refused`), so an operator tells an upstream relaying its task
 * list where it must not from a tools list the gateway could not read.
 */
export class ToolsListInvalid extends Error {
  override readonly name = 'ToolsListInvalid';
  readonly code: 'mcp_tools_list_invalid' | 'mcp_upstream_task_list_refused';
  constructor(tasks = false) {
    super(tasks ? 'the upstream sent a task list outside the answer to a tasks/list' : 'the upstream tools/list result cannot be filtered');
    this.code = tasks ? 'mcp_upstream_task_list_refused' : 'mcp_tools_list_invalid';
  }
}

/** How a response refused is reported: a tools list that cannot be filtered, or a task list where none may be. */
export type Refusal = 'invalid' | 'tasks';

/** How one tools/list answer, or one event stream of an MCP route, is filtered. */
export interface ToolsListFilter {
  /** The request's JSON-RPC id (`null`: none, a GET): a response refused becomes an error with it. */
  readonly id: string | number | null;
  /**
   * The request is a tools/list (the default): its response (the one with {@link id}) must list
   * tools. `false`: an event stream answering another request, or opened or resumed by a GET, in
   * which every response carrying `tools` is filtered all the same and none is required to.
   */
  readonly listing?: boolean;
  /** May the caller call the tool `name` (a tools/call of it allowed by the route's rules)? */
  readonly allows: (name: string) => boolean;
  /**
   * Largest answer (JSON) or response event (SSE) held to be read whole, in bytes. Outside a
   * tools/list (`listing: false`) a larger response event whose result has shown no `tools` member
   * by then streams instead (cut if one shows up later).
   */
  readonly limit: number;
  /**
   * A result listing tasks (a `tasks` member: a tasks/list result, `mcp.list_tasks`) is refused as
   * one that cannot be filtered: a task list reaches the caller only in the answer to its own
   * tasks/list, filtered there (`task-list.ts`), never replayed or relayed elsewhere unfiltered.
   */
  readonly refuseTasks?: boolean;
}

/**
 * A message rewritten, with how many tools it no longer lists (`listed`: it had a `tools` list); or
 * refused (`tasks`: for a task list, `refuseTasks`).
 */
export type FilteredMessage =
  | { readonly ok: true; readonly text: string; readonly hidden: number; readonly listed: boolean }
  | { readonly ok: false; readonly tasks?: true };

const REFUSED: FilteredMessage = Object.freeze({ ok: false });
const REFUSED_TASKS: FilteredMessage = Object.freeze({ ok: false, tasks: true });

/** The fixed description of the JSON-RPC error a refused answer becomes (as for any upstream failure). */
export const TOOLS_LIST_ERROR_MESSAGE = 'The upstream service is unavailable.';

/** The JSON-RPC error that replaces a tools/list answer the gateway refuses. */
export function toolsListError(id: string | number | null): string {
  return rpcErrorBody(RPC_SERVER_ERROR, TOOLS_LIST_ERROR_MESSAGE, id);
}

const TOOLS_MEMBERS: readonly string[] = ['tools'];
const TASKS_MEMBERS: readonly string[] = ['tasks'];
const TOOL_MEMBERS: readonly string[] = ['name'];

/**
 * One JSON-RPC message of a tools/list answer, its tools filtered. A result response lists only the
 * tools `filter.allows` (a tool without a string name of 1 to 128 visible ASCII characters, or with
 * a key read as `name` another way, is dropped: it could not be called through the gateway), its
 * other members (`nextCursor`, `_meta`) kept. The response to the request must carry a `tools`
 * list; one answering another id passes unchanged unless it carries `tools` (a client may match ids
 * loosely: the MCP SDK's compares them as numbers, `"1"` for `1`), which are filtered. Outside a
 * tools/list (`filter.listing` false) every result carrying `tools` is read as a tools list and
 * filtered: a stream resumed with `Last-Event-ID` replays a tools/list response stored upstream, and
 * no other MCP result has a `tools` member (one that did would lose the tools the caller may not
 * call: the fail-closed choice). An error
 * response passes unchanged. Anything else is refused: not JSON, not an object, a repeated key, a key
 * an upstream parser would read as a member (`Result`), a `method` beside a `result`.
 */
export function filterToolsMessage(text: string, filter: ToolsListFilter): FilteredMessage {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return REFUSED;
  }
  if (!isObject(message) || hasDuplicateKeys(text) || hasMemberLookalike(message, MESSAGE_MEMBERS) || 'method' in message) return REFUSED;
  const result = message.result;
  if (result === undefined) return isObject(message.error) ? { ok: true, text, hidden: 0, listed: false } : REFUSED;
  if (!isObject(result)) return REFUSED;
  if (filter.refuseTasks === true && (result.tasks !== undefined || hasMemberLookalike(result, TASKS_MEMBERS))) return REFUSED_TASKS;
  if (hasMemberLookalike(result, TOOLS_MEMBERS)) return REFUSED;
  const tools = result.tools;
  if (tools === undefined)
    return filter.listing !== false && message.id === filter.id ? REFUSED : { ok: true, text, hidden: 0, listed: false };
  if (!Array.isArray(tools)) return REFUSED;
  const kept = tools.filter(
    (t) =>
      isObject(t) && typeof t.name === 'string' && !hasMemberLookalike(t, TOOL_MEMBERS) && isDecidableName(t.name) && filter.allows(t.name),
  );
  return {
    ok: true,
    text: JSON.stringify({ ...message, result: { ...result, tools: kept } }),
    hidden: tools.length - kept.length,
    listed: true,
  };
}

/** The JSON-RPC id (a string or a number) of a message's text, else `null`. */
function responseId(text: string): string | number | null {
  try {
    const message: unknown = JSON.parse(text);
    const id = isObject(message) ? message.id : undefined;
    return typeof id === 'string' || typeof id === 'number' ? id : null;
  } catch {
    return null;
  }
}

const CR = 0x0d;
const LF = 0x0a;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const BOM = [0xef, 0xbb, 0xbf];
const COLON = 0x3a;
const DATA = Buffer.from('data:');
const LF_BYTE = Buffer.from([LF]);
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** A top-level key longer than this is not compared; the event is then read whole (fail closed). */
const MAX_KEY = 256;

/**
 * What an event's JSON says it is, from its top-level keys as they arrive: `message` (a `method`
 * first: a request or notification), `response` (a `result` or `error`, or a batch), `other` (not a
 * JSON object or array), `unknown` (not yet known), `ambiguous` (a `method` and a `result` or
 * `error`, in either order, or a second value after a request or notification).
 */
export type MessageKind = 'unknown' | 'message' | 'response' | 'other' | 'ambiguous';

/**
 * Reads the keys of one event's data (the `data` fields' values joined with LF, as an SSE client
 * joins them) byte by byte, without parsing or keeping the values: the top-level keys, for what the
 * message is ({@link kind}), and the keys of `result`, for whether it is, or may be, a tools list
 * ({@link mayListTools}). It tracks strings (and their escapes) and nesting depth, so a `tools` key
 * deeper in the result (`structuredContent.tools`) or inside a string (`"text": "\"tools\":"`) is
 * not one. Only ASCII bytes decide (`"`, `\`, brackets, `,`, `:`): a UTF-8 decoder, even one
 * replacing invalid sequences, never swallows an ASCII byte, so the client's JSON parser sees the
 * same structure. Its memory is bounded (a key is kept up to {@link MAX_KEY} bytes).
 *
 * @example
 * ```ts
 * const keys = new MessageKeys();
 * keys.feed(Buffer.from('{"jsonrpc":"2.0","id":1,"result":{"content":[{"tools":1}],'));
 * keys.kind; // 'response'
 * keys.mayListTools; // false
 * keys.feed(Buffer.from('"tools":['));
 * keys.mayListTools; // true
 * ```
 */
export class MessageKeys {
  kind: MessageKind = 'unknown';
  /** A `tasks` member of `result` is read as `tools` is (a task list to refuse: `refuseTasks`). */
  readonly #tasks: boolean;
  /**
   * A member of `result` read as `tools` (as {@link memberFold} reads a key: `Tools`, `tool\u0073`
   * too), or one whose key cannot be read, or a batch, or a second value after the first: the
   * message may carry a tools list. Once set, it stays set.
   */
  mayListTools = false;
  /** Of those, a member read as `tasks` (with `tasks`): a task list. Once set, it stays set. */
  mayListTasks = false;
  #depth = 0;
  #closed = false;
  #inString = false;
  #escape = false;
  /** The next string at this depth is a key (only tracked at depth 1, and at depth 2 inside `result`). */
  #expectKey = false;
  #key: number[] | undefined;
  #keyTooLong = false;
  /** The last top-level key read is `result`, or may be: an object opening as its value is the result. */
  #resultKey = false;
  /** Inside the result object (at depth 2 or deeper). */
  #inResult = false;
  /** Nothing more to learn (not an object, ambiguous, a batch). */
  #done = false;

  constructor(tasks = false) {
    this.#tasks = tasks;
  }

  feed(bytes: Uint8Array): void {
    if (this.#done) return;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i] as number;
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (b === BACKSLASH) this.#escape = true;
        else if (b === QUOTE) {
          this.#inString = false;
          if (this.#key !== undefined) this.#endKey();
          if (this.#done) return;
          continue;
        }
        if (this.#key !== undefined) {
          if (this.#key.length < MAX_KEY) this.#key.push(b);
          else this.#keyTooLong = true;
        }
        continue;
      }
      if (b === 0x20 || b === 0x09 || b === LF || b === CR) continue;
      if (this.#depth === 0) {
        if (this.#closed) {
          // A second value: no JSON parser reads it; a lax one might, as anything.
          this.mayListTools = true;
          this.#classify('trailing');
        } else if (b === 0x7b) {
          this.#depth = 1;
          this.#expectKey = true;
        } else if (b === 0x5b) {
          // A batch (MCP has none since 2025-06-18): never read member by member.
          this.mayListTools = true;
          this.#classify('result');
        } else if (this.kind === 'unknown') this.kind = 'other';
        if (this.kind === 'other' || this.kind === 'ambiguous' || b === 0x5b) this.#done = true;
        if (this.#done) return;
        continue;
      }
      if (b === QUOTE) {
        this.#inString = true;
        if (this.#expectKey) {
          this.#key = [];
          this.#keyTooLong = false;
        }
      } else if (b === 0x7b) {
        this.#depth++;
        if (this.#depth === 2) this.#inResult = this.#resultKey;
        this.#resultKey = false;
        this.#expectKey = this.#depth === 2 && this.#inResult;
      } else if (b === 0x5b) {
        this.#depth++;
        if (this.#depth === 2) this.#inResult = false;
        this.#resultKey = false;
        this.#expectKey = false;
      } else if (b === 0x7d || b === 0x5d) {
        this.#depth--;
        if (this.#depth === 0) this.#closed = true;
        if (this.#depth <= 1) this.#inResult = false;
        this.#expectKey = false;
      } else if (b === 0x2c) {
        if (this.#depth === 1) this.#resultKey = false;
        this.#expectKey = this.#depth === 1 || (this.#depth === 2 && this.#inResult);
      } else if (b === COLON) this.#expectKey = false;
    }
  }

  #endKey(): void {
    const raw = Buffer.from(this.#key as number[]);
    this.#key = undefined;
    this.#expectKey = false;
    let key: string | undefined;
    if (!this.#keyTooLong) {
      try {
        key = raw.includes(BACKSLASH) ? (JSON.parse(`"${raw.toString('utf8')}"`) as string) : raw.toString('utf8');
      } catch {
        key = undefined; // an invalid escape: no JSON parser reads the message
      }
    }
    const name = key === undefined ? undefined : memberFold(key);
    if (this.#depth === 2) {
      // A member of the result.
      if (name === undefined || name === 'tools') this.mayListTools = true;
      else if (this.#tasks && name === 'tasks') this.mayListTools = this.mayListTasks = true;
      return;
    }
    // A top-level key: one that cannot be read may be `result` (its members are read as result's).
    this.#resultKey = name === undefined || name === 'result';
    if (this.#keyTooLong) this.#classify('result');
    else if (name === 'method') this.#classify('method');
    else if (name === 'result' || name === 'error') this.#classify('result');
    if (this.kind === 'ambiguous') this.#done = true;
  }

  #classify(seen: 'method' | 'result' | 'trailing'): void {
    if (seen === 'method') {
      if (this.kind === 'unknown') this.kind = 'message';
      else if (this.kind === 'response') this.kind = 'ambiguous';
    } else if (this.kind === 'unknown') this.kind = 'response';
    else if (this.kind === 'message') this.kind = 'ambiguous';
  }
}

/** Where the current event stands. */
type Mode =
  /** Not yet known to be a response or not: its bytes are held. */
  | 'scan'
  /** Not a response: its bytes pass as they arrive (its keys still read, for a late `result`). */
  | 'pass'
  /** A response: held whole, then filtered. */
  | 'hold'
  /** Passed the limit while held: dropped, and answered with an error. */
  | 'overflow'
  /**
   * Passed the limit while held, outside a tools/list, with no tools list seen in it: what was held
   * went out, the rest passes as it arrives, its keys still read; a tools list showing up later
   * cuts the stream ({@link ToolsListEvents.failed}).
   */
  | 'stream';

/**
 * Filters an SSE stream of an MCP route, the one answering a tools/list or any other (WHATWG HTML §9.2.6: lines end with CR, LF or CRLF;
 * a field is `name: value` with one optional space; one U+FEFF may open the stream; an event ends
 * with an empty line). A stream opening with a partial BOM, or whose first line opens with a byte
 * that is not ASCII, is refused ({@link failed}): a client's decoder and SSE parser may read that
 * line as another field than the filter would. An event whose data turns out to be a JSON-RPC request or notification (its
 * first member of note is `method`) passes as it arrives, held only until that is known; an event
 * carrying a response is held whole (at most `limit` bytes) and sent rewritten
 * ({@link filterToolsMessage}): its other fields as they were, its data on one line. A response
 * that cannot be filtered is sent as a JSON-RPC error event instead, and so is one passing the limit
 * in the stream answering a tools/list, or after its result showed a `tools` member. Outside a
 * tools/list (`listing: false`), a response passing the limit before its result showed a `tools`
 * member (a large tools/call result) is not a tools list so far: what was held goes out and the
 * rest streams as it arrives, its keys still read ({@link MessageKeys}). An event that shows a
 * `tools` member of its result after that point, or read as a notification that then shows a
 * `result` or `error` member, sets {@link failed} before its end is sent: the caller must cut the
 * stream.
 *
 * Cutting an event some of whose bytes went out leaks nothing a client acts on. An SSE client
 * dispatches an event only at the empty line that ends it (WHATWG HTML §9.2.6, "Interpreting an
 * event stream": "If the file ends in the middle of an event, before the final empty line, the
 * incomplete event is not dispatched"; the `id` field's value too takes effect only at dispatch,
 * so a cut event does not move Last-Event-ID). The MCP SDK client's parser (eventsource-parser 3,
 * behind `EventSourceParserStream`) builds an event's data from its lines and calls `onEvent` only
 * at an empty line; its stream has no flush that would dispatch a pending event, and a connection
 * reset errors the stream instead. The gateway cuts where the key ends, before any empty line of
 * the event, and sends nothing of the chunk holding the key's end: what went out is only what came
 * before the key (and at most a part of it, split across chunks), never the listed tools themselves.
 *
 * @example
 * ```ts
 * const tools = new ToolsListEvents({ id: 1, allows: (name) => name === 'echo', limit: 4 << 20 });
 * res.write(tools.push(chunk)); // for every chunk (abort when tools.failed), then res.write(tools.end())
 * ```
 */
export class ToolsListEvents {
  readonly #filter: ToolsListFilter;
  /** Called once per response filtered, with how many tools it hid, or why it was refused ({@link Refusal}). */
  readonly #report: (outcome: number | Refusal) => void;
  /**
   * An event read as a notification turned out to carry a response, or a response streamed past the
   * limit turned out to list tools: the stream must be cut now.
   */
  failed = false;
  /** {@link failed} for a task list (`refuseTasks`): the stream is cut for that reason. */
  failedTasks = false;

  #mode: Mode = 'scan';
  #keys: MessageKeys;
  /** The current event's bytes while held (scan, hold). */
  #held: Buffer[] = [];
  #heldBytes = 0;
  /** The current event has had a data line (the next one is joined to it with LF). */
  #hadData = false;

  // The current line.
  /** How many bytes of `data:` the line's field name matched so far, `undefined` once decided. */
  #prefix: number | undefined = 0;
  /** The line is a data field: its value goes to the key reader. */
  #data = false;
  /** A data value's one optional leading space is still to be skipped. */
  #skipSpace = false;
  /** The line has any byte (BOM aside): an empty line ends the event. */
  #lineHasBytes = false;
  /** The last chunk ended with a CR: what its LF, if the next chunk opens with one, belongs to. */
  #afterCr: 'line' | 'sent' | 'rewritten' | undefined;
  /** How many bytes of a leading BOM the stream opened with. */
  #bom = 0;
  /** The byte after the optional BOM has been read (and was ASCII). */
  #opened = false;
  /** The current event is the stream's first: its bytes may open with the stream's BOM. */
  #firstEvent = true;

  constructor(filter: ToolsListFilter, report: (outcome: number | Refusal) => void) {
    this.#filter = filter;
    this.#report = report;
    this.#keys = new MessageKeys(filter.refuseTasks === true);
  }

  /** The bytes to send for `chunk`. After {@link failed} is set, nothing more is returned. */
  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let from = 0;
    for (let i = 0; i < chunk.length && !this.failed; i++) {
      const b = chunk[i] as number;
      if (!this.#opened) {
        if (this.#bom < 3 && b === BOM[this.#bom]) {
          this.#bom++;
          continue; // not part of a field name; its bytes go out with the line
        }
        this.#opened = true;
        // A partial BOM, or a first line opening with a byte that is not ASCII: a client may read
        // that line otherwise (a decoder reads a lone EF as U+FFFD, so no `data:` field;
        // eventsource-parser strips a decoded "ï»¿", C3 AF C2 BB C2 BF, as if it were a BOM, making
        // the line a data field). No SSE server opens a stream so: refused whole.
        if (this.#bom > 0 && this.#bom < 3) this.failed = true;
        else if (b >= 0x80) this.failed = true;
        if (this.failed) break;
        this.#bom = 3;
      }
      if (b === LF && this.#afterCr !== undefined) {
        // The LF of a CRLF split across chunks: it belongs to the line the CR ended.
        const was = this.#afterCr;
        this.#afterCr = undefined;
        if (was === 'line') this.#take(chunk.subarray(i, i + 1), out);
        else if (was === 'sent') out.push(chunk.subarray(i, i + 1));
        from = i + 1;
        continue;
      }
      this.#afterCr = undefined;
      if (b === CR || b === LF) {
        // A CRLF is one line end: taken with its line.
        const end = b === CR && chunk[i + 1] === LF ? i + 2 : i + 1;
        this.#take(chunk.subarray(from, end), out);
        from = end;
        const cr = b === CR && end === chunk.length;
        if (this.#lineHasBytes) {
          this.#endLine();
          if (cr) this.#afterCr = 'line';
        } else {
          const sent = this.#endEvent(out);
          if (cr) this.#afterCr = sent ? 'sent' : 'rewritten';
        }
        i = end - 1;
        continue;
      }
      this.#lineHasBytes = true;
      if (this.#prefix !== undefined) {
        const n = this.#prefix + 1;
        if (b !== DATA[n - 1])
          this.#prefix = undefined; // another field, a comment
        else if (n === DATA.length) {
          this.#prefix = undefined;
          this.#data = true;
          this.#skipSpace = true;
          if (this.#hadData) this.#feed(LF_BYTE, out);
          this.#hadData = true;
        } else this.#prefix = n;
        continue;
      }
      if (!this.#data) continue;
      if (this.#skipSpace) {
        this.#skipSpace = false;
        if (b === 0x20) continue;
      }
      // The run of value bytes up to the line's end, read at once.
      let j = i + 1;
      while (j < chunk.length && chunk[j] !== CR && chunk[j] !== LF) j++;
      this.#feed(chunk.subarray(i, j), out);
      i = j - 1;
    }
    if (!this.failed && from < chunk.length) this.#take(chunk.subarray(from), out);
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** What is left when the stream ends: an event without its end is dropped (no client dispatches one). */
  end(): Buffer {
    this.#held = [];
    this.#heldBytes = 0;
    return Buffer.alloc(0);
  }

  /** Bytes of a data value: read for their keys, the mode moved on. */
  #feed(bytes: Buffer, out: Buffer[]): void {
    // A held response is read only where it may be streamed: outside a tools/list.
    if (this.#mode === 'overflow' || (this.#mode === 'hold' && this.#filter.listing !== false)) return;
    this.#keys.feed(bytes);
    const kind = this.#keys.kind;
    if (this.#mode === 'stream') {
      if (this.#keys.mayListTools || kind === 'ambiguous') {
        this.failed = true;
        this.failedTasks = this.#keys.mayListTasks;
      }
    } else if (this.#mode === 'scan') {
      if (kind === 'message' || kind === 'other') {
        // Not a response: what was held goes out, and the rest of the event as it comes.
        this.#mode = 'pass';
        this.#release(out);
      } else if (kind === 'response' || kind === 'ambiguous') this.#mode = 'hold';
    } else if (kind === 'ambiguous') this.failed = true;
  }

  /** `bytes` of the event: sent (pass, stream), held (scan, hold) or dropped (overflow, or past the limit). */
  #take(bytes: Buffer, out: Buffer[]): void {
    if (bytes.length === 0 || this.failed) return;
    if (this.#mode === 'pass' || this.#mode === 'stream') {
      out.push(bytes);
      return;
    }
    if (this.#mode === 'overflow') return;
    this.#heldBytes += bytes.length;
    if (this.#heldBytes > this.#filter.limit) {
      // Every byte taken was read first (a line's data is read before the line is taken).
      if (this.#filter.listing === false && !this.#keys.mayListTools && this.#keys.kind !== 'ambiguous') {
        this.#mode = 'stream';
        this.#release(out);
        out.push(bytes);
        return;
      }
      this.#mode = 'overflow';
      this.#held = [];
      this.#heldBytes = 0;
      return;
    }
    this.#held.push(bytes);
  }

  /**
   * What was held of the event goes out, as one buffer: it may be held in very many small chunks
   * (an upstream trickling bytes), too many to spread into a call's arguments.
   */
  #release(out: Buffer[]): void {
    if (this.#held.length > 0) out.push(Buffer.concat(this.#held));
    this.#held = [];
    this.#heldBytes = 0;
  }

  #endLine(): void {
    this.#prefix = 0;
    this.#data = false;
    this.#skipSpace = false;
    this.#lineHasBytes = false;
  }

  /**
   * An empty line: the event is complete (its bytes, the empty line's end included, were taken).
   * True when the event went out as it came, false when it was rewritten or replaced.
   */
  #endEvent(out: Buffer[]): boolean {
    const mode = this.#mode;
    if (mode === 'scan') this.#release(out);
    else if (mode === 'hold') out.push(this.#rewrite(Buffer.concat(this.#held, this.#heldBytes)));
    else if (mode === 'overflow') {
      this.#report(this.#keys.mayListTasks ? 'tasks' : 'invalid');
      out.push(Buffer.from(`event: message\ndata: ${toolsListError(this.#filter.id)}\n\n`));
    }
    this.#mode = 'scan';
    this.#keys = new MessageKeys(this.#filter.refuseTasks === true);
    this.#held = [];
    this.#heldBytes = 0;
    this.#hadData = false;
    this.#firstEvent = false;
    this.#endLine();
    return mode === 'scan' || mode === 'pass' || mode === 'stream';
  }

  /** A held response event, complete: its other fields as they were, its data filtered (or an error). */
  #rewrite(event: Buffer): Buffer {
    const out: Buffer[] = [];
    const data: Buffer[] = [];
    let at = 0;
    // The stream's BOM only: a later line opening with U+FEFF is a field of that name (WHATWG HTML §9.2.6).
    if (this.#firstEvent && event[0] === BOM[0] && event[1] === BOM[1] && event[2] === BOM[2]) at = 3;
    while (at < event.length) {
      let end = at;
      while (end < event.length && event[end] !== CR && event[end] !== LF) end++;
      const line = event.subarray(at, end);
      at = end + (event[end] === CR && event[end + 1] === LF ? 2 : 1);
      if (line.length === 0) continue;
      if (line.length >= 4 && line.subarray(0, 4).equals(DATA.subarray(0, 4)) && (line.length === 4 || line[4] === COLON)) {
        const value = line.subarray(Math.min(5, line.length));
        data.push(value[0] === 0x20 ? value.subarray(1) : value);
      } else out.push(line, LF_BYTE);
    }
    let text: string | undefined;
    try {
      text = utf8.decode(Buffer.concat(data.flatMap((d, i) => (i === 0 ? [d] : [LF_BYTE, d]))));
    } catch {
      text = undefined;
    }
    const filtered = text === undefined ? REFUSED : filterToolsMessage(text, this.#filter);
    // Outside a tools/list, only a response that listed tools is reported.
    if (!filtered.ok) this.#report(filtered.tasks === true ? 'tasks' : 'invalid');
    else if (filtered.listed || this.#filter.listing !== false) this.#report(filtered.hidden);
    // A rewritten message goes out on one data line (JSON.stringify writes no line break); one passed
    // as it was, on as many as it came on (its line breaks are the LFs the data lines were joined with).
    // Refused on a stream answering no request (a GET's): the error answers the response's own id,
    // when it has one, so the client's pending request ends instead of waiting out its timeout.
    const sent = filtered.ok ? filtered.text : toolsListError(this.#filter.id ?? (text === undefined ? null : responseId(text)));
    for (const line of sent.split('\n')) out.push(Buffer.from(`data: ${line}\n`, 'utf8'));
    out.push(LF_BYTE);
    return Buffer.concat(out);
  }
}
