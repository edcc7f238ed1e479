/**
 * `tessera revoke`: what it refuses before touching the store (the revocations themselves run in
 * token-service-cli.test.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('tessera revoke: an empty value', () => {
  for (const option of ['--subject', '--client', '--issuer', '--grant', '--token']) {
    it(`${option} "" (an unset "$VAR" in a script) is refused naming it, not reported as "revoked 0 grant(s)" with exit 0`, () => {
      const args = option === '--issuer' ? ['--subject', 'alice', '--issuer', ''] : [option, ''];
      const r = spawnSync(process.execPath, [MAIN, 'revoke', ...args, '--json'], {
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: ${option} is empty; nothing was revoked\n`);
    });
  }
});

describe('tessera revoke --reason', () => {
  // Shaped as a JWS and as a refresh token; the reason is stored with the grants (revoked_reason),
  // shown by `tessera grants tree` and written into grant.revoked.
  for (const pasted of ['eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl', 'trt_AAAAAAAAAAAAAAAAAAAAAAAAAAAA']) {
    it(`attack: a reason holding a token (${pasted.slice(0, 4)}…) is refused naming --reason, before the store is touched`, () => {
      const r = spawnSync(process.execPath, [MAIN, 'revoke', '--grant', 'g1', '--reason', `oops ${pasted}`, '--json'], {
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'tessera: --reason holds a token; nothing was revoked\n');
    });
  }
});
