/**
 * Watching the configuration file as deployments replace it: a Kubernetes ConfigMap or Secret
 * volume (the file is a symlink `tessera.yaml -> ..data/tessera.yaml`, and `..data` a symlink the
 * kubelet swaps atomically to a new timestamped directory on every update, removing the old one),
 * an editor's write-to-temp-then-rename, and `gateway.watch_config` changed by a reload.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { serveGateway } from '../../src/gateway/serve.ts';
import { silent, startUpstream, type Upstream } from './helpers.ts';

function yaml(upstream: string, ids: string[], watch = true): string {
  return `
dpop: { mode: disabled }
gateway:
  watch_config: ${watch}
  routes:
${ids.map((id) => `    - { id: ${id}, match: { path_prefix: /${id} }, upstream: { url: ${upstream} }, auth: none }`).join('\n')}
`;
}

/** Polls `path` until it answers 200 (or 5 s pass); the last status. */
async function until(url: string, path: string, want = 200): Promise<number> {
  const start = Date.now();
  let status = 0;
  while (Date.now() - start < 5000) {
    status = (await fetch(`${url}${path}`)).status;
    if (status === want) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return status;
}

describe('gateway: a configuration file mounted from a Kubernetes ConfigMap', () => {
  it('reloads after each atomic ..data swap (first, second and third), and keeps watching', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-k8s-'));
    let n = 0;
    /** What the kubelet's AtomicWriter does: a new timestamped directory, ..data swapped to it by rename, the old one removed. */
    const publish = (ids: string[]): void => {
      const ts = `..2026_11_23_08_00_0${n++}.000${n}`;
      mkdirSync(join(dir, ts));
      writeFileSync(join(dir, ts, 'tessera.yaml'), yaml(upstream.url, ids));
      symlinkSync(ts, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      if (previous !== undefined) rmSync(join(dir, previous), { recursive: true });
      previous = ts;
    };
    let previous: string | undefined;
    publish(['v0']);
    const file = join(dir, 'tessera.yaml');
    symlinkSync('..data/tessera.yaml', file);
    const served = await serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      assert.equal(await until(served.url, '/v0/x'), 200);
      for (const v of ['v1', 'v2', 'v3']) {
        publish([v]);
        assert.equal(await until(served.url, `/${v}/x`), 200, `${v} applied`);
      }
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: a configuration file behind a symlink swapped to another file that stays (a release directory, ln -sfn)', () => {
  it('reloads after each swap (first, second and third), though the file it pointed at before is neither changed nor removed', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-symlink-swap-'));
    const file = join(dir, 'tessera.yaml');
    /** What `ln -sfn releases/<v> current` does: a new symlink renamed over the old one; the old release stays. */
    const release = (v: string): void => {
      mkdirSync(join(dir, 'releases', v), { recursive: true });
      writeFileSync(join(dir, 'releases', v, 'tessera.yaml'), yaml(upstream.url, [v]));
      symlinkSync(join('releases', v), join(dir, 'current.tmp'));
      renameSync(join(dir, 'current.tmp'), join(dir, 'current'));
    };
    release('v0');
    symlinkSync(join('current', 'tessera.yaml'), file);
    const served = await serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      assert.equal(await until(served.url, '/v0/x'), 200);
      for (const v of ['v1', 'v2', 'v3']) {
        release(v);
        assert.equal(await until(served.url, `/${v}/x`), 200, `${v} applied`);
      }
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: a configuration file saved by renaming a temporary file over it (editors, sed -i)', () => {
  it('reloads after each save (first, second and third): the watch follows the new file', async () => {
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'tessera-rename-'));
    const file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml(upstream.url, ['v0']));
    const served = await serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      for (const v of ['v1', 'v2', 'v3']) {
        writeFileSync(join(dir, '.tessera.yaml.swp'), yaml(upstream.url, [v]));
        renameSync(join(dir, '.tessera.yaml.swp'), file);
        assert.equal(await until(served.url, `/${v}/x`), 200, `${v} applied`);
      }
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway: watch_config changed by a reload', () => {
  let upstream: Upstream;
  let dir: string;
  let file: string;
  const start = async (watch: boolean) => {
    upstream = await startUpstream();
    dir = mkdtempSync(join(tmpdir(), 'tessera-watch-config-'));
    file = join(dir, 'tessera.yaml');
    writeFileSync(file, yaml(upstream.url, ['v0'], watch));
    return serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
  };
  const stop = async (served: Awaited<ReturnType<typeof start>>) => {
    await served.close({ drainTimeoutMs: 100 });
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  };

  it('turned off: a later change of the file is not applied (the operator stopped watching), only SIGHUP or reload() applies it', async () => {
    const served = await start(true);
    try {
      writeFileSync(file, yaml(upstream.url, ['v1'], false));
      assert.equal(await until(served.url, '/v1/x'), 200, 'the change that turns watching off is applied');
      writeFileSync(file, yaml(upstream.url, ['v2'], false));
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal((await fetch(`${served.url}/v2/x`)).status, 404, 'a change after watch_config: false was applied');
      assert.equal((await fetch(`${served.url}/v1/x`)).status, 200);
      assert.equal(served.reload().ok, true);
      assert.equal((await fetch(`${served.url}/v2/x`)).status, 200);
    } finally {
      await stop(served);
    }
  });

  it('turned on: a later change of the file is applied, not only after a restart', async () => {
    const served = await start(false);
    try {
      writeFileSync(file, yaml(upstream.url, ['v1'], true));
      assert.equal(served.reload().ok, true);
      assert.equal((await fetch(`${served.url}/v1/x`)).status, 200);
      writeFileSync(file, yaml(upstream.url, ['v2'], true));
      assert.equal(await until(served.url, '/v2/x'), 200, 'a change after watch_config: true was not applied');
    } finally {
      await stop(served);
    }
  });
});
