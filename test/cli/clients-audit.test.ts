/**
 * The operator's admin writes from the command line are on record, each the same way: `clients
 * add` names every bad flag at once, every write it makes carries `by: cli`, and every refusal is
 * one `admin.action` deny with a stable reason code (never the refused value when it is a token).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditKind } from '../../src/audit/event.ts';
import { initialize } from '../../src/cli/commands/init.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const TOKEN = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl';
let dir: string;

function tessera(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The audit events `run` wrote, of these kinds. */
async function audited(kinds: AuditKind[], run: () => void) {
  const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
  try {
    const before = (await store.queryAudit({ kinds, limit: 10_000 })).length;
    run();
    return (await store.queryAudit({ kinds, limit: 10_000 })).slice(before);
  } finally {
    await store.close();
  }
}

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-clients-audit-'));
  await initialize({ config: join(dir, 'tessera.yaml') });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('tessera clients add: every bad flag at once', () => {
  it('names each bad flag and value on its own line under one heading, exits 1, registers nothing and audits one admin.action deny', async () => {
    let r: ReturnType<typeof tessera> | undefined;
    const events = await audited(['admin.action', 'client.created'], () => {
      r = tessera(
        'clients',
        'add',
        'many-wrongs',
        '--audiences',
        'https://api.test',
        '--auth-method',
        'digest',
        '--ttl',
        'abc',
        '--grant-types',
        'password',
        'client-credentials',
        'implicit',
        '--scopes',
        'demo:read,nope',
        '--name',
        '   ',
      );
    });
    assert.ok(r);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      [
        'tessera: client "many-wrongs" not registered (6 problems):',
        '  --auth-method: "digest" is not a secret method; use basic, post',
        '  --ttl "abc" is not a lifetime; write seconds (300) or a duration (90s, 5m, 1h), at least 1s',
        '  --grant-types: grant type "password" is not supported; use client_credentials, authorization_code, refresh_token, token-exchange',
        '  --grant-types: grant type "implicit" is not supported; use client_credentials, authorization_code, refresh_token, token-exchange',
        '  --scopes: scope "nope" is not in the scope catalogue (scopes in tessera.yaml)',
        '  --name: a client name must be 1-100 characters, some of them visible, without control, line separator or bidirectional formatting characters or unpaired surrogates',
        '',
      ].join('\n'),
    );
    assert.equal(tessera('clients', 'show', 'many-wrongs').stderr, 'tessera: no client "many-wrongs"\n');
    assert.deepEqual(
      events.map((e) => [e.kind, e.decision, e.reason, e.detail]),
      [
        [
          'admin.action',
          'deny',
          'auth_method_conflict',
          {
            by: 'cli',
            action: 'client_add',
            target: 'many-wrongs',
            problems: 'auth_method_conflict ttl_invalid grant_type_unsupported grant_type_unsupported scope_unknown client_name_invalid',
          },
        ],
      ],
    );
  });

  it('a JWKS file it cannot read and a --ttl beyond max_access_token_ttl are two lines too', () => {
    const r = tessera(
      'clients',
      'add',
      'two-wrongs',
      '--audiences',
      'https://api.test',
      '--jwks',
      join(dir, 'missing.jwks'),
      '--ttl',
      '2h',
    );
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      [
        'tessera: client "two-wrongs" not registered (2 problems):',
        `  --jwks: cannot load a JWKS from ${join(dir, 'missing.jwks')}: no such file`,
        '  --ttl 7200s is longer than token_service.max_access_token_ttl (3600s); ask for at most 3600s',
        '',
      ].join('\n'),
    );
  });

  it('attack: a value holding a control character stays on its line (escaped), forging no line of its own', () => {
    const r = tessera('clients', 'add', 'evil\nforged: yes\x1b[2J', '--audiences', 'https://api.test/\x1b]0;t\x07', '--ttl', 'abc');
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!r.stderr.split('\n').some((l) => l.startsWith('forged')), r.stderr);
    assert.ok(![...r.stderr].some((c) => c < ' ' && c !== '\n'), r.stderr);
    assert.equal(r.stderr.split('\n').length, 5, r.stderr);
    assert.match(r.stderr, /^tessera: client "evil\\nforged: yes\\x1b\[2J" not registered \(3 problems\):\n/);
  });
});

