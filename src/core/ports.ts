/**
 * The contracts the pure core needs from the outside world. Adapters (remote JWKS over HTTP,
 * an RFC 7662 client, a shared replay cache in PostgreSQL) implement them; the core never imports
 * an HTTP server, a database or the CLI.
 *
 * @module
 */
import type { JwsAlgorithm } from './jose/algorithms.ts';
import type { VerificationKey } from './jose/jwk.ts';

/** Why a key lookup found no single key. */
/**
 * Why no key: none under that `kid`; several candidates; no key set was ever loaded; or the last
 * good set was dropped, having expired more than `max_stale` ago without a refresh succeeding.
 */
export type KeyMiss = 'unknown' | 'ambiguous' | 'unavailable' | 'stale';

/** The keys of one issuer, looked up by (kid, alg); never by trying every key. */
export interface KeySource {
  /** The key for `kid` (or the only candidate when the token has no `kid`) usable with `alg`. */
  lookup(kid: string | undefined, alg: JwsAlgorithm): VerificationKey | KeyMiss;
  /**
   * Called after an `unknown` miss. A remote source may refetch, at most once per cooldown, and
   * resolves `true` when a new key set was loaded; a refused or failed refresh resolves `false`.
   */
  refreshAfterMiss?(): Promise<boolean>;
  /**
   * Be told when a key this source served is gone from it (a remote JWKS that dropped a key), so
   * verification results cached for tokens it signed are not used any longer.
   */
  onKeysRemoved?(listener: () => void): void;
  /**
   * A result cached for a token this source's key verified is being used. A remote source whose
   * set is past its TTL refreshes it in the background, as a lookup would: else, while every
   * request is a cache hit, a withdrawn key would never be noticed and its tokens would pass until
   * they expire.
   */
  refreshIfStale?(): void;
}

/** An RFC 7662 introspection response (the members Tessera reads). */
export interface IntrospectionResponse {
  readonly active: boolean;
  readonly [member: string]: unknown;
}

/** Calls an RFC 7662 introspection endpoint. Rejects when the endpoint cannot answer. */
export interface Introspector {
  introspect(token: string): Promise<IntrospectionResponse>;
}

/**
 * Why a bounded replay cache did not record a first use: it is full of entries still live
 * (`'full'`), or the owner's share of it is (`'owner_full'`). Either way the identifier is refused:
 * forgetting a live entry early would let it be replayed.
 */
export type ReplayRefusal = 'full' | 'owner_full';

/** Remembers one-time identifiers (DPoP proof `jti`s) until they expire. */
export interface ReplayCache {
  /**
   * Record `key` until `expiresAt` (epoch seconds). Returns true on first use, false on replay, or
   * a {@link ReplayRefusal} when a bounded cache cannot record it. `owner` is who the entry counts
   * against (the DPoP proof key's thumbprint), for a cache that bounds each owner's share. The DPoP
   * verifier's keys are `<thumbprint>:<SHA-256 of the jti, base64url>`: at most 87 ASCII
   * characters, never the sender's `jti` itself.
   */
  use(key: string, expiresAt: number, owner?: string): boolean | ReplayRefusal | Promise<boolean | ReplayRefusal>;
}

/** A clock in epoch milliseconds; tests pass a fixed or steppable one. */
export type Clock = () => number;

/**
 * Mints the short-lived token the gateway sends upstream for a verified caller (the `exchange`
 * upstream credential): RFC 8693 token exchange done in-process, narrowed to the route's audience
 * and scopes, carrying the caller's delegation chain in `act` under the gateway as actor.
 *
 * The gateway waits for a mint at most the route's `mint_timeout`: past it the callers waiting get
 * 502 `upstream_credential_unavailable` and `signal` is aborted. An answer that still comes later
 * is checked as any other and, when valid, cached for the caller's next request.
 */
export interface UpstreamTokenIssuer {
  issueForUpstream(request: {
    /** The verified caller. */
    readonly principal: import('./verify/principal.ts').Principal;
    /** The upstream's audience. */
    readonly audience: string;
    /** Scopes the upstream token may carry (already a subset of what the route requires). */
    readonly scopes: readonly string[];
    /** Upper bound on lifetime, seconds. */
    readonly maxTtl: number;
    /**
     * Aborted when the gateway stops waiting (the mint's deadline passed). An issuer that calls
     * out (a remote token service) may pass it on; the built-in token service finishes what it began.
     */
    readonly signal?: AbortSignal;
  }): Promise<{
    readonly token: string;
    readonly expiresAt: number;
    /**
     * Whether the token has been revoked since (its grant, its `jti`, its subject or client), asked
     * before each use of it from the gateway's cache: `true` (or a throw) and the gateway mints
     * anew. A cheap in-memory check (the built-in token service consults its revocation list),
     * never a store read or a network call: it runs on every proxied request. Without it, a cached
     * token is sent until it is due for refresh.
     */
    readonly revoked?: () => boolean;
  }>;
}
