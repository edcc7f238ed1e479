/**
 * `tessera init`: a working token service in one command. Writes `tessera.yaml` when absent, then
 * creates what is missing under `data_dir`: the directory (0700), the master key (0600, unless
 * `TESSERA_MASTER_KEY` is set), the SQLite store, the first signing key and a demo client whose
 * secret is printed once. Running it again changes nothing that exists.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { resolveTokenService, SIGNING_ALGORITHMS, type SigningAlgorithm } from '../../config/token-service-schema.ts';
import { createTokenServiceFromConfig, ensureDataDir, loadMasterKey, openStore } from '../../server/bootstrap.ts';
import { configPath, loadConfig, toCliError, withConfig } from '../context.ts';
import { CliError, printJson } from '../output.ts';

export const DEMO_CLIENT = 'demo-agent';
export const DEMO_CLIENT_FILE = 'demo-client.json';

/** The configuration `tessera init` writes when there is none. */
export function configTemplate(options: { dataDir: string; algorithm: SigningAlgorithm; port: number; host: string }): string {
  const base = `http://${options.host}:${options.port}`;
  return `# tessera.yaml, written by \`tessera init\`. Every key is described in docs/configuration.md.
# Values may use \${VAR} and \${VAR:default} from the environment.
data_dir: ${options.dataDir}

server:
  host: ${options.host}
  port: ${options.port}
  # public_url: https://auth.example.com   # the issuer and endpoint base URL behind a proxy

token_service:
  access_token_ttl: 10m
  max_chain_depth: 5
  keys:
    algorithm: ${options.algorithm}
    publish_ahead: 1h      # a new key is in the JWKS this long before it signs
    jwks_max_age: 10m

# Issuers whose tokens are trusted: this token service itself (the in-process verifier reads its
# keys directly), plus any identity provider whose tokens may be exchanged (RFC 8693).
issuers:
  - issuer: ${base}
    audiences: [${base}/demo]
    jwks_uri: ${base}/.well-known/jwks.json
    token_type: at+jwt

scopes:
  demo:read: { description: Read the demo API }
  demo:write: { description: Change the demo API, implies: [demo:read] }
`;
}

export interface InitReport {
  config_file: string;
  config_written: boolean;
  data_dir: string;
  issuer: string;
  master_key: 'env' | 'file' | 'generated';
  signing_key: { kid: string; alg: string; created: boolean };
  demo_client: { client_id: string; created: boolean; client_secret?: string; audience: string; scopes: string[] };
}

export async function initialize(options: { config?: string; dataDir?: string; algorithm?: SigningAlgorithm }): Promise<InitReport> {
  const path = configPath(options.config);
  let written = false;
  if (!existsSync(path)) {
    writeFileSync(
      path,
      configTemplate({ dataDir: options.dataDir ?? '.tessera', algorithm: options.algorithm ?? 'ES256', port: 8080, host: '127.0.0.1' }),
      { flag: 'wx' },
    );
    written = true;
  }
  const { config } = loadConfig(path);
  ensureDataDir(config.data_dir);
  const master = loadMasterKey(config.data_dir, { create: true });
  if (master === undefined) throw new CliError('could not create the master key');
  const store = await openStore(config);
  const service = createTokenServiceFromConfig(config, { store, master: master.key });
  try {
    await service.start({ background: false });
    let key = service.keys.status().find((k) => k.state === 'active');
    let keyCreated = false;
    if (key === undefined) {
      const record = await service.keys.rotate({ immediate: true, algorithm: options.algorithm ?? config.token_service?.keys.algorithm });
      key = service.keys.status().find((k) => k.kid === record.kid);
      keyCreated = true;
    }
    const issuer = resolveTokenService(config).issuer;
    const audience = `${issuer}/demo`;
    const scopes = ['demo:read', 'demo:write'];
    let secret: string | undefined;
    if ((await store.getClient(DEMO_CLIENT)) === undefined) {
      const created = await service.registerClient({
        id: DEMO_CLIENT,
        scopes,
        audiences: [audience],
        grantTypes: ['client_credentials', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      });
      secret = created.secret;
      // Kept owner-only for the newcomer's path (`npm start` prints a curl that uses it).
      writeFileSync(
        join(config.data_dir, DEMO_CLIENT_FILE),
        `${JSON.stringify({ client_id: DEMO_CLIENT, client_secret: secret, audience }, null, 2)}\n`,
        { mode: 0o600 },
      );
    }
    return {
      config_file: path,
      config_written: written,
      data_dir: config.data_dir,
      issuer,
      master_key: master.source,
      signing_key: { kid: key?.kid ?? '', alg: key?.alg ?? '', created: keyCreated },
      demo_client: {
        client_id: DEMO_CLIENT,
        created: secret !== undefined,
        audience,
        scopes,
        ...(secret ? { client_secret: secret } : {}),
      },
    };
  } catch (e) {
    throw toCliError(e);
  } finally {
    await service.close();
    await store.close();
  }
}

export function registerInit(program: Command): void {
  withConfig(program.command('init'))
    .description('Create tessera.yaml (if absent), the data directory, master key, SQLite store, signing key and a demo client.')
    .option('--data-dir <dir>', 'data directory written into a new tessera.yaml', '.tessera')
    .option('--alg <alg>', `signing algorithm (${SIGNING_ALGORITHMS.join(', ')})`)
    .option('--json', 'print one JSON object (includes the demo client secret when it was just created)')
    .action(async (opts: { config?: string; dataDir: string; alg?: string; json?: boolean }) => {
      if (opts.alg !== undefined && !(SIGNING_ALGORITHMS as readonly string[]).includes(opts.alg)) {
        throw new CliError(`--alg must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
      }
      const report = await initialize({
        ...(opts.config ? { config: opts.config } : {}),
        dataDir: opts.dataDir,
        ...(opts.alg ? { algorithm: opts.alg as SigningAlgorithm } : {}),
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
        out.push(`Its secret, shown once (also in ${join(report.data_dir, DEMO_CLIENT_FILE)}, mode 0600):`);
        out.push('');
        out.push(`  ${report.demo_client.client_secret}`);
      } else {
        out.push(`client ${report.demo_client.client_id} (exists)`);
      }
      out.push('');
      out.push('Next: tessera serve, then');
      out.push(`  curl -s -u ${report.demo_client.client_id}:SECRET -d grant_type=client_credentials ${report.issuer}/oauth2/token`);
      process.stdout.write(`${out.join('\n')}\n`);
    });
}
