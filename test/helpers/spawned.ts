/**
 * A child process whose stdout and stderr are collected as text while it runs: for tests that
 * watch a long-running `tessera` command (serve, start, audit tail -f) and read what it has
 * printed so far.
 */
import { type ChildProcessByStdio, type SpawnOptions, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

export interface Spawned {
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  /** Everything written to stdout so far. */
  readonly out: string;
  /** Everything written to stderr so far. */
  readonly err: string;
  /** Resolves with the exit code and signal once the process has exited. */
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
}

/** Spawn `command` with stdin ignored and both outputs collected. */
export function spawnCollecting(command: string, args: readonly string[], options: Omit<SpawnOptions, 'stdio'> = {}): Spawned {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] }) as ChildProcessByStdio<null, Readable, Readable>;
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('exit', (code, signal) => resolve([code, signal])),
  );
  return {
    child,
    get out() {
      return out;
    },
    get err() {
      return err;
    },
    exited,
  };
}
