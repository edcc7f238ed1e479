/**
 * `audit.on_queue_full`: what the gateway does while its audit queue is full (the store refusing
 * every write for longer than `audit.max_queue` events). `drop` (the default) serves on and counts
 * the events it cannot keep; `refuse` fails closed: no request (and no forward-auth check) is let
 * through whose event could not be kept, each refused with 503 `audit_unavailable` and
 * `Retry-After`, counted but needing no audit slot itself, /readyz says why, the operations paths
 * keep answering, and it serves again by itself once the store takes the queue.
 *
 * The store is a real SQLite store, made to fail as a full audit volume would: a trigger that
 * aborts every insert into its audit table (grants, clients and the rest still work), dropped to
 * recover.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { rawHttp, until } from '../helpers/net.ts';
import {
  baseConfig,
  capturedLog,
  STATIC_TOKEN,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
  upgradeStatus,
} from './helpers.ts';

/** A SQLite store whose audit writes can be made to fail, and healed. */
function auditFailingStore() {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-full-'));
  const path = join(dir, 'tessera.db');
  const store = SqliteStore.open({ path });
  const admin = new DatabaseSync(path);
  return {
    store,
    sink: { write: (events: Parameters<typeof store.appendAudit>[0]) => store.appendAudit(events) },
    fail: () =>
      admin.exec(
        `CREATE TRIGGER IF NOT EXISTS audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit volume full'); END`,
      ),
    heal: () => admin.exec('DROP TRIGGER IF EXISTS audit_down'),
    async close() {
      admin.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const config = (upstream: string, audit: Record<string, unknown>) => ({
  ...baseConfig(),
  audit: { flush_interval: '50ms', max_queue: 3, ...audit },
  gateway: {
    forward_auth: { enabled: true, flavor: 'traefik' as const },
    routes: [{ id: 'pub', match: { path_prefix: '/pub' }, upstream: { url: upstream }, auth: 'none' as const }],
  },
});

/** A forward-auth check as Traefik sends it, for GET /pub/x. */
const check = (url: string) =>
  fetch(`${url}/_tessera/auth`, {
    headers: { 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/pub/x', 'x-forwarded-host': 'app.example', 'x-forwarded-proto': 'https' },
  });

describe('audit.on_queue_full: refuse', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let db: ReturnType<typeof auditFailingStore>;
  before(async () => {
    upstream = await startUpstream();
    db = auditFailingStore();
    gw = await startGateway(config(upstream.url, { on_queue_full: 'refuse' }), { auditSinks: [db.sink] });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
    await db?.close();
  });

  it('attack: an audit store outage past max_queue cannot be used to act unaudited: the next request gets 503 audit_unavailable and nothing reaches the upstream; /readyz says why; it serves again once the store takes the queue', async () => {
    assert.equal((await fetch(`${gw.url}/pub/before`)).status, 200);
    assert.equal((await check(gw.url)).status, 200, 'forward-auth passes while the queue has room');
    await until(async () => (await db.store.queryAudit({ limit: 100 })).length === 2);
    db.fail();
    // Three events fit in the queue (max_queue: 3). A request takes two slots when it is admitted
    // (its own event's, and the close's of the stream its response may be), a check one: two
    // requests pass, and the check after them takes the last slot.
    for (let i = 0; i < 2; i++) assert.equal((await fetch(`${gw.url}/pub/kept-${i}`)).status, 200);
    assert.equal((await check(gw.url)).status, 200, 'the last slot is a check’s');
    const seen = upstream.seen.length;

    const refused = await fetch(`${gw.url}/pub/unaudited`, { headers: { 'x-request-id': 'refused-while-full' } });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '5');
    assert.equal(refused.headers.get('x-request-id'), 'refused-while-full');
    const body = (await refused.json()) as { error: string; error_description: string };
    assert.equal(body.error, 'temporarily_unavailable');
    assert.equal(body.error_description, 'The audit trail cannot record this request right now; retry later.');
    assert.equal(upstream.seen.length, seen, 'nothing reached the upstream');
    assert.equal(upstream.seen.filter((s) => s.url === '/pub/unaudited').length, 0);

    const fa = await check(gw.url);
    assert.equal(fa.status, 503, 'a forward-auth check is refused too: the proxy would let the request through unaudited');
    assert.equal(fa.headers.get('retry-after'), '5');

    // The operations paths keep answering; /readyz takes the instance out of service, and says why to loopback.
    assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
    const ready = await fetch(`${gw.url}/readyz`);
    assert.equal(ready.status, 503);
    const checks = ((await ready.json()) as { checks: { name: string; ok: boolean; detail?: string }[] }).checks;
    const audit = checks.find((c) => c.name === 'audit queue');
    assert.equal(audit?.ok, false, JSON.stringify(checks));
    assert.match(audit?.detail ?? '', /full: requests are refused/);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /^tessera_gateway_denies_total\{reason="audit_unavailable"\} 2$/m, 'the refusals are counted');
    assert.match(metrics, /^tessera_audit_events_dropped_total 0$/m, 'no event was dropped: every decision let through is kept');

    db.heal();
    await until(async () => (await fetch(`${gw.url}/pub/after`)).status === 200, 5000);
    assert.equal((await fetch(`${gw.url}/readyz`)).status, 200);
    assert.equal((await check(gw.url)).status, 200);
    await gw.served.gateway.audit.flush();
    await until(async () => (await db.store.queryAudit({ limit: 100 })).some((e) => e.path === '/pub/after'), 5000);
    const stored = await db.store.queryAudit({ limit: 100 });
    for (let i = 0; i < 2; i++)
      assert.ok(
        stored.some((e) => e.path === `/pub/kept-${i}`),
        `kept-${i} reached the store`,
      );
    assert.ok(!stored.some((e) => e.request_id === 'refused-while-full'), 'the refusal took no audit slot');
    assert.equal(gw.served.gateway.audit.stats.reserved, 0, 'every request and check answered gave its audit slot back');
  });
});

/**
 * A request refused for its framing (400 request_framing_invalid: a smuggling attempt, say) is an
 * audited decision like any other: with `refuse` it takes its slot first, so while the queue is
 * full it is refused 503 audit_unavailable (its connection closed all the same) rather than
 * answered 400 with its event dropped.
 */
describe('audit.on_queue_full: refuse, a request refused for its framing', () => {
  it('attack: a misframed request (Transfer-Encoding: gzip, chunked, a request behind it) while the queue is full is refused 503 audit_unavailable, not served its 400 with the event dropped; the connection closed, nothing reaches the upstream', async () => {
    const upstream = await startUpstream();
    const db = auditFailingStore();
    const gw = await startGateway(config(upstream.url, { on_queue_full: 'refuse' }), { auditSinks: [db.sink] });
    const misframed = (id: string) =>
      rawHttp(
        gw.url,
        `POST /pub/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: ${id}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /pub/behind HTTP/1.1\r\nHost: a\r\n\r\n`,
      );
    try {
      db.fail();
      for (let i = 0; i < 2; i++) assert.equal((await fetch(`${gw.url}/pub/kept-${i}`)).status, 200);
      // With room, the refusal is answered 400 and takes a slot for its event (one: it opens no
      // stream), the last one here.
      const kept = await misframed('framing-kept');
      assert.match(kept, /^HTTP\/1\.1 400 /, kept);
      const seen = upstream.seen.length;
      const refused = await misframed('framing-while-full');
      assert.match(refused, /^HTTP\/1\.1 503 /, refused);
      assert.equal([...refused.matchAll(/HTTP\/1\.1 \d{3} /g)].length, 1, 'one answer: the request behind it is not read');
      assert.match(refused, /\r\nconnection: close\r\n/i);
      assert.match(refused, /\r\nretry-after: 5\r\n/i);
      assert.match(refused, /"error":"temporarily_unavailable"/);
      assert.equal(upstream.seen.length, seen, 'nothing reached the upstream');
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /^tessera_gateway_denies_total\{reason="audit_unavailable"\} 1$/m);
      assert.match(metrics, /^tessera_audit_events_dropped_total 0$/m, 'no decision served lost its event');

      db.heal();
      await until(async () => (await db.store.queryAudit({ limit: 100 })).some((e) => e.path === '/pub/kept-1'), 5000);
      const stored = await db.store.queryAudit({ limit: 100 });
      assert.equal(stored.find((e) => e.request_id === 'framing-kept')?.reason, 'request_framing_invalid', 'the 400 served has its event');
      assert.ok(!stored.some((e) => e.request_id === 'framing-while-full'), 'the 503 took no slot');
      assert.equal(gw.served.gateway.audit.stats.reserved, 0);
    } finally {
      db.heal();
      await gw.close();
      await upstream.close();
      await db.close();
    }
  });
});

