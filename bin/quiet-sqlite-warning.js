// Node 22.13–22.x emit `ExperimentalWarning: SQLite is an experimental feature and might change at
// any time` when `node:sqlite` loads, which the store does for every command, `--help` included.
// The CLI silences that one warning and no other: every other warning (another experimental
// feature, a deprecation, SQLite named in another type or message) reaches process.emitWarning as
// sent. The library leaves it alone: an application embedding Tessera decides about its warnings.

const SQLITE_WARNING = /^SQLite is an experimental feature\b/;

/**
 * Wrap `proc.emitWarning` (default `process`) so that it drops the SQLite ExperimentalWarning.
 *
 * @param {{ emitWarning: (...args: any[]) => void }} [proc]
 */
export function quietSqliteWarning(proc = process) {
  const emit = proc.emitWarning;
  proc.emitWarning = function emitWarning(warning, ...rest) {
    const options = rest[0];
    const type = warning instanceof Error ? warning.name : typeof options === 'string' ? options : options?.type;
    const message = warning instanceof Error ? warning.message : warning;
    if (type === 'ExperimentalWarning' && typeof message === 'string' && SQLITE_WARNING.test(message)) return;
    return emit.call(this, warning, ...rest);
  };
}
