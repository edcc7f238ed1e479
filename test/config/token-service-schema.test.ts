import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../../src/config/load.ts';
import { resolveStore, resolveTokenService } from '../../src/config/token-service-schema.ts';
import { ConfigError } from '../../src/core/errors.ts';

function issues(yaml: string): { path: string; message: string }[] {
  try {
    parseConfigText(yaml);
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return [...e.issues];
  }
  assert.fail('expected a ConfigError');
}

describe('token_service configuration', () => {
  it('revocation_max_staleness: off by default; when set, longer than sync_interval (refused naming the path otherwise)', () => {
    assert.equal(resolveTokenService(parseConfigText('data_dir: /tmp/x\n')).revocation_max_staleness, 0);
    const on = parseConfigText('data_dir: /tmp/x\ntoken_service: { sync_interval: 2s, revocation_max_staleness: 10s }\n');
    assert.equal(resolveTokenService(on).revocation_max_staleness, 10);
    for (const bound of ['2s', '1s']) {
      const found = issues(`data_dir: /tmp/x\ntoken_service: { sync_interval: 2s, revocation_max_staleness: ${bound} }\n`);
      assert.deepEqual(
        found.map((i) => i.path),
        ['token_service.revocation_max_staleness'],
      );
      assert.match(found[0]?.message ?? '', /longer than sync_interval \(2s\)/);
    }
  });

  it('refresh_reuse_interval: 0 (strict) by default; at most 60 s, refused naming the path otherwise', () => {
    assert.equal(resolveTokenService(parseConfigText('data_dir: /tmp/x\n')).refresh_reuse_interval, 0);
    const on = parseConfigText('data_dir: /tmp/x\ntoken_service: { refresh_reuse_interval: 30s }\n');
    assert.equal(resolveTokenService(on).refresh_reuse_interval, 30);
    for (const bad of ['61s', '5m', '-1s']) {
      const found = issues(`data_dir: /tmp/x\ntoken_service: { refresh_reuse_interval: ${bad} }\n`);
      assert.deepEqual(
        found.map((i) => i.path),
        ['token_service.refresh_reuse_interval'],
        bad,
      );
    }
  });

  it('has defaults without a token_service section, the issuer from the listener', () => {
    const config = parseConfigText('data_dir: /tmp/x\nserver: { port: 9000 }\n');
    const ts = resolveTokenService(config);
    assert.equal(ts.issuer, 'http://127.0.0.1:9000');
    assert.equal(ts.access_token_ttl, 600);
    assert.equal(ts.max_chain_depth, 5);
    assert.equal(ts.keys.algorithm, 'ES256');
    assert.equal(ts.admin.scope, 'tessera:admin');
    assert.equal(ts.adminAudience, ts.issuer);
    assert.deepEqual(resolveStore(config), { driver: 'sqlite', path: '/tmp/x/tessera.db', busyTimeoutMs: 5000 });
  });

  it('takes the issuer from server.public_url, then from token_service.issuer', () => {
    assert.equal(
      resolveTokenService(parseConfigText('server: { public_url: "https://auth.example.com/" }')).issuer,
      'https://auth.example.com',
    );
    const c = parseConfigText('server: { public_url: "https://a.example.com" }\ntoken_service: { issuer: "https://b.example.com/t" }');
    assert.equal(resolveTokenService(c).issuer, 'https://b.example.com/t');
  });

  it('parses durations and the key settings', () => {
    const c = parseConfigText(
      'token_service:\n  access_token_ttl: 5m\n  keys: { algorithm: EdDSA, publish_ahead: 2h, jwks_max_age: 5m, rotation_interval: 30d }\n',
    );
    const ts = resolveTokenService(c);
    assert.equal(ts.access_token_ttl, 300);
    assert.equal(ts.keys.algorithm, 'EdDSA');
    assert.equal(ts.keys.publish_ahead, 7200);
    assert.equal(ts.keys.rotation_interval, 30 * 86400);
  });

  it('refuses a registration rate_limit.rate below one a day (its Retry-After would be no integer), saying what to write', () => {
    const [i] = issues('token_service:\n  registration: { rate_limit: { rate: 1e-21 } }\n');
    assert.equal(i?.path, 'token_service.registration.rate_limit.rate');
    assert.match(i?.message ?? '', /write at least 0\.0000116, about one registration a day/);
    assert.match(i?.message ?? '', /0\.0000116/);
  });

  it('names the exact path of every problem, with what to write instead', () => {
    const found = issues(`
token_service:
  issuer: "http://auth.example.com"
  access_tokn_ttl: 5m
  max_chain_depth: 0
  keys:
    algorithm: HS256
    publish_ahead: 1m
    jwks_max_age: 10m
store:
  driver: mysql
`);
    const byPath = new Map(found.map((i) => [i.path, i.message]));
    assert.match(byPath.get('token_service.issuer') ?? '', /https/);
    assert.match(byPath.get('token_service.access_tokn_ttl') ?? '', /did you mean "access_token_ttl"/);
    assert.ok(byPath.has('token_service.max_chain_depth'));
    assert.match(byPath.get('token_service.keys.algorithm') ?? '', /ES256, EdDSA, RS256/);
    assert.match(byPath.get('store.driver') ?? '', /"sqlite" or "postgres"/);
  });

  it('refuses a publication lead shorter than the JWKS cache lifetime', () => {
    const found = issues('token_service:\n  keys: { publish_ahead: 1m, jwks_max_age: 10m }\n');
    assert.deepEqual(
      found.map((i) => i.path),
      ['token_service.keys.publish_ahead'],
    );
    assert.match(found[0]?.message ?? '', /jwks_max_age/);
  });

  it('refuses a default lifetime above the maximum and a too-short rotation interval', () => {
    const found = issues('token_service:\n  access_token_ttl: 2h\n  max_access_token_ttl: 1h\n  keys: { rotation_interval: 1h }\n');
    assert.deepEqual(found.map((i) => i.path).sort(), ['token_service.access_token_ttl', 'token_service.keys.rotation_interval']);
  });

  it('configures PostgreSQL from the environment, and requires its URL with driver postgres', () => {
    const c = parseConfigText('store:\n  driver: postgres\n  postgres: { url: "${DATABASE_URL}", schema: tess }\n', 'tessera.yaml', {
      DATABASE_URL: 'postgres://u@db.example/tessera',
    });
    assert.deepEqual(resolveStore(c), {
      driver: 'postgres',
      url: 'postgres://u@db.example/tessera',
      schema: 'tess',
      poolSize: 10,
      requestTimeoutMs: 5000,
    });
    assert.deepEqual(
      issues('store: { driver: postgres }').map((i) => i.path),
      ['store.postgres'],
    );
  });

  it('bounds a PostgreSQL request at store.postgres.request_timeout, and refuses a bound of zero or over a minute', () => {
    const c = parseConfigText(
      'store:\n  driver: postgres\n  postgres: { url: "postgres://db/t", request_timeout: 1500ms }\n',
      'tessera.yaml',
      {},
    );
    assert.equal((resolveStore(c) as { requestTimeoutMs: number }).requestTimeoutMs, 1500);
    for (const bad of ['0', '2m']) {
      assert.deepEqual(
        issues(`store:\n  driver: postgres\n  postgres: { url: "postgres://db/t", request_timeout: ${bad} }\n`).map((i) => i.path),
        ['store.postgres.request_timeout'],
        bad,
      );
    }
    // Too long: the advice names the real range (0 is refused, so not "from 0 to 1m").
    assert.deepEqual(
      issues('store:\n  driver: postgres\n  postgres: { url: "postgres://db/t", request_timeout: 2m }\n').map((i) => i.message),
      ['2m is longer than allowed here: write a duration from 0.1s to 1m'],
    );
  });

  it('suggests a postgres section that is valid YAML when pasted as written', () => {
    const [issue] = issues('store:\n  driver: postgres\n');
    const suggestion = /add (postgres: .*)$/.exec(issue?.message ?? '')?.[1];
    assert.ok(suggestion, issue?.message);
    const c = parseConfigText(`store:\n  driver: postgres\n  ${suggestion}\n`, 'tessera.yaml', { DATABASE_URL: 'postgres://db/t' });
    assert.equal(resolveStore(c).driver, 'postgres');
  });

  it('refuses an issuer with a query or fragment (RFC 8414 §2)', () => {
    assert.deepEqual(
      issues('token_service: { issuer: "https://a.example.com/?x=1" }').map((i) => i.path),
      ['token_service.issuer'],
    );
  });

  it('attack: an empty query or fragment ("?" or "#" alone) is a query or fragment too: refused, not an issuer whose token endpoint URL every proof for the origin names', () => {
    // `https://a.example.com/?` + `/oauth2/token` is a URL whose path is `/`: the DPoP htu of the
    // token endpoint would be the origin's root, which a proof made for any other resource there names.
    for (const issuer of ['https://a.example.com/?', 'https://a.example.com/#', 'https://a.example.com?']) {
      assert.deepEqual(
        issues(`token_service: { issuer: "${issuer}" }`).map((i) => i.path),
        ['token_service.issuer'],
        issuer,
      );
    }
  });
});

