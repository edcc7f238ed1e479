/**
 * Holding an upstream's answer until the ids it names are recorded for the caller: the machinery
 * the A2A task forwarder (`../a2a/forward.ts`) and the MCP task forwarder (`../mcp/tasks.ts`) share.
 * Each reads its own ids from an answer and refuses with its own codes; this is the holding.
 *
 * @module
 */
import { answerText } from '../a2a/answers.ts';
import { SseDataReader } from '../a2a/events.ts';
import { isEventStream } from '../mcp/events.ts';
import { type ForwardHandler, plainEncoding, rawHeader } from './forward.ts';

/** What recording an answer's ids answers: recorded, or why not (another principal's, full, unavailable, too slow). */
export type RecordResult = 'recorded' | 'foreign' | 'full' | 'unavailable' | 'timeout';

/** Why an answer is not read for its ids: compressed, too large, or an event stream opening clients read differently. */
export type Unreadable = 'compressed' | 'too_large' | 'stream_ambiguous';

/** What a {@link HeldAnswer} asks of its forwarder: the forwarder's own (base) steps, and how it reads and records ids. */
export interface HeldAnswerOps<T> {
  /** The base forwarder's steps: the head, a chunk, the end, failing the caller's answer. */
  readonly headers: (status: number, raw: Buffer[], resume: () => void) => boolean;
  readonly data: (chunk: Buffer) => boolean;
  readonly complete: () => void;
  readonly fail: (error: Error) => void;
  /** The forwarder's abort (which comes back to {@link HeldAnswer.abort}). */
  readonly abort: (error: Error) => void;
  /** The base forwarder's abort of the upstream exchange. */
  readonly abortUpstream: (error: Error) => void;
  /** The ids named by answer texts (an SSE chunk's events' data, or a held body's text), or the error refusing them. */
  readonly named: (texts: readonly string[]) => T | Error;
  readonly empty: (ids: T) => boolean;
  readonly record: (ids: T) => Promise<RecordResult>;
  /** The error refusing an answer that cannot be read, or whose ids could not be recorded. */
  readonly refusal: (why: Unreadable | Exclude<RecordResult, 'recorded'>) => Error;
}

/** The forwarder's steps of {@link HeldAnswerOps}: `base` (its superclass's prototype) run on `handler`. */
export function forwarderSteps(
  handler: ForwardHandler,
  base: ForwardHandler,
): Pick<HeldAnswerOps<unknown>, 'headers' | 'data' | 'complete' | 'fail' | 'abort' | 'abortUpstream'> {
  return {
    headers: (status, raw, resume) => base.onHeaders.call(handler, status, raw, resume),
    data: (chunk) => base.onData.call(handler, chunk),
    complete: () => base.onComplete.call(handler),
    fail: (error) => handler.onError(error),
    abort: (error) => handler.abort(error),
    abortUpstream: (error) => base.abort.call(handler, error),
  };
}

type Head = { status: number; raw: Buffer[]; resume: () => void };

/**
 * One answer held until its ids are recorded. An event stream passes chunk by chunk; a chunk
 * completing events that name ids holds the upstream (back-pressure) until they are recorded, then
 * is written. Any other answer held is held whole (at most `limit` bytes), read, recorded and
 * relayed. Fail closed: compressed, larger than `limit` (or an event larger than it), an answer
 * whose ids cannot be read or recorded is refused (nothing more of it relayed).
 */
export class HeldAnswer<T> {
  readonly #ops: HeldAnswerOps<T>;
  readonly #limit: number;
  #sse: SseDataReader | undefined;
  /** What the stream relayed so far ends between two events (before the chunk last read). */
  #betweenEvents = true;
  #head: Head | undefined;
  #chunks: Buffer[] = [];
  #total = 0;
  /** Resumes the upstream paused while a chunk's ids are recorded. */
  #resume: (() => void) | undefined;
  /** A chunk waiting for its ids to be recorded (the upstream is paused meanwhile). */
  #pending: Promise<void> | undefined;
  /** The upstream's answer is complete and waits for its ids to be recorded. */
  #completing = false;
  /** Failed or aborted: nothing more is written. */
  #over = false;

  constructor(ops: HeldAnswerOps<T>, limit: number) {
    this.#ops = ops;
    this.#limit = limit;
  }

  /** The answer is an event stream. */
  get streaming(): boolean {
    return this.#sse !== undefined;
  }

  /** What the stream relayed ends between two events (a refusal may end it with one more). */
  get betweenEvents(): boolean {
    return this.#betweenEvents;
  }

