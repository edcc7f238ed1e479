/**
 * Per-request costs of the gateway's own work, in process (no sockets): what Tessera adds on top of
 * forwarding. `node bench/gateway/micro.ts`
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import pino from 'pino';
import { Registry } from 'prom-client';
import { uuidv7 } from '../../src/audit/id.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { NO_SUB_ID_TRUST } from '../../src/core/verify/principal.ts';
import { compileGateway } from '../../src/gateway/compile.ts';
import { auditEventOf, Exchange } from '../../src/gateway/exchange.ts';
import { upstreamRequestHeaders } from '../../src/gateway/http/headers.ts';
import { auditPath, normalizeTarget } from '../../src/gateway/http/path.ts';
import { requestId, traceContext } from '../../src/gateway/http/trace.ts';
import { randomSessionKey } from '../../src/gateway/mcp/sessions.ts';
import { GatewayMetrics } from '../../src/gateway/metrics.ts';
import { decide } from '../../src/gateway/pipeline/run.ts';
import { UpstreamPools } from '../../src/gateway/proxy/upstreams.ts';
import { createVerifierFromConfig } from '../../src/verifier.ts';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' };
const token = await new SignJWT({ scope: 'api:read', client_id: 'bench-agent' })
  .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' })
  .setIssuer('https://issuer.bench')
  .setAudience('https://api.bench')
  .setSubject('user-1')
  .setJti(randomUUID())
  .setIssuedAt()
  .setExpirationTime('2h')
  .sign(privateKey);
const config = parseConfig(configSchema, {
  issuers: [{ issuer: 'https://issuer.bench', audiences: ['https://api.bench'], algorithms: ['ES256'], jwks: { keys: [jwk] } }],
  scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] } },
  dpop: { mode: 'disabled' },
  gateway: {
    routes: [
      {
        id: 'api',
        upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: 'bench-upstream-credential-0123456789' } },
        auth: 'jwt',
        audience: 'https://api.bench',
        rules: [
          { id: 'read', methods: ['GET', 'HEAD'], path: '/**', scopes: ['api:read'] },
          { id: 'write', path: '/**', scopes: ['api:write'] },
        ],
        identity_headers: ['subject', 'client'],
      },
    ],
  },
});
const state = compileGateway(config, {
  clock: Date.now,
  createVerifier: (c) => createVerifierFromConfig(c, {}),
  upstreamTokenIssuer: undefined,
  pools: new UpstreamPools(),
  onExchangeError: () => undefined,
  mcpSessionKey: { key: randomSessionKey(), random: true },
});
const route = state.routes[0]!;
const headers = {
  host: '127.0.0.1:8080',
  authorization: `Bearer ${token}`,
  'user-agent': 'wrk',
  accept: '*/*',
};
const greq = {
  method: 'GET',
  host: '127.0.0.1',
  path: '/items',
  query: '',
  url: 'http://127.0.0.1:8080/items',
  headers,
  remoteAddress: '127.0.0.1',
};
const metrics = new GatewayMetrics(
  new Registry(),
  {
    verifierCache: () => ({ hits: 0, misses: 0 }),
    auditStats: () => ({ depth: 0, dropped: 0, failed: 0 }),
    activeStreams: () => ({ websocket: 0, http: 0 }),
    inflight: () => 0,
  },
  ['api'],
);
void pino;

async function time(name: string, n: number, fn: () => unknown): Promise<void> {
  for (let i = 0; i < n / 10; i++) await fn();
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn();
  console.log(`${name.padEnd(28)} ${(Number(process.hrtime.bigint() - t) / n / 1000).toFixed(2)} µs`);
}

const N = 100_000;
await time('normalizeTarget+auditPath', N, () => auditPath(normalizeTarget('/items')!.path, ''));
await time('requestId', N, () => requestId(undefined));
await time('traceContext', N, () => traceContext(undefined, undefined));
await time('decide (warm)', N, () => decide(route.pipeline, greq));
await time('verifier.authenticate', N, () => state.verifiers[0]!.authenticate(greq));
await time('upstreamRequestHeaders', N, () =>
  upstreamRequestHeaders(
    headers,
    state.headerPolicy,
    { remoteAddress: '127.0.0.1', proto: 'http', host: '127.0.0.1:8080', trustProxy: false },
    {
      authorization: 'Bearer x',
      'x-request-id': 'r',
      traceparent: 't',
    },
  ),
);
const d = await decide(route.pipeline, greq);
await time('auditEvent+uuid', N, () => {
  const x = new Exchange('gateway.request', 'GET', '127.0.0.1', 0, Date.now());
  x.principal = d.principal;
  x.rule = d.rule;
  x.route = 'api';
  x.path = '/items';
  x.requestId = 'r';
  return auditEventOf(x, uuidv7(x.time), 1.234, NO_SUB_ID_TRUST);
});
const ev = (() => {
  const x = new Exchange('gateway.request', 'GET', '127.0.0.1', 0, Date.now());
  x.principal = d.principal;
  x.rule = d.rule;
  return auditEventOf(x, uuidv7(x.time), 1.234, NO_SUB_ID_TRUST);
})();
await time('JSON.stringify(event)', N, () => JSON.stringify(ev));
await time('metrics.request', N, () => metrics.request('api', 'allow', 200, 0.001));
