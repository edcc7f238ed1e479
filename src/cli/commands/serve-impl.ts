/**
 * What `tessera serve` runs (serve.ts defines the command): the token service and, when
 * `tessera.yaml` has a `gateway` section, the gateway, on one listener. Loaded when a server
 * starts, so that the CLI's other commands, `--help` and `--version` do not load the token
 * service, the gateway and their dependencies.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { type OperationsConfig, tokenServiceOperationsSchema } from '../../config/operations-schema.ts';
import type { ConfigCheck } from '../../config/parse.ts';
import type { TesseraConfig } from '../../config/schema.ts';
import { resolveStore, storeRequestTimeoutMs } from '../../config/token-service-schema.ts';
import { ConfigError } from '../../core/errors.ts';
import { allowlistClient, peerAllowed, peerList, plainAddress } from '../../core/peers.ts';
import { createDpopNonces } from '../../core/verify/dpop.ts';
import { gatewayRunChecks } from '../../gateway/check.ts';
import { defaultLogger, GATEWAY_DPOP_NONCE_KEY_INFO } from '../../gateway/gateway.ts';
import { normalizeTarget } from '../../gateway/http/path.ts';
import { SESSION_KEY_INFO } from '../../gateway/mcp/sessions.ts';
import { ListenerMetrics, tokenServiceMetrics } from '../../gateway/metrics.ts';
import { answerOperations, type ReadinessCheck, readiness } from '../../gateway/ops.ts';
import { announceSignalHandlers, createListener, DEFAULT_LISTENER_LIMITS, serveGateway } from '../../gateway/serve.ts';
import { deriveMacKey } from '../../issuer/secrets.ts';
import { markUnaudited } from '../../server/body-invalid.ts';
import { externalIssuers } from '../../server/bootstrap.ts';
import { listenUrl } from '../../server/listen.ts';
import { ShutdownDeadline } from '../../server/shutdown.ts';
import { createTokenServiceHandler } from '../../server/token-handler.ts';
import { storeReplayCache } from '../../store/replay.ts';
import { configPath, loadConfig, openService, type ServiceContext } from '../context.ts';
import { CliError } from '../output.ts';
import { listenError, type RunningServer, type StartOptions } from './serve.ts';

const TOKEN_SERVICE_DRAIN_MS = 10_000;

/** The token service mints exchange credentials for the gateway as `gateway.exchange_client`. */
const serveChecks: ConfigCheck<TesseraConfig> = (c, ok) => gatewayRunChecks(c, ok, { exchange: 'exchange_client', tokenService: true });

/** The operations endpoints without a gateway section and without `token_service.operations`: their defaults. */
const DEFAULT_OPERATIONS: OperationsConfig = Object.freeze(tokenServiceOperationsSchema.parse({}));

function writeNotFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end('{"error":"not_found"}');
}

/** The token service's own fields on its lines: which part of `tessera serve` says it. */
const TOKEN_SERVICE = { component: 'token_service' } as const;

/**
 * The token service's lines, through the logger the gateway is given: one shape (pino's) on one
 * stream for all of `tessera serve`, with `component: token_service` (as its audit lines say).
 */
function tokenServiceLog(logger: Logger) {
  return {
    /**
     * A warning about its configuration: one line of one shape, `event: config_warning`, whether
     * it is said at start or at a reload (the gateway's own say the same).
     */
    configWarning: (msg: string): void => logger.warn({ event: 'config_warning', ...TOKEN_SERVICE }, msg),
    /** Its background failures (store sync, a lost revocation push, a refused key row). */
    warning: (msg: string): void => logger.warn({ event: 'warning', ...TOKEN_SERVICE }, msg),
    /** The verifier of other issuers' tokens (token exchange): a failed JWKS fetch. */
    verifierWarning: (msg: string): void => logger.warn({ event: 'verifier_warning', ...TOKEN_SERVICE }, msg),
  };
}

