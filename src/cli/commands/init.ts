/**
 * `tessera init`: a working token service and gateway in one command. Writes `tessera.yaml` when
 * absent, then creates what is missing under `data_dir`: the directory (0700), the master key
 * (0600, unless `TESSERA_MASTER_KEY` is set), the SQLite store, the first signing key, a demo
 * client whose secret is printed once, and the gateway's upstream token in `secrets.env` (0600),
 * which the configuration references as `${GATEWAY_TOKEN}`. Running it again changes nothing that
 * exists. A run that fails part way puts back what it found: what it created is removed and what
 * it changed is restored, so the next run starts from the same place.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../../config/signing-algorithms.ts';
import { portArg, withConfig } from '../options.ts';
import { printable, printJson } from '../output.ts';

export const DEMO_CLIENT = 'demo-agent';
export const DEMO_CLIENT_FILE = 'demo-client.json';
/** The demo client's secret alone, for `curl -u "demo-agent:$(cat .tessera/demo-client.secret)"`. */
export const DEMO_SECRET_FILE = 'demo-client.secret';
export const GATEWAY_TOKEN_VAR = 'GATEWAY_TOKEN';
export const DEMO_ROUTE = 'demo';

export interface InitReport {
  config_file: string;
  config_written: boolean;
  data_dir: string;
  issuer: string;
  master_key: 'env' | 'file' | 'generated';
  signing_key: { kid: string; alg: string; created: boolean };
  demo_client: {
    client_id: string;
    created: boolean;
    skipped?: string;
    /** The client exists, but its secret is in neither demo-client.json nor demo-client.secret. */
    secret_missing?: true;
    client_secret?: string;
    audience: string;
    scopes: string[];
  };
  gateway_token: { variable: string; file: string; created: boolean };
}

export interface InitOptions {
  config?: string;
  dataDir?: string;
  algorithm?: SigningAlgorithm;
  /** Listener port written into a new tessera.yaml (default 8080). */
  port?: number;
  /** Demo upstream port written into a new tessera.yaml (default port + 1). */
  upstreamPort?: number;
}

/** Run `tessera init` (init-impl.ts: loaded when it runs, not with the command's definition). */
export async function initialize(options: InitOptions): Promise<InitReport> {
  const impl = await import('./init-impl.ts');
  return impl.initialize(options);
}

export function registerInit(program: Command): void {
  withConfig(program.command('init'))
    .description('Create tessera.yaml (if absent), the data directory, master key, SQLite store, signing key and a demo client.')
    .option('--data-dir <dir>', 'data directory written into a new tessera.yaml (default .tessera)')
    .option('--alg <alg>', `signing algorithm (${SIGNING_ALGORITHMS.join(', ')})`)
    .option('--port <port>', 'listener port written into a new tessera.yaml (default 8080)', portArg('--port'))
    .option('--upstream-port <port>', 'demo upstream port written into a new tessera.yaml (default port + 1)', portArg('--upstream-port'))
    .option('--json', 'print one JSON object (includes the demo client secret when it was just created)')
    .action(async (opts: { config?: string; dataDir?: string; alg?: string; port?: number; upstreamPort?: number; json?: boolean }) => {
      // --alg is checked by initialize, whose refusals are on record where a store exists.
      const report = await initialize({
        ...(opts.config ? { config: opts.config } : {}),
        ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
        ...(opts.alg ? { algorithm: opts.alg as SigningAlgorithm } : {}),
        ...(opts.port !== undefined ? { port: opts.port } : {}),
        ...(opts.upstreamPort !== undefined ? { upstreamPort: opts.upstreamPort } : {}),
      });
      if (opts.json) return printJson(report);
      const out: string[] = [];
      out.push(`${report.config_written ? 'wrote' : 'using'}  ${report.config_file}`);
      out.push(`data   ${report.data_dir} (master key: ${report.master_key === 'env' ? 'TESSERA_MASTER_KEY' : 'master.key'})`);
      out.push(`key    ${report.signing_key.alg} ${report.signing_key.kid}${report.signing_key.created ? ' (new)' : ''}`);
      out.push(`issuer ${report.issuer}`);
      if (report.demo_client.client_secret) {
        out.push('');
        out.push(
          `Demo client "${report.demo_client.client_id}" (scopes ${report.demo_client.scopes.join(' ')}, audience ${report.demo_client.audience}).`,
        );
        out.push(`Its secret, printed this once (kept for the demo in ${join(report.data_dir, DEMO_CLIENT_FILE)}, mode 0600):`);
        out.push('');
        out.push(`  ${report.demo_client.client_secret}`);
      } else if (report.demo_client.secret_missing) {
        out.push(
          `client ${report.demo_client.client_id} exists, but its secret is in neither ${join(report.data_dir, DEMO_CLIENT_FILE)} nor ${DEMO_SECRET_FILE} (an interrupted init, or removed): for a new one, run \`tessera clients remove ${report.demo_client.client_id}\`, then \`tessera init\``,
        );
      } else if (report.demo_client.skipped) {
        out.push(`client ${report.demo_client.client_id} not created: ${report.demo_client.skipped}`);
      } else {
        out.push(`client ${report.demo_client.client_id} (exists)`);
      }
      out.push(
        `gateway token ${report.gateway_token.created ? 'generated in' : 'kept in'} ${report.gateway_token.file} (\${${GATEWAY_TOKEN_VAR}})`,
      );
      out.push('');
      out.push('Next: `tessera start` (token service, gateway and a demo API), or `tessera serve` for your own upstreams.');
      // Paths and names come from the command line and the configuration file: escaped, as every
      // command's output for people is (the secret, base64url, is unchanged by it).
      process.stdout.write(`${out.map(printable).join('\n')}\n`);
    });
}
