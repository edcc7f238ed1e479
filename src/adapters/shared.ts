/**
 * What the adapters share and do not export: their options checked once when the middleware is
 * created, and the Node request as the verifier reads it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { ArgumentError, ConfigError, type ConfigIssue, kindOf, type TesseraError } from '../core/errors.ts';
import { lastForwardedEntry, localOrigin, validHost } from '../core/host.ts';
import { RECORDED_PROOFS, type RecordedProofs } from '../core/verify/dpop.ts';
import { readHeader, type VerifyRequest } from '../core/verify/extract.ts';
import type { Verifier, VerifyResult, VerifySuccess } from '../core/verify/verifier.ts';
import type { NodeAdapterOptions } from './node.ts';
import { denyResponse } from './response.ts';

/** The kind of value an adapter option takes. */
type OptionKind = 'origin' | 'boolean' | 'function';

const EXPECTED: Readonly<Record<OptionKind, string>> = {
  origin: 'a string: an http(s) origin such as https://api.example.com',
  boolean: 'true or false',
  function: 'a function (req) => body',
};

/**
 * `publicUrl` as an origin without its trailing slash (the rules read their path from the same
 * URL), or the problem with it.
 */
function publicOrigin(publicUrl: string): string | ConfigIssue {
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
    return {
      path: 'publicUrl',
      message: 'must be an http(s) origin, without path, query, fragment or credentials (https://api.example.com)',
    };
  }
  return url.origin;
}

/**
 * An adapter's arguments, checked when the middleware is created: the verifier is one, the options
 * are an object holding only the options this adapter takes, each of its kind. Every problem is
 * reported at once in one `ConfigError`; the options are copied and frozen, so that a change to
 * the caller's object afterwards changes nothing. Values are never quoted (an option may hold a
 * secret by mistake).
 */
