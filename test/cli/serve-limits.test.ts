/**
 * The listener limits of `tessera serve`: the token service alone (`token_service.limits`, else
 * their defaults) and beside a gateway (`gateway.limits`, the one listener's one set), against
 * slow, idle and many connections from one address, on raw loopback sockets. 127.0.0.2 is
 * another address of the loopback range: the client that must still be served.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { issuesOf } from '../helpers/config.ts';
import { freePort, trickleHead, until } from '../helpers/net.ts';
import { spawnCollecting } from '../helpers/spawned.ts';

const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;

interface Served {
  readonly running: RunningServer;
  readonly port: number;
  close(): Promise<void>;
}

/** `lines`: where the server's log lines go, parsed (else it logs nothing). */
async function serve(yaml: string, lines?: Record<string, unknown>[], host = '127.0.0.1'): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-limits-'));
  const config = join(dir, 'tessera.yaml');
  writeFileSync(config, `data_dir: .tessera\nserver: { host: "${host}", port: 0 }\n${yaml}`);
  await initialize({ config });
  const logger =
    lines === undefined
      ? pino({ level: 'silent' })
      : pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const running = await startServer({ config, logger });
  return {
    running,
    port: Number(new URL(running.url).port),
    close: async () => {
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Open `n` connections from `from`, sending nothing; resolves once each is connected or closed. */
async function idle(port: number, n: number, from = '127.0.0.1'): Promise<{ sockets: Socket[]; open: () => number }> {
  const sockets: Socket[] = [];
  const settled: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const s = connect({ port, host: '127.0.0.1', localAddress: from });
    s.on('error', () => undefined);
    settled.push(Promise.race([once(s, 'connect'), once(s, 'close')]));
    sockets.push(s);
  }
  await Promise.all(settled);
  return { sockets, open: () => sockets.filter((s) => !s.destroyed).length };
}

/** One GET from `from` on a fresh connection: its status line, or what happened instead. */
function get(port: number, path: string, from: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: from }, () =>
      s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    let got = '';
    const give = setTimeout(() => s.destroy(), 5000);
    s.on('data', (d) => {
      got += d;
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(give);
      resolve(got.split('\r\n')[0] || 'closed unanswered');
    });
  });
}

const GATEWAY =
  'gateway:\n  watch_config: false\n  routes:\n    - { id: all, match: { path_prefix: /api }, upstream: { url: "http://127.0.0.1:9" }, auth: none }\n';

describe('tessera serve: listener limits of the token service alone', () => {
  it('attack: one address opening connections without end (idle, sending nothing) holds at most max_connections_per_address (default 512); the rest are closed at once, and another address is still served', async () => {
    const s = await serve('');
    try {
      const flood = await idle(s.port, 530);
      // The excess is closed as it is accepted; the 512 first stay open (until headers_timeout).
      await until(() => flood.open() === 512, 5000);
      assert.equal(await get(s.port, '/healthz', '127.0.0.2'), 'HTTP/1.1 200 OK');
      // The address itself gets a connection again once one of its own closes.
      for (const sock of flood.sockets) sock.destroy();
      await until(async () => (await get(s.port, '/healthz', '127.0.0.1')) === 'HTTP/1.1 200 OK', 3000);
    } finally {
      await s.close();
    }
  });

  it('attack: one address taking every one of token_service.limits.max_connections locks nobody else out: it holds max_connections_per_address, another address is answered', async () => {
    const s = await serve('token_service:\n  limits: { max_connections: 20, max_connections_per_address: 5 }\n');
    try {
      const flood = await idle(s.port, 20);
      await until(() => flood.open() === 5, 3000);
      assert.equal(await get(s.port, '/healthz', '127.0.0.2'), 'HTTP/1.1 200 OK');
      for (const sock of flood.sockets) sock.destroy();
    } finally {
      await s.close();
    }
  });

  it('token_service.trust_proxy peers are held to max_connections alone (every client behind a proxy arrives from its address); others to max_connections_per_address', async () => {
    const s = await serve('token_service:\n  trust_proxy: ["127.0.0.1"]\n  limits: { max_connections_per_address: 3 }\n');
    try {
      const proxy = await idle(s.port, 8);
      const other = await idle(s.port, 8, '127.0.0.2');
      await until(() => other.open() === 3, 3000);
      assert.equal(proxy.open(), 8);
      for (const sock of [...proxy.sockets, ...other.sockets]) sock.destroy();
    } finally {
      await s.close();
    }
  });

  it('attack: slowloris (a request head trickled line by line) at the token endpoint is answered 408 and cut once token_service.limits.headers_timeout passes', async () => {
    const s = await serve('token_service:\n  limits: { headers_timeout: 1s }\n');
    try {
      const { answer, ms } = await trickleHead(s.port, 'POST /oauth2/token HTTP/1.1\r\nHost: x\r\n', 200, 8000);
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.ok(ms < 3500, `cut after ${Math.round(ms)} ms`);
    } finally {
      await s.close();
    }
  });

  it('an idle keep-alive connection is closed once token_service.limits.keep_alive_timeout passes', async () => {
    const s = await serve('token_service:\n  limits: { keep_alive_timeout: 1s }\n');
    try {
      const sock = connect(s.port, '127.0.0.1');
      sock.on('error', () => undefined);
      await once(sock, 'connect');
      const started = performance.now();
      sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      const [first] = await once(sock, 'data');
      assert.match(String(first), /^HTTP\/1\.1 200 /);
      await once(sock, 'close');
      const ms = performance.now() - started;
      assert.ok(ms > 800 && ms < 3000, `closed after ${Math.round(ms)} ms`);
    } finally {
      await s.close();
    }
  });
});

