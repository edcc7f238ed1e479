/**
 * The token service core: grant types, revocation, introspection, metadata and the admin
 * operations, over the store contract and nothing else (no HTTP server, no database driver). The
 * HTTP adapter (`src/server/`) turns requests into {@link OAuthRequest}s and results into
 * responses; the CLI calls the operator methods directly.
 *
 * {@link TokenService} is the facade: it owns the state (keys, client cache, revocation list,
 * standing grants, audit queue) and hands the grant types (`grants/`), revocation and
 * introspection a context built once, each module seeing only the part it declares.
 *
 * @module
 */
import type { KeyObject } from 'node:crypto';
import { type AuditSlots, BatchingAuditSink, within } from '../audit/batching.ts';
import type { AuditEvent } from '../audit/event.ts';
import { uuidv7 } from '../audit/id.ts';
import { type AuditEventsDropped, type AuditEventsLost, auditEventsDropped, auditEventsLost } from '../audit/pipeline.ts';
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import { DEFAULT_DPOP_ALGORITHMS, type JwsAlgorithm } from '../core/jose/algorithms.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import type { Clock, KeySource, UpstreamTokenIssuer } from '../core/ports.ts';
import { printable } from '../core/printable.ts';
import { ThrottleWindows, TokenBucketLimiter } from '../core/ratelimit.ts';
import { compileScopes, type ScopeCatalog, type ScopeModel } from '../core/scopes.ts';
import { holdsToken } from '../core/secret-shape.ts';
import { createDpopNonces, type DpopNonceSource } from '../core/verify/dpop.ts';
import { RevocationList } from '../core/verify/revocation.ts';
import type { VerifyResult } from '../core/verify/verifier.ts';
import {
  type ClientRecord,
  type GrantRecord,
  type GrantSelector,
  PUBLIC_CLIENT_GRANT_TYPES,
  type RevokedGrant,
  type SigningKeyRecord,
  type Store,
} from '../store/contract.ts';
import { AccessTokens, type OwnToken } from './access-tokens.ts';
import {
  type AuthorizationRequest,
  type AuthorizeContext,
  type AuthorizeOutcome,
  checkAuthorizationRequest,
  issueAuthorizationCode,
  storeAuthorizationCode,
} from './authorize.ts';
import {
  type ClientAdminContext,
  clientInputProblems,
  registerClient,
  removeClient,
  setClientDisabled,
  updateClient,
} from './client-admin.ts';
import { type ClientInput, type ClientInputError, ClientRegistry, type ClientUpdate, type CompiledClient } from './clients.ts';
import { ConsentTokens } from './consent.ts';
import {
  AddressFailures,
  type AuditDraft,
  type AuthFailureLimit,
  asOAuthError,
  chainOf,
  type EmitOptions,
  type OAuthRequest,
  SKEW,
  type TokenResponse,
} from './context.ts';
import { checkTokenEndpointProof, DPOP_NONCE_KEY_INFO } from './dpop.ts';
import { GRANT_TREE_MAX_NODES } from './grant-tree.ts';
import { type AuthorizationCodeContext, authorizationCode } from './grants/authorization-code.ts';
import { type ClientCredentialsContext, clientCredentials } from './grants/client-credentials.ts';
import { exchange, issueForUpstream, TOKEN_EXCHANGE, type UpstreamContext } from './grants/exchange.ts';
import { type MintContext, type MintOptions, mint } from './grants/mint.ts';
import { type RefreshContext, refresh } from './grants/refresh.ts';
import { STANDING_CACHE_SIZE, StandingGrants } from './grants/standing.ts';
import { type IntrospectContext, introspectRequest } from './introspect.ts';
import { KeyManager, RECOVER } from './keys.ts';
import { identifyLeak, type LeakContext, type LeakedToken, type LeakRevocation, revokeLeak } from './leaks.ts';
import { type Endpoints, endpointsFor, metadata } from './metadata.ts';
import { checkRepeats } from './params.ts';
import { type RegistrationContext, type RegistrationResponse, registerDynamicClient, registrantKey } from './registration.ts';
import { type ApprovingPerson, type RememberedConsentContext, rememberApproval, rememberedApproval } from './remembered-consent.ts';
import { RevocationFeed } from './revocation-feed.ts';
import {
  type AccessTokenRevocation,
  loginSessionScope,
  type RefreshTokenRevocation,
  type RevokeContext,
  revokeAccessToken,
  revokeGrants,
  revokeRefreshToken,
  revokeRequest,
} from './revoke.ts';
import { createSecretHasher, deriveMacKey, type MasterKey, type SecretHasher, sha256, tokenHash } from './secrets.ts';

export type { OAuthRequest, TokenResponse } from './context.ts';
export { GRANT_TREE_MAX_NODES } from './grant-tree.ts';
export { ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, TOKEN_EXCHANGE } from './grants/exchange.ts';
export { type Endpoints, endpointsFor } from './metadata.ts';

/**
 * An admin action's detail as the audit trail may record it: what the operator typed (a subject, a
 * client id, a reason) is `*` when it holds a token, as a token pasted into the wrong field would.
 */
function recordable(detail: Readonly<Record<string, string | number>>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(detail)) out[k] = typeof v === 'string' && holdsToken(v) ? '*' : v;
  return out;
}

/** Audit events deleted per write by {@link TokenService.pruneAudit}. */
const AUDIT_PRUNE_BATCH = 1000;
/**
 * Seconds without a complete read of the revocation log after which {@link TokenService.revocationStatus}
 * is not ok: two polls missed, plus 10 s for a read that waits out the store's read timeout.
 */
export const REVOCATIONS_STALE_AFTER = (syncInterval: number): number => 2 * syncInterval + 10;

/**
 * Seconds since the last complete read of the revocation log within which a cached standing grant
 * is handed out without reading the log first: half the skew its revocation entry outlives its
 * tokens by (see the `fresh` hook of the standing grants).
 */
const STANDING_FRESH = SKEW / 2;

/** An admin API `Authorization` header: `Bearer` and one token68 (RFC 6750 §2.1). */
const ADMIN_BEARER = /^bearer +([A-Za-z0-9._~+/-]+=*) *$/i;

/**
 * Who called the admin API: the admin token's subject, client and `jti`, its delegation id and its
 * actor chain (current actor first; empty when no one acts for the subject).
 */
export interface AdminCaller {
  readonly subject: string;
  readonly clientId: string;
  readonly jti: string;
  readonly actorChain: readonly string[];
  readonly grantId: string;
}

/** An admin token as the caller it names. */
function callerOf(own: OwnToken): AdminCaller {
  return { subject: own.subject, clientId: own.clientId, jti: own.jti, actorChain: chainOf(own.act), grantId: own.grantId };
}

/** Why the admin API refused its Bearer token (audited as `admin.denied`). */
type AdminRefusal =
  | 'admin_token_missing'
  | 'admin_token_invalid'
  | 'admin_token_audience_shared'
  | 'admin_scope_missing'
  | 'request_multiple_authorization'
  // The store could not be read to confirm the token (503), or failed otherwise (500).
  | 'store_unavailable'
  | 'server_error';

/** The audit fields naming an admin token's holder (never the token). */
function adminActor(who: AdminCaller): Pick<AuditDraft, 'subject' | 'client_id' | 'actor_chain' | 'delegation_id' | 'jti'> {
  return {
    subject: who.subject,
    client_id: who.clientId,
    ...(who.actorChain.length > 0 ? { actor_chain: who.actorChain } : {}),
    delegation_id: who.grantId,
    jti: who.jti,
  };
}

/** A grant's ancestors (root first) and its subtree (the grant first, in tree order). */
export interface GrantTree {
  readonly ancestors: GrantRecord[];
  readonly subtree: GrantRecord[];
  /** Some ancestors (the farthest) or some of the subtree (the last in tree order) were left out. */
  readonly truncated: boolean;
}

/** What a {@link TokenService} is built from; `createTokenServiceFromConfig` builds it from `tessera.yaml`. */
export interface TokenServiceOptions {
  readonly config: ResolvedTokenServiceConfig;
  readonly store: Store;
  /** Needed to sign, rotate keys and check client secrets; read-only CLI commands run without. */
  readonly master: MasterKey | undefined;
  /** The scope catalogue (`scopes` in tessera.yaml). */
  readonly scopes?: ScopeCatalog | undefined;
  /** Validates subject and actor tokens from trusted external issuers (the top-level `issuers`). */
  readonly externalVerifier?: { verifyToken(token: string): Promise<VerifyResult> } | undefined;
  /** Longest lifetime of an external token (its issuer's `max_lifetime`), for revocation horizons. */
  readonly externalMaxLifetime?: number;
  /** Those issuers' identifiers: a subject revoked without an issuer is revoked at each of them. */
  readonly externalIssuers?: readonly string[];
  /**
   * Per external issuer, the only clients that may present its tokens in a token exchange
   * (`issuers[].exchange_clients`); an issuer absent from the map: any client registered for it.
   */
  readonly externalExchangeClients?: ReadonlyMap<string, ReadonlySet<string>>;
  /** Key source for a client's `jwks_uri`. */
  readonly remoteKeys?: ((uri: string) => KeySource) | undefined;
  /** Share a revocation list with verifiers built elsewhere (default: a new one). */
  readonly revocations?: RevocationList;
  /** Epoch milliseconds. */
  readonly clock?: Clock;
  /** Told about background failures (sync, audit writes). Never a token or secret. */
  readonly onWarning?: (message: string) => void;
  /**
   * Told, at {@link TokenService.close}, how many audit events were not written to the store by
   * its deadline: the fields of the gateway's `audit_events_lost` line, for a host to log at level
   * `error` (default: its `message` to `onWarning`).
   */
  readonly onAuditEventsLost?: (lost: AuditEventsLost) => void;
  /**
   * With `audit.on_queue_full: refuse`, told of the events dropped because the queue was full
   * (those no request reserved a slot for: key rotations, revocations and sign-outs that revoked or
   * ended nothing, failed sign-outs, operators' actions; and revocations' records past twice `audit.max_queue`): at once
   * for the first, then at most once every 10 s with how many since, and at {@link
   * TokenService.close}; for a host to log at level `error` (default: its `message` to
   * `onWarning`). With `drop` the count is in `audit.dropped` only, as before.
   */
  readonly onAuditEventsDropped?: (dropped: AuditEventsDropped) => void;
  /** Audit events held while the store refuses them (`audit.max_queue`; default 100 000). */
  readonly auditMaxQueue?: number;
  /**
   * `audit.on_queue_full`: with `refuse`, the HTTP handler admits token, introspection,
   * registration, authorization, login callback and admin grant-tree requests with
   * {@link TokenService.admitAudited}, which reserves their events' slots in the audit queue once
   * their body is read (a slow body holds none), and refuses them (503 `audit_unavailable`) when the
   * queue cannot hold them; never a revocation. Default `drop`: events beyond are dropped.
   */
  readonly auditOnQueueFull?: 'drop' | 'refuse';
  /** Most client-credentials standing grants remembered (default 4096; oldest evicted first). */
  readonly standingGrantCacheSize?: number;
  /** Most compiled clients remembered (default 10000; oldest evicted first). */
  readonly clientCacheSize?: number;
  /**
   * Algorithms accepted for DPoP proofs at the token endpoint and advertised in the metadata
   * (`dpop.algorithms` in tessera.yaml, which the gateway's verifiers accept; default the same).
   */
  readonly dpopAlgorithms?: readonly JwsAlgorithm[];
}

