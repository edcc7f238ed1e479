/**
 * No secret where it should not be: client secrets, access tokens, refresh tokens and
 * Authorization header values (good and bad) never appear in the server's log, in the audit trail,
 * in error responses, in the database files, or in the operator commands' output.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { initialize } from '../../src/cli/commands/init.ts';
import { openService } from '../../src/cli/context.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { answerConsent, openConsent } from '../helpers/authorize.ts';
import { basic } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

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

/** `tessera serve` on an ephemeral port; `stop()` ends it and returns everything it logged. */
async function serve(configFile: string, env: Record<string, string> = {}): Promise<{ url: string; stop(): Promise<string> }> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--config', configFile, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
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
  return {
    url,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      return log;
    },
  };
}

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

  const server = await serve(config);
  const { url } = server;
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

  const log = await server.stop();

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

it('keeps codes, verifiers, anti-CSRF tokens, the proxy secret, the initial access token and registered secrets out of logs, audit events, error bodies and database files', async () => {
  const home = mkdtempSync(join(tmpdir(), 'tessera-secrets-authz-'));
  try {
    const file = join(home, 'tessera.yaml');
    await initialize({ config: file });
    const PROXY = 'proxy-secret-for-the-no-secrets-test-0123456789';
    const IAT = 'initial-access-token-for-the-no-secrets-test-0123';
    const MCP = 'https://mcp.test/mcp';
    const yaml = readFileSync(file, 'utf8').replace(
      'token_service:\n',
      `token_service:
  authorization: { enabled: true, trusted_header: { secret: "\${TESSERA_PROXY_SECRET}" } }
  registration: { enabled: true, initial_access_token: "\${TESSERA_REGISTRATION_TOKEN}", scopes: [demo:read], audiences: [${MCP}] }
`,
    );
    writeFileSync(file, yaml);
    const server = await serve(file, { TESSERA_PROXY_SECRET: PROXY, TESSERA_REGISTRATION_TOKEN: IAT });
    let log = '';
    const { url } = server;
    const secrets: string[] = [PROXY, IAT];
    const bodies: string[] = [];
    try {
      const keep = async (res: Response) => {
        const text = await res.text();
        bodies.push(text, ...[...res.headers].map(([k, v]) => `${k}: ${v}`));
        return text;
      };
      const register = (body: unknown, token = IAT) =>
        fetch(`${url}/oauth2/register`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify(body),
        });
      const REDIRECT = 'http://127.0.0.1:33418/callback';
      const wrongIat = `${IAT.slice(0, -3)}xyz`;
      secrets.push(wrongIat);
      await keep(await register({ redirect_uris: [REDIRECT] }, wrongIat));
      const pub = JSON.parse(
        await (
          await register({
            redirect_uris: [REDIRECT],
            token_endpoint_auth_method: 'none',
            grant_types: ['authorization_code', 'refresh_token'],
          })
        ).text(),
      ) as {
        client_id: string;
      };
      const conf = JSON.parse(await (await register({ redirect_uris: [REDIRECT] })).text()) as { client_secret: string };
      assert.ok(conf.client_secret, 'a confidential client gets a secret');
      secrets.push(conf.client_secret);

      const person = { 'x-forwarded-user': 'alice', 'x-tessera-proxy-secret': PROXY };
      const wrongProxy = `${PROXY}-wrong`;
      secrets.push(wrongProxy);
      const { verifier, challenge } = pkcePair();
      secrets.push(verifier);
      const query = new URLSearchParams({
        response_type: 'code',
        client_id: pub.client_id,
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        state: 's',
      });
      await keep(await fetch(`${url}/oauth2/authorize?${query}`, { headers: { ...person, 'x-tessera-proxy-secret': wrongProxy } }));
      const { fields } = await openConsent(`${url}/oauth2/authorize?${query}`, person);
      secrets.push(fields.csrf);
      const approved = await answerConsent(`${url}/oauth2/authorize`, { ...fields, decision: 'approve' }, person);
      assert.equal(approved.status, 303);
      await keep(await answerConsent(`${url}/oauth2/authorize`, { ...fields, decision: 'approve' }, person));
      const code = new URL(approved.headers.get('location') as string).searchParams.get('code') as string;
      secrets.push(code);
      const token = (form: Record<string, string>) =>
        fetch(`${url}/oauth2/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'authorization_code', redirect_uri: REDIRECT, client_id: pub.client_id, ...form }),
        });
      const wrongVerifier = pkcePair().verifier;
      secrets.push(wrongVerifier);
      await keep(await token({ code, code_verifier: wrongVerifier }));
      const ok = JSON.parse(await (await token({ code, code_verifier: verifier })).text()) as Record<string, string>;
      assert.ok(ok.access_token && ok.refresh_token, 'the code redeems for an access and a refresh token');
      secrets.push(ok.access_token as string, ok.refresh_token as string);
      assert.equal((await token({ code, code_verifier: verifier })).status, 400);
      await keep(await token({ code, code_verifier: verifier }));
    } finally {
      log = await server.stop();
    }
    const store = SqliteStore.open({ path: join(home, '.tessera', 'tessera.db') });
    const events = JSON.stringify(await store.queryAudit({ limit: 10_000 }));
    await store.close();
    assert.ok(events.includes('authorization_code.reuse_detected'), 'the audit trail has the events');
    const dbFiles = readdirSync(join(home, '.tessera'))
      .filter((f) => f.startsWith('tessera.db'))
      .map((f) => readFileSync(join(home, '.tessera', f)).toString('latin1'));
    const where: [string, string][] = [
      ['server log', log],
      ['audit events', events],
      ['responses', bodies.join('\n')],
      ...dbFiles.map((d, i): [string, string] => [`database file ${i}`, d]),
    ];
    for (const secret of secrets) {
      for (const [name, text] of where) assert.equal(text.includes(secret), false, `a secret (${secret.slice(0, 6)}…) is in the ${name}`);
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
