/**
 * Exchanges in flight (WebSocket connections, SSE and other streamed responses, and plain proxied
 * requests: a long upload, a long download with a Content-Length) watched for the end of their
 * caller's authority: "revoked" must mean revoked for an open connection too.
 *
 * On every revocation the open streams are checked against the revocation list (a few set lookups
 * each); once a second, streams whose token has expired are closed; on every configuration reload,
 * streams whose credential the new configuration no longer accepts (a static token rotated out, an
 * issuer no longer trusted) are closed. Closing is the stream's own business: a WebSocket gets a
 * close frame (1008), an HTTP response stream ends.
 *
 * @module
 */
import type { Clock } from '../core/ports.ts';
import type { Principal } from '../core/verify/principal.ts';
import { principalRevoked, type Revocation, type RevocationCheck } from '../core/verify/revocation.ts';

export type StreamCloseReason = 'token_revoked' | 'token_expired' | 'credential_withdrawn' | 'shutdown';

export interface TrackedStream {
  readonly kind: 'websocket' | 'http';
  /** Whose authority the stream runs on; none on a public route (closed only at shutdown). */
  readonly principal: Principal | undefined;
  /** For `http`: the response is a stream (no Content-Length), not a plain request in flight. May change while watched. */
  streaming?: boolean;
  /** Close the stream; called at most once. */
  close(reason: StreamCloseReason): void;
}

/** A revocation source that announces changes (`RevocationList`). */
export interface RevocationFeed extends RevocationCheck {
  subscribe(listener: (r: Revocation) => void): () => void;
}

export class StreamRegistry {
  readonly #streams = new Set<TrackedStream>();
  readonly #clock: Clock;
  readonly #revocation: RevocationCheck | undefined;
  readonly #unsubscribe: (() => void) | undefined;
  readonly #timer: NodeJS.Timeout;
  readonly #acceptedUntil: (p: Principal) => number;
  #accepts: ((p: Principal) => boolean) | undefined;

  /**
   * `acceptedUntil`: the epoch second from which the verifier would refuse the principal's token
   * (its `exp` plus the issuer's clock skew), so an exchange is never cut while its token would
   * still be accepted; by default `expiresAt`. `accepts`: whether the configured credentials still
   * accept the principal's token (see {@link StreamRegistry.acceptOnly}); by default every one.
   */
  constructor(options: {
    clock: Clock;
    revocation?: RevocationFeed | undefined;
    sweepIntervalMs?: number;
    acceptedUntil?: (p: Principal) => number;
    accepts?: (p: Principal) => boolean;
  }) {
    this.#clock = options.clock;
    this.#acceptedUntil = options.acceptedUntil ?? ((p) => p.expiresAt);
    this.#accepts = options.accepts;
    this.#revocation = options.revocation;
    this.#unsubscribe = options.revocation?.subscribe(() => this.checkRevoked());
    this.#timer = setInterval(() => this.sweepExpired(), options.sweepIntervalMs ?? 1000);
    this.#timer.unref();
  }

  /** Watch a stream; the returned function stops watching (call it when the stream ends). */
  add(stream: TrackedStream): () => void {
    this.#streams.add(stream);
    // A revocation announced between the decision and now (an upstream slow to start its stream or
    // accept the upgrade) found nothing to close: check once now, before any of the stream is
    // relayed (`close` may run before `add` returns).
    if (this.#revoked(stream.principal)) this.#close(stream, 'token_revoked');
    // Likewise a reload that withdrew the credential while the request was being decided under the
    // configuration before it.
    else if (this.#withdrawn(stream.principal)) this.#close(stream, 'credential_withdrawn');
    return () => {
      this.#streams.delete(stream);
    };
  }

  /** Open long-lived exchanges: WebSockets and streamed responses (plain requests in flight are not counted). */
  get counts(): { websocket: number; http: number } {
    const counts = { websocket: 0, http: 0 };
    for (const s of this.#streams) {
      if (s.kind === 'websocket') counts.websocket++;
      else if (s.streaming) counts.http++;
    }
    return counts;
  }

  #close(s: TrackedStream, reason: StreamCloseReason): void {
    this.#streams.delete(s);
    try {
      s.close(reason);
    } catch {
      // a stream that fails to close is already gone
    }
  }

  #revoked(p: Principal | undefined): boolean {
    const r = this.#revocation;
    return r !== undefined && p !== undefined && p.kind !== 'static' && principalRevoked(r, p);
  }

  #withdrawn(p: Principal | undefined): boolean {
    return p !== undefined && this.#accepts !== undefined && !this.#accepts(p);
  }

  /**
   * A new configuration is in force: from now on only principals `accepts` admits keep their
   * streams. Close those it refuses (their credential was withdrawn), now and when they are added.
   */
  acceptOnly(accepts: (p: Principal) => boolean): void {
    this.#accepts = accepts;
    for (const s of [...this.#streams]) if (this.#withdrawn(s.principal)) this.#close(s, 'credential_withdrawn');
  }

  /** Close streams whose token is now revoked. */
  checkRevoked(): void {
    if (this.#revocation === undefined) return;
    for (const s of [...this.#streams]) if (this.#revoked(s.principal)) this.#close(s, 'token_revoked');
  }

  /** Close streams whose token has expired. */
  sweepExpired(): void {
    const now = this.#clock() / 1000;
    for (const s of [...this.#streams]) {
      const p = s.principal;
      if (p !== undefined && this.#acceptedUntil(p) <= now) this.#close(s, 'token_expired');
    }
  }

  /**
   * Close every stream (shutdown). With `longLivedOnly`, plain HTTP requests in flight are left to
   * finish; WebSockets and streamed responses are closed.
   */
  closeAll(reason: StreamCloseReason = 'shutdown', longLivedOnly = false): void {
    for (const s of [...this.#streams]) {
      if (longLivedOnly && s.kind === 'http' && !s.streaming) continue;
      this.#close(s, reason);
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#unsubscribe?.();
  }
}
