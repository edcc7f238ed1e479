/**
 * The forwarder of MCP routes: the same streaming forwarder, replacing the upstream's
 * `Mcp-Session-Id` in the response head with the id the caller receives (the session signed for
 * the caller, see `sessions.ts`) before the head goes out. An upstream session id that is not
 * visible ASCII, too long or repeated fails the exchange (502): it could not be signed, and
 * passing it on would let the caller see an id the gateway cannot check. A legacy HTTP+SSE
 * `endpoint` event's session is signed too, or its stream cut (see `legacy.ts`).
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import { type ErrorCode, TesseraError } from '../../core/errors.ts';
import { REPRESENTATION_HEADERS } from '../http/headers.ts';
import { type ForwardCallbacks, ForwardHandler, plainEncoding, rawHeader, StreamClosed, validStatus } from '../proxy/forward.ts';
import type { StreamCloseReason } from '../streams.ts';
import { EventIdSigner, isEventStream } from './events.ts';
import { EndpointSigner } from './legacy.ts';
import { isJsonContentType, RPC_SERVER_ERROR, rpcErrorBody } from './message.ts';
import { validSessionId } from './sessions.ts';
import { filterToolsMessage, MessageKeys, type Refusal, ToolsListEvents, type ToolsListFilter, ToolsListInvalid } from './tools-list.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The upstream answered with a session id the gateway refuses to pass on. */
export class UpstreamSessionInvalid extends Error {
  override readonly name = 'UpstreamSessionInvalid';
  readonly code = 'mcp_upstream_session_invalid';
}

/**
 * The upstream's response head with its `Mcp-Session-Id` replaced by `sign(id)`: unchanged
 * without one, `undefined` when it is invalid or repeated.
 */
export function signedHead(raw: readonly Buffer[], sign: (id: string) => string): Buffer[] | undefined {
  let at = -1;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as Buffer;
    if (name.length !== 14 || name.toString('latin1').toLowerCase() !== 'mcp-session-id') continue;
    if (at >= 0) return undefined; // repeated: ambiguous
    at = i;
  }
  if (at < 0) return raw as Buffer[];
  const id = (raw[at + 1] as Buffer).toString('latin1');
  if (!validSessionId(id)) return undefined;
  const out = raw.slice();
  out[at + 1] = Buffer.from(sign(id), 'latin1');
  return out;
}

/** How the caller's ids are signed on one exchange of an MCP route. */
export interface McpSigning {
  /** The id the caller receives for an upstream session id. */
  readonly session: (id: string) => string;
  /** The id the caller receives for an SSE event id on `session` (the upstream's own id, or `null`). */
  readonly event: (session: string | null, id: string) => string;
  /** The upstream session the request named, if any. */
  readonly requestSession: string | undefined;
  /**
   * The URL the caller receives for a legacy HTTP+SSE `endpoint` event's (see `legacy.ts`): its
   * session signed; `undefined` when it cannot be bound, which fails the stream.
   */
  readonly endpoint: (url: string) => string | undefined;
}

/**
 * A tools/list request's answer is filtered ({@link ToolsListFilter}), and the outcome reported; or,
 * `listing: false`, the event stream answering any other request of an MCP route (a GET's included).
 */
export interface ToolsListForward extends ToolsListFilter {
  /** Once per response: how many tools it no longer lists, or why it was refused ({@link Refusal}). */
  readonly report: (outcome: number | Refusal) => void;
}

/** The UTF-8 byte-order mark, which a client's JSON decoding (fetch's `json()`) skips. */
const BOM = [0xef, 0xbb, 0xbf];

/**
 * Another answer than a tools/list's, not an event stream, read for a tools list: its head and
 * bytes held up to the limit, then (`streaming`) passed as they come, its keys still read.
 */
interface ReadAnswer {
  readonly status: number;
  readonly raw: Buffer[];
  readonly resume: () => void;
  chunks: Buffer[];
  total: number;
  readonly keys: MessageKeys;
  /** How many bytes of a leading BOM were skipped (3 once past the start). */
  bom: number;
  streaming: boolean;
}

/** May a message read so far by `keys` carry a tools list (or be read as one by a lax parser)? */
const mayList = (keys: MessageKeys): boolean => keys.mayListTools || keys.kind === 'ambiguous';

/** A raw response head without the headers describing the upstream's bytes ({@link REPRESENTATION_HEADERS}). */
export function withoutRepresentation(raw: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as Buffer;
    if (REPRESENTATION_HEADERS.has(name.toString('latin1').toLowerCase())) continue;
    out.push(name, raw[i + 1] as Buffer);
  }
  return out;
}

