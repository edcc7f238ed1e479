/**
 * Token exchange (RFC 8693): a narrowed slice of a subject's authority delegated to the
 * authenticated client, with the prior actor chain nested under the new actor and a child grant
 * recorded. Also the gateway's in-process exchange ({@link issueForUpstream}).
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../../config/token-service-schema.ts';
import type { JsonObject } from '../../core/jose/json.ts';
import { OAuthError, type OAuthErrorCode } from '../../core/oauth-errors.ts';
import type { UpstreamTokenIssuer } from '../../core/ports.ts';
import type { ScopeModel } from '../../core/scopes.ts';
import { type Principal, STATIC_SUBJECT_PREFIX } from '../../core/verify/principal.ts';
import type { VerifyResult } from '../../core/verify/verifier.ts';
import type { GrantKind, Store } from '../../store/contract.ts';
import type { AccessTokens } from '../access-tokens.ts';
import { type ClientRegistry, type CompiledClient, withoutUnnamed } from '../clients.ts';
import {
  accessTokenTtl,
  type BaseContext,
  chainOf,
  newGrantId,
  type OAuthRequest,
  requireGrantType,
  type TokenResponse,
} from '../context.ts';
import { confineAdminScope, covers, narrowScopes, param, parseScope, required, targetsFor } from '../params.ts';
import { REFRESH_TOKEN_PREFIX, randomSecret, sha256 } from '../secrets.ts';

/** The RFC 8693 token exchange grant type. */
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** The RFC 8693 token type of an access token (`subject_token_type`, `issued_token_type`). */
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SUBJECT_TOKEN_TYPES = new Set([ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]);

export interface ExchangeContext extends BaseContext {
  readonly issuer: string;
  readonly config: Pick<
    ResolvedTokenServiceConfig,
    'access_token_ttl' | 'max_access_token_ttl' | 'refresh_token_ttl' | 'max_chain_depth' | 'admin' | 'adminAudience'
  >;
  readonly store: Pick<Store, 'createGrant' | 'createRefreshToken' | 'getGrant'>;
  readonly scopes: ScopeModel;
  readonly tokens: Pick<AccessTokens, 'sign' | 'verifyFresh' | 'isRevoked'>;
  /** A subject or actor of another issuer may not pass for a client (or a static token). */
  readonly clients: Pick<ClientRegistry, 'get' | 'couldPassForClient'>;
  /** Validates subject and actor tokens from trusted external issuers. */
  readonly external: { verifyToken(token: string): Promise<VerifyResult> } | undefined;
  /**
   * Per external issuer, the only clients that may present its tokens as subject or actor token
   * (`issuers[].exchange_clients`); an issuer absent from the map lets any exchange client.
   */
  readonly exchangeClients: ReadonlyMap<string, ReadonlySet<string>>;
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
  /** The token's `jti`, when this service issued it: revoking the token revokes what was exchanged from it. */
  readonly jti: string | null;
  readonly mayAct: unknown;
  /** The subject token's `cnf.jkt`: the exchange must prove possession of that key. */
  readonly jkt: string | undefined;
  /** The client the token was issued to (`client_id`), when it names one. */
  readonly clientId: string | undefined;
  /** The token's `azp` (OIDC Core §2, the party it was issued to) as it is, when present. */
  readonly azp?: unknown;
  /** The token's audiences when this service issued it; `undefined` for an external token. */
  readonly ownAudiences: readonly string[] | undefined;
  /** The gateway's caller presented this static token (its subject is then its own). */
  readonly staticTokenId?: string | undefined;
  /**
   * Another issuer's token: the whole second it was issued in (0 without `iat`, as the revocation
   * list reads it), held against the subject's revocations when its root grant is created.
   * `undefined` for this issuer's own tokens and static ones, which no subject entry concerns.
   */
  readonly issuedAt?: number | undefined;
}

/** Who the new token's `act` names: the client itself, or the party its actor token stands for. */
interface Actor {
  readonly issuer: string;
  readonly subject: string;
  /** The actor token's grant, when this service issued it: the store refuses it once revoked, and revoking it revokes what was exchanged with it. */
  readonly grantId: string | null;
  /** The actor token's `jti`, when this service issued it: revoking the token revokes what was exchanged with it. */
  readonly jti: string | null;
  /** The actor token's `exp` (epoch seconds): no token derived with it outlives this. Infinity for the client itself. */
  readonly exp: number;
}

