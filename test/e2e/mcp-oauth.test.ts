/**
 * Tessera's whole MCP story, end to end with real components: `tessera serve` (token service and
 * gateway, one SQLite file) runs as its own process, a real MCP server (the SDK's McpServer) sits
 * behind the gateway's MCP route, and the MCP SDK's own client (Client +
 * StreamableHTTPClientTransport with an OAuthClientProvider) does what an MCP client does on its
 * own: the gateway's 401 names the RFC 9728 metadata, which names the token service; RFC 8414
 * metadata, RFC 7591 registration, the authorization request (PKCE S256, RFC 8707 resource), the
 * person's consent (a browser behind the SSO proxy: trusted headers, the form posted back), the code
 * exchange, asking for the scope the 401 challenge named and no more; then initialize and tools/list (naming only the tools the token may call)
 * through the gateway, a tool needing more refused 403 naming its scope, the step-up to it, the tool
 * call, and a tool the approved scopes do not cover refused before the MCP server sees it. Then the operator's side: `tessera
 * trace` shows the person at the root of the chain and the gateway's decisions by tool, `tessera
 * revoke --grant` cuts the client off, and no token, code or secret ever reached the server's log.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { auth, UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { decodeJwt } from 'jose';
import type { Trace } from '../../src/audit/trace.ts';
import { answerConsent, openConsent, PROXY_SECRET, personHeaders } from '../helpers/authorize.ts';
import { MemoryOAuthProvider } from '../helpers/mcp-oauth-provider.ts';
import { type McpUpstream, startMcpUpstream } from '../helpers/mcp-upstream.ts';
import { freePort } from '../helpers/net.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const REDIRECT = 'http://127.0.0.1:33418/callback';

let dir: string;
let config: string;
let base: string;
let mcpUrl: string;
let upstream: McpUpstream;
let serve: ChildProcess;
let log = '';

/** The environment of every Tessera process: no master key from the developer's shell, the proxy secret. */
function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, TESSERA_PROXY_SECRET: PROXY_SECRET };
  delete e.TESSERA_MASTER_KEY;
  return e;
}

/**
 * `tessera ARGS --config …` as an operator runs it, in another process. Not spawnSync: a blocked
 * event loop leaves the test's keep-alive connection to the gateway unread while the server closes
 * it after its keep-alive timeout, and the next fetch would be sent on a closed connection.
 */
async function cli(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [MAIN, ...args, '--config', config], { cwd: dir, env: env() });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const [status] = (await once(child, 'close')) as [number | null];
  outputs.push(stdout, stderr);
  return { status, stdout, stderr };
}
const outputs: string[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-e2e-mcp-'));
  config = join(dir, 'tessera.yaml');
  upstream = await startMcpUpstream();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  mcpUrl = `${base}/mcp`;
  writeFileSync(
    config,
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${base}, audiences: [${mcpUrl}], jwks_uri: ${base}/.well-known/jwks.json, token_type: at+jwt }
scopes:
  mcp:use: {}
  files:read: {}
  files:write: {}
token_service:
  sync_interval: 100ms
  authorization: { enabled: true, trusted_header: { secret: "\${TESSERA_PROXY_SECRET}" } }
  registration: { enabled: true, open: true, scopes: [mcp:use, files:read], audiences: [${mcpUrl}] }
audit: { flush_interval: 100ms }
gateway:
  watch_config: false
  routes:
    - id: files
      match: { path_prefix: /mcp }
      upstream: { url: ${upstream.url} }
      auth: jwt
      audience: ${mcpUrl}
      # The 401 challenge names mcp:use (the scope of the rule deciding initialize), what the SDK
      # asks for first; the metadata lists every scope the rules name (files:write too).
      mcp: { resource: ${mcpUrl} }
      rules:
        - { id: files-read, tool: files.read, scopes: [files:read] }
        - { id: files-write, tool: files.write, scopes: [files:write] }
        - { id: other-tools, tool: "*", scopes: [files:write] }
        - { id: mcp, scopes: [mcp:use] }
`,
  );
  const init = await cli('init');
  assert.equal(init.status, 0, init.stderr);
  serve = spawn(process.execPath, [MAIN, 'serve', '--config', config], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: env() });
  serve.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  serve.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 15_000;
  while (!/listening/.test(log)) {
    assert.equal(serve.exitCode, null, `tessera serve exited: ${log}`);
    assert.ok(Date.now() < deadline, `tessera serve did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 25));
  }
});

