/**
 * Introspection (RFC 7662) of this issuer's access and refresh tokens, for the client the token
 * was issued to or addressed to.
 *
 * @module
 */
import type { ThrottleWindows, TokenBucketLimiter } from '../core/ratelimit.ts';
import type { Store } from '../store/contract.ts';
import { type AccessTokens, subjectId } from './access-tokens.ts';
import type { ClientRegistry, CompiledClient } from './clients.ts';
import { type AuthFailureLimit, type BaseContext, type OAuthRequest, openTokenRequest } from './context.ts';
import { REFRESH_TOKEN_PREFIX, sha256, tokenHash } from './secrets.ts';

export interface IntrospectContext extends BaseContext {
  readonly issuer: string;
  readonly store: Pick<Store, 'getRefreshToken' | 'getGrant' | 'tokenRevoked'>;
  readonly clients: Pick<ClientRegistry, 'authenticateUnspent' | 'checkOrigin'>;
  readonly tokens: Pick<AccessTokens, 'verifyFresh' | 'isRevoked'>;
  /**
   * Per-client bucket of the RFC 7662 endpoint (`introspection_rate_limit`), keyed by the
   * authenticated client id; `undefined` when turned off.
   */
  readonly introspectionLimiter?: Pick<TokenBucketLimiter, 'take' | 'refund'> | undefined;
  /** The throttled windows of the clients' buckets: a refusal is audited once per window of its client. */
  readonly introspectionThrottled?: Pick<ThrottleWindows, 'refused'> | undefined;
  /**
   * Failed client authentications by connecting address, shared with the token and revocation
   * endpoints (`auth_failure_limit`); `undefined` when turned off.
   */
  readonly authFailures?: AuthFailureLimit | undefined;
}

/** RFC 7662 (see `TokenService.introspect`). */
export async function introspectRequest(ctx: IntrospectContext, req: OAuthRequest): Promise<Record<string, unknown>> {
  // Each introspection reads the store and writes an audit event: the client's bucket is spent
  // after its authentication (a caller without its credentials spends nothing of it), and an
  // address failing to authenticate spends its own, so neither a client nor a guesser of client
  // secrets can grow the audit trail at its request rate. Their refusals are audited once per
  // throttled window, or a flood of refused requests would write one event each.
  const { client, token } = await openTokenRequest(ctx, req, 'introspection.denied', {
    rateLimit: { limiter: ctx.introspectionLimiter, code: 'introspection_rate_limited' },
    authFailures: ctx.authFailures,
    throttleWindows: ctx.introspectionThrottled,
  });
  const now = ctx.now();
  const inactive = { active: false };
  const result = await introspect(ctx, token, client, now);
  ctx.emit({
    kind: 'token.introspected',
    reason: result.active ? 'ok' : 'inactive',
    decision: result.active ? 'allow' : 'deny',
    client_id: client.id,
    token_hash: tokenHash(token),
    ...(typeof result.grant_id === 'string' ? { delegation_id: result.grant_id } : {}),
  });
  return result.active ? result : inactive;
}

async function introspect(ctx: IntrospectContext, token: string, client: CompiledClient, now: number): Promise<Record<string, unknown>> {
  if (token.startsWith(REFRESH_TOKEN_PREFIX)) {
    const r = await ctx.store.getRefreshToken(sha256(token));
    if (!r || r.clientId !== client.id || r.rotatedAt !== null || r.revokedAt !== null || r.expiresAt <= now) return { active: false };
    const g = await ctx.store.getGrant(r.grantId);
    if (!g || g.revokedAt !== null || (g.expiresAt !== null && g.expiresAt <= now)) return { active: false };
    return {
      active: true,
      token_type: 'refresh_token',
      iss: ctx.issuer,
      sub: g.subject,
      // As the grant's access tokens carry it (RFC 9493 §4.1).
      ...(g.issuer !== ctx.issuer ? { sub_id: subjectId(g.issuer, g.subject, ctx.issuer) } : {}),
      client_id: r.clientId,
      ...(g.scopes.length ? { scope: g.scopes.join(' ') } : {}),
      iat: r.createdAt,
      exp: r.expiresAt,
      grant_id: g.id,
      ...(g.act !== null ? { act: g.act } : {}),
    };
  }
  const own = await ctx.tokens.verifyFresh(token);
  if (own === undefined || own.exp <= now || ctx.tokens.isRevoked(own)) return { active: false };
  if (own.clientId !== client.id && !own.audiences.some((a) => client.audiences.has(a))) return { active: false };
  // The authoritative answer: another process (the CLI, another instance) may have revoked the
  // grant or this token since the last sync. Both are revoked in the store only: a subject or
  // client revocation reaches this issuer's tokens through their grants. A live token whose grant
  // the store does not hold (deleted by hand, or a token signed with a key of this service outside
  // it) stands for nothing that can be revoked: inactive, as the admin API refuses it.
  const [grant, revoked] = await Promise.all([ctx.store.getGrant(own.grantId), ctx.store.tokenRevoked(own.jti)]);
  if (revoked || grant === undefined || grant.revokedAt !== null) return { active: false };
  return { active: true, token_type: own.jkt === undefined ? 'Bearer' : 'DPoP', ...own.claims };
}
