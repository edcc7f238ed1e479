/**
 * The audit pipeline: producers hand events over without waiting; batches go to every sink off the
 * request path (on a timer, or as soon as a batch is full). A slow or failing sink never blocks a
 * request: beyond `maxQueue` events are dropped and counted, and sink failures are reported to
 * `onError` (without event contents).
 *
 * @module
 */
import { within } from './batching.ts';
import type { AuditEvent, AuditSink } from './event.ts';

/**
 * The one log line the gateway and the token service each write at shutdown when audit events were
 * not written by the deadline: `event` and `events` (the count) as fields, `component` saying whose.
 */
export interface AuditEventsLost {
  readonly event: 'audit_events_lost';
  readonly component: 'gateway' | 'token_service';
  /** How many events are lost. */
  readonly events: number;
  /** The line's message: the count, whose, where they were not written and that the deadline passed. */
  readonly message: string;
}

/** The {@link AuditEventsLost} line of `component` for `events` lost (logged at level `error`). */
export function auditEventsLost(component: AuditEventsLost['component'], events: number): AuditEventsLost {
  const [who, where] = component === 'gateway' ? ['gateway', 'every output'] : ['token service', 'the store'];
  const message = `${events} audit events of the ${who} were not written to ${where} by the shutdown deadline and are lost`;
  return { event: 'audit_events_lost', component, events, message };
}

/** Options of {@link createAuditPipeline}. */
export interface AuditPipelineOptions {
  readonly sinks: readonly AuditSink[];
  /** Events per `write` call. Default 256. */
  readonly batchSize?: number;
  /** Longest wait before a partial batch is written, ms. Default 1000. */
  readonly flushIntervalMs?: number;
  /** Events held at most; more are dropped. Default 100 000. */
  readonly maxQueue?: number;
  /** A sink failed to write a batch. */
  readonly onError?: (error: unknown, sinkIndex: number, events: number) => void;
}

/** Counters for metrics and readiness. */
export interface AuditPipelineStats {
  /** Events waiting or being written. */
  readonly depth: number;
  /** Events waiting, not yet handed to the sinks (the next `emit` is dropped once it is `maxQueue`). */
  readonly queued: number;
  readonly written: number;
  readonly dropped: number;
  readonly failed: number;
}

/** The queue between the request path and the audit sinks: batched, bounded, never blocking a request. */
export interface AuditPipeline {
  /** Queue an event. Never throws, never waits. */
  emit(event: AuditEvent): void;
  /** Write everything queued so far. */
  flush(): Promise<void>;
  /**
   * Flush, then stop the timer. Events emitted afterwards are written by the next `flush`. With
   * `timeoutMs`, a sink that has not answered by then is given up on. Resolves with the events not
   * written: still `queued`, and `writing` (the batch a sink had not answered for).
   */
  close(options?: { readonly timeoutMs?: number }): Promise<{ queued: number; writing: number }>;
  readonly stats: AuditPipelineStats;
}

/**
 * @example
 * ```ts
 * const audit = createAuditPipeline({ sinks: [createJsonLinesSink({ file: 'audit.jsonl' })] });
 * audit.emit({ id: uuidv7(), time: Date.now(), kind: 'gateway.request', decision: 'allow', reason: 'ok' });
 * await audit.close();
 * ```
 */
export function createAuditPipeline(options: AuditPipelineOptions): AuditPipeline {
  const batchSize = options.batchSize ?? 256;
  const maxQueue = options.maxQueue ?? 100_000;
  const sinks = options.sinks;
  let queue: AuditEvent[] = [];
  let inFlight = 0;
  let written = 0;
  let dropped = 0;
  let failed = 0;
  let running: Promise<void> | undefined;
  let scheduled = false;

  async function drain(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.length <= batchSize ? queue : queue.slice(0, batchSize);
      queue = queue.length <= batchSize ? [] : queue.slice(batchSize);
      inFlight = batch.length;
      const results = await Promise.allSettled(sinks.map((s) => s.write(batch)));
      for (const [i, r] of results.entries()) {
        if (r.status === 'rejected') {
          failed += batch.length;
          try {
            options.onError?.(r.reason, i, batch.length);
          } catch {
            // a failing error reporter must not stop the pipeline
          }
        }
      }
      written += batch.length;
      inFlight = 0;
    }
  }

  function flush(): Promise<void> {
    if (running) return running.then(() => (queue.length > 0 ? flush() : undefined));
    if (queue.length === 0) return Promise.resolve();
    running = drain().finally(() => {
      running = undefined;
    });
    return running;
  }

  const timer = setInterval(() => void flush(), options.flushIntervalMs ?? 1000);
  timer.unref();

  return {
    emit(event) {
      if (queue.length >= maxQueue) {
        dropped++;
        return;
      }
      queue.push(event);
      if (queue.length >= batchSize && !scheduled && !running) {
        scheduled = true;
        setImmediate(() => {
          scheduled = false;
          void flush();
        });
      }
    },
    flush,
    async close(options = {}) {
      clearInterval(timer);
      if (options.timeoutMs === undefined) await flush();
      else await within(flush(), options.timeoutMs);
      return { queued: queue.length, writing: inFlight };
    },
    get stats() {
      return { depth: queue.length + inFlight, queued: queue.length, written, dropped, failed };
    },
  };
}
