/**
 * The route's rules through the real gateway: a claim condition (`tenant: ":tenant"`) compared with
 * the path the upstream acts on, whatever spelling or claim shape a caller tries, and rules that
 * could not do what they say refused at load.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../../../src/core/errors.ts';
import {
  AUDIENCE,
  baseConfig,
  mcpRoute,
  parse,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from '../../helpers.ts';

/** A GET with the path sent byte for byte (fetch's URL parser would resolve `%2e%2e` itself). */
function get(base: string, path: string, bearer: string): Promise<number> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, headers: { authorization: `Bearer ${bearer}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode as number));
    });
    req.on('error', reject);
    req.end();
  });
}

type RouteInput = NonNullable<Parameters<typeof startGateway>[0]['gateway']>['routes'][number];
const route = (rules: RouteInput['rules'], upstream = 'http://127.0.0.1:9'): RouteInput => ({
  id: 'api',
  match: { path_prefix: '/api' },
  upstream: { url: upstream },
  auth: 'jwt',
  audience: AUDIENCE,
  rules,
});

describe('gateway: a tenant claim condition', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          route(
            [
              { id: 'tenant', path: '/api/tenants/:tenant/**', scopes: ['api:read'], claims: { tenant: ':tenant' } },
              { id: 'rest', path: '/api/**', scopes: ['api:read'] },
            ],
            upstream.url,
          ),
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('attack: no spelling of another tenant path passes acme (encoded, %2F, ;, dot segments, //, fullwidth, NFD)', async () => {
    const acme = await token({ scope: 'api:read', tenant: 'acme' });
    const café = await token({ scope: 'api:read', tenant: 'caf\u00e9' });
    const n = upstream.seen.length;
    for (const [bearer, path, status, reason] of [
      [acme, '/api/tenants/evil/x', 403, 'policy_condition_failed'],
      [acme, '/api/tenants/%65vil/x', 403, 'policy_condition_failed'],
      [acme, '/api/tenants/ACME/x', 403, 'policy_condition_failed'],
      [acme, '/api/tenants/%EF%BD%81cme/x', 403, 'policy_condition_failed'], // fullwidth ａcme
      [café, '/api/tenants/cafe%CC%81/x', 403, 'policy_condition_failed'], // NFD of the NFC claim
      [acme, '/api/tenants/acme%2Fevil/x', 400, 'request_path_invalid'],
      [acme, '/api/tenants/acme;evil/x', 400, 'request_path_invalid'],
      [acme, '/api/tenants/acme/%2e%2e/evil/x', 400, 'request_path_invalid'],
      [acme, '/api/tenants/acme/..%2F..%2Fevil', 400, 'request_path_invalid'],
      [acme, '/api/tenants/acme/%252e%252e/evil', 400, 'request_path_invalid'],
      [acme, '/api/tenants//evil/x', 400, 'request_path_invalid'],
      [acme, '/api/tenants/acme%20/x', 400, 'request_path_invalid'],
    ] as const) {
      assert.equal(await get(gw.url, path, bearer), status, path);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, reason, path);
    }
    assert.equal(upstream.seen.length, n);
    // Its own tenant, however spelled, reaches the upstream as the path decided.
    for (const path of ['/api/tenants/acme/x', '/api/tenants/%61cme/x']) {
      assert.equal(await get(gw.url, path, acme), 200, path);
      assert.equal(upstream.seen.at(-1)?.url, '/api/tenants/acme/x');
    }
  });

  it('attack: a tenant claim that is a list, an object, a number, empty or missing satisfies no tenant', async () => {
    const n = upstream.seen.length;
    for (const tenant of [['acme', 'evil'], { evil: true }, 42, '', undefined]) {
      const bearer = await token(tenant === undefined ? { scope: 'api:read' } : { scope: 'api:read', tenant });
      for (const path of ['/api/tenants/evil/x', '/api/tenants/42/x', '/api/tenants/acme/x']) {
        assert.equal(await get(gw.url, path, bearer), 403, `${JSON.stringify(tenant)} ${path}`);
        assert.equal((await requestEvents(gw)).at(-1)?.reason, 'policy_condition_failed');
      }
    }
    assert.equal(upstream.seen.length, n);
  });
});

describe('gateway: rules that cannot do what they say are refused at load', () => {
  /** Starting a gateway with `rules` fails with an error matching `expected` (one that starts is closed). */
  const refused = async (rules: RouteInput['rules'], expected: RegExp) => {
    const gw = await startGateway({ ...baseConfig(), gateway: { routes: [route(rules)] } }).catch((e: unknown) => e);
    if (!(gw instanceof Error)) await (gw as TestGateway).close();
    assert.match(gw instanceof Error ? gw.message : 'the gateway started', expected);
  };

  it('attack: a narrower rule after a broader one (never reached: /api/admin/** decided by /api/**) stops the load', async () => {
    await refused(
      [
        { id: 'read', path: '/api/**', scopes: ['api:read'] },
        { id: 'admin', path: '/api/admin/**', scopes: ['admin'] },
      ],
      /gateway\.routes\[0\]\.rules\[1\]: this rule is never reached: gateway\.routes\[0\]\.rules\[0\] \("read"\) comes first/,
    );
  });

  it('attack: a tool rule after `tool: "*"` (admin.delete granted on api:read) stops the load; the narrow rule first loads and decides', async () => {
    const start = (rules: RouteInput['rules'], upstream = 'http://127.0.0.1:9') =>
      startGateway({ ...baseConfig(), gateway: { routes: [mcpRoute(upstream, rules)] } });
    const gw = await start([
      { id: 'tools', tool: '*', scopes: ['api:read'] },
      { id: 'delete', tool: 'admin.delete', scopes: ['admin'] },
      { id: 'protocol', scopes: ['api:read'] },
    ]).catch((e: unknown) => e);
    if (!(gw instanceof Error)) await (gw as TestGateway).close();
    assert.match(
      gw instanceof Error ? gw.message : 'the gateway started',
      /gateway\.routes\[0\]\.rules\[1\]: this rule is never reached: gateway\.routes\[0\]\.rules\[0\] \("tools"\) comes first .*put the narrower rule first/,
    );
    const refusedToo = await start([
      { id: 'calls', rpc: 'tools/*', scopes: ['api:read'] },
      { id: 'delete', tool: 'admin.delete', scopes: ['admin'] },
    ]).catch((e: unknown) => e);
    if (!(refusedToo instanceof Error)) await (refusedToo as TestGateway).close();
    assert.match(refusedToo instanceof Error ? refusedToo.message : 'the gateway started', /rules\[1\]: this rule is never reached/);

    const upstream = await startUpstream();
    const ok = await start(
      [
        { id: 'delete', tool: 'admin.delete', scopes: ['admin'] },
        { id: 'tools', tool: '*', scopes: ['api:read'] },
        { id: 'protocol', scopes: ['api:read'] },
      ],
      upstream.url,
    );
    try {
      const reader = await token({ scope: 'api:read' });
      const call = async (name: string) => {
        const res = await fetch(`${ok.url}/mcp`, {
          method: 'POST',
          headers: { authorization: `Bearer ${reader}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${name}"}}`,
        });
        await res.body?.cancel();
        const event = (await requestEvents(ok)).at(-1);
        return [res.status, event?.reason, event?.detail?.rule];
      };
      const n = upstream.seen.length;
      assert.deepEqual(await call('admin.delete'), [403, 'scope_insufficient', 'delete']);
      assert.equal(upstream.seen.length, n);
      assert.deepEqual(await call('files.read'), [200, 'ok', 'tools']);
      assert.equal(upstream.seen.length, n + 1);
    } finally {
      await ok.close();
      await upstream.close();
    }
  });

  it('attack: a parameter named for a member every object has (:__proto__, :constructor) stops the load, in a route’s match.path and in its rules', () => {
    const input = {
      ...baseConfig(),
      gateway: {
        routes: [
          {
            ...route([{ path: '/api/users/:__proto__', claims: { sub: ':__proto__' } }]),
            match: { path: '/api/:constructor/**' },
          },
        ],
      },
    };
    assert.throws(
      () => parse(input),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.deepEqual(
          e.issues.map((i) => [i.path, i.message]),
          [
            [
              'gateway.routes[0].match.path',
              '":constructor" names a member every JavaScript object has; give the parameter a name of its own, such as :constructor_id',
            ],
            [
              'gateway.routes[0].rules[0].path',
              '":__proto__" names a member every JavaScript object has; give the parameter a name of its own, such as :proto_id',
            ],
          ],
        );
        return true;
      },
    );
  });

  it('a route’s match.path parameters select the route only: naming one twice stops the load, and a rule cannot borrow one for its condition', () => {
    const load = (match: { path: string }, rules: RouteInput['rules']) => {
      try {
        parse({ ...baseConfig(), gateway: { routes: [{ ...route(rules), match }] } });
        return [];
      } catch (e) {
        assert.ok(e instanceof ConfigError);
        return e.issues.map((i) => [i.path, i.message]);
      }
    };
    // Read as "both segments equal", which no pattern checks.
    assert.deepEqual(load({ path: '/api/orgs/:org/teams/:org/**' }, [{ scopes: ['api:read'] }]), [
      ['gateway.routes[0].match.path', '":org" appears twice in "/api/orgs/:org/teams/:org/**"; give each parameter its own name'],
    ]);
    assert.deepEqual(load({ path: '/api/:tenant/**' }, [{ claims: { tenant: ':tenant' } }]), [
      ['gateway.routes[0].rules[0].claims.tenant', '":tenant" names a path parameter, but this rule has no path'],
    ]);
    // The rule's own :tenant, wherever the route's is: the whole request path is matched.
    assert.deepEqual(load({ path: '/api/:tenant/**' }, [{ path: '/api/*/teams/:tenant', claims: { tenant: ':tenant' } }]), []);
  });

  it('attack: a path naming a parameter twice, and a :param condition on a rule without a path, stop the load', async () => {
    await refused(
      [{ path: '/api/orgs/:tenant/teams/:tenant', claims: { tenant: ':tenant' } }],
      /gateway\.routes\[0\]\.rules\[0\]\.path.*":tenant" appears twice/s,
    );
    await refused(
      [{ methods: ['GET'], claims: { tenant: ':tenant' } }],
      /gateway\.routes\[0\]\.rules\[0\]\.claims\.tenant.*this rule has no path/s,
    );
  });
});

