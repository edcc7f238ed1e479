/**
 * The authenticated extended agent card (A2A 0.2 `GET …/agent/authenticatedExtendedCard`, 0.3
 * `agent/getAuthenticatedExtendedCard` and `GET /v1/card`, 1.0 `GetExtendedAgentCard` and `GET
 * /extendedAgentCard`): given to authenticated callers only, rewritten as the public card is (no
 * upstream address, scheme or signature), and refused whole (502) when it cannot be read whole.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import express from 'express';
import type { AuditEvent } from '../../src/audit/event.ts';
import {
  assertRpcTooLarge,
  requestEvents,
  startA2aGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
  upgradeStatus,
} from './helpers.ts';

/** What the upstream tells an authenticated client: its own addresses, schemes and signatures. */
const EXTENDED_03 = {
  name: 'Research agent',
  protocolVersion: '0.3.0',
  url: 'http://10.0.0.7:9999/a2a',
  preferredTransport: 'JSONRPC',
  additionalInterfaces: [
    { url: 'http://10.0.0.7:9999/a2a', transport: 'JSONRPC' },
    { url: 'http://internal.example:8080/', transport: 'HTTP+JSON' },
  ],
  supportsAuthenticatedExtendedCard: true,
  securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'X-Internal-Key' } },
  security: [{ apiKey: [] }],
  skills: [
    { id: 'search', name: 'Search' },
    { id: 'admin', name: 'Admin', security: [{ apiKey: [] }] },
  ],
  signatures: [{ protected: 'eyJhbGciOiJFUzI1NiJ9', signature: 'c2lnbmVkLWJ5LXRoZS11cHN0cmVhbQ' }],
};

