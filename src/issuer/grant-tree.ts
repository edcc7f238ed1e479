// Its own module, so that `tessera grants tree --help` states the limit without loading the token service.

/**
 * The most grants a grant tree answer (`tessera grants tree`, `GET /oauth2/admin/grants/<id>`)
 * holds in its subtree, and in its ancestors: a delegation tree can grow without bound, and the
 * answer is read and serialized whole.
 */
export const GRANT_TREE_MAX_NODES = 10_000;
