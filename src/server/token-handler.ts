/**
 * The token service over `node:http`: a request handler that answers the OAuth endpoints and the
 * admin API and returns `false` for any other path, so the gateway can share the listener:
 *
 * ```ts
 * const tokens = createTokenServiceHandler(service);
 * createServer((req, res) => tokens(req, res) || gateway(req, res));
 * ```
 *
 * Endpoint URLs come from the configured issuer, never from the request's Host header.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BlockList } from 'node:net';
import { uuidv7 } from '../audit/id.ts';
import { declaredCharsetIsUtf8, parseUtf8Form } from '../core/form.ts';
import { strictJsonFault } from '../core/jose/json.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { catchAllWarnings, clientAddress, peerList } from '../core/peers.ts';
import { inboundRequestId } from '../core/request-id.ts';
import type { AuditFacts, OAuthRequest, TokenService } from '../issuer/service.ts';
import type { GrantSelector } from '../store/contract.ts';
import { StoreUnavailableError } from '../store/contract.ts';
import { malformedBody, plainText, revocationRequest, strictBodyFault } from './admin-request.ts';
import { AUDIT_EVENTS } from './audit-events.ts';
import type { Authenticator } from './authenticator.ts';
import { createAuthorizeHandler, createLoginCallbackHandler, createLogoutHandler } from './authorize-handler.ts';
import { type BodyRefusal, bodyRefusal } from './body-invalid.ts';
import { bodyUnread, closeUnread } from './close-unread.ts';
import { skipContinue } from './expect-continue.ts';
import { createOidcAuthenticator } from './oidc-authenticator.ts';
import { contentCoded, mediaType, sentTwice } from './request-headers.ts';
import { createTrustedHeaderAuthenticator } from './trusted-header-authenticator.ts';

/** Answers the request when it is for the token service; returns whether it did. */
export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

/** {@link createTokenServiceHandler}'s handler: a {@link RequestHandler}, and how it refuses a framing. */
export interface TokenServiceRequestHandler extends RequestHandler {
  /**
   * Refuse a request whose framing the listener does not accept (`createListener`: HTTP/1.0 with a
   * Transfer-Encoding, a coding other than `chunked`, another HTTP version), when its path is the
   * token service's: 400 `invalid_request` (`request_framing_invalid`), audited as the endpoint
   * audits its other refusals, the body never read. Returns `false` for any other path.
   */
  readonly refuseFraming: RequestHandler;
}

/** Options of {@link createTokenServiceHandler}. */
export interface TokenServiceHandlerOptions {
  /** Largest accepted request body, bytes (default 64 KiB). */
  readonly maxBodyBytes?: number;
  /** Told about unexpected failures (500s) and an unreachable store (503). The message never holds request data. */
  readonly onError?: (error: unknown, requestId: string) => void;
  /**
   * Who the person at `/oauth2/authorize` is (default: built from
   * `token_service.authorization.trusted_header` or `.oidc`). Plug in another identity source here.
   */
  readonly authenticator?: Authenticator;
  /**
   * Told why the upstream OIDC provider could not be used (no secret, code or token in the
   * message).
   */
  readonly onWarning?: (message: string) => void;
  /**
   * Told, at creation, of each warning about the configuration (a catch-all in
   * `trusted_header.allowed_peers`); default: {@link onWarning}.
   */
  readonly onConfigWarning?: (message: string) => void;
  /** `fetch` for the upstream OIDC provider (discovery and token requests). */
  readonly fetch?: typeof fetch;
  /**
   * The proxies in front, read at each request, when `token_service.trust_proxy` is unset:
   * `tessera serve` gives the gateway's `trust_proxy` (one listener, the same proxies; reloaded
   * with it). Default: none. `token_service.trust_proxy`, when set, is used instead.
   */
  readonly trustedProxies?: () => BlockList;
}

const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' } as const;

class BodyTooLarge extends Error {
  /** The reason code a refusal for it is audited with. */
  readonly code = 'request_body_too_large';
}

/**
 * The client closed the connection before its body was whole (it hung up): no server failure, and
 * there is no one left to answer.
 */
class BodyAborted extends Error {
  readonly code = 'client_closed';
}

/**
 * The listener answered the request while its body was being read and closed the connection
 * ({@link bodyRefusal}): 400 for a body the parser refused (a chunk that is no chunk), 408 for one
 * still arriving at request_timeout. The client did not hang up.
 */
class BodyInvalid extends Error {
  readonly code: BodyRefusal;
  constructor(code: BodyRefusal) {
    super(code);
    this.code = code;
  }
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      // Never read (its answer closes the connection), and a client waiting for 100 Continue is
      // never asked for a body this large.
      skipContinue(req);
      reject(new BodyTooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // The answer closes the connection; the rest is read and dropped for the linger, so the
        // client's end is seen (no reset once it is done).
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    // Node reports a body cut short as an `aborted` ECONNRESET error on the request, also one whose
    // framing its parser refused or that request_timeout cut.
    req.on('error', (err) => {
      if (req.complete) return reject(err);
      const refused = bodyRefusal(req);
      reject(refused !== undefined ? new BodyInvalid(refused) : new BodyAborted());
    });
  });
}

