/**
 * Forward-auth: the gateway's decision pipeline as an authorization endpoint for the proxies people
 * already run. Each proxy describes the original request differently, and the configured
 * `gateway.forward_auth.flavor` says which one calls: only that proxy's headers are read, never
 * guessed from which headers happen to be present (a client behind Traefik could otherwise add
 * `X-Original-URI` and have a different path decided than the one Traefik forwards).
 *
 * - `nginx` (`auth_request`): a subrequest to the endpoint; the example config sets
 *   `X-Original-URI`, `X-Original-Method`, `X-Original-Host` (required), `X-Original-Proto` and
 *   `X-Real-IP` (optional);
 * - `traefik` (`ForwardAuth`) and `caddy` (`forward_auth`): `X-Forwarded-Method`, `-Uri`, `-Host`
 *   (required), `-Proto` and `-For` (optional; its last hop is the address the proxy saw);
 * - `envoy` (HTTP `ext_authz`): the original method, the endpoint path as `path_prefix` followed by
 *   the original path, and the original Host.
 *
 * A header the flavor needs that is missing or sent more than once makes the check invalid, as
 * does a proto other than `http` or `https` or a method not in upper case.
 *
 * The answer is 200 with the headers to inject upstream (credential, identity, request id) or the
 * refusal the caller must see. nginx only understands 2xx, 401 and 403 from `auth_request`, so its
 * refusals are folded into those (`nginxStatus`).
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';
import { lastForwardedEntry } from '../core/host.ts';
import { reportedAddress } from '../core/peers.ts';

export const FORWARD_AUTH_FLAVORS = ['nginx', 'traefik', 'caddy', 'envoy'] as const;
export type ForwardAuthFlavor = (typeof FORWARD_AUTH_FLAVORS)[number];

export interface OriginalRequest {
  readonly flavor: ForwardAuthFlavor;
  readonly method: string;
  /** Origin-form target (`/path?query`). */
  readonly uri: string;
  /** Host header value as the caller sent it (may include a port). */
  readonly host: string | undefined;
  readonly proto: string;
  /**
   * The caller's address as the proxy reports it, when it is one ({@link reportedAddress});
   * `undefined` when absent or not an address (the check's own peer is recorded instead).
   */
  readonly remoteAddress: string | undefined;
}

const MISSING = Symbol('missing');
const REPEATED = Symbol('repeated');

/** The single value of header `name`: MISSING, or REPEATED when sent more than once. */
function single(req: IncomingMessage, name: string): string | typeof MISSING | typeof REPEATED {
  // rawHeaders, not headersDistinct: that getter copies every header of the request.
  const raw = req.rawHeaders;
  let found: string | typeof MISSING = MISSING;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length === name.length && n.toLowerCase() === name) {
      if (found !== MISSING) return REPEATED;
      found = raw[i + 1] as string;
    }
  }
  return found;
}

/** The value of header `name` (lowercase) when it was sent exactly once, else `undefined`. */
export function sentOnce(req: IncomingMessage, name: string): string | undefined {
  const v = single(req, name);
  return typeof v === 'string' ? v : undefined;
}

/** A required header, or `undefined` when it is missing, repeated or empty. */
function required(req: IncomingMessage, name: string): string | undefined {
  const v = single(req, name);
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** An optional header: `null` when absent, `undefined` when repeated (the check is invalid). */
function optional(req: IncomingMessage, name: string): string | null | undefined {
  const v = single(req, name);
  if (v === MISSING) return null;
  if (v === REPEATED) return undefined;
  return v;
}

/**
 * A method as the proxy reports it: upper-case letters. Methods are case-sensitive (RFC 9110
 * §9.1), and Go's proxies (Traefik, Caddy) pass `get` as sent: decided as GET, it would reach an
 * upstream that may not read it as one (Go's `GET /x` patterns do not match it). At most 32 of
 * them (the longest registered method has 17): they pass any token a client sends, and the
 * method is recorded in the check's audit event, where 12 KB of it took 12 KB per check.
 */
const METHOD = /^[A-Z]{1,32}$/;

/**
 * The scheme header `name` reports, lower case: `http` or `https` (`http` when absent; Traefik's
 * `ws` and `wss` on a WebSocket upgrade read as `http` and `https`, the URL of the upgrade
 * request), else `undefined` (the check is invalid). It starts the URL a DPoP proof must name
 * (`<proto>://<host><uri>`): any other text (`http://other.example/x#`) would make that URL
 * another server's, and a proof captured there would pass.
 */
function scheme(req: IncomingMessage, name: string): string | undefined {
  const v = optional(req, name);
  if (v === null) return 'http';
  const p = v?.toLowerCase();
  if (p === 'http' || p === 'https') return p;
  return p === 'ws' ? 'http' : p === 'wss' ? 'https' : undefined;
}

/**
 * Read the original request from a forward-auth call to `base` (the configured endpoint path) by
 * a proxy of `flavor`, or `undefined` when the call does not describe one: a header the flavor
 * needs is missing or repeated, or the endpoint is called in another flavor's form.
 */
export function originalRequest(req: IncomingMessage, base: string, flavor: ForwardAuthFlavor): OriginalRequest | undefined {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (flavor === 'envoy') {
    // Envoy ext_authz: <path_prefix><original path>
    if (!(url.length > base.length && url.charCodeAt(base.length) === 0x2f && url.startsWith(base))) return undefined;
    const host = required(req, 'host');
    const proto = scheme(req, 'x-forwarded-proto');
    const xff = optional(req, 'x-forwarded-for');
    const method = req.method ?? '';
    if (host === undefined || proto === undefined || xff === undefined || !METHOD.test(method)) return undefined;
    return {
      flavor,
      method,
      uri: url.slice(base.length),
      host,
      proto,
      remoteAddress: xff === null ? undefined : reportedAddress(lastForwardedEntry(xff)),
    };
  }
  // nginx, Traefik and Caddy call the endpoint itself.
  if (path !== base) return undefined;
  const names =
    flavor === 'nginx'
      ? { uri: 'x-original-uri', method: 'x-original-method', host: 'x-original-host', proto: 'x-original-proto' }
      : { uri: 'x-forwarded-uri', method: 'x-forwarded-method', host: 'x-forwarded-host', proto: 'x-forwarded-proto' };
  const uri = required(req, names.uri);
  const method = required(req, names.method);
  const host = required(req, names.host);
  const proto = scheme(req, names.proto);
  if (uri === undefined || method === undefined || host === undefined || proto === undefined || !METHOD.test(method)) return undefined;
  let remoteAddress: string | undefined;
  if (flavor === 'nginx') {
    const ip = optional(req, 'x-real-ip');
    if (ip === undefined) return undefined;
    remoteAddress = reportedAddress(ip ?? undefined);
  } else {
    const xff = optional(req, 'x-forwarded-for');
    if (xff === undefined) return undefined;
    remoteAddress = xff === null ? undefined : reportedAddress(lastForwardedEntry(xff));
  }
  return { flavor, method, uri, host, proto, remoteAddress };
}
