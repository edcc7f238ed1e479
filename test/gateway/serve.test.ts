/**
 * `serveGateway` follows its configuration file however it is saved: written in place, or replaced
 * by a rename (editors, `sed -i`, Kubernetes ConfigMap updates), again and again.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServedGateway, serveGateway } from '../../src/gateway/serve.ts';
import { silent } from './helpers.ts';

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
