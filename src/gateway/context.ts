/**
 * What the request handlers (proxy, WebSocket upgrade, forward-auth) share inside one gateway:
 * the current state, and the functions that end an exchange exactly once.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { TesseraError } from '../core/errors.ts';
import type { Clock } from '../core/ports.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { CompiledRoute, GatewayState } from './compile.ts';
import type { Exchange } from './exchange.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { DenyRendering } from './pipeline/errors/error-handler.ts';
import type { AdmittedStream } from './recheck.ts';
import type { StreamCloseReason, StreamRegistry } from './streams.ts';

export interface GatewayContext {
  /** The state of the moment; a handler reads it once and keeps it for the request. */
  readonly state: GatewayState;
  /** Shutting down: no new upgrades, connections are not kept alive. */
  readonly closing: boolean;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly streams: StreamRegistry<AdmittedStream>;
  /**
   * With `audit.on_queue_full: refuse`, while the audit queue is full: the 503 `audit_unavailable`
   * answer for this request (counted, logged at most once every 10 s, never audited: it takes no
   * slot in the queue); `undefined` when the request may go on, a slot then reserved for its event.
   * Ask before {@link begin}, and begin the exchange at once with `admitted` true: it takes the slot.
   * `slots` 2 (a request that may be proxied, a WebSocket upgrade): a second one too, for the
   * close of its stream (`Exchange.closeSlot`), when {@link closeSlots}.
   */
  auditRefusal(req: IncomingMessage, forwardAuth?: boolean, slots?: 1 | 2): DenyRendering | undefined;
  /**
   * With `refuse`, {@link auditRefusal} reserves the close slot asked for (`slots` 2): false with
   * `max_queue: 1`, so that every request fits an empty queue (its close, if any, then has no slot).
   */
  readonly closeSlots: boolean;
  /**
   * Start an exchange (counts it in flight). `admitted`: {@link auditRefusal} let it go on just
   * now, and its event takes the slot reserved then.
   */
  begin(kind: Exchange['kind'], req: IncomingMessage, admitted?: boolean): Exchange;
  /** End an exchange: one audit event, one metrics observation. Idempotent. */
  finish(x: Exchange): void;
  /** Mark the exchange refused, log the reason and render the refusal. */
  denyRendering(x: Exchange, error: TesseraError, challenges: (e?: TesseraError) => string[]): DenyRendering;
  /** Write a refusal and finish. */
  deny(x: Exchange, res: ServerResponse, error: TesseraError, challenges: (e?: TesseraError) => string[], close?: boolean): void;
  /**
   * Audit a stream the gateway closed (revocation, expiry, a reload). `slot`: the event takes the
   * slot reserved for it (`Exchange.closeSlot`), which is given back if there is no event (shutdown).
   */
  streamClosedEvent(x: Exchange, principal: Principal | undefined, reason: StreamCloseReason, slot?: boolean): void;
  /** Give back a slot reserved and not used (a close slot, its stream ended by itself). */
  releaseAuditSlot(): void;
  /**
   * The upstream answered 401 to the credential the gateway injects (`sent`, the decision's
   * headers): keep its status for the audit, warn the operator, and have the route's mutators
   * forget it (a cached minted token is not sent again).
   */
  credentialRejected(x: Exchange, route: CompiledRoute, sent: Readonly<Record<string, string>>): void;
  /** Answer 500 for an unexpected failure and finish. */
  internalError(x: Exchange, res: ServerResponse, error: unknown): void;
}
