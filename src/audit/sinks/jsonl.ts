/**
 * JSON-lines audit sink: one event per line, to a file (appended, created mode 0600, never through
 * a symlink at its path, opened again at its path when it was deleted or moved) or a stream such as stdout. Events never hold tokens or header values (see {@link AuditEvent}), so they are written
 * as they are, with the characters JSON leaves raw but readers take for a line break or a terminal
 * command (U+2028, U+2029, C1 controls such as NEL, bidirectional overrides) written as `\uXXXX`
 * escapes: a value a caller chose stays inside its one line and reads back the same.
 *
 * @module
 */
import { constants, createWriteStream, fstat, fstatSync, lstat, type WriteStream } from 'node:fs';
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
 * Where a write refused part-way stopped: the batch's first event, how many bytes of its text
 * reached the file, and which file took them (its device and inode) and where they end in it (its
 * size then). Kept by the sink; a sink that replaces another on the same target (a reload) is given
 * the same object, so the batch written again goes on from there when it is the same file.
 */
export interface JsonLinesResume {
  cut?:
    | {
        readonly id: string;
        readonly bytes: number;
        readonly dev: bigint;
        readonly ino: bigint;
        readonly end: bigint;
      }
    | undefined;
}

/** The stream's file once it is open (rejects with the error that kept it from opening). */
function opened(s: WriteStream): Promise<void> {
  if (!s.pending) return s.destroyed ? Promise.reject(s.errored ?? new Error('audit file closed')) : Promise.resolve();
  return new Promise((resolve, reject) => {
    const ready = () => {
      s.off('error', failed);
      resolve();
    };
    const failed = (e: Error) => {
      s.off('ready', ready);
      reject(e);
    };
    s.once('ready', ready);
    s.once('error', failed);
  });
}

/** The open file's device, inode and size, or undefined when it is not open. */
function where(s: WriteStream): { dev: bigint; ino: bigint; end: bigint } | undefined {
  const fd = (s as WriteStream & { fd?: number | null }).fd;
  if (typeof fd !== 'number') return undefined;
  try {
    const st = fstatSync(fd, { bigint: true });
    return { dev: st.dev, ino: st.ino, end: st.size };
  } catch {
    return undefined;
  }
}

/**
 * Whether the file a stream has open is no longer the one at `file`: deleted (no name left for it,
 * or nothing at the path), or renamed away with another in its place (another device or inode at
 * the path, a symlink included). False when it cannot tell (not open yet, a stat failing otherwise,
 * a directory on the path that cannot be searched): the open file is kept, as before.
 */
function moved(s: WriteStream, file: string): Promise<boolean> {
  const fd = (s as WriteStream & { fd?: number | null }).fd;
  if (s.pending || typeof fd !== 'number') return Promise.resolve(false);
  return new Promise((resolve) => {
    fstat(fd, { bigint: true }, (e, open) => {
      if (e) return resolve(false);
      if (open.nlink === 0n) return resolve(true);
      lstat(file, { bigint: true }, (e, at) => {
        if (e) return resolve(e.code === 'ENOENT' || e.code === 'ENOTDIR');
        resolve(at.dev !== open.dev || at.ino !== open.ino);
      });
    });
  });
}

/** What is wrong with an existing audit file (see {@link auditFileIssueOf}). */
export interface AuditFileIssue {
  /** `AUDIT_FILE_FOREIGN_OWNER` (another user owns it) or `AUDIT_FILE_WRITABLE` (its group or every user may write it). */
  readonly code: 'AUDIT_FILE_FOREIGN_OWNER' | 'AUDIT_FILE_WRITABLE';
  /** Said after the file's path: `belongs to uid 65534, not to the user Tessera runs as (uid 0)`. */
  readonly what: string;
  /** Who could then forge or erase events, for the load's message. */
  readonly why: string;
  /** What to run, for the file `file`: `chown 0 <file>, or remove it …` or `chmod go-w <file>`. */
  readonly fix: string;
}

