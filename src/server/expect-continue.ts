/**
 * `Expect: 100-continue` (RFC 9110 §10.1.1) answered once the handler has decided, not by Node.
 * Without a `checkContinue` listener Node sends `100 Continue` as soon as the request head
 * arrives, before any authentication, authorization or size check: the client then sends a body
 * that the final 401, 403 or 413 refuses anyway.
 *
 * {@link continueOnRead} handles such a request as any other and sends `100 Continue` only when the
 * handler starts reading the body (a `data` or `readable` listener, `resume()`, `pipe()`, async
 * iteration), and never once the response has begun. A refusal is then the only answer; Node
 * closes the connection after it, since the client may still send the body.
 *
 * ```ts
 * const server = createServer(handler).on('checkContinue', continueOnRead(handler));
 * ```
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Requests waiting for `100 Continue`, with the response to send it on. */
const waiting = new WeakMap<IncomingMessage, ServerResponse>();

/** A `checkContinue` listener running `listener`, which answers `100 Continue` by reading the body. */
export function continueOnRead(
  listener: (req: IncomingMessage, res: ServerResponse) => void,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    waiting.set(req, res);
    const send = (): void => {
      req.off('newListener', onListener);
      req.off('resume', send);
      if (!waiting.delete(req)) return;
      // After a final answer only the connection's end follows (Node's dump of the unread body
      // after the response resumes the request too).
      if (!res.headersSent && !res.destroyed) res.writeContinue();
    };
    const onListener = (event: string | symbol): void => {
      if (event === 'data' || event === 'readable') send();
    };
    req.on('newListener', onListener);
    req.on('resume', send);
    listener(req, res);
  };
}

/**
 * Throw the request's body away unread: resumed, unless its client is waiting for `100 Continue`,
 * which it is then never sent (so it does not send the body).
 */
export function discardBody(req: IncomingMessage): void {
  if (!waiting.delete(req)) req.resume();
}

/** Leave the request's body unread: a client waiting for `100 Continue` is never sent it. */
export function skipContinue(req: IncomingMessage): void {
  waiting.delete(req);
}
