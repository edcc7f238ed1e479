/**
 * `tessera serve` with a gateway section: the token service and the gateway on one listener, as
 * one process. What only sharing the process gives: a revocation made at the token service is
 * enforced by the gateway on the very next request and ends open streams; `credential: exchange`
 * mints upstream tokens in-process; a rotated gateway token in secrets.env applies on reload; a
 * client changed by the `tessera` command in another process applies on the next sync.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { listenError, type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { CliError } from '../../src/cli/output.ts';
import { writeSecretsEnv } from '../../src/config/secrets-env.ts';
import { generateMasterKey } from '../../src/issuer/secrets.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { AUDIENCE, ISSUER, token as idpToken, key, startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { type ContinueExchange, expectContinue, freePort, trickleHead, until } from '../helpers/net.ts';

const UPSTREAM_AUD = 'https://upstream.internal';

let dir: string;
let base: string;
let upstream: Upstream;
let running: RunningServer;
let agentSecret: string;
const logLines: string[] = [];
const logStream = new Writable({
  write(chunk, _encoding, done) {
    logLines.push(...chunk.toString().trim().split('\n'));
    done();
  },
});
const savedEnv = { master: process.env.TESSERA_MASTER_KEY, gw: process.env.GATEWAY_TOKEN };

async function token(scope = 'api:read'): Promise<string> {
  const res = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: basic('agent', agentSecret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope }),
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

const call = (path: string, t: string) => fetch(`${base}${path}`, { headers: { authorization: `Bearer ${t}` } });

/** A POST sent with `Expect: 100-continue` to `url` (see {@link expectContinue}). */
const postExpecting = (
  url: string,
  path: string,
  headers: string[],
  body: string,
  length = Buffer.byteLength(body),
): Promise<ContinueExchange> =>
  expectContinue(
    url,
    `POST ${path} HTTP/1.1\r\nHost: ${new URL(url).host}\r\n${headers.map((h) => `${h}\r\n`).join('')}Content-Length: ${length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    body,
  );
const FORM = 'Content-Type: application/x-www-form-urlencoded';

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  delete process.env.GATEWAY_TOKEN;
  dir = mkdtempSync(join(tmpdir(), 'tessera-serve-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  upstream = await startUpstream((req, res) => {
    if (req.url?.startsWith('/api/sse')) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const timer = setInterval(() => res.write('data: tick\n\n'), 50);
      res.on('close', () => clearInterval(timer));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  writeFileSync(
    join(dir, 'tessera.yaml'),
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${base}, audiences: [${base}/api], jwks_uri: ${base}/.well-known/jwks.json, token_type: at+jwt }
  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], jwks: { keys: [${JSON.stringify(key.jwk)}] } }  # an external IdP
scopes:
  api:read: {}
  api:write: {}
gateway:
  exchange_client: tessera-gateway
  watch_config: false
  routes:
    - id: api
      match: { path_prefix: /api }
      upstream: { url: ${upstream.url}, credential: { type: static, token: "\${GATEWAY_TOKEN}" } }
      auth: jwt
      audience: ${base}/api
      rules: [{ path: /api/**, scopes: [api:read] }]
    - id: minted
      match: { path_prefix: /minted }
      upstream: { url: ${upstream.url}, credential: { type: exchange, audience: ${UPSTREAM_AUD} } }
      auth: jwt
      audience: ${base}/api
      rules: [{ path: /minted/**, scopes: [api:read] }]
    - id: mcp
      match: { path_prefix: /mcp }
      upstream: { url: ${upstream.url} }
      auth: jwt
      audience: ${base}/api
      mcp: {}
      rules: [{ tool: "danger.*", scopes: [api:write] }, { scopes: [api:read] }]
    - id: everything-else
      match: { path_prefix: / }
      upstream: { url: ${upstream.url} }
      auth: none
`,
  );
  await initialize({ config: join(dir, 'tessera.yaml') });
  running = await startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'warn' }, logStream) });
  const agent = await running.service.registerClient({
    id: 'agent',
    scopes: ['api:read'],
    audiences: [`${base}/api`],
    grantTypes: ['client_credentials'],
  });
  agentSecret = agent.secret as string;
  await running.service.registerClient({
    id: 'tessera-gateway',
    scopes: ['api:read'],
    audiences: [UPSTREAM_AUD],
    grantTypes: [TOKEN_EXCHANGE],
  });
});

after(async () => {
  await running?.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
  if (savedEnv.master !== undefined) process.env.TESSERA_MASTER_KEY = savedEnv.master;
  if (savedEnv.gw !== undefined) process.env.GATEWAY_TOKEN = savedEnv.gw;
});

