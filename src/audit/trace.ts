/**
 * A trace (`tessera trace ID`): the delegation chain an id belongs to, rebuilt from the store's
 * grants and audit trail. From the root grant (whose authority it is, who approved it, when)
 * through each token exchange (child grants: the actor, the narrowed scopes and audiences) down to
 * the tokens issued under each grant and the gateway decisions that used them, with the
 * revocations that touched the chain.
 *
 * Built from records that never hold a token, so a trace never holds one either.
 *
 * @module
 */
import { chainOf } from '../issuer/context.ts';
import type { GrantRecord, Store } from '../store/contract.ts';
import type { AuditEvent, AuditKind } from './event.ts';
import type { TraceKind } from './trace-kinds.ts';

export { TRACE_KINDS, type TraceKind } from './trace-kinds.ts';

/** The store methods a trace reads. */
export type TraceStore = Pick<Store, 'getGrant' | 'grantAncestors' | 'grantSubtree' | 'queryAudit'>;

/** How much a trace shows: enough for one screen; the rest is one `tessera audit query` away. */
export interface TraceLimits {
  /** Grants below the one the id led to. */
  readonly grants: number;
  /** Tokens per grant. */
  readonly tokens: number;
  /** Gateway decisions per token. */
  readonly requests: number;
}

export const DEFAULT_TRACE_LIMITS: TraceLimits = { grants: 50, tokens: 20, requests: 20 };

/** A gateway or forward-auth decision. */
export interface TraceRequest {
  /** The audit event id. */
  readonly id: string;
  readonly time: string;
  readonly kind: AuditKind;
  readonly request_id: string | null;
  readonly route: string | null;
  readonly method: string | null;
  readonly path: string | null;
  readonly tool: string | null;
  readonly decision: 'allow' | 'deny';
  readonly reason: string;
  readonly upstream_status: number | null;
  readonly latency_ms: number | null;
  readonly jti: string | null;
  readonly token_hash: string | null;
  /** This is what the id named (the request, or a use of the token). */
  readonly matched: boolean;
}

/** A token issued under a grant, from the event that issued it. */
export interface TraceToken {
  readonly jti: string;
  /** `token.issued`, `token.exchanged` or `token.refreshed`. */
  readonly event: AuditKind;
  readonly issued_at: string;
  /** `null` when the event predates Tessera recording it. */
  readonly expires_at: string | null;
  readonly client_id: string | null;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  /** The token-endpoint request that issued it. */
  readonly request_id: string | null;
  readonly matched: boolean;
  readonly requests: readonly TraceRequest[];
  /** More decisions used this token than the trace shows. */
  readonly more_requests: boolean;
}

/** The person's approval a root `authorization_code` grant came from (the consent page). */
export interface TraceApproval {
  readonly time: string;
  /** The person who approved. */
  readonly subject: string | null;
  readonly client_id: string | null;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly redirect_uri: string | null;
  /** The authorization request (`X-Request-Id` of the consent form's answer). */
  readonly request_id: string | null;
  /** The person's last sign-in at an upstream OpenID Connect provider before approving, if any. */
  readonly login: { readonly time: string; readonly provider: string | null } | null;
  /**
   * `consent_page`: the person answered the page; `remembered`: a remembered consent
   * (`authorization.remember_consent`) approved it without the page.
   */
  readonly method: 'consent_page' | 'remembered';
  /**
   * For `remembered`: the approval on the consent page it was remembered from (`null` when that
   * event is no longer in the trail); else `null`.
   */
  readonly remembered_from: { readonly time: string; readonly request_id: string | null } | null;
}

/** A grant of the chain. */
export interface TraceGrant {
  readonly id: string;
  /** `null` for a root (or when the grant is no longer in the store). */
  readonly parent_id: string | null;
  readonly depth: number | null;
  /** `client_credentials`, `mint`, `token_exchange`, `upstream`; `null` when not in the store. */
  readonly kind: string | null;
  readonly issuer: string | null;
  /** Whose authority it is. */
  readonly subject: string | null;
  /** The client its tokens are issued to. */
  readonly client_id: string | null;
  /** The `act` chain of its tokens, current actor first. */
  readonly actor_chain: readonly string[];
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly created_at: string | null;
  readonly expires_at: string | null;
  readonly revoked_at: string | null;
  readonly revoked_reason: string | null;
  /** For a root `authorization_code` grant: the person's approval it came from; else `null`. */
  readonly approval: TraceApproval | null;
  /** False when the grant was pruned after it expired: only the audit trail still names it. */
  readonly in_store: boolean;
  /** The grant the id led to. */
  readonly focus: boolean;
  /**
   * Tokens issued under it: none for the grants above the focus; for a focus reached through a
   * token (jti, token hash, a request made with it), that token only.
   */
  readonly tokens: readonly TraceToken[];
  readonly more_tokens: boolean;
}

