/**
 * Forward-auth: the gateway's decision pipeline as an authorization endpoint for the proxies people
 * already run. Each proxy describes the original request differently:
 *
 * - nginx `auth_request`: a subrequest to the endpoint with the original headers; the example
 *   config adds `X-Original-URI`, `X-Original-Method` and `X-Original-Host`;
 * - Traefik `ForwardAuth`: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For`;
 * - Envoy HTTP `ext_authz`: the original method, the endpoint path as `path_prefix` followed by the
 *   original path, and the original Host.
 *
 * The answer is 200 with the headers to inject upstream (credential, identity, request id) or the
 * refusal the caller must see. nginx only understands 2xx, 401 and 403 from `auth_request`, so its
 * refusals are folded into those (`nginxStatus`).
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';

export type ForwardAuthFlavor = 'nginx' | 'traefik' | 'envoy';

export interface OriginalRequest {
  readonly flavor: ForwardAuthFlavor;
  readonly method: string;
  /** Origin-form target (`/path?query`). */
  readonly uri: string;
  /** Host header value as the caller sent it (may include a port). */
  readonly host: string | undefined;
  readonly proto: string;
  /** The caller's address, as the proxy reports it. */
  readonly remoteAddress: string | undefined;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? undefined : v;
}

function firstHop(v: string | string[] | undefined): string | undefined {
  const s = one(v);
  if (s === undefined) return undefined;
  const first = s.split(',')[0]?.trim();
  return first === '' ? undefined : first;
}

/**
 * Read the original request from a forward-auth call to `base` (the configured endpoint path), or
 * `undefined` when the call does not describe one (a duplicated or missing header is not guessed
 * at).
 */
export function originalRequest(req: IncomingMessage, base: string): OriginalRequest | undefined {
  const url = req.url ?? '/';
  const h = req.headers;
  const remote = one(h['x-real-ip']) ?? firstHop(h['x-forwarded-for']);
  if (url.length > base.length && url.charCodeAt(base.length) === 0x2f && url.startsWith(base)) {
    // Envoy ext_authz: <path_prefix><original path>
    return {
      flavor: 'envoy',
      method: req.method ?? 'GET',
      uri: url.slice(base.length),
      host: one(h.host),
      proto: one(h['x-forwarded-proto']) ?? 'http',
      remoteAddress: remote,
    };
  }
  const nginxUri = h['x-original-uri'];
  if (nginxUri !== undefined) {
    const uri = one(nginxUri);
    const method = one(h['x-original-method']);
    if (uri === undefined || method === undefined) return undefined;
    return {
      flavor: 'nginx',
      method: method.toUpperCase(),
      uri,
      host: one(h['x-original-host']) ?? one(h.host),
      proto: one(h['x-original-proto']) ?? one(h['x-forwarded-proto']) ?? 'http',
      remoteAddress: remote,
    };
  }
  const traefikUri = h['x-forwarded-uri'];
  if (traefikUri !== undefined) {
    const uri = one(traefikUri);
    const method = one(h['x-forwarded-method']);
    if (uri === undefined || method === undefined) return undefined;
    return {
      flavor: 'traefik',
      method: method.toUpperCase(),
      uri,
      host: one(h['x-forwarded-host']) ?? one(h.host),
      proto: one(h['x-forwarded-proto']) ?? 'http',
      remoteAddress: remote,
    };
  }
  return undefined;
}
