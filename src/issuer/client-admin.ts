/**
 * The operator's client operations (CLI, `tessera init`): register, update, disable or enable,
 * and remove. Changes apply at once in this process; other processes see the store's client version
 * change on their next sync.
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import { quoted } from '../core/errors.ts';
import { isWildcard, type ScopeModel } from '../core/scopes.ts';
import type { ClientLimit, ClientPatch, ClientRecord, RevokedGrant, Store } from '../store/contract.ts';
import {
  buildClient,
  type ClientInput,
  ClientInputError,
  type ClientRegistry,
  type ClientUpdate,
  type CompiledClient,
  checkAllowedOrigins,
  DYNAMIC_CLIENT_ID_PREFIX,
} from './clients.ts';
import { type RevokeContext, revokeGrants } from './revoke.ts';
import type { SecretHasher } from './secrets.ts';

export interface ClientAdminContext extends RevokeContext {
  readonly config: Pick<ResolvedTokenServiceConfig, 'admin' | 'max_access_token_ttl' | 'authorization'>;
  readonly store: Pick<Store, 'createClient' | 'getClient' | 'updateClient' | 'deleteClient'> & RevokeContext['store'];
  readonly clients: Pick<ClientRegistry, 'compile' | 'invalidate'> & RevokeContext['clients'];
  readonly scopes: ScopeModel;
  /** Absent without the master key: registering a client then fails. */
  readonly hasher: SecretHasher | undefined;
}

/**
 * Check a registration whole without writing anything: every problem `registerClient` would
 * refuse it for (an empty list when none).
 */
export function clientInputProblems(
  ctx: ClientAdminContext,
  input: ClientInput,
  detail: Readonly<Record<string, string>> = {},
): ClientInputError[] {
  if (ctx.hasher === undefined) throw new Error('registering clients needs the master key');
  const problems: ClientInputError[] = [];
  if (input.id.startsWith(DYNAMIC_CLIENT_ID_PREFIX) && detail.registered !== 'dynamic') {
    problems.push(
      new ClientInputError(
        'client_id_reserved',
        `client ids starting with "${DYNAMIC_CLIENT_ID_PREFIX}" are reserved for dynamically registered clients`,
        'id',
      ),
    );
  }
  const known = ctx.scopes.known;
  if (known !== undefined) {
    // With a catalogue, a client scope outside it is a typo until proven otherwise.
    // Each scope once: `--scopes 'a a'` names one unknown scope, not two.
    for (const s of new Set(input.scopes)) {
      if (!isWildcard(s) && !known.has(s) && s !== ctx.config.admin.scope) {
        problems.push(
          new ClientInputError('scope_unknown', `scope ${quoted(s)} is not in the scope catalogue (scopes in tessera.yaml)`, 'scopes'),
        );
      }
    }
  }
  try {
    buildClient(input, { hasher: ctx.hasher, maxTtl: ctx.config.max_access_token_ttl, now: ctx.now() });
  } catch (e) {
    if (!(e instanceof ClientInputError)) throw e;
    problems.push(...e.problems);
  }
  return problems;
}

/**
 * Register a client. With `limit`, the store refuses it (atomically) when that many clients with
 * the limit's id prefix exist: {@link StoreCapacityError}. `detail` goes into `client.created`
 * (`by`: who registered it, `cli`).
 * @throws {ClientInputError} naming every problem of the input (`problems`), nothing written.
 */
export async function registerClient(
  ctx: ClientAdminContext,
  input: ClientInput,
  detail: Readonly<Record<string, string>> = {},
  limit?: ClientLimit,
): Promise<{ client: CompiledClient; secret: string | undefined }> {
  if (ctx.hasher === undefined) throw new Error('registering clients needs the master key');
  const problems = clientInputProblems(ctx, input, detail);
  if (problems.length > 0) throw ClientInputError.all(problems);
  const { record, secret } = buildClient(input, { hasher: ctx.hasher, maxTtl: ctx.config.max_access_token_ttl, now: ctx.now() });
  await ctx.store.createClient(record, limit !== undefined ? { limit } : {});
  // Nothing cached is about an id new to the store, but the origins every client allows are.
  ctx.clients.invalidate(record.id);
  ctx.emit({
    kind: 'client.created',
    reason: 'ok',
    client_id: record.id,
    detail: {
      auth_method: record.authMethod,
      ...(record.secretMethod !== null ? { secret_method: record.secretMethod } : {}),
      ...(record.allowedOrigins.length > 0 ? { allowed_origins: record.allowedOrigins.join(' ') } : {}),
      ...(record.dpopBoundAccessTokens ? { dpop_bound_access_tokens: true } : {}),
      ...detail,
    },
  });
  return { client: ctx.clients.compile(record), secret };
}

