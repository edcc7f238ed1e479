/**
 * Token-bucket rate limiting: each key (a subject, client or address on one route; an address registering clients) has a bucket of
 * `burst` tokens refilled at `rate` per second; a request takes one token or is refused with the
 * time until the next one.
 *
 * @module
 */
import { hash } from 'node:crypto';
import { isIP } from 'node:net';
import type { Clock } from './ports.ts';
import { BoundedMap } from './verify/bounded-map.ts';

/**
 * The longest wait a refusal names, seconds (a day): the slowest `rate` the configuration allows
 * (0.0000116) waits a little less, and no rate makes `Retry-After` longer, or a number that is no string of digits
 * (`1e+21`, `Infinity`, `NaN` are no RFC 9110 delay-seconds).
 */
export const MAX_RETRY_AFTER = 86_400;

/**
 * Keys longer than this are kept as their SHA-256 digest. A subject, client id or `jti` is as long
 * as a token may be (a header of up to `limits.max_header_size`), and `maxKeys` buckets of such
 * keys would hold gigabytes: the bound is on memory, not only on the count. The digest starts with
 * a line feed, which no short key holds first (a subject's key starts `s:`, an address has none).
 */
const MAX_KEY_LENGTH = 128;

/** `key`, or its digest when it is longer than {@link MAX_KEY_LENGTH}. */
function bucketKey(key: string): string {
  return key.length <= MAX_KEY_LENGTH ? key : `\n${hash('sha256', key, 'base64url')}`;
}

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
  /**
   * The limiter this one replaces (a reload that changed the limit): its buckets are carried over
   * as they stand now, at most `burst` each, so a changed limit is no fresh burst for everyone.
   */
  readonly from?: TokenBucketLimiter | undefined;
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
    const from = options.from;
    if (from !== undefined) {
      const now = this.#clock();
      for (const [key, b] of from.#buckets.entries()) {
        const tokens = now > b.at ? Math.min(from.#burst, b.tokens + ((now - b.at) / 1000) * from.#rate) : b.tokens;
        this.#buckets.set(key, { tokens: Math.min(this.#burst, tokens), at: Math.max(now, b.at) });
      }
    }
  }

  /**
   * Take one token for `key`. Returns 0 when allowed, else the seconds to wait: an integer, rounded
   * up, from 1 to {@link MAX_RETRY_AFTER}.
   */
  take(key: string): number {
    const now = this.#clock();
    const k = bucketKey(key);
    let b = this.#buckets.get(k);
    if (b === undefined) {
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(k, b);
    } else if (now > b.at) {
      b.tokens = Math.min(this.#burst, b.tokens + ((now - b.at) / 1000) * this.#rate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    const wait = Math.ceil((1 - b.tokens) / this.#rate);
    return Number.isNaN(wait) ? MAX_RETRY_AFTER : Math.min(MAX_RETRY_AFTER, Math.max(1, wait));
  }

  /**
   * Whether `key` has a bucket: a key without one (never taken from, evicted, or given back to
   * full) would be allowed. One map lookup, for a caller that only spends on some outcomes.
   */
  has(key: string): boolean {
    return this.#buckets.get(bucketKey(key)) !== undefined;
  }

  /**
   * Give back one token taken for `key` (the outcome it was taken for did not spend it). A bucket
   * full again is dropped, as it holds what a new one would: only keys still short of tokens are
   * kept.
   */
  refund(key: string): void {
    const now = this.#clock();
    const k = bucketKey(key);
    const b = this.#buckets.get(k);
    if (b === undefined) return;
    const tokens = (now > b.at ? b.tokens + ((now - b.at) / 1000) * this.#rate : b.tokens) + 1;
    if (tokens >= this.#burst) {
      this.#buckets.delete(k);
      return;
    }
    b.tokens = tokens;
    b.at = Math.max(now, b.at);
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/**
 * Which refusals of a limiter to audit: the first of each throttled window of a key, the window
 * lasting the wait that refusal was told (its `Retry-After`). A caller that keeps sending while
 * refused writes one event per window instead of one per request; the next event audited for the
 * key tells how many refusals in between were not.
 *
 * @example
 * ```ts
 * const windows = new ThrottleWindows({ maxKeys: 10_000, clock: Date.now });
 * const skipped = windows.refused('client-1', wait); // undefined: within the window, not audited
 * ```
 */
export class ThrottleWindows {
  readonly #windows: BoundedMap<string, { until: number; unaudited: number }>;
  readonly #clock: Clock;

  constructor(options: { readonly maxKeys: number; readonly clock: Clock }) {
    this.#windows = new BoundedMap(options.maxKeys);
    this.#clock = options.clock;
  }

  /**
   * A refusal of `key` told to wait `wait` seconds. Returns `undefined` when it falls within the
   * key's current window (counted, not to be audited); else it opens a window and returns the
   * refusals of the key not audited since the last one that was (0 for the first). An evicted key
   * starts again: its next refusal is audited.
   */
  refused(key: string, wait: number): number | undefined {
    const now = this.#clock();
    const k = bucketKey(key);
    const w = this.#windows.get(k);
    if (w !== undefined && now < w.until) {
      w.unaudited += 1;
      return undefined;
    }
    this.#windows.set(k, { until: now + wait * 1000, unaudited: 0 });
    return w?.unaudited ?? 0;
  }

  get size(): number {
    return this.#windows.size;
  }
}

/**
 * Whose requests share a bucket when they are limited by address: an IPv4 address (also as a
 * dual-stack listener reports it, `::ffff:192.0.2.7`), or the /64 of an IPv6 address. A host with
 * IPv6 routinely holds a whole /64 (RFC 4291 §2.5.4 interface identifiers, SLAAC privacy
 * addresses) and can send each request from another address of it: counted by address, it would
 * get a full bucket per request, and push every other caller's bucket out.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined) return '';
  // IPv4 (the usual case) as it is.
  if (address.indexOf(':') < 0) return address;
  const mapped = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : undefined;
  if (mapped !== undefined && isIP(mapped) === 4) return mapped;
  const bare = address.split('%')[0] as string;
  if (isIP(bare) !== 6) return address;
  const [head = '', tail] = bare.split('::');
  const first = head === '' ? [] : head.split(':');
  let groups = first;
  if (tail !== undefined) {
    const last = tail === '' ? [] : tail.split(':');
    // A trailing dotted IPv4 address stands for two groups.
    const width = last.length + (last.at(-1)?.includes('.') ? 1 : 0);
    groups = [...first, ...Array<string>(8 - first.length - width).fill('0'), ...last];
  }
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
