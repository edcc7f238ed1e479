/**
 * One deadline for a whole graceful shutdown (`gateway.drain_timeout`), shared by the requests in
 * flight and the audit events still to be written, so that the process is gone when the operator
 * expects it (Kubernetes SIGKILLs at `terminationGracePeriodSeconds`), not after a deadline per stage.
 *
 * @module
 */

/**
 * The least time audit events get once the drain is over, however little of `drain_timeout` the
 * requests left (they may have used all of it): 1 s, or `drain_timeout` when that is shorter. A whole
 * shutdown takes at most `drain_timeout` plus this.
 */
export const AUDIT_FLUSH_FLOOR_MS = 1000;

/**
 * The deadlines of one shutdown, from the moment it began: requests in flight may finish until
 * `drainTimeoutMs` has passed; the audit events then get what is left of it, and at least
 * {@link AUDIT_FLUSH_FLOOR_MS} (capped at `drainTimeoutMs`) after the drain ended.
 */
export class ShutdownDeadline {
  readonly drainTimeoutMs: number;
  readonly #drainBy: number;
  readonly #floorMs: number;
  readonly #holds: Promise<unknown>[] = [];
  #auditBy: number | undefined;

  constructor(drainTimeoutMs: number, floorMs = AUDIT_FLUSH_FLOOR_MS) {
    this.drainTimeoutMs = Math.max(0, drainTimeoutMs);
    this.#drainBy = performance.now() + this.drainTimeoutMs;
    this.#floorMs = Math.min(floorMs, this.drainTimeoutMs);
  }

  /** Milliseconds the requests in flight may still take. */
  drainLeft(): number {
    return Math.max(0, this.#drainBy - performance.now());
  }

  /** Requests of another handler on the same listener: the drain ends once they are done too. */
  hold(requests: Promise<unknown>): void {
    this.#holds.push(requests);
  }

  /** Wait for what {@link hold} was given, until the drain deadline, then end the drain. */
  async drained(): Promise<void> {
    if (this.#holds.length > 0 && this.#auditBy === undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(this.#holds),
        new Promise((resolve) => {
          timer = setTimeout(resolve, this.drainLeft());
        }),
      ]);
      clearTimeout(timer);
    }
    this.#endDrain();
  }

  /** Milliseconds the audit events may still take to be written (the first call ends the drain). */
  auditLeft(): number {
    return Math.max(0, this.#endDrain() - performance.now());
  }

  #endDrain(): number {
    this.#auditBy ??= Math.max(this.#drainBy, performance.now() + this.#floorMs);
    return this.#auditBy;
  }
}
