import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenBucketLimiter } from '../../src/gateway/ratelimit.ts';

describe('token bucket', () => {
  it('allows a burst, then refuses with the wait until the next token, then refills', () => {
    let now = 1_000_000;
    const l = new TokenBucketLimiter({ rate: 2, burst: 3, maxKeys: 10, clock: () => now });
    assert.deepEqual([l.take('a'), l.take('a'), l.take('a')], [0, 0, 0]);
    assert.equal(l.take('a'), 1);
    assert.equal(l.take('b'), 0, 'keys are independent');
    now += 500;
    assert.equal(l.take('a'), 0);
    assert.equal(l.take('a'), 1);
  });
  it('rounds slow refills up to whole seconds', () => {
    let now = 0;
    const l = new TokenBucketLimiter({ rate: 0.1, burst: 1, maxKeys: 10, clock: () => now });
    assert.equal(l.take('a'), 0);
    assert.equal(l.take('a'), 10);
    now += 10_000;
    assert.equal(l.take('a'), 0);
  });
  it('keeps at most maxKeys buckets', () => {
    const l = new TokenBucketLimiter({ rate: 1, burst: 1, maxKeys: 2, clock: () => 0 });
    for (const k of ['a', 'b', 'c']) l.take(k);
    assert.equal(l.size, 2);
  });
});
