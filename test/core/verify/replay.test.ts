/**
 * The in-memory replay cache: a jti is refused while remembered, a full cache never forgets a live
 * entry early (fail closed), a cache kept full is swept at most once a second, and one owner (a
 * DPoP proof key) holds at most its share of it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryReplayCache, replayShare } from '../../../src/core/verify/replay.ts';

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
    assert.equal(cache.use('d', 100), 'full');
    assert.equal(cache.use('a', 100), false, 'a remembered key is still refused');
    assert.equal(cache.size, 3);
  });

  it('attack: a cache kept full costs one sweep a second, not one per proof', () => {
    let ms = 200;
    const cache = new MemoryReplayCache({ maxEntries: 3, clock: () => ms });
    for (const k of ['a', 'b', 'c']) cache.use(k, 0.5);
    assert.equal(cache.use('d', 5), 'full', 'swept at 0.2 s: nothing had expired');
    ms = 700;
    assert.equal(cache.use('d', 5), 'full', 'everything expired at 0.5 s, but the next sweep is not due before 1.2 s');
    assert.equal(cache.size, 3);
    ms = 1300;
    assert.equal(cache.use('d', 5), true, 'swept at 1.3 s');
    assert.equal(cache.size, 1);
  });

  it('share of one owner: max(1000, maxEntries / 16), at most the whole cache', () => {
    assert.equal(replayShare(100_000), 6250);
    assert.equal(replayShare(32_000), 2000);
    assert.equal(replayShare(10_000), 1000);
    assert.equal(replayShare(500), 500);
  });

  it('attack: one proof key filling the cache: its own further entries are refused, other keys are still recorded', () => {
    let ms = 0;
    const cache = new MemoryReplayCache({ maxEntries: 32_000, clock: () => ms });
    for (let i = 0; i < 2000; i++) assert.equal(cache.use(`a:${i}`, 100, 'a'), true, `entry ${i} of a`);
    assert.equal(cache.use('a:more', 100, 'a'), 'owner_full');
    assert.equal(cache.use('a:0', 100, 'a'), false, 'a replay is still a replay, not a full share');
    assert.equal(cache.use('b:0', 100, 'b'), true, 'another key is still recorded');
    assert.equal(cache.use('unowned', 100), true, 'so is an entry without owner');
    assert.equal(cache.size, 2002);
    // The share frees as the owner's entries expire and are swept (at most once a second).
    ms = 101_000;
    assert.equal(cache.use('a:more', 200, 'a'), true);
    assert.equal(cache.size, 1, 'the expired entries were swept');
    for (let i = 1; i < 2000; i++) assert.equal(cache.use(`a:again:${i}`, 200, 'a'), true, `entry ${i} of a after expiry`);
    assert.equal(cache.use('a:over', 200, 'a'), 'owner_full', 'the count followed the sweep: a full share again');
  });

  it('an owner full share is swept at most once a second, whether or not the cache is full', () => {
    let ms = 0;
    const cache = new MemoryReplayCache({ maxEntries: 32_000, clock: () => ms });
    for (let i = 0; i < 2000; i++) cache.use(`a:${i}`, i < 1000 ? 0.5 : 100, 'a');
    assert.equal(cache.use('a:x', 100, 'a'), 'owner_full', 'swept at 0 s: nothing had expired');
    ms = 700;
    assert.equal(cache.use('a:x', 100, 'a'), 'owner_full', 'half expired at 0.5 s, but the next sweep is not due before 1 s');
    ms = 1000;
    assert.equal(cache.use('a:x', 100, 'a'), true);
    assert.equal(cache.size, 1001);
  });

  it('a key recorded again after it expired is counted once for its owner', () => {
    let ms = 0;
    const cache = new MemoryReplayCache({ maxEntries: 16_000, clock: () => ms });
    for (let i = 0; i < 500; i++) cache.use(`a:${i}`, 1, 'a');
    ms = 2000;
    // Neither the cache nor the share is full, so nothing is swept: each entry is replaced in place.
    for (let i = 0; i < 500; i++) assert.equal(cache.use(`a:${i}`, 100, 'a'), true);
    assert.equal(cache.size, 500);
    for (let i = 0; i < 500; i++) assert.equal(cache.use(`a:new:${i}`, 100, 'a'), true, `new entry ${i}: the replaced ones counted twice`);
    assert.equal(cache.use('a:x', 100, 'a'), 'owner_full');
    ms = 101_000;
    assert.equal(cache.use('a:x', 200, 'a'), true, 'every entry swept: none left counted');
    assert.equal(cache.size, 1);
  });

  it('resize: the share follows the new bound', () => {
    const cache = new MemoryReplayCache({ maxEntries: 16_000, clock: () => 0 });
    for (let i = 0; i < 1000; i++) cache.use(`a:${i}`, 100, 'a');
    assert.equal(cache.use('a:x', 100, 'a'), 'owner_full');
    cache.resize(32_000);
    assert.equal(cache.use('a:x', 100, 'a'), true);
    cache.resize(1000);
    assert.equal(cache.use('b:x', 100, 'b'), 'full');
  });
});
