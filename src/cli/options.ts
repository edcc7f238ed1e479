/**
 * The helpers every command's definition uses: `--config` and its file, the option parsers
 * (lifetimes, ports, listen addresses, lists) and the small formatters. Light on purpose: the
 * CLI builds every command's definition for any run (`--help`, `--version`), and what a command
 * runs (the configuration, the store, the token service: context.ts) loads only when it runs.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../config/duration.ts';
import { quoted } from '../core/errors.ts';
import { CliError, refusal } from './output.ts';

export const DEFAULT_CONFIG = 'tessera.yaml';

/** Add `-c, --config <file>` to a command. */
export function withConfig(command: Command): Command {
  return command.option('-c, --config <file>', `configuration file (default $TESSERA_CONFIG or ./${DEFAULT_CONFIG})`);
}

/**
 * The configuration file's absolute path. An empty `--config` or `TESSERA_CONFIG` (an unset
 * variable in a compose file) is refused: resolved, it would name the working directory.
 */
export function configPath(option: string | undefined): string {
  if (option === '') throw new CliError(`--config is empty; name the configuration file (--config ${DEFAULT_CONFIG})`, 2);
  if (option === undefined && process.env.TESSERA_CONFIG === '') {
    throw new CliError(`TESSERA_CONFIG is set but empty; name the configuration file in it, or unset it to use ./${DEFAULT_CONFIG}`, 2);
  }
  return resolve(option ?? process.env.TESSERA_CONFIG ?? DEFAULT_CONFIG);
}

/** Split `a,b c` lists as given to `--scopes` and `--audiences`. */
export function list(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(/[\s,]+/)).filter((v) => v !== '');
}

/** The most stdin may hold for an argument given as `-`: 1 MiB, far more than any token. */
export const MAX_STDIN_BYTES = 1024 * 1024;

/**
 * Read a secret argument, `-` meaning stdin (keeps it out of shell history and `ps`). At most
 * {@link MAX_STDIN_BYTES} are read: more (a log file piped by mistake, `< /dev/zero`) is refused
 * naming `name`, the argument, instead of read until memory runs out.
 */
export async function readArg(value: string, name: string): Promise<string> {
  if (value !== '-') return value;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_STDIN_BYTES) {
      process.stdin.destroy();
      throw refusal(
        'stdin_too_large',
        `${name} -: stdin holds more than ${MAX_STDIN_BYTES / 1024 / 1024} MiB, more than any token; pipe the token alone`,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8').trim();
}

/** Epoch seconds as an ISO time, for human output. */
export function iso(seconds: number | null): string {
  return seconds === null ? '-' : new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * A lifetime option (`--ttl`): whole seconds (`300`) or a duration (`5m`, `1h`), rounded to whole
 * seconds and at least one (a token that expires as it is issued is a mistake, not a request).
 * Refused as `ttl_invalid`, the code an admin write's refusal records (as a registration's `ttl`).
 */
export function ttlArg(flag: string, value: string): number {
  const seconds = parseDuration(/^\d+$/.test(value) ? Number(value) : value);
  if (seconds === undefined || Math.round(seconds) < 1) {
    throw refusal(
      'ttl_invalid',
      `${flag} ${quoted(value)} is not a lifetime; write seconds (300) or a duration (90s, 5m, 1h), at least 1s`,
    );
  }
  return Math.round(seconds);
}

/**
 * A lifetime option within the token service's `max_access_token_ttl`: a longer one is refused
 * naming the flag (`ttl_invalid`), never silently shortened to the maximum.
 */
export function ttlWithin(flag: string, ttl: number, max: number): number {
  if (ttl > max) {
    throw refusal('ttl_invalid', `${flag} ${ttl}s is longer than token_service.max_access_token_ttl (${max}s); ask for at most ${max}s`);
  }
  return ttl;
}

/** Commander parser for a TCP port option. */
export function portArg(flag: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n > 65535) throw new CliError(`${flag} must be a port number (0-65535), not ${quoted(v)}`);
    return n;
  };
}

/**
 * Commander parser for a listen address option (`--host`). An empty value (an unset `"$HOST"`)
 * would reach `listen()` as no host at all, which is every interface: refused, as are whitespace
 * and control characters, which no name or address holds. Listening everywhere is written out.
 */
export function hostArg(flag: string): (v: string) => string {
  return (v) => {
    if (!/^[^\s\p{Cc}]+$/u.test(v)) {
      throw new CliError(
        `${flag} must be a host name or an address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every interface), not ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
}
