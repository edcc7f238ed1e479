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
