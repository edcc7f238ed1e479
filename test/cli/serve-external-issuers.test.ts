/**
 * `tessera serve`: the issuers token exchange trusts besides Tessera (`issuers` other than its own)
 * are read as the gateway reads them, and a reload applies them with the rest or not at all.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { parse as parseYaml } from 'yaml';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { AUDIENCE, ISSUER, token as idpToken, key, startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';

const UPSTREAM_AUD = 'https://upstream.internal';

let dir: string;
let file: string;
let base: string;
let upstream: Upstream;
let running: RunningServer;
let secret: string;
const logLines: string[] = [];
const logStream = new Writable({
  write: (chunk, _encoding, done) => {
    logLines.push(String(chunk));
    done();
  },
});
const savedMaster = process.env.TESSERA_MASTER_KEY;
/** The JSON lines `tessera serve` logged while it started. */
let startLines: Record<string, unknown>[] = [];

/** The JSON lines `tessera serve` logged while `fn` ran (the token service's and the gateway's). */
async function loggedLines(fn: () => unknown): Promise<Record<string, unknown>[]> {
  const from = logLines.length;
  await fn();
  return logLines.slice(from).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The warnings about issuers[n] without exchange_clients among `lines`. */
const exchangeClientsWarnings = (lines: Record<string, unknown>[], n = 0) =>
  lines.filter((l) => new RegExp(`issuers\\[${n}\\]\\.exchange_clients`).test(String(l.msg ?? '')));

const config = (port: number, issuers: string, extraRoute = '') => `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
${issuers}
gateway:
  watch_config: false
  routes:${extraRoute}
    - id: open
      match: { path_prefix: / }
      upstream: { url: ${upstream.url} }
      auth: none
`;
// A key file named relative to tessera.yaml, as docs/configuration.md says it is read.
const IDP = `  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], algorithms: [ES256], jwks: { file: idp.json } }`;

async function exchange(): Promise<number> {
  const res = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: basic('exchanger', secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: await idpToken({ sub: 'idp-user', scope: 'api:read' }),
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: UPSTREAM_AUD,
    }),
  });
  return res.status;
}

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-serve-external-'));
  file = join(dir, 'tessera.yaml');
  upstream = await startUpstream();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  writeFileSync(join(dir, 'idp.json'), JSON.stringify({ keys: [key.jwk] }));
  writeFileSync(file, config(port, IDP));
  await initialize({ config: file });
  // The working directory (the repository) is not the configuration's: idp.json is not there.
  assert.notEqual(process.cwd(), dir);
  startLines = await loggedLines(async () => {
    running = await startServer({ config: file, logger: pino({ level: 'warn' }, logStream) });
  });
  const client = await running.service.registerClient({
    id: 'exchanger',
    scopes: ['api:read'],
    audiences: [UPSTREAM_AUD],
    grantTypes: [TOKEN_EXCHANGE],
  });
  secret = client.secret as string;
});

after(async () => {
  await running?.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
  if (savedMaster !== undefined) process.env.TESSERA_MASTER_KEY = savedMaster;
});

