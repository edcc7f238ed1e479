/**
 * Reading one MCP JSON-RPC request body (Streamable HTTP POST) for the decision: its JSON-RPC
 * method and which tool a `tools/call` names. Pure: bytes in, the method and tool name (each `null`
 * when the message has none) or a refusal out. The body itself is forwarded unchanged; nothing here rewrites it.
 *
 * @module
 */
import type { ErrorCode } from '../../core/errors.ts';

/** JSON-RPC 2.0 error codes (§5.1). */
export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
/** Implementation-defined server errors (-32000 to -32099), as the MCP SDK uses them. */
export const RPC_SERVER_ERROR = -32000;
export const RPC_SESSION_NOT_FOUND = -32001;

export type McpMessage =
  | {
      readonly ok: true;
      /** `params.name` of a `tools/call`; `null` for every other message (requests, notifications, responses). */
      readonly tool: string | null;
      /** The JSON-RPC `method` (requests and notifications); `null` for a response (no method). */
      readonly method: string | null;
      /** The request's `id` (a string or a finite number), `null` without one (a notification) or with another type. */
      readonly id: string | number | null;
      /** `params.taskId` when it is a string: the task a `tasks/get`, `tasks/result` or `tasks/cancel` names (MCP 2025-11-25). */
      readonly taskId?: string;
      /** `params.task` is present: the request asks to run as a task (a task-augmented request, MCP 2025-11-25). */
      readonly task?: true;
      /**
       * The task a request or notification says it belongs to (`params._meta` {@link RELATED_TASK}
       * `.taskId`, MCP 2025-11-25): an upstream runs it in that task's context (the MCP SDK queues
       * its answer to that task's messages, and may set the task `input_required`).
       */
      readonly relatedTask?: string;
    }
  | {
      readonly ok: false;
      readonly code: Extract<ErrorCode, 'mcp_message_invalid' | 'mcp_batch_refused' | 'mcp_tool_name_invalid'>;
      /** The JSON-RPC error code for the answer. */
      readonly rpc: number;
      /** The request's `id` when it was readable (echoed in the error response), else `null`. */
      readonly id: string | number | null;
    };

// Fatal: a body that is not UTF-8 is refused rather than read with replacement characters the
// upstream's parser may not agree with.
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * True when an object in `text` (valid JSON) repeats a key. JSON.parse keeps the last of two
 * `"name"`s and some parsers the first: the gateway would authorize one tool and the upstream run
 * another. Such a message is refused rather than read one way.
 */
export function hasDuplicateKeys(text: string): boolean {
  // One entry per open container: the keys seen in an object, `null` for an array.
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      for (let d = text.charCodeAt(j); d !== 0x22; d = text.charCodeAt(j)) {
        if (d === 0x5c) {
          escaped = true;
          j += 2;
        } else j++;
      }
      const keys = stack[stack.length - 1];
      if (expectKey && keys) {
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        if (keys.has(key)) return true;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) {
      stack.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) {
      stack.push(null);
      expectKey = false;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c) expectKey = stack[stack.length - 1] != null;
  }
  return false;
}

/**
 * A tool name or JSON-RPC method the gateway decides on: 1 to 128 visible ASCII characters (MCP
 * 2025-11-25 asks tool names to be 1-128 characters of letters, digits, `_`, `-` and `.`; other
 * visible ASCII such as `/` and `:` is in use and passes; every MCP method is one). Anything else is
 * refused: the policy compares names exactly, and an upstream that stops at a NUL, trims
 * whitespace or folds Unicode (NFKC, confusables) would run another tool or method than the one
 * decided on (`resources/read\u0000` past an exact `rpc: resources/read` rule to a broader one); a
 * control character would also forge lines where the audited name is printed (`tessera trace`),
 * and the length bounds what each audit event carries.
 */
const NAME = /^[\x21-\x7e]{1,128}$/;

/** Is `name` a tool name or method the gateway decides on ({@link NAME})? */
export function isDecidableName(name: string): boolean {
  return NAME.test(name);
}

