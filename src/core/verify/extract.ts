/**
 * RFC 6750 §2: finding the access token in a request.
 *
 * - `Authorization: Bearer <token68>` (scheme case-insensitive), or `Authorization: DPoP <token68>`
 *   (RFC 9449 §7.1);
 * - a form-body `access_token` parameter (§2.2), only when enabled, only for methods with body
 *   semantics and an `application/x-www-form-urlencoded` body;
 * - a URI query `access_token` parameter (§2.3), only when enabled. When disabled its presence is
 *   an error rather than being ignored, because the token has already leaked into URL logs.
 *
 * Two methods in one request, or two Authorization headers, are a 400 `invalid_request`.
 *
 * @module
 */
import { ArgumentError, type ErrorCode, kindOf, TesseraError } from '../errors.ts';

/** Header values as Node gives them (`headersDistinct` arrays, or `headers`), or Web `Headers`. */
export type HeaderBag = { get(name: string): string | null } | Readonly<Record<string, string | readonly string[] | undefined>>;

/** What the verifier needs from a request. */
export interface VerifyRequest {
  /** HTTP method, upper case. */
  readonly method: string;
  /** The request URL: absolute (required for DPoP, whose proof names it) or origin-form (`/path?q`). */
  readonly url: string;
  /**
   * The path the application routes the request on, when a framework rewrote it (Express
   * `req.url` changed by a middleware, Fastify `rewriteUrl` or `useSemicolonDelimiter`): the rules
   * see this one, while a DPoP proof still names `url`, the one the client called. Default: the
   * path of `url`.
   */
  readonly path?: string;
  readonly headers: HeaderBag;
  /** The request body; read only when form-body tokens are enabled. */
  readonly body?: string | Uint8Array | URLSearchParams;
}

/** Transport options (a subset of the verifier options). */
export interface TransportOptions {
  /** Accept `access_token` in an urlencoded POST body (RFC 6750 §2.2). Default false. */
  readonly formBody: boolean;
  /** Accept `access_token` in the URI query (RFC 6750 §2.3). Default false. */
  readonly query: boolean;
}

/** The token found and how it was presented. */
export interface ExtractedToken {
  readonly token: string;
  /** `dpop` only for `Authorization: DPoP`; every other method is a bearer presentation. */
  readonly scheme: 'bearer' | 'dpop';
  readonly method: 'header' | 'form' | 'query';
}

const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Read one header from either header shape; arrays are returned as-is so duplicates are visible. */
export function readHeader(headers: HeaderBag, name: string): string | readonly string[] | undefined {
  // A plain object (node:http, Express, Fastify) first: Web Headers keep no header as a property.
  const value = (headers as Record<string, string | readonly string[] | undefined>)[name];
  if (value !== undefined || typeof (headers as { get?: unknown }).get !== 'function') return value;
  return (headers as { get(name: string): string | null }).get(name) ?? undefined;
}

/**
 * Read a header that must appear at most once.
 *
 * @throws {ArgumentError} when its value is neither a string nor an array of strings: `node:http`
 *   never gives one, so the caller built the request wrongly (`authorization: 5` is not two
 *   Authorization headers).
 */
export function singleHeader(headers: HeaderBag, name: string): string | undefined | typeof MULTIPLE {
  const v = readHeader(headers, name);
  if (v === undefined || typeof v === 'string') return v;
  if (!Array.isArray(v) || !v.every((e) => typeof e === 'string')) {
    throw new ArgumentError(
      `request.headers.${name}`,
      `request.headers.${name} must be a string or an array of strings (as node:http gives header values), got ${
        Array.isArray(v) ? 'an array holding a non-string' : kindOf(v)
      }`,
    );
  }
  if (v.length === 0) return undefined;
  return v.length === 1 ? v[0] : MULTIPLE;
}

function badRequest(fn: string, argument: string, expected: string, value: unknown): ArgumentError {
  return new ArgumentError(argument, `${fn}(request): ${argument} must be ${expected}, got ${kindOf(value)}`);
}

/**
 * Check the shape of a {@link VerifyRequest} given to a public function (`fn` names it in the
 * message). Header values are checked where they are read ({@link singleHeader}).
 *
 * @throws {ArgumentError} naming the first member of the wrong kind; never quoting a value.
 */
export function checkRequest(fn: string, request: unknown): asserts request is VerifyRequest {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    throw badRequest(fn, 'request', 'an object { method, url, headers }', request);
  }
  const r = request as { method?: unknown; url?: unknown; path?: unknown; headers?: unknown; body?: unknown };
  if (typeof r.method !== 'string') throw badRequest(fn, 'request.method', 'a string (GET, POST…)', r.method);
  if (typeof r.url !== 'string') throw badRequest(fn, 'request.url', 'a string (an absolute URL or /path?query)', r.url);
  if (r.path !== undefined && typeof r.path !== 'string') throw badRequest(fn, 'request.path', 'a string when given', r.path);
  if (typeof r.headers !== 'object' || r.headers === null || Array.isArray(r.headers)) {
    throw badRequest(fn, 'request.headers', 'an object of header values (req.headersDistinct) or a Web Headers', r.headers);
  }
  const b = r.body;
  if (b !== undefined && typeof b !== 'string' && !(b instanceof Uint8Array) && !(b instanceof URLSearchParams)) {
    throw badRequest(fn, 'request.body', 'a string, a Uint8Array or a URLSearchParams when given', b);
  }
}

/** Marker for a header sent more than once. */
export const MULTIPLE: unique symbol = Symbol('multiple');