/** Start the token service (and the gateway, when configured) from a configuration file. */
export async function startServer(options: StartOptions): Promise<RunningServer> {
  const logger = options.logger ?? defaultLogger();
  const say = tokenServiceLog(logger);
  const ctx = await openService(options.config, true, {
    onWarning: say.warning,
    onConfigWarning: say.configWarning,
    // The gateway's line, field for field (`event` and `component` included), at level error.
    onAuditEventsLost: ({ message, ...fields }) => logger.error(fields, message),
    // audit.on_queue_full: refuse: an event dropped is never silent.
    onAuditEventsDropped: ({ message, ...fields }) => logger.error(fields, message),
    check: serveChecks,
  });
  try {
    if (!ctx.service.keys.ready()) throw new CliError('no active signing key; run `tessera init` (or `tessera keys rotate --now`)');
    await ctx.service.start();
    // token_service.trust_proxy unset under a gateway: the gateway's trust_proxy. Both are served on
    // one listener, so the proxies in front of one are in front of the other; reloaded with it.
    const inherited = { proxies: peerList(ctx.config.gateway?.trust_proxy ?? [], 'gateway.trust_proxy', []) };
    const handler = createTokenServiceHandler(ctx.service, {
      ...(ctx.config.gateway !== undefined ? { trustedProxies: () => inherited.proxies } : {}),
      // Only the error's class: messages of unexpected errors are not trusted to be secret-free.
      onError: (error, requestId) =>
        logger.error(
          { event: 'internal_error', ...TOKEN_SERVICE, request_id: requestId, error: error instanceof Error ? error.name : typeof error },
          'request failed',
        ),
      onWarning: say.warning,
      onConfigWarning: say.configWarning,
    });
    const host = options.host ?? ctx.config.server.host;
    const port = options.port ?? ctx.config.server.port;
    if (ctx.config.gateway !== undefined) {
      return await withGateway(ctx, handler, inherited, { ...options, logger, host, port }).catch((e: unknown) => {
        throw listenError(e, host, port, options.portAdvice);
      });
    }

    // Without a gateway section: token_service.operations (its defaults those of gateway.operations),
    // and in its own registry the metrics the token service and the listener add under a gateway,
    // by the same names.
    const ops = ctx.config.token_service?.operations ?? DEFAULT_OPERATIONS;
    const proxies = peerList(ctx.config.token_service?.trust_proxy ?? [], 'token_service.trust_proxy', []);
    const metricsPeers = peerList(ops.metrics_allowed_peers, 'token_service.operations.metrics_allowed_peers', []);
    const registry = new Registry();
    const listenerMetrics = new ListenerMetrics(registry);
    tokenServiceMetrics(registry, () => ctx.service);
    const checks = tokenServiceReadiness(ctx);
    let closing: Promise<void> | undefined;
    const serveOps = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
      // As the gateway's: the client's address as token_service.trust_proxy reads it, never a
      // proxy's own address for everyone it relays.
      const socketAddress = req.socket.remoteAddress;
      const operator =
        path !== ops.health_path &&
        peerAllowed(
          metricsPeers,
          allowlistClient(
            proxies,
            socketAddress === undefined
              ? undefined
              : { address: plainAddress(socketAddress), trustedProxy: peerAllowed(proxies, socketAddress) },
            req.headers,
          ),
        );
      await answerOperations(
        res,
        { method: req.method, path, operator },
        { ops, registry, notFound: writeNotFound, ready: () => readiness([], undefined, checks, closing !== undefined) },
      );
    };
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      if (handler(req, res)) return;
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      if (path === ops.health_path || path === ops.ready_path || path === ops.metrics_path) {
        // Not audited: a body the listener refuses meanwhile is counted by it (parser refusals).
        markUnaudited(req);
        void serveOps(req, res, path);
        return;
      }
      writeNotFound(res);
    };
    // token_service.limits, else their defaults (those of gateway.limits): slowloris, connection
    // counts, its trust_proxy peers held to the total alone; connections refused are logged and
    // counted. `Expect: 100-continue`: 100 when the handler reads the body, not for one it refuses
    // first. A framing the listener refuses: the token service's refusal on its paths, the
    // listener's plain 400 elsewhere.
    const server = createListener(
      onRequest,
      ctx.config.token_service?.limits ?? DEFAULT_LISTENER_LIMITS,
      (status) => listenerMetrics.refusedByParser(status),
      handler.refuseFraming,
      undefined,
      proxies,
      {
        at: 'token_service.limits',
        warn: (fields, message) => logger.warn({ ...fields, ...TOKEN_SERVICE }, message),
        count: (reason) => listenerMetrics.refusedConnection(reason),
        sendTimedOut: (kind) => listenerMetrics.sendTimedOut(kind),
      },
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    }).catch((e: unknown) => {
      throw listenError(e, host, port, options.portAdvice);
    });
    const url = listenUrl(server);
    const close = () => {
      closing ??= (async () => {
        // One deadline, as under the gateway: the audit events get what the drain left of it.
        const deadline = new ShutdownDeadline(options.drainTimeout ?? TOKEN_SERVICE_DRAIN_MS);
        await new Promise<void>((resolve) => {
          // A request whose body never arrives in full would hold close() until requestTimeout.
          const cut = setTimeout(() => server.closeAllConnections(), deadline.drainLeft());
          server.close(() => {
            clearTimeout(cut);
            resolve();
          });
          server.closeIdleConnections();
        });
        // Audit events the store refuses are retried until then, then counted as lost.
        await ctx.close({ auditTimeoutMs: deadline.auditLeft() });
      })();
      return closing;
    };
    if (options.signals) {
      // As the gateway's: the first SIGTERM or SIGINT drains; a second one (either) ends the process at once.
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void close().then(
          () => process.exit(0),
          (error: unknown) => {
            logger.error(
              { event: 'shutdown_failed', ...TOKEN_SERVICE, error: (error as Error)?.name ?? 'error' },
              'shutdown did not complete',
            );
            process.exit(1);
          },
        );
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      // Clients, keys and revocations are re-read from the store every sync_interval; there is no
      // gateway configuration to reload. SIGHUP must not kill the process.
      process.on('SIGHUP', () =>
        logger.info(
          { event: 'config_reload_ignored', ...TOKEN_SERVICE },
          'SIGHUP: no gateway section to reload; the token service follows the store',
        ),
      );
      announceSignalHandlers();
    }
    return { url, service: ctx.service, config: ctx.config, gateway: undefined, logger, close };
  } catch (e) {
    await ctx.close();
    throw e;
  }
}

