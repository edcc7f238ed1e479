/**
 * `tessera trace ID` on a real chain: `tessera serve` (token service and gateway, one SQLite file)
 * issues a client-credentials token, two token exchanges narrow it (agent, then assistant), the
 * last token calls through the gateway (one route with a static upstream credential, one minting
 * an upstream token), the middle grant is revoked, and the token is refused. Then the command,
 * as a user runs it, traces the chain from each kind of id; no output ever holds a token or secret.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import pino from 'pino';
import type { AuditEvent } from '../../src/audit/event.ts';
import { uuidv7 } from '../../src/audit/id.ts';
import type { Trace } from '../../src/audit/trace.ts';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { tokenHash } from '../../src/issuer/secrets.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const UPSTREAM_AUD = 'https://upstream.internal';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';

let dir: string;
let upstream: Upstream;
const secrets: string[] = [];
const outputs: string[] = [];
/** The chain: grants g0 (client credentials) → g1 (agent's exchange) → g2 (assistant's) → g3 (the gateway's, upstream). */
const chain = { g0: '', g1: '', g2: '', g3: '', jti0: '', jti1: '', jti2: '', t2: '', hash2: '' };

function trace(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [MAIN, 'trace', ...args], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, TESSERA_MASTER_KEY: '' },
    ...(input !== undefined ? { input } : {}),
  });
  outputs.push(r.stdout, r.stderr);
  return r;
}

function json(args: string[], input?: string): Trace {
  const r = trace([...args, '--json'], input);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Trace;
}