function isScheme(value: string, end: number, scheme: string): boolean {
  if (end !== scheme.length) return false;
  for (let i = 0; i < end; i++) if ((value.charCodeAt(i) | 0x20) !== scheme.charCodeAt(i)) return false;
  return true;
}

/**
 * Every `access_token` of `url`'s query (RFC 6750 §2.3), as the verifier reads them: the gateway
 * also hides them from the upstream and the audit trail.
 */
export function queryAccessTokens(url: string): string[] {
  const q = url.indexOf('?');
  // The fast path skips parsing only when no spelling of the name can be present: a parser
  // decodes `access%5Ftoken` to `access_token` too.
  if (q < 0 || (url.indexOf('access_token', q) < 0 && url.indexOf('%', q) < 0)) return [];
  const hash = url.indexOf('#', q);
  return new URLSearchParams(url.slice(q + 1, hash < 0 ? undefined : hash)).getAll('access_token');
}

function queryToken(url: string): string | undefined | typeof MULTIPLE {
  const all = queryAccessTokens(url);
  return all.length === 0 ? undefined : all.length > 1 ? MULTIPLE : all[0];
}

function formToken(request: VerifyRequest): string | undefined | typeof MULTIPLE | TesseraError {
  const { body } = request;
  if (body === undefined) return undefined;
  let params: URLSearchParams;
  if (body instanceof URLSearchParams) params = body;
  else {
    const text = typeof body === 'string' ? body : new TextDecoder().decode(body);
    if (!text.includes('access_token') && !text.includes('%')) return undefined;
    params = new URLSearchParams(text);
  }
  const all = params.getAll('access_token');
  if (all.length === 0) return undefined;
  if (all.length > 1) return MULTIPLE;
  const type = singleHeader(request.headers, 'content-type');
  const mediaType = typeof type === 'string' ? type.split(';')[0]?.trim().toLowerCase() : undefined;
  if (!BODY_METHODS.has(request.method) || mediaType !== 'application/x-www-form-urlencoded') {
    return new TesseraError('request_form_token_invalid');
  }
  return all[0];
}

/**
 * Find the access token, or the error to answer with.
 *
 * @returns the token with its scheme, or a {@link TesseraError}: `credentials_missing` when no
 *   method carries one (a bare 401 challenge), or a 400 `invalid_request` code.
 */
export function extractToken(request: VerifyRequest, options: TransportOptions): ExtractedToken | TesseraError {
  const found = extract(request, options);
  if (found instanceof TesseraError || !found.unchecked) return found;
  return TOKEN68.test(found.token) ? found : new TesseraError('request_malformed_authorization');
}

/** A token from {@link extractTokenDeferred}: `unchecked` when its token68 syntax is still to be checked. */
export interface DeferredToken extends ExtractedToken {
  readonly unchecked: boolean;
}

/** True when `token` is RFC 7235 `token68` (the syntax of a Bearer or DPoP credential). */
export function isToken68(token: string): boolean {
  return TOKEN68.test(token);
}

/**
 * Like {@link extractToken}, but when the token comes from the Authorization header its `token68`
 * check is left to the caller (`unchecked: true`): the verifier skips it for a token it verified
 * before, whose syntax is known, and folds it into the compact-JWS check otherwise. Every error
 * is the one {@link extractToken} would return, in the same order.
 */
export function extractTokenDeferred(request: VerifyRequest, options: TransportOptions): DeferredToken | TesseraError {
  return extract(request, options);
}

/** An error found after a header token whose check was deferred: a malformed header is reported first. */
function fail(pending: string | undefined, code: ErrorCode): TesseraError {
  return new TesseraError(pending !== undefined && !TOKEN68.test(pending) ? 'request_malformed_authorization' : code);
}

function extract(request: VerifyRequest, options: TransportOptions): DeferredToken | TesseraError {
  let found: DeferredToken | undefined;
  let count = 0;
  // A header token whose token68 check is deferred; any error found after it must not hide that
  // the header itself was malformed (extractToken reports that first).
  let pending: string | undefined;

  const auth = singleHeader(request.headers, 'authorization');
  if (auth === MULTIPLE) return new TesseraError('request_multiple_authorization');
  if (auth !== undefined) {
    let sp = auth.indexOf(' ');
    if (sp < 0) sp = auth.length;
    const bearer = isScheme(auth, sp, 'bearer');
    if (bearer || isScheme(auth, sp, 'dpop')) {
      let start = sp;
      while (auth.charCodeAt(start) === 0x20) start++;
      const token = auth.slice(start);
      if (token === '') return new TesseraError('request_empty_token');
      pending = token;
      found = { token, scheme: bearer ? 'bearer' : 'dpop', method: 'header', unchecked: true };
      count++;
    }
    // Another scheme (Basic, a bare token) is not a bearer credential: it counts as none.
  }

  const inQuery = queryToken(request.url);
  if (inQuery !== undefined) {
    if (!options.query) return fail(pending, 'request_query_token_disabled');
    if (inQuery === MULTIPLE) return fail(pending, 'request_multiple_methods');
    if (inQuery === '') return fail(pending, 'request_empty_token');
    found = { token: inQuery, scheme: 'bearer', method: 'query', unchecked: false };
    count++;
  }

  if (options.formBody) {
    const inForm = formToken(request);
    if (inForm instanceof TesseraError) return fail(pending, inForm.code);
    if (inForm === MULTIPLE) return fail(pending, 'request_multiple_methods');
    if (inForm !== undefined) {
      if (inForm === '') return fail(pending, 'request_empty_token');
      found = { token: inForm, scheme: 'bearer', method: 'form', unchecked: false };
      count++;
    }
  }

  if (count > 1) return fail(pending, 'request_multiple_methods');
  return found ?? new TesseraError('credentials_missing');
}
