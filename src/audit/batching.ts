/**
 * An audit sink that keeps events off the request path: `write` only queues; a timer (or a full
 * batch) flushes the queue to the target in one call, so the store sees one transaction per batch
 * instead of one per request.
 *
 * @module
 */
import type { AuditEvent, AuditSink } from './event.ts';

export interface BatchingSinkOptions {
  /** Longest time an event waits, milliseconds. */
  readonly flushIntervalMs: number;
  /** Flush as soon as this many events wait. */
  readonly maxBatch?: number;
  /** Events beyond this are dropped (and counted) while the target is failing. */
  readonly maxQueue?: number;
  /**
   * `audit.on_queue_full: refuse`: an event pushed without a slot is dropped once the events held
   * (waiting and being written) and the slots {@link BatchingAuditSink.reserve}d fill `maxQueue`,
   * so the queue never holds more than `maxQueue` and a refused write never has to drop events to
   * stay within it (an event pushed into a reserved slot is never dropped). Without it (`drop`),
   * only the events waiting count, as before.
   */
  readonly failClosed?: boolean;
  /**
   * Told of each event dropped when pushed because the queue was full, and of each event
   * {@link BatchingAuditSink.keep} dropped past its ceiling (its kind only is for the caller to
   * report: no event content reaches a log line).
   */
  readonly onDropped?: (event: AuditEvent) => void;
  /**
   * Told when a flush fails, with the number of events it held (no event content): every attempt,
   * so a batch retried counts again here (see `failed` for each event once). Not while closing.
   */
  readonly onError?: (error: unknown, events: number) => void;
}

/**
 * How far past `maxQueue` {@link BatchingAuditSink.keep} may fill the queue: the events held and
 * the slots reserved stay under this many times `maxQueue` (twice `audit.max_queue`), whatever the
 * number of grants one revocation ends.
 */
export const KEEP_CEILING = 2;

/**
 * @example
 * ```ts
 * const audit = new BatchingAuditSink({ write: (e) => store.appendAudit(e) }, { flushIntervalMs: 200 });
 * audit.push(event);          // never blocks
 * const lost = await audit.close({ timeoutMs: 10_000 }); // retries what is left for up to 10 s
 * ```
 */
export class BatchingAuditSink implements AuditSink {
  readonly #target: AuditSink;
  readonly #o: Required<Omit<BatchingSinkOptions, 'onError' | 'onDropped'>> & Pick<BatchingSinkOptions, 'onError' | 'onDropped'>;
  /** Slots reserved for events not pushed yet ({@link reserve}). */
  #reserved = 0;
  #queue: AuditEvent[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  /** The last write failed: the next attempt waits for the timer, not for the next event. */
  #failing = false;
  /** Events of the write under way. */
  #writing = 0;
  /** close() is retrying: failures are its to report, and no timer is set. */
  #closing = false;
  /** Events at the head of the queue already counted in `failed` (a refused batch waiting for its retry). */
  #counted = 0;
  /** Events dropped because the queue was full. */
  dropped = 0;
  /**
   * Events a write refused, each counted once however many attempts refuse it (not attempts ×
   * events: a 60 s outage retried every second would count each event 60 times).
   */
  failed = 0;

  constructor(target: AuditSink, options: BatchingSinkOptions) {
    this.#target = target;
    this.#o = { maxBatch: 500, maxQueue: 100_000, failClosed: false, ...options };
  }

  /**
   * Queue one event. `slotted`: it takes one of the slots {@link reserve} returned (through
   * {@link AuditSlots.push}) and is kept whatever the queue holds; without, it is dropped (and
   * counted) when the queue is full.
   */
  push(event: AuditEvent, slotted = false): void {
    if (slotted && this.#reserved > 0) this.#reserved--;
    else if (
      this.#o.failClosed ? this.#queue.length + this.#writing + this.#reserved >= this.#o.maxQueue : this.#queue.length >= this.#o.maxQueue
    ) {
      this.dropped++;
      this.#o.onDropped?.(event);
      return;
    }
    this.#enqueue(event);
  }

  /**
   * Queue one event past `maxQueue` if need be (`failClosed`), up to {@link KEEP_CEILING} ×
   * `maxQueue`: the event of something already done that could not be refused and must not go
   * unaudited (a revocation, committed before its events are: the grants a reused refresh token or
   * code revoked, in the transaction that found the reuse, before their number was known; an
   * operator's or a client's revocation; a sign-out). It counts against `maxQueue` as any event
   * held, so while the queue is past it no slot is reserved ({@link reserve}) and no request
   * admitted until the target takes it. Once the events held and the slots reserved reach the
   * ceiling (a revocation of more grants than that while the target is failing), it is dropped,
   * counted and told to `onDropped` as a push is: memory stays bounded, never silently.
   */
  keep(event: AuditEvent): void {
    if (this.held + this.#reserved >= this.#o.maxQueue * KEEP_CEILING) {
      this.dropped++;
      this.#o.onDropped?.(event);
      return;
    }
    this.#enqueue(event);
  }

  #enqueue(event: AuditEvent): void {
    this.#queue.push(event);
    // A full batch is written at once, unless a write is under way (it writes the next one when it
    // is done) or the store is failing: every request of an outage would otherwise start a write of
    // its own, and log its failure.
    if (this.#queue.length >= this.#o.maxBatch && this.#flushing === undefined && !this.#failing) void this.flush();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => void this.flush(), this.#o.flushIntervalMs);
      this.#timer.unref();
    }
  }

