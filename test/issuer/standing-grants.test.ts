/**
 * Client-credentials standing grants: one per client, scope set and audience set whatever the
 * order, a bounded per-process cache, an expiry after which a fresh grant replaces them and the
 * prune job removes them, and a revoked grant never reused (even once its revocation-list entry
 * has expired).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { resolveTokenService } from '../../src/config/token-service-schema.ts';
import { generateMasterKey } from '../../src/issuer/secrets.ts';
import { TokenService } from '../../src/issuer/service.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';

const ISSUER = 'https://issuer.test';
let dir: string;
let now = 1_800_000_000_000;
let store: SqliteStore;
let service: TokenService;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-standing-'));
  store = SqliteStore.open({ path: join(dir, 'tessera.db') });
  const config = resolveTokenService(
    parseConfig(configSchema, { data_dir: dir, token_service: { issuer: ISSUER, grant_retention: '1h', max_access_token_ttl: '1h' } }),
  );
  service = new TokenService({ config, store, master: generateMasterKey().key, clock: () => now, standingGrantCacheSize: 2 });
  await service.keys.reload();
  await service.keys.rotate({ immediate: true });
  await service.start({ background: false });
  await service.registerClient({ id: 'agent', scopes: ['a', 'b', 'c', 'd'], audiences: ['https://api.test'] });
});
after(async () => {
  await service.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const grantOf = async (scopes: string[]) => (await service.mint({ clientId: 'agent', scopes })).grant_id;

describe('client-credentials standing grants', () => {
  it('shares one grant for the same scopes in any order (a permutation is not a new grant)', async () => {
    const first = await grantOf(['a', 'b']);
    assert.equal(await grantOf(['b', 'a']), first);
    assert.equal(await grantOf(['a', 'b']), first);
  });

  it('bounds the per-process cache: a client cycling scope sets cannot grow it without limit', async () => {
    const c = await grantOf(['c']);
    const d = await grantOf(['d']);
    assert.equal(await grantOf(['d']), d);
    await grantOf(['c', 'd']); // a third set evicts the oldest remembered one (cache size 2)
    assert.notEqual(await grantOf(['c']), c, 'evicted: a new grant, not unbounded memory');
  });

  it('gives standing grants an expiry, replaces them before a token could outlive them, and prunes them', async () => {
    const token = await service.mint({ clientId: 'agent', scopes: ['a'] });
    const grant = await store.getGrant(token.grant_id);
    assert.ok(grant?.expiresAt !== null && grant?.expiresAt !== undefined, 'a standing grant expires');
    const exp = decodeJwt(token.access_token).exp as number;
    assert.ok(exp <= (grant?.expiresAt as number), 'no token outlives its grant');
    // Close to its end the grant is no longer handed out: the next token gets a fresh grant.
    now = ((grant?.expiresAt as number) - 10) * 1000;
    const fresh = await service.mint({ clientId: 'agent', scopes: ['a'] });
    assert.notEqual(fresh.grant_id, token.grant_id);
    // After expiry + grant_retention the prune job removes it.
    now = ((grant?.expiresAt as number) + 3600 + 120) * 1000;
    await service.sync();
    assert.equal(await store.getGrant(token.grant_id), undefined, 'pruned');
  });

  it('never reuses a grant revoked by another process, before or after its revocation-log entry is pruned', async () => {
    const first = await grantOf(['b']);
    const cli = SqliteStore.open({ path: join(dir, 'tessera.db') });
    const at = Math.floor(now / 1000);
    await cli.revokeGrants({ grantId: first }, { at, reason: 'cli', entryExpiresAt: at + 3660 });
    await cli.close();
    await service.sync();
    // Past the entry's expiry the store prunes it; the revoked grant must still not be handed out.
    now += 4000 * 1000;
    await service.sync();
    const next = await grantOf(['b']);
    assert.notEqual(next, first);
    assert.equal((await store.getGrant(next))?.revokedAt, null);
  });

  it('attack: a grant revoked by another process while this one read nothing for longer than the entry lives (cut off from the store) is not handed out once it reads again', async () => {
    const first = await grantOf(['a', 'c']);
    const cli = SqliteStore.open({ path: join(dir, 'tessera.db') });
    const at = Math.floor(now / 1000);
    await cli.revokeGrants({ grantId: first }, { at, reason: 'cli', entryExpiresAt: at + 3660 });
    await cli.close();
    // No sync until the entry has expired: it is never read here.
    now += 4000 * 1000;
    await service.sync();
    const next = await grantOf(['a', 'c']);
    assert.notEqual(next, first, 'a new grant, not the revoked one');
    assert.equal((await store.getGrant(next))?.revokedAt, null);
  });
});
