/**
 * WebSocket upgrades: the same pipeline decides before anything is sent upstream; refusals are
 * written on the raw socket; an accepted upgrade is relayed and watched for revocation, expiry and
 * reloads that no longer allow it.
 *
 * @module
 */
import { type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { TesseraError } from '../core/errors.ts';
import { endConnection } from '../server/close-unread.ts';
import type { GatewayContext } from './context.ts';
import { sentOnce } from './forward-auth.ts';
import { auditPath, auditRawPath, normalizeTarget } from './http/path.ts';
import { requestId } from './http/trace.ts';
import { type DenyRendering, renderDeny } from './pipeline/errors/error-handler.ts';
import type { GatewayRequest } from './pipeline/request.ts';
import { decide } from './pipeline/run.ts';
import { UpstreamCredentialRejected, UpstreamStatusInvalid, upstreamFailure } from './proxy/forward.ts';
import { forwardUpgrade, WEBSOCKET_KEY } from './proxy/websocket.ts';
import {
  absoluteUrl,
  findRoute,
  framingValid,
  headerBag,
  hostHeaderValid,
  remoteOf,
  requestHost,
  requestSecrets,
  upstreamHeaders,
  upstreamPath,
} from './requests.ts';
import type { StreamCloseReason } from './streams.ts';

const CLOSE_TEXT: Record<StreamCloseReason, string> = {
  token_revoked: 'token revoked',
  revocation_unavailable: 'token unverifiable',
  revocation_state_stale: 'token unverifiable',
  token_expired: 'token expired',
  token_inactive: 'token inactive',
  token_scope_narrowed: 'token scope narrowed',
  token_identity_changed: 'token identity changed',
  policy_condition_failed: 'policy condition failed',
  token_audience_invalid: 'token audience invalid',
  introspection_unavailable: 'token unverifiable',
  credential_withdrawn: 'credential withdrawn',
  config_narrowed: 'config narrowed',
  shutdown: 'server shutting down',
};

/**
 * The WebSocket close code (RFC 6455 §7.4): 1001 going away at shutdown, 1013 try again later when
 * the token cannot be checked (the introspection endpoint unreachable, the revocation check giving
 * no answer or its source unread for too long), 1008 policy violation when
 * the caller's authority has ended.
 */
function closeCode(reason: StreamCloseReason): number {
  if (reason === 'shutdown') return 1001;
  return reason === 'introspection_unavailable' || reason === 'revocation_unavailable' || reason === 'revocation_state_stale' ? 1013 : 1008;
}

/** Seconds a client refused during shutdown waits before reconnecting (to another instance, or to this one restarted). */
const SHUTDOWN_RETRY_AFTER = 1;

function writeSocketDeny(socket: Duplex, d: DenyRendering): void {
  if (socket.destroyed) return;
  let text = `HTTP/1.1 ${d.status} ${STATUS_CODES[d.status] ?? ''}\r\n`;
  for (const [k, v] of Object.entries(d.headers)) text += `${k}: ${v}\r\n`;
  endConnection(socket, `${text}connection: close\r\n\r\n${d.body}`);
}

export function handleUpgrade(ctx: GatewayContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const s = ctx.state;
  socket.on('error', () => socket.destroy());
  // With refuse, two slots: the upgrade's event, and the close of the stream it may open (held
  // while it is open, so a revocation's cut is audited however full the queue has become); one
  // with max_queue 1 (ctx.closeSlots).
  const full = ctx.auditRefusal(req, false, 2);
  if (full !== undefined) {
    writeSocketDeny(socket, full);
    return;
  }
  const x = ctx.begin('gateway.request', req, true);
  x.closeSlot = x.auditSlot && ctx.closeSlots;
  x.secrets = requestSecrets(s, req);
  x.requestId = requestId(req.headers['x-request-id'], x.secrets);
  // The client address (walked back through gateway.trust_proxy), for audit, rate limits and policy.
  x.remoteAddress = remoteOf(s, req);
  const url = req.url ?? '/';
  const denySocket = (error: TesseraError, challenges: (e?: TesseraError) => string[]) => {
    writeSocketDeny(socket, ctx.denyRendering(x, error, challenges));
    ctx.finish(x);
  };
  if (!framingValid(req)) {
    x.path = auditRawPath(url, x.secrets);
    denySocket(new TesseraError('request_framing_invalid'), s.challenges);
    return;
  }
  const target = normalizeTarget(url);
  if (target === undefined) {
    x.path = auditRawPath(url, x.secrets);
    denySocket(new TesseraError('request_path_invalid'), s.challenges);
    return;
  }
  x.path = auditPath(target.path, target.query, x.secrets, s.auditSecretIndex);
  if (!hostHeaderValid(s, req)) {
    denySocket(new TesseraError('request_host_invalid'), s.challenges);
    return;
  }
  const host = requestHost(s, req);
  const route = findRoute(s, host, target.path, x.method);
  if (route === undefined) {
    denySocket(new TesseraError('route_not_found'), s.challenges);
    return;
  }
  if (route === 'path_invalid') {
    denySocket(new TesseraError('request_path_invalid'), s.challenges);
    return;
  }
  x.route = route.id;
  const upgrade = req.headers.upgrade;
  // A WebSocket handshake is a GET without a body (RFC 6455 §4.1). With one, Node hands the body
  // over as the first WebSocket bytes while the upstream is told its Content-Length: the two would
  // disagree on where the request ends.
  const cl = req.headers['content-length'];
  const body = req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
  // RFC 6455 §4.2.1: a handshake without one well-formed key is answered 400. The upstream is asked
  // with a key of the gateway's own; the caller's is the one its 101 accepts.
  const key = sentOnce(req, 'sec-websocket-key');
  if (
    !route.websocket ||
    typeof upgrade !== 'string' ||
    upgrade.toLowerCase() !== 'websocket' ||
    x.method !== 'GET' ||
    body ||
    key === undefined ||
    !WEBSOCKET_KEY.test(key)
  ) {
    denySocket(new TesseraError('request_upgrade_refused'), route.authn.challenges);
    return;
  }
  if (ctx.closing) {
    // Not a refusal of the route: the WebSocket would be closed (1001) as soon as it opened.
    denySocket(new TesseraError('gateway_shutting_down', { retryAfter: SHUTDOWN_RETRY_AFTER }), route.authn.challenges);
    return;
  }
  const greq: GatewayRequest = {
    method: 'GET',
    host,
    path: target.path,
    query: target.query,
    url: absoluteUrl(s, req),
    headers: headerBag(req),
    remoteAddress: x.remoteAddress,
  };
  const failed = (e: unknown) => {
    ctx.logger.error({ event: 'internal_error', request_id: x.requestId, error: (e as Error)?.name ?? 'error' }, 'upgrade failed');
    x.reason = 'internal_error';
    x.status = 500;
    socket.destroy();
    ctx.finish(x);
  };
  let decided: ReturnType<typeof decide>;
  try {
    decided = decide(route.pipeline, greq);
  } catch (e) {
    failed(e);
    return;
  }
  Promise.resolve(decided)
    .then((d) => {
      if (d.principal) x.principal = d.principal;
      if (d.rule) x.rule = d.rule;
      if (!d.ok) {
        denySocket(d.error, route.authn.challenges);
        return;
      }
      if (socket.destroyed) {
        x.decision = 'allow';
        x.reason = 'client_closed';
        ctx.finish(x);
        return;
      }
      x.decision = 'allow';
      const headers = upstreamHeaders(s, req, route, d, x);
      const principal = d.principal;
      forwardUpgrade(
        socket,
        head,
        {
          url: route.upstream.url,
          path: upstreamPath(route, greq.path, greq.query),
          headers,
          connectTimeout: route.upstream.connectTimeout,
          headersTimeout: route.upstream.headersTimeout,
          bodyTimeout: route.upstream.bodyTimeout,
          responseHeaders:
            d.dpopNonce === undefined ? ['x-request-id', x.requestId] : ['x-request-id', x.requestId, 'dpop-nonce', d.dpopNonce],
          ownCredential: route.upstream.ownCredential,
          callerKey: key,
        },
        {
          onUpgraded(relay) {
            x.status = 101;
            x.upstreamStatus = 101;
            // The stream takes the close slot; finish gives back none.
            let closeSlot = x.closeSlot;
            x.closeSlot = false;
            ctx.finish(x);
            // Watched also without a principal (a public route): no token ends it, but shutdown must.
            const untrack = ctx.streams.add({
              kind: 'websocket',
              principal,
              admission: s.admission,
              route,
              request: greq,
              rpc: undefined,
              session: undefined,
              req,
              close(reason) {
                ctx.streamClosedEvent(x, principal, reason, closeSlot);
                closeSlot = false;
                relay.close(closeCode(reason), CLOSE_TEXT[reason]);
              },
            });
            relay.onEnd(() => {
              untrack();
              if (closeSlot) ctx.releaseAuditSlot();
              closeSlot = false;
            });
            // Shutdown closed the streams open when it began; one the upstream accepted during the
            // drain would be relayed until drain_timeout (or for good, once the drain is over).
            if (ctx.closing) ctx.streams.closeAll('shutdown', true);
          },
          onRefused(status, relay) {
            x.status = status;
            x.upstreamStatus = status;
            let closeSlot = x.closeSlot;
            x.closeSlot = false;
            ctx.finish(x);
            // Watched as a response is on the HTTP path: an upstream that ignores the Upgrade
            // header and answers with an event stream must not outlive the caller's authority.
            const untrack = ctx.streams.add({
              kind: 'http',
              streaming: relay.streaming,
              principal,
              admission: s.admission,
              route,
              request: greq,
              rpc: undefined,
              session: undefined,
              req,
              close(reason) {
                ctx.streamClosedEvent(x, principal, reason, closeSlot);
                closeSlot = false;
                relay.close();
              },
            });
            relay.onEnd(() => {
              untrack();
              if (closeSlot) ctx.releaseAuditSlot();
              closeSlot = false;
            });
            if (relay.streaming && ctx.closing) ctx.streams.closeAll('shutdown', true);
          },
          onCallerGone() {
            // As on the HTTP path: no upstream error, nothing to answer.
            x.reason = 'client_closed';
            socket.destroy();
            ctx.finish(x);
          },
          onFailure(error) {
            const f = upstreamFailure(error);
            ctx.metrics.upstreamError(route.id, f.kind);
            if (error instanceof UpstreamCredentialRejected) ctx.credentialRejected(x, route, d.headers);
            if (error instanceof UpstreamStatusInvalid) x.upstreamStatus = error.status;
            const e = new TesseraError(f.code);
            x.reason = f.code;
            x.status = e.status;
            writeSocketDeny(socket, renderDeny(e, s.challenges, x.requestId));
            ctx.finish(x);
          },
        },
      );
    })
    // Also what building the upstream request throws: the socket is closed and the failure
    // audited, never an unhandled rejection.
    .catch(failed);
}
