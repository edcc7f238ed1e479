/**
 * The client registry's in-memory cache of compiled clients: bounded, so clients added to the
 * store without limit (open dynamic registration, a few per address) do not each stay compiled for
 * the life of the process once used.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { resolveTokenService } from '../../src/config/token-service-schema.ts';
import { OAuthError } from '../../src/core/oauth-errors.ts';
import { generateMasterKey } from '../../src/issuer/secrets.ts';
import { TokenService } from '../../src/issuer/service.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { authorizationConfig } from '../helpers/authorize.ts';

const ISSUER = 'https://issuer.test';
let dir: string;
let store: SqliteStore;
let service: TokenService;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-clients-'));
  store = SqliteStore.open({ path: join(dir, 'tessera.db') });
  const config = resolveTokenService(
    parseConfig(configSchema, {
      data_dir: dir,
      token_service: {
        issuer: ISSUER,
        authorization: authorizationConfig(),
        registration: { enabled: true, open: true, audiences: ['https://mcp.test/mcp'], rate_limit: { burst: 1000 } },
      },
    }),
  );
  service = new TokenService({ config, store, master: generateMasterKey().key, clientCacheSize: 8 });
  await service.keys.reload();
  await service.keys.rotate({ immediate: true });
  await service.start({ background: false });
});
after(async () => {
  await service.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('client registry cache', () => {
  it('dynamic-registration flood: clients registered and then used one by one stay within the cache bound', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await service.registerDynamicClient(
        { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none', client_name: `flood ${i}` },
        undefined,
        { remoteAddr: '192.0.2.7' },
      );
      ids.push(r.client_id);
    }
    for (const id of ids) {
      // A public client is looked up by its client_id alone; the bogus code is refused after.
      await assert.rejects(
        service.token({
          params: new URLSearchParams({ grant_type: 'authorization_code', client_id: id, code: 'tac_x', code_verifier: 'v'.repeat(43) }),
          authorization: undefined,
          endpointUrl: `${ISSUER}/oauth2/token`,
        }),
        (e: unknown) => e instanceof OAuthError && e.code !== 'client_unknown',
      );
    }
    assert.ok(service.clients.cached <= 8, `${service.clients.cached} compiled clients held`);
    // An evicted client is read from the store again.
    assert.ok((await service.clients.get(ids[0] as string)) !== undefined);
  });
});