describe('tessera serve: token service and gateway in one process', () => {
  it('token service audit events dropped while the store is down are counted in /metrics, beside the gateway audit counters', async () => {
    const before = running.service.audit.dropped;
    try {
      // As a full queue does while the store refuses writes.
      running.service.audit.dropped += 3;
      const text = await (await fetch(`${base}/metrics`)).text();
      assert.match(text, new RegExp(`^tessera_token_service_audit_events_dropped_total ${before + 3}$`, 'm'));
      assert.match(text, /^tessera_audit_events_dropped_total 0$/m);
    } finally {
      running.service.audit.dropped = before;
    }
  });

  it('the token endpoint’s answers are counted in the gateway’s /metrics by the same series as without a gateway: tokens issued and refusals with their reason', async () => {
    const series = (decision: string, reason: string, error: string) =>
      `tessera_token_service_token_requests_total{grant_type="client_credentials",decision="${decision}",reason="${reason}",error="${error}"}`;
    const count = async (name: string) => {
      const line = (await (await fetch(`${base}/metrics`)).text()).split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? 0 : Number(line.slice(name.length + 1));
    };
    const issued = await count(series('allow', 'ok', ''));
    const refused = await count(series('deny', 'client_secret_mismatch', 'invalid_client'));
    await token();
    const wrong = await fetch(`${base}/oauth2/token`, {
      method: 'POST',
      headers: { authorization: basic('agent', 'wrong-secret'), 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
    });
    assert.equal(wrong.status, 401);
    assert.equal(await count(series('allow', 'ok', '')), issued + 1);
    assert.equal(await count(series('deny', 'client_secret_mismatch', 'invalid_client')), refused + 1);
  });

  it('leaves the token service paths to the token service and everything else to the gateway', async () => {
    const meta = await fetch(`${base}/.well-known/oauth-authorization-server`);
    assert.equal(meta.status, 200);
    assert.equal(((await meta.json()) as { issuer: string }).issuer, base);
    const elsewhere = await fetch(`${base}/elsewhere`);
    assert.equal(elsewhere.status, 200);
    assert.equal(upstream.seen.at(-1)?.url, '/elsewhere');
    // Every /oauth2/ path is the token service's, even one it does not serve: a catch-all route
    // never receives one (with a client secret in its body).
    const seen = upstream.seen.length;
    const shadow = await fetch(`${base}/OAuth2/token/`, { method: 'POST', body: 'client_secret=s3cret' });
    assert.equal(shadow.status, 404);
    assert.equal(upstream.seen.length, seen);
    // Nor spelt with a percent-encoded letter, which the gateway decodes before matching its routes:
    // the catch-all route received POST /oauth2/token with the secret.
    for (const path of ['/%6fauth2/token', '/%4FAuth2/admin/revoke', '/o%61uth2/token/', '/%6Fauth2']) {
      const encoded = await fetch(`${base}${path}`, { method: 'POST', body: 'client_secret=s3cret' });
      assert.equal(encoded.status, 404, path);
      assert.equal(upstream.seen.length, seen, path);
    }
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    const checks = ((await ready.json()) as { checks: { name: string; ok: boolean }[] }).checks;
    assert.ok(checks.some((c) => c.name === 'store' && c.ok));
    assert.ok(checks.some((c) => c.name === 'signing_key' && c.ok));
  });

  it('an MCP route advertises this token service in its RFC 9728 metadata and authorizes its tokens by tool', async () => {
    const meta = await fetch(`${base}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(meta.status, 200);
    assert.deepEqual(await meta.json(), {
      resource: `${base}/mcp`,
      authorization_servers: [base],
      scopes_supported: ['api:read', 'api:write'],
      bearer_methods_supported: ['header'],
      // dpop.mode allowed (the default): the algorithms its token endpoint binds tokens for.
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA', 'PS256', 'RS256'],
    });
    const t = await token();
    const rpc = (name: string) =>
      fetch(`${base}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name } }),
      });
    const ok = await rpc('search');
    assert.equal(ok.status, 200);
    assert.match(upstream.seen.at(-1)?.body ?? '', /"name":"search"/);
    const seen = upstream.seen.length;
    const denied = await rpc('danger.drop');
    assert.equal(denied.status, 403);
    assert.match(denied.headers.get('www-authenticate') ?? '', /error="insufficient_scope".*scope="api:write".*resource_metadata="/);
    assert.equal(upstream.seen.length, seen);
  });

  it('injects the gateway token from secrets.env; the caller token never reaches the upstream', async () => {
    const t = await token();
    const gatewayToken = /GATEWAY_TOKEN=(\S+)/.exec(readFileSync(join(dir, '.tessera', 'secrets.env'), 'utf8'))?.[1];
    const res = await call('/api/items', t);
    assert.equal(res.status, 200);
    const seen = upstream.seen.at(-1);
    assert.equal(seen?.headers.authorization, `Bearer ${gatewayToken}`);
    assert.ok(!JSON.stringify(seen?.headers).includes(t));
  });

  it('a token revoked at the RFC 7009 endpoint is refused by the gateway on the very next request', async () => {
    const t = await token();
    assert.equal((await call('/api/items', t)).status, 200);
    const revoke = await fetch(`${base}/oauth2/revoke`, {
      method: 'POST',
      headers: { authorization: basic('agent', agentSecret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: t }),
    });
    assert.equal(revoke.status, 200);
    const denied = await call('/api/items', t);
    assert.equal(denied.status, 401);
    assert.match(denied.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  it('an open event stream through the gateway ends when its grant is revoked', async () => {
    const t = await token();
    const grantId = decodeJwt(t).grant_id as string;
    const res = await call('/api/sse', t);
    assert.equal(res.status, 200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /data: tick/);
    await running.service.revokeGrants({ grantId }, 'test');
    const deadline = Date.now() + 3000;
    let ended = false;
    while (Date.now() < deadline) {
      const r = await reader.read().catch(() => ({ done: true }));
      if (r.done) {
        ended = true;
        break;
      }
    }
    assert.ok(ended, 'the stream ended after the revocation');
  });

  it('credential: exchange mints a narrowed upstream token with the caller in its delegation chain', async () => {
    const t = await token();
    const res = await call('/minted/x', t);
    assert.equal(res.status, 200);
    const minted = /^Bearer (.+)$/.exec(String(upstream.seen.at(-1)?.headers.authorization))?.[1];
    assert.ok(minted && minted !== t);
    const { payload } = await jwtVerify(minted, createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`)), {
      issuer: base,
      audience: UPSTREAM_AUD,
      typ: 'at+jwt',
    });
    assert.equal(payload.sub, 'agent');
    assert.equal(payload.scope, 'api:read');
    assert.deepEqual(payload.act, { sub: 'tessera-gateway' });
  });

  it('a rotated gateway token in secrets.env takes effect on reload', async () => {
    const rotated = `tgw_rotated_${Date.now()}_0123456789abcdef`;
    writeSecretsEnv(join(dir, '.tessera', 'secrets.env'), { GATEWAY_TOKEN: rotated });
    const result = running.gateway?.reload();
    assert.equal(result?.ok, true);
    assert.equal((await call('/api/items', await token())).status, 200);
    assert.equal(upstream.seen.at(-1)?.headers.authorization, `Bearer ${rotated}`);
  });

  it('a reload names the token-service settings it cannot apply (restart required) and applies the rest', async () => {
    const file = join(dir, 'tessera.yaml');
    const saved = readFileSync(file, 'utf8');
    const restartWarnings = (from: number) =>
      logLines
        .slice(from)
        .map((l) => JSON.parse(l) as { event?: string; paths?: string[]; msg?: string })
        .filter((l) => l.event === 'config_restart_required');
    try {
      writeFileSync(
        file,
        `${saved}token_service: { access_token_ttl: 5m }\ndpop: { algorithms: [ES256] }\n`.replace(
          '  api:read: {}',
          '  api:read: {}\n  api:extra: {}',
        ),
      );
      const n = logLines.length;
      assert.equal(running.gateway?.reload().ok, true);
      const [warning] = restartWarnings(n);
      // The gateway applies dpop.algorithms; the token endpoint and its metadata keep theirs.
      assert.deepEqual(warning?.paths, ['token_service', 'scopes', 'dpop.algorithms']);
      assert.match(warning?.msg ?? '', /until a restart/);
      assert.equal((await call('/api/items', await token())).status, 200);
      // A refused reload applies nothing, so it warns about nothing either.
      writeFileSync(file, `${saved}token_service: { access_token_ttl: 7m }\ngateway_typo: 1\n`);
      const m = logLines.length;
      assert.equal(running.gateway?.reload().ok, false);
      assert.equal(restartWarnings(m).length, 0);
    } finally {
      writeFileSync(file, saved);
      assert.equal(running.gateway?.reload().ok, true);
    }
    const m = logLines.length;
    assert.equal(running.gateway?.reload().ok, true);
    assert.equal(restartWarnings(m).length, 0, 'nothing to warn about');
  });

  it('a reload that removes an external issuer stops token exchange of its tokens too, not only the gateway', async () => {
    const exchanger = await running.service.registerClient({
      id: 'idp-exchanger',
      scopes: ['api:read'],
      audiences: [UPSTREAM_AUD],
      grantTypes: [TOKEN_EXCHANGE],
    });
    const subject = await idpToken({ sub: 'idp-user', scope: 'api:read' });
    const exchange = () =>
      fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('idp-exchanger', exchanger.secret as string), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          subject_token: subject,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: UPSTREAM_AUD,
        }),
      });
    const before = await exchange();
    assert.equal(before.status, 200, await before.clone().text());
    assert.equal(decodeJwt(((await before.json()) as { access_token: string }).access_token).sub, 'idp-user');
    const file = join(dir, 'tessera.yaml');
    const saved = readFileSync(file, 'utf8');
    try {
      writeFileSync(file, saved.replace(/^.*# an external IdP\n/m, ''));
      assert.equal(running.gateway?.reload().ok, true);
      const after = await exchange();
      assert.equal(after.status, 400);
      assert.equal(((await after.json()) as { error: string }).error, 'invalid_request');
    } finally {
      writeFileSync(file, saved);
      assert.equal(running.gateway?.reload().ok, true);
    }
    assert.equal((await exchange()).status, 200, 'restored with the issuer');
  });

  it('a reload that cannot read secrets.env is refused and the running configuration keeps serving', async () => {
    const file = join(dir, '.tessera', 'secrets.env');
    const saved = readFileSync(file, 'utf8');
    rmSync(file);
    mkdirSync(file);
    try {
      const result = running.gateway?.reload();
      assert.equal(result?.ok, false);
      assert.equal((await call('/api/items', await token())).status, 200);
    } finally {
      rmSync(file, { recursive: true });
      writeFileSync(file, saved, { mode: 0o600 });
    }
  });

  it('a client updated by `tessera clients update` in another process applies on the next sync', async () => {
    const other = 'https://other.internal';
    const { secret } = await running.service.registerClient({
      id: 'switcher',
      scopes: ['api:read'],
      audiences: [`${base}/api`, other],
      grantTypes: ['client_credentials', TOKEN_EXCHANGE],
    });
    const post = (form: Record<string, string>) =>
      fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('switcher', secret as string), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form),
      });
    const own = ((await (await post({ grant_type: 'client_credentials', audience: `${base}/api` })).json()) as { access_token: string })
      .access_token;
    const retarget = async () => {
      const res = await post({
        grant_type: TOKEN_EXCHANGE,
        subject_token: own,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: other,
      });
      return { status: res.status, error: ((await res.json()) as { error?: string }).error };
    };
    assert.deepEqual(await retarget(), { status: 400, error: 'invalid_target' });
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [new URL('../../src/cli/main.ts', import.meta.url).pathname, ...args], { cwd: dir });
    // token_service.sync_interval is 1 s by default; allow a few.
    const until = async (status: number) => {
      const deadline = Date.now() + 5000;
      while ((await retarget()).status !== status) {
        if (Date.now() > deadline) assert.fail(`no ${status} within 5 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    assert.match((await cli('clients', 'update', 'switcher', '--allow-retarget')).stdout, /^client switcher updated/);
    await until(200);
    assert.match((await cli('clients', 'update', 'switcher', '--no-allow-retarget')).stdout, /^client switcher updated/);
    await until(400);
  });

  it('a second server given another master key than the signing keys were sealed with refuses to start, not ready and failing every token request', async () => {
    process.env.TESSERA_MASTER_KEY = generateMasterKey().text;
    try {
      await assert.rejects(
        startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'silent' }) }),
        (e: unknown) => e instanceof CliError && /master key .*not the one they were sealed with/.test(e.message),
      );
    } finally {
      delete process.env.TESSERA_MASTER_KEY;
    }
  });
});

