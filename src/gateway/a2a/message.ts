/**
 * The A2A task and context ids a request names, for the ownership check (`registry.ts`), and the
 * JSON-RPC pieces of a refusal on an A2A route (its error codes, the request's `id`).
 *
 * Reading a request: every `taskId` and `referenceTaskIds` anywhere in it must be the caller's
 * tasks, every `contextId` (0.2: `sessionId`) the caller's context or a new one (then it becomes
 * the caller's), and so must the task a JSON-RPC `params.id` names (A2A 0.2's `tasks/send` may
 * name a new one; the `id` beside a 1.0 push notification config call's `taskId`, a config id, must
 * not be another's task; a 0.3 call's `tasks/pushNotificationConfig/…` `id` is its task). Keys are compared without case, NULs, `ſ` for `s` and inner
 * underscores ({@link a2aFold}), as lenient upstream parsers read them (Go's encoding/json, the
 * Python SDK's pydantic models, protobuf JSON); a message spelling `method` or `params` twice, or
 * one of the id members twice in one object (`taskId` and `task_id`), is refused. Listing tasks
 * (1.0 `ListTasks`) is refused: its answer would list every caller's tasks.
 *
 * @module
 */
import type { ErrorCode } from '../../core/errors.ts';
import { memberFold, RPC_SERVER_ERROR } from '../mcp/message.ts';

/** A2A's JSON-RPC errors: `TaskNotFoundError` (what an agent answers for a task it does not have) and `UnsupportedOperationError`. */
export const RPC_TASK_NOT_FOUND = -32001;
export const RPC_UNSUPPORTED_OPERATION = -32004;
/** A2A's `InvalidAgentResponseError`: the agent's answer is not one the gateway relays (spec §5.4). */
export const RPC_INVALID_AGENT_RESPONSE = -32006;
/** JSON-RPC 2.0's internal error (§5.1). */
export const RPC_INTERNAL_ERROR = -32603;

/** Refusals of an upstream answer (a2a/forward.ts, a2a/card.ts): the agent's answer is not relayed. */
const ANSWER_CODES: ReadonlySet<ErrorCode> = new Set([
  'a2a_upstream_task_foreign',
  'a2a_upstream_answer_compressed',
  'a2a_upstream_answer_too_large',
  'a2a_upstream_answer_ambiguous',
  'a2a_extended_card_invalid',
]);
/** The gateway cannot record the tasks an answer names (its store, its cap): it may answer later. */
const REGISTRY_CODES: ReadonlySet<ErrorCode> = new Set([
  'a2a_task_registry_full',
  'a2a_task_registry_unavailable',
  'a2a_task_registry_timeout',
  'mcp_task_registry_full',
  'mcp_task_registry_unavailable',
  'mcp_task_registry_timeout',
]);

/**
 * The JSON-RPC error code a call on an A2A route is answered with when its upstream exchange fails
 * with reason `code`: `InvalidAgentResponseError` (-32006) for an answer the gateway refuses to
 * relay, -32000 (a server error, as the gateway's other refusals) when its tasks could not be
 * recorded, -32603 (internal error) when the upstream gave no usable answer (unreachable, timed
 * out, refusing the gateway's credential). An MCP route's call gets the same (-32000 when the tasks
 * an answer creates could not be recorded, `mcp.bind_tasks`; else -32603).
 */
export function upstreamRpcCode(code: ErrorCode): number {
  if (ANSWER_CODES.has(code)) return RPC_INVALID_AGENT_RESPONSE;
  if (REGISTRY_CODES.has(code)) return RPC_SERVER_ERROR;
  return RPC_INTERNAL_ERROR;
}

/** The `id` of a single JSON-RPC request (echoed in an error answer), else `null`. */
export function rpcIdOf(value: unknown): string | number | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const id = (value as { id?: unknown }).id;
  return typeof id === 'string' || typeof id === 'number' ? id : null;
}

/** The most distinct task and context ids one request may name; more are refused (`a2a_message_invalid`). */
export const MAX_NAMED_IDS = 100;

/** Ids longer than this are never recorded, and refused in a request. */
export const MAX_A2A_ID = 1024;

