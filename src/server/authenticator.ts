/**
 * The person at the authorization endpoint: who approves a client's request. The token service
 * does not log people in itself; an {@link Authenticator} says who the browser's user is, so a
 * deployment plugs in its identity provider. The first implementation trusts the SSO proxy in
 * front (`createTrustedHeaderAuthenticator`); the second sends the person to log in at an upstream
 * OpenID Connect provider, Tessera being its relying party (`createOidcAuthenticator`).
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';

/**
 * The login cookies an interactive authenticator sets (`__Host-` prefixed on an https issuer), by
 * every name they can have. They are credentials of the authorization endpoint: the gateway, which
 * shares the listener (and so receives them, Path=/), never forwards them upstream.
 */
export const LOGIN_COOKIES = { state: 'tessera-login', session: 'tessera-session' } as const;
export const LOGIN_COOKIE_NAMES: readonly string[] = Object.values(LOGIN_COOKIES).flatMap((name) => [name, `__Host-${name}`]);

/** What an authenticator may read of the request. */
export interface PersonRequest {
  readonly headers: IncomingHttpHeaders;
  /** The TCP peer's address, as Node reports it (what a peer allowlist such as `trusted_header.allowed_peers` checks). */
  readonly remoteAddress: string | undefined;
  /**
   * The client's address: behind a proxy in `token_service.trust_proxy`, the one X-Forwarded-For
   * names; else {@link remoteAddress}. For per-address limits, never for trusting a peer.
   */
  readonly clientAddress?: string | undefined;
}

/** Why no person was recognised: a stable reason for the audit trail, never a header value. */
export type AuthenticationFailure =
  | 'peer_not_trusted'
  | 'proxy_secret_missing'
  | 'proxy_secret_mismatch'
  | 'identity_missing'
  | 'identity_invalid'
  /** No login session cookie (an interactive authenticator then starts a login). */
  | 'session_missing'
  /** A login session cookie whose MAC does not verify or that does not parse. */
  | 'session_invalid'
  | 'session_expired'
  /** A login session that began before a revocation of its subject (`tessera revoke --subject`). */
  | 'session_revoked'
  /** A login session signed out (`/oauth2/logout`): a copy of its cookie presented afterwards. */
  | 'session_ended';

export type Authentication =
  | {
      readonly ok: true;
      /** The grant's subject (`sub` of the tokens). */
      readonly subject: string;
      /** Shown on the consent page when known. */
      readonly email?: string;
      /**
       * When the person signed in (epoch seconds), for an authenticator whose sign-in outlives the
       * request (a session cookie): a session from before a revocation of the subject is refused.
       */
      readonly authenticatedAt?: number;
      /**
       * The login session's id, for an authenticator that keeps sessions: signing out records it as
       * ended in the store, and a session so recorded signs no one in, wherever its cookie comes from.
       */
      readonly sessionId?: string;
      /** When that session ends at the latest (epoch seconds): how long its end must be remembered. */
      readonly sessionEndsAt?: number;
      /**
       * The authorization request (SHA-256 of its query string) whose login began this session: a
       * sign-in made for that very request, so its `prompt=login` or `max_age` is answered by it,
       * once (spent under `sessionId`: without one, never) and within `return_window` of `authenticatedAt`.
       */
      readonly signedInFor?: string;
      /**
       * When the person last signed in at the upstream provider (its ID token's `auth_time`, epoch
       * seconds), when it said: what `max_age` is measured from (a provider answering from its own
       * session signed them in earlier than the session here began, `authenticatedAt`).
       */
      readonly upstreamAuthenticatedAt?: number;
    }
  | { readonly ok: false; readonly reason: AuthenticationFailure };

