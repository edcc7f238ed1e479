/**
 * JSON-lines audit sink: one event per line, to a file (appended, mode 0600) or a stream such as
 * stdout. Events never hold tokens or header values (see {@link AuditEvent}), so they are written
 * as they are.
 *
 * @module
 */
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { AuditEvent, AuditSink } from '../event.ts';

/** An audit sink writing one JSON line per event to a stream or a file; `close()` flushes and closes it. */
export interface JsonLinesSink extends AuditSink {
  close(): Promise<void>;
}

/**
 * @example
 * ```ts
 * const sink = createJsonLinesSink({ file: '/var/log/tessera/audit.jsonl' });
 * const stdout = createJsonLinesSink({ stream: process.stdout });
 * ```
 */
export function createJsonLinesSink(target: { file: string } | { stream: Writable }): JsonLinesSink {
  const owned = 'file' in target;
  const stream = owned ? createWriteStream(target.file, { flags: 'a', mode: 0o600 }) : target.stream;
  let error: Error | undefined;
  stream.on('error', (e: Error) => {
    error = e;
  });
  return {
    write(events: readonly AuditEvent[]): Promise<void> {
      if (error) return Promise.reject(error);
      let text = '';
      for (const e of events) text += `${JSON.stringify(e)}\n`;
      // The callback fires once the text is handed to the OS, which is the back-pressure we want.
      return new Promise((resolve, reject) => {
        stream.write(text, (e) => (e ? reject(e) : resolve()));
      });
    },
    close(): Promise<void> {
      if (!owned) return Promise.resolve();
      return new Promise((resolve) => stream.end(resolve));
    },
  };
}
