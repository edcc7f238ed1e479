/**
 * Revocation: RFC 7009 at the revocation endpoint, and the operator's revocation of grants (each
 * with its subtree) and access tokens. Every revocation is replayed into this process's
 * revocation list before the call returns, so in-process verifiers refuse the token at once.
 *
 * @module
 */
import { LOGIN_SESSION_TTL_MAX, type ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import type { TokenBucketLimiter } from '../core/ratelimit.ts';
import { holdsToken } from '../core/secret-shape.ts';
import type { GrantSelector, RevocationEntry, RevokedGrant, Store } from '../store/contract.ts';
import type { AccessTokens, OwnToken } from './access-tokens.ts';
import type { ClientRegistry } from './clients.ts';
import { type AuthFailureLimit, type BaseContext, type OAuthRequest, openTokenRequest, SKEW } from './context.ts';
import type { StandingGrants } from './grants/standing.ts';
import type { RevocationFeed } from './revocation-feed.ts';
import { REFRESH_TOKEN_PREFIX, sha256, tokenHash } from './secrets.ts';

/**
 * The revocation scope of login sessions at `issuer`'s authorization endpoint: a subject revoked
 * under it has no session begun before the revocation. An issuer identifier has no fragment
 * (RFC 8414 §2), so this never equals a token's `iss`.
 */
export function loginSessionScope(issuer: string): string {
  return `${issuer}#login-sessions`;
}

export interface RevokeContext extends BaseContext {
  readonly issuer: string;
  readonly config: Pick<ResolvedTokenServiceConfig, 'max_access_token_ttl' | 'authorization'>;
  readonly store: Pick<Store, 'getRefreshToken' | 'revokeGrants'>;
  readonly clients: Pick<ClientRegistry, 'authenticateUnspent' | 'checkOrigin'>;
  readonly tokens: Pick<AccessTokens, 'verifyFresh' | 'jtiRevoked'>;
  readonly feed: Pick<RevocationFeed, 'catchUp' | 'applyCommitted'>;
  readonly standing: Pick<StandingGrants, 'forget'>;
  /** Longest lifetime of an external token, seconds: how long a subject revocation must be kept. */
  readonly externalMaxLifetime: number;
  /** The trusted external issuers (`issuers` other than this one). */
  readonly externalIssuers: readonly string[];
  /**
   * Per-client bucket of the RFC 7009 endpoint (`revocation_rate_limit`), keyed by the
   * authenticated client id; `undefined` when turned off. Not the operator's revocations.
   */
  readonly revocationLimiter?: Pick<TokenBucketLimiter, 'take' | 'refund'> | undefined;
  /**
   * The same for public clients, keyed by client and connecting address (anyone may name a public
   * client): apart, so senders of many addresses do not evict confidential clients' buckets.
   */
  readonly publicRevocationLimiter?: Pick<TokenBucketLimiter, 'take' | 'refund'> | undefined;
  /**
   * Failed client authentications by connecting address, shared with the token and introspection
   * endpoints (`auth_failure_limit`); `undefined` when turned off.
   */
  readonly authFailures?: AuthFailureLimit | undefined;
}

/** RFC 7009 (see `TokenService.revoke`). */
export async function revokeRequest(ctx: RevokeContext, req: OAuthRequest): Promise<void> {
  // RFC 7009 §2.1: a public client may revoke its own tokens.
  // The bucket is spent after client authentication (a caller without the client's credentials
  // spends nothing of it), before any lookup: each access token revoked is a log entry every
  // instance keeps in memory until the token expires, so a client minting and revoking its own
  // tokens would grow them at its request rate.
  const { client, token } = await openTokenRequest(ctx, req, 'revocation.denied', {
    allowPublic: true,
    rateLimit: { limiter: ctx.revocationLimiter, publicLimiter: ctx.publicRevocationLimiter, code: 'revocation_rate_limited' },
    // A flood of guessed client secrets is refused here as at the token and introspection
    // endpoints, from one bucket per address. Refusing an address keeps nothing alive that its
    // owner revokes: a client authenticates from its own address, not the flooder's.
    authFailures: ctx.authFailures,
  });
  const now = ctx.now();
  // RFC 7009 §2.2: answered 200 all the same, but on record: another client's token in this
  // client's hands was stolen or leaked, and a stream of unknown ones is someone probing.
  const notRevoked = (reason: 'token_of_another_client' | 'inactive', delegationId?: string): void => {
    ctx.emit({
      kind: 'revocation.denied',
      decision: 'deny',
      reason,
      client_id: client.id,
      token_hash: tokenHash(token),
      ...(delegationId !== undefined ? { delegation_id: delegationId } : {}),
      ...(req.requestId !== undefined ? { request_id: req.requestId } : {}),
      ...(req.remoteAddr !== undefined ? { remote_addr: req.remoteAddr } : {}),
    });
  };
  if (token.startsWith(REFRESH_TOKEN_PREFIX)) {
    const record = await ctx.store.getRefreshToken(sha256(token));
    if (record === undefined) return notRevoked('inactive');
    if (record.clientId !== client.id) return notRevoked('token_of_another_client', record.grantId);
    const revoked = await revokeGrants(ctx, { grantId: record.grantId }, 'refresh_token_revoked', client.id);
    // A refresh token whose grant was revoked before (by this request's twin, or any revocation)
    // revokes nothing: still on record as token.revoked, but not as a revocation's record kept past
    // audit.max_queue (the client could repeat it to fill the queue while the store fails).
    ctx.emit(
      {
        kind: 'token.revoked',
        reason: 'refresh_token_revoked',
        client_id: client.id,
        delegation_id: record.grantId,
        token_hash: tokenHash(token),
        detail: { revoked_grants: revoked.map((g) => g.id) },
      },
      { revoked: revoked.length > 0 },
    );
    return;
  }
  const own = await ctx.tokens.verifyFresh(token);
  if (own === undefined || own.exp <= now) return notRevoked('inactive');
  if (own.clientId !== client.id) return notRevoked('token_of_another_client', own.grantId);
  // Revoked already (its own entry, read from the log): appending another entry per request would
  // let a client grow the log and every instance's revocation list (each entry kept until the
  // token expires) by revoking one token over and over. Only the jti's entry counts: a token
  // revoked through its grant, subject or client may still be the actor token of grants the
  // revocation of its jti ends.
  if (ctx.tokens.jtiRevoked(own)) return notRevoked('inactive', own.grantId);
  const { revoked, appended } = await revokeJti(ctx, own, 'access_token_revoked', client.id);
  // Another request revoking it committed first (both found it live above): as a repeat.
  if (!appended && revoked.length === 0) return notRevoked('inactive', own.grantId);
  // The jti's entry was appended: a revocation's record.
  ctx.emit(
    {
      kind: 'token.revoked',
      reason: 'access_token_revoked',
      subject: own.subject,
      client_id: client.id,
      delegation_id: own.grantId,
      jti: own.jti,
      detail: { revoked_grants: revoked.map((g) => g.id) },
    },
    { revoked: true },
  );
}

/**
 * Revoke an access token's `jti` and, in the same store transaction, every grant exchanged from it
 * (as the subject or actor token) with its subtree: the token's entry is appended by the
 * revocation that revokes them, so no exchange of the token commits between the two (the store
 * refuses one that comes after). Audited as grant.revoked for each grant, with the token's `jti`.
 */
async function revokeJti(
  ctx: RevokeContext,
  own: OwnToken,
  reason: string,
  by: string | undefined,
  detail: Readonly<Record<string, string | number>> = {},
): Promise<{ revoked: RevokedGrant[]; appended: boolean }> {
  const entry = { kind: 'token' as const, value: own.jti, issuer: null, at: ctx.now(), expiresAt: own.exp + SKEW };
  let appended = 0;
  const revoked = await revokeGrants(
    ctx,
    { exchangedFrom: own.jti, tokenGrantId: own.grantId },
    reason,
    by,
    { jti: own.jti, ...detail },
    [entry],
    (n) => {
      appended = n;
    },
  );
  // The log holds a token's entry once: a revocation of it racing this one (at this instance or
  // another) that committed first appended it, and this one revoked nothing the token had not lost.
  return { revoked, appended: appended > 0 };
}

/**
 * Revoke grants with their subtrees (see `TokenService.revokeGrants`). A `reason` holding a token
 * is refused (`admin_revoke_reason_token`), nothing revoked: it is stored with each grant and
 * written into grant.revoked.
 */
export async function revokeGrants(
  ctx: RevokeContext,
  selector: GrantSelector,
  reason: string,
  by?: string,
  detail: Readonly<Record<string, string | number>> = {},
  alsoAppend: readonly Omit<RevocationEntry, 'seq'>[] = [],
  appended?: (count: number) => void,
): Promise<RevokedGrant[]> {
  if (holdsToken(reason)) throw new OAuthError('admin_revoke_reason_token');
  const now = ctx.now();
  // An issuer named with a subject must be one whose subjects can be here: this one, a trusted one,
  // or one the subject still holds a grant of (an issuer since removed from `issuers`). Any other
  // (`https://idp.example/` for `https://idp.example`) would revoke nothing and write entries no
  // token matches, so it is refused with nothing written.
  const unknownIssuer =
    'subject' in selector &&
    selector.issuer !== undefined &&
    selector.issuer !== ctx.issuer &&
    !ctx.externalIssuers.includes(selector.issuer);
  // The subject's and client's entries are appended in the transaction that revokes the grants:
  // another instance that has not read them yet still cannot begin a tree from one of the
  // subject's older external tokens (the store checks them when creating that root grant).
  const alsoLog = (revoked: readonly RevokedGrant[]): Omit<RevocationEntry, 'seq'>[] => {
    const entries: Omit<RevocationEntry, 'seq'>[] = [...alsoAppend];
    if (unknownIssuer && revoked.length === 0) return entries;
    if ('subject' in selector) {
      const issuers = new Set(revoked.filter((g) => g.subject === selector.subject).map((g) => g.issuer));
      if (selector.issuer !== undefined) issuers.add(selector.issuer);
      // Without an issuer, the subject at every trusted issuer, whether or not it holds a grant
      // here now: its older tokens from an issuer it has no live grant of would otherwise stay
      // exchangeable.
      else for (const issuer of ctx.externalIssuers) issuers.add(issuer);
      // This issuer's own tokens fall with their grants: a subject entry for it would also refuse
      // tokens issued after the revocation within the same second.
      const own = issuers.delete(ctx.issuer) || selector.issuer === undefined;
      for (const issuer of issuers) {
        entries.push({ kind: 'subject', value: selector.subject, issuer, at: now, expiresAt: now + ctx.externalMaxLifetime + SKEW });
      }
      // What the subject holds here outside a grant: a login session at the authorization
      // endpoint, begun before now, and a remembered consent an approval racing this revocation
      // wrote after it forgot them (so kept as long as either can last). Under a scope no token's
      // `iss` can equal, so no token is hit.
      if (own) {
        entries.push({
          kind: 'subject',
          value: selector.subject,
          issuer: loginSessionScope(ctx.issuer),
          at: now,
          expiresAt: now + Math.max(LOGIN_SESSION_TTL_MAX, ctx.config.authorization.remember_consent) + SKEW,
        });
      }
    }
    // A remembered consent to the client that an approval racing this revocation wrote after it
    // forgot them: like the subject's above, one from no later than this approves nothing. Under the
    // login-session scope (no token's `iss`), so no token is hit, and no login session either (those
    // are checked by subject only).
    if ('clientId' in selector && ctx.config.authorization.remember_consent > 0) {
      entries.push({
        kind: 'client',
        value: selector.clientId,
        issuer: loginSessionScope(ctx.issuer),
        at: now,
        expiresAt: now + ctx.config.authorization.remember_consent + SKEW,
      });
    }
    return entries;
  };
  const entryExpiresAt = now + ctx.config.max_access_token_ttl + SKEW;
  // What the committed transaction appended besides its grants' entries (its last run's).
  let logged: readonly Omit<RevocationEntry, 'seq'>[] = [];
  const revoked = await ctx.store.revokeGrants(selector, {
    at: now,
    reason,
    entryExpiresAt,
    alsoLog: (r) => {
      logged = alsoLog(r);
      return logged;
    },
    ...(appended !== undefined ? { alsoLogged: appended } : {}),
  });
  if (unknownIssuer && revoked.length === 0) throw new OAuthError('admin_revoke_issuer_unknown');
  await enforceCommitted(ctx, now, [...grantEntries(revoked, now, entryExpiresAt), ...logged]);
  ctx.standing.forget(revoked.map((g) => g.id));
  for (const g of revoked) {
    ctx.emit(
      {
        kind: 'grant.revoked',
        reason,
        subject: g.subject,
        client_id: g.clientId,
        delegation_id: g.id,
        detail: { selector: Object.keys(selector)[0] ?? '', ...(by !== undefined ? { by } : {}), ...detail },
      },
      { revoked: true },
    );
  }
  return revoked;
}

/** The revocation log entries of `grants`, revoked at `at`. */
export function grantEntries(
  grants: readonly (string | { readonly id: string })[],
  at: number,
  expiresAt: number,
): Omit<RevocationEntry, 'seq'>[] {
  return grants.map((g) => ({ kind: 'grant', value: typeof g === 'string' ? g : g.id, issuer: null, at, expiresAt }));
}

/**
 * Make a revocation the store has committed (its log `entries`) take effect in this process: read
 * the log to its end, or, when that read fails (the store out of reach since the commit), apply
 * `entries` as committed (the next catch-up reads them). Never throws: the revocation took effect,
 * and the caller is told so (and audited), not handed a 503 for a write that was not lost, while
 * this process went on accepting what it had just revoked until its next successful read.
 */
export async function enforceCommitted(
  ctx: { readonly feed: Pick<RevocationFeed, 'catchUp' | 'applyCommitted'> },
  now: number,
  entries: readonly Omit<RevocationEntry, 'seq'>[],
): Promise<void> {
  try {
    await ctx.feed.catchUp(now);
  } catch {
    ctx.feed.applyCommitted(entries);
  }
}

/** What an operator's revocation of an access token revoked (see `TokenService.revokeAccessToken`). */
export interface AccessTokenRevocation {
  /** The token's `jti`. */
  readonly jti: string;
  /** The token's own grant (not revoked: only the token is). */
  readonly grantId: string;
  /** The grants exchanged from the token (as subject or actor token), each with its subtree, newly revoked. */
  readonly revokedGrants: readonly string[];
}

/** Operator revocation of an access token's `jti` (see `TokenService.revokeAccessToken`). */
export async function revokeAccessToken(
  ctx: RevokeContext,
  token: string,
  by?: string,
  audit: { readonly reason?: string; readonly detail?: Readonly<Record<string, string | number>> } = {},
): Promise<AccessTokenRevocation | undefined> {
  const own = await ctx.tokens.verifyFresh(token);
  const now = ctx.now();
  if (own === undefined || own.exp <= now) return undefined;
  const reason = audit.reason ?? 'operator';
  const { revoked: grants, appended } = await revokeJti(ctx, own, reason, by, audit.detail);
  const revoked = grants.map((g) => g.id);
  // On record whether or not the token was revoked before, but kept past audit.max_queue only when
  // this revocation revoked something (an operator repeating it could otherwise fill the queue).
  ctx.emit(
    {
      kind: 'token.revoked',
      reason,
      subject: own.subject,
      client_id: own.clientId,
      delegation_id: own.grantId,
      jti: own.jti,
      detail: { ...(by !== undefined ? { by } : {}), ...audit.detail, revoked_grants: revoked },
    },
    { revoked: appended || revoked.length > 0 },
  );
  return { jti: own.jti, grantId: own.grantId, revokedGrants: revoked };
}

/** What an operator's revocation of a refresh token revoked (see `TokenService.revokeRefreshToken`). */
export interface RefreshTokenRevocation {
  /** The token's grant: its rotation family. */
  readonly grantId: string;
  /** The grant with its subtree, newly revoked; empty when it was revoked before. */
  readonly revokedGrants: readonly string[];
}

/**
 * Operator revocation of a refresh token (no client check): what RFC 7009 §2.1 revokes for its
 * client, its grant (the rotation family, so the access tokens of the grant too) with its subtree.
 * A token rotated since counts: its successor is of the same family. `undefined` when it is no
 * refresh token of this issuer, or expired (its own expiry or its grant's): nothing to revoke.
 */
export async function revokeRefreshToken(
  ctx: RevokeContext & { readonly store: Pick<Store, 'getGrant'> },
  token: string,
  reason: string,
  by?: string,
): Promise<RefreshTokenRevocation | undefined> {
  if (!token.startsWith(REFRESH_TOKEN_PREFIX)) return undefined;
  const record = await ctx.store.getRefreshToken(sha256(token));
  const now = ctx.now();
  if (record === undefined || record.expiresAt <= now) return undefined;
  const grant = await ctx.store.getGrant(record.grantId);
  if (grant === undefined || (grant.expiresAt !== null && grant.expiresAt <= now)) return undefined;
  const revoked = (await revokeGrants(ctx, { grantId: record.grantId }, reason, by)).map((g) => g.id);
  // As RFC 7009's: named by its hash; kept past audit.max_queue only when it revoked something.
  ctx.emit(
    {
      kind: 'token.revoked',
      reason,
      subject: grant.subject,
      client_id: record.clientId,
      delegation_id: record.grantId,
      token_hash: tokenHash(token),
      detail: { ...(by !== undefined ? { by } : {}), revoked_grants: revoked },
    },
    { revoked: revoked.length > 0 },
  );
  return { grantId: record.grantId, revokedGrants: revoked };
}
