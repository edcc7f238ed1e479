/**
 * HTTP forwarding over an undici pool, streaming both ways: the request body is handed to undici
 * as it arrives, response chunks are written to the caller as they are received (SSE and chunked
 * responses are never buffered), with back-pressure in both directions.
 *
 * undici's dispatch handler is used directly (no intermediate Readable): it is the cheapest way
 * through undici and gives raw response headers that are filtered once.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { ErrorCode } from '../../core/errors.ts';
import { cutBySendTimeout } from '../../server/send-timeout.ts';
import { callerResponseHeaders } from '../http/headers.ts';

/**
 * The value of header `name` (lower case) in an upstream's raw response head: `undefined` when it
 * is absent, `null` when it is sent more than once (ambiguous: read as neither value).
 */
export function rawHeader(raw: readonly Buffer[], name: string): string | null | undefined {
  let value: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as Buffer;
    if (n.length !== name.length || n.toString('latin1').toLowerCase() !== name) continue;
    if (value !== undefined) return null;
    value = (raw[i + 1] as Buffer).toString('latin1');
  }
  return value;
}

/**
 * Is this Content-Encoding (a {@link rawHeader} value) none: absent, empty or `identity`? A header
 * sent twice (`null`) is not.
 */
export function plainEncoding(encoding: string | null | undefined): boolean {
  return encoding === undefined || (encoding !== null && (encoding.trim() === '' || encoding.trim().toLowerCase() === 'identity'));
}

/** Thrown into the upload when the request body passes the route's limit. */
export class BodyTooLarge extends Error {
  override readonly name = 'BodyTooLarge';
}

/**
 * Why `res`'s connection closed under it: `send_timeout` when the listener cut it (its client took
 * none of its pending output for `limits.send_timeout`), else `client_closed`.
 */
export function callerClosed(res: ServerResponse): 'send_timeout' | 'client_closed' {
  return cutBySendTimeout(res) ? 'send_timeout' : 'client_closed';
}

/** Used to abort the upstream exchange when the gateway ends a stream (revocation, expiry, shutdown). */
export class StreamClosed extends Error {
  override readonly name = 'StreamClosed';
  readonly reason: string;
  constructor(reason: string) {
    super(reason);
    this.reason = reason;
  }
}

/**
 * The upstream answered 401 to the credential the gateway injected (`static` or `exchange`): the
 * gateway's credential is wrong or expired. Its answer is not relayed (the caller gets 502): an MCP
 * client would read the challenge's `resource_metadata` or `scope` and start an OAuth flow against
 * the upstream's authorization server, about a credential it never holds.
 */
export class UpstreamCredentialRejected extends Error {
  override readonly name = 'UpstreamCredentialRejected';
  readonly code = 'upstream_credential_rejected';
  /** What the upstream answered. */
  readonly status = 401;
  constructor() {
    super('the upstream refused the gateway credential');
  }
}

/**
 * RFC 9110 §15 defines status codes 100–599, but HTTP/1.1 parsers (undici's, Node's) take any
 * three digits: a status outside that range is no answer a caller or a proxy in front can read.
 */
export function validStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 100 && status <= 599;
}

/**
 * The upstream answered with a status outside 100–599 ({@link validStatus}): nothing of its answer
 * is relayed (the caller gets 502); `status` is what it sent, for the audit event.
 */
export class UpstreamStatusInvalid extends Error {
  override readonly name = 'UpstreamStatusInvalid';
  readonly code = 'upstream_status_invalid';
  /** What the upstream answered. */
  readonly status: number;
  constructor(status: number) {
    super('the upstream answered with a status outside 100-599');
    this.status = status;
  }
}

