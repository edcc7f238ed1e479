/**
 * `auth: jwt`: a JWT access token from one of the trusted issuers, checked by the verifier
 * (signature first, then claims, revocation and DPoP binding). Not responsible for tokens that
 * are not JWS compact serializations, so a route can chain `[jwt, static]`.
 *
 * @module
 */
import type { ManagedVerifier } from '../../../verifier.ts';
import { type Authenticator, NOT_RESPONSIBLE } from './authenticator.ts';
import { looksLikeJws, peekToken } from './verifier-outcome.ts';

export function jwtAuthenticator(verifier: ManagedVerifier): Authenticator {
  return {
    id: 'jwt',
    challenges: (e) => verifier.challenges(e),
    authenticate(request) {
      const token = peekToken(request);
      if (token !== undefined && token !== '' && !looksLikeJws(token)) return NOT_RESPONSIBLE;
      // A verifier result is already an outcome (no extra promise hop on the hot path).
      return verifier.authenticate(request);
    },
  };
}