/** A verified principal (external token, or the gateway's caller) as a delegating party. */
function partyFromPrincipal(
  principal: Principal,
  own: { readonly grantId: string; readonly jti: string | null } | null,
  expCap = Number.POSITIVE_INFINITY,
): Party {
  return {
    issuer: principal.issuer,
    subject: principal.subject as string,
    scopes: principal.scopes,
    // Whole seconds, rounded down: a NumericDate may be fractional (RFC 7519 §2), the store keeps integers.
    exp: Math.floor(Math.min(principal.expiresAt, expCap)),
    act: (principal.claims.act as JsonObject | undefined) ?? null,
    grantId: own?.grantId ?? null,
    jti: own?.jti ?? null,
    mayAct: principal.claims.may_act,
    jkt: principal.confirmation?.jkt,
    clientId: principal.clientId,
    azp: principal.claims.azp,
    ownAudiences: undefined,
    staticTokenId: principal.kind === 'static' ? principal.staticTokenId : undefined,
    issuedAt: principal.kind === 'static' ? undefined : Math.floor(principal.issuedAt ?? 0),
  };
}

/**
 * Another issuer's actor chain as this issuer re-issues it. RFC 8693 §4.1 reads an `act` without
 * `iss` in the namespace of the token's issuer, which is now this one: each such entry gets the
 * other issuer's `iss` (its other members kept), so an identity provider cannot name this
 * service's clients as prior actors. An identity provider vouches for its own parties only: an
 * entry whose `iss` is another issuer's is refused, this issuer's (only its own tokens vouch for
 * its actors) and another trusted issuer's alike, since once this issuer signs the chain nothing
 * tells that identity provider's word from that issuer's (its agent named as having acted, in
 * every later check and in the audit trail). The verifier checked the chain's shape (objects,
 * string `sub` and `iss`, at most 32 deep).
 */
function underIssuer(act: JsonObject, issuer: string): JsonObject {
  // An empty iss is no issuer: a reader taking it for absent would read the actor as this issuer's.
  if (act.iss !== undefined && act.iss !== issuer) {
    throw new OAuthError('subject_token_act_names_issuer', {
      auditDetail: { token_issuer: issuer, act_issuer: String(act.iss) },
    });
  }
  const entry: JsonObject = { sub: act.sub as string, iss: issuer, ...act };
  const next = act.act;
  if (typeof next === 'object' && next !== null && !Array.isArray(next)) entry.act = underIssuer(next as JsonObject, issuer);
  return entry;
}

/**
 * Validate a subject or actor token: this issuer's own, or a trusted external issuer's that lets
 * `clientId` exchange its tokens.
 */
async function party(ctx: ExchangeContext, token: string, type: string, role: 'subject' | 'actor', clientId: string): Promise<Party> {
  const invalid: OAuthErrorCode = role === 'subject' ? 'subject_token_invalid' : 'actor_token_invalid';
  if (!SUBJECT_TOKEN_TYPES.has(type)) throw new OAuthError('token_type_unsupported');
  const now = ctx.now();
  const own = await ctx.tokens.verifyFresh(token);
  if (own !== undefined) {
    if (own.exp <= now || ctx.tokens.isRevoked(own)) throw new OAuthError(invalid);
    return {
      issuer: ctx.issuer,
      subject: own.subject,
      scopes: own.scopes,
      exp: own.exp,
      act: own.act,
      grantId: own.grantId,
      jti: own.jti,
      mayAct: own.claims.may_act,
      jkt: own.jkt,
      clientId: own.clientId,
      ownAudiences: own.audiences,
    };
  }
  if (ctx.external === undefined) throw new OAuthError(invalid);
  const result = await ctx.external.verifyToken(token);
  if (!result.ok) {
    // The caller gets `invalid` alone (RFC 8693 §2.2.2); the audit event says why the verifier
    // refused the token, so an operator can tell an expired token from a forged one.
    const { code, details } = result.error;
    throw new OAuthError(invalid, {
      auditDetail: details.claim === undefined ? { verifier_reason: code } : { verifier_reason: code, claim: details.claim },
    });
  }
  if (result.principal.subject === undefined || result.principal.issuer === ctx.issuer) throw new OAuthError(invalid);
  // The issuer's `audiences` say what its tokens are for (shared with the gateway), not who may
  // exchange them: a client not among its `exchange_clients` may not, however it came by the token.
  // The caller gets what an invalid token gets, so the refusal tells nothing of the token.
  const allowed = ctx.exchangeClients.get(result.principal.issuer);
  if (allowed !== undefined && !allowed.has(clientId)) {
    throw new OAuthError(role === 'subject' ? 'subject_token_client_not_allowed' : 'actor_token_client_not_allowed', {
      auditDetail: { token_issuer: result.principal.issuer },
    });
  }
  return partyFromPrincipal(result.principal, null);
}

