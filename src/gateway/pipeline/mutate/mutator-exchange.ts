/**
 * `credential: exchange`: a short-lived token minted per caller by the token service
 * (`UpstreamTokenIssuer`): the upstream's audience, narrowed to the route's scopes, never
 * outliving the caller's token, carrying the caller's delegation chain in `act`.
 *
 * Minted tokens are cached per caller token (and what the mint read of it: an introspected token's
 * answer may change) and rule until `refresh_before` their expiry, or
 * until the upstream answers 401 to one (it is then evicted, and the caller's next request mints
 * anew; a token minted that way is kept through a 401 of its own for 30 s, so an upstream that
 * refuses every token does not get a new one per request); concurrent first requests share one
 * mint. A cached token the issuer says was revoked since (its `revoked` check: the token
 * service's in-memory revocation list, asked before each use) is minted anew, not sent.
 *
 * A mint is waited for `mint_timeout` from its start, by every request sharing it: then they fail
 * ({@link ExchangeMintTimeout}, 502 `upstream_credential_unavailable`), the issuer's signal is
 * aborted and the next request mints anew. An answer that still comes is checked as any other and,
 * when valid, cached where no other token is: it was minted for the same caller and rule, so it is
 * as good as one on time, and a slow token service then serves the caller's next request instead
 * of minting (and writing a grant) for every request in vain.
 *
 * An issuer call counts as in flight until the issuer settles it, past its deadline too (an issuer
 * may not heed the signal): at most `maxInFlight` at once per route, and at most
 * {@link PER_CALLER_IN_FLIGHT} per cache key (the one abandoned and one new try). A mint past either
 * bound is refused at once ({@link ExchangeMintsBusy}: 503 `upstream_credential_busy` with
 * Retry-After, a capacity refusal), never queued, so a hung token service costs a bounded number of
 * pending calls whatever the number of requests.
 *
 * A reload hands the cache and the calls under way ({@link ExchangeState}) to the route's new
 * mutator when nothing a minted token depends on changed: the same issuer, audience, `scopes`,
 * `max_ttl` and `refresh_before` (see {@link exchangeCredentialMutator}'s `from`). The old and the
 * new mutator then share one cache, which a reload changing `cache_size` resizes when the new state
 * is put in force ({@link takeOverExchange}): a mint under way at the reload (started by either)
 * lands in it when it ends, and the caller's next request finds it. What else a mint
 * reads (the caller's token as verified, the scopes asked for under the matched rule) is in the
 * cache key, so a rule or a scope catalogue changed by the reload misses where it changed what a
 * mint would ask for, and only there.
 *
 * @module
 */
import { TesseraError } from '../../../core/errors.ts';
import { OAuthError } from '../../../core/oauth-errors.ts';
import type { CompiledRule } from '../../../core/policy.ts';
import type { Clock, UpstreamTokenIssuer } from '../../../core/ports.ts';
import { BoundedMap } from '../../../core/verify/bounded-map.ts';
import type { Principal } from '../../../core/verify/principal.ts';
import type { Mutator } from './mutator.ts';

export interface ExchangeOptions {
  readonly issuer: UpstreamTokenIssuer;
  readonly audience: string;
  /** Scopes the minted token may carry (∩ the caller's); `undefined`: the matched rule's scopes. */
  readonly scopes: readonly string[] | undefined;
  /** Seconds. */
  readonly maxTtl: number;
  /** Seconds. */
  readonly refreshBefore: number;
  /** Seconds a mint is waited for ({@link ExchangeMintTimeout} after). */
  readonly mintTimeout: number;
  /** Issuer calls unsettled at once, those past their deadline included ({@link ExchangeMintsBusy} past it). */
  readonly maxInFlight: number;
  readonly cacheSize: number;
  readonly clock: Clock;
  /** Told about issuer failures (never with token material). */
  readonly onError?: (error: unknown) => void;
  /**
   * The state of the mutator this one replaces (the same route before a reload): taken over when
   * it was minting with the same issuer and the same settings a minted token depends on, ignored
   * otherwise.
   */
  readonly from?: ExchangeState | undefined;
}

