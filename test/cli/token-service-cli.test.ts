/**
 * The operator commands, run as a user runs them: `tessera init`, `clients`, `keys`, `token
 * mint|exchange`, `revoke`, `grants tree`; `--json` output, one-line failures, non-zero exits.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { cliDirs, runTessera } from '../helpers/cli.ts';

const dirs = cliDirs('tessera-cli-');
/** This test's directory: `tessera init` ran in it (and what {@link given} named). */
let dir: string;
/** This test's directory is one where `tessera init` ran, then the commands of `setup`. */
const given = (...setup: string[][]) => {
  dir = dirs.fresh(...setup);
};
beforeEach(() => given());

/** The client most tests mint for and exchange with. */
const AGENT = [
  'clients',
  'add',
  'agent',
  '--scopes',
  'demo:read',
  '--audiences',
  'https://api.test',
  '--grant-types',
  'client_credentials,token-exchange,refresh_token',
  '--ttl',
  '5m',
];
/** A client allowed to re-target exchanged tokens. */
const RETARGETER = [
  'clients',
  'add',
  'retargeter',
  '--audiences',
  'https://api.test',
  '--grant-types',
  'token-exchange',
  '--allow-retarget',
];
/** A DPoP-bound client. */
const DPOP_AGENT = ['clients', 'add', 'dpop-agent', '--audiences', 'https://api.test', '--dpop-bound'];
/** A client without allowed origins. */
const NO_ORIGINS = ['clients', 'add', 'no-origins', '--scopes', 'demo:read', '--audiences', 'https://api.test'];

