/**
 * Hono middleware over Web `Request`. Sets `c.var.principal` or answers the refusal.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono';
 * import { createVerifier } from 'tessera';
 * import { honoAuth, type TesseraEnv } from 'tessera/adapters/hono';
 *
 * const app = new Hono<TesseraEnv>();
 * // publicUrl: the URL clients call, which their DPoP proofs name (see HonoAdapterOptions).
 * app.use('/api/*', honoAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/api/items', (c) => c.json({ subject: c.var.principal.subject }));
 * ```
 */
import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler, Next } from 'hono';
import { getPath, getPathNoStrict } from 'hono/utils/url';
import { localOrigin } from '../core/host.ts';
import type { HeaderBag } from '../core/verify/extract.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import type { ManagedVerifier } from '../verifier.ts';
import { denyResponse } from './response.ts';
import { AdapterFailure, adapterOptions, isFormBody, verifyOnce } from './shared.ts';

/** Hono environment type carrying the principal. */
export interface TesseraEnv {
  Variables: { principal: Principal };
}

/** Options of {@link honoAuth}: `publicUrl` alone (Hono gives no forwarded-header trust). */
export interface HonoAdapterOptions {
  /**
   * The external origin of the protected API, as its clients call it (`https://api.example.com`;
   * no path, query or credentials): the request URL a DPoP proof's `htu` must name (RFC 9449 §4.3)
   * is this followed by the request's path. Set it whenever DPoP tokens are accepted (`dpop.mode`
   * `allowed`, the default, or `required`).
   *
   * Without it the URL is `http(s)://<address>:<port>` the connection arrived at under
   * `@hono/node-server`, and `http://host.invalid` (which no proof names) on other runtimes: never
   * the origin of `c.req.url`, which comes from the caller's Host header and would let a proof
   * made for another server (and captured there) pass with `Host:` naming that server. So without
   * `publicUrl`, DPoP-bound tokens are refused (`invalid_dpop_proof`, "for another URI") unless
   * the proof names that address; bearer tokens are not affected. An invalid value throws a
   * `ConfigError` when the middleware is created.
   *
   * @example
   * ```ts
   * app.use('/api/*', honoAuth(verifier, { publicUrl: 'https://api.example.com' }));
   * ```
   */
  readonly publicUrl?: string;
}

/**
 * The most of an urlencoded body read for its `access_token` (RFC 6750 §2.2): Fastify's default
 * body limit. Hono has none, and the body is read before the application's own limit applies.
 */
const FORM_BODY_LIMIT = 1024 * 1024;

/**
 * The request body as text when it is at most {@link FORM_BODY_LIMIT} bytes, else `undefined`
 * (an `access_token` in it is then not found). Read from a clone: the application reads the body
 * whole.
 */
async function formBodyText(raw: Request): Promise<string | undefined> {
  if (Number(raw.headers.get('content-length')) > FORM_BODY_LIMIT) return undefined;
  const reader = raw.clone().body?.getReader();
  if (reader === undefined) return undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > FORM_BODY_LIMIT) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

/** One `scheme token68` credential (RFC 9110 §11.4), which holds neither a comma nor a space after its scheme's. */
const CREDENTIAL = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ +[A-Za-z0-9\-._~+/]+=*$/;

/**
 * The request's Authorization field lines when it carried more than one, else undefined. A Web
 * `Request` holds them joined by ", " (RFC 9110 §5.3), which the verifier would read as one
 * malformed header: the node:http, Express and Fastify adapters see them apart, and answer
 * `request_multiple_authorization`. Under `@hono/node-server` the Node request tells, unless a
 * middleware rewrote the header since; elsewhere (or then), a value made only of `scheme token68`
 * credentials joined by ", " was several (one header holding that is two credentials too).
 */
function authorizationLines(raw: Request, incoming: IncomingMessage | undefined): string[] | undefined {
  const value = raw.headers.get('authorization');
  if (value === null || !value.includes(', ')) return undefined;
  const lines = incoming?.headersDistinct.authorization;
  if (lines !== undefined && lines.join(', ') === value) return lines.length > 1 ? lines : undefined;
  const parts = value.split(', ');
  return parts.every((p) => CREDENTIAL.test(p)) ? parts : undefined;
}