describe('every CLI client write carries by: cli', () => {
  it('client.created, client.updated (disable, enable, update) and client.removed, and the grants disable revokes', async () => {
    const events = await audited(['client.created', 'client.updated', 'client.removed'], () => {
      assert.equal(tessera('clients', 'add', 'by-cli', '--audiences', 'https://api.test').code, 0);
      assert.equal(tessera('clients', 'disable', 'by-cli').code, 0);
      assert.equal(tessera('clients', 'enable', 'by-cli').code, 0);
      assert.equal(tessera('clients', 'update', 'by-cli', '--allow-retarget').code, 0);
      assert.equal(tessera('clients', 'remove', 'by-cli').code, 0);
    });
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason, e.client_id, (e.detail as { by?: string } | undefined)?.by]),
      [
        ['client.created', 'ok', 'by-cli', 'cli'],
        ['client.updated', 'disabled', 'by-cli', 'cli'],
        ['client.updated', 'enabled', 'by-cli', 'cli'],
        ['client.updated', 'updated', 'by-cli', 'cli'],
        ['client.removed', 'ok', 'by-cli', 'cli'],
      ],
    );
  });
});

describe('a CLI client write that changes nothing writes no event', () => {
  it('clients disable of a client already disabled (and enable of one enabled): exit 0, says so, no client.updated', async () => {
    assert.equal(tessera('clients', 'add', 'twice', '--audiences', 'https://api.test').code, 0);
    assert.equal(tessera('clients', 'disable', 'twice').code, 0);
    let again: ReturnType<typeof tessera> | undefined;
    let json: ReturnType<typeof tessera> | undefined;
    const repeated = await audited(['client.updated', 'admin.action', 'grant.revoked'], () => {
      again = tessera('clients', 'disable', 'twice');
      json = tessera('clients', 'disable', 'twice', '--json');
    });
    assert.ok(again && json);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'client twice already disabled; 0 grant(s) revoked\n');
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { client_id: 'twice', disabled: true, changed: false, revoked_grants: [] });
    assert.deepEqual(repeated, []);

    let enabled: ReturnType<typeof tessera> | undefined;
    const events = await audited(['client.updated', 'admin.action'], () => {
      assert.equal(tessera('clients', 'enable', 'twice').code, 0);
      enabled = tessera('clients', 'enable', 'twice');
    });
    assert.ok(enabled);
    assert.equal(enabled.code, 0, enabled.stderr);
    assert.equal(enabled.stdout, 'client twice already enabled\n');
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason, e.client_id]),
      [['client.updated', 'enabled', 'twice']],
    );
  });
});

describe('every CLI token write carries by: cli', () => {
  it('token mint: its token.issued (for the client, and for a --subject) carries by: cli', async () => {
    const events = await audited(['token.issued'], () => {
      assert.equal(tessera('token', 'mint', '--client', 'demo-agent').code, 0);
      assert.equal(tessera('token', 'mint', '--client', 'demo-agent', '--subject', 'alice').code, 0);
    });
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason, e.subject, (e.detail as { by?: string } | undefined)?.by]),
      [
        ['token.issued', 'mint', 'demo-agent', 'cli'],
        ['token.issued', 'mint', 'alice', 'cli'],
      ],
    );
  });
});

