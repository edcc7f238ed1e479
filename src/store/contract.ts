/**
 * The storage contract of the token service: a small async interface that every backend (embedded
 * SQLite, PostgreSQL for several instances) implements, and that
 * `test/store/contract.ts` (`runStoreContract`) checks. Nothing here is specific to one database:
 * records are plain values, times are passed in by the caller (epoch **seconds**, except audit
 * events which carry epoch milliseconds), and each method that must be atomic says so.
 *
 * The token-service core imports this file and nothing else from `src/store/`.
 *
 * @module
 */
import type { AuditEvent, AuditQuery } from '../audit/event.ts';
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';

/** Grant types a client may be registered for. */
export const GRANT_TYPES = [
  'client_credentials',
  'authorization_code',
  'refresh_token',
  'urn:ietf:params:oauth:grant-type:token-exchange',
] as const;
/** A grant type a client may be registered for. */
export type GrantType = (typeof GRANT_TYPES)[number];

/**
 * How a client authenticates at the token endpoint. Secret clients use basic or post (only the one
 * in {@link ClientRecord.secretMethod} when it is set); `none`
 * is a public client (a native app, a browser app, an MCP client): it holds no credential, sends
 * only its `client_id`, and may use only `authorization_code` (with PKCE) and `refresh_token`.
 */
export type ClientAuthMethod = 'client_secret' | 'private_key_jwt' | 'none';

/**
 * The one way a secret client sends its secret, when it was registered with one (RFC 7591 §2
 * `token_endpoint_auth_method`): in the Authorization header (`client_secret_basic`) or in the form
 * body (`client_secret_post`).
 */
export type ClientSecretMethod = 'client_secret_basic' | 'client_secret_post';

/** The grant types a public client (`authMethod: 'none'`) may be registered for. */
export const PUBLIC_CLIENT_GRANT_TYPES: readonly GrantType[] = ['authorization_code', 'refresh_token'];

