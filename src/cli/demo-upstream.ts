/**
 * The small API `tessera start` puts behind the gateway for the newcomer's path. It answers only
 * requests that carry the gateway's own credential (so a call that bypasses the gateway fails) and
 * shows what the gateway told it about the caller:
 *
 * - `GET /api/hello`: a JSON greeting with the identity headers it received;
 * - `GET /api/events`: five Server-Sent Events, one every 200 ms (streaming through the gateway);
 * - `POST /api/items`: 201 with the body's length (needs `demo:write`);
 * - `GET /.well-known/agent-card.json`: an A2A agent card, which the gateway serves publicly with
 *   Tessera's security schemes.
 *
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { listenUrl } from '../server/listen.ts';

const AGENT_CARD = {
  protocolVersion: '0.3.0',
  name: 'Tessera demo agent',
  description: 'Greets its caller and streams a few events; shows what the gateway tells an upstream about the caller.',
  url: 'http://127.0.0.1/api',
  version: '1.0.0',
  capabilities: { streaming: true },
  defaultInputModes: ['application/json'],
  defaultOutputModes: ['application/json', 'text/event-stream'],
  skills: [{ id: 'hello', name: 'Hello', description: 'Say hello to the verified caller.', tags: ['demo'] }],
};

const digest = (s: string) => createHash('sha256').update(s).digest();

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

/**
 * Start the demo API; `token` is the upstream credential the gateway injects. `rotate` accepts a
 * new one, and the one before it still (requests the gateway sent before its reload may be in
 * flight), as an API rotating its credentials would.
 */
export async function startDemoUpstream(options: {
  host: string;
  port: number;
  token: string;
}): Promise<{ url: string; server: Server; rotate(token: string): void; close(): Promise<void> }> {
  let accepted = [digest(`Bearer ${options.token}`)];
  const matches = (presented: (typeof accepted)[number]) => {
    let ok = false;
    for (const d of accepted) ok = timingSafeEqual(presented, d) || ok;
    return ok;
  };
  const server = createServer((req, res) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body, null, 2)}\n`);
    };
    if (!matches(digest(header(req, 'authorization') ?? ''))) {
      return json(401, { error: 'this demo API only answers requests that come through the Tessera gateway' });
    }
    const caller = {
      subject: header(req, 'x-tessera-subject'),
      client_id: header(req, 'x-tessera-client-id'),
      scopes: header(req, 'x-tessera-scopes')?.split(' '),
      actor_chain: header(req, 'x-tessera-actor-chain')?.split(','),
      delegation_id: header(req, 'x-tessera-delegation-id'),
    };
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/.well-known/agent-card.json') return json(200, AGENT_CARD);
    if (req.method === 'GET' && path === '/api/hello') {
      return json(200, { message: `hello, ${caller.subject ?? 'caller'}`, upstream_credential: 'gateway token received', caller });
    }
    if (req.method === 'GET' && path === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      let n = 0;
      const timer = setInterval(() => {
        n++;
        res.write(`id: ${n}\nevent: tick\ndata: ${JSON.stringify({ n, subject: caller.subject })}\n\n`);
        if (n === 5) {
          clearInterval(timer);
          res.end();
        }
      }, 200);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (req.method === 'POST' && path === '/api/items') {
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
      });
      req.on('end', () => json(201, { created: true, bytes: size, by: caller.subject }));
      return;
    }
    json(404, { error: 'not_found', try: ['GET /api/hello', 'GET /api/events', 'POST /api/items'] });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    url: listenUrl(server),
    server,
    rotate(token: string) {
      const next = digest(`Bearer ${token}`);
      const current = accepted[0] as (typeof accepted)[number];
      if (!next.equals(current)) accepted = [next, current];
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