/** Every module's context at once: what {@link TokenService} hands to each of them. */
type ServiceContext = ClientCredentialsContext &
  AuthorizationCodeContext &
  AuthorizeContext &
  MintContext &
  RefreshContext &
  UpstreamContext &
  RevokeContext &
  IntrospectContext &
  LeakContext &
  ClientAdminContext &
  RegistrationContext &
  RememberedConsentContext;

/**
 * Who made a request, for its audit events, and the slots it was admitted with under
 * `audit.on_queue_full: refuse` ({@link TokenService.admitAudited}), which its events take.
 */
export interface AuditFacts {
  readonly requestId?: string | undefined;
  readonly remoteAddr?: string | undefined;
  readonly auditSlots?: AuditSlots | undefined;
}

/** At most one warning this often about the requests refused while the audit queue is full, ms. */
const AUDIT_REFUSAL_WARN_MS = 10_000;

/**
 * `audit.on_queue_full: refuse`: the record of a revocation already made, kept past
 * `audit.max_queue` ({@link BatchingAuditSink.keep}, up to its ceiling) instead of dropped when the
 * queue is full. A revocation takes access away, so it is never refused for want of a slot, and it
 * is committed (the store's revocation log) before its events are written: nothing is left to
 * refuse, and its record must not be lost. These are each grant revoked (`grant.revoked`: a reused
 * refresh token's or code's family, the admin API, RFC 7009, `tessera revoke`, a client disabled or
 * removed, a leak revoked), each token revoked (`token.revoked`) and each sign-out that ended a
 * login session (`login.signed_out`), as their emit site says ({@link EmitOptions.revoked}); not a
 * refusal (`decision: deny`), nor one of those kinds that took nothing away (a refresh token whose
 * grant was revoked before, a sign-out of a session already ended or of none): a client could
 * repeat those at will, and keeping them would let it fill the queue to its ceiling while the
 * store fails.
 */
function revocationRecord(e: AuditDraft, options: EmitOptions | undefined): boolean {
  return (
    options?.revoked === true &&
    e.decision !== 'deny' &&
    (e.kind === 'grant.revoked' || e.kind === 'token.revoked' || e.kind === 'login.signed_out')
  );
}

/** How long close() retries the audit events the store has not taken, by default. */
const AUDIT_CLOSE_MS = 10_000;

/** The labels of one series of {@link TokenService.tokenAnswers}. */
export type TokenAnswerLabels = {
  readonly grant_type: string;
  readonly decision: 'allow' | 'deny';
  readonly reason: string;
  readonly error: string;
};

/** The grant types the token endpoint serves. */
const SUPPORTED_GRANT_TYPES: ReadonlySet<string> = new Set(['client_credentials', 'authorization_code', 'refresh_token', TOKEN_EXCHANGE]);

/**
 * The token service.
 *
 * @example
 * ```ts
 * const service = new TokenService({ config, store, master });
 * await service.start();
 * const verifier = createVerifierFromConfig(config, {
 *   keySources: { [service.issuer]: service.keys },
 *   revocation: service.revocations,
 * });
 * ```
 */
export class TokenService {
  readonly issuer: string;
  readonly endpoints: Endpoints;
  readonly config: ResolvedTokenServiceConfig;
  readonly store: Store;
  /** The signing keys; also the {@link KeySource} for in-process verifiers of this issuer. */
  readonly keys: KeyManager;
  /** Revocations replayed from the store; pass it to verifiers as `runtime.revocation`. */
  readonly revocations: RevocationList;
  readonly clients: ClientRegistry;
  readonly audit: BatchingAuditSink;
  /** Anti-CSRF tokens of the consent page; absent without the master key. */
  readonly consent: ConsentTokens | undefined;
  /**
   * MAC keys of the upstream OIDC login (derived from the master key, one per use so a value made
   * for one can never pass as the other); absent without the master key.
   */
  readonly loginKeys: { readonly state: KeyObject; readonly session: KeyObject } | undefined;
  /** The service's clock, epoch seconds. */
  readonly now: () => number;
  readonly #scopes: ScopeModel;
  readonly #hasher: SecretHasher | undefined;
  readonly #feed: RevocationFeed;
  readonly #tokens: AccessTokens;
  readonly #standing: StandingGrants;
  #ctx: ServiceContext;
  readonly #warn: (message: string) => void;
  readonly #auditLost: (lost: AuditEventsLost) => void;
  readonly #auditDroppedLine: (dropped: AuditEventsDropped) => void;
  /** Events dropped (refuse) since the last `audit_events_dropped` line, by kind; when it was written (performance.now()). */
  #auditDropped: Record<string, number> | undefined;
  #auditDroppedAt = Number.NEGATIVE_INFINITY;
  #auditDroppedTimer: NodeJS.Timeout | undefined;
  /** `audit.on_queue_full: refuse`. */
  readonly #auditRefuse: boolean;
  /** An audit draft stamped with its id, time, issuer and (default `allow`) decision. */
  readonly #stamp: (e: AuditDraft) => AuditEvent;
  /** Requests refused since the last warning about it, and when it was written (performance.now()). */
  #auditRefused = 0;
  #auditRefusedWarnedAt = Number.NEGATIVE_INFINITY;
  readonly #dpopAlgorithms: ReadonlySet<JwsAlgorithm>;
  readonly #dpopNonces: DpopNonceSource | undefined;
  #versions = { keys: -1, clients: -1, revocations: -1 };
  /** The refused signing keys (kid, why) last warned about, serialized. */
  #refusedTold = '[]';
  /** When the sync last read the revocation log (epoch seconds). */
  #lastRead: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Checks the revocation log's age against `revocation_max_staleness` (set only when that is on, once started). */
  #staleTimer: NodeJS.Timeout | undefined;
  /** The log unread for longer than `revocation_max_staleness`: this issuer's tokens are refused. */
  #revocationStale = false;
  /** The service's clock, epoch ms. */
  readonly #clockMs: () => number;
  #lastPrune = 0;
  /** The store's last prune stopped at its time budget: the next sync round goes on with it. */
  #pruneBehind = false;
  #syncing: Promise<void> | undefined;
  #auditPrune: Promise<void> | undefined;
  #closing = false;
  #unwatch: (() => Promise<void>) | undefined;
  #pushed: Promise<unknown> | undefined;
  readonly #registrations: TokenBucketLimiter;
  /** Per-client bucket of the token endpoint (`token_rate_limit`); `undefined` when off (the default). */
  readonly #tokenRequests: TokenBucketLimiter | undefined;
  /** The same for public clients, per client and connecting address. */
  readonly #publicTokenRequests: TokenBucketLimiter | undefined;
  /** Failed client authentications per address (`auth_failure_limit`), of the token, revocation and introspection endpoints. */
  readonly #authFailures: AuthFailureLimit | undefined;
  /** Token endpoint answers since start, by their labels ({@link TokenService.tokenAnswers}). */
  readonly #tokenAnswers = new Map<string, { labels: TokenAnswerLabels; n: number }>();