/** A registered OAuth client. */
export interface ClientRecord {
  /** The `client_id`. */
  readonly id: string;
  readonly authMethod: ClientAuthMethod;
  /**
   * For a secret client (`authMethod: 'client_secret'`), the one method it registered for, enforced
   * at the token, revocation and introspection endpoints; `null` accepts either (clients added by
   * the CLI or admin without `--auth-method`, and every client registered before schema 16).
   * Always `null` for other clients.
   */
  readonly secretMethod: ClientSecretMethod | null;
  /** Keyed hash (HMAC-SHA-256 under the server key, base64url) of the secret; never the secret. */
  readonly secretHash: string | null;
  /** Public keys for `private_key_jwt` (an inline JWKS). */
  readonly jwks: { readonly keys: readonly Readonly<Record<string, unknown>>[] } | null;
  /** Remote JWKS for `private_key_jwt`. */
  readonly jwksUri: string | null;
  /** Scopes the client may be granted (wildcards allowed). */
  readonly scopes: readonly string[];
  /** Audiences (and RFC 8707 resources) the client may request tokens for. */
  readonly audiences: readonly string[];
  readonly grantTypes: readonly GrantType[];
  /** Access-token lifetime for this client, seconds; `null` uses the service default. */
  readonly accessTokenTtl: number | null;
  /**
   * Token exchange may issue tokens for audiences outside the subject token's own (RFC 8693 §2.1
   * `audience`): off by default, so an exchange only ever narrows the audience.
   */
  readonly exchangeRetargetAudiences: boolean;
  /**
   * Redirect URIs for the authorization code grant, compared by exact string match (OAuth 2.1
   * §4.1.1); empty for clients that do not use it.
   */
  readonly redirectUris: readonly string[];
  /**
   * Origins (`https://app.example`, as a browser sends `Origin`) whose pages may call the token,
   * revocation and introspection endpoints as this client (Hydra's `allowed_cors_origins`): a
   * request carrying another `Origin` is refused once the client is identified. Empty (every
   * client registered before schema 17): `token_service.cors.allowed_origins` alone decides.
   */
  readonly allowedOrigins: readonly string[];
  /**
   * RFC 9449 §5.2 `dpop_bound_access_tokens`: the client always uses DPoP, so every token request
   * of it without a valid DPoP proof is refused and each of its access tokens is sender-constrained.
   * False (every client registered before schema 20) leaves DPoP to each request.
   */
  readonly dpopBoundAccessTokens: boolean;
  /** Human-readable name shown on the consent page (RFC 7591 `client_name`); `null` shows the id. */
  readonly name: string | null;
  readonly disabled: boolean;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** Fields of a client that may change after registration. */
export type ClientPatch = Partial<
  Pick<
    ClientRecord,
    | 'disabled'
    | 'secretHash'
    | 'scopes'
    | 'audiences'
    | 'grantTypes'
    | 'accessTokenTtl'
    | 'exchangeRetargetAudiences'
    | 'jwks'
    | 'jwksUri'
    | 'redirectUris'
    | 'allowedOrigins'
    | 'dpopBoundAccessTokens'
    | 'name'
  >
>;

/**
 * A signing key. The private key is sealed by the token service (AES-256-GCM under the master key)
 * and opaque to the store. Its schedule is by time: published from `createdAt`, signing from
 * `activatesAt` until a later key activates, published until every token it signed has expired.
 */
export interface SigningKeyRecord {
  /** RFC 7638 thumbprint of the public key. */
  readonly kid: string;
  readonly alg: JwsAlgorithm;
  /** Public JWK members (no `kid`, `alg`, `use`; those are added when published). */
  readonly publicJwk: Readonly<Record<string, string>>;
  /** The sealed private key. */
  readonly sealedPrivateKey: string;
  readonly createdAt: number;
  readonly activatesAt: number;
  /**
   * HMAC-SHA-256 (base64url) under a key derived from the master key over `kid`, `alg`, the public
   * key and the schedule (`createdAt`, `activatesAt`), which the sealed private key's associated
   * data also covers; opaque to the store, kept with the public part when the key is deleted.
   * Absent in rows written before Tessera authenticated the schedule (sealed under the kid alone).
   * Once the key's end is sealed ({@link SigningKeyRecord.retiresAt}), the MAC covers that end too.
   */
  readonly mac?: string;
  /**
   * The key's sealed end: when the key that follows it in the schedule ({@link SigningKeyRecord.successorKid})
   * activates, written by the token service into this row (its {@link SigningKeyRecord.mac} then
   * covering it) in the same write as that successor's row ({@link Store.addSigningKey}'s `seal`).
   * Past it the key never signs, whatever the other rows say. Absent while no successor was added,
   * and in rows written before schema 25 (or by a store that ignores `seal`).
   */
  readonly retiresAt?: number;
  /** The kid of the key whose addition sealed {@link SigningKeyRecord.retiresAt}; set with it. */
  readonly successorKid?: string;
  /**
   * Set by the store when the key is added (ignored in what {@link Store.addSigningKey} is given):
   * greater than that of every key added before, never reused. Of keys with the same schedule (two
   * `tessera keys rotate --now` in the same second) the later one signs. Not covered by the MAC.
   * Absent from a store that does not number keys (then the kid decides, as every instance agrees).
   */
  readonly seq?: number;
}

/** A stored key's end sealed by {@link Store.addSigningKey}, where its `mac` is still `from`. */
export interface SigningKeySeal {
  readonly kid: string;
  readonly from: string;
  readonly retiresAt: number;
  readonly successorKid: string;
  readonly mac: string;
}

/** The options of {@link Store.addSigningKey}. */
export interface AddSigningKeyOptions {
  readonly unlessPendingAfter?: number;
  readonly seal?: readonly SigningKeySeal[];
}

/**
 * What is kept of a signing key after it was deleted: its public part, never the private key, so
 * `tessera scan` can still recognise (as expired) a leaked token it signed.
 */
export type RemovedSigningKeyRecord = Omit<SigningKeyRecord, 'sealedPrivateKey'>;

/** How a grant came to be. */
export type GrantKind = 'client_credentials' | 'authorization_code' | 'token_exchange' | 'upstream' | 'mint';

/**
 * A grant: one delegation of authority. Every issued token names its grant (`grant_id`); token
 * exchanges create child grants, so grants form trees. Revoking a grant revokes its whole subtree,
 * and with it every grant exchanged with an actor token of a revoked grant
 * ({@link GrantRecord.actorGrantId}), with its subtree, transitively.
 */
export interface GrantRecord {
  readonly id: string;
  /** The grant this one was derived from (token exchange), or `null` for a root. */
  readonly parentId: string | null;
  /** The root of this grant's tree (its own id for a root). Assigned by the store. */
  readonly rootId: string;
  /** 0 for a root. Assigned by the store. */
  readonly depth: number;
  readonly kind: GrantKind;
  /** Issuer of the subject (Tessera itself or a trusted external issuer); a child inherits its root's. */
  readonly issuer: string;
  /** Whose authority this is (`sub` of the tokens). */
  readonly subject: string;
  /** The client the tokens are issued to. */
  readonly clientId: string;
  /** The RFC 8693 `act` claim of the tokens (current actor first, prior actors nested), if delegated. */
  readonly act: Readonly<Record<string, unknown>> | null;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly createdAt: number;
  /** No token of this grant outlives this; `null` for open-ended grants (client credentials). */
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
  readonly revokedReason: string | null;
  /**
   * The `jti` of this issuer's access token that was exchanged for this grant (RFC 8693
   * `subject_token`, or the caller's token the gateway exchanged): revoking that token revokes this
   * grant with its subtree ({@link GrantSelector} `exchangedFrom`). `null` for a grant from anything
   * else (another issuer's token, a code, client credentials), and for every grant created before
   * schema 18.
   */
  readonly subjectJti: string | null;
  /**
   * The `jti` of this issuer's access token presented as the actor (RFC 8693 `actor_token`) when
   * this grant was created: revoking that token revokes this grant with its subtree too. `null`
   * when there was none (or it was another issuer's), and for every grant created before schema 18.
   */
  readonly actorJti: string | null;
  /**
   * The grant of this issuer's access token presented as the actor (RFC 8693 `actor_token`) when
   * this grant was created ({@link CreateGrantOptions.actorGrantId}): the authority this grant was
   * exchanged with. Revoking that grant, by any selector or cascade, revokes this one with its
   * subtree in the same transaction, so an agent's compromised grant takes every delegation it
   * acted in with it. No part of this grant's tree (its parent is the subject token's grant).
   * `null` when there was none (the client itself acted, or another issuer's actor token), and for
   * every grant created before schema 23 (those outlive their actor's grant, as before).
   */
  readonly actorGrantId: string | null;
}

/**
 * A grant to create: the store assigns `rootId` and `depth`, and for a child takes `issuer` from the
 * parent; `actorGrantId` from {@link CreateGrantOptions.actorGrantId}. `subjectJti` and `actorJti`
 * are `null` when left out.
 */
export type NewGrant = Omit<GrantRecord, 'rootId' | 'depth' | 'revokedAt' | 'revokedReason' | 'subjectJti' | 'actorJti' | 'actorGrantId'> &
  Partial<Pick<GrantRecord, 'subjectJti' | 'actorJti'>>;

/** One refresh token, stored by hash. A grant's refresh tokens form its rotation family. */
export interface RefreshTokenRecord {
  /** SHA-256 of the token (base64url); the token itself is never stored. */
  readonly hash: string;
  readonly grantId: string;
  readonly clientId: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /**
   * When it was exchanged for its successor; a rotated token presented again is a reuse. At the
   * rotation its `expiresAt` becomes how long it is kept for that (its grant's expiry).
   */
  readonly rotatedAt: number | null;
  readonly revokedAt: number | null;
  /**
   * RFC 9449 §5: the RFC 7638 thumbprint of the DPoP key a public client's refresh token is bound
   * to (it was issued on a request with a proof of that key); every successor keeps it. Absent for
   * an unbound token.
   */
  readonly jkt?: string;
}

/** The outcome of {@link Store.rotateRefreshToken}. */
export type RefreshRotation =
  /**
   * The token was current: it is now rotated and `next` replaces it. `retry`: it was rotated
   * already, within the reuse interval, and its successor (still current) is now retired in favour
   * of `next`.
   */
  | { readonly status: 'rotated'; readonly grant: GrantRecord; readonly next: RefreshTokenRecord; readonly retry?: true }
  /** Unknown, expired, revoked, issued to another client, or its grant is revoked or expired. */
  | { readonly status: 'invalid' }
  /** Presented again within the grace period after its rotation: refused, family kept. */
  | { readonly status: 'grace' }
  /** Presented again after its rotation: the grant (family) and its subtree are now revoked. */
  | { readonly status: 'reused'; readonly grantId: string; readonly revokedGrantIds: readonly string[] };

/**
 * An authorization code (RFC 6749 §4.1.2), stored by hash: what the human approved, bound to the
 * client, the redirect URI, the PKCE challenge and the resources. Single use.
 */
export interface AuthorizationCodeRecord {
  /** SHA-256 of the code (base64url); the code itself is never stored. */
  readonly hash: string;
  readonly clientId: string;
  /** The `redirect_uri` of the authorization request, or `null` when it was omitted (one registered). */
  readonly redirectUri: string | null;
  /** RFC 7636 `code_challenge` (method S256, the only one accepted). */
  readonly codeChallenge: string;
  /** Who approved: the human subject, and the issuer that vouches for it (this token service). */
  readonly subject: string;
  readonly issuer: string;
  /** The approved scopes. */
  readonly scopes: readonly string[];
  /** The approved RFC 8707 resources: the access token's `aud`. */
  readonly audiences: readonly string[];
  readonly createdAt: number;
  readonly expiresAt: number;
  /** When it was redeemed; a redeemed code presented again is a replay. */
  readonly consumedAt: number | null;
  /** The grant issued when it was redeemed. */
  readonly grantId: string | null;
  /**
   * RFC 9449 §10 `dpop_jkt`: the RFC 7638 thumbprint of the DPoP key the code is bound to (it
   * redeems only with a proof of that key), or `null` when the authorization request named none.
   */
  readonly jkt: string | null;
  /**
   * Since when the person's approval stood (epoch seconds): when their login session began (when
   * they were checked for this request, for an authenticator that keeps no session), or when the
   * remembered consent that answered for the consent page was given, whichever is earlier. A
   * revocation of the subject's login sessions at or after it refuses the redemption (see
   * {@link Store.redeemAuthorizationCode}). `null` in a code stored before this was kept (schema
   * 13 and older): its `createdAt` stands for it.
   */
  readonly approvalSince: number | null;
}

/**
 * Seconds a grant's revocation entry outlives the grant: a verifier accepts a token up to its
 * issuer's `clock_skew` (at most 60 s) past `exp`, and no token outlives its grant, so an instance
 * that reads the log later than the grant's expiry (one just started, or cut off from the store
 * until then) must still find the revocation.
 */
export const REVOCATION_ENTRY_SKEW = 60;

/** Seconds a code is kept past its expiry by {@link Store.prune}, so a late replay still revokes its grant. */
export const CODE_RETENTION = 3600;

/** The outcome of {@link Store.redeemAuthorizationCode}. */
export type CodeRedemption =
  /** The code was current: it is now consumed, and the grant (and refresh token, if given) exist. */
  | { readonly status: 'redeemed'; readonly grant: GrantRecord }
  /** Unknown, expired, or issued to another client. Nothing was written. */
  | { readonly status: 'invalid' }
  /** The client is unknown or disabled. Nothing was written. */
  | { readonly status: 'client_inactive' }
  /**
   * The subject's login sessions were revoked (a `subject` entry under `loginScope`) at or after
   * the code's `approvalSince`: the approval came from a session that revocation ended. Nothing was
   * written.
   */
  | { readonly status: 'subject_revoked' }
  /** Presented again after redemption: the grant issued from it and its subtree are now revoked. */
  | { readonly status: 'reused'; readonly grantId: string | null; readonly revokedGrantIds: readonly string[] };

/**
 * A person's remembered approval of a client (`authorization.remember_consent`, as Auth0's user
 * grants and Ory Hydra's `remember`): what the consent page approved, so a later authorization
 * request asking for no more is approved without the page until `expiresAt`. One per (subject,
 * client): a new approval replaces it.
 */
export interface RememberedConsentRecord {
  /** The person who approved. */
  readonly subject: string;
  readonly clientId: string;
  /** The issuer vouching for the subject (this token service). */
  readonly issuer: string;
  /**
   * Where the subject came from (the authenticator's `source`: its kind, upstream provider, subject
   * claim or header): the same subject from another source may be another person.
   */
  readonly identitySource: string;
  /** The approved scopes and RFC 8707 resources: a later request must ask for subsets of these. */
  readonly scopes: readonly string[];
  /**
   * Digest of what the approved scopes meant when approved (their effective expansion under the
   * scope catalogue): a catalogue edit that widens an approved scope shows the page again.
   */
  readonly scopesDigest: string;
  readonly audiences: readonly string[];
  /** The redirect URI the approval was sent to. */
  readonly redirectUri: string;
  /** Fingerprint of the client's registration when approved: a client changed since is asked about again. */
  readonly clientFingerprint: string;
  /**
   * `token_hash` of the code the consent page issued: its `authorization.approved` event is the
   * person's approval, which `tessera trace` names for every grant approved from this record.
   */
  readonly approvalHash: string;
  readonly createdAt: number;
  readonly expiresAt: number;
}

/**
 * Which grants to revoke. Each selected grant is revoked with its whole subtree, and every grant
 * whose {@link GrantRecord.actorGrantId} is among those revoked with its own, transitively (the
 * links only point from a grant to grants created before it, so there is no cycle; a set is
 * closed once, whatever the links). `exchangedFrom`
 * selects the grants created by exchanging the access token with that `jti`, as the subject token
 * or as the actor token ({@link GrantRecord.subjectJti}, {@link GrantRecord.actorJti}): never the
 * token's own grant, nor a sibling exchanged from another token of that grant. `tokenGrantId` is
 * that token's own grant: a grant exchanged from the token as the subject token is always a child
 * of it, found among its children (no index of `subject_jti` to update on every exchange).
 */
export type GrantSelector =
  | { readonly grantId: string }
  | { readonly subject: string; readonly issuer?: string }
  | { readonly clientId: string }
  | { readonly exchangedFrom: string; readonly tokenGrantId: string };

/** Options of {@link Store.createGrant}. */
export interface CreateGrantOptions {
  /** A root grant from another issuer's token issued at that second: refused for a subject revoked since. */
  readonly subjectIssuedAt?: number;
  /**
   * The grant of the actor token (this issuer's own): refused when it is no longer active, else
   * recorded as the new grant's {@link GrantRecord.actorGrantId}, so that revoking it revokes the
   * new grant.
   */
  readonly actorGrantId?: string;
}

/** What {@link Store.createGrant} answers: the grant created, or why nothing was written. */
export type GrantCreation = GrantRecord | 'parent_inactive' | 'client_inactive' | 'subject_revoked' | 'actor_inactive';

/** A revoked grant as reported by {@link Store.revokeGrants}. */
export interface RevokedGrant {
  readonly id: string;
  readonly issuer: string;
  readonly subject: string;
  readonly clientId: string;
}

/** Options of {@link Store.revokeGrants}. */
export interface RevokeOptions {
  readonly at: number;
  readonly reason: string;
  readonly entryExpiresAt: number;
  readonly alsoLog?: (revoked: readonly RevokedGrant[]) => readonly Omit<RevocationEntry, 'seq'>[];
  /**
   * Told, inside the transaction, how many of `alsoLog`'s entries were appended: a `token` entry
   * already in the log is skipped (see {@link Store.appendRevocations}). Of concurrent revocations
   * of one access token, only the one that appends its entry is told 1 for it. A transaction run
   * again tells it again: the last call is what committed.
   */
  readonly alsoLogged?: (appended: number) => void;
}

/**
 * One entry of the revocation log that every instance replays into its verifiers' revocation
 * list. Entries for grants are appended by {@link Store.revokeGrants} in the same transaction as
 * the revocation, with the subject and client entries of that revocation (its `alsoLog`); the
 * others by {@link Store.appendRevocations}.
 */
export interface RevocationEntry {
  /** Increasing sequence number assigned by the store. */
  readonly seq: number;
  readonly kind: 'grant' | 'token' | 'subject' | 'client';
  /** Grant id, token `jti`, subject or client id. */
  readonly value: string;
  /** For `subject` and `client`: the issuer the value belongs to. */
  readonly issuer: string | null;
  /** When it was revoked (tokens issued at or before this are revoked for `subject`/`client`). */
  readonly at: number;
  /** After this no token it applies to can still be valid; the entry may be pruned. */
  readonly expiresAt: number;
}

/** Change counters: a cheap way for a running server to notice another process's writes. */
export interface StoreVersions {
  readonly keys: number;
  readonly clients: number;
  /** The highest revocation `seq` (0 when none). */
  readonly revocations: number;
}

/**
 * The codes of {@link StoreConflictError}: which record already exists (a client id, a signing key
 * `kid`, a grant id, a refresh token or authorization code hash), `signing_key_pending`: a
 * rotation (`KeyManager.rotate`) refused because another key is pending (the store's conditional
 * `addSigningKey` added nothing), or `signing_key_stale`: a key whose end `addSigningKey` was to
 * seal changed meanwhile (another rotation sealed it first; nothing was added, read and retry).
 */
export const STORE_CONFLICT_CODES = [
  'client_exists',
  'signing_key_exists',
  'signing_key_pending',
  'signing_key_stale',
  'grant_exists',
  'refresh_token_exists',
  'authorization_code_exists',
] as const;

/** The closed union of {@link StoreConflictError} codes. */
export type StoreConflictCode = (typeof STORE_CONFLICT_CODES)[number];

/**
 * What the store's errors share: a stable `code` from the closed union `C`, and a message that names
 * no secret. Not exported from the package: catch the subclasses.
 */
export abstract class CodedStoreError<C extends string> extends Error {
  readonly code: C;

  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Thrown by the store for a write that conflicts with existing data (duplicate id), with the code
 * naming which. Nothing was written.
 *
 * @example
 * ```ts
 * import { StoreConflictError, type Store } from 'tessera/token-service';
 *
 * async function addKey(store: Store, key: Parameters<Store['addSigningKey']>[0]): Promise<boolean> {
 *   try {
 *     await store.addSigningKey(key);
 *     return true;
 *   } catch (e) {
 *     if (e instanceof StoreConflictError && e.code === 'signing_key_exists') return false;
 *     throw e;
 *   }
 * }
 * ```
 */
export class StoreConflictError extends CodedStoreError<StoreConflictCode> {
  override readonly name = 'StoreConflictError';
}

/** The codes of {@link StoreCapacityError}: `client_limit_reached` (a {@link ClientLimit}). */
export type StoreCapacityCode = 'client_limit_reached';

/**
 * Thrown by {@link Store.createClient} when its `limit` is reached: that many clients whose id
 * starts with the limit's prefix exist already. Nothing was written. The token service answers a
 * dynamic registration refused so with its own error.
 */
export class StoreCapacityError extends CodedStoreError<StoreCapacityCode> {
  override readonly name = 'StoreCapacityError';
}

/**
 * A cap on the clients whose id starts with `idPrefix` (dynamically registered ones: `dcr_`), for
 * {@link Store.createClient}.
 */
export interface ClientLimit {
  readonly idPrefix: string;
  readonly max: number;
}

/**
 * The codes of {@link StoreUnavailableError}: `store_unreachable` (the backend refused or lost the
 * connection, or none could be had in time), `store_busy` (a lock held by another process past the
 * busy timeout).
 */
export type StoreUnavailableCode = 'store_unreachable' | 'store_busy';

/**
 * Thrown by the store when the backend cannot be reached or is too busy to answer (connection
 * refused or lost, a lock held past the busy timeout): the request may succeed if retried later.
 * The token service answers it with 503 `temporarily_unavailable` (`store_unavailable`). A custom
 * {@link Store} throws it for the same conditions, so that callers answer 503 rather than 500.
 */
export class StoreUnavailableError extends CodedStoreError<StoreUnavailableCode> {
  override readonly name = 'StoreUnavailableError';
}

/**
 * The codes of {@link StoreOpenError}: `store_unusable` (the SQLite file is not a database, is
 * corrupt or cannot be opened), `schema_newer` (a newer Tessera migrated the database),
 * `migration_failed` (a migration of this Tessera failed; none of it was applied).
 */
export type StoreOpenCode = 'store_unusable' | 'schema_newer' | 'migration_failed';

/**
 * Thrown when a store is opened on a database it cannot use as it is: a SQLite file that is not a
 * database, is corrupt or cannot be opened; a database migrated by a newer Tessera; a migration
 * that failed (rolled back: the database stays at the version before it). Not transient, unlike
 * {@link StoreUnavailableError}: the message names the store (its file, or its PostgreSQL schema),
 * what is wrong and, where it can, what to do. The CLI prints it as it is, not as an unexpected error.
 */
export class StoreOpenError extends CodedStoreError<StoreOpenCode> {
  override readonly name = 'StoreOpenError';
}

/**
 * What an id of the a2a_tasks records names: an A2A task or context (the gateway's `a2a.bind_tasks`),
 * or an MCP task (`mcp.bind_tasks`): its owner and tool (`mcp_task`), and its principal alone
 * (`mcp_task_principal`, the record counted against `mcp.max_tasks_per_principal`). Only part of
 * the record's key: no migration adds a kind.
 */
export type A2aIdKind = 'task' | 'context' | 'mcp_task' | 'mcp_task_principal';

/** Who an A2A task or context belongs to, and until when (epoch seconds). */
export interface A2aTaskRecord {
  readonly owner: string;
  readonly expiresAt: number;
}

/** The longest owner {@link Store.claimA2aTask} records (the gateway's owners are 43-character digests). */
export const MAX_A2A_OWNER = 256;

/** The options of {@link Store.rotateRefreshToken}. */
export interface RefreshRotationOptions {
  readonly clientId: string;
  readonly nextHash: string;
  readonly nextExpiresAt: number;
  readonly now: number;
  readonly graceSeconds: number;
  /**
   * `token_service.refresh_reuse_interval` (default 0: none): within this many seconds of its
   * rotation, a rotated token whose successor is still current, presented by its client with the
   * successor's DPoP binding, is rotated again (a retry after a lost response), see
   * {@link Store.rotateRefreshToken}.
   */
  readonly reuseIntervalSeconds?: number;
  readonly entryExpiresAt: number;
  /** The DPoP key (RFC 7638 thumbprint) to bind an unbound token's successor to. */
  readonly bindJkt?: string | undefined;
}

/** The options of {@link Store.redeemAuthorizationCode}. */
export interface CodeRedemptionOptions {
  readonly clientId: string;
  /**
   * The revocation-log issuer under which a subject revocation ends the login sessions of the
   * code's issuer (`<issuer>#login-sessions`, see `loginSessionScope`).
   */
  readonly loginScope: string;
  readonly grant: NewGrant;
  readonly refreshToken: RefreshTokenRecord | null;
  readonly now: number;
  readonly entryExpiresAt: number;
}

/** The default limit of {@link Store.grantSubtree} and {@link Store.grantAncestors}: every grant. */
export const MAX_TREE_READ = 2 ** 31 - 1;

/** The default limit of {@link Store.revocationsSince}. */
export const REVOCATIONS_PAGE = 10_000;

/** The events {@link Store.queryAudit} returns when the query names no `limit`. */
export const AUDIT_QUERY_DEFAULT = 100;

/** The most events {@link Store.queryAudit} returns, whatever `limit` the query names. */
export const AUDIT_QUERY_MAX = 10_000;

/**
 * The store. Every method may reject with {@link StoreUnavailableError} when the backend is
 * unreachable; callers map that to `temporarily_unavailable`.
 */
export interface Store {
  /** Which backend, for health output. */
  readonly kind: string;

