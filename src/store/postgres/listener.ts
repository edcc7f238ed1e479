/**
 * PostgreSQL LISTEN on one dedicated connection (never a pool member: a pooled connection changes
 * hands, and a LISTEN lives and dies with its session), checked for life by a query whenever it has
 * been quiet a while, and reconnected with backoff for as long as the watch lasts.
 *
 * @module
 */
import pg from 'pg';

/** `application_name` of the listening connection, to find it in `pg_stat_activity`. */
export const LISTENER_APPLICATION_NAME = 'tessera-listen';

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5000;
/** Default {@link ListenerOptions.livenessIntervalMs}. */
export const LIVENESS_INTERVAL_MS = 15_000;
/** Default {@link ListenerOptions.livenessTimeoutMs}. */
export const LIVENESS_TIMEOUT_MS = 5000;

/** Why a connection is given up when the server does not answer in time (shown in the warning). */
const LIVENESS_TIMEOUT = 'LIVENESS_TIMEOUT';

export interface ListenerOptions {
  readonly connectionString: string;
  readonly channel: string;
  /** A notification on the channel, with its payload. */
  readonly onNotify: (payload: string) => void;
  /** The connection is back after a loss: notifications sent meanwhile were missed. */
  readonly onReconnect: () => void;
  readonly onWarning: (message: string) => void;
  /**
   * After this long with nothing heard on the connection, a query (`SELECT 1`) checks that the
   * server still answers (default {@link LIVENESS_INTERVAL_MS}).
   */
  readonly livenessIntervalMs?: number;
  /**
   * A liveness query, or the LISTEN itself, unanswered this long: the connection is taken for dead,
   * destroyed and reconnected (default {@link LIVENESS_TIMEOUT_MS}).
   */
  readonly livenessTimeoutMs?: number;
}

/**
 * One LISTEN connection. {@link Listener.start} resolves after the first attempt, whether it
 * connected or not; a failed or lost connection is retried every 100 ms doubling to 5 s (with
 * jitter, so instances do not reconnect in step after a failover) until {@link Listener.stop}.
 *
 * A LISTEN connection only receives, so a peer that silently stopped answering (a network
 * partition, a failover behind a stateful firewall: no RST, no FIN) would go unnoticed until TCP
 * keepalive gives up, minutes later, while every notification is lost. So after
 * {@link ListenerOptions.livenessIntervalMs} of silence it runs `SELECT 1`; unanswered within
 * {@link ListenerOptions.livenessTimeoutMs}, the socket is destroyed and the connection counts as
 * lost: one warning, a reconnect, and {@link ListenerOptions.onReconnect} once it LISTENs again.
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
  /** Fires after {@link ListenerOptions.livenessIntervalMs} of silence on the current connection. */
  #quiet: NodeJS.Timeout | undefined;
  readonly #interval: number;
  readonly #timeout: number;

  constructor(options: ListenerOptions) {
    this.#options = options;
    this.#interval = options.livenessIntervalMs ?? LIVENESS_INTERVAL_MS;
    this.#timeout = options.livenessTimeoutMs ?? LIVENESS_TIMEOUT_MS;
  }

  async start(): Promise<void> {
    await this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#quiet);
    const c = this.#client;
    this.#client = undefined;
    if (c === undefined) return;
    // end() waits for the server to close the connection, which a silently dead one never does.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      c.end().catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          c.connection.stream.destroy();
          resolve();
        }, this.#timeout);
      }),
    ]);
    clearTimeout(timer);
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
      if (c !== this.#client) return;
      this.#heard(c);
      if (m.channel !== channel) return;
      try {
        this.#options.onNotify(m.payload ?? '');
      } catch {
        // The watcher's problem, not the connection's.
      }
    });
    try {
      await c.connect();
      await this.#answered(c, `LISTEN "${channel}"`);
    } catch (e) {
      lose(e);
      return;
    }
    if (c !== this.#client) return;
    this.#heard(c);
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

  /** Something came from `c`: it is alive; check again after the next stretch of silence. */
  #heard(c: pg.Client): void {
    clearTimeout(this.#quiet);
    this.#quiet = setTimeout(() => void this.#check(c), this.#interval);
    this.#quiet.unref();
  }

  /** `c` has been quiet a while: does the server still answer on it? */
  async #check(c: pg.Client): Promise<void> {
    if (c !== this.#client) return;
    try {
      await this.#answered(c, 'SELECT 1');
    } catch (e) {
      this.#lose(c, e);
      return;
    }
    if (c === this.#client) this.#heard(c);
  }

  /**
   * Run `sql` on `c`. Unanswered for {@link ListenerOptions.livenessTimeoutMs}, `c` is lost (code
   * {@link LIVENESS_TIMEOUT} in the warning), its socket destroyed (`end()` would wait for a goodbye
   * that never comes), and this rejects.
   */
  async #answered(c: pg.Client, sql: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const e = Object.assign(new Error('no answer from PostgreSQL'), { code: LIVENESS_TIMEOUT });
        this.#lose(c, e);
        c.connection.stream.destroy();
        reject(e);
      }, this.#timeout);
    });
    try {
      await Promise.race([c.query(sql), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `c` failed or ended: drop it and schedule the next attempt (once per connection). */
  #lose(c: pg.Client, e?: unknown): void {
    if (c !== this.#client) return;
    this.#client = undefined;
    clearTimeout(this.#quiet);
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
