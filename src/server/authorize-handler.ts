/**
 * `/oauth2/authorize` over `node:http`: GET shows the consent page for a checked authorization
 * request to the signed-in person; POST takes their answer (Approve or Deny) with the anti-CSRF
 * token bound to that request and person, and redirects back to the client with `code` (or
 * `error=access_denied`), `state` and `iss` (RFC 9207).
 *
 * An error found before the client and its redirect URI are verified is shown as a page and never
 * redirected (no open redirector). Later, an error in the request and a failure of the server go
 * back to the client; a refusal of the person or their browser (made here or thrown part-way) is a
 * page they can act on, or goes back to the client with prompt=none. Every refusal is audited
 * with its reason; no code, token or header value is ever logged or shown.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditSlots } from '../audit/batching.ts';
import { LOGIN_RETURN_WINDOW_DEFAULT } from '../config/token-service-schema.ts';
import { parseUtf8Form } from '../core/form.ts';
import { OAuthError, type OAuthErrorCode } from '../core/oauth-errors.ts';
import { type AuthorizationRequest, authorizationResponseUrl, retargetAudiences } from '../issuer/authorize.ts';
import { DYNAMIC_CLIENT_ID_PREFIX, isClientName } from '../issuer/clients.ts';
import { asOAuthError } from '../issuer/context.ts';
import type { ApprovingPerson } from '../issuer/remembered-consent.ts';
import { loginSessionScope } from '../issuer/revoke.ts';
import { sha256 } from '../issuer/secrets.ts';
import type { TokenService } from '../issuer/service.ts';
import { AUDIT_EVENTS } from './audit-events.ts';
import type { Authenticator, InteractiveLogin, LoginFailure, LoginRedirect } from './authenticator.ts';
import { newNonce, pageHeaders, renderConsent, renderError, renderSignOut } from './consent-page.ts';
import { discardBody } from './expect-continue.ts';
import { LoginError } from './oidc-authenticator.ts';
import { contentCoded, mediaType } from './request-headers.ts';

export interface AuthorizeHandlerOptions {
  readonly authenticator: Authenticator;
  /**
   * Reads the form body (shared with the token endpoint's limits); `undefined` when it is labelled
   * with another charset or is not UTF-8 (RFC 6749 Appendix B). Throws an error whose `code`
   * (`request_body_too_large`, `client_closed`, `request_body_invalid`, `request_timeout`) the refusal is audited with.
   */
  readonly readForm: (req: IncomingMessage) => Promise<URLSearchParams | undefined>;
  /** Told of a failure a request was answered for (a store down, a bug), with its request id. */
  readonly onError?: ((error: unknown, requestId: string) => void) | undefined;
  /**
   * The client's address, for the audit events' `remote_addr` and the per-address buckets
   * (`token_service.trust_proxy`: read through the proxies listed there). Default: the socket's.
   */
  readonly clientAddress?: ((req: IncomingMessage) => string | undefined) | undefined;
}

const socketAddress = (req: IncomingMessage): string | undefined => req.socket.remoteAddress;

/** How far a request got: what an answer to a failure part-way may use. */
interface Progress {
  /** The request, once its client and redirect URI are trusted. */
  request?: AuthorizationRequest;
  /** The person, once signed in. */
  subject?: string;
  /** The form body failed to be read (audited there, answered by the caller). */
  unread?: boolean;
  /**
   * Admitted under `audit.on_queue_full: refuse`: whether it was, and the slots reserved for its
   * events (`undefined` with `drop`). Set once the request is known to need them: a form body is
   * read first, so a client trickling one in holds no slot meanwhile.
   */
  admitted?: boolean;
  slots?: AuditSlots | undefined;
}

const PAGE_TITLES: Partial<Record<OAuthErrorCode, string>> = {
  authorize_login_required: 'You are not signed in',
  authorize_consent_invalid: 'This approval form is no longer valid',
  authorize_login_failed: 'Signing in did not complete',
  authorize_login_not_allowed: 'This account may not sign in here',
  authorize_login_unavailable: 'The identity provider could not be reached',
  authorize_login_busy: 'Signing in is busy',
  authorize_login_rate_limited: 'Too many sign-ins',
};

/** The page shown for a failed login (the reason itself goes to the audit trail only). */
function loginError(reason: LoginFailure, retryAfter?: number): OAuthError {
  if (reason === 'login_upstream_unavailable') return new OAuthError('authorize_login_unavailable');
  if (reason === 'login_upstream_busy') return new OAuthError('authorize_login_busy');
  if (reason === 'login_rate_limited') {
    return new OAuthError('authorize_login_rate_limited', retryAfter !== undefined ? { retryAfter } : {});
  }
  if (reason === 'login_domain_not_allowed' || reason === 'login_email_unverified') return new OAuthError('authorize_login_not_allowed');
  return new OAuthError('authorize_login_failed');
}

