/**
 * The forward-auth endpoint: reads the original request (`originalRequest`), runs the route's
 * pipeline and answers 200 with the headers to inject or the refusal, audited as
 * `gateway.forward_auth`.
 *
 * @module
 */
import { hash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TesseraError } from '../core/errors.ts';
import { discardBody } from '../server/expect-continue.ts';
import type { CompiledRoute, GatewayState } from './compile.ts';
import type { GatewayContext } from './context.ts';
import { Exchange } from './exchange.ts';
import { type ForwardAuthFlavor, originalRequest, sentOnce } from './forward-auth.ts';
import { carriesOverrideHeader } from './http/headers.ts';
import { auditPath, auditRawPath, hasMethodOverride, normalizeTarget } from './http/path.ts';
import { type DenyRendering, nginxStatus } from './pipeline/errors/error-handler.ts';
import type { GatewayRequest } from './pipeline/request.ts';
import { decide } from './pipeline/run.ts';
import { cardRoute, findRoute, headerBag, peerOf, subprotocolsCarrySecret, validHost } from './requests.ts';
import { hostOf } from './routes.ts';

type Secret = { readonly header: string; readonly digest: Buffer };

// The value a connection has already proven, per connection: a proxy sends the same secret on
// every check of a keep-alive connection, and hashing it costs more than the rest of a cached
// decision. Comparing later values with the proven one in variable time tells the connection
// nothing it has not shown it knows; a reload (new digest) makes it prove the secret again.
const proven = new WeakMap<Socket, { readonly digest: Buffer; readonly value: string }>();

/**
 * True when the request carries the shared secret exactly once: its SHA-256 digest compared in
 * constant time, or, on a connection that has shown it, the value compared with the one shown.
 */
function secretMatches(req: IncomingMessage, secret: Secret): boolean {
  const presented = sentOnce(req, secret.header);
  if (presented === undefined) return false;
  const known = proven.get(req.socket);
  if (known !== undefined && known.digest === secret.digest && known.value === presented) return true;
  if (!timingSafeEqual(hash('sha256', presented, 'buffer'), secret.digest)) return false;
  proven.set(req.socket, { digest: secret.digest, value: presented });
  return true;
}

// The headers an allow answer may set for the upstream, lower case: the credential header of every
// route and every identity header name.
const answerable = new WeakMap<GatewayState, ReadonlySet<string>>();
function answered(s: GatewayState): ReadonlySet<string> {
  let names = answerable.get(s);
  if (names === undefined) {
    const set = new Set<string>(['authorization', ...Object.values(s.gateway.identity_headers)]);
    for (const r of s.gateway.routes) if (r.upstream.credential.type === 'static') set.add(r.upstream.credential.header);
    names = set;
    answerable.set(s, names);
  }
  return names;
}

// The headers an allow answer for `route` may set: its own credential header and every identity
// header. Another route's credential header (an X-Api-Key its upstream takes from callers) is not
// among them, so behind Envoy it passes as it does through Tessera's own proxy. A reload compiles
// new routes, so the cache follows the configuration.
const routeAnswers = new WeakMap<CompiledRoute, readonly string[]>();
function routeAnswerable(s: GatewayState, route: CompiledRoute): readonly string[] {
  let names = routeAnswers.get(route);
  if (names === undefined) {
    const cred = route.config.upstream.credential;
    names = [...new Set(['authorization', ...Object.values(s.gateway.identity_headers), ...(cred.type === 'static' ? [cred.header] : [])])];
    routeAnswers.set(route, names);
  }
  return names;
}

/**
 * True when the check carries one of the {@link answered} headers spelled with `_` for `-`
 * (`X_Tessera_Subject`): the proxy replaces only the dashed name, so the caller's copy would reach
 * the upstream beside it, and CGI-style servers read both as `HTTP_X_TESSERA_SUBJECT`.
 */
function carriesUnderscoreSpoof(s: GatewayState, rawHeaders: readonly string[]): boolean {
  let names: ReadonlySet<string> | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.indexOf('_') < 0) continue;
    names ??= answered(s);
    if (names.has(name.toLowerCase().replaceAll('_', '-'))) return true;
  }
  return false;
}

