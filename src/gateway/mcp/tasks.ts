/**
 * MCP tasks (MCP 2025-11-25) bound to the principal that created them (`mcp.bind_tasks`). A request
 * augmented with `params.task` runs as a task: the upstream answers at once with a
 * `CreateTaskResult` (`result.task.taskId`), and callers name the task again in `tasks/get`,
 * `tasks/result` and `tasks/cancel` (`params.taskId`). An upstream whose task store is shared by
 * its callers (the MCP SDK's server, stateless, with one task store) answers whoever names a task:
 * `tasks/result` of another principal's `admin.reset` task would show its output to a caller that
 * was never allowed that tool, and `tasks/list` every caller's tasks.
 *
 * As A2A tasks (`../a2a/registry.ts`), not signed ids: the gateway records, when the answer to a
 * task-augmented `tools/call` names a task, that it belongs to the caller it was sent to and to the
 * tool the call named ({@link taskRecordOwner}), in the same registry (the store's `a2a_tasks`
 * records under `tessera serve`, kind `mcp_task`; and its principal alone, kind
 * `mcp_task_principal`, counted against `mcp.max_tasks_per_principal` across tools), before a byte naming it is relayed
 * ({@link TaskCreateForwardHandler}); a request naming a task is let through only for its owner,
 * and only while the rules still allow the owner's token a `tools/call` of that tool.
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import { TesseraError } from '../../core/errors.ts';
import { DEFAULT_MAX_ANSWER, parsedAnswer } from '../a2a/answers.ts';
import { upstreamRpcCode } from '../a2a/message.ts';
import { type ForwardCallbacks, validStatus } from '../proxy/forward.ts';
import { forwarderSteps, HeldAnswer, type RecordResult, type Unreadable } from '../proxy/held-answer.ts';
import { type McpSigning, SessionForwardHandler, type ToolsListForward } from './forward.ts';
import { isObject } from './message.ts';

/** Task ids longer than this are never recorded, and a request naming one is refused. */
export const MAX_TASK_ID = 1024;

/** The largest answer to a task-augmented request held whole (or SSE event read) for the tasks it names. */
export const MAX_TASK_ANSWER = DEFAULT_MAX_ANSWER;

/**
 * What the registry keeps as a task's owner: the principal (`taskOwner`, a digest without spaces)
 * and the tool whose call created it (a decidable name: visible ASCII, no space), so a request
 * naming the task is decided as a call of that tool would be.
 */
export function taskRecordOwner(principal: string, tool: string): string {
  return `${principal} ${tool}`;
}

/** The principal and the tool of a recorded task owner ({@link taskRecordOwner}); `undefined` for another record. */
export function recordedOwner(record: string): { readonly principal: string; readonly tool: string } | undefined {
  const space = record.indexOf(' ');
  if (space < 1 || space === record.length - 1) return undefined;
  return { principal: record.slice(0, space), tool: record.slice(space + 1) };
}

/**
 * Does a request of `method` name a task the caller must own? Every `tasks/…` method but
 * `tasks/list` (`tasks/get`, `tasks/result`, `tasks/cancel`, and any later one, fail closed).
 */
export function namesTask(method: string | null): boolean {
  return method !== null && method.startsWith('tasks/') && method !== 'tasks/list';
}

/** The task ids a JSON-RPC message creates: a response's `result.task.taskId` (a `CreateTaskResult`). */
export function createdTasks(message: unknown): string[] {
  if (!isObject(message) || 'method' in message || !isObject(message.result)) return [];
  const task = message.result.task;
  if (!isObject(task) || typeof task.taskId !== 'string') return [];
  return [task.taskId];
}

/** Why the gateway relays nothing more of the answer to a task-augmented request. */
const ANSWER_REFUSALS = {
  /** The upstream answered the caller with a task another principal owns. */
  mcp_upstream_task_foreign: 'the upstream answered with a task of another principal',
  /** The caller owns `mcp.max_tasks_per_principal` live tasks on the route (of any tool). */
  mcp_task_registry_full: 'the task an upstream answer names is more than the caller may own',
  /** The registry (the store) did not record the task. */
  mcp_task_registry_unavailable: 'the task an upstream answer names could not be recorded',
  /** Nor within the store's request timeout. */
  mcp_task_registry_timeout: 'the task an upstream answer names was not recorded in time',
  /** Compressed though asked for identity, or larger than the gateway reads: its tasks cannot be read. */
  mcp_task_answer_invalid: 'the upstream answer to a task-augmented request cannot be read for its tasks',
} as const;

