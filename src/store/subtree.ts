/**
 * The subtree of grants as SQL, the same text in SQLite and PostgreSQL.
 *
 * @module
 */

/**
 * A `WITH RECURSIVE sub(id)` of the seed grants and their descendants, by parent links. UNION (not
 * UNION ALL) removes duplicates when several seeds share a subtree. `seed` selects the seed ids,
 * in the caller's placeholders.
 */
export const SUBTREE = (seed: string): string => `
  WITH RECURSIVE sub(id) AS (
    ${seed}
    UNION
    SELECT g.id FROM grants g JOIN sub ON g.parent_id = sub.id
  )`;