/** The members of a JSON-RPC message (§4, §5), and the member of `params` the gateway decides on. */
export const MESSAGE_MEMBERS: readonly string[] = ['jsonrpc', 'id', 'method', 'params', 'result', 'error'];
const PARAMS_MEMBERS: readonly string[] = ['name', 'taskId', 'task', '_meta'];

/** The `_meta` key naming the task a message belongs to (MCP 2025-11-25). */
export const RELATED_TASK = 'io.modelcontextprotocol/related-task';
const RELATED_TASK_MEMBERS: readonly string[] = ['taskId'];

/**
 * True when `object` has a key that is not one of `members` but that some upstream parser reads as
 * one: Go's encoding/json matches keys without case and folds `ſ` (U+017F) to `s` and `K` (U+212A)
 * to `k`, the last match winning (the Go MCP SDK before 1.3.1, CVE-2026-27896; mcp-go), and
 * segmentio/encoding matched a key with NULs appended (go-sdk up to 1.4.0, GHSA-q382-vc8q-7jhj).
 * `{"method":"ping","Method":"tools/call"}` or a lone `"Method"` would otherwise be decided as a
 * ping or a response and run as a tool call.
 */
export function hasMemberLookalike(object: Record<string, unknown>, members: readonly string[]): boolean {
  for (const key of Object.keys(object)) {
    if (members.includes(key)) continue;
    // Folded on both sides: `TaskId` and `taskid` are read as `taskId`.
    const folded = memberFold(key);
    if (members.some((m) => memberFold(m) === folded)) return true;
  }
  return false;
}

/**
 * `key` as the laxest upstream parser reads a member name ({@link hasMemberLookalike}): without
 * NULs, `ſ` as `s`, lower case (which folds `K` to `k`).
 */
export function memberFold(key: string): string {
  return key.replaceAll('\u0000', '').replaceAll('\u017f', 's').toLowerCase();
}

/** A JSON object (not an array, not null). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function idOf(message: Record<string, unknown>): string | number | null {
  const id = message.id;
  return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)) ? id : null;
}

/**
 * Read an MCP request body.
 *
 * A message repeating a key in any object is refused ({@link hasDuplicateKeys}), and so is one with a
 * key an upstream may read as a JSON-RPC member or `params.name` ({@link hasMemberLookalike}). A JSON-RPC batch
 * (an array) is refused: MCP 2025-06-18 removed batching, and authorizing a
 * batch would make one request carry several decisions. A message must be an object with
 * `"jsonrpc": "2.0"`; a `method`, when present, must be a string of 1 to 128 visible ASCII characters
 * ({@link NAME}); a `tools/call` must name its tool
 * with a string `params.name` of 1 to 128 visible ASCII characters ({@link NAME}).
 *
 * @example
 * ```ts
 * readMessage(Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'));
 * // { ok: true, tool: 'search', method: 'tools/call', id: 1 }
 * ```
 */
