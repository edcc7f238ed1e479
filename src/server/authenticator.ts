/**
 * The person at the authorization endpoint: who approves a client's request. The token service
 * does not log people in itself; an {@link Authenticator} says who the browser's user is, so a
 * deployment plugs in its identity provider. The first implementation trusts the SSO proxy in
 * front ({@link createTrustedHeaderAuthenticator}); an upstream OpenID Connect login (Tessera as
 * an OIDC relying party of the IdP) is the natural next one.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';

/** What an authenticator may read of the request. */
export interface PersonRequest {
  readonly headers: IncomingHttpHeaders;
  /** The TCP peer's address, as Node reports it. */
  readonly remoteAddress: string | undefined;
}

/** Why no person was recognised: a stable reason for the audit trail, never a header value. */
export type AuthenticationFailure =
  | 'peer_not_trusted'
  | 'proxy_secret_missing'
  | 'proxy_secret_mismatch'
  | 'identity_missing'
  | 'identity_invalid';

export type Authentication =
  | {
      readonly ok: true;
      /** The grant's subject (`sub` of the tokens). */
      readonly subject: string;
      /** Shown on the consent page when known. */
      readonly email?: string;
    }
  | { readonly ok: false; readonly reason: AuthenticationFailure };

/** Says who the person making an authorization request is. */
export interface Authenticator {
  /** For logs and the audit trail (`trusted_header`). */
  readonly kind: string;
  authenticate(request: PersonRequest): Authentication | Promise<Authentication>;
}
