/**
 * The audit event: one per decision (gateway request, forward-auth check, token issued, exchanged,
 * refreshed, revoked). Field names are snake_case because events leave as JSON lines and rows.
 *
 * An event never holds a token, a secret, or any header value: tokens are identified by `jti` or
 * `token_hash` (the first 16 characters of their SHA-256, base64url).
 *
 * @module
 */

export type AuditKind =
  | 'gateway.request'
  | 'gateway.forward_auth'
  | 'gateway.stream_closed'
  | 'token.issued'
  | 'token.refreshed'
  | 'token.exchanged'
  | 'token.revoked'
  | 'revocation.denied'
  | 'token.introspected'
  | 'introspection.denied'
  | 'token.denied'
  | 'grant.revoked'
  | 'admin.denied'
  | 'admin.action'
  | 'refresh.reuse_detected'
  | 'login.succeeded'
  | 'login.signed_out'
  | 'authorization.approved'
  | 'authorization.denied'
  | 'authorization_code.reuse_detected'
  | 'client.created'
  | 'client.registration_denied'
  | 'client.updated'
  | 'client.removed'
  | 'key.rotated';

/**
 * One audit event: one decision (a gateway or verifier decision, a token issued or refused, a
 * revocation, a registration) with who, what and why. Never holds a token or a secret: tokens are
 * named by `jti` or a short hash.
 */
export interface AuditEvent {
  /** Unique, time-ordered id (UUIDv7) assigned by the producer. */
  readonly id: string;
  /** Epoch milliseconds. */
  readonly time: number;
  readonly kind: AuditKind;
  readonly decision: 'allow' | 'deny';
  /** Stable reason code: an ErrorCode, an OAuth error code, or `ok`. */
  readonly reason: string;
  readonly request_id?: string;
  readonly route?: string;
  readonly method?: string;
  /** Path with query values removed (keys kept: `/items?limit=&q=`). */
  readonly path?: string;
  readonly tool?: string;
  readonly issuer?: string;
  readonly subject?: string;
  /**
   * The issuer the subject belongs to, when it is not `issuer`: at the gateway, the identity
   * provider an RFC 9493 `sub_id` of a token service's token names (`gateway.trust_sub_id`), or of
   * an introspection answer (`introspection.trust_sub_id`), so two providers' `alice` are told apart.
   */
  readonly subject_issuer?: string;
  readonly client_id?: string;
  /** Delegation chain, current actor first. */
  readonly actor_chain?: readonly string[];
  readonly delegation_id?: string;
  readonly jti?: string;
  readonly token_hash?: string;
  readonly scopes_required?: readonly string[];
  readonly scopes_granted?: readonly string[];
  readonly upstream_status?: number;
  readonly bytes_in?: number;
  readonly bytes_out?: number;
  readonly latency_ms?: number;
  readonly remote_addr?: string;
  /** Extra non-secret facts (grant ids revoked, family id, key id; a token's `aud` and `exp` on the events that issue it). */
  readonly detail?: Readonly<Record<string, string | number | boolean | readonly string[]>>;
}

/** Where audit events go (the store, JSON lines). Must not block the request path. */
export interface AuditSink {
  write(events: readonly AuditEvent[]): Promise<void>;
}

/** Filter for reading the trail back (`tessera audit query`, `tessera audit tail`). */
export interface AuditQuery {
  readonly subject?: string;
  readonly delegation_id?: string;
  readonly client_id?: string;
  readonly request_id?: string;
  /** The token's `jti` (`tessera trace`). */
  readonly jti?: string;
  /** The token's short hash, as in {@link AuditEvent.token_hash} (`tessera trace`). */
  readonly token_hash?: string;
  /** Only events of these kinds (an empty list matches none). */
  readonly kinds?: readonly AuditKind[];
  /** Epoch ms, inclusive. */
  readonly since?: number;
  /** Epoch ms, inclusive: with `since`, a closed window. */
  readonly until?: number;
  /** Only events with an id greater than this (for `tail`). */
  readonly after_id?: string;
  readonly limit?: number;
}
