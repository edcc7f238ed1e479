/**
 * CLI output conventions: `--json` prints one JSON document on stdout; failures print one line on
 * stderr (`tessera: <reason>`) and exit non-zero. Nothing secret is ever printed unless a command
 * exists to hand a secret out once (client secrets at creation).
 */
import { terminalSafeJson } from '../audit/sinks/jsonl.ts';
import { ConfigError } from '../core/errors.ts';
import { printable } from '../core/printable.ts';
import { DataDirError } from '../server/data-dir.ts';
import { StoreOpenError, StoreUnavailableError } from '../store/contract.ts';

/**
 * An expected failure: printed as one line, exit code 1 (or `exitCode`); with `lines`, one line
 * a problem under it, as a configuration's problems are. A refused admin write names its `reason`,
 * the stable code its `admin.action` deny records, and `detail`, what that event adds.
 */
export class CliError extends Error {
  override readonly name = 'CliError';
  readonly exitCode: number;
  readonly lines: readonly string[];
  readonly reason: string | undefined;
  readonly detail: Readonly<Record<string, string>>;
  constructor(
    message: string,
    exitCode = 1,
    options: { readonly lines?: readonly string[]; readonly reason?: string; readonly detail?: Readonly<Record<string, string>> } = {},
  ) {
    super(message);
    this.exitCode = exitCode;
    this.lines = options.lines ?? [];
    this.reason = options.reason;
    this.detail = options.detail ?? {};
  }
}

/** An admin write refused for `reason` (exit code 1): see {@link CliError}. */
export function refusal(
  reason: string,
  message: string,
  options: { readonly lines?: readonly string[]; readonly detail?: Readonly<Record<string, string>> } = {},
): CliError {
  return new CliError(message, 1, { ...options, reason });
}

/**
 * One line of human output made safe to print: control characters written as escapes (`\n`,
 * `\x1b`, `\u202e`). Values from the audit trail, file names and the like are chosen by others (an
 * MCP tool name by any caller). `--json` needs none of it (JSON escapes controls itself).
 */
export { printable };

/**
 * `--json` output: indented JSON with the characters JSON.stringify leaves raw but a terminal acts
 * on (C1 controls such as U+009B, a CSI; bidi overrides) escaped, as in the audit JSON lines.
 */
export function printJson(value: unknown): void {
  process.stdout.write(`${terminalSafeJson(JSON.stringify(value, null, 2))}\n`);
}

let delivering = 0;

/**
 * Whether a {@link deliver} is under way or failed: stdout's failure is then the caller's to
 * handle (undo what the text was for), not a reason to stop quietly as a closed pipe otherwise is.
 */
export function delivery(): boolean {
  return delivering > 0;
}

/**
 * Write text that must reach the reader (a secret shown this once). Resolves once stdout took it;
 * rejects with stdout's error (`EPIPE`: the reader is gone; `ENOSPC`) so that the caller can undo
 * what the text was the only key to. After a failure stdout stays the caller's.
 */
export async function deliver(text: string): Promise<void> {
  delivering++;
  await new Promise<void>((resolve, reject) => process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
  delivering--;
}

/**
 * Report an error the way every command does, and set the exit code. Messages quote what the
 * operator typed (a client id, a grant id) or what the store holds: control characters are
 * escaped ({@link printable}), so a failure stays one line and cannot rewrite the screen. A
 * configuration error, and a {@link CliError} with `lines`, keeps its one problem a line.
 */
export function reportError(error: unknown): void {
  if (error instanceof CliError) {
    process.stderr.write(`tessera: ${[error.message, ...error.lines.map((l) => `  ${l}`)].map(printable).join('\n')}\n`);
    process.exitCode = error.exitCode;
  } else if (error instanceof StoreUnavailableError || error instanceof StoreOpenError || error instanceof DataDirError) {
    // Expected when the database is down or unusable as it is (a corrupt file, a newer schema, a
    // failed migration), or the data directory is open to other users: the message names the
    // store or the directory and the reason (and the fix), nothing else.
    process.stderr.write(`tessera: ${printable(error.message)}\n`);
    process.exitCode = 1;
  } else if (error instanceof ConfigError) {
    process.stderr.write(`tessera: ${error.message.split('\n').map(printable).join('\n')}\n`);
    process.exitCode = 2;
  } else if (error && typeof error === 'object' && 'code' in error && (error as { code?: unknown }).code === 'commander.helpDisplayed') {
    process.exitCode = 0;
  } else {
    process.stderr.write(`tessera: unexpected error: ${printable(error instanceof Error ? error.message : String(error))}\n`);
    process.exitCode = 1;
  }
}
