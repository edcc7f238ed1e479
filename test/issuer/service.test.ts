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
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.ts';
import { idFloor } from '../../src/audit/id.ts';
import type { AuditEventsLost } from '../../src/audit/pipeline.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { resolveTokenService } from '../../src/config/token-service-schema.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { generateMasterKey } from '../../src/issuer/secrets.ts';
import { TokenService } from '../../src/issuer/service.ts';
import type { PruneTuning } from '../../src/store/prune.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { createVerifier } from '../../src/verifier.ts';
import { basic, startIssuer } from '../helpers/issuer.ts';

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

async function serviceWith(tokenService: Record<string, unknown>, now: number, tuning: PruneTuning = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-service-'));
  dirs.push(dir);
  const store = SqliteStore.open({ path: join(dir, 'tessera.db'), ...tuning });
  const config = resolveTokenService(parseConfig(configSchema, { data_dir: dir, token_service: { issuer: ISSUER, ...tokenService } }));
  const service = new TokenService({ config, store, master: generateMasterKey().key, clock: () => now });
  return { store, service, dir };
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

describe('store prune', () => {
  it('a prune the store stopped at its time budget goes on at the next sync round, not a minute later', async () => {
    const now = 1_800_000_000;
    // Two rows a batch and no budget: each prune call deletes one batch.
    const { store, service, dir } = await serviceWith({}, now * 1000, { pruneBatchSize: 2, pruneBudgetMillis: 0 });
    for (let i = 0; i < 9; i++) assert.equal(await store.useOnce(`jti-${i}`, now - 1, now - 60), true);
    const replayRows = () => {
      const db = new DatabaseSync(join(dir, 'tessera.db'));
      try {
        return Number((db.prepare('SELECT count(*) AS n FROM replay').get() as { n: number }).n);
      } finally {
        db.close();
      }
    };
    // The clock does not move: only the first round comes a minute after the last prune.
    await service.sync();
    assert.equal(replayRows(), 7, 'the first round deletes one batch');
    for (let round = 0; round < 8; round++) await service.sync();
    assert.equal(replayRows(), 0, 'every expired entry pruned over the rounds');
    await service.close();
    await store.close();
  });

  it('a store whose prune resolves nothing (a custom store written to the earlier contract, prune(): Promise<void>) is pruned once a minute, not at every sync round for ever', async () => {
    const now = 1_800_000_000;
    const { store, service } = await serviceWith({}, now * 1000);
    let calls = 0;
    const prune = store.prune.bind(store);
    // As a store implementing the contract before prune said whether it finished.
    Object.defineProperty(store, 'prune', {
      value: async (...args: Parameters<typeof prune>) => {
        calls++;
        await prune(...args);
        return undefined as unknown as boolean;
      },
    });
    // The clock does not move: only the first round is a minute after the last prune.
    for (let round = 0; round < 5; round++) await service.sync();
    assert.equal(calls, 1, `pruned ${calls} times in 5 rounds within one minute`);
    await service.close();
    await store.close();
  });
});

describe('sync: a key reload that keeps failing', () => {
  it('a clients change is applied once, not again at every round while the key reload fails: the standing grant is not dropped and re-created each round', async () => {
    const issuer = await startIssuer({ config: { scopes: { 'api:read': {} } } });
    try {
      const { secret } = await issuer.addClient({ id: 'agent', scopes: ['api:read'], grantTypes: ['client_credentials'] });
      const grantOf = async (): Promise<string> => {
        const r = await issuer.post(
          '/oauth2/token',
          { grant_type: 'client_credentials', scope: 'api:read', resource: 'https://api.test' },
          { authorization: basic('agent', secret) },
        );
        assert.equal(r.status, 200);
        const { access_token } = (await r.json()) as { access_token: string };
        return JSON.parse(Buffer.from(access_token.split('.')[1] as string, 'base64url').toString()).grant_id as string;
      };
      assert.equal(await grantOf(), await grantOf(), 'one standing grant');
      // Another process rotated the keys (their re-read is held up: it fails, round after round)
      // and changed a client.
      Object.defineProperty(issuer.store, 'listSigningKeys', {
        value: async () => {
          throw new Error('held up');
        },
      });
      const db = new DatabaseSync(join(issuer.dir, 'tessera.db'));
      db.exec("UPDATE meta SET value = value + 1 WHERE name IN ('keys_version', 'clients_version')");
      db.close();
      await assert.rejects(issuer.service.sync());
      const afterChange = await grantOf();
      for (let round = 0; round < 3; round++) await assert.rejects(issuer.service.sync());
      assert.equal(await grantOf(), afterChange, 'the standing grant was dropped again by a round that read no new clients change');
    } finally {
      await issuer.close();
    }
  });
});

describe('audit queue: the store failing', () => {
  /** A service whose store refuses every audit write until `up()`; with `structured`, lost events go to `lostLines`. */
  async function failingStore(structured = false) {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-service-'));
    dirs.push(dir);
    const store = SqliteStore.open({ path: join(dir, 'tessera.db') });
    const config = resolveTokenService(
      parseConfig(configSchema, { data_dir: dir, token_service: { issuer: ISSUER, audit_flush_interval: '20ms' } }),
    );
    const warnings: string[] = [];
    const lostLines: AuditEventsLost[] = [];
    const service = new TokenService({
      config,
      store,
      master: generateMasterKey().key,
      onWarning: (m) => warnings.push(m),
      ...(structured ? { onAuditEventsLost: (l: AuditEventsLost) => lostLines.push(l) } : {}),
    });
    let down = true;
    const append = store.appendAudit.bind(store);
    store.appendAudit = (events) => (down ? Promise.reject(new Error('store down')) : append(events));
    return { store, service, warnings, lostLines, up: () => (down = false) };
  }

  it('events dropped while the store is down: the retrying warning says how many', async () => {
    const { store, service, warnings } = await failingStore();
    try {
      // More than the queue holds (100 000), while the store refuses every write.
      for (let i = 0; i < 100_007; i++) service.audit.push(eventAt(Date.now(), `s${i}`));
      await service.audit.flush();
      const dropped = service.audit.dropped;
      assert.ok(dropped >= 7, `${dropped} dropped`);
      assert.equal(
        warnings.at(-1),
        `audit events could not be written to the store; retrying (${dropped} dropped so far: the queue was full)`,
      );
    } finally {
      await service.close({ auditTimeoutMs: 0 });
      await store.close();
    }
  });

  it('store down at shutdown: close() retries within auditTimeoutMs, so a short outage loses nothing', async () => {
    const { store, service, warnings, up } = await failingStore();
    try {
      service.audit.push(eventAt(Date.now(), 'alice'));
      setTimeout(up, 150);
      await service.close({ auditTimeoutMs: 5000 });
      assert.equal((await store.queryAudit({ subject: 'alice' })).length, 1, 'written once the store was back');
      assert.deepEqual(
        warnings.filter((w) => /lost/.test(w)),
        [],
      );
    } finally {
      await store.close();
    }
  });

  it('store down for all of auditTimeoutMs at shutdown: one line says how many events are lost', async () => {
    const { store, service, warnings } = await failingStore();
    try {
      for (let i = 0; i < 3; i++) service.audit.push(eventAt(Date.now(), `s${i}`));
      await service.close({ auditTimeoutMs: 100 });
      assert.deepEqual(
        warnings.filter((w) => /lost/.test(w)),
        ['3 audit events of the token service were not written to the store by the shutdown deadline and are lost'],
      );
    } finally {
      await store.close();
    }
  });

  it('hung store write at shutdown: close() gives up after auditTimeoutMs and says how many events were not written', async () => {
    const { store, service, warnings } = await failingStore();
    store.appendAudit = () => new Promise<void>(() => {});
    try {
      for (let i = 0; i < 2; i++) service.audit.push(eventAt(Date.now(), `s${i}`));
      const outcome = await Promise.race([
        service.close({ auditTimeoutMs: 100 }).then(() => 'closed'),
        new Promise((resolve) => setTimeout(() => resolve('hung'), 3000)),
      ]);
      assert.equal(outcome, 'closed');
      assert.match(warnings.at(-1) ?? '', /^2 audit events of the token service were not written/);
    } finally {
      await store.close();
    }
  });

  it('onAuditEventsLost: the line has the gateway’s shape (event audit_events_lost, component, count), its message the deadline, not what was left of it', async () => {
    const { store, service, warnings, lostLines } = await failingStore(true);
    try {
      for (let i = 0; i < 3; i++) service.audit.push(eventAt(Date.now(), `s${i}`));
      // A sliver of the shutdown deadline left for the token service (tessera serve: after the gateway's own).
      await service.close({ auditTimeoutMs: 3 });
      assert.deepEqual(lostLines, [
        {
          event: 'audit_events_lost',
          component: 'token_service',
          events: 3,
          message: '3 audit events of the token service were not written to the store by the shutdown deadline and are lost',
        },
      ]);
      assert.deepEqual(
        warnings.filter((w) => /lost/.test(w)),
        [],
        'told once, not also as a warning',
      );
    } finally {
      await store.close();
    }
  });
});

describe('grant prune: a grant whose tokens a verifier may still accept', () => {
  it('attack: grant_retention 0 and an instance whose clock runs 40 s ahead: its prune keeps the grant of a token the other instance still holds live, so that instance’s introspection agrees with its in-process verifier (no store read on the verifier’s path)', async () => {
    const t0 = 1_800_000_000;
    let now = t0 * 1000;
    const ahead = 40_000;
    const dir = mkdtempSync(join(tmpdir(), 'tessera-service-'));
    dirs.push(dir);
    const path = join(dir, 'tessera.db');
    const master = generateMasterKey().key;
    const config = resolveTokenService(parseConfig(configSchema, { data_dir: dir, token_service: { issuer: ISSUER, grant_retention: 0 } }));
    const storeB = SqliteStore.open({ path });
    const storeA = SqliteStore.open({ path });
    const b = new TokenService({ config, store: storeB, master, clock: () => now });
    const a = new TokenService({ config, store: storeA, master, clock: () => now + ahead });
    await b.keys.reload();
    await b.keys.rotate({ immediate: true });
    await b.start({ background: false });
    const api = await b.registerClient({ id: 'api', scopes: ['read'], audiences: ['https://api.test'] });
    const minted = await b.mint({ clientId: 'api', subject: 'alice', ttl: 60 });
    const verifier = createVerifier(
      {
        issuers: [{ issuer: ISSUER, audiences: ['https://api.test'], jwks_uri: `${ISSUER}/jwks`, token_type: 'at+jwt' }],
        dpop: { mode: 'disabled' },
      },
      { keySources: { [ISSUER]: b.keys }, revocation: b.revocations, clock: () => now },
    );
    const introspectB = () =>
      b.introspect({
        params: new URLSearchParams({ token: minted.access_token }),
        authorization: basic('api', api.secret as string),
        endpointUrl: `${ISSUER}/oauth2/introspect`,
      });
    // 10 s before the token's exp here; 30 s past it on A's clock, whose first sync prunes.
    now = (t0 + 50) * 1000;
    await a.sync();
    const verified = await verifier.verify({
      method: 'GET',
      url: 'https://api.test/x',
      headers: { authorization: [`Bearer ${minted.access_token}`] },
    });
    assert.equal(verified.ok, true, verified.ok ? '' : verified.error.code);
    assert.equal((await introspectB()).active, true, 'introspection answers as the verifier does');
    assert.notEqual(await storeB.getGrant(minted.grant_id), undefined);
    // Once no verifier can accept the token (its exp plus the largest clock skew), the grant goes.
    now = (t0 + 60 + 61) * 1000;
    await a.sync();
    assert.equal(await storeB.getGrant(minted.grant_id), undefined, 'pruned');
    await a.close();
    await b.close();
    await storeA.close();
    await storeB.close();
  });
});
