import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoundedMap } from '../../../src/core/verify/bounded-map.ts';

describe('BoundedMap', () => {
  it('evicts the oldest insertion first; updates keep their place', () => {
    const m = new BoundedMap<string, number>(3);
    m.set('a', 1);
    m.set('b', 2);
    m.set('c', 3);
    m.set('a', 10); // update, not a new insertion
    m.set('d', 4); // evicts a (oldest insertion)
    assert.deepEqual(
      [...m.entries()],
      [
        ['b', 2],
        ['c', 3],
        ['d', 4],
      ],
    );
    m.set('e', 5);
    assert.equal(m.has('b'), false);
    assert.equal(m.size, 3);
  });

  it('never holds more than its bound and keeps the latest insertions, under churn with deletions', () => {
    const max = 64;
    const m = new BoundedMap<number, number>(max);
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const inserted: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      const k = Math.floor(rand() * 500);
      if (rand() < 0.1) m.delete(k);
      else if (!m.has(k)) {
        m.set(k, i);
        inserted.push(k);
        assert.equal(m.get(k), i);
      }
      assert.ok(m.size <= max);
    }
    // The most recent insertion is always present; deleting and re-setting a key is safe.
    const last = inserted.at(-1) as number;
    assert.equal(m.has(last), true);
    m.delete(last);
    m.set(last, -1);
    assert.equal(m.get(last), -1);
  });

  it('never answers from its remembered lookup after a change', () => {
    const m = new BoundedMap<string, number>(2);
    const k = (s: string) => `${s}`.split('').join(''); // equal strings, distinct objects
    assert.equal(m.get(k('a')), undefined);
    m.set('a', 1);
    assert.equal(m.get(k('a')), 1);
    assert.equal(m.get(k('a')), 1);
    m.set('a', 2);
    assert.equal(m.get(k('a')), 2);
    m.set('b', 3);
    m.set('c', 4); // evicts a
    assert.equal(m.get(k('a')), undefined);
    assert.equal(m.get(k('c')), 4);
    m.delete('c');
    assert.equal(m.get(k('c')), undefined);
    m.set('d', 5);
    assert.equal(m.get(k('d')), 5);
    m.clear();
    assert.equal(m.get(k('d')), undefined);
  });
});
