/**
 * The answer to an MCP `tasks/list` (with `mcp.list_tasks`), filtered to the caller's own tasks: an
 * upstream whose task store is shared by its callers (the MCP SDK's server with one task store)
 * lists every principal's task ids and statuses. The answer is held whole (a JSON body, or an event
 * stream to its end, at most the limit), each listed task looked up in the task registry
 * ({@link OwnTasks}: recorded as the caller's, `../mcp/tasks.ts`), and relayed with only those: a
 * JSON body with its new length, an event stream rebuilt as one `data:` line per event. The rebuilt
 * stream carries no event ids, so it cannot be resumed (a resume would replay the upstream's stored,
 * unfiltered list). A page may shrink (to none) and the caller pages on. The upstream's `nextCursor`
 * reaches the caller sealed ({@link sealCursor}: AES-256-GCM under a key derived from the MCP
 * session key, bound to the route and the caller), since an upstream's cursor may name another
 * principal's task (the MCP SDK's InMemoryTaskStore uses the page's last task id); a tasks/list
 * naming a cursor is let through only with one sealed for its caller, opened
 * ({@link openListCursor}).
 *
 * Fail closed: an answer compressed anyway, larger than the limit, not readable as JSON or SSE, a
 * response listing tasks in a form the gateway does not read (a repeated or look-alike key, `tasks`
 * not a list), naming more tasks than one answer is recorded for, or whose tasks the registry cannot
 * look up, is refused (nothing of it relayed). A task list anywhere else (another answer, a GET
 * stream, the legacy HTTP+SSE transport's stream) is refused by the tools-list reader
 * (`tools-list.ts`, `refuseTasks`).
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, type KeyObject, randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Principal } from '../../core/verify/principal.ts';
import { answerText, parsedAnswer } from '../a2a/answers.ts';
import { SseDataReader } from '../a2a/events.ts';
import { type ForwardCallbacks, plainEncoding, rawHeader, validStatus } from '../proxy/forward.ts';
import { isEventStream } from './events.ts';
import { type McpSigning, SessionForwardHandler, type ToolsListForward, withoutRepresentation } from './forward.ts';
import { hasDuplicateKeys, hasMemberLookalike, isObject, MESSAGE_MEMBERS } from './message.ts';
import { ownerOf } from './sessions.ts';
import { MAX_TASK_ANSWER, TaskAnswerRefused } from './tasks.ts';

const CURSOR_INFO = 'tessera mcp task cursor v1';

function cursorCipher(key: KeyObject, route: string, principal: Principal): { readonly key: Buffer; readonly aad: Buffer } {
  return {
    key: createHmac('sha256', key).update(CURSOR_INFO, 'utf8').digest(),
    aad: Buffer.from(JSON.stringify([route, ...ownerOf(principal)]), 'utf8'),
  };
}

/** An upstream's tasks/list cursor as its caller receives it: encrypted and bound to the route and the caller. */
export function sealCursor(key: KeyObject, route: string, principal: Principal, cursor: string): string {
  const c = cursorCipher(key, route, principal);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', c.key, iv);
  cipher.setAAD(c.aad);
  const sealed = Buffer.concat([cipher.update(cursor, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, sealed, cipher.getAuthTag()]).toString('base64url');
}

/** The upstream's cursor a caller presents sealed ({@link sealCursor}); `undefined` unless sealed for it on the route. */
export function openCursor(key: KeyObject, route: string, principal: Principal, presented: string): string | undefined {
  const raw = Buffer.from(presented, 'base64url');
  if (raw.length < 28 || raw.toString('base64url') !== presented) return undefined;
  const c = cursorCipher(key, route, principal);
  try {
    const decipher = createDecipheriv('aes-256-gcm', c.key, raw.subarray(0, 12));
    decipher.setAAD(c.aad);
    decipher.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

/**
 * A tasks/list request body (read and checked as a JSON-RPC message already) with its
 * `params.cursor` opened for the upstream; unchanged without one; `undefined` when it cannot be
 * opened (not sealed for the caller, not a string, a key read as `cursor` another way).
 */
export function openListCursor(body: Buffer, open: (sealed: string) => string | undefined): Buffer | undefined {
  let message: unknown;
  try {
    message = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!isObject(message)) return undefined;
  const params = message.params;
  if (params === undefined) return body;
  if (!isObject(params) || hasMemberLookalike(params, CURSOR_MEMBERS)) return undefined;
  if (params.cursor === undefined) return body;
  if (typeof params.cursor !== 'string') return undefined;
  const cursor = open(params.cursor);
  if (cursor === undefined) return undefined;
  return Buffer.from(JSON.stringify({ ...message, params: { ...params, cursor } }), 'utf8');
}

/** Which of `ids` are the caller's tasks, or why the registry could not tell (the answer is then refused). */
export type OwnTasks = (ids: readonly string[]) => Promise<ReadonlySet<string> | 'full' | 'unavailable' | 'timeout'>;

/** How a tasks/list's answer is filtered: the caller's own tasks, and its cursor sealed for it. */
export interface McpListTasks {
  readonly own: OwnTasks;
  readonly seal: (cursor: string) => string;
}

const REFUSALS = {
  full: 'mcp_task_registry_full',
  unavailable: 'mcp_task_registry_unavailable',
  timeout: 'mcp_task_registry_timeout',
} as const;

const TASKS_MEMBERS: readonly string[] = ['tasks', 'nextCursor'];
const CURSOR_MEMBERS: readonly string[] = ['cursor'];
const TASK_MEMBERS: readonly string[] = ['taskId'];

/** One message of the answer: as it came (not a task list), or read, its tasks to filter. */
type Read =
  | { readonly text: string }
  | { readonly message: Record<string, unknown>; readonly result: Record<string, unknown>; readonly tasks: unknown[] };

/** A message of a tasks/list answer, read for its tasks; `undefined` when it cannot be read so. */
function readMessage(text: string): Read | undefined {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(message) || hasDuplicateKeys(text) || hasMemberLookalike(message, MESSAGE_MEMBERS)) return undefined;
  const result = message.result;
  if (result === undefined) return 'method' in message || isObject(message.error) ? { text } : undefined;
  if ('method' in message || !isObject(result) || hasMemberLookalike(result, TASKS_MEMBERS)) return undefined;
  if (result.tasks === undefined && result.nextCursor === undefined) return { text };
  const tasks = result.tasks ?? [];
  if (!Array.isArray(tasks) || (result.nextCursor !== undefined && typeof result.nextCursor !== 'string')) return undefined;
  return { message, result, tasks };
}

/** The id of a listed task, when the gateway reads one (a string `taskId`, no look-alike key). */
function taskIdOf(task: unknown): string | undefined {
  return isObject(task) && typeof task.taskId === 'string' && !hasMemberLookalike(task, TASK_MEMBERS) ? task.taskId : undefined;
}

type Head = { readonly status: number; readonly raw: Buffer[]; readonly resume: () => void };

/**
 * The forwarder of a tasks/list request's answer: a 2xx answer held whole and filtered (see the
 * module), then through the MCP forwarder ({@link SessionForwardHandler}: session signed, tools
 * lists filtered) as if it had just arrived. Any other answer passes as that forwarder passes it.
 */
export class TaskListForwardHandler extends SessionForwardHandler {
  readonly #own: OwnTasks;
  readonly #seal: (cursor: string) => string;
  readonly #limit: number;
  #head: Head | undefined;
  #chunks: Buffer[] = [];
  #total = 0;
  /** The upstream's answer is complete and waits for its tasks to be looked up. */
  #completing = false;
  #over = false;
  /** How many listed tasks the caller no longer sees (reported once the answer is relayed). */
  hidden = 0;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    sign: McpSigning,
    own: OwnTasks,
    seal: (cursor: string) => string,
    ownCredential = false,
    tools?: ToolsListForward,
    rpcId?: string | number,
    limit: number = MAX_TASK_ANSWER,
  ) {
    super(res, cb, extra, sign, ownCredential, tools, rpcId);
    this.#own = own;
    this.#seal = seal;
    this.#limit = limit;
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (status < 200 || status >= 300 || !validStatus(status)) return super.onHeaders(status, raw, resume);
    if (!plainEncoding(rawHeader(raw, 'content-encoding'))) return this.#refuse('mcp_task_answer_invalid');
    const length = rawHeader(raw, 'content-length');
    if (length === null || (typeof length === 'string' && Number(length) > this.#limit)) return this.#refuse('mcp_task_answer_invalid');
    this.#head = { status, raw, resume };
    return true;
  }

  override onData(chunk: Buffer): boolean {
    if (this.#over) return false;
    if (this.#head === undefined) return super.onData(chunk);
    this.#total += chunk.length;
    if (this.#total > this.#limit) return this.#refuse('mcp_task_answer_invalid');
    this.#chunks.push(chunk);
    return true;
  }

  override abort(reason: Error): void {
    // The upstream exchange is over while the answer waits for the registry: failed here.
    if (this.#completing) this.onError(reason);
    else super.abort(reason);
  }

  override onError(error: Error): void {
    this.#over = true;
    this.#completing = false;
    super.onError(error);
  }

  override onComplete(): void {
    if (this.#over) return;
    const head = this.#head;
    if (head === undefined) {
      super.onComplete();
      return;
    }
    this.#head = undefined;
    const body = Buffer.concat(this.#chunks, this.#total);
    this.#chunks = [];
    const stream = isEventStream(rawHeader(head.raw, 'content-type') ?? undefined);
    let texts: string[];
    if (stream) {
      const reader = new SseDataReader(this.#limit);
      texts = reader.push(body);
      if (reader.overflow || reader.ambiguous) {
        this.onError(new TaskAnswerRefused('mcp_task_answer_invalid'));
        return;
      }
    } else {
      const text = answerText(body);
      const type = rawHeader(head.raw, 'content-type');
      // No JSON, and not said to be (the legacy transport's 202 `Accepted`): no answer, relayed as it came.
      texts = body.length === 0 || (parsedAnswer(text) === undefined && !/json/i.test(type ?? '')) ? [] : [text];
    }
    const read = texts.map(readMessage);
    if (read.some((r) => r === undefined)) {
      this.onError(new TaskAnswerRefused('mcp_task_answer_invalid'));
      return;
    }
    const messages = read as Read[];
    const ids = [...new Set(messages.flatMap((m) => ('tasks' in m ? m.tasks.map(taskIdOf).filter((id) => id !== undefined) : [])))];
    if (ids.length === 0 && !messages.some((m) => 'tasks' in m)) {
      // Nothing listed in it (an error, a 202 of the legacy transport): relayed as it came.
      if (!super.onHeaders(head.status, head.raw, head.resume)) return;
      if (body.length > 0) super.onData(body);
      super.onComplete();
      return;
    }
    this.#completing = true;
    void this.#own(ids).then((own) => {
      if (!this.#completing) return; // failed meanwhile
      this.#completing = false;
      if (!(own instanceof Set)) {
        this.onError(new TaskAnswerRefused(REFUSALS[own as keyof typeof REFUSALS]));
        return;
      }
      const out = messages.map((m) => {
        if (!('tasks' in m)) return m.text;
        const kept = m.tasks.filter((t) => {
          const id = taskIdOf(t);
          return id !== undefined && own.has(id);
        });
        this.hidden += m.tasks.length - kept.length;
        const next = m.result.nextCursor;
        const result = { ...m.result, tasks: kept, ...(typeof next === 'string' ? { nextCursor: this.#seal(next) } : {}) };
        return JSON.stringify({ ...m.message, result });
      });
      const bytes = Buffer.from(
        stream
          ? out
              .map(
                (text) =>
                  `${text
                    .split('\n')
                    .map((line) => `data: ${line}\n`)
                    .join('')}\n`,
              )
              .join('')
          : (out[0] as string),
        'utf8',
      );
      const raw = withoutRepresentation(head.raw);
      if (!stream) raw.push(Buffer.from('content-length'), Buffer.from(String(bytes.length)));
      // The exchange is over upstream: a refusal from here on fails the answer here.
      this.#completing = true;
      const sent = super.onHeaders(head.status, raw, head.resume);
      if (sent && !this.#over && bytes.length > 0) super.onData(bytes);
      if (!sent || this.#over) return;
      this.#completing = false;
      super.onComplete();
    });
  }

  #refuse(code: 'mcp_task_answer_invalid'): false {
    this.#head = undefined;
    this.#chunks = [];
    super.abort(new TaskAnswerRefused(code));
    return false;
  }
}
