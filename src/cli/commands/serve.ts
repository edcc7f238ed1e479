/**
 * `tessera serve`: the token service and, when `tessera.yaml` has a `gateway` section, the gateway,
 * on one listener. The token service answers its own paths (everything under `/oauth2/`, including
 * the admin API at `/oauth2/admin/*`, plus `/.well-known/jwks.json` and
 * `/.well-known/oauth-authorization-server`); every other request goes to the gateway.
 *
 * Sharing the process is what makes revocation immediate at the edge: the gateway's verifiers read
 * the token service's signing keys directly and consult its revocation list, which every
 * in-process revocation updates before it answers (revocations made by the CLI or other instances
 * are pushed by PostgreSQL as they commit, and the store is polled every
 * `token_service.sync_interval`, SQLite's only way).
 */
import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { TesseraConfig } from '../../config/schema.ts';
import type { ServedGateway } from '../../gateway/serve.ts';
import type { TokenService } from '../../issuer/service.ts';
import { hostArg, portArg, withConfig } from '../options.ts';
import { CliError } from '../output.ts';

export interface RunningServer {
  readonly url: string;
  readonly service: TokenService;
  readonly config: TesseraConfig;
  /** The gateway, when the configuration has one. */
  readonly gateway: ServedGateway | undefined;
  /** The logger of every operational line, the token service's and the gateway's ({@link StartOptions.logger}). */
  readonly logger: Logger;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly config?: string;
  readonly port?: number;
  readonly host?: string;
  /** Reload on SIGHUP, drain and exit on SIGTERM/SIGINT. */
  readonly signals?: boolean;
  /** What to do about a port that is taken or forbidden (default: set server.port, or --port). */
  readonly portAdvice?: string;
  /**
   * The logger of every operational line, the token service's (`component: token_service`) and the
   * gateway's, one shape on one stream (default: the gateway's `defaultLogger()`, JSON lines on
   * stdout).
   */
  readonly logger?: Logger;
  /** Runs after every accepted reload of the gateway's configuration. */
  readonly onReload?: (config: TesseraConfig) => void;
  /**
   * Without a gateway section: how long, in milliseconds, the whole close may take (default 10 s, as
   * `gateway.drain_timeout`): in-flight token-service requests until then, then their connections
   * are cut, and the audit events what is left of it (at least 1 s). With one,
   * `gateway.drain_timeout` bounds all of it.
   */
  readonly drainTimeout?: number;
}

/** A taken or forbidden port as one clear line. */
export function listenError(e: unknown, host: string, port: number, advice = 'set server.port (or --port)'): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EADDRINUSE') return new CliError(`${host}:${port} is already in use; stop what listens there, or ${advice}`);
  if (code === 'EACCES') return new CliError(`not allowed to listen on ${host}:${port}; use a port above 1023: ${advice}`);
  if (code === 'EADDRNOTAVAIL') return new CliError(`${host} is not an address of this machine; fix server.host (or --host)`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME') {
    return new CliError(`${host} is not a name this machine resolves to one of its addresses; fix server.host (or --host)`);
  }
  return e;
}

/**
 * Start the token service (and the gateway, when configured) from a configuration file. What it
 * runs loads here, not with the command's definition (serve-impl.ts).
 */
export async function startServer(options: StartOptions): Promise<RunningServer> {
  const impl = await import('./serve-impl.ts');
  return impl.startServer(options);
}

export function registerServe(program: Command): void {
  withConfig(program.command('serve'))
    .description(
      'Run the token service (OAuth endpoints, JWKS, metadata, admin API) and, when tessera.yaml has a gateway section, the gateway, on one listener.',
    )
    .option('--port <port>', 'override server.port', portArg('--port'))
    .option('--host <host>', 'override server.host', hostArg('--host'))
    .action(async (opts: { config?: string; port?: number; host?: string }) => {
      const running = await startServer({ ...opts, signals: true });
      running.logger.info(
        {
          event: 'listening',
          url: running.url,
          issuer: running.service.issuer,
          gateway_routes: running.gateway?.gateway.state.routes.length ?? 0,
        },
        'listening',
      );
    });
}
