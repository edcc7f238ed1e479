/**
 * The token service's background upkeep of the store: the audit trail, which gains a row per
 * request (anonymous refusals included), is pruned after `token_service.audit_retention`, in
 * batches, beside the sync and not inside it; by default (0) nothing is ever pruned.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.ts';
import { idFloor } from '../../src/audit/id.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { resolveTokenService } from '../../src/config/token-service-schema.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { generateMasterKey } from '../../src/issuer/secrets.ts';
import { TokenService } from '../../src/issuer/service.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';

const ISSUER = 'https://issuer.test';
const DAY = 86_400_000;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** An event of time `ms`, with a UUIDv7 of that time (uuidv7() never goes back within a process). */
function eventAt(ms: number, subject: string): AuditEvent {
  return {
    id: `${idFloor(ms)}-7000-8000-${randomBytes(6).toString('hex')}`,
    time: ms,
    kind: 'gateway.request',
    decision: 'deny',
    reason: 'token_missing',
    subject,
  };
}

async function serviceWith(tokenService: Record<string, unknown>, now: number) {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-service-'));
  dirs.push(dir);
  const store = SqliteStore.open({ path: join(dir, 'tessera.db') });
  const config = resolveTokenService(parseConfig(configSchema, { data_dir: dir, token_service: { issuer: ISSUER, ...tokenService } }));
  const service = new TokenService({ config, store, master: generateMasterKey().key, clock: () => now });
  return { store, service };
}

async function waitFor(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('audit retention', () => {
  it('unbounded audit trail: sync prunes events older than audit_retention, past one batch, and keeps the newer ones', async () => {
    const now = Date.UTC(2030, 0, 10);
    const { store, service } = await serviceWith({ audit_retention: '1d' }, now);
    // More than one batch of old (anonymous, denied) events, and some within the retention.
    const old = Array.from({ length: 2500 }, (_, i) => eventAt(now - 2 * DAY + i, 'old'));
    const kept = [eventAt(now - DAY + 1000, 'kept'), eventAt(now - 60_000, 'kept')];
    await store.appendAudit([...old, ...kept]);
    await service.sync();
    await waitFor(async () => (await store.queryAudit({ subject: 'old', limit: 1 })).length === 0);
    assert.deepEqual(
      (await store.queryAudit({ subject: 'kept' })).map((e) => e.id),
      kept.map((e) => e.id),
    );
    await service.close();
    await store.close();
  });

  it('keeps every event by default (audit_retention 0)', async () => {
    const now = Date.UTC(2030, 0, 10);
    const { store, service } = await serviceWith({}, now);
    assert.equal(service.config.audit_retention, 0);
    await store.appendAudit([eventAt(now - 3650 * DAY, 'ancient')]);
    await service.sync();
    await service.pruneAudit();
    assert.equal((await store.queryAudit({ subject: 'ancient' })).length, 1);
    await service.close();
    await store.close();
  });

  it('refuses a retention under an hour (audit_retention: 30 is 30 seconds, not 30 days)', () => {
    assert.throws(
      () => parseConfig(configSchema, { token_service: { issuer: ISSUER, audit_retention: 30 } }),
      (e: unknown) => e instanceof ConfigError && /audit_retention/.test(e.message) && /at least 1h/.test(e.message),
    );
    assert.equal(
      parseConfig(configSchema, { token_service: { issuer: ISSUER, audit_retention: '90d' } }).token_service?.audit_retention,
      7_776_000,
    );
  });
});
