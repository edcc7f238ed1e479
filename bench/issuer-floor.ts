/**
 * Bench child: the node:http floor. Reads the form body and answers with a canned token response
 * of the same size and headers as Tessera's, doing no token work at all. Driven at Tessera's own
 * rate, its CPU per request is what HTTP on loopback costs at that rate.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const body = JSON.stringify({
  access_token: 'x'.repeat(Number(process.env.TOKEN_LENGTH ?? 560)),
  token_type: 'Bearer',
  expires_in: 600,
  scope: 'api:read',
});
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    res.writeHead(200, {
      'cache-control': 'no-store',
      pragma: 'no-cache',
      'x-request-id': crypto.randomUUID(),
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  });
});
server.listen(0, '127.0.0.1', () =>
  process.send?.({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token_path: '/token' }),
);
process.on('message', (m) => {
  if (m === 'cpu') {
    const c = process.cpuUsage();
    process.send?.({ cpu: c.user + c.system });
  } else if (m === 'stop') process.send?.({ stopped: true }, () => process.exit(0));
});