/** What every answer of these endpoints says (their pages and redirects too): never stored by a cache. */
const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' } as const;

/** 303 with cookies: to the upstream login, or from its callback back to the authorization endpoint. */
function loginRedirect(res: ServerResponse, to: LoginRedirect, requestId: string): void {
  res.writeHead(303, {
    location: to.location,
    'set-cookie': [...to.cookies],
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
    'x-request-id': requestId,
  });
  res.end();
}

function page(res: ServerResponse, error: OAuthError, requestId: string): void {
  const nonce = newNonce();
  const body = renderError(PAGE_TITLES[error.code] ?? 'This request cannot be completed', error.description, nonce);
  // RFC 9110 §15.5.16: a 415 for a content coding names the codings accepted, as the JSON endpoints' does.
  const accept = error.code === 'request_content_encoding' ? { 'accept-encoding': 'identity' } : {};
  // RFC 9110 §10.2.3: a 503 (the audit queue full, the store down) says when to try again, and so
  // does a 429 (RFC 6585 §4: the login callback's per-address limit).
  const retry = error.status === 503 || error.status === 429 ? error.headers() : {};
  res.writeHead(error.status, {
    ...pageHeaders(nonce),
    ...accept,
    ...retry,
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
  });
  res.end(body);
}

/**
 * A failure of the server (the store down or past its bound, a bug) on a page a person's browser
 * lands on (the login callback, sign-out): the error page, 503 with `Retry-After` for the store
 * unavailable, else 500, never what it was (the cause goes to `onError`, the log). The error
 * answered, for the audit trail's reason (`store_unavailable`, `server_error`).
 */
function failurePage(
  res: ServerResponse,
  e: unknown,
  requestId: string,
  onError: ((error: unknown, requestId: string) => void) | undefined,
): OAuthError {
  const error = asOAuthError(e);
  if (error.status >= 500 && error.cause !== undefined) onError?.(error.cause, requestId);
  else if (!(e instanceof OAuthError)) onError?.(e, requestId);
  page(res, error.error === 'temporarily_unavailable' ? error : new OAuthError('server_error'), requestId);
  return error;
}

/**
 * What a consent token is bound to: the request as sent and what the page showed for it. The
 * answer re-reads the request against the client as it is then; binding what was shown means a
 * client changed in between (re-registered with more scopes, audiences or redirect URIs) cannot
 * have the person approve more than they saw, and the answer's code is bound to the DPoP key
 * (`dpop_jkt`, RFC 9449 §10) of the request the page was shown for, or to none if it named none.
 */
function consentSubject(query: string, request: AuthorizationRequest): string {
  return JSON.stringify([
    query,
    request.client.id,
    request.redirectUri,
    request.scopes,
    request.audiences,
    request.dpopJkt ?? null,
    // What the page said the client may re-target to: a client given the right since cannot use a form shown without it.
    retargetAudiences(request) ?? null,
  ]);
}

/**
 * A POST to this server's pages made by another site (what CSRF is): a foreign `Origin`, or Fetch
 * Metadata saying so. `Origin: null` (an opaque origin: a sandboxed frame, a `data:` page, a page
 * served no-referrer) is foreign unless `Sec-Fetch-Site: same-origin` vouches for it: this
 * server's pages with forms are served `Referrer-Policy: same-origin`, so their posts carry the
 * issuer's origin even in a browser without Fetch Metadata. Shared by the consent form and sign-out.
 */
function crossSitePost(req: IncomingMessage, issuerOrigin: string): boolean {
  const origin = req.headers.origin;
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin') return true;
  return origin !== undefined && origin !== issuerOrigin && !(origin === 'null' && site === 'same-origin');
}

function redirect(res: ServerResponse, location: string, requestId: string): void {
  // 303: the browser follows a POST's answer with a GET (OAuth 2.1 §4.1.2 forbids a 307 here).
  // COOP as the consent page has it, and browsers apply it to redirects too: a remembered approval
  // answers a same-origin script's window.open() without the page (Sec-Fetch-Dest: document), and
  // without it the opener would read the code from a redirect URI on this origin.
  res.writeHead(303, {
    location,
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
    'x-request-id': requestId,
  });
  res.end();
}

/**
 * The `error` values of an authorization error response: RFC 6749 §4.1.2.1, OpenID Connect Core
 * §3.1.2.6, RFC 8707 §2 (invalid_target).
 */
