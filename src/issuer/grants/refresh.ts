/**
 * The refresh-token grant (RFC 6749 §6): rotation on every use, reuse detection
 * that revokes the family, scope and audience that only narrow.
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../../config/token-service-schema.ts';
import type { JsonObject } from '../../core/jose/json.ts';
import { OAuthError } from '../../core/oauth-errors.ts';
import type { ScopeModel } from '../../core/scopes.ts';
import type { GrantRecord, Store } from '../../store/contract.ts';
import type { AccessTokens } from '../access-tokens.ts';
import { type CompiledClient, withoutUnnamed } from '../clients.ts';
import { accessTokenTtl, type BaseContext, chainOf, type OAuthRequest, requireGrantType, SKEW, type TokenResponse } from '../context.ts';
import { confineAdminScope, namesTarget, narrowScopes, param, parseScope, required } from '../params.ts';
import type { RevocationFeed } from '../revocation-feed.ts';
import { enforceCommitted, grantEntries } from '../revoke.ts';
import { REFRESH_TOKEN_PREFIX, randomSecret, sha256, tokenHash } from '../secrets.ts';
import { audiencesStillHeld, grantAudiencesLeft, grantScopesLeft } from './still-held.ts';

export interface RefreshContext extends BaseContext {
  readonly config: Pick<
    ResolvedTokenServiceConfig,
    | 'access_token_ttl'
    | 'max_access_token_ttl'
    | 'refresh_token_ttl'
    | 'refresh_reuse_grace'
    | 'refresh_reuse_interval'
    | 'admin'
    | 'adminAudience'
  >;
  readonly store: Pick<Store, 'getRefreshToken' | 'getGrant' | 'rotateRefreshToken'>;
  readonly scopes: ScopeModel;
  readonly feed: Pick<RevocationFeed, 'catchUp' | 'applyCommitted'>;
  readonly tokens: Pick<AccessTokens, 'signSoon'>;
}

export async function refresh(
  ctx: RefreshContext,
  client: CompiledClient,
  req: OAuthRequest,
  jkt: string | undefined,
): Promise<TokenResponse> {
  requireGrantType(client, 'refresh_token');
  const presented = required(req.params, 'refresh_token');
  const hash = sha256(presented);
  const now = ctx.now();
  const record = await ctx.store.getRefreshToken(hash);
  if (record === undefined || record.clientId !== client.id) throw new OAuthError('refresh_token_invalid');
  // RFC 9449 §5: a bound token is usable only with a proof of its key. Checked before anything is
  // spent or revoked: a holder without the key can neither refresh nor trigger reuse detection.
  if (record.jkt !== undefined && record.jkt !== jkt) throw new OAuthError('refresh_token_proof_mismatch');
  // A current token's request is checked before it is spent; a rotated one goes straight to the
  // rotation, which detects the reuse whatever else the request says.
  let scopes: readonly string[] | undefined;
  let audiences: readonly string[] | undefined;
  const requestedOf = (grant: GrantRecord) => {
    const requested = parseScope(param(req.params, 'scope'));
    // RFC 6749 §6: the new access token's scope may narrow, never widen; a grant of `*` never
    // held the admin scope, which is granted by name only.
    const held = withoutUnnamed(ctx.scopes.expand(grant.scopes), grant.scopes, ctx.config.admin.scope);
    const { admin, adminAudience } = ctx.config;
    audiences = audiencesStillHeld(req.params, grant.audiences, client);
    // Named without a target, the admin scope narrows the token to the admin audience alone.
    if (!namesTarget(req.params) && requested?.includes(admin.scope) && audiences.includes(adminAudience)) audiences = [adminAudience];
    scopes = confineAdminScope(
      requested ? narrowScopes(requested, [held, client.scopes]) : grantScopesLeft(grant.scopes, client, ctx.config.admin.scope),
      audiences,
      requested,
      ctx.config,
    );
  };
  if (record.rotatedAt === null && record.revokedAt === null) {
    const grant = await ctx.store.getGrant(record.grantId);
    if (grant === undefined) throw new OAuthError('refresh_token_invalid');
    requestedOf(grant);
  }
  const next = randomSecret(REFRESH_TOKEN_PREFIX);
  const rotation = await ctx.store.rotateRefreshToken(hash, {
    clientId: client.id,
    nextHash: sha256(next),
    nextExpiresAt: now + ctx.config.refresh_token_ttl,
    now,
    graceSeconds: ctx.config.refresh_reuse_grace,
    reuseIntervalSeconds: ctx.config.refresh_reuse_interval,
    entryExpiresAt: now + ctx.config.max_access_token_ttl + SKEW,
    // RFC 9449 §5: a refresh token issued to a public client on a request with a proof is bound to
    // its key, also when the token it replaces was not (the client began using DPoP meanwhile).
    ...(jkt !== undefined && client.record.authMethod === 'none' ? { bindJkt: jkt } : {}),
  });
  if (rotation.status === 'reused') {
    await enforceCommitted(ctx, now, grantEntries(rotation.revokedGrantIds, now, now + ctx.config.max_access_token_ttl + SKEW));
    ctx.emit({
      kind: 'refresh.reuse_detected',
      decision: 'deny',
      reason: 'refresh_token_reused',
      client_id: client.id,
      delegation_id: rotation.grantId,
      token_hash: tokenHash(presented),
      detail: { family: rotation.grantId, revoked_grants: [...rotation.revokedGrantIds] },
    });
    for (const id of rotation.revokedGrantIds) {
      ctx.emit({ kind: 'grant.revoked', reason: 'refresh_token_reused', client_id: client.id, delegation_id: id }, { revoked: true });
    }
    throw new OAuthError('refresh_token_reused');
  }
  // Within refresh_reuse_grace a reuse keeps the family, but is told apart from an unknown token.
  if (rotation.status === 'grace') throw new OAuthError('refresh_token_reused_in_grace');
  if (rotation.status !== 'rotated') throw new OAuthError('refresh_token_invalid');
  const { grant } = rotation;
  // A retry within refresh_reuse_interval: its request is checked now, against the grant as it is
  // (a retry of a request that narrowed the scope or audience is narrowed the same way).
  if (rotation.retry) requestedOf(grant);
  const ttl = accessTokenTtl(ctx.config, client);
  const exp = Math.min(now + ttl, grant.expiresAt ?? Number.POSITIVE_INFINITY);
  // A token rotated within the grace period gets the grant's own scopes and audiences, with the
  // admin scope only for the admin audience alone, as any default-scoped token.
  audiences ??= grantAudiencesLeft(grant.audiences, client);
  const granted =
    scopes ?? confineAdminScope(grantScopesLeft(grant.scopes, client, ctx.config.admin.scope), audiences, undefined, ctx.config);
  const { token, jti } = await ctx.tokens.signSoon({
    client,
    subject: grant.subject,
    audiences,
    scopes: granted,
    act: grant.act as JsonObject | null,
    grantId: grant.id,
    now,
    exp,
    jkt,
    subjectIssuer: grant.issuer,
  });
  ctx.emit({
    kind: 'token.refreshed',
    reason: 'ok',
    subject: grant.subject,
    client_id: client.id,
    delegation_id: grant.id,
    actor_chain: chainOf(grant.act),
    jti,
    scopes_granted: granted,
    ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
    detail: { aud: [...audiences], exp, ...(rotation.retry ? { reuse_interval: true } : {}) },
  });
  return {
    access_token: token,
    token_type: jkt === undefined ? 'Bearer' : 'DPoP',
    expires_in: exp - now,
    ...(granted.length ? { scope: granted.join(' ') } : {}),
    refresh_token: next,
  };
}
