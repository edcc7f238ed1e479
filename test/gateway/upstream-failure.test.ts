/**
 * Upstream failures: down (502), slow to answer (504), silent mid-body (the response is cut),
 * and none of them leaks anything the upstream said.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

describe('gateway: upstream failures', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let deadPort: number;
  before(async () => {
    // A port that was free a moment ago: connections are refused.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    deadPort = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    upstream = await startUpstream((req, res) => {
      if (req.url === '/slow') {
        setTimeout(() => res.writeHead(200).end('late'), 2000).unref();
        return;
      }
      if (req.url === '/stall') {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream-internal': 'db-7.internal' });
        res.write('partial');
        return; // never ends
      }
      res.writeHead(500, { 'x-upstream-internal': 'db-7.internal' }).end('stack trace at db-7.internal');
    });
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          { id: 'down', match: { path_prefix: '/down' }, upstream: { url: `http://127.0.0.1:${deadPort}` }, auth: 'none' },
          {
            id: 'slow',
            match: { path_prefix: '/' },
            upstream: { url: upstream.url, timeouts: { header: '300ms', idle: '300ms' } },
            auth: 'none',
          },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('answers 502 when the upstream is down, with a fixed body', async () => {
    const res = await fetch(`${gw.url}/down/x`);
    assert.equal(res.status, 502);
    assert.deepEqual(await res.json(), { error: 'bad_gateway', error_description: 'The upstream service is unavailable.' });
    const e = (await requestEvents(gw)).at(-1)!;
    assert.equal(e.reason, 'upstream_unavailable');
    assert.equal(e.upstream_status, undefined);
  });

  it('answers 504 when the upstream does not answer in time', async () => {
    const start = Date.now();
    const res = await fetch(`${gw.url}/slow`);
    assert.equal(res.status, 504);
    assert.ok(Date.now() - start < 1500);
    assert.deepEqual(await res.json(), { error: 'gateway_timeout', error_description: 'The upstream service did not answer in time.' });
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'upstream_timeout');
  });

  it('cuts a response whose body stalls past the idle timeout', async () => {
    const res = await fetch(`${gw.url}/stall`);
    assert.equal(res.status, 200);
    await assert.rejects(res.text());
    const e = (await requestEvents(gw)).at(-1)!;
    assert.equal(e.detail?.upstream_error, 'idle_timeout');
  });

  it('passes an upstream error response through as the upstream’s own answer', async () => {
    const res = await fetch(`${gw.url}/boom`);
    assert.equal(res.status, 500);
    await res.text();
  });

  it('counts upstream errors in metrics', async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(text, /tessera_gateway_upstream_errors_total\{route="down",kind="connect"\} [1-9]/);
    assert.match(text, /tessera_gateway_upstream_errors_total\{route="slow",kind="header_timeout"\} [1-9]/);
  });
});
