/**
 * The client-credentials grant (RFC 6749 §4.4): a token for the client itself, within its scopes
 * and audiences, on the client's standing grant. This is the hot path of the token endpoint.
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../../config/token-service-schema.ts';
import type { AccessTokens } from '../access-tokens.ts';
import type { CompiledClient } from '../clients.ts';
import { accessTokenTtl, type BaseContext, type OAuthRequest, requireGrantType, type TokenResponse } from '../context.ts';
import { confineAdminScope, narrowScopes, param, parseScope, targetsFor } from '../params.ts';
import type { StandingGrants } from './standing.ts';

export interface ClientCredentialsContext extends BaseContext {
  readonly config: Pick<ResolvedTokenServiceConfig, 'access_token_ttl' | 'max_access_token_ttl' | 'admin' | 'adminAudience'>;
  readonly tokens: Pick<AccessTokens, 'signSoon'>;
  readonly standing: Pick<StandingGrants, 'get'>;
}

export async function clientCredentials(
  ctx: ClientCredentialsContext,
  client: CompiledClient,
  req: OAuthRequest,
  jkt: string | undefined,
): Promise<TokenResponse> {
  requireGrantType(client, 'client_credentials');
  const requested = parseScope(param(req.params, 'scope'));
  const admin = ctx.config;
  const audiences = targetsFor(req.params, client.audiences, requested, admin);
  const scopes = confineAdminScope(
    requested ? narrowScopes(requested, [client.scopes]) : client.record.scopes,
    audiences,
    requested,
    admin,
  );
  const now = ctx.now();
  const ttl = accessTokenTtl(ctx.config, client);
  const grantId = await ctx.standing.get(client, scopes, audiences, now, ttl);
  const { token, jti } = await ctx.tokens.signSoon({
    client,
    subject: client.id,
    audiences,
    scopes,
    act: null,
    grantId,
    now,
    exp: now + ttl,
    jkt,
  });
  ctx.emit({
    kind: 'token.issued',
    reason: 'ok',
    subject: client.id,
    client_id: client.id,
    delegation_id: grantId,
    jti,
    scopes_granted: scopes,
    ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
    detail: { grant_type: 'client_credentials', aud: audiences, exp: now + ttl },
  });
  return {
    access_token: token,
    token_type: jkt === undefined ? 'Bearer' : 'DPoP',
    expires_in: ttl,
    ...(scopes.length ? { scope: scopes.join(' ') } : {}),
  };
}