const AUTHORIZATION_RESPONSE_ERRORS: ReadonlySet<string> = new Set([
  'invalid_request',
  'unauthorized_client',
  'access_denied',
  'unsupported_response_type',
  'invalid_scope',
  'server_error',
  'temporarily_unavailable',
  'interaction_required',
  'login_required',
  'account_selection_required',
  'consent_required',
  'invalid_request_uri',
  'invalid_request_object',
  'request_not_supported',
  'request_uri_not_supported',
  'registration_not_supported',
  'invalid_target',
]);

/** Build the handler; `service.consent` must exist (the service has the master key). */
export function createAuthorizeHandler(
  service: TokenService,
  options: AuthorizeHandlerOptions,
): (req: IncomingMessage, res: ServerResponse, requestId: string) => Promise<void> {
  const consent = service.consent;
  const issuerOrigin = new URL(service.issuer).origin;
  // Seconds after a sign-in during which the authorization request it was made for (coming back
  // from the callback, which redirects at once) is answered by it, once (`authorization.oidc.return_window`):
  // at least the clock skew between instances, since the callback may be served by one and the
  // request by another.
  const returnWindow = service.config.authorization.oidc?.return_window ?? LOGIN_RETURN_WINDOW_DEFAULT;
  const clientOf = options.clientAddress ?? socketAddress;

  /**
   * A failure part-way (the store down or past its bound, a bug), audited with the reason the other
   * endpoints give it (`store_unavailable`, `server_error`). RFC 6749 §4.1.2.1: once the redirect
   * URI is trusted, it goes back to the client as `temporarily_unavailable` or `server_error`, with
   * `state` and `iss` (prompt=none asks for no page at all); before, it is a page, never a redirect.
   * An {@link OAuthError} below 500 of this endpoint's own kind thrown part-way is a refusal, not a
   * failure: audited with its code and answered as itself, as the handler's own refusals at that
   * stage are (`refuse`): a page for the person, or back to the client with prompt=none.
   */
  const failed = (res: ServerResponse, requestId: string, remoteAddr: string | undefined, progress: Progress, e: unknown): void => {
    // Failed before it was admitted: its refusal takes a slot as every other does, or is refused 503.
    if (!progress.admitted) {
      const slots = admitted(service, AUDIT_EVENTS.refused);
      if (slots === false) {
        page(res, new OAuthError('audit_unavailable'), requestId);
        return;
      }
      progress.admitted = true;
      progress.slots = slots;
    }
    const error = asOAuthError(e);
    if (error.status >= 500 && error.cause !== undefined) options.onError?.(error.cause, requestId);
    else if (!(e instanceof OAuthError)) options.onError?.(e, requestId);
    const request = progress.request;
    service.auditAuthorizationDenied(error.code, {
      requestId,
      ...(remoteAddr !== undefined ? { remoteAddr } : {}),
      ...(progress.subject !== undefined ? { subject: progress.subject } : {}),
      ...(request !== undefined ? { clientId: request.client.id } : {}),
      auditSlots: progress.slots,
    });
    // An OAuth error thrown part-way of the endpoint's own kind (a 4xx an authorization response
    // carries: an Authenticator plugged in that refuses the person, say) is a refusal, answered as
    // itself. Anything else is a failure of the server, answered as RFC 6749 §4.1.2.1's
    // temporarily_unavailable or server_error, never with what it was: an error of another
    // endpoint's kind (invalid_client, invalid_grant) thrown here, which no refusal of this
    // endpoint is, included (it is audited with its own code).
    const refusal = error.status < 500 && AUTHORIZATION_RESPONSE_ERRORS.has(error.error);
    const answer = refusal || error.error === 'temporarily_unavailable' ? error : new OAuthError('server_error');
    // Where it goes, once the redirect URI is trusted. A refusal thrown here comes after the request
    // was checked: it is about the person or their browser (who signed in, how the page was loaded,
    // the form they posted), as every refusal `refuse` makes at this stage, and is answered as those
    // are: a page the person can act on, or, with prompt=none (OIDC Core §3.1.2.6: no page at all),
    // back to the client. A failure goes back to the client whatever the prompt: the client can
    // retry, and temporarily_unavailable and server_error exist for a redirect to say what a 503 or
    // 500 would (RFC 6749 §4.1.2.1).
    const toClient = request !== undefined && request.errorsToClient && (!refusal || request.prompt.has('none'));
    if (!toClient) page(res, answer, requestId);
    else redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { error: answer }, request.state), requestId);
  };

  return async (req, res, requestId) => {
    const progress: Progress = {};
    try {
      await handle(req, res, requestId, progress);
    } catch (e) {
      if (progress.unread || res.headersSent) throw e;
      failed(res, requestId, clientOf(req), progress, e);
    } finally {
      progress.slots?.release();
    }
  };

  async function handle(req: IncomingMessage, res: ServerResponse, requestId: string, progress: Progress): Promise<void> {
    const remoteAddr = clientOf(req);
    // audit.on_queue_full: refuse: admitted with its events' slots reserved, or, the audit queue
    // full, refused (503 page), not audited: no page, no code and no remembered approval that
    // could not be audited (authorization.approved). A consent form is admitted once its body is
    // read, not when its head arrives (a body trickled in for minutes holds no slot); a refusal
    // decided on the head takes the one slot its authorization.denied needs.
    const admit = (events: number): boolean => {
      const slots = admitted(service, events);
      if (slots === false) {
        page(res, new OAuthError('audit_unavailable'), requestId);
        return false;
      }
      progress.admitted = true;
      progress.slots = slots;
      return true;
    };
    const denied = (code: OAuthErrorCode | string, facts: { subject?: string; clientId?: string } = {}) =>
      service.auditAuthorizationDenied(code, {
        ...facts,
        requestId,
        ...(remoteAddr !== undefined ? { remoteAddr } : {}),
        auditSlots: progress.slots,
      });
    if (req.method !== 'GET' && req.method !== 'POST') {
      if (!admit(AUDIT_EVENTS.refused)) return;
      // Audited as the endpoint's other refusals are.
      denied('request_method_not_allowed');
      res.writeHead(405, { allow: 'GET, POST', ...NO_STORE, 'x-request-id': requestId });
      res.end();
      return;
    }
    if (!service.config.authorization.enabled || consent === undefined) return page(res, new OAuthError('authorize_disabled'), requestId);

    let query: string;
    let form: URLSearchParams | undefined;
    if (req.method === 'GET') {
      if (!admit(AUDIT_EVENTS.authorization)) return;
      const url = req.url ?? '';
      const q = url.indexOf('?');
      query = q < 0 ? '' : url.slice(q + 1);
    } else {
      // Labelled twice (Node keeps the first label) is refused too, as at the other form endpoints.
      if (mediaType(req) !== 'application/x-www-form-urlencoded') {
        if (!admit(AUDIT_EVENTS.refused)) return;
        denied('request_content_type');
        return page(res, new OAuthError('request_content_type'), requestId);
      }
      if (contentCoded(req)) {
        if (!admit(AUDIT_EVENTS.refused)) return;
        denied('request_content_encoding');
        return page(res, new OAuthError('request_content_encoding'), requestId);
      }
      // Refused before anything else (the form's anti-CSRF token is checked after).
      if (crossSitePost(req, issuerOrigin)) {
        if (!admit(AUDIT_EVENTS.refused)) return;
        denied('authorize_consent_invalid');
        return page(res, new OAuthError('authorize_consent_invalid'), requestId);
      }
      try {
        form = await options.readForm(req);
      } catch (e) {
        // Audited, as every other refusal here (a body too large, a client that hung up), with the
        // one slot its event needs; the queue full, refused 503 instead (answered by the caller, as
        // the body's own refusal would be: the connection closed, the body unread).
        progress.unread = true;
        const slots = admitted(service, AUDIT_EVENTS.refused);
        if (slots === false) throw new OAuthError('audit_unavailable');
        progress.admitted = true;
        progress.slots = slots;
        const code = (e as { code?: unknown } | null)?.code;
        denied(
          code === 'request_body_too_large' || code === 'client_closed' || code === 'request_body_invalid' || code === 'request_timeout'
            ? code
            : 'server_error',
        );
        throw e;
      }
      if (!admit(AUDIT_EVENTS.authorization)) return;
      if (form === undefined) {
        denied('request_not_utf8');
        return page(res, new OAuthError('request_not_utf8'), requestId);
      }
      for (const name of ['request', 'csrf', 'decision']) {
        if (form.getAll(name).length !== 1) {
          denied('authorize_consent_invalid');
          return page(res, new OAuthError('authorize_consent_invalid'), requestId);
        }
      }
      query = form.get('request') as string;
    }

    // The query is form-encoded too (RFC 6749 §3.1), and UTF-8: `state=%FF` would go back to the
    // client as U+FFFD. Shown as a page: which client it is cannot be trusted yet.
    const params = parseUtf8Form(query);
    if (params === undefined) {
      denied('request_not_utf8');
      return page(res, new OAuthError('request_not_utf8'), requestId);
    }
    const outcome = await service.checkAuthorizationRequest(params);
    if (!outcome.ok) {
      denied(outcome.error.code, outcome.clientId !== undefined ? { clientId: outcome.clientId } : {});
      if (outcome.redirect === undefined) return page(res, outcome.error, requestId);
      return redirect(
        res,
        authorizationResponseUrl(outcome.redirect.uri, service.issuer, { error: outcome.error }, outcome.redirect.state),
        requestId,
      );
    }
    const request: AuthorizationRequest = outcome.request;
    progress.request = request;
    const clientId = request.client.id;

    // Before the person is checked: a consent this request remembers is dated then, so a subject
    // revocation landing after this check voids it (remembered-consent.ts).
    const checkedAt = service.now();
    let person = await options.authenticator.authenticate({
      headers: req.headers,
      remoteAddress: req.socket.remoteAddress,
      clientAddress: remoteAddr,
    });
    let sessionOf: string | undefined;
    // `tessera revoke --subject` revokes what the person holds, and a login session is held: one
    // that began before the revocation approves nothing more (the person signs in again).
    if (
      person.ok &&
      person.authenticatedAt !== undefined &&
      service.revocations.isRevoked({
        issuer: loginSessionScope(service.issuer),
        subject: person.subject,
        clientId: undefined,
        delegationId: undefined,
        tokenId: undefined,
        issuedAt: person.authenticatedAt,
        expiresAt: Number.POSITIVE_INFINITY,
      })
    ) {
      sessionOf = person.subject;
      person = { ok: false, reason: 'session_revoked' };
    }
    // Signed out (at any instance): a copy of the session's cookie, kept or taken elsewhere, is no session.
    if (person.ok && person.sessionId !== undefined && (await service.loginSessionEnded(person.sessionId))) {
      sessionOf = person.subject;
      person = { ok: false, reason: 'session_ended' };
    }
    // An error for the client: back to its redirect URI, or a page where its errors are shown (a
    // dynamically registered client's non-loopback redirect URI, as checkAuthorizationRequest's).
    const toClient = (code: OAuthErrorCode): void => {
      const error = new OAuthError(code);
      if (!request.errorsToClient) page(res, error, requestId);
      else redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { error }, request.state), requestId);
    };
    // OIDC Core §3.1.2.1: prompt=none asks for no page at all, an error page included; from here on
    // the redirect URI is trusted, so a refusal goes back to the client as its error (§3.1.2.6),
    // audited with its own reason as before. A page otherwise.
    const refuse = (code: OAuthErrorCode): void => {
      if (request.prompt.has('none')) toClient(code);
      else page(res, new OAuthError(code), requestId);
    };
    // OIDC Core §3.1.2.1: `prompt=login`, or a sign-in older than `max_age` seconds, asks for a
    // fresh one (`max_age=0` is `prompt=login`: a sign-in this second is not older than 0 s).
    // Judged as of the page load, or for a consent form as of when its page was shown (the form
    // answers that page: minutes later it still approves what a fresh enough sign-in was shown).
    const judgedAt = form === undefined ? checkedAt : Math.min(checkedAt, consent.shownAt(form.get('csrf') as string) ?? checkedAt);
    const signedInAgo = person.ok && person.authenticatedAt !== undefined ? judgedAt - person.authenticatedAt : undefined;
    // max_age counts from the sign-in at the upstream provider when it said when (auth_time): one
    // answered from its own session signed the person in before the session here began.
    const authenticatedAgo =
      person.ok && person.upstreamAuthenticatedAt !== undefined ? judgedAt - person.upstreamAuthenticatedAt : signedInAgo;
    const asksFresh = person.ok && (request.prompt.has('login') || request.maxAge !== undefined);
    // A session begun by a login made for this very request (its query; the upstream was asked for
    // the same prompt=login or max_age, checked at the callback) answers it on its way back from
    // that sign-in (the callback sends the browser here at once), once: within `return_window`
    // (the clock skew between the instance that served the callback and this one), and only the
    // first time the request comes back, at any instance (spent in the store's one-time
    // identifiers, whether or not max_age needed it). The same query loaded again, a reload or a
    // replay, is judged as any other: prompt=login and max_age=0 ask for a new sign-in, max_age=N
    // is answered only while the last sign-in is at most N s old. A consent form is judged as of
    // its page, which only a request answered so showed (the form's token is one-time).
    let signedInForIt = false;
    if (
      asksFresh &&
      person.ok &&
      person.sessionId !== undefined &&
      person.authenticatedAt !== undefined &&
      signedInAgo !== undefined &&
      person.signedInFor === sha256(query) &&
      signedInAgo <= returnWindow
    ) {
      signedInForIt =
        form !== undefined ||
        (await service.spendFreshSignIn(person.sessionId, (person.sessionEndsAt ?? person.authenticatedAt + returnWindow) + returnWindow));
    }
    const stale =
      asksFresh &&
      !signedInForIt &&
      (request.prompt.has('login') ||
        request.maxAge === 0 ||
        authenticatedAgo === undefined ||
        authenticatedAgo > (request.maxAge as number));
    if (!person.ok || stale) {
      const login = options.authenticator.login;
      // No session yet, or an expired one, is the normal way into a login: not worth an audit event.
      if (!person.ok && (login === undefined || (person.reason !== 'session_missing' && person.reason !== 'session_expired'))) {
        denied(`login_${person.reason}`, { clientId, ...(sessionOf !== undefined ? { subject: sessionOf } : {}) });
      }
      const who = person.ok ? { subject: person.subject } : sessionOf !== undefined ? { subject: sessionOf } : {};
      // prompt=none: no login page, no page at all (OIDC Core §3.1.2.6).
      if (request.prompt.has('none')) {
        denied('authorize_login_required', { clientId, ...who });
        return toClient('authorize_login_required');
      }
      // Only a GET starts a login: a consent form posted without a session (or a fresh enough one)
      // is refused (start again).
      if (form !== undefined || (login === undefined && !person.ok)) {
        if (stale) denied('authorize_login_required', { clientId, ...who });
        return page(res, new OAuthError('authorize_login_required'), requestId);
      }
      // The person as an SSO proxy vouches for them on each request: this server cannot have them
      // sign in afresh, which the client asked for (OIDC Core §3.1.2.1: then login_required).
      if (login === undefined) {
        denied('authorize_login_required', { clientId, ...who });
        return toClient('authorize_login_required');
      }
      let to: LoginRedirect;
      try {
        // The sign-in the request asks for is asked of the upstream too, whether or not there was
        // a session here: without one, the upstream could answer from its own, hours old.
        const maxAge = request.prompt.has('login') ? 0 : request.maxAge;
        to = await login.start(query, { fresh: stale || maxAge === 0, ...(maxAge !== undefined ? { maxAge } : {}) });
      } catch (e) {
        if (!(e instanceof LoginError)) throw e;
        denied(e.reason, { clientId });
        return page(res, loginError(e.reason), requestId);
      }
      return loginRedirect(res, to, requestId);
    }

    progress.subject = person.subject;

    // RFC 9068 §5: a client_credentials token's `sub` is its client id, so a person whose subject
    // is a client id (a user name chosen at a self-service identity provider, say), also in another
    // case, would get tokens a resource server cannot tell from that client's own; one named
    // `static:…` would pass for a static token. Whichever authenticator vouched for the person.
    if (await service.clients.couldPassForClient(person.subject)) {
      denied('login_subject_is_client', { subject: person.subject, clientId });
      return refuse('authorize_login_not_allowed');
    }

    // Who approves, as the code is dated: since the login session's start (a subject revocation
    // from then on refuses the code at its redemption, in the store: this instance's copy of the
    // revocation log may not hold one another process just made) or this check, with no session.
    const approver: ApprovingPerson = {
      subject: person.subject,
      source: options.authenticator.source,
      checkedAt,
      ...(person.authenticatedAt !== undefined ? { authenticatedAt: person.authenticatedAt } : {}),
    };

    if (form === undefined) {
      // The page carries the anti-CSRF token, which only the same-origin policy keeps from other
      // pages; but `tessera serve` with a gateway serves upstream pages on this origin too, and a
      // script in one could fetch the page, read the token and post the approval (RFC 6749
      // §10.12). A browser's own page load is Sec-Fetch-Dest: document; a fetch() or XHR is
      // empty, a frame iframe, an <object> object.
      // Scripts cannot set Sec-Fetch-* headers; clients that send none are served as before.
      // Checked before a remembered approval too, which answers for the page: the script picked the
      // PKCE challenge, and a redirect URI on this origin would hand it the code. With prompt=none
      // (silent authentication in a hidden iframe) the client gets interaction_required: an error
      // and the state it sent, nothing a script could not have had from a signed-out browser.
      const dest = req.headers['sec-fetch-dest'];
      if (dest !== undefined && dest !== 'document') {
        denied('authorize_not_navigation', { subject: person.subject, clientId });
        return refuse('authorize_not_navigation');
      }
      // A remembered approval that covers this request answers it without the page.
      const code = await service.approveRemembered(request, approver, params, { requestId, remoteAddr, auditSlots: progress.slots });
      if (code !== undefined) {
        return redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { code }, request.state), requestId);
      }
      // prompt=none and nothing remembered answers it: the page would be needed (OIDC Core §3.1.2.6).
      if (request.prompt.has('none')) {
        denied('authorize_consent_required', { subject: person.subject, clientId });
        return toClient('authorize_consent_required');
      }
      const nonce = newNonce();
      const redirectUrl = new URL(request.redirectUri);
      const body = renderConsent(
        {
          // A name stored before isClientName's rules tightened may show as nothing: the id instead.
          clientName:
            request.client.record.name !== null && isClientName(request.client.record.name) ? request.client.record.name : clientId,
          clientId,
          // The URI as requested (matched to a registered one: exactly, or a loopback one but for its port), not the parser's rewriting of it.
          redirectUri: request.redirectUri,
          selfRegistered: clientId.startsWith(DYNAMIC_CLIENT_ID_PREFIX),
          scopes: request.scopes,
          resources: request.audiences,
          retargetTo: retargetAudiences(request),
          person: person.email ?? person.subject,
          request: query,
          csrf: consent.issue(person.subject, consentSubject(query, request)),
          action: service.endpoints.authorization,
          ...(options.authenticator.login !== undefined ? { signOut: options.authenticator.login.logoutUrl } : {}),
        },
        nonce,
      );
      res.writeHead(200, {
        ...pageHeaders(nonce, [issuerOrigin, redirectUrl.origin]),
        'content-length': Buffer.byteLength(body),
        'x-request-id': requestId,
      });
      res.end(body);
      return;
    }

    // No page is shown for a prompt=none request, so no form token is ever bound to one: refused
    // here, and back to the client as every prompt=none refusal.
    if (!(await consent.consume(form.get('csrf') as string, person.subject, consentSubject(query, request)))) {
      denied('authorize_consent_invalid', { subject: person.subject, clientId });
      return refuse('authorize_consent_invalid');
    }
    const decision = form.get('decision');
    if (decision === 'approve') {
      const code = await service.approveAuthorization(request, approver, { requestId, remoteAddr, auditSlots: progress.slots });
      return redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { code }, request.state), requestId);
    }
    if (decision === 'deny') {
      denied('authorize_access_denied', { subject: person.subject, clientId });
      const error = new OAuthError('authorize_access_denied');
      return redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { error }, request.state), requestId);
    }
    denied('request_parameter_invalid', { subject: person.subject, clientId });
    return refuse('request_parameter_invalid');
  }
}

