/**
 * In-memory audit sink for tests: keeps every event and lets a test wait for the ones it expects.
 *
 * @module
 */
import type { AuditEvent, AuditSink } from '../event.ts';

/** An audit sink keeping the events in memory (`events`), for tests and embedding. */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEvent[] = [];
  readonly #waiters = new Set<() => void>();

  async write(events: readonly AuditEvent[]): Promise<void> {
    this.events.push(...events);
    for (const w of this.#waiters) w();
  }

  /** Resolve with the events matching `predicate` once there are at least `count` of them. */
  waitFor(predicate: (e: AuditEvent) => boolean, count = 1, timeoutMs = 5000): Promise<AuditEvent[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.filter(predicate);
        if (found.length >= count) {
          this.#waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`timed out waiting for ${count} audit event(s); have ${this.events.length}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  clear(): void {
    this.events.length = 0;
  }
}
