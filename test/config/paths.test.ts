/**
 * Relative paths in `tessera.yaml` are read from the configuration file's directory, every one of
 * them: under systemd or Kubernetes the working directory is `/` or the image's, not where the
 * file is, and a path read from it would write the audit trail somewhere nobody looks.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/cli/context.ts';
import { loadConfigFile, parseConfigText } from '../../src/config/load.ts';
import { serveGateway } from '../../src/gateway/serve.ts';
import { silent, startUpstream } from '../gateway/helpers.ts';
import { issuesOf } from '../helpers/config.ts';

describe("config paths: relative to the configuration file's directory", () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-paths-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the CLI reads a relative audit.file (like data_dir) from the directory of the file, not the working directory', () => {
    const file = join(dir, 'cli.yaml');
    writeFileSync(file, 'data_dir: state\naudit:\n  file: logs/audit.jsonl\n');
    const { config } = loadConfig(file, { env: {} });
    assert.equal(config.data_dir, join(dir, 'state'));
    assert.equal(config.audit?.file, join(dir, 'logs/audit.jsonl'));
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.audit));
    writeFileSync(file, 'audit:\n  file: /var/log/tessera/audit.jsonl\n');
    assert.equal(loadConfig(file, { env: {} }).config.audit?.file, '/var/log/tessera/audit.jsonl');
  });

  it('loadConfigFile (what an embedder passes to createGateway or openStore) reads a relative audit.file and data_dir from the directory of the file too, as the configuration reference says', () => {
    const file = join(dir, 'library.yaml');
    writeFileSync(file, 'data_dir: state\naudit:\n  file: logs/audit.jsonl\n');
    const config = loadConfigFile(file, {});
    assert.equal(config.data_dir, join(dir, 'state'));
    assert.equal(config.audit?.file, join(dir, 'logs/audit.jsonl'));
    assert.ok(Object.isFrozen(config));
  });

  it('serveGateway({ configFile }) writes a relative audit.file beside the file, as it reads a relative jwks.file', async () => {
    const upstream = await startUpstream();
    const name = `audit-${process.pid}-${Date.now()}.jsonl`;
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `dpop: { mode: disabled }\naudit: { file: ${name}, flush_interval: 10ms }\ngateway:\n  watch_config: false\n  routes:\n    - { id: pub, upstream: { url: "${upstream.url}" }, auth: none }\n`,
    );
    const served = await serveGateway({ configFile: file, env: {}, host: '127.0.0.1', port: 0 }, { logger: silent });
    try {
      assert.equal((await fetch(`${served.url}/a`)).status, 200);
      await served.gateway.audit.flush();
      assert.ok(!existsSync(name), 'written to the working directory');
      assert.match(readFileSync(join(dir, name), 'utf8'), /"path":"\/a"/);
    } finally {
      await served.close({ drainTimeoutMs: 100 });
      await upstream.close();
      rmSync(name, { force: true });
    }
  });
});

describe('config attacks: a configuration file every user may write', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-mode-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const refusal = (file: string, mode: string) => [
    {
      path: '(file)',
      message: `${file} is writable by every user (mode ${mode}): anyone on this host could rewrite the routes, issuers and credentials; run chmod o-w ${file}`,
    },
  ];

  it('is refused, naming the mode and the chmod to run (loadConfigFile, the CLI, and through a symlink to it)', () => {
    const file = join(dir, 'open.yaml');
    writeFileSync(file, 'realm: r\n');
    chmodSync(file, 0o666);
    assert.deepEqual(
      issuesOf(() => loadConfigFile(file, {})),
      refusal(file, '0666'),
    );
    assert.deepEqual(
      issuesOf(() => loadConfig(file, { env: {} })),
      refusal(file, '0666'),
    );
    const link = join(dir, 'link.yaml');
    symlinkSync(file, link);
    assert.deepEqual(
      issuesOf(() => loadConfigFile(link, {})),
      refusal(link, '0666'),
    );
  });

  it('a file its group may write (umask 002, a shared deploy group) or only its owner may write is read', () => {
    const file = join(dir, 'group.yaml');
    writeFileSync(file, 'realm: r\n');
    chmodSync(file, 0o664);
    assert.equal(loadConfigFile(file, {}).realm, 'r');
    chmodSync(file, 0o600);
    assert.equal(loadConfigFile(file, {}).realm, 'r');
  });
});

describe('config attacks: a configuration file another user may replace or owns', () => {
  const root = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-owner-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('in a directory every user may write (no sticky bit) is refused, naming the directory and chmod o-w', () => {
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const file = join(open, 'tessera.yaml');
    writeFileSync(file, 'realm: r\n', { mode: 0o600 });
    const [issue, more] = issuesOf(() => loadConfigFile(file, {}));
    assert.equal(more, undefined);
    assert.equal(issue?.path, '(file)');
    assert.match(
      issue?.message ?? '',
      new RegExp(`^its directory ${open} is writable by every user \\(mode 0777\\).*run chmod o-w ${open}$`),
    );
    assert.deepEqual(
      issuesOf(() => loadConfig(file, { env: {} })).map((i) => i.message),
      [issue?.message],
    );
    // Through a symlink from a safe directory to the file in the open one: the same.
    const link = join(dir, 'link.yaml');
    symlinkSync(file, link);
    assert.match(issuesOf(() => loadConfigFile(link, {}))[0]?.message ?? '', /chmod o-w/);
    // With the sticky bit (as /tmp has), others cannot rename or delete the file: read.
    chmodSync(open, 0o1777);
    assert.equal(loadConfigFile(file, {}).realm, 'r');
    // Group-writable, as a file's own group write bit: read.
    chmodSync(open, 0o775);
    assert.equal(loadConfigFile(file, {}).realm, 'r');
  });

  it("owned by another user than the one Tessera runs as, and not root, is refused naming the chown; root's is read", {
    skip: !root && 'chown needs root',
  }, () => {
    const file = join(dir, 'theirs.yaml');
    writeFileSync(file, 'realm: r\n', { mode: 0o644 });
    chownSync(file, 4242, 4242);
    assert.deepEqual(
      issuesOf(() => loadConfigFile(file, {})),
      [
        {
          path: '(file)',
          message: `${file} belongs to uid 4242, neither the user Tessera runs as (uid ${process.getuid?.()}) nor root: that user could rewrite the routes, issuers and credentials; run chown ${process.getuid?.()} ${file} (on the host, for a container's bind mount), or run Tessera as uid 4242`,
        },
      ],
    );
    chownSync(file, 0, 0);
    assert.equal(loadConfigFile(file, {}).realm, 'r');
  });
});

describe('config file on a read-only mount whose directory has mode 0777 (a Kubernetes ConfigMap volume)', () => {
  // kubelet makes a ConfigMap volume's directory 0777 without the sticky bit and mounts it
  // read-only: no one can replace the file through it, whatever its mode says.
  const dir = mkdtempSync(join(tmpdir(), 'tessera-configmap-'));
  const volume = join(dir, 'config');
  mkdirSync(volume);
  const mount = (...args: string[]): boolean => {
    try {
      execFileSync('mount', args, { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  const mounted = process.getuid?.() === 0 && mount('-t', 'tmpfs', '-o', 'mode=0777,size=1m', 'tmpfs', volume);
  after(() => {
    if (mounted) execFileSync('umount', ['-l', volume]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('is read: the directory cannot be written by anyone, and a writable one with the same layout is still refused', {
    skip: !mounted && 'mounting a tmpfs needs root',
  }, () => {
    // The layout the kubelet writes: tessera.yaml -> ..data/tessera.yaml, ..data -> ..<timestamp>.
    mkdirSync(join(volume, '..2026_01_01'), { mode: 0o755 });
    writeFileSync(join(volume, '..2026_01_01', 'tessera.yaml'), 'realm: r\n', { mode: 0o644 });
    symlinkSync('..2026_01_01', join(volume, '..data'));
    symlinkSync('..data/tessera.yaml', join(volume, 'tessera.yaml'));
    const file = join(volume, 'tessera.yaml');
    // Writable (mode 0777, no sticky bit): anyone could rename another file over it.
    assert.match(issuesOf(() => loadConfigFile(file, {}))[0]?.message ?? '', /chmod o-w/);
    assert.ok(mount('-o', 'remount,ro', volume), 'remount read-only');
    assert.equal(loadConfigFile(file, {}).realm, 'r');
  });
});

describe('config attacks: a path setting holding a NUL byte', () => {
  it('is refused at validation, naming the setting, for every file and directory setting (never "ERR_INVALID_ARG_VALUE" when first used)', () => {
    const issues = issuesOf(() =>
      parseConfigText(
        [
          'data_dir: "state\\0/x"',
          'audit:',
          '  file: "audit\\0.jsonl"',
          'store:',
          '  sqlite:',
          '    path: "tessera\\0.db"',
          'issuers: [{ issuer: https://i.test, audiences: [a], jwks: { file: "keys\\0.json" } }]',
          '',
        ].join('\n'),
        'tessera.yaml',
        {},
      ),
    );
    assert.deepEqual(issues.map((i) => i.path).sort(), ['audit.file', 'data_dir', 'issuers[0].jwks.file', 'store.sqlite.path']);
    for (const i of issues) assert.match(i.message, /NUL byte/, i.path);
  });

  it('from the environment too, without repeating the value', () => {
    const issues = issuesOf(() => parseConfigText('data_dir: ${STATE}\n', 'tessera.yaml', { STATE: 's3cret\0dir' }));
    assert.deepEqual(
      issues.map((i) => i.path),
      ['data_dir'],
    );
    assert.doesNotMatch(issues[0]?.message ?? '', /s3cret/);
  });
});
