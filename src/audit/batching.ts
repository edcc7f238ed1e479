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
   * Told when a flush fails, with the number of events it held (no event content): every attempt,
   * so a batch retried counts again here (see `failed` for each event once). Not while closing.
   */
  readonly onError?: (error: unknown, events: number) => void;
}

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
  readonly #o: Required<Omit<BatchingSinkOptions, 'onError'>> & Pick<BatchingSinkOptions, 'onError'>;
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
    this.#o = { maxBatch: 500, maxQueue: 100_000, ...options };
  }

  /** Queue one event. */
  push(event: AuditEvent): void {
    if (this.#queue.length >= this.#o.maxQueue) {
      this.dropped++;
      return;
    }
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

  /** {@link held} has reached `maxQueue`: the next event pushed may not be kept. */
  get full(): boolean {
    return this.held >= this.#o.maxQueue;
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
        // and counted like any other overflow.
        const kept = batch.concat(this.#queue);
        this.dropped += Math.max(0, kept.length - this.#o.maxQueue);
        this.#queue = kept.slice(0, this.#o.maxQueue);
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
