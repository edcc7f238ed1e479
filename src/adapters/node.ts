/**
 * `node:http` adapter.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createVerifier } from 'tessera';
 * import { nodeAuth } from 'tessera/adapters/node';
 *
 * const auth = nodeAuth(createVerifier(options));
 * createServer(async (req, res) => {
 *   const principal = await auth(req, res); // on refusal the response is already written
 *   if (!principal) return;
 *   res.end(`hello ${principal.subject}`);
 * }).listen(8080);
 * ```
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { validHost } from '../core/host.ts';
import type { VerifyRequest } from '../core/verify/extract.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import { denyResponse } from './response.ts';

export interface NodeAdapterOptions {
  /**
   * Trust `X-Forwarded-Proto` and `X-Forwarded-Host` for the request URL (DPoP `htu` checks).
   * Only behind a proxy that sets them; otherwise a caller could choose the URL it is checked against.
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

/** Build the verifier's request from a Node request (duplicate headers preserved). */
export function toVerifyRequest(req: IncomingMessage, options: NodeAdapterOptions = {}): VerifyRequest {
  const encrypted = (req.socket as TLSSocket).encrypted === true;
  const forwardedProto = options.trustProxy ? first(req.headers['x-forwarded-proto'])?.split(',')[0]?.trim().toLowerCase() : undefined;
  const proto = forwardedProto === 'https' || forwardedProto === 'http' ? forwardedProto : encrypted ? 'https' : 'http';
  const named = (options.trustProxy && first(req.headers['x-forwarded-host'])?.split(',')[0]?.trim()) || req.headers.host || 'localhost';
  // Node lets any visible characters through in Host: `h/public` would make the rules see
  // /public/admin for a request the application serves as /admin. A malformed authority becomes a
  // reserved name (RFC 6761) that no DPoP proof names, and the path stays the one sent.
  const host = validHost(named) ? named : 'host.invalid';
  const body = options.body?.(req);
  // Express rewrites req.url below a mount point (app.use('/api', ...)); originalUrl is the path
  // the client sent, which rules and the DPoP htu are about.
  const path = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
  return {
    method: req.method ?? 'GET',
    url: `${proto}://${host}${path}`,
    headers: req.headersDistinct,
    ...(body !== undefined ? { body } : {}),
  };
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
  return async function tesseraNodeAuth(req, res) {
    const result = await verifier.verify(toVerifyRequest(req, options));
    if (result.ok) return result.principal;
    writeDeny(res, result.error, verifier);
    return undefined;
  };
}
