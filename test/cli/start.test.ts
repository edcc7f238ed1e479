/**
 * The newcomer's path, run as a newcomer runs it: `tessera start` in an empty directory (what
 * `npm start` runs) as a real process, then the exact commands it prints, executed by bash with
 * curl: a token from the token service, a call through the gateway to the demo API, the 401/403
 * cases, `tessera check`, a CLI revocation seen by the running gateway, and `tessera audit`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeSecretsEnv } from '../../src/config/secrets-env.ts';
import { freePort } from '../helpers/net.ts';
import { catchesSighup } from '../helpers/signals.ts';
import { spawnCollecting } from '../helpers/spawned.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
// The printed commands say `npx tessera`; here `tessera` is the checkout's bin on the PATH.
const BIN = new URL('../../bin/tessera.js', import.meta.url).pathname;

let dir: string;
let child: ChildProcess;
let stdout = '';
let stderr = '';
let port: number;

const env = () => ({
  ...process.env,
  TESSERA_MASTER_KEY: '',
  GATEWAY_TOKEN: '',
  PATH: `${join(dir, '.bin')}:${dirname(process.execPath)}:${process.env.PATH}`,
});

function sh(script: string): { code: number | null; out: string; err: string } {
  const r = spawnSync('bash', ['-c', `set -o pipefail\n${script.replaceAll('npx tessera', 'tessera')}`], {
    cwd: dir,
    encoding: 'utf8',
    env: env(),
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function printed(prefix: RegExp): string {
  // A command continued on the next line (`\` at the end) is one command.
  const line = stdout
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .find((l) => prefix.test(l.trim()));
  assert.ok(line, `tessera start printed a line matching ${prefix}:\n${stdout}`);
  return line.trim().replace(/\s+#.*$/, '');
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-start-'));
  mkdirSync(join(dir, '.bin'));
  symlinkSync(BIN, join(dir, '.bin', 'tessera'));
  port = await freePort();
  const upstreamPort = await freePort();
  // Only the ports differ from a bare `npm start` (8080/8081 may be taken on a test machine).
  const init = spawnSync(process.execPath, [MAIN, 'init', '--port', String(port), '--upstream-port', String(upstreamPort)], {
    cwd: dir,
    encoding: 'utf8',
    env: env(),
  });
  assert.equal(init.status, 0, init.stderr);
  child = spawn(process.execPath, [MAIN, 'start'], { cwd: dir, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const deadline = Date.now() + 20_000;
  while (!stdout.includes('Stop with Ctrl-C')) {
    if (child.exitCode !== null || Date.now() > deadline) assert.fail(`tessera start did not come up:\n${stdout}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  if (child.exitCode === null) {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('tessera start (npm start)', () => {
  it('prints commands that fetch a token and call the demo API through the gateway', () => {
    const r = sh(`${printed(/^TOKEN=/)}\n${printed(/^curl -i -H "Authorization: Bearer \$TOKEN" \S+\/api\/hello$/)}`);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^HTTP\/1\.1 200 OK/);
    const body = JSON.parse(r.out.slice(r.out.indexOf('\r\n\r\n') + 4)) as { upstream_credential: string; caller: Record<string, unknown> };
    // The demo API answers only with the gateway's injected credential, and sees the caller's identity.
    assert.equal(body.upstream_credential, 'gateway token received');
    assert.equal(body.caller.subject, 'demo-agent');
    assert.deepEqual(body.caller.scopes, ['demo:read']);
    assert.match(String(body.caller.delegation_id), /^g_/);
  });

  it('prints the commands README.md shows in "Five minutes", in its order (the port aside)', () => {
    // Comments aside: one command per entry, continuation lines joined, spaces collapsed.
    const commands = (text: string) =>
      text
        .replace(/\\\n\s*/g, ' ')
        .split('\n')
        .map((l) => l.replace(/\s+#.*$/, '').trim())
        .filter((l) => l !== '' && !l.startsWith('#'))
        .map((l) => l.replace(/\s+/g, ' '));
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('## Five minutes'));
    const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(block, 'README.md has a sh block under "Five minutes"');
    const shown = commands(block.replaceAll('http://127.0.0.1:8080', `http://127.0.0.1:${port}`));
    const ran = commands(
      stdout
        .split('\n')
        .filter((l) => l.startsWith('  '))
        .join('\n'),
    );
    assert.deepEqual(shown, ran);
  });

  it('annotates them as README.md does, each comment in one column (the long revocation continued on its own line)', () => {
    const comments = (text: string) => [...text.matchAll(/ +# (.+)$/gm)].map((m) => m[1]);
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf('## Five minutes')))?.[1] ?? '';
    const tried = stdout.slice(stdout.indexOf('Then try:\n') + 'Then try:\n'.length).split('\n\n')[0] as string;
    // README's first two commands are printed above "Then try", without comments.
    assert.deepEqual(comments(tried), comments(block).slice(1));
    const lines = tried.split('\n');
    const columns = new Set(lines.filter((l) => l.includes(' # ')).map((l) => l.indexOf(' # ')));
    assert.equal(columns.size, 1, tried);
  });

  it('the demo API refuses a caller that bypasses the gateway', () => {
    const upstream = /demo API on (http:\/\/\S+) /.exec(stdout)?.[1];
    assert.ok(upstream);
    const r = sh(`${printed(/^TOKEN=/)}\ncurl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" ${upstream}/api/hello`);
    assert.equal(r.out, '401');
  });

  it('the printed 401 and 403 cases behave as annotated', () => {
    const unauth = sh(printed(/^curl -i http\S+\/api\/hello/));
    assert.match(unauth.out, /^HTTP\/1\.1 401 /);
    assert.match(unauth.out, /\r\nwww-authenticate: Bearer/i);
    const forbidden = sh(`${printed(/^TOKEN=/)}\n${printed(/^curl -i -X POST/)}`);
    assert.match(forbidden.out, /^HTTP\/1\.1 403 /);
    assert.match(forbidden.out, /error="insufficient_scope"/);
    assert.match(forbidden.out, /scope="demo:write"/);
  });

  it('streams the demo events through the gateway', () => {
    const r = sh(`${printed(/^TOKEN=/)}\n${printed(/^curl -N/)}`);
    assert.equal(r.code, 0, r.err);
    assert.equal((r.out.match(/^event: tick$/gm) ?? []).length, 5);
  });

  it('tessera check passes every conformance check against the demo', () => {
    const r = sh(`${printed(/^TOKEN=/)}\n${printed(/^npx tessera check/)}`);
    assert.equal(r.code, 0, r.out + r.err);
    assert.equal((r.out.match(/^PASS /gm) ?? []).length, 6, r.out);
  });

  it('the printed RFC 7009 revocation is enforced by the gateway on the very next request', () => {
    const r = sh(
      `${printed(/^TOKEN=/)}\n${printed(/^curl -s -u .*\/oauth2\/revoke/)}\n${printed(/^curl -i -H "Authorization: Bearer \$TOKEN" \S+\/api\/hello$/)}`,
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^HTTP\/1\.1 401 /m);
    assert.match(r.out, /error_description="The access token was revoked\."/);
  });

  it('a CLI revocation reaches the running gateway within the store sync interval', async () => {
    const r = sh(`${printed(/^TOKEN=/)}\necho "$TOKEN"`);
    const t = r.out.trim();
    assert.equal(sh(`tessera revoke --token - <<< "${t}"`).code, 0);
    let status = 0;
    for (let i = 0; i < 30 && status !== 401; i++) {
      await new Promise((res) => setTimeout(res, 100));
      status = (await fetch(`http://127.0.0.1:${port}/api/hello`, { headers: { authorization: `Bearer ${t}` } })).status;
    }
    assert.equal(status, 401);
  });

  it('tessera audit shows one gateway event per request, with the caller and the decision', async () => {
    type Event = { kind: string; decision: string; reason: string; route?: string; path?: string };
    // Events reach the store in batches (audit.flush_interval, 1 s): wait for the last request's.
    let events: Event[] = [];
    for (let i = 0; i < 40 && !events.some((e) => e.reason === 'token_revoked'); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      const r = sh('npx tessera audit query --subject demo-agent --json');
      assert.equal(r.code, 0, r.err);
      events = JSON.parse(r.out) as Event[];
    }
    const gw = events.filter((e) => e.kind === 'gateway.request');
    assert.ok(gw.some((e) => e.decision === 'allow' && e.path === '/api/hello' && e.route === 'demo'));
    assert.ok(gw.some((e) => e.decision === 'deny' && e.reason === 'scope_insufficient' && e.path === '/api/items'));
    assert.ok(gw.some((e) => e.decision === 'deny' && e.reason === 'token_revoked'));
    assert.ok(events.some((e) => e.kind === 'token.issued'));
    const tail = sh('npx tessera audit tail --since 1h');
    assert.equal(tail.code, 0, tail.err);
    assert.match(tail.out, /gateway\.request {2}deny:credentials_missing/);
  });

  it('prints no secret: neither the client secret, the gateway token nor an access token', () => {
    const secret = readFileSync(join(dir, '.tessera', 'demo-client.secret'), 'utf8');
    const gatewayToken = /GATEWAY_TOKEN=(\S+)/.exec(readFileSync(join(dir, '.tessera', 'secrets.env'), 'utf8'))?.[1];
    assert.ok(gatewayToken);
    for (const out of [stdout, stderr]) {
      assert.ok(!out.includes(secret));
      assert.ok(!out.includes(gatewayToken));
      assert.doesNotMatch(out, /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/);
    }
  });

  it('a gateway token rotated in secrets.env applies on SIGHUP to the gateway and the demo API alike', async () => {
    const upstream = /demo API on (http:\/\/\S+) /.exec(stdout)?.[1];
    const rotated = `tgw_rotated_${Date.now()}_0123456789abcdefghij`;
    writeSecretsEnv(join(dir, '.tessera', 'secrets.env'), { GATEWAY_TOKEN: rotated });
    const reloads = () => stderr.split('configuration reloaded').length;
    const before = reloads();
    child.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    while (reloads() === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(reloads() > before, `no reload logged:\n${stderr}`);
    const r = sh(
      `${printed(/^TOKEN=/)}\ncurl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" http://127.0.0.1:${port}/api/hello`,
    );
    assert.equal(r.out, '200', r.err);
    const direct = (t: string) => sh(`curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${t}" ${upstream}/api/hello`).out;
    assert.equal(direct(rotated), '200', 'the demo API takes the rotated gateway token');
    assert.equal(direct(`${rotated}x`), '401');
  });

  it('stops cleanly on SIGTERM', async () => {
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 0);
  });
});

