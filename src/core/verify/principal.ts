/**
 * The principal: who a verified request acts for and what it may do.
 *
 * @module
 */
import type { EffectiveScopes } from '../scopes.ts';

/** One link of a delegation chain (RFC 8693 §4.1 `act`). */
export interface Actor {
  readonly subject: string;
  readonly issuer?: string;
  readonly clientId?: string;
}

/** How the token was checked. */
export type PrincipalKind = 'jwt' | 'static' | 'introspection';

/**
 * A verified caller. Immutable and shared between requests that present the same token.
 *
 * `actors` lists the delegation chain from the current actor outwards: `actors[0]` is the party
 * presenting the token on behalf of `subject`, `actors[1]` the one that delegated to it, and so on.
 */
export interface Principal {
  readonly kind: PrincipalKind;
  readonly issuer: string;
  readonly subject: string | undefined;
  readonly clientId: string | undefined;
  readonly audience: readonly string[];
  /** Scopes as granted in the token. */
  readonly scopes: readonly string[];
  /** Scopes after inheritance and wildcards. */
  readonly effectiveScopes: EffectiveScopes;
  readonly actors: readonly Actor[];
  /** The delegation (grant) id the token belongs to. */
  readonly delegationId: string | undefined;
  /** The token's `jti`. */
  readonly tokenId: string | undefined;
  /** Epoch seconds. */
  readonly expiresAt: number;
  readonly issuedAt: number | undefined;
  /** RFC 7800 / RFC 9449 confirmation: the JWK thumbprint the token is bound to. */
  readonly confirmation: { readonly jkt: string } | undefined;
  /** The first 16 characters of the token's SHA-256 (base64url): identifies a token in logs
   * without revealing it. */
  readonly tokenHash: string;
  /** For static tokens: the configured token id. */
  readonly staticTokenId?: string;
  /** All claims, deep-frozen. */
  readonly claims: Readonly<Record<string, unknown>>;
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key in value) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
