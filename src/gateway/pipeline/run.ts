/**
 * The decision pipeline, shared by the proxy, WebSocket upgrades and the forward-auth endpoint:
 * (auth-failure limit →) authenticate → rate-limit → authorize → mutate. Each stage may refuse; the first refusal is the
 * decision and carries what was known so far (the principal, the rule) for the audit trail.
 *
 * @module
 */
import { TesseraError } from '../../core/errors.ts';
import type { CompiledRule } from '../../core/policy.ts';
import { addressKey, type TokenBucketLimiter } from '../../core/ratelimit.ts';
import { NO_SUB_ID_TRUST, type Principal, type SubIdTrust, subjectIssuer } from '../../core/verify/principal.ts';
import type { AuthenticationStage, AuthnResult } from './authn/registry.ts';
import type { Authorizer, RpcFacts } from './authz/authorizer.ts';
import type { MutationResult, Mutator } from './mutate/mutator.ts';
import type { GatewayRequest } from './request.ts';

export type Decision =
  | {
      readonly ok: true;
      readonly principal: Principal | undefined;
      readonly rule: CompiledRule | undefined;
      /** Headers to add toward the upstream (credential, identity). */
      readonly headers: Record<string, string>;
      /** A fresh DPoP nonce to send the caller in the response's `DPoP-Nonce` (RFC 9449 §9). */
      readonly dpopNonce?: string;
    }
  | { readonly ok: false; readonly error: TesseraError; readonly principal?: Principal; readonly rule?: CompiledRule };

export interface RateLimitStage {
  readonly limiter: TokenBucketLimiter;
  readonly key: 'subject' | 'client' | 'ip';
  /** Whose `sub_id` names the subject's issuer ({@link subjectIssuer}). */
  readonly vouching?: SubIdTrust | undefined;
}

/** A route's compiled pipeline. */
export interface Pipeline {
  readonly authn: AuthenticationStage;
  /**
   * `gateway.auth_failure_limit`, one limiter for every route that needs a token: failed
   * authentications by client address ({@link authenticate}). Unset on public routes and when off.
   */
  readonly authFailures?: TokenBucketLimiter | undefined;
  readonly rateLimit: RateLimitStage | undefined;
  readonly authz: Authorizer;
  readonly mutators: readonly Mutator[];
}

/**
 * A token naming neither subject nor client, by its issuer's `jti` when it has one: the token's own
 * spelling is not one caller's (an ES256 signature (r, s) has a twin (r, n - s) that verifies as
 * well, RFC 7518 §3.4 asking for no low s), so keyed by its hash the twin was a fresh bucket. The
 * prefix keeps a `jti` or a hash from ever naming a subject's or a client's bucket.
 */
function tokenKey(p: Principal): string {
  return p.tokenId !== undefined ? `jti:${p.tokenId}` : `hash:${p.tokenHash}`;
}

function limitKey(stage: RateLimitStage, request: GatewayRequest, p: Principal | undefined): string {
  // An IPv6 caller by its /64, as it may send each request from another address of it.
  if (stage.key === 'ip' || p === undefined) return addressKey(request.remoteAddress);
  // Client ids and subjects are each issuer's own: another issuer's `agent-1` is another caller.
  if (stage.key === 'client') {
    const who = p.clientId ?? p.subject;
    return who !== undefined ? `c:${p.issuer}\n${who}` : `t:${p.issuer}\n${tokenKey(p)}`;
  }
  // A subject by the issuer it belongs to: two identity providers' alice are two callers, and a
  // token the token service issued for one of them shares her bucket.
  const who = p.subject ?? p.clientId;
  return who !== undefined ? `s:${subjectIssuer(p, stage.vouching ?? NO_SUB_ID_TRUST)}\n${who}` : `t:${p.issuer}\n${tokenKey(p)}`;
}

/** The rate-limit stage alone: takes one token from the caller's bucket; the refusal when it is empty. */
export function rateLimit(pipeline: Pipeline, request: GatewayRequest, principal: Principal | undefined): TesseraError | undefined {
  if (!pipeline.rateLimit) return undefined;
  const wait = pipeline.rateLimit.limiter.take(limitKey(pipeline.rateLimit, request, principal));
  return wait > 0 ? new TesseraError('rate_limited', { retryAfter: wait }) : undefined;
}

/**
 * The stages after authentication (rate limit, authorization, mutation), for a caller that
 * authenticated first and learned more about the request since (an MCP route reads the body to
 * know the tool and the JSON-RPC method). `limited`: the caller ran {@link rateLimit} already (before reading the body).
 */
