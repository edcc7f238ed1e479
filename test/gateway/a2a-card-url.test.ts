/**
 * The agent card without `a2a.url`: an upstream's card names its own address (an internal IP or
 * name), which the gateway must not republish: a client would call the agent there, around the
 * gateway, and learn the internal topology. Its URLs are named at the gateway instead, where the
 * RFC 9728 metadata names the gateway (`server.public_url`, else the request's origin).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { baseConfig, startA2aGateway, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const TOKEN_URL = 'https://tessera.example.com/oauth/token';

/** A 0.3 card as an agent at `self` (its own idea of its address) serves it, under `path`. */
function card03(self: string, path: string) {
  return {
    name: 'Internal agent',
    protocolVersion: '0.3.0',
    url: `${self}${path}`,
    preferredTransport: 'JSONRPC',
    additionalInterfaces: [
      { url: `${self}${path}`, transport: 'JSONRPC' },
      { url: `${self}${path}/rest`, transport: 'HTTP+JSON' },
      { url: 'agent.internal:50051', transport: 'GRPC' },
      { url: 'http://agent.internal:8080/other', transport: 'JSONRPC' },
      { url: 'https://elsewhere.example/agent', transport: 'JSONRPC' },
    ],
    skills: [{ id: 'search', name: 'Search' }],
  };
}

/** A 1.0 card (no top-level url) whose interfaces name `self`. */
function card10(self: string) {
  return {
    name: 'Internal agent 1.0',
    protocolVersion: '1.0',
    supportedInterfaces: [
      { url: `${self}/a2a`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: `${self}/a2a/rest`, protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
      { url: 'https://elsewhere.example/a2a', protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    ],
    skills: [],
  };
}

const json = { 'content-type': 'application/json' };

/** An upstream serving `card(itself)` at its card paths and the extended card, answering calls with an echo. */
async function agentUpstream(card: (self: string) => Record<string, unknown>): Promise<Upstream> {
  let self = '';
  const upstream = await startUpstream((req, res, body) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    if (path.endsWith('/.well-known/agent-card.json') || path.endsWith('/v1/card')) {
      res.writeHead(200, json).end(JSON.stringify(card(self)));
      return;
    }
    const rpc = body === '' ? {} : JSON.parse(body);
    if (rpc.method === 'agent/getAuthenticatedExtendedCard') {
      res.writeHead(200, json).end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, result: card(self) }));
      return;
    }
    res.writeHead(200, json).end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id ?? null, result: { kind: 'message', path } }));
  });
  self = upstream.url;
  return upstream;
}

function assertNoUpstream(text: string, upstream: Upstream): void {
  const hostPort = new URL(upstream.url).host;
  for (const leak of [hostPort, 'agent.internal', 'elsewhere.example', '10.0.3.7'])
    assert.ok(!text.includes(leak), `the card names ${leak}: ${text}`);
}

