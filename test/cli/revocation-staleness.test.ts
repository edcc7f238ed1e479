/**
 * `token_service.revocation_max_staleness` under a real store outage: SQLite readers locked out
 * (another process holding the WAL index's recovery locks, as one recovering it after a crash
 * does) and PostgreSQL black-holed (test/helpers/tcp-fault-proxy.ts). With it set, once the
 * instance has not read the revocation log for longer than it, its gateway refuses the token
 * service's own tokens (routes, forward-auth, WebSocket upgrades) with 503 and Retry-After, audited
 * `revocation_state_stale`, closes the WebSocket and event stream admitted on them, /readyz fails,
 * introspection never says `active: true`, and everything comes back by itself once a read
 * succeeds. An instance on the same store without it (the default) keeps admitting them and keeps
 * its stream open (today's behaviour; the PostgreSQL case is serve-store-outage.test.ts).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import type { RunningServer } from '../../src/cli/commands/serve.ts';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort, until } from '../helpers/net.ts';
import { type FaultProxy, faultProxy } from '../helpers/tcp-fault-proxy.ts';
import { drivers, type ServeSite, serveInstances, serveSite } from './serve-instances.ts';

const API = 'https://api.test/aud';
const pgUrl = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const STALE_AFTER = 3;

/**
 * Another process holding the WAL write and recover locks of the SQLite database at `path` (bytes
 * 120 and 122 of its `-shm` file) with the index header's copies made to disagree: every reader
 * meets SQLITE_BUSY_RECOVERY until the process is killed (see test/store/sqlite.test.ts); the next
 * reader then repairs the header from the WAL. Python takes them: Node has no POSIX record locks.
 */