/** A revocation that touched the chain. */
export interface TraceRevocation {
  readonly id: string;
  readonly time: string;
  /** `grant.revoked`, `token.revoked` or `refresh.reuse_detected`. */
  readonly kind: AuditKind;
  readonly reason: string;
  readonly delegation_id: string | null;
  readonly jti: string | null;
  readonly token_hash: string | null;
  /** Who revoked (`detail.by`), when recorded. */
  readonly by: string | null;
}

/**
 * The `--json` document of `tessera trace` (shape version 1; fields are only ever added). Times
 * are ISO 8601 UTC.
 */
export interface Trace {
  readonly version: 1;
  readonly query: {
    readonly kind: TraceKind;
    /** The id looked up; for a pasted token, its short hash, its `jti` claim or its grant (never the token). */
    readonly value: string;
    /** The value was derived from a token given to `tessera trace`. */
    readonly from_token: boolean;
  };
  /** The chain, parents before children (roots first). */
  readonly grants: readonly TraceGrant[];
  /** Matching decisions that name no grant of the chain (a token refused before it was attributed). */
  readonly requests: readonly TraceRequest[];
  readonly revocations: readonly TraceRevocation[];
  /** Something was left out to fit the limits. */
  readonly truncated: boolean;
}

const ISSUING: readonly AuditKind[] = ['token.issued', 'token.exchanged', 'token.refreshed'];
const DECISIONS: readonly AuditKind[] = ['gateway.request', 'gateway.forward_auth', 'gateway.stream_closed'];
const REVOKING: readonly AuditKind[] = ['grant.revoked', 'token.revoked', 'refresh.reuse_detected'];
/** Most events an id is looked up by (a caller may reuse a request id; a token may be used often). */
const SEED_LIMIT = 1000;

const isoMs = (ms: number) => new Date(ms).toISOString();
const isoS = (s: number | null) => (s === null ? null : isoMs(s * 1000));
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/** The events a lookup of `value` as `kind` starts from (none for a grant id). */
async function seedEvents(store: Pick<Store, 'queryAudit'>, kind: TraceKind, value: string, limit: number): Promise<AuditEvent[]> {
  if (kind === 'request') return store.queryAudit({ request_id: value, limit });
  if (kind === 'jti') return store.queryAudit({ jti: value, limit });
  if (kind === 'token-hash') return store.queryAudit({ token_hash: value, limit });
  return [];
}

/** Whether `value` is known as a `kind` (one indexed read). */
export async function isKnownAs(store: Pick<Store, 'getGrant' | 'queryAudit'>, kind: TraceKind, value: string): Promise<boolean> {
  if (kind === 'grant') {
    return (await store.getGrant(value)) !== undefined || (await store.queryAudit({ delegation_id: value, limit: 1 })).length > 0;
  }
  return (await seedEvents(store, kind, value, 1)).length > 0;
}

function requestOf(e: AuditEvent, matched: boolean): TraceRequest {
  return {
    id: e.id,
    time: isoMs(e.time),
    kind: e.kind,
    request_id: e.request_id ?? null,
    route: e.route ?? null,
    method: e.method ?? null,
    path: e.path ?? null,
    tool: e.tool ?? null,
    decision: e.decision,
    reason: e.reason,
    upstream_status: e.upstream_status ?? null,
    latency_ms: e.latency_ms ?? null,
    jti: e.jti ?? null,
    token_hash: e.token_hash ?? null,
    matched,
  };
}

function revocationOf(e: AuditEvent): TraceRevocation {
  const by = e.detail?.by;
  return {
    id: e.id,
    time: isoMs(e.time),
    kind: e.kind,
    reason: e.reason,
    delegation_id: e.delegation_id ?? null,
    jti: e.jti ?? null,
    token_hash: e.token_hash ?? null,
    by: typeof by === 'string' ? by : null,
  };
}

/** How long before an approval a sign-in is looked for (longer than any login session). */
const LOGIN_WINDOW_MS = 86_400_000;

/**
 * The approval a root `authorization_code` grant came from: its first token's event names the
 * code's hash, as does the `authorization.approved` event of the consent that issued the code.
 */