const tessera = (...args: string[]) => runTessera(dir, args);
/** `tessera ...args` with `input` on its stdin. */
const piped = (input: string, ...args: string[]) => runTessera(dir, args, { input });
const json = (...args: string[]) => {
  const r = tessera(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown> & Record<string, unknown>[];
};

describe('tessera init', () => {
  it('creates the config, an owner-only data directory and master key, a signing key and a demo client', () => {
    const empty = mkdtempSync(join(tmpdir(), 'tessera-cli-init-'));
    try {
      const r = runTessera(empty, ['init']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Demo client "demo-agent"/);
      assert.match(r.stdout, /tcs_[A-Za-z0-9_-]{43}/);
      assert.ok(existsSync(join(empty, 'tessera.yaml')));
      assert.equal(statSync(join(empty, '.tessera')).mode & 0o777, 0o700);
      assert.equal(statSync(join(empty, '.tessera', 'master.key')).mode & 0o777, 0o600);
      assert.equal(statSync(join(empty, '.tessera', 'tessera.db')).mode & 0o777, 0o600);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('is idempotent: a second run creates nothing and prints no secret', () => {
    const r = json('init');
    assert.equal(r.config_written, false);
    assert.equal((r.signing_key as { created: boolean }).created, false);
    assert.equal((r.demo_client as { created: boolean; client_secret?: string }).client_secret, undefined);
  });

  it('refuses a master key that is a symlink (another user could point it elsewhere)', () => {
    const file = join(dir, '.tessera', 'master.key');
    const real = join(dir, 'real-master.key');
    renameSync(file, real);
    symlinkSync(real, file);
    try {
      const r = tessera('keys', 'rotate');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^tessera: .*master\.key must be a regular file, not a symlink/);
    } finally {
      rmSync(file);
      renameSync(real, file);
    }
  });

  it('refuses a master key readable by others', () => {
    const file = join(dir, '.tessera', 'master.key');
    chmodSync(file, 0o644);
    const r = tessera('keys', 'rotate');
    chmodSync(file, 0o600);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^tessera: .*readable by others.*chmod 600/);
  });
});

describe('clients', () => {
  it('adds a client and prints its secret exactly once', () => {
    const r = tessera(...AGENT);
    assert.equal(r.code, 0, r.stderr);
    const secret = /tcs_[A-Za-z0-9_-]{43}/.exec(r.stdout)?.[0];
    assert.ok(secret);
    const shown = tessera('clients', 'show', 'agent', '--json');
    const listed = tessera('clients', 'list', '--json');
    assert.equal(shown.stdout.includes(secret as string) || listed.stdout.includes(secret as string), false);
    const c = JSON.parse(shown.stdout) as Record<string, unknown>;
    assert.equal(c.access_token_ttl, 300);
    assert.deepEqual(c.grant_types, ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange', 'refresh_token']);
    assert.equal(c.exchange_retarget_audiences, false, 'an exchange only narrows the audience by default');
  });

  it('registers a client allowed to re-target exchanged tokens with --allow-retarget, and shows it', () => {
    const c = json(...RETARGETER);
    assert.equal(c.exchange_retarget_audiences, true);
    assert.equal(
      (JSON.parse(tessera('clients', 'show', 'retargeter', '--json').stdout) as Record<string, unknown>).exchange_retarget_audiences,
      true,
    );
  });

  it('changes re-targeting after registration with clients update, both ways, auditing each change', () => {
    given(RETARGETER);
    const off = json('clients', 'update', 'retargeter', '--no-allow-retarget');
    assert.equal(off.exchange_retarget_audiences, false);
    assert.deepEqual(off.changed, ['exchange_retarget_audiences']);
    assert.equal((json('clients', 'show', 'retargeter') as Record<string, unknown>).exchange_retarget_audiences, false);
    const again = tessera('clients', 'update', 'retargeter', '--no-allow-retarget');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'client retargeter unchanged: exchange_retarget_audiences=false already\n');
    const on = tessera('clients', 'update', 'retargeter', '--allow-retarget');
    assert.equal(on.code, 0, on.stderr);
    assert.equal(on.stdout, 'client retargeter updated: exchange_retarget_audiences=true\n');
    assert.equal((json('clients', 'show', 'retargeter') as Record<string, unknown>).exchange_retarget_audiences, true);
    const updates = (
      json('audit', 'query', '--client', 'retargeter') as unknown as { kind: string; reason: string; detail?: unknown }[]
    ).filter((e) => e.kind === 'client.updated');
    assert.deepEqual(
      updates.map((e) => [e.reason, e.detail]),
      [
        ['updated', { exchange_retarget_audiences: false, by: 'cli' }],
        ['updated', { exchange_retarget_audiences: true, by: 'cli' }],
      ],
      'one event per change, none for the no-op',
    );
  });

  it('refuses clients update with one line and exit 1: unknown client, both flags, no flag', () => {
    given(RETARGETER);
    for (const [args, message] of [
      [['clients', 'update', 'nobody', '--allow-retarget'], 'no client "nobody"'],
      [
        ['clients', 'update', 'retargeter', '--allow-retarget', '--no-allow-retarget'],
        'give --allow-retarget or --no-allow-retarget, not both',
      ],
      [
        ['clients', 'update', 'retargeter', '--no-allow-retarget', '--allow-retarget'],
        'give --allow-retarget or --no-allow-retarget, not both',
      ],
      [
        ['clients', 'update', 'retargeter'],
        'nothing to update: give --allow-retarget, --no-allow-retarget, --dpop-bound, --no-dpop-bound, --allowed-origins or --clear-allowed-origins',
      ],
      [
        ['clients', 'update', 'retargeter', '--allowed-origins', 'https://a.test', '--clear-allowed-origins'],
        'give --allowed-origins or --clear-allowed-origins, not both',
      ],
    ] as const) {
      const r = tessera(...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stderr, `tessera: ${message}\n`);
      assert.equal(r.stdout, '');
    }
    assert.equal((json('clients', 'show', 'retargeter') as Record<string, unknown>).exchange_retarget_audiences, true, 'left as it was');
  });

  it('registers a DPoP-bound client with --dpop-bound (RFC 9449 dpop_bound_access_tokens), shows it in show, list and --json; others are not bound', () => {
    given(RETARGETER);
    const c = json(...DPOP_AGENT);
    assert.equal(c.dpop_bound_access_tokens, true);
    assert.equal((json('clients', 'show', 'dpop-agent') as Record<string, unknown>).dpop_bound_access_tokens, true);
    assert.equal((json('clients', 'show', 'retargeter') as Record<string, unknown>).dpop_bound_access_tokens, false, 'off by default');
    const listed = json('clients', 'list') as unknown as { client_id: string; dpop_bound_access_tokens: boolean }[];
    assert.equal(listed.find((x) => x.client_id === 'dpop-agent')?.dpop_bound_access_tokens, true);
    assert.equal(listed.find((x) => x.client_id === 'retargeter')?.dpop_bound_access_tokens, false);
    const plain = tessera('clients', 'add', 'dpop-agent-2', '--audiences', 'https://api.test', '--dpop-bound');
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(
      plain.stdout,
      /^client dpop-agent-2 registered \(client_secret_basic, client_secret_post, DPoP-bound: every token request needs a DPoP proof\)$/m,
    );
    const ordinary = tessera('clients', 'add', 'not-bound', '--audiences', 'https://api.test');
    assert.match(ordinary.stdout, /^client not-bound registered \(client_secret_basic, client_secret_post\)$/m);
    const shown = tessera('clients', 'show', 'dpop-agent');
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^dpop_bound_access_tokens +true$/m);
    const list = tessera('clients', 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^dpop-agent .* dpop_bound_access_tokens=true$/m);
    assert.doesNotMatch(list.stdout, /^retargeter .*dpop_bound/m);
    const added = (
      json('audit', 'query', '--client', 'dpop-agent') as unknown as { kind: string; detail?: Record<string, unknown> }[]
    ).find((e) => e.kind === 'client.created');
    assert.equal(added?.detail?.dpop_bound_access_tokens, true);
  });

  it('changes the DPoP binding after registration with clients update --dpop-bound / --no-dpop-bound, auditing each change, and refuses both at once', () => {
    given(DPOP_AGENT);
    const off = json('clients', 'update', 'dpop-agent', '--no-dpop-bound');
    assert.equal(off.dpop_bound_access_tokens, false);
    assert.deepEqual(off.changed, ['dpop_bound_access_tokens']);
    const again = tessera('clients', 'update', 'dpop-agent', '--no-dpop-bound');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'client dpop-agent unchanged: dpop_bound_access_tokens=false already\n');
    const on = tessera('clients', 'update', 'dpop-agent', '--dpop-bound');
    assert.equal(on.code, 0, on.stderr);
    assert.equal(on.stdout, 'client dpop-agent updated: dpop_bound_access_tokens=true\n');
    assert.equal((json('clients', 'show', 'dpop-agent') as Record<string, unknown>).dpop_bound_access_tokens, true);
    const updates = (
      json('audit', 'query', '--client', 'dpop-agent') as unknown as { kind: string; reason: string; detail?: unknown }[]
    ).filter((e) => e.kind === 'client.updated');
    assert.deepEqual(
      updates.map((e) => [e.reason, e.detail]),
      [
        ['updated', { dpop_bound_access_tokens: false, by: 'cli' }],
        ['updated', { dpop_bound_access_tokens: true, by: 'cli' }],
      ],
    );
    for (const args of [
      ['clients', 'update', 'dpop-agent', '--dpop-bound', '--no-dpop-bound'],
      ['clients', 'update', 'dpop-agent', '--no-dpop-bound', '--dpop-bound'],
    ]) {
      const r = tessera(...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stderr, 'tessera: give --dpop-bound or --no-dpop-bound, not both\n');
      assert.equal(r.stdout, '');
    }
    assert.equal((json('clients', 'show', 'dpop-agent') as Record<string, unknown>).dpop_bound_access_tokens, true, 'left as it was');
  });

  it('registers a client’s allowed origins with --allowed-origins, shows them, replaces and clears them with clients update', () => {
    const c = json(
      'clients',
      'add',
      'spa',
      '--public',
      '--redirect-uris',
      'https://spa.test/cb',
      '--audiences',
      'https://api.test',
      '--allowed-origins',
      'https://spa.test,http://localhost:5173',
    );
    assert.deepEqual(c.allowed_origins, ['https://spa.test', 'http://localhost:5173']);
    assert.deepEqual((json('clients', 'show', 'spa') as Record<string, unknown>).allowed_origins, [
      'https://spa.test',
      'http://localhost:5173',
    ]);
    const plain = json(...NO_ORIGINS);
    assert.deepEqual(plain.allowed_origins, []);
    const updated = json('clients', 'update', 'spa', '--allowed-origins', 'https://app.spa.test') as Record<string, unknown>;
    assert.deepEqual(updated.allowed_origins, ['https://app.spa.test']);
    assert.deepEqual(updated.changed, ['allowed_origins']);
    const cleared = json('clients', 'update', 'spa', '--clear-allowed-origins') as Record<string, unknown>;
    assert.deepEqual(cleared.allowed_origins, []);
    assert.deepEqual((json('clients', 'show', 'spa') as Record<string, unknown>).allowed_origins, []);
  });

  it('refuses an allowed origin that is no origin as browsers send it (a path, a wildcard, plain http off loopback): one line naming the flag, nothing registered or changed', () => {
    given(NO_ORIGINS);
    for (const origin of ['https://spa.test/', 'https://*.spa.test', 'http://spa.test', 'https://user:pw@spa.test']) {
      const r = tessera(
        'clients',
        'add',
        'bad-origin',
        '--scopes',
        'demo:read',
        '--audiences',
        'https://api.test',
        '--allowed-origins',
        origin,
      );
      assert.equal(r.code, 1, origin);
      assert.match(r.stderr, /^tessera: --allowed-origins: /, origin);
      assert.equal(r.stderr.includes('pw'), false, 'a password is not echoed');
      assert.equal(r.stdout, '');
      const u = tessera('clients', 'update', 'no-origins', '--allowed-origins', origin);
      assert.equal(u.code, 1, origin);
      assert.match(u.stderr, /^tessera: --allowed-origins: /, origin);
    }
    assert.equal(tessera('clients', 'show', 'bad-origin').code, 1);
    assert.deepEqual((json('clients', 'show', 'no-origins') as Record<string, unknown>).allowed_origins, []);
  });

  it('registers a secret client for one secret method with --auth-method basic|post, shown as that method; without it, both', () => {
    for (const [flag, method] of [
      ['basic', 'client_secret_basic'],
      ['post', 'client_secret_post'],
    ] as const) {
      const c = json('clients', 'add', `only-${flag}`, '--scopes', 'demo:read', '--audiences', 'https://api.test', '--auth-method', flag);
      assert.equal(c.auth_method, method);
      assert.match(c.client_secret as string, /^tcs_/);
      assert.equal((json('clients', 'show', `only-${flag}`) as Record<string, unknown>).auth_method, method);
    }
    const either = json('clients', 'add', 'either-way', '--scopes', 'demo:read', '--audiences', 'https://api.test');
    assert.equal(either.auth_method, 'client_secret_basic, client_secret_post');
  });

  it('refuses --auth-method for a client without a secret, or a method it does not know: one line, nothing registered', () => {
    for (const [args, message] of [
      [
        ['--public', '--redirect-uris', 'https://app.test/cb', '--auth-method', 'post'],
        '--auth-method: only a secret client has a secret method; drop it, or --public/--jwks/--jwks-uri',
      ],
      [
        ['--jwks-uri', 'https://keys.test/jwks', '--auth-method', 'basic'],
        '--auth-method: only a secret client has a secret method; drop it, or --public/--jwks/--jwks-uri',
      ],
    ] as const) {
      const r = tessera('clients', 'add', 'wrong-method', '--scopes', 'demo:read', '--audiences', 'https://api.test', ...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stderr, `tessera: ${message}\n`);
      assert.equal(r.stdout, '');
    }
    const r = tessera(
      'clients',
      'add',
      'wrong-method',
      '--scopes',
      'demo:read',
      '--audiences',
      'https://api.test',
      '--auth-method',
      'client_secret_jwt',
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--auth-method/);
    assert.match(r.stderr, /basic, post/);
    assert.equal(tessera('clients', 'show', 'wrong-method').stderr, 'tessera: no client "wrong-method"\n', 'nothing registered');
  });

  it('registers a private_key_jwt client from a JWKS file, without a secret', () => {
    const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    writeFileSync(join(dir, 'wk.json'), JSON.stringify({ keys: [{ ...jwk, kid: 'wk' }] }));
    const c = json('clients', 'add', 'workload', '--scopes', 'demo:read', '--audiences', 'https://api.test', '--jwks', 'wk.json');
    assert.equal(c.auth_method, 'private_key_jwt');
    assert.equal(c.client_secret, undefined);
  });

  it('refuses a --jwks file that names a member twice (two x in a key, two keys arrays): one line naming the file, nothing registered', () => {
    const mine = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as { x: string };
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const key = JSON.stringify({ ...mine, kid: 'wk' });
    // JSON.parse keeps the last of each; another JOSE library given the same file may keep the first.
    for (const text of [
      key.replace('"x":', `"x":"${(other as { x: string }).x}","x":`),
      `{"keys":[${JSON.stringify({ ...other, kid: 'wk' })}],"keys":[${key}]}`,
    ]) {
      writeFileSync(join(dir, 'twice.json'), text.startsWith('{"keys"') ? text : `{"keys":[${text}]}`);
      const r = tessera('clients', 'add', 'twice', '--scopes', 'demo:read', '--audiences', 'https://api.test', '--jwks', 'twice.json');
      assert.equal(r.code, 1, text);
      assert.equal(
        r.stderr,
        'tessera: --jwks: cannot load a JWKS from twice.json: a member name is repeated in one object (write each member once)\n',
      );
      assert.equal(r.stdout, '');
    }
    assert.equal(tessera('clients', 'show', 'twice').stderr, 'tessera: no client "twice"\n', 'nothing registered');
  });

  it('refuses a --jwks file with a kid repeated for one algorithm: one line naming the kid, nothing registered', () => {
    const key = (kid: string) => ({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), kid });
    writeFileSync(join(dir, 'dup.json'), JSON.stringify({ keys: [key('wk'), key('rotated'), key('rotated')] }));
    const r = tessera('clients', 'add', 'dup-kid', '--scopes', 'demo:read', '--audiences', 'https://api.test', '--jwks', 'dup.json');
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      'tessera: --jwks: JWKS keys 1 and 2 both have kid "rotated" for ES256: an assertion naming it could not tell which of them signed it; give each key its own kid\n',
    );
    assert.equal(r.stdout, '');
    assert.equal(tessera('clients', 'show', 'dup-kid').stderr, 'tessera: no client "dup-kid"\n', 'nothing registered');
  });

  it('registers a public client with redirect URIs and a name: no secret, authorization_code and refresh_token', () => {
    const c = json(
      'clients',
      'add',
      'mcp-desktop',
      '--public',
      '--name',
      'MCP Desktop',
      '--scopes',
      'demo:read',
      '--audiences',
      'https://api.test',
      '--redirect-uris',
      'http://127.0.0.1:33418/callback',
      'https://app.test/cb',
    );
    assert.equal(c.auth_method, 'none (public)');
    assert.equal(c.client_secret, undefined);
    assert.equal(c.name, 'MCP Desktop');
    assert.deepEqual(c.grant_types, ['authorization_code', 'refresh_token']);
    assert.deepEqual(c.redirect_uris, ['http://127.0.0.1:33418/callback', 'https://app.test/cb']);
    const confidential = json(
      'clients',
      'add',
      'web-app',
      '--scopes',
      'demo:read',
      '--audiences',
      'https://api.test',
      '--grant-types',
      'authorization-code',
      'refresh-token',
      '--redirect-uris',
      'https://web.test/cb',
    );
    assert.match(String(confidential.client_secret), /^tcs_/);
  });

  it('fails with one line and exit 1 on a bad registration', () => {
    given(AGENT);
    for (const args of [
      ['clients', 'add', 'agent', '--audiences', 'https://api.test'],
      ['clients', 'add', 'bad name', '--audiences', 'https://api.test'],
      ['clients', 'add', 'x', '--scopes', 'not-in-catalogue', '--audiences', 'https://api.test'],
      ['clients', 'add', 'y', '--audiences', 'https://api.test', '--grant-types', 'password'],
      ['clients', 'add', 'p1', '--public', '--audiences', 'https://api.test', '--grant-types', 'client_credentials'],
      ['clients', 'add', 'p2', '--public', '--audiences', 'https://api.test', '--redirect-uris', 'http://evil.test/cb'],
      ['clients', 'add', 'p3', '--public', '--audiences', 'https://api.test'],
      ['clients', 'show', 'nobody'],
      ['clients', 'add', 'z1', '--audiences', 'https://api.test\x1b[31m'],
      ['clients', 'add', 'z2', '--audiences', 'https://api.test/\x7f'],
    ]) {
      const r = tessera(...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, /^tessera: [^\n]+\n$/);
    }
    for (const args of [
      ['token', 'mint', '--client', 'nobody'],
      ['token', 'exchange', '--client', 'nobody', '--subject-token', 'x.y.z'],
    ]) {
      const r = tessera(...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stderr, 'tessera: no client "nobody"\n', args.join(' '));
    }
  });

  it('refuses a client id with a newline or an escape sequence in one line, never echoing the control characters (a forged line, a rewritten screen)', () => {
    for (const args of [
      ['clients', 'add', 'a\nforged: line', '--audiences', 'https://api.test'],
      ['clients', 'add', 'a\x1b[2Jb', '--audiences', 'https://api.test'],
      ['clients', 'show', 'a\nforged: line'],
      ['clients', 'disable', 'x\x1b]0;title\x07'],
      ['grants', 'tree', 'g\r\nforged'],
    ]) {
      const r = tessera(...args);
      assert.equal(r.code, 1, JSON.stringify(args));
      assert.match(r.stderr, /^tessera: [^\n]+\n$/, JSON.stringify(args));
      // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not be printed
      assert.doesNotMatch(r.stderr, /[\x00-\x09\x0b-\x1f\x7f]/, JSON.stringify(args));
    }
    const r = tessera('clients', 'show', 'a\nforged: line');
    assert.equal(r.stderr, 'tessera: no client "a\\nforged: line"\n');
  });

  it('disables (revoking live grants), enables and removes a client', () => {
    given(AGENT);
    const minted = json('token', 'mint', '--client', 'agent');
    assert.ok(minted.grant_id);
    const d = json('clients', 'disable', 'agent');
    assert.deepEqual(d.revoked_grants, [minted.grant_id]);
    const refused = tessera('token', 'mint', '--client', 'agent');
    assert.equal(refused.code, 1);
    // The operator authenticated nothing: not the token endpoint's "Client authentication failed."
    assert.equal(refused.stderr, 'tessera: client "agent" is disabled; enable it with `tessera clients enable agent`\n');
    json('clients', 'enable', 'agent');
    assert.equal(tessera('token', 'mint', '--client', 'agent').code, 0);
  });
});

