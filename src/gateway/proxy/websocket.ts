/**
 * WebSocket forwarding. The upgrade request is authenticated by the pipeline before anything is
 * sent upstream; then the upgrade goes upstream with the injected credential, the upstream's 101
 * is relayed, and the two sockets are joined byte for byte (subprotocols and extensions are the
 * endpoints' business).
 *
 * The relay follows frame boundaries in both directions (`FrameBoundaries`), so when the caller's
 * token is revoked or expires it can finish the frame in flight and then send a close frame
 * (1008 policy violation) to the caller and one to the upstream.
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, STATUS_CODES } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Duplex } from 'node:stream';
import { callerResponseHeaders } from '../http/headers.ts';
import { UpstreamCredentialRejected, UpstreamStatusInvalid, validStatus } from './forward.ts';
import { closeFrame, FrameBoundaries } from './frames.ts';

export interface UpgradeTarget {
  readonly url: URL;
  /** Path and query for the upstream. */
  readonly path: string;
  /** Headers for the upstream (cleaned, credential added); `connection`/`upgrade` are added here. */
  readonly headers: Record<string, string | string[]>;
  /** ms */
  readonly connectTimeout: number;
  /** ms */
  readonly headersTimeout: number;
  /** ms: the longest silence in the body of a refusal the upstream sends (`timeouts.idle`). */
  readonly bodyTimeout: number;
  /** Extra response headers for the caller (flat `[name, value…]`). */
  readonly responseHeaders: readonly string[];
  /** The caller's `Sec-WebSocket-Key`: the 101 it gets accepts this one (RFC 6455 §4.2.2). */
  readonly callerKey: string;
  /**
   * The gateway injected the upstream's credential: a 401 refusal is a failure
   * ({@link UpstreamCredentialRejected}), never relayed, and other answers (refusals and the 101)
   * lose `WWW-Authenticate`.
   */
  readonly ownCredential?: boolean;
}

export interface UpgradeCallbacks {
  /** The upstream accepted; the relay is running. */
  onUpgraded(relay: WebSocketRelay): void;
  /**
   * The upstream answered without upgrading; its answer is being relayed, then the socket is
   * closed. Its body may not end by itself (an event stream answered to an upgrade).
   */
  onRefused(status: number, relay: RefusalRelay): void;
  /**
   * No answer from the upstream (connect error, timeout), a 401 to the gateway's own credential, or
   * a status outside 100–599; the caller has not been answered.
   */
  onFailure(error: unknown): void;
  /** The caller closed or reset its connection before the upstream answered; the upstream request was aborted. */
  onCallerGone(): void;
}

/** The upstream's answer to an upgrade it refused, relayed to the caller. */
export interface RefusalRelay {
  /** Without Content-Length: a body that may never end by itself. */
  readonly streaming: boolean;
  /** Stop relaying and close both connections (the caller's once what was relayed is written). */
  close(): void;
  /** Called once when the upstream's answer is over (relayed whole, cut, or its caller gone). */
  onEnd(listener: () => void): void;
}

/**
 * The upstream's 101 accepts no key the gateway sent: no `Upgrade: websocket`, or not exactly one
 * `Sec-WebSocket-Accept` of the gateway's own key (RFC 6455 §4.2.2, §4.1 point 5).
 */
export class UpgradeInvalid extends Error {
  override readonly name = 'UpgradeInvalid';
  readonly code = 'upstream_upgrade_invalid';
  constructor() {
    super('the upstream answered the upgrade with an invalid handshake');
  }
}

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2, point 5.4). */
export function acceptOf(key: string): string {
  return createHash('sha1')
    .update(key + WEBSOCKET_GUID)
    .digest('base64');
}

/** A well-formed `Sec-WebSocket-Key`: 16 bytes, base64 (RFC 6455 §4.1, point 7). */
export const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{22}==$/;

/**
 * True when the upstream's 101 switched to WebSocket for the request that carried `key`: one
 * `Upgrade: websocket` and one `Sec-WebSocket-Accept`, the one of `key`.
 */
