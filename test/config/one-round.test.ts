/**
 * One round of errors: a configuration with problems the schema finds field by field and problems
 * found by comparing fields or sections (rule scopes against the catalogue, routes against the
 * verifiers, `passthrough` against `allow_passthrough`) reports both kinds in one error, each at
 * its path; never the second kind only once the first is fixed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfigText } from '../../src/config/load.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { ConfigError, type ConfigIssue } from '../../src/core/errors.ts';
import { createVerifier } from '../../src/verifier.ts';
import { issuesOf } from '../helpers/config.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const STATIC = 'static-gateway-token-0123456789-abcdefghij';
const NOT_A_DURATION = '"soon" is not a duration; write seconds (30) or a unit (30s, 10m, 24h, 7d)';

const paths = (issues: readonly ConfigIssue[]) => issues.map((i) => i.path);

/** A gateway with one static-token route whose rule names `api:delete`, which the catalogue lacks. */
const yaml = (tokenService: string) => `token_service:
  access_token_ttl: ${tokenService}
scopes:
  api:read: {}
static_tokens:
  - { id: ci, token: "${STATIC}", scopes: [api:read] }
gateway:
  routes:
    - id: api
      upstream: { url: "http://127.0.0.1:9" }
      auth: static
      rules:
        - { scopes: [api:read, api:delete] }
`;

