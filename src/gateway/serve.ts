/**
 * `serveGateway`: a gateway on its own `node:http` server, for `tessera gateway`, tests and
 * benchmarks. It applies the connection limits, reloads on SIGHUP and when the configuration file
 * changes, and shuts down gracefully. (`tessera serve` mounts `createGateway` next to the token
 * service instead.)
 *
 * @module
 */
import { existsSync, readFileSync, realpathSync, statSync, watch } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { BlockList, Socket } from 'node:net';
import { dirname, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { type ListenerLimits, listenerLimitsSchema } from '../config/listener-schema.ts';
import { loadConfigFile, resolveConfigPaths } from '../config/load.ts';
import type { TesseraConfig } from '../config/schema.ts';
import { ConfigError, ERROR_CODES } from '../core/errors.ts';
import { peerAllowed, peerList } from '../core/peers.ts';
import { addressKey } from '../core/ratelimit.ts';
import { isAudited, markBodyRefused, refusedByParser } from '../server/body-invalid.ts';
import { endConnection } from '../server/close-unread.ts';
import { continueOnRead } from '../server/expect-continue.ts';
import { listenUrl } from '../server/listen.ts';
import { markUpgraded, type SendLimit, type SendTimeoutKind, watchSends } from '../server/send-timeout.ts';
import { ShutdownDeadline } from '../server/shutdown.ts';
import { createGateway, type Gateway, type GatewayDeps, type ReloadResult } from './gateway.ts';
import type { ConnectionRefusal, ParserRefusal } from './metrics.ts';
import { framingValid } from './requests.ts';

/** Options of {@link serveGateway}: the configuration (or its file) and the listener. */
export interface ServeOptions {
  /** A loaded configuration; or give `configFile`. */
  readonly config?: TesseraConfig;
  /** Configuration file: loaded now, reloaded on SIGHUP and (with `gateway.watch_config`) on change. */
  readonly configFile?: string;
  /** Environment for `${VAR}` in the file (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Override `server.host` / `server.port` (tests use port 0). */
  readonly host?: string;
  readonly port?: number;
  /** Install SIGHUP (reload) and SIGTERM/SIGINT (shutdown) handlers. Default false. */
  readonly signals?: boolean;
  /** How a reload reads the configuration (default: `configFile` with `env`). */
  readonly load?: () => TesseraConfig;
  /**
   * A handler mounted in front of the gateway on the same listener (the token service in
   * `tessera serve`): it answers the paths it owns and returns `false` for the rest.
   */
  readonly before?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /**
   * How the handler in front refuses a request whose framing the listener does not accept (see
   * {@link createListener}): it answers the paths it owns and returns `false` for the rest, which
   * the gateway refuses.
   */
  readonly refuseFraming?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /**
   * Runs after the gateway has drained and written its audit events, before `close()` resolves
   * (closing the token service), with what is left of the shutdown's deadline for its own.
   */
  readonly onClose?: (left: { readonly auditTimeoutMs: number }) => Promise<void>;
  /**
   * Runs before a reload applies anything (SIGHUP, file change or `reload(config)`), with the
   * configuration to apply: builds what `onReload` will apply beside the gateway. A throw refuses
   * the reload whole (a {@link ConfigError} with its problems), so the gateway and what runs beside
   * it never go on under two configurations.
   */
  readonly prepare?: (config: TesseraConfig) => void;
  /** Runs after every reload the gateway accepted (SIGHUP, file change or `reload()`), with the new configuration. */
  readonly onReload?: (config: TesseraConfig) => void;
}

/** A gateway serving on its own listener, as {@link serveGateway} started it. */
export interface ServedGateway {
  readonly gateway: Gateway;
  readonly server: Server;
  /** `http://host:port` */
  readonly url: string;
  /** Reload from `configFile` (or apply `config`). */
  reload(config?: TesseraConfig): ReloadResult;
  /**
   * Stop within one deadline (`drainTimeoutMs`, default `gateway.drain_timeout`, from now):
   * requests in flight get until then, the audit events what is left of it and at least 1 s (or
   * `drainTimeoutMs`, when shorter) after the drain ended; see {@link Gateway.close}.
   */
  close(options?: { drainTimeoutMs?: number }): Promise<void>;
}

/**
 * A changed file is applied once two reads this far apart find the same bytes (and a read after
 * loading it still does); one still changing after SETTLE_ROUNDS reads is reported.
 */
const SETTLE_MS = 250;
const SETTLE_ROUNDS = 10;

/**
 * How often the file the configuration path resolves to (its symlinks followed) is looked at: a
 * symlink swapped to another file that stays (`ln -sfn releases/v2 current`) changes nothing the
 * watch is on, which is the old file.
 */
const FOLLOW_MS = 1000;

function resolved(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

function readBytes(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

/** When the file (its symlinks followed) last changed, content or metadata (ctime: no writer sets it). */
function changedAt(path: string): number | undefined {
  try {
    return statSync(path).ctimeMs;
  } catch {
    return undefined;
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

export type { ListenerLimits };

/**
 * The limits of a listener without a `gateway` section and without `token_service.limits` (the
 * token service alone): their defaults, the same as `gateway.limits`’, so a client trickling its
 * request head (slowloris) or opening connections without end is cut as it is at the gateway, not
 * after Node's defaults (60 s for the head, checked every 30 s, and no connection limit).
 */
export const DEFAULT_LISTENER_LIMITS: ListenerLimits = Object.freeze(listenerLimitsSchema.parse({}));

/**
 * The per-address connection limit of a listener, changed in place by {@link applyLimits} (a
 * reload): `max` (0: none) and the peers it does not hold to it (the proxies in front).
 */
interface AddressLimit {
  max: number;
  exempt: BlockList | undefined;
}

const addressLimits = new WeakMap<Server, AddressLimit>();

/** The send timeout of a listener, changed in place by {@link applyLimits}. */
const sendLimits = new WeakMap<Server, SendLimit>();

function applyLimits(server: Server, limits: ListenerLimits | undefined, exempt?: BlockList): void {
  if (!limits) return;
  server.maxConnections = limits.max_connections;
  server.headersTimeout = limits.headers_timeout * 1000;
  server.requestTimeout = limits.request_timeout * 1000;
  server.keepAliveTimeout = limits.keep_alive_timeout * 1000;
  const send = sendLimits.get(server);
  if (send !== undefined) send.ms = limits.send_timeout * 1000;
  const perAddress = addressLimits.get(server);
  if (perAddress !== undefined) {
    perAddress.max = limits.max_connections_per_address;
    perAddress.exempt = exempt;
  }
}

/**
 * Where a listener's connection refusals go: `count` each one (the gateway's
 * `tessera_gateway_connections_refused_total`), and `warn` of them (a logger's warn) under the
 * section the limits are configured in (`at`: `gateway.limits`, `token_service.limits`).
 */
export interface ConnectionRefusals {
  readonly at: 'gateway.limits' | 'token_service.limits';
  readonly warn: (fields: Record<string, unknown>, message: string) => void;
  readonly count?: (reason: ConnectionRefusal) => void;
  /** Count each connection cut by `send_timeout` (the gateway's `tessera_gateway_send_timeouts_total`). */
  readonly sendTimedOut?: (kind: SendTimeoutKind) => void;
}

/**
 * At most one `connections_refused` line per reason this often: a client opening connections
 * without end past a limit would otherwise write one line per connection.
 */
export const REFUSAL_LOG_MS = 10_000;

/**
 * Count each refusal, and warn of the first at once and of those that follow in one line per
 * {@link REFUSAL_LOG_MS} and reason, with how many there were (`refused`) and the address of the
 * last (an IPv6 address by its /64); the limit by its configuration path and value. Nothing else
 * of the connection (no port) is said.
 */
function reportRefusals(
  server: Server,
  refusals: ConnectionRefusals | undefined,
): (reason: ConnectionRefusal, address: string | undefined) => void {
  const windows = new Map<ConnectionRefusal, { refused: number; address: string; timer: NodeJS.Timeout }>();
  const limitOf = (reason: ConnectionRefusal) => (reason === 'per_address' ? (addressLimits.get(server)?.max ?? 0) : server.maxConnections);
  const warn = (reason: ConnectionRefusal, refused: number, address: string) => {
    const limit = `${refusals?.at}.${reason === 'per_address' ? 'max_connections_per_address' : 'max_connections'}`;
    const max = limitOf(reason);
    refusals?.warn(
      { event: 'connections_refused', reason, limit, max, refused, address },
      `${refused === 1 ? 'a connection' : `${refused} connections`} closed unanswered: past ${limit} (${max})`,
    );
  };
  const flush = (reason: ConnectionRefusal): void => {
    const w = windows.get(reason);
    if (w === undefined) return;
    if (w.refused === 0) {
      windows.delete(reason);
      return;
    }
    warn(reason, w.refused, w.address);
    w.refused = 0;
    w.timer = setTimeout(() => flush(reason), REFUSAL_LOG_MS);
    w.timer.unref();
  };
  // Closed: what is still to be said is said now.
  server.once('close', () => {
    for (const [reason, w] of windows) {
      clearTimeout(w.timer);
      if (w.refused > 0) warn(reason, w.refused, w.address);
    }
    windows.clear();
  });
  return (reason, address) => {
    refusals?.count?.(reason);
    if (refusals === undefined) return;
    const key = address === undefined ? 'unknown' : addressKey(address);
    const w = windows.get(reason);
    if (w !== undefined) {
      w.refused++;
      w.address = key;
      return;
    }
    warn(reason, 1, key);
    const timer = setTimeout(() => flush(reason), REFUSAL_LOG_MS);
    timer.unref();
    windows.set(reason, { refused: 0, address: key, timer });
  };
}

/**
 * Count each connection against its address (an IPv6 address by its /64, as the rate limits key
 * it; an IPv4-mapped one as its IPv4 address) and close at once, before a byte of it is read, one
 * past `max_connections_per_address`: without it one client holds every one of `max_connections`
 * with idle or trickling connections, each cut only after `headers_timeout`, and opened again.
 * Every connection is counted, a proxy’s too, so that a reload changing the limit or the proxies
 * counts the connections already open. Each connection counted is let go on its 'close', which
 * every socket emits once however it ends.
 */
function limitPerAddress(server: Server, refused: (reason: ConnectionRefusal, address: string | undefined) => void): void {
  const limit: AddressLimit = { max: 0, exempt: undefined };
  addressLimits.set(server, limit);
  const open = new Map<string, number>();
  // Ahead of the HTTP server's own listener: a connection refused gets no parser and no timers.
  server.prependListener('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    // Reset before it was accepted: nothing to count.
    if (address === undefined) return;
    const key = addressKey(address);
    const n = (open.get(key) ?? 0) + 1;
    if (limit.max > 0 && n > limit.max && !(limit.exempt !== undefined && peerAllowed(limit.exempt, address))) {
      socket.destroy();
      refused('per_address', address);
      return;
    }
    open.set(key, n);
    socket.once('close', () => {
      const left = (open.get(key) ?? 1) - 1;
      if (left === 0) open.delete(key);
      else open.set(key, left);
    });
  });
  // Past max_connections Node closes the connection itself, before any 'connection'.
  server.on('drop', (data?: { remoteAddress?: string }) => refused('max_connections', data?.remoteAddress));
}

/**
 * The answer to a request whose framing the listener refuses, when no handler answers it in its
 * own shape: 400 `invalid_request` (RFC 6749 §5.2 shape), the connection closed.
 */
function writeFramingRefusal(res: ServerResponse): void {
  const spec = ERROR_CODES.request_framing_invalid;
  const body = JSON.stringify({ error: spec.error, error_description: spec.description });
  res.writeHead(spec.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    connection: 'close',
  });
  res.end(body);
}

/**
 * An HTTP server with the listener limits applied: head size, connection count (in all and per
 * address, the peers in `proxies` held only to the first), head and request timeouts checked
 * every second, keep-alive; a malformed, oversized or timed-out request head is
 * answered 400, 431 or 408 and its connection closed, a CONNECT 501, an `Expect` other than
 * `100-continue` 417; `Expect: 100-continue` is answered when the handler reads the body. `onRefused` is told the status of each request refused
 * before any handler saw it (those have no audit event), `refusals` of each connection closed
 * unanswered past a connection limit (see {@link ConnectionRefusals}).
 *
 * Every request's framing is checked here, before any handler, whatever its path
 * (`framingValid`: HTTP/1.1 or HTTP/1.0, a Transfer-Encoding only on HTTP/1.1 and only `chunked`).
 * One it refuses is handed to `refuseFraming` instead of `onRequest`, its connection already set
 * to close (so nothing sent behind it is read as a request): it answers 400 in its handler's shape
 * and audits it, or returns `false` for the listener's plain 400 `invalid_request`.
 *
 * `onUpgrade` is the server's 'upgrade' handler: an upgrade pipelined behind requests still being
 * answered is handed to it once their answers are written.
 */
export function createListener(
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
  limits: ListenerLimits | undefined,
  onRefused?: (status: ParserRefusal) => void,
  refuseFraming?: (req: IncomingMessage, res: ServerResponse) => boolean,
  onUpgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
  proxies?: BlockList,
  refusals?: ConnectionRefusals,
): Server {
  // A pipelined request (RFC 9112 §9.3.2) is handled once the answer ahead of it is written, as
  // Node sends them: its response is queued without a socket until then. Behind an answer that
  // closed the connection (a 413 with the body unread, a refused framing, `connection: close`),
  // Node still hands the request over, on a socket that can carry no answer any more: it is never
  // handled (§9.6: no request after close is processed), where the gateway would forward it
  // upstream and write its answer nowhere.
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const socket = res.socket;
    if (socket === null) res.once('socket', () => handle(req, res));
    else if (socket.writableEnded || socket.destroyed) socket.destroy();
    else if (framingValid(req)) onRequest(req, res);
    else {
      res.shouldKeepAlive = false;
      if (!refuseFraming?.(req, res)) writeFramingRefusal(res);
    }
  };
  const server = createServer(
    {
      maxHeaderSize: limits?.max_header_size ?? 16 * 1024,
      noDelay: true,
      // The gateway reads absolute-form targets as invalid paths; no HTTP/0.9 or lenient parsing.
      insecureHTTPParser: false,
      requireHostHeader: true,
      // How often Node looks for connections past headers_timeout / request_timeout. Its default
      // (30 s) lets a client trickling its request head (slowloris) hold a connection up to 30 s
      // past the configured limit; checked every second, the limits hold to within a second.
      connectionsCheckingInterval: 1000,
    },
    handle,
  );
  // `Expect: 100-continue` (RFC 9110 §10.1.1): 100 once the body is read (by the gateway after
  // its decision, or by the handler in front), never for a request refused first.
  server.on('checkContinue', continueOnRead(handle));
  // Any other expectation (RFC 9110 §10.1.1): 417 before any handler, as Node answers it without
  // a listener, but counted as the other requests refused here (Node's own 417 went unseen) and
  // the connection closed, its body never read.
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    onRefused?.(417);
    res.shouldKeepAlive = false;
    res.writeHead(417, { 'content-length': '0' }).end();
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const answering = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
    // Bytes after a request that closes the connection (`Connection: close`, HTTP/1.0 without
    // keep-alive): no request is read from them (RFC 9112 §9.6). The request ahead is answered and
    // the connection then closed; a 400 written now would take the place of that answer.
    if (err.code === 'HPE_CLOSED_CONNECTION') {
      if (answering == null) socket.destroy();
      return;
    }
    // A request timeout can strike while its answer is being sent (a client still sending a body
    // the upstream already answers): a 408 written then would land inside that answer. Cut, as
    // Node's own handler does.
    if (socket.writable && !socket.destroyed && !answering?.headersSent) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      // A body refused after its head went to a handler (a bad chunk, even in the head's packet),
      // or still arriving at request_timeout: the 400 or 408 is its answer, which that handler
      // audits and counts (request_body_invalid, request_timeout).
      const reading = (socket as { parser?: { incoming?: IncomingMessage | null } | null }).parser?.incoming;
      const holder = reading != null && !reading.complete && answering?.req === reading ? reading : undefined;
      // A request no handler audits (an operations path) is counted here all the same.
      const reason =
        holder === undefined
          ? undefined
          : status === 400 && refusedByParser(err)
            ? 'request_body_invalid'
            : status === 408
              ? 'request_timeout'
              : undefined;
      if (holder !== undefined && reason !== undefined) markBodyRefused(holder, reason);
      if (holder === undefined || reason === undefined || !isAudited(holder)) onRefused?.(status);
      const text = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
      endConnection(socket, `HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    } else socket.destroy();
  });
  // CONNECT asks for a tunnel, which neither the gateway nor the token service opens: without a
  // listener Node drops the connection with no answer. 501 (RFC 9110 §15.6.2: a method the server
  // supports for no resource), and the connection closed, so nothing sent behind it is read.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    onRefused?.(501);
    endConnection(socket, 'HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  });
  // An `Upgrade` pipelined behind requests still being answered: Node hands the socket over at
  // once, with the answers ahead still to be written on it, where the upgrade's own answer (a 101
  // and the relayed WebSocket, or a refusal) would go first and theirs would be lost or land inside
  // the WebSocket. It is handled once every answer ahead is written (each in turn is the socket's
  // `_httpMessage`, its 'close' emitted after Node hands the socket to the next), the bytes behind
  // it left unread on the socket meanwhile; never when one of them closed the connection (§9.6, as
  // for a request above).
  if (onUpgrade) {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // Node took its own error listener off the socket when it handed it over.
      socket.on('error', () => socket.destroy());
      let waited = false;
      const next = () => {
        const ahead = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
        if (socket.destroyed || socket.writableEnded) socket.destroy();
        else if (ahead != null) {
          waited = true;
          ahead.once('close', next);
        } else {
          // The last answer ahead set the keep-alive timeout; an upgrade on an idle connection has none.
          if (waited) (socket as Socket).setTimeout(server.timeout);
          markUpgraded(socket);
          onUpgrade(req, socket, head);
        }
      };
      next();
    });
  }
  limitPerAddress(server, reportRefusals(server, refusals));
  // A client that stops reading what is written to it (send_timeout); applyLimits sets the value.
  const send: SendLimit = { ms: 0 };
  sendLimits.set(server, send);
  watchSends(server, send, refusals?.sendTimedOut);
  applyLimits(server, limits, proxies);
  return server;
}

/**
 * Settings fixed when the server starts: the listener (its address, port and header size limit)
 * and the audit queue (its batch size, flush timer, bound and what happens when it is full). A reload that changes them says so
 * rather than accepting values it does not apply.
 */
function startOnly(started: TesseraConfig, next: TesseraConfig, options: Pick<ServeOptions, 'host' | 'port'>): string[] {
  const a = started.audit;
  const b = next.audit;
  return [
    // The listener is bound once; given as options (--host, --port), the file's values never applied.
    ...(options.host === undefined && started.server.host !== next.server.host ? ['server.host'] : []),
    ...(options.port === undefined && started.server.port !== next.server.port ? ['server.port'] : []),
    ...(started.gateway?.limits.max_header_size !== next.gateway?.limits.max_header_size ? ['gateway.limits.max_header_size'] : []),
    // Without an audit section the pipeline runs on these same defaults.
    ...((a?.batch_size ?? 256) !== (b?.batch_size ?? 256) ? ['audit.batch_size'] : []),
    ...((a?.flush_interval ?? 1) !== (b?.flush_interval ?? 1) ? ['audit.flush_interval'] : []),
    ...((a?.max_queue ?? 100_000) !== (b?.max_queue ?? 100_000) ? ['audit.max_queue'] : []),
    ...((a?.on_queue_full ?? 'drop') !== (b?.on_queue_full ?? 'drop') ? ['audit.on_queue_full'] : []),
  ];
}

/**
 * Say that this process now handles SIGHUP itself: `bin/tessera.js` holds the SIGHUPs that come
 * while the CLI loads (their default action would end the process) and replays them as reloads
 * on this event.
 */
export function announceSignalHandlers(): void {
  (process as NodeJS.EventEmitter).emit('tessera:signals');
}

/**
 * Start a gateway on a `node:http` server of its own, as `tessera gateway` does: the configuration
 * is loaded from `configFile` (or given as `config`), reloaded on SIGHUP with `signals: true` (and on
 * change with `gateway.watch_config`), and `close()` drains it. To mount the gateway on a server of
 * your own, use {@link createGateway}.
 *
 * @throws {ConfigError} when neither `config` nor `configFile` is given, or the configuration is invalid.
 *
 * @example
 * ```ts
 * import { serveGateway } from 'tessera';
 *
 * const served = await serveGateway({ configFile: 'tessera.yaml', signals: true });
 * console.log(`gateway on ${served.url}`);
 * process.on('SIGTERM', () => void served.close({ drainTimeoutMs: 10_000 }));
 * ```
 */
export async function serveGateway(options: ServeOptions, deps: GatewayDeps = {}): Promise<ServedGateway> {
  const file = options.configFile;
  const env = options.env ?? process.env;
  // Relative paths in the file (audit.file) are its neighbours, as for `tessera serve`.
  const load = options.load ?? (file ? () => resolveConfigPaths(loadConfigFile(file, env), dirname(resolve(file))) : undefined);
  const config = options.config ?? load?.();
  if (!config) throw new ConfigError([{ path: '(options)', message: 'give config or configFile' }]);
  // A relative `jwks.file` is the configuration file's neighbour (as for `tessera serve` and
  // `data_dir`), not whatever directory the process was started from.
  if (file !== undefined && deps.verifierRuntime?.baseDir === undefined)
    deps = { ...deps, verifierRuntime: { ...deps.verifierRuntime, baseDir: dirname(resolve(file)) } };
  const host = options.host ?? config.server.host;
  const port = options.port ?? config.server.port;
  const gateway = createGateway(config, { ...deps, listenHost: host });
  let beforeInflight = 0;
  let beforeDrained: (() => void) | undefined;
  const limits = config.gateway?.limits;
  const proxies = (c: TesseraConfig) => peerList(c.gateway?.trust_proxy ?? [], 'gateway.trust_proxy', []);
  /** Whether the handler in front `answered`; tracked so that shutdown lets it finish too (the gateway drains only its own). */
  const inFront = (answered: boolean, res: ServerResponse): boolean => {
    if (!answered) return false;
    beforeInflight++;
    res.once('close', () => {
      if (--beforeInflight === 0) beforeDrained?.();
    });
    return true;
  };
  const before = options.before;
  const onRequest = before
    ? (req: IncomingMessage, res: ServerResponse) => {
        if (!inFront(before(req, res), res)) gateway.handleRequest(req, res);
      }
    : gateway.handleRequest;
  const refuseFraming = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (!inFront(options.refuseFraming?.(req, res) ?? false, res)) gateway.refuseFraming(req, res);
    return true;
  };
  const server = createListener(onRequest, limits, gateway.refusedByParser, refuseFraming, gateway.handleUpgrade, proxies(config), {
    at: 'gateway.limits',
    warn: (fields, message) => gateway.logger.warn(fields, message),
    count: gateway.refusedConnection,
    sendTimedOut: gateway.sendTimedOut,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const url = listenUrl(server);
  gateway.logger.info({ event: 'listening', url, routes: gateway.state.routes.length }, 'gateway listening');

  let closed: Promise<void> | undefined;
  // Any failure to read the configuration (a file that cannot be read, a bad secrets.env) refuses
  // the reload; it must never take the running process down. Counted and logged by the gateway, as
  // the reloads it refuses itself are.
  const refuse = (e: unknown, failed = 'cannot read the configuration'): ReloadResult =>
    gateway.refuseReload(
      e instanceof ConfigError
        ? e
        : new ConfigError([{ path: '(file)', message: `${failed}: ${(e as NodeJS.ErrnoException).code ?? 'error'}` }]),
    );
  const reload = (next?: TesseraConfig): ReloadResult => {
    // A reload while draining would swap routes and reopen audit outputs under the requests being
    // drained (and after close, outputs nobody closes): the configuration in force stays.
    if (closed !== undefined) {
      gateway.logger.warn({ event: 'config_reload_ignored' }, 'shutting down: the configuration is not reloaded');
      return { ok: false, error: new ConfigError([{ path: '(server)', message: 'the server is shutting down; nothing was reloaded' }]) };
    }
    let c = next;
    if (c === undefined) {
      if (!load) return { ok: true, warnings: [] };
      try {
        c = load();
      } catch (e) {
        return refuse(e);
      }
    }
    try {
      options.prepare?.(c);
    } catch (e) {
      return refuse(e, 'cannot prepare the configuration');
    }
    let result = gateway.reload(c);
    if (result.ok) {
      applyLimits(server, c.gateway?.limits, proxies(c));
      setWatching(c.gateway?.watch_config ?? false);
      const stale = startOnly(config, c, options);
      if (stale.length > 0) {
        const warning = `${stale.join(', ')} changed: the values read at start stay in force until a restart; the rest of the configuration was reloaded`;
        gateway.logger.warn({ event: 'config_restart_required', paths: stale }, warning);
        result = { ok: true, warnings: [...result.warnings, warning] };
      }
      try {
        options.onReload?.(c);
      } catch (e) {
        // A reload runs from a signal or a file watcher: a failing hook must not end the process.
        gateway.logger.error(
          { event: 'config_reload_hook_failed', error: (e as Error)?.name ?? 'error' },
          'applying the reloaded configuration beside the gateway failed',
        );
      }
    }
    return result;
  };

  let watcher: ReturnType<typeof watch> | undefined;
  /** The file the watch is on (symlinks resolved), while there is one. */
  let target: string | undefined;
  let follow: NodeJS.Timeout | undefined;
  let debounce: NodeJS.Timeout | undefined;
  let settle: NodeJS.Timeout | undefined;
  let missing: NodeJS.Timeout | undefined;
  let settling = false;
  let replaced = false;
  let watching = false;
  // A file saved by renaming another over it (editors, `sed -i`, Kubernetes ConfigMaps) is a new
  // inode; the watch stays on the old one and reports nothing more.
  const rewatchIfReplaced = (path: string): void => {
    if (!replaced || !watching) return;
    replaced = false;
    watcher?.close();
    watchFile(path);
  };
  // An editor or `cp` may write the file in several writes, and a YAML file cut at a line boundary
  // is often valid: loaded mid-write, it would apply with routes, rules or issuers missing. So a
  // change applies once two reads SETTLE_MS apart find the same bytes, and loading it did not
  // race another write; a file still changing after SETTLE_ROUNDS reads is reported, and applied
  // when it is still.
  /**
   * Load the file, which held `bytes`: how to apply what was loaded (or refuse what failed), or
   * `undefined` when the file no longer holds them (it changed while it was read and parsed).
   */
  const loadUnchanged = (path: string, bytes: Buffer | undefined): (() => void) | undefined => {
    if (!load) return undefined;
    let next: TesseraConfig | undefined;
    let failure: unknown;
    try {
      next = load();
    } catch (e) {
      failure = e ?? new Error('load failed');
    }
    if (!sameBytes(bytes, readBytes(path))) return undefined;
    return next !== undefined ? () => void reload(next) : () => void refuse(failure);
  };
  const reloadWhenSettled = (path: string): void => {
    if (settling || !load) return;
    settling = true;
    let seen = readBytes(path);
    let rounds = 0;
    const round = (): void => {
      if (closed !== undefined) return;
      rewatchIfReplaced(path);
      const now = readBytes(path);
      if (sameBytes(seen, now)) {
        const loaded = loadUnchanged(path, now);
        if (loaded !== undefined) {
          settling = false;
          loaded();
          return;
        }
      }
      // Still changing: said once, and the reads go on (the events of these writes were absorbed
      // here, so giving up would leave the file's final state unapplied once it is still).
      if (++rounds === SETTLE_ROUNDS) {
        gateway.logger.warn(
          { event: 'config_reload_unstable', waited_ms: rounds * SETTLE_MS },
          'the configuration file keeps changing; the running configuration stays until it is still',
        );
      }
      seen = readBytes(path);
      settle = setTimeout(round, SETTLE_MS);
      settle.unref();
    };
    settle = setTimeout(round, SETTLE_MS);
    settle.unref();
  };
  const changed = (path: string, rename: boolean): void => {
    if (!watching) return;
    replaced ||= rename;
    // Coalesced from the first event, not pushed back by each: a file that never stops
    // changing is still looked at, and reported. While settling, the next read sees the change.
    if (settling || debounce !== undefined) return;
    debounce = setTimeout(() => {
      debounce = undefined;
      rewatchIfReplaced(path);
      reloadWhenSettled(path);
    }, 200);
    debounce.unref();
  };
  const watchFile = (path: string): void => {
    target = undefined;
    try {
      watcher = watch(path, (event) => changed(path, event === 'rename'));
      watcher.unref();
      target = resolved(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        gateway.logger.warn({ event: 'config_watch_unavailable' }, 'cannot watch the configuration file; reload with SIGHUP');
        return;
      }
      // Deleted and not yet written again (`rm` then `cp`, a slow save): look for it until it is
      // back, then watch it and load it. Without this the watch would be lost for good.
      gateway.logger.warn(
        { event: 'config_file_missing' },
        'the configuration file is gone; the running configuration stays until it is back',
      );
      clearTimeout(missing);
      missing = setTimeout(function retry() {
        if (closed !== undefined || !watching) return;
        if (!existsSync(path)) {
          missing = setTimeout(retry, 500);
          missing.unref();
          return;
        }
        watchFile(path);
        reloadWhenSettled(path);
      }, 500);
      missing.unref();
    }
  };
  // `gateway.watch_config` as the configuration in force says: a reload that turns it off stops
  // the watch, one that turns it on starts it.
  function setWatching(on: boolean): void {
    if (file === undefined || on === watching) return;
    watching = on;
    if (on) {
      watchFile(file);
      // A symlink on the path swapped to another file: the new one is watched, and applied.
      follow = setInterval(() => {
        if (target !== undefined && resolved(file) !== target) changed(file, true);
      }, FOLLOW_MS);
      follow.unref();
      return;
    }
    watcher?.close();
    watcher = undefined;
    target = undefined;
    clearInterval(follow);
    replaced = false;
    clearTimeout(debounce);
    debounce = undefined;
    clearTimeout(missing);
    clearTimeout(settle);
    settling = false;
  }
  setWatching(config.gateway?.watch_config ?? false);

  const close = (opts: { drainTimeoutMs?: number } = {}): Promise<void> => {
    closed ??= (async () => {
      watcher?.close();
      clearInterval(follow);
      clearTimeout(debounce);
      clearTimeout(settle);
      clearTimeout(missing);
      // SIGHUP stays handled (and ignored) until the drain is over: without a handler its default
      // action ends the process at once, cutting the requests in flight and losing their audit events.
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onTerm);
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // One deadline for the whole shutdown: the requests of the gateway and of the handler in
      // front drain together, then the gateway's audit events and onClose's (the token service's)
      // share what is left of it (at least the floor), not a drain_timeout each.
      const deadline = new ShutdownDeadline(opts.drainTimeoutMs ?? gateway.state.gateway.drain_timeout * 1000);
      if (beforeInflight > 0) {
        deadline.hold(
          new Promise<void>((resolve) => {
            beforeDrained = resolve;
          }),
        );
      }
      await gateway.close({ deadline });
      server.closeAllConnections();
      await stopped;
      try {
        await options.onClose?.({ auditTimeoutMs: deadline.auditLeft() });
      } finally {
        process.off('SIGHUP', onHup);
      }
      gateway.logger.info({ event: 'stopped' }, 'gateway stopped');
    })();
    return closed;
  };
  // A SIGHUP may come while the file is still being written (a script that signals once its first
  // write returns, an editor saving as the operator signals): a file changed less than SETTLE_MS
  // ago, or changed while it was loaded, is read as a watched change is, once it is still. One at
  // rest is applied at once.
  const onHup = (): void => {
    if (file === undefined || !load || closed !== undefined) {
      reload();
      return;
    }
    // A reload of the file is under way: it applies the file as it is once still.
    if (settling) return;
    const at = changedAt(file);
    const loaded = at !== undefined && Date.now() - at >= SETTLE_MS ? loadUnchanged(file, readBytes(file)) : undefined;
    if (loaded !== undefined) loaded();
    else reloadWhenSettled(file);
  };
  // A shutdown that fails (a store that will not close) exits 1 with one log line, not a stack trace.
  const onTerm = () =>
    void close().then(
      () => process.exit(0),
      (error: unknown) => {
        gateway.logger.error({ event: 'shutdown_failed', error: (error as Error)?.name ?? 'error' }, 'shutdown did not complete');
        process.exit(1);
      },
    );
  if (options.signals) {
    process.on('SIGHUP', onHup);
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onTerm);
    announceSignalHandlers();
  }
  return { gateway, server, url, reload, close };
}