  // Clients.
  /**
   * Create a client. With `limit`, count the clients whose id starts with `limit.idPrefix` (stopping
   * at `limit.max`; SQLite reads a primary-key range, PostgreSQL a scan of the clients table, since
   * a range would follow the database collation) and refuse when there are `limit.max` already,
   * atomically with the insert: concurrent creations, from this process or others, never exceed it.
   * @throws {StoreConflictError} when the id exists.
   * @throws {StoreCapacityError} when `limit` is reached (nothing written).
   */
  createClient(client: ClientRecord, options?: { readonly limit?: ClientLimit }): Promise<void>;
  getClient(id: string): Promise<ClientRecord | undefined>;
  listClients(): Promise<ClientRecord[]>;
  /** The id of a client whose id equals `id` ignoring ASCII case (client ids are ASCII), if any. */
  findClientIdIgnoringCase(id: string): Promise<string | undefined>;
  /** Apply `patch`; returns the updated record, or `undefined` when there is no such client. */
  updateClient(id: string, patch: ClientPatch, now: number): Promise<ClientRecord | undefined>;
  /** Delete a client and the consents remembered for it. */
  deleteClient(id: string): Promise<boolean>;

  // Signing keys.
  listSigningKeys(): Promise<SigningKeyRecord[]>;
  /**
   * Add a signing key. With `unlessPendingAfter`, only when no stored key activates after that
   * time (no pre-published key is waiting), checked and inserted atomically against other such
   * adds from any process: of instances rotating on schedule at the same moment, one adds a key.
   * The store numbers the key ({@link SigningKeyRecord.seq}). With `seal`, in the same transaction,
   * each listed key gets its end (`retires_at`, `successor_kid`) and its new `mac`, only where its
   * `mac` is still `from`: when any is not (another rotation sealed it meanwhile), nothing is
   * written and `signing_key_stale` is thrown.
   * @returns false when a pending key made it add nothing.
   * @throws {StoreConflictError} `signing_key_exists` when the kid exists, `signing_key_stale`.
   */
  addSigningKey(key: SigningKeyRecord, options?: AddSigningKeyOptions): Promise<boolean>;
  /** Delete a key; its public part stays in {@link Store.listRemovedSigningKeys} (not its private key). */
  deleteSigningKey(kid: string): Promise<boolean>;
  /** Deleted keys' public parts, to recognise the tokens they signed; never to accept one. */
  listRemovedSigningKeys(): Promise<RemovedSigningKeyRecord[]>;
  /**
   * Authenticate rows written before the `mac` existed, in one write: each key in `keys` gets its
   * new sealed private key and MAC only where its sealed private key is still `from`, and each
   * removed key in `removed` its MAC only where it has none. Nothing is written, and the result is
   * false, when any key's sealed private key is no longer `from` (another process upgraded it).
   */
  upgradeSigningKeys(update: {
    readonly keys: readonly { readonly kid: string; readonly from: string; readonly sealedPrivateKey: string; readonly mac: string }[];
    readonly removed: readonly { readonly kid: string; readonly mac: string }[];
  }): Promise<boolean>;

