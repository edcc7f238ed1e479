/**
 * Temporary files of the writers that put a file in place whole (`<file>.<pid>.tmp`, renamed or
 * linked over `<file>`): one left by a process killed mid-write (`kill -9`, a power cut) carries
 * that process's id, so no later run would ever write, or remove, that name. Some hold secrets
 * (secrets.env, a demo client's secret), owner-only, but a secret on disk no one knows of is one
 * no rotation reaches.
 *
 * @module
 */
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** The temporary file this process writes `file` through. */
export function tempFileFor(file: string): string {
  return `${file}.${process.pid}.tmp`;
}

/** Is a process of this id running (one of another user answers EPERM: running)? */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove the temporary files of `file` ({@link tempFileFor}) left by processes no longer running;
 * those of a running process (another `tessera init` writing now) are left alone. Best effort: a
 * directory that cannot be read, or a name that cannot be removed, is left as it is.
 */
export function removeStaleTemps(file: string): void {
  const dir = dirname(file);
  const prefix = `${basename(file)}.`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const id = name.slice(prefix.length, -'.tmp'.length);
    if (!/^[1-9][0-9]{0,9}$/.test(id)) continue;
    const pid = Number(id);
    if (pid === process.pid || running(pid)) continue;
    const path = join(dir, name);
    try {
      if (lstatSync(path).isFile()) rmSync(path, { force: true });
    } catch {
      // Gone meanwhile, or not ours to remove: left.
    }
  }
}
