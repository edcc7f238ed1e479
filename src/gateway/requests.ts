/**
 * Reading a request against the compiled state: its URL at the gateway, its host, its address,
 * the route it takes, and what goes upstream. Pure functions of the state and the request.
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { lastForwardedEntry, localOrigin, validHost } from '../core/host.ts';
import { allowlistClient, forwardedClient, peerAllowed, plainAddress } from '../core/peers.ts';
import { type HeaderBag, queryAccessTokens } from '../core/verify/extract.ts';
import { AGENT_CARD_PATHS } from './a2a/card.ts';
import type { CompiledRoute, GatewayState } from './compile.ts';
import type { Exchange } from './exchange.ts';
import { upstreamRequestHeaders } from './http/headers.ts';
import { traceContext } from './http/trace.ts';
import { METADATA_PATH } from './mcp/metadata.ts';
import type { Decision } from './pipeline/run.ts';
import { asciiFoldedPath, hostMatches, hostOf } from './routes.ts';

export function repeatsCredentialHeader(raw: readonly string[]): boolean {
  let auth = 0;
  let dpop = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length === 13 && n.toLowerCase() === 'authorization') auth++;
    else if (n.length === 4 && n.toLowerCase() === 'dpop') dpop++;
  }
  return auth > 1 || dpop > 1;
}

/**
 * The secrets a recorded field must not carry: the value of each Authorization header the request
 * sent (whatever its scheme: a Bearer or DPoP token, a static token, Basic credentials), each
 * `access_token` of its query (RFC 6750 §2.3, how browser WebSocket clients present a token: the
 * same client may offer it as a subprotocol too) and the ones the operator configured
 * ({@link GatewayState.auditSecrets}).
 */
export function requestSecrets(s: GatewayState, req: IncomingMessage): readonly string[] {
  const inQuery = queryTokens(req.url ?? '');
  if (req.headers.authorization === undefined) return inQuery === undefined ? s.auditSecrets : [...inQuery, ...s.auditSecrets];
  // rawHeaders, not headersDistinct: that getter copies every header of the request, and a
  // repeated Authorization (refused, but recorded) must be hidden too.
  const raw = req.rawHeaders;
  const out: string[] = inQuery === undefined ? [] : [...inQuery];
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length !== 13 || n.toLowerCase() !== 'authorization') continue;
    const value = raw[i + 1] as string;
    const sp = value.indexOf(' ');
    const credential = (sp < 0 ? value : value.slice(sp + 1)).trim();
    if (credential !== '') out.push(credential);
  }
  return out.length === 0 ? s.auditSecrets : [...out, ...s.auditSecrets];
}

/** The non-empty `access_token` values of `url`'s query; `undefined` when none. */
function queryTokens(url: string): string[] | undefined {
  const found = queryAccessTokens(url).filter((t) => t !== '');
  return found.length === 0 ? undefined : found;
}

/** The header view the verifier gets: `req.headers`, or `headersDistinct` when a credential header
 * is repeated (Node keeps only the first Authorization in `headers`, which would hide the attack). */
export function headerBag(req: IncomingMessage): HeaderBag {
  return repeatsCredentialHeader(req.rawHeaders) ? req.headersDistinct : req.headers;
}

/** What the gateway decides about a connection's peer, once per connection and configuration. */
export interface Peer {
  /** The peer's address, IPv4-mapped IPv6 shown as IPv4. */
  readonly address: string;
  /** In `gateway.trust_proxy`. */
  readonly trustedProxy: boolean;
  /** In `gateway.forward_auth.allowed_peers`. */
  readonly forwardAuth: boolean;
}

interface KnownPeer extends Peer {
  /** The lists it was decided against (not the whole state: an idle connection must not keep a
   * reloaded-away configuration, its verifiers and caches alive). */
  readonly trustedProxies: GatewayState['trustedProxies'];
  readonly forwardAuthPeers: GatewayState['forwardAuthPeers'];
}

// A socket's peer address never changes, and keep-alive connections (a proxy's above all) carry
// many requests: the allowlist lookups (BlockList.check, a few µs each) are done once per
// connection. A reload compiles new lists, so open connections are decided again against them.
const peers = new WeakMap<Socket, KnownPeer>();

/** The connection's peer, as the current state sees it. */
export function peerOf(s: GatewayState, socket: Socket): Peer {
  const known = peers.get(socket);
  if (known !== undefined && known.trustedProxies === s.trustedProxies && known.forwardAuthPeers === s.forwardAuthPeers) return known;
  const raw = socket.remoteAddress;
  const peer: KnownPeer = {
    address: plainAddress(raw ?? ''),
    trustedProxy: peerAllowed(s.trustedProxies, raw),
    forwardAuth: peerAllowed(s.forwardAuthPeers, raw),
    trustedProxies: s.trustedProxies,
    forwardAuthPeers: s.forwardAuthPeers,
  };
  // A destroyed socket has no address: decide (deny) but do not remember.
  if (raw !== undefined) peers.set(socket, peer);
  return peer;
}