/**
 * What an exchange mutator keeps between requests: its minted tokens and its issuer calls under
 * way, shared with the mutator that takes it over at a reload (requests still running under the
 * old configuration go on using it). Opaque outside this module.
 */
export interface ExchangeState {
  readonly issuer: UpstreamTokenIssuer;
  /** The settings a minted token depends on ({@link basisOf}). */
  readonly basis: string;
  /** This configuration's `cache_size`, which the shelf takes when this state is put in force ({@link takeOverExchange}). */
  readonly cacheSize: number;
  /** The cache, shared by every state handed over from one another. */
  readonly shelf: Shelf;
  readonly pending: Map<string, Promise<Cached>>;
  readonly calls: Calls;
}

/**
 * The minted tokens of a route, shared by its mutators across the reloads that hand them over:
 * one place for them whichever mutator started a mint and whenever it ends. Replaced as a whole
 * (resized) only when a state of another `cache_size` is put in force, never by compiling one: a
 * reload refused after compiling the route leaves it as it was.
 */
interface Shelf {
  size: number;
  cache: BoundedMap<string, Cached> | undefined;
  /** When the token cached under a key was last evicted for a 401. */
  refusedAt: BoundedMap<string, number> | undefined;
}

/** Issuer calls not settled yet: in all, and per cache key (at most `maxInFlight` keys). */
interface Calls {
  inFlight: number;
  readonly unsettled: Map<string, number>;
}

/** The route's settings a minted token depends on (its audience, scopes, lifetime and when it is replaced). */
function basisOf(options: ExchangeOptions): string {
  return JSON.stringify([options.audience, options.scopes ?? null, options.maxTtl, options.refreshBefore]);
}

/**
 * `from` when it may be taken over (with this `cacheSize`, its shelf resized by
 * {@link takeOverExchange}); else a new state.
 */
function stateFor(options: ExchangeOptions): ExchangeState {
  const { from, cacheSize, issuer } = options;
  const basis = basisOf(options);
  if (from !== undefined && from.issuer === issuer && from.basis === basis)
    return from.cacheSize === cacheSize ? from : { ...from, cacheSize };
  const bounded = <V>() => (cacheSize > 0 ? new BoundedMap<string, V>(cacheSize) : undefined);
  return {
    issuer,
    basis,
    cacheSize,
    shelf: { size: cacheSize, cache: bounded(), refusedAt: bounded() },
    pending: new Map(),
    calls: { inFlight: 0, unsettled: new Map() },
  };
}

/**
 * Put `state` in force (the reload that compiled it swapped it in): the cache it shares with the
 * state it took over is resized to its `cache_size`, keeping the newest tokens. Mints under way
 * then end in the resized cache, whichever mutator started them. Not done when compiling: a
 * reload refused afterwards would have resized the cache of the configuration kept.
 */
export function takeOverExchange(state: ExchangeState): void {
  const shelf = state.shelf;
  if (shelf.size === state.cacheSize) return;
  shelf.cache = resized(shelf.cache, state.cacheSize);
  shelf.refusedAt = resized(shelf.refusedAt, state.cacheSize);
  shelf.size = state.cacheSize;
}

/** A copy of `map` holding at most `size` entries (the newest), `undefined` for no cache. */
function resized<V>(map: BoundedMap<string, V> | undefined, size: number): BoundedMap<string, V> | undefined {
  if (size <= 0) return undefined;
  const out = new BoundedMap<string, V>(size);
  if (map !== undefined) for (const [k, v] of map.entries()) out.set(k, v);
  return out;
}

interface Cached {
  readonly value: string;
  /** Epoch ms after which a new token is minted. */
  readonly refreshAt: number;
  /** Epoch ms until which an upstream 401 does not evict it (it replaces a token refused moments ago). */
  readonly keepUntil: number;
  /** The issuer's check that it has not been revoked since (its grant, say), when it gave one. */
  readonly revoked: (() => boolean) | undefined;
}

