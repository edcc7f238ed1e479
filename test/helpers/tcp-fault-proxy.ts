/**
 * A TCP proxy on 127.0.0.1 in front of a real server (PostgreSQL), for network-fault tests: its
 * connections can be reset, black-holed (no RST, no FIN: a partition) and healed, new connections
 * refused, and a trap set on what the server sends (cut everything once PostgreSQL has answered a
 * `COMMIT`, say). Never touches the server itself.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

interface Pair {
  readonly inbound: Socket;
  readonly outbound: Socket;
  /** Bytes in either direction are dropped (a partition). */
  holed: boolean;
  /** Reset as soon as the client sends anything (see {@link FaultProxy.down}). */
  doomed: boolean;
  /** Connection id, in accept order. */
  readonly id: number;
}

export interface FaultProxy {
  /** The local port to connect to instead of the server's. */
  readonly port: number;
  /** Open connections through the proxy. */
  connections(): number;
  /**
   * Reset (RST) every open connection (or only connection `only`); with `refuse`, new ones are
   * reset at once until {@link FaultProxy.heal}.
   */
  reset(options?: { readonly refuse?: boolean; readonly only?: number }): void;
  /**
   * The server is out of reach from now on: new connections are reset at once, and an open one
   * as soon as the client sends anything on it (what the server had already sent still arrives),
   * until {@link FaultProxy.heal}.
   */
  down(): void;
  /**
   * Every connection open now is reset as soon as the client sends anything on it, as by
   * {@link FaultProxy.down}, but new connections pass: a failover that moved the server's address
   * (its old sessions gone without a word, a new server answering), before the client heard of it.
   */
  doom(): void;
  /**
   * Black-hole every open connection, or only connection `only` (nothing passes either way, nothing is closed); with
   * `newToo`, connections made from now on are accepted and black-holed too (a server that
   * stopped answering). Until {@link FaultProxy.heal}, or for ever for those already open.
   */
  blackHole(options?: { readonly newToo?: boolean; readonly only?: number }): void;
  /**
   * New connections pass again, and open ones not reset meanwhile (those black-holed before stay
   * so: a partition loses their state).
   */
  heal(): void;
  /**
   * Once the server has sent a chunk for which `match` holds (after that chunk is passed on to
   * the client; with `withhold`, instead of passing it on), call `then` (once). For a fault at a
   * precise point of a protocol exchange: withheld, an answer the server sent (a `COMMIT`'s, say)
   * never reaches the client.
   */
  trap(match: (fromServer: Buffer, connection: number) => boolean, then: () => void, options?: { readonly withhold?: boolean }): void;
  /** Stop listening and destroy every connection. */
  close(): Promise<void>;
}

/** PostgreSQL's CommandComplete message for `tag` (`COMMIT`, `ROLLBACK`). */
export function commandComplete(tag: string): Buffer {
  const body = Buffer.from(`${tag}\0`);
  const head = Buffer.alloc(5);
  head.write('C', 0);
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/**
 * Reset `socket` (RST) and destroy it; one whose FIN is under way is destroyed (FIN) instead. Node
 * ends a socket's writable side once its peer closed (the server's `allowHalfOpen` is false), and
 * until that shutdown is done libuv refuses an RST (`uv_tcp_close_reset` answers `UV_EINVAL`);
 * Node's `TCPWrap::Reset` then marks the handle closing without ever closing it: the socket never
 * emits `close`, and at exit Node waits for it in `CleanupHandles`, running the event loop with
 * nothing to wait on (a CPU core spent on reading the clock) for ever. A client closing its
 * connection in the poll that runs {@link FaultProxy.reset} (a pool timing out a black-holed
 * query, say) was enough.
 */
function rst(socket: Socket): void {
  if (socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}

export async function faultProxy(target: { readonly host: string; readonly port: number }): Promise<FaultProxy> {
  const pairs = new Set<Pair>();
  /** Every socket not yet closed (a black-holed connection's other end outlives its pair). */
  const sockets = new Set<Socket>();
  let mode: 'pass' | 'refuse' | 'hole' = 'pass';
  let traps: { match: (d: Buffer, id: number) => boolean; then: () => void; withhold: boolean }[] = [];
  let next = 0;
  const server: Server = createServer((inbound) => {
    inbound.on('error', () => {});
    if (mode === 'refuse') {
      rst(inbound);
      return;
    }
    const outbound = createConnection(target.port, target.host);
    outbound.on('error', () => {});
    sockets.add(inbound);
    sockets.add(outbound);
    inbound.on('close', () => sockets.delete(inbound));
    outbound.on('close', () => sockets.delete(outbound));
    const pair: Pair = { inbound, outbound, holed: mode === 'hole', doomed: false, id: next++ };
    pairs.add(pair);
    const drop = (other: Socket) => () => {
      pairs.delete(pair);
      // A black-holed connection's peer hears nothing of its end either.
      if (!pair.holed) other.destroy();
    };
    inbound.on('close', drop(outbound));
    outbound.on('close', drop(inbound));
    inbound.on('data', (d: Buffer) => {
      if (pair.doomed) {
        pairs.delete(pair);
        rst(inbound);
        outbound.destroy();
        return;
      }
      if (!pair.holed) outbound.write(d);
    });
    outbound.on('data', (d: Buffer) => {
      if (pair.holed) return;
      const fired = traps.filter((t) => t.match(d, pair.id));
      if (!fired.some((t) => t.withhold)) inbound.write(d);
      if (fired.length === 0) return;
      traps = traps.filter((t) => !fired.includes(t));
      for (const t of fired) t.then();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    connections: () => pairs.size,
    reset(options = {}) {
      if (options.refuse) mode = 'refuse';
      for (const p of [...pairs]) {
        if (options.only !== undefined && p.id !== options.only) continue;
        p.holed = false;
        rst(p.inbound);
        p.outbound.destroy();
      }
    },
    down() {
      mode = 'refuse';
      for (const p of pairs) p.doomed = true;
    },
    doom() {
      for (const p of pairs) p.doomed = true;
    },
    blackHole(options = {}) {
      for (const p of pairs) if (options.only === undefined || p.id === options.only) p.holed = true;
      if (options.newToo) mode = 'hole';
    },
    heal() {
      mode = 'pass';
      for (const p of pairs) p.doomed = false;
    },
    trap(match, then, options = {}) {
      traps.push({ match, then, withhold: options.withhold === true });
    },
    async close() {
      for (const socket of [...sockets]) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
