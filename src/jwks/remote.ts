/**
 * A remote JWKS (`jwks_uri`) as a key source.
 *
 * - The key set is cached for the response's `Cache-Control` max-age, clamped to [min_ttl,
 *   max_ttl]; a stale set keeps being used while a background refresh runs.
 * - An unknown `kid` triggers at most one fetch per `miss_cooldown`; concurrent misses share it,
 *   so a flood of random `kid`s costs the issuer one request per cooldown. Whatever the
 *   configuration and Cache-Control, the set is fetched at most once a second.
 * - A failed fetch keeps the last good key set, for at most `max_stale` past its expiry: then the
 *   set is dropped (its keys may have been withdrawn at an issuer we cannot reach) and lookups
 *   answer `stale` until a fetch succeeds. A set that expired more than `max_stale` ago unused is
 *   not used again before a fetch either: the lookup waits for one.
 *
 * @module
 */
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';
import { STRICT_JSON_REFUSALS, strictJsonFault } from '../core/jose/json.ts';
import type { VerificationKey } from '../core/jose/jwk.ts';
import { KeySet, parseJwks } from '../core/jose/keyset.ts';
import type { Clock, KeyMiss, KeySource } from '../core/ports.ts';
import { printable } from '../core/printable.ts';

export interface RemoteJwksOptions {
  readonly url: string;
  readonly algorithms: readonly JwsAlgorithm[];
  /** Seconds. */
  readonly minTtl: number;
  readonly maxTtl: number;
  readonly defaultTtl: number;
  readonly missCooldown: number;
  /**
   * Seconds past its expiry the last good set is still used while it cannot be refreshed; then it
   * is dropped. Default 86400 (24 h), as `jwks_cache.max_stale`.
   */
  readonly maxStale?: number;
  readonly timeout: number;
  readonly clock?: Clock;
  readonly fetch?: typeof fetch;
  /** Largest accepted response, bytes. */
  readonly maxBytes?: number;
  /** Told about fetch failures and skipped keys (no key material in the message). */
  readonly onWarning?: (message: string) => void;
}

/** Status for readiness probes and metrics. */
export interface RemoteJwksStatus {
  /** The URL with its query values removed ({@link shownUrl}). */
  readonly url: string;
  readonly loaded: boolean;
  /** True while the current set is within its TTL. */
  readonly fresh: boolean;
  /**
   * How long refreshes of an expired set have been failing, ms: from the later of the set's expiry
   * and the first failed refresh since the last success. 0 while refreshes succeed, and for an
   * expired set nobody has needed yet (an idle gateway is not stale).
   */
  readonly staleForMs: number;
  /**
   * The last good set was dropped: it expired more than `max_stale` ago and could not be
   * refreshed since. `loaded` is then false; tokens are refused as `stale` until a fetch succeeds.
   */
  readonly dropped: boolean;
  readonly keys: number;
  readonly fetches: number;
  readonly lastError: string | undefined;
}

/** Skipped keys of one fetch named in a warning each; the others are counted in one more. */
const MAX_SKIPPED_WARNINGS = 10;

/**
 * The largest RSA modulus a trusted issuer's key may have. Any caller picks the key a token is
 * checked under (its `kid`), and the signature is checked before anything vouches for the token: a
 * 16384-bit key costs ~2.6 ms a check (40 ES256 ones). IdPs publish 2048-4096-bit keys; 8192 leaves
 * room for the rare larger one. A larger key is skipped with a warning, as any unusable key is.
 */
export const ISSUER_KEY_MAX_RSA_BITS = 8192;

/**
 * The least time between two fetches of one key set, ms, whatever `miss_cooldown`, `min_ttl` and
 * the response's Cache-Control say. Any caller names a `kid` (no signature is needed to miss), so
 * with `miss_cooldown: 0` each forged token was one more fetch, back to back; with `min_ttl: 0` and
 * an issuer answering `no-store`, or a failing issuer, every request started a refresh.
 */