function accepts(raw: readonly string[], key: string): boolean {
  let upgrade = 0;
  let accept = 0;
  const expected = acceptOf(key);
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = (raw[i + 1] as string).trim();
    if (name === 'upgrade') {
      if (++upgrade > 1 || value.toLowerCase() !== 'websocket') return false;
    } else if (name === 'sec-websocket-accept') {
      if (++accept > 1 || value !== expected) return false;
    }
  }
  return upgrade === 1 && accept === 1;
}

class UpgradeTimeout extends Error {
  readonly code: string;
  constructor(code: string) {
    super(code);
    this.code = code;
  }
}

/**
 * Bytes a caller may send while the upstream has not answered the upgrade (RFC 6455 §4.1 has it
 * wait for the answer), kept to be relayed after the 101. Past them its socket is no longer read
 * until the answer, so its leaving is not seen before then either.
 */
const EARLY_LIMIT = 65_536;

/** Node's reason phrase, never the upstream's (which may name internal hosts). */
function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
}

/**
 * The upstream's response headers as the caller gets them, as on the HTTP path: hop-by-hop and
 * `Connection`-named ones dropped, `WWW-Authenticate` too when the gateway injected the
 * credential, the gateway's own appended; without `Content-Length` when `length` is false.
 */
function headerLines(raw: readonly string[], target: UpgradeTarget, length: boolean): string {
  const headers = callerResponseHeaders(raw, target.responseHeaders, target.ownCredential);
  let text = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    // The upstream's accept answers the gateway's key; the caller's is added by the 101 itself.
    if ((length || name !== 'content-length') && name !== 'sec-websocket-accept') text += `${name}: ${headers[i + 1]}\r\n`;
  }
  return text;
}

/**
 * Send the upgrade upstream. The caller's socket is answered only through the callbacks' paths:
 * the 101 and relay, the upstream's refusal, or nothing (on failure the gateway answers).
 */