describe('a refused CLI admin write is one admin.action deny', () => {
  for (const [what, args, reason, detail, line] of [
    [
      'clients disable of an unknown client',
      ['clients', 'disable', 'nope'],
      'admin_not_found',
      { action: 'client_disable', target: 'nope' },
      'no client "nope"',
    ],
    [
      'clients enable of an unknown client',
      ['clients', 'enable', 'nope'],
      'admin_not_found',
      { action: 'client_enable', target: 'nope' },
      'no client "nope"',
    ],
    [
      'clients remove of an unknown client',
      ['clients', 'remove', 'nope'],
      'admin_not_found',
      { action: 'client_remove', target: 'nope' },
      'no client "nope"',
    ],
    [
      'clients update of an unknown client',
      ['clients', 'update', 'nope', '--allow-retarget'],
      'admin_not_found',
      { action: 'client_update', target: 'nope' },
      'no client "nope"',
    ],
    [
      'clients update with an origin that is no origin',
      ['clients', 'update', 'demo-agent', '--allowed-origins', 'https://app.test/path'],
      'allowed_origin_invalid',
      { action: 'client_update', target: 'demo-agent' },
      undefined,
    ],
    [
      'attack: clients disable of a pasted token (the token is never recorded)',
      ['clients', 'disable', TOKEN],
      'admin_not_found',
      { action: 'client_disable', target: '*' },
      undefined,
    ],
    [
      'attack: revoke --reason holding a token (the token is never recorded)',
      ['revoke', '--grant', 'g1', '--reason', `oops ${TOKEN}`],
      'admin_revoke_reason_token',
      { action: 'revoke', selector: 'grant_id', target: 'g1' },
      '--reason holds a token; nothing was revoked',
    ],
    [
      'revoke naming two targets',
      ['revoke', '--grant', 'g1', '--client', 'c1'],
      'admin_revoke_selector_invalid',
      { action: 'revoke' },
      'give exactly one of --token, --grant, --subject, --client',
    ],
    [
      'revoke --subject "" (an unset "$VAR")',
      ['revoke', '--subject', ''],
      'admin_revoke_member_invalid',
      { action: 'revoke' },
      '--subject is empty; nothing was revoked',
    ],
    [
      'revoke --issuer without --subject',
      ['revoke', '--client', 'c1', '--issuer', 'https://idp.test'],
      'admin_revoke_issuer_without_subject',
      { action: 'revoke', selector: 'client_id', target: 'c1' },
      '--issuer goes with --subject',
    ],
    ['keys rotate --alg unknown', ['keys', 'rotate', '--alg', 'HS256'], 'key_algorithm_unsupported', { action: 'key_rotate' }, undefined],
    [
      'token mint for an unknown client',
      ['token', 'mint', '--client', 'nope'],
      'client_unknown',
      { action: 'token_mint', target: 'nope' },
      'no client "nope"',
    ],
    [
      'token mint --subject "" (an unset "$VAR"), refused before the store is read',
      ['token', 'mint', '--client', 'demo-agent', '--subject', ''],
      'request_parameter_invalid',
      { action: 'token_mint', target: 'demo-agent' },
      '--subject is empty; name the subject to mint for (--subject alice), or leave it out to mint for the client',
    ],
    [
      'token mint --subject that no login path would accept',
      ['token', 'mint', '--client', 'demo-agent', '--subject', 'al ice'],
      'request_parameter_invalid',
      { action: 'token_mint', target: 'demo-agent' },
      undefined,
    ],
    [
      'token mint --ttl that is no lifetime',
      ['token', 'mint', '--client', 'demo-agent', '--ttl', 'abc'],
      'ttl_invalid',
      { action: 'token_mint', target: 'demo-agent' },
      '--ttl "abc" is not a lifetime; write seconds (300) or a duration (90s, 5m, 1h), at least 1s',
    ],
    [
      'token mint --ttl beyond max_access_token_ttl',
      ['token', 'mint', '--client', 'demo-agent', '--ttl', '2h'],
      'ttl_invalid',
      { action: 'token_mint', target: 'demo-agent' },
      '--ttl 7200s is longer than token_service.max_access_token_ttl (3600s); ask for at most 3600s',
    ],
    [
      'attack: token mint --subject holding a pasted token (the token is never recorded)',
      ['token', 'mint', '--client', 'demo-agent', '--subject', `${TOKEN} x`],
      'request_parameter_invalid',
      { action: 'token_mint', target: 'demo-agent' },
      undefined,
    ],
    [
      'attack: token exchange of a pasted token for an unknown client (the token is never recorded)',
      ['token', 'exchange', '--client', 'nope', '--subject-token', TOKEN],
      'client_unknown',
      { action: 'token_exchange', target: 'nope' },
      'no client "nope"',
    ],
  ] as const) {
    it(`${what}: exit 1, one line, and one admin.action deny ${reason} by cli`, async () => {
      let r: ReturnType<typeof tessera> | undefined;
      const events = await audited(['admin.action', 'client.updated', 'client.removed', 'grant.revoked'], () => {
        r = tessera(...args);
      });
      assert.ok(r);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.split('\n').length, 2, r.stderr);
      if (line !== undefined) assert.equal(r.stderr, `tessera: ${line}\n`);
      assert.deepEqual(
        events.map((e) => [e.kind, e.decision, e.reason, e.subject, e.detail]),
        [['admin.action', 'deny', reason, undefined, { by: 'cli', ...detail }]],
      );
      assert.doesNotMatch(JSON.stringify(events), /eyJhbGciOiJFUzI1NiJ9/);
    });
  }

  it('keys rotate while a key is pending: one admin.action deny key_pending, and no key.rotated', async () => {
    assert.equal(tessera('keys', 'rotate').code, 0);
    let r: ReturnType<typeof tessera> | undefined;
    const events = await audited(['admin.action', 'key.rotated'], () => {
      r = tessera('keys', 'rotate');
    });
    assert.ok(r);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^tessera: key \S+ is already pending/);
    assert.deepEqual(
      events.map((e) => [e.kind, e.decision, e.reason, e.detail]),
      [['admin.action', 'deny', 'key_pending', { by: 'cli', action: 'key_rotate' }]],
    );
  });

  it('a refusal where no store exists yet is still reported as itself (there is nothing to write it to)', () => {
    const revoke = spawnSync(process.execPath, [MAIN, 'revoke', '--grant', 'g1', '--reason', `oops ${TOKEN}`], {
      cwd: tmpdir(),
      encoding: 'utf8',
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
    assert.equal(revoke.status, 1, revoke.stderr);
    assert.equal(revoke.stderr, 'tessera: --reason holds a token; nothing was revoked\n');
  });
});
