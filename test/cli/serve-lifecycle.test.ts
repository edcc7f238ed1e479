/**
 * `tessera serve` (token service and gateway) as a process, through the signals an operator or a
 * service manager sends: SIGHUP after its configuration file was deleted or emptied keeps the
 * configuration in force and the open event stream; SIGTERM with an event stream open ends it and
 * exits 0 well within the drain.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { initialize } from '../../src/cli/commands/init.ts';
import { startUpstream } from '../gateway/helpers.ts';
import { freePort } from '../helpers/net.ts';

const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;

const wait = async (what: () => boolean, ms = 10_000) => {
  const start = Date.now();
  while (!what() && Date.now() - start < ms) await new Promise((r) => setTimeout(r, 25));
  return what();
};

describe('tessera serve: signals', () => {
  it('attack: SIGHUP with the file deleted, then emptied, keeps the routes and an open event stream; SIGTERM ends the stream and exits 0', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const timer = setInterval(() => res.write('data: tick\n\n'), 50);
      res.on('close', () => clearInterval(timer));
    });
    const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-signals-'));
    const file = join(dir, 'tessera.yaml');
    const port = await freePort();
    const config = `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
gateway:
  watch_config: false
  drain_timeout: 20s
  routes:
    - { id: sse, match: { path_prefix: /sse }, upstream: { url: "${upstream.url}" }, auth: none }
`;
    writeFileSync(file, config);
    await initialize({ config: file });
    const env: NodeJS.ProcessEnv = { ...process.env, TESSERA_LOG_LEVEL: 'info' };
    delete env.TESSERA_MASTER_KEY;
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d.toString();
    });
    child.stderr.on('data', (d) => {
      out += d.toString();
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    const base = `http://127.0.0.1:${port}`;
    try {
      assert.ok(await wait(() => out.includes('listening')), out);
      // An event stream held open through the gateway.
      let ticks = 0;
      let ended = false;
      await new Promise<void>((resolve, reject) => {
        const req = request(`${base}/sse/events`, (res) => {
          assert.equal(res.statusCode, 200);
          res.on('data', () => {
            ticks++;
          });
          res.on('end', () => {
            ended = true;
          });
          res.on('error', () => {
            ended = true;
          });
          resolve();
        });
        req.on('error', reject);
        req.end();
      });
      assert.ok(await wait(() => ticks > 2));
      for (const damage of [() => unlinkSync(file), () => writeFileSync(file, '')]) {
        const n = out.length;
        damage();
        child.kill('SIGHUP');
        assert.ok(await wait(() => out.slice(n).includes('config_reload_refused')), out.slice(n));
        const seen = ticks;
        assert.ok(await wait(() => ticks > seen + 2), 'the event stream stopped after the refused reload');
        assert.equal(ended, false);
        assert.equal(child.exitCode, null);
        const res = await fetch(`${base}/sse/other`);
        assert.equal(res.status, 200, 'the route in force was dropped');
        await res.body?.cancel();
        assert.equal((await fetch(`${base}/healthz`)).status, 200);
      }
      writeFileSync(file, config);
      const started = Date.now();
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      assert.deepEqual([code, signal], [0, null], out);
      assert.ok(Date.now() - started < 10_000, 'the open event stream held the drain to its end');
      assert.ok(await wait(() => ended, 2000), 'the event stream was not ended');
      for (const line of out.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), line);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
