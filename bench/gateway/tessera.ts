/**
 * Tessera's gateway as the benchmark runs it: JWT authentication (ES256, local JWKS), a scope rule,
 * a static upstream credential, identity headers, audit events as JSON lines to a file, metrics on.
 * The forward-auth endpoint is enabled for the nginx + auth_request runs (BENCH_FA_CACHE_TTL lets nginx
 * cache allow decisions). Prints `{"port":N}`.
 */
import { join } from 'node:path';
import pino from 'pino';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { serveGateway } from '../../src/gateway/serve.ts';

const env = process.env;
/** The forward-auth shared secret; bench/gateway/run.ts writes the same into the nginx config. */
const BENCH_FA_SECRET = 'bench-forward-auth-secret-0123456789';
// BENCH_VARIANT (for finding where time goes): `noaudit` drops the audit file, `public` also
// drops authentication (auth: none).
const variant = env.BENCH_VARIANT ?? '';
const config = parseConfig(
  configSchema,
  {
    issuers: [
      {
        issuer: env.BENCH_ISSUER as string,
        audiences: [env.BENCH_AUDIENCE as string],
        algorithms: ['ES256'],
        jwks: JSON.parse(env.BENCH_JWKS as string),
      },
    ],
    scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] } },
    dpop: { mode: 'disabled' },
    ...(variant === '' || variant.startsWith('batch')
      ? {
          audit: {
            file: join(env.BENCH_DIR as string, 'audit.jsonl'),
            ...(variant.startsWith('batch') ? { batch_size: Number(variant.slice(5)) } : {}),
          },
        }
      : {}),
    gateway: {
      watch_config: false,
      forward_auth: {
        enabled: true,
        flavor: 'nginx',
        shared_secret: { header: 'x-tessera-forward-auth', value: BENCH_FA_SECRET },
        cache_ttl: Number(env.BENCH_FA_CACHE_TTL ?? 0),
      },
      routes: [
        {
          id: 'api',
          match: { path_prefix: '/' },
          upstream: { url: env.BENCH_UPSTREAM as string, credential: { type: 'static', token: 'bench-upstream-credential-0123456789' } },
          ...(variant === 'public'
            ? { auth: 'none' }
            : {
                auth: 'jwt',
                audience: env.BENCH_AUDIENCE as string,
                rules: [
                  { id: 'read', methods: ['GET', 'HEAD'], path: '/**', scopes: ['api:read'] },
                  { id: 'write', path: '/**', scopes: ['api:write'] },
                ],
                identity_headers: ['subject', 'client'],
              }),
        },
      ],
    },
  },
  { env: {} },
);
const served = await serveGateway({ config, host: '127.0.0.1', port: 0 }, { logger: pino({ level: 'warn' }) });
process.stdout.write(`${JSON.stringify({ port: Number(new URL(served.url).port) })}\n`);
process.on('SIGTERM', () => void served.close({ drainTimeoutMs: 100 }).then(() => process.exit(0)));