before(async () => {
  const saved = process.env.TESSERA_MASTER_KEY;
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-trace-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  upstream = await startUpstream();
  writeFileSync(
    join(dir, 'tessera.yaml'),
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${base}, audiences: [${base}/api], jwks_uri: ${base}/.well-known/jwks.json, token_type: at+jwt }
scopes:
  api:read: {}
  api:write: { implies: [api:read] }
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
`,
  );
  await initialize({ config: join(dir, 'tessera.yaml') });
  const running: RunningServer = await startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'silent' }) });
  try {
    const register = async (id: string, scopes: string[], audiences: string[], grantTypes: string[]) => {
      const { secret } = await running.service.registerClient({ id, scopes, audiences, grantTypes });
      secrets.push(secret as string);
      return secret as string;
    };
    const agent = await register('agent', ['api:read', 'api:write'], [`${base}/api`, 'assistant'], ['client_credentials', TOKEN_EXCHANGE]);
    const assistant = await register('assistant', ['api:read'], [`${base}/api`], [TOKEN_EXCHANGE]);
    await register('tessera-gateway', ['api:read'], [UPSTREAM_AUD], [TOKEN_EXCHANGE]);
    const tokenRequest = async (id: string, secret: string, form: Record<string, string | string[]>) => {
      const body = new URLSearchParams();
      for (const [k, v] of Object.entries(form)) for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
      const res = await fetch(`${base}/oauth2/token`, { method: 'POST', headers: { authorization: basic(id, secret) }, body });
      assert.equal(res.status, 200, await res.clone().text());
      const { access_token } = (await res.json()) as { access_token: string };
      secrets.push(access_token);
      const c = decodeJwt(access_token);
      return { token: access_token, jti: c.jti as string, grant: c.grant_id as string };
    };
    const t0 = await tokenRequest('agent', agent, {
      grant_type: 'client_credentials',
      scope: 'api:read api:write',
      audience: [`${base}/api`, 'assistant'],
    });
    const t1 = await tokenRequest('agent', agent, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: t0.token,
      subject_token_type: ACCESS,
      scope: 'api:read api:write',
      audience: [`${base}/api`, 'assistant'],
    });
    const t2 = await tokenRequest('assistant', assistant, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: t1.token,
      subject_token_type: ACCESS,
      scope: 'api:read',
      audience: `${base}/api`,
    });
    Object.assign(chain, { g0: t0.grant, g1: t1.grant, g2: t2.grant, jti0: t0.jti, jti1: t1.jti, jti2: t2.jti, t2: t2.token });
    chain.hash2 = tokenHash(t2.token);
    const call = (path: string, requestId: string) =>
      fetch(`${base}${path}`, { headers: { authorization: `Bearer ${t2.token}`, 'x-request-id': requestId } });
    assert.equal((await call('/api/items?q=secret-query', 'trace-req-1')).status, 200);
    assert.equal((await call('/minted/report', 'trace-req-2')).status, 200);
    const minted = upstream.seen.at(-1)?.headers.authorization?.replace(/^Bearer /, '') as string;
    secrets.push(minted);
    chain.g3 = decodeJwt(minted).grant_id as string;
    // A caller chooses its own X-Request-Id: this one collides with a jti.
    assert.equal((await call('/api/items', chain.jti1)).status, 200);
    await running.service.revokeGrants({ grantId: t1.grant }, 'compromised', 'oncall');
    assert.equal((await call('/api/items', 'trace-req-after')).status, 401);
  } finally {
    await running.close();
    if (saved !== undefined) process.env.TESSERA_MASTER_KEY = saved;
  }
  const env = readFileSync(join(dir, '.tessera', 'secrets.env'), 'utf8');
  for (const m of env.matchAll(/^[A-Z_]+=(.+)$/gm)) secrets.push(m[1] as string);
});

after(async () => {
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('tessera trace', () => {
  it('traces a request id from the root grant down to the decision, with the revocation', () => {
    const r = trace(['trace-req-1']);
    assert.equal(r.status, 0, r.stderr);
    const out = r.stdout;
    assert.match(out, /^trace of request id trace-req-1\n/);
    assert.match(out, new RegExp(`^grant ${chain.g0}  client_credentials · root\\n`, 'm'));
    assert.match(out, new RegExp(`└── grant ${chain.g1}  token_exchange · actor agent · REVOKED \\S+ \\(compromised\\)`));
    assert.match(out, new RegExp(`grant ${chain.g2}  token_exchange · actor assistant > agent · REVOKED \\S+ \\(compromised\\)  ◀`));
    assert.match(out, /subject agent · client assistant · issuer http:\/\/127\.0\.0\.1:\d+/);
    assert.match(out, new RegExp(`token ${chain.jti2}  token.exchanged  ◀`));
    assert.match(out, /allow ok · GET \/api\/items\?q= · route api · upstream 200 · [\d.]+ ms · request trace-req-1 {2}◀/);
    assert.match(
      out,
      /deny token_revoked · GET \/api\/items · route api · [\d.]+ ms · request trace-req-after\n/,
      'the refusal after the revocation',
    );
    assert.match(out, new RegExp(`grant ${chain.g3}  upstream · actor tessera-gateway > assistant > agent`), 'the upstream call');
    assert.match(out, new RegExp(`^revocations\\n(  .*\\n)*  \\S+  grant.revoked compromised · grant ${chain.g1} · by oncall$`, 'm'));
    assert.doesNotMatch(out, new RegExp(chain.jti0), 'only the request’s own token is listed');
    assert.ok(out.split('\n').length <= 60, `one screen: ${out.split('\n').length} lines`);
  });

  it('prints the request trace as JSON: the chain root first, the focus, the token and the matched decision', () => {
    const t = json(['trace-req-1']);
    assert.deepEqual(t.query, { kind: 'request', value: 'trace-req-1', from_token: false });
    assert.deepEqual(
      t.grants.map((g) => [g.id, g.kind, g.focus]),
      [
        [chain.g0, 'client_credentials', false],
        [chain.g1, 'token_exchange', false],
        [chain.g2, 'token_exchange', true],
        [chain.g3, 'upstream', false],
      ],
    );
    const [g0, g1, g2] = t.grants;
    assert.equal(g0?.parent_id, null);
    assert.equal(g0?.subject, 'agent');
    assert.deepEqual(g0?.scopes, ['api:read', 'api:write']);
    assert.equal(g0?.revoked_at, null);
    assert.deepEqual(g1?.actor_chain, ['agent']);
    assert.equal(g1?.revoked_reason, 'compromised');
    assert.deepEqual(g2?.actor_chain, ['assistant', 'agent']);
    assert.deepEqual(g2?.scopes, ['api:read']);
    assert.deepEqual(
      g2?.tokens.map((k) => k.jti),
      [chain.jti2],
    );
    const token = g2?.tokens[0];
    assert.equal(token?.event, 'token.exchanged');
    assert.ok(token?.expires_at !== null && Date.parse(token?.expires_at as string) > Date.parse(token?.issued_at as string));
    const matched = token?.requests.filter((r) => r.matched) ?? [];
    assert.deepEqual(
      matched.map((r) => [r.request_id, r.route, r.method, r.path, r.decision, r.upstream_status]),
      [['trace-req-1', 'api', 'GET', '/api/items?q=', 'allow', 200]],
    );
    assert.deepEqual(
      t.revocations.map((r) => [r.kind, r.delegation_id, r.reason]),
      [chain.g1, chain.g2, chain.g3].map((g) => ['grant.revoked', g, 'compromised']),
    );
    assert.equal(t.truncated, false);
  });

  it('traces a jti: every use of that token, the minted upstream grant below it', () => {
    const t = json([chain.jti2]);
    assert.deepEqual(t.query, { kind: 'jti', value: chain.jti2, from_token: false });
    const focus = t.grants.find((g) => g.focus);
    assert.equal(focus?.id, chain.g2);
    assert.deepEqual(
      focus?.tokens[0]?.requests.map((r) => [r.request_id, r.route, r.decision, r.matched]),
      [
        ['trace-req-1', 'api', 'allow', true],
        ['trace-req-2', 'minted', 'allow', true],
        [chain.jti1, 'api', 'allow', true],
        ['trace-req-after', 'api', 'deny', true],
      ],
    );
    const upstreamGrant = t.grants.find((g) => g.id === chain.g3);
    assert.equal(upstreamGrant?.client_id, 'tessera-gateway');
    assert.deepEqual(upstreamGrant?.audiences, [UPSTREAM_AUD]);
    assert.equal(upstreamGrant?.tokens.length, 1, 'the token minted for the upstream call');
  });

  it('traces a grant id: its ancestors, its own tokens and everything delegated from it', () => {
    const t = json([chain.g1]);
    assert.deepEqual(t.query, { kind: 'grant', value: chain.g1, from_token: false });
    assert.deepEqual(
      t.grants.map((g) => [g.id, g.focus, g.tokens.map((k) => k.jti)]),
      [
        [chain.g0, false, []],
        [chain.g1, true, [chain.jti1]],
        [chain.g2, false, [chain.jti2]],
        [chain.g3, false, [t.grants[3]?.tokens[0]?.jti]],
      ],
    );
    const text = trace([chain.g1]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^trace of grant id ${chain.g1}\\n`));
    assert.match(text.stdout, new RegExp(`token ${chain.jti1}  token.exchanged\\n`));
  });

  it('traces a token hash, as the gateway recorded it', () => {
    // After `--`: a token hash starts with '-' one time in 64, and would then read as an option.
    const r = trace(['--json', '--', chain.hash2]);
    assert.equal(r.status, 0, r.stderr);
    const t = JSON.parse(r.stdout) as Trace;
    assert.deepEqual(t.query, { kind: 'token-hash', value: chain.hash2, from_token: false });
    assert.equal(t.grants.find((g) => g.focus)?.id, chain.g2);
    assert.equal(t.grants.find((g) => g.focus)?.tokens[0]?.requests.length, 4);
  });

  it('traces a pasted token by its hash without printing it, and says it is now in the shell history', () => {
    const r = trace([chain.t2, '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as Trace).query, { kind: 'token-hash', value: chain.hash2, from_token: true });
    assert.equal(r.stderr, 'tessera: note: a token given as an argument stays in the shell history; pass - to read it from stdin\n');
    const text = trace(['-'], `${chain.t2}\n`);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stderr, '', 'read from stdin: no note');
    assert.match(text.stdout, new RegExp(`^trace of the pasted token \\(token hash ${chain.hash2}\\)\\n`));
  });

  it('traces a pasted JWT whose hash is unknown by its jti claim, saying the signature was not checked', () => {
    const tampered = `${chain.t2.slice(0, -4)}AAAA`;
    const r = trace([tampered]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^trace of jti ${chain.jti2} \\(read from the pasted token; its signature was not checked\\)\n`));
    assert.deepEqual(json([tampered]).query, { kind: 'jti', value: chain.jti2, from_token: true });
    secrets.push(tampered);
  });

  it('refuses an id that is both a request id and a jti, and traces it with --kind', () => {
    const r = trace([chain.jti1]);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `tessera: "${chain.jti1}" matches a request id and a jti; choose one with --kind request|jti\n`);
    assert.equal(json([chain.jti1, '--kind', 'jti']).grants.find((g) => g.focus)?.id, chain.g1);
    assert.equal(json([chain.jti1, '--kind', 'request']).grants.find((g) => g.focus)?.id, chain.g2);
  });

  it('exits 1 with one line when nothing matches, naming an id only when it has an id’s shape', () => {
    const uuid = '0f8e2c1a-5d7b-4c2e-9a61-3b2d4f5e6a7b';
    const r = trace([uuid, '--json']);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `tessera: nothing matches "${uuid}" as a request id, jti, or grant id, in the audit trail or the grants\n`);
    const odd = trace(['maybe-a-static-token-0123456789']);
    assert.equal(odd.status, 1);
    assert.equal(
      odd.stderr,
      'tessera: nothing matches the given ID as a request id, jti, grant id, or token hash, in the audit trail or the grants\n',
    );
    const [header] = chain.t2.split('.');
    const jwt = trace([`${header}.${Buffer.from('{"jti":"no-such-jti"}').toString('base64url')}.AAAA`]);
    assert.equal(jwt.status, 1);
    assert.match(
      jwt.stderr,
      /^tessera: nothing matches the pasted token \(token hash [\w-]{16}\) as a token hash or jti, in the audit trail or the grants\n$/,
    );
  });

  it('refuses a client secret without looking it up or printing it, and a bad --kind', () => {
    const r = trace([secrets[0] as string]);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      'tessera: that is a client secret, not an ID; nothing was looked up. If it leaked, rotate it with `tessera clients update`\n',
    );
    const k = trace(['x', '--kind', 'user']);
    assert.equal(k.status, 1);
    assert.match(k.stderr, /^tessera: --kind must be one of request, jti, grant, token-hash, not "user"/);
    const spaced = trace(['two words']);
    assert.equal(spaced.status, 1);
    assert.equal(
      spaced.stderr,
      'tessera: the ID must be printable ASCII without spaces, at most 256 characters (a request id, jti, grant id or token hash)\n',
    );
  });

  it('leads to `tessera audit query --jti` for the rest of a token’s uses, which filters by jti and token hash', () => {
    const run = (...args: string[]) => {
      const r = spawnSync(process.execPath, [MAIN, 'audit', 'query', '--since', '1h', '--json', ...args], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      outputs.push(r.stdout, r.stderr);
      assert.equal(r.status, 0, r.stderr);
      return (JSON.parse(r.stdout) as { kind: string; request_id?: string }[]).map((e) => `${e.kind} ${e.request_id ?? '-'}`);
    };
    assert.equal(run('--jti', chain.jti2).filter((e) => e.startsWith('gateway.request')).length, 4);
    assert.deepEqual(run('--token-hash', chain.hash2, '--request-id', 'trace-req-2'), ['gateway.request trace-req-2']);
  });

  it('says that an id starting with - goes after --, rather than only that no such option exists', () => {
    const r = trace(['-hPfCmzAqgriAuJ4']);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(
      r.stderr,
      /^tessera: unknown option '-hPfCmzAqgriAuJ4'; a value that starts with '-' goes after -- \(run with --help for usage\)\n$/,
    );
    assert.match(trace(['--kind', 'token-hash', '--', '-hPfCmzAqgriAuJ4']).stderr, /^tessera: /, 'after --, it is looked up');
  });

  it('documents itself in --help with an example', () => {
    const r = spawnSync(process.execPath, [MAIN, 'trace', '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /Usage: tessera trace \[options\] <id>/);
    assert.match(r.stdout, /tessera trace -\s+# a token: looked up by its hash, never printed/);
    assert.match(spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8' }).stdout, /^ {2}trace \[options\] <id>/m);
  });

  it('never prints a token, a client secret or the upstream credential', () => {
    assert.ok(outputs.length > 20 && secrets.length >= 8, `${outputs.length} outputs, ${secrets.length} secrets`);
    for (const s of secrets) {
      for (const o of outputs) assert.ok(!o.includes(s), `a secret (${s.slice(0, 6)}…) appeared in output`);
    }
  });
});

describe('tessera trace: what a caller put in the trail cannot rewrite the screen', () => {
  let own: string;
  before(async () => {
    own = mkdtempSync(join(tmpdir(), 'tessera-trace-escape-'));
    await initialize({ config: join(own, 'tessera.yaml') });
    const store = await SqliteStore.open({ path: join(own, '.tessera', 'tessera.db') });
    // Any caller with a token chooses the MCP tool name it calls: newlines, ANSI and C1 escapes, a bidi override.
    await store.appendAudit([
      {
        id: uuidv7(),
        time: Date.now(),
        kind: 'gateway.request',
        decision: 'deny',
        reason: 'insufficient_scope',
        request_id: 'escape-req-1',
        route: 'mcp',
        method: 'POST',
        path: '/mcp',
        tool: 'search\n  revocations\n  2026-01-01T00:00:00Z  grant.revoked ok\x1b[2K\x9b2K\u202e',
        subject: 'mallory\x1b]0;owned\x07',
      },
    ]);
    // A trusted identity provider's sub, an actor and an audience its tokens named; a path a
    // forward-auth proxy reported; an admin's name: each holding what reads as fields of its own.
    const now = Math.floor(Date.now() / 1000);
    const forged = await store.createGrant(
      {
        id: 'g_forge-1',
        parentId: null,
        kind: 'token_exchange',
        issuer: 'https://idp.example',
        subject: 'mallory · client admin-cli · issuer https://tessera.example',
        clientId: 'demo-agent',
        act: null,
        scopes: ['api:read'],
        audiences: ['https://api.example aud https://admin.example'],
        createdAt: now,
        expiresAt: now + 3600,
      },
      now,
    );
    assert.equal(typeof forged, 'object');
    const child = await store.createGrant(
      {
        id: 'g_forge-2',
        parentId: 'g_forge-1',
        kind: 'token_exchange',
        issuer: 'https://idp.example',
        subject: 'mallory · client admin-cli · issuer https://tessera.example',
        clientId: 'demo-agent',
        act: { sub: 'bot > admin-agent' },
        scopes: ['api:read'],
        audiences: ['https://api.example'],
        createdAt: now,
        expiresAt: now + 3600,
      },
      now,
    );
    assert.equal(typeof child, 'object');
    await store.appendAudit([
      {
        id: uuidv7(),
        time: Date.now(),
        kind: 'grant.revoked',
        decision: 'allow',
        reason: 'admin',
        delegation_id: 'g_forge-1',
        detail: { by: 'root · jti 0193-forged' },
      },
      {
        id: uuidv7(),
        time: Date.now(),
        kind: 'gateway.forward_auth',
        decision: 'deny',
        reason: 'insufficient_scope',
        request_id: 'forge-req-1',
        route: 'api',
        method: 'GET',
        path: '/a · route admin · upstream 200',
      },
    ]);
    await store.close();
  });
  after(() => rmSync(own, { recursive: true, force: true }));

  it('prints control characters escaped, one decision on one line; --json keeps the value', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [MAIN, 'trace', 'escape-req-1', ...args], {
        cwd: own,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
    const r = run();
    assert.equal(r.status, 0, r.stderr);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none of these may reach the terminal
    assert.doesNotMatch(r.stdout, /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    assert.doesNotMatch(r.stdout, /^\s*revocations$/m, 'no forged section');
    // Quoted as a JSON string (ESC as \u001b), what JSON leaves raw escaped on top.
    assert.match(r.stdout, /tool "search\\n {2}revocations\\n {2}2026-01-01T00:00:00Z {2}grant\.revoked ok\\u001b\[2K\\x9b2K\\u202e"/);
    const j = JSON.parse(run('--json').stdout) as Trace;
    assert.equal(j.requests[0]?.tool?.startsWith('search\n'), true);
  });

  it('attack: a subject, actor, audience, path or revoker holding spaces is one quoted field (as in audit query), never fields of its own: an identity provider’s sub `mallory · client admin-cli` passed for a client', () => {
    const run = (id: string) =>
      spawnSync(process.execPath, [MAIN, 'trace', id], { cwd: own, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
    const g = run('g_forge-1');
    assert.equal(g.status, 0, g.stderr);
    assert.match(
      g.stdout,
      /subject "mallory · client admin-cli · issuer https:\/\/tessera\.example" · client demo-agent · issuer https:\/\/idp\.example$/m,
    );
    assert.match(g.stdout, /aud "https:\/\/api\.example aud https:\/\/admin\.example"$/m);
    assert.match(g.stdout, /grant g_forge-2 {2}token_exchange · actor "bot > admin-agent"/);
    assert.match(g.stdout, /grant\.revoked admin · grant g_forge-1 · by "root · jti 0193-forged"$/m);
    const r = run('forge-req-1');
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /deny insufficient_scope · GET "\/a · route admin · upstream 200" · gateway\.forward_auth · route api · request forge-req-1/,
    );
  });

  it('attack: --json (trace, audit query, audit tail) writes no raw C1 control, DEL, line separator or bidi override either (JSON.stringify leaves them raw; a terminal reads U+009B as CSI), and the value parses back the same', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [MAIN, ...args], {
        cwd: own,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
    const unsafe = /[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
    const traced = run('trace', 'escape-req-1', '--json');
    assert.equal(traced.status, 0, traced.stderr);
    assert.doesNotMatch(traced.stdout, unsafe, 'trace --json');
    assert.equal((JSON.parse(traced.stdout) as Trace).requests[0]?.tool?.endsWith('\x1b[2K\x9b2K\u202e'), true);
    const queried = run('audit', 'query', '--request-id', 'escape-req-1', '--since', '30d', '--json');
    assert.equal(queried.status, 0, queried.stderr);
    assert.doesNotMatch(queried.stdout, unsafe, 'audit query --json');
    assert.equal((JSON.parse(queried.stdout) as AuditEvent[])[0]?.subject, 'mallory\x1b]0;owned\x07');
    const tailed = run('audit', 'tail', '--since', '30d', '--json');
    assert.equal(tailed.status, 0, tailed.stderr);
    assert.doesNotMatch(tailed.stdout, unsafe, 'audit tail --json');
    const lines = tailed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEvent);
    assert.equal(lines.find((e) => e.request_id === 'escape-req-1')?.subject, 'mallory\x1b]0;owned\x07');
  });
});
