/**
 * `limits.send_timeout`: a connection whose client stops reading while output is pending for it (a
 * large answer, an event stream, a WebSocket relay) is destroyed once no byte could be written to
 * it for that long, as nginx's `send_timeout`. Node has no write timeout: through back-pressure such
 * a client would hold its connection, and the gateway's upstream request and pooled connection, for
 * as long as it likes.
 *
 * A client that reads, however slowly, is never cut: any byte the kernel takes counts as progress
 * (libuv's write queue shrinking, or a write completing), not a whole answer or a whole chunk.
 *
 * @module
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/** What a connection was, when it was cut: an HTTP exchange, or a WebSocket the listener upgraded. */
export type SendTimeoutKind = 'http' | 'websocket';

/** The send timeout of a listener (ms, 0: none), changed in place by a reload. */
export interface SendLimit {
  ms: number;
}

/** How often the connections are looked at: a stalled one is cut within this of `send_timeout`. */
const CHECK_MS = 1000;

/** Connections (and the HTTP responses they were writing) cut by the send timeout. */
const cut = new WeakSet<object>();

/** Connections the listener handed over to an upgrade (WebSocket). */
const upgraded = new WeakSet<Socket>();

/** Was `target` (a `ServerResponse`, or a socket) cut by the send timeout? Read when it closes, for its reason. */
export function cutBySendTimeout(target: object | null | undefined): boolean {
  return target != null && cut.has(target);
}

/** The listener handed `socket` to an upgrade: counted as a WebSocket when cut. */
export function markUpgraded(socket: object): void {
  upgraded.add(socket as Socket);
}

interface Watched {
  /** When the pending output last made progress, or was first seen pending (ms); 0: none pending. */
  since: number;
  /** Bytes whose writes had completed at the last look. */
  written: number;
  /** Bytes libuv still had to write at the last look. */
  queued: number;
}

/** Bytes libuv has yet to hand to the kernel (a partial write shrinks it): `uv_stream_t.write_queue_size`. */
function writeQueueSize(socket: Socket): number {
  return (socket as unknown as { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0;
}

/**
 * Watch every connection of `server` and destroy, once a `CHECK_MS`, those whose pending output
 * made no progress for `limit.ms` (nothing when 0). `onCut` is told of each, before it is destroyed
 * (the socket, and the response it was writing, then read as cut by {@link cutBySendTimeout}).
 */
export function watchSends(server: Server, limit: SendLimit, onCut?: (kind: SendTimeoutKind) => void): void {
  const watched = new Map<Socket, Watched>();
  server.on('connection', (socket: Socket) => {
    // Refused past a connection limit (destroyed by a listener ahead of this one).
    if (socket.destroyed) return;
    watched.set(socket, { since: 0, written: 0, queued: 0 });
    socket.once('close', () => watched.delete(socket));
  });
  const check = (): void => {
    if (limit.ms <= 0) return;
    const now = Date.now();
    for (const [socket, w] of watched) {
      const length = socket.writableLength;
      const queued = writeQueueSize(socket);
      // What was dispatched or buffered, less what is pending (buffered, or dispatched and not yet
      // complete): the bytes whose writes completed, which only grows.
      const written = length === 0 || queued === 0 ? 0 : socket.bytesWritten - length;
      // Nothing pending, or nothing waiting on the client (libuv holds no write: Node's buffer is
      // waiting on Node, say a corked socket): not stalled.
      if (length === 0 || queued === 0) w.since = 0;
      // Progress: a write completed, or the kernel took part of the one in flight.
      else if (w.since === 0 || written > w.written || (written === w.written && queued < w.queued)) w.since = now;
      else if (now - w.since >= limit.ms && !socket.destroyed) {
        const answering = (socket as { _httpMessage?: object | null })._httpMessage;
        cut.add(socket);
        if (answering != null) cut.add(answering);
        onCut?.(upgraded.has(socket) ? 'websocket' : 'http');
        socket.destroy();
        continue;
      }
      w.written = written;
      w.queued = queued;
    }
  };
  const timer = setInterval(check, CHECK_MS);
  timer.unref();
  server.once('close', () => clearInterval(timer));
}
