/**
 * Development minting (`tessera token mint`): a token for a registered client without
 * authenticating it, on its standing grant as client credentials would, or on a new root grant for
 * a given subject.
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../../config/token-service-schema.ts';
import { validIdentity } from '../../core/identity.ts';
import { OAuthError } from '../../core/oauth-errors.ts';
import type { GrantRecord, Store } from '../../store/contract.ts';
import type { AccessTokens } from '../access-tokens.ts';
import type { ClientRegistry } from '../clients.ts';
import { accessTokenTtl, type BaseContext, newGrantId, type TokenResponse } from '../context.ts';
import { confineAdminScope, narrowScopes, targetsFor } from '../params.ts';
import type { StandingGrants } from './standing.ts';

export interface MintContext extends BaseContext {
  readonly issuer: string;
  readonly config: Pick<ResolvedTokenServiceConfig, 'access_token_ttl' | 'max_access_token_ttl' | 'admin' | 'adminAudience'>;
  readonly store: Pick<Store, 'createGrant'>;
  readonly clients: Pick<ClientRegistry, 'get'>;
  readonly tokens: Pick<AccessTokens, 'signSoon'>;
  readonly standing: Pick<StandingGrants, 'get'>;
}

export interface MintOptions {
  readonly clientId: string;
  readonly scopes?: readonly string[];
  readonly audiences?: readonly string[];
  readonly ttl?: number;
  readonly subject?: string;
  /** Who minted it (`cli`), recorded as `detail.by` in `token.issued`. */
  readonly by?: string;
}

export async function mint(ctx: MintContext, options: MintOptions): Promise<TokenResponse & { grant_id: string; jti: string }> {
  // A token for nobody: no subject is "" (a client id, the default, never is); nor one the login
  // paths would refuse (a space, a control character, unbounded).
  if (options.subject !== undefined && !validIdentity(options.subject)) throw new OAuthError('request_parameter_invalid');
  const client = await ctx.clients.get(options.clientId);
  if (client === undefined) throw new OAuthError('client_unknown');
  if (client.record.disabled) throw new OAuthError('client_disabled');
  // RFC 9449 §5.2: a client registered as always using DPoP gets no bearer token, from the token
  // endpoint or from here (a mint proves no key to bind the token to).
  if (client.record.dpopBoundAccessTokens) throw new OAuthError('client_dpop_proof_required');
  const requested = options.scopes?.length ? options.scopes : undefined;
  const params = new URLSearchParams();
  for (const a of options.audiences ?? []) params.append('audience', a);
  const admin = ctx.config;
  const audiences = targetsFor(params, client.audiences, requested, admin);
  const scopes = confineAdminScope(
    requested ? narrowScopes(requested, [client.scopes]) : client.record.scopes,
    audiences,
    requested,
    admin,
  );
  const now = ctx.now();
  const ttl = Math.min(options.ttl ?? accessTokenTtl(ctx.config, client), ctx.config.max_access_token_ttl);
  let grantId: string;
  if (options.subject === undefined) grantId = await ctx.standing.get(client, scopes, audiences, now, ttl);
  else {
    const grant = await ctx.store.createGrant(
      {
        id: newGrantId(),
        parentId: null,
        kind: 'mint',
        issuer: ctx.issuer,
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
    if (grant === 'client_inactive') throw new OAuthError('client_disabled');
    grantId = (grant as GrantRecord).id;
  }
  const subject = options.subject ?? client.id;
  const { token, jti } = await ctx.tokens.signSoon({ client, subject, audiences, scopes, act: null, grantId, now, exp: now + ttl });
  ctx.emit({
    kind: 'token.issued',
    reason: 'mint',
    subject,
    client_id: client.id,
    delegation_id: grantId,
    jti,
    scopes_granted: scopes,
    detail: { grant_type: 'mint', aud: audiences, exp: now + ttl, ...(options.by !== undefined ? { by: options.by } : {}) },
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
