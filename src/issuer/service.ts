/**
 * The token service core: grant types, revocation, introspection, metadata and the admin
 * operations, over the store contract and nothing else (no HTTP server, no database driver). The
 * HTTP adapter (`src/server/`) turns requests into {@link OAuthRequest}s and results into
 * responses; the CLI calls the operator methods directly.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { BatchingAuditSink } from '../audit/batching.ts';
import type { AuditEvent } from '../audit/event.ts';
import { uuidv7 } from '../audit/id.ts';
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import { ASYMMETRIC_ALGORITHMS, type JwsAlgorithm } from '../core/jose/algorithms.ts';
import { decodeJsonSegment, KEY_REFERENCE_HEADERS, splitCompact } from '../core/jose/compact.ts';
import type { JsonObject } from '../core/jose/json.ts';
import { OAuthError, type OAuthErrorCode } from '../core/oauth-errors.ts';
import type { Clock, KeySource, UpstreamTokenIssuer } from '../core/ports.ts';
import { compileScopes, type EffectiveScopes, isWildcard, type ScopeCatalog, type ScopeModel } from '../core/scopes.ts';
import { BoundedMap } from '../core/verify/bounded-map.ts';
import type { Principal } from '../core/verify/principal.ts';
import { RevocationList } from '../core/verify/revocation.ts';
import type { VerifyResult } from '../core/verify/verifier.ts';
import type { GrantKind, GrantRecord, GrantSelector, RevokedGrant, Store } from '../store/contract.ts';
import { buildClient, type ClientInput, ClientInputError, ClientRegistry, type CompiledClient, SCOPE_TOKEN } from './clients.ts';
import { checkTokenEndpointProof } from './dpop.ts';
import { KeyManager } from './keys.ts';
import { RevocationFeed } from './revocation-feed.ts';
import { createSecretHasher, type MasterKey, REFRESH_TOKEN_PREFIX, randomSecret, type SecretHasher, sha256, tokenHash } from './secrets.ts';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SUBJECT_TOKEN_TYPES = new Set([ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]);
/** Parameters that may repeat (RFC 8707 §2, RFC 8693 §2.1); every other one must not (RFC 6749 §3.2). */
const MULTI_VALUED = new Set(['audience', 'resource']);
const SKEW = 60;
const MAX_TOKEN_SIZE = 8192;
/**
 * How long a client-credentials standing grant is reused for new tokens. It then expires (once its
 * last token has), is replaced by a fresh one, and is pruned after `grant_retention` like any grant.
 */
const STANDING_GRANT_LIFETIME = 86_400;
/** Most standing grants remembered per process (one per client, scope set and audience set). */
const STANDING_CACHE_SIZE = 4096;

/** A token-service request, as the HTTP adapter (or a test) hands it over. */
export interface OAuthRequest {
  /** The form body (`application/x-www-form-urlencoded`). */
  readonly params: URLSearchParams;
  readonly authorization: string | undefined;
  /** Absolute URL of the endpoint called. */
  readonly endpointUrl: string;
  readonly requestId?: string | undefined;
  readonly remoteAddr?: string | undefined;
  /** The `DPoP` header (RFC 9449), when the client asks for a sender-constrained token. */
  readonly dpop?: string | undefined;
}

/** A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1). */
export interface TokenResponse {
  readonly access_token: string;
  /** `DPoP` when the token is bound to the proof key (`cnf.jkt`). */
  readonly token_type: 'Bearer' | 'DPoP';
  readonly expires_in: number;
  readonly scope?: string;
  readonly refresh_token?: string;
  readonly issued_token_type?: string;
}

/** The endpoint URLs, derived from the issuer. */
export interface Endpoints {
  readonly issuer: string;
  readonly metadata: string;
  readonly token: string;
  readonly revocation: string;
  readonly introspection: string;
  readonly jwks: string;
  readonly admin: string;
}

export function endpointsFor(issuer: string): Endpoints {
  const u = new URL(issuer);
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/+$/, '');
  return {
    issuer,
    // RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
    metadata: `${u.origin}/.well-known/oauth-authorization-server${path}`,
    token: `${issuer}/oauth2/token`,
    revocation: `${issuer}/oauth2/revoke`,
    introspection: `${issuer}/oauth2/introspect`,
    jwks: `${issuer}/.well-known/jwks.json`,
    admin: `${issuer}/oauth2/admin`,
  };
}

/** A token this service issued, after its signature and type were checked. */
interface OwnToken {
  readonly kid: string;
  readonly alg: JwsAlgorithm;
  readonly claims: JsonObject;
  readonly subject: string;
  readonly clientId: string;
  readonly jti: string;
  readonly exp: number;
  readonly iat: number;
  readonly grantId: string;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly act: JsonObject | null;
  /** RFC 9449 `cnf.jkt`, when the token is sender-constrained. */
  readonly jkt: string | undefined;
}

/** The facts about a subject (or actor) token that delegation decides on. */
interface Party {
  readonly issuer: string;
  readonly subject: string;
  readonly scopes: readonly string[];
  /** Epoch seconds; no token derived from it outlives this. */
  readonly exp: number;
  readonly act: JsonObject | null;
  /** The grant the token belongs to, when this service issued it. */
  readonly grantId: string | null;
  readonly mayAct: unknown;
  /** The subject token's `cnf.jkt`: the exchange must prove possession of that key. */
  readonly jkt: string | undefined;
  /** The client the token was issued to (`client_id`), when it names one. */
  readonly clientId: string | undefined;
  /** The token's audiences when this service issued it; `undefined` for an external token. */
  readonly ownAudiences: readonly string[] | undefined;
}

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
  /** Key source for a client's `jwks_uri`. */
  readonly remoteKeys?: ((uri: string) => KeySource) | undefined;
  /** Share a revocation list with verifiers built elsewhere (default: a new one). */
  readonly revocations?: RevocationList;
  /** Epoch milliseconds. */
  readonly clock?: Clock;
  /** Told about background failures (sync, audit writes). Never a token or secret. */
  readonly onWarning?: (message: string) => void;
  /** Most client-credentials standing grants remembered (default 4096; oldest evicted first). */
  readonly standingGrantCacheSize?: number;
}

/** Grant ids are time-ordered, so the store's index inserts append instead of scattering. */
function newGrantId(): string {
  return `g_${uuidv7()}`;
}

function chainOf(act: unknown): string[] {
  const chain: string[] = [];
  let cur = act as JsonObject | undefined;
  while (cur && typeof cur === 'object' && chain.length < 64) {
    chain.push(String(cur.sub));
    cur = cur.act as JsonObject | undefined;
  }
  return chain;
}