  abort(reason: Error): void {
    // The upstream exchange is over while its answer waits to be recorded: undici has nothing left
    // to abort, so the caller's answer is failed here (a revocation, a shutdown, the caller gone).
    if (this.#completing) this.#ops.fail(reason);
    else this.#ops.abortUpstream(reason);
  }

  /** The forwarder failed: nothing more is written. */
  failed(): void {
    this.#over = true;
    this.#completing = false;
  }

  /**
   * The head of an answer to read: refused compressed (asked for identity, it cannot be read for
   * its ids), an event stream (2xx) read as it passes, else held when `hold(type)` (its length
   * within `limit`), or passed as it is.
   */
  onHeaders(status: number, raw: Buffer[], resume: () => void, hold: (type: string | undefined) => boolean = () => true): boolean {
    if (!plainEncoding(rawHeader(raw, 'content-encoding'))) {
      this.#ops.abort(this.#ops.refusal('compressed'));
      return false;
    }
    const type = rawHeader(raw, 'content-type') ?? undefined;
    if (status >= 200 && status < 300 && isEventStream(type)) {
      this.#sse = new SseDataReader(this.#limit);
      this.#resume = resume;
      return this.#ops.headers(status, raw, resume);
    }
    if (!hold(type)) return this.#ops.headers(status, raw, resume);
    const length = rawHeader(raw, 'content-length');
    if (typeof length === 'string' && Number(length) > this.#limit) {
      this.#ops.abort(this.#ops.refusal('too_large'));
      return false;
    }
    this.#head = { status, raw, resume };
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#over) return false;
    if (this.#head !== undefined) {
      this.#total += chunk.length;
      if (this.#total > this.#limit) {
        // Too large to read for its ids: nothing of it is relayed.
        this.#head = undefined;
        this.#chunks = [];
        this.#ops.abort(this.#ops.refusal('too_large'));
        return false;
      }
      this.#chunks.push(chunk);
      return true;
    }
    const sse = this.#sse;
    if (sse !== undefined) {
      // Where the relayed stream ends if this chunk is refused (it is written whole or not at all).
      this.#betweenEvents = sse.betweenEvents;
      const events = sse.push(chunk);
      if (sse.overflow || sse.ambiguous) {
        // Cut before this chunk: the event it completes (or opens unreadably) has not been dispatched.
        this.#ops.abort(this.#ops.refusal(sse.overflow ? 'too_large' : 'stream_ambiguous'));
        return false;
      }
      if (events.length > 0) {
        const ids = this.#ops.named(events);
        if (ids instanceof Error) {
          this.#ops.abort(ids);
          return false;
        }
        if (!this.#ops.empty(ids)) {
          // Written once recorded; the upstream waits (undici reads no further until resumed).
          this.#pending = this.#ops.record(ids).then((result) => {
            this.#pending = undefined;
            if (this.#over) return;
            if (result !== 'recorded') {
              this.#ops.abort(this.#ops.refusal(result));
              return;
            }
            if (this.#ops.data(chunk)) this.#resume?.();
            // Otherwise the caller is slow: resumed when it drains (or aborted when it went away).
          });
          return false;
        }
      }
    }
    return this.#ops.data(chunk);
  }

  onComplete(): void {
    if (this.#over) return;
    const pending = this.#pending;
    if (pending !== undefined) {
      // The end never overtakes a chunk still to be written.
      this.#completing = true;
      void pending.then(() => {
        if (this.#completing) {
          this.#completing = false;
          this.#ops.complete();
        }
      });
      return;
    }
    const head = this.#head;
    if (head === undefined) {
      this.#ops.complete();
      return;
    }
    const body = Buffer.concat(this.#chunks, this.#total);
    this.#head = undefined;
    this.#chunks = [];
    const ids = this.#ops.named([answerText(body)]);
    if (ids instanceof Error) {
      // The exchange is over upstream: fail it here (nothing relayed).
      this.#ops.fail(ids);
      return;
    }
    if (this.#ops.empty(ids)) {
      this.#release(head, body);
      return;
    }
    this.#completing = true;
    void this.#ops.record(ids).then((result) => {
      if (!this.#completing) return; // failed meanwhile (aborted)
      this.#completing = false;
      if (result !== 'recorded') {
        // The exchange is over upstream: fail it here (nothing relayed).
        this.#ops.fail(this.#ops.refusal(result));
        return;
      }
      this.#release(head, body);
    });
  }

  /** The held answer, through the forwarder as if it had just arrived. */
  #release(head: Head, body: Buffer): void {
    // The upstream exchange is over: a refusal now (a tools list that cannot be filtered) fails the answer here.
    this.#completing = true;
    const sent = this.#ops.headers(head.status, head.raw, head.resume);
    // One write: each write the caller cannot take at once would add a listener waiting for it to drain.
    if (sent && !this.#over && body.length > 0) this.#ops.data(body);
    if (!sent || this.#over) return;
    this.#completing = false;
    this.#ops.complete();
  }
}