/**
 * Whether a cached token may not be sent: revoked since it was minted (an operator revoked its
 * grant), or the issuer's check gave no answer (it threw or answered anything but a boolean: fail
 * closed, mint anew).
 */
function revokedSince(entry: Cached): boolean {
  if (entry.revoked === undefined) return false;
  try {
    return entry.revoked() !== false;
  } catch {
    return true;
  }
}

/**
 * How long a token minted to replace a refused one stays cached through a 401 of its own. An
 * upstream that refuses a fresh token too is refusing for another reason than the token (a path
 * that needs other credentials, its own outage): minting again for every request would write a
 * grant per request for nothing.
 */
const REPLACEMENT_HOLD_MS = 30_000;

/** The scopes to ask for: configured or the rule's, kept only where the caller holds them. */
export function exchangeScopes(configured: readonly string[] | undefined, rule: CompiledRule | undefined, principal: Principal): string[] {
  const has = principal.effectiveScopes;
  if (configured !== undefined) return configured.filter((s) => has.has(s));
  if (rule === undefined) return [];
  const out = [...rule.all];
  for (const s of rule.any) if (has.has(s)) out.push(s);
  return out;
}

/**
 * A token service's answer the gateway does not send: the upstream would get a credential other
 * than one token (a CR LF, a space, an empty value) or one outliving the caller's token. `reason`
 * is logged; never the answer itself.
 */
export class ExchangeAnswerRefused extends Error {
  override readonly name = 'ExchangeAnswerRefused';
  readonly reason: 'token_malformed' | 'expiry_invalid' | 'outlives_caller';
  constructor(reason: ExchangeAnswerRefused['reason']) {
    super(`exchange answer refused: ${reason}`);
    this.reason = reason;
  }
}

/** The issuer did not answer within `mint_timeout`. Logged with its `reason`. */
export class ExchangeMintTimeout extends Error {
  override readonly name = 'ExchangeMintTimeout';
  readonly reason = 'mint_timeout';
  constructor(ms: number) {
    super(`no upstream token minted within ${ms} ms`);
  }
}

/**
 * Issuer calls one cache key may have unsettled: the one its requests gave up on at the deadline,
 * and one new try (a hung call may never settle). Past it the caller's requests are refused at once
 * until one settles, so one caller cannot take the route's `maxInFlight`.
 */
const PER_CALLER_IN_FLIGHT = 2;

/**
 * Seconds a caller refused for want of a mint slot is told to wait (`Retry-After`), as
 * `introspection.max_in_flight` tells (INTROSPECTION_RETRY_AFTER): a slot frees when a call
 * settles, which a hung token service may take up to `mint_timeout` and longer to do.
 */
export const MINTS_BUSY_RETRY_AFTER = 5;

/** A mint refused because too many issuer calls are unsettled (`max_in_flight`). Logged with its `reason`. */
export class ExchangeMintsBusy extends Error {
  override readonly name = 'ExchangeMintsBusy';
  readonly reason = 'mints_in_flight';
  constructor() {
    super('too many upstream token mints under way');
  }
}

/** RFC 6750 §2.1 b64token: what a Bearer credential may be. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

function refusedAnswer(issued: { readonly token: unknown; readonly expiresAt: unknown }, p: Principal, nowMs: number) {
  if (typeof issued.token !== 'string' || !B64TOKEN.test(issued.token)) return 'token_malformed' as const;
  const exp = issued.expiresAt;
  if (typeof exp !== 'number' || !Number.isFinite(exp) || exp * 1000 <= nowMs) return 'expiry_invalid' as const;
  if (exp > p.expiresAt) return 'outlives_caller' as const;
  return undefined;
}

/** {@link fingerprint}s of the principals seen: a verifier shares one principal between the requests of a token. */
const fingerprints = new WeakMap<Principal, string>();

/**
 * The cache key of a caller: its token, and everything about it a mint reads. The token alone is
 * not enough: an introspected token's answer may change under it (scopes narrowed, its expiry
 * brought forward, another subject or client), and a token minted for the old answer would go on
 * being sent (wider than the caller now holds, or outliving the caller's token).
 */
