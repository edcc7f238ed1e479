/**
 * What the token service's modules share: the request and response shapes of the endpoints, the
 * clock-and-audit interface every module is handed, and small helpers of the grant types.
 *
 * Each module declares the narrow context it needs (`RefreshContext`, `RevokeContext`...);
 * `TokenService` builds one object, once, that satisfies all of them.
 *
 * @module
 */
import type { AuditSlots } from '../audit/batching.ts';
import type { AuditEvent } from '../audit/event.ts';
import { uuidv7 } from '../audit/id.ts';
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import type { JsonObject } from '../core/jose/json.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { addressKey, type ThrottleWindows, type TokenBucketLimiter } from '../core/ratelimit.ts';
import { actorLabel } from '../core/verify/principal.ts';
import { StoreUnavailableError } from '../store/contract.ts';
import type { ClientRegistry, CompiledClient } from './clients.ts';
import { checkRepeats, required } from './params.ts';

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
  /**
   * Why the HTTP adapter refused the request before reading its form (a method other than POST, a
   * URL query, another Content-Type, a Content-Encoding other than identity, a body over the
   * limit or not whole when the client hung up, a CORS preflight from an origin not allowed, a framing the listener refuses) or its headers (two DPoP proofs): `params` is then empty, and the endpoint refuses the
   * request with this code, audited like any other refusal.
   */
  readonly requestFault?:
    | 'request_method_not_allowed'
    | 'request_query_not_allowed'
    | 'request_content_type'
    | 'request_content_encoding'
    | 'request_body_too_large'
    | 'client_closed'
    | 'request_body_invalid'
    | 'request_timeout'
    | 'dpop_proof_invalid'
    | 'cors_origin_not_allowed'
    | 'request_framing_invalid'
    | undefined;
  /**
   * Why the HTTP body could not be read (`params` is then empty): the endpoint refuses the request
   * with this code, and the token endpoint audits it like any other refusal.
   */
  readonly bodyFault?: 'request_not_utf8' | undefined;
  /**
   * The request carried more than one Authorization header (`authorization` is then the first):
   * the endpoint refuses it with this code, audited like any other refusal.
   */
  readonly headerFault?: 'request_multiple_authorization' | undefined;
  /** The `Origin` header of a browser's request (not of a preflight): see `ClientAuthRequest.origin`. */
  readonly origin?: string | undefined;
  /** Told the identified client's own allowed origins: see `ClientAuthRequest.onClientOrigins`. */
  readonly onClientOrigins?: ((origins: readonly string[]) => void) | undefined;
  /**
   * `audit.on_queue_full: refuse`: the slots `TokenService.admitAudited` reserved for this
   * request's events when it was admitted; they take its events. The caller releases them once the
   * request is answered.
   */
  readonly auditSlots?: AuditSlots | undefined;
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

/** An audit event before the service stamps its id, time, issuer and (default `allow`) decision. */
export type AuditDraft = Omit<AuditEvent, 'id' | 'time' | 'decision'> & { decision?: AuditEvent['decision'] };

/** What an emit site tells the audit trail about its event besides the event itself. */
export interface EmitOptions {
  /**
   * The event records access this request took away and the store committed: a grant revoked, a
   * token's entry appended to the revocation log, a login session recorded as ended. With
   * `audit.on_queue_full: refuse` only such a record (`grant.revoked`, `token.revoked`,
   * `login.signed_out`) is kept past `audit.max_queue`; one of those kinds that took nothing away
   * (a refresh token whose grant was revoked before, a sign-out with no session to end) is kept
   * while the queue has room and dropped (counted and told) once it has not, so repeating it
   * cannot grow the queue.
   */
  readonly revoked?: boolean;
}

/** The clock and the audit trail: what every module of the service is given. */
export interface BaseContext {
  /** Epoch seconds. */
  now(): number;
  emit(event: AuditDraft, options?: EmitOptions): void;
}

/** What a failed request answers: its own OAuth error, 503 for a store that is down, else a 500. */
export function asOAuthError(e: unknown): OAuthError {
  if (e instanceof OAuthError) return e;
  return new OAuthError(e instanceof StoreUnavailableError ? 'store_unavailable' : 'server_error', { cause: e });
}

/**
 * The per-address bucket of failed client authentications (`auth_failure_limit`): one for the
 * token, revocation and introspection endpoints together (guessing moved from one to another gets
 * no fresh burst), and the throttled windows its refusals are audited once in, per endpoint.
 */