  constructor(options: TokenServiceOptions) {
    const { config, store } = options;
    const clock = options.clock ?? Date.now;
    const issuer = config.issuer;
    const now = () => Math.floor(clock() / 1000);
    this.#clockMs = clock;
    this.#registrations = new TokenBucketLimiter({ ...config.registration.rate_limit, maxKeys: 10_000, clock });
    const { enabled: limitRevocations, ...revocationRate } = config.revocation_rate_limit;
    const { enabled: limitTokens, ...tokenRate } = config.token_rate_limit;
    this.#tokenRequests = limitTokens ? new TokenBucketLimiter({ ...tokenRate, maxKeys: 10_000, clock }) : undefined;
    // Public clients' buckets (per client and address) apart: senders with many addresses would
    // otherwise evict confidential clients' buckets, refilling them.
    this.#publicTokenRequests = limitTokens ? new TokenBucketLimiter({ ...tokenRate, maxKeys: 10_000, clock }) : undefined;
    const revocationLimiter = limitRevocations ? new TokenBucketLimiter({ ...revocationRate, maxKeys: 10_000, clock }) : undefined;
    // As for token requests: public clients' buckets (per client and address) kept apart.
    const publicRevocationLimiter = limitRevocations ? new TokenBucketLimiter({ ...revocationRate, maxKeys: 10_000, clock }) : undefined;
    const { enabled: limitIntrospections, ...introspectionRate } = config.introspection_rate_limit;
    const introspectionLimiter = limitIntrospections ? new TokenBucketLimiter({ ...introspectionRate, maxKeys: 10_000, clock }) : undefined;
    // Each open window of a client one entry.
    const introspectionThrottled = new ThrottleWindows({ maxKeys: 10_000, clock });
    // One bucket per address for the token, revocation and introspection endpoints: a guesser of
    // client secrets moving between them gets no fresh burst. Its windows are per endpoint and address.
    const { enabled: limitAuthFailures, ...authFailureRate } = config.auth_failure_limit;
    this.#authFailures = limitAuthFailures
      ? {
          limiter: new TokenBucketLimiter({ ...authFailureRate, maxKeys: 10_000, clock }),
          windows: new ThrottleWindows({ maxKeys: 30_000, clock }),
        }
      : undefined;
    this.config = config;
    this.store = store;
    this.issuer = issuer;
    this.endpoints = endpointsFor(issuer);
    // A warning may quote what a peer wrote (a kid in the shared store, a provider's text): the
    // library user's logger gets it escaped, as the gateway's and the verifier's do.
    const onWarning = options.onWarning;
    this.#warn = onWarning === undefined ? () => {} : (m) => onWarning(printable(m));
    this.#auditLost = options.onAuditEventsLost ?? ((lost) => this.#warn(lost.message));
    this.#auditDroppedLine = options.onAuditEventsDropped ?? ((dropped) => this.#warn(dropped.message));
    this.#dpopAlgorithms = new Set(options.dpopAlgorithms ?? DEFAULT_DPOP_ALGORITHMS);
    // RFC 9449 §8: stateless nonces (a time slot and its HMAC) under a key derived from the master
    // key, so every instance sharing it accepts the others'. Without the master key nothing is
    // signed, so no token request succeeds anyway: a random key then.
    this.#dpopNonces = config.dpop.nonce
      ? createDpopNonces({ clock, ...(options.master ? { secret: deriveMacKey(options.master, DPOP_NONCE_KEY_INFO) } : {}) })
      : undefined;
    const { model, issues } = compileScopes(options.scopes, 'scopes');
    if (issues.length > 0) throw new TypeError(`invalid scope catalogue: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    this.#scopes = model;
    this.#hasher = options.master ? createSecretHasher(options.master) : undefined;
    this.consent = options.master
      ? new ConsentTokens(deriveMacKey(options.master, 'tessera consent v1'), config.authorization.consent_ttl, store, now)
      : undefined;
    this.loginKeys = options.master
      ? {
          state: deriveMacKey(options.master, 'tessera oidc login state v1'),
          session: deriveMacKey(options.master, 'tessera oidc session v1'),
        }
      : undefined;
    this.now = now;
    this.keys = new KeyManager({
      store,
      master: options.master,
      now,
      schedule: {
        algorithm: config.keys.algorithm,
        publishAhead: config.keys.publish_ahead,
        jwksMaxAge: config.keys.jwks_max_age,
        maxTokenTtl: config.max_access_token_ttl,
        rotationInterval: config.keys.rotation_interval,
        propagation: config.sync_interval,
      },
    });
    this.revocations = options.revocations ?? new RevocationList();
    this.#tokens = new AccessTokens(issuer, this.keys, this.revocations);
    this.#standing = new StandingGrants({
      store,
      issuer,
      revocations: this.revocations,
      size: options.standingGrantCacheSize ?? STANDING_CACHE_SIZE,
      // A token signed on a cached grant writes nothing, so nothing in the store refuses it when
      // another process has revoked the grant: only this process's revocation list does. The
      // grant's log entry lives max_access_token_ttl + SKEW from its revocation, and a token signed
      // on it d seconds after the revocation lives until d + max_access_token_ttl: past the entry
      // (and accepted by every verifier once it has dropped it) when d exceeds SKEW. So a cached
      // grant is handed out only while the log was read to its end within half the skew (the other
      // half for another instance's clock); else it is read first (one read shared by the requests
      // waiting), and a read that fails refuses the token (503) rather than sign it on a grant
      // perhaps revoked: the store out of reach, a poll held up, sync_interval over 30 s.
      // Past revocation_max_staleness too, as the gateway then refuses this issuer's tokens.
      fresh: (at) => {
        const read = this.#feed.readAt;
        return read !== undefined && at - read <= STANDING_FRESH && !this.#revocationStale
          ? undefined
          : this.#feed.catchUp(at).then(() => undefined);
      },
    });
    this.#feed = new RevocationFeed(store, this.revocations, issuer, (ids) => this.#standing.forget(ids), {
      clock,
      // Whoever read it (the sync, a push, a revocation, a standing grant): vouched for again at once.
      onRead: () => this.#checkRevocationStaleness(),
    });
    this.clients = new ClientRegistry({
      store,
      hasher: this.#hasher,
      scopes: model,
      namedOnly: config.admin.scope,
      remoteKeys: options.remoteKeys,
      assertionAudience: issuer,
      assertionMaxLifetime: config.client_assertion_max_lifetime,
      now,
      ...(options.clientCacheSize !== undefined ? { cacheSize: options.clientCacheSize } : {}),
    });
    const audit = new BatchingAuditSink(
      { write: (events) => store.appendAudit(events) },
      {
        flushIntervalMs: Math.max(1, config.audit_flush_interval * 1000),
        ...(options.auditMaxQueue !== undefined ? { maxQueue: options.auditMaxQueue } : {}),
        failClosed: options.auditOnQueueFull === 'refuse',
        // refuse: an event dropped is never silent (drop keeps its counter alone, as before).
        ...(options.auditOnQueueFull === 'refuse' ? { onDropped: (e: AuditEvent) => this.#droppedEvent(e) } : {}),
        // The events a full queue dropped are lost: the warning says how many so far.
        onError: () =>
          this.#warn(
            audit.dropped > 0
              ? `audit events could not be written to the store; retrying (${audit.dropped} dropped so far: the queue was full)`
              : 'audit events could not be written to the store; retrying',
          ),
      },
    );
    this.audit = audit;
    this.#auditRefuse = options.auditOnQueueFull === 'refuse';
    const stamp = (e: AuditDraft): AuditEvent => {
      const time = clock();
      return { id: uuidv7(time), time, decision: 'allow', issuer, ...e };
    };
    this.#stamp = stamp;
    this.#ctx = {
      issuer,
      config,
      store,
      scopes: model,
      clients: this.clients,
      tokens: this.#tokens,
      keys: this.keys,
      standing: this.#standing,
      feed: this.#feed,
      revocations: this.revocations,
      hasher: this.#hasher,
      external: options.externalVerifier,
      externalMaxLifetime: options.externalMaxLifetime ?? 86_400,
      externalIssuers: options.externalIssuers ?? [],
      exchangeClients: options.externalExchangeClients ?? new Map(),
      revocationLimiter,
      publicRevocationLimiter,
      introspectionLimiter,
      introspectionThrottled,
      authFailures: this.#authFailures,
      now,
      // refuse: a revocation's record is kept past max_queue (under its ceiling), never dropped.
      emit: this.#auditRefuse
        ? (e: AuditDraft, o?: EmitOptions) => (revocationRecord(e, o) ? audit.keep(stamp(e)) : audit.push(stamp(e)))
        : (e: AuditDraft) => audit.push(stamp(e)),
    };
  }

  /**
   * The context of one request admitted with `slots` ({@link admitAudited}): its events take them.
   * A `grant.revoked` (one per grant a reused refresh token's or code's family had, however many)
   * takes none of them (they are the fixed events', `token.denied` among them): it is kept within
   * `audit.max_queue` or past it ({@link BatchingAuditSink.keep}, up to twice it), as every
   * revocation's record is ({@link revocationRecord}): the store revoked the family in the
   * transaction that found the reuse, before their number was known, so nothing is left to refuse
   * and the events must not be lost. Each grant is revoked once (its event written once), and
   * while the queue is past its bound no request is admitted. Without slots (`drop`, or a request
   * not admitted this way): the shared one.
   */
  #ctxFor(slots: AuditSlots | undefined): ServiceContext {
    if (slots === undefined) return this.#ctx;
    const stamp = this.#stamp;
    const audit = this.audit;
    return {
      ...this.#ctx,
      emit: (e: AuditDraft, o?: EmitOptions) => (revocationRecord(e, o) ? audit.keep(stamp(e)) : slots.push(stamp(e))),
    };
  }

  /**
   * Replace the verifier of the other issuers' tokens (token exchange), as a configuration reload
   * does: an issuer removed from `issuers` is refused from the next exchange on, and so is a client
   * removed from its `exchange_clients`. Every argument is required: an issuer left out of
   * `exchangeClients` lets any exchange client present its tokens, so no default may stand for it.
   */
  useExternalIssuers(
    verifier: TokenServiceOptions['externalVerifier'],
    maxLifetime: number,
    issuers: readonly string[],
    exchangeClients: ReadonlyMap<string, ReadonlySet<string>>,
  ): void {
    this.#ctx = { ...this.#ctx, external: verifier, externalMaxLifetime: maxLifetime, externalIssuers: issuers, exchangeClients };
  }

  // Lifecycle.

  /**
   * Load keys and revocations, then keep them in sync with the store every `sync_interval`. When
   * the store pushes revocations ({@link Store.watchRevocations}, PostgreSQL), other processes'
   * revocations are also applied as soon as they commit, and the poll is the fallback. With
   * `background: false` (one-shot CLI commands) it only loads.
   */
  async start(options: { background?: boolean } = {}): Promise<void> {
    // Watch before the first sync, so nothing committed in between goes unheard until the next poll.
    if (options.background !== false && this.store.watchRevocations !== undefined) {
      this.#unwatch = await this.store.watchRevocations((seq) => this.#revocationPushed(seq), {
        onWarning: (m) => this.#warn(`${m}; revocations are read every sync_interval until it is back`),
      });
    }
    try {
      // Rows written before the key schedule was authenticated are sealed again, once, with the master key.
      const upgraded = this.#hasher !== undefined ? await this.keys.upgrade() : { keys: [], removed: [] };
      for (const kid of upgraded.keys) this.#ctx.emit({ kind: 'key.rotated', reason: 'key_resealed', detail: { kid } });
      for (const kid of upgraded.removed) this.#ctx.emit({ kind: 'key.rotated', reason: 'key_resealed', detail: { removed: kid } });
      await this.sync();
    } catch (e) {
      await this.#stopWatching();
      throw e;
    }
    if (options.background === false) return;
    this.#timer = setInterval(() => {
      // A sync still under way (a store slow to answer, or out of reach until the read's bound) is
      // not joined: its failure is reported by whoever started it, once, not by every tick since.
      if (this.#syncing !== undefined) return;
      this.sync().catch(() => this.#warn('store sync failed; keeping the last known keys, clients and revocations'));
    }, this.config.sync_interval * 1000);
    this.#timer.unref();
    const bound = this.config.revocation_max_staleness;
    if (bound > 0) {
      // Its own timer: a sync held up by a store that does not answer holds the sync's ticks too.
      // A quarter of the bound, at most a second, between checks: refused within that past it.
      this.#staleTimer = setInterval(() => this.#checkRevocationStaleness(), Math.min(1000, bound * 250));
      this.#staleTimer.unref();
    }
  }

  /**
   * Seconds since the last read of the revocation log to its end began (what this process holds
   * was in the log then; anything committed since may not be), or `undefined` before the first.
   */
  revocationLogAge(): number | undefined {
    const at = this.#feed.readAtMs;
    return at === undefined ? undefined : Math.max(0, (this.#clockMs() - at) / 1000);
  }

  /**
   * `revocation_max_staleness`: once the log is older than it, this process cannot vouch that
   * another one did not revoke a token of this issuer, so the revocation list is marked stale for
   * it (the gateway's verifiers refuse such tokens with 503 `revocation_state_stale`, and their
   * open streams are closed); once a read succeeds, it vouches again. Told once each way.
   */
  #checkRevocationStaleness(): void {
    const bound = this.config.revocation_max_staleness;
    if (this.#staleTimer === undefined) return;
    const age = this.revocationLogAge();
    const stale = age === undefined || age > bound;
    if (stale === this.#revocationStale) return;
    this.#revocationStale = stale;
    this.revocations.markStale(this.issuer, stale);
    this.#warn(
      stale
        ? `revocation log not read for over ${bound} s (token_service.revocation_max_staleness): this issuer’s tokens are refused (503 revocation_state_stale) and their open streams closed until it is read again`
        : 'revocation log read again: this issuer’s tokens are accepted again (token_service.revocation_max_staleness)',
    );
  }

  /**
   * Read what other processes changed: keys (re-read at every round, and switched on at their
   * activation time), clients (cache dropped on a version change), revocations (replayed).
   */
  sync(): Promise<void> {
    this.#syncing ??= (async () => {
      try {
        const v = await this.store.versions();
        if (v.clients !== this.#versions.clients) {
          this.clients.invalidate();
          this.#standing.clear();
          // Applied: a key re-read below that fails must not have every later round drop the
          // clients and the standing grants again (one new standing grant per round and client).
          this.#versions = { ...this.#versions, clients: v.clients };
        }
        // Revocations before the keys: a reload of the keys that fails (held up by a lock, given up
        // on after the store's timeout) must not keep other processes' revocations from being
        // applied, round after round.
        // Read whether or not the log's counter moved: after a failover that lost its last entries,
        // the counter can come back to the very value it had, over entries this process never read
        // (the read finds that out and starts again). When nothing is new it reads one indexed row,
        // or, once the last entry applied has expired, every live entry again (applying one twice
        // is harmless).
        const read = this.#ctx.now();
        await this.#feed.catchUp(read);
        // Read nothing for longer than a revoked standing grant's entry surely lives (the store cut
        // off, the process suspended): a grant revoked meanwhile may have left the log unread, and
        // its cached id would go on being handed out, so cached standing grants are dropped. An
        // entry lives max_access_token_ttl + SKEW from its revocation; half the skew is left for
        // another instance's clock and a commit that followed the last read.
        if (this.#lastRead !== undefined && read - this.#lastRead >= this.config.max_access_token_ttl + SKEW / 2) this.#standing.clear();
        this.#lastRead = read;
        // Read at every round, not only when the key version moved: a row deleted by someone other
        // than Tessera moves nothing, and this process would go on signing with a key no other one
        // publishes (a few rows, one indexed read). Refused keys are told once per version, and
        // again when which are refused, or why, changes.
        await this.keys.reload();
        const refused = this.keys.status().filter((k) => k.invalid !== undefined);
        const told = JSON.stringify(refused.map((k) => [k.kid, k.invalid]));
        if (v.keys !== this.#versions.keys || told !== this.#refusedTold) {
          for (const k of refused) {
            // The active key, or one that is to be: nothing signs then until a key that signs at once.
            const advice = k.state === 'active' || k.state === 'pending' ? `; ${RECOVER}` : '';
            this.#warn(`signing key ${k.kid} is refused (not published, not signing): ${k.invalid}${advice}`);
          }
        }
        this.#refusedTold = told;
        this.#versions = v;
        if (this.#hasher !== undefined) {
          const { rotated, removed } = await this.keys.maintain();
          if (rotated) this.#ctx.emit({ kind: 'key.rotated', reason: 'rotation_interval', detail: { kid: rotated.kid } });
          for (const kid of removed) this.#ctx.emit({ kind: 'key.rotated', reason: 'key_expired', detail: { removed: kid } });
        }
        const now = this.#ctx.now();
        const due = now - this.#lastPrune >= 60;
        if (due || this.#pruneBehind) {
          if (due) this.#lastPrune = now;
          // A failed prune waits for the next minute; one the store stopped at its time budget (a
          // backlog of millions of rows, deleted in batches) goes on at the next round. Only an
          // explicit false says so: a custom store written to the earlier contract (prune resolving
          // nothing) would otherwise be pruned at every round, every second, for ever.
          this.#pruneBehind = false;
          // A grant is kept at least SKEW past its expiry whatever grant_retention says (0 included):
          // a verifier tolerating clock skew, or on a clock behind this one, still accepts its last
          // tokens until then without reading the store, and the store's answer (introspection, the
          // admin API) must not call them inactive for want of the grant meanwhile. Its revocation
          // entry lives as long.
          const grantsExpiredBefore = now - Math.max(this.config.grant_retention, SKEW);
          const finished: boolean | undefined = await this.store.prune(now, { grantsExpiredBefore });
          this.#pruneBehind = finished === false;
          if (due) {
            this.revocations.prune(now);
            // Not awaited: a first prune of millions of events must not hold back the next sync.
            this.pruneAudit().catch(() => this.#warn('pruning the audit trail failed; the next prune (in a minute) retries'));
          }
        }
      } finally {
        this.#syncing = undefined;
      }
    })();
    return this.#syncing;
  }

  /**
   * Delete the audit events older than `audit_retention` (nothing when it is 0), oldest first, in
   * batches of {@link AUDIT_PRUNE_BATCH}, each its own short write, yielding to the event loop
   * between them. One run at a time: a call while one runs returns it. The sync starts one every
   * minute; {@link TokenService.close} stops it after the batch in progress.
   */
  pruneAudit(): Promise<void> {
    const retention = this.config.audit_retention;
    if (retention === 0) return Promise.resolve();
    this.#auditPrune ??= (async () => {
      try {
        const before = (this.#ctx.now() - retention) * 1000;
        while (!this.#closing && (await this.store.pruneAudit(before, AUDIT_PRUNE_BATCH)) >= AUDIT_PRUNE_BATCH) {
          await new Promise((resolve) => setImmediate(resolve));
        }
      } finally {
        this.#auditPrune = undefined;
      }
    })();
    return this.#auditPrune;
  }

  /**
   * Whether this process has read the store's revocation log recently enough to enforce other
   * processes' revocations: not ok once no read has reached the log's end for
   * {@link REVOCATIONS_STALE_AFTER}(`sync_interval`) seconds (the store unreachable, its reads
   * failing or held up), so readiness probes take the instance out of service rather than let it
   * accept tokens revoked elsewhere meanwhile.
   */
  revocationStatus(): { ok: boolean; detail?: string } {
    const bound = REVOCATIONS_STALE_AFTER(this.config.sync_interval);
    if (this.#revocationStale) {
      return {
        ok: false,
        detail: `revocation log not read for over ${this.config.revocation_max_staleness} s: this issuer’s tokens are refused (token_service.revocation_max_staleness)`,
      };
    }
    const at = this.#feed.readAt;
    if (at !== undefined && this.#ctx.now() - at <= bound) return { ok: true };
    return { ok: false, detail: `revocation log not read for over ${bound} s` };
  }

  /**
   * Admit one request under `audit.on_queue_full: refuse`: reserve `events` slots in the audit queue
   * (the most events the request can write, grant.revoked aside: see the HTTP handler), counted
   * against `audit.max_queue` from now on, so the request's events are kept however full the queue
   * becomes before it ends. Hand the slots to the request (`OAuthRequest.auditSlots`, the `auditSlots`
   * of the other methods' facts) and release them once it is answered, in a `finally`.
   *
   * @returns the slots; `undefined` with `drop` (nothing is reserved: events beyond max_queue are dropped).
   * @throws {OAuthError} `audit_unavailable` when the events held (waiting, or refused by the store
   *   and kept for its next attempt) and the slots of the requests in flight leave no room: the
   *   request is to be refused (503, not audited: the refusal takes no slot). Counted, and told to
   *   `onWarning` at most once every 10 s.
   * @example
   * ```ts
   * const slots = service.admitAudited(2);
   * try {
   *   return await service.token({ ...request, auditSlots: slots });
   * } finally {
   *   slots?.release();
   * }
   * ```
   */
  admitAudited(events: number): AuditSlots | undefined {
    if (!this.#auditRefuse) return undefined;
    const slots = this.audit.reserve(events);
    if (slots !== undefined) return slots;
    this.#auditRefused++;
    const now = performance.now();
    if (now - this.#auditRefusedWarnedAt >= AUDIT_REFUSAL_WARN_MS) {
      this.#warn(
        `the audit queue is full (audit.on_queue_full: refuse): ${this.#auditRefused} requests refused with 503 audit_unavailable; serving again once the store takes the queue`,
      );
      this.#auditRefusedWarnedAt = now;
      this.#auditRefused = 0;
    }
    throw new OAuthError('audit_unavailable');
  }