export function adapterOptions<T extends { readonly publicUrl?: string }>(
  adapter: string,
  verifier: unknown,
  options: unknown,
  known: Readonly<Record<keyof T & string, OptionKind>>,
): Readonly<T> {
  const issues: ConfigIssue[] = [];
  const v = verifier as Partial<Verifier> | null | undefined;
  if (typeof v !== 'object' || v === null || typeof v.verify !== 'function' || typeof v.challenges !== 'function') {
    issues.push({
      path: '(verifier)',
      message: `${adapter} takes a verifier first: the one createVerifier(options) returns, not its options (got ${kindOf(verifier)} without verify())`,
    });
  }
  const names = Object.keys(known).join(', ');
  const out: Record<string, unknown> = {};
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    issues.push({ path: '(options)', message: `expected an object of options (${names}), got ${kindOf(options)}` });
  } else if (options !== undefined) {
    for (const [name, value] of Object.entries(options)) {
      const kind = (known as Readonly<Record<string, OptionKind>>)[name];
      if (kind === undefined) {
        issues.push({ path: name, message: `unknown option; ${adapter} takes ${names}` });
        continue;
      }
      if (value === undefined) continue;
      const fits =
        kind === 'origin' ? typeof value === 'string' : kind === 'boolean' ? typeof value === 'boolean' : typeof value === 'function';
      if (!fits) {
        issues.push({ path: name, message: `expected ${EXPECTED[kind]}, got ${kindOf(value)}` });
        continue;
      }
      if (kind === 'origin') {
        const origin = publicOrigin(value as string);
        if (typeof origin === 'string') out[name] = origin;
        else issues.push(origin);
      } else out[name] = value;
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return Object.freeze(out) as Readonly<T>;
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
 * Whether a Content-Type names `application/x-www-form-urlencoded` (parameters aside), the only
 * body RFC 6750 §2.2 defines an `access_token` parameter for. Any other body (a JSON API's payload
 * with a member named `access_token`) is the application's: never read for a token, so neither
 * refused beside an Authorization header nor authenticated by it.
 */
export function isFormBody(contentType: string | null | undefined): boolean {
  if (contentType == null) return false;
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase() === 'application/x-www-form-urlencoded';
}

/** The path of an origin-form target (before `?` or `#`). */
function targetPath(target: string): string {
  const end = target.search(/[?#]/);
  return end < 0 ? target : target.slice(0, end);
}

/**
 * The request's URL at `origin` (what a DPoP proof's `htu` names): `origin` followed by the target
 * when it is in origin form (`/path?query`). Node also takes an absolute-form target
 * (`GET m://x/items/1`, RFC 9112 §3.2.2), and `origin` followed by it would extend the origin's
 * host: `https://api.example.co` and `m://x/items/1` read as `https://api.example.com//x/items/1`,
 * another server's URL, whose captured proofs would then pass here. Its authority is the caller's
 * word, as a Host header is: only its path and query are kept, after `origin` (Express routes such a
 * request on that path). Any other target (`*`) follows `origin` after a `/`.
 */
function urlAt(origin: string, sent: string): string {
  if (sent.charCodeAt(0) === 0x2f) return origin + sent;
  const scheme = sent.indexOf('://');
  if (scheme < 0) return `${origin}/${sent}`;
  const end = sent.slice(scheme + 3).search(/[/?#]/);
  if (end < 0) return `${origin}/`;
  const rest = sent.slice(scheme + 3 + end);
  return rest.charCodeAt(0) === 0x2f ? origin + rest : `${origin}/${rest}`;
}

/** Throws an {@link ArgumentError} (`req`) when `req` is not a Node request: a programming error, with nothing to answer. */
export function checkNodeRequest(req: IncomingMessage): void {
  if (typeof req !== 'object' || req === null || typeof req.headers !== 'object' || req.headers === null) {
    throw new ArgumentError(
      'req',
      `req must be the node:http IncomingMessage of the request, got ${kindOf(req)}${typeof req === 'object' && req !== null ? ' without headers' : ''}`,
    );
  }
}

/**
 * Build the verifier's request from a Node request (duplicate headers preserved). `semicolon`:
 * the router ends the path at the first `;` (Fastify's `useSemicolonDelimiter`).
 */
export function toVerifyRequest(req: IncomingMessage, options: NodeAdapterOptions = {}, semicolon = false): VerifyRequest {
  checkNodeRequest(req);
  const body = options.body !== undefined && isFormBody(req.headers['content-type']) ? options.body(req) : undefined;
  // originalUrl (Express; Fastify with rewriteUrl) is the target the client sent, which a DPoP
  // proof names. The rules see the path the framework routes on: Express's req.url below its
  // mount point (baseUrl) as a middleware may have rewritten it, Fastify's rewritten req.url.
  const r = req as IncomingMessage & { originalUrl?: string; baseUrl?: string };
  const sent = r.originalUrl ?? req.url ?? '/';
  let routed = (r.baseUrl ?? '') + targetPath(req.url ?? '/');
  if (semicolon && routed.includes(';')) routed = routed.slice(0, routed.indexOf(';'));
  return {
    method: req.method ?? 'GET',
    url: urlAt(originOf(req, options), sent),
    // A target that is no path (`*`, the asterisk form Node accepts for any method) would be read
    // from the URL as `/`: given as it is, the rules refuse it (request_path_invalid).
    ...(routed !== targetPath(sent) || routed.charCodeAt(0) !== 0x2f ? { path: routed } : {}),
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
  // adapterOptions already made it an origin (no trailing slash).
  if (options.publicUrl !== undefined) return options.publicUrl;
  const encrypted = (req.socket as TLSSocket).encrypted === true;
  if (!options.trustProxy) return localOrigin(encrypted ? 'https' : 'http', req.socket.localAddress, req.socket.localPort);
  // The entries the proxy wrote (the rightmost): a proxy appending to the caller's would otherwise
  // let the caller choose the URL.
  const forwardedProto = lastForwardedEntry(req.headers['x-forwarded-proto'])?.toLowerCase();
  const proto = forwardedProto === 'https' || forwardedProto === 'http' ? forwardedProto : encrypted ? 'https' : 'http';
  const named = lastForwardedEntry(req.headers['x-forwarded-host']) || req.headers.host || 'localhost';
  // Node lets any visible characters through in Host: `h/public` would make the rules see
  // /public/admin for a request the application serves as /admin. A malformed authority becomes a
  // reserved name (RFC 6761) that no DPoP proof names, and the path stays the one sent.
  return `${proto}://${validHost(named) ? named : 'host.invalid'}`;
}

/**
 * Write a refusal to a Node response, unless another party answered already (a request timeout
 * that did while the verifier waited): writing then would throw, and nothing awaits the adapter
 * but the framework, so the throw would be an unhandled rejection ending the process.
 */
export function writeDeny(res: ServerResponse, error: TesseraError, verifier: Pick<Verifier, 'challenges'>): void {
  if (res.headersSent) return;
  const d = denyResponse(error, verifier.challenges);
  res.writeHead(d.status, d.headers).end(d.body);
}

/** An error's name when it is one a log may show (a class name), else `error`. */
function nameOf(error: unknown): string {
  const name = (error as { name?: unknown } | null | undefined)?.name;
  return typeof name === 'string' && /^[A-Za-z_$][\w$.]{0,63}$/.test(name) ? name : 'error';
}

/**
 * Verifying a request failed rather than refused it: a callback of the application threw
 * (`nodeAuth`'s `body`) or `verify` rejected (a revocation check that throws is a refusal, 503
 * `revocation_unavailable`, not a failure). The adapters answer
 * 500 with it (nodeAuth itself, the others through their framework's error handling: Express
 * `next(error)`, Fastify's and Hono's error handlers), never with the error itself: its message may
 * quote the request (JSON.parse quotes its input, an access token in it). The message names the
 * adapter and the error's class alone. The error is kept as `original`, not enumerable and not as
 * `cause`, which loggers (pino, `util.inspect`) print with its message.
 */
export class AdapterFailure extends Error {
  override readonly name = 'TesseraAdapterError';
  readonly code = 'TESSERA_ADAPTER_FAILED';
  /** Read by Express's error handling (`status`), Fastify's (`statusCode`) and Koa-style `expose`. */
  readonly status = 500;
  readonly statusCode = 500;
  readonly expose = false;
  declare readonly original: unknown;
  constructor(adapter: string, original: unknown) {
    super(`${adapter} could not verify the request (${nameOf(original)})`);
    Object.defineProperty(this, 'original', { value: original, enumerable: false });
  }
}

/** The answer to a request whose verification failed ({@link AdapterFailure}): 500, the error not in it. */
export const SERVER_ERROR = Object.freeze({
  status: 500,
  headers: Object.freeze({ 'content-type': 'application/json', 'cache-control': 'no-store' }),
  body: '{"error":"server_error"}',
});

/** A request a verifier accepted, as it was checked. */
interface Accepted {
  readonly verifier: Pick<Verifier, 'verify'>;
  readonly method: string;
  readonly url: string;
  readonly path: string | undefined;
  readonly body: string | undefined;
  readonly headers: string;
  readonly result: VerifySuccess;
}

/** The last acceptance of each request (its Node `IncomingMessage`, or its Web `Request`). */
const accepted = new WeakMap<object, Accepted>();

/** The DPoP proofs each request had recorded, whichever verifier did ({@link RecordedProofs}). */
const proofsOf = new WeakMap<object, RecordedProofs>();

function bodyText(body: VerifyRequest['body']): string | undefined {
  if (body === undefined || typeof body === 'string') return body;
  return body instanceof URLSearchParams ? `?${body}` : `#${Buffer.from(body).toString('base64')}`;
}

/**
 * The headers the verifier reads (the credentials and the body's type), as one string: a Web
 * `Request`'s headers may be set by a middleware between the mounts (Hono), so a request now
 * carrying another token is verified again, not answered with the first token's principal.
 */
function credentialHeaders(headers: VerifyRequest['headers']): string {
  return JSON.stringify(['authorization', 'dpop', 'content-type'].map((name) => readHeader(headers, name) ?? null));
}

/**
 * `verifier.verify(request)` for the request `carrier` stands for, once: the same verifier
 * mounted twice on one request (app-wide, then again on a router, scope or route) answers the
 * second time with its first acceptance, when the request is still the one it accepted (method,
 * URL, routed path, form body, Authorization, DPoP and Content-Type headers). Verifying again would refuse a DPoP proof as already used. A
 * request rewritten in between is verified again, so the second mount's rules see the new path.
 * Another verifier on the same request checks the proof in full but does not record it again in a
 * replay cache the request recorded it in already ({@link RecordedProofs}): two verifiers sharing
 * the store's replay cache accept the request.
 */
export async function verifyOnce(verifier: Pick<Verifier, 'verify'>, carrier: object, request: VerifyRequest): Promise<VerifyResult> {
  const body = bodyText(request.body);
  const headers = credentialHeaders(request.headers);
  const seen = accepted.get(carrier);
  if (
    seen !== undefined &&
    seen.verifier === verifier &&
    seen.method === request.method &&
    seen.url === request.url &&
    seen.path === request.path &&
    seen.body === body &&
    seen.headers === headers
  ) {
    return seen.result;
  }
  let proofs = proofsOf.get(carrier);
  if (proofs === undefined) {
    proofs = new WeakMap();
    proofsOf.set(carrier, proofs);
  }
  // Another verifier sharing this one's replay cache (mounted app-wide, this one on a route) may
  // have recorded the request's proof: it is the same use of it, not a replay.
  const result = await verifier.verify({ ...request, [RECORDED_PROOFS]: proofs } as VerifyRequest);
  if (result.ok) accepted.set(carrier, { verifier, method: request.method, url: request.url, path: request.path, body, headers, result });
  return result;
}
