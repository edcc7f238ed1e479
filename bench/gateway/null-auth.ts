/**
 * The ceiling of nginx + auth_request: an authorization server that does no work. It answers every
 * request on a keep-alive connection with the same 200 and the headers the example nginx config
 * reads (an upstream credential, identity headers), straight on `node:net` without an HTTP parser:
 * it only finds where each request head ends (nginx sends no body: proxy_pass_request_body off).
 * Whatever nginx + auth_request reaches with it, no forward-auth server in Node reaches more.
 * Prints `{"port":N}`.
 */
import { createServer } from 'node:net';

const ANSWER =
  'HTTP/1.1 200 OK\r\n' +
  'Authorization: Bearer bench-upstream-credential-0123456789abcdef\r\n' +
  'X-Tessera-Subject: bench-user\r\n' +
  'X-Tessera-Client-Id: bench-client\r\n' +
  'X-Tessera-Scopes: api:read\r\n' +
  'Content-Length: 0\r\n\r\n';

const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.setEncoding('latin1');
  let pending = '';
  socket.on('data', (chunk: string) => {
    pending += chunk;
    let answers = '';
    for (let end = pending.indexOf('\r\n\r\n'); end !== -1; end = pending.indexOf('\r\n\r\n')) {
      pending = pending.slice(end + 4);
      answers += ANSWER;
    }
    if (answers !== '') socket.write(answers);
  });
  socket.on('error', () => socket.destroy());
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