/** True when the connection comes from a proxy in `gateway.trust_proxy`. */
export function fromTrustedProxy(s: GatewayState, req: IncomingMessage): boolean {
  return peerOf(s, req.socket).trustedProxy;
}

/**
 * The request's URL at this gateway: what a DPoP proof's `htu` must name (RFC 9449 §4.3), and
 * where a query token is read. `server.public_url`; else, from a proxy in `gateway.trust_proxy`,
 * the URL it forwards (X-Forwarded-Proto and X-Forwarded-Host, their rightmost entries, else its
 * Host; see {@link lastForwardedEntry}); else the gateway's own base URL, `http://<server.host>:<port>`
 * as the token service derives its default issuer, with the port the connection came in on and,
 * for a wildcard `server.host`, the address it came to. Never the Host header of a caller: a proof made for another server (a captured one) would
 * pass with `Host:` naming that server.
 */
export function absoluteUrl(s: GatewayState, req: IncomingMessage): string {
  const url = req.url ?? '/';
  if (s.publicUrl !== undefined) return s.publicUrl.replace(/\/$/, '') + url;
  const socket = req.socket;
  const scheme = (socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  if (fromTrustedProxy(s, req)) return `${forwardedProto(req.headers['x-forwarded-proto']) || scheme}://${forwardedHost(req)}${url}`;
  const host = s.listenHost;
  return host === undefined
    ? `${localOrigin(scheme, socket.localAddress, socket.localPort)}${url}`
    : `${scheme}://${host}:${socket.localPort}${url}`;
}

/**
 * The origin the caller used, as its request says (Host, or what a trusted proxy forwards):
 * `server.public_url`'s, or the RFC 9728 metadata's, which names the resource as the caller
 * reached it. Nothing is decided on it.
 */
export function requestOrigin(s: GatewayState, req: IncomingMessage): string {
  const trusted = fromTrustedProxy(s, req);
  const proto =
    (trusted && forwardedProto(req.headers['x-forwarded-proto'])) || ((req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http');
  return `${proto}://${trusted ? forwardedHost(req) : req.headers.host || 'localhost'}`;
}

/** The host a trusted proxy forwards: X-Forwarded-Host (its rightmost entry), else its Host. */
function forwardedHost(req: IncomingMessage): string {
  return lastForwardedEntry(req.headers['x-forwarded-host']) || req.headers.host || 'localhost';
}

/** The host routes are matched against: X-Forwarded-Host (its rightmost entry) only from a trusted proxy. */
export function requestHost(s: GatewayState, req: IncomingMessage): string {
  return hostOf((fromTrustedProxy(s, req) && lastForwardedEntry(req.headers['x-forwarded-host'])) || req.headers.host);
}

export { validHost } from '../core/host.ts';

/**
 * True when the request is framed as the gateway forwards it, meaning unchanged: HTTP/1.1 or
 * HTTP/1.0 (llhttp also takes `HTTP/2.0` in a request line, which Node then reads as neither), and
 * a Transfer-Encoding that is `chunked` alone, on HTTP/1.1 only. An HTTP/1.0 message with one has
 * faulty framing (RFC 9112 §6.1: a peer that reads HTTP/1.0 may read its body as the next
 * request), and a coding other than `chunked` (`gzip, chunked`) is not decoded: the upstream would
 * get its coded bytes as the body, the coding dropped.
 */
export function framingValid(req: IncomingMessage): boolean {
  if (req.httpVersionMajor !== 1 || (req.httpVersionMinor !== 0 && req.httpVersionMinor !== 1)) return false;
  const te = req.headers['transfer-encoding'];
  return te === undefined || (req.httpVersionMinor === 1 && te.trim().toLowerCase() === 'chunked');
}

/**
 * True when the request's Host header is absent (HTTP/1.0) or present once and well-formed, and
 * the X-Forwarded-Host entry a trusted proxy wrote (the rightmost, the one read) is well-formed too. A malformed Host would otherwise
 * be routed by its first characters (`a.example.com@b`, `a, b`) while the upstream reads another.
 */
export function hostHeaderValid(s: GatewayState, req: IncomingMessage): boolean {
  const raw = req.rawHeaders;
  let count = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length === 4 && n.toLowerCase() === 'host') {
      count++;
      if (count > 1 || !validHost(raw[i + 1] as string)) return false;
    }
  }
  if (fromTrustedProxy(s, req)) {
    const fh = lastForwardedEntry(req.headers['x-forwarded-host']);
    if (fh !== undefined && !validHost(fh)) return false;
  }
  return true;
}

/**
 * The caller's address. From a trusted proxy, X-Forwarded-For is walked from the right: each hop
 * that is itself a trusted proxy is skipped, and the first one that is not is the client (the
 * entries left of it are the client's own claims and are not believed). A malformed entry stops
 * the walk at the last trusted hop.
 */
export function remoteOf(s: GatewayState, req: IncomingMessage): string {
  const p = peerOf(s, req.socket);
  return forwardedClient(s.trustedProxies, p.address, p.trustedProxy, req.headers['x-forwarded-for']).client;
}

/** The client's address for an allowlist such as `metrics_allowed_peers` (`core/peers.ts`, {@link allowlistClient}). */
export function allowlistClientOf(s: GatewayState, req: IncomingMessage): string | undefined {
  return allowlistClient(s.trustedProxies, peerOf(s, req.socket), req.headers);
}

/**
 * The first route taking the request, `undefined` when none does (`route_not_found`), or
 * `'path_invalid'` (`request_path_invalid`) when a route matching paths without case, reached
 * first, matches the path as an upstream ignoring case or normalizing Unicode may read it,
 * characters outside ASCII read as ASCII (`/adm%C4%B1n` and `/%EF%BD%81dmin` as `/admin`: see
 * asciiFoldedPath), or reaches a request whose path so read has another shape (`／`, `．`):
 * neither that route nor a later, laxer one gets it. A path no such route would take, even so read (`/wiki/Stra%C3%9Fe`
 * beside a case-insensitive `/admin`), goes on to the routes after it.
 */
export function findRoute(s: GatewayState, host: string, path: string, method: string): CompiledRoute | 'path_invalid' | undefined {
  // TRACE is never routed: an upstream that echoes it (Apache's default) would send the injected
  // credential back to the caller.
  if (method === 'TRACE') return undefined;
  const routes = s.routes;
  // null: not computed yet (only once a case-insensitive route is tried).
  let folded: string | false | undefined | null = null;
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i] as CompiledRoute;
    if (r.foldGuard !== undefined) {
      if (folded === null) folded = asciiFoldedPath(path);
      if (folded === false ? r.foldGuard(host, method) : folded !== undefined && r.matches(host, folded, method)) return 'path_invalid';
    }
    if (r.matches(host, path, method)) return r;
  }
  return undefined;
}