  // Grants.
  /**
   * Create a grant. Atomic with respect to {@link Store.revokeGrants}: when `parentId` is set and
   * the parent is missing, revoked or expired at `now`, nothing is written and the result is
   * `parent_inactive`, so no grant can ever be derived from a revoked one. Atomic with respect to
   * {@link Store.updateClient} and {@link Store.deleteClient} too: when the grant's client is
   * unknown or disabled, nothing is written and the result is `client_inactive`, so disabling a
   * client and then revoking its grants leaves none that a token request racing it (or another
   * instance that has not seen the change yet) could still add.
   *
   * With `subjectIssuedAt` (a root grant from another issuer's token, issued at that second), atomic
   * with respect to {@link Store.revokeGrants} of the subject as well: when the log holds a
   * `subject` entry for the grant's issuer and subject with `at >= subjectIssuedAt`, nothing is
   * written and the result is `subject_revoked`, so a token of a revoked subject is refused here
   * even by an instance that has not yet read that entry into its revocation list.
   *
   * With `actorGrantId` (the grant of this issuer's own token presented as the actor, as token
   * exchange's `actor_token`), when that grant is missing, revoked or expired at `now` (as for a
   * parent: a revoked ancestor revoked it with its subtree), nothing is written and the result is
   * `actor_inactive`, so an actor token revoked by another process is refused even by an instance
   * that has not yet read that revocation. The actor grant is recorded as the new grant's
   * {@link GrantRecord.actorGrantId} and is atomic with respect to {@link Store.revokeGrants} as a
   * parent is: a revocation of it (or of its ancestors) that commits before this is seen, and one
   * that commits after revokes this grant too, also at another instance.
   *
   * With `subjectJti` or `actorJti` (the access tokens of this issuer exchanged), atomic with
   * respect to {@link Store.revokeGrants} with the selector `exchangedFrom` of that `jti` whose
   * `alsoLog` appends the token's `token` entry (as revoking an access token does): when the log
   * holds a `token` entry for `subjectJti`, nothing is written and the result is `subject_revoked`;
   * for `actorJti`, `actor_inactive`. A grant created first is among those the revocation revokes;
   * one created after is refused, also by an instance that has not yet read that entry.
   * @throws {StoreConflictError} when the id exists.
   */
  createGrant(grant: NewGrant, now: number, options?: CreateGrantOptions): Promise<GrantCreation>;
  getGrant(id: string): Promise<GrantRecord | undefined>;
  /**
   * The grant and its descendants in tree order (by depth, then creation time, then id: parents
   * before children); empty when unknown. With `limit`, the first `limit` of them, read without
   * reading the rest (a delegation tree can hold any number of grants).
   */
  grantSubtree(id: string, limit?: number): Promise<GrantRecord[]>;
  /**
   * The grant's ancestors, root first, excluding the grant itself. With `limit`, the nearest
   * `limit` of them (the root is then missing when the chain is deeper), read without the rest.
   */
  grantAncestors(id: string, limit?: number): Promise<GrantRecord[]>;
  /**
   * Revoke every not-yet-revoked grant selected and every descendant, and every grant created with
   * one of those as its actor grant ({@link GrantRecord.actorGrantId}) with its descendants, to the
   * closure (links are followed through grants revoked before too), mark their refresh tokens
   * revoked, and append one `grant` revocation entry per newly revoked grant, all in one
   * transaction. An entry expires at `min(grant.expiresAt + REVOCATION_ENTRY_SKEW, entryExpiresAt)`
   * ({@link REVOCATION_ENTRY_SKEW}: tokens of the grant are still accepted that long past it).
   *
   * In the same transaction, forget the remembered consents concerned, so a revoked delegation
   * cannot come back through a skipped consent page: for a subject selector every consent of that
   * subject (of that issuer, when given), for a client selector every consent of that client, and
   * for every newly revoked root `authorization_code` grant the consent of its subject and client.
   * The reuse cascades of {@link Store.rotateRefreshToken} and
   * {@link Store.redeemAuthorizationCode} forget the same way.
   *
   * `alsoLog`, when given, is called once inside the transaction with the grants newly revoked, and
   * the entries it returns (a subject's or client's as of `at`) are appended in that same
   * transaction: no grant creation sees the grants revoked without them (see
   * {@link Store.createGrant}'s `subjectIssuedAt`, and for `exchangedFrom` the token's own entry:
   * its `subjectJti` and `actorJti`). It must not throw or have side effects: a transaction run
   * again calls it again.
   * @returns the grants newly revoked (already revoked ones are not repeated). Of several concurrent
   *   calls (in one process or at several instances sharing the store) whose selectors share a
   *   grant, exactly one reports it: the revocation that revoked it.
   */
  revokeGrants(selector: GrantSelector, options: RevokeOptions): Promise<RevokedGrant[]>;

