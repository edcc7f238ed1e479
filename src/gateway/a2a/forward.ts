/**
 * The forwarder of A2A routes binding tasks (`a2a.bind_tasks`): the same streaming forwarder,
 * recording the tasks and contexts an answer names for the caller (`registry.ts`) before a byte
 * naming them is relayed, and refusing ({@link AnswerRefused}) an answer it cannot read for them,
 * one naming another principal's, and one whose ids cannot be recorded.
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import { TesseraError } from '../../core/errors.ts';
import { rpcErrorBody } from '../mcp/message.ts';
import { type ForwardCallbacks, ForwardHandler, validStatus } from '../proxy/forward.ts';
import { forwarderSteps, HeldAnswer, type RecordResult, type Unreadable } from '../proxy/held-answer.ts';
import { answerIds, DEFAULT_MAX_ANSWER, parsedAnswer } from './answers.ts';
import { isJsonType } from './card.ts';
import { upstreamRpcCode } from './message.ts';

/** Why the gateway relays nothing more of an upstream answer, by the reason code it is refused with. */
const ANSWER_REFUSALS = {
  /** The gateway could not record the tasks the answer names (its store did not answer). */
  a2a_task_registry_unavailable: 'the tasks an upstream answer names could not be recorded',
  /** The caller owns `a2a.max_tasks_per_principal` live tasks and contexts on the route (or the process holds all it can). */
  a2a_task_registry_full: 'the tasks an upstream answer names are more than the caller may own',
  /** Nor within the store's request timeout, all of the answer's ids together (a slow store, an answer naming many). */
  a2a_task_registry_timeout: 'the tasks an upstream answer names were not recorded in time',
  /**
   * The upstream compressed a 2xx answer though asked for identity (`Accept-Encoding: identity`):
   * the gateway cannot read the tasks it names.
   */
  a2a_upstream_answer_compressed: 'the upstream answer is compressed and cannot be read for its tasks',
  /** A JSON answer or an SSE event larger than `a2a.max_answer_size`: not read for its tasks. */
  a2a_upstream_answer_too_large: 'the upstream answer is larger than the gateway reads for its tasks',
  /**
   * A JSON answer or an SSE event spelling a member the gateway reads twice (`contextId` and
   * `ContextId`): clients disagree on which one they read ({@link answerIds}); or an event stream
   * opening with part of a BOM or a byte that is not ASCII, whose first line clients read differently.
   */
  a2a_upstream_answer_ambiguous: 'the upstream answer names a member twice in different spellings',
  /** The upstream answered a caller with a task or context another principal owns. */
  a2a_upstream_task_foreign: 'the upstream answered with a task of another principal',
} as const;

/** An upstream answer refused for the reason `code` ({@link ANSWER_REFUSALS}): nothing more of it is relayed. */
export class AnswerRefused extends Error {
  override readonly name = 'AnswerRefused';
  readonly code: keyof typeof ANSWER_REFUSALS;
  constructor(code: keyof typeof ANSWER_REFUSALS) {
    super(ANSWER_REFUSALS[code]);
    this.code = code;
  }
}

/**
 * Records an answer's ids for the caller, resolving once they are recorded (in the store, when the
 * registry is one): `foreign` when one is another principal's, `unavailable` when the registry
 * could not record them, `timeout` when it had not recorded them all by the deadline, `full` when
 * one is new and the caller owns as many as it may. Never rejects.
 */
export type RecordIds = (ids: { tasks: readonly string[]; contexts: readonly string[] }) => Promise<RecordResult>;

/** Why an answer is refused: its ids could not be recorded, or it cannot be read for them. */
const REFUSALS = {
  foreign: 'a2a_upstream_task_foreign',
  full: 'a2a_task_registry_full',
  unavailable: 'a2a_task_registry_unavailable',
  timeout: 'a2a_task_registry_timeout',
  // Asked for identity: a compressed answer (or one whose encoding is said twice) cannot be read
  // for its ids, and a client inflates it and reads them. Refused whole.
  compressed: 'a2a_upstream_answer_compressed',
  too_large: 'a2a_upstream_answer_too_large',
  // A stream opening clients read differently: cut before its first line ends.
  stream_ambiguous: 'a2a_upstream_answer_ambiguous',
} as const satisfies Record<Unreadable | Exclude<RecordResult, 'recorded'>, keyof typeof ANSWER_REFUSALS>;

const nothingNamed = (ids: { tasks: readonly string[]; contexts: readonly string[] }) =>
  ids.tasks.length === 0 && ids.contexts.length === 0;

