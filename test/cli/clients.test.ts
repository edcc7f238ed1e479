/**
 * `tessera clients`: what it prints of a client is safe to print, and a secret client's secret is
 * never lost between the store and the operator (the rest runs in token-service-cli.test.ts).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeEach, describe, it } from 'node:test';
import { cliDirs, MAIN, runTessera } from '../helpers/cli.ts';

const dirs = cliDirs('tessera-clients-');
/** This test's directory, where `tessera init` ran. */
let dir: string;
beforeEach(() => {
  dir = dirs.fresh();
});

const tessera = (...args: string[]) => runTessera(dir, args);

describe('tessera clients show', () => {
  it('escapes control characters in a JWKS kid (a forged line, an OSC title, a cleared screen), which the JWKS file chose', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = 'k\x1b]0;pwned\x07\x1b[2J\nforged_line: yes\u202e';
    const file = join(dir, 'evil.jwks');
    writeFileSync(file, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }] }));
    const added = tessera('clients', 'add', 'kid-client', '--audiences', 'https://api.test', '--jwks', file);
    assert.equal(added.code, 0, added.stderr);

    const shown = tessera('clients', 'show', 'kid-client');
    assert.equal(shown.code, 0, shown.stderr);
    // No control character but the newline ending each line, no bidirectional override.
    assert.ok(![...shown.stdout].some((c) => (c < ' ' && c !== '\n') || (c >= '\x7f' && c <= '\x9f') || c === '\u202e'), shown.stdout);
    assert.ok(!shown.stdout.split('\n').some((l) => l.startsWith('forged_line')), shown.stdout);
    assert.match(shown.stdout, /^jwks_kids +k\\x1b\]0;pwned\\x07\\x1b\[2J\\nforged_line: yes\\u202e$/m);
    // --json carries the value as it is (JSON escapes controls itself).
    const json = JSON.parse(tessera('clients', 'show', 'kid-client', '--json').stdout) as { jwks_kids: string[] };
    assert.deepEqual(json.jwks_kids, [kid]);
  });
});

describe('tessera clients show: the values in one column', () => {
  it('starts every value at the same column, exchange_retarget_audiences included', () => {
    const shown = tessera('clients', 'show', 'demo-agent');
    assert.equal(shown.code, 0, shown.stderr);
    const columns = new Set(
      shown.stdout
        .trimEnd()
        .split('\n')
        .map((l) => /^\S+ +/.exec(l)?.[0].length),
    );
    assert.equal(columns.size, 1, shown.stdout);
  });
});

describe('tessera clients show: what a person reads', () => {
  it('names the lifetime a client without --ttl gets (default (10m)), not null, and token exchange as --grant-types names it; --json keeps the stored values', () => {
    const added = tessera(
      'clients',
      'add',
      'show-exchanger',
      '--audiences',
      'https://api.test',
      '--grant-types',
      'client_credentials,token-exchange',
    );
    assert.equal(added.code, 0, added.stderr);
    const shown = tessera('clients', 'show', 'show-exchanger');
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^access_token_ttl +default \(10m\)$/m);
    assert.match(shown.stdout, /^grant_types +client_credentials token-exchange$/m);
    assert.doesNotMatch(shown.stdout, /null|urn:/);
    const json = JSON.parse(tessera('clients', 'show', 'show-exchanger', '--json').stdout) as Record<string, unknown>;
    assert.equal(json.access_token_ttl, null);
    assert.deepEqual(json.grant_types, ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange']);

    assert.equal(tessera('clients', 'add', 'show-ttl', '--audiences', 'https://api.test', '--ttl', '5m').code, 0);
    assert.match(tessera('clients', 'show', 'show-ttl').stdout, /^access_token_ttl +5m$/m);
    assert.equal((JSON.parse(tessera('clients', 'show', 'show-ttl', '--json').stdout) as Record<string, unknown>).access_token_ttl, 300);
  });
});