  // Refresh tokens.
  /**
   * Store a refresh token. When its grant was revoked meanwhile (token exchange creates the token
   * after the grant), it is stored revoked as of the grant (a `revokedAt` given wins), in one step
   * with that read, so no refresh token is ever left unrevoked under a revoked grant.
   * @throws {StoreConflictError} when the hash exists.
   */
  createRefreshToken(token: RefreshTokenRecord): Promise<void>;
  getRefreshToken(hash: string): Promise<RefreshTokenRecord | undefined>;
  /**
   * Rotate a refresh token in one transaction: when `hash` is current (not rotated, not revoked,
   * not expired, issued to `clientId`, its grant active), mark it rotated and insert its successor
   * `nextHash` (same grant, client and `jkt`, expiring at `min(nextExpiresAt, grant.expiresAt)`;
   * an unbound token's successor is bound to `bindJkt` when given). The spent token's `expiresAt`
   * becomes the grant's expiry (RFC 9700 §4.14.2: its reuse is detectable while the family can be
   * used), or for a grant without expiry the successor's expiry plus `nextExpiresAt - now`.
   * When `hash` was already rotated less than `reuseIntervalSeconds` ago, and the successor it was
   * rotated to is current (not rotated, not revoked, not expired: it was rotated one generation
   * ago), its grant active, and the successor `next` would have (`jkt`, as above) is the current
   * one's: a retry after a lost response. The current successor is retired (rotated at `now`, with
   * no successor, so that presenting it is a reuse), `next` inserted and made `hash`'s successor
   * (`rotatedAt` unchanged: retries do not extend the interval), and the result is `rotated` with
   * `retry`. Otherwise, when `hash` was already rotated (and not less than `graceSeconds` ago),
   * revoke its grant's subtree exactly as {@link Store.revokeGrants} does (reason
   * `refresh_token_reused`). Of several concurrent calls with one hash and no reuse interval,
   * exactly one sees `rotated`; with one, each sees `rotated` in turn and only the last `next`
   * stays current.
   */
  rotateRefreshToken(hash: string, options: RefreshRotationOptions): Promise<RefreshRotation>;