/** True when `granted` covers `scope`, including a wildcard scope requested as such. */
function covers(granted: EffectiveScopes, scope: string): boolean {
  if (!isWildcard(scope)) return granted.has(scope);
  return granted.wildcards.some((w) => w === '*' || scope.startsWith(w.slice(0, -1)));
}

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
  readonly #scopes: ScopeModel;
  readonly #hasher: SecretHasher | undefined;
  readonly #feed: RevocationFeed;
  readonly #clock: Clock;
  readonly #external: TokenServiceOptions['externalVerifier'];
  readonly #externalMaxLifetime: number;
  readonly #warn: (message: string) => void;
  readonly #own = new BoundedMap<string, OwnToken>(10_000);
  /** Standing grants by client, sorted scope set and sorted audience set; bounded (oldest evicted first). */
  readonly #standing: BoundedMap<string, { readonly id: string; readonly expiresAt: number }>;
  #versions = { keys: -1, clients: -1, revocations: -1 };
  #timer: NodeJS.Timeout | undefined;
  #lastPrune = 0;
  #syncing: Promise<void> | undefined;

  constructor(options: TokenServiceOptions) {
    const { config, store } = options;
    this.config = config;
    this.store = store;
    this.issuer = config.issuer;
    this.endpoints = endpointsFor(config.issuer);
    this.#clock = options.clock ?? Date.now;
    this.#warn = options.onWarning ?? (() => {});
    this.#external = options.externalVerifier;
    this.#externalMaxLifetime = options.externalMaxLifetime ?? 86_400;
    this.#standing = new BoundedMap(options.standingGrantCacheSize ?? STANDING_CACHE_SIZE);
    const { model, issues } = compileScopes(options.scopes, 'scopes');
    if (issues.length > 0) throw new TypeError(`invalid scope catalogue: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    this.#scopes = model;
    this.#hasher = options.master ? createSecretHasher(options.master) : undefined;
    this.keys = new KeyManager({
      store,
      master: options.master,
      now: () => this.#now(),
      schedule: {
        algorithm: config.keys.algorithm,
        publishAhead: config.keys.publish_ahead,
        jwksMaxAge: config.keys.jwks_max_age,
        maxTokenTtl: config.max_access_token_ttl,
        rotationInterval: config.keys.rotation_interval,
      },
    });
    this.revocations = options.revocations ?? new RevocationList();
    this.#feed = new RevocationFeed(store, this.revocations, this.issuer, (ids) => this.#forgetStanding(ids));
    this.clients = new ClientRegistry({
      store,
      hasher: this.#hasher,
      scopes: model,
      remoteKeys: options.remoteKeys,
      assertionAudience: this.issuer,
      assertionMaxLifetime: config.client_assertion_max_lifetime,
      now: () => this.#now(),
    });
    this.audit = new BatchingAuditSink(
      { write: (events) => store.appendAudit(events) },
      {
        flushIntervalMs: Math.max(1, config.audit_flush_interval * 1000),
        onError: () => this.#warn('audit events could not be written to the store; retrying'),
      },
    );
  }

  #now(): number {
    return Math.floor(this.#clock() / 1000);
  }

  // Lifecycle.

  /** Load keys and revocations, then keep them in sync with the store every `sync_interval`. */
  async start(options: { background?: boolean } = {}): Promise<void> {
    await this.sync();
    if (options.background === false) return;
    this.#timer = setInterval(() => {
      this.sync().catch(() => this.#warn('store sync failed; keeping the last known keys, clients and revocations'));
    }, this.config.sync_interval * 1000);
    this.#timer.unref();
  }

  /**
   * Read what other processes changed: keys (re-read on a version change, and switched on at their
   * activation time), clients (cache dropped on a version change), revocations (replayed).
   */
  sync(): Promise<void> {
    this.#syncing ??= (async () => {
      try {
        const v = await this.store.versions();
        if (v.keys !== this.#versions.keys) await this.keys.reload();
        if (v.clients !== this.#versions.clients) {
          this.clients.invalidate();
          this.#standing.clear();
        }
        if (v.revocations !== this.#versions.revocations) await this.#feed.catchUp(this.#now());
        this.#versions = v;
        if (this.#hasher !== undefined) {
          const { rotated, removed } = await this.keys.maintain();
          if (rotated) this.#emit({ kind: 'key.rotated', reason: 'rotation_interval', detail: { kid: rotated.kid } });
          for (const kid of removed) this.#emit({ kind: 'key.rotated', reason: 'key_expired', detail: { removed: kid } });
        }
        const now = this.#now();
        if (now - this.#lastPrune >= 60) {
          this.#lastPrune = now;
          await this.store.prune(now, { grantsExpiredBefore: now - this.config.grant_retention });
          this.revocations.prune(now);
        }
      } finally {
        this.#syncing = undefined;
      }
    })();
    return this.#syncing;
  }

  /** Stop syncing and flush the audit queue. Does not close the store (its owner does). */
  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#syncing?.catch(() => {});
    await this.audit.close();
  }

  // Audit.

  #emit(e: Omit<AuditEvent, 'id' | 'time' | 'decision'> & { decision?: AuditEvent['decision'] }): void {
    const time = this.#clock();
    this.audit.push({ id: uuidv7(time), time, decision: 'allow', issuer: this.issuer, ...e });
  }

  // Helpers shared by the grant types.

  /** A parameter's single value; empty counts as absent (RFC 6749 §3.1). */
  #param(params: URLSearchParams, name: string): string | undefined {
    const v = params.get(name);
    return v === null || v === '' ? undefined : v;
  }

  #required(params: URLSearchParams, name: string): string {
    const v = this.#param(params, name);
    if (v === undefined) throw new OAuthError('request_parameter_missing');
    return v;
  }

  #checkRepeats(params: URLSearchParams): void {
    const seen = new Set<string>();
    for (const name of params.keys()) {
      if (seen.has(name) && !MULTI_VALUED.has(name)) throw new OAuthError('request_parameter_repeated');
      seen.add(name);
    }
  }

  /** Parse a `scope` parameter; `undefined` when absent. */
  #parseScope(value: string | undefined): string[] | undefined {
    if (value === undefined) return undefined;
    const list = value.split(' ').filter((s) => s !== '');
    if (list.length === 0) return undefined;
    for (const s of list) if (!SCOPE_TOKEN.test(s)) throw new OAuthError('scope_malformed');
    return [...new Set(list)];
  }

  /** Requested scopes within every ceiling, or `invalid_scope`. */
  #narrowScopes(requested: readonly string[], ceilings: readonly EffectiveScopes[]): readonly string[] {
    for (const s of requested) for (const c of ceilings) if (!covers(c, s)) throw new OAuthError('scope_not_allowed');
    return requested;
  }

  /**
   * The audiences requested through `audience` (RFC 8693) and `resource` (RFC 8707), each within
   * `allowed`; when none is requested, the only allowed one, else `invalid_target`.
   */
  #targets(params: URLSearchParams, allowed: ReadonlySet<string> | readonly string[]): string[] {
    const requested = new Set<string>();
    for (const a of params.getAll('audience')) if (a !== '') requested.add(a);
    for (const r of params.getAll('resource')) {
      if (r === '') continue;
      // RFC 8707 §2: an absolute URI without a fragment.
      if (!URL.canParse(r) || r.includes('#')) throw new OAuthError('target_invalid');
      requested.add(r);
    }
    const list = [...allowed];
    if (requested.size === 0) {
      if (list.length === 1) return list;
      throw new OAuthError('target_required');
    }
    const set = allowed instanceof Set ? allowed : new Set(list);
    for (const r of requested) if (!set.has(r)) throw new OAuthError('target_not_allowed');
    return [...requested];
  }

  #ttl(client: CompiledClient): number {
    return Math.min(client.record.accessTokenTtl ?? this.config.access_token_ttl, this.config.max_access_token_ttl);
  }

  #requireGrantType(client: CompiledClient, grantType: string): void {
    if (!client.grantTypes.has(grantType)) throw new OAuthError('grant_type_not_allowed');
  }

  /** Sign an RFC 9068 access token. */
  #sign(spec: {
    readonly client: CompiledClient | { readonly id: string };
    readonly subject: string;
    readonly audiences: readonly string[];
    readonly scopes: readonly string[];
    readonly act: JsonObject | null;
    readonly grantId: string;
    readonly now: number;
    readonly exp: number;
    readonly jkt?: string | undefined;
  }): { token: string; jti: string } {
    const signer = this.keys.signer(spec.now);
    if (signer === undefined) throw new OAuthError('signing_key_unavailable');
    const jti = randomUUID();
    const claims: Record<string, unknown> = {
      iss: this.issuer,
      sub: spec.subject,
      aud: spec.audiences.length === 1 ? spec.audiences[0] : spec.audiences,
      exp: spec.exp,
      iat: spec.now,
      jti,
      client_id: spec.client.id,
    };
    if (spec.scopes.length > 0) claims.scope = spec.scopes.join(' ');
    if (spec.act !== null) claims.act = spec.act;
    claims.grant_id = spec.grantId;
    if (spec.jkt !== undefined) claims.cnf = { jkt: spec.jkt };
    return { token: signer.sign(JSON.stringify(claims)), jti };
  }

  /**
   * Check a token this service issued: size, compact form, header (`typ` at+jwt, a published key,
   * no key references), signature, issuer and claim types. Expiry and revocation are checked by
   * the caller, because revocation and introspection treat them differently.
   */
  #verifyOwn(token: string): OwnToken | undefined {
    if (token.length > MAX_TOKEN_SIZE) return undefined;
    const hash = sha256(token);
    const hit = this.#own.get(hash);
    // A cached token is still re-checked against the key set: its key may have been unpublished.
    if (hit !== undefined) return typeof this.keys.lookup(hit.kid, hit.alg) === 'string' ? undefined : hit;
    const split = splitCompact(token);
    if (!split) return undefined;
    const header = decodeJsonSegment(token.slice(0, split.dot1));
    if (!header || header.typ !== 'at+jwt' || header.crit !== undefined) return undefined;
    if (KEY_REFERENCE_HEADERS.some((h) => header[h] !== undefined)) return undefined;
    const { alg, kid } = header;
    if (typeof kid !== 'string' || typeof alg !== 'string' || !ASYMMETRIC_ALGORITHMS.includes(alg as JwsAlgorithm)) return undefined;
    const key = this.keys.lookup(kid, alg as JwsAlgorithm);
    if (typeof key === 'string') return undefined;
    const check = key.checks.get(alg as JwsAlgorithm);
    if (!check?.(Buffer.from(token.slice(0, split.dot2), 'latin1'), Buffer.from(token.slice(split.dot2 + 1), 'base64url'))) {
      return undefined;
    }
    const claims = decodeJsonSegment(token.slice(split.dot1 + 1, split.dot2));
    if (!claims || claims.iss !== this.issuer) return undefined;
    const { sub, client_id, jti, exp, iat, grant_id, scope, aud, act } = claims;
    if (typeof sub !== 'string' || typeof client_id !== 'string' || typeof jti !== 'string' || typeof grant_id !== 'string')
      return undefined;
    if (typeof exp !== 'number' || typeof iat !== 'number') return undefined;
    if (scope !== undefined && typeof scope !== 'string') return undefined;
    const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.every((a) => typeof a === 'string') ? aud : undefined;
    if (audiences === undefined) return undefined;
    if (act !== undefined && (typeof act !== 'object' || act === null || Array.isArray(act))) return undefined;
    const cnf = claims.cnf as JsonObject | undefined;
    if (cnf !== undefined && (typeof cnf !== 'object' || cnf === null || typeof cnf.jkt !== 'string')) return undefined;
    const own: OwnToken = {
      kid,
      alg: alg as JwsAlgorithm,
      claims,
      subject: sub,
      clientId: client_id,
      jti,
      exp,
      iat,
      grantId: grant_id,
      scopes: scope === undefined || scope === '' ? [] : scope.split(' '),
      audiences,
      act: (act as JsonObject | undefined) ?? null,
      jkt: cnf?.jkt as string | undefined,
    };
    this.#own.set(hash, own);
    return own;
  }

  #isRevoked(t: OwnToken): boolean {
    return this.revocations.isRevoked({
      issuer: this.issuer,
      subject: t.subject,
      clientId: t.clientId,
      delegationId: t.grantId,
      tokenId: t.jti,
      issuedAt: t.iat,
      expiresAt: t.exp,
    });
  }

  // The token endpoint.

  /**
   * Handle a token request (RFC 6749 §4.4, §6; RFC 8693).
   * @throws {OAuthError}
   */
  async token(req: OAuthRequest): Promise<TokenResponse> {
    let clientId: string | undefined;
    const grantType = req.params.get('grant_type') ?? undefined;
    try {
      this.#checkRepeats(req.params);
      if (grantType === undefined || grantType === '') throw new OAuthError('request_parameter_missing');
      if (grantType !== 'client_credentials' && grantType !== 'refresh_token' && grantType !== TOKEN_EXCHANGE) {
        throw new OAuthError('grant_type_unsupported');
      }
      const client = await this.clients.authenticate(req);
      clientId = client.id;
      const jkt = req.dpop === undefined ? undefined : await this.#dpop(req.dpop);
      if (grantType === 'client_credentials') return await this.#clientCredentials(client, req, jkt);
      if (grantType === 'refresh_token') return await this.#refresh(client, req, jkt);
      return await this.#exchange(client, req, jkt);
    } catch (e) {
      const error = e instanceof OAuthError ? e : new OAuthError('server_error', { cause: e });
      this.#emit({
        kind: 'token.denied',
        decision: 'deny',
        reason: error.code,
        ...(clientId !== undefined ? { client_id: clientId } : {}),
        ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
        ...(req.remoteAddr !== undefined ? { remote_addr: req.remoteAddr } : {}),
        detail: { grant_type: grantType ?? '' },
      });
      throw error;
    }
  }

  /** RFC 9449 §5: the proof key a token request asks its access token to be bound to. */
  #dpop(proof: string): Promise<string> {
    const now = this.#now();
    return checkTokenEndpointProof(proof, {
      url: this.endpoints.token,
      method: 'POST',
      now,
      iatWindow: 60,
      useOnce: (key, expiresAt) => this.store.useOnce(key, expiresAt, now),
    });
  }

  /** Drop revoked grants from the standing-grant cache (this process's revocations and the feed's). */
  #forgetStanding(ids: readonly string[]): void {
    if (ids.length === 0 || this.#standing.size === 0) return;
    const gone = new Set(ids);
    for (const [key, g] of this.#standing.entries()) if (gone.has(g.id)) this.#standing.delete(key);
  }

  /**
   * The grant client-credentials tokens of one client, scope set and audience set share (the same
   * set in any order is the same grant). It expires after {@link STANDING_GRANT_LIFETIME}; a token
   * never outlives it, and a grant too close to its end for a token of `ttl` is replaced.
   */
  async #standingGrant(
    client: CompiledClient,
    scopes: readonly string[],
    audiences: readonly string[],
    now: number,
    ttl: number,
  ): Promise<string> {
    const key = `${client.id}\n${[...scopes].sort().join(' ')}\n${[...audiences].sort().join(' ')}`;
    const cached = this.#standing.get(key);
    if (cached !== undefined && cached.expiresAt >= now + ttl && !this.#grantRevoked(cached.id)) return cached.id;
    const expiresAt = now + STANDING_GRANT_LIFETIME + ttl;
    const grant = await this.store.createGrant(
      {
        id: newGrantId(),
        parentId: null,
        kind: 'client_credentials',
        issuer: this.issuer,
        subject: client.id,
        clientId: client.id,
        act: null,
        scopes,
        audiences,
        createdAt: now,
        expiresAt,
      },
      now,
    );
    const id = (grant as GrantRecord).id;
    this.#standing.set(key, { id, expiresAt });
    return id;
  }

  #grantRevoked(id: string): boolean {
    return this.revocations.isRevoked({
      issuer: this.issuer,
      subject: undefined,
      clientId: undefined,
      delegationId: id,
      tokenId: undefined,
      issuedAt: undefined,
      expiresAt: 0,
    });
  }

  async #clientCredentials(client: CompiledClient, req: OAuthRequest, jkt: string | undefined): Promise<TokenResponse> {
    this.#requireGrantType(client, 'client_credentials');
    const requested = this.#parseScope(this.#param(req.params, 'scope'));
    const scopes = requested ? this.#narrowScopes(requested, [client.scopes]) : client.record.scopes;
    const audiences = this.#targets(req.params, client.audiences);
    const now = this.#now();
    const ttl = this.#ttl(client);
    const grantId = await this.#standingGrant(client, scopes, audiences, now, ttl);
    const { token, jti } = this.#sign({ client, subject: client.id, audiences, scopes, act: null, grantId, now, exp: now + ttl, jkt });
    this.#emit({
      kind: 'token.issued',
      reason: 'ok',
      subject: client.id,
      client_id: client.id,
      delegation_id: grantId,
      jti,
      scopes_granted: scopes,
      ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
      detail: { grant_type: 'client_credentials', aud: audiences },
    });
    return {
      access_token: token,
      token_type: jkt === undefined ? 'Bearer' : 'DPoP',
      expires_in: ttl,
      ...(scopes.length ? { scope: scopes.join(' ') } : {}),
    };
  }

  async #refresh(client: CompiledClient, req: OAuthRequest, jkt: string | undefined): Promise<TokenResponse> {
    this.#requireGrantType(client, 'refresh_token');
    const presented = this.#required(req.params, 'refresh_token');
    const hash = sha256(presented);
    const now = this.#now();
    const record = await this.store.getRefreshToken(hash);
    if (record === undefined || record.clientId !== client.id) throw new OAuthError('refresh_token_invalid');
    // A current token's request is checked before it is spent; a rotated one goes straight to the
    // rotation, which detects the reuse whatever else the request says.
    let scopes: readonly string[] | undefined;
    let audiences: readonly string[] | undefined;
    if (record.rotatedAt === null && record.revokedAt === null) {
      const grant = await this.store.getGrant(record.grantId);
      if (grant === undefined) throw new OAuthError('refresh_token_invalid');
      const requested = this.#parseScope(this.#param(req.params, 'scope'));
      // RFC 6749 §6: the new access token's scope may narrow, never widen.
      scopes = requested ? this.#narrowScopes(requested, [this.#scopes.expand(grant.scopes), client.scopes]) : grant.scopes;
      const wanted = req.params.getAll('audience').length + req.params.getAll('resource').length > 0;
      audiences = wanted ? this.#targets(req.params, new Set(grant.audiences)) : grant.audiences;
    }
    const next = randomSecret(REFRESH_TOKEN_PREFIX);
    const rotation = await this.store.rotateRefreshToken(hash, {
      clientId: client.id,
      nextHash: sha256(next),
      nextExpiresAt: now + this.config.refresh_token_ttl,
      now,
      graceSeconds: this.config.refresh_reuse_grace,
      entryExpiresAt: now + this.config.max_access_token_ttl + SKEW,
    });
    if (rotation.status === 'reused') {
      await this.#feed.catchUp(now);
      this.#emit({
        kind: 'refresh.reuse_detected',
        decision: 'deny',
        reason: 'refresh_token_reused',
        client_id: client.id,
        delegation_id: rotation.grantId,
        token_hash: tokenHash(presented),
        detail: { family: rotation.grantId, revoked_grants: [...rotation.revokedGrantIds] },
      });
      for (const id of rotation.revokedGrantIds) {
        this.#emit({ kind: 'grant.revoked', reason: 'refresh_token_reused', client_id: client.id, delegation_id: id });
      }
      throw new OAuthError('refresh_token_reused');
    }
    if (rotation.status !== 'rotated') throw new OAuthError('refresh_token_invalid');
    const { grant } = rotation;
    const ttl = this.#ttl(client);
    const exp = Math.min(now + ttl, grant.expiresAt ?? Number.POSITIVE_INFINITY);
    const granted = scopes ?? grant.scopes;
    const { token, jti } = this.#sign({
      client,
      subject: grant.subject,
      audiences: audiences ?? grant.audiences,
      scopes: granted,
      act: grant.act as JsonObject | null,
      grantId: grant.id,
      now,
      exp,
      jkt,
    });
    this.#emit({
      kind: 'token.refreshed',
      reason: 'ok',
      subject: grant.subject,
      client_id: client.id,
      delegation_id: grant.id,
      actor_chain: chainOf(grant.act),
      jti,
      scopes_granted: granted,
      ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
    });
    return {
      access_token: token,
      token_type: jkt === undefined ? 'Bearer' : 'DPoP',
      expires_in: exp - now,
      ...(granted.length ? { scope: granted.join(' ') } : {}),
      refresh_token: next,
    };
  }

  /** Validate a subject or actor token: this issuer's own, or a trusted external issuer's. */
  async #party(token: string, type: string, role: 'subject' | 'actor'): Promise<Party> {
    const invalid: OAuthErrorCode = role === 'subject' ? 'subject_token_invalid' : 'actor_token_invalid';
    if (!SUBJECT_TOKEN_TYPES.has(type)) throw new OAuthError('token_type_unsupported');
    const now = this.#now();
    const own = this.#verifyOwn(token);
    if (own !== undefined) {
      if (own.exp <= now || this.#isRevoked(own)) throw new OAuthError(invalid);
      return {
        issuer: this.issuer,
        subject: own.subject,
        scopes: own.scopes,
        exp: own.exp,
        act: own.act,
        grantId: own.grantId,
        mayAct: own.claims.may_act,
        jkt: own.jkt,
        clientId: own.clientId,
        ownAudiences: own.audiences,
      };
    }
    if (this.#external === undefined) throw new OAuthError(invalid);
    const result = await this.#external.verifyToken(token);
    if (!result.ok || result.principal.subject === undefined || result.principal.issuer === this.issuer) throw new OAuthError(invalid);
    return partyFromPrincipal(result.principal, null);
  }

  async #exchange(client: CompiledClient, req: OAuthRequest, jkt: string | undefined): Promise<TokenResponse> {
    this.#requireGrantType(client, TOKEN_EXCHANGE);
    const p = req.params;
    const requestedType = this.#param(p, 'requested_token_type');
    if (requestedType !== undefined && !SUBJECT_TOKEN_TYPES.has(requestedType)) throw new OAuthError('token_type_unsupported');
    const subject = await this.#party(this.#required(p, 'subject_token'), this.#required(p, 'subject_token_type'), 'subject');
    // A sender-constrained subject token is only usable by the holder of its key (RFC 9449 §1).
    if (subject.jkt !== undefined && subject.jkt !== jkt) throw new OAuthError('subject_token_invalid');
    // One of this service's tokens is only exchanged by a party it was meant for: the client it was
    // issued to, a client among its audiences, or the client its may_act names. Holding someone
    // else's token is not enough (RFC 8693 §2.2.2: an unacceptable subject token is invalid_request).
    // External (IdP) tokens were already checked against the verifier's configured audiences.
    if (subject.ownAudiences !== undefined && subject.clientId !== client.id && !subject.ownAudiences.includes(client.id)) {
      const m = subject.mayAct as JsonObject | undefined;
      const named = typeof m === 'object' && m !== null && m.sub === client.id && (m.iss === undefined || m.iss === this.issuer);
      if (!named) throw new OAuthError('subject_token_not_permitted');
    }
    const actorToken = this.#param(p, 'actor_token');
    const actorType = this.#param(p, 'actor_token_type');
    // RFC 8693 §2.1: actor_token_type is required with actor_token and must not appear without it.
    if ((actorToken === undefined) !== (actorType === undefined)) throw new OAuthError('request_parameter_invalid');
    let actor: { readonly issuer: string; readonly subject: string } = { issuer: this.issuer, subject: client.id };
    if (actorToken !== undefined) {
      const party = await this.#party(actorToken, actorType as string, 'actor');
      // The actor token must be the authenticated client's own (its client_id; a client-credentials
      // token's sub is that same id): a client may not name another party as the actor.
      if (party.clientId !== client.id) throw new OAuthError('actor_token_not_client');
      // A sender-constrained actor token needs this request's DPoP proof of its key (RFC 9449 §1).
      if (party.jkt !== undefined && party.jkt !== jkt) throw new OAuthError('actor_token_proof_required');
      actor = party;
    }
    const requested = this.#parseScope(this.#param(p, 'scope'));
    const audiences = this.#targets(p, client.audiences);
    // The audience only narrows, unless the client is registered to re-target (exchange.retarget_audiences).
    if (subject.ownAudiences !== undefined && !client.record.exchangeRetargetAudiences) {
      for (const a of audiences) if (!subject.ownAudiences.includes(a)) throw new OAuthError('target_exceeds_subject');
    }
    const issued = await this.#delegate({
      client,
      subject,
      actor,
      requested,
      audiences,
      ttl: this.#ttl(client),
      kind: 'token_exchange',
      refresh: client.grantTypes.has('refresh_token'),
      jkt,
      ...(req.requestId !== undefined ? { requestId: req.requestId } : {}),
    });
    return {
      access_token: issued.token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: jkt === undefined ? 'Bearer' : 'DPoP',
      expires_in: issued.exp - issued.now,
      ...(issued.scopes.length ? { scope: issued.scopes.join(' ') } : {}),
      ...(issued.refreshToken !== undefined ? { refresh_token: issued.refreshToken } : {}),
    };
  }

  /**
   * Delegate a narrowed slice of `subject`'s authority to `client`, with `actor` as the new actor:
   * `may_act` honoured, the prior chain nested, scope ⊆ subject ∩ client, lifetime ≤ the subject's,
   * a child grant (atomically refused when the parent grant is no longer active).
   */
  async #delegate(spec: {
    readonly client: CompiledClient;
    readonly subject: Party;
    readonly actor: { readonly issuer: string; readonly subject: string };
    readonly requested: readonly string[] | undefined;
    readonly audiences: readonly string[];
    readonly ttl: number;
    readonly kind: GrantKind;
    readonly refresh: boolean;
    readonly jkt?: string | undefined;
    readonly requestId?: string;
  }): Promise<{ token: string; exp: number; now: number; scopes: readonly string[]; grantId: string; refreshToken?: string }> {
    const { client, subject, actor } = spec;
    const now = this.#now();
    // RFC 8693 §4.4: when the subject token names who may act for it, no one else may.
    if (subject.mayAct !== undefined) {
      const m = subject.mayAct as JsonObject;
      const ok = typeof m === 'object' && m !== null && m.sub === actor.subject && (m.iss === undefined || m.iss === actor.issuer);
      if (!ok) throw new OAuthError('actor_not_permitted');
    }
    const act: JsonObject = { sub: actor.subject };
    if (actor.issuer !== this.issuer) act.iss = actor.issuer;
    if (subject.act !== null) act.act = subject.act;
    if (chainOf(act).length > this.config.max_chain_depth) throw new OAuthError('delegation_chain_too_deep');

    const subjectScopes = this.#scopes.expand(subject.scopes);
    const scopes = spec.requested
      ? this.#narrowScopes(spec.requested, [subjectScopes, client.scopes])
      : subject.scopes.filter((s) => covers(client.scopes, s));
    const grantExp = subject.exp;
    const exp = Math.min(now + spec.ttl, grantExp);
    if (exp <= now) throw new OAuthError('subject_token_invalid');
    const grant = await this.store.createGrant(
      {
        id: newGrantId(),
        parentId: subject.grantId,
        kind: spec.kind,
        issuer: subject.issuer,
        subject: subject.subject,
        clientId: client.id,
        act,
        scopes,
        audiences: spec.audiences,
        createdAt: now,
        expiresAt: grantExp,
      },
      now,
    );
    if (grant === 'parent_inactive') throw new OAuthError('grant_inactive');
    const { token, jti } = this.#sign({
      client,
      subject: subject.subject,
      audiences: spec.audiences,
      scopes,
      act,
      grantId: grant.id,
      now,
      exp,
      jkt: spec.jkt,
    });
    let refreshToken: string | undefined;
    if (spec.refresh) {
      refreshToken = randomSecret(REFRESH_TOKEN_PREFIX);
      await this.store.createRefreshToken({
        hash: sha256(refreshToken),
        grantId: grant.id,
        clientId: client.id,
        createdAt: now,
        expiresAt: Math.min(now + this.config.refresh_token_ttl, grantExp),
        rotatedAt: null,
        revokedAt: null,
      });
    }
    this.#emit({
      kind: 'token.exchanged',
      reason: 'ok',
      subject: subject.subject,
      client_id: client.id,
      actor_chain: chainOf(act),
      delegation_id: grant.id,
      jti,
      scopes_granted: scopes,
      ...(spec.requestId !== undefined ? { request_id: spec.requestId } : {}),
      detail: {
        grant_kind: spec.kind,
        subject_issuer: subject.issuer,
        parent_grant: subject.grantId ?? '',
        aud: [...spec.audiences],
      },
    });
    return { token, exp, now, scopes, grantId: grant.id, ...(refreshToken !== undefined ? { refreshToken } : {}) };
  }

  // Revocation (RFC 7009) and introspection (RFC 7662).

  /**
   * RFC 7009: revoke a token the authenticated client holds. Unknown tokens and other clients'
   * tokens are left alone and still answered with success (§2.2). A refresh token takes its whole
   * family and every access token of its grant with it (§2.1).
   */
  async revoke(req: OAuthRequest): Promise<void> {
    this.#checkRepeats(req.params);
    const client = await this.clients.authenticate(req);
    const token = this.#required(req.params, 'token');
    const now = this.#now();
    if (token.startsWith(REFRESH_TOKEN_PREFIX)) {
      const record = await this.store.getRefreshToken(sha256(token));
      if (record === undefined || record.clientId !== client.id) return;
      const revoked = await this.revokeGrants({ grantId: record.grantId }, 'refresh_token_revoked', client.id);
      this.#emit({
        kind: 'token.revoked',
        reason: 'refresh_token_revoked',
        client_id: client.id,
        delegation_id: record.grantId,
        token_hash: tokenHash(token),
        detail: { revoked_grants: revoked.map((g) => g.id) },
      });
      return;
    }
    const own = this.#verifyOwn(token);
    if (own === undefined || own.clientId !== client.id || own.exp <= now) return;
    await this.#revokeJti(own, now);
    this.#emit({
      kind: 'token.revoked',
      reason: 'access_token_revoked',
      subject: own.subject,
      client_id: client.id,
      delegation_id: own.grantId,
      jti: own.jti,
    });
  }

  async #revokeJti(own: OwnToken, now: number): Promise<void> {
    await this.store.appendRevocations([{ kind: 'token', value: own.jti, issuer: null, at: now, expiresAt: own.exp + SKEW }]);
    await this.#feed.catchUp(now);
  }

  /**
   * RFC 7662: `{"active": false}` for anything invalid, expired, revoked, unknown, or not the
   * caller's business (a token neither issued to the caller nor addressed to one of its audiences).
   */
  async introspect(req: OAuthRequest): Promise<Record<string, unknown>> {
    this.#checkRepeats(req.params);
    const client = await this.clients.authenticate(req);
    const token = this.#required(req.params, 'token');
    const now = this.#now();
    const inactive = { active: false };
    const result = await this.#introspect(token, client, now);
    this.#emit({
      kind: 'token.introspected',
      reason: result.active ? 'ok' : 'inactive',
      decision: result.active ? 'allow' : 'deny',
      client_id: client.id,
      token_hash: tokenHash(token),
      ...(typeof result.grant_id === 'string' ? { delegation_id: result.grant_id } : {}),
    });
    return result.active ? result : inactive;
  }

  async #introspect(token: string, client: CompiledClient, now: number): Promise<Record<string, unknown>> {
    if (token.startsWith(REFRESH_TOKEN_PREFIX)) {
      const r = await this.store.getRefreshToken(sha256(token));
      if (!r || r.clientId !== client.id || r.rotatedAt !== null || r.revokedAt !== null || r.expiresAt <= now) return { active: false };
      const g = await this.store.getGrant(r.grantId);
      if (!g || g.revokedAt !== null || (g.expiresAt !== null && g.expiresAt <= now)) return { active: false };
      return {
        active: true,
        token_type: 'refresh_token',
        iss: this.issuer,
        sub: g.subject,
        client_id: r.clientId,
        ...(g.scopes.length ? { scope: g.scopes.join(' ') } : {}),
        iat: r.createdAt,
        exp: r.expiresAt,
        grant_id: g.id,
        ...(g.act !== null ? { act: g.act } : {}),
      };
    }
    const own = this.#verifyOwn(token);
    if (own === undefined || own.exp <= now || this.#isRevoked(own)) return { active: false };
    if (own.clientId !== client.id && !own.audiences.some((a) => client.audiences.has(a))) return { active: false };
    // The authoritative answer: another process may have revoked the grant since the last sync.
    const grant = await this.store.getGrant(own.grantId);
    if (grant && grant.revokedAt !== null) return { active: false };
    return { active: true, token_type: own.jkt === undefined ? 'Bearer' : 'DPoP', ...own.claims };
  }

  // Discovery.

  /** RFC 8414 authorization server metadata: exactly what this server supports. */
  metadata(): Record<string, unknown> {
    const algs = [...ASYMMETRIC_ALGORITHMS];
    const auth = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
    return {
      issuer: this.issuer,
      token_endpoint: this.endpoints.token,
      jwks_uri: this.endpoints.jwks,
      revocation_endpoint: this.endpoints.revocation,
      introspection_endpoint: this.endpoints.introspection,
      grant_types_supported: ['client_credentials', 'refresh_token', TOKEN_EXCHANGE],
      response_types_supported: [],
      token_endpoint_auth_methods_supported: auth,
      token_endpoint_auth_signing_alg_values_supported: algs,
      revocation_endpoint_auth_methods_supported: auth,
      revocation_endpoint_auth_signing_alg_values_supported: algs,
      introspection_endpoint_auth_methods_supported: auth,
      introspection_endpoint_auth_signing_alg_values_supported: algs,
      dpop_signing_alg_values_supported: algs,
      ...(this.#scopes.known ? { scopes_supported: [...this.#scopes.known].sort() } : {}),
    };
  }

  // Operator and admin operations (CLI, admin API).

  /**
   * Revoke grants (each with its subtree), push the revocations to this process's verifiers before
   * returning, and audit each revoked grant. For a subject, tokens of external issuers issued until
   * now are refused as subject tokens too, so the subject cannot simply exchange again.
   */
  async revokeGrants(selector: GrantSelector, reason: string, by?: string): Promise<RevokedGrant[]> {
    const now = this.#now();
    const revoked = await this.store.revokeGrants(selector, {
      at: now,
      reason,
      entryExpiresAt: now + this.config.max_access_token_ttl + SKEW,
    });
    if ('subject' in selector) {
      const issuers = new Set(revoked.filter((g) => g.subject === selector.subject).map((g) => g.issuer));
      if (selector.issuer !== undefined) issuers.add(selector.issuer);
      issuers.delete(this.issuer);
      await this.store.appendRevocations(
        [...issuers].map((issuer) => ({
          kind: 'subject' as const,
          value: selector.subject,
          issuer,
          at: now,
          expiresAt: now + this.#externalMaxLifetime + SKEW,
        })),
      );
    }
    await this.#feed.catchUp(now);
    this.#forgetStanding(revoked.map((g) => g.id));
    for (const g of revoked) {
      this.#emit({
        kind: 'grant.revoked',
        reason,
        subject: g.subject,
        client_id: g.clientId,
        delegation_id: g.id,
        detail: { selector: Object.keys(selector)[0] ?? '', ...(by !== undefined ? { by } : {}) },
      });
    }
    return revoked;
  }

  /**
   * Operator revocation of an access token (no client check): its `jti` is revoked. Returns the
   * token's grant so the caller can offer to revoke the delegation subtree too, or `undefined`
   * when the token is not one of this issuer's valid tokens.
   */
  async revokeAccessToken(token: string, by?: string): Promise<{ jti: string; grantId: string } | undefined> {
    const own = this.#verifyOwn(token);
    const now = this.#now();
    if (own === undefined || own.exp <= now) return undefined;
    await this.#revokeJti(own, now);
    this.#emit({
      kind: 'token.revoked',
      reason: 'operator',
      subject: own.subject,
      client_id: own.clientId,
      delegation_id: own.grantId,
      jti: own.jti,
      ...(by !== undefined ? { detail: { by } } : {}),
    });
    return { jti: own.jti, grantId: own.grantId };
  }

  /** A grant's ancestors and subtree, for `tessera grants tree`. */
  async grantTree(id: string): Promise<{ ancestors: GrantRecord[]; subtree: GrantRecord[] } | undefined> {
    const subtree = await this.store.grantSubtree(id);
    if (subtree.length === 0) return undefined;
    return { ancestors: await this.store.grantAncestors(id), subtree };
  }

  /**
   * Check an admin API bearer token: one of this issuer's valid tokens, for the admin audience, with
   * the admin scope.
   * @throws {OAuthError} `invalid_token` (401) or `insufficient_scope` (403).
   */
  authorizeAdmin(authorization: string | undefined): { subject: string; clientId: string } {
    const m = authorization === undefined ? null : /^bearer +([A-Za-z0-9._~+/-]+=*) *$/i.exec(authorization);
    if (!m) throw new OAuthError(authorization === undefined ? 'admin_token_missing' : 'admin_token_invalid');
    const own = this.#verifyOwn(m[1] as string);
    if (own === undefined || own.exp <= this.#now() || this.#isRevoked(own)) throw new OAuthError('admin_token_invalid');
    if (!own.audiences.includes(this.config.adminAudience)) throw new OAuthError('admin_token_invalid');
    if (!this.#scopes.expand(own.scopes).has(this.config.admin.scope)) {
      throw new OAuthError('admin_scope_missing', { scope: this.config.admin.scope });
    }
    return { subject: own.subject, clientId: own.clientId };
  }

  /** Register a client; the secret (for secret clients) is returned once and never stored. */
  async registerClient(input: ClientInput): Promise<{ client: CompiledClient; secret: string | undefined }> {
    if (this.#hasher === undefined) throw new Error('registering clients needs the master key');
    const known = this.#scopes.known;
    if (known !== undefined) {
      // With a catalogue, a client scope outside it is a typo until proven otherwise.
      for (const s of input.scopes) {
        if (!isWildcard(s) && !known.has(s) && s !== this.config.admin.scope) {
          throw new ClientInputError(`scope "${s}" is not in the scope catalogue (scopes in tessera.yaml)`);
        }
      }
    }
    const { record, secret } = buildClient(input, { hasher: this.#hasher, maxTtl: this.config.max_access_token_ttl, now: this.#now() });
    await this.store.createClient(record);
    this.#emit({ kind: 'client.created', reason: 'ok', client_id: record.id, detail: { auth_method: record.authMethod } });
    return { client: this.clients.compile(record), secret };
  }

  /** Disable (or re-enable) a client; disabling revokes its live grants. */
  async setClientDisabled(id: string, disabled: boolean, by?: string): Promise<{ revoked: RevokedGrant[] } | undefined> {
    const updated = await this.store.updateClient(id, { disabled }, this.#now());
    if (updated === undefined) return undefined;
    this.clients.invalidate(id);
    this.#emit({ kind: 'client.updated', reason: disabled ? 'disabled' : 'enabled', client_id: id });
    const revoked = disabled ? await this.revokeGrants({ clientId: id }, 'client_disabled', by) : [];
    return { revoked };
  }

  /** Remove a client after revoking its live grants (grants stay as history). */
  async removeClient(id: string, by?: string): Promise<{ revoked: RevokedGrant[] } | undefined> {
    if ((await this.store.getClient(id)) === undefined) return undefined;
    const revoked = await this.revokeGrants({ clientId: id }, 'client_removed', by);
    await this.store.deleteClient(id);
    this.clients.invalidate(id);
    this.#emit({ kind: 'client.removed', reason: 'ok', client_id: id });
    return { revoked };
  }

  /**
   * Development: mint a token for a registered client without authenticating it, as
   * client_credentials would, or, with `subject`, as a root grant for that subject (to try
   * delegation chains without an identity provider).
   */
  async mint(options: {
    readonly clientId: string;
    readonly scopes?: readonly string[];
    readonly audiences?: readonly string[];
    readonly ttl?: number;
    readonly subject?: string;
  }): Promise<TokenResponse & { grant_id: string; jti: string }> {
    const client = await this.clients.get(options.clientId);
    if (client === undefined) throw new OAuthError('client_unknown');
    if (client.record.disabled) throw new OAuthError('client_disabled');
    const scopes = options.scopes?.length ? this.#narrowScopes(options.scopes, [client.scopes]) : client.record.scopes;
    const params = new URLSearchParams();
    for (const a of options.audiences ?? []) params.append('audience', a);
    const audiences = this.#targets(params, client.audiences);
    const now = this.#now();
    const ttl = Math.min(options.ttl ?? this.#ttl(client), this.config.max_access_token_ttl);
    let grantId: string;
    if (options.subject === undefined) grantId = await this.#standingGrant(client, scopes, audiences, now, ttl);
    else {
      const grant = await this.store.createGrant(
        {
          id: newGrantId(),
          parentId: null,
          kind: 'mint',
          issuer: this.issuer,
          subject: options.subject,
          clientId: client.id,
          act: null,
          scopes,
          audiences,
          createdAt: now,
          expiresAt: now + ttl,
        },
        now,
      );
      grantId = (grant as GrantRecord).id;
    }
    const subject = options.subject ?? client.id;
    const { token, jti } = this.#sign({ client, subject, audiences, scopes, act: null, grantId, now, exp: now + ttl });
    this.#emit({
      kind: 'token.issued',
      reason: 'mint',
      subject,
      client_id: client.id,
      delegation_id: grantId,
      jti,
      scopes_granted: scopes,
      detail: { grant_type: 'mint' },
    });
    return {
      access_token: token,
      token_type: 'Bearer',
      expires_in: ttl,
      ...(scopes.length ? { scope: scopes.join(' ') } : {}),
      grant_id: grantId,
      jti,
    };
  }

  /** Operator token exchange for a registered client, without client authentication. */
  async exchangeAs(clientId: string, params: URLSearchParams): Promise<TokenResponse> {
    const client = await this.clients.get(clientId);
    if (client === undefined) throw new OAuthError('client_unknown');
    if (client.record.disabled) throw new OAuthError('client_disabled');
    this.#checkRepeats(params);
    return this.#exchange(client, { params, authorization: undefined, endpointUrl: this.endpoints.token }, undefined);
  }

  /**
   * The in-process {@link UpstreamTokenIssuer} for the gateway: an exchange in which the gateway's
   * own client (`clientId`, registered with the upstream audiences and the token-exchange grant)
   * is the actor, the verified caller the subject, and the caller's chain nests under it.
   */
  upstreamIssuer(clientId: string): UpstreamTokenIssuer {
    return {
      issueForUpstream: async ({ principal, audience, scopes, maxTtl }) => {
        const client = await this.clients.get(clientId);
        if (client === undefined || client.record.disabled) throw new OAuthError('client_unknown');
        this.#requireGrantType(client, TOKEN_EXCHANGE);
        if (principal.subject === undefined) throw new OAuthError('subject_token_invalid');
        if (!client.audiences.has(audience)) throw new OAuthError('target_not_allowed');
        const now = this.#now();
        const subject = partyFromPrincipal(
          principal,
          principal.issuer === this.issuer ? (principal.delegationId ?? null) : null,
          now + maxTtl,
        );
        const issued = await this.#delegate({
          client,
          subject,
          actor: { issuer: this.issuer, subject: client.id },
          requested: [...new Set(scopes)],
          audiences: [audience],
          ttl: Math.min(maxTtl, this.#ttl(client)),
          kind: 'upstream',
          refresh: false,
        });
        return { token: issued.token, expiresAt: issued.exp };
      },
    };
  }
}

/** A verified principal (external token, or the gateway's caller) as a delegating party. */
function partyFromPrincipal(principal: Principal, grantId: string | null, expCap = Number.POSITIVE_INFINITY): Party {
  return {
    issuer: principal.issuer,
    subject: principal.subject as string,
    scopes: principal.scopes,
    exp: Math.min(principal.expiresAt, expCap),
    act: (principal.claims.act as JsonObject | undefined) ?? null,
    grantId,
    mayAct: principal.claims.may_act,
    jkt: principal.confirmation?.jkt,
    clientId: principal.clientId,
    ownAudiences: undefined,
  };
}
