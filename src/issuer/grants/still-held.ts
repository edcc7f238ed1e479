/**
 * What of a grant the client still holds: a grant keeps the scopes and audiences it was made with,
 * and each access token issued on it later (a refresh, the redemption of an approved code) carries
 * only those the client is still registered for, so taking a scope or an audience from a client
 * takes it from its grants' next tokens too (client_credentials would refuse it outright).
 *
 * @module
 */
import { OAuthError } from '../../core/oauth-errors.ts';
import { type CompiledClient, withoutUnnamed } from '../clients.ts';
import { namesTarget, scopesWithin, targets } from '../params.ts';

/**
 * Without `scope`, the grant's scopes the client still holds: an access token never carries a scope
 * taken from the client since the grant was made (client_credentials would refuse it too). The grant
 * keeps its scopes; nothing left is `invalid_scope`, as a requested scope the client lost is.
 */
export function grantScopesLeft(grantScopes: readonly string[], client: CompiledClient, adminScope: string): readonly string[] {
  // A wildcard of the grant the client no longer holds whole narrows to the client's scopes under
  // it, never to the admin scope, which only a grant naming it holds.
  const left = scopesWithin(grantScopes, withoutUnnamed(client.scopes, grantScopes, adminScope));
  if (grantScopes.length > 0 && left.length === 0) throw new OAuthError('scope_not_allowed');
  return left;
}

/**
 * The grant's audiences the client still holds: an access token is never for an audience taken
 * from the client since the grant was made (client_credentials would refuse it too), as for scopes
 * ({@link grantScopesLeft}). The grant keeps its audiences; nothing left is `invalid_target`.
 */
export function grantAudiencesLeft(grantAudiences: readonly string[], client: CompiledClient): readonly string[] {
  const left = grantAudiences.filter((a) => client.audiences.has(a));
  if (grantAudiences.length > 0 && left.length === 0) throw new OAuthError('target_not_allowed');
  return left;
}

/**
 * The audiences of a token issued on a grant: those the request names (RFC 8707 §2.2: a subset of
 * the grant's, `target_not_granted` otherwise), each one the client still holds
 * (`target_not_allowed` otherwise); without a target, {@link grantAudiencesLeft}.
 */
export function audiencesStillHeld(params: URLSearchParams, grantAudiences: readonly string[], client: CompiledClient): readonly string[] {
  if (!namesTarget(params)) return grantAudiencesLeft(grantAudiences, client);
  const named = targets(params, new Set(grantAudiences), 'target_not_granted');
  for (const a of named) if (!client.audiences.has(a)) throw new OAuthError('target_not_allowed');
  return named;
}