/**
 * A key as an upstream's (or a client's) lenient parser may read it on an A2A route: without NULs,
 * any case, `ſ` as `s` ({@link memberFold}: Go's encoding/json folds keys with Unicode simple
 * folding, `taſkId` binds to `taskId`, `paramſ` to `params`), and without the underscores inside
 * it: the Python a2a-sdk's models (pydantic, camelCase aliases with `populate_by_name`) bind
 * `task_id` to `taskId`, and protobuf JSON parsers (A2A 1.0 SDKs: protojson, json_format) accept
 * a field's proto name (`context_id`, `status_update`) beside its JSON name. A leading or trailing
 * underscore is kept (`_id` is no spelling of `id` to any of them). MCP routes keep
 * {@link memberFold}.
 */
export function a2aFold(key: string): string {
  return memberFold(key).replace(/(?<=[^_])_+(?=[^_])/g, '');
}
const norm = a2aFold;

/** What a request names: tasks that must be the caller's, tasks and contexts it may also create. */
export interface NamedIds {
  /** Tasks that must exist and be the caller's. */
  readonly tasks: string[];
  /** Tasks the caller may name new (A2A 0.2 `tasks/send`): the caller's or unknown. */
  readonly newTasks: string[];
  /** Contexts: the caller's or unknown (a client may start one with an id of its choosing). */
  readonly contexts: string[];
  /**
   * Ids that may name a task or not: the `id` beside a `taskId` in a 1.0 push notification config
   * call (`GetTaskPushNotificationConfig`: a config id, which a lenient agent might still read as a
   * task). They must not be another principal's task; never claimed.
   */
  readonly maybeTasks: string[];
}

export type RequestIds =
  | ({ readonly ok: true } & NamedIds)
  | { readonly ok: false; readonly reason: 'a2a_message_invalid' | 'a2a_task_list_refused' };

/** JSON-RPC methods that list tasks (A2A 1.0 `ListTasks`, and its slash spelling). */
const LIST_METHODS = new Set(['listtasks', 'tasks/list']);
/** A2A 0.2: the client names the task it sends to, new or not, in `params.id`. */
const SEND_02_METHODS = new Set(['tasks/send', 'tasks/sendsubscribe']);

/**
 * The ids a request body (parsed JSON) names, or a refusal: an id that is not a string (an upstream
 * may read `123` as `"123"`), longer than {@link MAX_A2A_ID}, more than {@link MAX_NAMED_IDS} of
 * them, `params` that are not an object (positional ones, an array), or a call listing tasks. A JSON-RPC
 * message (an object with a `method`, or a batch of them) is read by method; any other body (the
 * HTTP+JSON binding) for its `taskId`, `contextId` and `referenceTaskIds` alone.
 */
export function requestIds(body: unknown): RequestIds {
  const ids = { tasks: [] as string[], newTasks: [] as string[], contexts: [] as string[], maybeTasks: [] as string[] };
  const messages = Array.isArray(body) ? body : [body];
  for (const m of messages) {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) continue;
    let method: string | undefined;
    let params: unknown;
    let methods = 0;
    let paramses = 0;
    for (const [k, v] of Object.entries(m)) {
      const n = norm(k);
      if (n === 'method') {
        methods++;
        if (typeof v === 'string') method = v.trim().toLowerCase();
      } else if (n === 'params') {
        paramses++;
        params = v;
      }
    }
    // Two spellings of `method` or `params` (`method` and `Method`): a case-sensitive upstream
    // reads the exact one, a case-blind one the last; the gateway cannot know which it checked.
    if (methods > 1 || paramses > 1) return { ok: false, reason: 'a2a_message_invalid' };
    if (method === undefined) {
      if (!walk(m, ids)) return { ok: false, reason: 'a2a_message_invalid' };
      continue;
    }
    if (LIST_METHODS.has(method)) return { ok: false, reason: 'a2a_task_list_refused' };
    if (params === undefined) continue;
    // A2A's params are an object. Positional ones (an array) name their task where the gateway
    // does not look, and an upstream may still read them (a lenient binder, a method taking them).
    if (typeof params !== 'object' || params === null || Array.isArray(params)) return { ok: false, reason: 'a2a_message_invalid' };
    if (!walk(params, ids)) return { ok: false, reason: 'a2a_message_invalid' };
    const top = params as Record<string, unknown>;
    let hasTaskId = false;
    for (const k of Object.keys(top)) if (norm(k) === 'taskid') hasTaskId = true;
    for (const [k, v] of Object.entries(top)) {
      const n = norm(k);
      if (n === 'id') {
        if (v === null || v === undefined) continue;
        if (!validId(v)) return { ok: false, reason: 'a2a_message_invalid' };
        // A 1.0 push notification config call (`GetTaskPushNotificationConfig`) naming `taskId`
        // names its config by `id`: it must not be another's task. A 0.3 one
        // (`tasks/pushNotificationConfig/get`, `/list`, `/delete`) names the task by `id` (and an
        // agent ignores `taskId`): that task must be the caller's, as for tasks/get; an unknown one
        // (created around the gateway, expired) would hand over its config and webhook token.
        if (hasTaskId && method.includes('pushnotification') && !method.includes('/')) ids.maybeTasks.push(v);
        else (SEND_02_METHODS.has(method) ? ids.newTasks : ids.tasks).push(v);
      } else if ((n === 'name' || n === 'parent') && typeof v === 'string' && /^tasks\//i.test(v)) {
        // A resource name of the 1.0 drafts: `tasks/{id}` or `tasks/{id}/pushNotificationConfigs/{cid}`.
        const id = v.split('/')[1] ?? '';
        if (!validId(id)) return { ok: false, reason: 'a2a_message_invalid' };
        ids.tasks.push(id);
      }
    }
  }
  // Each id is a registry read and a claim (a store round trip each under `tessera serve`): one
  // request may not make thousands of them. A2A messages name a task, a context and a few references.
  if (new Set([...ids.tasks, ...ids.newTasks, ...ids.contexts, ...ids.maybeTasks]).size > MAX_NAMED_IDS)
    return { ok: false, reason: 'a2a_message_invalid' };
  return { ok: true, ...ids };
}