describe('tessera start: what a terminal shows, stdout and stderr together', () => {
  it('shows the banner first and the gateway’s "listening" log line after the commands, not before the banner', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tessera-start-order-'));
    const e = { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' };
    try {
      const init = spawnSync(
        process.execPath,
        [MAIN, 'init', '--port', String(await freePort()), '--upstream-port', String(await freePort())],
        {
          cwd: home,
          encoding: 'utf8',
          env: e,
        },
      );
      assert.equal(init.status, 0, init.stderr);
      // No signing key yet: start initializes it, so the first run's "Initialized" banner is printed.
      rmSync(join(home, '.tessera', 'tessera.db'));
      const file = join(home, 'terminal.txt');
      const fd = openSync(file, 'w');
      const proc = spawn(process.execPath, [MAIN, 'start'], { cwd: home, env: e, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      try {
        const deadline = Date.now() + 20_000;
        const shown = () => readFileSync(file, 'utf8');
        while (!(shown().includes('Stop with Ctrl-C') && shown().includes('gateway listening'))) {
          if (proc.exitCode !== null || Date.now() > deadline) assert.fail(`tessera start did not come up:\n${shown()}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const text = shown();
        assert.match(text, /^Initialized \S+: .*signing key/);
        assert.ok(text.indexOf('gateway listening') > text.indexOf('Stop with Ctrl-C'), text);
      } finally {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('tessera start: the token service logs through start’s logger', () => {
  it('a token-service config warning is a pino line on stderr with the gateway’s; stdout has the instructions alone', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tessera-start-logs-'));
    const e = { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' };
    try {
      const p = await freePort();
      const init = spawnSync(process.execPath, [MAIN, 'init', '--port', String(p), '--upstream-port', String(await freePort())], {
        cwd: home,
        encoding: 'utf8',
        env: e,
      });
      assert.equal(init.status, 0, init.stderr);
      // Another issuer without exchange_clients: the token service warns about it at start.
      writeFileSync(
        join(home, 'idp.json'),
        JSON.stringify({ keys: [generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })] }),
      );
      const file = join(home, 'tessera.yaml');
      writeFileSync(
        file,
        readFileSync(file, 'utf8').replace(
          /^issuers:\n/m,
          `issuers:\n  - { issuer: https://idp.test, audiences: [http://127.0.0.1:${p}/demo], algorithms: [ES256], jwks: { file: idp.json } }\n`,
        ),
      );
      const run = spawnCollecting(process.execPath, [MAIN, 'start'], { cwd: home, env: e });
      const proc = run.child;
      try {
        const deadline = Date.now() + 20_000;
        while (!(run.out.includes('Stop with Ctrl-C') && run.err.includes('gateway listening'))) {
          if (proc.exitCode !== null || Date.now() > deadline) assert.fail(`tessera start did not come up:\n${run.out}\n${run.err}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const lines = run.err
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        const warned = lines.filter((l) => l.event === 'config_warning' && /issuers\[0\]\.exchange_clients/.test(String(l.msg)));
        assert.equal(warned.length, 1, run.err);
        assert.equal(warned[0]?.level, 40);
        assert.equal(warned[0]?.component, 'token_service');
        assert.ok(
          lines.every((l) => typeof l.level === 'number'),
          run.err,
        );
        assert.ok(!run.out.split('\n').some((l) => l.startsWith('{')), run.out);
      } finally {
        proc.kill('SIGTERM');
        await run.exited;
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('tessera start on a port that is taken', () => {
  it('says what start can do about it: it has no --port, which the message told it to use', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const busy = (taken.address() as AddressInfo).port;
    const home = mkdtempSync(join(tmpdir(), 'tessera-start-busy-'));
    try {
      const init = spawnSync(process.execPath, [MAIN, 'init', '--port', String(busy), '--upstream-port', String(await freePort())], {
        cwd: home,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' },
      });
      assert.equal(init.status, 0, init.stderr);
      const r = spawnSync(process.execPath, [MAIN, 'start'], {
        cwd: home,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' },
      });
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`^tessera: 127\\.0\\.0\\.1:${busy} is already in use; .*server\\.port in tessera\\.yaml`));
      assert.doesNotMatch(r.stderr, /--port\)/);
      assert.equal(r.stderr.split('\n').length, 2, r.stderr);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('tessera start: SIGHUP while starting', () => {
  it('a reload asked for while npm start is still loading neither kills it nor is lost: it is applied once it listens', async (t) => {
    if (process.platform !== 'linux') return t.skip('reads /proc');
    const own = mkdtempSync(join(tmpdir(), 'tessera-start-hup-'));
    const p = await freePort();
    const e = { ...process.env, TESSERA_MASTER_KEY: '', GATEWAY_TOKEN: '' };
    try {
      const init = spawnSync(process.execPath, [MAIN, 'init', '--port', String(p), '--upstream-port', String(await freePort())], {
        cwd: own,
        encoding: 'utf8',
        env: e,
      });
      assert.equal(init.status, 0, init.stderr);
      // No file watch: the one reload must be the SIGHUP's.
      const file = join(own, 'tessera.yaml');
      writeFileSync(file, readFileSync(file, 'utf8').replace(/^gateway:\n/m, 'gateway:\n  watch_config: false\n'));
      const run = spawnCollecting(process.execPath, [BIN, 'start'], { cwd: own, env: e });
      const proc = run.child;
      try {
        const catches = () => catchesSighup(proc.pid);
        const start = Date.now();
        while (!catches() && proc.exitCode === null && Date.now() - start < 10_000) await new Promise((r) => setTimeout(r, 2));
        assert.ok(catches(), 'the process never handled SIGHUP');
        assert.ok(!run.out.includes('Stop with Ctrl-C'), 'already started: the test proves nothing');
        proc.kill('SIGHUP');
        while (!run.err.includes('configuration reloaded') && proc.exitCode === null && Date.now() - start < 20_000) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(proc.exitCode, null, `the process ended:\n${run.err}`);
        assert.equal(proc.signalCode, null);
        assert.ok(run.err.includes('configuration reloaded'), run.err);
        assert.equal((await fetch(`http://127.0.0.1:${p}/healthz`)).status, 200);
        proc.kill('SIGTERM');
        assert.deepEqual(await run.exited, [0, null]);
      } finally {
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });
});
