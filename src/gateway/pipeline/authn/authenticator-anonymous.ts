/**
 * `auth: none`: a public route. Nobody is authenticated, nothing is refused.
 *
 * @module
 */
import type { Authenticator, AuthnOutcome } from './authenticator.ts';

const ANONYMOUS: AuthnOutcome = Object.freeze({ ok: true, principal: undefined });

export function anonymousAuthenticator(): Authenticator {
  return {
    id: 'none',
    challenges: () => [],
    authenticate: () => ANONYMOUS,
  };
}