/** An RFC 8693 token-exchange request of an authenticated (or operator-designated) client. */
export async function exchange(
  ctx: ExchangeContext,
  client: CompiledClient,
  req: OAuthRequest,
  jkt: string | undefined,
): Promise<TokenResponse> {
  requireGrantType(client, TOKEN_EXCHANGE);
  const p = req.params;
  const requestedType = param(p, 'requested_token_type');
  if (requestedType !== undefined && !SUBJECT_TOKEN_TYPES.has(requestedType)) throw new OAuthError('token_type_unsupported');
  const subject = await party(ctx, required(p, 'subject_token'), required(p, 'subject_token_type'), 'subject', client.id);
  // A sender-constrained subject token is only usable by the holder of its key (RFC 9449 §1).
  if (subject.jkt !== undefined && subject.jkt !== jkt) throw new OAuthError('subject_token_invalid');
  // One of this service's tokens is only exchanged by a party it was meant for: the client it was
  // issued to, a client among its audiences, or the client its may_act names. Holding someone
  // else's token is not enough (RFC 8693 §2.2.2: an unacceptable subject token is invalid_request).
  // External (IdP) tokens were already checked against the verifier's configured audiences.
  if (subject.ownAudiences !== undefined && subject.clientId !== client.id && !subject.ownAudiences.includes(client.id)) {
    const m = subject.mayAct as JsonObject | undefined;
    const named = typeof m === 'object' && m !== null && m.sub === client.id && (m.iss === undefined || m.iss === ctx.issuer);
    if (!named) throw new OAuthError('subject_token_not_permitted');
  }
  const actorToken = param(p, 'actor_token');
  const actorType = param(p, 'actor_token_type');
  // RFC 8693 §2.1: actor_token_type is required with actor_token and must not appear without it.
  if ((actorToken === undefined) !== (actorType === undefined)) throw new OAuthError('request_parameter_invalid');
  let actor: Actor = { issuer: ctx.issuer, subject: client.id, grantId: null, jti: null, exp: Number.POSITIVE_INFINITY };
  // The key a sender-constrained subject or actor token is bound to (this request proved it).
  let boundTo = subject.jkt;
  if (actorToken !== undefined) {
    const actorParty = await party(ctx, actorToken, actorType as string, 'actor', client.id);
    // The actor token must be the authenticated client's own (its client_id; a client-credentials
    // token's sub is that same id): a client may not name another party as the actor. Its sub
    // becomes the actor, so a token that stands for someone else is refused too: a delegated one
    // (act: its sub is the delegator, not the client) and one of this issuer for another subject.
    // An `azp` (OIDC Core §2) names the party the token was issued to as well, and is set by the
    // identity provider itself where `client_id` may be a claim a client configured (a hard-coded
    // claim mapper): one naming another party makes the token that party's, whatever client_id says.
    if (
      actorParty.clientId !== client.id ||
      (actorParty.azp !== undefined && actorParty.azp !== client.id) ||
      actorParty.act !== null ||
      (actorParty.ownAudiences !== undefined && actorParty.subject !== client.id)
    ) {
      throw new OAuthError('actor_token_not_client');
    }
    // Another issuer's actor named like another client is not that client (RFC 9068 §5): it would
    // meet a may_act naming the client, and pass for it wherever `act.iss` is not read.
    if (
      actorParty.issuer !== ctx.issuer &&
      actorParty.subject !== client.id &&
      (await ctx.clients.couldPassForClient(actorParty.subject))
    ) {
      throw new OAuthError('actor_token_subject_is_client');
    }
    // A sender-constrained actor token needs this request's DPoP proof of its key (RFC 9449 §1).
    if (actorParty.jkt !== undefined && actorParty.jkt !== jkt) throw new OAuthError('actor_token_proof_required');
    boundTo ??= actorParty.jkt;
    actor = actorParty;
  }
  const requested = parseScope(param(p, 'scope'));
  const audiences = targetsFor(p, client.audiences, requested, ctx.config);
  // The audience only narrows, unless the client is registered to re-target (exchange.retarget_audiences).
  if (subject.ownAudiences !== undefined && !client.record.exchangeRetargetAudiences) {
    for (const a of audiences) if (!subject.ownAudiences.includes(a)) throw new OAuthError('target_exceeds_subject');
  }
  const issued = await delegate(ctx, {
    client,
    subject,
    actor,
    requested,
    audiences,
    ttl: accessTokenTtl(ctx.config, client),
    kind: 'token_exchange',
    refresh: client.grantTypes.has('refresh_token'),
    jkt,
    refreshJkt: boundTo,
    ...(req.requestId !== undefined ? { requestId: req.requestId } : {}),
  });
  return {
    access_token: issued.token,
    // RFC 8693 §2.2.1: the type of what was issued. The token is a JWT usable as an access token,
    // so a client that asked for the JWT type is told it got one (and may check that it did).
    issued_token_type: requestedType === JWT_TOKEN_TYPE ? JWT_TOKEN_TYPE : ACCESS_TOKEN_TYPE,
    token_type: jkt === undefined ? 'Bearer' : 'DPoP',
    expires_in: issued.exp - issued.now,
    ...(issued.scopes.length ? { scope: issued.scopes.join(' ') } : {}),
    ...(issued.refreshToken !== undefined ? { refresh_token: issued.refreshToken } : {}),
  };
}

