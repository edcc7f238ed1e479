/**
 * The files `tessera scan` reads: the paths given, directories walked recursively (entries in name
 * order), symbolic links followed but each directory and file visited once (so a link loop ends),
 * and each file read as a stream of bounded pieces through a {@link CandidateScanner}. A chain of
 * links longer than the kernel follows (40 on Linux: ELOOP) is resolved here, link by link (up to
 * {@link MAX_LINK_HOPS}), so a long but finite chain has its target scanned. A link whose target
 * lies outside the paths given is not followed (a link to `/` or `/proc/self` planted in a scanned
 * directory would have the whole filesystem walked), and /proc, /sys and /dev are never walked
 * into unless a path in them is given ({@link notFollowed}). What is skipped (binary, over the
 * size cap, unreadable, not a regular file, a loop, a broken link, a link out, a kernel
 * filesystem) is reported as a note.
 *
 * @module
 */
import { constants, type Dirent, type Stats } from 'node:fs';
import { type FileHandle, lstat, open, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, parse, resolve, sep } from 'node:path';
import { type Candidate, CandidateScanner } from './candidates.ts';

/** Why a path was not scanned. */
export type SkipReason = 'binary' | 'too_large' | 'unreadable' | 'not_a_file' | 'loop' | 'broken_link' | 'outside' | 'system';

/** A path that was not scanned, and why. */
export interface ScanNote {
  readonly path: string;
  readonly reason: SkipReason;
  readonly message: string;
}

/** A path given that does not exist (or cannot be looked at). */
export class ScanPathError extends Error {
  override readonly name = 'ScanPathError';
}

export interface ScanOptions {
  /** Files larger than this many bytes are skipped with a note. */
  readonly maxFileSize: number;
  /** Bytes read at a time (default 1 MiB). */
  readonly chunkSize?: number;
  /** Longest candidate (default {@link MAX_CANDIDATE_LENGTH}). */
  readonly maxLength?: number;
  /** Called for every candidate in every file, in order; awaited. */
  readonly onCandidate: (path: string, candidate: Candidate) => Promise<void>;
  readonly onNote: (note: ScanNote) => void;
}

const DEFAULT_CHUNK = 1 << 20;

/** Carries the caller's own failure out of the read loop, which treats its errors as unreadable files. */
class CallerFailure {
  readonly error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}
/** Like grep: a NUL byte in the first block read makes a file binary. */
const BINARY_PROBE = 8192;

function message(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err.code ?? (e instanceof Error ? e.message : String(e));
}

/** Most symbolic links followed to resolve one path the kernel refused with ELOOP. */
export const MAX_LINK_HOPS = 4096;
/** Longest path resolved link by link (Linux's PATH_MAX): links that keep adding to it go round. */
const MAX_RESOLVED_PATH = 4096;

/** The components of `path`, last first (a stack: the next one to resolve is popped). */
const components = (path: string): string[] =>
  path
    .split(sep)
    .filter((c) => c !== '' && c !== '.')
    .reverse();

/**
 * The path `path` names with every symbolic link in it resolved, one component at a time (so the
 * kernel follows none), for a path the kernel refused with ELOOP: a chain longer than it follows
 * may still end at a file. `undefined` when the links go round: the same link reached with the
 * same rest of the path still to resolve, more than {@link MAX_LINK_HOPS} hops, or a path that
 * keeps growing past {@link MAX_RESOLVED_PATH} characters (`a` linked to `a/x`).
 * @throws what `lstat` or `readlink` throws (ENOENT for a chain that ends at nothing).
 */
async function resolveLinks(path: string): Promise<string | undefined> {
  const absolute = resolve(path);
  const rest = components(absolute);
  let done: string = parse(absolute).root;
  const seen = new Set<string>();
  let hops = 0;
  for (let name = rest.pop(); name !== undefined; name = rest.pop()) {
    if (name === '..') {
      done = dirname(done);
      continue;
    }
    const next = join(done, name);
    if (!(await lstat(next)).isSymbolicLink()) {
      done = next;
      continue;
    }
    const key = `${next}\0${rest.join('\0')}`;
    if (seen.has(key) || ++hops > MAX_LINK_HOPS || key.length > MAX_RESOLVED_PATH) return undefined;
    seen.add(key);
    const target = await readlink(next);
    if (isAbsolute(target)) done = parse(target).root;
    rest.push(...components(target));
  }
  return done;
}

/**
 * `stat` of `path`, a chain of links longer than the kernel follows resolved link by link.
 * @returns the stats and the path to open (`path` itself unless it had to be resolved here), or
 *   `undefined` when the links go round with no file at the end.
 * @throws what `stat` throws otherwise.
 */