describe('tessera serve beside a gateway: one listener, gateway.limits', () => {
  it('attack: one address opening connections without end at the shared listener holds at most gateway.limits.max_connections_per_address; the token endpoint still answers another address', async () => {
    const s = await serve(GATEWAY.replace('gateway:\n', 'gateway:\n  limits: { max_connections_per_address: 4 }\n'));
    try {
      const flood = await idle(s.port, 12);
      await until(() => flood.open() === 4, 3000);
      // GET on the token endpoint: the token service's own 405, not a closed connection.
      assert.equal(await get(s.port, '/oauth2/token', '127.0.0.2'), 'HTTP/1.1 405 Method Not Allowed');
      for (const sock of flood.sockets) sock.destroy();
    } finally {
      await s.close();
    }
  });
});

describe('listener limits: configuration', () => {
  const parse = (input: unknown) => parseConfig(configSchema, input, { env: {} });

  it('token_service.limits beside a gateway section is refused, naming token_service.limits and where its values go: one listener, one set of limits', () => {
    const issues = issuesOf(() =>
      parse({
        token_service: { limits: { max_connections: 100 } },
        gateway: { routes: [{ id: 'a', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' }] },
      }),
    );
    assert.equal(issues.length, 1);
    assert.equal(issues[0]?.path, 'token_service.limits');
    assert.match(issues[0]?.message ?? '', /gateway\.limits/);
  });

  it('a bad token_service.limits value is refused at its exact path', () => {
    assert.deepEqual(
      issuesOf(() => parse({ token_service: { limits: { headers_timeout: '30s', request_timeout: '10s' } } })).map((i) => i.path),
      ['token_service.limits.request_timeout'],
    );
    assert.deepEqual(
      issuesOf(() => parse({ token_service: { limits: { max_connections_per_address: -1, max_conections: 5 } } }))
        .map((i) => i.path)
        .sort(),
      ['token_service.limits.max_conections', 'token_service.limits.max_connections_per_address'],
    );
    assert.deepEqual(
      issuesOf(() =>
        parse({
          gateway: {
            limits: { max_connections_per_address: 1.5 },
            routes: [{ id: 'a', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' }],
          },
        }),
      ).map((i) => i.path),
      ['gateway.limits.max_connections_per_address'],
    );
  });

  // The token service’s answers (tokens, metadata, JWKS, introspection) are a few KiB at most: none
  // can fill a loopback socket’s buffers, so the setting is tested for being read and checked there.
  it('token_service.limits.send_timeout is accepted (a duration, 0: none) and a bad value refused at its exact path', () => {
    assert.equal(parse({ token_service: { limits: { send_timeout: '1s' } } }).token_service?.limits?.send_timeout, 1);
    assert.equal(parse({ token_service: { limits: { send_timeout: 0 } } }).token_service?.limits?.send_timeout, 0);
    for (const bad of ['soon', '-1s', -1]) {
      assert.deepEqual(
        issuesOf(() => parse({ token_service: { limits: { send_timeout: bad } } })).map((i) => i.path),
        ['token_service.limits.send_timeout'],
        String(bad),
      );
    }
  });

  it('defaults: the token service alone and the gateway have the same listener limits', () => {
    const alone = parse({ token_service: { limits: {} } }).token_service?.limits;
    const gw = parse({ gateway: { routes: [{ id: 'a', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' }] } }).gateway?.limits;
    assert.deepEqual(alone, {
      max_header_size: 16384,
      max_connections: 10_000,
      max_connections_per_address: 512,
      headers_timeout: 20,
      request_timeout: 300,
      keep_alive_timeout: 5,
      send_timeout: 60,
    });
    const { max_body_size: _, ...listener } = gw ?? { max_body_size: 0 };
    assert.deepEqual(listener, alone);
  });
});

/** The value of one series in a Prometheus text exposition, or undefined. */
function series(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('tessera serve: connections refused past a connection limit are counted and logged', () => {
  it('attack: one address opening connections without end past gateway.limits.max_connections_per_address, and the listener past max_connections, are counted in tessera_gateway_connections_refused_total{reason} and logged once per window with a count, naming the limit and the address alone', async () => {
    const lines: Record<string, unknown>[] = [];
    const s = await serve(
      GATEWAY.replace('gateway:\n', 'gateway:\n  limits: { max_connections: 8, max_connections_per_address: 4 }\n'),
      lines,
    );
    const refusals = () => lines.filter((l) => l.event === 'connections_refused');
    let dropped = 0;
    try {
      const flood = await idle(s.port, 10);
      await until(() => flood.open() === 4, 3000);
      const other = await idle(s.port, 4, '127.0.0.2');
      await until(() => other.open() === 4, 3000);
      // The listener is full: one more, from an address under its own limit, is dropped by Node.
      const third = await idle(s.port, 3, '127.0.0.3');
      await until(() => third.open() === 0, 3000);
      // One line per reason at once, the refusals after it in the window not one line each.
      assert.deepEqual(
        refusals().map(({ time: _t, pid: _p, hostname: _h, level, msg: _m, ...fields }) => ({ level, ...fields })),
        [
          {
            level: 40,
            event: 'connections_refused',
            reason: 'per_address',
            limit: 'gateway.limits.max_connections_per_address',
            max: 4,
            refused: 1,
            address: '127.0.0.1',
          },
          {
            level: 40,
            event: 'connections_refused',
            reason: 'max_connections',
            limit: 'gateway.limits.max_connections',
            max: 8,
            refused: 1,
            address: '127.0.0.3',
          },
        ],
      );
      for (const sock of [...flood.sockets, ...other.sockets]) sock.destroy();
      // Until the server has seen those close, a new connection is dropped too (and counted).
      dropped = 3;
      await until(async () => {
        if ((await get(s.port, '/healthz', '127.0.0.1')) === 'HTTP/1.1 200 OK') return true;
        dropped++;
        return false;
      }, 3000);
      const text = await (await fetch(`http://127.0.0.1:${s.port}/metrics`)).text();
      assert.equal(series(text, 'tessera_gateway_connections_refused_total{reason="per_address"}'), 6);
      assert.equal(series(text, 'tessera_gateway_connections_refused_total{reason="max_connections"}'), dropped);
    } finally {
      await s.close();
    }
    // Those left unsaid in the window are said, with their count, when the listener closes.
    assert.deepEqual(
      refusals().map((l) => [l.reason, l.refused, l.address]),
      [
        ['per_address', 1, '127.0.0.1'],
        ['max_connections', 1, '127.0.0.3'],
        ['per_address', 5, '127.0.0.1'],
        ['max_connections', dropped - 1, dropped > 3 ? '127.0.0.1' : '127.0.0.3'],
      ],
    );
  });

  it('attack: the token service alone logs the connections it refuses past token_service.limits.max_connections_per_address (component token_service), one line for a flood', async () => {
    const lines: Record<string, unknown>[] = [];
    const s = await serve('token_service:\n  limits: { max_connections_per_address: 3 }\n', lines);
    try {
      const flood = await idle(s.port, 40);
      await until(() => flood.open() === 3, 3000);
      const said = lines.filter((l) => l.event === 'connections_refused');
      assert.equal(said.length, 1);
      assert.equal(said[0]?.component, 'token_service');
      assert.equal(said[0]?.limit, 'token_service.limits.max_connections_per_address');
      assert.equal(said[0]?.address, '127.0.0.1');
      for (const sock of flood.sockets) sock.destroy();
    } finally {
      await s.close();
    }
  });
});

describe('tessera serve: max_connections_per_address counts each connection until it closes, however it ends', () => {
  it('attack: connections ended every way (reset as accepted, half-closed by the client, left half-open after a 408 head timeout, a CONNECT or a refused upgrade, cut by the head timeout, WebSockets closed later by either side, keep-alive closed by the server, refused past the limit) leave no count behind: 512 fresh connections from the address are admitted, and the 513th is not', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    const upstreamSockets: WebSocket[] = [];
    wss.on('connection', (ws) => {
      upstreamSockets.push(ws);
      ws.on('message', (m) => ws.send(m));
    });
    const wsPort = (wss.address() as { port: number }).port;
    const s = await serve(
      `gateway:\n  watch_config: false\n  limits: { headers_timeout: 1s, keep_alive_timeout: 1s }\n  routes:\n    - { id: ws, match: { path_prefix: /ws }, upstream: { url: "http://127.0.0.1:${wsPort}" }, auth: none }\n`,
    );
    /** Sockets the client keeps open (its side), half-closed by the server. */
    const held: Socket[] = [];
    /** Resolves once the client sees the socket closed. */
    const closed = (sock: Socket) => (sock.destroyed ? Promise.resolve() : once(sock, 'close').then(() => undefined));
    const open = (opts: { allowHalfOpen?: boolean } = {}) => {
      const sock = connect({ port: s.port, host: '127.0.0.1', localAddress: '127.0.0.1', ...opts });
      sock.on('error', () => undefined);
      // Read what the server sends (and its end), as a client does.
      sock.resume();
      return sock;
    };
    try {
      // Refused past the limit, the rest then closed by the client.
      const flood = await idle(s.port, 520);
      await until(() => flood.open() === 512, 5000);
      for (const sock of flood.sockets) sock.destroy();
      const ended: Promise<void>[] = flood.sockets.map(closed);
      for (let i = 0; i < 100; i++) {
        const sock = open();
        // Reset before or as soon as the server accepts it.
        if (i % 2 === 0) sock.destroy();
        else sock.once('connect', () => sock.resetAndDestroy());
        ended.push(closed(sock));
      }
      for (let i = 0; i < 50; i++) {
        // Half-closed by the client before a byte.
        const sock = open();
        sock.once('connect', () => sock.end());
        ended.push(closed(sock));
      }
      for (let i = 0; i < 20; i++) {
        // A head never finished: 408 once headers_timeout passes, closed by the server (a client
        // that closes its side as told), or left half-open by a client that never does.
        const keep = i % 2 === 0;
        const sock = open({ allowHalfOpen: keep });
        sock.once('connect', () => sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n'));
        if (keep) held.push(sock);
        else ended.push(closed(sock));
      }
      for (let i = 0; i < 10; i++) {
        // A CONNECT (501) and a refused upgrade (404: no route), each answered and ended by the
        // server, the client's side kept open.
        const sock = open({ allowHalfOpen: true });
        sock.once('connect', () =>
          sock.write(
            i % 2 === 0
              ? 'CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n'
              : 'GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
          ),
        );
        held.push(sock);
      }
      for (let i = 0; i < 20; i++) {
        // Keep-alive: answered, then closed by the server after keep_alive_timeout.
        const sock = open();
        sock.once('connect', () => sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
        ended.push(closed(sock));
      }
      // WebSockets through the gateway, closed later: three by the client, three by the upstream.
      const clients = await Promise.all(
        Array.from({ length: 6 }, async () => {
          const ws = new WebSocket(`ws://127.0.0.1:${s.port}/ws/echo`, { localAddress: '127.0.0.1' });
          await once(ws, 'open');
          ws.send('ping');
          await once(ws, 'message');
          return ws;
        }),
      );
      await new Promise((r) => setTimeout(r, 200));
      const shut = (ws: WebSocket) => (ws.readyState === WebSocket.CLOSED ? undefined : once(ws, 'close'));
      for (const ws of clients.slice(0, 3)) ws.close();
      await Promise.all(clients.slice(0, 3).map(shut));
      for (const ws of upstreamSockets) if (ws.readyState === WebSocket.OPEN) ws.close();
      await Promise.all(clients.map(shut));
      await Promise.all(ended);
      // The held ones are answered and ended by the server (the 408s within 2 s).
      await until(() => held.every((sock) => sock.readableEnded), 5000);

      // Every count let go: the address gets its whole limit again.
      let fresh: Awaited<ReturnType<typeof idle>> | undefined;
      await until(async () => {
        for (const sock of fresh?.sockets ?? []) sock.destroy();
        fresh = await idle(s.port, 513);
        try {
          await until(() => fresh?.open() === 512, 1500);
          return true;
        } catch {
          return false;
        }
      }, 8000);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(fresh?.open(), 512);
      for (const sock of fresh?.sockets ?? []) sock.destroy();
    } finally {
      for (const sock of held) sock.destroy();
      await s.close();
      wss.close();
    }
  });
});

describe('tessera serve on a dual-stack listener (server.host ::)', () => {
  it('attack: every IPv4 client arrives IPv4-mapped (::ffff:127.0.0.1): each is held to max_connections_per_address as its IPv4 address (not all of IPv4 as one IPv6 /64), and a trust_proxy peer listed as IPv4 is still exempt', async () => {
    const lines: Record<string, unknown>[] = [];
    const s = await serve(
      GATEWAY.replace('gateway:\n', 'gateway:\n  trust_proxy: ["127.0.0.3"]\n  limits: { max_connections_per_address: 4 }\n'),
      lines,
      '::',
    );
    try {
      const flood = await idle(s.port, 10);
      await until(() => flood.open() === 4, 3000);
      assert.equal(await get(s.port, '/healthz', '127.0.0.2'), 'HTTP/1.1 200 OK');
      const proxy = await idle(s.port, 8, '127.0.0.3');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(proxy.open(), 8);
      // Logged as the IPv4 address it is.
      assert.equal(lines.find((l) => l.event === 'connections_refused')?.address, '127.0.0.1');
      for (const sock of [...flood.sockets, ...proxy.sockets]) sock.destroy();
    } finally {
      await s.close();
    }
  });
});

describe('tessera serve: a reload changes the per-address limit for new connections only', () => {
  it('gateway.limits.max_connections_per_address and gateway.trust_proxy changed in the file apply to new connections on SIGHUP and on a watched change; the connections open stay open, and stay counted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-limits-reload-'));
    const file = join(dir, 'tessera.yaml');
    const port = await freePort();
    const config = (extra: string, watch: boolean) =>
      `data_dir: .tessera\nserver: { host: 127.0.0.1, port: ${port} }\n${GATEWAY.replace('  watch_config: false\n', `  watch_config: ${watch}\n${extra}`)}`;
    writeFileSync(file, config('  limits: { headers_timeout: 60s, max_connections_per_address: 3 }\n', false));
    await initialize({ config: file });
    const env: NodeJS.ProcessEnv = { ...process.env, TESSERA_LOG_LEVEL: 'info' };
    delete env.TESSERA_MASTER_KEY;
    const run = spawnCollecting(process.execPath, [CLI, 'serve', '--config', file], { cwd: dir, env });
    const reloads = () => run.out.split('\n').filter((l) => l.includes('"config_reloaded"')).length;
    const all: Socket[] = [];
    const opened = async (n: number, from = '127.0.0.1') => {
      const got = await idle(port, n, from);
      all.push(...got.sockets);
      return got;
    };
    try {
      await until(() => run.out.includes('listening'), 15_000);
      const a = await opened(5);
      await until(() => a.open() === 3, 3000);

      writeFileSync(file, config('  limits: { headers_timeout: 60s, max_connections_per_address: 5 }\n', true));
      run.child.kill('SIGHUP');
      await until(() => reloads() === 1, 5000);
      const b = await opened(4);
      await until(() => b.open() === 2, 3000);
      assert.equal(a.open(), 3, 'a connection open before the reload was cut');

      // Lowered below what is open, and the address made a proxy: written, not signalled.
      writeFileSync(
        file,
        config('  trust_proxy: ["127.0.0.1"]\n  limits: { headers_timeout: 60s, max_connections_per_address: 2 }\n', true),
      );
      await until(() => reloads() === 2, 8000);
      const c = await opened(6);
      const d = await opened(4, '127.0.0.2');
      await until(() => d.open() === 2, 3000);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual([a.open(), b.open(), c.open()], [3, 2, 6]);
      assert.equal(await get(port, '/healthz', '127.0.0.3'), 'HTTP/1.1 200 OK');
    } finally {
      for (const sock of all) sock.destroy();
      run.child.kill('SIGTERM');
      await run.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
