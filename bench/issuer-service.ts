/**
 * The token service both issuer benchmarks drive, set up as `tessera serve` runs it (SQLite in WAL
 * mode in a temp dir, batched audit, revocation sync), with one client for client_credentials and
 * token exchange and a user token to exchange.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/parse.ts';
import { configSchema } from '../src/config/schema.ts';
import { generateMasterKey } from '../src/issuer/secrets.ts';
import { createTokenServiceFromConfig } from '../src/server/bootstrap.ts';
import { SqliteStore } from '../src/store/sqlite/store.ts';

export async function benchTokenService(issuer: string, dir = mkdtempSync(join(tmpdir(), 'tessera-bench-'))) {
  const config = parseConfig(configSchema, { data_dir: dir, token_service: { issuer } });
  const store = SqliteStore.open({ path: join(dir, 'tessera.db') });
  const service = createTokenServiceFromConfig(config, { store, master: generateMasterKey().key });
  await service.keys.rotate({ immediate: true });
  await service.start();
  const { secret } = await service.registerClient({
    id: 'bench',
    scopes: ['api:read', 'api:write'],
    audiences: ['https://api.test'],
    grantTypes: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'],
  });
  const user = await service.mint({ clientId: 'bench', subject: 'alice', ttl: 3600 });
  return { dir, store, service, secret: secret as string, user };
}
