/**
 * The in-memory replay cache: a jti is refused while remembered, a full cache never forgets a live
 * entry early (fail closed), and a cache kept full is swept at most once a second.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryReplayCache } from '../../../src/core/verify/replay.ts';

describe('MemoryReplayCache', () => {
  it('refuses a key while it is remembered and accepts it once it has expired', () => {
    let ms = 0;
    const cache = new MemoryReplayCache({ clock: () => ms });
    assert.equal(cache.use('k', 10), true);
    assert.equal(cache.use('k', 10), false);
    ms = 10_500;
    assert.equal(cache.use('k', 20), true);
  });

  it('full of live entries: refuses new keys rather than forget one early', () => {
    const cache = new MemoryReplayCache({ maxEntries: 3, clock: () => 0 });
    for (const k of ['a', 'b', 'c']) assert.equal(cache.use(k, 100), true);
    assert.equal(cache.use('d', 100), false);
    assert.equal(cache.use('a', 100), false, 'a remembered key is still refused');
    assert.equal(cache.size, 3);
  });

  it('attack: a cache kept full costs one sweep a second, not one per proof', () => {
    let ms = 200;
    const cache = new MemoryReplayCache({ maxEntries: 3, clock: () => ms });
    for (const k of ['a', 'b', 'c']) cache.use(k, 0.5);
    assert.equal(cache.use('d', 5), false, 'swept at 0.2 s: nothing had expired');
    ms = 700;
    assert.equal(cache.use('d', 5), false, 'everything expired at 0.5 s, but the next sweep is not due before 1.2 s');
    assert.equal(cache.size, 3);
    ms = 1300;
    assert.equal(cache.use('d', 5), true, 'swept at 1.3 s');
    assert.equal(cache.size, 1);
  });
});
