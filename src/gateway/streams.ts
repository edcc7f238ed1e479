/**
 * Exchanges in flight (WebSocket connections, SSE and other streamed responses, and plain proxied
 * requests: a long upload, a long download with a Content-Length) watched for the end of their
 * caller's authority: "revoked" must mean revoked for an open connection too.
 *
 * On every revocation the open streams are checked against the revocation list (a few set lookups
 * each); once a second, streams whose token has expired are closed; on every configuration reload,
 * every stream is decided again under the new configuration (by the gateway's `recheck`); at an
 * interval, streams whose token a remote authority vouches for are asked about again (the
 * gateway's `revalidate`: introspection); and those no longer allowed are closed: a credential withdrawn (a static token rotated out, an issuer no
 * longer trusted), a rule, a route or a static token's scopes narrowed. Closing is the stream's own
 * business: a WebSocket gets a close frame (1008), an HTTP response stream ends.
 *
 * @module
 */
import type { Clock } from '../core/ports.ts';
import type { Principal } from '../core/verify/principal.ts';
import { type Revocation, type RevocationCheck, revocationAnswer } from '../core/verify/revocation.ts';

export type StreamCloseReason =
  | 'token_revoked'
  | 'revocation_unavailable'
  | 'revocation_state_stale'
  | 'token_expired'
  | 'token_inactive'
  | 'token_scope_narrowed'
  | 'token_identity_changed'
  | 'policy_condition_failed'
  | 'token_audience_invalid'
  | 'introspection_unavailable'
  | 'credential_withdrawn'
  | 'config_narrowed'
  | 'shutdown';

export interface TrackedStream {
  readonly kind: 'websocket' | 'http';
  /** Whose authority the stream runs on; none on a public route (closed only at shutdown, or by a
   * reload after which its route requires a token). */
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

/**
 * Why the configuration in force no longer allows `stream` (`credential_withdrawn`,
 * `config_narrowed`), or `undefined` when it does. Called for every stream on a reload, and for
 * each stream when it is added (the hot path: answer at once for one decided under the
 * configuration in force).
 */
export type StreamRecheck<S extends TrackedStream> = (stream: S) => StreamCloseReason | undefined;

/**
 * Why a stream whose token is vouched for by a remote authority (introspection) must now end, asked
 * of that authority again: a promise of the reason or `undefined` to keep it; `undefined` at once
 * for a stream it does not concern. Called for every stream at each interval, all in one pass, so
 * that calls about one token can be shared.
 */
export type StreamRevalidate<S extends TrackedStream> = (stream: S) => Promise<StreamCloseReason | undefined> | undefined;

/** `S`: the streams watched, with whatever the owner's {@link StreamRecheck} reads (what each was admitted for). */
export class StreamRegistry<S extends TrackedStream = TrackedStream> {
  readonly #streams = new Set<S>();
  readonly #clock: Clock;
  readonly #revocation: RevocationCheck | undefined;
  readonly #unsubscribe: (() => void) | undefined;
  readonly #timer: NodeJS.Timeout;
  readonly #acceptedUntil: (p: Principal) => number;
  #recheck: StreamRecheck<S> | undefined;
  #revalidate: StreamRevalidate<S> | undefined;
  #revalidateTimer: { readonly everyMs: number; readonly timer: NodeJS.Timeout } | undefined;
  /** A pass of {@link StreamRegistry.revalidate} is under way (an endpoint slower than the interval). */
  #revalidating = false;

  /**
   * `acceptedUntil`: the epoch second from which the verifier would refuse the principal's token
   * (its `exp` plus the issuer's clock skew), so an exchange is never cut while its token would
   * still be accepted; by default `expiresAt`. `recheck`: whether the configuration in force still
   * allows a stream (see {@link StreamRegistry.reconfigure}); by default every one.
   */
  constructor(options: {
    clock: Clock;
    revocation?: RevocationFeed | undefined;
    sweepIntervalMs?: number;
    acceptedUntil?: (p: Principal) => number;
    recheck?: StreamRecheck<S>;
  }) {
    this.#clock = options.clock;
    this.#acceptedUntil = options.acceptedUntil ?? ((p) => p.expiresAt);
    this.#recheck = options.recheck;
    this.#revocation = options.revocation;
    this.#unsubscribe = options.revocation?.subscribe(() => this.checkRevoked());
    this.#timer = setInterval(() => this.sweepExpired(), options.sweepIntervalMs ?? 1000);
    this.#timer.unref();
  }