/** The A2A route whose agent card `path` asks for, if it is an agent-card path. */
export function cardRoute(s: GatewayState, host: string, path: string): CompiledRoute | undefined {
  if (!s.hasA2a) return undefined;
  const suffix = AGENT_CARD_PATHS.find((p) => path.endsWith(p));
  if (suffix === undefined) return undefined;
  const base = path.slice(0, path.length - suffix.length);
  for (const r of s.routes) {
    if (!r.a2a) continue;
    const h = r.config.match.host;
    if (h !== undefined && !hostMatches(h, host)) continue;
    if (base === '' || base === r.prefix) return r;
  }
  return undefined;
}

/** The MCP route whose RFC 9728 metadata `path` asks for (`/.well-known/oauth-protected-resource`
 * followed by the path of the route's `mcp.resource`, else its path prefix; the bare form answers
 * for the first MCP route on the host). */
export function metadataRoute(s: GatewayState, host: string, path: string): CompiledRoute | undefined {
  if (!s.hasMcp || !path.startsWith(METADATA_PATH)) return undefined;
  let suffix = path.slice(METADATA_PATH.length);
  if (suffix !== '' && suffix.charCodeAt(0) !== 0x2f) return undefined;
  if (suffix.endsWith('/')) suffix = suffix.slice(0, -1);
  for (const r of s.routes) {
    if (!r.mcp) continue;
    const h = r.config.match.host;
    if (h !== undefined && !hostMatches(h, host)) continue;
    // A derived resource's document also stays at the bare prefix, where it was served before the
    // path of `server.public_url` counted (its challenge names the full path).
    if (suffix === '' || suffix === r.mcp.metadataPath || (r.mcp.resource === undefined && suffix === r.mcp.prefix)) return r;
  }
  return undefined;
}

export function upstreamPath(route: CompiledRoute, path: string, query: string): string {
  const u = route.upstream;
  let rest = path;
  // Matched as the route and its rules are (without case on a case-insensitive route, literally or
  // percent-encoded for `@`): the prefix the gateway decided on is the one removed.
  const end = u.stripEnd === undefined ? -1 : u.stripEnd(path);
  if (end >= 0) rest = path.slice(end);
  const joined = u.basePath + rest;
  return (joined === '' ? '/' : joined) + query;
}

/**
 * The gateway path reaching upstream path `path` (a URL's, normalized) on `route`, the inverse of
 * {@link upstreamPath}: `path` at or under the upstream URL's own path, that removed and the
 * route's `strip_prefix` put back, when the route takes it (on `host`, by POST) and the gateway
 * sends it back to `path`; else `undefined`. An agent card's URLs are named at the gateway so.
 */