describe('token_service.authorization', () => {
  it('is off by default, with a 60 s code and a 30 day grant', () => {
    const a = resolveTokenService(parseConfigText('server: { port: 9000 }')).authorization;
    assert.equal(a.enabled, false);
    assert.equal(a.code_ttl, 60);
    assert.equal(a.grant_ttl, 30 * 86_400);
    assert.equal(a.consent_ttl, 600);
    assert.equal(a.trusted_header, undefined);
  });

  it('takes the trusted proxy headers with their defaults', () => {
    const secret = 'x'.repeat(32);
    const a = resolveTokenService(
      parseConfigText(
        `token_service: { authorization: { enabled: true, trusted_header: { secret: "${secret}", allowed_peers: [10.0.0.0/8] } } }`,
      ),
    ).authorization;
    assert.deepEqual(a.trusted_header, {
      user_header: 'x-forwarded-user',
      email_header: 'x-forwarded-email',
      subject_from: 'user',
      allowed_peers: ['10.0.0.0/8'],
      secret_header: 'x-tessera-proxy-secret',
      secret,
    });
  });

  it('takes an upstream OpenID Connect login with its defaults', () => {
    const a = resolveTokenService(
      parseConfigText(
        'token_service: { authorization: { enabled: true, oidc: { issuer: "https://idp.example.com", client_id: tessera, client_secret: s3cret, allowed_domains: [Example.COM] } } }',
      ),
    ).authorization;
    assert.deepEqual(a.oidc, {
      issuer: 'https://idp.example.com',
      client_id: 'tessera',
      client_secret: 's3cret',
      scopes: ['openid', 'email', 'profile'],
      subject_claim: 'sub',
      allowed_domains: ['example.com'],
      session_ttl: 600,
      login_ttl: 600,
      return_window: 60,
      max_token_requests_in_flight: 32,
      callback_rate_limit: { enabled: false, rate: 0.2, burst: 20 },
    });
  });

  it('oidc.return_window: whole seconds from 1 s to 10 m (60 s by default); anything else is refused at its path, saying what to write', () => {
    const oidc = (rw: string) =>
      `token_service: { authorization: { enabled: true, oidc: { issuer: "https://idp.example.com", client_id: tessera, client_secret: s3cret, return_window: ${rw} } } }`;
    for (const [given, seconds] of [
      ['2', 2],
      ['2s', 2],
      ['90s', 90],
      ['10m', 600],
      ['1', 1],
    ] as const) {
      assert.equal(resolveTokenService(parseConfigText(oidc(given))).authorization.oidc?.return_window, seconds, given);
    }
    for (const [given, message] of [
      ['0', /whole seconds from 1 to 600/],
      ['0s', /whole seconds from 1 to 600/],
      ['1.5', /whole seconds from 1 to 600/],
      ['500ms', /whole seconds from 1 to 600/],
      // The advice names the window's real range: 0 is refused, so not "from 0 to 10m".
      ['601', /601 is longer than allowed here: write a duration from 1s to 10m$/],
      ['11m', /11m is longer than allowed here: write a duration from 1s to 10m$/],
      ['-5', /whole seconds|not a duration/],
      ['soon', /not a duration/],
      ['"60"', /has no unit/],
    ] as const) {
      const found = issues(oidc(given));
      assert.deepEqual(
        found.map((i) => i.path),
        ['token_service.authorization.oidc.return_window'],
        given,
      );
      assert.match(found[0]?.message ?? '', message, given);
    }
  });

  it('takes exactly one of trusted_header and oidc, and names each oidc mistake at its path', () => {
    const oidc = 'oidc: { issuer: "https://idp.example.com", client_id: tessera, client_secret: s3cret }';
    const both = issues(`token_service: { authorization: { enabled: true, trusted_header: { secret: "${'s'.repeat(32)}" }, ${oidc} } }`);
    assert.deepEqual(
      both.map((i) => i.path),
      ['token_service.authorization.oidc'],
    );
    assert.match(both[0]?.message ?? '', /not both/);
    const none = issues('token_service: { authorization: { enabled: true } }');
    assert.match(none[0]?.message ?? '', /oidc: \{ issuer, client_id/);
    const bad = issues(
      'token_service: { authorization: { enabled: true, oidc: { issuer: "http://idp.example.com", client_id: tessera, client_secret: "", scopes: [email], subject_claim: name, allowed_domains: ["@x"] } } }',
    );
    assert.deepEqual(bad.map((i) => i.path).sort(), [
      'token_service.authorization.oidc.allowed_domains[0]',
      'token_service.authorization.oidc.client_secret',
      'token_service.authorization.oidc.issuer',
      'token_service.authorization.oidc.scopes',
      'token_service.authorization.oidc.subject_claim',
    ]);
  });

  it('login cookies in clear: an upstream login on a plain-http issuer that is not loopback is refused', () => {
    // Its session cookie could be neither Secure nor __Host-: readable on the wire, and settable
    // by anyone on the path (login CSRF: the person approves grants as the attacker).
    const oidc =
      'token_service: { authorization: { enabled: true, oidc: { issuer: "https://idp.example.com", client_id: t, client_secret: s } } }';
    for (const server of ['server: { public_url: "http://tessera.corp.example:8080" }', 'server: { host: 0.0.0.0 }']) {
      const found = issues(`${server}\n${oidc}`);
      assert.deepEqual(
        found.map((i) => i.path),
        ['token_service.authorization.oidc'],
        server,
      );
      assert.match(found[0]?.message ?? '', /https/);
    }
    const clear = issues(oidc.replace('{ authorization', '{ issuer: "http://tessera.corp.example", authorization'));
    assert.ok(clear.some((i) => i.path === 'token_service.issuer'));
    for (const server of [
      'server: { public_url: "https://tessera.example.com" }',
      'server: { public_url: "http://localhost:8080" }',
      '{}',
    ]) {
      assert.ok(resolveTokenService(parseConfigText(`${server === '{}' ? '' : server}\n${oidc}`)).authorization.oidc, server);
    }
  });

  it('names each mistake at its path, all at once', () => {
    const found = issues('token_service: { authorization: { enabled: true, code_ttl: 5m } }');
    assert.deepEqual(
      found.map((i) => i.path).sort(),
      ['token_service.authorization.code_ttl', 'token_service.authorization.trusted_header'].sort(),
    );
    assert.match(found.find((i) => i.path.endsWith('trusted_header'))?.message ?? '', /TESSERA_PROXY_SECRET/);
    const more = issues('token_service: { authorization: { trusted_header: { secret: short, allowed_peers: [10.0.0.0/99, nope] } } }');
    assert.deepEqual(more.map((i) => i.path).sort(), [
      'token_service.authorization.trusted_header.allowed_peers[0]',
      'token_service.authorization.trusted_header.allowed_peers[1]',
      'token_service.authorization.trusted_header.secret',
    ]);
  });
});

describe('token_service.registration', () => {
  it('is off by default', () => {
    const r = resolveTokenService(parseConfigText('server: { port: 9000 }')).registration;
    assert.equal(r.enabled, false);
    assert.equal(r.open, false);
  });

  it('refuses to be enabled without a gate, resources, or the authorization endpoint, each at its path', () => {
    const found = issues('token_service: { registration: { enabled: true } }');
    assert.deepEqual(found.map((i) => i.path).sort(), [
      'token_service.registration.audiences',
      'token_service.registration.enabled',
      'token_service.registration.initial_access_token',
    ]);
    assert.match(found.find((i) => i.path.endsWith('initial_access_token'))?.message ?? '', /open: true/);
    const both = issues(
      `token_service: { authorization: { enabled: true, trusted_header: { secret: "${'s'.repeat(32)}" } }, registration: { enabled: true, open: true, initial_access_token: "${'t'.repeat(32)}", audiences: [https://mcp.test] } }`,
    );
    assert.deepEqual(
      both.map((i) => i.path),
      ['token_service.registration.open'],
    );
    assert.deepEqual(
      issues('token_service: { registration: { initial_access_token: short } }').map((i) => i.path),
      ['token_service.registration.initial_access_token'],
    );
  });

  it('refuses registration scopes outside the scope catalogue, at their path', () => {
    const found = issues('scopes: { mcp:tools: {} }\ntoken_service: { registration: { scopes: [mcp:tools, mcp:typo, "mcp:*"] } }');
    assert.deepEqual(
      found.map((i) => i.path),
      ['token_service.registration.scopes[1]'],
    );
    assert.match(found[0]?.message ?? '', /not in the scope catalogue/);
  });

  it('attack: refuses the admin scope in the registration maximum: every dynamically registered client (anyone, with open registration) is registered with the whole maximum and would be an administrator', () => {
    const registration = (scopes: string, admin = '') =>
      `${admin}token_service: { authorization: { enabled: true, trusted_header: { secret: "${'s'.repeat(32)}", allowed_peers: ["127.0.0.1"] } }, registration: { enabled: true, open: true, audiences: ["http://127.0.0.1:8080"], scopes: [${scopes}] } }\n`;
    assert.deepEqual(issues(registration('mcp:tools, "tessera:admin"')), [
      {
        path: 'token_service.registration.scopes[1]',
        message:
          '"tessera:admin" is the admin scope (token_service.admin.scope): it is given only to clients added with tessera clients add --scopes tessera:admin, never by registration',
      },
    ]);
    // Another admin scope name is held to the same, with a scope catalogue too.
    assert.deepEqual(
      issues(
        `scopes: { mcp:tools: {} }\n${registration('"ops:admin"').replace('token_service: { ', 'token_service: { admin: { scope: ops:admin }, ')}`,
      ).map((i) => i.path),
      ['token_service.registration.scopes[0]'],
    );
  });

  it('attack: refuses an admin scope that is a wildcard or no scope name, rather than granting the admin API to every client given that wildcard', () => {
    for (const scope of ['*', 'api:*']) {
      assert.deepEqual(
        issues(`token_service: { admin: { scope: "${scope}" } }\n`).map((i) => i.path),
        ['token_service.admin.scope'],
        scope,
      );
    }
    // A space: no token could carry it, and the admin API would refuse every caller without a word.
    assert.deepEqual(issues('token_service: { admin: { scope: "tessera admin" } }\n'), [
      {
        path: 'token_service.admin.scope',
        message: 'a scope name: printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)',
      },
    ]);
    assert.equal(resolveTokenService(parseConfigText('token_service: { admin: { scope: "ops:admin" } }\n')).admin.scope, 'ops:admin');
  });
});

describe('token_service.cors', () => {
  it('is empty by default, and takes exact origins (https, or http on loopback) and "*" alone', () => {
    assert.deepEqual(resolveTokenService(parseConfigText('data_dir: /tmp/x\n')).cors.allowed_origins, []);
    const c = parseConfigText(
      'token_service:\n  cors: { allowed_origins: ["https://app.example.com", "http://localhost:6274", "https://[::1]:8443"] }\n',
    );
    assert.deepEqual(resolveTokenService(c).cors.allowed_origins, [
      'https://app.example.com',
      'http://localhost:6274',
      'https://[::1]:8443',
    ]);
    assert.deepEqual(resolveTokenService(parseConfigText('token_service: { cors: { allowed_origins: ["*"] } }')).cors.allowed_origins, [
      '*',
    ]);
  });

  it('refuses each entry that is no origin as browsers send it, at its path, saying what to write', () => {
    const found = issues(`
token_service:
  cors:
    allowed_origins:
      - https://app.example.com/
      - https://app.example.com/callback
      - https://App.Example.com
      - https://app.example.com:443
      - https://*.example.com
      - http://app.example.com
      - "null"
      - app.example.com
      - https://ok.example.com
      - https://user:hunter2@app.example.com
`);
    const byPath = new Map(found.map((i) => [i.path, i.message]));
    const at = (i: number) => byPath.get(`token_service.cors.allowed_origins[${i}]`) ?? '';
    assert.match(at(0), /write https:\/\/app\.example\.com \(no path, no trailing slash\)/);
    assert.match(at(1), /write https:\/\/app\.example\.com /);
    assert.match(at(2), /write https:\/\/app\.example\.com /);
    assert.match(at(3), /write https:\/\/app\.example\.com /);
    assert.match(at(4), /list each origin exactly/);
    assert.match(at(5), /https origin/);
    assert.match(at(6), /not an origin; write scheme:\/\/host\[:port\]/);
    assert.match(at(7), /not an origin|https origin/);
    assert.equal(byPath.has('token_service.cors.allowed_origins[8]'), false);
    assert.equal(at(9), 'remove the user:password@ part: write https://app.example.com');
    assert.equal(found.length, 9);
  });

  it('refuses "*" beside listed origins (a list suggests a restriction that "*" undoes)', () => {
    const found = issues('token_service:\n  cors: { allowed_origins: ["https://app.example.com", "*"] }\n');
    assert.deepEqual(
      found.map((i) => i.path),
      ['token_service.cors.allowed_origins[1]'],
    );
    assert.match(found[0]?.message ?? '', /write it alone/);
  });
});

describe('issuers[].exchange_clients (who may exchange an external issuer’s tokens)', () => {
  const idp = (extra: string) =>
    `issuers:\n  - issuer: https://idp.example.com\n    audiences: [https://agents.example.com]\n    jwks_uri: https://idp.example.com/jwks\n${extra}`;

  it('is unset by default, and takes a list of client ids (empty included)', () => {
    assert.equal(parseConfigText(idp('')).issuers[0]?.exchange_clients, undefined);
    assert.deepEqual(parseConfigText(idp('    exchange_clients: [broker, agent.v2_x-1]\n')).issuers[0]?.exchange_clients, [
      'broker',
      'agent.v2_x-1',
    ]);
    assert.deepEqual(parseConfigText(idp('    exchange_clients: []\n')).issuers[0]?.exchange_clients, []);
  });

  it('refuses an entry that is no client id, naming its exact path and what to write', () => {
    const found = issues(idp('    exchange_clients: [broker, "my broker", 7]\n'));
    assert.deepEqual(
      found.map((i) => i.path),
      ['issuers[0].exchange_clients[1]', 'issuers[0].exchange_clients[2]'],
    );
    assert.match(found[0]?.message ?? '', /"my broker" is not a client id: write the id of a token-service client/);
  });

  it('refuses a list that is no list, at its path', () => {
    const [i] = issues(idp('    exchange_clients: broker\n'));
    assert.equal(i?.path, 'issuers[0].exchange_clients');
  });

  it('refuses it on the token service’s own issuer, whose tokens are exchanged only by a client they name', () => {
    const [i] = issues(
      'server: { public_url: "https://auth.example.com" }\nissuers:\n  - issuer: https://auth.example.com\n    audiences: [https://api.example.com]\n    jwks_uri: https://auth.example.com/.well-known/jwks.json\n    exchange_clients: [broker]\n',
    );
    assert.equal(i?.path, 'issuers[0].exchange_clients');
    assert.match(i?.message ?? '', /the token service’s own issuer.*remove exchange_clients here/);
  });
});

describe('issuers[].algorithms of the token service’s own issuer', () => {
  const own = (keys: string, algorithms: string) =>
    `server: { public_url: "https://auth.example.com" }\n${keys}issuers:\n  - issuer: https://auth.example.com\n    audiences: [https://api.example.com]\n    jwks_uri: https://auth.example.com/.well-known/jwks.json\n${algorithms}`;

  it('attack: refuses an allowlist without the algorithm its new keys are generated with (token_service.keys.algorithm): every token signed after the next rotation would be refused by this configuration’s own gateway', () => {
    const [i, ...rest] = issues(own('token_service: { keys: { algorithm: RS256 } }\n', '    algorithms: [ES256]\n'));
    assert.equal(rest.length, 0);
    assert.equal(i?.path, 'issuers[0].algorithms');
    assert.match(i?.message ?? '', /token_service\.keys\.algorithm is RS256.*add RS256/);
    // The default algorithm (ES256) too, when the token_service section leaves it out.
    assert.equal(issues(own('', '    algorithms: [EdDSA]\n'))[0]?.path, 'issuers[0].algorithms');
  });

  it('takes an allowlist that lists it, the default one, and another issuer’s without it', () => {
    parseConfigText(own('token_service: { keys: { algorithm: RS256 } }\n', '    algorithms: [ES256, RS256]\n'));
    parseConfigText(own('token_service: { keys: { algorithm: EdDSA } }\n', ''));
    parseConfigText(
      'token_service: { keys: { algorithm: RS256 } }\nissuers:\n  - issuer: https://idp.example.com\n    audiences: [https://api.example.com]\n    jwks_uri: https://idp.example.com/jwks\n    algorithms: [ES256]\n',
    );
  });
});
