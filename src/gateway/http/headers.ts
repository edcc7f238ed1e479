/**
 * Header hygiene between caller and upstream (RFC 9110 §7.6.1, RFC 7239), as pure functions.
 *
 * Toward the upstream: hop-by-hop headers (and every header the `Connection` header names) are
 * dropped; the caller's credentials (`Authorization`, `DPoP`, Tessera's login cookies, configured cookies,
 * `Proxy-Authorization`) never pass; inbound copies of the identity headers the gateway sets are
 * removed, also spelled with underscores, so a caller cannot spoof them; `X-Forwarded-*` and
 * `Forwarded` are rebuilt (appended to only when the peer is a trusted proxy); `X-Request-Id` and
 * `traceparent` are set by the gateway.
 *
 * Toward the caller: hop-by-hop headers from the upstream are dropped (`Proxy-Authenticate` among
 * them), and `WWW-Authenticate` too on a route that injects the upstream's own credential.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import { lastForwardedEntry } from '../../core/host.ts';
import { plainAddress } from '../../core/peers.ts';
import { LOGIN_COOKIE_NAMES } from '../../server/authenticator.ts';

/** RFC 9110 §7.6.1 connection-specific fields, plus the non-standard ones proxies also drop. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Response headers that describe the upstream's bytes, not a body the gateway rewrote (an A2A extended card, an MCP tools/list). */
export const REPRESENTATION_HEADERS: ReadonlySet<string> = new Set([
  'content-length',
  'transfer-encoding',
  'content-encoding',
  'content-range',
  'content-md5',
  'digest',
  'content-digest',
  'repr-digest',
  'etag',
]);

/**
 * Headers that tell an upstream to act on another method or path than the request's own. The
 * gateway removes them; a forward-auth check that carries one is refused, since there the proxy,
 * not the gateway, forwards the request.
 */
export const OVERRIDE_HEADERS: readonly string[] = [
  // Method overrides: the gateway authorized the request's real method; an upstream honouring an
  // override would execute another one (a GET allowed with api:read run as DELETE).
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  // Path overrides (IIS URL Rewrite, Symfony, Zend): the gateway authorized the request's path; an
  // upstream honouring one would serve another.
  'x-original-url',
  'x-rewrite-url',
];

/**
 * What a proxy in front of an upstream says the original request was (nginx auth_request setups,
 * PHP apps); an upstream trusting the caller's copy would act on another request than the one
 * authorized. Not override headers: forward-auth reads them from nginx; behind any other proxy they
 * are the caller's, and a check carrying one is refused too ({@link carriesOverrideHeader}).
 * (X-Forwarded-Uri, -Method and -Prefix go with every X-Forwarded-*.)
 */
export const ORIGINAL_REQUEST_HEADERS: readonly string[] = ['x-original-uri', 'x-original-method', 'x-original-host', 'x-original-proto'];

/** Header names looked for by {@link carriesOverrideHeader}, with the length bounds every one is within. */
interface NameSet {
  readonly names: ReadonlySet<string>;
  readonly min: number;
  readonly max: number;
}

function nameSet(names: readonly string[]): NameSet {
  const lengths = names.map((n) => n.length);
  return { names: new Set(names), min: Math.min(...lengths), max: Math.max(...lengths) };
}

const OVERRIDES = nameSet(OVERRIDE_HEADERS);
const OVERRIDES_AND_ORIGINALS = nameSet([...OVERRIDE_HEADERS, ...ORIGINAL_REQUEST_HEADERS]);

/**
 * True when raw headers (`[name, value, …]`) carry one of {@link OVERRIDE_HEADERS}, or with
 * `originals` one of {@link ORIGINAL_REQUEST_HEADERS} too, also spelled with `_` for `-`
 * (CGI-style servers read `X_HTTP_Method_Override` as the dashed name). One pass over the headers.
 */
