/**
 * Configuration reload: a valid file replaces the configuration atomically without dropping
 * connections (client keep-alive and upstream pool), a rotated static credential takes effect, an
 * invalid file is refused with its errors and the old configuration keeps serving.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { MemoryAuditSink } from '../../src/audit/sinks/memory.ts';
import { type ServedGateway, serveGateway } from '../../src/gateway/serve.ts';
import { baseConfig, ISSUER, key, parse, silent, startUpstream, token, type Upstream } from './helpers.ts';

function yaml(upstream: string, extraRoute = '', watch = true): string {
  return `
issuers:
  - issuer: ${ISSUER}
    audiences: [https://api.test]
    algorithms: [ES256]
    jwks: { keys: [${JSON.stringify(key.jwk)}] }
dpop: { mode: disabled }
gateway:
  watch_config: ${watch}
  routes:
    - id: api
      match: { path_prefix: /api }
      upstream:
        url: ${upstream}
        credential: { type: static, token: "\${GATEWAY_TOKEN}" }
      auth: jwt
      rules: [{}]
${extraRoute}
`;
}

describe('gateway: configuration reload', () => {
  let upstream: Upstream;
  let dir: string;
  let file: string;
  let served: ServedGateway;
  const env: Record<string, string> = { GATEWAY_TOKEN: 'token-version-one-0123456789' };
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let upstreamConnections = 0;
  let t: string;

  /** GET through the keep-alive agent; returns status and the local port of the socket used. */
  const get = (path: string): Promise<{ status: number; port: number }> =>
    new Promise((resolve, reject) => {
      const req = request(`${served.url}${path}`, { agent, headers: { authorization: `Bearer ${t}` } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, port: req.socket?.localPort ?? 0 }));
      });
      req.on('error', reject);
      req.end();
    });

  before(async () => {
    upstream = await startUpstream();
    upstream.server.on('connection', () => upstreamConnections++);
    dir = mkdtempSync(join(tmpdir(), 'tessera-reload-'));
    file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml(upstream.url));
    served = await serveGateway(
      { configFile: file, env, host: '127.0.0.1', port: 0, signals: true },
      { logger: silent, auditSinks: [new MemoryAuditSink()] },
    );
    t = await token();
  });
  after(async () => {
    agent.destroy();
    await served?.close({ drainTimeoutMs: 200 });
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rotates the static upstream credential on reload without dropping connections', async () => {
    const a = await get('/api/1');
    assert.equal(a.status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer token-version-one-0123456789');
    const conns = upstreamConnections;
    env.GATEWAY_TOKEN = 'token-version-two-0123456789';
    const r = served.reload();
    assert.equal(r.ok, true);
    const b = await get('/api/2');
    assert.equal(b.status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, 'Bearer token-version-two-0123456789');
    assert.equal(b.port, a.port, 'the caller’s keep-alive connection survived');
    assert.equal(upstreamConnections, conns, 'the upstream pool was kept');
  });

  it('refuses an invalid configuration with its errors and keeps serving the old one', async () => {
    writeFileSync(file, yaml(upstream.url).replace('auth: jwt', 'auth: jwtt').replace('rules: [{}]', 'rules: [{ scopes: [1] }]'));
    const r = served.reload();
    assert.equal(r.ok, false);
    assert.ok(!r.ok && r.error.issues.some((i) => i.path === 'gateway.routes[0].auth'));
    assert.equal((await get('/api/3')).status, 200);
    writeFileSync(file, 'gateway: [unclosed');
    const r2 = served.reload();
    assert.equal(r2.ok, false);
    assert.equal((await get('/api/4')).status, 200);
  });

  it('refuses a reload whose ${VAR} reference is malformed (unclosed brace) instead of sending the literal text upstream', async () => {
    writeFileSync(file, yaml(upstream.url).replace('"${GATEWAY_TOKEN}"', '"${GATEWAY_TOKEN"'));
    const r = served.reload();
    assert.ok(!r.ok && r.error.issues.some((i) => i.path === 'gateway.routes[0].upstream.credential.token'));
    assert.equal((await get('/api/ref')).status, 200);
    assert.equal(upstream.seen.at(-1)!.headers.authorization, `Bearer ${env.GATEWAY_TOKEN}`);
  });

  it('refuses a configuration that fails against the rest of the config (unknown issuer kind)', async () => {
    writeFileSync(file, yaml(upstream.url).replace('auth: jwt', 'auth: introspection'));
    const r = served.reload();
    assert.ok(!r.ok && r.error.issues[0]?.message.includes('introspection'));
    assert.equal((await get('/api/5')).status, 200);
  });

  it('reloads when the file changes', async () => {
    writeFileSync(
      file,
      yaml(upstream.url, `    - { id: new, match: { path_prefix: /new }, upstream: { url: ${upstream.url} }, auth: none }`),
    );
    const start = Date.now();
    let status = 0;
    while (Date.now() - start < 5000) {
      status = (await get('/new/x')).status;
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 200);
  });

  it('reloads on SIGHUP', async () => {
    writeFileSync(
      file,
      yaml(upstream.url, `    - { id: hup, match: { path_prefix: /hup }, upstream: { url: ${upstream.url} }, auth: none }`, false),
    );
    process.kill(process.pid, 'SIGHUP');
    await once(process, 'SIGHUP');
    // Written just before the signal: applied once the file has been still for a moment.
    let status = 0;
    for (let i = 0; i < 40 && status !== 200; i++) {
      status = (await get('/hup/x')).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(status, 200);
  });
});

