/**
 * Configuration warnings the gateway gives when it compiles its routes: a route whose match covers
 * an operations path (`gateway.operations`), which the gateway answers itself before any route.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createGateway } from '../../src/gateway/gateway.ts';
import { baseConfig, parse, silent } from './helpers.ts';

const UPSTREAM = 'http://127.0.0.1:9';

/** The operations-path warnings for `routes` (and `operations`), in order. */
function opsWarnings(routes: Record<string, unknown>[], operations: Record<string, unknown> = {}): string[] {
  const routesIn = routes.map((r) => ({ upstream: { url: UPSTREAM }, auth: 'none', ...r }));
  const state = createGateway(parse({ ...baseConfig(), gateway: { routes: routesIn, operations } } as never), { logger: silent }).state;
  return state.warnings.filter((w) => w.includes('answers itself before any route'));
}

describe('gateway: a route whose match covers an operations path', () => {
  it('a route on / covers /healthz, /readyz and /metrics: one warning naming the route, the paths and what to do', () => {
    const [w, ...more] = opsWarnings([{ id: 'api', match: { path_prefix: '/' } }]);
    assert.deepEqual(more, []);
    assert.equal(
      w,
      'route api: its match (path_prefix "/") covers /healthz (gateway.operations.health_path), /readyz (gateway.operations.ready_path) and /metrics (gateway.operations.metrics_path), which the gateway answers itself before any route, so a request for exactly that path never reaches http://127.0.0.1:9; if the upstream must answer it, move the operations path (e.g. gateway.operations.health_path: /_tessera/healthz), else that exact path stays the gateway\'s',
    );
  });

  it('a route without path_prefix or path matches every path, and is told so', () => {
    const [w] = opsWarnings([{ id: 'all' }]);
    assert.match(w ?? '', /^route all: its match \(no path_prefix or path: every path\) covers \/healthz /);
  });

  it('a prefix or a pattern covering one operations path names that one only', () => {
    assert.deepEqual(
      opsWarnings([{ id: 'm', match: { path_prefix: '/metrics' } }]).map((w) => w.slice(0, w.indexOf(', which'))),
      ['route m: its match (path_prefix "/metrics") covers /metrics (gateway.operations.metrics_path)'],
    );
    const [p] = opsWarnings([{ id: 'probe', match: { path: '/readyz' } }]);
    assert.match(
      p ?? '',
      /^route probe: its match \(path "\/readyz"\) covers \/readyz \(gateway\.operations\.ready_path\), which .*gateway\.operations\.ready_path: \/_tessera\/readyz\)/,
    );
  });

  it('no warning when the route matches none of them: /api, /health (segment-wise, not /healthz), /metrics moved away', () => {
    assert.deepEqual(opsWarnings([{ id: 'api', match: { path_prefix: '/api' } }]), []);
    assert.deepEqual(opsWarnings([{ id: 'h', match: { path_prefix: '/health' } }]), []);
    assert.deepEqual(opsWarnings([{ id: 'm', match: { path_prefix: '/metrics' } }], { metrics_path: '/_tessera/metrics' }), []);
    assert.deepEqual(opsWarnings([{ id: 'p', match: { path: '/api/**' } }]), []);
  });

  it('an operations path moved under a route is warned of at its new place', () => {
    const [w] = opsWarnings([{ id: 't', match: { path_prefix: '/_tessera' } }], { metrics_path: '/_tessera/metrics' });
    assert.match(
      w ?? '',
      /^route t: its match \(path_prefix "\/_tessera"\) covers \/_tessera\/metrics \(gateway\.operations\.metrics_path\)/,
    );
  });

  it('a route matching without case covers /metrics through /METRICS; with case it does not', () => {
    assert.equal(opsWarnings([{ id: 'ci', match: { path_prefix: '/METRICS' }, case_insensitive_paths: true }]).length, 1);
    assert.deepEqual(opsWarnings([{ id: 'cs', match: { path_prefix: '/METRICS' } }]), []);
  });

  it('only the route that would get the path is told: not one after a catch-all, but both when the first is for one host', () => {
    const shadowed = opsWarnings([
      { id: 'first', match: { path_prefix: '/' } },
      { id: 'second', match: { path_prefix: '/' } },
    ]);
    assert.deepEqual(
      shadowed.map((w) => w.split(':')[0]),
      ['route first'],
    );
    const byHost = opsWarnings([
      { id: 'one-host', match: { host: 'a.example.com', path_prefix: '/' } },
      { id: 'rest', match: { path_prefix: '/' } },
    ]);
    assert.deepEqual(
      byHost.map((w) => w.split(':')[0]),
      ['route one-host', 'route rest'],
    );
  });
});