/** Map an undici or socket failure to a reason code and a metrics kind. Never reads the message. */
export function upstreamFailure(error: unknown): { code: ErrorCode; kind: string } {
  const code = (error as { code?: unknown } | null)?.code;
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return { code: 'upstream_timeout', kind: 'connect_timeout' };
    case 'UND_ERR_HEADERS_TIMEOUT':
      return { code: 'upstream_timeout', kind: 'header_timeout' };
    case 'UND_ERR_BODY_TIMEOUT':
      return { code: 'upstream_timeout', kind: 'idle_timeout' };
    // An MCP upstream's Mcp-Session-Id the gateway cannot sign (mcp/forward.ts).
    case 'mcp_upstream_session_invalid':
      return { code: 'mcp_upstream_session_invalid', kind: 'session_id_invalid' };
    // An MCP tools/list answer the gateway cannot read whole and filter (mcp/tools-list.ts).
    case 'mcp_tools_list_invalid':
      return { code: 'mcp_tools_list_invalid', kind: 'tools_list_invalid' };
    // …or a task list outside the answer to a tasks/list (mcp.list_tasks: mcp/task-list.ts).
    case 'mcp_upstream_task_list_refused':
      return { code: 'mcp_upstream_task_list_refused', kind: 'task_list_refused' };
    // An A2A extended agent card the gateway cannot read whole and rewrite (a2a/card.ts).
    case 'a2a_extended_card_invalid':
      return { code: 'a2a_extended_card_invalid', kind: 'extended_card_invalid' };
    // An A2A answer naming another principal's task (a2a/forward.ts).
    case 'a2a_upstream_task_foreign':
      return { code: 'a2a_upstream_task_foreign', kind: 'task_foreign' };
    // An A2A answer the gateway cannot read for its tasks: compressed, or larger than a2a.max_answer_size (a2a/forward.ts).
    case 'a2a_upstream_answer_compressed':
      return { code: 'a2a_upstream_answer_compressed', kind: 'answer_compressed' };
    case 'a2a_upstream_answer_too_large':
      return { code: 'a2a_upstream_answer_too_large', kind: 'answer_too_large' };
    // An A2A answer spelling a member it is read for twice (`contextId` and `ContextId`, a2a/forward.ts).
    case 'a2a_upstream_answer_ambiguous':
      return { code: 'a2a_upstream_answer_ambiguous', kind: 'answer_ambiguous' };
    // An A2A answer whose tasks the gateway's registry (its store) could not record (a2a/forward.ts).
    case 'a2a_task_registry_unavailable':
      return { code: 'a2a_task_registry_unavailable', kind: 'task_registry_unavailable' };
    // …or recorded as more than the caller may own (a2a.max_tasks_per_principal)…
    case 'a2a_task_registry_full':
      return { code: 'a2a_task_registry_full', kind: 'task_registry_full' };
    // …or not within the store's request timeout, all of them together (gateway.ts, recordTasks).
    case 'a2a_task_registry_timeout':
      return { code: 'a2a_task_registry_timeout', kind: 'task_registry_timeout' };
    // The answer to a task-augmented MCP request naming another principal's task, one the gateway
    // cannot read for its tasks, or whose task it cannot record (mcp/tasks.ts).
    case 'mcp_upstream_task_foreign':
      return { code: 'mcp_upstream_task_foreign', kind: 'task_foreign' };
    case 'mcp_task_answer_invalid':
      return { code: 'mcp_task_answer_invalid', kind: 'task_answer_invalid' };
    case 'mcp_task_registry_unavailable':
      return { code: 'mcp_task_registry_unavailable', kind: 'task_registry_unavailable' };
    case 'mcp_task_registry_full':
      return { code: 'mcp_task_registry_full', kind: 'task_registry_full' };
    case 'mcp_task_registry_timeout':
      return { code: 'mcp_task_registry_timeout', kind: 'task_registry_timeout' };
    // A 101 that accepts no key the gateway sent (proxy/websocket.ts).
    case 'upstream_upgrade_invalid':
      return { code: 'upstream_upgrade_invalid', kind: 'upgrade_invalid' };
    case 'upstream_credential_rejected':
      return { code: 'upstream_credential_rejected', kind: 'credential_rejected' };
    // A status outside 100–599 (UpstreamStatusInvalid).
    case 'upstream_status_invalid':
      return { code: 'upstream_status_invalid', kind: 'status_invalid' };
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return { code: 'upstream_unavailable', kind: 'connect' };
    default:
      return { code: 'upstream_unavailable', kind: 'reset' };
  }
}

