/**
 * `tessera check`: every check passes against a correctly configured gateway, and each failure is
 * reported against a resource server that gets it wrong.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { runChecks } from '../../src/cli/commands/check.ts';
import { baseConfig, startGateway, startUpstream, type TestGateway, token, type Upstream } from '../gateway/helpers.ts';

const run = promisify(execFile);
const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('tessera check', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let t: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          {
            id: 'agent',
            upstream: { url: upstream.url },
            auth: 'jwt',
            rules: [{ scopes: ['api:read'] }],
            a2a: { card: { name: 'Demo agent' }, token_url: 'https://tessera.test/token', scopes: { 'api:read': 'Read' } },
          },
        ],
      },
    });
    t = await token();
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('passes every check against the gateway', async () => {
    const results = await runChecks(`${gw.url}/items`, t);
    assert.equal(results.length, 6);
    for (const r of results) assert.ok(r.ok, `${r.name}: ${r.detail}`);
  });

  it('prints a PASS line per check and exits 0 (the token is never printed)', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'check', `${gw.url}/items`, '--token', t]);
    const lines = stdout.trim().split('\n');
    assert.equal(lines.length, 6);
    assert.ok(lines.every((l) => l.startsWith('PASS')));
    assert.ok(!stdout.includes(t));
  });

  it('exits non-zero with FAIL lines against a server that accepts anything', async () => {
    const lax = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    await new Promise<void>((r) => lax.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(lax.address() as AddressInfo).port}/items`;
    try {
      const results = await runChecks(url, t);
      const failed = results.filter((r) => !r.ok).map((r) => r.name);
      assert.deepEqual(failed, [
        'protected path refuses a request without a token',
        'a malformed token is refused',
        'a token without the Bearer scheme is refused',
        'the agent card advertises the bearer scheme',
      ]);
      await assert.rejects(
        run(process.execPath, [CLI, 'check', url, '--token', t]),
        (e: { code?: number; stdout?: string; stderr?: string }) => {
          return e.code === 1 && /FAIL/.test(e.stdout ?? '') && /checks failed/.test(e.stderr ?? '');
        },
      );
    } finally {
      lax.close();
    }
  });

  it('fails the valid-token check with a wrong token', async () => {
    const results = await runChecks(`${gw.url}/items`, 'wrong.token.value', { agentCard: false });
    assert.deepEqual(
      results.filter((r) => !r.ok).map((r) => r.name),
      ['the valid token is accepted'],
    );
  });

  // A newcomer checking with a revoked, expired or read-only token saw "status 401" or "status 403"
  // and nothing of why, though the server's challenge said it.
  it('says why the valid token was refused, from the challenge: the error, its description and the scope needed', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await runChecks(`${gw.url}/items`, await token({ iat: now - 600, exp: now - 300 }), { agentCard: false });
    const refused = (rs: typeof expired) => rs.find((r) => r.name === 'the valid token is accepted');
    assert.equal(refused(expired)?.ok, false);
    assert.match(refused(expired)?.detail ?? '', /^status 401 \(invalid_token: The access token expired\.\)$/);
    const unscoped = await runChecks(`${gw.url}/items`, await token({ scope: 'api:other' }), { agentCard: false });
    assert.equal(refused(unscoped)?.ok, false);
    assert.match(refused(unscoped)?.detail ?? '', /^status 403 \(insufficient_scope: .*; needs scope api:read\)$/);
  });

  it('says why a server is unreachable (nothing listens there) instead of a bare "unreachable"', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const results = await runChecks(`http://127.0.0.1:${port}/items`, t, { agentCard: false });
    assert.equal(results.find((r) => r.name === 'the valid token is accepted')?.detail, 'unreachable (ECONNREFUSED)');
  });
});

describe('tessera check: bad arguments', () => {
  it('refuses a --timeout that is not a number of milliseconds instead of reporting every check unreachable', async () => {
    for (const timeout of ['abc', '-1', '0', '10s']) {
      await assert.rejects(
        run(process.execPath, [CLI, 'check', 'http://127.0.0.1:9/items', '--token', 't', '--timeout', timeout]),
        (e: { code?: number; stdout?: string; stderr?: string }) => {
          assert.equal(e.code, 1);
          assert.equal(e.stdout, '');
          assert.equal(e.stderr, `tessera: --timeout must be milliseconds from 1 to 600000, not "${timeout}"\n`);
          return true;
        },
      );
    }
  });
});

describe('tessera check: a hostile server', () => {
  it('escapes control characters in what the server answered (metadata resource, authorization servers) instead of printing them to the terminal', async () => {
    const evil = '\x1b]0;pwned\x07\x1b[2J\nPASS  forged check: all good\u202e';
    const server = createServer((req, res) => {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      if (req.url === '/.well-known/oauth-protected-resource/mcp') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ resource: `${base}/mcp${evil}`, authorization_servers: [`https://as.test/${evil}`] }));
        return;
      }
      res.writeHead(401, { 'www-authenticate': `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
    try {
      await assert.rejects(
        run(process.execPath, [CLI, 'check', url, '--token', 't', '--mcp']),
        (e: { code?: number; stdout?: string; stderr?: string }) => {
          assert.equal(e.code, 1, e.stderr);
          const out = e.stdout ?? '';
          assert.ok(![...out].some((c) => (c < ' ' && c !== '\n') || (c >= '\x7f' && c <= '\x9f') || c === '\u202e'), out);
          assert.ok(
            out
              .trim()
              .split('\n')
              .every((l) => /^(PASS|FAIL) {2}[a-z]/.test(l) && !l.startsWith('PASS  forged')),
            out,
          );
          assert.match(out, /as\.test\/\\x1b\]0;pwned\\x07\\x1b\[2J\\nPASS {2}forged/);
          return true;
        },
      );
    } finally {
      server.close();
    }
  });
});

describe('tessera check: a server whose answers never end', () => {
  it('reads at most 64 KiB of each answer and gives its verdict, instead of holding an endless body in memory until the timeout (or out of memory)', async () => {
    const card = JSON.stringify({ securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } }, security: [{ bearer: [] }] });
    const filler = Buffer.alloc(64 * 1024, ' ');
    const server = createServer((req, res) => {
      // A valid document (or none), then whitespace forever: a body that never ends.
      const discovery = req.url?.startsWith('/.well-known/');
      const doc = req.url === '/.well-known/agent-card.json' ? card : '';
      const status = discovery ? (doc ? 200 : 404) : req.headers.authorization === 'Bearer t' ? 200 : 401;
      res.writeHead(status, {
        'content-type': 'application/json',
        'www-authenticate': 'Bearer',
      });
      res.write(doc);
      const pump = () => {
        while (!res.destroyed && res.write(filler));
      };
      res.on('drain', pump);
      res.on('close', () => res.off('drain', pump));
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`;
    try {
      const { stdout } = await run(process.execPath, [CLI, 'check', url, '--token', 't', '--timeout', '5000', '--json']);
      const report = JSON.parse(stdout) as { ok: boolean; results: { name: string; ok: boolean; detail: string }[] };
      assert.deepEqual(
        report.results.filter((r) => !r.ok),
        [],
      );
      assert.equal(report.ok, true, 'every answer read in part, none waited out');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('tessera check: a server that answers and then goes silent', () => {
  it('gives the verdict from the status and headers, instead of waiting until --timeout for a body no check reads', async () => {
    const card = JSON.stringify({ securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } }, security: [{ bearer: [] }] });
    const server = createServer((req, res) => {
      // The agent card is whole; every other answer sends its headers, then nothing, for good.
      if (req.url === '/.well-known/agent-card.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(card);
        return;
      }
      const discovery = req.url?.startsWith('/.well-known/');
      const status = discovery ? 404 : req.headers.authorization === 'Bearer t' ? 200 : 401;
      res.writeHead(status, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
      res.write('{');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`;
    try {
      const started = Date.now();
      const { stdout } = await run(process.execPath, [CLI, 'check', url, '--token', 't', '--timeout', '30000', '--json']);
      const report = JSON.parse(stdout) as { ok: boolean; results: { name: string; ok: boolean; detail: string }[] };
      assert.deepEqual(
        report.results.filter((r) => !r.ok),
        [],
      );
      // Far below --timeout, far above a loaded machine's CLI start: waiting on a body takes 30 s.
      assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms: a silent body was waited on`);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('tessera check: a URL that is not one', () => {
  it('names the bad URL first, even with no --token given, instead of asking for the token of a check that could not run', async () => {
    const env = { ...process.env };
    delete env.TESSERA_TOKEN;
    for (const args of [['not-a-url'], ['not-a-url', '--token', 't'], ['127.0.0.1:8080/api/hello']]) {
      await assert.rejects(
        run(process.execPath, [CLI, 'check', ...args], { env }),
        (e: { code?: number; stdout?: string; stderr?: string }) => {
          assert.equal(e.code, 1);
          assert.equal(e.stdout, '');
          assert.equal(
            e.stderr,
            `tessera: "${args[0]}" is not an http(s) URL; give the protected URL to check, e.g. http://127.0.0.1:8080/api/hello\n`,
          );
          return true;
        },
      );
    }
  });
});

describe('tessera check: a URL with credentials', () => {
  it('never prints the user:password@ of the URL given (--json, text, or the refusal): it is refused, named without them', async () => {
    for (const args of [['--json'], []]) {
      for (const url of ['http://alice:s3cret-pw@127.0.0.1:9/items', 'ftp://alice:s3cret-pw@127.0.0.1:9/items']) {
        await assert.rejects(
          run(process.execPath, [CLI, 'check', url, '--token', 't', '--timeout', '500', ...args]),
          (e: { code?: number; stdout?: string; stderr?: string }) => {
            assert.equal(e.code, 1);
            const out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
            assert.ok(!out.includes('s3cret-pw') && !out.includes('alice'), out);
            assert.equal(e.stdout, '');
            assert.match(e.stderr ?? '', /^tessera: "?[a-z]+:\/\/127\.0\.0\.1:9\/items"? /);
            return true;
          },
        );
      }
    }
  });
});
