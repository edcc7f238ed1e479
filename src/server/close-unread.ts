/**
 * Answering a request whose body is left unread (a refusal decided on the head: a declared length
 * over the limit, another Content-Type, no credential). Node would read and drop the whole body
 * after the answer to keep the connection (a 100 MB body held it until `request_timeout`), or,
 * told `connection: close`, destroy the socket as soon as the answer is written: a client still
 * sending then gets a reset, which may discard the answer before it reads it (RFC 9112 §9.6).
 *
 * {@link closeUnread} says `connection: close`, half-closes once the answer is written, and
 * destroys the connection when the client closes its side or {@link LINGER_MS} later;
 * {@link endConnection} ends a connection so after an answer written on the socket itself.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** How long a connection lingers, half-closed, after an answer that left its request body unread. */
export const LINGER_MS = 1000;

/** Whether the request announces a body that has not been read whole. */
export function bodyUnread(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

/**
 * Answer `res` with `connection: close` (call before its head is written) and, once written, end
 * the connection without reading the rest of the body: half-closed, destroyed when the client
 * closes or after {@link LINGER_MS}.
 */
export function closeUnread(res: ServerResponse): void {
  if (!res.headersSent) res.setHeader('connection', 'close');
  res.shouldKeepAlive = false;
  const socket = res.socket as Socket | null;
  if (socket === null) return;
  res.once('finish', () => {
    // Node's answer to `connection: close` (socket.destroySoon, run just before this) ends the
    // writable side and destroys the socket as soon as that is written: replaced by the linger.
    socket.removeListener('finish', socket.destroy);
    if (socket.destroyed) return;
    if (!socket.writableEnded) socket.end();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('end', () => socket.destroy());
    socket.once('close', () => clearTimeout(timer));
  });
}

/**
 * Write `answer` on a connection no request follows on (a request head refused or timed out,
 * CONNECT, a refused upgrade) and end it: half-closed, destroyed when the client closes its side or
 * {@link LINGER_MS} later. The HTTP listener allows half-open connections: ended alone, one whose
 * client never closes its side stays open for good, past every timeout, and holds its place in
 * `max_connections` and `max_connections_per_address`.
 */
export function endConnection(socket: Duplex, answer: string): void {
  socket.end(answer);
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // Read (and drop) what the client still sends, so that its close is seen: a socket handed over
  // on upgrade or CONNECT is not read by anyone any more.
  socket.resume();
}