describe('gateway: A2A card URLs without a2a.url', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    // The route /agent reaches the upstream's /agent (no strip_prefix): the agent's endpoint is /agent.
    upstream = await agentUpstream((self) => card03(self, '/agent'));
    gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it("attack: the public card names the gateway, not the upstream's own address; interfaces elsewhere are dropped", async () => {
    const res = await fetch(`${gw.url}/agent/.well-known/agent-card.json`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assertNoUpstream(text, upstream);
    const card = JSON.parse(text);
    assert.equal(card.url, `${gw.url}/agent`);
    assert.deepEqual(card.additionalInterfaces, [
      { url: `${gw.url}/agent`, transport: 'JSONRPC' },
      { url: `${gw.url}/agent/rest`, transport: 'HTTP+JSON' },
    ]);
    // Named after the request's origin: a shared cache keeps one per forwarded host.
    assert.match(res.headers.get('vary') ?? '', /X-Forwarded-Host/);
  });

  it('attack: a client calling the URL the card names reaches the agent through the gateway, not around it', async () => {
    const card = (await (await fetch(`${gw.url}/agent/.well-known/agent-card.json`)).json()) as { url: string };
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'message/send', params: { message: { role: 'user', parts: [] } } });
    // Without a token the gateway refuses it (the agent's own address would have taken it).
    const anon = await fetch(card.url, { method: 'POST', headers: json, body });
    assert.equal(anon.status, 401);
    await anon.text();
    const bearer = await token({ sub: 'alice', scope: 'agent:invoke' });
    const from = upstream.seen.length;
    const res = await fetch(card.url, { method: 'POST', headers: { ...json, authorization: `Bearer ${bearer}` }, body });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { result: { path: string } }).result.path, '/agent');
    assert.equal(upstream.seen[from]?.url, '/agent');
  });

  it("attack: the authenticated extended card (REST and JSON-RPC) names the gateway, not the upstream's own address", async () => {
    const bearer = await token({ sub: 'alice', scope: 'agent:invoke' });
    const rest = await fetch(`${gw.url}/agent/v1/card`, { headers: { authorization: `Bearer ${bearer}` } });
    assert.equal(rest.status, 200);
    const restText = await rest.text();
    assertNoUpstream(restText, upstream);
    assert.equal(JSON.parse(restText).url, `${gw.url}/agent`);
    const rpc = await fetch(`${gw.url}/agent`, {
      method: 'POST',
      headers: { ...json, authorization: `Bearer ${bearer}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'agent/getAuthenticatedExtendedCard' }),
    });
    assert.equal(rpc.status, 200);
    const rpcText = await rpc.text();
    assertNoUpstream(rpcText, upstream);
    const result = JSON.parse(rpcText).result;
    assert.equal(result.url, `${gw.url}/agent`);
    assert.deepEqual(
      result.additionalInterfaces.map((i: { url: string }) => i.url),
      [`${gw.url}/agent`, `${gw.url}/agent/rest`],
    );
  });

  it('an X-Forwarded-Host from a peer not in trust_proxy is not believed; the Host the caller used is', async () => {
    const res = await fetch(`${gw.url}/agent/.well-known/agent-card.json`, { headers: { 'x-forwarded-host': 'evil.example' } });
    const text = await res.text();
    assert.ok(!text.includes('evil.example'), text);
    assert.equal(JSON.parse(text).url, `${gw.url}/agent`);
    const named = await fetch(`${gw.url.replace('127.0.0.1', 'localhost')}/agent/.well-known/agent-card.json`);
    assert.equal(((await named.json()) as { url: string }).url, `${gw.url.replace('127.0.0.1', 'localhost')}/agent`);
  });
});

describe('gateway: A2A card URLs under server.public_url, strip_prefix and A2A 1.0', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await agentUpstream(card10);
    gw = await startGateway({
      ...baseConfig(),
      server: { public_url: 'https://gw.example.com/tessera' },
      scopes: { 'agent:invoke': {} },
      gateway: {
        routes: [
          {
            id: 'agent',
            match: { path_prefix: '/agent' },
            // The gateway's /agent/a2a reaches the upstream's /a2a.
            upstream: { url: upstream.url, strip_prefix: '/agent' },
            auth: 'jwt',
            rules: [{ scopes: ['agent:invoke'] }],
            a2a: { token_url: TOKEN_URL },
          },
          {
            id: 'configured',
            match: { path_prefix: '/configured' },
            upstream: { url: 'http://10.0.3.7:9000' },
            auth: 'jwt',
            rules: [{ scopes: ['agent:invoke'] }],
            // Its endpoint (/) is not reached through the route (no strip_prefix): the route's own is named.
            a2a: { token_url: TOKEN_URL, card: card03('http://10.0.3.7:9000', '') },
          },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it("attack: a 1.0 card's interfaces at the upstream are named under server.public_url at the path that reaches them", async () => {
    const res = await fetch(`${gw.url}/agent/.well-known/agent-card.json`, { headers: { host: 'attacker.example' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('vary'), null, 'server.public_url names the gateway whatever the request says');
    const text = await res.text();
    assertNoUpstream(text, upstream);
    assert.ok(!text.includes('attacker.example'), text);
    const card = JSON.parse(text);
    assert.equal(card.url, undefined, '1.0 cards have no top-level url');
    assert.deepEqual(card.supportedInterfaces, [
      { url: 'https://gw.example.com/tessera/agent/a2a', protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: 'https://gw.example.com/tessera/agent/a2a/rest', protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
    ]);
  });

  it("attack: a configured card naming the upstream's internal address names the route's endpoint at the gateway", async () => {
    const res = await fetch(`${gw.url}/configured/.well-known/agent-card.json`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(!text.includes('10.0.3.7') && !text.includes('agent.internal'), text);
    const card = JSON.parse(text);
    assert.equal(card.url, 'https://gw.example.com/tessera/configured');
    assert.deepEqual(card.additionalInterfaces, [{ url: 'https://gw.example.com/tessera/configured', transport: 'JSONRPC' }]);
  });
});
