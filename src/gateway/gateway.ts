/**
 * The gateway: an identity-aware reverse proxy built to be mounted. `createGateway(config, deps)`
 * returns request and upgrade handlers for any `node:http` server, a `reload` that swaps in a new
 * configuration atomically, and a graceful `close`.
 *
 * Every request runs one pipeline (authenticate → rate-limit → authorize → mutate); the same
 * pipeline answers forward-auth checks from nginx, Traefik and Envoy. Every request ends in
 * exactly one audit event and one set of metric observations.
 *
 * @module
 */
import type { KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Duplex, Writable } from 'node:stream';
import pino, { type DestinationStream, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { BatchingAuditSink, within } from '../audit/batching.ts';
import type { AuditEvent, AuditSink } from '../audit/event.ts';
import { uuidv7 } from '../audit/id.ts';
import { type AuditPipeline, auditEventsDropped, auditEventsLost, createAuditPipeline } from '../audit/pipeline.ts';
import { createJsonLinesSink, type JsonLinesResume, type JsonLinesSink, terminalSafeJson } from '../audit/sinks/jsonl.ts';
import type { AuditConfig } from '../config/gateway-schema.ts';
import type { TesseraConfig } from '../config/schema.ts';
import { MAX_CLOCK_SKEW, MAX_DPOP_IAT_WINDOW } from '../config/verifier-schema.ts';
import { ConfigError, type ErrorCode, TesseraError } from '../core/errors.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { peerAllowed, plainAddress } from '../core/peers.ts';
import type { Clock, ReplayCache, UpstreamTokenIssuer } from '../core/ports.ts';
import { recordableName } from '../core/secret-shape.ts';
import { withResourceMetadata, withScope } from '../core/verify/challenge.ts';
import { createDpopNonces, DpopWindowHistory } from '../core/verify/dpop.ts';
import type { Principal } from '../core/verify/principal.ts';
import { MemoryReplayCache } from '../core/verify/replay.ts';
import { INTROSPECTION_RETRY_AFTER, REVOCATION_RETRY_AFTER } from '../core/verify/verifier.ts';
import { bodyMarkedRefusal, markUnaudited } from '../server/body-invalid.ts';
import { bodyUnread, closeUnread } from '../server/close-unread.ts';
import { continueOnRead } from '../server/expect-continue.ts';
import { ShutdownDeadline } from '../server/shutdown.ts';
import { createVerifierFromConfig, type VerifierRuntime } from '../verifier.ts';
import {
  type A2aConfig,
  type ExtendedCardForm,
  ExtendedCardForwardHandler,
  type GatewayEndpoint,
  isUpstreamCardPath,
  readA2aBody,
} from './a2a/card.ts';
import { type RecordIds, TaskForwardHandler } from './a2a/forward.ts';
import {
  isTaskPath,
  MAX_A2A_ID,
  type NamedIds,
  RPC_INTERNAL_ERROR,
  RPC_TASK_NOT_FOUND,
  RPC_UNSUPPORTED_OPERATION,
  requestIds,
  rpcIdOf,
  upstreamRpcCode,
} from './a2a/message.ts';
import { refusedPushUrl } from './a2a/push.ts';
import {
  answerNamesTooMany,
  type IdKind,
  MAX_IDS_PER_ANSWER,
  memoryTaskRegistry,
  StoreTaskOwners,
  type TaskRegistry,
  type TaskStore,
  taskOwner,
} from './a2a/registry.ts';
import {
  type Admission,
  type CompiledMcp,
  type CompiledRoute,
  compileGateway,
  type GatewayState,
  type VerifierFactory,
} from './compile.ts';
import type { GatewayContext } from './context.ts';
import { auditEventOf, Exchange } from './exchange.ts';
import { handleForwardAuth } from './forward-auth-handler.ts';
import { auditPath, auditRawPath, normalizeTarget } from './http/path.ts';
import { requestId } from './http/trace.ts';
import { readBody, TOO_LARGE } from './mcp/body.ts';
import { type McpSigning, SessionForwardHandler, type ToolsListForward, UpstreamSessionInvalid } from './mcp/forward.ts';
import { legacySession, signEndpoint } from './mcp/legacy.ts';
import {
  hasUtf8Charset,
  isDecidableName,
  isIdentityEncoding,
  isJsonContentType,
  RPC_INVALID_PARAMS,
  RPC_INVALID_REQUEST,
  RPC_METHOD_NOT_FOUND,
  RPC_PARSE_ERROR,
  RPC_SERVER_ERROR,
  RPC_SESSION_NOT_FOUND,
  readMessage,
  rpcErrorBody,
} from './mcp/message.ts';
import { metadataDocument, metadataUrlOf, resourceOf } from './mcp/metadata.ts';
import { type OpenedSession, openEventId, openSession, randomSessionKey, signEventId, signSession } from './mcp/sessions.ts';
import { type McpListTasks, openCursor, openListCursor, sealCursor, TaskListForwardHandler } from './mcp/task-list.ts';
import { MAX_TASK_ID, namesTask, type RecordTasks, recordedOwner, TaskCreateForwardHandler, taskRecordOwner } from './mcp/tasks.ts';
import { TOOLS_LIST_ERROR_MESSAGE, ToolsListInvalid } from './mcp/tools-list.ts';
import { type ConnectionRefusal, GatewayMetrics, NO_ROUTE, type ParserRefusal, type SendTimeoutKind } from './metrics.ts';
import { answerOperations, type ReadinessCheck, readiness, writeJson } from './ops.ts';
import type { RpcFacts } from './pipeline/authz/authorizer.ts';
import { type DenyRendering, nginxStatus, renderDeny } from './pipeline/errors/error-handler.ts';
import { ExchangeAnswerRefused, ExchangeMintsBusy, ExchangeMintTimeout, takeOverExchange } from './pipeline/mutate/mutator-exchange.ts';
import type { GatewayRequest } from './pipeline/request.ts';
import { afterAuthn, authenticate, type Decision, decide, forgetRejectedCredential, rateLimit } from './pipeline/run.ts';
import {
  BodyTooLarge,
  callerClosed,
  type ForwardCallbacks,
  type ForwardHandle,
  forward,
  forwardWith,
  limitedBody,
  StreamClosed,
  UpstreamCredentialRejected,
  UpstreamStatusInvalid,
  upstreamFailure,
} from './proxy/forward.ts';
import type { RecordResult } from './proxy/held-answer.ts';
import { UpstreamPools } from './proxy/upstreams.ts';
import { type AdmittedStream, recheckUnder } from './recheck.ts';
import { reintrospectionInterval, reintrospectUnder } from './reintrospect.ts';
import {
  absoluteUrl,
  allowlistClientOf,
  cardRoute,
  findRoute,
  framingValid,
  gatewayPath,
  headerBag,
  hostHeaderValid,
  metadataRoute,
  remoteOf,
  requestHost,
  requestOrigin,
  requestSecrets,
  upstreamHeaders,
  upstreamPath,
} from './requests.ts';
import { type RevocationFeed, type StreamCloseReason, StreamRegistry } from './streams.ts';
import { handleUpgrade } from './upgrade.ts';

/** What an A2A route read before forwarding. */
interface A2aForward {
  /** The body, read to know an extended-card call. */
  readonly body: Buffer | undefined;
  /** The request asks for the authenticated extended card, answered in this form: rewritten. */
  readonly card: ExtendedCardForm | undefined;
  /** Where the caller reached the route: the extended card's upstream URLs are named there. */
  readonly endpoint?: GatewayEndpoint | undefined;
  readonly config: A2aConfig;
  /** Records the tasks and contexts the answer names for the caller (`a2a.bind_tasks`). */
  readonly record: RecordIds | undefined;
  /** The JSON-RPC id of the call (null when it has none), echoed by a refusal of its answer; `undefined`: no call. */
  readonly rpcId?: string | number | null;
}

/** What an MCP route's request carries from its decision to the forwarder. */
interface McpForward {
  readonly challenges: (e?: TesseraError) => string[];
  /** The body, read to decide (POST). */
  readonly body: Buffer | undefined;
  /** The JSON-RPC id of the call in {@link body} (null when it has none), echoed by a refusal; `undefined`: no body. */
  readonly rpcId: string | number | null | undefined;
  /** The upstream's session id in the `Mcp-Session-Id` the request presented (its MAC checked). */
  readonly sessionId: string | undefined;
  /** That `Mcp-Session-Id` as presented (`S.<mac>`): a reload checks its MAC again under its key. */
  readonly presentedSession: string | undefined;
  /** The query the upstream receives: a legacy HTTP+SSE session in it (`?sessionId=`) unwrapped to the upstream's own id. */
  readonly query: string;
  /** What was read from the body and decided on (a reload decides the exchange again with it). */
  readonly rpc: RpcFacts;
  /** The ids the caller receives for an upstream's session and event ids: signed for this caller. */
  readonly sign: McpSigning;
  /** The upstream's own event id of a `Last-Event-ID` the caller presented (signed for it). */
  readonly lastEventId: string | undefined;
  /** A tools/list whose answer is filtered to the tools the caller may call. */
  readonly toolsList: ToolsListForward | undefined;
  /** A task-augmented tools/call (`mcp.bind_tasks`): records the tasks its answer creates for the caller. */
  readonly record?: RecordTasks | undefined;
  /** A tasks/list's answer filtered to the caller's tasks, its cursor sealed (`mcp.list_tasks`). */
  readonly listTasks?: McpListTasks | undefined;
}

/**
 * `Mcp_Session_Id` and the like: CGI-style servers read them as `Mcp-Session-Id`. A request naming
 * a session only that way would reach the upstream unchecked, so it is treated as presenting a
 * malformed session id.
 */
function hasLookalike(req: IncomingMessage, header: string): boolean {
  for (const name in req.headers) if (name !== header && name.replaceAll('_', '-') === header) return true;
  return false;
}

/**
 * `url`, an HTTP+SSE `endpoint` event's URL, resolved as the caller's client resolves it (against
 * the stream's URL at the gateway): does it name this gateway's origin and a path `route` serves?
 * Otherwise the session signed in it would be posted elsewhere, where no route checks it.
 */
function endpointOnRoute(route: CompiledRoute, greq: GatewayRequest, url: string): boolean {
  let resolved: URL;
  let base: URL;
  try {
    base = new URL(greq.url);
    resolved = new URL(url, base);
  } catch {
    return false;
  }
  if (resolved.origin !== base.origin) return false;
  const target = normalizeTarget(resolved.pathname + resolved.search);
  return target !== undefined && route.matches(greq.host, target.path, 'POST');
}

/**
 * The caller went away before its request was whole. A request read to its end is destroyed too
 * (Node's autoDestroy), as an MCP body read before deciding always is: that caller still waits
 * for its answer.
 */
function callerGone(req: IncomingMessage): boolean {
  return req.destroyed && !req.complete;
}

/**
 * Count in `x.bytesIn` the bytes of a body with Content-Length as they are read, not the length
 * it declared: an upload the caller abandons after a few bytes is audited with those bytes. The
 * counting listener is added only when the reader (undici, which reads with `data` listeners) adds
 * its own: one added before would start the flow, and the chunks emitted meanwhile would never
 * reach the upstream. It costs one call per chunk and a counter.
 */
function countRead(req: IncomingMessage, x: Exchange): void {
  const onListener = (event: string | symbol): void => {
    if (event !== 'data') return;
    req.off('newListener', onListener);
    req.on('data', (chunk: Buffer) => {
      x.bytesIn += chunk.length;
    });
  };
  req.on('newListener', onListener);
}

/**
 * The epoch second from which the verifier refuses `p`'s token, when the stream registry cuts an
 * exchange for expiry: a JWT's `exp` plus its issuer's clock skew (the verifier accepts while
 * `exp > now - skew`; an issuer no longer configured gets none); an introspected token's `exp`
 * (compared without skew), or never when the response had none (its `expiresAt` is then only how
 * long the answer may be cached; such a token's exchanges are introspected again instead, see
 * reintrospect.ts); a static token's `expiresAt` (never).
 */
function acceptedUntil(config: TesseraConfig, p: Principal): number {
  if (p.kind === 'jwt') return p.expiresAt + (config.issuers.find((i) => i.issuer === p.issuer)?.clock_skew ?? 0);
  if (p.kind === 'introspection') return typeof p.claims.exp === 'number' ? p.expiresAt : Number.POSITIVE_INFINITY;
  return p.expiresAt;
}

/**
 * The base URL the caller used: `server.public_url` without its trailing slash (with its path, which
 * a proxy in front removes, as the DPoP URL has it), or `https://host[:port]` of the request.
 */
function baseOf(s: GatewayState, req: IncomingMessage): string {
  if (s.publicBase !== undefined) return s.publicBase;
  try {
    return new URL(requestOrigin(s, req)).origin;
  } catch {
    return 'http://localhost';
  }
}

/**
 * Where the caller reached A2A route `route` on `host` (as it was matched): an agent card's URLs
 * naming the upstream are named there when `a2a.url` is unset. The base URL is the RFC 9728
 * metadata's ({@link baseOf}).
 */
function cardEndpoint(s: GatewayState, req: IncomingMessage, route: CompiledRoute, host: string): GatewayEndpoint {
  const base = baseOf(s, req);
  return {
    base,
    key: `${base}\n${host}`,
    upstreamOrigin: route.upstream.url.origin,
    endpoint: route.prefix || '/',
    pathOf: (path) => gatewayPath(route, host, path),
  };
}

/**
 * HKDF `info` of the key the gateway's DPoP nonces (`dpop.nonce`, RFC 9449 §9) are MACed with under
 * `tessera serve`, derived from the master key (unless `dpop.nonce_secret` is set): not the token
 * endpoint's (`DPOP_NONCE_KEY_INFO`).
 */
export const GATEWAY_DPOP_NONCE_KEY_INFO = 'tessera gateway dpop nonce v1';

/** The message of a JSON-RPC call's internal error (-32603): fixed, nothing of the error itself. */
const INTERNAL_ERROR_MESSAGE = 'The gateway could not handle the request.';

/** Refusals of an A2A or MCP answer for its tasks' registry (a2a/forward.ts, mcp/tasks.ts): not logged as upstream errors. */
const REGISTRY_REFUSALS: ReadonlySet<string> = new Set([
  'a2a_task_registry_full',
  'a2a_task_registry_unavailable',
  'a2a_task_registry_timeout',
  'mcp_task_registry_full',
  'mcp_task_registry_unavailable',
  'mcp_task_registry_timeout',
]);

/** `Retry-After` of a request refused while the audit queue is full (`audit.on_queue_full: refuse`). */
const AUDIT_RETRY_AFTER = 5;
/** At most one `audit_queue_full` log line this often, ms. */
const AUDIT_REFUSAL_LOG_MS = 10_000;

/** Default {@link GatewayDeps.taskStoreTimeoutMs}: the store's default request timeout. */
export const TASK_STORE_TIMEOUT_MS = 5000;

/** What the gateway needs from its host process. Everything is optional. */
export interface GatewayDeps {
  /**
   * pino logger (default: JSON to stdout at `info`). Never given secrets. Its lines carry no request
   * path or header value; text another party chose (a fetched key set's `kid`, in `verifier_warning`)
   * is given with control characters already escaped, so a logger without the default one's
   * escaping of what JSON leaves raw (C1 controls, U+2028, bidi overrides) prints it safely too.
   */
  readonly logger?: Logger;
  /** prom-client registry the gateway registers its metrics in (default: a new one). */
  readonly metrics?: Registry;
  /** Clock in epoch ms (tests). */
  readonly clock?: Clock;
  /**
   * Further audit sinks (the store). `audit.stdout` / `audit.file` sinks are added from config. A
   * batch one of these refuses is kept (within `audit.max_queue`) and tried again every
   * `audit.flush_interval`.
   */
  readonly auditSinks?: readonly AuditSink[];
  /** The stream `audit.stdout` writes to (default `process.stdout`). */
  readonly auditStdout?: Writable;
  /** Revocations: checked by the verifiers, and used to close open streams. */
  readonly revocation?: RevocationFeed;
  /** The token service, for `credential: exchange`. */
  readonly upstreamTokenIssuer?: UpstreamTokenIssuer;
  /**
   * Runtime for verifiers built from config (key sources of the in-process token service, fetch,
   * the store's replay cache). Without `replay`, one in-memory cache (`dpop.replay_cache_size`) is
   * shared by every verifier the gateway builds, across reloads; so are, without `dpopNonces`, one
   * nonce source with a random secret (this process only: `tessera serve` gives one keyed from the
   * master key, {@link GATEWAY_DPOP_NONCE_KEY_INFO}; `dpop.nonce_secret` replaces either), and,
   * without `dpopWindows`, the DPoP windows of the verifiers a reload replaced.
   */
  readonly verifierRuntime?: VerifierRuntime;
  /** Replace how verifiers are built (default: `createVerifierFromConfig` with `verifierRuntime`). */
  readonly createVerifier?: VerifierFactory;
  /** Extra readiness checks (the store). */
  readonly readiness?: readonly ReadinessCheck[];
  /** The issuer of the token service in this process: MCP routes advertise it in their RFC 9728
   * metadata unless `mcp.authorization_servers` says otherwise. */
  readonly authorizationServer?: string;
  /**
   * The key MCP session ids are signed with when `gateway.mcp_session_secret` is not set
   * (`tessera serve` derives one from the master key). Default: a random key per process, with a
   * warning: sessions then end with the process and are refused by other instances.
   */
  readonly mcpSessionKey?: KeyObject;
  /**
   * Where A2A routes (`a2a.bind_tasks`) record who owns each task and context: the store
   * (`tessera serve` gives its own), shared by every instance on it and kept across restarts.
   * Without it, in this process only: a task created through one instance is unknown to the
   * others, and a restart forgets every task (its owner is refused afterwards).
   */
  readonly taskStore?: TaskStore;
  /**
   * How long the store may take over all the claims and reads of one request's or one answer's
   * task and context ids together (ms): the store's own request timeout (`tessera serve` gives
   * `store.postgres.request_timeout`, or SQLite's `busy_timeout`). Each store call is bounded by it
   * already, but an answer may name many ids, and a store slow on each would otherwise hold the
   * answer for as many timeouts. Past it the answer is refused (`a2a_task_registry_timeout`).
   * Default {@link TASK_STORE_TIMEOUT_MS}.
   */
  readonly taskStoreTimeoutMs?: number;
  /**
   * The host the listener is bound to, when it is not `server.host` (`serveGateway`'s `host`,
   * `--host`). Without `server.public_url`, DPoP proofs name the gateway's own URL, http://<this
   * host>:<port>, not the caller's Host header.
   */
  readonly listenHost?: string;
}

/** What {@link Gateway.reload} answers: the new configuration applied (with warnings), or refused and the old one kept. */
export type ReloadResult =
  | { readonly ok: true; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly error: ConfigError };

/** Options of {@link Gateway.close}. */
export interface GatewayCloseOptions {
  /** How long requests in flight may finish (default `gateway.drain_timeout`). */
  readonly drainTimeoutMs?: number;
  /**
   * The deadline of a larger shutdown this close is part of (as `serveGateway` shares one with the
   * handler in front of the gateway and what `onClose` closes); `drainTimeoutMs` is ignored then.
   */
  readonly deadline?: ShutdownDeadline;
}

/** A mounted gateway. */
export interface Gateway {
  /** `server.on('request', gateway.handleRequest)`. */
  readonly handleRequest: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * Refuse a request whose framing the server does not accept (`framingValid`: HTTP/1.0 with a
   * Transfer-Encoding, a coding other than `chunked`, another HTTP version): 400
   * `request_framing_invalid`, audited, the connection closed, the body never read. `handleRequest`
   * refuses such a request itself; `createListener` checks every request before any handler and
   * calls this for one the gateway answers.
   */
  readonly refuseFraming: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * `server.on('checkContinue', gateway.handleCheckContinue)`: a request sent with `Expect:
   * 100-continue` gets `100 Continue` only once it is allowed and its body is forwarded (or read,
   * on an MCP route); a refused one gets its 401, 403 or 413 alone. Without it Node answers 100
   * before the gateway has decided anything.
   */
  readonly handleCheckContinue: (req: IncomingMessage, res: ServerResponse) => void;
  /** `server.on('upgrade', gateway.handleUpgrade)`. */
  readonly handleUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /**
   * Validate and swap in a new configuration; the old one stays when it is invalid. Exchanges in
   * flight are decided again under the new one with the principal they were admitted with: those
   * whose credential it no longer accepts (a static token removed or given a new value, an issuer
   * removed, a key of it or a setting narrowed, introspection removed, moved or narrowed) are ended
   * with `credential_withdrawn`, those it no longer allows (a rule, a route, a static token's scopes,
   * DPoP, query tokens or `trust_proxy` narrowed) with `config_narrowed`.
   */
  reload(config: TesseraConfig): ReloadResult;
  /**
   * A reload refused before it reached {@link Gateway.reload} (the file could not be read, parsed or
   * validated, a `${VAR}` it names is unset): counted in `tessera_gateway_config_reloads_total{result="refused"}`
   * and logged (`config_reload_refused`) as one `reload` refuses. The configuration in force stays.
   */
  refuseReload(error: ConfigError): ReloadResult;
  /**
   * Stop: readiness turns 503, WebSocket and event streams are closed (1001 / end of stream),
   * in-flight requests get `drainTimeoutMs` (default `gateway.drain_timeout`) to finish, then
   * everything left is cut; the audit queue is flushed in what is left of `drainTimeoutMs`, and at
   * least 1 s (or `drainTimeoutMs`, when shorter) after the drain ended. The events not written
   * then are counted in one `audit_events_lost` log line, and shutdown goes on.
   */
  close(options?: GatewayCloseOptions): Promise<void>;
  /** The current compiled state (read-only). Internal: its shape is not part of the public API and may change. */
  readonly state: GatewayState;
  readonly audit: AuditPipeline;
  readonly registry: Registry;
  readonly logger: Logger;
  /** In-flight requests. */
  readonly inflight: number;
  /**
   * Count a request the HTTP server answered before the gateway saw it, in
   * `tessera_gateway_parser_refusals_total{status}` (it has no audit event): call it from the
   * server's `clientError` handler, as `serveGateway` does.
   */
  readonly refusedByParser: (status: ParserRefusal) => void;
  /**
   * Count a connection the HTTP server closed unanswered as it was accepted, in
   * `tessera_gateway_connections_refused_total{reason}`, as `serveGateway` does.
   */
  readonly refusedConnection: (reason: ConnectionRefusal) => void;
  /**
   * Count a connection the HTTP server destroyed because its client took none of its pending
   * output for `limits.send_timeout`, in `tessera_gateway_send_timeouts_total{kind}`, as `serveGateway` does.
   */
  readonly sendTimedOut: (kind: SendTimeoutKind) => void;
}

/** pino's levels, as `TESSERA_LOG_LEVEL` may name them. */
const LOG_LEVELS: readonly string[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

const REDACT = ['req.headers.authorization', 'req.headers.cookie', 'req.headers.dpop', 'headers.authorization', 'token', 'credential'];

/**
 * The default logger: JSON lines, no secrets (nothing secret is ever passed; redaction is a backstop),
 * to stdout (1), stderr (2) or a destination of the caller's. Each line is written as the audit
 * lines are (terminalSafeJson): a line may quote a value another party chose (a refused signing
 * key row's kid, a route id, an upstream's answer), and the characters JSON leaves raw but a line
 * reader or a terminal acts on (C1 controls, U+2028, U+2029, bidirectional overrides) are escaped.
 */
export function defaultLogger(level?: string, fd: 1 | 2 | DestinationStream = 1): Logger {
  const fromEnv = process.env.TESSERA_LOG_LEVEL;
  // pino's own refusal ("default level:x must be included in custom levels") names neither the
  // variable nor the choices; `tessera serve` would print it as an unexpected error.
  if (level === undefined && fromEnv !== undefined && !LOG_LEVELS.includes(fromEnv)) {
    throw new ConfigError(
      [{ path: 'TESSERA_LOG_LEVEL', message: `${JSON.stringify(fromEnv)} is not a log level: write one of ${LOG_LEVELS.join(', ')}` }],
      'the environment',
    );
  }
  return pino(
    {
      level: level ?? fromEnv ?? 'info',
      base: { service: 'tessera' },
      redact: { paths: REDACT, censor: '[redacted]' },
      hooks: { streamWrite: terminalSafeJson },
    },
    fd === 1 ? undefined : fd === 2 ? pino.destination({ fd, sync: true }) : fd,
  );
}

/**
 * An error's `code` when it is a constant's name (`ELOOP`, `ENOSPC`, `EACCES`, `ERR_SQLITE_ERROR`,
 * a PostgreSQL SQLSTATE): it says why without the message, which may quote the data written.
 */
function errorCode(error: unknown): { code?: string } {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code) ? { code } : {};
}

/** An audit output of the configuration: `audit.stdout` or `audit.file`. */
interface AuditOutput {
  readonly kind: 'stdout' | 'file';
  readonly sink: JsonLinesSink;
}

/**
 * The outputs `audit` configures. `resumes`: where a write refused part-way stopped, per target,
 * kept across reloads: a reload keeping `audit.file` opens a new sink on it, and the batch written
 * again goes on where the refused write stopped when the file open is the one the cut line went to
 * (no line written twice, none cut), as the old sink would have; a new file at the path (SIGHUP
 * after a rotation) gets the batch whole (see createJsonLinesSink). A target no longer configured
 * loses its entry.
 */
function auditOutputs(
  audit: AuditConfig | undefined,
  resumes: Map<string, JsonLinesResume>,
  stdout: Writable = process.stdout,
  onReopened?: () => void,
): AuditOutput[] {
  const out: AuditOutput[] = [];
  const targets = new Set<string>();
  const resume = (key: string): JsonLinesResume => {
    targets.add(key);
    let r = resumes.get(key);
    if (r === undefined) resumes.set(key, (r = {}));
    return r;
  };
  if (audit?.stdout) out.push({ kind: 'stdout', sink: createJsonLinesSink({ stream: stdout }, { resume: resume('stdout') }) });
  if (audit?.file) {
    const sink = createJsonLinesSink({ file: audit.file }, { resume: resume(`file:${audit.file}`), ...(onReopened ? { onReopened } : {}) });
    out.push({ kind: 'file', sink });
  }
  for (const key of resumes.keys()) if (!targets.has(key)) resumes.delete(key);
  return out;
}

/**
 * Create a gateway from a validated `tessera.yaml` (with its `gateway` section).
 *
 * @throws {ConfigError} listing every problem found when compiling routes against the rest of the
 *   configuration.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createGateway, loadConfigFile } from 'tessera';
 *
 * const gateway = createGateway(loadConfigFile('tessera.yaml'), { revocation, upstreamTokenIssuer });
 * const server = createServer(gateway.handleRequest)
 *   .on('checkContinue', gateway.handleCheckContinue)
 *   .on('upgrade', gateway.handleUpgrade);
 * server.listen(8080);
 * process.on('SIGHUP', () => gateway.reload(loadConfigFile('tessera.yaml')));
 * ```
 */
export function createGateway(config: TesseraConfig, deps: GatewayDeps = {}): Gateway {
  const clock = deps.clock ?? Date.now;
  const logger = deps.logger ?? defaultLogger();
  const registry = deps.metrics ?? new Registry();
  const pools = new UpstreamPools();
  // One replay cache for every verifier the gateway builds, the ones a reload builds included: a
  // verifier of its own per build would forget, at each reload, the proofs accepted before it.
  const memoryReplay =
    deps.verifierRuntime?.replay === undefined ? new MemoryReplayCache({ maxEntries: config.dpop.replay_cache_size, clock }) : undefined;
  const replay: ReplayCache = memoryReplay ?? (deps.verifierRuntime?.replay as ReplayCache);
  // Shared as the replay cache is: a reload that lengthens the DPoP window must not accept again a
  // proof the replaced verifiers accepted and already forgot.
  const dpopWindows = deps.verifierRuntime?.dpopWindows ?? new DpopWindowHistory({ horizon: MAX_DPOP_IAT_WINDOW + MAX_CLOCK_SKEW });
  // One nonce secret for every verifier, across reloads: a JWT route's nonce is good at an
  // introspection route, and a reload does not cost each client a use_dpop_nonce round trip. The
  // nonces stay valid for the same two time slots (RFC 9449 §9). `dpop.nonce_secret`, when set,
  // replaces it in each verifier built (createVerifierFromConfig), a reload's included.
  const dpopNonces = deps.verifierRuntime?.dpopNonces ?? createDpopNonces({ clock });
  const verifierFactory: VerifierFactory =
    deps.createVerifier ??
    ((c, _kind, shared) =>
      createVerifierFromConfig(c, {
        ...deps.verifierRuntime,
        dpopClockSkew: shared.dpopClockSkew,
        replay,
        dpopWindows,
        dpopNonces,
        clock,
        ...(deps.revocation ? { revocation: deps.revocation } : {}),
        onWarning: deps.verifierRuntime?.onWarning ?? ((m: string) => logger.warn({ event: 'verifier_warning' }, m)),
      }));
  const compileDeps = {
    clock,
    createVerifier: verifierFactory,
    upstreamTokenIssuer: deps.upstreamTokenIssuer,
    authorizationServer: deps.authorizationServer,
    mcpSessionKey:
      deps.mcpSessionKey !== undefined ? { key: deps.mcpSessionKey, random: false } : { key: randomSessionKey(), random: true },
    listenHost: deps.listenHost,
    dpopNoncesRandom: deps.verifierRuntime?.dpopNonces === undefined && deps.createVerifier === undefined,
    pools,
    // The token service's refusals carry a fixed code (client_unknown, target_not_allowed...) that
    // says what to fix; no error's message is logged, as it may carry request data.
    onExchangeError: (route: string, error: unknown) =>
      logger.warn(
        {
          event: 'upstream_credential_failed',
          route,
          error: (error as Error)?.name ?? 'error',
          ...(error instanceof OAuthError
            ? { code: error.code }
            : error instanceof ExchangeAnswerRefused || error instanceof ExchangeMintTimeout || error instanceof ExchangeMintsBusy
              ? { code: error.reason }
              : {}),
        },
        'minting an upstream token failed',
      ),
  };

  let state = compileGateway(config, compileDeps);
  for (const w of state.warnings) logger.warn({ event: 'config_warning' }, w);
  for (const v of state.verifiers) void v.ready();

  const resumes = new Map<string, JsonLinesResume>();
  // audit.file deleted, or renamed away without a SIGHUP: the sink opens the path again for the
  // next batch; one line says so (nothing of any event).
  const auditFileReopened = () =>
    logger.warn({ event: 'audit_file_reopened', output: 'file' }, 'audit file was deleted or moved; reopened');
  let sinks: AuditOutput[] = auditOutputs(state.audit, resumes, deps.auditStdout, auditFileReopened);
  const maxQueue = state.audit?.max_queue ?? 100_000;
  const flushIntervalMs = (state.audit?.flush_interval ?? 1) * 1000;
  const auditFailed = (error: unknown, events: number) =>
    logger.error(
      { event: 'audit_write_failed', events, error: (error as Error)?.name ?? 'error', ...errorCode(error) },
      'audit events could not be written',
    );
  // The store (the further sinks) keeps what it refused and tries it again every flush_interval,
  // as the token service's queue does, within max_queue more events (beyond: dropped and counted):
  // a short outage loses nothing.
  const holding = (s: AuditSink) =>
    new BatchingAuditSink(s, { flushIntervalMs, maxBatch: state.audit?.batch_size ?? 256, maxQueue, onError: auditFailed });
  const stores = (deps.auditSinks ?? []).map(holding);
  // audit.on_queue_full (applied at start, as max_queue): refuse, while the next decision's event
  // could not be kept.
  const refuseWhenFull = state.audit?.on_queue_full === 'refuse';
  // With refuse, a request that may be proxied (and a WebSocket upgrade) also reserves a slot for
  // the close of its stream, but only when max_queue leaves room for both: every request must fit
  // an empty queue. With max_queue 1 its close, if the gateway makes one, is emitted without a
  // slot, and dropped (loudly: audit_events_dropped) while the queue is full.
  const closeSlots = refuseWhenFull && maxQueue >= 2;
  // With refuse, audit.file and stdout keep what they refused too, and try it again every
  // flush_interval (to the output of that kind configured then: a reload may have moved the file),
  // so an output that fails (a full disk, EIO) fills the queue and requests are refused rather
  // than served with their events lost; the same file goes on where the refused write stopped, so no
  // line is written twice, and a new one (a rotation) gets the batch whole. With drop, a batch an output refused is counted and not kept.
  const kept = new Map<AuditOutput['kind'], BatchingAuditSink>(
    refuseWhenFull
      ? (['stdout', 'file'] as const).map((kind) => [
          kind,
          holding({ write: (events) => sinks.find((o) => o.kind === kind)?.sink.write(events) ?? Promise.resolve() }),
        ])
      : [],
  );
  /** Every sink that keeps what it refused: the store's, and with refuse the outputs'. */
  const holders = [...stores, ...kept.values()];
  const writeOutput = (o: AuditOutput, events: readonly AuditEvent[]): Promise<void> => {
    const k = kept.get(o.kind);
    const written = k === undefined ? o.sink.write(events) : k.write(events).then(() => (k.failing ? undefined : k.flush()));
    if (o.kind === 'stdout') void written.then(stdoutBroken, stdoutBroken);
    return written;
  };
  // audit.stdout whose stream failed (its reader gone: EPIPE) cannot be opened again: one error
  // line says so (the error's code only), and /readyz names it, not ready with refuse (every
  // request is refused until a restart), ready with drop (its events are lost to stdout).
  let stdoutBrokenLogged = false;
  const brokenStdout = (): Error | undefined => sinks.find((o) => o.kind === 'stdout')?.sink.broken;
  function stdoutBroken(): void {
    const e = brokenStdout();
    if (e === undefined || stdoutBrokenLogged) return;
    stdoutBrokenLogged = true;
    logger.error(
      { event: 'audit_output_failed', output: 'stdout', ...errorCode(e) },
      refuseWhenFull
        ? 'audit.stdout cannot be written any more (its reader is gone?): requests are refused (audit.on_queue_full: refuse) until the gateway is restarted with a reader on its stdout'
        : 'audit.stdout cannot be written any more (its reader is gone?): its events are lost until the gateway is restarted with a reader on its stdout',
    );
  }
  const stdoutCheck: ReadinessCheck = {
    name: 'audit stdout',
    check: () => {
      const e = brokenStdout();
      if (e === undefined) return { ok: true };
      const code = errorCode(e).code ?? (e as Error).name ?? 'error';
      return {
        ok: !refuseWhenFull,
        detail: `failed (${code}), not written again until a restart${refuseWhenFull ? ': requests are refused (audit.on_queue_full: refuse)' : ': its events are lost (audit.on_queue_full: drop)'}`,
      };
    },
  };
  const audit = createAuditPipeline({
    // A batch is over once every output has answered: Promise.all would end it at the first refusal
    // (an audit.file on a full disk), while the store still writes it, so the next batches' writes
    // would pile up beside it and a shutdown would close the store under them. A store that is
    // failing answers at once: the batch waits in its queue for the next attempt.
    sinks: [
      {
        write: (events) =>
          Promise.allSettled([
            ...sinks.map((o) => writeOutput(o, events)),
            ...stores.map((s) => s.write(events).then(() => (s.failing ? undefined : s.flush()))),
          ]).then((results) => {
            for (const r of results) if (r.status === 'rejected') throw r.reason;
          }),
      },
    ],
    batchSize: state.audit?.batch_size ?? 256,
    flushIntervalMs,
    maxQueue,
    // With refuse, the next event could not be kept once the events waiting in the pipeline, the
    // slots reserved for the exchanges in flight and those the store or an output holds (waiting,
    // or in a write that may fail and keep them) fill max_queue. Each event waiting in the pipeline
    // goes to each holder next, so they add up.
    ...(refuseWhenFull ? { heldElsewhere: () => heldByOutputs() } : {}),
    // refuse: an event dropped is never silent (drop keeps its counter alone, as before).
    ...(refuseWhenFull ? { onDropped: droppedEvent } : {}),
    onError: (error, _sink, events) => auditFailed(error, events),
  });
  // refuse: the events dropped (no slot, the queue full) since the last audit_events_dropped line,
  // by kind, and when that line was written (performance.now()).
  let droppedKinds: Record<string, number> | undefined;
  let droppedLoggedAt = Number.NEGATIVE_INFINITY;
  let droppedTimer: NodeJS.Timeout | undefined;
  /** An event dropped goes into the next `audit_events_dropped` line: at once for the first, then at most one every 10 s. */
  function droppedEvent(e: AuditEvent): void {
    const kinds = (droppedKinds ??= {});
    kinds[e.kind] = (kinds[e.kind] ?? 0) + 1;
    if (droppedTimer !== undefined) return;
    // With the others of the same turn (a revocation cutting many streams at once).
    droppedTimer = setTimeout(reportDropped, Math.max(0, droppedLoggedAt + AUDIT_REFUSAL_LOG_MS - performance.now()));
    droppedTimer.unref();
  }
  /** Write the `audit_events_dropped` line (level error) of the events dropped since the last, if any. */
  function reportDropped(): void {
    clearTimeout(droppedTimer);
    droppedTimer = undefined;
    const kinds = droppedKinds;
    if (kinds === undefined) return;
    droppedKinds = undefined;
    droppedLoggedAt = performance.now();
    const { message, ...fields } = auditEventsDropped('gateway', kinds, audit.stats.dropped);
    logger.error(fields, message);
  }
  function heldByOutputs(): number {
    let stored = 0;
    for (const s of holders) stored = Math.max(stored, s.held);
    return stored;
  }
  /**
   * With refuse, no room for one more exchange: a request admitted takes a slot when it is admitted
   * (not when it ends, when the queue may have filled behind it), so its event is kept.
   */
  const auditFull = (): boolean => audit.full;
  let refusedSinceLog = 0;
  let refusalLoggedAt = Number.NEGATIVE_INFINITY;
  const auditStats = () => {
    const { depth, dropped, failed } = audit.stats;
    let stored = 0;
    let storeDropped = 0;
    let storeFailed = 0;
    for (const s of holders) {
      stored = Math.max(stored, s.depth);
      storeDropped += s.dropped;
      // Each event the store refused once, not once per retry (attempts × events).
      storeFailed += s.failed;
    }
    // The queue is as full as the fuller of the two (the pipeline's, the store's retry queue).
    return { depth: Math.max(depth, stored), dropped: dropped + storeDropped, failed: failed + storeFailed };
  };

  // Who owns each A2A task and context (a2a/registry.ts): one registry for every route, kept across
  // reloads; in the store when there is one (every instance on it agrees), else in this process.
  const taskOwners: TaskRegistry = deps.taskStore !== undefined ? new StoreTaskOwners(deps.taskStore) : memoryTaskRegistry();
  const taskStoreTimeoutMs = deps.taskStoreTimeoutMs ?? TASK_STORE_TIMEOUT_MS;
  const streams = new StreamRegistry<AdmittedStream>({
    clock,
    revocation: deps.revocation,
    acceptedUntil: (p) => acceptedUntil(state.config, p),
    recheck: recheckUnder(state),
  });
  // Rechecks in a row without an answer from the introspection endpoint, per exchange.
  const unanswered = new WeakMap<AdmittedStream, number>();
  streams.revalidateEvery(reintrospectionInterval(state.config), reintrospectUnder(state, unanswered));
  let inflight = 0;
  let closing = false;
  let drained: (() => void) | undefined;

  const metrics = new GatewayMetrics(
    registry,
    {
      verifierCache: () => {
        let hits = 0;
        let misses = 0;
        for (const v of state.verifiers) {
          hits += v.stats.cacheHits;
          misses += v.stats.cacheMisses;
        }
        return { hits, misses };
      },
      auditStats,
      activeStreams: () => streams.counts,
      inflight: () => inflight,
    },
    state.routes.map((r) => r.id),
  );

  // ---- completion: exactly one audit event and one metric observation per exchange ----

  function finish(x: Exchange): void {
    if (x.done) return;
    x.done = true;
    inflight--;
    if (inflight === 0 && drained) drained();
    // The listener answered 400 for a body its parser refused, or 408 for one still arriving at
    // request_timeout, before any answer of the gateway's (the answer decided, or a 401 decided
    // after, reached no one): the event and the metrics say what the caller got. An upstream the
    // request was relayed to saw the body cut short.
    const refused = x.request === undefined ? undefined : bodyMarkedRefusal(x.request);
    if (refused !== undefined) {
      x.decision = 'deny';
      x.reason = refused;
      x.status = refused === 'request_timeout' ? 408 : 400;
    }
    const latency = performance.now() - x.start;
    metrics.request(x.route ?? NO_ROUTE, x.decision, x.status, latency / 1000);
    if (x.decision === 'deny') metrics.deny(x.reason);
    audit.emit(auditEventOf(x, uuidv7(x.time), Math.round(latency * 1000) / 1000, x.vouching ?? state.vouching), x.auditSlot);
    // The close slot of a request or upgrade whose stream the gateway did not cut (it ended by
    // itself, or never opened).
    if (x.closeSlot) {
      x.closeSlot = false;
      audit.release();
    }
  }

  function streamClosedEvent(x: Exchange, principal: Principal | undefined, reason: StreamCloseReason, slot = false): void {
    if (reason === 'shutdown') {
      if (slot) audit.release();
      return;
    }
    const e = new Exchange('gateway.stream_closed', x.method, x.remoteAddress, performance.now(), clock());
    e.requestId = x.requestId;
    e.vouching = x.vouching;
    e.route = x.route;
    e.path = x.path;
    if (principal !== undefined) e.principal = principal;
    e.decision = 'deny';
    e.reason = reason;
    e.done = true;
    metrics.deny(reason);
    // A warning: a caller's stream cut by the gateway's own decision (revoked, expired, narrowed).
    logger.warn({ event: 'stream_closed', reason_id: reason, route: x.route, request_id: x.requestId }, 'stream closed');
    // With refuse, the close takes the slot its request or upgrade reserved when it was admitted
    // (Exchange.closeSlot), so it is kept however full the queue has become. Without one (drop),
    // it is dropped and counted while the queue is full.
    audit.emit(auditEventOf(e, uuidv7(e.time), 0, e.vouching ?? state.vouching), slot);
  }

  function auditRefusal(req: IncomingMessage, forwardAuth = false, slots: 1 | 2 = 1): DenyRendering | undefined {
    // The slot reserved here is the exchange's, taken by begin(…, true) and used by its finish();
    // the second (a request that may be proxied, a WebSocket upgrade) is its stream's close
    // (Exchange.closeSlot), when max_queue leaves room for two (closeSlots).
    if (!refuseWhenFull) return undefined;
    if (audit.reserve()) {
      if (slots === 1 || !closeSlots || audit.reserve()) return undefined;
      audit.release();
    }
    const s = state;
    let d = renderDeny(
      new TesseraError('audit_unavailable', { retryAfter: AUDIT_RETRY_AFTER }),
      () => [],
      requestId(req.headers['x-request-id'], requestSecrets(s, req)),
    );
    // For nginx, as its other forward-auth refusals: auth_request turns any other status into a 500.
    if (forwardAuth && s.gateway.forward_auth.flavor === 'nginx')
      d = { ...d, status: nginxStatus(d.status), headers: { ...d.headers, 'x-tessera-status': String(d.status) } };
    metrics.request(NO_ROUTE, 'deny', d.status, 0);
    metrics.deny('audit_unavailable');
    refusedSinceLog++;
    const now = performance.now();
    if (now - refusalLoggedAt >= AUDIT_REFUSAL_LOG_MS) {
      logger.error(
        { event: 'audit_queue_full', refused: refusedSinceLog, max_queue: maxQueue },
        'the audit queue is full (audit.on_queue_full: refuse): requests are refused with 503 audit_unavailable until the audit outputs take the queue again',
      );
      refusalLoggedAt = now;
      refusedSinceLog = 0;
    }
    return d;
  }

  /** Answer a request {@link auditRefusal} refused: its body is not read, so the connection is closed. */
  function refuseAuditFull(req: IncomingMessage, res: ServerResponse, d: DenyRendering): void {
    if (bodyUnread(req)) closeAfter(res, d.headers);
    if (!res.headersSent && !res.destroyed) res.writeHead(d.status, d.headers).end(d.body);
  }

  function begin(kind: Exchange['kind'], req: IncomingMessage, admitted = false): Exchange {
    inflight++;
    const x = new Exchange(kind, req.method ?? 'GET', plainAddress(req.socket.remoteAddress ?? ''), performance.now(), clock());
    x.auditSlot = admitted && refuseWhenFull;
    x.request = req;
    // The configuration the exchange is decided under (every handler reads `state` in this tick).
    x.vouching = state.vouching;
    return x;
  }

  function denyRendering(x: Exchange, error: TesseraError, challenges: (e?: TesseraError) => string[]): DenyRendering {
    x.decision = 'deny';
    x.reason = error.code;
    x.status = error.status;
    if (error.details.upstreamError !== undefined) (x.detail ??= {}).upstream_error = error.details.upstreamError;
    if (error.status < 500 && error.code !== 'route_not_found') {
      logger.info(
        { event: 'denied', reason_id: error.code, route: x.route, request_id: x.requestId, status: error.status },
        'request denied',
      );
    }
    return renderDeny(error, challenges, x.requestId);
  }

  /**
   * An answer that closes the connection: `connection: close`, and when it leaves the request body
   * unread (a refusal on the head: its length, framing, type), half-closed once written and closed
   * a linger later ({@link closeUnread}), not drained, nor reset before the client reads it.
   */
  function closeAfter(res: ServerResponse, headers: Record<string, string>): void {
    headers.connection = 'close';
    if (!res.headersSent && res.req !== undefined && bodyUnread(res.req)) closeUnread(res);
  }

  function deny(x: Exchange, res: ServerResponse, error: TesseraError, challenges: (e?: TesseraError) => string[], close = false): void {
    const d = denyRendering(x, error, challenges);
    if (close || closing) closeAfter(res, d.headers);
    if (!res.headersSent && !res.destroyed) res.writeHead(d.status, d.headers).end(d.body);
    finish(x);
  }

  /**
   * An upstream failure before any response header: 502/503/504 with a fixed body, nothing from the
   * upstream. A JSON-RPC call on an A2A or MCP route (`rpcId`: its id, null when it has none) gets
   * the JSON-RPC error its client reads ({@link upstreamRpcCode}), echoing its id.
   */
  function upstreamError(x: Exchange, res: ServerResponse, route: CompiledRoute, error: unknown, rpcId?: string | number | null): void {
    const f = upstreamFailure(error);
    metrics.upstreamError(route.id, f.kind);
    // A refused credential was handled where the refusal arrived (ProxiedRequest.onFailure); a
    // registry that failed told the operator itself (withinDeadline, registryUnavailable), and a
    // full one is about the caller, not the upstream.
    if (!(error instanceof UpstreamCredentialRejected) && !REGISTRY_REFUSALS.has(f.code))
      logger.warn(
        {
          event: 'upstream_error',
          route: route.id,
          kind: f.kind,
          request_id: x.requestId,
          ...(error instanceof UpstreamStatusInvalid ? { upstream_status: error.status } : {}),
        },
        'upstream failed',
      );
    const e = new TesseraError(f.code);
    x.reason = f.code;
    x.status = e.status;
    if (rpcId !== undefined) writeRpcError(x, res, e.status, upstreamRpcCode(f.code), e.description, rpcId);
    else if (!res.headersSent && !res.destroyed) {
      const d = renderDeny(e, state.challenges, x.requestId);
      res.writeHead(d.status, d.headers).end(d.body);
    }
    finish(x);
  }

  /**
   * A tools/list answer the gateway could not filter: recorded, counted and told to the operator;
   * `cut` when it came in an event stream already relayed in part, which the gateway ended there.
   * `tasks`: what it refused is a task list outside the answer to a tasks/list (`mcp.list_tasks`),
   * its own reason, metric kind and message: an upstream relaying its task list where it must not.
   */
  function toolsListInvalid(x: Exchange, route: CompiledRoute, cut = false, tasks = false): void {
    const code = tasks ? 'mcp_upstream_task_list_refused' : 'mcp_tools_list_invalid';
    const kind = tasks ? 'task_list_refused' : 'tools_list_invalid';
    (x.detail ??= {})[tasks ? 'task_list' : 'tools_list'] = code;
    metrics.upstreamError(route.id, kind);
    const message = tasks
      ? cut
        ? 'the upstream sent a task list in an event stream outside the answer to a tasks/list; it was not relayed and the stream was cut'
        : 'the upstream sent a task list outside the answer to a tasks/list (another answer, a GET stream, the legacy transport’s stream); it was not relayed'
      : cut
        ? 'the upstream sent a tools list in an event stream the gateway cannot read whole and filter; it was not relayed and the stream was cut'
        : 'the upstream sent a tools list (a tools/list answer, or a response in an event stream) the gateway cannot read whole and filter; it was not relayed';
    logger.warn(
      { event: 'upstream_error', reason_id: code, route: route.id, kind, request_id: x.requestId, ...(cut ? { stream_cut: true } : {}) },
      message,
    );
  }

  /**
   * The upstream refused the credential the gateway injects: audited with its 401, an operator
   * told, and the route's mutators forget it (a minted token is not sent again).
   */
  function credentialRejected(x: Exchange, route: CompiledRoute, sent: Readonly<Record<string, string>>): void {
    x.upstreamStatus = 401;
    forgetRejectedCredential(route.pipeline, x.principal, x.rule, sent);
    logger.warn(
      {
        event: 'upstream_credential_rejected',
        route: route.id,
        credential: route.config.upstream.credential.type,
        upstream_status: 401,
        request_id: x.requestId,
      },
      'the upstream refused the credential the gateway sends it (wrong or expired): check upstream.credential of this route',
    );
  }

  async function serveCard(
    s: GatewayState,
    x: Exchange,
    req: IncomingMessage,
    res: ServerResponse,
    route: CompiledRoute,
    host: string,
  ): Promise<void> {
    x.route = route.id;
    const body = await route.a2a?.body(cardEndpoint(s, req, route, host));
    if (body === undefined) {
      deny(x, res, new TesseraError('upstream_unavailable'), state.challenges);
      return;
    }
    // Without a2a.url and server.public_url the card names the origin the request came to, which a
    // trusted proxy may tell in X-Forwarded-Host/-Proto: a shared cache must not serve it for another.
    const vary = s.publicUrl === undefined && route.a2a?.perEndpoint ? 'X-Forwarded-Host, X-Forwarded-Proto' : undefined;
    servePublicJson(x, res, body, route.a2a?.maxAge ?? 60, vary);
  }

  /** A public discovery document (agent card, RFC 9728 metadata): cacheable, CORS-open, audited as allowed. */
  function servePublicJson(x: Exchange, res: ServerResponse, body: string, maxAge: number, vary?: string): void {
    x.decision = 'allow';
    x.reason = 'ok';
    x.status = 200;
    x.bytesOut = Buffer.byteLength(body);
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': String(x.bytesOut),
      'cache-control': `public, max-age=${maxAge}`,
      ...(vary !== undefined ? { vary } : {}),
      'access-control-allow-origin': '*',
      'x-request-id': x.requestId,
    });
    res.end(x.method === 'HEAD' ? undefined : body);
    finish(x);
  }

  /** RFC 9728 protected resource metadata of an MCP route: public, like an agent card. */
  function serveMetadata(s: GatewayState, x: Exchange, req: IncomingMessage, res: ServerResponse, route: CompiledRoute): void {
    x.route = route.id;
    // Without server.public_url the document names the origin the request came to, which a trusted
    // proxy may tell in X-Forwarded-Host/-Proto: a shared cache must not serve it for another.
    const vary = s.publicUrl === undefined ? 'X-Forwarded-Host, X-Forwarded-Proto' : undefined;
    servePublicJson(x, res, JSON.stringify(metadataDocument(route.mcp as CompiledMcp, baseOf(s, req))), 300, vary);
  }

  /** A JSON-RPC error answer the gateway writes itself: `status`, JSON-RPC `code`, `message`, the call's `id`. */
  function writeRpcError(
    x: Exchange,
    res: ServerResponse,
    status: number,
    code: number,
    message: string,
    id: string | number | null,
    close = false,
    retryAfter?: string,
  ): void {
    if (res.headersSent || res.destroyed) return;
    const body = rpcErrorBody(code, message, id);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': String(Buffer.byteLength(body)),
      'x-request-id': x.requestId,
    };
    if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
    if (close || closing) closeAfter(res, headers);
    res.writeHead(status, headers).end(body);
  }

  /** A refusal about the JSON-RPC message or session, answered as a JSON-RPC error (no challenge:
   * it is not about the token). */
  function denyRpc(x: Exchange, res: ServerResponse, error: TesseraError, rpc: number, id: string | number | null, close = false): void {
    const d = denyRendering(x, error, () => []);
    // A capacity refusal's Retry-After (RFC 9110 §10.2.3) holds for a JSON-RPC call too.
    writeRpcError(x, res, d.status, rpc, error.description, id, close, d.headers['retry-after']);
    finish(x);
  }

  /**
   * A JSON-RPC route's refusal of a request body (its framing, encoding, charset or size): -32000
   * with id null (the body is not read, or not trusted), the connection closed.
   */
  function refuseBody(x: Exchange, res: ServerResponse, code: ErrorCode): void {
    denyRpc(x, res, new TesseraError(code), RPC_SERVER_ERROR, null, true);
  }

  /**
   * An MCP route: authenticate, check the session, read and parse the JSON-RPC body (POST), then
   * authorize with the JSON-RPC method and the tool it names and forward the same bytes. The response streams as on any
   * route.
   */
  async function handleMcp(
    s: GatewayState,
    req: IncomingMessage,
    res: ServerResponse,
    x: Exchange,
    route: CompiledRoute,
    m: CompiledMcp,
    greq: GatewayRequest,
    length: number,
  ): Promise<void> {
    // MCP clients find the metadata from the 401 challenge (MCP authorization; RFC 9728 §5.1), and
    // the scope to request from its `scope` (RFC 6750 §3). A 403 names the scope it needs itself.
    const metadataUrl = metadataUrlOf(resourceOf(m, baseOf(s, req)));
    const scope = m.challengeScope;
    const challenges = (e?: TesseraError) =>
      route.authn.challenges(e).map((c) => {
        const scoped = scope !== undefined && (e === undefined || e.status === 401) ? withScope(c, scope) : c;
        return withResourceMetadata(scoped, metadataUrl);
      });
    /** The call's JSON-RPC id once its body is read (null: none, or a batch). */
    let callId: string | number | null | undefined;
    try {
      // Every body is read, whatever the method: a PUT or a GET carrying a tools/call must not pass
      // as "not a tool call" to an upstream that reads it anyway.
      const hasBody = greq.method === 'POST' || length > 0 || req.headers['transfer-encoding'] !== undefined;
      // As the other MCP body refusals are: a JSON-RPC error, the body unread (id null).
      if (hasBody && length > m.maxMessageSize) {
        refuseBody(x, res, 'request_too_large');
        return;
      }
      const authn = await authenticate(route.pipeline, greq);
      if (authn.principal) x.principal = authn.principal;
      if (!authn.ok) {
        deny(x, res, authn.error, challenges);
        return;
      }
      const principal = authn.principal as Principal;
      // Before the body is read: a caller over its limit must not make the gateway buffer it.
      const limited = rateLimit(route.pipeline, greq, principal);
      if (limited !== undefined) {
        deny(x, res, limited, challenges);
        return;
      }
      const key = s.mcpSessionKey;
      const presented = req.headers['mcp-session-id'];
      let sessionId: string | undefined;
      let presentedSession: string | undefined;
      if (presented !== undefined || hasLookalike(req, 'mcp-session-id')) {
        const opened: OpenedSession =
          typeof presented === 'string' ? openSession(key, route.id, presented, principal) : { ok: false, reason: 'mcp_session_unknown' };
        if (!opened.ok) {
          denyRpc(x, res, new TesseraError(opened.reason), RPC_SESSION_NOT_FOUND, null);
          return;
        }
        sessionId = opened.id;
        presentedSession = presented as string;
      }
      // The legacy HTTP+SSE transport names its session in the query (mcp/legacy.ts): checked the same way.
      let query = greq.query;
      const legacy = legacySession(query);
      if (legacy.kind !== 'none') {
        const opened: OpenedSession =
          legacy.kind === 'one' ? openSession(key, route.id, legacy.value, principal) : { ok: false, reason: 'mcp_session_unknown' };
        if (!opened.ok || legacy.kind !== 'one') {
          denyRpc(x, res, new TesseraError(opened.ok ? 'mcp_session_unknown' : opened.reason), RPC_SESSION_NOT_FOUND, null);
          return;
        }
        query = legacy.replace(opened.id);
        presentedSession ??= legacy.value;
      }
      // Resuming a stream: only from an event id this caller was sent on this session (events.ts).
      const resumeFrom = req.headers['last-event-id'];
      let lastEventId: string | undefined;
      if (resumeFrom !== undefined || hasLookalike(req, 'last-event-id')) {
        lastEventId = typeof resumeFrom === 'string' ? openEventId(key, route.id, sessionId ?? null, resumeFrom, principal) : undefined;
        if (lastEventId === undefined) {
          denyRpc(x, res, new TesseraError('mcp_event_id_invalid'), RPC_INVALID_REQUEST, null);
          return;
        }
      }
      let rpc: RpcFacts = { tool: null, method: null };
      let rpcId: string | number | null = null;
      let taskFacts: { readonly taskId?: string; readonly task?: true; readonly relatedTask?: string } = {};
      let body: Buffer | undefined;
      if (hasBody) {
        if (!isJsonContentType(req.headers['content-type'])) {
          refuseBody(x, res, 'mcp_content_type_invalid');
          return;
        }
        if (!isIdentityEncoding(req.headers['content-encoding'])) {
          refuseBody(x, res, 'mcp_content_encoding_refused');
          return;
        }
        // The route's max_body_size bounds the body too: a chunked one announces no length for the
        // check made before the request was routed here.
        const read = await readBody(req, Math.min(m.maxMessageSize, route.maxBodySize));
        if (read === TOO_LARGE) {
          refuseBody(x, res, 'request_too_large');
          return;
        }
        body = read;
        x.bytesIn = read.length;
        const message = readMessage(read);
        if (!message.ok) {
          denyRpc(x, res, new TesseraError(message.code), message.rpc, message.id);
          return;
        }
        rpc = message;
        taskFacts = message;
        rpcId = message.id;
        callId = message.id;
        // Recorded, not trusted: a token or a configured secret sent as a name is written `*`.
        if (message.tool !== null) x.tool = recordableName(message.tool, x.secrets);
        if (message.method !== null) (x.detail ??= {}).rpc = recordableName(message.method, x.secrets);
      }
      let decision = await afterAuthn(route.pipeline, greq, authn, rpc, true);
      // MCP tasks bound to the principal and tool that created them (mcp/tasks.ts).
      let record: RecordTasks | undefined;
      if (decision.ok && m.bindTasks && rpc.method !== null) {
        const owner = taskOwner(principal);
        if (rpc.method === 'tasks/list' && !m.listTasks) {
          denyRpc(x, res, new TesseraError('mcp_task_list_refused'), RPC_METHOD_NOT_FOUND, rpcId);
          return;
        }
        // The legacy HTTP+SSE transport answers on the session's GET stream, another exchange (maybe
        // through another instance) that does not know which request, tool and caller a response
        // answers: a task it creates could not be recorded (its owner would then get 404 for it, the
        // tool having run), nor a tasks/list filtered. Refused before the upstream, saying so.
        if (legacy.kind === 'one' && ((rpc.method === 'tools/call' && taskFacts.task === true) || rpc.method === 'tasks/list')) {
          denyRpc(x, res, new TesseraError('mcp_task_legacy_refused'), RPC_INVALID_REQUEST, rpcId);
          return;
        }
        // The task a tasks/* request names, and the one any request or notification says it belongs
        // to (params._meta related-task: an upstream queues its answer to that task, or writes to it).
        const named = [
          ...(namesTask(rpc.method) ? [taskFacts.taskId] : []),
          ...(taskFacts.relatedTask !== undefined ? [taskFacts.relatedTask] : []),
        ];
        for (const task of named) {
          const checked = await checkMcpTask(route.id, task, owner, m.taskTtl * 1000);
          if ('refused' in checked) {
            const notFound = checked.refused === 'mcp_task_unknown' || checked.refused === 'mcp_task_foreign';
            denyRpc(x, res, new TesseraError(checked.refused), notFound ? RPC_INVALID_PARAMS : RPC_SERVER_ERROR, rpcId);
            return;
          }
          // Decided again as a call of the tool that created the task: a token of the owner no longer
          // allowed that tool (another token of the same principal, narrower) reads nothing of it.
          if (namesTask(rpc.method)) x.tool = recordableName(checked.tool, x.secrets);
          const again = route.pipeline.authz.authorize(greq, principal, { tool: checked.tool, method: 'tools/call' });
          if (!again.ok && decision.ok)
            decision = again.rule
              ? { ok: false, error: again.error, principal, rule: again.rule }
              : { ok: false, error: again.error, principal };
        }
        if (rpc.method === 'tools/call' && rpc.tool !== null && taskFacts.task === true) {
          const tool = rpc.tool;
          const seen = new Set<string>();
          record = (ids) => recordMcpTasks(route.id, ids, owner, tool, m.taskTtl * 1000, m.maxTasksPerPrincipal, seen);
        }
      }
      // tasks/list (mcp.list_tasks): its answer filtered to the caller's own tasks, its cursor sealed
      // for the caller (mcp/task-list.ts); a task list anywhere else is refused (refuseTasks below).
      let listTasks: McpListTasks | undefined;
      const readTasks = decision.ok && m.bindTasks && m.listTasks;
      if (readTasks && rpc.method === 'tasks/list' && body !== undefined) {
        const opened = openListCursor(body, (sealed) => openCursor(key, route.id, principal, sealed));
        if (opened === undefined) {
          denyRpc(x, res, new TesseraError('mcp_message_invalid'), RPC_INVALID_PARAMS, rpcId);
          return;
        }
        body = opened;
        const owner = taskOwner(principal);
        listTasks = {
          own: (ids) =>
            ownMcpTasks(route.id, ids, owner, (tool) => route.pipeline.authz.authorize(greq, principal, { tool, method: 'tools/call' }).ok),
          seal: (cursor) => sealCursor(key, route.id, principal, cursor),
        };
      }
      // A tool is listed when a tools/call of it would be allowed: the same rules, the same request.
      // Every event stream is read for tools lists, not only a tools/list's: a GET resuming one
      // (Last-Event-ID) replays the upstream's stored events, a tools/list response among them.
      // With list_tasks every answer is read so, to refuse a task list (filter_tools_list false: every tool kept).
      const toolsList: ToolsListForward | undefined =
        m.filterToolsList || readTasks
          ? {
              id: rpcId,
              listing: m.filterToolsList && rpc.method === 'tools/list',
              limit: m.maxToolsListSize,
              allows: (name) =>
                !m.filterToolsList ||
                (isDecidableName(name) && route.pipeline.authz.authorize(greq, principal, { tool: name, method: 'tools/call' }).ok),
              refuseTasks: readTasks && rpc.method !== 'tasks/list',
              report: (outcome) => {
                if (outcome === 'invalid' || outcome === 'tasks') toolsListInvalid(x, route, false, outcome === 'tasks');
                else if (m.filterToolsList) {
                  const detail = (x.detail ??= {});
                  detail.tools_hidden = ((detail.tools_hidden as number | undefined) ?? 0) + outcome;
                }
              },
            }
          : undefined;
      proceed(s, req, res, x, route, greq, decision, length, {
        challenges,
        body,
        rpcId: callId,
        sessionId,
        presentedSession,
        query,
        rpc,
        sign: {
          session: (id) => signSession(key, route.id, id, principal),
          event: (session, id) => signEventId(key, route.id, session, id, principal),
          requestSession: sessionId,
          endpoint: (url) => {
            const signed = signEndpoint(url, (id) => signSession(key, route.id, id, principal));
            return signed !== undefined && endpointOnRoute(route, greq, signed) ? signed : undefined;
          },
        },
        lastEventId,
        toolsList,
        record,
        listTasks,
      });
    } catch (e) {
      if (res.destroyed || callerGone(req)) {
        x.reason = 'client_closed';
        finish(x);
      } else internalError(x, res, e, callId);
    }
  }

  /**
   * Whether the caller (`owner`) may name what the request names (a2a/message.ts), by who owns
   * each (a2a/registry.ts): every task its own, every context (and A2A 0.2 task) its own or new;
   * the new ones are then recorded as its.
   * The reason to refuse otherwise: a task never recorded and another principal's answer alike;
   * `a2a_task_registry_unavailable` when the registry (the store) cannot answer (fail closed),
   * `a2a_task_registry_timeout` when it has not answered for them all within `taskStoreTimeoutMs`.
   */
  async function checkTasks(
    route: string,
    named: NamedIds,
    owner: string,
    ttlMs: number,
    limit: number,
  ): Promise<
    | 'a2a_task_unknown'
    | 'a2a_task_foreign'
    | 'a2a_task_registry_full'
    | 'a2a_task_registry_unavailable'
    | 'a2a_task_registry_timeout'
    | undefined
  > {
    const now = clock();
    const tasks = [...new Set(named.tasks)];
    const fresh: [IdKind, string][] = [
      ...[...new Set(named.newTasks)].map((id): [IdKind, string] => ['task', id]),
      ...[...new Set(named.contexts)].map((id): [IdKind, string] => ['context', id]),
    ];
    const checked = await withinDeadline(route, (over) => checkNamed(route, tasks, fresh, named, owner, now, ttlMs, limit, over));
    return checked === 'timeout' ? 'a2a_task_registry_timeout' : checked;
  }

  async function checkNamed(
    route: string,
    tasks: readonly string[],
    fresh: readonly [IdKind, string][],
    named: NamedIds,
    owner: string,
    now: number,
    ttlMs: number,
    limit: number,
    over: AbortSignal,
  ): Promise<'a2a_task_unknown' | 'a2a_task_foreign' | 'a2a_task_registry_full' | 'a2a_task_registry_unavailable' | undefined> {
    try {
      const owners = await Promise.all(tasks.map((id) => taskOwners.ownerOf(route, 'task', id, now)));
      if (owners.some((o) => o === undefined)) return 'a2a_task_unknown';
      if (owners.some((o) => o !== owner)) return 'a2a_task_foreign';
      const maybe: [IdKind, string][] = [...new Set(named.maybeTasks)].map((id): [IdKind, string] => ['task', id]);
      const others = await Promise.all([...fresh, ...maybe].map(([kind, id]) => taskOwners.ownerOf(route, kind, id, now)));
      if (others.some((o) => o !== undefined && o !== owner)) return 'a2a_task_foreign';
      // Refused already (past the deadline): nothing more is recorded for it.
      if (over.aborted) return 'a2a_task_registry_unavailable';
      // Checked whole before anything is recorded: a refused request claims nothing. A claim can
      // still lose to another principal's made meanwhile (through another instance): refused then.
      const claims = await Promise.all([
        ...tasks.map((id) => taskOwners.claim(route, 'task', id, owner, now, ttlMs, limit)),
        ...fresh.map(([kind, id]) => taskOwners.claim(route, kind, id, owner, now, ttlMs, limit)),
      ]);
      if (claims.includes('foreign')) return 'a2a_task_foreign';
      if (claims.includes('full')) return 'a2a_task_registry_full';
      return undefined;
    } catch (e) {
      registryUnavailable(route, e);
      return 'a2a_task_registry_unavailable';
    }
  }

  function registryUnavailable(route: string, e: unknown, protocol: 'a2a' | 'mcp' = 'a2a'): void {
    logger.warn(
      { event: `${protocol}_task_registry_unavailable`, route, error: (e as { code?: unknown })?.code ?? (e as Error)?.name ?? 'error' },
      `the ${protocol === 'a2a' ? 'A2A' : 'MCP'} task registry (the store) did not answer; the request was refused`,
    );
  }

  /**
   * The tool that created the caller's (`owner`'s) MCP task `id` (mcp/tasks.ts), its record renewed
   * for `ttlMs`; or why a request naming it is refused: a task never recorded (or expired, or no
   * `params.taskId`) and another principal's alike, the registry not answering (fail closed).
   */
  async function checkMcpTask(
    route: string,
    id: string | undefined,
    owner: string,
    ttlMs: number,
  ): Promise<
    | { readonly tool: string }
    | { readonly refused: 'mcp_task_unknown' | 'mcp_task_foreign' | 'mcp_task_registry_unavailable' | 'mcp_task_registry_timeout' }
  > {
    if (id === undefined || id.length > MAX_TASK_ID) return { refused: 'mcp_task_unknown' };
    const now = clock();
    const checked = await withinDeadline(
      route,
      async (): Promise<
        { readonly tool: string } | { readonly refused: 'mcp_task_unknown' | 'mcp_task_foreign' | 'mcp_task_registry_unavailable' }
      > => {
        try {
          const record = await taskOwners.ownerOf(route, 'mcp_task', id, now);
          if (record === undefined) return { refused: 'mcp_task_unknown' };
          const parts = recordedOwner(record);
          if (parts === undefined || parts.principal !== owner) return { refused: 'mcp_task_foreign' };
          // Named again: bound for another ttl (a long task its owner polls stays its owner's), and
          // counted as long (a record made before the count was per principal is counted from now).
          // The count's claim has no limit, so a principal at its cap still polls its own tasks; what
          // it answers is not read: the task is the owner's by its owner-and-tool record, and a count
          // record another principal holds (the pair half renewed) is counted against that one.
          const [claim] = await Promise.all([
            taskOwners.claim(route, 'mcp_task', id, record, now, ttlMs),
            taskOwners.claim(route, 'mcp_task_principal', id, owner, now, ttlMs),
          ]);
          return claim === 'owned' ? { tool: parts.tool } : { refused: 'mcp_task_foreign' };
        } catch (e) {
          registryUnavailable(route, e, 'mcp');
          return { refused: 'mcp_task_registry_unavailable' };
        }
      },
      'mcp',
    );
    return checked === 'timeout' ? { refused: 'mcp_task_registry_timeout' } : checked;
  }

  /**
   * Which of the MCP tasks `ids` (listed in a tasks/list answer) are `owner`'s, created by a tool
   * the caller may call now (`allows`), as a request naming each would be decided; looked up
   * {@link MAX_IDS_PER_ANSWER} at a time (a page may list many), all within one deadline.
   */
  async function ownMcpTasks(
    route: string,
    ids: readonly string[],
    owner: string,
    allows: (tool: string) => boolean,
  ): Promise<ReadonlySet<string> | 'unavailable' | 'timeout'> {
    const now = clock();
    const named = ids.filter((id) => id.length <= MAX_TASK_ID);
    return withinDeadline(
      route,
      async (over): Promise<ReadonlySet<string> | 'unavailable'> => {
        const own = new Set<string>();
        try {
          for (let at = 0; at < named.length; at += MAX_IDS_PER_ANSWER) {
            if (over.aborted) return 'unavailable';
            const batch = named.slice(at, at + MAX_IDS_PER_ANSWER);
            const records = await Promise.all(batch.map((id) => taskOwners.ownerOf(route, 'mcp_task', id, now)));
            batch.forEach((id, i) => {
              const parts = recordedOwner(records[i] ?? '');
              if (parts !== undefined && parts.principal === owner && allows(parts.tool)) own.add(id);
            });
          }
          return own;
        } catch (e) {
          registryUnavailable(route, e, 'mcp');
          return 'unavailable';
        }
      },
      'mcp',
    );
  }

  /**
   * Record the MCP tasks an answer creates as `owner`'s, created by a call of `tool`; the answer is
   * relayed only once they are. Each is counted against `limit` (`mcp.max_tasks_per_principal`) by
   * its principal's record (`mcp_task_principal`), whatever tool created it, before its owner and
   * tool are recorded ({@link taskRecordOwner}): a task past the limit records nothing. `seen`
   * holds what the answer named before (its earlier events): one naming more ids than
   * {@link tooManyIds} allows is refused before any more claims start.
   */
  async function recordMcpTasks(
    route: string,
    ids: readonly string[],
    owner: string,
    tool: string,
    ttlMs: number,
    limit: number,
    seen: Set<string>,
  ): Promise<RecordResult> {
    const now = clock();
    // A longer id is not recorded: naming it later is refused.
    const named = [...new Set(ids)].filter((id) => id.length <= MAX_TASK_ID);
    // More than one answer is recorded for: refused before a store call starts.
    if (answerNamesTooMany(seen, named, limit)) return 'full';
    const record = taskRecordOwner(owner, tool);
    const claimed = async (): Promise<'recorded' | 'foreign' | 'full' | 'unavailable'> => {
      try {
        const claims = await Promise.all(
          named.map(async (id) => {
            // A claim cannot be taken back (the registry has no release): an id whose owner-and-tool
            // record is another's is refused before the principal's count is claimed, which would
            // otherwise hold one of the caller's places until task_ttl for a task it never got (a
            // pair left half renewed by checkMcpTask: the count record gone, the other live).
            const recorded = await taskOwners.ownerOf(route, 'mcp_task', id, now);
            if (recorded !== undefined && recorded !== record) return 'foreign';
            try {
              const counted = await taskOwners.claim(route, 'mcp_task_principal', id, owner, now, ttlMs, limit);
              // Counted: the owner-and-tool record is claimed without the limit, the count above is the
              // cap ('full' here would leave that count held). Another owner can claim the id in between
              // only with its principal's count, which the caller's now holds.
              return counted === 'owned' ? await taskOwners.claim(route, 'mcp_task', id, record, now, ttlMs) : counted;
            } catch (e) {
              // A new task not recorded (the store failed after the count was claimed, or may have): its
              // count would hold one of the caller's places until task_ttl for a task it never gets (the
              // answer is refused), and store errors repeated would lock it out. Taken back.
              if (recorded === undefined) await releaseMcpTask(route, id, owner, record, now);
              throw e;
            }
          }),
        );
        return claims.includes('foreign') ? 'foreign' : claims.includes('full') ? 'full' : 'recorded';
      } catch (e) {
        registryUnavailable(route, e, 'mcp');
        return 'unavailable';
      }
    };
    return withinDeadline(route, claimed, 'mcp');
  }

  /**
   * Take back what {@link recordMcpTasks} claimed for the new task `id` it could not record: its
   * owner-and-tool record (`record`), if written, then its principal's count record, unless an
   * owner-and-tool record of the id remains (another answer's, which the count then counts). Best
   * effort: a store still failing leaves the count to expire with task_ttl, as before.
   */
  async function releaseMcpTask(route: string, id: string, owner: string, record: string, now: number): Promise<void> {
    try {
      await taskOwners.release(route, 'mcp_task', id, record);
      if ((await taskOwners.ownerOf(route, 'mcp_task', id, now)) === undefined)
        await taskOwners.release(route, 'mcp_task_principal', id, owner);
    } catch {
      // The claim's own error is what is reported.
    }
  }

  /**
   * What `work` (the store calls for one request's or one answer's ids) answers, or `'timeout'`
   * when it has not settled within `taskStoreTimeoutMs`: one deadline for all of them, however
   * many ids and however slow the store is on each (`over` is aborted at it). The calls under way
   * then go on (a store call cannot be taken back); what they record is the caller's own, and the
   * request or answer naming it is refused.
   */
  async function withinDeadline<T>(
    route: string,
    work: (over: AbortSignal) => Promise<T>,
    protocol: 'a2a' | 'mcp' = 'a2a',
  ): Promise<T | 'timeout'> {
    const over = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => {
        over.abort();
        resolve('timeout');
      }, taskStoreTimeoutMs);
    });
    try {
      const r = await Promise.race([work(over.signal), deadline]);
      if (r === 'timeout') {
        logger.warn(
          { event: `${protocol}_task_registry_timeout`, route, timeout_ms: taskStoreTimeoutMs },
          `the ${protocol === 'a2a' ? 'A2A' : 'MCP'} task registry (the store) did not record the ids of a request or an answer in time; it was refused`,
        );
      }
      return r;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Record an answer's tasks and contexts as `owner`'s (the answer is relayed only once they are);
   * `seen`, what it named before, bounds them as for MCP ({@link tooManyIds}).
   */
  async function recordTasks(
    route: string,
    ids: { tasks: readonly string[]; contexts: readonly string[] },
    owner: string,
    ttlMs: number,
    limit: number,
    seen: Set<string>,
  ): Promise<'recorded' | 'foreign' | 'full' | 'unavailable' | 'timeout'> {
    const now = clock();
    // A longer id is not recorded: naming it later is refused.
    const named: [IdKind, string][] = [
      ...[...new Set(ids.tasks)].map((id): [IdKind, string] => ['task', id]),
      ...[...new Set(ids.contexts)].map((id): [IdKind, string] => ['context', id]),
    ].filter(([, id]) => id.length <= MAX_A2A_ID);
    // More than one answer is recorded for: refused before a store call starts.
    if (
      answerNamesTooMany(
        seen,
        named.map(([kind, id]) => `${kind} ${id}`),
        limit,
      )
    )
      return 'full';
    const claimed = async (): Promise<'recorded' | 'foreign' | 'full' | 'unavailable'> => {
      try {
        const claims = await Promise.all(named.map(([kind, id]) => taskOwners.claim(route, kind, id, owner, now, ttlMs, limit)));
        // Not relayed unrecorded: a context shown to its caller but recorded as no one's would go to
        // the next principal naming it.
        return claims.includes('foreign') ? 'foreign' : claims.includes('full') ? 'full' : 'recorded';
      } catch (e) {
        registryUnavailable(route, e);
        return 'unavailable';
      }
    };
    return withinDeadline(route, claimed);
  }

  /**
   * An A2A route (its public card aside): decide as on any route, then read the body (any method:
   * an upstream may read one anyway) to know whether it calls for the authenticated extended card
   * (JSON-RPC), as the path does for REST. Such a call's answer is rewritten like the public card
   * ({@link ExtendedCardForwardHandler}); other requests go on as they came, the body read already.
   */
  async function handleA2a(
    s: GatewayState,
    req: IncomingMessage,
    res: ServerResponse,
    x: Exchange,
    route: CompiledRoute,
    config: A2aConfig,
    greq: GatewayRequest,
    length: number,
  ): Promise<void> {
    /** The call's JSON-RPC id once its body is read (null: none, or a batch). */
    let rpcId: string | number | null | undefined;
    try {
      const decision = await decide(route.pipeline, greq);
      if (!decision.ok) {
        proceed(s, req, res, x, route, greq, decision, length);
        return;
      }
      // The refusals below are audited with who asked.
      if (decision.principal) x.principal = decision.principal;
      if (decision.rule) x.rule = decision.rule;
      // A HEAD answer has no card in it to rewrite (nor to leak).
      // The upstream's extended card, or its public card asked for in another spelling of its path.
      let card: ExtendedCardForm | undefined =
        greq.method !== 'HEAD' && isUpstreamCardPath(greq.path, config.card_path) ? 'rest' : undefined;
      let body: Buffer | undefined;
      let value: unknown;
      if (length > 0 || req.headers['transfer-encoding'] !== undefined) {
        // An upstream that inflates a compressed body (body-parser does) would read a call the gateway never saw.
        if (!isIdentityEncoding(req.headers['content-encoding'])) {
          refuseBody(x, res, 'a2a_content_encoding_refused');
          return;
        }
        // Likewise one that decodes another charset (body-parser takes `charset=utf-7`).
        if (!hasUtf8Charset(req.headers['content-type'])) {
          refuseBody(x, res, 'a2a_content_type_invalid');
          return;
        }
        const read = await readBody(req, route.maxBodySize);
        if (read === TOO_LARGE) {
          refuseBody(x, res, 'request_too_large');
          return;
        }
        body = read;
        x.bytesIn = read.length;
        const message = readA2aBody(read);
        if (!message.ok) {
          denyRpc(x, res, new TesseraError('a2a_message_invalid'), message.parse ? RPC_PARSE_ERROR : RPC_INVALID_REQUEST, null);
          return;
        }
        if (message.extendedCard) card = 'rpc';
        value = message.value;
        rpcId = rpcIdOf(value);
        // A webhook the agent would call from behind the gateway (a2a/push.ts).
        if (!config.allow_private_push_urls && refusedPushUrl(value, greq.path)) {
          denyRpc(x, res, new TesseraError('a2a_push_url_refused'), RPC_INVALID_PARAMS, rpcId);
          return;
        }
      }
      let record: RecordIds | undefined;
      // An extended-card call is checked too: the ids its body names are the caller's, whatever
      // method the upstream reads from it.
      if (config.bind_tasks) {
        // The HTTP+JSON binding names tasks in its paths (`/v1/tasks/{id}:cancel`): not read, so refused.
        if (isTaskPath(greq.path)) {
          deny(x, res, new TesseraError('a2a_task_path_refused'), route.authn.challenges);
          return;
        }
        const named = requestIds(value);
        if (!named.ok) {
          const rpc = named.reason === 'a2a_task_list_refused' ? RPC_UNSUPPORTED_OPERATION : RPC_INVALID_REQUEST;
          denyRpc(x, res, new TesseraError(named.reason), rpc, rpcIdOf(value));
          return;
        }
        const owner = taskOwner(decision.principal as Principal);
        const refused = await checkTasks(route.id, named, owner, config.task_ttl * 1000, config.max_tasks_per_principal);
        if (refused !== undefined) {
          denyRpc(
            x,
            res,
            new TesseraError(refused),
            refused === 'a2a_task_unknown' || refused === 'a2a_task_foreign' ? RPC_TASK_NOT_FOUND : RPC_SERVER_ERROR,
            rpcIdOf(value),
          );
          return;
        }
        const seen = new Set<string>();
        record = (ids) => recordTasks(route.id, ids, owner, config.task_ttl * 1000, config.max_tasks_per_principal, seen);
      }
      const endpoint = card === undefined ? undefined : cardEndpoint(s, req, route, requestHost(s, req));
      proceed(s, req, res, x, route, greq, decision, length, undefined, { body, card, endpoint, config, record, rpcId });
    } catch (e) {
      if (res.destroyed || callerGone(req)) {
        x.reason = 'client_closed';
        finish(x);
      } else internalError(x, res, e, rpcId);
    }
  }

  function refuseFraming(req: IncomingMessage, res: ServerResponse): void {
    const s = state;
    // An audited decision like any other (often an attempt at smuggling): with refuse it takes its
    // slot first, and while the queue is full it is refused 503 audit_unavailable instead of
    // answered 400 with its event dropped. Its connection is closed either way.
    const full = auditRefusal(req);
    if (full !== undefined) {
      closeAfter(res, full.headers);
      if (!res.headersSent && !res.destroyed) res.writeHead(full.status, full.headers).end(full.body);
      return;
    }
    const x = begin('gateway.request', req, true);
    x.secrets = requestSecrets(s, req);
    x.requestId = requestId(req.headers['x-request-id'], x.secrets);
    x.remoteAddress = remoteOf(s, req);
    // Refused before anything reads its body; the connection closed, so nothing behind it is read.
    x.path = auditRawPath(req.url ?? '/', x.secrets);
    deny(x, res, new TesseraError('request_framing_invalid'), s.challenges, true);
  }

  function handleRequest(req: IncomingMessage, res: ServerResponse): void {
    // Before anything else, the operations paths included: every request on the connection.
    if (!framingValid(req)) {
      refuseFraming(req, res);
      return;
    }
    const s = state;
    if (closing) res.shouldKeepAlive = false;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const g = s.gateway;
    const ops = g.operations;
    if (rawPath === ops.health_path || rawPath === ops.ready_path || rawPath === ops.metrics_path) {
      // Operations requests are not audited decisions: a body the listener refuses meanwhile is
      // counted by the listener (tessera_gateway_parser_refusals_total).
      markUnaudited(req);
      void serveOps(s, req, res, rawPath);
      return;
    }
    const forwardAuth = g.forward_auth.enabled && (rawPath === g.forward_auth.path || rawPath.startsWith(`${g.forward_auth.path}/`));
    // With refuse, a request that may be proxied takes two slots, as a WebSocket upgrade does: its
    // own event's, and its close's: whether its response will be an event stream (or a long
    // download) the gateway cuts later is the upstream's to say, after admission. A forward-auth
    // check opens no stream: one. With max_queue 1, one (closeSlots), so it fits an empty queue.
    const full = auditRefusal(req, forwardAuth, forwardAuth ? 1 : 2);
    if (full !== undefined) {
      refuseAuditFull(req, res, full);
      return;
    }
    const x = begin('gateway.request', req, true);
    x.closeSlot = x.auditSlot && closeSlots && !forwardAuth;
    x.secrets = requestSecrets(s, req);
    x.requestId = requestId(req.headers['x-request-id'], x.secrets);
    // The client address (walked back through gateway.trust_proxy), for audit, rate limits and policy.
    x.remoteAddress = remoteOf(s, req);
    if (forwardAuth) {
      handleForwardAuth(ctx, s, req, res, x);
      return;
    }
    const target = normalizeTarget(url);
    if (target === undefined) {
      x.path = auditRawPath(url, x.secrets);
      deny(x, res, new TesseraError('request_path_invalid'), s.challenges);
      return;
    }
    x.path = auditPath(target.path, target.query, x.secrets, s.auditSecretIndex);
    if (!hostHeaderValid(s, req)) {
      deny(x, res, new TesseraError('request_host_invalid'), s.challenges);
      return;
    }
    const host = requestHost(s, req);
    const method = x.method;
    if (method === 'GET' || method === 'HEAD') {
      const card = cardRoute(s, host, target.path);
      if (card) {
        void serveCard(s, x, req, res, card, host);
        return;
      }
      const metadata = metadataRoute(s, host, target.path);
      if (metadata) {
        serveMetadata(s, x, req, res, metadata);
        return;
      }
    }
    const route = findRoute(s, host, target.path, method);
    if (route === undefined) {
      deny(x, res, new TesseraError('route_not_found'), s.challenges);
      return;
    }
    if (route === 'path_invalid') {
      deny(x, res, new TesseraError('request_path_invalid'), s.challenges);
      return;
    }
    x.route = route.id;
    const cl = req.headers['content-length'];
    const length = cl === undefined ? 0 : Number(cl);
    if (length > route.maxBodySize) {
      // On an MCP or A2A route as their other body refusals are (handleMcp, handleA2a): a JSON-RPC error, the body unread.
      if (route.mcp !== undefined || route.a2a !== undefined) refuseBody(x, res, 'request_too_large');
      else deny(x, res, new TesseraError('request_too_large'), route.authn.challenges, true);
      return;
    }
    const greq: GatewayRequest = {
      method,
      host,
      path: target.path,
      query: target.query,
      url: absoluteUrl(s, req),
      headers: headerBag(req),
      remoteAddress: x.remoteAddress,
    };
    if (route.mcp !== undefined) {
      void handleMcp(s, req, res, x, route, route.mcp, greq, length);
      return;
    }
    if (route.a2a !== undefined) {
      void handleA2a(s, req, res, x, route, route.a2a.config, greq, length);
      return;
    }
    const decision = decide(route.pipeline, greq);
    if (decision instanceof Promise) {
      decision.then(
        (d) => proceed(s, req, res, x, route, greq, d, length),
        (e: unknown) => internalError(x, res, e),
      );
    } else proceed(s, req, res, x, route, greq, decision, length);
  }

  /**
   * A request the gateway failed to handle: 500, nothing of the error in the answer. A JSON-RPC
   * call whose body was read (`rpcId`: its id, null when it has none) gets the JSON-RPC internal
   * error (-32603) echoing it, which a JSON-RPC client reads as the call's failure.
   */
  function internalError(x: Exchange, res: ServerResponse, error: unknown, rpcId?: string | number | null): void {
    logger.error({ event: 'internal_error', request_id: x.requestId, error: (error as Error)?.name ?? 'error' }, 'request failed');
    x.decision = 'deny';
    x.reason = 'internal_error';
    x.status = 500;
    if (rpcId !== undefined) writeRpcError(x, res, 500, RPC_INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE, rpcId);
    else if (!res.headersSent && !res.destroyed) {
      res.writeHead(500, { 'content-type': 'application/json', 'x-request-id': x.requestId });
      res.end('{"error":"server_error"}');
    }
    finish(x);
  }

  function proceed(
    s: GatewayState,
    req: IncomingMessage,
    res: ServerResponse,
    x: Exchange,
    route: CompiledRoute,
    greq: GatewayRequest,
    decision: Decision,
    length: number,
    mcp?: McpForward,
    a2a?: A2aForward,
  ): void {
    if (decision.principal) x.principal = decision.principal;
    if (decision.rule) x.rule = decision.rule;
    if (!decision.ok) {
      const e = decision.error;
      // An MCP call refused after its body was read, for another reason than its token or its
      // rights (an upstream credential not obtainable): the JSON-RPC error its client reads. A 401
      // or 403 keeps its challenge, which MCP clients' authorization flow acts on.
      if (mcp?.rpcId !== undefined && e.status !== 401 && e.status !== 403) denyRpc(x, res, e, upstreamRpcCode(e.code), mcp.rpcId);
      else deny(x, res, e, mcp === undefined ? route.authn.challenges : mcp.challenges);
      return;
    }
    if (res.destroyed) {
      x.decision = 'allow';
      x.reason = 'client_closed';
      finish(x);
      return;
    }
    x.decision = 'allow';
    // A body read already (MCP) goes as it came, with its length (a chunked upload becomes a sized one).
    const read = mcp?.body ?? a2a?.body;
    if (read !== undefined) decision.headers['content-length'] = String(read.length);
    // The upstream gets its own session id, without the gateway's MAC.
    if (mcp?.sessionId !== undefined) decision.headers['mcp-session-id'] = mcp.sessionId;
    if (mcp?.lastEventId !== undefined) decision.headers['last-event-id'] = mcp.lastEventId;
    const headers = upstreamHeaders(s, req, route, decision, x);
    // An MCP event stream's ids are signed as they pass (mcp/events.ts): it must come plain.
    if (mcp !== undefined) headers['accept-encoding'] = 'identity';
    // An A2A answer is read for the tasks it names (a2a/forward.ts): it must come plain.
    if (a2a?.record !== undefined) headers['accept-encoding'] = 'identity';
    if (a2a?.card !== undefined) {
      // The extended card is rewritten, so it must come whole and plain: not compressed, not a
      // range of it, not a 304 to a copy the caller kept from before.
      headers['accept-encoding'] = 'identity';
      for (const name of ['range', 'if-range', 'if-none-match', 'if-modified-since']) delete headers[name];
    }
    let body: IncomingMessage | AsyncIterable<Uint8Array> | Buffer | null = null;
    if (read !== undefined) body = read;
    else if (req.headers['transfer-encoding'] !== undefined) {
      body = limitedBody(req, route.maxBodySize, (n) => {
        x.bytesIn += n;
      });
    } else if (length > 0) {
      body = req;
      countRead(req, x);
    }
    const proxied = new ProxiedRequest(
      x,
      req,
      res,
      route,
      decision.principal,
      decision.headers,
      s.admission,
      greq,
      mcp?.rpc,
      mcp?.presentedSession,
    );
    proxied.toolsListId = mcp?.toolsList?.id;
    proxied.rpcId = a2a?.rpcId ?? mcp?.rpcId;
    const options = {
      dispatcher: route.upstream.dispatcher,
      method: greq.method,
      path: upstreamPath(route, greq.path, mcp?.query ?? greq.query),
      headers,
      body,
      headersTimeout: route.upstream.headersTimeout,
      bodyTimeout: route.upstream.bodyTimeout,
      // A fresh DPoP nonce when the caller's is about to expire (RFC 9449 §9); an upstream's own
      // DPoP-Nonce never reaches the caller (callerResponseHeaders).
      responseHeaders:
        decision.dpopNonce === undefined ? ['x-request-id', x.requestId] : ['x-request-id', x.requestId, 'dpop-nonce', decision.dpopNonce],
      ownCredential: route.upstream.ownCredential,
    };
    // The request a POST's event stream answers (not a notification's, not a response's): its error may end the stream.
    const request = mcp?.rpc?.method != null && mcp.rpcId != null ? mcp.rpcId : undefined;
    if (mcp?.listTasks !== undefined)
      proxied.handler = forwardWith(
        new TaskListForwardHandler(
          res,
          proxied,
          options.responseHeaders,
          mcp.sign,
          mcp.listTasks.own,
          mcp.listTasks.seal,
          options.ownCredential,
          mcp.toolsList,
          request,
        ),
        options,
      );
    else if (mcp?.record !== undefined)
      proxied.handler = forwardWith(
        new TaskCreateForwardHandler(
          res,
          proxied,
          options.responseHeaders,
          mcp.sign,
          mcp.record,
          options.ownCredential,
          mcp.toolsList,
          undefined,
          request,
        ),
        options,
      );
    else if (mcp !== undefined)
      proxied.handler = forwardWith(
        new SessionForwardHandler(res, proxied, options.responseHeaders, mcp.sign, options.ownCredential, mcp.toolsList, request),
        options,
      );
    else if (a2a?.card !== undefined) {
      const handler = new ExtendedCardForwardHandler(
        res,
        proxied,
        options.responseHeaders,
        a2a.card,
        a2a.config,
        options.ownCredential,
        a2a.endpoint,
      );
      proxied.handler = forwardWith(handler, options);
    } else if (a2a?.record !== undefined) {
      const handler = new TaskForwardHandler(
        res,
        proxied,
        options.responseHeaders,
        a2a.record,
        options.ownCredential,
        a2a.config.max_answer_size,
        // A call's answer is parsed as JSON by clients whatever its label or status: read it so.
        greq.method !== 'GET' && greq.method !== 'HEAD',
        a2a.rpcId,
      );
      proxied.handler = forwardWith(handler, options);
    } else proxied.handler = forward(res, options, proxied);
    // Every exchange in flight is watched, not only streams: a long upload or a long download with
    // a Content-Length outlives a revocation as well as an event stream does. Shutdown still leaves
    // plain requests to finish (`closeAll(…, true)`). Before the response starts, a caller that went
    // away is noticed when the head arrives (onHeaders checks `res.destroyed`).
    if (!x.done) proxied.untrack = streams.add(proxied);
  }

  /**
   * One proxied request after the decision: the forwarder's callbacks, and the stream the
   * registry may close on revocation, expiry or a reload. A class rather than closures: this is
   * the hot path.
   */
  class ProxiedRequest implements ForwardCallbacks, AdmittedStream {
    readonly kind = 'http' as const;
    streaming = false;
    handler: ForwardHandle | undefined = undefined;
    untrack: (() => void) | undefined = undefined;
    closedBy: StreamCloseReason | undefined = undefined;
    /** The upstream's response head has arrived. */
    responded = false;
    /** The id of a tools/list whose answer is filtered (its refusal echoes it); `undefined` otherwise. */
    toolsListId: string | number | null | undefined = undefined;
    /**
     * The id of the JSON-RPC call (an A2A or MCP route's, its body read) a refusal of its upstream
     * exchange echoes in a JSON-RPC error; `undefined`: no call, the plain error body.
     */
    rpcId: string | number | null | undefined = undefined;
    readonly x: Exchange;
    readonly req: IncomingMessage;
    readonly res: ServerResponse;
    readonly route: CompiledRoute;
    /** The caller's authority, which revocation, expiry or a reload can end; none on a public route. */
    readonly principal: Principal | undefined;
    /** The decision's headers (the injected credential among them), for a 401 to forget it. */
    readonly sent: Readonly<Record<string, string>>;
    /** What it was decided under and for, to decide it again on a reload. */
    readonly admission: Admission;
    readonly request: GatewayRequest;
    readonly rpc: RpcFacts | undefined;
    readonly session: string | undefined;

    constructor(
      x: Exchange,
      req: IncomingMessage,
      res: ServerResponse,
      route: CompiledRoute,
      principal: Principal | undefined,
      sent: Readonly<Record<string, string>>,
      admission: Admission,
      request: GatewayRequest,
      rpc: RpcFacts | undefined,
      session: string | undefined,
    ) {
      this.x = x;
      this.req = req;
      this.res = res;
      this.route = route;
      this.principal = principal;
      this.sent = sent;
      this.admission = admission;
      this.request = request;
      this.rpc = rpc;
      this.session = session;
    }

    onClientClose(): void {
      if (!this.x.done && !this.res.writableFinished) this.handler?.abort(new StreamClosed(callerClosed(this.res)));
    }

    close(reason: StreamCloseReason): void {
      this.closedBy = reason;
      // Before the response, the request's own event becomes the refusal (onFailure; finish gives
      // the close slot back); after it, the request was allowed and answered, and the close is a
      // decision of its own, in the slot reserved for it at admission.
      if (this.responded) {
        const slot = this.x.closeSlot;
        this.x.closeSlot = false;
        streamClosedEvent(this.x, this.principal, reason, slot);
      }
      this.handler?.abort(new StreamClosed(reason));
    }

    onResponse(status: number, streaming: boolean): void {
      this.responded = true;
      this.x.upstreamStatus = status;
      this.x.status = status;
      this.streaming = streaming;
      // A streamed response (SSE, chunked) may never end by itself: watch for the caller going away.
      // (Revocation, expiry and shutdown watch every exchange from its dispatch.)
      if (streaming) this.res.once('close', () => this.onClientClose());
      // Shutdown closed the streams open when it began; one starting during the drain would hold
      // it to drain_timeout. Closed once the head is out (not from inside the forwarder's callback).
      if (streaming && closing) setImmediate(() => streams.closeAll('shutdown', true));
    }

    onEnd(bytesOut: number, error?: unknown): void {
      this.untrack?.();
      const x = this.x;
      x.bytesOut = bytesOut;
      if (error !== undefined) {
        if (error instanceof StreamClosed) (x.detail ??= {}).closed = error.reason;
        else {
          // A tools/list stream cut: an event read as a notification turned out to carry a result.
          const f = upstreamFailure(error);
          if (error instanceof ToolsListInvalid) toolsListInvalid(x, this.route, true, error.code === 'mcp_upstream_task_list_refused');
          else metrics.upstreamError(this.route.id, f.kind);
          // A legacy HTTP+SSE endpoint event whose session could not be bound (mcp/legacy.ts).
          if (error instanceof UpstreamSessionInvalid)
            logger.warn(
              { event: 'upstream_error', reason_id: f.code, route: this.route.id, kind: f.kind, request_id: x.requestId, stream_cut: true },
              'the upstream sent an endpoint event whose session the gateway cannot bind (or naming a path the route does not serve); the stream was cut',
            );
          (x.detail ??= {}).upstream_error = f.kind;
        }
      }
      finish(x);
    }

    onFailure(error: unknown, bytesOut: number): void {
      this.untrack?.();
      const { x, res, route } = this;
      x.bytesOut = bytesOut;
      // Also when the caller went away meanwhile: the next request must not send it again.
      if (error instanceof UpstreamCredentialRejected) credentialRejected(x, route, this.sent);
      // Audited with what the upstream sent, though none of it was relayed.
      if (error instanceof UpstreamStatusInvalid) x.upstreamStatus = error.status;
      const closedBy = this.closedBy;
      if (error instanceof BodyTooLarge) {
        deny(x, res, new TesseraError('request_too_large'), route.authn.challenges, true);
      } else if (error instanceof ToolsListInvalid && !res.destroyed) {
        // A JSON-RPC error, as the caller's client reads one, echoing the request's id; nothing of the upstream's answer.
        toolsListInvalid(x, route, res.headersSent, error.code === 'mcp_upstream_task_list_refused');
        x.reason = error.code;
        x.status = 502;
        writeRpcError(x, res, 502, RPC_SERVER_ERROR, TOOLS_LIST_ERROR_MESSAGE, this.toolsListId ?? null);
        finish(x);
      } else if (error instanceof StreamClosed && error.reason !== 'client_closed' && closedBy !== undefined && closedBy !== 'shutdown') {
        // An upload cut halfway: close the connection rather than read the rest of its body.
        const details =
          closedBy === 'introspection_unavailable'
            ? { retryAfter: INTROSPECTION_RETRY_AFTER }
            : closedBy === 'revocation_unavailable' || closedBy === 'revocation_state_stale'
              ? { retryAfter: REVOCATION_RETRY_AFTER }
              : {};
        deny(x, res, new TesseraError(closedBy, details), route.authn.challenges, !this.req.complete);
      } else if (error instanceof StreamClosed || res.destroyed || callerGone(this.req)) {
        x.reason = error instanceof StreamClosed && error.reason === 'shutdown' ? 'shutdown' : 'client_closed';
        if (x.reason === 'shutdown') upstreamError(x, res, route, error, this.rpcId);
        else finish(x);
      } else upstreamError(x, res, route, error, this.rpcId);
    }
  }

  const ctx: GatewayContext = {
    get state() {
      return state;
    },
    get closing() {
      return closing;
    },
    clock,
    logger,
    metrics,
    streams,
    auditRefusal,
    closeSlots,
    begin,
    finish,
    denyRendering,
    deny,
    streamClosedEvent,
    releaseAuditSlot: () => audit.release(),
    credentialRejected,
    internalError,
  };

  // ---- operations ----

  function serveOps(s: GatewayState, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const ops = s.gateway.operations;
    // The client's address, not the socket's: behind a proxy on loopback or a private network
    // every caller would otherwise share the proxy's address and pass (and so would one a trusted
    // proxy names in a form that is no address, or any an untrusted one relays).
    const operator = path !== ops.health_path && peerAllowed(s.metricsPeers, allowlistClientOf(s, req));
    return answerOperations(
      res,
      { method: req.method, path, operator },
      {
        ops,
        registry,
        notFound: (r) => writeJson(r, 404, { error: 'not_found', error_description: 'No route matches this request.' }),
        ready: () =>
          readiness(
            s.verifiers,
            {
              depth: auditStats().depth,
              max: maxQueue,
              ...(refuseWhenFull ? { refusing: auditFull(), dropped: audit.stats.dropped } : {}),
            },
            sinks.some((o) => o.kind === 'stdout') ? [stdoutCheck, ...(deps.readiness ?? [])] : (deps.readiness ?? []),
            closing,
            ops.jwks_max_stale * 1000,
          ),
      },
    );
  }

  // ---- lifecycle ----

  function refuseReload(error: ConfigError): ReloadResult {
    metrics.reload(false);
    logger.error({ event: 'config_reload_refused', problems: error.issues.length }, error.message);
    return { ok: false, error };
  }

  function reload(next: TesseraConfig): ReloadResult {
    let compiled: GatewayState;
    try {
      compiled = compileGateway(next, compileDeps, state);
    } catch (e) {
      pools.retain(state.poolKeys);
      if (e instanceof ConfigError) return refuseReload(e);
      metrics.reload(false);
      throw e;
    }
    const previous = state;
    for (const v of previous.verifiers) {
      metrics.retireVerifierCache(v.stats.cacheHits, v.stats.cacheMisses);
      v.retire?.();
    }
    state = compiled;
    // A route's cache taken over at another cache_size is resized now, in the tick of the swap: the
    // mints under way end in it (not in the one the old configuration had), and a reload refused
    // above leaves it as it was.
    for (const r of compiled.routes) if (r.exchange !== undefined) takeOverExchange(r.exchange);
    // Before the streams are decided again: an exchange the reload cuts is then no longer recorded
    // under a route that is gone.
    metrics.routes(compiled.routes.map((r) => r.id));
    memoryReplay?.resize(next.dpop.replay_cache_size);
    // A static token rotated out, an issuer no longer trusted, a rule or a route narrowed: whoever
    // it no longer allows is cut off now, not only on its next request (revocation's mechanics:
    // 1008, end of stream, 401 or 403 before the response).
    streams.reconfigure(recheckUnder(compiled));
    // Introspected tokens in flight are asked about through the new verifier, at the new interval.
    streams.revalidateEvery(reintrospectionInterval(next), reintrospectUnder(compiled, unanswered));
    for (const v of compiled.verifiers) void v.ready();
    pools.retain(compiled.poolKeys);
    // An audit file is reopened on every reload, changed or not: SIGHUP after a rotation
    // (logrotate's `postrotate`) then starts a new file instead of writing to the renamed one.
    if (compiled.audit?.file !== undefined || JSON.stringify(previous.audit ?? null) !== JSON.stringify(compiled.audit ?? null)) {
      const old = sinks;
      sinks = auditOutputs(compiled.audit, resumes, deps.auditStdout, auditFileReopened);
      void audit.flush().then(() => Promise.all(old.map((o) => o.sink.close())));
    }
    for (const w of compiled.warnings) logger.warn({ event: 'config_warning' }, w);
    metrics.reload(true);
    logger.info({ event: 'config_reloaded', routes: compiled.routes.length }, 'configuration reloaded');
    return { ok: true, warnings: compiled.warnings };
  }

  async function close(options: GatewayCloseOptions = {}): Promise<void> {
    if (closing) return;
    closing = true;
    const deadline = options.deadline ?? new ShutdownDeadline(options.drainTimeoutMs ?? state.gateway.drain_timeout * 1000);
    // Streams never finish by themselves: close them now, cleanly.
    streams.closeAll('shutdown', true);
    if (inflight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline.drainLeft());
        timer.unref();
        drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    await deadline.drained();
    streams.closeAll('shutdown');
    streams.stop();
    await pools.close(inflight > 0);
    // The audit events still queued get what the drain left of the one deadline (at least the
    // floor): a store that refuses them is retried, an output that does not answer (a hung disk)
    // is given up on then. Not drain_timeout again: a stage each would outlast the grace period.
    const left = () => deadline.auditLeft();
    const queued = await audit.close({ timeoutMs: left() });
    reportDropped();
    let stored = 0;
    for (const s of holders) stored = Math.max(stored, await s.close({ timeoutMs: left() }));
    await within(Promise.all(sinks.map((o) => o.sink.close())), left());
    // A batch handed to the store is in both counts when the pipeline gave up waiting for it.
    const lost = queued.queued + Math.max(queued.writing, stored);
    if (lost > 0) {
      const { message, ...fields } = auditEventsLost('gateway', lost);
      logger.error(fields, message);
    }
  }

  return {
    handleRequest,
    refuseFraming,
    handleCheckContinue: continueOnRead(handleRequest),
    handleUpgrade: (req, socket, head) => handleUpgrade(ctx, req, socket, head),
    reload,
    refuseReload,
    close,
    get state() {
      return state;
    },
    audit,
    registry,
    logger,
    get inflight() {
      return inflight;
    },
    refusedByParser: (status) => metrics.refusedByParser(status),
    refusedConnection: (reason) => metrics.refusedConnection(reason),
    sendTimedOut: (kind) => metrics.sendTimedOut(kind),
  };
}