describe('audit.on_queue_full: drop (the default)', () => {
  it('requests pass while the store is down past max_queue; the events that do not fit are dropped and counted', async () => {
    const upstream = await startUpstream();
    const db = auditFailingStore();
    const gw = await startGateway(config(upstream.url, {}), { auditSinks: [db.sink] });
    try {
      db.fail();
      for (let i = 0; i < 6; i++) assert.equal((await fetch(`${gw.url}/pub/x-${i}`)).status, 200);
      assert.equal(upstream.seen.length, 6);
      assert.equal((await check(gw.url)).status, 200);
      await gw.served.gateway.audit.flush();
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.doesNotMatch(metrics, /reason="audit_unavailable"/);
      assert.match(metrics, /^tessera_audit_events_dropped_total [1-9]/m);
    } finally {
      db.heal();
      await gw.close();
      await upstream.close();
      await db.close();
    }
  });
});

/**
 * An `audit.file` that cannot be written: with `refuse`, the batches it refused are kept (within
 * `max_queue`) and tried again, so a failing output fills the queue and the gateway refuses rather
 * than serving requests whose events are lost. The file fails for real: it is /dev/full (every
 * write fails with ENOSPC), or a directory stands at its path (the open fails with EISDIR) and is
 * removed to recover. The gateway's store (a memory sink) takes every event meanwhile: the file
 * alone fills the queue.
 */