export const MIN_FETCH_INTERVAL_MS = 1000;

function maxAge(cacheControl: string | null): number | undefined {
  if (!cacheControl) return undefined;
  if (/(?:^|,)\s*(?:no-store|no-cache)\b/i.test(cacheControl)) return 0;
  const m = /(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*"?(\d+)/i.exec(cacheControl);
  return m ? Number(m[1]) : undefined;
}

/**
 * The URL as shown on /readyz (which anyone may call) and in logs: query values removed and keys
 * kept (`/keys?tenant=&api_key=`), no fragment. The configuration refuses a user:password@ part,
 * but a key in the query (`?api_key=`, `?code=`) is how some key sets are protected.
 */
export function shownUrl(url: string): string {
  if (!URL.canParse(url)) return '(invalid URL)';
  const u = new URL(url);
  const keys = u.search
    .slice(1)
    .split('&')
    .filter((p) => p !== '')
    .map((p) => `${p.slice(0, p.includes('=') ? p.indexOf('=') : p.length).slice(0, 64)}=`);
  return `${u.origin}${u.pathname}${keys.length > 0 ? `?${keys.join('&')}` : ''}`;
}

export class RemoteJwks implements KeySource {
  readonly #o: RemoteJwksOptions;
  readonly #clock: Clock;
  readonly #fetch: typeof fetch;
  #set: KeySet | undefined;
  readonly #removed: (() => void)[] = [];
  #expiresAt = 0;
  /** When the set of the last successful fetch expires (a failure does not move it). */
  #goodUntil = 0;
  /** First failed fetch since the last success. */
  #failingSince: number | undefined;
  #lastFetchAt = Number.NEGATIVE_INFINITY;
  #inflight: Promise<boolean> | undefined;
  #fetches = 0;
  #lastError: string | undefined;
  /** The last good set was dropped ({@link RemoteJwksStatus.dropped}); cleared by a successful fetch. */
  #dropped = false;
  /** The URL without its query values, for status and warnings ({@link shownUrl}). */
  readonly #shown: string;

  constructor(options: RemoteJwksOptions) {
    // A warning quotes what the key set's publisher chose (a kid; with private_key_jwt, a client's
    // own jwks_uri): escaped here, so it reaches any logger or callback as one safe line.
    const warn = options.onWarning;
    this.#o = warn ? { ...options, onWarning: (m: string) => warn(printable(m)) } : options;
    this.#shown = shownUrl(options.url);
    this.#clock = options.clock ?? Date.now;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Fetch the key set now (e.g. at start-up so the first request does not wait). */
  load(): Promise<boolean> {
    return this.#refresh();
  }

  lookup(kid: string | undefined, alg: JwsAlgorithm): VerificationKey | KeyMiss {
    this.#dropIfTooStale();
    const set = this.#set;
    if (set === undefined) {
      // Never loaded, or dropped. `unknown` lets the caller wait for a fetch (refreshAfterMiss);
      // after a failed fetch that is allowed again once the cooldown is over, else the source would
      // stay unavailable forever when the issuer was down at start-up.
      if (this.#lastError === undefined || this.#clock() >= this.#expiresAt) return 'unknown';
      return this.#dropped ? 'stale' : 'unavailable';
    }
    if (this.#refreshDue()) void this.#refresh();
    return set.lookup(kid, alg);
  }

  refreshIfStale(): void {
    // A set dropped here clears the results cached for its tokens (onKeysRemoved) before the
    // caller uses one.
    this.#dropIfTooStale();
    if (this.#set !== undefined && this.#refreshDue()) void this.#refresh();
  }

  /** The set expired, no fetch is under way, and the last began at least {@link MIN_FETCH_INTERVAL_MS} ago. */
  #refreshDue(): boolean {
    const now = this.#clock();
    return now >= this.#expiresAt && this.#inflight === undefined && now - this.#lastFetchAt >= MIN_FETCH_INTERVAL_MS;
  }

  /** Whether the set expired more than max_stale ago (whether or not a refresh was tried since). */
  #tooStale(): boolean {
    return this.#set !== undefined && this.#clock() >= this.#goodUntil + (this.#o.maxStale ?? 86_400) * 1000;
  }

  /**
   * Drop a set that expired more than max_stale ago: its keys may have been withdrawn at an issuer
   * that cannot be reached (a key removed after a compromise would else stay trusted for as long
   * as the outage, or the block, lasts). Results cached for its tokens go with it.
   */
  #dropIfTooStale(): void {
    if (!this.#tooStale()) return;
    this.#set = undefined;
    this.#dropped = true;
    if (this.#lastError !== undefined) {
      this.#o.onWarning?.(
        `JWKS ${this.#shown}: the last good key set expired more than jwks_cache.max_stale ago and cannot be refreshed (${this.#lastError}); dropped it, tokens of this issuer are refused until a fetch succeeds`,
      );
    }
    for (const l of this.#removed) l();
  }

  onKeysRemoved(listener: () => void): void {
    this.#removed.push(listener);
  }

  refreshAfterMiss(): Promise<boolean> {
    if (this.#inflight) return this.#inflight;
    if (this.#clock() - this.#lastFetchAt < Math.max(this.#o.missCooldown * 1000, MIN_FETCH_INTERVAL_MS)) return Promise.resolve(false);
    return this.#refresh();
  }

  get status(): RemoteJwksStatus {
    // A set past max_stale that nobody asked for since is reported dropped once a refresh of it
    // failed; an idle set that expired unused is not (its readiness must not decay, and the next
    // lookup waits for a fetch rather than use it).
    const dropped = this.#dropped || (this.#tooStale() && this.#failingSince !== undefined);
    return {
      url: this.#shown,
      loaded: this.#set !== undefined && !dropped,
      // After a failed fetch the set is kept but no longer fresh, even while the retry waits.
      fresh: this.#set !== undefined && this.#lastError === undefined && this.#clock() < this.#expiresAt,
      staleForMs:
        this.#set === undefined || dropped || this.#failingSince === undefined
          ? 0
          : Math.max(0, this.#clock() - Math.max(this.#goodUntil, this.#failingSince)),
      dropped,
      keys: dropped ? 0 : (this.#set?.keys.length ?? 0),
      fetches: this.#fetches,
      lastError: this.#lastError,
    };
  }

  #refresh(): Promise<boolean> {
    if (this.#inflight) return this.#inflight;
    this.#lastFetchAt = this.#clock();
    this.#fetches++;
    this.#inflight = this.#fetchOnce()
      .then(
        () => {
          this.#lastError = undefined;
          this.#failingSince = undefined;
          this.#dropped = false;
          return true;
        },
        (e: unknown) => {
          this.#lastError = e instanceof Error ? e.message : String(e);
          this.#failingSince ??= this.#clock();
          this.#o.onWarning?.(
            `JWKS fetch from ${this.#shown} failed: ${this.#lastError}; ${this.#set === undefined ? 'no key set to use' : 'keeping the last good key set'}`,
          );
          // Retry a failed fetch no sooner than the miss cooldown.
          this.#expiresAt = this.#clock() + this.#o.missCooldown * 1000;
          return false;
        },
      )
      .finally(() => {
        this.#inflight = undefined;
      });
    return this.#inflight;
  }

  async #fetchOnce(): Promise<void> {
    let response: Response;
    try {
      response = await this.#fetch(this.#o.url, {
        headers: { accept: 'application/jwk-set+json, application/json' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.#o.timeout * 1000),
      });
    } catch (e) {
      throw fetchFailure(e);
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    let text: string;
    try {
      text = await readLimited(response, this.#o.maxBytes ?? 512 * 1024);
    } catch (e) {
      // The timeout covers the body too: one that stops mid-way is "no answer in time", as a
      // response whose headers never come, not the runtime's abort message.
      throw e instanceof ResponseTooLarge ? e : fetchFailure(e);
    }
    let document: unknown;
    try {
      document = JSON.parse(text);
    } catch {
      throw new Error('response is not JSON');
    }
    // The strict JSON tokens are read with: a member named twice in a key is refused, as a token
    // with a duplicate claim is, rather than read as its last value.
    const fault = strictJsonFault(text, document);
    if (fault !== undefined) throw new Error(`response ${STRICT_JSON_REFUSALS[fault]}`);
    const parsed = parseJwks(document, { algorithms: this.#o.algorithms, publicOnly: true, maxRsaBits: ISSUER_KEY_MAX_RSA_BITS });
    // The first few skipped keys are named; the rest are counted. One line per key would let a key
    // set of thousands of unusable keys write thousands of log lines at each fetch.
    for (const p of parsed.problems.slice(0, MAX_SKIPPED_WARNINGS)) {
      this.#o.onWarning?.(`JWKS ${this.#shown}: skipped key ${p.kid ?? `#${p.index}`}: ${p.message}`);
    }
    const unnamed = parsed.problems.length - MAX_SKIPPED_WARNINGS;
    if (unnamed > 0) this.#o.onWarning?.(`JWKS ${this.#shown}: ${unnamed} more keys skipped`);
    if (parsed.keys.length === 0) throw new Error('no usable keys in the response');
    const ttl = Math.min(this.#o.maxTtl, Math.max(this.#o.minTtl, maxAge(response.headers.get('cache-control')) ?? this.#o.defaultTtl));
    const previous = this.#set;
    this.#set = new KeySet(parsed.keys);
    // A key taken out of the set (rotated out, or withdrawn after a compromise) must stop
    // vouching for tokens at once, cached results included; so must a key kept with its `alg`
    // pinned or changed (RFC 7517 §4.4), for the algorithms it lost. Any change of a key's
    // algorithms clears the cache: one that only gains some costs a cold cache, no more.
    if (previous !== undefined) {
      const now = new Set(parsed.keys.map(keyIdentity));
      if (previous.keys.some((k) => !now.has(keyIdentity(k)))) for (const l of this.#removed) l();
    }
    this.#expiresAt = this.#clock() + ttl * 1000;
    this.#goodUntil = this.#expiresAt;
  }
}

/** A key and the algorithms it verifies: one that changes is, for cached results, a key removed. */
function keyIdentity(k: VerificationKey): string {
  return `${k.kid}\n${k.thumbprint}\n${[...k.checks.keys()].sort().join(' ')}`;
}

/**
 * A failure of `fetch` itself in words safe for a log line and /readyz: a timeout, or a connection
 * error code. Never fetch's own message, which may quote the whole URL (`Request cannot be
 * constructed from a URL that includes credentials: https://user:password@…?api_key=…`).
 */
function fetchFailure(e: unknown): Error {
  const name = (e as Error | undefined)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') return new Error('no answer in time');
  const cause = (e as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (cause?.message === 'unexpected redirect') return new Error('answered with a redirect, which is not followed');
  const code = cause?.code;
  if (typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code)) return new Error(`unreachable (${code})`);
  return new Error(name === 'TypeError' && (e as Error).cause === undefined ? 'the URL cannot be fetched' : 'unreachable');
}

/** {@link readLimited}'s refusal of a body over its limit (every other failure is the stream's). */
class ResponseTooLarge extends Error {}

/** Read a response body as UTF-8, aborting as soon as it exceeds `limit` bytes. */
export async function readLimited(response: Response, limit: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > limit) {
    await response.body?.cancel();
    throw new ResponseTooLarge(`response larger than ${limit} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (response.body) {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > limit) {
        await response.body.cancel().catch(() => {});
        throw new ResponseTooLarge(`response larger than ${limit} bytes`);
      }
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}