/**
 * Delegate a narrowed slice of `subject`'s authority to `client`, with `actor` as the new actor:
 * `may_act` honoured, the prior chain nested, scope ⊆ subject ∩ client, lifetime ≤ the subject's
 * and the actor token's,
 * a child grant (atomically refused when the parent grant, or the actor token's, is no longer active).
 */
async function delegate(
  ctx: ExchangeContext,
  spec: {
    readonly client: CompiledClient;
    readonly subject: Party;
    readonly actor: Actor;
    readonly requested: readonly string[] | undefined;
    readonly audiences: readonly string[];
    readonly ttl: number;
    readonly kind: GrantKind;
    readonly refresh: boolean;
    readonly jkt?: string | undefined;
    /**
     * The key the refresh token is bound to (RFC 9449 §5): that of a sender-constrained subject or
     * actor token. The binding is theirs, not the client's choice, so no refresh of the grant may
     * drop it (a refresh without a proof of the key would give a bearer token in their name).
     */
    readonly refreshJkt?: string | undefined;
    readonly requestId?: string;
  },
): Promise<{ token: string; jti: string; exp: number; now: number; scopes: readonly string[]; grantId: string; refreshToken?: string }> {
  const { client, subject, actor } = spec;
  const now = ctx.now();
  let prior = subject.act;
  if (subject.issuer !== ctx.issuer) {
    // RFC 9068 §5: a client_credentials token's `sub` is the client id, so another issuer's subject
    // with a client's id (in any case) would get tokens no one can tell from that client's own, and
    // one named `static:…` would pass for a static token (the authorization endpoint refuses such a
    // person too: login_subject_is_client). A static token's own `static:<id>` stands for itself.
    const ownStatic = subject.staticTokenId !== undefined && subject.subject === `${STATIC_SUBJECT_PREFIX}${subject.staticTokenId}`;
    if (!ownStatic && (await ctx.clients.couldPassForClient(subject.subject))) throw new OAuthError('subject_token_subject_is_client');
    if (prior !== null) prior = underIssuer(prior, subject.issuer);
  }
  // RFC 8693 §4.4: when the subject token names who may act for it, no one else may. A may_act
  // without iss names an identity of the subject token's issuer (§4.1), or this service's client
  // of that id; never a same-named identity of a third trusted issuer.
  if (subject.mayAct !== undefined) {
    const m = subject.mayAct as JsonObject;
    const ok =
      typeof m === 'object' &&
      m !== null &&
      m.sub === actor.subject &&
      (m.iss === undefined ? actor.issuer === subject.issuer || actor.issuer === ctx.issuer : m.iss === actor.issuer);
    if (!ok) throw new OAuthError('actor_not_permitted');
  }
  const act: JsonObject = { sub: actor.subject };
  if (actor.issuer !== ctx.issuer) act.iss = actor.issuer;
  if (prior !== null) act.act = prior;
  if (chainOf(act).length > ctx.config.max_chain_depth) throw new OAuthError('delegation_chain_too_deep');

  // The admin scope only by name, as for clients: a subject holding `*` never held it, so an
  // admin-capable client acting for that subject gets no admin token in the subject's name.
  const subjectScopes = withoutUnnamed(ctx.scopes.expand(subject.scopes), subject.scopes, ctx.config.admin.scope);
  const scopes = confineAdminScope(
    spec.requested ? narrowScopes(spec.requested, [subjectScopes, client.scopes]) : subject.scopes.filter((s) => covers(client.scopes, s)),
    spec.audiences,
    spec.requested,
    ctx.config,
  );
  // Neither the token nor its grant (so no refresh) outlives the actor token either: the actor's
  // authority to act ends with it.
  const grantExp = Math.min(subject.exp, actor.exp);
  const exp = Math.min(now + spec.ttl, grantExp);
  if (exp <= now) throw new OAuthError(subject.exp <= now ? 'subject_token_invalid' : 'actor_token_invalid');
  const grant = await ctx.store.createGrant(
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
      // This issuer's tokens exchanged: revoking either revokes this grant with its subtree (and the
      // store refuses this grant once either is revoked, even by another process).
      subjectJti: subject.jti,
      actorJti: actor.jti,
    },
    now,
    {
      // Another issuer's token begins a tree here: the store refuses it when the subject was revoked
      // at or after it was issued, even before this process's revocation list has that entry.
      ...(subject.grantId === null && subject.issuer !== ctx.issuer && subject.issuedAt !== undefined
        ? { subjectIssuedAt: subject.issuedAt }
        : {}),
      // This issuer's actor token: refused when its grant was revoked, as the parent is, even by
      // another instance whose revocation this process's list does not have yet; else recorded, so
      // that revoking the actor's grant (a compromised agent's) revokes this grant with its subtree.
      ...(actor.grantId !== null ? { actorGrantId: actor.grantId } : {}),
    },
  );
  if (grant === 'parent_inactive') throw new OAuthError('grant_inactive');
  // As the revocation list refuses it once it has the entry.
  if (grant === 'actor_inactive') throw new OAuthError('actor_token_invalid');
  if (grant === 'client_inactive') throw new OAuthError('client_disabled');
  // As the revocation list refuses it once it has the entry (the token is a revoked subject's).
  if (grant === 'subject_revoked') throw new OAuthError('subject_token_invalid');
  const { token, jti } = ctx.tokens.sign({
    client,
    subject: subject.subject,
    audiences: spec.audiences,
    scopes,
    act,
    grantId: grant.id,
    now,
    exp,
    jkt: spec.jkt,
    // The store's: a child grant takes its root's issuer, so a chained exchange still names the
    // identity provider, whatever the subject token says.
    subjectIssuer: grant.issuer,
  });
  let refreshToken: string | undefined;
  if (spec.refresh) {
    refreshToken = randomSecret(REFRESH_TOKEN_PREFIX);
    await ctx.store.createRefreshToken({
      hash: sha256(refreshToken),
      grantId: grant.id,
      clientId: client.id,
      createdAt: now,
      expiresAt: Math.min(now + ctx.config.refresh_token_ttl, grantExp),
      rotatedAt: null,
      revokedAt: null,
      ...(spec.refreshJkt !== undefined ? { jkt: spec.refreshJkt } : {}),
    });
  }
  ctx.emit({
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
      // The actor token's grant (this issuer's), which the new grant is recorded under as well: its
      // revocation (a compromised agent's) revokes this one, so the trail names it.
      ...(actor.grantId !== null ? { actor_grant: actor.grantId } : {}),
      aud: [...spec.audiences],
      exp,
    },
  });
  return { token, jti, exp, now, scopes, grantId: grant.id, ...(refreshToken !== undefined ? { refreshToken } : {}) };
}