  /**
   * Readiness: not ok while {@link admitAudited} refuses every request (`audit.on_queue_full:
   * refuse` and the queue full); its detail says how many events were dropped since start.
   */
  auditStatus(): { ok: boolean; detail?: string } {
    if (!this.#auditRefuse || !this.audit.full) return { ok: true };
    const dropped = this.audit.dropped;
    return {
      ok: false,
      detail: `${this.audit.held} queued${this.audit.reserved > 0 ? `, ${this.audit.reserved} reserved for requests in flight` : ''}, full: requests are refused (audit.on_queue_full: refuse) until the store takes the queue${dropped > 0 ? `; ${dropped} events no request reserved a slot for dropped since start` : ''}`,
    };
  }

  /** `refuse`: an event dropped (the queue full) goes into the next `audit_events_dropped` line. */
  #droppedEvent(e: AuditEvent): void {
    const kinds = (this.#auditDropped ??= {});
    kinds[e.kind] = (kinds[e.kind] ?? 0) + 1;
    if (this.#auditDroppedTimer !== undefined) return;
    // The first at once (with the others of the same turn), then at most one line every 10 s.
    this.#auditDroppedTimer = setTimeout(
      () => this.#reportDropped(),
      Math.max(0, this.#auditDroppedAt + AUDIT_REFUSAL_WARN_MS - performance.now()),
    );
    this.#auditDroppedTimer.unref();
  }

  /** Write the `audit_events_dropped` line of the events dropped since the last, if any. */
  #reportDropped(): void {
    clearTimeout(this.#auditDroppedTimer);
    this.#auditDroppedTimer = undefined;
    const kinds = this.#auditDropped;
    if (kinds === undefined) return;
    this.#auditDropped = undefined;
    this.#auditDroppedAt = performance.now();
    this.#auditDroppedLine(auditEventsDropped('token_service', kinds, this.audit.dropped));
  }

  /** A revocation committed somewhere: apply it unless this process has already (its own, say). */
  #revocationPushed(seq: number | undefined): void {
    // No sequence number: a watch re-established after a loss, or a client changed by another
    // process (disabled, removed): its clients are read again too, not at the next sync_interval.
    if (seq === undefined) this.#clientsPushed();
    if (seq !== undefined && seq <= this.#feed.cursor) return;
    this.#pushed = this.#feed
      .catchUp(this.#ctx.now())
      .catch(() => this.#warn('reading pushed revocations from the store failed; the next sync_interval retries'));
  }

  /** Drop the cached clients (and the standing grants made for them) when the store's clients moved. */
  #clientsPushed(): void {
    this.store
      .versions()
      .then((v) => {
        if (v.clients === this.#versions.clients) return;
        this.clients.invalidate();
        this.#standing.clear();
        this.#versions = { ...this.#versions, clients: v.clients };
      })
      .catch(() => this.#warn('reading pushed client changes from the store failed; the next sync_interval retries'));
  }

  async #stopWatching(): Promise<void> {
    const unwatch = this.#unwatch;
    this.#unwatch = undefined;
    await unwatch?.().catch(() => {});
  }

  /**
   * Stop syncing (and listening for pushed revocations) and flush the audit queue. Does not close
   * the store (its owner does). All of it takes at most `auditTimeoutMs` (default 10 s): a store
   * that fails is tried again every `audit_flush_interval` until then, a write that does not answer
   * is given up on then, and the events not written are told to `onAuditEventsLost` (else
   * `onWarning`) in one line.
   */
  async close(options: { readonly auditTimeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.auditTimeoutMs ?? AUDIT_CLOSE_MS;
    // One bound for all of it: a sync or prune held up by the store takes from the audit's time.
    const deadline = performance.now() + timeoutMs;
    const left = () => deadline - performance.now();
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    clearInterval(this.#staleTimer);
    this.#staleTimer = undefined;
    this.#closing = true;
    await within(
      (async () => {
        await this.#stopWatching();
        await this.#syncing?.catch(() => {});
        await this.#auditPrune?.catch(() => {});
        await this.#pushed;
      })(),
      left(),
    );
    const lost = await this.audit.close({ timeoutMs: Math.max(0, left()) });
    this.#reportDropped();
    if (lost > 0) this.#auditLost(auditEventsLost('token_service', lost));
  }

  // The token endpoint.

  /**
   * Handle a token request (RFC 6749 §4.4, §6; RFC 8693).
   * @throws {OAuthError}
   */
  async token(req: OAuthRequest): Promise<TokenResponse> {
    const ctx = this.#ctxFor(req.auditSlots);
    let clientId: string | undefined;
    const grantType = req.params.get('grant_type') ?? undefined;
    // A flood of guessed client secrets gets about one a second (by default) from an address,
    // here and at the revocation and introspection endpoints together.
    const failures = new AddressFailures(this.#authFailures, req.remoteAddr, 'token.denied');
    try {
      failures.enter();
      if (req.requestFault !== undefined) throw new OAuthError(req.requestFault);
      if (req.headerFault !== undefined) throw new OAuthError(req.headerFault);
      if (req.bodyFault !== undefined) throw new OAuthError(req.bodyFault);
      checkRepeats(req.params);
      if (grantType === undefined || grantType === '') throw new OAuthError('request_parameter_missing');
      if (!SUPPORTED_GRANT_TYPES.has(grantType)) throw new OAuthError('grant_type_unsupported');
      const { client, spend } = await this.clients.authenticateUnspent(req, { allowPublic: true });
      clientId = client.id;
      this.clients.checkOrigin(client, req);
      // Checked here as well as at registration: a public client proves nothing about who calls.
      if (client.record.authMethod === 'none' && !(PUBLIC_CLIENT_GRANT_TYPES as readonly string[]).includes(grantType)) {
        throw new OAuthError('client_public_grant_not_allowed');
      }
      // RFC 9449 §5.2: a client registered as always using DPoP gets no token without a proof, so
      // none of its access tokens is a bearer token (each is bound to the key its request proved;
      // no key is registered with the client). Refused before anything is spent or looked up.
      if (client.record.dpopBoundAccessTokens && req.dpop === undefined) throw new OAuthError('client_dpop_proof_required');
      // After client authentication (a caller without the client's credentials spends nothing of
      // its bucket), before the private_key_jwt assertion's and the DPoP proof's jti are recorded,
      // any grant is looked up, anything is signed or written. A public client proves nothing, so
      // anyone may name it: its buckets are per client and connecting address (an IPv6 /64), or one
      // sender could lock out all its users.
      const bucket = client.record.authMethod === 'none' ? this.#publicTokenRequests : this.#tokenRequests;
      const bucketKey = client.record.authMethod === 'none' ? `${client.id}\n${registrantKey(req.remoteAddr)}` : client.id;
      const wait = bucket?.take(bucketKey) ?? 0;
      // Refused 429, the assertion is not spent: the client sends it again after Retry-After (a
      // replayed one is refused all the same, here or, once refilled, as a replay below).
      if (wait > 0) throw new OAuthError('token_rate_limited', { retryAfter: wait });
      try {
        await spend();
      } catch (e) {
        // A replayed assertion (or the store down) spends none of the client's bucket: whoever
        // captured a used assertion cannot drain it.
        bucket?.refund(bucketKey);
        throw e;
      }
      failures.authenticated();
      const jkt = req.dpop === undefined ? undefined : await this.#dpop(req.dpop);
      const answer =
        grantType === 'client_credentials'
          ? await clientCredentials(ctx, client, req, jkt)
          : grantType === 'authorization_code'
            ? await authorizationCode(ctx, client, req, jkt)
            : grantType === 'refresh_token'
              ? await refresh(ctx, client, req, jkt)
              : await exchange(ctx, client, req, jkt);
      this.#countToken(grantType, undefined);
      return answer;
    } catch (e) {
      const error = asOAuthError(e);
      // Every refusal, also those a throttled window leaves unaudited.
      this.#countToken(grantType, error);
      const skipped = failures.refused(error, clientId !== undefined);
      // Within a throttled window of the address already on record: answered, not audited again.
      if (skipped === undefined) throw error;
      ctx.emit({
        kind: 'token.denied',
        decision: 'deny',
        reason: error.code,
        ...(clientId !== undefined ? { client_id: clientId } : {}),
        ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
        ...(req.remoteAddr !== undefined ? { remote_addr: req.remoteAddr } : {}),
        // The request's own value only when it is a grant type this service knows: anything else is
        // anonymous input of any size (the body limit), and may be a secret pasted in the wrong field.
        detail: {
          ...error.auditDetail,
          grant_type: grantType === undefined ? '' : SUPPORTED_GRANT_TYPES.has(grantType) ? grantType : 'unsupported',
          ...(skipped > 0 ? { refusals_not_audited: skipped } : {}),
        },
      });
      throw error;
    }
  }

  /**
   * Count one answer of the token endpoint. Labels from closed sets only: a grant type this service
   * knows (else `unsupported`, or `missing`), the stable reason code and the OAuth error.
   */
  #countToken(grantType: string | undefined, error: OAuthError | undefined): void {
    const grant =
      grantType === undefined || grantType === '' ? 'missing' : SUPPORTED_GRANT_TYPES.has(grantType) ? grantType : 'unsupported';
    const labels: TokenAnswerLabels =
      error === undefined
        ? { grant_type: grant, decision: 'allow', reason: 'ok', error: '' }
        : { grant_type: grant, decision: 'deny', reason: error.code, error: error.error };
    const key = `${labels.grant_type}\n${labels.reason}`;
    const e = this.#tokenAnswers.get(key);
    if (e !== undefined) e.n++;
    else this.#tokenAnswers.set(key, { labels, n: 1 });
  }

  /**
   * The token endpoint's answers since start (`tessera_token_service_token_requests_total`): each
   * set of labels with its count. `reason` is `ok` for a token issued, else the stable reason code
   * of the refusal (as its `token.denied` event says); `error` the OAuth error sent (`invalid_client`),
   * empty for a token issued. Refusals a throttled window leaves unaudited are counted too.
   */
  tokenAnswers(): readonly { readonly labels: TokenAnswerLabels; readonly n: number }[] {
    return [...this.#tokenAnswers.values()];
  }

  /** RFC 9449 §5: the proof key a token request asks its access token to be bound to. */
  #dpop(proof: string): Promise<string> {
    const now = this.#ctx.now();
    return checkTokenEndpointProof(proof, {
      url: this.endpoints.token,
      method: 'POST',
      now,
      iatWindow: 60,
      algorithms: this.#dpopAlgorithms,
      useOnce: (key, expiresAt) => this.store.useOnce(key, expiresAt, now),
      nonces: this.#dpopNonces,
    });
  }

  /**
   * With `token_service.dpop.nonce`, the nonce every token endpoint response carries in its
   * `DPoP-Nonce` header (RFC 9449 §8.2), successes included, so a client always holds one that is
   * accepted; `undefined` when nonces are off. A refusal for a missing or stale nonce carries it as
   * {@link OAuthError.dpopNonce} too.
   */
  dpopNonce(): string | undefined {
    return this.#dpopNonces?.current();
  }

  // The authorization endpoint (its HTTP side, the person's login and the consent page are in src/server/).

  /**
   * Check an authorization request (RFC 6749 §4.1.1 with OAuth 2.1's rules: PKCE S256 required,
   * exact redirect URI match, RFC 8707 resources). An error either carries the client's redirect
   * URI (send it back there) or does not (show it; the redirect URI is not trusted).
   */
  checkAuthorizationRequest(params: URLSearchParams): Promise<AuthorizeOutcome> {
    return checkAuthorizationRequest(this.#ctx, params);
  }

  /** Audit a person's sign-in at an upstream provider: where the chain from a person starts. */
  auditLoginSucceeded(
    subject: string,
    provider: string,
    facts: { readonly requestId?: string; readonly remoteAddr?: string; readonly auditSlots?: AuditSlots | undefined },
  ): void {
    this.#ctxFor(facts.auditSlots).emit({
      kind: 'login.succeeded',
      decision: 'allow',
      reason: 'ok',
      subject,
      ...(facts.requestId !== undefined ? { request_id: facts.requestId } : {}),
      ...(facts.remoteAddr !== undefined ? { remote_addr: facts.remoteAddr } : {}),
      detail: { provider },
    });
  }

  /**
   * Audit a person's sign-out (`<issuer>/oauth2/logout`): their login session ends here. `ended`:
   * this sign-out recorded the session as ended in the store ({@link endLoginSession}); with
   * `audit.on_queue_full: refuse` only then is its record kept past `audit.max_queue`. A sign-out
   * that ended nothing (a copy of a cookie already signed out, an authenticator keeping no
   * session) is kept while the queue has room and dropped (counted and told) once it has not.
   */
  auditSignedOut(subject: string, facts: { readonly requestId?: string; readonly remoteAddr?: string }, ended: boolean): void {
    this.#ctx.emit(
      {
        kind: 'login.signed_out',
        reason: 'ok',
        subject,
        ...(facts.requestId !== undefined ? { request_id: facts.requestId } : {}),
        ...(facts.remoteAddr !== undefined ? { remote_addr: facts.remoteAddr } : {}),
      },
      { revoked: ended },
    );
  }

  /**
   * Audit a sign-out that failed (`<issuer>/oauth2/logout`, the store failing as the session was
   * recorded as ended): `login.signed_out` with `decision: deny` and `reason` the error's code
   * (`store_unavailable`, `server_error`), with the subject when the session cookie named one.
   * Nothing was revoked: with `audit.on_queue_full: refuse` it is kept while the queue has room and
   * dropped (counted and told) once it has not, as the other events no request reserved a slot for.
   */
  auditSignOutFailed(
    reason: string,
    facts: { readonly subject?: string; readonly requestId?: string; readonly remoteAddr?: string },
  ): void {
    this.#ctx.emit({
      kind: 'login.signed_out',
      decision: 'deny',
      reason,
      ...(facts.subject !== undefined ? { subject: facts.subject } : {}),
      ...(facts.requestId !== undefined ? { request_id: facts.requestId } : {}),
      ...(facts.remoteAddr !== undefined ? { remote_addr: facts.remoteAddr } : {}),
    });
  }

  /**
   * Record a login session as ended (signed out at `<issuer>/oauth2/logout`), in the store every
   * instance shares: a `token` entry of the revocation log with the session's id, under the
   * login-session scope (no token's `iss`), kept until the session would have ended anyway.
   * Nothing is written for a session already recorded (a copy of its cookie signing out again),
   * also by sign-outs racing at several instances: the store appends the entry if absent.
   *
   * @returns whether this call ended the session: false when it was recorded as ended already, or
   *   by another sign-out of it in flight at the same time, at this instance or another sharing
   *   the store (of those, only the one whose entry the store appended says true).
   */
  async endLoginSession(sessionId: string, endsAt: number): Promise<boolean> {
    // Sign-outs at once with copies of one cookie at this instance: one check-and-append, not one
    // each (the store would add nothing for the others, but each would cost a write transaction).
    const pending = this.#endingSessions.get(sessionId);
    if (pending !== undefined) return pending.then(() => false);
    const ending = this.#endLoginSession(sessionId, endsAt).finally(() => this.#endingSessions.delete(sessionId));
    this.#endingSessions.set(sessionId, ending);
    return ending;
  }

  readonly #endingSessions = new Map<string, Promise<boolean>>();

  async #endLoginSession(sessionId: string, endsAt: number): Promise<boolean> {
    if (await this.loginSessionEnded(sessionId)) return false;
    const entry = {
      kind: 'token' as const,
      value: sessionId,
      issuer: loginSessionScope(this.issuer),
      at: this.#ctx.now(),
      expiresAt: endsAt + SKEW,
    };
    // Another instance's sign-out of it may have appended the entry since the check above: the
    // store says which of them did (the first to commit), and only that one ended the session.
    const appended = await this.store.appendRevocations([entry]);
    this.#feed.applyCommitted([entry]);
    return appended > 0;
  }

  /**
   * Spend the fresh sign-in that began the login session `sessionId` (made for one authorization
   * request with `prompt=login` or `max_age`): true the first time, false ever after, at any
   * instance sharing the store (its one-time identifiers, kept until `expiresAt`). One sign-in
   * answers its request once: a reload of the request, or its URL replayed, asks for another.
   */
  async spendFreshSignIn(sessionId: string, expiresAt: number): Promise<boolean> {
    return this.store.useOnce(`login-fresh:${sha256(sessionId)}`, expiresAt, this.#ctx.now());
  }

  /**
   * Whether the login session `sessionId` was signed out: read from the store itself (by the
   * revocation log's token index), so a sign-out at another instance, or one this instance has not
   * synced yet, counts at once.
   */
  async loginSessionEnded(sessionId: string): Promise<boolean> {
    if (
      this.revocations.isRevoked({
        issuer: loginSessionScope(this.issuer),
        subject: undefined,
        clientId: undefined,
        delegationId: undefined,
        tokenId: sessionId,
        issuedAt: undefined,
        expiresAt: Number.POSITIVE_INFINITY,
      })
    ) {
      return true;
    }
    return this.store.tokenRevoked(sessionId);
  }

  /** Audit a person's refusal (or a consent form refused before it could be answered). */
  auditAuthorizationDenied(
    reason: string,
    facts: {
      readonly subject?: string;
      readonly clientId?: string;
      readonly requestId?: string;
      readonly remoteAddr?: string;
      /** The request's slots ({@link TokenService.admitAudited}). */
      readonly auditSlots?: AuditSlots | undefined;
    },
    detail?: Readonly<Record<string, string | number | boolean>>,
  ): void {
    this.#ctxFor(facts.auditSlots).emit({
      kind: 'authorization.denied',
      decision: 'deny',
      reason,
      ...(facts.subject !== undefined ? { subject: facts.subject } : {}),
      ...(facts.clientId !== undefined ? { client_id: facts.clientId } : {}),
      ...(facts.requestId !== undefined ? { request_id: facts.requestId } : {}),
      ...(facts.remoteAddr !== undefined ? { remote_addr: facts.remoteAddr } : {}),
      ...(detail !== undefined ? { detail } : {}),
    });
  }