describe('gateway: audit file rotation', () => {
  it('a reload reopens audit.file: after a rename (logrotate) and SIGHUP, events go to a new file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-audit-rotate-'));
    const file = join(dir, 'audit.jsonl');
    const upstream = await startUpstream();
    const config = () =>
      parse({
        ...baseConfig(),
        audit: { file, flush_interval: '10ms' },
        gateway: { routes: [{ id: 'pub', upstream: { url: upstream.url }, auth: 'none' as const }] },
      });
    const served = await serveGateway({ config: config(), host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      await fetch(`${served.url}/a`);
      await served.gateway.audit.flush();
      renameSync(file, `${file}.1`);
      assert.equal(served.reload(config()).ok, true);
      await fetch(`${served.url}/b`);
      await served.gateway.audit.flush();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const paths = (f: string) =>
        readFileSync(f, 'utf8')
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { path: string }).path);
      assert.deepEqual(paths(`${file}.1`), ['/a']);
      assert.deepEqual(paths(file), ['/b']);
      assert.equal(statSync(file).mode & 0o777, 0o600);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: reload metrics', () => {
  it('a reload refused before compiling (unparsable file, schema error, an unset ${VAR}) is counted in tessera_gateway_config_reloads_total{result="refused"}, as one refused by compiling is', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-reload-metrics-'));
    const file = join(dir, 'tessera.yaml');
    const env: Record<string, string | undefined> = { GATEWAY_TOKEN: 'token-version-one-0123456789' };
    writeFileSync(file, yaml(upstream.url, '', false));
    const served = await serveGateway({ configFile: file, env, host: '127.0.0.1', port: 0 }, { logger: silent });
    const reloads = async () => {
      const text = await (await fetch(`${served.url}/metrics`)).text();
      const n = (result: string) =>
        Number(new RegExp(`^tessera_gateway_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 'NaN');
      return { ok: n('ok'), refused: n('refused') };
    };
    try {
      assert.equal(served.reload().ok, true);
      writeFileSync(file, 'gateway: [unclosed');
      assert.equal(served.reload().ok, false);
      writeFileSync(file, yaml(upstream.url, '', false).replace('auth: jwt', 'auth: jwtt'));
      assert.equal(served.reload().ok, false);
      writeFileSync(file, yaml(upstream.url, '', false));
      delete env.GATEWAY_TOKEN;
      assert.equal(served.reload().ok, false);
      env.GATEWAY_TOKEN = 'token-version-two-0123456789';
      writeFileSync(file, yaml(upstream.url, '', false).replace('auth: jwt', 'auth: introspection'));
      assert.equal(served.reload().ok, false);
      assert.deepEqual(await reloads(), { ok: 1, refused: 4 });
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: reload hooks', () => {
  it('a failing onReload hook is logged and does not end the process; the reload stands', async () => {
    const usable = () => ({
      ...baseConfig(),
      gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt' as const, rules: [{}] }] },
    });
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) });
    let calls = 0;
    const served = await serveGateway(
      {
        config: parse(usable()),
        host: '127.0.0.1',
        port: 0,
        onReload: () => {
          calls++;
          throw new Error('hook failed');
        },
      },
      { logger },
    );
    try {
      const r = served.reload(parse(usable()));
      assert.equal(r.ok, true);
      assert.equal(calls, 1);
      assert.ok(lines.some((l) => (JSON.parse(l) as { event?: string }).event === 'config_reload_hook_failed'));
      assert.ok(!lines.some((l) => l.includes('hook failed')), 'only the error class is logged');
      // A refused reload does not run the hook. (Valid as a file; this gateway has no token service.)
      const credential = { type: 'exchange' as const, audience: 'https://upstream.test' };
      const unusable = {
        ...baseConfig(),
        gateway: { routes: [{ id: 'x', upstream: { url: 'http://127.0.0.1:9', credential }, auth: 'jwt' as const, rules: [{}] }] },
      };
      assert.equal(served.reload(parse(unusable)).ok, false);
      assert.equal(calls, 1);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
    }
  });
});

describe('gateway: watching a configuration file that is deleted and written again', () => {
  it('reloads the file written after a gap (rm, then cp a while later) instead of losing the watch for good', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-rewatch-'));
    const file = join(dir, 'tessera.yaml');
    const env = { GATEWAY_TOKEN: 'token-version-one-0123456789' };
    writeFileSync(file, yaml(upstream.url));
    const served = await serveGateway({ configFile: file, env, host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      rmSync(file);
      // Longer than the watcher's debounce: it looks for the file while there is none.
      await new Promise((r) => setTimeout(r, 600));
      assert.equal((await fetch(`${served.url}/api/x`)).status, 401, 'the running configuration kept serving');
      writeFileSync(
        file,
        yaml(upstream.url, `    - { id: back, match: { path_prefix: /back }, upstream: { url: ${upstream.url} }, auth: none }`),
      );
      const start = Date.now();
      let status = 0;
      while (Date.now() - start < 5000) {
        status = (await fetch(`${served.url}/back/x`)).status;
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, 200);
      // Watched again: a later edit in place applies too.
      writeFileSync(
        file,
        yaml(upstream.url, `    - { id: again, match: { path_prefix: /again }, upstream: { url: ${upstream.url} }, auth: none }`),
      );
      const again = Date.now();
      while (Date.now() - again < 5000) {
        status = (await fetch(`${served.url}/again/x`)).status;
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, 200);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: a configuration file caught mid-write by the watcher', () => {
  /** Route ids of every configuration the gateway accepted, and the warn/error events it logged. */
  async function watched() {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-midwrite-'));
    const file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml(upstream.url));
    const applied: string[][] = [];
    const events: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => events.push((JSON.parse(l) as { event: string }).event) });
    const served = await serveGateway(
      {
        configFile: file,
        env: { GATEWAY_TOKEN: 'token-version-one-0123456789' },
        host: '127.0.0.1',
        port: 0,
        onReload: (c) => applied.push((c.gateway?.routes ?? []).map((r) => r.id)),
      },
      { logger },
    );
    const route = (id: string) => `    - { id: ${id}, match: { path_prefix: /${id} }, upstream: { url: ${upstream.url} }, auth: none }\n`;
    const until = async (done: () => boolean | Promise<boolean>): Promise<void> => {
      const start = Date.now();
      while (!(await done()) && Date.now() - start < 10_000) await new Promise((r) => setTimeout(r, 50));
    };
    const close = async () => {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    };
    return { upstream, file, served, applied, events, route, until, close };
  }

  it('attack: a file written in two parts, its first part valid YAML, is applied whole and never by half', async () => {
    const w = await watched();
    try {
      const full = yaml(w.upstream.url, `${w.route('first')}${w.route('second')}`);
      // Cut at a line boundary, after the first new route: valid, and a configuration without `second`.
      const half = full.slice(0, full.indexOf(w.route('second')));
      assert.ok(full.startsWith(half) && half.endsWith(w.route('first')));
      writeFileSync(w.file, half);
      // The rest, after a pause longer than the watcher's debounce (200 ms), as a slow writer's second write.
      await new Promise((r) => setTimeout(r, 300));
      appendFileSync(w.file, full.slice(half.length));
      await w.until(async () => (await fetch(`${w.served.url}/second/x`)).status === 200);
      assert.equal((await fetch(`${w.served.url}/second/x`)).status, 200, 'the whole file was applied');
      assert.equal((await fetch(`${w.served.url}/first/x`)).status, 200);
      assert.deepEqual(
        w.applied.filter((ids) => !ids.includes('second')),
        [],
        'no configuration cut after `first` was ever applied',
      );
      assert.deepEqual(w.events, []);
    } finally {
      await w.close();
    }
  });

  it('a file that keeps changing is not applied (config_reload_unstable; the running configuration stays), and its final state is once it is still', async () => {
    const w = await watched();
    let n = 0;
    const writer = setInterval(() => writeFileSync(w.file, yaml(w.upstream.url, w.route(`r${++n}`))), 40);
    try {
      await w.until(() => w.events.includes('config_reload_unstable'));
      assert.ok(w.events.includes('config_reload_unstable'), `logged ${w.events.join(', ')}`);
      assert.deepEqual(w.applied, []);
      assert.equal((await fetch(`${w.served.url}/api/x`)).status, 401, 'the running configuration kept serving');
      clearInterval(writer);
      const last = `r${n}`;
      await w.until(() => w.applied.length > 0);
      assert.equal(w.applied.length, 1, `applied ${w.applied.length} times`);
      assert.deepEqual(w.applied[0], ['api', last], 'the file as last written');
    } finally {
      clearInterval(writer);
      await w.close();
    }
  });
});

describe('gateway: SIGHUP while the configuration file is being written', () => {
  it('attack: SIGHUP between the two writes of a file whose first part is valid YAML applies the whole file, never the half', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-hup-midwrite-'));
    const file = join(dir, 'tessera.yaml');
    // No watcher: only the signal makes it reload.
    writeFileSync(file, yaml(upstream.url, '', false));
    const applied: string[][] = [];
    const served = await serveGateway(
      {
        configFile: file,
        env: { GATEWAY_TOKEN: 'token-version-one-0123456789' },
        host: '127.0.0.1',
        port: 0,
        signals: true,
        onReload: (c) => applied.push((c.gateway?.routes ?? []).map((r) => r.id)),
      },
      { logger: silent },
    );
    const route = (id: string) => `    - { id: ${id}, match: { path_prefix: /${id} }, upstream: { url: ${upstream.url} }, auth: none }\n`;
    try {
      const full = yaml(upstream.url, `${route('first')}${route('second')}`, false);
      const half = full.slice(0, full.indexOf(route('second')));
      assert.ok(half.endsWith(route('first')));
      writeFileSync(file, half);
      // A deploy script that signals as soon as its write call returns, while a second write follows.
      process.kill(process.pid, 'SIGHUP');
      await once(process, 'SIGHUP');
      await new Promise((r) => setTimeout(r, 100));
      appendFileSync(file, full.slice(half.length));
      const start = Date.now();
      while ((await fetch(`${served.url}/second/x`)).status !== 200 && Date.now() - start < 3000) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(
        applied.filter((ids) => !ids.includes('second')),
        [],
        'no configuration cut after `first` was applied',
      );
      assert.equal((await fetch(`${served.url}/second/x`)).status, 200, 'the whole file was applied');
      assert.deepEqual(applied, [['api', 'first', 'second']]);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a SIGHUP long after the last write reloads at once', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-hup-still-'));
    const file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml(upstream.url, '', false));
    const served = await serveGateway(
      { configFile: file, env: { GATEWAY_TOKEN: 'token-version-one-0123456789' }, host: '127.0.0.1', port: 0, signals: true },
      { logger: silent },
    );
    try {
      writeFileSync(
        file,
        yaml(upstream.url, `    - { id: later, match: { path_prefix: /later }, upstream: { url: ${upstream.url} }, auth: none }\n`, false),
      );
      await new Promise((r) => setTimeout(r, 400));
      process.kill(process.pid, 'SIGHUP');
      await once(process, 'SIGHUP');
      await new Promise((r) => setImmediate(r));
      assert.equal((await fetch(`${served.url}/later/x`)).status, 200);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
