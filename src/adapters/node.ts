/**
 * `node:http` adapter.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createVerifier } from 'tessera';
 * import { nodeAuth } from 'tessera/adapters/node';
 *
 * // publicUrl: the URL clients call, which their DPoP proofs name (see NodeAdapterOptions).
 * const auth = nodeAuth(createVerifier(options), { publicUrl: 'https://api.example.com' });
 * createServer(async (req, res) => {
 *   const principal = await auth(req, res); // on refusal the response is already written
 *   if (!principal) return;
 *   res.end(`hello ${principal.subject}`);
 * }).listen(8080);
 * ```
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { ConfigError } from '../core/errors.ts';
import { localOrigin, validHost } from '../core/host.ts';
import type { VerifyRequest } from '../core/verify/extract.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import { denyResponse } from './response.ts';

export interface NodeAdapterOptions {
  /**
   * The external origin of the protected API, as its clients call it (`https://api.example.com`;
   * no path, query or credentials): the request URL a DPoP proof's `htu` must name (RFC 9449 §4.3)
   * is this followed by the request's path. Set it whenever DPoP tokens are accepted (`dpop.mode`
   * `allowed`, the default, or `required`) and clients reach the API under a name of its own.
   *
   * Without it the URL is the one a proxy forwards when {@link NodeAdapterOptions.trustProxy} is
   * set, else `http(s)://<address>:<port>` the connection arrived at: never the caller's Host
   * header, which would let a proof made for another server (and captured there) pass with
   * `Host:` naming that server. So without `publicUrl`, a proof for `https://api.example.com/...`
   * is refused (`invalid_dpop_proof`, "for another URI") unless a trusted proxy forwards that URL;
   * bearer tokens are not affected. An invalid value throws a `ConfigError` when the middleware is
   * created.
   *
   * @example
   * ```ts
   * app.use(expressAuth(verifier, { publicUrl: 'https://api.example.com' }));
   * ```
   */
  readonly publicUrl?: string;
  /**
   * Trust `X-Forwarded-Proto` and `X-Forwarded-Host` (else the Host the proxy sends) for the
   * request URL (DPoP `htu` checks) when `publicUrl` is not set. Only behind a proxy that sets
   * them and that every request passes through; otherwise a caller could choose the URL it is
   * checked against.
   */
  readonly trustProxy?: boolean;
  /** Form body for RFC 6750 §2.2 tokens, when `transport.form_body` is enabled. */
  readonly body?: (req: IncomingMessage) => VerifyRequest['body'];
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * A parsed request body (Express `req.body`, Fastify `request.body`) as form parameters, for
 * RFC 6750 §2.2. Never throws: arrays become repeated parameters (so two `access_token`s stay
 * two), and any other non-string value becomes an empty one, which the extractor refuses if it
 * is `access_token`. A body that is not a plain object (a JSON array, a Buffer) has no parameters.
 */
export function formParams(body: unknown): URLSearchParams | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body) || Buffer.isBuffer(body)) return undefined;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(body)) {
    if (Array.isArray(value)) for (const v of value) params.append(name, typeof v === 'string' ? v : '');
    else params.append(name, typeof value === 'string' ? value : '');
  }
  return params;
}

/**
 * `publicUrl` checked and without its trailing slash, for every adapter when it is created: an
 * origin only, since the rules read their path from the same URL.
 */
