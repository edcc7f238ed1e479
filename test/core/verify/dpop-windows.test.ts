/**
 * DpopWindowHistory: the DPoP windows of replaced verifiers (a gateway's reloads). A proof is held
 * to the shortest window of a verifier that may have recorded it (one that recorded a proof of its
 * iat or later), its own included; replaced windows are merged strictly, never dropped while they
 * may matter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DpopWindowHistory } from '../../../src/core/verify/dpop.ts';

describe('DpopWindowHistory', () => {
  it('a replaced window bounds the proofs of its iats and earlier, not later ones', () => {
    const h = new DpopWindowHistory({ horizon: 3660 });
    const old = h.open(90);
    h.record(old, 1000);
    h.open(1830);
    h.retire(old);
    assert.equal(h.limit(1000, 1830, 1100), 90);
    assert.equal(h.limit(999, 1830, 1100), 90);
    assert.equal(h.limit(1001, 1830, 1100), 1830);
    // A shorter own window stays the limit.
    assert.equal(h.limit(1000, 60, 1100), 60);
  });

  it('a window that recorded nothing bounds nothing; one still recording in flight after it was replaced does', () => {
    const h = new DpopWindowHistory({ horizon: 3660 });
    const old = h.open(90);
    h.retire(old);
    assert.equal(h.limit(1000, 1830, 1100), 1830);
    // A request in flight at the reload: the replaced verifier records a proof after it.
    h.record(old, 1005);
    assert.equal(h.limit(1005, 1830, 1100), 90);
  });

  it('past maxEntries the oldest windows merge into one as strict as both', () => {
    const h = new DpopWindowHistory({ horizon: 3660, maxEntries: 2 });
    const windows = [
      [60, 1000],
      [3000, 2000],
      [600, 1500],
    ] as const;
    for (const [retention, lastIat] of windows) {
      const w = h.open(retention);
      h.record(w, lastIat);
      h.retire(w);
    }
    // The first two merged: retention 60 up to iat 2000.
    assert.equal(h.limit(1999, 3600, 2100), 60);
    assert.equal(h.limit(2001, 3600, 2100), 3600);
  });

  it('a window whose last proof is older than the horizon is pruned: no verifier accepts such a proof', () => {
    const h = new DpopWindowHistory({ horizon: 100 });
    const w = h.open(10);
    h.record(w, 1000);
    h.retire(w);
    assert.equal(h.limit(1000, 100, 1100), 10);
    assert.equal(h.limit(1000, 100, 1101), 100);
    // Pruned: even a proof of that iat is no longer bounded by it (its own window refuses it).
    assert.equal(h.limit(900, 100, 1101), 100);
    // Its verifier, replaced but with a request in flight, records a proof: it counts again.
    h.record(w, 1095);
    assert.equal(h.limit(1090, 100, 1101), 10);
  });
});
