/**
 * `tessera serve` on PostgreSQL reached through a TCP proxy (test/helpers/tcp-fault-proxy.ts)
 * that black-holes its connections: /readyz takes it out of service while the store does not
 * answer and puts it back after, and the token endpoint answers 503 within a bound, not never.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { generateMasterKey } from '../../src/issuer/secrets.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort, type Listening, spawnListening, until } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { type FaultProxy, faultProxy } from '../helpers/tcp-fault-proxy.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const reachable = await postgresReachable(url);

/**
 * `tessera serve` spawned on a new directory (`prefix…`) whose store is PostgreSQL at
 * `env.DATABASE_URL`, on `schema`, with a signing key and a client `agent` for https://api.test.
 */
async function serveOnPostgres(prefix: string, env: NodeJS.ProcessEnv, schema: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  mkdirSync(join(dir, '.tessera'), { mode: 0o700 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  writeFileSync(
    join(dir, 'tessera.yaml'),
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
store: { driver: postgres, postgres: { url: "\${DATABASE_URL}", schema: ${schema} } }
`,
  );
  const tessera = async (...args: string[]) =>
    (await promisify(execFile)(process.execPath, [MAIN, ...args, '-c', join(dir, 'tessera.yaml')], { cwd: dir, env })).stdout;
  await tessera('keys', 'rotate', '--now');
  const secret = (
    JSON.parse(await tessera('clients', 'add', 'agent', '--audiences', 'https://api.test', '--json')) as { client_secret: string }
  ).client_secret;
  const server = await spawnListening(process.execPath, [MAIN, 'serve', '-c', join(dir, 'tessera.yaml')], port, env);
  return { dir, base, secret, server };
}

/** A form POST to `path` of the server at `base`, as client `agent`, given up after 20 s. */
function agentForm(base: string, secret: string, path: string, body: Record<string, string>): Promise<Response> {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: basic('agent', secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(body),
    signal: AbortSignal.timeout(20_000),
  });
}

describe('tessera serve with PostgreSQL black-holed', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  let dir: string;
  let base: string;
  let server: Listening;
  let proxy: FaultProxy;
  let secret: string;

  before(async () => {
    const target = new URL(url);
    proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const via = new URL(url);
    via.port = String(proxy.port);
    const env = { ...process.env, DATABASE_URL: via.toString(), TESSERA_MASTER_KEY: generateMasterKey().text };
    ({ dir, base, secret, server } = await serveOnPostgres('tessera-serve-pg-faults-', env, schema));
  });
  after(async () => {
    proxy?.heal();
    await server?.stop();
    await proxy?.close();
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const ready = async () => {
    const res = await fetch(`${base}/readyz`);
    return { status: res.status, body: (await res.json()) as { checks?: { name: string; ok: boolean }[] } };
  };
  const form = (path: string, body: Record<string, string>) => agentForm(base, secret, path, body);
  const tokenRequest = () => form('/oauth2/token', { grant_type: 'client_credentials' });

  it('attack: every connection to PostgreSQL black-holed (no RST, no FIN; new ones too): /readyz answers 503 naming the store within its check timeout, introspection (which reads the store) 503 temporarily_unavailable within the store’s bounds while a cached client_credentials grant is still served, and both recover once the network does', async () => {
    assert.equal((await ready()).status, 200);
    const issued = await tokenRequest();
    assert.equal(issued.status, 200);
    const { access_token: token } = (await issued.json()) as { access_token: string };
    const introspect = () => form('/oauth2/introspect', { token });
    assert.equal((await introspect()).status, 200);

    proxy.blackHole({ newToo: true });
    let started = Date.now();
    const down = await ready();
    assert.equal(down.status, 503);
    assert.ok(Date.now() - started < 4000, `/readyz answered after ${Date.now() - started} ms`);
    assert.equal(down.body.checks?.find((c) => c.name === 'store')?.ok, false, JSON.stringify(down.body));

    // What needs no store goes on: the client's standing grant is cached, its token signed here.
    assert.equal((await tokenRequest()).status, 200, 'client_credentials on a cached standing grant');
    // What needs the store (introspection reads the token's grant) is refused, within the pool's
    // connect timeout (5 s) and the read's (5 s), not never.
    started = Date.now();
    const refused = await introspect();
    const took = Date.now() - started;
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as { error: string }).error, 'temporarily_unavailable');
    assert.ok(took < 11_000, `introspection answered after ${took} ms`);

    proxy.heal();
    await until(async () => (await ready()).status === 200, 20_000).catch(() => assert.fail('/readyz never came back'));
    assert.equal((await introspect()).status, 200, 'the pool serves again');
  });
});

describe('tessera serve on PostgreSQL whose pooled connections are terminated while idle', {
  skip: reachable ? false : 'PostgreSQL is not reachable',
}, () => {
  const idleSchema = `${schema}_idle`;
  const app = `${idleSchema}_app`;
  let dir: string;
  let base: string;
  let server: Listening;
  let secret: string;
  let password: string;

  before(async () => {
    // The test server trusts loopback and never asks for the password; a URL given one keeps its own.
    const withPassword = new URL(url);
    if (withPassword.password === '') withPassword.password = 'pw-k3Vd-never-in-a-log';
    password = decodeURIComponent(withPassword.password);
    withPassword.searchParams.set('application_name', app);
    const env = { ...process.env, DATABASE_URL: withPassword.toString(), TESSERA_MASTER_KEY: generateMasterKey().text };
    ({ dir, base, secret, server } = await serveOnPostgres('tessera-serve-pg-idle-', env, idleSchema));
  });
  after(async () => {
    await server?.stop();
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${idleSchema} CASCADE`);
    await admin.end();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const form = (path: string, body: Record<string, string>) => agentForm(base, secret, path, body);

  it('attack: introspection right after it answers 200, never 503, and the lost connections are logged by their code, never with the URL’s password', async () => {
    const issued = await form('/oauth2/token', { grant_type: 'client_credentials' });
    assert.equal(issued.status, 200);
    const { access_token: token } = (await issued.json()) as { access_token: string };
    const introspect = () => form('/oauth2/introspect', { token });
    await Promise.all(Array.from({ length: 6 }, () => introspect()));
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
    } finally {
      await admin.end();
    }
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await introspect()).status);
    statuses.push(...(await Promise.all(Array.from({ length: 4 }, () => introspect()))).map((r) => r.status));
    assert.deepEqual(statuses, Array(8).fill(200));
    await until(() => /PostgreSQL (?:closed an idle pooled connection|connection found lost) \(57P01\)/.test(server.output()), 5000).catch(
      () => assert.fail(`no warning logged: ${server.output()}`),
    );
    assert.ok(!server.output().includes(password), 'the password is in the log');
  });
});
