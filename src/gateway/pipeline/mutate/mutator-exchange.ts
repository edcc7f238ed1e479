/**
 * `credential: exchange`: a short-lived token minted per caller by the token service
 * (`UpstreamTokenIssuer`): the upstream's audience, narrowed to the route's scopes, never
 * outliving the caller's token, carrying the caller's delegation chain in `act`.
 *
 * Minted tokens are cached per caller token and rule until `refresh_before` their expiry, or
 * until the upstream answers 401 to one (it is then evicted, and the caller's next request mints
 * anew); concurrent first requests share one mint.
 *
 * @module
 */
import { TesseraError } from '../../../core/errors.ts';
import type { Clock, UpstreamTokenIssuer } from '../../../core/ports.ts';
import { BoundedMap } from '../../../core/verify/bounded-map.ts';
import type { Principal } from '../../../core/verify/principal.ts';
import type { MutationInput, Mutator } from './mutator.ts';

export interface ExchangeOptions {
  readonly issuer: UpstreamTokenIssuer;
  readonly audience: string;
  /** Scopes the minted token may carry (∩ the caller's); `undefined`: the matched rule's scopes. */
  readonly scopes: readonly string[] | undefined;
  /** Seconds. */
  readonly maxTtl: number;
  /** Seconds. */
  readonly refreshBefore: number;
  readonly cacheSize: number;
  readonly clock: Clock;
  /** Told about issuer failures (never with token material). */
  readonly onError?: (error: unknown) => void;
}

interface Cached {
  readonly value: string;
  /** Epoch ms after which a new token is minted. */
  readonly refreshAt: number;
}

/** The scopes to ask for: configured or the rule's, kept only where the caller holds them. */
export function exchangeScopes(configured: readonly string[] | undefined, input: MutationInput, principal: Principal): string[] {
  const has = principal.effectiveScopes;
  if (configured !== undefined) return configured.filter((s) => has.has(s));
  const rule = input.rule;
  if (rule === undefined) return [];
  const out = [...rule.all];
  for (const s of rule.any) if (has.has(s)) out.push(s);
  return out;
}

export function exchangeCredentialMutator(options: ExchangeOptions): Mutator {
  const cache = options.cacheSize > 0 ? new BoundedMap<string, Cached>(options.cacheSize) : undefined;
  const pending = new Map<string, Promise<Cached>>();
  const { clock } = options;

  const mint = (key: string, input: MutationInput, principal: Principal): Promise<Cached> => {
    const now = clock();
    const remaining = Math.floor(principal.expiresAt - now / 1000);
    const maxTtl = Math.max(1, Math.min(options.maxTtl, remaining));
    const p = options.issuer
      .issueForUpstream({ principal, audience: options.audience, scopes: exchangeScopes(options.scopes, input, principal), maxTtl })
      .then((issued) => {
        const expMs = issued.expiresAt * 1000;
        const lead = Math.min(options.refreshBefore * 1000, (expMs - clock()) / 2);
        const entry = { value: `Bearer ${issued.token}`, refreshAt: expMs - lead };
        if (cache && entry.refreshAt > clock()) cache.set(key, entry);
        return entry;
      })
      .finally(() => pending.delete(key));
    pending.set(key, p);
    return p;
  };

  const keyOf = (principal: Principal, rule: MutationInput['rule']) => `${principal.tokenHash}\n${rule?.id ?? ''}`;

  return {
    id: 'exchange',
    headers: ['authorization'],
    mutate(input, out) {
      const principal = input.principal;
      if (principal === undefined) return new TesseraError('upstream_credential_unavailable');
      const key = keyOf(principal, input.rule);
      const hit = cache?.get(key);
      if (hit !== undefined) {
        if (clock() < hit.refreshAt) {
          out.authorization = hit.value;
          return undefined;
        }
        cache?.delete(key);
      }
      const inFlight = pending.get(key) ?? mint(key, input, principal);
      return inFlight.then(
        (entry) => {
          out.authorization = entry.value;
          return undefined;
        },
        (error: unknown) => {
          options.onError?.(error);
          return new TesseraError('upstream_credential_unavailable');
        },
      );
    },
    rejected({ principal, rule }, sent) {
      if (principal === undefined || cache === undefined) return;
      const key = keyOf(principal, rule);
      // Only the token refused: a late 401 to one already replaced leaves its replacement.
      if (cache.get(key)?.value === sent.authorization) cache.delete(key);
    },
  };
}
