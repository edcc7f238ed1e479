/**
 * One request's facts as the gateway learns them, turned into exactly one audit event and one set
 * of metric observations when the request is finished (`done` guards against a second one).
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';
import type { AuditEvent, AuditKind } from '../audit/event.ts';
import type { CompiledRule } from '../core/policy.ts';
import { actorLabel, type Principal, type SubIdTrust, subjectIssuer } from '../core/verify/principal.ts';

export class Exchange {
  /** `performance.now()` at arrival. */
  readonly start: number;
  /** Epoch ms at arrival. */
  readonly time: number;
  readonly kind: AuditKind;
  method: string;
  remoteAddress: string;
  requestId = '';
  /**
   * The credential this request presented (its Authorization header value) and the secrets the
   * operator configured: written `*` in every field the caller chose (path, query keys, tool, JSON-RPC method).
   */
  secrets: readonly string[] = [];
  route: string | undefined = undefined;
  /** Path for the audit trail (query values removed). */
  path = '';
  principal: Principal | undefined = undefined;
  /** The MCP tool a `tools/call` named. */
  tool: string | undefined = undefined;
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
  /** Its audit event has a slot reserved (`audit.on_queue_full: refuse`): it is kept, whatever the queue holds then. */
  auditSlot = false;
  /**
   * A second slot is reserved for the `gateway.stream_closed` event of its stream (a request that
   * may be proxied, an event stream or a download the gateway may cut; a WebSocket upgrade;
   * `audit.on_queue_full: refuse`): taken by that event, or given back when it finishes without one.
   */
  closeSlot = false;
  detail: Record<string, string | number | boolean> | undefined = undefined;
  /**
   * Whose `sub_id` named the subject's issuer when the exchange began (its identity headers and
   * rate-limit key were decided with it): its audit event names that issuer, whatever a reload
   * since has made `trust_sub_id`. Unset: the configuration in force when the event is written.
   */
  vouching: SubIdTrust | undefined = undefined;
  /**
   * The HTTP request, when one was begun: the listener may answer it 400 for a body its parser
   * refused (server/body-invalid.ts), which its finish then records instead of the decision.
   */
  request: IncomingMessage | undefined = undefined;

  constructor(kind: AuditKind, method: string, remoteAddress: string, start: number, time: number) {
    this.kind = kind;
    this.method = method;
    this.remoteAddress = remoteAddress;
    this.start = start;
    this.time = time;
  }
}

/**
 * Build the audit event for a finished exchange. Never reads a token or a header value. One object
 * literal with a fixed shape (absent facts are `undefined` and left out by JSON), which keeps it
 * cheap to build and to serialize. `vouching`: whose `sub_id` names the subject's issuer ({@link subjectIssuer}); the event names it when it is not the token's issuer.
 */
export function auditEventOf(x: Exchange, id: string, latencyMs: number, vouching: SubIdTrust): AuditEvent {
  const p = x.principal;
  const ofSubject = p === undefined || p.subject === undefined ? undefined : subjectIssuer(p, vouching);
  const rule = x.rule;
  let detail = x.detail;
  if (rule !== undefined) {
    if (detail === undefined) detail = { rule: rule.id };
    else detail.rule = rule.id;
  }
  if (p?.staticTokenId !== undefined) (detail ??= {}).static_token = p.staticTokenId;
  return {
    id,
    time: x.time,
    kind: x.kind,
    decision: x.decision,
    reason: x.reason,
    request_id: x.requestId,
    route: x.route,
    method: x.method,
    path: x.path,
    tool: x.tool,
    issuer: p?.issuer,
    subject: p?.subject,
    subject_issuer: ofSubject === p?.issuer ? undefined : ofSubject,
    client_id: p?.clientId,
    actor_chain: p === undefined || p.actors.length === 0 ? undefined : p.actors.map((a) => actorLabel(a, p.issuer)),
    delegation_id: p?.delegationId,
    jti: p?.tokenId,
    token_hash: p?.tokenHash,
    scopes_required: rule === undefined ? undefined : rule.any.length === 0 ? rule.all : [...rule.all, ...rule.any],
    scopes_granted: p?.scopes,
    upstream_status: x.upstreamStatus,
    bytes_in: x.bytesIn,
    bytes_out: x.bytesOut,
    latency_ms: latencyMs,
    remote_addr: x.remoteAddress,
    detail,
  } as AuditEvent;
}
