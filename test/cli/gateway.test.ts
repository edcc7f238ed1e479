/**
 * `tessera gateway --config FILE`: starts, serves, reloads on SIGHUP, drains and exits 0 on SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startUpstream } from '../gateway/helpers.ts';
import { freePort } from '../helpers/net.ts';
import { catchesSighup } from '../helpers/signals.ts';

const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('tessera gateway', () => {
  it('serves a configuration file, reloads on SIGHUP and stops cleanly on SIGTERM', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-gw-'));
    const file = join(dir, 'tessera.yaml');
    const port = await freePort();
    const config = (prefix: string) =>
      `server: { host: 127.0.0.1, port: ${port} }\ngateway:\n  watch_config: false\n  routes:\n    - { id: pub, match: { path_prefix: ${prefix} }, upstream: { url: "${upstream.url}" }, auth: none }\n`;
    writeFileSync(file, config('/one'));
    const child = spawn(process.execPath, [CLI, 'gateway', '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TESSERA_LOG_LEVEL: 'info' },
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d.toString();
    });
    try {
      const start = Date.now();
      while (!out.includes('gateway listening') && Date.now() - start < 10_000) await new Promise((r) => setTimeout(r, 50));
      assert.ok(out.includes('gateway listening'), out);
      const base = `http://127.0.0.1:${port}`;
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      assert.equal((await fetch(`${base}/one/x`)).status, 200);
      writeFileSync(file, config('/two'));
      child.kill('SIGHUP');
      const t = Date.now();
      while (!out.includes('configuration reloaded') && Date.now() - t < 5000) await new Promise((r) => setTimeout(r, 50));
      assert.equal((await fetch(`${base}/two/x`)).status, 200);
      assert.equal((await fetch(`${base}/one/x`)).status, 404);
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = await exited;
      assert.equal(code, 0);
      for (const line of out.trim().split('\n')) JSON.parse(line); // structured logs only
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera gateway: the port is taken', () => {
  it('says so in one line, as tessera serve does, not as an unexpected error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-gw-'));
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    try {
      const file = join(dir, 'tessera.yaml');
      writeFileSync(
        file,
        `server: { host: 127.0.0.1, port: ${port} }\ngateway:\n  watch_config: false\n  routes:\n    - { id: pub, upstream: { url: "http://127.0.0.1:9" }, auth: none }\n`,
      );
      const child = spawn(process.execPath, [CLI, 'gateway', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => {
        err += d.toString();
      });
      const [code] = await once(child, 'exit');
      assert.equal(code, 1);
      assert.equal(err, `tessera: 127.0.0.1:${port} is already in use; stop what listens there, or set server.port (or --port)\n`);
    } finally {
      taken.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera gateway: no configuration file', () => {
  it('says the file is missing in one line, not that a gateway section of a file nobody wrote is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-gw-'));
    try {
      const { TESSERA_CONFIG: _, ...env } = process.env;
      const child = spawn(process.execPath, [CLI, 'gateway'], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => {
        err += d.toString();
      });
      const [code] = await once(child, 'exit');
      assert.equal(code, 2);
      assert.equal(
        err,
        `tessera: no configuration file at ${join(dir, 'tessera.yaml')}; the gateway reads its routes from one: pass --config FILE, or run \`tessera init\` to write one\n`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera gateway: SIGHUP while draining', () => {
  it('a SIGHUP during the drain after SIGTERM neither kills the process nor cuts the request in flight; its audit event is written and the exit code is 0', async () => {
    // The upstream answers after 1.5 s: SIGTERM and then SIGHUP (logrotate's postrotate, a closed
    // terminal) arrive while the request is in flight.
    const upstream = await startUpstream((_req, res) => {
      setTimeout(() => res.end('slow'), 1500);
    });
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-gw-'));
    const file = join(dir, 'tessera.yaml');
    const audit = join(dir, 'audit.jsonl');
    const port = await freePort();
    writeFileSync(
      file,
      `server: { host: 127.0.0.1, port: ${port} }\naudit: { file: ${JSON.stringify(audit)} }\ngateway:\n  watch_config: false\n  drain_timeout: 10s\n  routes:\n    - { id: pub, upstream: { url: "${upstream.url}" }, auth: none }\n`,
    );
    const child = spawn(process.execPath, [CLI, 'gateway', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d.toString();
    });
    try {
      const start = Date.now();
      while (!out.includes('gateway listening') && Date.now() - start < 10_000) await new Promise((r) => setTimeout(r, 50));
      assert.ok(out.includes('gateway listening'), out);
      const response = fetch(`http://127.0.0.1:${port}/slow`).then(async (r) => ({ status: r.status, body: await r.text() }));
      while (upstream.seen.length === 0) await new Promise((r) => setTimeout(r, 20));
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      child.kill('SIGHUP');
      assert.deepEqual(await response, { status: 200, body: 'slow' });
      const [code, signal] = await exited;
      assert.deepEqual([code, signal], [0, null]);
      const events = readFileSync(audit, 'utf8').trim().split('\n');
      assert.equal(events.length, 1);
      assert.equal((JSON.parse(events[0] as string) as { path: string }).path, '/slow');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const BIN = new URL('../../bin/tessera.js', import.meta.url).pathname;

describe('tessera gateway: SIGHUP while starting', () => {
  it('a reload asked for while the CLI loads (systemctl reload right after a restart) neither kills the process nor is lost: it is applied once the gateway listens', async (t) => {
    if (process.platform !== 'linux') return t.skip('reads /proc');
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-gw-'));
    const file = join(dir, 'tessera.yaml');
    const port = await freePort();
    const config = (prefix: string) =>
      `server: { host: 127.0.0.1, port: ${port} }\ngateway:\n  watch_config: false\n  routes:\n    - { id: pub, match: { path_prefix: ${prefix} }, upstream: { url: "${upstream.url}" }, auth: none }\n`;
    writeFileSync(file, config('/one'));
    const child = spawn(process.execPath, [BIN, 'gateway', '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TESSERA_LOG_LEVEL: 'info' },
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d.toString();
    });
    try {
      const pid = child.pid as number;
      const start = Date.now();
      while (!catchesSighup(pid) && child.exitCode === null && Date.now() - start < 10_000) await new Promise((r) => setTimeout(r, 2));
      assert.ok(catchesSighup(pid), 'the process never handled SIGHUP');
      // Before the gateway listens: the CLI's modules are still loading.
      assert.ok(!out.includes('gateway listening'), out);
      writeFileSync(file, config('/two'));
      child.kill('SIGHUP');
      while (!out.includes('configuration reloaded') && child.exitCode === null && Date.now() - start < 10_000) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(child.exitCode, null, 'the process ended');
      assert.equal(child.signalCode, null);
      assert.ok(out.includes('gateway listening'), out);
      assert.ok(out.includes('configuration reloaded'), out);
      assert.equal((await fetch(`http://127.0.0.1:${port}/two/x`)).status, 200);
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      assert.deepEqual(await exited, [0, null]);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
