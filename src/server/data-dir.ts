/**
 * The data directory's own safety: it holds the SQLite store (sealed signing keys, clients,
 * grants), `master.key` and `secrets.env`, so another local user who may write to it can replace
 * any of them.
 *
 * @module
 */
import { statSync } from 'node:fs';
import { dirname } from 'node:path';

/** The closed union of {@link DataDirError} codes. */
export const DATA_DIR_ERROR_CODES = ['data_dir_unsafe'] as const;
/**
 * Why a data directory (or the directory of `store.sqlite.path`) was refused: `data_dir_unsafe`
 * (another user's, or writable by other users).
 */
export type DataDirErrorCode = (typeof DATA_DIR_ERROR_CODES)[number];

/**
 * A data directory refused by {@link checkDataDir}, with a stable {@link DataDirErrorCode}; the
 * message is one line naming the directory, what is wrong and the command that fixes it.
 *
 * @example
 * ```ts
 * import { DataDirError, ensureDataDir } from 'tessera/token-service';
 *
 * try {
 *   ensureDataDir('.tessera');
 * } catch (e) {
 *   if (e instanceof DataDirError) console.error(e.message); // … run chmod 700 .tessera
 * }
 * ```
 */
export class DataDirError extends Error {
  override readonly name = 'DataDirError';
  readonly code: DataDirErrorCode;

  constructor(code: DataDirErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** A path as written in a shell command: as it is when it needs no quoting, else in single quotes. */
function shellWord(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", `'\\''`)}'`;
}

/**
 * Refuse an existing data directory other local users could change, by OpenSSH's StrictModes rule
 * for `~/.ssh`: it must belong to the user Tessera runs as (or to root) and be writable by its owner
 * alone. Reading it gives nothing away: every file Tessera writes there is 0600. A sticky bit does
 * not make a writable one safe: others could still create the files Tessera has not written yet
 * (`master.key`, `tessera.db-wal`). Container volumes
 * whose mount point cannot be changed (a Kubernetes `fsGroup` volume is group-writable) take a
 * subdirectory as `data_dir`, which Tessera creates with 0700, as PostgreSQL's images do with
 * `PGDATA`. Not on Windows, which has no POSIX modes; a path that is not a directory is left to the
 * code that uses it.
 */
export function checkDataDir(dataDir: string): void {
  checkDirectory(dataDir, `data directory ${dataDir}`, '');
}

/**
 * Refuse a SQLite database (`store.sqlite.path`) in a directory other local users could change, by
 * the rule of {@link checkDataDir}: whoever may write to the directory may replace the database
 * (sealed signing keys, clients, grants) or create its `-wal` and `-shm` files first. For a path
 * outside the data directory, which {@link checkDataDir} does not see; a directory that does not
 * exist yet is left to the code that opens the database.
 *
 * @throws {DataDirError} `data_dir_unsafe`, its message naming `store.sqlite.path`, the path and
 *   its directory.
 */
export function checkStoreDir(databasePath: string): void {
  const dir = dirname(databasePath);
  checkDirectory(
    dir,
    `store.sqlite.path ${databasePath}: its directory ${dir}`,
    ', or put the database in a directory only its owner can write to',
  );
}

function checkDirectory(dir: string, subject: string, alternative: string): void {
  if (process.platform === 'win32') return;
  const st = statSync(dir);
  if (!st.isDirectory()) return;
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw new DataDirError(
      'data_dir_unsafe',
      `${subject} belongs to uid ${st.uid}, not to the user Tessera runs as (${uid}); run chown ${uid} ${shellWord(dir)}${alternative}`,
    );
  }
  const mode = st.mode & 0o7777;
  if ((mode & 0o022) !== 0) {
    throw new DataDirError(
      'data_dir_unsafe',
      `${subject} is writable by other users (mode ${mode.toString(8).padStart(4, '0')}); run chmod 700 ${shellWord(dir)}${alternative}`,
    );
  }
}
