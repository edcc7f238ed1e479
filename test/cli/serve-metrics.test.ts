/**
 * Prometheus metrics of `tessera serve` without a gateway section (the token service alone, as an
 * Ory Hydra or Keycloak operator runs it): `token_service.operations`, the same metrics by the same
 * names as the token service adds to the gateway's `/metrics`, to `metrics_allowed_peers` only.
 * Real HTTP on loopback; 127.0.0.2 is another loopback address, the peer not allowed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { issuesOf } from '../helpers/config.ts';
import { basic } from '../helpers/issuer.ts';

interface Served {
  readonly running: RunningServer;
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

async function serve(yaml: string): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-metrics-'));
  const config = join(dir, 'tessera.yaml');
  writeFileSync(config, `data_dir: .tessera\nserver: { host: 127.0.0.1, port: 0 }\nscopes:\n  api:read: {}\n${yaml}`);
  await initialize({ config });
  const running = await startServer({ config, logger: pino({ level: 'silent' }) });
  return {
    running,
    url: running.url,
    port: Number(new URL(running.url).port),
    close: async () => {
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One request from `from` (a loopback address) on a fresh connection: status and body. */
function request(port: number, path: string, from: string, headers = ''): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: from }, () =>
      s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${headers}Connection: close\r\n\r\n`),
    );
    let got = '';
    s.on('data', (d) => {
      got += d;
    });
    s.on('error', reject);
    s.on('close', () => resolve({ status: Number(got.split(' ')[1]), body: got.slice(got.indexOf('\r\n\r\n') + 4) }));
  });
}

const tokenRequest = (url: string, authorization: string) =>
  fetch(`${url}/oauth2/token`, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=api:read',
  });

/** The value of the series `name{labels}` in Prometheus text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const ISSUED = 'tessera_token_service_token_requests_total{grant_type="client_credentials",decision="allow",reason="ok",error=""}';
const REFUSED =
  'tessera_token_service_token_requests_total{grant_type="client_credentials",decision="deny",reason="client_secret_mismatch",error="invalid_client"}';

describe('tessera serve without a gateway section: metrics', () => {
  it('/metrics answers Prometheus text with the token counters: a client_credentials token issued, an invalid_client refusal with its reason; the same token service, listener and revocation series as under a gateway; no secret in it', async () => {
    const s = await serve('');
    try {
      const agent = await s.running.service.registerClient({
        id: 'agent',
        scopes: ['api:read'],
        audiences: ['https://api.test'],
        grantTypes: ['client_credentials'],
      });
      const secret = agent.secret as string;
      assert.equal((await tokenRequest(s.url, basic('agent', secret))).status, 200);
      const wrong = 'not-the-secret-0123456789';
      assert.equal((await tokenRequest(s.url, basic('agent', wrong))).status, 401);
      const res = await fetch(`${s.url}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const text = await res.text();
      assert.equal(sample(text, ISSUED), 1, text);
      assert.equal(sample(text, REFUSED), 1, text);
      // The series the token service and the listener add to the gateway's /metrics, by the same names.
      assert.equal(sample(text, 'tessera_token_service_audit_events_dropped_total'), 0);
      assert.ok((sample(text, 'tessera_revocation_log_age_seconds') ?? -1) >= 0, text);
      assert.equal(sample(text, 'tessera_gateway_connections_refused_total{reason="per_address"}'), 0);
      assert.equal(sample(text, 'tessera_gateway_send_timeouts_total{kind="http"}'), 0);
      assert.equal(sample(text, 'tessera_gateway_parser_refusals_total{status="400"}'), 0);
      for (const secretText of [secret, wrong, 'agent']) assert.ok(!text.includes(secretText), `${secretText} in /metrics`);
      // HEAD as GET; another method 405, as the gateway's.
      assert.equal((await fetch(`${s.url}/metrics`, { method: 'HEAD' })).status, 200);
      assert.equal((await fetch(`${s.url}/metrics`, { method: 'POST' })).status, 405);
    } finally {
      await s.close();
    }
  });

  it('a request the listener refuses before the token service sees it (CONNECT, 501) is counted in tessera_gateway_parser_refusals_total, as under a gateway', async () => {
    const s = await serve('');
    try {
      const answer = await new Promise<string>((resolve) => {
        const sock = connect(s.port, '127.0.0.1', () => sock.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'));
        let got = '';
        sock.on('data', (d) => {
          got += d;
        });
        sock.on('close', () => resolve(got));
      });
      assert.match(answer, /^HTTP\/1\.1 501/);
      const text = await (await fetch(`${s.url}/metrics`)).text();
      assert.equal(sample(text, 'tessera_gateway_parser_refusals_total{status="501"}'), 1, text);
    } finally {
      await s.close();
    }
  });

  it('attack: metrics and /readyz checks only to token_service.operations.metrics_allowed_peers (404 and status alone to others); a request relayed by a proxy not in trust_proxy is refused whatever its address; metrics_path moves them', async () => {
    const s = await serve('token_service:\n  operations: { metrics_path: /_tessera/metrics, metrics_allowed_peers: [127.0.0.1] }\n');
    try {
      const allowed = await request(s.port, '/_tessera/metrics', '127.0.0.1');
      assert.equal(allowed.status, 200);
      assert.match(allowed.body, /tessera_token_service_token_requests_total/);
      // Another address: 404, as a path that does not exist, for any method.
      const other = await request(s.port, '/_tessera/metrics', '127.0.0.2');
      assert.equal(other.status, 404);
      assert.doesNotMatch(other.body, /tessera_/);
      // An allowed address relaying for someone else (a sidecar or ingress on loopback): refused.
      for (const h of ['X-Forwarded-For: 203.0.113.9\r\n', 'Forwarded: for=203.0.113.9\r\n', 'X-Real-IP: 203.0.113.9\r\n'])
        assert.equal((await request(s.port, '/_tessera/metrics', '127.0.0.1', h)).status, 404, h);
      // The default path is no longer the metrics.
      assert.equal((await request(s.port, '/metrics', '127.0.0.1')).status, 404);
      // /readyz: its checks to the allowed peer, the status alone to anyone else.
      assert.deepEqual(Object.keys(JSON.parse((await request(s.port, '/readyz', '127.0.0.1')).body)), ['status', 'checks']);
      const probe = await request(s.port, '/readyz', '127.0.0.2');
      assert.equal(probe.status, 200);
      assert.deepEqual(JSON.parse(probe.body), { status: 'ready' });
      assert.equal((await request(s.port, '/healthz', '127.0.0.2')).status, 200);
    } finally {
      await s.close();
    }
  });

  it('behind a proxy listed in token_service.trust_proxy, the client it forwards is checked, not the proxy’s own address', async () => {
    const s = await serve('token_service:\n  trust_proxy: [127.0.0.2]\n  operations: { metrics_allowed_peers: [10.0.0.0/8] }\n');
    try {
      assert.equal((await request(s.port, '/metrics', '127.0.0.2')).status, 404);
      assert.equal((await request(s.port, '/metrics', '127.0.0.2', 'X-Forwarded-For: 198.51.100.7\r\n')).status, 404);
      assert.equal((await request(s.port, '/metrics', '127.0.0.2', 'X-Forwarded-For: 10.1.2.3\r\n')).status, 200);
      // Not from the trusted proxy: its X-Forwarded-For is not believed.
      assert.equal((await request(s.port, '/metrics', '127.0.0.1', 'X-Forwarded-For: 10.1.2.3\r\n')).status, 404);
    } finally {
      await s.close();
    }
  });
});

