/**
 * `tessera serve`: A2A tasks are bound to their creator in the store, not in one gateway process.
 * A task created through one instance is its creator's at every other instance on the same store
 * (several instances behind one load balancer) and after a restart, and still no other principal's:
 * on SQLite (a restart) and on PostgreSQL (two instances, and a restart; 127.0.0.1:5432, database
 * `test`, or TESSERA_TEST_POSTGRES_URL; skipped when it does not answer).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { drivers, PUBLIC, type ServeSite, serveInstances, serveSite } from './serve-instances.ts';

const AUDIENCE = `${PUBLIC}/agent`;

/** An A2A 0.3 agent (JSON-RPC) with no notion of owners: `message/send` creates a task, `tasks/get` reads any. */
function agent() {
  const tasks = new Map<string, Record<string, unknown>>();
  return (_req: unknown, res: ServerResponse, body: string) => {
    // biome-ignore lint/suspicious/noExplicitAny: a JSON-RPC request under test
    const rpc: any = JSON.parse(body);
    const reply = (payload: Record<string, unknown>) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, ...payload }));
    if (rpc.method === 'message/send') {
      const id = randomUUID();
      const task = {
        kind: 'task',
        id,
        contextId: rpc.params?.message?.contextId ?? randomUUID(),
        status: { state: 'completed' },
        artifacts: [{ artifactId: 'a1', parts: [{ kind: 'text', text: `secret result for ${id}` }] }],
      };
      tasks.set(id, task);
      return reply({ result: task });
    }
    if (rpc.method === 'tasks/get') {
      const task = tasks.get(rpc.params?.id);
      return reply(task === undefined ? { error: { code: -32001, message: 'Task not found' } } : { result: task });
    }
    return reply({ error: { code: -32601, message: 'Method not found' } });
  };
}

for (const driver of drivers) {
  describe(`tessera serve on ${driver.name}: A2A tasks bound to their creator in the store`, { skip: driver.skip }, () => {
    let site: ServeSite;
    let upstream: Upstream;
    const instances = serveInstances();
    const { stop, stopAll } = instances;
    const start = (options: { port?: number } = {}) => instances.start(site.config, options);

    const tokenOf = async (url: string, client: string): Promise<string> => {
      const res = await fetch(`${url}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic(client, site.secrets[client] as string), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'agent:invoke' }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { access_token: string }).access_token;
    };
    let n = 0;
    const call = (url: string, bearer: string, method: string, params: unknown) =>
      fetch(`${url}/agent/`, {
        method: 'POST',
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: ++n, method, params }),
      });
    // biome-ignore lint/suspicious/noExplicitAny: JSON-RPC answers under test
    const json = async (res: Response): Promise<any> => res.json();
    const send = async (url: string, bearer: string, extra: Record<string, unknown> = {}) => {
      const res = await call(url, bearer, 'message/send', {
        message: { kind: 'message', role: 'user', messageId: randomUUID(), parts: [{ kind: 'text', text: 'hi' }], ...extra },
      });
      assert.equal(res.status, 200);
      const task = (await json(res)).result;
      assert.equal(typeof task?.id, 'string');
      return task as { id: string; contextId: string };
    };
    const assertOwned = async (res: Response, id: string) => {
      assert.equal(res.status, 200);
      assert.equal((await json(res)).result?.id, id);
    };
    const assertRefused = async (res: Response) => {
      assert.equal(res.status, 404);
      const body = await json(res);
      assert.equal(body.error?.code, -32001);
      assert.doesNotMatch(JSON.stringify(body), /secret result/);
    };

    before(async () => {
      upstream = await startUpstream(agent());
      site = await serveSite(instances, {
        prefix: 'tessera-serve-a2a-',
        audience: AUDIENCE,
        postgres: driver.postgres,
        clients: ['alice', 'bob'],
        scope: 'agent:invoke',
        route: 'agent',
        upstream: upstream.url,
        routeSettings: `      a2a: { token_url: ${PUBLIC}/oauth2/token }\n`,
      });
    });
    afterEach(stopAll);
    after(async () => {
      await stopAll();
      await upstream?.close();
      await site?.remove();
    });

    it('restart: a task created before a restart is still its creator’s after it, and still not another principal’s', async () => {
      let server = await start();
      const alice = await tokenOf(server.url, 'alice');
      const bob = await tokenOf(server.url, 'bob');
      const task = await send(server.url, alice);
      await assertOwned(await call(server.url, alice, 'tasks/get', { id: task.id }), task.id);

      await stop(server);
      server = await start();
      await assertOwned(await call(server.url, alice, 'tasks/get', { id: task.id }), task.id);
      await assertRefused(await call(server.url, bob, 'tasks/get', { id: task.id }));
      // Nor can Bob take over Alice's context after the restart.
      const seen = upstream.seen.length;
      await assertRefused(
        await call(server.url, bob, 'message/send', {
          message: { kind: 'message', role: 'user', messageId: randomUUID(), parts: [], contextId: task.contextId },
        }),
      );
      assert.equal(upstream.seen.length, seen, 'the refused request reached the upstream');
    });

    if (driver.postgres) {
      it('two instances: a task created through one is readable by its creator through the other, refused there to another principal', async () => {
        const a = await start();
        const b = await start({ port: await freePort() });
        const alice = await tokenOf(a.url, 'alice');
        const bob = await tokenOf(a.url, 'bob');
        const task = await send(a.url, alice);
        await assertOwned(await call(b.url, alice, 'tasks/get', { id: task.id }), task.id);
        const seen = upstream.seen.length;
        await assertRefused(await call(b.url, bob, 'tasks/get', { id: task.id }));
        await assertRefused(await call(a.url, bob, 'tasks/get', { id: task.id }));
        assert.equal(upstream.seen.length, seen, 'a refused request reached the upstream');
        // A context Bob starts at B (an id of his choosing) is his at A too: Alice cannot continue it there.
        const context = `ctx-${randomUUID()}`;
        const bobs = await send(b.url, bob, { contextId: context });
        assert.equal(bobs.contextId, context);
        await assertRefused(
          await call(a.url, alice, 'message/send', {
            message: { kind: 'message', role: 'user', messageId: randomUUID(), parts: [], contextId: context },
          }),
        );
        await assertOwned(await call(a.url, bob, 'tasks/get', { id: bobs.id }), bobs.id);
      });
    }
  });
}