/**
 * Signs the upstream's session id for the caller before the head reaches it, and the event ids
 * of an event stream as they pass (see `events.ts`). The 2xx answer to a tools/list (`tools`) is
 * filtered (see `tools-list.ts`): a JSON body read whole (at most `tools.limit` bytes) and sent
 * rewritten with its new length; an event stream as it passes. A 2xx answer that is neither, is
 * compressed, or cannot be read whole fails the exchange with {@link ToolsListInvalid} (nothing of
 * it relayed); an event stream that turns out ambiguous is cut. With `tools.listing` false (any
 * other request, a GET stream resumed or standalone), every event stream is filtered the same way,
 * and one that is compressed fails the exchange: it could replay a tools/list response unread; a
 * response event past `tools.limit` streams unless it shows a tools list, and is cut if it shows
 * one after it began to go out. A JSON (or any other) answer to any other request is read the same
 * way ({@link ReadAnswer}): held up to `tools.limit` and filtered if its result lists tools, else
 * streamed once past the limit, cut if a tools list shows up; compressed and naming JSON, refused.
 */
/**
 * Why the gateway ends a request's stream that the request's JSON-RPC error then ends
 * ({@link SessionForwardHandler.lastBytes}): the caller's authority is gone, and a resume would be
 * refused. Not a shutdown: another instance may serve the resume.
 */
const CLOSE_REASONS: ReadonlySet<string> = new Set([
  'token_revoked',
  'revocation_unavailable',
  'revocation_state_stale',
  'token_expired',
  'token_inactive',
  'token_scope_narrowed',
  'token_identity_changed',
  'policy_condition_failed',
  'token_audience_invalid',
  'introspection_unavailable',
  'credential_withdrawn',
  'config_narrowed',
] satisfies StreamCloseReason[]);