export function carriesOverrideHeader(rawHeaders: readonly string[], originals = false): boolean {
  const { names, min, max } = originals ? OVERRIDES_AND_ORIGINALS : OVERRIDES;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    // Every name looked for starts with `x-`: most headers are passed over without a lower-casing.
    if (name.length < min || name.length > max || (name.charCodeAt(0) | 0x20) !== 0x78) continue;
    if (names.has(name.toLowerCase().replaceAll('_', '-'))) return true;
  }
  return false;
}

/**
 * Headers that name the client's address besides `X-Forwarded-For`, `Forwarded` and `X-Real-IP`
 * (CDNs', load balancers' and ingresses' own): frameworks and libraries (request-ip, Rails'
 * RemoteIp, Spring, rate limiters, allow-lists) read them, often before X-Forwarded-For. Passed on,
 * a caller's copy would let it choose the address the upstream sees, as Envoy's untrusted
 * `x-envoy-*` headers would; the gateway's own X-Forwarded-For and Forwarded carry the address
 * instead. Removed even from a trusted proxy, which appends to X-Forwarded-For but may relay these
 * as its client sent them.
 */
export const CLIENT_IP_HEADERS: readonly string[] = [
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'cf-pseudo-ipv4',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'x-appengine-user-ip',
  'client-ip',
  'x-forwarded',
  'forwarded-for',
  'x-original-forwarded-for',
  'x-envoy-external-address',
];

/** Inbound headers the gateway always removes or replaces. */
const ALWAYS_STRIPPED = [
  'host',
  'authorization',
  'dpop',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-real-ip',
  ...CLIENT_IP_HEADERS,
  'x-request-id',
  'traceparent',
  'tracestate',
  // undici refuses it (it does not implement 100-continue); Node already answered the caller.
  'expect',
  ...OVERRIDE_HEADERS,
  ...ORIGINAL_REQUEST_HEADERS,
  // httpoxy (CVE-2016-5385): CGI-style upstreams expose it as HTTP_PROXY, which HTTP clients read
  // as their outbound proxy, sending the upstream's own requests (and credentials) to the caller.
  'proxy',
  // HTTP/2 downgrade and smuggling vectors.
  'http2-settings',
  'content-length-override',
];

/** What is known about the inbound connection. */
export interface ForwardedFacts {
  /** The peer address (the caller, or the proxy in front of the gateway). */
  readonly remoteAddress: string;
  /** The scheme the caller used (`http` or `https`). */
  readonly proto: string;
  /** The Host the caller used. */
  readonly host: string;
  /** Whether the peer is a trusted proxy whose `X-Forwarded-*`/`Forwarded` may be extended. */
  readonly trustProxy: boolean;
}

/** Compiled header policy for one gateway configuration. */
export interface HeaderPolicy {
  /** Lower-case names never forwarded (besides hop-by-hop). */
  readonly stripped: ReadonlySet<string>;
  /** Cookie names never forwarded. */
  readonly strippedCookies: ReadonlySet<string>;
}

/** Build the header policy from the configured identity header names, extra headers and cookies. */
export function compileHeaderPolicy(
  identityHeaders: readonly string[],
  extra: readonly string[],
  cookies: readonly string[],
): HeaderPolicy {
  return {
    stripped: new Set([...ALWAYS_STRIPPED, ...identityHeaders.map((h) => h.toLowerCase()), ...extra.map((h) => h.toLowerCase())]),
    // The token service's login cookies arrive too (same listener, Path=/): an upstream holding
    // the session cookie could approve grants at /oauth2/authorize as the person.
    strippedCookies: new Set([...LOGIN_COOKIE_NAMES, ...cookies]),
  };
}

/** Header names listed in a `Connection` header (other than `close`/`keep-alive`/`upgrade`). */
export function connectionNamed(value: string | string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const v = Array.isArray(value) ? value.join(',') : value;
  let out: string[] | undefined;
  for (const raw of v.split(',')) {
    const t = raw.trim().toLowerCase();
    if (t === '' || t === 'close' || t === 'keep-alive' || t === 'upgrade') continue;
    (out ??= []).push(t);
  }
  return out;
}