export function readMessage(body: Uint8Array): McpMessage {
  let value: unknown;
  let text: string;
  try {
    text = utf8.decode(body);
    value = JSON.parse(text);
  } catch {
    return { ok: false, code: 'mcp_message_invalid', rpc: RPC_PARSE_ERROR, id: null };
  }
  if (hasDuplicateKeys(text)) return { ok: false, code: 'mcp_message_invalid', rpc: RPC_INVALID_REQUEST, id: null };
  if (Array.isArray(value)) return { ok: false, code: 'mcp_batch_refused', rpc: RPC_INVALID_REQUEST, id: null };
  if (typeof value !== 'object' || value === null) return { ok: false, code: 'mcp_message_invalid', rpc: RPC_INVALID_REQUEST, id: null };
  const message = value as Record<string, unknown>;
  const id = idOf(message);
  const params = message.params;
  const paramsObject =
    typeof params === 'object' && params !== null && !Array.isArray(params) ? (params as Record<string, unknown>) : undefined;
  if (hasMemberLookalike(message, MESSAGE_MEMBERS) || (paramsObject !== undefined && hasMemberLookalike(paramsObject, PARAMS_MEMBERS)))
    return { ok: false, code: 'mcp_message_invalid', rpc: RPC_INVALID_REQUEST, id };
  if (message.jsonrpc !== '2.0') return { ok: false, code: 'mcp_message_invalid', rpc: RPC_INVALID_REQUEST, id };
  const method = message.method;
  if (method === undefined) return { ok: true, tool: null, method: null, id }; // a response to a server request
  if (typeof method !== 'string' || !NAME.test(method)) return { ok: false, code: 'mcp_message_invalid', rpc: RPC_INVALID_REQUEST, id };
  // Only when there: a message without them reads as it did before tasks.
  const taskId = paramsObject?.taskId;
  const task = paramsObject?.task;
  const meta = paramsObject?._meta;
  const related = isObject(meta) ? meta[RELATED_TASK] : undefined;
  // A related task the gateway cannot read as one task id is refused: an upstream may read it anyway.
  if (
    related !== undefined &&
    (!isObject(related) || typeof related.taskId !== 'string' || hasMemberLookalike(related, RELATED_TASK_MEMBERS))
  )
    return { ok: false, code: 'mcp_message_invalid', rpc: RPC_INVALID_PARAMS, id };
  const tasks = {
    ...(typeof taskId === 'string' ? { taskId } : {}),
    ...(related !== undefined ? { relatedTask: related.taskId as string } : {}),
    // Any value: an upstream may test it for truth (the MCP SDK's McpServer does), not for an object.
    ...(task !== undefined ? { task: true as const } : {}),
  };
  if (method !== 'tools/call') return { ok: true, tool: null, method, id, ...tasks };
  const name = paramsObject?.name;
  if (typeof name !== 'string' || !NAME.test(name)) return { ok: false, code: 'mcp_tool_name_invalid', rpc: RPC_INVALID_PARAMS, id };
  return { ok: true, tool: name, method, id, ...tasks };
}

/** A JSON-RPC error response body. `message` is a fixed description, never request data. */
export function rpcErrorBody(code: number, message: string, id: string | number | null): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } });
}

/**
 * True when a Content-Type header value is `application/json`, with parameters, and any `charset`
 * among them UTF-8: the body is read as UTF-8 here, and an upstream honouring another charset would
 * read other text from the same bytes (body-parser decodes `charset=utf-7`, where `+AGE-dmin.reset`
 * is `admin.reset`). JSON has no other charset (RFC 8259 §8.1); a value that is not plainly
 * `utf-8` is refused, not interpreted.
 */
export function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  if ((value.split(';')[0] as string).trim().toLowerCase() !== 'application/json') return false;
  return hasUtf8Charset(value);
}

/**
 * True when a Content-Type header value (absent included) names no `charset`, or only UTF-8: the
 * gateway reads a body as UTF-8, and an upstream honouring another charset (body-parser decodes
 * any `charset=utf-*`, UTF-7 included) would read other text from the same bytes.
 */
export function hasUtf8Charset(value: string | undefined): boolean {
  if (value === undefined) return true;
  const parts = value.split(';');
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i] as string;
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    let charset = part
      .slice(eq + 1)
      .trim()
      .toLowerCase();
    if (charset.length >= 2 && charset.startsWith('"') && charset.endsWith('"')) charset = charset.slice(1, -1);
    if (charset !== 'utf-8' && charset !== 'utf8') return false;
  }
  return true;
}

/**
 * True when a Content-Encoding header value names no encoding (absent, empty or `identity`). The
 * gateway decides on the bytes as they came; an upstream decompressing them (body-parser inflates
 * gzip, deflate and br) would run a message the gateway never read, so any other value is refused.
 */
export function isIdentityEncoding(value: string | undefined): boolean {
  if (value === undefined) return true;
  const v = value.trim().toLowerCase();
  return v === '' || v === 'identity';
}