  // Authorization codes.
  /** @throws {StoreConflictError} when the hash exists. */
  createAuthorizationCode(code: AuthorizationCodeRecord): Promise<void>;
  getAuthorizationCode(hash: string): Promise<AuthorizationCodeRecord | undefined>;
  /**
   * Redeem a code in one transaction: when `hash` is current (not consumed, not expired at `now`,
   * issued to `clientId`), create `grant` (a root; refused as `client_inactive` exactly as
   * {@link Store.createGrant} would), mark the code consumed with that grant, and insert
   * `refreshToken` when given. When the code was already consumed, revoke the grant issued from it
   * and its subtree exactly as {@link Store.revokeGrants} does (reason `authorization_code_reused`,
   * RFC 6749 §4.1.2). Of several concurrent calls with one hash, exactly one sees `redeemed`.
   *
   * Atomic with respect to {@link Store.revokeGrants} of the subject, as
   * {@link Store.createGrant}'s `subjectIssuedAt`: when the log holds a `subject` entry for the
   * code's subject under `loginScope` with `at >=` the code's `approvalSince` (its `createdAt` when
   * that is `null`), nothing is written and the result is `subject_revoked`. A revocation deletes
   * the codes that exist when it commits; this refuses the ones an instance that had not yet read
   * the revocation approved afterwards, in a login session the revocation ended.
   */
  redeemAuthorizationCode(hash: string, options: CodeRedemptionOptions): Promise<CodeRedemption>;

