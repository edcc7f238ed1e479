/**
 * Red team on the gateway's authentication modes besides `jwt` and on what reaches the upstream:
 * tokens presented in the query (browser WebSocket clients), static gateway tokens, introspection.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rawHttp } from '../helpers/net.ts';
import {
  AUDIENCE,
  wsAcceptOf as acceptOf,
  baseConfig,
  WS_KEY as KEY,
  wsKeyOf as keyOf,
  type RawUpstream,
  requestEvents,
  STATIC_TOKEN,
  startGateway,
  startRawUpstream,
  startUpstream,
  rawStatus as status,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
  type Upstream,
} from './helpers.ts';

describe('gateway: a token presented in the query of a WebSocket upgrade (browser clients, transport.query)', () => {
  let upstream: RawUpstream;
  let gw: TestGateway;
  let t: string;
  before(async () => {
    upstream = await startRawUpstream((head) => {
      if (!/\r\nupgrade: websocket/i.test(head)) return undefined;
      return `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(keyOf(head) ?? '')}\r\n\r\n`;
    });
    gw = await startGateway({
      ...baseConfig(),
      transport: { query: true },
      gateway: {
        routes: [
          {
            id: 'ws',
            match: { path_prefix: '/ws' },
            upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN } },
            auth: ['jwt', 'static'],
            audience: AUDIENCE,
            websocket: true,
            rules: [{ path: '/ws/**', scopes: ['api:read'] }],
          },
        ],
      },
    });
    t = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const upgrade = (path: string, protocols: string) =>
    `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Protocol: ${protocols}\r\n\r\n`;

  it('attack: a JWT sent in the query and also offered as a subprotocol (bearer, <token>) never reaches the upstream', async () => {
    const before = upstream.connections.length;
    const r = await rawHttp(gw.url, upgrade(`/ws/chat?access_token=${t}`, `bearer, ${t}, chat`), 500);
    assert.equal(status(r), 101, r);
    const sent = upstream.connections[before] ?? '';
    assert.match(sent, /^GET \/ws\/chat HTTP\/1\.1\r\n/);
    assert.match(sent, /\r\nsec-websocket-protocol: bearer, chat\r\n/i);
    assert.equal(sent.includes(t.split('.')[2] as string), false, 'the caller token reached the upstream');
  });

  it('attack: a JWT sent in the query and offered base64url-encoded as a subprotocol never reaches the upstream', async () => {
    const before = upstream.connections.length;
    const encoded = Buffer.from(t).toString('base64url');
    const r = await rawHttp(gw.url, upgrade(`/ws/chat?access_token=${t}`, `base64url.bearer.authorization.k8s.io.${encoded}, chat`), 500);
    assert.equal(status(r), 101, r);
    const sent = upstream.connections[before] ?? '';
    assert.match(sent, /\r\nsec-websocket-protocol: chat\r\n/i);
    assert.equal(sent.includes(encoded.slice(0, 40)), false, 'the encoded caller token reached the upstream');
  });

  it('[jwt, static]: a static token sent in the query goes on to the static method (it was refused 401 as a malformed JWT), and offered as a subprotocol too never reaches the upstream', async () => {
    const before = upstream.connections.length;
    const r = await rawHttp(gw.url, upgrade(`/ws/chat?access_token=${STATIC_TOKEN}`, `bearer, ${STATIC_TOKEN}`), 500);
    assert.equal(status(r), 101, r);
    const sent = upstream.connections[before] ?? '';
    assert.equal(sent.includes(STATIC_TOKEN), false);
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.static_token, 'ci');
  });

  it('[jwt, static]: a static token in the query of a plain request is accepted and not forwarded; a JWT in the query still goes to jwt', async () => {
    const before = upstream.requests.length;
    const r = await rawHttp(gw.url, `GET /ws/plain?x=1&access_token=${STATIC_TOKEN} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`, 500);
    assert.equal(status(r), 200, r);
    assert.deepEqual(upstream.requests.slice(before), ['GET /ws/plain?x=1 HTTP/1.1']);
    const forged = `${t.slice(0, t.lastIndexOf('.'))}.${'A'.repeat(86)}`;
    const f = await rawHttp(gw.url, `GET /ws/plain?access_token=${forged} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`, 500);
    assert.equal(status(f), 401, f);
    assert.equal((await requestEvents(gw)).at(-1)?.reason, 'token_signature_invalid');
  });
});

describe('gateway: [jwt, introspection] with a token in the query (transport.query)', () => {
  let upstream: Upstream;
  let introspection: Upstream;
  let gw: TestGateway;
  const introspected: string[] = [];
  before(async () => {
    upstream = await startUpstream();
    introspection = await startUpstream((_req, res, body) => {
      const t = new URLSearchParams(body).get('token') ?? '';
      introspected.push(t);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(t === 'opaque-good-token' ? { active: true, sub: 'opaque-user', scope: 'api:read' } : { active: false }));
    });
    gw = await startGateway({
      ...baseConfig(),
      transport: { query: true },
      introspection: { endpoint: `${introspection.url}/introspect`, client_id: 'gw', client_secret: 'secret' },
      gateway: {
        routes: [
          {
            id: 'either',
            match: { path_prefix: '/either' },
            upstream: { url: upstream.url },
            auth: ['jwt', 'introspection'],
            rules: [{ scopes: ['api:read'] }],
            identity_headers: ['subject'],
          },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await introspection.close();
  });

  it('an opaque token in the query is introspected (it was refused 401 as a malformed JWT without reaching the endpoint), and not forwarded', async () => {
    const res = await fetch(`${gw.url}/either/x?access_token=opaque-good-token&y=2`);
    assert.equal(res.status, 200);
    const seen = upstream.seen.at(-1);
    assert.equal(seen?.url, '/either/x?y=2');
    assert.equal(seen?.headers['x-tessera-subject'], 'opaque-user');
    assert.deepEqual(introspected, ['opaque-good-token']);
  });
});
