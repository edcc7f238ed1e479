/**
 * `tessera serve` instances under test: a data directory with its tessera.yaml (on SQLite, or on a
 * PostgreSQL schema of its own), its clients registered, and instances started on it and stopped.
 * PostgreSQL is 127.0.0.1:5432, database `test`, or TESSERA_TEST_POSTGRES_URL; the tests on it are
 * skipped when it does not answer.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { freePort } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';

/** The public URL every instance shares, as instances behind one load balancer do. */
export const PUBLIC = 'https://api.test';

const pgUrl = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgReachable = await postgresReachable(pgUrl);

/** The stores a data directory can be on; `skip` says why PostgreSQL's tests do not run. */
export const drivers = [
  { name: 'SQLite', postgres: false, skip: false as const },
  {
    name: 'PostgreSQL',
    postgres: true,
    skip: pgReachable ? (false as const) : `PostgreSQL is not reachable at ${pgUrl.replace(/\/\/[^@]*@/, '//')}`,
  },
];

/** Running `tessera serve` instances, each stopped by `stop`, or with the others by `stopAll`. */
export interface ServeInstances {
  start(config: string, options?: { port?: number }): Promise<RunningServer>;
  stop(r: RunningServer): Promise<void>;
  stopAll(): Promise<void>;
}

export function serveInstances(): ServeInstances {
  const running: RunningServer[] = [];
  const stop = async (r: RunningServer) => {
    running.splice(running.indexOf(r), 1);
    await r.close();
  };
  return {
    start: async (config, options = {}) => {
      const r = await startServer({ config, logger: pino({ level: 'silent' }), ...options });
      running.push(r);
      return r;
    },
    stop,
    stopAll: async () => {
      for (const r of [...running]) await stop(r);
    },
  };
}

/** A data directory (`tessera init`: its own store and master key) and its config file. */
export interface ServeSite {
  readonly dir: string;
  readonly config: string;
  /** The registered clients' secrets, by id. */
  readonly secrets: Record<string, string>;
  /** Removes the directory, and the site's PostgreSQL schema when it has one. */
  remove(): Promise<void>;
}

/**
 * A data directory whose tessera.yaml serves `PUBLIC` (on a port of its own), on PostgreSQL (a schema
 * of its own) when `postgres`, trusts the token service at `PUBLIC` as the issuer for `audience`, has
 * one scope `scope`, the top-level `settings` (YAML) and one gateway route `route` on `/<route>` in
 * front of `upstream`, JWT-authenticated for `audience`, needing `scope`, with `routeSettings` (YAML,
 * the route's own indentation); `clients` are registered (client_credentials for `audience` and
 * `scope`) through an instance started and stopped on it.
 */
export async function serveSite(
  instances: ServeInstances,
  o: {
    prefix: string;
    audience: string;
    postgres?: boolean;
    scope: string;
    settings?: string;
    route: string;
    upstream: string;
    routeSettings?: string;
    clients: string[];
  },
): Promise<ServeSite> {
  const dir = mkdtempSync(join(tmpdir(), o.prefix));
  mkdirSync(join(dir, '.tessera'), { mode: 0o700 });
  const config = join(dir, 'tessera.yaml');
  const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  writeFileSync(
    config,
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${await freePort()}, public_url: ${PUBLIC} }
${o.postgres ? `store: { driver: postgres, postgres: { url: "${pgUrl}", schema: ${schema} } }\n` : ''}issuers:
  - { issuer: ${PUBLIC}, audiences: [${o.audience}], jwks_uri: ${PUBLIC}/.well-known/jwks.json, token_type: at+jwt }
scopes:
  ${o.scope}: {}
${o.settings ?? ''}gateway:
  watch_config: false
  routes:
    - id: ${o.route}
      match: { path_prefix: /${o.route} }
      upstream: { url: ${o.upstream} }
      auth: jwt
      audience: ${o.audience}
      rules: [{ scopes: [${o.scope}] }]
${o.routeSettings ?? ''}`,
  );
  await initialize({ config });
  const secrets: Record<string, string> = {};
  const first = await instances.start(config);
  for (const id of o.clients) {
    secrets[id] = (
      await first.service.registerClient({ id, scopes: [o.scope], audiences: [o.audience], grantTypes: ['client_credentials'] })
    ).secret as string;
  }
  await instances.stop(first);
  return {
    dir,
    config,
    secrets,
    remove: async () => {
      if (o.postgres) {
        const c = new pg.Client({ connectionString: pgUrl });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