/**
 * Forwards an A2A answer, recording the tasks and contexts it names for the caller
 * ({@link answerIds}) before the caller can read them: a registry in the store has committed them
 * (so another instance the caller's next request reaches knows them) before a byte naming them is
 * written. An event stream passes chunk by chunk as it arrives; a chunk completing events that
 * name ids holds the upstream (back-pressure) until they are recorded, then is written. A JSON
 * answer (2xx) is held until complete, then recorded and relayed. An answer naming another
 * principal's task or context fails the exchange (`a2a_upstream_task_foreign`), and so does one
 * whose ids cannot be recorded (`a2a_task_registry_unavailable`, or `a2a_task_registry_timeout`
 * when the store has not recorded them all within its request timeout), and one spelling a member it is
 * read for twice (`a2a_upstream_answer_ambiguous`, {@link answerIds}): 502 / 503 before its head,
 * the stream cut before the chunk completing that event after it.
 *
 * Fail closed: an id the gateway does not record is new to it (a context then goes to whoever names
 * it first), so a 2xx answer it cannot read is not relayed. A compressed one (the upstream was asked
 * for identity) fails the exchange before its head (`a2a_upstream_answer_compressed`, 502); a JSON
 * answer past `limit` bytes (`a2a.max_answer_size`) before its head (`a2a_upstream_answer_too_large`,
 * 502, nothing relayed); an event stream with a line or an event's data past `limit` is cut before
 * the chunk passing it is written, so before that event ends (no client has dispatched it).
 *
 * An answer to a call (`readAll`: any request but GET and HEAD, a JSON-RPC POST above all) is read
 * as JSON whatever its `Content-Type` and status: A2A client SDKs parse a JSON-RPC answer's body as
 * JSON whatever its label, and may show a non-2xx one's. So every answer to it but a 2xx event
 * stream is held and read like a JSON one (compressed or past `limit`: refused alike); one that does
 * not parse as JSON names nothing a client could read, and is relayed as is.
 */
export class TaskForwardHandler extends ForwardHandler {
  readonly #readAll: boolean;
  readonly #ownCredential: boolean;
  readonly #rpcId: string | number | null | undefined;
  readonly #held: HeldAnswer<{ tasks: string[]; contexts: string[] }>;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    record: RecordIds,
    ownCredential = false,
    limit: number = DEFAULT_MAX_ANSWER,
    readAll = false,
    rpcId?: string | number | null,
  ) {
    super(res, cb, extra, ownCredential);
    this.#readAll = readAll;
    this.#ownCredential = ownCredential;
    this.#rpcId = rpcId;
    this.#held = new HeldAnswer(
      {
        ...forwarderSteps(this, ForwardHandler.prototype),
        named: namedIn,
        empty: nothingNamed,
        record,
        refusal: (why) => new AnswerRefused(REFUSALS[why]),
      },
      limit,
    );
  }

  /**
   * A JSON-RPC call's event stream refused mid-way ends with one more event, the JSON-RPC error
   * the call would have got before the head (echoing its id), when what was relayed ends between
   * two events: A2A clients read an error response in a stream as the call's failure. Otherwise
   * (an event begun, not a call) the connection is cut: a client sees the stream fail, and
   * dispatches nothing of the event it was reading.
   */
  override lastBytes(error: Error): string | undefined {
    if (!(error instanceof AnswerRefused) || !this.#held.streaming || this.#rpcId === undefined || !this.#held.betweenEvents)
      return undefined;
    return `data: ${rpcErrorBody(upstreamRpcCode(error.code), new TesseraError(error.code).description, this.#rpcId)}\n\n`;
  }

  override abort(reason: Error): void {
    this.#held.abort(reason);
  }

  override onError(error: Error): void {
    this.#held.failed();
    super.onError(error);
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    const ok = status >= 200 && status < 300;
    // A 401 to the gateway's own credential and a status outside 100–599 reach no caller (502); 1xx are informational.
    if (status < 200 || !validStatus(status) || (!ok && (!this.#readAll || (status === 401 && this.#ownCredential))))
      return super.onHeaders(status, raw, resume);
    // Held and read as JSON: a JSON answer, or any answer to a call (clients parse it whatever its label).
    return this.#held.onHeaders(status, raw, resume, (type) => this.#readAll || isJsonType(type));
  }

  override onData(chunk: Buffer): boolean {
    return this.#held.onData(chunk);
  }

  override onComplete(): void {
    this.#held.onComplete();
  }
}

/** The ids answer texts name, together; refused when clients disagree on the ids one names ({@link answerIds}). */
function namedIn(texts: readonly string[]): { tasks: string[]; contexts: string[] } | Error {
  const named = { tasks: [] as string[], contexts: [] as string[] };
  for (const text of texts) {
    const ids = answerIds(parsedAnswer(text));
    if (ids === 'ambiguous') return new AnswerRefused('a2a_upstream_answer_ambiguous');
    named.tasks.push(...ids.tasks);
    named.contexts.push(...ids.contexts);
  }
  return named;
}