async function statThroughLinks(path: string): Promise<{ stats: Stats; at: string } | undefined> {
  try {
    return { stats: await stat(path), at: path };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ELOOP') throw e;
    const at = await resolveLinks(path);
    return at === undefined ? undefined : { stats: await stat(at), at };
  }
}

/** Kernel filesystems: endless or blocking files, and links back to `/` (/proc/self/root). */
const SYSTEM_DIRS = ['/proc', '/sys', '/dev'];

/** Whether `path` is `dir` or inside it (both absolute, without links). */
const within = (path: string, dir: string): boolean => path === dir || path.startsWith(dir.endsWith(sep) ? dir : `${dir}${sep}`);

/**
 * Why the file or directory at `real` (its path without links), reached while walking `roots`
 * (the paths given, without links), is not read: `outside` a directory whose real path is in none
 * of the paths given (reached through a link, or swapped for one while scanning: walking on would
 * leave the tree given, `/` or `/proc/self` the whole filesystem); `system` in /proc, /sys or /dev
 * when no path given is in them. A file outside is read: a link to one file (Kubernetes'
 * `/var/log/containers` into `/var/log/pods`) reaches nothing more. `undefined`: read it.
 */
export function notFollowed(real: string, roots: readonly string[], directory: boolean): 'outside' | 'system' | undefined {
  if (directory && !roots.some((r) => within(real, r))) return 'outside';
  const system = SYSTEM_DIRS.find((d) => within(real, d));
  if (system !== undefined && !roots.some((r) => within(r, system) && within(real, r))) return 'system';
  return undefined;
}

const NOT_FOLLOWED = {
  outside: 'a directory out of the paths given (through a symbolic link): not walked into (give its target as a path to scan it)',
  system: 'a kernel filesystem (/proc, /sys, /dev): not walked into unless a path in it is given',
} as const;

/**
 * Look at every path given before anything is read.
 * @throws {ScanPathError} naming the first path that does not exist or cannot be looked at.
 */
export async function checkPaths(paths: readonly string[]): Promise<{ path: string; stats: Stats; at: string; real: string }[]> {
  const roots: { path: string; stats: Stats; at: string; real: string }[] = [];
  for (const path of paths) {
    try {
      const found = await statThroughLinks(path);
      if (found === undefined) throw new ScanPathError(`${path}: a symbolic link loop (links pointing at each other): nothing to read`);
      roots.push({ path, ...found, real: await realpath(found.at) });
    } catch (e) {
      if (e instanceof ScanPathError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new ScanPathError(code === 'ENOENT' ? `${path}: no such file or directory` : `${path}: cannot be read (${message(e)})`);
    }
  }
  return roots;
}

/**
 * Scan `paths`: every given path must exist (checked before anything is read).
 * @returns how many files and bytes were read.
 * @throws {ScanPathError} naming the first path that does not exist.
 */
export async function scanPaths(paths: readonly string[], options: ScanOptions): Promise<{ files: number; bytes: number }> {
  const roots = await checkPaths(paths);
  const reals = roots.map((r) => r.real);
  const seen = new Set<string>();
  const totals = { files: 0, bytes: 0 };
  // `path` is what notes and findings name; `at` is what is opened: the same, except past a chain
  // of links the kernel would not follow (resolved by statThroughLinks). `real` is its path without links.
  const visit = async (path: string, stats: Stats, at: string, real: string): Promise<void> => {
    const id = `${stats.dev}:${stats.ino}`;
    if (stats.isDirectory()) {
      if (seen.has(id)) {
        options.onNote({ path, reason: 'loop', message: 'directory already scanned (a symbolic link loop or a second link to it)' });
        return;
      }
      seen.add(id);
      let entries: Dirent[];
      try {
        // Decided on where `at` leads now, and listed only if it is still the directory looked at:
        // a directory swapped for a link (to `/`) since would otherwise be listed under a real path
        // made up from its name. Node has no openat, so this narrows the race; it cannot close it.
        const now = await realpath(at);
        const skip = now === real ? undefined : notFollowed(now, reals, true);
        if (skip !== undefined) {
          options.onNote({ path, reason: skip, message: NOT_FOLLOWED[skip] });
          return;
        }
        entries = (await readdir(at, { withFileTypes: true })).sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
        const after = await stat(at);
        if (`${after.dev}:${after.ino}` !== id) {
          options.onNote({ path, reason: 'unreadable', message: 'replaced while it was listed: not read' });
          return;
        }
      } catch (e) {
        options.onNote({ path, reason: 'unreadable', message: `cannot list the directory (${message(e)})` });
        return;
      }
      for (const entry of entries) {
        const { name } = entry;
        const child = join(path, name);
        let found: { stats: Stats; at: string } | undefined;
        let childReal = '';
        try {
          found = await statThroughLinks(join(at, name));
          // Whether it is a link is not taken from the listing: the entry may have been swapped since.
          if (found !== undefined) childReal = await realpath(found.at);
        } catch (e) {
          // Listed, then gone: a symbolic link to nothing (or a file removed meanwhile) has nothing to read.
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') {
            options.onNote({ path: child, reason: 'broken_link', message: 'a symbolic link to nothing (or removed while scanning)' });
          } else {
            options.onNote({ path: child, reason: 'unreadable', message: `cannot be read (${message(e)})` });
          }
          continue;
        }
        if (found === undefined) {
          // A link to itself, or links pointing at each other: no file at the end, nothing to read.
          options.onNote({
            path: child,
            reason: 'loop',
            message: 'a symbolic link loop (links pointing at each other): nothing to read',
          });
          continue;
        }
        const skip = notFollowed(childReal, reals, found.stats.isDirectory());
        if (skip !== undefined) {
          options.onNote({ path: child, reason: skip, message: NOT_FOLLOWED[skip] });
          continue;
        }
        await visit(child, found.stats, found.at, childReal);
      }
      return;
    }
    if (!stats.isFile()) {
      options.onNote({ path, reason: 'not_a_file', message: 'not a regular file (a device, socket or pipe)' });
      return;
    }
    // The same file reached twice (through a link) is scanned once.
    if (seen.has(id)) return;
    seen.add(id);
    if (stats.size > options.maxFileSize) {
      options.onNote({ path, reason: 'too_large', message: tooLarge(stats.size, options.maxFileSize) });
      return;
    }
    const read = await scanFile(path, at, options);
    if (read !== undefined) {
      totals.files++;
      totals.bytes += read;
    }
  };
  for (const root of roots) await visit(root.path, root.stats, root.at, root.real);
  return totals;
}