function send(res: ServerResponse, status: number, body: string | undefined, headers: Record<string, string>): void {
  if (res.headersSent) return;
  // A refusal decided before the body was read whole (its length, type, method, credential):
  // the connection is closed after it rather than the body drained.
  if (res.req !== undefined && bodyUnread(res.req)) closeUnread(res);
  const h: Record<string, string | number> = { ...headers };
  if (body !== undefined) {
    h['content-type'] ??= 'application/json';
    h['content-length'] = Buffer.byteLength(body);
  }
  res.writeHead(status, h);
  res.end(body);
}

/**
 * A 200 from a form endpoint. The headers go to `writeHead` as a flat array: Node then copies them
 * straight to the wire without building and validating a header object per response. `nonce`: the
 * token endpoint's `DPoP-Nonce` (RFC 9449 §8.2).
 */
function sendOk(res: ServerResponse, body: string | undefined, requestId: string, nonce?: string): void {
  if (res.headersSent) return;
  const headers = ['cache-control', 'no-store', 'pragma', 'no-cache', 'x-request-id', requestId];
  if (nonce !== undefined) headers.push('dpop-nonce', nonce);
  if (body === undefined) {
    res.writeHead(200, headers);
    res.end();
    return;
  }
  headers.push('content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)));
  res.writeHead(200, headers);
  res.end(body);
}

/** An error response; `nonce` is the token endpoint's current `DPoP-Nonce`, unless the error names its own. */
function sendError(res: ServerResponse, e: OAuthError, requestId: string, nonce?: string): void {
  send(res, e.status, JSON.stringify(e.toJSON()), {
    ...NO_STORE,
    ...(nonce !== undefined ? { 'dpop-nonce': nonce } : {}),
    ...e.headers(),
    'x-request-id': requestId,
  });
}

/** What a browser may send to, and read from, an endpoint that answers CORS (`token_service.cors`). */
interface CorsEndpoint {
  /** Request headers the endpoint reads: what a preflight may ask to send. */
  readonly allowHeaders: string;
  /** Response headers beyond the CORS-safelisted ones that the endpoint's answers may carry. */
  readonly exposeHeaders: string;
  /** Whether clients' own allowed origins open it too (the endpoint identifies a client; registration creates one). */
  readonly perClient: boolean;
}

/** What the CORS step did: answered a preflight, refused one, or left the request to its endpoint. */
type CorsOutcome = 'answered' | 'refused' | undefined;

const DONE: Promise<void> = Promise.resolve();

/** `next` once the CORS step has decided, unless it answered; at once when it decided at once. */
function afterCors(c: CorsOutcome | Promise<CorsOutcome>, next: (refused: boolean) => Promise<void>): Promise<void> {
  if (c instanceof Promise) return c.then((d) => (d === 'answered' ? undefined : next(d === 'refused')));
  return c === 'answered' ? DONE : next(c === 'refused');
}

const CORS = {
  token: {
    allowHeaders: 'Authorization, Content-Type, DPoP',
    exposeHeaders: 'DPoP-Nonce, WWW-Authenticate, X-Request-Id',
    perClient: true,
  },
  revocation: { allowHeaders: 'Authorization, Content-Type', exposeHeaders: 'WWW-Authenticate, X-Request-Id', perClient: true },
  registration: {
    allowHeaders: 'Authorization, Content-Type',
    exposeHeaders: 'WWW-Authenticate, Retry-After, X-Request-Id',
    perClient: false,
  },
} as const satisfies Record<string, CorsEndpoint>;

/** How long a browser may cache an answered preflight, seconds (Chromium caps it at 7200). */
const CORS_MAX_AGE = '600';

const SAFE = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * Serialize a response body. Token responses are assembled directly: every value is either a
 * number or a string that cannot need escaping (base64url tokens, URNs, RFC 6749 scope tokens),
 * which is checked; anything else goes through JSON.stringify.
 */
function serialize(result: unknown): string {
  const r = result as Record<string, unknown>;
  if (typeof r.access_token === 'string' && typeof r.expires_in === 'number') {
    let out = '{';
    for (const key in r) {
      const v = r[key];
      if (typeof v === 'number') out += `"${key}":${v},`;
      else if (typeof v === 'string' && SAFE.test(v)) out += `"${key}":"${v}",`;
      else return JSON.stringify(result);
    }
    return `${out.slice(0, -1)}}`;
  }
  return JSON.stringify(result);
}

/**
 * `request_multiple_authorization` when the request carries more than one Authorization header.
 * Node keeps only the first in `req.headers`, so two clients' credentials (or an admin token and
 * another) would be read as the first alone; RFC 6749 §2.3 allows one method per request.
 */
function authorizationFault(req: IncomingMessage): { headerFault: 'request_multiple_authorization' } | undefined {
  if (req.headers.authorization === undefined) return undefined;
  return sentTwice(req, 'authorization') ? { headerFault: 'request_multiple_authorization' } : undefined;
}

/**
 * The form body of a request already checked to be `application/x-www-form-urlencoded`, or
 * `undefined` when it is labelled with a charset other than UTF-8 or its bytes are not UTF-8
 * (RFC 6749 Appendix B). Every form endpoint reads its body here.
 */
async function readForm(req: IncomingMessage, limit: number): Promise<URLSearchParams | undefined> {
  if (!declaredCharsetIsUtf8(req.headers['content-type'] ?? '')) return undefined;
  return parseUtf8Form(await readBody(req, limit));
}

/** Whether the request URL has a query (a bare trailing `?` is none). */
function hasQuery(req: IncomingMessage): boolean {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return q >= 0 && q < url.length - 1;
}

/** Refuse a JSON body labelled with a charset: JSON is UTF-8 (RFC 8259 §8.1). */
function requireUtf8Label(req: IncomingMessage): void {
  if (!declaredCharsetIsUtf8(req.headers['content-type'] ?? '')) throw new OAuthError('request_not_utf8');
}

/**
 * Build the request handler for a started {@link TokenService}.
 *
 * Paths: RFC 8414 metadata, the JWKS, `/oauth2/token`, `/oauth2/revoke`, `/oauth2/introspect`,
 * `/oauth2/authorize` when `token_service.authorization` is enabled, `/oauth2/register` when
 * `token_service.registration` is (all under the issuer's path),
 * and the admin API: `POST <issuer>/oauth2/admin/revoke` with one of
 * `{"grant_id"}`, `{"subject", "issuer"?}`, `{"client_id"}`, `{"token"}`, and
 * `GET <issuer>/oauth2/admin/grants/<id>`.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import {
 *   createTokenServiceFromConfig, createTokenServiceHandler, loadConfigFile, loadMasterKey, openStore,
 * } from 'tessera/token-service';
 *
 * const config = loadConfigFile('tessera.yaml');
 * const store = await openStore(config);
 * const service = createTokenServiceFromConfig(config, { store, master: loadMasterKey(config.data_dir)?.key });
 * await service.start();
 * const tokens = createTokenServiceHandler(service);
 * createServer((req, res) => tokens(req, res) || notFound(res)).listen(8080);
 * ```
 */
export function createTokenServiceHandler(service: TokenService, options: TokenServiceHandlerOptions = {}): TokenServiceRequestHandler {
  const limit = options.maxBodyBytes ?? 65_536;
  const e = service.endpoints;
  const path = (url: string) => new URL(url).pathname;
  const paths = {
    metadata: path(e.metadata),
    jwks: path(e.jwks),
    token: path(e.token),
    revocation: path(e.revocation),
    introspection: path(e.introspection),
    admin: `${path(e.admin)}/`,
    authorization: path(e.authorization),
    registration: path(e.registration),
  };
  // The client's address (through `token_service.trust_proxy`) for the per-address buckets and the
  // audit events' remote_addr. The socket's from every peer not listed: its X-Forwarded-For is ignored.
  const ownProxies = service.config.trust_proxy;
  const ownList = ownProxies === undefined ? undefined : peerList(ownProxies, 'token_service.trust_proxy', []);
  const proxies = ownList !== undefined ? (ownProxies?.length === 0 ? undefined : () => ownList) : options.trustedProxies;
  const clientOf = (req: IncomingMessage): string | undefined =>
    proxies === undefined ? req.socket.remoteAddress : clientAddress(proxies(), req.socket.remoteAddress, req.headers['x-forwarded-for']);
  for (const w of catchAllWarnings(
    ownProxies ?? [],
    'token_service.trust_proxy',
    "every caller is trusted as a proxy, so anyone's X-Forwarded-For is believed (the client address that keys the per-address limits and is audited as remote_addr); list the addresses of the proxies in front instead",
  ))
    (options.onConfigWarning ?? options.onWarning)?.(w);
  const az = service.config.authorization;
  if (options.authenticator === undefined && az.enabled && az.trusted_header !== undefined) {
    // Accepted (a deliberate choice somewhere), but said at start, as the gateway's peer lists are.
    for (const w of catchAllWarnings(
      az.trusted_header.allowed_peers,
      'token_service.authorization.trusted_header.allowed_peers',
      'anyone who reaches the token service and holds the secret_header value may sign in at /oauth2/authorize as any person they name; list the addresses of the SSO proxy in front',
    ))
      (options.onConfigWarning ?? options.onWarning)?.(w);
  }
  const authenticator =
    options.authenticator ??
    (!az.enabled
      ? undefined
      : az.trusted_header !== undefined
        ? createTrustedHeaderAuthenticator(az.trusted_header)
        : az.oidc !== undefined && service.loginKeys !== undefined
          ? createOidcAuthenticator(az.oidc, {
              tesseraIssuer: service.issuer,
              keys: service.loginKeys,
              store: service.store,
              now: service.now,
              ...(options.fetch ? { fetch: options.fetch } : {}),
              ...(options.onWarning ? { onWarning: options.onWarning } : {}),
            })
          : undefined);
  const authorize =
    authenticator === undefined
      ? undefined
      : createAuthorizeHandler(service, {
          authenticator,
          readForm: (req) => readForm(req, limit),
          onError: options.onError,
          clientAddress: clientOf,
        });
  const loginCallback =
    authenticator?.login === undefined
      ? undefined
      : createLoginCallbackHandler(service, authenticator.login, { onError: options.onError, clientAddress: clientOf });
  const loginCallbackPath = authenticator?.login === undefined ? undefined : path(authenticator.login.callbackUrl);
  const logout =
    authenticator?.login === undefined
      ? undefined
      : createLogoutHandler(service, authenticator, authenticator.login, { onError: options.onError, clientAddress: clientOf });
  const logoutPath = authenticator?.login === undefined ? undefined : path(authenticator.login.logoutUrl);
  const metadataBody = JSON.stringify(service.metadata());
  const tokenNonce = () => service.dpopNonce();
  /** Requests {@link TokenServiceRequestHandler.refuseFraming} was given: refused, their body never read. */
  const misframed = new WeakSet<IncomingMessage>();

  const origins = service.config.cors.allowed_origins;
  const everyOrigin = origins.includes('*');
  const listed = new Set(origins);

  /**
   * CORS for the browser-facing endpoints (token, revocation, registration): answers a preflight
   * (`'answered'`), tells of one from an origin not allowed (`'refused'`: the endpoint refuses and
   * audits it), or sets the headers the answer to come carries. An origin is named back only when
   * listed, compared exactly; never with `Access-Control-Allow-Credentials`, as these endpoints
   * read no cookie. Without `token_service.cors` and clients' own origins no header is set at all.
   *
   * A preflight names no client, so at the token and revocation endpoints it is answered for an
   * origin `token_service.cors` lists or any enabled client allows of its own; the request that
   * follows is decided by its client ({@link clientOrigins}). An answer's headers are set here by
   * `token_service.cors` alone, and changed once the client is known.
   */
  const cors = (req: IncomingMessage, res: ServerResponse, endpoint: CorsEndpoint): CorsOutcome | Promise<CorsOutcome> => {
    const origin = req.headers.origin;
    const preflight = req.method === 'OPTIONS' && origin !== undefined && req.headers['access-control-request-method'] !== undefined;
    const allow = everyOrigin ? '*' : origin !== undefined && listed.has(origin) ? origin : undefined;
    // Only a preflight the global list does not decide reads the clients' origins (a store read
    // after a change): every other request is decided without a turn of the event loop.
    if (preflight && allow === undefined && endpoint.perClient) {
      return service.clients
        .corsOrigins()
        .then((clients) => corsAnswer(res, endpoint, preflight, clients.has(origin) ? origin : undefined, clients.size));
    }
    return corsAnswer(res, endpoint, preflight, allow, 0);
  };

  /** The CORS headers (or the preflight's 204) for an origin `allow`ed, or none; `clientOriginCount`: origins clients allow. */
  const corsAnswer = (
    res: ServerResponse,
    endpoint: CorsEndpoint,
    preflight: boolean,
    allow: string | undefined,
    clientOriginCount: number,
  ): CorsOutcome => {
    if (origins.length === 0 && clientOriginCount === 0 && allow === undefined) return preflight ? 'refused' : undefined;
    // The answer depends on the Origin header unless every origin is allowed (Fetch standard §3.2.5).
    if (allow !== '*') res.setHeader('vary', 'Origin');
    if (allow === undefined) return preflight ? 'refused' : undefined;
    res.setHeader('access-control-allow-origin', allow);
    if (!preflight) {
      res.setHeader('access-control-expose-headers', endpoint.exposeHeaders);
      return undefined;
    }
    res.writeHead(204, {
      'access-control-allow-methods': 'POST',
      'access-control-allow-headers': endpoint.allowHeaders,
      'access-control-max-age': CORS_MAX_AGE,
    });
    res.end();
    return 'answered';
  };

  /**
   * Once a request's client is identified: when it allows origins of its own, they alone decide
   * whether its answer is readable (`Access-Control-Allow-Origin` names the request's origin only
   * when the client allows it; a request from another is refused by client authentication, as
   * `cors_origin_not_allowed_for_client`). A client without any keeps what `token_service.cors` set.
   */
  const clientOrigins =
    (req: IncomingMessage, res: ServerResponse, endpoint: CorsEndpoint) =>
    (own: readonly string[]): void => {
      if (own.length === 0) return;
      const origin = req.headers.origin;
      res.setHeader('vary', 'Origin');
      if (origin !== undefined && own.includes(origin)) {
        res.setHeader('access-control-allow-origin', origin);
        res.setHeader('access-control-expose-headers', endpoint.exposeHeaders);
      } else {
        res.removeHeader('access-control-allow-origin');
        res.removeHeader('access-control-expose-headers');
      }
    };

  const fail = (res: ServerResponse, error: unknown, requestId: string, nonce?: string) => {
    if (error instanceof OAuthError) {
      // A server-side failure the service wrapped: the caller gets the RFC error, the log the cause.
      if (error.status >= 500 && error.cause !== undefined) options.onError?.(error.cause, requestId);
      return sendError(res, error, requestId, nonce);
    }
    if (error instanceof BodyTooLarge) return sendError(res, new OAuthError('request_body_too_large'), requestId, nonce);
    // Reported, each client that hangs up mid-body (or sends a chunk that is no chunk, answered 400
    // by the listener) would be an error line in the operator's log.
    if (error instanceof BodyAborted || error instanceof BodyInvalid) return;
    options.onError?.(error, requestId);
    sendError(res, new OAuthError(error instanceof StoreUnavailableError ? 'store_unavailable' : 'server_error'), requestId, nonce);
  };

  /** The form-encoded POST endpoints. */
  const oauth = async (
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    endpointUrl: string,
    run: (r: OAuthRequest) => Promise<unknown>,
    /** The token endpoint's: the current DPoP nonce, sent with the answer (RFC 9449 §8.2). */
    nonce?: () => string | undefined,
    /** A CORS preflight from an origin not allowed. */
    corsRefused = false,
    /** The endpoint's CORS, when it answers browsers (introspection does not). */
    endpoint?: CorsEndpoint,
  ): Promise<void> => {
    // A request refused here still goes to the service as a fault, so the endpoint audits it as
    // every other refusal (token.denied, revocation.denied, introspection.denied).
    let requestFault: OAuthRequest['requestFault'];
    let form: URLSearchParams | undefined;
    if (misframed.has(req)) requestFault = 'request_framing_invalid';
    else if (corsRefused) requestFault = 'cors_origin_not_allowed';
    else if (req.method !== 'POST') requestFault = 'request_method_not_allowed';
    // The parameters are read from the body only (RFC 6749 §3.2, §2.3.1: credentials never in the
    // URI). A query would be ignored, so `?scope=narrow` would get the client's full scope and a
    // secret sent there would end up in access logs unnoticed: refused rather than ignored.
    else if (hasQuery(req)) requestFault = 'request_query_not_allowed';
    else if (mediaType(req) !== 'application/x-www-form-urlencoded') requestFault = 'request_content_type';
    else if (contentCoded(req)) requestFault = 'request_content_encoding';
    else {
      try {
        form = await readForm(req, limit);
      } catch (err) {
        if (err instanceof BodyTooLarge) requestFault = 'request_body_too_large';
        else if (err instanceof BodyAborted) requestFault = 'client_closed';
        else if (err instanceof BodyInvalid) requestFault = err.code;
        else throw err;
      }
    }
    const dpop = req.headers.dpop;
    // Node joins repeated headers with ", ", which never occurs in a compact JWS (RFC 9449 §4.3 allows one).
    if (requestFault === undefined && typeof dpop === 'string' && dpop.includes(',')) requestFault = 'dpop_proof_invalid';
    // audit.on_queue_full: refuse: admitted with its events' slots reserved, or, the audit queue
    // full, refused (503) and not audited. Once the body is read (or its reading failed), not when
    // the head arrives: a body trickled in for minutes holds no slot (slowloris would otherwise keep
    // the queue full, every request refused, with the store healthy). A request refused for its
    // head or its body writes its one denial. Never a revocation (RFC 7009): it takes access away,
    // and the revocation log records it even when its audit event is lost; refusing it would keep a
    // token alive for want of a log line.
    const slots =
      endpointUrl === e.revocation
        ? undefined
        : service.admitAudited(
            requestFault !== undefined ? AUDIT_EVENTS.refused : endpointUrl === e.token ? AUDIT_EVENTS.token : AUDIT_EVENTS.introspection,
          );
    try {
      const result = await run({
        params: form ?? new URLSearchParams(),
        ...(requestFault !== undefined ? { requestFault } : {}),
        // A body that is not UTF-8 goes to the service as a fault too.
        ...(requestFault === undefined && form === undefined ? { bodyFault: 'request_not_utf8' as const } : {}),
        authorization: req.headers.authorization,
        ...authorizationFault(req),
        endpointUrl,
        requestId,
        remoteAddr: clientOf(req),
        ...(typeof dpop === 'string' ? { dpop } : {}),
        // Every endpoint that authenticates a client checks its own origins, introspection too
        // (which answers no browser, but is not to be made to act by another site's page either).
        ...(typeof req.headers.origin === 'string' ? { origin: req.headers.origin } : {}),
        ...(endpoint !== undefined ? { onClientOrigins: clientOrigins(req, res, endpoint) } : {}),
        auditSlots: slots,
      });
      sendOk(res, result === undefined ? undefined : serialize(result), requestId, nonce?.());
    } finally {
      // Answered (or failed): the slots its events did not use go back, none kept by an error.
      slots?.release();
    }
  };

  /** RFC 7591 §3: a JSON client description in, 201 with the client (and its secret, once) out. */
  const register = async (req: IncomingMessage, res: ServerResponse, requestId: string, corsRefused: boolean): Promise<void> => {
    // A request refused before its body is read goes to the service as a fault too, audited
    // (client.registration_denied) like every other refused registration.
    let requestFault:
      | 'request_method_not_allowed'
      | 'request_query_not_allowed'
      | 'request_content_type_json'
      | 'request_content_encoding'
      | 'request_not_utf8'
      | 'request_body_too_large'
      | 'client_closed'
      | 'request_body_invalid'
      | 'request_timeout'
      | 'cors_origin_not_allowed'
      | 'request_framing_invalid'
      | undefined;
    if (misframed.has(req)) requestFault = 'request_framing_invalid';
    else if (corsRefused) requestFault = 'cors_origin_not_allowed';
    else if (req.method !== 'POST') requestFault = 'request_method_not_allowed';
    // As at the form endpoints and the admin API: metadata goes in the body, never in the URL.
    else if (hasQuery(req)) requestFault = 'request_query_not_allowed';
    else if (mediaType(req) !== 'application/json') requestFault = 'request_content_type_json';
    else if (contentCoded(req)) requestFault = 'request_content_encoding';
    // JSON is UTF-8 (RFC 8259 §8.1): a body labelled with another charset is refused.
    else if (!declaredCharsetIsUtf8(req.headers['content-type'] ?? '')) requestFault = 'request_not_utf8';
    let metadata: unknown;
    // A body that is no JSON, or names a member twice, is refused by the service, after its rate
    // limit and with its audit event, like any other refused registration.
    let bodyFault: 'registration_metadata_invalid' | 'registration_metadata_member_repeated' | undefined;
    if (requestFault === undefined) {
      try {
        const bytes = await readBody(req, limit);
        metadata = JSON.parse(bytes.toString('utf8'));
        // Bytes that are not UTF-8 are no JSON text (RFC 8259 §8.1), refused like any other; nesting
        // too deep to check is no repeated member: invalid metadata, as JSON that is no object is.
        const fault = strictJsonFault(bytes, metadata);
        if (fault !== undefined)
          bodyFault = fault === 'repeated' ? 'registration_metadata_member_repeated' : 'registration_metadata_invalid';
      } catch (err) {
        if (err instanceof BodyAborted) requestFault = 'client_closed';
        else if (err instanceof BodyInvalid) requestFault = err.code;
        else if (err instanceof BodyTooLarge) requestFault = 'request_body_too_large';
        else bodyFault = 'registration_metadata_invalid';
      }
    }
    // audit.on_queue_full: refuse: its one event's slot is reserved once the body is read (or its
    // reading failed), as at the form endpoints: a body trickled in holds none meanwhile.
    const slots = service.admitAudited(AUDIT_EVENTS.registration);
    try {
      const result = await service.registerDynamicClient(metadata, req.headers.authorization, {
        requestId,
        remoteAddr: clientOf(req),
        ...authorizationFault(req),
        ...(requestFault !== undefined ? { requestFault } : {}),
        ...(bodyFault !== undefined ? { bodyFault } : {}),
        auditSlots: slots,
      });
      send(res, 201, JSON.stringify(result), { ...NO_STORE, 'x-request-id': requestId });
    } finally {
      slots?.release();
    }
  };

  /**
   * The admin API. Every request its token lets through is audited as `admin.action`, allowed or
   * refused, with the admin token's subject, client and `jti` and what it asked for (a refused
   * token is `admin.denied`, in `authorizeAdminFresh`).
   */
  const admin = async (req: IncomingMessage, res: ServerResponse, requestId: string, sub: string): Promise<void> => {
    const action = sub === 'revoke' ? 'revoke' : sub.startsWith('grants/') ? 'grant_tree' : 'unknown';
    // audit.on_queue_full: refuse: a grant tree read is admitted with its event's slot reserved, or,
    // the audit queue full, refused before anything, not audited; a revocation never is (as at the
    // RFC 7009 endpoint).
    const slots = action === 'revoke' ? undefined : service.admitAudited(AUDIT_EVENTS.admin);
    try {
      await adminAdmitted(req, res, requestId, sub, action, { requestId, remoteAddr: clientOf(req), auditSlots: slots });
    } finally {
      slots?.release();
    }
  };

  const adminAdmitted = async (
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    sub: string,
    action: string,
    facts: AuditFacts,
  ): Promise<void> => {
    const who = await service.authorizeAdminFresh(req.headers.authorization, { ...facts, ...authorizationFault(req) });
    try {
      if (misframed.has(req)) throw new OAuthError('request_framing_invalid');
      const { body, detail } = sub === 'revoke' ? await adminRevoke(req, who) : await adminGrantTree(req, sub);
      service.auditAdminAction(who, facts, 'ok', { action, ...detail });
      send(res, 200, body, { ...NO_STORE, 'x-request-id': requestId });
    } catch (error) {
      const reason =
        error instanceof OAuthError
          ? error.code
          : error instanceof BodyTooLarge
            ? 'request_body_too_large'
            : error instanceof BodyAborted || error instanceof BodyInvalid
              ? error.code
              : error instanceof StoreUnavailableError
                ? 'store_unavailable'
                : 'server_error';
      service.auditAdminAction(who, facts, reason, { action });
      throw error;
    }
  };

  type AdminAnswer = { body: string; detail: Record<string, string | number> };

  const adminRevoke = async (req: IncomingMessage, who: { subject: string }): Promise<AdminAnswer> => {
    if (req.method !== 'POST') throw new OAuthError('request_method_not_allowed');
    // The admin API reads no query: one would be ignored (`?issuer=…` beside `{"subject"}` would
    // revoke the subject at every issuer), so it is refused as at the form endpoints.
    if (hasQuery(req)) throw new OAuthError('request_query_not_allowed');
    if (mediaType(req) !== 'application/json') throw new OAuthError('request_content_type_json');
    if (contentCoded(req)) throw new OAuthError('request_content_encoding');
    requireUtf8Label(req);
    const bytes = await readBody(req, limit);
    const text = bytes.toString('utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw malformedBody(text, { error });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw malformedBody(text, { value: parsed });
    const body = parsed as Record<string, unknown>;
    // {"subject":"alice","subject":"bob"}: which subject loses its grants must not depend on the reader.
    const fault = strictJsonFault(bytes, body);
    if (fault !== undefined) throw strictBodyFault(text, fault);
    const r = revocationRequest(body);
    const by = `admin:${who.subject}`;
    const reason: Record<string, string> = r.reason !== undefined ? { revoke_reason: r.reason } : {};
    if (r.token !== undefined) {
      // A refresh token: what RFC 7009 revokes for its client (without the client check), its
      // grant (the rotation family) with its subtree, answered as {"grant_id"} is; the grant, not
      // the token, names it in the audit trail.
      const family = await service.revokeRefreshToken(r.token, r.reason ?? 'admin_api', by);
      if (family !== undefined) {
        return {
          body: JSON.stringify({ revoked_grants: family.revokedGrants }),
          detail: {
            selector: 'token',
            token_type: 'refresh_token',
            target: family.grantId,
            ...reason,
            revoked: family.revokedGrants.length,
          },
        };
      }
      const revoked = await service.revokeAccessToken(r.token, by);
      // Not a valid, unexpired access or refresh token of this issuer (a mistyped or expired one):
      // nothing revoked, which a 200 would read as done while a leaked token lives on, as
      // `tessera revoke --token` refuses it.
      if (revoked === undefined) throw new OAuthError('admin_not_found');
      // The token itself is never written: its jti names it.
      return {
        body: JSON.stringify({ revoked_token: revoked.jti, grant_id: revoked.grantId, revoked_grants: revoked.revokedGrants }),
        detail: {
          selector: 'token',
          target: revoked.jti,
          ...reason,
          revoked: 1,
          // The grants exchanged from the token, revoked with it.
          ...(revoked.revokedGrants.length > 0 ? { grants_revoked: revoked.revokedGrants.length } : {}),
        },
      };
    }
    const selector = r.selector as GrantSelector;
    // A mistyped grant id must not read as done, as `tessera revoke --grant` refuses it.
    if ('grantId' in selector && (await service.store.getGrant(selector.grantId)) === undefined) throw new OAuthError('admin_not_found');
    const revoked = await service.revokeGrants(selector, r.reason ?? 'admin_api', by);
    const named: Record<string, string> =
      'grantId' in selector
        ? { selector: 'grant_id', target: selector.grantId }
        : 'subject' in selector
          ? { selector: 'subject', target: selector.subject, ...(selector.issuer !== undefined ? { issuer: selector.issuer } : {}) }
          : 'clientId' in selector
            ? { selector: 'client_id', target: selector.clientId }
            : { selector: 'exchanged_from', target: selector.exchangedFrom };
    return { body: JSON.stringify({ revoked_grants: revoked.map((g) => g.id) }), detail: { ...named, ...reason, revoked: revoked.length } };
  };

  const adminGrantTree = async (req: IncomingMessage, sub: string): Promise<AdminAnswer> => {
    if (!sub.startsWith('grants/')) throw new OAuthError('admin_not_found');
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new OAuthError('request_method_get_only');
    if (hasQuery(req)) throw new OAuthError('request_query_not_allowed');
    let id: string;
    try {
      id = decodeURIComponent(sub.slice(7));
    } catch {
      throw new OAuthError('admin_not_found');
    }
    if (!plainText(id)) throw new OAuthError('admin_not_found');
    const tree = await service.grantTree(id);
    if (!tree) throw new OAuthError('admin_not_found');
    return { body: JSON.stringify(tree), detail: { target: id } };
  };

  /** Refused for its framing, by an endpoint that audits nothing of its own (or none it could tell). */
  const refusedUnaudited = (req: IncomingMessage, res: ServerResponse, requestId: string): boolean => {
    if (!misframed.has(req)) return false;
    sendError(res, new OAuthError('request_framing_invalid'), requestId);
    return true;
  };

  const route: RequestHandler = (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathname = q < 0 ? url : url.slice(0, q);
    const inbound = req.headers['x-request-id'];
    const requestId = inboundRequestId(inbound) ?? uuidv7();
    let work: Promise<void>;
    // With token_service.dpop.nonce, every answer of the token endpoint (RFC 9449 §8.2) carries the nonce.
    let nonce: (() => string | undefined) | undefined;
    if (pathname === paths.token) {
      nonce = tokenNonce;
      const n = nonce;
      work = afterCors(cors(req, res, CORS.token), (refused) =>
        oauth(req, res, requestId, e.token, (r) => service.token(r), n, refused, CORS.token),
      );
    } else if (pathname === paths.revocation) {
      work = afterCors(cors(req, res, CORS.revocation), (refused) =>
        oauth(req, res, requestId, e.revocation, (r) => service.revoke(r), undefined, refused, CORS.revocation),
      );
    } else if (pathname === paths.introspection) work = oauth(req, res, requestId, e.introspection, (r) => service.introspect(r));
    else if (pathname === paths.authorization && authorize !== undefined) {
      if (misframed.has(req)) {
        // Audited as the endpoint's other refusals, admitted as they are (audit.on_queue_full:
        // refuse): its one authorization.denied takes a slot, and a full queue refuses it 503
        // rather than serving its 400 with the event dropped.
        work = (async () => {
          const auditSlots = service.admitAudited(AUDIT_EVENTS.authorizationFraming);
          try {
            const remoteAddr = clientOf(req);
            service.auditAuthorizationDenied('request_framing_invalid', {
              requestId,
              ...(remoteAddr !== undefined ? { remoteAddr } : {}),
              auditSlots,
            });
            refusedUnaudited(req, res, requestId);
          } finally {
            auditSlots?.release();
          }
        })();
      } else work = authorize(req, res, requestId);
    } else if (pathname === loginCallbackPath && loginCallback !== undefined) {
      if (refusedUnaudited(req, res, requestId)) return true;
      work = loginCallback(req, res, requestId);
    } else if (pathname === logoutPath && logout !== undefined) {
      if (refusedUnaudited(req, res, requestId)) return true;
      work = logout(req, res, requestId);
    } else if (pathname === paths.registration && service.config.registration.enabled) {
      work = afterCors(cors(req, res, CORS.registration), (refused) => register(req, res, requestId, refused));
    } else if (pathname === paths.metadata || pathname === paths.jwks) {
      if (refusedUnaudited(req, res, requestId)) return true;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        // Public and cacheable is the document alone: a refusal is not (a 405 is heuristically
        // cacheable, RFC 9110 §15.5.6), as no error of the other endpoints is.
        res.writeHead(405, { allow: 'GET, HEAD', ...NO_STORE, 'x-request-id': requestId });
        res.end();
        return true;
      }
      if (pathname === paths.metadata) {
        send(res, 200, metadataBody, { 'cache-control': 'public, max-age=3600', 'access-control-allow-origin': '*' });
      } else {
        const { body, maxAge } = service.keys.jwks();
        send(res, 200, body, {
          'content-type': 'application/jwk-set+json',
          'cache-control': `public, max-age=${maxAge}`,
          'access-control-allow-origin': '*',
        });
      }
      return true;
    } else if (pathname.startsWith(paths.admin)) work = admin(req, res, requestId, pathname.slice(paths.admin.length));
    else return false;
    work.catch((error: unknown) => fail(res, error, requestId, nonce?.()));
    return true;
  };
  const refuseFraming: RequestHandler = (req, res) => {
    misframed.add(req);
    return route(req, res);
  };
  return Object.assign(route, { refuseFraming });
}