describe('tessera serve: the external issuers of token exchange', () => {
  it("reads a relative jwks.file from the configuration file's directory, as the gateway does, not the working directory", async () => {
    assert.equal(await exchange(), 200);
  });

  it('attack: a reload the token service cannot apply (a key file missing) is refused whole, not applied to the gateway alone', async () => {
    // The IdP is replaced by another whose key file is missing. The gateway (no JWT route) accepted
    // it, the token service could not build its verifier and went on trusting the removed IdP.
    const saved = readFileSync(file, 'utf8');
    const port = Number(new URL(base).port);
    const other =
      '  - { issuer: https://other-idp.test, audiences: [https://api.test], algorithms: [ES256], jwks: { file: missing.json } }';
    const added = `
    - id: added
      match: { path_prefix: /added }
      upstream: { url: ${upstream.url} }
      auth: none`;
    try {
      writeFileSync(file, config(port, other, added));
      const result = running.gateway?.reload();
      assert.equal(result?.ok, false);
      assert.deepEqual(result?.ok === false ? result.error.issues.map((i) => i.path) : [], ['issuers[0].jwks.file']);
      // Nothing of it applies: not the new route, and the IdP is trusted as before by both.
      assert.deepEqual(
        running.gateway?.gateway.state.routes.map((r) => r.id),
        ['open'],
      );
      assert.equal(await exchange(), 200);
    } finally {
      writeFileSync(file, saved);
    }
  });

  it('attack: a configuration given to reload() (not read from the file) whose key file is missing is refused whole too', async () => {
    const port = Number(new URL(base).port);
    const other =
      '  - { issuer: https://other-idp.test, audiences: [https://api.test], algorithms: [ES256], jwks: { file: missing.json } }';
    const added = `
    - id: added
      match: { path_prefix: /added }
      upstream: { url: ${upstream.url} }
      auth: none`;
    // Valid as a configuration: only building the token service's verifier reads the key file.
    const next = parseConfig(configSchema, parseYaml(config(port, other, added)));
    const result = running.gateway?.reload(next);
    assert.equal(result?.ok, false);
    assert.deepEqual(result?.ok === false ? result.error.issues.map((i) => i.path) : [], ['issuers[0].jwks.file']);
    assert.deepEqual(
      running.gateway?.gateway.state.routes.map((r) => r.id),
      ['open'],
    );
    assert.equal(await exchange(), 200, 'the IdP the refused configuration removed is still trusted, as the gateway still trusts it');
  });

  it('warns at start about an issuer without issuers[].exchange_clients in a config_warning line, the line a reload writes', async () => {
    const atStart = exchangeClientsWarnings(startLines);
    assert.equal(atStart.length, 1, JSON.stringify(startLines));
    const line = atStart[0] as Record<string, unknown>;
    assert.equal(line.event, 'config_warning');
    assert.equal(line.level, 40);
    assert.equal(line.component, 'token_service');
    const atReload = exchangeClientsWarnings(await loggedLines(() => assert.equal(running.gateway?.reload().ok, true)));
    assert.equal(atReload.length, 1);
    const { time: _t1, ...start } = line;
    const { time: _t2, ...reload } = atReload[0] as Record<string, unknown>;
    assert.deepEqual(reload, start, 'the same line at start and at a reload');
  });

  it('a reload applies issuers[].exchange_clients from the next exchange on, and warns about an issuer without it', async () => {
    const saved = readFileSync(file, 'utf8');
    const port = Number(new URL(base).port);
    const listing = (ids: string) =>
      `  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], algorithms: [ES256], jwks: { file: idp.json }, exchange_clients: [${ids}] }`;
    const reload = async () => {
      let ok: boolean | undefined;
      const warned = exchangeClientsWarnings(
        await loggedLines(() => {
          ok = running.gateway?.reload().ok;
        }),
      );
      assert.equal(ok, true);
      assert.ok(
        warned.every((l) => l.event === 'config_warning'),
        JSON.stringify(warned),
      );
      return warned.length;
    };
    try {
      writeFileSync(file, config(port, listing('someone-else')));
      assert.equal(await reload(), 0);
      assert.equal(await exchange(), 400, 'exchanger is not listed');
      writeFileSync(file, config(port, listing('someone-else, exchanger')));
      assert.equal(await reload(), 0);
      assert.equal(await exchange(), 200);
      writeFileSync(file, saved);
      assert.equal(await reload(), 1);
      assert.equal(await exchange(), 200, 'unset: any exchange client, as before');
    } finally {
      writeFileSync(file, saved);
      running.gateway?.reload();
    }
  });

  it('after a reload, the external issuers’ warnings (a failed JWKS fetch) are still logged', async () => {
    const saved = readFileSync(file, 'utf8');
    const port = Number(new URL(base).port);
    const jwks = createServer((_req, res) => {
      res.writeHead(503);
      res.end();
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const jwksUri = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    const from = logLines.length;
    try {
      writeFileSync(file, config(port, `  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], algorithms: [ES256], jwks_uri: ${jwksUri} }`));
      assert.equal(running.gateway?.reload().ok, true);
      assert.equal(await exchange(), 400, 'no key set: the subject token is not accepted');
      const warnings = logLines
        .slice(from)
        .map((l) => JSON.parse(l) as { level?: number; msg?: string; component?: string })
        .filter((l) => l.level === 40 && l.component === 'token_service');
      assert.ok(
        warnings.some((l) => l.msg?.startsWith(`JWKS fetch from ${jwksUri} failed`)),
        logLines.slice(from).join(''),
      );
    } finally {
      writeFileSync(file, saved);
      running.gateway?.reload();
      await new Promise((resolve) => jwks.close(resolve));
    }
  });
});
