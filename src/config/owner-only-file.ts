/**
 * Reading a secret file kept beside the store (`master.key`, `secrets.env`): opened without
 * following a symlink, and its type, owner and mode checked on the descriptor that is then read, so
 * the file checked is the file read (a check by name, then an open by name, lets whoever renames a
 * symlink into place between the two hand over a key of their choice).
 *
 * @module
 */
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';

// O_NONBLOCK: opening a FIFO put in the file's place returns at once (and is then refused as not a
// regular file) instead of waiting for a writer. Neither flag exists on Windows, which has no modes.
const FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/**
 * The text of `file`, which must be a regular file (not a symlink), of the user Tessera runs as and
 * readable by nobody else. `refuse` makes the error thrown for a file that is not; an error opening
 * or reading it is thrown as it comes (its `code` set).
 */
export function readOwnerOnlyFile(file: string, refuse: (message: string) => Error): string {
  let fd: number;
  try {
    fd = openSync(file, FLAGS);
  } catch (e) {
    // ELOOP: the last component is a symlink (O_NOFOLLOW); some systems say EMLINK or EFTYPE.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'EMLINK' || code === 'EFTYPE')
      throw refuse(`${file} must be a regular file, not a symlink or directory`);
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw refuse(`${file} must be a regular file, not a symlink or directory`);
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) {
      throw refuse(`${file} belongs to uid ${st.uid}, not to the user Tessera runs as (${uid}); chown it`);
    }
    const mode = st.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw refuse(`${file} is readable by others (mode ${mode.toString(8)}); run chmod 600 ${file}`);
    }
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}