describe('keys', () => {
  it('lists keys and rotates with pre-publication; a second pending key needs --now', () => {
    const before = json('keys', 'list');
    assert.equal(before.length, 1);
    assert.equal((before[0] as { state: string }).state, 'active');
    const rotated = json('keys', 'rotate');
    assert.equal(rotated.state, 'pending');
    const again = tessera('keys', 'rotate');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already pending/);
    // --now adds a key that signs at once; it does not replace the pending one, and says so.
    assert.match(again.stderr, new RegExp(`with --now \\(${rotated.kid} still takes over from `));
    // A --now key activating in the same second as the signing key takes over from it all the same:
    // keys activating in one second are ordered by when they were added (created_at, then the
    // store's sequence), not by kid, so no wait for the next second is needed here or below.
    const now = json('keys', 'rotate', '--now', '--alg', 'EdDSA');
    assert.equal(now.state, 'active');
    assert.equal(now.alg, 'EdDSA');
    assert.equal(
      (json('keys', 'list') as unknown as { kid: string; state: string }[]).find((k) => k.kid === rotated.kid)?.state,
      'pending',
    );
    const text = tessera('keys', 'rotate', '--now');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`signing now; key ${rotated.kid} is still pending and takes over from `));
    // Two rotations --now, most likely in the same second: the later one signs, whatever the kids
    // (once ordered by kid, when this test failed whenever the later kid sorted first).
    const later = /key (\S+): published now, signing now/.exec(text.stdout)?.[1];
    const listed = json('keys', 'list') as unknown as { kid: string; state: string }[];
    assert.deepEqual([listed.find((k) => k.kid === now.kid)?.state, listed.find((k) => k.kid === later)?.state], ['retired', 'active']);
    const out = tessera('keys', 'list');
    assert.doesNotMatch(out.stdout, /"d"|sealed|PRIVATE/);
  });
});