/** The forward-auth-path warnings for `routes`, with forward-auth enabled (at `path` when given) or not. */
function faWarnings(routes: Record<string, unknown>[], forwardAuth: { enabled: boolean; path?: string } = { enabled: true }): string[] {
  const routesIn = routes.map((r) => ({ upstream: { url: UPSTREAM }, auth: 'none', ...r }));
  const forward_auth = forwardAuth.enabled
    ? { flavor: 'envoy', shared_secret: { header: 'X-Tessera-Forward-Auth', value: 'f'.repeat(32) }, ...forwardAuth }
    : forwardAuth;
  const state = createGateway(parse({ ...baseConfig(), gateway: { routes: routesIn, forward_auth } } as never), { logger: silent }).state;
  return state.warnings.filter((w) => w.includes('(gateway.forward_auth.path)'));
}

describe('gateway: a route whose match covers the forward-auth path', () => {
  it('a route on / covers /_tessera/auth and below: one warning naming the route, the path and what to do', () => {
    assert.deepEqual(faWarnings([{ id: 'api', match: { path_prefix: '/' } }]), [
      'route api: its match (path_prefix "/") covers /_tessera/auth (gateway.forward_auth.path), which the gateway answers itself before any route, with every path below it, while forward-auth is enabled, so such a request never reaches http://127.0.0.1:9; if the upstream must answer it, move gateway.forward_auth.path to a path the upstream does not use, else those paths stay the gateway\'s',
    ]);
  });

  it('a route without path_prefix or path, or on /_tessera, or a pattern matching the path exactly, is told', () => {
    const head = (ws: string[]) => ws.map((w) => w.slice(0, w.indexOf(', which')));
    assert.deepEqual(head(faWarnings([{ id: 'all' }])), [
      'route all: its match (no path_prefix or path: every path) covers /_tessera/auth (gateway.forward_auth.path)',
    ]);
    assert.deepEqual(head(faWarnings([{ id: 't', match: { path_prefix: '/_tessera' } }])), [
      'route t: its match (path_prefix "/_tessera") covers /_tessera/auth (gateway.forward_auth.path)',
    ]);
    assert.deepEqual(head(faWarnings([{ id: 'p', match: { path: '/_tessera/*' } }])), [
      'route p: its match (path "/_tessera/*") covers /_tessera/auth (gateway.forward_auth.path)',
    ]);
  });

  it('a route entirely below the forward-auth path (the gateway answers the whole prefix) is told so', () => {
    const head = (ws: string[]) => ws.map((w) => w.slice(0, w.indexOf(', which')));
    assert.deepEqual(head(faWarnings([{ id: 'sub', match: { path_prefix: '/_tessera/auth/api' } }])), [
      'route sub: its match (path_prefix "/_tessera/auth/api") covers paths below /_tessera/auth (gateway.forward_auth.path)',
    ]);
    assert.deepEqual(head(faWarnings([{ id: 'pat', match: { path: '/_tessera/auth/:id/**' } }])), [
      'route pat: its match (path "/_tessera/auth/:id/**") covers paths below /_tessera/auth (gateway.forward_auth.path)',
    ]);
    assert.deepEqual(head(faWarnings([{ id: 'moved', match: { path_prefix: '/authz/x' } }], { enabled: true, path: '/authz' })), [
      'route moved: its match (path_prefix "/authz/x") covers paths below /authz (gateway.forward_auth.path)',
    ]);
  });

  it('no warning when forward-auth is off, whatever the route covers', () => {
    assert.deepEqual(faWarnings([{ id: 'api', match: { path_prefix: '/' } }], { enabled: false }), []);
    assert.deepEqual(faWarnings([{ id: 'all' }], { enabled: false }), []);
  });

  it('no warning when the route does not cover it: /api, /_tessera/authz (segment-wise), another case, a pattern with a wildcard above it, the path moved away', () => {
    assert.deepEqual(faWarnings([{ id: 'api', match: { path_prefix: '/api' } }]), []);
    assert.deepEqual(faWarnings([{ id: 'z', match: { path_prefix: '/_tessera/authz' } }]), []);
    assert.deepEqual(faWarnings([{ id: 'cs', match: { path_prefix: '/_TESSERA/AUTH' } }]), []);
    assert.deepEqual(faWarnings([{ id: 'w', match: { path: '/*/auth/x' } }]), []);
    assert.deepEqual(faWarnings([{ id: 't', match: { path_prefix: '/_tessera' } }], { enabled: true, path: '/_auth' }), []);
  });

  it('only the route that would get the path is told: not one after a catch-all, but both when the first is for one host', () => {
    const ids = (ws: string[]) => ws.map((w) => w.split(':')[0]);
    assert.deepEqual(
      ids(
        faWarnings([
          { id: 'first', match: { path_prefix: '/' } },
          { id: 'sub', match: { path_prefix: '/_tessera/auth/x' } },
        ]),
      ),
      ['route first'],
    );
    assert.deepEqual(
      ids(
        faWarnings([
          { id: 'one-host', match: { host: 'a.example.com', path_prefix: '/' } },
          { id: 'rest', match: { path_prefix: '/' } },
        ]),
      ),
      ['route one-host', 'route rest'],
    );
  });
});
