/**
 * The `tessera` command run as a user runs it, for the CLI tests: {@link runTessera} in a
 * directory, and {@link cliDirs}, a directory of its own for each test, so that no test reads what
 * another one left (each passes alone, and in any order).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach } from 'node:test';

export const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Node's compile cache (NODE_COMPILE_CACHE) for this test process's runs of the command: a run
 * loads the modules compiled (their types stripped) by an earlier one instead of compiling them
 * again, about half the CPU time of a short command. Node checks each entry against the source it
 * read. One directory per test process, removed when it exits: no file shared with another test file.
 */
let compileCache: string | undefined;
function compileCacheDir(): string {
  if (compileCache === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-test-compile-cache-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    compileCache = dir;
  }
  return compileCache;
}

/**
 * `tessera ...args` in `cwd`, without TESSERA_MASTER_KEY (the master key is the data directory's),
 * `input` on its stdin, `env` over the test's environment.
 */
export function runTessera(cwd: string, args: readonly string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Run {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    cwd,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    ...(options.input !== undefined ? { input: options.input } : {}),
    env: { ...process.env, TESSERA_MASTER_KEY: '', NODE_COMPILE_CACHE: compileCacheDir(), ...options.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `from`'s tree into `to` (created), every file's and directory's mode kept (0700, 0600). */
function copyTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  chmodSync(to, statSync(from).mode & 0o7777);
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = join(from, entry.name);
    if (entry.isDirectory()) copyTree(source, join(to, entry.name));
    else copyFileSync(source, join(to, entry.name));
  }
}

export interface CliDirs {
  /**
   * A new directory for this test (removed after it) where `tessera init` has run, then each
   * command of `setup` (each must exit 0). What a setup leaves is made once per test file and
   * copied: a test pays for a `tessera init` and its setup commands only the first time.
   */
  fresh(...setup: readonly (readonly string[])[]): string;
}

/** Directories for the tests of one file (call it at the top of the file), named `prefix…`. */
export function cliDirs(prefix: string): CliDirs {
  const templates = new Map<string, string>();
  let made: string[] = [];
  const template = (setup: readonly (readonly string[])[]): string => {
    const key = JSON.stringify(setup);
    let dir = templates.get(key);
    if (dir !== undefined) return dir;
    dir = mkdtempSync(join(tmpdir(), `${prefix}template-`));
    templates.set(key, dir);
    if (setup.length === 0) {
      const r = runTessera(dir, ['init']);
      assert.equal(r.code, 0, r.stderr);
    } else {
      copyTree(template([]), dir);
      for (const args of setup) {
        const r = runTessera(dir, args);
        assert.equal(r.code, 0, `setup: tessera ${args.join(' ')}: ${r.stderr}`);
      }
    }
    return dir;
  };
  afterEach(() => {
    for (const dir of made) rmSync(dir, { recursive: true, force: true });
    made = [];
  });
  after(() => {
    for (const dir of templates.values()) rmSync(dir, { recursive: true, force: true });
  });
  return {
    fresh(...setup) {
      const dir = mkdtempSync(join(tmpdir(), prefix));
      made.push(dir);
      copyTree(template(setup), dir);
      return dir;
    },
  };
}
