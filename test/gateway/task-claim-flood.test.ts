/**
 * An answer (or a request) naming thousands of distinct task ids: every id is a claim in the task
 * registry, a store call, started together. Past what the principal may own at all
 * (`max_tasks_per_principal`), or past the ids one answer is recorded for (256, counted across an
 * event stream's chunks), the gateway refuses as full before any more claims start. A real SQLite store, its calls counted.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { postAgent, TOKEN_URL, userMessage } from './a2a/helpers.ts';
import { mcpRoute, requestEvents, startA2aGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';
import { ACCEPT, RULES, startToolsGateway } from './mcp/helpers.ts';

/** A real store whose task-registry calls are counted. */
function countedStore(): { store: SqliteStore; calls: { claims: number; lookups: number } } {
  const store = SqliteStore.open({ path: ':memory:' });
  const calls = { claims: 0, lookups: 0 };
  const claim = store.claimA2aTask.bind(store);
  const owner = store.a2aTaskOwner.bind(store);
  store.claimA2aTask = (...args) => {
    calls.claims++;
    return claim(...args);
  };
  store.a2aTaskOwner = (...args) => {
    calls.lookups++;
    return owner(...args);
  };
  return { store, calls };
}

const MANY = 3000;

describe('gateway: an A2A answer or request naming thousands of ids starts no store claim', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let counted: ReturnType<typeof countedStore>;
  before(async () => {
    // An agent answering message/send with a batch naming MANY tasks and contexts.
    upstream = await startUpstream((_req, res, body) => {
      const rpc = JSON.parse(body) as { id?: unknown };
      const answer = Array.from({ length: MANY }, (_, i) => ({
        jsonrpc: '2.0',
        id: rpc.id,
        result: { kind: 'task', id: `t-${i}`, contextId: `c-${i}`, status: { state: 'completed' } },
      }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
    counted = countedStore();
    gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL }, { deps: { taskStore: counted.store } });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await counted.store.close();
  });

  it('attack: an answer naming 6000 ids is refused (503 a2a_task_registry_full) without one store call', async () => {
    const alice = await token({ sub: 'alice', scope: 'agent:invoke' });
    const before = { ...counted.calls };
    const res = await postAgent(gw, alice, { jsonrpc: '2.0', id: 1, method: 'message/send', params: userMessage('hi') });
    assert.equal(res.status, 503);
    assert.doesNotMatch(await res.text(), /t-1/);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_task_registry_full');
    assert.deepEqual(counted.calls, before);
  });

  it('a batch request naming thousands of new contexts is refused before the store and the upstream (held already: 400)', async () => {
    const alice = await token({ sub: 'alice', scope: 'agent:invoke' });
    const before = { ...counted.calls };
    const seen = upstream.seen.length;
    const batch = Array.from({ length: MANY }, (_, i) => ({
      jsonrpc: '2.0',
      id: i + 1,
      method: 'message/send',
      params: userMessage('hi', { contextId: `ctx-${randomUUID()}` }),
    }));
    const res = await postAgent(gw, alice, batch);
    assert.equal(res.status, 400);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_message_invalid');
    assert.deepEqual(counted.calls, before);
    assert.equal(upstream.seen.length, seen);
  });

  it('an answer naming a few ids is recorded as before', async () => {
    const ok = await startUpstream((_req, res, body) => {
      const rpc = JSON.parse(body) as { id?: unknown };
      const result = { kind: 'task', id: `t-${randomUUID()}`, contextId: `c-${randomUUID()}`, status: { state: 'completed' } };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, result }));
    });
    const g = await startA2aGateway(ok.url, { token_url: TOKEN_URL }, { deps: { taskStore: counted.store } });
    try {
      const before = counted.calls.claims;
      const alice = await token({ sub: 'alice', scope: 'agent:invoke' });
      const res = await postAgent(g, alice, { jsonrpc: '2.0', id: 1, method: 'message/send', params: userMessage('hi') });
      assert.equal(res.status, 200);
      assert.equal(counted.calls.claims - before, 2);
    } finally {
      await g.close();
      await ok.close();
    }
  });
});

describe('gateway: an MCP answer creating thousands of tasks starts no store claim', () => {
  let chunked: string | undefined;
  let upstream: Upstream;
  let gw: TestGateway;
  let counted: ReturnType<typeof countedStore>;
  before(async () => {
    // An upstream answering a task-augmented tools/call with one chunk of MANY CreateTaskResult events.
    upstream = await startUpstream((_req, res, body) => {
      const rpc = JSON.parse(body) as { id?: unknown };
      if (chunked !== undefined) {
        // One write, small enough for one chunk.
        res.writeHead(200, { 'content-type': 'text/event-stream' }).end(chunked);
        return;
      }
      const now = new Date().toISOString();
      let events = '';
      for (let i = 0; i < MANY; i++) {
        const task = { taskId: `mcp-${i}`, status: 'working', createdAt: now, lastUpdatedAt: now, ttl: 60_000 };
        events += `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: rpc.id, result: { task } })}\n\n`;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' }).end(events);
    });
    counted = countedStore();
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES)], { taskStore: counted.store });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await counted.store.close();
  });

  it('attack: a stream naming 3000 tasks is cut with the request’s error (mcp_task_registry_full), claims stopped at 256', async () => {
    const alice = await token({ sub: 'alice', scope: 'mcp:use echo:use', client_id: 'alice-agent' });
    const before = { ...counted.calls };
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${alice}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: {}, task: {} } }),
    });
    const text = await res.text();
    // Recorded (and relayed) chunk by chunk until the answer had named 256: nothing past it.
    assert.doesNotMatch(text, /"mcp-256"/);
    assert.match(text, /data: \{"jsonrpc":"2.0","id":7,"error":\{"code":-32000,[^\n]*\}\}\n\n$/);
    // The stream had begun (200): the answer is cut, the refusal recorded as the upstream's failure.
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'task_registry_full');
    // Two claims a task (its principal's, its owner and tool's), for at most the 256 recorded.
    assert.ok(counted.calls.claims - before.claims <= 2 * 256, String(counted.calls.claims - before.claims));
    // A chunk naming them all at once is refused before any claim.
    const now = new Date().toISOString();
    const all = Array.from({ length: 300 }, (_, i) => ({
      taskId: `one-${i}`,
      status: 'working',
      createdAt: now,
      lastUpdatedAt: now,
      ttl: 1,
    }));
    chunked = all.map((task) => `data: ${JSON.stringify({ jsonrpc: '2.0', id: 8, result: { task } })}\n\n`).join('');
    const once = counted.calls.claims;
    const res2 = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${alice}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo', arguments: {}, task: {} } }),
    });
    const text2 = await res2.text();
    assert.doesNotMatch(text2, /one-/);
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'task_registry_full');
    assert.equal(counted.calls.claims, once);
  });
});
