/**
 * Discovery: the endpoint URLs derived from the issuer, and RFC 8414 authorization server
 * metadata.
 *
 * @module
 */
import { ASYMMETRIC_ALGORITHMS, DEFAULT_DPOP_ALGORITHMS, type JwsAlgorithm } from '../core/jose/algorithms.ts';
import type { ScopeModel } from '../core/scopes.ts';
import { TOKEN_EXCHANGE } from './grants/exchange.ts';

/** The endpoint URLs, derived from the issuer. */
export interface Endpoints {
  readonly issuer: string;
  readonly metadata: string;
  readonly token: string;
  readonly revocation: string;
  readonly introspection: string;
  readonly jwks: string;
  readonly admin: string;
  readonly authorization: string;
  readonly registration: string;
}

/** The token service's endpoint URLs under `issuer` (as RFC 8414 metadata lists them). */
export function endpointsFor(issuer: string): Endpoints {
  const u = new URL(issuer);
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/+$/, '');
  return {
    issuer,
    // RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
    metadata: `${u.origin}/.well-known/oauth-authorization-server${path}`,
    token: `${issuer}/oauth2/token`,
    revocation: `${issuer}/oauth2/revoke`,
    introspection: `${issuer}/oauth2/introspect`,
    jwks: `${issuer}/.well-known/jwks.json`,
    admin: `${issuer}/oauth2/admin`,
    authorization: `${issuer}/oauth2/authorize`,
    registration: `${issuer}/oauth2/register`,
  };
}

/**
 * RFC 8414 authorization server metadata: exactly what this server supports. The authorization
 * code grant, its endpoint and public clients are listed only when the authorization endpoint is
 * enabled (`authorize`); the registration endpoint only when dynamic registration is (`register`);
 * `prompt=login` only when the person can be sent to sign in afresh (`freshLogin`: an upstream OIDC login).
 */
export function metadata(
  endpoints: Endpoints,
  scopes: ScopeModel,
  enabled: { readonly authorize?: boolean; readonly register?: boolean; readonly freshLogin?: boolean } = {},
  dpopAlgorithms: readonly JwsAlgorithm[] = DEFAULT_DPOP_ALGORITHMS,
): Record<string, unknown> {
  const algs = [...ASYMMETRIC_ALGORITHMS];
  const secretAuth = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
  // Public clients authenticate nowhere but call the token and revocation endpoints (RFC 8414 §2).
  const auth = enabled.authorize ? [...secretAuth, 'none'] : secretAuth;
  return {
    issuer: endpoints.issuer,
    ...(enabled.authorize ? { authorization_endpoint: endpoints.authorization } : {}),
    token_endpoint: endpoints.token,
    jwks_uri: endpoints.jwks,
    revocation_endpoint: endpoints.revocation,
    introspection_endpoint: endpoints.introspection,
    ...(enabled.register ? { registration_endpoint: endpoints.registration } : {}),
    grant_types_supported: enabled.authorize
      ? ['authorization_code', 'client_credentials', 'refresh_token', TOKEN_EXCHANGE]
      : ['client_credentials', 'refresh_token', TOKEN_EXCHANGE],
    response_types_supported: enabled.authorize ? ['code'] : [],
    ...(enabled.authorize
      ? {
          response_modes_supported: ['query'],
          code_challenge_methods_supported: ['S256'],
          // RFC 9207: the authorization response carries `iss`, against mix-up attacks.
          authorization_response_iss_parameter_supported: true,
          // OIDC Core §3.1.2.1 values the authorization endpoint acts on (OpenID Connect Prompt
          // Create §4.2 defines the member, registered for RFC 8414 metadata too). `login` only where
          // the person can be sent to sign in afresh (`oidc`): behind an SSO proxy it is login_required.
          prompt_values_supported: enabled.freshLogin ? ['none', 'login', 'consent'] : ['none', 'consent'],
        }
      : {}),
    token_endpoint_auth_methods_supported: auth,
    token_endpoint_auth_signing_alg_values_supported: algs,
    revocation_endpoint_auth_methods_supported: auth,
    revocation_endpoint_auth_signing_alg_values_supported: algs,
    introspection_endpoint_auth_methods_supported: secretAuth,
    introspection_endpoint_auth_signing_alg_values_supported: algs,
    // The token endpoint accepts these, and verifiers of the same configuration (`dpop.algorithms`):
    // a client picking one gets a token it can present with proofs (RFC 9449 §5.1).
    dpop_signing_alg_values_supported: [...dpopAlgorithms],
    ...(scopes.known ? { scopes_supported: [...scopes.known].sort() } : {}),
  };
}