/** Remove the named cookies from a `Cookie` header value; `undefined` when none remain. */
export function filterCookies(value: string, names: ReadonlySet<string>): string | undefined {
  if (names.size === 0) return value;
  const kept: string[] = [];
  for (const part of value.split(';')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    const name = (eq < 0 ? p : p.slice(0, eq)).trim();
    if (!names.has(name)) kept.push(p);
  }
  return kept.length ? kept.join('; ') : undefined;
}

function isIPv6(address: string): boolean {
  return address.indexOf(':') >= 0;
}

function isToken(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    // tchar (RFC 9110 §5.6.2): alphanumerics and !#$%&'*+-.^_`|~
    const alnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    if (!alnum && "!#$%&'*+-.^_`|~".indexOf(value[i] as string) < 0) return false;
  }
  return value.length > 0;
}

/** RFC 7239 §4 node and value syntax: IPv6 in brackets and quoted; other non-token values quoted. */
function forwardedValue(value: string, node: boolean): string {
  if (node && isIPv6(value)) return `"[${value}]"`;
  return isToken(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`;
}

function joinHeader(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value.join(', ') : value;
}

function underscoreStripped(name: string, stripped: ReadonlySet<string>, extra: Readonly<Record<string, string>>): boolean {
  const dashed = name.replaceAll('_', '-');
  return HOP_BY_HOP.has(dashed) || stripped.has(dashed) || dashed.startsWith('x-forwarded-') || Object.hasOwn(extra, dashed);
}

/**
 * The headers to send upstream for an inbound request. `extra` (the upstream credential, identity
 * headers, request id, trace context) is added last and wins.
 *
 * @example
 * ```ts
 * const policy = compileHeaderPolicy(['x-tessera-subject'], [], ['session']);
 * upstreamRequestHeaders(req.headers, policy, { remoteAddress: '10.0.0.9', proto: 'https', host: 'api.example.com', trustProxy: false },
 *   { authorization: 'Bearer upstream-token', 'x-request-id': id });
 * ```
 */
export function upstreamRequestHeaders(
  inbound: IncomingHttpHeaders,
  policy: HeaderPolicy,
  facts: ForwardedFacts,
  extra: Readonly<Record<string, string>>,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const named = inbound.connection === undefined ? undefined : connectionNamed(inbound.connection);
  const { stripped } = policy;
  for (const name in inbound) {
    if (HOP_BY_HOP.has(name) || stripped.has(name)) continue;
    // Every X-Forwarded-* is the gateway's to set: a caller's own X-Forwarded-Ssl or -Scheme would
    // tell the upstream the request came over TLS, -Uri or -Method describe another request.
    if (name.startsWith('x-forwarded-')) continue;
    // CGI-style servers (WSGI, PHP, Rack) read `X_Tessera_Subject` as `X-Tessera-Subject`: an
    // underscore spelling of a removed header, or of one the gateway sets (`X_Api_Key` for a
    // credential in `X-Api-Key`), is removed too.
    if (name.indexOf('_') >= 0 && underscoreStripped(name, stripped, extra)) continue;
    const value = inbound[name];
    if (value === undefined) continue;
    if (named !== undefined && named.includes(name)) continue;
    if (name === 'cookie') {
      const kept = filterCookies(Array.isArray(value) ? value.join('; ') : value, policy.strippedCookies);
      if (kept !== undefined) out.cookie = kept;
      continue;
    }
    out[name] = value;
  }
  const remote = plainAddress(facts.remoteAddress);
  const priorFor = facts.trustProxy ? joinHeader(inbound['x-forwarded-for']) : undefined;
  out['x-forwarded-for'] = priorFor ? `${priorFor}, ${remote}` : remote;
  // The entry the trusted proxy wrote (the rightmost): the one the gateway decided on.
  out['x-forwarded-proto'] = (facts.trustProxy && lastForwardedEntry(inbound['x-forwarded-proto'])) || facts.proto;
  // An HTTP/1.0 request may come without Host (RFC 9112 §3.2 requires it of HTTP/1.1 only): no
  // host is then named, rather than an empty one (RFC 7239 §5.3: the parameter is optional).
  const forwardedHost = (facts.trustProxy && lastForwardedEntry(inbound['x-forwarded-host'])) || facts.host;
  if (forwardedHost !== '') out['x-forwarded-host'] = forwardedHost;
  const host = facts.host === '' ? '' : `;host=${forwardedValue(facts.host, false)}`;
  const element = `for=${forwardedValue(remote, true)}${host};proto=${facts.proto}`;
  const priorForwarded = facts.trustProxy ? joinHeader(inbound.forwarded) : undefined;
  out.forwarded = priorForwarded ? `${priorForwarded}, ${element}` : element;
  for (const name in extra) out[name] = extra[name] as string;
  return out;
}

const LOGIN_COOKIES_LOWER: ReadonlySet<string> = new Set(LOGIN_COOKIE_NAMES.map((n) => n.toLowerCase()));

/**
 * A `Set-Cookie` value that sets (or clears) one of the token service's login cookies, as a
 * browser reads its name (RFC 6265bis §5.7): trimmed, any case (prefixes are matched so), and a
 * nameless cookie whose value is `name=…` (sent back as `name=…`).
 */
function setsLoginCookie(value: string): boolean {
  const pair = value.split(';', 1)[0] as string;
  const eq = pair.indexOf('=');
  let name = eq < 0 ? '' : pair.slice(0, eq).trim();
  if (name === '') {
    const rest = eq < 0 ? pair : pair.slice(eq + 1);
    const inner = rest.indexOf('=');
    name = inner < 0 ? rest.trim() : rest.slice(0, inner).trim();
  }
  return LOGIN_COOKIES_LOWER.has(name.toLowerCase());
}

/**
 * The upstream response headers to send to the caller (hop-by-hop removed). Accepts undici's raw
 * `[name, value, name, value…]` buffers; returns a flat `[name, value…]` list for `writeHead`.
 * With `ownCredential` (the gateway injected the upstream's credential) the upstream's
 * `WWW-Authenticate` is removed too: its challenge is about a credential the caller never holds.
 * The upstream's `DPoP-Nonce` is removed: the gateway checks the caller's proofs and hands out
 * their nonces (`add` may carry one).
 * A `Set-Cookie` of the token service's login cookies is removed: the upstream shares the origin,
 * and one planting a session or login state cookie someone copied from their own browser would
 * sign the caller in as that someone (login CSRF), or clearing one would sign them out.
 */
export function callerResponseHeaders(raw: readonly (Buffer | string)[], add?: readonly string[], ownCredential = false): string[] {
  const out: string[] = [];
  let named: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') named = connectionNamed(raw[i + 1]!.toString('latin1'));
      continue;
    }
    if (ownCredential && lower === 'www-authenticate') continue;
    // The caller's DPoP nonces are the gateway's (RFC 9449 §9): one the upstream sets would be
    // refused in the next proof (or, on a route without nonces, never asked for).
    if (lower === 'dpop-nonce') continue;
    const value = raw[i + 1]!.toString('latin1');
    if (lower === 'set-cookie' && setsLoginCookie(value)) continue;
    out.push(lower, value);
  }
  if (named !== undefined) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.includes(out[i]!)) out.splice(i, 2);
  }
  if (add) for (const v of add) out.push(v);
  return out;
}

const SAFE_VALUE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/**
 * Make an identity value safe for a header: printable ASCII passes; anything else (a `sub` with
 * spaces at the ends, non-ASCII, CR/LF) is percent-encoded, so it can neither break the header
 * framing nor be mistaken for another value.
 */
export function headerSafe(value: string): string {
  return SAFE_VALUE.test(value) && value.indexOf(',') < 0 && value.indexOf('%') < 0 ? value : encodeURIComponent(value);
}
