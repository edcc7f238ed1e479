/**
 * A2A tasks and contexts bound to the principal that created them. An A2A upstream names its
 * tasks (`Task.id`) and contexts (`contextId`) in its answers, and callers name them again in
 * `tasks/get`, `tasks/cancel`, `tasks/resubscribe`, `tasks/pushNotificationConfig/*` and in a
 * `message/send` or `message/stream` continuing a task (`message.taskId`, `message.contextId`).
 * Upstreams often trust the gateway to have checked who may do that; this module is that check.
 *
 * Stateful, not signed ids (as MCP sessions are): the gateway records, when an answer names a task
 * or a context, that it belongs to the caller it was sent to (first one wins), and lets a request
 * naming a task through only for its owner. The upstream's ids and bytes pass unchanged, so push
 * notifications (sent by the upstream straight to the client, with the upstream's ids), ids a
 * client chooses (a new `contextId`, A2A 0.2's task id) and ids quoted in text keep working; and an
 * id the upstream shows a caller is not thereby that caller's (a signed id would be: anyone shown
 * it could present it). A task never recorded is refused; a context never recorded is new, and goes
 * to the first principal naming it: so every 2xx JSON or event-stream answer, and every answer to a
 * call whatever its label or status, is read for its ids or refused ({@link TaskForwardHandler}).
 *
 * Reading a request: every `taskId` and `referenceTaskIds` anywhere in it must be the caller's
 * tasks, every `contextId` (0.2: `sessionId`) the caller's context or a new one (then it becomes
 * the caller's), and so must the task a JSON-RPC `params.id` names (A2A 0.2's `tasks/send` may
 * name a new one; the `id` beside a push notification config call's `taskId`, a 1.0 config id or a
 * 0.3 task, must not be another's). Keys are compared without case, NULs, `ſ` for `s` and inner
 * underscores ({@link a2aFold}), as lenient upstream parsers read them (Go's encoding/json, the
 * Python SDK's pydantic models, protobuf JSON); a message spelling `method` or `params` twice, or
 * one of the id members twice in one object (`taskId` and `task_id`), is refused. Listing tasks
 * (1.0 `ListTasks`) is refused: its answer would list every caller's tasks.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Principal } from '../core/verify/principal.ts';
import { isJsonType } from './a2a.ts';
import { isEventStream } from './mcp/events.ts';
import { memberFold } from './mcp/message.ts';
import { ownerOf } from './mcp/sessions.ts';
import { type ForwardCallbacks, ForwardHandler, plainEncoding, rawHeader } from './proxy/forward.ts';

export type IdKind = 'task' | 'context';

/** A2A's JSON-RPC errors: `TaskNotFoundError` (what an agent answers for a task it does not have) and `UnsupportedOperationError`. */
export const RPC_TASK_NOT_FOUND = -32001;
export const RPC_UNSUPPORTED_OPERATION = -32004;

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

/** Who a task belongs to: a digest of {@link ownerOf} (the same principal as MCP sessions). */
export function taskOwner(p: Principal): string {
  return createHash('sha256')
    .update(JSON.stringify(ownerOf(p)), 'utf8')
    .digest('base64url');
}

/** What a claim answers: the id is (now) the claimant's, another's, or cannot be recorded. */
export type Claim = 'owned' | 'foreign' | 'full';

/**
 * Where the gateway keeps who owns each task and context: in this process ({@link memoryTaskRegistry})
 * or in a store shared by every instance and kept across restarts ({@link StoreTaskOwners}). A
 * registry that cannot answer rejects, and the gateway refuses (fail closed).
 */
export interface TaskRegistry {
  /** The owner of `id`, if it is recorded and not expired at `now` (epoch ms). */
  ownerOf(route: string, kind: IdKind, id: string, now: number): Promise<string | undefined>;
  /** Record `id` as `owner`'s for `ttlMs` from `now` unless it is another's (see {@link TaskOwners.claim}). */
  claim(route: string, kind: IdKind, id: string, owner: string, now: number, ttlMs: number): Promise<Claim>;
}