export interface AuthFailureLimit {
  readonly limiter: Pick<TokenBucketLimiter, 'take' | 'refund' | 'has'>;
  readonly windows: Pick<ThrottleWindows, 'refused'>;
}

/**
 * One request's account with its address's failed client authentications (an IPv6 /64): each
 * request refused before its client authenticated (a failed authentication, a malformed request),
 * or refused `invalid_client` after it (a replayed assertion, an origin not allowed for it),
 * spends one; an address whose bucket is empty is refused `client_auth_failure_rate_limited` (429)
 * before its credentials are checked, the right ones too (no oracle). An address with a bucket
 * (one that failed lately) takes its token before authenticating and gets it back unless it
 * fails, so concurrent requests from it cannot all pass the check before the first failure is
 * counted; any other address costs one lookup. A request that authenticates spends nothing, a
 * public client's (which proves nothing, but fails nothing either) included.
 */
export class AddressFailures {
  readonly #limit: AuthFailureLimit | undefined;
  readonly #address: string;
  readonly #kind: string;
  /** The address's failure token, taken before authenticating: given back unless it fails. */
  #reserved = false;

  constructor(limit: AuthFailureLimit | undefined, remoteAddr: string | undefined, kind: AuditEvent['kind']) {
    this.#limit = limit;
    this.#address = limit === undefined ? '' : addressKey(remoteAddr);
    this.#kind = kind;
  }