  // Remembered consents.
  /** Store `consent`, replacing the one of the same subject and client. */
  rememberConsent(consent: RememberedConsentRecord): Promise<void>;
  /** The consent `subject` gave `clientId`, unless it has expired at `now` (or was forgotten). */
  getRememberedConsent(subject: string, clientId: string, now: number): Promise<RememberedConsentRecord | undefined>;

  // Revocation log.
  /**
   * Append non-grant revocation entries (token ids, subjects or clients as of a time). A `token`
   * entry (an access token's `jti`, or under a scope, `issuer` set, a login session's sign-out) is
   * appended if absent: one for the same value and issuer already in the log (or earlier in
   * `entries`) is skipped, adds nothing and numbers nothing, also when several processes append it
   * at once. So does {@link Store.revokeGrants} with such an entry among its `alsoLog`.
   * @returns how many of `entries` this call appended: a `token` entry skipped is not counted. Of
   *   several concurrent calls appending one (revocations of one access token, sign-outs of one
   *   login session, racing in one process or at several instances sharing the store), exactly one
   *   counts it, the first to commit: the revocation that revoked it.
   */
  appendRevocations(entries: readonly Omit<RevocationEntry, 'seq'>[]): Promise<number>;
  /** Entries with `seq > afterSeq` that have not expired at `now`, in `seq` order, at most `limit` (default {@link REVOCATIONS_PAGE}). */
  revocationsSince(afterSeq: number, now: number, limit?: number): Promise<RevocationEntry[]>;
  /**
   * Whether the log holds a `token` entry for `jti` (until it is pruned), read by an index:
   * introspection's answer for a token that another process (the CLI, another instance) revoked
   * after this one last read the log.
   */
  tokenRevoked(jti: string): Promise<boolean>;
  /**
   * Optional (PostgreSQL has it, SQLite does not): be told soon after any process commits an
   * append to the revocation log, instead of waiting for the next poll of
   * {@link Store.revocationsSince}. Never told of a write that rolled back.
   *
   * `onChange` carries no entry, only a hint: the highest `seq` that commit appended when the
   * backend knows it, else `undefined` (e.g. after the watch was re-established following a loss,
   * when appends may have gone unheard, or after a client was changed or removed: the caller then
   * also re-reads {@link Store.versions} and drops its cached clients when they moved, so a client
   * disabled by another process stops authenticating here at once). Calls may be late, merged or
   * spurious; the caller reads {@link Store.revocationsSince} and keeps polling as a fallback. Resolves once the watch is in
   * place or its first attempt failed (the backend keeps retrying); problems are reported to
   * `onWarning`, never thrown. The returned function ends the watch; {@link Store.close} ends all.
   *
   * @example
   * ```ts
   * const stop = await store.watchRevocations?.((seq) => {
   *   if (seq === undefined || seq > feed.cursor) void feed.catchUp(now());
   * });
   * // ...
   * await stop?.();
   * ```
   */
  watchRevocations?(
    onChange: (seq: number | undefined) => void,
    options?: { readonly onWarning?: (message: string) => void },
  ): Promise<() => Promise<void>>;

