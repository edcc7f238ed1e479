/**
 * Token-bucket rate limiting: each key (a subject, client or address on one route; an address registering clients) has a bucket of
 * `burst` tokens refilled at `rate` per second; a request takes one token or is refused with the
 * time until the next one.
 *
 * @module
 */
import type { Clock } from './ports.ts';
import { BoundedMap } from './verify/bounded-map.ts';

interface Bucket {
  tokens: number;
  /** Epoch ms of the last refill. */
  at: number;
}

export interface TokenBucketOptions {
  /** Tokens per second. */
  readonly rate: number;
  /** Bucket size. */
  readonly burst: number;
  /** Buckets kept; the oldest are evicted (an evicted key starts full again). */
  readonly maxKeys: number;
  readonly clock: Clock;
}

/**
 * @example
 * ```ts
 * const limiter = new TokenBucketLimiter({ rate: 10, burst: 20, maxKeys: 10_000, clock: Date.now });
 * const wait = limiter.take('route-a\nuser-1'); // 0: allowed; > 0: seconds until a token is available
 * ```
 */
export class TokenBucketLimiter {
  readonly #buckets: BoundedMap<string, Bucket>;
  readonly #rate: number;
  readonly #burst: number;
  readonly #clock: Clock;

  constructor(options: TokenBucketOptions) {
    this.#buckets = new BoundedMap(options.maxKeys);
    this.#rate = options.rate;
    this.#burst = options.burst;
    this.#clock = options.clock;
  }

  /** Take one token for `key`. Returns 0 when allowed, else the seconds to wait (≥ 1, rounded up). */
  take(key: string): number {
    const now = this.#clock();
    let b = this.#buckets.get(key);
    if (b === undefined) {
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(key, b);
    } else if (now > b.at) {
      b.tokens = Math.min(this.#burst, b.tokens + ((now - b.at) / 1000) * this.#rate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.#rate));
  }

  get size(): number {
    return this.#buckets.size;
  }
}