function fingerprint(p: Principal): string {
  let f = fingerprints.get(p);
  if (f === undefined) {
    const c = p.claims;
    f = JSON.stringify([
      p.tokenHash,
      p.kind,
      p.issuer,
      p.subject,
      p.clientId,
      p.scopes,
      p.expiresAt,
      p.issuedAt,
      p.delegationId,
      p.tokenId,
      p.confirmation?.jkt,
      p.staticTokenId,
      c.act,
      c.may_act,
      c.sub_id,
    ]);
    fingerprints.set(p, f);
  }
  return f;
}

/** An exchange mutator, and the state a reload hands to the route's next one (`from`). */
export interface ExchangeMutator extends Mutator {
  readonly state: ExchangeState;
}

/** What a mint asks for a caller under a rule, and the cache key of its answer. */
interface Ask {
  readonly rule: CompiledRule | undefined;
  readonly scopes: readonly string[];
  readonly key: string;
}

export function exchangeCredentialMutator(options: ExchangeOptions): ExchangeMutator {
  const state = stateFor(options);
  // The shelf's maps are read at each use, never kept: a reload may resize them under a mint.
  const { shelf, pending, calls } = state;
  const { unsettled } = calls;
  const { clock } = options;

  const timeoutMs = Math.round(options.mintTimeout * 1000);
  const settled = (key: string) => {
    calls.inFlight--;
    const n = (unsettled.get(key) ?? 1) - 1;
    if (n <= 0) unsettled.delete(key);
    else unsettled.set(key, n);
  };

  const mint = (key: string, scopes: readonly string[], principal: Principal): Promise<Cached> => {
    const ofKey = unsettled.get(key) ?? 0;
    if (calls.inFlight >= options.maxInFlight || ofKey >= PER_CALLER_IN_FLIGHT) return Promise.reject(new ExchangeMintsBusy());
    const now = clock();
    const remaining = Math.floor(principal.expiresAt - now / 1000);
    const maxTtl = Math.max(1, Math.min(options.maxTtl, remaining));
    const abort = new AbortController();
    const request = {
      principal,
      audience: options.audience,
      scopes: [...scopes],
      maxTtl,
      signal: abort.signal,
    };
    let late = false;
    // A port that throws instead of rejecting is a bug, not an unavailable token service: it
    // propagates (500 internal_error), holding no slot.
    const call = options.issuer.issueForUpstream(request);
    calls.inFlight++;
    unsettled.set(key, ofKey + 1);
    // The slot is held until the issuer settles, whoever still waits: a call the gateway gave up on
    // is still one the issuer is serving.
    const minted = Promise.resolve(call)
      .finally(() => settled(key))
      .then((issued) => {
        const refused = refusedAnswer(issued, principal, clock());
        if (refused !== undefined) throw new ExchangeAnswerRefused(refused);
        const { cache, refusedAt } = shelf;
        const expMs = issued.expiresAt * 1000;
        const lead = Math.min(options.refreshBefore * 1000, (expMs - clock()) / 2);
        const now = clock();
        const refreshAt = expMs - lead;
        // Past the deadline nobody waits for it: it never takes the place of a usable token cached since.
        const current = late ? cache?.get(key) : undefined;
        const kept =
          cache !== undefined && refreshAt > now && !(current !== undefined && current.refreshAt > now && !revokedSince(current));
        let keepUntil = 0;
        if (kept) {
          const rejectedAt = refusedAt?.get(key);
          if (rejectedAt !== undefined) refusedAt?.delete(key);
          if (rejectedAt !== undefined && now - rejectedAt < REPLACEMENT_HOLD_MS) keepUntil = now + REPLACEMENT_HOLD_MS;
        }
        const revoked = typeof issued.revoked === 'function' ? issued.revoked.bind(issued) : undefined;
        const entry: Cached = { value: `Bearer ${issued.token}`, refreshAt, keepUntil, revoked };
        if (kept) cache.set(key, entry);
        return entry;
      });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        late = true;
        const error = new ExchangeMintTimeout(timeoutMs);
        abort.abort(error);
        reject(error);
      }, timeoutMs);
    });
    const p: Promise<Cached> = Promise.race([minted, deadline]).finally(() => {
      clearTimeout(timer);
      // Only this mint's: a newer one for the same key may be under way since this one's deadline.
      if (pending.get(key) === p) pending.delete(key);
    });
    // A late failure is nobody's to hear: the requests that waited were answered at the deadline.
    minted.catch(() => {});
    pending.set(key, p);
    return p;
  };

  /**
   * The last {@link Ask} per principal (a verifier shares one between the requests of a token). The
   * key holds the scopes asked for, not only the rule's id: a reload that hands the cache over may
   * have changed a rule (ids are positions unless named) or the scope catalogue the caller's
   * scopes are expanded by, and a token minted for other scopes must not be sent.
   */
  const asked = new WeakMap<Principal, Ask>();
  const ask = (principal: Principal, rule: CompiledRule | undefined): Ask => {
    let a = asked.get(principal);
    if (a === undefined || a.rule !== rule) {
      const scopes = exchangeScopes(options.scopes, rule, principal);
      a = { rule, scopes, key: `${fingerprint(principal)}\n${rule?.id ?? ''}\n${scopes.join(' ')}` };
      asked.set(principal, a);
    }
    return a;
  };

  return {
    id: 'exchange',
    headers: ['authorization'],
    state,
    mutate(input, out) {
      const principal = input.principal;
      if (principal === undefined) return new TesseraError('upstream_credential_unavailable');
      // A token past its `exp` but within the verifier's clock_skew: the token service mints
      // nothing for it (a minted token never outlives its subject's, counted in whole seconds), and
      // the caller is told its token expired, so it gets a new one rather than retrying a 502.
      // (An introspection answer without `exp` has no expiry of its own to be past.)
      if (typeof principal.claims.exp === 'number' && Math.floor(principal.expiresAt) <= Math.floor(clock() / 1000)) {
        return new TesseraError('token_expired');
      }
      const { key, scopes } = ask(principal, input.rule);
      const cache = shelf.cache;
      const hit = cache?.get(key);
      if (hit !== undefined) {
        // A cached token whose grant was revoked since (`tessera revoke --grant`) is minted anew
        // rather than sent until it is due for refresh.
        if (clock() < hit.refreshAt && !revokedSince(hit)) {
          out.authorization = hit.value;
          return undefined;
        }
        cache?.delete(key);
      }
      const inFlight = pending.get(key) ?? mint(key, scopes, principal);
      return inFlight.then(
        (entry) => {
          out.authorization = entry.value;
          return undefined;
        },
        (error: unknown) => {
          options.onError?.(error);
          // Capacity, not failure (RFC 9110 §15.6.4): 503 with Retry-After. Audited with the same
          // detail.upstream_error (mints_in_flight) as before.
          if (error instanceof ExchangeMintsBusy) {
            return new TesseraError('upstream_credential_busy', { upstreamError: error.reason, retryAfter: MINTS_BUSY_RETRY_AFTER });
          }
          // The token service's refusal is audited with its stable code (client_unknown,
          // client_dpop_proof_required...), never with a message.
          return error instanceof ExchangeMintTimeout
            ? new TesseraError('upstream_credential_unavailable', { upstreamError: error.reason })
            : error instanceof OAuthError
              ? new TesseraError('upstream_credential_unavailable', { upstreamError: error.code })
              : new TesseraError('upstream_credential_unavailable');
        },
      );
    },
    rejected({ principal, rule }, sent) {
      const { cache, refusedAt } = shelf;
      if (principal === undefined || cache === undefined) return;
      const { key } = ask(principal, rule);
      const hit = cache.get(key);
      // Only the token refused: a late 401 to one already replaced leaves its replacement. A
      // replacement refused too is kept for a while (REPLACEMENT_HOLD_MS).
      if (hit === undefined || hit.value !== sent.authorization) return;
      const now = clock();
      if (now < hit.keepUntil) return;
      cache.delete(key);
      refusedAt?.set(key, now);
    },
  };
}
