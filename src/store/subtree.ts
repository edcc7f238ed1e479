/**
 * The subtree of grants as SQL, the same text in SQLite and PostgreSQL.
 *
 * @module
 */

/**
 * A `WITH RECURSIVE sub(id)` of the seed grants and what derives from them: their descendants by
 * parent links, and the grants exchanged with an actor token of any of those (`actor_grant_id`,
 * schema 23), with theirs, to the closure. UNION (not UNION ALL) removes duplicates when several
 * seeds share a subtree or a grant is reached both ways, and so ends the recursion whatever the
 * links (each grant is added once; links only point to older grants anyway). One recursive
 * reference (PostgreSQL allows no more), joined on either link: each side an index lookup
 * (grants_parent, grants_actor_grant). `seed` selects the seed ids, in the caller's placeholders.
 */
export const SUBTREE = (seed: string): string => `
  WITH RECURSIVE sub(id) AS (
    ${seed}
    UNION
    SELECT g.id FROM grants g JOIN sub ON g.parent_id = sub.id OR g.actor_grant_id = sub.id
  )`;
