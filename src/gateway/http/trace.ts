/**
 * Request correlation: `X-Request-Id` (propagated when well-formed and no token, created otherwise) and W3C
 * Trace Context (`traceparent`/`tracestate`): the gateway is a hop, so it keeps the trace id and
 * flags and sends its own parent id.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { inboundRequestId } from '../../core/request-id.ts';
import { holdsSecret } from '../../core/secret-shape.ts';
import { randomHex } from './random.ts';

/**
 * The inbound request id when it is safe to propagate and record (core/request-id.ts) and holds
 * none of `secrets` (the request's credential, the configured secrets), else a new UUID.
 */
export function requestId(inbound: string | string[] | undefined, secrets: readonly string[] = []): string {
  const id = inboundRequestId(inbound);
  return id === undefined || (secrets.length > 0 && holdsSecret(id, secrets)) ? randomUUID() : id;
}

/** The outbound trace context. */
export interface TraceContext {
  readonly traceparent: string;
  /** Propagated only with a valid inbound `traceparent`. */
  readonly tracestate: string | undefined;
  readonly traceId: string;
}

const HEX_LOWER = /^[0-9a-f]+$/;
const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_SPAN = '0000000000000000';

/** A fresh 16-hex-digit span (parent) id. */
export function spanId(): string {
  return randomHex(8);
}

/**
 * Parse an inbound `traceparent` (W3C Trace Context §3.2). Version `00` must be exactly 55
 * characters; a higher version is read by its first 55 characters followed by `-` or the end
 * (§4.3). `ff`, all-zero ids and upper-case hex are invalid.
 */
export function parseTraceparent(value: string | string[] | undefined): { traceId: string; flags: string } | undefined {
  if (typeof value !== 'string' || value.length < 55) return undefined;
  const version = value.slice(0, 2);
  if (!HEX_LOWER.test(version) || version === 'ff') return undefined;
  if (version === '00' ? value.length !== 55 : value.length > 55 && value.charCodeAt(55) !== 0x2d) return undefined;
  if (value[2] !== '-' || value[35] !== '-' || value[52] !== '-') return undefined;
  const traceId = value.slice(3, 35);
  const parent = value.slice(36, 52);
  const flags = value.slice(53, 55);
  if (!HEX_LOWER.test(traceId) || !HEX_LOWER.test(parent) || !HEX_LOWER.test(flags)) return undefined;
  if (traceId === ZERO_TRACE || parent === ZERO_SPAN) return undefined;
  return { traceId, flags };
}

/**
 * The trace context to send upstream.
 *
 * @example
 * ```ts
 * traceContext('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'vendor=x');
 * // { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-<new span>-01', tracestate: 'vendor=x', traceId: '4bf9…' }
 * ```
 */
export function traceContext(traceparent: string | string[] | undefined, tracestate: string | string[] | undefined): TraceContext {
  const parsed = parseTraceparent(traceparent);
  if (parsed) {
    const state = Array.isArray(tracestate) ? tracestate.join(',') : tracestate;
    return {
      traceparent: `00-${parsed.traceId}-${spanId()}-${parsed.flags}`,
      tracestate: state !== undefined && state.length <= 512 && /^[\x20-\x7e]*$/.test(state) ? state : undefined,
      traceId: parsed.traceId,
    };
  }
  const traceId = randomHex(16);
  return { traceparent: `00-${traceId}-${spanId()}-00`, tracestate: undefined, traceId };
}
