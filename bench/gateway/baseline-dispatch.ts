/**
 * The floor: a bare node:http + undici reverse proxy with no authentication, using the same
 * forwarding technique as Tessera (an undici Pool and a raw dispatch handler, hop-by-hop headers
 * removed both ways), so the difference to Tessera is what Tessera adds: authentication, policy,
 * hygiene, audit, metrics.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
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

function requestHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in h) if (!HOP.has(k)) out[k] = h[k] as string | string[];
  return out;
}

const server = createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  let resume: () => void = () => undefined;
  pool.dispatch(
    { method: req.method as Dispatcher.HttpMethod, path: req.url ?? '/', headers: requestHeaders(req.headers), body: hasBody ? req : null },
    {
      onConnect() {},
      onHeaders(status: number, raw: Buffer[], r: () => void) {
        resume = r;
        const headers: string[] = [];
        for (let i = 0; i < raw.length; i += 2) {
          const name = (raw[i] as Buffer).toString('latin1');
          if (!HOP.has(name.toLowerCase())) headers.push(name, (raw[i + 1] as Buffer).toString('latin1'));
        }
        res.writeHead(status, headers);
        return true;
      },
      onData(chunk: Buffer) {
        const ok = res.write(chunk);
        if (!ok) res.once('drain', resume);
        return ok;
      },
      onComplete() {
        res.end();
      },
      onError() {
        if (!res.headersSent) res.writeHead(502).end();
        else res.destroy();
      },
    } as unknown as Dispatcher.DispatchHandler,
  );
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`));
process.on('SIGTERM', () => process.exit(0));
