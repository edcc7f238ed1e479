/**
 * PostgreSQL LISTEN on one dedicated connection (never a pool member: a pooled connection changes
 * hands, and a LISTEN lives and dies with its session), reconnected with backoff for as long as
 * the watch lasts.
 *
 * @module
 */
import pg from 'pg';

/** `application_name` of the listening connection, to find it in `pg_stat_activity`. */
export const LISTENER_APPLICATION_NAME = 'tessera-listen';

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5000;

export interface ListenerOptions {
  readonly connectionString: string;
  readonly channel: string;
  /** A notification on the channel, with its payload. */
  readonly onNotify: (payload: string) => void;
  /** The connection is back after a loss: notifications sent meanwhile were missed. */
  readonly onReconnect: () => void;
  readonly onWarning: (message: string) => void;
}

/**
 * One LISTEN connection. {@link Listener.start} resolves after the first attempt, whether it
 * connected or not; a failed or lost connection is retried every 100 ms doubling to 5 s (with
 * jitter, so instances do not reconnect in step after a failover) until {@link Listener.stop}.
 * Nothing it does throws or emits an unhandled error.
 */
export class Listener {
  readonly #options: ListenerOptions;
  #client: pg.Client | undefined;
  #retry: NodeJS.Timeout | undefined;
  #delay = FIRST_RETRY_MS;
  #stopped = false;
  /** A connection was lost (or never made) since the last successful LISTEN. */
  #lost = false;

  constructor(options: ListenerOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    await this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    const c = this.#client;
    this.#client = undefined;
    await c?.end().catch(() => {});
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    const { connectionString, channel } = this.#options;
    const c = new pg.Client({
      connectionString,
      application_name: LISTENER_APPLICATION_NAME,
      connectionTimeoutMillis: 10_000,
      // An idle LISTEN connection sends nothing: keepalives are what notice a peer that vanished.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    this.#client = c;
    const lose = (e?: unknown) => this.#lose(c, e);
    c.on('error', lose);
    c.on('end', lose);
    c.on('notification', (m) => {
      if (m.channel !== channel || c !== this.#client) return;
      try {
        this.#options.onNotify(m.payload ?? '');
      } catch {
        // The watcher's problem, not the connection's.
      }
    });
    try {
      await c.connect();
      await c.query(`LISTEN "${channel}"`);
    } catch (e) {
      lose(e);
      return;
    }
    if (c !== this.#client) return;
    this.#delay = FIRST_RETRY_MS;
    if (this.#lost) {
      this.#lost = false;
      try {
        this.#options.onReconnect();
      } catch {
        // As above.
      }
    }
  }

  /** `c` failed or ended: drop it and schedule the next attempt (once per connection). */
  #lose(c: pg.Client, e?: unknown): void {
    if (c !== this.#client) return;
    this.#client = undefined;
    c.removeAllListeners('notification');
    // Late 'error' events of a client being torn down must still have a listener.
    c.on('error', () => {});
    c.end().catch(() => {});
    if (this.#stopped) return;
    if (!this.#lost) {
      this.#lost = true;
      const code = (e as { code?: unknown } | undefined)?.code;
      const why = typeof code === 'string' && /^[A-Z0-9_]{1,32}$/.test(code) ? ` (${code})` : '';
      this.#options.onWarning(`PostgreSQL revocation notifications interrupted${why}; reconnecting`);
    }
    const wait = this.#delay * (0.5 + Math.random() / 2);
    this.#delay = Math.min(this.#delay * 2, MAX_RETRY_MS);
    this.#retry = setTimeout(() => void this.#connect(), wait);
    // A retry alone does not keep the process alive; whoever watches has its own reasons to run.
    this.#retry.unref();
  }
}
