/**
 * `auth: introspection`: an opaque token checked by RFC 7662 introspection (cached by the
 * verifier no longer than the token's `exp` and the configured maximum).
 *
 * @module
 */
import type { ManagedVerifier } from '../../../verifier.ts';
import type { Authenticator } from './authenticator.ts';

export function introspectionAuthenticator(verifier: ManagedVerifier): Authenticator {
  return {
    id: 'introspection',
    challenges: (e) => verifier.challenges(e),
    authenticate: (request) => verifier.authenticate(request),
  };
}