describe('token_service.operations: configuration', () => {
  const parse = (input: unknown) => parseConfig(configSchema, input, { env: {} });

  it('a bad value is refused at its exact path', () => {
    assert.deepEqual(
      issuesOf(() => parse({ token_service: { operations: { metrics_allowed_peers: ['127.0.0.1', '10.0.0.0/33', 'localhost'] } } })).map(
        (i) => i.path,
      ),
      ['token_service.operations.metrics_allowed_peers[1]', 'token_service.operations.metrics_allowed_peers[2]'],
    );
    assert.deepEqual(
      issuesOf(() => parse({ token_service: { operations: { metrics_path: 'metrics' } } })).map((i) => i.path),
      ['token_service.operations.metrics_path'],
    );
    assert.deepEqual(
      issuesOf(() => parse({ token_service: { operations: { metrics_pth: '/m' } } })).map((i) => i.path),
      ['token_service.operations.metrics_pth'],
    );
    const own = issuesOf(() => parse({ token_service: { operations: { metrics_path: '/oauth2/metrics' } } }));
    assert.deepEqual(
      own.map((i) => i.path),
      ['token_service.operations.metrics_path'],
    );
    assert.match(own[0]?.message ?? '', /token service’s own/);
    assert.deepEqual(
      issuesOf(() => parse({ token_service: { operations: { ready_path: '/metrics' } } })).map((i) => i.path),
      ['token_service.operations'],
    );
  });

  it('token_service.operations beside a gateway section is refused, naming gateway.operations: one listener, one set of operations endpoints', () => {
    const issues = issuesOf(() =>
      parse({
        token_service: { operations: { metrics_path: '/m' } },
        gateway: { routes: [{ id: 'a', upstream: { url: 'http://127.0.0.1:9' }, auth: 'none' }] },
      }),
    );
    assert.deepEqual(
      issues.map((i) => i.path),
      ['token_service.operations'],
    );
    assert.match(issues[0]?.message ?? '', /gateway\.operations/);
  });
});
