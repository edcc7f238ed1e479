/**
 * Reading `tessera.yaml` as an attacker or a careless editor would write it: every such file is
 * refused with one configuration error naming where, never an unexpected error or a silent change.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/cli/context.ts';
import { loadConfigFile, MAX_CONFIG_BYTES, MAX_EXPANDED_BYTES, parseConfigText } from '../../src/config/load.ts';
import { issuesOf } from '../helpers/config.ts';

describe('config: YAML aliases', () => {
  it('refuses an alias bomb as a configuration error', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 10; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(', ')}]`,
      );
    lines.push('data_dir: *a9');
    const issues = issuesOf(() => parseConfigText(`${lines.join('\n')}\n`, 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      { path: '(yaml)', message: 'too many alias expansions (the YAML aliases nest too deep); write the values out' },
    ]);
  });

  it('refuses, before the schema walks it, a file of a few aliases to one large node that would expand a hundredfold', () => {
    // Each alias is within yaml's alias count (the node holds none), yet 99 copies of 100 KB is
    // 10 MB for the schema to walk (of the largest file, 100 MB).
    const text = `x: &big [${Array(20_000).fill('aaaa').join(',')}]\ny: [${Array(99).fill('*big').join(',')}]\n`;
    assert.ok(Buffer.byteLength(text) < MAX_CONFIG_BYTES);
    // The expansion is refused before the schema walks it: were it walked, the unknown keys x and
    // y would be reported instead. No time bound: parsing alone takes seconds on a loaded machine.
    const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      {
        path: '(yaml)',
        message: `the YAML aliases expand the configuration to more than ${MAX_EXPANDED_BYTES / 1024 / 1024} MiB; write the values out or use fewer aliases`,
      },
    ]);
  });

  it('reads aliases that repeat a node a few times', () => {
    const text = 'scopes:\n  a: &s { description: shared }\n  b: *s\n  c: *s\n';
    assert.deepEqual(parseConfigText(text, 'tessera.yaml', {}).scopes?.c, { description: 'shared' });
  });

  it('refuses an alias that refers to the node containing it (a cycle)', () => {
    const issues = issuesOf(() => parseConfigText('gateway: &g { routes: [*g] }\n', 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      { path: '(yaml)', message: 'an alias refers to a node that contains it; YAML aliases must not form a cycle' },
    ]);
  });

  it('refuses an alias with no anchor, naming where it is', () => {
    const issues = issuesOf(() => parseConfigText('data_dir: x\nserver:\n  host: *nowhere\n', 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      { path: 'line 3, column 9', message: 'an alias (*…) names no anchor set before it; a value starting with * must be quoted' },
    ]);
  });
});

describe('config: YAML tags and directives', () => {
  it('refuses a tag it cannot honour (!!js/function, a local !tag, !!float on text) naming the line, instead of reading the value as a string', () => {
    for (const [text, tag] of [
      ['data_dir: !!js/function "function () {}"\n', 'tag:yaml.org,2002:js/function'],
      ['server:\n  port: 8080\n  host: !!float localhost\n', 'tag:yaml.org,2002:float'],
    ] as const) {
      const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', {}));
      assert.equal(issues.length, 1, text);
      assert.match(issues[0]?.path ?? '', /^line \d+, column \d+$/, text);
      assert.equal(issues[0]?.path.split(',')[0], `line ${text.split('\n').length - 1}`, text);
      assert.equal(
        issues[0]?.message,
        `unknown YAML tag ${tag}; remove it (plain YAML 1.2 values only: !!str, !!int, !!bool and the like)`,
      );
    }
  });

  it('refuses a local tag (!env) naming the line but not the tag, which may be a value written unquoted (!s3cret)', () => {
    const issues = issuesOf(() => parseConfigText('server:\n  host: !env HOST\n', 'tessera.yaml', {}));
    assert.deepEqual(issues, [
      {
        path: 'line 2, column 9',
        message: 'unknown YAML tag (a value starting with ! is read as a tag): quote the value, or remove the tag',
      },
    ]);
  });

  it('refuses the YAML 1.1 types (!!binary, !!set, !!timestamp) rather than handing the schema a Buffer, Set or Date', () => {
    for (const text of ['data_dir: !!binary aGVsbG8=\n', 'scopes: !!set { a }\n', 'data_dir: !!timestamp 2001-12-14\n']) {
      const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', {}));
      assert.equal(issues.length, 1, text);
      assert.equal(issues[0]?.path, `line 1, column ${text.indexOf('!!') + 1}`, text);
      assert.match(issues[0]?.message ?? '', /^unknown YAML tag tag:yaml\.org,2002:(binary|set|timestamp); remove it/, text);
    }
  });

  it('reads a %YAML 1.1 file by YAML 1.2 rules: 012 is twelve and yes is a string, never octal 10 or true', () => {
    const issues = issuesOf(() =>
      parseConfigText('%YAML 1.1\n---\nserver:\n  port: 012\n  host: yes\ncase_insensitive_paths: yes\n', 'tessera.yaml', {}),
    );
    assert.deepEqual(
      issues.map((i) => i.path),
      ['case_insensitive_paths'],
    );
    assert.equal(parseConfigText('%YAML 1.1\n---\nserver:\n  port: 012\n', 'tessera.yaml', {}).server.port, 12);
  });

  it('refuses an unknown directive and a key that is a list or mapping, naming the line', () => {
    const directive = issuesOf(() => parseConfigText('%TESSERA strict\n---\ndata_dir: x\n', 'tessera.yaml', {}));
    assert.deepEqual(directive, [{ path: 'line 1, column 1', message: 'Unknown directive %TESSERA' }]);
    const key = issuesOf(() => parseConfigText('scopes:\n  ? [a, b]\n  : { description: x }\n', 'tessera.yaml', {}));
    assert.deepEqual(key, [{ path: 'line 2, column 5', message: 'a key must be a plain value, not a list or a mapping' }]);
  });
});

describe('config: numbers spelled other than in decimal digits', () => {
  it('refuses a port written 0x1F90, 0o17620 or 8.08e3 (YAML reads them as 8080), naming the setting and the decimal to write', () => {
    for (const [spelled, name] of [
      ['0x1F90', 'hexadecimal'],
      ['0o17620', 'octal'],
      ['8.08e3', 'exponent'],
      ['808E1', 'exponent'],
    ] as const) {
      const issues = issuesOf(() => parseConfigText(`server:\n  port: ${spelled}\n`, 'tessera.yaml', {}));
      assert.equal(issues.length, 1, spelled);
      assert.equal(issues[0]?.path, 'server.port', spelled);
      assert.match(issues[0]?.message ?? '', new RegExp(`${name}.*write port: 8080`), spelled);
    }
  });

  it('refuses them in any integer setting, in a list item too, naming the path', () => {
    const issues = issuesOf(() =>
      parseConfigText(
        'audit:\n  batch_size: 1e3\ngateway:\n  routes:\n    - id: a\n      match: { path_prefix: /a }\n      upstream: { url: "http://127.0.0.1:1", connections: 0x10 }\n      auth: none\n      rate_limit: { key: ip, rate: 1.16e-5 }\ntoken_service:\n  registration:\n    max_clients: 0o17\n',
        'tessera.yaml',
        {},
      ),
    );
    assert.deepEqual(
      issues.map((i) => i.path),
      ['audit.batch_size', 'gateway.routes[0].upstream.connections', 'token_service.registration.max_clients'],
    );
    assert.match(issues[0]?.message ?? '', /write batch_size: 1000/);
    assert.match(issues[1]?.message ?? '', /write connections: 16/);
    assert.match(issues[2]?.message ?? '', /^an octal number.*write max_clients: 15/);
    // Reported with the schema's own problems, in one pass.
    const both = issuesOf(() => parseConfigText('server:\n  port: 0x1F90\n  nope: 1\n', 'tessera.yaml', {}));
    assert.deepEqual(
      both.map((i) => i.path),
      ['server.port', 'server.nope'],
    );
  });

  it('does not echo a large number (a secret written unquoted), and reads decimal digits as before', () => {
    const issues = issuesOf(() => parseConfigText('server:\n  host: 0xdeadbeefcafe1234\n', 'tessera.yaml', {}));
    assert.equal(issues[0]?.path, 'server.host');
    assert.doesNotMatch(issues[0]?.message ?? '', /deadbeef|16045690984503098000|1604569/i);
    const config = parseConfigText('server:\n  port: 8080\naudit:\n  batch_size: 100\n', 'tessera.yaml', {});
    assert.equal(config.server.port, 8080);
  });
});

describe('config: a path that is no file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-load-dir-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a directory is refused saying so and naming the file to give, not as "cannot read: EISDIR"', () => {
    assert.deepEqual(
      issuesOf(() => loadConfigFile(dir, {})),
      [{ path: '(file)', message: `${dir} is a directory; name the configuration file, such as ${join(dir, 'tessera.yaml')}` }],
    );
  });
});

describe('config: YAML errors never quote a secret written inline', () => {
  const SECRET = 'Zq8sEcReTvAlUe0123456789abcdef';
  // An unquoted value YAML reads as something else, and the error yaml makes of it quotes the text.
  for (const [name, value] of [
    ['an alias (token: *secret)', `*${SECRET}`],
    ['a block scalar header (token: |secret)', `|${SECRET}`],
    ['a folded block scalar header (token: >secret)', `>${SECRET}`],
    ['a bad \\u escape in a double-quoted value', `"\\u${SECRET}"`],
    ['a bad \\x escape in a double-quoted value', `"ab\\x${SECRET}"`],
    ['a bad \\U escape in a double-quoted value', `"\\U${SECRET}"`],
    ['a local tag (token: !secret)', `!${SECRET}`],
  ]) {
    it(`for ${name}`, () => {
      const text = `issuers: []\nstatic_tokens:\n  - id: gw\n    token: ${value}\n`;
      const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', {}));
      assert.ok(issues.length > 0);
      const shown = JSON.stringify(issues);
      for (let i = 0; i + 4 <= SECRET.length; i++) assert.ok(!shown.includes(SECRET.slice(i, i + 4)), `${shown} quotes the secret`);
      assert.match(issues[0]?.path ?? '', /^line 4, column \d+$/);
    });
  }
});

describe('config: file encoding', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-load-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a file that is not UTF-8, naming the line, instead of replacing the bad bytes', () => {
    const file = join(dir, 'latin1.yaml');
    writeFileSync(file, Buffer.concat([Buffer.from('server:\n  host: "h'), Buffer.from([0xe9]), Buffer.from('"\n')]));
    assert.deepEqual(
      issuesOf(() => loadConfigFile(file, {})),
      [{ path: 'line 2', message: 'not valid UTF-8; save the file as UTF-8' }],
    );
  });

  it('reads UTF-8 with a byte-order mark and a literal U+FFFD', () => {
    const file = join(dir, 'utf8.yaml');
    writeFileSync(file, '\uFEFFrealm: "r\uFFFD"\n');
    assert.equal(loadConfigFile(file, {}).realm, 'r\uFFFD');
  });
});

describe('config: file size', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-size-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const tooLarge = (file: string) => [
    { path: '(file)', message: `${file} is larger than ${MAX_CONFIG_BYTES / 1024 / 1024} MiB, the limit for a configuration file` },
  ];

  it('refuses a file over the limit, naming it and the limit, before parsing it', () => {
    const file = join(dir, 'big.yaml');
    // Valid YAML all the way: only its size is wrong.
    writeFileSync(file, `realm: r\n${'# padding\n'.repeat(MAX_CONFIG_BYTES / 10)}`);
    assert.deepEqual(
      issuesOf(() => loadConfigFile(file, {})),
      tooLarge(file),
    );
    // The CLI reads the file for its data_dir (secrets.env) first: the same refusal.
    assert.deepEqual(
      issuesOf(() => loadConfig(file, { env: {} })),
      tooLarge(file),
    );
  });

  it('refuses configuration text over the limit given to parseConfigText', () => {
    assert.deepEqual(
      issuesOf(() => parseConfigText(`realm: ${'r'.repeat(MAX_CONFIG_BYTES)}\n`, 'inline.yaml', {})),
      tooLarge('inline.yaml'),
    );
  });

  it('reads a file of exactly the limit', () => {
    const file = join(dir, 'limit.yaml');
    const head = 'realm: r\n';
    writeFileSync(file, `${head}${'#'.repeat(MAX_CONFIG_BYTES - head.length - 1)}\n`);
    assert.equal(loadConfigFile(file, {}).realm, 'r');
  });

  it('refuses an endless file (a device that never ends) without reading it all', () => {
    assert.deepEqual(
      issuesOf(() => loadConfigFile('/dev/zero', {})),
      tooLarge('/dev/zero'),
    );
  });
});
