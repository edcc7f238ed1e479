/**
 * The audit pipeline: producers hand events over without waiting; batches go to every sink off the
 * request path (on a timer, or as soon as a batch is full). A slow or failing sink never blocks a
 * request: beyond `maxQueue` events are dropped and counted, and sink failures are reported to
 * `onError` (without event contents).
 *
 * A caller that must not act without its event being kept (`audit.on_queue_full: refuse`) takes a
 * slot with `reserve()` before it acts, and hands its event over with `emit(event, true)`: a
 * reserved event is never dropped, because the slot was counted against `maxQueue` from the moment
 * it was reserved (with the events `heldElsewhere` by sinks that keep what they refused).
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

/**
 * The log line (level `error`) the token service and the gateway write with `audit.on_queue_full:
 * refuse` when events that no request reserved a slot for (the token service's key rotations,
 * revocations and sign-outs that revoked or ended nothing, failed sign-outs, operators' actions,
 * and revocations' records past twice `max_queue`; none of the gateway's, which reserves one for
 * each, its streams' closes included, but with `max_queue` 1, where a close has none) were dropped
 * because the queue was full: at once for the first, then at most once every
 * 10 s with how many since the last line, and at shutdown for the last ones. `kinds` counts them
 * by event kind (no event content: never a token, subject or client).
 */
export interface AuditEventsDropped {
  readonly event: 'audit_events_dropped';
  readonly component: 'gateway' | 'token_service';
  /** How many events were dropped since the last line. */
  readonly events: number;
  /** Of them, how many of each kind. */
  readonly kinds: Readonly<Record<string, number>>;
  /** How many were dropped since start. */
  readonly total: number;
  readonly message: string;
}

/** The {@link AuditEventsDropped} line of `component`. */
export function auditEventsDropped(
  component: AuditEventsDropped['component'],
  kinds: Readonly<Record<string, number>>,
  total: number,
): AuditEventsDropped {
  const events = Object.values(kinds).reduce((a, b) => a + b, 0);
  const who = component === 'gateway' ? 'gateway' : 'token service';
  const what = Object.entries(kinds)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  const message = `${events} audit events of the ${who} were dropped and are lost (${what}): the audit queue was full (audit.on_queue_full: refuse; ${total} since start)`;
  return { event: 'audit_events_dropped', component, events, kinds, total, message };
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
  /**
   * Events handed over but still held downstream (the retry queues of sinks that keep what they
   * refused): they count against `maxQueue` with the queued and reserved ones, for {@link
   * AuditPipeline.reserve}, {@link AuditPipeline.full} and events emitted without a slot.
   */
  readonly heldElsewhere?: () => number;
  /** A sink failed to write a batch. */
  readonly onError?: (error: unknown, sinkIndex: number, events: number) => void;
  /**
   * Told of each event {@link AuditPipeline.emit} dropped because the queue was full (its kind only
   * is for the caller to report: no event content reaches a log line). Never called on the way of
   * an event kept.
   */
  readonly onDropped?: (event: AuditEvent) => void;
}

/** Counters for metrics and readiness. */
export interface AuditPipelineStats {
  /** Events waiting or being written. */
  readonly depth: number;
  /** Events waiting, not yet handed to the sinks (the next `emit` is dropped once it is `maxQueue`). */
  readonly queued: number;
  /** Slots reserved for events not emitted yet. */
  readonly reserved: number;
  readonly written: number;
  readonly dropped: number;
  readonly failed: number;
}

/** The queue between the request path and the audit sinks: batched, bounded, never blocking a request. */
export interface AuditPipeline {
  /**
   * Queue an event. Never throws, never waits. With `reserved`, the event takes the slot a {@link
   * reserve} returned true for, and is kept whatever the queue holds; without, it is dropped (and
   * counted) when the queue, the reserved slots and the events {@link
   * AuditPipelineOptions.heldElsewhere} fill `maxQueue`.
   */
  emit(event: AuditEvent, reserved?: boolean): void;
  /**
   * Reserve a slot for an event to be emitted later (`emit(event, true)`); false, and nothing
   * reserved, when there is no room ({@link full}). Every slot reserved is used by one emit or
   * given back with {@link release}.
   */
  reserve(): boolean;
  /** Give back a slot reserved and not used. */
  release(): void;
  /** No room for one more event: the queued, the reserved and those held elsewhere fill `maxQueue`. */
  readonly full: boolean;
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
  let reserved = 0;
  let running: Promise<void> | undefined;
  let scheduled = false;
  const heldElsewhere = options.heldElsewhere ?? (() => 0);
  const full = () => queue.length + reserved + heldElsewhere() >= maxQueue;

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
    emit(event, slot = false) {
      if (slot && reserved > 0) reserved--;
      else if (full()) {
        dropped++;
        if (options.onDropped !== undefined) {
          try {
            options.onDropped(event);
          } catch {
            // emit never throws
          }
        }
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
    reserve() {
      if (full()) return false;
      reserved++;
      return true;
    },
    release() {
      if (reserved > 0) reserved--;
    },
    get full() {
      return full();
    },
    flush,
    async close(options = {}) {
      clearInterval(timer);
      if (options.timeoutMs === undefined) await flush();
      else await within(flush(), options.timeoutMs);
      return { queued: queue.length, writing: inFlight };
    },
    get stats() {
      return { depth: queue.length + inFlight, queued: queue.length, reserved, written, dropped, failed };
    },
  };
}
