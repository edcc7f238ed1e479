/**
 * A real `tessera serve` (SQLite in a temp dir, a free port) whose gateway trusts its own token
 * service and mints upstream tokens through it (`credential: exchange`), in front of a loopback
 * upstream recording what it receives: the route `api` (`/api`, `auth: jwt`, api:read) exchanging
 * for {@link UPSTREAM_AUD} (max_ttl 5m) as `gateway.exchange_client`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { freePort } from '../helpers/net.ts';
import { startUpstream, type Upstream } from './helpers.ts';
import { tokenServiceIssuer } from './subject-issuer-fixture.ts';

/** The audience the route's upstream tokens are minted for. */
export const UPSTREAM_AUD = 'https://upstream.internal';

export interface ExchangeServe {
  /** The token service's URL (its issuer), the gateway's too. */
  readonly url: string;
  readonly upstream: Upstream;
  /** Starts `tessera serve` on the fixture's config (its log: warnings and worse, into {@link log}); again after a close. */
  start(): Promise<RunningServer>;
  /** The lines the server has logged (warnings and worse), to look for what must never be logged. */
  readonly log: string[];
  /** Stops the upstream, removes the temp dir and restores TESSERA_MASTER_KEY (close the server first). */
  close(): Promise<void>;
}

/**
 * Writes and initializes the config in a temp dir named `prefix`: the token service itself and
 * `issuers` trusted, `exchangeClient` as `gateway.exchange_client` (not registered: the test does
 * that), `extra` routes (given the upstream's URL) after `api` and `extra` scopes in the catalogue.
 * TESSERA_MASTER_KEY is unset until {@link ExchangeServe.close} (the master key is the one
 * `initialize` writes).
 */
export async function exchangeServe(
  prefix: string,
  exchangeClient: string,
  issuers: readonly object[],
  extra: { readonly routes?: (upstreamUrl: string) => readonly object[]; readonly scopes?: readonly string[] } = {},
): Promise<ExchangeServe> {
  const savedMaster = process.env.TESSERA_MASTER_KEY;
  delete process.env.TESSERA_MASTER_KEY;
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const config = join(dir, 'tessera.yaml');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const upstream = await startUpstream();
  const gateway = {
    watch_config: false,
    exchange_client: exchangeClient,
    routes: [
      {
        id: 'api',
        match: { path_prefix: '/api' },
        upstream: { url: upstream.url, credential: { type: 'exchange', audience: UPSTREAM_AUD, max_ttl: '5m' } },
        auth: 'jwt',
        rules: [{ id: 'read', scopes: ['api:read'] }],
      },
      ...(extra.routes?.(upstream.url) ?? []),
    ],
  };
  // YAML takes JSON as it is.
  writeFileSync(
    config,
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers: ${JSON.stringify([tokenServiceIssuer(url), ...issuers])}
scopes:
  api:read: {}
${(extra.scopes ?? []).map((s) => `  ${s}: {}\n`).join('')}gateway: ${JSON.stringify(gateway)}
`,
  );
  await initialize({ config });
  const log: string[] = [];
  const sink = new Writable({
    write: (chunk, _encoding, done) => {
      log.push(String(chunk));
      done();
    },
  });
  return {
    url,
    upstream,
    log,
    start: () => startServer({ config, logger: pino({ level: 'warn' }, sink) }),
    close: async () => {
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
      if (savedMaster !== undefined) process.env.TESSERA_MASTER_KEY = savedMaster;
    },
  };
}