export function gatewayPath(route: CompiledRoute, host: string, path: string): string | undefined {
  const base = route.upstream.basePath;
  let rest: string;
  if (base === '') rest = path;
  else if (path === base) rest = '';
  else if (path.startsWith(`${base}/`)) rest = path.slice(base.length);
  else return undefined;
  const own = (route.config.upstream.strip_prefix?.replace(/\/$/, '') ?? '') + rest || '/';
  if (!route.matches(host, own, 'POST')) return undefined;
  return upstreamPath(route, own, '') === (path || '/') ? own : undefined;
}

/** A token, shorter secrets whole: as long as the shortest token Tessera deals in (see core/secret-shape.ts). */
const SECRET_INSIDE_MIN = 16;

/**
 * `Sec-WebSocket-Protocol` without the subprotocols that carry one of `secrets` (the credential the
 * request presented, the ones configured): browsers cannot set Authorization on a WebSocket, so
 * clients offer the token as a subprotocol (`bearer, <token>`, also beside Authorization). The
 * gateway consumed that token; the upstream must not get it. `undefined` when none is left.
 */
export function subprotocolsWithoutSecrets(value: string | string[], secrets: readonly string[]): string | undefined {
  const kept: string[] = [];
  for (const raw of (Array.isArray(value) ? value.join(',') : value).split(',')) {
    const p = raw.trim();
    if (p === '') continue;
    if (carriesSecret(p, secrets)) continue;
    kept.push(p);
  }
  return kept.length === 0 ? undefined : kept.join(', ');
}

/**
 * True when a `Sec-WebSocket-Protocol` value (or several) offers a subprotocol carrying one of
 * `secrets`: the entries {@link subprotocolsWithoutSecrets} removes. Behind forward-auth the proxy,
 * not the gateway, forwards the header, so such a check is refused instead.
 */
export function subprotocolsCarrySecret(value: string | readonly string[], secrets: readonly string[]): boolean {
  for (const raw of (typeof value === 'string' ? value : value.join(',')).split(',')) {
    const p = raw.trim();
    if (p !== '' && carriesSecret(p, secrets)) return true;
  }
  return false;
}

function carriesSecret(entry: string, secrets: readonly string[]): boolean {
  return secrets.some(
    (secret) =>
      secret !== '' &&
      (entry === secret || (secret.length >= SECRET_INSIDE_MIN && (entry.includes(secret) || encodedInside(entry, secret)))),
  );
}

/**
 * A subprotocol can only hold token characters (RFC 6455 §4.1), so clients that put a credential
 * in one encode it: Kubernetes' `base64url.bearer.authorization.k8s.io.<base64url(token)>` is the
 * common form. True when a dot-separated segment of `entry`, read as base64 or base64url, holds
 * `secret` (Buffer's decoder accepts both alphabets and ignores what is not base64).
 */
function encodedInside(entry: string, secret: string): boolean {
  // Shorter segments cannot encode a secret of this length.
  const min = Math.floor((secret.length * 4) / 3);
  for (const segment of entry.split('.')) {
    if (segment.length >= min && Buffer.from(segment, 'base64').toString('latin1').includes(secret)) return true;
  }
  return false;
}

export function upstreamHeaders(
  s: GatewayState,
  req: IncomingMessage,
  route: CompiledRoute,
  decision: Decision & { ok: true },
  x: Exchange,
) {
  const extra = decision.headers;
  extra['x-request-id'] = x.requestId;
  const trace = traceContext(req.headers.traceparent, req.headers.tracestate);
  extra.traceparent = trace.traceparent;
  if (trace.tracestate !== undefined) extra.tracestate = trace.tracestate;
  if (route.upstream.preserveHost && req.headers.host !== undefined) extra.host = req.headers.host;
  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
  const headers = upstreamRequestHeaders(
    req.headers,
    s.headerPolicy,
    {
      remoteAddress: req.socket.remoteAddress ?? '',
      proto: encrypted ? 'https' : 'http',
      host: req.headers.host ?? '',
      trustProxy: fromTrustedProxy(s, req),
    },
    extra,
  );
  const protocols = headers['sec-websocket-protocol'];
  if (protocols !== undefined && x.secrets.length > 0) {
    const kept = subprotocolsWithoutSecrets(protocols, x.secrets);
    if (kept === undefined) delete headers['sec-websocket-protocol'];
    else headers['sec-websocket-protocol'] = kept;
  }
  return headers;
}

function forwardedProto(v: string | string[] | undefined): string | undefined {
  const p = lastForwardedEntry(v)?.toLowerCase();
  return p === 'http' || p === 'https' ? p : undefined;
}
