/**
 * Attacks on the WebSocket handshake the gateway relays, against an upstream on raw TCP that
 * records every byte it receives: an upstream's 101 that is no WebSocket accept must open no
 * tunnel (WebSocket smuggling), and a token the caller also put in Sec-WebSocket-Protocol never
 * reaches the upstream.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rawHttp } from '../../helpers/net.ts';
import {
  AUDIENCE,
  wsAcceptOf as acceptOf,
  baseConfig,
  WS_KEY as KEY,
  wsKeyOf as keyOf,
  type RawUpstream,
  requestEvents,
  startGateway,
  startRawUpstream,
  rawStatus as status,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
} from '../helpers.ts';

describe('gateway: the upstream’s WebSocket handshake', () => {
  let upstream: RawUpstream;
  let gw: TestGateway;
  let t: string;
  before(async () => {
    upstream = await startRawUpstream((head) => {
      const path = head.split(' ')[1];
      const key = keyOf(head) ?? '';
      // A 101 that is no WebSocket accept, from an upstream that goes on reading HTTP on the
      // connection (an endpoint relaying a status it was given, a quirky server).
      if (path === '/ws/no-accept') return 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
      // The accept of the key the caller chose, which the caller can compute and have relayed.
      if (path === '/ws/caller-accept')
        return `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(KEY)}\r\n\r\n`;
      if (path === '/ws/no-upgrade') return 'HTTP/1.1 101 Switching Protocols\r\n\r\n';
      if (path === '/ws/two-accepts')
        return `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\nSec-WebSocket-Accept: ${acceptOf(KEY)}\r\n\r\n`;
      // A refusal with a status outside 100–599, which Node's parser accepts.
      const odd = /^\/ws\/status-(\d+)$/.exec(path ?? '')?.[1];
      if (odd !== undefined) return `HTTP/1.1 ${odd} X\r\nX-Upstream-Internal: db-7.internal\r\nContent-Length: 11\r\n\r\ndb-7.secret`;
      if (path?.startsWith('/ws/') === true)
        return `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`;
      return undefined;
    });
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        routes: [
          {
            id: 'ws',
            match: { path_prefix: '/ws' },
            upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN } },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [
              { path: '/ws/admin/**', scopes: ['admin'] },
              { path: '/ws/**', scopes: ['api:read'] },
            ],
            identity_headers: ['subject'],
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

  const upgrade = (path: string, extra = `Sec-WebSocket-Key: ${KEY}\r\n`) =>
    `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n${extra}Authorization: Bearer ${t}\r\n\r\n`;
  /** What reaches the upstream after the handshake, sent by the caller as soon as it reads a 101. */
  const SMUGGLED = 'GET /ws/admin/secrets HTTP/1.1\r\nHost: a\r\nX-Tessera-Subject: admin\r\n\r\n';

  for (const path of ['/ws/no-accept', '/ws/caller-accept', '/ws/no-upgrade', '/ws/two-accepts']) {
    it(`WebSocket smuggling: an upstream 101 that accepts no key the gateway sent (${path}) opens no tunnel: 502 upstream_upgrade_invalid, and a request sent behind it never reaches the upstream`, async () => {
      const seen = upstream.requests.length;
      const r = await rawHttp(gw.url, upgrade(path), 1500, (got) => (got.includes('\r\n\r\n') ? SMUGGLED : undefined));
      assert.equal(status(r), 502, r);
      assert.match(r, /"error":"bad_gateway"/);
      assert.doesNotMatch(r, /HTTP\/1\.1 101/);
      assert.deepEqual(upstream.requests.slice(seen), [`GET ${path} HTTP/1.1`], 'only the upgrade reached the upstream');
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.reason, 'upstream_upgrade_invalid');
      assert.equal(e.decision, 'allow', 'decided and allowed; the upstream failed the handshake');
    });
  }

  for (const code of ['700', '999', '099']) {
    it(`an upstream refusing the upgrade with "HTTP/1.1 ${code} X" is not relayed: 502 upstream_status_invalid, audited with upstream_status ${Number(code)}`, async () => {
      const r = await rawHttp(gw.url, upgrade(`/ws/status-${code}`), 1500);
      assert.equal(status(r), 502, r);
      assert.match(r, /\{"error":"bad_gateway","error_description":"The upstream service answered with an invalid status code\."\}/);
      assert.equal(r.includes('db-7'), false, 'nothing of the upstream answer is relayed');
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.reason, 'upstream_status_invalid');
      assert.equal(e.upstream_status, Number(code));
    });
  }

  it('the upstream is asked with a key of the gateway’s own, and the caller gets the accept of the key it sent', async () => {
    const before = upstream.connections.length;
    const r = await rawHttp(gw.url, upgrade('/ws/chat'), 500);
    assert.equal(status(r), 101, r);
    assert.match(r, new RegExp(`\r\nsec-websocket-accept: ${acceptOf(KEY).replace(/[+/]/g, '\\$&')}\r\n`, 'i'));
    assert.equal((r.match(/sec-websocket-accept/gi) ?? []).length, 1, r);
    const sent = keyOf(upstream.connections[before] ?? '');
    assert.match(sent ?? '', /^[A-Za-z0-9+/]{22}==$/);
    assert.notEqual(sent, KEY, 'a key the caller chose could be answered by anyone who computes its accept');
  });

  it('token leak: a token the caller also offers as a subprotocol (Sec-WebSocket-Protocol: bearer, <token>) is consumed from Authorization and never reaches the upstream; the other subprotocols do', async () => {
    const before = upstream.connections.length;
    const r = await rawHttp(
      gw.url,
      upgrade('/ws/chat', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Protocol: bearer, ${t}, chat\r\n`),
      500,
    );
    assert.equal(status(r), 101, r);
    const sent = upstream.connections[before] ?? '';
    assert.match(sent, /\r\nsec-websocket-protocol: bearer, chat\r\n/i);
    assert.equal(sent.includes(t), false, 'the caller token reached the upstream');
    assert.equal(sent.includes(t.split('.')[2] as string), false);
  });

  for (const [label, encode] of [
    ['base64url', (v: string) => Buffer.from(v).toString('base64url')],
    ['base64 without padding', (v: string) => Buffer.from(v).toString('base64').replace(/=+$/, '')],
  ] as const) {
    it(`token leak: a token offered ${label}-encoded in a subprotocol (Kubernetes' base64url.bearer.authorization.k8s.io.<token>) never reaches the upstream`, async () => {
      const before = upstream.connections.length;
      const encoded = encode(t);
      const r = await rawHttp(
        gw.url,
        upgrade(
          '/ws/chat',
          `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io.${encoded}, chat\r\n`,
        ),
        500,
      );
      assert.equal(status(r), 101, r);
      const sent = upstream.connections[before] ?? '';
      assert.match(sent, /\r\nsec-websocket-protocol: chat\r\n/i);
      assert.equal(sent.includes(encoded.slice(0, 40)), false, 'the encoded caller token reached the upstream');
    });
  }

  it('token leak: a subprotocol list that held only the token is not sent at all', async () => {
    const before = upstream.connections.length;
    const r = await rawHttp(gw.url, upgrade('/ws/chat', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Protocol: ${t}\r\n`), 500);
    assert.equal(status(r), 101, r);
    const sent = upstream.connections[before] ?? '';
    assert.doesNotMatch(sent, /sec-websocket-protocol/i);
    assert.equal(sent.includes(t), false);
  });

  it('a token offered only as a subprotocol is not read as a credential: 401, nothing reaches the upstream, and it is in no audit event', async () => {
    const before = upstream.connections.length;
    const r = await rawHttp(
      gw.url,
      `GET /ws/chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Protocol: bearer, ${t}\r\n\r\n`,
      1000,
    );
    assert.equal(status(r), 401, r);
    assert.match(r, /www-authenticate: Bearer/i);
    assert.equal(upstream.connections.length, before);
    const events = await requestEvents(gw);
    assert.equal(events.at(-1)!.reason, 'credentials_missing');
    assert.equal(JSON.stringify(events).includes(t), false);
  });

  for (const [name, extra] of [
    ['missing', ''],
    ['not 16 bytes', 'Sec-WebSocket-Key: c2hvcnQ=\r\n'],
    ['repeated', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Key: ${KEY}\r\n`],
  ] as const) {
    it(`a WebSocket upgrade whose Sec-WebSocket-Key is ${name} is refused 400 request_upgrade_refused before the upstream sees it (RFC 6455 §4.2.1)`, async () => {
      const before = upstream.connections.length;
      const r = await rawHttp(gw.url, upgrade('/ws/chat', extra), 1000);
      assert.equal(status(r), 400, r);
      assert.match(r, /"error":"invalid_request"/);
      assert.equal(upstream.connections.length, before);
      assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_upgrade_refused');
    });
  }
});
