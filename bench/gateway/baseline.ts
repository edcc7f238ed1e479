/**
 * The baseline: a bare node:http + undici reverse proxy with no authentication, written the way
 * fast-proxy and @fastify/reply-from forward (an undici Pool, `pool.request`, the response body
 * piped to the caller), hop-by-hop headers removed both ways. The difference to Tessera is what
 * Tessera adds: authentication, policy, hygiene, audit, metrics (and a faster forwarding path).
 * `baseline-dispatch.ts` is the floor: the same proxy on undici's raw dispatch handler, as Tessera
 * forwards.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream';
import { type Dispatcher, Pool } from 'undici';

const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'host',
  'proxy-authorization',
]);
const pool = new Pool(process.env.BENCH_UPSTREAM as string, { connections: 128, pipelining: 1 });

function filter(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in h) if (!HOP.has(k)) out[k] = h[k] as string | string[];
  return out;
}

const server = createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool
    .request({
      method: req.method as Dispatcher.HttpMethod,
      path: req.url ?? '/',
      headers: filter(req.headers),
      body: hasBody ? req : null,
    })
    .then(
      (r) => {
        r.body.on('error', () => undefined);
        if (res.destroyed) {
          r.body.destroy();
          return;
        }
        res.writeHead(r.statusCode, filter(r.headers));
        pipeline(r.body, res, () => undefined);
      },
      () => {
        if (!res.headersSent) res.writeHead(502).end();
        else res.destroy();
      },
    );
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`));
process.on('SIGTERM', () => process.exit(0));
