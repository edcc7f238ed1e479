/**
 * CLI output conventions: `--json` prints one JSON document on stdout; failures print one line on
 * stderr (`tessera: <reason>`) and exit non-zero. Nothing secret is ever printed unless a command
 * exists to hand a secret out once (client secrets at creation).
 */
import { ConfigError } from '../core/errors.ts';
import { StoreUnavailableError } from '../store/contract.ts';

/** An expected failure: printed as one line, exit code 1 (or `exitCode`). */
export class CliError extends Error {
  override readonly name = 'CliError';
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Report an error the way every command does, and set the exit code. */
export function reportError(error: unknown): void {
  if (error instanceof CliError) {
    process.stderr.write(`tessera: ${error.message}\n`);
    process.exitCode = error.exitCode;
  } else if (error instanceof StoreUnavailableError) {
    // Expected when the database is down: the message names the store and the reason, nothing else.
    process.stderr.write(`tessera: ${error.message}\n`);
    process.exitCode = 1;
  } else if (error instanceof ConfigError) {
    process.stderr.write(`tessera: ${error.message}\n`);
    process.exitCode = 2;
  } else if (error && typeof error === 'object' && 'code' in error && (error as { code?: unknown }).code === 'commander.helpDisplayed') {
    process.exitCode = 0;
  } else {
    process.stderr.write(`tessera: unexpected error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