/** What the forwarder reports back. */
export interface ForwardCallbacks {
  /** Response headers arrived and were sent to the caller. */
  onResponse(status: number, streaming: boolean): void;
  /** Response complete (or cut after headers were sent: `error` says why). */
  onEnd(bytesOut: number, error?: unknown): void;
  /** Failed before any response header was sent; the caller has not been answered. */
  onFailure(error: unknown, bytesOut: number): void;
}

export interface ForwardOptions {
  readonly dispatcher: Dispatcher;
  readonly method: string;
  /** Path and query for the upstream. */
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  /** `req` itself, an async iterable counting and limiting a chunked body, a body read already (MCP), or null. */
  readonly body: IncomingMessage | AsyncIterable<Uint8Array> | Buffer | null;
  /** ms; 0 disables. */
  readonly headersTimeout: number;
  /** ms; 0 disables. */
  readonly bodyTimeout: number;
  /** Extra headers on the response to the caller (flat `[name, value…]`). */
  readonly responseHeaders: readonly string[];
  /**
   * The gateway injected the upstream's credential (`static`, `exchange`): an upstream 401 fails
   * the exchange ({@link UpstreamCredentialRejected}) and the upstream's `WWW-Authenticate` is
   * never relayed. Without it (`none`, `passthrough`) the upstream's answer passes as it is.
   */
  readonly ownCredential?: boolean;
}

/**
 * undici legacy dispatch handler (`onConnect`/`onHeaders`/`onData`/`onComplete`/`onError`). It is
 * the interface undici's own core speaks, so no adapter runs per chunk. MCP routes extend it to
 * read a response header (see {@link forwardWith}).
 */
export class ForwardHandler {
  readonly #res: ServerResponse;
  readonly #cb: ForwardCallbacks;
  readonly #extra: readonly string[];
  readonly #ownCredential: boolean;
  #abort: ((reason?: Error) => void) | undefined;
  #resume: (() => void) | undefined;
  #bytes = 0;
  #done = false;
  #headers = false;
  /** The response has no length (SSE, chunked): a gateway-initiated close may end it cleanly. */
  #streaming = false;
  /** Listening for the caller going away while the response waits for it to drain. */
  #watching = false;

  constructor(res: ServerResponse, cb: ForwardCallbacks, extra: readonly string[], ownCredential = false) {
    this.#res = res;
    this.#cb = cb;
    this.#extra = extra;
    this.#ownCredential = ownCredential;
  }

