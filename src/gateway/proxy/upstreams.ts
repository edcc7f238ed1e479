/**
 * Keep-alive connection pools, one per upstream origin and pool shape, shared across config
 * reloads: a reload that keeps an upstream keeps its warm connections; a pool no route uses any
 * more is closed gracefully (in-flight requests finish first).
 *
 * @module
 */
import { Pool } from 'undici';

export interface PoolShape {
  /** `http://host:port` */
  readonly origin: string;
  readonly connections: number;
  /** Seconds. */
  readonly connectTimeout: number;
}

export class UpstreamPools {
  readonly #pools = new Map<string, Pool>();

  static key(shape: PoolShape): string {
    return `${shape.origin}|${shape.connections}|${shape.connectTimeout}`;
  }

  get(shape: PoolShape): Pool {
    const key = UpstreamPools.key(shape);
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      pool = new Pool(shape.origin, {
        connections: shape.connections,
        pipelining: 1,
        connect: { timeout: Math.max(1, Math.round(shape.connectTimeout * 1000)) },
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 600_000,
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  /** Close every pool whose key is not in `keep` (after its in-flight requests). */
  retain(keep: ReadonlySet<string>): void {
    for (const [key, pool] of this.#pools) {
      if (keep.has(key)) continue;
      this.#pools.delete(key);
      void pool.close().catch(() => undefined);
    }
  }

  /** Close all pools; `force` aborts in-flight requests. */
  async close(force = false): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => (force ? p.destroy() : p.close()).catch(() => undefined)));
  }
}
