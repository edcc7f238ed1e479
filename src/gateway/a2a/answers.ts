/**
 * The A2A task and context ids an upstream answer names (a JSON body, an SSE event's data), read
 * as lenient clients read them: its bytes decoded ({@link answerText}), its keys folded
 * ({@link a2aFold}), and an answer spelling a member it is read for twice refused as ambiguous
 * ({@link answerIds}).
 *
 * @module
 */
import { isObject } from '../mcp/message.ts';
import { a2aFold } from './message.ts';

/**
 * The tasks and contexts an answer (a JSON-RPC response or a batch of them, an SSE event's data, or an HTTP+JSON
 * body) creates or names as its subject, read only where A2A puts them: the result (or a JSON-RPC
 * error's `data`) itself or its 1.0 wrapper (`task`, `message`, `statusUpdate`, `artifactUpdate`)
 * being a Task (`id`, with a `status` object or `kind: "task"`; 0.2's `sessionId` its context), a
 * Message or an update event (`taskId`, `contextId`). Ids elsewhere (in parts, metadata,
 * `referenceTaskIds`) are not the caller's for being shown.
 *
 * Keys are read as a lenient client reads them ({@link a2aFold}: any case, NULs, `ſ` for `s`,
 * inner underscores; a Go client's encoding/json binds `ContextID`, `taſkId` and `Result`, a Python
 * client's pydantic models and protobuf JSON parsers `context_id`), the envelope's and the
 * discriminators' too. An answer spelling one of the members read twice in one object (`contextId`
 * and `ContextId` or `context_id`) is `'ambiguous'`: a case-sensitive client reads the exact one,
 * Go's the last, pydantic the alias, and the gateway cannot know which one its caller reads.
 */
export function answerIds(value: unknown): { tasks: string[]; contexts: string[] } | 'ambiguous' {
  const out = { tasks: [] as string[], contexts: [] as string[] };
  // A batch answer: each response in it (a task it creates is the caller's as much as a single one's).
  for (const v of Array.isArray(value) ? value : [value]) if (!answerIdsOf(v, out)) return 'ambiguous';
  return out;
}

/** The members of an answer the gateway reads, by their {@link a2aFold}ed names. */
const ENVELOPE_MEMBERS = ['jsonrpc', 'result', 'error'];
const ERROR_MEMBERS = ['data'];
const WRAPPER_MEMBERS = ['task', 'message', 'statusupdate', 'artifactupdate'];
const SUBJECT_MEMBERS = ['id', 'status', 'kind', 'taskid', 'contextid', 'sessionid'];

/**
 * The members of `o` named in `names` (folded), by folded name; `undefined` when one is spelled
 * twice (the exact duplicates JSON.parse already collapsed, as clients do: the last one wins).
 */
function membersOf(o: Record<string, unknown>, names: readonly string[]): Map<string, unknown> | undefined {
  const found = new Map<string, unknown>();
  for (const [k, v] of Object.entries(o)) {
    const n = a2aFold(k);
    if (!names.includes(n)) continue;
    if (found.has(n)) return undefined;
    found.set(n, v);
  }
  return found;
}

/** Adds the ids of one response to `out`; false when it is ambiguous. */
function answerIdsOf(value: unknown, out: { tasks: string[]; contexts: string[] }): boolean {
  if (!isObject(value)) return true;
  const envelope = membersOf(value, ENVELOPE_MEMBERS);
  if (envelope === undefined) return false;
  // A JSON-RPC response carries the answer in `result`, or an error whose `data` a client may show
  // its user (read alike: fail closed); an HTTP+JSON body is the answer.
  if (envelope.size === 0) return subjectIds(value, out);
  if (!subjectIds(envelope.get('result'), out)) return false;
  const error = envelope.get('error');
  if (!isObject(error)) return true;
  const data = membersOf(error, ERROR_MEMBERS);
  return data !== undefined && subjectIds(data.get('data'), out);
}

/** Adds the ids of a result (or an error's data) and of its 1.0 wrappers to `out`; false when ambiguous. */
function subjectIds(result: unknown, out: { tasks: string[]; contexts: string[] }): boolean {
  if (!isObject(result)) return true;
  const wrappers = membersOf(result, WRAPPER_MEMBERS);
  if (wrappers === undefined) return false;
  for (const c of [result, ...wrappers.values()]) {
    if (!isObject(c)) continue;
    const m = membersOf(c, SUBJECT_MEMBERS);
    if (m === undefined) return false;
    const id = m.get('id');
    if (typeof id === 'string' && (isObject(m.get('status')) || m.get('kind') === 'task')) out.tasks.push(id);
    const taskId = m.get('taskid');
    if (typeof taskId === 'string') out.tasks.push(taskId);
    for (const k of ['contextid', 'sessionid']) {
      const context = m.get(k);
      if (typeof context === 'string') out.contexts.push(context);
    }
  }
  return true;
}

/** The default of `a2a.max_answer_size`: the largest answer (a JSON body, one SSE event) read for its ids. */
export const DEFAULT_MAX_ANSWER = 4 * 1024 * 1024;

/** An answer's (or an event's) text as JSON, `undefined` when it is not JSON: it names nothing a client reads. */
export function parsedAnswer(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A held answer's text, decoded as lenient clients decode JSON bytes: a UTF-8 BOM skipped (fetch's
 * `json()`, Python's `json.loads`), UTF-16 and UTF-32 told from a BOM or the NULs of the first bytes
 * (Python's `json.detect_encoding`, which `httpx`'s `json()` uses). Read as UTF-8 alone, such an
 * answer would not parse, and the ids a client reads in it would go unrecorded.
 */
export function answerText(b: Buffer): string {
  const [b0, b1, b2, b3] = [b[0], b[1], b[2], b[3]];
  if ((b0 === 0 && b1 === 0 && b2 === 0xfe && b3 === 0xff) || (b0 === 0xff && b1 === 0xfe && b2 === 0 && b3 === 0))
    return utf32(b.subarray(4), b0 === 0);
  if (b0 === 0xfe && b1 === 0xff) return utf16(b.subarray(2), true);
  if (b0 === 0xff && b1 === 0xfe) return utf16(b.subarray(2), false);
  if (b0 === 0xef && b1 === 0xbb && b2 === 0xbf) return b.subarray(3).toString('utf8');
  if (b.length >= 4) {
    if (b0 === 0) return b1 !== 0 ? utf16(b, true) : utf32(b, true);
    if (b1 === 0) return b2 !== 0 || b3 !== 0 ? utf16(b, false) : utf32(b, false);
  } else if (b.length === 2) {
    if (b0 === 0) return utf16(b, true);
    if (b1 === 0) return utf16(b, false);
  }
  return b.toString('utf8');
}

function utf16(b: Buffer, bigEndian: boolean): string {
  const even = b.subarray(0, b.length - (b.length % 2));
  return (bigEndian ? Buffer.from(even).swap16() : even).toString('utf16le');
}

function utf32(b: Buffer, bigEndian: boolean): string {
  let out = '';
  for (let i = 0; i + 4 <= b.length; i += 4) {
    const c = bigEndian ? b.readUInt32BE(i) : b.readUInt32LE(i);
    if (c > 0x10ffff) return ''; // not UTF-32: no client reads it
    out += String.fromCodePoint(c);
  }
  return out;
}
