/**
 * One request's facts as the gateway learns them, turned into exactly one audit event and one set
 * of metric observations when the request is finished (`done` guards against a second one).
 *
 * @module
 */
import type { AuditEvent, AuditKind } from '../audit/event.ts';
import type { CompiledRule } from '../core/policy.ts';
import type { Principal } from '../core/verify/principal.ts';

export class Exchange {
  /** `performance.now()` at arrival. */
  readonly start: number;
  /** Epoch ms at arrival. */
  readonly time: number;
  readonly kind: AuditKind;
  method: string;
  remoteAddress: string;
  requestId = '';
  route: string | undefined = undefined;
  /** Path for the audit trail (query values removed). */
  path = '';
  principal: Principal | undefined = undefined;
  rule: CompiledRule | undefined = undefined;
  decision: 'allow' | 'deny' = 'deny';
  /** `ok` or a reason code. */
  reason = 'ok';
  /** Status sent to the caller. */
  status = 0;
  upstreamStatus: number | undefined = undefined;
  bytesIn = 0;
  bytesOut = 0;
  done = false;
  detail: Record<string, string | number | boolean> | undefined = undefined;

  constructor(kind: AuditKind, method: string, remoteAddress: string, start: number, time: number) {
    this.kind = kind;
    this.method = method;
    this.remoteAddress = remoteAddress;
    this.start = start;
    this.time = time;
  }
}

/** Build the audit event for a finished exchange. Never reads a token or a header value. */
export function auditEventOf(x: Exchange, id: string, latencyMs: number): AuditEvent {
  const p = x.principal;
  const e: Record<string, unknown> = {
    id,
    time: x.time,
    kind: x.kind,
    decision: x.decision,
    reason: x.reason,
    request_id: x.requestId,
  };
  if (x.route !== undefined) e.route = x.route;
  e.method = x.method;
  e.path = x.path;
  if (p !== undefined) {
    e.issuer = p.issuer;
    if (p.subject !== undefined) e.subject = p.subject;
    if (p.clientId !== undefined) e.client_id = p.clientId;
    if (p.actors.length > 0) e.actor_chain = p.actors.map((a) => a.subject);
    if (p.delegationId !== undefined) e.delegation_id = p.delegationId;
    if (p.tokenId !== undefined) e.jti = p.tokenId;
    e.token_hash = p.tokenHash;
    e.scopes_granted = p.scopes;
  }
  if (x.rule !== undefined) {
    e.scopes_required = x.rule.any.length === 0 ? x.rule.all : [...x.rule.all, ...x.rule.any];
    if (x.detail === undefined) x.detail = { rule: x.rule.id };
    else x.detail.rule = x.rule.id;
  }
  if (x.upstreamStatus !== undefined) e.upstream_status = x.upstreamStatus;
  e.bytes_in = x.bytesIn;
  e.bytes_out = x.bytesOut;
  e.latency_ms = latencyMs;
  e.remote_addr = x.remoteAddress;
  if (x.detail !== undefined) e.detail = x.detail;
  return e as unknown as AuditEvent;
}