function validId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_A2A_ID;
}

/** The members {@link walk} reads, by their {@link a2aFold}ed names. */
const WALKED_MEMBERS = new Set(['taskid', 'contextid', 'sessionid', 'referencetaskids']);

/**
 * Collect `taskId`, `referenceTaskIds`, `contextId` and `sessionId` at any depth of `root`; false on
 * a bad one, or on one of them spelled twice in one object.
 */
function walk(root: unknown, ids: { tasks: string[]; contexts: string[] }): boolean {
  return everyObject(root, (entries) => {
    const seen = new Set<string>();
    const inner: unknown[] = [];
    for (const [k, e] of entries) {
      const n = norm(k);
      if (WALKED_MEMBERS.has(n)) {
        // Two spellings of one member (`taskId` and `task_id` or `TaskId`): upstreams disagree on
        // which one they read (pydantic the alias, Go's encoding/json the last, protojson neither).
        if (seen.has(n)) return false;
        seen.add(n);
      }
      if (n === 'taskid') {
        if (e === null) continue;
        if (!validId(e)) return false;
        ids.tasks.push(e);
      } else if (n === 'contextid' || n === 'sessionid') {
        if (e === null) continue;
        if (!validId(e)) return false;
        ids.contexts.push(e);
      } else if (n === 'referencetaskids') {
        if (e === null) continue;
        if (!Array.isArray(e)) return false;
        for (const r of e) {
          if (!validId(r)) return false;
          ids.tasks.push(r);
        }
      } else inner.push(e);
    }
    return inner;
  });
}

/**
 * Depth-first over every object in `root` (arrays entered, at any depth, without recursion): `visit`
 * gets an object's entries and returns the values to go on into, or `false` to stop the walk,
 * which then returns `false`; `true` once every object was visited.
 */
export function everyObject(root: unknown, visit: (entries: [string, unknown][]) => readonly unknown[] | false): boolean {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (const e of v) stack.push(e);
      continue;
    }
    const inner = visit(Object.entries(v));
    if (inner === false) return false;
    for (const e of inner) stack.push(e);
  }
  return true;
}

/**
 * Is this request path one of the HTTP+JSON binding's task resources (`/v1/tasks/…`, `/tasks`), or
 * a task method of the gRPC service (`/lf.a2a.v1.A2AService/CancelTask`, `GetTask`,
 * `SubscribeToTask`, `…TaskPushNotificationConfig`, `ListTasks`)? A connect-go or connect-es
 * server generated from `a2a.proto` serves those over HTTP/1.1 with a ProtoJSON body (the Connect
 * protocol) naming the task by `id` or `name: "tasks/{id}"`, where the gateway reads no task: the
 * method is in the path, not in the body. The service's other methods (`SendMessage`, the card)
 * name their tasks where the gateway reads them.
 */
export function isTaskPath(path: string): boolean {
  const segments = path.split('/').map(decodeSegment);
  return segments.some(
    (segment, i) => /^tasks(?:[:.;].*)?$/i.test(segment) || (/a2aservice$/i.test(segment) && /task/i.test(segments[i + 1] ?? '')),
  );
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