describe('tessera serve: Expect: 100-continue at the token service, beside the gateway', () => {
  it('a token request whose Content-Length is over the body limit gets 413 without 100 Continue, and the body is never asked for', async () => {
    const r = await postExpecting(base, '/oauth2/token', [FORM, `Authorization: ${basic('agent', agentSecret)}`], '', 70_000);
    assert.equal(r.first, 413, r.text);
    assert.equal(r.bodySent, false);
  });

  it('admin API body before authentication: no token gets 401 without 100 Continue', async () => {
    const r = await postExpecting(base, '/oauth2/admin/revoke', ['Content-Type: application/json'], '{"client_id":"agent"}');
    assert.equal(r.first, 401, r.text);
    assert.equal(r.bodySent, false);
  });

  it('a token request within the limit gets 100 Continue, then its token', async () => {
    const r = await postExpecting(
      base,
      '/oauth2/token',
      [FORM, `Authorization: ${basic('agent', agentSecret)}`],
      'grant_type=client_credentials',
    );
    assert.equal(r.first, 100, r.text);
    assert.match(r.text, /\r\n\r\nHTTP\/1\.1 200 /);
    assert.match(r.text, /"access_token":"/);
  });
});

describe('tessera serve: the token service alone (no gateway section)', () => {
  /** A token request whose body never arrives in full (100 bytes announced, 11 sent). */
  const STALLED_TOKEN_REQUEST =
    'POST /oauth2/token HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ngrant_type=';
  /** A new directory (`tessera-serve-<name>-…`) with an initialized token-service-only tessera.yaml on a free port. */
  const tokenServiceAlone = async (name: string) => {
    const dir = mkdtempSync(join(tmpdir(), `tessera-serve-${name}-`));
    const port = await freePort();
    const config = join(dir, 'tessera.yaml');
    writeFileSync(config, `data_dir: .tessera\nserver: { host: 127.0.0.1, port: ${port} }\n`);
    await initialize({ config });
    return { dir, port, config };
  };

  it('drains for a bounded time on close: a request that never finishes is cut, not waited for', async () => {
    const { dir: alone, port, config } = await tokenServiceAlone('drain');
    const server = await startServer({
      config,
      logger: pino({ level: 'warn' }, logStream),
      drainTimeout: 300,
    });
    // A token request whose body never arrives in full: the handler waits for it.
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(STALLED_TOKEN_REQUEST);
    const cut = once(socket, 'close');
    await new Promise((r) => setTimeout(r, 100));
    try {
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        server.close().then(() => 'closed'),
        new Promise((r) => {
          timer = setTimeout(() => r('still waiting after 5 s'), 5000);
        }),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, 'closed', 'the request that never finishes was waited for');
      const took = Date.now() - started;
      await cut;
      assert.ok(took >= 250, `closed after ${took} ms, before the drain time was up`);
    } finally {
      socket.destroy();
      rmSync(alone, { recursive: true, force: true });
    }
  });

  it('a catch-all in token_service.authorization.trusted_header.allowed_peers is warned about at start in a config_warning line of the logger, as the gateway’s own configuration warnings are', async () => {
    const { dir: alone, port, config } = await tokenServiceAlone('config-warning');
    writeFileSync(
      config,
      `data_dir: .tessera\nserver: { host: 127.0.0.1, port: ${port} }\ntoken_service:\n  authorization: { enabled: true, trusted_header: { secret: "${'s'.repeat(32)}", allowed_peers: ["0.0.0.0/0"] } }\n`,
    );
    const lines: Record<string, unknown>[] = [];
    let server: RunningServer | undefined;
    try {
      server = await startServer({ config, logger: pino({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l)) }) });
    } finally {
      await server?.close();
      rmSync(alone, { recursive: true, force: true });
    }
    const warned = lines.filter((l) => JSON.stringify(l).includes('trusted_header.allowed_peers[0]'));
    assert.equal(warned.length, 1, JSON.stringify(lines));
    assert.equal(warned[0]?.event, 'config_warning');
    assert.equal(warned[0]?.component, 'token_service');
    assert.equal(warned[0]?.level, 40);
  });

  it('a second signal during the drain (SIGINT, then SIGTERM) ends the process at once, as under the gateway', async () => {
    const { dir: alone, port, config } = await tokenServiceAlone('signals');
    const root = new URL('../../', import.meta.url).pathname;
    const script = `
      import { startServer } from '${root}src/cli/commands/serve.ts';
      await startServer({ config: ${JSON.stringify(config)}, signals: true });
      process.stderr.write('ready\\n');
    `;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.once('exit', (code, signal) => resolve([code, signal])),
    );
    const socket = new Socket();
    try {
      const deadline = Date.now() + 10_000;
      while (!err.includes('ready') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(err.includes('ready'), err);
      // A request that never finishes holds the drain open (10 s) after the first signal.
      socket.connect(port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write(STALLED_TOKEN_REQUEST);
      await new Promise((r) => setTimeout(r, 100));
      child.kill('SIGINT');
      await new Promise((r) => setTimeout(r, 200));
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        exited,
        new Promise((r) => {
          timer = setTimeout(() => r('still draining 5 s after the second signal'), 5000);
        }),
      ]);
      clearTimeout(timer);
      assert.deepEqual(outcome, [null, 'SIGTERM']);
    } finally {
      socket.destroy();
      child.kill('SIGKILL');
      rmSync(alone, { recursive: true, force: true });
    }
  });

  it('slowloris: a client trickling its request head is answered 408 and cut once 20 s pass (the gateway.limits defaults), not after the Node defaults (60 s, checked every 30 s)', async () => {
    const { dir: alone, port, config } = await tokenServiceAlone('slowloris');
    const server = await startServer({
      config,
      logger: pino({ level: 'warn' }, logStream),
      drainTimeout: 100,
    });
    try {
      // One header line every second: each keeps the socket busy, none ends the head.
      const { answer, ms } = await trickleHead(port, 'POST /oauth2/token HTTP/1.1\r\nHost: x\r\n', 1000, 30_000);
      assert.match(answer, /^HTTP\/1\.1 408 /);
      // Well under the 60 s (checked every 30 s) of Node's defaults; loose above, for a loaded machine.
      assert.ok(ms >= 19_000 && ms < 29_000, `cut after ${Math.round(ms)} ms`);
    } finally {
      await server.close();
      rmSync(alone, { recursive: true, force: true });
    }
  });

  it('answers /healthz and /readyz (store, signing key, revocation log read lately) for probes and /metrics, 405 to another method on them, and 404 for anything else it does not serve', async () => {
    const { dir: alone, config } = await tokenServiceAlone('alone');
    const server = await startServer({ config, logger: pino({ level: 'warn' }, logStream) });
    try {
      const health = await fetch(`${server.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok' });
      const ready = await fetch(`${server.url}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), {
        status: 'ready',
        checks: [
          { name: 'store', ok: true },
          { name: 'signing_key', ok: true },
          { name: 'revocations', ok: true },
        ],
      });
      // The probes are read-only, as the gateway's: another method is 405, not a missing path.
      for (const path of ['/healthz', '/readyz']) {
        const post = await fetch(`${server.url}${path}`, { method: 'POST' });
        assert.equal(post.status, 405, path);
        assert.equal(post.headers.get('allow'), 'GET, HEAD');
        assert.equal(post.headers.get('cache-control'), 'no-store');
      }
      assert.equal((await fetch(`${server.url}/readyz`, { method: 'HEAD' })).status, 200);
      // token_service.operations' defaults: /metrics to loopback (test/cli/serve-metrics.test.ts).
      assert.equal((await fetch(`${server.url}/metrics`)).status, 200);
      assert.equal((await fetch(`${server.url}/elsewhere`)).status, 404);
      assert.equal((await fetch(`${server.url}/.well-known/oauth-authorization-server`)).status, 200);
    } finally {
      await server.close();
      rmSync(alone, { recursive: true, force: true });
    }
  });
  it("audit.on_queue_full: refuse adds /readyz's 'token service audit queue' check (absent with drop, above): ok while the queue has room, 503 naming it while the store refuses audit writes past max_queue, ready again once it takes them", async () => {
    const { dir: alone, port, config } = await tokenServiceAlone('audit-full');
    writeFileSync(
      config,
      `data_dir: .tessera\nserver: { host: 127.0.0.1, port: ${port} }\naudit: { max_queue: 1, on_queue_full: refuse }\ntoken_service: { audit_flush_interval: 20ms }\n`,
    );
    const lines: string[] = [];
    const server = await startServer({ config, logger: pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) }) });
    const admin = new DatabaseSync(join(alone, '.tessera', 'tessera.db'));
    const checks = async () => {
      const res = await fetch(`${server.url}/readyz`);
      return { status: res.status, checks: ((await res.json()) as { checks: { name: string; ok: boolean; detail?: string }[] }).checks };
    };
    try {
      const ready = await checks();
      assert.equal(ready.status, 200);
      assert.deepEqual(
        ready.checks.find((c) => c.name === 'token service audit queue'),
        { name: 'token service audit queue', ok: true },
      );
      admin.exec(`CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit volume full'); END`);
      // A refused token request is one audited event (token.denied): max_queue is 1.
      const denied = await fetch(`${server.url}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('nobody', 'wrong'), 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials',
      });
      assert.equal(denied.status, 401);
      await until(async () => (await checks()).status === 503, 5000);
      const full = (await checks()).checks.find((c) => c.name === 'token service audit queue');
      assert.equal(full?.ok, false);
      assert.match(full?.detail ?? '', /full: requests are refused/);
      // A revocation request is served all the same; its refusal's event (no slot, and no revocation
      // record to keep) is dropped, never silently: one audit_events_dropped line at level error
      // (pino's 50) in the log, with the count by kind.
      const revoked = await fetch(`${server.url}/oauth2/revoke`, {
        method: 'POST',
        headers: { authorization: basic('nobody', 'wrong'), 'content-type': 'application/x-www-form-urlencoded' },
        body: 'token=whatever',
      });
      assert.equal(revoked.status, 401);
      await until(async () => lines.some((l) => l.includes('"audit_events_dropped"')), 5000);
      const line = JSON.parse(lines.find((l) => l.includes('"audit_events_dropped"')) as string);
      assert.equal(line.level, 50);
      assert.equal(line.component, 'token_service');
      assert.deepEqual(line.kinds, { 'revocation.denied': 1 });
      assert.equal(line.events, 1);
      assert.match(line.msg, /^1 audit events of the token service were dropped and are lost/);
      admin.exec('DROP TRIGGER audit_down');
      await until(async () => (await checks()).status === 200, 5000);
    } finally {
      admin.close();
      await server.close();
      rmSync(alone, { recursive: true, force: true });
    }
  });
  it('a start whose only key row was altered (its schedule rewritten) refuses to serve with one line that names that cause beside a stale master key, and no key material', async () => {
    const { dir: alone, config } = await tokenServiceAlone('key-altered');
    const admin = new DatabaseSync(join(alone, '.tessera', 'tessera.db'));
    try {
      const row = admin.prepare('SELECT kid, sealed_private_key, mac FROM signing_keys').get() as Record<string, string>;
      admin.prepare('UPDATE signing_keys SET activates_at = activates_at - 1 WHERE kid = ?').run(row.kid as string);
      const refused = await startServer({ config, logger: pino({ level: 'silent' }) }).then(
        async (s) => {
          await s.close();
          return undefined;
        },
        (e: unknown) => e as Error,
      );
      assert.ok(refused, 'the server did not start');
      assert.match(
        refused.message,
        /^the master key .* does not open the signing keys in the store: it is not the one they were sealed with, or the row of the key signing now was altered in the store \(`tessera keys list` names it and why\)$/,
      );
      assert.ok(!refused.message.includes(row.sealed_private_key as string) && !refused.message.includes(row.mac as string));
    } finally {
      admin.close();
      rmSync(alone, { recursive: true, force: true });
    }
  });
  it("/readyz's signing_key check names the active key whose row was deleted behind the server, why it is refused and what recovers (no key material), and is ok again after `tessera keys rotate --now`", async () => {
    const { dir: alone, config } = await tokenServiceAlone('key-deleted');
    const server = await startServer({ config, logger: pino({ level: 'silent' }) });
    const admin = new DatabaseSync(join(alone, '.tessera', 'tessera.db'));
    const signingKey = async () => {
      const res = await fetch(`${server.url}/readyz`);
      const body = await res.text();
      const check = (JSON.parse(body) as { checks: { name: string; ok: boolean; detail?: string }[] }).checks.find(
        (c) => c.name === 'signing_key',
      );
      return { status: res.status, body, check };
    };
    try {
      assert.deepEqual((await signingKey()).check, { name: 'signing_key', ok: true });
      const row = admin.prepare('SELECT kid, sealed_private_key, public_jwk, mac FROM signing_keys').get() as Record<string, string>;
      admin.prepare('DELETE FROM signing_keys WHERE kid = ?').run(row.kid as string);
      await until(async () => (await signingKey()).status === 503, 5000);
      const { body, check } = await signingKey();
      assert.equal(check?.ok, false);
      assert.match(
        check?.detail ?? '',
        new RegExp(`^signing key ${row.kid} refused: its row was deleted from the store .*; run \`tessera keys rotate --now\`$`),
      );
      assert.ok(!body.includes(row.sealed_private_key as string) && !body.includes(row.mac as string));
      for (const v of Object.values(JSON.parse(row.public_jwk as string) as Record<string, string>)) assert.ok(!body.includes(v));
      await promisify(execFile)(
        process.execPath,
        [new URL('../../src/cli/main.ts', import.meta.url).pathname, 'keys', 'rotate', '--now', '--config', config],
        {
          cwd: alone,
        },
      );
      await until(async () => (await signingKey()).status === 200, 5000);
    } finally {
      admin.close();
      await server.close();
      rmSync(alone, { recursive: true, force: true });
    }
  });

  it('Expect: 100-continue: a token request over the body limit gets 413 without 100 Continue; one within it gets 100, then its token', async () => {
    const { dir: alone, config } = await tokenServiceAlone('continue');
    const server = await startServer({ config, logger: pino({ level: 'warn' }, logStream) });
    try {
      const client = await server.service.registerClient({
        id: 'c',
        scopes: [],
        audiences: ['https://api.test'],
        grantTypes: ['client_credentials'],
      });
      const auth = `Authorization: ${basic('c', client.secret as string)}`;
      const over = await postExpecting(server.url, '/oauth2/token', [FORM, auth], '', 70_000);
      assert.equal(over.first, 413, over.text);
      assert.equal(over.bodySent, false);
      const ok = await postExpecting(server.url, '/oauth2/token', [FORM, auth], 'grant_type=client_credentials');
      assert.equal(ok.first, 100, ok.text);
      assert.match(ok.text, /"access_token":"/);
    } finally {
      await server.close();
      rmSync(alone, { recursive: true, force: true });
    }
  });
});