export function publicOrigin(publicUrl: string | undefined): string | undefined {
  if (publicUrl === undefined) return undefined;
  let url: URL | undefined;
  try {
    url = new URL(publicUrl);
  } catch {
    url = undefined;
  }
  if (
    url === undefined ||
    (url.protocol !== 'https:' && url.protocol !== 'http:') ||
    url.username !== '' ||
    url.password !== '' ||
    url.pathname !== '/' ||
    /[?#]/.test(publicUrl)
  ) {
    throw new ConfigError([
      { path: 'publicUrl', message: 'must be an http(s) origin, without path, query, fragment or credentials (https://api.example.com)' },
    ]);
  }
  return url.origin;
}

/** The options with `publicUrl` checked (see {@link publicOrigin}). */
export function adapterOptions<T extends NodeAdapterOptions>(options: T): T {
  return options.publicUrl === undefined ? options : { ...options, publicUrl: publicOrigin(options.publicUrl) };
}

/** The path of an origin-form target (before `?` or `#`). */
function targetPath(target: string): string {
  const end = target.search(/[?#]/);
  return end < 0 ? target : target.slice(0, end);
}

/**
 * Build the verifier's request from a Node request (duplicate headers preserved). `semicolon`:
 * the router ends the path at the first `;` (Fastify's `useSemicolonDelimiter`).
 */
export function toVerifyRequest(req: IncomingMessage, options: NodeAdapterOptions = {}, semicolon = false): VerifyRequest {
  const body = options.body?.(req);
  // originalUrl (Express; Fastify with rewriteUrl) is the target the client sent, which a DPoP
  // proof names. The rules see the path the framework routes on: Express's req.url below its
  // mount point (baseUrl) as a middleware may have rewritten it, Fastify's rewritten req.url.
  const r = req as IncomingMessage & { originalUrl?: string; baseUrl?: string };
  const sent = r.originalUrl ?? req.url ?? '/';
  let routed = (r.baseUrl ?? '') + targetPath(req.url ?? '/');
  if (semicolon && routed.includes(';')) routed = routed.slice(0, routed.indexOf(';'));
  return {
    method: req.method ?? 'GET',
    url: `${originOf(req, options)}${sent}`,
    ...(routed !== targetPath(sent) ? { path: routed } : {}),
    headers: req.headersDistinct,
    ...(body !== undefined ? { body } : {}),
  };
}

/**
 * The origin of the request URL (what a DPoP proof's `htu` names, RFC 9449 §4.3): `publicUrl`;
 * else, with `trustProxy`, what the proxy forwards; else the connection's local address and port.
 * Never the Host header of a caller: a proof made for another server would pass with `Host:`
 * naming that server.
 */
function originOf(req: IncomingMessage, options: NodeAdapterOptions): string {
  if (options.publicUrl !== undefined) return options.publicUrl.endsWith('/') ? options.publicUrl.slice(0, -1) : options.publicUrl;
  const encrypted = (req.socket as TLSSocket).encrypted === true;
  if (!options.trustProxy) return localOrigin(encrypted ? 'https' : 'http', req.socket.localAddress, req.socket.localPort);
  const forwardedProto = first(req.headers['x-forwarded-proto'])?.split(',')[0]?.trim().toLowerCase();
  const proto = forwardedProto === 'https' || forwardedProto === 'http' ? forwardedProto : encrypted ? 'https' : 'http';
  const named = first(req.headers['x-forwarded-host'])?.split(',')[0]?.trim() || req.headers.host || 'localhost';
  // Node lets any visible characters through in Host: `h/public` would make the rules see
  // /public/admin for a request the application serves as /admin. A malformed authority becomes a
  // reserved name (RFC 6761) that no DPoP proof names, and the path stays the one sent.
  return `${proto}://${validHost(named) ? named : 'host.invalid'}`;
}

/** Write a refusal to a Node response. */
export function writeDeny(
  res: ServerResponse,
  error: import('../core/errors.ts').TesseraError,
  verifier: Pick<Verifier, 'challenges'>,
): void {
  const d = denyResponse(error, verifier.challenges);
  res.writeHead(d.status, d.headers).end(d.body);
}

/**
 * Returns a function that verifies a request and resolves to the principal, or writes the
 * refusal (status, `WWW-Authenticate`, JSON error) and resolves to `undefined`.
 */
export function nodeAuth(
  verifier: Verifier,
  options: NodeAdapterOptions = {},
): (req: IncomingMessage, res: ServerResponse) => Promise<Principal | undefined> {
  options = adapterOptions(options);
  return async function tesseraNodeAuth(req, res) {
    const result = await verifier.verify(toVerifyRequest(req, options));
    if (result.ok) return result.principal;
    writeDeny(res, result.error, verifier);
    return undefined;
  };
}
