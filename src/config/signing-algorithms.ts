/**
 * The algorithms the token service can generate signing keys for: their own module, free of the
 * configuration schema, so that the CLI's help (`tessera init --help`, `keys rotate --help`) names
 * them without loading it.
 */

/** Algorithms `tessera init` and `tessera keys rotate` can generate signing keys for. */
export const SIGNING_ALGORITHMS = ['ES256', 'EdDSA', 'RS256'] as const;

/** An algorithm the token service signs with (`token_service.keys.algorithm`). */
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];