describe('tessera serve: a host that does not resolve', () => {
  it('is one line naming the host and where it is set, not an unexpected getaddrinfo error', () => {
    for (const code of ['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME']) {
      const e = listenError(Object.assign(new Error(`getaddrinfo ${code} gw.invalid`), { code }), 'gw.invalid', 8080);
      assert.ok(e instanceof CliError);
      assert.equal(e.message, 'gw.invalid is not a name this machine resolves to one of its addresses; fix server.host (or --host)');
    }
  });
});

describe('tessera serve: SIGTERM with a request in flight and the store locked', () => {
  it('ends within gateway.drain_timeout and the audit floor (1 s), not a drain_timeout per stage, and logs how many audit events it dropped', async () => {
    const site = mkdtempSync(join(tmpdir(), 'tessera-serve-deadline-'));
    // Never answers: the request is in flight until the drain gives up on it.
    const slow = await startUpstream(() => undefined);
    const port = await freePort();
    const config = join(site, 'tessera.yaml');
    writeFileSync(
      config,
      `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
store: { driver: sqlite, sqlite: { busy_timeout: 100ms } }
gateway:
  drain_timeout: 2s
  watch_config: false
  routes:
    - { id: api, match: { path_prefix: /api }, upstream: { url: ${slow.url} }, auth: none }
`,
    );
    await initialize({ config });
    const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [MAIN, 'serve', '-c', config], { cwd: site, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const collect = (d: Buffer) => {
      out += d.toString();
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const { DatabaseSync } = await import('node:sqlite');
    // Another process's write transaction on the store: every audit write waits out the busy timeout and fails.
    const other = new DatabaseSync(join(site, '.tessera', 'tessera.db'));
    const base = `http://127.0.0.1:${port}`;
    try {
      await until(() => out.includes('"msg":"listening"'), 10_000);
      other.exec('BEGIN IMMEDIATE');
      // An audit event of the token service (a refused client) and one of the gateway (the request cut).
      const refused = await fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('nobody', 'not-the-secret'), 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials',
      });
      assert.equal(refused.status, 401);
      const inFlight = fetch(`${base}/api/slow`).then(
        (r) => r.status,
        () => 'cut',
      );
      await until(() => slow.seen.length === 1);

      const started = performance.now();
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([
        exited,
        new Promise((r) => {
          timer = setTimeout(() => r('still running 8 s after SIGTERM'), 8000);
        }),
      ]);
      clearTimeout(timer);
      const took = performance.now() - started;
      assert.equal(code, 0, out);
      assert.ok(took >= 1900, `the request in flight had drain_timeout to finish (${Math.round(took)} ms)`);
      // drain_timeout (2 s) + the audit floor (1 s) + a margin; before, a drain_timeout each for the
      // requests, the gateway's audit events and the token service's (6 s and more).
      assert.ok(took < 4300, `shutdown took ${Math.round(took)} ms, past drain_timeout and the audit floor`);
      assert.equal(await inFlight, 502);
      const lines = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      // One line each, of one shape: the event, whose, how many, at level error (pino's 50), and a
      // message naming the deadline, not the sliver of it the token service was left.
      const lost = lines.filter((l) => l.event === 'audit_events_lost');
      const gatewayLost = lost.find((l) => l.component === 'gateway');
      const serviceLost = lost.find((l) => l.component === 'token_service');
      assert.equal(lost.length, 2, out);
      assert.ok(typeof gatewayLost?.events === 'number' && gatewayLost.events >= 1, out);
      assert.equal(gatewayLost.level, 50);
      assert.match(
        String(gatewayLost.msg),
        /^\d+ audit events of the gateway were not written to every output by the shutdown deadline and are lost$/,
      );
      assert.ok(typeof serviceLost?.events === 'number' && serviceLost.events >= 1, out);
      assert.equal(serviceLost.level, 50);
      assert.equal(
        serviceLost.msg,
        `${serviceLost.events} audit events of the token service were not written to the store by the shutdown deadline and are lost`,
      );
      assert.ok(!out.includes('not-the-secret'), 'no secret in the output');
    } finally {
      child.kill('SIGKILL');
      other.close();
      await slow.close();
      rmSync(site, { recursive: true, force: true });
    }
  });
});