describe('audit.on_queue_full: refuse, with a failing audit.file', () => {
  it('attack: an audit.file whose writes fail (ENOSPC) cannot be used to act unaudited: past max_queue the next request gets 503 audit_unavailable, nothing reaches the upstream, /readyz says why', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway(config(upstream.url, { file: '/dev/full', on_queue_full: 'refuse' }));
    try {
      // Two requests (each takes two slots while open) and a check fill max_queue: 3.
      for (let i = 0; i < 2; i++) assert.equal((await fetch(`${gw.url}/pub/kept-${i}`)).status, 200);
      assert.equal((await check(gw.url)).status, 200);
      // Let the file refuse what it holds (each flush_interval it tries again): still full.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const seen = upstream.seen.length;
      const refused = await fetch(`${gw.url}/pub/unaudited`);
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '5');
      assert.equal(((await refused.json()) as { error: string }).error, 'temporarily_unavailable');
      assert.equal(upstream.seen.length, seen, 'nothing reached the upstream');
      assert.equal((await check(gw.url)).status, 503, 'nor is a forward-auth check let through');
      const ready = await fetch(`${gw.url}/readyz`);
      assert.equal(ready.status, 503);
      const checks = ((await ready.json()) as { checks: { name: string; ok: boolean; detail?: string }[] }).checks;
      assert.match(checks.find((c) => c.name === 'audit queue')?.detail ?? '', /full: requests are refused/);
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /^tessera_audit_events_dropped_total 0$/m, 'no event of a request let through was dropped');
      assert.match(metrics, /^tessera_audit_write_failures_total 3$/m, 'each event the file refused counts once, however many attempts');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });

  it('it serves again by itself once the file can be written, and the events it held are written to it once each', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-full-'));
    const file = join(dir, 'audit.jsonl');
    // A directory at the path: every open of audit.file fails (EISDIR) until it is removed.
    mkdirSync(file);
    const gw = await startGateway(config(upstream.url, { file, on_queue_full: 'refuse' }));
    try {
      // The slot left after two is not enough for a request, which takes two while open.
      for (let i = 0; i < 2; i++) assert.equal((await fetch(`${gw.url}/pub/kept-${i}`)).status, 200);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal((await fetch(`${gw.url}/pub/unaudited`)).status, 503);
      rmdirSync(file);
      await until(async () => (await fetch(`${gw.url}/pub/after`)).status === 200, 5000);
      assert.equal((await fetch(`${gw.url}/readyz`)).status, 200);
      await gw.served.gateway.audit.flush();
      await until(async () => readFileSync(file, 'utf8').includes('/pub/after'), 5000);
      const paths = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { path?: string }).path);
      for (let i = 0; i < 2; i++)
        assert.equal(paths.filter((p) => p === `/pub/kept-${i}`).length, 1, `kept-${i} written once: ${JSON.stringify(paths)}`);
      assert.ok(!paths.includes('/pub/unaudited'), 'the refusal took no audit slot');
    } finally {
      await gw.close();
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('nginx forward-auth gets the refusal as 403 with X-Tessera-Status: 503, and a WebSocket upgrade is refused 503', async () => {
    const upstream = await startUpstream();
    const base = config(upstream.url, { file: '/dev/full', on_queue_full: 'refuse' });
    const gw = await startGateway({
      ...base,
      gateway: {
        ...base.gateway,
        forward_auth: { enabled: true, flavor: 'nginx' as const },
        routes: [
          ...base.gateway.routes,
          { id: 'ws', match: { path_prefix: '/ws' }, upstream: { url: upstream.url }, auth: 'none' as const },
        ],
      },
    });
    const nginxCheck = () =>
      fetch(`${gw.url}/_tessera/auth`, {
        headers: { 'x-original-method': 'GET', 'x-original-uri': '/pub/x', 'x-original-host': 'app.example' },
      });
    try {
      for (let i = 0; i < 2; i++) assert.equal((await fetch(`${gw.url}/pub/kept-${i}`)).status, 200);
      assert.equal((await nginxCheck()).status, 200, 'the check passes while the queue has room');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const fa = await nginxCheck();
      assert.equal(fa.status, 403, 'auth_request turns any status but 401 and 403 into a 500');
      assert.equal(fa.headers.get('x-tessera-status'), '503');
      assert.equal(fa.headers.get('retry-after'), '5');
      const seen = upstream.seen.length;
      assert.equal(await upgradeStatus(gw.url, '/ws/socket', { authorization: `Bearer ${STATIC_TOKEN}` }), 503);
      assert.equal(upstream.seen.length, seen, 'the upgrade reached no upstream');
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /^tessera_gateway_denies_total\{reason="audit_unavailable"\} 2$/m, 'both were refused for the audit queue');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

describe('audit.on_queue_full: drop (the default), with a failing audit.file', () => {
  it('requests pass while audit.file refuses every write; its failures are counted', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway(config(upstream.url, { file: '/dev/full' }));
    try {
      for (let i = 0; i < 6; i++) assert.equal((await fetch(`${gw.url}/pub/x-${i}`)).status, 200);
      await gw.served.gateway.audit.flush();
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.doesNotMatch(metrics, /reason="audit_unavailable"/);
      assert.match(metrics, /^tessera_audit_write_failures_total [1-9]/m);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});

/**
 * A request admitted while the queue had room, that completes once other requests have filled it:
 * its slot was reserved when it was admitted, so its event is kept and the request after the last
 * free slot is refused instead. The audit.file is a FIFO nobody reads: its open (and so every
 * write) stalls, as a hung disk or NFS mount would, until the test starts a reader.
 */
describe('audit.on_queue_full: refuse, with a request in flight while the queue fills', () => {
  it('attack: a slow request admitted just before the queue fills cannot complete unaudited: its slot was reserved, the later request is refused instead', async () => {
    let release: (() => void) | undefined;
    const upstream = await startUpstream((req, res) => {
      const answer = () => {
        if (!res.headersSent) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      };
      if (req.url === '/pub/slow') release = answer;
      else answer();
    });
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-fifo-'));
    const fifo = join(dir, 'audit.jsonl');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    const gw = await startGateway(config(upstream.url, { file: fifo, on_queue_full: 'refuse', max_queue: 5 }));
    let reader: ReturnType<typeof spawn> | undefined;
    try {
      const slow = fetch(`${gw.url}/pub/slow`);
      await until(async () => release !== undefined, 5000);
      const served = ['/pub/slow'];
      let refused = 0;
      for (let i = 0; i < 5 && refused === 0; i++) {
        const r = await fetch(`${gw.url}/pub/fast-${i}`);
        await r.arrayBuffer();
        if (r.status === 200) served.push(`/pub/fast-${i}`);
        else {
          assert.equal(r.status, 503);
          refused++;
        }
      }
      assert.equal(refused, 1, 'once the queue is full, requests are refused');
      assert.deepEqual(
        served,
        ['/pub/slow', '/pub/fast-0', '/pub/fast-1'],
        'the slow request keeps its two slots (its event’s and its close’s): two more fit in max_queue: 5',
      );
      release?.();
      const done = await slow;
      assert.equal(done.status, 200);
      await done.text();
      // (No audit.flush() here: it would wait for the stalled write.)
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /^tessera_audit_events_dropped_total 0$/m, 'the slow request’s event was not dropped');
      // Read the FIFO: the stalled writes go through, every served request’s event among them.
      let text = '';
      reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
      reader.stdout?.on('data', (c: Buffer) => {
        text += c.toString();
      });
      await until(async () => served.every((p) => text.includes(`"path":"${p}"`)), 5000).catch(() => {
        throw new Error(`not every served request reached audit.file: ${text}`);
      });
    } finally {
      release?.();
      // A FIFO with no reader would hold the gateway's open (and this process) forever.
      reader ??= spawn('cat', [fifo], { stdio: ['ignore', 'ignore', 'ignore'] });
      await gw.close();
      await upstream.close();
      reader.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A stream the gateway cuts later (revocation, expiry) is a decision of its own, audited as a
 * `gateway.stream_closed` event. A WebSocket takes a second slot when it is admitted, for that
 * event, and holds it while it is open: its close is kept however full the queue has become. An
 * HTTP response cut mid-stream has none (its own event, in the slot it holds until it ends, records
 * the cut as `detail.closed`): while the queue is full its `gateway.stream_closed` is dropped, and
 * never silently: an `audit_events_dropped` line at level error, the dropped counter, /readyz.
 */
describe('audit.on_queue_full: refuse, a stream the gateway cuts while the queue is full', () => {
  let upstream: Upstream;
  let wss: WebSocketServer;
  let db: ReturnType<typeof auditFailingStore>;
  let gw: TestGateway;
  let upgrades = 0;
  const revocations = new RevocationList();
  const log = capturedLog();
  before(async () => {
    upstream = await startUpstream((req, res) => {
      if (req.url?.startsWith('/api/events') === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        // ?end=1: one event, then the upstream ends the stream itself.
        if (req.url.endsWith('?end=1')) {
          res.write('data: once\n\n');
          setTimeout(() => res.end(), 50);
          return;
        }
        const timer = setInterval(() => res.write('data: tick\n\n'), 50);
        res.on('close', () => clearInterval(timer));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
    wss = new WebSocketServer({ noServer: true });
    upstream.server.on('upgrade', (req, socket, head) => {
      upgrades++;
      wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
    });
    db = auditFailingStore();
    gw = await startGateway(
      {
        ...baseConfig(),
        audit: { flush_interval: '50ms', max_queue: 3, on_queue_full: 'refuse' },
        gateway: {
          routes: [
            { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] },
            { id: 'pub', match: { path_prefix: '/pub' }, upstream: { url: upstream.url }, auth: 'none' },
          ],
        },
      },
      { auditSinks: [db.sink], revocation: revocations, logger: log.logger },
    );
  });
  after(async () => {
    await gw?.close();
    wss?.close();
    await upstream?.close();
    await db?.close();
  });

  /** Public requests until one is refused 503 (the queue full); how many were served. */
  const fill = async (tag: string): Promise<number> => {
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${gw.url}/pub/${tag}-${i}`);
      await r.arrayBuffer();
      if (r.status === 503) return i;
      assert.equal(r.status, 200);
    }
    throw new Error('the queue never filled');
  };
  const metric = async (name: string) => {
    const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(await (await fetch(`${gw.url}/metrics`)).text());
    return Number(m?.[1]);
  };
  const heal = async (until_: (events: Awaited<ReturnType<typeof db.store.queryAudit>>) => boolean) => {
    db.heal();
    await until(async () => (await fetch(`${gw.url}/readyz`)).status === 200, 5000);
    await until(async () => until_(await db.store.queryAudit({ limit: 100 })), 5000);
  };
  const wsOpen = async (t: string) => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/api/ws`, { headers: { authorization: `Bearer ${t}` } });
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    await once(ws, 'open');
    ws.send('ping');
    await once(ws, 'message');
    return { ws, closed };
  };

  it('a WebSocket holds a slot for its close while it is open: cut on revocation while the queue is full, its gateway.stream_closed is kept; one that ends by itself gives it back', async () => {
    // A WebSocket that ends by itself gives its close slot back.
    const quiet = await wsOpen(await token({ jti: 'ws-quiet' }));
    assert.equal(gw.served.gateway.audit.stats.reserved, 1, 'the open WebSocket holds the slot of its close');
    quiet.ws.close();
    await quiet.closed;
    await until(async () => gw.served.gateway.audit.stats.reserved === 0, 2000);
    await until(async () => (await db.store.queryAudit({ limit: 100 })).length === 1, 5000);

    db.fail();
    const t = await token({ jti: 'ws-cut', grant_id: 'g-ws-cut' });
    const c = await wsOpen(t);
    assert.equal(
      await fill('ws'),
      0,
      'the WebSocket holds two of the three slots, its upgrade’s event and its close’s: a request, which takes two, does not fit',
    );
    revocations.apply({ grantIds: ['g-ws-cut'] });
    assert.equal(await c.closed, 1008);
    assert.equal(await metric('tessera_audit_events_dropped_total'), 0, 'the close took the WebSocket’s own slot: nothing dropped');
    assert.ok(!log.lines.some((l) => l.event === 'audit_events_dropped'));
    await heal((events) => events.some((e) => e.kind === 'gateway.stream_closed' && e.jti === 'ws-cut'));
    const closed = (await db.store.queryAudit({ limit: 100 })).find((e) => e.kind === 'gateway.stream_closed' && e.jti === 'ws-cut');
    assert.equal(closed?.reason, 'token_revoked');
    assert.equal(closed?.decision, 'deny');
    assert.equal(gw.served.gateway.audit.stats.reserved, 0, 'every slot given back');
  });

  /** An SSE request through /api; resolves once its first event has come through (the stream open). */
  const sseOpen = (t: string, path = '/api/events') =>
    new Promise<{ ended: Promise<unknown> }>((resolve, reject) => {
      request(`${gw.url}${path}`, { headers: { authorization: `Bearer ${t}`, accept: 'text/event-stream' } }, (res) => {
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['content-type'], 'text/event-stream');
        const ended = once(res, 'close');
        res.once('data', () => resolve({ ended }));
        res.resume();
      })
        .on('error', reject)
        .end();
    });

  it('attack: an SSE stream holds a slot for its close while it is open: cut on revocation while the queue is full, its gateway.stream_closed is kept, nothing dropped; one that ends by itself gives it back', async () => {
    await gw.served.gateway.audit.flush();
    // An event stream the upstream ends by itself gives its close slot back.
    const quiet = await sseOpen(await token({ jti: 'sse-quiet' }), '/api/events?end=1');
    await quiet.ended;
    await until(async () => gw.served.gateway.audit.stats.reserved === 0, 2000);

    db.fail();
    const t = await token({ jti: 'sse-cut', grant_id: 'g-sse-cut' });
    // The stream is open once its first event has come through (before that, a revocation refuses the request).
    const s = await sseOpen(t);
    assert.equal(gw.served.gateway.audit.stats.reserved, 2, 'the open stream holds two slots: its own event’s and its close’s');
    assert.equal(await fill('sse'), 0, 'the stream holds two of the three slots: a request, which takes two, does not fit');
    const before = await metric('tessera_audit_events_dropped_total');
    revocations.apply({ grantIds: ['g-sse-cut'] });
    await s.ended;
    assert.equal(await metric('tessera_audit_events_dropped_total'), before, 'the close took the stream’s own slot: nothing dropped');
    assert.ok(!log.lines.some((l) => l.event === 'audit_events_dropped'));
    await heal((events) => events.some((e) => e.kind === 'gateway.request' && e.jti === 'sse-cut'));
    const stored = await db.store.queryAudit({ limit: 100 });
    const closed = stored.find((e) => e.kind === 'gateway.stream_closed' && e.jti === 'sse-cut');
    assert.equal(closed?.reason, 'token_revoked', 'the gateway.stream_closed of the cut is kept');
    assert.equal(closed?.decision, 'deny');
    // The stream's own event, in the slot it held until it ended, records the cut too.
    const own = stored.find((e) => e.kind === 'gateway.request' && e.jti === 'sse-cut');
    assert.equal((own?.detail as { closed?: string } | undefined)?.closed, 'token_revoked');
    assert.equal(gw.served.gateway.audit.stats.reserved, 0, 'every slot given back');
  });

  it('attack: an SSE request admitted while the queue has room for its own event but not for its close is refused 503 audit_unavailable, as a WebSocket upgrade is; nothing reaches the upstream', async () => {
    await gw.served.gateway.audit.flush();
    db.fail();
    // max_queue 3: two events held by the failing store leave one slot.
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${gw.url}/pub/one-left-${i}`);
      await r.arrayBuffer();
      assert.equal(r.status, 200);
    }
    await until(async () => gw.served.gateway.audit.stats.reserved === 0, 2000);
    const seen = upstream.seen.length;
    const upgraded = upgrades;
    const t = await token({ jti: 'sse-refused' });
    const refused = await fetch(`${gw.url}/api/events`, { headers: { authorization: `Bearer ${t}`, accept: 'text/event-stream' } });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '5');
    assert.equal(((await refused.json()) as { error: string }).error, 'temporarily_unavailable');
    assert.equal(await upgradeStatus(gw.url, '/api/ws', { authorization: `Bearer ${t}` }), 503, 'a WebSocket upgrade alike');
    assert.equal(upstream.seen.length, seen, 'nothing reached the upstream');
    assert.equal(upgrades, upgraded);
    assert.equal(gw.served.gateway.audit.stats.reserved, 0, 'the refusals hold no slot');
    await heal((events) => events.some((e) => e.path === '/pub/one-left-1'));
    assert.ok(!(await db.store.queryAudit({ limit: 100 })).some((e) => e.jti === 'sse-refused'), 'the refusal took no audit slot');
  });
});

describe('audit.on_queue_full: refuse, max_queue: 1', () => {
  it('a request, and a WebSocket upgrade, fit an empty queue: served, not refused 503 audit_unavailable while /readyz says ready; its event is kept', async () => {
    const upstream = await startUpstream();
    const wss = new WebSocketServer({ noServer: true });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => ws.close()));
    const db = auditFailingStore();
    const gw = await startGateway(
      {
        ...baseConfig(),
        audit: { flush_interval: '50ms', max_queue: 1, on_queue_full: 'refuse' },
        gateway: {
          routes: [
            { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] },
            { id: 'pub', match: { path_prefix: '/pub' }, upstream: { url: upstream.url }, auth: 'none' },
          ],
        },
      },
      { auditSinks: [db.sink] },
    );
    try {
      assert.equal((await fetch(`${gw.url}/readyz`)).status, 200);
      const pub = await fetch(`${gw.url}/pub/one`);
      await pub.arrayBuffer();
      assert.equal(pub.status, 200, 'a public request with the queue empty');
      await until(async () => (await db.store.queryAudit({ limit: 100 })).some((e) => e.path === '/pub/one'), 5000);
      const t = await token({ jti: 'one-slot' });
      const api = await fetch(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${t}` } });
      await api.arrayBuffer();
      assert.equal(api.status, 200, 'an authenticated request with the queue empty');
      await until(async () => (await db.store.queryAudit({ limit: 100 })).some((e) => e.jti === 'one-slot'), 5000);
      assert.equal(
        await upgradeStatus(gw.url, '/api/ws', { authorization: `Bearer ${t}` }),
        101,
        'a WebSocket upgrade with the queue empty',
      );
      await until(async () => gw.served.gateway.audit.stats.reserved === 0, 2000);
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.doesNotMatch(metrics, /reason="audit_unavailable"/, 'nothing refused');
      assert.equal(upstream.seen.filter((s) => s.url === '/pub/one' || s.url === '/api/x').length, 2);
    } finally {
      await gw.close();
      wss.close();
      await upstream.close();
      await db.close();
    }
  });
});

describe('audit.on_queue_full: refuse, max_queue: 1, an SSE stream the gateway cuts', () => {
  it('its gateway.stream_closed has no slot (the stream’s own event holds the only one) and is dropped loudly: counted in tessera_audit_events_dropped_total, said in one audit_events_dropped line (level error, component gateway, kinds); the stream’s own event is kept and records the cut', async () => {
    const upstream = await startUpstream((req, res) => {
      if (req.url?.startsWith('/api/events') === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        const timer = setInterval(() => res.write('data: tick\n\n'), 50);
        res.on('close', () => clearInterval(timer));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
    const revocations = new RevocationList();
    const log = capturedLog();
    // A healthy store: the close is dropped for want of a slot, not because any output failed.
    const db = auditFailingStore();
    const gw = await startGateway(
      {
        ...baseConfig(),
        audit: { flush_interval: '50ms', max_queue: 1, on_queue_full: 'refuse' },
        gateway: { routes: [{ id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
      },
      { auditSinks: [db.sink], revocation: revocations, logger: log.logger },
    );
    const metric = async (name: string) =>
      Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
    try {
      const t = await token({ jti: 'sse-one-slot', grant_id: 'g-sse-one-slot' });
      const { ended } = await new Promise<{ ended: Promise<unknown> }>((resolve, reject) => {
        request(`${gw.url}/api/events`, { headers: { authorization: `Bearer ${t}`, accept: 'text/event-stream' } }, (res) => {
          assert.equal(res.statusCode, 200, 'served with the queue empty');
          const closed = once(res, 'close');
          res.once('data', () => resolve({ ended: closed }));
          res.resume();
        })
          .on('error', reject)
          .end();
      });
      assert.equal(gw.served.gateway.audit.stats.reserved, 1, 'the open stream holds one slot, its own event’s; none for its close');
      assert.equal(await metric('tessera_audit_events_dropped_total'), 0);

      revocations.apply({ grantIds: ['g-sse-one-slot'] });
      await ended;
      await until(async () => log.lines.some((l) => l.event === 'audit_events_dropped'), 2000);
      assert.equal(await metric('tessera_audit_events_dropped_total'), 1, 'the close is counted as dropped');
      const dropped = log.lines.filter((l) => l.event === 'audit_events_dropped');
      assert.equal(dropped.length, 1);
      assert.equal(dropped[0]?.level, 50, 'level error');
      assert.equal(dropped[0]?.component, 'gateway');
      assert.deepEqual(dropped[0]?.kinds, { 'gateway.stream_closed': 1 });
      assert.equal(dropped[0]?.events, 1);
      assert.equal(dropped[0]?.total, 1);
      assert.doesNotMatch(JSON.stringify(dropped[0]), /sse-one-slot|g-sse-one-slot|Bearer|eyJ/, 'no event content, no token');

      await until(
        async () => (await db.store.queryAudit({ limit: 100 })).some((e) => e.kind === 'gateway.request' && e.jti === 'sse-one-slot'),
        5000,
      );
      const stored = await db.store.queryAudit({ limit: 100 });
      const own = stored.find((e) => e.kind === 'gateway.request' && e.jti === 'sse-one-slot');
      assert.equal(
        (own?.detail as { closed?: string } | undefined)?.closed,
        'token_revoked',
        'the cut is still recorded, in the stream’s own event',
      );
      assert.ok(!stored.some((e) => e.kind === 'gateway.stream_closed'), 'the close itself is not in the store: dropped');
      await until(async () => gw.served.gateway.audit.stats.reserved === 0, 2000);
    } finally {
      await gw.close();
      await upstream.close();
      await db.close();
    }
  });
});

/**
 * A batch the disk took part of, kept by `refuse` and written again after a reload that keeps
 * audit.file (logrotate's postrotate SIGHUP). A real partial write: a gateway process whose file
 * size limit is 1 KiB (`ulimit -S -f 1`; Node ignores SIGXFSZ) writes events of about 400 bytes;
 * the kernel takes the first 1024 bytes of the file, then EFBIG. `between` runs next: a rotation
 * (the file renamed; the limit is per file), or the limit raised (prlimit on the gateway process)
 * with the file kept; then the gateway is reloaded with the same configuration and serves one more
 * request. Returns the texts of the file and of the rotated one (empty when not rotated), and the
 * number of requests served.
 */
function partialWriteThenReload(between: string): { file: string; rotated: string; n: number } {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-resume-'));
  const file = join(dir, 'audit.jsonl');
  const src = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  const script = `
    import { execFileSync } from 'node:child_process';
    import { renameSync, statSync } from 'node:fs';
    import pino from 'pino';
    import { serveGateway } from ${src('../../src/gateway/serve.ts')};
    import { baseConfig, parse } from ${src('./helpers.ts')};
    const file = ${JSON.stringify(file)};
    const unlimited = () => execFileSync('prlimit', ['--pid', String(process.pid), '--fsize=unlimited']);
    const config = parse({
      ...baseConfig(),
      audit: { file, flush_interval: '50ms', max_queue: 100, on_queue_full: 'refuse' },
      gateway: { routes: [{ id: 'pub', match: { path_prefix: '/pub' }, upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' }] },
    });
    const served = await serveGateway({ config, host: '127.0.0.1', port: 0 }, { logger: pino({ level: 'silent' }) });
    const size = () => { try { return statSync(file).size; } catch { return 0; } };
    let n = 0;
    const request = async () => {
      n++;
      await (await fetch(served.url + '/x/' + String(n).repeat(300))).arrayBuffer();
      await new Promise((r) => setTimeout(r, 120));
    };
    while (size() < 1024 && n < 8) await request();
    ${between}
    const reloaded = served.reload(config);
    await request();
    await served.gateway.audit.flush();
    await new Promise((r) => setTimeout(r, 200));
    await served.close({ drainTimeoutMs: 500 });
    console.log(JSON.stringify({ reloaded: reloaded.ok, n }));
  `;
  try {
    const result = execFileSync('bash', ['-c', 'ulimit -S -f 1; exec "$0" --input-type=module -e "$1"', process.execPath, script], {
      encoding: 'utf8',
      cwd: new URL('../..', import.meta.url).pathname,
    });
    const { reloaded, n } = JSON.parse(result) as { reloaded: boolean; n: number };
    assert.equal(reloaded, true);
    assert.ok(n >= 3, `requests served: ${n}`);
    const read = (p: string) => {
      try {
        return readFileSync(p, 'utf8');
      } catch {
        return '';
      }
    };
    return { file: read(file), rotated: read(`${file}.1`), n };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The paths of a file's events, each line of which must be one whole JSON event. */
function paths(text: string): string[] {
  assert.ok(text.endsWith('\n'), 'the file ends with a whole line');
  return text
    .trimEnd()
    .split('\n')
    .map((l) => (JSON.parse(l) as { path: string }).path);
}

/** /x/1…, /x/2…: the paths of the first `n` requests, in order. */
const served = (n: number) => Array.from({ length: n }, (_, i) => `/x/${String(i + 1).repeat(300)}`);

describe('audit.on_queue_full: refuse, a reload keeping audit.file after a write refused part-way', () => {
  it('after a rotation (the file renamed, the reload opening a new one): the new file holds every event not whole in the old one, as whole JSON lines; the old one ends with the cut start of a line', () => {
    // Log shippers (Filebeat, Vector, fluent-bit) read each file on its own: a new file beginning
    // with the rest of the cut line would leave that event whole in neither.
    const { file, rotated, n } = partialWriteThenReload(`renameSync(file, file + '.1'); unlimited();`);
    assert.equal(rotated.length, 1024, 'the refused write took part of a batch');
    assert.ok(!rotated.endsWith('\n'), 'the old file ends with a cut line, no newline after it');
    const whole = paths(rotated.slice(0, rotated.lastIndexOf('\n') + 1));
    const after = paths(file);
    assert.ok(after.length >= 2, 'the cut event and the one served after the reload');
    assert.deepEqual([...whole, ...after], served(n), 'every event once, whole, in order');
  });

  it('without a rotation (the cause gone, the same file reopened): no line written twice, none cut', () => {
    const { file, rotated, n } = partialWriteThenReload('unlimited();');
    assert.equal(rotated, '');
    assert.deepEqual(paths(file), served(n), 'every event once, whole, in order');
  });
});

/**
 * audit.stdout whose reader is gone (a log shipper that exited): a real pipe to a process that has
 * ended, so each write fails with EPIPE. The pipe cannot be opened again, so the gateway says so
 * once (the error's code, nothing of the events) and /readyz names it; with refuse, it is not
 * ready (every request is refused until a restart), with drop it stays ready and says its events
 * are lost to stdout.
 */
describe('audit.stdout whose reader is gone', () => {
  for (const mode of ['refuse', 'drop'] as const) {
    it(`on_queue_full: ${mode}: one audit_output_failed line with its code (EPIPE), and /readyz's 'audit stdout' check says it failed${mode === 'refuse' ? ' (not ready)' : ' (still ready)'}`, async () => {
      const upstream = await startUpstream();
      const reader = spawn(process.execPath, ['-e', ''], { stdio: ['pipe', 'ignore', 'ignore'] });
      reader.stdin?.on('error', () => {});
      await once(reader, 'exit');
      const lines: Record<string, unknown>[] = [];
      const logger = pino(
        { level: 'info' },
        new Writable({
          write(chunk, _enc, cb) {
            lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
            cb();
          },
        }),
      );
      const gw = await startGateway(config(upstream.url, { stdout: true, on_queue_full: mode }), {
        logger,
        auditStdout: reader.stdin as Writable,
      });
      const readyz = async () => {
        const res = await fetch(`${gw.url}/readyz`);
        const checks = ((await res.json()) as { checks: { name: string; ok: boolean; detail?: string }[] }).checks;
        return { status: res.status, check: checks.find((c) => c.name === 'audit stdout') };
      };
      try {
        assert.deepEqual((await readyz()).check, { name: 'audit stdout', ok: true });
        for (let i = 0; i < 3; i++)
          await (await fetch(`${gw.url}/pub/x-${i}`, { headers: { authorization: `Bearer ${STATIC_TOKEN}` } })).arrayBuffer();
        await until(() => lines.some((l) => l.event === 'audit_output_failed'), 5000);
        await new Promise((resolve) => setTimeout(resolve, 200));
        const failed = lines.filter((l) => l.event === 'audit_output_failed');
        assert.equal(failed.length, 1, 'said once, not at each batch');
        assert.equal(failed[0]?.output, 'stdout');
        // EPIPE, or the stream already destroyed when Node saw the pipe close before a write.
        assert.match(String(failed[0]?.code), /^(EPIPE|ERR_STREAM_DESTROYED)$/);
        assert.ok(!JSON.stringify(lines).includes(STATIC_TOKEN), 'no credential in the log');
        const r = await readyz();
        assert.equal(r.check?.ok, mode === 'drop');
        assert.match(r.check?.detail ?? '', /^failed \((EPIPE|ERR_STREAM_DESTROYED)\), not written again until a restart/);
        if (mode === 'refuse') {
          assert.equal(r.status, 503);
          assert.equal((await fetch(`${gw.url}/pub/after`)).status, 503, 'refused: fail closed');
        } else assert.equal(r.status, 200);
      } finally {
        await gw.close();
        await upstream.close();
      }
    });
  }
});
