/**
 * The one upstream every competitor proxies to: a fixed small JSON answer with keep-alive, plus
 * the issuer's JWKS for the stacks that fetch keys by URL. Prints `{"port":N}`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const body = JSON.stringify({
  ok: true,
  items: [
    { id: 1, name: 'alpha' },
    { id: 2, name: 'beta' },
  ],
});
const jwks = process.env.BENCH_JWKS ?? '{"keys":[]}';
const server = createServer((req, res) => {
  if (req.url === '/.well-known/jwks.json') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=3600' }).end(jwks);
    return;
  }
  req.resume();
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`));