  abort(reason: Error): void {
    if (this.#done) return;
    if (this.#abort) this.#abort(reason);
    else this.onError(reason);
  }

  onConnect(abort: (reason?: Error) => void): void {
    if (this.#done) {
      abort(new StreamClosed('aborted'));
      return;
    }
    this.#abort = abort;
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (!validStatus(status)) {
      // Nothing of it reaches the caller; the gateway answers 502 (onFailure).
      this.abort(new UpstreamStatusInvalid(status));
      return false;
    }
    // 1xx: informational (any of them, RFC 9110 §15.2); the final response follows. undici itself
    // fails a 100 nobody asked for and a 101 to a request that is no upgrade.
    if (status < 200) return true;
    const res = this.#res;
    if (res.destroyed) {
      this.#abort?.(new StreamClosed('client_closed'));
      return false;
    }
    if (status === 401 && this.#ownCredential) {
      // Nothing of it reaches the caller; the gateway answers 502 (onFailure).
      this.abort(new UpstreamCredentialRejected());
      return false;
    }
    this.#resume = resume;
    this.#headers = true;
    const headers = callerResponseHeaders(raw, this.#extra, this.#ownCredential);
    res.writeHead(status, headers);
    let streaming = status !== 204 && status !== 304;
    for (let i = 0; i < headers.length && streaming; i += 2) if (headers[i] === 'content-length') streaming = false;
    // A response without a length is a stream (SSE, chunked): send its head now, so a stream
    // whose first event comes later is not held back. Others go out with their first chunk.
    if (streaming) res.flushHeaders();
    this.#streaming = streaming;
    this.#cb.onResponse(status, streaming);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.#bytes += chunk.length;
    const res = this.#res;
    if (res.write(chunk)) return true;
    // Back-pressure: undici stops reading (and its idle timer with it) until the caller drains. A
    // caller that went away never drains, so give the upstream exchange up then, or it would hold
    // its pooled connection (and its audit event) until shutdown.
    if (res.destroyed) {
      this.abort(new StreamClosed(callerClosed(res)));
      return false;
    }
    res.once('drain', this.#resume as () => void);
    if (!this.#watching) {
      this.#watching = true;
      res.once('close', () => this.abort(new StreamClosed(callerClosed(res))));
    }
    return false;
  }

  /**
   * What ends a stream (no length) the gateway fails for `error` after its head went out, so the
   * caller reads why; `undefined` (here, always) cuts the connection instead, or, for a close the
   * gateway initiates ({@link StreamClosed}), ends the stream cleanly.
   */
  lastBytes(_error: Error): string | undefined {
    return undefined;
  }

  onComplete(): void {
    if (this.#done) return;
    this.#done = true;
    this.#res.end();
    this.#cb.onEnd(this.#bytes);
  }

  onError(error: Error): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#headers) {
      // Mid-stream: a gateway-initiated close ends a stream cleanly (the SSE client sees the end
      // of the stream); so does a refusal a subclass ends with its own last bytes (an SSE event
      // carrying the error); a response with a length (a download cut on revocation) and an
      // upstream failure cut the connection, so the caller knows the body is incomplete.
      const last =
        !this.#streaming || this.#res.destroyed ? undefined : (this.lastBytes(error) ?? (error instanceof StreamClosed ? '' : undefined));
      if (last === undefined) this.#res.destroy();
      else {
        this.#bytes += Buffer.byteLength(last);
        this.#res.end(last);
      }
      this.#cb.onEnd(this.#bytes, error);
    } else {
      this.#cb.onFailure(error, this.#bytes);
    }
  }
}

/** A forwarded exchange that can be aborted (revocation, shutdown, a caller that went away). */
export interface ForwardHandle {
  abort(reason: Error): void;
}

/**
 * Forward a request. Returns a handle to abort it.
 *
 * @example
 * ```ts
 * const handle = forward(res, { dispatcher: pool, method: 'GET', path: '/items', headers, body: null,
 *   headersTimeout: 30_000, bodyTimeout: 300_000, responseHeaders: ['x-request-id', id] }, callbacks);
 * ```
 */
export function forward(res: ServerResponse, options: ForwardOptions, callbacks: ForwardCallbacks): ForwardHandle {
  return forwardWith(new ForwardHandler(res, callbacks, options.responseHeaders, options.ownCredential), options);
}

/** {@link forward} with a given handler (a subclass that also reads the response head). */
export function forwardWith(handler: ForwardHandler, options: ForwardOptions): ForwardHandle {
  options.dispatcher.dispatch(
    {
      method: options.method as Dispatcher.HttpMethod,
      path: options.path,
      headers: options.headers,
      body: options.body as Dispatcher.DispatchOptions['body'],
      headersTimeout: options.headersTimeout,
      bodyTimeout: options.bodyTimeout,
    },
    handler as unknown as Dispatcher.DispatchHandler,
  );
  return handler;
}

/**
 * Wrap a chunked request body so it is counted and cut at `limit` bytes (the upload then fails
 * with {@link BodyTooLarge}). A body with Content-Length is checked before forwarding instead.
 */
export async function* limitedBody(req: IncomingMessage, limit: number, count: (n: number) => void): AsyncGenerator<Uint8Array> {
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    count(chunk.length);
    if (total > limit) throw new BodyTooLarge();
    yield chunk;
  }
}
