/**
 * A size-bounded map evicting in insertion order (FIFO). Hits do not reorder (no per-hit write),
 * which keeps lookups cheap; under churn the oldest entries go first.
 *
 * Insertion order is kept in a ring of keys beside the `Map` rather than read back with
 * `map.keys().next()`: V8 leaves a deleted entry's slot in the table until the next rehash, and an
 * iterator walks over those slots, so under FIFO churn finding the oldest key cost time in
 * proportion to the entries already evicted. The ring makes each eviction O(1). A key deleted
 * early keeps its ring slot until that slot comes round, so explicit deletions lower the capacity
 * until then, and a key set again after a deletion may be evicted early; either only costs a miss.
 *
 * The last lookup is remembered: hot paths look up the same key many times in a row (a token's
 * cache key on every request that presents it, a client's scope string), and comparing a fresh string
 * with the remembered one is cheaper than hashing it for the `Map`. Every change forgets it.
 */
export class BoundedMap<K, V> {
  readonly #map = new Map<K, V>();
  readonly #ring: (K | undefined)[];
  #next = 0;
  #hasLast = false;
  #lastKey: K | undefined;
  #lastValue: V | undefined;

  constructor(max: number) {
    this.#ring = new Array<K | undefined>(Math.max(1, max)).fill(undefined);
  }

  get(key: K): V | undefined {
    if (this.#hasLast && key === this.#lastKey) return this.#lastValue;
    const value = this.#map.get(key);
    this.#lastKey = key;
    this.#lastValue = value;
    this.#hasLast = true;
    return value;
  }

  set(key: K, value: V): void {
    this.#forget();
    const map = this.#map;
    const size = map.size;
    map.set(key, value);
    if (map.size === size) return; // an update: the key keeps its place
    const ring = this.#ring;
    const i = this.#next;
    const oldest = ring[i];
    if (oldest !== undefined && oldest !== key) map.delete(oldest);
    ring[i] = key;
    this.#next = i + 1 === ring.length ? 0 : i + 1;
  }

  delete(key: K): boolean {
    this.#forget();
    return this.#map.delete(key);
  }

  has(key: K): boolean {
    return this.#map.has(key);
  }

  clear(): void {
    this.#forget();
    this.#map.clear();
    this.#ring.fill(undefined);
    this.#next = 0;
  }

  #forget(): void {
    this.#hasLast = false;
    this.#lastKey = undefined;
    this.#lastValue = undefined;
  }

  get size(): number {
    return this.#map.size;
  }

  entries(): IterableIterator<[K, V]> {
    return this.#map.entries();
  }
}
