/**
 * `auth: static`: one of the configured static gateway tokens, compared in constant time by the
 * verifier. An unknown token is not this authenticator's business (the next one is tried).
 *
 * @module
 */
import type { ManagedVerifier } from '../../../verifier.ts';
import { type Authenticator, NOT_RESPONSIBLE } from './authenticator.ts';
import { outcomeOf } from './verifier-outcome.ts';

export function staticAuthenticator(verifier: ManagedVerifier): Authenticator {
  return {
    id: 'static',
    challenges: (e) => verifier.challenges(e),
    authenticate(request) {
      return verifier.authenticate(request).then((r) => (!r.ok && r.error.code === 'token_unknown' ? NOT_RESPONSIBLE : outcomeOf(r)));
    },
  };
}
