/** Who owns each A2A task and context (src/gateway/a2a/registry.ts): in this process, and in a store with a cache. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RENEW_SLACK_MS, StoreTaskOwners, TaskOwners, type TaskStore } from '../../../src/gateway/a2a/registry.ts';

describe('TaskOwners', () => {
  it('first claim wins, expires after its ttl (renewed on use), and evicts nothing live when full', () => {
    const owners = new TaskOwners({ maxEntries: 2, maxPerOwner: 2 });
    assert.equal(owners.claim('r', 'task', 't', 'alice', 0, 100), 'owned');
    assert.equal(owners.claim('r', 'task', 't', 'bob', 50, 100), 'foreign');
    assert.equal(owners.claim('r', 'task', 't', 'alice', 90, 100), 'owned');
    assert.equal(owners.ownerOf('r', 'task', 't', 150), 'alice');
    assert.equal(owners.ownerOf('r', 'context', 't', 150), undefined);
    assert.equal(owners.claim('r', 'task', 'u', 'bob', 150, 100), 'owned');
    assert.equal(owners.claim('r', 'task', 'v', 'carol', 150, 100), 'full');
    assert.equal(owners.ownerOf('r', 'task', 't', 190), undefined);
    assert.equal(owners.claim('r', 'task', 'v', 'carol', 251, 100), 'owned');
  });

  it('holds only live entries against an owner’s limit, per route: expired ones never left unread lock it out', () => {
    const owners = new TaskOwners({ maxEntries: 100 });
    assert.equal(owners.claim('r', 'task', 'a', 'alice', 0, 100, 2), 'owned');
    assert.equal(owners.claim('r', 'context', 'b', 'alice', 0, 100, 2), 'owned');
    assert.equal(owners.claim('r', 'task', 'c', 'alice', 50, 100, 2), 'full');
    // Another route is another share.
    assert.equal(owners.claim('s', 'task', 'c', 'alice', 50, 100, 2), 'owned');
    // Once hers have expired (the registry far from full, nobody naming them), new ones are hers again.
    assert.equal(owners.claim('r', 'task', 'c', 'alice', 100, 100, 2), 'owned');
    assert.equal(owners.claim('r', 'task', 'd', 'alice', 100, 100, 2), 'owned');
    assert.equal(owners.claim('r', 'task', 'e', 'alice', 100, 100, 2), 'full');
  });

  it('release takes back an owner’s entry (its place under the limit freed); another owner’s is left', () => {
    const owners = new TaskOwners({ maxEntries: 100 });
    assert.equal(owners.claim('r', 'mcp_task_principal', 'a', 'alice', 0, 100, 1), 'owned');
    assert.equal(owners.claim('r', 'mcp_task_principal', 'b', 'alice', 0, 100, 1), 'full');
    owners.release('r', 'mcp_task_principal', 'a', 'bob');
    assert.equal(owners.ownerOf('r', 'mcp_task_principal', 'a', 0), 'alice');
    owners.release('r', 'mcp_task_principal', 'a', 'alice');
    assert.equal(owners.ownerOf('r', 'mcp_task_principal', 'a', 0), undefined);
    assert.equal(owners.claim('r', 'mcp_task_principal', 'b', 'alice', 0, 100, 1), 'owned');
  });
});

/** A store's two A2A methods over a Map (as SqliteStore keeps them), counting reads and writes; `records` is the table. */
function memoryStore() {
  const records = new Map<string, { owner: string; expiresAt: number }>();
  const calls = { reads: 0, writes: 0 };
  const key = (route: string, kind: string, id: string) => JSON.stringify([route, kind, id]);
  const store: TaskStore = {
    async claimA2aTask(route, kind, id, owner, expiresAt, now) {
      calls.writes++;
      const k = key(route, kind, id);
      const r = records.get(k);
      if (r === undefined || r.expiresAt <= now) records.set(k, { owner, expiresAt });
      else if (r.owner === owner) r.expiresAt = Math.max(r.expiresAt, expiresAt);
      return { ...(records.get(k) as { owner: string; expiresAt: number }) };
    },
    async a2aTaskOwner(route, kind, id, now) {
      calls.reads++;
      const r = records.get(key(route, kind, id));
      return r === undefined || r.expiresAt <= now ? undefined : { ...r };
    },
    async releaseA2aTask(route, kind, id, owner) {
      calls.writes++;
      const k = key(route, kind, id);
      if (records.get(k)?.owner !== owner) return false;
      return records.delete(k);
    },
  };
  return { store, records, calls };
}

