/**
 * The authorization code grant at the token endpoint (RFC 6749 §4.1.3, OAuth 2.1 §4.1.3): the code
 * is checked against everything it was bound to when the person approved (client, redirect URI,
 * PKCE challenge, resources, and the DPoP key the request's `dpop_jkt` named, RFC 9449 §10), then
 * redeemed once, atomically, into a root grant carrying the person as subject and the approved
 * scopes, with an access token for the approved resource and a refresh token (rotated and
 * reuse-detected by the refresh grant). A code presented again, with its verifier, revokes the
 * grant issued from it and everything derived from that grant (RFC 6749 §4.1.2).
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../../config/token-service-schema.ts';
import { OAuthError } from '../../core/oauth-errors.ts';
import type { Store } from '../../store/contract.ts';
import type { AccessTokens } from '../access-tokens.ts';
import type { CompiledClient } from '../clients.ts';
import { accessTokenTtl, type BaseContext, newGrantId, type OAuthRequest, requireGrantType, SKEW, type TokenResponse } from '../context.ts';
import { confineAdminScope, param, required } from '../params.ts';
import { isVerifier, verifierMatches } from '../pkce.ts';
import type { RevocationFeed } from '../revocation-feed.ts';
import { enforceCommitted, grantEntries, loginSessionScope } from '../revoke.ts';
import { REFRESH_TOKEN_PREFIX, randomSecret, sha256, tokenHash } from '../secrets.ts';
import { audiencesStillHeld, grantScopesLeft } from './still-held.ts';

export interface AuthorizationCodeContext extends BaseContext {
  readonly config: Pick<
    ResolvedTokenServiceConfig,
    'access_token_ttl' | 'max_access_token_ttl' | 'refresh_token_ttl' | 'authorization' | 'admin' | 'adminAudience'
  >;
  readonly store: Pick<Store, 'getAuthorizationCode' | 'redeemAuthorizationCode'>;
  readonly feed: Pick<RevocationFeed, 'catchUp' | 'applyCommitted'>;
  readonly tokens: Pick<AccessTokens, 'signSoon'>;
}

export async function authorizationCode(
  ctx: AuthorizationCodeContext,
  client: CompiledClient,
  req: OAuthRequest,
  jkt: string | undefined,
): Promise<TokenResponse> {
  requireGrantType(client, 'authorization_code');
  const code = required(req.params, 'code');
  const hash = sha256(code);
  const now = ctx.now();
  const record = await ctx.store.getAuthorizationCode(hash);
  if (record === undefined || record.clientId !== client.id) throw new OAuthError('authorization_code_invalid');
  // The bindings every presentation must prove, a replay included: only the client holds the
  // verifier, so a code read from a browser history or an access log neither redeems nor, replayed,
  // revokes the person's grant (RFC 6749 §4.1.2's revocation is for a reuse by the client's own
  // side, which is what a matching verifier shows; node-oidc-provider checks PKCE first too).
  // RFC 6749 §4.1.3: identical to the authorization request's redirect_uri when it carried one.
  const redirectUri = param(req.params, 'redirect_uri');
  if (
    record.redirectUri !== null
      ? redirectUri !== record.redirectUri
      : redirectUri !== undefined && redirectUri !== client.record.redirectUris[0]
  ) {
    throw new OAuthError('authorization_code_redirect_mismatch');
  }
  const verifier = param(req.params, 'code_verifier');
  if (verifier === undefined) throw new OAuthError('pkce_verifier_missing');
  if (!isVerifier(verifier)) throw new OAuthError('pkce_verifier_malformed');
  if (!verifierMatches(verifier, record.codeChallenge)) throw new OAuthError('pkce_verifier_mismatch');
  // RFC 9449 §10: a code bound to a DPoP key (the request's dpop_jkt) redeems only with a proof of
  // that key. A binding like the verifier: a thief holding both code and verifier, but not the
  // key, neither redeems the code nor, replaying a redeemed one, revokes the person's grant.
  if (record.jkt !== null && record.jkt !== jkt) throw new OAuthError('code_dpop_key_mismatch');
  let audiences = record.audiences;
  let scopes = record.scopes;
  // A redeemed code goes straight to the redemption, which detects the replay whatever its age or
  // resources; a current one is checked for those before it is spent.
  if (record.consumedAt === null) {
    if (record.expiresAt <= now) throw new OAuthError('authorization_code_invalid');
    // RFC 8707 §2.2: the token request may name a subset of the approved resources; another
    // resource of the client's, which the person never saw on the consent page, is not granted.
    // What an administrator took from the client since the person approved (within code_ttl) is
    // not in the token, as it would not be in a refresh's; the grant keeps what was approved.
    audiences = audiencesStillHeld(req.params, record.audiences, client);
    scopes = grantScopesLeft(record.scopes, client, ctx.config.admin.scope);
    // The authorization endpoint approves the admin scope for the admin audience alone; a code
    // approved otherwise (by an older version) is refused before it is spent, not redeemed into a
    // token another resource server could replay at the admin API.
    confineAdminScope(scopes, audiences, scopes, ctx.config);
  }
  const grantId = newGrantId();
  const grantExp = now + ctx.config.authorization.grant_ttl;
  const refreshToken = client.grantTypes.has('refresh_token') ? randomSecret(REFRESH_TOKEN_PREFIX) : undefined;
  const redemption = await ctx.store.redeemAuthorizationCode(hash, {
    clientId: client.id,
    // A revocation of the subject ends its login sessions: a code approved in one of them after the
    // revocation (by an instance that had not read it yet) is refused by the store, which reads the
    // revocation log itself rather than this instance's copy of it.
    loginScope: loginSessionScope(record.issuer),
    grant: {
      id: grantId,
      parentId: null,
      kind: 'authorization_code',
      issuer: record.issuer,
      subject: record.subject,
      clientId: client.id,
      act: null,
      scopes: record.scopes,
      audiences: record.audiences,
      createdAt: now,
      expiresAt: grantExp,
    },
    refreshToken:
      refreshToken === undefined
        ? null
        : {
            hash: sha256(refreshToken),
            grantId,
            clientId: client.id,
            createdAt: now,
            expiresAt: Math.min(now + ctx.config.refresh_token_ttl, grantExp),
            rotatedAt: null,
            revokedAt: null,
            // RFC 9449 §5: a public client's refresh token is bound to the proof key (a confidential
            // client's is already bound to the client's credentials).
            ...(jkt !== undefined && client.record.authMethod === 'none' ? { jkt } : {}),
          },
    now,
    entryExpiresAt: now + ctx.config.max_access_token_ttl + SKEW,
  });
  if (redemption.status === 'reused') {
    await enforceCommitted(ctx, now, grantEntries(redemption.revokedGrantIds, now, now + ctx.config.max_access_token_ttl + SKEW));
    ctx.emit({
      kind: 'authorization_code.reuse_detected',
      decision: 'deny',
      reason: 'authorization_code_reused',
      subject: record.subject,
      client_id: client.id,
      token_hash: tokenHash(code),
      ...(redemption.grantId !== null ? { delegation_id: redemption.grantId } : {}),
      detail: { revoked_grants: [...redemption.revokedGrantIds] },
    });
    for (const id of redemption.revokedGrantIds) {
      ctx.emit({ kind: 'grant.revoked', reason: 'authorization_code_reused', client_id: client.id, delegation_id: id }, { revoked: true });
    }
    throw new OAuthError('authorization_code_reused');
  }
  if (redemption.status === 'client_inactive') throw new OAuthError('client_disabled');
  if (redemption.status === 'subject_revoked') throw new OAuthError('authorization_code_subject_revoked');
  if (redemption.status !== 'redeemed') throw new OAuthError('authorization_code_invalid');
  const { grant } = redemption;
  const exp = Math.min(now + accessTokenTtl(ctx.config, client), grantExp);
  const { token, jti } = await ctx.tokens.signSoon({
    client,
    subject: grant.subject,
    audiences,
    scopes,
    act: null,
    grantId: grant.id,
    now,
    exp,
    jkt,
  });
  ctx.emit({
    kind: 'token.issued',
    reason: 'ok',
    subject: grant.subject,
    client_id: client.id,
    delegation_id: grant.id,
    jti,
    scopes_granted: scopes,
    ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
    // The code's short hash links the grant to its `authorization.approved` event (tessera trace).
    detail: { grant_type: 'authorization_code', aud: [...audiences], exp, code_hash: tokenHash(code) },
  });
  return {
    access_token: token,
    token_type: jkt === undefined ? 'Bearer' : 'DPoP',
    expires_in: exp - now,
    ...(scopes.length ? { scope: scopes.join(' ') } : {}),
    ...(refreshToken !== undefined ? { refresh_token: refreshToken } : {}),
  };
}
