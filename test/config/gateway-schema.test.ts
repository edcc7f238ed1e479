/**
 * Gateway configuration: every problem is reported with its path and what to write instead.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { everything } from '../../src/config/cross-check.ts';
import { parseSize } from '../../src/config/gateway-schema.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';
import { configEnv } from '../../src/config/secrets-env.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { gatewayRunChecks } from '../../src/gateway/check.ts';
import { createGateway } from '../../src/gateway/gateway.ts';
import { baseConfig, key, parse, silent } from '../gateway/helpers.ts';

const MCP = 'https://mcp.example.com/mcp';
const route = (over: Record<string, unknown> = {}) => ({
  id: 'r',
  upstream: { url: 'http://127.0.0.1:9' },
  auth: 'jwt',
  rules: [{}],
  ...over,
});

function issues(gateway: unknown, extra: Record<string, unknown> = {}): { path: string; message: string }[] {
  try {
    const config = parse({ ...baseConfig(), ...extra, gateway } as never);
    createGateway(config, { logger: silent });
  } catch (e) {
    if (e instanceof ConfigError) return [...e.issues];
    throw e;
  }
  return [];
}

describe('gateway configuration', () => {
  it('accepts a minimal route', () => assert.deepEqual(issues({ routes: [route()] }), []));

  it('refuses a rate_limit.rate below one request a day (its Retry-After would be no integer), saying what to write', () => {
    const [i, more] = issues({ routes: [route({ rate_limit: { rate: 1e-21 } })] });
    assert.equal(more, undefined);
    assert.equal(i?.path, 'gateway.routes[0].rate_limit.rate');
    assert.match(i?.message ?? '', /write at least 0\.0000116, about one request a day/);
    assert.match(i?.message ?? '', /0\.0000116/);
    assert.deepEqual(issues({ routes: [route({ rate_limit: { rate: 0.0000116 } })] }), []);
  });

  it('refuses a request_timeout shorter than headers_timeout (Node would enforce it only from headers_timeout on), saying what to write; 0 and equal pass', () => {
    const [i, more] = issues({ routes: [route()], limits: { request_timeout: '1s' } });
    assert.equal(more, undefined);
    assert.equal(i?.path, 'gateway.limits.request_timeout');
    assert.match(i?.message ?? '', /shorter than headers_timeout \(20s\).*write at least 20s, 0 for no limit, or lower headers_timeout/);
    assert.deepEqual(issues({ routes: [route()], limits: { request_timeout: 0 } }), []);
    assert.deepEqual(issues({ routes: [route()], limits: { headers_timeout: '1s', request_timeout: '1s' } }), []);
  });

  it('requires rules on an authenticated route, and says how to allow any caller', () => {
    const [i] = issues({ routes: [route({ rules: undefined })] });
    assert.equal(i?.path, 'gateway.routes[0].rules');
    assert.match(i?.message ?? '', /rules: \[\{\}\]/);
  });

  it('refuses passthrough unless explicitly allowed', () => {
    const r = route({ upstream: { url: 'http://127.0.0.1:9', credential: { type: 'passthrough' } } });
    assert.equal(issues({ routes: [r] })[0]?.path, 'gateway.routes[0].upstream.credential.type');
    assert.deepEqual(issues({ routes: [r], allow_passthrough: true }), []);
  });

  describe('credential.mint_timeout (exchange)', () => {
    const exchange = (over: Record<string, unknown>) =>
      route({ upstream: { url: 'http://127.0.0.1:9', credential: { type: 'exchange', audience: 'https://up.test', ...over } } });
    const parsed = (over: Record<string, unknown>) => parse({ ...baseConfig(), gateway: { routes: [exchange(over)] } } as never);
    const refusal = (over: Record<string, unknown>) => {
      try {
        parsed(over);
      } catch (e) {
        if (e instanceof ConfigError) return [...e.issues];
        throw e;
      }
      return [];
    };

    it('defaults to 5 s; 0.1 s and 60 s are accepted', () => {
      const credential = (over: Record<string, unknown>) => parsed(over).gateway!.routes[0]!.upstream.credential;
      assert.deepEqual(
        [credential({}), credential({ mint_timeout: '100ms' }), credential({ mint_timeout: '1m' })].map((c) =>
          c.type === 'exchange' ? c.mint_timeout : undefined,
        ),
        [5, 0.1, 60],
      );
    });

    for (const [value, message] of [
      ['forever', /"forever" is not a duration/],
      [-1, /is not a duration/],
      [0, /write at least 0\.1s: every mint would fail/],
      ['50ms', /write at least 0\.1s/],
      // The advice names the real range: 0 is refused, so not "from 0 to 1m".
      ['2m', /2m is longer than allowed here: write a duration from 0\.1s to 1m$/],
    ] as const) {
      it(`refuses mint_timeout ${JSON.stringify(value)} with its path`, () => {
        const found = refusal({ mint_timeout: value });
        assert.deepEqual(
          found.map((i) => i.path),
          ['gateway.routes[0].upstream.credential.mint_timeout'],
        );
        assert.match(found[0]!.message, message);
      });
    }

    it('is an unknown key on a credential that mints nothing', () => {
      const found = (() => {
        try {
          parse({
            ...baseConfig(),
            gateway: {
              routes: [route({ upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: 'x', mint_timeout: '1s' } } })],
            },
          } as never);
        } catch (e) {
          if (e instanceof ConfigError) return [...e.issues];
          throw e;
        }
        return [];
      })();
      assert.deepEqual(
        found.map((i) => i.path),
        ['gateway.routes[0].upstream.credential.mint_timeout'],
      );
      assert.match(found[0]!.message, /unknown key "mint_timeout"/);
    });
  });

  it('refuses identity, rules and exchange on a public route', () => {
    const found = issues({ routes: [route({ auth: 'none', identity_headers: ['subject'] })] }).map((i) => i.path);
    assert.deepEqual(found.sort(), ['gateway.routes[0].identity_headers', 'gateway.routes[0].rules']);
  });

  it('reports unknown scopes in route rules with their path', () => {
    const [i] = issues({ routes: [route({ rules: [{ scopes: ['api:delete'] }] })] });
    assert.equal(i?.path, 'gateway.routes[0].rules[0].scopes[0]');
  });

  it('reports a route needing a verifier that is not configured', () => {
    assert.equal(issues({ routes: [route({ auth: 'introspection' })] })[0]?.path, 'gateway.routes[0].auth');
    assert.equal(issues({ routes: [route({ auth: ['jwt', 'static'] })] }, { static_tokens: [] })[0]?.path, 'gateway.routes[0].auth[1]');
  });

  it('refuses duplicate route ids, bad upstream URLs and credentials in URLs', () => {
    const found = issues({
      routes: [route(), route({ upstream: { url: 'http://user:pw@127.0.0.1:9' } }), route({ id: 'x', upstream: { url: 'ftp://x' } })],
    });
    const paths = found.map((i) => i.path);
    assert.ok(paths.includes('gateway.routes[1].id'));
    assert.ok(paths.includes('gateway.routes[1].upstream.url'));
    assert.ok(paths.includes('gateway.routes[2].upstream.url'));
  });

  it('suggests the right key for a misspelling', () => {
    const [i] = issues({ routes: [route({ audiance: 'x' })] });
    assert.equal(i?.path, 'gateway.routes[0].audiance');
    assert.match(i?.message ?? '', /did you mean "audience"/);
  });

  it('refuses bad peer lists', () => {
    assert.equal(
      issues({ routes: [route()], forward_auth: { enabled: true, flavor: 'nginx', allowed_peers: ['nope'] } })[0]?.path,
      'gateway.forward_auth.allowed_peers[0]',
    );
  });

  it('requires the forward-auth flavor (no guessing the proxy from the headers a request carries)', () => {
    const [i] = issues({ routes: [route()], forward_auth: { enabled: true } });
    assert.equal(i?.path, 'gateway.forward_auth.flavor');
    assert.match(i?.message ?? '', /nginx, traefik, caddy or envoy/);
    const [bad] = issues({ routes: [route()], forward_auth: { enabled: true, flavor: 'haproxy' } });
    assert.equal(bad?.path, 'gateway.forward_auth.flavor');
    assert.match(bad?.message ?? '', /nginx, traefik, caddy or envoy/);
    assert.deepEqual(issues({ routes: [route()], forward_auth: { enabled: false } }), []);
  });

  it('requires a forward-auth shared secret when a route injects an upstream credential', () => {
    const cred = route({ upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: 'upstream-token' } } });
    const [i] = issues({ routes: [cred], forward_auth: { enabled: true, flavor: 'nginx' } });
    assert.equal(i?.path, 'gateway.forward_auth.shared_secret');
    assert.match(i?.message ?? '', /FORWARD_AUTH_SECRET/);
    assert.deepEqual(issues({ routes: [route()], forward_auth: { enabled: true, flavor: 'nginx' } }), []);
    assert.deepEqual(
      issues({
        routes: [cred],
        forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { value: 'a-long-enough-secret-value' } },
      }),
      [],
    );
    const [short] = issues({ routes: [cred], forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { value: 'short' } } });
    assert.equal(short?.path, 'gateway.forward_auth.shared_secret.value');
  });

  it('header injection: refuses a static upstream credential no header can carry (a secret file’s trailing newline), without showing it; the gateway would answer 502 for every request and crash on a forward-auth check', () => {
    for (const token of ['upstream-token\n', 'upstream-token\r\nX-Admin: 1', ' upstream-token', 'up\u0000stream', 'upstream-tökén']) {
      const cred = route({ upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: '${GATEWAY_TOKEN}' } } });
      let error: unknown;
      try {
        parse({ ...baseConfig(), gateway: { routes: [cred] } } as never, { GATEWAY_TOKEN: token });
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof ConfigError, JSON.stringify(token));
      assert.equal(error.issues[0]?.path, 'gateway.routes[0].upstream.credential.token');
      assert.match(error.issues[0]?.message ?? '', /printable ASCII/);
      assert.ok(!error.message.includes('upstream-t'), error.message);
    }
    const ok = route({ upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: 'key with=inner spaces~' } } });
    assert.deepEqual(issues({ routes: [ok] }), []);
  });

  it('tool-rule bypass: refuses MCP tool rules on a route that is not an MCP route (its bodies are never read)', () => {
    const [i, ...rest] = issues({
      routes: [route({ rules: [{ tool: 'files.delete', scopes: ['admin'] }, { scopes: ['api:read'] }] })],
    });
    assert.equal(i?.path, 'gateway.routes[0].rules[0].tool');
    assert.match(i?.message ?? '', /add `mcp: \{\}` to this route/);
    assert.deepEqual(rest, []);
  });

  it('extended-card leak: refuses a route that is both MCP and A2A (served as MCP, its extended card would pass unrewritten)', () => {
    assert.deepEqual(
      issues({
        routes: [
          route({
            mcp: {},
            audience: MCP,
            match: { path_prefix: '/mcp' },
            a2a: { token_url: 'https://tessera.example.com/oauth/token', scopes: { 'api:read': 'Read' } },
          }),
        ],
      }),
      [
        {
          path: 'gateway.routes[0].a2a',
          message: 'a route is an MCP route or an A2A route, not both; give each its own route (and path_prefix)',
        },
      ],
    );
  });

  it('accepts MCP tool rules on an MCP route', () => {
    assert.deepEqual(
      issues({
        routes: [
          route({
            mcp: {},
            audience: MCP,
            match: { path_prefix: '/mcp' },
            rules: [{ tool: 'files.*', scopes: ['admin'] }, { scopes: ['api:read'] }],
          }),
        ],
      }),
      [],
    );
  });

  it('rpc-rule bypass: refuses JSON-RPC method rules on a route that is not an MCP route (its bodies are never read)', () => {
    const [i, ...rest] = issues({
      routes: [route({ rules: [{ rpc: 'resources/read', scopes: ['admin'] }, { scopes: ['api:read'] }] })],
    });
    assert.equal(i?.path, 'gateway.routes[0].rules[0].rpc');
    assert.match(i?.message ?? '', /an rpc rule needs an MCP route.*add `mcp: \{\}` to this route, or remove `rpc`/);
    assert.deepEqual(rest, []);
  });

  it('accepts JSON-RPC method rules (exact and glob) on an MCP route', () => {
    assert.deepEqual(
      issues({
        routes: [
          route({
            mcp: {},
            audience: MCP,
            match: { path_prefix: '/mcp' },
            rules: [{ rpc: 'resources/read', scopes: ['admin'] }, { rpc: 'prompts/*', scopes: ['admin'] }, { scopes: ['api:read'] }],
          }),
        ],
      }),
      [],
    );
  });

  it('accepts MCP tool rules beside forward-auth: MCP routes are served by the gateway itself (forward-auth refuses them)', () => {
    assert.deepEqual(
      issues({
        routes: [route({ mcp: {}, audience: MCP, rules: [{ tool: 'files.delete', scopes: ['admin'] }, { scopes: ['api:read'] }] })],
        forward_auth: { enabled: true, flavor: 'nginx' },
      }),
      [],
    );
  });

  it('refuses an MCP route without authentication, and one matched by a pattern without mcp.resource', () => {
    const [pub] = issues({ routes: [route({ auth: 'none', rules: undefined, mcp: {} })] });
    assert.equal(pub?.path, 'gateway.routes[0].auth');
    assert.match(pub?.message ?? '', /an MCP route .* set auth: jwt/);
    const [pattern] = issues({ routes: [route({ match: { path: '/mcp/:tenant' }, audience: MCP, mcp: {} })] });
    assert.equal(pattern?.path, 'gateway.routes[0].mcp.resource');
    assert.deepEqual(issues({ routes: [route({ match: { path: '/mcp/:t' }, audience: MCP, mcp: { resource: MCP } })] }), []);
    for (const resource of [`${MCP}?tenant=a`, `${MCP}#frag`]) {
      const [q] = issues({ routes: [route({ audience: resource, mcp: { resource } })] });
      assert.equal(q?.path, 'gateway.routes[0].mcp.resource', resource);
      assert.match(q?.message ?? '', /no query or fragment/);
    }
    const [size] = issues({ routes: [route({ mcp: { max_message_size: 'lots' } })] });
    assert.equal(size?.path, 'gateway.routes[0].mcp.max_message_size');
  });

  it('token misuse: refuses an MCP route that checks no audience (a token the issuer minted for another API would pass), or another audience than its mcp.resource', () => {
    const twoApis = {
      issuers: [
        {
          issuer: 'https://idp.example.com',
          audiences: ['https://api.example.com', 'https://mcp.example.com/mcp'],
          algorithms: ['ES256'],
          jwks: { keys: [key.jwk] },
        },
      ],
    };
    const [none, ...rest] = issues({ routes: [route({ mcp: {} })] }, twoApis);
    assert.equal(none?.path, 'gateway.routes[0].audience');
    assert.match(none?.message ?? '', /set audience: to the MCP resource URL/);
    assert.deepEqual(rest, []);
    const [other] = issues(
      { routes: [route({ audience: 'https://api.example.com', mcp: { resource: 'https://mcp.example.com/mcp' } })] },
      twoApis,
    );
    assert.equal(other?.path, 'gateway.routes[0].audience');
    assert.match(other?.message ?? '', /https:\/\/mcp\.example\.com\/mcp/);
    assert.deepEqual(
      issues({ routes: [route({ audience: 'https://mcp.example.com/mcp', mcp: { resource: 'https://mcp.example.com/mcp' } })] }, twoApis),
      [],
    );
    // Static tokens have no audience.
    assert.deepEqual(issues({ routes: [route({ auth: 'static', mcp: {} })] }), []);
  });

  it('token misuse: refuses an MCP route whose audience is not the resource it advertises from server.public_url + path_prefix (the gateway writes it in normal form; the issuer and the route compare exactly)', () => {
    const at = (public_url: string, audience: string, path_prefix = '/mcp') =>
      issues({ routes: [route({ match: { path_prefix }, audience, mcp: {} })] }, { server: { public_url } });
    // Written with an upper-case host and the default port: the metadata says https://mcp.example.com/mcp,
    // MCP clients ask the issuer for that, and a route (and client) registered otherwise refuses them.
    const wrongs: [string, string][] = [
      ['https://MCP.example.com', 'https://MCP.example.com/mcp'],
      ['https://mcp.example.com:443', 'https://mcp.example.com:443/mcp'],
      ['https://mcp.example.com', 'https://mcp.example.com/mcp/'],
      ['https://gw.example.com/tessera/', MCP],
    ];
    for (const [publicUrl, audience] of wrongs) {
      const [wrong, ...rest] = at(publicUrl, audience);
      assert.equal(wrong?.path, 'gateway.routes[0].audience', `${publicUrl} ${audience}`);
      assert.match(wrong?.message ?? '', /advertises|advertised/);
      assert.deepEqual(rest, []);
    }
    assert.deepEqual(at('https://MCP.example.com:443/', MCP), []);
    assert.deepEqual(at('https://gw.example.com/tessera/', 'https://gw.example.com/tessera/mcp'), []);
    assert.deepEqual(at('https://mcp.example.com', 'https://mcp.example.com/', '/'), []);
    // Without public_url the resource is the request's origin, not known at load.
    assert.deepEqual(issues({ routes: [route({ match: { path_prefix: '/mcp' }, audience: 'https://x.example/mcp', mcp: {} })] }), []);
  });

  it('refuses durations that run a timer for longer than Node timers can (they would fire at once)', () => {
    const found = issues(
      {
        routes: [route({ upstream: { url: 'http://127.0.0.1:9', timeouts: { idle: '30d' } } })],
        drain_timeout: '30d',
        timeouts: { header: '25d' },
      },
      { audit: { flush_interval: '365d' } },
    );
    assert.deepEqual(
      found.map((i) => [i.path, i.message]),
      [
        ['gateway.routes[0].upstream.timeouts.idle', '30d is longer than allowed here: write a duration from 0 to 24d'],
        ['gateway.timeouts.header', '25d is longer than allowed here: write a duration from 0 to 24d'],
        ['gateway.drain_timeout', '30d is longer than allowed here: write a duration from 0 to 24d'],
        ['audit.flush_interval', '365d is longer than allowed here: write a duration from 0 to 24d'],
      ],
    );
    assert.deepEqual(issues({ routes: [route()], drain_timeout: '24d' }), []);
  });

  it('says a route without auth needs one, instead of calling "undefined" an unknown method', () => {
    const { auth: _, ...noAuth } = route();
    assert.deepEqual(issues({ routes: [noAuth] }), [
      { path: 'gateway.routes[0].auth', message: 'required; write one of none, jwt, static, introspection (or a list of them)' },
    ]);
  });

  it('parses sizes', () => {
    assert.equal(parseSize('10mb'), 10 * 1024 * 1024);
    assert.equal(parseSize('64KB'), 65536);
    assert.equal(parseSize(12), 12);
    assert.equal(parseSize('ten'), undefined);
  });
});

describe('tessera serve: operations paths that are the token service’s', () => {
  const serveIssues = (operations: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
    const config = configSchema.parse({
      ...extra,
      static_tokens: [{ id: 'ci', token: 'static-gateway-token-0123456789-abcdefghij' }],
      gateway: { operations, routes: [{ id: 'r', upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules: [{}] }] },
    });
    return gatewayRunChecks(config, everything, { exchange: 'exchange_client', tokenService: true });
  };

  it('refuses a metrics, health or readiness path under /oauth2/ or on the JWKS or metadata path (the token service answered it and the gateway never saw it), naming the path and what to write', () => {
    assert.deepEqual(serveIssues({ metrics_path: '/oauth2/token', health_path: '/.well-known/jwks.json', ready_path: '/OAuth2' }), [
      {
        path: 'gateway.operations.health_path',
        message:
          '"/.well-known/jwks.json" is the token service\'s under tessera serve (it answers /oauth2/, /.well-known/jwks.json and /.well-known/oauth-authorization-server); write a path outside them, such as /healthz',
      },
      {
        path: 'gateway.operations.ready_path',
        message:
          '"/OAuth2" is the token service\'s under tessera serve (it answers /oauth2/, /.well-known/jwks.json and /.well-known/oauth-authorization-server); write a path outside them, such as /readyz',
      },
      {
        path: 'gateway.operations.metrics_path',
        message:
          '"/oauth2/token" is the token service\'s under tessera serve (it answers /oauth2/, /.well-known/jwks.json and /.well-known/oauth-authorization-server); write a path outside them, such as /metrics',
      },
    ]);
    assert.equal(serveIssues({ health_path: '/.well-known/oauth-authorization-server/x' }).length, 1);
    // An issuer with a path: its endpoints are below it.
    const withPath = serveIssues(
      { metrics_path: '/auth/oauth2/introspect', health_path: '/auth/.well-known/jwks.json' },
      { token_service: { issuer: 'https://id.example.com/auth' } },
    );
    assert.deepEqual(
      withPath.map((i) => i.path),
      ['gateway.operations.health_path', 'gateway.operations.metrics_path'],
    );
    // Elsewhere, and under tessera gateway (no token service), nothing is refused.
    assert.deepEqual(serveIssues({ metrics_path: '/ops/metrics', health_path: '/.well-known/health' }), []);
    const config = configSchema.parse({
      static_tokens: [{ id: 'ci', token: 'static-gateway-token-0123456789-abcdefghij' }],
      gateway: {
        operations: { metrics_path: '/oauth2/token' },
        routes: [{ id: 'r', upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules: [{}] }],
      },
    });
    assert.deepEqual(gatewayRunChecks(config, everything, { required: true, exchange: 'unavailable' }), []);
  });
});

describe('gateway configuration: an upstream credential that is a static gateway token', () => {
  // The upstream is handed the credential with every request: were it a static gateway token's
  // value, the upstream (or whoever reads its logs) could present it to the gateway with that
  // token's scopes.
  const SHARED = 'shared-secret-value-0123456789-abcdefghijkl';
  const config = (credentialToken: string, staticToken: string) => ({
    ...baseConfig(),
    static_tokens: [
      { id: 'ci', token: 'static-gateway-token-0123456789-abcdefghij', scopes: ['api:read'] },
      { id: 'deploy', token: staticToken, scopes: ['admin'] },
    ],
    gateway: {
      routes: [
        route({ id: 'plain' }),
        route({ id: 'billing', upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: credentialToken } } }),
      ],
    },
  });
  const refusal = (f: () => unknown): ConfigError => {
    try {
      f();
    } catch (e) {
      if (e instanceof ConfigError) return e;
      throw e;
    }
    assert.fail('the configuration loaded');
  };
  const assertRefused = (e: ConfigError) => {
    assert.deepEqual(
      e.issues.map((i) => i.path),
      ['gateway.routes[1].upstream.credential.token'],
    );
    const [i] = e.issues;
    assert.match(i?.message ?? '', /static_tokens\[1\] \("deploy"\)/);
    assert.match(i?.message ?? '', /openssl rand -base64 32/);
    // Neither value is printed: not in the issues, not in the error's message.
    const shown = `${JSON.stringify(e.issues)} ${e.message} ${String(e.stack)}`;
    for (let n = 0; n + 8 <= SHARED.length; n++) assert.ok(!shown.includes(SHARED.slice(n, n + 8)), `${shown} quotes the secret`);
  };

  it('attack: a route whose static upstream credential has the value of a static token is refused at load (and at compile when built without the schema), naming the credential and the static token, never the value', () => {
    assertRefused(refusal(() => parse(config(SHARED, SHARED) as never)));
    // Built without the schema (createGateway of a configuration object): refused at compile too.
    const built = structuredClone(configSchema.parse(config('upstream-own-secret-0123456789-abcdefghij', SHARED)));
    const credential = built.gateway?.routes[1]?.upstream.credential;
    assert.equal(credential?.type, 'static');
    if (credential?.type === 'static') credential.token = SHARED;
    assertRefused(refusal(() => createGateway(built, { logger: silent })));
  });

  it('attack: the same value reached through ${VAR} from the environment is compared as resolved', () => {
    const e = refusal(() =>
      parse(config('${UPSTREAM_TOKEN}', '${DEPLOY_TOKEN}') as never, { UPSTREAM_TOKEN: SHARED, DEPLOY_TOKEN: SHARED }),
    );
    assertRefused(e);
  });

  it('attack: the same value, one written in the file and the other from <data_dir>/secrets.env, is refused as the CLI loads it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cred-'));
    try {
      mkdirSync(join(dir, 'state'), { mode: 0o700 });
      writeFileSync(join(dir, 'state', 'secrets.env'), `GATEWAY_TOKEN=${SHARED}\n`, { mode: 0o600 });
      const file = join(dir, 'tessera.yaml');
      const c = config('${GATEWAY_TOKEN}', SHARED);
      writeFileSync(file, JSON.stringify({ data_dir: 'state', ...c }));
      assertRefused(refusal(() => loadConfigFile(file, configEnv(file, {}))));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a credential with a value of its own loads', () => {
    const loaded = parse(config('upstream-own-secret-0123456789-abcdefghij', SHARED) as never);
    const gw = createGateway(loaded, { logger: silent });
    assert.ok(gw);
    const env = { UPSTREAM_TOKEN: 'upstream-own-secret-0123456789-abcdefghij', DEPLOY_TOKEN: SHARED };
    assert.ok(parse(config('${UPSTREAM_TOKEN}', '${DEPLOY_TOKEN}') as never, env));
  });
});
