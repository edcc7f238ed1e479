/**
 * The store's replay table as a verifier's {@link ReplayCache}: a DPoP proof's `jti` recorded there
 * is refused by every instance on the store and after a restart, not only by the process that saw
 * it (RFC 9449 §11.1).
 *
 * @module
 */
import type { Clock, ReplayCache } from '../core/ports.ts';
import type { Store } from './contract.ts';

/**
 * Namespace of the gateway's (resource requests') proof keys in the replay table. The token
 * endpoint records its proofs as `dpop:<jkt>:<SHA-256 of the jti>`; a proof names one `htu`, so it
 * is never valid at both, but one table entry must still not stand for the other's. The gateway's
 * keys are `dpop-resource:<jkt>:<SHA-256 of the jti>` (the verifier hashes the jti, see
 * `jtiDigest`). Gateways from before that recorded the jti as sent: while both run on one store (an
 * upgrade), or across a restart into the new one, a proof accepted by the old one can be accepted
 * once more by the new one within its `iat` window (90 s by default), as the two keys differ.
 */
export const RESOURCE_PROOF_PREFIX = 'dpop-resource:';

/**
 * A replay cache kept in `store`. Every use is a store write: a fresh proof, the common case, must
 * reach the store whatever a memory cache in front of it holds (another instance may have seen
 * it), so such a cache would spare only the round trip of a replay. A store that cannot answer
 * rejects, and the verifier refuses the proof (fail closed).
 *
 * With the default clock, one object per store: verifiers on one request that share a replay cache
 * record its proof once (the adapters tell by the cache's identity), so two calls for one store
 * must give one cache.
 */
export function storeReplayCache(store: Pick<Store, 'useOnce'>, clock: Clock = Date.now): ReplayCache {
  const shared = clock === Date.now ? ofStore.get(store) : undefined;
  if (shared !== undefined) return shared;
  // Whole seconds, as the store keeps them: an entry is free again once its `expiresAt` is reached,
  // the second after the verifier last accepts the proof.
  const cache: ReplayCache = { use: (key, expiresAt) => store.useOnce(RESOURCE_PROOF_PREFIX + key, expiresAt, Math.floor(clock() / 1000)) };
  if (clock === Date.now) ofStore.set(store, cache);
  return cache;
}

const ofStore = new WeakMap<object, ReplayCache>();