export class SessionForwardHandler extends ForwardHandler {
  readonly #sign: McpSigning;
  readonly #ownCredential: boolean;
  readonly #tools: ToolsListForward | undefined;
  #events: EventIdSigner | undefined;
  #endpoints: EndpointSigner | undefined;
  #toolEvents: ToolsListEvents | undefined;
  /** A JSON tools/list answer being read whole: its head (signed), then its body. */
  #held: { status: number; raw: Buffer[]; resume: () => void; chunks: Buffer[]; total: number } | undefined;
  /** Any other answer that is not an event stream, read for a tools list ({@link ReadAnswer}). */
  #answer: ReadAnswer | undefined;
  /** The id of the JSON-RPC request (a POST) the stream answers; `undefined` for any other. */
  readonly #rpcId: string | number | undefined;
  /** The relayed stream's current line is empty, and no field line opened an event since the last one ended. */
  #lineEmpty = true;
  #eventOpen = false;
  #lastCr = false;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    sign: McpSigning,
    ownCredential = false,
    tools?: ToolsListForward,
    rpcId?: string | number,
  ) {
    super(res, cb, extra, ownCredential);
    this.#sign = sign;
    this.#ownCredential = ownCredential;
    this.#tools = tools;
    this.#rpcId = rpcId;
  }

  /**
   * A request's event stream the gateway ends (its token revoked or expired, its authority gone, or
   * its answer refused) ends with one more event, the JSON-RPC error answering the request (MCP:
   * the stream of a POST should end with the request's response; the SDK client otherwise waits for
   * it until its request timeout, or resumes, to be refused): when what was relayed ends between
   * two events. Otherwise (an event begun) the connection is cut, as at shutdown, which a client
   * may resume elsewhere.
   */
  override lastBytes(error: Error): string | undefined {
    if (!(error instanceof StreamClosed) || !CLOSE_REASONS.has(error.reason)) return undefined;
    return this.errorEvent(RPC_SERVER_ERROR, new TesseraError(error.reason as ErrorCode).description);
  }

  /** The event carrying the request's JSON-RPC error, when the stream relayed so far can end with it. */
  protected errorEvent(code: number, message: string): string | undefined {
    if (this.#rpcId === undefined || this.#events === undefined || !this.#lineEmpty || this.#eventOpen) return undefined;
    return `data: ${rpcErrorBody(code, message, this.#rpcId)}\n\n`;
  }

  /** Follows where the relayed stream stands (SSE lines end with CR, LF or CRLF; an empty line ends an event). */
  #track(bytes: Buffer): void {
    let from = bytes.length;
    while (from > 0 && (bytes[from - 1] === 0x0a || bytes[from - 1] === 0x0d)) from--;
    if (from > 0) {
      // A field (or comment) line is open, or ended: only the line ends after it matter.
      this.#lineEmpty = false;
      this.#eventOpen = true;
      this.#lastCr = false;
    }
    for (let i = from; i < bytes.length; i++) {
      const cr = bytes[i] === 0x0d;
      if (!cr && this.#lastCr) {
        // The LF of a CRLF: the line already ended at its CR.
        this.#lastCr = false;
        continue;
      }
      if (this.#lineEmpty) this.#eventOpen = false;
      this.#lineEmpty = true;
      this.#lastCr = cr;
    }
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    // A 401 to the gateway's own credential, or a status outside 100–599, is refused whole (no head reaches the caller).
    if (status < 200 || !validStatus(status) || (status === 401 && this.#ownCredential)) return super.onHeaders(status, raw, resume);
    let head = signedHead(raw, this.#sign.session);
    if (head === undefined) {
      this.abort(new UpstreamSessionInvalid('the upstream sent an invalid Mcp-Session-Id'));
      return false;
    }
    // An upstream compressing anyway (it was asked for identity): its ids cannot be read, so they
    // pass unsigned (a resume from one is then refused), and its bytes are never rewritten.
    const encoding = rawHeader(raw, 'content-encoding');
    const type = rawHeader(raw, 'content-type');
    const tools = this.#tools;
    if (tools !== undefined) {
      const length = rawHeader(raw, 'content-length');
      // The 2xx answer to a tools/list must list tools; any event stream may (a resumed one replays them).
      // A 202 is no answer (the legacy HTTP+SSE transport's: the response goes on its GET stream, read
      // as every stream is): read as any other request's answer.
      const listing = tools.listing !== false && status < 300 && status !== 202;
      if (listing && (status === 204 || length === '0')) {
        // Nothing in it to filter.
      } else if (type === null || length === null || (isEventStream(type) && !plainEncoding(encoding))) {
        // A repeated Content-Type or Content-Length, or a stream that cannot be read: it may carry tools.
        this.abort(new ToolsListInvalid());
        return false;
      } else if (isEventStream(type)) {
        this.#toolEvents = new ToolsListEvents(tools, tools.report);
        // The stream is rewritten: a length or digest of the upstream's bytes would not hold.
        head = withoutRepresentation(head);
      } else if (!listing) {
        // Not a tools/list, not a stream: its answer is read for a tools list all the same. The MCP
        // SDK's server in JSON response mode routes a response by its JSON-RPC id alone, so a second
        // request of a pending tools/list's id on the session receives the tools/list result.
        // Held up to the limit (filtered if it lists tools), then streamed, cut if one shows up.
        if (status !== 204 && length !== '0') {
          if (!plainEncoding(encoding)) {
            // Compressed anyway: unreadable. Refused when a client may read it as JSON.
            if (type === undefined || /json/i.test(type)) {
              this.abort(new ToolsListInvalid());
              return false;
            }
          } else {
            this.#answer = {
              status,
              raw: head,
              resume,
              chunks: [],
              total: 0,
              keys: new MessageKeys(tools.refuseTasks === true),
              bom: 0,
              streaming: false,
            };
            return true;
          }
        }
      } else if (plainEncoding(encoding) && isJsonContentType(type) && (length === undefined || Number(length) <= tools.limit)) {
        this.#held = { status, raw: head, resume, chunks: [], total: 0 };
        return true;
      } else {
        this.abort(new ToolsListInvalid());
        return false;
      }
    }
    if (isEventStream(type ?? undefined) && (encoding === undefined || encoding?.trim().toLowerCase() === 'identity')) {
      // The stream's events belong to the session the response opens, or else the one the request named.
      const session = rawHeader(raw, 'mcp-session-id') ?? this.#sign.requestSession ?? null;
      const event = this.#sign.event;
      this.#events = new EventIdSigner((id) => event(session, id));
      this.#endpoints = new EndpointSigner(this.#sign.endpoint);
    }
    return super.onHeaders(status, head, resume);
  }

  override onData(chunk: Buffer): boolean {
    const answer = this.#answer;
    if (answer !== undefined) return this.#readAnswer(answer, chunk);
    const held = this.#held;
    if (held !== undefined) {
      held.total += chunk.length;
      if (held.total > (this.#tools as ToolsListForward).limit) {
        this.abort(new ToolsListInvalid());
        return false;
      }
      held.chunks.push(chunk);
      return true;
    }
    let out = chunk;
    const tools = this.#toolEvents;
    if (tools !== undefined) {
      out = tools.push(chunk);
      if (tools.failed) {
        if (out.length > 0) this.#send(out);
        this.abort(new ToolsListInvalid(tools.failedTasks));
        return false;
      }
    }
    return this.#send(out);
  }

  /**
   * Sends `bytes` through the endpoint and event id signers. An endpoint event that cannot be
   * bound fails the exchange (what came before it goes, the event never does): aborted upstream,
   * or, `over` (the upstream's response has ended), failed here.
   */
  #send(bytes: Buffer, over = false): boolean {
    const endpoints = this.#endpoints;
    if (endpoints !== undefined) {
      bytes = endpoints.push(bytes);
      if (endpoints.failed) {
        this.#relay(bytes);
        const error = new UpstreamSessionInvalid('the upstream sent an endpoint event the gateway cannot bind');
        if (over) this.onError(error);
        else this.abort(error);
        return false;
      }
    }
    return this.#relay(bytes);
  }

  #relay(bytes: Buffer): boolean {
    if (this.#events !== undefined) bytes = this.#events.push(bytes);
    if (bytes.length === 0) return true;
    if (this.#rpcId !== undefined && this.#events !== undefined) this.#track(bytes);
    return super.onData(bytes);
  }

  /**
   * A chunk of an answer read for a tools list: held, or (past the limit, no tools list seen) sent.
   * A chunk showing one after the answer began to go out is not sent: the answer is cut.
   */
  #readAnswer(answer: ReadAnswer, chunk: Buffer): boolean {
    let bytes = chunk;
    while (answer.bom < 3 && bytes.length > 0 && bytes[0] === BOM[answer.bom]) {
      answer.bom++;
      bytes = bytes.subarray(1);
    }
    if (bytes.length > 0) answer.bom = 3;
    answer.keys.feed(bytes);
    if (answer.streaming) {
      if (mayList(answer.keys)) {
        this.abort(new ToolsListInvalid(answer.keys.mayListTasks));
        return false;
      }
      return super.onData(chunk);
    }
    answer.chunks.push(chunk);
    answer.total += chunk.length;
    if (answer.total <= (this.#tools as ToolsListForward).limit) return true;
    if (mayList(answer.keys)) {
      this.abort(new ToolsListInvalid(answer.keys.mayListTasks));
      return false;
    }
    answer.streaming = true;
    const held = Buffer.concat(answer.chunks, answer.total);
    answer.chunks = [];
    if (!super.onHeaders(answer.status, answer.raw, answer.resume)) return false;
    return super.onData(held);
  }

  /** An answer read whole: passed as it came, or, carrying a tools list, filtered (or the exchange failed). */
  #completeAnswer(answer: ReadAnswer): void {
    const body = Buffer.concat(answer.chunks, answer.total);
    if (!mayList(answer.keys)) {
      if (!super.onHeaders(answer.status, answer.raw, answer.resume)) return;
      if (body.length > 0) super.onData(body);
      super.onComplete();
      return;
    }
    const tools = this.#tools as ToolsListForward;
    let text: string | undefined;
    try {
      text = utf8.decode(body);
    } catch {
      text = undefined;
    }
    const filtered = text === undefined ? undefined : filterToolsMessage(text, { ...tools, listing: false });
    if (filtered === undefined || !filtered.ok) {
      this.onError(new ToolsListInvalid(filtered?.tasks === true));
      return;
    }
    if (filtered.listed) tools.report(filtered.hidden);
    const bytes = Buffer.from(filtered.text, 'utf8');
    const raw = withoutRepresentation(answer.raw);
    raw.push(Buffer.from('content-length'), Buffer.from(String(bytes.length)));
    if (!super.onHeaders(answer.status, raw, answer.resume)) return;
    super.onData(bytes);
    super.onComplete();
  }

  override onComplete(): void {
    const answer = this.#answer;
    if (answer !== undefined && !answer.streaming) {
      this.#answer = undefined;
      this.#completeAnswer(answer);
      return;
    }
    const held = this.#held;
    if (held !== undefined) {
      this.#held = undefined;
      this.#completeHeld(held);
      return;
    }
    const toolsRest = this.#toolEvents?.end();
    if (toolsRest !== undefined && toolsRest.length > 0 && !this.#send(toolsRest, true) && this.#endpoints?.failed) return;
    const endpointsRest = this.#endpoints?.end();
    if (endpointsRest !== undefined && endpointsRest.length > 0) this.#relay(endpointsRest);
    const rest = this.#events?.end();
    if (rest !== undefined && rest.length > 0) super.onData(rest);
    super.onComplete();
  }

  /** A JSON tools/list answer, read whole: sent filtered with its new length, or the exchange failed. */
  #completeHeld(held: { status: number; raw: Buffer[]; resume: () => void; chunks: Buffer[]; total: number }): void {
    const tools = this.#tools as ToolsListForward;
    let text: string | undefined;
    try {
      text = utf8.decode(Buffer.concat(held.chunks, held.total));
    } catch {
      text = undefined;
    }
    const filtered = text === undefined ? undefined : filterToolsMessage(text, tools);
    if (filtered === undefined || !filtered.ok) {
      // The exchange is over upstream: fail it here (nothing relayed).
      this.onError(new ToolsListInvalid(filtered?.tasks === true));
      return;
    }
    tools.report(filtered.hidden);
    const bytes = Buffer.from(filtered.text, 'utf8');
    const raw = withoutRepresentation(held.raw);
    raw.push(Buffer.from('content-length'), Buffer.from(String(bytes.length)));
    if (!super.onHeaders(held.status, raw, held.resume)) return;
    super.onData(bytes);
    super.onComplete();
  }
}
