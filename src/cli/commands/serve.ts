/**
 * `tessera serve`: the token service on the configured listener. The request handler is exported
 * separately (`createTokenServiceHandler`) so the gateway can share the listener; this command
 * runs it alone until then.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Command } from 'commander';
import type { TokenService } from '../../issuer/service.ts';
import { createTokenServiceHandler } from '../../server/token-handler.ts';
import { openService, withConfig } from '../context.ts';
import { CliError } from '../output.ts';

export interface RunningServer {
  readonly url: string;
  readonly server: Server;
  readonly service: TokenService;
  close(): Promise<void>;
}

/** Start the token service from a configuration file. */
export async function startServer(options: { config?: string; port?: number; host?: string }): Promise<RunningServer> {
  const ctx = await openService(options.config, true);
  if (!ctx.service.keys.ready()) {
    await ctx.close();
    throw new CliError('no active signing key; run `tessera init` (or `tessera keys rotate --now`)');
  }
  await ctx.service.start();
  const log = (line: Record<string, unknown>) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...line })}\n`);
  const handler = createTokenServiceHandler(ctx.service, {
    // Only the error's class and code: messages of unexpected errors are not trusted to be secret-free.
    onError: (error, requestId) =>
      log({ level: 'error', msg: 'request failed', request_id: requestId, error: error instanceof Error ? error.name : typeof error }),
  });
  const server = createServer((req, res) => {
    if (handler(req, res)) return;
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not_found"}');
  });
  const host = options.host ?? ctx.config.server.host;
  const port = options.port ?? ctx.config.server.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  return {
    url,
    server,
    service: ctx.service,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await ctx.close();
    },
  };
}

export function registerServe(program: Command): void {
  withConfig(program.command('serve'))
    .description('Run the token service (OAuth endpoints, JWKS, metadata, admin API) on the configured listener.')
    .option('--port <port>', 'override server.port', (v) => Number.parseInt(v, 10))
    .option('--host <host>', 'override server.host')
    .action(async (opts: { config?: string; port?: number; host?: string }) => {
      const running = await startServer(opts);
      process.stderr.write(
        `${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'listening', url: running.url, issuer: running.service.issuer })}\n`,
      );
      const stop = () => {
        void running.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
