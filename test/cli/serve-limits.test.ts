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
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { issuesOf } from '../helpers/config.ts';
import { trickleHead, until } from '../helpers/net.ts';

interface Served {
  readonly running: RunningServer;
  readonly port: number;
  close(): Promise<void>;
}

async function serve(yaml: string): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-limits-'));
  const config = join(dir, 'tessera.yaml');
  writeFileSync(config, `data_dir: .tessera\nserver: { host: 127.0.0.1, port: 0 }\n${yaml}`);
  await initialize({ config });
  const running = await startServer({ config, logger: pino({ level: 'silent' }) });
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
    });
    const { max_body_size: _, ...listener } = gw ?? { max_body_size: 0 };
    assert.deepEqual(listener, alone);
  });
});