export function forwardUpgrade(client: Duplex, head: Buffer, target: UpgradeTarget, callbacks: UpgradeCallbacks): () => void {
  const secure = target.url.protocol === 'https:';
  const request = secure ? httpsRequest : httpRequest;
  // The upstream is asked with a key of the gateway's own, never the caller's: a 101 carrying the
  // accept of a key the caller chose could come from anything the caller can make the upstream
  // answer (a relayed status, a reflected header), and would open a raw line to an upstream still
  // reading HTTP on it (WebSocket smuggling). Only a real WebSocket server answers this one.
  const key = randomBytes(16).toString('base64');
  let settled = false;
  // The caller's socket is not read during the upgrade (Node leaves it so), and a socket not read
  // reports neither a close nor a reset: a caller gone would leave the upstream request open until
  // the header timeout. It is read meanwhile, what it sends kept (bounded) for the relay.
  const early: Buffer[] = head.length > 0 ? [head] : [];
  let earlyBytes = 0;
  const onEarly = (chunk: Buffer) => {
    early.push(chunk);
    earlyBytes += chunk.length;
    if (earlyBytes >= EARLY_LIMIT) client.pause();
  };
  const onGone = () => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    stopWatching();
    up.destroy();
    callbacks.onCallerGone();
  };
  const stopWatching = () => {
    client.off('data', onEarly);
    client.off('end', onGone);
    client.off('close', onGone);
  };
  const up = request({
    host: target.url.hostname.replace(/^\[|\]$/g, ''),
    port: target.url.port || (secure ? 443 : 80),
    method: 'GET',
    path: target.path,
    headers: { ...target.headers, 'sec-websocket-key': key, connection: 'Upgrade', upgrade: 'websocket' },
    agent: false,
  });
  const fail = (error: unknown) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    stopWatching();
    up.destroy();
    callbacks.onFailure(error);
  };
  let timer = setTimeout(() => fail(new UpgradeTimeout('UND_ERR_CONNECT_TIMEOUT')), target.connectTimeout);
  up.on('socket', (s) => {
    s.once('connect', () => {
      clearTimeout(timer);
      timer = setTimeout(() => fail(new UpgradeTimeout('UND_ERR_HEADERS_TIMEOUT')), target.headersTimeout);
    });
  });
  up.on('error', fail);
  up.on('upgrade', (res: IncomingMessage, upstream: Duplex, upstreamHead: Buffer) => {
    if (settled) {
      upstream.destroy();
      return;
    }
    if (!accepts(res.rawHeaders, key)) {
      upstream.destroy();
      fail(new UpgradeInvalid());
      return;
    }
    settled = true;
    clearTimeout(timer);
    stopWatching();
    // Flowing again from the next tick, by when the relay reads it (and may pause it for backpressure).
    client.resume();
    client.write(
      `${statusLine(101)}${headerLines(res.rawHeaders, target, true)}Sec-WebSocket-Accept: ${acceptOf(target.callerKey)}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    );
    const relay = new WebSocketRelay(client, upstream);
    callbacks.onUpgraded(relay);
    if (upstreamHead.length > 0) relay.fromUpstream(upstreamHead);
    if (early.length > 0) relay.fromClient(early.length === 1 ? (early[0] as Buffer) : Buffer.concat(early));
    relay.start();
  });
  up.on('response', (res: IncomingMessage) => {
    if (settled) {
      res.destroy();
      return;
    }
    // Node's parser takes any three digits (099, 700): no status to relay as a refusal. Its 1xx
    // other than 101 are informational and never reach here.
    const status = res.statusCode ?? 0;
    if (!validStatus(status)) {
      res.destroy();
      fail(new UpstreamStatusInvalid(status));
      return;
    }
    if (status === 401 && target.ownCredential) {
      res.destroy();
      fail(new UpstreamCredentialRejected());
      return;
    }
    // A 101 without `Upgrade` (Node reads it as a response): switched to nothing the caller asked
    // for, and no status to relay as a refusal.
    if (status === 101) {
      res.destroy();
      fail(new UpgradeInvalid());
      return;
    }
    settled = true;
    clearTimeout(timer);
    stopWatching();
    // The upstream refused the upgrade: relay its status and body, then close.
    client.write(`${statusLine(status)}${headerLines(res.rawHeaders, target, false)}Connection: close\r\n\r\n`);
    res.pipe(client);
    res.on('error', () => client.destroy());
    // Neither side is an HTTP exchange any more (Node's server timeouts no longer watch the caller's
    // socket): a body that stalls is cut after the idle timeout, as on the HTTP path, and a caller
    // that leaves takes the upstream connection with it, or both would stay open.
    res.socket.setTimeout(target.bodyTimeout, () => {
      res.destroy();
      client.destroy();
    });
    client.once('close', () => res.destroy());
    // Over once the upstream's answer is: nothing more is relayed (the caller's socket is ended
    // with it, or was gone first).
    let ended: (() => void) | undefined;
    res.once('close', () => ended?.());
    callbacks.onRefused(status, {
      streaming: res.headers['content-length'] === undefined,
      close() {
        res.unpipe(client);
        res.destroy();
        if (!client.destroyed) {
          client.end(() => client.destroy());
          // A caller that stops reading never lets the end flush; no server timeout watches it now.
          setTimeout(() => client.destroy(), 2000).unref();
        }
      },
      onEnd(listener) {
        ended = listener;
      },
    });
  });
  up.end();
  client.on('data', onEarly);
  client.once('end', onGone);
  client.once('close', onGone);
  if (client.destroyed || client.readableEnded) onGone();
  return () => fail(new UpgradeTimeout('aborted'));
}

/** A joined client ↔ upstream WebSocket byte stream that can be closed between frames. */
export class WebSocketRelay {
  readonly #client: Duplex;
  readonly #upstream: Duplex;
  readonly #toClient = new FrameBoundaries();
  readonly #toUpstream = new FrameBoundaries();
  #closing: { code: number; reason: string } | undefined;
  #clientCloseSent = false;
  #upstreamCloseSent = false;
  #ended = false;
  #onEnd: ((bytesIn: number, bytesOut: number) => void) | undefined;
  #bytesIn = 0;
  #bytesOut = 0;
  #killTimer: NodeJS.Timeout | undefined;

  constructor(client: Duplex, upstream: Duplex) {
    this.#client = client;
    this.#upstream = upstream;
  }

  /** Called once when both sides are closed, with the bytes relayed each way. */
  onEnd(listener: (bytesIn: number, bytesOut: number) => void): void {
    this.#onEnd = listener;
  }

  start(): void {
    const client = this.#client;
    const upstream = this.#upstream;
    (client as { setTimeout?: (ms: number) => void }).setTimeout?.(0);
    upstream.on('data', (c: Buffer) => this.fromUpstream(c));
    client.on('data', (c: Buffer) => this.fromClient(c));
    // When one side closes, end the other gracefully (its pending writes flush), destroy it if it
    // lingers; the relay is over when both are closed.
    let closed = 0;
    const onClose = (other: Duplex) => {
      if (!other.destroyed) {
        other.end();
        setTimeout(() => other.destroy(), 2000).unref();
      }
      if (++closed === 2) this.#end();
    };
    let clientClosed = false;
    let upstreamClosed = false;
    const clientGone = () => {
      if (clientClosed) return;
      clientClosed = true;
      onClose(upstream);
    };
    const upstreamGone = () => {
      if (upstreamClosed) return;
      upstreamClosed = true;
      onClose(client);
    };
    client.on('close', clientGone);
    upstream.on('close', upstreamGone);
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    // A side that ended or closed before the relay started (the caller left while the upstream was
    // accepting) has emitted its 'end' or 'close' already: pass it on now, or the other side would
    // stay open.
    if (client.destroyed) clientGone();
    else if (client.readableEnded) upstream.end();
    if (upstream.destroyed) upstreamGone();
    else if (upstream.readableEnded) client.end();
    client.on('error', () => client.destroy());
    upstream.on('error', () => upstream.destroy());
  }

  fromUpstream(chunk: Buffer): void {
    if (this.#clientCloseSent) return;
    let data = chunk;
    if (this.#closing) {
      const at = this.#toClient.consume(chunk, 0, true);
      if (at < 0) {
        this.#send(this.#client, chunk, this.#upstream);
        return;
      }
      data = chunk.subarray(0, at);
      if (data.length > 0) this.#send(this.#client, data, this.#upstream);
      this.#closeClient();
      return;
    }
    this.#toClient.consume(chunk);
    this.#bytesOut += data.length;
    this.#send(this.#client, data, this.#upstream);
  }

  fromClient(chunk: Buffer): void {
    if (this.#upstreamCloseSent) return;
    if (this.#closing) {
      const at = this.#toUpstream.consume(chunk, 0, true);
      if (at < 0) {
        this.#send(this.#upstream, chunk, this.#client);
        return;
      }
      if (at > 0) this.#send(this.#upstream, chunk.subarray(0, at), this.#client);
      this.#closeUpstream();
      return;
    }
    this.#toUpstream.consume(chunk);
    this.#bytesIn += chunk.length;
    this.#send(this.#upstream, chunk, this.#client);
  }

  #send(to: Duplex, data: Buffer, from: Duplex): void {
    if (to.destroyed || to.writableEnded) return;
    if (!to.write(data)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  }

  /**
   * Close both sides with `code` between frames: the frame in flight in each direction is
   * completed first. Sockets still open after `graceMs` are destroyed.
   */
  close(code: number, reason: string, graceMs = 2000): void {
    if (this.#closing || this.#ended) return;
    this.#closing = { code, reason };
    if (this.#toClient.atBoundary) this.#closeClient();
    if (this.#toUpstream.atBoundary) this.#closeUpstream();
    this.#killTimer = setTimeout(() => {
      this.#client.destroy();
      this.#upstream.destroy();
    }, graceMs);
    this.#killTimer.unref();
  }

  #closeClient(): void {
    if (this.#clientCloseSent || !this.#closing) return;
    this.#clientCloseSent = true;
    const c = this.#client;
    if (!c.destroyed && !c.writableEnded) {
      c.write(closeFrame(this.#closing.code, this.#closing.reason, false));
      c.end();
    }
  }

  #closeUpstream(): void {
    if (this.#upstreamCloseSent || !this.#closing) return;
    this.#upstreamCloseSent = true;
    const u = this.#upstream;
    if (!u.destroyed && !u.writableEnded) {
      u.write(closeFrame(this.#closing.code, this.#closing.reason, true));
      u.end();
    }
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#killTimer) clearTimeout(this.#killTimer);
    this.#onEnd?.(this.#bytesIn, this.#bytesOut);
  }
}