/**
 * What is wrong with an existing audit file `file` of this `stat` (`st_uid`, `st_mode`), when it
 * is a regular file, for a process of effective uid `euid`: another user owns it (its owner may
 * rewrite or truncate it, whatever its mode: a process running as root opens another user's 0600
 * file all the same), or its group or every user may write it (they could append events Tessera
 * never wrote, or truncate the trail). `undefined` when neither, when it is no regular file (a
 * device such as /dev/full is not a trail anyone forges), and for the owner when `euid` is
 * `undefined` (`process.geteuid` is missing on Windows). An owner is checked first: removing the
 * file fixes both. The load (gateway/compile.ts) and a reopen here refuse such a file alike.
 */
export function auditFileIssueOf(
  st: { isFile(): boolean; readonly mode: number; readonly uid: number },
  euid: number | undefined,
  file: string,
): AuditFileIssue | undefined {
  if (!st.isFile()) return undefined;
  if (euid !== undefined && st.uid !== euid)
    return {
      code: 'AUDIT_FILE_FOREIGN_OWNER',
      what: `belongs to uid ${st.uid}, not to the user Tessera runs as (uid ${euid})`,
      why: 'its owner can rewrite or truncate the audit trail',
      fix: `chown ${euid} ${file}, or remove it so Tessera creates it mode 0600`,
    };
  if ((st.mode & 0o022) === 0) return undefined;
  return {
    code: 'AUDIT_FILE_WRITABLE',
    what: `is writable by ${st.mode & 0o002 ? 'every user' : 'its group'} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`,
    why: 'anyone who can write it can forge or erase audit events',
    fix: `chmod go-w ${file}`,
  };
}

/** Options of {@link createJsonLinesSink}. */
export interface JsonLinesSinkOptions {
  readonly resume?: JsonLinesResume;
  /**
   * Called when the file was found deleted or moved before a batch and a new one is open at its
   * path (the gateway logs `audit_file_reopened`): once the new file has opened, not before, and
   * once per reopen. An open that fails (its directory gone) fails the batch, as any write failure,
   * and is not said here; each later batch opens the path again, and the first that opens it calls
   * this, once.
   */
  readonly onReopened?: () => void;
}

/**
 * A file is written through the descriptor it opened, and before each batch the file open is
 * compared with the one at its path (fstat and lstat: two system calls a batch, in the thread
 * pool): when it was deleted, or renamed away without a reload, the path is opened again (created
 * 0600 as the first time) and the batch written there, as nginx, pino and Envoy reopen their logs.
 * The batches of one file sink are written one after the other, in the order given.
 *
 * @example
 * ```ts
 * const sink = createJsonLinesSink({ file: '/var/log/tessera/audit.jsonl' });
 * const stdout = createJsonLinesSink({ stream: process.stdout });
 * ```
 */
