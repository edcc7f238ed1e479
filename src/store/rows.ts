/**
 * Rows to records and records to statement values, the same for every SQL backend: JSON columns
 * are text, times epoch seconds. A `…Values` function lists the values of its INSERT in the order
 * of that statement's columns; each backend keeps the statement text, in its own placeholders.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { AuditEvent, AuditQuery } from '../audit/event.ts';
import {
  type A2aIdKind,
  type A2aTaskRecord,
  AUDIT_QUERY_DEFAULT,
  AUDIT_QUERY_MAX,
  type AuthorizationCodeRecord,
  type ClientPatch,
  type ClientRecord,
  type GrantRecord,
  MAX_A2A_OWNER,
  type NewGrant,
  type RefreshTokenRecord,
  type RememberedConsentRecord,
  type RemovedSigningKeyRecord,
  type RevocationEntry,
  type SigningKeyRecord,
} from './contract.ts';

/** A row as the driver returns it. */
export type Row = Record<string, unknown>;

/** A statement parameter both drivers take as it is (booleans differ: see `flag` below). */
export type SqlValue = string | number | null;

export const json = (v: unknown): string => JSON.stringify(v);
export const parse = <T>(v: unknown): T => JSON.parse(v as string) as T;
export const num = (v: unknown): number => Number(v);
export const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
export const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

/**
 * The key of an A2A task record: a digest (SHA-256, base64url) of the route, kind and id, which are
 * of any length (an id is chosen by a caller or an upstream), framed so one part cannot shift into
 * another.
 */
export function a2aTaskKey(route: string, kind: A2aIdKind, id: string): string {
  return createHash('sha256')
    .update(JSON.stringify([route, kind, id]), 'utf8')
    .digest('base64url');
}

export const a2aTaskFrom = (r: Row): A2aTaskRecord => ({ owner: String(r.owner), expiresAt: num(r.expires_at) });

/** `owner` checked for `Store.claimA2aTask`: a RangeError, nothing written, when it is empty or too long. */
export function checkA2aOwner(owner: string): void {
  if (owner.length === 0 || owner.length > MAX_A2A_OWNER) throw new RangeError(`an A2A task owner is 1 to ${MAX_A2A_OWNER} characters`);
}

/**
 * A grant row (with `revoked_at` and `expires_at`) found, not revoked and not expired at `now`: a
 * grant creation's parent or actor. A revoked ancestor revoked it with its subtree.
 */
export const isActiveGrant = (r: Row | undefined, now: number): r is Row =>
  r !== undefined && r.revoked_at === null && (r.expires_at === null || num(r.expires_at) > now);

/**
 * `flag` reads a boolean column: SQLite stores 0/1, PostgreSQL a boolean.
 */
export function clientFrom(r: Row, flag: (v: unknown) => boolean): ClientRecord {
  return {
    id: String(r.id),
    authMethod: r.auth_method as ClientRecord['authMethod'],
    secretMethod: strOrNull(r.secret_method) as ClientRecord['secretMethod'],
    secretHash: strOrNull(r.secret_hash),
    jwks: r.jwks === null ? null : parse(r.jwks),
    jwksUri: strOrNull(r.jwks_uri),
    scopes: parse(r.scopes),
    audiences: parse(r.audiences),
    grantTypes: parse(r.grant_types),
    accessTokenTtl: numOrNull(r.access_token_ttl),
    exchangeRetargetAudiences: flag(r.exchange_retarget_audiences),
    redirectUris: r.redirect_uris === undefined ? [] : parse(r.redirect_uris),
    // Absent before schema 17.
    allowedOrigins: r.allowed_origins === undefined || r.allowed_origins === null ? [] : parse(r.allowed_origins),
    // Absent before schema 20.
    dpopBoundAccessTokens:
      r.dpop_bound_access_tokens === undefined || r.dpop_bound_access_tokens === null ? false : flag(r.dpop_bound_access_tokens),
    name: strOrNull(r.name),
    disabled: flag(r.disabled),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
  };
}

export const signingKeyFrom = (r: Row): SigningKeyRecord => keyFrom(r, { sealedPrivateKey: String(r.sealed_private_key) });
export const removedSigningKeyFrom = (r: Row): RemovedSigningKeyRecord => keyFrom(r, {});