describe('gateway: MCP tool names are compared exactly', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          mcpRoute(upstream.url, [
            { id: 'write', tool: 'files.write', scopes: ['admin'] },
            { id: 'rest', scopes: ['api:read'] },
          ]),
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = async (name: string, bearer: string) => {
    const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${name}"}}`;
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body,
    });
    await res.body?.cancel();
    return { status: res.status, reason: (await requestEvents(gw)).at(-1)?.reason, body };
  };

  it('attack: a case variant is another tool, reaching the upstream as decided; a look-alike (Cyrillic е, fullwidth) is refused', async () => {
    const reader = await token({ scope: 'api:read' });
    const n = upstream.seen.length;
    const exact = await call('files.write', reader);
    assert.deepEqual([exact.status, exact.reason], [403, 'scope_insufficient']);
    // MCP tool names are case-sensitive: `Files.Write` is not files.write, to the policy as to an
    // MCP server; the upstream gets the name the policy decided on, byte for byte.
    const variant = await call('Files.Write', reader);
    assert.equal(variant.status, 200);
    assert.equal(upstream.seen.length, n + 1);
    assert.equal(upstream.seen.at(-1)?.body, variant.body);
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.rule, 'rest');
    for (const name of ['files.writ\\u0435', 'files.writ\u0435', '\uff46iles.write', 'files.write ']) {
      const { status, reason } = await call(name, reader);
      assert.deepEqual([status, reason], [400, 'mcp_tool_name_invalid'], name);
    }
    assert.equal(upstream.seen.length, n + 1);
  });
});