/** True when any `Sec-WebSocket-Protocol` header of the check offers a subprotocol carrying one of `secrets`. */
function offersSecretSubprotocol(rawHeaders: readonly string[], secrets: readonly string[]): boolean {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length !== 22 || name.toLowerCase() !== 'sec-websocket-protocol') continue;
    if (subprotocolsCarrySecret(rawHeaders[i + 1] as string, secrets)) return true;
  }
  return false;
}

/** True when the request's framing announces a body (a non-zero Content-Length or any Transfer-Encoding). */
function declaresBody(req: IncomingMessage): boolean {
  const te = req.headers['transfer-encoding'];
  const cl = req.headers['content-length'];
  return te !== undefined || (cl !== undefined && cl !== '0');
}

/**
 * The headers of an allow answer for `route`: `headers` (what the pipeline injects), completed for
 * the proxy so that a caller's own copy of an identity or credential header never reaches the
 * upstream beside (or instead of) the answer's.
 */
function allowHeaders(
  s: GatewayState,
  flavor: ForwardAuthFlavor,
  route: CompiledRoute,
  headers: Record<string, string>,
  requestId: string,
): Record<string, string> {
  // Caddy's forward_auth copies each header named in copy_headers from the answer, and one the
  // answer lacks arrives upstream as the literal text of its placeholder (Caddy 2.6) or leaves
  // the caller's own copy in place (later versions): every header it may copy is answered,
  // empty when it has no value.
  if (flavor === 'caddy') for (const name of answered(s)) headers[name] ??= '';
  // Envoy's ext_authz sets the headers an answer carries and keeps the caller's others: the
  // identity and credential headers this answer does not set, and DPoP, are named for removal
  // so a caller's own copies never reach the upstream.
  else if (flavor === 'envoy') {
    const remove = ['dpop'];
    for (const name of routeAnswerable(s, route)) if (headers[name] === undefined) remove.push(name);
    headers['x-envoy-auth-headers-to-remove'] = remove.join(', ');
  }
  headers['x-request-id'] = requestId;
  headers['content-length'] = '0';
  headers['cache-control'] = 'no-store';
  return headers;
}

/**
 * Answer a forward-auth check. `x` is the exchange the gateway began for this HTTP request; the
 * check is audited as its own `gateway.forward_auth` exchange instead.
 */