/** A signing key row's fields, with `sealed` (the sealed private key of a key not removed) after the public key. */
function keyFrom<S extends object>(r: Row, sealed: S): RemovedSigningKeyRecord & S {
  return {
    kid: String(r.kid),
    alg: r.alg as SigningKeyRecord['alg'],
    publicJwk: parse(r.public_jwk),
    ...sealed,
    createdAt: num(r.created_at),
    activatesAt: num(r.activates_at),
    ...(r.mac != null ? { mac: String(r.mac) } : {}),
    ...(r.seq != null ? { seq: num(r.seq) } : {}),
    ...(r.retires_at != null ? { retiresAt: num(r.retires_at) } : {}),
    ...(r.successor_kid != null ? { successorKid: String(r.successor_kid) } : {}),
  };
}

export function revocationEntryFrom(r: Row): RevocationEntry {
  return {
    seq: num(r.seq),
    kind: r.kind as RevocationEntry['kind'],
    value: String(r.value),
    issuer: strOrNull(r.issuer),
    at: num(r.at),
    expiresAt: num(r.expires_at),
  };
}

/**
 * `entries` but the `token` entries (an access token's `jti`, a login session's sign-out) already
 * `logged` (keys from {@link tokenEntryKey}) or earlier among them: the log holds each once (see
 * `Store.appendRevocations`).
 */