  /** AuditSink: queue events (resolves at once). */
  async write(events: readonly AuditEvent[]): Promise<void> {
    for (const e of events) this.push(e);
  }

  /** Events waiting to be written. */
  get depth(): number {
    return this.#queue.length;
  }

  /**
   * Events this sink holds: waiting, and those of the write under way (kept for the next attempt
   * if it fails). Once it is `maxQueue`, an event pushed now may be dropped.
   */
  get held(): number {
    return this.#queue.length + this.#writing;
  }

  /** {@link held} and the slots reserved have reached `maxQueue`: the next event pushed may not be kept. */
  get full(): boolean {
    return this.held + this.#reserved >= this.#o.maxQueue;
  }

  /** Slots reserved ({@link reserve}) for events not pushed yet. */
  get reserved(): number {
    return this.#reserved;
  }

  /**
   * Reserve `events` slots for the events of one request still to come, counted against
   * `maxQueue` from now on: `undefined`, and nothing reserved, when the events held and the slots
   * already reserved leave no room for them. Each slot is used by one {@link AuditSlots.push} or
   * given back by {@link AuditSlots.release}. Meant with `failClosed`. At most `maxQueue` are
   * reserved (a queue smaller than a request's events holds what it can of them; the others are
   * pushed without a slot), so every request fits an empty queue.
   */
  reserve(events: number): AuditSlots | undefined {
    const n = Math.min(events, this.#o.maxQueue);
    if (this.held + this.#reserved + n > this.#o.maxQueue) return undefined;
    this.#reserved += n;
    return new AuditSlots(this, n);
  }

  /** Give back `events` slots reserved and not used (by {@link AuditSlots.release}). */
  unreserve(events: number): void {
    this.#reserved = Math.max(0, this.#reserved - events);
  }

  /** The last write failed: the next attempt waits for the timer. */
  get failing(): boolean {
    return this.#failing;
  }

  /** Write everything queued now. */
  async flush(): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    while (this.#flushing) await this.#flushing;
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    const counted = this.#counted;
    this.#queue = [];
    this.#counted = 0;
    this.#writing = batch.length;
    this.#flushing = this.#target.write(batch).then(
      () => {
        this.#writing = 0;
        this.#failing = false;
        if (this.#queue.length >= this.#o.maxBatch) void this.flush();
      },
      (e: unknown) => {
        this.#writing = 0;
        this.#failing = true;
        this.failed += batch.length - counted;
        // Keep the events for the next attempt, within the queue bound; what does not fit is dropped
        // and counted like any other overflow. With failClosed every event held was admitted within
        // the bound or kept past it on purpose ({@link keep}, under its ceiling): all are kept.
        const kept = batch.concat(this.#queue);
        const room = this.#o.failClosed ? kept.length : this.#o.maxQueue;
        this.dropped += Math.max(0, kept.length - room);
        this.#queue = kept.length > room ? kept.slice(0, room) : kept;
        // The batch is at the head of the queue (it never holds more than maxQueue events).
        this.#counted = Math.min(batch.length, this.#queue.length);
        if (this.#closing) return;
        this.#o.onError?.(e, batch.length);
        if (this.#timer === undefined) {
          this.#timer = setTimeout(() => void this.flush(), this.#o.flushIntervalMs);
          this.#timer.unref();
        }
      },
    );
    try {
      await this.#flushing;
    } finally {
      this.#flushing = undefined;
    }
  }

  /**
   * Flush and stop. Without `timeoutMs`, one attempt, however long it takes. With it, a failed
   * write is tried again every `flushIntervalMs` until `timeoutMs` has passed, and a write that has
   * not answered by then (a hung store or disk) is given up on. Resolves with the number of events
   * not written: those still queued and those of a write given up on.
   */
  async close(options: { readonly timeoutMs?: number } = {}): Promise<number> {
    if (options.timeoutMs === undefined) {
      await this.flush();
      return this.#queue.length + this.#writing;
    }
    this.#closing = true;
    const deadline = performance.now() + options.timeoutMs;
    for (;;) {
      if (!(await within(this.flush(), deadline - performance.now()))) break;
      const left = deadline - performance.now();
      if (this.#queue.length === 0 || left <= 0) break;
      await within(new Promise((resolve) => setTimeout(resolve, Math.min(this.#o.flushIntervalMs, left))), left);
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    return this.#queue.length + this.#writing;
  }
}

/**
 * The slots one request reserved in a {@link BatchingAuditSink} (`audit.on_queue_full: refuse`):
 * its events go into them, so an event of a request admitted while there was room is kept however
 * full the queue has become since. Released once the request is answered (in a `finally`), so a
 * request that failed gives back what it did not use; an event pushed after that, or beyond the
 * slots, is pushed without one (dropped when the queue is full).
 */
export class AuditSlots {
  readonly #sink: BatchingAuditSink;
  #left: number;

  constructor(sink: BatchingAuditSink, events: number) {
    this.#sink = sink;
    this.#left = events;
  }

  /** Slots not used yet. */
  get left(): number {
    return this.#left;
  }

  /** Queue one event into a slot of these (without one once they are used up or released). */
  push(event: AuditEvent): void {
    if (this.#left > 0) {
      this.#left--;
      this.#sink.push(event, true);
    } else this.#sink.push(event);
  }

  /** Give back the slots not used. Idempotent. */
  release(): void {
    if (this.#left === 0) return;
    this.#sink.unreserve(this.#left);
    this.#left = 0;
  }
}

/** Whether `p` settled within `ms` (false: it was given up on, and goes on unwatched). */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
