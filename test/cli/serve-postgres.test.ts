/**
 * `tessera serve` on PostgreSQL, as an operator runs it: a revocation made by the `tessera revoke`
 * command (another process) is refused by the running server within milliseconds, although its
 * `sync_interval` is 60 s; a lost notification connection is logged once (without the database
 * URL or its password), reconnected, and pushes again; SIGTERM still ends the process.
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
import { LISTENER_APPLICATION_NAME } from '../../src/store/postgres/listener.ts';
import { revocationChannel } from '../../src/store/postgres/store.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort, type Listening, spawnListening, until } from '../helpers/net.ts';
import { postgresReachable } from '../helpers/postgres.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const url = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
// Trust authentication ignores it; it is here to show that no output carries it.
const PASSWORD = 'pg-password-not-for-logs';
const withPassword = (() => {
  const u = new URL(url);
  u.password = PASSWORD;
  return u.toString();
})();

const reachable = await postgresReachable(url);

describe('tessera serve on PostgreSQL', { skip: reachable ? false : 'PostgreSQL is not reachable' }, () => {
  let dir: string;
  let base: string;
  let server: Listening;
  let secret: string;
  let admin: pg.Client;
  const env = { ...process.env, DATABASE_URL: withPassword, TESSERA_MASTER_KEY: generateMasterKey().text };
  const tessera = async (...args: string[]) =>
    (await promisify(execFile)(process.execPath, [MAIN, ...args, '-c', join(dir, 'tessera.yaml')], { cwd: dir, env })).stdout;
  const listeners = async () =>
    (
      await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query = $2', [
        LISTENER_APPLICATION_NAME,
        `LISTEN "${revocationChannel(schema)}"`,
      ])
    ).rows.map((r: { pid: number }) => r.pid);
  const form = (path: string, body: Record<string, string>) =>
    fetch(`${base}${path}`, {
      method: 'POST',
      headers: { authorization: basic('agent', secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(body),
    });
  const token = async () => {
    const res = await form('/oauth2/token', { grant_type: 'client_credentials' });
    assert.equal(res.status, 200);
    const { access_token } = (await res.json()) as { access_token: string };
    return { token: access_token, grantId: JSON.parse(Buffer.from(access_token.split('.')[1] as string, 'base64url').toString()).grant_id };
  };
  const active = async (t: string) => ((await (await form('/oauth2/introspect', { token: t })).json()) as { active: boolean }).active;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-serve-pg-'));
    mkdirSync(join(dir, '.tessera'), { mode: 0o700 });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'tessera.yaml'),
      `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
token_service: { sync_interval: 60s }
store: { driver: postgres, postgres: { url: "\${DATABASE_URL}", schema: ${schema} } }
`,
    );
    await tessera('keys', 'rotate', '--now');
    secret = (
      JSON.parse(await tessera('clients', 'add', 'agent', '--audiences', 'https://api.test', '--json')) as { client_secret: string }
    ).client_secret;
    server = await spawnListening(process.execPath, [MAIN, 'serve', '-c', join(dir, 'tessera.yaml')], port, env);
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  after(async () => {
    await server?.stop();
    if (admin) {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a token within a bounded wait after `tessera revoke --grant` in another process (sync_interval is 60 s)', async () => {
    const { token: t, grantId } = await token();
    assert.equal(await active(t), true);
    assert.match(await tessera('revoke', '--grant', grantId), /^revoked 1 grant/);
    await until(async () => !(await active(t)));
  });

  it('logs a lost notification connection once, without the URL or password, reconnects and is pushed to again', async () => {
    const [pid, ...others] = await listeners();
    assert.ok(pid !== undefined && others.length === 0, 'the server listens on one connection');
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await until(async () => {
      const now = await listeners();
      return now.length === 1 && now[0] !== pid;
    }, 5000);
    const warnings = server
      .output()
      .split('\n')
      .filter((l) => l.includes('"level":40'));
    assert.equal(warnings.length, 1, server.output());
    assert.match(
      warnings[0] ?? '',
      /PostgreSQL revocation notifications interrupted \(57P01\); reconnecting; revocations are read every sync_interval/,
    );

    const { token: t, grantId } = await token();
    assert.equal(await active(t), true);
    await tessera('revoke', '--grant', grantId);
    await until(async () => !(await active(t)));
    assert.doesNotMatch(server.output(), new RegExp(PASSWORD));
    assert.doesNotMatch(server.output(), new RegExp(t.slice(-20)));
  });

  it('exits on SIGTERM with its notification connection open', async () => {
    assert.equal((await listeners()).length, 1);
    await server.stop();
    assert.equal(server.child.exitCode, 0, server.output());
    await until(async () => (await listeners()).length === 0);
  });
});