/**
 * `audit.on_queue_full: refuse`: the slots reserved for a request's `events`; `false` when the
 * audit queue cannot hold them (the request is refused); `undefined` with `drop`.
 */
function admitted(service: TokenService, events: number): AuditSlots | undefined | false {
  try {
    return service.admitAudited(events);
  } catch (e) {
    if (e instanceof OAuthError && e.code === 'audit_unavailable') return false;
    throw e;
  }
}

/**
 * `<issuer>/oauth2/login/callback`: the upstream provider's answer to a login. Success sends the
 * browser back to the authorization request carried in the login state cookie (always this
 * issuer's authorization endpoint); every failure is a page, never a redirect.
 */
export function createLoginCallbackHandler(
  service: TokenService,
  login: InteractiveLogin,
  options: Pick<AuthorizeHandlerOptions, 'onError' | 'clientAddress'> = {},
): (req: IncomingMessage, res: ServerResponse, requestId: string) => Promise<void> {
  const clientOf = options.clientAddress ?? socketAddress;
  return async (req, res, requestId) => {
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET', ...NO_STORE, 'x-request-id': requestId });
      res.end();
      return;
    }
    // audit.on_queue_full: refuse: no session begun whose login.succeeded could not be audited.
    // Before finish, which spends the login state: the browser can retry the same callback.
    const auditSlots = admitted(service, AUDIT_EVENTS.loginCallback);
    if (auditSlots === false) return page(res, new OAuthError('audit_unavailable'), requestId);
    const remoteAddr = clientOf(req);
    try {
      const url = req.url ?? '';
      const q = url.indexOf('?');
      const outcome = await login.finish(new URLSearchParams(q < 0 ? '' : url.slice(q + 1)), {
        headers: req.headers,
        remoteAddress: req.socket.remoteAddress,
        clientAddress: remoteAddr,
      });
      if (!outcome.ok) {
        service.auditAuthorizationDenied(
          outcome.upstreamError === undefined ? outcome.reason : `${outcome.reason}:${outcome.upstreamError}`,
          {
            requestId,
            ...(remoteAddr !== undefined ? { remoteAddr } : {}),
            auditSlots,
          },
          outcome.detail,
        );
        res.setHeader('set-cookie', [...outcome.cookies]);
        return page(res, loginError(outcome.reason, outcome.retryAfter), requestId);
      }
      service.auditLoginSucceeded(outcome.subject, outcome.provider, {
        requestId,
        ...(remoteAddr !== undefined ? { remoteAddr } : {}),
        auditSlots,
      });
      return loginRedirect(res, { location: `${service.endpoints.authorization}?${outcome.request}`, cookies: outcome.cookies }, requestId);
    } catch (e) {
      // The store failing (the login state spent once, `useOnce`): a page, as the authorization
      // endpoint's before its redirect URI is trusted, not the JSON of the API endpoints. The state
      // cookie is left alone: its login was not spent, and reloading the callback may finish it.
      if (res.headersSent) throw e;
      const error = failurePage(res, e, requestId, options.onError);
      service.auditAuthorizationDenied(error.code, { requestId, ...(remoteAddr !== undefined ? { remoteAddr } : {}), auditSlots });
    } finally {
      auditSlots?.release();
    }
  };
}