/** {@link TaskOwners} (this process only) as a {@link TaskRegistry}. */
export function memoryTaskRegistry(owners: TaskOwners = new TaskOwners()): TaskRegistry {
  return {
    ownerOf: async (route, kind, id, now) => owners.ownerOf(route, kind, id, now),
    claim: async (route, kind, id, owner, now, ttlMs) => owners.claim(route, kind, id, owner, now, ttlMs),
  };
}

/** What {@link StoreTaskOwners} needs of the store (`Store.claimA2aTask`, `Store.a2aTaskOwner`; times in epoch seconds). */
export interface TaskStore {
  claimA2aTask(
    route: string,
    kind: IdKind,
    id: string,
    owner: string,
    expiresAt: number,
    now: number,
  ): Promise<{ readonly owner: string; readonly expiresAt: number }>;
  a2aTaskOwner(
    route: string,
    kind: IdKind,
    id: string,
    now: number,
  ): Promise<{ readonly owner: string; readonly expiresAt: number } | undefined>;
}

/**
 * Task ownership kept in the store, so every gateway instance on it (`tessera serve` on
 * PostgreSQL behind one load balancer) and a restarted one agree on it; the store's claim is atomic,
 * so of two instances recording one id for two principals, one wins and the other is told.
 *
 * A cache in this process holds the records the store answered, each until the expiry the store
 * gave it: a record's owner never changes before it expires (a claim by another owner leaves it,
 * and only the owner's own claims extend it), so a cached owner is never stale. An id the store
 * does not know is never cached: another instance may record it the next moment. The owner naming
 * its own id again extends its record in the store only once it would end more than
 * {@link RENEW_SLACK_MS} (at most a tenth of the ttl) before `now + ttl`: a record stays at
 * least that close to the sliding ttl, and a stream naming one task in every event costs one write.
 */
export class StoreTaskOwners implements TaskRegistry {
  readonly #store: TaskStore;
  readonly #maxCached: number;
  /** key → owner and the record's expiry (epoch ms); Map order is insertion order (oldest first). */
  readonly #cache = new Map<string, { owner: string; until: number }>();

  constructor(store: TaskStore, options: { maxCached?: number } = {}) {
    this.#store = store;
    this.#maxCached = options.maxCached ?? 100_000;
  }

  async ownerOf(route: string, kind: IdKind, id: string, now: number): Promise<string | undefined> {
    const key = keyOf(route, kind, id);
    const cached = this.#cached(key, now);
    if (cached !== undefined) return cached.owner;
    const r = await this.#store.a2aTaskOwner(route, kind, id, Math.floor(now / 1000));
    if (r === undefined) return undefined;
    this.#remember(key, r.owner, r.expiresAt * 1000);
    return r.owner;
  }

  async claim(route: string, kind: IdKind, id: string, owner: string, now: number, ttlMs: number): Promise<Claim> {
    const key = keyOf(route, kind, id);
    const cached = this.#cached(key, now);
    if (cached !== undefined) {
      if (cached.owner !== owner) return 'foreign';
      if (cached.until >= now + ttlMs - Math.min(RENEW_SLACK_MS, ttlMs / 10)) return 'owned';
    }
    const r = await this.#store.claimA2aTask(route, kind, id, owner, Math.floor((now + ttlMs) / 1000), Math.floor(now / 1000));
    this.#remember(key, r.owner, r.expiresAt * 1000);
    return r.owner === owner ? 'owned' : 'foreign';
  }

  #cached(key: string, now: number): { owner: string; until: number } | undefined {
    const e = this.#cache.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now) {
      this.#cache.delete(key);
      return undefined;
    }
    return e;
  }

  #remember(key: string, owner: string, until: number): void {
    this.#cache.delete(key);
    this.#cache.set(key, { owner, until });
    // Forgetting a record costs a store read, nothing more: the oldest go first.
    while (this.#cache.size > this.#maxCached) this.#cache.delete(this.#cache.keys().next().value as string);
  }
}