export type UpstreamContext = ExchangeContext;

/**
 * The gateway's exchange: its own client (`clientId`, registered with the upstream audiences and
 * the token-exchange grant) is the actor, the verified caller the subject, and the caller's chain
 * nests under it.
 */
export async function issueForUpstream(
  ctx: UpstreamContext,
  clientId: string,
  { principal, audience, scopes, maxTtl }: Parameters<UpstreamTokenIssuer['issueForUpstream']>[0],
): Promise<{ token: string; expiresAt: number; revoked: () => boolean }> {
  const client = await ctx.clients.get(clientId);
  if (client === undefined || client.record.disabled) throw new OAuthError('client_unknown');
  // RFC 9449 §5.2: the gateway proves no DPoP key when it mints, and sends the token upstream as a
  // bearer token, which a client registered as always using DPoP never gets (fail closed: the
  // caller gets 502 upstream_credential_unavailable, nothing goes upstream).
  if (client.record.dpopBoundAccessTokens) throw new OAuthError('client_dpop_proof_required');
  requireGrantType(client, TOKEN_EXCHANGE);
  if (principal.subject === undefined) throw new OAuthError('subject_token_invalid');
  if (!client.audiences.has(audience)) throw new OAuthError('target_not_allowed');
  const now = ctx.now();
  let subject: Party;
  if (principal.issuer === ctx.issuer) {
    // The caller's token, when this issuer's: the upstream grant is exchanged from it, a child of its
    // grant. A principal's `iss` is not this issuer's signature: an introspection answer's is the
    // endpoint's word (another authorization server's, for a route with `auth: introspection`), and
    // it would pass for this issuer's subjects (a client id, checked for no other issuer) and name
    // this issuer's clients as prior actors. So only the grant it names vouches for it: one of this
    // subject and client (every token of this issuer names its grant), whose chain it carries and
    // whose scopes and lifetime it does not exceed.
    const grant = principal.delegationId === undefined ? undefined : await ctx.store.getGrant(principal.delegationId);
    if (grant === undefined || grant.subject !== principal.subject || grant.clientId !== principal.clientId) {
      throw new OAuthError('subject_token_invalid');
    }
    const held = withoutUnnamed(ctx.scopes.expand(grant.scopes), grant.scopes, ctx.config.admin.scope);
    subject = {
      ...partyFromPrincipal(
        principal,
        { grantId: grant.id, jti: principal.tokenId ?? null },
        Math.min(now + maxTtl, grant.expiresAt ?? Number.POSITIVE_INFINITY),
      ),
      scopes: principal.scopes.filter((s) => covers(held, s)),
      act: (grant.act as JsonObject | null) ?? null,
    };
  } else {
    subject = partyFromPrincipal(principal, null, now + maxTtl);
  }
  const issued = await delegate(ctx, {
    client,
    subject,
    actor: { issuer: ctx.issuer, subject: client.id, grantId: null, jti: null, exp: Number.POSITIVE_INFINITY },
    requested: [...new Set(scopes)],
    audiences: [audience],
    ttl: Math.min(maxTtl, accessTokenTtl(ctx.config, client)),
    kind: 'upstream',
    refresh: false,
  });
  // The gateway caches the token: asked before each use, so that one whose grant an operator
  // revoked since (`tessera revoke --grant`), or its subject or the gateway's client, is minted
  // anew rather than sent until it expires. The in-memory revocation list only: it runs per request.
  const own = { subject: subject.subject, clientId: client.id, grantId: issued.grantId, jti: issued.jti, iat: issued.now, exp: issued.exp };
  return { token: issued.token, expiresAt: issued.exp, revoked: () => ctx.tokens.isRevoked(own) };
}
