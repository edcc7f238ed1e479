/**
 * `tessera serve`'s operational log: one pino logger for the token service and the gateway, so a
 * log shipper reads one shape (`level` as pino's number, `time`, `msg`, `event`) on one stream
 * (stdout), and one reload's warnings, the token service's and the gateway's, are together.
 * Whatever a line quotes stays one line of printable JSON: a warning can quote a value another
 * party chose (a refused signing-key row's kid, written by whoever can write to the database), and
 * JSON.stringify leaves U+2028, U+2029, C1 controls and bidi overrides raw, which line readers take
 * for a break and terminals for commands.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { initialize } from '../../src/cli/commands/init.ts';
import { defaultLogger } from '../../src/gateway/gateway.ts';
import { AUDIENCE, ISSUER, key } from '../gateway/helpers.ts';
import { freePort, until } from '../helpers/net.ts';
import { spawnCollecting } from '../helpers/spawned.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('tessera serve log lines', () => {
  it('attack: a warning quoting a planted kid stays one line of printable JSON, and reads back the same', () => {
    const msg = 'signing key evil\u2028{"level":"info"}\u009b2J\u202ekid is refused';
    const written: string[] = [];
    const logger = defaultLogger('info', { write: (line: string) => void written.push(line) });
    logger.warn({ event: 'service_warning', kid: 'evil\u2029\u0085\u2066' }, msg);
    assert.equal(written.length, 1);
    const line = written[0] as string;
    assert.doesNotMatch(line, /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
    assert.equal(line.indexOf('\n'), line.length - 1);
    const parsed = JSON.parse(line) as { msg: string; kid: string; level: number };
    assert.equal(parsed.msg, msg);
    assert.equal(parsed.kid, 'evil\u2029\u0085\u2066');
    assert.equal(parsed.level, 40);
  });

  it('a TESSERA_LOG_LEVEL that is no level: tessera serve refuses to start with one error naming the variable and the levels, exit 2, not pino’s “unexpected error”', async () => {
    const site = mkdtempSync(join(tmpdir(), 'tessera-serve-loglevel-'));
    try {
      const config = join(site, 'tessera.yaml');
      await initialize({ config, port: await freePort() });
      const r = spawnSync(process.execPath, [MAIN, 'serve', '-c', config], {
        cwd: site,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_LOG_LEVEL: 'verbose' },
        timeout: 20_000,
      });
      assert.equal(r.status, 2, r.stderr);
      assert.match(
        r.stderr,
        /TESSERA_LOG_LEVEL: "verbose" is not a log level: write one of trace, debug, info, warn, error, fatal, silent/,
      );
      assert.doesNotMatch(r.stderr, /unexpected error/);
      assert.equal(r.stdout, '');
    } finally {
      rmSync(site, { recursive: true, force: true });
    }
  });

  it('the token service’s and the gateway’s config warnings, at start and at a reload, are on one stream (stdout) in one shape; stderr has none', async () => {
    const site = mkdtempSync(join(tmpdir(), 'tessera-serve-log-'));
    const port = await freePort();
    const config = join(site, 'tessera.yaml');
    writeFileSync(join(site, 'idp.json'), JSON.stringify({ keys: [key.jwk] }));
    // The token service warns about an issuer without exchange_clients (at start and at every
    // reload); the gateway about a catch-all trust_proxy (the same).
    writeFileSync(
      config,
      `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], algorithms: [ES256], jwks: { file: idp.json } }
gateway:
  watch_config: false
  trust_proxy: ["0.0.0.0/0"]
  routes:
    - { id: api, match: { path_prefix: /api }, upstream: { url: "http://127.0.0.1:9" }, auth: none }
`,
    );
    await initialize({ config });
    const run = spawnCollecting(process.execPath, [MAIN, 'serve', '-c', config], { cwd: site });
    const { child } = run;
    const tokenServiceWarnings = (lines: Record<string, unknown>[]) =>
      lines.filter((l) => l.event === 'config_warning' && /issuers\[0\]\.exchange_clients/.test(String(l.msg)));
    const gatewayWarnings = (lines: Record<string, unknown>[]) =>
      lines.filter((l) => l.event === 'config_warning' && /gateway\.trust_proxy/.test(String(l.msg)));
    try {
      // Either stream: what is on which is asserted below.
      await until(() => (run.out + run.err).includes('"msg":"listening"'), 10_000);
      const atStart = jsonLines(run.out);
      assert.equal(tokenServiceWarnings(atStart).length, 1, run.out);
      assert.equal(gatewayWarnings(atStart).length, 1, run.out);
      for (const line of atStart) {
        assert.equal(typeof line.level, 'number', JSON.stringify(line));
        assert.equal(typeof line.time, 'number', JSON.stringify(line));
        assert.equal(typeof line.msg, 'string', JSON.stringify(line));
        // Not `tessera-gateway`: a token service without a gateway section logs the same way.
        assert.equal(line.service, 'tessera', JSON.stringify(line));
      }
      assert.equal(tokenServiceWarnings(atStart)[0]?.level, 40);
      assert.equal(tokenServiceWarnings(atStart)[0]?.component, 'token_service');
      assert.equal(gatewayWarnings(atStart)[0]?.level, 40);
      const listening = atStart.find((l) => l.msg === 'listening');
      assert.equal(listening?.event, 'listening');
      assert.equal(listening?.level, 30);

      child.kill('SIGHUP');
      await until(() => jsonLines(run.out).some((l) => l.event === 'config_reloaded'), 10_000);
      const all = jsonLines(run.out);
      assert.equal(tokenServiceWarnings(all).length, 2, run.out);
      assert.equal(gatewayWarnings(all).length, 2, run.out);
      assert.equal(tokenServiceWarnings(all)[1]?.level, 40);
      assert.equal(jsonLines(run.err).length, 0, `no log line on stderr: ${run.err}`);
      child.kill('SIGTERM');
      assert.deepEqual(await run.exited, [0, null], run.out + run.err);
      assert.equal(jsonLines(run.err).length, 0, `no log line on stderr: ${run.err}`);
    } finally {
      child.kill('SIGKILL');
      rmSync(site, { recursive: true, force: true });
    }
  });
});