describe('keys rotate is on record', () => {
  it('audits every tessera keys rotate as one key.rotated event (reason operator, by cli, the new kid and whether it signs at once); a refused one writes nothing', async () => {
    given(['keys', 'rotate']);
    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const rotations = () => store.queryAudit({ kinds: ['key.rotated'], limit: 10_000 });
    try {
      const before = (await rotations()).length;
      // A key is pending: a rotation without --now is refused.
      const refused = tessera('keys', 'rotate');
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /already pending/);
      const now = json('keys', 'rotate', '--now');
      const after = (await rotations()).slice(before);
      assert.deepEqual(
        after.map((e) => [e.decision, e.reason, e.detail]),
        [['allow', 'operator', { by: 'cli', kid: now.kid, alg: now.alg, immediate: true }]],
      );
    } finally {
      await store.close();
    }
  });
});

describe('tokens, revocation and grant trees', () => {
  it('mints for a subject, exchanges, shows the tree, revokes the subtree', () => {
    given(AGENT);
    // The user's token is issued to the agent (client_id), which may then exchange it.
    const user = json('token', 'mint', '--client', 'agent', '--subject', 'alice');
    const ex = json('token', 'exchange', '--client', 'agent', '--subject-token', user.access_token as string, '--scope', 'demo:read');
    const claims = decodeJwt(ex.access_token as string);
    assert.equal(claims.sub, 'alice');
    assert.deepEqual(claims.act, { sub: 'agent' });
    const tree = json('grants', 'tree', user.grant_id as string);
    assert.deepEqual(
      (tree.subtree as unknown as { id: string }[]).map((g) => g.id),
      [user.grant_id, claims.grant_id],
    );
    const text = tessera('grants', 'tree', user.grant_id as string);
    assert.match(text.stdout, /alice → agent via agent/);
    const revoked = json('revoke', '--grant', user.grant_id as string);
    assert.deepEqual((revoked.revoked_grants as string[]).sort(), [user.grant_id, claims.grant_id].sort());
    assert.match(tessera('grants', 'tree', user.grant_id as string).stdout, /REVOKED/);
    const failed = tessera('token', 'exchange', '--client', 'agent', '--subject-token', ex.access_token as string);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /^tessera: invalid_request: /);
  });

  it('revoke --grant of a grant revoked before says when and why (--json: already_revoked), instead of a bare "revoked 0 grant(s)"', () => {
    given(AGENT);
    const user = json('token', 'mint', '--client', 'agent', '--subject', 'bob');
    const first = json('revoke', '--grant', user.grant_id as string, '--reason', 'leaked in a log');
    assert.deepEqual(first.revoked_grants, [user.grant_id]);
    assert.equal(first.already_revoked, undefined);
    const again = json('revoke', '--grant', user.grant_id as string);
    assert.deepEqual(again.revoked_grants, []);
    const already = again.already_revoked as { grant_id: string; revoked_at: string; reason: string };
    assert.equal(already.grant_id, user.grant_id);
    assert.match(already.revoked_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.equal(already.reason, 'leaked in a log');
    const text = tessera('revoke', '--grant', user.grant_id as string);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(
      text.stdout,
      `grant ${user.grant_id} was already revoked at ${already.revoked_at} (leaked in a log), with every grant derived from it; nothing more to revoke\n`,
    );
  });

  it('revoke --subject or --client matching no grant says nothing matched and why that can be, instead of a bare "revoked 0 grant(s)"; --json is unchanged', () => {
    given(AGENT);
    const user = json('token', 'mint', '--client', 'agent', '--subject', 'carol-once');
    json('revoke', '--grant', user.grant_id as string);
    const cases: [string[], string][] = [
      [
        ['--subject', 'carol-once'],
        'revoked 0 grants: subject "carol-once" has no grant here left to revoke (none was issued for it, or every one was revoked before)\n',
      ],
      [
        ['--subject', 'nobody-here'],
        'revoked 0 grants: subject "nobody-here" has no grant here left to revoke (none was issued for it, or every one was revoked before)\n',
      ],
      [
        ['--client', 'no-such-client'],
        'revoked 0 grants: no client "no-such-client" is registered here, and no grant of it is left to revoke\n',
      ],
    ];
    for (const [args, line] of cases) {
      const text = tessera('revoke', ...args);
      assert.equal(text.code, 0, text.stderr);
      assert.equal(text.stdout, line, args.join(' '));
      assert.deepEqual(json('revoke', ...args), { revoked_grants: [] });
    }
  });

  it('grants tree escapes control characters in a subject (chosen by an identity provider) and a revocation reason', async () => {
    // An identity provider's subject reaches a grant through token exchange; mint refuses such a
    // subject, so the grant is written as exchange would write it.
    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const now = Math.floor(Date.now() / 1000);
    try {
      const created = await store.createGrant(
        {
          id: 'g_idp-subject',
          parentId: null,
          kind: 'token_exchange',
          issuer: 'https://idp.test',
          subject: 'alice\x1b[2J\nforged  active',
          clientId: 'demo-agent',
          act: null,
          scopes: [],
          audiences: ['https://api.test'],
          createdAt: now,
          expiresAt: now + 300,
        },
        now,
      );
      assert.equal(typeof created, 'object');
    } finally {
      await store.close();
    }
    assert.equal(tessera('revoke', '--grant', 'g_idp-subject', '--reason', 'why\x1b[31m').code, 0);
    const r = tessera('grants', 'tree', 'g_idp-subject');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split('\n').length, 2, r.stdout);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not be printed
    assert.doesNotMatch(r.stdout, /[\x00-\x09\x0b-\x1f\x7f]/);
    assert.match(r.stdout, /alice\\x1b\[2J\\nforged {2}active via demo-agent/);
    assert.match(r.stdout, /\(why\\x1b\[31m\)$/m);
  });

  it('grants tree shows at most 10,000 grants of a wider tree and says it left the rest out (--json: truncated true), instead of reading and printing it whole', async () => {
    const minted = json('token', 'mint', '--client', 'demo-agent', '--subject', 'wide');
    const root = String(minted.grant_id);
    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    try {
      const now = Math.floor(Date.now() / 1000);
      for (let i = 0; i < 10_001; i++) {
        const r = await store.createGrant(
          {
            id: `g_wide-${String(i).padStart(6, '0')}`,
            parentId: root,
            kind: 'token_exchange',
            issuer: 'https://idp.test',
            subject: 'wide',
            clientId: 'demo-agent',
            act: null,
            scopes: [],
            audiences: ['https://api.test'],
            createdAt: now,
            expiresAt: now + 300,
          },
          now,
        );
        assert.equal(typeof r, 'object');
      }
    } finally {
      await store.close();
    }
    const tree = json('grants', 'tree', root);
    assert.equal(tree.truncated, true);
    assert.equal((tree.subtree as unknown as unknown[]).length, 10_000);
    const text = tessera('grants', 'tree', root);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 10_001);
    assert.equal(lines.at(-2)?.includes('g_wide-009998'), true);
    assert.equal(
      lines.at(-1),
      '… truncated: at most 10000 grants of the subtree (the first, breadth-first) and 10000 ancestors (the nearest) are shown',
    );
    assert.equal(json('grants', 'tree', 'g_wide-000001').truncated, false);
  });

  it('attack: token mint and token exchange never print a bearer token for a DPoP-bound client (RFC 9449 §5.2): one line naming the setting and what to do, exit 1, audited client_dpop_proof_required', async () => {
    const added = tessera(
      'clients',
      'add',
      'dpop-minted',
      '--scopes',
      'demo:read',
      '--audiences',
      'https://api.test',
      '--grant-types',
      'client_credentials,token-exchange',
    );
    assert.equal(added.code, 0, added.stderr);
    // A token the client could exchange, minted before it was bound.
    const user = json('token', 'mint', '--client', 'dpop-minted', '--subject', 'dora');
    assert.equal(tessera('clients', 'update', 'dpop-minted', '--dpop-bound').code, 0);
    const line =
      'tessera: client "dpop-minted" is DPoP-bound (dpop_bound_access_tokens) and gets no bearer token; request its token at the token endpoint with a DPoP proof, or unbind it with `tessera clients update dpop-minted --no-dpop-bound`\n';
    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    try {
      const actions = () => store.queryAudit({ kinds: ['admin.action'], limit: 10_000 });
      const before = (await actions()).length;
      const attempts = [
        ['token', 'mint', '--client', 'dpop-minted'],
        ['token', 'mint', '--client', 'dpop-minted', '--json'],
        ['token', 'mint', '--client', 'dpop-minted', '--subject', 'dora'],
        ['token', 'exchange', '--client', 'dpop-minted', '--subject-token', user.access_token as string],
        ['token', 'exchange', '--client', 'dpop-minted', '--subject-token', user.access_token as string, '--json'],
      ];
      for (const args of attempts) {
        const r = tessera(...args);
        assert.equal(r.code, 1, `${args.slice(0, 2).join(' ')}: ${r.stdout}`);
        assert.equal(r.stdout, '', 'no token printed');
        assert.equal(r.stderr, line);
      }
      const events = (await actions()).slice(before);
      assert.deepEqual(
        events.map((e) => [e.decision, e.reason, e.detail?.action, e.detail?.target]),
        [
          ['deny', 'client_dpop_proof_required', 'token_mint', 'dpop-minted'],
          ['deny', 'client_dpop_proof_required', 'token_mint', 'dpop-minted'],
          ['deny', 'client_dpop_proof_required', 'token_mint', 'dpop-minted'],
          ['deny', 'client_dpop_proof_required', 'token_exchange', 'dpop-minted'],
          ['deny', 'client_dpop_proof_required', 'token_exchange', 'dpop-minted'],
        ],
      );
      assert.doesNotMatch(JSON.stringify(events), new RegExp(String(user.access_token).split('.')[2] as string));
      const issued = await store.queryAudit({ kinds: ['token.issued', 'token.exchanged'], limit: 10_000 });
      assert.deepEqual(
        issued.filter((e) => e.client_id === 'dpop-minted').map((e) => e.kind),
        ['token.issued'],
        'only the token minted before the client was bound',
      );
    } finally {
      await store.close();
    }
    // What the line says to do works.
    assert.equal(tessera('clients', 'update', 'dpop-minted', '--no-dpop-bound').code, 0);
    assert.equal(decodeJwt(json('token', 'mint', '--client', 'dpop-minted').access_token as string).client_id, 'dpop-minted');
  });

  it('exchange reads --actor-token from stdin (out of shell history and ps), but not both tokens at once', () => {
    given(AGENT);
    const user = json('token', 'mint', '--client', 'agent', '--subject', 'erin');
    const actor = json('token', 'mint', '--client', 'agent');
    const run = (...args: string[]) => piped(actor.access_token as string, 'token', 'exchange', '--client', 'agent', ...args, '--json');
    const ok = run('--subject-token', user.access_token as string, '--actor-token', '-', '--scope', 'demo:read');
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(decodeJwt(JSON.parse(ok.stdout).access_token).act, { sub: 'agent' });
    const both = run('--subject-token', '-', '--actor-token', '-');
    assert.equal(both.code, 1);
    assert.equal(both.stderr, 'tessera: only one of --subject-token and --actor-token can be read from stdin (-)\n');
  });

  it('revokes a token by value (read from stdin) and names its grant', () => {
    given(AGENT);
    const t = json('token', 'mint', '--client', 'agent');
    const r = piped(t.access_token as string, 'revoke', '--token', '-', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).revoked_token, t.jti);
  });

  it('revokes a token by value with the grants exchanged from it (their subtrees too), not its own grant, and names them', () => {
    given(AGENT);
    const user = json('token', 'mint', '--client', 'agent', '--subject', 'fay');
    const exchange = (subjectToken: string) => json('token', 'exchange', '--client', 'agent', '--subject-token', subjectToken);
    const child = exchange(user.access_token as string);
    const grandchild = exchange(child.access_token as string);
    const grantOf = (t: unknown) => decodeJwt(t as string).grant_id as string;
    const r = piped(user.access_token as string, 'revoke', '--token', '-', '--json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { revoked_token: string; grant_id: string; revoked_grants: string[] };
    assert.equal(out.revoked_token, user.jti);
    assert.equal(out.grant_id, user.grant_id);
    assert.deepEqual([...out.revoked_grants].sort(), [grantOf(child.access_token), grantOf(grandchild.access_token)].sort());
    const tree = json('grants', 'tree', user.grant_id as string) as unknown as { subtree: { id: string; revokedAt: number | null }[] };
    assert.deepEqual(
      tree.subtree.map((g) => [g.id, g.revokedAt === null]),
      [
        [user.grant_id, true],
        [grantOf(child.access_token), false],
        [grantOf(grandchild.access_token), false],
      ],
    );
    // In text: the token and what was exchanged from it.
    const again = json('token', 'mint', '--client', 'agent', '--subject', 'fay');
    exchange(again.access_token as string);
    const text = piped(again.access_token as string, 'revoke', '--token', '-');
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      new RegExp(
        `^revoked token ${again.jti} and 1 grant\\(s\\) exchanged from it: g_\\S+; to revoke its whole delegation run: tessera revoke --grant ${again.grant_id}\\n$`,
      ),
    );
  });

  it('revokes by subject and by client', () => {
    given(AGENT);
    json('token', 'mint', '--client', 'demo-agent', '--subject', 'bob');
    json('token', 'mint', '--client', 'agent');
    assert.equal((json('revoke', '--subject', 'bob').revoked_grants as string[]).length, 1);
    assert.ok((json('revoke', '--client', 'agent').revoked_grants as string[]).length >= 1);
  });

  it('audits every tessera revoke as admin.action by cli, naming what it named and revoked: a subject with no grant (its entries still written), a grant, a token by its jti, an unknown grant, which left no event', async () => {
    const store = SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const actions = () => store.queryAudit({ kinds: ['admin.action'], limit: 10_000 });
    try {
      const before = (await actions()).length;
      assert.deepEqual(json('revoke', '--subject', 'nobody-cli', '--reason', 'offboarded').revoked_grants, []);
      // An issuer neither this one nor trusted (none is here), of which the subject holds no grant:
      // it would revoke nothing and read as done.
      const unknown = tessera('revoke', '--subject', 'nobody-cli', '--issuer', 'https://idp.test', '--reason', 'offboarded');
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /\(admin_revoke_issuer_unknown\)\n$/);
      const g = json('token', 'mint', '--client', 'demo-agent', '--subject', 'carol');
      assert.deepEqual(json('revoke', '--grant', String(g.grant_id)).revoked_grants, [g.grant_id]);
      const t = json('token', 'mint', '--client', 'demo-agent');
      assert.equal(json('revoke', '--token', String(t.access_token)).revoked_token, t.jti);
      assert.deepEqual(json('revoke', '--client', 'no-such-client').revoked_grants, []);
      assert.equal(tessera('revoke', '--grant', 'g_cli-unknown').code, 1);
      const events = (await actions()).slice(before);
      assert.deepEqual(
        events.map((e) => [e.decision, e.reason, e.subject, e.detail]),
        [
          [
            'allow',
            'ok',
            undefined,
            {
              action: 'revoke',
              by: 'cli',
              selector: 'subject',
              target: 'nobody-cli',
              revoke_reason: 'offboarded',
              revoked: 0,
            },
          ],
          [
            'deny',
            'admin_revoke_issuer_unknown',
            undefined,
            { action: 'revoke', by: 'cli', selector: 'subject', target: 'nobody-cli', issuer: 'https://idp.test' },
          ],
          [
            'allow',
            'ok',
            undefined,
            { action: 'revoke', by: 'cli', selector: 'grant_id', target: g.grant_id, revoke_reason: 'cli', revoked: 1 },
          ],
          ['allow', 'ok', undefined, { action: 'revoke', by: 'cli', selector: 'token', target: t.jti, revoked: 1 }],
          [
            'allow',
            'ok',
            undefined,
            { action: 'revoke', by: 'cli', selector: 'client_id', target: 'no-such-client', revoke_reason: 'cli', revoked: 0 },
          ],
          ['deny', 'admin_not_found', undefined, { action: 'revoke', by: 'cli', selector: 'grant_id', target: 'g_cli-unknown' }],
        ],
      );
      assert.doesNotMatch(JSON.stringify(events), new RegExp(String(t.access_token).split('.')[2] as string));
    } finally {
      await store.close();
    }
  });

  it('refuses ambiguous or unknown revocations', () => {
    assert.equal(tessera('revoke').code, 1);
    assert.equal(tessera('revoke', '--grant', 'g', '--client', 'c').code, 1);
    assert.match(tessera('revoke', '--grant', 'g_unknown').stderr, /no grant/);
  });
});

describe('without a data directory', () => {
  it('tells the user to run tessera init', () => {
    const empty = mkdtempSync(join(tmpdir(), 'tessera-cli-empty-'));
    try {
      const r = runTessera(empty, ['clients', 'list']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /run `tessera init` first/);
      assert.equal(readFileSync(join(dir, 'tessera.yaml'), 'utf8').includes('data_dir'), true);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
