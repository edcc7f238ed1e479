/**
 * Configuration: every problem reported at once with its exact path and what to write instead,
 * `${VAR}` / `${VAR:default}` substitution on values (never on YAML structure), deep-frozen
 * results, YAML syntax errors with their line.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfigFile, parseConfigText } from '../../src/config/load.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { verifierConfigSchema } from '../../src/config/verifier-schema.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { createVerifier } from '../../src/verifier.ts';
import { issuesOf } from '../helpers/config.ts';

const issuer = { issuer: 'https://issuer.test', audiences: ['https://api.test'], jwks_uri: 'https://issuer.test/jwks' };

const UNSET_GATEWAY_TOKEN =
  'environment variable GATEWAY_TOKEN is not set; set it in the environment or as GATEWAY_TOKEN=… in <data_dir>/secrets.env (which the tessera commands read), or write ${GATEWAY_TOKEN:default}, not for a secret: the default is written in this file';

describe('config: every problem with its exact path, all at once', () => {
  it('reports many problems in one error, each at its path', () => {
    const issues = issuesOf(() =>
      parseConfig(verifierConfigSchema, {
        isuers: [],
        issuers: [
          { issuer: 'https://a.test', audience: ['x'], audiences: [], jwks_uri: 'http://evil.test/jwks', clock_skew: '2m' },
          { ...issuer, algorithms: ['none', 'RS256'] },
          { ...issuer, max_lifetime: 'forever', scope_claim: 'scopez' },
        ],
        max_token_size: 10,
        dpop: { mode: 'on' },
        transport: { query: 'yes' },
      }),
    );
    assert.deepEqual(issues, [
      {
        path: 'issuers[0].audiences',
        message: 'list at least one audience; accepting tokens for any audience lets a token for one API be replayed at another',
      },
      { path: 'issuers[0].jwks_uri', message: 'must use https (plain http is accepted only on localhost, 127.0.0.1 and [::1])' },
      { path: 'issuers[0].clock_skew', message: '2m is longer than allowed here: write a duration from 0 to 1m' },
      { path: 'issuers[0].audience', message: 'unknown key "audience"; did you mean "audiences"?' },
      {
        path: 'issuers[1].algorithms[0]',
        message:
          '"none" is not a supported algorithm; use one of ES256, ES384, ES512, EdDSA, Ed25519, RS256, RS384, RS512, PS256, PS384, PS512, HS256, HS384, HS512 (case-sensitive; "none" is never accepted)',
      },
      {
        path: 'issuers[2].scope_claim',
        message: '"scopez" is not an option here; write one of scope, scopes, scp, roles, permissions (did you mean scope?)',
      },
      { path: 'issuers[2].max_lifetime', message: '"forever" is not a duration; write seconds (30) or a unit (30s, 10m, 24h, 7d)' },
      { path: 'transport.query', message: 'expected true or false (write query: true or query: false, without quotes), got a string' },
      { path: 'dpop.mode', message: '"on" is not an option here; write one of disabled, allowed, required' },
      { path: 'max_token_size', message: 'must be at least 256' },
      { path: 'isuers', message: 'unknown key "isuers"; did you mean "issuers"?' },
      { path: 'issuers[2].issuer', message: 'issuer "https://issuer.test" is listed twice' },
    ]);
  });

  it('says what to write instead of a value of the wrong type, for every such problem at once', () => {
    const yaml = [
      'server:',
      '  port: "8080"',
      'transport:',
      '  query: "yes"',
      'static_tokens:',
      '  - id: 5',
      '    token: t0123456789abcdef0123456789abcdef',
      'issuers:',
      '  - issuer: https://issuer.test',
      '    audiences: https://api.test',
      '    jwks_uri: https://issuer.test/jwks',
      '    jwks_cache: 60',
      'scopes: [a, b]',
      'gateway:',
      '  routes:',
      '    id: api',
    ].join('\n');
    assert.deepEqual(
      issuesOf(() => parseConfigText(yaml, 'test.yaml', {})),
      [
        { path: 'server.port', message: 'expected a number (write port: 8080, without quotes), got a string' },
        { path: 'issuers[0].audiences', message: 'expected a list (write each audience as an item starting with "- "), got a string' },
        {
          path: 'issuers[0].jwks_cache',
          message: 'expected a mapping (write its settings on the lines below jwks_cache:, indented), got a number',
        },
        { path: 'static_tokens[0].id', message: 'expected a string (write it in quotes, as in id: "…"), got a number' },
        { path: 'scopes', message: 'expected a mapping (write its settings on the lines below scopes:, indented), got a list' },
        { path: 'transport.query', message: 'expected true or false (write query: true or query: false, without quotes), got a string' },
        { path: 'gateway.routes', message: 'expected a list (write each route as an item starting with "- "), got a mapping' },
      ],
    );
    assert.deepEqual(
      issuesOf(() => parseConfigText('server:\n  port: eighty\ngateway:\n  routes:\n', 'test.yaml', {})),
      [
        { path: 'server.port', message: 'expected a number (digits without quotes, as in port: 8080), got a string' },
        { path: 'gateway.routes', message: 'expected a list (write each route as an item starting with "- "), got nothing' },
      ],
    );
  });

  it('reports cross-field problems together with field errors, not one round later', () => {
    const issues = issuesOf(() =>
      parseConfig(verifierConfigSchema, {
        issuers: [
          { ...issuer, jwks: { file: 'keys.json' }, audiences: [] },
          { ...issuer, issuer: 'https://other.test', algorithms: ['HS256', 'nope'] },
          { ...issuer, clock_skew: 'soon' },
        ],
        dpop: { algorithms: ['HS256'], mode: 'on' },
        max_token_size: 1,
      }),
    );
    assert.deepEqual(
      issues.map((i) => i.path),
      [
        'issuers[0].audiences',
        'issuers[0].jwks_uri',
        'issuers[1].algorithms[1]',
        'issuers[1].algorithms',
        'issuers[2].clock_skew',
        'dpop.mode',
        'dpop.algorithms[0]',
        'max_token_size',
        'issuers[2].issuer',
      ],
    );
  });

  it('refuses a user name or password in a jwks_uri or introspection endpoint, which /readyz and logs would show', () => {
    const issues = issuesOf(() =>
      parseConfig(verifierConfigSchema, {
        issuers: [{ ...issuer, jwks_uri: 'https://reader:hunter2@issuer.test/jwks' }],
        introspection: {
          endpoint: 'https://client:pw@idp.test/introspect',
          client_id: 'gw',
          client_secret: 'a-secret-of-some-length',
        },
      }),
    );
    const message = 'remove the user:password@ part: a URL here is shown on /readyz and in logs; credentials go in their own settings';
    assert.deepEqual(
      issues.filter((i) => i.message === message).map((i) => i.path),
      ['issuers[0].jwks_uri', 'introspection.endpoint'],
    );
    assert.ok(!JSON.stringify(issues).includes('hunter2'));
  });

  it('does not add a spurious "configure at least one" when issuers is merely invalid', () => {
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, { issuers: 'https://issuer.test' })).map((i) => i.path),
      ['issuers'],
    );
  });

  it('lists the known keys when no key is close', () => {
    const issues = issuesOf(() => parseConfig(verifierConfigSchema, { issuers: [issuer], transport: { zzzzzz: true } }));
    assert.deepEqual(issues, [{ path: 'transport.zzzzzz', message: 'unknown key "zzzzzz"; known keys here: form_body, query' }]);
  });

  it('reports cross-field rules at their path', () => {
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, { issuers: [{ ...issuer, jwks: { keys: [{ kty: 'EC' }] } }] })),
      [{ path: 'issuers[0].jwks_uri', message: 'give exactly one of jwks_uri (remote) or jwks ({file} or {keys})' }],
    );
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, { issuers: [{ ...issuer, algorithms: ['HS256'] }] })),
      [
        {
          path: 'issuers[0].algorithms',
          message: 'HMAC algorithms need a shared secret and cannot come from a remote JWKS; remove HS* or use an inline oct key',
        },
      ],
    );
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, { issuers: [issuer], dpop: { algorithms: ['ES256', 'HS256'] } })),
      [{ path: 'dpop.algorithms[1]', message: 'DPoP proofs are signed with asymmetric keys; remove HMAC algorithms' }],
    );
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, { issuers: [issuer, issuer] })),
      [{ path: 'issuers[1].issuer', message: 'issuer "https://issuer.test" is listed twice' }],
    );
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, {})),
      [{ path: 'issuers', message: 'configure at least one of issuers, static_tokens or introspection' }],
    );
  });

  it('reports key problems found when the verifier loads its keys, with the key path', () => {
    const weak = { kty: 'oct', k: Buffer.alloc(16).toString('base64url'), kid: 'weak' };
    const issues = issuesOf(() =>
      createVerifier({
        issuers: [
          { issuer: 'https://a.test', audiences: ['x'], algorithms: ['HS256'], jwks: { keys: [weak] } },
          { issuer: 'https://b.test', audiences: ['x'], jwks: { file: '/nonexistent/jwks.json' } },
        ],
        scopes: { a: { implies: ['b'] } },
        rules: [{ path: '/x', scopes: ['c'] }],
      }),
    );
    assert.deepEqual(
      issues.map((i) => i.path),
      ['scopes.a.implies[0]', 'rules[0].scopes[0]', 'issuers[0].jwks.keys[0]', 'issuers[1].jwks.file'],
    );
    assert.match(issues[2]?.message ?? '', /HMAC secret is 128 bits; HS256 requires at least 256/);
  });
});

describe('config: ${VAR} substitution', () => {
  it('substitutes ${VAR} and ${VAR:default}, and $${ writes a literal', () => {
    const config = parseConfig(
      verifierConfigSchema,
      { issuers: [{ ...issuer, issuer: '${ISS}', audiences: ['${AUD:https://api.test}', 'x-$${NOT_A_VAR}'] }] },
      { env: { ISS: 'https://from-env.test' } },
    );
    assert.equal(config.issuers[0]?.issuer, 'https://from-env.test');
    assert.deepEqual(config.issuers[0]?.audiences, ['https://api.test', 'x-${NOT_A_VAR}']);
  });

  it('prefers the environment over the default, and treats an empty variable as unset', () => {
    const config = parseConfig(
      verifierConfigSchema,
      { issuers: [{ ...issuer, audiences: ['${A:default-a}', '${B:default-b}'] }] },
      { env: { A: 'from-env', B: '' } },
    );
    assert.deepEqual(config.issuers[0]?.audiences, ['from-env', 'default-b']);
  });

  it('reports an unset variable without a default at its path, and nothing more about the value it left empty', () => {
    const issues = issuesOf(() =>
      parseConfig(verifierConfigSchema, { static_tokens: [{ id: 'gw', token: '${GATEWAY_TOKEN}' }] }, { env: {} }),
    );
    // Not also "static_tokens[0].token: Too small: expected string to have >=1 characters".
    assert.deepEqual(issues, [
      {
        path: 'static_tokens[0].token',
        message: UNSET_GATEWAY_TOKEN,
      },
    ]);
  });

  it('an unset variable: says first where to set it (the environment, <data_dir>/secrets.env), and that a default is written in the file', () => {
    const [issue] = issuesOf(() =>
      parseConfig(verifierConfigSchema, { static_tokens: [{ id: 'gw', token: '${GATEWAY_TOKEN}' }] }, { env: {} }),
    );
    const message = issue?.message ?? '';
    assert.ok(message.indexOf('environment') < message.indexOf('${GATEWAY_TOKEN:default}'), message);
    assert.match(message, /<data_dir>\/secrets\.env/);
    assert.match(message, /not for a secret/);
  });

  it('never lets an environment value inject YAML structure', () => {
    const config = parseConfigText(
      'issuers:\n  - issuer: "${ISS}"\n    audiences: ["x"]\n    jwks_uri: https://i.test/jwks\n',
      'test.yaml',
      {
        ISS: 'https://i.test\n    audiences: ["evil"]',
      },
    );
    assert.equal(config.issuers[0]?.issuer, 'https://i.test\n    audiences: ["evil"]');
    assert.deepEqual(config.issuers[0]?.audiences, ['x']);
  });

  it('reads a whole ${VAR} as a number or boolean where the schema wants one (port: ${PORT})', () => {
    const text = 'server:\n  port: ${PORT}\ntransport:\n  form_body: ${FORM:false}\n';
    const config = parseConfigText(text, 'test.yaml', { PORT: '9090', FORM: 'true' });
    assert.equal(config.server.port, 9090);
    assert.equal(config.transport.form_body, true);
    assert.equal(parseConfigText(text, 'test.yaml', { PORT: '9090' }).transport.form_body, false, 'the default too');
    // Not a number, or not the whole value: still refused, and the value is not echoed.
    for (const [port, env] of [
      ['${PORT}', { PORT: '90a0' }],
      ['${PORT}', { PORT: '0x1f' }],
      ['"1${PORT}"', { PORT: '0' }],
    ] as const) {
      const issues = issuesOf(() => parseConfigText(`server:\n  port: ${port}\n`, 'test.yaml', env));
      assert.equal(issues.length, 1, port);
      assert.equal(issues[0]?.path, 'server.port');
    }
    // A string setting keeps a numeric value as written.
    const iss = parseConfigText('issuers:\n  - issuer: ${ISS}\n    audiences: [x]\n    jwks_uri: https://i.test/jwks\n', 'test.yaml', {
      ISS: '12345',
    });
    assert.equal(iss.issuers[0]?.issuer, '12345');
  });
});

describe('config: an environment value is never echoed in an error', () => {
  it('quotes a misplaced ${VAR} as written, not the secret it holds, wherever a message quotes the value', () => {
    const env = { DATABASE_URL: 'postgres://u:db-password-1234@db/tessera', GATEWAY_TOKEN: 'tgw_secret-gateway-token' };
    let error: unknown;
    try {
      parseConfigText(
        [
          'store:',
          '  driver: ${DATABASE_URL}',
          'gateway:',
          '  routes:',
          '    - id: api',
          '      upstream: { url: "http://127.0.0.1:1" }',
          '      auth: "x-${GATEWAY_TOKEN}"',
          '',
        ].join('\n'),
        'tessera.yaml',
        env,
      );
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof ConfigError);
    assert.doesNotMatch(error.message, /db-password|secret-gateway-token/);
    assert.deepEqual(
      error.issues.map((i) => [i.path, i.message]),
      [
        ['store.driver', '"${DATABASE_URL}" is not a store driver; use "sqlite" or "postgres"'],
        ['gateway.routes[0].auth', '"x-${GATEWAY_TOKEN}" is not an authentication method; use one of none, jwt, static, introspection'],
      ],
    );
  });

  it('hides a value written flush against letters or digits (x${TOKEN}), where it does not stand on its own', () => {
    const text = ['gateway:', '  routes: [{ id: api, upstream: { url: "http://127.0.0.1:1" }, auth: "x${GATEWAY_TOKEN}9" }]', ''].join(
      '\n',
    );
    const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', { GATEWAY_TOKEN: 'SecretGatewayToken7' }));
    assert.doesNotMatch(JSON.stringify(issues), /SecretGatewayToken7/);
    assert.deepEqual(
      issues.map((i) => [i.path, i.message]),
      [['gateway.routes[0].auth', '"x${GATEWAY_TOKEN}9" is not an authentication method; use one of none, jwt, static, introspection']],
    );
  });

  it('attack: a message about one setting that quotes another (a rule’s claims naming its path) hides that setting’s ${VAR} value too', () => {
    // A reload refused for this logged the rule path taken from the environment.
    const text = [
      'issuers: [{ issuer: "https://auth.example.com", audiences: [api], jwks_uri: "https://auth.example.com/jwks" }]',
      'gateway:',
      '  routes:',
      '    - id: api',
      '      upstream: { url: "http://127.0.0.1:1" }',
      '      auth: jwt',
      '      rules: [{ path: "${TENANT_PATH}", claims: { tenant: ":tenant" } }]',
      '',
    ].join('\n');
    const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', { TENANT_PATH: '/t/Pw9-hidden/**' }));
    assert.doesNotMatch(JSON.stringify(issues), /Pw9-hidden/);
    assert.deepEqual(
      issues.map((i) => [i.path, i.message]),
      [['gateway.routes[0].rules[0].claims.tenant', '":tenant" names no parameter of path "${TENANT_PATH}"']],
    );
  });

  it('leaves the words of a message alone when a short value happens to be part of one', () => {
    // FORWARD_AUTH_SECRET=y once read "use at least 16 characters, normall${FORWARD_AUTH_SECRET} `${…}`".
    const text = [
      'gateway:',
      '  routes: [{ id: api, upstream: { url: "http://127.0.0.1:1" }, auth: none }]',
      '  forward_auth:',
      '    enabled: true',
      '    flavor: nginx',
      '    shared_secret: { header: X-Tessera-Forward-Auth, value: "${FORWARD_AUTH_SECRET}" }',
      '',
    ].join('\n');
    const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', { FORWARD_AUTH_SECRET: 'y' }));
    assert.deepEqual(
      issues.map((i) => [i.path, i.message]),
      [['gateway.forward_auth.shared_secret.value', 'use at least 16 characters, normally `${FORWARD_AUTH_SECRET}` from the environment']],
    );
  });
});

describe('config: results are deep-frozen', () => {
  it('freezes every level', () => {
    const config = parseConfig(verifierConfigSchema, { issuers: [issuer], rules: [{ path: '/a', methods: ['get'] }] });
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.issuers));
    assert.ok(Object.isFrozen(config.issuers[0]));
    assert.ok(Object.isFrozen(config.issuers[0]?.audiences));
    assert.ok(Object.isFrozen(config.issuers[0]?.jwks_cache));
    assert.ok(Object.isFrozen(config.rules?.[0]?.methods));
    assert.throws(() => (config.issuers[0]!.audiences as string[]).push('https://evil.test'), TypeError);
    assert.throws(() => {
      (config.transport as { query: boolean }).query = true;
    }, TypeError);
    assert.deepEqual(config.rules?.[0]?.methods, ['GET']);
  });
});

describe('config: YAML', () => {
  const cases: [string, string, string][] = [
    ['an unclosed flow sequence', 'issuers:\n  - issuer: a\n    audiences: [x\n  - y\n', 'line 4, column 3'],
    ['a duplicate key', 'issuers: []\nissuers: []\n', 'line 2, column 1'],
    ['tab indentation', 'issuers:\n\t- a\n', 'line 2, column 1'],
  ];
  for (const [name, text, where] of cases) {
    it(`names the line of ${name}`, () => {
      const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', {}));
      assert.equal(issues.length, 1);
      assert.equal(issues[0]?.path, where);
    });
  }

  it('tells how to write an unquoted ${VAR} inside { … }, once, without repeating the position', () => {
    // docs/token-service.md once showed `store: { driver: postgres, postgres: { url: ${DATABASE_URL} } }`:
    // `{` after `$` opens a flow mapping, and YAML reported three errors ending in a dangling colon.
    const text = 'server: { port: 18093 }\nstore: { driver: postgres, postgres: { url: ${DATABASE_URL} } }\n';
    const issues = issuesOf(() => parseConfigText(text, 'tessera.yaml', { DATABASE_URL: 'postgres://db/tessera' }));
    assert.deepEqual(issues, [
      {
        path: 'line 2, column 46',
        message: 'a ${VAR} inside { … } or [ … ] must be quoted: write "${VAR}"',
      },
    ]);
    const other = issuesOf(() => parseConfigText('issuers:\n  - issuer: a\n    audiences: [x\n  - y\n', 'tessera.yaml', {}));
    assert.doesNotMatch(other[0]?.message ?? '', /line \d+, column \d+|:$/);
  });

  it('names the file and the path of schema errors in a YAML file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-config-'));
    try {
      const file = join(dir, 'tessera.yaml');
      writeFileSync(file, 'issuers:\n  - issuer: https://i.test\n    audiences: []\n    jwks_uri: https://i.test/jwks\n');
      assert.throws(
        () => loadConfigFile(file, {}),
        (e: unknown) =>
          e instanceof ConfigError &&
          e.message.startsWith(`invalid configuration in ${file} (1 problem):`) &&
          e.issues[0]?.path === 'issuers[0].audiences',
      );
      assert.throws(
        () => loadConfigFile(join(dir, 'missing.yaml'), {}),
        (e: unknown) => e instanceof ConfigError && e.issues[0]?.message.endsWith('ENOENT') === true,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads an empty document as all defaults, frozen', () => {
    const config = parseConfigText('', 'tessera.yaml', {});
    assert.equal(config.data_dir, '.tessera');
    assert.equal(config.max_token_size, 8192);
    assert.ok(Object.isFrozen(config.server));
  });
});