describe('tessera token mint: a client with several audiences', () => {
  it('is told to choose one with --audience, naming them, instead of a bare invalid_target', () => {
    assert.equal(tessera('clients', 'add', 'two-audiences', '--audiences', 'https://a.test', 'https://b.test').code, 0);
    const r = tessera('token', 'mint', '--client', 'two-audiences');
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'tessera: client "two-audiences" has several audiences; choose one with --audience (https://a.test https://b.test)\n',
    );
  });
});

describe('tessera clients add: a secret shown once', () => {
  for (const json of [false, true]) {
    it(`keeps no client whose secret never reached the reader (stdout closed${json ? ', --json' : ''}): exit 1, one line, nothing registered`, async () => {
      const id = `unseen-${json ? 'json' : 'text'}`;
      const child = spawn(process.execPath, [MAIN, 'clients', 'add', id, '--audiences', 'https://api.test', ...(json ? ['--json'] : [])], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      // The reader is gone before anything is written: `tessera clients add … | head -c0`, a crashed consumer.
      child.stdout.destroy();
      let err = '';
      child.stderr.on('data', (d) => {
        err += d.toString();
      });
      const [code] = await once(child, 'exit');
      assert.equal(code, 1, err);
      assert.equal(
        err,
        `tessera: could not print the client secret (EPIPE), so client ${id} was not kept; run clients add again with its output going where it can be read\n`,
      );
      const shown = tessera('clients', 'show', id);
      assert.equal(shown.code, 1);
      assert.equal(shown.stderr, `tessera: no client "${id}"\n`);
      // And the id is free for the run that shows the secret.
      const again = tessera('clients', 'add', id, '--audiences', 'https://api.test', '--json');
      assert.equal(again.code, 0, again.stderr);
      assert.match((JSON.parse(again.stdout) as { client_secret: string }).client_secret, /^tcs_/);
    });
  }
});

describe('a bad option value names its flag and what to write instead', () => {
  // Each was refused before, but by the registry's own words ("ttl must be …", "scope … is not in
  // the scope catalogue"): which of the command line's flags was wrong was for the operator to guess.
  const add = ['clients', 'add', 'flagged', '--audiences', 'https://api.test'];
  for (const [name, args, line] of [
    [
      'clients add --ttl longer than max_access_token_ttl',
      [...add, '--ttl', '2h'],
      '--ttl 7200s is longer than token_service.max_access_token_ttl (3600s); ask for at most 3600s',
    ],
    [
      'clients add --ttl that is not a duration',
      [...add, '--ttl', 'abc'],
      '--ttl "abc" is not a lifetime; write seconds (300) or a duration (90s, 5m, 1h), at least 1s',
    ],
    [
      'clients add --scopes outside the catalogue',
      [...add, '--scopes', 'demo:read,nope'],
      '--scopes: scope "nope" is not in the scope catalogue (scopes in tessera.yaml)',
    ],
    [
      'clients add --scopes naming an unknown scope twice (said once)',
      [...add, '--scopes', 'nope,nope'],
      '--scopes: scope "nope" is not in the scope catalogue (scopes in tessera.yaml)',
    ],
    [
      'clients add --grant-types unknown',
      [...add, '--grant-types', 'password'],
      '--grant-types: grant type "password" is not supported; use client_credentials, authorization_code, refresh_token, token-exchange',
    ],
    [
      'clients add --redirect-uris not a URL',
      [...add, '--grant-types', 'authorization-code', '--redirect-uris', 'callback'],
      '--redirect-uris: redirect URI "callback" is not an absolute URL',
    ],
    [
      'clients add --audiences with a control character',
      ['clients', 'add', 'flagged', '--audiences', 'https://api.test/\x01'],
      '--audiences: audience "https://api.test/\\x01" must be non-empty without whitespace or control characters',
    ],
    [
      'clients add --name of spaces',
      [...add, '--name', '   '],
      '--name: a client name must be 1-100 characters, some of them visible, without control, line separator or bidirectional formatting characters or unpaired surrogates',
    ],
    [
      'token mint --subject empty (an unset "$VAR"), which would mint a token for nobody',
      ['token', 'mint', '--client', 'demo-agent', '--subject', ''],
      '--subject is empty; name the subject to mint for (--subject alice), or leave it out to mint for the client',
    ],
    [
      'token mint --subject with a space, which the login paths never let into a token',
      ['token', 'mint', '--client', 'demo-agent', '--subject', 'alice admin'],
      '--subject: a subject must be 1-256 printable characters, without spaces, control or format characters',
    ],
    [
      'token mint --subject with a control character (a forged audit line)',
      ['token', 'mint', '--client', 'demo-agent', '--subject', 'alice\x1b[2Jroot'],
      '--subject: a subject must be 1-256 printable characters, without spaces, control or format characters',
    ],
    [
      'token mint --subject longer than 256 characters',
      ['token', 'mint', '--client', 'demo-agent', '--subject', 'a'.repeat(257)],
      '--subject: a subject must be 1-256 printable characters, without spaces, control or format characters',
    ],
    [
      'token mint --scope beyond the client (the token endpoint names neither the scope nor what is allowed)',
      ['token', 'mint', '--client', 'demo-agent', '--scope', 'demo:admin'],
      '--scope "demo:admin": client "demo-agent" may be granted only demo:read demo:write',
    ],
    [
      'token mint --audience beyond the client',
      ['token', 'mint', '--client', 'demo-agent', '--audience', 'https://other.test'],
      '--audience "https://other.test": client "demo-agent" may get tokens only for http://127.0.0.1:8080/demo',
    ],
    [
      'clients add with an empty client id, the subject of its client_credentials tokens',
      ['clients', 'add', '', '--audiences', 'https://api.test'],
      'client id "" must be 1-128 characters of letters, digits, ".", "_" or "-"',
    ],
    [
      'token exchange --subject-token-type unknown',
      ['token', 'exchange', '--client', 'demo-agent', '--subject-token', 'x', '--subject-token-type', 'saml2'],
      '--subject-token-type "saml2" is not a token type the token service exchanges; write access_token or jwt',
    ],
  ] as const) {
    it(`${name}: exit 1, one line naming the flag`, () => {
      const r = tessera(...args);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: ${line}\n`);
      // A refused registration registered nothing.
      if (args[2] === 'flagged') assert.equal(tessera('clients', 'show', 'flagged').stderr, 'tessera: no client "flagged"\n');
    });
  }
});

describe('tessera clients add --jwks: a file that is no key set', () => {
  const add = (file: string) =>
    spawnSync(process.execPath, [MAIN, 'clients', 'add', 'keyed', '--audiences', 'https://api.test', '--jwks', file], {
      cwd: dir,
      encoding: 'utf8',
      // An endless file read whole ran the process out of memory (a V8 fatal error) or for ever.
      timeout: 30_000,
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
  for (const [name, make, why] of [
    [
      'an endless device (/dev/zero), read whole until memory ran out',
      () => '/dev/zero',
      'larger than 512 KiB, the most a JWKS file may hold',
    ],
    [
      'a file larger than a JWKS',
      () => {
        const file = join(dir, 'huge.jwks');
        writeFileSync(file, `{"keys":[],"pad":"${'a'.repeat(600 * 1024)}"}`);
        return file;
      },
      'larger than 512 KiB, the most a JWKS file may hold',
    ],
    ['a file that is missing', () => join(dir, 'missing.jwks'), 'no such file'],
    ['a directory', () => dir, 'a directory, not a file'],
    [
      'a file that is not JSON',
      () => {
        const file = join(dir, 'keys.pem');
        writeFileSync(file, '-----BEGIN PUBLIC KEY-----\n');
        return file;
      },
      'not valid JSON',
    ],
  ] as const) {
    it(`${name}: exit 1, one line naming the file and why, nothing registered`, () => {
      const file = make();
      const r = add(file);
      assert.equal(r.signal, null, r.stderr.slice(0, 500));
      assert.equal(r.status, 1, r.stderr.slice(0, 500));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: --jwks: cannot load a JWKS from ${file}: ${why}\n`);
      assert.equal(tessera('clients', 'show', 'keyed').stderr, 'tessera: no client "keyed"\n');
    });
  }
});