/**
 * Readiness of the token service: its store answers, it has a key to sign with, and it has read
 * the revocation log lately (else it could be accepting tokens revoked by another process).
 */
function tokenServiceReadiness(ctx: ServiceContext): ReadinessCheck[] {
  const { store, service } = ctx;
  return [
    {
      name: 'store',
      check: () =>
        store.versions().then(
          () => ({ ok: true }),
          () => ({ ok: false, detail: 'store unreachable' }),
        ),
    },
    // Names the active key when its row is refused (deleted behind this instance, altered), and why.
    { name: 'signing_key', check: () => service.keys.readiness() },
    { name: 'revocations', check: () => service.revocationStatus() },
    // audit.on_queue_full: refuse: not ready while the token service refuses requests for it.
    ...(ctx.config.audit?.on_queue_full === 'refuse' ? [{ name: 'token service audit queue', check: () => service.auditStatus() }] : []),
  ];
}

/**
 * What a reload of `tessera serve` cannot apply: the token service, its store, its scope model
 * (compiled into every client), the DPoP algorithms its token endpoint accepts and advertises, and
 * the listener are built once at start, and the in-process exchange client with them. The gateway
 * sections (`dpop` included) and the issuers the token service trusts for token exchange reload;
 * these are named so a changed value is not silently ignored.
 */
const RESTART_ONLY = ['data_dir', 'server', 'store', 'token_service', 'scopes', 'gateway.exchange_client', 'dpop.algorithms'] as const;

function restartOnly(running: TesseraConfig, next: TesseraConfig): string[] {
  const at = (c: TesseraConfig, path: string): unknown =>
    path === 'gateway.exchange_client'
      ? c.gateway?.exchange_client
      : path === 'dpop.algorithms'
        ? c.dpop.algorithms
        : c[path as keyof TesseraConfig];
  return RESTART_ONLY.filter((path) => !isDeepStrictEqual(at(running, path), at(next, path)));
}

/**
 * `gateway.exchange_client` registered as always using DPoP (RFC 9449 §5.2) is refused at start: the
 * gateway proves no key when it mints and sends the token upstream as a bearer token, so each of
 * its mints would be refused (`client_dpop_proof_required`). A client not registered yet, or one
 * bound later, is refused at each mint instead (502 upstream_credential_unavailable). A store
 * that does not answer leaves the check to the mints as well.
 */
async function refuseDpopBoundExchangeClient(service: ServiceContext['service'], id: string, file: string): Promise<void> {
  const client = await service.clients.get(id).catch(() => undefined);
  if (client?.record.dpopBoundAccessTokens !== true) return;
  throw new ConfigError(
    [
      {
        path: 'gateway.exchange_client',
        message: `client ${JSON.stringify(id)} is DPoP-bound (dpop_bound_access_tokens) and gets no bearer token, and the gateway proves no DPoP key when it mints upstream tokens; name a client that is not DPoP-bound, or run \`tessera clients update ${id} --no-dpop-bound\``,
      },
    ],
    file,
  );
}

