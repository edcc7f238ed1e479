/**
 * `tessera init` run again over what an earlier run, an operator or a failure left behind: the
 * demo client's secret only ever lands in owner-only files, and a client whose secret could not be
 * kept is not left behind.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEMO_CLIENT, DEMO_CLIENT_FILE, DEMO_SECRET_FILE, initialize } from '../../src/cli/commands/init.ts';
import { withService } from '../../src/cli/context.ts';
import { CliError } from '../../src/cli/output.ts';

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
      (e: unknown) => e instanceof CliError && /cannot write the demo client's secret .*the demo client was not kept/.test(e.message),
    );
    assert.equal(await demoExists(), false);
    rmSync(join(data, DEMO_SECRET_FILE), { recursive: true });
    const report = await initialize({ config });
    assert.equal(report.demo_client.created, true);
    assert.equal(readFileSync(join(data, DEMO_SECRET_FILE), 'utf8'), report.demo_client.client_secret);
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
});
