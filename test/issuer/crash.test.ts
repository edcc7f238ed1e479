/**
 * Crash consistency: a real `tessera serve` process, armed with a failpoint, SIGKILLs itself in the
 * middle of the refresh-rotation transaction (and, separately, of a revocation cascade). After a
 * restart the store holds the old state exactly: the rotation or the cascade either happened
 * completely or not at all.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { initialize } from '../../src/cli/commands/init.ts';
import { openService } from '../../src/cli/context.ts';
import { sha256 } from '../../src/issuer/secrets.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic } from '../helpers/issuer.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

let dir: string;
let config: string;
let secret: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-crash-'));
  config = join(dir, 'tessera.yaml');
  await initialize({ config });
  const ctx = await openService(config, true);
  try {
    const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
    secret = (await ctx.service.registerClient({ id: 'agent', scopes: ['demo:read'], audiences: ['https://api.test'], grantTypes }))
      .secret as string;
    await ctx.service.registerClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [ctx.service.issuer] });
  } finally {
    await ctx.close();
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A refresh-token family: alice → agent, through the library (another process than the server). */
async function family(): Promise<{ refresh: string; grantId: string; access: string }> {
  const ctx = await openService(config, true);
  try {
    const user = await ctx.service.mint({ clientId: 'agent', subject: 'alice', ttl: 3600 });
    const r = await ctx.service.exchangeAs(
      'agent',
      new URLSearchParams({ subject_token: user.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' }),
    );
    return { refresh: r.refresh_token as string, grantId: decodeJwt(r.access_token).grant_id as string, access: r.access_token };
  } finally {
    await ctx.close();
  }
}

async function serve(failpoint?: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--config', config, '--port', '0'], {
    env: { ...process.env, ...(failpoint ? { TESSERA_FAILPOINT: failpoint } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    // The "listening" log line (stdout) names the URL; a failure to start is on stderr.
    const read = (d: Buffer) => {
      buf += d.toString();
      const m = /"url":"([^"]+)"/.exec(buf);
      if (m) resolve(m[1] as string);
    };
    child.stdout?.on('data', read);
    child.stderr?.on('data', read);
    child.once('exit', (code) => reject(new Error(`serve exited early (${code}): ${buf}`)));
  });
  return { child, url };
}

const exited = (child: ChildProcess) =>
  new Promise<NodeJS.Signals | number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.signalCode ?? child.exitCode);
    else child.once('exit', (code, signal) => resolve(signal ?? code));
  });

const refresh = (url: string, token: string) =>
  fetch(`${url}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic('agent', secret) },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token }),
  });

describe('crash consistency', () => {
  it('a process killed inside the refresh rotation leaves the old state: the old token still works, exactly once', async () => {
    const f = await family();
    const crashing = await serve('refresh.rotate');
    await assert.rejects(refresh(crashing.url, f.refresh), 'the server dies mid-request');
    assert.equal(await exited(crashing.child), 'SIGKILL');

    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const old = await store.getRefreshToken(sha256(f.refresh));
    assert.equal(old?.rotatedAt, null, 'the rotation was rolled back');
    assert.equal(old?.revokedAt, null);
    assert.equal((await store.getGrant(f.grantId))?.revokedAt, null);
    await store.close();

    const restarted = await serve();
    try {
      const ok = await refresh(restarted.url, f.refresh);
      assert.equal(ok.status, 200);
      const next = ((await ok.json()) as { refresh_token: string }).refresh_token;
      assert.equal((await refresh(restarted.url, next)).status, 200, 'the new family member works');
      assert.equal((await refresh(restarted.url, f.refresh)).status, 400, 'and the old one is now a reuse');
    } finally {
      restarted.child.kill('SIGTERM');
      await exited(restarted.child);
    }
  });

  it('a process killed inside a revocation cascade revokes nothing; after a restart the cascade is complete', async () => {
    const f = await family();
    const ctx = await openService(config, true);
    let adminToken: string;
    let childGrant: string;
    try {
      adminToken = (await ctx.service.mint({ clientId: 'ops', audiences: [ctx.service.issuer] })).access_token;
      // A second level under the family's grant.
      const child = await ctx.service.exchangeAs(
        'agent',
        new URLSearchParams({ subject_token: f.access, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' }),
      );
      childGrant = decodeJwt(child.access_token).grant_id as string;
    } finally {
      await ctx.close();
    }
    const revoke = (url: string) =>
      fetch(`${url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
        body: JSON.stringify({ grant_id: f.grantId }),
      });

    const crashing = await serve('grants.revoke');
    await assert.rejects(revoke(crashing.url));
    assert.equal(await exited(crashing.child), 'SIGKILL');
    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    for (const id of [f.grantId, childGrant]) assert.equal((await store.getGrant(id))?.revokedAt, null);
    assert.equal((await store.getRefreshToken(sha256(f.refresh)))?.revokedAt, null);
    const logged = await store.revocationsSince(0, Math.floor(Date.now() / 1000));
    assert.equal(logged.filter((e) => e.value === f.grantId || e.value === childGrant).length, 0);
    await store.close();

    const restarted = await serve();
    try {
      const res = await revoke(restarted.url);
      assert.equal(res.status, 200);
      assert.deepEqual(((await res.json()) as { revoked_grants: string[] }).revoked_grants.sort(), [f.grantId, childGrant].sort());
      assert.equal((await refresh(restarted.url, f.refresh)).status, 400);
    } finally {
      restarted.child.kill('SIGTERM');
      await exited(restarted.child);
    }
  });
});