const tooLarge = (size: number, max: number): string => `${size} bytes, over the --max-size of ${max}; raise --max-size to scan it`;

/** Read one file (`at`, named `path`) through a scanner. @returns the bytes read, or `undefined` when it was skipped. */
async function scanFile(path: string, at: string, options: ScanOptions): Promise<number | undefined> {
  let handle: FileHandle;
  try {
    // Non-blocking, and looked at again once open: the file may have been replaced since it was
    // looked at (a FIFO, whose open waits for a writer), or be one that waits for data when read
    // (/proc/kmsg). A regular file's reads ignore O_NONBLOCK.
    handle = await open(at, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    options.onNote({ path, reason: 'unreadable', message: `cannot be read (${message(e)})` });
    return undefined;
  }
  const opened = await handle.stat().catch(() => undefined);
  if (!opened?.isFile()) {
    await handle.close();
    options.onNote({ path, reason: 'not_a_file', message: 'not a regular file (a device, socket or pipe)' });
    return undefined;
  }
  // The size of what was opened, not of what was looked at (a larger file may have replaced it).
  if (opened.size > options.maxFileSize) {
    await handle.close();
    options.onNote({ path, reason: 'too_large', message: tooLarge(opened.size, options.maxFileSize) });
    return undefined;
  }
  const scanner = new CandidateScanner(options.maxLength !== undefined ? { maxLength: options.maxLength } : {});
  const decoder = new TextDecoder('utf-8');
  // One byte past the limit at most (`end` is inclusive): a file that grows while it is read (or
  // one whose size says 0, as in /proc) is not read past --max-size.
  const stream = handle.createReadStream({ highWaterMark: options.chunkSize ?? DEFAULT_CHUNK, end: options.maxFileSize });
  let bytes = 0;
  const found = async (candidates: readonly Candidate[]) => {
    for (const c of candidates) {
      try {
        await options.onCandidate(path, c);
      } catch (e) {
        throw new CallerFailure(e);
      }
    }
  };
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (bytes === 0 && chunk.subarray(0, BINARY_PROBE).includes(0)) {
        options.onNote({ path, reason: 'binary', message: 'binary file (a NUL byte near its start)' });
        return undefined;
      }
      bytes += chunk.length;
      if (bytes > options.maxFileSize) {
        options.onNote({
          path,
          reason: 'too_large',
          message: `grew over the --max-size of ${options.maxFileSize} while it was read; raise --max-size to scan it`,
        });
        return undefined;
      }
      await found(scanner.push(decoder.decode(chunk, { stream: true })));
    }
  } catch (e) {
    if (e instanceof CallerFailure) throw e.error;
    options.onNote({ path, reason: 'unreadable', message: `cannot be read (${message(e)})` });
    return undefined;
  } finally {
    stream.destroy();
  }
  await found(scanner.push(decoder.decode()));
  await found(scanner.end());
  return bytes;
}
