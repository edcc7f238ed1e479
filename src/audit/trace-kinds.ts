/**
 * What `tessera trace` looks an id up as: its own module, so that the command's definition (its
 * `--kind` choices) does not load the trace builder.
 */

/** What an id is looked up as. */
export const TRACE_KINDS = ['request', 'jti', 'grant', 'token-hash'] as const;
export type TraceKind = (typeof TRACE_KINDS)[number];
