/**
 * The limits of the HTTP listener, one schema for its two places: `gateway.limits` (with the
 * gateway's `max_body_size`) and `token_service.limits` (the listener of `tessera serve` without a
 * gateway section). Under `tessera serve` there is one listener: with a gateway section it applies
 * `gateway.limits`, and `token_service.limits` is refused (see {@link listenerLimitsRule}).
 *
 * @module
 */
import { z } from 'zod';
import { trusted } from './cross-check.ts';
import { TIMER_MAX } from './duration.ts';
import { duration } from './verifier-schema.ts';

/** What `tessera serve` says of the one listener’s limits, in both sections’ descriptions. */
export const listenerLimitsRule =
  'Under `tessera serve` the token service and the gateway share one listener, and one set of limits applies to it: `gateway.limits` when there is a `gateway` section (`token_service.limits` beside one is refused), else `token_service.limits`.';

/** The fields both sections share. */
export const listenerLimitFields = {
  max_header_size: z
    .number()
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(16 * 1024)
    .meta({ description: 'Largest request head (bytes); larger is 431.' }),
  max_connections: z.number().int().min(1).default(10_000).meta({ description: 'Concurrent client connections.' }),
  max_connections_per_address: z.number().int().min(0).default(512).meta({
    description:
      'Concurrent client connections from one address (an IPv6 address by its /64), so that one client cannot hold every one of `max_connections` (idle or trickling connections, each cut only after `headers_timeout`); a connection past it is closed at once, unanswered. The section’s `trust_proxy` peers are not held to it (every client behind a proxy arrives from the proxy’s address): behind a proxy or load balancer not listed there, raise it above the connections the proxy opens, or write 0 for no limit. Above `max_connections`, `max_connections` bounds it. Default 512: about a twentieth of the default `max_connections` (10000). A connection is counted until it closes, however it ends (one answered 400, 408, 431 or 501, or refused an upgrade, is closed 1 s after its answer, its client’s side open or not). Connections refused past it or past `max_connections` are counted in `tessera_gateway_connections_refused_total{reason}` (under a gateway) and logged (`connections_refused`, warn): the first at once, the rest in one line per reason every 10 s, with how many there were and the last one’s address (an IPv6 address by its /64), nothing else of them.',
  }),
  headers_timeout: duration('Time a client has to send the request head.', TIMER_MAX).prefault('20s'),
  request_timeout: duration('Time a client has to send the whole request (0: none); at least headers_timeout.', TIMER_MAX).prefault('5m'),
  keep_alive_timeout: duration(
    'Idle time before a client keep-alive connection is closed. A proxy in front (nginx, Caddy, a load balancer) must close its idle connections to Tessera sooner.',
    TIMER_MAX,
  ).prefault('5s'),
  send_timeout: duration(
    'Time a connection may have output pending with not one byte of it taken by the client (0: none), as nginx’s `send_timeout`: a client that stops reading a large answer, an event stream or a WebSocket is cut then, its connection destroyed, and under a gateway its upstream request aborted (its pooled connection freed). A client that reads, however slowly, is never cut: each byte it takes starts the time again. The request’s audit event keeps its decision and reason with `detail.closed: send_timeout` (a WebSocket has no event at its end); cuts are counted in `tessera_gateway_send_timeouts_total{kind}` (`http`, `websocket`). Checked every second. A reload (under a gateway) applies a new value at once, to the connections already open as to new ones: one stalled before the reload is cut once the new value passes from the first check after it.',
    TIMER_MAX,
  ).prefault('60s'),
};

/**
 * Node enforces the whole-request limit only once the head's has passed: a shorter one would read
 * as configured and act as headers_timeout (its constructor refuses the pair outright).
 */
export function checkListenerTimeouts(
  l: { readonly request_timeout: number; readonly headers_timeout: number },
  ctx: z.core.$RefinementCtx,
): void {
  const ok = trusted(ctx.issues);
  if (ok('request_timeout') && ok('headers_timeout') && l.request_timeout > 0 && l.request_timeout < l.headers_timeout) {
    ctx.addIssue({
      code: 'custom',
      path: ['request_timeout'],
      message: `is shorter than headers_timeout (${l.headers_timeout}s): a request cannot arrive whole before its head; write at least ${l.headers_timeout}s, 0 for no limit, or lower headers_timeout`,
    });
  }
}

/** `token_service.limits`: the listener limits without the gateway’s body limit. */
export const listenerLimitsSchema = z
  .strictObject(listenerLimitFields)
  .superRefine(checkListenerTimeouts)
  .meta({
    description: `The limits of the HTTP listener of \`tessera serve\` without a \`gateway\` section (the token service alone): slow or idle clients and connection counts. Unset: the defaults below, the same as \`gateway.limits\`’. ${listenerLimitsRule}`,
  });

/** The listener limits a server applies (seconds and bytes). */
export type ListenerLimits = z.output<typeof listenerLimitsSchema>;
