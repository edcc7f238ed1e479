/**
 * No secret where it should not be: client secrets, access tokens, refresh tokens and
 * Authorization header values (good and bad) never appear in the server's log, in the audit trail,
 * in error responses, in the database files, or in the operator commands' output.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { initialize } from '../../src/cli/commands/init.ts';
import { openService } from '../../src/cli/context.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic } from '../helpers/issuer.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
let dir: string;
let config: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-secrets-'));
  config = join(dir, 'tessera.yaml');
});
after(() => rmSync(dir, { recursive: true, force: true }));

it('keeps every secret and token out of logs, audit events, error bodies, database files and CLI output', async () => {
  const secrets: string[] = [];
  const init = await initialize({ config });
  secrets.push(init.demo_client.client_secret as string);

  const ctx = await openService(config, true);
  const agentSecret = (
    await ctx.service.registerClient({
      id: 'agent',
      scopes: ['demo:read'],
      audiences: ['https://api.test'],
      grantTypes: ['client_credentials', 'refresh_token', EXCHANGE],
    })
  ).secret as string;
  secrets.push(agentSecret);
  const user = (await ctx.service.mint({ clientId: 'agent', subject: 'alice', ttl: 600 })).access_token;
  secrets.push(user);
  await ctx.close();

  const child = spawn(process.execPath, [MAIN, 'serve', '--config', config, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const url = await new Promise<string>((resolve) => {
    const t = setInterval(() => {
      const m = /"url":"([^"]+)"/.exec(log);
      if (m) {
        clearInterval(t);
        resolve(m[1] as string);
      }
    }, 20);
  });
  const bodies: string[] = [];
  const post = async (path: string, form: Record<string, string>, headers: Record<string, string> = {}) => {
    const res = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(form),
    });
    const text = await res.text();
    if (res.status !== 200) bodies.push(text);
    for (const [k, v] of res.headers) if (res.status !== 200) bodies.push(`${k}: ${v}`);
    return { status: res.status, json: () => JSON.parse(text) as Record<string, string> };
  };
  const auth = { authorization: basic('agent', agentSecret) };

  // Happy paths: tokens and refresh tokens that must not leak afterwards.
  const cc = (await post('/oauth2/token', { grant_type: 'client_credentials' }, auth)).json();
  const ex = (await post('/oauth2/token', { grant_type: EXCHANGE, subject_token: user, subject_token_type: AT }, auth)).json();
  const rf = (await post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: ex.refresh_token as string }, auth)).json();
  secrets.push(
    cc.access_token as string,
    ex.access_token as string,
    ex.refresh_token as string,
    rf.access_token as string,
    rf.refresh_token as string,
  );
  await post('/oauth2/introspect', { token: rf.access_token as string }, auth);
  await post('/oauth2/revoke', { token: cc.access_token as string }, auth);

  // Failures carrying secrets of their own.
  const wrongSecret = 'tcs_this-is-a-wrong-but-secret-value-0123456789';
  const foreignToken = `${(cc.access_token as string).slice(0, -4)}AAAA`;
  secrets.push(wrongSecret, foreignToken, basic('agent', wrongSecret).slice(6), auth.authorization.slice(6));
  assert.equal(
    (await post('/oauth2/token', { grant_type: 'client_credentials' }, { authorization: basic('agent', wrongSecret) })).status,
    401,
  );
  assert.equal(
    (await post('/oauth2/token', { grant_type: 'client_credentials', client_id: 'agent', client_secret: wrongSecret })).status,
    401,
  );
  assert.equal((await post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: ex.refresh_token as string }, auth)).status, 400);
  assert.equal(
    (await post('/oauth2/token', { grant_type: EXCHANGE, subject_token: foreignToken, subject_token_type: AT }, auth)).status,
    400,
  );
  assert.equal((await post('/oauth2/token', { grant_type: 'client_credentials', scope: user }, auth)).status, 400);
  const admin = await fetch(`${url}/oauth2/admin/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${foreignToken}` },
    body: '{"grant_id":"x"}',
  });
  bodies.push(await admin.text(), admin.headers.get('www-authenticate') ?? '');

  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));

  // CLI output an operator (or a CI log) would see.
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, [MAIN, ...args, '--config', config], { encoding: 'utf8' });
    return r.stdout + r.stderr;
  };
  const outputs = [cli('clients', 'list', '--json'), cli('clients', 'show', 'agent', '--json'), cli('keys', 'list', '--json'), cli('init')];
  assert.ok(!outputs.join('').includes('secretHash') && !outputs.join('').includes('sealed'), 'no hash or sealed key in CLI output');

  const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
  const events = JSON.stringify(await store.queryAudit({ limit: 10_000 }));
  await store.close();
  assert.ok(events.includes('refresh.reuse_detected'), 'the audit trail has the events');
  assert.ok(log.includes('listening'));

  const dbFiles = readdirSync(join(dir, '.tessera'))
    .filter((f) => f.startsWith('tessera.db'))
    .map((f) => readFileSync(join(dir, '.tessera', f)).toString('latin1'));

  for (const secret of secrets) {
    const where = [
      ['server log', log],
      ['audit events', events],
      ['error responses', bodies.join('\n')],
      ['CLI output', outputs.join('\n')],
      ...dbFiles.map((d, i) => [`database file ${i}`, d]),
    ] as const;
    for (const [name, text] of where) assert.equal(text.includes(secret), false, `a secret (${secret.slice(0, 6)}…) is in the ${name}`);
  }
});