/** The headers as the verifier reads them: with several Authorization lines, those apart (as node:http gives them). */
function authorizationHeaders(headers: Headers, lines: string[] | undefined): HeaderBag {
  return lines === undefined ? headers : { authorization: lines, get: (name: string) => headers.get(name) };
}

/** `@hono/node-server`'s bindings: the Node request (under `server` when the app has bindings of its own). */
interface NodeBindings {
  readonly incoming?: IncomingMessage;
  readonly server?: { readonly incoming?: IncomingMessage };
}

/**
 * Hono middleware: verifies each request, sets `c.var.principal` and calls `next()`, or answers
 * the refusal (status, `WWW-Authenticate`, JSON error). A form-body token (`transport.form_body`)
 * is looked for in an urlencoded body of at most 1 MiB; a larger body is not read.
 *
 * @throws {ConfigError} when `verifier` is not a verifier or `options` are invalid (an unknown
 * option, `trustProxy` included, a wrong type, an invalid `publicUrl`), listing every problem.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono';
 * import { createVerifier } from 'tessera';
 * import { honoAuth, type TesseraEnv } from 'tessera/adapters/hono';
 *
 * const app = new Hono<TesseraEnv>();
 * app.use('/api/*', honoAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/api/items', (c) => c.json({ subject: c.var.principal.subject }));
 * ```
 */
export function honoAuth(verifier: Verifier | ManagedVerifier, options: HonoAdapterOptions = {}): MiddlewareHandler<TesseraEnv> {
  const { publicUrl } = adapterOptions<HonoAdapterOptions>('honoAuth', verifier, options, { publicUrl: 'origin' });
  const formBody = 'config' in verifier && verifier.config.transport.form_body;
  return async function tesseraHonoAuth(c: Context<TesseraEnv>, next: Next) {
    const raw = c.req.raw;
    // raw.url is absolute and serialized: its path starts at the first '/' after the scheme's '//'.
    const pathStart = raw.url.indexOf('/', raw.url.indexOf('//') + 2);
    const path = pathStart < 0 ? '/' : raw.url.slice(pathStart);
    const env = c.env as NodeBindings | undefined;
    const incoming = env?.incoming ?? env?.server?.incoming;
    let origin = publicUrl;
    if (origin === undefined) {
      const socket = incoming?.socket;
      origin = socket
        ? localOrigin((socket as { encrypted?: boolean }).encrypted ? 'https' : 'http', socket.localAddress, socket.localPort)
        : 'http://host.invalid';
    }
    let body: URLSearchParams | undefined;
    if (formBody && raw.body && isFormBody(raw.headers.get('content-type'))) {
      const text = await formBodyText(raw);
      if (text !== undefined) body = new URLSearchParams(text);
    }
    // Hono routes on c.req.path, which an app's own `getPath` option may derive otherwise (case
    // folded, a prefix dropped): /ADMIN/secret served by app.get('/admin/secret') would be checked
    // as /ADMIN/secret and pass a rule written for /admin/**. Hono's own getPath only decodes the
    // path, and `strict: false` only drops a trailing slash, which rules ignore: then the rules see
    // the path as sent; otherwise the one the app routes on. A DPoP proof still names the URL.
    const routed = c.req.path;
    const own = routed !== getPath(raw) && routed !== getPathNoStrict(raw);
    let result: Awaited<ReturnType<typeof verifyOnce>>;
    try {
      result = await verifyOnce(verifier, raw, {
        method: raw.method,
        url: origin + path,
        ...(own ? { path: routed } : {}),
        headers: authorizationHeaders(raw.headers, authorizationLines(raw, incoming)),
        ...(body ? { body } : {}),
      });
    } catch (error) {
      // A callback of the application threw while verifying: Hono's default handler answers 500
      // and prints the error, whose message may quote the request.
      throw new AdapterFailure('honoAuth', error);
    }
    if (!result.ok) {
      const d = denyResponse(result.error, verifier.challenges);
      return c.body(d.body, d.status as 400, d.headers);
    }
    c.set('principal', result.principal);
    await next();
    // A fresh DPoP nonce when the proof's is about to expire (RFC 9449 §9), set on the response
    // the application made (a Response it returned itself drops headers set before next()),
    // unless it set one of its own.
    if (result.dpopNonce !== undefined && !c.res.headers.has('dpop-nonce')) c.header('dpop-nonce', result.dpopNonce);
  };
}
