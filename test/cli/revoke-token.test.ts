/**
 * `tessera revoke --token` against a running token service on the same SQLite file: a leaked
 * refresh token revokes its grant (the rotation family) with its subtree, as RFC 7009 would for its
 * client; the running service refuses it at the token endpoint and its verifier refuses the
 * family's access tokens. Never a token in any output or audit event.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { ACCESS_TOKEN_TYPE } from '../../src/issuer/service.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

let issuer: RunningIssuer;
let agent: { id: string; secret: string };
let config: string;

/** Run `tessera revoke` asynchronously (the token service in this process keeps serving). */
function revoke(input: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [MAIN, 'revoke', '--config', config, '--token', '-', ...args],
      { cwd: issuer.dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input);
  });
}

/** A user's token for the agent and one exchanged from it, each with a refresh token. */
async function family(subject: string) {
  const root = await issuer.service.mint({ clientId: 'agent', subject });
  const exchange = (token: string) =>
    issuer.service.exchangeAs('agent', new URLSearchParams({ subject_token: token, subject_token_type: ACCESS_TOKEN_TYPE }));
  const child = await exchange(root.access_token);
  const grandchild = await exchange(child.access_token);
  assert.ok(child.refresh_token);
  const grant = (t: { access_token: string }) => decodeJwt(t.access_token).grant_id as string;
  return { root, child: { ...child, refresh_token: child.refresh_token }, grandchild, grant };
}

const refresh = (refreshToken: string) =>
  issuer.post(
    '/oauth2/token',
    { grant_type: 'refresh_token', refresh_token: refreshToken },
    { authorization: basic(agent.id, agent.secret) },
  );

before(async () => {
  issuer = await startIssuer();
  config = join(issuer.dir, 'tessera.yaml');
  writeFileSync(config, `data_dir: .\ntoken_service: { issuer: "${issuer.url}" }\n`);
  agent = await issuer.addClient({
    id: 'agent',
    grantTypes: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange', 'refresh_token'],
  });
});

after(() => issuer?.close());

describe('tessera revoke --token: a refresh token', () => {
  it('attack: a leaked refresh token revokes its grant with its subtree: refused after at /oauth2/token (invalid_grant), its access tokens refused by the verifier; audited as admin.action naming the grant, never the token', async () => {
    const { root, child, grandchild, grant } = await family('kate');
    const verifier = inProcessVerifier(issuer);
    assert.equal((await verifier.verifyToken(child.access_token)).ok, true, 'valid before');

    const r = await revoke(child.refresh_token, '--reason', 'leaked in a ticket', '--json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { revoked_grants: string[] };
    assert.deepEqual(Object.keys(out), ['revoked_grants']);
    assert.deepEqual([...out.revoked_grants].sort(), [grant(child), grant(grandchild)].sort());

    const refused = await refresh(child.refresh_token);
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: string }).error, 'invalid_grant');
    await issuer.service.sync();
    for (const t of [child.access_token, grandchild.access_token]) {
      const v = await verifier.verifyToken(t);
      assert.equal(v.ok, false);
      assert.equal(!v.ok && v.error.code, 'token_revoked');
    }
    assert.equal((await verifier.verifyToken(root.access_token)).ok, true, 'the grant it was exchanged from is not its family');

    const events = await issuer.store.queryAudit({ limit: 10_000 });
    const text = JSON.stringify(events) + r.stdout + r.stderr;
    assert.equal(text.includes(child.refresh_token.slice(4)), false, 'the refresh token was written');
    const action = events.find((e) => e.kind === 'admin.action' && e.detail?.target === grant(child));
    assert.deepEqual(
      [action?.decision, action?.reason, action?.detail],
      [
        'allow',
        'ok',
        {
          by: 'cli',
          action: 'revoke',
          selector: 'token',
          token_type: 'refresh_token',
          target: grant(child),
          revoke_reason: 'leaked in a ticket',
          revoked: 2,
        },
      ],
    );
    assert.equal(events.find((e) => e.kind === 'grant.revoked' && e.delegation_id === grant(child))?.reason, 'leaked in a ticket');

    // Again, in text: its grant was revoked before, said as `--grant` says it.
    const again = await revoke(child.refresh_token);
    assert.equal(again.code, 0, again.stderr);
    assert.match(
      again.stdout,
      new RegExp(
        `^grant ${grant(child)} was already revoked at \\S+ \\(leaked in a ticket\\), with every grant derived from it; nothing more to revoke\\n$`,
      ),
    );
  });

  it('says in text which grants it revoked', async () => {
    const { child, grandchild, grant } = await family('liam');
    const r = await revoke(child.refresh_token);
    assert.equal(r.code, 0, r.stderr);
    const ids = r.stdout.match(/^revoked 2 grant\(s\): (\S+) (\S+)\n$/);
    assert.ok(ids, r.stdout);
    assert.deepEqual([ids[1], ids[2]].sort(), [grant(child), grant(grandchild)].sort());
  });

  it('a mistyped or unknown refresh token is refused (admin_not_found, exit 1) and revokes nothing', async () => {
    const { child } = await family('mia');
    for (const value of [`${child.refresh_token.slice(0, -2)}xx`, 'trt_unknown']) {
      const r = await revoke(value, '--json');
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'tessera: not a valid, unexpired access or refresh token of this issuer; nothing to revoke\n');
    }
    assert.equal((await refresh(child.refresh_token)).status, 200, 'nothing was revoked');
  });
});
