/**
 * Builds a route's authentication chain from its `auth` list: the strategies are tried in order
 * until one is responsible; when none is, the token is unknown. The route's required audience is
 * checked here too, because a token for another API is not a valid credential for this one.
 *
 * @module
 */
import { TesseraError } from '../../../core/errors.ts';
import type { ManagedVerifier } from '../../../verifier.ts';
import type { GatewayRequest } from '../request.ts';
import { type Authenticator, type AuthenticatorId, type AuthnOutcome, NOT_RESPONSIBLE } from './authenticator.ts';
import { anonymousAuthenticator } from './authenticator-anonymous.ts';
import { introspectionAuthenticator } from './authenticator-introspection.ts';
import { jwtAuthenticator } from './authenticator-jwt.ts';
import { staticAuthenticator } from './authenticator-static.ts';

/** The verifiers the gateway built, one per credential kind in use. */
export type VerifiersByKind = Partial<Record<Exclude<AuthenticatorId, 'none'>, ManagedVerifier>>;

export type AuthnResult = Exclude<AuthnOutcome, typeof NOT_RESPONSIBLE>;

/** A route's compiled authentication stage. */
export interface AuthenticationStage {
  readonly public: boolean;
  /** Run the chain. The outcome may still be NOT_RESPONSIBLE or lack the audience check: pass it
   * through {@link AuthenticationStage.settle}. (Two steps, so the hot path has one promise hop.) */
  authenticate(request: GatewayRequest): AuthnOutcome | Promise<AuthnOutcome>;
  /** Turn an outcome into a result: nobody responsible is an unknown token; check the audience. */
  settle(outcome: AuthnOutcome): AuthnResult;
  challenges(error?: TesseraError): string[];
}

/** Create one authenticator; `undefined` when the verifier it needs is not configured. */
export function createAuthenticator(id: AuthenticatorId, verifiers: VerifiersByKind): Authenticator | undefined {
  if (id === 'none') return anonymousAuthenticator();
  const verifier = verifiers[id];
  if (!verifier) return undefined;
  if (id === 'jwt') return jwtAuthenticator(verifier);
  if (id === 'static') return staticAuthenticator(verifier);
  return introspectionAuthenticator(verifier);
}

/**
 * Chain authenticators for a route.
 *
 * @param audience when set, JWT and introspection principals must list it in `aud`.
 */
export function authenticationStage(chain: readonly Authenticator[], audience: string | undefined): AuthenticationStage {
  const first = chain[0] as Authenticator;
  const isPublic = first.id === 'none';
  const checkAudience = (outcome: AuthnResult): AuthnResult => {
    if (audience === undefined || !outcome.ok || outcome.principal === undefined || outcome.principal.kind === 'static') return outcome;
    if (outcome.principal.audience.includes(audience)) return outcome;
    return { ok: false, error: new TesseraError('token_audience_invalid', { claim: 'aud' }), principal: outcome.principal };
  };
  const settle = (outcome: AuthnOutcome): AuthnResult =>
    outcome === NOT_RESPONSIBLE ? { ok: false, error: new TesseraError('token_unknown') } : checkAudience(outcome);

  const run = async (request: GatewayRequest): Promise<AuthnOutcome> => {
    for (const a of chain) {
      const outcome = await a.authenticate(request);
      if (outcome !== NOT_RESPONSIBLE) return outcome;
    }
    return NOT_RESPONSIBLE;
  };

  return {
    public: isPublic,
    challenges: (e) => first.challenges(e),
    settle,
    // Single-strategy routes (the common case) skip the loop.
    authenticate: chain.length === 1 ? (request) => first.authenticate(request) : run,
  };
}