/** An answer refused for the reason `code`: nothing more of it is relayed. */
export class TaskAnswerRefused extends Error {
  override readonly name = 'TaskAnswerRefused';
  readonly code: keyof typeof ANSWER_REFUSALS;
  constructor(code: keyof typeof ANSWER_REFUSALS) {
    super(ANSWER_REFUSALS[code]);
    this.code = code;
  }
}

/** Records task ids as the caller's, resolving once they are recorded; never rejects. */
export type RecordTasks = (ids: readonly string[]) => Promise<RecordResult>;

/** Why an answer is refused: its tasks could not be recorded, or it cannot be read for them. */
const REFUSALS = {
  foreign: 'mcp_upstream_task_foreign',
  full: 'mcp_task_registry_full',
  unavailable: 'mcp_task_registry_unavailable',
  timeout: 'mcp_task_registry_timeout',
  compressed: 'mcp_task_answer_invalid',
  too_large: 'mcp_task_answer_invalid',
  stream_ambiguous: 'mcp_task_answer_invalid',
} as const satisfies Record<Unreadable | Exclude<RecordResult, 'recorded'>, keyof typeof ANSWER_REFUSALS>;

/**
 * The forwarder of a task-augmented request's answer: the MCP forwarder ({@link SessionForwardHandler},
 * session and event ids signed, tools lists filtered), fed only once the tasks the answer creates
 * ({@link createdTasks}) are recorded for the caller. A 2xx event stream passes chunk by chunk; a
 * chunk completing an event that creates a task holds the upstream until the task is recorded, then
 * is written. Any other 2xx answer is held whole (at most `limit` bytes) and read as JSON (a BOM,
 * UTF-16 or UTF-32 read as clients read them), then recorded and relayed. Fail closed: an answer
 * compressed anyway, larger than `limit` or an event larger than it is refused
 * (`mcp_task_answer_invalid`), and so is one whose task is another principal's or cannot be recorded.
 * A task named in an answer not read so (a non-2xx one, another request's) is never recorded, so
 * naming it later is refused: the gateway only fails to let a task through, never lets one through
 * unrecorded.
 */
export class TaskCreateForwardHandler extends SessionForwardHandler {
  readonly #held: HeldAnswer<string[]>;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    sign: McpSigning,
    record: RecordTasks,
    ownCredential = false,
    tools?: ToolsListForward,
    limit: number = MAX_TASK_ANSWER,
    rpcId?: string | number,
  ) {
    super(res, cb, extra, sign, ownCredential, tools, rpcId);
    this.#held = new HeldAnswer(
      {
        ...forwarderSteps(this, SessionForwardHandler.prototype),
        named: (texts) => texts.flatMap((text) => createdTasks(parsedAnswer(text))),
        empty: (ids) => ids.length === 0,
        record,
        refusal: (why) => new TaskAnswerRefused(REFUSALS[why]),
      },
      limit,
    );
  }

  /** An answer refused mid-stream ends as a revoked one does: with the request's JSON-RPC error, between two events. */
  override lastBytes(error: Error): string | undefined {
    if (!(error instanceof TaskAnswerRefused)) return super.lastBytes(error);
    return this.errorEvent(upstreamRpcCode(error.code), new TesseraError(error.code).description);
  }

  override abort(reason: Error): void {
    this.#held.abort(reason);
  }

  override onError(error: Error): void {
    this.#held.failed();
    super.onError(error);
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (status < 200 || status >= 300 || !validStatus(status)) return super.onHeaders(status, raw, resume);
    return this.#held.onHeaders(status, raw, resume);
  }

  override onData(chunk: Buffer): boolean {
    return this.#held.onData(chunk);
  }

  override onComplete(): void {
    this.#held.onComplete();
  }
}
