/**
 * `tessera gateway --config tessera.yaml`: run the gateway alone on its own listener (the
 * gateway's entry point for operators of an existing token issuer, tests and benchmarks).
 * Reloads on SIGHUP and when the file changes; drains and stops on SIGTERM/SIGINT. `${VAR}`s the
 * environment leaves unset come from `<data_dir>/secrets.env`, as for every command.
 */
import type { Command } from 'commander';
import type { ConfigCheck } from '../../config/parse.ts';
import type { TesseraConfig } from '../../config/schema.ts';
import { configPath, hostArg, portArg, withConfig } from '../options.ts';
import { CliError } from '../output.ts';
import { listenError } from './serve.ts';

export function registerGateway(program: Command): void {
  withConfig(program.command('gateway'))
    .description('Run the gateway alone (reverse proxy and forward-auth endpoint), for tokens from another issuer.')
    .option('--host <host>', 'override server.host', hostArg('--host'))
    .option('--port <port>', 'override server.port', portArg('--port'))
    .action(async (opts: { config?: string; host?: string; port?: number }) => {
      const [{ gatewayRunChecks }, { serveGateway }, { loadConfig }] = await Promise.all([
        import('../../gateway/check.ts'),
        import('../../gateway/serve.ts'),
        import('../context.ts'),
      ]);
      // Run alone: the gateway section must be there, and no token service mints exchange credentials.
      const check: ConfigCheck<TesseraConfig> = (c, ok) => gatewayRunChecks(c, ok, { required: true, exchange: 'unavailable' });
      const load = () => loadConfig(opts.config, { check }).config;
      const first = loadConfig(opts.config, { check });
      // Other commands run on the defaults when ./tessera.yaml is absent; the gateway has no routes then.
      if (!first.exists) {
        throw new CliError(
          `no configuration file at ${first.path}; the gateway reads its routes from one: pass --config FILE, or run \`tessera init\` to write one`,
          2,
        );
      }
      const config = first.config;
      await serveGateway({
        configFile: configPath(opts.config),
        load,
        config,
        signals: true,
        ...(opts.host !== undefined ? { host: opts.host } : {}),
        ...(opts.port !== undefined ? { port: opts.port } : {}),
      }).catch((e: unknown) => {
        throw listenError(e, opts.host ?? config.server.host, opts.port ?? config.server.port);
      });
    });
}
