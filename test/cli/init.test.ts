/**
 * `tessera init` run again over what an earlier run, an operator or a failure left behind: the
 * demo client's secret only ever lands in owner-only files, and a client whose secret could not be
 * kept is not left behind.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.ts';
import { DEMO_CLIENT, DEMO_CLIENT_FILE, DEMO_SECRET_FILE, initialize } from '../../src/cli/commands/init.ts';
import { withService } from '../../src/cli/context.ts';
import { CliError } from '../../src/cli/output.ts';
import { SECRETS_ENV_FILE } from '../../src/config/secrets-env.ts';
import { MASTER_KEY_FILE } from '../../src/server/bootstrap.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('tessera init: the demo client secret files', () => {
  let dir: string;
  let config: string;
  let data: string;
  const demoExists = () => withService(config, false, async ({ store }) => (await store.getClient(DEMO_CLIENT)) !== undefined);
  const removeDemo = () => withService(config, false, ({ service }) => service.removeClient(DEMO_CLIENT));

  before(() => {
    delete process.env.TESSERA_MASTER_KEY;
    dir = mkdtempSync(join(tmpdir(), 'tessera-init-'));
    config = join(dir, 'tessera.yaml');
    data = join(dir, '.tessera');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a new secret owner-only even over files left readable by others', async () => {
    await initialize({ config });
    chmodSync(join(data, DEMO_CLIENT_FILE), 0o644);
    chmodSync(join(data, DEMO_SECRET_FILE), 0o644);
    await removeDemo();
    const report = await initialize({ config });
    const secret = report.demo_client.client_secret;
    assert.ok(secret);
    for (const f of [DEMO_CLIENT_FILE, DEMO_SECRET_FILE]) {
      assert.equal(statSync(join(data, f)).mode & 0o777, 0o600, `${f} is owner-only`);
      assert.ok(readFileSync(join(data, f), 'utf8').includes(secret));
    }
  });

  it('keeps no demo client when its secret cannot be written, so the next run creates it again', async () => {
    await removeDemo();
    rmSync(join(data, DEMO_SECRET_FILE));
    mkdirSync(join(data, DEMO_SECRET_FILE));
    await assert.rejects(
      initialize({ config }),
      (e: unknown) =>
        e instanceof CliError && /^cannot write the demo client's secret in .* \(EISDIR\); init undid its changes$/.test(e.message),
    );
    assert.equal(await demoExists(), false);
    rmSync(join(data, DEMO_SECRET_FILE), { recursive: true });
    const report = await initialize({ config });
    assert.equal(report.demo_client.created, true);
    assert.equal(readFileSync(join(data, DEMO_SECRET_FILE), 'utf8'), report.demo_client.client_secret);
  });

  it('run again under another master key (a stale TESSERA_MASTER_KEY) refuses, registering no demo client whose secret would never authenticate', async () => {
    await removeDemo();
    const secret = readFileSync(join(data, DEMO_SECRET_FILE), 'utf8');
    process.env.TESSERA_MASTER_KEY = 'A'.repeat(43);
    try {
      await assert.rejects(
        initialize({ config }),
        (e: unknown) => e instanceof CliError && /master key .*not the one they were sealed with/.test(e.message),
      );
    } finally {
      delete process.env.TESSERA_MASTER_KEY;
    }
    assert.equal(await demoExists(), false);
    assert.equal(readFileSync(join(data, DEMO_SECRET_FILE), 'utf8'), secret);
  });
});

describe('tessera init with master.key lost', () => {
  it('says master.key is missing and the store needs the original (not that some key does not match), and leaves no new master.key behind', async () => {
    delete process.env.TESSERA_MASTER_KEY;
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-lost-'));
    try {
      const config = join(dir, 'tessera.yaml');
      const keyFile = join(dir, '.tessera', MASTER_KEY_FILE);
      await initialize({ config });
      rmSync(keyFile);
      await assert.rejects(initialize({ config }), (e: unknown) => {
        assert.ok(e instanceof CliError, String(e));
        assert.match(e.message, /master\.key is missing/);
        assert.match(e.message, /restore it/);
        return true;
      });
      assert.equal(existsSync(keyFile), false, 'no new master key that would seal anything under another key');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera init under umask 000', () => {
  it('writes no file another local user may change (tessera.yaml decides which issuers are trusted) and nothing under the data directory they may read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-umask-'));
    const previous = process.umask(0);
    try {
      await initialize({ config: join(dir, 'tessera.yaml') });
    } finally {
      process.umask(previous);
    }
    try {
      assert.equal(statSync(join(dir, 'tessera.yaml')).mode & 0o022, 0, 'tessera.yaml is writable by group or others');
      const data = join(dir, '.tessera');
      assert.equal(statSync(data).mode & 0o077, 0);
      for (const f of readdirSync(data)) assert.equal(statSync(join(data, f)).mode & 0o077, 0, `${f} is open to group or others`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera init: ports', () => {
  it('refuses --port 0 or 65535 without --upstream-port (port + 1 is no port), writing nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-port-'));
    try {
      for (const port of [0, 65535]) {
        await assert.rejects(initialize({ config: join(dir, 'tessera.yaml'), port }), (e: unknown) => {
          assert.ok(e instanceof CliError);
          assert.match(e.message, new RegExp(`^--port ${port} leaves no default for the demo upstream .*--upstream-port`));
          return true;
        });
      }
      assert.equal(existsSync(join(dir, 'tessera.yaml')), false);
      await initialize({ config: join(dir, 'tessera.yaml'), port: 0, upstreamPort: 18081 });
      assert.match(readFileSync(join(dir, 'tessera.yaml'), 'utf8'), /127\.0\.0\.1:18081/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // The README's way out of a busy 8080 (`npx tessera init --port 9080`), taken after `npm start`
  // already wrote tessera.yaml for 8080: silently keeping 8080 sent the newcomer back to the same error.
  it('refuses --port, --upstream-port and --data-dir that an existing tessera.yaml contradicts, in one line, changing nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-reshape-'));
    const env = { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' };
    const run = (...args: string[]) => spawnSync(process.execPath, [MAIN, 'init', ...args], { cwd: dir, encoding: 'utf8', env });
    try {
      assert.equal(run().status, 0);
      const written = readFileSync(join(dir, 'tessera.yaml'), 'utf8');
      for (const [args, says] of [
        [
          ['--port', '9080'],
          /^tessera: --port 9080 is not applied: .*tessera\.yaml exists \(server\.port 8080\) .*delete it and .*\.tessera, then run init again\n$/,
        ],
        [['--upstream-port', '9081'], /^tessera: --upstream-port 9081 is not applied: .*\(demo upstream http:\/\/127\.0\.0\.1:8081\)/],
        [['--data-dir', 'elsewhere'], /^tessera: --data-dir elsewhere is not applied: .*\(data_dir .*\.tessera\)/],
      ] as const) {
        const r = run(...args);
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, says);
        assert.equal(r.stdout, '');
      }
      assert.equal(readFileSync(join(dir, 'tessera.yaml'), 'utf8'), written);
      assert.equal(existsSync(join(dir, 'elsewhere')), false);
      // What the file already says is no contradiction.
      const same = run('--port', '8080', '--upstream-port', '8081', '--data-dir', '.tessera');
      assert.equal(same.status, 0, same.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera init: a run that fails part way leaves nothing half-written', () => {
  let dir: string;
  before(() => {
    delete process.env.TESSERA_MASTER_KEY;
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-init-undo-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const undone = (e: unknown, reason: RegExp) => {
    assert.ok(e instanceof CliError, String(e));
    assert.match(e.message, reason);
    assert.match(e.message, /; init undid its changes$/);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  };

  it('removes every file it created when the last one cannot be written, keeping what was there', async () => {
    const config = join(dir, 'tessera.yaml');
    const data = join(dir, '.tessera');
    mkdirSync(join(data, DEMO_SECRET_FILE), { recursive: true, mode: 0o700 });
    writeFileSync(join(data, 'notes.txt'), 'mine');
    await assert.rejects(initialize({ config }), (e) => undone(e, /^cannot write the demo client's secret in .* \(EISDIR\)/));
    assert.deepEqual(readdirSync(dir), ['.tessera']);
    assert.deepEqual(readdirSync(data).sort(), [DEMO_SECRET_FILE, 'notes.txt']);
    assert.equal(readFileSync(join(data, 'notes.txt'), 'utf8'), 'mine');
    // The next run finds the place as it was, and sets everything up.
    rmSync(join(data, DEMO_SECRET_FILE), { recursive: true });
    const report = await initialize({ config });
    assert.equal(report.config_written, true);
    assert.equal(report.master_key, 'generated');
    assert.equal(report.signing_key.created, true);
    assert.equal(report.demo_client.created, true);
    assert.equal(report.gateway_token.created, true);
  });

  it('removes the data directory and the parents it created when the store cannot be opened', async () => {
    const config = join(dir, 'own.yaml');
    const text = `data_dir: a/b/data\nstore: { sqlite: { path: ${join(dir, 'db')} } }\n`;
    writeFileSync(config, text);
    mkdirSync(join(dir, 'db'));
    await assert.rejects(initialize({ config }), (e) => undone(e, new RegExp(`^cannot open the SQLite store ${join(dir, 'db')}: `)));
    assert.deepEqual(readdirSync(dir).sort(), ['db', 'own.yaml']);
    assert.deepEqual(readdirSync(join(dir, 'db')), []);
    assert.equal(readFileSync(config, 'utf8'), text);
  });

  it('puts back a demo-client.json that was a symbolic link, its target unchanged', async () => {
    const config = join(dir, 'tessera.yaml');
    const data = join(dir, '.tessera');
    const target = join(dir, 'elsewhere.json');
    mkdirSync(join(data, DEMO_SECRET_FILE), { recursive: true, mode: 0o700 });
    writeFileSync(target, '{}\n');
    symlinkSync(target, join(data, DEMO_CLIENT_FILE));
    await assert.rejects(initialize({ config }), (e) => undone(e, /^cannot write the demo client's secret/));
    assert.ok(lstatSync(join(data, DEMO_CLIENT_FILE)).isSymbolicLink(), 'demo-client.json is a link again');
    assert.equal(readlinkSync(join(data, DEMO_CLIENT_FILE)), target);
    assert.equal(readFileSync(target, 'utf8'), '{}\n');
  });

  it('puts back the files it changed and deletes the key and client it added to an existing store', async () => {
    const config = join(dir, 'tessera.yaml');
    const data = join(dir, '.tessera');
    await initialize({ config });
    await withService(config, false, async ({ service, store }) => {
      await service.removeClient(DEMO_CLIENT);
      for (const k of await store.listSigningKeys()) await store.deleteSigningKey(k.kid);
    });
    // secrets.env without the gateway token (init adds it), the old demo-client.json kept.
    const token = readFileSync(join(data, SECRETS_ENV_FILE), 'utf8').match(/^GATEWAY_TOKEN=(.*)$/m)?.[1];
    assert.ok(token);
    writeFileSync(join(data, SECRETS_ENV_FILE), '# mine\nOTHER=1\n', { mode: 0o600 });
    const before = Object.fromEntries(
      [SECRETS_ENV_FILE, DEMO_CLIENT_FILE, MASTER_KEY_FILE, 'tessera.yaml'].map((f) => [
        f,
        readFileSync(f === 'tessera.yaml' ? config : join(data, f), 'utf8'),
      ]),
    );
    const listing = readdirSync(data).sort();
    rmSync(join(data, DEMO_SECRET_FILE));
    mkdirSync(join(data, DEMO_SECRET_FILE));
    await assert.rejects(initialize({ config }), (e) => undone(e, /^cannot write the demo client's secret/));
    for (const [f, text] of Object.entries(before)) {
      assert.equal(readFileSync(f === 'tessera.yaml' ? config : join(data, f), 'utf8'), text, `${f} as it was`);
    }
    assert.equal(statSync(join(data, SECRETS_ENV_FILE)).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(data).sort(), listing);
    process.env.GATEWAY_TOKEN = token;
    try {
      await withService(config, false, async ({ store }) => {
        assert.equal(await store.getClient(DEMO_CLIENT), undefined);
        assert.deepEqual(await store.listSigningKeys(), []);
      });
    } finally {
      delete process.env.GATEWAY_TOKEN;
    }
  });

  it('says so on one line and exits non-zero from the command line', () => {
    mkdirSync(join(dir, '.tessera', MASTER_KEY_FILE), { recursive: true, mode: 0o700 });
    const r = spawnSync(process.execPath, [MAIN, 'init'], { cwd: dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^tessera: .*master\.key must be a regular file.*; init undid its changes\n$/);
    assert.deepEqual(readdirSync(dir), ['.tessera']);
    assert.deepEqual(readdirSync(join(dir, '.tessera')), [MASTER_KEY_FILE]);
  });
});

describe('tessera init: a refusal is one admin.action deny where a store already exists', () => {
  let dir: string;
  const env = { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' };
  const run = (args: string[], extra: Record<string, string> = {}) =>
    spawnSync(process.execPath, [MAIN, 'init', ...args], { cwd: dir, encoding: 'utf8', env: { ...env, ...extra } });
  /** The admin.action events `fn` added to the store init made. */
  async function denials(fn: () => void): Promise<AuditEvent[]> {
    const read = async () => {
      const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
      try {
        return await store.queryAudit({ kinds: ['admin.action'], limit: 10_000 });
      } finally {
        await store.close();
      }
    };
    const before = (await read()).length;
    fn();
    return (await read()).slice(before);
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-init-audit-'));
    assert.equal(run([]).status, 0);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [what, args, extra, reason, says] of [
    ['--alg it cannot sign with', ['--alg', 'HS256'], {}, 'key_algorithm_unsupported', /^tessera: --alg must be one of /],
    [
      '--port an existing tessera.yaml contradicts',
      ['--port', '9080'],
      {},
      'init_option_not_applied',
      /^tessera: --port 9080 is not applied: /,
    ],
    [
      'another master key than the store’s (a stale TESSERA_MASTER_KEY)',
      [],
      { TESSERA_MASTER_KEY: 'A'.repeat(43) },
      'master_key_mismatch',
      /^tessera: the master key .*not the one they were sealed with/,
    ],
  ] as const) {
    it(`${what}: exit 1, one line, and one admin.action deny ${reason} by cli`, async () => {
      let r: ReturnType<typeof run> | undefined;
      const events = await denials(() => {
        r = run([...args], extra);
      });
      assert.ok(r);
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, says);
      assert.equal(r.stderr.split('\n').length, 2, r.stderr);
      assert.deepEqual(
        events.map((e) => [e.kind, e.decision, e.reason, e.subject, e.detail]),
        [['admin.action', 'deny', reason, undefined, { by: 'cli', action: 'init' }]],
      );
    });
  }

  it('where no store exists yet the refusal is reported and nothing is created to record it in', () => {
    const fresh = mkdtempSync(join(tmpdir(), 'tessera-init-audit-fresh-'));
    try {
      for (const args of [
        ['--alg', 'HS256'],
        ['--port', '0'],
      ]) {
        const r = spawnSync(process.execPath, [MAIN, 'init', ...args], { cwd: fresh, encoding: 'utf8', env });
        assert.equal(r.status, 1, r.stderr);
        assert.equal(r.stderr.split('\n').length, 2, r.stderr);
        assert.deepEqual(readdirSync(fresh), [], args.join(' '));
      }
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });
});