describe('tessera clients add --jwks: an RSA key of a size refused', () => {
  for (const [bits, why] of [
    [4608, 'RSA key is 4608 bits; at most 4096 are accepted here'],
    [1024, 'RSA key is 1024 bits; at least 2048 are required'],
  ] as const) {
    it(`attack: a ${bits}-bit RSA key: exit 1, the key named by its index and kid, nothing registered`, () => {
      const file = join(dir, 'rsa.jwks');
      const jwk = generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ format: 'jwk' });
      writeFileSync(file, JSON.stringify({ keys: [{ ...jwk, kid: 'rsa-key', alg: 'RS256' }] }));
      const r = tessera('clients', 'add', 'keyed', '--audiences', 'https://api.test', '--jwks', file);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, new RegExp(`JWKS key 0 \\("rsa-key"\\): ${why}`));
      assert.equal(tessera('clients', 'show', 'keyed').stderr, 'tessera: no client "keyed"\n');
    });
  }
});

describe('a token pasted into the wrong argument is never printed back', () => {
  const token = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl';
  const cases: [string, string[]][] = [
    ['clients add --grant-types', ['clients', 'add', 'pasted-gt', '--audiences', 'https://api.test', '--grant-types', token]],
    ['clients add --ttl', ['clients', 'add', 'pasted-ttl', '--audiences', 'https://api.test', '--ttl', token]],
    ['clients add --scopes', ['clients', 'add', 'pasted-scope', '--audiences', 'https://api.test', '--scopes', token]],
    ['clients show', ['clients', 'show', token]],
    ['clients disable', ['clients', 'disable', token]],
    ['grants tree', ['grants', 'tree', token]],
    ['revoke --grant', ['revoke', '--grant', token]],
    ['audit query --since', ['audit', 'query', '--since', token]],
    ['audit query --limit', ['audit', 'query', '--limit', token]],
    ['token mint --ttl', ['token', 'mint', '--client', 'nobody', '--ttl', token]],
    [
      'clients add --redirect-uris',
      ['clients', 'add', 'pasted-uri', '--audiences', 'https://api.test', '--grant-types', 'authorization-code', '--redirect-uris', token],
    ],
  ];
  for (const [what, args] of cases) {
    it(`${what}: exit 1, one line describing the value by its length`, () => {
      const r = tessera(...args);
      assert.equal(r.code, 1, r.stderr);
      assert.ok(!`${r.stdout}${r.stderr}`.includes('eyJhbGciOiJFUzI1NiJ9'), r.stderr);
      assert.match(r.stderr, /a value of \d+ characters \(not shown: it may be a secret\)/);
    });
  }
});