/** Says who the person making an authorization request is. */
export interface Authenticator {
  /** For logs and the audit trail (`trusted_header`). */
  readonly kind: string;
  /**
   * Where subjects come from: an opaque value, stable across restarts and instances, that changes
   * with whatever decides which person a subject names (the kind, the upstream provider and its
   * client, the claim or header the subject is taken from). A subject is unique only within its
   * source (OIDC Core §2: `sub` per issuer), so what was kept for a subject under one source (a
   * remembered consent) is never used for the same subject under another.
   */
  readonly source: string;
  authenticate(request: PersonRequest): Authentication | Promise<Authentication>;
  /**
   * Present when the person can be sent to log in (an upstream OpenID Connect provider): a GET of
   * the authorization endpoint by someone not signed in is redirected to it instead of refused.
   */
  readonly login?: InteractiveLogin;
}

/** A redirect with the cookies to set alongside it. */
export interface LoginRedirect {
  readonly location: string;
  /** `Set-Cookie` header values. */
  readonly cookies: readonly string[];
}

/** Why a login callback failed: a stable reason for the audit trail. */
export type LoginFailure =
  | 'login_state_missing'
  | 'login_state_invalid'
  | 'login_state_mismatch'
  | 'login_state_expired'
  | 'login_state_replayed'
  | 'login_issuer_mismatch'
  | 'login_upstream_error'
  | 'login_upstream_unavailable'
  /** As many token requests to the provider as `max_token_requests_in_flight` allows are in flight: retry shortly. */
  | 'login_upstream_busy'
  /** This connecting address has made more callbacks than `callback_rate_limit` allows: retry after `retryAfter`. */
  | 'login_rate_limited'
  | 'login_code_rejected'
  | 'login_id_token_invalid'
  | 'login_nonce_mismatch'
  | 'login_identity_invalid'
  | 'login_email_unverified'
  | 'login_domain_not_allowed'
  /**
   * A fresh sign-in was asked of the provider (`prompt=login`, `max_age`) and its ID token says none
   * was made: no `auth_time`, or one older than the login (less the `max_age` asked for).
   */
  | 'login_not_fresh';

export type LoginCallbackOutcome =
  | {
      readonly ok: true;
      /** The authorization request (its query string) to go back to; it was checked before the login began. */
      readonly request: string;
      readonly subject: string;
      /** Who vouched for the person (the upstream provider's issuer), for the audit trail. */
      readonly provider: string;
      readonly cookies: readonly string[];
    }
  | {
      readonly ok: false;
      readonly reason: LoginFailure;
      /** The upstream's `error` code when it sent one (RFC 6749 §4.1.2.1 syntax checked), for the page. */
      readonly upstreamError?: string;
      /**
       * What the operator needs to tell a provider's clock skew from an attack (the claim refused,
       * the seconds it is off), for the audit event's detail: numbers and claim names, never a token.
       */
      readonly detail?: Readonly<Record<string, string | number | boolean>>;
      /** Seconds until the callback may be tried again (`login_rate_limited`): `Retry-After`. */
      readonly retryAfter?: number;
      readonly cookies: readonly string[];
    };

/** A login at another server: start it, and take its answer at {@link InteractiveLogin.callbackUrl}. */
export interface InteractiveLogin {
  /** Absolute URL of the callback (`<issuer>/oauth2/login/callback`). */
  readonly callbackUrl: string;
  /** Absolute URL of the sign-out endpoint (`<issuer>/oauth2/logout`). */
  readonly logoutUrl: string;
  /** `Set-Cookie` values that end the login session (and a login in progress). */
  readonly logoutCookies: readonly string[];
  /**
   * Where to send the browser to log in before answering `request` (an authorization request's
   * query string). `fresh`: the person must sign in again (`prompt=login`, `max_age`), so the
   * upstream is asked to re-authenticate them (`prompt=login` there too), not to reuse its own session.
   * `maxAge`: the request's `max_age` (0 for `prompt=login`), sent upstream too; the upstream's ID
   * token must then show (`auth_time`) a sign-in no older than that when the login began.
   */
  start(request: string, options?: { readonly fresh?: boolean; readonly maxAge?: number }): Promise<LoginRedirect>;
  /** Take the upstream's answer: the callback's query string and the browser's request. */
  finish(query: URLSearchParams, request: PersonRequest): Promise<LoginCallbackOutcome>;
}