describe('config: a schema error and an error across sections in one round', () => {
  it('tessera.yaml: a bad duration in token_service and an unknown scope in a gateway rule are one error', () => {
    let error: ConfigError | undefined;
    try {
      parseConfigText(yaml('soon'), 'tessera.yaml', {});
    } catch (e) {
      error = e as ConfigError;
    }
    assert.ok(error instanceof ConfigError);
    assert.deepEqual(error.issues, [
      { path: 'token_service.access_token_ttl', message: NOT_A_DURATION },
      { path: 'gateway.routes[0].rules[0].scopes[1]', message: 'unknown scope "api:delete"; define it under scopes' },
    ]);
    assert.equal(
      error.message,
      `invalid configuration in tessera.yaml (2 problems):\n  token_service.access_token_ttl: ${NOT_A_DURATION}\n  gateway.routes[0].rules[0].scopes[1]: unknown scope "api:delete"; define it under scopes`,
    );
  });

  it('tessera.yaml: an issuer listed twice is refused at its path, as createVerifier refuses it', () => {
    const twice = `issuers:
  - { issuer: "https://a.example", audiences: [x], jwks_uri: "https://a.example/jwks" }
  - { issuer: "https://a.example", audiences: [y], jwks_uri: "https://a.example/other" }
`;
    const expected = [{ path: 'issuers[1].issuer', message: 'issuer "https://a.example" is listed twice' }];
    assert.deepEqual(
      issuesOf(() => parseConfigText(twice, 'tessera.yaml', {})),
      expected,
    );
    assert.deepEqual(
      issuesOf(() =>
        createVerifier({
          issuers: [
            { issuer: 'https://a.example', audiences: ['x'], jwks_uri: 'https://a.example/jwks' },
            { issuer: 'https://a.example', audiences: ['y'], jwks_uri: 'https://a.example/other' },
          ],
        }),
      ),
      expected,
    );
  });

  it('reports the error across sections alone once the schema error is fixed', () => {
    assert.deepEqual(
      issuesOf(() => parseConfigText(yaml('5m'), 'tessera.yaml', {})),
      [{ path: 'gateway.routes[0].rules[0].scopes[1]', message: 'unknown scope "api:delete"; define it under scopes' }],
    );
  });

  it('createVerifier: an invalid option and a rule naming an unknown scope are one error', () => {
    const issues = issuesOf(() =>
      createVerifier({
        issuers: [{ issuer: 'https://a.test', audiences: ['x'], jwks_uri: 'https://a.test/jwks', clock_skew: '2m' }],
        scopes: { 'api:read': {}, 'api:admin': { implies: ['api:root'] } },
        rules: [{ path: '/items/**', scopes: ['api:write'] }, { path: 'admin' }],
      }),
    );
    assert.deepEqual(issues, [
      { path: 'issuers[0].clock_skew', message: '2m is longer than allowed here: write a duration from 0 to 1m' },
      { path: 'scopes.api:admin.implies[0]', message: 'unknown scope "api:root"; define it under scopes' },
      { path: 'rules[0].scopes[0]', message: 'unknown scope "api:write"; define it under scopes' },
      { path: 'rules[1].path', message: 'a path pattern starts with "/" (got "admin")' },
    ]);
  });

  it('createVerifier: an invalid option, a duplicated static token and unusable keys are one error', () => {
    const weak = { kty: 'oct', k: Buffer.alloc(16).toString('base64url'), kid: 'weak' };
    const issues = issuesOf(() =>
      createVerifier({
        issuers: [
          { issuer: 'https://a.test', audiences: ['x'], algorithms: ['HS256'], jwks: { keys: [weak] } },
          { issuer: 'https://b.test', audiences: ['x'], jwks: { file: '/nonexistent/jwks.json' } },
        ],
        static_tokens: [
          { id: 'one', token: STATIC },
          { id: 'two', token: STATIC },
        ],
        max_token_size: 1,
      }),
    );
    assert.deepEqual(paths(issues), ['max_token_size', 'static_tokens[1].token', 'issuers[0].jwks.keys[0]', 'issuers[1].jwks.file']);
  });

  it('runs the cross-field checks of a section even when another field of it failed', () => {
    const base = { static_tokens: [{ id: 'ci', token: STATIC }] };
    const route = { id: 'r', upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules: [{}] };
    const gateway = {
      timeouts: { connect: 'soon' },
      routes: [
        { ...route, upstream: { url: 'http://127.0.0.1:9', credential: { type: 'passthrough' } } },
        { ...route, id: 'pub', auth: 'none', max_body_size: 'huge' },
      ],
    };
    assert.deepEqual(paths(issuesOf(() => parseConfig(configSchema, { ...base, gateway }))), [
      'gateway.routes[1].max_body_size',
      'gateway.routes[1].rules',
      'gateway.timeouts.connect',
      'gateway.routes[0].upstream.credential.type',
    ]);
    assert.deepEqual(
      paths(
        issuesOf(() =>
          parseConfig(configSchema, {
            ...base,
            token_service: { access_token_ttl: '2h', refresh_token_ttl: 'soon' },
            store: { driver: 'postgres', sqlite: { busy_timeout: 'soon' } },
          }),
        ),
      ),
      ['token_service.refresh_token_ttl', 'token_service.access_token_ttl', 'store.sqlite.busy_timeout', 'store.postgres'],
    );
  });

  it('does not check a part that failed against the rest: its values are not what the schema promises', () => {
    const route = (rules: unknown[]) => ({ id: 'r', upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules });
    // The catalogue is broken: the names rules use cannot be checked against it yet.
    assert.deepEqual(
      paths(
        issuesOf(() =>
          parseConfig(configSchema, {
            static_tokens: [{ id: 'ci', token: STATIC }],
            scopes: { a: { implies: 'b' } },
            rules: [{ scopes: ['zzz'] }],
            gateway: { routes: [route([{ scopes: ['zzz'] }])] },
          }),
        ),
      ),
      ['scopes.a.implies'],
    );
    // Nor is a route or a rule that is not even an object.
    assert.deepEqual(
      paths(
        issuesOf(() =>
          parseConfig(configSchema, {
            static_tokens: [{ id: 'ci', token: STATIC }],
            scopes: { a: {} },
            rules: [null, { scopes: ['zzz'] }],
            gateway: { routes: [null, route([{ scopes: ['zzz'] }])] },
          }),
        ),
      ),
      ['rules[0]', 'gateway.routes[0]', 'rules[1].scopes[0]', 'gateway.routes[1].rules[0].scopes[0]'],
    );
    // A rule that failed is left alone; the rules beside it are checked.
    assert.deepEqual(
      issuesOf(() =>
        parseConfig(configSchema, {
          static_tokens: [{ id: 'ci', token: STATIC }],
          scopes: { a: {} },
          gateway: {
            routes: [
              route([
                { id: 'x', methods: 'GET', scopes: ['zzz'] },
                { id: 'x', path: '/a', scopes: ['b'] },
              ]),
            ],
          },
        }),
      ),
      [
        {
          path: 'gateway.routes[0].rules[0].methods',
          message: 'expected a list (write each method as an item starting with "- "), got a string',
        },
        {
          path: 'gateway.routes[0].rules[1].id',
          message: 'rule id "x" is already used by gateway.routes[0].rules[0]; give each rule its own id',
        },
        { path: 'gateway.routes[0].rules[1].scopes[0]', message: 'unknown scope "b"; define it under scopes' },
      ],
    );
  });

  it('checks a route pattern beside a field of the route that failed', () => {
    const match = { host: 'bad host!', path: '/a/**/b' };
    const issues = issuesOf(() =>
      parseConfig(configSchema, {
        static_tokens: [{ id: 'ci', token: STATIC }],
        gateway: { routes: [{ id: 'r', match, upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules: [{}] }] },
      }),
    );
    assert.deepEqual(issues, [
      {
        path: 'gateway.routes[0].match.host',
        message: 'write a host name (api.example.com) or a wildcard (*.example.com), without port',
      },
      { path: 'gateway.routes[0].match.path', message: '"**" is allowed only as the last segment, e.g. /api/**' },
    ]);
  });

  it('a match.methods or match.host of the wrong type is a ConfigError, not a TypeError from the pattern check', () => {
    for (const match of [
      { path_prefix: '/', methods: 5 },
      { path: '/a', methods: { get: true } },
      { path: '/a', host: 7 },
    ]) {
      const issues = issuesOf(() =>
        parseConfig(configSchema, {
          static_tokens: [{ id: 'ci', token: STATIC }],
          gateway: { routes: [{ id: 'r', match, upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules: [{}] }] },
        }),
      );
      assert.equal(issues.length, 1, JSON.stringify(issues));
      assert.match(issues[0]?.path ?? '', /^gateway\.routes\[0\]\.match\.(methods|host)$/);
    }
  });

  it('reports a problem of the scope catalogue once, however many verifiers the routes need', () => {
    const route = (id: string, auth: string) => ({ id, upstream: { url: 'http://127.0.0.1:9' }, auth, rules: [{}] });
    const issues = issuesOf(() =>
      parseConfig(configSchema, {
        issuers: [{ issuer: 'https://a.test', audiences: ['x'], jwks_uri: 'https://a.test/jwks' }],
        static_tokens: [{ id: 'ci', token: STATIC }],
        scopes: { a: { implies: ['a'] } },
        gateway: { routes: [route('j', 'jwt'), route('s', 'static')] },
      }),
    );
    assert.deepEqual(issues, [{ path: 'scopes.a.implies', message: 'scopes imply each other in a cycle: a → a' }]);
  });
});