export function createJsonLinesSink(target: { file: string } | { stream: Writable }, options: JsonLinesSinkOptions = {}): JsonLinesSink {
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
  // the batch's first event, how many bytes of its text reached the file, and which file (device,
  // inode) and where they end. The same batch written again (kept by audit.on_queue_full: refuse,
  // with newer events after it) goes on from there when the file open now is that file and ends
  // there, so no line is written twice and the cut line is completed. Any other file (a rotation:
  // the file renamed and a new one opened at the path; or one emptied by copytruncate) gets the
  // batch whole: log shippers read each file on its own, and the rest of a line at the top of a
  // new file would leave its event whole in neither. The old file then ends with the start of the
  // cut line and no newline, which line readers do not pass on as an event.
  const resume = options.resume ?? {};
  const send = (s: Writable, data: Buffer, first: string | undefined, skip: number, cut: JsonLinesResume['cut']): Promise<void> => {
    // A file stream counts the bytes each partial write took (a stream such as stdout says nothing).
    const before = file !== undefined ? (s as WriteStream).bytesWritten : undefined;
    return new Promise((resolve, reject) => {
      // The callback fires once the text is handed to the OS, which is the back-pressure we want.
      // A failed write's callback comes before the stream's 'error' event (and its closing the
      // file): note it here too.
      s.write(data, (e) => {
        if (!e) return resolve();
        if (s === stream) error ??= e;
        const took = before !== undefined ? (s as WriteStream).bytesWritten - before : 0;
        // Nothing taken: a cut still stands where it was (the next attempt decides again).
        if (took === 0) resume.cut = cut;
        else if (first !== undefined) {
          const at = where(s as WriteStream);
          if (at !== undefined) resume.cut = { id: first, bytes: skip + took, ...at };
        }
        reject(e);
      });
    });
  };
  const writeNow = (events: readonly AuditEvent[]): Promise<void> => {
    // A stream it does not own is not opened again (a file is, by writeFile, before this).
    if (error) return Promise.reject(error);
    let text = '';
    for (const e of events) text += `${JSON.stringify(e)}\n`;
    const data = Buffer.from(terminalSafeJson(text));
    const first = events[0]?.id;
    const cut = resume.cut;
    resume.cut = undefined;
    const s = stream;
    if (cut === undefined || cut.id !== first || file === undefined) return send(s, data, first, 0, undefined);
    // The batch a refused write cut: which file is open now is known once it is opened.
    return opened(s as WriteStream).then(
      () => {
        const at = where(s as WriteStream);
        const same = at !== undefined && at.dev === cut.dev && at.ino === cut.ino && at.end === cut.end;
        const skip = same ? Math.min(cut.bytes, data.length) : 0;
        return send(s, skip > 0 ? data.subarray(skip) : data, first, skip, cut);
      },
      (e: unknown) => {
        // Not opened (the directory gone): the next attempt decides again.
        resume.cut = cut;
        throw e;
      },
    );
  };
  // Each file batch waits for the one before: the check before it, and a reopen, must not let a
  // later batch pass it.
  let tail: Promise<unknown> = Promise.resolve();
  // The stream whose file was found ours and writable by its owner only (none yet).
  let checked: Writable | undefined;
  // The file was found deleted or moved and no new one has opened at the path yet: onReopened is
  // due once one does (the first open may fail, the directory gone, and a later batch's succeed).
  let reopening = false;
  const writeFile = async (f: string, events: readonly AuditEvent[]): Promise<void> => {
    if (!error && (await moved(stream as WriteStream, f))) {
      // Deleted, or renamed away without a reload: what is still buffered goes to the old file,
      // the batch to a new one at the path.
      stream.end();
      stream = open();
      reopening = true;
    }
    if (error) {
      // A file that failed (disk full, an I/O error, its directory gone, a mode refused) is opened
      // again for the next batch, so writing resumes once the cause is gone rather than at the next
      // reload; the batches refused meanwhile were reported as failed.
      stream.destroy();
      error = undefined;
      stream = open();
    }
    if (stream !== checked) {
      // A file found at the path when it is opened again (one planted in the log directory after a
      // deletion) is held to the check a load makes (gateway/compile.ts): owned by the user Tessera
      // runs as, and writable by its owner only. Otherwise each batch fails (counted, logged) until
      // it is fixed, as a symlink at the path does.
      const s = stream as WriteStream;
      await opened(s);
      // A new file is open at the path (a file planted there is refused below, but it was opened).
      if (reopening) {
        reopening = false;
        options.onReopened?.();
      }
      const issue = auditFileIssueOf(fstatSync((s as WriteStream & { fd: number }).fd), process.geteuid?.(), f);
      if (issue !== undefined) {
        const e = Object.assign(new Error(`audit file ${f} ${issue.what}; run ${issue.fix}`), { code: issue.code });
        if (s === stream) error = e;
        throw e;
      }
      checked = s;
    }
    return writeNow(events);
  };
  return {
    write(events: readonly AuditEvent[]): Promise<void> {
      if (file === undefined) return writeNow(events);
      const written = tail.then(() => writeFile(file, events));
      tail = written.catch(() => undefined);
      return written;
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
      return tail.then(() => new Promise((resolve) => stream.end(resolve)));
    },
  };
}