async function lockReadersOut(path: string): Promise<ChildProcess> {
  const script = `
import fcntl, os, sys, time
fd = os.open(sys.argv[1] + '-shm', os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 120, os.SEEK_SET)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 122, os.SEEK_SET)
b = os.pread(fd, 1, 60)
os.pwrite(fd, bytes([b[0] ^ 0xff]), 60)
print('held', flush=True)
time.sleep(120)
`;
  const child = spawn('python3', ['-c', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout as NonNullable<typeof child.stdout>, 'data');
  return child;
}

for (const driver of drivers) {
  describe(`revocation_max_staleness under a store outage (${driver.name})`, { skip: driver.skip }, () => {
    const instances = serveInstances();
    let upstream: Upstream;
    let wss: WebSocketServer;
    let site: ServeSite;
    let proxy: FaultProxy | undefined;
    let locker: ChildProcess | undefined;
    let strict: RunningServer;
    let lenient: RunningServer;

    before(async () => {
      wss = new WebSocketServer({ noServer: true });
      upstream = await startUpstream((req, res) => {
        if (!req.url?.includes('events')) {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('ok');
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: hello\n\n');
      });
      upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
      site = await serveSite(instances, {
        prefix: 'tessera-revstale-',
        audience: API,
        postgres: driver.postgres,
        scope: 'api:read',
        // A lock on SQLite is waited out for store.sqlite.busy_timeout before a read fails.
        settings: `token_service: { sync_interval: 1s, revocation_max_staleness: ${STALE_AFTER}s }\n${driver.postgres ? '' : 'store: { sqlite: { busy_timeout: 1s } }\n'}`,
        route: 'api',
        upstream: upstream.url,
        clients: ['agent'],
      });
      let text = readFileSync(site.config, 'utf8').replace(
        'gateway:\n  watch_config: false\n',
        'gateway:\n  watch_config: false\n  forward_auth: { enabled: true, flavor: traefik, allowed_peers: [127.0.0.1] }\n',
      );
      if (driver.postgres) {
        // Both instances reach PostgreSQL through the fault proxy.
        const target = new URL(pgUrl);
        proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
        const via = new URL(pgUrl);
        via.port = String(proxy.port);
        text = text.replace(`url: "${pgUrl}"`, `url: "${via.toString()}", request_timeout: 2s`);
        assert.ok(text.includes(via.toString()));
      }
      writeFileSync(site.config, text);
      // The same data directory and store, the setting off (the default).
      const lenientConfig = join(site.dir, 'lenient.yaml');
      writeFileSync(lenientConfig, text.replace(`, revocation_max_staleness: ${STALE_AFTER}s`, ''));
      strict = await instances.start(site.config);
      lenient = await instances.start(lenientConfig, { port: await freePort() });
    });
    after(async () => {
      locker?.kill('SIGKILL');
      proxy?.heal();
      await instances.stopAll();
      await proxy?.close();
      wss?.close();
      await upstream?.close();
      await site?.remove();
    });

    const outage = async () => {
      if (proxy !== undefined) proxy.blackHole({ newToo: true });
      else locker = await lockReadersOut(join(site.dir, '.tessera', 'tessera.db'));
    };
    const heal = async () => {
      if (proxy !== undefined) proxy.heal();
      else if (locker !== undefined) {
        const exited = once(locker, 'exit');
        locker.kill('SIGKILL');
        await exited;
        locker = undefined;
      }
    };
    const metric = async (base: string, name: string) => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const openStreams = async (base: string, token: string) => {
      const headers = { authorization: `Bearer ${token}` };
      const ws = new WebSocket(`${base.replace('http', 'ws')}/api/ws`, { headers });
      const wsClosed = new Promise<{ code: number; reason: string }>((resolve) =>
        ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
      );
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      let events = '';
      let sseEnded = false;
      request(`${base}/api/events`, { headers }, (r) => {
        r.setEncoding('utf8');
        r.on('data', (d: string) => {
          events += d;
        });
        r.on('end', () => {
          sseEnded = true;
        });
        r.on('error', () => {
          sseEnded = true;
        });
      }).end();
      await until(async () => events.includes('hello'), 5000);
      return { ws, wsClosed, sseEnded: () => sseEnded };
    };
    const forwardAuth = (base: string, token: string) =>
      fetch(`${base}/_tessera/auth`, {
        headers: {
          authorization: `Bearer ${token}`,
          'x-forwarded-uri': '/api/x',
          'x-forwarded-method': 'GET',
          'x-forwarded-host': 'api.test',
          'x-forwarded-proto': 'https',
        },
      });
    const upgradeStatus = (base: string, token: string) =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`${base.replace('http', 'ws')}/api/ws`, { headers: { authorization: `Bearer ${token}` } });
        ws.once('open', () => {
          ws.close();
          resolve(101);
        });
        ws.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          res.resume();
        });
        ws.once('error', reject);
      });

    it('on: past the bound, 503 revocation_state_stale (routes, forward-auth, upgrades), streams closed, /readyz fails, introspection never active; back by itself once the store reads; off: admitted as before', async (t) => {
      const res = await fetch(`${strict.url}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('agent', site.secrets.agent as string), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials' }),
      });
      assert.equal(res.status, 200);
      const token = ((await res.json()) as { access_token: string }).access_token;
      const auth = { authorization: `Bearer ${token}` };
      assert.equal((await fetch(`${strict.url}/api/x`, { headers: auth })).status, 200);
      assert.equal((await forwardAuth(strict.url, token)).status, 200);
      assert.equal((await fetch(`${lenient.url}/api/x`, { headers: auth })).status, 200);
      const age = await metric(strict.url, 'tessera_revocation_log_age_seconds');
      assert.ok(age !== undefined && age >= 0 && age < 2.5, `tessera_revocation_log_age_seconds ${age}`);
      const strictStreams = await openStreams(strict.url, token);
      const lenientStreams = await openStreams(lenient.url, token);

      await outage();
      const cut = Date.now();
      let refusedId = '';
      let refused: Response | undefined;
      for (let i = 0; Date.now() - cut < 15_000; i++) {
        refusedId = `stale-${driver.name}-${cut}-${i}`;
        const r = await fetch(`${strict.url}/api/x`, {
          headers: { ...auth, 'x-request-id': refusedId },
          signal: AbortSignal.timeout(5000),
        });
        if (r.status !== 200) {
          refused = r;
          break;
        }
        await r.text();
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const refusedAfter = Date.now() - cut;
      t.diagnostic(`${driver.name}: refused ${refusedAfter} ms after the outage began (bound ${STALE_AFTER} s)`);
      assert.ok(refused !== undefined, 'never refused');
      assert.equal(refused.status, 503);
      // Not before the bound (the log was read within the last sync_interval), and within a check of it.
      assert.ok(refusedAfter >= (STALE_AFTER - 1) * 1000 && refusedAfter <= (STALE_AFTER + 3) * 1000, `${refusedAfter} ms`);
      assert.equal(refused.headers.get('retry-after'), '5');
      // Nothing beyond what any token that cannot be checked gets.
      assert.deepEqual(await refused.json(), {
        error: 'temporarily_unavailable',
        error_description: 'The access token cannot be checked right now.',
      });

      // The WebSocket (1013, try again later) and the event stream admitted on the token end.
      const closed = await Promise.race([strictStreams.wsClosed, new Promise((r) => setTimeout(() => r('open'), 3000))]);
      assert.deepEqual(closed, { code: 1013, reason: 'token unverifiable' });
      await until(async () => strictStreams.sseEnded(), 3000).catch(() => assert.fail('the event stream was not ended'));
      assert.equal((await forwardAuth(strict.url, token)).status, 503);
      assert.equal(await upgradeStatus(strict.url, token), 503);
      assert.equal((await fetch(`${strict.url}/readyz`)).status, 503);
      const staleAge = await metric(strict.url, 'tessera_revocation_log_age_seconds');
      assert.ok(staleAge !== undefined && staleAge > STALE_AFTER, `tessera_revocation_log_age_seconds ${staleAge}`);
      // Introspection reads the store: without it, no answer (503), never active: true.
      const introspected = await fetch(`${strict.url}/oauth2/introspect`, {
        method: 'POST',
        headers: { authorization: basic('agent', site.secrets.agent as string), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }),
        signal: AbortSignal.timeout(15_000),
      });
      const answer = await introspected.text();
      assert.equal(introspected.status, 503, answer);
      assert.doesNotMatch(answer, /"active":true/);

      // Off (the default): the same token is admitted and its stream goes on.
      assert.equal((await fetch(`${lenient.url}/api/x`, { headers: auth })).status, 200);
      assert.equal(lenientStreams.ws.readyState, WebSocket.OPEN);
      assert.equal(lenientStreams.sseEnded(), false);

      await heal();
      const healed = Date.now();
      await until(async () => (await fetch(`${strict.url}/api/x`, { headers: auth })).status === 200, 20_000).catch(() =>
        assert.fail('never admitted again'),
      );
      t.diagnostic(`${driver.name}: admitted again ${Date.now() - healed} ms after the store was back`);
      assert.equal((await forwardAuth(strict.url, token)).status, 200);
      assert.equal(await upgradeStatus(strict.url, token), 101);
      await until(async () => (await fetch(`${strict.url}/readyz`)).status === 200, 20_000).catch(() =>
        assert.fail('/readyz never came back'),
      );
      // The refusal is on record with its stable reason once the audit queue reaches the store.
      await until(async () => (await strict.service.store.queryAudit({ request_id: refusedId })).length > 0, 15_000).catch(() =>
        assert.fail('the refusal never reached the audit trail'),
      );
      const events = await strict.service.store.queryAudit({ request_id: refusedId });
      assert.deepEqual(
        events.map((e) => [e.decision, e.reason]),
        [['deny', 'revocation_state_stale']],
      );
      lenientStreams.ws.close();
    });
  });
}
