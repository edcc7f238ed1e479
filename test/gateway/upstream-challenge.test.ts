/**
 * An upstream's authentication challenge never reaches the caller of a route that injects the
 * upstream's credential (`static`, `exchange`): the caller never holds that credential and can do
 * nothing about it, while an MCP client reads `resource_metadata` and `scope` from any 401/403
 * challenge and would start an OAuth flow against the upstream's authorization server, or a step-up
 * for a scope that exists only there (and learn internal host names). An upstream 401 is the
 * gateway's credential refused: 502 `upstream_credential_rejected`. Other answers are relayed
 * without `WWW-Authenticate`. Routes with `none` or `passthrough` relay the upstream's answer as it is.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { acceptOf } from '../../src/gateway/proxy/websocket.ts';
import { rawHttp } from '../helpers/net.ts';
import {
  baseConfig,
  mcpRoute,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
  type Upstream,
} from './helpers.ts';

const METADATA_CHALLENGE = 'Bearer resource_metadata="https://upstream.internal/.well-known/oauth-protected-resource"';
const SCOPE_CHALLENGE = 'Bearer error="insufficient_scope", scope="upstream:admin"';
const REJECTED = { error: 'bad_gateway', error_description: "The upstream service refused the gateway's credential." };

describe('gateway: upstream challenges on routes that inject the upstream credential', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const logLines: Record<string, unknown>[] = [];
  let deadPort: number;

  before(async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    deadPort = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    upstream = await startUpstream((req, res) => {
      const path = (req.url ?? '').split('?')[0] as string;
      if (path.endsWith('/expired') || path === '/mcp') {
        res.writeHead(401, { 'www-authenticate': METADATA_CHALLENGE, 'content-type': 'text/plain' });
        res.end('token expired at auth.upstream.internal');
      } else if (path.endsWith('/admin')) {
        res.writeHead(403, { 'www-authenticate': SCOPE_CHALLENGE, 'content-type': 'application/json' });
        res.end('{"message":"admin only"}');
      } else if (path.endsWith('/events-expired')) {
        // A stream: no length, the head goes out before the body.
        res.writeHead(401, { 'www-authenticate': METADATA_CHALLENGE, 'content-type': 'text/event-stream' });
        res.write('event: error\ndata: upstream.internal\n\n');
        setTimeout(() => res.end(), 50);
      } else if (path.endsWith('/events-admin')) {
        res.writeHead(403, { 'www-authenticate': SCOPE_CHALLENGE, 'content-type': 'text/event-stream' });
        res.write('data: denied\n\n');
        setTimeout(() => res.end(), 50);
      } else if (path.endsWith('/challenged-ok')) {
        res.writeHead(200, { 'www-authenticate': METADATA_CHALLENGE, 'content-type': 'text/plain' }).end('fine');
      } else res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
    upstream.server.on('upgrade', (req, socket) => {
      if (req.url === '/ws/expired') {
        socket.end(
          `HTTP/1.1 401 Unauthorized\r\nwww-authenticate: ${METADATA_CHALLENGE}\r\ncontent-length: 22\r\n\r\nupstream.internal said`,
        );
      } else if (req.url === '/ws/admin' || req.url === '/open-ws/expired') {
        const status = req.url === '/ws/admin' ? '403 Forbidden' : '401 Unauthorized';
        const challenge = req.url === '/ws/admin' ? SCOPE_CHALLENGE : METADATA_CHALLENGE;
        socket.end(`HTTP/1.1 ${status}\r\nwww-authenticate: ${challenge}\r\ncontent-length: 4\r\n\r\nnope`);
      } else if (req.url === '/ws/chatty') {
        socket.end(
          'HTTP/1.1 403 Denied by authz-7.internal\r\nConnection: close, X-Internal-Host\r\nX-Internal-Host: authz-7.internal\r\ncontent-length: 4\r\n\r\nnope',
        );
      } else if (req.url === '/ws/challenged-ok') {
        socket.end(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(String(req.headers['sec-websocket-key']))}\r\nwww-authenticate: ${METADATA_CHALLENGE}\r\n\r\n`,
        );
      } else socket.destroy();
    });
    const staticCredential = { type: 'static' as const, token: UPSTREAM_TOKEN };
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: {
          allow_passthrough: true,
          routes: [
            mcpRoute(upstream.url, [{}], { upstream: { url: upstream.url, credential: staticCredential } }),
            {
              id: 'static',
              match: { path_prefix: '/static' },
              upstream: { url: upstream.url, credential: staticCredential },
              auth: 'jwt',
              rules: [{}],
            },
            {
              id: 'ws',
              match: { path_prefix: '/ws' },
              upstream: { url: upstream.url, credential: staticCredential },
              auth: 'jwt',
              rules: [{}],
            },
            { id: 'open', match: { path_prefix: '/open' }, upstream: { url: upstream.url }, auth: 'none' },
            { id: 'open-ws', match: { path_prefix: '/open-ws' }, upstream: { url: upstream.url }, auth: 'none' },
            {
              id: 'pass',
              match: { path_prefix: '/pass' },
              upstream: { url: upstream.url, credential: { type: 'passthrough' } },
              auth: 'jwt',
              rules: [{}],
            },
            {
              id: 'down',
              match: { path_prefix: '/down' },
              upstream: { url: `http://127.0.0.1:${deadPort}`, credential: staticCredential },
              auth: 'jwt',
              rules: [{}],
            },
          ],
        },
      },
      { logger: pino({ level: 'warn' }, { write: (l: string) => logLines.push(JSON.parse(l) as Record<string, unknown>) }) },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const get = async (path: string, init: RequestInit = {}) =>
    fetch(`${gw.url}${path}`, { ...init, headers: { authorization: `Bearer ${await token()}`, ...(init.headers ?? {}) } });
  const lastEvent = async () => (await requestEvents(gw)).at(-1)!;

  it('credential refused upstream: a 401 with a resource_metadata challenge becomes 502 upstream_credential_rejected, nothing of the upstream relayed', async () => {
    const res = await get('/static/expired');
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('www-authenticate'), null);
    const text = await res.text();
    assert.deepEqual(JSON.parse(text), REJECTED);
    assert.doesNotMatch(text, /upstream\.internal/);
    assert.equal(upstream.seen.at(-1)?.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    const e = await lastEvent();
    assert.equal(e.reason, 'upstream_credential_rejected');
    assert.equal(e.upstream_status, 401);
    assert.equal(e.route, 'static');
    // Audited as the other upstream failures are (an unreachable upstream here).
    await get('/down/x');
    const down = await lastEvent();
    assert.equal(down.reason, 'upstream_unavailable');
    assert.equal(e.decision, down.decision);
  });

  it('credential refused upstream: the operator gets a warn line naming the route, without the credential', async () => {
    await (await get('/static/expired')).text();
    const line = logLines.find((l) => l.event === 'upstream_credential_rejected');
    assert.ok(line, JSON.stringify(logLines));
    assert.equal(line.route, 'static');
    assert.equal(line.upstream_status, 401);
    assert.equal(line.level, 40);
    const all = JSON.stringify(logLines);
    assert.doesNotMatch(all, new RegExp(UPSTREAM_TOKEN));
    assert.doesNotMatch(all, /resource_metadata/);
  });

  it('credential refused upstream: counted in tessera_gateway_upstream_errors_total', async () => {
    await (await get('/static/expired')).text();
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /tessera_gateway_upstream_errors_total\{route="static",kind="credential_rejected"\} [1-9]/);
  });

  it('step-up confusion: an upstream 403 insufficient_scope challenge is not relayed; the 403 and its body are', async () => {
    const res = await get('/static/admin');
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.equal(await res.text(), '{"message":"admin only"}');
    const e = await lastEvent();
    assert.equal(e.reason, 'ok');
    assert.equal(e.upstream_status, 403);
  });

  it('a challenge on any other upstream answer is dropped too', async () => {
    const res = await get('/static/challenged-ok');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.equal(await res.text(), 'fine');
  });

  it('streamed (SSE) 401 from the upstream: 502 upstream_credential_rejected, no event relayed', async () => {
    const res = await get('/static/events-expired', { headers: { accept: 'text/event-stream' } });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.deepEqual(await res.json(), REJECTED);
    const e = await lastEvent();
    assert.equal(e.reason, 'upstream_credential_rejected');
    assert.equal(e.upstream_status, 401);
  });

  it('streamed (SSE) 403 from the upstream: relayed as a stream, without its challenge', async () => {
    const res = await get('/static/events-admin', { headers: { accept: 'text/event-stream' } });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.equal(await res.text(), 'data: denied\n\n');
  });

  it('MCP route: an upstream 401 becomes 502 upstream_credential_rejected, so the MCP client starts no OAuth flow at the upstream', async () => {
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await token()}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('www-authenticate'), null);
    // A JSON-RPC error echoing the call's id, as an MCP client reads one (docs/errors.md, MCP routes).
    assert.deepEqual(await res.json(), { jsonrpc: '2.0', id: 1, error: { code: -32603, message: REJECTED.error_description } });
    const e = await lastEvent();
    assert.equal(e.route, 'mcp');
    assert.equal(e.reason, 'upstream_credential_rejected');
    assert.equal(e.upstream_status, 401);
  });

  const upgrade = async (path: string, auth = true) =>
    rawHttp(
      gw.url,
      `GET ${path} HTTP/1.1\r\nHost: a\r\n${auth ? `Authorization: Bearer ${await token()}\r\n` : ''}Connection: Upgrade\r\n` +
        'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );

  it('WebSocket: an upstream refusing the upgrade with 401 becomes 502 upstream_credential_rejected', async () => {
    const r = await upgrade('/ws/expired');
    assert.match(r, /^HTTP\/1\.1 502 /);
    assert.doesNotMatch(r, /www-authenticate/i);
    assert.doesNotMatch(r, /upstream\.internal/);
    assert.match(r, /"error":"bad_gateway"/);
    const e = await lastEvent();
    assert.equal(e.route, 'ws');
    assert.equal(e.reason, 'upstream_credential_rejected');
    assert.equal(e.upstream_status, 401);
  });

  it('WebSocket: an upstream 403 refusal is relayed without its challenge', async () => {
    const r = await upgrade('/ws/admin');
    assert.match(r, /^HTTP\/1\.1 403 /);
    assert.doesNotMatch(r, /www-authenticate/i);
    assert.match(r, /nope$/);
  });

  it("WebSocket refusal: the upstream's own reason phrase and the headers its Connection names are not relayed (internal host names)", async () => {
    const r = await upgrade('/ws/chatty');
    assert.match(r, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.doesNotMatch(r, /authz-7\.internal/);
    assert.doesNotMatch(r, /x-internal-host/i);
    assert.match(r, /nope$/);
  });

  it("WebSocket: a challenge on the upstream's 101 is not relayed either", async () => {
    const r = await upgrade('/ws/challenged-ok');
    assert.match(r, /^HTTP\/1\.1 101 /);
    assert.doesNotMatch(r, /www-authenticate/i);
    assert.doesNotMatch(r, /upstream\.internal/);
  });

  it('credential none: the upstream authenticates the caller itself, its 401 and challenge pass unchanged', async () => {
    const res = await fetch(`${gw.url}/open/expired`);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), METADATA_CHALLENGE);
    assert.equal(await res.text(), 'token expired at auth.upstream.internal');
    const e = await lastEvent();
    assert.equal(e.reason, 'ok');
    assert.equal(e.upstream_status, 401);
    const r = await upgrade('/open-ws/expired', false);
    assert.match(r, /^HTTP\/1\.1 401 /);
    assert.match(r, /www-authenticate: Bearer resource_metadata=/i);
  });

  it('credential passthrough: the caller’s own token was refused, its 401 and challenge pass unchanged', async () => {
    const res = await get('/pass/expired');
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), METADATA_CHALLENGE);
    await res.text();
  });
});
