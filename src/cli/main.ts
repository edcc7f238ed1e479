/**
 * The `tessera` command line. Each command lives in `commands/<name>.ts` and registers itself on
 * the program; this file only wires them together.
 */
import { Command, CommanderError } from 'commander';
import { registerAudit } from './commands/audit.ts';
import { registerCheck } from './commands/check.ts';
import { registerClients } from './commands/clients.ts';
import { registerGateway } from './commands/gateway.ts';
import { registerGrants } from './commands/grants.ts';
import { registerInit } from './commands/init.ts';
import { registerKeys } from './commands/keys.ts';
import { registerRevoke } from './commands/revoke.ts';
import { registerScan } from './commands/scan.ts';
import { registerServe } from './commands/serve.ts';
import { registerStart } from './commands/start.ts';
import { registerToken } from './commands/token.ts';
import { registerTrace } from './commands/trace.ts';
import { delivery, reportError } from './output.ts';

/**
 * A token hash or request id may start with `-` (base64url has it), and then reads as an option:
 * say how to pass it, rather than only that no such option exists.
 */
function dashHint(text: string): string {
  return /unknown option '-[A-Za-z0-9_][A-Za-z0-9_-]{2,}'/.test(text) ? "; a value that starts with '-' goes after --" : '';
}

/**
 * Refuse an option that takes one value when it is given more than once, in `command` and every
 * subcommand: commander keeps the last, so `revoke --grant A --grant B` would revoke B alone and
 * say nothing of A. List options (`--scopes a --scopes b`) add up, and flags may repeat.
 */
function refuseRepeatedOptions(command: Command): void {
  for (const option of command.options) {
    if (option.variadic || (!option.required && !option.optional)) continue;
    let seen = false;
    command.on(`option:${option.name()}`, () => {
      if (seen) command.error(`option '${option.flags}' given more than once; give it once`);
      seen = true;
    });
  }
  for (const sub of command.commands) refuseRepeatedOptions(sub);
}

/**
 * A command group run without a subcommand (`tessera clients`, `tessera` alone) prints its help on
 * stdout and exits 0, as `kubectl config` or `gh pr` do: asking what a group holds is not a
 * mistake. Commander's default is the help on stderr with exit 1. A word that names no
 * subcommand (`tessera clients lst`) stays an error.
 */
function helpWithoutSubcommand(command: Command): void {
  for (const sub of command.commands) helpWithoutSubcommand(sub);
  if (command.commands.length === 0) return;
  // An action would drop the implicit `help [command]` subcommand: kept.
  command.helpCommand(true);
  command.allowExcessArguments(true).action((_opts: unknown, self: Command) => {
    // Commander marks unknownCommand private, but it is the error (with its "Did you mean")
    // that the group gives without an action.
    if (self.args.length > 0) return (self as unknown as { unknownCommand(): never }).unknownCommand();
    self.outputHelp();
  });
}

export function buildProgram(): Command {
  const program = new Command('tessera')
    .description('Short-lived, scoped, sender-bound and attributable bearer tokens for AI agents and the APIs they call.')
    .version('0.1.0')
    // Usage errors follow every other failure: one line, `tessera: <reason>` (subcommands inherit this).
    .configureOutput({
      outputError: (text, write) =>
        write(
          `tessera: ${text
            .replace(/^error: /, '')
            .trim()
            .replace(/\s*\n\s*/g, ' ')}${dashHint(text)} (run with --help for usage)\n`,
        ),
    })
    .exitOverride();
  registerStart(program);
  registerInit(program);
  registerServe(program);
  registerClients(program);
  registerKeys(program);
  registerToken(program);
  registerRevoke(program);
  registerGrants(program);
  registerScan(program);
  registerGateway(program);
  registerCheck(program);
  registerAudit(program);
  registerTrace(program);
  refuseRepeatedOptions(program);
  helpWithoutSubcommand(program);
  return program;
}

export async function main(argv: readonly string[]): Promise<void> {
  try {
    await buildProgram().parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode;
      return;
    }
    reportError(error);
  }
}

/** Run as the `tessera` process (`bin/tessera.js`, or this file as the entry module). */
export async function run(argv: readonly string[]): Promise<void> {
  // `tessera audit tail | head`: a reader that has seen enough closes the pipe. Stop quietly, as
  // other command-line tools do, instead of dying on EPIPE with a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    // A secret shown once that did not get through: the command undoes what it was for and fails.
    if (delivery()) return;
    if (e.code === 'EPIPE') process.exit(0);
    reportError(e);
    process.exit();
  });
  await main(argv);
}

if (import.meta.main) await run(process.argv.slice(2));