/** How far before `now + ttl` a record the owner names again may end before the store is told (see {@link StoreTaskOwners}). */
export const RENEW_SLACK_MS = 60_000;

/**
 * Which principal each task and context of a route belongs to, kept in this process: several
 * gateway instances do not share it (a task created through one is unknown to the others), and a
 * restart forgets it. The gateway's registry when it has no store (`tessera gateway`).
 */
export class TaskOwners {
  readonly #maxEntries: number;
  readonly #maxPerOwner: number;
  /** key → owner and expiry; Map order is insertion order, refreshed on use (oldest first). */
  readonly #entries = new Map<string, { owner: string; until: number }>();
  readonly #perOwner = new Map<string, number>();

  constructor(options: { maxEntries?: number; maxPerOwner?: number } = {}) {
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#maxPerOwner = options.maxPerOwner ?? 10_000;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The owner of `id`, if it is recorded and not expired at `now`. */
  ownerOf(route: string, kind: IdKind, id: string, now: number): string | undefined {
    const key = keyOf(route, kind, id);
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now) {
      this.#delete(key, e.owner);
      return undefined;
    }
    return e.owner;
  }

  /**
   * Record `id` as `owner`'s unless it is another's: `'owned'` when it is (now) `owner`'s (for
   * `ttlMs` from `now`, on each use again), `'foreign'` when another owns it, `'full'` when it cannot be recorded
   * (the registry or `owner`'s share of it is full: nothing is evicted that is still live, since
   * an evicted context could then be claimed by anyone).
   */
  claim(route: string, kind: IdKind, id: string, owner: string, now: number, ttlMs: number): 'owned' | 'foreign' | 'full' {
    const key = keyOf(route, kind, id);
    const current = this.ownerOf(route, kind, id, now);
    if (current !== undefined && current !== owner) return 'foreign';
    if (current === undefined) {
      if (this.#entries.size >= this.#maxEntries) this.#sweep(now);
      if (this.#entries.size >= this.#maxEntries || (this.#perOwner.get(owner) ?? 0) >= this.#maxPerOwner) return 'full';
      this.#perOwner.set(owner, (this.#perOwner.get(owner) ?? 0) + 1);
    } else this.#entries.delete(key);
    this.#entries.set(key, { owner, until: now + ttlMs });
    return 'owned';
  }

  #delete(key: string, owner: string): void {
    this.#entries.delete(key);
    const n = (this.#perOwner.get(owner) ?? 1) - 1;
    if (n <= 0) this.#perOwner.delete(owner);
    else this.#perOwner.set(owner, n);
  }

  /** Drop expired entries (oldest first, so it stops at the first live one). */
  #sweep(now: number): void {
    for (const [key, e] of this.#entries) {
      if (e.until > now) break;
      this.#delete(key, e.owner);
    }
  }
}

function keyOf(route: string, kind: IdKind, id: string): string {
  return JSON.stringify([route, kind, id]);
}

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
   * Ids that may name a task or not, depending on the upstream's A2A version: the `id` beside a
   * `taskId` in a push notification config call (a config id in 1.0, the task in 0.3). They must
   * not be another principal's task; never claimed.
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
        // A push notification config call naming `taskId` names its config by `id` (A2A 1.0); an
        // A2A 0.3 agent reads `id` as the task (and ignores `taskId`): it must not be another's.
        if (hasTaskId && method.includes('pushnotification')) ids.maybeTasks.push(v);
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
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (const e of v) stack.push(e);
      continue;
    }
    const seen = new Set<string>();
    for (const [k, e] of Object.entries(v)) {
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
      } else stack.push(e);
    }
  }
  return true;
}

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

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Adds the ids of one response to `out`; false when it is ambiguous. */
function answerIdsOf(value: unknown, out: { tasks: string[]; contexts: string[] }): boolean {
  if (!isRecord(value)) return true;
  const envelope = membersOf(value, ENVELOPE_MEMBERS);
  if (envelope === undefined) return false;
  // A JSON-RPC response carries the answer in `result`, or an error whose `data` a client may show
  // its user (read alike: fail closed); an HTTP+JSON body is the answer.
  if (envelope.size === 0) return subjectIds(value, out);
  if (!subjectIds(envelope.get('result'), out)) return false;
  const error = envelope.get('error');
  if (!isRecord(error)) return true;
  const data = membersOf(error, ERROR_MEMBERS);
  return data !== undefined && subjectIds(data.get('data'), out);
}