async function approvalOf(store: Pick<Store, 'queryAudit'>, grantId: string): Promise<TraceApproval | null> {
  const [issued] = await store.queryAudit({ delegation_id: grantId, kinds: ['token.issued'], limit: 1 });
  const codeHash = issued?.detail?.code_hash;
  if (typeof codeHash !== 'string') return null;
  const [approved] = await store.queryAudit({ token_hash: codeHash, kinds: ['authorization.approved'], limit: 1 });
  if (approved === undefined) return null;
  let login: TraceApproval['login'] = null;
  if (approved.subject !== undefined) {
    const logins = await store.queryAudit({
      subject: approved.subject,
      kinds: ['login.succeeded'],
      since: approved.time - LOGIN_WINDOW_MS,
      until: approved.time,
      limit: 1000,
    });
    const last = logins.at(-1);
    if (last !== undefined)
      login = { time: isoMs(last.time), provider: typeof last.detail?.provider === 'string' ? last.detail.provider : null };
  }
  const detail = approved.detail ?? {};
  const method = detail.method === 'remembered' ? 'remembered' : 'consent_page';
  let rememberedFrom: TraceApproval['remembered_from'] = null;
  if (method === 'remembered' && typeof detail.remembered_from === 'string') {
    const [page] = await store.queryAudit({ token_hash: detail.remembered_from, kinds: ['authorization.approved'], limit: 1 });
    if (page !== undefined) rememberedFrom = { time: isoMs(page.time), request_id: page.request_id ?? null };
  }
  return {
    time: isoMs(approved.time),
    subject: approved.subject ?? null,
    client_id: approved.client_id ?? null,
    scopes: approved.scopes_granted ?? [],
    audiences: strings(detail.aud),
    redirect_uri: typeof detail.redirect_uri === 'string' ? detail.redirect_uri : null,
    request_id: approved.request_id ?? null,
    login,
    method,
    remembered_from: rememberedFrom,
  };
}

function grantOf(g: GrantRecord, focus: boolean): Omit<TraceGrant, 'tokens' | 'more_tokens'> {
  return {
    id: g.id,
    parent_id: g.parentId,
    depth: g.depth,
    kind: g.kind,
    issuer: g.issuer,
    subject: g.subject,
    client_id: g.clientId,
    actor_chain: chainOf(g.act),
    scopes: g.scopes,
    audiences: g.audiences,
    created_at: isoS(g.createdAt),
    expires_at: isoS(g.expiresAt),
    revoked_at: isoS(g.revokedAt),
    revoked_reason: g.revokedReason,
    approval: null,
    in_store: true,
    focus,
  };
}

/** A grant the trail names but the store no longer holds (pruned after it expired). */
function prunedGrant(id: string, focus: boolean): Omit<TraceGrant, 'tokens' | 'more_tokens'> {
  return {
    id,
    parent_id: null,
    depth: null,
    kind: null,
    issuer: null,
    subject: null,
    client_id: null,
    actor_chain: [],
    scopes: [],
    audiences: [],
    created_at: null,
    expires_at: null,
    revoked_at: null,
    revoked_reason: null,
    approval: null,
    in_store: false,
    focus,
  };
}

/**
 * Rebuild the chain that `value`, looked up as `kind`, belongs to: every grant from its root down
 * to the grant the id led to (the focus) and every grant derived from that one, the tokens issued
 * under the focus and below it (only the named token, for a jti or token hash), the decisions that
 * used them, and the revocations of any of them. Empty (no grant, no request) when nothing matches.
 */