describe('tessera gateway and tessera serve: a schema error and what depends on how they run the gateway, in one round', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-one-round-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('prints every problem in one error and exits 2', () => {
    const file = join(dir, 'tessera.yaml');
    writeFileSync(
      file,
      `${yaml('soon')}    - id: minted
      match: { path_prefix: /minted }
      upstream: { url: "http://127.0.0.1:9", credential: { type: exchange, audience: "https://up.test", scopes: [api:write] } }
      auth: static
      rules: [{}]
`,
    );
    const r = spawnSync(process.execPath, [MAIN, 'gateway', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(
      r.stderr,
      [
        `tessera: invalid configuration in ${file} (4 problems):`,
        `  token_service.access_token_ttl: ${NOT_A_DURATION}`,
        '  gateway.routes[0].rules[0].scopes[1]: unknown scope "api:delete"; define it under scopes',
        '  gateway.routes[1].upstream.credential.scopes[0]: unknown scope "api:write"; define it under scopes',
        '  gateway.routes[1].upstream.credential.type: exchange needs the token service: run the gateway with `tessera serve` and set gateway.exchange_client',
        '',
      ].join('\n'),
    );
  });

  it('tessera serve: an exchange route without gateway.exchange_client is in the same error', () => {
    const file = join(dir, 'serve.yaml');
    const route = `    - id: minted
      upstream: { url: "http://127.0.0.1:9", credential: { type: exchange, audience: "https://up.test" } }
      auth: static
      rules: [{}]
`;
    const body = `token_service: { access_token_ttl: soon }\nstatic_tokens: [{ id: ci, token: "${STATIC}" }]\ngateway:\n  routes:\n${route}`;
    writeFileSync(file, body);
    const serve = () => spawnSync(process.execPath, [MAIN, 'serve', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    let r = serve();
    assert.equal(r.status, 2, r.stderr);
    assert.equal(
      r.stderr,
      `tessera: invalid configuration in ${file} (2 problems):\n  token_service.access_token_ttl: ${NOT_A_DURATION}\n  gateway.routes[0].upstream.credential.type: exchange needs the token service: run the gateway with \`tessera serve\` and set gateway.exchange_client\n`,
    );
    writeFileSync(file, body.replace('gateway:\n', 'gateway:\n  exchange_client: gateway\n'));
    r = serve();
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr, `tessera: invalid configuration in ${file} (1 problem):\n  token_service.access_token_ttl: ${NOT_A_DURATION}\n`);
  });

  it('says the gateway section is missing in the same error as the schema errors', () => {
    const file = join(dir, 'no-gateway.yaml');
    writeFileSync(file, 'token_service: { access_token_ttl: soon }\n');
    const r = spawnSync(process.execPath, [MAIN, 'gateway', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(
      r.stderr,
      `tessera: invalid configuration in ${file} (2 problems):\n  token_service.access_token_ttl: ${NOT_A_DURATION}\n  gateway: the gateway section is missing; add gateway.routes\n`,
    );
  });
});