export function unloggedEntries<E extends Pick<RevocationEntry, 'kind' | 'value' | 'issuer'>>(
  entries: readonly E[],
  logged: ReadonlySet<string>,
): E[] {
  const seen = new Set(logged);
  return entries.filter((e) => {
    if (e.kind !== 'token') return true;
    const key = tokenEntryKey(e.value, e.issuer);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The key of a `token` entry in {@link unloggedEntries}. */
export const tokenEntryKey = (value: string, issuer: string | null): string => JSON.stringify([value, issuer]);

/**
 * `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes,
 * audiences, grant_types, access_token_ttl, exchange_retarget_audiences, redirect_uris,
 * allowed_origins, name, disabled, created_at, updated_at, dpop_bound_access_tokens)`. `flag` writes a
 * boolean column.
 */
export function clientValues<F>(c: ClientRecord, flag: (v: boolean) => F): (SqlValue | F)[] {
  return [
    c.id,
    c.authMethod,
    c.secretMethod,
    c.secretHash,
    c.jwks === null ? null : json(c.jwks),
    c.jwksUri,
    json(c.scopes),
    json(c.audiences),
    json(c.grantTypes),
    c.accessTokenTtl,
    flag(c.exchangeRetargetAudiences),
    json(c.redirectUris),
    json(c.allowedOrigins),
    c.name,
    flag(c.disabled),
    c.createdAt,
    c.updatedAt,
    flag(c.dpopBoundAccessTokens),
  ];
}

/** Each field a {@link ClientPatch} may set: its column and how its value is written. `flag` writes a boolean column. */
export function clientPatchColumns<F>(flag: (v: boolean) => F): Record<keyof ClientPatch, [string, (v: never) => SqlValue | F]> {
  return {
    disabled: ['disabled', flag],
    secretHash: ['secret_hash', (v: string | null) => v],
    scopes: ['scopes', (v: readonly string[]) => json(v)],
    audiences: ['audiences', (v: readonly string[]) => json(v)],
    grantTypes: ['grant_types', (v: readonly string[]) => json(v)],
    accessTokenTtl: ['access_token_ttl', (v: number | null) => v],
    exchangeRetargetAudiences: ['exchange_retarget_audiences', flag],
    jwks: ['jwks', (v: unknown) => (v === null ? null : json(v))],
    jwksUri: ['jwks_uri', (v: string | null) => v],
    redirectUris: ['redirect_uris', (v: readonly string[]) => json(v)],
    allowedOrigins: ['allowed_origins', (v: readonly string[]) => json(v)],
    dpopBoundAccessTokens: ['dpop_bound_access_tokens', flag],
    name: ['name', (v: string | null) => v],
  };
}

/** `INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at, mac, retires_at, successor_kid)`. */
export const signingKeyValues = (k: SigningKeyRecord): SqlValue[] => [
  k.kid,
  k.alg,
  json(k.publicJwk),
  k.sealedPrivateKey,
  k.createdAt,
  k.activatesAt,
  k.mac ?? null,
  k.retiresAt ?? null,
  k.successorKid ?? null,
];

/**
 * `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes,
 * audiences, created_at, expires_at, subject_jti, actor_jti, actor_grant_id)`: `g` created under
 * `issuer` in the tree `rootId` at `depth`, with the actor token's grant `actorGrantId` (see
 * {@link createdGrant}).
 */
export function grantValues(g: NewGrant, issuer: string, rootId: string, depth: number, actorGrantId: string | null): SqlValue[] {
  return [
    g.id,
    g.parentId,
    rootId,
    depth,
    g.kind,
    issuer,
    g.subject,
    g.clientId,
    g.act === null ? null : json(g.act),
    json(g.scopes),
    json(g.audiences),
    g.createdAt,
    g.expiresAt,
    g.subjectJti ?? null,
    g.actorJti ?? null,
    actorGrantId,
  ];
}

export function grantFrom(r: Row): GrantRecord {
  return {
    id: String(r.id),
    parentId: strOrNull(r.parent_id),
    rootId: String(r.root_id),
    depth: num(r.depth),
    kind: r.kind as GrantRecord['kind'],
    issuer: String(r.issuer),
    subject: String(r.subject),
    clientId: String(r.client_id),
    act: r.act === null ? null : parse(r.act),
    scopes: parse(r.scopes),
    audiences: parse(r.audiences),
    createdAt: num(r.created_at),
    expiresAt: numOrNull(r.expires_at),
    revokedAt: numOrNull(r.revoked_at),
    revokedReason: strOrNull(r.revoked_reason),
    subjectJti: strOrNull(r.subject_jti),
    actorJti: strOrNull(r.actor_jti),
    actorGrantId: strOrNull(r.actor_grant_id),
  };
}

/** A grant created from `g` as the stores answer it. */
export function createdGrant(g: NewGrant, issuer: string, rootId: string, depth: number, actorGrantId: string | null): GrantRecord {
  return {
    ...g,
    issuer,
    rootId,
    depth,
    revokedAt: null,
    revokedReason: null,
    subjectJti: g.subjectJti ?? null,
    actorJti: g.actorJti ?? null,
    actorGrantId,
  };
}

export function refreshFrom(r: Row): RefreshTokenRecord {
  return {
    hash: String(r.hash),
    grantId: String(r.grant_id),
    clientId: String(r.client_id),
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
    rotatedAt: numOrNull(r.rotated_at),
    revokedAt: numOrNull(r.revoked_at),
    ...(r.jkt === null || r.jkt === undefined ? {} : { jkt: String(r.jkt) }),
  };
}

/**
 * The `expiresAt` a token takes when it is rotated (spent): RFC 9700 §4.14.2 reuse detection needs
 * it as long as its family can be used, not only for its own lifetime. Until the grant expires; for
 * a grant without expiry, until its successor's expiry plus the refresh lifetime (`nextExpiresAt -
 * now`). The prune keeps a spent token past this while another token of its family is not yet due,
 * so the oldest spent token of a family rotated on for months is still known.
 */
export function spentKeptUntil(grant: GrantRecord, o: { readonly nextExpiresAt: number; readonly now: number }): number {
  return grant.expiresAt ?? o.nextExpiresAt + (o.nextExpiresAt - o.now);
}

/**
 * The successor of the refresh token `token` of `grant` when it is rotated at `o.now`: same grant,
 * client and `jkt` (an unbound token's successor bound to `o.bindJkt` when given), expiring at
 * `o.nextExpiresAt` or the grant's expiry, whichever is first.
 */
export function rotatedSuccessor(
  token: RefreshTokenRecord,
  grant: GrantRecord,
  o: { readonly nextHash: string; readonly nextExpiresAt: number; readonly now: number; readonly bindJkt?: string | undefined },
): RefreshTokenRecord {
  return {
    hash: o.nextHash,
    grantId: token.grantId,
    clientId: token.clientId,
    createdAt: o.now,
    expiresAt: grant.expiresAt === null ? o.nextExpiresAt : Math.min(o.nextExpiresAt, grant.expiresAt),
    rotatedAt: null,
    revokedAt: null,
    ...(token.jkt !== undefined ? { jkt: token.jkt } : o.bindJkt !== undefined ? { jkt: o.bindJkt } : {}),
  };
}

/**
 * Whether `token`, rotated already, presented again at `o.now` is a retry within the reuse interval
 * (see `Store.rotateRefreshToken`): rotated less than `o.reuseIntervalSeconds` ago, to `successor`,
 * which is still current (so `token` was rotated one generation ago), its `grant` active, and the
 * successor the retry would have bound as `successor` is (a retry without the DPoP key the lost
 * response's token is bound to is not one).
 */
export function isRetry(
  token: RefreshTokenRecord,
  successor: RefreshTokenRecord | undefined,
  grant: GrantRecord | undefined,
  o: { readonly now: number; readonly reuseIntervalSeconds?: number | undefined; readonly bindJkt?: string | undefined },
): successor is RefreshTokenRecord {
  const interval = o.reuseIntervalSeconds ?? 0;
  if (interval <= 0 || token.rotatedAt === null || token.revokedAt !== null || o.now - token.rotatedAt >= interval) return false;
  if (successor === undefined || successor.grantId !== token.grantId || successor.clientId !== token.clientId) return false;
  if (successor.rotatedAt !== null || successor.revokedAt !== null || successor.expiresAt <= o.now) return false;
  if (grant === undefined || grant.revokedAt !== null || (grant.expiresAt !== null && grant.expiresAt <= o.now)) return false;
  return (token.jkt ?? o.bindJkt) === successor.jkt;
}

export function codeFrom(r: Row): AuthorizationCodeRecord {
  return {
    hash: String(r.hash),
    clientId: String(r.client_id),
    redirectUri: strOrNull(r.redirect_uri),
    codeChallenge: String(r.code_challenge),
    subject: String(r.subject),
    issuer: String(r.issuer),
    scopes: parse(r.scopes),
    audiences: parse(r.audiences),
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
    consumedAt: numOrNull(r.consumed_at),
    grantId: strOrNull(r.grant_id),
    jkt: strOrNull(r.jkt),
    approvalSince: numOrNull(r.approval_since),
  };
}

/**
 * `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer,
 * scopes, audiences, created_at, expires_at, consumed_at, grant_id, jkt, approval_since)`.
 */
export function codeValues(c: AuthorizationCodeRecord): SqlValue[] {
  return [
    c.hash,
    c.clientId,
    c.redirectUri,
    c.codeChallenge,
    c.subject,
    c.issuer,
    json(c.scopes),
    json(c.audiences),
    c.createdAt,
    c.expiresAt,
    c.consumedAt,
    c.grantId,
    c.jkt,
    c.approvalSince,
  ];
}

/** The `LIMIT` of `Store.queryAudit`: the query's `limit`, or the default, within 1 to {@link AUDIT_QUERY_MAX}. */
export const auditQueryLimit = (q: AuditQuery): number => Math.max(1, Math.min(q.limit ?? AUDIT_QUERY_DEFAULT, AUDIT_QUERY_MAX));

/**
 * `INSERT INTO audit_events (id, time, kind, subject, client_id, delegation_id, request_id, jti,
 * token_hash, event)`.
 */
export function auditValues(e: AuditEvent): SqlValue[] {
  return [
    e.id,
    e.time,
    e.kind,
    auditColumnValue(e.subject),
    auditColumnValue(e.client_id),
    auditColumnValue(e.delegation_id),
    auditColumnValue(e.request_id),
    auditColumnValue(e.jti),
    auditColumnValue(e.token_hash),
    auditEventBody(e),
  ];
}

// A NUL (which PostgreSQL text refuses, failing the whole batch the event is in: an issuer's or
// an identity provider's `sub` with one would stop the audit trail) and a lone UTF-16 surrogate
// (which the drivers write as U+FFFD, so the value read back differs).
// biome-ignore lint/suspicious/noControlCharactersInRegex: a NUL is what this looks for
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
/** Cheap first look (every audit row, on the token endpoint's path): a NUL or any surrogate. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: a NUL is what this looks for
const MAYBE_UNSTORABLE = /[\u0000\ud800-\udfff]/;

/**
 * What an indexed id column of `audit_events` holds for `value`: the value, with a NUL or a lone
 * surrogate written U+FFFD (the exact value is then kept in the `event` column too, see
 * {@link auditEventBody}). `Store.queryAudit` looks its arguments up the same way.
 */
export function auditColumnValue(value: string | undefined): string | null {
  if (value === undefined) return null;
  if (!MAYBE_UNSTORABLE.test(value)) return value;
  UNSTORABLE.lastIndex = 0;
  return UNSTORABLE.test(value) ? value.replace(UNSTORABLE, '\ufffd') : value;
}

/** A `Store.queryAudit` argument for an id column, looked up as {@link auditColumnValue} stores it. */
export const auditLookup = (value: string | undefined): string | undefined =>
  value === undefined ? undefined : (auditColumnValue(value) as string);

/**
 * The `event` column of an audit row: the event without the fields that have columns of their own
 * (id, time, kind and the indexed ids). Writing them twice cost a fifth of an event's insert.
 * Rows written before this (schema 7 and older) kept the whole event there; {@link auditEventFrom}
 * reads both, and migration 8 makes an older Tessera refuse a database with rows of this shape.
 */
export function auditEventBody(e: AuditEvent): string {
  const { id, time, kind, subject, client_id, delegation_id, request_id, jti, token_hash, ...rest } = e;
  // A value its column cannot hold as it is (auditColumnValue) is kept here exactly, and read back from here.
  const ids = { subject, client_id, delegation_id, request_id, jti, token_hash };
  let exact: Record<string, string> | undefined;
  for (const field in ids) {
    const v = ids[field as keyof typeof ids];
    if (v !== undefined && auditColumnValue(v) !== v) (exact ??= {})[field] = v;
  }
  return JSON.stringify(exact === undefined ? rest : { ...rest, ...exact });
}

const AUDIT_COLUMNS: ReadonlySet<string> = new Set([
  'id',
  'time',
  'kind',
  'subject',
  'client_id',
  'delegation_id',
  'request_id',
  'jti',
  'token_hash',
]);

// AuditEvent's field order: an event read back always lists its fields in this order (the one
// its producer built may differ, as JSON lines sinks print it).
const AUDIT_FIELDS = [
  'id',
  'time',
  'kind',
  'decision',
  'reason',
  'request_id',
  'route',
  'method',
  'path',
  'tool',
  'issuer',
  'subject',
  'subject_issuer',
  'client_id',
  'actor_chain',
  'delegation_id',
  'jti',
  'token_hash',
  'scopes_required',
  'scopes_granted',
  'upstream_status',
  'bytes_in',
  'bytes_out',
  'latency_ms',
  'remote_addr',
  'detail',
] as const satisfies readonly (keyof AuditEvent)[];

/** An audit event from its row: the columns, and the rest from the `event` column. */
export function auditEventFrom(r: Row): AuditEvent {
  const body = parse<Record<string, unknown>>(r.event);
  const event: Record<string, unknown> = {};
  for (const field of AUDIT_FIELDS) {
    // A column's value is read from the body when the body has it: a row of schema 7 or older (the
    // same value), or a value its column could not hold as it is (auditEventBody).
    const v = AUDIT_COLUMNS.has(field) ? (body[field] ?? r[field]) : body[field];
    if (v !== null && v !== undefined) event[field] = field === 'time' ? num(v) : v;
  }
  // Fields a later version added, kept rather than dropped.
  for (const field in body) if (!(field in event) && !AUDIT_COLUMNS.has(field)) event[field] = body[field];
  return event as unknown as AuditEvent;
}

export function consentFrom(r: Row): RememberedConsentRecord {
  return {
    subject: String(r.subject),
    clientId: String(r.client_id),
    issuer: String(r.issuer),
    identitySource: String(r.identity_source),
    scopes: parse(r.scopes),
    scopesDigest: String(r.scopes_digest),
    audiences: parse(r.audiences),
    redirectUri: String(r.redirect_uri),
    clientFingerprint: String(r.client_fingerprint),
    approvalHash: String(r.approval_hash),
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
  };
}

/**
 * `INSERT INTO remembered_consents (subject, client_id, issuer, identity_source, scopes,
 * scopes_digest, audiences, redirect_uri, client_fingerprint, approval_hash, created_at, expires_at)`.
 */
export function consentValues(c: RememberedConsentRecord): SqlValue[] {
  return [
    c.subject,
    c.clientId,
    c.issuer,
    c.identitySource,
    json(c.scopes),
    c.scopesDigest,
    json(c.audiences),
    c.redirectUri,
    c.clientFingerprint,
    c.approvalHash,
    c.createdAt,
    c.expiresAt,
  ];
}