describe('StoreTaskOwners', () => {
  const DAY = 86_400_000;

  it('release takes the record back in the store and forgets it here: the id is read again, anyone’s', async () => {
    const { store } = memoryStore();
    const a = new StoreTaskOwners(store);
    assert.equal(await a.claim('r', 'mcp_task', 't', 'alice', 0, DAY), 'owned');
    await a.release('r', 'mcp_task', 't', 'alice');
    assert.equal(await a.ownerOf('r', 'mcp_task', 't', 1), undefined);
    assert.equal(await a.claim('r', 'mcp_task', 't', 'bob', 1, DAY), 'owned');
  });

  it('race across instances: an id unknown to this instance is asked of the store every time, never cached as unknown', async () => {
    const { store } = memoryStore();
    const a = new StoreTaskOwners(store);
    const b = new StoreTaskOwners(store);
    assert.equal(await b.ownerOf('r', 'task', 't', 0), undefined);
    // Instance A records it (the upstream's answer went through A); B must see it at once.
    assert.equal(await a.claim('r', 'task', 't', 'alice', 1000, DAY), 'owned');
    assert.equal(await b.ownerOf('r', 'task', 't', 1000), 'alice');
    // And a context Bob asks B for is Alice's, from A, too.
    assert.equal(await b.claim('r', 'task', 't', 'bob', 1000, DAY), 'foreign');
  });

  it('caches an owner until the record’s expiry and no longer: then the store is asked again', async () => {
    const { store, calls } = memoryStore();
    const owners = new StoreTaskOwners(store);
    await owners.claim('r', 'task', 't', 'alice', 0, 10_000);
    const reads = calls.reads;
    assert.equal(await owners.ownerOf('r', 'task', 't', 9_999), 'alice');
    assert.equal(calls.reads, reads, 'answered from the cache');
    assert.equal(await owners.ownerOf('r', 'task', 't', 10_000), undefined);
    assert.equal(calls.reads, reads + 1);
  });

  it('a stream naming one task in every event writes to the store once; the record is renewed once it falls RENEW_SLACK_MS behind the sliding ttl', async () => {
    const { store, records, calls } = memoryStore();
    const owners = new StoreTaskOwners(store);
    for (let t = 0; t < 100; t++) assert.equal(await owners.claim('r', 'task', 't', 'alice', t, DAY), 'owned');
    assert.equal(calls.writes, 1);
    assert.equal(await owners.claim('r', 'task', 't', 'alice', RENEW_SLACK_MS + 1000, DAY), 'owned');
    assert.equal(calls.writes, 2);
    assert.equal([...records.values()][0]?.expiresAt, Math.floor((RENEW_SLACK_MS + 1000 + DAY) / 1000));
  });

  it('another principal’s claim of a cached id is refused without a write, and changes nothing', async () => {
    const { store, records, calls } = memoryStore();
    const owners = new StoreTaskOwners(store);
    await owners.claim('r', 'context', 'c', 'alice', 0, DAY);
    assert.equal(await owners.claim('r', 'context', 'c', 'bob', 5, DAY), 'foreign');
    assert.equal(calls.writes, 1);
    assert.equal([...records.values()][0]?.owner, 'alice');
  });

  it('a store that cannot answer rejects (the gateway then refuses), and nothing is cached', async () => {
    let down = true;
    const { store } = memoryStore();
    const flaky: TaskStore = {
      claimA2aTask: (...a) => (down ? Promise.reject(new Error('down')) : store.claimA2aTask(...a)),
      a2aTaskOwner: (...a) => (down ? Promise.reject(new Error('down')) : store.a2aTaskOwner(...a)),
    };
    const owners = new StoreTaskOwners(flaky);
    await assert.rejects(owners.claim('r', 'task', 't', 'alice', 0, DAY));
    await assert.rejects(owners.ownerOf('r', 'task', 't', 0));
    down = false;
    assert.equal(await owners.ownerOf('r', 'task', 't', 0), undefined);
  });

  it('forgets the oldest cached records past maxCached, and asks the store for them again', async () => {
    const { store, calls } = memoryStore();
    const owners = new StoreTaskOwners(store, { maxCached: 2 });
    for (const id of ['a', 'b', 'c']) await owners.claim('r', 'task', id, 'alice', 0, DAY);
    const reads = calls.reads;
    assert.equal(await owners.ownerOf('r', 'task', 'c', 1), 'alice');
    assert.equal(calls.reads, reads);
    assert.equal(await owners.ownerOf('r', 'task', 'a', 1), 'alice');
    assert.equal(calls.reads, reads + 1);
  });
});
