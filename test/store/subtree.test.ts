import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SUBTREE } from '../../src/store/subtree.ts';

describe('store subtree SQL', () => {
  it('is, byte for byte, the text both backends wrote themselves before they shared it, with the actor grant link (schema 23) as the only change', () => {
    // The literal each of src/store/sqlite/store.ts and src/store/postgres/store.ts held (4cfb5a0),
    // joined on `actor_grant_id` too since a revoked actor's grant takes what was exchanged with it.
    const before = (seed: string) =>
      `\n  WITH RECURSIVE sub(id) AS (\n    ${seed}\n    UNION\n    SELECT g.id FROM grants g JOIN sub ON g.parent_id = sub.id OR g.actor_grant_id = sub.id\n  )`;
    for (const seed of ['SELECT id FROM grants WHERE id = ?', 'SELECT $1::text', 'SELECT ?']) assert.equal(SUBTREE(seed), before(seed));
  });
});