  /** Watch a stream; the returned function stops watching (call it when the stream ends). */
  add(stream: S): () => void {
    this.#streams.add(stream);
    // A revocation announced between the decision and now (an upstream slow to start its stream or
    // accept the upgrade) found nothing to close: check once now, before any of the stream is
    // relayed (`close` may run before `add` returns). Likewise the token's end: the principal was
    // read when the request was authenticated, which may be long before (an MCP or A2A body read
    // after it, a credential exchanged for the upstream, an upstream slow to accept an upgrade),
    // and the sweep would notice only after the request had reached the upstream.
    const p = stream.principal;
    const revoked = this.#revoked(p);
    if (revoked !== undefined) this.#close(stream, revoked);
    else if (p !== undefined && this.#acceptedUntil(p) <= this.#clock() / 1000) this.#close(stream, 'token_expired');
    else {
      // Likewise a reload while the request was being decided under the configuration before it.
      const reason = this.#recheck?.(stream);
      if (reason !== undefined) this.#close(stream, reason);
    }
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

  #close(s: S, reason: StreamCloseReason): void {
    this.#streams.delete(s);
    try {
      s.close(reason);
    } catch {
      // a stream that fails to close is already gone
    }
  }

  /**
   * Why `p`'s stream must end by revocation: `token_revoked`, `revocation_state_stale` when the feed
   * cannot vouch for its token now (its source unread for too long), or `revocation_unavailable` when the
   * feed gives no answer (it throws, or answers anything but a boolean: an application's feed
   * passed to createGateway may), fail closed as the verifier refuses a request; `undefined` to
   * keep it. Never throws: `add` runs mid-request, and `checkRevoked` inside the feed's listener loop.
   */
  #revoked(p: Principal | undefined): 'token_revoked' | 'revocation_unavailable' | 'revocation_state_stale' | undefined {
    const r = this.#revocation;
    if (r === undefined || p === undefined || p.kind === 'static') return undefined;
    const answer = revocationAnswer(r, p);
    if (answer === 'stale') return 'revocation_state_stale';
    return answer === false ? undefined : answer === true ? 'token_revoked' : 'revocation_unavailable';
  }

  /**
   * A new configuration is in force: from now on `recheck` decides which streams go on. Close
   * those it refuses, now and when they are added.
   */
  reconfigure(recheck: StreamRecheck<S>): void {
    this.#recheck = recheck;
    for (const s of [...this.#streams]) {
      const reason = recheck(s);
      if (reason !== undefined) this.#close(s, reason);
    }
  }

  /**
   * Ask `check` about every stream each `everyMs` (a new configuration may change both; `undefined`
   * stops). A pass still waiting for its answers when the next is due is not doubled.
   */
  revalidateEvery(everyMs: number | undefined, check: StreamRevalidate<S> | undefined): void {
    this.#revalidate = check;
    if (everyMs !== undefined && check !== undefined && everyMs === this.#revalidateTimer?.everyMs) return;
    if (this.#revalidateTimer !== undefined) clearInterval(this.#revalidateTimer.timer);
    this.#revalidateTimer = undefined;
    if (everyMs === undefined || check === undefined) return;
    const timer = setInterval(() => void this.revalidate(), everyMs);
    timer.unref();
    this.#revalidateTimer = { everyMs, timer };
  }

  /** One pass of the revalidation: close the streams `check` says must end (those still open). */
  async revalidate(): Promise<void> {
    const check = this.#revalidate;
    if (check === undefined || this.#revalidating) return;
    this.#revalidating = true;
    try {
      const pending: Promise<void>[] = [];
      for (const s of [...this.#streams]) {
        const decided = check(s);
        if (decided === undefined) continue;
        pending.push(
          decided.then(
            (reason) => {
              if (reason !== undefined && this.#streams.has(s)) this.#close(s, reason);
            },
            () => undefined,
          ),
        );
      }
      await Promise.all(pending);
    } finally {
      this.#revalidating = false;
    }
  }

  /** Close streams whose token is now revoked (or whose revocation the feed cannot answer). */
  checkRevoked(): void {
    if (this.#revocation === undefined) return;
    for (const s of [...this.#streams]) {
      const revoked = this.#revoked(s.principal);
      if (revoked !== undefined) this.#close(s, revoked);
    }
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
    this.revalidateEvery(undefined, undefined);
    this.#unsubscribe?.();
  }
}