  // One-time identifiers (client assertion and DPoP proof `jti`s).
  /** Record `key` until `expiresAt`. True on first use (or after the earlier use expired), false on replay. */
  useOnce(key: string, expiresAt: number, now: number): Promise<boolean>;

  // A2A tasks and contexts bound to their creator (the gateway's `a2a.bind_tasks`).
  /**
   * Record that the A2A task or context `id` of gateway route `route` belongs to `owner` until
   * `expiresAt`, unless another owner's record of it is live at `now` (`expiresAt > now`): inserted
   * when there is none or it has expired, extended (to the later of the two expiries, never
   * shortened) when it is `owner`'s, left as it is when it is another's. Returns the record of the id
   * afterwards: `owner`'s, or that other one's, with its expiry. Atomic: of concurrent claims of an id, from
   * this process or others, exactly one owner wins. `route`, `kind` and `id` (any length: ids come
   * from callers and upstreams) are kept as a digest; `owner` is kept as given.
   *
   * With `limit`: `'full'`, nothing written, when the record would be a new one of `owner` (there
   * is none of `id`, or it expired) and `owner` already has `limit` live records on `route` (the
   * gateway's `a2a.max_tasks_per_principal`); extending `owner`'s live record is never refused. The
   * count is atomic with the claim: of concurrent claims of new ids by one owner, at most `limit` win.
   * @throws {RangeError} when `owner` is empty or longer than {@link MAX_A2A_OWNER} (nothing written).
   */
  claimA2aTask(
    route: string,
    kind: A2aIdKind,
    id: string,
    owner: string,
    expiresAt: number,
    now: number,
    limit?: number,
  ): Promise<A2aTaskRecord | 'full'>;
  /**
   * Take back a claim: delete the record of `id` when it is `owner`'s (live or expired), so it no
   * longer counts against `owner`'s `limit` and the id is anyone's again; another owner's record is
   * left as it is. True when a record was deleted. The gateway releases what it claimed for an MCP
   * task it could not finish recording (its principal's count claimed, its owner-and-tool record
   * not), which would otherwise hold one of the principal's `mcp.max_tasks_per_principal` places
   * until `task_ttl` for a task it never got.
   */
  releaseA2aTask(route: string, kind: A2aIdKind, id: string, owner: string): Promise<boolean>;
  /** The record of the A2A task or context `id` of `route` (its owner and expiry), unless there is none or it expired at `now`. */
  a2aTaskOwner(route: string, kind: A2aIdKind, id: string, now: number): Promise<A2aTaskRecord | undefined>;

  // Audit trail.
  appendAudit(events: readonly AuditEvent[]): Promise<void>;
  /**
   * Events matching every given filter, in id (time) order, at most `limit` (default
   * {@link AUDIT_QUERY_DEFAULT}; taken as 1 to {@link AUDIT_QUERY_MAX}).
   */
  queryAudit(query: AuditQuery): Promise<AuditEvent[]>;
  /**
   * Delete at most `limit` of the oldest audit events made before `before` (epoch milliseconds),
   * by id (UUIDv7: an id's time is never before its event's, so no event at or after `before` is
   * deleted), in one short transaction; returns how many. A caller pruning many loops until fewer
   * than `limit` come back, so no single write holds the store's write lock for long.
   */
  pruneAudit(before: number, limit: number): Promise<number>;

  /** Change counters (one cheap read). */
  versions(): Promise<StoreVersions>;
  /**
   * Drop what can no longer matter at `now`: expired refresh tokens (a rotated one only once no
   * token of its family expires after `now`, so a family's spent tokens go together), replay entries and revocation
   * entries, expired remembered consents and A2A task records, authorization codes an hour past their expiry (kept that
   * long so a late replay still revokes the grant issued from the code); and, when `grantsExpiredBefore` is given, grants that expired before it (a child never
   * outlives its parent, so no live grant loses an ancestor).
   *
   * In bounded batches, each its own short write, so that a prune of millions of rows never holds
   * a lock (or a connection) for long; a call stops after a time budget, once it has deleted
   * something, and the next call goes on. Resolves `true` when nothing it prunes was left (rows
   * another transaction holds locked may be left for a later call), `false` when it stopped at its
   * budget (the token service calls again at its next sync round only on `false`). Refresh tokens go before grants, and a grant only once no stored grant names it as
   * parent: a stored grant never lacks its parent, between calls too. Not atomic as a whole.
   */
  prune(now: number, options?: { readonly grantsExpiredBefore?: number }): Promise<boolean>;
  close(): Promise<void>;
}
