/**
 * `serveGateway` follows its configuration file however it is saved: written in place, or replaced
 * by a rename (editors, `sed -i`, Kubernetes ConfigMap updates), again and again.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { type ServedGateway, serveGateway } from '../../src/gateway/serve.ts';
import { trickleHead } from '../helpers/net.ts';
import { AUDIENCE, ISSUER, key, parse, silent, startUpstream, token } from './helpers.ts';

const yaml = (prefix: string) => `
gateway:
  routes:
    - { id: api, match: { path_prefix: ${prefix} }, upstream: { url: "http://127.0.0.1:9" }, auth: none }
`;

describe('gateway: configuration file watch', () => {
  let dir: string;
  let file: string;
  let served: ServedGateway;
  const seen: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-watch-'));
    file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml('/v0'));
    served = await serveGateway(
      {
        configFile: file,
        env: {},
        host: '127.0.0.1',
        port: 0,
        onReload: (c) => seen.push(c.gateway?.routes[0]?.match?.path_prefix ?? ''),
      },
      { logger: silent },
    );
  });
  after(async () => {
    await served?.close({ drainTimeoutMs: 100 });
    rmSync(dir, { recursive: true, force: true });
  });

  const until = async (prefix: string) => {
    const start = Date.now();
    while (Date.now() - start < 5000 && seen.at(-1) !== prefix) await new Promise((r) => setTimeout(r, 50));
    assert.equal(seen.at(-1), prefix, `reloaded with ${prefix}`);
  };

  it('keeps reloading after the file is replaced by a rename, several times', async () => {
    for (const prefix of ['/v1', '/v2', '/v3']) {
      writeFileSync(`${file}.tmp`, yaml(prefix));
      renameSync(`${file}.tmp`, file);
      await until(prefix);
    }
  });

  it('still reloads a file written in place after that', async () => {
    writeFileSync(file, yaml('/v4'));
    await until('/v4');
  });
});

describe('gateway: a reload that changes settings read once at start', () => {
  it('says which ones keep their old value until a restart, instead of silently ignoring them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-startonly-'));
    const file = join(dir, 'tessera.yaml');
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    writeFileSync(file, `${yaml('/a')}  watch_config: false\n`);
    const served = await serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger });
    try {
      writeFileSync(file, `${yaml('/b')}  watch_config: false\naudit: { stdout: false }\n`);
      const same = served.reload();
      assert.ok(same.ok && same.warnings.length === 0, 'an audit section holding the defaults changes nothing');
      writeFileSync(
        file,
        `${yaml('/c')}  watch_config: false\n  limits: { max_header_size: 32768 }\naudit: { max_queue: 10, flush_interval: 5s }\n`,
      );
      const r = served.reload();
      assert.ok(r.ok);
      assert.equal(served.gateway.state.routes[0]?.id, 'api');
      const warned = lines.find((l) => l.event === 'config_restart_required');
      assert.deepEqual(warned?.paths, ['gateway.limits.max_header_size', 'audit.flush_interval', 'audit.max_queue']);
      assert.match(r.warnings.at(-1) ?? '', /^gateway\.limits\.max_header_size, audit\.flush_interval, audit\.max_queue changed/);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: a reload that changes the listener', () => {
  it('names server.host and server.port when they set the listener, and not when --host/--port did', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-listener-'));
    const file = join(dir, 'tessera.yaml');
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const config = (host: string, port: number) => `server: { host: ${host}, port: ${port} }\n${yaml('/a')}  watch_config: false\n`;
    writeFileSync(file, config('127.0.0.1', 0));
    const fromFile = await serveGateway({ configFile: file, env: {} }, { logger });
    const overridden = await serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      writeFileSync(file, config('localhost', 18099));
      const r = fromFile.reload();
      assert.ok(r.ok);
      assert.deepEqual(lines.find((l) => l.event === 'config_restart_required')?.paths, ['server.host', 'server.port']);
      const o = overridden.reload();
      assert.ok(o.ok && o.warnings.length === 0, 'the listener came from the options');
    } finally {
      await fromFile.close({ drainTimeoutMs: 100 });
      await overridden.close({ drainTimeoutMs: 100 });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: a relative jwks.file', () => {
  it('is read relative to the configuration file, as `tessera serve` reads it, not the working directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-jwks-'));
    const upstream = await startUpstream();
    let served: ServedGateway | undefined;
    try {
      mkdirSync(join(dir, 'keys'));
      writeFileSync(join(dir, 'keys', 'issuer.json'), JSON.stringify({ keys: [key.jwk] }));
      writeFileSync(
        join(dir, 'tessera.yaml'),
        `
issuers:
  - { issuer: "${ISSUER}", audiences: ["${AUDIENCE}"], algorithms: [ES256], jwks: { file: keys/issuer.json } }
gateway:
  routes:
    - { id: api, match: { path_prefix: /api }, upstream: { url: "${upstream.url}" }, auth: jwt, audience: "${AUDIENCE}", rules: [{}] }
`,
      );
      assert.notEqual(process.cwd(), dir);
      served = await serveGateway({ configFile: join(dir, 'tessera.yaml'), env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
      const res = await fetch(`${served.url}/api/x`, { headers: { authorization: `Bearer ${await token()}` } });
      assert.equal(res.status, 200);
      assert.equal(upstream.seen.length, 1);
    } finally {
      await served?.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: slowloris', () => {
  it('a client trickling its request head is answered 408 and cut once gateway.limits.headers_timeout passes, not up to 30 s later', async () => {
    const upstream = await startUpstream();
    const served = await serveGateway(
      {
        config: parse({
          gateway: {
            limits: { headers_timeout: '1s' },
            routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'none' }],
          },
        }),
        host: '127.0.0.1',
        port: 0,
      },
      { logger: silent },
    );
    try {
      const u = new URL(served.url);
      // One header line every 200 ms: each keeps the socket busy, none ends the head.
      const { answer, ms } = await trickleHead(Number(u.port), 'GET /a HTTP/1.1\r\nHost: x\r\n', 200, 6000);
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.ok(ms < 4000, `cut after ${Math.round(ms)} ms`);
      assert.equal(upstream.seen.length, 0);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
    }
  });
});

describe('gateway: a request timeout after the answer has begun', () => {
  it('a client still sending its body when gateway.limits.request_timeout passes, after the upstream’s answer began, is cut: no 408 written into the answer it is reading (a second response inside the first)', async () => {
    // Answers at once and streams: its head reaches the client while the body is still coming.
    const upstream = createHttpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\n');
      req.resume();
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const served = await serveGateway(
      {
        config: parse({
          gateway: {
            limits: { headers_timeout: '1s', request_timeout: '1s' },
            routes: [{ id: 'api', upstream: { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }, auth: 'none' }],
          },
        }),
        host: '127.0.0.1',
        port: 0,
      },
      { logger: silent },
    );
    try {
      const socket = connect(Number(new URL(served.url).port), '127.0.0.1');
      let received = '';
      socket.setEncoding('latin1').on('data', (c: string) => (received += c));
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.on('error', () => {});
      socket.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n');
      // A byte every 100 ms for up to 6 s: the request never completes within the 1 s limit.
      const timer = setInterval(() => socket.writable && socket.write('x'), 100);
      const cut = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 6000))]);
      clearInterval(timer);
      socket.destroy();
      assert.match(received, /^HTTP\/1\.1 200 /, received);
      assert.ok(received.includes('first chunk'), received);
      assert.equal((received.match(/HTTP\/1\.1 /g) ?? []).length, 1, `one response on the wire: ${JSON.stringify(received)}`);
      assert.equal(cut, true, 'the connection was cut once the request timed out');
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      upstream.closeAllConnections();
      upstream.close();
    }
  });
});
