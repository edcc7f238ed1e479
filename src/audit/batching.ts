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
  /** Told when a flush fails (no event content in the message). */
  readonly onError?: (error: unknown) => void;
}

/**
 * @example
 * ```ts
 * const audit = new BatchingAuditSink({ write: (e) => store.appendAudit(e) }, { flushIntervalMs: 200 });
 * audit.push(event);          // never blocks
 * await audit.close();        // flushes what is left
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
  dropped = 0;

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

  /** Write everything queued now. */
  async flush(): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    while (this.#flushing) await this.#flushing;
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#flushing = this.#target.write(batch).then(
      () => {
        this.#failing = false;
        if (this.#queue.length >= this.#o.maxBatch) void this.flush();
      },
      (e: unknown) => {
        this.#failing = true;
        // Keep the events for the next attempt, within the queue bound; what does not fit is dropped
        // and counted like any other overflow.
        const kept = batch.concat(this.#queue);
        this.dropped += Math.max(0, kept.length - this.#o.maxQueue);
        this.#queue = kept.slice(0, this.#o.maxQueue);
        this.#o.onError?.(e);
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

  /** Flush and stop. */
  async close(): Promise<void> {
    await this.flush();
  }
}