/** Adds the ids of a result (or an error's data) and of its 1.0 wrappers to `out`; false when ambiguous. */
function subjectIds(result: unknown, out: { tasks: string[]; contexts: string[] }): boolean {
  if (!isRecord(result)) return true;
  const wrappers = membersOf(result, WRAPPER_MEMBERS);
  if (wrappers === undefined) return false;
  for (const c of [result, ...wrappers.values()]) {
    if (!isRecord(c)) continue;
    const m = membersOf(c, SUBJECT_MEMBERS);
    if (m === undefined) return false;
    const id = m.get('id');
    if (typeof id === 'string' && (isRecord(m.get('status')) || m.get('kind') === 'task')) out.tasks.push(id);
    const taskId = m.get('taskid');
    if (typeof taskId === 'string') out.tasks.push(taskId);
    for (const k of ['contextid', 'sessionid']) {
      const context = m.get(k);
      if (typeof context === 'string') out.contexts.push(context);
    }
  }
  return true;
}

/** Is this request path one of the HTTP+JSON binding's task resources (`/v1/tasks/…`, `/tasks`)? */
export function isTaskPath(path: string): boolean {
  return path.split('/').some((segment) => /^tasks(?:[:.;].*)?$/i.test(decodeSegment(segment)));
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The default of `a2a.max_answer_size`: the largest answer (a JSON body, one SSE event) read for its ids. */
export const DEFAULT_MAX_ANSWER = 4 * 1024 * 1024;

/**
 * The `data` of each event of an SSE stream (WHATWG HTML §9.2.6: lines end with CR, LF or CRLF;
 * `data: v` lines joined with LF; an empty line dispatches), fed chunk by chunk. A line or an
 * event's data passing `limit` bytes sets {@link overflow} in the {@link push} of the chunk that
 * passes it: its ids cannot be read, so the caller must cut the stream before that chunk (the event
 * has not ended yet: no client has dispatched it).
 */
export class SseDataReader {
  /** A line or an event's data passed the limit: nothing more is read. */
  overflow = false;
  readonly #limit: number;
  #line: Buffer[] = [];
  #lineBytes = 0;
  #data: string[] = [];
  #dataBytes = 0;
  /** The previous chunk ended with a CR: a LF opening this one ends no second line. */
  #skipLf = false;

  constructor(limit: number = DEFAULT_MAX_ANSWER) {
    this.#limit = limit;
  }

  /** The data of every event completed in `chunk`. */
  push(chunk: Buffer): string[] {
    const events: string[] = [];
    if (this.overflow) return events;
    let from = 0;
    for (let i = 0; i < chunk.length && !this.overflow; i++) {
      const b = chunk[i] as number;
      if (b === 0x0a && this.#skipLf) {
        // The LF of a CRLF whose CR ended the previous chunk.
        this.#skipLf = false;
        from = i + 1;
        continue;
      }
      this.#skipLf = false;
      if (b !== 0x0a && b !== 0x0d) continue;
      this.#add(chunk.subarray(from, i));
      const event = this.#endLine();
      if (event !== undefined) events.push(event);
      if (b === 0x0d) {
        if (i + 1 >= chunk.length) this.#skipLf = true;
        else if (chunk[i + 1] === 0x0a) i++;
      }
      from = i + 1;
    }
    if (!this.overflow) this.#add(chunk.subarray(from));
    return events;
  }

  #add(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.#lineBytes += bytes.length;
    if (this.#lineBytes > this.#limit) {
      this.overflow = true;
      this.#line = [];
      return;
    }
    this.#line.push(bytes);
  }

  #endLine(): string | undefined {
    const line = Buffer.concat(this.#line)
      .toString('utf8')
      .replace(/^\uFEFF/, '');
    this.#line = [];
    this.#lineBytes = 0;
    if (line === '') {
      const data = this.#data;
      this.#data = [];
      this.#dataBytes = 0;
      return data.length === 0 ? undefined : data.join('\n');
    }
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    if (name !== 'data') return undefined;
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    this.#dataBytes += Buffer.byteLength(value) + 1;
    if (this.#dataBytes > this.#limit) this.overflow = true;
    else this.#data.push(value);
    return undefined;
  }
}

/** Why the gateway relays nothing more of an upstream answer, by the reason code it is refused with. */
const ANSWER_REFUSALS = {
  /** The gateway could not record the tasks the answer names (its store did not answer). */
  a2a_task_registry_unavailable: 'the tasks an upstream answer names could not be recorded',
  /**
   * The upstream compressed a 2xx answer though asked for identity (`Accept-Encoding: identity`):
   * the gateway cannot read the tasks it names.
   */
  a2a_upstream_answer_compressed: 'the upstream answer is compressed and cannot be read for its tasks',
  /** A JSON answer or an SSE event larger than `a2a.max_answer_size`: not read for its tasks. */
  a2a_upstream_answer_too_large: 'the upstream answer is larger than the gateway reads for its tasks',
  /**
   * A JSON answer or an SSE event spelling a member the gateway reads twice (`contextId` and
   * `ContextId`): clients disagree on which one they read ({@link answerIds}).
   */
  a2a_upstream_answer_ambiguous: 'the upstream answer names a member twice in different spellings',
  /** The upstream answered a caller with a task or context another principal owns. */
  a2a_upstream_task_foreign: 'the upstream answered with a task of another principal',
} as const;

/** An upstream answer refused for the reason `code` ({@link ANSWER_REFUSALS}): nothing more of it is relayed. */
export class AnswerRefused extends Error {
  override readonly name = 'AnswerRefused';
  readonly code: keyof typeof ANSWER_REFUSALS;
  constructor(code: keyof typeof ANSWER_REFUSALS) {
    super(ANSWER_REFUSALS[code]);
    this.code = code;
  }
}

/**
 * Records an answer's ids for the caller, resolving once they are recorded (in the store, when the
 * registry is one): `foreign` when one is another principal's, `unavailable` when the registry
 * could not record them. Never rejects.
 */
export type RecordIds = (ids: { tasks: readonly string[]; contexts: readonly string[] }) => Promise<'recorded' | 'foreign' | 'unavailable'>;

function recordError(result: 'foreign' | 'unavailable'): Error {
  return new AnswerRefused(result === 'foreign' ? 'a2a_upstream_task_foreign' : 'a2a_task_registry_unavailable');
}

const nothingNamed = (ids: { tasks: readonly string[]; contexts: readonly string[] }) =>
  ids.tasks.length === 0 && ids.contexts.length === 0;

function parsed(text: string): unknown {
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

/**
 * Forwards an A2A answer, recording the tasks and contexts it names for the caller
 * ({@link answerIds}) before the caller can read them: a registry in the store has committed them
 * (so another instance the caller's next request reaches knows them) before a byte naming them is
 * written. An event stream passes chunk by chunk as it arrives; a chunk completing events that
 * name ids holds the upstream (back-pressure) until they are recorded, then is written. A JSON
 * answer (2xx) is held until complete, then recorded and relayed. An answer naming another
 * principal's task or context fails the exchange (`a2a_upstream_task_foreign`), and so does one
 * whose ids cannot be recorded (`a2a_task_registry_unavailable`), and one spelling a member it is
 * read for twice (`a2a_upstream_answer_ambiguous`, {@link answerIds}): 502 / 503 before its head,
 * the stream cut before the chunk completing that event after it.
 *
 * Fail closed: an id the gateway does not record is new to it (a context then goes to whoever names
 * it first), so a 2xx answer it cannot read is not relayed. A compressed one (the upstream was asked
 * for identity) fails the exchange before its head (`a2a_upstream_answer_compressed`, 502); a JSON
 * answer past `limit` bytes (`a2a.max_answer_size`) before its head (`a2a_upstream_answer_too_large`,
 * 502, nothing relayed); an event stream with a line or an event's data past `limit` is cut before
 * the chunk passing it is written, so before that event ends (no client has dispatched it).
 *
 * An answer to a call (`readAll`: any request but GET and HEAD, a JSON-RPC POST above all) is read
 * as JSON whatever its `Content-Type` and status: A2A client SDKs parse a JSON-RPC answer's body as
 * JSON whatever its label, and may show a non-2xx one's. So every answer to it but a 2xx event
 * stream is held and read like a JSON one (compressed or past `limit`: refused alike); one that does
 * not parse as JSON names nothing a client could read, and is relayed as is.
 */
export class TaskForwardHandler extends ForwardHandler {
  readonly #record: RecordIds;
  readonly #limit: number;
  readonly #readAll: boolean;
  readonly #ownCredential: boolean;
  #sse: SseDataReader | undefined;
  #head: { status: number; raw: Buffer[]; resume: () => void } | undefined;
  #chunks: Buffer[] = [];
  #total = 0;
  /** Resumes the upstream paused while a chunk's ids are recorded. */
  #resume: (() => void) | undefined;
  /** A chunk waiting for its ids to be recorded (the upstream is paused meanwhile). */
  #pending: Promise<void> | undefined;
  /** The upstream's answer is complete and waits for its ids to be recorded. */
  #completing = false;
  /** Failed or aborted: nothing more is written. */
  #over = false;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    record: RecordIds,
    ownCredential = false,
    limit: number = DEFAULT_MAX_ANSWER,
    readAll = false,
  ) {
    super(res, cb, extra, ownCredential);
    this.#record = record;
    this.#limit = limit;
    this.#readAll = readAll;
    this.#ownCredential = ownCredential;
  }

  override abort(reason: Error): void {
    // The upstream exchange is over while its answer waits to be recorded: undici has nothing left
    // to abort, so the caller's answer is failed here (a revocation, a shutdown, the caller gone).
    if (this.#completing) this.onError(reason);
    else super.abort(reason);
  }

  override onError(error: Error): void {
    this.#over = true;
    this.#completing = false;
    super.onError(error);
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    const ok = status >= 200 && status < 300;
    // A 401 to the gateway's own credential reaches no caller (502); 1xx are informational.
    if (status < 200 || (!ok && (!this.#readAll || (status === 401 && this.#ownCredential)))) return super.onHeaders(status, raw, resume);
    // Asked for identity: a compressed answer (or one whose encoding is said twice) cannot be read
    // for its ids, and a client inflates it and reads them. Refused whole.
    if (!plainEncoding(rawHeader(raw, 'content-encoding'))) {
      this.abort(new AnswerRefused('a2a_upstream_answer_compressed'));
      return false;
    }
    const type = rawHeader(raw, 'content-type') ?? undefined;
    if (ok && isEventStream(type)) {
      this.#sse = new SseDataReader(this.#limit);
      this.#resume = resume;
      return super.onHeaders(status, raw, resume);
    }
    // Held and read as JSON: a JSON answer, or any answer to a call (clients parse it whatever its label).
    if (!this.#readAll && !isJsonType(type)) return super.onHeaders(status, raw, resume);
    const length = rawHeader(raw, 'content-length');
    if (length !== undefined && length !== null && Number(length) > this.#limit) {
      this.abort(new AnswerRefused('a2a_upstream_answer_too_large'));
      return false;
    }
    this.#head = { status, raw, resume };
    return true;
  }

  override onData(chunk: Buffer): boolean {
    if (this.#over) return false;
    if (this.#head !== undefined) {
      this.#total += chunk.length;
      if (this.#total > this.#limit) {
        // Too large to read for its ids: nothing of it is relayed (502).
        this.#head = undefined;
        this.#chunks = [];
        this.abort(new AnswerRefused('a2a_upstream_answer_too_large'));
        return false;
      }
      this.#chunks.push(chunk);
      return true;
    }
    if (this.#sse !== undefined) {
      const named = { tasks: [] as string[], contexts: [] as string[] };
      const events = this.#sse.push(chunk);
      if (this.#sse.overflow) {
        // An event too large to read: cut before this chunk (the event's end is not in an earlier one).
        this.abort(new AnswerRefused('a2a_upstream_answer_too_large'));
        return false;
      }
      for (const data of events) {
        const ids = answerIds(parsed(data));
        if (ids === 'ambiguous') {
          // Clients disagree on the ids it names: cut before this chunk (no client has dispatched the event).
          this.abort(new AnswerRefused('a2a_upstream_answer_ambiguous'));
          return false;
        }
        named.tasks.push(...ids.tasks);
        named.contexts.push(...ids.contexts);
      }
      if (!nothingNamed(named)) {
        // Written once recorded; the upstream waits (undici reads no further until resumed).
        this.#pending = this.#record(named).then((result) => {
          this.#pending = undefined;
          if (this.#over) return;
          if (result !== 'recorded') {
            this.abort(recordError(result));
            return;
          }
          if (super.onData(chunk)) this.#resume?.();
          // Otherwise the caller is slow: resumed when it drains (or aborted when it went away).
        });
        return false;
      }
    }
    return super.onData(chunk);
  }

  override onComplete(): void {
    if (this.#over) return;
    const pending = this.#pending;
    if (pending !== undefined) {
      // Not expected (the upstream was paused), but the end never overtakes a chunk still to be written.
      this.#completing = true;
      void pending.then(() => {
        if (this.#completing) {
          this.#completing = false;
          super.onComplete();
        }
      });
      return;
    }
    const head = this.#head;
    if (head === undefined) {
      super.onComplete();
      return;
    }
    const ids = answerIds(parsed(answerText(Buffer.concat(this.#chunks, this.#total))));
    if (ids === 'ambiguous') {
      this.#head = undefined;
      this.#chunks = [];
      // The exchange is over upstream: fail it here (502, nothing relayed).
      this.onError(new AnswerRefused('a2a_upstream_answer_ambiguous'));
      return;
    }
    if (nothingNamed(ids)) {
      if (this.#release() !== 'refused') super.onComplete();
      return;
    }
    this.#completing = true;
    void this.#record(ids).then((result) => {
      if (!this.#completing) return; // failed meanwhile (aborted)
      this.#completing = false;
      if (result !== 'recorded') {
        this.#head = undefined;
        // The exchange is over upstream: fail it here (nothing relayed).
        this.onError(recordError(result));
        return;
      }
      if (this.#release() !== 'refused') super.onComplete();
    });
  }

  /** Send the held head and chunks: `refused` when the head could not go (the caller is gone), `paused` on back-pressure. */
  #release(): 'flowing' | 'paused' | 'refused' {
    const head = this.#head as { status: number; raw: Buffer[]; resume: () => void };
    this.#head = undefined;
    const chunks = this.#chunks;
    this.#chunks = [];
    if (!super.onHeaders(head.status, head.raw, head.resume)) return 'refused';
    if (chunks.length === 0) return 'flowing';
    // One write: each write the caller cannot take at once would add a listener waiting for it to drain.
    return super.onData(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)) ? 'flowing' : 'paused';
  }
}