export async function buildTrace(
  store: TraceStore,
  kind: TraceKind,
  value: string,
  options: { readonly fromToken?: boolean; readonly limits?: TraceLimits } = {},
): Promise<Trace> {
  const limits = options.limits ?? DEFAULT_TRACE_LIMITS;
  let truncated = false;
  const seeds = await seedEvents(store, kind, value, SEED_LIMIT + 1);
  if (seeds.length > SEED_LIMIT) {
    truncated = true;
    seeds.length = SEED_LIMIT;
  }
  const seedIds = new Set(seeds.map((e) => e.id));
  // The tokens the id names: the jti itself, or the tokens of the matching events.
  const namedJtis = new Set<string>(kind === 'jti' ? [value] : seeds.flatMap((e) => (e.jti !== undefined ? [e.jti] : [])));
  const focusIds =
    kind === 'grant' ? [value] : [...new Set(seeds.flatMap((e) => (e.delegation_id !== undefined ? [e.delegation_id] : [])))];

  // The grants: each focus with its ancestors and its subtree, in one map (chains may share a root).
  const grants = new Map<string, Omit<TraceGrant, 'tokens' | 'more_tokens'>>();
  const below = new Set<string>();
  for (const id of focusIds) {
    const own = await store.getGrant(id);
    if (own === undefined) {
      grants.set(id, prunedGrant(id, true));
      continue;
    }
    for (const a of await store.grantAncestors(id)) if (!grants.has(a.id)) grants.set(a.id, grantOf(a, false));
    // One more than is shown, so a cut is known; the store reads no further.
    const subtree = await store.grantSubtree(id, limits.grants + 2);
    if (subtree.length > limits.grants + 1) truncated = true;
    for (const g of subtree.slice(0, limits.grants + 1)) {
      const focus = g.id === id;
      const prior = grants.get(g.id);
      if (prior === undefined || (focus && !prior.focus)) grants.set(g.id, grantOf(g, focus || prior?.focus === true));
      below.add(g.id);
    }
  }

  // Tokens and their uses: for the focus grants and the grants below them.
  const attached = new Set<string>();
  const tokensOf = new Map<string, { tokens: TraceToken[]; more: boolean }>();
  for (const id of grants.keys()) {
    if (!below.has(id) && !focusIds.includes(id)) continue;
    const g = grants.get(id);
    // For a named token, its own grant lists that token only; the grants below list all of theirs.
    const onlyNamed = g?.focus === true && kind !== 'grant' && namedJtis.size > 0;
    let issued: AuditEvent[];
    let more = false;
    if (onlyNamed) {
      issued = (
        await Promise.all([...namedJtis].map((jti) => store.queryAudit({ jti, delegation_id: id, kinds: ISSUING, limit: 1 })))
      ).flat();
    } else {
      issued = await store.queryAudit({ delegation_id: id, kinds: ISSUING, limit: limits.tokens + 1 });
      more = issued.length > limits.tokens;
      issued = issued.slice(0, limits.tokens);
    }
    if (more) truncated = true;
    const tokens: TraceToken[] = [];
    for (const e of issued) {
      if (e.jti === undefined) continue;
      const used = await store.queryAudit({ jti: e.jti, kinds: DECISIONS, limit: limits.requests + 1 });
      const moreRequests = used.length > limits.requests;
      if (moreRequests) truncated = true;
      const shown = used.slice(0, limits.requests);
      for (const s of seeds) if (s.jti === e.jti && DECISIONS.includes(s.kind) && !shown.some((u) => u.id === s.id)) shown.push(s);
      shown.sort((a, b) => (a.id < b.id ? -1 : 1));
      for (const u of shown) attached.add(u.id);
      const detail = e.detail ?? {};
      tokens.push({
        jti: e.jti,
        event: e.kind,
        issued_at: isoMs(e.time),
        expires_at: typeof detail.exp === 'number' ? isoS(detail.exp) : null,
        client_id: e.client_id ?? null,
        scopes: e.scopes_granted ?? [],
        audiences: strings(detail.aud),
        request_id: e.request_id ?? null,
        matched: namedJtis.has(e.jti) || seedIds.has(e.id),
        requests: shown.map((u) => requestOf(u, seedIds.has(u.id) || (kind === 'jti' && u.jti === value))),
        more_requests: moreRequests,
      });
    }
    tokensOf.set(id, { tokens, more });
  }

  // Revocations of any grant of the chain, and of the named tokens.
  const revocations = new Map<string, AuditEvent>();
  for (const id of grants.keys()) for (const e of await store.queryAudit({ delegation_id: id, kinds: REVOKING })) revocations.set(e.id, e);
  for (const jti of namedJtis) for (const e of await store.queryAudit({ jti, kinds: REVOKING })) revocations.set(e.id, e);
  for (const s of seeds) if (REVOKING.includes(s.kind)) revocations.set(s.id, s);

  // Where a person's delegation starts: the approval on the consent page (and the sign-in before it).
  for (const [id, g] of grants) {
    if (g.kind === 'authorization_code' && g.parent_id === null) grants.set(id, { ...g, approval: await approvalOf(store, id) });
  }

  // Parents before children: by depth (a pruned grant, depth unknown, first), then creation.
  const ordered = [...grants.values()].sort(
    (a, b) => (a.depth ?? -1) - (b.depth ?? -1) || (a.created_at ?? '').localeCompare(b.created_at ?? '') || a.id.localeCompare(b.id),
  );
  return {
    version: 1,
    query: { kind, value, from_token: options.fromToken ?? false },
    grants: ordered.map((g) => ({ ...g, tokens: tokensOf.get(g.id)?.tokens ?? [], more_tokens: tokensOf.get(g.id)?.more ?? false })),
    requests: seeds.filter((s) => DECISIONS.includes(s.kind) && !attached.has(s.id)).map((s) => requestOf(s, true)),
    revocations: [...revocations.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map(revocationOf),
    truncated,
  };
}

/** True when the trace found nothing at all. */
export function isEmptyTrace(t: Trace): boolean {
  return t.grants.length === 0 && t.requests.length === 0 && t.revocations.length === 0;
}