async function withGateway(
  ctx: ServiceContext,
  handler: ReturnType<typeof createTokenServiceHandler>,
  inherited: { proxies: ReturnType<typeof peerList> },
  options: StartOptions & { logger: Logger; host: string; port: number },
): Promise<RunningServer> {
  const { service, store, config } = ctx;
  const say = tokenServiceLog(options.logger);
  const file = configPath(options.config);
  const exchangeClient = config.gateway?.exchange_client;
  if (exchangeClient !== undefined) await refuseDpopBoundExchangeClient(service, exchangeClient, file);
  // Token exchange trusts the same other issuers as the gateway: removing one from `issuers` must
  // stop both. Their verifier is built before anything of a reload applies (read from the file or
  // given to `reload(config)`), so one the token service cannot use (a key file missing) is refused
  // whole rather than applied to the gateway alone.
  // With the start's warning sink: a rebuilt verifier's JWKS failures are logged as the first one's were.
  const external = (c: TesseraConfig) =>
    externalIssuers(c, service.revocations, { baseDir: dirname(file), onWarning: say.verifierWarning });
  let prepared: { config: TesseraConfig; external: ReturnType<typeof externalIssuers> } | undefined;
  const served = await serveGateway(
    {
      config,
      configFile: file,
      // Reloads read the file (and secrets.env) again and resolve data_dir the way every command does.
      load: () => loadConfig(options.config, { check: serveChecks }).config,
      prepare: (next) => {
        prepared = { config: next, external: external(next) };
      },
      onReload: (next) => {
        // prepare ran on this configuration just before (the reload is synchronous).
        const issuers = prepared?.config === next ? prepared.external : external(next);
        prepared = undefined;
        service.useExternalIssuers(issuers.verifier, issuers.maxLifetime, issuers.issuers, issuers.exchangeClients);
        for (const w of issuers.warnings) say.configWarning(w);
        // The token service's trust_proxy when it has none of its own (it does not reload itself).
        inherited.proxies = peerList(next.gateway?.trust_proxy ?? [], 'gateway.trust_proxy', []);
        const stale = restartOnly(config, next);
        if (stale.length > 0) {
          served.gateway.logger.warn(
            { event: 'config_restart_required', paths: stale },
            `${stale.join(', ')} changed: the token service keeps the values it started with until a restart; the rest of the configuration was reloaded`,
          );
        }
        options.onReload?.(next);
      },
      host: options.host,
      port: options.port,
      signals: options.signals ?? false,
      // Everything under /oauth2/ is the token service's, also paths it does not know: a route
      // matching `/oauth2/token/` must not carry a client's form body (and secret) upstream.
      before: (req, res) => {
        if (handler(req, res)) return true;
        // As written and as the gateway's routes read it (`/%6fauth2/token` is /oauth2/token to them).
        // Only a percent-encoded path can read otherwise once normalized (dot segments and `//` are
        // refused there): every other request is spared a second normalization of its target.
        const raw = (req.url ?? '').toLowerCase();
        const path = raw.includes('%') ? normalizeTarget(req.url ?? '/')?.path.toLowerCase() : undefined;
        const ours = (p: string) => p.startsWith('/oauth2/') || p === '/oauth2' || p.startsWith('/oauth2?');
        if (!ours(raw) && (path === undefined || !ours(path))) return false;
        res.writeHead(404, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end('{"error":"not_found"}');
        return true;
      },
      refuseFraming: handler.refuseFraming,
      // After the gateway's own audit events: the token service's get what is left of the one deadline.
      onClose: ({ auditTimeoutMs }) => ctx.close({ auditTimeoutMs }),
    },
    {
      logger: options.logger,
      verifierRuntime: {
        keySources: { [service.issuer]: service.keys },
        revocation: service.revocations,
        baseDir: dirname(file),
        // DPoP proofs are remembered in the store: refused again after a restart and by every
        // other instance on it, not only by this process (RFC 9449 §11.1).
        replay: storeReplayCache(store),
        // With dpop.nonce: nonces MACed under a key derived from the master key, so every instance
        // sharing it accepts the others' (one load balancer's pool), and a restart keeps them
        // good. Its own key, not the token endpoint's: neither's nonce is good at the other.
        // dpop.nonce_secret, when set, replaces it (the verifiers derive their key from it), so
        // `tessera gateway` instances given the same secret share the pool.
        ...(ctx.master !== undefined
          ? { dpopNonces: createDpopNonces({ secret: deriveMacKey(ctx.master, GATEWAY_DPOP_NONCE_KEY_INFO) }) }
          : {}),
      },
      revocation: service.revocations,
      ...(exchangeClient !== undefined ? { upstreamTokenIssuer: service.upstreamIssuer(exchangeClient) } : {}),
      auditSinks: [{ write: (events) => store.appendAudit(events) }],
      // A2A tasks bound to their creator (a2a.bind_tasks) in the store: every instance on it agrees
      // on who owns a task, and a restart keeps it.
      taskStore: store,
      // One answer's ids are recorded within the time one store call of a request may take.
      taskStoreTimeoutMs: storeRequestTimeoutMs(resolveStore(config)),
      readiness: tokenServiceReadiness(ctx),
      authorizationServer: service.issuer,
      // Every instance sharing the master key accepts the others' MCP sessions, across restarts.
      ...(ctx.master !== undefined ? { mcpSessionKey: deriveMacKey(ctx.master, SESSION_KEY_INFO) } : {}),
    },
  );
  tokenServiceMetrics(served.gateway.registry, () => service);
  return { url: served.url, service, config, gateway: served, logger: options.logger, close: () => served.close() };
}
