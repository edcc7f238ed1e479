/**
 * Bench child: Tessera's token service exactly as `tessera serve` runs it (SQLite store in WAL mode
 * in a temp dir, audit events batched to the store, revocation sync on), with one client for
 * client_credentials and token exchange and a user token to exchange. Reports its port and the
 * request bodies, then answers `cpu` messages with its own CPU time (µs).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenServiceHandler } from '../src/server/token-handler.ts';
import { benchTokenService } from './issuer-service.ts';

const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-'));
let handler: ReturnType<typeof createTokenServiceHandler> | undefined;
const server = createServer((req, res) => {
  if (!handler?.(req, res)) {
    res.writeHead(404);
    res.end();
  }
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const { store, service, secret, user } = await benchTokenService(url, dir);
handler = createTokenServiceHandler(service);

process.on('message', async (m) => {
  if (m === 'cpu') {
    const c = process.cpuUsage();
    process.send?.({ cpu: c.user + c.system });
  } else if (m === 'stop') {
    await service.close();
    const grants = (await store.grantSubtree(user.grant_id)).length;
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    process.send?.({ stopped: true, exchange_grants_written: grants - 1 }, () => process.exit(0));
  }
});
process.send?.({
  url,
  token_path: '/oauth2/token',
  secret,
  exchange_body: new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: user.access_token,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    scope: 'api:read',
  }).toString(),
});
