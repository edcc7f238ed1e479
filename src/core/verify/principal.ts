/**
 * The principal: who a verified request acts for and what it may do.
 *
 * @module
 */
import type { EffectiveScopes } from '../scopes.ts';
import type { TokenDigest } from './token-digest.ts';

/** One link of a delegation chain (RFC 8693 §4.1 `act`). */
export interface Actor {
  readonly subject: string;
  readonly issuer?: string;
  readonly clientId?: string;
}

/**
 * A subject or issuer inside an actor label: `%`, `(` and `)` percent-encoded, so a subject
 * written like `agent-b (https://idp.example)` stays one subject and never reads as `agent-b` of
 * that issuer. Spaces are kept (`Alice Smith`); a label's issuer is the last ` (…)`.
 */
function labelSafe(value: string): string {
  return value.replace(/[%()]/g, (c) => (c === '%' ? '%25' : c === '(' ? '%28' : '%29'));
}

/**
 * An actor as the audit trail, `tessera trace` and the actor-chain identity header show it: its
 * subject, then its issuer in parentheses when the `act` names one other than the token's own
 * (`tokenIssuer`; RFC 8693 §4.1 reads an `act.sub` in the token issuer's namespace unless the act
 * carries `iss`). So an identity provider's "agent-a" never reads as the client agent-a. `show`
 * escapes each value: by default `%` and parentheses are percent-encoded; a header passes its own.
 */
export function actorLabel(actor: Actor, tokenIssuer?: string, show: (value: string) => string = labelSafe): string {
  return actor.issuer === undefined || actor.issuer === tokenIssuer
    ? show(actor.subject)
    : `${show(actor.subject)} (${show(actor.issuer)})`;
}

/**
 * Whose RFC 9493 `sub_id` is believed to name the issuer a principal's subject belongs to
 * ({@link subjectIssuer}).
 */
export interface SubIdTrust {
  /** Issuers whose JWTs' `sub_id` is believed: the token service of this process, `gateway.trust_sub_id`. */
  readonly issuers: ReadonlySet<string>;
  /** Whether an introspection answer's `sub_id` is believed (`introspection.trust_sub_id`). */
  readonly introspection: boolean;
}

/** Nothing believed: every subject is its token's issuer's. */
export const NO_SUB_ID_TRUST: SubIdTrust = Object.freeze({ issuers: new Set<string>(), introspection: false });

/**
 * The issuer the principal's subject belongs to. A JWT of an issuer in `trust.issuers` (the token
 * service of this process, and the issuers `gateway.trust_sub_id` lists), or an introspection
 * answer when `trust.introspection` (`introspection.trust_sub_id`: the endpoint is one configured
 * party the verifier authenticates to, which already names the principal's `iss`), names it in an
 * RFC 9493 §4.1 `sub_id` of the `iss_sub` format (§3.2.3) when it was issued for another issuer's
 * subject; that `sub_id` is believed only there, and only when it names the token's own `sub`. Any
 * other token's subject is its issuer's: another issuer's `sub_id` is its own claim, and an
 * identity provider trusted for its own users could name another provider's user in it.
 */
export function subjectIssuer(p: Principal, trust: SubIdTrust): string {
  const believed = p.kind === 'jwt' ? trust.issuers.has(p.issuer) : p.kind === 'introspection' && trust.introspection;
  if (!believed) return p.issuer;
  const id = p.claims.sub_id as Readonly<Record<string, unknown>> | undefined;
  if (typeof id !== 'object' || id === null || Array.isArray(id) || id.format !== 'iss_sub') return p.issuer;
  return typeof id.iss === 'string' && id.iss !== '' && id.sub === p.subject ? id.iss : p.issuer;
}

/**
 * A static token's subject unless configured otherwise: `static:<id>`. No client id has a colon,
 * so the form is a static token's alone, and a person or another issuer's subject bearing it is
 * refused (`ClientRegistry.couldPassForClient`).
 */
export const STATIC_SUBJECT_PREFIX = 'static:';

/** How the token was checked. */
export type PrincipalKind = 'jwt' | 'static' | 'introspection';

/**
 * A verified caller. Immutable and shared between requests that present the same token.
 *
 * The verifier's principals are frozen instances whose `tokenHash` is an accessor, computed on
 * its first read (hashing the token costs as much as the rest of a first JWT verification besides
 * the signature, and most callers never read it). So a spread copy (`{ ...principal }`) leaves
 * `tokenHash` out; `JSON.stringify` includes it.
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
   * without revealing it. Computed on first read. */
  readonly tokenHash: string;
  /** For static tokens: the configured token id. */
  readonly staticTokenId?: string;
  /** All claims, deep-frozen. */
  readonly claims: Readonly<Record<string, unknown>>;
}

/** A principal's fields, all but the hash that {@link VerifiedPrincipal} makes when first read. */
export type PrincipalFields = Omit<Principal, 'tokenHash' | 'staticTokenId'> & { readonly staticTokenId: string | undefined };

/** The verifier's principal: its fields, frozen, and `tokenHash` from a {@link TokenDigest} on first read. */
export class VerifiedPrincipal implements Principal {
  readonly kind: PrincipalKind;
  readonly issuer: string;
  readonly subject: string | undefined;
  readonly clientId: string | undefined;
  readonly audience: readonly string[];
  readonly scopes: readonly string[];
  readonly effectiveScopes: EffectiveScopes;
  readonly actors: readonly Actor[];
  readonly delegationId: string | undefined;
  readonly tokenId: string | undefined;
  readonly expiresAt: number;
  readonly issuedAt: number | undefined;
  readonly confirmation: { readonly jkt: string } | undefined;
  readonly staticTokenId: string | undefined;
  readonly claims: Readonly<Record<string, unknown>>;
  readonly #digest: TokenDigest;

  constructor(fields: PrincipalFields, digest: TokenDigest) {
    this.kind = fields.kind;
    this.issuer = fields.issuer;
    this.subject = fields.subject;
    this.clientId = fields.clientId;
    this.audience = fields.audience;
    this.scopes = fields.scopes;
    this.effectiveScopes = fields.effectiveScopes;
    this.actors = fields.actors;
    this.delegationId = fields.delegationId;
    this.tokenId = fields.tokenId;
    this.expiresAt = fields.expiresAt;
    this.issuedAt = fields.issuedAt;
    this.confirmation = fields.confirmation;
    this.staticTokenId = fields.staticTokenId;
    this.claims = fields.claims;
    this.#digest = digest;
    Object.freeze(this);
  }

  get tokenHash(): string {
    return this.#digest.short;
  }

  /** Every field, `tokenHash` included (a spread copy has no accessor). */
  toJSON(): Principal {
    return { ...this, tokenHash: this.tokenHash };
  }
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key in value) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