/**
 * Apply `update` to a client. Only fields whose value differs are written; a change is audited as
 * `client.updated` (reason `updated`) with the new values. Grants and tokens already issued are
 * left as they are.
 */
export async function updateClient(
  ctx: ClientAdminContext,
  id: string,
  update: ClientUpdate,
  by?: string,
): Promise<{ client: ClientRecord; changed: string[] } | undefined> {
  const current = await ctx.store.getClient(id);
  if (current === undefined) return undefined;
  const patch: { -readonly [K in keyof ClientPatch]: ClientPatch[K] } = {};
  const detail: Record<string, boolean | string> = {};
  if (update.retargetAudiences !== undefined && update.retargetAudiences !== current.exchangeRetargetAudiences) {
    patch.exchangeRetargetAudiences = update.retargetAudiences;
    detail.exchange_retarget_audiences = update.retargetAudiences;
  }
  if (update.dpopBound !== undefined && update.dpopBound !== current.dpopBoundAccessTokens) {
    patch.dpopBoundAccessTokens = update.dpopBound;
    detail.dpop_bound_access_tokens = update.dpopBound;
  }
  if (update.allowedOrigins !== undefined) {
    const origins = checkAllowedOrigins(update.allowedOrigins);
    if (origins.join(' ') !== current.allowedOrigins.join(' ')) {
      patch.allowedOrigins = origins;
      detail.allowed_origins = origins.join(' ');
    }
  }
  const changed = Object.keys(detail);
  if (changed.length === 0) return { client: current, changed };
  const client = await ctx.store.updateClient(id, patch, ctx.now());
  // Removed between the read and the write.
  if (client === undefined) return undefined;
  ctx.clients.invalidate(id);
  ctx.emit({ kind: 'client.updated', reason: 'updated', client_id: id, detail: { ...detail, ...(by !== undefined ? { by } : {}) } });
  return { client, changed };
}

/**
 * Disable (or enable) a client; disabling revokes its live grants. A client already in that state
 * is not written and no `client.updated` is audited (`changed: false`), as {@link updateClient}
 * writes only what differs; disabling one already disabled still revokes any live grant it has
 * (none, unless an earlier disable stopped between its write and its revocation).
 */
export async function setClientDisabled(
  ctx: ClientAdminContext,
  id: string,
  disabled: boolean,
  by?: string,
): Promise<{ revoked: RevokedGrant[]; changed: boolean } | undefined> {
  const current = await ctx.store.getClient(id);
  if (current === undefined) return undefined;
  const changed = current.disabled !== disabled;
  if (changed) {
    // Removed between the read and the write.
    if ((await ctx.store.updateClient(id, { disabled }, ctx.now())) === undefined) return undefined;
    ctx.clients.invalidate(id);
    ctx.emit({
      kind: 'client.updated',
      reason: disabled ? 'disabled' : 'enabled',
      client_id: id,
      ...(by !== undefined ? { detail: { by } } : {}),
    });
  }
  const revoked = disabled ? await revokeGrants(ctx, { clientId: id }, 'client_disabled', by) : [];
  return { revoked, changed };
}

export async function removeClient(ctx: ClientAdminContext, id: string, by?: string): Promise<{ revoked: RevokedGrant[] } | undefined> {
  // Disabled first: from then on the store refuses new grants for it, so none can be written
  // between the revocation below and the removal.
  if ((await ctx.store.updateClient(id, { disabled: true }, ctx.now())) === undefined) return undefined;
  ctx.clients.invalidate(id);
  const revoked = await revokeGrants(ctx, { clientId: id }, 'client_removed', by);
  await ctx.store.deleteClient(id);
  ctx.clients.invalidate(id);
  ctx.emit({ kind: 'client.removed', reason: 'ok', client_id: id, ...(by !== undefined ? { detail: { by } } : {}) });
  return { revoked };
}
