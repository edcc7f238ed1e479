/**
 * A request whose body Node's HTTP parser refused after its head was handed to a handler (a chunk
 * size that is no hex number, chunk data not ended by CRLF): the listener answers it 400 and closes
 * the connection, and the request then ends as if its client had hung up. The handler that holds
 * it audits and counts it as `request_body_invalid` with the listener's 400, not as
 * `client_closed` (the client did not leave) nor with the answer it had decided (which reaches
 * no one).
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';

const invalid = new WeakSet<IncomingMessage>();

/**
 * Whether a parser error (`clientError`'s, or the one a connection was destroyed with) refused
 * what the client sent: any `HPE_` code but `HPE_INVALID_EOF_STATE`, which is the client ending
 * its connection mid-message (it hung up: `client_closed`).
 */
export function refusedByParser(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null | undefined)?.code;
  return typeof code === 'string' && code.startsWith('HPE_') && code !== 'HPE_INVALID_EOF_STATE';
}

/** Record that the parser refused `req`'s body (the listener's `clientError` handler). */
export function markBodyInvalid(req: IncomingMessage): void {
  invalid.add(req);
}

/**
 * Whether the parser refused `req`'s body before any answer was begun: marked by the listener
 * ({@link markBodyInvalid}), or, under a server without a `clientError` listener (an embedding
 * one: Node answers 400 itself when no answer has begun), its connection was destroyed with the
 * parser's error. Call it only for a request not answered yet (a body still being read): past its
 * answer's head, Node cuts the connection with no 400.
 */
export function bodyInvalid(req: IncomingMessage): boolean {
  return invalid.has(req) || refusedByParser(req.socket?.errored);
}

/** Whether the listener answered `req` 400 for a body its parser refused ({@link markBodyInvalid}). */
export function bodyMarkedInvalid(req: IncomingMessage): boolean {
  return invalid.has(req);
}
