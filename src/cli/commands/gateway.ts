/**
 * `tessera gateway --config tessera.yaml`: run the gateway alone on its own listener (the
 * gateway's entry point for operators of an existing token issuer, tests and benchmarks).
 * Reloads on SIGHUP and when the file changes; drains and stops on SIGTERM/SIGINT.
 */
import type { Command } from 'commander';
import { serveGateway } from '../../gateway/serve.ts';

export function registerGateway(program: Command): void {
  program
    .command('gateway')
    .description('Run the gateway (reverse proxy and forward-auth endpoint) from a configuration file.')
    .option('-c, --config <file>', 'configuration file', 'tessera.yaml')
    .option('--host <host>', 'override server.host')
    .option('--port <port>', 'override server.port', (v) => Number.parseInt(v, 10))
    .action(async (opts: { config: string; host?: string; port?: number }) => {
      await serveGateway({
        configFile: opts.config,
        signals: true,
        ...(opts.host !== undefined ? { host: opts.host } : {}),
        ...(opts.port !== undefined ? { port: opts.port } : {}),
      });
    });
}