after(async () => {
  if (serve && serve.exitCode === null) {
    serve.kill('SIGTERM');
    await once(serve, 'exit');
  }
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The MCP client's OAuth state, kept in memory. Its "browser" is the person alice behind the SSO
 * proxy: sent to the authorization URL, it opens the consent page with the proxy's headers,
 * approves, and keeps the code the redirect carries back.
 */
class BrowserProvider extends MemoryOAuthProvider {
  callback: URL | undefined;
  csrf = '';
  constructor() {
    super(REDIRECT, 'MCP SDK end-to-end client');
  }
  override async redirectToAuthorization(url: URL) {
    this.authorizationUrl = url;
    const person = personHeaders('alice');
    const { html, fields } = await openConsent(url.href, person);
    assert.match(html, /mcp:use/, 'the consent page shows the scopes asked for');
    this.csrf = fields.csrf;
    const res = await answerConsent(`${base}/oauth2/authorize`, { ...fields, decision: 'approve' }, person);
    assert.equal(res.status, 303, await res.text());
    this.callback = new URL(res.headers.get('location') as string);
  }
}

it('an MCP SDK client gets a token by itself through the gateway’s discovery, uses allowed tools, is refused the others, is traced and revoked; nothing secret is logged', async () => {
  // Every HTTP exchange the SDK makes (MCP and OAuth alike): method, URL and status.
  const exchanges: string[] = [];
  const recording: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    const url = new URL(input instanceof Request ? input.url : String(input));
    exchanges.push(`${init?.method ?? 'GET'} ${url.pathname} ${res.status}`);
    return res;
  };
  const provider = new BrowserProvider();
  const first = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recording });
  await assert.rejects(new Client({ name: 'e2e', version: '1.0.0' }).connect(first), UnauthorizedError);

  // Discovery and registration, in the order an MCP client is specified to do them.
  const index = (pattern: RegExp) => {
    const i = exchanges.findIndex((x) => pattern.test(x));
    assert.ok(i >= 0, `no ${pattern} in ${exchanges.join(', ')}`);
    return i;
  };
  const challenged = index(/^POST \/mcp 401$/);
  const prm = index(/^GET \/\.well-known\/oauth-protected-resource\/mcp 200$/);
  const asMeta = index(/^GET \/\.well-known\/oauth-authorization-server 200$/);
  const registered = index(/^POST \/oauth2\/register 201$/);
  assert.ok(challenged < prm && prm < asMeta && asMeta < registered, exchanges.join(', '));
  const registeredFirst = provider.client as { client_id: string; client_secret?: string; scope?: string };
  assert.match(registeredFirst.client_id, /^dcr_/);
  assert.equal(registeredFirst.client_secret, undefined, 'a public client');
  // The SDK registers for the scope it asks for (the challenge's); it is registered for the whole
  // registration maximum, so it can step up later without registering again.
  assert.equal(registeredFirst.scope, 'mcp:use files:read');

  // The authorization request the SDK built from the challenge and the metadata, and the person's approval.
  const authz = provider.authorizationUrl as URL;
  assert.equal(`${authz.origin}${authz.pathname}`, `${base}/oauth2/authorize`);
  assert.equal(authz.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(authz.searchParams.get('resource'), mcpUrl);
  // MCP authorization (Scope Selection Strategy): the SDK asks for the 401 challenge's scope,
  // exactly, not every scope of the metadata's scopes_supported (files:read, files:write).
  assert.equal(authz.searchParams.get('scope'), 'mcp:use');
  const callback = provider.callback as URL;
  assert.equal(callback.searchParams.get('iss'), base);
  const firstCode = callback.searchParams.get('code') as string;
  assert.ok(firstCode);
  await first.finishAuth(firstCode);
  const basic = provider.saved as OAuthTokens;
  assert.equal(decodeJwt(basic.access_token).scope, 'mcp:use', 'what the challenge named');

  // That token opens a session and lists the tools; a tool needing more is refused 403 naming it.
  const basicTransport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recording });
  const basicClient = new Client({ name: 'e2e', version: '1.0.0' });
  await basicClient.connect(basicTransport);
  // Every tool needs more than mcp:use: none is listed (tools/list names only the tools the token may call).
  assert.deepEqual((await basicClient.listTools()).tools, []);
  const needsMore = await fetch(mcpUrl, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${basic.access_token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-session-id': basicTransport.sessionId as string,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'files.read', arguments: { text: 'x' } } }),
  });
  assert.equal(needsMore.status, 403);
  assert.match(needsMore.headers.get('www-authenticate') ?? '', /error="insufficient_scope".*, scope="files:read", resource_metadata="/);
  await needsMore.arrayBuffer();
  await basicClient.close();
  assert.deepEqual(upstream.toolCalls, []);

  // Step-up (MCP authorization, Step-Up Authorization Flow), through the SDK's own flow: the scope
  // held and the scope challenged, approved by the person again. The SDK's transport is not left
  // to do it: it replaces its scope with the challenge's and, holding a refresh token, only
  // refreshes. The same registered client steps up: it was registered for the whole maximum.
  provider.saved = undefined;
  const registrations = exchanges.filter((e) => e === 'POST /oauth2/register 201').length;
  assert.equal(await auth(provider, { serverUrl: new URL(mcpUrl), scope: 'mcp:use files:read', fetchFn: recording }), 'REDIRECT');
  assert.equal(provider.authorizationUrl?.searchParams.get('scope'), 'mcp:use files:read');
  const client = provider.client as unknown as { client_id: string; scope?: string };
  assert.equal(client.client_id, registeredFirst.client_id, 'no second registration');
  assert.equal(exchanges.filter((e) => e === 'POST /oauth2/register 201').length, registrations);
  const code = provider.callback?.searchParams.get('code') as string;
  assert.ok(code && code !== firstCode);
  assert.equal(await auth(provider, { serverUrl: new URL(mcpUrl), authorizationCode: code, fetchFn: recording }), 'AUTHORIZED');
  const tokens = provider.tokens() as OAuthTokens;
  const claims = decodeJwt(tokens.access_token);
  assert.equal(claims.sub, 'alice');
  assert.equal(claims.aud, mcpUrl);
  assert.deepEqual(String(claims.scope).split(' ').sort(), ['files:read', 'mcp:use']);
  assert.equal(claims.client_id, client.client_id);
  const grantId = claims.grant_id as string;
  const jti = claims.jti as string;

  // Connected: initialize, tools/list and an allowed tool, through the gateway to the MCP server.
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recording });
  const mcp = new Client({ name: 'e2e', version: '1.0.0' });
  await mcp.connect(transport);
  try {
    const { tools } = await mcp.listTools();
    // Only the tool the approved scopes cover is listed; files.write and the others are not.
    assert.deepEqual(
      tools.map((t) => t.name),
      ['files.read'],
    );
    const read = await mcp.callTool({ name: 'files.read', arguments: { text: 'notes.txt' } });
    assert.deepEqual(read.content, [{ type: 'text', text: 'files.read:notes.txt' }]);
    assert.deepEqual(upstream.toolCalls, ['files.read']);
    const received = upstream.requests.filter((r) => r.body.includes('"files.read"')).at(-1);
    assert.equal(received?.headers.authorization, undefined, 'the caller’s token does not reach the MCP server');

    // A tool the approved scopes do not cover: 403 insufficient_scope, and the MCP server never sees it.
    const rpc = (name: string) =>
      fetch(mcpUrl, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${tokens.access_token}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': transport.sessionId as string,
          'mcp-protocol-version': transport.protocolVersion as string,
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'tools/call', params: { name, arguments: { text: 'x' } } }),
      });
    const refused = await rpc('files.write');
    assert.equal(refused.status, 403);
    assert.match(refused.headers.get('www-authenticate') ?? '', /error="insufficient_scope".*scope="files:write".*resource_metadata="/);
    assert.equal(((await refused.json()) as { error: string }).error, 'insufficient_scope');
    assert.ok(!upstream.requests.some((r) => r.body.includes('"files.write"')), 'the refused call never reached the MCP server');
    assert.deepEqual(upstream.toolCalls, ['files.read']);

    // The operator traces the token: alice at the root of the chain, the gateway's decisions by tool.
    const traced = await waitFor(async () => {
      const r = await cli('trace', jti, '--json');
      assert.equal(r.status, 0, r.stderr);
      const t = JSON.parse(r.stdout) as Trace;
      const requests = t.grants.flatMap((g) => g.tokens.flatMap((k) => k.requests));
      return requests.some((x) => x.tool === 'files.write') ? t : undefined;
    }, 'the refused tool call in the trace');
    const root = traced.grants[0];
    assert.equal(root?.id, grantId);
    assert.equal(root?.parent_id, null);
    assert.equal(root?.subject, 'alice');
    assert.equal(root?.client_id, client.client_id);
    assert.deepEqual([...(root?.scopes ?? [])].sort(), ['files:read', 'mcp:use']);
    assert.deepEqual(root?.audiences, [mcpUrl]);
    // Where the chain starts: the person's approval on the consent page, for this client.
    assert.equal(root?.approval?.subject, 'alice');
    assert.equal(root?.approval?.client_id, client.client_id);
    assert.deepEqual([...(root?.approval?.scopes ?? [])].sort(), ['files:read', 'mcp:use']);
    assert.equal(root?.approval?.redirect_uri, REDIRECT);
    assert.ok(Date.parse(root?.approval?.time ?? '') < Date.parse(root?.created_at ?? '') + 1000, 'approved before the code was redeemed');
    const issued = root?.tokens.find((k) => k.jti === jti);
    assert.equal(issued?.event, 'token.issued');
    assert.equal(issued?.client_id, client.client_id);
    assert.equal(issued?.expires_at, new Date((claims.exp as number) * 1000).toISOString(), 'the token’s expiry is on record');
    const uses = (issued?.requests ?? []).map((x) => [x.route, x.tool, x.decision, x.reason]);
    assert.ok(
      uses.some(([route, tool, d]) => route === 'files' && tool === 'files.read' && d === 'allow'),
      JSON.stringify(uses),
    );
    assert.ok(
      uses.some(([, tool, d, reason]) => tool === 'files.write' && d === 'deny' && reason === 'scope_insufficient'),
      JSON.stringify(uses),
    );
    const text = await cli('trace', jti);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^grant ${grantId} .*root`, 'm'));
    assert.match(text.stdout, new RegExp(`subject alice · client ${client.client_id}`));
    assert.match(text.stdout, /approved by alice on the consent page .* for http:\/\/127\.0\.0\.1:\d+\/callback/);
    assert.match(text.stdout, /allow ok · POST \/mcp · route files · tool files\.read/);
    assert.match(text.stdout, /deny scope_insufficient · POST \/mcp · route files · tool files\.write/);

    // Revoked from another process: the next tool call through the gateway is refused as invalid_token.
    const revoked = await cli('revoke', '--grant', grantId, '--reason', 'e2e');
    assert.equal(revoked.status, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`revoked 1 grant\\(s\\): ${grantId}`));
    const before = upstream.toolCalls.length;
    const after = await waitFor(async () => {
      const res = await rpc('files.read');
      if (res.status === 200) {
        await res.text();
        return undefined;
      }
      return res;
    }, 'the revocation to reach the server (token_service.sync_interval)');
    assert.equal(after.status, 401);
    assert.match(after.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    // Calls before the revocation took effect may have reached it; the refused one did not.
    const reached = upstream.toolCalls.length;
    assert.equal((await rpc('files.read')).status, 401);
    assert.equal(upstream.toolCalls.length, reached);
    assert.ok(reached >= before);
  } finally {
    await mcp.close().catch(() => {});
  }

  // Nothing secret in the server's log or the operator commands' output.
  serve.kill('SIGTERM');
  await once(serve, 'exit');
  assert.match(log, /listening/);
  const secrets = [
    basic.access_token,
    basic.refresh_token as string,
    firstCode,
    tokens.access_token,
    tokens.refresh_token as string,
    code,
    provider.verifier,
    provider.csrf,
    PROXY_SECRET,
  ];
  for (const secret of secrets) {
    assert.ok(secret && secret.length >= 16, 'a real secret to look for');
    assert.equal(log.includes(secret), false, `a secret (${secret.slice(0, 6)}…) is in the tessera serve log`);
    assert.equal(outputs.join('\n').includes(secret), false, `a secret (${secret.slice(0, 6)}…) is in the CLI output`);
  }
});

/** Poll `probe` until it returns something (the store is shared across processes through SQLite). */
async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    assert.ok(Date.now() < end, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