  /**
   * The person approved `request` on the consent page: the single-use code to send to the redirect
   * URI. With `authorization.remember_consent`, the approval is remembered for that long, bound to
   * the person's identity source (the authenticator's `source`).
   */
  async approveAuthorization(request: AuthorizationRequest, person: ApprovingPerson, extra: AuditFacts = {}): Promise<string> {
    const issued = await storeAuthorizationCode(this.#ctxFor(extra.auditSlots), request, person, extra);
    await rememberApproval(this.#ctx, request, person, tokenHash(issued.code));
    // Audited as approved only now: a failure to remember it is answered (and audited) as a refusal,
    // and the code, stored, is never delivered; approved and denied both would name a code nobody got.
    issued.audit();
    return issued.code;
  }

  /**
   * Approve `request` by `person` without the consent page when a remembered approval covers it
   * (`authorization.remember_consent`; never with `prompt=consent` among `params`): the code, audited
   * as approved by method `remembered` naming the page approval it came from; `undefined` when the
   * page must be shown.
   */
  async approveRemembered(
    request: AuthorizationRequest,
    person: ApprovingPerson,
    params: URLSearchParams,
    extra: AuditFacts = {},
  ): Promise<string | undefined> {
    const remembered = await rememberedApproval(this.#ctx, request, person, params);
    if (remembered === undefined) return undefined;
    return issueAuthorizationCode(this.#ctxFor(extra.auditSlots), request, person, {
      ...extra,
      remembered: { from: remembered.approvalHash, since: remembered.createdAt },
    });
  }

  // Revocation (RFC 7009) and introspection (RFC 7662).

  /**
   * RFC 7009: revoke a token the authenticated client holds. Unknown tokens and other clients'
   * tokens are left alone and still answered with success (§2.2). A refresh token takes its whole
   * family and every access token of its grant with it (§2.1).
   */
  revoke(req: OAuthRequest): Promise<void> {
    return revokeRequest(this.#ctx, req);
  }

  /**
   * RFC 7662: `{"active": false}` for anything invalid, expired, revoked, unknown, or not the
   * caller's business (a token neither issued to the caller nor addressed to one of its audiences).
   */
  introspect(req: OAuthRequest): Promise<Record<string, unknown>> {
    return introspectRequest(this.#ctxFor(req.auditSlots), req);
  }

  // Discovery.

  /** RFC 8414 authorization server metadata: exactly what this server supports. */
  metadata(): Record<string, unknown> {
    return metadata(
      this.endpoints,
      this.#scopes,
      {
        authorize: this.config.authorization.enabled,
        register: this.config.registration.enabled,
        freshLogin: this.config.authorization.oidc !== undefined,
      },
      [...this.#dpopAlgorithms],
    );
  }

  // Operator and admin operations (CLI, admin API).

  /**
   * Revoke grants (each with its subtree), push the revocations to this process's verifiers before
   * returning, and audit each revoked grant. For a subject, tokens of external issuers issued until
   * now are refused as subject tokens too, so the subject cannot simply exchange again. `reason` is
   * stored with each grant and written into grant.revoked: one holding a token is refused with
   * `OAuthError` `admin_revoke_reason_token`, nothing revoked; so is a subject's issuer that is
   * neither this one nor trusted and holds no grant of the subject here (`admin_revoke_issuer_unknown`).
   */
  revokeGrants(selector: GrantSelector, reason: string, by?: string): Promise<RevokedGrant[]> {
    return revokeGrants(this.#ctx, selector, reason, by);
  }

  /**
   * Operator revocation of an access token (no client check): its `jti` is revoked, and in the same
   * store transaction every grant exchanged from it (RFC 8693, as the subject or the actor token)
   * with its subtree, each audited as grant.revoked. The token's own grant, and grants exchanged
   * from its other tokens, are not. Returns the `jti`, the token's grant (so the caller can offer to
   * revoke the whole delegation subtree) and the grants revoked, or `undefined` when the token is
   * not one of this issuer's valid tokens.
   */
  revokeAccessToken(token: string, by?: string): Promise<AccessTokenRevocation | undefined> {
    return revokeAccessToken(this.#ctx, token, by);
  }

  /**
   * Operator revocation of a refresh token (no client check), as RFC 7009 §2.1 revokes it for its
   * client: its grant (the rotation family, and so every access token of it) with its subtree, each
   * audited as grant.revoked with `reason`, and the token as token.revoked by its hash. Returns the
   * grant and the grants newly revoked (none when it was revoked before), or `undefined` when the
   * token is no refresh token of this issuer or is expired.
   */
  revokeRefreshToken(token: string, reason: string, by?: string): Promise<RefreshTokenRevocation | undefined> {
    return revokeRefreshToken(this.#ctx, token, reason, by);
  }

  /**
   * Leak response (`tessera scan`): the finding `candidate` is when it is one of this issuer's
   * tokens (an access token verified under any key the store holds, with this issuer's `iss`; a
   * refresh token whose hash is stored), with its state now; `undefined` for anything else.
   */
  identifyLeak(candidate: string): Promise<LeakedToken | undefined> {
    return identifyLeak(this.#ctx, candidate);
  }

  /**
   * Revoke a leaked token found by {@link TokenService.identifyLeak}: its `jti`, or with `grant`
   * its delegation subtree; a refresh token's family. Audited with reason `leak_detected` and
   * `location` (where it was found).
   */
  revokeLeak(token: string, leak: LeakedToken, options: { grant: boolean; location: string }): Promise<LeakRevocation> {
    return revokeLeak(this.#ctx, token, leak, options);
  }

  /**
   * An operator's key rotation (`tessera keys rotate`): {@link KeyManager.rotate}, audited as one
   * `key.rotated` event, reason `operator`, with the new key's `kid` and `alg`, whether it signs at
   * once (`immediate`) and `by` (as a rotation by `keys.rotation_interval` is, reason
   * `rotation_interval`). A rotation refused writes no key and no event.
   */
  async rotateSigningKey(options: Parameters<KeyManager['rotate']>[0] = {}, by?: string): Promise<SigningKeyRecord> {
    const record = await this.keys.rotate(options);
    this.#ctx.emit({
      kind: 'key.rotated',
      reason: 'operator',
      detail: { ...(by !== undefined ? { by } : {}), kid: record.kid, alg: record.alg, immediate: options.immediate === true },
    });
    return record;
  }

  /**
   * A grant's ancestors and subtree, for `tessera grants tree` and the admin API: at most
   * {@link GRANT_TREE_MAX_NODES} of each (the first of the subtree in tree order, the nearest
   * ancestors), with `truncated` when either had more. The store reads no more than that.
   */
  async grantTree(id: string): Promise<GrantTree | undefined> {
    const max = GRANT_TREE_MAX_NODES;
    const subtree = await this.store.grantSubtree(id, max + 1);
    if (subtree.length === 0) return undefined;
    const ancestors = await this.store.grantAncestors(id, max + 1);
    const truncated = subtree.length > max || ancestors.length > max;
    // The nearest ancestors are kept: those farthest up (root first) are dropped.
    return { ancestors: ancestors.slice(-max), subtree: subtree.slice(0, max), truncated };
  }

  /**
   * Check an admin API bearer token: one of this issuer's valid tokens, for the admin audience and
   * no other, with the admin scope.
   * @throws {OAuthError} `invalid_token` (401), `insufficient_scope` (403), or `invalid_request`
   *   (400) with `extra.headerFault`.
   */
  authorizeAdmin(
    authorization: string | undefined,
    extra: AuditFacts & {
      /** The request carried more than one Authorization header: refused here and audited. */
      readonly headerFault?: 'request_multiple_authorization' | undefined;
    } = {},
  ): AdminCaller {
    let own: OwnToken | undefined;
    const refuse = (code: AdminRefusal): never => this.#refuseAdmin(code, own !== undefined ? callerOf(own) : undefined, extra);
    if (extra.headerFault !== undefined) return refuse(extra.headerFault);
    const m = authorization === undefined ? null : ADMIN_BEARER.exec(authorization);
    if (!m) return refuse(authorization === undefined ? 'admin_token_missing' : 'admin_token_invalid');
    own = this.#tokens.verify(m[1] as string);
    if (own === undefined || own.exp <= this.#ctx.now() || this.#tokens.isRevoked(own)) return refuse('admin_token_invalid');
    // A DPoP-bound token is worthless without a proof of its key, and this API takes Bearer only (RFC 9449 §7.1).
    if (own.jkt !== undefined) return refuse('admin_token_invalid');
    if (!own.audiences.includes(this.config.adminAudience)) return refuse('admin_token_invalid');
    // Granted by name only: a client given `*` (or `tessera:*`) for an API's scopes is not thereby
    // an administrator of this service, nor one whose scope merely implies it.
    if (!own.scopes.includes(this.config.admin.scope)) return refuse('admin_scope_missing');
    // For the admin audience alone (RFC 8707 §2, RFC 9068 §3): a token also for an API was handed
    // to it, and that API (or whoever compromised it) could replay it here. Issuance no longer
    // mints one; this refuses those issued before, and any other issuer path that would.
    if (own.audiences.some((a) => a !== this.config.adminAudience)) return refuse('admin_token_audience_shared');
    return callerOf(own);
  }

  /**
   * {@link TokenService.authorizeAdmin} (what the admin API runs), after reading the keys from the
   * store again when the token names a key this instance has not loaded (at most once a second):
   * another instance may have rotated one in at once (`tessera keys rotate --now`) and signed the
   * admin token with it, which `authorizeAdmin` alone would refuse as invalid until the next sync.
   * Then the store decides whether the token still stands: revoked (by `jti` or through its grant),
   * or its client disabled or removed, by another process since the last sync, it is refused as
   * `admin_token_invalid` at once (three indexed reads per admin request).
   * @throws {OAuthError} as `authorizeAdmin` does (the promise is rejected).
   */
  async authorizeAdminFresh(
    authorization: string | undefined,
    extra: Parameters<TokenService['authorizeAdmin']>[1] = {},
  ): Promise<AdminCaller> {
    const m = authorization === undefined || extra.headerFault !== undefined ? null : ADMIN_BEARER.exec(authorization);
    if (m) await this.#tokens.verifyFresh(m[1] as string);
    const who = this.authorizeAdmin(authorization, extra);
    // The store's answer, as introspection's: another process (`tessera revoke`, `tessera clients
    // disable|remove`, another instance) may have revoked this token or its grant, or disabled or
    // removed its client, since the last sync, and the admin API is no place to wait for it.
    const now = this.#ctx.now();
    let grant: GrantRecord | undefined;
    let revoked: boolean;
    let client: ClientRecord | undefined;
    try {
      [grant, revoked, client] = await Promise.all([
        this.store.getGrant(who.grantId),
        this.store.tokenRevoked(who.jti),
        this.store.getClient(who.clientId),
      ]);
    } catch (e) {
      // Unconfirmed is refused (503, or 500), and on record as the token endpoint's store failures
      // are: the event waits in the audit queue, retried until the store takes it again.
      const code = asOAuthError(e).code === 'store_unavailable' ? 'store_unavailable' : 'server_error';
      return this.#refuseAdmin(code, who, extra, e);
    }
    const grantLive = grant !== undefined && grant.revokedAt === null && (grant.expiresAt === null || grant.expiresAt > now);
    if (!grantLive || revoked || client === undefined || client.disabled) this.#refuseAdmin('admin_token_invalid', who, extra);
    return who;
  }

  /**
   * Audit an admin API refusal of its Bearer token as `admin.denied`, and throw it (with `cause`,
   * the store's failure that left the token unconfirmed: the log gets it, the caller the RFC error).
   */
  #refuseAdmin(code: AdminRefusal, who: AdminCaller | undefined, extra: AuditFacts, cause?: unknown): never {
    // Every refusal is audited: probing the admin API with stolen or under-scoped tokens leaves a
    // trail naming the token's subject and client when it is authentic (never the token).
    this.#ctxFor(extra.auditSlots).emit({
      kind: 'admin.denied',
      decision: 'deny',
      reason: code,
      ...(who !== undefined ? adminActor(who) : {}),
      ...(extra.requestId !== undefined ? { request_id: extra.requestId } : {}),
      ...(extra.remoteAddr !== undefined ? { remote_addr: extra.remoteAddr } : {}),
    });
    if (cause !== undefined) throw new OAuthError(code, { cause });
    throw code === 'admin_scope_missing' ? new OAuthError(code, { scope: this.config.admin.scope }) : new OAuthError(code);
  }

  /**
   * Audit an admin API request {@link TokenService.authorizeAdmin} let through, as `admin.action`:
   * who (the admin token's subject, client and `jti`), what (`detail`: the action, what it named,
   * how many grants or tokens it revoked) and how it ended (`ok` or the refusal's code). A
   * revocation that matched no grant still wrote the subject's or client's entries: it is on
   * record like any other.
   */
  auditAdminAction(who: AdminCaller, facts: AuditFacts, reason: string, detail: Readonly<Record<string, string | number>>): void {
    this.#ctxFor(facts.auditSlots).emit({
      kind: 'admin.action',
      decision: reason === 'ok' ? 'allow' : 'deny',
      reason,
      ...adminActor(who),
      ...(facts.requestId !== undefined ? { request_id: facts.requestId } : {}),
      ...(facts.remoteAddr !== undefined ? { remote_addr: facts.remoteAddr } : {}),
      detail: recordable(detail),
    });
  }

  /**
   * Audit an operator's revocation from the command line (`tessera revoke`) as `admin.action` with
   * `detail.by` `cli` (no admin token: no subject, client or `jti`), what it named and how many
   * grants (or tokens) it revoked, `ok` or the refusal's code, as the admin API's requests are.
   */
  auditCliAction(reason: string, detail: Readonly<Record<string, string | number>>): void {
    this.#ctx.emit({
      kind: 'admin.action',
      decision: reason === 'ok' ? 'allow' : 'deny',
      reason,
      detail: { by: 'cli', ...recordable(detail) },
    });
  }

  /**
   * RFC 7591 dynamic registration (`/oauth2/register`): `metadata` is the parsed JSON body,
   * `authorization` the request's header (the initial access token, unless registration is open).
   * @throws {OAuthError}
   */
  async registerDynamicClient(
    metadata: unknown,
    authorization: string | undefined,
    extra: AuditFacts & {
      /** The HTTP body was not JSON, or named a member twice: refused here, rate-limited and audited. */
      readonly bodyFault?: 'registration_metadata_invalid' | 'registration_metadata_member_repeated';
      /** The request carried more than one Authorization header: refused here, rate-limited and audited. */
      readonly headerFault?: 'request_multiple_authorization' | undefined;
      /**
       * The HTTP adapter refused the request before reading its body (a method other than POST,
       * another Content-Type or charset, a Content-Encoding other than identity, a body over the
       * limit, a CORS preflight from an origin not allowed): refused here and audited, before the rate limit (it registers nothing and costs no
       * secret comparison).
       */
      readonly requestFault?:
        | 'request_method_not_allowed'
        | 'request_query_not_allowed'
        | 'request_content_type_json'
        | 'request_content_encoding'
        | 'request_not_utf8'
        | 'request_body_too_large'
        | 'client_closed'
        | 'request_body_invalid'
        | 'request_timeout'
        | 'cors_origin_not_allowed'
        | 'request_framing_invalid';
    } = {},
  ): Promise<RegistrationResponse> {
    try {
      if (extra.requestFault !== undefined) throw new OAuthError(extra.requestFault);
      // Before the initial access token is checked: a flood is refused whether or not it guesses.
      const wait = this.#registrations.take(registrantKey(extra.remoteAddr));
      if (wait > 0) throw new OAuthError('registration_rate_limited', { retryAfter: wait });
      if (extra.headerFault !== undefined) throw new OAuthError(extra.headerFault);
      if (extra.bodyFault !== undefined) throw new OAuthError(extra.bodyFault);
      return await registerDynamicClient(this.#ctxFor(extra.auditSlots), metadata, authorization);
    } catch (e) {
      const error = asOAuthError(e);
      this.#ctxFor(extra.auditSlots).emit({
        kind: 'client.registration_denied',
        decision: 'deny',
        reason: error.code,
        ...(extra.requestId !== undefined ? { request_id: extra.requestId } : {}),
        ...(extra.remoteAddr !== undefined ? { remote_addr: extra.remoteAddr } : {}),
      });
      throw error;
    }
  }

  /**
   * Register a client; the secret (for secret clients) is returned once and never stored. `by`
   * (`cli`, `init`) is recorded in `client.created`.
   * @throws {ClientInputError} naming every problem of the input (`problems`), nothing written.
   */
  registerClient(input: ClientInput, by?: string): Promise<{ client: CompiledClient; secret: string | undefined }> {
    return registerClient(this.#ctx, input, by !== undefined ? { by } : {});
  }

  /** Every problem {@link TokenService.registerClient} would refuse `input` for, writing nothing. */
  clientInputProblems(input: ClientInput): ClientInputError[] {
    return clientInputProblems(this.#ctx, input);
  }

  /**
   * Change a registered client: today whether token exchange may re-target audiences. Applies at
   * once in this process, and in running servers on their next sync (`sync_interval`); affects new
   * requests only, not grants and tokens already issued. A change is audited as `client.updated`.
   *
   * @example
   * ```ts
   * const r = await service.updateClient('broker', { retargetAudiences: true }, 'cli');
   * if (r === undefined) console.error('no such client');
   * else console.log(r.changed); // ['exchange_retarget_audiences'], or [] when it already was
   * ```
   * @returns the client as stored and the names of the fields changed, or `undefined` when there is
   *   no such client.
   */
  updateClient(id: string, update: ClientUpdate, by?: string): Promise<{ client: ClientRecord; changed: string[] } | undefined> {
    return updateClient(this.#ctx, id, update, by);
  }

  /**
   * Disable (or re-enable) a client; disabling revokes its live grants. One already so is not
   * written and audits no `client.updated` (`changed: false`).
   */
  setClientDisabled(id: string, disabled: boolean, by?: string): Promise<{ revoked: RevokedGrant[]; changed: boolean } | undefined> {
    return setClientDisabled(this.#ctx, id, disabled, by);
  }

  /** Remove a client after revoking its live grants (grants stay as history). */
  removeClient(id: string, by?: string): Promise<{ revoked: RevokedGrant[] } | undefined> {
    return removeClient(this.#ctx, id, by);
  }

  /**
   * Development: mint a token for a registered client without authenticating it, as
   * client_credentials would, or, with `subject`, as a root grant for that subject (to try
   * delegation chains without an identity provider).
   */
  mint(options: MintOptions): Promise<TokenResponse & { grant_id: string; jti: string }> {
    return mint(this.#ctx, options);
  }

  /** Operator token exchange for a registered client, without client authentication. */
  async exchangeAs(clientId: string, params: URLSearchParams): Promise<TokenResponse> {
    const client = await this.clients.get(clientId);
    if (client === undefined) throw new OAuthError('client_unknown');
    if (client.record.disabled) throw new OAuthError('client_disabled');
    // As at the token endpoint (RFC 9449 §5.2): no proof here, so no token for a DPoP-bound client.
    if (client.record.dpopBoundAccessTokens) throw new OAuthError('client_dpop_proof_required');
    checkRepeats(params);
    return exchange(this.#ctx, client, { params, authorization: undefined, endpointUrl: this.endpoints.token }, undefined);
  }

  /**
   * The in-process {@link UpstreamTokenIssuer} for the gateway: an exchange in which the gateway's
   * own client (`clientId`, registered with the upstream audiences and the token-exchange grant)
   * is the actor, the verified caller the subject, and the caller's chain nests under it.
   */
  upstreamIssuer(clientId: string): UpstreamTokenIssuer {
    const ctx = this.#ctx;
    if (!this.#auditRefuse) return { issueForUpstream: (request) => issueForUpstream(ctx, clientId, request) };
    // audit.on_queue_full: refuse: a mint is admitted as a token request is, with the slot of its
    // token.exchanged reserved (its refusals are the gateway's to audit), or refused with
    // `audit_unavailable` (the gateway answers 502 upstream_credential_unavailable).
    return {
      issueForUpstream: async (request) => {
        const slots = this.admitAudited(1);
        try {
          return await issueForUpstream(
            { ...ctx, emit: (e: AuditDraft, o?: EmitOptions) => (slots === undefined ? ctx.emit(e, o) : slots.push(this.#stamp(e))) },
            clientId,
            request,
          );
        } finally {
          slots?.release();
        }
      },
    };
  }
}
