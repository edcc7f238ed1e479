/**
 * `/oauth2/authorize` over `node:http`: GET shows the consent page for a checked authorization
 * request to the signed-in person; POST takes their answer (Approve or Deny) with the anti-CSRF
 * token bound to that request and person, and redirects back to the client with `code` (or
 * `error=access_denied`), `state` and `iss` (RFC 9207).
 *
 * An error found before the client and its redirect URI are verified is shown as a page and never
 * redirected (no open redirector); later ones go back to the client. Every refusal is audited
 * with its reason; no code, token or header value is ever logged or shown.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { OAuthError, type OAuthErrorCode } from '../core/oauth-errors.ts';
import { type AuthorizationRequest, authorizationResponseUrl } from '../issuer/authorize.ts';
import type { TokenService } from '../issuer/service.ts';
import type { Authenticator } from './authenticator.ts';
import { newNonce, pageHeaders, renderConsent, renderError } from './consent-page.ts';

export interface AuthorizeHandlerOptions {
  readonly authenticator: Authenticator;
  /** Reads the form body (shared with the token endpoint's limits). */
  readonly readBody: (req: IncomingMessage) => Promise<string>;
}

const PAGE_TITLES: Partial<Record<OAuthErrorCode, string>> = {
  authorize_login_required: 'You are not signed in',
  authorize_consent_invalid: 'This approval form is no longer valid',
};

function page(res: ServerResponse, error: OAuthError, requestId: string): void {
  const nonce = newNonce();
  const body = renderError(PAGE_TITLES[error.code] ?? 'This request cannot be completed', error.description, nonce);
  res.writeHead(error.status, { ...pageHeaders(nonce), 'content-length': Buffer.byteLength(body), 'x-request-id': requestId });
  res.end(body);
}

function redirect(res: ServerResponse, location: string, requestId: string): void {
  // 303: the browser follows a POST's answer with a GET (OAuth 2.1 §4.1.2 forbids a 307 here).
  res.writeHead(303, { location, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer', 'x-request-id': requestId });
  res.end();
}

/** Build the handler; `service.consent` must exist (the service has the master key). */
export function createAuthorizeHandler(
  service: TokenService,
  options: AuthorizeHandlerOptions,
): (req: IncomingMessage, res: ServerResponse, requestId: string) => Promise<void> {
  const consent = service.consent;
  const issuerOrigin = new URL(service.issuer).origin;

  return async (req, res, requestId) => {
    if (req.method !== 'GET' && req.method !== 'POST') {
      res.writeHead(405, { allow: 'GET, POST', 'x-request-id': requestId });
      res.end();
      return;
    }
    if (!service.config.authorization.enabled || consent === undefined) return page(res, new OAuthError('authorize_disabled'), requestId);
    const remoteAddr = req.socket.remoteAddress;
    const denied = (code: OAuthErrorCode | string, facts: { subject?: string; clientId?: string } = {}) =>
      service.auditAuthorizationDenied(code, { ...facts, requestId, ...(remoteAddr !== undefined ? { remoteAddr } : {}) });

    let query: string;
    let form: URLSearchParams | undefined;
    if (req.method === 'GET') {
      const url = req.url ?? '';
      const q = url.indexOf('?');
      query = q < 0 ? '' : url.slice(q + 1);
    } else {
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'application/x-www-form-urlencoded') return page(res, new OAuthError('request_content_type'), requestId);
      // A cross-site post (what CSRF is) carries the attacker's origin; refuse it before anything else.
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== issuerOrigin && origin !== 'null') {
        denied('authorize_consent_invalid');
        return page(res, new OAuthError('authorize_consent_invalid'), requestId);
      }
      form = new URLSearchParams(await options.readBody(req));
      for (const name of ['request', 'csrf', 'decision']) {
        if (form.getAll(name).length !== 1) {
          denied('authorize_consent_invalid');
          return page(res, new OAuthError('authorize_consent_invalid'), requestId);
        }
      }
      query = form.get('request') as string;
    }

    const outcome = await service.checkAuthorizationRequest(new URLSearchParams(query));
    if (!outcome.ok) {
      const clientId = new URLSearchParams(query).get('client_id') ?? undefined;
      denied(outcome.error.code, clientId !== undefined && outcome.redirect !== undefined ? { clientId } : {});
      if (outcome.redirect === undefined) return page(res, outcome.error, requestId);
      return redirect(
        res,
        authorizationResponseUrl(outcome.redirect.uri, service.issuer, { error: outcome.error }, outcome.redirect.state),
        requestId,
      );
    }
    const request: AuthorizationRequest = outcome.request;
    const clientId = request.client.id;

    const person = await options.authenticator.authenticate({ headers: req.headers, remoteAddress: remoteAddr });
    if (!person.ok) {
      denied(`login_${person.reason}`, { clientId });
      return page(res, new OAuthError('authorize_login_required'), requestId);
    }

    if (form === undefined) {
      const nonce = newNonce();
      const redirectUrl = new URL(request.redirectUri);
      const body = renderConsent(
        {
          clientName: request.client.record.name ?? clientId,
          clientId,
          redirectHost: redirectUrl.host,
          scopes: request.scopes,
          resources: request.audiences,
          person: person.email ?? person.subject,
          request: query,
          csrf: consent.issue(person.subject, query),
          action: service.endpoints.authorization,
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

    if (!(await consent.consume(form.get('csrf') as string, person.subject, query))) {
      denied('authorize_consent_invalid', { subject: person.subject, clientId });
      return page(res, new OAuthError('authorize_consent_invalid'), requestId);
    }
    const decision = form.get('decision');
    if (decision === 'approve') {
      const code = await service.approveAuthorization(request, person.subject, { requestId, remoteAddr });
      return redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { code }, request.state), requestId);
    }
    if (decision === 'deny') {
      denied('authorize_access_denied', { subject: person.subject, clientId });
      const error = new OAuthError('authorize_access_denied');
      return redirect(res, authorizationResponseUrl(request.redirectUri, service.issuer, { error }, request.state), requestId);
    }
    denied('request_parameter_invalid', { subject: person.subject, clientId });
    return page(res, new OAuthError('request_parameter_invalid'), requestId);
  };
}