export function handleForwardAuth(ctx: GatewayContext, s: GatewayState, req: IncomingMessage, res: ServerResponse, x: Exchange): void {
  const fx = new Exchange('gateway.forward_auth', x.method, x.remoteAddress, x.start, x.time);
  fx.requestId = x.requestId;
  fx.request = x.request;
  fx.secrets = x.secrets;
  fx.vouching = x.vouching;
  // The forward-auth exchange replaces it (x's in-flight count is released when fx finishes), and
  // takes its audit slot (audit.on_queue_full: refuse).
  fx.auditSlot = x.auditSlot;
  x.auditSlot = false;
  x.done = true;
  const flavor = s.gateway.forward_auth.flavor as ForwardAuthFlavor;
  // nginx's auth_request sends the original request's Content-Length with the body-less check
  // unless the config clears it (the example does). Read as a body, the next check on the
  // connection would be lost, or every later one stalled: the connection is closed after the answer.
  if (flavor === 'nginx' && declaresBody(req)) res.setHeader('connection', 'close');
  const peer = peerOf(s, req.socket);
  if (!peer.forwardAuth) {
    fx.path = auditRawPath(req.url ?? '/', fx.secrets);
    ctx.deny(fx, res, new TesseraError('forward_auth_peer_refused'), s.challenges);
    return;
  }
  // Drain any body (Envoy may send one); the decision reads headers only. A client waiting for
  // 100 Continue is not asked for it.
  discardBody(req);
  const secret = s.forwardAuthSecret;
  if (secret !== undefined && !secretMatches(req, secret)) {
    // Not the proxy: the answer would hand the upstream credential to whoever holds a token.
    fx.path = auditRawPath(req.url ?? '/', fx.secrets);
    const d = ctx.denyRendering(fx, new TesseraError('forward_auth_secret_invalid'), s.challenges);
    const { 'www-authenticate': _, ...headers } = d.headers;
    if (!res.headersSent) res.writeHead(403, headers).end(d.body);
    ctx.finish(fx);
    return;
  }
  const original = originalRequest(req, s.gateway.forward_auth.path, flavor);
  const fold = (d: DenyRendering): DenyRendering => {
    if (flavor !== 'nginx') return d;
    const status = nginxStatus(d.status);
    return { ...d, status, headers: { ...d.headers, 'x-tessera-status': String(d.status) } };
  };
  const refuse = (error: TesseraError, challenges: (e?: TesseraError) => string[]) => {
    const d = fold(ctx.denyRendering(fx, error, challenges));
    if (!res.headersSent) res.writeHead(d.status, d.headers).end(d.body);
    ctx.finish(fx);
  };
  if (original === undefined) {
    // The proxy is misconfigured (or the caller is not the proxy): fail closed. nginx turns any
    // status but 2xx/401/403 into a 500 for the client, so it gets a 500; Traefik and Envoy pass
    // the 400 on.
    fx.path = auditRawPath(req.url ?? '/', fx.secrets);
    const d = ctx.denyRendering(fx, new TesseraError('forward_auth_request_invalid'), s.challenges);
    const status = flavor === 'nginx' ? 500 : d.status;
    if (!res.headersSent) res.writeHead(status, { ...d.headers, 'x-tessera-status': String(d.status) }).end(d.body);
    ctx.finish(fx);
    return;
  }
  const method = original.method;
  fx.method = method;
  if (original.remoteAddress !== undefined) fx.remoteAddress = original.remoteAddress;
  const target = normalizeTarget(original.uri);
  if (target === undefined) {
    fx.path = auditRawPath(original.uri, fx.secrets);
    refuse(new TesseraError('request_path_invalid'), s.challenges);
    return;
  }
  fx.path = auditPath(target.path, target.query, fx.secrets, s.auditSecretIndex);
  if (original.host !== undefined && !validHost(original.host)) {
    refuse(new TesseraError('request_host_invalid'), s.challenges);
    return;
  }
  // The proxy forwards the request as it came: an upstream honouring a method or path override
  // would act on another request than the one decided here, and only the gateway's own proxy can
  // remove one. Headers count as the proxy passes them to the check; checked before the public
  // discovery answer, which allows without a token.
  const q = original.uri.indexOf('?');
  // Behind Traefik, Caddy or Envoy, X-Original-URI and the like are the caller's (nginx sets its
  // own), and the proxy forwards them: an upstream reading them as the request is overridden too.
  if (carriesOverrideHeader(req.rawHeaders, flavor !== 'nginx') || (q >= 0 && hasMethodOverride(original.uri.slice(q + 1)))) {
    refuse(new TesseraError('forward_auth_override_refused'), s.challenges);
    return;
  }
  if (carriesUnderscoreSpoof(s, req.rawHeaders)) {
    refuse(new TesseraError('forward_auth_header_spoof_refused'), s.challenges);
    return;
  }
  // Tessera's own proxy removes an access token from the query; here the proxy forwards the URI as
  // it came, so allowing would hand the token to the upstream (its logs, its own token handling).
  // Refused whatever transport.query says, in every spelling the gateway strips.
  if (target.queryToken) {
    refuse(new TesseraError('forward_auth_query_token_refused'), s.challenges);
    return;
  }
  // Likewise a subprotocol carrying the token (`bearer, <token>`, as browser WebSocket clients
  // offer it) or a configured secret: Tessera's own proxy removes it, this proxy would forward it.
  if (offersSecretSubprotocol(req.rawHeaders, fx.secrets)) {
    refuse(new TesseraError('forward_auth_subprotocol_credential_refused'), s.challenges);
    return;
  }
  const host = hostOf(original.host);
  if (method === 'GET' || method === 'HEAD') {
    const card = cardRoute(s, host, target.path);
    if (card) {
      // Public discovery: allowed without credentials (the proxy forwards to the upstream).
      fx.route = card.id;
      fx.decision = 'allow';
      fx.status = 200;
      // No identity to inject, but the proxy still forwards the caller's headers: answered as
      // every allow is, so a caller's own X-Tessera-Subject or Authorization does not pass.
      res.writeHead(200, allowHeaders(s, flavor, card, {}, fx.requestId)).end();
      ctx.finish(fx);
      return;
    }
  }
  const route = findRoute(s, host, target.path, method);
  if (route === undefined) {
    refuse(new TesseraError('route_not_found'), s.challenges);
    return;
  }
  if (route === 'path_invalid') {
    refuse(new TesseraError('request_path_invalid'), s.challenges);
    return;
  }
  fx.route = route.id;
  // An MCP route is decided on the JSON-RPC body (the tool, the session), which a proxy's check
  // does not carry: allowing it here would let any tools/call through a rule without a tool.
  if (route.mcp !== undefined) {
    refuse(new TesseraError('mcp_forward_auth_refused'), s.challenges);
    return;
  }
  // Likewise an A2A route binding tasks to their creator (a2a.bind_tasks): the gateway reads each
  // request's body for the tasks it names and each answer for the tasks it creates, and the proxy
  // shows it neither: allowing here would let any caller at another's task (and record none).
  if (route.a2a?.config.bind_tasks === true) {
    refuse(new TesseraError('a2a_forward_auth_refused'), s.challenges);
    return;
  }
  const greq: GatewayRequest = {
    method,
    host,
    path: target.path,
    query: target.query,
    // What a DPoP proof must name (htu). The Host the proxy reports is the caller's choice unless
    // the proxy refuses other names, and a proof captured at another server must not pass by
    // naming that server. A route matched by host has held it to a configured name; otherwise
    // server.public_url's origin, when set, is the gateway's name (as on its own path).
    url: `${route.config.match.host === undefined && s.publicOrigin !== undefined ? s.publicOrigin : `${original.proto}://${original.host ?? host}`}${original.uri}`,
    headers: headerBag(req),
    remoteAddress: original.remoteAddress ?? peer.address,
  };
  let decided: ReturnType<typeof decide>;
  try {
    decided = decide(route.pipeline, greq);
  } catch (e) {
    ctx.internalError(fx, res, e);
    return;
  }
  Promise.resolve(decided)
    .then((d) => {
      if (d.principal) fx.principal = d.principal;
      if (d.rule) fx.rule = d.rule;
      if (!d.ok) {
        refuse(d.error, route.authn.challenges);
        return;
      }
      fx.decision = 'allow';
      fx.status = 200;
      // nginx may cache the allow decision only when configured, never past the token's expiry;
      // a revoked token then keeps passing nginx for up to cache_ttl. X-Accel-Expires is for
      // nginx alone and must precede Cache-Control (nginx reads them in order); every other
      // cache sees no-store. Never for a DPoP-bound token: the allow rests on a proof that may be
      // used once (RFC 9449 §11.1), and a cached one would let the same token and proof through
      // again without its jti (or nonce, or iat) being checked.
      const ttl =
        d.principal?.confirmation !== undefined
          ? 0
          : Math.min(s.gateway.forward_auth.cache_ttl, Math.floor((d.principal?.expiresAt ?? 0) - ctx.clock() / 1000));
      const headers: Record<string, string> = ttl >= 1 ? { 'x-accel-expires': String(ttl) } : {};
      Object.assign(headers, d.headers);
      if (!res.headersSent) res.writeHead(200, allowHeaders(s, flavor, route, headers, fx.requestId)).end();
      ctx.finish(fx);
    })
    // Also what the answer itself throws (a header value Node refuses): a 500, never an
    // unhandled rejection.
    .catch((e: unknown) => ctx.internalError(fx, res, e));
}
