/**
 * A request the listener answered itself after its head was handed to a handler, its body not yet
 * whole: a body Node's HTTP parser refused (a chunk size that is no hex number, chunk data not
 * ended by CRLF), answered 400, or one still arriving when `request_timeout` passed, answered 408.
 * The listener closes the connection, and the request then ends as if its client had hung up. The
 * handler that holds it audits and counts it as `request_body_invalid` (400) or `request_timeout`
 * (408), not as `client_closed` (the client did not leave) nor with the answer it had decided
 * (which reaches no one); the listener does not count it among its own refusals, unless no handler
audits it ({@link markUnaudited}: the operations paths).
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';

/** Why the listener answered a request whose body a handler was reading. */
export type BodyRefusal = 'request_body_invalid' | 'request_timeout';

const refused = new WeakMap<IncomingMessage, BodyRefusal>();

/** Requests no handler audits or counts (the gateway's operations paths). */
const unaudited = new WeakSet<IncomingMessage>();

/**
 * Whether a parser error (`clientError`'s, or the one a connection was destroyed with) refused
 * what the client sent: any `HPE_` code but `HPE_INVALID_EOF_STATE`, which is the client ending
 * its connection mid-message (it hung up: `client_closed`).
 */
export function refusedByParser(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null | undefined)?.code;
  return typeof code === 'string' && code.startsWith('HPE_') && code !== 'HPE_INVALID_EOF_STATE';
}

/** Whether an error (`clientError`'s, or the one a connection was destroyed with) is Node's `requestTimeout`. */
export function requestTimedOut(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null | undefined)?.code === 'ERR_HTTP_REQUEST_TIMEOUT';
}

/** Record why the listener answered `req` while its body was being read (its `clientError` handler). */
export function markBodyRefused(req: IncomingMessage, reason: BodyRefusal): void {
  refused.set(req, reason);
}

/**
 * Why the listener answered `req` before any answer was begun, if it did: marked by the listener
 * ({@link markBodyRefused}), or, under a server without a `clientError` listener (an embedding
 * one: Node answers 400 or 408 itself when no answer has begun), its connection was destroyed
 * with the parser's error or the request timeout. Call it only for a request not answered yet (a
 * body still being read): past its answer's head, Node cuts the connection with no answer.
 */
export function bodyRefusal(req: IncomingMessage): BodyRefusal | undefined {
  const marked = refused.get(req);
  if (marked !== undefined) return marked;
  const error = req.socket?.errored;
  return refusedByParser(error) ? 'request_body_invalid' : requestTimedOut(error) ? 'request_timeout' : undefined;
}

/** Why the listener answered `req` itself ({@link markBodyRefused}), if it did. */
export function bodyMarkedRefusal(req: IncomingMessage): BodyRefusal | undefined {
  return refused.get(req);
}

/**
 * Say that the handler holding `req` neither audits nor counts it (`/healthz`, `/readyz`,
 * `/metrics`): a body the listener refuses while the answer is being made is then counted by the
 * listener among its own refusals, else it would leave no trace.
 */
export function markUnaudited(req: IncomingMessage): void {
  unaudited.add(req);
}

/** Whether a handler audits and counts `req` ({@link markUnaudited}). */
export function isAudited(req: IncomingMessage): boolean {
  return !unaudited.has(req);
}