/**
 * `<issuer>/oauth2/logout`: GET shows a Sign out button (a link or an image cannot sign anyone
 * out); POST, from this server's own pages, ends the login session (its cookies cleared, and its
 * id recorded as ended in the store, so a copy of the cookie signs no one in at any instance) and is
 * audited as `login.signed_out` with the subject it belonged to; one that failed (the store) as
 * `login.signed_out` with `decision: deny` and the error's code. Grants already approved are
 * untouched: revoking them is `tessera revoke`.
 */
export function createLogoutHandler(
  service: TokenService,
  authenticator: Authenticator,
  login: InteractiveLogin,
  options: Pick<AuthorizeHandlerOptions, 'onError' | 'clientAddress'> = {},
): (req: IncomingMessage, res: ServerResponse, requestId: string) => Promise<void> {
  const issuerOrigin = new URL(service.issuer).origin;
  const clientOf = options.clientAddress ?? socketAddress;
  const show = (res: ServerResponse, status: number, body: string, nonce: string, requestId: string, cookies: readonly string[] = []) => {
    res.writeHead(status, {
      ...pageHeaders(nonce, [issuerOrigin]),
      'content-length': Buffer.byteLength(body),
      'x-request-id': requestId,
      ...(cookies.length > 0 ? { 'set-cookie': [...cookies] } : {}),
    });
    res.end(body);
  };
  return async (req, res, requestId) => {
    const nonce = newNonce();
    if (req.method === 'GET' || req.method === 'HEAD') {
      return show(res, 200, renderSignOut(login.logoutUrl, nonce), nonce, requestId);
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'GET, HEAD, POST', ...NO_STORE, 'x-request-id': requestId });
      res.end();
      return;
    }
    discardBody(req);
    // A cross-site post cannot sign the person out (the cookies are SameSite=Lax, but clearing
    // them needs no cookie at all).
    if (crossSitePost(req, issuerOrigin)) {
      return page(res, new OAuthError('authorize_consent_invalid'), requestId);
    }
    const remoteAddr = clientOf(req);
    const facts = { requestId, ...(remoteAddr !== undefined ? { remoteAddr } : {}) };
    let subject: string | undefined;
    try {
      const person = await authenticator.authenticate({
        headers: req.headers,
        remoteAddress: req.socket.remoteAddress,
        clientAddress: remoteAddr,
      });
      if (person.ok) {
        subject = person.subject;
        // Ended in the store, not only in this browser: a copy of the cookie signs no one in afterwards.
        // Audited either way; kept past a full audit queue only when this sign-out ended it.
        const ended =
          person.sessionId !== undefined && person.sessionEndsAt !== undefined
            ? await service.endLoginSession(person.sessionId, person.sessionEndsAt)
            : false;
        service.auditSignedOut(person.subject, facts, ended);
      }
    } catch (e) {
      // The store failing as the session is recorded as ended: an error page (503 with Retry-After,
      // or 500), not the JSON of the API endpoints, and not "You are signed out": the cookies stay,
      // so signing out again once the store is back ends the session everywhere, where clearing
      // them here would leave a copy of the cookie signing in. Audited as a failed sign-out
      // (`store_unavailable`, `server_error`), with the subject when the cookie named one.
      if (res.headersSent) throw e;
      const error = failurePage(res, e, requestId, options.onError);
      service.auditSignOutFailed(error.code, { ...facts, ...(subject !== undefined ? { subject } : {}) });
      return;
    }
    show(
      res,
      200,
      renderError('You are signed out', 'Your sign-in at this authorization server has ended.', nonce),
      nonce,
      requestId,
      login.logoutCookies,
    );
  };
}
