/**
 * Leak response (`tessera scan`): whether a string found in a file or a log is one of this
 * issuer's tokens, and its revocation. An access token counts only when its signature verifies
 * under one of this issuer's keys (every key the store holds, published or retired, and the
 * public part kept of each key housekeeping deleted) and its `iss` is this issuer; a refresh token only when its hash is a stored refresh token. Anything
 * else (a foreign issuer's token, another key's, a tampered one) is not a finding.
 *
 * @module
 */
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';
import type { GrantRecord, Store } from '../store/contract.ts';
import { type AccessTokens, checkOwnToken } from './access-tokens.ts';
import type { KeyManager } from './keys.ts';
import { type RevokeContext, revokeAccessToken, revokeGrants } from './revoke.ts';
import { REFRESH_TOKEN_PREFIX, sha256, tokenHash } from './secrets.ts';

/** What kind of token a finding is. */
export type LeakKind = 'access_token' | 'refresh_token';

/**
 * A finding's state when it was checked. Only `live` tokens can still be used: `expired` and
 * `revoked` ones are refused everywhere, and a `rotated` refresh token is refused by the token
 * endpoint (presenting it again revokes its family as a reuse).
 */
export type LeakState = 'live' | 'expired' | 'revoked' | 'rotated';

/** One of this issuer's tokens, named without its value. */
export interface LeakedToken {
  readonly kind: LeakKind;
  /** The short hash the audit trail names tokens by (`tokenHash`). */
  readonly tokenHash: string;
  /** The access token's `jti`; `null` for a refresh token. */
  readonly jti: string | null;
  /** `null` for a refresh token whose grant is no longer stored. */
  readonly subject: string | null;
  readonly clientId: string;
  /** The delegation (grant) id; a refresh token's grant is its rotation family. */
  readonly grantId: string;
  /** Epoch seconds. */
  readonly expiresAt: number;
  readonly state: LeakState;
}

export interface LeakContext extends RevokeContext {
  readonly store: RevokeContext['store'] & Pick<Store, 'getGrant'>;
  readonly keys: Pick<KeyManager, 'lookupStored' | 'lookupRemoved'>;
  readonly tokens: Pick<AccessTokens, 'verifyFresh' | 'isRevoked' | 'jtiRevoked'>;
}

function grantExpired(g: GrantRecord, now: number): boolean {
  return g.expiresAt !== null && g.expiresAt <= now;
}

/** The finding `candidate` is, or `undefined` when it is not one of this issuer's tokens. */
export async function identifyLeak(ctx: LeakContext, candidate: string): Promise<LeakedToken | undefined> {
  const now = ctx.now();
  if (candidate.startsWith(REFRESH_TOKEN_PREFIX)) {
    const r = await ctx.store.getRefreshToken(sha256(candidate));
    if (r === undefined) return undefined;
    const g = await ctx.store.getGrant(r.grantId);
    const state: LeakState =
      r.expiresAt <= now || g === undefined || grantExpired(g, now)
        ? 'expired'
        : r.revokedAt !== null || g.revokedAt !== null
          ? 'revoked'
          : r.rotatedAt !== null
            ? 'rotated'
            : 'live';
    return {
      kind: 'refresh_token',
      tokenHash: tokenHash(candidate),
      jti: null,
      subject: g?.subject ?? null,
      clientId: r.clientId,
      grantId: r.grantId,
      expiresAt: r.expiresAt,
      state,
    };
  }
  let missed: { kid: string; alg: JwsAlgorithm } | undefined;
  let own = checkOwnToken(candidate, ctx.issuer, (kid, alg) => {
    const key = ctx.keys.lookupStored(kid, alg);
    if (typeof key === 'string') missed = { kid, alg };
    return key;
  });
  // Not a key the store holds: perhaps one housekeeping deleted, whose public part is kept.
  if (own === undefined && missed !== undefined) {
    const key = await ctx.keys.lookupRemoved(missed.kid, missed.alg);
    if (typeof key !== 'string') own = checkOwnToken(candidate, ctx.issuer, () => key);
  }
  if (own === undefined) return undefined;
  let state: LeakState = 'live';
  if (own.exp <= now) state = 'expired';
  else if (ctx.tokens.isRevoked(own)) state = 'revoked';
  else {
    // The authoritative answer, as introspection gives it: the list may lag another process.
    const g = await ctx.store.getGrant(own.grantId);
    if (g !== undefined && g.revokedAt !== null) state = 'revoked';
  }
  return {
    kind: 'access_token',
    tokenHash: tokenHash(candidate),
    jti: own.jti,
    subject: own.subject,
    clientId: own.clientId,
    grantId: own.grantId,
    expiresAt: own.exp,
    state,
  };
}

/** What {@link revokeLeak} revoked. */
export interface LeakRevocation {
  /** The access token's `jti`, when it was revoked by `jti` (not with its grant). */
  readonly token: string | null;
  /**
   * Grants newly revoked (the family, the delegation subtree, or for an access token revoked by
   * `jti` the grants exchanged from it with their subtrees), empty when none.
   */
  readonly grants: readonly string[];
}

/**
 * Revoke a leaked token through the operator's revocation path, audited with reason
 * `leak_detected` and where it was found (`location`, a path, never the token). An access token is
 * revoked by `jti` with every grant exchanged from it (and their subtrees), or with `grant` its
 * whole delegation subtree; a refresh token takes its family (its grant, with the subtree) as RFC
 * 7009 revocation does.
 */
export async function revokeLeak(
  ctx: LeakContext,
  token: string,
  leak: LeakedToken,
  options: { readonly grant: boolean; readonly location: string },
): Promise<LeakRevocation> {
  const detail = { found_in: options.location, token_hash: leak.tokenHash };
  if (leak.kind === 'access_token' && !options.grant) {
    const revoked = await revokeAccessToken(ctx, token, 'cli', { reason: 'leak_detected', detail });
    return { token: revoked?.jti ?? null, grants: revoked?.revokedGrants ?? [] };
  }
  const grants = await revokeGrants(ctx, { grantId: leak.grantId }, 'leak_detected', 'cli', detail);
  if (leak.kind === 'refresh_token') {
    // Its family revoked before: nothing taken away, not kept past audit.max_queue.
    ctx.emit(
      {
        kind: 'token.revoked',
        reason: 'leak_detected',
        client_id: leak.clientId,
        delegation_id: leak.grantId,
        token_hash: leak.tokenHash,
        ...(leak.subject !== null ? { subject: leak.subject } : {}),
        detail: { by: 'cli', found_in: options.location, revoked_grants: grants.map((g) => g.id) },
      },
      { revoked: grants.length > 0 },
    );
  }
  return { token: null, grants: grants.map((g) => g.id) };
}
