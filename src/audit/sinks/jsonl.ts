/**
 * JSON-lines audit sink: one event per line, to a file (appended, created mode 0600, never through
 * a symlink at its path) or a stream such as stdout. Events never hold tokens or header values (see {@link AuditEvent}), so they are written
 * as they are, with the characters JSON leaves raw but readers take for a line break or a terminal
 * command (U+2028, U+2029, C1 controls such as NEL, bidirectional overrides) written as `\uXXXX`
 * escapes: a value a caller chose stays inside its one line and reads back the same.
 *
 * @module
 */
import { constants, createWriteStream, type WriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { AuditEvent, AuditSink } from '../event.ts';

/** An audit sink writing one JSON line per event to a stream or a file; `close()` flushes and closes it. */
export interface JsonLinesSink extends AuditSink {
  close(): Promise<void>;
  /**
   * The error that broke a stream this sink does not own (stdout whose reader is gone: `EPIPE`):
   * such a stream is not opened again, so every later write fails with it. Always `undefined` for
   * a file, which is opened again for the next batch.
   */
  readonly broken: Error | undefined;
}

// What JSON.stringify leaves raw (it escapes only U+0000-U+001F) and should not reach a line reader
// or a terminal: DEL and C1 controls (U+0085 is a line break to Python, U+009B a CSI), the line and
// paragraph separators, and the bidirectional overrides and isolates.
const UNSAFE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const escaped = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * JSON text with the characters JSON leaves raw but a line reader or a terminal acts on (DEL, C1
 * controls, U+2028, U+2029, bidirectional overrides and isolates) written as `\\uXXXX`: still the
 * same JSON value, safe to print (`--json` of the CLI) or to append as one line.
 */
export function terminalSafeJson(text: string): string {
  UNSAFE.lastIndex = 0;
  return UNSAFE.test(text) ? text.replace(UNSAFE, escaped) : text;
}

// Appended, created 0600, and never through a symlink at the path itself: one planted there (in a
// log directory another user can write) would make the gateway append to whatever it points at.
// The open fails with ELOOP, and each batch is a counted, logged write failure until it is removed.
// (Node's open takes numeric flags, which no string names; its types list strings only.)
const APPEND = (constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW) as unknown as string;

/**
 * Where a write refused part-way stopped: the batch's first event and how many bytes of its text
 * reached the file. Kept by the sink; a sink that replaces another on the same target (a reload)
 * is given the same object, so the batch written again goes on from there in the new one too.
 */
export interface JsonLinesResume {
  cut?: { readonly id: string; readonly bytes: number } | undefined;
}

/**
 * @example
 * ```ts
 * const sink = createJsonLinesSink({ file: '/var/log/tessera/audit.jsonl' });
 * const stdout = createJsonLinesSink({ stream: process.stdout });
 * ```
 */
export function createJsonLinesSink(
  target: { file: string } | { stream: Writable },
  options: { readonly resume?: JsonLinesResume } = {},
): JsonLinesSink {
  const file = 'file' in target ? target.file : undefined;
  let error: Error | undefined;
  let onError: ((e: Error) => void) | undefined;
  const open = (): Writable => {
    const s = file !== undefined ? createWriteStream(file, { flags: APPEND, mode: 0o600 }) : (target as { stream: Writable }).stream;
    onError = (e: Error) => {
      if (s === stream) error = e;
    };
    s.on('error', onError);
    return s;
  };
  let stream = open();
  // A file write refused part-way (a disk filling up takes the start of the text, then ENOSPC):
  // the batch's first event and how many bytes of its text reached the file. The same batch
  // written again (kept by audit.on_queue_full: refuse, with newer events after it) goes on from
  // there, so no line is written twice and the cut line is completed.
  const resume = options.resume ?? {};
  return {
    write(events: readonly AuditEvent[]): Promise<void> {
      if (error) {
        if (file === undefined) return Promise.reject(error);
        // A file that failed (disk full, an I/O error, its directory gone) is opened again for the
        // next batch, so writing resumes once the cause is gone rather than at the next reload; the
        // batches refused meanwhile were reported as failed.
        stream.destroy();
        error = undefined;
        stream = open();
      }
      let text = '';
      for (const e of events) text += `${JSON.stringify(e)}\n`;
      let data = Buffer.from(terminalSafeJson(text));
      const first = events[0]?.id;
      const cut = resume.cut;
      const skip = cut !== undefined && cut.id === first ? Math.min(cut.bytes, data.length) : 0;
      resume.cut = undefined;
      if (skip > 0) data = data.subarray(skip);
      // The callback fires once the text is handed to the OS, which is the back-pressure we want.
      // A failed write's callback comes before the stream's 'error' event: note it here too.
      const s = stream;
      // A file stream counts the bytes each partial write took (a stream such as stdout says nothing).
      const before = file !== undefined ? (s as WriteStream).bytesWritten : undefined;
      return new Promise((resolve, reject) => {
        s.write(data, (e) => {
          if (!e) return resolve();
          if (s === stream) error ??= e;
          const took = before !== undefined ? (s as WriteStream).bytesWritten - before : 0;
          if (first !== undefined && skip + took > 0) resume.cut = { id: first, bytes: skip + took };
          reject(e);
        });
      });
    },
    get broken(): Error | undefined {
      return file === undefined ? error : undefined;
    },
    close(): Promise<void> {
      // A stream it does not own (stdout) stays open, without this sink's listener: a reload
      // opens a sink on it each time, and would otherwise leave one more listener behind each time.
      if (file === undefined) {
        if (onError !== undefined) stream.off('error', onError);
        return Promise.resolve();
      }
      return new Promise((resolve) => stream.end(resolve));
    },
  };
}