const EXTENDED_10 = {
  name: 'Research agent',
  description: 'Finds papers',
  version: '2.0.0',
  supportedInterfaces: [
    { url: 'http://10.0.0.7:9999/a2a', protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    { url: 'http://internal.example:8080/', protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
  ],
  capabilities: { extendedAgentCard: true },
  securitySchemes: { internal: { apiKeySecurityScheme: { location: 'header', name: 'X-Internal-Key' } } },
  securityRequirements: [{ schemes: { internal: { list: [] } } }],
  skills: [{ id: 'admin', name: 'Admin', description: 'Admin', tags: [], securityRequirements: [{ schemes: { internal: { list: [] } } }] }],
  signatures: [{ protected: 'eyJhbGciOiJFUzI1NiJ9', signature: 'c2lnbmVkLWJ5LXRoZS11cHN0cmVhbQ' }],
};

const A2A_URL = 'https://agents.example.com/agent';

/** Nothing of the upstream's own endpoints, schemes or signatures. */
function assertRewritten(card: Record<string, unknown>): void {
  const text = JSON.stringify(card);
  assert.ok(!text.includes('10.0.0.7') && !text.includes('internal.example'), `upstream address republished: ${text}`);
  assert.ok(!text.includes('X-Internal-Key') && !text.includes('apiKey'), `upstream security scheme republished: ${text}`);
  assert.ok(!text.includes('c2lnbmVkLWJ5LXRoZS11cHN0cmVhbQ') && card.signatures === undefined, `upstream signature republished: ${text}`);
}

function assert03(card: Record<string, unknown>): void {
  assertRewritten(card);
  assert.equal(card.url, A2A_URL);
  assert.deepEqual(card.additionalInterfaces, [{ url: A2A_URL, transport: 'JSONRPC' }]);
  assert.deepEqual(card.security, [{ BearerAuth: [] }, { OAuth2: ['agent:invoke'] }]);
  assert.deepEqual(Object.keys(card.securitySchemes as object), ['BearerAuth', 'OAuth2']);
  assert.equal((card.securitySchemes as { BearerAuth: { type: string } }).BearerAuth.type, 'http');
  assert.deepEqual(card.skills, [
    { id: 'search', name: 'Search' },
    { id: 'admin', name: 'Admin' },
  ]);
}

function assert10(card: Record<string, unknown>): void {
  assertRewritten(card);
  assert.equal(card.url, undefined);
  assert.equal(card.security, undefined);
  assert.deepEqual(card.supportedInterfaces, [{ url: A2A_URL, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }]);
  assert.deepEqual(card.securityRequirements, [
    { schemes: { BearerAuth: { list: [] } } },
    { schemes: { OAuth2: { list: ['agent:invoke'] } } },
  ]);
  assert.deepEqual((card.securitySchemes as { BearerAuth: unknown }).BearerAuth, {
    httpAuthSecurityScheme: {
      scheme: 'Bearer',
      bearerFormat: 'JWT',
      description: 'A Tessera access token (RFC 9068 JWT) in the Authorization header.',
    },
  });
  assert.deepEqual(card.skills, [{ id: 'admin', name: 'Admin', description: 'Admin', tags: [] }]);
}

describe('gateway: the A2A authenticated extended card', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let auth: Record<string, string>;
  /** The compressed card answer the upstream has not ended yet. */
  let heldOpen: ServerResponse | undefined;
  before(async () => {
    upstream = await startUpstream((req, res, body) => {
      // Routes compared case-blind and without a trailing slash, as ASP.NET does.
      const path = (req.url ?? '').toLowerCase().replace(/\/+$/, '');
      const json = (value: unknown, headers: Record<string, string> = {}) =>
        res.writeHead(200, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value));
      if (path.endsWith('/.well-known/agent-card.json')) return json({ ...EXTENDED_03, name: 'public' });
      if (path.endsWith('/huge/v1/card')) return json({ ...EXTENDED_03, description: 'x'.repeat(300 * 1024) });
      if (path.endsWith('/gzip/v1/card')) {
        // Compressed whenever the gateway lets it be.
        if (/gzip/.test(String(req.headers['accept-encoding']))) {
          res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(gzipSync(JSON.stringify(EXTENDED_03)));
          return;
        }
        return json(EXTENDED_03);
      }
      if (path.endsWith('/gzip-always/v1/card')) {
        // Compressed whatever the gateway asked for (Accept-Encoding: identity ignored), and not ended
        // until the test says so: a gateway reading it before refusing it would wait for its end.
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
        res.write(gzipSync(JSON.stringify(EXTENDED_03)));
        heldOpen = res;
        return;
      }
      if (path.endsWith('/agent/authenticatedextendedcard') || path.endsWith('/v1/card')) return json(EXTENDED_03);
      if (path.endsWith('/extendedagentcard')) return json(EXTENDED_10);
      if (req.method !== 'POST') return json({ ok: true });
      // A JSON-RPC server that, like System.Text.Json, binds `method` in any case.
      const message = JSON.parse(body) as Record<string, unknown>;
      // The last key read as `method` wins: in any case (System.Text.Json, Go's encoding/json), NULs
      // appended (segmentio/encoding before 0.5.4, GHSA-q382-vc8q-7jhj).
      const method = Object.entries(message).findLast(([k]) => k.replaceAll('\u0000', '').toLowerCase() === 'method')?.[1];
      if (req.headers['x-test'] === 'sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(`data: ${JSON.stringify({ jsonrpc: '2.0', id: message.id, result: EXTENDED_03 })}\n\n`);
        return;
      }
      if (method === 'agent/getAuthenticatedExtendedCard') return json({ jsonrpc: '2.0', id: message.id, result: EXTENDED_03 });
      if (method === 'GetExtendedAgentCard') return json({ jsonrpc: '2.0', id: message.id, result: EXTENDED_10 });
      return json({ jsonrpc: '2.0', id: message.id, result: { kind: 'task', id: 't1', url: 'http://10.0.0.7:9999/files/1' } });
    });
    gw = await startA2aGateway(upstream.url, {
      token_url: 'https://tessera.example.com/oauth/token',
      scopes: { 'agent:invoke': 'Send tasks' },
      url: A2A_URL,
    });
    auth = { authorization: `Bearer ${await token({ scope: 'agent:invoke' })}` };
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const rpc = (body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${gw.url}/agent/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  it('extended card: still needs a token (401 without one, nothing fetched)', async () => {
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}/agent/agent/authenticatedExtendedCard`);
    assert.equal(res.status, 401);
    await res.text();
    const rpcRes = await fetch(`${gw.url}/agent/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"jsonrpc":"2.0","id":1,"method":"agent/getAuthenticatedExtendedCard"}',
    });
    assert.equal(rpcRes.status, 401);
    await rpcRes.text();
    assert.equal(upstream.seen.length, before);
  });

  for (const path of ['/agent/agent/authenticatedExtendedCard', '/agent/v1/card', '/agent/V1/Card/']) {
    it(`extended card over REST (${path}): the upstream's URLs, schemes and signatures are not relayed`, async () => {
      const res = await fetch(`${gw.url}${path}`, { headers: auth });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-length'), String((await res.clone().arrayBuffer()).byteLength));
      assert03((await res.json()) as Record<string, unknown>);
    });
  }

  it('extended card: HEAD passes (no body to rewrite), not a 502', async () => {
    const res = await fetch(`${gw.url}/agent/v1/card`, { method: 'HEAD', headers: auth });
    assert.equal(res.status, 200);
  });

  it('extended card over REST in A2A 1.0 (GET /extendedAgentCard): rewritten in the 1.0 shape', async () => {
    const res = await fetch(`${gw.url}/agent/extendedAgentCard`, { headers: auth });
    assert.equal(res.status, 200);
    assert10((await res.json()) as Record<string, unknown>);
  });

  it('extended card over JSON-RPC 0.3 (agent/getAuthenticatedExtendedCard): the result is rewritten, the envelope kept', async () => {
    const res = await rpc({ jsonrpc: '2.0', id: 'c1', method: 'agent/getAuthenticatedExtendedCard' });
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    const body: any = await res.json();
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.id, 'c1');
    assert03(body.result);
  });

  it('extended card over JSON-RPC 1.0 (GetExtendedAgentCard): rewritten in the 1.0 shape', async () => {
    const res = await rpc({ jsonrpc: '2.0', id: 7, method: 'GetExtendedAgentCard' });
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    const body: any = await res.json();
    assert.equal(body.id, 7);
    assert10(body.result);
  });

  it('extended card smuggling: a `Method` key in another case is read as the upstream reads it', async () => {
    const res = await rpc('{"jsonrpc":"2.0","id":2,"Method":"GetExtendedAgentCard"}');
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    assert10(((await res.json()) as any).result);
  });

  it('extended card smuggling: a `method\\u0000` key (read as `method` by segmentio/encoding) is read as the upstream reads it', async () => {
    const res = await rpc('{"jsonrpc":"2.0","id":2,"method\\u0000":"GetExtendedAgentCard"}');
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    assert10(((await res.json()) as any).result);
  });

  it('extended card smuggling: `method` spelled twice, one naming the card (`method\\u0000`, `Method`), is refused (400), not forwarded: upstreams differ on which one they read', async () => {
    const before = upstream.seen.length;
    for (const body of [
      '{"jsonrpc":"2.0","id":2,"method":"message/send","method\\u0000":"GetExtendedAgentCard"}',
      '{"jsonrpc":"2.0","id":2,"method":"tasks/get","Method":"agent/getAuthenticatedExtendedCard"}',
    ]) {
      const res = await rpc(body);
      assert.equal(res.status, 400, body);
      assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32600);
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'a2a_message_invalid');
    }
    assert.equal(upstream.seen.length, before);
  });

  it('extended card smuggling: a message repeating a key is refused (400), not forwarded', async () => {
    const before = upstream.seen.length;
    const res = await rpc('{"jsonrpc":"2.0","id":3,"method":"message/send","method":"GetExtendedAgentCard"}');
    assert.equal(res.status, 400);
    await res.text();
    assert.equal(upstream.seen.length, before);
  });

  // Python's json.loads reads NaN and Infinity, Go's encoding/json reads invalid UTF-8 (as U+FFFD):
  // a body JSON.parse refuses is still a call to such an upstream, so it cannot pass unread.
  for (const [name, body] of [
    ['NaN (Python json.loads)', Buffer.from('{"jsonrpc":"2.0","id":NaN,"method":"agent/getAuthenticatedExtendedCard"}')],
    [
      'invalid UTF-8 (Go encoding/json)',
      Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"GetExtendedAgentCard","x":"'), Buffer.from([0xff]), Buffer.from('"}')]),
    ],
  ] as const) {
    it(`extended card smuggling: a body JSON.parse refuses (${name}) is refused (400), not forwarded unread`, async () => {
      const before = upstream.seen.length;
      const res = await fetch(`${gw.url}/agent/`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body });
      assert.equal(res.status, 400);
      assert.ok(!(await res.text()).includes('10.0.0.7'));
      assert.equal(upstream.seen.length, before);
    });
  }

  it('extended card smuggling: a batch carrying the call is refused (400)', async () => {
    const res = await rpc([
      { jsonrpc: '2.0', id: 1, method: 'message/send' },
      { jsonrpc: '2.0', id: 2, method: 'agent/getAuthenticatedExtendedCard' },
    ]);
    assert.equal(res.status, 400);
    await res.text();
  });

  it('extended card smuggling: a compressed request body is refused (415) with a JSON-RPC error, as the other A2A body refusals, not forwarded unread', async () => {
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}/agent/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', ...auth },
      body: gzipSync('{"jsonrpc":"2.0","id":4,"method":"GetExtendedAgentCard"}'),
    });
    assert.equal(res.status, 415);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    // The body is not read: no id to answer with.
    assert.deepEqual(await res.json(), {
      jsonrpc: '2.0',
      id: null,
      error: { code: -32000, message: 'An A2A request body must not be compressed (no Content-Encoding).' },
    });
    assert.equal((((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent).reason, 'a2a_content_encoding_refused');
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('extended card as an event stream: refused (502) with a JSON-RPC -32006 echoing the id, nothing of it relayed', async () => {
    const res = await rpc({ jsonrpc: '2.0', id: 5, method: 'agent/getAuthenticatedExtendedCard' }, { 'x-test': 'sse' });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('content-type'), 'application/json');
    const text = await res.text();
    assert.ok(!text.includes('10.0.0.7'), text);
    assert.deepEqual(JSON.parse(text), { jsonrpc: '2.0', id: 5, error: { code: -32006, message: 'The upstream service is unavailable.' } });
    assert.equal((((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent).reason, 'a2a_extended_card_invalid');
  });

  it('extended card over 256 KiB: refused (502)', async () => {
    const res = await fetch(`${gw.url}/agent/huge/v1/card`, { headers: auth });
    assert.equal(res.status, 502);
    assert.ok(!(await res.text()).includes('10.0.0.7'));
  });

  it("extended card: the caller's Accept-Encoding does not get it compressed past the rewrite", async () => {
    const res = await fetch(`${gw.url}/agent/gzip/v1/card`, { headers: { ...auth, 'accept-encoding': 'gzip' } });
    assert.equal(res.status, 200);
    assert03((await res.json()) as Record<string, unknown>);
  });

  it('extended card compressed though asked for identity: refused on its head (502 a2a_extended_card_invalid), nothing of it relayed', async () => {
    const from = upstream.seen.length;
    try {
      // Refused as its head arrives: the gateway does not wait for a body it cannot read.
      const res = await fetch(`${gw.url}/agent/gzip-always/v1/card`, {
        headers: { ...auth, 'accept-encoding': 'gzip' },
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(upstream.seen[from]?.headers['accept-encoding'], 'identity');
      assert.equal(res.status, 502);
      assert.equal(res.headers.get('content-encoding'), null);
      const text = await res.text();
      assert.ok(!text.includes('10.0.0.7') && !text.includes('X-Internal-Key'), text);
      assert.equal((((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent).reason, 'a2a_extended_card_invalid');
    } finally {
      heldOpen?.end();
      heldOpen = undefined;
    }
  });

  it('other JSON-RPC calls pass as they came (body and answer unchanged)', async () => {
    const message = '{"jsonrpc":"2.0","id":9,"method":"message/send","params":{"message":{"parts":[{"text":"café"}]}}}';
    const res = await rpc(message);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { jsonrpc: '2.0', id: 9, result: { kind: 'task', id: 't1', url: 'http://10.0.0.7:9999/files/1' } });
    assert.equal(upstream.seen.at(-1)?.body, message);
  });

  it('tunnel bypass: a WebSocket upgrade on an A2A route is refused (the extended card inside it could not be rewritten)', async () => {
    const seen = upstream.seen.length;
    const status = await upgradeStatus(gw.url, '/agent/ws', auth);
    assert.equal(status, 400);
    assert.equal(upstream.seen.length, seen, 'the upstream never saw it');
  });
});

describe('gateway: A2A bodies read alike by the gateway and an express upstream', () => {
  let http: Server;
  let gw: TestGateway;
  let auth: Record<string, string>;
  const seen: string[] = [];
  before(async () => {
    // The A2A JS SDK's deployment: express.json() (body-parser), which decodes any `charset=utf-*`.
    const app = express();
    app.use(express.json());
    app.post('/agent', (req, res) => {
      const message = req.body as { id?: unknown; method?: unknown };
      seen.push(String(message.method));
      if (message.method === 'agent/getAuthenticatedExtendedCard') res.json({ jsonrpc: '2.0', id: message.id, result: EXTENDED_03 });
      else res.json({ jsonrpc: '2.0', id: message.id, result: { kind: 'task', id: 't1' } });
    });
    http = app.listen(0, '127.0.0.1');
    await once(http, 'listening');
    gw = await startA2aGateway(`http://127.0.0.1:${(http.address() as AddressInfo).port}`, {
      token_url: 'https://tessera.example.com/oauth/token',
      scopes: { 'agent:invoke': 'Send tasks' },
      url: A2A_URL,
    });
    auth = { authorization: `Bearer ${await token({ scope: 'agent:invoke' })}` };
  });
  after(async () => {
    await gw.close();
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
  });

  it('extended card smuggling by charset: a UTF-7 body ("+AGE-gent/getAuthenticatedExtendedCard") is refused 415 before the upstream, whose card it would get unrewritten', async () => {
    const body = '{"jsonrpc":"2.0","id":1,"method":"+AGE-gent/getAuthenticatedExtendedCard"}';
    for (const ct of ['application/json; charset=utf-7', 'application/json; charset="UTF-7"', 'application/json;charset=utf-16le']) {
      const res = await fetch(`${gw.url}/agent`, { method: 'POST', headers: { 'content-type': ct, ...auth }, body });
      const text = await res.text();
      assert.ok(!text.includes('10.0.0.7') && !text.includes('X-Internal-Key'), `upstream card relayed: ${text}`);
      assert.equal(res.status, 415, ct);
      assert.equal((JSON.parse(text) as { error: { code: number } }).error.code, -32000);
      assert.equal((((await requestEvents(gw)) as AuditEvent[]).at(-1) as AuditEvent).reason, 'a2a_content_type_invalid');
    }
    assert.deepEqual(seen, []);
    // UTF-8, however spelled, is what the gateway reads: the call is seen, and the card rewritten.
    for (const ct of ['application/json', 'application/json; charset=utf-8', 'Application/JSON; Charset="UTF-8"']) {
      const res = await fetch(`${gw.url}/agent`, {
        method: 'POST',
        headers: { 'content-type': ct, ...auth },
        body: '{"jsonrpc":"2.0","id":1,"method":"agent/getAuthenticatedExtendedCard"}',
      });
      assert.equal(res.status, 200, ct);
      // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
      assert03(((await res.json()) as any).result);
    }
  });
});

describe('gateway: an A2A body over max_body_size', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let auth: Record<string, string>;
  before(async () => {
    upstream = await startUpstream();
    gw = await startA2aGateway(
      upstream.url,
      { token_url: 'https://tessera.example.com/oauth/token', scopes: { 'agent:invoke': 'Send tasks' }, url: A2A_URL },
      { route: { max_body_size: '1kb' } },
    );
    auth = { authorization: `Bearer ${await token({ scope: 'agent:invoke' })}` };
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'message/send', params: { text: 'x'.repeat(2000) } });

  it('a Content-Length over the limit: 413 with a JSON-RPC error, as the other A2A body refusals, never forwarded', async () => {
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}/agent/`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: call });
    await assertRpcTooLarge(gw, res);
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('a chunked body passing the limit: 413 with a JSON-RPC error, never forwarded', async () => {
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}/agent/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(call));
          c.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    await assertRpcTooLarge(gw, res);
    assert.equal(upstream.seen.length, before, 'the upstream never saw it');
  });

  it('a body within the limit still passes', async () => {
    const res = await fetch(`${gw.url}/agent/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: '{"jsonrpc":"2.0","id":6,"method":"message/send"}',
    });
    assert.equal(res.status, 200);
    await res.text();
    assert.equal(upstream.seen.at(-1)?.body, '{"jsonrpc":"2.0","id":6,"method":"message/send"}');
  });
});