export function afterAuthn(
  pipeline: Pipeline,
  request: GatewayRequest,
  authn: AuthnResult,
  rpc?: RpcFacts,
  limited = false,
): Decision | Promise<Decision> {
  if (!authn.ok) return authn.principal ? { ok: false, error: authn.error, principal: authn.principal } : { ok: false, error: authn.error };
  const principal = authn.principal;
  if (!limited) {
    const error = rateLimit(pipeline, request, principal);
    if (error !== undefined) return principal ? { ok: false, error, principal } : { ok: false, error };
  }
  const authz = pipeline.authz.authorize(request, principal, rpc);
  if (!authz.ok) {
    const denied: { ok: false; error: TesseraError; principal?: Principal; rule?: CompiledRule } = { ok: false, error: authz.error };
    if (principal) denied.principal = principal;
    if (authz.rule) denied.rule = authz.rule;
    return denied;
  }
  const headers: Record<string, string> = {};
  const input = { request, principal, rule: authz.rule };
  let pending: Promise<MutationResult>[] | undefined;
  for (const m of pipeline.mutators) {
    const r = m.mutate(input, headers);
    if (r instanceof Promise) (pending ??= []).push(r);
    else if (r !== undefined) return fail(r, principal, authz.rule);
  }
  const allowed: Decision =
    authn.dpopNonce === undefined
      ? { ok: true, principal, rule: authz.rule, headers }
      : { ok: true, principal, rule: authz.rule, headers, dpopNonce: authn.dpopNonce };
  if (pending === undefined) return allowed;
  return Promise.all(pending).then((results): Decision => {
    for (const r of results) if (r !== undefined) return fail(r, principal, authz.rule);
    return allowed;
  });
}

/**
 * The upstream answered 401 to the credential the mutators wrote (`sent`, the decision's headers):
 * each mutator forgets what it would send again (a cached minted token).
 */
export function forgetRejectedCredential(
  pipeline: Pipeline,
  principal: Principal | undefined,
  rule: CompiledRule | undefined,
  sent: Readonly<Record<string, string>>,
): void {
  for (const m of pipeline.mutators) m.rejected?.({ principal, rule }, sent);
}

function fail(error: TesseraError, principal: Principal | undefined, rule: CompiledRule | undefined): Decision {
  const d: { ok: false; error: TesseraError; principal?: Principal; rule?: CompiledRule } = { ok: false, error };
  if (principal) d.principal = principal;
  if (rule) d.rule = rule;
  return d;
}

/**
 * A refusal that spends the caller's auth-failure bucket: the token itself was refused (RFC 6750
 * `invalid_token`: malformed, expired, revoked, inactive, unknown, for another audience). Not a
 * missing token (a client's first request, answered with the challenge), a malformed request, a
 * DPoP proof refused for a valid token, nor an endpoint that gave no answer (not the caller's doing).
 */
function spendsFailure(result: AuthnResult): boolean {
  return !result.ok && result.error.error === 'invalid_token';
}

/**
 * Only the authentication stage (see {@link afterAuthn}), behind the auth-failure limit when the
 * route has one: an address whose bucket is empty is refused (429 `auth_failure_rate_limited`)
 * before the verifier sees its token. The bucket is spent only by a failure ({@link spendsFailure}).
 * An address with a bucket (one that failed lately) takes its token before authenticating and gets
 * it back unless it fails, so concurrent requests from it cannot all pass the check before the
 * first failure is counted; any other address costs one map lookup.
 */
export function authenticate(pipeline: Pipeline, request: GatewayRequest): AuthnResult | Promise<AuthnResult> {
  const stage = pipeline.authn;
  const limiter = pipeline.authFailures;
  if (limiter === undefined) {
    const outcome = stage.authenticate(request);
    if (outcome instanceof Promise) return outcome.then((o) => stage.settle(o));
    return stage.settle(outcome);
  }
  // An IPv6 caller by its /64, as `rate_limit.key: ip` counts it.
  const key = addressKey(request.remoteAddress);
  let reserved = false;
  if (limiter.has(key)) {
    const wait = limiter.take(key);
    if (wait > 0) return { ok: false, error: new TesseraError('auth_failure_rate_limited', { retryAfter: wait }) };
    reserved = true;
  }
  const account = (result: AuthnResult): AuthnResult => {
    if (spendsFailure(result)) {
      if (!reserved) limiter.take(key);
    } else if (reserved) limiter.refund(key);
    return result;
  };
  // A stage that failed (threw or rejected) is no failed authentication: the reserved token goes back.
  const failed = (e: unknown): never => {
    if (reserved) limiter.refund(key);
    throw e;
  };
  try {
    const outcome = stage.authenticate(request);
    if (outcome instanceof Promise) return outcome.then((o) => account(stage.settle(o))).catch(failed);
    return account(stage.settle(outcome));
  } catch (e) {
    return failed(e);
  }
}

/**
 * Run the pipeline for a request on its route.
 *
 * @example
 * ```ts
 * const decision = await decide(route.pipeline, request);
 * if (decision.ok) forward(request, decision.headers);
 * ```
 */
export function decide(pipeline: Pipeline, request: GatewayRequest): Decision | Promise<Decision> {
  const authn = authenticate(pipeline, request);
  if (authn instanceof Promise) return authn.then((a) => afterAuthn(pipeline, request, a));
  return afterAuthn(pipeline, request, authn);
}
