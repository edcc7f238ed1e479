/**
 * `tessera serve`: `token_service.trust_proxy` unset, the token service reads the client's address
 * through the gateway's `trust_proxy` (one listener: the same proxies are in front of both), and
 * follows a reload of it; set (`[]` too), its own list is used.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { parse as parseYaml } from 'yaml';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';

const savedMaster = process.env.TESSERA_MASTER_KEY;
const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
  if (savedMaster !== undefined) process.env.TESSERA_MASTER_KEY = savedMaster;
});

const yaml = (port: number, upstream: string, gatewayProxies: string, tokenService = '') => `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
${tokenService}gateway:
  watch_config: false
  trust_proxy: ${gatewayProxies}
  routes:
    - id: open
      match: { path_prefix: / }
      upstream: { url: ${upstream} }
      auth: none
`;

async function serve(
  gatewayProxies: string,
  tokenService = '',
): Promise<{ running: RunningServer; base: string; text: (proxies: string) => string }> {
  delete process.env.TESSERA_MASTER_KEY;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-trust-proxy-'));
  const file = join(dir, 'tessera.yaml');
  const upstream: Upstream = await startUpstream();
  const port = await freePort();
  const text = (proxies: string) => yaml(port, upstream.url, proxies, tokenService);
  writeFileSync(file, text(gatewayProxies));
  await initialize({ config: file });
  const running = await startServer({ config: file, logger: pino({ level: 'silent' }) });
  cleanup.push(async () => {
    await running.close();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { running, base: `http://127.0.0.1:${port}`, text };
}

/** A failed client authentication at /oauth2/token through a proxy naming `xff`: the remote_addr it is audited with. */
async function deniedFrom(running: RunningServer, base: string, xff: string): Promise<string | undefined> {
  const res = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: {
      authorization: basic('nobody', 'wrong-secret'),
      'content-type': 'application/x-www-form-urlencoded',
      'x-forwarded-for': xff,
    },
    body: 'grant_type=client_credentials',
  });
  await res.arrayBuffer();
  assert.equal(res.status, 401);
  await running.service.audit.flush();
  const events = await running.service.store.queryAudit({ kinds: ['token.denied'], limit: 10_000 });
  return events.at(-1)?.remote_addr;
}

describe('tessera serve: token_service.trust_proxy defaults to gateway.trust_proxy', () => {
  it('unset: the gateway’s trust_proxy names the client (audit remote_addr), and a reload of it applies to the token service too', async () => {
    const { running, base, text } = await serve('["127.0.0.1/32"]');
    assert.equal(await deniedFrom(running, base, '203.0.113.5'), '203.0.113.5');
    const result = running.gateway?.reload(parseConfig(configSchema, parseYaml(text('[]'))));
    assert.equal(result?.ok, true);
    assert.equal(
      await deniedFrom(running, base, '203.0.113.6'),
      '127.0.0.1',
      'the proxy is no longer trusted: its X-Forwarded-For is ignored',
    );
  });

  it('attack: `token_service.trust_proxy: []` trusts none, whatever the gateway trusts: X-Forwarded-For is ignored', async () => {
    const { running, base } = await serve('["127.0.0.1/32"]', 'token_service:\n  trust_proxy: []\n');
    assert.equal(await deniedFrom(running, base, '203.0.113.7'), '127.0.0.1');
  });
});