  /** Before anything of the request is read. @throws {OAuthError} `client_auth_failure_rate_limited` */
  enter(): void {
    const limiter = this.#limit?.limiter;
    if (limiter === undefined || !limiter.has(this.#address)) return;
    const wait = limiter.take(this.#address);
    if (wait > 0) throw new OAuthError('client_auth_failure_rate_limited', { retryAfter: wait });
    this.#reserved = true;
  }

  /** The client authenticated: the token held is given back. */
  authenticated(): void {
    if (this.#reserved) this.#limit?.limiter.refund(this.#address);
    this.#reserved = false;
  }

  /**
   * The request was refused with `e`, its client authenticated or not: one failure of the address
   * when it failed authentication (not the service's own failures, 5xx, nor another refusal of an
   * authenticated client). Returns what to audit: `undefined` for a refusal of this bucket within
   * a throttled window already on record (answered, not audited again), else the refusals of the
   * window before that were not audited (0 for any other refusal).
   */
  refused(e: OAuthError, authenticated: boolean): number | undefined {
    const limit = this.#limit;
    if (limit === undefined) return 0;
    // The address's own refusal took nothing.
    if (e.code === 'client_auth_failure_rate_limited') return limit.windows.refused(`${this.#kind}\n${this.#address}`, e.retryAfter ?? 1);
    const failed = e.status < 500 && (!authenticated || e.error === 'invalid_client');
    if (failed && !this.#reserved) limit.limiter.take(this.#address);
    else if (!failed && this.#reserved) limit.limiter.refund(this.#address);
    this.#reserved = false;
    return 0;
  }
}

/**
 * The opening of a revocation or introspection request (RFC 7009 §2.1, RFC 7662 §2.1): its body,
 * its client's authentication and its `token` parameter. A refusal here is audited as `kind` with
 * the caller's error code (and the client once it authenticated), as the token endpoint audits
 * its own: a flood of guessed client secrets must leave a trail at every endpoint.
 */
export async function openTokenRequest(
  ctx: BaseContext & { readonly clients: Pick<ClientRegistry, 'authenticateUnspent' | 'checkOrigin'> },
  req: OAuthRequest,
  kind: 'revocation.denied' | 'introspection.denied',
  options: {
    readonly allowPublic?: boolean;
    /**
     * The endpoint's per-client bucket, spent once the client is authenticated and before its
     * private_key_jwt assertion is recorded as used: a request refused `code` (429) leaves the
     * assertion unspent, and a replayed one gives its token back.
     */
    readonly rateLimit?: {
      readonly limiter: Pick<TokenBucketLimiter, 'take' | 'refund'> | undefined;
      /** Public clients' buckets, keyed by client and connecting address. */
      readonly publicLimiter?: Pick<TokenBucketLimiter, 'take' | 'refund'> | undefined;
      readonly code: 'revocation_rate_limited' | 'introspection_rate_limited';
    };
    /** Failed client authentications by connecting address ({@link AddressFailures}). */
    readonly authFailures?: AuthFailureLimit | undefined;
    /**
     * Refusals of the client's bucket audited once per throttled window of the client, not once
     * per request; without it, each is audited.
     */
    readonly throttleWindows?: Pick<ThrottleWindows, 'refused'> | undefined;
  } = {},
): Promise<{ readonly client: CompiledClient; readonly token: string }> {
  let clientId: string | undefined;
  const failures = new AddressFailures(options.authFailures, req.remoteAddr, kind);
  /** The key of the client's bucket when it refused the request (429), for its throttle window. */
  let throttledKey: string | undefined;
  try {
    failures.enter();
    if (req.requestFault !== undefined) throw new OAuthError(req.requestFault);
    if (req.headerFault !== undefined) throw new OAuthError(req.headerFault);
    if (req.bodyFault !== undefined) throw new OAuthError(req.bodyFault);
    checkRepeats(req.params);
    const { client, spend } = await ctx.clients.authenticateUnspent(req, { allowPublic: options.allowPublic === true });
    clientId = client.id;
    ctx.clients.checkOrigin(client, req);
    const token = required(req.params, 'token');
    // A public client proves nothing, so anyone may name it: its bucket is per client and
    // connecting address (an IPv6 /64), as at the token endpoint, or one sender could keep every
    // user of the app from revoking (signing out, dropping a leaked refresh token).
    const publicClient = client.record.authMethod === 'none';
    const limiter = publicClient ? options.rateLimit?.publicLimiter : options.rateLimit?.limiter;
    const bucketKey = publicClient ? `${client.id}\n${addressKey(req.remoteAddr)}` : client.id;
    const wait = limiter?.take(bucketKey) ?? 0;
    if (wait > 0) {
      throttledKey = bucketKey;
      throw new OAuthError(options.rateLimit?.code ?? 'revocation_rate_limited', { retryAfter: wait });
    }
    try {
      await spend();
    } catch (e) {
      limiter?.refund(bucketKey);
      throw e;
    }
    failures.authenticated();
    return { client, token };
  } catch (error) {
    const e = asOAuthError(error);
    let skipped = failures.refused(e, clientId !== undefined);
    if (throttledKey !== undefined && options.throttleWindows !== undefined) {
      skipped = options.throttleWindows.refused(throttledKey, e.retryAfter ?? 1);
    }
    // Within a throttled window already on record: answered, not audited again.
    if (skipped === undefined) throw error;
    ctx.emit({
      kind,
      decision: 'deny',
      reason: e.code,
      ...(clientId !== undefined ? { client_id: clientId } : {}),
      ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
      ...(req.remoteAddr !== undefined ? { remote_addr: req.remoteAddr } : {}),
      ...(skipped > 0 ? { detail: { refusals_not_audited: skipped } } : {}),
    });
    throw error;
  }
}

/** Leeway added to revocation-entry lifetimes, seconds. */
export const SKEW = 60;

/** Grant ids are time-ordered, so the store's index inserts append instead of scattering. */
export function newGrantId(): string {
  return `g_${uuidv7()}`;
}

/**
 * The actor chain of an `act` claim of this issuer's tokens, current actor first; an actor of
 * another issuer (its `iss`) is shown with it ({@link actorLabel}).
 */
export function chainOf(act: unknown): string[] {
  const chain: string[] = [];
  let cur = act as JsonObject | undefined;
  while (cur && typeof cur === 'object' && chain.length < 64) {
    chain.push(actorLabel({ subject: String(cur.sub), ...(typeof cur.iss === 'string' ? { issuer: cur.iss } : {}) }));
    cur = cur.act as JsonObject | undefined;
  }
  return chain;
}

/** The client's access-token lifetime: its own, else the default, never above the maximum. */
export function accessTokenTtl(
  config: Pick<ResolvedTokenServiceConfig, 'access_token_ttl' | 'max_access_token_ttl'>,
  client: CompiledClient,
): number {
  return Math.min(client.record.accessTokenTtl ?? config.access_token_ttl, config.max_access_token_ttl);
}

export function requireGrantType(client: CompiledClient, grantType: string): void {
  if (!client.grantTypes.has(grantType)) throw new OAuthError('grant_type_not_allowed');
}
