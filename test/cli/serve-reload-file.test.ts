/**
 * `tessera serve` reloading its configuration file when the file is no longer a configuration: the
 * file deleted, unparsable, or emptied (a truncating write, a failed deploy). The running
 * configuration must stay in force and the refusal be logged, never the defaults applied.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';

let dir: string;
let file: string;
let saved: string;
let base: string;
let upstream: Upstream;
let running: RunningServer;
let secret: string;
const logLines: string[] = [];
const logStream = new Writable({
  write(chunk, _encoding, done) {
    logLines.push(...chunk.toString().trim().split('\n'));
    done();
  },
});

async function token(): Promise<string> {
  const res = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: basic('agent', secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read' }),
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-serve-reload-file-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  file = join(dir, 'tessera.yaml');
  saved = `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${base}, audiences: [${base}/api], jwks_uri: ${base}/.well-known/jwks.json, token_type: at+jwt }
scopes:
  api:read: {}
gateway:
  watch_config: false
  routes:
    - id: api
      match: { path_prefix: /api }
      upstream: { url: ${upstream.url} }
      auth: jwt
      audience: ${base}/api
      rules: [{ path: /api/**, scopes: [api:read] }]
`;
  writeFileSync(file, saved);
  await initialize({ config: file });
  running = await startServer({ config: file, logger: pino({ level: 'info' }, logStream) });
  const agent = await running.service.registerClient({
    id: 'agent',
    scopes: ['api:read'],
    audiences: [`${base}/api`],
    grantTypes: ['client_credentials'],
  });
  secret = agent.secret as string;
});

after(async () => {
  await running?.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('tessera serve: a reload of a file that is no longer a configuration', () => {
  for (const [name, damage] of [
    ['deleted', () => unlinkSync(file)],
    ['unparsable', () => writeFileSync(file, 'gateway: [\n')],
    ['emptied', () => writeFileSync(file, '')],
    ['only comments', () => writeFileSync(file, '# tessera.yaml\n\n')],
    ['a null document', () => writeFileSync(file, '---\n~\n')],
  ] as const) {
    it(`attack: ${name}: the reload is refused and logged, and the running configuration keeps serving`, async () => {
      const t = await token();
      assert.equal((await fetch(`${base}/api/items`, { headers: { authorization: `Bearer ${t}` } })).status, 200);
      const n = logLines.length;
      try {
        damage();
        const result = running.gateway?.reload();
        assert.equal(result?.ok, false, `${name}: the reload was applied`);
        const res = await fetch(`${base}/api/items`, { headers: { authorization: `Bearer ${t}` } });
        assert.equal(res.status, 200, `${name}: the route in force is gone`);
        const logged = logLines.slice(n).map((l) => JSON.parse(l) as { event?: string; level?: number; msg?: string });
        assert.ok(
          logged.some((l) => l.event === 'config_reload_refused'),
          JSON.stringify(logged),
        );
      } finally {
        writeFileSync(file, saved);
      }
    });
  }
});
