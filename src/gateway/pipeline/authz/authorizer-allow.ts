/**
 * Public routes: everything the route matched is allowed.
 *
 * @module
 */
import type { Authorizer, AuthzOutcome } from './authorizer.ts';

const ALLOWED: AuthzOutcome = Object.freeze({ ok: true, rule: undefined });

export function allowAuthorizer(): Authorizer {
  return { id: 'allow', authorize: () => ALLOWED };
}