describe('tessera init: where tessera.yaml cannot be written', () => {
  it('attack: --config in a directory that does not exist: one line naming the file and what to do, not "unexpected error" on a temporary file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-nodir-'));
    try {
      const config = join(dir, 'missing', 'tessera.yaml');
      const r = spawnSync(process.execPath, [MAIN, 'init', '--config', config], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 1, r.stdout);
      assert.equal(r.stdout, '');
      assert.equal(
        r.stderr,
        `tessera: cannot write ${config}: its directory ${join(dir, 'missing')} does not exist (ENOENT); create it, or name another --config\n`,
      );
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera init: killed (kill -9) between registering the demo client and writing its secret', () => {
  /** A module run before the CLI that kills the process at its first write of a path holding `at`. */
  const killAt = (at: string) =>
    `data:text/javascript,${encodeURIComponent(`import fs from 'node:fs'; import { syncBuiltinESMExports } from 'node:module';
const write = fs.writeFileSync;
fs.writeFileSync = function (file, ...rest) { if (String(file).includes(${JSON.stringify(at)})) process.kill(process.pid, 'SIGKILL'); return write.call(this, file, ...rest); };
syncBuiltinESMExports();`)}`;
  const run = (dir: string, args: string[], preload?: string) =>
    spawnSync(process.execPath, [...(preload ? ['--import', preload] : []), MAIN, 'init', ...args], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });

  it('attack: before either file: the rerun says the secret is lost and how to get a new one, rather than "(exists)"', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-killed-'));
    try {
      const killed = run(dir, [], killAt(DEMO_CLIENT_FILE));
      assert.equal(killed.signal, 'SIGKILL');
      const data = join(dir, '.tessera');
      assert.equal(existsSync(join(data, DEMO_CLIENT_FILE)), false);
      const again = run(dir, []);
      assert.equal(again.status, 0, again.stderr);
      assert.match(
        again.stdout,
        new RegExp(
          `^client ${DEMO_CLIENT} exists, but its secret is in neither ${join(data, DEMO_CLIENT_FILE)} nor ${DEMO_SECRET_FILE} \\(an interrupted init, or removed\\): for a new one, run \`tessera clients remove ${DEMO_CLIENT}\`, then \`tessera init\`$`,
          'm',
        ),
      );
      const json = JSON.parse(run(dir, ['--json']).stdout) as { demo_client: { secret_missing?: boolean } };
      assert.equal(json.demo_client.secret_missing, true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('attack: after demo-client.json, before demo-client.secret: the rerun writes demo-client.secret from it (tessera start uses that file)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-killed-'));
    try {
      const killed = run(dir, [], killAt(`${DEMO_SECRET_FILE}.`));
      assert.equal(killed.signal, 'SIGKILL');
      const data = join(dir, '.tessera');
      const kept = JSON.parse(readFileSync(join(data, DEMO_CLIENT_FILE), 'utf8')) as { client_secret: string };
      assert.equal(existsSync(join(data, DEMO_SECRET_FILE)), false);
      const again = run(dir, []);
      assert.equal(again.status, 0, again.stderr);
      assert.equal(readFileSync(join(data, DEMO_SECRET_FILE), 'utf8'), kept.client_secret);
      assert.equal(statSync(join(data, DEMO_SECRET_FILE)).mode & 0o077, 0);
      assert.doesNotMatch(again.stdout, new RegExp(kept.client_secret), 'the secret is not printed again');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera init --data-dir where no directory can be made', () => {
  it('attack: under /proc (mkdir answers ENOENT under a parent that exists): one line and exit 1, not a loop at full CPU for ever', {
    skip: !existsSync('/proc/self') && 'no /proc here',
  }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-proc-'));
    try {
      const r = spawnSync(process.execPath, [MAIN, 'init', '--data-dir', '/proc/tessera-data'], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 20_000,
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.signal, null, 'init did not end');
      assert.equal(r.status, 1, r.stdout);
      assert.equal(r.stderr, 'tessera: cannot write /proc/tessera-data (ENOENT); init undid its changes\n');
      assert.deepEqual(readdirSync(dir), [], 'the tessera.yaml it wrote was removed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tessera init after a run killed mid-write', () => {
  it('attack: removes the temporary files (secrets in some) a killed run left, named by its process id, and leaves a running process’s alone', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-init-stale-'));
    try {
      // The id of a process that has ended: a run killed mid-write.
      const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
      const data = join(dir, '.tessera');
      mkdirSync(data, { mode: 0o700 });
      const stale = [
        join(dir, `tessera.yaml.${dead}.tmp`),
        join(data, `${SECRETS_ENV_FILE}.${dead}.tmp`),
        join(data, `${DEMO_SECRET_FILE}.${dead}.tmp`),
      ];
      for (const f of stale) writeFileSync(f, 'GATEWAY_TOKEN=tgw_left-behind-by-a-killed-run\n', { mode: 0o600 });
      // Another init writing at this moment (this test's process stands for it).
      const live = join(data, `${SECRETS_ENV_FILE}.${process.pid}.tmp`);
      writeFileSync(live, 'in progress', { mode: 0o600 });
      const r = spawnSync(process.execPath, [MAIN, 'init'], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 0, r.stderr);
      for (const f of stale) assert.equal(existsSync(f), false, `${f} was left`);
      assert.equal(existsSync(live), true, 'a running process’s temporary file was removed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