describe('tessera clients add --redirect-uris with a password in it', () => {
  it('refuses it without printing the password back', () => {
    const r = tessera(
      'clients',
      'add',
      'userinfo',
      '--audiences',
      'https://api.test',
      '--grant-types',
      'authorization-code',
      '--redirect-uris',
      'https://app:hunter2-pw@app.test/cb',
    );
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, 'tessera: --redirect-uris: a redirect URI must not carry a user name or password\n');
  });
});

describe('tessera clients add under another master key than the store was made with (a stale TESSERA_MASTER_KEY)', () => {
  it('exit 1 naming the master key, and no client registered whose printed secret would never authenticate', () => {
    const r = runTessera(dir, ['clients', 'add', 'stale-master', '--audiences', 'https://api.test'], {
      env: { TESSERA_MASTER_KEY: 'A'.repeat(43) },
    });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /master key .*not the one they were sealed with/);
    assert.doesNotMatch(r.stdout, /tcs_/);
    assert.equal(tessera('clients', 'show', 'stale-master').code, 1);
  });
});

describe('tessera clients add --audiences with a password in it', () => {
  it('attack: refused without printing the password back, and nothing registered (every token it gets would carry the password in aud)', () => {
    for (const audience of ['https://svc:hunter2-pw@api.test/v1', 'https://svc@api.test/v1']) {
      const r = tessera('clients', 'add', 'aud-userinfo', '--audiences', audience);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.stdout, '');
      assert.equal(
        r.stderr,
        'tessera: --audiences: audience https://api.test/v1 must not carry a user name or password; write it without user:password@\n',
      );
      assert.equal(tessera('clients', 'show', 'aud-userinfo').code, 1);
    }
  });
});
